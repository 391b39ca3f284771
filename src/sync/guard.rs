//! The checks that stand between a reconcile and a wiped remote.
//!
//! A one-way `sync/sync` makes the remote look like the branch. If the
//! branch is not what it seems (its disk not mounted, the directory
//! replaced, emptied by mistake) the remote would follow it into the void.
//! So before a reconcile the worker checks that the branch carries its
//! marker, plans the deletions with a dry run, and refuses a plan that
//! deletes too much, or one against a remote that suddenly lists as empty.

use std::path::Path;

use serde_json::json;

use super::{local_fs, sync_filter, walk_branch};
use crate::install::DirIdentity;
use crate::rclone::{Call, Rclone, RcloneError};

/// What a reconcile would do to the remote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Files in the branch: what the remote holds after the reconcile.
    pub local_files: usize,
    /// Files on the remote (msync's own `.msync/` aside).
    pub remote_files: usize,
    /// Remote files the branch does not have: the sync would delete them.
    pub deletions: usize,
}

/// When a plan is refused.
#[derive(Debug, Clone, Copy)]
pub struct MassDeleteLimit {
    /// Refuse when more than this share of the remote's files would go…
    pub percent: u32,
    /// …and at least this many.
    pub min_files: usize,
}

impl Default for MassDeleteLimit {
    fn default() -> MassDeleteLimit {
        MassDeleteLimit {
            percent: 50,
            min_files: 100,
        }
    }
}

/// Whether the branch carries its marker with the expected text.
pub fn marker_present(marker: &Path, expected: &str) -> bool {
    std::fs::read_to_string(marker).is_ok_and(|text| text == expected)
}

/// What became of a branch's marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    Present,
    /// It was missing, but the directory is provably the install's own
    /// (the device and inode recorded when msync made it): put back.
    Restored,
    /// Missing or foreign, and nothing vouches for the directory.
    Missing,
}

/// Checks the marker of the branch at `dir`, putting it back when it was
/// deleted (through the pool, `rm pool/.msync-branch` deletes it from
/// every branch) from a directory whose identity is the one recorded. A
/// replaced directory or an unmounted disk has another identity and stays
/// held.
pub fn check_marker(
    dir: &Path,
    marker: &Path,
    expected: &str,
    identity: Option<DirIdentity>,
) -> Marker {
    if marker_present(marker, expected) {
        return Marker::Present;
    }
    let ours = identity.is_some() && DirIdentity::of(dir) == identity;
    let absent = std::fs::symlink_metadata(marker).is_err();
    if ours && absent && std::fs::write(marker, expected).is_ok() {
        return Marker::Restored;
    }
    Marker::Missing
}

/// Plans a reconcile, waiting as long as it takes (for `start`, before the
/// service runs; the worker plans through its own cancellable job).
///
/// Neither side's listing is held in memory: rclone counts the remote's
/// files, and runs the sync as a dry run whose `deletes` are what the real
/// one would delete.
pub fn plan(rclone: Rclone, local: &Path, remote: &str, group: &str) -> Result<Plan, RcloneError> {
    let remote_files = count_remote_files(rclone, remote)?;
    let local_files = count_local_files(local);
    if remote_files == 0 {
        return Ok(Plan {
            local_files,
            remote_files,
            deletions: 0,
        });
    }
    let job = dry_run(local, remote).start(rclone, group)?;
    let status = job
        .wait(None)?
        .expect("waiting without a time-out always ends with a status");
    let deletions = job.progress().map(|p| p.deletes as usize);
    let _ = job.forget_stats();
    if !status.success {
        return Err(RcloneError::new("sync/sync", 500, status.error));
    }
    Ok(Plan {
        local_files,
        remote_files,
        deletions: deletions?,
    })
}

/// The reconcile's sync as a dry run: nothing changes, its stats count.
pub fn dry_run(local: &Path, remote: &str) -> Call {
    Call::sync(&local_fs(local), remote)
        .filter(sync_filter())
        .config(json!({ "DryRun": true }))
}

/// Files on the remote, msync's own `.msync/` aside (`operations/size`);
/// a remote directory that does not exist holds none.
pub fn count_remote_files(rclone: Rclone, remote: &str) -> Result<usize, RcloneError> {
    match Call::new("operations/size", json!({ "fs": remote }))
        .filter(sync_filter())
        .run(rclone)
    {
        Ok(size) => Ok(size["count"].as_u64().unwrap_or(0) as usize),
        Err(err) if err.is_not_found() => Ok(0),
        Err(err) => Err(err),
    }
}

/// Why a plan must not run, if it must not.
pub fn refusal(
    plan: &Plan,
    limit: MassDeleteLimit,
    remote_files_before: Option<usize>,
) -> Option<String> {
    if plan.remote_files == 0 && remote_files_before.is_some_and(|n| n > 0) {
        return Some(format!(
            "the remote lists as empty, but held {} files at the last reconcile; check the remote (its path, its credentials) before msync writes to it again",
            remote_files_before.unwrap_or(0)
        ));
    }
    let too_many = plan.deletions >= limit.min_files
        && (plan.deletions as u128) * 100 > (plan.remote_files as u128) * u128::from(limit.percent);
    too_many.then(|| {
        format!(
            "a reconcile would delete {} of the remote's {} files; not run. If the branch really lost them, restart with `--mass-delete-percent 100`",
            plan.deletions, plan.remote_files
        )
    })
}

/// Regular files under `root`, without following links or counting
/// local-only names (they are never sent).
pub fn count_local_files(root: &Path) -> usize {
    let mut count = 0;
    walk_branch(root, |_, kind, _| {
        // A symlink is stored as a file (see [`local_fs`]).
        if kind.is_file() || kind.is_symlink() {
            count += 1;
        }
    });
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(remote_files: usize, deletions: usize) -> Plan {
        Plan {
            local_files: remote_files - deletions,
            remote_files,
            deletions,
        }
    }

    #[test]
    fn mass_deletes_are_refused() {
        let limit = MassDeleteLimit::default();
        assert!(refusal(&plan(1000, 501), limit, None).is_some());
        assert!(refusal(&plan(1000, 500), limit, None).is_none());
        // Fewer than the minimum is never a mass delete.
        assert!(refusal(&plan(150, 99), limit, None).is_none());
        assert!(refusal(&plan(150, 100), limit, None).is_some());
        let off = MassDeleteLimit {
            percent: 100,
            min_files: 100,
        };
        assert!(refusal(&plan(1000, 1000), off, None).is_none());
    }

    #[test]
    fn a_remote_that_lists_empty_after_holding_data_is_refused() {
        let limit = MassDeleteLimit::default();
        assert!(refusal(&plan(0, 0), limit, Some(12)).is_some());
        assert!(refusal(&plan(0, 0), limit, Some(0)).is_none());
        assert!(refusal(&plan(0, 0), limit, None).is_none());
    }

    #[test]
    fn local_files_count_links_as_files_never_follow_them_and_skip_local_names() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("a/b/f"), "x").unwrap();
        std::fs::write(dir.path().join("top"), "x").unwrap();
        std::fs::write(dir.path().join(".msync-branch"), "x").unwrap();
        // Stored as one link file, whatever lies below /etc.
        std::os::unix::fs::symlink("/etc", dir.path().join("link")).unwrap();
        assert_eq!(count_local_files(dir.path()), 3);
    }
}
