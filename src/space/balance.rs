//! Planning `msync balance` as plain data: which files move from which
//! branch to which, so every cloud ends within a band of fill ratios, or
//! so one branch is emptied (`--evacuate`). No I/O: the command gathers
//! the clouds and files, runs the plan and carries it out.

use std::collections::BTreeSet;
use std::path::PathBuf;

/// One branch as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shelf {
    pub name: String,
    /// The cloud's usable size (its size or quota).
    pub size: u64,
    /// Bytes used on it now.
    pub used: u64,
    /// Room that must stay free.
    pub reserve: u64,
    /// The files of the branch, with their sizes.
    pub files: Vec<(PathBuf, u64)>,
    /// Takes no files (retired, or being evacuated).
    pub closed: bool,
}

impl Shelf {
    fn fill(&self) -> f64 {
        if self.size == 0 {
            1.0
        } else {
            self.used as f64 / self.size as f64
        }
    }

    fn room(&self) -> u64 {
        self.size
            .saturating_sub(self.reserve)
            .saturating_sub(self.used)
    }
}

/// One file to move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    pub from: usize,
    pub to: usize,
    pub path: PathBuf,
    pub bytes: u64,
}

/// What a plan leaves undone, if anything.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub moves: Vec<Move>,
    /// Fill ratios before and after, per branch.
    pub before: Vec<f64>,
    pub after: Vec<f64>,
    /// Files of an evacuated branch that fit nowhere.
    pub stranded: Vec<PathBuf>,
}

impl Plan {
    pub fn bytes(&self) -> u64 {
        self.moves.iter().map(|m| m.bytes).sum()
    }
}

/// The spread of fill ratios among the open branches.
pub fn spread(fills: &[f64], shelves: &[Shelf]) -> f64 {
    let open = fills
        .iter()
        .zip(shelves)
        .filter(|(_, s)| !s.closed)
        .map(|(f, _)| *f);
    let (low, high) = open.fold((f64::MAX, f64::MIN), |(l, h), f| (l.min(f), h.max(f)));
    if low > high { 0.0 } else { high - low }
}

/// Moves that bring every open branch's fill within `band` (a share, e.g.
/// 0.10) of the others, largest fitting file first from the fullest cloud
/// to the emptiest, never past a cloud's reserve. A path that more than
/// one branch holds never moves.
pub fn level(mut shelves: Vec<Shelf>, band: f64) -> Plan {
    let before: Vec<f64> = shelves.iter().map(Shelf::fill).collect();
    let mut moves = Vec::new();
    let names = all_paths(&shelves);
    for shelf in &mut shelves {
        // Smallest first, so the largest is popped first below.
        shelf
            .files
            .sort_by_key(|(path, bytes)| (*bytes, path.clone()));
    }
    loop {
        let fills: Vec<f64> = shelves.iter().map(Shelf::fill).collect();
        if spread(&fills, &shelves) <= band {
            break;
        }
        let open: Vec<usize> = (0..shelves.len()).filter(|&i| !shelves[i].closed).collect();
        let fullest = *open
            .iter()
            .max_by(|&&a, &&b| fills[a].total_cmp(&fills[b]))
            .expect("a spread needs open branches");
        let emptiest = *open
            .iter()
            .min_by(|&&a, &&b| fills[a].total_cmp(&fills[b]))
            .expect("a spread needs open branches");
        // The bytes that would leave both at the same fill.
        let (f, e) = (&shelves[fullest], &shelves[emptiest]);
        let ideal = ((f.used as f64 * e.size as f64 - e.used as f64 * f.size as f64)
            / (e.size as f64 + f.size as f64))
            .max(0.0) as u64;
        let limit = ideal.min(e.room());
        let pick = f
            .files
            .iter()
            .rposition(|(path, bytes)| *bytes <= limit && !names.contains_twice(path));
        let Some(index) = pick else {
            break;
        };
        let (path, bytes) = shelves[fullest].files.remove(index);
        shelves[fullest].used -= bytes;
        shelves[emptiest].used += bytes;
        moves.push(Move {
            from: fullest,
            to: emptiest,
            path,
            bytes,
        });
    }
    Plan {
        moves,
        before,
        after: shelves.iter().map(Shelf::fill).collect(),
        stranded: Vec::new(),
    }
}

