//! Placement by the room each cloud really has: clouds on tmpfs filesystems
//! of different sizes (so `about` and ENOSPC are real), files written
//! through the mount, results checked with the rclone CLI.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use msync::sync::BranchState;

use crate::pool::{Pool, write_file};
use crate::s3::S3Server;
use crate::util::{Sandbox, Tmpfs, run, run_expecting, stderr, stdout};

const MIB: usize = 1 << 20;
const SETTLE: Duration = Duration::from_secs(300);

/// Clouds on their own tmpfs filesystems of the sizes given, as alias
/// remotes `cloud1`, `cloud2` …, installed and imported. The tmpfs
/// mounts live outside the pool's sandbox, so they outlive it.
struct Clouds {
    // Fields drop in order: the pool (and its service) first, then the
    // filesystems, then their directory.
    pool: Pool,
    disks: Vec<Tmpfs>,
    _dir: tempfile::TempDir,
}

impl Clouds {
    fn new(sizes: &[&str]) -> Clouds {
        Clouds::holding(sizes, |_, _| {})
    }

    /// Like [`Clouds::new`], with `fill` writing into each cloud's
    /// filesystem (given its root) before the install imports them.
    fn holding(sizes: &[&str], fill: impl Fn(usize, &Path)) -> Clouds {
        let dir = tempfile::Builder::new()
            .prefix("msync-clouds-")
            .tempdir()
            .unwrap();
        let mut config = String::new();
        let mut disks = Vec::new();
        for (i, size) in sizes.iter().enumerate() {
            let disk = Tmpfs::mount(&dir.path().join(format!("cloud{}", i + 1)), size);
            config.push_str(&format!(
                "[cloud{}]\ntype = alias\nremote = {}\n\n",
                i + 1,
                disk.path.display()
            ));
            fill(i, &disk.path);
            disks.push(disk);
        }
        let pool = Pool::install(Sandbox::new(), &config);
        pool.import();
        Clouds {
            pool,
            disks,
            _dir: dir,
        }
    }

    /// Bytes the filesystem of cloud `i` (from 0) holds, by statvfs.
    fn used(&self, i: usize) -> u64 {
        let stat = nix::sys::statvfs::statvfs(&self.disks[i].path).unwrap();
        (stat.blocks() - stat.blocks_free()) * stat.fragment_size()
    }

    /// Writes `count` files of `size` bytes into `dir` through the mount.
    fn write(&self, dir: &str, count: usize, size: usize) {
        for i in 0..count {
            write_file(
                &self.pool.mount.join(format!("{dir}/{i}.bin")),
                size,
                i as u8,
            );
        }
    }

    /// Files msync keeps on all the clouds, by the rclone CLI.
    fn files_on_clouds(&self) -> usize {
        self.pool
            .branches
            .iter()
            .map(|(_, remote)| self.pool.remote_files(remote).len())
            .sum()
    }

    fn capacity(&self, i: usize) -> u64 {
        let stat = nix::sys::statvfs::statvfs(&self.disks[i].path).unwrap();
        stat.blocks() * stat.fragment_size()
    }
}

/// Every file in `pool`'s branches, relative, with the branch holding it.
fn local_files(pool: &Pool) -> Vec<(String, String)> {
    let mut files = Vec::new();
    for (name, _) in &pool.branches {
        let root = pool.branch_dir(name);
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                let path = entry.path();
                if entry.file_type().unwrap().is_dir() {
                    stack.push(path);
                } else {
                    let relative = path.strip_prefix(&root).unwrap().to_string_lossy();
                    if relative != ".msync-branch" {
                        files.push((name.clone(), relative.into_owned()));
                    }
                }
            }
        }
    }
    files.sort();
    files
}

