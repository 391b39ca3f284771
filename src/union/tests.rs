//! Unit tests of the union module's policy code (driver choice, path
//! checks), and the recording fake of the mount syscalls the drivers'
//! tests share.

use std::cell::RefCell;

use super::*;

/// A [`Syscalls`] that records each call as one line and answers with
/// a fixed result.
#[derive(Default)]
pub(crate) struct Recorder {
    calls: RefCell<Vec<String>>,
    fail_with: Option<Errno>,
}

impl Recorder {
    pub(crate) fn failing(errno: Errno) -> Recorder {
        Recorder {
            calls: RefCell::default(),
            fail_with: Some(errno),
        }
    }

    pub(crate) fn calls(&self) -> Vec<String> {
        self.calls.borrow().clone()
    }

    fn answer(&self, call: String) -> nix::Result<()> {
        self.calls.borrow_mut().push(call);
        self.fail_with.map_or(Ok(()), Err)
    }
}

impl Syscalls for Recorder {
    fn mount(
        &self,
        source: &str,
        target: &Path,
        fstype: &str,
        flags: MsFlags,
        data: &OsStr,
    ) -> nix::Result<()> {
        let known = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
        assert!(
            known.contains(flags),
            "spell out the new flag {flags:?} here"
        );
        let flags: Vec<&str> = [(MsFlags::MS_NOSUID, "nosuid"), (MsFlags::MS_NODEV, "nodev")]
            .into_iter()
            .filter(|(flag, _)| flags.contains(*flag))
            .map(|(_, name)| name)
            .collect();
        self.answer(format!(
            "mount {source} {} {fstype} {} {}",
            target.display(),
            flags.join(","),
            data.to_string_lossy()
        ))
    }

    fn umount2(&self, target: &Path, flags: MntFlags) -> nix::Result<()> {
        self.answer(format!("umount2 {} {:?}", target.display(), flags))
    }
}

fn availability(aufs: bool, mergerfs: bool, fuse_device: bool) -> Availability {
    Availability {
        aufs,
        mergerfs: mergerfs.then(|| PathBuf::from("/usr/bin/mergerfs")),
        fuse_device,
    }
}

#[test]
fn driver_values_are_their_names() {
    use clap::ValueEnum;
    for driver in Driver::value_variants() {
        let value = driver.to_possible_value().unwrap();
        assert_eq!(value.get_name(), driver.name());
        assert_eq!(Driver::from_str(driver.name(), false), Ok(*driver));
        assert_eq!(driver.to_string(), driver.name());
    }
}

#[test]
fn select_prefers_aufs_then_mergerfs() {
    let all = availability(true, true, true);
    assert_eq!(select(None, &all).unwrap(), Driver::Aufs);
    assert_eq!(
        select(Some(Driver::Mergerfs), &all).unwrap(),
        Driver::Mergerfs
    );
    let no_aufs = availability(false, true, true);
    assert_eq!(select(None, &no_aufs).unwrap(), Driver::Mergerfs);
    let only_aufs = availability(true, false, false);
    assert_eq!(select(None, &only_aufs).unwrap(), Driver::Aufs);
}

#[test]
fn a_forced_driver_must_be_available() {
    let error = select(Some(Driver::Aufs), &availability(false, true, true)).unwrap_err();
    assert!(matches!(
        error,
        UnionError::Unavailable {
            driver: Driver::Aufs,
            ..
        }
    ));
    let message = error.to_string();
    assert!(
        message.starts_with("cannot use aufs: aufs is not in this kernel"),
        "{message}"
    );
    assert!(message.contains("--union mergerfs"), "{message}");

    let error = select(Some(Driver::Mergerfs), &availability(true, false, true)).unwrap_err();
    assert!(
        error.to_string().contains("apt-get install mergerfs"),
        "{error}"
    );
    let error = select(Some(Driver::Mergerfs), &availability(true, true, false)).unwrap_err();
    assert!(error.to_string().contains("/dev/fuse"), "{error}");
}

#[test]
fn with_neither_driver_the_error_names_both() {
    let error = select(None, &availability(false, false, true)).unwrap_err();
    let message = error.to_string();
    assert!(message.contains("mergerfs"), "{message}");
    assert!(message.contains("aufs"), "{message}");
    let error = select(None, &availability(false, true, false)).unwrap_err();
    assert!(error.to_string().contains("/dev/fuse"), "{error}");
}

