//! One branch's worker: a named thread (`msync-sync-<branch>`) that takes
//! operations from the branch's queue and carries them out as rclone jobs,
//! one at a time and in order, retrying failures with backoff.
//!
//! Every job of a branch runs in the stats group `msync/branch/<name>`, so
//! `status` reads the files in flight from rclone's own accounting. A job
//! is always `_async`, so `stop --now` can cancel it with `job/stop`.

use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use log::{error, info, warn};
use serde_json::{Value, json};

use super::queue::{Op, OpQueue};
use super::status::{BranchState, BranchStatus, InFlight, Space};
use super::{EngineConfig, guard, sync_filter, trash};
use crate::install::write_private;
use crate::rclone::{Call, Job, Location, Rclone, RcloneError};

/// How often a running job is polled.
const POLL: Duration = Duration::from_millis(50);
/// How often a held branch (no marker) is looked at again.
const HELD_RECHECK: Duration = Duration::from_secs(5);
/// How often the remote's space is asked for at most.
const SPACE_REFRESH: Duration = Duration::from_secs(600);

/// Where a branch lives, locally and on its remote.
#[derive(Debug, Clone)]
pub struct BranchSpec {
    pub index: usize,
    pub name: String,
    /// The local branch directory.
    pub local: PathBuf,
    /// `<remote>:<path>`.
    pub remote: String,
    /// A private directory for msync's working files (file lists).
    pub work_dir: PathBuf,
    /// The branch's marker file and the text it must hold.
    pub marker: PathBuf,
    pub marker_text: String,
}

/// Why one operation did not complete.
#[derive(Debug)]
enum Failure {
    /// Worth retrying (network, server, quota…).
    Transient(String),
    /// Retrying cannot help (e.g. a name rclone cannot carry); the
    /// operation is dropped and reported.
    Permanent(String),
    /// Cancelled by `stop`.
    Cancelled,
    /// A guard refused the work (see [`super::guard`]); it waits for the
    /// next reconcile.
    Refused(String),
}

impl From<RcloneError> for Failure {
    fn from(err: RcloneError) -> Failure {
        if err.status == 400 {
            Failure::Permanent(err.to_string())
        } else {
            Failure::Transient(err.to_string())
        }
    }
}

#[derive(Debug)]
struct Shared {
    queue: OpQueue,
    reconcile_due: bool,
    next_reconcile: Instant,
    stop_deadline: Option<Instant>,
    current: Option<Job>,
    state: BranchState,
    last_sync: Option<SystemTime>,
    last_error: Option<String>,
    warning: Option<String>,
    space: Option<Space>,
    space_checked: Option<Instant>,
    files_sent: u64,
    bytes_sent: u64,
    /// Why the branch is not synced at all, while it is not.
    held: Option<String>,
    /// A hold from outside the worker (a lost lease).
    external_hold: Option<String>,
}

/// A branch's worker and the state it shares with the engine.
pub struct BranchWorker {
    spec: BranchSpec,
    config: EngineConfig,
    rclone: Rclone,
    shared: Mutex<Shared>,
    wake: Condvar,
}

impl BranchWorker {
    pub fn new(spec: BranchSpec, config: EngineConfig, rclone: Rclone) -> BranchWorker {
        BranchWorker {
            shared: Mutex::new(Shared {
                queue: OpQueue::default(),
                // Every start begins with a full reconcile.
                reconcile_due: true,
                next_reconcile: Instant::now() + config.reconcile_every,
                stop_deadline: None,
                current: None,
                state: BranchState::Syncing,
                last_sync: None,
                last_error: None,
                warning: None,
                space: None,
                space_checked: None,
                files_sent: 0,
                bytes_sent: 0,
                held: None,
                external_hold: None,
            }),
            spec,
            config,
            rclone,
            wake: Condvar::new(),
        }
    }

