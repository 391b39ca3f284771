//! msync's own files are root's alone: the manifest, the log, the pid file
//! and the control socket are 0600, the run and state dirs 0700, all owned
//! by root. A symlink planted in place of any of them is refused: the file
//! or directory it points at is left untouched, and nothing is mounted.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use super::bad_input::refused;
use super::snapshot::Snapshot;
use crate::pool::{Pool, write_file};

const FAILED: i32 = 1;
const NOT_INSTALLED: i32 = 4;

#[test]
fn msyncs_own_files_are_roots_alone() {
    let mut pool = Pool::local_clouds(1);
    pool.import();
    // Left readable by others (an older msync, a user's touch): the
    // service makes them private again.
    for leftover in ["msync.log", "run/msync.pid"] {
        let path = pool.install.join(leftover);
        std::fs::write(&path, "").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    pool.start();
    let expected = [
        ("", Kind::Dir, 0o700),
        ("msync.json", Kind::File, 0o600),
        ("msync.log", Kind::File, 0o600),
        ("run", Kind::Dir, 0o700),
        ("run/msync.pid", Kind::File, 0o600),
        ("run/msync.sock", Kind::Socket, 0o600),
        ("state", Kind::Dir, 0o700),
    ];
    let mut wrong = Vec::new();
    for (relative, kind, mode) in expected {
        let path = pool.install.join(relative);
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let found = Kind::of(&meta);
        if found != kind || meta.mode() & 0o7777 != mode || meta.uid() != 0 {
            wrong.push(format!(
                "{}: {found:?} {:o} owned by uid {}, expected a {kind:?} {mode:o} owned by root",
                path.display(),
                meta.mode() & 0o7777,
                meta.uid()
            ));
        }
    }
    assert!(wrong.is_empty(), "not private:\n{}", wrong.join("\n"));
    pool.stop();
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Kind {
    File,
    Dir,
    Socket,
    Other,
}

impl Kind {
    fn of(meta: &std::fs::Metadata) -> Kind {
        let kind = meta.file_type();
        if kind.is_file() {
            Kind::File
        } else if kind.is_dir() {
            Kind::Dir
        } else if kind.is_socket() {
            Kind::Socket
        } else {
            Kind::Other
        }
    }
}

/// One of msync's paths, with a symlink planted in its place.
struct Planted {
    /// Relative to the install dir.
    relative: &'static str,
    /// Whether the victim is a directory (else a file).
    dir: bool,
    /// The commands to try, each with its exit code.
    commands: &'static [(&'static str, i32)],
}

const PLANTED: &[Planted] = &[
    Planted {
        relative: "msync.json",
        dir: false,
        commands: &[
            ("install", NOT_INSTALLED),
            ("import", NOT_INSTALLED),
            ("start", NOT_INSTALLED),
        ],
    },
    Planted {
        relative: "run",
        dir: true,
        commands: &[
            ("install", NOT_INSTALLED),
            ("import", NOT_INSTALLED),
            ("start", NOT_INSTALLED),
        ],
    },
    Planted {
        relative: "state",
        dir: true,
        commands: &[
            ("install", NOT_INSTALLED),
            ("import", NOT_INSTALLED),
            ("start", NOT_INSTALLED),
        ],
    },
    Planted {
        relative: "msync.log",
        dir: false,
        commands: &[("start", FAILED)],
    },
    Planted {
        relative: "run/msync.pid",
        dir: false,
        commands: &[("start", FAILED)],
    },
    Planted {
        relative: "run/msync.sock",
        dir: false,
        commands: &[("start", FAILED)],
    },
];

#[test]
fn symlinks_planted_in_place_of_msyncs_files_are_refused() {
    let pool = Pool::local_clouds(1);
    let victims = Victims::new(&pool);
    for planted in PLANTED {
        check_planted(&pool, &victims, planted);
    }
}

fn check_planted(pool: &Pool, victims: &Victims, planted: &Planted) {
    let path = pool.install.join(planted.relative);
    let saved = take_away(&path);
    let victim = if planted.dir {
        &victims.dir
    } else {
        &victims.file
    };
    symlink(victim, &path).unwrap();
    let snapshot = Snapshot::of_pool(pool);
    let name = path.file_name().unwrap().to_str().unwrap();
    for (command, code) in planted.commands {
        let mut msync = pool.msync([command]);
        msync.arg(&pool.install);
        if *command == "start" {
            msync.arg(&pool.mount);
        }
        refused(
            msync,
            *code,
            &[name, "is a symlink", "msync does not follow"],
            &snapshot,
        );
        assert!(
            !msync::union::is_mounted(&pool.mount),
            "{command} mounted with {name} planted"
        );
    }
    std::fs::remove_file(&path).unwrap();
    saved.restore(&path);
}

/// A file and a directory that symlinks point at: they must stay as they
/// are.
/// Files a planted symlink points at, inside the sandbox so the pool's
/// snapshot covers them.
struct Victims {
    file: PathBuf,
    dir: PathBuf,
}

impl Victims {
    fn new(pool: &Pool) -> Victims {
        let root = pool.sandbox.path().join("victims");
        let file = root.join("victim.txt");
        let dir = root.join("victim dir");
        write_file(&file, 100, 7);
        write_file(&dir.join("inside.txt"), 100, 8);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        Victims { file, dir }
    }
}

/// What was at a path before a symlink took its place.
enum Saved {
    Nothing,
    File(Vec<u8>),
    Dir,
}

fn take_away(path: &Path) -> Saved {
    match std::fs::symlink_metadata(path) {
        Err(_) => Saved::Nothing,
        Ok(meta) if meta.is_dir() => {
            assert_eq!(
                std::fs::read_dir(path).unwrap().count(),
                0,
                "{} is not empty",
                path.display()
            );
            std::fs::remove_dir(path).unwrap();
            Saved::Dir
        }
        Ok(_) => {
            let bytes = std::fs::read(path).unwrap();
            std::fs::remove_file(path).unwrap();
            Saved::File(bytes)
        }
    }
}

impl Saved {
    fn restore(&self, path: &Path) {
        match self {
            Saved::Nothing => {}
            Saved::File(bytes) => std::fs::write(path, bytes).unwrap(),
            Saved::Dir => {
                std::fs::create_dir(path).unwrap();
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).unwrap();
            }
        }
    }
}
