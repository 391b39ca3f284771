//! The report: a summary table with every target met or MISSED, detail
//! tables, and the same numbers (with every sample) as JSON.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Value, json};

use crate::env::Kind;
use crate::measures::{BranchRun, BulkRun, BulkSide, CHANGE_KINDS, HugeRun, ManyRun, RenameRun};
use crate::scale::{Scale, Selection, bytes};

/// One line of the summary.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub measure: String,
    pub item: String,
    pub remote: String,
    pub msync: String,
    pub baseline: String,
    pub ratio: String,
    pub target: String,
    /// `met`, `MISSED` or `report only`.
    pub result: String,
}

pub struct Report {
    pub scale: Scale,
    pub selection: Selection,
    pub machine: Value,
    pub runtime_s: f64,
    pub branch: Vec<BranchRun>,
    pub bulk: Vec<BulkRun>,
    pub many: Vec<ManyRun>,
    pub huge: Option<HugeRun>,
    pub rename: Vec<RenameRun>,
    pub rc_call: Option<Value>,
}

fn secs(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{:.2} s", ms / 1e3)
    } else {
        format!("{ms:.0} ms")
    }
}

fn opt_secs(ms: Option<f64>) -> String {
    ms.map_or("never (timed out)".into(), secs)
}

fn cpu(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{:.2} s", ms / 1e3)
    } else if ms >= 10.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.2} ms")
    }
}

fn mb(kib: u64) -> String {
    format!("{:.0} MB", kib as f64 * 1024.0 / 1e6)
}

fn times(ratio: f64) -> String {
    if !ratio.is_finite() {
        "n/a".into()
    } else if ratio >= 10.0 {
        format!("{ratio:.0}×")
    } else {
        format!("{ratio:.2}×")
    }
}

fn result(ok: bool, measured: &str) -> String {
    if ok {
        "met".into()
    } else {
        format!("**MISSED** ({measured})")
    }
}

fn remote_name(kind: Kind) -> String {
    match kind {
        Kind::Local => "local dir".into(),
        Kind::Sftp => "SFTP".into(),
    }
}

fn side<'a>(sides: &'a [BulkSide], system: &str) -> &'a BulkSide {
    sides.iter().find(|s| s.system == system).unwrap()
}

impl Report {
    fn debounce_target_ms(&self) -> f64 {
        self.scale.debounce_ms as f64 + 300.0
    }

