//! `msync completions <shell>` and the hidden `msync manual <dir>`: both
//! written from the clap definitions in [`crate::cli`], so they never drift
//! from `--help`. Neither needs librclone.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use clap::CommandFactory;

use crate::cli::{Cli, CompletionsArgs, ManualArgs};
use crate::error::ExitCode;

pub fn completions(args: &CompletionsArgs) -> anyhow::Result<ExitCode> {
    let mut command = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "msync", &mut script);
    std::io::stdout()
        .write_all(&script)
        .context("writing the completion script")?;
    Ok(ExitCode::Ok)
}

/// msync(1), and msync-<command>(1) for each command, which msync(1)
/// refers to.
pub fn manual(args: &ManualArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let command = Cli::command();
    write_page(&args.dir, "msync", command.clone())?;
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("msync-{}", sub.get_name());
        let page = sub
            .clone()
            .name(name.clone())
            .bin_name(format!("msync {}", sub.get_name()));
        write_page(&args.dir, &name, page)?;
    }
    Ok(ExitCode::Ok)
}

fn write_page(dir: &Path, name: &str, command: clap::Command) -> anyhow::Result<()> {
    let mut page = Vec::new();
    clap_mangen::Man::new(command)
        .render(&mut page)
        .with_context(|| format!("rendering {name}(1)"))?;
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, page).with_context(|| format!("writing {}", path.display()))
}
