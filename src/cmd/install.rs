//! `msync install <install dir>`: records an installation.

use anyhow::Context;

use super::{load_rclone, require_root};
use crate::cli::{GlobalArgs, InstallArgs};
use crate::error::{ExitCode, coded};
use crate::install::InstallDir;
use crate::rclone::Rclone;
use crate::rclone_config;
use crate::space::size::{QuotaArg, Shown};

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
    check_quota_names(&args.quota, &wanted, &args.install_dir)?;

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
    for quota in &args.quota {
        if let Some(branch) = install
            .manifest
            .branches
            .iter_mut()
            .find(|b| b.name == quota.remote)
        {
            branch.quota = quota.quota;
        }
        if let Some(size) = quota.quota {
            warn_if_beyond_the_cloud(rclone, &quota.remote, size);
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
        let quota = branch
            .quota
            .map(|q| format!(" (quota {})", Shown(q)))
            .unwrap_or_default();
        println!(
            "  {mark} {} -> {}{quota}",
            branch.dir.display(),
            branch.remote
        );
    }
    if !install.manifest.imported() {
        println!(
            "next: `msync import {}` restores what the remotes already hold",
            install.root().display()
        );
    }
    Ok(ExitCode::Ok)
}

/// Every `--quota` must name a remote of this install (one being added, or
/// one it has), checked before anything is written.
fn check_quota_names(
    quotas: &[QuotaArg],
    wanted: &[String],
    install_dir: &std::path::Path,
) -> anyhow::Result<()> {
    let existing: Vec<String> = InstallDir::open(install_dir)
        .map(|install| {
            install
                .manifest
                .branches
                .into_iter()
                .map(|b| b.name)
                .collect()
        })
        .unwrap_or_default();
    let unknown: Vec<&str> = quotas
        .iter()
        .map(|q| q.remote.as_str())
        .filter(|name| !wanted.iter().chain(&existing).any(|w| w == name))
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    Err(coded(
        ExitCode::Usage,
        format!(
            "--quota names {}, which is not a remote of this install; its remotes: {}",
            unknown.join(", "),
            wanted
                .iter()
                .chain(&existing)
                .map(String::as_str)
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ))
}

/// A quota above what the cloud can hold is allowed (the account may
/// grow) but counts as the cloud's size: say so.
fn warn_if_beyond_the_cloud(rclone: Rclone, remote: &str, quota: u64) {
    let Ok(about) = rclone.about(&format!("{remote}:")) else {
        return;
    };
    if let Some(total) = about.total.filter(|&t| t >= 0).map(|t| t as u64)
        && quota > total
    {
        eprintln!(
            "warning: the quota {} for {remote} is more than the cloud's size, {}; msync uses {}",
            Shown(quota),
            Shown(total),
            Shown(total)
        );
    }
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
