//! What a branch's worker does on the remote: each operation as the rclone
//! call it needs, run as a job in the branch's stats group and waited for,
//! with deletes and overwrites sent to the trash. Every outcome is a
//! [`Failure`] class, decided here once.

use std::fs::Metadata;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};

use log::{info, warn};
use serde_json::{Value, json};

use super::{BranchWorker, POLL, POLL_FIRST};
use crate::install::write_private;
use crate::rclone::{Call, Job, Location};
use crate::space::size::Shown;
use crate::sync::case::{self, DirGroups};
use crate::sync::failure::Failure;
use crate::sync::table::Op;
use crate::sync::{exact_rule, guard, link_name, local_fs, sync_filter, trash, with_metadata};
use crate::watch::open_for_writing_below;

/// Files smaller than this are sent with one plain call, not a watched job.
const SMALL_FILE: u64 = 1 << 20;

impl BranchWorker {
    pub(super) fn local_fs(&self) -> String {
        local_fs(&self.spec.local)
    }

    /// `<remote>:<path>/<relative>` for a directory inside the branch.
    pub(super) fn remote_dir(&self, relative: &str) -> String {
        format!("{}/{relative}", self.spec.remote)
    }

    pub(super) fn at(&self, relative: &str) -> Location {
        Location::new(&self.spec.remote, relative)
    }

    pub(super) fn reconcile(&self) -> Result<(), Failure> {
        info!(
            "{}: reconciling {} -> {}",
            self.spec.name,
            self.spec.local.display(),
            self.spec.remote
        );
        // Names a case-insensitive cloud would take for others stay out.
        self.hold_clashes_below("")?;
        let plan = self.plan()?;
        if !self.described.swap(true, Ordering::Relaxed) {
            self.describe_backend();
        }
        if self.in_place && !self.partials_cleaned.swap(true, Ordering::Relaxed) {
            self.clean_partials();
        }
        let record = self.record_path();
        let before = read_record(&record);
        if let Some(reason) = guard::refusal(&plan, self.config.mass_delete, before) {
            return Err(Failure::Refused(reason));
        }
        // A file that fails (being written, a name the remote refuses)
        // must not stop the deletes: rclone skips them after any error
        // unless told to go on.
        let mut config = self.transfer_config();
        config["IgnoreErrors"] = json!(true);
        let sent_whole = if self.in_place {
            self.send_changed_whole(&self.local_fs(), "")
        } else {
            Ok(())
        };
        if let Err(failure) = &sent_whole
            && !matches!(failure, Failure::Path { .. })
        {
            return sent_whole;
        }
        let call = Call::sync(&self.local_fs(), &self.spec.remote)
            .filter(self.tree_filter(""))
            .config(config);
        let result = self.run_job(&call).and(sent_whole);
        if matches!(result, Ok(()) | Err(Failure::Path { .. })) {
            self.record_remote_files(&record, plan.local_files);
            self.expire_trash();
            if let Err(err) = self.write_snapshot() {
                warn!(
                    "{}: cannot write the metadata snapshot; the next reconcile tries again: {err}",
                    self.spec.name
                );
                self.meta().lost_track();
            }
        }
        result
    }

    /// The filter for sending the tree below `below` (`""`: the whole
    /// branch) in one job: msync's own files aside, the names held back
    /// from a case-insensitive cloud (see [`super::clash`]), and the files
    /// some process still holds open for writing. Those go once their
    /// writer closes them (the watcher hears it), not half written by a
    /// reconcile that happened to run meanwhile.
    pub(super) fn tree_filter(&self, below: &str) -> serde_json::Value {
        let mut filter = sync_filter();
        if let Some(rules) = filter["ExcludeRule"].as_array_mut() {
            for held in self.held_names_below(below) {
                if let Some(name) = held.to_str() {
                    let rule = exact_rule(name);
                    rules.push(format!("{rule}/**").into());
                    rules.push(rule.into());
                }
            }
        }
        let dir = self.spec.local.join(below);
        let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
        let open = open_for_writing_below(&dir);
        if open.is_empty() {
            return filter;
        }
        info!(
            "{}: {} file(s) open for writing wait for their writers to close them",
            self.spec.name,
            open.len()
        );
        if let Some(rules) = filter["ExcludeRule"].as_array_mut() {
            let names = open.iter().filter_map(|path| path.to_str());
            rules.extend(names.map(|name| exact_rule(name).into()));
        }
        filter
    }

