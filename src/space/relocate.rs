//! Moving one file from a branch directory to another, so that it is sent
//! to the other branch's cloud (or one directory, with what it holds, when
//! its name cannot go to its cloud: see [`crate::sync::case`]). The path
//! seen through the mount does not change: the union shows the file from
//! whichever branch holds it.
//!
//! The move is one `rename(2)` on the branches' filesystem, so the file is
//! never missing or doubled, and a process that has it open keeps its
//! handle. It never replaces anything: a file of that name already in the
//! other branch is left alone and the move is refused.
//!
//! Users make the paths inside branches (through the mount), and msync runs
//! as root: both sides are walked one directory at a time from the branch
//! root, never through a symlink, and the rename is made between the two
//! directories so opened. A symlink anywhere on either path refuses the
//! move.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, AtFlags, OFlag, RenameFlags, openat, renameat2};
use nix::sys::stat::{FileStat, Mode, SFlag, fchmod, fstat, fstatat, mkdirat};
use nix::unistd::{Gid, Uid, fchown};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum RelocateError {
    #[error("{}: gone", .0.display())]
    Gone(PathBuf),
    #[error("{}: neither a regular file nor a directory", .0.display())]
    NotAFile(PathBuf),
    #[error("{} already exists", .0.display())]
    TargetExists(PathBuf),
    #[error("{}: a symlink or a file where a directory should be; msync moves nothing through a link", .0.display())]
    NotADirectory(PathBuf),
    #[error(
        "{} and {} are on different filesystems, so the file cannot move between them at once",
        .from.display(),
        .to.display()
    )]
    CrossDevice { from: PathBuf, to: PathBuf },
    #[error("{}: {error}", .path.display())]
    Io { path: PathBuf, error: Errno },
}

/// Moves `relative` (a regular file or a directory) from branch directory
/// `from_root` to `to_root`, making its parent directories there as they
/// are in `from_root` (mode and owner).
pub fn move_file(from_root: &Path, to_root: &Path, relative: &Path) -> Result<(), RelocateError> {
    let source = from_root.join(relative);
    let target = to_root.join(relative);
    let (parent, name) = match (relative.parent(), relative.file_name()) {
        (Some(parent), Some(name)) => (parent, name),
        _ => return Err(RelocateError::NotAFile(source)),
    };
    if relative
        .components()
        .any(|c| !matches!(c, Component::Normal(_)))
    {
        return Err(RelocateError::NotAFile(source));
    }
    let (from_dir, like) = walk(from_root, parent, None)?;
    match fstatat(&from_dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(stat)
            if matches!(
                SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT,
                SFlag::S_IFREG | SFlag::S_IFDIR
            ) => {}
        Ok(_) => return Err(RelocateError::NotAFile(source)),
        Err(Errno::ENOENT) => return Err(RelocateError::Gone(source)),
        Err(error) => {
            return Err(RelocateError::Io {
                path: source,
                error,
            });
        }
    }
    let (to_dir, _) = walk(to_root, parent, Some(&like))?;
    match renameat2(
        &from_dir,
        name,
        &to_dir,
        name,
        RenameFlags::RENAME_NOREPLACE,
    ) {
        Ok(()) => Ok(()),
        Err(Errno::EEXIST) => Err(RelocateError::TargetExists(target)),
        Err(Errno::ENOENT) => Err(RelocateError::Gone(source)),
        Err(Errno::EXDEV) => Err(RelocateError::CrossDevice {
            from: from_root.to_path_buf(),
            to: to_root.to_path_buf(),
        }),
        Err(error) => Err(RelocateError::Io {
            path: source,
            error,
        }),
    }
}

