//! The index's files on a remote: listing them, reading them back into an
//! [`Index`], writing one and deleting those a snapshot replaced. Files go
//! through a private scratch directory, as rclone copies files, not bytes.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use std::io::BufWriter;

use super::log::{FileWriter, Index, IndexFile, MetaError, is_complete};
use super::{META_DIR, Record};
use crate::rclone::{Call, ListOptions, Location, Rclone};

fn io_error(what: String) -> impl FnOnce(std::io::Error) -> MetaError {
    move |source| MetaError::Io { what, source }
}

/// The index files under `remote` (`<name>:<path>`); none when it has no
/// index yet.
pub fn list(rclone: Rclone, remote: &str) -> Result<Vec<IndexFile>, MetaError> {
    let entries = rclone.list_if_present(
        &Location::new(remote, META_DIR),
        &ListOptions {
            files_only: true,
            ..ListOptions::default()
        },
    )?;
    let mut files: Vec<IndexFile> = entries
        .iter()
        .filter_map(|entry| IndexFile::parse(&entry.name))
        .collect();
    files.sort();
    Ok(files)
}

/// Reads the index of `remote`: the newest complete snapshot (older
/// ones are fetched only while the newer are torn) and every journal after
/// it, through `scratch`.
pub fn fetch(rclone: Rclone, remote: &str, scratch: &Path) -> Result<Index, MetaError> {
    let files = list(rclone, remote)?;
    std::fs::create_dir_all(scratch)
        .map_err(io_error(format!("creating {}", scratch.display())))?;
    let mut texts = Vec::new();
    let mut base = 0;
    for snapshot in files
        .iter()
        .rev()
        .filter(|f| matches!(f, IndexFile::Snapshot(_)))
    {
        let text = download(rclone, remote, scratch, *snapshot)?;
        let complete = is_complete(&text);
        texts.push((*snapshot, text));
        if complete {
            base = snapshot.seq();
            break;
        }
    }
    for journal in files
        .iter()
        .filter(|f| matches!(f, IndexFile::Journal(seq) if *seq > base))
    {
        texts.push((*journal, download(rclone, remote, scratch, *journal)?));
    }
    Index::from_files(texts)
}

fn download(
    rclone: Rclone,
    remote: &str,
    scratch: &Path,
    file: IndexFile,
) -> Result<String, MetaError> {
    let local = scratch.join(file.name());
    Call::copyfile(
        &Location::new(remote, on_remote(file)),
        &Location::new(scratch_fs(scratch), file.name()),
    )
    .run(rclone)?;
    let bytes = std::fs::read(&local).map_err(io_error(format!("reading {}", local.display())))?;
    let _ = std::fs::remove_file(&local);
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Starts writing an index file in `scratch`, to send with
/// [`upload_call`] once finished.
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
fn upload(
    rclone: Rclone,
    remote: &str,
    scratch: &Path,
    file: IndexFile,
    config: Value,
) -> Result<(), MetaError> {
    let result = upload_call(remote, scratch, file, config).run(rclone);
    let _ = std::fs::remove_file(scratch.join(file.name()));
    result.map(|_| ()).map_err(MetaError::from)
}

/// The call that sends an index file written in `scratch` (to run as a
/// job when it may be big); `config` is the copy's rclone config, as for
/// the branch's own files (no hash check where one costs a read).
pub fn upload_call(remote: &str, scratch: &Path, file: IndexFile, config: Value) -> Call {
    Call::copyfile(
        &Location::new(scratch_fs(scratch), file.name()),
        &Location::new(remote, on_remote(file)),
    )
    .config(config)
}

/// Writes one index file to `remote`, through a file in `scratch`.
pub fn put<'a>(
    rclone: Rclone,
    remote: &str,
    file: IndexFile,
    records: impl IntoIterator<Item = &'a Record>,
    scratch: &Path,
    config: Value,
) -> Result<(), MetaError> {
    let mut writer = create_local(scratch, file)?;
    let what = || format!("writing {}", scratch.join(file.name()).display());
    for record in records {
        writer.record(record).map_err(io_error(what()))?;
    }
    writer.finish().map_err(io_error(what()))?;
    upload(rclone, remote, scratch, file, config)
}

/// Deletes index files a newer complete snapshot made obsolete; one that
/// is gone already is no error.
pub fn delete(rclone: Rclone, remote: &str, files: &[IndexFile]) -> Result<(), MetaError> {
    for file in files {
        let result = Call::new(
            "operations/deletefile",
            json!({"fs": remote, "remote": on_remote(*file)}),
        )
        .run(rclone);
        match result {
            Err(err) if !err.is_not_found() => return Err(err.into()),
            _ => {}
        }
    }
    Ok(())
}

/// Where an index file is, relative to the remote directory.
fn on_remote(file: IndexFile) -> String {
    format!("{META_DIR}/{}", file.name())
}

fn scratch_fs(scratch: &Path) -> String {
    format!(":local:{}", PathBuf::from(scratch).display())
}
