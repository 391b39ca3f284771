//! The debouncer driven with synthetic events and made-up instants.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::{Debouncer, PROBE_FIRST, RawEvent, RawKind};
use crate::watch::{Change, ChangeKind};

const D: Duration = Duration::from_millis(1000);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A debouncer and a clock origin; events go to branch 0 unless said.
struct Bench {
    d: Debouncer,
    t0: Instant,
}

impl Bench {
    fn new() -> Bench {
        Bench {
            d: Debouncer::new(D),
            t0: Instant::now(),
        }
    }

    fn at(&self, offset: Duration) -> Instant {
        self.t0 + offset
    }

    fn add(&mut self, offset: Duration, path: &str, kind: RawKind) {
        let now = self.at(offset);
        self.d.add_event(
            RawEvent {
                branch: 0,
                path: PathBuf::from(path),
                kind,
            },
            now,
        );
    }

    fn due(&mut self, offset: Duration) -> Vec<Change> {
        let now = self.at(offset);
        self.d.drain_due(now)
    }
}

fn change(path: &str, kind: ChangeKind) -> Change {
    let is_dir = matches!(kind, ChangeKind::DirCreate | ChangeKind::DirDelete);
    Change {
        branch: 0,
        path: PathBuf::from(path),
        kind,
        is_dir,
    }
}

fn write(path: &str) -> Change {
    change(path, ChangeKind::Write)
}

fn rename(from: &str, to: &str, is_dir: bool) -> Change {
    Change {
        branch: 0,
        path: PathBuf::from(to),
        kind: ChangeKind::Rename {
            from: PathBuf::from(from),
        },
        is_dir,
    }
}

fn renamed(from: &str, is_dir: bool) -> RawKind {
    RawKind::Renamed {
        from: PathBuf::from(from),
        is_dir,
    }
}

#[test]
fn a_closed_file_is_due_after_the_debounce() {
    let mut b = Bench::new();
    b.add(ms(0), "f", RawKind::Modified);
    b.add(ms(10), "f", RawKind::Closed);
    assert_eq!(b.d.next_deadline(), Some(b.at(ms(10) + D)));
    assert!(b.due(ms(10) + D - ms(1)).is_empty());
    assert_eq!(b.due(ms(10) + D), vec![write("f")]);
    assert_eq!(b.d.pending(), 0);
    assert!(b.due(ms(10) + 5 * D).is_empty());
}

#[test]
fn repeated_writes_coalesce_and_restart_the_timer() {
    let mut b = Bench::new();
    for i in 0..5 {
        b.add(ms(i * 300), "f", RawKind::Modified);
        b.add(ms(i * 300 + 100), "f", RawKind::Closed);
        assert!(b.due(ms(i * 300 + 200)).is_empty());
    }
    assert_eq!(b.d.pending(), 1);
    // The last close was at 1300 ms.
    assert!(b.due(ms(1300) + D - ms(1)).is_empty());
    assert_eq!(b.due(ms(1300) + D), vec![write("f")]);
}

#[test]
fn a_modification_without_a_close_is_never_due() {
    let mut b = Bench::new();
    b.add(ms(0), "f", RawKind::Modified);
    // Only a probe is scheduled: no change falls due by time.
    assert_eq!(b.d.next_deadline(), Some(b.at(PROBE_FIRST)));
    assert!(b.due(Duration::from_secs(3600)).is_empty());
    assert_eq!(b.d.pending(), 1);
    // A close that was due is held again by a later modification.
    b.add(ms(10), "g", RawKind::Closed);
    b.add(ms(20), "g", RawKind::Modified);
    assert_eq!(b.d.next_deadline(), Some(b.at(PROBE_FIRST)));
    assert!(b.due(Duration::from_secs(3600)).is_empty());
}

