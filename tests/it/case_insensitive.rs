//! Names that differ only in case, on a cloud that takes them for one.
//! rclone's local backend with `case_insensitive = true` reports itself as
//! such a cloud (as OneDrive and Dropbox do) while its disk keeps both
//! names apart, so the rclone CLI can see whether msync ever put two such
//! names side by side there.

use std::path::Path;
use std::time::Duration;

use msync::sync::PathClass;

use crate::pool::{Pool, write_file};
use crate::util::{Sandbox, run, stdout};

const SETTLE: Duration = Duration::from_secs(120);

/// A remote `name` on the local directory `dir` that says it is
/// case-insensitive.
fn case_insensitive_section(name: &str, dir: &Path) -> String {
    std::fs::create_dir_all(dir).unwrap();
    format!(
        "[{name}]\ntype = alias\nremote = :local,case_insensitive=true:{}\n\n",
        dir.display()
    )
}

fn plain_section(name: &str, dir: &Path) -> String {
    std::fs::create_dir_all(dir).unwrap();
    format!("[{name}]\ntype = alias\nremote = {}\n\n", dir.display())
}

/// Every name of `remote`, with its bytes, by the rclone CLI.
fn remote_contents(pool: &Pool, remote: &str) -> Vec<(String, Vec<u8>)> {
    let mut found: Vec<(String, Vec<u8>)> = pool
        .remote_names(remote)
        .into_iter()
        .map(|name| {
            let bytes = run(pool
                .sandbox
                .rclone_cli(["cat", &format!("{remote}/{name}")]))
            .stdout;
            (name, bytes)
        })
        .collect();
    found.sort();
    found
}

/// No two entries of `remote` (files or directories, at any depth) differ
/// only in case.
fn assert_no_names_clash(pool: &Pool, remote: &str) {
    let listing = stdout(&run(pool.sandbox.rclone_cli(["lsf", "-R", remote])));
    let mut seen = std::collections::HashMap::new();
    for line in listing.lines() {
        let name = line.trim_end_matches('/');
        if name.starts_with(".msync") {
            continue;
        }
        if let Some(other) = seen.insert(name.to_lowercase(), name.to_owned())
            && other != name
        {
            panic!("{remote} holds both {other} and {name}:\n{listing}");
        }
    }
}

fn bytes(len: usize, seed: u8) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    write_file(&path, len, seed);
    std::fs::read(path).unwrap()
}

#[test]
fn a_name_that_differs_only_in_case_moves_to_a_branch_that_can_take_it() {
    let sandbox = Sandbox::new();
    let clouds = sandbox.path().join("clouds");
    let config = case_insensitive_section("ci", &clouds.join("ci"))
        + &plain_section("plain", &clouds.join("plain"));
    let mut pool = Pool::install(sandbox, &config);
    pool.import();
    pool.start();
    let ci = pool.branch_dir("ci");
    // What the case-insensitive cloud holds first keeps its place.
    write_file(&ci.join("Photo.jpg"), 1000, 1);
    write_file(&ci.join("Docs/a.txt"), 300, 2);
    pool.settle(SETTLE);
    // Then the same names in other cases, and two new names at once.
    write_file(&ci.join("photo.jpg"), 1200, 3);
    write_file(&ci.join("docs/b.txt"), 400, 4);
    std::fs::create_dir_all(ci.join("new")).unwrap();
    write_file(&ci.join("new/README.md"), 500, 5);
    write_file(&ci.join("new/Readme.md"), 600, 6);
    pool.settle(SETTLE);
    pool.wait_in_sync(SETTLE);

    assert_no_names_clash(&pool, "ci:msync");
    assert_eq!(
        remote_contents(&pool, "ci:msync"),
        [
            ("Docs/a.txt".to_owned(), bytes(300, 2)),
            ("Photo.jpg".to_owned(), bytes(1000, 1)),
            ("new/README.md".to_owned(), bytes(500, 5)),
        ]
    );
    // The others moved to the plain branch, the directory whole, and
    // every name is in the pool with its own bytes.
    assert_eq!(
        remote_contents(&pool, "plain:msync"),
        [
            ("docs/b.txt".to_owned(), bytes(400, 4)),
            ("new/Readme.md".to_owned(), bytes(600, 6)),
            ("photo.jpg".to_owned(), bytes(1200, 3)),
        ]
    );
    assert!(!ci.join("docs").exists());
    for (name, len, seed) in [
        ("Photo.jpg", 1000, 1),
        ("photo.jpg", 1200, 3),
        ("Docs/a.txt", 300, 2),
        ("docs/b.txt", 400, 4),
        ("new/README.md", 500, 5),
        ("new/Readme.md", 600, 6),
    ] {
        assert_eq!(
            std::fs::read(pool.mount.join(name)).unwrap(),
            bytes(len, seed),
            "{name}"
        );
    }
    let log = pool.log();
    assert!(
        log.contains("its case-insensitive cloud keeps another name like photo.jpg"),
        "{log}"
    );

    // Names put in the branch while the service was stopped: the start's
    // reconcile leaves the second out and it moves too.
    pool.stop();
    write_file(&ci.join("Song.mp3"), 700, 7);
    write_file(&ci.join("song.mp3"), 800, 8);
    pool.start();
    pool.settle(SETTLE);
    pool.wait_in_sync(SETTLE);
    assert_no_names_clash(&pool, "ci:msync");
    assert!(
        pool.remote_names("plain:msync")
            .contains(&"song.mp3".to_owned())
    );
    assert!(
        pool.remote_names("ci:msync")
            .contains(&"Song.mp3".to_owned())
    );
    pool.stop();

    // A fresh install restores every name, each with its own bytes.
    let second = pool.sandbox.path().join("install2");
    run(pool.msync(["install", second.to_str().unwrap()]));
    run(pool.msync(["import", second.to_str().unwrap()]));
    for (branch, name, len, seed) in [
        ("ci", "Photo.jpg", 1000, 1),
        ("plain", "photo.jpg", 1200, 3),
        ("ci", "Song.mp3", 700, 7),
        ("plain", "song.mp3", 800, 8),
        ("plain", "docs/b.txt", 400, 4),
        ("ci", "new/README.md", 500, 5),
    ] {
        let restored = second.join("branches").join(branch).join(name);
        assert_eq!(
            std::fs::read(&restored).unwrap(),
            bytes(len, seed),
            "{name}"
        );
    }
}

