//! Shows the progress of rclone jobs to a person: indicatif bars on a
//! terminal, plain timestamped lines otherwise (logs, scripts, CI). The
//! numbers are rclone's own (`core/stats` of each job's group), never
//! re-estimated here.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, HumanDuration, MultiProgress, ProgressBar, ProgressStyle};

use crate::rclone::Progress;

/// How often plain mode prints a line per task.
const PLAIN_INTERVAL: Duration = Duration::from_secs(1);

/// Progress of one or more named tasks (e.g. one per branch).
pub struct ProgressView {
    labels: Vec<String>,
    mode: Mode,
}

enum Mode {
    Bars {
        // Kept so the bars stay drawn together until the view is dropped.
        _multi: MultiProgress,
        bars: Vec<ProgressBar>,
    },
    Plain {
        last_print: Vec<Option<Instant>>,
    },
}

impl ProgressView {
    /// Bars when stderr is a terminal, lines otherwise.
    pub fn new(labels: Vec<String>) -> ProgressView {
        if std::io::stderr().is_terminal() {
            Self::bars(labels)
        } else {
            Self::plain(labels)
        }
    }

    fn bars(labels: Vec<String>) -> ProgressView {
        let multi = MultiProgress::new();
        let style = ProgressStyle::with_template(
            "{prefix:<16} [{bar:30}] {bytes:>10}/{total_bytes:<10} {msg}",
        )
        .expect("the template is valid")
        .progress_chars("=> ");
        let bars = labels
            .iter()
            .map(|label| {
                let bar = multi.add(ProgressBar::new(0));
                bar.set_style(style.clone());
                bar.set_prefix(label.clone());
                bar
            })
            .collect();
        ProgressView {
            labels,
            mode: Mode::Bars {
                _multi: multi,
                bars,
            },
        }
    }

    fn plain(labels: Vec<String>) -> ProgressView {
        let last_print = vec![None; labels.len()];
        ProgressView {
            labels,
            mode: Mode::Plain { last_print },
        }
    }

    /// Shows the latest numbers of task `index`.
    pub fn update(&mut self, index: usize, progress: &Progress) {
        match &mut self.mode {
            Mode::Bars { bars, .. } => {
                let bar = &bars[index];
                bar.set_length(progress.total_bytes.max(progress.bytes));
                bar.set_position(progress.bytes);
                bar.set_message(rate_and_eta(progress));
            }
            Mode::Plain { last_print } => {
                let due = last_print[index].is_none_or(|t| t.elapsed() >= PLAIN_INTERVAL);
                if due {
                    last_print[index] = Some(Instant::now());
                    eprintln!("{}: {}", self.labels[index], summary(progress));
                }
            }
        }
    }

    /// Marks task `index` done with a closing word ("done", "cancelled", …).
    /// The speed shown is the average over the whole task.
    pub fn finish(&mut self, index: usize, progress: &Progress, word: &str) {
        let progress = &as_finished(progress);
        match &mut self.mode {
            Mode::Bars { bars, .. } => {
                let bar = &bars[index];
                bar.set_length(progress.total_bytes.max(progress.bytes));
                bar.set_position(progress.bytes);
                bar.finish_with_message(word.to_owned());
            }
            Mode::Plain { .. } => {
                eprintln!("{}: {word}: {}", self.labels[index], summary(progress));
            }
        }
    }
}

fn rate_and_eta(progress: &Progress) -> String {
    let mut text = format!(
        "{}/s, {}/{} files",
        HumanBytes(progress.speed as u64),
        progress.transfers,
        progress.total_transfers
    );
    if let Some(eta) = progress.eta {
        text.push_str(&format!(
            ", ETA {}",
            HumanDuration(Duration::from_secs_f64(eta.max(0.0)))
        ));
    }
    if progress.errors > 0 {
        text.push_str(&format!(", {} errors", progress.errors));
    }
    text
}

/// A finished task's numbers: the average speed over its whole run (rclone
/// reports 0 once nothing moves any more), and nothing left to wait for.
fn as_finished(progress: &Progress) -> Progress {
    let mut finished = progress.clone();
    if finished.elapsed_time > 0.0 {
        finished.speed = finished.bytes as f64 / finished.elapsed_time;
    }
    finished.eta = None;
    finished
}

/// One line for logs and closing reports on a finished task: bytes, total,
/// average speed, files, errors.
pub fn summary_of_finished(progress: &Progress) -> String {
    summary(&as_finished(progress))
}

/// One line for logs: bytes, total, speed, ETA, files, errors.
pub fn summary(progress: &Progress) -> String {
    format!(
        "{} / {}, {}",
        HumanBytes(progress.bytes),
        HumanBytes(progress.total_bytes),
        rate_and_eta(progress)
    )
}
