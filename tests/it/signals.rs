//! SIGINT, SIGTERM and SIGHUP reach msync's shutdown path: the job is
//! cancelled with job/stop, no partial file is left, and msync exits 130,
//! not with Go's 143. msync's own librclone never lets Go take them, even
//! when the cache backend registers rclone's atexit handler; a library that
//! does (upstream librclone, emulated with LIBRCLONE_ATEXIT_SIGNALS=keep)
//! has them taken back.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::util::Sandbox;

const INTERRUPTED: i32 = 130;

struct Outcome {
    code: Option<i32>,
    stderr: String,
}

/// Starts a bandwidth-limited 200 MB copy with `msync rc [--async]`, waits
/// until bytes are moving, sends `signal`, and collects the outcome.
fn interrupt_copy(sandbox: &Sandbox, src_fs: &str, run_async: bool, signal: Signal) -> Outcome {
    interrupt_copy_with(sandbox, src_fs, run_async, signal, false)
}

/// [`interrupt_copy`], with the library keeping rclone's atexit signal
/// handler when `upstream_signals` is set, as upstream librclone does.
fn interrupt_copy_with(
    sandbox: &Sandbox,
    src_fs: &str,
    run_async: bool,
    signal: Signal,
    upstream_signals: bool,
) -> Outcome {
    let dst = sandbox.path().join("dst");
    let params = serde_json::json!({"srcFs": src_fs, "dstFs": dst}).to_string();
    let mut args = vec!["rc", "--bwlimit", "10M", "sync/copy", params.as_str()];
    if run_async {
        args.insert(1, "--async");
    }
    let mut command = sandbox.msync(&args);
    if upstream_signals {
        command.env("LIBRCLONE_ATEXIT_SIGNALS", "keep");
    }
    command.stderr(Stdio::piped()).stdout(Stdio::null());
    let mut child = command.spawn().expect("starting msync");
    let pid = Pid::from_raw(child.id() as i32);

    let (lines_tx, lines_rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });

    // Wait until the copy is moving: the cache remote exists by then, so Go
    // has taken the signals and msync has taken them back.
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let moving =
        |line: &str| line.starts_with("sync/copy: ") && !line.starts_with("sync/copy: 0 B");
    // A plain call shows no progress lines: there, bytes in the copy tell.
    let copying = || {
        !run_async
            && dst
                .join("big.bin")
                .metadata()
                .is_ok_and(|meta| meta.len() > 0)
    };
    loop {
        assert!(
            Instant::now() < deadline,
            "no progress within 30 s; stderr so far:\n{}",
            seen.join("\n")
        );
        match lines_rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                let done = moving(&line);
                seen.push(line);
                if done {
                    break;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                panic!("msync ended before the copy moved:\n{}", seen.join("\n"))
            }
        }
        if copying() {
            break;
        }
    }
    kill(pid, signal).expect("sending the signal");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "msync did not exit 10 s after {signal}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    reader.join().unwrap();
    seen.extend(lines_rx.try_iter());
    Outcome {
        code: status.code(),
        stderr: seen.join("\n"),
    }
}

fn source(sandbox: &Sandbox) -> String {
    sandbox.make_file("src/big.bin", 200 * 1024 * 1024);
    sandbox.path().join("src").to_str().unwrap().to_owned()
}

/// msync exited with its own code for a signal, said so, and left no
/// partial file.
fn assert_interrupted(sandbox: &Sandbox, outcome: &Outcome, says: &str) {
    assert_eq!(outcome.code, Some(INTERRUPTED), "{}", outcome.stderr);
    assert!(outcome.stderr.contains(says), "{}", outcome.stderr);
    assert_no_partial_file(sandbox);
}

fn assert_no_partial_file(sandbox: &Sandbox) {
    let dst = sandbox.path().join("dst");
    assert!(
        !dst.join("big.bin").exists(),
        "a partial file was left under its final name"
    );
    if dst.exists() {
        assert!(sandbox.remote_files(dst.to_str().unwrap()).is_empty());
    }
}

#[test]
fn sigterm_after_the_cache_backend_took_it_reaches_msync() {
    let sandbox = Sandbox::new();
    let src = source(&sandbox);
    let outcome = interrupt_copy_with(
        &sandbox,
        &format!(":cache,remote={src}:"),
        true,
        Signal::SIGTERM,
        true,
    );
    // The take-back message proves Go did install its handler.
    assert!(
        outcome.stderr.contains("took SIGTERM"),
        "{}",
        outcome.stderr
    );
    assert_interrupted(&sandbox, &outcome, "SIGTERM received: rclone job");
    assert!(outcome.stderr.contains("cancelled"), "{}", outcome.stderr);
}

#[test]
fn msyncs_library_never_lets_go_take_the_signals() {
    let sandbox = Sandbox::new();
    let src = source(&sandbox);
    let outcome = interrupt_copy(
        &sandbox,
        &format!(":cache,remote={src}:"),
        true,
        Signal::SIGTERM,
    );
    // The cache backend still takes SIGHUP for itself (it clears its
    // cache on it); rclone's atexit handler, which takes SIGINT and
    // SIGTERM, never runs.
    for taken in ["took SIGINT", "took SIGTERM"] {
        assert!(
            !outcome.stderr.contains(taken),
            "Go {taken} although the shim ignores it: {}",
            outcome.stderr
        );
    }
    assert_interrupted(&sandbox, &outcome, "SIGTERM received: rclone job");
}

#[test]
fn sigint_after_the_cache_backend_took_it_reaches_msync() {
    let sandbox = Sandbox::new();
    let src = source(&sandbox);
    let outcome = interrupt_copy(
        &sandbox,
        &format!(":cache,remote={src}:"),
        true,
        Signal::SIGINT,
    );
    assert_interrupted(&sandbox, &outcome, "SIGINT received");
}

#[test]
fn sighup_cancels_a_local_copy() {
    let sandbox = Sandbox::new();
    let src = source(&sandbox);
    let outcome = interrupt_copy(&sandbox, &src, true, Signal::SIGHUP);
    assert_interrupted(&sandbox, &outcome, "SIGHUP received: rclone job");
}

#[test]
fn a_plain_call_is_cancelled_too() {
    let sandbox = Sandbox::new();
    let src = source(&sandbox);
    let outcome = interrupt_copy(
        &sandbox,
        &format!(":cache,remote={src}:"),
        false,
        Signal::SIGTERM,
    );
    assert_interrupted(&sandbox, &outcome, "SIGTERM received");
}
