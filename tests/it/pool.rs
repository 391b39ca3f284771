//! A running msync install for the service tests: an rclone config, an
//! install dir, a mount point, and helpers to start, stop, wait and check
//! the remotes with Debian's rclone CLI.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use msync::service::ServiceStatus;

use crate::util::{Sandbox, describe, require_tool, run};

/// The debounce the tests run the service with: short, to keep them fast.
pub const DEBOUNCE: &str = "200ms";

pub struct Pool {
    pub sandbox: Sandbox,
    pub install: PathBuf,
    pub mount: PathBuf,
    /// Branch name and remote (`name:msync`), in install order.
    pub branches: Vec<(String, String)>,
    running: bool,
}

impl Pool {
    /// Writes `config`, installs every remote in it.
    pub fn install(sandbox: Sandbox, config: &str) -> Pool {
        Pool::install_remotes(sandbox, config, None)
    }

    /// Writes `config`, installs the remotes named (all when `None`).
    pub fn install_remotes(sandbox: Sandbox, config: &str, remotes: Option<&str>) -> Pool {
        match remotes {
            Some(remotes) => Pool::install_with(sandbox, config, &["--remotes", remotes]),
            None => Pool::install_with(sandbox, config, &[]),
        }
    }

    /// Writes `config`, installs with `extra` options.
    pub fn install_with(sandbox: Sandbox, config: &str, extra: &[&str]) -> Pool {
        require_tool("mergerfs", "mergerfs");
        sandbox.write_config(config);
        let install = sandbox.path().join("install");
        let mount = sandbox.path().join("mnt");
        let mut command = sandbox.msync(["install", install.to_str().unwrap()]);
        command.args(extra);
        run(command);
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(install.join("msync.json")).unwrap()).unwrap();
        let branches = manifest["branches"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                (
                    b["name"].as_str().unwrap().to_owned(),
                    b["remote"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        Pool {
            sandbox,
            install,
            mount,
            branches,
            running: false,
        }
    }

    /// Local directories standing in for `count` clouds, as alias remotes.
    pub fn local_clouds(count: usize) -> Pool {
        let sandbox = Sandbox::new();
        let mut config = String::new();
        for i in 1..=count {
            let dir = sandbox.path().join(format!("clouds/cloud{i}"));
            std::fs::create_dir_all(&dir).unwrap();
            config.push_str(&format!(
                "[cloud{i}]\ntype = alias\nremote = {}\n\n",
                dir.display()
            ));
        }
        Pool::install(sandbox, &config)
    }

    pub fn branch_dir(&self, name: &str) -> PathBuf {
        self.install.join("branches").join(name)
    }

    pub fn msync<I, S>(&self, args: I) -> std::process::Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.sandbox.msync(args)
    }

    pub fn import(&self) {
        run(self.msync(["import", self.install.to_str().unwrap()]));
    }

    pub fn start(&mut self) {
        self.start_with(&[]);
    }

    /// Starts the service with `extra` options.
    pub fn start_with(&mut self, extra: &[&str]) {
        self.start_with_env(extra, &[]);
    }

    /// Starts the service with `extra` options and `env` in its
    /// environment.
    pub fn start_with_env(&mut self, extra: &[&str], env: &[(&str, &str)]) {
        let mut command = self.msync([
            "start",
            self.install.to_str().unwrap(),
            self.mount.to_str().unwrap(),
            "--debounce",
            DEBOUNCE,
        ]);
        command.args(extra).envs(env.iter().copied());
        run(command);
        self.running = true;
        assert!(
            msync::union::is_mounted(&self.mount),
            "not mounted after start"
        );
    }

    pub fn stop(&mut self) {
        run(self.msync([
            "stop",
            self.install.to_str().unwrap(),
            self.mount.to_str().unwrap(),
        ]));
        self.running = false;
        assert!(
            !msync::union::is_mounted(&self.mount),
            "still mounted after stop"
        );
    }

    pub fn status(&self) -> ServiceStatus {
        let mut command = self.msync(["status", self.install.to_str().unwrap(), "--json"]);
        let output = command.output().unwrap();
        assert!(
            matches!(output.status.code(), Some(0) | Some(6)),
            "status failed\n{}",
            describe(&command, &output)
        );
        serde_json::from_slice(&output.stdout).unwrap()
    }

    /// Waits until the watcher had time to report and every branch has
    /// nothing queued or in flight, twice in a row.
    pub fn settle(&self, timeout: Duration) -> ServiceStatus {
        std::thread::sleep(Duration::from_millis(700));
        let deadline = Instant::now() + timeout;
        let mut quiet = 0;
        loop {
            let status = self.status();
            let busy = status.branches.iter().any(|b| {
                b.queued > 0 || !b.in_flight.is_empty() || b.state != msync::sync::BranchState::Idle
            });
            quiet = if busy { 0 } else { quiet + 1 };
            if quiet >= 2 {
                return status;
            }
            if Instant::now() >= deadline {
                let log = self.log();
                let tail: Vec<&str> = log.lines().rev().take(80).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                panic!(
                    "the service did not settle: {status:#?}\nthe log's end:\n{}",
                    tail.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Polls `status` until branch `index` satisfies `wanted`.
    pub fn wait_for_branch(
        &self,
        index: usize,
        wanted: impl Fn(&msync::sync::BranchStatus) -> bool,
        timeout: Duration,
    ) -> msync::sync::BranchStatus {
        let deadline = Instant::now() + timeout;
        loop {
            let branch = self.status().branches.remove(index);
            if wanted(&branch) {
                return branch;
            }
            assert!(
                Instant::now() < deadline,
                "branch never got there: {branch:#?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Asserts with the rclone CLI that every branch equals its remote.
    pub fn assert_in_sync(&self) {
        for (name, remote) in &self.branches {
            let (check, output) = self.check_branch(name, remote);
            assert!(
                output.status.success(),
                "{name} differs from {remote}\n{}",
                describe(&check, &output)
            );
        }
    }

    /// Waits until every branch equals its remote (a moved file's old copy
    /// goes only after its new branch sent it), then asserts it.
    pub fn wait_in_sync(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.in_sync() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(500));
        }
        self.assert_in_sync();
    }

    /// Whether every branch equals its remote, by the rclone CLI.
    pub fn in_sync(&self) -> bool {
        self.branches
            .iter()
            .all(|(name, remote)| self.check_branch(name, remote).1.status.success())
    }

    /// `rclone check` of branch `name` against `remote`, msync's own files
    /// aside; the branch's symlinks compare as rclone stores them (its
    /// local backend's `links`, on the branch side only).
    fn check_branch(
        &self,
        name: &str,
        remote: &str,
    ) -> (std::process::Command, std::process::Output) {
        let branch = self.branch_dir(name);
        let branch = format!(":local,links:{}", branch.display());
        let mut check = self.sandbox.rclone_cli([
            "check",
            &branch,
            remote,
            "--exclude",
            "/.msync/**",
            "--exclude",
            "/.msync-branch",
        ]);
        let output = check.output().unwrap();
        (check, output)
    }

    /// (path, size) of every file of a remote, from the rclone CLI.
    pub fn remote_files(&self, remote: &str) -> Vec<(String, u64)> {
        self.sandbox
            .remote_files(remote)
            .into_iter()
            .filter(|(path, _)| !path.starts_with(".msync/") && path != ".msync-branch")
            .collect()
    }

    /// The paths of [`Pool::remote_files`].
    pub fn remote_names(&self, remote: &str) -> Vec<String> {
        self.remote_files(remote)
            .into_iter()
            .map(|(path, _)| path)
            .collect()
    }

    /// Which branch holds `relative` (mergerfs spreads new files).
    pub fn holder(&self, relative: &str) -> String {
        let holders: Vec<String> = self
            .branches
            .iter()
            .filter(|(name, _)| self.branch_dir(name).join(relative).exists())
            .map(|(name, _)| name.clone())
            .collect();
        assert_eq!(holders.len(), 1, "{relative} is in {holders:?}");
        holders[0].clone()
    }

    pub fn remote_of(&self, branch: &str) -> String {
        self.branches
            .iter()
            .find(|(n, _)| n == branch)
            .unwrap()
            .1
            .clone()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.install.join("msync.log")).unwrap_or_default()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        if self.running {
            let _ = self
                .msync([
                    "stop",
                    self.install.to_str().unwrap(),
                    self.mount.to_str().unwrap(),
                    "--now",
                ])
                .output();
        }
        if msync::union::is_mounted(&self.mount) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.mount)
                .status();
        }
    }
}

/// Writes `len` bytes of a pattern derived from `seed` to `path`.
pub fn write_file(path: &Path, len: usize, seed: u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let data: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect();
    std::fs::write(path, data).unwrap();
}
