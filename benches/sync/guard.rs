//! Clean-up however the bench ends. Normal ends and panics go through the
//! `Drop`s of the fixtures (stop the service, unmount), the S driver (kill
//! inotifywait) and the environment (stop sshd, remove the data). A signal
//! (Ctrl-C on `make bench`, SIGTERM) would skip them, and the msync
//! service lives in its own session, so it would survive with its mount:
//! SIGINT, SIGTERM and SIGHUP are taken by a thread that stops every
//! service still registered here, unmounts, kills the children, removes
//! the data and exits 130.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use nix::sys::signal::{SigSet, Signal, kill};
use nix::unistd::Pid;

struct Registry {
    /// The msync binary and the environment its commands need.
    msync: Option<(PathBuf, Vec<(OsString, OsString)>)>,
    /// (install dir, mount point) of every running service.
    services: Vec<(PathBuf, PathBuf)>,
    /// Child processes to kill (inotifywait, rclone).
    pids: Vec<u32>,
    /// sshd's pid file.
    sshd_pid_file: Option<PathBuf>,
    /// The scratch directory, unless it is kept.
    scratch: Option<PathBuf>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    msync: None,
    services: Vec::new(),
    pids: Vec::new(),
    sshd_pid_file: None,
    scratch: None,
});

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(|p| p.into_inner())
}

/// Blocks the signals in this thread (and so in every thread started
/// after) and takes them on a thread of their own. Call first in `main`.
pub fn install() {
    let mut set = SigSet::empty();
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(signal);
    }
    set.thread_block().expect("blocking signals");
    std::thread::Builder::new()
        .name("bench-signals".into())
        .spawn(move || {
            if let Ok(signal) = set.wait() {
                eprintln!(
                    "sync bench: {signal} received: stopping services, unmounting, cleaning up"
                );
                cleanup();
                std::process::exit(130);
            }
        })
        .expect("starting the signal thread");
}

pub fn set_msync(program: &Path, envs: Vec<(OsString, OsString)>) {
    registry().msync = Some((program.to_owned(), envs));
}

pub fn set_scratch(path: Option<&Path>) {
    registry().scratch = path.map(Path::to_owned);
}

pub fn set_sshd_pid_file(path: &Path) {
    registry().sshd_pid_file = Some(path.to_owned());
}

pub fn service_started(install: &Path, mount: &Path) {
    registry()
        .services
        .push((install.to_owned(), mount.to_owned()));
}

pub fn service_stopped(install: &Path) {
    registry().services.retain(|(i, _)| i != install);
}

pub fn child_started(pid: u32) {
    registry().pids.push(pid);
}

pub fn child_ended(pid: u32) {
    registry().pids.retain(|p| *p != pid);
}

/// Stops what is registered; used by the signal thread.
fn cleanup() {
    let mut registry = registry();
    for pid in registry.pids.drain(..) {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
    let services: Vec<_> = registry.services.drain(..).collect();
    if let Some((msync, envs)) = &registry.msync {
        for (install, mount) in &services {
            let _ = Command::new(msync)
                .envs(envs.iter().map(|(k, v)| (k, v)))
                .arg("stop")
                .arg(install)
                .arg(mount)
                .arg("--now")
                .stdin(Stdio::null())
                .output();
        }
    }
    let mut still_mounted = false;
    for (_, mount) in &services {
        if msync::union::is_mounted(mount) {
            let _ = Command::new("umount").arg("-l").arg(mount).status();
        }
        still_mounted |= msync::union::is_mounted(mount);
    }
    if let Some(file) = &registry.sshd_pid_file
        && let Ok(text) = std::fs::read_to_string(file)
        && let Ok(pid) = text.trim().parse::<i32>()
    {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
    // sshd's keys, config and log (its connections end with the services).
    if let Some(dir) = registry.sshd_pid_file.as_ref().and_then(|f| f.parent()) {
        std::thread::sleep(std::time::Duration::from_millis(200));
        let _ = std::fs::remove_dir_all(dir);
    }
    if let Some(scratch) = registry.scratch.take() {
        if still_mounted {
            eprintln!(
                "sync bench: a mount is still up; left {} in place",
                scratch.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&scratch);
        }
    }
}