#[test]
fn unmount_maps_errno_and_never_detaches() {
    let target = Path::new("/mnt/u");
    let sys = Recorder::default();
    unmount_with(&sys, target).unwrap();
    assert_eq!(sys.calls(), ["umount2 /mnt/u MntFlags(0x0)"]);

    let error = unmount_with(&Recorder::failing(Errno::EBUSY), target).unwrap_err();
    assert!(matches!(error, UnionError::Busy { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("fuser -vm '/mnt/u'"), "{message}");
    assert!(message.contains("nothing was killed"), "{message}");

    for errno in [Errno::EINVAL, Errno::ENOENT] {
        let error = unmount_with(&Recorder::failing(errno), target).unwrap_err();
        assert!(matches!(error, UnionError::NotMounted { .. }), "{error:?}");
    }
    let error = unmount_with(&Recorder::failing(Errno::EPERM), target).unwrap_err();
    assert!(error.to_string().contains("needs root"), "{error}");
    let error = unmount_with(&Recorder::failing(Errno::EIO), target).unwrap_err();
    assert!(
        matches!(error, UnionError::UnmountFailed { .. }),
        "{error:?}"
    );
}

/// A temp dir with `branches` subdirectories and an empty `mnt`.
fn layout(branches: &[&str]) -> (tempfile::TempDir, Vec<PathBuf>, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let paths: Vec<PathBuf> = branches.iter().map(|b| dir.path().join(b)).collect();
    for path in &paths {
        std::fs::create_dir_all(path).unwrap();
    }
    let mount_point = dir.path().join("mnt");
    std::fs::create_dir(&mount_point).unwrap();
    (dir, paths, mount_point)
}

fn refusal(result: Result<impl fmt::Debug, UnionError>) -> String {
    match result {
        Err(error @ UnionError::MountFailed { .. }) => error.to_string(),
        other => panic!("expected MountFailed, got {other:?}"),
    }
}

#[test]
fn branches_are_resolved_and_must_not_overlap() {
    let (dir, branches, mount_point) = layout(&["b1", "b2", "b1/inner"]);
    let target = check_mount_point(Driver::Mergerfs, &mount_point).unwrap();
    let resolved = check_branches(Driver::Mergerfs, &branches[..2], &target).unwrap();
    assert_eq!(resolved[1], dir.path().canonicalize().unwrap().join("b2"));

    let message = refusal(check_branches(Driver::Mergerfs, &branches, &target));
    assert!(message.contains("overlap"), "{message}");
    let twice = [branches[0].clone(), branches[0].clone()];
    assert!(refusal(check_branches(Driver::Aufs, &twice, &target)).contains("overlap"));
    let missing = [dir.path().join("nope")];
    assert!(refusal(check_branches(Driver::Aufs, &missing, &target)).contains("create it"));
    assert!(refusal(check_branches(Driver::Aufs, &[], &target)).contains("no branches"));
}

#[test]
fn the_mount_point_and_branches_stay_apart() {
    let (dir, branches, _) = layout(&["b1", "b1/inside"]);
    let inside_branch = check_mount_point(Driver::Aufs, &branches[1]).unwrap();
    let message = refusal(check_branches(Driver::Aufs, &branches[..1], &inside_branch));
    assert!(message.contains("inside branch"), "{message}");

    let mount_point = dir.path().join("mnt");
    let target = check_mount_point(Driver::Aufs, &mount_point).unwrap();
    // Made after the check, as if it appeared between check and mount.
    std::fs::create_dir(mount_point.join("b2")).unwrap();
    let message = refusal(check_branches(
        Driver::Aufs,
        &[mount_point.join("b2")],
        &target,
    ));
    assert!(message.contains("inside the mount point"), "{message}");
}

#[test]
fn the_mount_point_must_be_an_empty_directory() {
    let (dir, _, mount_point) = layout(&[]);
    std::fs::write(mount_point.join("file"), "x").unwrap();
    let message = refusal(check_mount_point(Driver::Mergerfs, &mount_point));
    assert!(message.contains("not empty"), "{message}");
    let message = refusal(check_mount_point(
        Driver::Mergerfs,
        &dir.path().join("nope"),
    ));
    assert!(message.contains("create the directory"), "{message}");
    let file = mount_point.join("file");
    assert!(refusal(check_mount_point(Driver::Aufs, &file)).contains("not a directory"));
    let message = refusal(check_mount_point(Driver::Aufs, Path::new("/")));
    assert!(message.contains("already mounted"), "{message}");
}

#[test]
fn reads_proc_filesystems() {
    let text = "nodev\tsysfs\nnodev\ttmpfs\n\text4\nnodev\taufs\n";
    assert!(kernel_lists(text, "aufs"));
    assert!(kernel_lists(text, "ext4"));
    assert!(!kernel_lists(text, "overlay"));
    assert!(!kernel_lists("nodev\tfuse.aufs-like\n", "aufs"));
}

#[test]
fn aufs_is_preferred_then_mergerfs() {
    let mut available = Availability {
        aufs: true,
        mergerfs: Some("/usr/bin/mergerfs".into()),
        fuse_device: true,
    };
    assert_eq!(available.preferred(), Some(Driver::Aufs));
    available.aufs = false;
    assert_eq!(available.preferred(), Some(Driver::Mergerfs));
    available.fuse_device = false;
    assert_eq!(available.preferred(), None);
}
