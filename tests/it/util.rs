//! Helpers shared by the integration tests: run the real `msync` binary in
//! an isolated environment (its own HOME, cache and rclone config), run
//! Debian's `rclone` CLI as an independent checker, and report everything
//! about a failed command.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use msync::rclone::{LoadOptions, Rclone};

/// The msync binary cargo built for these tests.
pub fn msync_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_msync"))
}

/// The librclone.so the tests use: `$MSYNC_LIBRCLONE` (set by `make test`),
/// else the one beside the test binary's msync. Missing is a loud failure.
pub fn librclone_path() -> PathBuf {
    let path = std::env::var_os("MSYNC_LIBRCLONE")
        .map(PathBuf::from)
        .unwrap_or_else(|| msync_bin().with_file_name("librclone.so"));
    assert!(
        path.is_file(),
        "librclone.so not found at {}: build it with `make build` (or run the tests with `make test`)",
        path.display()
    );
    path
}

/// The process-wide librclone, loaded with an empty config.
pub fn rclone() -> Rclone {
    static CONFIG: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    let dir = CONFIG.get_or_init(|| tempfile::tempdir().expect("temp dir"));
    let config_file = dir.path().join("rclone.conf");
    if !config_file.exists() {
        std::fs::write(&config_file, "").expect("writing an empty rclone.conf");
    }
    Rclone::load(&LoadOptions {
        library: Some(librclone_path()),
        config_file: Some(config_file),
    })
    .expect("loading librclone")
}

/// Fails loudly, with the install command, when a tool the tests rely on is
/// missing: no test is skipped silently.
pub fn require_tool(program: &str, package: &str) {
    assert!(
        msync::union::find_on_path(program).is_some(),
        "{program} is required by this test: install it with `apt-get install {package}` (or `make deps`)"
    );
}

/// A scratch directory with an isolated environment for msync and rclone.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let dir = tempfile::Builder::new()
            .prefix("msync-test-")
            .tempdir()
            .expect("temp dir");
        std::fs::create_dir_all(dir.path().join("home")).unwrap();
        std::fs::write(dir.path().join("rclone.conf"), "").unwrap();
        Sandbox { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The rclone config file both msync and the rclone CLI use here.
    pub fn config(&self) -> PathBuf {
        self.path().join("rclone.conf")
    }

    pub fn write_config(&self, text: &str) {
        std::fs::write(self.config(), text).unwrap();
    }

    /// Makes `dir/name` hold `len` bytes of a simple pattern.
    pub fn make_file(&self, relative: &str, len: usize) -> PathBuf {
        let path = self.path().join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, data).unwrap();
        path
    }

    /// A command for the msync binary, isolated from the user's setup.
    pub fn msync<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.command(msync_bin(), args)
    }

    /// A command for any program, isolated like `msync`.
    pub fn command<I, S>(&self, program: impl AsRef<OsStr>, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = Command::new(program);
        self.isolate(&mut command);
        command.args(args);
        command
    }

    /// A command for Debian's rclone CLI, on the same config.
    pub fn rclone_cli<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        require_tool("rclone", "rclone");
        let mut command = Command::new("rclone");
        self.isolate(&mut command);
        command.args(args);
        command
    }

    fn isolate(&self, command: &mut Command) {
        command
            .current_dir(self.path())
            .env("HOME", self.path().join("home"))
            .env("XDG_CONFIG_HOME", self.path().join("home/.config"))
            .env("XDG_CACHE_HOME", self.path().join("home/.cache"))
            .env("RCLONE_CONFIG", self.config())
            .env("MSYNC_LIBRCLONE", librclone_path())
            // Debian's rclone CLI cannot reach S3 while AWS_CA_BUNDLE is
            // set (its AWS SDK cannot load it into rclone's HTTP
            // transport), and some machines set it for everyone. msync's
            // librclone copes (s3.rs sets it on purpose); the rest keep it
            // out so msync and its witness see the same TLS set-up.
            .env_remove("AWS_CA_BUNDLE")
            .stdin(Stdio::null());
    }

    /// Lists `fs` with the rclone CLI: (path, size) of every file, sorted.
    pub fn remote_files(&self, fs: &str) -> Vec<(String, u64)> {
        let output = run(self.rclone_cli(["lsjson", "-R", "--files-only", fs]));
        let entries: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).unwrap();
        let mut files: Vec<(String, u64)> = entries
            .iter()
            .map(|e| {
                (
                    e["Path"].as_str().unwrap().to_owned(),
                    e["Size"].as_u64().unwrap(),
                )
            })
            .collect();
        files.sort();
        files
    }
}

