//! Trash, not loss: whatever msync deletes or overwrites on a remote is
//! moved to `<remote dir>/.msync/trash/<UTC date>/<path>` instead (rclone's
//! backup-dir for overwrites, a server-side move for deletes), and trash
//! days older than the retention are purged by the service.
//!
//! Every version is kept: a trashed file's name carries the UTC time of day
//! it was replaced, before its extension (rclone's `--suffix` with
//! `--suffix-keep-extension`), so `report.pdf` replaced three times in a day
//! leaves `report~081502.117.pdf`, `report~093011.540.pdf` … side by side.
//! Restoring is plain rclone, e.g.
//! `rclone copyto gdrive:msync/.msync/trash/2026-11-24/report~093011.540.pdf gdrive:msync/report.pdf`.

use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use crate::rclone::{Call, ListOptions, Location, Rclone, RcloneError};

/// The trash, relative to a remote directory.
pub const TRASH_DIR: &str = ".msync/trash";

/// `YYYY-MM-DD` of `time`, in UTC.
pub fn day(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()[..10].to_owned()
}

/// The trash directory of today, relative to the remote directory.
pub fn today(now: SystemTime) -> String {
    format!("{TRASH_DIR}/{}", day(now))
}

/// The version suffix of something replaced at `now`: `~HHMMSS.mmm`, UTC.
pub fn suffix(now: SystemTime) -> String {
    let stamp = humantime::format_rfc3339_millis(now).to_string();
    // 2026-11-24T08:15:02.117Z
    format!(
        "~{}{}{}.{}",
        &stamp[11..13],
        &stamp[14..16],
        &stamp[17..19],
        &stamp[20..23]
    )
}

/// `name` with the version suffix of `now` before its extension, exactly as
/// rclone names a backup with `SuffixKeepExtension`.
pub fn versioned(name: &str, now: SystemTime) -> String {
    let base_len = match name.rfind(['.', '/']) {
        Some(dot) if name[dot..].starts_with('.') => dot,
        _ => name.len(),
    };
    format!("{}{}{}", &name[..base_len], suffix(now), &name[base_len..])
}

/// Where a file or directory at `name` replaced at `now` goes in the trash,
/// relative to the remote directory.
pub fn trashed(name: &str, now: SystemTime) -> String {
    format!("{}/{}", today(now), versioned(name, now))
}

/// Where a directory at `name` deleted at `now` goes in the trash, whole:
/// the suffix ends its name (rclone's keep-extension is for files).
pub fn trashed_dir(name: &str, now: SystemTime) -> String {
    format!("{}/{name}{}", today(now), suffix(now))
}

/// rclone `_config` that sends overwritten and deleted files of `remote`
/// (a `name:path` remote directory) to today's trash, each version under
/// its own name.
pub fn backup_config(remote: &str, now: SystemTime) -> Value {
    backup_config_below(remote, "", now)
}

/// [`backup_config`] for a transfer into `below`, a directory inside
/// `remote`: backups keep their path below the remote directory.
pub fn backup_config_below(remote: &str, below: &str, now: SystemTime) -> Value {
    let trash = format!("{remote}/{}", today(now));
    json!({
        "BackupDir": if below.is_empty() { trash } else { format!("{trash}/{below}") },
        "Suffix": suffix(now),
        "SuffixKeepExtension": true,
    })
}

/// Trash days younger than this never give way to make room, however
/// short of it a cloud is.
pub const GIVE_WAY_MIN_DAYS: u32 = 7;

/// The trash days of `remote`, oldest first (anything in the trash that is
/// not a date is left out, and alone).
pub fn days(rclone: Rclone, remote: &str) -> Result<Vec<String>, RcloneError> {
    let entries = rclone.list_if_present(
        &Location::new(remote, TRASH_DIR),
        &ListOptions {
            dirs_only: true,
            ..ListOptions::default()
        },
    )?;
    let mut days: Vec<String> = entries
        .into_iter()
        .map(|entry| entry.name)
        .filter(|name| {
            name.len() == 10 && humantime::parse_rfc3339(&format!("{name}T00:00:00Z")).is_ok()
        })
        .collect();
    days.sort();
    Ok(days)
}

fn purge_day(rclone: Rclone, remote: &str, day: &str) -> Result<(), RcloneError> {
    let path = format!("{TRASH_DIR}/{day}");
    Call::new("operations/purge", json!({"fs": remote, "remote": path})).run(rclone)?;
    Ok(())
}

/// The first day `days` days before `now`.
fn days_before(now: SystemTime, days: u32) -> String {
    day(now - Duration::from_secs(u64::from(days) * 86_400))
}

/// Purges the trash days of `remote` older than `keep_days`; returns the
/// days purged.
pub fn expire(
    rclone: Rclone,
    remote: &str,
    keep_days: u32,
    now: SystemTime,
) -> Result<Vec<String>, RcloneError> {
    let oldest_kept = days_before(now, keep_days);
    let mut purged = Vec::new();
    for day in days(rclone, remote)? {
        if day < oldest_kept {
            purge_day(rclone, remote, &day)?;
            purged.push(day);
        }
    }
    Ok(purged)
}

/// A cloud is short of room: purges its oldest trash day, if one is older
/// than [`GIVE_WAY_MIN_DAYS`]; returns the day purged.
pub fn give_way(
    rclone: Rclone,
    remote: &str,
    now: SystemTime,
) -> Result<Option<String>, RcloneError> {
    let youngest_given = days_before(now, GIVE_WAY_MIN_DAYS);
    let Some(oldest) = days(rclone, remote)?.into_iter().next() else {
        return Ok(None);
    };
    if oldest >= youngest_given {
        return Ok(None);
    }
    purge_day(rclone, remote, &oldest)?;
    Ok(Some(oldest))
}

/// Bytes in the trash of `remote`; `None` when the backend does not say.
pub fn bytes(rclone: Rclone, remote: &str) -> Option<u64> {
    let trash = format!("{remote}/{TRASH_DIR}");
    match Call::new("operations/size", json!({ "fs": trash })).run(rclone) {
        Ok(size) => size["bytes"].as_u64(),
        Err(err) if err.is_not_found() => Some(0),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trash_paths_are_per_utc_day() {
        let time = humantime::parse_rfc3339("2026-11-24T23:59:59Z").unwrap();
        assert_eq!(today(time), ".msync/trash/2026-11-24");
        assert_eq!(
            backup_config("gdrive:msync", time),
            json!({
                "BackupDir": "gdrive:msync/.msync/trash/2026-11-24",
                "Suffix": "~235959.000",
                "SuffixKeepExtension": true,
            })
        );
    }

    #[test]
    fn versions_keep_the_extension_like_rclone() {
        let time = humantime::parse_rfc3339("2026-11-24T08:15:02.117Z").unwrap();
        assert_eq!(versioned("a/report.pdf", time), "a/report~081502.117.pdf");
        assert_eq!(versioned("a.d/Makefile", time), "a.d/Makefile~081502.117");
        assert_eq!(versioned("photos", time), "photos~081502.117");
        assert_eq!(
            trashed("x.tar.gz", time),
            ".msync/trash/2026-11-24/x.tar~081502.117.gz"
        );
        assert_eq!(
            trashed_dir("a/photos.d", time),
            ".msync/trash/2026-11-24/a/photos.d~081502.117"
        );
        assert_eq!(
            backup_config_below("r:m", "a/b", time)["BackupDir"],
            "r:m/.msync/trash/2026-11-24/a/b"
        );
    }
}
