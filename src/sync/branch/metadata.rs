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

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use log::{info, warn};
use serde_json::json;

use super::BranchWorker;
use super::ops::relative;
use crate::meta::entry::path_digest;
use crate::meta::{Entry, IndexFile, Kind, MetaError, Names, Record, remote};
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

    /// Queues what a change found, unless the index already has it.
    fn note(&mut self, fact: Fact) {
        match fact {
            Fact::Now(entry) => {
                let digest = entry.digest();
                if self.known.insert(path_digest(&entry.path), digest) != Some(digest) {
                    self.push(Record::Put(entry));
                }
            }
            Fact::Gone { path, tree } => self.gone(&path, tree),
        }
        if self.next_seq.is_none() && self.pending.len() > JOURNAL_MAX {
            // No journal can go before the first reconcile has listed the
            // index; its snapshot will say all of this.
            self.pending.clear();
            self.since = None;
            self.stale = true;
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

/// What a change left at a path, read from the branch.
enum Fact {
    Now(Entry),
    Gone { path: String, tree: bool },
}

struct FactReader<'a> {
    root: &'a Path,
    names: Names,
    facts: Vec<Fact>,
}

impl FactReader<'_> {
    /// The path's metadata now; with `tree`, that of everything below it
    /// too when it is a directory (never through a link).
    fn read(&mut self, path: &str, tree: bool) {
        match Entry::capture(self.root, path, &mut self.names) {
            Ok(Some(entry)) => {
                let is_dir = entry.kind == Kind::Dir;
                self.facts.push(Fact::Now(entry));
                if tree && is_dir {
                    let mut below = Vec::new();
                    walk_tree(&self.root.join(path), |inner, _, _| below.push(inner));
                    for inner in below {
                        if let Some(inner) = inner.to_str() {
                            self.read(&format!("{path}/{inner}"), false);
                        }
                    }
                }
            }
            // Gone since, or now a kind the index does not keep.
            Ok(None) => self.gone(path, false),
            Err(err) => warn!("cannot read the metadata of {path}: {err}"),
        }
    }

    fn gone(&mut self, path: &str, tree: bool) {
        self.facts.push(Fact::Gone {
            path: path.to_owned(),
            tree,
        });
    }
}

