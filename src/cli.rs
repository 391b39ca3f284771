//! The whole command line, in clap's derive form. `///` comments are the
//! help text users see.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::error::exit_code_table;
use crate::union::Driver;

/// msync: many cloud storage accounts used together as one big store.
///
/// Each configured rclone remote gets a local branch directory; a union
/// filesystem shows all branches at one mount point, and msync replicates
/// every branch one way to its own cloud, in-process through librclone.
#[derive(Debug, Parser)]
#[command(name = "msync", version, after_long_help = exit_code_table(), after_help = "Run `msync help` for the exit codes.")]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Load librclone from this file (default: $MSYNC_LIBRCLONE, then
    /// librclone.so beside the msync binary, then the system library path).
    #[arg(long, global = true, value_name = "PATH")]
    pub librclone: Option<PathBuf>,

    /// The rclone config file (default: the one the rclone CLI uses:
    /// $RCLONE_CONFIG or ~/.config/rclone/rclone.conf).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the requirements, and an installation when one is named.
    ///
    /// Prints one line per check, `ok` or `FAIL` with what to do. Exits 0
    /// when every check passes, 3 when a requirement is missing.
    Check(CheckArgs),

    /// Record an installation: one branch directory per rclone remote.
    ///
    /// Writes <install dir>/msync.json naming the rclone config file, and for
    /// each remote its branch directory under <install dir>/branches and its
    /// remote directory <remote>:<remote path>. Running it again adds remotes
    /// that are new in the config. Refuses a non-empty directory that is not
    /// an msync install.
    Install(InstallArgs),

    /// Restore cloud data into the branches after a fresh (re)install.
    ///
    /// Copies every remote directory into its branch, all branches at once,
    /// with progress. Ctrl-C cancels cleanly (exit 130); running it again
    /// resumes. Files are downloaded into <install dir>/state/import first
    /// and moved into the branch only when complete.
    ///
    /// Then the metadata index msync keeps on each remote gives back what
    /// the clouds do not keep: owners, modes, modification times, empty
    /// directories, hard links and the holes of sparse files (symlinks come
    /// back from the clouds themselves). A downloaded file whose size is not
    /// the one the index records (a torn or older upload) is not put in
    /// the branch: it is listed, left in state/import-mismatched, and the
    /// exit code is 8. Extended attributes and ACLs are not kept.
    Import(ImportArgs),

    /// Mount the union of the branches and keep every branch in sync.
    ///
    /// Creates the mount point if missing, mounts all branches there (aufs
    /// where the kernel has it, else mergerfs) and runs the sync service in
    /// the background; returns once the mount is up and the service runs.
    /// Logs go to <install dir>/msync.log.
    Start(StartArgs),

    /// Stop the service: send what is queued, unmount, remove the mount point.
    ///
    /// A busy mount point (open files, a shell inside) is an error with exit
    /// code 5 and nothing is stopped or killed.
    Stop(StopArgs),

    /// Show what the running service is doing, per branch.
    ///
    /// Exit code 0 when every branch is healthy, 6 when one is retrying or
    /// in error, 7 when no service runs.
    Status(StatusArgs),

    /// Move files between branches so the clouds are about equally full.
    ///
    /// Plans from each cloud's real size (rclone's `about`, quotas) and the
    /// files of each branch, then moves files: the path seen through the
    /// mount never changes, each moved file is sent to its new cloud and its
    /// old cloud's copy is deleted (not trashed). Works whether the service
    /// runs or not. Ctrl-C stops cleanly (exit 130); running it again goes
    /// on. Exit 8 on an install that still needs `msync import`.
    Balance(BalanceArgs),

    /// Call librclone's RC API directly, like `rclone rc`.
    ///
    /// Prints rclone's JSON answer. With --async the call runs as an rclone
    /// job with a progress display; Ctrl-C cancels the job (job/stop) and
    /// exits 130.
    Rc(RcArgs),

    /// Print a shell completion script.
    ///
    /// For bash: `msync completions bash > /etc/bash_completion.d/msync`;
    /// zsh and fish likewise (`make install` puts all three in place).
    Completions(CompletionsArgs),

    /// Write the manual pages (msync.1, msync-<command>.1) into a
    /// directory, generated from this help; `make install` runs it.
    #[command(hide = true)]
    Manual(ManualArgs),
}

