//! msync against the approaches it replaces, side by side in one run on
//! the same data (issue 5):
//!
//! 1. propagation latency of a steady stream of small files into a small
//!    and a big branch, and CPU per change — msync vs S;
//! 2. one change on the big branch: CPU and SFTP requests — msync vs S;
//! 3. bulk upload (start-time reconcile) and download (import) — msync vs R;
//! 4. renaming a big directory: bytes sent again — msync vs S;
//! 5. the big branch's start-to-settled time, memory and inotify watches;
//! 6. the idle service's CPU;
//! 7. the per-call numbers of `benches/rc_call.rs`, when present;
//! 8. many small files copied into a running service's branch — msync vs R;
//! 9. a branch of a million files: start to settled, memory, watches and
//!    the cost of one change (when named, or at full scale).
//!
//! S is the original approach (inotifywait + a whole-branch `rclone sync`
//! per batch of events), R plain rclone; both are Debian's tools. Every
//! comparison runs against a local-directory remote and a real SFTP
//! server on 127.0.0.1. It only reports, never asserts a time; a missed
//! target says MISSED in the report. Writes bench/results/sync.md and
//! sync.json. See bench/README.md for the knobs (MSYNC_BENCH_SCALE …).

#[allow(dead_code)]
#[path = "../../tests/it/sshd.rs"]
mod sshd;

mod baseline;
mod env;
mod guard;
mod measures;
mod probe;
mod report;
mod scale;

#[path = "../common/mod.rs"]
mod common;

use common::librclone_path;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::json;

use env::{Env, Fixture};
use scale::{Scale, Selection};

/// What tests/it/sshd.rs takes from the test crate's `util`.
mod util {
    pub fn require_tool(program: &str, package: &str) {
        assert!(
            msync::union::find_on_path(program).is_some(),
            "{program} is needed by the sync bench: install it with `apt-get install {package}` (or `make deps`)"
        );
    }

    pub fn run(mut command: std::process::Command) -> std::process::Output {
        crate::env::run(&mut command)
    }
}

fn main() {
    guard::install();
    let scale = Scale::from_env();
    let selection = Selection::from_env();
    let keep = std::env::var_os("MSYNC_BENCH_KEEP").is_some_and(|v| v == "1");
    preflight();
    let librclone = librclone_path();
    let msync = PathBuf::from(env!("CARGO_BIN_EXE_msync"));
    let started = Instant::now();
    let load_start = load_average();
    eprintln!(
        "sync bench, {} scale: {selection:?}\nmsync {}, librclone {}",
        scale.name,
        msync.display(),
        librclone.display()
    );

    let env = Env::new(msync, librclone.clone(), keep);
    eprintln!("scratch: {}", env.path().display());
    let mut branch = Vec::new();
    let mut bulk = Vec::new();
    let mut many = Vec::new();
    let mut rename = Vec::new();

    if selection.small {
        for &kind in &selection.remotes {
            eprintln!("[small branch, {}]", kind.name());
            let mut fixture = Fixture::new(&env, kind, &format!("small-{}", kind.name()));
            measures::seed_fixture(&env, &fixture, &scale.small, 1);
            branch.push(measures::branch_run(
                &env,
                &mut fixture,
                &scale.small,
                "small",
                &scale,
                false,
            ));
            probe::clear_dir(&fixture.branch, &[".msync-branch"]);
            probe::clear_dir(&fixture.remote_dir, &[]);
        }
    }
    if selection.big {
        // One big tree, made once: after the first remote, the branch's
        // and the remote's copies move on to the next fixture (renames).
        let mut previous: Option<(PathBuf, PathBuf)> = None;
        let last = *selection.remotes.last().unwrap();
        for &kind in &selection.remotes {
            eprintln!("[big branch, {}]", kind.name());
            let mut fixture = Fixture::new(&env, kind, &format!("big-{}", kind.name()));
            match previous.take() {
                None => {
                    let made = Instant::now();
                    measures::seed_fixture(&env, &fixture, &scale.big, 2);
                    eprintln!(
                        "  made {} files in {:.1} s",
                        scale.big.files(),
                        made.elapsed().as_secs_f64()
                    );
                }
                Some((branch_dir, remote_dir)) => {
                    move_tree(&branch_dir, &fixture.branch);
                    move_tree(&remote_dir, &fixture.remote_dir);
                }
            }
            branch.push(measures::branch_run(
                &env,
                &mut fixture,
                &scale.big,
                "big",
                &scale,
                kind == last,
            ));
            previous = Some((fixture.branch.clone(), fixture.remote_dir.clone()));
        }
        if let Some((branch_dir, remote_dir)) = previous {
            probe::clear_dir(&branch_dir, &[".msync-branch"]);
            probe::clear_dir(&remote_dir, &[]);
        }
    }
    if selection.bulk {
        for &kind in &selection.remotes {
            eprintln!("[bulk, {}]", kind.name());
            bulk.push(measures::bulk_run(&env, kind, &scale));
        }
    }
    if selection.many {
        for &kind in &selection.remotes {
            eprintln!("[many small files, {}]", kind.name());
            many.push(measures::many_run(&env, kind, &scale));
        }
    }
    let huge = selection.huge.then(|| {
        eprintln!("[a million files, local]");
        measures::huge_run(&env, &scale)
    });
    if selection.rename {
        for &kind in &selection.remotes {
            eprintln!("[rename, {}]", kind.name());
            rename.push(measures::rename_run(&env, kind, &scale));
        }
    }

    let results = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/results");
    let rc_call = std::fs::read(results.join("rc_call.json"))
        .ok()
        .and_then(|raw| serde_json::from_slice(&raw).ok());
    let report = report::Report {
        scale,
        selection,
        machine: json!({
            "cpus": std::thread::available_parallelism().map_or(1, usize::from),
            "load_start": load_start,
            "load_end": load_average(),
            "rclone_cli": rclone_version(),
            "librclone": librclone,
            "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        }),
        runtime_s: started.elapsed().as_secs_f64(),
        branch,
        bulk,
        many,
        rename,
        huge,
        rc_call,
    };
    drop(env);
    let table = report.markdown();
    println!("{table}");
    std::fs::create_dir_all(&results).unwrap();
    std::fs::write(results.join("sync.md"), &table).unwrap();
    std::fs::write(
        results.join("sync.json"),
        serde_json::to_string_pretty(&report.json()).unwrap() + "\n",
    )
    .unwrap();
    eprintln!("wrote {}/sync.{{md,json}}", results.display());
}

/// Moves the big tree's top directories (not the latency directories,
/// which each fixture makes fresh) from one fixture's side to another's.
fn move_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('d') && entry.file_type().unwrap().is_dir() {
            std::fs::rename(entry.path(), to.join(&*name)).unwrap();
        }
    }
}

fn preflight() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the sync bench mounts union filesystems and runs sshd: run it as root"
    );
    for (program, package) in [
        ("rclone", "rclone"),
        ("inotifywait", "inotify-tools"),
        ("mergerfs", "mergerfs"),
        ("cp", "coreutils"),
    ] {
        util::require_tool(program, package);
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

fn rclone_version() -> String {
    std::process::Command::new("rclone")
        .arg("version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or_default()
                .trim_start_matches("rclone ")
                .to_owned()
        })
        .unwrap_or_default()
}