/// Moves that empty branch `from` into the others, each file to the least
/// full cloud with room for it, largest first. What fits nowhere (or has
/// a namesake in another branch) is left and listed.
pub fn evacuate(mut shelves: Vec<Shelf>, from: usize) -> Plan {
    let before: Vec<f64> = shelves.iter().map(Shelf::fill).collect();
    shelves[from].closed = true;
    let mut files = std::mem::take(&mut shelves[from].files);
    files.sort_by_key(|(path, bytes)| (std::cmp::Reverse(*bytes), path.clone()));
    let names = all_paths(&shelves);
    let mut moves = Vec::new();
    let mut stranded = Vec::new();
    for (path, bytes) in files {
        let target = (0..shelves.len())
            .filter(|&i| i != from && !shelves[i].closed && shelves[i].room() >= bytes)
            .filter(|_| !names.contains(&path))
            .min_by(|&a, &b| shelves[a].fill().total_cmp(&shelves[b].fill()));
        match target {
            Some(to) => {
                shelves[to].used += bytes;
                shelves[from].used = shelves[from].used.saturating_sub(bytes);
                moves.push(Move {
                    from,
                    to,
                    path,
                    bytes,
                });
            }
            None => stranded.push(path),
        }
    }
    Plan {
        moves,
        before,
        after: shelves.iter().map(Shelf::fill).collect(),
        stranded,
    }
}

/// Paths and how many branches hold each.
struct Names(std::collections::BTreeMap<PathBuf, usize>);

impl Names {
    fn contains(&self, path: &PathBuf) -> bool {
        self.0.contains_key(path)
    }

    fn contains_twice(&self, path: &PathBuf) -> bool {
        self.0.get(path).is_some_and(|&n| n > 1)
    }
}

fn all_paths(shelves: &[Shelf]) -> Names {
    let mut names = std::collections::BTreeMap::new();
    for shelf in shelves {
        let unique: BTreeSet<&PathBuf> = shelf.files.iter().map(|(p, _)| p).collect();
        for path in unique {
            *names.entry(path.clone()).or_insert(0) += 1;
        }
    }
    Names(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const MIB: u64 = 1 << 20;

    fn shelf(name: &str, size_mib: u64, files: &[u64]) -> Shelf {
        let files: Vec<(PathBuf, u64)> = files
            .iter()
            .enumerate()
            .map(|(i, mib)| (PathBuf::from(format!("{name}/{i}")), mib * MIB))
            .collect();
        Shelf {
            name: name.into(),
            size: size_mib * MIB,
            used: files.iter().map(|(_, b)| b).sum(),
            reserve: size_mib * MIB / 50,
            files,
            closed: false,
        }
    }

    #[test]
    fn ninety_five_ten_ten_ends_within_the_band() {
        let shelves = vec![
            shelf("a", 100, &[5; 19]),
            shelf("b", 100, &[5, 5]),
            shelf("c", 200, &[5; 4]),
        ];
        let plan = level(shelves.clone(), 0.15);
        let before = spread(&plan.before, &shelves);
        let after = spread(&plan.after, &shelves);
        assert!(before > 0.8, "{before}");
        assert!(after <= 0.15, "{:?}", plan.after);
        assert!(plan.moves.iter().all(|m| m.from == 0));
        // Nothing moved twice, nothing past a reserve.
        let paths: BTreeSet<_> = plan.moves.iter().map(|m| &m.path).collect();
        assert_eq!(paths.len(), plan.moves.len());
        assert!(plan.after.iter().all(|f| *f <= 0.98));
    }

    #[test]
    fn a_balanced_pool_moves_nothing() {
        let shelves = vec![shelf("a", 100, &[10, 10]), shelf("b", 200, &[20, 20])];
        assert!(level(shelves, 0.10).moves.is_empty());
    }

    #[test]
    fn files_bigger_than_any_gap_stay() {
        // One huge file cannot even things out: moving it would only swap
        // which cloud is full.
        let shelves = vec![shelf("a", 100, &[90]), shelf("b", 100, &[])];
        let plan = level(shelves, 0.10);
        assert!(plan.moves.is_empty(), "{plan:?}");
    }

    #[test]
    fn evacuation_spreads_by_room_and_lists_what_fits_nowhere() {
        let shelves = vec![
            shelf("old", 100, &[30, 20, 10, 5]),
            shelf("b", 50, &[10]),
            shelf("c", 100, &[50]),
        ];
        let plan = evacuate(shelves, 0);
        assert_eq!(plan.after[0], 0.0);
        assert!(plan.stranded.is_empty(), "{plan:?}");
        assert_eq!(plan.bytes(), 65 * MIB);
        assert!(plan.moves.iter().all(|m| m.from == 0 && m.to != 0));

        let full = vec![shelf("old", 100, &[60]), shelf("b", 50, &[10])];
        let plan = evacuate(full, 0);
        assert_eq!(plan.stranded, [PathBuf::from("old/0")]);
    }

    #[test]
    fn a_name_held_by_two_branches_never_moves() {
        let mut a = shelf("a", 100, &[5; 18]);
        let b = shelf("b", 100, &[]);
        a.files[17].0 = PathBuf::from("shared");
        let mut b = b;
        b.files.push((PathBuf::from("shared"), MIB));
        b.used = MIB;
        let plan = level(vec![a, b], 0.10);
        assert!(!plan.moves.is_empty());
        assert!(plan.moves.iter().all(|m| m.path != Path::new("shared")));
    }
}
