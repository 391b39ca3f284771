//! One writer per remote: a lease in `<remote dir>/.msync/lock`.
//!
//! Two installations replicating into the same remote directory would
//! delete each other's files, each taking the other's for stale. So the
//! service holds a lease on every remote directory while it runs: a small
//! JSON file naming the host, the install, the pid, a heartbeat and a
//! sequence number that every renewal raises. Another installation that
//! finds a live lease refuses to start.
//!
//! Staleness is judged by what this host sees, never by the other host's
//! clock (clocks differ between hosts): a lease this host has seen
//! unchanged for the expiry was left by a dead service, and is taken over.
//! When it was first seen is kept in the state directory, so a restart
//! does not start the wait again. A lease that merely *looks* old by its
//! own heartbeat does not refuse a start: its branch waits while this host
//! watches it.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::install::write_private;
use crate::rclone::{Call, Location, Rclone, RcloneError};

/// The lease file, relative to a remote directory.
pub const LEASE_FILE: &str = ".msync/lock";
/// A lease seen unchanged for this long belongs to nobody (`start
/// --lease-expiry` changes it).
pub const EXPIRY: Duration = Duration::from_secs(300);

/// How often a service with leases that expire after `expiry` renews
/// them: five times per expiry, so a live holder is never mistaken.
pub fn renew_every(expiry: Duration) -> Duration {
    expiry / 5
}

/// Who holds a remote directory.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Lease {
    pub host: String,
    pub install_id: String,
    pub install_dir: PathBuf,
    pub pid: u32,
    /// Seconds since the Unix epoch, UTC, by the holder's clock: shown to
    /// people, never trusted to judge staleness.
    pub heartbeat: u64,
    /// Raised by every renewal, so each one changes the file.
    #[serde(default)]
    pub sequence: u64,
}

impl Lease {
    /// A lease for this process.
    pub fn ours(install_id: &str, install_dir: &Path) -> Lease {
        Lease {
            host: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| "unknown".into()),
            install_id: install_id.to_owned(),
            install_dir: install_dir.to_path_buf(),
            pid: std::process::id(),
            heartbeat: unix_now(),
            sequence: 0,
        }
    }

    fn age(&self) -> Duration {
        Duration::from_secs(unix_now().saturating_sub(self.heartbeat))
    }

    /// Whether this lease is held by the same installation as `other`.
    pub fn same_holder(&self, other: &Lease) -> bool {
        self.install_id == other.install_id
    }

    /// The holder, for a message.
    pub fn describe(&self) -> String {
        format!(
            "{} on host {} (pid {}, heartbeat {}s ago)",
            self.install_dir.display(),
            self.host,
            self.pid,
            self.age().as_secs()
        )
    }
}

/// Why a lease could not be taken or kept.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error(
        "{remote} is in use by another msync installation: {holder}; stop that one first, or start with --force if it is gone for good"
    )]
    Held { remote: String, holder: String },
    /// The lease looks abandoned by its own heartbeat, but this host has
    /// not yet watched it stay unchanged for the expiry.
    #[error(
        "{remote} holds a lease of {holder} that looks abandoned; msync takes it over once it has seen it unchanged for {}s more (--force takes it now)",
        .wait.as_secs()
    )]
    Watching {
        remote: String,
        holder: String,
        wait: Duration,
    },
    #[error(transparent)]
    Rclone(#[from] RcloneError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What taking a lease found.
#[derive(Debug, PartialEq, Eq)]
pub enum Taken {
    Free,
    Renewed,
    /// A stale lease of another installation was taken over.
    TookOver(String),
    /// A live lease of another installation was taken by force.
    Forced(String),
}

/// What this host saw of another installation's lease, and since when by
/// this host's clock (kept in `state/lease-seen-<remote>.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Seen {
    lease: Lease,
    /// Seconds since the Unix epoch, by this host's clock.
    since: u64,
}

/// Reads and writes leases through a local scratch file in `work_dir`.
pub struct Leases {
    rclone: Rclone,
    work_dir: PathBuf,
    expiry: Duration,
}

impl Leases {
    pub fn new(rclone: Rclone, work_dir: &Path, expiry: Duration) -> Leases {
        Leases {
            rclone,
            work_dir: work_dir.to_path_buf(),
            expiry,
        }
    }

    fn file_for(&self, what: &str, remote: &str) -> PathBuf {
        let name: String = remote
            .chars()
            .map(|c| if c.is_alphanumeric() { c } else { '_' })
            .collect();
        self.work_dir.join(format!("{what}-{name}.json"))
    }

    fn scratch(&self, remote: &str) -> PathBuf {
        self.file_for("lease", remote)
    }

