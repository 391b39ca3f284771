//! The service end to end: real mergerfs mounts, the real librclone, real
//! remotes (local directories, SFTP served by sshd, crypt), every result
//! checked with Debian's rclone CLI.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use crate::pool::{Pool, write_file};
use crate::sshd::SftpServer;
use crate::util::{Sandbox, run, run_expecting, stderr};

const SETTLE: Duration = Duration::from_secs(120);

#[test]
fn files_written_through_the_mount_reach_the_clouds() {
    let mut pool = Pool::local_clouds(3);
    pool.import();
    pool.start();
    let mnt = pool.mount.clone();
    for i in 0..30 {
        write_file(
            &mnt.join(format!("photos/2026/img {i}.jpg")),
            1000 + i * 100,
            i as u8,
        );
    }
    write_file(&mnt.join("docs/ünïcödé ✓.txt"), 5000, 1);
    write_file(&mnt.join("docs/line\nbreak.txt"), 10, 2);
    write_file(&mnt.join("deep/a/b/c/d/leaf.bin"), 70_000, 3);
    write_file(&mnt.join("to-delete.txt"), 100, 4);
    pool.settle(SETTLE);
    pool.assert_in_sync();

    // Overwrite and delete.
    write_file(&mnt.join("docs/ünïcödé ✓.txt"), 9000, 9);
    std::fs::remove_file(mnt.join("to-delete.txt")).unwrap();
    std::fs::create_dir_all(mnt.join("empty dir")).unwrap();
    pool.settle(SETTLE);
    pool.assert_in_sync();

    let holder = pool.holder("docs/ünïcödé ✓.txt");
    let files = pool.remote_files(&pool.remote_of(&holder));
    assert!(
        files.contains(&("docs/ünïcödé ✓.txt".to_owned(), 9000)),
        "{files:?}"
    );
    for (_, remote) in &pool.branches {
        assert!(
            !pool
                .remote_files(remote)
                .iter()
                .any(|(p, _)| p == "to-delete.txt")
        );
    }
    // New files were spread over the clouds.
    let used = pool
        .branches
        .iter()
        .filter(|(_, remote)| !pool.remote_files(remote).is_empty())
        .count();
    assert!(used >= 2, "all files landed in one cloud");

    pool.stop();
    assert!(!mnt.exists(), "stop removes the mount point");
}

#[test]
fn renames_move_server_side() {
    let mut pool = Pool::local_clouds(2);
    pool.import();
    pool.start();
    let mnt = pool.mount.clone();
    write_file(&mnt.join("film.mkv"), 5 << 20, 1);
    for i in 0..3 {
        write_file(&mnt.join(format!("album/track {i}.flac")), 1 << 20, i);
    }
    let before = pool.settle(SETTLE);
    let sent_before: u64 = before.branches.iter().map(|b| b.bytes_sent).sum();
    let film_branch = pool.holder("film.mkv");
    let film_cloud = pool
        .sandbox
        .path()
        .join("clouds")
        .join(&film_branch)
        .join("msync");
    let inode = std::fs::metadata(film_cloud.join("film.mkv"))
        .unwrap()
        .ino();

    std::fs::rename(mnt.join("film.mkv"), mnt.join("renamed film.mkv")).unwrap();
    std::fs::rename(mnt.join("album"), mnt.join("album 2")).unwrap();
    let after = pool.settle(SETTLE);
    pool.assert_in_sync();

    let sent_after: u64 = after.branches.iter().map(|b| b.bytes_sent).sum();
    assert_eq!(sent_after, sent_before, "a rename re-sent bytes");
    // Same inode on the remote: moved, not copied.
    assert_eq!(
        std::fs::metadata(film_cloud.join("renamed film.mkv"))
            .unwrap()
            .ino(),
        inode
    );
    assert!(!film_cloud.join("film.mkv").exists());
    let album_branch = pool.holder("album 2/track 0.flac");
    let files = pool.remote_files(&pool.remote_of(&album_branch));
    assert!(
        files.iter().any(|(p, _)| p == "album 2/track 0.flac"),
        "{files:?}"
    );
    assert!(
        !files.iter().any(|(p, _)| p.starts_with("album/")),
        "{files:?}"
    );
}

