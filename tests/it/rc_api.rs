//! The safe RC API against the real librclone, in this test process.

use std::time::{Duration, Instant};

use msync::rclone::{Call, ListOptions, Location};
use serde_json::json;

use crate::util::{Sandbox, rclone, run};

#[test]
fn version_round_trip_matches_the_rclone_cli() {
    let rclone = rclone();
    let version = rclone.version_info().unwrap();
    assert_eq!(version.decomposed[..2], [1, 60], "{version:?}");
    assert_eq!(rclone.version(), version.version);
    // Debian's CLI is built from the same source package.
    let sandbox = Sandbox::new();
    let cli = run(sandbox.rclone_cli(["version"]));
    let first_line = String::from_utf8_lossy(&cli.stdout)
        .lines()
        .next()
        .unwrap()
        .to_owned();
    let cli_version = first_line.trim_start_matches("rclone ").trim();
    assert_eq!(
        version.version.trim_end_matches("-DEV"),
        cli_version.trim_end_matches("-DEV")
    );
}

/// msync retries paths itself, so the library it loads retries a request
/// only a few times: the global options are registered and set at load.
#[test]
fn the_library_runs_with_msyncs_retry_policy() {
    let options = rclone().rpc("options/get", &json!({})).unwrap();
    let main = &options["main"];
    assert_eq!(main["LowLevelRetries"], 3, "{main:#}");
    assert_eq!(main["ConnectTimeout"], 15_000_000_000u64, "{main:#}");
    // A stalled connection is dropped after a minute, not rclone's five.
    assert_eq!(main["Timeout"], 60_000_000_000u64, "{main:#}");
    // Everything else keeps rclone's defaults.
    assert_eq!(main["Transfers"], 4, "{main:#}");
}

#[test]
fn unknown_method_is_a_404_error_value() {
    let err = rclone().rpc("no/such-method", &json!({})).unwrap_err();
    assert_eq!(err.status, 404);
    assert_eq!(err.method, "no/such-method");
    assert!(err.message.contains("no/such-method"), "{err}");
}

#[test]
fn bad_input_is_an_error_not_a_crash() {
    let rclone = rclone();
    // A parameter of the wrong type.
    let err = rclone
        .rpc("operations/list", &json!({"fs": 5, "remote": ""}))
        .unwrap_err();
    assert_eq!(err.status, 400, "{err}");
    // Input that is not a JSON object at all.
    let err = rclone
        .rpc("operations/list", &json!([1, 2, 3]))
        .unwrap_err();
    assert_eq!(err.status, 400, "{err}");
    // A missing parameter.
    let err = rclone.rpc("operations/list", &json!({})).unwrap_err();
    assert_eq!(err.status, 400, "{err}");
    assert!(err.message.contains("Didn't find key"), "{err}");
    // The library still answers afterwards.
    rclone.version_info().unwrap();
}

#[test]
fn core_quit_is_refused() {
    let err = rclone().rpc("core/quit", &json!({})).unwrap_err();
    assert_eq!(err.status, 403);
    // Still alive to say so.
    rclone().version_info().unwrap();
}

#[test]
fn a_failing_operation_is_a_500_with_rclones_message() {
    let sandbox = Sandbox::new();
    sandbox.make_file("src/a.txt", 10);
    // The destination directory's parent is a regular file.
    sandbox.make_file("blocker", 1);
    let src = Location::new(sandbox.path().join("src").to_str().unwrap(), "a.txt");
    let dst = Location::new(
        sandbox.path().join("blocker/sub").to_str().unwrap(),
        "a.txt",
    );
    let err = Call::copyfile(&src, &dst).run(rclone()).unwrap_err();
    assert_eq!(err.status, 500, "{err}");
    assert_eq!(err.method, "operations/copyfile");
    assert!(err.message.contains("not a directory"), "{err}");
}

