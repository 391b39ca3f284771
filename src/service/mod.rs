//! The msync service: the mounted union of the branches, kept in sync.
//!
//! Threads and who owns what:
//! - the **main thread** owns the mount, the watcher's channel and the
//!   shutdown: it routes watched changes to the engine (with aufs, after
//!   acting on its whiteouts: see [`whiteouts`]), carries out a stop (from
//!   the control socket or a signal) and tells systemd (see [`notify`]);
//! - `msync-watch` owns the inotify fd (see [`crate::watch`]);
//! - `msync-sync-<branch>`, one per branch, run the rclone jobs (see
//!   [`crate::sync`]);
//! - `msync-space` decides which branches take new files and moves files
//!   that do not fit on their cloud (see [`space_keeper`]);
//! - `msync-lease` renews the leases on the remote directories;
//! - `msync-control` answers the control socket;
//! - `msync-signals` turns SIGINT/SIGTERM/SIGHUP into messages.
//!
//! The service loads librclone itself, after `msync start` has put it in
//! its own process: nothing forks once the Go runtime is in.

mod control;
mod events;
mod leases;
pub mod logging;
mod notify;
mod pidfile;
mod space_keeper;
mod stale_mount;
mod whiteouts;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, mpsc::Sender};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use log::{error, info, warn};
use nix::sys::signal::Signal;

pub use control::{ClientError, MoveOrder, Reply, Request, ServiceStatus, request};
pub use pidfile::{DYING_HOLDER_GRACE, LockError, PidLock, running_pid};
pub use space_keeper::PoolStatus;

use crate::error::{ExitCode, coded};
use crate::install::{InstallDir, MARKER_FILE};
use crate::rclone::{Rclone, signals};
use crate::sync::lease::{Lease, Leases};
use crate::sync::{BranchSpec, Engine, EngineConfig, branch_files, guard, is_local_only};
use crate::union::{self, Availability, Driver, UnionError};
use crate::watch::{BranchRoot, WatchConfig, WatchMessage, Watcher};
use leases::{LeaseGuard, renew_leases, take_leases};
use whiteouts::Whiteouts;

/// How long a stop triggered by a signal may take to send what is queued.
pub const SIGNAL_STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the main loop looks for signals and stop requests.
const TICK: Duration = Duration::from_millis(100);
/// How often systemd's one-line status and the events are looked at.
const SUMMARY_EVERY: Duration = Duration::from_secs(2);
/// How often a retired branch is walked to see it emptied (a walk of a
/// big branch costs: not every look).
const EVACUATION_CHECK_EVERY: Duration = Duration::from_secs(10);

/// How the service runs.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    pub mount_point: PathBuf,
    /// Start even if the install was never imported, and take leases held
    /// by other installations.
    pub force: bool,
    pub union: Option<Driver>,
    pub debounce: Duration,
    pub engine: EngineConfig,
    /// How long another installation's lease must stay unchanged, as seen
    /// from here, before it is taken over.
    pub lease_expiry: Duration,
    /// Run for each event that needs a person (see [`events`]).
    pub notify_command: Option<String>,
    /// How long a remote may not answer before that is an event.
    pub notify_unreachable_after: Duration,
}

/// Everything the main loop holds.
struct Running {
    mount_point: PathBuf,
    engine: Arc<Engine>,
    watcher: Option<Watcher>,
    watch_rx: Receiver<WatchMessage>,
    watch_count: Arc<AtomicUsize>,
    space_keeper: Option<space_keeper::SpaceKeeper>,
    /// With aufs: deletes what its whiteouts hide in later branches.
    whiteouts: Option<Whiteouts>,
    /// systemd, when it asked to be told (`$NOTIFY_SOCKET`).
    notifier: Option<notify::Notifier>,
    /// When the summary for systemd and the events are looked at next.
    next_summary: Instant,
    /// `--notify-command`'s events, when one was given.
    events: Option<events::Events>,
    pool: Arc<Mutex<Option<PoolStatus>>>,
    branch_dirs: Vec<PathBuf>,
    /// When the retired branches are walked next, to see one emptied.
    next_evacuation_check: Instant,
}

