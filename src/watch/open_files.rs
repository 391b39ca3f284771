//! Which files are open for writing right now, from `/proc/<pid>/fd` and
//! `fdinfo`: the one question inotify cannot answer. A regular file that
//! appeared and then went silent is either still held open by its writer
//! or complete already (a hard link whose other name was unlinked, as git
//! and Maildir do): only the open file table tells them apart.
//!
//! A scan stats every open descriptor on the machine, so the watcher asks
//! only about files that stayed silent, a few at a time, with backoff.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A file's identity: device and inode.
pub type FileId = (u64, u64);

/// The identity of the file at `path`, without following a link.
pub fn file_id(path: &Path) -> Option<FileId> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    meta.file_type().is_file().then(|| (meta.dev(), meta.ino()))
}

/// Those of `files` that some process holds open for writing. A process
/// whose descriptors cannot be read (it exited meanwhile) holds none.
pub fn open_for_writing(files: &HashSet<FileId>) -> HashSet<FileId> {
    if files.is_empty() {
        return HashSet::new();
    }
    // Follows each descriptor's magic link to the open file itself.
    writable_descriptors(|descriptor| {
        let meta = std::fs::metadata(descriptor).ok()?;
        let id = (meta.dev(), meta.ino());
        files.contains(&id).then_some(id)
    })
    .into_iter()
    .collect()
}

/// The files below `dir` that some process holds open for writing,
/// relative to it: by a writer directly, or by the union filesystem's
/// process on a writer's behalf (mergerfs holds the branch file open).
pub fn open_for_writing_below(dir: &Path) -> Vec<PathBuf> {
    writable_descriptors(|descriptor| {
        let target = std::fs::read_link(descriptor).ok()?;
        target.strip_prefix(dir).ok().map(Path::to_path_buf)
    })
}

/// What `wanted` makes of every descriptor on the machine that is open
/// for writing (`wanted` first, the cheaper test for most descriptors).
fn writable_descriptors<T>(mut wanted: impl FnMut(&Path) -> Option<T>) -> Vec<T> {
    let mut found = Vec::new();
    let Ok(processes) = std::fs::read_dir("/proc") else {
        return found;
    };
    for process in processes.flatten() {
        let name = process.file_name();
        if !name.as_encoded_bytes().iter().all(u8::is_ascii_digit) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(process.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Some(item) = wanted(&fd.path())
                && opened_for_writing(&process.path(), &fd.file_name())
            {
                found.push(item);
            }
        }
    }
    found
}

/// Whether descriptor `fd` of the process at `proc_dir` was opened with
/// write access (the `flags:` line of its fdinfo, in octal).
fn opened_for_writing(proc_dir: &Path, fd: &std::ffi::OsStr) -> bool {
    let Ok(info) = std::fs::read_to_string(proc_dir.join("fdinfo").join(fd)) else {
        return false;
    };
    info.lines()
        .find_map(|line| line.strip_prefix("flags:"))
        .and_then(|flags| u32::from_str_radix(flags.trim(), 8).ok())
        .is_some_and(|flags| flags & 0o3 != 0)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn a_file_open_for_writing_is_seen_and_a_closed_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let (open, closed, read) = (
            dir.path().join("open"),
            dir.path().join("closed"),
            dir.path().join("read"),
        );
        let mut writer = std::fs::File::create(&open).unwrap();
        writer.write_all(b"partial").unwrap();
        std::fs::write(&closed, b"done").unwrap();
        std::fs::write(&read, b"only read").unwrap();
        let _reader = std::fs::File::open(&read).unwrap();
        let ids: HashSet<FileId> = [&open, &closed, &read]
            .iter()
            .map(|p| file_id(p).unwrap())
            .collect();
        let writing = open_for_writing(&ids);
        assert_eq!(writing, HashSet::from([file_id(&open).unwrap()]));
        drop(writer);
        assert!(open_for_writing(&ids).is_empty());
    }
}
