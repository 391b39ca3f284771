//! S, the approach msync replaces: `inotifywait -m -r` on the branch, and
//! after each batch of events one whole-branch `rclone sync` with Debian's
//! rclone CLI. A batch is every event that arrives within the window
//! (100 ms) after its first one; events that arrive while a sync runs make
//! the next batch. The syncs run one at a time, `--transfers 4` as msync.
//!
//! Its CPU is what its processes use: the rclone runs (reaped by this
//! process, so counted by `getrusage(RUSAGE_CHILDREN)`) and inotifywait's
//! event handling (reaped at [`SDriver::stop`]; the CPU it spent setting
//! up its watches before the measure started is subtracted).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::env::Env;
use crate::guard;
use crate::probe;

/// Rules both sides share: msync's reserved names are not S's business.
pub const EXCLUDES: &[&str] = &["--exclude", "/.msync/**", "--exclude", "/.msync-branch"];

#[derive(Debug, Default)]
struct Counts {
    received: u64,
    consumed: u64,
    running: bool,
    runs: Vec<SyncRun>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SyncRun {
    pub events: u64,
    pub wall_ms: f64,
    pub ok: bool,
}

pub struct SDriver {
    inotifywait: Child,
    setup_cpu: Duration,
    state: Arc<(Mutex<Counts>, Condvar)>,
    reader: Option<JoinHandle<()>>,
    driver: Option<JoinHandle<()>>,
}

/// What one driver did, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct DriverReport {
    pub events: u64,
    pub syncs: Vec<SyncRun>,
    /// inotifywait's CPU to set up its watches (not counted as S's work).
    pub watch_setup_cpu_ms: f64,
}

impl SDriver {
    /// Starts inotifywait on `branch` and the sync loop towards `remote`;
    /// returns once inotifywait's watches are up.
    pub fn start(env: &Env, branch: &Path, remote: &str, window: Duration) -> SDriver {
        let mut inotifywait = Command::new("inotifywait")
            .args(["-m", "-r", "--format", "%e %w%f", "-e"])
            .arg("close_write,moved_to,moved_from,create,delete")
            .arg(branch)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting inotifywait (apt-get install inotify-tools)");
        guard::child_started(inotifywait.id());
        let mut stderr = BufReader::new(inotifywait.stderr.take().unwrap());
        let mut line = String::new();
        loop {
            line.clear();
            let n = stderr.read_line(&mut line).unwrap();
            assert!(n > 0, "inotifywait exited before its watches were up");
            if line.contains("Watches established") {
                break;
            }
            assert!(line.contains("Setting up watches"), "inotifywait: {line}");
        }
        std::thread::spawn(move || {
            let mut sink = String::new();
            while stderr.read_line(&mut sink).is_ok_and(|n| n > 0) {
                eprint!("inotifywait: {sink}");
                sink.clear();
            }
        });
        let setup_cpu = probe::process_ticks_cpu(inotifywait.id());

        let state = Arc::new((Mutex::new(Counts::default()), Condvar::new()));
        let (tx, rx) = mpsc::channel::<String>();
        let stdout = inotifywait.stdout.take().unwrap();
        let reader = {
            let state = Arc::clone(&state);
            std::thread::Builder::new()
                .name("s-reader".into())
                .spawn(move || {
                    for line in BufReader::new(stdout).lines() {
                        let Ok(line) = line else { break };
                        state.0.lock().unwrap().received += 1;
                        if tx.send(line).is_err() {
                            break;
                        }
                    }
                })
                .unwrap()
        };
        let mut sync = env.rclone();
        sync.arg("sync")
            .arg(branch)
            .arg(remote)
            .args(["--transfers", "4"])
            .args(EXCLUDES)
            .stdout(Stdio::null());
        let log = env.path().join("work/s-driver.log");
        let driver = {
            let state = Arc::clone(&state);
            std::thread::Builder::new()
                .name("s-driver".into())
                .spawn(move || {
                    while let Ok(_first) = rx.recv() {
                        let deadline = Instant::now() + window;
                        let mut batch = 1u64;
                        loop {
                            let left = deadline.saturating_duration_since(Instant::now());
                            match rx.recv_timeout(left) {
                                Ok(_) => batch += 1,
                                Err(RecvTimeoutError::Timeout) => break,
                                Err(RecvTimeoutError::Disconnected) => break,
                            }
                        }
                        {
                            let mut counts = state.0.lock().unwrap();
                            counts.consumed += batch;
                            counts.running = true;
                        }
                        let started = Instant::now();
                        let ok = run_sync(&mut sync, &log);
                        let mut counts = state.0.lock().unwrap();
                        counts.running = false;
                        counts.runs.push(SyncRun {
                            events: batch,
                            wall_ms: started.elapsed().as_secs_f64() * 1e3,
                            ok,
                        });
                        state.1.notify_all();
                    }
                })
                .unwrap()
        };
        SDriver {
            inotifywait,
            setup_cpu,
            state,
            reader: Some(reader),
            driver: Some(driver),
        }
    }

    /// Waits until every event read so far was synced and no sync runs,
    /// twice 200 ms apart (events may still be on their way).
    pub fn wait_idle(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut quiet = 0;
        while quiet < 2 {
            let idle = {
                let counts = self.state.0.lock().unwrap();
                !counts.running && counts.consumed == counts.received
            };
            quiet = if idle { quiet + 1 } else { 0 };
            assert!(
                Instant::now() < deadline,
                "S did not go idle within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(if idle { 200 } else { 20 }));
        }
    }

    /// Ends inotifywait (which ends the loop after its current sync) and
    /// reaps it, so its CPU joins the children's.
    pub fn stop(mut self) -> (DriverReport, Duration) {
        let report = self.finish();
        (report, self.setup_cpu)
    }

    fn finish(&mut self) -> DriverReport {
        let _ = self.inotifywait.kill();
        let _ = self.inotifywait.wait();
        guard::child_ended(self.inotifywait.id());
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        if let Some(driver) = self.driver.take() {
            let _ = driver.join();
        }
        let counts = self.state.0.lock().unwrap();
        DriverReport {
            events: counts.received,
            syncs: counts.runs.clone(),
            watch_setup_cpu_ms: self.setup_cpu.as_secs_f64() * 1e3,
        }
    }
}

impl Drop for SDriver {
    fn drop(&mut self) {
        if self.driver.is_some() {
            self.finish();
        }
    }
}

fn run_sync(command: &mut Command, log: &PathBuf) -> bool {
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut child = command.stderr(stderr).spawn().expect("spawning rclone");
    guard::child_started(child.id());
    let status = child.wait().expect("waiting for rclone");
    guard::child_ended(child.id());
    if !status.success() {
        eprintln!("S: rclone sync failed ({status}); see {}", log.display());
    }
    status.success()
}
