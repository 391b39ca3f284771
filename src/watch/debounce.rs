//! Debouncing as plain data: raw, already-resolved events go in with the
//! time they were seen, ordered [`Change`]s come out when they are due.
//!
//! No I/O and no clock: every call takes `now`, so tests drive it with
//! made-up instants. The watcher thread owns one [`Debouncer`] and asks it
//! for [`Debouncer::next_deadline`] to know how long it may sleep.
//!
//! Rules (the engine relies on them):
//! - a `Write` is due only after the file was closed and then stayed quiet
//!   for its wait; a modification without a close holds it, so a slow
//!   writer yields one `Write`, after its close. The wait adapts: a file
//!   not closed within the last `debounce` (cold) waits only `quick`, so a
//!   single change goes out in tens of milliseconds; each close while it is
//!   warm doubles its wait, up to `debounce`, so a file rewritten again and
//!   again is sent a few times and then once it is quiet, its last version
//!   always. A held file is *probed*
//!   now and then ([`Debouncer::due_probes`]): the watcher asks whether
//!   anyone still has it open for writing, and one nobody holds (a hard
//!   link whose other name is gone) counts as closed;
//! - deleting a path drops its pending `Write`/`DirCreate`;
//! - a rename is due at once; writes and mkdirs pending at or below the old
//!   path are re-keyed to the new one and queued behind the rename;
//! - changes come out in the order they must be applied: each is numbered
//!   when queued, and a due change pulls out any earlier pending change on
//!   a related path (same path, ancestor, descendant) first.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{Change, ChangeKind};

/// The first look at a file held open, then doubling up to the last.
const PROBE_FIRST: Duration = Duration::from_millis(500);
const PROBE_MAX: Duration = Duration::from_secs(30);

/// A cold file's wait after its close: long enough for the rename that
/// an editor's or rsync's save makes right after closing its temporary
/// file to be seen first, short enough to be no delay to a person.
pub const QUICK: Duration = Duration::from_millis(20);

/// Warm files remembered at most; past it, the cold ones are forgotten.
const HEAT_MAX: usize = 4096;

/// An inotify event after the watcher resolved its branch and relative
/// path and paired its rename halves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEvent {
    pub branch: usize,
    pub path: PathBuf,
    pub kind: RawKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawKind {
    /// Content is changing (`IN_MODIFY`, or a new regular file appeared):
    /// hold the file's `Write` until it is closed.
    Modified,
    /// Closed after writing (`IN_CLOSE_WRITE`), or complete when it
    /// appeared (a symlink, a hard link, a file moved in): `Write` once quiet.
    Closed,
    /// Seen by a scan of a new directory: `Write` once quiet (as if just
    /// closed), unless a `Write` is already pending there (then the file's
    /// own events, which know whether it is still open, decide).
    Found,
    Deleted {
        is_dir: bool,
    },
    DirCreated,
    /// Only metadata changed (`IN_ATTRIB`): mode, owner, times.
    Attrib {
        is_dir: bool,
    },
    /// Renamed within the branch from `from` to the event's path.
    Renamed {
        from: PathBuf,
        is_dir: bool,
    },
}

#[derive(Debug)]
struct Entry {
    branch: usize,
    path: PathBuf,
    kind: ChangeKind,
    is_dir: bool,
    /// `None` while a written file is still open: never due by time.
    deadline: Option<Instant>,
}

#[derive(Debug)]
pub struct Debouncer {
    /// The longest wait of a write, and the wait of everything else.
    debounce: Duration,
    /// A cold file's wait (equal to `debounce`: a fixed wait).
    quick: Duration,
    /// Files closed recently: when last, and how many closes in a row
    /// came while the file was warm.
    heat: HashMap<(usize, PathBuf), (Instant, u32)>,
    next_seq: u64,
    /// Pending changes by sequence number: the order they were queued in.
    entries: BTreeMap<u64, Entry>,
    /// Sequence numbers by path; a BTreeMap so a directory's subtree is one
    /// contiguous range (paths order by component).
    by_path: BTreeMap<(usize, PathBuf), Vec<u64>>,
    by_deadline: BTreeSet<(Instant, u64)>,
    /// Held writes to look at again: when, and the interval after that.
    probes: BTreeMap<(usize, PathBuf), (Instant, Duration)>,
}

impl Debouncer {
    /// A debouncer whose every write waits `debounce`.
    pub fn new(debounce: Duration) -> Self {
        Debouncer::adaptive(debounce, debounce)
    }

