//! One path's metadata as the index keeps it, and how it is read from the
//! local tree: `lstat` only, so a symlink is described, never followed,
//! and no file is opened.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::unistd::{Gid, Group, Uid, User};
use serde::{Deserialize, Serialize};

/// What a path is. Other kinds (FIFOs, sockets, devices) are never sent
/// and not recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Kind {
    #[serde(rename = "f")]
    File,
    #[serde(rename = "d")]
    Dir,
    #[serde(rename = "l")]
    Link,
}

/// One path's metadata: one line of the index.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// The path relative to the branch (and to the remote directory).
    #[serde(rename = "p")]
    pub path: String,
    #[serde(rename = "t")]
    pub kind: Kind,
    /// Permission bits with setuid, setgid and sticky, in octal ("0755").
    #[serde(with = "octal")]
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// The owner's and group's names where they resolved when recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// A regular file's size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// For a regular file with more than one name: `"<device>:<inode>"`,
    /// the same for every name of the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardlink: Option<String>,
    /// The file has holes (it is uploaded and downloaded at its full size;
    /// a restore makes its runs of zeros holes again).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sparse: bool,
}

/// A line of a journal: a path's metadata now, or a path gone (with
/// everything below it when `tree`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Record {
    Gone {
        #[serde(rename = "p")]
        path: String,
        gone: bool,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        tree: bool,
    },
    Put(Entry),
}

impl Record {
    pub fn gone(path: &str, tree: bool) -> Record {
        Record::Gone {
            path: path.to_owned(),
            gone: true,
            tree,
        }
    }

    pub fn path(&self) -> &str {
        match self {
            Record::Gone { path, .. } => path,
            Record::Put(entry) => &entry.path,
        }
    }
}

/// A file is sparse when at least this much of it has no blocks.
const HOLE_MIN: u64 = 64 * 1024;

impl Entry {
    /// Reads the metadata of `root/relative` without following a link.
    /// `Ok(None)`: nothing there, or a kind the index does not record.
    pub fn capture(
        root: &Path,
        relative: &str,
        names: &mut Names,
    ) -> std::io::Result<Option<Entry>> {
        let meta = match std::fs::symlink_metadata(root.join(relative)) {
            Ok(meta) => meta,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(err),
        };
        Ok(Entry::from_metadata(relative, &meta, names))
    }

    pub fn from_metadata(
        relative: &str,
        meta: &std::fs::Metadata,
        names: &mut Names,
    ) -> Option<Entry> {
        let kind = meta.file_type();
        let kind = if kind.is_file() {
            Kind::File
        } else if kind.is_dir() {
            Kind::Dir
        } else if kind.is_symlink() {
            Kind::Link
        } else {
            return None;
        };
        let file = kind == Kind::File;
        Some(Entry {
            path: relative.to_owned(),
            kind,
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            user: names.user(meta.uid()),
            group: names.group(meta.gid()),
            mtime_ns: meta.mtime().saturating_mul(1_000_000_000) + meta.mtime_nsec(),
            size: file.then_some(meta.len()),
            hardlink: (file && meta.nlink() > 1).then(|| format!("{}:{}", meta.dev(), meta.ino())),
            sparse: file && is_sparse(meta),
        })
    }

    /// A digest of everything the entry says, to tell whether the index
    /// already holds it (kept in memory instead of the entry itself).
    pub fn digest(&self) -> u64 {
        let mut hasher = DefaultHasher::new();
        self.hash(&mut hasher);
        hasher.finish()
    }
}

/// Whether a regular file has holes (at least [`HOLE_MIN`] without blocks).
pub fn is_sparse(meta: &std::fs::Metadata) -> bool {
    let allocated = meta.blocks().saturating_mul(512);
    meta.len() >= allocated.saturating_add(HOLE_MIN)
}

/// A digest of a path, the key of what the index holds.
pub fn path_digest(path: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    path.hash(&mut hasher);
    hasher.finish()
}

