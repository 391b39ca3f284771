//! Union filesystem drivers: which one this machine has, and how each
//! mounts the branch directories at one mount point, all read-write, with
//! new files spread across branches. aufs is used where the kernel lists
//! it; mergerfs (FUSE) otherwise. This module owns choosing a driver,
//! mounting, unmounting and reading the mount table. It never unmounts
//! lazily and never kills a process to free a busy mount: a busy mount is
//! the user's to resolve, and [`UnionError::Busy`] says how. The only
//! process it ever kills is a mergerfs daemon of its own failed start.

mod aufs;
mod mergerfs;
mod mountinfo;

use std::ffi::OsStr;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};

pub use aufs::{WHITEOUT_PREFIX as AUFS_WHITEOUT_PREFIX, whited_out as aufs_whited_out};

/// A union filesystem msync can mount branches with (`--union aufs|mergerfs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Driver {
    Aufs,
    Mergerfs,
}

impl Driver {
    pub fn name(self) -> &'static str {
        match self {
            Driver::Aufs => "aufs",
            Driver::Mergerfs => "mergerfs",
        }
    }
}

impl fmt::Display for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the machine offers, for `msync check` and driver selection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Availability {
    /// The kernel lists aufs in /proc/filesystems.
    pub aufs: bool,
    /// The mergerfs binary, if on PATH.
    pub mergerfs: Option<PathBuf>,
    /// /dev/fuse exists (mergerfs needs it).
    pub fuse_device: bool,
}

impl Availability {
    pub fn probe() -> Availability {
        let filesystems = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
        Availability {
            aufs: kernel_lists(&filesystems, "aufs"),
            mergerfs: find_on_path("mergerfs"),
            fuse_device: Path::new("/dev/fuse").exists(),
        }
    }

    /// The driver msync picks when none is forced: aufs, else mergerfs.
    pub fn preferred(&self) -> Option<Driver> {
        if self.aufs {
            Some(Driver::Aufs)
        } else if self.mergerfs.is_some() && self.fuse_device {
            Some(Driver::Mergerfs)
        } else {
            None
        }
    }
}

/// Whether `/proc/filesystems` text lists filesystem `name`.
fn kernel_lists(filesystems: &str, name: &str) -> bool {
    filesystems
        .lines()
        .any(|line| line.split_whitespace().last() == Some(name))
}

/// The first byte of `path` that is in `forbidden`: a driver's branch list
/// cannot carry it.
fn forbidden_byte(path: &Path, forbidden: &[u8]) -> Option<u8> {
    use std::os::unix::ffi::OsStrExt;
    path.as_os_str()
        .as_bytes()
        .iter()
        .copied()
        .find(|b| forbidden.contains(b))
}

/// The first executable `program` in `$PATH`.
pub fn find_on_path(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Why aufs cannot be used here.
const AUFS_MISSING: &str = "aufs is not in this kernel (load it with `modprobe aufs` if your kernel \
ships it as a module); use --union mergerfs instead (install it with `apt-get install mergerfs`)";

/// Why mergerfs cannot be used here: no binary.
const MERGERFS_MISSING: &str =
    "the mergerfs binary is not on PATH; install it with `apt-get install mergerfs`";

/// Why mergerfs cannot be used here: no FUSE device.
const FUSE_MISSING: &str = "/dev/fuse is missing; load FUSE with `modprobe fuse` \
(in a container, pass the device through, e.g. `--device /dev/fuse`)";

/// How long an aufs mount may take to show in mountinfo (mount(2) has
/// returned by then, so this only guards against surprises).
const AUFS_VISIBLE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long mountinfo may keep listing a mount after umount2 succeeded.
const UNMOUNT_SETTLE_TIMEOUT: Duration = Duration::from_secs(2);

/// How often the waits look again.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// A union filesystem could not be chosen, mounted or unmounted.
#[derive(Debug, thiserror::Error)]
pub enum UnionError {
    #[error("cannot use {driver}: {reason}")]
    Unavailable { driver: Driver, reason: String },

    #[error(
        "cannot unmount {}: it is busy (files are open under it, or a process has its working \
         directory there); close them or cd out, then retry. `fuser -vm '{}'` shows who; \
         nothing was killed",
        .mount_point.display(),
        .mount_point.display()
    )]
    Busy { mount_point: PathBuf },

    #[error("cannot mount {driver} at {}: {reason}", .mount_point.display())]
    MountFailed {
        driver: Driver,
        mount_point: PathBuf,
        reason: String,
    },

    #[error("cannot unmount {}: {reason}", .mount_point.display())]
    UnmountFailed {
        mount_point: PathBuf,
        reason: String,
    },

    #[error("nothing is mounted at {}", .mount_point.display())]
    NotMounted { mount_point: PathBuf },

    #[error("cannot change the branches of {}: {reason}", .mount_point.display())]
    Control {
        mount_point: PathBuf,
        reason: String,
    },
}

