//! `msync balance <install dir>`: moves files between branches until the
//! clouds are about equally full (see [`crate::space::balance`]), or empties
//! one branch into the others (`--evacuate`).
//!
//! With the service running, the service makes each move (a local rename;
//! it then sends the file from its new branch and discards the old cloud's
//! copy) and `balance` follows the uploads. Without it, `balance` moves
//! each file itself, in this order: copy to the new cloud, rename locally,
//! delete from the old cloud. A Ctrl-C between files leaves every file
//! whole in one branch; one during a copy cancels it and removes what it
//! left on the new cloud.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use nix::sys::signal::Signal;
use serde_json::json;

use super::{keep_rclone_logs_in, limit_bandwidth, load_rclone_for, require_remotes, require_root};
use crate::cli::{BalanceArgs, GlobalArgs};
use crate::error::{ExitCode, coded};
use crate::install::InstallDir;
use crate::rclone::{Call, Location, Rclone, signals};
use crate::service::{self, MoveOrder, PidLock, Reply, Request};
use crate::space::CloudSpace;
use crate::space::balance::{self, Plan, Shelf};
use crate::space::measure::capacity_now;
use crate::space::relocate;
use crate::space::size::Shown;
use crate::sync::{branch_files, sync_filter, trash};

/// Moves sent to the service in one request.
const BATCH: usize = 100;
const POLL: Duration = Duration::from_millis(200);

