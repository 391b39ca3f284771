//! The per-branch table of paths whose remote state must change, as plain
//! data: what each change on disk asks of the remote, coalesced to the
//! latest wanted state per path, with each entry's attempts, next try and
//! last error. No I/O and no clock: every call that needs the time takes
//! `now`, so tests drive it with made-up instants.
//!
//! The path, not a queue, is the unit of work. An entry is ready when its
//! backoff has passed and no earlier entry on a related path (the same
//! path, an ancestor or a descendant, on either side of a move) is still
//! pending: order is kept only where it matters (a move after the writes
//! before it, a directory before its children, a directory delete after
//! them). Everything else runs in any order, in parallel, so one failing
//! path holds up only the paths that depend on it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::failure::Failure;
use crate::watch::{Change, ChangeKind};

/// One thing to do on a branch's remote. Paths are relative to the branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Copy the local file (or directory tree) to the remote.
    Upload(PathBuf),
    /// Delete a file on the remote (into the trash).
    Delete(PathBuf),
    /// Delete a file on the remote for good: it moved to another branch,
    /// so its data lives on there, and the trash must not keep the room
    /// the move was to free.
    Discard(PathBuf),
    /// Delete a directory and everything under it on the remote.
    DeleteDir(PathBuf),
    /// Create a directory on the remote (so empty directories replicate).
    MakeDir(PathBuf),
    /// Record the path's metadata (mode, owner, times) in the remote's
    /// index; no byte of the file is sent again.
    Describe(PathBuf),
    /// Move server-side; no bytes are transferred again.
    Move {
        from: PathBuf,
        to: PathBuf,
        is_dir: bool,
    },
}

impl Op {
    /// The operation a watched change asks for.
    pub fn for_change(change: &Change) -> Op {
        let path = change.path.clone();
        match &change.kind {
            ChangeKind::Write => Op::Upload(path),
            ChangeKind::Delete => Op::Delete(path),
            ChangeKind::DirCreate => Op::MakeDir(path),
            ChangeKind::DirDelete => Op::DeleteDir(path),
            ChangeKind::Attrib => Op::Describe(path),
            ChangeKind::Rename { from } => Op::Move {
                from: from.clone(),
                to: path,
                is_dir: change.is_dir,
            },
        }
    }

    /// The paths the operation touches: one, or both sides of a move.
    pub fn paths(&self) -> Vec<&Path> {
        match self {
            Op::Upload(p)
            | Op::Delete(p)
            | Op::Discard(p)
            | Op::DeleteDir(p)
            | Op::MakeDir(p)
            | Op::Describe(p) => {
                vec![p]
            }
            Op::Move { from, to, .. } => vec![from, to],
        }
    }

    /// The path whose state this operation sets (a move's destination).
    pub fn path(&self) -> &Path {
        match self {
            Op::Upload(p)
            | Op::Delete(p)
            | Op::Discard(p)
            | Op::DeleteDir(p)
            | Op::MakeDir(p)
            | Op::Describe(p) => p,
            Op::Move { to, .. } => to,
        }
    }

    /// Whether carrying it out involves the remote (a `Describe` only
    /// queues a record of the index).
    pub fn asks_the_remote(&self) -> bool {
        !matches!(self, Op::Describe(_))
    }

    /// Whether carrying it out records `path`'s metadata in the index.
    fn records_metadata_of(&self, path: &Path) -> bool {
        match self {
            Op::Upload(p) | Op::MakeDir(p) | Op::Describe(p) => p == path,
            _ => false,
        }
    }

    /// Whether it sends file content (what a full remote cannot take).
    pub fn sends_bytes(&self) -> bool {
        matches!(self, Op::Upload(_))
    }
}

/// One entry of the table.
#[derive(Debug, Clone)]
struct Entry {
    op: Op,
    /// For an upload: the file's size when it was queued.
    bytes: u64,
    attempts: u32,
    next_try: Option<Instant>,
    last_error: Option<String>,
    running: bool,
    /// Failed inside a batch: goes on its own from now on, so one bad file
    /// is told apart from the rest.
    solo: bool,
    /// Waits for room on the remote (see [`PathTable::postpone`]).
    waits_for_room: bool,
}

impl Entry {
    fn new(op: Op, bytes: u64) -> Entry {
        Entry {
            op,
            bytes,
            attempts: 0,
            next_try: None,
            last_error: None,
            running: false,
            solo: false,
            waits_for_room: false,
        }
    }
}

