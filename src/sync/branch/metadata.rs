//! The branch's share of the metadata index (see [`crate::meta`]).
//!
//! After a change is carried out, the path's metadata is read locally
//! (`lstat`) and queued as a record. Records go to the remote together, as
//! one journal file, [`JOURNAL_AFTER`] after the first of them (sooner when
//! many wait, and at stop): a burst of changes costs one small upload, not
//! one per change. Each reconcile compares the whole branch with what the
//! index holds, and writes a snapshot when they differ or many journals
//! built up; then it deletes the files the snapshot replaced.
//!
//! What the index holds is kept as digests, 16 bytes a path, not entries.
//! A crash loses at most the records not yet written: the next start's
//! reconcile finds the difference and writes a snapshot.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use log::{info, warn};

use super::BranchWorker;
use super::ops::relative;
use crate::meta::entry::path_digest;
use crate::meta::{Entry, IndexFile, MetaError, Names, Record, remote};
use crate::sync::failure::Failure;
use crate::sync::table::Op;
use crate::sync::walk_tree;

/// How long records wait for others to share their journal.
pub(super) const JOURNAL_AFTER: Duration = Duration::from_secs(10);
/// Records that make a journal due at once.
const JOURNAL_MAX: usize = 2000;
/// Journals since the last snapshot that make a reconcile write one even
/// when nothing differs (so a reader has few files to fetch).
const COMPACT_AFTER: usize = 50;

#[derive(Debug, Default)]
pub(super) struct MetaLog {
    /// Records not written yet, and when the first of them came.
    pending: Vec<Record>,
    since: Option<Instant>,
    /// What the remote's index holds once `pending` is written: an entry's
    /// digest by its path's digest.
    known: HashMap<u64, u64>,
    /// `known` lost track (a directory moved or went away with what it
    /// held): the next reconcile writes a snapshot.
    stale: bool,
    /// The next file's number; `None` until the remote's index was listed.
    next_seq: Option<u64>,
    /// Every index file on the remote, oldest first.
    files: Vec<IndexFile>,
    writing: bool,
    names: Names,
}

impl MetaLog {
    /// When the pending records are due to be written, if they are waiting.
    pub(super) fn journal_due(&self) -> Option<Instant> {
        if self.writing || self.next_seq.is_none() {
            return None;
        }
        let since = self.since?;
        if self.pending.len() >= JOURNAL_MAX {
            return Some(since);
        }
        Some(since + JOURNAL_AFTER)
    }

    pub(super) fn start_writing(&mut self) {
        self.writing = true;
    }

    /// A snapshot failed: the next reconcile writes one whatever it finds.
    pub(super) fn lost_track(&mut self) {
        self.stale = true;
    }

    pub(super) fn is_writing(&self) -> bool {
        self.writing
    }

    fn push(&mut self, record: Record) {
        self.pending.push(record);
        self.since.get_or_insert_with(Instant::now);
    }

    /// Queues the path's metadata as it is now, unless the index has it.
    fn describe(&mut self, root: &Path, path: &str) {
        let key = path_digest(path);
        match Entry::capture(root, path, &mut self.names) {
            Ok(Some(entry)) => {
                let digest = entry.digest();
                if self.known.insert(key, digest) != Some(digest) {
                    self.push(Record::Put(entry));
                }
            }
            // Gone since, or now a kind the index does not keep.
            Ok(None) => self.gone(path, false),
            Err(err) => warn!("cannot read the metadata of {path}: {err}"),
        }
    }

    /// Queues the metadata of a directory and everything below it.
    fn describe_tree(&mut self, root: &Path, path: &str) {
        self.describe(root, path);
        let mut below = Vec::new();
        walk_tree(&root.join(path), |inner, _, _| below.push(inner));
        for inner in below {
            if let Some(inner) = inner.to_str() {
                self.describe(root, &format!("{path}/{inner}"));
            }
        }
    }

    fn gone(&mut self, path: &str, tree: bool) {
        let known = self.known.remove(&path_digest(path)).is_some();
        if tree {
            // What was below is unknown by name: the next snapshot drops it.
            self.stale = true;
        }
        if known || tree || self.stale {
            self.push(Record::gone(path, tree));
        }
    }
}

impl BranchWorker {
    pub(super) fn meta(&self) -> std::sync::MutexGuard<'_, MetaLog> {
        self.meta.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where the index's files are written before they are sent.
    fn meta_scratch(&self) -> Result<PathBuf, MetaError> {
        let dir = self.spec.work_dir.join(format!("{}.meta", self.spec.name));
        crate::install::private_dir(&dir).map_err(|err| MetaError::Io {
            what: format!("creating {}", dir.display()),
            source: std::io::Error::other(err.to_string()),
        })?;
        Ok(dir)
    }

