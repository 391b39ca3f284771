//! The measures, each run for msync and its baseline on the same data, one
//! after the other in the same run.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::baseline::{DriverReport, EXCLUDES, SDriver};
use crate::env::{Env, Fixture, Kind, SftpLog, run};
use crate::probe::{self, CpuUse, Memory, Requests};
use crate::scale::{Scale, Tree};
use msync::service::ServiceStatus;

/// How long any one wait may take before the bench gives up loudly.
const LONG: Duration = Duration::from_secs(1200);

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Nearest-rank percentile over every file; a file that never arrived
/// counts as infinitely late.
pub fn percentile(samples: &[Option<f64>], p: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted: Vec<f64> = samples.iter().map(|s| s.unwrap_or(f64::INFINITY)).collect();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    let value = sorted[rank - 1];
    value.is_finite().then_some(value)
}

pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[sorted.len() / 2]
}

/// Writes the tree's files under `root` (which must exist).
pub fn make_tree(root: &Path, tree: &Tree, seed: u64) {
    for top in 0..tree.top {
        for sub in 0..tree.sub {
            let dir = root.join(format!("d{top:03}/s{sub:03}"));
            std::fs::create_dir_all(&dir).unwrap();
            for file in 0..tree.per_dir {
                let n = ((top * tree.sub + sub) * tree.per_dir + file) as u64;
                std::fs::write(
                    root.join(tree.path(top, sub, file)),
                    probe::content(tree.file_size, seed ^ n),
                )
                .unwrap();
            }
        }
    }
}

/// Creates the tree in a staging directory, copies it to the fixture's
/// remote with `cp -a` (same sizes and modification times: in sync) and
/// moves it into the branch.
pub fn seed_fixture(env: &Env, fixture: &Fixture, tree: &Tree, seed: u64) {
    let staging = env
        .path()
        .join("work")
        .join(format!("tree-{}", fixture.label));
    std::fs::create_dir_all(&staging).unwrap();
    make_tree(&staging, tree, seed);
    copy_into(&staging, &fixture.remote_dir);
    probe::move_entries(&staging, &fixture.branch, &[]);
    std::fs::remove_dir(&staging).unwrap();
}

/// `cp -a from/. to/`.
pub fn copy_into(from: &Path, to: &Path) {
    run(std::process::Command::new("cp")
        .arg("-a")
        .arg(from.join("."))
        .arg(to));
}

#[derive(Debug, Clone, Serialize)]
pub struct LatencyRun {
    pub system: &'static str,
    pub files: usize,
    pub rate: f64,
    pub file_size: usize,
    /// Per file, close() to complete on the remote; null: never arrived.
    pub latency_ms: Vec<Option<f64>>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub missing: usize,
    pub cpu: CpuUse,
    pub cpu_per_change_ms: f64,
    pub requests: Option<Requests>,
    pub requests_per_change: Option<f64>,
    pub driver: Option<DriverReport>,
}

