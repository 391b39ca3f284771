//! One branch's worker: a few named threads (`msync-sync-<branch>-<n>`,
//! as many as the branch may run transfers at once) that take ready work
//! from the branch's [`PathTable`], carry it out (the calls themselves are
//! in [`ops`]) and record the outcome by its failure class (in
//! [`outcome`]):
//!
//! - one path's failure holds up that path and the paths that depend on
//!   it, nothing else;
//! - a whole-remote failure pauses the branch: after a backoff one thread
//!   probes with one unit of work while the others wait, and the branch
//!   resumes the moment the probe goes through. A full remote still takes
//!   deletes and moves while uploads wait;
//! - a refused reconcile (see [`super::guard`]) holds every change of the
//!   branch until a reconcile goes through.
//!
//! A full reconcile runs alone: when one is due the threads stop taking
//! work, and the last to finish runs it.
//!
//! The branch tracks its cloud's capacity (in [`capacity`]): measured now
//! and then, less what it sent since and what it has queued. A file that
//! does not fit is not sent; it is listed as homeless, for the service to
//! move to a branch whose cloud has room.
//!
//! Every transfer of a branch is accounted in the stats group
//! `msync/branch/<name>`, so `status` reads the files in flight from
//! rclone's own accounting. Anything that may take a while runs as an
//! `_async` job, so `stop --now` can cancel it with `job/stop`; a small file
//! goes as one plain call.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use log::{error, info, warn};
use serde_json::json;

mod capacity;
mod clash;
mod metadata;
mod ops;
mod outcome;
mod partial;

use super::failure::Trouble;
use super::status::{BranchState, BranchStatus, InFlight};
use super::table::{Covered, Op, PathTable, Taken};
use super::{EngineConfig, Homeless, guard};
use crate::install::DirIdentity;
use crate::rclone::Rclone;
use crate::space::Capacity;

/// How often a running job is polled: soon at first (most jobs of a
/// burst of small files are done in a few milliseconds, and a wait of a
/// whole poll would be most of their time), then less often, up to `POLL`.
const POLL_FIRST: Duration = Duration::from_millis(2);
const POLL: Duration = Duration::from_millis(50);
/// How often a held branch (no marker) is looked at again.
const HELD_RECHECK: Duration = Duration::from_secs(5);
/// Uploads one file-list job carries at most.
const BATCH_MAX: usize = 1000;
/// The first wait before a reconcile that left some paths behind, or was
/// refused, is tried again; it doubles up to the reconcile interval.
const RECONCILE_RETRY: Duration = Duration::from_secs(60);

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
    /// The branch directory's identity as recorded at install, which lets
    /// a deleted marker be put back.
    pub identity: Option<DirIdentity>,
    /// The most msync may store on the remote (`install --quota`).
    pub quota: Option<u64>,
}

/// A whole-remote failure the branch is waiting out.
#[derive(Debug, Clone)]
struct Pause {
    until: Instant,
    failures: u32,
    trouble: Trouble,
    message: String,
    /// A thread is trying the remote again; the others wait for it.
    probing: bool,
    /// The remote failed again after a stop was asked for: the stop stops
    /// waiting for it.
    since_stop: bool,
}

