//! aufs: the branches become one mount(2) call whose data string lists
//! them. This module owns that string and the meaning of mount(2)'s errno;
//! it never spawns a process, and makes its one system call through
//! [`Syscalls`] so unit tests can record it.
//!
//! Options, and why (aufs(5)):
//! - `br:/a=rw:/b=rw:…`: every branch writable; aufs would make all but the
//!   first read-only by default.
//! - `create=rr`: new files go to the branches in turn. msync uses many
//!   cloud accounts as one store and its branches usually share one disk,
//!   so the free-space policies (`mfs`, `pmfs`) would pick the same branch
//!   every time. mkdir is the documented exception (a new directory goes to
//!   one branch); files created in it later still rotate and aufs copies
//!   the parent directory down to the chosen branch.
//! - `udba=reval`: aufs's default and the author's recommendation. msync
//!   itself is the only one to write into branches directly (import), and
//!   `reval` notices files removed or replaced there. `notify` would put a
//!   second fsnotify mark on every directory msync's watcher already
//!   watches and needs `CONFIG_AUFS_HNOTIFY`, so some aufs kernels would
//!   refuse the mount. Known gap: a name looked up (and cached as missing)
//!   before import creates it stays hidden until the dentry is evicted.
//! - `nosuid,nodev` flags: what FUSE mounts get by default, so both drivers
//!   behave alike; a synced store has no business with setuid binaries or
//!   device nodes.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::MsFlags;

use super::{Driver, Syscalls, UnionError};

/// The name a whiteout at `path` (relative to its branch) hides, in the
/// same directory; `None` for anything else, aufs's own `.wh..wh.*` among
/// them.
pub fn whited_out(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?.to_str()?;
    let hidden = name.strip_prefix(WHITEOUT_PREFIX)?;
    if hidden.is_empty() || hidden.starts_with(WHITEOUT_PREFIX) {
        return None;
    }
    Some(path.with_file_name(hidden))
}

/// What mountinfo calls an aufs mount.
pub(crate) const FSTYPE: &str = "aufs";

/// The mount source, shown by `mount` and `df` (mergerfs's `fsname`).
const SOURCE: &str = "msync";

/// Options after the branch list.
const POLICY: &str = "create=rr,udba=reval";

/// Bytes aufs's branch syntax cannot carry in a path: `:` separates
/// branches, `,` options, `=` a branch from its permission.
const FORBIDDEN: &[u8] = b":,=";

/// Prefix of the names aufs keeps in every writable branch (`.wh..wh.aufs`,
/// `.wh..wh.plnk`, `.wh..wh.orph`) and of its whiteouts: these are aufs's
/// bookkeeping, never user data, and must not be replicated.
pub const WHITEOUT_PREFIX: &str = ".wh.";

/// The mount(2) flags.
pub(crate) fn flags() -> MsFlags {
    MsFlags::MS_NOSUID | MsFlags::MS_NODEV
}

/// The mount(2) data string for `branches` (absolute paths), or why a
/// branch path cannot be written in it.
pub(crate) fn options(branches: &[PathBuf]) -> Result<OsString, String> {
    let mut data = OsString::from("br:");
    for (i, branch) in branches.iter().enumerate() {
        if let Some(byte) = super::forbidden_byte(branch, FORBIDDEN) {
            return Err(format!(
                "branch {} contains '{}', which aufs's branch list cannot express; \
                 rename the directory or bind-mount it at a path without ':', ',' or '='",
                branch.display(),
                byte as char
            ));
        }
        if i > 0 {
            data.push(":");
        }
        data.push(branch);
        data.push("=rw");
    }
    data.push(",");
    data.push(POLICY);
    Ok(data)
}

