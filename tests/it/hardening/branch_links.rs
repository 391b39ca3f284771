//! Symlinks inside branches are never followed when uploading: a link to a
//! secret file, or to a directory outside the branch, puts none of their
//! bytes on any remote, whether it was there at start (the reconcile), made
//! in a branch directly or through the mount, alone or in a burst of new
//! files. Each link is stored as rclone stores one (`NAME.rclonelink`,
//! holding the target path), and only that.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::snapshot::files_below;
use crate::pool::{Pool, write_file};
use crate::util::run;

/// The bytes of the "shadow" file: found anywhere on a remote, a link was
/// followed.
const MARKER: &str = "MSYNC-SHADOW-MARKER-5f1c2a";

#[test]
fn symlinks_in_branches_are_never_followed() {
    let mut pool = Pool::local_clouds(2);
    pool.import();
    let outside = pool.sandbox.path().join("outside");
    let shadow = outside.join("shadow");
    std::fs::create_dir_all(outside.join("secret dir")).unwrap();
    std::fs::write(&shadow, format!("root:{MARKER}:19000:0:99999:7:::\n")).unwrap();
    std::fs::write(outside.join("secret dir/key"), MARKER).unwrap();
    let secret_dir = outside.join("secret dir");
    let (one, two) = (pool.branch_dir("cloud1"), pool.branch_dir("cloud2"));

    // There before the start: the first reconcile meets them.
    let mut links = vec![
        plant(&shadow, &one.join("early link")),
        plant(&secret_dir, &two.join("early dir link")),
    ];
    pool.start();
    let mnt = pool.mount.clone();
    links.push(plant(&shadow, &one.join("direct link")));
    links.push(plant(&secret_dir, &two.join("direct dir link")));
    links.push(plant(&shadow, &mnt.join("mounted link")));
    links.push(plant(&secret_dir, &mnt.join("mounted dir link")));
    std::fs::create_dir(mnt.join("sub")).unwrap();
    links.push(plant(
        Path::new("../../../../outside/shadow"),
        &mnt.join("sub/relative link"),
    ));
    // A burst: links among many new files go through one sync/copy job.
    for i in 0..10u8 {
        write_file(&mnt.join(format!("burst/file {i}")), 100, i);
        links.push(plant(&shadow, &mnt.join(format!("burst/link {i}"))));
    }
    pool.settle(Duration::from_secs(60));

    let remote_files: Vec<Vec<(String, u64)>> = pool
        .branches
        .iter()
        .map(|(_, remote)| pool.remote_files(remote))
        .collect();
    let sent = remote_files
        .iter()
        .flatten()
        .filter(|(p, _)| p.starts_with("burst/file "))
        .count();
    assert_eq!(
        sent, 10,
        "the burst's files did not all arrive: {remote_files:?}"
    );
    let mut stored = Vec::new();
    for (branch, remote) in &pool.branches {
        for (path, _) in pool.remote_files(remote) {
            let name = path.rsplit('/').next().unwrap_or(&path).to_owned();
            // A link is its `.rclonelink` file and nothing else: no file
            // under its own name, nothing below a directory link.
            if name.contains("link") || path.contains("link/") {
                assert!(
                    name.ends_with(".rclonelink") && !path.contains("link/"),
                    "{branch}: {path} on {remote} came through a link"
                );
                stored.push(name.trim_end_matches(".rclonelink").to_owned());
            }
        }
        let cat = run(pool.sandbox.rclone_cli(["cat", remote.as_str()]));
        assert!(
            !String::from_utf8_lossy(&cat.stdout).contains(MARKER),
            "{branch}: the shadow's bytes are on {remote}"
        );
    }
    stored.sort();
    links.sort();
    assert_eq!(stored, links, "not every link was stored as a link");
    let clouds = pool.sandbox.path().join("clouds");
    assert_no_marker_below(&clouds);
    pool.stop();
}

/// Makes `link` point at `target`; returns the link's file name.
fn plant(target: &Path, link: &Path) -> String {
    symlink(target, link).unwrap();
    link.file_name().unwrap().to_str().unwrap().to_owned()
}

/// No symlink and no byte of the marker anywhere below `root`, read
/// without following links (a link file holds only its target's path).
pub fn assert_no_marker_below(root: &Path) {
    let links: Vec<PathBuf> = walk_links(root);
    assert!(links.is_empty(), "symlinks on a remote: {links:?}");
    for file in files_below(root) {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(MARKER),
            "the marker is in {}",
            file.display()
        );
    }
}

fn walk_links(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let kind = entry.file_type().unwrap();
        if kind.is_symlink() {
            found.push(entry.path());
        } else if kind.is_dir() {
            found.extend(walk_links(&entry.path()));
        }
    }
    found
}
