//! A restore gives back files as they were. Symlinks: stored as rclone
//! stores them (`NAME.rclonelink` holding the target, never followed), and
//! given back as symlinks by `import` and by plain `rclone copy -l`.

use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::Duration;

use crate::pool::{Pool, write_file};
use crate::util::run;

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
