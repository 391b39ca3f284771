//! `msync install <install dir>`: records an installation.

use anyhow::Context;

use super::{load_rclone, require_root};
use crate::cli::{GlobalArgs, InstallArgs};
use crate::error::{ExitCode, coded};
use crate::install::InstallDir;
use crate::rclone_config;

pub fn run(global: &GlobalArgs, args: &InstallArgs) -> anyhow::Result<ExitCode> {
    require_root("install")?;
    validate_remote_path(&args.remote_path)?;
    let rclone = load_rclone(global)?;
    let configured = rclone.list_remotes()?;
    let config_file = rclone_config::resolve(global.config.as_deref());
    if configured.is_empty() {
        return Err(coded(
            ExitCode::RequirementMissing,
            format!(
                "the rclone config {} defines no remotes; add your cloud accounts with `rclone config`",
                config_file.display()
            ),
        ));
    }
    let unknown: Vec<&str> = args
        .remotes
        .iter()
        .map(String::as_str)
        .filter(|name| !configured.iter().any(|c| c == name))
        .collect();
    if !unknown.is_empty() {
        return Err(coded(
            ExitCode::Usage,
            format!(
                "no remote named {} in {}; configured remotes: {}",
                unknown.join(", "),
                config_file.display(),
                configured.join(", ")
            ),
        ));
    }
    let wanted = if args.remotes.is_empty() {
        configured
    } else {
        args.remotes.clone()
    };

    let mut install =
        InstallDir::open_or_create(&args.install_dir, &config_file, &args.remote_path)?;
    if global.config.is_some() {
        install.manifest.rclone_config = config_file.canonicalize().unwrap_or(config_file);
    }
    let mut added = Vec::new();
    for name in &wanted {
        if install.add_branch(name)? {
            added.push(name.clone());
        }
    }
    install.create_private_dirs()?;
    install
        .save()
        .with_context(|| format!("writing the manifest of {}", install.root().display()))?;

    println!("msync install dir {}", install.root().display());
    for branch in &install.manifest.branches {
        let mark = if added.contains(&branch.name) {
            "added"
        } else {
            "kept "
        };
        println!("  {mark} {} -> {}", branch.dir.display(), branch.remote);
    }
    if !install.manifest.imported() {
        println!(
            "next: `msync import {}` restores what the remotes already hold",
            install.root().display()
        );
    }
    Ok(ExitCode::Ok)
}

/// The remote path is a plain relative path inside each remote.
fn validate_remote_path(path: &str) -> anyhow::Result<()> {
    let bad = path.is_empty()
        || path.starts_with('/')
        || path
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..")
        || path.contains(':')
        || path.chars().any(char::is_control);
    if bad {
        return Err(coded(
            ExitCode::Usage,
            format!(
                "--remote-path {path:?} must be a relative path such as `msync` or `backups/msync`"
            ),
        ));
    }
    Ok(())
}
