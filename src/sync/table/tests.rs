//! The path table driven with made-up operations and instants.

use super::*;

fn up(p: &str) -> Op {
    Op::Upload(p.into())
}

fn mv(from: &str, to: &str) -> Op {
    Op::Move {
        from: from.into(),
        to: to.into(),
        is_dir: false,
    }
}

const MAX: Duration = Duration::from_secs(60);

/// Takes single units until nothing is ready, marking each done.
fn drain(table: &mut PathTable, now: Instant) -> Vec<Op> {
    let mut done = Vec::new();
    loop {
        let taken = table.take(now, usize::MAX, 100, |_| true);
        if taken.is_empty() {
            return done;
        }
        for (seq, op) in taken {
            table.succeeded(seq);
            done.push(op);
        }
    }
}

fn ops(taken: &Taken) -> Vec<Op> {
    taken.iter().map(|(_, op)| op.clone()).collect()
}

#[test]
fn repeated_uploads_coalesce() {
    let mut table = PathTable::default();
    table.push(up("a"));
    table.push(up("b"));
    table.push(up("a"));
    assert_eq!(drain(&mut table, Instant::now()), [up("a"), up("b")]);
}

#[test]
fn an_upload_while_one_runs_is_kept_and_waits_for_it() {
    let mut table = PathTable::default();
    let now = Instant::now();
    table.push(up("a"));
    let first = table.take(now, usize::MAX, 100, |_| true);
    table.push(up("a"));
    assert!(table.take(now, usize::MAX, 100, |_| true).is_empty());
    table.succeeded(first[0].0);
    assert_eq!(ops(&table.take(now, usize::MAX, 100, |_| true)), [up("a")]);
}

#[test]
fn a_delete_drops_the_pending_upload() {
    let mut table = PathTable::default();
    table.push(up("a"));
    table.push(up("d/x"));
    table.push(Op::MakeDir("d/e".into()));
    table.push(Op::Delete("a".into()));
    table.push(Op::DeleteDir("d".into()));
    assert_eq!(
        drain(&mut table, Instant::now()),
        [Op::Delete("a".into()), Op::DeleteDir("d".into())]
    );
}

#[test]
fn coalescing_stops_at_a_move() {
    let mut table = PathTable::default();
    table.push(up("a"));
    table.push(mv("a", "b"));
    table.push(up("a"));
    table.push(Op::Delete("a".into()));
    assert_eq!(
        drain(&mut table, Instant::now()),
        [up("a"), mv("a", "b"), Op::Delete("a".into())]
    );
}

#[test]
fn a_failing_path_holds_up_only_what_depends_on_it() {
    let mut table = PathTable::default();
    let now = Instant::now();
    table.push(up("full/big"));
    table.push(mv("full/big", "moved/big"));
    table.push(up("other"));
    table.push(up("full/dir/x"));
    let taken = table.take(now, usize::MAX, 100, |_| true);
    assert_eq!(ops(&taken), [up("full/big")]);
    table.failed(taken[0].0, &Failure::transient("locked"), now, MAX);
    // The move waits behind the failed upload; the unrelated file goes.
    assert_eq!(drain(&mut table, now), [up("other"), up("full/dir/x")]);
    // After the backoff the upload, then the move.
    let later = now + Duration::from_secs(2);
    assert_eq!(
        drain(&mut table, later),
        [up("full/big"), mv("full/big", "moved/big")]
    );
}

#[test]
fn a_directory_goes_before_its_children_and_its_delete_after_them() {
    let mut table = PathTable::default();
    let now = Instant::now();
    table.push(Op::MakeDir("d".into()));
    table.push(up("d/a"));
    table.push(up("e"));
    let first = table.take(now, usize::MAX, 100, |_| true);
    assert_eq!(ops(&first), [Op::MakeDir("d".into())]);
    // d/a waits for its directory; e does not.
    assert_eq!(ops(&table.take(now, usize::MAX, 100, |_| true)), [up("e")]);
    assert!(table.take(now, usize::MAX, 100, |_| true).is_empty());
    table.succeeded(first[0].0);
    assert_eq!(
        ops(&table.take(now, usize::MAX, 100, |_| true)),
        [up("d/a")]
    );
}

