//! The cost of one rclone call: in-process through librclone (msync's way)
//! against spawning Debian's `rclone` CLI for the same work (the way msync
//! replaces). The work is a listing of a 10-file local directory, small
//! enough that the per-call overhead is what gets measured.
//!
//! Both run side by side in one process, alternating rounds so that both
//! see the same machine load. Reported per call: the median over rounds of
//! the wall time, and the CPU time, summed over every round because the
//! kernel counts it in clock ticks (10 ms): `utime + stime` of this process
//! for in-process calls (what `getrusage(RUSAGE_SELF)` gives, Go's threads
//! included) and `cutime + cstime` for the spawned CLIs (`RUSAGE_CHILDREN`).
//! They are read from /proc/self/stat because msync's nix dependency is
//! built without its `resource` feature.
//!
//! Writes bench/results/rc_call.md and rc_call.json and prints the table.
//! It only reports: nothing here asserts a time.
//!
//! Run with `make bench`, or `MSYNC_LIBRCLONE=… cargo bench --bench rc_call`.

#[path = "common/mod.rs"]
mod common;

use common::librclone_path;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use msync::rclone::{ListOptions, LoadOptions, Location, Rclone};
use serde_json::json;

const FILES: usize = 10;
const ROUNDS: usize = 5;
/// Per round. In-process calls are cheap, so a round has enough of them to
/// give the CPU clock (10 ms ticks) something to count.
const IN_PROCESS_CALLS: usize = 1000;
const SPAWNS: usize = 20;
const WARM_UP_CALLS: usize = 100;
const WARM_UP_SPAWNS: usize = 3;

fn main() {
    let library = librclone_path();
    assert!(
        msync::union::find_on_path("rclone").is_some(),
        "the rclone CLI is needed to compare with: install it with `apt-get install rclone` (or `make deps`)"
    );
    let scratch = tempfile::Builder::new()
        .prefix("msync-bench-")
        .tempdir()
        .expect("temp dir");
    let config = scratch.path().join("rclone.conf");
    std::fs::write(&config, "").unwrap();
    let dir = scratch.path().join("ten");
    std::fs::create_dir(&dir).unwrap();
    for i in 0..FILES {
        std::fs::write(dir.join(format!("file-{i:02}.txt")), vec![b'x'; 1000 + i]).unwrap();
    }

    let rclone = Rclone::load(&LoadOptions {
        library: Some(library),
        config_file: Some(config.clone()),
    })
    .expect("loading librclone");
    let cli = CliList::new(&dir, &config);
    let call = || {
        let entries = rclone
            .list(
                &Location::new(dir.to_str().unwrap(), ""),
                &ListOptions::default(),
            )
            .expect("operations/list");
        assert_eq!(entries.len(), FILES, "{entries:?}");
    };

    // Other work on the machine skews both sides; record how busy it was.
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let load = std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    for _ in 0..WARM_UP_CALLS {
        call();
    }
    for _ in 0..WARM_UP_SPAWNS {
        cli.run();
    }

    let mut in_process = Samples::default();
    let mut spawned = Samples::default();
    for round in 0..ROUNDS {
        eprintln!("round {}/{ROUNDS}", round + 1);
        in_process.round(IN_PROCESS_CALLS, Cpu::self_ticks, call);
        spawned.round(SPAWNS, Cpu::children_ticks, || cli.run());
    }

    let report = Report {
        version: rclone.version().to_owned(),
        library: rclone.path().to_owned(),
        cli_version: cli.version(),
        cpus,
        load,
        in_process,
        spawned,
    };
    let table = report.markdown();
    println!("{table}");
    let results = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/results");
    std::fs::create_dir_all(&results).unwrap();
    std::fs::write(results.join("rc_call.md"), &table).unwrap();
    std::fs::write(
        results.join("rc_call.json"),
        serde_json::to_string_pretty(&report.json()).unwrap() + "\n",
    )
    .unwrap();
    eprintln!("wrote {}/rc_call.{{md,json}}", results.display());
}

/// `rclone lsjson DIR` on the same (empty) config, asked for what
/// `operations/list` returns by default (no MIME types).
struct CliList {
    dir: PathBuf,
    config: PathBuf,
}

impl CliList {
    fn new(dir: &Path, config: &Path) -> CliList {
        CliList {
            dir: dir.to_owned(),
            config: config.to_owned(),
        }
    }

    fn command(&self) -> Command {
        let mut command = Command::new("rclone");
        command
            .env("RCLONE_CONFIG", &self.config)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit());
        command
    }

    fn run(&self) {
        let output = self
            .command()
            .args(["lsjson", "--no-mimetype"])
            .arg(&self.dir)
            .output()
            .expect("spawning rclone");
        assert!(output.status.success(), "rclone lsjson failed: {output:?}");
        let entries: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(entries.len(), FILES);
    }

    fn version(&self) -> String {
        let output = self.command().arg("version").output().unwrap();
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .trim_start_matches("rclone ")
            .to_owned()
    }
}

/// CPU time in clock ticks, from /proc/self/stat.
struct Cpu;

