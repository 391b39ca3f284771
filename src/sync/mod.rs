//! The sync engine: turns changes seen in the branches into the rclone
//! calls each change needs, per path, a few at a time per branch.
//!
//! Each branch keeps a table of the paths whose remote state must change
//! (`table.rs`); its worker threads (`branch.rs`) take what is ready and
//! classify every failure once (`failure.rs`), so one bad path never holds
//! up the others. A written file becomes `operations/copyfile`, a deleted
//! one a move into the trash, a rename a server-side `operations/movefile`
//! (`sync/move` for a directory), a burst of new files one `sync/copy` job
//! over a file list. A full reconcile (`sync/sync` branch → remote) runs at
//! start, after the watcher lost events, and periodically. The engine never
//! blocks the filesystem: the union mount and the watcher go on while the
//! clouds are slow or away.
//!
//! What each change leaves (mode, owner, times, links) is recorded in the
//! remote's metadata index (`branch/metadata.rs`, format in
//! [`crate::meta`]); uploads to a backend that writes in place go under a
//! temporary name first (`branch/partial.rs`, `backend.rs`), so no torn
//! file is ever under a real name.

pub mod backend;
mod branch;
pub mod case;
mod failure;
pub mod guard;
pub mod lease;
mod status;
mod table;
pub mod trash;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub use branch::BranchSpec;
use branch::BranchWorker;
pub use failure::Failure;
pub use failure::Trouble;
pub use guard::MassDeleteLimit;
pub use status::{BranchState, BranchStatus, InFlight};
pub use table::{FailingPath, Op, PathClass, PathTable};

use crate::rclone::Rclone;
use crate::space::Capacity;
use crate::watch::Change;

/// Names that exist only locally and are never uploaded: union filesystem
/// metadata (aufs `.wh.*` whiteouts and its `.wh..wh.*` directories, FUSE's
/// `.fuse_hidden*` files for deleted open files) and msync's own branch
/// marker.
pub const LOCAL_ONLY: &[&str] = &[".wh.", ".fuse_hidden", ".msync-branch"];

/// msync's reserved directory at the top of every remote directory (leases,
/// trash). A `.msync` at the top of a branch stays local: sent, it would
/// land in that reserved area.
pub const RESERVED_DIR: &str = ".msync";

/// Whether a path inside a branch is local-only (see [`LOCAL_ONLY`] and
/// [`RESERVED_DIR`]).
pub fn is_local_only(relative: &Path) -> bool {
    if relative
        .components()
        .next()
        .is_some_and(|first| first.as_os_str() == RESERVED_DIR)
    {
        return true;
    }
    relative.components().any(|part| {
        let name = part.as_os_str().as_encoded_bytes();
        LOCAL_ONLY
            .iter()
            .any(|prefix| name.starts_with(prefix.as_bytes()))
    })
}

/// The suffix of the file rclone stores a symlink as (its `--links`): the
/// file holds the link's target, byte for byte.
pub const LINK_SUFFIX: &str = ".rclonelink";

/// A local directory as msync hands it to rclone: with the local backend's
/// `links` option, so a symlink in it is read as `NAME.rclonelink` holding
/// its target (never followed: no byte of what it points to is read) and a
/// `NAME.rclonelink` written into it becomes the symlink again. Plain
/// `rclone copy -l` restores such a remote the same way.
pub fn local_fs(dir: &Path) -> String {
    format!(":local,links:{}", dir.to_string_lossy())
}

/// rclone's own metadata (mode, owner, times) goes along with a transfer
/// where both backends keep it (local, S3 …); elsewhere the flag changes
/// nothing. msync's index keeps it everywhere.
pub fn with_metadata(mut config: Value) -> Value {
    config["Metadata"] = json!(true);
    config
}

/// The name a symlink at `name` has on the remote.
pub fn link_name(name: &str) -> String {
    format!("{name}{LINK_SUFFIX}")
}