#[test]
fn a_slow_writer_is_uploaded_once_complete() {
    let mut pool = Pool::local_clouds(1);
    pool.import();
    pool.start();
    let before = pool.settle(SETTLE).branches[0].files_sent;
    let path = pool.mount.join("slow.log");
    let mut file = std::fs::File::create(&path).unwrap();
    for chunk in 0..8u8 {
        file.write_all(&vec![chunk; 64 * 1024]).unwrap();
        file.flush().unwrap();
        // Longer than the debounce: only the close may trigger the upload.
        std::thread::sleep(Duration::from_millis(400));
    }
    drop(file);
    let after = pool.settle(SETTLE);
    assert_eq!(
        after.branches[0].files_sent,
        before + 1,
        "uploaded more than once"
    );
    assert_eq!(
        pool.remote_files(&pool.branches[0].1),
        [("slow.log".to_owned(), 8 * 64 * 1024)]
    );
    pool.assert_in_sync();
}

#[test]
fn many_small_files_and_a_big_one() {
    let mut pool = Pool::local_clouds(2);
    pool.import();
    pool.start();
    for i in 0..5000 {
        write_file(
            &pool.mount.join(format!("many/d{}/f{i}.txt", i % 50)),
            1024,
            i as u8,
        );
    }
    write_file(&pool.mount.join("big.bin"), 200 << 20, 7);
    pool.settle(Duration::from_secs(600));
    pool.assert_in_sync();
    let total: usize = pool
        .branches
        .iter()
        .map(|(_, r)| pool.remote_files(r).len())
        .sum();
    assert_eq!(total, 5001);
}

#[test]
fn stop_start_cycles_and_import_restore_every_byte() {
    let mut pool = Pool::local_clouds(3);
    pool.import();
    for round in 0..3u8 {
        pool.start();
        for i in 0..10 {
            write_file(
                &pool.mount.join(format!("round{round}/file{i}.dat")),
                3000 + i,
                round,
            );
        }
        write_file(&pool.mount.join("shared.txt"), 100 + round as usize, round);
        pool.settle(SETTLE);
        pool.stop();
    }
    pool.assert_in_sync();

    // A fresh install on the same clouds restores every byte.
    let second = pool.sandbox.path().join("install2");
    run(pool.msync(["install", second.to_str().unwrap()]));
    run(pool.msync(["import", second.to_str().unwrap()]));
    for (name, _) in &pool.branches {
        let original = pool.branch_dir(name);
        let restored = second.join("branches").join(name);
        let diff = std::process::Command::new("diff")
            .args(["-r", "--exclude=.msync-branch"])
            .arg(&original)
            .arg(&restored)
            .output()
            .unwrap();
        assert!(
            diff.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&diff.stdout)
        );
    }
}

#[test]
fn sftp_and_crypt_remotes() {
    let server = SftpServer::start();
    let sandbox = Sandbox::new();
    let obscured = crate::util::stdout(&run(sandbox.rclone_cli(["obscure", "msync test"])));
    let vault = sandbox.path().join("vault");
    std::fs::create_dir_all(&vault).unwrap();
    let config = format!(
        "{}\n[vault]\ntype = alias\nremote = {}\n\n[secret]\ntype = crypt\nremote = vault:\npassword = {}\n",
        server.rclone_section("ssh"),
        vault.display(),
        obscured.trim()
    );
    let mut pool = Pool::install_remotes(sandbox, &config, Some("ssh,secret"));
    assert_eq!(pool.branches.len(), 2);
    pool.import();
    pool.start();
    for i in 0..20 {
        write_file(
            &pool.mount.join(format!("dir {i}/file ü {i}.bin")),
            10_000 + i,
            i as u8,
        );
    }
    pool.settle(SETTLE);
    std::fs::rename(pool.mount.join("dir 3"), pool.mount.join("dir three")).unwrap();
    pool.settle(SETTLE);
    pool.assert_in_sync();
    let crypt_files = pool.remote_files("secret:msync");
    let sftp_files = pool.remote_files("ssh:msync");
    assert_eq!(crypt_files.len() + sftp_files.len(), 20);
    // Crypt stores encrypted names.
    let raw = pool.sandbox.remote_files(vault.to_str().unwrap());
    assert!(raw.iter().all(|(p, _)| !p.contains("file")), "{raw:?}");
}

