//! The watcher against the real kernel: temp directories, real inotify,
//! a 200 ms debounce. Checks what the sync engine relies on: one Write per
//! finished file, renames as one Rename, directories before their contents,
//! odd names byte for byte, moves across the tree's edge, overflow and the
//! watch limit (which lower /proc/sys values and restore them in a guard).

use std::ffi::OsStr;
use std::fs;
use std::io::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::util::Sysctl;
use msync::watch::{BranchRoot, Change, ChangeKind, WatchConfig, WatchMessage, Watcher};

const DEBOUNCE: Duration = Duration::from_millis(200);
/// Quiet this long means nothing more is coming: debounce plus the pairing
/// grace plus slack for a loaded machine.
const QUIET: Duration = Duration::from_millis(800);

/// Branch roots in a temp dir (plus an `outside` dir on the same
/// filesystem, for moves across the tree's edge) and a running watcher.
struct Rig {
    dir: tempfile::TempDir,
    watcher: Option<Watcher>,
    rx: Receiver<WatchMessage>,
}

impl Rig {
    fn new() -> Rig {
        Rig::with(1, WatchConfig::default(), |_| {})
    }

    /// `prepare` fills the branches (given branch 0's root) before the
    /// watcher starts.
    fn with(branches: usize, config: WatchConfig, prepare: impl FnOnce(&Path)) -> Rig {
        let dir = tempfile::Builder::new()
            .prefix("msync-watch-")
            .tempdir()
            .expect("temp dir");
        for i in 0..branches {
            fs::create_dir(dir.path().join(format!("b{i}"))).unwrap();
        }
        fs::create_dir(dir.path().join("outside")).unwrap();
        prepare(&dir.path().join("b0"));
        let roots = (0..branches)
            .map(|i| BranchRoot {
                index: i,
                path: dir.path().join(format!("b{i}")),
            })
            .collect();
        let (tx, rx) = mpsc::channel();
        // Every write waits the whole debounce, not the shorter wait of a
        // file that was quiet (its unit tests cover that): changes made
        // back to back then stay together on a loaded machine.
        let config = WatchConfig {
            debounce: DEBOUNCE,
            quick: DEBOUNCE,
            ..config
        };
        let watcher = Watcher::start(roots, config, tx).expect("starting the watcher");
        Rig {
            dir,
            watcher: Some(watcher),
            rx,
        }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("b0")
    }

    fn path(&self, relative: impl AsRef<Path>) -> PathBuf {
        self.root().join(relative)
    }

    fn outside(&self) -> PathBuf {
        self.dir.path().join("outside")
    }

    fn watcher(&self) -> &Watcher {
        self.watcher.as_ref().unwrap()
    }

    /// Every message until nothing arrived for `QUIET` (at most 30 s).
    fn messages(&self) -> Vec<WatchMessage> {
        self.messages_after(QUIET)
    }

    /// Every message, the first awaited up to `first`, the others until
    /// nothing arrived for `QUIET` (at most 30 s in all).
    fn messages_after(&self, first: Duration) -> Vec<WatchMessage> {
        let mut all = Vec::new();
        let end = Instant::now() + Duration::from_secs(30);
        while Instant::now() < end {
            let wait = if all.is_empty() { first } else { QUIET };
            match self
                .rx
                .recv_timeout(wait.min(end.saturating_duration_since(Instant::now())))
            {
                Ok(message) => all.push(message),
                Err(RecvTimeoutError::Timeout) => return all,
                Err(RecvTimeoutError::Disconnected) => panic!("the watcher thread ended"),
            }
        }
        panic!("the watcher never went quiet; got {all:?}");
    }

    /// The changes that come (waiting up to 30 s for the first, however
    /// slow the machine), until quiet; any other message fails the test.
    fn changes(&self) -> Vec<Change> {
        Self::only_changes(self.messages_after(Duration::from_secs(30)))
    }

    /// Asserts that nothing comes within `QUIET`.
    fn assert_no_changes(&self) {
        assert_eq!(Self::only_changes(self.messages()), vec![]);
    }

    fn only_changes(messages: Vec<WatchMessage>) -> Vec<Change> {
        let mut changes = Vec::new();
        for message in messages {
            match message {
                WatchMessage::Changes(c) => changes.extend(c),
                other => panic!("unexpected message {other:?} ({other})"),
            }
        }
        changes
    }

