//! What a branch's worker does on the remote: each operation as the rclone
//! call it needs, run as a job in the branch's stats group and waited for,
//! with deletes and overwrites sent to the trash.

use std::path::Path;
use std::time::{Instant, SystemTime};

use log::{info, warn};
use serde_json::{Value, json};

use super::{BranchWorker, Failure, POLL, SPACE_REFRESH};

/// Files smaller than this are sent with one plain call, not a watched job.
const SMALL_FILE: u64 = 1 << 20;
use crate::install::write_private;
use crate::rclone::{Call, Job, Location, RcloneError};
use crate::sync::queue::Op;
use crate::sync::status::Space;
use crate::sync::{guard, sync_filter, trash};

impl BranchWorker {
    fn local_fs(&self) -> String {
        self.spec.local.to_string_lossy().into_owned()
    }

    /// `<remote>:<path>/<relative>` for a directory inside the branch.
    fn remote_dir(&self, relative: &str) -> String {
        format!("{}/{relative}", self.spec.remote)
    }

    pub(super) fn reconcile(&self) -> Result<(), Failure> {
        info!(
            "{}: reconciling {} -> {}",
            self.spec.name,
            self.spec.local.display(),
            self.spec.remote
        );
        let plan = self.plan()?;
        let record = self.record_path();
        let before = read_record(&record);
        if let Some(reason) = guard::refusal(&plan, self.config.mass_delete, before) {
            return Err(Failure::Refused(reason));
        }
        let call = Call::sync(&self.local_fs(), &self.spec.remote)
            .filter(sync_filter())
            .config(self.trash_config());
        self.run_job(&call)?;
        match write_private(&record, format!("{}\n", plan.local_files).as_bytes()) {
            Ok(()) => self.lock().recorded_data = plan.local_files > 0,
            Err(err) => warn!(
                "{}: cannot record the remote's file count in {}: {err}",
                self.spec.name,
                record.display()
            ),
        }
        match trash::expire(
            self.rclone,
            &self.spec.remote,
            self.config.trash_days,
            SystemTime::now(),
        ) {
            Ok(days) if !days.is_empty() => {
                info!("{}: emptied trash days {}", self.spec.name, days.join(", "))
            }
            Ok(_) => {}
            Err(err) => warn!("{}: cannot expire the trash: {err}", self.spec.name),
        }
        Ok(())
    }

    /// Overwritten and deleted remote files go to today's trash.
    fn trash_config(&self) -> Value {
        trash::backup_config(&self.spec.remote, SystemTime::now())
    }

    /// Where the remote's file count at the last reconcile is kept: what
    /// tells a remote that lists as empty from one that was always empty.
    fn record_path(&self) -> std::path::PathBuf {
        self.spec
            .work_dir
            .join(format!("{}.remote-files", self.spec.name))
    }

    /// After an upload: the remote holds data now, whatever the record said.
    fn note_remote_holds_data(&self) {
        if self.lock().recorded_data {
            return;
        }
        let record = self.record_path();
        if read_record(&record).unwrap_or(0) == 0
            && let Err(err) = write_private(&record, b"1\n")
        {
            warn!(
                "{}: cannot write {}: {err}",
                self.spec.name,
                record.display()
            );
            return;
        }
        self.lock().recorded_data = true;
    }

    pub(super) fn execute(&self, ops: &[Op]) -> Result<(), Failure> {
        let result = self.execute_ops(ops);
        if result.is_ok() && ops.iter().any(|op| matches!(op, Op::Upload(_))) {
            self.note_remote_holds_data();
        }
        result
    }

    fn execute_ops(&self, ops: &[Op]) -> Result<(), Failure> {
        if ops.len() > 1 {
            return self.upload_many(ops);
        }
        match &ops[0] {
            Op::Upload(path) => self.upload(path),
            Op::Delete(path) => {
                let name = relative(path)?;
                let trashed = format!("{}/{name}", trash::today(SystemTime::now()));
                let call = Call::movefile(
                    &Location::new(&self.spec.remote, name),
                    &Location::new(&self.spec.remote, trashed),
                );
                ignore_not_found(call.run(self.rclone))
            }
            Op::DeleteDir(path) => {
                let name = relative(path)?;
                let trashed = format!("{}/{name}", trash::today(SystemTime::now()));
                let call = Call::move_dir(&self.remote_dir(name), &self.remote_dir(&trashed));
                match self.run_job(&call) {
                    Err(Failure::Transient(message)) if is_not_found(&message) => Ok(()),
                    Err(failure) => Err(failure),
                    Ok(()) => {
                        // sync/move empties the directory but leaves it.
                        let rmdir = Call::new(
                            "operations/rmdir",
                            json!({"fs": self.spec.remote, "remote": name}),
                        );
                        ignore_not_found(rmdir.run(self.rclone))
                    }
                }
            }
            Op::MakeDir(path) => {
                if !self.spec.local.join(path).is_dir() {
                    return Ok(());
                }
                Call::mkdir(&Location::new(&self.spec.remote, relative(path)?)).run(self.rclone)?;
                Ok(())
            }
            Op::Move { from, to, is_dir } => self.move_remote(from, to, *is_dir),
        }
    }

