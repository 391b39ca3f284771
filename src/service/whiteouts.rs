//! aufs's whiteouts, on the watcher's path to the engine. With aufs, a
//! name deleted (or renamed away) through the mount that a later branch
//! also holds stays there, hidden by a whiteout `.wh.NAME` in the branch
//! the delete went to. Mirrored as they are, the later branch's cloud would
//! keep the file, and an import, which brings back no whiteout, would show
//! it again. So a new whiteout counts as what it means to the pool: the
//! hidden copies in the later branches are deleted, and their clouds follow
//! as for any delete (into their trash).
//!
//! This module never touches the branch the whiteout is in, and walks the
//! later branches one directory at a time without following a symlink.

use std::path::{Path, PathBuf};

use log::{info, warn};

use crate::install::InstallDir;
use crate::sync::is_local_only;
use crate::union::{Driver, aufs_whited_out};
use crate::watch::{Change, ChangeKind};

/// The branch directories in aufs's order (the first hides the others).
pub(super) struct Whiteouts {
    branches: Vec<(String, PathBuf)>,
}

impl Whiteouts {
    /// Only aufs makes whiteouts.
    pub(super) fn for_union(driver: Driver, install: &InstallDir) -> Option<Whiteouts> {
        (driver == Driver::Aufs).then(|| Whiteouts {
            branches: install
                .manifest
                .branches
                .iter()
                .map(|b| (b.name.clone(), b.dir.clone()))
                .collect(),
        })
    }

    /// Takes the new whiteouts out of `changes` and deletes what each
    /// hides; returns the other changes.
    pub(super) fn take(&self, changes: Vec<Change>) -> Vec<Change> {
        let mut rest = Vec::with_capacity(changes.len());
        for change in changes {
            let Some(hidden) = hidden_name(&change.path) else {
                rest.push(change);
                continue;
            };
            if matches!(change.kind, ChangeKind::Write | ChangeKind::Rename { .. }) {
                self.delete_hidden(change.branch, &hidden);
            }
        }
        rest
    }

    fn delete_hidden(&self, branch: usize, hidden: &Path) {
        for (name, dir) in self.branches.iter().skip(branch + 1) {
            let Some(target) = walk_to(dir, hidden) else {
                continue;
            };
            let removed = match std::fs::symlink_metadata(&target) {
                Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(&target),
                Ok(_) => std::fs::remove_file(&target),
                Err(_) => continue,
            };
            match removed {
                Ok(()) => info!(
                    "{name}: {} was deleted through aufs, which only hid this branch's copy; deleted it here too",
                    hidden.display()
                ),
                Err(err) => warn!(
                    "{name}: cannot delete {}, which aufs hides: {err}; its cloud keeps it",
                    target.display()
                ),
            }
        }
    }
}

/// The name a whiteout at `path` hides, unless that is itself a name msync
/// keeps local.
fn hidden_name(path: &Path) -> Option<PathBuf> {
    aufs_whited_out(path).filter(|hidden| !is_local_only(hidden))
}

/// Whether the watcher must ignore `path` with aufs: as with any union,
/// local-only names, except the whiteouts this module handles.
pub(super) fn ignored_with_aufs(path: &Path) -> bool {
    is_local_only(path) && hidden_name(path).is_none()
}

/// `relative` below `root` when every directory on the way is a real one,
/// not a symlink.
fn walk_to(root: &Path, relative: &Path) -> Option<PathBuf> {
    let mut here = root.to_path_buf();
    for part in relative.parent()?.components() {
        here.push(part);
        let meta = std::fs::symlink_metadata(&here).ok()?;
        if !meta.is_dir() {
            return None;
        }
    }
    Some(root.join(relative))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whiteout_names_what_it_hides_and_aufs_own_files_nothing() {
        assert_eq!(
            hidden_name(Path::new("docs/.wh.old.txt")),
            Some(PathBuf::from("docs/old.txt"))
        );
        assert_eq!(hidden_name(Path::new(".wh.photos")), Some("photos".into()));
        for own in [
            ".wh..wh.aufs",
            ".wh..wh.plnk",
            "d/.wh..wh..opq",
            ".wh.",
            "a.txt",
        ] {
            assert_eq!(hidden_name(Path::new(own)), None, "{own}");
        }
        assert_eq!(hidden_name(Path::new(".wh..msync-branch")), None);
        assert!(!ignored_with_aufs(Path::new("d/.wh.x")));
        assert!(ignored_with_aufs(Path::new(".wh..wh.plnk")));
        assert!(ignored_with_aufs(Path::new(".msync-branch")));
    }

    #[test]
    fn only_what_later_branches_hide_goes_and_never_through_a_link() {
        let temp = tempfile::tempdir().unwrap();
        let dirs: Vec<PathBuf> = (0..3).map(|i| temp.path().join(format!("b{i}"))).collect();
        for dir in &dirs {
            std::fs::create_dir_all(dir.join("d")).unwrap();
            std::fs::write(dir.join("d/x"), b"x").unwrap();
        }
        let outside = temp.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("x"), b"keep").unwrap();
        std::fs::remove_dir_all(dirs[2].join("d")).unwrap();
        std::os::unix::fs::symlink(&outside, dirs[2].join("d")).unwrap();
        let whiteouts = Whiteouts {
            branches: dirs
                .iter()
                .enumerate()
                .map(|(i, d)| (format!("b{i}"), d.clone()))
                .collect(),
        };
        let change = |path: &str, kind| Change {
            branch: 0,
            path: path.into(),
            kind,
            is_dir: false,
        };
        let rest = whiteouts.take(vec![
            change("d/.wh.x", ChangeKind::Write),
            change("d/y", ChangeKind::Write),
        ]);
        assert_eq!(rest, [change("d/y", ChangeKind::Write)]);
        assert!(dirs[0].join("d/x").exists(), "the whiteout's own branch");
        assert!(!dirs[1].join("d/x").exists(), "a later branch");
        assert!(outside.join("x").exists(), "through a link");
        // A whiteout that goes away hides nothing any more.
        std::fs::write(dirs[1].join("d/x"), b"x").unwrap();
        whiteouts.take(vec![change("d/.wh.x", ChangeKind::Delete)]);
        assert!(dirs[1].join("d/x").exists());
    }
}