    /// Waits for the first message that `pick` accepts (at most `limit`).
    fn wait_for(&self, limit: Duration, pick: impl Fn(&WatchMessage) -> bool) -> Vec<WatchMessage> {
        let mut seen = Vec::new();
        let end = Instant::now() + limit;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(message) => {
                    let done = pick(&message);
                    seen.push(message);
                    if done {
                        return seen;
                    }
                }
                Err(_) => {
                    panic!("the expected message did not come within {limit:?}; got {seen:?}")
                }
            }
        }
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if let Some(watcher) = self.watcher.take() {
            watcher.stop();
        }
    }
}

fn change(path: impl AsRef<Path>, kind: ChangeKind) -> Change {
    let is_dir = matches!(kind, ChangeKind::DirCreate | ChangeKind::DirDelete);
    Change {
        branch: 0,
        path: path.as_ref().to_path_buf(),
        kind,
        is_dir,
    }
}

fn write(path: impl AsRef<Path>) -> Change {
    change(path, ChangeKind::Write)
}

fn rename(from: &str, to: &str, is_dir: bool) -> Change {
    Change {
        branch: 0,
        path: PathBuf::from(to),
        kind: ChangeKind::Rename {
            from: PathBuf::from(from),
        },
        is_dir,
    }
}

/// Every change comes after the DirCreate of each new directory above it.
fn assert_dirs_first(changes: &[Change]) {
    for (i, c) in changes.iter().enumerate() {
        for ancestor in c.path.ancestors().skip(1) {
            if let Some(j) = changes
                .iter()
                .position(|d| d.kind == ChangeKind::DirCreate && d.path == ancestor)
            {
                assert!(
                    j < i,
                    "{:?} came before the DirCreate of {ancestor:?}: {changes:?}",
                    c.path
                );
            }
        }
    }
}

#[test]
fn writes_overwrites_and_deletes() {
    let rig = Rig::new();
    fs::write(rig.path("a.txt"), "one").unwrap();
    assert_eq!(rig.changes(), vec![write("a.txt")]);

    fs::write(rig.path("a.txt"), "two, longer").unwrap();
    assert_eq!(rig.changes(), vec![write("a.txt")]);

    // Many writes in a burst coalesce.
    for i in 0..20 {
        fs::write(rig.path("a.txt"), format!("version {i}")).unwrap();
    }
    assert_eq!(rig.changes(), vec![write("a.txt")]);

    fs::remove_file(rig.path("a.txt")).unwrap();
    assert_eq!(rig.changes(), vec![change("a.txt", ChangeKind::Delete)]);

    // Written and deleted within one debounce: only the delete.
    fs::write(rig.path("brief"), "x").unwrap();
    fs::remove_file(rig.path("brief")).unwrap();
    assert_eq!(rig.changes(), vec![change("brief", ChangeKind::Delete)]);

    fs::create_dir(rig.path("d")).unwrap();
    assert_eq!(rig.changes(), vec![change("d", ChangeKind::DirCreate)]);
    fs::remove_dir(rig.path("d")).unwrap();
    assert_eq!(rig.changes(), vec![change("d", ChangeKind::DirDelete)]);

    // A symlink is reported as a Write (the engine decides to skip it).
    std::os::unix::fs::symlink("nowhere", rig.path("link")).unwrap();
    assert_eq!(rig.changes(), vec![write("link")]);

    // So is a hard link: complete as it appears, no close will follow.
    fs::write(rig.path("original"), "x").unwrap();
    assert_eq!(rig.changes(), vec![write("original")]);
    fs::hard_link(rig.path("original"), rig.path("hard")).unwrap();
    assert_eq!(rig.changes(), vec![write("hard")]);
}

#[test]
fn a_new_directory_tree_is_scanned_for_files_made_before_its_watch() {
    let rig = Rig::new();
    // Many trees as fast as possible, so some files land in a directory
    // before the watcher has added its watch.
    let mut expected = Vec::new();
    for t in 0..20 {
        let deep = PathBuf::from(format!("t{t}/b/c"));
        fs::create_dir_all(rig.path(&deep)).unwrap();
        fs::write(rig.path(deep.join("f1")), "1").unwrap();
        fs::write(rig.path(format!("t{t}/b/f2")), "2").unwrap();
        fs::create_dir(rig.path(deep.join("d"))).unwrap();
        fs::write(rig.path(deep.join("d/f3")), "3").unwrap();
        for dir in [
            format!("t{t}"),
            format!("t{t}/b"),
            format!("t{t}/b/c"),
            format!("t{t}/b/c/d"),
        ] {
            expected.push(change(dir, ChangeKind::DirCreate));
        }
        for file in ["b/c/f1", "b/f2", "b/c/d/f3"] {
            expected.push(write(format!("t{t}/{file}")));
        }
    }
    let changes = rig.changes();
    assert_dirs_first(&changes);
    let mut got = changes.clone();
    got.sort_by(|a, b| a.path.cmp(&b.path));
    expected.sort_by(|a, b| a.path.cmp(&b.path));
    assert_eq!(got, expected, "each directory and file exactly once");
}

