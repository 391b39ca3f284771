//! Surviving faults (issue 4): the service killed mid-upload, an SFTP
//! server that goes away, a lost inotify queue, too few inotify watches, a
//! full disk during `import`, and a "reboot" that leaves state files behind.
//! Every test ends with each branch equal to its remote, checked with
//! Debian's rclone CLI.
//!
//! Two tests lower global kernel limits (/proc/sys/fs/inotify/*). Every
//! test here takes [`LOCK`], so no fault test starts a service while
//! another one has a limit lowered, and every change is undone by a guard
//! that also runs when a test panics. A lowered limit is kept only while
//! the service creates its inotify instance or watches: other test binaries
//! on the machine share those limits.

use std::io::Write;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use msync::sync::BranchState;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::pool::{DEBOUNCE, Pool, write_file};
use crate::sshd::SftpServer;
use crate::util::{Sandbox, Sysctl, Tmpfs, describe, require_tool, run, run_expecting, stderr};

mod churn;

const SETTLE: Duration = Duration::from_secs(120);

const MAX_QUEUED_EVENTS: &str = "/proc/sys/fs/inotify/max_queued_events";
const MAX_USER_WATCHES: &str = "/proc/sys/fs/inotify/max_user_watches";

/// Serialises the tests of this file (see the module doc).
static LOCK: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    // A test that panicked while holding it leaves nothing to repair: its
    // guards have run.
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs `program args… path`, insisting it succeeds.
fn run_command(program: &str, args: &[&str], path: &Path) {
    let mut command = std::process::Command::new(program);
    command.args(args).arg(path);
    run(command);
}

/// A service a test started. Dropping it without [`Service::stop`] stops
/// it with `--now`, and kills it if it still runs, so a failing test leaves
/// no daemon behind (the [`Pool`] then unmounts what is left).
struct Service<'a> {
    pool: &'a Pool,
    stopped: bool,
}

/// `msync start` with the tests' debounce and `extra` arguments.
fn start<'a>(pool: &'a Pool, extra: &[&str]) -> Service<'a> {
    let mut command = pool.msync([
        "start",
        pool.install.to_str().unwrap(),
        pool.mount.to_str().unwrap(),
        "--debounce",
        DEBOUNCE,
    ]);
    command.args(extra);
    // The guard first: a start that fails half-way is cleaned up too.
    let service = Service {
        pool,
        stopped: false,
    };
    let output = command.output().expect("running msync start");
    assert!(
        output.status.success(),
        "start failed\n{}\n--- log\n{}",
        describe(&command, &output),
        pool.log()
    );
    assert!(
        msync::union::is_mounted(&pool.mount),
        "not mounted after start"
    );
    service
}

impl Service<'_> {
    fn pid(&self) -> u32 {
        self.pool.status().pid
    }

    fn stop(mut self) {
        run(self.pool.msync([
            "stop",
            self.pool.install.to_str().unwrap(),
            self.pool.mount.to_str().unwrap(),
        ]));
        self.stopped = true;
        assert!(
            !msync::union::is_mounted(&self.pool.mount),
            "still mounted after stop"
        );
    }

    /// The service dies at once, as with the OOM killer: no clean-up.
    fn kill(mut self) {
        let pid = self.pid();
        kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
        wait_gone(&self.pool.install, Duration::from_secs(60));
        self.stopped = true;
    }
}

impl Drop for Service<'_> {
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        let pid_file = self.pool.install.join("run/msync.pid");
        let _ = self
            .pool
            .msync([
                "stop",
                self.pool.install.to_str().unwrap(),
                self.pool.mount.to_str().unwrap(),
                "--now",
                "--timeout",
                "5s",
            ])
            .output();
        if let Some(pid) = msync::service::running_pid(&pid_file).filter(|&p| p > 0) {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }
}

