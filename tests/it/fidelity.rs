//! A restore gives back files as they were. Symlinks: stored as rclone
//! stores them (`NAME.rclonelink` holding the target, never followed), and
//! given back as symlinks by `import` and by plain `rclone copy -l`.

use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;
use std::time::Duration;

use nix::fcntl::AT_FDCWD;
use nix::sys::stat::{UtimensatFlags, utimensat};
use nix::sys::time::TimeSpec;
use serde_json::json;

use crate::pool::{Pool, write_file};
use crate::s3::S3Server;
use crate::sshd::SftpServer;
use crate::util::{Sandbox, run, run_expecting, stderr, stdout};

const SETTLE: Duration = Duration::from_secs(120);

fn link_target(path: &Path) -> String {
    std::fs::read_link(path)
        .unwrap_or_else(|err| panic!("{} is not a symlink: {err}", path.display()))
        .to_string_lossy()
        .into_owned()
}

#[test]
fn symlinks_are_stored_as_links_and_come_back_as_links() {
    let mut pool = Pool::local_clouds(1);
    pool.import();
    pool.start();
    let remote = pool.branches[0].1.clone();
    let mnt = pool.mount.clone();
    write_file(&mnt.join("docs/a.txt"), 100, 1);
    let links = [
        ("docs/relative", "a.txt"),
        ("docs/dangling", "../nowhere/at all"),
        ("absolute", "/etc/hostname"),
        ("to a dir", "docs"),
        ("renamed before", "docs/a.txt"),
        ("deleted later", "docs/a.txt"),
    ];
    for (link, target) in links {
        symlink(target, mnt.join(link)).unwrap();
    }
    pool.settle(SETTLE);
    // Each is one small file holding its target, by the rclone CLI; what
    // a link points at is never read.
    for (link, target) in links {
        let stored = run(pool
            .sandbox
            .rclone_cli(["cat", &format!("{remote}/{link}.rclonelink")]));
        assert_eq!(String::from_utf8_lossy(&stored.stdout), target, "{link}");
    }
    let names = pool.remote_names(&remote);
    assert!(
        !names.iter().any(|n| n.starts_with("to a dir/")),
        "{names:?}"
    );
    assert!(!names.contains(&"absolute".to_owned()), "{names:?}");

    // A link renamed and a link deleted follow on the cloud.
    std::fs::rename(mnt.join("renamed before"), mnt.join("renamed after")).unwrap();
    std::fs::remove_file(mnt.join("deleted later")).unwrap();
    pool.settle(SETTLE);
    pool.assert_in_sync();
    let names = pool.remote_names(&remote);
    assert!(
        names.contains(&"renamed after.rclonelink".to_owned()),
        "{names:?}"
    );
    for gone in ["renamed before.rclonelink", "deleted later.rclonelink"] {
        assert!(!names.contains(&gone.to_owned()), "{gone}: {names:?}");
    }
    pool.stop();

    // Plain rclone gives them back as links: `rclone copy -l` from a real
    // cloud. These clouds are local directories, which `-l` would read as
    // links too, so the option goes to the destination alone.
    let copy = pool.sandbox.path().join("rclone-copy");
    let destination = format!(":local,links:{}", copy.display());
    run(pool
        .sandbox
        .rclone_cli(["copy", &remote, &destination, "--exclude", "/.msync/**"]));
    // And so does a fresh install's import.
    let second = pool.sandbox.path().join("install2");
    run(pool.msync(["install", second.to_str().unwrap()]));
    run(pool.msync(["import", second.to_str().unwrap()]));
    let imported = second.join("branches").join(&pool.branches[0].0);
    for root in [&copy, &imported] {
        for (link, target) in links
            .iter()
            .filter(|(l, _)| !l.ends_with("later") && !l.ends_with("before"))
        {
            assert_eq!(link_target(&root.join(link)), *target, "{}", root.display());
        }
        assert_eq!(link_target(&root.join("renamed after")), "docs/a.txt");
        assert!(!root.join("deleted later").exists());
        assert!(std::fs::symlink_metadata(root.join("deleted later")).is_err());
    }
}

