//! The command line as scripts see it: help, exit codes, `rc` and `check`
//! with real rclone configs (a local alias and a crypt remote), checked
//! with Debian's rclone CLI.

use crate::util::{Sandbox, require_tool, run, run_expecting, stderr, stdout};

#[test]
fn help_prints_the_exit_code_table() {
    let sandbox = Sandbox::new();
    let out = stdout(&run(sandbox.msync(["help"])));
    for line in [
        "0  success",
        "2  usage error",
        "3  requirement missing",
        "6  an rclone call failed",
        "130  interrupted",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
    for command in ["check", "rc"] {
        assert!(out.contains(command), "{out}");
    }
}

#[test]
fn usage_errors_exit_2() {
    let sandbox = Sandbox::new();
    run_expecting(sandbox.msync(Vec::<&str>::new()), 2);
    run_expecting(sandbox.msync(["frobnicate"]), 2);
    run_expecting(sandbox.msync(["rc"]), 2);
    let err = stderr(&run_expecting(
        sandbox.msync(["rc", "core/version", "{not json"]),
        2,
    ));
    assert!(err.contains("not valid JSON"), "{err}");
    let err = stderr(&run_expecting(
        sandbox.msync(["rc", "core/version", "[1]"]),
        2,
    ));
    assert!(err.contains("must be a JSON object"), "{err}");
}

#[test]
fn rclone_errors_exit_6_with_rclones_message() {
    let sandbox = Sandbox::new();
    let err = stderr(&run_expecting(sandbox.msync(["rc", "no/such"]), 6));
    assert!(err.contains("no/such") && err.contains("404"), "{err}");
    let err = stderr(&run_expecting(sandbox.msync(["rc", "core/quit"]), 6));
    assert!(err.contains("never calls core/quit"), "{err}");
    let missing = sandbox.path().join("missing");
    let params =
        serde_json::json!({"srcFs": missing, "dstFs": sandbox.path().join("d")}).to_string();
    let err = stderr(&run_expecting(
        sandbox.msync(["rc", "--async", "sync/copy", &params]),
        6,
    ));
    assert!(err.contains("directory not found"), "{err}");
}

#[test]
fn rc_uses_the_given_config_with_a_crypt_remote() {
    let sandbox = Sandbox::new();
    let store = sandbox.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    let obscured = stdout(&run(
        sandbox.rclone_cli(["obscure", "correct horse battery"])
    ));
    let config = sandbox.path().join("custom.conf");
    std::fs::write(
        &config,
        format!(
            "[plain]\ntype = alias\nremote = {}\n\n[secret]\ntype = crypt\nremote = plain:vault\npassword = {}\n",
            store.display(),
            obscured.trim()
        ),
    )
    .unwrap();
    let file = sandbox.make_file("data/report.txt", 12345);
    let params = serde_json::json!({
        "srcFs": file.parent().unwrap(),
        "srcRemote": "report.txt",
        "dstFs": "secret:",
        "dstRemote": "docs/report.txt",
    })
    .to_string();
    // RCLONE_CONFIG points at the sandbox's empty config: --config must win.
    run(sandbox.msync([
        "--config",
        config.to_str().unwrap(),
        "rc",
        "operations/copyfile",
        &params,
    ]));

    // The rclone CLI decrypts the same bytes; on disk the name is encrypted.
    let mut cat = sandbox.rclone_cli([
        "--config",
        config.to_str().unwrap(),
        "cat",
        "secret:docs/report.txt",
    ]);
    cat.env_remove("RCLONE_CONFIG");
    assert_eq!(run(cat).stdout, std::fs::read(&file).unwrap());
    let names: Vec<_> = walk(&store.join("vault"));
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(
        !names[0].contains("report"),
        "name not encrypted: {names:?}"
    );

    let listed = stdout(&run(sandbox.msync([
        "--config",
        config.to_str().unwrap(),
        "rc",
        "operations/list",
        r#"{"fs":"secret:","remote":"docs"}"#,
    ])));
    assert!(listed.contains("report.txt"), "{listed}");
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(walk(&path));
        } else {
            found.push(path.to_string_lossy().into_owned());
        }
    }
    found
}

