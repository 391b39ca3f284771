//! Placement and moves, on the thread `msync-space`: every second it reads
//! each cloud's capacity from the engine, decides which branches take new
//! files (see [`crate::space::placement`]) and tells the union, and moves
//! each file that did not fit on its cloud to a branch whose cloud has room
//! (see [`crate::space::relocate`]). The move is local; the watcher sees it
//! and the engine uploads the file from its new branch. The old branch's
//! object (an older version, or a partial upload) stays until the new
//! branch has sent the file, and is then deleted for good, not trashed.
//!
//! [`Mover`] makes those moves, for the keeper and for `msync balance`
//! (through the control socket), and knows which branches are retired.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::{error, info, warn};
use serde::{Deserialize, Serialize};

#[cfg(doc)]
use super::control::Request;
use super::control::{MoveOrder, Reply};
use crate::error::ExitCode;
use crate::install::InstallDir;
use crate::space::placement::{self, Candidate, PoolRoom};
use crate::space::relocate::{self, RelocateError};
use crate::space::size::Shown;
use crate::sync::{Engine, Homeless, Trouble, branch_files, case};
use crate::union::{self, Driver};

/// How often placement is looked at.
const TICK: Duration = Duration::from_secs(1);
/// How long a moved file's old copy waits for the new branch to send it.
const PENDING_MAX: Duration = Duration::from_secs(24 * 3600);

/// The pool's space as `status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolStatus {
    pub room: PoolRoom,
    /// Sums over the clouds whose capacity is known.
    pub total: u64,
    pub free: u64,
    pub fill_percent: Option<f64>,
    /// The branches new files go to now.
    pub takes_new: Vec<String>,
    /// Branches whose cloud's capacity is unknown.
    pub unknown: Vec<String>,
}

/// What becomes of a moved file's object on its old cloud.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OldCopy {
    /// Deleted for good once the new branch has sent the file.
    Discard,
    /// The old cloud holds none.
    None,
}

struct Kept {
    name: String,
    dir: PathBuf,
}

/// Moves files between branches and keeps the list of retired branches.
pub(super) struct Mover {
    engine: Arc<Engine>,
    branches: Vec<Kept>,
    retired: Mutex<Vec<bool>>,
    /// The service is stopping: its watcher may be gone, so a move would
    /// not be seen.
    stopped: AtomicBool,
    /// Moves whose new branch has not sent the file yet: (from, to, path,
    /// when).
    pending: Mutex<Vec<(usize, usize, PathBuf, Instant)>>,
}

impl Mover {
    fn index_of(&self, name: &str) -> Option<usize> {
        self.branches.iter().position(|b| b.name == name)
    }

