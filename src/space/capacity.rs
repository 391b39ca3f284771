//! One cloud's capacity, as plain data: what its backend last said
//! (`operations/about`), what msync's quota allows, and what msync sent or
//! queued since, reduced to the numbers placement needs. No I/O.
//!
//! Nothing unknown is taken for plenty: a cloud whose backend tells nothing
//! and that has no quota has unknown room, not infinite room.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// A cloud is measured again once msync sent this share of its size …
const REMEASURE_SHARE: u64 = 20;
/// … or this much, whichever is more.
const REMEASURE_MIN: u64 = 16 << 20;

/// The default reserve is this share of a cloud's size …
const RESERVE_SHARE: u64 = 50;
/// … but never more than this.
const RESERVE_MAX: u64 = 1 << 30;

/// What was measured of a cloud, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Measure {
    pub at: SystemTime,
    /// The account as `operations/about` tells it, where it does.
    pub used: Option<u64>,
    pub free: Option<u64>,
    pub total: Option<u64>,
    /// Bytes under msync's directory on the remote (its trash included),
    /// measured when a quota needs it.
    pub stored: Option<u64>,
    /// Bytes in msync's trash there.
    pub trash: Option<u64>,
}

/// A cloud's capacity as the engine tracks it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capacity {
    /// `install --quota`: the most msync may store there.
    pub quota: Option<u64>,
    /// `start --min-free`: room always left free (default: 2 % of the
    /// cloud's size, at most 1 GiB).
    pub min_free: Option<u64>,
    pub measure: Option<Measure>,
    /// Bytes sent since the measure.
    pub sent_since: u64,
    /// Bytes queued or in flight.
    pub pending: u64,
    /// The backend was asked at least once (it may not have told).
    pub asked: bool,
}