#[derive(Debug)]
struct Shared {
    table: PathTable,
    reconcile_due: bool,
    reconciling: bool,
    next_reconcile: Instant,
    /// Reconciles in a row that were refused or left paths behind.
    reconcile_failures: u32,
    stop_deadline: Option<Instant>,
    /// The stop's "not sent" warning was logged (once per branch).
    stop_reported: bool,
    pause: Option<Pause>,
    /// A guard's refusal: every change waits until a reconcile goes
    /// through.
    refused: Option<String>,
    last_sync: Option<SystemTime>,
    last_error: Option<String>,
    warning: Option<String>,
    /// The cloud's capacity; its `pending` is filled in from the table
    /// when read.
    capacity: Capacity,
    /// When the capacity is measured next (sooner when much was sent).
    next_measure: Instant,
    /// When msync's bytes on the remote are measured next, for a quota.
    next_stored_measure: Instant,
    measuring: bool,
    /// Bytes of the uploads under way, held against the cloud's room.
    sending: u64,
    /// The cloud is short of room: its oldest trash day should go.
    give_way_due: bool,
    giving_way: bool,
    /// The trash had nothing old enough left to give, as of this.
    trash_spent_until: Option<Instant>,
    /// A reconcile stopped on a full cloud: the files it left unsent must
    /// be found and queued one by one, to be placed where there is room.
    unsent_due: bool,
    /// Uploads that cannot go to this cloud, waiting to be moved to a
    /// branch that can take them.
    homeless: BTreeMap<PathBuf, Homeless>,
    /// Names held back from a case-insensitive cloud, each with why (see
    /// [`clash`]): none of them is ever the subject of a call to the
    /// remote, since there it means the name the cloud keeps.
    held_names: BTreeMap<PathBuf, String>,
    /// Files moved to another branch: their remote copy stays until the
    /// other branch has sent them (the watcher's delete is ignored).
    moved_away: BTreeSet<PathBuf>,
    /// Files moved in from another branch, and those of them sent since
    /// the service last asked.
    moved_in: BTreeSet<PathBuf>,
    sent_moved: Vec<PathBuf>,
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
    /// The branch's share of the metadata index; locked after `shared`
    /// when both are.
    meta: Mutex<metadata::MetaLog>,
    /// The backend writes uploads in place: they go under a temporary
    /// name first (see [`super::backend`]).
    in_place: bool,
    /// The library has msync's own `msync/placefile` (an upstream
    /// librclone lacks it): file moves and whole uploads take fewer
    /// requests.
    places: bool,
    partials_cleaned: AtomicBool,
    /// The backend's features were logged (at the first reconcile that
    /// could read them).
    described: AtomicBool,
    /// The remote takes names that differ only in case for one (asked
    /// once, when first needed).
    case_insensitive: OnceLock<bool>,
}

/// A unit of work a thread took.
enum Work {
    /// A full reconcile, covering the entries it took off the table.
    Reconcile(Covered),
    /// Asking the remote how much room it has.
    Measure,
    /// Emptying the oldest trash day to make room.
    GiveWay,
    /// Queueing what a reconcile left unsent on a full cloud.
    QueueUnsent,
    /// Sending the metadata records waiting, as one journal.
    WriteJournal,
    Ops {
        taken: Taken,
        probe: bool,
    },
}

