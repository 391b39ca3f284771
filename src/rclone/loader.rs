//! Where msync looks for `librclone.so`, in a fixed and documented order:
//!
//! 1. the path given with `--librclone PATH`;
//! 2. the path in `$MSYNC_LIBRCLONE`;
//! 3. `librclone.so` in the directory of the running executable, resolved
//!    through symlinks (so a `/usr/local/bin/msync` link finds the library
//!    beside the real binary);
//! 4. the system library path (`dlopen("librclone.so")`: `LD_LIBRARY_PATH`,
//!    the ld.so cache, the default directories).
//!
//! A path named explicitly (1 or 2) is the only candidate: when a user names
//! a library, silently loading another one would be a surprise.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// File name of the library, as upstream rclone builds it.
pub const LIBRARY_FILE: &str = "librclone.so";

/// Environment variable naming the library to load.
pub const LIBRARY_ENV: &str = "MSYNC_LIBRCLONE";

/// One place to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// How the user would recognise this place in an error message.
    pub place: String,
    /// What to hand to `dlopen`: a path, or a bare name for the system search.
    pub target: PathBuf,
    /// Whether `target` is a bare name resolved by the dynamic loader.
    pub system_search: bool,
}

/// The candidates, best first, for an optional `--librclone` path.
pub fn candidates(explicit: Option<&Path>) -> Vec<Candidate> {
    candidates_from(
        explicit,
        std::env::var_os(LIBRARY_ENV),
        std::env::current_exe().ok(),
    )
}

fn candidates_from(
    explicit: Option<&Path>,
    from_env: Option<OsString>,
    current_exe: Option<PathBuf>,
) -> Vec<Candidate> {
    if let Some(path) = explicit {
        return vec![Candidate {
            place: format!("--librclone {}", path.display()),
            target: path.to_path_buf(),
            system_search: false,
        }];
    }
    if let Some(path) = from_env.filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        return vec![Candidate {
            place: format!("${LIBRARY_ENV} {}", path.display()),
            target: path,
            system_search: false,
        }];
    }
    let mut found = Vec::new();
    if let Some(dir) = current_exe
        .and_then(|exe| exe.canonicalize().ok())
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
    {
        let path = dir.join(LIBRARY_FILE);
        found.push(Candidate {
            place: format!("beside the msync binary, {}", path.display()),
            target: path,
            system_search: false,
        });
    }
    found.push(Candidate {
        place: format!("system library path ({LIBRARY_FILE})"),
        target: PathBuf::from(LIBRARY_FILE),
        system_search: true,
    });
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_path_is_the_only_candidate() {
        let found = candidates_from(
            Some(Path::new("/opt/x/librclone.so")),
            Some("/env/librclone.so".into()),
            Some("/usr/bin/msync".into()),
        );
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].target, Path::new("/opt/x/librclone.so"));
        assert!(found[0].place.starts_with("--librclone"));
    }

    #[test]
    fn environment_comes_before_the_executable_directory() {
        let found = candidates_from(None, Some("/env/librclone.so".into()), None);
        assert_eq!(found.len(), 1);
        assert!(found[0].place.starts_with("$MSYNC_LIBRCLONE"));
    }

    #[test]
    fn default_order_is_executable_directory_then_system() {
        let exe = std::env::current_exe().unwrap();
        let found = candidates_from(None, Some("".into()), Some(exe.clone()));
        assert_eq!(found.len(), 2);
        assert_eq!(
            found[0].target,
            exe.canonicalize()
                .unwrap()
                .parent()
                .unwrap()
                .join(LIBRARY_FILE)
        );
        assert!(found[1].system_search);
        assert_eq!(found[1].target, Path::new(LIBRARY_FILE));
    }
}
