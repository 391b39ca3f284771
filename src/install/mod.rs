//! An msync install dir: its manifest (`msync.json`) and its layout.
//!
//! ```text
//! <install dir>/msync.json          the manifest (0600)
//! <install dir>/branches/<remote>/  one branch directory per remote
//! <install dir>/run/                pid file and control socket (0700)
//! <install dir>/state/              msync's working files (0700)
//! <install dir>/msync.log           the service's log (0600)
//! ```
//!
//! This module reads and writes that layout; it never talks to rclone.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub const MANIFEST_FILE: &str = "msync.json";
/// The file msync puts in every branch directory at install. A branch
/// without it (its disk not mounted, the directory replaced) is never
/// synced: an empty directory must not pass for an emptied branch.
pub const MARKER_FILE: &str = ".msync-branch";
/// The manifest format this msync writes. Older formats are read and
/// migrated in place: format 1 had one `imported` flag for the whole
/// install and no branch identities; format 2 had no quotas and no retired
/// branches; format 3 had no notify command.
const FORMAT: u32 = 4;

/// Why an install dir cannot be used.
#[derive(Debug, Error)]
pub enum InstallError {
    #[error("{} is not an msync install dir (no {MANIFEST_FILE}); create one with `msync install {}`", .dir.display(), .dir.display())]
    NotInstalled { dir: PathBuf },

    #[error("the manifest {} is broken ({reason}); restore it from a backup, or reinstall into a new directory and run `msync import`", .path.display())]
    Corrupt { path: PathBuf, reason: String },

    #[error("{} is not empty and is not an msync install dir; choose an empty or new directory", .dir.display())]
    NotEmpty { dir: PathBuf },

    // The io::Error is in the message, not the error chain: `main` prints
    // the chain, which would repeat it.
    #[error("cannot read {} ({error}); msync must run as root (sudo msync …)", .path.display())]
    Unreadable {
        path: PathBuf,
        error: std::io::Error,
    },

    #[error("{}: {error}", .path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> InstallError + '_ {
    move |error| InstallError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// One remote and its local branch.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Branch {
    /// The rclone remote's name, without the colon.
    pub name: String,
    /// The local branch directory.
    pub dir: PathBuf,
    /// Where the branch is replicated: `<remote>:<remote path>`.
    pub remote: String,
    /// Whether `msync import` has completed for this branch. A remote added
    /// to an imported install is not, until the next import.
    #[serde(default)]
    pub imported: bool,
    /// The branch directory's device and inode as msync made it: proves
    /// that a directory whose marker was deleted is still this install's
    /// own, so the marker can be put back (see [`MARKER_FILE`]).
    #[serde(default)]
    pub identity: Option<DirIdentity>,
    /// The most msync may store on the remote, in bytes (`install --quota`):
    /// for a backend that cannot tell its size, or to leave room for other
    /// uses of the account.
    #[serde(default)]
    pub quota: Option<u64>,
    /// Emptied by `balance --evacuate`: takes no new files.
    #[serde(default)]
    pub retired: bool,
}

/// A directory's device and inode.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct DirIdentity {
    pub dev: u64,
    pub ino: u64,
}