    /// Logs what the remote's backend can do, once it answers.
    fn describe_backend(&self) {
        match self.rclone.fsinfo(&self.spec.remote) {
            Ok(info) => info!(
                "{}: {} has {}",
                self.spec.name,
                self.spec.remote,
                info.summary()
            ),
            Err(_) => self.described.store(false, Ordering::Relaxed),
        }
    }

    fn record_remote_files(&self, record: &Path, files: usize) {
        match write_private(record, format!("{files}\n").as_bytes()) {
            Ok(()) => self.lock().recorded_data = files > 0,
            Err(err) => warn!(
                "{}: cannot record the remote's file count in {}: {err}",
                self.spec.name,
                record.display()
            ),
        }
    }

    fn expire_trash(&self) {
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
    }

    /// Overwritten and deleted remote files go to today's trash, and what
    /// is sent carries rclone's own metadata where the backend keeps it.
    pub(super) fn transfer_config(&self) -> Value {
        self.sending_config(trash::backup_config(&self.spec.remote, SystemTime::now()))
    }

    /// `config` for a call that sends files: rclone's metadata goes along,
    /// and on a backend that writes in place no hash is checked after an
    /// upload: there the check costs another read of the file (see
    /// [`crate::sync::backend::hash_check_costs_a_read`]). The size is
    /// still checked, and SSH's own integrity checks cover the bytes on
    /// the way. Comparisons (is this file unchanged?) still use hashes.
    pub(super) fn sending_config(&self, config: Value) -> Value {
        let mut config = with_metadata(config);
        if self.in_place {
            config["IgnoreChecksum"] = json!(true);
        }
        config
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

    /// Carries out a unit of work: one result per operation, in order.
    pub(super) fn execute(&self, ops: &[Op]) -> Vec<Result<(), Failure>> {
        let results = if ops.len() > 1 {
            self.upload_many(ops)
        } else {
            vec![self.execute_one(&ops[0])]
        };
        let uploaded = ops
            .iter()
            .zip(&results)
            .any(|(op, result)| op.sends_bytes() && result.is_ok());
        if uploaded {
            self.note_remote_holds_data();
        }
        results
    }

    fn execute_one(&self, op: &Op) -> Result<(), Failure> {
        if let Some(result) = self.instead_of_held(op) {
            return result;
        }
        match op {
            Op::Upload(path) => self.upload(path),
            Op::Delete(path) => self.trash_file(relative(path)?),
            Op::Discard(path) => self.discard_file(relative(path)?),
            Op::DeleteDir(path) => self.trash_dir(relative(path)?),
            Op::MakeDir(path) => {
                if !self.spec.local.join(path).is_dir() {
                    return Ok(());
                }
                self.check_name(path, &mut DirGroups::default())?;
                let name = relative(path)?;
                match Call::mkdir(&self.at(name)).run(self.rclone) {
                    Ok(_) => Ok(()),
                    Err(err) => self.after_kind_conflict(name, true, err.into()),
                }
            }
            Op::Move { from, to, is_dir } => self.move_remote(from, to, *is_dir),
            // Only the index changes: recorded once the work is done.
            Op::Describe(_) => Ok(()),
        }
    }

    /// Moves a remote file to the trash; nothing there is nothing to do.
    /// A deleted path may have been a symlink, stored as `NAME.rclonelink`:
    /// that goes when there is no plain file.
    fn trash_file(&self, name: &str) -> Result<(), Failure> {
        let moved = self.trash_object(name);
        match moved {
            Err(failure) if failure.is_not_found() => {
                ignore_not_found(self.trash_object(&link_name(name)))
            }
            other => other,
        }
    }

    fn trash_object(&self, name: &str) -> Result<(), Failure> {
        // The trash name is new (it carries the time to the millisecond):
        // rclone need not look whether something is there.
        let call = Call::movefile(
            &self.at(name),
            &self.at(&trash::trashed(name, SystemTime::now())),
        )
        .config(json!({"NoCheckDest": true}));
        call.run(self.rclone).map(|_| ()).map_err(Failure::from)
    }

    /// Deletes a remote file for good (it moved to another branch); nothing
    /// there is nothing to do.
    fn discard_file(&self, name: &str) -> Result<(), Failure> {
        let call = Call::new(
            "operations/deletefile",
            json!({"fs": self.spec.remote, "remote": name}),
        );
        ignore_not_found(call.run(self.rclone).map(|_| ()).map_err(Failure::from))
    }

    /// Moves a remote directory to the trash, as one versioned directory.
    fn trash_dir(&self, name: &str) -> Result<(), Failure> {
        let trashed = trash::trashed_dir(name, SystemTime::now());
        let call = Call::move_dir(&self.remote_dir(name), &self.remote_dir(&trashed));
        ignore_not_found(self.run_job(&call))?;
        // sync/move empties the directory but leaves it.
        let rmdir = Call::new(
            "operations/rmdir",
            json!({"fs": self.spec.remote, "remote": name}),
        );
        ignore_not_found(rmdir.run(self.rclone).map(|_| ()).map_err(Failure::from))
    }

    /// What the local path is, decided without opening it.
    fn local_kind(&self, path: &Path) -> Option<Metadata> {
        std::fs::symlink_metadata(self.spec.local.join(path)).ok()
    }

    pub(super) fn upload(&self, path: &Path) -> Result<(), Failure> {
        let name = relative(path)?;
        let Some(meta) = self.local_kind(path) else {
            // Gone since: the delete that follows covers it.
            return Ok(());
        };
        self.check_name(path, &mut DirGroups::default())?;
        let kind = meta.file_type();
        if kind.is_symlink() {
            // Whatever the path held before it became a link goes; the link
            // is stored as its target, in `NAME.rclonelink`.
            self.trash_file(name)?;
            let link = link_name(name);
            let call = Call::copyfile(
                &Location::new(self.local_fs(), &link),
                &Location::new(&self.spec.remote, &link),
            )
            .filter(sync_filter())
            .config(self.transfer_config());
            return call
                .run_in(self.rclone, &self.group())
                .map(|_| ())
                .map_err(Failure::from);
        }
        if kind.is_fifo() || kind.is_socket() || kind.is_block_device() || kind.is_char_device() {
            // Opening a FIFO would block until someone writes to it; none
            // of these holds data to send.
            return Err(Failure::Skipped(format!(
                "a {}, not a regular file: msync never opens or sends it",
                special_kind(&meta)
            )));
        }
        if meta.is_dir() {
            return match self.send_dir(name) {
                Err(failure @ Failure::Path { .. }) => {
                    self.after_kind_conflict(name, true, failure)
                }
                other => other,
            };
        }
        let mut room = self.held_room();
        room.take(meta.len())?;
        if crate::meta::entry::is_sparse(&meta) {
            info!(
                "{}: {name} is sparse ({} of data): clouds keep no holes, so it is sent at its full {} (a restore makes the holes again)",
                self.spec.name,
                Shown(meta.blocks() * 512),
                Shown(meta.len())
            );
        }
        match self.send_file(name, meta.len() >= SMALL_FILE) {
            Err(failure @ Failure::Path { .. }) => self.after_kind_conflict(name, false, failure),
            other => other,
        }
    }

    /// Sends a directory of the branch and what it holds to `name`; only
    /// what the remote lacks or holds otherwise goes.
    fn send_dir(&self, name: &str) -> Result<(), Failure> {
        self.hold_clashes_below(name)?;
        let local = local_fs(&self.spec.local.join(name));
        if self.in_place {
            return self.send_changed_whole(&local, name);
        }
        let call = Call::copy(&local, &self.remote_dir(name))
            .filter(self.tree_filter(name))
            .config(self.sending_config(trash::backup_config_below(
                &self.spec.remote,
                name,
                SystemTime::now(),
            )));
        self.run_job(&call)
    }

    /// Sends one regular file to `name`. Where the backend writes uploads
    /// in place, it goes under a temporary name in `.msync/partial/` and is
    /// renamed into place once whole, so a killed upload never leaves a
    /// torn file under the real name (the next start empties that
    /// directory); elsewhere it goes straight to its name.
    fn send_file(&self, name: &str, big: bool) -> Result<(), Failure> {
        let source = Location::new(self.local_fs(), name);
        if !self.in_place {
            // The filter keeps the trash (inside the destination) out of the
            // destination's listing, which rclone requires of a backup-dir.
            let call = Call::copyfile(&source, &self.at(name))
                .filter(sync_filter())
                .config(self.transfer_config());
            return self.transfer(&call, big);
        }
        self.send_file_whole(&source, name, big)
    }

    /// A big file goes as a watched job, a small one as one plain call: it
    /// is done before a job could be watched.
    pub(super) fn transfer(&self, call: &Call, big: bool) -> Result<(), Failure> {
        if big {
            self.run_job(call)
        } else {
            call.run_in(self.rclone, &self.group())
                .map(|_| self.count_sent())
                .map_err(Failure::from)
        }
    }

    /// After a path failed: when the remote holds the other kind of thing
    /// there (a directory where the branch now has a file, or the other way
    /// round), that stale object goes to the trash and the work is retried
    /// at once; otherwise the failure stands.
    fn after_kind_conflict(
        &self,
        name: &str,
        local_is_dir: bool,
        failure: Failure,
    ) -> Result<(), Failure> {
        // Looking costs a request, and a call to a remote that stopped
        // answering may hang: only when the error hints at a conflict.
        if !failure.may_be_kind_conflict() {
            return Err(failure);
        }
        let remote = match self.rclone.stat(&self.at(name)) {
            Ok(Some(entry)) => entry,
            _ => return Err(failure),
        };
        if remote.is_dir == local_is_dir {
            return Err(failure);
        }
        info!(
            "{}: {name} changed kind; the remote's old {} goes to the trash",
            self.spec.name,
            if remote.is_dir { "directory" } else { "file" }
        );
        if remote.is_dir {
            self.trash_dir(name)?;
        } else {
            self.trash_file(name)?;
        }
        if local_is_dir {
            self.send_dir(name)
        } else {
            self.send_file(name, true)
        }
    }

    fn held_room(&self) -> HeldRoom<'_> {
        HeldRoom {
            worker: self,
            bytes: 0,
        }
    }

