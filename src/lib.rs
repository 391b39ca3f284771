//! msync: many cloud storage accounts used together as one big store.
//!
//! The library holds everything the `msync` binary does, so integration
//! tests can drive the real librclone in-process as well as through the
//! binary. The tree is the architecture: [`rclone`] is the only door to
//! librclone (and the only FFI code), [`union`] the union filesystems,
//! [`sync`] the engine, [`meta`] the metadata index a restore needs,
//! [`cmd`] one file per command, [`error`] the exit codes.

pub mod cli;
pub mod cmd;
pub mod error;
pub mod install;
pub mod meta;
pub mod progress;
pub mod rclone;
pub mod rclone_config;
pub mod service;
pub mod space;
pub mod sync;
pub mod union;
pub mod watch;