#[derive(Debug, Args)]
pub struct ManualArgs {
    /// Where the pages go, e.g. /usr/local/share/man/man1.
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish (also elvish, powershell).
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct InstallArgs {
    /// The install dir: created if missing, or an existing msync install.
    pub install_dir: PathBuf,

    /// Only these remotes (comma-separated names, as in rclone.conf);
    /// default: every remote of the config.
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub remotes: Vec<String>,

    /// msync's directory on each remote.
    #[arg(long, default_value = "msync", value_name = "PATH")]
    pub remote_path: String,

    /// The most msync may store on a remote, e.g. gdrive=15G; repeat for
    /// several. For a backend that cannot tell its size (S3, B2, FTP …), or
    /// to leave room for other uses of the account. NAME=none lifts it.
    /// A quota above the cloud's real size counts as that size.
    #[arg(long, value_name = "NAME=SIZE")]
    pub quota: Vec<crate::space::size::QuotaArg>,
}

#[derive(Debug, Args)]
pub struct BalanceArgs {
    /// An msync install dir.
    pub install_dir: PathBuf,

    /// List the moves and the bytes; change nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// The widest gap allowed between the fullest and the emptiest cloud,
    /// in percentage points of fill.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100), value_name = "N")]
    pub target_percent: u32,

    /// Move every file of this branch to the others (as room permits) and
    /// retire it: it takes no new files from then on. For an account being
    /// closed, or lost (the local copies are still here).
    #[arg(long, value_name = "NAME")]
    pub evacuate: Option<String>,

    /// Limit the bandwidth of the copies balance makes itself (with the
    /// service stopped), in rclone's syntax: 10M, 512k, UP:DOWN; no
    /// timetables. With the service running, its own --bwlimit applies.
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    pub bwlimit: Option<String>,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// An msync install dir.
    pub install_dir: PathBuf,

    /// Restore the bytes only: no owners, modes, times, empty directories
    /// or hard links from the metadata index, and no check of the files
    /// against it.
    #[arg(long)]
    pub no_metadata: bool,

    /// How owners are given back: `numeric` sets the recorded user and
    /// group ids; `names` sets the ids the recorded names have on this
    /// machine, where they exist (else the recorded ids).
    #[arg(long, value_enum, default_value_t = OwnersArg::Numeric)]
    pub owners: OwnersArg,

