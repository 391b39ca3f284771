//! Finding and loading librclone through the real binary: every failure is
//! a clear message with exit code 3, and the search order holds.

use std::os::unix::fs::symlink;

use crate::util::{Sandbox, librclone_path, msync_bin, run, run_expecting, stderr, stdout};

const REQUIREMENT_MISSING: i32 = 3;

#[test]
fn a_missing_file_is_named() {
    let sandbox = Sandbox::new();
    let missing = sandbox.path().join("nowhere/librclone.so");
    let output = run_expecting(
        sandbox.msync([
            "rc",
            "core/version",
            "--librclone",
            missing.to_str().unwrap(),
        ]),
        REQUIREMENT_MISSING,
    );
    let err = stderr(&output);
    assert!(err.contains(missing.to_str().unwrap()), "{err}");
    assert!(err.contains("no such file"), "{err}");
    assert!(err.contains("--librclone"), "{err}");
}

#[test]
fn a_file_that_is_not_a_shared_library_is_named() {
    let sandbox = Sandbox::new();
    let fake = sandbox.path().join("librclone.so");
    std::fs::write(&fake, "this is text, not ELF\n").unwrap();
    let mut command = sandbox.msync(["rc", "core/version"]);
    command.env("MSYNC_LIBRCLONE", &fake);
    let err = stderr(&run_expecting(command, REQUIREMENT_MISSING));
    assert!(err.contains("$MSYNC_LIBRCLONE"), "{err}");
    assert!(err.contains("not a shared library"), "{err}");
}

#[test]
fn a_library_without_the_abi_is_named() {
    let sandbox = Sandbox::new();
    let fixture = env!("MSYNC_FIXTURE_NOT_LIBRCLONE");
    let output = run_expecting(
        sandbox.msync(["rc", "core/version", "--librclone", fixture]),
        REQUIREMENT_MISSING,
    );
    let err = stderr(&output);
    assert!(err.contains("lacks the librclone ABI"), "{err}");
    assert!(err.contains("RcloneFinalize"), "{err}");
}

#[test]
fn the_environment_variable_is_used() {
    let sandbox = Sandbox::new();
    let copy = sandbox.path().join("elsewhere/librclone.so");
    std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
    std::fs::copy(librclone_path(), &copy).unwrap();
    let mut command = sandbox.msync(["check"]);
    command.env("MSYNC_LIBRCLONE", &copy);
    let output = command.output().unwrap();
    let out = stdout(&output);
    assert!(
        out.contains(&format!("ok   librclone: {}", copy.display())),
        "{out}"
    );
}

/// A binary reached through a symlink finds the library beside the real
/// file; a binary with no library beside it and none on the system library
/// path lists every place it tried.
#[test]
fn the_binary_directory_is_resolved_through_symlinks() {
    let sandbox = Sandbox::new();
    let real_dir = sandbox.path().join("lib/msync");
    std::fs::create_dir_all(&real_dir).unwrap();
    std::fs::copy(msync_bin(), real_dir.join("msync")).unwrap();
    let bin_dir = sandbox.path().join("bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    symlink(real_dir.join("msync"), bin_dir.join("msync")).unwrap();

    let attempt = |expect: i32| {
        let mut command = sandbox.command(bin_dir.join("msync"), ["rc", "core/version"]);
        command
            .env_remove("MSYNC_LIBRCLONE")
            .env_remove("LD_LIBRARY_PATH");
        run_expecting(command, expect)
    };

    let err = stderr(&attempt(REQUIREMENT_MISSING));
    let beside = real_dir.join("librclone.so");
    assert!(
        err.contains(&format!("beside the msync binary, {}", beside.display())),
        "{err}"
    );
    assert!(err.contains("system library path"), "{err}");

    std::fs::copy(librclone_path(), &beside).unwrap();
    let out = stdout(&attempt(0));
    assert!(out.contains("v1.60"), "{out}");
}

#[test]
fn the_system_library_path_is_the_last_resort() {
    let sandbox = Sandbox::new();
    let lonely = sandbox.path().join("lonely");
    std::fs::create_dir_all(&lonely).unwrap();
    std::fs::copy(msync_bin(), lonely.join("msync")).unwrap();
    let libs = sandbox.path().join("libs");
    std::fs::create_dir_all(&libs).unwrap();
    std::fs::copy(librclone_path(), libs.join("librclone.so")).unwrap();

    let mut command = sandbox.command(lonely.join("msync"), ["rc", "core/version"]);
    command
        .env_remove("MSYNC_LIBRCLONE")
        .env("LD_LIBRARY_PATH", &libs);
    let out = stdout(&run(command));
    assert!(out.contains("v1.60"), "{out}");
}