impl Cpu {
    fn fields() -> Vec<u64> {
        let stat = std::fs::read_to_string("/proc/self/stat").expect("reading /proc/self/stat");
        // Fields from 3 on follow the command name's closing parenthesis.
        let rest = stat.rsplit_once(')').unwrap().1;
        rest.split_whitespace()
            .map(|field| field.parse().unwrap_or(0))
            .collect()
    }

    /// utime + stime (fields 14 and 15).
    fn self_ticks() -> u64 {
        let f = Cpu::fields();
        f[11] + f[12]
    }

    /// cutime + cstime (fields 16 and 17): children waited for.
    fn children_ticks() -> u64 {
        let f = Cpu::fields();
        f[13] + f[14]
    }

    fn tick() -> Duration {
        let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .unwrap_or(100);
        Duration::from_secs(1) / per_second as u32
    }
}

/// Wall time per call of each round, and CPU ticks over all rounds.
#[derive(Default)]
struct Samples {
    wall_per_call: Vec<Duration>,
    calls: usize,
    cpu_ticks: u64,
}

impl Samples {
    fn round(&mut self, calls: usize, ticks: fn() -> u64, mut work: impl FnMut()) {
        let cpu_before = ticks();
        let started = Instant::now();
        for _ in 0..calls {
            work();
        }
        self.wall_per_call.push(started.elapsed() / calls as u32);
        self.cpu_ticks += ticks() - cpu_before;
        self.calls += calls;
    }

    fn median_wall(&self) -> Duration {
        let mut sorted = self.wall_per_call.clone();
        sorted.sort();
        sorted[sorted.len() / 2]
    }

    fn cpu_per_call(&self) -> Duration {
        Cpu::tick() * self.cpu_ticks as u32 / self.calls as u32
    }
}

struct Report {
    version: String,
    library: PathBuf,
    cli_version: String,
    cpus: usize,
    load: String,
    in_process: Samples,
    spawned: Samples,
}

impl Report {
    fn markdown(&self) -> String {
        let (a, b) = (&self.in_process, &self.spawned);
        format!(
            "| per call | in-process RC call | spawned `rclone lsjson` | spawn / in-process |
|---|---:|---:|---:|
| wall time (median of {ROUNDS} rounds) | {} | {} | {} |
| CPU time (all rounds) | {} | {} | {} |
| calls measured | {ROUNDS} × {IN_PROCESS_CALLS} | {ROUNDS} × {SPAWNS} | |

- work: `operations/list` of a {FILES}-file local directory through msync's
  `Rclone` API, against `rclone lsjson --no-mimetype` of the same directory
- librclone {} at `{}`; rclone CLI {}
- CPU time: user + system, counted in {} clock ticks, summed over all rounds
- machine: {} CPUs, load average {} at the start
",
            show(a.median_wall()),
            show(b.median_wall()),
            ratio(b.median_wall(), a.median_wall()),
            show(a.cpu_per_call()),
            show(b.cpu_per_call()),
            ratio(b.cpu_per_call(), a.cpu_per_call()),
            self.version,
            self.library.display(),
            self.cli_version,
            show(Cpu::tick()),
            self.cpus,
            self.load,
        )
    }

    fn json(&self) -> serde_json::Value {
        let side = |samples: &Samples, calls_per_round: usize| {
            json!({
                "rounds": ROUNDS,
                "calls_per_round": calls_per_round,
                "wall_per_call_ns": samples
                    .wall_per_call
                    .iter()
                    .map(Duration::as_nanos)
                    .collect::<Vec<_>>(),
                "median_wall_per_call_ns": samples.median_wall().as_nanos(),
                "cpu_ticks": samples.cpu_ticks,
                "cpu_per_call_ns": samples.cpu_per_call().as_nanos(),
            })
        };
        let (a, b) = (&self.in_process, &self.spawned);
        json!({
            "bench": "rc_call",
            "unix_time": SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs(),
            "work": format!("list a {FILES}-file local directory"),
            "librclone": {"version": self.version, "path": self.library},
            "rclone_cli_version": self.cli_version,
            "cpus": self.cpus,
            "load_average": self.load,
            "cpu_tick_ns": Cpu::tick().as_nanos(),
            "in_process": side(a, IN_PROCESS_CALLS),
            "spawned": side(b, SPAWNS),
            "ratio_wall": b.median_wall().as_secs_f64() / a.median_wall().as_secs_f64(),
            // Null when the in-process calls used less than one tick in all.
            "ratio_cpu": (!a.cpu_per_call().is_zero())
                .then(|| b.cpu_per_call().as_secs_f64() / a.cpu_per_call().as_secs_f64()),
        })
    }
}

fn show(d: Duration) -> String {
    let micros = d.as_secs_f64() * 1e6;
    if micros >= 1000.0 {
        format!("{:.2} ms", micros / 1000.0)
    } else {
        format!("{micros:.0} µs")
    }
}

fn ratio(slow: Duration, fast: Duration) -> String {
    if fast.is_zero() {
        return "n/a".into();
    }
    format!("{:.0}×", slow.as_secs_f64() / fast.as_secs_f64())
}