pub fn run(global: &GlobalArgs, args: &BalanceArgs) -> anyhow::Result<ExitCode> {
    require_root("balance")?;
    let mut install = InstallDir::open(&args.install_dir)?;
    if !install.manifest.imported() {
        return Err(coded(
            ExitCode::Refused,
            format!(
                "{} was never imported: its branches may lack what the clouds hold; run `msync import {}` first",
                install.root().display(),
                install.root().display()
            ),
        ));
    }
    let evacuated = match &args.evacuate {
        Some(name) => Some(
            install
                .manifest
                .branches
                .iter()
                .position(|b| &b.name == name)
                .ok_or_else(|| {
                    coded(
                        ExitCode::Usage,
                        format!(
                            "--evacuate {name}: no such branch; the branches are {}",
                            branch_names(&install).join(", ")
                        ),
                    )
                })?,
        ),
        None => None,
    };
    let signals = signals::install().context("installing signal handlers")?;
    let running = service::running_pid(&install.pid_file()).is_some();
    if running && args.bwlimit.is_some() {
        return Err(coded(
            ExitCode::RunningState,
            "the service runs and sends the moved files itself, at the rate it was started with: run balance without --bwlimit, or stop the service (or restart it with another --bwlimit)",
        ));
    }
    let spaces = if running {
        service_spaces(&install)?
    } else {
        let rclone = load_rclone_for(global, &install)?;
        keep_rclone_logs_in(rclone, &install)?;
        require_remotes(rclone, &install)?;
        measured_spaces(rclone, &install)
    };
    let shelves = shelves(&install, &spaces, evacuated);
    let plan = match evacuated {
        Some(index) => balance::evacuate(shelves.clone(), index),
        None => balance::level(shelves.clone(), f64::from(args.target_percent) / 100.0),
    };
    print_plan(&plan, &shelves, args.dry_run);
    if args.dry_run {
        return Ok(ExitCode::Ok);
    }
    if let Some(index) = evacuated
        && !install.manifest.branches[index].retired
    {
        // First, so no new file lands there while it empties, and a rerun
        // after Ctrl-C finds it retired.
        install.manifest.branches[index].retired = true;
        install.save()?;
    }
    let outcome = if running {
        move_through_service(&install, &plan, evacuated, &signals)?
    } else {
        let _lock = PidLock::acquire(&install.pid_file()).map_err(|_| {
            coded(
                ExitCode::RunningState,
                "the msync service started meanwhile; run `msync balance` again",
            )
        })?;
        let rclone = load_rclone_for(global, &install)?;
        limit_bandwidth(rclone, args.bwlimit.as_deref())?;
        move_offline(rclone, &install, &plan, &signals)?
    };
    if outcome == ExitCode::Interrupted {
        eprintln!(
            "msync: balance interrupted; every file is whole in one branch; run it again to go on"
        );
        return Ok(outcome);
    }
    if !plan.stranded.is_empty() {
        return Err(coded(
            ExitCode::Failed,
            format!(
                "{} file(s) of {} fit on no other cloud (or have a namesake there) and stay: {}; make room and run `msync balance --evacuate` again",
                plan.stranded.len(),
                args.evacuate.as_deref().unwrap_or("?"),
                plan.stranded
                    .iter()
                    .take(5)
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    Ok(outcome)
}

fn branch_names(install: &InstallDir) -> Vec<String> {
    install
        .manifest
        .branches
        .iter()
        .map(|b| b.name.clone())
        .collect()
}

/// Each cloud's space as the running service knows it.
fn service_spaces(install: &InstallDir) -> anyhow::Result<Vec<CloudSpace>> {
    match service::request(
        &install.socket_path(),
        &Request::Status,
        Duration::from_secs(10),
    )? {
        Reply::Status(status) => Ok(status.branches.into_iter().map(|b| b.space).collect()),
        other => anyhow::bail!("the service answered a status request with {other:?}"),
    }
}

/// Each cloud's space, asked of its backend now.
fn measured_spaces(rclone: Rclone, install: &InstallDir) -> Vec<CloudSpace> {
    install
        .manifest
        .branches
        .iter()
        .map(|branch| capacity_now(rclone, &branch.remote, branch.quota, None).view())
        .collect()
}

/// The planner's view: each cloud's size and use, each branch's files. A
/// cloud of unknown size neither gives nor takes files.
fn shelves(install: &InstallDir, spaces: &[CloudSpace], evacuated: Option<usize>) -> Vec<Shelf> {
    install
        .manifest
        .branches
        .iter()
        .zip(spaces)
        .enumerate()
        .map(|(index, (branch, space))| {
            let known = space.total.zip(space.free);
            let (size, used) = known.map_or((0, 0), |(total, free)| {
                (total, total.saturating_sub(free) + space.pending)
            });
            Shelf {
                name: branch.name.clone(),
                size,
                used,
                reserve: space.reserve,
                files: if known.is_some() || evacuated == Some(index) {
                    branch_files(&branch.dir)
                } else {
                    Vec::new()
                },
                closed: known.is_none() || branch.retired,
            }
        })
        .collect()
}

fn print_plan(plan: &Plan, shelves: &[Shelf], list: bool) {
    for (index, shelf) in shelves.iter().enumerate() {
        if shelf.size == 0 {
            println!("  {:<12} capacity unknown: left as it is", shelf.name);
            continue;
        }
        println!(
            "  {:<12} {:>5.1} % full -> {:>5.1} %  ({})",
            shelf.name,
            plan.before[index] * 100.0,
            plan.after[index] * 100.0,
            Shown(shelf.size)
        );
    }
    if list {
        for m in &plan.moves {
            println!(
                "  move {} ({}): {} -> {}",
                m.path.display(),
                Shown(m.bytes),
                shelves[m.from].name,
                shelves[m.to].name
            );
        }
    }
    println!(
        "{} {} file(s), {}",
        if list { "would move" } else { "moving" },
        plan.moves.len(),
        Shown(plan.bytes())
    );
}

fn bar(total: u64, unit: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    let template = match unit {
        "bytes" => "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
        _ => "{msg} [{bar:30}] {pos}/{len}",
    };
    bar.set_style(
        ProgressStyle::with_template(template)
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar
}

/// Whether Ctrl-C (or SIGTERM) came; waits up to `wait` for it.
fn interrupted(signals: &Receiver<Signal>, wait: Duration) -> bool {
    match signals.recv_timeout(wait) {
        Ok(_) => true,
        Err(RecvTimeoutError::Timeout) => false,
        Err(RecvTimeoutError::Disconnected) => false,
    }
}

/// Hands the moves to the running service, then follows the uploads.
fn move_through_service(
    install: &InstallDir,
    plan: &Plan,
    evacuated: Option<usize>,
    signals: &Receiver<Signal>,
) -> anyhow::Result<ExitCode> {
    let names = branch_names(install);
    let ask =
        |moves: Vec<MoveOrder>, retire: Option<String>| -> anyhow::Result<(usize, Vec<String>)> {
            match service::request(
                &install.socket_path(),
                &Request::Move { moves, retire },
                Duration::from_secs(60),
            )? {
                Reply::Moved { moved, failed } => Ok((moved, failed)),
                Reply::Error { code, message } => Err(coded(
                    ExitCode::from_code(code.into()).unwrap_or(ExitCode::Failed),
                    message,
                )),
                other => anyhow::bail!("the service answered a move with {other:?}"),
            }
        };
    if let Some(index) = evacuated {
        ask(Vec::new(), Some(names[index].clone()))?;
    }
    let moving = bar(plan.moves.len() as u64, "files");
    moving.set_message("moving");
    let mut failures = Vec::new();
    for batch in plan.moves.chunks(BATCH) {
        if interrupted(signals, Duration::ZERO) {
            moving.abandon();
            return Ok(ExitCode::Interrupted);
        }
        let orders = batch
            .iter()
            .map(|m| MoveOrder {
                from: names[m.from].clone(),
                to: names[m.to].clone(),
                path: m.path.clone(),
            })
            .collect();
        let (_, failed) = ask(orders, None)?;
        failures.extend(failed);
        moving.inc(batch.len() as u64);
    }
    moving.finish();
    for failure in &failures {
        eprintln!("not moved: {failure}");
    }
    // The service sends each moved file from its new branch.
    let targets: Vec<usize> = plan.moves.iter().map(|m| m.to).collect();
    let sending = bar(plan.bytes(), "bytes");
    sending.set_message("sending");
    loop {
        let status = match service::request(
            &install.socket_path(),
            &Request::Status,
            Duration::from_secs(10),
        )? {
            Reply::Status(status) => status,
            other => anyhow::bail!("the service answered a status request with {other:?}"),
        };
        let waiting: u64 = status
            .branches
            .iter()
            .enumerate()
            .filter(|(i, _)| targets.contains(i))
            .map(|(_, b)| b.space.pending)
            .sum();
        sending.set_position(plan.bytes().saturating_sub(waiting));
        let busy = status
            .branches
            .iter()
            .any(|b| b.queued > 0 || !b.in_flight.is_empty());
        if !busy {
            break;
        }
        if interrupted(signals, POLL) {
            sending.abandon();
            eprintln!("msync: the moves are made; the service goes on sending them");
            return Ok(ExitCode::Interrupted);
        }
    }
    sending.finish();
    println!(
        "moved {} file(s); every one is on its new cloud",
        plan.moves.len() - failures.len()
    );
    if failures.is_empty() {
        Ok(ExitCode::Ok)
    } else {
        Err(coded(
            ExitCode::Failed,
            format!(
                "{} file(s) could not be moved (listed above)",
                failures.len()
            ),
        ))
    }
}

/// Moves each file itself: copy to the new cloud, rename locally, delete
/// from the old cloud for good.
fn move_offline(
    rclone: Rclone,
    install: &InstallDir,
    plan: &Plan,
    signals: &Receiver<Signal>,
) -> anyhow::Result<ExitCode> {
    let branches = &install.manifest.branches;
    let progress = bar(plan.bytes(), "bytes");
    progress.set_message("moving");
    let mut done = 0;
    for m in &plan.moves {
        let (from, to) = (&branches[m.from], &branches[m.to]);
        let name = m
            .path
            .to_str()
            .with_context(|| format!("{}: the name is not valid UTF-8", m.path.display()))?;
        if to.dir.join(&m.path).exists() || !from.dir.join(&m.path).is_file() {
            // Changed since the plan: left alone.
            continue;
        }
        let copy = Call::copyfile(
            &Location::new(from.dir.to_string_lossy(), name),
            &Location::new(&to.remote, name),
        )
        .filter(sync_filter())
        .config(trash::backup_config(
            &to.remote,
            std::time::SystemTime::now(),
        ));
        let job = copy
            .start(rclone, "msync/balance")
            .with_context(|| format!("copying {name} to {}", to.remote))?;
        loop {
            if interrupted(signals, POLL) {
                let _ = job.cancel();
                let _ = job.wait(Some(Duration::from_secs(10)));
                // What the cancelled copy left on the new cloud goes.
                let _ = delete_remote(rclone, &to.remote, name);
                progress.abandon();
                return Ok(ExitCode::Interrupted);
            }
            let status = job.status()?;
            if let Ok(stats) = job.progress() {
                progress.set_position(done + stats.bytes);
            }
            if status.finished {
                if !status.success {
                    progress.abandon();
                    return Err(coded(
                        ExitCode::RcloneFailed,
                        format!(
                            "copying {name} to {} failed: {}; nothing moved for it; run `msync balance` again",
                            to.remote, status.error
                        ),
                    ));
                }
                break;
            }
        }
        let _ = job.forget_stats();
        relocate::move_file(&from.dir, &to.dir, &m.path)
            .with_context(|| format!("moving {name} from {} to {}", from.name, to.name))?;
        delete_remote(rclone, &from.remote, name)
            .with_context(|| format!("deleting {name} from {}", from.remote))?;
        done += m.bytes;
        progress.set_position(done);
    }
    progress.finish();
    println!("moved {} file(s)", plan.moves.len());
    Ok(ExitCode::Ok)
}

/// Deletes a file on a remote for good; nothing there is nothing to do.
fn delete_remote(rclone: Rclone, remote: &str, name: &str) -> anyhow::Result<()> {
    match Call::new(
        "operations/deletefile",
        json!({ "fs": remote, "remote": name }),
    )
    .run(rclone)
    {
        Ok(_) => Ok(()),
        Err(err) if err.is_not_found() => Ok(()),
        Err(err) => Err(err.into()),
    }
}