#[test]
fn typed_helpers_do_what_the_rclone_cli_sees() {
    let sandbox = Sandbox::new();
    let rclone = rclone();
    let src = sandbox.path().join("src");
    let dst = sandbox.path().join("dst");
    let src_fs = src.to_str().unwrap();
    let dst_fs = dst.to_str().unwrap();
    sandbox.make_file("src/one.txt", 1000);
    sandbox.make_file("src/dir with space/two ü.txt", 2000);

    Call::mkdir(&Location::new(dst_fs, "made/here"))
        .run(rclone)
        .unwrap();
    assert!(dst.join("made/here").is_dir());

    Call::copyfile(
        &Location::new(src_fs, "one.txt"),
        &Location::new(dst_fs, "copied.txt"),
    )
    .run(rclone)
    .unwrap();
    let stat = rclone
        .stat(&Location::new(dst_fs, "copied.txt"))
        .unwrap()
        .unwrap();
    assert_eq!((stat.size, stat.is_dir), (1000, false));
    assert_eq!(rclone.stat(&Location::new(dst_fs, "absent")).unwrap(), None);

    Call::movefile(
        &Location::new(dst_fs, "copied.txt"),
        &Location::new(dst_fs, "moved.txt"),
    )
    .run(rclone)
    .unwrap();
    assert_eq!(
        sandbox.remote_files(dst_fs),
        [("moved.txt".to_owned(), 1000)]
    );

    Call::deletefile(&Location::new(dst_fs, "moved.txt"))
        .run(rclone)
        .unwrap();
    assert!(sandbox.remote_files(dst_fs).is_empty());

    let job = Call::sync(src_fs, dst_fs)
        .start(rclone, "test/helpers-sync")
        .unwrap();
    let status = job.wait(Some(Duration::from_secs(30))).unwrap().unwrap();
    assert!(status.success, "{status:?}");
    assert_eq!(
        sandbox.remote_files(dst_fs),
        [
            ("dir with space/two ü.txt".to_owned(), 2000),
            ("one.txt".to_owned(), 1000)
        ]
    );
    run(sandbox.rclone_cli(["check", src_fs, dst_fs]));

    let listed = rclone
        .list(
            &Location::new(dst_fs, ""),
            &ListOptions {
                recurse: true,
                files_only: true,
                ..Default::default()
            },
        )
        .unwrap();
    let mut names: Vec<_> = listed.iter().map(|e| e.path.as_str()).collect();
    names.sort();
    assert_eq!(names, ["dir with space/two ü.txt", "one.txt"]);

    let moved = sandbox.path().join("moved");
    let job = Call::move_dir(dst_fs, moved.to_str().unwrap())
        .start(rclone, "test/helpers-move")
        .unwrap();
    assert!(
        job.wait(Some(Duration::from_secs(30)))
            .unwrap()
            .unwrap()
            .success
    );
    // The emptied source directory itself is removed too.
    assert!(!dst.exists() || sandbox.remote_files(dst_fs).is_empty());
    assert_eq!(sandbox.remote_files(moved.to_str().unwrap()).len(), 2);

    let about = rclone.about(src_fs).unwrap();
    assert!(
        about.total.unwrap() > 0 && about.free.unwrap() > 0,
        "{about:?}"
    );
}

#[test]
fn placefile_uploads_then_moves_into_place_keeping_the_old_version() {
    let sandbox = Sandbox::new();
    let rclone = rclone();
    assert!(rclone.has_method("msync/placefile"));
    assert!(!rclone.has_method("msync/no-such-call"));
    let src = sandbox.path().join("src");
    let dst = sandbox.path().join("dst");
    let (src_fs, dst_fs) = (src.to_str().unwrap(), dst.to_str().unwrap());
    sandbox.make_file("src/a.txt", 1000);
    sandbox.make_file("src/b.txt", 2000);
    let source = |name: &str| Location::new(src_fs, name);

    // New: uploaded under the temporary name, then moved; nothing to keep.
    Call::placefile(
        dst_fs,
        "tmp/1",
        "d/a.txt",
        "old/a.txt",
        Some(&source("a.txt")),
    )
    .run(rclone)
    .unwrap();
    assert_eq!(sandbox.remote_files(dst_fs), [("d/a.txt".to_owned(), 1000)]);
    // Replaced: the old version goes to the backup name first.
    Call::placefile(
        dst_fs,
        "tmp/2",
        "d/a.txt",
        "old/a.txt",
        Some(&source("b.txt")),
    )
    .run(rclone)
    .unwrap();
    assert_eq!(
        sandbox.remote_files(dst_fs),
        [("d/a.txt".to_owned(), 2000), ("old/a.txt".to_owned(), 1000)]
    );
    // Without a source it is a move (a rename), still keeping what it
    // replaces.
    std::fs::copy(src.join("a.txt"), dst.join("d/c.txt")).unwrap();
    Call::placefile(dst_fs, "d/c.txt", "d/a.txt", "old/a2.txt", None)
        .run(rclone)
        .unwrap();
    assert_eq!(
        sandbox.remote_files(dst_fs),
        [
            ("d/a.txt".to_owned(), 1000),
            ("old/a.txt".to_owned(), 1000),
            ("old/a2.txt".to_owned(), 2000)
        ]
    );
    // Nothing to move: rclone's not-found error, and nothing changes.
    let err = Call::placefile(dst_fs, "d/none", "d/a.txt", "old/a3.txt", None)
        .run(rclone)
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");
    // A missing parameter is refused before anything is done.
    let err = Call::new(
        "msync/placefile",
        json!({"fs": dst_fs, "from": "d/a.txt", "to": "x"}),
    )
    .run(rclone)
    .unwrap_err();
    assert!(err.message.contains("backup"), "{err}");
    assert_eq!(sandbox.remote_files(dst_fs).len(), 3);
}

