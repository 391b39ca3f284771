//! The pid file, locked with flock(2) for as long as the service runs: the
//! lock, not the file's existence, says whether a service is running, so a
//! file left by a crash or a reboot never blocks a new start.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::install::open_private;

/// The held lock; dropping it releases the lock.
pub struct PidLock {
    _file: Flock<File>,
}

/// Why the lock could not be taken.
#[derive(Debug)]
pub enum LockError {
    /// Another service holds it.
    Running {
        pid: Option<u32>,
    },
    Io(std::io::Error),
}

fn open(path: &Path) -> std::io::Result<File> {
    open_private(
        path,
        OpenOptions::new().read(true).write(true).truncate(false),
    )
}

impl PidLock {
    /// Takes the lock and writes this process's pid.
    pub fn acquire(path: &Path) -> Result<PidLock, LockError> {
        let file = open(path).map_err(LockError::Io)?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut locked) => {
                locked.set_len(0).map_err(LockError::Io)?;
                locked.rewind().map_err(LockError::Io)?;
                writeln!(locked, "{}", std::process::id()).map_err(LockError::Io)?;
                Ok(PidLock { _file: locked })
            }
            Err((mut file, Errno::EWOULDBLOCK)) => Err(LockError::Running {
                pid: read_pid(&mut file),
            }),
            Err((_, errno)) => Err(LockError::Io(errno.into())),
        }
    }
}

impl PidLock {
    /// [`PidLock::acquire`], waiting up to `grace` while the holder is
    /// dying: a killed multi-threaded service shows its leader as a zombie
    /// while another of its threads still holds the lock, for as long as
    /// that thread takes to leave the kernel (a FUSE request, say).
    pub fn acquire_after_dying(path: &Path, grace: Duration) -> Result<PidLock, LockError> {
        let deadline = Instant::now() + grace;
        loop {
            match PidLock::acquire(path) {
                Err(LockError::Running { pid: Some(pid) })
                    if is_dying(pid) && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(50));
                }
                other => return other,
            }
        }
    }
}

/// Whether process `pid` has exited or is exiting: gone, a zombie, or dead
/// (`X`). Its lock is then on its way out.
fn is_dying(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state follows the command name, which may itself hold ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| matches!(state, 'Z' | 'X' | 'x')),
    }
}

/// How long a caller waits for a service that holds the pid lock while it
/// dies (see [`PidLock::acquire_after_dying`]).
pub const DYING_HOLDER_GRACE: Duration = Duration::from_secs(30);

/// The pid of the running service, or `None` when none runs. A service
/// that is dying is waited for, up to [`DYING_HOLDER_GRACE`].
pub fn running_pid(path: &Path) -> Option<u32> {
    if !path.exists() {
        return None;
    }
    match PidLock::acquire_after_dying(path, DYING_HOLDER_GRACE) {
        Ok(_released_at_once) => None,
        Err(LockError::Running { pid }) => Some(pid.unwrap_or(0)),
        Err(LockError::Io(_)) => None,
    }
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_second_lock_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("msync.pid");
        let held = PidLock::acquire(&path).unwrap();
        assert_eq!(running_pid(&path), Some(std::process::id()));
        drop(held);
        assert_eq!(running_pid(&path), None);
    }

    #[test]
    fn a_live_holder_is_not_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("msync.pid");
        let _held = PidLock::acquire(&path).unwrap();
        // This process holds it and is alive: refused at once, not after
        // the grace.
        let started = Instant::now();
        let Err(LockError::Running { pid }) =
            PidLock::acquire_after_dying(&path, Duration::from_secs(60))
        else {
            panic!("a held lock was taken");
        };
        assert_eq!(pid, Some(std::process::id()));
        assert!(started.elapsed() < Duration::from_secs(30));
        assert!(!is_dying(std::process::id()));
    }

    #[test]
    fn a_symlink_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, "keep").unwrap();
        let path = dir.path().join("msync.pid");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let Err(LockError::Io(err)) = PidLock::acquire(&path) else {
            panic!("a symlinked pid file was accepted");
        };
        assert!(err.to_string().contains("is a symlink"), "{err}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
    }

    #[test]
    fn a_readable_pid_file_is_made_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("msync.pid");
        std::fs::write(&path, "1\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let _held = PidLock::acquire(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