/// Mounts `branches` at `mount_point` (both already checked and resolved).
pub(crate) fn mount(
    sys: &dyn Syscalls,
    branches: &[PathBuf],
    mount_point: &Path,
) -> Result<(), UnionError> {
    let data = options(branches).map_err(|reason| UnionError::MountFailed {
        driver: Driver::Aufs,
        mount_point: mount_point.to_path_buf(),
        reason,
    })?;
    sys.mount(SOURCE, mount_point, FSTYPE, flags(), &data)
        .map_err(|errno| mount_error(errno, mount_point, &data))
}

/// What a failed aufs mount(2) means for the user.
fn mount_error(errno: Errno, mount_point: &Path, data: &OsStr) -> UnionError {
    let reason = match errno {
        // The kernel has no filesystem of that name, even after trying to
        // load its module.
        Errno::ENODEV => {
            return UnionError::Unavailable {
                driver: Driver::Aufs,
                reason: super::AUFS_MISSING.to_owned(),
            };
        }
        Errno::EPERM => "permission denied: mounting needs root (run msync with sudo)".to_owned(),
        Errno::EINVAL => format!(
            "the kernel rejected the options `{}` (EINVAL); `dmesg | grep aufs` shows aufs's reason",
            data.to_string_lossy()
        ),
        other => format!("{} ({other})", other.desc()),
    };
    UnionError::MountFailed {
        driver: Driver::Aufs,
        mount_point: mount_point.to_path_buf(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::union::tests::Recorder;

    fn branches(paths: &[&str]) -> Vec<PathBuf> {
        paths.iter().map(PathBuf::from).collect()
    }

    #[test]
    fn option_string_lists_every_branch_writable() {
        let data = options(&branches(&["/srv/b 1", "/srv/b2", "/srv/b3"])).unwrap();
        assert_eq!(
            data,
            "br:/srv/b 1=rw:/srv/b2=rw:/srv/b3=rw,create=rr,udba=reval"
        );
    }

    #[test]
    fn paths_aufs_cannot_express_are_refused() {
        for bad in ["/srv/a:b", "/srv/a,b", "/srv/a=b"] {
            let reason = options(&branches(&["/srv/ok", bad])).unwrap_err();
            assert!(reason.contains(bad), "{reason}");
            assert!(reason.contains("cannot express"), "{reason}");
        }
    }

    #[test]
    fn mounts_through_one_syscall() {
        let sys = Recorder::default();
        mount(&sys, &branches(&["/b1", "/b2"]), Path::new("/mnt/u")).unwrap();
        assert_eq!(
            sys.calls(),
            ["mount msync /mnt/u aufs nosuid,nodev br:/b1=rw:/b2=rw,create=rr,udba=reval"]
        );
    }

    #[test]
    fn a_bad_path_never_reaches_the_kernel() {
        let sys = Recorder::default();
        let error = mount(&sys, &branches(&["/b:1"]), Path::new("/mnt/u")).unwrap_err();
        assert!(matches!(error, UnionError::MountFailed { .. }), "{error:?}");
        assert!(sys.calls().is_empty());
    }

    #[test]
    fn enodev_means_aufs_is_not_in_this_kernel() {
        let sys = Recorder::failing(Errno::ENODEV);
        let error = mount(&sys, &branches(&["/b1"]), Path::new("/mnt/u")).unwrap_err();
        assert!(
            matches!(
                error,
                UnionError::Unavailable {
                    driver: Driver::Aufs,
                    ..
                }
            ),
            "{error:?}"
        );
        let message = error.to_string();
        assert!(message.contains("aufs is not in this kernel"), "{message}");
        assert!(message.contains("mergerfs"), "{message}");
    }

    #[test]
    fn other_errors_name_the_cause() {
        let error = mount(
            &Recorder::failing(Errno::EPERM),
            &branches(&["/b1"]),
            Path::new("/mnt/u"),
        )
        .unwrap_err();
        assert!(error.to_string().contains("needs root"), "{error}");
        let error = mount(
            &Recorder::failing(Errno::EINVAL),
            &branches(&["/b1"]),
            Path::new("/mnt/u"),
        )
        .unwrap_err();
        assert!(error.to_string().contains("dmesg"), "{error}");
    }
}
