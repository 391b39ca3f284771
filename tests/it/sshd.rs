//! A real SFTP server for the tests: Debian's OpenSSH `sshd`, run as a
//! child of the test process on a free port of 127.0.0.1, with throwaway
//! host and client keys, serving a temp directory.
//!
//! It never listens beyond loopback and never touches the machine's own
//! sshd, keys or config; the only shared thing it creates is sshd's
//! privilege separation directory `/run/sshd`, which the Debian package
//! would create anyway.
//!
//! Requests are logged: the SFTP subsystem is the stand-alone
//! `sftp-server -e -l VERBOSE` with its stderr appended to sshd's own log,
//! so [`SftpServer::log`] holds one line per SFTP request (`open "..."`,
//! `opendir "..."`, `stat name "..."`). `internal-sftp` cannot do this: it
//! logs to syslog, or with `-e` back to the client over the channel.

use std::fs::OpenOptions;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const SSHD: &str = "/usr/sbin/sshd";
const SFTP_SERVER: &str = "/usr/lib/openssh/sftp-server";
/// How long sshd may take to start listening before the test fails.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// One running (or stopped) sshd with its keys, config, log and data.
pub struct SftpServer {
    dir: tempfile::TempDir,
    root: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl SftpServer {
    /// Generates keys, writes the config and starts sshd; returns once it
    /// listens.
    pub fn start() -> SftpServer {
        for (program, package) in [
            (SSHD, "openssh-server"),
            (SFTP_SERVER, "openssh-sftp-server"),
        ] {
            assert!(
                Path::new(program).is_file(),
                "{program} not found: the SFTP tests need a real sshd; install it with \
                 `apt-get install {package}` (or `make deps`)"
            );
        }
        crate::util::require_tool("ssh-keygen", "openssh-client");
        assert!(
            nix::unistd::geteuid().is_root(),
            "the SFTP tests run sshd, which must be root to log in as root: run them as root"
        );

        let dir = tempfile::Builder::new()
            .prefix("msync-sshd-")
            .tempdir()
            .expect("temp dir for sshd");
        // The path goes into sshd_config and a shell command unquoted.
        let text = dir.path().to_str().expect("a UTF-8 temp path");
        assert!(
            text.chars()
                .all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c)),
            "unexpected characters in the temp dir {text:?}: set TMPDIR to a plain path"
        );
        std::fs::create_dir(dir.path().join("root")).unwrap();
        keygen(&dir.path().join("host_key"));
        keygen(&dir.path().join("client_key"));
        std::fs::copy(
            dir.path().join("client_key.pub"),
            dir.path().join("authorized_keys"),
        )
        .unwrap();

        let port = free_port();
        let host_key = std::fs::read_to_string(dir.path().join("host_key.pub")).unwrap();
        let host_key: Vec<&str> = host_key.split_whitespace().take(2).collect();
        std::fs::write(
            dir.path().join("known_hosts"),
            format!("[127.0.0.1]:{port} {}\n", host_key.join(" ")),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("sshd_config"),
            sshd_config(dir.path(), port),
        )
        .unwrap();

        let mut server = SftpServer {
            root: dir.path().join("root"),
            dir,
            port,
            child: None,
        };
        server.spawn();
        server
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory remote paths live in: the SFTP session starts here,
    /// so `remote:a/b` is `root()/a/b`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A config section for rclone's sftp backend named `name`. Host keys
    /// are checked against a known_hosts file holding this server's key;
    /// the shell type and hash commands are given so rclone never probes.
    pub fn rclone_section(&self, name: &str) -> String {
        self.rclone_section_via(name, self.port)
    }

    /// The same, reaching the server through `port` (a proxy in front of
    /// it), which its known host key is added for.
    pub fn rclone_section_via(&self, name: &str, port: u16) -> String {
        if port != self.port {
            let known_hosts = self.dir.path().join("known_hosts");
            let ours = std::fs::read_to_string(&known_hosts).unwrap();
            let key = ours.lines().next().unwrap().split_once(' ').unwrap().1;
            let line = format!("[127.0.0.1]:{port} {key}\n");
            if !ours.contains(&line) {
                std::fs::write(&known_hosts, ours + &line).unwrap();
            }
        }
        let mut options = self.options();
        options
            .iter_mut()
            .find(|(key, _)| *key == "port")
            .unwrap()
            .1 = port.to_string();
        format!(
            "[{name}]\ntype = sftp\n{}",
            options
                .iter()
                .map(|(key, value)| format!("{key} = {value}\n"))
                .collect::<String>()
        )
    }

