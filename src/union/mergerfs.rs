//! mergerfs: runs the `mergerfs` binary, which mounts and then daemonises
//! itself (the daemon calls setsid, so a Ctrl-C to msync's process group
//! never reaches it). This module owns the command line, the wait for the
//! mount, and the clean-up after a failed start: a failed mount leaves no
//! mergerfs process and no half mount behind.
//!
//! Options, and why (mergerfs(1), version 2.33.5 as in Debian 12):
//! - `allow_other`: the service runs as root but users read and write the
//!   store.
//! - `use_ino`: mergerfs computes inode numbers, so hard links share one.
//! - `cache.files=off`: no page cache at the union layer. Writes reach the
//!   branch file when they happen, so the branch watcher sees them, and the
//!   data is not cached twice. Cost: no shared writable mmap through the
//!   mount (mergerfs's own "you don't need mmap" preset).
//! - `dropcacheonclose=true`: on close, mergerfs tells the kernel to drop
//!   the branch file's cached pages, which the uploader reads only once.
//! - `category.create=rand`: create, mkdir, mknod and symlink each go to a
//!   random branch. Non-path-preserving, so a file can land on a branch
//!   where its directory does not exist yet (mergerfs clones the path).
//!   Branches usually share one disk, so free-space policies (the default
//!   `epmfs`, `mfs`, `pfrd`) would pick the same branch every time.
//! - `moveonenospc=true`: a write that hits ENOSPC or EDQUOT moves the file
//!   to the branch with most free space and retries, for branches on
//!   separate disks.
//! - `minfreespace=100M`: create policies skip branches with less free
//!   space than this. The 4G default would refuse every new file on a
//!   small disk that still has room; 100M keeps the disk from filling to
//!   the last byte, which the service's own state needs.
//! - `fsname=msync`: the source `mount`, `df` and mountinfo show.
//!
//! Branch paths are written `path=RW`: every branch is read-write. RW is
//! mergerfs's default too, but saying it keeps the command line readable
//! in `ps` and independent of that default. While the service runs, a
//! branch whose cloud has no room becomes `NC` (no create: it serves and
//! changes what it holds, but takes no new file) through mergerfs's
//! runtime control, the `user.mergerfs.branches` attribute of the file
//! `.mergerfs` at the mount's root.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::mount::MntFlags;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::{Driver, Nix, Syscalls, UnionError, mountinfo};

/// What mountinfo calls a mergerfs mount.
pub(crate) const FSTYPE: &str = "fuse.mergerfs";

/// The `-o` options; the module doc says why each is there.
pub(crate) const OPTIONS: &str = "allow_other,use_ino,cache.files=off,dropcacheonclose=true,\
category.create=rand,moveonenospc=true,minfreespace=100M,fsname=msync";

/// Bytes a branch path cannot contain: `:` separates branches, `=` and `,`
/// start a branch's mode and minfreespace, and mergerfs expands glob
/// patterns (`*`, `?`, `[`, with `\` as their escape) in branch paths.
const FORBIDDEN: &[u8] = b":,=*?[\\";

/// How long mergerfs may take to mount before msync gives up.
const MOUNT_TIMEOUT: Duration = Duration::from_secs(10);

/// The branch argument: `/a=RW:/b=RW`, or why a path cannot be written.
pub(crate) fn branch_list(branches: &[PathBuf]) -> Result<OsString, String> {
    let mut list = OsString::new();
    for (i, branch) in branches.iter().enumerate() {
        if let Some(byte) = super::forbidden_byte(branch, FORBIDDEN) {
            return Err(format!(
                "branch {} contains '{}', which mergerfs's branch list cannot express; \
                 rename the directory or bind-mount it at a path without any of : , = * ? [ \\",
                branch.display(),
                byte as char
            ));
        }
        if i > 0 {
            list.push(":");
        }
        list.push(branch);
        list.push("=RW");
    }
    Ok(list)
}

/// The control file mergerfs serves at the root of its mount.
const CONTROL_FILE: &str = ".mergerfs";
const BRANCHES_ATTRIBUTE: &str = "user.mergerfs.branches";

/// Sets every branch's mode at runtime: `RW` for those that take new
/// files, `NC` for the others.
pub(crate) fn set_create_branches(
    mount_point: &Path,
    branches: &[(&Path, bool)],
) -> Result<(), UnionError> {
    let failed = |reason: String| UnionError::Control {
        mount_point: mount_point.to_path_buf(),
        reason,
    };
    let mut list = OsString::new();
    for (i, (branch, takes_new)) in branches.iter().enumerate() {
        if i > 0 {
            list.push(":");
        }
        list.push(branch);
        list.push(if *takes_new { "=RW" } else { "=NC" });
    }
    xattr::set(
        mount_point.join(CONTROL_FILE),
        BRANCHES_ATTRIBUTE,
        list.as_bytes(),
    )
    .map_err(|err| failed(format!("writing {BRANCHES_ATTRIBUTE}: {err}")))
}

