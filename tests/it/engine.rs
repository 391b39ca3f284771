//! The per-path engine end to end: one bad path (a FIFO, a socket, a file
//! still open, a name the remote refuses, a file rewritten while it is
//! sent) never holds up the rest of its branch; every replaced version is
//! kept in the trash; a path that changes kind leaves nothing stale.
//! Results are checked with Debian's rclone CLI.

use std::io::Write;
use std::os::unix::net::UnixListener;
use std::process::Stdio;
use std::time::{Duration, Instant};

use msync::sync::PathClass;
use nix::sys::stat::Mode;

use crate::pool::{Pool, write_file};
use crate::util::{Sandbox, describe, run, run_expecting, stdout};

const SETTLE: Duration = Duration::from_secs(120);

/// Polls `condition` until it holds; fails naming `what` after `timeout`.
fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `status --json` and its exit code.
fn status_with_code(pool: &Pool) -> (serde_json::Value, Option<i32>) {
    let mut command = pool.msync(["status", pool.install.to_str().unwrap(), "--json"]);
    let output = command.output().unwrap();
    let json = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| panic!("no JSON status\n{}", describe(&command, &output)));
    (json, output.status.code())
}

/// The failing paths of branch 0 as (class, path).
fn failing(pool: &Pool) -> Vec<(PathClass, String)> {
    pool.status().branches[0]
        .failing
        .iter()
        .map(|f| (f.class, f.path.clone()))
        .collect()
}

/// How many files of `remote` lie under `prefix`.
fn count_under(pool: &Pool, remote: &str, prefix: &str) -> usize {
    pool.remote_names(remote)
        .iter()
        .filter(|p| p.starts_with(prefix))
        .count()
}