impl LatencyRun {
    fn new(
        system: &'static str,
        scale: &Scale,
        closed: &[Instant],
        arrived: &[Option<Instant>],
        cpu: CpuUse,
        requests: Option<Requests>,
        driver: Option<DriverReport>,
    ) -> LatencyRun {
        let latency_ms: Vec<Option<f64>> = closed
            .iter()
            .zip(arrived)
            .map(|(c, a)| a.map(|a| ms(a.saturating_duration_since(*c))))
            .collect();
        let files = closed.len();
        LatencyRun {
            system,
            files,
            rate: scale.latency_rate,
            file_size: scale.latency_file_size,
            p50_ms: percentile(&latency_ms, 50.0),
            p99_ms: percentile(&latency_ms, 99.0),
            max_ms: percentile(&latency_ms, 100.0),
            missing: latency_ms.iter().filter(|l| l.is_none()).count(),
            latency_ms,
            cpu,
            cpu_per_change_ms: ms(cpu.cpu) / files as f64,
            requests_per_change: requests.as_ref().map(|r| r.total as f64 / files as f64),
            requests,
            driver,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ChangeRun {
    pub system: &'static str,
    pub rounds: usize,
    /// Per round, close() to the new content on the remote.
    pub wall_ms: Vec<f64>,
    pub median_wall_ms: f64,
    pub cpu: CpuUse,
    pub cpu_per_change_ms: f64,
    /// SFTP only: requests per round.
    pub requests: Vec<usize>,
    pub median_requests: Option<f64>,
    pub request_kinds: BTreeMap<String, usize>,
    pub connections: usize,
    /// SFTP only: what the server logged for the first round (the first
    /// 40 lines).
    pub first_round_log: Vec<String>,
    pub driver: Option<DriverReport>,
}

impl ChangeRun {
    fn new(
        system: &'static str,
        walls: Vec<f64>,
        cpu: CpuUse,
        requests: Vec<Requests>,
        first_round_log: Vec<String>,
        driver: Option<DriverReport>,
    ) -> ChangeRun {
        let rounds = walls.len();
        let counts: Vec<usize> = requests.iter().map(|r| r.total).collect();
        let mut kinds = BTreeMap::new();
        for r in &requests {
            for (kind, n) in &r.by_kind {
                *kinds.entry(kind.clone()).or_default() += n;
            }
        }
        ChangeRun {
            system,
            rounds,
            median_wall_ms: median(&walls),
            wall_ms: walls,
            cpu,
            cpu_per_change_ms: ms(cpu.cpu) / rounds as f64,
            median_requests: (!counts.is_empty())
                .then(|| median(&counts.iter().map(|&c| c as f64).collect::<Vec<_>>())),
            requests: counts,
            request_kinds: kinds,
            connections: requests.iter().map(|r| r.connections).sum(),
            first_round_log,
            driver,
        }
    }
}

/// SFTP requests of one kind of change (a 4 KiB file made, overwritten,
/// renamed or deleted), msync only; index writes left out (one journal
/// covers every change of 10 s).
#[derive(Debug, Clone, Serialize)]
pub struct KindRun {
    pub kind: &'static str,
    /// Per measured round (a first, warm-up round makes the trash days).
    pub requests: Vec<usize>,
    pub median_requests: f64,
    pub request_kinds: BTreeMap<String, usize>,
}

/// The kinds of change [`kind_runs`] makes, each with the issue's target.
pub const CHANGE_KINDS: &[(&str, usize)] =
    &[("new", 5), ("overwrite", 7), ("rename", 3), ("delete", 3)];

/// Makes each kind of change `rounds` times (after a warm-up round) in
/// `kinds/` of the branch, each waited for on the remote and until the
/// service is quiet, and counts the requests each cost.
fn kind_runs(fixture: &Fixture, log: &SftpLog, rounds: usize, salt: u64) -> Vec<KindRun> {
    let (branch, remote) = (
        fixture.branch.join("kinds"),
        fixture.remote_dir.join("kinds"),
    );
    std::fs::create_dir_all(&branch).unwrap();
    fixture.wait_quiet(LONG);
    let mut counted: BTreeMap<&str, Vec<Requests>> = BTreeMap::new();
    for round in 0..=rounds {
        let (made, moved) = (format!("n{round}.dat"), format!("m{round}.dat"));
        for &(kind, _) in CHANGE_KINDS {
            let log0 = log.len();
            match kind {
                "new" | "overwrite" => {
                    let data = probe::content(4096, salt ^ (round as u64) << 8 ^ kind.len() as u64);
                    std::fs::write(branch.join(&made), &data).unwrap();
                    probe::wait_content(&remote.join(&made), &data, LONG)
                        .unwrap_or_else(|| panic!("msync never sent {kind} {made}"));
                }
                "rename" => {
                    std::fs::rename(branch.join(&made), branch.join(&moved)).unwrap();
                    probe::wait_until(LONG, || {
                        remote.join(&moved).exists() && !remote.join(&made).exists()
                    })
                    .unwrap_or_else(|| panic!("msync never renamed {made}"));
                }
                _ => {
                    std::fs::remove_file(branch.join(&moved)).unwrap();
                    probe::wait_until(LONG, || !remote.join(&moved).exists())
                        .unwrap_or_else(|| panic!("msync never deleted {moved}"));
                }
            }
            fixture.wait_quiet(LONG);
            if round > 0 {
                let text: String = log
                    .since(log0)
                    .lines()
                    .filter(|line| !line.contains("/.msync/meta/"))
                    .map(|line| format!("{line}\n"))
                    .collect();
                counted
                    .entry(kind)
                    .or_default()
                    .push(probe::parse_requests(&text));
            }
        }
    }
    CHANGE_KINDS
        .iter()
        .map(|&(kind, _)| {
            let runs = &counted[kind];
            let mut request_kinds = BTreeMap::new();
            for r in runs {
                for (name, n) in &r.by_kind {
                    *request_kinds.entry(name.clone()).or_default() += n;
                }
            }
            let requests: Vec<usize> = runs.iter().map(|r| r.total).collect();
            KindRun {
                kind,
                median_requests: median(&requests.iter().map(|&c| c as f64).collect::<Vec<_>>()),
                requests,
                request_kinds,
            }
        })
        .collect()
}

#[derive(Debug, Clone, Serialize)]
pub struct IdleRun {
    pub seconds: u64,
    pub cpu: CpuUse,
    pub percent_of_a_core: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BranchRun {
    pub remote: Kind,
    pub size: &'static str,
    pub files: usize,
    pub dirs: usize,
    pub start_to_settled_ms: f64,
    pub inotify_watches: usize,
    pub memory_settled: Memory,
    pub memory_end: Memory,
    pub service_pid: u32,
    pub latency: Vec<LatencyRun>,
    pub change: Vec<ChangeRun>,
    /// SFTP only.
    pub kinds: Vec<KindRun>,
    pub idle: Option<IdleRun>,
}

/// Writes `data` to `relative` in the branch and waits until the remote
/// holds it and the service is quiet: close to arrival in ms, and the
/// service's CPU samples around the change.
fn one_change(
    fixture: &Fixture,
    pid: u32,
    relative: &str,
    data: &[u8],
) -> (f64, (probe::CpuSample, probe::CpuSample)) {
    let before = probe::cpu_sample(pid);
    std::fs::write(fixture.branch.join(relative), data).unwrap();
    let closed = Instant::now();
    let seen = probe::wait_content(&fixture.remote_dir.join(relative), data, LONG)
        .unwrap_or_else(|| panic!("msync never sent {relative}:\n{}", fixture.log_tail()));
    let wall = ms(seen - closed);
    fixture.wait_quiet(LONG);
    (wall, (before, probe::cpu_sample(pid)))
}

/// Starts msync on the fixture and waits until it is settled: how long
/// that took, the status then and the service's memory then.
fn start_and_settle(fixture: &mut Fixture, scale: &Scale) -> (Duration, ServiceStatus, Memory) {
    let started = Instant::now();
    fixture.start(scale.debounce());
    let settled = fixture.wait_settled(LONG);
    let start_to_settled = started.elapsed();
    let memory = probe::memory(settled.pid);
    eprintln!(
        "  msync: settled after {:.1} s, {} watches, VmHWM {} MiB",
        start_to_settled.as_secs_f64(),
        settled.inotify_watches,
        memory.hwm_kib / 1024
    );
    (start_to_settled, settled, memory)
}

/// Writes `count` files into `dir` at `rate` per second; returns when each
/// was closed.
fn write_stream(dir: &Path, names: &[String], size: usize, rate: f64, salt: u64) -> Vec<Instant> {
    let start = Instant::now();
    let mut closed = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let data = probe::content(size, salt ^ (i as u64) << 20);
        std::fs::write(dir.join(name), data).unwrap();
        closed.push(Instant::now());
    }
    closed
}

fn latency_names(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("f{i:05}.dat")).collect()
}

/// Measures 1, 2, 5 and 6 on one branch: msync's service first, then S,
/// on the same branch and remote.
pub fn branch_run(
    env: &Env,
    fixture: &mut Fixture,
    tree: &Tree,
    size: &'static str,
    scale: &Scale,
    idle: bool,
) -> BranchRun {
    for dir in ["lat-msync", "lat-s"] {
        std::fs::create_dir_all(fixture.branch.join(dir)).unwrap();
        std::fs::create_dir_all(fixture.remote_dir.join(dir)).unwrap();
    }
    let log = env.sftp_log();
    let sftp = fixture.kind == Kind::Sftp;
    let names = latency_names(scale.latency_files);
    // New content in every fixture: the big tree moves on from one
    // fixture to the next with the files the rounds changed.
    let salt = fixture
        .label
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        });

