//! No secret of rclone.conf ever reaches msync.log, `status` (human and
//! JSON), an error message or the service's command line: an sftp remote
//! with a `pass` whose server goes away, one with a wrong `pass`, one at a
//! closed port with an encrypted `key_file` and its `key_file_pass`, and a
//! crypt remote with `password` and `password2`. Each secret is looked for
//! in its plain and its obscured form.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::snapshot::files_below;
use crate::pool::{Pool, write_file};
use crate::sshd::SftpServer;
use crate::util::{Sandbox, describe, require_tool, run, stdout};

const SFTP_PASS: &str = "sftp-pass-Q7x9-plain";
const WRONG_PASS: &str = "wrong-pass-H5r2-plain";
const KEY_PASS: &str = "key-passphrase-Z3k8-plain";
const CRYPT_PASS: &str = "crypt-pass-M2v6-plain";
const CRYPT_SALT: &str = "crypt-salt-W4n1-plain";

#[test]
fn no_secret_reaches_the_log_status_or_an_error() {
    require_tool("ssh-keygen", "openssh-client");
    let mut server = SftpServer::start();
    let sandbox = Sandbox::new();
    let obscure = |secret: &str| {
        stdout(&run(sandbox.rclone_cli(["obscure", secret])))
            .trim()
            .to_owned()
    };
    let mut secrets: Vec<String> = Vec::new();
    for secret in [SFTP_PASS, WRONG_PASS, KEY_PASS, CRYPT_PASS, CRYPT_SALT] {
        secrets.push(secret.to_owned());
        secrets.push(obscure(secret));
    }
    let key = sandbox.path().join("keys/id_encrypted");
    std::fs::create_dir_all(key.parent().unwrap()).unwrap();
    run(sandbox.command(
        "ssh-keygen",
        [
            "-q",
            "-t",
            "ed25519",
            "-N",
            KEY_PASS,
            "-f",
            key.to_str().unwrap(),
        ],
    ));
    let vault = sandbox.path().join("vault");
    std::fs::create_dir_all(&vault).unwrap();
    let config = format!(
        "{ssh}pass = {sftp_pass}\n\n\
         [wrong]\ntype = sftp\nhost = 127.0.0.1\nport = {port}\nuser = root\npass = {wrong_pass}\n\
         shell_type = unix\nmd5sum_command = md5sum\nsha1sum_command = sha1sum\n\n\
         [down]\ntype = sftp\nhost = 127.0.0.1\nport = {closed}\nuser = root\npass = {sftp_pass}\n\
         key_file = {key}\nkey_file_pass = {key_pass}\nshell_type = unix\n\n\
         [vault]\ntype = alias\nremote = {vault}\n\n\
         [secret]\ntype = crypt\nremote = vault:\npassword = {crypt_pass}\npassword2 = {crypt_salt}\n",
        ssh = server.rclone_section("ssh"),
        sftp_pass = secrets[1],
        port = server.port(),
        wrong_pass = secrets[3],
        closed = closed_port(),
        key = key.display(),
        key_pass = secrets[5],
        vault = vault.display(),
        crypt_pass = secrets[7],
        crypt_salt = secrets[9],
    );
    let mut pool = Pool::install_remotes(sandbox, &config, Some("ssh,secret"));
    let mut outputs = Outputs::default();
    let mut failing_installs = Vec::new();

    // Installs of the failing remotes: every command that talks to them
    // fails. Each failure takes rclone ~11 s of retries, so they run at once.
    let mut failing = Vec::new();
    for remote in ["down", "wrong"] {
        let install = pool.sandbox.path().join(format!("install-{remote}"));
        let install = install.to_str().unwrap().to_owned();
        outputs.expect(pool.msync(["install", &install, "--remotes", remote]), &[0]);
        failing.push((pool.msync(["check", &install]), vec![4]));
        failing.push((pool.msync(["import", &install]), vec![6]));
        let params = format!(r#"{{"fs":"{remote}:","remote":""}}"#);
        failing.push((pool.msync(["rc", "operations/list", &params]), vec![6]));
        failing_installs.push(install);
    }
    let elsewhere = pool.sandbox.path().join("mnt-down");
    failing.push((
        pool.msync(["start", &failing_installs[0], elsewhere.to_str().unwrap()]),
        vec![6],
    ));
    outputs.expect(pool.msync(["check"]), &[0]);
    outputs.expect_all(failing);

    // A running service whose sftp server goes away.
    pool.import();
    pool.start();
    write_file(&pool.mount.join("crypted.txt"), 1000, 1);
    pool.settle(Duration::from_secs(60));
    let pid = pool.status().pid;
    for file in ["cmdline", "environ"] {
        let bytes = std::fs::read(format!("/proc/{pid}/{file}")).unwrap();
        outputs.add(
            &format!("/proc/{pid}/{file}"),
            &String::from_utf8_lossy(&bytes),
        );
    }
    server.stop();
    write_file(
        &pool.branch_dir("ssh").join("after the server went.txt"),
        1000,
        2,
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while pool
        .status()
        .branches
        .iter()
        .all(|b| b.last_error.is_none())
    {
        assert!(
            Instant::now() < deadline,
            "the ssh branch shows no error: {:#?}",
            pool.status()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let install = pool.install.to_str().unwrap().to_owned();
    outputs.expect(pool.msync(["status", &install]), &[6]);
    outputs.expect(pool.msync(["status", &install, "--json"]), &[6]);
    assert!(
        outputs.text.contains("last error"),
        "status shows no error:\n{}",
        outputs.text
    );
    // Back, so that stop can give the leases back at once.
    server.restart();
    outputs.expect(
        pool.msync([
            "stop",
            &install,
            pool.mount.to_str().unwrap(),
            "--timeout",
            "2s",
        ]),
        &[0],
    );

    let installs = failing_installs.iter().map(PathBuf::from);
    for dir in installs.chain([pool.install.clone()]) {
        for file in files_below(&dir) {
            let bytes = std::fs::read(&file).unwrap();
            outputs.add(
                &file.display().to_string(),
                &String::from_utf8_lossy(&bytes),
            );
        }
    }
    // The errors meant to be triggered were.
    for error in [
        "connection refused",
        "unable to authenticate",
        "last error",
        "not reachable",
    ] {
        assert!(
            outputs.text.contains(error),
            "no {error:?} in what was collected:\n{}",
            outputs.text
        );
    }
    let leaked: Vec<&String> = secrets
        .iter()
        .filter(|secret| outputs.text.contains(secret.as_str()))
        .collect();
    assert!(
        leaked.is_empty(),
        "secrets {leaked:?} leaked into:\n{}",
        outputs.text
    );
}

/// Everything msync printed or wrote, with where it came from.
#[derive(Default)]
struct Outputs {
    text: String,
}

impl Outputs {
    fn add(&mut self, source: &str, text: &str) {
        self.text.push_str(&format!("=== {source}\n{text}\n"));
    }

    /// Runs `command`, insists on one of `codes`, and keeps what it printed.
    fn expect(&mut self, command: Command, codes: &[i32]) {
        self.expect_all(vec![(command, codes.to_vec())]);
    }

    /// Runs the commands at once; each must exit with one of its codes.
    fn expect_all(&mut self, commands: Vec<(Command, Vec<i32>)>) {
        let children: Vec<_> = commands
            .into_iter()
            .map(|(mut command, codes)| {
                command.stdout(Stdio::piped()).stderr(Stdio::piped());
                let child = command.spawn().unwrap();
                (command, codes, child)
            })
            .collect();
        for (command, codes, child) in children {
            let output = child.wait_with_output().unwrap();
            let description = describe(&command, &output);
            assert!(
                output.status.code().is_some_and(|c| codes.contains(&c)),
                "expected exit {codes:?}\n{description}"
            );
            self.add(&format!("{command:?}"), &description);
        }
    }
}

/// A port of 127.0.0.1 nothing listens on.
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}
