//! One file per command, each with a `run` that returns the exit code it
//! chose on purpose, or an error that `main` maps to one.

mod balance;
mod check;
mod completions;
mod import;
mod install;
mod rc;
mod start;
mod status;
mod stop;

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::cli::{Cli, Command, GlobalArgs};
use crate::error::{ExitCode, coded};
use crate::install::InstallDir;
use crate::rclone::{LoadOptions, Rclone};
use crate::rclone_config;

/// Runs the command the user asked for.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Balance(args) => balance::run(&cli.global, &args),
        Command::Check(args) => check::run(&cli.global, &args),
        Command::Install(args) => install::run(&cli.global, &args),
        Command::Import(args) => import::run(&cli.global, &args),
        Command::Rc(args) => rc::run(&cli.global, &args),
        Command::Start(args) => start::run(&cli.global, &args),
        Command::Stop(args) => stop::run(&args),
        Command::Status(args) => status::run(&args),
        Command::Completions(args) => completions::completions(&args),
        Command::Manual(args) => completions::manual(&args),
    }
}

/// Loads librclone with the user's rclone config file (`--config`, else
/// rclone's default).
fn load_rclone(global: &GlobalArgs) -> anyhow::Result<Rclone> {
    let config_file = rclone_config::resolve(global.config.as_deref());
    // Without --config a missing default file is fine (rclone then has no
    // remotes); one that exists must parse.
    if global.config.is_some() || config_file.exists() {
        require_config_file(&config_file)?;
    }
    load_rclone_with(global, config_file)
}

/// Loads librclone for an install: `--config` if given, else the config
/// file the install recorded.
fn load_rclone_for(global: &GlobalArgs, install: &InstallDir) -> anyhow::Result<Rclone> {
    let config_file = global
        .config
        .clone()
        .unwrap_or_else(|| install.manifest.rclone_config.clone());
    require_config_file(&config_file)?;
    load_rclone_with(global, config_file)
}

fn load_rclone_with(global: &GlobalArgs, config_file: PathBuf) -> anyhow::Result<Rclone> {
    Rclone::load(&LoadOptions {
        library: global.librclone.clone(),
        config_file: Some(config_file),
    })
    .context("loading librclone")
}

fn require_config_file(path: &Path) -> anyhow::Result<()> {
    rclone_config::validate(path).map_err(|message| coded(ExitCode::RequirementMissing, message))
}

/// msync mounts filesystems and owns root's files: every command that
/// changes an install must run as root.
fn require_root(command: &str) -> anyhow::Result<()> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        Err(coded(
            ExitCode::RequirementMissing,
            format!("msync {command} must run as root (sudo msync {command} …)"),
        ))
    }
}

/// Checks that every branch's remote is still defined in the rclone config.
fn require_remotes(rclone: Rclone, install: &InstallDir) -> anyhow::Result<()> {
    let configured = rclone.list_remotes()?;
    let missing: Vec<&str> = install
        .manifest
        .branches
        .iter()
        .map(|b| b.name.as_str())
        .filter(|name| !configured.iter().any(|c| c == name))
        .collect();
    if !missing.is_empty() {
        return Err(coded(
            ExitCode::RequirementMissing,
            format!(
                "remote(s) {} of this install are not defined in the rclone config any more; restore them with `rclone config`",
                missing.join(", ")
            ),
        ));
    }
    let backends = rclone.backends()?;
    let unserved: Vec<String> = install
        .manifest
        .branches
        .iter()
        .filter_map(|b| missing_backend(rclone, &backends, &b.name))
        .collect();
    if unserved.is_empty() {
        Ok(())
    } else {
        Err(coded(ExitCode::RequirementMissing, unserved.join("; ")))
    }
}

/// What to say of remote `name` when the loaded library (whose backends
/// are `backends`) was built without its backend; `None` when it has it.
fn missing_backend(rclone: Rclone, backends: &[String], name: &str) -> Option<String> {
    let kind = rclone.remote_type(name).ok()?;
    if backends.contains(&kind) {
        return None;
    }
    let mut wanted: Vec<&str> = backends
        .iter()
        .map(String::as_str)
        .filter(|b| !matches!(*b, "alias" | "crypt"))
        .collect();
    wanted.push(&kind);
    Some(format!(
        "remote {name:?} is a {kind:?} remote, and the loaded librclone ({}) was built without that backend (it has {}): rebuild it with `make librclone BACKENDS=\"{}\"`, or use the full build (target/librclone/librclone.so)",
        rclone.path().display(),
        backends.join(", "),
        wanted.join(" ")
    ))
}

/// Applies `--bwlimit` to the whole process's transfers.
fn limit_bandwidth(rclone: Rclone, rate: Option<&str>) -> anyhow::Result<()> {
    if let Some(rate) = rate {
        rclone
            .set_bwlimit(rate)
            .with_context(|| format!("setting the bandwidth limit {rate:?}"))?;
    }
    Ok(())
}

/// For a command at a terminal: rclone's own log lines go to the install's
/// msync.log, and the terminal gets msync's words only. (The service keeps
/// them on its stderr, which is the log when it runs in the background.)
fn keep_rclone_logs_in(rclone: Rclone, install: &InstallDir) -> anyhow::Result<()> {
    let log = install.log_file();
    // Made 0600 and checked as the service makes it, before rclone opens it.
    crate::service::logging::open_log(&log)
        .with_context(|| format!("opening the log {}", log.display()))?;
    rclone
        .send_logs_to(&log)
        .with_context(|| format!("sending rclone's log lines to {}", log.display()))?;
    Ok(())
}
