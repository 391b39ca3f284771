//! Pools on real servers of every kind msync's users pool (WebDAV, FTP,
//! S3, SFTP), alone and together, the network between them made to fail:
//! each converges, every cloud checked by the server's own storage or
//! Debian's rclone CLI, and a fresh install imports the pool identically.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::faulty::FaultyProxy;
use crate::ftp::FtpServer;
use crate::pool::{Pool, write_file};
use crate::s3::S3Server;
use crate::sshd::SftpServer;
use crate::util::{Sandbox, run, run_expecting, stderr, stdout};
use crate::webdav::WebDavServer;

const SETTLE: Duration = Duration::from_secs(120);

/// Every file and directory below `dir`, relative, with each file's bytes
/// (`None` for a directory), sorted; `.msync` and the branch marker aside.
fn tree(dir: &Path) -> Vec<(PathBuf, Option<Vec<u8>>)> {
    fn walk(base: &Path, dir: &Path, found: &mut Vec<(PathBuf, Option<Vec<u8>>)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let relative = path.strip_prefix(base).unwrap().to_owned();
            let name = relative.to_string_lossy();
            if name == ".msync" || name == ".msync-branch" {
                continue;
            }
            if path.is_dir() {
                found.push((relative, None));
                walk(base, &path, found);
            } else {
                found.push((relative, Some(std::fs::read(&path).unwrap())));
            }
        }
    }
    let mut found = Vec::new();
    walk(dir, dir, &mut found);
    found.sort();
    found
}

/// One branch on `section`'s remote `name`, whose server stores it below
/// `stored`: files in nested directories, an empty directory, a directory
/// rename, a file rename, a delete, and an overwrite of the same size. It
/// converges, the server's disk holds the branch, and a fresh install
/// imports it whole.
fn a_lone_branch_converges_and_imports_identically(section: &str, name: &str, stored: &Path) {
    let mut pool = Pool::install_remotes(Sandbox::new(), section, Some(name));
    pool.import();
    pool.start();
    for i in 0..40 {
        write_file(
            &pool.mount.join(format!("docs/d{}/f{i}.txt", i % 4)),
            500 + i,
            i as u8,
        );
    }
    std::fs::create_dir_all(pool.mount.join("empty/inner")).unwrap();
    pool.settle(SETTLE);
    std::fs::rename(pool.mount.join("docs/d1"), pool.mount.join("docs/moved")).unwrap();
    std::fs::rename(
        pool.mount.join("docs/d0/f0.txt"),
        pool.mount.join("docs/d0/renamed.txt"),
    )
    .unwrap();
    std::fs::remove_file(pool.mount.join("docs/d2/f2.txt")).unwrap();
    // Same size, new bytes: with no times and no hashes kept, only the
    // change itself tells.
    write_file(&pool.mount.join("docs/d3/f3.txt"), 503, 99);
    pool.settle(SETTLE);
    pool.assert_in_sync();

    // What the server stores on its disk is the branch.
    let branch = pool.branch_dir(&pool.branches[0].0);
    assert_eq!(tree(stored), tree(&branch));
    let listing = stdout(&run(pool.sandbox.rclone_cli([
        "lsf",
        "-R",
        &format!("{name}:msync"),
    ])));
    assert!(listing.contains("docs/moved/f1.txt"), "{listing}");
    pool.stop();

    // A fresh install restores the pool, the empty directory included.
    let second = pool.sandbox.path().join("install2");
    run(pool.msync(["install", second.to_str().unwrap()]));
    run(pool.msync(["import", second.to_str().unwrap()]));
    let restored = second.join("branches").join(name);
    assert_eq!(tree(&restored), tree(&branch));
    assert!(restored.join("empty/inner").is_dir());
}

#[test]
fn a_pool_on_webdav_converges_and_imports_identically() {
    let server = WebDavServer::start();
    a_lone_branch_converges_and_imports_identically(
        &server.rclone_section("dav"),
        "dav",
        &server.root().join("msync"),
    );
}