    /// A debouncer whose writes wait from `quick` (cold files) up to
    /// `debounce` (files written again and again); see the module doc.
    pub fn adaptive(quick: Duration, debounce: Duration) -> Self {
        Debouncer {
            debounce,
            quick: quick.min(debounce),
            heat: HashMap::new(),
            next_seq: 0,
            entries: BTreeMap::new(),
            by_path: BTreeMap::new(),
            by_deadline: BTreeSet::new(),
            probes: BTreeMap::new(),
        }
    }

    /// Number of pending changes.
    pub fn pending(&self) -> usize {
        self.entries.len()
    }

    /// When the earliest pending change becomes due; `None` when nothing is
    /// waiting on time (empty, or only files still open for writing).
    pub fn next_deadline(&self) -> Option<Instant> {
        let due = self.by_deadline.first().map(|&(at, _)| at);
        let probe = self.probes.values().map(|&(at, _)| at).min();
        match (due, probe) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Held writes whose probe is due: the caller looks whether each is
    /// still open for writing and answers with [`Debouncer::probed`].
    pub fn due_probes(&mut self, now: Instant) -> Vec<(usize, PathBuf)> {
        let due: Vec<(usize, PathBuf)> = self
            .probes
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(key, _)| key.clone())
            .collect();
        due.into_iter()
            .filter(|(branch, path)| {
                let held = self.is_held(*branch, path);
                if !held {
                    self.probes.remove(&(*branch, path.clone()));
                }
                held
            })
            .collect()
    }

    /// The answer to a probe: a file nobody writes any more is closed; one
    /// still open is looked at again later.
    pub fn probed(&mut self, branch: usize, path: PathBuf, open_for_writing: bool, now: Instant) {
        let key = (branch, path);
        if !open_for_writing {
            self.probes.remove(&key);
            if self.is_held(key.0, &key.1) {
                let deadline = Some(now + self.debounce);
                self.write(key.0, key.1, deadline);
            }
        } else if let Some((at, interval)) = self.probes.get_mut(&key) {
            *interval = (*interval * 2).min(PROBE_MAX);
            *at = now + *interval;
        }
    }

    /// How long a file closed at `now` waits: `quick` when it is cold,
    /// doubled for each close in a row while it is warm (closed within the
    /// last `debounce`), at most `debounce`.
    fn write_wait(&mut self, branch: usize, path: &Path, now: Instant) -> Duration {
        if self.quick >= self.debounce {
            return self.debounce;
        }
        let key = (branch, path.to_path_buf());
        let closes = match self.heat.get(&key) {
            Some(&(last, closes)) if now.saturating_duration_since(last) <= self.debounce => {
                closes + 1
            }
            _ => 0,
        };
        if self.heat.len() >= HEAT_MAX {
            let debounce = self.debounce;
            self.heat
                .retain(|_, (last, _)| now.saturating_duration_since(*last) <= debounce);
        }
        self.heat.insert(key, (now, closes));
        self.quick
            .saturating_mul(1 << closes.min(16))
            .min(self.debounce)
    }

    /// Whether the last change at `path` is a write held open.
    fn is_held(&self, branch: usize, path: &Path) -> bool {
        self.last_at(branch, path).is_some_and(|seq| {
            let entry = &self.entries[&seq];
            entry.kind == ChangeKind::Write && entry.deadline.is_none()
        })
    }

    /// Starts probing a held write, unless it is probed already.
    fn probe_later(&mut self, branch: usize, path: PathBuf, now: Instant) {
        self.probes
            .entry((branch, path))
            .or_insert((now + PROBE_FIRST, PROBE_FIRST));
    }

    pub fn add_event(&mut self, ev: RawEvent, now: Instant) {
        let RawEvent { branch, path, kind } = ev;
        match kind {
            RawKind::Modified => {
                self.write(branch, path.clone(), None);
                self.probe_later(branch, path, now);
            }
            RawKind::Closed => {
                let wait = self.write_wait(branch, &path, now);
                self.write(branch, path, Some(now + wait));
            }
            RawKind::Found => {
                let pending = self
                    .last_at(branch, &path)
                    .is_some_and(|seq| self.entries[&seq].kind == ChangeKind::Write);
                // Waits as a file just closed does: the directory is
                // watched now, so if its writer is not done, the close to
                // come is seen and sends the last version.
                if !pending {
                    let wait = self.write_wait(branch, &path, now);
                    self.write(branch, path, Some(now + wait));
                }
            }
            RawKind::Deleted { is_dir } => self.delete(branch, path, is_dir, now),
            RawKind::DirCreated => self.dir_created(branch, path, now),
            RawKind::Attrib { is_dir } => self.attrib(branch, path, is_dir, now),
            RawKind::Renamed { from, is_dir } => self.rename(branch, from, path, is_dir, now),
        }
    }