    /// The stats group of the branch's transfers.
    pub(super) fn group(&self) -> String {
        format!("msync/branch/{}", self.spec.name)
    }

    /// Many new or changed files at once: one `sync/copy` job over a file
    /// list, so rclone's parallel transfers work for the whole burst. What
    /// is not a regular file now is handled on its own.
    fn upload_many(&self, ops: &[Op]) -> Vec<Result<(), Failure>> {
        let mut results: Vec<Option<Result<(), Failure>>> = vec![None; ops.len()];
        let mut listed = Vec::new();
        let mut list = String::new();
        let mut room = self.held_room();
        let mut groups = DirGroups::default();
        for (index, op) in ops.iter().enumerate() {
            let Op::Upload(path) = op else {
                results[index] = Some(self.execute_one(op));
                continue;
            };
            let regular = self
                .local_kind(path)
                .filter(|meta| meta.file_type().is_file());
            // The rest go through `upload`, which looks at their names itself.
            if regular.is_some()
                && let Err(clash) = self.check_name(path, &mut groups)
            {
                results[index] = Some(Err(clash));
                continue;
            }
            if let Some(meta) = &regular
                && let Err(no_room) = room.take(meta.len())
            {
                results[index] = Some(Err(no_room));
                continue;
            }
            let regular = regular.is_some();
            match relative(path) {
                // A line of the list cannot hold these: sent on their own.
                Ok(name) if regular && !name.contains('\n') && !name.ends_with('\r') => {
                    list.push_str(name);
                    list.push('\n');
                    listed.push(index);
                }
                _ => results[index] = Some(self.upload(path)),
            }
        }
        if !listed.is_empty() {
            for (index, outcome) in listed.into_iter().zip(self.upload_list(&list)) {
                results[index] = Some(outcome);
            }
        }
        results
            .into_iter()
            .map(|r| r.expect("every operation has a result"))
            .collect()
    }

