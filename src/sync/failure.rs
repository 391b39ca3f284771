//! Why a piece of remote work did not complete, classified once: from
//! rclone's error (its status and message) and the local file's state, into
//! the class the engine acts on.
//!
//! - [`Failure::Path`] concerns one path: a transient one (the file changed
//!   while it was sent, a lock) is retried with backoff while every other
//!   path goes on; a permanent one (a name or size the backend cannot hold,
//!   a file type that cannot be sent) is not retried until the path changes
//!   again.
//! - [`Failure::Remote`] concerns the whole remote (network down, auth
//!   expired, rate limited, full, a daily upload cap reached): the branch
//!   pauses and probes.
//! - [`Failure::NoRoom`] is a file that does not fit in the room its cloud
//!   has left, found before sending it: it waits to be moved to a cloud
//!   with room.
//!
//! rclone reports errors as text, so the classes are decided by matching
//! the messages its backends produce; anything unrecognised is a transient
//! failure of one path, the class that loses nothing and holds nothing up.

use std::path::PathBuf;

use std::time::Duration;

use crate::rclone::RcloneError;

/// What is wrong with a whole remote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trouble {
    /// It cannot be reached or will not serve anyone now.
    Down,
    /// Out of space or over quota: deletes and moves still go through.
    Full,
    /// A daily upload cap is reached (Google Drive's 750 GB a day): uploads
    /// wait until it resets; deletes and moves still go through.
    Capped,
}

impl Trouble {
    /// Whether work that sends no bytes still goes through.
    pub fn takes_non_uploads(self) -> bool {
        self != Trouble::Down
    }
}

/// Why one unit of work did not complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// This path only; the others go on.
    Path { permanent: bool, message: String },
    /// The whole remote is unusable for now, or for uploads.
    Remote { trouble: Trouble, message: String },
    /// The file does not fit in the room its cloud has left.
    NoRoom(String),
    /// The name differs only in case from one the case-insensitive cloud
    /// keeps in the same directory (see [`super::case`]): it must go to
    /// another branch: `held` (the path itself, or the directory above it
    /// whose name clashes).
    NameClash { held: PathBuf, message: String },
    /// Cancelled by `stop`.
    Cancelled,
    /// A guard refused the work (see [`super::guard`]).
    Refused(String),
    /// The path is nothing msync sends (a FIFO, a socket, a device): left
    /// alone, listed, never opened.
    Skipped(String),
}

impl Failure {
    /// A failure of one path that retrying cannot fix.
    pub fn permanent(message: impl Into<String>) -> Failure {
        Failure::Path {
            permanent: true,
            message: message.into(),
        }
    }

    /// A failure of one path that may go away.
    pub fn transient(message: impl Into<String>) -> Failure {
        Failure::Path {
            permanent: false,
            message: message.into(),
        }
    }

    /// Classifies an error message from rclone (a call's or a job's).
    pub fn from_message(message: impl Into<String>) -> Failure {
        let message = message.into();
        let lower = message.to_lowercase();
        // A rate limit first: Google words one as "quota exceeded" and
        // another as "User Rate Limit Exceeded", like its space and daily
        // caps, but it passes within seconds.
        let trouble = if RATE_LIMITED.iter().any(|m| lower.contains(m)) {
            Some(Trouble::Down)
        } else if CAPPED.iter().any(|m| lower.contains(m)) {
            Some(Trouble::Capped)
        } else if FULL.iter().any(|m| lower.contains(m)) {
            Some(Trouble::Full)
        } else if REMOTE_DOWN.iter().any(|m| lower.contains(m)) {
            Some(Trouble::Down)
        } else {
            None
        };
        if let Some(trouble) = trouble {
            Failure::Remote { trouble, message }
        } else if PATH_PERMANENT.iter().any(|m| lower.contains(m)) {
            Failure::permanent(message)
        } else {
            Failure::transient(message)
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Failure::Path { message, .. } | Failure::Remote { message, .. } => message,
            Failure::Refused(message)
            | Failure::Skipped(message)
            | Failure::NoRoom(message)
            | Failure::NameClash { message, .. } => message,
            Failure::Cancelled => "cancelled",
        }
    }

    /// Whether the failure may come from the remote holding the other kind
    /// of object at the path (a directory where a file goes, or a file
    /// where a directory goes): only then is it worth looking.
    pub fn may_be_kind_conflict(&self) -> bool {
        let Failure::Path { message, .. } = self else {
            return false;
        };
        let lower = message.to_lowercase();
        KIND_CONFLICT.iter().any(|m| lower.contains(m))
    }

    /// Whether the failure says the source of the work does not exist (on
    /// the remote for a move or a delete): nothing was there to act on.
    pub fn is_not_found(&self) -> bool {
        match self {
            Failure::Path { message, .. } => says_not_found(message),
            _ => false,
        }
    }
}