    /// The same remote as an rclone connection string (`:sftp,...:`), for
    /// a process whose config file is fixed, like this test process's
    /// librclone. Append a path to it.
    pub fn connection_string(&self) -> String {
        let options: Vec<String> = self
            .options()
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect();
        format!(":sftp,{}:", options.join(","))
    }

    fn options(&self) -> Vec<(&'static str, String)> {
        let file = |name: &str| self.dir.path().join(name).display().to_string();
        vec![
            ("host", "127.0.0.1".into()),
            ("port", self.port.to_string()),
            ("user", "root".into()),
            ("key_file", file("client_key")),
            ("known_hosts_file", file("known_hosts")),
            ("shell_type", "unix".into()),
            ("md5sum_command", "md5sum".into()),
            ("sha1sum_command", "sha1sum".into()),
        ]
    }

    /// sshd's log with the SFTP requests, from the first start on.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The requests logged after `offset` (a length of [`SftpServer::log`]):
    /// one line per SFTP request that names a path (read, write and
    /// readdir are not logged at VERBOSE) and per remote command session
    /// (rclone's `md5sum`).
    pub fn requests_since(&self, offset: usize) -> Vec<String> {
        let log = self.log();
        log.get(offset..)
            .unwrap_or_default()
            .lines()
            .filter(|line| line.starts_with(COMMAND_SESSION) || sftp_request_kind(line).is_some())
            .map(str::to_owned)
            .collect()
    }

