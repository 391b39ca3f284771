//! Applying an index to a restored tree: what `import` does once the bytes
//! are in place.
//!
//! In order: missing directories are made (empty ones included), hard-link
//! groups are linked again, holes are punched back into sparse files, then
//! every file and link gets its owner, mode and modification time, and
//! last the directories, deepest first (making what is inside a directory
//! changes its time). Nothing is done through a symlink: every change is
//! made relative to the path's parent directory, opened from the root one
//! component at a time with `O_NOFOLLOW`, so an index (or a link swapped in
//! meanwhile) can never reach outside the tree it restores.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

use nix::fcntl::{AT_FDCWD, AtFlags, FallocateFlags, OFlag, fallocate, openat, renameat};
use nix::sys::stat::{
    FileStat, Mode, SFlag, UtimensatFlags, fchmod, fstat, fstatat, futimens, mkdirat, utimensat,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Group, Uid, UnlinkatFlags, User, fchown, fchownat, linkat, unlinkat};

use super::{Entry, Index, Kind};

/// How owners are given back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Owners {
    /// The numeric ids as recorded (like `rsync --numeric-ids`).
    #[default]
    Numeric,
    /// The recorded user and group names where they exist on this machine,
    /// else the numeric ids.
    Names,
}

/// What a restore did, and what it could not.
#[derive(Debug, Default)]
pub struct Restored {
    /// Paths given their recorded owner, mode and time.
    pub applied: usize,
    /// Directories made because only the index knew them.
    pub dirs_made: usize,
    /// Names made hard links of their group's first name again.
    pub linked: usize,
    /// Sparse files whose holes were punched back.
    pub sparse: usize,
    /// Paths that could not be restored as recorded, with why.
    pub problems: Vec<String>,
}

/// A restored regular file that is not what the index recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub path: String,
    pub found: u64,
    pub recorded: u64,
    /// The file's time is later than the record's: the record of its last
    /// upload may not have been written (then it is whole), or a crash cut
    /// an upload written in place (then it is torn).
    pub newer: bool,
}

/// The regular files under `staged` (relative paths in `paths`) whose size
/// is not the one the index records: torn or older, or newer than the
/// index (see [`Mismatch::newer`]; times compare in whole seconds, the
/// precision every backend keeps).
pub fn mismatches(index: &Index, staged: &Path, paths: &[String]) -> Vec<Mismatch> {
    paths
        .iter()
        .filter_map(|path| {
            let entry = index.entries.get(path)?;
            let recorded = entry.size.filter(|_| entry.kind == Kind::File)?;
            let found = std::fs::symlink_metadata(staged.join(path)).ok()?;
            (found.is_file() && found.len() != recorded).then(|| Mismatch {
                path: path.clone(),
                found: found.len(),
                recorded,
                newer: found.mtime() > entry.mtime_ns.div_euclid(1_000_000_000),
            })
        })
        .collect()
}

/// Applies `index` to the tree at `root`.
pub fn apply(index: &Index, root: &Path, owners: Owners) -> Restored {
    let mut restore = Restore {
        root,
        owners,
        open_dir: None,
        done: Restored::default(),
    };
    let entries: Vec<&Entry> = index
        .entries
        .values()
        .filter(|entry| restore.allowed(&entry.path))
        .collect();
    for entry in entries.iter().filter(|e| e.kind == Kind::Dir) {
        restore.make_dir(entry);
    }
    restore.link_groups(&entries);
    for entry in entries.iter().filter(|e| e.kind != Kind::Dir) {
        if entry.sparse {
            restore.punch_holes(entry);
        }
        restore.set_attributes(entry);
    }
    // Children sort after their parent: reversed, the deepest come first.
    for entry in entries.iter().rev().filter(|e| e.kind == Kind::Dir) {
        restore.set_attributes(entry);
    }
    restore.done
}