/// The branches and their modes as mergerfs has them now, e.g.
/// `/a=RW:/b=NC`.
pub(crate) fn branch_modes(mount_point: &Path) -> Option<String> {
    let value = xattr::get(mount_point.join(CONTROL_FILE), BRANCHES_ATTRIBUTE).ok()??;
    Some(String::from_utf8_lossy(&value).into_owned())
}

/// The full argument vector after the program name.
pub(crate) fn args(branches: &[PathBuf], mount_point: &Path) -> Result<Vec<OsString>, String> {
    Ok(vec![
        "-o".into(),
        OPTIONS.into(),
        branch_list(branches)?,
        mount_point.as_os_str().to_owned(),
    ])
}

/// Mounts `branches` at `mount_point` (both already checked and resolved)
/// and returns once mountinfo lists the mount.
pub(crate) fn mount(branches: &[PathBuf], mount_point: &Path) -> Result<(), UnionError> {
    let program = super::find_on_path("mergerfs").ok_or_else(|| UnionError::Unavailable {
        driver: Driver::Mergerfs,
        reason: super::MERGERFS_MISSING.to_owned(),
    })?;
    start(&program, branches, mount_point, MOUNT_TIMEOUT)
}

/// Runs `program` as mergerfs and waits up to `timeout` for the mount;
/// on any failure, cleans up and reports what mergerfs printed.
fn start(
    program: &Path,
    branches: &[PathBuf],
    mount_point: &Path,
    timeout: Duration,
) -> Result<(), UnionError> {
    let failed = |reason: String| UnionError::MountFailed {
        driver: Driver::Mergerfs,
        mount_point: mount_point.to_path_buf(),
        reason,
    };
    let args = args(branches, mount_point).map_err(failed)?;
    // A memfd rather than a pipe: the daemon may hold its inherited stderr
    // open after the parent exits, and a pipe would then never reach EOF.
    let mut output =
        output_file().map_err(|e| failed(format!("cannot capture its output: {e}")))?;
    let child = Command::new(program)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(clone(&output).map_err(failed)?)
        .stderr(clone(&output).map_err(failed)?)
        .spawn()
        .map_err(|e| failed(format!("cannot run {}: {e}", program.display())))?;

    let deadline = Instant::now() + timeout;
    let outcome = match wait_with_deadline(child, deadline) {
        None => Err(format!(
            "mergerfs did not finish mounting within {} s",
            timeout.as_secs_f32()
        )),
        Some(status) if !status.success() => Err(format!("mergerfs failed ({status})")),
        Some(_) => {
            let visible = super::wait_until(deadline, || {
                mountinfo::fstype_at(&mountinfo::read(), mount_point).as_deref() == Some(FSTYPE)
            });
            if visible {
                Ok(())
            } else {
                Err(format!(
                    "mergerfs exited successfully but the mount did not appear within {} s",
                    timeout.as_secs_f32()
                ))
            }
        }
    };
    outcome.map_err(|reason| {
        clean_up(mount_point);
        let said = read_output(&mut output);
        if said.is_empty() {
            failed(reason)
        } else {
            failed(format!("{reason}: {said}"))
        }
    })
}

/// Waits for the mergerfs parent process (which exits once the daemon has
/// mounted); kills and reaps it at the deadline.
fn wait_with_deadline(mut child: Child, deadline: Instant) -> Option<ExitStatus> {
    let mut status = None;
    super::wait_until(deadline, || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    });
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    status
}

/// Undoes a failed start. The daemon is killed outright: nobody has been
/// told the mount exists, so it holds nothing worth flushing. Then any
/// mount it made (alive or, after the kill, dead) is detached.
fn clean_up(mount_point: &Path) {
    for pid in daemons_serving(mount_point) {
        let _ = kill(pid, Signal::SIGKILL);
    }
    let entries = mountinfo::read();
    if mountinfo::fstype_at(&entries, mount_point).as_deref() == Some(FSTYPE) {
        let _ = Nix.umount2(mount_point, MntFlags::MNT_DETACH);
    }
}

/// mergerfs processes whose last argument is `mount_point`: the daemon a
/// failed start may have left. Matching the exact mount point never picks
/// the daemon of another union.
fn daemons_serving(mount_point: &Path) -> Vec<Pid> {
    let Ok(proc_dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    proc_dir
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            serves(&cmdline, mount_point).then_some(Pid::from_raw(pid))
        })
        .collect()
}

/// Whether a NUL-separated `/proc/<pid>/cmdline` is mergerfs serving
/// `mount_point`.
fn serves(cmdline: &[u8], mount_point: &Path) -> bool {
    let args: Vec<&[u8]> = cmdline
        .strip_suffix(b"\0")
        .unwrap_or(cmdline)
        .split(|&b| b == 0)
        .collect();
    let is_mergerfs = args.first().is_some_and(|argv0| {
        Path::new(OsStr::from_bytes(argv0)).file_name() == Some(OsStr::new("mergerfs"))
    });
    is_mergerfs && args.len() > 1 && args.last() == Some(&mount_point.as_os_str().as_bytes())
}

fn output_file() -> nix::Result<File> {
    let fd = nix::sys::memfd::memfd_create(
        c"msync-mergerfs-output",
        nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
    )?;
    Ok(File::from(fd))
}

