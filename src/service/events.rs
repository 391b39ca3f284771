//! Events for people: `start --notify-command CMD` runs CMD (with `sh -c`)
//! with one JSON object on its standard input whenever something needs a
//! person. The main loop looks at the engine every few seconds and reports
//! what began since:
//!
//! - `branch_refused`: a guard holds a branch (a reconcile would delete
//!   most of its cloud's files);
//! - `branch_error`: a branch is not synced at all (its marker is missing,
//!   its lease was lost);
//! - `cloud_full`: a cloud has no room left for new files, or says it is
//!   full or capped;
//! - `pool_full`: every cloud is full;
//! - `cloud_unreachable`: a remote has not answered for longer than
//!   `--notify-unreachable-after`;
//! - `evacuation_finished`: a branch retired by `balance --evacuate`
//!   while the service ran, or holding files since, holds none any more
//!   and has nothing left to send.
//!
//! Commands run one at a time on the thread `msync-notify`, each killed
//! after [`COMMAND_TIMEOUT`]; events wait in a short queue and the ones
//! past it are dropped (and logged), so a command that hangs never holds
//! up the engine. The same event of the same branch is not sent again
//! within [`QUIET`].

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::time::{Duration, Instant, SystemTime};

use log::{info, warn};
use serde_json::{Value, json};

use crate::space::placement::NEW_FILE_ROOM;
use crate::space::{Capacity, PoolRoom};
use crate::sync::{BranchState, BranchStatus, Trouble};

/// How long a notify command may run before it is killed.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the same event of the same branch stays quiet once sent.
pub const QUIET: Duration = Duration::from_secs(600);
/// Events waiting for the command; more are dropped.
const QUEUE: usize = 16;

/// What was true of a branch at the last look.
#[derive(Debug, Default, Clone)]
struct Seen {
    refused: bool,
    error: bool,
    full: bool,
    down_since: Option<Instant>,
    down_reported: bool,
    /// A retired branch held files at an earlier look.
    evacuating: bool,
    /// The branch was in use (not retired) at an earlier look.
    in_use: bool,
}

/// Watches for events and hands them to the command's thread.
pub(super) struct Events {
    install_dir: String,
    unreachable_after: Duration,
    seen: Vec<Seen>,
    pool_full: bool,
    sent: HashMap<(String, String), Instant>,
    queue: SyncSender<Value>,
}

impl Events {
    pub(super) fn start(
        command: String,
        install_dir: &std::path::Path,
        unreachable_after: Duration,
    ) -> std::io::Result<Events> {
        let (queue, events) = mpsc::sync_channel(QUEUE);
        // Never joined: a command still running at stop is the thread's
        // own business (bounded by its timeout), not the stop's.
        std::thread::Builder::new()
            .name("msync-notify".into())
            .spawn(move || run_commands(&command, &events))?;
        Ok(Events {
            install_dir: install_dir.display().to_string(),
            unreachable_after,
            seen: Vec::new(),
            pool_full: false,
            sent: HashMap::new(),
            queue,
        })
    }

