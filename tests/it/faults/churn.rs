//! Random churn through the mount, as real use throws at it: creates,
//! overwrites, appends, truncates, deletes, file and directory renames
//! (directories made and renamed before their first upload included), 30
//! operations a second for ten minutes (`MSYNC_CHURN_SECS` shortens it for
//! a quick look), with the service SIGKILLed and restarted in the middle
//! and the SFTP cloud away for 30 seconds. Three minutes after the churn
//! stops every cloud equals the pool, and a fresh install's import of the
//! clouds is identical to the pool, both checked with Debian's rclone CLI.

use std::path::Path;

use super::*;

const OPS_PER_SECOND: u64 = 30;
const CONVERGE: Duration = Duration::from_secs(180);
const OUTAGE: Duration = Duration::from_secs(30);

fn churn_time() -> Duration {
    let seconds = std::env::var("MSYNC_CHURN_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    Duration::from_secs(seconds)
}

/// xorshift64*: a small deterministic generator, so a failing run can be
/// replayed from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One random operation under `root` (the mount). Failures (a name that is
/// gone, a rename across branches) are part of the churn and ignored.
fn churn_once(rng: &mut Rng, root: &Path) {
    let dir = |rng: &mut Rng| match rng.below(4) {
        0 => String::new(),
        d => format!("d{}/", rng.below(6) + d - 1),
    };
    let file = |rng: &mut Rng| format!("{}f{}.bin", dir(rng), rng.below(30));
    let data = |rng: &mut Rng| {
        let len = rng.below(64 << 10) as usize;
        let seed = rng.next() as u8;
        (0..len)
            .map(|i| (i as u8).wrapping_add(seed))
            .collect::<Vec<u8>>()
    };
    let _ = match rng.below(100) {
        0..30 => {
            let path = root.join(file(rng));
            let _ = std::fs::create_dir_all(path.parent().unwrap());
            std::fs::write(path, data(rng))
        }
        30..40 => std::fs::OpenOptions::new()
            .append(true)
            .open(root.join(file(rng)))
            .and_then(|mut f| f.write_all(&data(rng))),
        40..45 => std::fs::OpenOptions::new()
            .write(true)
            .open(root.join(file(rng)))
            .and_then(|f| f.set_len(rng.below(1000))),
        45..60 => std::fs::remove_file(root.join(file(rng))),
        60..75 => std::fs::rename(root.join(file(rng)), root.join(file(rng))),
        75..83 => std::fs::create_dir_all(root.join(format!("d{}", rng.below(8)))),
        83..90 => std::fs::rename(
            root.join(format!("d{}", rng.below(8))),
            root.join(format!("d{}", rng.below(8))),
        ),
        90..95 => std::fs::remove_dir_all(root.join(format!("d{}", rng.below(8)))),
        _ => {
            // Made, filled and renamed before the engine saw any of it.
            let fresh = root.join(format!("new{}", rng.below(1000)));
            std::fs::create_dir_all(fresh.join("sub"))
                .and_then(|()| std::fs::write(fresh.join("sub/x.bin"), data(rng)))
                .and_then(|()| std::fs::rename(&fresh, root.join(format!("d{}", rng.below(8)))))
        }
    };
}

#[test]
fn churn_with_a_crash_and_an_outage_converges_and_imports_identically() {
    let _serial = serial();
    let mut server = SftpServer::start();
    let sandbox = Sandbox::new();
    let cloud = sandbox.path().join("clouds/local");
    std::fs::create_dir_all(&cloud).unwrap();
    let config = format!(
        "[local]\ntype = alias\nremote = {}\n\n{}",
        cloud.display(),
        server.rclone_section("ssh")
    );
    let pool = Pool::install_remotes(sandbox, &config, None);
    pool.import();
    let mut service = Some(start(&pool, &[]));

    let total = churn_time();
    let seed = 0x5EED_0000_0000_0001 ^ u64::from(std::process::id());
    eprintln!("churn for {total:?}, seed {seed:#x}");
    let mount = pool.mount.clone();
    let churn = std::thread::spawn(move || {
        let mut rng = Rng(seed);
        let started = Instant::now();
        let mut ops = 0u64;
        while started.elapsed() < total {
            churn_once(&mut rng, &mount);
            ops += 1;
            let due = started + Duration::from_millis(ops * 1000 / OPS_PER_SECOND);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        ops
    });

    // The churn goes on through the union while the service is dead, and
    // while the SFTP cloud is away.
    let started = Instant::now();
    std::thread::sleep(total * 2 / 5);
    service.take().unwrap().kill();
    service = Some(start(&pool, &[]));
    std::thread::sleep((total * 3 / 5).saturating_sub(started.elapsed()));
    server.stop();
    std::thread::sleep(OUTAGE);
    server.restart();
    let ops = churn.join().expect("the churn thread");
    eprintln!("{ops} operations in {:?}", started.elapsed());

    let stopped = Instant::now();
    while !pool.in_sync() {
        assert!(
            stopped.elapsed() < CONVERGE,
            "the clouds differ from the pool {CONVERGE:?} after the churn: {:#?}\n--- log\n{}",
            pool.status(),
            pool.log()
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    eprintln!("in sync {:?} after the churn stopped", stopped.elapsed());
    service.take().unwrap().stop();

    // A fresh install restores the same pool from the clouds.
    let fresh = pool.sandbox.path().join("fresh-install");
    run(pool.msync(["install", fresh.to_str().unwrap()]));
    run(pool.msync(["import", fresh.to_str().unwrap()]));
    for (name, _) in &pool.branches {
        let restored = fresh.join("branches").join(name);
        let mut check = pool.sandbox.rclone_cli([
            "check",
            pool.branch_dir(name).to_str().unwrap(),
            restored.to_str().unwrap(),
            "--exclude",
            "/.msync-branch",
        ]);
        let output = check.output().unwrap();
        assert!(
            output.status.success(),
            "the import of {name} differs from the pool\n{}",
            describe(&check, &output)
        );
    }
}
