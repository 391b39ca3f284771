//! `msync import <install dir>`: restores every remote directory into its
//! branch, all branches at once.
//!
//! Each branch downloads into `<install dir>/state/import/<branch>` with
//! `sync/copy` (rclone's compare-dest skips what the branch already holds),
//! and only a completed download is moved into the branch, file by file with
//! local renames. So a cancelled or crashed import never leaves a
//! half-written file under a final name in a branch, and a rerun resumes:
//! complete files are not downloaded again.
//!
//! Before that move, the remote's metadata index (see [`crate::meta`]) is
//! read and every downloaded file checked against the size it records: one
//! that differs (torn, or an older version) stays out of the branch, under
//! `state/import-mismatched/<branch>`, and is listed. After it, the index
//! gives back owners, modes, times, empty directories, hard links and holes.

use std::path::{Path, PathBuf};
use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

use anyhow::Context;
use serde_json::json;

use super::{keep_rclone_logs_in, limit_bandwidth, load_rclone_for, require_remotes, require_root};
use crate::cli::{GlobalArgs, ImportArgs, OwnersArg};
use crate::error::{ExitCode, coded};
use crate::install::{Branch, InstallDir, private_dir};
use crate::meta::restore::{self, Mismatch, Owners, Restored};
use crate::meta::{self as metadata, Index};
use crate::progress::{ProgressView, summary_of_finished};
use crate::rclone::{Call, Job, Location, Progress, Rclone, signals};
use crate::sync::backend::{self, hash_check_costs_a_read};
use crate::sync::{local_fs, walk_branch};

const REFRESH: Duration = Duration::from_millis(200);
const CANCEL_GRACE: Duration = Duration::from_secs(10);

/// Paths under each remote directory that are msync's own, never restored.
pub const RESERVED_FILTER: &[&str] = &["/.msync/**"];

struct Task<'a> {
    branch: &'a Branch,
    staging: PathBuf,
    job: Job,
    outcome: Option<Result<Finished, String>>,
}

/// A branch's download, once in the branch.
struct Finished {
    progress: Progress,
    /// What the index gave back; `None` with `--no-metadata`.
    restored: Option<Restored>,
    /// The remote has no index (written by an msync before it kept one).
    no_index: bool,
    /// Files kept out of the branch, and where they are.
    mismatches: Vec<Mismatch>,
    aside: PathBuf,
}