/// Walks a branch directory without following links: `visit` gets every
/// entry that is not a directory, by relative path, with its type (local-
/// only names and the branch marker aside). The type comes from the
/// directory listing, so a walk that needs no sizes costs no `stat`.
pub fn walk_branch(
    root: &Path,
    mut visit: impl FnMut(PathBuf, std::fs::FileType, &std::fs::DirEntry),
) {
    walk_tree(root, |relative, kind, entry| {
        if !kind.is_dir() {
            visit(relative, kind, entry);
        }
    });
}

/// [`walk_branch`], directories included (each before what it holds).
pub fn walk_tree(
    root: &Path,
    mut visit: impl FnMut(PathBuf, std::fs::FileType, &std::fs::DirEntry),
) {
    let mut dirs = vec![PathBuf::new()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(root.join(&dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            let relative = dir.join(entry.file_name());
            if is_local_only(&relative) {
                continue;
            }
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                dirs.push(relative.clone());
            }
            visit(relative, kind, &entry);
        }
    }
}

/// The regular files of a branch directory, relative, with their sizes,
/// sorted.
pub fn branch_files(root: &Path) -> Vec<(PathBuf, u64)> {
    let mut files = Vec::new();
    walk_branch(root, |relative, kind, entry| {
        if kind.is_file()
            && let Ok(meta) = entry.metadata()
        {
            files.push((relative, meta.len()));
        }
    });
    files.sort();
    files
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

/// An rclone filter rule matching exactly the branch path `path` (from
/// the root of the transfer): glob characters are escaped.
pub fn exact_rule(path: &str) -> String {
    let mut rule = String::with_capacity(path.len() + 1);
    rule.push('/');
    for c in path.chars() {
        if matches!(c, '\\' | '*' | '?' | '[' | ']' | '{' | '}') {
            rule.push('\\');
        }
        rule.push(c);
    }
    rule
}

/// Why an upload must move to another branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Homeless {
    /// It does not fit on its cloud.
    NoRoom,
    /// Its cloud is case-insensitive and keeps another name that differs
    /// from it only in case (see [`case`]).
    NameClash,
}

/// The engine's tunables.
#[derive(Debug, Clone, Copy)]
pub struct EngineConfig {
    /// Time between full reconciles.
    pub reconcile_every: Duration,
    /// This many uploads ready at once go as one `sync/copy` job.
    pub burst: usize,
    /// Units of work a branch runs at once (like rclone's `--transfers`).
    pub transfers: usize,
    /// The longest wait between retries.
    pub max_backoff: Duration,
    /// When a reconcile is refused for deleting too much.
    pub mass_delete: MassDeleteLimit,
    /// Days a trashed file is kept on the remote.
    pub trash_days: u32,
    /// Room always left free on each cloud (default: 2 % of its size, at
    /// most 1 GiB).
    pub min_free: Option<u64>,
}

impl Default for EngineConfig {
    fn default() -> EngineConfig {
        EngineConfig {
            reconcile_every: Duration::from_secs(6 * 3600),
            burst: 8,
            transfers: 4,
            max_backoff: Duration::from_secs(60),
            mass_delete: MassDeleteLimit::default(),
            trash_days: 30,
            min_free: None,
        }
    }
}