#[test]
fn a_burst_of_files_is_counted_whole_and_logs_no_noise() {
    // Each file of a burst is uploaded in a batch and then moved into
    // place with a call of its own: 1,200 of them once made 1,200 rclone
    // stats groups, past rclone's limit of 1,000, which dropped the
    // branch's own (its counts with it) and logged a line per call.
    const FILES: usize = 1200;
    let mut pool = Pool::local_clouds(1);
    pool.import();
    pool.start();
    let burst = pool.branch_dir(&pool.branches[0].0).join("burst");
    std::fs::create_dir(&burst).unwrap();
    for i in 0..FILES {
        std::fs::write(burst.join(format!("f{i:04}")), format!("file {i}\n")).unwrap();
    }
    let status = pool.settle(SETTLE);
    pool.assert_in_sync();
    assert_eq!(pool.remote_files(&pool.branches[0].1).len(), FILES);
    assert!(
        status.branches[0].files_sent >= FILES as u64,
        "{:#?}",
        status.branches[0]
    );
    let log = pool.log();
    assert!(!log.contains("Max number of stats groups"), "{log}");
    // The first reconcile logged what the backend can do.
    assert!(log.contains("cloud1: cloud1:msync has hashes md5"), "{log}");
    pool.stop();
}

#[test]
fn status_shows_files_in_flight() {
    let pool = Pool::local_clouds(1);
    pool.import();
    run(pool.msync([
        "start",
        pool.install.to_str().unwrap(),
        pool.mount.to_str().unwrap(),
        "--debounce",
        "200ms",
        "--bwlimit",
        "20M",
    ]));
    write_file(&pool.mount.join("movie.bin"), 100 << 20, 3);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = pool.status();
        let branch = &status.branches[0];
        if let Some(file) = branch.in_flight.first()
            && file.bytes > 0
        {
            assert_eq!(file.name, "movie.bin");
            assert_eq!(file.size, 100 << 20);
            assert!(file.speed > 0.0);
            assert_eq!(branch.state, msync::sync::BranchState::Syncing);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no transfer in flight: {status:#?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let human = crate::util::stdout(&run(pool.msync(["status", pool.install.to_str().unwrap()])));
    assert!(human.contains("sending movie.bin"), "{human}");
    run(pool.msync([
        "stop",
        pool.install.to_str().unwrap(),
        pool.mount.to_str().unwrap(),
        "--now",
    ]));
    assert!(!msync::union::is_mounted(&pool.mount));
}

#[test]
fn sigterm_takes_the_stop_path() {
    let mut pool = Pool::local_clouds(1);
    pool.import();
    pool.start();
    let pid = pool.status().pid;
    write_file(&pool.mount.join("last words.txt"), 1234, 1);
    // Within the debounce: the stop must still send it.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "service still running after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!msync::union::is_mounted(&pool.mount));
    assert!(!pool.mount.exists());
    assert_eq!(
        pool.remote_files(&pool.branches[0].1),
        [("last words.txt".to_owned(), 1234)]
    );
    assert!(pool.log().contains("SIGTERM received"), "{}", pool.log());
    run_expecting(pool.msync(["status", pool.install.to_str().unwrap()]), 7);
}

#[test]
fn running_state_errors() {
    let mut pool = Pool::local_clouds(1);
    pool.import();
    let (install, mount) = (
        pool.install.to_str().unwrap().to_owned(),
        pool.mount.to_str().unwrap().to_owned(),
    );
    let err = stderr(&run_expecting(pool.msync(["status", &install]), 7));
    assert!(err.contains("not running"), "{err}");
    let err = stderr(&run_expecting(pool.msync(["stop", &install, &mount]), 7));
    assert!(err.contains("no msync service is running"), "{err}");
    pool.start();
    let err = stderr(&run_expecting(pool.msync(["start", &install, &mount]), 7));
    assert!(err.contains("already running"), "{err}");

    // A busy mount point: nothing stops, nothing is killed.
    let holder = std::fs::File::open({
        write_file(&pool.mount.join("open.txt"), 10, 1);
        pool.mount.join("open.txt")
    })
    .unwrap();
    let err = stderr(&run_expecting(pool.msync(["stop", &install, &mount]), 5));
    assert!(err.contains("busy") || err.contains("open"), "{err}");
    assert!(msync::union::is_mounted(&pool.mount));
    assert_eq!(pool.status().branches.len(), 1);
    drop(holder);
    pool.stop();
}

#[test]
fn bad_mount_points_and_drivers() {
    let pool = Pool::local_clouds(1);
    let install = pool.install.to_str().unwrap().to_owned();
    let file = pool.sandbox.make_file("a-file", 3);
    let err = stderr(&run_expecting(
        pool.msync(["start", &install, file.to_str().unwrap()]),
        5,
    ));
    assert!(err.contains("not a directory"), "{err}");
    let full = pool
        .sandbox
        .make_file("full/x", 3)
        .parent()
        .unwrap()
        .to_owned();
    let err = stderr(&run_expecting(
        pool.msync(["start", &install, full.to_str().unwrap()]),
        5,
    ));
    assert!(err.contains("not empty"), "{err}");
    let mnt = pool.mount.to_str().unwrap().to_owned();
    run_expecting(
        pool.msync(["start", &install, &mnt, "--union", "overlay"]),
        2,
    );
    let err = stderr(&run_expecting(
        pool.msync(["start", &install, &mnt, "--union", "aufs"]),
        3,
    ));
    assert!(err.contains("aufs"), "{err}");
    assert!(
        !pool.mount.exists(),
        "a refused start created the mount point"
    );
    let err = stderr(&run_expecting(
        pool.msync(["start", "/nonexistent/install", &mnt]),
        4,
    ));
    assert!(err.contains("not an msync install dir"), "{err}");
}

#[test]
fn check_validates_an_install() {
    let pool = Pool::local_clouds(2);
    let install = pool.install.to_str().unwrap().to_owned();
    let out = crate::util::stdout(&run(pool.msync(["check", &install])));
    assert!(
        out.contains("ok   branch cloud1:") && out.contains("(reachable)"),
        "{out}"
    );
    assert!(out.contains("not imported yet"), "{out}");
    // A remote removed from the config is named.
    let config = std::fs::read_to_string(pool.sandbox.config()).unwrap();
    let without_cloud2 = config.split("[cloud2]").next().unwrap().to_owned();
    pool.sandbox.write_config(&without_cloud2);
    let out = crate::util::stdout(&run_expecting(pool.msync(["check", &install]), 4));
    assert!(
        out.contains("FAIL branch cloud2:") && out.contains("not in the rclone config"),
        "{out}"
    );
    // So is a broken manifest.
    std::fs::write(pool.install.join("msync.json"), "{").unwrap();
    let out = crate::util::stdout(&run_expecting(pool.msync(["check", &install]), 4));
    assert!(
        out.contains("FAIL install:") && out.contains("broken"),
        "{out}"
    );
}

#[test]
fn import_and_balance_take_a_bandwidth_limit() {
    let mut pool = Pool::local_clouds(2);
    // What the first cloud already holds: 8 MiB, of which rclone's token
    // bucket lets 4 MiB through at once, the rest at 1 MiB/s.
    let stored = pool.sandbox.path().join("clouds/cloud1/msync/big.bin");
    write_file(&stored, 8 << 20, 7);
    let install = pool.install.to_str().unwrap().to_owned();
    let err = stderr(&run_expecting(
        pool.msync(["import", &install, "--bwlimit", "08:00,1M"]),
        2,
    ));
    assert!(err.contains("timetable"), "{err}");
    assert!(!pool.branch_dir("cloud1").join("big.bin").exists());

    let started = std::time::Instant::now();
    run(pool.msync(["import", &install, "--bwlimit", "1M"]));
    let took = started.elapsed();
    assert_eq!(
        std::fs::read(pool.branch_dir("cloud1").join("big.bin")).unwrap(),
        std::fs::read(&stored).unwrap()
    );
    // At least the 4 MiB past the burst at 1 MiB/s: the limit was applied.
    assert!(took >= Duration::from_secs(3), "import took {took:?}");

    // With the service running, its own limit applies: refused, nothing
    // moved.
    pool.start();
    let err = stderr(&run_expecting(
        pool.msync(["balance", &install, "--bwlimit", "1M"]),
        7,
    ));
    assert!(err.contains("without --bwlimit"), "{err}");
    assert!(pool.branch_dir("cloud1").join("big.bin").exists());
    pool.stop();
}

#[test]
fn systemd_is_told_when_the_pool_is_ready_and_when_it_stops() {
    use std::os::unix::net::UnixDatagram;
    let pool = Pool::local_clouds(2);
    let socket_path = pool.sandbox.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let receive = || {
        let mut buffer = [0u8; 4096];
        let len = socket.recv(&mut buffer).expect("a notification in time");
        String::from_utf8_lossy(&buffer[..len]).into_owned()
    };
    let (install, mount) = (
        pool.install.to_str().unwrap().to_owned(),
        pool.mount.to_str().unwrap().to_owned(),
    );
    let mut service = pool.msync([
        "start",
        &install,
        &mount,
        "--foreground",
        "--debounce",
        "200ms",
    ]);
    service
        .env("NOTIFY_SOCKET", &socket_path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = service.spawn().unwrap();

    let first = receive();
    assert!(first.lines().any(|l| l == "READY=1"), "{first:?}");
    assert!(first.contains("STATUS=2 branch(es)"), "{first:?}");
    // Ready means mounted and answering.
    assert!(msync::union::is_mounted(&pool.mount));
    assert_eq!(pool.status().branches.len(), 2);

    run(pool.msync(["stop", &install, &mount]));
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|m: &String| m.lines().any(|l| l == "STOPPING=1"))
    {
        seen.push(receive());
    }
    assert!(child.wait().unwrap().success());
    assert!(!msync::union::is_mounted(&pool.mount));
}

#[test]
fn the_service_caps_the_go_heap_when_asked() {
    let mut pool = Pool::local_clouds(1);
    let install = pool.install.to_str().unwrap().to_owned();
    let err = stderr(&run_expecting(
        pool.msync(["start", &install, "/tmp/never", "--go-memory-limit", "lots"]),
        2,
    ));
    assert!(err.contains("--go-memory-limit"), "{err}");
    pool.start_with(&["--go-memory-limit", "64M"]);
    assert!(
        pool.log()
            .contains("rclone's Go heap is capped at 64.00 MiB"),
        "{}",
        pool.log()
    );
    pool.stop();
}

/// Parses Prometheus text with Prometheus's own Python parser: every
/// sample as `name{label=value,…}` → value, labels sorted.
fn parse_prometheus(text: &str) -> std::collections::BTreeMap<String, f64> {
    let python =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/pytools/bin/python");
    assert!(
        python.exists(),
        "{} not found: `make test` installs prometheus-client there (or run `make target/pytools/bin/python`)",
        python.display()
    );
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
        out[f"{s.name}{{{labels}}}"] = s.value
print(json.dumps(out))
"#;
    let mut child = std::process::Command::new(python)
        .arg("-c")
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "the parser refused:\n{text}");
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn prometheus_metrics_parse_and_agree_with_the_json_status() {
    let mut pool = Pool::local_clouds(2);
    let install = pool.install.to_str().unwrap().to_owned();
    // No service: the metrics say so, and status exits 7.
    let down = run_expecting(pool.msync(["status", &install, "--prometheus"]), 7);
    let parsed = parse_prometheus(&String::from_utf8_lossy(&down.stdout));
    assert_eq!(parsed.get("msync_up{}"), Some(&0.0), "{parsed:?}");

    pool.start();
    for i in 0..6 {
        write_file(&pool.mount.join(format!("m/f{i}.bin")), 1000 + i, i as u8);
    }
    pool.settle(Duration::from_secs(120));
    let file = pool.sandbox.path().join("textfile/msync.prom");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let output = run(pool.msync([
        "status",
        &install,
        "--prometheus",
        "--prometheus-file",
        file.to_str().unwrap(),
    ]));
    let printed = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(std::fs::read_to_string(&file).unwrap(), printed);
    let metrics = parse_prometheus(&printed);
    let status = pool.status();
    assert_eq!(metrics["msync_up{}"], 1.0);
    assert_eq!(
        metrics["msync_inotify_watches{}"],
        status.inotify_watches as f64
    );
    let mut sent = 0.0;
    for branch in &status.branches {
        let name = &branch.name;
        let get = |metric: &str, extra: &str| {
            let key = format!("{metric}{{branch={name}{extra}}}");
            *metrics
                .get(&key)
                .unwrap_or_else(|| panic!("no {key} in {metrics:?}"))
        };
        assert_eq!(get("msync_branch_state", ",state=idle"), 1.0);
        assert_eq!(get("msync_branch_state", ",state=error"), 0.0);
        assert_eq!(get("msync_branch_queued_changes", ""), branch.queued as f64);
        assert_eq!(get("msync_branch_failing_paths", ",class=failed"), 0.0);
        assert_eq!(
            get("msync_branch_files_sent_total", ""),
            branch.files_sent as f64
        );
        assert_eq!(
            get("msync_branch_bytes_sent_total", ""),
            branch.bytes_sent as f64
        );
        assert_eq!(
            get("msync_cloud_total_bytes", ""),
            branch.space.total.unwrap() as f64
        );
        assert!(get("msync_branch_seconds_since_last_sync", "") < 600.0);
        sent += get("msync_branch_files_sent_total", "");
    }
    // The parser names a counter's sample with its _total, as written.
    assert!(sent >= 6.0, "{metrics:?}");
    assert!(
        !pool
            .sandbox
            .path()
            .join("textfile")
            .read_dir()
            .unwrap()
            .any(|e| { e.unwrap().file_name().to_string_lossy().ends_with(".tmp") })
    );
    pool.stop();
}

#[test]
fn an_interrupted_import_speaks_msyncs_words_and_rclones_go_to_the_log() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let pool = Pool::local_clouds(1);
    let stored = pool.sandbox.path().join("clouds/cloud1/msync");
    for i in 0..3 {
        write_file(&stored.join(format!("big/f{i}.bin")), 6 << 20, i as u8);
    }
    let install = pool.install.to_str().unwrap().to_owned();
    // Slow enough to be caught in the middle.
    let mut import = pool.msync(["import", &install, "--bwlimit", "512k"]);
    import
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = import.spawn().unwrap();
    let staging = pool.install.join("state/import/cloud1");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let started = || {
        walk_files(&staging)
            .iter()
            .any(|f| std::fs::metadata(f).is_ok_and(|m| m.len() > 0))
    };
    while !started() {
        assert!(
            std::time::Instant::now() < deadline,
            "the download never began"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130));
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("msync"), "{err}");
    for raw in ["ERROR :", "NOTICE:", "context canceled"] {
        assert!(!err.contains(raw), "rclone's line on the terminal: {err}");
    }
    let log = pool.log();
    assert!(log.contains("context canceled"), "{log}");
}