/// A path that is not retried until it changes again.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stuck {
    reason: String,
    attempts: u32,
    /// Skipped by design (a FIFO, a socket), not a failure.
    skipped: bool,
}

/// Why a path is not in step with the remote, as `status` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PathClass {
    /// A transient failure: tried again with backoff.
    Retrying,
    /// A permanent failure: not tried again until the path changes.
    Failed,
    /// Never sent, by design (a FIFO, a socket, a device).
    Skipped,
}

impl PathClass {
    pub fn name(self) -> &'static str {
        match self {
            PathClass::Retrying => "retrying",
            PathClass::Failed => "failed",
            PathClass::Skipped => "skipped",
        }
    }
}

/// How `status` shows a path that is not in step with the remote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailingPath {
    pub path: String,
    pub class: PathClass,
    pub reason: String,
    pub attempts: u32,
    /// Seconds until the next try, for `retrying`.
    pub next_try_secs: Option<u64>,
}

/// Entries [`PathTable::take`] looks through past the first ready one for
/// uploads to batch, and further once it found some.
const LOOKAHEAD: usize = 256;
const SCAN_WINDOW: usize = 4096;

/// Work the scheduler hands out: entries by sequence number.
pub type Taken = Vec<(u64, Op)>;

/// The entries a reconcile took off the table, kept whole so they go back
/// as they were if it does not complete.
#[derive(Debug, Default)]
pub struct Covered(Vec<(u64, Entry)>);

impl Covered {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Bytes of the uploads among them.
    pub fn bytes(&self) -> u64 {
        self.0.iter().map(|(_, e)| e.bytes).sum()
    }
}

/// The table; see the module documentation.
#[derive(Debug, Default)]
pub struct PathTable {
    next_seq: u64,
    entries: BTreeMap<u64, Entry>,
    /// Sequence numbers by path (both sides of a move), so coalescing
    /// looks at related entries only: a directory's subtree is one range.
    by_path: BTreeMap<PathBuf, BTreeSet<u64>>,
    stuck: BTreeMap<PathBuf, Stuck>,
    /// Entries running, and entries retrying after a failure: kept as
    /// counts, since the scheduler asks on every turn.
    running: usize,
    retrying: usize,
    /// Uploads in the table, and their bytes.
    uploads: usize,
    pending_bytes: u64,
}

impl PathTable {
    /// Entries waiting or running.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries being carried out now.
    pub fn running(&self) -> usize {
        self.running
    }

    /// Drops a waiting (not running) upload of `path`, if it is the last
    /// work queued on that very path. Work queued since on its directory
    /// (its metadata, another file's upload) does not keep it: the file is
    /// gone from here whatever that work does.
    pub fn drop_waiting_upload(&mut self, path: &Path) {
        let last = self
            .by_path
            .get(path)
            .and_then(|seqs| seqs.iter().copied().max());
        if let Some(last) = last
            && !self.entries[&last].running
            && self.entries[&last].op == Op::Upload(path.to_path_buf())
        {
            self.remove(last);
        }
    }

    /// The paths of every upload waiting (not running).
    pub fn upload_paths(&self) -> Vec<PathBuf> {
        self.entries
            .values()
            .filter(|e| !e.running && e.op.sends_bytes())
            .map(|e| e.op.path().to_path_buf())
            .collect()
    }

    /// Whether any upload waits or runs.
    pub fn has_uploads(&self) -> bool {
        self.uploads > 0
    }

    /// Bytes the uploads in the table will send, as their files were sized
    /// when queued.
    pub fn pending_bytes(&self) -> u64 {
        self.pending_bytes
    }

    /// Whether any path is retrying, failed or skipped.
    pub fn has_failing(&self) -> bool {
        self.retrying > 0 || !self.stuck.is_empty()
    }

    /// Whether any path is retrying after a failure of its own.
    pub fn has_retrying(&self) -> bool {
        self.retrying > 0
    }

    fn set_running(&mut self, seq: u64, running: bool) {
        if let Some(entry) = self.entries.get_mut(&seq)
            && entry.running != running
        {
            entry.running = running;
            if running {
                self.running += 1;
            } else {
                self.running -= 1;
            }
        }
    }

