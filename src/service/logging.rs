//! The service's log: `<install dir>/msync.log` (0600, never through a
//! symlink), and stderr too when it runs in the foreground.

use std::fs::OpenOptions;
use std::path::Path;

use log::LevelFilter;
use simplelog::{CombinedLogger, ConfigBuilder, SharedLogger, WriteLogger};

use crate::install::open_private;

/// Opens the log file for appending: never through a symlink, only a
/// regular file, and 0600 even if it was left readable by others.
pub fn open_log(path: &Path) -> std::io::Result<std::fs::File> {
    open_private(path, OpenOptions::new().append(true))
}

/// Sends `log` records to the file, and to stderr when `also_stderr`.
pub fn init(path: &Path, also_stderr: bool) -> std::io::Result<()> {
    let config = ConfigBuilder::new()
        .set_time_format_rfc3339()
        .set_thread_level(LevelFilter::Off)
        .set_target_level(LevelFilter::Off)
        .build();
    let mut loggers: Vec<Box<dyn SharedLogger>> = vec![WriteLogger::new(
        LevelFilter::Info,
        config.clone(),
        open_log(path)?,
    )];
    if also_stderr {
        loggers.push(WriteLogger::new(
            LevelFilter::Info,
            config,
            std::io::stderr(),
        ));
    }
    // A second init in the same process (tests) keeps the first logger.
    let _ = CombinedLogger::init(loggers);
    Ok(())
}