    pub fn spec(&self) -> &BranchSpec {
        &self.spec
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn enqueue(&self, ops: impl IntoIterator<Item = Op>) {
        let mut shared = self.lock();
        for op in ops {
            shared.queue.push(op);
        }
        self.wake.notify_all();
    }

    pub fn request_reconcile(&self) {
        self.lock().reconcile_due = true;
        self.wake.notify_all();
    }

    pub fn set_hold(&self, reason: Option<String>) {
        self.lock().external_hold = reason;
        self.wake.notify_all();
    }

    pub fn set_warning(&self, warning: Option<String>) {
        self.lock().warning = warning;
    }

    /// Nothing queued, nothing running, no reconcile waiting.
    pub fn is_idle(&self) -> bool {
        let shared = self.lock();
        shared.queue.is_empty() && shared.current.is_none() && !shared.reconcile_due
    }

    /// Finish the queue until `deadline`, then cancel what runs and exit.
    pub fn stop_by(&self, deadline: Instant) {
        self.lock().stop_deadline = Some(deadline);
        self.wake.notify_all();
    }

    /// The branch's status, with the files in flight from rclone's stats.
    pub fn status(&self) -> BranchStatus {
        let (mut status, current) = {
            let shared = self.lock();
            let status = BranchStatus {
                name: self.spec.name.clone(),
                remote: self.spec.remote.clone(),
                local: self.spec.local.clone(),
                state: shared.state,
                queued: shared.queue.len(),
                in_flight: Vec::new(),
                last_sync: shared
                    .last_sync
                    .map(|t| humantime::format_rfc3339_seconds(t).to_string()),
                last_error: shared.last_error.clone(),
                warning: shared.warning.clone(),
                space: shared.space.clone(),
                files_sent: shared.files_sent,
                bytes_sent: shared.bytes_sent,
            };
            (status, shared.current.clone())
        };
        if let Some(job) = current
            && let Ok(progress) = job.progress()
        {
            status.in_flight = progress
                .transferring
                .into_iter()
                .map(|t| InFlight {
                    name: t.name,
                    bytes: t.bytes,
                    size: t.size,
                    speed: t.speed,
                    eta: t.eta,
                })
                .collect();
        }
        status
    }

    /// The thread body.
    pub fn run(&self) {
        let mut failures: u32 = 0;
        loop {
            let Some(work) = self.next_work() else {
                return;
            };
            let result = match &work {
                Work::Reconcile(_) => self.reconcile(),
                Work::Ops(ops) => self.execute(ops),
            };
            match result {
                Ok(()) => {
                    failures = 0;
                    let mut shared = self.lock();
                    shared.last_sync = Some(SystemTime::now());
                    shared.last_error = None;
                    shared.state = BranchState::Idle;
                    drop(shared);
                    if matches!(work, Work::Reconcile(_)) {
                        self.refresh_space();
                    }
                }
                Err(Failure::Permanent(message)) => {
                    warn!(
                        "{}: giving up on {}: {message}",
                        self.spec.name,
                        work.describe()
                    );
                    let mut shared = self.lock();
                    shared.last_error = Some(message);
                    shared.state = BranchState::Idle;
                }
                Err(Failure::Refused(message)) => {
                    error!("{}: {message}", self.spec.name);
                    let mut shared = self.lock();
                    shared.last_error = Some(message);
                    shared.state = BranchState::Error;
                    // The changes the refused reconcile took still go out.
                    shared.queue.restore(work.into_ops());
                }
                Err(Failure::Cancelled) => {
                    info!("{}: {} cancelled", self.spec.name, work.describe());
                    self.lock().queue.restore(work.into_ops());
                    return;
                }
                Err(Failure::Transient(message)) => {
                    failures += 1;
                    let backoff = backoff(failures, self.config.max_backoff);
                    warn!(
                        "{}: {} failed (attempt {failures}, next in {}s): {message}",
                        self.spec.name,
                        work.describe(),
                        backoff.as_secs()
                    );
                    let mut shared = self.lock();
                    shared.last_error = Some(message);
                    shared.state = BranchState::Retrying;
                    match work {
                        Work::Reconcile(covered) => {
                            shared.queue.restore(covered);
                            shared.reconcile_due = true;
                        }
                        Work::Ops(ops) => shared.queue.restore(ops),
                    }
                    let until = Instant::now() + backoff;
                    while shared.stop_deadline.is_none() && Instant::now() < until {
                        let wait = until.saturating_duration_since(Instant::now());
                        shared = self
                            .wake
                            .wait_timeout(shared, wait)
                            .unwrap_or_else(|p| p.into_inner())
                            .0;
                    }
                }
            }
        }
    }

    /// Waits for the next unit of work; `None` when the worker must exit.
    fn next_work(&self) -> Option<Work> {
        let mut shared = self.lock();
        loop {
            let now = Instant::now();
            if let Some(deadline) = shared.stop_deadline {
                let nothing_left = shared.queue.is_empty() && !shared.reconcile_due;
                if nothing_left || now >= deadline {
                    if !nothing_left {
                        warn!(
                            "{}: stopping with {} change(s) not sent; the next start's reconcile sends them",
                            self.spec.name,
                            shared.queue.len()
                        );
                    }
                    return None;
                }
            }
            let hold = shared.external_hold.clone().or_else(|| {
                (!guard::marker_present(&self.spec.marker, &self.spec.marker_text)).then(|| {
                    format!(
                        "{} has no msync marker ({}): its disk may not be mounted or the directory was replaced; msync does not sync it until the marker is back",
                        self.spec.local.display(),
                        self.spec.marker.display()
                    )
                })
            });
            if let Some(reason) = hold {
                if shared.held.as_ref() != Some(&reason) {
                    error!("{}: {reason}", self.spec.name);
                    shared.last_error = Some(reason.clone());
                    shared.held = Some(reason);
                }
                shared.state = BranchState::Error;
                if shared.stop_deadline.is_some() {
                    return None;
                }
                shared = self
                    .wake
                    .wait_timeout(shared, HELD_RECHECK)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
                continue;
            }
            if shared.held.take().is_some() {
                info!("{}: syncing again", self.spec.name);
                shared.last_error = None;
                shared.reconcile_due = true;
            }
            if now >= shared.next_reconcile {
                shared.reconcile_due = true;
            }
            if shared.reconcile_due {
                shared.reconcile_due = false;
                shared.next_reconcile = now + self.config.reconcile_every;
                shared.state = BranchState::Syncing;
                // The reconcile lists the branch after this moment, so it
                // covers every change queued before it.
                return Some(Work::Reconcile(shared.queue.take_all()));
            }
            if !shared.queue.is_empty() {
                shared.state = BranchState::Syncing;
                return Some(Work::Ops(shared.queue.take_batch(self.config.burst)));
            }
            if shared.last_error.is_none() {
                shared.state = BranchState::Idle;
            }
            let wake_at = match shared.stop_deadline {
                Some(deadline) => deadline.min(shared.next_reconcile),
                None => shared.next_reconcile,
            };
            let wait = wake_at.saturating_duration_since(now);
            shared = self
                .wake
                .wait_timeout(shared, wait)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn local_fs(&self) -> String {
        self.spec.local.to_string_lossy().into_owned()
    }

    /// `<remote>:<path>/<relative>` for a directory inside the branch.
    fn remote_dir(&self, relative: &str) -> String {
        format!("{}/{relative}", self.spec.remote)
    }

    fn reconcile(&self) -> Result<(), Failure> {
        info!(
            "{}: reconciling {} -> {}",
            self.spec.name,
            self.spec.local.display(),
            self.spec.remote
        );
        let plan = guard::plan(self.rclone, &self.spec.local, &self.spec.remote)?;
        let record = self
            .spec
            .work_dir
            .join(format!("{}.remote-files", self.spec.name));
        let before = std::fs::read_to_string(&record)
            .ok()
            .and_then(|t| t.trim().parse().ok());
        if let Some(reason) = guard::refusal(&plan, self.config.mass_delete, before) {
            return Err(Failure::Refused(reason));
        }
        let call = Call::sync(&self.local_fs(), &self.spec.remote)
            .filter(sync_filter())
            .config(self.trash_config());
        self.run_job(&call)?;
        if let Err(err) = write_private(&record, format!("{}\n", plan.local_files).as_bytes()) {
            warn!(
                "{}: cannot record the remote's file count in {}: {err}",
                self.spec.name,
                record.display()
            );
        }
        match trash::expire(
            self.rclone,
            &self.spec.remote,
            self.config.trash_days,
            SystemTime::now(),
        ) {
            Ok(days) if !days.is_empty() => {
                info!("{}: emptied trash days {}", self.spec.name, days.join(", "))
            }
            Ok(_) => {}
            Err(err) => warn!("{}: cannot expire the trash: {err}", self.spec.name),
        }
        Ok(())
    }

    /// Overwritten and deleted remote files go to today's trash.
    fn trash_config(&self) -> Value {
        trash::backup_config(&self.spec.remote, SystemTime::now())
    }

    fn execute(&self, ops: &[Op]) -> Result<(), Failure> {
        if ops.len() > 1 {
            return self.upload_many(ops);
        }
        match &ops[0] {
            Op::Upload(path) => self.upload(path),
            Op::Delete(path) => {
                let name = relative(path)?;
                let trashed = format!("{}/{name}", trash::today(SystemTime::now()));
                let call = Call::movefile(
                    &Location::new(&self.spec.remote, name),
                    &Location::new(&self.spec.remote, trashed),
                );
                ignore_not_found(call.run(self.rclone))
            }
            Op::DeleteDir(path) => {
                let name = relative(path)?;
                let trashed = format!("{}/{name}", trash::today(SystemTime::now()));
                let call = Call::move_dir(&self.remote_dir(name), &self.remote_dir(&trashed));
                match self.run_job(&call) {
                    Err(Failure::Transient(message)) if is_not_found(&message) => Ok(()),
                    Err(failure) => Err(failure),
                    Ok(()) => {
                        // sync/move empties the directory but leaves it.
                        let rmdir = Call::new(
                            "operations/rmdir",
                            json!({"fs": self.spec.remote, "remote": name}),
                        );
                        ignore_not_found(rmdir.run(self.rclone))
                    }
                }
            }
            Op::MakeDir(path) => {
                if !self.spec.local.join(path).is_dir() {
                    return Ok(());
                }
                Call::mkdir(&Location::new(&self.spec.remote, relative(path)?)).run(self.rclone)?;
                Ok(())
            }
            Op::Move { from, to, is_dir } => self.move_remote(from, to, *is_dir),
        }
    }

    fn upload(&self, path: &Path) -> Result<(), Failure> {
        let name = relative(path)?;
        let local = self.spec.local.join(path);
        let Ok(meta) = std::fs::symlink_metadata(&local) else {
            // Gone since: the delete that follows covers it.
            return Ok(());
        };
        if meta.file_type().is_symlink() {
            info!("{}: {name}: symlinks are not uploaded", self.spec.name);
            return Ok(());
        }
        if meta.is_dir() {
            let call = Call::copy(&local.to_string_lossy(), &self.remote_dir(name))
                .filter(sync_filter())
                // Backups keep their path below the remote directory.
                .config(json!({
                    "BackupDir": format!("{}/{}/{name}", self.spec.remote, trash::today(SystemTime::now()))
                }));
            return self.run_job(&call);
        }
        // The filter keeps the trash (inside the destination) out of the
        // destination's listing, which rclone requires of a backup-dir.
        let call = Call::copyfile(
            &Location::new(self.local_fs(), name),
            &Location::new(&self.spec.remote, name),
        )
        .filter(sync_filter())
        .config(self.trash_config());
        self.run_job(&call)
    }

    /// Many new or changed files at once: one `sync/copy` job over a file
    /// list, so rclone's parallel transfers work for the whole burst.
    fn upload_many(&self, ops: &[Op]) -> Result<(), Failure> {
        let mut list = String::new();
        for op in ops {
            let Op::Upload(path) = op else { continue };
            match relative(path) {
                // A line of the list cannot hold these: sent on their own.
                Ok(name) if name.contains('\n') || name.ends_with('\r') => self.upload(path)?,
                Ok(name) => {
                    list.push_str(name);
                    list.push('\n');
                }
                // One bad name must not hold up the rest of the burst.
                Err(failure) => self.report_skipped(failure),
            }
        }
        if list.is_empty() {
            return Ok(());
        }
        let list_file = self.spec.work_dir.join(format!("{}.files", self.spec.name));
        write_private(&list_file, list.as_bytes())
            .map_err(|e| Failure::Transient(format!("writing {}: {e}", list_file.display())))?;
        // rclone refuses --files-from-raw together with other filters; the
        // list holds no local-only names (the watcher never reports them).
        let filter = json!({ "FilesFromRaw": [list_file] });
        let call = Call::copy(&self.local_fs(), &self.spec.remote)
            .filter(filter)
            .config(self.trash_config());
        self.run_job(&call)
    }

    /// Logs and shows an operation that can never be done, and goes on.
    fn report_skipped(&self, failure: Failure) {
        if let Failure::Permanent(message)
        | Failure::Transient(message)
        | Failure::Refused(message) = failure
        {
            warn!("{}: giving up: {message}", self.spec.name);
            self.lock().last_error = Some(message);
        }
    }

    /// A rename: moved on the remote, server-side. When the remote has
    /// nothing at the old name (it was never uploaded), the new name is
    /// uploaded instead.
    fn move_remote(&self, from: &Path, to: &Path, is_dir: bool) -> Result<(), Failure> {
        let (from_name, to_name) = (relative(from)?, relative(to)?);
        let result = if is_dir {
            let call = Call::move_dir(&self.remote_dir(from_name), &self.remote_dir(to_name));
            self.run_job(&call)
        } else {
            let call = Call::movefile(
                &Location::new(&self.spec.remote, from_name),
                &Location::new(&self.spec.remote, to_name),
            )
            .filter(sync_filter())
            .config(self.trash_config());
            call.run(self.rclone).map(|_| ()).map_err(Failure::from)
        };
        match result {
            Err(Failure::Transient(message)) if is_not_found(&message) => self.upload(to),
            other => other,
        }
    }

    /// Runs a call as a job in the branch's stats group and waits for it,
    /// cancelling it when the stop deadline passes.
    fn run_job(&self, call: &Call) -> Result<(), Failure> {
        let group = format!("msync/branch/{}", self.spec.name);
        let job = call.start(self.rclone, &group)?;
        self.lock().current = Some(job.clone());
        let outcome = self.wait_for(&job);
        self.lock().current = None;
        outcome
    }

    fn wait_for(&self, job: &Job) -> Result<(), Failure> {
        let mut cancelled = false;
        loop {
            let status = job.status()?;
            if status.finished {
                if status.success {
                    self.count_sent(&status.output);
                    return Ok(());
                }
                if cancelled {
                    return Err(Failure::Cancelled);
                }
                return Err(if is_not_found(&status.error) {
                    Failure::Transient(format!("{}: {}", job.method(), status.error))
                } else {
                    Failure::Transient(status.error)
                });
            }
            let deadline = self.lock().stop_deadline;
            if !cancelled && deadline.is_some_and(|d| Instant::now() >= d) {
                let _ = job.cancel();
                cancelled = true;
            }
            std::thread::sleep(POLL);
        }
    }

    fn count_sent(&self, _output: &Option<Value>) {
        let group = format!("msync/branch/{}", self.spec.name);
        if let Ok(stats) = self.rclone.rpc("core/stats", &json!({"group": group})) {
            let mut shared = self.lock();
            shared.files_sent = stats["transfers"].as_u64().unwrap_or(shared.files_sent);
            shared.bytes_sent = stats["bytes"].as_u64().unwrap_or(shared.bytes_sent);
        }
    }

    fn refresh_space(&self) {
        let due = self
            .lock()
            .space_checked
            .is_none_or(|t| t.elapsed() >= SPACE_REFRESH);
        if !due {
            return;
        }
        let root = match self.spec.remote.split_once(':') {
            Some((name, _)) => format!("{name}:"),
            None => return,
        };
        let space = self.rclone.about(&root).ok().map(|about| Space {
            used: about.used,
            free: about.free,
            total: about.total,
        });
        let mut shared = self.lock();
        shared.space = space;
        shared.space_checked = Some(Instant::now());
    }
}

/// A unit of work taken from the queue.
enum Work {
    /// A full reconcile, covering the operations it took off the queue.
    Reconcile(Vec<Op>),
    Ops(Vec<Op>),
}

impl Work {
    fn describe(&self) -> String {
        match self {
            Work::Reconcile(_) => "reconcile".into(),
            Work::Ops(ops) if ops.len() > 1 => format!("upload of {} files", ops.len()),
            Work::Ops(ops) => format!("{:?}", ops[0]),
        }
    }

    fn into_ops(self) -> Vec<Op> {
        match self {
            Work::Reconcile(ops) | Work::Ops(ops) => ops,
        }
    }
}

fn relative(path: &Path) -> Result<&str, Failure> {
    path.to_str().ok_or_else(|| {
        Failure::Permanent(format!(
            "{}: the name is not valid UTF-8, which rclone cannot carry; rename it",
            path.display()
        ))
    })
}

fn is_not_found(message: &str) -> bool {
    message.contains("not found")
}

fn ignore_not_found(result: Result<Value, RcloneError>) -> Result<(), Failure> {
    match result {
        Ok(_) => Ok(()),
        Err(err) if err.is_not_found() => Ok(()),
        Err(err) => Err(err.into()),
    }
}

/// 1 s, 2 s, 4 s … up to `max`.
fn backoff(failures: u32, max: Duration) -> Duration {
    let seconds = 1u64 << failures.saturating_sub(1).min(16);
    Duration::from_secs(seconds).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_limit() {
        let max = Duration::from_secs(60);
        let steps: Vec<u64> = (1..=8).map(|n| backoff(n, max).as_secs()).collect();
        assert_eq!(steps, [1, 2, 4, 8, 16, 32, 60, 60]);
    }
}
