//! The metadata index: what a restore needs beyond the bytes rclone
//! stores. Most backends keep no mode, owner or exact modification time,
//! none keeps empty directories everywhere and none keeps hard links, so
//! msync writes its own record of them under each remote directory's
//! `.msync/meta/`, in JSON lines anyone can read (the README documents the
//! format).
//!
//! - [`entry`]: one path's metadata, captured with `lstat` (never following
//!   a link), and the records of a journal;
//! - [`log`]: the files of the index (snapshots and journals, each with a
//!   header and a trailer, so a torn file is seen and never half applied),
//!   and reading them back into one [`Index`];
//! - [`remote`]: listing, fetching and writing those files on a remote;
//! - [`restore`]: applying an index to a restored tree (owners, modes,
//!   times, empty directories, hard links, holes of sparse files) and
//!   verifying restored files against it.
//!
//! This module never decides when the index is written: the sync engine
//! does (a journal per batch of changes, a snapshot at a reconcile).

pub mod entry;
pub mod log;
pub mod remote;
pub mod restore;

pub use entry::{Entry, Kind, Names, Record};
pub use log::{Index, IndexFile, MetaError};

/// The format of the files under `.msync/meta/`; a newer one is refused
/// with a message, an older one is read as it is.
pub const FORMAT: u32 = 1;

/// Where the index lives, relative to a remote directory.
pub const META_DIR: &str = ".msync/meta";