/// How long a stop waits, past its deadline, for a thread still inside a
/// call that cannot be cancelled, before leaving it behind.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// The running engine: one worker per branch, each with its threads.
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
            let worker = Arc::new(BranchWorker::new(spec, config, rclone));
            for n in 0..config.transfers.max(1) {
                let running = Arc::clone(&worker);
                threads.push(
                    std::thread::Builder::new()
                        .name(format!("msync-sync-{}-{n}", worker.spec().name))
                        .spawn(move || running.run())?,
                );
            }
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

    /// Every branch's cloud capacity, and what is wrong with its remote if
    /// anything, in branch order.
    pub fn capacities(&self) -> Vec<(Capacity, Option<Trouble>)> {
        self.workers
            .iter()
            .map(|w| (w.capacity(), w.trouble()))
            .collect()
    }

    /// The uploads of a branch that cannot go to its cloud (no room, or a
    /// name the cloud takes for another) since the last call, to be moved
    /// to another branch.
    pub fn take_homeless(&self, branch: usize) -> Vec<(PathBuf, Homeless)> {
        self.worker(branch)
            .map(|w| w.take_homeless())
            .unwrap_or_default()
    }

    /// Whether a branch's remote takes names that differ only in case for
    /// one; `None` until it was asked.
    pub fn case_insensitive(&self, branch: usize) -> Option<bool> {
        self.worker(branch).and_then(|w| w.case_insensitive())
    }

    /// A file moved from branch `from` to branch `to`: `from` keeps its
    /// remote copy, deleting or trashing nothing of it, and `to` reports
    /// when it has sent the file (see [`Engine::take_sent_moved`]); then
    /// [`Engine::discard`] removes the old copy.
    pub fn moved(&self, from: usize, to: usize, path: &Path) {
        if let Some(worker) = self.worker(from) {
            worker.keep_moved_away(path);
        }
        if let Some(worker) = self.worker(to) {
            worker.watch_moved_in(path);
        }
    }

    /// Undoes [`Engine::moved`] for a move that did not happen.
    pub fn moved_back(&self, from: usize, to: usize, path: &Path) {
        if let Some(worker) = self.worker(from) {
            worker.forget_moved(path);
        }
        if let Some(worker) = self.worker(to) {
            worker.forget_moved(path);
        }
    }

    /// The files moved into `branch` that it has sent since the last call.
    pub fn take_sent_moved(&self, branch: usize) -> Vec<PathBuf> {
        self.worker(branch)
            .map(|w| w.take_sent_moved())
            .unwrap_or_default()
    }

    /// A file moved out of a branch is on its new cloud: its object on the
    /// old branch's remote is deleted for good, not trashed (its data
    /// lives on, and the trash must not eat the room the move freed).
    pub fn discard(&self, branch: usize, path: PathBuf) {
        if let Some(worker) = self.worker(branch) {
            worker.enqueue([Op::Discard(path)]);
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
    /// and ends the workers. A thread still inside a plain call that cannot
    /// be cancelled (a remote that does not answer) is left behind after a
    /// grace: the process ends with it.
    pub fn stop_by(&self, deadline: Instant) {
        for worker in &self.workers {
            worker.stop_by(deadline);
        }
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        let give_up = deadline.max(Instant::now()) + STOP_GRACE;
        let mut left_behind = false;
        for thread in threads {
            while !thread.is_finished() && Instant::now() < give_up {
                std::thread::sleep(Duration::from_millis(20));
            }
            if thread.is_finished() {
                let _ = thread.join();
            } else {
                left_behind = true;
                log::warn!(
                    "{} is still inside an rclone call {}s after the stop deadline; leaving it",
                    thread.thread().name().unwrap_or("a sync thread"),
                    STOP_GRACE.as_secs()
                );
            }
        }
        // The metadata of the last changes goes out, unless a remote
        // stopped answering (the next start's reconcile sends it then).
        if !left_behind {
            for worker in &self.workers {
                worker.write_journal_at_stop();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn exact_rules_escape_glob_characters() {
        assert_eq!(super::exact_rule("a/b.txt"), "/a/b.txt");
        assert_eq!(
            super::exact_rule("x[1]*?{a,b}\\y"),
            "/x\\[1\\]\\*\\?\\{a,b\\}\\\\y"
        );
    }

    use super::*;

    #[test]
    fn union_metadata_and_the_marker_are_local_only() {
        for path in [
            ".wh..wh.aufs",
            ".wh..wh.orph/x",
            "d/.wh.gone",
            "d/.fuse_hidden0001",
            ".msync-branch",
            ".msync",
            ".msync/trash/2026-11-24/x",
        ] {
            assert!(is_local_only(Path::new(path)), "{path}");
        }
        for path in [
            "a.txt",
            "d/wh.txt",
            "d/x.wh.y",
            "fuse_hidden",
            "d/.msync/x",
            ".msyncx",
        ] {
            assert!(!is_local_only(Path::new(path)), "{path}");
        }
    }
}
