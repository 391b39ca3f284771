//! The bench's world: a scratch directory with its own HOME and rclone
//! config, a local-directory remote and a real SFTP server on 127.0.0.1,
//! and msync installs ([`Fixture`]) with one branch each.

use std::ffi::{OsStr, OsString};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use msync::service::{Reply, Request, ServiceStatus};
use msync::sync::BranchState;
use serde::Serialize;

use crate::guard;
use crate::sshd::SftpServer;

/// The two remotes every comparison runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// An rclone `alias` of a local directory: msync's own overhead.
    Local,
    /// Debian's sshd on 127.0.0.1: a real network protocol, requests logged.
    Sftp,
}

impl Kind {
    /// The rclone remote's name in the bench's config.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Local => "local",
            Kind::Sftp => "sftp",
        }
    }
}

pub struct Env {
    pub scratch: tempfile::TempDir,
    pub sftp: SftpServer,
    pub msync: PathBuf,
    pub librclone: PathBuf,
}

impl Env {
    pub fn new(msync: PathBuf, librclone: PathBuf, keep: bool) -> Env {
        let mut scratch = tempfile::Builder::new()
            .prefix("msync-bench-sync-")
            .tempdir()
            .expect("temp dir");
        scratch.disable_cleanup(keep);
        guard::set_scratch((!keep).then_some(scratch.path()));
        for dir in ["home/.config", "home/.cache", "clouds/local", "work"] {
            std::fs::create_dir_all(scratch.path().join(dir)).unwrap();
        }
        let mut sftp = SftpServer::start();
        // sshd runs each session's command (the SFTP subsystem, rclone's
        // md5sum) through root's shell, and bash then reads root's
        // ~/.bashrc, which on a developer's machine can do a lot (pyenv
        // init and rehash under a machine-wide lock: 0.1 s to a minute per
        // session). No real SFTP server does that per request: with
        // SHLVL=1 in the session's environment bash skips ~/.bashrc.
        let config = sftp.root().parent().unwrap().join("sshd_config");
        let mut text = std::fs::read_to_string(&config).unwrap();
        text.push_str("SetEnv SHLVL=1\n");
        std::fs::write(&config, text).unwrap();
        sftp.restart();
        guard::set_sshd_pid_file(&sftp.root().parent().unwrap().join("sshd.pid"));
        let config = format!(
            "[local]\ntype = alias\nremote = {}\n\n{}",
            scratch.path().join("clouds/local").display(),
            sftp.rclone_section("sftp")
        );
        std::fs::write(scratch.path().join("rclone.conf"), config).unwrap();
        let env = Env {
            scratch,
            sftp,
            msync,
            librclone,
        };
        guard::set_msync(&env.msync, env.envs());
        env
    }

    pub fn path(&self) -> &Path {
        self.scratch.path()
    }

    fn envs(&self) -> Vec<(OsString, OsString)> {
        let home = self.path().join("home");
        vec![
            ("HOME".into(), home.clone().into()),
            ("XDG_CONFIG_HOME".into(), home.join(".config").into()),
            ("XDG_CACHE_HOME".into(), home.join(".cache").into()),
            (
                "RCLONE_CONFIG".into(),
                self.path().join("rclone.conf").into(),
            ),
            ("MSYNC_LIBRCLONE".into(), self.librclone.clone().into()),
        ]
    }

    /// A command isolated from the machine's own rclone and msync set-up.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new(program);
        command
            .current_dir(self.path())
            .envs(self.envs())
            .stdin(Stdio::null());
        command
    }

    pub fn msync(&self) -> Command {
        self.command(&self.msync)
    }

    /// Debian's rclone CLI on the same config.
    pub fn rclone(&self) -> Command {
        self.command("rclone")
    }

    /// The directory on disk behind `<kind>:` (both remotes are local
    /// directories underneath).
    pub fn remote_root(&self, kind: Kind) -> PathBuf {
        match kind {
            Kind::Local => self.path().join("clouds/local"),
            Kind::Sftp => self.sftp.root().to_owned(),
        }
    }

    /// The SFTP server's log: sshd's lines and one line per SFTP request.
    pub fn sftp_log(&self) -> SftpLog {
        SftpLog {
            path: self.sftp.root().parent().unwrap().join("sshd.log"),
        }
    }
}

/// Reads sshd's log from an offset on.
pub struct SftpLog {
    path: PathBuf,
}

impl SftpLog {
    pub fn len(&self) -> u64 {
        std::fs::metadata(&self.path).map_or(0, |m| m.len())
    }

    pub fn since(&self, offset: u64) -> String {
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(&self.path) {
            file.seek(SeekFrom::Start(offset)).unwrap();
            let mut raw = Vec::new();
            file.read_to_end(&mut raw).unwrap();
            text = String::from_utf8_lossy(&raw).into_owned();
        }
        text
    }
}