/// Runs the service until it is stopped. `load` loads librclone; it is
/// called after the signal handlers are in place and the pid lock is held.
pub fn run(
    install: InstallDir,
    options: ServiceOptions,
    load: impl FnOnce() -> anyhow::Result<Rclone>,
) -> anyhow::Result<ExitCode> {
    let signals = signals::install().context("installing signal handlers")?;
    install.create_private_dirs()?;
    let _pid_lock = match PidLock::acquire_after_dying(&install.pid_file(), DYING_HOLDER_GRACE) {
        Ok(lock) => lock,
        Err(LockError::Running { pid }) => {
            return Err(coded(
                ExitCode::RunningState,
                format!(
                    "msync is already running for {} (pid {}); stop it with `msync stop`",
                    install.root().display(),
                    pid.map_or("unknown".into(), |p| p.to_string())
                ),
            ));
        }
        Err(LockError::Io(err)) => {
            return Err(err).with_context(|| format!("locking {}", install.pid_file().display()));
        }
    };
    // Everything that can be refused locally is, before a remote is
    // touched or anything is mounted.
    let mut driver = union::select(options.union, &Availability::probe())?;
    let found = check_mount_point(&options.mount_point, &install)?;
    if found == MountPoint::Adopted && options.union.is_none() {
        driver = Driver::Mergerfs;
    }
    if found == MountPoint::Adopted && driver != Driver::Mergerfs {
        return Err(coded(
            ExitCode::MountError,
            format!(
                "{} holds the mergerfs union of a previous service, but --union {} was asked for; start with --union mergerfs, or stop what uses the mount and unmount it",
                options.mount_point.display(),
                driver.name()
            ),
        ));
    }
    let listener = control::bind(&install.socket_path()).context("opening the control socket")?;
    let _socket_file = RemoveOnDrop(install.socket_path());

    let rclone = load()?;
    if !options.force {
        refuse_unimported(rclone, &install)?;
    }
    let leases = Leases::new(rclone, &install.state_dir(), options.lease_expiry);
    let lease = Lease::ours(&install.manifest.install_id, install.root());
    let unreachable = take_leases(rclone, &leases, &install, &lease, options.force)?;
    let held = LeaseGuard {
        leases,
        remotes: install
            .manifest
            .branches
            .iter()
            .map(|b| b.remote.clone())
            .collect(),
        lease: lease.clone(),
    };

    if found == MountPoint::Missing {
        std::fs::create_dir_all(&options.mount_point).with_context(|| {
            format!("creating the mount point {}", options.mount_point.display())
        })?;
    }
    let mount_point = options.mount_point.canonicalize()?;
    let branch_dirs: Vec<PathBuf> = install
        .manifest
        .branches
        .iter()
        .map(|b| b.dir.clone())
        .collect();
    let mut mounted = MountGuard {
        mount_point: mount_point.clone(),
        created: found == MountPoint::Missing,
        mounted: false,
    };
    if found == MountPoint::Adopted {
        // A failed start leaves an adopted union as it found it.
        info!(
            "using the union left mounted at {} ({} branches, mergerfs)",
            mount_point.display(),
            branch_dirs.len()
        );
    } else {
        union::mount(driver, &branch_dirs, &mount_point)?;
        mounted.mounted = true;
        info!(
            "mounted {} branches at {} with {}",
            branch_dirs.len(),
            mount_point.display(),
            driver.name()
        );
    }

    // The watcher starts before the engine's first reconcile lists the
    // branches, so no change falls between the two.
    let (watch_tx, watch_rx) = mpsc::channel();
    let roots = install
        .manifest
        .branches
        .iter()
        .enumerate()
        .map(|(index, b)| BranchRoot {
            index,
            path: b.dir.clone(),
        })
        .collect();
    let watcher = Watcher::start(
        roots,
        WatchConfig {
            debounce: options.debounce,
            quick: crate::watch::QUICK.min(options.debounce),
            ignore: if driver == Driver::Aufs {
                Arc::new(whiteouts::ignored_with_aufs)
            } else {
                Arc::new(is_local_only)
            },
        },
        watch_tx,
    )
    .context("starting the inotify watcher")?;
    let specs = install
        .manifest
        .branches
        .iter()
        .enumerate()
        .map(|(index, b)| BranchSpec {
            index,
            name: b.name.clone(),
            local: b.dir.clone(),
            remote: b.remote.clone(),
            work_dir: install.state_dir(),
            marker: b.dir.join(MARKER_FILE),
            marker_text: install.marker_text(&b.name),
            identity: b.identity,
            quota: b.quota,
        })
        .collect();
    let engine =
        Arc::new(Engine::start(rclone, specs, options.engine).context("starting the sync engine")?);
    let away_at_start: Vec<usize> = unreachable.iter().map(|(index, _)| *index).collect();
    for (index, reason) in unreachable {
        engine.hold(index, Some(reason));
    }
    let watch_count = Arc::new(AtomicUsize::new(watcher.watch_count()));
    let space_keeper = space_keeper::keep_space(&install, &mount_point, driver, &engine)
        .context("starting the space keeper")?;

    let (stop_tx, stop_rx) = mpsc::channel();
    serve_control(
        listener,
        &install,
        &mount_point,
        driver,
        Watched {
            engine: &engine,
            watch_count: &watch_count,
            pool: &space_keeper.pool,
            mover: &space_keeper.mover,
        },
        stop_tx,
    )?;
    info!("msync service running (pid {})", std::process::id());

    let renewer = renew_leases(
        &install,
        rclone,
        &lease,
        options.lease_expiry,
        &engine,
        &away_at_start,
    )?;
    // From here the main loop's shutdown unmounts.
    mounted.mounted = false;
    mounted.created = false;
    let events = match &options.notify_command {
        Some(command) => Some(
            events::Events::start(
                command.clone(),
                install.root(),
                options.notify_unreachable_after,
            )
            .context("starting the notify thread")?,
        ),
        None => None,
    };
    let pool = Arc::clone(&space_keeper.pool);
    let mut running = Running {
        mount_point,
        engine,
        watcher: Some(watcher),
        watch_rx,
        watch_count,
        space_keeper: Some(space_keeper),
        whiteouts: Whiteouts::for_union(driver, &install),
        notifier: notify::Notifier::from_env(),
        // At once: the events need a first look at the pool as it starts.
        next_summary: Instant::now(),
        events,
        pool,
        branch_dirs: install
            .manifest
            .branches
            .iter()
            .map(|b| b.dir.clone())
            .collect(),
        next_evacuation_check: Instant::now(),
    };
    if let Some(notifier) = &mut running.notifier {
        notifier.ready(&notify::summary(&running.engine.status()));
    }
    let result = running.main_loop(&signals, &stop_rx);
    drop(running);
    drop(renewer);
    drop(held);
    result
}