    // msync: start and settle (measure 5).
    eprintln!("  msync: start on {} files", tree.files());
    let (start_to_settled, settled, memory_settled) = start_and_settle(fixture, scale);
    let pid = settled.pid;
    std::thread::sleep(Duration::from_millis(500));

    // Measure 1, msync.
    eprintln!(
        "  msync: {} files at {}/s",
        scale.latency_files, scale.latency_rate
    );
    let remote_lat = fixture.remote_dir.join("lat-msync");
    let arrivals = probe::Arrivals::watch(&remote_lat, scale.latency_file_size as u64);
    let log0 = log.len();
    let cpu0 = probe::cpu_sample(pid);
    let closed = write_stream(
        &fixture.branch.join("lat-msync"),
        &names,
        scale.latency_file_size,
        scale.latency_rate,
        salt ^ 1,
    );
    let arrived = arrivals.wait_for(&names, LONG);
    std::thread::sleep(Duration::from_millis(500));
    let cpu = probe::cpu_used(&[(cpu0, probe::cpu_sample(pid))]);
    let requests = sftp.then(|| probe::parse_requests(&log.since(log0)));
    drop(arrivals);
    let latency_msync = LatencyRun::new("msync", scale, &closed, &arrived, cpu, requests, None);
    fixture.wait_quiet(LONG);