#[test]
fn renames_are_one_rename_and_nothing_else() {
    let rig = Rig::with(1, WatchConfig::default(), |root| {
        fs::write(root.join("a"), "content").unwrap();
        fs::create_dir_all(root.join("d/sub")).unwrap();
        fs::write(root.join("d/sub/x"), "x").unwrap();
    });
    fs::rename(rig.path("a"), rig.path("b")).unwrap();
    assert_eq!(rig.changes(), vec![rename("a", "b", false)]);

    fs::rename(rig.path("d"), rig.path("e")).unwrap();
    assert_eq!(rig.changes(), vec![rename("d", "e", true)]);

    // The watches below the renamed directory now report the new paths.
    fs::write(rig.path("e/sub/x"), "changed").unwrap();
    fs::write(rig.path("e/sub/y"), "new").unwrap();
    assert_eq!(rig.changes(), vec![write("e/sub/x"), write("e/sub/y")]);

    // Written, then renamed before its debounce ran out: rename first, then
    // the write under the new name.
    fs::write(rig.path("b"), "newer").unwrap();
    fs::rename(rig.path("b"), rig.path("c")).unwrap();
    assert_eq!(rig.changes(), vec![rename("b", "c", false), write("c")]);
}

#[test]
fn a_slow_writer_yields_exactly_one_write_after_its_close() {
    let rig = Rig::new();
    let mut file = fs::File::create(rig.path("slow.bin")).unwrap();
    // ~2 s of writing with pauses longer than the debounce.
    let started = Instant::now();
    let mut early = Vec::new();
    for _ in 0..7 {
        file.write_all(&[7u8; 4096]).unwrap();
        file.flush().unwrap();
        if let Ok(message) = rig.rx.recv_timeout(Duration::from_millis(300)) {
            early.push(message);
        }
    }
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert!(
        early.is_empty(),
        "reported while still being written: {early:?}"
    );
    drop(file);
    assert_eq!(rig.changes(), vec![write("slow.bin")]);
}

#[test]
fn odd_names_are_kept_byte_for_byte() {
    let rig = Rig::new();
    let names: Vec<&OsStr> = vec![
        OsStr::new("with space.txt"),
        OsStr::new("ünïcødé ✓ 文件"),
        OsStr::new("new\nline"),
        OsStr::from_bytes(b"bad\xffbyte"),
    ];
    for name in &names {
        fs::write(rig.path(name), "x").unwrap();
    }
    let mut got = rig.changes();
    got.sort_by(|a, b| a.path.cmp(&b.path));
    let mut expected: Vec<Change> = names.iter().map(write).collect();
    expected.sort_by(|a, b| a.path.cmp(&b.path));
    assert_eq!(got, expected);

    fs::create_dir(rig.path(OsStr::from_bytes(b"dir\xfe"))).unwrap();
    fs::write(rig.path(OsStr::from_bytes(b"dir\xfe/f\n")), "x").unwrap();
    assert_eq!(
        rig.changes(),
        vec![
            change(OsStr::from_bytes(b"dir\xfe"), ChangeKind::DirCreate),
            write(OsStr::from_bytes(b"dir\xfe/f\n"))
        ]
    );
}

#[test]
fn moves_across_the_edge_of_the_tree() {
    let rig = Rig::with(1, WatchConfig::default(), |root| {
        fs::write(root.join("leaving"), "x").unwrap();
        fs::create_dir_all(root.join("dir-leaving/inner")).unwrap();
    });
    fs::rename(rig.path("leaving"), rig.outside().join("leaving")).unwrap();
    assert_eq!(rig.changes(), vec![change("leaving", ChangeKind::Delete)]);

    fs::write(rig.outside().join("coming"), "y").unwrap();
    fs::rename(rig.outside().join("coming"), rig.path("coming")).unwrap();
    assert_eq!(rig.changes(), vec![write("coming")]);

    // A directory moved out is no longer followed.
    fs::rename(rig.path("dir-leaving"), rig.outside().join("dir-left")).unwrap();
    assert_eq!(
        rig.changes(),
        vec![change("dir-leaving", ChangeKind::DirDelete)]
    );
    fs::write(rig.outside().join("dir-left/inner/after"), "z").unwrap();
    rig.assert_no_changes();

    // A directory moved in is created, watched and scanned.
    fs::rename(rig.outside().join("dir-left"), rig.path("dir-back")).unwrap();
    let changes = rig.changes();
    assert_eq!(
        changes,
        vec![
            change("dir-back", ChangeKind::DirCreate),
            change("dir-back/inner", ChangeKind::DirCreate),
            write("dir-back/inner/after"),
        ]
    );
    fs::write(rig.path("dir-back/inner/later"), "w").unwrap();
    assert_eq!(rig.changes(), vec![write("dir-back/inner/later")]);
}

