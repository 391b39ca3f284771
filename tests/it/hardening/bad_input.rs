//! Bad input: each refusal exits with its documented code, says in stderr
//! what failed and what to do, and changes nothing: not the install dir,
//! the rclone config, the clouds or the mount point (see [`Snapshot`]).
//!
//! tests/it/service.rs already checks the code and message of a missing
//! install dir for `start`, of `--union aufs`, of a mount point that is a
//! file or not empty, of `start` twice and of `stop`/`status` without a
//! service; tests/it/cli.rs those of `check` as non-root and with a bad
//! config. Those cases run again here only for the "nothing changed" part;
//! the rest are new.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::snapshot::Snapshot;
use crate::pool::{Pool, write_file};
use crate::util::{Tmpfs, mounts_at, msync_bin, require_tool, run, run_expecting, stderr};

const USAGE: i32 = 2;
const REQUIREMENT_MISSING: i32 = 3;
const NOT_INSTALLED: i32 = 4;
const MOUNT_ERROR: i32 = 5;
const RUNNING_STATE: i32 = 7;

/// Runs `command`, which msync must refuse: exit `code`, every piece of
/// `gist` in stderr, and nothing in `snapshot` changed. Returns stderr.
pub fn refused(command: Command, code: i32, gist: &[&str], snapshot: &Snapshot) -> String {
    let what = format!("{command:?}");
    let err = stderr(&run_expecting(command, code));
    for piece in gist {
        assert!(
            err.contains(piece),
            "{what}: stderr lacks {piece:?}:\n{err}"
        );
    }
    snapshot.assert_unchanged(&what);
    err
}

/// `msync <args>` in the pool's sandbox.
fn msync(pool: &Pool, args: &[&str]) -> Command {
    pool.msync(args)
}

fn text(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 test path")
}

#[test]
fn every_command_that_changes_things_refuses_a_non_root_user() {
    require_tool("setpriv", "util-linux");
    let pool = Pool::local_clouds(2);
    // As for /srv/msync: others may reach the install dir, which is 0700.
    chmod(pool.sandbox.path(), 0o755);
    let (install, mount) = (text(&pool.install), text(&pool.mount));
    let fresh = pool.sandbox.path().join("fresh");
    let snapshot = Snapshot::of_pool(&pool);
    for (command, args) in [
        ("install", vec!["install", text(&fresh)]),
        ("install", vec!["install", install]),
        ("import", vec!["import", install]),
        ("start", vec!["start", install, mount]),
        ("stop", vec!["stop", install, mount]),
    ] {
        refused(
            as_nobody(&pool, &args),
            REQUIREMENT_MISSING,
            &[&format!("msync {command} must run as root"), "sudo"],
            &snapshot,
        );
    }
}

#[test]
fn status_refuses_a_non_root_user() {
    require_tool("setpriv", "util-linux");
    let pool = Pool::local_clouds(1);
    chmod(pool.sandbox.path(), 0o755);
    let snapshot = Snapshot::of_pool(&pool);
    refused(
        as_nobody(&pool, &["status", text(&pool.install)]),
        REQUIREMENT_MISSING,
        &["must run as root", "sudo"],
        &snapshot,
    );
}

#[test]
fn a_missing_foreign_or_broken_install_dir_is_refused() {
    let pool = Pool::local_clouds(1);
    let mount = text(&pool.mount);
    let missing = pool.sandbox.path().join("nowhere");
    let foreign = pool.sandbox.make_file("foreign/precious.txt", 10);
    let foreign = foreign.parent().unwrap();

    let snapshot = Snapshot::of_pool(&pool);
    for dir in [&missing, foreign] {
        let dir = text(dir);
        for args in [
            vec!["import", dir],
            vec!["start", dir, mount],
            vec!["stop", dir, mount],
            vec!["status", dir],
        ] {
            refused(
                msync(&pool, &args),
                NOT_INSTALLED,
                &["is not an msync install dir", "msync install"],
                &snapshot,
            );
        }
    }
    refused(
        msync(&pool, &["install", text(foreign)]),
        NOT_INSTALLED,
        &["is not empty", "choose an empty or new directory"],
        &snapshot,
    );

    let manifest = pool.install.join("msync.json");
    let good = std::fs::read_to_string(&manifest).unwrap();
    let mut value: serde_json::Value = serde_json::from_str(&good).unwrap();
    assert!(value["format"].is_u64(), "the manifest has no format field");
    value["format"] = 99.into();
    let wrong_format = value.to_string();
    for (broken, reason) in [
        (Broken::Text("{"), "EOF while parsing"),
        (
            Broken::Text(&wrong_format),
            "format 99 is not a format this msync reads",
        ),
        (Broken::Directory, "not a regular file"),
    ] {
        broken.put(&manifest);
        let snapshot = Snapshot::of_pool(&pool);
        let install = text(&pool.install);
        for args in [
            vec!["install", install],
            vec!["import", install],
            vec!["start", install, mount],
            vec!["stop", install, mount],
            vec!["status", install],
        ] {
            refused(
                msync(&pool, &args),
                NOT_INSTALLED,
                &["msync.json is broken", reason, "restore it from a backup"],
                &snapshot,
            );
        }
        Broken::Text(&good).put(&manifest);
    }
}

