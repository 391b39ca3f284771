//! systemd's readiness protocol (sd_notify(3)), in the few lines it needs:
//! one datagram per state change to the socket named by `$NOTIFY_SOCKET`
//! (a path, or `@name` in the abstract namespace). `READY=1` once the pool
//! is mounted and the control socket answers, `STATUS=` a short summary
//! whenever it changes, `STOPPING=1` when a stop begins. Without the
//! variable nothing is sent; a failed send is logged, never fatal.

use std::ffi::OsStr;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

use log::warn;

use crate::sync::{BranchState, BranchStatus};

pub(super) struct Notifier {
    socket: UnixDatagram,
    address: SocketAddr,
    /// The last STATUS sent, so an unchanged one is not sent again.
    last_status: String,
}

impl Notifier {
    /// The notifier `$NOTIFY_SOCKET` asks for, if any.
    pub(super) fn from_env() -> Option<Notifier> {
        let name = std::env::var_os("NOTIFY_SOCKET")?;
        let address = match parse(&name) {
            Ok(address) => address,
            Err(err) => {
                warn!(
                    "NOTIFY_SOCKET={name:?} is no socket address ({err}): systemd is not told of readiness"
                );
                return None;
            }
        };
        let socket = match UnixDatagram::unbound() {
            Ok(socket) => socket,
            Err(err) => {
                warn!("cannot open a socket to notify systemd: {err}");
                return None;
            }
        };
        Some(Notifier {
            socket,
            address,
            last_status: String::new(),
        })
    }

    pub(super) fn ready(&mut self, status: &str) {
        self.last_status = status.to_owned();
        self.send(&format!("READY=1\nSTATUS={status}"));
    }

    pub(super) fn stopping(&mut self) {
        self.send("STOPPING=1\nSTATUS=stopping: sending what is queued, unmounting");
    }

    /// Sends `status` if it differs from the last one sent.
    pub(super) fn status(&mut self, status: String) {
        if status != self.last_status {
            self.send(&format!("STATUS={status}"));
            self.last_status = status;
        }
    }

    fn send(&self, state: &str) {
        if let Err(err) = self.socket.send_to_addr(state.as_bytes(), &self.address) {
            warn!("cannot notify systemd ({state:?}): {err}");
        }
    }
}

fn parse(name: &OsStr) -> std::io::Result<SocketAddr> {
    match name.as_bytes().strip_prefix(b"@") {
        Some(abstract_name) => SocketAddr::from_abstract_name(abstract_name),
        None => SocketAddr::from_pathname(name),
    }
}

/// The one-line summary systemd shows (`systemctl status`): how many
/// branches are in each state, and what is queued.
pub(super) fn summary(branches: &[BranchStatus]) -> String {
    let count = |state| branches.iter().filter(|b| b.state == state).count();
    let queued: usize = branches.iter().map(|b| b.queued).sum();
    let mut parts = vec![format!("{} idle", count(BranchState::Idle))];
    for (state, word) in [
        (BranchState::Syncing, "syncing"),
        (BranchState::Retrying, "retrying"),
        (BranchState::Error, "in error"),
    ] {
        if count(state) > 0 {
            parts.push(format!("{} {word}", count(state)));
        }
    }
    format!(
        "{} branch(es): {}; {queued} change(s) queued",
        branches.len(),
        parts.join(", ")
    )
}
