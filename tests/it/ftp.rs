//! A real FTP server for the tests: Debian's vsftpd, run as a child of the
//! test process with a config of its own on a free port of 127.0.0.1
//! (never the system's service). Anonymous users may write, under the
//! `ftp` account, to `data/` below the server's root. FTP keeps no hashes
//! and cannot set modification times: it stands for the backends that
//! compare by size only.

use std::os::unix::fs::{PermissionsExt, chown};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::util::{free_port, require_tool, run, stdout, wait_listening};

const START_TIMEOUT: Duration = Duration::from_secs(120);
/// The account anonymous sessions run as: vsftpd's package makes it.
const FTP_USER: &str = "ftp";

pub struct FtpServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl FtpServer {
    /// Starts vsftpd and returns once it accepts connections.
    pub fn start() -> FtpServer {
        require_tool("vsftpd", "vsftpd");
        let dir = tempfile::Builder::new()
            .prefix("msync-ftp-")
            .tempdir()
            .unwrap();
        let root = dir.path().join("root");
        let data = root.join("data");
        let empty = dir.path().join("empty");
        for made in [&root, &data, &empty] {
            std::fs::create_dir_all(made).unwrap();
        }
        // vsftpd refuses a chroot its user can write to; the user writes
        // below it. Everyone may pass through the temp dir to reach them.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o555)).unwrap();
        let (uid, gid) = ftp_account();
        chown(&data, Some(uid), Some(gid)).unwrap();

        let port = free_port();
        let config = dir.path().join("vsftpd.conf");
        std::fs::write(&config, vsftpd_config(port, &root, &empty)).unwrap();
        let mut server = FtpServer {
            port,
            dir,
            child: None,
        };
        server.restart();
        server
    }

    /// Starts vsftpd again, on the same port and data, after [`stop`].
    ///
    /// [`stop`]: FtpServer::stop
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "vsftpd is running");
        let child = Command::new("vsftpd")
            .arg(self.dir.path().join("vsftpd.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting vsftpd");
        self.child = Some(child);
        wait_listening("vsftpd", self.port, START_TIMEOUT);
    }

    /// Stops the listener: no new session is taken. Sessions are processes
    /// of their own, and end with their clients.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// What the server stores, on its disk (`data/` as clients see it).
    pub fn data(&self) -> PathBuf {
        self.dir.path().join("root/data")
    }

    /// A config section for rclone's ftp backend named `name`, rooted at
    /// the writable `data/`, as the README says to set one up: vsftpd
    /// lists no dot files unless asked with `LIST -a`.
    pub fn rclone_section(&self, name: &str) -> String {
        self.rclone_section_listing(name, true)
    }

    /// The same, with rclone's `force_list_hidden` as given.
    pub fn rclone_section_listing(&self, name: &str, force_list_hidden: bool) -> String {
        let password = stdout(&run({
            let mut obscure = Command::new("rclone");
            obscure.args(["obscure", "msync-tests"]);
            obscure
        }));
        format!(
            "[{name}-server]\ntype = ftp\nhost = 127.0.0.1\nport = {}\nuser = anonymous\npass = {}\nforce_list_hidden = {force_list_hidden}\n\n[{name}]\ntype = alias\nremote = {name}-server:data\n",
            self.port,
            password.trim()
        )
    }
}

impl Drop for FtpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn ftp_account() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields[0] == FTP_USER)
        .map(|fields| (fields[2].parse().unwrap(), fields[3].parse().unwrap()))
        .expect("the ftp account vsftpd's package makes")
}

/// A standalone vsftpd on 127.0.0.1:`port` in the foreground: anonymous
/// sessions may upload, make directories, rename and delete below `root`.
/// No sandboxing that a container may lack (seccomp, namespaces), no logs.
fn vsftpd_config(port: u16, root: &Path, empty: &Path) -> String {
    format!(
        "listen=YES
listen_ipv6=NO
listen_address=127.0.0.1
listen_port={port}
background=NO
anonymous_enable=YES
local_enable=NO
no_anon_password=YES
ftp_username={FTP_USER}
anon_root={root}
write_enable=YES
anon_upload_enable=YES
anon_mkdir_write_enable=YES
anon_other_write_enable=YES
anon_umask=022
secure_chroot_dir={empty}
seccomp_sandbox=NO
isolate=NO
isolate_network=NO
pasv_address=127.0.0.1
max_per_ip=0
max_clients=0
xferlog_enable=NO
",
        root = root.display(),
        empty = empty.display()
    )
}
