//! The status in Prometheus's text exposition format (version 0.0.4):
//! `# HELP` and `# TYPE` before each metric, `msync_*` names, one sample a
//! branch labelled `branch="<name>"`. A value msync does not know (a cloud
//! that tells no size) is left out, never written as 0.

use std::fmt::Write;
use std::time::SystemTime;

use crate::service::ServiceStatus;
use crate::sync::{BranchState, BranchStatus, PathClass};

/// The text for a service that answers, as of `now`.
pub fn render(status: &ServiceStatus, now: SystemTime) -> String {
    let mut text = Metrics::default();
    text.single(
        "msync_up",
        "gauge",
        "1 when the msync service answers.",
        1.0,
    );
    text.single(
        "msync_inotify_watches",
        "gauge",
        "inotify watches the service holds on the branches.",
        status.inotify_watches as f64,
    );
    let branches = &status.branches;
    text.family(
        "msync_branch_state",
        "gauge",
        "1 for the state the branch is in (idle, syncing, retrying, error).",
        branches.iter().flat_map(|b| {
            [
                (BranchState::Idle, "idle"),
                (BranchState::Syncing, "syncing"),
                (BranchState::Retrying, "retrying"),
                (BranchState::Error, "error"),
            ]
            .map(|(state, name)| {
                (
                    labels(b, &[("state", name)]),
                    f64::from(u8::from(b.state == state)),
                )
            })
        }),
    );
    per_branch(
        &mut text,
        branches,
        "msync_branch_queued_changes",
        "gauge",
        "Changes waiting to be sent or being sent.",
        |b| Some(b.queued as f64),
    );
    text.family(
        "msync_branch_failing_paths",
        "gauge",
        "Paths not in step with the cloud: retrying, failed (until they change) or skipped by design.",
        branches.iter().flat_map(|b| {
            [
                (PathClass::Retrying, "retrying"),
                (PathClass::Failed, "failed"),
                (PathClass::Skipped, "skipped"),
            ]
            .map(|(class, name)| {
                let count = b.failing.iter().filter(|f| f.class == class).count();
                (labels(b, &[("class", name)]), count as f64)
            })
        }),
    );
    per_branch(
        &mut text,
        branches,
        "msync_branch_paused",
        "gauge",
        "1 while the whole remote is paused (unreachable, full, rate-limited).",
        |b| Some(f64::from(u8::from(b.paused.is_some()))),
    );
    per_branch(
        &mut text,
        branches,
        "msync_branch_error",
        "gauge",
        "1 while the branch has an error to report (status shows it).",
        |b| Some(f64::from(u8::from(b.last_error.is_some()))),
    );
    per_branch(
        &mut text,
        branches,
        "msync_branch_files_sent_total",
        "counter",
        "Files sent to the cloud since the service started.",
        |b| Some(b.files_sent as f64),
    );
    per_branch(
        &mut text,
        branches,
        "msync_branch_bytes_sent_total",
        "counter",
        "Bytes sent to the cloud since the service started.",
        |b| Some(b.bytes_sent as f64),
    );
    per_branch(
        &mut text,
        branches,
        "msync_branch_seconds_since_last_sync",
        "gauge",
        "Seconds since the cloud last matched a change of the branch.",
        |b| seconds_since(b.last_sync.as_deref()?, now),
    );
    per_branch(
        &mut text,
        branches,
        "msync_cloud_used_bytes",
        "gauge",
        "Bytes used on the cloud account, as its backend tells.",
        |b| b.space.used.map(|v| v as f64),
    );
    per_branch(
        &mut text,
        branches,
        "msync_cloud_free_bytes",
        "gauge",
        "Bytes free on the cloud (less what was sent since it was asked).",
        |b| b.space.free.map(|v| v as f64),
    );
    per_branch(
        &mut text,
        branches,
        "msync_cloud_total_bytes",
        "gauge",
        "The cloud's size, or the quota msync keeps to if smaller.",
        |b| b.space.total.map(|v| v as f64),
    );
    if let Some(pool) = &status.pool {
        text.single(
            "msync_pool_free_bytes",
            "gauge",
            "Free bytes over the clouds whose size is known.",
            pool.free as f64,
        );
        text.single(
            "msync_pool_total_bytes",
            "gauge",
            "Size of the clouds whose size is known.",
            pool.total as f64,
        );
    }
    text.0
}

/// The text when no service answers: only `msync_up 0`, so a dashboard
/// sees the service down rather than metrics gone stale.
pub fn render_down() -> String {
    let mut text = Metrics::default();
    text.single(
        "msync_up",
        "gauge",
        "1 when the msync service answers.",
        0.0,
    );
    text.0
}

#[derive(Default)]
struct Metrics(String);

impl Metrics {
    fn single(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.family(name, kind, help, [(String::new(), value)]);
    }

    /// A metric and its samples, each `(labels, value)`; nothing at all
    /// when it has no sample.
    fn family(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        samples: impl IntoIterator<Item = (String, f64)>,
    ) {
        let mut samples = samples.into_iter().peekable();
        if samples.peek().is_none() {
            return;
        }
        let out = &mut self.0;
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    }
}

fn per_branch(
    text: &mut Metrics,
    branches: &[BranchStatus],
    name: &str,
    kind: &str,
    help: &str,
    value: impl Fn(&BranchStatus) -> Option<f64>,
) {
    let samples = branches
        .iter()
        .filter_map(|b| Some((labels(b, &[]), value(b)?)));
    text.family(name, kind, help, samples);
}

/// `{branch="<name>",…}`, values escaped as the format asks.
fn labels(branch: &BranchStatus, more: &[(&str, &str)]) -> String {
    let pairs: Vec<String> = std::iter::once(("branch", branch.name.as_str()))
        .chain(more.iter().copied())
        .map(|(key, value)| format!("{key}=\"{}\"", escape(value)))
        .collect();
    format!("{{{}}}", pairs.join(","))
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn seconds_since(rfc3339: &str, now: SystemTime) -> Option<f64> {
    let then = humantime::parse_rfc3339_weak(rfc3339).ok()?;
    Some(
        now.duration_since(then)
            .map_or(0.0, |d| d.as_secs_f64().floor()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped_and_unknowns_left_out() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        let mut text = Metrics::default();
        text.family("m", "gauge", "h", std::iter::empty());
        assert_eq!(text.0, "");
        let down = render_down();
        assert!(
            down.contains("# TYPE msync_up gauge\nmsync_up 0\n"),
            "{down}"
        );
    }
}