#[test]
fn eighty_eight_files_fill_clouds_of_40_60_and_400_mb_and_all_land() {
    let mut clouds = Clouds::new(&["40m", "60m", "400m"]);
    clouds.pool.start();
    const FILES: usize = 88;
    for i in 0..FILES {
        write_file(
            &clouds
                .pool
                .mount
                .join(format!("media/{:02}/clip{i}.bin", i % 8)),
            5 * MIB,
            i as u8,
        );
    }
    let status = clouds.pool.settle(SETTLE);

    // Every file is on exactly one branch and on that branch's cloud, as
    // the rclone CLI sees it: nothing is left only on the local disk.
    let files = local_files(&clouds.pool);
    assert_eq!(files.len(), FILES, "{files:?}");
    clouds.pool.wait_in_sync(SETTLE);
    assert_eq!(clouds.files_on_clouds(), FILES);
    // No cloud is past its size, and none holds more than the files its
    // branch has: what moved away left nothing behind, not even in the
    // trash.
    for (i, disk) in clouds.disks.iter().enumerate() {
        assert!(clouds.used(i) <= clouds.capacity(i));
        let trash = disk.path.join("msync/.msync/trash");
        let days = std::fs::read_dir(&trash).map_or(0, |days| days.count());
        assert_eq!(days, 0, "{} holds a trash", trash.display());
    }
    // The small clouds were used, not skipped: every cloud holds files.
    for (name, remote) in &clouds.pool.branches {
        assert!(
            !clouds.pool.remote_files(remote).is_empty(),
            "{name} got nothing: {status:#?}"
        );
    }
    let pool = pool_status(&clouds.pool).pool.unwrap();
    assert!(pool.total > 0 && pool.fill_percent.is_some(), "{pool:?}");
    for branch in &status.branches {
        assert!(branch.space.total.is_some(), "{branch:?}");
        assert_eq!(branch.state, BranchState::Idle);
    }
    clouds.pool.stop();
}

#[test]
fn a_cloud_filled_behind_msyncs_back_takes_no_new_files() {
    let mut clouds = Clouds::new(&["60m", "60m"]);
    clouds.pool.start();
    for i in 0..6 {
        write_file(
            &clouds.pool.mount.join(format!("early/{i}.txt")),
            1000,
            i as u8,
        );
    }
    clouds.pool.settle(SETTLE);

    // Another client fills cloud1 to within a few hundred KiB.
    let filler = clouds.disks[0].path.join("someone-else.bin");
    let room = clouds.capacity(0) - clouds.used(0);
    write_file(&filler, (room - (300 << 10)) as usize, 7);

    clouds.write("late", 20, 2 * MIB);
    clouds.pool.settle(SETTLE);
    clouds.pool.wait_in_sync(SETTLE);
    // All 20 are on cloud2's cloud; whatever the union put on cloud1's
    // branch was moved.
    let late: Vec<_> = local_files(&clouds.pool)
        .into_iter()
        .filter(|(_, path)| path.starts_with("late/"))
        .collect();
    assert_eq!(late.len(), 20);
    assert!(
        late.iter().all(|(branch, _)| branch == "cloud2"),
        "{late:?}"
    );
    // cloud1 takes no new files now, and status says where they go.
    let modes = msync::union::create_branches(&clouds.pool.mount).unwrap();
    assert!(
        modes.contains("cloud1=NC") && modes.contains("cloud2=RW"),
        "{modes}"
    );
    let pool = pool_status(&clouds.pool).pool.unwrap();
    assert_eq!(pool.takes_new, ["cloud2"]);
    let text = stdout(&run(clouds
        .pool
        .msync(["status", clouds.pool.install.to_str().unwrap()])));
    assert!(text.contains("new files go to cloud2"), "{text}");
    clouds.pool.stop();
}

