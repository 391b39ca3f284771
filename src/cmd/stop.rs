//! `msync stop <install dir> <mount point>`: asks the service to send what
//! is queued, unmount and exit, and waits until it has.

use std::time::{Duration, Instant};

use super::require_root;
use crate::cli::StopArgs;
use crate::error::{ExitCode, coded};
use crate::install::InstallDir;
use crate::service::{self, ClientError, Reply, Request};

/// How long the service may take to exit after it answered (giving its
/// leases back to a slow remote included).
const EXIT_WAIT: Duration = Duration::from_secs(60);

pub fn run(args: &StopArgs) -> anyhow::Result<ExitCode> {
    require_root("stop")?;
    let install = InstallDir::open(&args.install_dir)?;
    let request = Request::Stop {
        mount_point: std::path::absolute(&args.mount_point)?,
        timeout_secs: args.timeout.as_secs(),
        now: args.now,
    };
    // The service may spend the whole timeout sending, then unmount.
    let wait = args.timeout + Duration::from_secs(30);
    let reply = match service::request(&install.socket_path(), &request, wait) {
        Ok(reply) => reply,
        Err(ClientError::NotRunning | ClientError::Gone) => {
            return Err(coded(
                ExitCode::RunningState,
                format!(
                    "no msync service is running for {}",
                    install.root().display()
                ),
            ));
        }
        Err(err) => return Err(err.into()),
    };
    match reply {
        Reply::Stopped => {
            let deadline = Instant::now() + EXIT_WAIT;
            while let Some(pid) = service::running_pid(&install.pid_file()) {
                if Instant::now() >= deadline {
                    return Err(coded(
                        ExitCode::Failed,
                        format!(
                            "{} is unmounted, but the service (pid {pid}) is still winding down after {}s; see {}",
                            args.mount_point.display(),
                            EXIT_WAIT.as_secs(),
                            install.log_file().display()
                        ),
                    ));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            println!("msync stopped; {} unmounted", args.mount_point.display());
            Ok(ExitCode::Ok)
        }
        Reply::Error { code, message } => Err(coded(
            ExitCode::from_code(code.into()).unwrap_or(ExitCode::Failed),
            message,
        )),
        other => Err(coded(
            ExitCode::Failed,
            format!("the service answered a stop with {other:?}"),
        )),
    }
}
