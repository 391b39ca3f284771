//! `msync import <install dir>`: restores every remote directory into its
//! branch, all branches at once.
//!
//! Each branch downloads into `<install dir>/state/import/<branch>` with
//! `sync/copy` (rclone's compare-dest skips what the branch already holds),
//! and only a completed download is moved into the branch, file by file with
//! local renames. So a cancelled or crashed import never leaves a
//! half-written file under a final name in a branch, and a rerun resumes:
//! complete files are not downloaded again.

use std::path::{Path, PathBuf};
use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

use anyhow::Context;
use serde_json::json;

use super::{load_rclone_for, require_remotes, require_root};
use crate::cli::GlobalArgs;
use crate::error::{ExitCode, coded};
use crate::install::{Branch, InstallDir, private_dir};
use crate::progress::{ProgressView, summary_of_finished};
use crate::rclone::{Call, Job, Location, Progress, Rclone, signals};
use crate::sync::local_fs;

const REFRESH: Duration = Duration::from_millis(200);
const CANCEL_GRACE: Duration = Duration::from_secs(10);

/// Paths under each remote directory that are msync's own, never restored.
pub const RESERVED_FILTER: &[&str] = &["/.msync/**"];

struct Task<'a> {
    branch: &'a Branch,
    staging: PathBuf,
    job: Job,
    outcome: Option<Result<Progress, String>>,
}

pub fn run(global: &GlobalArgs, install_dir: &Path) -> anyhow::Result<ExitCode> {
    require_root("import")?;
    let mut install = InstallDir::open(install_dir)?;
    if let Some(pid) = crate::service::running_pid(&install.pid_file()) {
        return Err(coded(
            ExitCode::RunningState,
            format!(
                "the msync service runs for this install (pid {pid}); stop it before importing"
            ),
        ));
    }
    let signals = signals::install().context("installing signal handlers")?;
    let rclone = load_rclone_for(global, &install)?;
    require_remotes(rclone, &install)?;
    install.create_private_dirs()?;

    let mut tasks = Vec::new();
    for branch in &install.manifest.branches {
        if !remote_dir_exists(rclone, branch)? {
            println!("{}: {} holds nothing yet", branch.name, branch.remote);
            continue;
        }
        let staging = install.state_dir().join("import").join(&branch.name);
        private_dir(&staging)?;
        staging.to_str().context("install dir path is not UTF-8")?;
        // Symlinks stored as NAME.rclonelink come back as symlinks.
        let job = Call::copy(&branch.remote, &local_fs(&staging))
            .config(json!({ "CompareDest": [local_fs(&branch.dir)] }))
            .filter(json!({ "ExcludeRule": RESERVED_FILTER }))
            .start(rclone, &format!("msync/import/{}", branch.name))
            .with_context(|| format!("starting the import of {}", branch.remote))?;
        tasks.push(Task {
            branch,
            staging,
            job,
            outcome: None,
        });
    }

    let mut view = ProgressView::new(tasks.iter().map(|t| t.branch.name.clone()).collect());
    while tasks.iter().any(|t| t.outcome.is_none()) {
        match signals.recv_timeout(REFRESH) {
            Ok(signal) => {
                cancel_all(&tasks);
                eprintln!(
                    "msync: {signal} received: import cancelled; run `msync import` again to resume"
                );
                return Ok(ExitCode::Interrupted);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                anyhow::bail!("the signal thread stopped unexpectedly")
            }
        }
        for (index, task) in tasks.iter_mut().enumerate() {
            if task.outcome.is_some() {
                continue;
            }
            let progress = task.job.progress()?;
            let status = task.job.status()?;
            if !status.finished {
                view.update(index, &progress);
                continue;
            }
            let _ = task.job.forget_stats();
            let outcome = if status.success {
                move_into_branch(rclone, &task.staging, &task.branch.dir).map(|()| progress.clone())
            } else {
                Err(explain(&status.error, install.root()))
            };
            let word = if outcome.is_ok() { "done" } else { "failed" };
            view.finish(index, &progress, word);
            task.outcome = Some(outcome);
        }
    }
    drop(view);

    let failures: Vec<String> = tasks
        .iter()
        .filter_map(|t| match &t.outcome {
            Some(Err(message)) => Some(format!("{}: {message}", t.branch.name)),
            _ => None,
        })
        .collect();
    for task in &tasks {
        if let Some(Ok(progress)) = &task.outcome {
            println!(
                "{}: imported from {}: {}",
                task.branch.name,
                task.branch.remote,
                summary_of_finished(progress)
            );
        }
    }
    if !failures.is_empty() {
        return Err(coded(
            ExitCode::RcloneFailed,
            format!(
                "import failed for {}; fix the cause and run `msync import` again to resume",
                failures.join("; ")
            ),
        ));
    }
    for branch in &mut install.manifest.branches {
        branch.imported = true;
    }
    install.save()?;
    println!(
        "import complete: {} can be started",
        install.root().display()
    );
    Ok(ExitCode::Ok)
}

/// Whether the branch's remote directory exists (a new cloud has none).
fn remote_dir_exists(rclone: Rclone, branch: &Branch) -> anyhow::Result<bool> {
    let (remote, path) = branch
        .remote
        .split_once(':')
        .context("a branch remote always has a colon")?;
    let entry = rclone
        .stat(&Location::new(format!("{remote}:"), path))
        .with_context(|| format!("looking at {}", branch.remote))?;
    Ok(entry.is_some_and(|e| e.is_dir))
}

/// Moves the completed download into the branch: local renames, so every
/// file appears in the branch whole.
fn move_into_branch(rclone: Rclone, staging: &Path, branch_dir: &Path) -> Result<(), String> {
    let (Some(staging), Some(branch_dir)) = (staging.to_str(), branch_dir.to_str()) else {
        return Err("install dir path is not UTF-8".into());
    };
    let job = Call::move_dir(
        &local_fs(Path::new(staging)),
        &local_fs(Path::new(branch_dir)),
    )
    .start(rclone, "msync/import/move")
    .map_err(|e| e.to_string())?;
    let status = job
        .wait(None)
        .map_err(|e| e.to_string())?
        .expect("waiting without a time-out always ends with a status");
    let _ = job.forget_stats();
    if status.success {
        Ok(())
    } else {
        Err(format!(
            "moving {staging} into {branch_dir}: {}",
            status.error
        ))
    }
}

/// rclone's error, with what to do when the cause is a full local disk.
fn explain(error: &str, install_dir: &Path) -> String {
    let lowered = error.to_lowercase();
    if lowered.contains("no space left") || lowered.contains("disk space") {
        format!(
            "{error}: the disk holding {} (its branches and state/import) is full; free space there",
            install_dir.display()
        )
    } else {
        error.to_owned()
    }
}

fn cancel_all(tasks: &[Task]) {
    for task in tasks.iter().filter(|t| t.outcome.is_none()) {
        let _ = task.job.cancel();
    }
    for task in tasks.iter().filter(|t| t.outcome.is_none()) {
        let _ = task.job.wait(Some(CANCEL_GRACE));
    }
}