    pub fn rows(&self) -> Vec<Row> {
        let mut rows = Vec::new();
        let target_ms = self.debounce_target_ms();
        for run in &self.branch {
            let (m, s) = (&run.latency[0], &run.latency[1]);
            let branch = format!("{} files", thousands(run.files));
            let p99 = m.p99_ms.unwrap_or(f64::INFINITY);
            rows.push(Row {
                measure: "1 propagation".into(),
                item: format!("p50 / p99 / max, branch of {branch}"),
                remote: remote_name(run.remote),
                msync: format!(
                    "{} / {} / {}",
                    opt_secs(m.p50_ms),
                    opt_secs(m.p99_ms),
                    opt_secs(m.max_ms)
                ),
                baseline: format!(
                    "{} / {} / {}",
                    opt_secs(s.p50_ms),
                    opt_secs(s.p99_ms),
                    opt_secs(s.max_ms)
                ),
                ratio: times(s.p99_ms.unwrap_or(f64::INFINITY) / p99),
                target: format!("p99 ≤ {}", secs(target_ms)),
                result: result(p99 <= target_ms, &format!("p99 {}", opt_secs(m.p99_ms))),
            });
            let ratio = s.cpu_per_change_ms / m.cpu_per_change_ms;
            rows.push(Row {
                measure: "1 propagation".into(),
                item: format!("CPU per change, branch of {branch}"),
                remote: remote_name(run.remote),
                msync: cpu(m.cpu_per_change_ms),
                baseline: cpu(s.cpu_per_change_ms),
                ratio: format!("{} less", times(ratio)),
                target: "≥ 10× less than S".into(),
                result: result(ratio >= 10.0, &format!("{} less", times(ratio))),
            });
        }
        for run in self.branch.iter().filter(|r| r.size == "big") {
            let (m, s) = (&run.change[0], &run.change[1]);
            let branch = format!("{} files", thousands(run.files));
            if let (Some(mr), Some(sr)) = (m.median_requests, s.median_requests) {
                // The round is an overwrite, its old version to the trash.
                rows.push(Row {
                    measure: "2 one change".into(),
                    item: format!(
                        "SFTP requests of an overwrite (median of rounds), branch of {branch}"
                    ),
                    remote: remote_name(run.remote),
                    msync: format!("{mr:.0}"),
                    baseline: thousands(sr as usize),
                    ratio: format!("{} fewer", times(sr / mr)),
                    target: "≤ 7".into(),
                    result: result(mr <= 7.0, &format!("{mr:.0} requests")),
                });
            }
            let ratio = s.cpu_per_change_ms / m.cpu_per_change_ms;
            rows.push(Row {
                measure: "2 one change".into(),
                item: format!("CPU per change, branch of {branch}"),
                remote: remote_name(run.remote),
                msync: cpu(m.cpu_per_change_ms),
                baseline: cpu(s.cpu_per_change_ms),
                ratio: format!("{} less", times(ratio)),
                target: "≥ 100× less than S".into(),
                result: result(ratio >= 100.0, &format!("{} less", times(ratio))),
            });
            rows.push(Row {
                measure: "2 one change".into(),
                item: format!("time to the remote (median), branch of {branch}"),
                remote: remote_name(run.remote),
                msync: secs(m.median_wall_ms),
                baseline: secs(s.median_wall_ms),
                ratio: times(s.median_wall_ms / m.median_wall_ms),
                target: "—".into(),
                result: "report only".into(),
            });
        }
        for run in &self.branch {
            let branch = format!("{} files", thousands(run.files));
            for k in &run.kinds {
                let most = CHANGE_KINDS
                    .iter()
                    .find(|(kind, _)| *kind == k.kind)
                    .unwrap()
                    .1;
                rows.push(Row {
                    measure: "2 one change".into(),
                    item: format!(
                        "SFTP requests of a 4 KiB file {} (median of rounds), branch of {branch}",
                        match k.kind {
                            "new" => "made",
                            "overwrite" => "overwritten",
                            "rename" => "renamed",
                            _ => "deleted",
                        }
                    ),
                    remote: remote_name(run.remote),
                    msync: format!("{:.0}", k.median_requests),
                    baseline: "—".into(),
                    ratio: "—".into(),
                    target: format!("≤ {most}"),
                    result: result(
                        k.median_requests <= most as f64,
                        &format!("{:.0} requests", k.median_requests),
                    ),
                });
            }
        }
        for run in &self.bulk {
            for (label, sides) in [
                ("upload: start-time reconcile vs `rclone sync`", &run.upload),
                ("download: `msync import` vs `rclone copy`", &run.import),
            ] {
                let (m, r) = (side(sides, "msync"), side(sides, "R"));
                let ratio = m.mb_per_s / r.mb_per_s;
                rows.push(Row {
                    measure: "3 bulk".into(),
                    item: format!("{label}, {}", bytes(run.bytes)),
                    remote: remote_name(run.remote),
                    msync: format!("{:.0} MB/s", m.mb_per_s),
                    baseline: format!("{:.0} MB/s", r.mb_per_s),
                    ratio: format!("{} of R", times(ratio)),
                    target: "≥ 1.00× R".into(),
                    result: result(ratio >= 1.0, &format!("{} of R", times(ratio))),
                });
            }
        }
        for run in &self.many {
            let (m, r) = (side(&run.sides, "msync"), side(&run.sides, "R"));
            let ratio = r.median_wall_ms / m.median_wall_ms;
            rows.push(Row {
                measure: "8 many small files".into(),
                item: format!(
                    "{} files of {} copied in, until all are on the remote",
                    thousands(run.files),
                    bytes(run.bytes / run.files.max(1) as u64)
                ),
                remote: remote_name(run.remote),
                msync: secs(m.median_wall_ms),
                baseline: secs(r.median_wall_ms),
                ratio: format!("{} of R's speed", times(ratio)),
                target: "≥ 1.00× R".into(),
                result: result(ratio >= 1.0, &format!("{} of R's speed", times(ratio))),
            });
        }
        if let Some(run) = &self.huge {
            let branch = format!("branch of {} files", thousands(run.files));
            let remote = remote_name(run.remote);
            // The 100,000-file branch of the same remote, for flatness.
            let big = self
                .branch
                .iter()
                .find(|b| b.size == "big" && b.remote == run.remote);
            let report_only = |item: String, msync: String, baseline: String| Row {
                measure: "9 a million files".into(),
                item,
                remote: remote.clone(),
                msync,
                baseline,
                ratio: "—".into(),
                target: "—".into(),
                result: "report only".into(),
            };
            rows.push(report_only(
                format!("`start` to first settled status, {branch}"),
                secs(run.start_to_settled_ms),
                big.map_or("—".into(), |b| {
                    format!("{} at 100,000 files", secs(b.start_to_settled_ms))
                }),
            ));
            rows.push(Row {
                measure: "9 a million files".into(),
                item: format!("service memory VmHWM (VmRSS at end), {branch}"),
                remote: remote.clone(),
                msync: format!(
                    "{} ({})",
                    mb(run.memory_end.hwm_kib),
                    mb(run.memory_end.rss_kib)
                ),
                baseline: "—".into(),
                ratio: "—".into(),
                target: "≤ 300 MB".into(),
                result: result(
                    run.memory_end.hwm_kib as f64 * 1024.0 / 1e6 <= 300.0,
                    &mb(run.memory_end.hwm_kib),
                ),
            });
            rows.push(report_only(
                format!("CPU / time to the remote of one change (median), {branch}"),
                format!(
                    "{} / {}",
                    cpu(run.change.cpu_per_change_ms),
                    secs(run.change.median_wall_ms)
                ),
                big.map_or("—".into(), |b| {
                    format!(
                        "{} / {} at 100,000 files",
                        cpu(b.change[0].cpu_per_change_ms),
                        secs(b.change[0].median_wall_ms)
                    )
                }),
            ));
            rows.push(report_only(
                format!("inotify watches (the limit), {branch}"),
                format!(
                    "{} ({})",
                    thousands(run.inotify_watches),
                    thousands(run.max_user_watches as usize)
                ),
                "—".into(),
            ));
        }
        for run in &self.rename {
            let (m, s) = (&run.sides[0], &run.sides[1]);
            let resent = m
                .rewritten_bytes
                .max(m.status_bytes_sent.unwrap_or(0))
                .max(m.sftp_bytes_written.unwrap_or(0));
            rows.push(Row {
                measure: "4 rename".into(),
                item: format!("bytes sent again, directory of {}", bytes(run.bytes)),
                remote: remote_name(run.remote),
                msync: bytes(resent),
                baseline: bytes(s.rewritten_bytes.max(s.sftp_bytes_written.unwrap_or(0))),
                ratio: "—".into(),
                target: "0".into(),
                result: result(resent == 0, &bytes(resent)),
            });
        }
        for run in self.branch.iter().filter(|r| r.size == "big") {
            let branch = format!("{} files", thousands(run.files));
            rows.push(Row {
                measure: "5 footprint".into(),
                item: format!("`start` to first settled status, branch of {branch}"),
                remote: remote_name(run.remote),
                msync: secs(run.start_to_settled_ms),
                baseline: "—".into(),
                ratio: "—".into(),
                target: "—".into(),
                result: "report only".into(),
            });
            let peak = run.memory_end.hwm_kib.max(run.memory_settled.hwm_kib);
            rows.push(Row {
                measure: "5 footprint".into(),
                item: format!("service memory VmHWM (VmRSS at end), branch of {branch}"),
                remote: remote_name(run.remote),
                msync: format!("{} ({})", mb(peak), mb(run.memory_end.rss_kib)),
                baseline: "—".into(),
                ratio: "—".into(),
                target: "≤ 200 MB".into(),
                result: result(
                    peak as f64 * 1024.0 <= 200e6,
                    &format!("VmHWM {}", mb(peak)),
                ),
            });
            rows.push(Row {
                measure: "5 footprint".into(),
                item: format!("inotify watches, branch of {branch}"),
                remote: remote_name(run.remote),
                msync: thousands(run.inotify_watches),
                baseline: "—".into(),
                ratio: "—".into(),
                target: "—".into(),
                result: "report only".into(),
            });
        }
        for run in &self.branch {
            if let Some(idle) = &run.idle {
                rows.push(Row {
                    measure: "6 idle".into(),
                    item: format!(
                        "service CPU over {} s, branch of {} files",
                        idle.seconds,
                        thousands(run.files)
                    ),
                    remote: remote_name(run.remote),
                    msync: format!(
                        "{:.3} % ({})",
                        idle.percent_of_a_core,
                        cpu(idle.cpu.cpu.as_secs_f64() * 1e3)
                    ),
                    baseline: "—".into(),
                    ratio: "—".into(),
                    target: "≤ 0.5 % of a core".into(),
                    result: result(
                        idle.percent_of_a_core <= 0.5,
                        &format!("{:.3} %", idle.percent_of_a_core),
                    ),
                });
            }
        }
        if let Some(rc) = &self.rc_call {
            let ns = |v: &Value| v.as_f64().unwrap_or(f64::NAN) / 1e6;
            rows.push(Row {
                measure: "7 per call".into(),
                item: "one RC call (list 10 files), wall".into(),
                remote: "local dir".into(),
                msync: cpu(ns(&rc["in_process"]["median_wall_per_call_ns"])),
                baseline: cpu(ns(&rc["spawned"]["median_wall_per_call_ns"])),
                ratio: format!(
                    "{} less",
                    times(rc["ratio_wall"].as_f64().unwrap_or(f64::NAN))
                ),
                target: "—".into(),
                result: "report only (bench/results/rc_call.md)".into(),
            });
        }
        rows
    }