    /// Sends the files of `list` as one job; where the backend writes in
    /// place, into a directory of `.msync/partial/` first, then each is
    /// renamed into place.
    fn upload_list(&self, list: &str) -> Vec<Result<(), Failure>> {
        if !self.in_place {
            let outcome = self.copy_list(list, &self.spec.remote, self.transfer_config());
            return vec![outcome; list.lines().count()];
        }
        self.send_list_whole(list)
    }

    /// Copies the branch files of `list` (one relative name a line) to
    /// `destination` as one job, with `config`.
    pub(super) fn copy_list(
        &self,
        list: &str,
        destination: &str,
        config: Value,
    ) -> Result<(), Failure> {
        // Each thread of the branch has its own list file.
        let list_file = self.spec.work_dir.join(format!(
            "{}.{:?}.files",
            self.spec.name,
            std::thread::current().id()
        ));
        write_private(&list_file, list.as_bytes())
            .map_err(|e| Failure::transient(format!("writing {}: {e}", list_file.display())))?;
        // rclone refuses --files-from-raw together with other filters; the
        // list holds no local-only names (the watcher never reports them).
        let filter = json!({ "FilesFromRaw": [list_file] });
        let call = Call::copy(&self.local_fs(), destination)
            .filter(filter)
            .config(config);
        let result = self.run_job(&call);
        let _ = std::fs::remove_file(&list_file);
        result
    }

