//! A real WebDAV server for the tests: Debian's rclone CLI serving a temp
//! directory (`rclone serve webdav`) on a free port of 127.0.0.1, started
//! and stopped by the test. Plain WebDAV keeps no modification times and
//! no hashes: it stands for the backends that compare by size only.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::pool::{Pool, write_file};
use crate::util::{Sandbox, free_port, require_tool, run, stdout, wait_listening};

const START_TIMEOUT: Duration = Duration::from_secs(30);
const SETTLE: Duration = Duration::from_secs(120);

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

    /// A config section for rclone's webdav backend named `name`.
    pub fn rclone_section(&self, name: &str) -> String {
        format!(
            "[{name}]\ntype = webdav\nurl = http://127.0.0.1:{}/\nvendor = other\n",
            self.port
        )
    }
}

impl Drop for WebDavServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every file and directory below `dir`, relative, with each file's bytes
/// (`None` for a directory), sorted; `.msync` and the branch marker aside.
fn tree(dir: &Path) -> Vec<(PathBuf, Option<Vec<u8>>)> {
    fn walk(base: &Path, dir: &Path, found: &mut Vec<(PathBuf, Option<Vec<u8>>)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let relative = path.strip_prefix(base).unwrap().to_owned();
            let name = relative.to_string_lossy();
            if name == ".msync" || name == ".msync-branch" {
                continue;
            }
            if path.is_dir() {
                found.push((relative, None));
                walk(base, &path, found);
            } else {
                found.push((relative, Some(std::fs::read(&path).unwrap())));
            }
        }
    }
    let mut found = Vec::new();
    walk(dir, dir, &mut found);
    found.sort();
    found
}

#[test]
fn a_pool_on_webdav_converges_and_imports_identically() {
    let server = WebDavServer::start();
    let mut pool = Pool::install(Sandbox::new(), &server.rclone_section("dav"));
    pool.import();
    pool.start();
    for i in 0..40 {
        write_file(
            &pool.mount.join(format!("docs/d{}/f{i}.txt", i % 4)),
            500 + i,
            i as u8,
        );
    }
    std::fs::create_dir_all(pool.mount.join("empty/inner")).unwrap();
    pool.settle(SETTLE);
    std::fs::rename(pool.mount.join("docs/d1"), pool.mount.join("docs/moved")).unwrap();
    std::fs::rename(
        pool.mount.join("docs/d0/f0.txt"),
        pool.mount.join("docs/d0/renamed.txt"),
    )
    .unwrap();
    std::fs::remove_file(pool.mount.join("docs/d2/f2.txt")).unwrap();
    // Same size, new bytes: with no times and no hashes kept, only the
    // change itself tells.
    write_file(&pool.mount.join("docs/d3/f3.txt"), 503, 99);
    pool.settle(SETTLE);
    pool.assert_in_sync();

    // What the server stores on its disk is the branch.
    let branch = pool.branch_dir(&pool.branches[0].0);
    assert_eq!(tree(&server.root().join("msync")), tree(&branch));
    let listing = stdout(&run(pool.sandbox.rclone_cli(["lsf", "-R", "dav:msync"])));
    assert!(listing.contains("docs/moved/f1.txt"), "{listing}");
    pool.stop();

    // A fresh install restores the pool, the empty directory included.
    let second = pool.sandbox.path().join("install2");
    run(pool.msync(["install", second.to_str().unwrap()]));
    run(pool.msync(["import", second.to_str().unwrap()]));
    assert_eq!(tree(&second.join("branches/dav")), tree(&branch));
    assert!(second.join("branches/dav/empty/inner").is_dir());
}
