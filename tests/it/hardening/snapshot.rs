//! "Nothing changed": a record of every path under some roots, with its
//! kind, size, mtime, mode and owner, compared before and after a command.
//!
//! Symlinks are recorded, never followed. A directory's mtime is left out:
//! it only says that entries came and went, and the entries themselves are
//! compared. A few paths are msync's by design and are left out by the
//! caller (see [`Snapshot::of_pool`]).

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::pool::Pool;

pub struct Snapshot {
    roots: Vec<PathBuf>,
    ignored: Vec<PathBuf>,
    entries: BTreeMap<PathBuf, String>,
    /// The install's log when the snapshot was taken: it may only grow.
    log: Option<(PathBuf, Vec<u8>)>,
}

impl Snapshot {
    /// Records `roots` (absent ones as absent), leaving out `ignored`.
    pub fn take(roots: &[&Path], ignored: &[&Path]) -> Snapshot {
        let roots: Vec<PathBuf> = roots.iter().map(|r| r.to_path_buf()).collect();
        let ignored: Vec<PathBuf> = ignored.iter().map(|r| r.to_path_buf()).collect();
        let entries = capture(&roots, &ignored);
        Snapshot {
            roots,
            ignored,
            entries,
            log: None,
        }
    }

    /// The whole sandbox of a pool: its install dir, rclone config, clouds
    /// and mount point. Left out, because a refused `start` writes them on
    /// purpose: `msync.log`, where the background start finds the
    /// service's error (checked to only grow), and `run/msync.pid`, a lock
    /// file whose existence means nothing (see `src/service/pidfile.rs`).
    pub fn of_pool(pool: &Pool) -> Snapshot {
        let log = pool.install.join("msync.log");
        let pid = pool.install.join("run/msync.pid");
        let mut snapshot = Snapshot::take(&[pool.sandbox.path()], &[&log, &pid]);
        snapshot.log = Some((log.clone(), std::fs::read(&log).unwrap_or_default()));
        snapshot
    }

    /// Panics with the differences when anything changed since the
    /// snapshot was taken.
    pub fn assert_unchanged(&self, what: &str) {
        let now = capture(&self.roots, &self.ignored);
        let mut differences = Vec::new();
        for (path, before) in &self.entries {
            match now.get(path) {
                None => differences.push(format!("removed {}: {before}", path.display())),
                Some(after) if after != before => {
                    differences.push(format!("changed {}: {before} -> {after}", path.display()))
                }
                Some(_) => {}
            }
        }
        for (path, after) in &now {
            if !self.entries.contains_key(path) {
                differences.push(format!("added {}: {after}", path.display()));
            }
        }
        if let Some((log, before)) = &self.log {
            let after = std::fs::read(log).unwrap_or_default();
            if !after.starts_with(before) {
                differences.push(format!("{} was rewritten, not appended to", log.display()));
            }
        }
        assert!(
            differences.is_empty(),
            "{what} changed things:\n  {}",
            differences.join("\n  ")
        );
    }
}

fn capture(roots: &[PathBuf], ignored: &[PathBuf]) -> BTreeMap<PathBuf, String> {
    let mut entries = BTreeMap::new();
    for root in roots {
        record(root, ignored, &mut entries);
    }
    entries
}

fn record(path: &Path, ignored: &[PathBuf], entries: &mut BTreeMap<PathBuf, String>) {
    if ignored.iter().any(|i| i == path) {
        return;
    }
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            entries.insert(path.to_path_buf(), "absent".into());
            return;
        }
        Err(err) => panic!("cannot record {}: {err}", path.display()),
    };
    let kind = meta.file_type();
    let what = if kind.is_symlink() {
        format!("symlink -> {}", std::fs::read_link(path).unwrap().display())
    } else if kind.is_dir() {
        "dir".into()
    } else if kind.is_file() {
        format!(
            "file size={} mtime={}.{:09}",
            meta.len(),
            meta.mtime(),
            meta.mtime_nsec()
        )
    } else if kind.is_socket() {
        "socket".into()
    } else {
        "other".into()
    };
    entries.insert(
        path.to_path_buf(),
        format!(
            "{what} mode={:o} owner={}:{}",
            meta.mode() & 0o7777,
            meta.uid(),
            meta.gid()
        ),
    );
    if kind.is_dir() {
        let mut children: Vec<PathBuf> = std::fs::read_dir(path)
            .unwrap_or_else(|err| panic!("cannot list {}: {err}", path.display()))
            .map(|e| e.unwrap().path())
            .collect();
        children.sort();
        for child in children {
            record(&child, ignored, entries);
        }
    }
}

/// Every path below `root` that is a regular file, never following links.
pub fn files_below(root: &Path) -> Vec<PathBuf> {
    let mut entries = BTreeMap::new();
    record(root, &[], &mut entries);
    entries
        .into_iter()
        .filter(|(_, what)| what.starts_with("file "))
        .map(|(path, _)| path)
        .collect()
}