fn walk_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(walk_files(&path));
        } else {
            found.push(path);
        }
    }
    found
}

#[test]
fn the_log_rotates_by_size_and_the_service_writes_on_in_the_new_file() {
    let mut pool = Pool::local_clouds(2);
    // A reconcile a second logs a few lines each: a flood for a 4K log.
    pool.start_with(&["--log-max-size", "4K", "--reconcile-every", "1s"]);
    let log = pool.install.join("msync.log");
    let rotated = |n: usize| pool.install.join(format!("msync.log.{n}"));
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !rotated(2).exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the log never rotated twice"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for path in [log.clone(), rotated(1), rotated(2)] {
        let size = std::fs::metadata(&path).unwrap().len();
        // The limit, give or take the line that crossed it.
        assert!(size <= 4096 + 1024, "{} is {size} bytes", path.display());
    }
    // The service's stderr (where rclone writes) follows the rotation.
    let pid = pool.status().pid;
    let stderr = std::fs::read_link(format!("/proc/{pid}/fd/2")).unwrap();
    assert_eq!(stderr, log);
    let before = std::fs::read_to_string(&log).unwrap().len();
    let grew = std::time::Instant::now() + Duration::from_secs(30);
    while std::fs::read_to_string(&log).unwrap().len() <= before && !rotated(3).exists() {
        assert!(
            std::time::Instant::now() < grew,
            "nothing written after the rotation"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!pool.install.join("msync.log.4").exists());
    pool.stop();
}

