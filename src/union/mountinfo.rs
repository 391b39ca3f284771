//! Reading `/proc/self/mountinfo`: what, if anything, is mounted at a path.
//! Parsing and path resolution only; this module never mounts, unmounts or
//! touches the filesystem behind a mount point (a dead FUSE mount answers
//! every access with ENOTCONN, so nothing here may stat the mount point).

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

/// The fields of one mountinfo line that msync needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MountEntry {
    pub mount_point: PathBuf,
    pub fstype: String,
    pub source: String,
}

/// Parses mountinfo text (proc(5)):
/// `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw`.
/// Field 5 is the mount point; a variable number of optional fields follow
/// the options, so fstype and source are found after the lone `-`.
/// Malformed lines are skipped rather than failing the whole table.
pub(crate) fn parse(text: &[u8]) -> Vec<MountEntry> {
    text.split(|&b| b == b'\n').filter_map(parse_line).collect()
}

fn parse_line(line: &[u8]) -> Option<MountEntry> {
    let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    let mount_point = fields.get(4)?;
    let separator = fields.iter().skip(6).position(|f| *f == b"-")? + 6;
    let fstype = fields.get(separator + 1)?;
    let source = fields.get(separator + 2)?;
    Some(MountEntry {
        mount_point: PathBuf::from(OsString::from_vec(unescape(mount_point))),
        fstype: String::from_utf8_lossy(&unescape(fstype)).into_owned(),
        source: String::from_utf8_lossy(&unescape(source)).into_owned(),
    })
}

/// Undoes the kernel's octal escapes (`\040` space, `\011` tab, `\012`
/// newline, `\134` backslash); anything else is kept as it is.
fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let octal = field
            .get(i + 1..i + 4)
            .filter(|digits| field[i] == b'\\' && digits.iter().all(|d| (b'0'..=b'7').contains(d)));
        match octal {
            Some(digits) => {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                out.push(value as u8);
                i += 4;
            }
            None => {
                out.push(field[i]);
                i += 1;
            }
        }
    }
    out
}

/// The mount table of this process; empty if /proc is not readable, which
/// reads as "nothing mounted".
pub(crate) fn read() -> Vec<MountEntry> {
    std::fs::read("/proc/self/mountinfo")
        .map(|text| parse(&text))
        .unwrap_or_default()
}

/// The path as mountinfo spells it: absolute, symlinks resolved. When the
/// path itself cannot be resolved (a dead FUSE mount says ENOTCONN) only
/// its parent is, which never enters the mount.
pub(crate) fn resolve(path: &Path) -> PathBuf {
    if let Ok(canonical) = path.canonicalize() {
        return canonical;
    }
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    match (absolute.parent(), absolute.file_name()) {
        (Some(parent), Some(name)) => parent
            .canonicalize()
            .map(|parent| parent.join(name))
            .unwrap_or(absolute),
        _ => absolute,
    }
}

/// The fstype of the topmost mount at `target` (a resolved path): later
/// lines of mountinfo are mounted on top of earlier ones.
pub(crate) fn fstype_at(entries: &[MountEntry], target: &Path) -> Option<String> {
    entries
        .iter()
        .rev()
        .find(|entry| entry.mount_point == target)
        .map(|entry| entry.fstype.clone())
}

/// How many mounts are stacked at `target` (a resolved path).
pub(crate) fn count_at(entries: &[MountEntry], target: &Path) -> usize {
    entries
        .iter()
        .filter(|entry| entry.mount_point == target)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &[u8] = b"\
22 1 252:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
36 22 0:31 / /tmp/my\\040union rw,nosuid,nodev shared:20 master:3 - fuse.mergerfs msync rw,user_id=0
37 22 0:32 / /srv/tab\\011and\\134slash rw - aufs msync rw,br:/a=rw
38 36 0:33 / /tmp/my\\040union rw - tmpfs tmpfs rw
not a mountinfo line
";

    #[test]
    fn parses_fields_around_the_optional_ones() {
        let entries = parse(SAMPLE);
        assert_eq!(entries.len(), 4);
        assert_eq!(
            entries[1],
            MountEntry {
                mount_point: PathBuf::from("/tmp/my union"),
                fstype: "fuse.mergerfs".into(),
                source: "msync".into(),
            }
        );
        assert_eq!(entries[2].mount_point, Path::new("/srv/tab\tand\\slash"));
        assert_eq!(entries[2].fstype, "aufs");
    }

    #[test]
    fn the_topmost_mount_wins() {
        let entries = parse(SAMPLE);
        let target = Path::new("/tmp/my union");
        assert_eq!(fstype_at(&entries, target).as_deref(), Some("tmpfs"));
        assert_eq!(count_at(&entries, target), 2);
        assert_eq!(fstype_at(&entries, Path::new("/tmp/my")), None);
        assert_eq!(count_at(&entries, Path::new("/nowhere")), 0);
    }

    #[test]
    fn unescape_keeps_what_is_not_an_octal_escape() {
        assert_eq!(unescape(b"a\\040b"), b"a b");
        assert_eq!(unescape(b"a\\04"), b"a\\04");
        assert_eq!(unescape(b"a\\999b"), b"a\\999b");
        assert_eq!(unescape(b"\\012"), b"\n");
        assert_eq!(unescape(b"trailing\\"), b"trailing\\");
    }

    #[test]
    fn the_real_table_lists_the_root() {
        let entries = read();
        assert!(fstype_at(&entries, Path::new("/")).is_some());
    }

    #[test]
    fn resolve_falls_back_to_the_parent() {
        let dir = tempfile::tempdir().unwrap();
        let canonical_dir = dir.path().canonicalize().unwrap();
        assert_eq!(resolve(dir.path()), canonical_dir);
        assert_eq!(
            resolve(&dir.path().join("missing")),
            canonical_dir.join("missing")
        );
    }
}