    /// Records the metadata of what the operations that succeeded changed.
    pub(super) fn record_meta(&self, ops: &[Op], results: &[Result<(), Failure>]) {
        let root = &self.spec.local;
        let mut meta = self.meta();
        for (op, result) in ops.iter().zip(results) {
            if result.is_err() {
                continue;
            }
            let Ok(path) = relative(op.path()) else {
                continue;
            };
            match op {
                Op::Upload(_) if root.join(path).is_dir() => meta.describe_tree(root, path),
                Op::Upload(_) | Op::MakeDir(_) | Op::Describe(_) => meta.describe(root, path),
                Op::Delete(_) | Op::Discard(_) => meta.gone(path, false),
                Op::DeleteDir(_) => meta.gone(path, true),
                Op::Move { from, is_dir, .. } => {
                    if let Ok(from) = relative(from) {
                        meta.gone(from, *is_dir);
                    }
                    if *is_dir {
                        meta.describe_tree(root, path);
                    } else {
                        meta.describe(root, path);
                    }
                }
            }
        }
    }

    /// Sends the pending records as one journal; kept for the next try
    /// when that fails.
    pub(super) fn write_journal(&self) {
        let (records, file) = {
            let mut meta = self.meta();
            let Some(seq) = meta.next_seq else {
                meta.writing = false;
                return;
            };
            meta.next_seq = Some(seq + 1);
            meta.since = None;
            (std::mem::take(&mut meta.pending), IndexFile::Journal(seq))
        };
        let result = self.meta_scratch().and_then(|scratch| {
            remote::put(self.rclone, &self.spec.remote, file, &records, &scratch)
        });
        let mut meta = self.meta();
        meta.writing = false;
        match result {
            Ok(()) => meta.files.push(file),
            Err(err) => {
                warn!(
                    "{}: cannot write the metadata journal ({} change(s)); trying again later: {err}",
                    self.spec.name,
                    records.len()
                );
                let newer = std::mem::replace(&mut meta.pending, records);
                meta.pending.extend(newer);
                meta.since = Some(Instant::now());
            }
        }
    }

    /// At stop: what is pending goes out now, unless the remote is away.
    pub fn write_journal_at_stop(&self) {
        let pending = {
            let meta = self.meta();
            !meta.pending.is_empty() && !meta.writing
        };
        if pending && self.trouble().is_none() {
            self.write_journal();
        }
    }

    /// After a reconcile: the whole branch against the index. Writes a
    /// snapshot when they differ, then deletes the files it replaced.
    pub(super) fn write_snapshot(&self) -> Result<(), MetaError> {
        if self.meta().next_seq.is_none() {
            let files = remote::list(self.rclone, &self.spec.remote)?;
            let mut meta = self.meta();
            meta.next_seq = Some(files.last().map_or(1, |f| f.seq() + 1));
            meta.stale = !files.is_empty();
            meta.files = files;
        }
        let scratch = self.meta_scratch()?;
        let (file, mut names) = {
            let mut meta = self.meta();
            let seq = meta.next_seq.expect("listed above");
            meta.next_seq = Some(seq + 1);
            (IndexFile::Snapshot(seq), std::mem::take(&mut meta.names))
        };
        let mut writer = remote::create_local(&scratch, file)?;
        let mut known = HashMap::new();
        let mut failed = None;
        walk_tree(&self.spec.local, |path, _, entry| {
            let (Some(path), Ok(meta)) = (path.to_str(), entry.metadata()) else {
                return;
            };
            if let Some(entry) = Entry::from_metadata(path, &meta, &mut names) {
                known.insert(path_digest(path), entry.digest());
                if failed.is_none() {
                    failed = writer.record(&Record::Put(entry)).err();
                }
            }
        });
        let written = match failed {
            Some(err) => Err(err),
            None => writer.finish().map(drop),
        };
        let io = |source| MetaError::Io {
            what: format!("writing {}", scratch.join(file.name()).display()),
            source,
        };
        written.map_err(io)?;
        let same = {
            let mut meta = self.meta();
            meta.names = names;
            !meta.stale
                && meta.known == known
                && meta.files.len() <= COMPACT_AFTER
                && !meta.files.is_empty()
        };
        if same {
            let _ = std::fs::remove_file(scratch.join(file.name()));
            return Ok(());
        }
        remote::upload(self.rclone, &self.spec.remote, &scratch, file)?;
        let replaced = {
            let mut meta = self.meta();
            meta.known = known;
            meta.stale = false;
            // The snapshot describes the branch now: records queued
            // before it add nothing.
            meta.pending.clear();
            meta.since = None;
            std::mem::replace(&mut meta.files, vec![file])
        };
        info!(
            "{}: wrote the metadata snapshot {} ({} path(s))",
            self.spec.name,
            file.name(),
            self.meta().known.len()
        );
        remote::delete(self.rclone, &self.spec.remote, &replaced)
    }
}