/// User and group names by id, looked up once each: a lookup may read
/// `/etc/passwd` or ask a directory service.
#[derive(Debug, Default)]
pub struct Names {
    users: HashMap<u32, Option<String>>,
    groups: HashMap<u32, Option<String>>,
}

impl Names {
    pub fn user(&mut self, uid: u32) -> Option<String> {
        self.users
            .entry(uid)
            .or_insert_with(|| {
                User::from_uid(Uid::from_raw(uid))
                    .ok()
                    .flatten()
                    .map(|u| u.name)
            })
            .clone()
    }

    pub fn group(&mut self, gid: u32) -> Option<String> {
        self.groups
            .entry(gid)
            .or_insert_with(|| {
                Group::from_gid(Gid::from_raw(gid))
                    .ok()
                    .flatten()
                    .map(|g| g.name)
            })
            .clone()
    }
}

/// Modes as octal strings, as people read them.
mod octal {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(mode: &u32, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format!("{mode:04o}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
        let text = String::deserialize(deserializer)?;
        u32::from_str_radix(&text, 8)
            .ok()
            .filter(|mode| *mode <= 0o7777)
            .ok_or_else(|| D::Error::custom(format!("{text:?} is not an octal mode")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_one_readable_line_and_reads_back() {
        let entry = Entry {
            path: "bin/run me".into(),
            kind: Kind::File,
            mode: 0o4755,
            uid: 65534,
            gid: 0,
            user: Some("nobody".into()),
            group: None,
            mtime_ns: 1_000_000_000_123,
            size: Some(42),
            hardlink: Some("2049:77".into()),
            sparse: false,
        };
        let line = serde_json::to_string(&Record::Put(entry.clone())).unwrap();
        assert_eq!(
            line,
            r#"{"p":"bin/run me","t":"f","mode":"4755","uid":65534,"gid":0,"user":"nobody","mtime_ns":1000000000123,"size":42,"hardlink":"2049:77"}"#
        );
        assert_eq!(
            serde_json::from_str::<Record>(&line).unwrap(),
            Record::Put(entry)
        );
        let gone = serde_json::to_string(&Record::gone("old dir", true)).unwrap();
        assert_eq!(gone, r#"{"p":"old dir","gone":true,"tree":true}"#);
        assert_eq!(
            serde_json::from_str::<Record>(&gone).unwrap(),
            Record::gone("old dir", true)
        );
    }

    #[test]
    fn a_bad_mode_or_an_unknown_kind_is_refused() {
        for line in [
            r#"{"p":"a","t":"f","mode":"9999","uid":0,"gid":0,"mtime_ns":0}"#,
            r#"{"p":"a","t":"x","mode":"0644","uid":0,"gid":0,"mtime_ns":0}"#,
        ] {
            assert!(serde_json::from_str::<Record>(line).is_err(), "{line}");
        }
    }

    #[test]
    fn capture_describes_links_and_never_follows_them() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"x").unwrap();
        std::os::unix::fs::symlink("f", dir.path().join("l")).unwrap();
        std::fs::hard_link(dir.path().join("f"), dir.path().join("h")).unwrap();
        let mut names = Names::default();
        let link = Entry::capture(dir.path(), "l", &mut names)
            .unwrap()
            .unwrap();
        assert_eq!(
            (link.kind, link.size, link.hardlink.as_ref()),
            (Kind::Link, None, None)
        );
        let file = Entry::capture(dir.path(), "f", &mut names)
            .unwrap()
            .unwrap();
        let other = Entry::capture(dir.path(), "h", &mut names)
            .unwrap()
            .unwrap();
        assert_eq!(file.size, Some(1));
        assert!(file.hardlink.is_some());
        assert_eq!(file.hardlink, other.hardlink);
        assert!(
            Entry::capture(dir.path(), "none", &mut names)
                .unwrap()
                .is_none()
        );
    }
}