    // Measure 2, msync.
    eprintln!("  msync: {} single changes", scale.change_rounds);
    let mut pairs = Vec::new();
    let mut walls = Vec::new();
    let mut requests = Vec::new();
    let mut first_log = Vec::new();
    for round in 0..scale.change_rounds {
        let relative = tree.changed_file(round, 0);
        let data = probe::content(tree.file_size, salt ^ 0xC0FFEE ^ round as u64);
        assert_ne!(
            std::fs::read(fixture.remote_dir.join(&relative)).ok(),
            Some(data.clone())
        );
        let log0 = log.len();
        let (wall, cpu) = one_change(fixture, pid, &relative, &data);
        walls.push(wall);
        pairs.push(cpu);
        if sftp {
            let text = log.since(log0);
            if first_log.is_empty() {
                first_log = text.lines().take(40).map(str::to_owned).collect();
            }
            requests.push(probe::parse_requests(&text));
        }
    }
    let change_msync = ChangeRun::new(
        "msync",
        walls,
        probe::cpu_used(&pairs),
        requests,
        std::mem::take(&mut first_log),
        None,
    );

    // Measure 2, per kind of change.
    let kinds = if sftp {
        eprintln!("  msync: requests of each kind of change");
        kind_runs(fixture, &log, scale.kind_rounds, salt ^ 0x4B1D)
    } else {
        Vec::new()
    };

    // Measure 6.
    let idle = idle.then(|| {
        eprintln!("  msync: idle for {} s", scale.idle_secs);
        fixture.wait_quiet(LONG);
        std::thread::sleep(Duration::from_secs(1));
        let before = probe::cpu_sample(pid);
        std::thread::sleep(Duration::from_secs(scale.idle_secs));
        let cpu = probe::cpu_used(&[(before, probe::cpu_sample(pid))]);
        IdleRun {
            seconds: scale.idle_secs,
            cpu,
            percent_of_a_core: cpu.cpu.as_secs_f64() / scale.idle_secs as f64 * 100.0,
        }
    });
    let memory_end = probe::memory(pid);
    fixture.stop();

    // Measure 1, S.
    eprintln!(
        "  S: {} files at {}/s",
        scale.latency_files, scale.latency_rate
    );
    let window = Duration::from_millis(scale.batch_window_ms);
    let remote_lat = fixture.remote_dir.join("lat-s");
    let arrivals = probe::Arrivals::watch(&remote_lat, scale.latency_file_size as u64);
    let driver = SDriver::start(env, &fixture.branch, &fixture.remote, window);
    let log0 = log.len();
    let children0 = probe::children_cpu();
    let closed = write_stream(
        &fixture.branch.join("lat-s"),
        &names,
        scale.latency_file_size,
        scale.latency_rate,
        salt ^ 2,
    );
    let arrived = arrivals.wait_for(&names, LONG);
    driver.wait_idle(LONG);
    let (report, setup) = driver.stop();
    let cpu = CpuUse {
        cpu: (probe::children_cpu() - children0).saturating_sub(setup),
        ..CpuUse::default()
    };
    let requests = sftp.then(|| probe::parse_requests(&log.since(log0)));
    drop(arrivals);
    eprintln!("  S: {} syncs", report.syncs.len());
    let latency_s = LatencyRun::new("S", scale, &closed, &arrived, cpu, requests, Some(report));

    // Measure 2, S.
    eprintln!("  S: {} single changes", scale.change_rounds_baseline);
    let driver = SDriver::start(env, &fixture.branch, &fixture.remote, window);
    let children0 = probe::children_cpu();
    let mut walls = Vec::new();
    let mut requests = Vec::new();
    for round in 0..scale.change_rounds_baseline {
        let relative = tree.changed_file(round, 1000);
        let data = probe::content(tree.file_size, salt ^ 0xBEEF ^ round as u64);
        assert_ne!(
            std::fs::read(fixture.remote_dir.join(&relative)).ok(),
            Some(data.clone())
        );
        let log0 = log.len();
        std::fs::write(fixture.branch.join(&relative), &data).unwrap();
        let closed = Instant::now();
        let seen = probe::wait_content(&fixture.remote_dir.join(&relative), &data, LONG)
            .unwrap_or_else(|| panic!("S never sent {relative}"));
        walls.push(ms(seen - closed));
        driver.wait_idle(LONG);
        if sftp {
            let text = log.since(log0);
            if first_log.is_empty() {
                first_log = text.lines().take(40).map(str::to_owned).collect();
            }
            requests.push(probe::parse_requests(&text));
        }
    }
    let (report, setup) = driver.stop();
    let cpu = CpuUse {
        cpu: (probe::children_cpu() - children0).saturating_sub(setup),
        ..CpuUse::default()
    };
    let change_s = ChangeRun::new("S", walls, cpu, requests, first_log, Some(report));