#[test]
fn ready_uploads_go_together_whatever_else_is_queued() {
    let mut table = PathTable::default();
    let now = Instant::now();
    table.push(Op::MakeDir("x".into()));
    for name in ["a", "b", "c"] {
        table.push(up(name));
    }
    table.push(mv("q", "r"));
    table.push(up("d"));
    let taken = table.take(now, 3, 100, |_| true);
    assert_eq!(ops(&taken), [up("a"), up("b"), up("c"), up("d")]);
    // Fewer than the burst: one at a time, in order.
    let mut table = PathTable::default();
    table.push(up("a"));
    table.push(up("b"));
    assert_eq!(ops(&table.take(now, 3, 100, |_| true)), [up("a")]);
}

#[test]
fn a_batch_that_failed_splits_into_single_entries() {
    let mut table = PathTable::default();
    let now = Instant::now();
    for name in ["a", "b", "c"] {
        table.push(up(name));
    }
    let batch = table.take(now, 2, 100, |_| true);
    assert_eq!(batch.len(), 3);
    for (seq, _) in &batch {
        table.split(*seq);
    }
    assert_eq!(ops(&table.take(now, 2, 100, |_| true)), [up("a")]);
}

#[test]
fn a_permanent_failure_is_listed_until_the_path_changes() {
    let mut table = PathTable::default();
    let now = Instant::now();
    table.push(up("long"));
    let taken = table.take(now, usize::MAX, 100, |_| true);
    table.failed(taken[0].0, &Failure::permanent("name too long"), now, MAX);
    assert!(table.is_empty());
    let failing = table.failing(now);
    assert_eq!(failing.len(), 1);
    assert_eq!(failing[0].class, PathClass::Failed);
    assert_eq!(failing[0].path, "long");
    table.push(up("long"));
    assert!(table.failing(now).is_empty());
    assert_eq!(table.len(), 1);
}

#[test]
fn a_retrying_path_shows_its_attempts_and_next_try() {
    let mut table = PathTable::default();
    let now = Instant::now();
    table.push(up("busy"));
    for attempt in 1..=3 {
        let at = now + Duration::from_secs(10 * attempt);
        let taken = table.take(at, usize::MAX, 100, |_| true);
        table.failed(taken[0].0, &Failure::transient("being updated"), at, MAX);
    }
    let failing = table.failing(now + Duration::from_secs(30));
    assert_eq!(failing[0].class, PathClass::Retrying);
    assert_eq!(failing[0].attempts, 3);
    assert_eq!(failing[0].next_try_secs, Some(4));
    assert_eq!(table.next_try(), Some(now + Duration::from_secs(34)));
}

#[test]
fn only_what_is_allowed_is_taken() {
    let mut table = PathTable::default();
    let now = Instant::now();
    table.push(up("a"));
    table.push(Op::Delete("b".into()));
    let taken = table.take(now, usize::MAX, 100, |op| !op.sends_bytes());
    assert_eq!(ops(&taken), [Op::Delete("b".into())]);
}

#[test]
fn a_reconcile_takes_the_idle_entries_and_gives_them_back_in_place() {
    let mut table = PathTable::default();
    let now = Instant::now();
    table.push(up("a"));
    let running = table.take(now, usize::MAX, 100, |_| true);
    table.push(up("b"));
    table.push(up("c"));
    let covered = table.take_idle();
    assert_eq!(covered.len(), 2);
    table.push(up("d"));
    table.restore(covered);
    table.succeeded(running[0].0);
    assert_eq!(drain(&mut table, now), [up("b"), up("c"), up("d")]);
}

#[test]
fn backoff_doubles_up_to_the_limit() {
    let steps: Vec<u64> = (1..=8).map(|n| backoff(n, MAX).as_secs()).collect();
    assert_eq!(steps, [1, 2, 4, 8, 16, 32, 60, 60]);
}

#[test]
fn the_counts_follow_every_change_of_state() {
    let mut table = PathTable::default();
    let now = Instant::now();
    table.push(up("a"));
    table.push(up("b"));
    let taken = table.take(now, usize::MAX, 100, |_| true);
    assert_eq!(table.running(), 1);
    table.failed(taken[0].0, &Failure::transient("busy"), now, MAX);
    assert_eq!((table.running(), table.has_retrying()), (0, true));
    let later = now + Duration::from_secs(5);
    let again = table.take(later, usize::MAX, 100, |_| true);
    assert_eq!(ops(&again), [up("a")]);
    table.succeeded(again[0].0);
    assert_eq!((table.running(), table.has_retrying()), (0, false));
    let covered = table.take_idle();
    assert_eq!((table.len(), table.running()), (0, 0));
    table.restore(covered);
    assert!(!table.has_failing());
}