#[test]
fn a_trimmed_library_serves_its_backends_and_names_the_one_it_lacks() {
    let trimmed = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/librclone-local-sftp/librclone.so");
    assert!(
        trimmed.exists(),
        "{} not found: `make test` builds it (make librclone BACKENDS=\"local sftp\")",
        trimmed.display()
    );
    let trimmed = trimmed.to_str().unwrap().to_owned();
    let server = SftpServer::start();
    let sandbox = Sandbox::new();
    let disk = sandbox.path().join("disk");
    std::fs::create_dir_all(&disk).unwrap();
    let config = format!(
        "{}\n[disk]\ntype = local\n\n[gd]\ntype = drive\n",
        server.rclone_section("ssh"),
    );
    // `disk:` would be relative: an alias names the folder.
    let config = format!(
        "{config}\n[home]\ntype = alias\nremote = disk:{}\n",
        disk.display()
    );
    let mut pool = Pool::install_remotes(sandbox, &config, Some("ssh,home"));
    let install = pool.install.to_str().unwrap().to_owned();
    run(pool.msync(["--librclone", &trimmed, "import", &install]));
    pool.start_with(&["--librclone", &trimmed]);
    for i in 0..10 {
        write_file(&pool.mount.join(format!("t/f{i}.bin")), 5000 + i, i as u8);
    }
    pool.settle(SETTLE);
    pool.assert_in_sync();
    let sent = pool.remote_files("ssh:msync").len() + pool.remote_files("home:msync").len();
    assert_eq!(sent, 10);
    assert!(
        pool.log().contains("librclone-local-sftp"),
        "{}",
        pool.log()
    );
    pool.stop();

    // A drive remote joins the install: the trimmed library refuses it by
    // name, and says how to rebuild; nothing starts.
    run(pool.msync(["install", &install, "--remotes", "gd"]));
    let err = stderr(&run_expecting(
        pool.msync([
            "--librclone",
            &trimmed,
            "start",
            &install,
            pool.mount.to_str().unwrap(),
        ]),
        3,
    ));
    assert!(err.contains("\"drive\" remote"), "{err}");
    assert!(
        err.contains("make librclone BACKENDS=\"local sftp drive\""),
        "{err}"
    );
    assert!(!msync::union::is_mounted(&pool.mount));
    let check = run_expecting(pool.msync(["--librclone", &trimmed, "check", &install]), 4);
    let out = String::from_utf8_lossy(&check.stdout);
    assert!(
        out.contains("ok   backends: alias, crypt, local, sftp"),
        "{out}"
    );
    assert!(
        out.contains("FAIL branch gd") && out.contains("without that backend"),
        "{out}"
    );
}