#[test]
fn the_config_option_works_without_rclone_config_in_the_environment() {
    let sandbox = Sandbox::new();
    let config = sandbox.path().join("only.conf");
    std::fs::write(&config, "[zeta]\ntype = local\n").unwrap();
    let mut command = sandbox.msync([
        "--config",
        config.to_str().unwrap(),
        "rc",
        "config/listremotes",
    ]);
    command.env_remove("RCLONE_CONFIG");
    let out = stdout(&run(command));
    assert!(out.contains("zeta"), "{out}");
}

#[test]
fn a_missing_explicit_config_is_a_requirement_error() {
    let sandbox = Sandbox::new();
    let err = stderr(&run_expecting(
        sandbox.msync(["--config", "/nonexistent/rclone.conf", "rc", "core/version"]),
        3,
    ));
    assert!(
        err.contains("/nonexistent/rclone.conf") && err.contains("rclone config"),
        "{err}"
    );
}

#[test]
fn check_reports_every_requirement() {
    require_tool("mergerfs", "mergerfs");
    let sandbox = Sandbox::new();
    sandbox.write_config("[alpha]\ntype = local\n\n[beta]\ntype = alias\nremote = /tmp\n");
    let out = stdout(&run(sandbox.msync(["check"])));
    for expected in [
        "ok   root: running as root",
        "ok   librclone: ",
        "ok   inotify: usable, fs.inotify.max_user_watches = ",
        "ok   union: mergerfs at ",
        "(remotes: alpha, beta)",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
}

#[test]
fn check_fails_with_a_remedy_when_the_config_has_no_remotes() {
    let sandbox = Sandbox::new();
    let out = stdout(&run_expecting(sandbox.msync(["check"]), 3));
    assert!(
        out.contains("FAIL rclone config:") && out.contains("rclone config"),
        "{out}"
    );
    std::fs::remove_file(sandbox.config()).unwrap();
    let out = stdout(&run_expecting(sandbox.msync(["check"]), 3));
    assert!(out.contains("FAIL rclone config: cannot read"), "{out}");
}

#[test]
fn check_fails_when_not_root() {
    require_tool("setpriv", "util-linux");
    let sandbox = Sandbox::new();
    let mut command = sandbox.command(
        "setpriv",
        [
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            crate::util::msync_bin().to_str().unwrap(),
            "check",
        ],
    );
    command.current_dir("/");
    let out = stdout(&run_expecting(command, 3));
    assert!(out.contains("FAIL root: running as uid 65534"), "{out}");
}

#[test]
fn check_of_an_install_says_what_each_remote_can_do() {
    let pool = crate::pool::Pool::local_clouds(1);
    let out = stdout(&run(pool.msync(["check", pool.install.to_str().unwrap()])));
    assert!(out.contains("ok   branch cloud1:"), "{out}");
    assert!(
        out.contains("cloud1: hashes md5")
            && out.contains("server-side move yes")
            && out.contains("empty directories yes"),
        "{out}"
    );
}

#[test]
fn check_names_a_directory_that_is_not_an_install() {
    let sandbox = Sandbox::new();
    sandbox.write_config("[alpha]\ntype = local\n");
    let out = stdout(&run_expecting(
        sandbox.msync(["check", sandbox.path().to_str().unwrap()]),
        4,
    ));
    assert!(out.contains("is not an msync install dir"), "{out}");
}

#[test]
fn completions_for_bash_are_a_script_bash_reads_and_know_every_command() {
    let sandbox = Sandbox::new();
    let script = stdout(&run(sandbox.msync(["completions", "bash"])));
    let file = sandbox.path().join("msync.bash");
    std::fs::write(&file, &script).unwrap();
    let mut syntax = std::process::Command::new("bash");
    syntax.arg("-n").arg(&file);
    run(syntax);
    // Sourced, the completion offers the commands after `msync `.
    let probe = format!(
        "source {}; COMP_WORDS=(msync st); COMP_CWORD=1; _msync msync st msync; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        file.display()
    );
    let offered = stdout(&run({
        let mut bash = std::process::Command::new("bash");
        bash.arg("-c").arg(&probe);
        bash
    }));
    for command in ["start", "status", "stop"] {
        assert!(offered.lines().any(|l| l == command), "{offered}");
    }
    for shell in ["zsh", "fish"] {
        let script = stdout(&run(sandbox.msync(["completions", shell])));
        assert!(script.contains("msync"), "{shell}: {script}");
    }
    let err = stderr(&run_expecting(sandbox.msync(["completions", "cmd.exe"]), 2));
    assert!(err.contains("bash"), "{err}");
}

#[test]
fn the_manual_has_a_page_per_command_that_man_renders() {
    require_tool("man", "man-db");
    let sandbox = Sandbox::new();
    let dir = sandbox.path().join("man1");
    run(sandbox.msync(["manual", dir.to_str().unwrap()]));
    let main = stdout(&run({
        let mut man = std::process::Command::new("man");
        man.arg("-l").arg(dir.join("msync.1")).env("MANWIDTH", "80");
        man
    }));
    assert!(main.contains("many cloud storage accounts"), "{main}");
    assert!(main.contains("Exit codes"), "{main}");
    for command in [
        "check",
        "install",
        "import",
        "start",
        "stop",
        "status",
        "balance",
        "rc",
        "completions",
    ] {
        let page = dir.join(format!("msync-{command}.1"));
        let text = stdout(&run({
            let mut man = std::process::Command::new("man");
            man.arg("-l").arg(&page).env("MANWIDTH", "80");
            man
        }));
        // man justifies lines: the synopsis may hold two spaces in a row.
        let words = text.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            words.contains(&format!("msync {command}")),
            "{command}: {text}"
        );
    }
    let start = std::fs::read_to_string(dir.join("msync-start.1")).unwrap();
    assert!(start.contains("stall"), "{start}");
}

