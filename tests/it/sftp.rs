//! msync against a real SFTP server (OpenSSH's sshd on loopback): the
//! `msync rc` binary with a configured sftp remote, the in-process API with
//! a connection string, and a server that goes away and comes back.
//! Everything is checked with Debian's rclone CLI and on the server's disk.

use std::path::Path;
use std::time::{Duration, Instant};

use msync::rclone::{Call, ListOptions, Location};
use serde_json::json;

use crate::sshd::SftpServer;
use crate::util::{Sandbox, rclone, run, stdout};

/// A sandbox whose rclone config has the server as remote `sftp`.
fn sandbox_for(server: &SftpServer) -> Sandbox {
    let sandbox = Sandbox::new();
    sandbox.write_config(&server.rclone_section("sftp"));
    sandbox
}

/// Every file under `dir`, relative, with its bytes, sorted.
fn files_on_disk(dir: &Path) -> Vec<(String, Vec<u8>)> {
    fn walk(base: &Path, dir: &Path, found: &mut Vec<(String, Vec<u8>)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(base, &path, found);
            } else {
                let relative = path
                    .strip_prefix(base)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_owned();
                found.push((relative, std::fs::read(&path).unwrap()));
            }
        }
    }
    let mut found = Vec::new();
    walk(dir, dir, &mut found);
    found.sort();
    found
}

#[test]
fn the_rclone_cli_copies_and_lists_through_the_server() {
    let server = SftpServer::start();
    let sandbox = sandbox_for(&server);
    let file = sandbox.make_file("hello.txt", 3000);

    run(sandbox.rclone_cli(["copyto", file.to_str().unwrap(), "sftp:cli/hello.txt"]));
    assert_eq!(
        std::fs::read(server.root().join("cli/hello.txt")).unwrap(),
        std::fs::read(&file).unwrap()
    );
    assert_eq!(
        sandbox.remote_files("sftp:"),
        [("cli/hello.txt".to_owned(), 3000)]
    );
    // The server's checksum commands work (rclone runs md5sum over ssh).
    let sums = stdout(&run(sandbox.rclone_cli(["md5sum", "sftp:cli"])));
    assert!(sums.contains("hello.txt") && sums.len() > 32, "{sums}");
    // One log line per SFTP request, for counting.
    let log = server.log();
    let written = format!("open \"{}\"", server.root().join("cli/hello.txt").display());
    assert!(log.contains(&written), "no {written:?} in the log:\n{log}");
    assert!(log.contains(&format!("port {}", server.port())), "{log}");
}

#[test]
fn msync_copies_a_file_and_a_tree_to_sftp() {
    let server = SftpServer::start();
    let sandbox = sandbox_for(&server);

    // One file, by the msync binary with the configured remote.
    let report = sandbox.make_file("out/report.txt", 12345);
    let params = json!({
        "srcFs": report.parent().unwrap(),
        "srcRemote": "report.txt",
        "dstFs": "sftp:",
        "dstRemote": "docs/report.txt",
    })
    .to_string();
    run(sandbox.msync(["rc", "operations/copyfile", &params]));
    assert_eq!(
        std::fs::read(server.root().join("docs/report.txt")).unwrap(),
        std::fs::read(&report).unwrap()
    );
    let cat = run(sandbox.rclone_cli(["cat", "sftp:docs/report.txt"]));
    assert_eq!(cat.stdout, std::fs::read(&report).unwrap());

    // A tree, by the in-process API with a connection string (this test
    // process's librclone has its own, empty config).
    let names = [
        "top.txt",
        "nested/deeper/deepest/b.bin",
        "dir with space/file name.txt",
        "ünïcödé/日本語 ファイル.txt",
    ];
    for (i, name) in names.iter().enumerate() {
        sandbox.make_file(&format!("tree/{name}"), 1000 * (i + 1));
    }
    std::fs::create_dir_all(sandbox.path().join("tree/empty dir")).unwrap();
    let src = sandbox.path().join("tree");
    let dst = format!("{}tree", server.connection_string());
    let job = Call::copy(src.to_str().unwrap(), &dst)
        .start(rclone(), "test/sftp-tree")
        .unwrap();
    let status = job.wait(Some(Duration::from_secs(120))).unwrap();
    let status = status.expect("sync/copy to sftp did not finish in 120 s");
    assert!(status.success, "{status:?}");

    // The rclone CLI agrees, hashes included (md5sum runs on the server).
    run(sandbox.rclone_cli(["check", src.to_str().unwrap(), "sftp:tree"]));
    let mut expected: Vec<(String, u64)> = names
        .iter()
        .enumerate()
        .map(|(i, name)| (name.to_string(), 1000 * (i as u64 + 1)))
        .collect();
    expected.sort();
    assert_eq!(sandbox.remote_files("sftp:tree"), expected);
    // So does the disk, byte for byte, and the empty directory came along.
    assert_eq!(
        files_on_disk(&server.root().join("tree")),
        files_on_disk(&src)
    );
    assert!(server.root().join("tree/empty dir").is_dir());
    // And msync's own listing.
    let listed = rclone()
        .list(
            &Location::new(&dst, "ünïcödé"),
            &ListOptions {
                hashes: true,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].name, "日本語 ファイル.txt");
    let md5 = &listed[0].hashes.as_ref().unwrap()["md5"];
    assert_eq!(md5.as_str().unwrap().len(), 32, "{listed:?}");
}

#[test]
fn a_stopped_server_fails_the_call_quickly_and_a_restart_recovers() {
    let mut server = SftpServer::start();
    let sandbox = Sandbox::new();
    let file = sandbox.make_file("data/a.txt", 500);
    let fs = server.connection_string();
    // Set on the first call, when rclone builds (and caches) this remote:
    // its retry pacer keeps the low-level retry count it was built with.
    // rclone 1.60's ConnectTimeout is a Go time.Duration: nanoseconds.
    let copy = Call::copyfile(
        &Location::new(file.parent().unwrap().to_str().unwrap(), "a.txt"),
        &Location::new(&fs, "up/a.txt"),
    )
    .config(json!({"ConnectTimeout": 2_000_000_000u64, "LowLevelRetries": 1, "Retries": 1}));
    copy.run(rclone()).unwrap();
    assert!(server.root().join("up/a.txt").is_file());
    std::fs::remove_file(server.root().join("up/a.txt")).unwrap();

    server.stop();
    let started = Instant::now();
    let err = copy.run(rclone()).unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.status, 500, "{err}");
    assert_eq!(err.method, "operations/copyfile");
    assert!(err.message.contains("connect"), "{err}");
    assert!(
        took < Duration::from_secs(20),
        "the failing call took {took:?}"
    );
    assert!(!server.root().join("up/a.txt").exists());

    server.restart();
    copy.run(rclone()).unwrap();
    assert_eq!(
        std::fs::read(server.root().join("up/a.txt")).unwrap(),
        std::fs::read(&file).unwrap()
    );
    let listening = format!("Server listening on 127.0.0.1 port {}", server.port());
    assert_eq!(server.log().matches(&listening).count(), 2);
}
