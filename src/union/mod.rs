//! Union filesystem drivers: which one this machine has, and (with the
//! service) how each mounts the branches at one mount point. aufs is used
//! where the kernel lists it; mergerfs (FUSE) otherwise.

use std::path::{Path, PathBuf};

/// A union filesystem msync can mount branches with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