    /// A rename: moved on the remote, server-side. When the remote has
    /// nothing at the old name (it was never uploaded: made and renamed
    /// before its first upload, or its name is one the remote refuses),
    /// the new name is uploaded instead.
    fn move_remote(&self, from: &Path, to: &Path, is_dir: bool) -> Result<(), Failure> {
        let (from_name, to_name) = (relative(from)?, relative(to)?);
        match self.check_name(to, &mut DirGroups::default()) {
            Err(clash @ Failure::NameClash { .. }) => {
                // The new name is held back: the old one goes as a delete
                // would, and the new one moves to another branch.
                if is_dir {
                    self.trash_dir(from_name)?;
                } else {
                    self.trash_file(from_name)?;
                }
                return Err(clash);
            }
            Err(failure) => return Err(failure),
            Ok(()) => {}
        }
        let is_link = self
            .local_kind(to)
            .is_some_and(|meta| meta.file_type().is_symlink());
        let result = if is_dir {
            let call = Call::move_dir(&self.remote_dir(from_name), &self.remote_dir(to_name));
            self.run_job(&call)
        } else if is_link {
            self.move_file(&link_name(from_name), &link_name(to_name))
        } else {
            self.move_file(from_name, to_name)
        };
        match result {
            Err(
                failure @ Failure::Path {
                    permanent: true, ..
                },
            ) => {
                info!(
                    "{}: cannot move {from_name} on the remote ({}); uploading {to_name}",
                    self.spec.name,
                    failure.message()
                );
                self.upload(to)
            }
            Err(failure) if failure.is_not_found() => self.upload(to),
            other => other,
        }
    }

    /// Moves a remote file server-side, one plain call; what it replaces
    /// goes to the trash.
    pub(super) fn move_file(&self, from: &str, to: &str) -> Result<(), Failure> {
        // msync's own call looks the new name up first, and on a
        // case-insensitive cloud a change of case finds the old name there:
        // rclone's move knows to go through a temporary name.
        let case_only = to != from && case::fold(to.as_ref()) == case::fold(from.as_ref());
        let call = if self.places && !case_only {
            let backup = trash::trashed(to, SystemTime::now());
            Call::placefile(&self.spec.remote, from, to, &backup, None)
        } else {
            // The filter keeps the trash (inside the destination) out of the
            // destination's listing, which rclone requires of a backup-dir.
            Call::movefile(&self.at(from), &self.at(to))
                .filter(sync_filter())
                .config(self.transfer_config())
        };
        call.run(self.rclone).map(|_| ()).map_err(Failure::from)
    }