pub fn run(global: &GlobalArgs, args: &ImportArgs) -> anyhow::Result<ExitCode> {
    let install_dir = args.install_dir.as_path();
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
    install.create_private_dirs()?;
    keep_rclone_logs_in(rclone, &install)?;
    limit_bandwidth(rclone, args.bwlimit.as_deref())?;
    require_remotes(rclone, &install)?;

    let mut tasks = start_downloads(rclone, &install)?;
    if let Some(interrupted) = wait_downloads(rclone, &mut tasks, args, &install, &signals)? {
        return Ok(interrupted);
    }

    let failures: Vec<String> = tasks
        .iter()
        .filter_map(|t| match &t.outcome {
            Some(Err(message)) => Some(format!("{}: {message}", t.branch.name)),
            _ => None,
        })
        .collect();
    let mut kept_out = 0;
    for task in &tasks {
        if let Some(Ok(finished)) = &task.outcome {
            report(task.branch, finished);
            kept_out += finished.mismatches.len();
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
    if kept_out > 0 {
        return Err(coded(
            ExitCode::Refused,
            format!(
                "{kept_out} file(s) were not restored: they are not what the metadata index records (see above); the rest of {} can be started",
                install.root().display()
            ),
        ));
    }
    println!(
        "import complete: {} can be started",
        install.root().display()
    );
    Ok(ExitCode::Ok)
}

/// Starts one download per branch whose remote directory exists, into its
/// staging directory.
fn start_downloads<'a>(rclone: Rclone, install: &'a InstallDir) -> anyhow::Result<Vec<Task<'a>>> {
    let mut holding = Vec::new();
    for branch in &install.manifest.branches {
        if !remote_dir_exists(rclone, branch)? {
            println!("{}: {} holds nothing yet", branch.name, branch.remote);
            continue;
        }
        // Before any download starts: an import from such a remote would
        // leave out every dot file and still say it was complete.
        if backend::hides_dot_names(rclone, &branch.remote)
            .with_context(|| format!("listing {}", branch.remote))?
        {
            return Err(coded(
                ExitCode::Refused,
                backend::hidden_dot_names_refusal(&branch.remote),
            ));
        }
        holding.push(branch);
    }
    let mut tasks = Vec::new();
    for branch in holding {
        let staging = install.state_dir().join("import").join(&branch.name);
        private_dir(&staging)?;
        staging.to_str().context("install dir path is not UTF-8")?;
        // Symlinks stored as NAME.rclonelink come back as symlinks. No
        // rclone metadata here: rclone 1.60 would chmod through a restored
        // link (and fail on a dangling one); the index gives it all back.
        // Where a hash check costs another read (an md5sum on an SFTP
        // server per file), none is made: the size is checked, SSH checks
        // the bytes on the way, and the index's sizes are checked after.
        let ignore_checksum = hash_check_costs_a_read(rclone, &branch.remote);
        let job = Call::copy(&branch.remote, &local_fs(&staging))
            .config(json!({
                "CompareDest": [local_fs(&branch.dir)],
                "IgnoreChecksum": ignore_checksum,
            }))
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
    Ok(tasks)
}

/// Shows progress until every download is done and in its branch; a
/// signal cancels them all (`Some(Interrupted)`).
fn wait_downloads(
    rclone: Rclone,
    tasks: &mut [Task],
    args: &ImportArgs,
    install: &InstallDir,
    signals: &std::sync::mpsc::Receiver<nix::sys::signal::Signal>,
) -> anyhow::Result<Option<ExitCode>> {
    let mut view = ProgressView::new(tasks.iter().map(|t| t.branch.name.clone()).collect());
    while tasks.iter().any(|t| t.outcome.is_none()) {
        match signals.recv_timeout(REFRESH) {
            Ok(signal) => {
                cancel_all(tasks);
                eprintln!(
                    "msync: {signal} received: import cancelled; run `msync import` again to resume"
                );
                return Ok(Some(ExitCode::Interrupted));
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
                finish(rclone, task, args, &install.state_dir(), progress.clone())
            } else {
                Err(explain(&status.error, install.root()))
            };
            let word = if outcome.is_ok() { "done" } else { "failed" };
            view.finish(index, &progress, word);
            task.outcome = Some(outcome);
        }
    }
    drop(view);
    Ok(None)
}

/// A branch's download is complete: checked against the index, moved into
/// the branch, then given its metadata.
fn finish(
    rclone: Rclone,
    task: &Task,
    args: &ImportArgs,
    state_dir: &Path,
    progress: Progress,
) -> Result<Finished, String> {
    let name = &task.branch.name;
    let aside = state_dir.join("import-mismatched").join(name);
    if args.no_metadata {
        move_into_branch(rclone, &task.staging, &task.branch.dir)?;
        return Ok(Finished {
            progress,
            restored: None,
            no_index: false,
            mismatches: Vec::new(),
            aside,
        });
    }
    let scratch = state_dir.join("import-meta").join(name);
    private_dir(&scratch).map_err(|e| e.to_string())?;
    let index = metadata::remote::fetch(rclone, &task.branch.remote, &scratch)
        .map_err(|e| format!("reading the metadata index: {e}"))?;
    for skipped in &index.skipped {
        eprintln!("msync: {name}: metadata index file skipped: {skipped}");
    }
    let mismatches = set_aside_mismatches(&index, &task.staging, &aside)?;
    move_into_branch(rclone, &task.staging, &task.branch.dir)?;
    let owners = match args.owners {
        OwnersArg::Numeric => Owners::Numeric,
        OwnersArg::Names => Owners::Names,
    };
    Ok(Finished {
        progress,
        restored: Some(restore::apply(&index, &task.branch.dir, owners)),
        no_index: index.files == 0,
        mismatches,
        aside,
    })
}

/// Moves the downloaded files that are not what the index records out of
/// the staging directory, into `aside`. Even one newer than its record
/// (whole, if the service was killed before it recorded the upload) is
/// set aside: it may as well be torn, and only a person can tell.
fn set_aside_mismatches(
    index: &Index,
    staging: &Path,
    aside: &Path,
) -> Result<Vec<Mismatch>, String> {
    let mut paths = Vec::new();
    walk_branch(staging, |path, kind, _| {
        if let (true, Some(path)) = (kind.is_file(), path.to_str()) {
            paths.push(path.to_owned());
        }
    });
    let mismatches = restore::mismatches(index, staging, &paths);
    for mismatch in &mismatches {
        let to = aside.join(&mismatch.path);
        let moved = to
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::rename(staging.join(&mismatch.path), &to));
        moved.map_err(|e| format!("setting {} aside: {e}", mismatch.path))?;
    }
    Ok(mismatches)
}

/// What a branch's import did, for people.
fn report(branch: &Branch, finished: &Finished) {
    println!(
        "{}: imported from {}: {}",
        branch.name,
        branch.remote,
        summary_of_finished(&finished.progress)
    );
    if let Some(restored) = &finished.restored {
        if finished.no_index {
            println!(
                "{}: the remote has no metadata index (written by an older msync): owners, modes and times are as downloaded",
                branch.name
            );
        } else {
            println!(
                "{}: metadata restored on {} path(s): {} missing dir(s) made, {} hard link(s), {} sparse file(s)",
                branch.name, restored.applied, restored.dirs_made, restored.linked, restored.sparse
            );
        }
        for problem in &restored.problems {
            eprintln!("msync: {}: {problem}", branch.name);
        }
    }
    for mismatch in &finished.mismatches {
        let why = if mismatch.newer {
            "it is newer than that record: whole if the service was killed before it recorded the upload, torn if a crash cut the upload; check it"
        } else {
            "a torn or older upload"
        };
        eprintln!(
            "msync: {}: NOT restored: {} is {} bytes on the cloud but the metadata index records {} bytes ({why}); it is in {}",
            branch.name,
            mismatch.path,
            mismatch.found,
            mismatch.recorded,
            finished.aside.join(&mismatch.path).display()
        );
    }
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
