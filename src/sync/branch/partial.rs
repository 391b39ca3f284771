//! Uploads to a backend that writes in place (see
//! [`crate::sync::backend`]): each file goes under a temporary name in
//! `.msync/partial/` and is renamed into place, server-side, once whole.
//! A killed service thus never leaves a torn file under a real name; the
//! first reconcile of the next start empties the directory.
//!
//! A single file is one `msync/placefile` call where the library has it.
//! A batch is copied into this run's staging directory, then each file is
//! moved into place, several at a time: one after another the moves would
//! hold the whole batch back on a remote with a long round trip.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::SystemTime;

use log::{info, warn};
use serde_json::json;

use super::BranchWorker;
use crate::rclone::{Call, ListOptions, Location};
use crate::sync::failure::{Failure, says_not_found};
use crate::sync::trash;

/// Moves into place run this many at a time, as rclone's checkers do (its
/// `--checkers` default): a move carries no bytes, only a round trip or
/// a few, so more of them at once than transfers keep the line busy.
const MOVES_AT_ONCE: usize = 8;

/// Where uploads wait until they are whole.
const PARTIAL_DIR: &str = ".msync/partial";

/// This process's directory in [`PARTIAL_DIR`], named by its pid and
/// start time, so what an earlier run left there, if its clean-up failed,
/// is never taken for a new upload.
fn run_dir() -> &'static str {
    static RUN: OnceLock<String> = OnceLock::new();
    RUN.get_or_init(|| {
        let started = SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        format!("{PARTIAL_DIR}/{}-{started}", std::process::id())
    })
}

/// A temporary name of its own for one upload, beside [`run_dir`].
fn partial_name() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("{}-{}", run_dir(), NEXT.fetch_add(1, Ordering::Relaxed))
}

impl BranchWorker {
    /// Sends one file from `source` to `name`, through a temporary name.
    pub(super) fn send_file_whole(
        &self,
        source: &Location,
        name: &str,
        big: bool,
    ) -> Result<(), Failure> {
        let partial = partial_name();
        let result = if self.places {
            // One call: the upload, the old version to the trash, the move.
            let backup = trash::trashed(name, SystemTime::now());
            let call = Call::placefile(&self.spec.remote, &partial, name, &backup, Some(source))
                .config(self.sending_config(json!({})));
            self.transfer(&call, big)
        } else {
            let call =
                Call::copyfile(source, &self.at(&partial)).config(self.sending_config(json!({})));
            self.transfer(&call, big)
                .and_then(|()| self.move_file(&partial, name))
        };
        if result.is_err() {
            self.forget_staged(&partial);
        }
        result
    }

    /// Sends the branch files of `list` (one relative name a line) as one
    /// job into [`run_dir`], each under its own relative name, then moves
    /// each into place: one result per name, in order.
    ///
    /// Every batch uses the same directory, so rclone keeps one Fs for it
    /// and its connections (a directory per batch opened a new Fs, and on
    /// SFTP new SSH connections, each time). Batches in flight at once
    /// never hold the same path (the engine sends a path once at a time).
    pub(super) fn send_list_whole(&self, list: &str) -> Vec<Result<(), Failure>> {
        let names: Vec<String> = list.lines().map(str::to_owned).collect();
        let staging = run_dir();
        // Nothing there is worth keeping or comparing with: rclone need
        // not look up each name first.
        let config = self.sending_config(json!({"NoCheckDest": true}));
        if let Err(failure) = self.copy_list(list, &self.remote_dir(staging), config) {
            // What it staged stays: the retry stages the same names again,
            // and the next start empties the directory.
            return vec![Err(failure); names.len()];
        }
        let results = self.place_all(staging, &names, "");
        for (name, result) in names.iter().zip(&results) {
            if result.is_err() {
                self.forget_staged(&format!("{staging}/{name}"));
            }
        }
        results
    }

    /// Deletes a file under a temporary name whose upload or placing
    /// failed; one that cannot be deleted now goes at the next start.
    fn forget_staged(&self, name: &str) {
        let _ = Call::deletefile(&self.at(name)).run(self.rclone);
    }

