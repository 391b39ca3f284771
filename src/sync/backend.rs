//! What the engine must know of a remote's backend beyond the RC calls:
//! whether it writes an upload in place, where a killed upload leaves a
//! torn file under the real name, whether a hash check costs a read, and
//! whether its listings hide names that start with a dot.

use crate::rclone::{ListOptions, Location, Rclone, RcloneError};
use crate::sync::lease::LEASE_FILE;

/// Backends that write an upload into the destination file as the bytes
/// arrive. Object stores (S3, B2, Drive, OneDrive, Dropbox …) make an
/// object visible only once it is whole.
const WRITES_IN_PLACE: &[&str] = &["local", "sftp", "ftp", "webdav", "smb", "hdfs"];

/// Backends that store their files in another remote, named by their
/// `remote` option.
const WRAPPERS: &[&str] = &["alias", "crypt", "chunker", "compress", "hasher", "cache"];

/// Whether an upload to `remote` (`<name>:<path>`, or a connection string
/// `:<type>,…:<path>`) must go under a temporary name first. Unknown (the
/// config cannot be read) counts as in place: the temporary name costs
/// one rename, a torn file costs data.
pub fn writes_in_place(rclone: Rclone, remote: &str) -> bool {
    backend_type(rclone, remote).is_none_or(|kind| WRITES_IN_PLACE.contains(&kind.as_str()))
}

/// Whether checking a hash after a transfer to or from `remote` costs
/// another read of the file. The backends that write in place keep no hash
/// of their own: rclone computes one by reading the file again (local) or
/// running a command on the server (sftp's `md5sum`, in a new SSH
/// session), where an object store reports the hash it stores.
pub fn hash_check_costs_a_read(rclone: Rclone, remote: &str) -> bool {
    writes_in_place(rclone, remote)
}

/// The type of the backend that finally stores `remote`'s files,
/// following wrappers such as crypt and alias.
pub fn backend_type(rclone: Rclone, remote: &str) -> Option<String> {
    resolve(remote, |name| {
        let kind = rclone.remote_type(name).ok()?;
        let wrapped = if WRAPPERS.contains(&kind.as_str()) {
            rclone.wrapped_remote(name).ok()?
        } else {
            None
        };
        Some((kind, wrapped))
    })
}

/// [`backend_type`] with `lookup` giving a configured remote's type and,
/// for a wrapper, the remote it wraps.
fn resolve(
    remote: &str,
    lookup: impl Fn(&str) -> Option<(String, Option<String>)>,
) -> Option<String> {
    let mut remote = remote.to_owned();
    // A wrapper of a wrapper of …: a config loop must not loop here.
    for _ in 0..8 {
        if let Some(inline) = remote.strip_prefix(':') {
            // `:sftp,host=…:path`: the type is named inline.
            return inline.split([',', ':']).next().map(str::to_owned);
        }
        let Some((name, _)) = remote.split_once(':') else {
            // A wrapper whose `remote` is a plain path: the local disk.
            return Some("local".to_owned());
        };
        let (kind, wrapped) = lookup(name)?;
        if !WRAPPERS.contains(&kind.as_str()) {
            return Some(kind);
        }
        remote = wrapped?;
    }
    None
}

/// Whether listings of `remote` leave out names that start with a dot,
/// while the files are there: FTP servers do by default (vsftpd, proFTPD),
/// and rclone's ftp backend asks for them only with `force_list_hidden`.
/// Such a remote takes every upload and lists none of `.git`, `.config` or
/// `.bashrc` back, so a reconcile would send them forever and an import
/// would lose them. Told by msync's own `.msync` directory: missing from
/// the root's listing, yet listed when asked for by name. A remote without
/// one tells nothing (false).
pub fn hides_dot_names(rclone: Rclone, remote: &str) -> Result<bool, RcloneError> {
    let msync_dir = LEASE_FILE.split('/').next().unwrap_or(LEASE_FILE);
    let root = rclone.list(
        &Location::new(remote, ""),
        &ListOptions {
            dirs_only: true,
            ..ListOptions::default()
        },
    )?;
    if root.iter().any(|entry| entry.name == msync_dir) {
        return Ok(false);
    }
    let inside = rclone.list(&Location::new(remote, msync_dir), &ListOptions::default());
    Ok(inside.is_ok_and(|entries| !entries.is_empty()))
}

/// Why msync refuses a remote that [`hides_dot_names`], and what to do.
pub fn hidden_dot_names_refusal(remote: &str) -> String {
    format!(
        "{remote} lists no names that start with a dot (its .msync directory is there but not listed), so msync could not tell what it holds nor restore .git or .config from it: set force_list_hidden = true in the remote's rclone config (FTP), or have the server list them (vsftpd: force_dot_files=YES)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(name: &str) -> Option<(String, Option<String>)> {
        let (kind, wrapped) = match name {
            "vault" => ("crypt", Some("box:secret")),
            "box" => ("sftp", None),
            "photos" => ("alias", Some("/srv/photos")),
            "loop" => ("alias", Some("loop:x")),
            "bucket" => ("s3", None),
            _ => return None,
        };
        Some((kind.to_owned(), wrapped.map(str::to_owned)))
    }

    #[test]
    fn the_backend_under_wrappers_and_inline_remotes_is_found() {
        for (remote, want) in [
            ("vault:msync", Some("sftp")),
            ("photos:msync", Some("local")),
            ("bucket:msync", Some("s3")),
            (":s3,provider=AWS:bucket/x", Some("s3")),
            (":local:/tmp", Some("local")),
            ("loop:msync", None),
            ("unknown:msync", None),
        ] {
            assert_eq!(resolve(remote, config).as_deref(), want, "{remote}");
        }
    }
}
