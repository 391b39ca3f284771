//! msync's integration tests: the real binary, the real librclone, real
//! files, checked with Debian's rclone CLI.

mod cli;
mod loader;
mod rc_api;
mod signals;
mod util;
