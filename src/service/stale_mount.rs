//! A union left mounted by a service of this install that did not stop
//! cleanly (SIGKILL, the OOM killer, a crash): mergerfs runs as its own
//! daemon, so the mount outlives the service. This module tells the next
//! start what it finds there. It is only called with the install's pid
//! lock held, so no service of this install runs.
//!
//! A union still served by a live mergerfs over exactly these branches is
//! *adopted*: applications may be writing through it, and unmounting or
//! detaching it under them would send their later files into the bare
//! mount-point directory. Only a dead union (its daemon gone: every access
//! fails with ENOTCONN) is cleared. It never kills a process, and never
//! touches a mount that is not provably msync's own union of these
//! branches, or dead.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use log::warn;
use nix::errno::Errno;
use nix::mount::MntFlags;

use crate::union::{self, UnionError};

/// What mountinfo calls a mergerfs mount.
const MERGERFS_FSTYPE: &str = "fuse.mergerfs";
/// The `fsname` msync gives its mergerfs mounts (see `union::mergerfs`).
const MSYNC_FSNAME: &str = "fsname=msync";

/// What a start found at its mount point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Left {
    /// No union of a previous service (maybe another mount, for the
    /// caller's checks to refuse).
    Nothing,
    /// A dead union, now cleared.
    Cleared,
    /// A live union of these branches, to be used as it is.
    Adoptable,
}

/// Looks at `mount_point` for the mergerfs union a previous service of
/// this install left: a live one serving exactly `branches` as msync
/// mounted them is [`Left::Adoptable`]; a dead one (a FUSE mount without
/// its daemon answers ENOTCONN, or ECONNABORTED when the daemon died
/// mid-request, to everyone, so detaching it takes nothing from anybody)
/// is unmounted, lazily if something still holds it.
pub fn examine(mount_point: &Path, branches: &[PathBuf]) -> anyhow::Result<Left> {
    if union::mounted_fstype(mount_point).as_deref() != Some(MERGERFS_FSTYPE) {
        return Ok(Left::Nothing);
    }
    let dead = matches!(
        std::fs::metadata(mount_point),
        Err(e) if [Errno::ENOTCONN as i32, Errno::ECONNABORTED as i32].contains(&e.raw_os_error().unwrap_or(0))
    );
    if !dead {
        let ours: Vec<PathBuf> = branches
            .iter()
            .map(|b| b.canonicalize().unwrap_or_else(|_| b.clone()))
            .collect();
        let Ok(target) = mount_point.canonicalize() else {
            return Ok(Left::Nothing);
        };
        if !served_branch_lists(&target).contains(&ours) {
            return Ok(Left::Nothing);
        }
        warn!(
            "{}: a previous service of this install did not stop cleanly; its union is still mounted and served, and is adopted as it is",
            mount_point.display()
        );
        return Ok(Left::Adoptable);
    }
    warn!(
        "{}: the union mount of a previous service is dead (its mergerfs is gone); detaching it",
        mount_point.display()
    );
    match union::unmount(mount_point) {
        Ok(()) | Err(UnionError::NotMounted { .. }) => Ok(Left::Cleared),
        Err(UnionError::Busy { .. }) => {
            // Lazy only here: the mount is dead, it serves nobody.
            nix::mount::umount2(mount_point, MntFlags::MNT_DETACH)
                .with_context(|| {
                    format!(
                        "detaching the dead union at {}; unmount it by hand (`umount -l`)",
                        mount_point.display()
                    )
                })
                .map(|()| Left::Cleared)
        }
        Err(err) => Err(err).with_context(|| {
            format!(
                "unmounting the dead union a previous service left at {}",
                mount_point.display()
            )
        }),
    }
}

/// The branch lists of msync's mergerfs daemons serving `target` (a
/// resolved path), from their command lines in /proc.
fn served_branch_lists(target: &Path) -> Vec<Vec<PathBuf>> {
    let Ok(proc_dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    proc_dir
        .filter_map(|entry| {
            let entry = entry.ok()?;
            entry.file_name().to_str()?.parse::<u32>().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            msync_branches(&cmdline, target)
        })
        .collect()
}

/// The branches of a NUL-separated `/proc/<pid>/cmdline`, if it is mergerfs
/// as msync runs it (`mergerfs -o <options with fsname=msync> /a=RW:/b=RW
/// <target>`) serving `target`.
fn msync_branches(cmdline: &[u8], target: &Path) -> Option<Vec<PathBuf>> {
    let args: Vec<&[u8]> = cmdline
        .strip_suffix(b"\0")
        .unwrap_or(cmdline)
        .split(|&b| b == 0)
        .collect();
    let program = Path::new(OsStr::from_bytes(args.first()?));
    if program.file_name() != Some(OsStr::new("mergerfs")) || args.len() < 3 {
        return None;
    }
    let (last, before) = (args[args.len() - 1], args[args.len() - 2]);
    if Path::new(OsStr::from_bytes(last)) != target {
        return None;
    }
    let is_msync = args.windows(2).any(|pair| {
        pair[0] == b"-o"
            && pair[1]
                .split(|&b| b == b',')
                .any(|option| option == MSYNC_FSNAME.as_bytes())
    });
    if !is_msync {
        return None;
    }
    Some(
        before
            .split(|&b| b == b':')
            .map(|branch| {
                let path = branch.strip_suffix(b"=RW").unwrap_or(branch);
                PathBuf::from(OsStr::from_bytes(path))
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_msync_mergerfs_and_its_branches() {
        let target = Path::new("/mnt/pool");
        let ours =
            b"mergerfs\0-o\0allow_other,use_ino,fsname=msync\0/i/b/a=RW:/i/b/b=RW\0/mnt/pool\0";
        assert_eq!(
            msync_branches(ours, target),
            Some(vec![PathBuf::from("/i/b/a"), PathBuf::from("/i/b/b")])
        );
        let full_path = b"/usr/bin/mergerfs\0-o\0fsname=msync\0/x=RW\0/mnt/pool\0";
        assert_eq!(
            msync_branches(full_path, target),
            Some(vec![PathBuf::from("/x")])
        );
    }

    #[test]
    fn leaves_other_mounts_alone() {
        let target = Path::new("/mnt/pool");
        // Another mount point, another fsname, another program, no options.
        for cmdline in [
            &b"mergerfs\0-o\0fsname=msync\0/x=RW\0/mnt/other\0"[..],
            b"mergerfs\0-o\0fsname=media\0/x=RW\0/mnt/pool\0",
            b"mergerfs\0-o\0fsname=msync2\0/x=RW\0/mnt/pool\0",
            b"vim\0-o\0fsname=msync\0/x=RW\0/mnt/pool\0",
            b"mergerfs\0/x:/y\0/mnt/pool\0",
            b"mergerfs\0/mnt/pool\0",
            b"",
        ] {
            assert_eq!(msync_branches(cmdline, target), None, "{cmdline:?}");
        }
    }
}