    /// Which branches are retired (emptied for good), in branch order.
    pub(super) fn retired(&self) -> Vec<bool> {
        self.retired
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Moves `path` from branch `from` to branch `to`; the old cloud's
    /// copy, if it may hold one, is discarded once the new branch has sent
    /// the file.
    fn move_file(
        &self,
        from: usize,
        to: usize,
        path: &Path,
        old_copy: OldCopy,
    ) -> Result<(), RelocateError> {
        // Told first, so the old branch ignores the watcher's delete.
        self.engine.moved(from, to, path);
        if let Err(err) =
            relocate::move_file(&self.branches[from].dir, &self.branches[to].dir, path)
        {
            self.engine.moved_back(from, to, path);
            return Err(err);
        }
        if old_copy == OldCopy::Discard {
            self.lock_pending()
                .push((from, to, path.to_path_buf(), Instant::now()));
        }
        Ok(())
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, Vec<(usize, usize, PathBuf, Instant)>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Discards the old copy of each moved file its new branch has sent.
    fn discard_sent(&self) {
        let mut pending = self.lock_pending();
        if pending.is_empty() {
            return;
        }
        for to in 0..self.branches.len() {
            for sent in self.engine.take_sent_moved(to) {
                if let Some(at) = pending
                    .iter()
                    .position(|(_, t, p, _)| *t == to && *p == sent)
                {
                    let (from, _, path, _) = pending.remove(at);
                    self.engine.discard(from, path);
                }
            }
        }
        // Never sent (deleted meanwhile, or the new cloud never took it):
        // the old copy is left for the old branch's reconcile to trash.
        pending.retain(|(_, _, path, since)| {
            let keep = since.elapsed() < PENDING_MAX;
            if !keep {
                warn!(
                    "{}: moved a day ago and still not sent from its new branch; its old copy is left to the reconcile",
                    path.display()
                );
            }
            keep
        });
    }

    /// Carries out `balance`'s moves (see [`Request::Move`]).
    pub(super) fn answer(&self, moves: &[MoveOrder], retire: Option<&str>) -> Reply {
        if self.stopped.load(Ordering::SeqCst) {
            return Reply::Error {
                code: ExitCode::RunningState.code(),
                message: "the service is stopping; run `msync balance` again after the next start, or while it is stopped".into(),
            };
        }
        if let Some(name) = retire {
            let Some(index) = self.index_of(name) else {
                return Reply::Error {
                    code: ExitCode::Usage.code(),
                    message: format!("no branch named {name:?}"),
                };
            };
            let mut retired = self.retired.lock().unwrap_or_else(|p| p.into_inner());
            if !retired[index] {
                info!("{name}: retired: it takes no new files");
                retired[index] = true;
            }
        }
        let mut moved = 0;
        let mut failed = Vec::new();
        for order in moves {
            let (Some(from), Some(to)) = (self.index_of(&order.from), self.index_of(&order.to))
            else {
                failed.push(format!(
                    "{}: no branch {} or {}",
                    order.path.display(),
                    order.from,
                    order.to
                ));
                continue;
            };
            match self.move_file(from, to, &order.path, OldCopy::Discard) {
                Ok(()) => moved += 1,
                Err(err) => failed.push(err.to_string()),
            }
        }
        if moved > 0 {
            info!("balance: moved {moved} file(s) between branches");
        }
        Reply::Moved { moved, failed }
    }
}

/// The running thread. Dropping it lets the thread end after its turn;
/// [`SpaceKeeper::stop`] also waits for that.
pub(super) struct SpaceKeeper {
    stop: Sender<()>,
    thread: JoinHandle<()>,
    /// The pool's space, kept up to date for `status`.
    pub(super) pool: Arc<Mutex<Option<PoolStatus>>>,
    pub(super) mover: Arc<Mover>,
}

impl SpaceKeeper {
    /// Ends the thread and waits for it, and refuses `balance`'s moves:
    /// no move starts after this.
    pub(super) fn stop(self) {
        self.mover.stopped.store(true, Ordering::SeqCst);
        drop(self.stop);
        let _ = self.thread.join();
    }
}

/// Starts the thread `msync-space`.
pub(super) fn keep_space(
    install: &InstallDir,
    mount_point: &Path,
    driver: Driver,
    engine: &Arc<Engine>,
) -> anyhow::Result<SpaceKeeper> {
    let (stop, stopped) = mpsc::channel::<()>();
    let status = Arc::new(Mutex::new(None));
    let branches = &install.manifest.branches;
    let mover = Arc::new(Mover {
        engine: Arc::clone(engine),
        branches: branches
            .iter()
            .map(|b| Kept {
                name: b.name.clone(),
                dir: b.dir.clone(),
            })
            .collect(),
        retired: Mutex::new(branches.iter().map(|b| b.retired).collect()),
        stopped: AtomicBool::new(false),
        pending: Mutex::new(Vec::new()),
    });
    let mut keeper = Keeper {
        engine: Arc::clone(engine),
        mover: Arc::clone(&mover),
        mount_point: mount_point.to_path_buf(),
        driver,
        applied: None,
        pool: None,
        status: Arc::clone(&status),
        unplaced: BTreeSet::new(),
    };
    if driver != Driver::Mergerfs {
        warn!(
            "placement by cloud space needs mergerfs: with {} new files go round robin, and only files that do not fit are moved",
            driver.name()
        );
    }
    let thread = std::thread::Builder::new()
        .name("msync-space".into())
        .spawn(move || {
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(TICK) {
                keeper.turn();
            }
        })?;
    Ok(SpaceKeeper {
        stop,
        thread,
        pool: status,
        mover,
    })
}

struct Keeper {
    engine: Arc<Engine>,
    mover: Arc<Mover>,
    mount_point: PathBuf,
    driver: Driver,
    /// What the union was last told.
    applied: Option<Vec<bool>>,
    pool: Option<PoolRoom>,
    status: Arc<Mutex<Option<PoolStatus>>>,
    /// Held names no branch could take, warned about once each.
    unplaced: BTreeSet<PathBuf>,
}

impl Keeper {
    fn turn(&mut self) {
        let clouds = self.engine.capacities();
        let retired = self.mover.retired();
        let mut candidates: Vec<Candidate> = clouds
            .iter()
            .zip(&retired)
            .map(|((capacity, trouble), &retired)| Candidate {
                // A remote that said it is full or capped takes nothing new
                // until it says otherwise.
                room: match trouble {
                    Some(Trouble::Full | Trouble::Capped) => Some(0),
                    _ => capacity.room(),
                },
                fill: capacity.fill(),
                retired,
            })
            .collect();
        self.relocate_homeless(&mut candidates);
        self.mover.discard_sent();
        let asked_all = clouds
            .iter()
            .zip(&retired)
            .all(|((capacity, _), &retired)| capacity.asked || retired);
        if !asked_all {
            // Until every cloud was asked, the union stays as mounted.
            return;
        }
        let decided = placement::decide(&candidates);
        self.report_pool(decided.pool);
        if self.applied.as_ref() != Some(&decided.takes_new) {
            self.apply(&decided.takes_new);
        }
        let known: Vec<_> = clouds.iter().filter(|(c, _)| c.size().is_some()).collect();
        let total: u64 = known.iter().filter_map(|(c, _)| c.size()).sum();
        let free: u64 = known.iter().filter_map(|(c, _)| c.free()).sum();
        let status = PoolStatus {
            room: decided.pool,
            total,
            free,
            fill_percent: (total > 0)
                .then(|| ((1.0 - free as f64 / total as f64) * 1000.0).round() / 10.0),
            takes_new: self.names(|i| decided.takes_new[i]),
            unknown: self.names(|i| clouds[i].0.size().is_none() && !retired[i]),
        };
        *self.status.lock().unwrap_or_else(|p| p.into_inner()) = Some(status);
    }

    fn names(&self, pick: impl Fn(usize) -> bool) -> Vec<String> {
        let branches = &self.mover.branches;
        (0..branches.len())
            .filter(|&i| pick(i))
            .map(|i| branches[i].name.clone())
            .collect()
    }

    /// Moves each file that cannot go to its cloud to the least full cloud
    /// with room for it, where its name clashes with none; what moved
    /// counts against that cloud at once.
    fn relocate_homeless(&mut self, candidates: &mut [Candidate]) {
        let branches = &self.mover.branches;
        for from in 0..branches.len() {
            for (path, why) in self.engine.take_homeless(from) {
                let source = branches[from].dir.join(&path);
                let Ok(meta) = std::fs::symlink_metadata(&source) else {
                    continue;
                };
                // A directory moves whole when its name clashes.
                let size = if meta.is_dir() {
                    branch_files(&source).iter().map(|(_, size)| size).sum()
                } else {
                    meta.len()
                };
                let open: Vec<Candidate> = (0..candidates.len())
                    .map(|i| Candidate {
                        retired: candidates[i].retired || self.would_clash(i, &path),
                        ..candidates[i]
                    })
                    .collect();
                let Some(to) = placement::target(&open, size, from) else {
                    if why == Homeless::NameClash && self.unplaced.insert(path.clone()) {
                        warn!(
                            "{}: no other branch can take {} (its name clashes, or no cloud has room): it stays on the local disk, listed by `status`",
                            branches[from].name,
                            path.display()
                        );
                    }
                    continue;
                };
                self.unplaced.remove(&path);
                let (from_branch, to_branch) = (&branches[from], &branches[to]);
                // A held name was never sent: its old cloud holds nothing of
                // it, and a delete there would reach the name it keeps.
                let old_copy = match why {
                    Homeless::NoRoom => OldCopy::Discard,
                    Homeless::NameClash => OldCopy::None,
                };
                match self.mover.move_file(from, to, &path, old_copy) {
                    Ok(()) => {
                        let why = match why {
                            Homeless::NoRoom => "no room for",
                            Homeless::NameClash => {
                                "its case-insensitive cloud keeps another name like"
                            }
                        };
                        info!(
                            "{}: {why} {} ({}); moved to {}",
                            from_branch.name,
                            path.display(),
                            Shown(size),
                            to_branch.name
                        );
                        if let Some(room) = &mut candidates[to].room {
                            *room = room.saturating_sub(size);
                        }
                    }
                    Err(RelocateError::Gone(_)) => {}
                    Err(err) => warn!(
                        "{}: cannot move {} to {}: {err}",
                        from_branch.name,
                        path.display(),
                        to_branch.name
                    ),
                }
            }
        }
    }

    /// Whether `path` would clash on `branch`'s cloud with a name the
    /// branch already holds; a cloud not asked yet counts as
    /// case-insensitive.
    fn would_clash(&self, branch: usize, path: &Path) -> bool {
        self.engine.case_insensitive(branch) != Some(false)
            && case::has_rival(&self.mover.branches[branch].dir, path)
    }

    fn report_pool(&mut self, pool: PoolRoom) {
        if self.pool == Some(pool) {
            return;
        }
        match pool {
            PoolRoom::Full => error!(
                "every cloud is full: new files stay on the local disk until room is made (delete files, raise a quota, add an account)"
            ),
            PoolRoom::Unknown => warn!(
                "no cloud tells its capacity: new files go to any branch; set quotas with `msync install --quota NAME=SIZE`"
            ),
            PoolRoom::Room if self.pool.is_some() => info!("the pool has room again"),
            PoolRoom::Room => {}
        }
        self.pool = Some(pool);
    }

    fn apply(&mut self, takes_new: &[bool]) {
        if self.driver != Driver::Mergerfs {
            self.applied = Some(takes_new.to_vec());
            return;
        }
        let branches: Vec<(&Path, bool)> = self
            .mover
            .branches
            .iter()
            .zip(takes_new)
            .map(|(b, &takes)| (b.dir.as_path(), takes))
            .collect();
        match union::set_create_branches(&self.mount_point, &branches) {
            Ok(()) => {
                info!(
                    "new files go to: {}",
                    self.names(|i| takes_new[i]).join(", ")
                );
                self.applied = Some(takes_new.to_vec());
            }
            Err(err) => warn!("cannot tell mergerfs where new files go: {err}"),
        }
    }
}