/// Refuses to start while a branch that was never imported has a remote
/// holding files the branch lacks: the first reconcile would delete them.
/// A remote added to an imported install counts as never imported.
fn refuse_unimported(rclone: Rclone, install: &InstallDir) -> anyhow::Result<()> {
    for branch in install.manifest.branches.iter().filter(|b| !b.imported) {
        let plan = guard::plan(rclone, &branch.dir, &branch.remote, "msync/plan/start")
            .with_context(|| format!("listing {}", branch.remote))?;
        if plan.deletions > 0 {
            return Err(coded(
                ExitCode::Refused,
                format!(
                    "{} holds {} file(s) that branch {} lacks, and that branch was never imported: run `msync import {}` first (or start with --force to make the clouds match the branches, deleting those files into the remote's trash)",
                    branch.remote,
                    plan.deletions,
                    branch.name,
                    install.root().display()
                ),
            ));
        }
    }
    Ok(())
}

/// Removes the control socket's file when the service ends, however it ends.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Undoes a mount (and the mount point msync created) when the start fails
/// after mounting; disarmed once the main loop owns the mount.
struct MountGuard {
    mount_point: PathBuf,
    created: bool,
    mounted: bool,
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if self.mounted
            && let Err(err) = union::unmount(&self.mount_point)
        {
            warn!(
                "could not unmount {} after a failed start: {err}",
                self.mount_point.display()
            );
        }
        if self.created {
            let _ = std::fs::remove_dir(&self.mount_point);
        }
    }
}

/// What the control socket reads and drives in the running service.
struct Watched<'a> {
    engine: &'a Arc<Engine>,
    watch_count: &'a Arc<AtomicUsize>,
    pool: &'a Arc<Mutex<Option<PoolStatus>>>,
    mover: &'a Arc<space_keeper::Mover>,
}