#[test]
fn a_slow_writer_yields_one_write_after_its_close() {
    let mut b = Bench::new();
    b.add(ms(0), "big", RawKind::Modified);
    // Writes with pauses longer than the debounce.
    for step in 1..=4 {
        assert!(b.due(ms(step * 1500 - 1)).is_empty(), "step {step}");
        b.add(ms(step * 1500), "big", RawKind::Modified);
    }
    assert!(b.due(ms(7000)).is_empty());
    b.add(ms(7000), "big", RawKind::Closed);
    assert!(b.due(ms(7000) + D - ms(1)).is_empty());
    assert_eq!(b.due(ms(7000) + D), vec![write("big")]);
    assert!(b.due(ms(20_000)).is_empty());
}

#[test]
fn a_write_then_a_delete_reports_only_the_delete() {
    let mut b = Bench::new();
    b.add(ms(0), "f", RawKind::Closed);
    b.add(ms(10), "f", RawKind::Deleted { is_dir: false });
    assert_eq!(b.d.pending(), 1);
    assert_eq!(b.due(ms(10) + D), vec![change("f", ChangeKind::Delete)]);
}

#[test]
fn a_delete_then_a_new_write_reports_only_the_write() {
    let mut b = Bench::new();
    b.add(ms(0), "f", RawKind::Deleted { is_dir: false });
    b.add(ms(10), "f", RawKind::Modified);
    b.add(ms(20), "f", RawKind::Closed);
    assert_eq!(b.due(ms(20) + D), vec![write("f")]);
}

#[test]
fn deleting_a_directory_drops_pending_work_below_it() {
    let mut b = Bench::new();
    b.add(ms(0), "d", RawKind::DirCreated);
    b.add(ms(0), "d/f", RawKind::Closed);
    b.add(ms(5), "d/f", RawKind::Deleted { is_dir: false });
    b.add(ms(6), "d", RawKind::Deleted { is_dir: true });
    assert_eq!(
        b.d.drain_all(),
        vec![
            change("d/f", ChangeKind::Delete),
            change("d", ChangeKind::DirDelete)
        ]
    );
}

#[test]
fn a_rename_is_due_at_once_and_goes_before_the_write_it_rekeyed() {
    let mut b = Bench::new();
    b.add(ms(0), "a", RawKind::Modified);
    b.add(ms(10), "a", RawKind::Closed);
    b.add(ms(20), "b", renamed("a", false));
    assert_eq!(b.d.next_deadline(), Some(b.at(ms(20))));
    assert_eq!(b.due(ms(20)), vec![rename("a", "b", false)]);
    // The re-keyed write keeps its own timer (from the close at 10 ms).
    assert!(b.due(ms(10) + D - ms(1)).is_empty());
    assert_eq!(b.due(ms(10) + D), vec![write("b")]);
}

#[test]
fn drain_all_puts_the_rename_before_the_rekeyed_write() {
    let mut b = Bench::new();
    b.add(ms(0), "a", RawKind::Modified);
    b.add(ms(20), "b", renamed("a", false));
    assert_eq!(b.d.drain_all(), vec![rename("a", "b", false), write("b")]);
}

#[test]
fn a_directory_rename_rekeys_everything_below_it() {
    let mut b = Bench::new();
    b.add(ms(0), "d/x", RawKind::Closed);
    b.add(ms(0), "d/sub/y", RawKind::Modified);
    b.add(ms(0), "d/sub/new", RawKind::DirCreated);
    b.add(ms(1), "d/gone", RawKind::Deleted { is_dir: false });
    b.add(ms(0), "dx/z", RawKind::Closed);
    b.add(ms(5), "e", renamed("d", true));
    // The delete is an operation on the old layout: it goes first.
    assert_eq!(
        b.due(ms(5)),
        vec![change("d/gone", ChangeKind::Delete), rename("d", "e", true)]
    );
    assert_eq!(
        b.due(ms(5) + D),
        vec![
            write("dx/z"),
            write("e/x"),
            change("e/sub/new", ChangeKind::DirCreate)
        ]
    );
    // Still open: held until its close.
    assert_eq!(b.d.drain_all(), vec![write("e/sub/y")]);
}

