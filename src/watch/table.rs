//! The map from watch descriptors to watched directories and back.
//!
//! Plain data, generic over the descriptor so tests can use integers. Paths
//! are relative to their branch root and kept in a BTreeMap so a directory
//! and everything below it is one contiguous range: a directory rename
//! re-keys every watched subdirectory in one pass.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub struct WatchTable<W> {
    by_wd: HashMap<W, (usize, PathBuf)>,
    by_path: BTreeMap<(usize, PathBuf), W>,
}

impl<W: Clone + Eq + Hash> Default for WatchTable<W> {
    fn default() -> Self {
        WatchTable {
            by_wd: HashMap::new(),
            by_path: BTreeMap::new(),
        }
    }
}

impl<W: Clone + Eq + Hash> WatchTable<W> {
    pub fn len(&self) -> usize {
        self.by_wd.len()
    }

    pub fn get(&self, wd: &W) -> Option<&(usize, PathBuf)> {
        self.by_wd.get(wd)
    }

    #[cfg(test)]
    pub fn wd_at(&self, branch: usize, path: &Path) -> Option<&W> {
        self.by_path.get(&(branch, path.to_path_buf()))
    }

    /// Records that `wd` watches `branch`/`path`. The kernel hands back the
    /// same descriptor for a directory it already watches, so this also
    /// moves a descriptor seen before at another path; a different
    /// descriptor displaced from `path` is returned for the caller to drop.
    pub fn insert(&mut self, wd: W, branch: usize, path: PathBuf) -> Option<W> {
        if let Some(old) = self.by_wd.remove(&wd)
            && self.by_path.get(&old) == Some(&wd)
        {
            self.by_path.remove(&old);
        }
        let displaced = self
            .by_path
            .insert((branch, path.clone()), wd.clone())
            .filter(|old| *old != wd);
        if let Some(old) = &displaced {
            self.by_wd.remove(old);
        }
        self.by_wd.insert(wd, (branch, path));
        displaced
    }

    /// Forgets `wd` (after `IN_IGNORED`); its path mapping goes only if it
    /// still points at `wd`, since a new directory may already sit there.
    pub fn remove_wd(&mut self, wd: &W) -> Option<(usize, PathBuf)> {
        let key = self.by_wd.remove(wd)?;
        if self.by_path.get(&key) == Some(wd) {
            self.by_path.remove(&key);
        }
        Some(key)
    }

    /// Forgets the watches at `path` and below, returning their descriptors.
    pub fn remove_subtree(&mut self, branch: usize, path: &Path) -> Vec<W> {
        let keys = self.subtree_keys(branch, path);
        keys.into_iter()
            .filter_map(|key| {
                let wd = self.by_path.remove(&key)?;
                self.by_wd.remove(&wd);
                Some(wd)
            })
            .collect()
    }

    /// A directory moved from `from` to `to` within `branch`: every watch at
    /// or below it now reports under the new path.
    pub fn rename_subtree(&mut self, branch: usize, from: &Path, to: &Path) {
        let moved: Vec<(PathBuf, W)> = self
            .subtree_keys(branch, from)
            .into_iter()
            .filter_map(|key| {
                let wd = self.by_path.remove(&key)?;
                Some((key.1, wd))
            })
            .collect();
        for (path, wd) in moved {
            let rest = path.strip_prefix(from).expect("subtree path");
            let new = if rest.as_os_str().is_empty() {
                to.to_path_buf()
            } else {
                to.join(rest)
            };
            self.insert(wd, branch, new);
        }
    }

    /// Every descriptor, for a sweep after a rescan.
    pub fn wds(&self) -> Vec<W> {
        self.by_wd.keys().cloned().collect()
    }

    fn subtree_keys(&self, branch: usize, path: &Path) -> Vec<(usize, PathBuf)> {
        self.by_path
            .range((branch, path.to_path_buf())..)
            .take_while(|((b, p), _)| *b == branch && p.starts_with(path))
            .map(|(key, _)| key.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(paths: &[(i32, &str)]) -> WatchTable<i32> {
        let mut t = WatchTable::default();
        for &(wd, path) in paths {
            t.insert(wd, 0, PathBuf::from(path));
        }
        t
    }

    fn path_of(t: &WatchTable<i32>, wd: i32) -> Option<PathBuf> {
        t.get(&wd).map(|(_, p)| p.clone())
    }

    #[test]
    fn a_directory_rename_moves_every_watch_below_it() {
        let mut t = table(&[
            (1, ""),
            (2, "a"),
            (3, "a/b"),
            (4, "a/b/c"),
            (5, "ab"),
            (6, "a-b"),
        ]);
        t.rename_subtree(0, "a".as_ref(), "x/y".as_ref());
        assert_eq!(path_of(&t, 2), Some(PathBuf::from("x/y")));
        assert_eq!(path_of(&t, 3), Some(PathBuf::from("x/y/b")));
        assert_eq!(path_of(&t, 4), Some(PathBuf::from("x/y/b/c")));
        assert_eq!(path_of(&t, 5), Some(PathBuf::from("ab")));
        assert_eq!(path_of(&t, 6), Some(PathBuf::from("a-b")));
        assert_eq!(t.wd_at(0, "x/y/b".as_ref()), Some(&3));
        assert_eq!(t.wd_at(0, "a/b".as_ref()), None);
        assert_eq!(t.len(), 6);
    }

    #[test]
    fn removing_a_subtree_leaves_its_neighbours() {
        let mut t = table(&[(1, ""), (2, "a"), (3, "a/b"), (5, "ab")]);
        let mut gone = t.remove_subtree(0, "a".as_ref());
        gone.sort();
        assert_eq!(gone, vec![2, 3]);
        assert_eq!(t.len(), 2);
        assert_eq!(path_of(&t, 5), Some(PathBuf::from("ab")));
    }

    #[test]
    fn a_stale_ignored_leaves_the_new_watch_at_the_same_path() {
        let mut t = table(&[(1, ""), (2, "a")]);
        // "a" was deleted and made again before IN_IGNORED for 2 was read.
        assert_eq!(t.insert(7, 0, PathBuf::from("a")), Some(2));
        assert_eq!(t.remove_wd(&2), None);
        assert_eq!(t.wd_at(0, "a".as_ref()), Some(&7));
        assert_eq!(t.remove_wd(&7), Some((0, PathBuf::from("a"))));
        assert_eq!(t.wd_at(0, "a".as_ref()), None);
    }

    #[test]
    fn the_same_descriptor_at_a_new_path_moves() {
        let mut t = table(&[(1, ""), (2, "a")]);
        assert_eq!(t.insert(2, 0, PathBuf::from("b")), None);
        assert_eq!(t.wd_at(0, "a".as_ref()), None);
        assert_eq!(path_of(&t, 2), Some(PathBuf::from("b")));
        assert_eq!(t.len(), 2);
    }
}
