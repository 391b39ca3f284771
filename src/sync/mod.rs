//! The sync engine: turns changes seen in the branches into the rclone
//! calls each change needs, one worker thread per branch.
//!
//! A written file becomes `operations/copyfile`, a deleted one
//! `operations/deletefile`, a rename a server-side `operations/movefile`
//! (`sync/move` for a directory), a burst of new files one `sync/copy` job
//! over a file list. A full reconcile (`sync/sync` branch → remote) runs at
//! start, after the watcher lost events, and periodically. The engine never
//! blocks the filesystem: the union mount and the watcher go on while the
//! clouds are slow or away.

mod branch;
pub mod guard;
pub mod lease;
mod queue;
mod status;
pub mod trash;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub use branch::BranchSpec;
use branch::BranchWorker;
pub use guard::MassDeleteLimit;
pub use queue::{Op, OpQueue};
pub use status::{BranchState, BranchStatus, InFlight, Space};

use crate::rclone::Rclone;
use crate::watch::Change;

/// Names that exist only locally and are never uploaded: union filesystem
/// metadata (aufs `.wh.*` whiteouts and its `.wh..wh.*` directories, FUSE's
/// `.fuse_hidden*` files for deleted open files) and msync's own branch
/// marker.
pub const LOCAL_ONLY: &[&str] = &[".wh.", ".fuse_hidden", ".msync-branch"];

/// Whether a path inside a branch is local-only (see [`LOCAL_ONLY`]).
pub fn is_local_only(relative: &Path) -> bool {
    relative.components().any(|part| {
        let name = part.as_os_str().as_encoded_bytes();
        LOCAL_ONLY
            .iter()
            .any(|prefix| name.starts_with(prefix.as_bytes()))
    })
}

/// The rclone filter every sync uses: local-only names are never sent, and
/// `.msync/` at the top of each remote directory is msync's own (leases,
/// trash) and is never mirrored over or deleted.
pub fn sync_filter() -> Value {
    json!({
        "ExcludeRule": [
            ".wh.*", ".wh.*/**",
            ".fuse_hidden*",
            "/.msync-branch",
            "/.msync/**",
        ]
    })
}

/// The engine's tunables.
#[derive(Debug, Clone, Copy)]
pub struct EngineConfig {
    /// Time between full reconciles.
    pub reconcile_every: Duration,
    /// This many uploads waiting at once go as one `sync/copy` job.
    pub burst: usize,
    /// The longest wait between retries.
    pub max_backoff: Duration,
    /// When a reconcile is refused for deleting too much.
    pub mass_delete: MassDeleteLimit,
    /// Days a trashed file is kept on the remote.
    pub trash_days: u32,
}

impl Default for EngineConfig {
    fn default() -> EngineConfig {
        EngineConfig {
            reconcile_every: Duration::from_secs(6 * 3600),
            burst: 8,
            max_backoff: Duration::from_secs(60),
            mass_delete: MassDeleteLimit::default(),
            trash_days: 30,
        }
    }
}

/// The running engine: one worker per branch.
pub struct Engine {
    workers: Vec<Arc<BranchWorker>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Engine {
    /// Starts a worker per branch; each begins with a full reconcile.
    pub fn start(
        rclone: Rclone,
        specs: Vec<BranchSpec>,
        config: EngineConfig,
    ) -> std::io::Result<Engine> {
        let mut workers = Vec::new();
        let mut threads = Vec::new();
        for spec in specs {
            let name = format!("msync-sync-{}", spec.name);
            let worker = Arc::new(BranchWorker::new(spec, config, rclone));
            let running = Arc::clone(&worker);
            threads.push(
                std::thread::Builder::new()
                    .name(name)
                    .spawn(move || running.run())?,
            );
            workers.push(worker);
        }
        Ok(Engine {
            workers,
            threads: Mutex::new(threads),
        })
    }

    fn worker(&self, branch: usize) -> Option<&Arc<BranchWorker>> {
        self.workers.iter().find(|w| w.spec().index == branch)
    }

    /// Queues the operations a batch of watched changes asks for.
    pub fn apply(&self, changes: &[Change]) {
        for change in changes {
            if let Some(worker) = self.worker(change.branch) {
                worker.enqueue([Op::for_change(change)]);
            }
        }
    }

    /// Asks every branch for a full reconcile (after lost events).
    pub fn reconcile_all(&self) {
        for worker in &self.workers {
            worker.request_reconcile();
        }
    }

    /// Stops syncing a branch (`Some(reason)`) or lets it go on (`None`).
    pub fn hold(&self, branch: usize, reason: Option<String>) {
        if let Some(worker) = self.worker(branch) {
            worker.set_hold(reason);
        }
    }

    /// Shows a warning in a branch's status.
    pub fn warn(&self, branch: usize, warning: String) {
        if let Some(worker) = self.worker(branch) {
            worker.set_warning(Some(warning));
        }
    }

    pub fn status(&self) -> Vec<BranchStatus> {
        self.workers.iter().map(|w| w.status()).collect()
    }

    /// Sends what is queued until `deadline`, cancels what still runs then,
    /// and ends the workers.
    pub fn stop_by(&self, deadline: Instant) {
        for worker in &self.workers {
            worker.stop_by(deadline);
        }
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for thread in threads {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn union_metadata_and_the_marker_are_local_only() {
        for path in [
            ".wh..wh.aufs",
            ".wh..wh.orph/x",
            "d/.wh.gone",
            "d/.fuse_hidden0001",
            ".msync-branch",
        ] {
            assert!(is_local_only(Path::new(path)), "{path}");
        }
        for path in ["a.txt", "d/wh.txt", "d/x.wh.y", "fuse_hidden"] {
            assert!(!is_local_only(Path::new(path)), "{path}");
        }
    }
}