impl DirIdentity {
    /// The identity of the directory at `path` (not following a link).
    pub fn of(path: &Path) -> Option<DirIdentity> {
        let meta = fs::symlink_metadata(path).ok()?;
        meta.is_dir().then(|| DirIdentity {
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }
}

/// What `msync install` records.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    pub format: u32,
    /// Tells this installation apart from others using the same remotes.
    pub install_id: String,
    /// The rclone config file the remotes are defined in.
    pub rclone_config: PathBuf,
    /// msync's directory on each remote.
    pub remote_path: String,
    pub branches: Vec<Branch>,
    /// The command `start --notify-command` recorded: later starts run it
    /// too, until `--notify-command ''` clears it.
    #[serde(default)]
    pub notify_command: Option<String>,
}

impl Manifest {
    /// Whether `msync import` has completed for every branch.
    pub fn imported(&self) -> bool {
        self.branches.iter().all(|b| b.imported)
    }
}

/// An opened install dir.
#[derive(Debug, Clone)]
pub struct InstallDir {
    root: PathBuf,
    pub manifest: Manifest,
}

impl InstallDir {
    /// Opens an existing install dir.
    pub fn open(dir: &Path) -> Result<InstallDir, InstallError> {
        let missing = |err: std::io::Error, path: &Path| match err.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory => {
                InstallError::NotInstalled {
                    dir: dir.to_path_buf(),
                }
            }
            // Not "no install here": most often msync was not run as root.
            _ => InstallError::Unreadable {
                path: path.to_path_buf(),
                error: err,
            },
        };
        let root = dir.canonicalize().map_err(|err| missing(err, dir))?;
        let path = root.join(MANIFEST_FILE);
        let meta = fs::symlink_metadata(&path).map_err(|err| missing(err, &path))?;
        if meta.file_type().is_symlink() {
            return Err(InstallError::Corrupt {
                path,
                reason: "it is a symlink, which msync does not follow; put the file itself there"
                    .into(),
            });
        }
        if !meta.is_file() {
            return Err(InstallError::Corrupt {
                path,
                reason: "it is not a regular file".into(),
            });
        }
        let text = fs::read_to_string(&path).map_err(io_error(&path))?;
        let corrupt = |reason: String| InstallError::Corrupt {
            path: path.clone(),
            reason,
        };
        let mut value: serde_json::Value =
            serde_json::from_str(&text).map_err(|err| corrupt(err.to_string()))?;
        let format = value["format"].as_u64().unwrap_or(0);
        let migrated = match format {
            1 => {
                migrate_from_1(&mut value);
                migrate_from_2(&mut value);
                migrate_from_3(&mut value);
                true
            }
            2 => {
                migrate_from_2(&mut value);
                migrate_from_3(&mut value);
                true
            }
            3 => {
                migrate_from_3(&mut value);
                true
            }
            f if f == u64::from(FORMAT) => false,
            f => {
                return Err(corrupt(format!(
                    "format {f} is not a format this msync reads (1 to {FORMAT}); a newer msync wrote it"
                )));
            }
        };
        let manifest: Manifest =
            serde_json::from_value(value).map_err(|err| corrupt(err.to_string()))?;
        let install = InstallDir { root, manifest };
        if migrated {
            install.save()?;
        }
        Ok(install)
    }

    /// Opens `dir` if it is an install dir, creates it if it is missing or
    /// empty, and refuses anything else.
    pub fn open_or_create(
        dir: &Path,
        rclone_config: &Path,
        remote_path: &str,
    ) -> Result<InstallDir, InstallError> {
        // symlink_metadata: a manifest that is a symlink, even a dangling
        // one, is refused by `open` with a message that says so.
        if fs::symlink_metadata(dir.join(MANIFEST_FILE)).is_ok() {
            return InstallDir::open(dir);
        }
        if dir.exists() {
            let mut entries = fs::read_dir(dir).map_err(io_error(dir))?;
            if entries.next().is_some() {
                return Err(InstallError::NotEmpty {
                    dir: dir.to_path_buf(),
                });
            }
        }
        private_dir(dir)?;
        let root = dir.canonicalize().map_err(io_error(dir))?;
        Ok(InstallDir {
            root,
            manifest: Manifest {
                format: FORMAT,
                install_id: new_install_id(),
                rclone_config: rclone_config.to_path_buf(),
                remote_path: remote_path.to_owned(),
                branches: Vec::new(),
                notify_command: None,
            },
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The branch directory msync gives remote `name`.
    pub fn branch_dir(&self, name: &str) -> PathBuf {
        self.root.join("branches").join(name)
    }

    pub fn run_dir(&self) -> PathBuf {
        self.root.join("run")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.root.join("state")
    }

    pub fn pid_file(&self) -> PathBuf {
        self.run_dir().join("msync.pid")
    }

    pub fn socket_path(&self) -> PathBuf {
        self.run_dir().join("msync.sock")
    }

    pub fn log_file(&self) -> PathBuf {
        self.root.join("msync.log")
    }

    /// Adds a branch for remote `name` unless it has one; returns whether it
    /// was added. A new branch directory gets its marker; an existing
    /// branch whose directory vanished is recreated *without* one, so the
    /// service refuses to sync it until someone looks (see [`MARKER_FILE`]).
    pub fn add_branch(&mut self, name: &str) -> Result<bool, InstallError> {
        let dir = self.branch_dir(name);
        private_dir(&self.root.join("branches"))?;
        let existed = dir.exists();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&dir)
            .map_err(io_error(&dir))?;
        if self.manifest.branches.iter().any(|b| b.name == name) {
            return Ok(false);
        }
        if !existed {
            self.write_marker(name, &dir)?;
        }
        let remote = format!("{name}:{}", self.manifest.remote_path);
        // Only a directory msync made itself is vouched for.
        let identity = if existed { None } else { DirIdentity::of(&dir) };
        self.manifest.branches.push(Branch {
            name: name.to_owned(),
            dir,
            remote,
            imported: false,
            identity,
            quota: None,
            retired: false,
        });
        Ok(true)
    }

    fn write_marker(&self, name: &str, dir: &Path) -> Result<(), InstallError> {
        let path = dir.join(MARKER_FILE);
        fs::write(&path, self.marker_text(name)).map_err(io_error(&path))
    }

    /// What the marker of branch `name` holds: it ties the directory to this
    /// install, so a replaced directory does not pass for the branch.
    pub fn marker_text(&self, name: &str) -> String {
        marker_text(name, &self.manifest.install_id)
    }

    /// Creates the private directories the service uses.
    pub fn create_private_dirs(&self) -> Result<(), InstallError> {
        private_dir(&self.run_dir())?;
        private_dir(&self.state_dir())
    }

    /// Writes the manifest atomically (temporary file, then rename), 0600.
    pub fn save(&self) -> Result<(), InstallError> {
        let path = self.root.join(MANIFEST_FILE);
        let temporary = self.root.join(format!(".{MANIFEST_FILE}.tmp"));
        let text = serde_json::to_string_pretty(&self.manifest).expect("a manifest always encodes");
        let _ = fs::remove_file(&temporary);
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary)
            .map_err(io_error(&temporary))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.write_all(b"\n"))
            .and_then(|()| file.sync_all())
            .map_err(io_error(&temporary))?;
        fs::rename(&temporary, &path).map_err(io_error(&path))
    }
}