    /// Limit the download bandwidth, in rclone's syntax: 10M for 10 MiB/s,
    /// 512k; UP:DOWN for separate limits; no timetables. A restore of
    /// terabytes need not fill a home line.
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    pub bwlimit: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OwnersArg {
    Numeric,
    Names,
}

#[derive(Debug, Args)]
pub struct InstallDirArg {
    /// An msync install dir.
    pub install_dir: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct StartArgs {
    /// An msync install dir.
    pub install_dir: PathBuf,

    /// Where to mount the union of the branches.
    pub mount_point: PathBuf,

    /// Stay in the foreground (for systemd): log to stderr too, stop on
    /// SIGTERM.
    #[arg(long)]
    pub foreground: bool,

    /// The union filesystem (default: aufs if the kernel has it, else mergerfs).
    #[arg(long, value_enum, value_name = "DRIVER")]
    pub union: Option<Driver>,

    /// The longest a written file waits, quiet, before it is uploaded (0s
    /// to 10m). A file closed after writing that was not written within
    /// this time goes out at once (in 20 ms); each time it is closed again
    /// while still warm its wait doubles, up to this. So a single change
    /// lands in tens of milliseconds, and a file rewritten many times a
    /// second is sent a few times and then once it is quiet. Deletes and
    /// new directories wait this long.
    #[arg(long, default_value = "1s", value_parser = parse_debounce, value_name = "DURATION")]
    pub debounce: Duration,

    /// Time between full reconciles of every branch with its remote (1s to
    /// 30 days).
    #[arg(long, default_value = "6h", value_parser = parse_reconcile_every, value_name = "DURATION")]
    pub reconcile_every: Duration,

    /// Limit the upload bandwidth, in rclone's syntax: 10M for 10 MiB/s,
    /// 512k, off; UP:DOWN for separate limits. rclone's timetables do not
    /// tick inside msync and are refused: change the rate from a timer
    /// (stop and start with another --bwlimit).
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    pub bwlimit: Option<String>,

    /// How long another installation's lease on a remote must stay
    /// unchanged, as seen from this host, before msync takes it over (its
    /// holder is gone). Judged by this host's clock only.
    #[arg(long, default_value = "5m", value_parser = parse_lease_expiry, value_name = "DURATION")]
    pub lease_expiry: Duration,

    /// How long a transfer may move no bytes (or a request go unanswered)
    /// before it is dropped and retried (1s to 1h). Slow links may want
    /// more; every stall holds one of the branch's transfers meanwhile.
    #[arg(long, default_value = "60s", value_parser = parse_stall_timeout, value_name = "DURATION")]
    pub stall_timeout: Duration,

    /// Run CMD (with sh -c) whenever something needs a person, with one
    /// JSON event on its standard input: a branch refused or in error, a
    /// cloud or the whole pool full, a cloud unreachable for long. For
    /// mail, ntfy, apprise and the like; it never holds up the sync. Kept
    /// in the install for later starts; --notify-command '' forgets it.
    #[arg(long, value_name = "CMD")]
    pub notify_command: Option<String>,

    /// How long a remote may not answer before --notify-command hears of it.
    #[arg(long, default_value = "15m", value_parser = parse_unreachable_after, value_name = "DURATION")]
    pub notify_unreachable_after: Duration,

    /// The size msync.log rotates at (4K to 1G): it becomes msync.log.1,
    /// and msync.log.1 to .3 are kept.
    #[arg(long, default_value = "10M", value_name = "SIZE", value_parser = parse_log_size)]
    pub log_max_size: u64,

    /// A soft cap on rclone's Go heap, e.g. 64M, for small devices (what
    /// GOMEMLIMIT does): Go collects garbage harder as the heap nears it.
    /// Uncapped by default.
    #[arg(long, value_name = "SIZE", value_parser = crate::space::size::parse)]
    pub go_memory_limit: Option<u64>,

    /// Changes a branch sends at once (like rclone's --transfers).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64), value_name = "N")]
    pub transfers: u16,

    /// Start although the install was never imported while the clouds hold
    /// data (their extra files go to the remote's trash), and take the
    /// remotes' leases from another installation at once.
    #[arg(long)]
    pub force: bool,

    /// Refuse a reconcile that would delete more than this share of a
    /// remote's files (and at least 100 of them); 100 turns the guard off.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100), value_name = "PERCENT")]
    pub mass_delete_percent: u32,

    /// Days a deleted or overwritten file stays in the remote's trash
    /// (<remote dir>/.msync/trash/<date>).
    #[arg(long, default_value_t = 30, value_name = "DAYS")]
    pub trash_days: u32,

    /// Room always left free on every cloud, e.g. 500M or 2G (default: 2 %
    /// of each cloud's size, at most 1 GiB). A file that would cut into it
    /// goes to another cloud.
    #[arg(long, value_name = "SIZE", value_parser = crate::space::size::parse)]
    pub min_free: Option<u64>,

    /// Set by `msync start` when it runs the service in the background.
    #[arg(long, hide = true)]
    pub daemon_child: bool,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    /// An msync install dir.
    pub install_dir: PathBuf,

    /// The mount point the service was started with.
    pub mount_point: PathBuf,

    /// How long to keep sending queued changes before stopping anyway. A
    /// remote that is down gets one more try, not the whole timeout: its
    /// changes wait for the next start.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub timeout: Duration,

    /// Cancel transfers in flight and stop at once (the next start's
    /// reconcile sends what was left).
    #[arg(long)]
    pub now: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// An msync install dir.
    pub install_dir: PathBuf,

    /// Print the status as JSON (stable field names, for scripts).
    #[arg(long, conflicts_with = "prometheus")]
    pub json: bool,

    /// Print the status as Prometheus metrics (text format: `msync_*`,
    /// labelled branch="<name>"); with no service, only `msync_up 0`.
    #[arg(long)]
    pub prometheus: bool,

    /// Write the Prometheus metrics to FILE instead, atomically (a
    /// temporary file renamed over it), for node_exporter's textfile
    /// collector; run it from a timer, or with --watch.
    #[arg(long, value_name = "FILE")]
    pub prometheus_file: Option<PathBuf>,

    /// Refresh every second until interrupted.
    #[arg(long)]
    pub watch: bool,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// An msync install dir to check as well: its branches, whether each
    /// remote is still configured and reachable, what each remote's
    /// backend can do (hashes, modification times, server-side moves,
    /// empty directories, case), and the pool's fill.
    pub install_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RcArgs {
    /// The RC method, e.g. operations/list or sync/copy.
    pub method: String,

    /// Its parameters as a JSON object, e.g. '{"fs":"/tmp","remote":""}'.
    #[arg(default_value = "{}")]
    pub params: String,

    /// Run as an async job, show its progress, and wait for it.
    #[arg(long = "async")]
    pub run_async: bool,

    /// Limit rclone's bandwidth while the call runs, in rclone's syntax
    /// (e.g. 10M for 10 MiB/s; no timetables).
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    pub bwlimit: Option<String>,
}

fn parse_duration_within(text: &str, min: Duration, max: Duration) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if duration < min || duration > max {
        return Err(format!(
            "{text} is out of range: give {} to {}",
            humantime::format_duration(min),
            humantime::format_duration(max)
        ));
    }
    Ok(duration)
}

fn parse_debounce(text: &str) -> Result<Duration, String> {
    parse_duration_within(text, Duration::ZERO, Duration::from_secs(600))
}

fn parse_lease_expiry(text: &str) -> Result<Duration, String> {
    parse_duration_within(text, Duration::from_secs(1), Duration::from_secs(86_400))
}

fn parse_reconcile_every(text: &str) -> Result<Duration, String> {
    parse_duration_within(
        text,
        Duration::from_secs(1),
        Duration::from_secs(30 * 86_400),
    )
}

fn parse_unreachable_after(text: &str) -> Result<Duration, String> {
    parse_duration_within(
        text,
        Duration::from_secs(1),
        Duration::from_secs(7 * 86_400),
    )
}

fn parse_log_size(text: &str) -> Result<u64, String> {
    let size = crate::space::size::parse(text)?;
    if !(4 << 10..=1 << 30).contains(&size) {
        return Err(format!("{text} is out of range: give 4K to 1G"));
    }
    Ok(size)
}

fn parse_stall_timeout(text: &str) -> Result<Duration, String> {
    parse_duration_within(text, Duration::from_secs(1), Duration::from_secs(3600))
}

/// One rclone rate (`off`, `10M`, `512k`, `1.5G`, `100`), or `UP:DOWN`.
/// Timetables are refused: rclone's ticker never runs inside librclone.
fn parse_rate(text: &str) -> Result<String, String> {
    if text.contains([',', ' ', '-']) || text.matches(':').count() > 1 {
        return Err(format!(
            "{text:?} looks like a bandwidth timetable, which msync cannot apply: give one rate such as 10M (change it on a schedule by restarting with another --bwlimit)"
        ));
    }
    let is_rate = |part: &str| {
        let part = part
            .strip_suffix(['b', 'B', 'k', 'K', 'm', 'M', 'g', 'G', 't', 'T', 'p', 'P'])
            .unwrap_or(part);
        part == "off"
            || (!part.is_empty() && part.parse::<f64>().is_ok_and(|v| v >= 0.0 && v.is_finite()))
    };
    if text == "off" || text.split(':').all(is_rate) {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "{text:?} is not a rate: give a number with an optional unit (B, K, M, G, T, P), e.g. 10M, or off"
        ))
    }
}
