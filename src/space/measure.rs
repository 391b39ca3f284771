//! Asking a cloud how much room it has: `operations/about` of the remote's
//! root (what the account holds, has free, can hold) and, for a quota,
//! the bytes under msync's directory there (`operations/size`, a listing).

use std::time::SystemTime;

use log::debug;
use serde_json::json;

use super::{Capacity, Measure};
use crate::rclone::{About, Call, Rclone};

/// What to count besides `about`: listings, so not every time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    /// All of msync's bytes on the remote (a recursive listing of its
    /// directory: for a quota only).
    pub stored: bool,
    /// The bytes in msync's trash there.
    pub trash: bool,
}

/// Measures the cloud of `remote` (`name:path`), counting what `counts`
/// asks for. What the backend does not tell stays `None`.
pub fn measure(rclone: Rclone, remote: &str, counts: Counts) -> Measure {
    let root = match remote.split_once(':') {
        Some((name, _)) => format!("{name}:"),
        None => remote.to_owned(),
    };
    let about = rclone
        .about(&root)
        .inspect_err(|err| debug!("{root} tells no space: {err}"))
        .ok();
    measure_with(rclone, remote, about, counts)
}

/// The capacity of a branch's cloud for a command run now (not the
/// service, which keeps its own): `about`, or the one the caller already
/// has, and msync's bytes there for a quota.
pub fn capacity_now(
    rclone: Rclone,
    remote: &str,
    quota: Option<u64>,
    about: Option<About>,
) -> Capacity {
    let counts = Counts {
        stored: quota.is_some(),
        trash: false,
    };
    let measure = match about {
        Some(about) => measure_with(rclone, remote, Some(about), counts),
        None => measure(rclone, remote, counts),
    };
    Capacity {
        quota,
        measure: Some(measure),
        ..Capacity::default()
    }
}

fn measure_with(rclone: Rclone, remote: &str, about: Option<About>, counts: Counts) -> Measure {
    let unsigned = |v: Option<i64>| v.map(|v| v.max(0) as u64);
    Measure {
        at: SystemTime::now(),
        used: about.as_ref().and_then(|a| unsigned(a.used)),
        free: about.as_ref().and_then(|a| unsigned(a.free)),
        total: about.as_ref().and_then(|a| unsigned(a.total)),
        stored: if counts.stored {
            stored_bytes(rclone, remote)
        } else {
            None
        },
        trash: if counts.trash {
            stored_bytes(
                rclone,
                &format!("{remote}/{}", crate::sync::trash::TRASH_DIR),
            )
        } else {
            None
        },
    }
}

/// Bytes under `remote` (msync's directory, trash included); a directory
/// that does not exist holds none.
pub fn stored_bytes(rclone: Rclone, remote: &str) -> Option<u64> {
    match Call::new("operations/size", json!({ "fs": remote })).run(rclone) {
        Ok(size) => size["bytes"].as_u64(),
        Err(err) if err.is_not_found() => Some(0),
        Err(err) => {
            debug!("cannot count the bytes under {remote}: {err}");
            None
        }
    }
}

impl Measure {
    /// Whether the backend told anything.
    pub fn told(&self) -> bool {
        self.used.is_some() || self.free.is_some() || self.total.is_some() || self.stored.is_some()
    }
}