fn parent_of(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(parent, _)| parent)
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
    /// Also the directories that hold what changed: their times changed.
    /// The files are read before the log is locked, so a big directory
    /// moved in holds up no other thread.
    pub(super) fn record_meta(&self, ops: &[Op], results: &[Result<(), Failure>]) {
        let mut reader = FactReader {
            root: &self.spec.local,
            names: std::mem::take(&mut self.meta().names),
            facts: Vec::new(),
        };
        let mut parents = BTreeSet::new();
        for (op, result) in ops.iter().zip(results) {
            // A held name is never sent: the index must not hold it either.
            if result.is_err() || self.is_held_name(op.path()) {
                continue;
            }
            let Ok(path) = relative(op.path()) else {
                continue;
            };
            parents.insert(parent_of(path));
            match op {
                Op::Upload(_) => reader.read(path, true),
                Op::MakeDir(_) | Op::Describe(_) => reader.read(path, false),
                Op::Delete(_) | Op::Discard(_) => reader.gone(path, false),
                Op::DeleteDir(_) => reader.gone(path, true),
                Op::Move { from, is_dir, .. } => {
                    if let Ok(from) = relative(from) {
                        reader.gone(from, *is_dir);
                        parents.insert(parent_of(from));
                    }
                    reader.read(path, *is_dir);
                }
            }
        }
        for parent in parents.into_iter().filter(|p| !p.is_empty()) {
            reader.read(parent, false);
        }
        let mut meta = self.meta();
        meta.names = reader.names;
        for fact in reader.facts {
            meta.note(fact);
        }
    }

    /// Writes what is pending as the next journal; false when that failed
    /// (the records wait for the next one).
    pub(super) fn write_journal(&self) -> bool {
        let (records, file) = {
            let mut meta = self.meta();
            let Some(seq) = meta.next_seq else {
                meta.writing = false;
                return true;
            };
            meta.next_seq = Some(seq + 1);
            meta.since = None;
            (std::mem::take(&mut meta.pending), IndexFile::Journal(seq))
        };
        let result = self.meta_scratch().and_then(|scratch| {
            remote::put(
                self.rclone,
                &self.spec.remote,
                file,
                &records,
                &scratch,
                self.sending_config(json!({})),
            )
        });
        let mut meta = self.meta();
        meta.writing = false;
        // Even a failed one may be on the remote, torn or whole: the next
        // snapshot's clean-up deletes it.
        meta.files.push(file);
        if let Err(err) = result {
            warn!(
                "{}: cannot write the metadata journal ({} change(s)); trying again later: {err}",
                self.spec.name,
                records.len()
            );
            let newer = std::mem::replace(&mut meta.pending, records);
            meta.pending.extend(newer);
            meta.since = Some(Instant::now());
            return false;
        }
        true
    }

    /// At stop: what is pending goes out now, unless something is wrong
    /// with the whole remote (the next start's reconcile covers it then).
    /// A failure gets one more try on fresh connections: a journal left
    /// out makes the next import hold back every file it records.
    pub fn write_journal_at_stop(&self) {
        let pending = {
            let meta = self.meta();
            !meta.pending.is_empty() && !meta.writing
        };
        if pending && self.trouble().is_none() && !self.write_journal() {
            if let Err(err) = self.rclone.forget_remotes() {
                warn!(
                    "{}: cannot drop rclone's connections: {err}",
                    self.spec.name
                );
            }
            self.write_journal();
        }
    }

    /// Every path of the branch the index records, with its metadata (an
    /// `lstat` each, from the directory listing).
    fn walk_entries(&self, names: &mut Names, mut visit: impl FnMut(Entry)) {
        // Never sent: the remote holds another name's data there.
        let held: BTreeSet<PathBuf> = self.held_names_below("").into_iter().collect();
        walk_tree(&self.spec.local, |path, _, entry| {
            if !held.is_empty() && path.ancestors().any(|a| held.contains(a)) {
                return;
            }
            let (Some(path), Ok(meta)) = (path.to_str(), entry.metadata()) else {
                return;
            };
            if let Some(entry) = Entry::from_metadata(path, &meta, names) {
                visit(entry);
            }
        });
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
        let mut names = std::mem::take(&mut self.meta().names);
        let may_be_right = {
            let meta = self.meta();
            !meta.stale && !meta.files.is_empty() && meta.files.len() <= COMPACT_AFTER
        };
        if may_be_right {
            // First only the digests: a reconcile that finds the index
            // right writes nothing, however big the branch.
            let mut known = HashMap::new();
            self.walk_entries(&mut names, |entry| {
                known.insert(path_digest(&entry.path), entry.digest());
            });
            if self.meta().known == known {
                self.meta().names = names;
                return Ok(());
            }
        }
        let scratch = self.meta_scratch()?;
        let file = {
            let mut meta = self.meta();
            let seq = meta.next_seq.expect("listed above");
            meta.next_seq = Some(seq + 1);
            IndexFile::Snapshot(seq)
        };
        // Then the snapshot, with the digests of what it holds (the branch
        // may have changed since the first walk).
        let mut writer = remote::create_local(&scratch, file)?;
        let mut known = HashMap::new();
        let mut failed = None;
        self.walk_entries(&mut names, |entry| {
            known.insert(path_digest(&entry.path), entry.digest());
            if failed.is_none() {
                failed = writer.record(&Record::Put(entry)).err();
            }
        });
        self.meta().names = names;
        let written = match failed {
            Some(err) => Err(err),
            None => writer.finish().map(drop),
        };
        written.map_err(|source| MetaError::Io {
            what: format!("writing {}", scratch.join(file.name()).display()),
            source,
        })?;
        let sent = self.run_job(&remote::upload_call(
            &self.spec.remote,
            &scratch,
            file,
            self.sending_config(json!({})),
        ));
        let _ = std::fs::remove_file(scratch.join(file.name()));
        if let Err(failure) = sent {
            // Whatever reached the remote goes with the next snapshot's
            // clean-up; a torn file is never read.
            self.meta().files.push(file);
            return Err(MetaError::Sending(failure.message().to_owned()));
        }
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
        if let Err(err) = remote::delete(self.rclone, &self.spec.remote, &replaced) {
            warn!(
                "{}: cannot delete the metadata files the snapshot replaced; the next snapshot tries again: {err}",
                self.spec.name
            );
            let mut meta = self.meta();
            let newer = std::mem::replace(&mut meta.files, replaced);
            meta.files.extend(newer);
        }
        Ok(())
    }
}