impl From<RcloneError> for Failure {
    fn from(err: RcloneError) -> Failure {
        // 400 is rclone refusing the parameters: the same call fails again.
        if err.status == 400 {
            return Failure::permanent(err.to_string());
        }
        if err.status == 404 {
            return Failure::transient(format!("{}: not found", err));
        }
        Failure::from_message(err.to_string())
    }
}

/// How long a rate-limited remote asked to be left alone. librclone's shim
/// adds a server's Retry-After to the answer's status line, which backends
/// put in their error text: "429 Too Many Requests (retry after 7s)".
pub fn retry_after(message: &str) -> Option<Duration> {
    const MARK: &str = "(retry after ";
    let start = message.find(MARK)? + MARK.len();
    let rest = &message[start..];
    let seconds: u64 = rest[..rest.find("s)")?].parse().ok()?;
    Some(Duration::from_secs(seconds))
}

/// Whether a whole-remote failure is the server asking for fewer requests.
pub fn is_rate_limit(message: &str) -> bool {
    let lower = message.to_lowercase();
    retry_after(message).is_some() || RATE_LIMIT_WORDS.iter().any(|m| lower.contains(m))
}

/// Whether an error message says that something does not exist. Backends
/// word it differently: rclone's own "not found", the local and sftp
/// backends' errno text.
pub fn says_not_found(message: &str) -> bool {
    let lower = message.to_lowercase();
    NOT_FOUND.iter().any(|m| lower.contains(m))
}

const NOT_FOUND: &[&str] = &[
    "not found",
    "no such file or directory",
    "file does not exist",
    "does not exist",
];

/// What backends say when a file meets a directory or the other way round.
const KIND_CONFLICT: &[&str] = &[
    "is a directory",
    "not a directory",
    "is a file not a directory",
    "file exists",
    "directory not empty",
    "object is a directory",
    "can't copy directory",
    "already exists",
];

/// Rate limits whose words come close to a quota's or a cap's: Google's
/// "Quota exceeded for quota metric 'Queries' …" and its per-user request
/// limit "User Rate Limit Exceeded. Rate of requests for user exceed
/// configured project quota …".
const RATE_LIMITED: &[&str] = &["quota metric", "rate of requests"];

/// A daily upload cap: Google Drive answers 403 with reason
/// `userRateLimitExceeded` and the message "User rate limit exceeded." once
/// an account uploaded 750 GB in a day (the reason alone is also a plain
/// rate limit, which the message tells apart), or `uploadLimitExceeded`.
const CAPPED: &[&str] = &["user rate limit exceeded.", "uploadlimitexceeded"];

/// The remote is out of space or over quota, in the words of the local and
/// sftp backends (errno text), Google Drive (`storageQuotaExceeded`),
/// OneDrive (`quotaLimitReached`), Dropbox (`insufficient_space`), Box
/// (`storage_limit_exceeded`), Backblaze B2 (`cap_exceeded`), Mega and
/// pCloud ("over quota") and WebDAV (507 Insufficient Storage).
const FULL: &[&str] = &[
    "no space left on device",
    "disk quota exceeded",
    "file too big for remaining disk space",
    "insufficient storage",
    "quota exceeded",
    "quotaexceeded",
    "storagequotaexceeded",
    "quotalimitreached",
    "storage_limit_exceeded",
    "cap_exceeded",
    "over quota",
    "insufficient_space",
    "status 507",
    "507 insufficient",
];

/// The remote cannot be reached or will not serve anyone now.
const REMOTE_DOWN: &[&str] = &[
    "connection refused",
    "connection reset",
    "no route to host",
    "network is unreachable",
    "i/o timeout",
    "dial tcp",
    "couldn't connect",
    "failed to connect",
    "ssh: handshake failed",
    "broken pipe",
    "unexpected eof",
    "use of closed network connection",
    "connection lost",
    "context deadline exceeded",
    "tls handshake timeout",
    "temporary failure in name resolution",
    "no such host",
    "too many requests",
    "rate limit",
    "ratelimit",
    "status 429",
    "429 too many",
    "status code: 429",
    "slowdown",
    "reduce your request rate",
    "unauthorized",
    "invalid_grant",
    "token expired",
    "status 401",
    "status 503",
    "status code: 503",
    "service unavailable",
];

/// The words of a rate limit among [`REMOTE_DOWN`]'s: HTTP 429, S3's
/// SlowDown, Google's rateLimitExceeded.
const RATE_LIMIT_WORDS: &[&str] = &[
    "too many requests",
    "rate limit",
    "ratelimit",
    "status 429",
    "status code: 429",
    "slowdown",
    "reduce your request rate",
    "rate of requests",
    "quota metric",
];