#[test]
fn a_rename_onto_a_pending_write_replaces_it() {
    let mut b = Bench::new();
    b.add(ms(0), "target", RawKind::Closed);
    b.add(ms(0), "tmp", RawKind::Closed);
    b.add(ms(5), "target", renamed("tmp", false));
    assert_eq!(
        b.d.drain_all(),
        vec![rename("tmp", "target", false), write("target")]
    );
}

#[test]
fn a_pending_delete_at_the_target_goes_before_the_rename() {
    let mut b = Bench::new();
    b.add(ms(0), "b", RawKind::Deleted { is_dir: false });
    b.add(ms(5), "b", renamed("a", false));
    assert_eq!(
        b.due(ms(5)),
        vec![change("b", ChangeKind::Delete), rename("a", "b", false)]
    );
}

#[test]
fn renames_in_a_row_keep_their_order() {
    let mut b = Bench::new();
    b.add(ms(0), "b", renamed("a", false));
    b.add(ms(0), "c", renamed("b", false));
    b.add(ms(0), "a", renamed("c", false));
    assert_eq!(
        b.due(ms(0)),
        vec![
            rename("a", "b", false),
            rename("b", "c", false),
            rename("c", "a", false)
        ]
    );
}

#[test]
fn unpaired_moves_are_a_delete_and_a_write() {
    // The watcher turns a move out of the tree into Deleted and a move in
    // into Closed (or DirCreated plus a scan): see pairing.rs for the halves.
    let mut b = Bench::new();
    b.add(ms(0), "out", RawKind::Modified);
    b.add(ms(100), "out", RawKind::Deleted { is_dir: false });
    b.add(ms(100), "in", RawKind::Closed);
    b.add(ms(100), "dir-in", RawKind::DirCreated);
    b.add(ms(100), "dir-in/f", RawKind::Found);
    assert_eq!(
        b.due(ms(100) + D),
        vec![
            change("out", ChangeKind::Delete),
            write("in"),
            change("dir-in", ChangeKind::DirCreate),
            write("dir-in/f")
        ]
    );
}

#[test]
fn a_directory_goes_out_before_the_files_inside_it() {
    let mut b = Bench::new();
    b.add(ms(0), "d", RawKind::DirCreated);
    b.add(ms(1), "d/f", RawKind::Closed);
    // A scan reports the directory again, restarting its timer.
    b.add(ms(500), "d", RawKind::DirCreated);
    assert_eq!(
        b.due(ms(1) + D),
        vec![change("d", ChangeKind::DirCreate), write("d/f")]
    );
    assert_eq!(b.d.pending(), 0);
}

#[test]
fn a_scan_does_not_hurry_a_file_still_being_written() {
    let mut b = Bench::new();
    b.add(ms(0), "d/f", RawKind::Modified);
    b.add(ms(1), "d/f", RawKind::Found);
    assert_eq!(b.d.next_deadline(), Some(b.at(PROBE_FIRST)));
    b.add(ms(2), "d/g", RawKind::Found);
    assert_eq!(b.due(ms(2) + D), vec![write("d/g")]);
}

#[test]
fn branches_are_kept_apart() {
    let mut b = Bench::new();
    b.add(ms(0), "f", RawKind::Closed);
    b.d.add_event(
        RawEvent {
            branch: 1,
            path: PathBuf::from("f"),
            kind: RawKind::Deleted { is_dir: false },
        },
        b.at(ms(0)),
    );
    let mut other = change("f", ChangeKind::Delete);
    other.branch = 1;
    assert_eq!(b.due(D), vec![write("f"), other]);
}

