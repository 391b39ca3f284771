//! Turning inotify events into [`RawEvent`]s: the state the watcher thread
//! owns (fd, watch table, rename pairing, debouncer) and the policy for each
//! kind of event. Runs only on the `msync-watch` thread (and in
//! [`super::Watcher::start`] before the thread exists); the walks that keep
//! the watches in step with the tree are in [`super::scan`].

use std::collections::HashSet;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use inotify::{EventMask, EventOwned, Inotify, WatchDescriptor};

use super::debounce::{Debouncer, RawEvent, RawKind};
use super::open_files::{FileId, file_id, open_for_writing};
use super::pairing::{MovedFrom, Pairer};
use super::table::WatchTable;
use super::{BranchRoot, IgnoreFn, WatchConfig, WatchMessage};

/// How long a `MOVED_FROM` waits for its `MOVED_TO` before it counts as a
/// move out of the tree. The kernel queues both within one rename(2), so
/// this only has to cover a read that ended between them.
const PAIRING_GRACE: Duration = Duration::from_millis(100);

/// Reads per wake-up before the loop looks at control messages and
/// deadlines again, so a flood of events cannot starve them.
const READS_PER_TICK: usize = 16;
/// Reads a flush does at most before draining: enough for any burst that
/// finished before the flush was asked for.
const READS_PER_FLUSH: usize = 1024;

pub struct Worker {
    pub(super) inotify: Inotify,
    roots: Vec<BranchRoot>,
    pub(super) ignore: IgnoreFn,
    pub(super) table: WatchTable<WatchDescriptor>,
    pub(super) pairer: Pairer,
    pub(super) debouncer: Debouncer,
    sink: Sender<WatchMessage>,
    /// False once the receiver is gone: the thread then ends.
    listening: bool,
    /// Branches that already got a `WatchLimit` message.
    pub(super) limit_reported: HashSet<usize>,
    watches: Arc<AtomicUsize>,
    buffer: Vec<u8>,
}

impl Worker {
    pub fn new(
        inotify: Inotify,
        roots: Vec<BranchRoot>,
        config: WatchConfig,
        sink: Sender<WatchMessage>,
        watches: Arc<AtomicUsize>,
    ) -> Worker {
        Worker {
            inotify,
            roots,
            ignore: config.ignore,
            table: WatchTable::default(),
            pairer: Pairer::default(),
            debouncer: Debouncer::adaptive(config.quick, config.debounce),
            sink,
            listening: true,
            limit_reported: HashSet::new(),
            watches,
            buffer: vec![0; 64 * 1024],
        }
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.inotify.as_fd()
    }