fn clone(file: &File) -> Result<File, String> {
    file.try_clone()
        .map_err(|e| format!("cannot capture its output: {e}"))
}

/// What mergerfs printed, trimmed and kept short enough for one message.
fn read_output(file: &mut File) -> String {
    let mut bytes = Vec::new();
    let _ = file.seek(SeekFrom::Start(0));
    let _ = file.take(4096).read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_is_options_branches_mount_point() {
        let branches: Vec<PathBuf> = ["/srv/b 1", "/srv/b2", "/srv/b3"]
            .iter()
            .map(PathBuf::from)
            .collect();
        let args = args(&branches, Path::new("/mnt/my store")).unwrap();
        assert_eq!(
            args,
            [
                "-o",
                "allow_other,use_ino,cache.files=off,dropcacheonclose=true,\
                 category.create=rand,moveonenospc=true,minfreespace=100M,fsname=msync",
                "/srv/b 1=RW:/srv/b2=RW:/srv/b3=RW",
                "/mnt/my store",
            ]
        );
    }

    #[test]
    fn paths_mergerfs_cannot_express_are_refused() {
        for bad in ["/a:b", "/a,b", "/a=b", "/a*", "/a?", "/a[1]", "/a\\b"] {
            let reason = branch_list(&[PathBuf::from("/ok"), PathBuf::from(bad)]).unwrap_err();
            assert!(reason.contains(bad), "{reason}");
            assert!(reason.contains("cannot express"), "{reason}");
        }
    }

    #[test]
    fn recognises_the_daemon_of_one_mount_point() {
        let ours = b"mergerfs\0-o\0allow_other\0/b1=RW\0/mnt/u\0";
        assert!(serves(ours, Path::new("/mnt/u")));
        assert!(serves(
            b"/usr/bin/mergerfs\0-o\0x\0/b=RW\0/mnt/u\0",
            Path::new("/mnt/u")
        ));
        assert!(!serves(ours, Path::new("/mnt/other")));
        assert!(!serves(b"vim\0/mnt/u\0", Path::new("/mnt/u")));
        assert!(!serves(b"mergerfs\0", Path::new("mergerfs")));
        assert!(!serves(b"", Path::new("/mnt/u")));
    }

    /// A fake `mergerfs` running `script` (bash), in its own temp dir, and
    /// a branch and mount point beside it.
    fn fake(script: &str) -> (tempfile::TempDir, PathBuf, Vec<PathBuf>, PathBuf) {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let program = dir.path().join("mergerfs");
        std::fs::write(&program, format!("#!/bin/bash\n{script}\n")).unwrap();
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
        let branch = dir.path().join("branch");
        let mount_point = dir.path().join("mnt");
        std::fs::create_dir(&branch).unwrap();
        std::fs::create_dir(&mount_point).unwrap();
        (dir, program, vec![branch], mount_point)
    }

    fn reason(result: Result<(), UnionError>) -> String {
        match result {
            Err(UnionError::MountFailed { reason, .. }) => reason,
            other => panic!("expected MountFailed, got {other:?}"),
        }
    }

    #[test]
    fn a_failed_start_reports_what_mergerfs_printed() {
        let (_dir, program, branches, mount_point) =
            fake("echo 'fuse: bad mount option' >&2; exit 1");
        let reason = reason(start(
            &program,
            &branches,
            &mount_point,
            Duration::from_secs(5),
        ));
        assert_eq!(
            reason,
            "mergerfs failed (exit status: 1): fuse: bad mount option"
        );
    }

    #[test]
    fn a_hung_start_is_killed() {
        let (_dir, program, branches, mount_point) = fake("exec sleep 60");
        let started = Instant::now();
        let reason = reason(start(
            &program,
            &branches,
            &mount_point,
            Duration::from_millis(300),
        ));
        assert!(reason.contains("did not finish mounting"), "{reason}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_daemon_without_a_mount_is_not_left_behind() {
        // Daemonises like mergerfs (argv[0] `mergerfs`, mount point last),
        // then exits 0 without mounting anything.
        let (_dir, program, branches, mount_point) = fake(
            "(exec -a mergerfs bash -c 'echo daemon up; while :; do sleep 0.1; done' \"$4\" &)\n\
             sleep 0.2",
        );
        let reason = reason(start(
            &program,
            &branches,
            &mount_point,
            Duration::from_secs(1),
        ));
        assert!(reason.contains("did not appear"), "{reason}");
        assert!(reason.ends_with("daemon up"), "{reason}");
        let gone = super::super::wait_until(Instant::now() + Duration::from_secs(5), || {
            daemons_serving(&mount_point).is_empty()
        });
        assert!(
            gone,
            "the fake daemon still runs: {:?}",
            daemons_serving(&mount_point)
        );
    }

    #[test]
    fn output_is_read_back_from_the_start() {
        use std::io::Write;
        let mut file = output_file().unwrap();
        file.write_all(b"fuse: mountpoint is not empty\nfuse: if you are sure\n")
            .unwrap();
        assert_eq!(
            read_output(&mut file),
            "fuse: mountpoint is not empty fuse: if you are sure"
        );
    }
}