    /// Compares the engine now with the last look and reports what began.
    /// `emptied[i]` is whether retired branch `i` holds no file now (`None`
    /// for a branch in use); `emptied` is empty when the branches were not
    /// looked at this time.
    pub(super) fn look(
        &mut self,
        branches: &[BranchStatus],
        clouds: &[(Capacity, Option<Trouble>)],
        pool: Option<PoolRoom>,
        emptied: &[Option<bool>],
    ) {
        let now = Instant::now();
        self.seen.resize(branches.len(), Seen::default());
        for (i, branch) in branches.iter().enumerate() {
            let trouble = clouds.get(i).and_then(|(_, t)| *t);
            let room = clouds.get(i).and_then(|(c, _)| c.room());
            let before = self.seen[i].clone();
            let refused = branch.refused.is_some();
            let error = branch.state == BranchState::Error && !refused;
            let full = matches!(trouble, Some(Trouble::Full | Trouble::Capped))
                || room.is_some_and(|r| r < NEW_FILE_ROOM);
            let message = branch.last_error.clone().unwrap_or_default();
            if refused && !before.refused {
                let reason = branch.refused.clone().unwrap_or_default();
                self.send("branch_refused", Some(branch), reason, json!({}));
            }
            if error && !before.error {
                self.send("branch_error", Some(branch), message.clone(), json!({}));
            }
            if full && !before.full {
                let space = json!({
                    "free": branch.space.free,
                    "total": branch.space.total,
                });
                let why = branch
                    .paused
                    .clone()
                    .unwrap_or_else(|| "no room left for new files".into());
                self.send("cloud_full", Some(branch), why, space);
            }
            match emptied.get(i).copied() {
                Some(None) => self.seen[i].in_use = true,
                Some(Some(false)) => self.seen[i].evacuating = true,
                Some(Some(true)) if (before.evacuating || before.in_use) && branch.queued == 0 => {
                    self.seen[i].evacuating = false;
                    self.seen[i].in_use = false;
                    self.send(
                        "evacuation_finished",
                        Some(branch),
                        "the retired branch is empty: its files are on the other clouds".into(),
                        json!({}),
                    );
                }
                _ => {}
            }
            let seen = &mut self.seen[i];
            seen.refused = refused;
            seen.error = error;
            seen.full = full;
            if trouble == Some(Trouble::Down) {
                let since = *seen.down_since.get_or_insert(now);
                if !seen.down_reported && now.duration_since(since) >= self.unreachable_after {
                    seen.down_reported = true;
                    let down_for = now.duration_since(since).as_secs();
                    let why = branch.paused.clone().unwrap_or(message);
                    self.send(
                        "cloud_unreachable",
                        Some(branch),
                        why,
                        json!({ "seconds": down_for }),
                    );
                }
            } else {
                seen.down_since = None;
                seen.down_reported = false;
            }
        }
        let pool_full = pool == Some(PoolRoom::Full);
        if pool_full && !self.pool_full {
            self.send(
                "pool_full",
                None,
                "every cloud is full: new files stay on the local disk".into(),
                json!({}),
            );
        }
        self.pool_full = pool_full;
    }

    fn send(&mut self, event: &str, branch: Option<&BranchStatus>, message: String, more: Value) {
        let name = branch.map(|b| b.name.clone()).unwrap_or_default();
        let key = (event.to_owned(), name.clone());
        if self.sent.get(&key).is_some_and(|at| at.elapsed() < QUIET) {
            return;
        }
        self.sent.insert(key, Instant::now());
        let mut body = json!({
            "event": event,
            "time": humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            "install_dir": self.install_dir,
            "message": message,
        });
        if let Some(branch) = branch {
            body["branch"] = json!(branch.name);
            body["remote"] = json!(branch.remote);
        }
        if let (Some(body), Value::Object(more)) = (body.as_object_mut(), more) {
            body.extend(more);
        }
        match self.queue.try_send(body) {
            Ok(()) => info!(
                "notify: {event}{}",
                if name.is_empty() {
                    String::new()
                } else {
                    format!(" ({name})")
                }
            ),
            Err(TrySendError::Full(_)) => {
                warn!("notify: the notify command is behind; {event} was dropped")
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

/// The body of `msync-notify`.
fn run_commands(command: &str, events: &Receiver<Value>) {
    for event in events {
        if let Err(err) = run_one(command, &event) {
            warn!("notify: {command:?}: {err}");
        }
    }
}

fn run_one(command: &str, event: &Value) -> std::io::Result<()> {
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        // A command that never reads gets its input dropped, not waited on.
        let _ = writeln!(stdin, "{event}");
    }
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            if !status.success() {
                warn!("notify: {command:?} exited with {status}");
            }
            return Ok(());
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::other(format!(
                "killed after {}s",
                COMMAND_TIMEOUT.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
