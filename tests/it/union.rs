//! The union drivers for real: mergerfs mounts temp branches, files written
//! through the mount land spread over the branches, a busy mount refuses to
//! unmount, and aufs on a kernel without it fails with a clear error.
//! Needs root, FUSE and mergerfs; a missing one fails loudly.

use std::fs::{self, File};
use std::path::PathBuf;

use msync::union::{self, Availability, Driver, UnionError};
use nix::mount::MntFlags;

use crate::util::require_tool;

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "mounting needs root: run these tests as root (sudo -E make test)"
    );
}

/// Temp branches and a mount point whose name has a space, so mountinfo's
/// `\040` escape is exercised for real.
struct Layout {
    dir: tempfile::TempDir,
    branches: Vec<PathBuf>,
    mount_point: PathBuf,
}

impl Layout {
    fn new(branch_count: usize) -> Layout {
        let dir = tempfile::Builder::new()
            .prefix("msync-union-")
            .tempdir()
            .expect("temp dir");
        let branches: Vec<PathBuf> = (1..=branch_count)
            .map(|i| dir.path().join(format!("branch {i}")))
            .collect();
        for branch in &branches {
            fs::create_dir(branch).unwrap();
        }
        let mount_point = dir.path().join("union mount");
        fs::create_dir(&mount_point).unwrap();
        Layout {
            dir,
            branches,
            mount_point,
        }
    }

    /// Mounts with `driver`; the guard detaches the mount if the test fails
    /// before unmounting, so no failure leaves a mount (or, for mergerfs, a
    /// daemon: it exits once its mount is gone) behind.
    fn mount(&self, driver: Driver) -> Unmounter {
        union::mount(driver, &self.branches, &self.mount_point)
            .unwrap_or_else(|e| panic!("mounting {driver}: {e}"));
        Unmounter(self.mount_point.clone())
    }

    /// The branches holding `relative`.
    fn holders(&self, relative: &str) -> Vec<usize> {
        (0..self.branches.len())
            .filter(|&i| self.branches[i].join(relative).is_file())
            .collect()
    }
}

/// Detaches whatever is still mounted at its path when dropped. Declared
/// after the [`Layout`], so it drops first and the temp dir is removed
/// from an unmounted tree.
struct Unmounter(PathBuf);

impl Drop for Unmounter {
    fn drop(&mut self) {
        while union::is_mounted(&self.0) {
            if nix::mount::umount2(&self.0, MntFlags::MNT_DETACH).is_err() {
                break;
            }
        }
    }
}

/// Writes 60 files through the mount (some in nested directories) and
/// checks placement, contents, rename and unmount.
fn exercise(driver: Driver, fstype: &str) {
    let layout = Layout::new(3);
    let _guard = layout.mount(driver);
    assert_eq!(
        union::mounted_fstype(&layout.mount_point).as_deref(),
        Some(fstype)
    );
    assert!(union::is_mounted(&layout.mount_point));

    let names: Vec<String> = (0..60)
        .map(|i| match i % 3 {
            0 => format!("file {i}.txt"),
            1 => format!("nested/file {i}.txt"),
            _ => format!("nested/deeper/file {i}.txt"),
        })
        .collect();
    fs::create_dir_all(layout.mount_point.join("nested/deeper")).unwrap();
    for name in &names {
        fs::write(layout.mount_point.join(name), format!("contents of {name}")).unwrap();
    }

    let mut per_branch = vec![0; layout.branches.len()];
    for name in &names {
        let holders = layout.holders(name);
        assert_eq!(holders.len(), 1, "{name} is in branches {holders:?}");
        per_branch[holders[0]] += 1;
        let read = fs::read_to_string(layout.mount_point.join(name)).unwrap();
        assert_eq!(read, format!("contents of {name}"));
    }
    let used = per_branch.iter().filter(|&&n| n > 0).count();
    assert!(
        used >= 2,
        "new files must spread over branches, got {per_branch:?}"
    );

    let branch = layout.holders(&names[1])[0];
    fs::rename(
        layout.mount_point.join(&names[1]),
        layout.mount_point.join("nested/renamed.txt"),
    )
    .unwrap();
    assert!(!layout.branches[branch].join(&names[1]).exists());
    assert_eq!(
        fs::read_to_string(layout.branches[branch].join("nested/renamed.txt")).unwrap(),
        format!("contents of {}", names[1])
    );

    union::unmount(&layout.mount_point).expect("unmounting");
    assert!(!union::is_mounted(&layout.mount_point));
    assert_eq!(union::mounted_fstype(&layout.mount_point), None);
    assert_eq!(
        fs::read_dir(&layout.mount_point).unwrap().count(),
        0,
        "the mount point is an empty directory again"
    );
}

#[test]
fn mergerfs_spreads_new_files_over_the_branches() {
    require_root();
    require_tool("mergerfs", "mergerfs");
    exercise(Driver::Mergerfs, "fuse.mergerfs");
}

