//! `msync status <install dir>`: what the running service is doing, for
//! people, scripts (`--json`) or Prometheus (see [`prometheus`]).

mod prometheus;

use std::io::IsTerminal;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::Context;

use indicatif::{HumanBytes, HumanDuration};

use crate::cli::StatusArgs;
use crate::error::{ExitCode, coded};
use crate::install::InstallDir;
use crate::service::{self, ClientError, PoolStatus, Reply, Request, ServiceStatus};
use crate::space::{CloudSpace, PoolRoom};
use crate::sync::{BranchState, BranchStatus, PathClass};

pub fn run(args: &StatusArgs) -> anyhow::Result<ExitCode> {
    super::require_root("status")?;
    let install = InstallDir::open(&args.install_dir)?;
    loop {
        let status = match service::request(
            &install.socket_path(),
            &Request::Status,
            Duration::from_secs(10),
        ) {
            Ok(Reply::Status(status)) => status,
            Ok(other) => {
                return Err(coded(
                    ExitCode::Failed,
                    format!("unexpected answer: {other:?}"),
                ));
            }
            Err(ClientError::NotRunning | ClientError::Gone) => {
                emit_metrics(args, &prometheus::render_down())?;
                return Err(coded(
                    ExitCode::RunningState,
                    format!("msync is not running for {}", install.root().display()),
                ));
            }
            Err(ClientError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                return Err(coded(
                    ExitCode::RequirementMissing,
                    "msync status must run as root",
                ));
            }
            Err(err) => return Err(err.into()),
        };
        if args.watch && std::io::stdout().is_terminal() {
            print!("\x1b[2J\x1b[H");
        }
        if args.prometheus || args.prometheus_file.is_some() {
            emit_metrics(args, &prometheus::render(&status, SystemTime::now()))?;
        }
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&status).expect("status always encodes")
            );
        } else if !args.prometheus && args.prometheus_file.is_none() {
            // Written to a file from a timer: nothing else is asked for.
            print_human(&status);
        }
        if !args.watch {
            return Ok(health(&status));
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Prints the metrics (`--prometheus`) and writes them to the file
/// (`--prometheus-file`), whichever was asked.
fn emit_metrics(args: &StatusArgs, text: &str) -> anyhow::Result<()> {
    if args.prometheus {
        print!("{text}");
    }
    if let Some(path) = &args.prometheus_file {
        write_atomically(path, text)
            .with_context(|| format!("writing the metrics to {}", path.display()))?;
    }
    Ok(())
}

/// A reader (node_exporter) sees the old file or the new one, never half.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let temporary = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    std::fs::write(&temporary, text)?;
    std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(0o644))?;
    std::fs::rename(&temporary, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&temporary);
    })
}

/// 0 when every branch is idle or syncing, 6 when one is retrying or in
/// error, or holds a path that failed (a skipped FIFO or socket is no
/// failure), or when every cloud is full.
fn health(status: &ServiceStatus) -> ExitCode {
    let pool_full = status
        .pool
        .as_ref()
        .is_some_and(|p| p.room == PoolRoom::Full);
    let unhealthy = pool_full
        || status.branches.iter().any(|b| {
            matches!(b.state, BranchState::Retrying | BranchState::Error)
                || b.failing.iter().any(|f| f.class != PathClass::Skipped)
        });
    if unhealthy {
        ExitCode::RcloneFailed
    } else {
        ExitCode::Ok
    }
}

fn print_human(status: &ServiceStatus) {
    println!(
        "msync pid {} since {}: {} mounted at {} ({}), {} inotify watches",
        status.pid,
        status.started,
        status.install_dir.display(),
        status.mount_point.display(),
        status.union,
        status.inotify_watches
    );
    if let Some(pool) = &status.pool {
        print_pool(pool);
    }
    for branch in &status.branches {
        print_branch(branch);
    }
}

fn print_pool(pool: &PoolStatus) {
    let fill = pool
        .fill_percent
        .map(|f| format!(", {f:.1} % full"))
        .unwrap_or_default();
    println!(
        "  pool: {} of {} free{fill}; new files go to {}",
        HumanBytes(pool.free),
        HumanBytes(pool.total),
        if pool.takes_new.is_empty() {
            "no branch".to_owned()
        } else {
            pool.takes_new.join(", ")
        }
    );
    match pool.room {
        PoolRoom::Full => println!(
            "  POOL FULL: every cloud is full; new files stay on the local disk until room is made"
        ),
        PoolRoom::Unknown => println!(
            "  capacity unknown: no cloud tells its size; set quotas with `msync install --quota NAME=SIZE`"
        ),
        PoolRoom::Room => {}
    }
    if !pool.unknown.is_empty() && pool.room != PoolRoom::Unknown {
        println!(
            "  capacity unknown for {} (no new files go there; set a quota with `msync install --quota NAME=SIZE`)",
            pool.unknown.join(", ")
        );
    }
}

/// One cloud's space in a line: used, free of total, fill, queued, and as
/// of when.
fn describe_space(space: &CloudSpace) -> String {
    let Some(total) = space.total else {
        return "unknown (the backend does not tell; set a quota with `msync install --quota NAME=SIZE`)"
            .into();
    };
    let mut line = format!(
        "{} free of {}{}",
        space.free.map_or("?".into(), |f| HumanBytes(f).to_string()),
        HumanBytes(total),
        if space.quota == Some(total) {
            " (quota)"
        } else {
            ""
        }
    );
    if let Some(fill) = space.fill_percent {
        line.push_str(&format!(", {fill:.1} % full"));
    }
    if space.pending > 0 {
        line.push_str(&format!(", {} queued", HumanBytes(space.pending)));
    }
    line.push_str(&format!(", {} reserve", HumanBytes(space.reserve)));
    if let Some(trash) = space.trash {
        line.push_str(&format!(", {} in trash", HumanBytes(trash)));
    }
    if let Some(at) = &space.measured {
        line.push_str(&format!(", as of {at}"));
    }
    line
}

fn print_branch(branch: &BranchStatus) {
    let state = format!("{:?}", branch.state).to_lowercase();
    println!(
        "  {:<12} {:<9} queued {:<5} sent {} files, {}  last sync {}  -> {}",
        branch.name,
        state,
        branch.queued,
        branch.files_sent,
        HumanBytes(branch.bytes_sent),
        branch.last_sync.as_deref().unwrap_or("never"),
        branch.remote
    );
    println!("      space: {}", describe_space(&branch.space));
    for file in &branch.in_flight {
        let eta = file
            .eta
            .map(|s| {
                format!(
                    ", ETA {}",
                    HumanDuration(Duration::from_secs_f64(s.max(0.0)))
                )
            })
            .unwrap_or_default();
        println!(
            "      sending {}: {} / {}, {}/s{eta}",
            file.name,
            HumanBytes(file.bytes.max(0) as u64),
            HumanBytes(file.size.max(0) as u64),
            HumanBytes(file.speed as u64)
        );
    }
    if let Some(paused) = &branch.paused {
        println!("      paused: {paused}");
    }
    for failing in &branch.failing {
        let next = failing
            .next_try_secs
            .map(|s| format!(", next try in {s}s"))
            .unwrap_or_default();
        println!(
            "      {} {}: {} (attempts {}{next})",
            failing.class.name(),
            failing.path,
            failing.reason,
            failing.attempts
        );
    }
    if let Some(warning) = &branch.warning {
        println!("      warning: {warning}");
    }
    if let Some(error) = &branch.last_error {
        println!("      last error: {error}");
    }
}
