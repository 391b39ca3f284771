//! Watching the branch directories with raw inotify and turning what the
//! kernel reports into an ordered list of changes the sync engine applies.
//!
//! This module owns one inotify instance and one named thread
//! (`msync-watch`, `inotify.rs`) for all branches: the thread holds the fd,
//! the map from watch descriptors to directories (`table.rs`), the pairing
//! of rename halves by cookie (`pairing.rs`), the event policy (`events.rs`),
//! the directory walks (`scan.rs`) and the debouncer (`debounce.rs`). The
//! table, the pairing and the debouncer are plain data that tests drive
//! without the kernel. The caller talks to the thread through [`Watcher`]
//! (control messages with reply channels) and hears from it through a
//! [`WatchMessage`] channel. It never reads file contents, never talks to rclone and never
//! decides what a change means for a remote: that is the engine's job.
//!
//! Ordering contract: the changes of one [`WatchMessage::Changes`], and the
//! messages one after another, are in the order the engine must apply them
//! (a rename before the writes re-keyed behind it, a `DirCreate` before the
//! writes inside it). A `Rename` may name a source the remote never saw
//! (a file created and renamed within one debounce window, such as an
//! editor's atomic save): the engine treats a missing source as nothing to
//! move and relies on the `Write` that follows.

mod debounce;
mod events;
mod inotify;
mod open_files;
mod pairing;
mod scan;
mod table;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use debounce::{Debouncer, QUICK, RawEvent, RawKind};
pub use inotify::Watcher;
pub use open_files::open_for_writing_below;

/// One branch directory to watch; `index` is echoed in every [`Change`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BranchRoot {
    pub index: usize,
    pub path: PathBuf,
}

/// Decides, from a path relative to its branch root, that it is never
/// reported (and, for a directory, never watched).
pub type IgnoreFn = Arc<dyn Fn(&Path) -> bool + Send + Sync>;

#[derive(Clone)]
pub struct WatchConfig {
    /// The longest a closed file waits before its `Write` is due (a file
    /// written again and again), and the wait of deletes and new
    /// directories.
    pub debounce: Duration,
    /// How soon a file closed after writing, and not written within the
    /// last `debounce`, is due; each close while it is still warm doubles
    /// its wait, up to `debounce`. Equal to `debounce`: a fixed wait.
    pub quick: Duration,
    /// Relative path → `true` means never report it (union metadata such as
    /// `.wh..wh.*`, msync's own marker); ignored directories get no watch.
    pub ignore: IgnoreFn,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            debounce: Duration::from_secs(1),
            quick: QUICK,
            ignore: Arc::new(|_| false),
        }
    }
}

impl fmt::Debug for WatchConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatchConfig")
            .field("debounce", &self.debounce)
            .field("quick", &self.quick)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeKind {
    Write,
    Delete,
    DirCreate,
    DirDelete,
    /// Only the path's metadata changed (mode, owner, times: `IN_ATTRIB`).
    Attrib,
    /// `path` now holds what was at `from` (same branch).
    Rename {
        from: PathBuf,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub branch: usize,
    /// Relative to the branch root; the raw bytes of the name are kept, so
    /// it may not be valid UTF-8.
    pub path: PathBuf,
    pub kind: ChangeKind,
    pub is_dir: bool,
}

#[derive(Debug)]
pub enum WatchMessage {
    /// Debounced changes, in the order they must be applied.
    Changes(Vec<Change>),
    /// The kernel dropped events (`IN_Q_OVERFLOW`): watches were
    /// re-established and pending changes dropped, so the caller must run a
    /// full reconcile.
    Overflow,
    /// `inotify_add_watch` failed with ENOSPC: `path` (absolute) and
    /// everything below it is not watched. Sent once per branch.
    WatchLimit { branch: usize, path: PathBuf },
    /// Something the watcher could not handle, such as a branch root that
    /// vanished; the text says what to do.
    Error(String),
}

impl fmt::Display for WatchMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WatchMessage::Changes(changes) => write!(f, "{} change(s)", changes.len()),
            WatchMessage::Overflow => f.write_str(
                "the inotify event queue overflowed: a full reconcile is needed \
                 (raise fs.inotify.max_queued_events if this happens often)",
            ),
            WatchMessage::WatchLimit { branch, path } => write!(
                f,
                "branch {branch}: {}",
                WatchError::WatchLimit { path: path.clone() }
            ),
            WatchMessage::Error(text) => f.write_str(text),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error(
        "cannot create an inotify instance: {0}; raise fs.inotify.max_user_instances if too many are in use"
    )]
    Init(#[source] std::io::Error),
    #[error("cannot watch branch root {}: {source}; check that it exists and is a directory", path.display())]
    Root {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "inotify watch limit reached at {}: it and everything below it is not watched; raise fs.inotify.max_user_watches (for example `sysctl fs.inotify.max_user_watches=524288`)",
        path.display()
    )]
    WatchLimit { path: PathBuf },
    #[error("cannot start the watcher thread: {0}")]
    Thread(#[source] std::io::Error),
}