    /// Runs a call as a job in the branch's stats group and waits for it,
    /// cancelling it when the stop deadline passes.
    pub(super) fn run_job(&self, call: &Call) -> Result<(), Failure> {
        self.run_job_in(call, &self.group()).map(|_| ())
    }

    /// [`Self::run_job`] in another stats group; returns the finished job
    /// so its stats can be read.
    fn run_job_in(&self, call: &Call, group: &str) -> Result<Job, Failure> {
        let job = call.start(self.rclone, group)?;
        self.wait_for(&job).map(|()| job)
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
            let job = match self.run_job_in(&dry_run, &format!("msync/plan/{}", self.spec.name)) {
                // A dry run that met a busy file still counted the deletes.
                Ok(job) => job,
                Err(Failure::Path { .. }) => {
                    return Err(Failure::transient("the reconcile's dry run failed"));
                }
                Err(failure) => return Err(failure),
            };
            let deletes = job.progress().map(|p| p.deletes as usize);
            let _ = job.forget_stats();
            plan.deletions = deletes?;
        }
        Ok(plan)
    }

    fn wait_for(&self, job: &Job) -> Result<(), Failure> {
        let mut cancelled = false;
        let mut poll = POLL_FIRST;
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
                return Err(Failure::from_message(format!(
                    "{}: {}",
                    job.method(),
                    status.error
                )));
            }
            let deadline = self.lock().stop_deadline;
            if !cancelled && deadline.is_some_and(|d| Instant::now() >= d) {
                let _ = job.cancel();
                cancelled = true;
            }
            std::thread::sleep(poll);
            poll = (poll * 2).min(POLL);
        }
    }

    fn count_sent(&self) {
        if let Ok(stats) = self.stats() {
            let mut shared = self.lock();
            shared.files_sent = stats.transfers;
            shared.bytes_sent = stats.bytes;
        }
    }
}

/// Room on the cloud held for uploads under way, so that threads sending
/// at once never count the same room twice; given back when dropped (what
/// was sent then counts as sent). A cloud of unknown room is tried.
struct HeldRoom<'a> {
    worker: &'a BranchWorker,
    bytes: u64,
}

impl HeldRoom<'_> {
    fn take(&mut self, bytes: u64) -> Result<(), Failure> {
        let mut shared = self.worker.lock();
        if let Some(headroom) = shared.capacity.headroom() {
            let left = headroom.saturating_sub(shared.sending);
            if bytes > left {
                return Err(Failure::NoRoom(format!(
                    "{} does not fit: the cloud has {} left (its reserve kept free)",
                    Shown(bytes),
                    Shown(left)
                )));
            }
        }
        shared.sending += bytes;
        self.bytes += bytes;
        Ok(())
    }
}

impl Drop for HeldRoom<'_> {
    fn drop(&mut self) {
        self.worker.lock().sending -= self.bytes;
    }
}

fn special_kind(meta: &Metadata) -> &'static str {
    let kind = meta.file_type();
    if kind.is_fifo() {
        "FIFO"
    } else if kind.is_socket() {
        "socket"
    } else {
        "device"
    }
}

fn read_record(path: &Path) -> Option<usize> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

pub(super) fn relative(path: &Path) -> Result<&str, Failure> {
    path.to_str().ok_or_else(|| {
        Failure::permanent(format!(
            "{}: the name is not valid UTF-8, which rclone cannot carry; rename it",
            path.display()
        ))
    })
}

/// Nothing at the source is nothing to do: the work's goal already holds.
fn ignore_not_found(result: Result<(), Failure>) -> Result<(), Failure> {
    match result {
        Err(failure) if failure.is_not_found() => Ok(()),
        other => other,
    }
}