#[test]
fn next_deadline_follows_the_earliest_timer() {
    let mut b = Bench::new();
    assert_eq!(b.d.next_deadline(), None);
    b.add(ms(50), "late", RawKind::Closed);
    b.add(ms(10), "early", RawKind::Closed);
    b.add(ms(0), "open", RawKind::Modified);
    // The open file's probe comes first; once it found the file still
    // open, the next probe is later than the closed files' timers.
    assert_eq!(b.d.next_deadline(), Some(b.at(PROBE_FIRST)));
    b.d.probed(0, "open".into(), true, b.at(PROBE_FIRST));
    assert_eq!(b.d.next_deadline(), Some(b.at(ms(10) + D)));
    b.add(ms(60), "x", renamed("y", false));
    assert_eq!(b.d.next_deadline(), Some(b.at(ms(60))));
    b.due(ms(60));
    assert_eq!(b.d.next_deadline(), Some(b.at(ms(10) + D)));
    b.due(ms(50) + D);
    // The open file's next probe is all that is left.
    assert_eq!(b.d.next_deadline(), Some(b.at(PROBE_FIRST * 3)));
    assert_eq!(b.d.pending(), 1);
}

#[test]
fn drain_all_empties_everything_in_order() {
    let mut b = Bench::new();
    b.add(ms(0), "open", RawKind::Modified);
    b.add(ms(1), "d", RawKind::DirCreated);
    b.add(ms(2), "gone", RawKind::Deleted { is_dir: false });
    assert_eq!(
        b.d.drain_all(),
        vec![
            write("open"),
            change("d", ChangeKind::DirCreate),
            change("gone", ChangeKind::Delete)
        ]
    );
    assert_eq!(b.d.pending(), 0);
    assert_eq!(b.d.next_deadline(), None);
    assert!(b.d.drain_all().is_empty());
}

#[test]
fn a_held_file_nobody_writes_is_probed_then_sent() {
    let mut b = Bench::new();
    // A hard link whose other name was unlinked before the watcher looked:
    // it appears as a new file, and no close ever follows.
    b.add(ms(0), "objects/ab/cdef", RawKind::Modified);
    assert!(b.due(ms(10_000)).is_empty());
    let probe_at = b.d.next_deadline().expect("a probe is scheduled");
    assert_eq!(probe_at, b.at(PROBE_FIRST));
    let due = b.d.due_probes(probe_at);
    assert_eq!(due, [(0, PathBuf::from("objects/ab/cdef"))]);
    b.d.probed(0, due[0].1.clone(), false, probe_at);
    assert!(b.d.due_probes(probe_at + ms(60_000)).is_empty());
    assert_eq!(
        b.d.drain_due(probe_at + D),
        [change("objects/ab/cdef", ChangeKind::Write)]
    );
}

#[test]
fn a_held_file_still_open_is_probed_less_and_less_often() {
    let mut b = Bench::new();
    b.add(ms(0), "app.log", RawKind::Modified);
    let mut at = b.at(PROBE_FIRST);
    let mut gaps = Vec::new();
    for _ in 0..8 {
        let due = b.d.due_probes(at);
        assert_eq!(due.len(), 1);
        b.d.probed(0, due[0].1.clone(), true, at);
        let next = b.d.next_deadline().unwrap();
        gaps.push((next - at).as_secs_f64());
        at = next;
    }
    assert_eq!(gaps, [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]);
    assert!(b.d.drain_due(at).is_empty());
    // Closed at last: sent once, no more probes.
    b.add(ms(500_000), "app.log", RawKind::Closed);
    assert!(b.d.due_probes(b.at(ms(600_000))).is_empty());
    assert_eq!(b.due(ms(600_000)), [change("app.log", ChangeKind::Write)]);
}

#[test]
fn a_held_file_renamed_is_probed_under_its_new_name() {
    let mut b = Bench::new();
    b.add(ms(0), "tmp/1.host", RawKind::Modified);
    b.add(
        ms(10),
        "new/1.host",
        RawKind::Renamed {
            from: "tmp/1.host".into(),
            is_dir: false,
        },
    );
    let due = b.d.due_probes(b.at(ms(10) + PROBE_FIRST));
    assert_eq!(due, [(0, PathBuf::from("new/1.host"))]);
}

