//! The control socket: `<install dir>/run/msync.sock`, a Unix stream socket
//! only root can reach (its directory is 0700). One JSON request line, one
//! JSON reply line. The named thread `msync-control` serves it; status is
//! answered on that thread, stop is handed to the service's main loop.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Sender};
use std::time::Duration;

use log::warn;
use serde::{Deserialize, Serialize};

use crate::sync::BranchStatus;

/// What a client asks.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum Request {
    Status,
    Stop {
        mount_point: PathBuf,
        timeout_secs: u64,
        now: bool,
    },
    /// `balance`: move files between branches (each to be sent from its
    /// new branch, its old cloud's copy discarded); first mark `retire` as
    /// taking no new files, if given.
    Move {
        moves: Vec<MoveOrder>,
        #[serde(default)]
        retire: Option<String>,
    },
}

/// One file to move, by branch names.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MoveOrder {
    pub from: String,
    pub to: String,
    pub path: PathBuf,
}

/// The service as `status` shows it. Field names are stable for scripts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServiceStatus {
    pub pid: u32,
    pub install_dir: PathBuf,
    pub mount_point: PathBuf,
    pub union: String,
    pub started: String,
    pub inotify_watches: usize,
    pub branches: Vec<BranchStatus>,
    /// The pool's space and where new files go (once first looked at).
    #[serde(default)]
    pub pool: Option<super::PoolStatus>,
}

/// What the service answers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    Status(ServiceStatus),
    Stopped,
    /// How many of the moves asked for were made, and why the others were
    /// not.
    Moved {
        moved: usize,
        failed: Vec<String>,
    },
    Error {
        code: u8,
        message: String,
    },
}

/// Answers a `Move` request: the moves, and a branch to retire first.
pub type MoveHandler = dyn Fn(&[MoveOrder], Option<&str>) -> Reply + Send + Sync;

/// What the control socket answers with.
pub struct Handlers {
    pub status: Box<dyn Fn() -> ServiceStatus + Send + Sync>,
    pub moves: Box<MoveHandler>,
}

/// A stop request handed to the main loop, with where to send the answer.
pub struct StopRequest {
    pub mount_point: PathBuf,
    pub timeout: Duration,
    pub now: bool,
    pub reply: Sender<Reply>,
    /// Signalled once the reply is written, so the service does not exit
    /// before its client has the answer.
    pub delivered: mpsc::Receiver<()>,
}

/// Binds the socket, 0600, refusing a symlink or anything but a socket in
/// its place. Separate from [`serve_on`] so that the service can bind
/// before it mounts or touches a remote, and fail with nothing to undo;
/// until it serves, a client's request waits (its own time-out applies).
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_symlink() {
            return Err(std::io::Error::other(format!(
                "{} is a symlink, which msync does not follow there; remove it",
                path.display()
            )));
        }
        if !meta.file_type().is_socket() {
            return Err(std::io::Error::other(format!(
                "{} exists and is not a socket; remove it",
                path.display()
            )));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    // bind(2) honours the umask (0755 or so); the socket is root's alone,
    // like its directory. Nobody can connect before this: run/ is 0700.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves a bound socket on the named thread `msync-control`.
pub fn serve_on(
    listener: UnixListener,
    handlers: Handlers,
    stops: Sender<StopRequest>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("msync-control".into())
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(stream) => {
                        if let Err(err) = answer(stream, &handlers, &stops) {
                            warn!("control socket: {err}");
                        }
                    }
                    Err(err) => warn!("control socket: {err}"),
                }
            }
        })?;
    Ok(())
}

fn answer(
    stream: UnixStream,
    handlers: &Handlers,
    stops: &Sender<StopRequest>,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    let reply = match serde_json::from_str::<Request>(&line) {
        Ok(Request::Status) => Reply::Status((handlers.status)()),
        Ok(Request::Move { moves, retire }) => (handlers.moves)(&moves, retire.as_deref()),
        Ok(Request::Stop {
            mount_point,
            timeout_secs,
            now,
        }) => {
            let (reply, answer) = mpsc::channel();
            let (delivered, delivered_rx) = mpsc::channel();
            let request = StopRequest {
                mount_point,
                timeout: Duration::from_secs(timeout_secs),
                now,
                reply,
                delivered: delivered_rx,
            };
            let reply = match stops.send(request) {
                Ok(()) => answer.recv().unwrap_or(Reply::Stopped),
                Err(_) => Reply::Stopped,
            };
            let written = write_reply(&stream, &reply);
            let _ = delivered.send(());
            return written;
        }
        Err(err) => Reply::Error {
            code: 2,
            message: format!("bad request: {err}"),
        },
    };
    write_reply(&stream, &reply)
}

fn write_reply(mut stream: &UnixStream, reply: &Reply) -> std::io::Result<()> {
    let mut text = serde_json::to_string(reply).expect("a reply always encodes");
    text.push('\n');
    stream.write_all(text.as_bytes())
}

/// Why a client could not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no msync service is running for this install dir")]
    NotRunning,
    /// The socket accepted but the service died before it answered (a
    /// killed service whose last thread is still leaving): as good as not
    /// running.
    #[error("the msync service went away without answering")]
    Gone,
    #[error("the control socket {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the service answered something msync does not understand: {0}")]
    BadReply(String),
}

/// Sends one request and waits up to `timeout` for the reply.
pub fn request(path: &Path, request: &Request, timeout: Duration) -> Result<Reply, ClientError> {
    let io = |source| ClientError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut stream = match UnixStream::connect(path) {
        Ok(stream) => stream,
        Err(err)
            if matches!(
                err.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(ClientError::NotRunning);
        }
        Err(err) => return Err(io(err)),
    };
    let gone_or_io = |err: std::io::Error| match err.kind() {
        std::io::ErrorKind::ConnectionReset
        | std::io::ErrorKind::ConnectionAborted
        | std::io::ErrorKind::BrokenPipe => ClientError::Gone,
        _ => io(err),
    };
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    let mut text = serde_json::to_string(request).expect("a request always encodes");
    text.push('\n');
    stream.write_all(text.as_bytes()).map_err(gone_or_io)?;
    let mut line = String::new();
    let read = BufReader::new(&stream)
        .read_line(&mut line)
        .map_err(gone_or_io)?;
    if read == 0 {
        return Err(ClientError::Gone);
    }
    serde_json::from_str(&line).map_err(|_| ClientError::BadReply(line))
}