#[test]
fn the_release_bundle_runs_from_wherever_it_is_unpacked() {
    let sandbox = Sandbox::new();
    let bin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_msync"))
        .parent()
        .unwrap()
        .to_owned();
    let out = sandbox.path().join("dist");
    let mut bundle = std::process::Command::new(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("dist/bundle.sh"),
    );
    bundle.arg(&bin_dir).arg(&out);
    let tarball = stdout(&run(bundle)).trim().to_owned();
    assert!(tarball.ends_with(".tar.gz"), "{tarball}");
    let unpacked = sandbox.path().join("anywhere");
    std::fs::create_dir_all(&unpacked).unwrap();
    let mut untar = std::process::Command::new("tar");
    untar.arg("-xzf").arg(&tarball).arg("-C").arg(&unpacked);
    run(untar);
    let root = std::fs::read_dir(&unpacked)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    for file in [
        "msync",
        "librclone.so",
        "msync.service",
        "README",
        "man/msync.1",
        "completions/msync.bash",
    ] {
        assert!(root.join(file).exists(), "{file} missing from the bundle");
    }
    // No hint where the library is: it must be found beside the binary.
    let mut check = std::process::Command::new(root.join("msync"));
    check
        .arg("check")
        .current_dir(&root)
        .env_remove("MSYNC_LIBRCLONE")
        .env_remove("LD_LIBRARY_PATH")
        .env("HOME", sandbox.path());
    let output = check.output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    let expected = format!("ok   librclone: {}", root.join("librclone.so").display());
    assert!(text.contains(&expected), "{text}");
}