fn adaptive() -> Bench {
    Bench {
        d: Debouncer::adaptive(super::QUICK, D),
        t0: Instant::now(),
    }
}

#[test]
fn a_cold_file_goes_out_quickly_and_a_rename_right_after_its_close_is_seen_first() {
    let mut b = adaptive();
    b.add(ms(0), "f", RawKind::Modified);
    b.add(ms(5), "f", RawKind::Closed);
    assert!(b.due(ms(5) + super::QUICK - ms(1)).is_empty());
    assert_eq!(b.due(ms(5) + super::QUICK), vec![write("f")]);
    // An editor's save: the temporary file is renamed a moment after its
    // close, before its quick wait is over; the rename re-keys the write.
    b.add(ms(100), ".f.swp", RawKind::Modified);
    b.add(ms(101), ".f.swp", RawKind::Closed);
    b.add(ms(102), "g", renamed(".f.swp", false));
    assert_eq!(
        b.due(ms(102) + D),
        vec![rename(".f.swp", "g", false), write("g")]
    );
}

#[test]
fn files_a_scan_finds_in_a_new_directory_go_out_quickly_too() {
    // `cp -r`: files written into a directory before its watch existed.
    let mut b = adaptive();
    b.add(ms(0), "d", RawKind::DirCreated);
    b.add(ms(1), "d/f", RawKind::Found);
    assert_eq!(
        b.due(ms(1) + super::QUICK),
        vec![change("d", ChangeKind::DirCreate), write("d/f")]
    );
    // One still being written is held by its own events, as before.
    b.add(ms(50), "d/g", RawKind::Modified);
    b.add(ms(51), "d/g", RawKind::Found);
    assert!(b.due(ms(51) + D).is_empty());
}

#[test]
fn each_close_while_warm_doubles_the_wait_and_a_quiet_file_cools_down() {
    let mut b = adaptive();
    let close = |b: &mut Bench, at: u64| {
        b.add(ms(at), "f", RawKind::Modified);
        b.add(ms(at), "f", RawKind::Closed);
        b.d.next_deadline().unwrap() - b.at(ms(at))
    };
    assert_eq!(close(&mut b, 0), ms(20));
    assert_eq!(b.due(ms(20)), vec![write("f")]);
    assert_eq!(close(&mut b, 100), ms(40));
    assert_eq!(b.due(ms(140)), vec![write("f")]);
    assert_eq!(close(&mut b, 300), ms(80));
    assert_eq!(b.due(ms(380)), vec![write("f")]);
    // Quiet for longer than the debounce: cold again.
    assert_eq!(close(&mut b, 380 + 1001), ms(20));
}

#[test]
fn a_file_rewritten_ten_times_a_second_for_ten_seconds_is_sent_a_few_times_and_last_as_it_ends() {
    let mut b = adaptive();
    let mut sent = Vec::new();
    // Closes every 100 ms for 10 s; the caller drains every 5 ms.
    for step in 0..=2400u64 {
        let at = step * 5;
        if at < 10_000 && at % 100 == 0 {
            b.add(ms(at), "f", RawKind::Modified);
            b.add(ms(at), "f", RawKind::Closed);
        }
        for change in b.due(ms(at)) {
            assert_eq!(change, write("f"));
            sent.push(at);
        }
    }
    assert!(sent.len() <= 15, "sent {} times: {sent:?}", sent.len());
    // The last version (closed at 9,900 ms) goes out once it is quiet.
    let last = *sent.last().unwrap();
    assert!(last > 9_900 && last <= 9_900 + 1_000, "{sent:?}");
    assert_eq!(b.d.pending(), 0);
}