/// The JSON events a `cat >> FILE` notify command has written so far.
pub fn notified(file: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON event a line"))
        .collect()
}

/// Waits for `event` of `branch` among [`notified`]'s.
pub fn wait_for_event(
    file: &std::path::Path,
    event: &str,
    branch: &str,
    pool: &Pool,
) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(found) = notified(file)
            .into_iter()
            .find(|e| e["event"] == event && e["branch"] == branch)
        {
            return found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {event} for {branch}: {:?}\n{}",
            notified(file),
            pool.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Two local clouds, imported; cloud1 has no room for new files from the
/// start (a 1M quota).
fn two_clouds_the_first_full() -> Pool {
    let sandbox = Sandbox::new();
    let mut config = String::new();
    for name in ["cloud1", "cloud2"] {
        let dir = sandbox.path().join("clouds").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        config.push_str(&format!(
            "[{name}]\ntype = alias\nremote = {}\n\n",
            dir.display()
        ));
    }
    let pool = Pool::install_with(sandbox, &config, &["--quota", "cloud1=1M"]);
    pool.import();
    pool
}

#[test]
fn a_notify_command_hears_of_a_full_cloud_and_a_refused_branch() {
    let mut pool = two_clouds_the_first_full();
    let events = pool.sandbox.path().join("events.jsonl");
    let notify = format!("cat >> {}", events.display());
    pool.start_with(&["--notify-command", &notify]);
    let full = wait_for_event(&events, "cloud_full", "cloud1", &pool);
    assert_eq!(full["remote"], "cloud1:msync");
    assert_eq!(full["install_dir"], pool.install.to_str().unwrap());
    assert!(full["time"].as_str().unwrap().ends_with('Z'), "{full}");
    // New files all go to cloud2 once placement has seen cloud1 full.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while pool.status().pool.is_none_or(|p| p.takes_new != ["cloud2"]) {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            pool.status().pool
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for i in 0..150 {
        write_file(&pool.mount.join(format!("n/f{i}.txt")), 100, i as u8);
    }
    pool.settle(Duration::from_secs(120));
    // Still full, and said once.
    let fulls = notified(&events)
        .into_iter()
        .filter(|e| e["event"] == "cloud_full")
        .count();
    assert_eq!(fulls, 1, "{:?}", notified(&events));
    pool.stop();

    // Most of a branch gone while stopped: the guard refuses it, and the
    // command hears why.
    let branch = pool.branch_dir("cloud2");
    for i in 0..120 {
        let _ = std::fs::remove_file(branch.join(format!("n/f{i}.txt")));
    }
    // The command was kept in the install: this start runs it too.
    pool.start();
    let refused = wait_for_event(&events, "branch_refused", "cloud2", &pool);
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("would delete"),
        "{refused}"
    );
    pool.stop();
}

#[test]
fn a_notify_command_that_hangs_holds_nothing_up() {
    let mut pool = two_clouds_the_first_full();
    // The full cloud is an event at once; the command never ends by itself.
    pool.start_with(&["--notify-command", "sleep 40"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !pool.log().contains("notify: cloud_full") {
        assert!(std::time::Instant::now() < deadline, "{}", pool.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    // Meanwhile the pool syncs as ever.
    for i in 0..20 {
        write_file(&pool.mount.join(format!("h/f{i}.bin")), 2000 + i, i as u8);
    }
    pool.settle(Duration::from_secs(120));
    pool.assert_in_sync();
    let sent = pool.remote_files("cloud1:msync").len() + pool.remote_files("cloud2:msync").len();
    assert_eq!(sent, 20);
    let started = std::time::Instant::now();
    pool.stop();
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "stop waited for the notify command: {:?}",
        started.elapsed()
    );
}