#[test]
fn moves_between_branches_are_a_delete_and_a_write() {
    let rig = Rig::with(2, WatchConfig::default(), |root| {
        fs::write(root.join("f"), "x").unwrap();
    });
    let other = rig.dir.path().join("b1");
    fs::rename(rig.path("f"), other.join("f")).unwrap();
    let mut in_other = write("f");
    in_other.branch = 1;
    // Two branches, two remotes: no order between them.
    let mut changes = Vec::new();
    let end = Instant::now() + Duration::from_secs(30);
    while changes.len() < 2 && Instant::now() < end {
        changes.extend(rig.changes());
    }
    changes.sort_by_key(|c| c.branch);
    assert_eq!(changes, vec![change("f", ChangeKind::Delete), in_other]);
}

#[test]
fn ignored_names_are_never_reported() {
    let ignore = |path: &Path| {
        path.components().any(|c| {
            let name = c.as_os_str().as_bytes();
            name.starts_with(b".wh.") || name == b".msync-marker"
        })
    };
    let config = WatchConfig {
        ignore: Arc::new(ignore),
        ..WatchConfig::default()
    };
    let rig = Rig::with(1, config, |root| {
        fs::create_dir(root.join(".wh..wh.orph")).unwrap();
    });
    fs::write(rig.path(".wh.gone"), "").unwrap();
    fs::write(rig.path(".msync-marker"), "").unwrap();
    fs::write(rig.path(".wh..wh.orph/inside"), "").unwrap();
    fs::create_dir(rig.path(".wh..wh.plnk")).unwrap();
    fs::write(rig.path(".wh..wh.plnk/inside"), "").unwrap();
    fs::write(rig.path("visible"), "").unwrap();
    assert_eq!(rig.changes(), vec![write("visible")]);

    // Renamed to an ignored name: gone from view; and back again.
    fs::rename(rig.path("visible"), rig.path(".wh.visible")).unwrap();
    assert_eq!(rig.changes(), vec![change("visible", ChangeKind::Delete)]);
    fs::rename(rig.path(".wh.visible"), rig.path("visible")).unwrap();
    assert_eq!(rig.changes(), vec![write("visible")]);
    assert_eq!(
        rig.watcher().watch_count(),
        1,
        "ignored directories get no watch"
    );
}

#[test]
fn flush_sends_pending_changes_at_once() {
    let rig = Rig::with(1, WatchConfig::default(), |root| {
        fs::create_dir_all(root.join("x/y")).unwrap();
    });
    assert_eq!(rig.watcher().watch_count(), 3);
    let mut open = fs::File::create(rig.path("open")).unwrap();
    open.write_all(b"partial").unwrap();
    fs::write(rig.path("x/done"), "x").unwrap();
    let asked = Instant::now();
    rig.watcher().flush();
    let message = rig.rx.try_recv().expect("flush returns after sending");
    assert!(asked.elapsed() < DEBOUNCE, "flush waited for the debounce");
    let WatchMessage::Changes(changes) = message else {
        panic!("expected changes, got {message:?}");
    };
    assert_eq!(changes, vec![write("open"), write("x/done")]);
    drop(open);
    assert_eq!(rig.changes(), vec![write("open")]);
}

#[test]
fn stop_ends_the_thread() {
    let mut rig = Rig::new();
    rig.watcher.take().unwrap().stop();
    fs::write(rig.path("after"), "x").unwrap();
    assert!(matches!(
        rig.rx.recv_timeout(QUIET),
        Err(RecvTimeoutError::Disconnected)
    ));
}

