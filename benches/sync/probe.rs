//! What the bench reads off the machine: CPU time of the service (from
//! /proc) and of reaped children (`getrusage`), memory, when files appear
//! on a remote (inotify on the remote's directory), and the SFTP server's
//! request log. Also the data it writes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use inotify::{Inotify, WatchMask};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::resource::{UsageWho, getrusage};
use serde::Serialize;

use crate::sshd::{COMMAND_SESSION, sftp_request_kind};

/// The kernel's CPU clock tick (10 ms on Debian).
pub fn tick() -> Duration {
    let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100);
    Duration::from_secs(1) / per_second as u32
}

/// A process's CPU time at one moment, two ways: `utime + stime` of
/// /proc/<pid>/stat (every thread, dead ones included, in 10 ms ticks) and
/// the nanosecond run time of each live thread (/proc/<pid>/task/*/schedstat).
#[derive(Debug, Clone, Default)]
pub struct CpuSample {
    ticks: u64,
    threads: HashMap<u32, u64>,
}

pub fn cpu_sample(pid: u32) -> CpuSample {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/stat: {e} (did the service die?)"));
    let fields: Vec<u64> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let mut threads = HashMap::new();
    if let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for entry in entries.flatten() {
            let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            if let Ok(text) = std::fs::read_to_string(entry.path().join("schedstat"))
                && let Some(ns) = text.split_whitespace().next().and_then(|f| f.parse().ok())
            {
                threads.insert(tid, ns);
            }
        }
    }
    CpuSample {
        ticks: fields[11] + fields[12],
        threads,
    }
}

