//! Guards that stay true: a remote added after the import is imported
//! before it is synced (also in an install an older msync made), a branch
//! marker deleted through the pool is put back, `.msync/` at the root of
//! the pool never reaches a remote's reserved area, and nonsense options
//! are usage errors that change nothing. Checked with Debian's rclone CLI.

use std::time::Duration;

use crate::pool::{Pool, write_file};
use crate::util::{run, run_expecting, stderr, stdout};

const SETTLE: Duration = Duration::from_secs(120);
const USAGE: i32 = 2;
const REFUSED: i32 = 8;

/// Rewrites the install's manifest as msync 0.1 (format 1) wrote it.
fn downgrade_manifest(pool: &Pool) {
    let path = pool.install.join("msync.json");
    let mut manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let imported = manifest["branches"]
        .as_array()
        .unwrap()
        .iter()
        .all(|b| b["imported"] == true);
    for branch in manifest["branches"].as_array_mut().unwrap() {
        let branch = branch.as_object_mut().unwrap();
        branch.remove("imported");
        branch.remove("identity");
        branch.remove("quota");
        branch.remove("retired");
    }
    manifest["format"] = 1.into();
    manifest["imported"] = imported.into();
    std::fs::write(&path, manifest.to_string()).unwrap();
}

#[test]
fn a_remote_added_after_the_import_must_be_imported_before_it_syncs() {
    let mut pool = Pool::local_clouds(1);
    pool.import();
    // The install as an older msync left it: one flag for all branches.
    downgrade_manifest(&pool);

    // A second account, already holding data, joins the config.
    let cloud2 = pool.sandbox.path().join("clouds/cloud2");
    write_file(&cloud2.join("msync/holiday/photo.jpg"), 4000, 1);
    let mut config = std::fs::read_to_string(pool.sandbox.config()).unwrap();
    config.push_str(&format!(
        "\n[cloud2]\ntype = alias\nremote = {}\n",
        cloud2.display()
    ));
    pool.sandbox.write_config(&config);
    let output = run(pool.msync(["install", pool.install.to_str().unwrap()]));
    assert!(stdout(&output).contains("added"), "{}", stdout(&output));

    // Migrated in place to the current format: the old branch imported,
    // the new not, neither with a quota.
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(pool.install.join("msync.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["format"], 4, "{manifest:#}");
    assert_eq!(manifest["notify_command"], serde_json::Value::Null);
    assert_eq!(manifest["branches"][0]["quota"], serde_json::Value::Null);
    assert_eq!(manifest["branches"][0]["imported"], true, "{manifest:#}");
    assert_eq!(manifest["branches"][1]["imported"], false, "{manifest:#}");

    let err = stderr(&run_expecting(
        pool.msync([
            "start",
            pool.install.to_str().unwrap(),
            pool.mount.to_str().unwrap(),
        ]),
        REFUSED,
    ));
    assert!(
        err.contains("cloud2") && err.contains("msync import"),
        "{err}"
    );
    assert_eq!(
        pool.remote_files("cloud2:msync"),
        [("holiday/photo.jpg".to_owned(), 4000)]
    );

    pool.import();
    pool.start();
    pool.settle(SETTLE);
    assert!(pool.mount.join("holiday/photo.jpg").is_file());
    pool.assert_in_sync();
    pool.stop();
}

#[test]
fn a_marker_deleted_through_the_pool_is_put_back() {
    let mut pool = Pool::local_clouds(2);
    pool.import();
    pool.start();
    let marker = pool.mount.join(".msync-branch");
    assert!(marker.is_file());
    // mergerfs unlinks it from every branch.
    std::fs::remove_file(&marker).unwrap();
    for i in 0..6 {
        write_file(&pool.mount.join(format!("after/{i}.txt")), 100 + i, i as u8);
    }
    pool.settle(SETTLE);
    pool.assert_in_sync();
    for (name, _) in &pool.branches {
        assert!(
            pool.branch_dir(name).join(".msync-branch").is_file(),
            "{name}: marker not put back"
        );
    }
    assert!(pool.log().contains("put it back"), "{}", pool.log());
    pool.stop();
}

#[test]
fn msyncs_reserved_directory_at_the_pool_root_stays_local() {
    let mut pool = Pool::local_clouds(1);
    pool.import();
    pool.start();
    let remote = pool.branches[0].1.clone();
    pool.settle(SETTLE);
    let lease = format!("{remote}/.msync/lock");
    let before = stdout(&run(pool.sandbox.rclone_cli(["cat", &lease])));
    write_file(&pool.mount.join(".msync/lock"), 10, 1);
    write_file(
        &pool.mount.join(".msync/trash/2000-01-01/planted.txt"),
        10,
        2,
    );
    write_file(&pool.mount.join("ordinary.txt"), 10, 3);
    pool.settle(SETTLE);
    let reserved = pool.sandbox.remote_files(&format!("{remote}/.msync"));
    assert!(
        !reserved.iter().any(|(p, _)| p.contains("planted")),
        "{reserved:?}"
    );
    let after = stdout(&run(pool.sandbox.rclone_cli(["cat", &lease])));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&after).unwrap()["install_id"],
        serde_json::from_str::<serde_json::Value>(&before).unwrap()["install_id"],
        "the lease was overwritten from the pool"
    );
    assert!(
        pool.remote_files(&remote)
            .contains(&("ordinary.txt".to_owned(), 10))
    );
    pool.stop();
}

#[test]
fn nonsense_durations_rates_and_counts_are_usage_errors() {
    let pool = Pool::local_clouds(1);
    pool.import();
    let (install, mount) = (
        pool.install.to_str().unwrap().to_owned(),
        pool.mount.to_str().unwrap().to_owned(),
    );
    for (option, value, says) in [
        ("--reconcile-every", "0s", "out of range"),
        ("--reconcile-every", "soon", "invalid value"),
        ("--debounce", "2h", "out of range"),
        ("--bwlimit", "08:00,512k 19:00,off", "timetable"),
        ("--bwlimit", "fast", "not a rate"),
        ("--transfers", "0", "invalid value"),
    ] {
        let err = stderr(&run_expecting(
            pool.msync(["start", &install, &mount, option, value]),
            USAGE,
        ));
        assert!(err.contains(says), "{option} {value}: {err}");
        assert!(
            !pool.mount.exists(),
            "{option} {value} created the mount point"
        );
    }
    run(pool.msync(["start", &install, &mount, "--bwlimit", "10M:off"]));
    run(pool.msync(["stop", &install, &mount]));
}