    BranchRun {
        remote: fixture.kind,
        size,
        files: tree.files(),
        dirs: tree.dirs(),
        start_to_settled_ms: ms(start_to_settled),
        inotify_watches: settled.inotify_watches,
        memory_settled,
        memory_end,
        service_pid: pid,
        latency: vec![latency_msync, latency_s],
        change: vec![change_msync, change_s],
        kinds,
        idle,
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct BulkSide {
    pub system: &'static str,
    pub wall_ms: Vec<f64>,
    pub cpu_ms: Vec<f64>,
    pub median_wall_ms: f64,
    pub mb_per_s: f64,
}

impl BulkSide {
    fn new(system: &'static str, bytes: u64, wall: Vec<f64>, cpu: Vec<f64>) -> BulkSide {
        let median_wall_ms = median(&wall);
        BulkSide {
            system,
            mb_per_s: bytes as f64 / 1e6 / (median_wall_ms / 1e3),
            median_wall_ms,
            wall_ms: wall,
            cpu_ms: cpu,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct BulkRun {
    pub remote: Kind,
    pub files: usize,
    pub bytes: u64,
    pub rounds: usize,
    /// Upload: msync's start-time reconcile against `rclone sync`.
    pub upload: Vec<BulkSide>,
    /// Download: `msync import` against `rclone copy`.
    pub import: Vec<BulkSide>,
}

/// R's options: msync's transfers, and its policy on local and SFTP
/// remotes of checking sizes, not hashes, after a transfer (there a hash
/// costs another read of every file), so both sides do the same work.
const R_OPTIONS: &[&str] = &["--transfers", "4", "--ignore-checksum"];

/// `rounds` rounds of msync (side 0) against R (side 1), alternating which
/// goes first so both see the same drift of the machine; `measure` runs
/// one side once and gives its wall time and CPU. `what` names the rounds
/// in the progress lines.
fn alternating(
    what: &str,
    bytes: u64,
    rounds: usize,
    mut measure: impl FnMut(usize, usize) -> (Duration, Duration),
) -> Vec<BulkSide> {
    let mut sides: [(Vec<f64>, Vec<f64>); 2] = Default::default();
    for round in 0..rounds {
        for side in if round % 2 == 0 { [0, 1] } else { [1, 0] } {
            let (wall, cpu) = measure(side, round);
            eprintln!(
                "  {what} round {}: {} {:.2} s",
                round + 1,
                ["msync", "R"][side],
                wall.as_secs_f64()
            );
            sides[side].0.push(ms(wall));
            sides[side].1.push(ms(cpu));
        }
    }
    let [m, r] = sides;
    vec![
        BulkSide::new("msync", bytes, m.0, m.1),
        BulkSide::new("R", bytes, r.0, r.1),
    ]
}

/// Files and bytes below `dir`.
fn tally(dir: &Path) -> (usize, u64) {
    let all = probe::inodes(dir);
    (all.len(), all.values().map(|(_, size)| size).sum())
}

/// Measure 3: the same data uploaded by msync's start-time reconcile and
/// by `rclone sync`, and downloaded by `msync import` and `rclone copy`,
/// in alternating order, the destination emptied before each run. Each
/// msync run is a fresh install (a first start, a first import): a
/// service that once saw the remote full refuses, rightly, to reconcile
/// onto it emptied.
pub fn bulk_run(env: &Env, kind: Kind, scale: &Scale) -> BulkRun {
    let remote_path = format!("bulk-{}", kind.name());
    let remote = format!("{}:{remote_path}", kind.name());
    let remote_dir = env.remote_root(kind).join(&remote_path);
    let work = env.path().join("work");
    // Where the data waits between runs: S's source, moved into msync's
    // branch for its runs.
    let source = work.join(format!("bulk-source-{}", kind.name()));
    let data = source.join("bulk");
    std::fs::create_dir_all(data.join("small")).unwrap();
    std::fs::create_dir_all(data.join("big")).unwrap();
    std::fs::create_dir_all(&remote_dir).unwrap();
    for i in 0..scale.bulk_small_files {
        std::fs::write(
            data.join(format!("small/s{i:05}.dat")),
            probe::content(scale.bulk_small_size, 0x5EED ^ i as u64),
        )
        .unwrap();
    }
    for i in 0..scale.bulk_big_files {
        probe::write_big(
            &data.join(format!("big/b{i}.dat")),
            scale.bulk_big_size,
            0xB16 ^ i as u64,
        );
    }
    let (files, bytes) = tally(&data);
    let check = |dir: &Path, who: &str| {
        let got = tally(dir);
        assert_eq!(
            got,
            (files, bytes),
            "{who} left {} incomplete",
            dir.display()
        );
    };

    let upload = alternating("upload", bytes, scale.bulk_rounds, |side, round| {
        probe::clear_dir(&remote_dir, &[]);
        let (wall, cpu) = if side == 0 {
            let label = format!("bulk-{}-up{round}", kind.name());
            let mut fixture = Fixture::at(env, kind, &label, &remote_path);
            std::fs::rename(&data, fixture.branch.join("bulk")).unwrap();
            nix::unistd::sync();
            let started = Instant::now();
            fixture.start(scale.debounce());
            let status = fixture.wait_settled(LONG);
            let wall = started.elapsed();
            let cpu = probe::process_ticks_cpu(status.pid);
            fixture.stop();
            std::fs::rename(fixture.branch.join("bulk"), &data).unwrap();
            (wall, cpu)
        } else {
            nix::unistd::sync();
            let children0 = probe::children_cpu();
            let started = Instant::now();
            run(env
                .rclone()
                .arg("sync")
                .arg(&source)
                .arg(&remote)
                .args(R_OPTIONS)
                .args(EXCLUDES));
            (started.elapsed(), probe::children_cpu() - children0)
        };
        check(
            &remote_dir.join("bulk"),
            ["msync start", "rclone sync"][side],
        );
        (wall, cpu)
    });
    std::fs::remove_dir_all(&source).unwrap();

    let import = alternating("import", bytes, scale.bulk_rounds, |side, round| {
        let children0;
        let wall;
        if side == 0 {
            let label = format!("bulk-{}-in{round}", kind.name());
            let fixture = Fixture::at(env, kind, &label, &remote_path);
            nix::unistd::sync();
            children0 = probe::children_cpu();
            let started = Instant::now();
            run(env.msync().arg("import").arg(&fixture.install));
            wall = started.elapsed();
            check(&fixture.branch.join("bulk"), "msync import");
            probe::clear_dir(&fixture.branch, &[".msync-branch"]);
        } else {
            let target = work.join(format!("bulk-download-{}", kind.name()));
            std::fs::create_dir_all(&target).unwrap();
            nix::unistd::sync();
            children0 = probe::children_cpu();
            let started = Instant::now();
            run(env
                .rclone()
                .arg("copy")
                .arg(&remote)
                .arg(&target)
                .args(R_OPTIONS)
                .args(["--exclude", "/.msync/**"]));
            wall = started.elapsed();
            check(&target.join("bulk"), "rclone copy");
            std::fs::remove_dir_all(&target).unwrap();
        }
        (wall, probe::children_cpu() - children0)
    });
    probe::clear_dir(&remote_dir, &[]);

    BulkRun {
        remote: kind,
        files,
        bytes,
        rounds: scale.bulk_rounds,
        upload,
        import,
    }
}

/// Measure 8: many small files at once.
#[derive(Debug, Clone, Serialize)]
pub struct ManyRun {
    pub remote: Kind,
    pub files: usize,
    pub bytes: u64,
    pub rounds: usize,
    /// msync: from the copy into the branch of a running service until
    /// every file is on the remote; R: `rclone copy --transfers 4`.
    pub sides: Vec<BulkSide>,
}

/// Measure 8: `cp -r` of a tree of many small files into the branch of a
/// running, settled service, timed until the remote holds every file,
/// against `rclone copy --transfers 4` of the same tree, in alternating
/// order, the remote emptied before each run. msync's CPU is the
/// service's over the run; R's is rclone's.
pub fn many_run(env: &Env, kind: Kind, scale: &Scale) -> ManyRun {
    let remote_path = format!("many-{}", kind.name());
    let remote = format!("{}:{remote_path}", kind.name());
    let remote_dir = env.remote_root(kind).join(&remote_path);
    let source = env
        .path()
        .join("work")
        .join(format!("many-source-{}", kind.name()));
    for i in 0..scale.many_files {
        let dir = source.join(format!("d{:02}", i % 100));
        if i < 100 {
            std::fs::create_dir_all(&dir).unwrap();
        }
        std::fs::write(
            dir.join(format!("f{i:05}.dat")),
            probe::content(scale.many_file_size, 0x3A11 ^ i as u64),
        )
        .unwrap();
    }
    let (files, bytes) = tally(&source);
    std::fs::create_dir_all(&remote_dir).unwrap();
    let arrived = |dir: &Path| tally(dir) == (files, bytes);

    let sides = alternating(
        "many small files",
        bytes,
        scale.bulk_rounds,
        |side, round| {
            probe::clear_dir(&remote_dir, &[]);
            nix::unistd::sync();
            if side == 0 {
                let label = format!("many-{}-{round}", kind.name());
                let mut fixture = Fixture::at(env, kind, &label, &remote_path);
                fixture.start(scale.debounce());
                let pid = fixture.wait_settled(LONG).pid;
                let before = probe::cpu_sample(pid);
                let started = Instant::now();
                run(Command::new("cp")
                    .arg("-r")
                    .arg(&source)
                    .arg(fixture.branch.join("many")));
                // Polled every 100 ms: a walk of the remote costs CPU the
                // service would miss.
                let done = probe::wait_until_every(LONG, Duration::from_millis(100), || {
                    arrived(&remote_dir.join("many"))
                })
                .unwrap_or_else(|| panic!("msync never sent every file of {}", source.display()));
                let wall = done - started;
                fixture.wait_quiet(LONG);
                let cpu = probe::cpu_used(&[(before, probe::cpu_sample(pid))]).cpu;
                fixture.stop();
                (wall, cpu)
            } else {
                let children0 = probe::children_cpu();
                let started = Instant::now();
                run(env
                    .rclone()
                    .arg("copy")
                    .arg(&source)
                    .arg(format!("{remote}/many"))
                    .args(R_OPTIONS));
                let wall = started.elapsed();
                assert!(
                    arrived(&remote_dir.join("many")),
                    "rclone copy left files out"
                );
                (wall, probe::children_cpu() - children0)
            }
        },
    );
    probe::clear_dir(&remote_dir, &[]);
    std::fs::remove_dir_all(&source).unwrap();
    ManyRun {
        remote: kind,
        files,
        bytes,
        rounds: scale.bulk_rounds,
        sides,
    }
}

/// Measure 9: a branch of a million files.
#[derive(Debug, Clone, Serialize)]
pub struct HugeRun {
    pub remote: Kind,
    pub files: usize,
    pub dirs: usize,
    /// Making the tree and its copy on the remote (`cp -a`), for scale.
    pub seed_ms: f64,
    pub start_to_settled_ms: f64,
    pub memory_settled: Memory,
    pub memory_end: Memory,
    pub inotify_watches: usize,
    /// `fs.inotify.max_user_watches` during the run.
    pub max_user_watches: u64,
    pub change: ChangeRun,
}

/// Measure 9: a branch of a million files, in sync with a local remote
/// (as after an import), started and waited for until settled, then the
/// single changes of measure 2 made on it. msync only: S's whole-branch
/// sync takes minutes per change at this size.
pub fn huge_run(env: &Env, scale: &Scale) -> HugeRun {
    let tree = &scale.huge;
    let mut fixture = Fixture::new(env, Kind::Local, "huge-local");
    eprintln!("  making {} files", crate::report::thousands(tree.files()));
    let seeding = Instant::now();
    seed_fixture(env, &fixture, tree, 3);
    let seed = seeding.elapsed();
    eprintln!("  made in {:.0} s; msync: start", seed.as_secs_f64());
    let (start_to_settled, settled, memory_settled) = start_and_settle(&mut fixture, scale);
    let pid = settled.pid;
    fixture.wait_quiet(LONG);
    let mut walls = Vec::new();
    let mut pairs = Vec::new();
    for round in 0..scale.change_rounds {
        let relative = tree.changed_file(round, 0);
        let data = probe::content(tree.file_size, 0x4A6E ^ round as u64);
        let (wall, cpu) = one_change(&fixture, pid, &relative, &data);
        walls.push(wall);
        pairs.push(cpu);
    }
    let change = ChangeRun::new(
        "msync",
        walls,
        probe::cpu_used(&pairs),
        Vec::new(),
        Vec::new(),
        None,
    );
    let memory_end = probe::memory(pid);
    fixture.stop();
    probe::clear_dir(&fixture.branch, &[".msync-branch"]);
    probe::clear_dir(&fixture.remote_dir, &[]);
    HugeRun {
        remote: Kind::Local,
        files: tree.files(),
        dirs: tree.dirs(),
        seed_ms: ms(seed),
        start_to_settled_ms: ms(start_to_settled),
        memory_settled,
        memory_end,
        inotify_watches: settled.inotify_watches,
        max_user_watches: std::fs::read_to_string("/proc/sys/fs/inotify/max_user_watches")
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(0),
        change,
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RenameSide {
    pub system: &'static str,
    pub wall_ms: f64,
    /// Bytes of the files at the new name that the remote wrote anew
    /// (a new inode) instead of moving.
    pub rewritten_bytes: u64,
    /// msync only: `bytes_sent` in its status, before and after.
    pub status_bytes_sent: Option<u64>,
    pub sftp_bytes_written: Option<u64>,
    pub requests: Option<Requests>,
    pub cpu: CpuUse,
    pub driver: Option<DriverReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RenameRun {
    pub remote: Kind,
    pub files: usize,
    pub bytes: u64,
    pub sides: Vec<RenameSide>,
}

/// Polls until `new` below `root` holds `expected` (names and sizes) and
/// `old` is gone.
fn wait_renamed(
    root: &Path,
    old: &str,
    new: &str,
    expected: &BTreeMap<String, (u64, u64)>,
) -> Option<Instant> {
    let deadline = Instant::now() + LONG;
    let want: BTreeMap<&String, u64> = expected.iter().map(|(k, (_, s))| (k, *s)).collect();
    loop {
        let now = probe::inodes(&root.join(new));
        let have: BTreeMap<&String, u64> = now.iter().map(|(k, (_, s))| (k, *s)).collect();
        if have == want && !root.join(old).exists() {
            return Some(Instant::now());
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Measure 4: a directory renamed in the branch; what the remote writes
/// again, msync then S.
pub fn rename_run(env: &Env, kind: Kind, scale: &Scale) -> RenameRun {
    let mut fixture = Fixture::new(env, kind, &format!("rename-{}", kind.name()));
    let staging = env
        .path()
        .join("work")
        .join(format!("rename-{}", kind.name()));
    std::fs::create_dir_all(staging.join("album")).unwrap();
    std::fs::create_dir_all(staging.join("other")).unwrap();
    for i in 0..scale.rename_files {
        probe::write_big(
            &staging.join(format!("album/photo{i:02}.raw")),
            scale.rename_file_size,
            0xA1B ^ i as u64,
        );
    }
    for i in 0..10 {
        std::fs::write(
            staging.join(format!("other/note{i}.txt")),
            probe::content(1000, i),
        )
        .unwrap();
    }
    copy_into(&staging, &fixture.remote_dir);
    probe::move_entries(&staging, &fixture.branch, &[]);
    std::fs::remove_dir(&staging).unwrap();
    let log = env.sftp_log();
    let sftp = kind == Kind::Sftp;
    let remote = fixture.remote_dir.clone();
    let mut sides = Vec::new();

    // msync.
    fixture.start(scale.debounce());
    let status = fixture.wait_settled(LONG);
    let pid = status.pid;
    let sent0 = status.branches[0].bytes_sent;
    let before = probe::inodes(&remote.join("album"));
    let log0 = log.len();
    let cpu0 = probe::cpu_sample(pid);
    let renamed = Instant::now();
    std::fs::rename(fixture.branch.join("album"), fixture.branch.join("album-m")).unwrap();
    let done = wait_renamed(&remote, "album", "album-m", &before)
        .unwrap_or_else(|| panic!("msync never renamed album:\n{}", fixture.log_tail()));
    let status = fixture.wait_quiet(LONG);
    let cpu = probe::cpu_used(&[(cpu0, probe::cpu_sample(pid))]);
    let requests = sftp.then(|| probe::parse_requests(&log.since(log0)));
    let after = probe::inodes(&remote.join("album-m"));
    sides.push(RenameSide {
        system: "msync",
        wall_ms: ms(done - renamed),
        rewritten_bytes: probe::rewritten_bytes(&before, &after),
        status_bytes_sent: Some(status.branches[0].bytes_sent.saturating_sub(sent0)),
        sftp_bytes_written: requests.as_ref().map(|r| r.bytes_written),
        requests,
        cpu,
        driver: None,
    });
    fixture.stop();

    // S.
    let before = probe::inodes(&remote.join("album-m"));
    let driver = SDriver::start(
        env,
        &fixture.branch,
        &fixture.remote,
        Duration::from_millis(scale.batch_window_ms),
    );
    let log0 = log.len();
    let children0 = probe::children_cpu();
    let renamed = Instant::now();
    std::fs::rename(
        fixture.branch.join("album-m"),
        fixture.branch.join("album-s"),
    )
    .unwrap();
    let done = wait_renamed(&remote, "album-m", "album-s", &before)
        .unwrap_or_else(|| panic!("S never renamed album-m"));
    driver.wait_idle(LONG);
    let (report, setup) = driver.stop();
    let cpu = CpuUse {
        cpu: (probe::children_cpu() - children0).saturating_sub(setup),
        ..CpuUse::default()
    };
    let requests = sftp.then(|| probe::parse_requests(&log.since(log0)));
    let after = probe::inodes(&remote.join("album-s"));
    sides.push(RenameSide {
        system: "S",
        wall_ms: ms(done - renamed),
        rewritten_bytes: probe::rewritten_bytes(&before, &after),
        status_bytes_sent: None,
        sftp_bytes_written: requests.as_ref().map(|r| r.bytes_written),
        requests,
        cpu,
        driver: Some(report),
    });
    probe::clear_dir(&fixture.branch, &[".msync-branch"]);
    probe::clear_dir(&fixture.remote_dir, &[".msync"]);
    RenameRun {
        remote: kind,
        files: scale.rename_files,
        bytes: scale.rename_bytes(),
        sides,
    }
}