fn min_known(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl Capacity {
    /// The most this cloud can hold for msync: the account's size or the
    /// quota, whichever is smaller.
    pub fn size(&self) -> Option<u64> {
        let account = self
            .measure
            .as_ref()
            .and_then(|m| m.total.or_else(|| Some(m.used?.saturating_add(m.free?))));
        min_known(account, self.quota)
    }

    /// Free now, before the reserve and what waits to be sent; `None` when
    /// not known (never measured, or a quota whose use was not measured).
    pub fn free(&self) -> Option<u64> {
        let measure = self.measure.as_ref()?;
        let by_account = measure.free.map(|f| f.saturating_sub(self.sent_since));
        let by_quota = match self.quota {
            Some(quota) => {
                Some(quota.saturating_sub(measure.stored?.saturating_add(self.sent_since)))
            }
            None => None,
        };
        min_known(by_account, by_quota)
    }

    /// Whether so much was sent since the measure that the backend should
    /// be asked again (what others stored meanwhile shows only then).
    pub fn sent_enough_to_measure(&self) -> bool {
        let size = self.size().unwrap_or(0);
        self.measure.is_some() && self.sent_since >= (size / REMEASURE_SHARE).max(REMEASURE_MIN)
    }

    /// Room kept free.
    pub fn reserve(&self) -> u64 {
        self.min_free.unwrap_or_else(|| {
            self.size()
                .map_or(0, |size| (size / RESERVE_SHARE).min(RESERVE_MAX))
        })
    }

    /// What may still be sent beyond the queue: free less the reserve.
    pub fn headroom(&self) -> Option<u64> {
        Some(self.free()?.saturating_sub(self.reserve()))
    }

    /// Room for new files: the headroom less what is queued.
    pub fn room(&self) -> Option<u64> {
        Some(self.headroom()?.saturating_sub(self.pending))
    }

    /// How full the cloud is, counting what is queued: 0.0 to 1.0.
    pub fn fill(&self) -> Option<f64> {
        let size = self.size()?;
        if size == 0 {
            return Some(1.0);
        }
        let free = self.free()?.saturating_sub(self.pending);
        Some((1.0 - free as f64 / size as f64).clamp(0.0, 1.0))
    }

    /// The capacity as `status` shows it.
    pub fn view(&self) -> CloudSpace {
        let measure = self.measure.as_ref();
        CloudSpace {
            used: measure.and_then(|m| m.used),
            free: self.free(),
            total: self.size(),
            quota: self.quota,
            stored: measure.and_then(|m| m.stored),
            reserve: self.reserve(),
            pending: self.pending,
            room: self.room(),
            fill_percent: self.fill().map(|f| (f * 1000.0).round() / 10.0),
            measured: measure.map(|m| humantime::format_rfc3339_seconds(m.at).to_string()),
            trash: measure.and_then(|m| m.trash),
        }
    }
}

/// A cloud's space in `status` (text and `--json`). Bytes; `None` where the
/// backend does not tell and no quota stands in.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CloudSpace {
    /// The account's used bytes, as the backend tells.
    pub used: Option<u64>,
    /// Free bytes now: the last measure less what was sent since.
    pub free: Option<u64>,
    /// The account's size or the quota, whichever is smaller.
    pub total: Option<u64>,
    #[serde(default)]
    pub quota: Option<u64>,
    /// Bytes in msync's remote directory, when a quota needs them.
    #[serde(default)]
    pub stored: Option<u64>,
    /// Room always left free.
    #[serde(default)]
    pub reserve: u64,
    /// Bytes queued or in flight.
    #[serde(default)]
    pub pending: u64,
    /// Room for new files: free less the reserve and the queue.
    #[serde(default)]
    pub room: Option<u64>,
    #[serde(default)]
    pub fill_percent: Option<f64>,
    /// When the backend was last asked (RFC 3339, UTC).
    #[serde(default)]
    pub measured: Option<String>,
    /// Bytes msync's trash holds on the cloud (counted hourly).
    #[serde(default)]
    pub trash: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn measured(used: Option<u64>, free: Option<u64>, total: Option<u64>) -> Capacity {
        Capacity {
            measure: Some(Measure {
                at: SystemTime::UNIX_EPOCH,
                used,
                free,
                total,
                stored: None,
                trash: None,
            }),
            ..Capacity::default()
        }
    }

    #[test]
    fn room_is_free_less_reserve_sent_and_queued() {
        let mut cloud = measured(Some(60 * MIB), Some(40 * MIB), Some(100 * MIB));
        assert_eq!(cloud.reserve(), 2 * MIB);
        assert_eq!(cloud.room(), Some(38 * MIB));
        cloud.sent_since = 8 * MIB;
        cloud.pending = 10 * MIB;
        assert_eq!(cloud.free(), Some(32 * MIB));
        assert_eq!(cloud.headroom(), Some(30 * MIB));
        assert_eq!(cloud.room(), Some(20 * MIB));
        assert_eq!(cloud.fill(), Some(0.78));
        // More queued than fits: no room, and full.
        cloud.pending = 90 * MIB;
        assert_eq!(cloud.room(), Some(0));
        assert_eq!(cloud.fill(), Some(1.0));
    }

    #[test]
    fn the_reserve_is_two_percent_at_most_a_gib_unless_set() {
        let big = measured(None, Some(1 << 40), Some(2 << 40));
        assert_eq!(big.reserve(), 1 << 30);
        let set = Capacity {
            min_free: Some(5 * MIB),
            ..big.clone()
        };
        assert_eq!(set.reserve(), 5 * MIB);
        // A size from used + free when the total is not told.
        let no_total = measured(Some(50 * MIB), Some(50 * MIB), None);
        assert_eq!(no_total.size(), Some(100 * MIB));
    }

    #[test]
    fn nothing_known_is_no_room_known() {
        assert_eq!(Capacity::default().room(), None);
        assert_eq!(Capacity::default().fill(), None);
        // about answered, but without free space.
        assert_eq!(measured(Some(5), None, None).room(), None);
        // A quota whose use was not measured yet tells nothing either.
        let mut quota = measured(None, None, None);
        quota.quota = Some(100 * MIB);
        assert_eq!(quota.room(), None);
        assert_eq!(quota.size(), Some(100 * MIB));
    }

    #[test]
    fn a_quota_caps_a_bigger_account_and_counts_msyncs_own_bytes() {
        let mut cloud = measured(Some(MIB), Some(1 << 40), Some(1 << 40));
        cloud.quota = Some(100 * MIB);
        cloud.measure.as_mut().unwrap().stored = Some(30 * MIB);
        cloud.sent_since = 10 * MIB;
        assert_eq!(cloud.size(), Some(100 * MIB));
        assert_eq!(cloud.free(), Some(60 * MIB));
        assert_eq!(cloud.room(), Some(58 * MIB));
        // A backend without about: the quota alone.
        let mut s3 = Capacity {
            quota: Some(100 * MIB),
            ..Capacity::default()
        };
        s3.measure = Some(Measure {
            at: SystemTime::UNIX_EPOCH,
            used: None,
            free: None,
            total: None,
            stored: Some(99 * MIB),
            trash: None,
        });
        assert_eq!(s3.free(), Some(MIB));
        assert_eq!(s3.room(), Some(0));
    }
}
