//! Keeping the set of watches in step with the directory tree: the walk
//! that adds a watch to every directory (and, for a new directory, reports
//! what it already holds), the rescan after an overflow, the watch limit,
//! and branch roots that vanish. Part of the watcher thread's [`Worker`].
//!
//! A new directory is watched first and listed second, so a file made in it
//! before the watch existed is found by the listing and one made after is
//! seen by the watch (a file seen by both is coalesced by the debouncer).

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

use inotify::{WatchDescriptor, WatchMask};
use nix::errno::Errno;

use super::WatchMessage;
use super::debounce::RawKind;
use super::events::Worker;

fn watch_mask() -> WatchMask {
    WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::MODIFY
        | WatchMask::CLOSE_WRITE
        | WatchMask::ATTRIB
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF
        // Never watch through a symlink, only real directories.
        | WatchMask::DONT_FOLLOW
        | WatchMask::ONLYDIR
        // No events for a file after it was unlinked (a deleted temp file
        // still being written would otherwise come back as a Write).
        | WatchMask::EXCL_UNLINK
}

impl Worker {
    /// The initial walk. A root that cannot be watched fails the start
    /// (except for the watch limit, which is reported and tolerated).
    pub fn watch_all(&mut self) -> Result<(), (PathBuf, io::Error)> {
        let now = Instant::now();
        for branch in self.branches() {
            let root = self.abs(branch, Path::new(""));
            match self.add_watch(branch, Path::new(""), &root) {
                Ok(_) => self.add_tree(branch, PathBuf::new(), false, now, None),
                Err(e) if e.raw_os_error() == Some(Errno::ENOSPC as i32) => {
                    self.watch_failed(branch, Path::new(""), &root, &e)
                }
                Err(e) => return Err((root, e)),
            }
        }
        Ok(())
    }

    /// Watches `dir` and every directory below it. With `report`, what is
    /// found below is reported as new (DirCreate, Write). `seen` collects
    /// the descriptors in use, for the sweep after an overflow.
    pub(super) fn add_tree(
        &mut self,
        branch: usize,
        dir: PathBuf,
        report: bool,
        now: Instant,
        mut seen: Option<&mut HashSet<WatchDescriptor>>,
    ) {
        let mut stack = vec![dir];
        while let Some(dir) = stack.pop() {
            let abs = self.abs(branch, &dir);
            match self.add_watch(branch, &dir, &abs) {
                Ok(wd) => {
                    if let Some(seen) = seen.as_deref_mut() {
                        seen.insert(wd);
                    }
                }
                Err(e) => {
                    self.watch_failed(branch, &dir, &abs, &e);
                    // Over the watch limit, a new directory's contents are
                    // still reported once, so they reach the cloud.
                    let limit = e.raw_os_error() == Some(Errno::ENOSPC as i32);
                    if !(limit && report) {
                        continue;
                    }
                }
            }
            let entries = match std::fs::read_dir(&abs) {
                Ok(entries) => entries,
                // Removed meanwhile: its IN_DELETE follows.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    self.error(format!(
                        "cannot list {}: {e}; changes there are not seen until the next reconcile",
                        abs.display()
                    ));
                    continue;
                }
            };
            for entry in entries.flatten() {
                let child = dir.join(entry.file_name());
                if (self.ignore)(&child) {
                    continue;
                }
                let Ok(file_type) = entry.file_type() else {
                    continue;
                };
                if file_type.is_dir() {
                    if report {
                        self.raw(branch, child.clone(), RawKind::DirCreated, now);
                    }
                    stack.push(child);
                } else if report {
                    self.raw(branch, child, RawKind::Found, now);
                }
            }
        }
    }

    pub(super) fn add_watch(
        &mut self,
        branch: usize,
        dir: &Path,
        abs: &Path,
    ) -> io::Result<WatchDescriptor> {
        let wd = self.inotify.watches().add(abs, watch_mask())?;
        if let Some(displaced) = self.table.insert(wd.clone(), branch, dir.to_path_buf()) {
            // A stale watch we still had at this path: nothing can tell us
            // where its directory went, so stop following it.
            let _ = self.inotify.watches().remove(displaced);
        }
        self.update_count();
        Ok(wd)
    }

    pub(super) fn watch_failed(
        &mut self,
        branch: usize,
        dir: &Path,
        abs: &Path,
        error: &io::Error,
    ) {
        match Errno::from_raw(error.raw_os_error().unwrap_or(0)) {
            Errno::ENOSPC => {
                if self.limit_reported.insert(branch) {
                    self.send(WatchMessage::WatchLimit {
                        branch,
                        path: abs.to_path_buf(),
                    });
                }
            }
            Errno::ENOENT | Errno::ENOTDIR if dir.as_os_str().is_empty() => self.root_gone(branch),
            // Removed or replaced meanwhile: its own event follows.
            Errno::ENOENT | Errno::ENOTDIR => {}
            _ => self.error(format!(
                "cannot watch {}: {error}; changes there are not seen until the next reconcile",
                abs.display()
            )),
        }
    }

    /// The kernel dropped events: re-walk every root (adding what is
    /// missing, dropping watches no walk reached) and ask for a reconcile.
    pub(super) fn overflow(&mut self, now: Instant) {
        self.debouncer.clear();
        self.pairer.take_all();
        let mut seen = HashSet::new();
        for branch in self.branches() {
            self.add_tree(branch, PathBuf::new(), false, now, Some(&mut seen));
        }
        for wd in self.table.wds() {
            if !seen.contains(&wd) {
                self.table.remove_wd(&wd);
                let _ = self.inotify.watches().remove(wd);
            }
        }
        self.update_count();
        self.send(WatchMessage::Overflow);
    }

    /// IN_IGNORED: the kernel dropped a watch (directory deleted, unmounted).
    pub(super) fn watch_gone(&mut self, wd: &WatchDescriptor, branch: usize, dir: &Path) {
        self.table.remove_wd(wd);
        self.update_count();
        if dir.as_os_str().is_empty() {
            self.root_gone(branch);
        }
    }

    pub(super) fn root_gone(&mut self, branch: usize) {
        let root = self.abs(branch, Path::new(""));
        self.error(format!(
            "branch {branch} root {} is gone (deleted or unmounted) and is no longer watched: \
             restore it and restart msync",
            root.display()
        ));
    }

    pub(super) fn root_moved(&mut self, branch: usize) {
        // Its watches follow the directory to wherever it went: drop them,
        // or they would report paths that are no longer in the branch.
        for wd in self.table.remove_subtree(branch, Path::new("")) {
            let _ = self.inotify.watches().remove(wd);
        }
        self.update_count();
        let root = self.abs(branch, Path::new(""));
        self.error(format!(
            "branch {branch} root {} was moved away and is no longer watched: \
             move it back and restart msync",
            root.display()
        ));
    }
}