#[test]
fn a_pool_on_ftp_converges_and_imports_identically() {
    let server = FtpServer::start();
    a_lone_branch_converges_and_imports_identically(
        &server.rclone_section("ftp"),
        "ftp",
        &server.data().join("msync"),
    );
}

/// What a rate-limited server asks for in the test below, in seconds.
const RETRY_AFTER: u64 = 3;
/// Requests already under way when the first 429 came may still arrive.
const UNDER_WAY: Duration = Duration::from_secs(1);

#[test]
fn a_remote_answering_429_is_paused_for_its_retry_after_and_then_completes() {
    let server = WebDavServer::start();
    let proxy = FaultyProxy::start(server.port(), true);
    let section = WebDavServer::rclone_section_via("dav", proxy.port());
    let mut pool = Pool::install(Sandbox::new(), &section);
    pool.import();
    pool.start();
    write_file(&pool.mount.join("before.txt"), 1000, 1);
    pool.settle(SETTLE);

    // Refused until msync pauses: a fixed window could end before the
    // library's own retries of a request ran out.
    proxy.refuse(SETTLE, RETRY_AFTER);
    for i in 0..20 {
        write_file(
            &pool.mount.join(format!("during/f{i}.txt")),
            700 + i,
            i as u8,
        );
    }
    let paused = pool.wait_for_branch(0, |b| b.paused.is_some(), SETTLE);
    proxy.stop_refusing();
    let why = paused.paused.unwrap();
    assert!(
        why.contains("429") && why.contains(&format!("retry after {RETRY_AFTER}s")),
        "{why}"
    );
    let mut failing_seen = Vec::new();
    let deadline = Instant::now() + SETTLE;
    loop {
        let branch = pool.status().branches.remove(0);
        failing_seen.extend(branch.failing.iter().map(|f| format!("{f:?}")));
        if branch.paused.is_none() && branch.queued == 0 && branch.in_flight.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "never resumed: {branch:#?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    pool.settle(SETTLE);
    pool.assert_in_sync();
    assert_eq!(
        failing_seen,
        Vec::<String>::new(),
        "a rate limit failed paths"
    );
    assert!(!pool.log().contains("failed, retrying"), "{}", pool.log());

    // The server's wait was kept: after each 429, nothing arrived (retries
    // and probes included) before its Retry-After passed, past the
    // requests that were already on their way.
    let refused = proxy.refused_at();
    assert!(!refused.is_empty(), "the proxy refused nothing");
    let arrivals: Vec<Instant> = refused.iter().chain(&proxy.passed_at()).copied().collect();
    for at in &refused {
        let window = (*at + UNDER_WAY)..(*at + Duration::from_secs(RETRY_AFTER));
        let early: Vec<Duration> = arrivals
            .iter()
            .filter(|arrived| window.contains(*arrived))
            .map(|arrived| arrived.duration_since(*at))
            .collect();
        assert!(
            early.is_empty(),
            "requests came {early:?} after a 429 asking for {RETRY_AFTER}s"
        );
    }
}

/// How long the SFTP server's network goes silent in the test below, and
/// how long a stalled transfer waits there before it is dropped.
const BLACKHOLE: Duration = Duration::from_secs(20);
const STALL_TIMEOUT: &str = "8s";

#[test]
fn a_pool_of_four_backends_converges_through_faults_and_imports_identically() {
    let s3 = S3Server::start();
    let dav = WebDavServer::start();
    let ftp = FtpServer::start();
    let sftp = SftpServer::start();
    let proxy = FaultyProxy::start(sftp.port(), false);
    let config = [
        s3.rclone_section("s3"),
        dav.rclone_section("dav"),
        ftp.rclone_section("ftp"),
        sftp.rclone_section_via("sftp", proxy.port()),
    ]
    .join("\n");
    // Three of them cannot tell their size: a quota each, the same for
    // all, lets placement spread new files over the four.
    let mut install = vec!["--remotes".to_owned(), "s3,dav,ftp,sftp".to_owned()];
    for name in ["s3", "dav", "ftp", "sftp"] {
        install.extend(["--quota".to_owned(), format!("{name}=1G")]);
    }
    let install: Vec<&str> = install.iter().map(String::as_str).collect();
    let mut pool = Pool::install_with(Sandbox::new(), &config, &install);
    assert_eq!(pool.branches.len(), 4);
    pool.import();
    pool.start_with(&["--stall-timeout", STALL_TIMEOUT]);
    proxy.set_latency(Duration::from_millis(2));
    proxy.set_random_resets(true);

    // A git clone, 500 small files, an empty directory.
    let origin = pool.sandbox.path().join("origin");
    make_git_repo(&origin);
    git(
        &pool.mount,
        &[
            "clone",
            "-q",
            "--no-local",
            origin.to_str().unwrap(),
            "repo",
        ],
    );
    for i in 0..500 {
        let path = pool.mount.join(format!("small/d{:02}/f{i:03}.txt", i % 25));
        write_file(&path, 100 + i % 300, i as u8);
    }
    std::fs::create_dir_all(pool.mount.join("empty/dir")).unwrap();
    proxy.reset_all();
    pool.settle(SETTLE);

    // The SFTP server goes silent while the pool changes: its transfers
    // stall, are dropped and retried once it answers again.
    proxy.blackhole(BLACKHOLE);
    let silent_from = Instant::now();
    // Placement may put none of the changes below on SFTP: a file written
    // into its branch makes sure it has an upload for the blackhole.
    write_file(
        &pool.branch_dir("sftp").join("during-blackhole.bin"),
        4000,
        7,
    );
    std::fs::rename(
        pool.mount.join("small/d00"),
        pool.mount.join("small/renamed"),
    )
    .unwrap();
    for i in (1..250).step_by(25) {
        let from = format!("small/d{:02}/f{i:03}.txt", i % 25);
        let to = format!("small/d{:02}/moved{i:03}.txt", i % 25);
        std::fs::rename(pool.mount.join(from), pool.mount.join(to)).unwrap();
    }
    for i in (2..500).step_by(25) {
        std::fs::remove_file(pool.mount.join(format!("small/d02/f{i:03}.txt"))).unwrap();
    }
    for i in (3..500).step_by(25) {
        write_file(&pool.mount.join(format!("small/d03/f{i:03}.txt")), 333, 200);
    }
    git(&pool.mount.join("repo"), &["mv", "README", "README.md"]);
    git(&pool.mount.join("repo"), &["commit", "-q", "-m", "rename"]);
    pool.settle(SETTLE * 3);
    assert!(silent_from.elapsed() >= BLACKHOLE);
    proxy.set_random_resets(false);
    pool.wait_in_sync(SETTLE);

    // Both faults met real traffic. Whether msync paused the branch or
    // rclone's own retries outlasted the blackhole depends on timing;
    // either way it converged (a server down for longer is a pause: see
    // the faults tests).
    assert!(proxy.resets() > 0, "no connection was reset");
    assert!(proxy.held() > 0, "the blackhole held nothing back");
    git(&pool.mount.join("repo"), &["fsck", "--no-progress"]);
    let trees: Vec<_> = pool
        .branches
        .iter()
        .map(|(name, _)| tree(&pool.branch_dir(name)))
        .collect();
    for ((name, _), tree) in pool.branches.iter().zip(&trees) {
        let files = tree.iter().filter(|(_, bytes)| bytes.is_some()).count();
        assert!(files >= 50, "{name} got only {files} files");
    }
    pool.stop();

    // A fresh install imports every cloud as it was.
    let second = pool.sandbox.path().join("install2");
    run(pool.msync([
        "install",
        second.to_str().unwrap(),
        "--remotes",
        "s3,dav,ftp,sftp",
    ]));
    run(pool.msync(["import", second.to_str().unwrap()]));
    for ((name, _), before) in pool.branches.iter().zip(&trees) {
        assert_eq!(&tree(&second.join("branches").join(name)), before, "{name}");
    }
}

#[test]
fn a_remote_that_hides_dot_files_and_was_away_at_start_is_refused_when_it_answers() {
    let mut server = FtpServer::start();
    let section = server.rclone_section_listing("ftp", false);
    let mut pool = Pool::install_remotes(Sandbox::new(), &section, Some("ftp"));
    pool.import();
    server.stop();
    pool.start_with(&["--lease-expiry", "3s"]);
    write_file(&pool.mount.join(".config/app.toml"), 321, 1);
    server.restart();

    let hides = |b: &msync::sync::BranchStatus| {
        b.last_error
            .as_deref()
            .is_some_and(|e| e.contains("lists no names that start with a dot"))
    };
    let branch = pool.wait_for_branch(0, hides, SETTLE);
    assert_eq!(branch.state, msync::sync::BranchState::Error);
    assert!(
        branch
            .last_error
            .unwrap()
            .contains("force_list_hidden = true"),
        "no remedy given"
    );
    // The lease is ours (so the remote answered), and nothing was sent.
    assert!(server.data().join("msync/.msync/lock").exists());
    assert!(!server.data().join("msync/.config").exists());
    pool.stop();
}

/// A repository with a few commits, for a clone to copy.
fn make_git_repo(dir: &Path) {
    std::fs::create_dir_all(dir.join("src")).unwrap();
    git(dir, &["init", "-q"]);
    for commit in 0..5 {
        std::fs::write(dir.join("README"), format!("version {commit}\n")).unwrap();
        write_file(
            &dir.join(format!("src/part{commit}.rs")),
            2000 + commit,
            commit as u8,
        );
        git(dir, &["add", "-A"]);
        git(dir, &["commit", "-q", "-m", &format!("commit {commit}")]);
    }
}

fn git(dir: &Path, args: &[&str]) {
    let mut command = std::process::Command::new("git");
    command
        .current_dir(dir)
        .args([
            "-c",
            "user.name=msync tests",
            "-c",
            "user.email=tests@msync.invalid",
        ])
        .args(args);
    run(command);
}

#[test]
fn a_remote_that_lists_no_dot_files_is_refused_with_what_to_set() {
    let server = FtpServer::start();
    let section = server.rclone_section_listing("ftp", false);
    let pool = Pool::install_remotes(Sandbox::new(), &section, Some("ftp"));
    pool.import();
    let output = run_expecting(
        pool.msync([
            "start",
            pool.install.to_str().unwrap(),
            pool.mount.to_str().unwrap(),
        ]),
        8,
    );
    let message = stderr(&output);
    assert!(
        message.contains("lists no names that start with a dot")
            && message.contains("force_list_hidden = true"),
        "{message}"
    );
    assert!(!msync::union::is_mounted(&pool.mount));
    // The lease was given back.
    assert!(!server.data().join("msync/.msync/lock").exists());

    // An import from it refuses too, before downloading anything.
    let stored = server.data().join("msync/.git/config");
    std::fs::create_dir_all(stored.parent().unwrap()).unwrap();
    std::fs::write(&stored, "[core]\n").unwrap();
    std::fs::create_dir_all(server.data().join("msync/.msync/meta")).unwrap();
    std::fs::write(server.data().join("msync/.msync/meta/x"), "x").unwrap();
    let output = run_expecting(pool.msync(["import", pool.install.to_str().unwrap()]), 8);
    assert!(
        stderr(&output).contains("force_list_hidden"),
        "{}",
        stderr(&output)
    );
    assert!(!pool.branch_dir("ftp").join(".git").exists());
}