struct Restore<'a> {
    root: &'a Path,
    owners: Owners,
    /// The directory last opened, by its path in the tree: entries come
    /// sorted, so siblings share it.
    open_dir: Option<(PathBuf, Rc<OwnedFd>)>,
    done: Restored,
}

const DIR_FLAGS: OFlag = OFlag::O_DIRECTORY
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC)
    .union(OFlag::O_RDONLY);

impl Restore<'_> {
    fn problem(&mut self, path: &str, what: impl std::fmt::Display) {
        self.done.problems.push(format!("{path}: {what}"));
    }

    /// A recorded path is plain: relative, no `..`.
    fn allowed(&mut self, path: &str) -> bool {
        let relative = Path::new(path);
        if path.is_empty()
            || !relative
                .components()
                .all(|c| matches!(c, Component::Normal(_)))
        {
            self.problem(path, "not a plain relative path; skipped");
            return false;
        }
        true
    }

    /// The directory holding `path`, opened one component at a time from
    /// the root and never through a symlink, and the path's last name:
    /// every change is then made relative to it, so nothing swapped in
    /// meanwhile leads outside the tree. `None` when a parent is missing
    /// or is not a real directory.
    fn parent(&mut self, path: &str) -> Option<(Rc<OwnedFd>, OsString)> {
        let relative = Path::new(path);
        let name = relative.file_name()?.to_owned();
        let parent = relative.parent().unwrap_or(Path::new(""));
        if let Some((open, fd)) = &self.open_dir
            && open == parent
        {
            return Some((Rc::clone(fd), name));
        }
        let mut dir = openat(AT_FDCWD, self.root, DIR_FLAGS, Mode::empty()).ok()?;
        for part in parent.components() {
            dir = openat(&dir, part.as_os_str(), DIR_FLAGS, Mode::empty()).ok()?;
        }
        let dir = Rc::new(dir);
        self.open_dir = Some((parent.to_path_buf(), Rc::clone(&dir)));
        Some((dir, name))
    }

    /// What is at `path`, not following a link.
    fn stat(&mut self, path: &str) -> Option<FileStat> {
        let (dir, name) = self.parent(path)?;
        fstatat(dir.as_fd(), name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW).ok()
    }

    fn make_dir(&mut self, entry: &Entry) {
        let Some((dir, name)) = self.parent(&entry.path) else {
            return self.problem(&entry.path, "a parent is not a directory; not made");
        };
        match fstatat(dir.as_fd(), name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(stat) if kind_of(&stat) == Some(Kind::Dir) => {}
            Ok(_) => self.problem(
                &entry.path,
                "recorded as a directory, restored as something else",
            ),
            // Private until its recorded mode is set, last.
            Err(_) => match mkdirat(
                dir.as_fd(),
                name.as_os_str(),
                Mode::from_bits_truncate(0o700),
            ) {
                Ok(()) => self.done.dirs_made += 1,
                Err(err) => self.problem(&entry.path, format_args!("cannot make it: {err}")),
            },
        }
    }

    /// The names of a hard-link group become links of one file again
    /// (each was uploaded as a whole copy). Only names restored whole, and
    /// only when their records agree: a name edited last gets no event for
    /// its other names, so records that differ mean the names no longer
    /// describe one file, and each stays as it came.
    fn link_groups(&mut self, entries: &[&Entry]) {
        let mut groups: BTreeMap<&str, Vec<&Entry>> = BTreeMap::new();
        for entry in entries.iter().filter(|e| e.kind == Kind::File) {
            if let Some(key) = &entry.hardlink {
                groups.entry(key).or_default().push(entry);
            }
        }
        for names in groups.values().filter(|names| names.len() > 1) {
            let present: Vec<(&Entry, u64)> = names
                .iter()
                .filter_map(|entry| {
                    let stat = self.stat(&entry.path)?;
                    let whole = kind_of(&stat) == Some(Kind::File)
                        && Some(stat.st_size as u64) == entry.size;
                    whole.then_some((*entry, stat.st_ino))
                })
                .collect();
            let Some(&(first, inode)) = present.first() else {
                continue;
            };
            if present.iter().any(|(other, _)| !same_file(first, other)) {
                self.problem(
                    &first.path,
                    "its hard links were recorded differently (one was changed alone); restored as separate files",
                );
                continue;
            }
            for &(other, other_inode) in &present[1..] {
                if other_inode == inode {
                    continue;
                }
                match self.link(&first.path, &other.path) {
                    Ok(()) => self.done.linked += 1,
                    Err(err) => self.problem(
                        &other.path,
                        format_args!("cannot link it to {}: {err}", first.path),
                    ),
                }
            }
        }
    }

    /// Makes `name` a hard link of `source`: linked beside it under a
    /// temporary name, then renamed over it, so `name` is never missing.
    fn link(&mut self, source: &str, name: &str) -> std::io::Result<()> {
        let gone = || std::io::Error::other("a parent is not a directory");
        let (from_dir, from_name) = self.parent(source).ok_or_else(gone)?;
        let (to_dir, to_name) = self.parent(name).ok_or_else(gone)?;
        let mut temporary = OsString::from(format!(".msync-link.{}.", std::process::id()));
        temporary.push(&to_name);
        linkat(
            from_dir.as_fd(),
            from_name.as_os_str(),
            to_dir.as_fd(),
            temporary.as_os_str(),
            AtFlags::empty(),
        )?;
        renameat(
            to_dir.as_fd(),
            temporary.as_os_str(),
            to_dir.as_fd(),
            to_name.as_os_str(),
        )
        .inspect_err(|_| {
            let _ = unlinkat(
                to_dir.as_fd(),
                temporary.as_os_str(),
                UnlinkatFlags::NoRemoveDir,
            );
        })?;
        Ok(())
    }

    /// Opens the entry's path (a file or directory, never through a link)
    /// as it is recorded: `None` when it is not there, or is another kind.
    fn open(&mut self, entry: &Entry, flags: OFlag) -> Option<File> {
        let (dir, name) = self.parent(&entry.path)?;
        let fd = openat(
            dir.as_fd(),
            name.as_os_str(),
            flags | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .ok()?;
        let kind = fstat(&fd).ok().and_then(|stat| kind_of(&stat));
        if kind == Some(entry.kind) {
            Some(File::from(fd))
        } else {
            self.problem(
                &entry.path,
                "restored as another kind of file than recorded",
            );
            None
        }
    }

    /// Turns the runs of zeros of a file recorded as sparse back into
    /// holes, a 4 KiB block at a time.
    fn punch_holes(&mut self, entry: &Entry) {
        let Some(file) = self.open(entry, OFlag::O_RDWR) else {
            return;
        };
        match punch_zero_blocks(&file) {
            Ok(()) => self.done.sparse += 1,
            Err(err) => self.problem(
                &entry.path,
                format_args!("cannot make its holes again: {err}"),
            ),
        }
    }

    fn set_attributes(&mut self, entry: &Entry) {
        let (uid, gid) = self.owner(entry);
        let (uid, gid) = (Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)));
        let mtime = TimeSpec::new(
            entry.mtime_ns.div_euclid(1_000_000_000),
            entry.mtime_ns.rem_euclid(1_000_000_000),
        );
        let result = if entry.kind == Kind::Link {
            let Some((dir, name)) = self.parent(&entry.path) else {
                return;
            };
            match fstatat(dir.as_fd(), name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(stat) if kind_of(&stat) == Some(Kind::Link) => {}
                // Not restored (the remote did not hold it): nothing to set.
                Err(_) => return,
                Ok(_) => {
                    return self.problem(
                        &entry.path,
                        "restored as another kind of file than recorded",
                    );
                }
            }
            fchownat(
                dir.as_fd(),
                name.as_os_str(),
                uid,
                gid,
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .and_then(|()| {
                utimensat(
                    dir.as_fd(),
                    name.as_os_str(),
                    &TimeSpec::UTIME_OMIT,
                    &mtime,
                    UtimensatFlags::NoFollowSymlink,
                )
            })
        } else {
            let Some(file) = self.open(entry, OFlag::O_RDONLY) else {
                return;
            };
            // The mode after the owner: chown clears setuid and setgid.
            fchown(&file, uid, gid)
                .and_then(|()| fchmod(&file, Mode::from_bits_truncate(entry.mode)))
                .and_then(|()| futimens(&file, &TimeSpec::UTIME_OMIT, &mtime))
        };
        match result {
            Ok(()) => self.done.applied += 1,
            Err(err) => self.problem(
                &entry.path,
                format_args!("cannot set its owner, mode or time: {err}"),
            ),
        }
    }

    fn owner(&self, entry: &Entry) -> (u32, u32) {
        if self.owners == Owners::Numeric {
            return (entry.uid, entry.gid);
        }
        let uid = entry
            .user
            .as_deref()
            .and_then(|name| User::from_name(name).ok().flatten())
            .map_or(entry.uid, |user| user.uid.as_raw());
        let gid = entry
            .group
            .as_deref()
            .and_then(|name| Group::from_name(name).ok().flatten())
            .map_or(entry.gid, |group| group.gid.as_raw());
        (uid, gid)
    }
}