fn serve_control(
    listener: std::os::unix::net::UnixListener,
    install: &InstallDir,
    mount_point: &Path,
    driver: Driver,
    watched: Watched<'_>,
    stops: Sender<control::StopRequest>,
) -> anyhow::Result<()> {
    let started = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let (engine, watch_count, pool, mover) = (
        Arc::clone(watched.engine),
        Arc::clone(watched.watch_count),
        Arc::clone(watched.pool),
        Arc::clone(watched.mover),
    );
    let (install_dir, mount_point) = (install.root().to_path_buf(), mount_point.to_path_buf());
    let status = move || ServiceStatus {
        pid: std::process::id(),
        install_dir: install_dir.clone(),
        mount_point: mount_point.clone(),
        union: driver.name().into(),
        started: started.clone(),
        inotify_watches: watch_count.load(Ordering::Relaxed),
        branches: engine.status(),
        pool: pool.lock().unwrap_or_else(|p| p.into_inner()).clone(),
    };
    let handlers = control::Handlers {
        status: Box::new(status),
        moves: Box::new(move |moves, retire| mover.answer(moves, retire)),
    };
    control::serve_on(listener, handlers, stops).context("serving the control socket")
}

/// What the start does at its mount point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MountPoint {
    /// Missing: created, then mounted.
    Missing,
    /// An empty directory: mounted.
    Empty,
    /// The live union a crashed service of this install left: used as it
    /// is (see [`stale_mount`]).
    Adopted,
}

/// Refuses a mount point that is not an empty, unmounted directory, unless
/// it holds the union a crashed service of this install left (adopted if
/// still served, cleared if dead; the caller holds the pid lock).
fn check_mount_point(path: &Path, install: &InstallDir) -> anyhow::Result<MountPoint> {
    let branches: Vec<PathBuf> = install
        .manifest
        .branches
        .iter()
        .map(|b| b.dir.clone())
        .collect();
    if stale_mount::examine(path, &branches)? == stale_mount::Left::Adoptable {
        return Ok(MountPoint::Adopted);
    }
    match std::fs::symlink_metadata(path) {
        Err(_) => Ok(MountPoint::Missing),
        Ok(meta) if !meta.is_dir() => Err(coded(
            ExitCode::MountError,
            format!(
                "the mount point {} is not a directory; choose a directory",
                path.display()
            ),
        )),
        Ok(_) if union::is_mounted(path) => Err(coded(
            ExitCode::MountError,
            format!(
                "{} is already a mount point; unmount it or choose another directory",
                path.display()
            ),
        )),
        Ok(_) => {
            let mut entries = std::fs::read_dir(path)?;
            if entries.next().is_some() {
                return Err(coded(
                    ExitCode::MountError,
                    format!(
                        "the mount point {} is not empty: the mount would hide its files; choose an empty directory",
                        path.display()
                    ),
                ));
            }
            Ok(MountPoint::Empty)
        }
    }
}