    /// The changes due at `now`, with the earlier changes they depend on.
    pub fn drain_due(&mut self, now: Instant) -> Vec<Change> {
        let due: Vec<u64> = self
            .by_deadline
            .iter()
            .take_while(|&&(at, _)| at <= now)
            .map(|&(_, seq)| seq)
            .collect();
        if due.is_empty() {
            return Vec::new();
        }
        let mut chosen: BTreeSet<u64> = due.iter().copied().collect();
        let mut work = due;
        while let Some(seq) = work.pop() {
            for earlier in self.related_earlier(seq) {
                if chosen.insert(earlier) {
                    work.push(earlier);
                }
            }
        }
        chosen.into_iter().map(|seq| self.take(seq)).collect()
    }

    /// Every pending change, due or not, in order (for a flush or a stop).
    pub fn drain_all(&mut self) -> Vec<Change> {
        let all: Vec<u64> = self.entries.keys().copied().collect();
        all.into_iter().map(|seq| self.take(seq)).collect()
    }

    /// Forgets everything pending (after an overflow the reconcile covers it).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.by_path.clear();
        self.by_deadline.clear();
        self.probes.clear();
    }

    fn write(&mut self, branch: usize, path: PathBuf, deadline: Option<Instant>) {
        if let Some(seq) = self.last_at(branch, &path) {
            match self.entries[&seq].kind {
                // Coalesce: one Write per path, its timer restarted (or held
                // again while the file is being written).
                ChangeKind::Write => return self.set_deadline(seq, deadline),
                // Deleted and written again: the upload replaces the file.
                // An upload records the metadata too.
                ChangeKind::Delete | ChangeKind::Attrib => {
                    self.remove(seq);
                }
                _ => {}
            }
        }
        self.insert(branch, path, ChangeKind::Write, false, deadline);
    }

    fn delete(&mut self, branch: usize, path: PathBuf, is_dir: bool, now: Instant) {
        // What was waiting to be uploaded or created there is moot now.
        for seq in self.subtree(branch, &path) {
            if self.entries[&seq].kind.is_state() {
                self.remove(seq);
            }
        }
        let kind = if is_dir {
            ChangeKind::DirDelete
        } else {
            ChangeKind::Delete
        };
        let deadline = Some(now + self.debounce);
        if let Some(seq) = self.last_at(branch, &path)
            && self.entries[&seq].kind == kind
        {
            return self.set_deadline(seq, deadline);
        }
        self.insert(branch, path, kind, is_dir, deadline);
    }

    fn dir_created(&mut self, branch: usize, path: PathBuf, now: Instant) {
        let deadline = Some(now + self.debounce);
        // A scan may report a directory its IN_CREATE already reported.
        if let Some(seq) = self.last_at(branch, &path)
            && self.entries[&seq].kind == ChangeKind::DirCreate
        {
            return self.set_deadline(seq, deadline);
        }
        self.insert(branch, path, ChangeKind::DirCreate, true, deadline);
    }

    /// A metadata change is moot while the path's upload, mkdir or other
    /// metadata change is pending: that one records the metadata as it is
    /// then.
    fn attrib(&mut self, branch: usize, path: PathBuf, is_dir: bool, now: Instant) {
        if let Some(seq) = self.last_at(branch, &path)
            && self.entries[&seq].kind.is_state()
        {
            return;
        }
        let deadline = Some(now + self.debounce);
        self.insert(branch, path, ChangeKind::Attrib, is_dir, deadline);
    }

    fn rename(&mut self, branch: usize, from: PathBuf, to: PathBuf, is_dir: bool, now: Instant) {
        if from == to {
            return;
        }
        // The target was replaced: its pending upload or mkdir is moot. A
        // pending delete there stays and goes out ahead of the rename.
        for seq in self.subtree(branch, &to) {
            if self.entries[&seq].kind.is_state() {
                self.remove(seq);
            }
        }
        // Uploads and mkdirs pending at or below the old path describe what
        // is there now, so they follow it. Deletes and renames already queued
        // there are operations on the old layout: they stay put, and the
        // ordering rule sends them out before this rename.
        let moving: Vec<u64> = self
            .subtree(branch, &from)
            .into_iter()
            .filter(|seq| self.entries[seq].kind.is_state())
            .collect();
        self.insert(
            branch,
            to.clone(),
            ChangeKind::Rename { from: from.clone() },
            is_dir,
            Some(now),
        );
        // Re-keyed changes are queued behind the rename: the engine moves
        // server-side first, then uploads what changed since.
        for seq in moving {
            let mut entry = self.remove(seq);
            entry.path = rekey(&entry.path, &from, &to);
            let held = entry.deadline.is_none().then(|| entry.path.clone());
            self.push(entry);
            if let Some(path) = held {
                self.probe_later(branch, path, now);
            }
        }
    }

    /// Earlier pending changes that must be applied before `seq`: on the
    /// same path, an ancestor or a descendant (and, for a rename, of its
    /// source). Writes of files still open are never pulled out early.
    fn related_earlier(&self, seq: u64) -> Vec<u64> {
        let entry = &self.entries[&seq];
        let mut paths = vec![entry.path.as_path()];
        if let ChangeKind::Rename { from } = &entry.kind {
            paths.push(from);
        }
        let mut found = Vec::new();
        for path in paths {
            for ancestor in path.ancestors().skip(1) {
                found.extend(self.seqs_at(entry.branch, ancestor));
            }
            found.extend(self.subtree(entry.branch, path));
        }
        found.retain(|&s| s < seq && self.entries[&s].deadline.is_some());
        found
    }

    fn last_at(&self, branch: usize, path: &Path) -> Option<u64> {
        self.seqs_at(branch, path).last().copied()
    }

    fn seqs_at(&self, branch: usize, path: &Path) -> &[u64] {
        self.by_path
            .get(&(branch, path.to_path_buf()))
            .map_or(&[], Vec::as_slice)
    }

    /// Sequence numbers at `path` and below, in queue order.
    fn subtree(&self, branch: usize, path: &Path) -> Vec<u64> {
        let mut seqs: Vec<u64> = self
            .by_path
            .range((branch, path.to_path_buf())..)
            .take_while(|((b, p), _)| *b == branch && p.starts_with(path))
            .flat_map(|(_, seqs)| seqs.iter().copied())
            .collect();
        seqs.sort_unstable();
        seqs
    }

    fn insert(
        &mut self,
        branch: usize,
        path: PathBuf,
        kind: ChangeKind,
        is_dir: bool,
        deadline: Option<Instant>,
    ) {
        self.push(Entry {
            branch,
            path,
            kind,
            is_dir,
            deadline,
        });
    }

    fn push(&mut self, entry: Entry) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.insert_at(seq, entry);
    }

    fn insert_at(&mut self, seq: u64, entry: Entry) {
        let seqs = self
            .by_path
            .entry((entry.branch, entry.path.clone()))
            .or_default();
        let at = seqs.partition_point(|&s| s < seq);
        seqs.insert(at, seq);
        if let Some(at) = entry.deadline {
            self.by_deadline.insert((at, seq));
        }
        self.entries.insert(seq, entry);
    }

    fn remove(&mut self, seq: u64) -> Entry {
        let entry = self.entries.remove(&seq).expect("pending entry");
        let key = (entry.branch, entry.path.clone());
        if let Some(seqs) = self.by_path.get_mut(&key) {
            seqs.retain(|&s| s != seq);
            if seqs.is_empty() {
                self.by_path.remove(&key);
            }
        }
        if let Some(at) = entry.deadline {
            self.by_deadline.remove(&(at, seq));
        } else {
            self.probes.remove(&key);
        }
        entry
    }

    fn set_deadline(&mut self, seq: u64, deadline: Option<Instant>) {
        let entry = self.entries.get_mut(&seq).expect("pending entry");
        if let Some(at) = entry.deadline {
            self.by_deadline.remove(&(at, seq));
        }
        entry.deadline = deadline;
        if let Some(at) = deadline {
            self.by_deadline.insert((at, seq));
            self.probes.remove(&(entry.branch, entry.path.clone()));
        }
    }

    fn take(&mut self, seq: u64) -> Change {
        let entry = self.remove(seq);
        Change {
            branch: entry.branch,
            path: entry.path,
            kind: entry.kind,
            is_dir: entry.is_dir,
        }
    }
}

impl ChangeKind {
    /// A `Write`, `DirCreate` or `Attrib`: it describes what is at its path
    /// now (to upload, create or describe), rather than an operation on the
    /// old layout.
    fn is_state(&self) -> bool {
        matches!(
            self,
            ChangeKind::Write | ChangeKind::DirCreate | ChangeKind::Attrib
        )
    }
}

/// `path` with its leading `from` replaced by `to`.
fn rekey(path: &Path, from: &Path, to: &Path) -> PathBuf {
    match path.strip_prefix(from) {
        Ok(rest) if rest.as_os_str().is_empty() => to.to_path_buf(),
        Ok(rest) => to.join(rest),
        Err(_) => path.to_path_buf(),
    }
}

#[cfg(test)]
mod tests;