/// What a stat says the path is, among the kinds the index records.
fn kind_of(stat: &FileStat) -> Option<Kind> {
    match SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT {
        SFlag::S_IFREG => Some(Kind::File),
        SFlag::S_IFDIR => Some(Kind::Dir),
        SFlag::S_IFLNK => Some(Kind::Link),
        _ => None,
    }
}

/// Whether two records of a hard-link group describe one file.
fn same_file(a: &Entry, b: &Entry) -> bool {
    (a.size, a.mtime_ns, a.mode, a.uid, a.gid) == (b.size, b.mtime_ns, b.mode, b.uid, b.gid)
}

const BLOCK: usize = 4096;

fn punch_zero_blocks(file: &File) -> std::io::Result<()> {
    let mut reader = file;
    let mut buffer = vec![0u8; 64 * BLOCK];
    let mut offset: i64 = 0;
    // The zero run being gathered: its start.
    let mut run: Option<i64> = None;
    let punch = |start: i64, end: i64| {
        fallocate(
            file,
            FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
            start,
            end - start,
        )
        .map_err(std::io::Error::from)
    };
    loop {
        let read = read_full(&mut reader, &mut buffer)?;
        if read == 0 {
            break;
        }
        for block in buffer[..read].chunks(BLOCK) {
            let zero = block.len() == BLOCK && block.iter().all(|&b| b == 0);
            match (zero, run) {
                (true, None) => run = Some(offset),
                (false, Some(start)) => {
                    punch(start, offset)?;
                    run = None;
                }
                _ => {}
            }
            offset += block.len() as i64;
        }
    }
    if let Some(start) = run {
        punch(start, offset)?;
    }
    Ok(())
}

