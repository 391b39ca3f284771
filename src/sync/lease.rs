//! One writer per remote: a lease in `<remote dir>/.msync/lock`.
//!
//! Two installations replicating into the same remote directory would
//! delete each other's files, each taking the other's for stale. So the
//! service holds a lease on every remote directory while it runs: a small
//! JSON file naming the host, the install, the pid and a heartbeat that
//! the service renews. Another installation that finds a live lease
//! refuses to start; a lease whose heartbeat is older than its expiry was
//! left by a dead service and is taken over.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::install::write_private;
use crate::rclone::{Call, Location, Rclone, RcloneError};

/// The lease file, relative to a remote directory.
pub const LEASE_FILE: &str = ".msync/lock";
/// A lease not renewed for this long belongs to nobody.
pub const EXPIRY: Duration = Duration::from_secs(300);
/// How often the service renews its leases.
pub const RENEW_EVERY: Duration = Duration::from_secs(60);

/// Who holds a remote directory.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Lease {
    pub host: String,
    pub install_id: String,
    pub install_dir: PathBuf,
    pub pid: u32,
    /// Seconds since the Unix epoch, UTC.
    pub heartbeat: u64,
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

/// Reads and writes leases through a local scratch file in `work_dir`.
pub struct Leases {
    rclone: Rclone,
    work_dir: PathBuf,
}

impl Leases {
    pub fn new(rclone: Rclone, work_dir: &Path) -> Leases {
        Leases {
            rclone,
            work_dir: work_dir.to_path_buf(),
        }
    }

    fn scratch(&self, remote: &str) -> PathBuf {
        let name: String = remote
            .chars()
            .map(|c| if c.is_alphanumeric() { c } else { '_' })
            .collect();
        self.work_dir.join(format!("lease-{name}.json"))
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
        .run(self.rclone)?;
        Ok(())
    }

    /// Takes the lease on `remote` for `ours`, unless another live
    /// installation holds it (`force` takes it anyway).
    pub fn take(&self, remote: &str, ours: &Lease, force: bool) -> Result<Taken, LeaseError> {
        let taken = match self.read(remote)? {
            None => Taken::Free,
            Some(current) if current.same_holder(ours) => Taken::Renewed,
            Some(current) if current.age() >= EXPIRY => Taken::TookOver(current.describe()),
            Some(current) if force => Taken::Forced(current.describe()),
            Some(current) => {
                return Err(LeaseError::Held {
                    remote: remote.to_owned(),
                    holder: current.describe(),
                });
            }
        };
        let mut lease = ours.clone();
        lease.heartbeat = unix_now();
        self.write(remote, &lease)?;
        Ok(taken)
    }

    /// Renews our lease; fails if another installation has taken it.
    pub fn renew(&self, remote: &str, ours: &Lease) -> Result<(), LeaseError> {
        match self.read(remote)? {
            Some(current) if !current.same_holder(ours) => Err(LeaseError::Held {
                remote: remote.to_owned(),
                holder: current.describe(),
            }),
            _ => {
                let mut lease = ours.clone();
                lease.heartbeat = unix_now();
                self.write(remote, &lease)
            }
        }
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
