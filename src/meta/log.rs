//! The files of the index and how they read back as one [`Index`].
//!
//! Under `.msync/meta/` there are two kinds of JSON-lines files, numbered
//! by one sequence:
//! - `snapshot-<seq>.jsonl`: every path of the branch, as of that point;
//! - `journal-<seq>.jsonl`: the changes of one batch after the snapshot
//!   before it.
//!
//! Each starts with a header line (`{"msync_meta":1,"kind":…,"seq":…}`)
//! and ends with a trailer line (`{"end":<records>}`). A file without its
//! trailer was torn by a crash: it is skipped whole, so the state before
//! it stands. Files are only ever added, and old ones are deleted only
//! once a newer complete snapshot is in place, so a torn write never loses
//! the previous state.

use std::collections::BTreeMap;
use std::io::Write;

use serde::{Deserialize, Serialize};

use super::FORMAT;
use super::entry::{Entry, Record};
use crate::rclone::RcloneError;

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error(
        "{file} was written in metadata format {format}, newer than this msync's {FORMAT}; use a newer msync"
    )]
    Newer { file: String, format: u32 },
    #[error("{0}")]
    Rclone(#[from] RcloneError),
    #[error("sending it: {0}")]
    Sending(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// A file of the index, known by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum IndexFile {
    Snapshot(u64),
    Journal(u64),
}

impl IndexFile {
    pub fn name(&self) -> String {
        match self {
            IndexFile::Snapshot(seq) => format!("snapshot-{seq:012}.jsonl"),
            IndexFile::Journal(seq) => format!("journal-{seq:012}.jsonl"),
        }
    }

    /// The file a name stands for; `None` for any other name.
    pub fn parse(name: &str) -> Option<IndexFile> {
        let stem = name.strip_suffix(".jsonl")?;
        if let Some(seq) = stem.strip_prefix("snapshot-") {
            return seq.parse().ok().map(IndexFile::Snapshot);
        }
        let seq = stem.strip_prefix("journal-")?;
        seq.parse().ok().map(IndexFile::Journal)
    }

    pub fn seq(&self) -> u64 {
        match self {
            IndexFile::Snapshot(seq) | IndexFile::Journal(seq) => *seq,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            IndexFile::Snapshot(_) => "snapshot",
            IndexFile::Journal(_) => "journal",
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    msync_meta: u32,
    kind: String,
    seq: u64,
    #[serde(default)]
    written: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Trailer {
    end: usize,
}

/// Writes an index file record by record: the header when made, the
/// trailer when finished.
pub struct FileWriter<W: Write> {
    out: W,
    count: usize,
}

impl<W: Write> FileWriter<W> {
    pub fn new(file: IndexFile, mut out: W) -> std::io::Result<FileWriter<W>> {
        let header = Header {
            msync_meta: FORMAT,
            kind: file.kind().to_owned(),
            seq: file.seq(),
            written: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        };
        serde_json::to_writer(&mut out, &header)?;
        out.write_all(b"\n")?;
        Ok(FileWriter { out, count: 0 })
    }

    pub fn record(&mut self, record: &Record) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.out, record)?;
        self.count += 1;
        self.out.write_all(b"\n")
    }

    pub fn finish(mut self) -> std::io::Result<W> {
        serde_json::to_writer(&mut self.out, &Trailer { end: self.count })?;
        self.out.write_all(b"\n")?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Writes a whole index file: header, records, trailer.
pub fn write_file<'a>(
    file: IndexFile,
    records: impl IntoIterator<Item = &'a Record>,
    out: &mut impl Write,
) -> std::io::Result<()> {
    let mut writer = FileWriter::new(file, out)?;
    for record in records {
        writer.record(record)?;
    }
    writer.finish().map(drop)
}

/// Why a file of the index was not used.
#[derive(Debug, PartialEq, Eq)]
enum Unusable {
    /// No trailer, or one that does not count the records: torn.
    Torn,
    /// A line that is not a record.
    Bad(usize),
    Newer(u32),
}

/// Whether an index file's text is whole (header, records, trailer) and
/// in a format this msync reads.
pub fn is_complete(text: &str) -> bool {
    read_file(text).is_ok()
}

fn read_file(text: &str) -> Result<Vec<Record>, Unusable> {
    let mut lines = text.lines();
    let header: Header = lines
        .next()
        .and_then(|line| serde_json::from_str(line).ok())
        .ok_or(Unusable::Torn)?;
    if header.msync_meta > FORMAT {
        return Err(Unusable::Newer(header.msync_meta));
    }
    let mut records = Vec::new();
    for (number, line) in lines.enumerate() {
        if let Ok(trailer) = serde_json::from_str::<Trailer>(line) {
            return if trailer.end == records.len() {
                Ok(records)
            } else {
                Err(Unusable::Torn)
            };
        }
        match serde_json::from_str::<Record>(line) {
            Ok(record) => records.push(record),
            // A cut-off last line is a torn file, not a bad one.
            Err(_) if !text.ends_with('\n') || line.is_empty() => return Err(Unusable::Torn),
            Err(_) => return Err(Unusable::Bad(number + 2)),
        }
    }
    Err(Unusable::Torn)
}

/// The index as its files say: every path's metadata.
#[derive(Debug, Default)]
pub struct Index {
    pub entries: BTreeMap<String, Entry>,
    /// The files that were not used, with why (a torn journal).
    pub skipped: Vec<String>,
    /// The index files read (none: the remote has no index).
    pub files: usize,
}

impl Index {
    /// Reads the newest complete snapshot and the complete journals after
    /// it, in order. `files` holds each file's name and text.
    pub fn from_files(mut files: Vec<(IndexFile, String)>) -> Result<Index, MetaError> {
        files.sort_by_key(|(file, _)| (file.seq(), *file));
        let mut read = Vec::new();
        let mut index = Index {
            files: files.len(),
            ..Index::default()
        };
        for (file, text) in files {
            match read_file(&text) {
                Ok(records) => read.push((file, records)),
                Err(Unusable::Newer(format)) => {
                    return Err(MetaError::Newer {
                        file: file.name(),
                        format,
                    });
                }
                Err(Unusable::Torn) => index
                    .skipped
                    .push(format!("{}: incomplete (torn by a crash)", file.name())),
                Err(Unusable::Bad(line)) => index
                    .skipped
                    .push(format!("{}: line {line} is not a record", file.name())),
            }
        }
        let base = read
            .iter()
            .rposition(|(file, _)| matches!(file, IndexFile::Snapshot(_)))
            .unwrap_or(0);
        for (file, records) in read.into_iter().skip(base) {
            if let IndexFile::Snapshot(_) = file {
                index.entries.clear();
            }
            for record in records {
                index.apply(record);
            }
        }
        Ok(index)
    }

    pub fn apply(&mut self, record: Record) {
        match record {
            Record::Put(entry) => {
                self.entries.insert(entry.path.clone(), entry);
            }
            Record::Gone { path, tree, .. } => {
                self.entries.remove(&path);
                if tree {
                    let below = format!("{path}/");
                    let doomed: Vec<String> = self
                        .entries
                        .range(below.clone()..)
                        .take_while(|(p, _)| p.starts_with(&below))
                        .map(|(p, _)| p.clone())
                        .collect();
                    for path in doomed {
                        self.entries.remove(&path);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::Kind;

    fn entry(path: &str, mode: u32) -> Record {
        Record::Put(Entry {
            path: path.into(),
            kind: Kind::File,
            mode,
            uid: 0,
            gid: 0,
            user: None,
            group: None,
            mtime_ns: 0,
            size: Some(1),
            hardlink: None,
            sparse: false,
        })
    }

    fn file(kind: IndexFile, records: &[Record]) -> (IndexFile, String) {
        let mut text = Vec::new();
        write_file(kind, records, &mut text).unwrap();
        (kind, String::from_utf8(text).unwrap())
    }

    fn modes(index: &Index) -> Vec<(String, u32)> {
        index
            .entries
            .values()
            .map(|e| (e.path.clone(), e.mode))
            .collect()
    }

    #[test]
    fn names_carry_the_kind_and_the_sequence() {
        for file in [IndexFile::Snapshot(7), IndexFile::Journal(123_456)] {
            assert_eq!(IndexFile::parse(&file.name()), Some(file));
        }
        for name in ["snapshot-x.jsonl", "journal-1.json", "other", "tmp-1.jsonl"] {
            assert_eq!(IndexFile::parse(name), None, "{name}");
        }
    }

    #[test]
    fn journals_after_the_newest_snapshot_apply_in_order() {
        let files = vec![
            file(
                IndexFile::Journal(4),
                &[entry("a", 0o600), Record::gone("d", true)],
            ),
            file(IndexFile::Snapshot(1), &[entry("old", 0o644)]),
            file(
                IndexFile::Snapshot(3),
                &[entry("a", 0o644), entry("d/x", 0o644), entry("d0", 0o644)],
            ),
            file(IndexFile::Journal(2), &[entry("ignored", 0o644)]),
            file(IndexFile::Journal(5), &[entry("b", 0o755)]),
        ];
        let index = Index::from_files(files).unwrap();
        assert_eq!(
            modes(&index),
            [
                ("a".into(), 0o600),
                ("b".into(), 0o755),
                ("d0".into(), 0o644)
            ]
        );
        assert!(index.skipped.is_empty());
    }

    #[test]
    fn a_torn_file_is_skipped_whole_and_the_state_before_it_stands() {
        let (kind, whole) = file(
            IndexFile::Journal(2),
            &[entry("a", 0o600), entry("b", 0o600)],
        );
        let cut_in_a_line = &whole[..whole.len() - 20];
        let without_trailer: String = whole.lines().take(3).map(|l| format!("{l}\n")).collect();
        for torn in [cut_in_a_line, &without_trailer, ""] {
            let files = vec![
                file(IndexFile::Snapshot(1), &[entry("a", 0o644)]),
                (kind, torn.to_owned()),
            ];
            let index = Index::from_files(files).unwrap();
            assert_eq!(modes(&index), [("a".into(), 0o644)], "{torn:?}");
            assert_eq!(index.skipped.len(), 1);
        }
        // A torn newer snapshot leaves the older one in force.
        let (kind, whole) = file(IndexFile::Snapshot(3), &[entry("new", 0o644)]);
        let files = vec![
            file(IndexFile::Snapshot(1), &[entry("a", 0o644)]),
            (kind, whole[..whole.len() - 3].to_owned()),
        ];
        assert_eq!(
            modes(&Index::from_files(files).unwrap()),
            [("a".into(), 0o644)]
        );
    }

    #[test]
    fn a_newer_format_is_refused_with_what_to_do() {
        let text = "{\"msync_meta\":99,\"kind\":\"snapshot\",\"seq\":1}\n{\"end\":0}\n";
        let err = Index::from_files(vec![(IndexFile::Snapshot(1), text.into())]).unwrap_err();
        assert!(err.to_string().contains("use a newer msync"), "{err}");
    }
}
