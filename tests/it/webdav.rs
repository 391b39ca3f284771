//! A real WebDAV server for the tests: Debian's rclone CLI serving a temp
//! directory (`rclone serve webdav`) on a free port of 127.0.0.1, started
//! and stopped by the test. Plain WebDAV keeps no modification times and
//! no hashes: it stands for the backends that compare by size only.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::util::{free_port, require_tool, wait_listening};

const START_TIMEOUT: Duration = Duration::from_secs(120);

pub struct WebDavServer {
    port: u16,
    root: tempfile::TempDir,
    child: Child,
}

impl WebDavServer {
    /// Starts the server and returns once it accepts connections.
    pub fn start() -> WebDavServer {
        require_tool("rclone", "rclone");
        let root = tempfile::Builder::new()
            .prefix("msync-webdav-")
            .tempdir()
            .unwrap();
        let port = free_port();
        let child = Command::new("rclone")
            .args(["serve", "webdav", "--addr", &format!("127.0.0.1:{port}")])
            .arg(root.path())
            .env("RCLONE_CONFIG", "/dev/null")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting rclone serve webdav");
        wait_listening("rclone serve webdav", port, START_TIMEOUT);
        WebDavServer { port, root, child }
    }

    /// The directory the server serves: what it stores, on disk.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A config section for rclone's webdav backend named `name`.
    pub fn rclone_section(&self, name: &str) -> String {
        WebDavServer::rclone_section_via(name, self.port)
    }

    /// A config section for a webdav remote reached through `port` (a
    /// proxy in front of the server).
    pub fn rclone_section_via(name: &str, port: u16) -> String {
        format!("[{name}]\ntype = webdav\nurl = http://127.0.0.1:{port}/\nvendor = other\n")
    }
}

impl Drop for WebDavServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
