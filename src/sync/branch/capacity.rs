//! How a branch's worker measures its cloud: every few minutes (and sooner
//! after much was sent, or when the remote said it is full), counting
//! msync's own bytes and its trash there less often (listings); between
//! measures, what was sent counts. A cloud short of room first lets its
//! oldest trash days go (down to a week old) before files move elsewhere.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use log::{info, warn};

use super::BranchWorker;
use crate::rclone::{ListOptions, Location};
use crate::space::measure::{Counts, measure};
use crate::space::size::Shown;
use crate::sync::Homeless;
use crate::sync::failure::Trouble;
use crate::sync::table::Op;
use crate::sync::{branch_files, trash};

/// How often the backend is asked how much room it has.
const MEASURE_EVERY: Duration = Duration::from_secs(300);
/// How soon a measure that failed is tried again.
const MEASURE_RETRY: Duration = Duration::from_secs(30);
/// How often msync's bytes on the remote, and in its trash, are counted
/// (recursive listings).
const STORED_EVERY: Duration = Duration::from_secs(3600);
/// After the trash had nothing left to give, how long until it is asked
/// again.
const TRASH_SPENT: Duration = Duration::from_secs(600);

impl BranchWorker {
    /// Measures the cloud's capacity; keeps the last measure when the
    /// backend does not answer.
    pub(super) fn measure(&self) {
        let (sent_before, previous, count_stored) = {
            let shared = self.lock();
            (
                shared.capacity.sent_since,
                shared.capacity.measure.clone(),
                Instant::now() >= shared.next_stored_measure,
            )
        };
        let counts = Counts {
            stored: count_stored && self.spec.quota.is_some(),
            trash: count_stored,
        };
        let mut measure = measure(self.rclone, &self.spec.remote, counts);
        let stored_counted = count_stored && (measure.stored.is_some() || !counts.stored);
        if !counts.stored || measure.stored.is_none() {
            // What was counted before, plus what was sent since.
            measure.stored = previous
                .as_ref()
                .and_then(|m| m.stored)
                .map(|s| s.saturating_add(sent_before));
        }
        if !counts.trash || measure.trash.is_none() {
            measure.trash = previous.as_ref().and_then(|m| m.trash);
        }
        // A backend that told its space before and did not now failed for
        // a moment: its last answer stands until the retry.
        let about_told =
            measure.used.is_some() || measure.free.is_some() || measure.total.is_some();
        let about_failed = !about_told
            && previous
                .as_ref()
                .is_some_and(|p| p.free.is_some() || p.total.is_some());
        let told = measure.told() && !about_failed;
        let mut shared = self.lock();
        shared.measuring = false;
        shared.capacity.asked = true;
        let now = Instant::now();
        if told {
            if previous.as_ref().is_none_or(|p| p.free.is_none()) && measure.free.is_some() {
                info!(
                    "{}: the cloud has {} free",
                    self.spec.name,
                    Shown(measure.free.unwrap_or(0))
                );
            }
            shared.capacity.measure = Some(measure);
            // What was sent during the measure is not in it yet.
            shared.capacity.sent_since = shared.capacity.sent_since.saturating_sub(sent_before);
            shared.next_measure = now + MEASURE_EVERY;
            if stored_counted {
                shared.next_stored_measure = now + STORED_EVERY;
            }
        } else {
            shared.next_measure = now + MEASURE_RETRY;
        }
        self.wake.notify_all();
    }

    /// Purges the oldest trash day old enough to give way, and measures
    /// again; once none is left, what does not fit goes elsewhere.
    pub(super) fn give_way(&self) {
        let purged = trash::give_way(self.rclone, &self.spec.remote, SystemTime::now());
        let mut shared = self.lock();
        shared.giving_way = false;
        match purged {
            Ok(Some(day)) => {
                info!(
                    "{}: the cloud is short of room: emptied its trash of {day}",
                    self.spec.name
                );
                shared.next_stored_measure = Instant::now();
                self.measure_soon(&mut shared);
                // What waits for room tries again with the room made.
                shared.table.retry_postponed();
                if let Some(pause) = &mut shared.pause {
                    pause.until = Instant::now();
                }
            }
            Ok(None) => self.trash_spent(&mut shared),
            Err(err) => {
                warn!("{}: cannot empty old trash: {err}", self.spec.name);
                self.trash_spent(&mut shared);
            }
        }
        self.wake.notify_all();
    }

    /// The trash has no more room to give: what waits for room goes to
    /// other clouds.
    fn trash_spent(&self, shared: &mut super::Shared) {
        shared.trash_spent_until = Some(Instant::now() + TRASH_SPENT);
        shared.table.retry_postponed();
        let full = shared
            .pause
            .as_ref()
            .is_some_and(|p| p.trouble == Trouble::Full);
        if full {
            let waiting = shared.table.upload_paths();
            shared
                .homeless
                .extend(waiting.into_iter().map(|p| (p, Homeless::NoRoom)));
        }
    }

    /// Whether old trash may still make room, rather than files moving.
    pub(super) fn trash_may_give_way(shared: &super::Shared) -> bool {
        shared
            .trash_spent_until
            .is_none_or(|until| Instant::now() >= until)
    }

    /// Queues an upload of every local file the remote lacks or holds at
    /// another size (a reconcile stopped on a full cloud left them).
    pub(super) fn queue_unsent(&self) {
        let listed = self.rclone.list(
            &Location::new(&self.spec.remote, ""),
            &ListOptions {
                recurse: true,
                files_only: true,
                ..ListOptions::default()
            },
        );
        let on_remote: HashMap<String, i64> = match listed {
            Ok(entries) => entries.into_iter().map(|e| (e.path, e.size)).collect(),
            Err(err) => {
                // The next reconcile comes back to it.
                warn!(
                    "{}: cannot list the remote to find unsent files: {err}",
                    self.spec.name
                );
                return;
            }
        };
        let unsent: Vec<Op> = branch_files(&self.spec.local)
            .into_iter()
            .filter(|(path, size)| {
                let name = path.to_string_lossy();
                on_remote.get(name.as_ref()) != Some(&(*size as i64))
            })
            .map(|(path, _)| Op::Upload(path))
            .collect();
        if !unsent.is_empty() {
            info!(
                "{}: {} file(s) not on the full cloud yet are queued one by one",
                self.spec.name,
                unsent.len()
            );
        }
        self.enqueue(unsent);
        let mut shared = self.lock();
        if Self::trash_may_give_way(&shared) {
            shared.give_way_due = true;
        } else {
            self.trash_spent(&mut shared);
        }
    }

    /// The measure is stale: ask again at the next turn.
    pub(super) fn measure_soon(&self, shared: &mut super::Shared) {
        shared.next_measure = shared.next_measure.min(Instant::now());
    }
}
