//! How a branch's worker measures its cloud: every few minutes (and sooner
//! after much was sent, or when the remote said it is full), counting
//! msync's own bytes there for a quota less often (a listing); between
//! measures, what was sent counts.

use std::time::{Duration, Instant};

use log::info;

use super::BranchWorker;
use crate::space::measure::measure;
use crate::space::size::Shown;

/// How often the backend is asked how much room it has.
const MEASURE_EVERY: Duration = Duration::from_secs(300);
/// How soon a measure that failed is tried again.
const MEASURE_RETRY: Duration = Duration::from_secs(30);
/// How often msync's bytes on the remote are counted (a recursive
/// listing), for a quota.
const STORED_EVERY: Duration = Duration::from_secs(3600);

impl BranchWorker {
    /// Measures the cloud's capacity; keeps the last measure when the
    /// backend does not answer.
    pub(super) fn measure(&self) {
        let (sent_before, previous, count_stored) = {
            let shared = self.lock();
            (
                shared.capacity.sent_since,
                shared.capacity.measure.clone(),
                shared.capacity.quota.is_some() && Instant::now() >= shared.next_stored_measure,
            )
        };
        let mut measure = measure(self.rclone, &self.spec.remote, count_stored);
        if !count_stored {
            // What was counted before, plus what was sent since.
            measure.stored = previous
                .as_ref()
                .and_then(|m| m.stored)
                .map(|s| s.saturating_add(sent_before));
        }
        let told = measure.told();
        let stored_counted = count_stored && measure.stored.is_some();
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

    /// The measure is stale: ask again at the next turn.
    pub(super) fn measure_soon(&self, shared: &mut super::Shared) {
        shared.next_measure = shared.next_measure.min(Instant::now());
    }
}
