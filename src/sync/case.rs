//! Names that differ only in case, as plain data. A case-insensitive cloud
//! (OneDrive, Dropbox …) stores `Photo.jpg` and `photo.jpg` as one object,
//! so two such names in one directory of a branch must never both be sent
//! to it: the second would overwrite the first there, and a restore would
//! bring back one of them. This module finds such names in a branch
//! directory (the local disk tells them apart) and says which of them keeps
//! its place; the engine holds back the others and the service moves them
//! to another branch.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::path::{Component, Path, PathBuf};

use super::is_local_only;

/// The key under which a case-insensitive store takes two names for one.
/// Clouds differ in the details (Unicode case folding, normalisation); a
/// lowercase comparison catches the clashes that happen in practice.
pub fn fold(name: &OsStr) -> Vec<u8> {
    match name.to_str() {
        Some(text) => text.to_lowercase().into_bytes(),
        None => name.as_encoded_bytes().to_ascii_lowercase(),
    }
}

/// Names of one directory of a branch that fold to the same key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clash {
    /// The directory, relative to the branch root (`""`: the root).
    pub dir: PathBuf,
    /// Every spelling the directory holds, sorted bytewise.
    pub names: Vec<OsString>,
}

impl Clash {
    /// The name that keeps its place on the cloud: the one the remote
    /// directory already lists (`listed`), else the first bytewise. The
    /// first of two new names is as good as the other, and the choice must
    /// come out the same each time it is made.
    pub fn keeper(&self, listed: &[String]) -> &OsStr {
        self.names
            .iter()
            .find(|name| name.to_str().is_some_and(|n| listed.iter().any(|l| l == n)))
            .unwrap_or(&self.names[0])
    }

    /// The names held back, relative to the branch root.
    pub fn held(&self, listed: &[String]) -> Vec<PathBuf> {
        let keeper = self.keeper(listed);
        self.names
            .iter()
            .filter(|name| name.as_os_str() != keeper)
            .map(|name| self.dir.join(name))
            .collect()
    }

    /// The spelling of the clash's name that `path` (relative to the branch
    /// root) goes through, if it goes through this directory.
    pub fn spelling_in<'a>(&self, path: &'a Path) -> Option<&'a OsStr> {
        let rest = path.strip_prefix(&self.dir).ok()?;
        match rest.components().next() {
            Some(Component::Normal(name)) => Some(name),
            _ => None,
        }
    }
}

/// Each directory's clashing names, read once per directory: a batch of
/// uploads into one directory reads it once.
#[derive(Debug, Default)]
pub struct DirGroups {
    read: HashMap<PathBuf, Vec<Vec<OsString>>>,
}

impl DirGroups {
    /// The groups of names in `dir` (relative to `root`) that fold alike;
    /// a directory that cannot be read has none.
    fn of(&mut self, root: &Path, dir: &Path) -> &[Vec<OsString>] {
        self.read
            .entry(dir.to_path_buf())
            .or_insert_with(|| read_groups(root, dir))
    }
}

fn read_groups(root: &Path, dir: &Path) -> Vec<Vec<OsString>> {
    let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
        return Vec::new();
    };
    group(dir, entries.flatten().map(|e| e.file_name()))
}

/// The names of directory `dir` that fold alike, in groups of two or
/// more, each sorted.
fn group(dir: &Path, names: impl Iterator<Item = OsString>) -> Vec<Vec<OsString>> {
    let mut by_key: HashMap<Vec<u8>, Vec<OsString>> = HashMap::new();
    for name in names {
        if is_local_only(&dir.join(&name)) {
            continue;
        }
        by_key.entry(fold(&name)).or_default().push(name);
    }
    let mut groups: Vec<Vec<OsString>> = by_key
        .into_values()
        .filter(|names| names.len() > 1)
        .collect();
    for names in &mut groups {
        names.sort();
    }
    groups
}

/// The clashes `relative` (a path of the branch rooted at `root`) is part
/// of, from the top down: one for each of its components that another
/// name in the same directory differs from only in case.
pub fn clashes_on_path(root: &Path, relative: &Path, groups: &mut DirGroups) -> Vec<Clash> {
    let mut clashes = Vec::new();
    let mut dir = PathBuf::new();
    for part in relative.components() {
        let Component::Normal(name) = part else {
            break;
        };
        if let Some(names) = groups
            .of(root, &dir)
            .iter()
            .find(|names| names.iter().any(|n| n == name))
        {
            clashes.push(Clash {
                dir: dir.clone(),
                names: names.clone(),
            });
        }
        dir.push(name);
    }
    clashes
}

