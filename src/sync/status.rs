//! What the engine reports about each branch: the data behind
//! `msync status` and its stable `--json` form.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::table::FailingPath;
use crate::space::CloudSpace;

/// A branch's state, as `status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BranchState {
    /// Nothing to do: the remote matches the branch as far as msync knows.
    Idle,
    /// Transferring, moving, deleting or reconciling.
    Syncing,
    /// A path or the whole remote failed; msync tries again with backoff.
    Retrying,
    /// msync will not sync this branch until the cause is fixed.
    Error,
}

/// One file being transferred.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InFlight {
    pub name: String,
    pub bytes: i64,
    pub size: i64,
    /// Bytes per second.
    pub speed: f64,
    /// Seconds to go, when rclone can tell.
    pub eta: Option<f64>,
}

/// Everything `status` says about one branch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BranchStatus {
    pub name: String,
    pub remote: String,
    pub local: PathBuf,
    pub state: BranchState,
    /// Paths whose change is waiting to be sent or being sent.
    pub queued: usize,
    pub in_flight: Vec<InFlight>,
    /// Paths not in step with the remote: retrying, failed for good (until
    /// they change again) or skipped by design.
    #[serde(default)]
    pub failing: Vec<FailingPath>,
    /// Why the whole remote is paused (unreachable, full), while it is.
    #[serde(default)]
    pub paused: Option<String>,
    /// Why a guard holds the branch (a reconcile that would delete too
    /// much), while it does.
    #[serde(default)]
    pub refused: Option<String>,
    /// When the remote last matched a change (RFC 3339, UTC).
    pub last_sync: Option<String>,
    pub last_error: Option<String>,
    /// Something that needs attention without stopping the sync (e.g. the
    /// inotify watch limit).
    pub warning: Option<String>,
    /// The cloud's capacity, as far as known.
    #[serde(default)]
    pub space: CloudSpace,
    /// Files and bytes sent since the service started.
    pub files_sent: u64,
    pub bytes_sent: u64,
}
