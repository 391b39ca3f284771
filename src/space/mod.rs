//! Space: how much room each cloud has, and what msync does with it.
//!
//! - [`capacity`]: one cloud's capacity as plain data (what its backend
//!   last said, the quota, what was sent and queued since);
//! - [`measure`]: asking the backend;
//! - [`placement`]: which branches take new files, and where a file that
//!   does not fit goes;
//! - [`relocate`]: moving a file between branch directories, locally;
//! - [`balance`]: planning `msync balance` (levelling, evacuating);
//! - [`size`]: sizes as users write them.
//!
//! The engine measures and counts (see `crate::sync`); the service applies
//! placement to the union and carries out the moves.

pub mod balance;
pub mod capacity;
pub mod measure;
pub mod placement;
pub mod relocate;
pub mod size;

pub use capacity::{Capacity, CloudSpace, Measure};
pub use placement::{Candidate, Placement, PoolRoom};
