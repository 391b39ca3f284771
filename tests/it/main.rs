//! msync's integration tests: the real binary, the real librclone, real
//! files, checked with Debian's rclone CLI.

mod backends;
mod case_insensitive;
mod cli;
mod engine;
mod faults;
mod faulty;
mod fidelity;
mod ftp;
mod guards;
mod hardening;
mod interlocks;
mod loader;
mod pool;
mod rc_api;
mod requests;
mod s3;
mod service;
mod sftp;
mod signals;
mod space;
mod sshd;
mod union;
mod util;
mod watch;
mod webdav;
