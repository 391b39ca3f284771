//! Exit codes, msync's scripting interface, and the mapping from errors to
//! them. Only `main` exits; everything else returns an [`ExitCode`] or an
//! error that [`exit_code_of`] classifies.

use std::fmt;

use crate::install::InstallError;
use crate::rclone::{LoadError, RcloneError};
use crate::union::UnionError;

/// The documented exit codes. Their numbers never change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    Ok = 0,
    Failed = 1,
    Usage = 2,
    RequirementMissing = 3,
    NotInstalled = 4,
    MountError = 5,
    RcloneFailed = 6,
    RunningState = 7,
    Refused = 8,
    Interrupted = 130,
}

impl ExitCode {
    pub const ALL: [ExitCode; 10] = [
        ExitCode::Ok,
        ExitCode::Failed,
        ExitCode::Usage,
        ExitCode::RequirementMissing,
        ExitCode::NotInstalled,
        ExitCode::MountError,
        ExitCode::RcloneFailed,
        ExitCode::RunningState,
        ExitCode::Refused,
        ExitCode::Interrupted,
    ];

    pub fn code(self) -> u8 {
        self as u8
    }

    /// The documented code with this number, if any.
    pub fn from_code(code: i32) -> Option<ExitCode> {
        ExitCode::ALL
            .into_iter()
            .find(|c| i32::from(c.code()) == code)
    }

    pub fn meaning(self) -> &'static str {
        match self {
            ExitCode::Ok => "success",
            ExitCode::Failed => "failed (see the message)",
            ExitCode::Usage => "usage error: unknown command, bad argument or bad JSON",
            ExitCode::RequirementMissing => {
                "requirement missing: librclone, root, inotify, a union driver or the rclone config"
            }
            ExitCode::NotInstalled => "not an msync install dir, or its manifest is broken",
            ExitCode::MountError => "mounting or unmounting failed",
            ExitCode::RcloneFailed => "an rclone call failed",
            ExitCode::RunningState => "the service is already running, or is not running",
            ExitCode::Refused => "refused to protect data",
            ExitCode::Interrupted => {
                "interrupted by SIGINT, SIGTERM or SIGHUP (work cancelled cleanly)"
            }
        }
    }
}

/// The exit-code table as `msync help` and the README show it.
pub fn exit_code_table() -> String {
    let mut table = String::from("Exit codes:\n");
    for code in ExitCode::ALL {
        table.push_str(&format!("  {:>3}  {}\n", code.code(), code.meaning()));
    }
    table
}

/// An error that knows its exit code: for failures no library error type
/// describes, such as a bad install dir.
#[derive(Debug)]
pub struct Coded {
    pub code: ExitCode,
    pub message: String,
}

impl fmt::Display for Coded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Coded {}

/// Builds an error carrying `code`.
pub fn coded(code: ExitCode, message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Coded {
        code,
        message: message.into(),
    })
}

/// The exit code for an error: the first link of its chain that knows one.
pub fn exit_code_of(error: &anyhow::Error) -> ExitCode {
    for cause in error.chain() {
        if let Some(coded) = cause.downcast_ref::<Coded>() {
            return coded.code;
        }
        if cause.downcast_ref::<LoadError>().is_some() {
            return ExitCode::RequirementMissing;
        }
        if cause.downcast_ref::<RcloneError>().is_some() {
            return ExitCode::RcloneFailed;
        }
        if cause.downcast_ref::<InstallError>().is_some() {
            return ExitCode::NotInstalled;
        }
        if let Some(err) = cause.downcast_ref::<UnionError>() {
            return match err {
                UnionError::Unavailable { .. } => ExitCode::RequirementMissing,
                _ => ExitCode::MountError,
            };
        }
    }
    ExitCode::Failed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_the_documented_numbers() {
        let numbers: Vec<u8> = ExitCode::ALL.iter().map(|c| c.code()).collect();
        assert_eq!(numbers, [0, 1, 2, 3, 4, 5, 6, 7, 8, 130]);
    }

    #[test]
    fn context_does_not_hide_the_code() {
        let error = anyhow::Error::new(RcloneError::new("sync/sync", 500, "boom"))
            .context("syncing branch a");
        assert_eq!(exit_code_of(&error), ExitCode::RcloneFailed);
        let error = coded(ExitCode::NotInstalled, "no manifest").context("checking /srv");
        assert_eq!(exit_code_of(&error), ExitCode::NotInstalled);
        assert_eq!(exit_code_of(&anyhow::anyhow!("plain")), ExitCode::Failed);
    }
}
