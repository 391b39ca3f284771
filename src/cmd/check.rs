//! `msync check [install dir]`: one line per requirement, `ok` or `FAIL`
//! with what to do about it.

use std::path::Path;

use crate::cli::{CheckArgs, GlobalArgs};
use crate::error::ExitCode;
use crate::install::InstallDir;
use crate::rclone::{Location, Rclone};
use crate::rclone_config;
use crate::space::Capacity;
use crate::space::measure::capacity_now;
use crate::space::size::Shown;
use crate::union::Availability;

/// Below this many inotify watches a branch of ordinary size cannot be
/// watched whole.
const MIN_WATCHES: u64 = 8192;

struct Report {
    failed: bool,
}

impl Report {
    fn ok(&mut self, what: &str, detail: impl AsRef<str>) {
        println!("ok   {what}: {}", detail.as_ref());
    }

    fn fail(&mut self, what: &str, detail: impl AsRef<str>) {
        self.failed = true;
        println!("FAIL {what}: {}", detail.as_ref());
    }
}

pub fn run(global: &GlobalArgs, args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let mut report = Report { failed: false };
    check_root(&mut report);
    let rclone = check_librclone(&mut report, global);
    check_inotify(&mut report);
    check_union(&mut report);
    check_rclone_config(&mut report, global, rclone);
    if report.failed {
        return Ok(ExitCode::RequirementMissing);
    }
    if let (Some(install_dir), Some(rclone)) = (&args.install_dir, rclone) {
        return Ok(check_install(install_dir, rclone));
    }
    Ok(ExitCode::Ok)
}

fn check_root(report: &mut Report) {
    let uid = nix::unistd::geteuid();
    if uid.is_root() {
        report.ok("root", "running as root");
    } else {
        report.fail(
            "root",
            format!(
                "running as uid {uid}; msync mounts filesystems and must run as root (sudo msync …)"
            ),
        );
    }
}

fn check_librclone(report: &mut Report, global: &GlobalArgs) -> Option<Rclone> {
    // A config rclone cannot parse would end the process inside the
    // library: load with an empty one then, and let the config check say.
    let config = rclone_config::resolve(global.config.as_deref());
    let loaded = if rclone_config::validate(&config).is_ok()
        || !config.exists() && global.config.is_none()
    {
        super::load_rclone(global)
    } else {
        super::load_rclone_with(global, std::path::PathBuf::from("/dev/null"))
    };
    match loaded {
        Ok(rclone) => {
            report.ok(
                "librclone",
                format!("{} (rclone {})", rclone.path().display(), rclone.version()),
            );
            match rclone.backends() {
                // A full build has dozens: a count says enough.
                Ok(backends) if backends.len() > 12 => {
                    report.ok("backends", format!("{} (a full build)", backends.len()))
                }
                Ok(backends) => report.ok("backends", backends.join(", ")),
                Err(err) => report.fail("backends", err.to_string()),
            }
            Some(rclone)
        }
        Err(err) => {
            report.fail("librclone", format!("{err:#}"));
            None
        }
    }
}

fn check_inotify(report: &mut Report) {
    if let Err(err) = inotify::Inotify::init() {
        report.fail(
            "inotify",
            format!(
                "cannot create an inotify instance ({err}); raise fs.inotify.max_user_instances"
            ),
        );
        return;
    }
    let watches = std::fs::read_to_string("/proc/sys/fs/inotify/max_user_watches")
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok());
    match watches {
        Some(n) if n >= MIN_WATCHES => {
            report.ok("inotify", format!("usable, fs.inotify.max_user_watches = {n}"))
        }
        Some(n) => report.fail(
            "inotify",
            format!("fs.inotify.max_user_watches = {n} is too low; run `sysctl fs.inotify.max_user_watches=524288`"),
        ),
        None => report.fail(
            "inotify",
            "cannot read /proc/sys/fs/inotify/max_user_watches; is /proc mounted?",
        ),
    }
}

fn check_union(report: &mut Report) {
    let available = Availability::probe();
    if available.aufs {
        report.ok("union", "aufs (listed in /proc/filesystems)");
    }
    match (&available.mergerfs, available.fuse_device) {
        (Some(path), true) => report.ok("union", format!("mergerfs at {} with /dev/fuse", path.display())),
        (Some(_), false) if !available.aufs => report.fail(
            "union",
            "mergerfs is installed but /dev/fuse is missing; load the fuse module (`modprobe fuse`)",
        ),
        (None, _) if !available.aufs => report.fail(
            "union",
            "no union filesystem: aufs is not in this kernel and mergerfs is not on PATH; run `apt-get install mergerfs fuse3`",
        ),
        _ => {}
    }
}