#[test]
fn quotas_are_checked_before_anything_is_written() {
    let clouds = Clouds::new(&["10m"]);
    let install = clouds.pool.install.to_str().unwrap();
    let manifest = std::fs::read(clouds.pool.install.join("msync.json")).unwrap();
    for (quota, says) in [
        ("nosuch=5G", "not a remote of this install"),
        ("cloud1=-5G", "negative"),
        ("cloud1=lots", "not a size"),
        ("cloud1", "NAME=SIZE"),
    ] {
        let output = run_expecting(clouds.pool.msync(["install", install, "--quota", quota]), 2);
        assert!(
            stderr(&output).contains(says),
            "{quota}: {}",
            stderr(&output)
        );
        assert_eq!(
            std::fs::read(clouds.pool.install.join("msync.json")).unwrap(),
            manifest,
            "{quota} changed the manifest"
        );
    }
    // Bigger than the cloud: taken, with a warning.
    let output = run(clouds
        .pool
        .msync(["install", install, "--quota", "cloud1=1T"]));
    assert!(
        stderr(&output).contains("more than the cloud's size"),
        "{}",
        stderr(&output)
    );
    assert!(
        stdout(&output).contains("quota 1.00 TiB"),
        "{}",
        stdout(&output)
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(clouds.pool.install.join("msync.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["branches"][0]["quota"], 1u64 << 40);
    run(clouds
        .pool
        .msync(["install", install, "--quota", "cloud1=none"]));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(clouds.pool.install.join("msync.json")).unwrap())
            .unwrap();
    assert!(manifest["branches"][0]["quota"].is_null());
}

#[test]
fn a_quota_caps_what_msync_stores_on_a_cloud() {
    let mut clouds = Clouds::new(&["400m", "400m"]);
    let install = clouds.pool.install.to_str().unwrap().to_owned();
    run(clouds
        .pool
        .msync(["install", &install, "--quota", "cloud1=20M"]));
    clouds.pool.start();
    clouds.write("q", 12, 5 * MIB);
    let status = clouds.pool.settle(SETTLE);
    clouds.pool.wait_in_sync(SETTLE);
    let stored: u64 = clouds
        .pool
        .remote_files("cloud1:msync")
        .iter()
        .map(|(_, size)| size)
        .sum();
    assert!(
        stored <= 20 << 20,
        "cloud1 stores {stored} bytes, over its quota"
    );
    assert_eq!(clouds.files_on_clouds(), 12);
    let cloud1 = &status.branches[0].space;
    assert_eq!(
        (cloud1.quota, cloud1.total),
        (Some(20 << 20), Some(20 << 20))
    );
    clouds.pool.stop();
}

#[test]
fn check_warns_of_a_pool_above_ninety_percent() {
    let clouds = Clouds::new(&["10m", "10m"]);
    let install = clouds.pool.install.to_str().unwrap();
    let text = stdout(&run(clouds.pool.msync(["check", install])));
    assert!(text.contains("ok   pool:"), "{text}");
    for (i, disk) in clouds.disks.iter().enumerate() {
        let room = clouds.capacity(i) - clouds.used(i);
        write_file(
            &disk.path.join("other.bin"),
            (room - (200 << 10)) as usize,
            1,
        );
    }
    // Still exit 0: a full pool works, it needs attention.
    let text = stdout(&run(clouds.pool.msync(["check", install])));
    assert!(text.contains("WARN pool:"), "{text}");
}

/// The service's status once it has looked at the pool's space (after
/// every cloud was first asked).
fn pool_status(pool: &Pool) -> msync::service::ServiceStatus {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let status = pool.status();
        if status.pool.is_some() {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the pool's space never showed: {status:#?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The clouds' fill ratios, by statvfs.
fn fills(clouds: &Clouds) -> Vec<f64> {
    (0..clouds.disks.len())
        .map(|i| clouds.used(i) as f64 / clouds.capacity(i) as f64)
        .collect()
}

#[test]
fn balance_levels_clouds_from_95_10_10_to_within_15_points() {
    // An older setup put everything on one account: cloud1 is 95 % full,
    // the others hold 10 % of someone else's data.
    let clouds = Clouds::holding(&["60m", "60m", "60m"], |i, root| {
        if i == 0 {
            for n in 0..19 {
                write_file(&root.join(format!("msync/old/{n}.bin")), 3 * MIB, n as u8);
            }
        } else {
            write_file(&root.join("other.bin"), 6 * MIB, 1);
        }
    });
    let before = fills(&clouds);
    assert!(before[0] > 0.9 && before[1] < 0.15, "{before:?}");
    let install = clouds.pool.install.to_str().unwrap();

    // A dry run lists the moves and changes nothing.
    let listed = stdout(&run(clouds.pool.msync(["balance", install, "--dry-run"])));
    assert!(listed.contains("would move"), "{listed}");
    assert!(listed.contains("move old/"), "{listed}");
    assert_eq!(fills(&clouds), before);
    assert_eq!(
        local_files(&clouds.pool)
            .iter()
            .filter(|(b, _)| b == "cloud1")
            .count(),
        19
    );

    let output = run(clouds.pool.msync(["balance", install]));
    let after = fills(&clouds);
    let spread =
        after.iter().cloned().fold(0.0, f64::max) - after.iter().cloned().fold(1.0, f64::min);
    assert!(spread <= 0.15, "fills {after:?}\n{}", stdout(&output));
    // Every file is whole on exactly one branch and its cloud, by the
    // rclone CLI, and nothing went to a trash.
    assert_eq!(local_files(&clouds.pool).len(), 19);
    clouds.pool.wait_in_sync(SETTLE);
    assert_eq!(clouds.files_on_clouds(), 19);
    for disk in &clouds.disks {
        assert!(!disk.path.join("msync/.msync/trash").exists());
    }
}

#[test]
fn evacuate_with_the_service_running_keeps_every_file_in_view() {
    let mut clouds = Clouds::new(&["100m", "100m", "100m"]);
    let events = clouds.pool.sandbox.path().join("events.jsonl");
    let notify = format!("cat >> {}", events.display());
    clouds.pool.start_with(&["--notify-command", &notify]);
    clouds.write("photos", 30, MIB);
    clouds.pool.settle(SETTLE);
    let on_cloud1 = local_files(&clouds.pool)
        .iter()
        .filter(|(b, _)| b == "cloud1")
        .count();
    assert!(on_cloud1 > 0, "placement put nothing on cloud1");

    // Someone keeps looking at the pool while it moves.
    let mount = clouds.pool.mount.clone();
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let mut looks = 0;
            while !done.load(Ordering::Relaxed) {
                let seen = std::fs::read_dir(mount.join("photos")).unwrap().count();
                assert_eq!(
                    seen, 30,
                    "a file vanished from the pool during the evacuation"
                );
                looks += 1;
            }
            looks
        })
    };
    let install = clouds.pool.install.to_str().unwrap();
    let output = run(clouds
        .pool
        .msync(["balance", install, "--evacuate", "cloud1"]));
    done.store(true, Ordering::Relaxed);
    let looks = watcher.join().expect("the pool stayed whole");
    assert!(looks > 0);
    assert!(
        stdout(&output).contains("on its new cloud"),
        "{}",
        stdout(&output)
    );

    // cloud1 is empty locally and on its cloud, and retired; nothing lost.
    let files = local_files(&clouds.pool);
    assert_eq!(files.len(), 30);
    assert!(files.iter().all(|(b, _)| b != "cloud1"), "{files:?}");
    clouds.pool.settle(SETTLE);
    clouds.pool.wait_in_sync(SETTLE);
    assert!(clouds.pool.remote_files("cloud1:msync").is_empty());
    assert_eq!(clouds.files_on_clouds(), 30);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(clouds.pool.install.join("msync.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["branches"][0]["retired"], true);
    // The notify command heard the evacuation end, once.
    crate::service::wait_for_event(&events, "evacuation_finished", "cloud1", &clouds.pool);
    // New files go elsewhere.
    clouds.write("after", 10, 1000);
    clouds.pool.settle(SETTLE);
    assert!(local_files(&clouds.pool).iter().all(|(b, _)| b != "cloud1"));
    clouds.pool.stop();
}

#[test]
fn balance_refuses_what_it_cannot_do_and_changes_nothing() {
    let sandbox = Sandbox::new();
    let cloud = sandbox.path().join("clouds/cloud1");
    write_file(&cloud.join("msync/kept.txt"), 100, 1);
    let pool = Pool::install(
        sandbox,
        &format!("[cloud1]\ntype = alias\nremote = {}\n", cloud.display()),
    );
    let install = pool.install.to_str().unwrap();
    let manifest = std::fs::read(pool.install.join("msync.json")).unwrap();
    // Never imported: the branches may lack what the clouds hold.
    let err = stderr(&run_expecting(pool.msync(["balance", install]), 8));
    assert!(err.contains("msync import"), "{err}");
    pool.import();
    let manifest_imported = std::fs::read(pool.install.join("msync.json")).unwrap();
    assert_ne!(manifest, manifest_imported);
    let err = stderr(&run_expecting(
        pool.msync(["balance", install, "--evacuate", "nosuch"]),
        2,
    ));
    assert!(
        err.contains("no such branch") && err.contains("cloud1"),
        "{err}"
    );
    let err = stderr(&run_expecting(
        pool.msync(["balance", install, "--target-percent", "0"]),
        2,
    ));
    assert!(err.contains("target-percent"), "{err}");
    assert_eq!(
        std::fs::read(pool.install.join("msync.json")).unwrap(),
        manifest_imported
    );
}

/// S3 tells no size: without a quota its room is unknown and it takes no
/// new file while the other cloud has room; with one, msync counts its
/// own bytes there and stays under it.
#[test]
fn a_quota_on_s3_which_cannot_tell_its_size_is_respected() {
    let server = S3Server::start();
    // The other cloud is half full, so placement favours S3 until it
    // nears its quota.
    let disks = tempfile::Builder::new()
        .prefix("msync-clouds-")
        .tempdir()
        .unwrap();
    let disk = Tmpfs::mount(&disks.path().join("disk"), "200m");
    write_file(&disk.path.join("other.bin"), 100 * MIB, 1);
    let config = format!(
        "[disk]\ntype = alias\nremote = {}\n\n{}",
        disk.path.display(),
        server.rclone_section("s3")
    );
    let sandbox = Sandbox::new();
    let mut pool = Pool::install(sandbox, &config);
    pool.import();
    let install = pool.install.to_str().unwrap().to_owned();

    pool.start();
    write_file(&pool.mount.join("first.bin"), 1000, 1);
    pool.settle(SETTLE);
    let status = pool_status(&pool);
    let s3 = status.branches.iter().find(|b| b.name == "s3").unwrap();
    assert_eq!(s3.space.total, None, "{s3:?}");
    assert_eq!(status.pool.unwrap().unknown, ["s3"]);
    let text = stdout(&run(pool.msync(["status", &install])));
    assert!(text.contains("capacity unknown for s3"), "{text}");
    pool.stop();

    run(pool.msync(["install", &install, "--quota", "s3=20M"]));
    pool.start();
    for i in 0..12 {
        write_file(&pool.mount.join(format!("q/{i}.bin")), 5 * MIB, i as u8);
    }
    let status = pool.settle(SETTLE);
    pool.wait_in_sync(SETTLE);
    let size = run(pool.sandbox.rclone_cli(["size", "--json", "s3:msync"]));
    let size: serde_json::Value = serde_json::from_slice(&size.stdout).unwrap();
    let stored = size["bytes"].as_u64().unwrap();
    assert!(
        stored <= 20 << 20,
        "s3 stores {stored} bytes, over its quota"
    );
    assert!(stored >= 10 << 20, "s3 was hardly used: {stored} bytes");
    let files: usize = pool
        .branches
        .iter()
        .map(|(_, remote)| pool.remote_files(remote).len())
        .sum();
    assert_eq!(files, 13);
    let s3 = status.branches.iter().find(|b| b.name == "s3").unwrap();
    assert_eq!(s3.space.total, Some(20 << 20), "{s3:?}");
    assert!(s3.space.stored.is_some(), "{s3:?}");
    pool.stop();
}

/// A cloud short of room lets its trash days older than a week go, oldest
/// first, before anything moves; a recent day stays. `status` shows the
/// trash.
#[test]
fn old_trash_gives_way_before_files_move_and_recent_trash_stays() {
    let (older, old) = ("2026-01-01", "2026-01-02");
    let today = msync::sync::trash::day(std::time::SystemTime::now());
    let mut clouds = Clouds::holding(&["40m", "400m"], |i, root| {
        if i == 0 {
            // cloud1: 27 MiB of trash, 24 of it older than a week.
            let trash = root.join("msync/.msync/trash");
            write_file(&trash.join(older).join("a.bin"), 12 * MIB, 1);
            write_file(&trash.join(old).join("b.bin"), 12 * MIB, 2);
            write_file(&trash.join(&today).join("c.bin"), 3 * MIB, 3);
        } else {
            // cloud2 is fuller still, so new files go to cloud1.
            write_file(&root.join("other.bin"), 360 * MIB, 4);
        }
    });
    clouds.pool.start();
    let install = clouds.pool.install.to_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !msync::union::create_branches(&clouds.pool.mount)
        .is_some_and(|modes| modes.contains("cloud2=NC"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "cloud2 still takes new files"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = clouds.pool.status();
    assert_eq!(
        status.branches[0].space.trash,
        Some(27 << 20),
        "{status:#?}"
    );
    let text = stdout(&run(clouds.pool.msync(["status", &install])));
    assert!(text.contains("27.00 MiB in trash"), "{text}");

    // 25 MiB more than the 12 cloud1 has free, written into its branch:
    // through the mount, placement may send the last ones to cloud2 once
    // cloud1's queued bytes bring it near cloud2's fill.
    let branch = clouds.pool.branch_dir("cloud1");
    for i in 0..5 {
        write_file(&branch.join(format!("new/{i}.bin")), 5 * MIB, i as u8);
    }
    clouds.pool.settle(SETTLE);
    clouds.pool.wait_in_sync(SETTLE);
    // Nothing moved: the old trash made the room.
    let files = local_files(&clouds.pool);
    assert_eq!(files.len(), 5);
    assert!(files.iter().all(|(b, _)| b == "cloud1"), "{files:?}");
    assert_eq!(clouds.pool.remote_files("cloud1:msync").len(), 5);
    let trash = clouds.disks[0].path.join("msync/.msync/trash");
    assert!(!trash.join(older).exists(), "the oldest day was kept");
    assert!(
        trash.join(&today).join("c.bin").exists(),
        "today's trash went"
    );
    clouds.pool.stop();
}

/// Files put in a branch while the service was stopped, more than its
/// cloud holds: the start's reconcile stops on the full cloud, and what it
/// left unsent is placed file by file on the other cloud.
#[test]
fn files_that_overflow_a_cloud_while_stopped_move_at_the_next_start() {
    let mut clouds = Clouds::new(&["40m", "400m"]);
    for i in 0..12 {
        write_file(
            &clouds
                .pool
                .branch_dir("cloud1")
                .join(format!("offline/{i}.bin")),
            5 * MIB,
            i as u8,
        );
    }
    clouds.pool.start();
    clouds.pool.settle(SETTLE);
    clouds.pool.wait_in_sync(SETTLE);
    assert_eq!(clouds.files_on_clouds(), 12);
    let moved = local_files(&clouds.pool)
        .iter()
        .filter(|(b, _)| b == "cloud2")
        .count();
    assert!(moved >= 5, "only {moved} file(s) moved to cloud2");
    clouds.pool.stop();
}

/// Ctrl-C in the middle of an offline balance: exit 130, every file whole
/// in exactly one branch and that branch's cloud, and a rerun finishes.
#[test]
fn an_interrupted_balance_leaves_every_file_whole_and_a_rerun_finishes() {
    let clouds = Clouds::holding(&["200m", "200m"], |i, root| {
        if i == 0 {
            for n in 0..16 {
                write_file(&root.join(format!("msync/big/{n}.bin")), 10 * MIB, n as u8);
            }
        }
    });
    let install = clouds.pool.install.to_str().unwrap().to_owned();
    let mut balance = clouds.pool.msync(["balance", &install]);
    balance.stdout(std::process::Stdio::piped());
    balance.stderr(std::process::Stdio::piped());
    let child = balance.spawn().unwrap();
    // Interrupt once the first file has reached cloud2's branch.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !local_files(&clouds.pool).iter().any(|(b, _)| b == "cloud2") {
        assert!(std::time::Instant::now() < deadline, "nothing moved");
        std::thread::sleep(Duration::from_millis(20));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let output = child.wait_with_output().unwrap();
    let files = local_files(&clouds.pool);
    if output.status.code() == Some(130) {
        assert!(
            String::from_utf8_lossy(&output.stderr).contains("run it again"),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    } else {
        // The balance finished before the signal was handled.
        assert_eq!(output.status.code(), Some(0), "{output:?}");
    }
    assert_eq!(files.len(), 16);
    clouds.pool.wait_in_sync(SETTLE);
    assert_eq!(clouds.files_on_clouds(), 16);

    run(clouds.pool.msync(["balance", &install]));
    let after = fills(&clouds);
    assert!((after[0] - after[1]).abs() <= 0.15, "{after:?}");
    clouds.pool.wait_in_sync(SETTLE);
    assert_eq!(clouds.files_on_clouds(), 16);
}
