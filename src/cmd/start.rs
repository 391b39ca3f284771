//! `msync start <install dir> <mount point>`: runs the service, in the
//! background unless `--foreground`.
//!
//! In the background case this process never loads librclone: it starts a
//! second `msync start … --daemon-child` with its output in the log, waits
//! until that service answers on its control socket (or exits), and
//! reports. The child detaches into its own session and loads the library
//! itself, so nothing forks after the Go runtime is in.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::{load_rclone_for, require_remotes, require_root};
use crate::cli::{GlobalArgs, StartArgs};
use crate::error::{ExitCode, coded};
use crate::install::InstallDir;
use crate::service::{self, Reply, Request, ServiceOptions, logging};
use crate::space::size::Shown;
use crate::sync::{EngineConfig, MassDeleteLimit};
use crate::union::{self, Availability};

/// How long the background service may take to come up.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

pub fn run(global: &GlobalArgs, args: &StartArgs) -> anyhow::Result<ExitCode> {
    require_root("start")?;
    let mut install = InstallDir::open(&args.install_dir)?;
    if !args.daemon_child {
        record_notify_command(&mut install, args)?;
    }
    if args.foreground || args.daemon_child {
        return run_service(global, args, install);
    }
    if let Some(pid) = service::running_pid(&install.pid_file()) {
        return Err(coded(
            ExitCode::RunningState,
            format!(
                "msync is already running for {} (pid {pid})",
                install.root().display()
            ),
        ));
    }
    union::select(args.union, &Availability::probe())?;
    start_in_background(global, args, &install)
}

/// `--notify-command CMD` is kept in the install for the starts after
/// this one; `--notify-command ''` forgets it. The service reads it there.
fn record_notify_command(install: &mut InstallDir, args: &StartArgs) -> anyhow::Result<()> {
    let Some(command) = &args.notify_command else {
        return Ok(());
    };
    let command = (!command.trim().is_empty()).then(|| command.clone());
    if install.manifest.notify_command != command {
        install.manifest.notify_command = command;
        install.save()?;
    }
    Ok(())
}

fn run_service(
    global: &GlobalArgs,
    args: &StartArgs,
    install: InstallDir,
) -> anyhow::Result<ExitCode> {
    if args.daemon_child {
        // Leave the terminal's session: its hang-up and Ctrl-C are not ours.
        let _ = nix::unistd::setsid();
    }
    install.create_private_dirs()?;
    let stderr = if args.daemon_child {
        logging::Stderr::IsTheLog
    } else {
        logging::Stderr::Echo
    };
    logging::init(&install.log_file(), stderr, args.log_max_size)
        .with_context(|| format!("opening the log {}", install.log_file().display()))?;
    let options = ServiceOptions {
        mount_point: args.mount_point.clone(),
        force: args.force,
        union: args.union,
        debounce: args.debounce,
        lease_expiry: args.lease_expiry,
        notify_command: install.manifest.notify_command.clone(),
        notify_unreachable_after: args.notify_unreachable_after,
        engine: EngineConfig {
            reconcile_every: args.reconcile_every,
            mass_delete: MassDeleteLimit {
                percent: args.mass_delete_percent,
                ..MassDeleteLimit::default()
            },
            trash_days: args.trash_days,
            transfers: args.transfers.into(),
            min_free: args.min_free,
            ..EngineConfig::default()
        },
    };
    let for_loading = install.clone();
    let bwlimit = args.bwlimit.clone();
    let stall_timeout = args.stall_timeout;
    let go_memory_limit = args.go_memory_limit;
    let result = service::run(install, options, || {
        let rclone = load_rclone_for(global, &for_loading)?;
        log::info!(
            "librclone {} (rclone {})",
            rclone.path().display(),
            rclone.version()
        );
        if let Some(bytes) = go_memory_limit {
            rclone
                .set_memory_limit(bytes)
                .context("capping the Go heap")?;
            log::info!("rclone's Go heap is capped at {}", Shown(bytes));
        }
        rclone
            .set_stall_timeout(stall_timeout)
            .context("setting the stall timeout")?;
        require_remotes(rclone, &for_loading)?;
        if let Some(rate) = &bwlimit {
            rclone
                .set_bwlimit(rate)
                .with_context(|| format!("setting the bandwidth limit {rate:?}"))?;
        }
        Ok(rclone)
    });
    if let Err(err) = &result {
        log::error!("{err:#}");
    }
    result
}

