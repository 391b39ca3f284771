//! What a branch's worker makes of each outcome: a reconcile's and a unit
//! of work's results recorded in the path table by their [`Failure`]
//! class, and the pause a whole-remote failure starts.

use std::time::{Duration, Instant, SystemTime};

use log::{error, info, warn};

use super::{BranchWorker, Pause, RECONCILE_RETRY, Shared};
use crate::sync::Homeless;
use crate::sync::failure::{self, Failure, Trouble};
use crate::sync::table::{Covered, Op, Taken, backoff};

/// How long an upload that does not fit waits before it is tried again
/// (unless it is moved to another branch first).
const NO_ROOM_RETRY: Duration = Duration::from_secs(60);
/// How often a remote whose daily upload cap is reached is tried again.
const CAP_RETRY: Duration = Duration::from_secs(3600);

impl BranchWorker {
    /// Records a reconcile's outcome; true when it was cancelled.
    pub(super) fn reconciled(&self, covered: Covered, result: Result<(), Failure>) -> bool {
        let mut shared = self.lock();
        shared.reconciling = false;
        self.wake.notify_all();
        let now = Instant::now();
        match result {
            Ok(()) => {
                shared.pause = None;
                shared.reconcile_failures = 0;
                if shared.refused.take().is_some() {
                    info!(
                        "{}: the reconcile went through; syncing again",
                        self.spec.name
                    );
                }
                shared.table.clear_stuck();
                shared.last_sync = Some(SystemTime::now());
                shared.last_error = None;
                shared.capacity.sent_since += covered.bytes();
                // The reconcile sent everything the branch holds (a moved
                // file deleted since was never sent: its old copy stays,
                // for the old branch's reconcile to trash).
                let moved_in = std::mem::take(&mut shared.moved_in);
                let local = &self.spec.local;
                let sent = moved_in.into_iter().filter(|p| local.join(p).is_file());
                shared.sent_moved.extend(sent);
                // A reconcile may send much that no change announced.
                self.measure_soon(&mut shared);
                false
            }
            Err(Failure::Cancelled) => {
                shared.table.restore(covered);
                info!("{}: reconcile cancelled", self.spec.name);
                true
            }
            Err(Failure::Remote {
                trouble: Trouble::Full,
                message,
            }) => {
                // What the reconcile could not send goes path by path, so
                // each file finds a cloud with room; the reconcile itself
                // comes back later.
                shared.table.restore(covered);
                shared.unsent_due = true;
                self.retry_reconcile_later(&mut shared, now);
                self.measure_soon(&mut shared);
                self.pause(&mut shared, Trouble::Full, message, "reconcile");
                false
            }
            Err(Failure::Remote { trouble, message }) => {
                shared.table.restore(covered);
                shared.reconcile_due = true;
                self.pause(&mut shared, trouble, message, "reconcile");
                false
            }
            Err(Failure::Refused(message)) => {
                // Held, not sent piecemeal: the changes wait for a
                // reconcile the guard lets through.
                error!("{}: {message}", self.spec.name);
                shared.table.restore(covered);
                shared.refused = Some(message.clone());
                shared.last_error = Some(message);
                self.retry_reconcile_later(&mut shared, now);
                false
            }
            Err(failure) => {
                // Some paths did not go (a file being written, a name the
                // remote refuses); everything else did, deletes included.
                // The covered changes go again one by one, so each bad path
                // is found and listed; the reconcile is tried again later.
                let pause_ended = shared.pause.take().is_some();
                if pause_ended {
                    info!("{}: the remote answers again", self.spec.name);
                }
                warn!(
                    "{}: reconcile left some paths behind: {}",
                    self.spec.name,
                    failure.message()
                );
                shared.table.restore(covered);
                shared.last_sync = Some(SystemTime::now());
                self.retry_reconcile_later(&mut shared, now);
                false
            }
        }
    }

    fn retry_reconcile_later(&self, shared: &mut Shared, now: Instant) {
        shared.reconcile_failures += 1;
        let wait = RECONCILE_RETRY
            .saturating_mul(1 << shared.reconcile_failures.saturating_sub(1).min(16))
            .min(self.config.reconcile_every);
        shared.next_reconcile = now + wait;
    }

