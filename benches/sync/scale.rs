//! How big the bench runs: the sizes (`MSYNC_BENCH_SCALE=full`), a
//! default that fits a 2-core machine in a few minutes, and a tiny one for
//! working on the bench itself. The report names every size it scaled down.

use std::time::Duration;

use serde::Serialize;

use crate::env::Kind;

/// A branch tree: `d<top>/s<sub>/f<n>.dat`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Tree {
    pub top: usize,
    pub sub: usize,
    pub per_dir: usize,
    pub file_size: usize,
}

impl Tree {
    pub fn files(&self) -> usize {
        self.top * self.sub * self.per_dir
    }

    /// Directories, not counting the branch root.
    pub fn dirs(&self) -> usize {
        self.top + self.top * self.sub
    }

    pub fn path(&self, top: usize, sub: usize, file: usize) -> String {
        format!("d{top:03}/s{sub:03}/f{file:03}.dat")
    }

    /// The file a change round `round` rewrites; rounds of msync and of the
    /// baseline use different `offset`s so no file is changed twice.
    pub fn changed_file(&self, round: usize, offset: usize) -> String {
        let n = round + offset;
        self.path(
            (n * 7) % self.top,
            (n * 13 + n / self.top) % self.sub,
            n % self.per_dir,
        )
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Scale {
    pub name: String,
    /// The branch "already holding N files", small N.
    pub small: Tree,
    /// The big branch (the issue: 100,000 files in 10,000 directories).
    pub big: Tree,
    pub latency_files: usize,
    pub latency_rate: f64,
    pub latency_file_size: usize,
    pub change_rounds: usize,
    pub change_rounds_baseline: usize,
    /// Rounds of each kind of change whose SFTP requests are counted.
    pub kind_rounds: usize,
    pub bulk_small_files: usize,
    pub bulk_small_size: usize,
    pub bulk_big_files: usize,
    pub bulk_big_size: usize,
    pub bulk_rounds: usize,
    /// Measure 9: the million-file branch.
    pub huge: Tree,
    /// Measure 8: many small files copied in at once.
    pub many_files: usize,
    pub many_file_size: usize,
    pub rename_files: usize,
    pub rename_file_size: usize,
    pub idle_secs: u64,
    /// msync's `--debounce` (its default), the base of the latency target.
    pub debounce_ms: u64,
    /// The S driver's batching window.
    pub batch_window_ms: u64,
}

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

impl Scale {
    /// `MSYNC_BENCH_SCALE`: `tiny`, `default` (unset) or `full`.
    pub fn from_env() -> Scale {
        let name = std::env::var("MSYNC_BENCH_SCALE").unwrap_or_else(|_| "default".into());
        match name.as_str() {
            "full" => Scale::full(),
            "default" | "" => Scale::default_scale(),
            "tiny" => Scale::tiny(),
            other => panic!("MSYNC_BENCH_SCALE={other:?}: use tiny, default or full"),
        }
    }

    /// The sizes issue 5 asks for.
    pub fn full() -> Scale {
        Scale {
            name: "full".into(),
            small: Tree {
                top: 10,
                sub: 1,
                per_dir: 100,
                file_size: KIB,
            },
            big: Tree {
                top: 100,
                sub: 100,
                per_dir: 10,
                file_size: KIB,
            },
            latency_files: 1000,
            latency_rate: 50.0,
            latency_file_size: 4 * KIB,
            change_rounds: 20,
            change_rounds_baseline: 3,
            kind_rounds: 5,
            bulk_small_files: 16 * 1024,
            bulk_small_size: 64 * KIB,
            bulk_big_files: 4,
            bulk_big_size: 256 * MIB,
            bulk_rounds: 3,
            many_files: 10_000,
            many_file_size: 4 * KIB,
            huge: Tree {
                top: 100,
                sub: 100,
                per_dir: 100,
                file_size: KIB,
            },
            rename_files: 8,
            rename_file_size: 128 * MIB,
            idle_secs: 60,
            debounce_ms: 1000,
            batch_window_ms: 100,
        }
    }

    /// What `make bench` runs: the branch sizes and rates, fewer
    /// latency files and less bulk data, so the whole run stays within
    /// about 15 minutes on 2 cores.
    pub fn default_scale() -> Scale {
        Scale {
            name: "default".into(),
            latency_files: 500,
            change_rounds: 10,
            change_rounds_baseline: 2,
            kind_rounds: 3,
            bulk_small_files: 4096,
            bulk_small_size: 64 * KIB,
            bulk_big_files: 2,
            bulk_big_size: 128 * MIB,
            bulk_rounds: 3,
            rename_files: 8,
            rename_file_size: 32 * MIB,
            ..Scale::full()
        }
    }

    /// For working on the bench: everything small, a minute or two.
    pub fn tiny() -> Scale {
        Scale {
            name: "tiny".into(),
            small: Tree {
                top: 4,
                sub: 1,
                per_dir: 25,
                file_size: KIB,
            },
            big: Tree {
                top: 10,
                sub: 10,
                per_dir: 10,
                file_size: KIB,
            },
            latency_files: 40,
            change_rounds: 3,
            change_rounds_baseline: 2,
            kind_rounds: 1,
            bulk_small_files: 128,
            bulk_small_size: 64 * KIB,
            bulk_big_files: 2,
            bulk_big_size: 4 * MIB,
            bulk_rounds: 2,
            many_files: 500,
            huge: Tree {
                top: 10,
                sub: 10,
                per_dir: 20,
                file_size: KIB,
            },
            rename_files: 4,
            rename_file_size: MIB,
            idle_secs: 5,
            ..Scale::full()
        }
    }

    pub fn debounce(&self) -> Duration {
        Duration::from_millis(self.debounce_ms)
    }

    pub fn bulk_bytes(&self) -> u64 {
        (self.bulk_small_files * self.bulk_small_size + self.bulk_big_files * self.bulk_big_size)
            as u64
    }

    pub fn rename_bytes(&self) -> u64 {
        (self.rename_files * self.rename_file_size) as u64
    }

    /// Where this scale is below the sizes, in words for the report.
    pub fn scaled_down(&self) -> Vec<String> {
        let full = Scale::full();
        let mut notes = Vec::new();
        if self.small.files() < full.small.files() {
            notes.push(format!(
                "small branch: {} files (issue: {})",
                self.small.files(),
                full.small.files()
            ));
        }
        if self.big.files() < full.big.files() {
            notes.push(format!(
                "big branch: {} files in {} directories (issue: {} in {})",
                self.big.files(),
                self.big.top * self.big.sub,
                full.big.files(),
                full.big.top * full.big.sub
            ));
        }
        if self.latency_files < full.latency_files {
            notes.push(format!(
                "propagation: {} files written at {}/s (issue: {} at {}/s)",
                self.latency_files, self.latency_rate, full.latency_files, full.latency_rate
            ));
        }
        if self.bulk_bytes() < full.bulk_bytes() {
            notes.push(format!(
                "bulk: {} ({} × {} + {} × {}; issue: {}, {} × {} + {} × {})",
                bytes(self.bulk_bytes()),
                self.bulk_small_files,
                bytes(self.bulk_small_size as u64),
                self.bulk_big_files,
                bytes(self.bulk_big_size as u64),
                bytes(full.bulk_bytes()),
                full.bulk_small_files,
                bytes(full.bulk_small_size as u64),
                full.bulk_big_files,
                bytes(full.bulk_big_size as u64),
            ));
        }
        if self.rename_bytes() < full.rename_bytes() {
            notes.push(format!(
                "rename: a directory of {} (issue: {})",
                bytes(self.rename_bytes()),
                bytes(full.rename_bytes())
            ));
        }
        if self.change_rounds < full.change_rounds
            || self.change_rounds_baseline < full.change_rounds_baseline
        {
            notes.push(format!(
                "one change: {} rounds for msync, {} for S (full: {} and {})",
                self.change_rounds,
                self.change_rounds_baseline,
                full.change_rounds,
                full.change_rounds_baseline
            ));
        }
        if self.idle_secs < full.idle_secs {
            notes.push(format!(
                "idle: {} s (issue: {} s)",
                self.idle_secs, full.idle_secs
            ));
        }
        notes
    }
}

/// Which parts run: `MSYNC_BENCH_ONLY=small,big,bulk,many,rename,huge`
/// (default all but `huge`, the million-file branch, which runs when
/// named or at full scale)
/// and `MSYNC_BENCH_REMOTES=local,sftp` (default both).
#[derive(Debug, Clone, Serialize)]
pub struct Selection {
    pub small: bool,
    pub big: bool,
    pub bulk: bool,
    pub many: bool,
    pub rename: bool,
    pub huge: bool,
    pub remotes: Vec<Kind>,
}

impl Selection {
    pub fn from_env() -> Selection {
        let only = std::env::var("MSYNC_BENCH_ONLY").unwrap_or_default();
        let parts: Vec<&str> = only.split(',').filter(|s| !s.is_empty()).collect();
        for part in &parts {
            assert!(
                ["small", "big", "bulk", "many", "rename", "huge"].contains(part),
                "MSYNC_BENCH_ONLY: unknown part {part:?}; use small, big, bulk, many, rename, huge"
            );
        }
        let wants = |name: &str| parts.is_empty() || parts.contains(&name);
        let remotes = std::env::var("MSYNC_BENCH_REMOTES").unwrap_or_default();
        let remotes: Vec<Kind> = if remotes.is_empty() {
            vec![Kind::Local, Kind::Sftp]
        } else {
            remotes
                .split(',')
                .map(|name| match name {
                    "local" => Kind::Local,
                    "sftp" => Kind::Sftp,
                    other => {
                        panic!("MSYNC_BENCH_REMOTES: unknown remote {other:?}; use local, sftp")
                    }
                })
                .collect()
        };
        Selection {
            small: wants("small"),
            big: wants("big"),
            bulk: wants("bulk"),
            many: wants("many"),
            rename: wants("rename"),
            huge: parts.contains(&"huge")
                || (parts.is_empty()
                    && std::env::var("MSYNC_BENCH_SCALE").is_ok_and(|scale| scale == "full")),
            remotes,
        }
    }

    pub fn is_everything(&self) -> bool {
        self.small && self.big && self.bulk && self.rename && self.remotes.len() == 2
    }
}

/// Bytes in binary units, for the report.
pub fn bytes(n: u64) -> String {
    let n = n as f64;
    if n >= (1u64 << 30) as f64 {
        format!("{:.2} GiB", n / (1u64 << 30) as f64)
    } else if n >= (1u64 << 20) as f64 {
        format!("{:.0} MiB", n / (1u64 << 20) as f64)
    } else if n >= 1024.0 {
        format!("{:.0} KiB", n / 1024.0)
    } else {
        format!("{n:.0} B")
    }
}