    /// Sends what differs between the local directory `source` and `below`
    /// on the remote (`""`: the whole remote directory) under temporary
    /// names (one copy job that skips what the remote already holds, as a
    /// sync would), then renames each into place.
    pub(super) fn send_changed_whole(&self, source: &str, below: &str) -> Result<(), Failure> {
        let partial = partial_name();
        let compare = if below.is_empty() {
            self.spec.remote.clone()
        } else {
            self.remote_dir(below)
        };
        let call = Call::new(
            "sync/copy",
            json!({"srcFs": source, "dstFs": self.remote_dir(&partial)}),
        )
        .filter(self.tree_filter(below))
        .config(self.sending_config(json!({"CompareDest": [compare], "IgnoreErrors": true})));
        let copied = self.run_job(&call);
        if let Err(failure) = &copied
            && !matches!(failure, Failure::Path { .. })
        {
            self.forget_partial(&partial);
            return copied;
        }
        // Nothing differed: the copy made no directory (looked at first,
        // so rclone logs no listing error).
        if matches!(self.rclone.stat(&self.at(&partial)), Ok(None)) {
            return copied;
        }
        let listed = self.rclone.list(
            &self.at(&partial),
            &ListOptions {
                recurse: true,
                files_only: true,
                ..ListOptions::default()
            },
        );
        let staged = match listed {
            Ok(staged) => staged,
            Err(err) => {
                self.forget_partial(&partial);
                return Err(err.into());
            }
        };
        let prefix = format!("{partial}/");
        let names: Vec<String> = staged
            .into_iter()
            .map(|entry| match entry.path.strip_prefix(&prefix) {
                Some(name) => name.to_owned(),
                None => entry.path,
            })
            .collect();
        let renamed = self.place_all(&partial, &names, below);
        self.forget_partial(&partial);
        copied.and(renamed.into_iter().find(Result::is_err).unwrap_or(Ok(())))
    }

    /// Renames `partial/<name>` to `below/<name>` for each name, a few at
    /// a time.
    fn place_all(&self, partial: &str, names: &[String], below: &str) -> Vec<Result<(), Failure>> {
        in_parallel(names, MOVES_AT_ONCE, |name| {
            let target = if below.is_empty() {
                name.clone()
            } else {
                format!("{below}/{name}")
            };
            self.move_file(&format!("{partial}/{name}"), &target)
        })
    }

    /// Deletes a temporary directory once its files are placed (or their
    /// upload failed); what cannot be deleted now goes at the next start.
    fn forget_partial(&self, partial: &str) {
        let at = json!({"fs": self.spec.remote, "remote": partial});
        let _ = Call::new("operations/purge", at).run(self.rclone);
    }

    /// At the first reconcile of a start: what killed uploads left in
    /// `.msync/partial/` goes.
    pub(super) fn clean_partials(&self) {
        // Looked at first, so a clean remote logs no rclone error.
        if matches!(self.rclone.stat(&self.at(PARTIAL_DIR)), Ok(None)) {
            return;
        }
        let call = Call::new(
            "operations/purge",
            json!({"fs": self.spec.remote, "remote": PARTIAL_DIR}),
        );
        match call.run(self.rclone) {
            Ok(_) => info!("{}: removed uploads a stop cut short", self.spec.name),
            Err(err) if err.is_not_found() || says_not_found(&err.message) => {}
            Err(err) => warn!(
                "{}: cannot empty {PARTIAL_DIR}; the next start tries again: {err}",
                self.spec.name
            ),
        }
    }
}

/// `work` for each name, `width` at a time: one result per name, in
/// order.
fn in_parallel(
    names: &[String],
    width: usize,
    work: impl Fn(&String) -> Result<(), Failure> + Sync,
) -> Vec<Result<(), Failure>> {
    let results: Mutex<Vec<Option<Result<(), Failure>>>> = Mutex::new(vec![None; names.len()]);
    let next = AtomicU64::new(0);
    std::thread::scope(|scope| {
        for _ in 0..width.clamp(1, names.len().max(1)) {
            scope.spawn(|| {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let Some(name) = names.get(index) else { break };
                    let result = work(name);
                    results.lock().unwrap_or_else(|p| p.into_inner())[index] = Some(result);
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .map(|r| r.expect("every name has a result"))
        .collect()
}