enum Broken<'a> {
    Text(&'a str),
    Directory,
}

impl Broken<'_> {
    fn put(&self, manifest: &Path) {
        if manifest.is_dir() {
            std::fs::remove_dir_all(manifest).unwrap();
        }
        match self {
            Broken::Text(text) => std::fs::write(manifest, text).unwrap(),
            Broken::Directory => {
                std::fs::remove_file(manifest).unwrap();
                std::fs::create_dir(manifest).unwrap();
            }
        }
    }
}

#[test]
fn a_remote_removed_from_the_config_is_named() {
    let pool = Pool::local_clouds(2);
    let config = std::fs::read_to_string(pool.sandbox.config()).unwrap();
    let without_cloud2 = config.split("[cloud2]").next().unwrap().to_owned();
    pool.sandbox.write_config(&without_cloud2);
    let (install, mount) = (text(&pool.install), text(&pool.mount));
    let snapshot = Snapshot::of_pool(&pool);
    for args in [vec!["import", install], vec!["start", install, mount]] {
        refused(
            msync(&pool, &args),
            REQUIREMENT_MISSING,
            &[
                "remote(s) cloud2",
                "not defined in the rclone config",
                "`rclone config`",
            ],
            &snapshot,
        );
    }
}

/// Garbage text, and a directory where the file should be (a file of mode
/// 000 would not do: root reads it anyway).
fn invalid_configs(pool: &Pool) -> [PathBuf; 2] {
    let garbage = pool.sandbox.path().join("garbage.conf");
    std::fs::write(&garbage, "garbage \u{1} not [ini\n= = =\n").unwrap();
    let directory = pool.sandbox.path().join("directory.conf");
    std::fs::create_dir(&directory).unwrap();
    [garbage, directory]
}

#[test]
fn an_invalid_rclone_config_is_refused() {
    let pool = Pool::local_clouds(1);
    let configs = invalid_configs(&pool);
    let fresh = pool.sandbox.path().join("fresh");
    let (install, mount) = (text(&pool.install), text(&pool.mount));
    let snapshot = Snapshot::of_pool(&pool);
    for config in &configs {
        for args in [
            vec!["install", text(&fresh)],
            vec!["install", install],
            vec!["import", install],
            vec!["start", install, mount],
        ] {
            let mut command = msync(&pool, &["--config", text(config)]);
            command.args(args);
            refused(
                command,
                REQUIREMENT_MISSING,
                &[text(config), "rclone config"],
                &snapshot,
            );
        }
    }
}

#[test]
fn bad_union_drivers_are_refused() {
    let pool = Pool::local_clouds(2);
    let (install, mount) = (text(&pool.install), text(&pool.mount));
    let snapshot = Snapshot::of_pool(&pool);
    refused(
        msync(&pool, &["start", install, mount, "--union", "overlay"]),
        USAGE,
        &["invalid value 'overlay'", "possible values: aufs, mergerfs"],
        &snapshot,
    );
    refused(
        msync(&pool, &["start", install, mount, "--union", "aufs"]),
        REQUIREMENT_MISSING,
        &["aufs is not in this kernel", "--union mergerfs"],
        &snapshot,
    );
}

/// A mount point that is a file, not empty, or already mounted (a tmpfs):
/// refused before any remote or local state is touched.
#[test]
fn a_refused_mount_point_changes_nothing() {
    check_bad_mount_points(Snapshot::of_pool);
}

fn check_bad_mount_points(snapshot_of: impl Fn(&Pool) -> Snapshot) {
    let pool = Pool::local_clouds(2);
    let install = text(&pool.install);
    let file = pool.sandbox.make_file("a-file", 3);
    let full = pool.sandbox.make_file("full/x", 3);
    let full = full.parent().unwrap();
    let taken = Tmpfs::mount(&pool.sandbox.path().join("taken"), "1m");
    write_file(&taken.path.join("on the tmpfs.txt"), 100, 1);
    let mount_points = Snapshot::take(&[&file, full, &taken.path, &pool.mount], &[]);
    let snapshot = snapshot_of(&pool);
    for (mount_point, gist) in [
        (file.as_path(), ["is not a directory", "choose a directory"]),
        (full, ["is not empty", "choose an empty directory"]),
        (
            taken.path.as_path(),
            [
                "is already a mount point",
                "unmount it or choose another directory",
            ],
        ),
    ] {
        refused(
            msync(&pool, &["start", install, text(mount_point)]),
            MOUNT_ERROR,
            &gist,
            &snapshot,
        );
        mount_points.assert_unchanged(&format!("start at {}", mount_point.display()));
        assert!(!msync::union::is_mounted(&pool.mount));
    }
    assert_eq!(
        mounts_at(&taken.path),
        1,
        "something was mounted over the tmpfs"
    );
}