/// One path the backend can never hold as it is.
const PATH_PERMANENT: &[&str] = &[
    "file name too long",
    "name too long",
    "filename too long",
    "not valid utf-8",
    "invalid utf-8",
    "can't transfer non file/directory",
    "is not a regular file",
    "illegal byte sequence",
    "object too large",
    "file too large",
    "entitytoolarge",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn class(message: &str) -> &'static str {
        match Failure::from_message(message) {
            Failure::Path {
                permanent: true, ..
            } => "path permanent",
            Failure::Path { .. } => "path transient",
            Failure::Remote {
                trouble: Trouble::Full,
                ..
            } => "remote full",
            Failure::Remote {
                trouble: Trouble::Capped,
                ..
            } => "remote capped",
            Failure::Remote { .. } => "remote down",
            _ => "other",
        }
    }

    #[test]
    fn messages_of_real_backends_are_classified() {
        for (message, expected) in [
            (
                "preallocate: file too big for remaining disk space",
                "remote full",
            ),
            ("write /cloud/a: no space left on device", "remote full"),
            (
                "couldn't connect SSH: dial tcp 127.0.0.1:2222: connect: connection refused",
                "remote down",
            ),
            ("googleapi: Error 429: Rate Limit Exceeded", "remote down"),
            (
                "failed to make directory: open /x/aaaa: file name too long",
                "path permanent",
            ),
            (
                "can't copy - source file is being updated (size changed from 10 to 20)",
                "path transient",
            ),
            ("rename /a /b: no such file or directory", "path transient"),
            // Quota and cap texts of the common backends, as rclone passes
            // them on.
            (
                "googleapi: Error 403: The user's Drive storage quota has been exceeded., storageQuotaExceeded",
                "remote full",
            ),
            (
                "quotaLimitReached: Insufficient Space Available",
                "remote full",
            ),
            ("upload failed: path/insufficient_space/..", "remote full"),
            (
                "Error \"storage_limit_exceeded\" (403): Account storage limit reached",
                "remote full",
            ),
            (
                "storage_cap_exceeded (403): Cannot upload files, storage cap exceeded.",
                "remote full",
            ),
            ("Over quota", "remote full"),
            (
                "sftp: \"Failure\" (SSH_FX_FAILURE): no space left on device",
                "remote full",
            ),
            ("507 Insufficient Storage", "remote full"),
            (
                "googleapi: Error 403: User rate limit exceeded., userRateLimitExceeded",
                "remote capped",
            ),
            ("googleapi: Error 403: uploadLimitExceeded", "remote capped"),
            // A plain rate limit is a pause, not a daily cap, nor a full
            // cloud.
            (
                "googleapi: Error 403: Rate Limit Exceeded, rateLimitExceeded",
                "remote down",
            ),
            (
                "googleapi: Error 403: User Rate Limit Exceeded. Rate of requests for user exceed configured project quota. You may consider re-evaluating expected per-user traffic to the API and adjust project quota limits accordingly., userRateLimitExceeded",
                "remote down",
            ),
            (
                "googleapi: Error 403: Quota exceeded for quota metric 'Queries' and limit 'Queries per minute' of service 'drive.googleapis.com', rateLimitExceeded",
                "remote down",
            ),
        ] {
            assert_eq!(class(message), expected, "{message}");
        }
    }

    #[test]
    fn rate_limits_pause_the_remote_for_the_time_the_server_asked() {
        for message in [
            "Too Many Requests: 429 Too Many Requests (retry after 7s)",
            "SlowDown: Please reduce your request rate.\n\tstatus code: 503, request id: X",
            "503 Service Unavailable (retry after 7s)",
        ] {
            assert_eq!(class(message), "remote down", "{message}");
            assert!(is_rate_limit(message), "{message}");
        }
        assert_eq!(
            retry_after("429 Too Many Requests (retry after 7s): body"),
            Some(Duration::from_secs(7))
        );
        assert_eq!(retry_after("429 Too Many Requests"), None);
        assert_eq!(retry_after("(retry after soon)"), None);
        assert!(!is_rate_limit(
            "dial tcp 127.0.0.1:1: connect: connection refused"
        ));
    }

    #[test]
    fn not_found_in_every_wording() {
        for message in [
            "object not found",
            "directory not found",
            "rename /c/a /c/b: no such file or directory",
            "sftp: \"file does not exist\" (SSH_FX_NO_SUCH_FILE)",
        ] {
            assert!(Failure::transient(message).is_not_found(), "{message}");
        }
        assert!(!Failure::transient("permission denied").is_not_found());
    }

    #[test]
    fn rclone_statuses_decide_first() {
        let bad_params = RcloneError::new("operations/copyfile", 400, "didn't find key");
        assert!(matches!(
            Failure::from(bad_params),
            Failure::Path {
                permanent: true,
                ..
            }
        ));
        let missing = RcloneError::new("operations/movefile", 404, "object");
        assert!(Failure::from(missing).is_not_found());
    }
}
