//! File names are data: `..` inside a name, a newline, a leading `-`,
//! spaces, shell and glob characters, invalid UTF-8. Each file is synced
//! byte for byte to the same path on its remote, or reported by name (in
//! the log or the branch's `last_error`); and nothing is ever created
//! outside a branch or outside the remote's `msync` directory.
//!
//! Four ways in: files in a branch before the start (the first
//! reconcile), files written one at a time into a branch (one
//! `operations/copyfile` each), a burst into one directory of a branch
//! (one `sync/copy` over a file list), and files written through the
//! mount (spread over the branches).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::snapshot::files_below;
use crate::pool::Pool;

/// The names, as bytes. A name with a `/` is a file in a directory.
const NAMES: &[&[u8]] = &[
    b"a..b",
    b"..hidden",
    b"...",
    b"dir..x/..inner",
    b"line\nbreak",
    b"carriage return\r",
    b"-rf",
    b"--help",
    b"-",
    b"-rf dir/file",
    b" leading space",
    b"trailing space ",
    b"back\\slash",
    b"semi;colon #hash",
    b"quotes \"'` and $HOME",
    b"glob *?[a]",
    b"colon:name",
    b"\xc3\xbcn\xc3\xaf \xe2\x9c\x93",
    b"bad\xffname",
    b"bad dir \xfe/inside",
];

const SETTLE: Duration = Duration::from_secs(90);

/// Whether `name` can be a line of rclone's `--files-from-raw` list, which
/// the burst upload uses: see [`a_burst_carries_every_name`].
fn fits_a_file_list(name: &[u8]) -> bool {
    std::str::from_utf8(name).is_ok() && !name.contains(&b'\n') && !name.ends_with(b"\r")
}

#[test]
fn file_names_are_data() {
    let mut pool = Pool::local_clouds(2);
    pool.import();
    let early = pool.branch_dir("cloud2").join("early");
    write_all(&early, NAMES.iter());
    // Made before the start, so that no directory creation comes between
    // the burst's uploads.
    let burst = pool.branch_dir("cloud1").join("burst");
    std::fs::create_dir(&burst).unwrap();
    pool.start();
    // The first reconcile done, each write below is the only work queued.
    pool.settle(SETTLE);
    let one_by_one = pool.branch_dir("cloud1").join("one by one");
    for (i, name) in NAMES.iter().enumerate() {
        write_named(&one_by_one, name, i);
        // Longer than the debounce: each file is its own upload.
        std::thread::sleep(Duration::from_millis(300));
    }
    pool.settle(SETTLE);
    let listable = || NAMES.iter().filter(|n| fits_a_file_list(n));
    write_all(&burst, listable().filter(|n| !n.contains(&b'/')));
    write_all(&pool.mount.join("through the mount"), listable());
    let synced = assert_synced_or_reported(&pool);
    // Only the invalid UTF-8 names may be reported instead of synced.
    let valid = |names: &mut dyn Iterator<Item = &&[u8]>| {
        names.filter(|n| std::str::from_utf8(n).is_ok()).count()
    };
    let expected = 2 * valid(&mut NAMES.iter())
        + listable().filter(|n| !n.contains(&b'/')).count()
        + listable().count();
    assert!(
        synced >= expected,
        "only {synced} of {expected} files synced\n--- log\n{}",
        pool.log()
    );
    assert_nothing_outside(&pool);
    pool.stop();
    assert_nothing_outside(&pool);
}

/// Many files at once go as one `sync/copy` over a `--files-from-raw`
/// list. A name that is not UTF-8 fails the whole list, so every other
/// file of the burst stays behind unreported until the next reconcile
/// (6 h); a name with a newline, or ending in a carriage return, cannot be
/// a line of the list and is skipped without a word.
#[test]
fn a_burst_carries_every_name() {
    let mut pool = Pool::local_clouds(1);
    pool.import();
    let burst = pool.branch_dir("cloud1").join("burst");
    std::fs::create_dir(&burst).unwrap();
    pool.start();
    let flat = || NAMES.iter().filter(|n| !n.contains(&b'/'));
    write_all(&burst, flat());
    let synced = assert_synced_or_reported(&pool);
    let expected = flat().filter(|n| std::str::from_utf8(n).is_ok()).count();
    assert!(
        synced >= expected,
        "only {synced} of {expected} files synced"
    );
    assert_nothing_outside(&pool);
}

