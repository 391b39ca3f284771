//! Trash, not loss: whatever msync deletes or overwrites on a remote is
//! moved to `<remote dir>/.msync/trash/<UTC date>/<path>` instead (rclone's
//! backup-dir for overwrites, a server-side move for deletes), and trash
//! days older than the retention are purged by the service.
//!
//! Restoring is plain rclone, e.g.
//! `rclone copy gdrive:msync/.msync/trash/2026-11-24 gdrive:msync`.

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

/// rclone `_config` that sends overwritten and deleted files of `remote`
/// (a `name:path` remote directory) to today's trash.
pub fn backup_config(remote: &str, now: SystemTime) -> Value {
    json!({ "BackupDir": format!("{remote}/{}", today(now)) })
}

/// Purges the trash days of `remote` older than `keep_days`; returns the
/// days purged.
pub fn expire(
    rclone: Rclone,
    remote: &str,
    keep_days: u32,
    now: SystemTime,
) -> Result<Vec<String>, RcloneError> {
    // Looked at first, so a remote without trash logs no listing error.
    if rclone.stat(&Location::new(remote, TRASH_DIR))?.is_none() {
        return Ok(Vec::new());
    }
    let days = match rclone.list(
        &Location::new(remote, TRASH_DIR),
        &ListOptions {
            dirs_only: true,
            ..ListOptions::default()
        },
    ) {
        Ok(days) => days,
        Err(err) if err.is_not_found() => return Ok(Vec::new()),
        Err(err) => return Err(err),
    };
    let oldest_kept = day(now - Duration::from_secs(u64::from(keep_days) * 86_400));
    let mut purged = Vec::new();
    for entry in days {
        // Names sort as dates; anything that is not a date is left alone.
        let is_day = entry.name.len() == 10
            && humantime::parse_rfc3339(&format!("{}T00:00:00Z", entry.name)).is_ok();
        if is_day && entry.name < oldest_kept {
            let path = format!("{TRASH_DIR}/{}", entry.name);
            Call::new("operations/purge", json!({"fs": remote, "remote": path})).run(rclone)?;
            purged.push(entry.name);
        }
    }
    Ok(purged)
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
            json!({"BackupDir": "gdrive:msync/.msync/trash/2026-11-24"})
        );
    }
}