/// What a restore must give back of one path, read with std (lstat).
#[derive(Debug, PartialEq)]
struct Shape {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, i64),
    size: u64,
    target: Option<String>,
}

fn shape(path: &Path) -> Shape {
    let meta =
        std::fs::symlink_metadata(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    let kind = meta.file_type();
    let link = kind.is_symlink();
    Shape {
        kind: if link {
            "link"
        } else if kind.is_dir() {
            "dir"
        } else {
            "file"
        },
        // A link's own mode is always 0777 and cannot be set.
        mode: if link { 0 } else { meta.mode() & 0o7777 },
        uid: meta.uid(),
        gid: meta.gid(),
        mtime: (meta.mtime(), meta.mtime_nsec()),
        // A directory's size depends on the filesystem.
        size: if kind.is_dir() { 0 } else { meta.len() },
        target: link.then(|| link_target(path)),
    }
}

fn set_mtime(path: &Path, seconds: i64, nanos: i64) {
    let time = TimeSpec::new(seconds, nanos);
    utimensat(
        AT_FDCWD,
        path,
        &time,
        &time,
        UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The paths the restore tests make and check, files before directories.
const SHAPED: &[&str] = &[
    "bin/run.sh",
    "keys/id",
    "nobody.txt",
    "old.txt",
    "docs/relative",
    "docs/dangling",
    "hard/one",
    "hard/two",
    "disk.img",
    "empty/a/b",
    "empty/a",
    "empty",
    "keys",
    "bin",
    "docs",
    "hard",
];

/// Makes, through the mount, everything a restore must give back, then
/// changes metadata only (chmod, chown, `touch -c`) once it is uploaded.
fn make_shapes(pool: &Pool) {
    let mnt = &pool.mount;
    for dir in ["bin", "keys", "docs", "hard", "empty/a/b"] {
        std::fs::create_dir_all(mnt.join(dir)).unwrap();
    }
    write_file(&mnt.join("bin/run.sh"), 300, 1);
    chmod(&mnt.join("bin/run.sh"), 0o755);
    write_file(&mnt.join("keys/id"), 400, 2);
    chmod(&mnt.join("keys/id"), 0o600);
    chmod(&mnt.join("keys"), 0o700);
    chmod(&mnt.join("empty"), 0o750);
    write_file(&mnt.join("nobody.txt"), 10, 3);
    std::os::unix::fs::lchown(mnt.join("nobody.txt"), Some(65534), Some(65534)).unwrap();
    write_file(&mnt.join("old.txt"), 20, 4);
    set_mtime(&mnt.join("old.txt"), 1_000_000_000, 123_456_789);
    symlink("../old.txt", mnt.join("docs/relative")).unwrap();
    symlink("nowhere/at all", mnt.join("docs/dangling")).unwrap();
    write_file(&mnt.join("hard/one"), 500, 5);
    std::fs::hard_link(mnt.join("hard/one"), mnt.join("hard/two")).unwrap();
    let image = std::fs::File::create(mnt.join("disk.img")).unwrap();
    image.set_len(4 << 20).unwrap();
    drop(image);
    set_mtime(&mnt.join("empty/a/b"), 1_100_000_000, 0);
    pool.settle(SETTLE);

    // Metadata only, after the upload: no byte is sent again.
    let sent = pool.status().branches[0].files_sent;
    chmod(&mnt.join("old.txt"), 0o640);
    std::os::unix::fs::lchown(mnt.join("bin/run.sh"), Some(1234), Some(5678)).unwrap();
    chmod(&mnt.join("bin/run.sh"), 0o4755);
    set_mtime(&mnt.join("keys/id"), 1_200_000_000, 5);
    set_mtime(&mnt.join("docs/relative"), 1_300_000_000, 7);
    set_mtime(&mnt.join("hard"), 1_400_000_000, 0);
    let after = pool.settle(SETTLE).branches[0].files_sent;
    assert_eq!(after, sent, "a metadata change sent bytes again");
}

/// Everything made, through the mount, comes back equal from a fresh
/// install's import: modes, owners, times, links, empty directories, hard
/// links and holes. The index on the remote is plain JSON lines.
fn metadata_survives_a_restore(mut pool: Pool) -> Pool {
    pool.import();
    pool.start();
    make_shapes(&pool);
    let branch = pool.branch_dir(&pool.branches[0].0);
    let want: Vec<Shape> = SHAPED.iter().map(|p| shape(&branch.join(p))).collect();
    pool.stop();

    // Readable without msync: the rclone CLI lists and prints the index.
    let remote = pool.branches[0].1.clone();
    let listed = stdout(&run(pool
        .sandbox
        .rclone_cli(["lsf", &format!("{remote}/.msync/meta")])));
    assert!(listed.contains("snapshot-"), "{listed}");
    // Files apply in the order of their number: a snapshot, then journals.
    let mut names: Vec<&str> = listed.lines().collect();
    names.sort_by_key(|name| name.split(['-', '.']).nth(1).map(str::to_owned));
    let mut index = String::new();
    for name in names {
        let file = format!("{remote}/.msync/meta/{name}");
        index.push_str(&stdout(&run(pool.sandbox.rclone_cli(["cat", &file]))));
    }
    let run_sh: Vec<serde_json::Value> = index
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|record| record["p"] == "bin/run.sh")
        .collect();
    let last = run_sh
        .last()
        .unwrap_or_else(|| panic!("no bin/run.sh in\n{index}"));
    assert_eq!(
        (&last["mode"], &last["uid"]),
        (&json!("4755"), &json!(1234)),
        "{index}"
    );

    let second = pool.sandbox.path().join("install2");
    run(pool.msync(["install", second.to_str().unwrap()]));
    let output = run(pool.msync(["import", second.to_str().unwrap()]));
    let restored = second.join("branches").join(&pool.branches[0].0);
    for (path, want) in SHAPED.iter().zip(&want) {
        assert_eq!(
            &shape(&restored.join(path)),
            want,
            "{path}\n{}",
            stdout(&output)
        );
    }
    let inode = |p: &str| std::fs::metadata(restored.join(p)).unwrap().ino();
    assert_eq!(inode("hard/one"), inode("hard/two"), "the hard link pair");
    let image = std::fs::metadata(restored.join("disk.img")).unwrap();
    assert!(
        image.blocks() * 512 < image.len() / 2,
        "the image has no holes"
    );

    // `--no-metadata` gives the bytes only.
    let third = pool.sandbox.path().join("install3");
    run(pool.msync(["install", third.to_str().unwrap()]));
    run(pool.msync(["import", third.to_str().unwrap(), "--no-metadata"]));
    let bare = third.join("branches").join(&pool.branches[0].0);
    assert_ne!(shape(&bare.join("old.txt")).mode, 0o640);
    assert_ne!(shape(&bare.join("nobody.txt")).uid, 65534);
    pool
}

#[test]
fn metadata_survives_a_restore_from_a_local_cloud() {
    let pool = metadata_survives_a_restore(Pool::local_clouds(1));
    // A backend that keeps metadata gets rclone's own as well, so plain
    // `rclone copy --metadata` gives modes and owners back too.
    let cloud = pool.sandbox.path().join("clouds/cloud1/msync");
    assert_eq!(shape(&cloud.join("keys/id")).mode, 0o600);
    assert_eq!(shape(&cloud.join("nobody.txt")).uid, 65534);
}

#[test]
fn metadata_survives_a_restore_from_sftp() {
    let server = SftpServer::start();
    let pool = Pool::install(Sandbox::new(), &server.rclone_section("ssh"));
    metadata_survives_a_restore(pool);
    drop(server);
}

/// S3 keeps no directories: the empty ones come back from the index.
#[test]
fn metadata_survives_a_restore_from_s3() {
    let server = S3Server::start();
    let pool = Pool::install(Sandbox::new(), &server.rclone_section("bucket"));
    let pool = metadata_survives_a_restore(pool);
    // The bucket itself holds no trace of the empty tree.
    let dirs = stdout(&run(pool.sandbox.rclone_cli([
        "lsf",
        "-R",
        "--dirs-only",
        "bucket:msync",
    ])));
    assert!(!dirs.contains("empty"), "{dirs}");
    drop(server);
}

#[test]
fn metadata_survives_a_restore_from_crypt() {
    let sandbox = Sandbox::new();
    let store = sandbox.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    let obscured = stdout(&run(sandbox.rclone_cli(["obscure", "pool secret"])));
    let config = format!(
        "[vault]\ntype = crypt\nremote = {}\npassword = {}\n",
        store.display(),
        obscured.trim()
    );
    metadata_survives_a_restore(Pool::install(sandbox, &config));
}

#[test]
fn a_file_that_is_not_what_the_index_records_is_listed_not_restored() {
    let mut pool = Pool::local_clouds(1);
    pool.import();
    pool.start();
    write_file(&pool.mount.join("good.txt"), 1000, 1);
    write_file(&pool.mount.join("torn.bin"), 5000, 2);
    pool.settle(SETTLE);
    pool.stop();
    // The cloud's copy cut short, as a machine dying mid-write leaves it.
    let cloud_copy = pool.sandbox.path().join("clouds/cloud1/msync/torn.bin");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&cloud_copy)
        .unwrap();
    file.set_len(2000).unwrap();
    drop(file);

    let second = pool.sandbox.path().join("install2");
    run(pool.msync(["install", second.to_str().unwrap()]));
    let output = run_expecting(pool.msync(["import", second.to_str().unwrap()]), 8);
    let message = stderr(&output);
    assert!(
        message.contains(
            "NOT restored: torn.bin is 2000 bytes on the cloud but the metadata index records 5000"
        ),
        "{message}"
    );
    let branch = &pool.branches[0].0;
    let restored = second.join("branches").join(branch);
    assert_eq!(
        std::fs::metadata(restored.join("good.txt")).unwrap().len(),
        1000
    );
    assert!(std::fs::symlink_metadata(restored.join("torn.bin")).is_err());
    let aside = second
        .join("state/import-mismatched")
        .join(branch)
        .join("torn.bin");
    assert_eq!(std::fs::metadata(aside).unwrap().len(), 2000);
}

#[test]
fn a_remote_an_older_msync_wrote_imports_its_bytes_and_gets_an_index_at_start() {
    // Files only, no `.msync/meta/`: what msync left before it kept one.
    let mut pool = Pool::local_clouds(1);
    let file = pool.sandbox.make_file("a.txt", 300);
    let remote = pool.branches[0].1.clone();
    run(pool.sandbox.rclone_cli([
        "copyto",
        file.to_str().unwrap(),
        &format!("{remote}/docs/a.txt"),
    ]));
    let output = run(pool.msync(["import", pool.install.to_str().unwrap()]));
    assert!(
        stdout(&output).contains("has no metadata index (written by an older msync)"),
        "{}",
        stdout(&output)
    );
    let restored = pool.branch_dir(&pool.branches[0].0).join("docs/a.txt");
    assert_eq!(std::fs::metadata(restored).unwrap().len(), 300);

    // The first start writes the index, with what the remote already held.
    pool.start();
    pool.settle(SETTLE);
    pool.stop();
    let listed = stdout(&run(pool
        .sandbox
        .rclone_cli(["lsf", &format!("{remote}/.msync/meta")])));
    let snapshot = listed
        .lines()
        .find(|name| name.starts_with("snapshot-"))
        .unwrap_or_else(|| panic!("no snapshot: {listed}"));
    let text = stdout(&run(pool
        .sandbox
        .rclone_cli(["cat", &format!("{remote}/.msync/meta/{snapshot}")])));
    assert!(text.starts_with("{\"msync_meta\":1,"), "{text}");
    assert!(text.contains("\"p\":\"docs/a.txt\""), "{text}");
}