    /// Stops sshd and drops every connection it holds, as a server going
    /// down would. A no-op when already stopped.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // Each connection is a child process of the listener (which forks
        // per connection and then for the session), so killing the listener
        // alone would leave established connections working. Freeze the
        // whole tree first so nothing forks while it is collected, then kill
        // it all.
        let root = Pid::from_raw(child.id() as i32);
        let mut frozen = vec![root];
        let _ = kill(root, Signal::SIGSTOP);
        loop {
            let fresh: Vec<Pid> = descendants(root)
                .into_iter()
                .filter(|pid| !frozen.contains(pid))
                .collect();
            if fresh.is_empty() {
                break;
            }
            for pid in fresh {
                let _ = kill(pid, Signal::SIGSTOP);
                frozen.push(pid);
            }
        }
        for pid in frozen.iter().rev() {
            let _ = kill(*pid, Signal::SIGKILL);
        }
        child.wait().expect("reaping sshd");
    }

    /// Starts sshd again on the same port with the same keys and root.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("sshd.log")
    }

    fn spawn(&mut self) {
        // sshd refuses to start without its privilege separation directory.
        std::fs::create_dir_all("/run/sshd").expect("creating /run/sshd");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let log_before = self.log().len();
            let mut child = self.spawn_once();
            match self.wait_listening(&mut child, log_before, deadline) {
                Ok(()) => {
                    self.child = Some(child);
                    return;
                }
                // While the server was down, an outgoing connection may have
                // taken the port as its local port; it is freed soon.
                Err(status)
                    if self.log()[log_before..].contains("Address already in use")
                        && Instant::now() < deadline =>
                {
                    eprintln!("sshd: port {} busy ({status}), retrying", self.port);
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(status) => panic!(
                    "sshd {status} on port {}\n--- sshd log\n{}",
                    self.port,
                    self.log()
                ),
            }
        }
    }

    fn spawn_once(&self) -> Child {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        // sshd must be started by absolute path (it re-executes itself).
        // -E sends its log to the file; stderr catches what it prints before
        // it reads its options.
        Command::new(SSHD)
            .arg("-D")
            .arg("-f")
            .arg(self.dir.path().join("sshd_config"))
            .arg("-E")
            .arg(self.log_path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting sshd")
    }

    /// Waits for sshd to log that it listens; on failure, says how it
    /// failed (and leaves no process behind).
    fn wait_listening(
        &self,
        child: &mut Child,
        log_before: usize,
        deadline: Instant,
    ) -> Result<(), String> {
        let listening = format!("Server listening on 127.0.0.1 port {}.", self.port);
        loop {
            if self.log()[log_before..].contains(&listening) {
                return Ok(());
            }
            if let Some(status) = child.try_wait().unwrap() {
                return Err(format!("exited with {status} before listening"));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("did not listen within {START_TIMEOUT:?}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for SftpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn sshd_config(dir: &Path, port: u16) -> String {
    let d = dir.display();
    // The subsystem runs through root's shell, which appends the stand-alone
    // sftp-server's request log to sshd's log; -d starts each session in
    // root/, so relative remote paths land there.
    format!(
        "ListenAddress 127.0.0.1
Port {port}
HostKey {d}/host_key
AuthorizedKeysFile {d}/authorized_keys
PidFile {d}/sshd.pid
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PrintMotd no
X11Forwarding no
LogLevel VERBOSE
# Sessions run commands (the subsystem, rclone's md5sum) through root's
# bash, which would source ~/.bashrc for an ssh session; whatever that does
# (pyenv, prompts) is none of the tests' business. With SHLVL=1 bash counts
# itself nested and skips it.
SetEnv SHLVL=1
# rclone opens a connection per checker and transfer at once.
MaxStartups 64
MaxSessions 64
Subsystem sftp {SFTP_SERVER} -e -l VERBOSE -d {d}/root 2>>{d}/sshd.log
"
    )
}

fn keygen(path: &Path) {
    crate::util::run({
        let mut command = Command::new("ssh-keygen");
        command
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "msync-test", "-f"])
            .arg(path)
            .stdin(Stdio::null());
        command
    });
}

/// A port of 127.0.0.1 that was free a moment ago. Another process could
/// take it before sshd binds it; sshd then fails loudly with the log.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding a free port");
    listener.local_addr().unwrap().port()
}

/// Every process below `root`, found through the parent ids in /proc.
fn descendants(root: Pid) -> Vec<Pid> {
    let mut parents = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        // Field 4 of stat, after the command name in parentheses (which
        // may itself hold spaces and parentheses).
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some(ppid) = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|field| field.parse().ok())
        else {
            continue;
        };
        parents.push((Pid::from_raw(pid), Pid::from_raw(ppid)));
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parents
                .iter()
                .filter(|(_, ppid)| *ppid == parent)
                .map(|(pid, _)| *pid),
        );
        i += 1;
    }
    found.remove(0);
    found
}

/// How sshd logs a session that runs a command (rclone's `md5sum`) rather
/// than the SFTP subsystem.
pub const COMMAND_SESSION: &str = "Starting session: command";

/// The request a sftp-server log message stands for, if it is one.
pub fn sftp_request_kind(message: &str) -> Option<&'static str> {
    const KINDS: &[(&str, &str)] = &[
        ("open \"", "open"),
        ("close \"", "close"),
        ("opendir \"", "opendir"),
        ("closedir \"", "closedir"),
        ("stat name \"", "stat"),
        ("lstat name \"", "stat"),
        ("fstat \"", "stat"),
        ("set \"", "setstat"),
        ("fset \"", "setstat"),
        ("remove name \"", "remove"),
        ("rename old \"", "rename"),
        ("posix-rename old \"", "rename"),
        ("mkdir name \"", "mkdir"),
        ("rmdir name \"", "rmdir"),
        ("realpath \"", "realpath"),
        ("statvfs \"", "statvfs"),
        ("fstatvfs \"", "statvfs"),
        ("symlink old \"", "symlink"),
        ("readlink \"", "readlink"),
        ("copy-data ", "copy-data"),
        ("hardlink old \"", "hardlink"),
        ("fsync \"", "fsync"),
    ];
    KINDS
        .iter()
        .find(|(prefix, _)| message.starts_with(prefix))
        .map(|(_, kind)| *kind)
}