#[test]
fn a_vanished_branch_root_is_an_error_naming_it() {
    let rig = Rig::new();
    fs::remove_dir(rig.root()).unwrap();
    let messages = rig.wait_for(Duration::from_secs(5), |m| {
        matches!(m, WatchMessage::Error(_))
    });
    let Some(WatchMessage::Error(text)) = messages.last() else {
        unreachable!()
    };
    assert!(
        text.contains(&rig.root().display().to_string()),
        "error does not name the root: {text}"
    );
}

/// A gate the watcher thread waits at (through the ignore callback, which
/// runs on that thread) while the test piles events up behind it.
#[derive(Clone, Default)]
struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Gate {
    fn set_closed(&self, closed: bool) {
        *self.0.0.lock().unwrap() = closed;
        self.0.1.notify_all();
    }

    fn pass(&self) {
        let (closed, changed) = &*self.0;
        let guard = closed.lock().unwrap();
        drop(changed.wait_while(guard, |closed| *closed).unwrap());
    }
}

/// inotify watches in use by all visible processes (the limit is per user;
/// tests run as root, like most of what else runs here).
fn watches_in_use() -> u64 {
    let mut total = 0;
    for proc_dir in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(fds) = fs::read_dir(proc_dir.path().join("fdinfo")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(text) = fs::read_to_string(fd.path()) {
                total += text
                    .lines()
                    .filter(|l| l.starts_with("inotify wd:"))
                    .count() as u64;
            }
        }
    }
    total
}

#[test]
fn inotify_limit_overflow_reestablishes_watches_and_says_so() {
    let gate = Gate::default();
    let config = WatchConfig {
        ignore: Arc::new({
            let gate = gate.clone();
            move |_: &Path| {
                gate.pass();
                false
            }
        }),
        ..WatchConfig::default()
    };
    let rig = {
        // The queue size is fixed when the inotify instance is made, so the
        // lowered value is only needed around the start.
        let _queue = Sysctl::set("/proc/sys/fs/inotify/max_queued_events", 16);
        Rig::with(1, config, |root| {
            fs::create_dir(root.join("d")).unwrap();
        })
    };
    // Hold the thread at its first event so the queue surely fills.
    gate.set_closed(true);
    for i in 0..500 {
        fs::write(rig.path(format!("d/f{i}")), "x").unwrap();
    }
    gate.set_closed(false);
    rig.wait_for(Duration::from_secs(10), |m| {
        matches!(m, WatchMessage::Overflow)
    });
    // Still watching, everywhere.
    let _ = rig.messages();
    fs::write(rig.path("d/after"), "x").unwrap();
    assert_eq!(rig.changes(), vec![write("d/after")]);
    fs::create_dir(rig.path("d/new")).unwrap();
    fs::write(rig.path("d/new/inside"), "x").unwrap();
    assert_eq!(
        rig.changes(),
        vec![
            change("d/new", ChangeKind::DirCreate),
            write("d/new/inside")
        ]
    );
}

#[test]
fn inotify_limit_watches_reported_and_the_rest_keeps_working() {
    const DIRS: usize = 40;
    let prepare = |root: &Path| {
        for i in 0..DIRS {
            fs::create_dir_all(root.join(format!("d{i:02}"))).unwrap();
        }
    };
    let rig = {
        // Room for about half the tree. Restored right after the initial
        // walk: a low limit breaks every other inotify user meanwhile.
        let _watches = Sysctl::set(
            "/proc/sys/fs/inotify/max_user_watches",
            watches_in_use() + DIRS as u64 / 2,
        );
        Rig::with(1, WatchConfig::default(), prepare)
    };
    let messages = rig.wait_for(Duration::from_secs(5), |m| {
        matches!(m, WatchMessage::WatchLimit { .. })
    });
    let Some(message @ WatchMessage::WatchLimit { branch, path }) = messages.last() else {
        unreachable!()
    };
    assert_eq!(*branch, 0);
    assert!(path.starts_with(rig.root()), "{path:?}");
    assert!(
        message.to_string().contains("fs.inotify.max_user_watches"),
        "{message}"
    );
    // Once per branch, however many directories hit the limit.
    let again = rig.messages();
    assert!(
        !again
            .iter()
            .any(|m| matches!(m, WatchMessage::WatchLimit { .. })),
        "{again:?}"
    );
    let watched = rig.watcher().watch_count();
    assert!(watched > 0 && watched < DIRS + 1, "{watched} watches");
    // The root is watched (it came first): the watcher keeps running.
    fs::write(rig.path("top"), "x").unwrap();
    assert_eq!(rig.changes(), vec![write("top")]);
}