fn read_full(reader: &mut impl Read, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{PermissionsExt, symlink};

    use super::*;
    use crate::meta::{Names, Record};

    fn captured(root: &Path, paths: &[&str]) -> Index {
        let mut names = Names::default();
        let mut index = Index::default();
        for path in paths {
            let entry = Entry::capture(root, path, &mut names).unwrap().unwrap();
            index.apply(Record::Put(entry));
        }
        index
    }

    #[test]
    fn modes_times_empty_dirs_links_and_holes_come_back() {
        let source = tempfile::tempdir().unwrap();
        let s = source.path();
        std::fs::create_dir_all(s.join("empty/deeper")).unwrap();
        std::fs::create_dir(s.join("private")).unwrap();
        std::fs::write(s.join("private/key"), b"secret").unwrap();
        std::fs::write(s.join("run.sh"), b"#!/bin/sh\n").unwrap();
        std::fs::hard_link(s.join("run.sh"), s.join("private/also")).unwrap();
        symlink("../run.sh", s.join("private/link")).unwrap();
        let sparse = File::create(s.join("disk.img")).unwrap();
        sparse.set_len(1 << 20).unwrap();
        drop(sparse);
        for (path, mode) in [
            ("private", 0o700),
            ("private/key", 0o600),
            ("run.sh", 0o755),
            ("empty", 0o750),
        ] {
            std::fs::set_permissions(s.join(path), std::fs::Permissions::from_mode(mode)).unwrap();
        }
        let old = TimeSpec::new(1_000_000_000, 5);
        for path in ["run.sh", "private/link", "empty/deeper", "private"] {
            utimensat(
                AT_FDCWD,
                &s.join(path),
                &old,
                &old,
                UtimensatFlags::NoFollowSymlink,
            )
            .unwrap();
        }
        let paths = [
            "empty",
            "empty/deeper",
            "private",
            "private/key",
            "private/also",
            "private/link",
            "run.sh",
            "disk.img",
        ];
        let index = captured(s, &paths);
        assert!(index.entries["disk.img"].sparse);

        // What a download gives: the bytes, as plain new files.
        let target = tempfile::tempdir().unwrap();
        let t = target.path();
        std::fs::create_dir(t.join("private")).unwrap();
        std::fs::write(t.join("private/key"), b"secret").unwrap();
        std::fs::write(t.join("run.sh"), b"#!/bin/sh\n").unwrap();
        std::fs::write(t.join("private/also"), b"#!/bin/sh\n").unwrap();
        symlink("../run.sh", t.join("private/link")).unwrap();
        std::fs::write(t.join("disk.img"), vec![0u8; 1 << 20]).unwrap();

        let done = apply(&index, t, Owners::Numeric);
        assert!(done.problems.is_empty(), "{:?}", done.problems);
        assert_eq!((done.dirs_made, done.linked, done.sparse), (2, 1, 1));
        let restored = captured(t, &paths);
        for path in paths {
            let (mut want, mut got) = (index.entries[path].clone(), restored.entries[path].clone());
            // Inode numbers differ between trees; the grouping is checked below.
            want.hardlink = None;
            got.hardlink = None;
            assert_eq!(got, want, "{path}");
        }
        let inode = |p: &str| std::fs::metadata(t.join(p)).unwrap().ino();
        assert_eq!(inode("run.sh"), inode("private/also"));
    }

    #[test]
    fn nothing_is_done_through_a_link_or_outside_the_tree() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("victim"), b"x").unwrap();
        std::fs::set_permissions(
            outside.path().join("victim"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        let tree = tempfile::tempdir().unwrap();
        symlink(outside.path(), tree.path().join("escape")).unwrap();
        let mut index = Index::default();
        for path in ["escape/victim", "../victim", "/etc/passwd"] {
            let mut entry = Entry::capture(outside.path(), "victim", &mut Names::default())
                .unwrap()
                .unwrap();
            entry.path = path.into();
            entry.mode = 0o777;
            index.entries.insert(path.into(), entry);
        }
        let done = apply(&index, tree.path(), Owners::Numeric);
        assert_eq!(done.applied, 0);
        let mode = std::fs::metadata(outside.path().join("victim"))
            .unwrap()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn a_file_of_another_size_than_recorded_is_a_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("whole"), b"1234").unwrap();
        std::fs::write(dir.path().join("torn"), b"12").unwrap();
        let mut index = captured(dir.path(), &["whole", "torn"]);
        index.entries.get_mut("torn").unwrap().size = Some(4);
        let paths = ["whole".to_owned(), "torn".to_owned(), "unknown".to_owned()];
        assert_eq!(
            mismatches(&index, dir.path(), &paths),
            [Mismatch {
                path: "torn".into(),
                found: 2,
                recorded: 4,
                newer: false,
            }]
        );
        // Written after the record: newer, not torn.
        index.entries.get_mut("torn").unwrap().mtime_ns -= 5_000_000_000;
        assert!(mismatches(&index, dir.path(), &paths)[0].newer);
    }
}