    pub fn listened(&self) -> bool {
        self.listening
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        match (self.debouncer.next_deadline(), self.pairer.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn error(&mut self, text: String) {
        self.send(WatchMessage::Error(text));
    }

    /// Handles what the kernel has queued, a bounded number of reads.
    pub fn read_available(&mut self) {
        self.read(READS_PER_TICK);
    }

    /// Everything queued so far, every held rename half decided, every
    /// pending change sent.
    pub fn flush(&mut self) {
        self.read(READS_PER_FLUSH);
        let now = Instant::now();
        for from in self.pairer.take_all() {
            self.moved_out(from, now);
        }
        let changes = self.debouncer.drain_all();
        if !changes.is_empty() {
            self.send(WatchMessage::Changes(changes));
        }
    }

    /// Decides expired rename halves, probes files held open, and sends
    /// the changes due at `now`.
    pub fn tick(&mut self, now: Instant) {
        for from in self.pairer.take_expired(now) {
            self.moved_out(from, now);
        }
        self.probe_held(now);
        let changes = self.debouncer.drain_due(now);
        if !changes.is_empty() {
            self.send(WatchMessage::Changes(changes));
        }
    }

    /// Files held since they appeared that went silent: each one nobody
    /// has open for writing any more is complete (see [`super::open_files`]).
    fn probe_held(&mut self, now: Instant) {
        let due = self.debouncer.due_probes(now);
        if due.is_empty() {
            return;
        }
        let ids: Vec<Option<FileId>> = due
            .iter()
            .map(|(branch, path)| file_id(&self.abs(*branch, path)))
            .collect();
        let writing = open_for_writing(&ids.iter().flatten().copied().collect());
        for ((branch, path), id) in due.into_iter().zip(ids) {
            let open = match id {
                Some(id) => writing.contains(&id),
                // Gone: its delete follows; held as it is, nothing is
                // lost. Anything else that is not a regular file (a
                // symlink tar touched after making it) is never written.
                None => std::fs::symlink_metadata(self.abs(branch, &path)).is_err(),
            };
            self.debouncer.probed(branch, path, open, now);
        }
    }

    fn read(&mut self, max_reads: usize) {
        for _ in 0..max_reads {
            let events: Vec<EventOwned> = match self.inotify.read_events(&mut self.buffer) {
                Ok(events) => events.map(|e| e.to_owned()).collect(),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    self.error(format!(
                        "cannot read inotify events: {e}; restart msync if changes stop being seen"
                    ));
                    return;
                }
            };
            let now = Instant::now();
            for event in events {
                self.handle(event, now);
            }
        }
    }

    fn handle(&mut self, event: EventOwned, now: Instant) {
        let mask = event.mask;
        if mask.contains(EventMask::Q_OVERFLOW) {
            return self.overflow(now);
        }
        // Events of a watch already dropped (moved out, removed) are stale.
        let Some((branch, dir)) = self.table.get(&event.wd).cloned() else {
            return;
        };
        if mask.contains(EventMask::IGNORED) {
            return self.watch_gone(&event.wd, branch, &dir);
        }
        if mask.contains(EventMask::MOVE_SELF) {
            // A subdirectory's move is handled through its parent's
            // MOVED_FROM/MOVED_TO; only a root has no watched parent.
            if dir.as_os_str().is_empty() {
                self.root_moved(branch);
            }
            return;
        }
        // DELETE_SELF and UNMOUNT are followed by IGNORED, handled above.
        let Some(name) = event.name else {
            return;
        };
        let path = dir.join(name);
        let is_dir = mask.contains(EventMask::ISDIR);

        if mask.contains(EventMask::MOVED_TO)
            && let Some(from) = self.pairer.moved_to(event.cookie)
        {
            self.settle_related(branch, &path, now);
            return self.renamed(from, branch, path, is_dir, now);
        }
        self.settle_related(branch, &path, now);
        // Settling may have unwatched the directory this came from (it was
        // moved out of the tree): the event is about a place we left.
        if self.table.get(&event.wd) != Some(&(branch, dir)) {
            return;
        }
        if (self.ignore)(&path) {
            return;
        }

        if mask.contains(EventMask::CREATE) {
            if is_dir {
                self.moved_in(branch, path, true, now);
            } else {
                let kind = self.created_kind(branch, &path);
                self.raw(branch, path, kind, now);
            }
        } else if mask.contains(EventMask::MODIFY) {
            self.raw(branch, path, RawKind::Modified, now);
        } else if mask.contains(EventMask::CLOSE_WRITE) {
            self.raw(branch, path, RawKind::Closed, now);
        } else if mask.contains(EventMask::ATTRIB) {
            self.raw(branch, path, RawKind::Attrib { is_dir }, now);
        } else if mask.contains(EventMask::DELETE) {
            if is_dir {
                // The kernel already dropped those watches; IGNORED follows.
                self.table.remove_subtree(branch, &path);
                self.update_count();
            }
            self.raw(branch, path, RawKind::Deleted { is_dir }, now);
        } else if mask.contains(EventMask::MOVED_FROM) {
            self.pairer.moved_from(MovedFrom {
                cookie: event.cookie,
                branch,
                path,
                is_dir,
                deadline: now + PAIRING_GRACE,
            });
        } else if mask.contains(EventMask::MOVED_TO) {
            // No MOVED_FROM with this cookie: it came from outside the tree.
            self.moved_in(branch, path, is_dir, now);
        }
    }

    /// A new regular file is still being written until its close; a
    /// symlink, special file or hard link is complete as it appears.
    fn created_kind(&self, branch: usize, path: &Path) -> RawKind {
        match std::fs::symlink_metadata(self.abs(branch, path)) {
            Ok(meta) if meta.file_type().is_file() && meta.nlink() == 1 => RawKind::Modified,
            Ok(_) => RawKind::Closed,
            // Gone already: its IN_DELETE follows.
            Err(_) => RawKind::Modified,
        }
    }

    /// Decides held move-outs that an event at `path` must not overtake.
    fn settle_related(&mut self, branch: usize, path: &Path, now: Instant) {
        for from in self.pairer.take_related(branch, path) {
            self.moved_out(from, now);
        }
    }

    fn renamed(
        &mut self,
        from: MovedFrom,
        branch: usize,
        path: PathBuf,
        is_dir: bool,
        now: Instant,
    ) {
        let to_ignored = (self.ignore)(&path);
        if to_ignored || from.branch != branch {
            // Out of this branch's view: a delete here, maybe a create there.
            self.moved_out(from, now);
            if !to_ignored {
                self.moved_in(branch, path, is_dir, now);
            }
            return;
        }
        if is_dir {
            self.table.rename_subtree(branch, &from.path, &path);
        }
        let kind = RawKind::Renamed {
            from: from.path,
            is_dir,
        };
        self.raw(branch, path, kind, now);
    }

    /// Something left the tree: delete it, and stop following a directory
    /// (its watches would otherwise report from outside the tree).
    fn moved_out(&mut self, from: MovedFrom, now: Instant) {
        if from.is_dir {
            for wd in self.table.remove_subtree(from.branch, &from.path) {
                // Fails only if the kernel dropped it already.
                let _ = self.inotify.watches().remove(wd);
            }
            self.update_count();
        }
        let kind = RawKind::Deleted {
            is_dir: from.is_dir,
        };
        self.raw(from.branch, from.path, kind, now);
    }

    /// Something appeared complete: a file is a Write; a directory is a
    /// DirCreate, then watched and scanned.
    fn moved_in(&mut self, branch: usize, path: PathBuf, is_dir: bool, now: Instant) {
        if is_dir {
            self.raw(branch, path.clone(), RawKind::DirCreated, now);
            self.add_tree(branch, path, true, now, None);
        } else {
            self.raw(branch, path, RawKind::Closed, now);
        }
    }

    pub(super) fn raw(&mut self, branch: usize, path: PathBuf, kind: RawKind, now: Instant) {
        self.debouncer
            .add_event(RawEvent { branch, path, kind }, now);
    }

    pub(super) fn branches(&self) -> Vec<usize> {
        self.roots.iter().map(|r| r.index).collect()
    }

    pub(super) fn abs(&self, branch: usize, path: &Path) -> PathBuf {
        let root = self
            .roots
            .iter()
            .find(|r| r.index == branch)
            .expect("branch index from our own table");
        if path.as_os_str().is_empty() {
            root.path.clone()
        } else {
            root.path.join(path)
        }
    }

    pub(super) fn update_count(&self) {
        self.watches.store(self.table.len(), Ordering::Relaxed);
    }

    pub(super) fn send(&mut self, message: WatchMessage) {
        if self.sink.send(message).is_err() {
            self.listening = false;
        }
    }
}
