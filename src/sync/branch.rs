//! One branch's worker: a named thread (`msync-sync-<branch>`) that takes
//! operations from the branch's queue and carries them out, one at a time
//! and in order, retrying failures with backoff (the calls themselves are in
//! [`ops`]).
//!
//! Every transfer of a branch is accounted in the stats group
//! `msync/branch/<name>`, so `status` reads the files in flight from
//! rclone's own accounting. Anything that may take a while runs as an
//! `_async` job, so `stop --now` can cancel it with `job/stop`; a small file
//! goes as one plain call.

use std::path::PathBuf;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use log::{error, info, warn};

mod ops;

use super::queue::{Op, OpQueue};
use super::status::{BranchState, BranchStatus, InFlight, Space};
use super::{EngineConfig, guard};
use crate::rclone::{Job, Rclone, RcloneError};

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
    /// The record already says the remote holds data: uploads need not
    /// look at it again.
    recorded_data: bool,
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
                recorded_data: false,
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
