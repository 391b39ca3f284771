//! A branch whose cloud is case-insensitive (see [`crate::sync::case`]).
//! Before a path is sent, and before a whole tree is, the names on its way
//! that differ only in case from another in the same directory are looked
//! at: the one the remote already lists keeps its place, the others are
//! held back. A held name is never sent (the reconcile's filter leaves it
//! out), never recorded in the metadata index, and never the subject of a
//! call to the remote: a delete or a move of it there would reach the name
//! the cloud keeps. It is listed as homeless, for the service to move it to
//! a branch that can take it; until then `status` lists it.
//!
//! On a case-sensitive remote none of this costs anything but one
//! `operations/fsinfo`, once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use log::warn;

use super::BranchWorker;
use crate::rclone::ListOptions;
use crate::sync::case::{self, DirGroups};
use crate::sync::failure::Failure;
use crate::sync::table::Op;

impl BranchWorker {
    /// Whether the remote takes names that differ only in case for one.
    pub(super) fn is_case_insensitive(&self) -> Result<bool, Failure> {
        if let Some(known) = self.case_insensitive.get() {
            return Ok(*known);
        }
        let info = self.rclone.fsinfo(&self.spec.remote)?;
        Ok(*self
            .case_insensitive
            .get_or_init(|| info.has("CaseInsensitive")))
    }

    /// Before `path` is sent: a name on its way that the cloud would take
    /// for another it keeps is the path's failure, and the path is held.
    pub(super) fn check_name(&self, path: &Path, groups: &mut DirGroups) -> Result<(), Failure> {
        if !self.is_case_insensitive()? {
            return Ok(());
        }
        for clash in case::clashes_on_path(&self.spec.local, path, groups) {
            let listed = self.listed_names(&clash.dir)?;
            let keeper = clash.keeper(&listed).to_owned();
            let Some(spelling) = clash.spelling_in(path) else {
                continue;
            };
            if spelling != keeper {
                let held = clash.dir.join(spelling);
                let message = self.held_reason(&clash.dir.join(&keeper));
                self.lock().held_names.insert(held.clone(), message.clone());
                return Err(Failure::NameClash { held, message });
            }
        }
        // Its rival is gone, or it is the name the cloud keeps now.
        self.lock().held_names.remove(path);
        Ok(())
    }

    /// Before the tree below `below` (`""`: the whole branch) is sent in
    /// one job: finds every clash in it and holds the names that lose,
    /// in place of what was held there before. Each is queued as an upload
    /// of its own, which finds the clash and asks for the move.
    pub(super) fn hold_clashes_below(&self, below: &str) -> Result<(), Failure> {
        if !self.is_case_insensitive()? {
            return Ok(());
        }
        let mut held = BTreeMap::new();
        for clash in case::clashes_below(&self.spec.local, Path::new(below)) {
            let listed = self.listed_names(&clash.dir)?;
            let keeper = clash.dir.join(clash.keeper(&listed));
            for name in clash.held(&listed) {
                let reason = self.held_reason(&keeper);
                held.insert(name, reason);
            }
        }
        if !held.is_empty() {
            warn!(
                "{}: {} name(s) differ only in case from others the case-insensitive cloud keeps; they stay out and move to another branch",
                self.spec.name,
                held.len()
            );
        }
        let mut shared = self.lock();
        shared.held_names.retain(|path, _| !path.starts_with(below));
        for (path, reason) in held {
            shared.held_names.insert(path.clone(), reason);
            shared.table.push(Op::Upload(path));
        }
        self.wake.notify_all();
        Ok(())
    }

    /// Whether `path` or a directory above it is held back.
    pub(super) fn is_held_name(&self, path: &Path) -> bool {
        let shared = self.lock();
        !shared.held_names.is_empty() && path.ancestors().any(|a| shared.held_names.contains_key(a))
    }

    /// The held names below `below`, relative to it.
    pub(super) fn held_names_below(&self, below: &str) -> Vec<PathBuf> {
        let shared = self.lock();
        shared
            .held_names
            .keys()
            .filter_map(|path| path.strip_prefix(below).ok())
            .filter(|rest| !rest.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .collect()
    }

    /// What a held name's work does instead of calling the remote; `None`
    /// for work that touches no held name.
    pub(super) fn instead_of_held(&self, op: &Op) -> Option<Result<(), Failure>> {
        match op {
            // The remote holds nothing of it: nothing to delete there.
            Op::Delete(path) | Op::Discard(path) | Op::DeleteDir(path)
                if self.is_held_name(path) =>
            {
                Some(Ok(()))
            }
            // Nothing to move there either: the new name is sent instead.
            Op::Move { from, to, .. } if self.is_held_name(from) => {
                self.lock().held_names.remove(from.as_path());
                Some(self.upload(to))
            }
            _ => None,
        }
    }

    /// The names the remote directory `dir` lists, which tell which of
    /// two clashing names it keeps.
    fn listed_names(&self, dir: &Path) -> Result<Vec<String>, Failure> {
        let dir = dir.to_str().unwrap_or_default();
        let entries = self
            .rclone
            .list_if_present(&self.at(dir), &ListOptions::default())?;
        Ok(entries.into_iter().map(|e| e.name).collect())
    }

    /// Why a name is held, as `status` lists it beside the name.
    fn held_reason(&self, keeper: &Path) -> String {
        format!(
            "differs only in case from {}, which {} keeps: that cloud takes the two names for one, so this one waits to move to another branch",
            keeper.display(),
            self.spec.remote
        )
    }
}