impl Running {
    fn main_loop(
        &mut self,
        signals: &Receiver<Signal>,
        stops: &Receiver<control::StopRequest>,
    ) -> anyhow::Result<ExitCode> {
        loop {
            match self.watch_rx.recv_timeout(TICK) {
                Ok(message) => self.handle(message),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    error!(
                        "the inotify watcher stopped; changes are now only sent by the periodic reconcile"
                    );
                    std::thread::sleep(TICK);
                }
            }
            if let Some(watcher) = &self.watcher {
                self.watch_count
                    .store(watcher.watch_count(), Ordering::Relaxed);
            }
            self.report_now_and_then();
            if let Ok(signal) = signals.try_recv() {
                info!("{signal} received: stopping");
                match self.shutdown(SIGNAL_STOP_TIMEOUT, false) {
                    Ok(()) => return Ok(ExitCode::Ok),
                    Err(err) => error!("cannot stop: {err:#}"),
                }
            }
            if let Ok(request) = stops.try_recv() {
                let reply = self.stop_request(&request);
                let stopped = reply == Reply::Stopped;
                let _ = request.reply.send(reply);
                if stopped {
                    let _ = request.delivered.recv_timeout(Duration::from_secs(2));
                    return Ok(ExitCode::Ok);
                }
            }
        }
    }

    /// Now and then: brings systemd's one-line status up to date, and
    /// reports the events that began since the last look.
    fn report_now_and_then(&mut self) {
        if (self.notifier.is_none() && self.events.is_none()) || Instant::now() < self.next_summary
        {
            return;
        }
        self.next_summary = Instant::now() + SUMMARY_EVERY;
        let branches = self.engine.status();
        if let Some(notifier) = &mut self.notifier {
            notifier.status(notify::summary(&branches));
        }
        let emptied = if self.events.is_some() && Instant::now() >= self.next_evacuation_check {
            self.next_evacuation_check = Instant::now() + EVACUATION_CHECK_EVERY;
            self.retired_emptied()
        } else {
            Vec::new()
        };
        if let Some(events) = &mut self.events {
            let pool = self
                .pool
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .map(|p| p.room);
            events.look(&branches, &self.engine.capacities(), pool, &emptied);
        }
    }

    /// For each retired branch, whether it holds no file any more (a walk
    /// of its directory, only while it is retired); `None` for the others.
    fn retired_emptied(&self) -> Vec<Option<bool>> {
        let Some(keeper) = &self.space_keeper else {
            return Vec::new();
        };
        keeper
            .mover
            .retired()
            .iter()
            .zip(&self.branch_dirs)
            .map(|(&retired, dir)| retired.then(|| branch_files(dir).is_empty()))
            .collect()
    }

    fn stop_request(&mut self, request: &control::StopRequest) -> Reply {
        let asked = request
            .mount_point
            .canonicalize()
            .unwrap_or_else(|_| request.mount_point.clone());
        if asked != self.mount_point {
            return Reply::Error {
                code: ExitCode::Usage.code(),
                message: format!(
                    "this service's mount point is {}, not {}",
                    self.mount_point.display(),
                    request.mount_point.display()
                ),
            };
        }
        info!(
            "stop requested (timeout {}s{})",
            request.timeout.as_secs(),
            if request.now { ", now" } else { "" }
        );
        match self.shutdown(request.timeout, request.now) {
            Ok(()) => Reply::Stopped,
            Err(err) => Reply::Error {
                code: crate::error::exit_code_of(&err).code(),
                message: format!("{err:#}"),
            },
        }
    }

    fn handle(&self, message: WatchMessage) {
        match message {
            WatchMessage::Changes(changes) => {
                let changes = match &self.whiteouts {
                    Some(whiteouts) => whiteouts.take(changes),
                    None => changes,
                };
                self.engine.apply(&changes);
            }
            WatchMessage::Overflow => {
                warn!("the inotify queue overflowed: events were lost; reconciling every branch");
                self.engine.reconcile_all();
            }
            WatchMessage::WatchLimit { branch, path } => {
                let warning = format!(
                    "inotify watch limit reached at {}: changes below it are only sent by the periodic reconcile; raise fs.inotify.max_user_watches",
                    path.display()
                );
                error!("{warning}");
                self.engine.warn(branch, warning);
            }
            WatchMessage::Error(message) => error!("watcher: {message}"),
        }
    }

    /// Unmounts first (a busy mount stops nothing), then sends what is
    /// queued until the deadline, then ends the watcher and the workers.
    fn shutdown(&mut self, timeout: Duration, now: bool) -> anyhow::Result<()> {
        if let Some(notifier) = &mut self.notifier {
            notifier.stopping();
        }
        match union::unmount(&self.mount_point) {
            Ok(()) => info!("unmounted {}", self.mount_point.display()),
            Err(UnionError::NotMounted { .. }) => {
                warn!("{} was not mounted any more", self.mount_point.display())
            }
            Err(err) => {
                // Still serving: systemd must not wait for an end.
                if let Some(notifier) = &mut self.notifier {
                    notifier.ready(&format!("running: the stop failed: {err}"));
                }
                return Err(err.into());
            }
        }
        // No file moves between branches from here; the watcher's flush
        // below sees the last one.
        if let Some(keeper) = self.space_keeper.take() {
            keeper.stop();
        }
        if let Some(watcher) = &self.watcher {
            watcher.flush();
        }
        while let Ok(message) = self.watch_rx.try_recv() {
            self.handle(message);
        }
        let deadline = if now {
            Instant::now()
        } else {
            Instant::now() + timeout
        };
        self.engine.stop_by(deadline);
        if let Some(watcher) = self.watcher.take() {
            watcher.stop();
        }
        if let Err(err) = std::fs::remove_dir(&self.mount_point) {
            warn!(
                "could not remove the mount point {}: {err}",
                self.mount_point.display()
            );
        }
        // The pid file stays: its lock, released when the process exits,
        // is what `stop` waits for. The socket goes with the process.
        info!("msync service stopped");
        Ok(())
    }
}