    fn upload(&self, path: &Path) -> Result<(), Failure> {
        let name = relative(path)?;
        let local = self.spec.local.join(path);
        let Ok(meta) = std::fs::symlink_metadata(&local) else {
            // Gone since: the delete that follows covers it.
            return Ok(());
        };
        if meta.file_type().is_symlink() {
            info!("{}: {name}: symlinks are not uploaded", self.spec.name);
            return Ok(());
        }
        if meta.is_dir() {
            let call = Call::copy(&local.to_string_lossy(), &self.remote_dir(name))
                .filter(sync_filter())
                // Backups keep their path below the remote directory.
                .config(json!({
                    "BackupDir": format!("{}/{}/{name}", self.spec.remote, trash::today(SystemTime::now()))
                }));
            return self.run_job(&call);
        }
        // The filter keeps the trash (inside the destination) out of the
        // destination's listing, which rclone requires of a backup-dir.
        let call = Call::copyfile(
            &Location::new(self.local_fs(), name),
            &Location::new(&self.spec.remote, name),
        )
        .filter(sync_filter())
        .config(self.trash_config());
        if meta.len() >= SMALL_FILE {
            return self.run_job(&call);
        }
        // A small file is done before a job could be watched: one call
        // instead of a job and its polls, for the cheapest common change.
        call.run_in(self.rclone, &self.group())?;
        self.count_sent();
        Ok(())
    }

    /// The stats group of the branch's transfers.
    fn group(&self) -> String {
        format!("msync/branch/{}", self.spec.name)
    }

    /// Many new or changed files at once: one `sync/copy` job over a file
    /// list, so rclone's parallel transfers work for the whole burst.
    fn upload_many(&self, ops: &[Op]) -> Result<(), Failure> {
        let mut list = String::new();
        for op in ops {
            let Op::Upload(path) = op else { continue };
            match relative(path) {
                // A line of the list cannot hold these: sent on their own.
                Ok(name) if name.contains('\n') || name.ends_with('\r') => self.upload(path)?,
                Ok(name) => {
                    list.push_str(name);
                    list.push('\n');
                }
                // One bad name must not hold up the rest of the burst.
                Err(failure) => self.report_skipped(failure),
            }
        }
        if list.is_empty() {
            return Ok(());
        }
        let list_file = self.spec.work_dir.join(format!("{}.files", self.spec.name));
        write_private(&list_file, list.as_bytes())
            .map_err(|e| Failure::Transient(format!("writing {}: {e}", list_file.display())))?;
        // rclone refuses --files-from-raw together with other filters; the
        // list holds no local-only names (the watcher never reports them).
        let filter = json!({ "FilesFromRaw": [list_file] });
        let call = Call::copy(&self.local_fs(), &self.spec.remote)
            .filter(filter)
            .config(self.trash_config());
        self.run_job(&call)
    }

    /// Logs and shows an operation that can never be done, and goes on.
    pub(super) fn report_skipped(&self, failure: Failure) {
        if let Failure::Permanent(message)
        | Failure::Transient(message)
        | Failure::Refused(message) = failure
        {
            warn!("{}: giving up: {message}", self.spec.name);
            self.lock().last_error = Some(message);
        }
    }