#[test]
fn fsinfo_reports_what_debians_rclone_reports_of_a_backend() {
    let sandbox = Sandbox::new();
    let rclone = rclone();
    let dir = sandbox.path().to_str().unwrap().to_owned();
    for fs in [dir.clone(), format!(":local,case_insensitive=true:{dir}")] {
        let info = rclone.fsinfo(&fs).unwrap();
        let cli: serde_json::Value =
            serde_json::from_slice(&run(sandbox.rclone_cli(["backend", "features", &fs])).stdout)
                .unwrap();
        assert_eq!(
            info.precision_ns,
            cli["Precision"].as_i64().unwrap(),
            "{fs}"
        );
        let hashes: Vec<&str> = cli["Hashes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h.as_str().unwrap())
            .collect();
        assert_eq!(info.hashes, hashes, "{fs}");
        for (name, value) in cli["Features"].as_object().unwrap() {
            assert_eq!(info.has(name), value.as_bool().unwrap(), "{fs}: {name}");
        }
    }
    let plain = rclone.fsinfo(&dir).unwrap();
    let summary = plain.summary();
    assert!(
        summary.contains("server-side move yes") && summary.contains("case-sensitive"),
        "{summary}"
    );
    let folded = rclone
        .fsinfo(&format!(":local,case_insensitive=true:{dir}"))
        .unwrap();
    assert!(
        folded.summary().contains("case-insensitive"),
        "{}",
        folded.summary()
    );
}

#[test]
fn an_unknown_remote_is_a_clear_error() {
    let err = rclone().remote_type("nope").unwrap_err();
    assert_eq!(err.method, "config/get");
    assert!(err.message.contains("nope"), "{err}");
}

#[test]
fn eight_threads_call_concurrently() {
    let sandbox = Sandbox::new();
    for i in 0..10 {
        sandbox.make_file(&format!("ten/f{i}"), i * 10);
    }
    let fs = sandbox.path().join("ten").to_str().unwrap().to_owned();
    let rclone = rclone();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let fs = fs.clone();
            std::thread::spawn(move || {
                for i in 0..1000 {
                    if (i + t) % 2 == 0 {
                        let list = rclone
                            .list(&Location::new(&fs, ""), &ListOptions::default())
                            .unwrap();
                        assert_eq!(list.len(), 10);
                    } else {
                        assert_eq!(rclone.version_info().unwrap().decomposed[0], 1);
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("a calling thread panicked");
    }
}

#[test]
fn async_copy_shows_rising_progress_and_cancels() {
    let sandbox = Sandbox::new();
    let rclone = rclone();
    sandbox.make_file("src/big.bin", 200 * 1024 * 1024);
    let src_fs = sandbox.path().join("src");
    let dst_fs = sandbox.path().join("dst");
    // The limit is process-wide: only this test transfers enough to feel it.
    rclone.set_bwlimit("20M").unwrap();
    let job = Call::copy(src_fs.to_str().unwrap(), dst_fs.to_str().unwrap())
        .start(rclone, "test/cancel")
        .unwrap();

    let mut readings = Vec::new();
    let started = Instant::now();
    while readings.len() < 4 && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(400));
        let progress = job.progress().unwrap();
        if progress.bytes > 0 {
            readings.push(progress);
        }
    }
    assert_eq!(readings.len(), 4, "no progress within 20 s");
    assert!(
        readings.windows(2).all(|w| w[1].bytes > w[0].bytes),
        "bytes did not rise: {:?}",
        readings.iter().map(|p| p.bytes).collect::<Vec<_>>()
    );
    let last = readings.last().unwrap();
    assert_eq!(last.total_bytes, 200 * 1024 * 1024);
    assert!(
        last.bytes < last.total_bytes,
        "finished before it could be cancelled"
    );
    assert_eq!(last.transferring.len(), 1);
    assert_eq!(last.transferring[0].name, "big.bin");
    assert!(!job.status().unwrap().finished);

    // Cancelled, it ends with rclone's "context canceled", not a whole
    // file; how fast is for a benchmark, not for a loaded machine.
    job.cancel().unwrap();
    let status = job
        .wait(Some(Duration::from_secs(10)))
        .unwrap()
        .expect("job still running 10 s after job/stop");
    rclone.set_bwlimit("off").unwrap();
    assert!(!status.success);
    assert!(status.error.contains("context canceled"), "{status:?}");
    job.forget_stats().unwrap();
    // Nothing under the final name: neither on disk nor as rclone sees it.
    assert!(!dst_fs.join("big.bin").exists());
    if dst_fs.exists() {
        assert!(sandbox.remote_files(dst_fs.to_str().unwrap()).is_empty());
    }
}

#[test]
fn the_go_heap_takes_a_soft_cap() {
    let rclone = rclone();
    // Go's default is no limit (the largest int64); the call hands back
    // the limit before it, so a second call proves the first took.
    rclone.set_memory_limit(256 << 20).unwrap();
    let answer = rclone
        .rpc("msync/memorylimit", &json!({"bytes": 512_i64 << 20}))
        .unwrap();
    assert_eq!(answer["previous"], json!(256_i64 << 20), "{answer}");
    let refused = rclone
        .rpc("msync/memorylimit", &json!({"bytes": 0}))
        .unwrap_err();
    assert!(refused.to_string().contains("more than 0"), "{refused}");
    // Left as good as unlimited for the other tests in this process.
    rclone.set_memory_limit(u64::MAX).unwrap();
}
