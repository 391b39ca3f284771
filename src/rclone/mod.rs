//! msync's only door to rclone: loading librclone, calling its RC API, and
//! watching and cancelling its jobs. This is the one module with `unsafe`.
//!
//! # Process discipline with the Go runtime
//!
//! librclone is a Go program built as a C shared library, so the Go runtime
//! lives inside msync's process. Three rules follow, and this module keeps
//! them for the rest of msync:
//!
//! - **Load once, never unload, never fork after.** The Go runtime cannot be
//!   unloaded or restarted, and its threads do not survive `fork()`. The
//!   library is kept in a process-wide slot; `msync start` daemonises before
//!   it loads the library.
//! - **Signals stay msync's.** Some backends make Go take SIGINT/SIGTERM and
//!   call `os.Exit` on them. [`signals`] takes them back; see its docs.
//! - **Never `core/quit`,** which exits the process from inside Go;
//!   [`Rclone::rpc`] refuses it. Every `Output` the library returns is freed
//!   exactly once with `RcloneFreeString`.

// The crate denies unsafe code (Cargo.toml's lints); this module is the one
// place that needs it, and each block says why it holds.
#![allow(unsafe_code)]

mod api;
mod bindings;
mod error;
mod job;
mod library;
pub mod loader;
pub mod signals;

pub use api::{About, Call, Entry, FsInfo, ListOptions, Location, Version};
pub use error::{Attempt, LoadError, RcloneError};
pub use job::{Job, JobStatus, Progress, Transfer};
pub use library::{LoadOptions, Rclone, finalize};