fn start_in_background(
    global: &GlobalArgs,
    args: &StartArgs,
    install: &InstallDir,
) -> anyhow::Result<ExitCode> {
    install.create_private_dirs()?;
    let log_path = install.log_file();
    let log = logging::open_log(&log_path)
        .with_context(|| format!("opening the log {}", log_path.display()))?;
    let log_start = log.metadata()?.len();

    let exe = std::env::current_exe().context("finding the msync executable")?;
    let mut command = Command::new(exe);
    if let Some(library) = &global.librclone {
        command.arg("--librclone").arg(library);
    }
    if let Some(config) = &global.config {
        command.arg("--config").arg(config);
    }
    command
        .arg("start")
        .arg(install.root())
        .arg(&args.mount_point)
        .arg("--daemon-child")
        .arg("--debounce")
        .arg(humantime::format_duration(args.debounce).to_string())
        .arg("--reconcile-every")
        .arg(humantime::format_duration(args.reconcile_every).to_string())
        .arg("--transfers")
        .arg(args.transfers.to_string())
        .arg("--stall-timeout")
        .arg(humantime::format_duration(args.stall_timeout).to_string())
        .arg("--lease-expiry")
        .arg(humantime::format_duration(args.lease_expiry).to_string());
    if let Some(driver) = args.union {
        command.arg("--union").arg(driver.name());
    }
    if let Some(rate) = &args.bwlimit {
        command.arg("--bwlimit").arg(rate);
    }
    if args.force {
        command.arg("--force");
    }
    if let Some(min_free) = args.min_free {
        command.arg("--min-free").arg(min_free.to_string());
    }
    if let Some(bytes) = args.go_memory_limit {
        command.arg("--go-memory-limit").arg(bytes.to_string());
    }
    command
        .arg("--log-max-size")
        .arg(args.log_max_size.to_string())
        .arg("--notify-unreachable-after")
        .arg(humantime::format_duration(args.notify_unreachable_after).to_string());
    command
        .arg("--mass-delete-percent")
        .arg(args.mass_delete_percent.to_string())
        .arg("--trash-days")
        .arg(args.trash_days.to_string());
    command
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let mut child = command.spawn().context("starting the service process")?;

    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            let code = status
                .code()
                .and_then(ExitCode::from_code)
                .unwrap_or(ExitCode::Failed);
            let message = child_error(&log_path, log_start).unwrap_or_else(|| {
                format!(
                    "the service exited with {status}; see {}",
                    log_path.display()
                )
            });
            return Err(coded(code, message));
        }
        if let Ok(Reply::Status(status)) = service::request(
            &install.socket_path(),
            &Request::Status,
            Duration::from_secs(2),
        ) {
            println!(
                "msync started: pid {}, {} branch(es) mounted at {} with {}; log: {}",
                status.pid,
                status.branches.len(),
                status.mount_point.display(),
                status.union,
                log_path.display()
            );
            return Ok(ExitCode::Ok);
        }
        if Instant::now() >= deadline {
            // A service that comes up after start gave up would surprise
            // whoever runs start again; SIGTERM takes its clean stop path.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = child.wait();
            return Err(coded(
                ExitCode::Failed,
                format!(
                    "the service did not come up within {}s and was stopped; see {}",
                    READY_TIMEOUT.as_secs(),
                    log_path.display()
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The error the service printed before it exited: its `msync: …` lines
/// and the lines that continue them, in the part of the log it wrote; else
/// the last lines it wrote.
fn child_error(log: &Path, from: u64) -> Option<String> {
    let mut file = std::fs::File::open(log).ok()?;
    file.seek(SeekFrom::Start(from)).ok()?;
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    let mut message = Vec::new();
    let mut continuing = false;
    for line in text.lines() {
        if let Some(first) = line.strip_prefix("msync: ") {
            message.push(first);
            continuing = true;
        } else if continuing && !starts_a_record(line) {
            message.push(line);
        } else {
            continuing = false;
        }
    }
    if message.is_empty() {
        let lines: Vec<&str> = text.lines().collect();
        message = lines[lines.len().saturating_sub(5)..].to_vec();
    }
    (!message.is_empty()).then(|| message.join("\n"))
}

/// Whether a log line begins a new record (msync's and rclone's start with
/// their date).
fn starts_a_record(line: &str) -> bool {
    line.starts_with(|c: char| c.is_ascii_digit())
}