fn check_rclone_config(report: &mut Report, global: &GlobalArgs, rclone: Option<Rclone>) {
    let path = rclone_config::resolve(global.config.as_deref());
    if let Err(problem) = rclone_config::validate(&path) {
        report.fail("rclone config", problem);
        return;
    }
    let Some(rclone) = rclone else {
        report.fail(
            "rclone config",
            format!(
                "{}: cannot list its remotes without librclone",
                path.display()
            ),
        );
        return;
    };
    match rclone.list_remotes() {
        Ok(remotes) if remotes.is_empty() => report.fail(
            "rclone config",
            format!(
                "{} defines no remotes; add some with `rclone config`",
                path.display()
            ),
        ),
        Ok(remotes) => report.ok(
            "rclone config",
            format!("{} (remotes: {})", path.display(), remotes.join(", ")),
        ),
        Err(err) => report.fail("rclone config", format!("{}: {err}", path.display())),
    }
}

fn check_install(install_dir: &Path, rclone: Rclone) -> ExitCode {
    let install = match InstallDir::open(install_dir) {
        Ok(install) => install,
        Err(err) => {
            println!("FAIL install: {err}");
            return ExitCode::NotInstalled;
        }
    };
    let mut report = Report { failed: false };
    let unimported: Vec<&str> = install
        .manifest
        .branches
        .iter()
        .filter(|b| !b.imported)
        .map(|b| b.name.as_str())
        .collect();
    report.ok(
        "install",
        format!(
            "{} ({} branches, {})",
            install.root().display(),
            install.manifest.branches.len(),
            if unimported.is_empty() {
                "imported".to_owned()
            } else {
                format!(
                    "not imported yet: {}; run `msync import`",
                    unimported.join(", ")
                )
            }
        ),
    );
    let configured = rclone.list_remotes().unwrap_or_default();
    let backends = rclone.backends().unwrap_or_default();
    let mut capacities = Vec::new();
    for branch in &install.manifest.branches {
        let what = format!("branch {}", branch.name);
        if !branch.dir.is_dir() {
            report.fail(
                &what,
                format!(
                    "{} is missing; run `msync install` again to recreate it",
                    branch.dir.display()
                ),
            );
        } else if !configured.contains(&branch.name) {
            report.fail(&what, format!("remote {:?} is not in the rclone config any more; restore it with `rclone config`", branch.name));
        } else if let Some(missing) = super::missing_backend(rclone, &backends, &branch.name) {
            report.fail(&what, missing);
        } else {
            match rclone
                .about(&format!("{}:", branch.name))
                .map(|about| {
                    capacities.push(capacity_now(
                        rclone,
                        &branch.remote,
                        branch.quota,
                        Some(about),
                    ))
                })
                .or_else(|err| {
                    // Backends without `about` still answer a listing.
                    rclone
                        .list(
                            &Location::new(format!("{}:", branch.name), ""),
                            &Default::default(),
                        )
                        .map(|_| ())
                        .map_err(|_| err)
                }) {
                Ok(()) => {
                    report.ok(
                        &what,
                        format!("{} -> {} (reachable)", branch.dir.display(), branch.remote),
                    );
                    if let Ok(info) = rclone.fsinfo(&branch.remote) {
                        println!("     {}: {}", branch.name, info.summary());
                    }
                }
                Err(err) => report.fail(
                    &what,
                    format!("{} is not reachable: {}", branch.remote, err.message),
                ),
            }
        }
    }
    report_pool_fill(&capacities);
    if report.failed {
        ExitCode::NotInstalled
    } else {
        ExitCode::Ok
    }
}

/// A pool fuller than this gets a warning.
const POOL_WARN_FILL: f64 = 0.9;

/// The pool's fill over the clouds whose size is known; a warning past
/// [`POOL_WARN_FILL`]. Not a failure: the pool still works.
fn report_pool_fill(capacities: &[Capacity]) {
    let known: Vec<(u64, u64)> = capacities
        .iter()
        .filter_map(|c| Some((c.size()?, c.free()?)))
        .collect();
    let total: u64 = known.iter().map(|(size, _)| size).sum();
    if total == 0 {
        return;
    }
    let free: u64 = known.iter().map(|(_, free)| free).sum();
    let fill = 1.0 - free as f64 / total as f64;
    let line = format!(
        "{} free of {} ({:.1} % full)",
        Shown(free),
        Shown(total),
        fill * 100.0
    );
    if fill > POOL_WARN_FILL {
        println!("WARN pool: {line}; add an account, raise a quota or free space before it fills");
    } else {
        println!("ok   pool: {line}");
    }
}