fn write_all<'a>(dir: &Path, names: impl Iterator<Item = &'a &'a [u8]>) {
    for (i, name) in names.enumerate() {
        write_named(dir, name, i);
    }
}

/// Waits until the service settles, then checks every file of every
/// branch: the same bytes at the same path on its remote, or its name in
/// the log or a branch's last error. Returns how many were synced.
fn assert_synced_or_reported(pool: &Pool) -> usize {
    let status = pool.settle(SETTLE);
    let log = pool.log();
    let errors: Vec<String> = status
        .branches
        .iter()
        .filter_map(|b| b.last_error.clone())
        .collect();
    let mut unreported = Vec::new();
    let mut synced = 0;
    for (branch, _) in &pool.branches {
        let local = pool.branch_dir(branch);
        let remote = cloud_dir(pool, branch).join("msync");
        for file in files_below(&local) {
            let relative = file.strip_prefix(&local).unwrap();
            if relative == Path::new(".msync-branch") {
                continue;
            }
            let copy = remote.join(relative);
            if std::fs::read(&copy).ok() == Some(std::fs::read(&file).unwrap()) {
                synced += 1;
            } else if !reported(relative, &log, &errors) {
                unreported.push(format!("{branch}: {relative:?}"));
            }
        }
    }
    assert!(
        unreported.is_empty(),
        "neither synced nor reported:\n  {}\n--- log\n{log}\n--- errors\n{errors:#?}",
        unreported.join("\n  ")
    );
    synced
}

/// Writes `dir/name` with bytes that tell the files apart.
fn write_named(dir: &Path, name: &[u8], seed: usize) {
    let path = dir.join(OsStr::from_bytes(name));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut bytes = name.to_vec();
    bytes.extend(format!(" #{seed} {}", dir.display()).bytes());
    std::fs::write(&path, bytes).unwrap();
}

/// Whether the log or a branch's last error names `relative`.
fn reported(relative: &Path, log: &str, errors: &[String]) -> bool {
    let shown = relative.to_string_lossy();
    let escaped = format!("{shown:?}");
    let escaped = escaped.trim_matches('"');
    [log.to_owned()]
        .iter()
        .chain(errors)
        .any(|text| text.contains(shown.as_ref()) || text.contains(escaped))
}

fn cloud_dir(pool: &Pool, branch: &str) -> PathBuf {
    pool.sandbox.path().join("clouds").join(branch)
}

/// Nothing escaped: every file on a cloud is below its `msync` directory,
/// every file of the install is where msync keeps its own, and the sandbox
/// holds nothing new at its top.
fn assert_nothing_outside(pool: &Pool) {
    let clouds = pool.sandbox.path().join("clouds");
    let mut escaped: Vec<PathBuf> = files_below(&clouds)
        .into_iter()
        .filter(|file| {
            !pool
                .branches
                .iter()
                .any(|(name, _)| file.starts_with(cloud_dir(pool, name).join("msync")))
        })
        .collect();
    for entry in std::fs::read_dir(&clouds).unwrap() {
        let cloud = entry.unwrap().path();
        for inside in std::fs::read_dir(&cloud).unwrap() {
            let inside = inside.unwrap().path();
            if inside.file_name() != Some(OsStr::new("msync")) {
                escaped.push(inside);
            }
        }
    }
    let install = &pool.install;
    escaped.extend(files_below(install).into_iter().filter(|file| {
        let relative = file.strip_prefix(install).unwrap();
        let top = relative.components().next().unwrap().as_os_str();
        !["branches", "run", "state", "msync.json", "msync.log"]
            .iter()
            .any(|known| top == OsStr::new(known))
    }));
    for entry in std::fs::read_dir(pool.sandbox.path()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap();
        if !["clouds", "install", "mnt", "home", "rclone.conf"]
            .iter()
            .any(|known| name == OsStr::new(known))
        {
            escaped.push(path);
        }
    }
    assert!(escaped.is_empty(), "created outside: {escaped:#?}");
}
