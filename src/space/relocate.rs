//! Moving one file from a branch directory to another, so that it is sent
//! to the other branch's cloud. The path seen through the mount does not
//! change: the union shows the file from whichever branch holds it.
//!
//! The move is one `rename(2)` on the branches' filesystem, so the file is
//! never missing or doubled, and a process that has it open keeps its
//! handle. It never replaces anything: a file of that name already in the
//! other branch is left alone and the move is refused.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
use nix::unistd::{Gid, Uid, chown};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum RelocateError {
    #[error("{}: gone", .0.display())]
    Gone(PathBuf),
    #[error("{}: not a regular file", .0.display())]
    NotAFile(PathBuf),
    #[error("{} already exists", .0.display())]
    TargetExists(PathBuf),
    #[error(
        "{} and {} are on different filesystems, so the file cannot move between them at once",
        .from.display(),
        .to.display()
    )]
    CrossDevice { from: PathBuf, to: PathBuf },
    #[error("{}: {error}", .path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RelocateError + '_ {
    move |error| RelocateError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// Moves `relative` from branch directory `from_root` to `to_root`,
/// making its parent directories there as they are in `from_root` (mode
/// and owner).
pub fn move_file(from_root: &Path, to_root: &Path, relative: &Path) -> Result<(), RelocateError> {
    let source = from_root.join(relative);
    let meta = match fs::symlink_metadata(&source) {
        Ok(meta) => meta,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Err(RelocateError::Gone(source));
        }
        Err(err) => return Err(io(&source)(err)),
    };
    if !meta.is_file() {
        return Err(RelocateError::NotAFile(source));
    }
    let target = to_root.join(relative);
    if let Some(parent) = relative.parent() {
        make_parents(from_root, to_root, parent)?;
    }
    match renameat2(
        AT_FDCWD,
        &source,
        AT_FDCWD,
        &target,
        RenameFlags::RENAME_NOREPLACE,
    ) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EEXIST) => Err(RelocateError::TargetExists(target)),
        Err(nix::errno::Errno::ENOENT) => Err(RelocateError::Gone(source)),
        Err(nix::errno::Errno::EXDEV) => Err(RelocateError::CrossDevice {
            from: from_root.to_path_buf(),
            to: to_root.to_path_buf(),
        }),
        Err(errno) => Err(io(&source)(errno.into())),
    }
}

/// Makes each missing directory of `parent` under `to_root`, like its
/// counterpart under `from_root`.
fn make_parents(from_root: &Path, to_root: &Path, parent: &Path) -> Result<(), RelocateError> {
    let mut relative = PathBuf::new();
    for part in parent.components() {
        relative.push(part);
        let made = to_root.join(&relative);
        if fs::symlink_metadata(&made).is_ok_and(|m| m.is_dir()) {
            continue;
        }
        let like = fs::metadata(from_root.join(&relative)).map_err(io(&relative))?;
        match fs::create_dir(&made) {
            Ok(()) => {}
            // Made meanwhile (by the union, by another move): fine.
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(err) => return Err(io(&made)(err)),
        }
        fs::set_permissions(&made, fs::Permissions::from_mode(like.mode() & 0o7777))
            .map_err(io(&made))?;
        chown(
            &made,
            Some(Uid::from_raw(like.uid())),
            Some(Gid::from_raw(like.gid())),
        )
        .map_err(|errno| io(&made)(errno.into()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::DirBuilderExt;

    #[test]
    fn a_file_moves_with_its_parents_made_alike() {
        let temp = tempfile::tempdir().unwrap();
        let (a, b) = (temp.path().join("a"), temp.path().join("b"));
        fs::DirBuilder::new()
            .mode(0o750)
            .recursive(true)
            .create(a.join("photos/2026"))
            .unwrap();
        fs::create_dir(&b).unwrap();
        fs::write(a.join("photos/2026/x.jpg"), b"jpeg").unwrap();

        move_file(&a, &b, Path::new("photos/2026/x.jpg")).unwrap();
        assert!(!a.join("photos/2026/x.jpg").exists());
        assert_eq!(fs::read(b.join("photos/2026/x.jpg")).unwrap(), b"jpeg");
        let mode = fs::metadata(b.join("photos/2026")).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o750);
    }

    #[test]
    fn nothing_is_replaced() {
        let temp = tempfile::tempdir().unwrap();
        let (a, b) = (temp.path().join("a"), temp.path().join("b"));
        fs::create_dir_all(&a).unwrap();
        fs::create_dir_all(&b).unwrap();
        fs::write(a.join("f"), b"mine").unwrap();
        fs::write(b.join("f"), b"theirs").unwrap();
        let err = move_file(&a, &b, Path::new("f")).unwrap_err();
        assert!(matches!(err, RelocateError::TargetExists(_)), "{err}");
        assert_eq!(fs::read(a.join("f")).unwrap(), b"mine");
        assert_eq!(fs::read(b.join("f")).unwrap(), b"theirs");
        let err = move_file(&a, &b, Path::new("missing")).unwrap_err();
        assert!(matches!(err, RelocateError::Gone(_)), "{err}");
    }
}