/// Waits until the killed service is gone as far as anyone can tell: its
/// pid lock is free and its socket refuses. Its leader turning zombie is
/// not enough: another of its threads may still hold both for a while,
/// longer where PID 1 is slow to reap.
fn wait_gone(install: &Path, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let pid_file = install.join("run/msync.pid");
    let socket = install.join("run/msync.sock");
    loop {
        let lock_free = msync::service::running_pid(&pid_file).is_none();
        let refuses = std::os::unix::net::UnixStream::connect(&socket).is_err();
        if lock_free && refuses {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the killed service still holds its lock or socket after {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The pids of the mergerfs daemons serving `mount_point`.
fn mergerfs_daemons(mount_point: &Path) -> Vec<u32> {
    let target = mount_point.as_os_str().as_encoded_bytes();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let args: Vec<&[u8]> = cmdline.strip_suffix(b"\0")?.split(|&b| b == 0).collect();
            let is_mergerfs = args[0].ends_with(b"mergerfs");
            (is_mergerfs && args.last() == Some(&target)).then_some(pid)
        })
        .collect()
}

/// Waits until no mergerfs serves `mount_point` any more.
fn wait_no_daemon(mount_point: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !mergerfs_daemons(mount_point).is_empty() {
        assert!(
            Instant::now() < deadline,
            "mergerfs still serves {}: {:?}",
            mount_point.display(),
            mergerfs_daemons(mount_point)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A real SFTP server and an imported pool whose one cloud it serves.
fn sftp_pool() -> (SftpServer, Pool) {
    let server = SftpServer::start();
    let config = server.rclone_section("ssh");
    let pool = Pool::install_remotes(Sandbox::new(), &config, None);
    pool.import();
    (server, pool)
}

/// Every file on every remote of the pool: (branch, path, size), sorted.
fn all_remote_files(pool: &Pool) -> Vec<(String, String, u64)> {
    let mut files: Vec<(String, String, u64)> = pool
        .branches
        .iter()
        .flat_map(|(name, remote)| {
            pool.remote_files(remote)
                .into_iter()
                .map(move |(path, size)| (name.clone(), path, size))
        })
        .collect();
    files.sort();
    files
}

/// Waits until `condition` holds, or fails with `what` and the status.
fn wait_for(pool: &Pool, timeout: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {:#?}\n--- log\n{}",
            pool.status(),
            pool.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// How many inotify watches processes of root hold right now, machine
/// wide: `max_user_watches` counts them all against root.
fn root_inotify_watches() -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
            .is_none()
        {
            continue;
        }
        let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        let euid_root = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0");
        if !euid_root {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(entry.path().join("fdinfo")) else {
            continue;
        };
        for fd in fds.flatten() {
            let info = std::fs::read_to_string(fd.path()).unwrap_or_default();
            total += info
                .lines()
                .filter(|l| l.starts_with("inotify wd:"))
                .count() as u64;
        }
    }
    total
}

#[test]
fn killed_mid_upload_the_next_start_adopts_the_live_union_and_converges() {
    let _serial = serial();
    let pool = Pool::local_clouds(2);
    pool.import();
    let service = start(&pool, &["--bwlimit", "5M"]);
    for i in 0..10 {
        write_file(
            &pool.mount.join(format!("small/{i}.txt")),
            1000 + i,
            i as u8,
        );
    }
    const BIG: usize = 40 << 20;
    write_file(&pool.mount.join("big.bin"), BIG, 7);
    // 40 MiB at 5 MiB/s: killed well inside the upload.
    wait_for(&pool, Duration::from_secs(30), "big.bin in flight", || {
        pool.status().branches.iter().any(|b| {
            b.in_flight
                .iter()
                .any(|f| f.name == "big.bin" && f.bytes > 0 && (f.bytes as usize) < BIG)
        })
    });
    service.kill();

    // mergerfs is its own daemon: the union outlives the service, and
    // still takes writes the dead service never saw.
    assert!(
        msync::union::is_mounted(&pool.mount),
        "the union went with the service"
    );
    write_file(&pool.mount.join("written while down.txt"), 4321, 9);
    let holder = pool.holder("big.bin");
    assert_no_torn_file(&pool, &pool.remote_of(&holder), "big.bin", BIG);

    // A file kept open through the union left behind: the start adopts
    // the union as it is, and the application writes on undisturbed.
    let mut open = std::fs::File::create(pool.mount.join("open across restart.bin")).unwrap();
    open.write_all(&[1; 3000]).unwrap();
    let old_daemons = mergerfs_daemons(&pool.mount);

    let service = start(&pool, &[]);
    assert!(
        pool.log().contains("adopted as it is"),
        "the live union was not adopted\n{}",
        pool.log()
    );
    assert_eq!(
        mergerfs_daemons(&pool.mount),
        old_daemons,
        "the union was remounted under the open file"
    );
    open.write_all(&[2; 3000]).unwrap();
    drop(open);
    write_file(&pool.mount.join("written after adoption.txt"), 2222, 8);
    pool.settle(SETTLE);
    pool.assert_in_sync();
    // Exactly the files written, each whole: nothing partial under a final
    // name, no temporary names left.
    let mut expected: Vec<(String, String, u64)> = (0..10)
        .map(|i| {
            let path = format!("small/{i}.txt");
            (pool.holder(&path), path, 1000 + i)
        })
        .collect();
    expected.push((holder, "big.bin".into(), BIG as u64));
    expected.push((
        pool.holder("open across restart.bin"),
        "open across restart.bin".into(),
        6000,
    ));
    expected.push((
        pool.holder("written while down.txt"),
        "written while down.txt".into(),
        4321,
    ));
    expected.push((
        pool.holder("written after adoption.txt"),
        "written after adoption.txt".into(),
        2222,
    ));
    expected.sort();
    assert_eq!(all_remote_files(&pool), expected);
    for (_, remote) in &pool.branches {
        assert_partials_cleaned(&pool, remote);
    }
    service.stop();
    wait_no_daemon(&pool.mount);
}

/// Right after a kill mid-upload: nothing under the real name, or the
/// whole file; the part sent waits under a temporary name in
/// `.msync/partial/` (checked with the rclone CLI).
fn assert_no_torn_file(pool: &Pool, remote: &str, name: &str, size: usize) {
    let on_remote = pool.remote_files(remote);
    let real = on_remote.iter().find(|(p, _)| p == name);
    assert!(
        real.is_none_or(|(_, s)| *s == size as u64),
        "a torn {name} under its real name: {real:?}"
    );
    let partial = partial_files(pool, remote);
    eprintln!("{name} right after the kill: {real:?}; in .msync/partial: {partial:?}");
}

/// The files under the remote's `.msync/partial/`, by the rclone CLI; none
/// when the directory is not there.
fn partial_files(pool: &Pool, remote: &str) -> Vec<(String, u64)> {
    let partial = format!("{remote}/.msync/partial");
    let mut command = pool
        .sandbox
        .rclone_cli(["lsf", "--max-depth", "1", &partial]);
    let output = command.output().unwrap();
    if !output.status.success() {
        assert!(
            stderr(&output).contains("directory not found"),
            "{}",
            describe(&command, &output)
        );
        return Vec::new();
    }
    pool.sandbox.remote_files(&partial)
}

/// After a start: no temporary names left behind.
fn assert_partials_cleaned(pool: &Pool, remote: &str) {
    let partial = partial_files(pool, remote);
    assert!(partial.is_empty(), "left in .msync/partial: {partial:?}");
}

#[test]
fn killed_mid_upload_to_sftp_leaves_no_torn_file() {
    let _serial = serial();
    let (server, pool) = sftp_pool();
    let service = start(&pool, &["--bwlimit", "4M"]);
    const BIG: usize = 40 << 20;
    write_file(&pool.mount.join("big.bin"), BIG, 7);
    wait_for(&pool, Duration::from_secs(60), "big.bin in flight", || {
        pool.status().branches[0]
            .in_flight
            .iter()
            .any(|f| f.name == "big.bin" && f.bytes > 0 && (f.bytes as usize) < BIG)
    });
    service.kill();
    let remote = pool.branches[0].1.clone();
    assert_no_torn_file(&pool, &remote, "big.bin", BIG);
    let sent_part = std::fs::read_dir(server.root().join("msync/.msync/partial"))
        .map(|dir| dir.count())
        .unwrap_or(0);
    assert!(sent_part > 0, "the upload was not under a temporary name");

    // Written while the service is down: the start's reconcile sends it,
    // and a kill then leaves no torn file either.
    write_file(&pool.mount.join("while down.bin"), BIG, 8);
    let service = start(&pool, &["--bwlimit", "4M"]);
    wait_for(
        &pool,
        Duration::from_secs(60),
        "while down.bin in flight",
        || {
            pool.status().branches[0].in_flight.iter().any(|f| {
                f.name.ends_with("while down.bin") && f.bytes > 0 && (f.bytes as usize) < BIG
            })
        },
    );
    service.kill();
    assert_no_torn_file(&pool, &remote, "while down.bin", BIG);

    let service = start(&pool, &[]);
    pool.settle(SETTLE);
    pool.assert_in_sync();
    assert_eq!(
        pool.remote_files(&remote),
        [
            ("big.bin".to_owned(), BIG as u64),
            ("while down.bin".to_owned(), BIG as u64)
        ]
    );
    assert_partials_cleaned(&pool, &remote);
    service.stop();
}

#[test]
fn an_sftp_server_down_for_30s_is_retried_then_everything_lands() {
    let _serial = serial();
    let (mut server, pool) = sftp_pool();
    let service = start(&pool, &[]);
    let mut written = 0;
    let mut write_next = |pool: &Pool| {
        write_file(
            &pool
                .mount
                .join(format!("stream/{}/f{written}.bin", written % 4)),
            2000 + written,
            written as u8,
        );
        written += 1;
    };
    for _ in 0..10 {
        write_next(&pool);
        std::thread::sleep(Duration::from_millis(100));
    }

    server.stop();
    let down = Instant::now();
    let mut retrying_seen = None;
    while down.elapsed() < Duration::from_secs(30) {
        write_next(&pool);
        let mut command = pool.msync(["status", pool.install.to_str().unwrap(), "--json"]);
        let output = command.output().unwrap();
        let status: msync::service::ServiceStatus = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("{e}\n{}", describe(&command, &output)));
        let branch = &status.branches[0];
        if branch.state == BranchState::Retrying && retrying_seen.is_none() {
            assert_eq!(
                output.status.code(),
                Some(6),
                "retrying is not exit 6\n{}",
                describe(&command, &output)
            );
            retrying_seen = Some((down.elapsed(), branch.last_error.clone()));
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let (after, error) =
        retrying_seen.unwrap_or_else(|| panic!("status never showed retrying\n{}", pool.log()));
    eprintln!("retrying {after:?} after the server went down: {error:?}");
    assert!(error.is_some(), "retrying without a last error");

    server.restart();
    let up = Instant::now();
    for _ in 0..10 {
        write_next(&pool);
        std::thread::sleep(Duration::from_millis(100));
    }
    pool.settle(SETTLE);
    eprintln!("settled {:?} after the server came back", up.elapsed());
    pool.assert_in_sync();
    assert_eq!(pool.remote_files("ssh:msync").len(), written);
    service.stop();
}

#[test]
fn inotify_limit_queue_overflow_is_followed_by_a_full_reconcile() {
    let _serial = serial();
    let pool = Pool::local_clouds(2);
    pool.import();
    // The kernel gives an inotify instance the queue limit in force when it
    // is created: the service keeps the small queue after the restore.
    let limit = Sysctl::set(MAX_QUEUED_EVENTS, 64);
    let service = start(&pool, &[]);
    limit.restore();

    const DIRS: usize = 100;
    const FILES: usize = 20_000;
    for d in 0..DIRS {
        std::fs::create_dir_all(pool.mount.join(format!("burst/d{d}"))).unwrap();
    }
    let started = Instant::now();
    for i in 0..FILES {
        std::fs::write(
            pool.mount.join(format!("burst/d{}/f{i}.txt", i % DIRS)),
            format!("file {i}\n"),
        )
        .unwrap();
    }
    eprintln!("{FILES} files written in {:?}", started.elapsed());
    pool.settle(Duration::from_secs(180));
    eprintln!("settled {:?} after the burst began", started.elapsed());
    let log = pool.log();
    eprintln!(
        "{} overflow(s), {} reconcile(s) in the log",
        log.matches("inotify queue overflowed").count(),
        log.matches("reconciling").count()
    );
    let overflow = log
        .find("inotify queue overflowed")
        .unwrap_or_else(|| panic!("no overflow in the log\n{log}"));
    assert!(
        log[overflow..].contains("reconciling"),
        "no reconcile after the overflow\n{log}"
    );
    pool.assert_in_sync();
    assert_eq!(all_remote_files(&pool).len(), FILES);
    service.stop();
}

#[test]
fn inotify_limit_too_few_watches_warn_and_the_periodic_reconcile_covers() {
    let _serial = serial();
    let pool = Pool::local_clouds(1);
    pool.import();
    const DIRS: usize = 300;
    let branch = pool.branch_dir(&pool.branches[0].0);
    for d in 0..DIRS {
        std::fs::create_dir_all(branch.join(format!("tree/d{d}"))).unwrap();
    }

    // The limit counts every watch of root on the machine and is checked
    // when a watch is added: leave room for a few of the branch's 302
    // directories, only while the service adds its watches.
    const ROOM: u64 = 40;
    let limit = Sysctl::set(MAX_USER_WATCHES, root_inotify_watches() + ROOM);
    let service = start(&pool, &["--reconcile-every", "5s"]);
    limit.restore();
    let pid = service.pid();

    // The service answers before its main loop has heard from the
    // watcher: wait for the warning.
    let warned = |b: &msync::sync::BranchStatus| {
        b.warning
            .as_deref()
            .is_some_and(|w| w.contains("fs.inotify.max_user_watches"))
    };
    pool.wait_for_branch(0, warned, SETTLE);
    let status = pool.status();
    assert!(
        status.inotify_watches < DIRS,
        "every directory got a watch: {status:#?}"
    );
    assert!(
        pool.log().contains("max_user_watches"),
        "the log does not name the limit\n{}",
        pool.log()
    );

    // Most of these directories have no watch: only the periodic
    // reconcile can find what lands in them.
    for d in 0..DIRS {
        write_file(
            &pool.mount.join(format!("tree/d{d}/new.txt")),
            100 + d,
            d as u8,
        );
    }
    let remote = pool.branches[0].1.clone();
    wait_for(
        &pool,
        Duration::from_secs(60),
        "every file on the remote",
        || pool.remote_files(&remote).len() == DIRS,
    );
    pool.settle(SETTLE);
    pool.assert_in_sync();
    let status = pool.status();
    assert_eq!(status.pid, pid, "the service restarted");
    assert!(
        status.inotify_watches < DIRS,
        "the directories got watches after all, so the reconcile was not tested: {status:#?}"
    );
    service.stop();
}

#[test]
fn a_full_disk_fails_import_clearly_and_a_rerun_completes() {
    let _serial = serial();
    require_tool("diff", "diffutils");
    let sandbox = Sandbox::new();
    let cloud = sandbox.path().join("clouds/cloud1");
    sandbox.write_config(&format!(
        "[cloud1]\ntype = alias\nremote = {}\n",
        cloud.display()
    ));
    // 3 × 3 MiB and some small files: more than the 6 MiB disk holds.
    for i in 0..3 {
        write_file(&cloud.join(format!("msync/big/{i}.bin")), 3 << 20, i as u8);
    }
    for i in 0..20 {
        write_file(
            &cloud.join(format!("msync/small/{i}.txt")),
            500 + i,
            i as u8,
        );
    }
    let disk = Tmpfs::mount(&sandbox.path().join("small-disk"), "6m");
    let install = disk.path.join("install");
    let install_arg = install.to_str().unwrap().to_owned();
    run(sandbox.msync(["install", &install_arg]));

    let output = run_expecting(sandbox.msync(["import", &install_arg]), 6);
    let message = stderr(&output);
    // rclone preallocates, so the disk is found full before a byte is
    // written ("file too big for remaining disk space"); a write that runs
    // out says "no space left on device".
    assert!(
        message.contains("import failed for cloud1")
            && (message.contains("disk space") || message.contains("no space left")),
        "the error does not say the disk is full\n{message}"
    );
    assert!(
        message.contains("msync import") && message.contains("again"),
        "the error does not say what to do\n{message}"
    );
    let branch = install.join("branches/cloud1");
    // Whatever reached the branch is whole.
    for (path, size) in sandbox.remote_files(branch.to_str().unwrap()) {
        if path == ".msync-branch" {
            continue;
        }
        let original = std::fs::metadata(cloud.join("msync").join(&path)).unwrap();
        assert_eq!(size, original.len(), "{path} is partial in the branch");
    }

    disk.resize("64m");
    run(sandbox.msync(["import", &install_arg]));
    let mut diff = std::process::Command::new("diff");
    diff.args(["-r", "--exclude=.msync-branch"])
        .arg(cloud.join("msync"))
        .arg(&branch);
    let output = diff.output().unwrap();
    assert!(output.status.success(), "{}", describe(&diff, &output));
}

#[test]
fn after_a_reboot_start_needs_no_manual_cleanup() {
    let _serial = serial();
    require_tool("umount", "mount");
    let pool = Pool::local_clouds(2);
    pool.import();
    let service = start(&pool, &[]);
    for i in 0..10 {
        write_file(
            &pool.mount.join(format!("before/{i}.txt")),
            500 + i,
            i as u8,
        );
    }
    pool.settle(SETTLE);
    pool.assert_in_sync();

    // The reboot: the service, its mount and the mergerfs daemon vanish;
    // the pid file and the socket stay.
    service.kill();
    let daemons = mergerfs_daemons(&pool.mount);
    assert!(!daemons.is_empty(), "no mergerfs serves the mount");
    run_command("umount", &["-l"], &pool.mount);
    for pid in daemons {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
    wait_no_daemon(&pool.mount);
    assert!(!msync::union::is_mounted(&pool.mount));
    assert!(pool.install.join("run/msync.pid").exists());
    assert!(pool.install.join("run/msync.sock").exists());
    run_expecting(pool.msync(["status", pool.install.to_str().unwrap()]), 7);

    // Changes the clouds never got: one file lost its upload, one was
    // deleted after it.
    let (first, _) = pool.branches[0].clone();
    write_file(&pool.branch_dir(&first).join("unsent.txt"), 777, 1);
    let gone = "before/3.txt";
    std::fs::remove_file(pool.branch_dir(&pool.holder(gone)).join(gone)).unwrap();

    let service = start(&pool, &[]);
    for i in 0..5 {
        write_file(&pool.mount.join(format!("after/{i}.txt")), 900 + i, i as u8);
    }
    pool.settle(SETTLE);
    pool.assert_in_sync();
    assert_eq!(all_remote_files(&pool).len(), 10 - 1 + 1 + 5);
    service.stop();
}

#[test]
fn a_dead_union_left_by_a_crashed_mergerfs_is_cleared() {
    let _serial = serial();
    let pool = Pool::local_clouds(1);
    pool.import();
    let service = start(&pool, &[]);
    service.kill();
    for pid in mergerfs_daemons(&pool.mount) {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
    wait_no_daemon(&pool.mount);
    // Still in the mount table, answering every access with ENOTCONN (or
    // ECONNABORTED, when the daemon died in the middle of a request).
    assert!(msync::union::is_mounted(&pool.mount));
    let err = std::fs::metadata(&pool.mount).unwrap_err();
    assert!(
        [nix::libc::ENOTCONN, nix::libc::ECONNABORTED].contains(&err.raw_os_error().unwrap_or(0)),
        "{err}"
    );

    let service = start(&pool, &[]);
    write_file(&pool.mount.join("alive again.txt"), 1234, 1);
    pool.settle(SETTLE);
    pool.assert_in_sync();
    assert_eq!(
        pool.remote_files(&pool.branches[0].1),
        [("alive again.txt".to_owned(), 1234)]
    );
    service.stop();
}

#[test]
fn a_stale_lease_on_a_remote_away_at_start_is_taken_over_when_it_returns() {
    let _serial = serial();
    let (mut server, pool) = sftp_pool();
    // A dead installation's lease, left on the server; then the server
    // goes away before msync starts.
    let lock = server.root().join("msync/.msync/lock");
    std::fs::create_dir_all(lock.parent().unwrap()).unwrap();
    let lease = serde_json::json!({
        "host": "gone", "install_id": "dead-install", "install_dir": "/srv/dead",
        "pid": 1, "heartbeat": 1_000_000_000u64, "sequence": 3
    });
    std::fs::write(&lock, lease.to_string()).unwrap();
    server.stop();

    let service = start(&pool, &["--lease-expiry", "3s"]);
    write_file(&pool.mount.join("while away.txt"), 321, 1);
    server.restart();
    wait_for(&pool, SETTLE, "the stale lease taken over", || {
        pool.log().contains("took over a stale lease of /srv/dead")
    });
    pool.settle(SETTLE);
    pool.assert_in_sync();
    let held: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&lock).unwrap()).unwrap();
    assert_ne!(held["install_id"], "dead-install", "{held}");
    service.stop();
}

/// The server goes down while the branch is idle, so the next change needs
/// a new connection: rclone's own retries must not hide the outage behind
/// "syncing", and `stop` must not wait its whole timeout for a remote that
/// is down. The change is sent by the next start.
#[test]
fn a_server_down_while_idle_shows_at_once_and_does_not_hold_up_stop() {
    let _serial = serial();
    let (mut server, pool) = sftp_pool();
    let mut service = start(&pool, &[]);
    for i in 0..4 {
        write_file(&pool.mount.join(format!("a/f{i}.bin")), 2000, i as u8);
    }
    pool.settle(SETTLE);
    server.stop();
    // Changes a few hundred milliseconds apart, each needing a connection
    // of its own on another of the branch's threads.
    for i in 0..4 {
        write_file(&pool.mount.join(format!("b{i}/late.bin")), 3000, i as u8);
        std::thread::sleep(Duration::from_millis(300));
    }
    wait_for(&pool, Duration::from_secs(30), "retrying", || {
        let status = pool.status();
        status.branches[0].state == BranchState::Retrying
    });

    let stop_timeout = Duration::from_secs(300);
    let stopping = Instant::now();
    run(pool.msync([
        "stop",
        pool.install.to_str().unwrap(),
        pool.mount.to_str().unwrap(),
        "--timeout",
        "300s",
    ]));
    assert!(
        stopping.elapsed() < stop_timeout,
        "stop waited its whole timeout for a remote that is down\n{}",
        pool.log()
    );
    assert!(
        pool.log().contains("change(s) not sent"),
        "the unsent change is not reported\n{}",
        pool.log()
    );
    service.stopped = true;

    server.restart();
    let service = start(&pool, &[]);
    pool.settle(SETTLE);
    pool.assert_in_sync();
    assert_eq!(pool.remote_files("ssh:msync").len(), 8);
    service.stop();
}