#[test]
fn a_busy_mount_is_reported_and_left_mounted() {
    require_root();
    require_tool("mergerfs", "mergerfs");
    let layout = Layout::new(2);
    let _guard = layout.mount(Driver::Mergerfs);
    let open = File::create(layout.mount_point.join("held open")).unwrap();

    let error = union::unmount(&layout.mount_point).unwrap_err();
    assert!(matches!(error, UnionError::Busy { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("fuser -vm"), "{message}");
    assert!(union::is_mounted(&layout.mount_point), "busy stays mounted");
    assert!(
        layout.mount_point.join("held open").exists(),
        "the mount still works"
    );

    drop(open);
    union::unmount(&layout.mount_point).expect("unmounting once the file is closed");
    assert!(!union::is_mounted(&layout.mount_point));
}

#[test]
fn a_busy_mount_counts_a_working_directory() {
    require_root();
    require_tool("mergerfs", "mergerfs");
    let layout = Layout::new(2);
    let _guard = layout.mount(Driver::Mergerfs);
    let mut sleeper = std::process::Command::new("sleep")
        .arg("30")
        .current_dir(&layout.mount_point)
        .spawn()
        .unwrap();

    let result = union::unmount(&layout.mount_point);
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
    assert!(matches!(result, Err(UnionError::Busy { .. })), "{result:?}");
    union::unmount(&layout.mount_point).expect("unmounting once the process is gone");
}

#[test]
fn unmounting_a_plain_directory_says_not_mounted() {
    require_root();
    let layout = Layout::new(1);
    let error = union::unmount(&layout.mount_point).unwrap_err();
    assert!(matches!(error, UnionError::NotMounted { .. }), "{error:?}");
}

#[test]
fn mount_refuses_what_it_cannot_do_and_touches_nothing() {
    require_root();
    require_tool("mergerfs", "mergerfs");
    let layout = Layout::new(2);
    let odd = layout.dir.path().join("a:b");
    fs::create_dir(&odd).unwrap();
    let error = union::mount(Driver::Mergerfs, &[odd], &layout.mount_point).unwrap_err();
    assert!(matches!(error, UnionError::MountFailed { .. }), "{error:?}");
    assert!(error.to_string().contains("cannot express"), "{error}");
    assert!(!union::is_mounted(&layout.mount_point));

    // Mounting twice at one place is refused, and the first mount stays.
    let _guard = layout.mount(Driver::Mergerfs);
    let error = union::mount(Driver::Mergerfs, &layout.branches, &layout.mount_point).unwrap_err();
    assert!(error.to_string().contains("already mounted"), "{error}");
    assert_eq!(
        union::mounted_fstype(&layout.mount_point).as_deref(),
        Some("fuse.mergerfs")
    );
    union::unmount(&layout.mount_point).unwrap();
}

#[test]
fn aufs_fails_clearly_on_a_kernel_without_it() {
    require_root();
    let available = Availability::probe();
    if available.aufs {
        // Not yet run: the machines msync is tested on have no aufs.
        exercise(Driver::Aufs, "aufs");
        return;
    }
    let error = union::select(Some(Driver::Aufs), &available).unwrap_err();
    let message = error.to_string();
    assert!(message.contains("aufs is not in this kernel"), "{message}");
    assert!(message.contains("--union mergerfs"), "{message}");

    // The real mount(2): the kernel answers ENODEV.
    let layout = Layout::new(2);
    let error = union::mount(Driver::Aufs, &layout.branches, &layout.mount_point).unwrap_err();
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
    assert!(
        error.to_string().contains("aufs is not in this kernel"),
        "{error}"
    );
    assert!(!union::is_mounted(&layout.mount_point));
}

/// No mergerfs process outlives its mount: after unmounting, the daemon
/// serving this mount point exits.
#[test]
fn the_mergerfs_daemon_exits_with_its_mount() {
    require_root();
    require_tool("mergerfs", "mergerfs");
    let layout = Layout::new(2);
    let _guard = layout.mount(Driver::Mergerfs);
    let daemons = || {
        fs::read_dir("/proc")
            .unwrap()
            .filter_map(|entry| {
                let entry = entry.ok()?;
                entry.file_name().to_str()?.parse::<u32>().ok()?;
                let cmdline = fs::read(entry.path().join("cmdline")).ok()?;
                let stat = fs::read_to_string(entry.path().join("stat")).ok()?;
                // A zombie has exited; only its parent has yet to reap it.
                let zombie = stat.rsplit(") ").next()?.starts_with('Z');
                let ours = cmdline.starts_with(b"mergerfs\0")
                    || cmdline
                        .split(|&b| b == 0)
                        .next()
                        .is_some_and(|argv0| argv0.ends_with(b"/mergerfs"));
                let here = cmdline
                    .windows(layout.mount_point.as_os_str().len())
                    .any(|w| w == layout.mount_point.as_os_str().as_encoded_bytes());
                (ours && here && !zombie).then_some(entry.path())
            })
            .count()
    };
    assert_eq!(daemons(), 1, "one daemon serves the mount");
    union::unmount(&layout.mount_point).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while daemons() > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(daemons(), 0, "the daemon exits after its unmount");
}
