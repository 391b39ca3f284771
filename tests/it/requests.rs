//! What one change costs at a real SFTP server: each kind of change made
//! through the mount, the requests sshd's sftp-server logged for it
//! counted, and the result checked with Debian's rclone CLI, both with
//! msync's own librclone calls and without them (as with an upstream
//! librclone build).

use std::time::Duration;

use crate::pool::{Pool, write_file};
use crate::sshd::{COMMAND_SESSION, SftpServer};
use crate::util::{Sandbox, run, stdout};

const SETTLE: Duration = Duration::from_secs(60);

/// The most requests each kind of change may cost on SFTP with msync's
/// own librclone. Through rclone 1.60's sftp backend the floor is a few
/// above the protocol's: the backend looks up a file's parent directory
/// before it writes or moves the file, and the file after; the upload's
/// temporary name (no torn files) adds a move; the old version's move to
/// the trash adds another. See bench/results/sync.md for the breakdown.
const MOST: &[(&str, usize)] = &[("new", 9), ("overwrite", 12), ("delete", 4), ("rename", 5)];

/// A pool of one branch on the server, started with `env`, holding four
/// old files in `d/`.
fn pool_on(server: &SftpServer, env: &[(&str, &str)]) -> Pool {
    let sandbox = Sandbox::new();
    let mut pool = Pool::install_remotes(sandbox, &server.rclone_section("ssh"), Some("ssh"));
    pool.import();
    let branch = pool.branch_dir(&pool.branches[0].0);
    for i in 0..4 {
        write_file(&branch.join(format!("d/old{i}")), 4096, i);
    }
    pool.start_with_env(&[], env);
    pool.settle(SETTLE);
    pool
}

/// A kind of change and a way to make it.
type Step<'a> = (&'static str, Box<dyn Fn() + 'a>);

/// Makes one change of each kind twice (the first of a kind may make the
/// trash directories), each waited for on its own; returns the requests
/// of each change, by kind. Index writes are left out, as one journal
/// covers every change of 10 s, and so are the lease's renewals: both come
/// on timers, whichever change they fall into.
fn changes(pool: &Pool, server: &SftpServer) -> Vec<(&'static str, Vec<String>)> {
    let mount = pool.mount.clone();
    let steps: Vec<Step> = vec![
        (
            "new",
            Box::new(|| write_file(&mount.join("d/new0"), 4096, 10)),
        ),
        (
            "new",
            Box::new(|| write_file(&mount.join("d/new1"), 4096, 11)),
        ),
        (
            "overwrite",
            Box::new(|| write_file(&mount.join("d/old0"), 4096, 20)),
        ),
        (
            "overwrite",
            Box::new(|| write_file(&mount.join("d/old1"), 4096, 21)),
        ),
        (
            "delete",
            Box::new(|| std::fs::remove_file(mount.join("d/old2")).unwrap()),
        ),
        (
            "delete",
            Box::new(|| std::fs::remove_file(mount.join("d/old3")).unwrap()),
        ),
        (
            "rename",
            Box::new(|| std::fs::rename(mount.join("d/new0"), mount.join("d/moved0")).unwrap()),
        ),
        (
            "rename",
            Box::new(|| std::fs::rename(mount.join("d/new1"), mount.join("d/moved1")).unwrap()),
        ),
    ];
    let mut counted = Vec::new();
    for (kind, change) in steps {
        let offset = server.log().len();
        change();
        pool.settle(SETTLE);
        let requests = server
            .requests_since(offset)
            .into_iter()
            .filter(|line| !line.contains("/.msync/meta") && !line.contains("/.msync/lock"))
            .collect();
        counted.push((kind, requests));
    }
    counted
}

/// What the remote holds after [`changes`], seen with the rclone CLI: the
/// files with their new bytes, and every replaced or deleted version in
/// the trash.
fn assert_result(pool: &Pool) {
    let remote = &pool.branches[0].1;
    pool.assert_in_sync();
    assert_eq!(
        pool.remote_names(remote),
        ["d/moved0", "d/moved1", "d/old0", "d/old1"]
    );
    let listing = stdout(&run(pool.sandbox.rclone_cli([
        "lsf",
        "-R",
        "--files-only",
        &format!("{remote}/.msync/trash"),
    ])));
    let mut trashed: Vec<&str> = listing
        .lines()
        .map(|line| line.rsplit('/').next().unwrap().split('~').next().unwrap())
        .collect();
    trashed.sort();
    assert_eq!(trashed, ["old0", "old1", "old2", "old3"], "{listing}");
}

#[test]
fn each_kind_of_change_costs_few_sftp_requests() {
    let server = SftpServer::start();
    let mut pool = pool_on(&server, &[]);
    let offset = server.log().len();
    let counted = changes(&pool, &server);
    // The index journal of the changes goes out as their files did: with
    // no hash computed on the server either. Its trailer says it is whole.
    let meta = server.root().join("msync/.msync/meta");
    let journal_sent = || {
        std::fs::read_dir(&meta).is_ok_and(|files| {
            files.flatten().any(|file| {
                file.file_name().to_string_lossy().starts_with("journal-")
                    && std::fs::read_to_string(file.path())
                        .is_ok_and(|text| text.contains("{\"end\":"))
            })
        })
    };
    let deadline = std::time::Instant::now() + SETTLE;
    while !journal_sent() {
        assert!(std::time::Instant::now() < deadline, "no journal was sent");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        !server
            .requests_since(offset)
            .iter()
            .any(|line| line.starts_with(COMMAND_SESSION)),
        "the index's upload ran a remote command"
    );
    let report: String = counted
        .iter()
        .map(|(kind, lines)| format!("{kind}: {}\n  {}\n", lines.len(), lines.join("\n  ")))
        .collect();
    for (kind, lines) in &counted {
        let most = MOST.iter().find(|(k, _)| k == kind).unwrap().1;
        // The second of each kind finds the trash directories made.
        let warm = counted.iter().filter(|(k, _)| k == kind).nth(1).unwrap();
        assert!(
            warm.1.len() <= most,
            "{kind} costs {} requests, more than {most}:\n{report}",
            warm.1.len()
        );
        // No hash is computed on the server: SSH checks the bytes.
        assert!(
            !lines.iter().any(|line| line.starts_with(COMMAND_SESSION)),
            "{kind} ran a remote command:\n{report}"
        );
    }
    assert_result(&pool);
    pool.stop();
}

#[test]
fn without_msyncs_own_librclone_calls_changes_land_the_same() {
    const OFF: (&str, &str) = ("LIBRCLONE_MSYNC_CALLS", "off");
    let server = SftpServer::start();
    let mut pool = pool_on(&server, &[OFF]);
    // The library the service runs lacks them, as an upstream build does.
    let listed = |env: &[(&str, &str)]| {
        let mut command = pool.msync(["rc", "rc/list"]);
        command.envs(env.iter().copied());
        stdout(&run(command)).contains("msync/placefile")
    };
    assert!(listed(&[]));
    assert!(!listed(&[OFF]));
    changes(&pool, &server);
    assert_result(&pool);
    pool.stop();
}
