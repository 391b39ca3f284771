//! A real S3 server for the tests: moto (from PyPI, installed by the
//! Makefile into `target/moto`), run as a child of the test process on a
//! free port of 127.0.0.1, keeping its buckets in memory. S3 has no
//! `about`: it stands for every backend that cannot tell its size.
//!
//! Over HTTPS (a certificate from a throwaway CA of the test's own) it
//! shows that S3 works with `AWS_CA_BUNDLE` set, TLS still verified.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const START_TIMEOUT: Duration = Duration::from_secs(120);

pub struct S3Server {
    port: u16,
    scheme: &'static str,
    child: Child,
}

impl S3Server {
    /// Starts moto and returns once it accepts connections.
    pub fn start() -> S3Server {
        S3Server::start_with(&[])
    }

    /// Starts moto over HTTPS with the certificate `cert` and its key
    /// `key` (PEM files); its endpoint is then `https://127.0.0.1:<port>`.
    pub fn start_tls(cert: &std::path::Path, key: &std::path::Path) -> S3Server {
        let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
        let mut server = S3Server::start_with(&["-s", "-c", cert, "-k", key]);
        server.scheme = "https";
        server
    }

    fn start_with(extra: &[&str]) -> S3Server {
        let program = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/moto/bin/moto_server");
        assert!(
            program.is_file(),
            "{} not found: the S3 tests need moto; `make test` installs it (or run `make target/moto/bin/moto_server`)",
            program.display()
        );
        let port = crate::util::free_port();
        let child = Command::new(&program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("starting {}: {err}", program.display()));
        let server = S3Server {
            port,
            scheme: "http",
            child,
        };
        crate::util::wait_listening("moto", port, START_TIMEOUT);
        server
    }

    /// A config section for rclone's s3 backend named `name`.
    pub fn rclone_section(&self, name: &str) -> String {
        format!(
            "[{name}]\ntype = s3\nprovider = Other\nendpoint = {}://127.0.0.1:{}\n\
             access_key_id = msync-test\nsecret_access_key = msync-test\nregion = us-east-1\n",
            self.scheme, self.port
        )
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A throwaway CA and a certificate it signed for 127.0.0.1, made with
/// Debian's openssl in `dir`: (CA certificate, server certificate, server
/// key).
fn make_certificates(dir: &std::path::Path) -> (PathBuf, PathBuf, PathBuf) {
    crate::util::require_tool("openssl", "openssl");
    let path = |name: &str| dir.join(name);
    let openssl = |args: &[&str]| {
        let mut command = Command::new("openssl");
        command.args(args).current_dir(dir).stdin(Stdio::null());
        crate::util::run(command);
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=msync test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(path("san.ext"), "subjectAltName = IP:127.0.0.1\n").unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.pem",
    ]);
    (path("ca.pem"), path("server.pem"), path("server.key"))
}

#[test]
fn s3_works_with_aws_ca_bundle_set_and_tls_still_verified() {
    let sandbox = crate::util::Sandbox::new();
    let (ca, cert, key) = make_certificates(sandbox.path());
    let server = S3Server::start_tls(&cert, &key);
    sandbox.write_config(&server.rclone_section("bucket"));
    let file = sandbox.make_file("report.txt", 4321);
    // Where the library writes the bundle added to the system's CAs.
    let tmp = sandbox.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let copy = |bundle: Option<&std::path::Path>| {
        let params = serde_json::json!({
            "srcFs": file.parent().unwrap(),
            "srcRemote": "report.txt",
            "dstFs": "bucket:msync-ca",
            "dstRemote": "report.txt",
        });
        let mut command = sandbox.msync(["rc", "operations/copyfile", &params.to_string()]);
        if let Some(bundle) = bundle {
            command.env("AWS_CA_BUNDLE", bundle);
        }
        command.env("TMPDIR", &tmp);
        command.output().unwrap()
    };

    // rclone 1.60's AWS SDK alone fails every call with the variable set
    // ("LoadCustomCABundleError"); msync's librclone hands the bundle to
    // rclone's own CA option.
    let output = copy(Some(&ca));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Checked by Debian's rclone CLI, trusting the test's CA its own way.
    let listing = crate::util::stdout(&crate::util::run(sandbox.rclone_cli([
        "lsf",
        "--ca-cert",
        ca.to_str().unwrap(),
        "bucket:msync-ca",
    ])));
    assert_eq!(listing.trim(), "report.txt");
    // The combined bundle it wrote is gone once msync is done.
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);

    // TLS is verified: without the CA, or with a bundle of other CAs, the
    // server's certificate is refused.
    for bundle in [
        None,
        Some(std::path::Path::new("/etc/ssl/certs/ca-certificates.crt")),
    ] {
        let output = copy(bundle);
        let err = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success(),
            "{bundle:?}: copied without the CA"
        );
        assert!(err.contains("certificate"), "{bundle:?}: {err}");
        assert!(!err.contains("LoadCustomCABundle"), "{bundle:?}: {err}");
    }
}
