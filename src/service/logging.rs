//! The service's log: `<install dir>/msync.log` (0600, never through a
//! symlink), and stderr too when it runs in the foreground.
//!
//! The log rotates by size: past its limit (10 MiB by default, `start
//! --log-max-size`) msync.log becomes msync.log.1, the older ones move up
//! to msync.log.3, and the oldest goes. In the background the service's
//! stderr is the log too (rclone writes its own lines there): each
//! rotation points stderr at the new file, so nothing keeps writing into
//! a rotated one.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use log::LevelFilter;
use simplelog::{CombinedLogger, ConfigBuilder, SharedLogger, WriteLogger};

use crate::install::open_private;

/// The log's size limit unless `start --log-max-size` says otherwise.
pub const DEFAULT_MAX_SIZE: u64 = 10 << 20;
/// Rotated logs kept beside msync.log (msync.log.1 … msync.log.3).
pub const KEEP: usize = 3;

/// Opens the log file for appending: never through a symlink, only a
/// regular file, and 0600 even if it was left readable by others.
pub fn open_log(path: &Path) -> std::io::Result<std::fs::File> {
    open_private(path, OpenOptions::new().append(true))
}

/// Where the log's stderr goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stderr {
    /// The terminal or the journal: log records are copied there.
    Echo,
    /// The log itself (the service in the background): kept pointing at
    /// the current file across rotations.
    IsTheLog,
}

/// Sends `log` records to the file, rotated at `max_size`.
pub fn init(path: &Path, stderr: Stderr, max_size: u64) -> std::io::Result<()> {
    let config = ConfigBuilder::new()
        .set_time_format_rfc3339()
        .set_thread_level(LevelFilter::Off)
        .set_target_level(LevelFilter::Off)
        .build();
    let file = RotatingLog::open(path, max_size, stderr == Stderr::IsTheLog)?;
    let mut loggers: Vec<Box<dyn SharedLogger>> =
        vec![WriteLogger::new(LevelFilter::Info, config.clone(), file)];
    if stderr == Stderr::Echo {
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

/// The log file, rotated once it passes its limit. Others append to the
/// same file (the service's stderr): its size is read from the file, not
/// counted.
struct RotatingLog {
    path: PathBuf,
    file: std::fs::File,
    max_size: u64,
    redirect_stderr: bool,
}

impl RotatingLog {
    fn open(path: &Path, max_size: u64, redirect_stderr: bool) -> std::io::Result<RotatingLog> {
        Ok(RotatingLog {
            path: path.to_path_buf(),
            file: open_log(path)?,
            max_size,
            redirect_stderr,
        })
    }

    fn rotated(&self, n: usize) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        for n in (1..KEEP).rev() {
            let from = self.rotated(n);
            if from.exists() {
                std::fs::rename(&from, self.rotated(n + 1))?;
            }
        }
        std::fs::rename(&self.path, self.rotated(1))?;
        self.file = open_log(&self.path)?;
        if self.redirect_stderr {
            nix::unistd::dup2_stderr(&self.file).map_err(std::io::Error::from)?;
        }
        Ok(())
    }
}

impl Write for RotatingLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let size = self.file.metadata().map_or(0, |m| m.len());
        if size > 0 && size + buf.len() as u64 > self.max_size {
            // A failed rotation must not lose the record: it goes to the
            // file as it is, and the next write tries again.
            let _ = self.rotate();
        }
        self.file.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_rotates_by_size_and_keeps_three() {
        let temp = tempfile::tempdir().unwrap();
        let path = temp.path().join("msync.log");
        let mut log = RotatingLog::open(&path, 1000, false).unwrap();
        for i in 0..100 {
            writeln!(log, "line {i:03} {}", "x".repeat(90)).unwrap();
        }
        let size = |p: &Path| std::fs::metadata(p).unwrap().len();
        assert!(size(&path) <= 1000);
        for n in 1..=KEEP {
            let rotated = temp.path().join(format!("msync.log.{n}"));
            assert!(size(&rotated) <= 1000 && size(&rotated) > 800, "{n}");
        }
        assert!(!temp.path().join("msync.log.4").exists());
        let newest = std::fs::read_to_string(&path).unwrap();
        assert!(newest.ends_with(&format!("line 099 {}\n", "x".repeat(90))));
        let before = std::fs::read_to_string(temp.path().join("msync.log.1")).unwrap();
        let last_before = before.lines().last().unwrap();
        let first_now = newest.lines().next().unwrap();
        let number = |line: &str| line[5..8].parse::<u32>().unwrap();
        assert_eq!(number(last_before) + 1, number(first_now), "no line lost");
    }
}