#[test]
fn a_huge_table_is_taken_from_without_scanning_it_whole() {
    let mut table = PathTable::default();
    let now = Instant::now();
    for i in 0..20_000 {
        table.push(Op::Delete(format!("tree/{i}").into()));
    }
    // Each take stops at the lookahead: 20,000 takes stay linear.
    let mut done = 0;
    loop {
        let taken = table.take(now, 8, 1000, |_| true);
        if taken.is_empty() {
            break;
        }
        for (seq, _) in taken {
            table.succeeded(seq);
            done += 1;
        }
    }
    assert_eq!(done, 20_000);
}

#[test]
fn queued_upload_bytes_follow_every_change() {
    let mut table = PathTable::default();
    let now = Instant::now();
    table.push_sized(up("a"), 100);
    table.push_sized(up("b"), 50);
    // The file grew before it was sent: counted once, at its new size.
    table.push_sized(up("a"), 300);
    assert_eq!(table.pending_bytes(), 350);
    // Deleted before it was sent: nothing to send.
    table.push(Op::Delete("b".into()));
    assert_eq!(table.pending_bytes(), 300);
    let covered = table.take_idle();
    assert_eq!((covered.bytes(), table.pending_bytes()), (300, 0));
    table.restore(covered);
    assert_eq!(table.pending_bytes(), 300);
    let taken = table.take(now, usize::MAX, 100, |_| true);
    assert_eq!(ops(&taken), [up("a")]);
    table.postpone(taken[0].0, now + MAX, "does not fit");
    assert!(table.has_retrying());
    assert_eq!(table.pending_bytes(), 300);
    let again = table.take(now + MAX, usize::MAX, 100, |_| true);
    assert_eq!(table.succeeded(again[0].0), 300);
    assert_eq!(table.pending_bytes(), 0);
}

#[test]
fn a_new_change_to_an_upload_waiting_for_room_makes_it_ready_at_once() {
    let mut table = PathTable::default();
    let now = Instant::now();
    table.push_sized(up("big"), 10);
    let taken = table.take(now, usize::MAX, 100, |_| true);
    table.postpone(taken[0].0, now + MAX, "does not fit");
    assert!(table.take(now, usize::MAX, 100, |_| true).is_empty());
    // The file was closed again: it must not wait out the postponement,
    // or a move to another cloud would wait with it.
    table.push_sized(up("big"), 20);
    assert_eq!(
        ops(&table.take(now, usize::MAX, 100, |_| true)),
        [up("big")]
    );
}

#[test]
fn a_discard_stands_for_the_upload_and_delete_around_it() {
    let mut table = PathTable::default();
    let now = Instant::now();
    // A file that did not fit moves to another branch: its pending upload
    // here is dropped, and the watcher's delete that follows adds nothing.
    table.push_sized(up("big"), 5 << 20);
    table.push(Op::Discard("big".into()));
    table.push(Op::Delete("big".into()));
    assert_eq!(table.pending_bytes(), 0);
    assert_eq!(drain(&mut table, now), [Op::Discard("big".into())]);
    // The delete came first: the discard replaces it, so nothing of the
    // file goes to the trash.
    table.push(Op::Delete("other".into()));
    table.push(Op::Discard("other".into()));
    assert_eq!(drain(&mut table, now), [Op::Discard("other".into())]);
}

#[test]
fn a_failed_entry_put_back_after_a_reconcile_keeps_the_counts_right() {
    let mut table = PathTable::default();
    let now = Instant::now();
    table.push_sized(up("a"), 10);
    let taken = table.take(now, usize::MAX, 100, |_| true);
    table.postpone(taken[0].0, now + MAX, "does not fit");
    assert!(table.has_retrying());
    let covered = table.take_idle();
    assert!(!table.has_retrying());
    table.restore(covered);
    assert!(table.has_retrying());
    let again = table.take(now + MAX, usize::MAX, 100, |_| true);
    table.succeeded(again[0].0);
    assert!(!table.has_retrying());
    assert!(table.is_empty());
}

#[test]
fn a_waiting_upload_of_a_file_moved_away_is_dropped_and_nothing_else() {
    let mut table = PathTable::default();
    let now = Instant::now();
    table.push_sized(up("d/moved"), 10);
    table.push(up("kept"));
    // Work queued since on its directory does not keep it.
    table.push(Op::Describe("d".into()));
    table.drop_waiting_upload(Path::new("d/moved"));
    table.drop_waiting_upload(Path::new("never queued"));
    assert_eq!(table.pending_bytes(), 0);
    assert_eq!(
        drain(&mut table, now),
        [up("kept"), Op::Describe("d".into())]
    );
}