/// CPU used between two samples, summed over pairs: the larger of the two
/// measures, so a thread that ended in between (lost to schedstat) or a
/// tick boundary (lost to the tick count) never makes it look cheaper.
pub fn cpu_used(pairs: &[(CpuSample, CpuSample)]) -> CpuUse {
    let mut ticks = 0;
    let mut sched = 0u64;
    for (a, b) in pairs {
        ticks += b.ticks.saturating_sub(a.ticks);
        sched += b
            .threads
            .iter()
            .map(|(tid, ns)| ns.saturating_sub(a.threads.get(tid).copied().unwrap_or(0)))
            .sum::<u64>();
    }
    let by_ticks = tick() * ticks as u32;
    let by_sched = Duration::from_nanos(sched);
    CpuUse {
        cpu: by_ticks.max(by_sched),
        ticks,
        schedstat_ns: sched,
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct CpuUse {
    #[serde(serialize_with = "as_ns")]
    pub cpu: Duration,
    pub ticks: u64,
    pub schedstat_ns: u64,
}

/// user + system time of every child this process has waited for.
pub fn children_cpu() -> Duration {
    let usage = getrusage(UsageWho::RUSAGE_CHILDREN).expect("getrusage");
    let micros = |t: nix::sys::time::TimeVal| t.tv_sec() as u64 * 1_000_000 + t.tv_usec() as u64;
    Duration::from_micros(micros(usage.user_time()) + micros(usage.system_time()))
}

/// CPU time of a live process (utime + stime, ticks).
pub fn process_ticks_cpu(pid: u32) -> Duration {
    let sample = cpu_sample(pid);
    tick() * sample.ticks as u32
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Memory {
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

pub fn memory(pid: u32) -> Memory {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Memory {
        rss_kib: field("VmRSS:"),
        hwm_kib: field("VmHWM:"),
    }
}

/// Watches a remote directory (local on disk, for either remote) and
/// notes when each file first stands there complete: closed after writing
/// or renamed in, with the expected size.
pub struct Arrivals {
    dir: PathBuf,
    size: u64,
    seen: Arc<Mutex<HashMap<OsString, Instant>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Arrivals {
    pub fn watch(dir: &Path, size: u64) -> Arrivals {
        let mut inotify = Inotify::init().expect("inotify");
        inotify
            .watches()
            // OpenSSH's sftp-server renames a file by link() and unlink():
            // an upload renamed into place appears as IN_CREATE, whole.
            .add(
                dir,
                WatchMask::CLOSE_WRITE | WatchMask::MOVED_TO | WatchMask::CREATE,
            )
            .unwrap_or_else(|e| panic!("watching {}: {e}", dir.display()));
        let seen = Arc::new(Mutex::new(HashMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (seen, stop, dir) = (Arc::clone(&seen), Arc::clone(&stop), dir.to_owned());
            std::thread::Builder::new()
                .name("bench-arrivals".into())
                .spawn(move || {
                    let mut buffer = vec![0u8; 64 * 1024];
                    while !stop.load(Ordering::Relaxed) {
                        let ready = {
                            let mut fds = [PollFd::new(inotify.as_fd(), PollFlags::POLLIN)];
                            poll(&mut fds, PollTimeout::from(100u16)).unwrap_or(0)
                        };
                        if ready == 0 {
                            continue;
                        }
                        let now = Instant::now();
                        let events = match inotify.read_events(&mut buffer) {
                            Ok(events) => events,
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                            Err(e) => panic!("reading inotify events: {e}"),
                        };
                        let names: Vec<OsString> =
                            events.filter_map(|e| e.name.map(OsString::from)).collect();
                        let mut seen = seen.lock().unwrap();
                        for name in names {
                            if seen.contains_key(&name) {
                                continue;
                            }
                            if std::fs::metadata(dir.join(&name)).is_ok_and(|m| m.len() == size) {
                                seen.insert(name, now);
                            }
                        }
                    }
                })
                .unwrap()
        };
        Arrivals {
            dir: dir.to_owned(),
            size,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    /// Waits until every name arrived or `timeout`; returns each one's
    /// arrival time. A name whose event was missed is found by a look at
    /// the directory once a second (its time is then that look's).
    pub fn wait_for(&self, names: &[String], timeout: Duration) -> Vec<Option<Instant>> {
        let deadline = Instant::now() + timeout;
        let mut last_sweep = Instant::now();
        loop {
            let missing: Vec<&String> = {
                let seen = self.seen.lock().unwrap();
                names
                    .iter()
                    .filter(|n| !seen.contains_key(OsString::from(n).as_os_str()))
                    .collect()
            };
            if missing.is_empty() || Instant::now() >= deadline {
                break;
            }
            if last_sweep.elapsed() >= Duration::from_secs(1) {
                last_sweep = Instant::now();
                let mut seen = self.seen.lock().unwrap();
                for name in missing {
                    if std::fs::metadata(self.dir.join(name)).is_ok_and(|m| m.len() == self.size) {
                        seen.entry(name.into()).or_insert(last_sweep);
                    }
                }
                continue;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let seen = self.seen.lock().unwrap();
        names
            .iter()
            .map(|n| seen.get(OsString::from(n).as_os_str()).copied())
            .collect()
    }
}

impl Drop for Arrivals {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Polls until `done` holds; returns when it did.
pub fn wait_until(timeout: Duration, done: impl Fn() -> bool) -> Option<Instant> {
    wait_until_every(timeout, Duration::from_millis(5), done)
}

/// [`wait_until`], looking every `period`.
pub fn wait_until_every(
    timeout: Duration,
    period: Duration,
    done: impl Fn() -> bool,
) -> Option<Instant> {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return Some(Instant::now());
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(period);
    }
}

/// Polls until `path` holds exactly `content`; returns when it did.
pub fn wait_content(path: &Path, content: &[u8], timeout: Duration) -> Option<Instant> {
    wait_until(timeout, || std::fs::read(path).is_ok_and(|c| c == content))
}

/// What the SFTP server logged between two offsets. sftp-server at
/// VERBOSE logs one line per request that names a path (open, close,
/// opendir, closedir, stat/lstat/fstat, setstat, remove, rename, mkdir,
/// rmdir, realpath); the data-moving requests (read, write, readdir) are
/// only in its DEBUG output, so they are not counted. sshd logs each SSH
/// connection and each session (an SFTP subsystem, or a command such as
/// the `md5sum` rclone runs for hashes).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Requests {
    /// SFTP request lines plus non-SFTP sessions (remote commands).
    pub total: usize,
    pub by_kind: BTreeMap<String, usize>,
    pub connections: usize,
    pub command_sessions: usize,
    /// Sum of the `written` counts of file closes.
    pub bytes_written: u64,
}

pub fn parse_requests(log: &str) -> Requests {
    let mut requests = Requests::default();
    for line in log.lines() {
        // With -E and -e, sshd and sftp-server write bare messages; a
        // syslog-style "<program>[pid]: " prefix is dropped if present.
        let message = match line.split_once("]: ") {
            Some((program, rest)) if !program.contains(' ') && program.contains('[') => rest,
            _ => line,
        }
        .trim_end_matches('\r');
        if message.starts_with("Accepted publickey") {
            requests.connections += 1;
            continue;
        }
        if message.starts_with(COMMAND_SESSION) {
            requests.command_sessions += 1;
            requests.total += 1;
            *requests.by_kind.entry("command".into()).or_default() += 1;
            continue;
        }
        let Some(kind) = sftp_request_kind(message) else {
            continue;
        };
        if kind == "close"
            && let Some(written) = message
                .rsplit_once(" written ")
                .and_then(|(_, n)| n.trim().parse::<u64>().ok())
        {
            requests.bytes_written += written;
        }
        requests.total += 1;
        *requests.by_kind.entry(kind.into()).or_default() += 1;
    }
    requests
}

/// Deterministic bytes for file number `seed`: no two files alike.
pub fn content(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Writes a big file in 1 MiB chunks that each differ a little.
pub fn write_big(path: &Path, len: usize, seed: u64) {
    use std::io::Write;
    let mut chunk = content(1 << 20, seed);
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut written = 0;
    let mut n = 0u64;
    while written < len {
        chunk[..8].copy_from_slice(&(seed ^ (n << 20)).to_le_bytes());
        let take = (len - written).min(chunk.len());
        file.write_all(&chunk[..take]).unwrap();
        written += take;
        n += 1;
    }
    file.flush().unwrap();
}

/// (inode, size) of every file below `dir`, by path relative to it.
pub fn inodes(dir: &Path) -> BTreeMap<String, (u64, u64)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(current) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else {
            continue;
        };
        for entry in entries.flatten() {
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                let relative = entry
                    .path()
                    .strip_prefix(dir)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.insert(relative, (meta.ino(), meta.len()));
            }
        }
    }
    out
}

/// Bytes of the files of `after` whose inode was not among `before`'s:
/// what the remote wrote anew rather than renamed.
pub fn rewritten_bytes(
    before: &BTreeMap<String, (u64, u64)>,
    after: &BTreeMap<String, (u64, u64)>,
) -> u64 {
    let old: HashSet<u64> = before.values().map(|(ino, _)| *ino).collect();
    after
        .values()
        .filter(|(ino, _)| !old.contains(ino))
        .map(|(_, size)| size)
        .sum()
}

/// Removes everything in `dir` except the names in `keep`.
pub fn clear_dir(dir: &Path, keep: &[&str]) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        if keep.iter().any(|k| entry.file_name() == *k) {
            continue;
        }
        let path = entry.path();
        if entry.file_type().unwrap().is_dir() {
            std::fs::remove_dir_all(&path).unwrap();
        } else {
            std::fs::remove_file(&path).unwrap();
        }
    }
}

/// Moves every entry of `from` except `keep` into `to` (renames).
pub fn move_entries(from: &Path, to: &Path, keep: &[&str]) {
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        if keep.iter().any(|k| entry.file_name() == *k) {
            continue;
        }
        std::fs::rename(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

fn as_ns<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u128(d.as_nanos())
}
