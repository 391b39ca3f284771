//! The service's leases on its remote directories (see
//! [`crate::sync::lease`]): taken at start, renewed every minute on the
//! thread `msync-lease`, given back when the service ends. A remote's
//! listing of dot names is checked when its lease is first taken, so a
//! remote away at start is checked when it returns.

use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::time::Duration;

use log::{error, info, warn};

use crate::error::{ExitCode, coded};
use crate::install::InstallDir;
use crate::rclone::Rclone;
use crate::sync::lease::{self, Lease, LeaseError, Leases, Taken};
use crate::sync::{Engine, backend};

/// Takes the lease on every remote directory. Another installation's live
/// lease refuses the start (and gives back what was taken); a remote that
/// cannot be reached is returned with the reason, to be held until the
/// lease renewal reaches it.
pub(super) fn take_leases(
    rclone: Rclone,
    leases: &Leases,
    install: &InstallDir,
    lease: &Lease,
    force: bool,
) -> anyhow::Result<Vec<(usize, String)>> {
    let mut unreachable = Vec::new();
    let give_back = |taken: &[crate::install::Branch]| {
        for branch in taken {
            let _ = leases.release(&branch.remote, lease);
        }
    };
    for (index, branch) in install.manifest.branches.iter().enumerate() {
        let taken = leases.take(&branch.remote, lease, force);
        if taken.is_ok() && backend::hides_dot_names(rclone, &branch.remote).unwrap_or(false) {
            give_back(&install.manifest.branches[..=index]);
            return Err(coded(
                ExitCode::Refused,
                backend::hidden_dot_names_refusal(&branch.remote),
            ));
        }
        match taken {
            Ok(Taken::TookOver(holder)) => {
                info!("{}: took over a stale lease of {holder}", branch.remote)
            }
            Ok(Taken::Forced(holder)) => {
                warn!("{}: took the lease of {holder} by force", branch.remote)
            }
            Ok(Taken::Free | Taken::Renewed) => {}
            Err(err @ LeaseError::Watching { .. }) => {
                let reason = format!("{err}; this branch waits until then");
                warn!("{reason}");
                unreachable.push((index, reason));
            }
            Err(err @ LeaseError::Held { .. }) => {
                give_back(&install.manifest.branches[..index]);
                return Err(coded(ExitCode::Refused, err.to_string()));
            }
            Err(err) => {
                let reason = format!(
                    "cannot take the lease on {} ({err}); msync does not sync this branch until it can, and tries every minute",
                    branch.remote
                );
                warn!("{reason}");
                unreachable.push((index, reason));
            }
        }
    }
    Ok(unreachable)
}

/// Gives every lease back when the service ends, however it ends.
pub(super) struct LeaseGuard {
    pub(super) leases: Leases,
    pub(super) remotes: Vec<String>,
    pub(super) lease: Lease,
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        for remote in &self.remotes {
            if let Err(err) = self.leases.release(remote, &self.lease) {
                warn!("{remote}: could not release the lease: {err}");
            }
        }
    }
}

/// Renews the leases five times per expiry on the thread `msync-lease`; a
/// lease another installation holds stops that branch until it is ours
/// again (given back, or seen abandoned for the expiry). The branches in
/// `unchecked` (away at start) are held until their remote answers and
/// lists dot names; one that hides them stays held, with what to set.
/// Dropping the returned sender ends the thread.
pub(super) fn renew_leases(
    install: &InstallDir,
    rclone: Rclone,
    lease: &Lease,
    expiry: Duration,
    engine: &Arc<Engine>,
    unchecked: &[usize],
) -> anyhow::Result<Sender<()>> {
    let (stop, stopped) = mpsc::channel::<()>();
    let remotes: Vec<String> = install
        .manifest
        .branches
        .iter()
        .map(|b| b.remote.clone())
        .collect();
    let (leases, lease, engine) = (
        Leases::new(rclone, &install.state_dir(), expiry),
        lease.clone(),
        Arc::clone(engine),
    );
    let mut dot_names = DotNameChecks::new(remotes.len(), unchecked);
    std::thread::Builder::new()
        .name("msync-lease".into())
        .spawn(move || {
            let every = lease::renew_every(expiry);
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                for (index, remote) in remotes.iter().enumerate() {
                    match leases.renew(remote, &lease) {
                        Ok(taken) => {
                            if let Taken::TookOver(holder) = taken {
                                info!("{remote}: took over a stale lease of {holder}");
                            }
                            dot_names.hold_after_renewal(rclone, &engine, index, remote);
                        }
                        Err(err @ LeaseError::Held { .. }) => {
                            error!("{err}");
                            engine.hold(index, Some(format!("lost the lease: {err}")));
                        }
                        Err(err) => warn!("{remote}: could not renew the lease: {err}"),
                    }
                }
            }
        })?;
    Ok(stop)
}

/// Which branches still need their remote's listing of dot names checked,
/// and which failed it: such a remote takes every upload and lists none of
/// `.git` or `.config` back (see [`backend::hides_dot_names`]).
struct DotNameChecks {
    unchecked: Vec<bool>,
    refusals: Vec<Option<String>>,
}

impl DotNameChecks {
    fn new(branches: usize, unchecked: &[usize]) -> DotNameChecks {
        DotNameChecks {
            unchecked: (0..branches).map(|i| unchecked.contains(&i)).collect(),
            refusals: vec![None; branches],
        }
    }

    /// After the lease on branch `index` was taken or renewed: syncs it,
    /// or holds it with the refusal (which its worker logs), or leaves it
    /// held while its listing cannot be asked for.
    fn hold_after_renewal(&mut self, rclone: Rclone, engine: &Engine, index: usize, remote: &str) {
        if self.unchecked[index] {
            match backend::hides_dot_names(rclone, remote) {
                Ok(hides) => {
                    self.unchecked[index] = false;
                    self.refusals[index] = hides.then(|| backend::hidden_dot_names_refusal(remote));
                }
                Err(err) => {
                    warn!("{remote}: could not list it: {err}; this branch waits");
                    return;
                }
            }
        }
        engine.hold(index, self.refusals[index].clone());
    }
}