    /// Adds what a change asks for (see [`Self::push_sized`]).
    pub fn push(&mut self, op: Op) {
        self.push_sized(op, 0);
    }

    /// Adds what a change asks for, with the size of an upload's file,
    /// dropping work it makes useless: a second upload of a path already
    /// waiting for one, uploads and mkdirs of a path now deleted, a delete
    /// of a path already waiting to be discarded. Work already running is
    /// never dropped, and coalescing never reaches back past a move or a
    /// delete on a related path, whose meaning depends on what came before
    /// it.
    pub fn push_sized(&mut self, op: Op, bytes: u64) {
        self.unstick(&op);
        let latest = self
            .latest_related(op.path())
            .filter(|seq| !self.entries[seq].running);
        match &op {
            Op::Upload(_) | Op::MakeDir(_) | Op::Describe(_) => {
                if let Some(last) = latest
                    && matches!(op, Op::Describe(_))
                    && self.entries[&last].op.records_metadata_of(op.path())
                {
                    // The work waiting there records the metadata anyway.
                    return;
                }
                if let Some(last) = latest
                    && self.entries[&last].op == op
                {
                    let entry = self.entries.get_mut(&last).expect("entry in the table");
                    self.pending_bytes = self.pending_bytes - entry.bytes + bytes;
                    entry.bytes = bytes;
                    if entry.waits_for_room {
                        // Tried again now: the one that found no room was
                        // handed over to be moved, and this change takes
                        // its place there (the engine forgets the first).
                        entry.waits_for_room = false;
                        entry.next_try = None;
                    }
                    return;
                }
            }
            Op::Delete(path) | Op::Discard(path) => {
                if let Some(last) = latest {
                    let earlier = &self.entries[&last].op;
                    let discard = matches!(op, Op::Discard(_));
                    if !discard && *earlier == Op::Discard(path.clone()) {
                        return;
                    }
                    // A discard also stands for a delete queued before it:
                    // the data lives on elsewhere.
                    let superseded = *earlier == Op::Upload(path.clone())
                        || (discard && *earlier == Op::Delete(path.clone()));
                    if superseded {
                        self.remove(last);
                    }
                }
            }
            Op::DeleteDir(dir) => self.drop_trailing_state_under(dir),
            Op::Move { .. } => {}
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let bytes = if op.sends_bytes() { bytes } else { 0 };
        self.insert(seq, Entry::new(op, bytes));
    }

    /// Takes the next unit of work at `now`: every ready upload when there
    /// are at least `burst` of them (up to `batch_max`, one rclone job with
    /// parallel transfers), else the first ready entry. `allow` limits what
    /// may be taken (only what sends no bytes while the remote is full).
    /// The entries taken are marked running.
    pub fn take(
        &mut self,
        now: Instant,
        burst: usize,
        batch_max: usize,
        allow: impl Fn(&Op) -> bool,
    ) -> Taken {
        let mut first = None;
        let mut uploads = Vec::new();
        let mut blocked: BTreeSet<&Path> = BTreeSet::new();
        let mut first_at = 0;
        for (scanned, (&seq, entry)) in self.entries.iter().enumerate() {
            // Once something is ready, look only so far for uploads to go
            // with it: a huge table is not scanned whole on every turn.
            let window = if uploads.is_empty() {
                LOOKAHEAD
            } else {
                SCAN_WINDOW.max(batch_max)
            };
            if first.is_some() && scanned >= first_at + window {
                break;
            }
            let paths = entry.op.paths();
            let free = paths.iter().all(|p| !is_related_to_any(&blocked, p));
            let ready = free
                && !entry.running
                && entry.next_try.is_none_or(|t| t <= now)
                && allow(&entry.op);
            if ready {
                if first.is_none() {
                    first = Some(seq);
                    first_at = scanned;
                }
                if matches!(entry.op, Op::Upload(_)) && !entry.solo {
                    uploads.push(seq);
                    if uploads.len() >= batch_max {
                        break;
                    }
                }
            }
            blocked.extend(paths);
        }
        let chosen = if uploads.len() >= burst.max(2) {
            uploads
        } else {
            first.into_iter().collect()
        };
        chosen
            .into_iter()
            .map(|seq| {
                self.set_running(seq, true);
                (seq, self.entries[&seq].op.clone())
            })
            .collect()
    }

    /// Takes every entry not running (a reconcile covers them), in order,
    /// for [`Self::restore`] should the reconcile not complete.
    pub fn take_idle(&mut self) -> Covered {
        let idle: Vec<u64> = self
            .entries
            .iter()
            .filter(|(_, e)| !e.running)
            .map(|(&seq, _)| seq)
            .collect();
        Covered(
            idle.into_iter()
                .map(|seq| (seq, self.remove(seq)))
                .collect(),
        )
    }

    /// Puts entries taken by [`Self::take_idle`] back, in their places.
    pub fn restore(&mut self, covered: Covered) {
        for (seq, entry) in covered.0 {
            self.insert(seq, entry);
        }
    }

    /// The entry is done; returns the bytes an upload sent.
    pub fn succeeded(&mut self, seq: u64) -> u64 {
        if self.entries.contains_key(&seq) {
            self.remove(seq).bytes
        } else {
            0
        }
    }

    /// The size an upload was queued with (0 for anything else).
    pub fn bytes_of(&self, seq: u64) -> u64 {
        self.entries.get(&seq).map_or(0, |e| e.bytes)
    }

    /// The entry cannot go now for want of room on the remote: it waits
    /// until `until` (or until it is discarded, having moved to another
    /// branch), with `reason` shown, and counts no attempt against it.
    pub fn postpone(&mut self, seq: u64, until: Instant, reason: &str) {
        self.set_running(seq, false);
        if let Some(entry) = self.entries.get_mut(&seq) {
            entry.next_try = Some(until);
            entry.waits_for_room = true;
            if entry.last_error.replace(reason.to_owned()).is_none() {
                self.retrying += 1;
            }
        }
    }

    /// Room was made: what waits for it is ready again.
    pub fn retry_postponed(&mut self) {
        for entry in self.entries.values_mut() {
            if entry.waits_for_room && !entry.running {
                entry.waits_for_room = false;
                entry.next_try = None;
            }
        }
    }

    /// The entry did not complete for a reason of its own path: a
    /// transient failure is retried with backoff, a permanent one (or a
    /// skip) leaves the table and is listed until the path changes.
    pub fn failed(&mut self, seq: u64, failure: &Failure, now: Instant, max_backoff: Duration) {
        if !self.entries.contains_key(&seq) {
            return;
        }
        self.set_running(seq, false);
        let entry = self.entries.get_mut(&seq).expect("entry in the table");
        entry.attempts += 1;
        let (permanent, skipped) = match failure {
            Failure::Path { permanent, .. } => (*permanent, false),
            Failure::Skipped(_) => (true, true),
            _ => (false, false),
        };
        if permanent {
            let entry = self.remove(seq);
            self.stuck.insert(
                entry.op.path().to_path_buf(),
                Stuck {
                    reason: failure.message().to_owned(),
                    attempts: entry.attempts,
                    skipped,
                },
            );
            return;
        }
        entry.next_try = Some(now + backoff(entry.attempts, max_backoff));
        if entry
            .last_error
            .replace(failure.message().to_owned())
            .is_none()
        {
            self.retrying += 1;
        }
    }

    /// The entry failed inside a batch: it goes again at once, on its own.
    pub fn split(&mut self, seq: u64) {
        self.set_running(seq, false);
        if let Some(entry) = self.entries.get_mut(&seq) {
            entry.solo = true;
        }
    }

    /// The entry did not run to the end for no fault of its path (the
    /// remote is away, the work was cancelled): ready again, no penalty.
    pub fn release(&mut self, seq: u64) {
        self.set_running(seq, false);
    }

    /// When the earliest entry in backoff is ready again.
    pub fn next_try(&self) -> Option<Instant> {
        self.entries
            .values()
            .filter(|e| !e.running)
            .filter_map(|e| e.next_try)
            .min()
    }

    /// Paths not in step with the remote, for `status`: those retrying,
    /// failed and skipped.
    pub fn failing(&self, now: Instant) -> Vec<FailingPath> {
        let retrying = self.entries.values().filter_map(|e| {
            let reason = e.last_error.clone()?;
            Some(FailingPath {
                path: e.op.path().to_string_lossy().into_owned(),
                class: PathClass::Retrying,
                reason,
                attempts: e.attempts,
                next_try_secs: e
                    .next_try
                    .map(|t| t.saturating_duration_since(now).as_secs()),
            })
        });
        let stuck = self.stuck.iter().map(|(path, s)| FailingPath {
            path: path.to_string_lossy().into_owned(),
            class: if s.skipped {
                PathClass::Skipped
            } else {
                PathClass::Failed
            },
            reason: s.reason.clone(),
            attempts: s.attempts,
            next_try_secs: None,
        });
        retrying.chain(stuck).collect()
    }

    /// Forgets the failures a reconcile has just made moot.
    pub fn clear_stuck(&mut self) {
        self.stuck.retain(|_, s| s.skipped);
    }

    /// A new change on a path clears its record of failure: it is tried
    /// again as it now is.
    fn unstick(&mut self, op: &Op) {
        for path in op.paths() {
            let under: Vec<PathBuf> = self
                .stuck
                .range(path.to_path_buf()..)
                .take_while(|(p, _)| p.starts_with(path))
                .map(|(p, _)| p.clone())
                .collect();
            for p in under {
                self.stuck.remove(&p);
            }
        }
    }

    /// The latest entry on `path`, an ancestor or a descendant.
    fn latest_related(&self, path: &Path) -> Option<u64> {
        let ancestors = path
            .ancestors()
            .filter_map(|a| self.by_path.get(a))
            .filter_map(|seqs| seqs.last().copied());
        let below = self
            .by_path
            .range(path.to_path_buf()..)
            .take_while(|(p, _)| p.starts_with(path))
            .filter_map(|(_, seqs)| seqs.last().copied());
        ancestors.chain(below).max()
    }

    /// Drops uploads and mkdirs at or below `dir` queued after the last
    /// entry there that they may depend on (a move, a delete, anything
    /// running).
    fn drop_trailing_state_under(&mut self, dir: &Path) {
        let mut related: Vec<u64> = dir
            .ancestors()
            .skip(1)
            .filter_map(|a| self.by_path.get(a))
            .flatten()
            .copied()
            .collect();
        related.extend(
            self.by_path
                .range(dir.to_path_buf()..)
                .take_while(|(p, _)| p.starts_with(dir))
                .flat_map(|(_, seqs)| seqs.iter().copied()),
        );
        let is_state = |e: &Entry| {
            !e.running
                && matches!(&e.op, Op::Upload(p) | Op::MakeDir(p) | Op::Describe(p) if p.starts_with(dir))
        };
        let barrier = related
            .iter()
            .copied()
            .filter(|seq| !is_state(&self.entries[seq]))
            .max();
        for seq in related {
            if barrier.is_none_or(|b| seq > b) && is_state(&self.entries[&seq]) {
                self.remove(seq);
            }
        }
    }

    fn insert(&mut self, seq: u64, entry: Entry) {
        // An entry put back (see [`Self::restore`]) keeps its state, and
        // every count follows it.
        self.pending_bytes += entry.bytes;
        self.uploads += usize::from(entry.op.sends_bytes());
        self.running += usize::from(entry.running);
        self.retrying += usize::from(entry.last_error.is_some());
        for path in entry.op.paths() {
            self.by_path
                .entry(path.to_path_buf())
                .or_default()
                .insert(seq);
        }
        self.entries.insert(seq, entry);
    }

    fn remove(&mut self, seq: u64) -> Entry {
        let entry = self.entries.remove(&seq).expect("entry in the table");
        self.running -= usize::from(entry.running);
        self.retrying -= usize::from(entry.last_error.is_some());
        self.pending_bytes -= entry.bytes;
        self.uploads -= usize::from(entry.op.sends_bytes());
        for path in entry.op.paths() {
            if let Some(seqs) = self.by_path.get_mut(path) {
                seqs.remove(&seq);
                if seqs.is_empty() {
                    self.by_path.remove(path);
                }
            }
        }
        entry
    }
}

/// Whether `path` is, contains or lies inside one of `paths`.
fn is_related_to_any(paths: &BTreeSet<&Path>, path: &Path) -> bool {
    if path.ancestors().any(|a| paths.contains(a)) {
        return true;
    }
    paths
        .range(path..)
        .next()
        .is_some_and(|p| p.starts_with(path))
}

/// 1 s, 2 s, 4 s … up to `max`.
pub fn backoff(failures: u32, max: Duration) -> Duration {
    let seconds = 1u64 << failures.saturating_sub(1).min(16);
    Duration::from_secs(seconds).min(max)
}

#[cfg(test)]
mod tests;