/// Describes a finished command for an assertion message.
pub fn describe(command: &Command, output: &Output) -> String {
    format!(
        "command: {:?}\ncwd: {:?}\nstatus: {}\n--- stdout\n{}\n--- stderr\n{}",
        command,
        command.get_current_dir(),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs a command and insists it succeeds.
pub fn run(mut command: Command) -> Output {
    let output = command.output().expect("spawning the command");
    assert!(
        output.status.success(),
        "command failed\n{}",
        describe(&command, &output)
    );
    output
}

/// Runs a command and insists it exits with `code`.
pub fn run_expecting(mut command: Command, code: i32) -> Output {
    let output = command.output().expect("spawning the command");
    assert_eq!(
        output.status.code(),
        Some(code),
        "unexpected exit status\n{}",
        describe(&command, &output)
    );
    output
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A /proc/sys value set for a while; the old value is written back on
/// drop, also when the test panics.
///
/// Only tests whose names contain `inotify_limit` lower inotify limits:
/// `make test` runs them on their own, one at a time, after every other
/// test, because a limit lowered for one test is lowered for every inotify
/// user on the machine.
pub struct Sysctl {
    path: &'static str,
    saved: String,
}

impl Sysctl {
    pub fn set(path: &'static str, value: u64) -> Sysctl {
        let saved = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("reading {path}: {e} (these tests run as root)"));
        std::fs::write(path, value.to_string())
            .unwrap_or_else(|e| panic!("writing {value} to {path}: {e}"));
        Sysctl { path, saved }
    }

    /// Writes the old value back now; dropping the guard does the same.
    pub fn restore(self) {}
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(self.path, self.saved.trim()) {
            // Not a panic: this may run while unwinding.
            eprintln!(
                "COULD NOT RESTORE {} to {}: {e}; restore it by hand",
                self.path,
                self.saved.trim()
            );
        }
    }
}

/// A tmpfs of a given size mounted for a test; unmounted when dropped, even
/// on failure.
pub struct Tmpfs {
    pub path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`mount -o size=` syntax: 40m, 1g) at
    /// `path`, made if missing.
    pub fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        nix::mount::mount(
            Some("msync-test"),
            path,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(format!("size={size},mode=0755").as_str()),
        )
        .unwrap_or_else(|err| panic!("mounting a tmpfs at {}: {err}", path.display()));
        Tmpfs {
            path: path.to_path_buf(),
        }
    }

    /// Gives it another size, keeping what it holds.
    pub fn resize(&self, size: &str) {
        nix::mount::mount(
            None::<&str>,
            &self.path,
            None::<&str>,
            nix::mount::MsFlags::MS_REMOUNT,
            Some(format!("size={size}").as_str()),
        )
        .unwrap_or_else(|err| panic!("resizing the tmpfs at {}: {err}", self.path.display()));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        while mounts_at(&self.path) > 0 {
            if nix::mount::umount2(&self.path, nix::mount::MntFlags::MNT_DETACH).is_err() {
                break;
            }
        }
    }
}

/// How many mounts /proc/self/mountinfo lists at `path`.
pub fn mounts_at(path: &Path) -> usize {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .filter(|line| line.split(' ').nth(4) == path.to_str())
        .count()
}

/// Waits until something listens on `port` of 127.0.0.1; fails naming
/// `server` after `timeout`.
pub fn wait_listening(server: &str, port: u16, timeout: std::time::Duration) {
    let deadline = std::time::Instant::now() + timeout;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "{server} did not listen on 127.0.0.1:{port} within {timeout:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// A port of 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("binding a free port")
        .local_addr()
        .unwrap()
        .port()
}