#[test]
fn running_state_errors_change_nothing() {
    let mut pool = Pool::local_clouds(2);
    pool.import();
    let install = text(&pool.install).to_owned();
    let mount = text(&pool.mount).to_owned();
    let snapshot = Snapshot::of_pool(&pool);
    refused(
        msync(&pool, &["status", &install]),
        RUNNING_STATE,
        &["msync is not running for"],
        &snapshot,
    );
    refused(
        msync(&pool, &["stop", &install, &mount]),
        RUNNING_STATE,
        &["no msync service is running for"],
        &snapshot,
    );

    pool.start();
    write_file(&pool.mount.join("kept.txt"), 1000, 1);
    pool.settle(std::time::Duration::from_secs(60));
    let pid = pool.status().pid.to_string();
    let snapshot = Snapshot::of_pool(&pool);
    refused(
        msync(&pool, &["start", &install, &mount]),
        RUNNING_STATE,
        &["msync is already running for", &pid],
        &snapshot,
    );
    let elsewhere = pool.sandbox.path().join("elsewhere");
    refused(
        msync(&pool, &["stop", &install, text(&elsewhere)]),
        USAGE,
        &["this service's mount point is", text(&elsewhere)],
        &snapshot,
    );
    refused(
        msync(&pool, &["import", &install]),
        RUNNING_STATE,
        &[
            "the msync service runs for this install",
            "stop it before importing",
        ],
        &snapshot,
    );
    assert!(msync::union::is_mounted(&pool.mount));
    pool.stop();
}

#[test]
fn a_missing_librclone_or_one_without_the_abi_is_refused() {
    let pool = Pool::local_clouds(1);
    let not_librclone = env!("MSYNC_FIXTURE_NOT_LIBRCLONE");
    let missing = pool.sandbox.path().join("nowhere/librclone.so");
    let fresh = pool.sandbox.path().join("fresh");
    let (install, mount) = (text(&pool.install), text(&pool.mount));
    let snapshot = Snapshot::of_pool(&pool);
    for (library, why) in [
        (not_librclone, "lacks the librclone ABI"),
        (text(&missing), "no such file"),
    ] {
        for args in [
            vec!["install", text(&fresh)],
            vec!["install", install],
            vec!["import", install],
        ] {
            let mut command = msync(&pool, &["--librclone", library]);
            command.args(args);
            refused(
                command,
                REQUIREMENT_MISSING,
                &[why, "--librclone", library],
                &snapshot,
            );
        }
        // start's whole message is checked in
        // start_names_the_library_it_tried_and_the_remedy.
        refused(
            msync(&pool, &["--librclone", library, "start", install, mount]),
            REQUIREMENT_MISSING,
            &["librclone could not be loaded"],
            &snapshot,
        );
    }
}

#[test]
fn start_names_the_library_it_tried_and_the_remedy() {
    let pool = Pool::local_clouds(1);
    let not_librclone = env!("MSYNC_FIXTURE_NOT_LIBRCLONE");
    let snapshot = Snapshot::of_pool(&pool);
    refused(
        msync(
            &pool,
            &[
                "--librclone",
                not_librclone,
                "start",
                text(&pool.install),
                text(&pool.mount),
            ],
        ),
        REQUIREMENT_MISSING,
        &[not_librclone, "lacks the librclone ABI", "--librclone PATH"],
        &snapshot,
    );
}

/// `msync <args>` as user nobody.
fn as_nobody(pool: &Pool, args: &[&str]) -> Command {
    let mut command = pool.sandbox.command(
        "setpriv",
        ["--reuid=65534", "--regid=65534", "--clear-groups"],
    );
    command.arg(msync_bin()).args(args);
    command
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn the_snapshot_sees_a_change() {
    let pool = Pool::local_clouds(1);
    let snapshot = Snapshot::of_pool(&pool);
    run(pool.msync(["install", text(&pool.install)]));
    let caught = std::panic::catch_unwind(|| snapshot.assert_unchanged("install"));
    let message = *caught
        .expect_err("re-saving the manifest went unnoticed")
        .downcast::<String>()
        .unwrap();
    assert!(message.contains("msync.json"), "{message}");
}
