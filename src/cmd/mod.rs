//! One file per command, each with a `run` that returns the exit code it
//! chose on purpose, or an error that `main` maps to one.

mod check;
mod rc;

use anyhow::Context;

use crate::cli::{Cli, Command, GlobalArgs};
use crate::error::ExitCode;
use crate::rclone::{LoadOptions, Rclone};
use crate::rclone_config;

/// Runs the command the user asked for.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Check(args) => check::run(&cli.global, &args),
        Command::Rc(args) => rc::run(&cli.global, &args),
    }
}

/// Loads librclone with the user's rclone config file.
fn load_rclone(global: &GlobalArgs) -> anyhow::Result<Rclone> {
    let config_file = rclone_config::resolve(global.config.as_deref());
    if global.config.is_some() && !config_file.is_file() {
        return Err(crate::error::coded(
            ExitCode::RequirementMissing,
            format!(
                "rclone config file {} does not exist: give an existing file with --config, or create one with `rclone config`",
                config_file.display()
            ),
        ));
    }
    Rclone::load(&LoadOptions {
        library: global.librclone.clone(),
        config_file: Some(config_file),
    })
    .context("loading librclone")
}
