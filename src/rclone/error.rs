//! The typed errors of the librclone layer: failing to find or load the
//! library, and an RC call that rclone answered with an error.

use std::path::PathBuf;

use thiserror::Error;

/// One place the loader looked for librclone, and why it was not used.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub place: String,
    pub reason: String,
}

/// Why librclone could not be made ready.
#[derive(Debug, Error)]
pub enum LoadError {
    /// No candidate could be loaded; every place tried is listed.
    #[error("librclone could not be loaded; tried:{}\nput librclone.so next to the msync binary, or name it with --librclone PATH or $MSYNC_LIBRCLONE", list_attempts(.0))]
    NotFound(Vec<Attempt>),

    /// The library was loaded but answered `core/version` with something
    /// msync cannot work with.
    #[error("librclone at {path} is rclone {version}, but msync needs rclone {minimum} or newer")]
    TooOld {
        path: PathBuf,
        version: String,
        minimum: &'static str,
    },

    /// The library was loaded but its first RC call failed.
    #[error("librclone at {path} does not answer core/version: {source}")]
    NoVersion {
        path: PathBuf,
        #[source]
        source: RcloneError,
    },

    /// A different library was loaded earlier in this process; the Go
    /// runtime cannot be unloaded, so there can only ever be one.
    #[error("librclone is already loaded from {loaded}; cannot load {requested} as well")]
    AlreadyLoaded { loaded: PathBuf, requested: PathBuf },
}

fn list_attempts(attempts: &[Attempt]) -> String {
    attempts
        .iter()
        .map(|a| format!("\n  {}: {}", a.place, a.reason))
        .collect()
}

/// An RC call that did not succeed: the method, rclone's HTTP-like status
/// and rclone's own message.
#[derive(Debug, Clone, Error)]
#[error("rclone {method} failed (status {status}): {message}")]
pub struct RcloneError {
    pub method: String,
    pub status: i32,
    pub message: String,
}

impl RcloneError {
    pub(crate) fn new(method: &str, status: i32, message: impl Into<String>) -> Self {
        RcloneError {
            method: method.to_owned(),
            status,
            message: message.into(),
        }
    }

    /// True when rclone reported that the thing asked for does not exist.
    pub fn is_not_found(&self) -> bool {
        self.status == 404
    }
}
