//! Which rclone config file msync uses: `--config FILE`, else the file the
//! rclone CLI would use. msync always hands this path to librclone, so the
//! library, `msync check` and the user's `rclone` agree, and OAuth tokens
//! that rclone refreshes are written back to the user's real file.

use std::path::{Path, PathBuf};

/// The config file for an optional `--config`, resolved as rclone does:
/// `$RCLONE_CONFIG`, then `$XDG_CONFIG_HOME/rclone/rclone.conf` (or
/// `~/.config/rclone/rclone.conf`), then the legacy `~/.rclone.conf` when
/// only that one exists.
pub fn resolve(explicit: Option<&Path>) -> PathBuf {
    if let Some(path) = explicit {
        return path.to_path_buf();
    }
    resolve_from(
        std::env::var_os("RCLONE_CONFIG").map(PathBuf::from),
        std::env::var_os("XDG_CONFIG_HOME").map(PathBuf::from),
        std::env::var_os("HOME").map(PathBuf::from),
    )
}

fn resolve_from(
    from_env: Option<PathBuf>,
    xdg_config_home: Option<PathBuf>,
    home: Option<PathBuf>,
) -> PathBuf {
    if let Some(path) = from_env.filter(|p| !p.as_os_str().is_empty()) {
        return path;
    }
    let home = home.unwrap_or_else(|| PathBuf::from("/root"));
    let config_dir = xdg_config_home
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| home.join(".config"));
    let current = config_dir.join("rclone").join("rclone.conf");
    let legacy = home.join(".rclone.conf");
    if !current.exists() && legacy.exists() {
        legacy
    } else {
        current
    }
}

/// Checks that `path` is a readable rclone config file rclone can parse.
///
/// rclone's own loader ends the whole process (`log.Fatalf`) on a file it
/// cannot parse, so msync looks first. The message never quotes the file's
/// lines: they may hold secrets.
pub fn validate(path: &Path) -> Result<(), String> {
    let remedy = "fix it with `rclone config`, or name another file with --config";
    let meta = std::fs::metadata(path)
        .map_err(|err| format!("cannot read the rclone config file {} ({err}); create it with `rclone config`, or name another file with --config", path.display()))?;
    if !meta.is_file() {
        return Err(format!(
            "the rclone config file {} is not a regular file; {remedy}",
            path.display()
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|err| {
        format!(
            "cannot read the rclone config file {} ({err}); {remedy}",
            path.display()
        )
    })?;
    // An encrypted config is rclone's to read (with RCLONE_CONFIG_PASS).
    if text.trim_start().starts_with("RCLONE_ENCRYPT_V0:") {
        return Ok(());
    }
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        let fine = line.is_empty()
            || line.starts_with('#')
            || line.starts_with(';')
            || (line.starts_with('[') && line.ends_with(']'))
            || line.contains('=')
            || line.contains(':');
        if !fine {
            return Err(format!(
                "the rclone config file {} is not valid (line {}); {remedy}",
                path.display(),
                index + 1
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_files_are_validated_without_quoting_them() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.conf");
        std::fs::write(
            &good,
            "# mine\n[a]\ntype = local\n\n[b]\ntype = alias\nremote = /x\n",
        )
        .unwrap();
        assert_eq!(validate(&good), Ok(()));
        let bad = dir.path().join("bad.conf");
        std::fs::write(&bad, "[a]\ntype = local\nhunter2 secret token\n").unwrap();
        let err = validate(&bad).unwrap_err();
        assert!(err.contains("line 3") && !err.contains("hunter2"), "{err}");
        assert!(
            validate(dir.path())
                .unwrap_err()
                .contains("not a regular file")
        );
        assert!(
            validate(&dir.path().join("missing"))
                .unwrap_err()
                .contains("cannot read")
        );
    }

    #[test]
    fn environment_wins() {
        let path = resolve_from(Some("/etc/r.conf".into()), None, Some("/home/u".into()));
        assert_eq!(path, Path::new("/etc/r.conf"));
    }

    #[test]
    fn xdg_then_home() {
        let dir = tempfile::tempdir().unwrap();
        let path = resolve_from(None, Some(dir.path().into()), Some("/nonexistent".into()));
        assert_eq!(path, dir.path().join("rclone/rclone.conf"));
        let path = resolve_from(None, None, Some(dir.path().into()));
        assert_eq!(path, dir.path().join(".config/rclone/rclone.conf"));
    }

    #[test]
    fn legacy_file_only_when_it_alone_exists() {
        let home = tempfile::tempdir().unwrap();
        std::fs::write(home.path().join(".rclone.conf"), "").unwrap();
        let path = resolve_from(None, None, Some(home.path().into()));
        assert_eq!(path, home.path().join(".rclone.conf"));
    }
}