/// The marker text of branch `name` of install `install_id`.
pub fn marker_text(name: &str, install_id: &str) -> String {
    format!("msync branch {name} of install {install_id}\n")
}

/// Turns a format 1 manifest into format 2: each branch takes the install's
/// `imported` flag, and a branch whose marker is in place is vouched for by
/// its directory's identity now.
fn migrate_from_1(value: &mut serde_json::Value) {
    let imported = value["imported"].as_bool().unwrap_or(false);
    let install_id = value["install_id"].as_str().unwrap_or_default().to_owned();
    if let Some(branches) = value["branches"].as_array_mut() {
        for branch in branches {
            let name = branch["name"].as_str().unwrap_or_default().to_owned();
            let dir = PathBuf::from(branch["dir"].as_str().unwrap_or_default());
            let marker = marker_text(&name, &install_id);
            let vouched = fs::read_to_string(dir.join(MARKER_FILE)).is_ok_and(|t| t == marker);
            let identity = vouched.then(|| DirIdentity::of(&dir)).flatten();
            branch["imported"] = serde_json::json!(imported);
            branch["identity"] = serde_json::to_value(identity).unwrap_or_default();
        }
    }
    if let Some(object) = value.as_object_mut() {
        object.remove("imported");
        object.insert("format".into(), serde_json::json!(2));
    }
}

/// Turns a format 2 manifest into format 3: no branch has a quota or is
/// retired.
fn migrate_from_2(value: &mut serde_json::Value) {
    if let Some(branches) = value["branches"].as_array_mut() {
        for branch in branches {
            branch["quota"] = serde_json::Value::Null;
            branch["retired"] = serde_json::json!(false);
        }
    }
    value["format"] = serde_json::json!(3);
}

/// Turns a format 3 manifest into format 4: no notify command recorded.
fn migrate_from_3(value: &mut serde_json::Value) {
    value["notify_command"] = serde_json::Value::Null;
    value["format"] = serde_json::json!(4);
}

/// Creates `dir` (and parents) and makes it 0700; refuses a symlink.
pub fn private_dir(dir: &Path) -> Result<(), InstallError> {
    if let Ok(meta) = fs::symlink_metadata(dir)
        && meta.file_type().is_symlink()
    {
        return Err(InstallError::Io {
            path: dir.to_path_buf(),
            error: std::io::Error::other("is a symlink; msync does not follow links here"),
        });
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_error(dir))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_error(dir))
}

/// The error for a symlink met with `O_NOFOLLOW` (ELOOP), said plainly;
/// any other error unchanged.
pub fn link_refused(path: &Path, err: std::io::Error) -> std::io::Error {
    if err.raw_os_error() == Some(nix::libc::ELOOP) {
        std::io::Error::other(format!(
            "{} is a symlink, which msync does not follow there; remove it",
            path.display()
        ))
    } else {
        err
    }
}