    /// A rename: moved on the remote, server-side. When the remote has
    /// nothing at the old name (it was never uploaded), the new name is
    /// uploaded instead.
    fn move_remote(&self, from: &Path, to: &Path, is_dir: bool) -> Result<(), Failure> {
        let (from_name, to_name) = (relative(from)?, relative(to)?);
        let result = if is_dir {
            let call = Call::move_dir(&self.remote_dir(from_name), &self.remote_dir(to_name));
            self.run_job(&call)
        } else {
            let call = Call::movefile(
                &Location::new(&self.spec.remote, from_name),
                &Location::new(&self.spec.remote, to_name),
            )
            .filter(sync_filter())
            .config(self.trash_config());
            call.run(self.rclone).map(|_| ()).map_err(Failure::from)
        };
        match result {
            Err(Failure::Transient(message)) if is_not_found(&message) => self.upload(to),
            other => other,
        }
    }

    /// Runs a call as a job in the branch's stats group and waits for it,
    /// cancelling it when the stop deadline passes.
    fn run_job(&self, call: &Call) -> Result<(), Failure> {
        self.run_job_in(call, &self.group()).map(|_| ())
    }

    /// [`Self::run_job`] in another stats group; returns the finished job
    /// so its stats can be read.
    fn run_job_in(&self, call: &Call, group: &str) -> Result<Job, Failure> {
        let job = call.start(self.rclone, group)?;
        self.lock().current = Some(job.clone());
        let outcome = self.wait_for(&job);
        self.lock().current = None;
        outcome.map(|()| job)
    }

    /// What a reconcile would do (see [`guard`]), with the dry run as a job
    /// of its own stats group that `stop` can cancel like any other.
    fn plan(&self) -> Result<guard::Plan, Failure> {
        let remote_files = guard::count_remote_files(self.rclone, &self.spec.remote)?;
        let local_files = guard::count_local_files(&self.spec.local);
        let mut plan = guard::Plan {
            local_files,
            remote_files,
            deletions: 0,
        };
        if remote_files > 0 {
            let dry_run = guard::dry_run(&self.spec.local, &self.spec.remote);
            let job = self.run_job_in(&dry_run, &format!("msync/plan/{}", self.spec.name))?;
            let deletes = job.progress().map(|p| p.deletes as usize);
            let _ = job.forget_stats();
            plan.deletions = deletes?;
        }
        Ok(plan)
    }

    fn wait_for(&self, job: &Job) -> Result<(), Failure> {
        let mut cancelled = false;
        loop {
            let status = job.status()?;
            if status.finished {
                if status.success {
                    self.count_sent();
                    return Ok(());
                }
                if cancelled {
                    return Err(Failure::Cancelled);
                }
                return Err(if is_not_found(&status.error) {
                    Failure::Transient(format!("{}: {}", job.method(), status.error))
                } else {
                    Failure::Transient(status.error)
                });
            }
            let deadline = self.lock().stop_deadline;
            if !cancelled && deadline.is_some_and(|d| Instant::now() >= d) {
                let _ = job.cancel();
                cancelled = true;
            }
            std::thread::sleep(POLL);
        }
    }

    fn count_sent(&self) {
        if let Ok(stats) = self
            .rclone
            .rpc("core/stats", &json!({"group": self.group()}))
        {
            let mut shared = self.lock();
            shared.files_sent = stats["transfers"].as_u64().unwrap_or(shared.files_sent);
            shared.bytes_sent = stats["bytes"].as_u64().unwrap_or(shared.bytes_sent);
        }
    }

    pub(super) fn refresh_space(&self) {
        let due = self
            .lock()
            .space_checked
            .is_none_or(|t| t.elapsed() >= SPACE_REFRESH);
        if !due {
            return;
        }
        let root = match self.spec.remote.split_once(':') {
            Some((name, _)) => format!("{name}:"),
            None => return,
        };
        let space = self.rclone.about(&root).ok().map(|about| Space {
            used: about.used,
            free: about.free,
            total: about.total,
        });
        let mut shared = self.lock();
        shared.space = space;
        shared.space_checked = Some(Instant::now());
    }
}

fn read_record(path: &Path) -> Option<usize> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

pub(super) fn relative(path: &Path) -> Result<&str, Failure> {
    path.to_str().ok_or_else(|| {
        Failure::Permanent(format!(
            "{}: the name is not valid UTF-8, which rclone cannot carry; rename it",
            path.display()
        ))
    })
}

fn is_not_found(message: &str) -> bool {
    message.contains("not found")
}

fn ignore_not_found(result: Result<Value, RcloneError>) -> Result<(), Failure> {
    match result {
        Ok(_) => Ok(()),
        Err(err) if err.is_not_found() => Ok(()),
        Err(err) => Err(err.into()),
    }
}
