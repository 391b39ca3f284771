//! A real S3 server for the tests: moto (from PyPI, installed by the
//! Makefile into `target/moto`), run as a child of the test process on a
//! free port of 127.0.0.1, keeping its buckets in memory. S3 has no
//! `about`: it stands for every backend that cannot tell its size.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const START_TIMEOUT: Duration = Duration::from_secs(30);

pub struct S3Server {
    port: u16,
    child: Child,
}

impl S3Server {
    /// Starts moto and returns once it accepts connections.
    pub fn start() -> S3Server {
        let program = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/moto/bin/moto_server");
        assert!(
            program.is_file(),
            "{} not found: the S3 tests need moto; `make test` installs it (or run `make target/moto/bin/moto_server`)",
            program.display()
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("binding a free port")
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(&program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("starting {}: {err}", program.display()));
        let server = S3Server { port, child };
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto did not listen on 127.0.0.1:{port} within {START_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    /// A config section for rclone's s3 backend named `name`.
    pub fn rclone_section(&self, name: &str) -> String {
        format!(
            "[{name}]\ntype = s3\nprovider = Other\nendpoint = http://127.0.0.1:{}\n\
             access_key_id = msync-test\nsecret_access_key = msync-test\nregion = us-east-1\n",
            self.port
        )
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