/// Opens one of msync's own files (log, pid file, working files) with
/// `options`, which say how (read, write, append, truncate): created 0600,
/// never through a symlink planted in its place, never blocking on a FIFO
/// there, only a regular file, and made 0600 if it was left readable.
pub fn open_private(path: &Path, options: &mut fs::OpenOptions) -> std::io::Result<fs::File> {
    let file = options
        .create(true)
        .mode(0o600)
        // O_NONBLOCK changes nothing for a regular file.
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
        .map_err(|err| link_refused(path, err))?;
    private_file(path, &file)?;
    Ok(file)
}

/// Writes one of msync's working files (see [`open_private`]).
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    open_private(path, fs::OpenOptions::new().write(true).truncate(true))?.write_all(contents)
}

/// Insists that an opened file of msync's own is a regular
/// file, and makes it 0600 if an older msync or a user left it readable by
/// others.
pub fn private_file(path: &Path, file: &fs::File) -> std::io::Result<()> {
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other(format!(
            "{} is not a regular file; remove it",
            path.display()
        )));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

fn new_install_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/uuid")
        .map(|id| id.trim().to_owned())
        .unwrap_or_else(|_| format!("{}-{}", std::process::id(), unix_time()))
}

fn unix_time() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_add_save_open() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("inst");
        let mut install =
            InstallDir::open_or_create(&dir, Path::new("/etc/rclone.conf"), "msync").unwrap();
        assert!(install.add_branch("alpha").unwrap());
        assert!(!install.add_branch("alpha").unwrap());
        install.save().unwrap();
        let mode = fs::metadata(dir.join(MANIFEST_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let reopened = InstallDir::open(&dir).unwrap();
        assert_eq!(reopened.manifest, install.manifest);
        assert_eq!(reopened.manifest.branches[0].remote, "alpha:msync");
        assert!(dir.join("branches/alpha").is_dir());
        assert_eq!(
            fs::read_to_string(dir.join("branches/alpha").join(MARKER_FILE)).unwrap(),
            reopened.marker_text("alpha")
        );
    }

    #[test]
    fn refuses_a_non_empty_foreign_dir() {
        let temp = tempfile::tempdir().unwrap();
        fs::write(temp.path().join("precious.txt"), "x").unwrap();
        let err =
            InstallDir::open_or_create(temp.path(), Path::new("/r.conf"), "msync").unwrap_err();
        assert!(matches!(err, InstallError::NotEmpty { .. }), "{err}");
        assert_eq!(fs::read_dir(temp.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_symlinked_manifest_is_refused_as_such() {
        let temp = tempfile::tempdir().unwrap();
        let victim = temp.path().join("victim.json");
        fs::write(&victim, "{}").unwrap();
        let dir = temp.path().join("inst");
        fs::create_dir(&dir).unwrap();
        std::os::unix::fs::symlink(&victim, dir.join(MANIFEST_FILE)).unwrap();
        for err in [
            InstallDir::open(&dir).unwrap_err(),
            InstallDir::open_or_create(&dir, Path::new("/r.conf"), "msync").unwrap_err(),
        ] {
            assert!(err.to_string().contains("it is a symlink"), "{err}");
        }
        assert_eq!(fs::read_to_string(&victim).unwrap(), "{}");
    }

    #[test]
    fn a_broken_manifest_is_named() {
        let temp = tempfile::tempdir().unwrap();
        fs::write(temp.path().join(MANIFEST_FILE), "{ not json").unwrap();
        let err = InstallDir::open(temp.path()).unwrap_err();
        assert!(matches!(err, InstallError::Corrupt { .. }), "{err}");
        let err = InstallDir::open(&temp.path().join("missing")).unwrap_err();
        assert!(matches!(err, InstallError::NotInstalled { .. }), "{err}");
    }

    #[test]
    fn a_format_1_manifest_is_migrated_in_place() {
        let temp = tempfile::tempdir().unwrap();
        let root = temp.path().canonicalize().unwrap();
        let (kept, lost) = (root.join("branches/a"), root.join("branches/b"));
        fs::create_dir_all(&kept).unwrap();
        fs::create_dir_all(&lost).unwrap();
        fs::write(kept.join(MARKER_FILE), marker_text("a", "id-1")).unwrap();
        // As msync 0.1 wrote it: one flag for the whole install.
        let old = serde_json::json!({
            "format": 1,
            "install_id": "id-1",
            "rclone_config": "/etc/rclone.conf",
            "remote_path": "msync",
            "branches": [
                {"name": "a", "dir": kept, "remote": "a:msync"},
                {"name": "b", "dir": lost, "remote": "b:msync"},
            ],
            "imported": true,
        });
        fs::write(root.join(MANIFEST_FILE), old.to_string()).unwrap();

        let install = InstallDir::open(&root).unwrap();
        assert!(install.manifest.imported());
        let [a, b] = &install.manifest.branches[..] else {
            panic!("two branches expected");
        };
        assert_eq!(a.identity, DirIdentity::of(&kept));
        // No marker: nothing vouches for that directory.
        assert_eq!(b.identity, None);
        let saved: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(root.join(MANIFEST_FILE)).unwrap()).unwrap();
        assert_eq!(saved["format"], FORMAT);
        assert!(saved.get("imported").is_none());
        assert_eq!(InstallDir::open(&root).unwrap().manifest, install.manifest);
    }

    #[test]
    fn a_format_2_manifest_is_migrated_in_place() {
        let temp = tempfile::tempdir().unwrap();
        let root = temp.path().canonicalize().unwrap();
        let dir = root.join("branches/a");
        fs::create_dir_all(&dir).unwrap();
        // As msync wrote it before quotas.
        let old = serde_json::json!({
            "format": 2,
            "install_id": "id-2",
            "rclone_config": "/etc/rclone.conf",
            "remote_path": "msync",
            "branches": [
                {"name": "a", "dir": dir, "remote": "a:msync", "imported": true,
                 "identity": {"dev": 1, "ino": 2}},
            ],
        });
        fs::write(root.join(MANIFEST_FILE), old.to_string()).unwrap();

        let install = InstallDir::open(&root).unwrap();
        let a = &install.manifest.branches[0];
        assert!(a.imported);
        assert_eq!(a.identity, Some(DirIdentity { dev: 1, ino: 2 }));
        assert_eq!((a.quota, a.retired), (None, false));
        let saved: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(root.join(MANIFEST_FILE)).unwrap()).unwrap();
        assert_eq!(saved["format"], FORMAT);
        assert_eq!(saved["branches"][0]["retired"], false);
        assert_eq!(InstallDir::open(&root).unwrap().manifest, install.manifest);
    }

    #[test]
    fn a_format_3_manifest_is_migrated_in_place() {
        let temp = tempfile::tempdir().unwrap();
        let root = temp.path().canonicalize().unwrap();
        let dir = root.join("branches/a");
        fs::create_dir_all(&dir).unwrap();
        // As msync wrote it before notify commands.
        let old = serde_json::json!({
            "format": 3,
            "install_id": "id-3",
            "rclone_config": "/etc/rclone.conf",
            "remote_path": "msync",
            "branches": [
                {"name": "a", "dir": dir, "remote": "a:msync", "imported": true,
                 "identity": {"dev": 1, "ino": 2}, "quota": 1000, "retired": false},
            ],
        });
        fs::write(root.join(MANIFEST_FILE), old.to_string()).unwrap();

        let install = InstallDir::open(&root).unwrap();
        assert_eq!(install.manifest.notify_command, None);
        assert_eq!(install.manifest.branches[0].quota, Some(1000));
        let saved: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(root.join(MANIFEST_FILE)).unwrap()).unwrap();
        assert_eq!(saved["format"], 4);
        assert!(saved["notify_command"].is_null());
        assert_eq!(InstallDir::open(&root).unwrap().manifest, install.manifest);
    }

    #[test]
    fn a_manifest_from_a_newer_msync_is_refused() {
        let temp = tempfile::tempdir().unwrap();
        fs::write(temp.path().join(MANIFEST_FILE), r#"{"format": 9}"#).unwrap();
        let err = InstallDir::open(temp.path()).unwrap_err();
        assert!(err.to_string().contains("a newer msync wrote it"), "{err}");
    }

    #[test]
    fn a_branch_added_later_is_not_imported() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("inst");
        let mut install =
            InstallDir::open_or_create(&dir, Path::new("/etc/rclone.conf"), "msync").unwrap();
        install.add_branch("a").unwrap();
        install.manifest.branches[0].imported = true;
        install.add_branch("b").unwrap();
        assert!(!install.manifest.imported());
        assert!(!install.manifest.branches[1].imported);
        assert!(install.manifest.branches[1].identity.is_some());
    }
}