    pub fn markdown(&self) -> String {
        let rows = self.rows();
        let missed = rows.iter().filter(|r| r.result.contains("MISSED")).count();
        let judged = rows
            .iter()
            .filter(|r| r.result == "met" || r.result.contains("MISSED"))
            .count();
        let mut out = String::new();
        out.push_str(&format!(
            "# msync sync bench ({} scale)\n\n{} of {} targets met{}.\n\n",
            self.scale.name,
            judged - missed,
            judged,
            if missed > 0 {
                format!(", **{missed} MISSED**")
            } else {
                String::new()
            }
        ));
        if !self.selection.is_everything() {
            out.push_str("**Partial run** (MSYNC_BENCH_ONLY / MSYNC_BENCH_REMOTES): only the measures below ran.\n\n");
        }
        out.push_str("| # | measure | remote | msync | baseline (S or R) | baseline vs msync | target | result |\n");
        out.push_str("|---|---|---|---:|---:|---:|---|---|\n");
        for r in &rows {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
                r.measure, r.item, r.remote, r.msync, r.baseline, r.ratio, r.target, r.result
            ));
        }
        out.push_str(&self.details());
        out.push_str(&self.method());
        out
    }

    fn details(&self) -> String {
        let mut out = String::new();
        if !self.branch.is_empty() {
            out.push_str("\n## Propagation and single changes, per branch\n\n");
            out.push_str("| remote | branch | system | p50 | p99 | max | lost | CPU / change (stream) | requests / change (stream) | one change: time | one change: CPU | one change: requests | S runs |\n");
            out.push_str("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
            for run in &self.branch {
                for (l, c) in run.latency.iter().zip(&run.change) {
                    let syncs = l
                        .driver
                        .as_ref()
                        .map_or("—".into(), |d| d.syncs.len().to_string());
                    out.push_str(&format!(
                        "| {} | {} files, {} dirs | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                        remote_name(run.remote),
                        thousands(run.files),
                        thousands(run.dirs),
                        l.system,
                        opt_secs(l.p50_ms),
                        opt_secs(l.p99_ms),
                        opt_secs(l.max_ms),
                        l.missing,
                        cpu(l.cpu_per_change_ms),
                        l.requests_per_change.map_or("—".into(), |r| format!("{r:.1}")),
                        secs(c.median_wall_ms),
                        cpu(c.cpu_per_change_ms),
                        c.median_requests.map_or("—".into(), |r| thousands(r as usize)),
                        syncs,
                    ));
                }
            }
            out.push_str("\n| remote | branch | `start` → settled | VmHWM after settle | VmHWM / VmRSS at end | inotify watches |\n|---|---|---:|---:|---:|---:|\n");
            for run in &self.branch {
                out.push_str(&format!(
                    "| {} | {} files | {} | {} | {} / {} | {} |\n",
                    remote_name(run.remote),
                    thousands(run.files),
                    secs(run.start_to_settled_ms),
                    mb(run.memory_settled.hwm_kib),
                    mb(run.memory_end.hwm_kib),
                    mb(run.memory_end.rss_kib),
                    thousands(run.inotify_watches),
                ));
            }
            let kinds: Vec<String> = self
                .branch
                .iter()
                .filter(|r| r.remote == Kind::Sftp)
                .flat_map(|r| {
                    r.change.iter().map(move |c| {
                        format!(
                            "{} files, {}: {}",
                            thousands(r.files),
                            c.system,
                            counts(&c.request_kinds)
                        )
                    })
                })
                .collect();
            bullets(
                &mut out,
                "SFTP requests of the single-change rounds, all rounds together",
                &kinds,
            );
            let per_kind: Vec<String> = self
                .branch
                .iter()
                .flat_map(|r| {
                    r.kinds.iter().map(move |k| {
                        format!(
                            "{} files, {} (rounds: {}): {}",
                            thousands(r.files),
                            k.kind,
                            k.requests
                                .iter()
                                .map(usize::to_string)
                                .collect::<Vec<_>>()
                                .join(", "),
                            counts(&k.request_kinds)
                        )
                    })
                })
                .collect();
            bullets(
                &mut out,
                "SFTP requests of each kind of change, msync, all measured rounds together (index journals left out: one covers every change of 10 s)",
                &per_kind,
            );
        }
        if !self.bulk.is_empty() || !self.many.is_empty() {
            out.push_str("\n## Bulk and many small files, median of rounds (alternating order)\n\nThe spread is the fastest and slowest round: the noise band of this machine, against which a ratio near 1 must be read.\n\n| remote | data | direction | msync wall (spread) | R wall (spread) | msync MB/s | R MB/s | msync CPU | R CPU |\n|---|---|---|---:|---:|---:|---:|---:|---:|\n");
            let bulk = self.bulk.iter().flat_map(|run| {
                [("upload", &run.upload), ("import", &run.import)]
                    .map(|(label, sides)| (run.remote, run.files, run.bytes, label, sides))
            });
            let many = self.many.iter().map(|run| {
                (
                    run.remote,
                    run.files,
                    run.bytes,
                    "many small files copied in",
                    &run.sides,
                )
            });
            for (remote, files, data, label, sides) in bulk.chain(many) {
                let (m, r) = (side(sides, "msync"), side(sides, "R"));
                out.push_str(&format!(
                    "| {} | {} files, {} | {label} | {} ({}) | {} ({}) | {:.0} | {:.0} | {} | {} |\n",
                    remote_name(remote),
                    thousands(files),
                    bytes(data),
                    secs(m.median_wall_ms),
                    spread(&m.wall_ms),
                    secs(r.median_wall_ms),
                    spread(&r.wall_ms),
                    m.mb_per_s,
                    r.mb_per_s,
                    cpu(crate::measures::median(&m.cpu_ms)),
                    cpu(crate::measures::median(&r.cpu_ms)),
                ));
            }
        }
        if !self.rename.is_empty() {
            out.push_str("\n## Rename of a directory\n\n| remote | directory | system | time to the remote | remote bytes written anew (inodes) | status `bytes_sent` | SFTP bytes written | SFTP requests | CPU |\n|---|---|---|---:|---:|---:|---:|---:|---:|\n");
            for run in &self.rename {
                for s in &run.sides {
                    out.push_str(&format!(
                        "| {} | {} files, {} | {} | {} | {} | {} | {} | {} | {} |\n",
                        remote_name(run.remote),
                        run.files,
                        bytes(run.bytes),
                        s.system,
                        secs(s.wall_ms),
                        bytes(s.rewritten_bytes),
                        s.status_bytes_sent.map_or("—".into(), bytes),
                        s.sftp_bytes_written.map_or("—".into(), bytes),
                        s.requests
                            .as_ref()
                            .map_or("—".into(), |r| thousands(r.total)),
                        cpu(s.cpu.cpu.as_secs_f64() * 1e3),
                    ));
                }
            }
        }
        out
    }

    fn method(&self) -> String {
        let mut out = String::from("\n## How this was measured\n\n");
        let lines = [
            format!(
                "msync: the release build, `msync start --debounce {}ms` on an install with one branch; files are written straight into the branch directory (what the union mount does). Each measure runs msync first, then its baseline, on the same branch and the same remote, in this one run.",
                self.scale.debounce_ms
            ),
            format!(
                "S (the original approach): `inotifywait -m -r` on the branch; every event arriving within {} ms of a batch's first one joins it; then one whole-branch `rclone sync --transfers 4` (Debian's rclone CLI), one at a time. R: `rclone sync` / `rclone copy --transfers 4 --ignore-checksum`.",
                self.scale.batch_window_ms
            ),
            "Remotes: an rclone alias of a local directory, and Debian's sshd + sftp-server on 127.0.0.1 (the test suite's SftpServer). Arrival on a remote is seen with inotify on the remote's directory on disk: a file counts when it is closed (or renamed in) at its full size.".into(),
            "CPU: msync's is the service process's own (all threads, librclone's included): the larger of utime+stime from /proc/<pid>/stat (10 ms ticks) and the sum of its threads' schedstat run times. S's and R's are their processes' from getrusage(RUSAGE_CHILDREN) (rclone runs; inotifywait's event handling, its watch set-up subtracted). Single-change CPU spans the change until the service is settled again (the ≤ 3 status requests that tell so included).".into(),
            "SFTP requests: lines of sftp-server's VERBOSE log (open, close, opendir, closedir, stat, setstat, rename, remove, mkdir, realpath …; read, write and readdir are not logged at that level) plus remote commands (rclone's md5sum); new SSH connections are counted apart.".into(),
            "Bulk: the destination is emptied and the page cache flushed (`sync`) before each run; msync's upload time runs from `msync start` to its first settled status (librclone load and mount included), R's from spawning rclone to its exit. On local and SFTP remotes msync checks sizes, not hashes, after a transfer (there a hash costs another read of every file; see the README); R runs with `--ignore-checksum` to do the same work.".into(),
            "Many small files: the service runs settled on an empty branch; the time runs from `cp -r` of the tree into the branch until the remote holds every file (looked at every 100 ms), msync's CPU is the service's over that span. R: `rclone copy --transfers 4 --ignore-checksum` of the same tree, spawn to exit.".into(),
            "Per kind of change: a 4 KiB file made, overwritten, renamed, deleted in turn, each waited for on the remote and until the service is quiet, after a warm-up round that makes the trash days; requests on the index (`.msync/meta/`) are left out, as one journal covers every change of 10 s.".into(),
            "A million files (measure 9, when named or at full scale): a local remote holding the same tree (`cp -a`, as after an import), msync started on it; memory is VmHWM at the end, after the single changes. At the watch limit msync watches what it can, logs which directory and everything below it is not watched, says so in `status`, and leaves those changes to the periodic reconcile (tests/it/faults.rs covers it).".into(),
            "Rename: bytes sent again = the largest of: remote files under the new name with an inode the old ones did not have, the service's `bytes_sent` delta, and sftp-server's `written` byte counts.".into(),
        ];
        for line in lines {
            out.push_str(&format!("- {line}\n"));
        }
        let notes = self.scale.scaled_down();
        if notes.is_empty() {
            out.push_str("- Sizes: the issue's (full scale).\n");
        } else {
            out.push_str(&format!(
                "- **Scaled down** from the issue's sizes for this {}-scale run (MSYNC_BENCH_SCALE=full runs them all): {}.\n",
                self.scale.name,
                notes.join("; ")
            ));
        }
        out.push_str(&format!(
            "- Machine: {}; load average {} at the start, {} at the end; the run took {:.1} min.\n",
            self.machine["cpus"]
                .as_u64()
                .map_or("?".into(), |n| format!("{n} CPUs")),
            self.machine["load_start"].as_str().unwrap_or("?"),
            self.machine["load_end"].as_str().unwrap_or("?"),
            self.runtime_s / 60.0
        ));
        out.push_str(&format!(
            "- rclone CLI {}; librclone at `{}`.\n",
            self.machine["rclone_cli"].as_str().unwrap_or("?"),
            self.machine["librclone"].as_str().unwrap_or("?")
        ));
        if self.rc_call.is_none() {
            out.push_str("- Per-call overhead (measure 7): no bench/results/rc_call.json yet; `make bench` runs it first.\n");
        }
        out
    }

    pub fn json(&self) -> Value {
        json!({
            "bench": "sync",
            "unix_time": std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
            "scale": self.scale,
            "scaled_down": self.scale.scaled_down(),
            "selection": self.selection,
            "machine": self.machine,
            "runtime_s": self.runtime_s,
            "summary": self.rows(),
            "branch": self.branch,
            "bulk": self.bulk,
            "many": self.many,
            "huge": self.huge,
            "rename": self.rename,
            "rc_call": self.rc_call,
        })
    }
}

/// Request counts by kind: `stat 12, rename 3`.
fn counts(by_kind: &BTreeMap<String, usize>) -> String {
    by_kind
        .iter()
        .map(|(kind, n)| format!("{kind} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `heading:` and a bullet per line, when there are any lines.
fn bullets(out: &mut String, heading: &str, lines: &[String]) {
    if lines.is_empty() {
        return;
    }
    out.push_str(&format!("\n{heading}:\n\n"));
    for line in lines {
        out.push_str(&format!("- {line}\n"));
    }
}

/// The fastest and the slowest of `walls`.
fn spread(walls: &[f64]) -> String {
    let lowest = walls.iter().copied().fold(f64::INFINITY, f64::min);
    let highest = walls.iter().copied().fold(0.0, f64::max);
    format!("{}–{}", secs(lowest), secs(highest))
}

pub fn thousands(n: usize) -> String {
    let text = n.to_string();
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i > 0 && (text.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