/// Whether the branch rooted at `root` holds, in one of the directories
/// `relative` goes through, a name that differs only in case from
/// `relative`'s own there: `relative` moved in would clash with it.
pub fn has_rival(root: &Path, relative: &Path) -> bool {
    let mut dir = root.to_path_buf();
    for part in relative.components() {
        let Component::Normal(name) = part else {
            return false;
        };
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return false;
        };
        let key = fold(name);
        if entries
            .flatten()
            .any(|e| e.file_name() != name && fold(&e.file_name()) == key)
        {
            return true;
        }
        dir.push(name);
    }
    false
}

/// Every clash inside the directory `below` of the branch rooted at `root`
/// (`""`: the whole branch), never through a symlink.
pub fn clashes_below(root: &Path, below: &Path) -> Vec<Clash> {
    let mut clashes = Vec::new();
    let mut dirs = vec![below.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(root.join(&dir)) else {
            continue;
        };
        let mut names = Vec::new();
        for entry in entries.flatten() {
            let relative = dir.join(entry.file_name());
            if !is_local_only(&relative) && entry.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.push(relative);
            }
            names.push(entry.file_name());
        }
        clashes.extend(
            group(&dir, names.into_iter())
                .into_iter()
                .map(|names| Clash {
                    dir: dir.clone(),
                    names,
                }),
        );
    }
    clashes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(paths: &[&str]) -> tempfile::TempDir {
        let root = tempfile::tempdir().expect("temp dir");
        for path in paths {
            let path = root.path().join(path);
            if let Some(dir) = path.to_str().and_then(|p| p.strip_suffix('/')) {
                std::fs::create_dir_all(dir).expect("dir");
            } else {
                std::fs::create_dir_all(path.parent().expect("parent")).expect("dir");
                std::fs::write(&path, b"x").expect("file");
            }
        }
        root
    }

    #[test]
    fn names_fold_to_one_key_whatever_their_case() {
        assert_eq!(fold(OsStr::new("Photo.JPG")), fold(OsStr::new("photo.jpg")));
        assert_eq!(fold(OsStr::new("ÉTÉ")), fold(OsStr::new("été")));
        assert_ne!(fold(OsStr::new("photo1")), fold(OsStr::new("photo2")));
    }

    #[test]
    fn the_listed_name_keeps_its_place_else_the_first() {
        let clash = Clash {
            dir: PathBuf::from("d"),
            names: vec!["Photo.jpg".into(), "photo.jpg".into()],
        };
        assert_eq!(clash.keeper(&[]), "Photo.jpg");
        assert_eq!(clash.held(&[]), [PathBuf::from("d/photo.jpg")]);
        let listed = ["photo.jpg".to_owned(), "other".to_owned()];
        assert_eq!(clash.keeper(&listed), "photo.jpg");
        assert_eq!(clash.held(&listed), [PathBuf::from("d/Photo.jpg")]);
    }

    #[test]
    fn a_path_clashes_where_any_of_its_directories_does() {
        let root = tree(&["Docs/a", "docs/b", "docs/B", "Docs/c", "x/y"]);
        let mut groups = DirGroups::default();
        let on_b = clashes_on_path(root.path(), Path::new("docs/b"), &mut groups);
        assert_eq!(on_b.len(), 2);
        assert_eq!(on_b[0].dir, PathBuf::new());
        assert_eq!(on_b[0].names, ["Docs", "docs"]);
        assert_eq!(
            on_b[0].spelling_in(Path::new("docs/b")),
            Some(OsStr::new("docs"))
        );
        assert_eq!(on_b[1].dir, PathBuf::from("docs"));
        assert_eq!(on_b[1].names, ["B", "b"]);
        assert_eq!(
            clashes_on_path(root.path(), Path::new("Docs/c"), &mut groups).len(),
            1
        );
        assert!(clashes_on_path(root.path(), Path::new("x/y"), &mut groups).is_empty());
    }

    #[test]
    fn a_name_has_a_rival_where_another_spelling_is_there() {
        let root = tree(&["Photo.jpg", "docs/a", "x/"]);
        assert!(has_rival(root.path(), Path::new("photo.jpg")));
        assert!(!has_rival(root.path(), Path::new("Photo.jpg")));
        assert!(has_rival(root.path(), Path::new("Docs/b")));
        assert!(!has_rival(root.path(), Path::new("docs/b")));
        assert!(!has_rival(root.path(), Path::new("new/deeper/name")));
    }

    #[test]
    fn a_tree_lists_each_clash_once_and_local_names_never() {
        let root = tree(&["A/", "a/", "a/f", "a/F", "n", ".msync/x", ".MSYNC/y"]);
        let mut clashes = clashes_below(root.path(), Path::new(""));
        clashes.sort_by(|a, b| a.dir.cmp(&b.dir));
        assert_eq!(clashes.len(), 2, "{clashes:?}");
        assert_eq!(clashes[0].names, ["A", "a"]);
        assert_eq!(clashes[1].dir, PathBuf::from("a"));
        assert_eq!(clashes[1].names, ["F", "f"]);
        assert_eq!(clashes_below(root.path(), Path::new("a")).len(), 1);
    }
}