#[test]
fn a_name_no_branch_can_take_is_held_listed_and_never_sent() {
    let sandbox = Sandbox::new();
    let config = case_insensitive_section("ci", &sandbox.path().join("clouds/ci"));
    let mut pool = Pool::install(sandbox, &config);
    pool.import();
    // Reconciles one after another: none may send the held name.
    pool.start_with(&["--reconcile-every", "2s"]);
    let ci = pool.branch_dir("ci");
    write_file(&ci.join("Photo.jpg"), 1000, 1);
    pool.settle(SETTLE);
    write_file(&ci.join("photo.jpg"), 1200, 3);

    // Held, with a status line that says why, and exit 6.
    let branch = pool.wait_for_branch(
        0,
        |b| b.failing.iter().any(|f| f.path == "photo.jpg"),
        SETTLE,
    );
    let held = branch
        .failing
        .iter()
        .find(|f| f.path == "photo.jpg")
        .unwrap();
    assert_eq!(held.class, PathClass::Retrying);
    assert!(
        held.reason.contains("differs only in case from Photo.jpg"),
        "{held:?}"
    );
    let output = pool
        .msync(["status", pool.install.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(6));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("photo.jpg"), "{text}");
    assert!(text.contains("differs only in case"), "{text}");

    // Nor does a reconcile: wait for one that found it to end.
    let found = "stay out and move to another branch";
    let reconciles = |log: &str| log.matches("ci: reconciling").count();
    let deadline = std::time::Instant::now() + SETTLE;
    let mut log = pool.log();
    while !log.contains(found) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        log = pool.log();
    }
    assert!(log.contains(found), "{log}");
    let seen = reconciles(&log);
    while reconciles(&pool.log()) == seen && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(reconciles(&pool.log()) > seen, "{}", pool.log());
    assert!(
        pool.log().contains("no other branch can take photo.jpg"),
        "{}",
        pool.log()
    );
    assert_eq!(
        remote_contents(&pool, "ci:msync"),
        [("Photo.jpg".to_owned(), bytes(1000, 1))]
    );

    // Renamed, it is a name of its own and goes; the name kept stays.
    std::fs::rename(ci.join("photo.jpg"), ci.join("photo-2.jpg")).unwrap();
    let status = pool.settle(SETTLE);
    assert!(status.branches[0].failing.is_empty(), "{status:#?}");
    pool.assert_in_sync();
    assert_eq!(
        remote_contents(&pool, "ci:msync"),
        [
            ("Photo.jpg".to_owned(), bytes(1000, 1)),
            ("photo-2.jpg".to_owned(), bytes(1200, 3)),
        ]
    );

    // An import into the branch, which holds another spelling again,
    // brings the kept name back beside it and overwrites neither.
    write_file(&ci.join("PHOTO.JPG"), 1400, 9);
    pool.wait_for_branch(0, |b| !b.failing.is_empty(), SETTLE);
    pool.stop();
    std::fs::remove_file(ci.join("Photo.jpg")).unwrap();
    pool.import();
    assert_eq!(std::fs::read(ci.join("Photo.jpg")).unwrap(), bytes(1000, 1));
    assert_eq!(std::fs::read(ci.join("PHOTO.JPG")).unwrap(), bytes(1400, 9));
    assert_eq!(
        remote_contents(&pool, "ci:msync"),
        [
            ("Photo.jpg".to_owned(), bytes(1000, 1)),
            ("photo-2.jpg".to_owned(), bytes(1200, 3)),
        ]
    );
}