impl BranchWorker {
    pub fn new(spec: BranchSpec, config: EngineConfig, rclone: Rclone) -> BranchWorker {
        let in_place = super::backend::writes_in_place(rclone, &spec.remote);
        let places = rclone.has_method("msync/placefile");
        BranchWorker {
            shared: Mutex::new(Shared {
                table: PathTable::default(),
                // Every start begins with a full reconcile.
                reconcile_due: true,
                reconciling: false,
                next_reconcile: Instant::now() + config.reconcile_every,
                reconcile_failures: 0,
                stop_deadline: None,
                stop_reported: false,
                pause: None,
                refused: None,
                last_sync: None,
                last_error: None,
                warning: None,
                capacity: Capacity {
                    quota: spec.quota,
                    min_free: config.min_free,
                    ..Capacity::default()
                },
                next_measure: Instant::now(),
                next_stored_measure: Instant::now(),
                measuring: false,
                sending: 0,
                give_way_due: false,
                giving_way: false,
                trash_spent_until: None,
                unsent_due: false,
                homeless: BTreeMap::new(),
                held_names: BTreeMap::new(),
                moved_away: BTreeSet::new(),
                moved_in: BTreeSet::new(),
                sent_moved: Vec::new(),
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
            meta: Mutex::default(),
            in_place,
            places,
            partials_cleaned: AtomicBool::new(false),
            described: AtomicBool::new(false),
            case_insensitive: OnceLock::new(),
        }
    }

    pub fn spec(&self) -> &BranchSpec {
        &self.spec
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wait<'a>(&self, shared: MutexGuard<'a, Shared>, until: Instant) -> MutexGuard<'a, Shared> {
        let wait = until.saturating_duration_since(Instant::now());
        self.wake
            .wait_timeout(shared, wait)
            .unwrap_or_else(|p| p.into_inner())
            .0
    }

    /// Queues work; an upload is queued with its file's size, which
    /// counts against the cloud's room until it is sent.
    pub fn enqueue(&self, ops: impl IntoIterator<Item = Op>) {
        let sized: Vec<(Op, u64)> = ops
            .into_iter()
            .map(|op| {
                let bytes = match &op {
                    Op::Upload(path) => self.file_size(path),
                    _ => 0,
                };
                (op, bytes)
            })
            .collect();
        let mut shared = self.lock();
        for (op, bytes) in sized {
            shared.homeless.remove(op.path());
            if let Op::Delete(path) = &op
                && shared.moved_away.contains(path)
            {
                // It moved to another branch: nothing to send from here,
                // and its copy here goes only once it is there.
                shared.table.drop_waiting_upload(path);
                continue;
            }
            shared.moved_away.remove(op.path());
            shared.table.push_sized(op, bytes);
        }
        self.wake.notify_all();
    }

    /// See [`super::Engine::moved`].
    pub fn keep_moved_away(&self, path: &Path) {
        self.lock().moved_away.insert(path.to_path_buf());
    }

    /// See [`super::Engine::moved`].
    pub fn watch_moved_in(&self, path: &Path) {
        self.lock().moved_in.insert(path.to_path_buf());
    }

    pub fn forget_moved(&self, path: &Path) {
        let mut shared = self.lock();
        shared.moved_away.remove(path);
        shared.moved_in.remove(path);
    }

    pub fn take_sent_moved(&self) -> Vec<PathBuf> {
        std::mem::take(&mut self.lock().sent_moved)
    }

    /// A regular file's size in the branch; 0 for anything else.
    fn file_size(&self, path: &Path) -> u64 {
        std::fs::symlink_metadata(self.spec.local.join(path))
            .ok()
            .filter(|meta| meta.is_file())
            .map_or(0, |meta| meta.len())
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

    /// The cloud's capacity now, what it has queued counted in.
    pub fn capacity(&self) -> Capacity {
        self.lock().capacity_now()
    }

    /// Whether the remote takes names that differ only in case for one;
    /// `None` until it was asked.
    pub fn case_insensitive(&self) -> Option<bool> {
        self.case_insensitive.get().copied()
    }

    /// What is wrong with the whole remote, while something is.
    pub fn trouble(&self) -> Option<Trouble> {
        self.lock().pause.as_ref().map(|p| p.trouble)
    }

    /// The uploads that did not fit since the last call.
    pub fn take_homeless(&self) -> Vec<(PathBuf, Homeless)> {
        std::mem::take(&mut self.lock().homeless)
            .into_iter()
            .collect()
    }

    /// Finish the table until `deadline`, then cancel what runs and exit.
    /// A paused remote gets one more try at once; if that fails too, the
    /// stop does not wait for it.
    pub fn stop_by(&self, deadline: Instant) {
        let mut shared = self.lock();
        shared.stop_deadline = Some(deadline);
        if let Some(pause) = &mut shared.pause {
            pause.until = Instant::now();
        }
        self.wake.notify_all();
    }

    /// The branch's status, with the files in flight from rclone's stats.
    pub fn status(&self) -> BranchStatus {
        let (mut status, busy) = {
            let shared = self.lock();
            let now = Instant::now();
            let status = BranchStatus {
                name: self.spec.name.clone(),
                remote: self.spec.remote.clone(),
                local: self.spec.local.clone(),
                state: shared.state(),
                queued: shared.table.len(),
                in_flight: Vec::new(),
                failing: shared.table.failing(now),
                paused: shared.pause.as_ref().map(|p| p.message.clone()),
                refused: shared.refused.clone(),
                last_sync: shared
                    .last_sync
                    .map(|t| humantime::format_rfc3339_seconds(t).to_string()),
                last_error: shared.last_error.clone(),
                warning: shared.warning.clone(),
                space: shared.capacity_now().view(),
                files_sent: shared.files_sent,
                bytes_sent: shared.bytes_sent,
            };
            (status, shared.reconciling || shared.table.running() > 0)
        };
        if busy && let Ok(stats) = self.stats() {
            status.in_flight = stats
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

    /// The body of each of the branch's threads.
    pub fn run(&self) {
        while let Some(work) = self.next_work() {
            let cancelled = match work {
                Work::Reconcile(covered) => {
                    self.reconnect_if_probing();
                    let result = self.reconcile();
                    self.reconciled(covered, result)
                }
                Work::Measure => {
                    self.measure();
                    false
                }
                Work::GiveWay => {
                    self.give_way();
                    false
                }
                Work::QueueUnsent => {
                    self.queue_unsent();
                    false
                }
                Work::WriteJournal => {
                    self.write_journal();
                    false
                }
                Work::Ops { taken, probe } => {
                    if probe {
                        self.reconnect_if_probing();
                    }
                    let ops: Vec<Op> = taken.iter().map(|(_, op)| op.clone()).collect();
                    let results = self.execute(&ops);
                    self.record_meta(&ops, &results);
                    self.executed(taken, results, probe)
                }
            };
            if cancelled {
                return;
            }
        }
    }

    /// Before a probe of a remote that stopped answering, drops the
    /// connections rclone holds to it. rclone keeps them in each remote's
    /// cached Fs, and its ftp backend hands pooled ones out unchecked: after
    /// an outage every stale one failed a probe, a backoff apart, and a
    /// branch stayed paused for many minutes after its server was back.
    /// rclone's cache is shared by every remote (it can only be cleared
    /// whole): the others make theirs anew on their next call, at the cost
    /// of a login, rarely.
    fn reconnect_if_probing(&self) {
        let probing_down = self
            .lock()
            .pause
            .as_ref()
            .is_some_and(|p| p.probing && p.trouble == Trouble::Down);
        if probing_down && let Err(err) = self.rclone.forget_remotes() {
            warn!(
                "{}: cannot drop rclone's connections: {err}",
                self.spec.name
            );
        }
    }

    /// Waits for the next unit of work; `None` when the thread must exit.
    fn next_work(&self) -> Option<Work> {
        let mut shared = self.lock();
        loop {
            let now = Instant::now();
            if self.must_exit(&mut shared, now) {
                self.wake.notify_all();
                return None;
            }
            if let Some(reason) = self.hold_reason(&shared) {
                if shared.held.as_ref() != Some(&reason) {
                    error!("{}: {reason}", self.spec.name);
                    shared.last_error = Some(reason.clone());
                    shared.held = Some(reason);
                }
                if shared.stop_deadline.is_some() {
                    return None;
                }
                shared = self.wait(shared, now + HELD_RECHECK);
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
            let full = shared
                .pause
                .as_ref()
                .is_some_and(|p| p.trouble == Trouble::Full && !p.probing);
            if full && !shared.table.has_uploads() && !shared.reconcile_due {
                // What did not fit went to other branches: nothing waits
                // for room here. The next file that does not fit is found
                // by the capacity check or by the remote again.
                info!(
                    "{}: nothing waits for room on the full cloud",
                    self.spec.name
                );
                shared.pause = None;
                if !shared.table.has_failing() {
                    shared.last_error = None;
                }
            }
            match self.take_work(&mut shared, now) {
                Ok(work) => return Some(work),
                Err(wake_at) => shared = self.wait(shared, wake_at),
            }
        }
    }

    /// Whether a stop asks this thread to end now: its deadline passed, or
    /// nothing is left that it could send (changes a guard holds, or that
    /// wait for a remote that is down, wait for the next start).
    fn must_exit(&self, shared: &mut Shared, now: Instant) -> bool {
        let Some(deadline) = shared.stop_deadline else {
            return false;
        };
        let remote_down = shared
            .pause
            .as_ref()
            .is_some_and(|p| p.since_stop && p.trouble == Trouble::Down && !p.probing);
        let nothing_left = remote_down
            || ((shared.table.is_empty() || shared.refused.is_some()) && !shared.reconcile_due);
        if !nothing_left && now < deadline {
            return false;
        }
        let unsent = !shared.table.is_empty() || shared.reconcile_due;
        let last_out = !shared.reconciling && shared.table.running() == 0;
        if unsent && last_out && !shared.stop_reported {
            shared.stop_reported = true;
            warn!(
                "{}: stopping with {} change(s) not sent; the next start's reconcile sends them",
                self.spec.name,
                shared.table.len()
            );
        }
        true
    }

    /// Takes what this thread may do now, or says when to look again. A
    /// paused remote lets only its probe through, once the backoff is
    /// over; a full one still takes what sends no bytes. A due reconcile
    /// waits for the running work to finish and then runs alone.
    fn take_work(&self, shared: &mut Shared, now: Instant) -> Result<Work, Instant> {
        // A reconcile already due waits for what holds it (a pause, work
        // under way), which wakes the thread: its past time must not.
        let mut wake_at = if shared.next_reconcile > now {
            shared.next_reconcile
        } else {
            now + HELD_RECHECK
        };
        if let Some(deadline) = shared.stop_deadline {
            wake_at = wake_at.min(deadline);
        }
        let remote_down = shared
            .pause
            .as_ref()
            .is_some_and(|p| p.trouble == Trouble::Down);
        if shared.stop_deadline.is_none() && !shared.measuring && !remote_down {
            if now >= shared.next_measure {
                shared.measuring = true;
                return Ok(Work::Measure);
            }
            wake_at = wake_at.min(shared.next_measure);
        }
        if !shared.capacity.asked {
            // Nothing is sent before the cloud was first asked for its
            // room (the measure wakes the others when done).
            return Err(wake_at);
        }
        if shared.give_way_due && !shared.giving_way && shared.stop_deadline.is_none() {
            shared.give_way_due = false;
            shared.giving_way = true;
            return Ok(Work::GiveWay);
        }
        if shared.unsent_due && !shared.giving_way && shared.stop_deadline.is_none() {
            shared.unsent_due = false;
            return Ok(Work::QueueUnsent);
        }
        let (probe, no_uploads) = match &shared.pause {
            Some(pause) if pause.probing => (false, pause.trouble.takes_non_uploads()),
            Some(pause) if now < pause.until => {
                wake_at = wake_at.min(pause.until);
                (false, pause.trouble.takes_non_uploads())
            }
            Some(_) => (true, false),
            None => (false, false),
        };
        let idle = shared.table.running() == 0 && !shared.reconciling;
        // The reconcile's snapshot replaces the journals: none is written
        // while it runs, and it waits for one being written.
        let journal_due = if shared.reconciling || shared.pause.is_some() {
            None
        } else {
            self.meta().journal_due()
        };
        let idle = idle && !self.meta().is_writing();
        let may_probe = probe && idle;
        if shared.reconcile_due && !shared.reconciling && (shared.pause.is_none() || may_probe) {
            if !idle {
                return Err(wake_at);
            }
            shared.reconcile_due = false;
            shared.reconciling = true;
            shared.next_reconcile = now + self.config.reconcile_every;
            if let Some(pause) = &mut shared.pause {
                pause.probing = true;
            }
            // The reconcile lists the branch after this moment, so it
            // covers every change in the table before it.
            return Ok(Work::Reconcile(shared.table.take_idle()));
        }
        if let Some(due) = journal_due {
            if due <= now {
                self.meta().start_writing();
                return Ok(Work::WriteJournal);
            }
            wake_at = wake_at.min(due);
        }
        if shared.reconciling || shared.refused.is_some() {
            return Err(wake_at);
        }
        let taken = if may_probe {
            shared.table.take(now, usize::MAX, 1, |_| true)
        } else if shared.pause.is_none() || no_uploads {
            shared.table.take(now, self.config.burst, BATCH_MAX, |op| {
                !no_uploads || !op.sends_bytes()
            })
        } else {
            Vec::new()
        };
        if taken.is_empty() {
            if let Some(at) = shared.table.next_try() {
                wake_at = wake_at.min(at);
            }
            return Err(wake_at);
        }
        if may_probe && let Some(pause) = &mut shared.pause {
            pause.probing = true;
        }
        Ok(Work::Ops {
            taken,
            probe: may_probe,
        })
    }

    /// Why the branch must not be synced now, if it must not.
    fn hold_reason(&self, shared: &Shared) -> Option<String> {
        if let Some(hold) = &shared.external_hold {
            return Some(hold.clone());
        }
        let spec = &self.spec;
        match guard::check_marker(&spec.local, &spec.marker, &spec.marker_text, spec.identity) {
            guard::Marker::Present => None,
            guard::Marker::Restored => {
                info!(
                    "{}: the branch marker {} was deleted; put it back (the directory is the install's own)",
                    spec.name,
                    spec.marker.display()
                );
                None
            }
            guard::Marker::Missing => Some(format!(
                "{} has no msync marker ({}): its disk may not be mounted or the directory was replaced; msync does not sync it until the marker is back",
                spec.local.display(),
                spec.marker.display()
            )),
        }
    }
}

impl Shared {
    /// The capacity with what the table holds counted as pending.
    fn capacity_now(&self) -> Capacity {
        Capacity {
            pending: self.table.pending_bytes(),
            ..self.capacity.clone()
        }
    }

    fn state(&self) -> BranchState {
        if self.held.is_some() || self.refused.is_some() {
            BranchState::Error
        } else if self.pause.is_some() || self.table.has_retrying() {
            BranchState::Retrying
        } else if self.reconciling || self.reconcile_due || !self.table.is_empty() {
            BranchState::Syncing
        } else {
            BranchState::Idle
        }
    }
}

impl BranchWorker {
    fn stats(&self) -> Result<crate::rclone::Progress, crate::rclone::RcloneError> {
        let value = self
            .rclone
            .rpc("core/stats", &json!({"group": self.group()}))?;
        Ok(serde_json::from_value(value).unwrap_or_default())
    }
}
