//! Pairing the two halves of a rename by cookie, as plain data.
//!
//! The kernel queues `IN_MOVED_FROM` and then `IN_MOVED_TO` with the same
//! cookie, but a read can end between them, and a move out of the tree has
//! no second half at all. A `MOVED_FROM` is therefore held until its
//! `MOVED_TO` arrives, until a short grace passes (then it was a move out),
//! or until another event touches its path: that event happened after the
//! move, so the move must be decided first to keep the order right.

use std::path::PathBuf;
use std::time::Instant;

/// A held `IN_MOVED_FROM`, already resolved to branch and relative path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovedFrom {
    pub cookie: u32,
    pub branch: usize,
    pub path: PathBuf,
    pub is_dir: bool,
    /// After this it counts as moved out of the tree.
    pub deadline: Instant,
}

#[derive(Debug, Default)]
pub struct Pairer {
    /// Few at a time (one per rename in flight), so a Vec is enough.
    held: Vec<MovedFrom>,
}

impl Pairer {
    pub fn moved_from(&mut self, from: MovedFrom) {
        self.held.push(from);
    }

    /// The held half with this cookie, if any.
    pub fn moved_to(&mut self, cookie: u32) -> Option<MovedFrom> {
        let at = self.held.iter().position(|m| m.cookie == cookie)?;
        Some(self.held.remove(at))
    }

    /// Held halves whose path is `path`, above it or below it: an event
    /// there must not overtake the decision about them.
    pub fn take_related(&mut self, branch: usize, path: &std::path::Path) -> Vec<MovedFrom> {
        self.take_where(|m| {
            m.branch == branch && (m.path.starts_with(path) || path.starts_with(&m.path))
        })
    }

    /// Held halves whose grace is over: moves out of the tree.
    pub fn take_expired(&mut self, now: Instant) -> Vec<MovedFrom> {
        self.take_where(|m| m.deadline <= now)
    }

    pub fn take_all(&mut self) -> Vec<MovedFrom> {
        std::mem::take(&mut self.held)
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.held.iter().map(|m| m.deadline).min()
    }

    /// Removes and returns the matching halves, oldest first.
    fn take_where(&mut self, mut pick: impl FnMut(&MovedFrom) -> bool) -> Vec<MovedFrom> {
        let (taken, kept) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|m| pick(m));
        self.held = kept;
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn from(cookie: u32, path: &str, deadline: Instant) -> MovedFrom {
        MovedFrom {
            cookie,
            branch: 0,
            path: PathBuf::from(path),
            is_dir: false,
            deadline,
        }
    }

    #[test]
    fn pairs_by_cookie() {
        let t0 = Instant::now();
        let mut p = Pairer::default();
        p.moved_from(from(7, "a", t0));
        p.moved_from(from(8, "b", t0));
        assert_eq!(p.moved_to(8).unwrap().path, PathBuf::from("b"));
        assert_eq!(p.moved_to(8), None);
        assert_eq!(p.moved_to(9), None);
        assert_eq!(p.moved_to(7).unwrap().path, PathBuf::from("a"));
        assert_eq!(p.next_deadline(), None);
    }

    #[test]
    fn unpaired_halves_expire_after_their_grace() {
        let t0 = Instant::now();
        let grace = Duration::from_millis(100);
        let mut p = Pairer::default();
        p.moved_from(from(1, "a", t0 + grace));
        p.moved_from(from(2, "b", t0 + 2 * grace));
        assert_eq!(p.next_deadline(), Some(t0 + grace));
        assert!(p.take_expired(t0).is_empty());
        let expired = p.take_expired(t0 + grace);
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].cookie, 1);
        assert_eq!(p.next_deadline(), Some(t0 + 2 * grace));
        assert_eq!(p.take_all().len(), 1);
        assert_eq!(p.next_deadline(), None);
    }

    #[test]
    fn an_event_on_a_related_path_decides_the_held_half() {
        let t0 = Instant::now();
        let mut p = Pairer::default();
        p.moved_from(from(1, "d", t0));
        p.moved_from(from(2, "other", t0));
        assert!(p.take_related(0, "dx".as_ref()).is_empty());
        assert!(p.take_related(1, "d".as_ref()).is_empty(), "other branch");
        let taken = p.take_related(0, "d/inner/file".as_ref());
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].path, PathBuf::from("d"));
        // An event on a parent directory also decides the halves below it.
        assert_eq!(p.take_related(0, "".as_ref()).len(), 1);
    }
}