/// The driver to use: the forced one if this machine can run it, else the
/// preferred one (aufs, then mergerfs).
pub fn select(forced: Option<Driver>, available: &Availability) -> Result<Driver, UnionError> {
    match forced {
        Some(driver) => match missing(driver, available) {
            None => Ok(driver),
            Some(reason) => Err(UnionError::Unavailable {
                driver,
                reason: reason.to_owned(),
            }),
        },
        None => available
            .preferred()
            .ok_or_else(|| UnionError::Unavailable {
                driver: Driver::Mergerfs,
                reason: format!(
                    "{}; and aufs, the other option, is not in this kernel either",
                    missing(Driver::Mergerfs, available).unwrap_or(MERGERFS_MISSING)
                ),
            }),
    }
}

/// Why `driver` cannot run here, if it cannot.
fn missing(driver: Driver, available: &Availability) -> Option<&'static str> {
    match driver {
        Driver::Aufs if !available.aufs => Some(AUFS_MISSING),
        Driver::Mergerfs if available.mergerfs.is_none() => Some(MERGERFS_MISSING),
        Driver::Mergerfs if !available.fuse_device => Some(FUSE_MISSING),
        _ => None,
    }
}

/// Mounts `branches` (all read-write) at `mount_point` with `driver`, and
/// returns once mountinfo lists the mount. Paths are checked first, so a
/// refused mount has touched nothing.
pub fn mount(driver: Driver, branches: &[PathBuf], mount_point: &Path) -> Result<(), UnionError> {
    let target = check_mount_point(driver, mount_point)?;
    let branches = check_branches(driver, branches, &target)?;
    match driver {
        Driver::Mergerfs => mergerfs::mount(&branches, &target),
        Driver::Aufs => {
            aufs::mount(&Nix, &branches, &target)?;
            let deadline = Instant::now() + AUFS_VISIBLE_TIMEOUT;
            if wait_until(deadline, || {
                mounted_fstype(&target).as_deref() == Some(aufs::FSTYPE)
            }) {
                return Ok(());
            }
            let _ = Nix.umount2(&target, MntFlags::MNT_DETACH);
            Err(UnionError::MountFailed {
                driver,
                mount_point: target,
                reason: "mount(2) succeeded but mountinfo never listed the mount".into(),
            })
        }
    }
}

/// Tells the mergerfs union at `mount_point` which branches take new files
/// (the others keep serving and changing what they hold). The branches are
/// all of the mount's, in its order.
pub fn set_create_branches(
    mount_point: &Path,
    branches: &[(&Path, bool)],
) -> Result<(), UnionError> {
    mergerfs::set_create_branches(mount_point, branches)
}

/// The mergerfs union's branches and their modes now (`/a=RW:/b=NC`).
pub fn create_branches(mount_point: &Path) -> Option<String> {
    mergerfs::branch_modes(mount_point)
}

/// Unmounts whatever is mounted on top at `mount_point` (aufs, or FUSE as
/// root) and returns once mountinfo no longer lists it.
pub fn unmount(mount_point: &Path) -> Result<(), UnionError> {
    let target = mountinfo::resolve(mount_point);
    let before = mountinfo::count_at(&mountinfo::read(), &target);
    unmount_with(&Nix, &target)?;
    let deadline = Instant::now() + UNMOUNT_SETTLE_TIMEOUT;
    if before == 0
        || wait_until(deadline, || {
            mountinfo::count_at(&mountinfo::read(), &target) < before
        })
    {
        Ok(())
    } else {
        Err(UnionError::UnmountFailed {
            mount_point: target,
            reason: format!(
                "umount2 succeeded but mountinfo still lists it after {} s",
                UNMOUNT_SETTLE_TIMEOUT.as_secs()
            ),
        })
    }
}

/// One plain umount2: no MNT_DETACH, so a busy mount stays and says so.
fn unmount_with(sys: &dyn Syscalls, target: &Path) -> Result<(), UnionError> {
    sys.umount2(target, MntFlags::empty())
        .map_err(|errno| match errno {
            Errno::EBUSY => UnionError::Busy {
                mount_point: target.to_path_buf(),
            },
            // EINVAL: the path is not a mount point; ENOENT: it does not exist.
            Errno::EINVAL | Errno::ENOENT => UnionError::NotMounted {
                mount_point: target.to_path_buf(),
            },
            Errno::EPERM => UnionError::UnmountFailed {
                mount_point: target.to_path_buf(),
                reason: "permission denied: unmounting needs root (run msync with sudo)".into(),
            },
            other => UnionError::UnmountFailed {
                mount_point: target.to_path_buf(),
                reason: format!("{} ({other})", other.desc()),
            },
        })
}

