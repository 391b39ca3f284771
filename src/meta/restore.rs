//! Applying an index to a restored tree: what `import` does once the bytes
//! are in place.
//!
//! In order: missing directories are made (empty ones included), hard-link
//! groups are linked again, holes are punched back into sparse files, then
//! every file and link gets its owner, mode and modification time, and
//! last the directories, deepest first (making what is inside a directory
//! changes its time). Nothing is done through a symlink: a path whose
//! parent is not a real directory inside the tree is left alone, so an
//! index can never reach outside the tree it restores.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{AT_FDCWD, FallocateFlags, fallocate};
use nix::sys::stat::{UtimensatFlags, utimensat};
use nix::sys::time::TimeSpec;
use nix::unistd::{Group, User};

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
        safe_dirs: HashSet::new(),
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
    /// Directories inside the tree checked to be real directories.
    safe_dirs: HashSet<PathBuf>,
    done: Restored,
}

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

    /// Every parent of the path inside the tree is a real directory, not
    /// a link.
    fn parent_is_safe(&mut self, path: &str) -> bool {
        let mut dir = self.root.to_path_buf();
        for part in Path::new(path)
            .parent()
            .into_iter()
            .flat_map(Path::components)
        {
            dir.push(part);
            if self.safe_dirs.contains(&dir) {
                continue;
            }
            match std::fs::symlink_metadata(&dir) {
                Ok(meta) if meta.is_dir() => {
                    self.safe_dirs.insert(dir.clone());
                }
                _ => return false,
            }
        }
        true
    }

    fn make_dir(&mut self, entry: &Entry) {
        let path = self.root.join(&entry.path);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => self.problem(
                &entry.path,
                "recorded as a directory, restored as something else",
            ),
            Err(_) if !self.parent_is_safe(&entry.path) => {
                self.problem(&entry.path, "a parent is not a directory; not made")
            }
            Err(_) => match std::fs::create_dir(&path) {
                Ok(()) => self.done.dirs_made += 1,
                Err(err) => self.problem(&entry.path, format_args!("cannot make it: {err}")),
            },
        }
    }

    /// Every name of a hard-link group becomes a link to the group's first
    /// restored name (each name was uploaded as a whole copy).
    fn link_groups(&mut self, entries: &[&Entry]) {
        let mut groups: BTreeMap<&str, Vec<&Entry>> = BTreeMap::new();
        for entry in entries.iter().filter(|e| e.kind == Kind::File) {
            if let Some(key) = &entry.hardlink {
                groups.entry(key).or_default().push(entry);
            }
        }
        for names in groups.values().filter(|names| names.len() > 1) {
            let first = names.iter().find_map(|entry| {
                let meta = self.regular(entry)?;
                (Some(meta.len()) == entry.size).then_some((entry, meta.ino()))
            });
            let Some((first, inode)) = first else {
                continue;
            };
            for other in names.iter().filter(|e| e.path != first.path) {
                match std::fs::symlink_metadata(self.root.join(&other.path)) {
                    Ok(meta) if meta.ino() == inode => continue,
                    Ok(meta) if !meta.is_file() => {
                        self.problem(
                            &other.path,
                            "recorded as a hard link, restored as something else",
                        );
                        continue;
                    }
                    _ => {}
                }
                if !self.parent_is_safe(&other.path) {
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
    fn link(&self, source: &str, name: &str) -> std::io::Result<()> {
        let target = self.root.join(name);
        let temporary = target.with_file_name(format!(
            ".msync-link.{}.{}",
            std::process::id(),
            target
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
        ));
        std::fs::hard_link(self.root.join(source), &temporary)?;
        std::fs::rename(&temporary, &target).inspect_err(|_| {
            let _ = std::fs::remove_file(&temporary);
        })
    }

    /// The entry's path as a regular file of the tree, if it is one.
    fn regular(&mut self, entry: &Entry) -> Option<std::fs::Metadata> {
        if !self.parent_is_safe(&entry.path) {
            return None;
        }
        std::fs::symlink_metadata(self.root.join(&entry.path))
            .ok()
            .filter(std::fs::Metadata::is_file)
    }

    /// Turns the runs of zeros of a file recorded as sparse back into
    /// holes, a 4 KiB block at a time.
    fn punch_holes(&mut self, entry: &Entry) {
        if self.regular(entry).is_none() {
            return;
        }
        let path = self.root.join(&entry.path);
        let punched = File::options()
            .read(true)
            .write(true)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&path)
            .and_then(|file| punch_zero_blocks(&file));
        match punched {
            Ok(()) => self.done.sparse += 1,
            Err(err) => self.problem(
                &entry.path,
                format_args!("cannot make its holes again: {err}"),
            ),
        }
    }

    fn set_attributes(&mut self, entry: &Entry) {
        if !self.parent_is_safe(&entry.path) {
            return;
        }
        let path = self.root.join(&entry.path);
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            // Not restored (the remote did not hold it): nothing to set.
            return;
        };
        let kind = meta.file_type();
        let matches = match entry.kind {
            Kind::File => kind.is_file(),
            Kind::Dir => kind.is_dir(),
            Kind::Link => kind.is_symlink(),
        };
        if !matches {
            return self.problem(
                &entry.path,
                "restored as another kind of file than recorded",
            );
        }
        let (uid, gid) = self.owner(entry);
        let result = std::os::unix::fs::lchown(&path, Some(uid), Some(gid))
            .and_then(|()| {
                // After the owner: chown clears setuid and setgid.
                if entry.kind == Kind::Link {
                    Ok(())
                } else {
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(entry.mode))
                }
            })
            .and_then(|()| {
                let mtime = TimeSpec::new(
                    entry.mtime_ns.div_euclid(1_000_000_000),
                    entry.mtime_ns.rem_euclid(1_000_000_000),
                );
                utimensat(
                    AT_FDCWD,
                    &path,
                    &TimeSpec::UTIME_OMIT,
                    &mtime,
                    UtimensatFlags::NoFollowSymlink,
                )
                .map_err(std::io::Error::from)
            });
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
    use super::*;
    use crate::meta::{Names, Record};
    use std::os::unix::fs::symlink;

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
