//! The index's files on a remote: listing them, reading them back into an
//! [`Index`], writing one and deleting those a snapshot replaced. Files go
//! through a private scratch directory, as rclone copies files, not bytes.

use std::path::{Path, PathBuf};

use serde_json::json;

use std::io::BufWriter;

use super::log::{FileWriter, Index, IndexFile, MetaError};
use super::{META_DIR, Record};
use crate::rclone::{Call, ListOptions, Location, Rclone};

fn io_error(what: String) -> impl FnOnce(std::io::Error) -> MetaError {
    move |source| MetaError::Io { what, source }
}

/// The index files under `remote` (`<name>:<path>`); none when it has no
/// index yet.
pub fn list(rclone: Rclone, remote: &str) -> Result<Vec<IndexFile>, MetaError> {
    // Looked at first, so a remote without an index logs no listing error.
    if rclone.stat(&Location::new(remote, META_DIR))?.is_none() {
        return Ok(Vec::new());
    }
    let entries = match rclone.list(
        &Location::new(remote, META_DIR),
        &ListOptions {
            files_only: true,
            ..ListOptions::default()
        },
    ) {
        Ok(entries) => entries,
        Err(err) if err.is_not_found() => return Ok(Vec::new()),
        Err(err) => return Err(err.into()),
    };
    let mut files: Vec<IndexFile> = entries
        .iter()
        .filter_map(|entry| IndexFile::parse(&entry.name))
        .collect();
    files.sort();
    Ok(files)
}

/// The files a reader needs: the newest snapshot and every journal after
/// it, plus older snapshots in case the newest is torn.
fn needed(files: &[IndexFile]) -> Vec<IndexFile> {
    let snapshots: Vec<u64> = files
        .iter()
        .filter(|f| matches!(f, IndexFile::Snapshot(_)))
        .map(IndexFile::seq)
        .collect();
    // A snapshot is only ever deleted once a newer one is complete, so two
    // are enough: the newest may be torn, the one before is whole.
    let oldest_needed = snapshots.iter().rev().nth(1).copied().unwrap_or(0);
    files
        .iter()
        .copied()
        .filter(|f| f.seq() >= oldest_needed)
        .collect()
}

/// Reads the index of `remote`, fetching its files into `scratch` (which
/// is emptied after).
pub fn fetch(rclone: Rclone, remote: &str, scratch: &Path) -> Result<Index, MetaError> {
    let files = needed(&list(rclone, remote)?);
    std::fs::create_dir_all(scratch)
        .map_err(io_error(format!("creating {}", scratch.display())))?;
    let mut texts = Vec::new();
    for file in files {
        let local = scratch.join(file.name());
        Call::copyfile(
            &Location::new(remote, format!("{META_DIR}/{}", file.name())),
            &Location::new(scratch_fs(scratch), file.name()),
        )
        .run(rclone)?;
        let bytes =
            std::fs::read(&local).map_err(io_error(format!("reading {}", local.display())))?;
        let _ = std::fs::remove_file(&local);
        texts.push((file, String::from_utf8_lossy(&bytes).into_owned()));
    }
    Index::from_files(texts)
}

/// Starts writing an index file in `scratch`, to [`upload`] once
/// finished.
pub fn create_local(
    scratch: &Path,
    file: IndexFile,
) -> Result<FileWriter<BufWriter<std::fs::File>>, MetaError> {
    let local = scratch.join(file.name());
    let what = || format!("writing {}", local.display());
    let out = crate::install::open_private(
        &local,
        std::fs::OpenOptions::new().write(true).truncate(true),
    )
    .map_err(io_error(what()))?;
    FileWriter::new(file, BufWriter::new(out)).map_err(io_error(what()))
}

/// Sends an index file written in `scratch` to `remote`, and removes it
/// from `scratch` whatever the outcome.
pub fn upload(
    rclone: Rclone,
    remote: &str,
    scratch: &Path,
    file: IndexFile,
) -> Result<(), MetaError> {
    let result = Call::copyfile(
        &Location::new(scratch_fs(scratch), file.name()),
        &Location::new(remote, format!("{META_DIR}/{}", file.name())),
    )
    .run(rclone);
    let _ = std::fs::remove_file(scratch.join(file.name()));
    result.map(|_| ()).map_err(MetaError::from)
}

/// Writes one index file to `remote`, through a file in `scratch`.
pub fn put<'a>(
    rclone: Rclone,
    remote: &str,
    file: IndexFile,
    records: impl IntoIterator<Item = &'a Record>,
    scratch: &Path,
) -> Result<(), MetaError> {
    let mut writer = create_local(scratch, file)?;
    let what = || format!("writing {}", scratch.join(file.name()).display());
    for record in records {
        writer.record(record).map_err(io_error(what()))?;
    }
    writer.finish().map_err(io_error(what()))?;
    upload(rclone, remote, scratch, file)
}

/// Deletes index files a newer complete snapshot made obsolete; one that
/// is gone already is no error.
pub fn delete(rclone: Rclone, remote: &str, files: &[IndexFile]) -> Result<(), MetaError> {
    for file in files {
        let result = Call::new(
            "operations/deletefile",
            json!({"fs": remote, "remote": format!("{META_DIR}/{}", file.name())}),
        )
        .run(rclone);
        match result {
            Err(err) if !err.is_not_found() => return Err(err.into()),
            _ => {}
        }
    }
    Ok(())
}

fn scratch_fs(scratch: &Path) -> String {
    format!(":local:{}", PathBuf::from(scratch).display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_needs_the_last_two_snapshots_and_what_follows() {
        let files = [
            IndexFile::Snapshot(1),
            IndexFile::Journal(2),
            IndexFile::Snapshot(3),
            IndexFile::Journal(4),
            IndexFile::Snapshot(5),
            IndexFile::Journal(6),
        ];
        assert_eq!(needed(&files), files[2..]);
        assert_eq!(needed(&files[..2]), files[..2]);
    }
}
