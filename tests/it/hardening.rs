//! Issue 4's hardening, as tests of the real binary against real mounts and
//! remotes:
//!
//! - [`bad_input`]: every refusal has a clear message, its documented exit
//!   code, and changes nothing (checked with [`snapshot`]);
//! - [`private`]: msync's own files are root's alone and are never reached
//!   through a symlink planted in their place;
//! - [`branch_links`]: symlinks inside branches are never followed;
//! - [`secrets`]: no secret of rclone.conf reaches a log, a status or an
//!   error message;
//! - [`names`]: file names are data, whatever bytes they hold.

mod bad_input;
mod branch_links;
mod names;
mod private;
mod secrets;
mod snapshot;