/// The filesystem type mounted on top at `mount_point` (`aufs`,
/// `fuse.mergerfs`, …), from /proc/self/mountinfo.
pub fn mounted_fstype(mount_point: &Path) -> Option<String> {
    mountinfo::fstype_at(&mountinfo::read(), &mountinfo::resolve(mount_point))
}

/// Whether anything is mounted at `mount_point`.
pub fn is_mounted(mount_point: &Path) -> bool {
    mounted_fstype(mount_point).is_some()
}

/// The resolved mount point, if it is an empty directory with nothing
/// mounted on it: mounting over files would hide them.
fn check_mount_point(driver: Driver, mount_point: &Path) -> Result<PathBuf, UnionError> {
    let target = mountinfo::resolve(mount_point);
    let refuse = |reason: String| UnionError::MountFailed {
        driver,
        mount_point: target.clone(),
        reason,
    };
    if let Some(fstype) = mountinfo::fstype_at(&mountinfo::read(), &target) {
        return Err(refuse(format!(
            "{fstype} is already mounted there; unmount it first"
        )));
    }
    match std::fs::metadata(&target) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(refuse(
                "it does not exist; create the directory first".into(),
            ));
        }
        Err(e) => return Err(refuse(format!("cannot inspect it: {e}"))),
        Ok(meta) if !meta.is_dir() => return Err(refuse("it is not a directory".into())),
        Ok(_) => {}
    }
    let mut entries =
        std::fs::read_dir(&target).map_err(|e| refuse(format!("cannot list it: {e}")))?;
    if entries.next().is_some() {
        return Err(refuse(
            "it is not empty and the union would hide its files; move them into a branch \
             or pick an empty directory"
                .into(),
        ));
    }
    Ok(target)
}

/// The branches as absolute, resolved paths, if each is a directory, none
/// holds another or the mount point, and none is under the mount point.
fn check_branches(
    driver: Driver,
    branches: &[PathBuf],
    target: &Path,
) -> Result<Vec<PathBuf>, UnionError> {
    let refuse = |reason: String| UnionError::MountFailed {
        driver,
        mount_point: target.to_path_buf(),
        reason,
    };
    if branches.is_empty() {
        return Err(refuse(
            "no branches given; a union needs at least one branch directory".into(),
        ));
    }
    let mut resolved: Vec<PathBuf> = Vec::with_capacity(branches.len());
    for branch in branches {
        let path = branch.canonicalize().map_err(|e| {
            refuse(format!(
                "branch {}: {e}; create it or fix the path",
                branch.display()
            ))
        })?;
        if !path.is_dir() {
            return Err(refuse(format!(
                "branch {} is not a directory",
                branch.display()
            )));
        }
        if let Some(other) = resolved
            .iter()
            .find(|o| o.starts_with(&path) || path.starts_with(o))
        {
            return Err(refuse(format!(
                "branches {} and {} overlap (one is, or is inside, the other); give each branch its own directory",
                other.display(),
                path.display()
            )));
        }
        if target.starts_with(&path) {
            return Err(refuse(format!(
                "the mount point is inside branch {}, so the union would contain itself; \
                 put the mount point outside every branch",
                path.display()
            )));
        }
        if path.starts_with(target) {
            return Err(refuse(format!(
                "branch {} is inside the mount point, which the union would hide",
                path.display()
            )));
        }
        resolved.push(path);
    }
    Ok(resolved)
}

/// The two system calls the drivers make, behind a trait so option
/// building and errno mapping are unit-tested with a recording fake
/// (youki's pattern). [`Nix`] makes the real calls.
pub(crate) trait Syscalls {
    fn mount(
        &self,
        source: &str,
        target: &Path,
        fstype: &str,
        flags: MsFlags,
        data: &OsStr,
    ) -> nix::Result<()>;
    fn umount2(&self, target: &Path, flags: MntFlags) -> nix::Result<()>;
}

/// The real system calls.
pub(crate) struct Nix;

impl Syscalls for Nix {
    fn mount(
        &self,
        source: &str,
        target: &Path,
        fstype: &str,
        flags: MsFlags,
        data: &OsStr,
    ) -> nix::Result<()> {
        nix::mount::mount(Some(source), target, Some(fstype), flags, Some(data))
    }

    fn umount2(&self, target: &Path, flags: MntFlags) -> nix::Result<()> {
        nix::mount::umount2(target, flags)
    }
}

/// Polls `done` until it holds (true) or `deadline` passes (false).
fn wait_until(deadline: Instant, mut done: impl FnMut() -> bool) -> bool {
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

#[cfg(test)]
pub(crate) mod tests;