    /// Records the outcome of a unit of work; true when it was cancelled.
    pub(super) fn executed(
        &self,
        taken: Taken,
        results: Vec<Result<(), Failure>>,
        probe: bool,
    ) -> bool {
        let mut shared = self.lock();
        self.wake.notify_all();
        let now = Instant::now();
        let batch = taken.len() > 1;
        let mut cancelled = false;
        let mut remote_failure = None;
        let mut answered = false;
        for ((seq, op), result) in taken.into_iter().zip(results) {
            match result {
                Ok(()) => {
                    // Work done locally says nothing of the remote.
                    answered |= op.asks_the_remote();
                    let sent = shared.table.succeeded(seq);
                    shared.capacity.sent_since += sent;
                    if op.sends_bytes() && shared.moved_in.remove(op.path()) {
                        shared.sent_moved.push(op.path().to_path_buf());
                    }
                    if sent > 0 && shared.capacity.sent_enough_to_measure() {
                        self.measure_soon(&mut shared);
                    }
                }
                Err(Failure::Cancelled) => {
                    cancelled = true;
                    shared.table.release(seq);
                }
                Err(Failure::NoRoom(message)) => {
                    // Found before anything was sent: says nothing of the
                    // remote. Old trash makes room first; then the file
                    // moves to another cloud.
                    shared.table.postpone(seq, now + NO_ROOM_RETRY, &message);
                    if Self::trash_may_give_way(&shared) {
                        shared.give_way_due = true;
                    } else {
                        shared
                            .homeless
                            .insert(op.path().to_path_buf(), Homeless::NoRoom);
                    }
                }
                Err(Failure::NameClash { held, message }) => {
                    // Says nothing of the remote either: the held name (the
                    // path, or a directory above it) waits for the service
                    // to move it to a branch that can take it.
                    shared.table.postpone(seq, now + NO_ROOM_RETRY, &message);
                    shared.homeless.insert(held, Homeless::NameClash);
                }
                Err(Failure::Remote { trouble, message }) => {
                    shared.table.release(seq);
                    remote_failure = Some((trouble, message));
                }
                Err(failure) if batch && !matches!(failure, Failure::Skipped(_)) => {
                    answered = true;
                    // Which file of the batch failed is not known: each goes
                    // again on its own.
                    info!(
                        "{}: a batch upload failed ({}); sending its files one by one",
                        self.spec.name,
                        failure.message()
                    );
                    shared.table.split(seq);
                }
                Err(failure) => {
                    answered = true;
                    self.log_path_failure(&op, &failure);
                    shared
                        .table
                        .failed(seq, &failure, now, self.config.max_backoff);
                }
            }
        }
        if let Some((trouble, message)) = remote_failure {
            if trouble == Trouble::Full {
                if Self::trash_may_give_way(&shared) {
                    shared.give_way_due = true;
                } else {
                    // Every upload waiting here may go to a cloud with room.
                    let waiting = shared.table.upload_paths();
                    shared
                        .homeless
                        .extend(waiting.into_iter().map(|p| (p, Homeless::NoRoom)));
                }
                self.measure_soon(&mut shared);
            }
            let already_paused = shared.pause.as_ref().is_some_and(|p| p.trouble == trouble);
            if !probe && already_paused {
                // Work that was under way when the remote failed, failing
                // the same way: one outage, not a failed probe, so the
                // backoff stays as it was.
                shared.last_error = Some(message);
            } else {
                self.pause(&mut shared, trouble, message, "upload");
            }
        } else if answered
            && (probe
                || shared
                    .pause
                    .as_ref()
                    .is_some_and(|p| p.trouble == Trouble::Down))
            && shared.pause.take().is_some()
        {
            info!("{}: the remote answers again; resuming", self.spec.name);
        }
        if probe
            && let Some(pause) = &mut shared.pause
            && pause.probing
        {
            // The probe neither failed on the remote nor got an answer (its
            // work did not fit, say): the next one goes after the backoff.
            pause.probing = false;
            pause.until = now + backoff(pause.failures, self.config.max_backoff);
        }
        if answered && !shared.table.has_failing() {
            shared.last_error = None;
        }
        if answered {
            shared.last_sync = Some(SystemTime::now());
        }
        cancelled
    }

    fn log_path_failure(&self, op: &Op, failure: &Failure) {
        let path = op.path().display();
        match failure {
            Failure::Skipped(message) => info!("{}: {path}: skipped: {message}", self.spec.name),
            Failure::Path {
                permanent: true,
                message,
            } => warn!(
                "{}: {path}: not sent, and not tried again until it changes: {message}",
                self.spec.name
            ),
            failure => warn!(
                "{}: {path}: failed, retrying with backoff: {}",
                self.spec.name,
                failure.message()
            ),
        }
    }

    /// Pauses the branch after a whole-remote failure, or extends the
    /// pause when the probe failed too.
    fn pause(&self, shared: &mut Shared, trouble: Trouble, message: String, what: &str) {
        let failures = shared.pause.as_ref().map_or(0, |p| p.failures) + 1;
        let (wait, why) = match trouble {
            // A server that said how long to wait gets exactly that.
            Trouble::Down if failure::is_rate_limit(&message) => (
                failure::retry_after(&message)
                    .unwrap_or_else(|| backoff(failures, self.config.max_backoff)),
                "asks for fewer requests",
            ),
            Trouble::Down => (
                backoff(failures, self.config.max_backoff),
                "is not answering",
            ),
            Trouble::Full => (backoff(failures, self.config.max_backoff), "is full"),
            Trouble::Capped => (CAP_RETRY, "reached its daily upload cap"),
        };
        warn!(
            "{}: the remote {why} ({what}); pausing {}, next try in {}s: {message}",
            self.spec.name,
            if trouble.takes_non_uploads() {
                "uploads"
            } else {
                "the branch"
            },
            wait.as_secs()
        );
        shared.last_error = Some(message.clone());
        let until = Instant::now() + wait;
        let message = if trouble == Trouble::Capped {
            let at = SystemTime::now() + wait;
            format!(
                "{message} (daily upload cap: uploads wait until {}; new files go to other clouds)",
                humantime::format_rfc3339_seconds(at)
            )
        } else {
            message
        };
        shared.pause = Some(Pause {
            until,
            failures,
            trouble,
            message,
            probing: false,
            since_stop: shared.stop_deadline.is_some(),
        });
    }
}
