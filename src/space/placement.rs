//! Where new files go, decided from every cloud's capacity, as plain data.
//!
//! The union filesystem still picks at random among the branches that take
//! new files; placement decides which those are. A branch takes new files
//! while its cloud has room, and only while it is no fuller (in percent)
//! than the emptiest such cloud plus a small band, so a 15 GB account and a
//! 1 TB account fill at the same rate. A cloud of unknown capacity takes
//! new files only when no cloud of known capacity has room: unknown is not
//! plenty. When no cloud has room, every branch takes new files again (the
//! mount must keep working; the files wait locally and `status` says why).

use serde::{Deserialize, Serialize};

/// A branch takes new files while its cloud has this much room.
pub const NEW_FILE_ROOM: u64 = 1 << 20;
/// Branches fuller than the emptiest open one by more than this (a share
/// of their size) take no new files for now.
pub const FILL_BAND: f64 = 0.05;

/// What placement knows of one branch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// Room for new files on its cloud; `None` when not known.
    pub room: Option<u64>,
    /// How full its cloud is (0.0 to 1.0), counting what is queued.
    pub fill: Option<f64>,
    /// Emptied for good: never takes new files.
    pub retired: bool,
}

/// The pool as a whole, as placement sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolRoom {
    /// Some cloud of known capacity has room.
    Room,
    /// No cloud's capacity is known (no `about`, no quota): the union picks
    /// among all branches.
    Unknown,
    /// Every cloud of known capacity is full and none is unknown.
    Full,
}

/// Which branches take new files, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    /// One flag per branch, in branch order.
    pub takes_new: Vec<bool>,
    pub pool: PoolRoom,
}

/// Decides placement; see the module documentation.
pub fn decide(branches: &[Candidate]) -> Placement {
    let active = |c: &Candidate| !c.retired;
    let open = |c: &Candidate| active(c) && c.room.is_some_and(|r| r >= NEW_FILE_ROOM);
    let least_fill = branches
        .iter()
        .filter(|c| open(c))
        .filter_map(|c| c.fill)
        .fold(None, |least: Option<f64>, f| {
            Some(least.map_or(f, |l| l.min(f)))
        });
    if branches.iter().any(open) {
        let takes_new = branches
            .iter()
            .map(|c| {
                open(c)
                    && match (c.fill, least_fill) {
                        (Some(fill), Some(least)) => fill <= least + FILL_BAND,
                        _ => true,
                    }
            })
            .collect();
        return Placement {
            takes_new,
            pool: PoolRoom::Room,
        };
    }
    let unknown = |c: &Candidate| active(c) && c.room.is_none();
    if branches.iter().any(unknown) {
        return Placement {
            takes_new: branches.iter().map(unknown).collect(),
            pool: PoolRoom::Unknown,
        };
    }
    // Full everywhere (or nothing active): writes must still succeed.
    let any_active = branches.iter().any(active);
    Placement {
        takes_new: branches.iter().map(|c| active(c) || !any_active).collect(),
        pool: PoolRoom::Full,
    }
}

/// Where a file of `size` bytes that does not fit on branch `from` goes:
/// the least full other cloud with room for it, if any.
pub fn target(branches: &[Candidate], size: u64, from: usize) -> Option<usize> {
    branches
        .iter()
        .enumerate()
        .filter(|(i, c)| *i != from && !c.retired && c.room.is_some_and(|r| r >= size))
        .min_by(|(_, a), (_, b)| {
            let (a, b) = (a.fill.unwrap_or(1.0), b.fill.unwrap_or(1.0));
            a.total_cmp(&b)
        })
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn cloud(room: Option<u64>, fill: Option<f64>) -> Candidate {
        Candidate {
            room,
            fill,
            retired: false,
        }
    }

    #[test]
    fn the_emptiest_clouds_take_new_files() {
        let placement = decide(&[
            cloud(Some(10 * MIB), Some(0.50)),
            cloud(Some(30 * MIB), Some(0.48)),
            cloud(Some(300 * MIB), Some(0.20)),
        ]);
        assert_eq!(placement.takes_new, [false, false, true]);
        assert_eq!(placement.pool, PoolRoom::Room);
        // Within the band, both.
        let placement = decide(&[
            cloud(Some(10 * MIB), Some(0.22)),
            cloud(Some(300 * MIB), Some(0.20)),
        ]);
        assert_eq!(placement.takes_new, [true, true]);
    }

    #[test]
    fn a_full_cloud_takes_nothing_new() {
        let placement = decide(&[
            cloud(Some(0), Some(0.10)),
            cloud(Some(MIB / 2), Some(0.99)),
            cloud(Some(50 * MIB), Some(0.60)),
        ]);
        assert_eq!(placement.takes_new, [false, false, true]);
    }

    #[test]
    fn unknown_capacity_is_not_plenty() {
        let placement = decide(&[cloud(None, None), cloud(Some(50 * MIB), Some(0.5))]);
        assert_eq!(placement.takes_new, [false, true]);
        // Known clouds full: the unknown one is all there is.
        let placement = decide(&[cloud(None, None), cloud(Some(0), Some(1.0))]);
        assert_eq!(placement.takes_new, [true, false]);
        assert_eq!(placement.pool, PoolRoom::Unknown);
    }

    #[test]
    fn a_pool_full_everywhere_keeps_the_mount_writable() {
        let placement = decide(&[cloud(Some(0), Some(1.0)), cloud(Some(0), Some(1.0))]);
        assert_eq!(placement.takes_new, [true, true]);
        assert_eq!(placement.pool, PoolRoom::Full);
    }

    #[test]
    fn a_retired_branch_never_takes_new_files() {
        let mut retired = cloud(Some(900 * MIB), Some(0.0));
        retired.retired = true;
        let placement = decide(&[retired, cloud(Some(0), Some(1.0))]);
        assert_eq!(placement.takes_new, [false, true]);
        assert_eq!(target(&[retired, cloud(Some(0), Some(1.0))], 1, 1), None);
    }

    #[test]
    fn a_file_moves_to_the_least_full_cloud_it_fits() {
        let clouds = [
            cloud(Some(0), Some(1.0)),
            cloud(Some(8 * MIB), Some(0.3)),
            cloud(Some(100 * MIB), Some(0.5)),
            cloud(None, None),
        ];
        assert_eq!(target(&clouds, 5 * MIB, 0), Some(1));
        assert_eq!(target(&clouds, 50 * MIB, 0), Some(2));
        assert_eq!(target(&clouds, 500 * MIB, 0), None);
        assert_eq!(target(&clouds, 5 * MIB, 1), Some(2));
    }
}