/// Runs a command and insists it succeeds.
pub fn run(command: &mut Command) -> Output {
    let output = command.output().expect("spawning a command");
    assert!(
        output.status.success(),
        "command failed: {command:?}\nstatus: {}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// An msync install with one branch, replicated to `<kind>:<label>`.
pub struct Fixture<'e> {
    env: &'e Env,
    pub kind: Kind,
    pub label: String,
    pub install: PathBuf,
    pub mount: PathBuf,
    pub branch: PathBuf,
    /// `<remote>:<label>`.
    pub remote: String,
    /// The remote directory on disk.
    pub remote_dir: PathBuf,
    running: bool,
}

impl<'e> Fixture<'e> {
    pub fn new(env: &'e Env, kind: Kind, label: &str) -> Fixture<'e> {
        Fixture::at(env, kind, label, label)
    }

    /// A fresh install `label` whose remote directory is `remote_path`
    /// (several installs in turn can share one).
    pub fn at(env: &'e Env, kind: Kind, label: &str, remote_path: &str) -> Fixture<'e> {
        let install = env.path().join(label).join("install");
        let mount = env.path().join(label).join("mnt");
        run(env.msync().arg("install").arg(&install).args([
            "--remotes",
            kind.name(),
            "--remote-path",
            remote_path,
        ]));
        let remote_dir = env.remote_root(kind).join(remote_path);
        std::fs::create_dir_all(&remote_dir).unwrap();
        Fixture {
            env,
            kind,
            label: label.to_owned(),
            branch: install.join("branches").join(kind.name()),
            install,
            mount,
            remote: format!("{}:{remote_path}", kind.name()),
            remote_dir,
            running: false,
        }
    }

    /// `msync start` with the given debounce; returns once the service
    /// answers (what `msync start` waits for).
    pub fn start(&mut self, debounce: Duration) {
        guard::service_started(&self.install, &self.mount);
        self.running = true;
        run(self
            .env
            .msync()
            .arg("start")
            .arg(&self.install)
            .arg(&self.mount)
            .arg("--debounce")
            .arg(format!("{}ms", debounce.as_millis())));
    }

    pub fn stop(&mut self) {
        run(self
            .env
            .msync()
            .arg("stop")
            .arg(&self.install)
            .arg(&self.mount));
        self.running = false;
        guard::service_stopped(&self.install);
    }

    pub fn status(&self) -> ServiceStatus {
        let socket = self.install.join("run/msync.sock");
        match msync::service::request(&socket, &Request::Status, Duration::from_secs(10)) {
            Ok(Reply::Status(status)) => status,
            other => panic!(
                "{}: no status from the service: {other:?}\n--- msync.log (end)\n{}",
                self.label,
                self.log_tail()
            ),
        }
    }

    /// Every branch idle with nothing queued or in flight, after at least
    /// one sync (the start's reconcile).
    pub fn is_settled(status: &ServiceStatus) -> bool {
        status.branches.iter().all(|b| {
            b.state == BranchState::Idle
                && b.queued == 0
                && b.in_flight.is_empty()
                && b.last_sync.is_some()
        })
    }

    /// Polls the status every 100 ms until it is settled (once); panics
    /// with the status and the log after `timeout`.
    pub fn wait_settled(&self, timeout: Duration) -> ServiceStatus {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.status();
            if Fixture::is_settled(&status) {
                return status;
            }
            // msync will not go on by itself from an error: say so now.
            assert!(
                !status
                    .branches
                    .iter()
                    .any(|b| b.state == BranchState::Error),
                "{}: a branch is in error: {status:#?}\n--- msync.log (end)\n{}",
                self.label,
                self.log_tail()
            );
            assert!(
                Instant::now() < deadline,
                "{}: the service did not settle within {timeout:?}: {status:#?}\n--- msync.log (end)\n{}",
                self.label,
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Settled twice in a row, 100 ms apart: nothing left to do.
    pub fn wait_quiet(&self, timeout: Duration) -> ServiceStatus {
        let deadline = Instant::now() + timeout;
        loop {
            self.wait_settled(deadline.saturating_duration_since(Instant::now()));
            std::thread::sleep(Duration::from_millis(100));
            let second = self.status();
            if Fixture::is_settled(&second) {
                return second;
            }
        }
    }

    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.install.join("msync.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Fixture<'_> {
    fn drop(&mut self) {
        if self.running {
            let _ = self
                .env
                .msync()
                .arg("stop")
                .arg(&self.install)
                .arg(&self.mount)
                .arg("--now")
                .output();
            guard::service_stopped(&self.install);
        }
        if msync::union::is_mounted(&self.mount) {
            let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
        }
    }
}