/// Runs `msync stop --now` and fails if it has not returned in `bound`.
fn stop_now_within(pool: &Pool, bound: Duration) {
    let mut child = pool
        .msync([
            "stop",
            pool.install.to_str().unwrap(),
            pool.mount.to_str().unwrap(),
            "--now",
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + bound;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "stop --now failed: {status}");
            return;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("stop --now still running after {bound:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn fifos_sockets_and_open_files_never_hold_up_a_branch() {
    let mut pool = Pool::local_clouds(1);
    pool.import();
    pool.start();
    let mnt = pool.mount.clone();
    let remote = pool.branches[0].1.clone();

    nix::unistd::mkfifo(&mnt.join("pipe"), Mode::from_bits_truncate(0o644)).unwrap();
    let socket = UnixListener::bind(mnt.join("app.sock")).unwrap();
    let mut log = std::fs::File::create(mnt.join("growing.log")).unwrap();
    for i in 0..20 {
        writeln!(log, "line {i}").unwrap();
        log.flush().unwrap();
        write_file(&mnt.join(format!("after/{i}.txt")), 100 + i, i as u8);
    }
    wait_until("the 20 later files on the cloud", SETTLE, || {
        count_under(&pool, &remote, "after/") == 20
    });
    wait_until("the FIFO and the socket listed as skipped", SETTLE, || {
        let failing = failing(&pool);
        ["pipe", "app.sock"].iter().all(|name| {
            failing
                .iter()
                .any(|(class, path)| *class == PathClass::Skipped && path == name)
        })
    });
    // Skipping by design is no failure.
    let (_, code) = status_with_code(&pool);
    assert_eq!(code, Some(0));
    let names = pool.remote_names(&remote);
    assert!(
        !names.iter().any(|p| p == "pipe" || p == "app.sock"),
        "a special file reached the cloud: {names:?}"
    );
    assert!(!names.iter().any(|p| p == "growing.log"), "{names:?}");

    // Closed, the log follows.
    writeln!(log, "last line").unwrap();
    drop(log);
    wait_until("the closed log on the cloud", SETTLE, || {
        pool.remote_names(&remote)
            .iter()
            .any(|p| p == "growing.log")
    });
    drop(socket);
    stop_now_within(&pool, Duration::from_secs(60));
    assert!(!msync::union::is_mounted(&pool.mount));

    // The special files are still in the branch at the next start: its
    // reconcile passes them by and the branch syncs.
    pool.start();
    write_file(&pool.mount.join("after restart.txt"), 321, 7);
    pool.settle(SETTLE);
    pool.assert_in_sync();
    pool.stop();
}

#[test]
fn a_reconcile_leaves_files_still_open_for_writing_to_their_close() {
    let mut pool = Pool::local_clouds(1);
    pool.import();
    pool.start_with(&["--reconcile-every", "1s"]);
    let remote = pool.branches[0].1.clone();
    let mut log = std::fs::File::create(pool.mount.join("open.log")).unwrap();
    writeln!(log, "first line").unwrap();
    log.flush().unwrap();
    // Reconciles that ran while the file was open (each logs it), and
    // every one of them left it out.
    let waited = |pool: &Pool| {
        pool.log()
            .matches("1 file(s) open for writing wait for their writers to close them")
            .count()
    };
    wait_until("two reconciles with the file open", SETTLE, || {
        waited(&pool) >= 2
    });
    let names = pool.remote_names(&remote);
    assert!(!names.iter().any(|p| p == "open.log"), "{names:?}");

    writeln!(log, "last line").unwrap();
    drop(log);
    wait_until("the closed file on the cloud", SETTLE, || {
        pool.remote_names(&remote).iter().any(|p| p == "open.log")
    });
    pool.settle(SETTLE);
    pool.assert_in_sync();
    pool.stop();
}

#[test]
fn every_replaced_version_is_kept_in_the_trash() {
    let mut pool = Pool::local_clouds(1);
    pool.import();
    pool.start();
    let remote = pool.branches[0].1.clone();
    let doc = pool.mount.join("notes/doc.txt");
    for content in ["good", "bad", "worse"] {
        std::fs::create_dir_all(doc.parent().unwrap()).unwrap();
        std::fs::write(&doc, content).unwrap();
        pool.settle(SETTLE);
    }
    std::fs::remove_file(&doc).unwrap();
    pool.settle(SETTLE);
    pool.stop();

    let trash = format!("{remote}/.msync/trash");
    let mut versions: Vec<String> = pool
        .sandbox
        .remote_files(&trash)
        .into_iter()
        .map(|(path, _)| path)
        .filter(|path| path.contains("notes/doc~"))
        .collect();
    versions.sort();
    let contents: Vec<String> = versions
        .iter()
        .map(|path| {
            stdout(&run(pool
                .sandbox
                .rclone_cli(["cat", &format!("{trash}/{path}")])))
        })
        .collect();
    // Every version replaced or deleted, oldest first (the names sort by
    // time of day), each under a name that keeps its extension.
    assert_eq!(contents, ["good", "bad", "worse"], "{versions:?}");
    assert!(versions.iter().all(|v| v.ends_with(".txt")), "{versions:?}");
    assert!(
        !pool
            .remote_names(&remote)
            .contains(&"notes/doc.txt".to_owned())
    );
}

#[test]
fn a_file_that_becomes_a_symlink_leaves_nothing_stale() {
    let mut pool = Pool::local_clouds(1);
    pool.import();
    pool.start();
    let remote = pool.branches[0].1.clone();
    let mnt = pool.mount.clone();

    // By hand: a file on the cloud, then a link in its place.
    write_file(&mnt.join("conf/current"), 300, 1);
    write_file(&mnt.join("conf/v2"), 200, 2);
    pool.settle(SETTLE);
    assert!(
        pool.remote_names(&remote)
            .contains(&"conf/current".to_owned())
    );
    std::fs::remove_file(mnt.join("conf/current")).unwrap();
    std::os::unix::fs::symlink("v2", mnt.join("conf/current")).unwrap();

    // GNU tar: a link whose target climbs out with `..` is first an empty
    // placeholder file, replaced by the link once the rest is extracted
    // (a large file after it keeps the placeholder around for a while).
    let source = pool.sandbox.path().join("tree");
    std::fs::create_dir_all(source.join("pkg/lib")).unwrap();
    std::fs::create_dir_all(source.join("pkg/bin")).unwrap();
    write_file(&source.join("pkg/lib/tool"), 1000, 3);
    std::os::unix::fs::symlink("../lib/tool", source.join("pkg/bin/tool")).unwrap();
    write_file(&source.join("pkg/zz-large.bin"), 64 << 20, 4);
    let archive = pool.sandbox.path().join("tree.tar");
    run(pool.sandbox.command(
        "tar",
        [
            "-cf",
            archive.to_str().unwrap(),
            "-C",
            source.to_str().unwrap(),
            "pkg/bin",
            "pkg/lib",
            "pkg/zz-large.bin",
        ],
    ));
    run(pool.sandbox.command(
        "tar",
        [
            "-xf",
            archive.to_str().unwrap(),
            "-C",
            mnt.to_str().unwrap(),
        ],
    ));
    assert!(
        std::fs::symlink_metadata(mnt.join("pkg/bin/tool"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    // tar touches the link after making it (a MODIFY on a symlink), so the
    // watcher waits for its open-writer probe before reporting it: wait for
    // the link, not for a fixed time.
    let links = ["conf/current", "pkg/bin/tool"];
    let deadline = std::time::Instant::now() + SETTLE;
    while !links.iter().all(|link| {
        pool.remote_names(&remote)
            .contains(&format!("{link}.rclonelink"))
    }) {
        assert!(
            std::time::Instant::now() < deadline,
            "the links are not stored as links: {:?}\n{}",
            pool.remote_names(&remote),
            pool.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    pool.settle(SETTLE);
    let names = pool.remote_names(&remote);
    for link in links {
        assert!(
            !names.contains(&link.to_owned()),
            "{link} is a symlink in the pool but a file on the cloud: {names:?}"
        );
    }
    assert!(names.contains(&"pkg/lib/tool".to_owned()), "{names:?}");
    pool.stop();
}

#[test]
fn files_that_appear_by_link_and_unlink_or_rename_go_out_at_once() {
    let mut pool = Pool::local_clouds(1);
    pool.import();
    pool.start();
    let remote = pool.branches[0].1.clone();
    let mnt = pool.mount.clone();
    std::fs::create_dir_all(mnt.join("objects/ab")).unwrap();
    std::fs::create_dir_all(mnt.join("maildir/tmp")).unwrap();
    std::fs::create_dir_all(mnt.join("maildir/new")).unwrap();
    pool.settle(SETTLE);

    // git's object finalisation: write a temporary, link(2) it to its
    // final name, unlink(2) the temporary.
    write_file(&mnt.join("objects/tmp_obj_1"), 4000, 1);
    std::fs::hard_link(mnt.join("objects/tmp_obj_1"), mnt.join("objects/ab/cdef")).unwrap();
    std::fs::remove_file(mnt.join("objects/tmp_obj_1")).unwrap();
    // Maildir delivery: the same through tmp/ and new/.
    write_file(&mnt.join("maildir/tmp/1.host"), 500, 2);
    std::fs::hard_link(
        mnt.join("maildir/tmp/1.host"),
        mnt.join("maildir/new/1.host"),
    )
    .unwrap();
    std::fs::remove_file(mnt.join("maildir/tmp/1.host")).unwrap();
    // rsync and editors: write a hidden temporary, rename it into place.
    write_file(&mnt.join(".report.txt.XyZ123"), 700, 3);
    std::fs::rename(mnt.join(".report.txt.XyZ123"), mnt.join("report.txt")).unwrap();

    // No reconcile is due for hours: only the watcher can send them.
    let arrived = || {
        let names = pool.remote_names(&remote);
        ["objects/ab/cdef", "maildir/new/1.host", "report.txt"]
            .iter()
            .all(|n| names.contains(&n.to_string()))
    };
    let deadline = Instant::now() + SETTLE;
    while !arrived() {
        assert!(
            Instant::now() < deadline,
            "not all three on the cloud: {:?}\n{}",
            pool.remote_names(&remote),
            pool.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    pool.settle(SETTLE);
    pool.assert_in_sync();
    assert_eq!(
        pool.log().matches("reconciling").count(),
        1,
        "a reconcile ran besides the one at start\n{}",
        pool.log()
    );
    pool.stop();
}

/// A crypt remote over a local folder: long names grow when encrypted, so
/// one the local filesystem cannot hold fails for good on the remote.
fn crypt_pool() -> Pool {
    let sandbox = Sandbox::new();
    let store = sandbox.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    let obscured = stdout(&run(sandbox.rclone_cli(["obscure", "pool secret"])));
    let config = format!(
        "[vault]\ntype = crypt\nremote = {}\npassword = {}\n",
        store.display(),
        obscured.trim()
    );
    Pool::install(sandbox, &config)
}

#[test]
fn a_path_the_remote_refuses_is_listed_while_the_others_go_on() {
    let mut pool = crypt_pool();
    pool.import();
    pool.start();
    let remote = pool.branches[0].1.clone();
    let mnt = pool.mount.clone();
    // 200 bytes is a valid local name; encrypted and base32-encoded it is
    // longer than the 255 the store's filesystem allows.
    let long = "n".repeat(200);
    write_file(&mnt.join(&long), 100, 1);
    for i in 0..10 {
        write_file(&mnt.join(format!("fine/{i}.txt")), 200 + i, i as u8);
    }
    wait_until("the ten other files on the cloud", SETTLE, || {
        count_under(&pool, &remote, "fine/") == 10
    });
    wait_until("the long name listed as failed", SETTLE, || {
        failing(&pool)
            .iter()
            .any(|(class, path)| *class == PathClass::Failed && path == &long)
    });
    let (json, code) = status_with_code(&pool);
    assert_eq!(code, Some(6), "{json:#}");
    let text = stdout(&run_expecting(
        pool.msync(["status", pool.install.to_str().unwrap()]),
        6,
    ));
    assert!(text.contains(&long[..50]), "{text}");

    // Renamed to something the remote can hold, it goes.
    std::fs::rename(mnt.join(&long), mnt.join("short.txt")).unwrap();
    pool.settle(SETTLE);
    assert!(failing(&pool).is_empty(), "{:?}", failing(&pool));
    assert!(pool.remote_names(&remote).contains(&"short.txt".to_owned()));
    pool.stop();
}

#[test]
fn a_file_rewritten_while_it_is_sent_lands_in_its_last_version() {
    let mut pool = Pool::local_clouds(1);
    pool.import();
    pool.start_with(&["--bwlimit", "8M"]);
    let remote = pool.branches[0].1.clone();
    let big = pool.mount.join("video.bin");
    write_file(&big, 24 << 20, 1);
    // Rewrite it while the first upload (3 s at 8 MiB/s) is under way.
    wait_until("the upload under way", SETTLE, || {
        !pool.status().branches[0].in_flight.is_empty()
    });
    write_file(&big, 24 << 20, 2);
    pool.settle(SETTLE);
    pool.assert_in_sync();
    let local = std::fs::read(&big).unwrap();
    let mut cat = pool
        .sandbox
        .rclone_cli(["cat", &format!("{remote}/video.bin")]);
    let output = cat.output().unwrap();
    assert!(output.stdout == local, "the cloud holds an older version");
    pool.stop();
}

#[test]
fn a_file_open_for_writing_during_the_start_reconcile_fails_nothing_else() {
    let mut pool = Pool::local_clouds(1);
    pool.import();
    let remote = pool.branches[0].1.clone();
    let branch = pool.branch_dir(&pool.branches[0].0);
    // On the cloud from an earlier life: one to delete, one to keep.
    for name in ["old.txt", "kept.txt"] {
        write_file(&branch.join(name), 50, 1);
    }
    run(pool.sandbox.rclone_cli([
        "copy",
        branch.to_str().unwrap(),
        remote.as_str(),
        "--exclude",
        "/.msync-branch",
    ]));
    std::fs::remove_file(branch.join("old.txt")).unwrap();

    // A file being written while the service starts and reconciles.
    let path = branch.join("recording.bin");
    let mut file = std::fs::File::create(&path).unwrap();
    let writer = std::thread::spawn(move || {
        let chunk = vec![7u8; 256 << 10];
        let until = Instant::now() + Duration::from_secs(8);
        while Instant::now() < until {
            file.write_all(&chunk).unwrap();
            file.flush().unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    pool.start();
    write_file(&pool.mount.join("new.txt"), 60, 2);
    wait_until("the delete and the new file done", SETTLE, || {
        let names = pool.remote_names(&remote);
        !names.contains(&"old.txt".to_owned()) && names.contains(&"new.txt".to_owned())
    });
    writer.join().unwrap();
    pool.settle(SETTLE);
    pool.assert_in_sync();
    pool.stop();
}

#[test]
fn a_file_replaced_by_a_directory_and_back_leaves_nothing_stale() {
    let mut pool = Pool::local_clouds(1);
    pool.import();
    pool.start();
    let remote = pool.branches[0].1.clone();
    let mnt = pool.mount.clone();
    write_file(&mnt.join("thing"), 100, 1);
    std::fs::create_dir_all(mnt.join("place")).unwrap();
    write_file(&mnt.join("place/inside.txt"), 50, 2);
    pool.settle(SETTLE);

    // The file becomes a directory, the directory a file.
    std::fs::remove_file(mnt.join("thing")).unwrap();
    write_file(&mnt.join("thing/now a dir.txt"), 70, 3);
    std::fs::remove_dir_all(mnt.join("place")).unwrap();
    write_file(&mnt.join("place"), 30, 4);
    pool.settle(SETTLE);
    pool.assert_in_sync();
    let mut names = pool.remote_names(&remote);
    names.sort();
    assert_eq!(names, ["place", "thing/now a dir.txt"]);
    pool.stop();
}