    /// How long this host has seen `current` on `remote` unchanged; a lease
    /// not seen before (or changed since) starts the count now.
    fn unchanged_for(&self, remote: &str, current: &Lease) -> Duration {
        let path = self.file_for("lease-seen", remote);
        let seen: Option<Seen> = std::fs::read_to_string(&path)
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok());
        let now = unix_now();
        match seen {
            Some(seen) if &seen.lease == current => {
                Duration::from_secs(now.saturating_sub(seen.since))
            }
            _ => {
                let seen = Seen {
                    lease: current.clone(),
                    since: now,
                };
                let text = serde_json::to_string(&seen).expect("a lease always encodes");
                // Unrecorded, the wait merely starts again next time.
                let _ = write_private(&path, text.as_bytes());
                Duration::ZERO
            }
        }
    }

    /// The lease on `remote`, if any (an unreadable one counts as none).
    pub fn read(&self, remote: &str) -> Result<Option<Lease>, LeaseError> {
        let scratch = self.scratch(remote);
        let _ = std::fs::remove_file(&scratch);
        let fetched = Call::copyfile(
            &Location::new(remote, LEASE_FILE),
            &Location::new(
                self.work_dir.to_string_lossy(),
                scratch.file_name().unwrap().to_string_lossy(),
            ),
        )
        .run(self.rclone);
        match fetched {
            Ok(_) => {}
            Err(err) if err.is_not_found() => return Ok(None),
            Err(err) => return Err(err.into()),
        }
        let text = std::fs::read_to_string(&scratch).map_err(|source| LeaseError::Io {
            path: scratch.clone(),
            source,
        })?;
        Ok(serde_json::from_str(&text).ok())
    }

    /// Writes `lease` to `remote`. Every write lands: `IgnoreTimes`, since a
    /// backend without modification times would skip a same-size copy.
    fn write(&self, remote: &str, lease: &Lease) -> Result<(), LeaseError> {
        let scratch = self.scratch(remote);
        let text = serde_json::to_string_pretty(lease).expect("a lease always encodes");
        write_private(&scratch, text.as_bytes()).map_err(|source| LeaseError::Io {
            path: scratch.clone(),
            source,
        })?;
        Call::copyfile(
            &Location::new(
                self.work_dir.to_string_lossy(),
                scratch.file_name().unwrap().to_string_lossy(),
            ),
            &Location::new(remote, LEASE_FILE),
        )
        .config(serde_json::json!({ "IgnoreTimes": true }))
        .run(self.rclone)?;
        Ok(())
    }

    /// Our lease, renewed: a new heartbeat and the next sequence number.
    fn write_ours(
        &self,
        remote: &str,
        ours: &Lease,
        previous: Option<&Lease>,
    ) -> Result<(), LeaseError> {
        let mut lease = ours.clone();
        lease.heartbeat = unix_now();
        lease.sequence = previous.map_or(0, |p| p.sequence + 1);
        self.write(remote, &lease)
    }

    /// Takes the lease on `remote` for `ours`, unless another live
    /// installation holds it (`force` takes it anyway). A lease that looks
    /// abandoned by its own heartbeat is [`LeaseError::Watching`] until
    /// this host has seen it unchanged for the expiry.
    pub fn take(&self, remote: &str, ours: &Lease, force: bool) -> Result<Taken, LeaseError> {
        let current = self.read(remote)?;
        let taken = match &current {
            None => Taken::Free,
            Some(current) if current.same_holder(ours) => Taken::Renewed,
            Some(current) if force => Taken::Forced(current.describe()),
            Some(current) => {
                let unchanged = self.unchanged_for(remote, current);
                if unchanged >= self.expiry {
                    Taken::TookOver(current.describe())
                } else if current.age() >= self.expiry {
                    return Err(LeaseError::Watching {
                        remote: remote.to_owned(),
                        holder: current.describe(),
                        wait: self.expiry - unchanged,
                    });
                } else {
                    return Err(LeaseError::Held {
                        remote: remote.to_owned(),
                        holder: current.describe(),
                    });
                }
            }
        };
        self.write_ours(remote, ours, current.as_ref())?;
        Ok(taken)
    }

    /// Renews our lease. Another installation's lease found in its place
    /// is taken over once this host has seen it unchanged for the expiry
    /// (its holder is dead: a remote away at start, say); until then, and
    /// while it changes, it is [`LeaseError::Held`].
    pub fn renew(&self, remote: &str, ours: &Lease) -> Result<Taken, LeaseError> {
        let current = self.read(remote)?;
        let taken = match &current {
            None => Taken::Free,
            Some(current) if current.same_holder(ours) => Taken::Renewed,
            Some(current) if self.unchanged_for(remote, current) >= self.expiry => {
                Taken::TookOver(current.describe())
            }
            Some(current) => {
                return Err(LeaseError::Held {
                    remote: remote.to_owned(),
                    holder: current.describe(),
                });
            }
        };
        self.write_ours(remote, ours, current.as_ref())?;
        Ok(taken)
    }

    /// Gives the lease back, if it is still ours.
    pub fn release(&self, remote: &str, ours: &Lease) -> Result<(), LeaseError> {
        if let Some(current) = self.read(remote)?
            && current.same_holder(ours)
        {
            match Call::deletefile(&Location::new(remote, LEASE_FILE)).run(self.rclone) {
                Ok(_) => {}
                Err(err) if err.is_not_found() => {}
                Err(err) => return Err(err.into()),
            }
        }
        Ok(())
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
