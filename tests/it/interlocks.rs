//! The interlocks that replace the original tool's warnings: import before
//! start, one writer per remote, the mass-delete guard, vanished branches,
//! and trash instead of loss. Checked with Debian's rclone CLI.

use std::time::{Duration, Instant};

use msync::sync::BranchState;

use crate::pool::{Pool, write_file};
use crate::util::{run, run_expecting, stderr};

const SETTLE: Duration = Duration::from_secs(120);
const REFUSED: i32 = 8;

fn cloud_dir(pool: &Pool, cloud: &str) -> std::path::PathBuf {
    pool.sandbox.path().join("clouds").join(cloud).join("msync")
}

#[test]
fn start_refuses_an_install_that_was_never_imported() {
    let mut pool = Pool::local_clouds(1);
    let cloud = cloud_dir(&pool, "cloud1");
    write_file(&cloud.join("precious/photo.jpg"), 5000, 1);
    let before = pool.remote_files("cloud1:msync");
    let (install, mount) = (
        pool.install.to_str().unwrap().to_owned(),
        pool.mount.to_str().unwrap().to_owned(),
    );
    let err = stderr(&run_expecting(
        pool.msync(["start", &install, &mount]),
        REFUSED,
    ));
    assert!(
        err.contains("msync import") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(
        pool.remote_files("cloud1:msync"),
        before,
        "a refused start touched the remote"
    );
    assert!(!pool.mount.exists(), "a refused start left a mount point");

    pool.import();
    pool.start();
    pool.settle(SETTLE);
    assert_eq!(pool.remote_files("cloud1:msync"), before);
    assert!(pool.mount.join("precious/photo.jpg").is_file());
}

#[test]
fn force_makes_the_cloud_match_and_keeps_the_extra_files_in_the_trash() {
    let mut pool = Pool::local_clouds(1);
    write_file(&cloud_dir(&pool, "cloud1").join("stray.txt"), 10, 1);
    run(pool.msync([
        "start",
        pool.install.to_str().unwrap(),
        pool.mount.to_str().unwrap(),
        "--force",
        "--debounce",
        "200ms",
    ]));
    pool.settle(SETTLE);
    pool.assert_in_sync();
    let trash = pool.sandbox.remote_files("cloud1:msync/.msync/trash");
    assert_eq!(trash.len(), 1, "{trash:?}");
    assert!(
        unversioned(&trash[0].0).ends_with("/stray.txt"),
        "{trash:?}"
    );
    pool.stop();
}

#[test]
fn a_second_installation_finds_the_lease() {
    let mut first = Pool::local_clouds(1);
    first.import();
    first.start();
    // A second install dir on the same remotes.
    let second = first.sandbox.path().join("install-b");
    let mount_b = first.sandbox.path().join("mnt-b");
    run(first.msync(["install", second.to_str().unwrap()]));
    run(first.msync(["import", second.to_str().unwrap()]));
    let err = stderr(&run_expecting(
        first.msync(["start", second.to_str().unwrap(), mount_b.to_str().unwrap()]),
        REFUSED,
    ));
    assert!(
        err.contains(first.install.to_str().unwrap()) && err.contains("in use"),
        "{err}"
    );
    assert!(!mount_b.exists());
    first.stop();
    // Released by stop: now the second one may run.
    run(first.msync(["start", second.to_str().unwrap(), mount_b.to_str().unwrap()]));
    run(first.msync(["stop", second.to_str().unwrap(), mount_b.to_str().unwrap()]));
}

/// A lease of another installation, as its host would write it.
fn foreign_lease(heartbeat: u64, sequence: u64) -> String {
    serde_json::json!({
        "host": "elsewhere", "install_id": "someone-else", "install_dir": "/srv/other",
        "pid": 1, "heartbeat": heartbeat, "sequence": sequence
    })
    .to_string()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn a_stale_lease_is_taken_over_and_force_takes_a_live_one() {
    let mut pool = Pool::local_clouds(1);
    pool.import();
    let lock = cloud_dir(&pool, "cloud1").join(".msync/lock");
    std::fs::create_dir_all(lock.parent().unwrap()).unwrap();
    let now = unix_now();
    // Abandoned an hour ago (by its own clock): the start goes on, the
    // branch waits until this host has seen the lease unchanged for the
    // expiry, then takes it over.
    std::fs::write(&lock, foreign_lease(now - 3600, 7)).unwrap();
    pool.start_with(&["--lease-expiry", "3s"]);
    wait_for_log(&pool, "took over a stale lease of /srv/other");
    write_file(&pool.mount.join("after takeover.txt"), 10, 1);
    pool.settle(SETTLE);
    pool.assert_in_sync();
    pool.stop();
    assert!(!lock.exists(), "stop releases the lease");

    std::fs::write(&lock, foreign_lease(now, 1)).unwrap();
    let (install, mount) = (
        pool.install.to_str().unwrap().to_owned(),
        pool.mount.to_str().unwrap().to_owned(),
    );
    let err = stderr(&run_expecting(
        pool.msync(["start", &install, &mount]),
        REFUSED,
    ));
    assert!(
        err.contains("/srv/other") && err.contains("elsewhere"),
        "{err}"
    );
    run(pool.msync(["start", &install, &mount, "--force"]));
    assert!(pool.log().contains("by force"), "{}", pool.log());
    run(pool.msync(["stop", &install, &mount]));
}

#[test]
fn a_live_lease_with_a_clock_an_hour_behind_is_never_taken() {
    let mut pool = Pool::local_clouds(1);
    pool.import();
    let lock = cloud_dir(&pool, "cloud1").join(".msync/lock");
    std::fs::create_dir_all(lock.parent().unwrap()).unwrap();
    // The other host's clock is an hour behind, but it renews its lease.
    let behind = unix_now() - 3600;
    std::fs::write(&lock, foreign_lease(behind, 0)).unwrap();
    pool.start_with(&["--lease-expiry", "3s"]);
    let renewer_until = Instant::now() + Duration::from_secs(12);
    let mut sequence = 0;
    while Instant::now() < renewer_until {
        sequence += 1;
        std::fs::write(&lock, foreign_lease(behind + sequence, sequence)).unwrap();
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        !pool.log().contains("took over"),
        "a renewed lease was taken over\n{}",
        pool.log()
    );
    let held = pool.status().branches[0].clone();
    assert_eq!(held.state, BranchState::Error, "{held:#?}");
    // Its holder stops renewing: after the expiry it is taken over.
    wait_for_log(&pool, "took over a stale lease of /srv/other");
    pool.stop();
}

/// Waits until the service's log says `what`.
fn wait_for_log(pool: &Pool, what: &str) {
    let deadline = Instant::now() + SETTLE;
    while !pool.log().contains(what) {
        assert!(
            Instant::now() < deadline,
            "no {what:?} in the log\n{}",
            pool.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_reconcile_that_would_delete_most_files_does_not_run() {
    let mut pool = Pool::local_clouds(1);
    pool.import();
    pool.start();
    for i in 0..150 {
        write_file(&pool.mount.join(format!("f{i}.txt")), 100, i as u8);
    }
    pool.settle(SETTLE);
    pool.stop();
    // While stopped, most of the branch disappears (not a user's delete
    // through the mount: no event will ever say so).
    for i in 0..120 {
        std::fs::remove_file(pool.branch_dir("cloud1").join(format!("f{i}.txt"))).unwrap();
    }
    pool.start();
    let branch = pool.wait_for_branch(0, |b| b.state == BranchState::Error, SETTLE);
    let error = branch.last_error.unwrap();
    assert!(
        error.contains("would delete 120 of the remote's 150 files"),
        "{error}"
    );
    assert!(pool.log().contains("would delete 120"), "{}", pool.log());
    // While refused, the branch's changes are held, not sent piecemeal,
    // and status keeps saying so.
    write_file(&pool.mount.join("while refused.txt"), 77, 1);
    pool.wait_for_branch(
        0,
        |b| b.state == BranchState::Error && b.queued >= 1,
        SETTLE,
    );
    run_expecting(pool.msync(["status", pool.install.to_str().unwrap()]), 6);
    assert_eq!(
        pool.remote_files("cloud1:msync").len(),
        150,
        "the remote changed while the branch was refused"
    );
    pool.stop();

    // Said on purpose: the guard is lifted, and the files go to the trash.
    run(pool.msync([
        "start",
        pool.install.to_str().unwrap(),
        pool.mount.to_str().unwrap(),
        "--mass-delete-percent",
        "100",
    ]));
    pool.settle(SETTLE);
    pool.assert_in_sync();
    assert!(
        pool.remote_files("cloud1:msync")
            .contains(&("while refused.txt".to_owned(), 77))
    );
    assert_eq!(
        pool.sandbox.remote_files("cloud1:msync/.msync/trash").len(),
        120
    );
    run(pool.msync([
        "stop",
        pool.install.to_str().unwrap(),
        pool.mount.to_str().unwrap(),
    ]));
}

#[test]
fn a_branch_without_its_marker_is_never_synced() {
    let mut pool = Pool::local_clouds(1);
    pool.import();
    pool.start();
    write_file(&pool.mount.join("keep.txt"), 10, 1);
    pool.settle(SETTLE);
    pool.stop();
    // The branch's disk is "not mounted": an empty directory in its place.
    let branch = pool.branch_dir("cloud1");
    let away = pool.sandbox.path().join("branch-away");
    std::fs::rename(&branch, &away).unwrap();
    std::fs::create_dir(&branch).unwrap();
    pool.start();
    let branch_status = pool.wait_for_branch(0, |b| b.state == BranchState::Error, SETTLE);
    assert!(
        branch_status
            .last_error
            .as_deref()
            .unwrap()
            .contains("no msync marker"),
        "{branch_status:?}"
    );
    assert_eq!(
        pool.remote_files("cloud1:msync"),
        [("keep.txt".to_owned(), 10)]
    );
    pool.stop();
    std::fs::remove_dir(&branch).unwrap();
    std::fs::rename(&away, &branch).unwrap();
    pool.start();
    pool.settle(SETTLE);
    pool.stop();
}

#[test]
fn a_remote_that_lists_as_empty_is_not_written() {
    let mut pool = Pool::local_clouds(1);
    pool.import();
    pool.start();
    write_file(&pool.mount.join("a.txt"), 10, 1);
    pool.settle(SETTLE);
    pool.stop();
    // The remote directory vanished (wrong account, another path…).
    std::fs::remove_dir_all(cloud_dir(&pool, "cloud1")).unwrap();
    pool.start();
    let branch = pool.wait_for_branch(0, |b| b.state == BranchState::Error, SETTLE);
    assert!(branch.last_error.unwrap().contains("lists as empty"));
    assert!(
        pool.remote_files("cloud1:msync").is_empty(),
        "msync wrote to the empty remote"
    );
    pool.stop();
}

#[test]
fn deleted_and_overwritten_files_go_to_the_trash_and_old_days_expire() {
    let mut pool = Pool::local_clouds(1);
    pool.import();
    let old_day = cloud_dir(&pool, "cloud1").join(".msync/trash/2020-01-01");
    write_file(&old_day.join("ancient.txt"), 5, 1);
    pool.start();
    write_file(&pool.mount.join("doc.txt"), 100, 1);
    write_file(&pool.mount.join("dir/gone.txt"), 200, 2);
    pool.settle(SETTLE);
    assert!(!old_day.exists(), "the old trash day was not expired");
    write_file(&pool.mount.join("doc.txt"), 300, 3);
    std::fs::remove_dir_all(pool.mount.join("dir")).unwrap();
    pool.settle(SETTLE);
    pool.assert_in_sync();
    let trash = pool.sandbox.remote_files("cloud1:msync/.msync/trash");
    // Each trashed name carries its version: <name>~HHMMSS.mmm<.ext>.
    let names: Vec<String> = trash.iter().map(|(p, _)| unversioned(&p[11..])).collect();
    assert!(
        names.contains(&"doc.txt".to_owned()) && names.contains(&"dir/gone.txt".to_owned()),
        "{trash:?}"
    );
    let old_doc = trash
        .iter()
        .find(|(p, _)| unversioned(p).ends_with("/doc.txt"))
        .unwrap();
    assert_eq!(old_doc.1, 100, "the trash holds the old version");
    pool.stop();

    // Restoring is plain rclone, as the README shows: one version back
    // under its name.
    let gone = trash
        .iter()
        .find(|(p, _)| unversioned(p).ends_with("/dir/gone.txt"))
        .unwrap();
    run(pool.sandbox.rclone_cli([
        "copyto",
        &format!("cloud1:msync/.msync/trash/{}", gone.0),
        &pool
            .sandbox
            .path()
            .join("restored/gone.txt")
            .to_string_lossy(),
    ]));
    assert_eq!(
        std::fs::read(pool.sandbox.path().join("restored/gone.txt"))
            .unwrap()
            .len(),
        200
    );
}

/// A trash path without its version stamps (`~HHMMSS.mmm`).
fn unversioned(path: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(at) = rest.find('~') {
        out.push_str(&rest[..at]);
        let stamp = &rest[at + 1..];
        let is_stamp = stamp.len() >= 10
            && stamp[..6].bytes().all(|b| b.is_ascii_digit())
            && stamp.as_bytes()[6] == b'.'
            && stamp[7..10].bytes().all(|b| b.is_ascii_digit());
        if is_stamp {
            rest = &stamp[10..];
        } else {
            out.push('~');
            rest = stamp;
        }
    }
    out.push_str(rest);
    out
}