/// Opens directory `relative` below `root`, one component at a time and
/// never through a symlink; returns it with the stat of each component.
/// With `like`, a missing component is made as its counterpart there.
fn walk(
    root: &Path,
    relative: &Path,
    like: Option<&[FileStat]>,
) -> Result<(OwnedFd, Vec<FileStat>), RelocateError> {
    let flags = OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_RDONLY;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |error| RelocateError::Io { path, error }
    };
    let mut dir = openat(AT_FDCWD, root, flags, Mode::empty()).map_err(io(root))?;
    let mut stats = Vec::new();
    let mut here = root.to_path_buf();
    for (depth, part) in relative.components().enumerate() {
        here.push(part);
        let next = match openat(&dir, part.as_os_str(), flags, Mode::empty()) {
            Err(Errno::ENOENT) if like.is_some() => {
                let model = like
                    .and_then(|l| l.get(depth))
                    .ok_or(RelocateError::Gone(here.clone()))?;
                make_dir_like(&dir, part.as_os_str(), model, &here)?;
                openat(&dir, part.as_os_str(), flags, Mode::empty())
            }
            other => other,
        };
        dir = match next {
            Ok(fd) => fd,
            Err(Errno::ELOOP | Errno::ENOTDIR) => return Err(RelocateError::NotADirectory(here)),
            Err(Errno::ENOENT) => return Err(RelocateError::Gone(here)),
            Err(error) => return Err(io(&here)(error)),
        };
        stats.push(fstat(dir.as_fd()).map_err(io(&here))?);
    }
    Ok((dir, stats))
}

/// Makes directory `name` in `parent` with the mode and owner of `model`;
/// one made meanwhile (by the union, by another move) is fine.
fn make_dir_like(
    parent: &OwnedFd,
    name: &std::ffi::OsStr,
    model: &FileStat,
    path: &Path,
) -> Result<(), RelocateError> {
    let io = |error| RelocateError::Io {
        path: path.to_path_buf(),
        error,
    };
    match mkdirat(parent, name, Mode::from_bits_truncate(0o700)) {
        Ok(()) => {}
        Err(Errno::EEXIST) => return Ok(()),
        Err(error) => return Err(io(error)),
    }
    let flags = OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_RDONLY;
    let made = openat(parent, name, flags, Mode::empty()).map_err(io)?;
    fchown(
        &made,
        Some(Uid::from_raw(model.st_uid)),
        Some(Gid::from_raw(model.st_gid)),
    )
    .map_err(io)?;
    fchmod(&made, Mode::from_bits_truncate(model.st_mode & 0o7777)).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};

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
    fn a_directory_moves_whole_but_never_over_another() {
        let temp = tempfile::tempdir().unwrap();
        let (a, b) = (temp.path().join("a"), temp.path().join("b"));
        fs::create_dir_all(a.join("docs/sub")).unwrap();
        fs::create_dir_all(b.join("other")).unwrap();
        fs::write(a.join("docs/sub/f"), b"mine").unwrap();
        std::os::unix::fs::symlink("f", a.join("docs/sub/link")).unwrap();
        move_file(&a, &b, Path::new("docs")).unwrap();
        assert!(!a.join("docs").exists());
        assert_eq!(fs::read(b.join("docs/sub/f")).unwrap(), b"mine");
        assert!(b.join("docs/sub/link").is_symlink());
        fs::create_dir_all(a.join("other")).unwrap();
        let err = move_file(&a, &b, Path::new("other")).unwrap_err();
        assert!(matches!(err, RelocateError::TargetExists(_)), "{err}");
        assert!(a.join("other").is_dir());
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

    #[test]
    fn nothing_moves_through_a_symlink_on_either_side() {
        let temp = tempfile::tempdir().unwrap();
        let (a, b, outside) = (
            temp.path().join("a"),
            temp.path().join("b"),
            temp.path().join("outside"),
        );
        for dir in [&a, &b, &outside] {
            fs::create_dir_all(dir).unwrap();
        }
        fs::create_dir_all(a.join("d")).unwrap();
        fs::write(a.join("d/x"), b"mine").unwrap();
        // A user made the target's directory a link out of the branch.
        std::os::unix::fs::symlink(&outside, b.join("d")).unwrap();
        let err = move_file(&a, &b, Path::new("d/x")).unwrap_err();
        assert!(matches!(err, RelocateError::NotADirectory(_)), "{err}");
        assert!(a.join("d/x").exists());
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
        // Or the source's: a root-owned file must not be pulled in.
        fs::write(outside.join("secret"), b"root's").unwrap();
        std::os::unix::fs::symlink(&outside, a.join("e")).unwrap();
        let err = move_file(&a, &b, Path::new("e/secret")).unwrap_err();
        assert!(matches!(err, RelocateError::NotADirectory(_)), "{err}");
        assert!(outside.join("secret").exists());
    }
}
