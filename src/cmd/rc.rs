//! `msync rc <method> [json]`: the low-level door to librclone's RC API,
//! like `rclone rc` but in-process.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::Signal;
use serde_json::Value;

use super::{limit_bandwidth, load_rclone};
use crate::cli::{GlobalArgs, RcArgs};
use crate::error::{ExitCode, coded};
use crate::progress::ProgressView;
use crate::rclone::{Call, Job, Progress, Rclone, RcloneError, signals};

/// How often the progress display is refreshed.
const REFRESH: Duration = Duration::from_millis(200);
/// How long a cancelled job may take to wind down before msync gives up
/// waiting for it.
const CANCEL_GRACE: Duration = Duration::from_secs(5);

pub fn run(global: &GlobalArgs, args: &RcArgs) -> anyhow::Result<ExitCode> {
    let params: Value = serde_json::from_str(&args.params).map_err(|err| {
        coded(
            ExitCode::Usage,
            format!("the parameters are not valid JSON ({err}); give an object such as '{{\"fs\":\"/tmp\",\"remote\":\"\"}}'"),
        )
    })?;
    if !params.is_object() {
        return Err(coded(
            ExitCode::Usage,
            "the parameters must be a JSON object, such as '{\"fs\":\"/tmp\",\"remote\":\"\"}'",
        ));
    }
    let signals = signals::install().context("installing signal handlers")?;
    let rclone = load_rclone(global)?;
    limit_bandwidth(rclone, args.bwlimit.as_deref())?;
    let call = Call::new(args.method.clone(), params);
    if args.run_async {
        run_job(rclone, &call, &signals)
    } else {
        run_call(rclone, call, &signals)
    }
}

/// Runs the call on a worker thread so that a signal is still heard. rclone
/// runs even a plain call as a job; on a signal every unfinished job of this
/// process (there is only this one) is stopped.
fn run_call(rclone: Rclone, call: Call, signals: &Receiver<Signal>) -> anyhow::Result<ExitCode> {
    let worker = std::thread::Builder::new()
        .name("msync-rc".into())
        .spawn(move || call.run(rclone))
        .context("starting the rc worker thread")?;
    loop {
        if let Ok(signal) = signals.recv_timeout(Duration::from_millis(20)) {
            for job in Job::unfinished(rclone)? {
                job.cancel()?;
                job.wait(Some(CANCEL_GRACE))?;
            }
            eprintln!("msync: {signal} received: the call was cancelled");
            return Ok(ExitCode::Interrupted);
        }
        if worker.is_finished() {
            let answer = worker
                .join()
                .map_err(|_| anyhow::anyhow!("the rc worker thread panicked"))??;
            print_json(&answer);
            return Ok(ExitCode::Ok);
        }
    }
}

fn run_job(rclone: Rclone, call: &Call, signals: &Receiver<Signal>) -> anyhow::Result<ExitCode> {
    let group = format!("msync/rc/{}", std::process::id());
    let job = call.start(rclone, &group)?;
    let mut view = ProgressView::new(vec![call.method().to_owned()]);
    loop {
        match signals.recv_timeout(REFRESH) {
            Ok(signal) => return cancel(&job, &mut view, signal),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                anyhow::bail!("the signal thread stopped unexpectedly")
            }
        }
        let status = job.status()?;
        let progress = job.progress()?;
        if !status.finished {
            view.update(0, &progress);
            continue;
        }
        let _ = job.forget_stats();
        if !status.success {
            view.finish(0, &progress, "failed");
            return Err(RcloneError {
                method: call.method().to_owned(),
                status: 500,
                message: status.error,
            }
            .into());
        }
        view.finish(0, &progress, "done");
        print_json(&status.output.unwrap_or(Value::Object(Default::default())));
        return Ok(ExitCode::Ok);
    }
}

fn cancel(job: &Job, view: &mut ProgressView, signal: Signal) -> anyhow::Result<ExitCode> {
    job.cancel()
        .with_context(|| format!("cancelling rclone job {}", job.id()))?;
    let finished = job.wait(Some(CANCEL_GRACE))?.is_some();
    let progress = job.progress().unwrap_or_else(|_| Progress::default());
    let _ = job.forget_stats();
    view.finish(0, &progress, "cancelled");
    if finished {
        eprintln!(
            "msync: {signal} received: rclone job {} cancelled",
            job.id()
        );
    } else {
        eprintln!(
            "msync: {signal} received: rclone job {} did not stop within {}s",
            job.id(),
            CANCEL_GRACE.as_secs()
        );
    }
    Ok(ExitCode::Interrupted)
}

fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
    );
}
