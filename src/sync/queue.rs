//! The per-branch queue of remote operations, as plain data: what a change
//! on disk asks of the remote, coalesced so the remote does only the work
//! the change needs.

use std::collections::VecDeque;
use std::path::PathBuf;

use crate::watch::{Change, ChangeKind};

/// One thing to do on a branch's remote. Paths are relative to the branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Copy the local file (or directory tree) to the remote.
    Upload(PathBuf),
    /// Delete a file on the remote.
    Delete(PathBuf),
    /// Delete a directory and everything under it on the remote.
    DeleteDir(PathBuf),
    /// Create a directory on the remote (so empty directories replicate).
    MakeDir(PathBuf),
    /// Move server-side; no bytes are transferred again.
    Move {
        from: PathBuf,
        to: PathBuf,
        is_dir: bool,
    },
}

impl Op {
    /// The operation a watched change asks for.
    pub fn for_change(change: &Change) -> Op {
        let path = change.path.clone();
        match &change.kind {
            ChangeKind::Write => Op::Upload(path),
            ChangeKind::Delete => Op::Delete(path),
            ChangeKind::DirCreate => Op::MakeDir(path),
            ChangeKind::DirDelete => Op::DeleteDir(path),
            ChangeKind::Rename { from } => Op::Move {
                from: from.clone(),
                to: path,
                is_dir: change.is_dir,
            },
        }
    }
}

/// Operations waiting for a branch's worker, oldest first. An operation
/// being executed is not in the queue, so coalescing never drops work that
/// a running transfer started before the latest change.
#[derive(Debug, Default)]
pub struct OpQueue {
    ops: VecDeque<Op>,
}

impl OpQueue {
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Adds an operation, dropping work it makes useless: a second upload of
    /// a path already waiting for upload, or an upload of a path now
    /// deleted. Coalescing never reaches back past a queued move, whose
    /// meaning depends on what came before it.
    pub fn push(&mut self, op: Op) {
        match &op {
            Op::Upload(path) => {
                if self
                    .since_last_move()
                    .any(|queued| queued == &Op::Upload(path.clone()))
                {
                    return;
                }
            }
            Op::Delete(path) => self.drop_pending_uploads(|p| p == path),
            Op::DeleteDir(dir) => self.drop_pending_uploads(|p| p.starts_with(dir)),
            Op::MakeDir(_) | Op::Move { .. } => {}
        }
        self.ops.push_back(op);
    }

    fn since_last_move(&self) -> impl Iterator<Item = &Op> {
        let start = self
            .ops
            .iter()
            .rposition(|op| matches!(op, Op::Move { .. }))
            .map_or(0, |i| i + 1);
        self.ops.range(start..)
    }

    fn drop_pending_uploads(&mut self, matches: impl Fn(&PathBuf) -> bool) {
        let start = self
            .ops
            .iter()
            .rposition(|op| matches!(op, Op::Move { .. }))
            .map_or(0, |i| i + 1);
        let mut index = start;
        while index < self.ops.len() {
            if matches!(&self.ops[index], Op::Upload(p) if matches(p)) {
                self.ops.remove(index);
            } else {
                index += 1;
            }
        }
    }

    /// Takes the next unit of work: every upload at the head when there are
    /// at least `burst` of them (one rclone job with parallel transfers),
    /// else the single operation at the head.
    pub fn take_batch(&mut self, burst: usize) -> Vec<Op> {
        let uploads = self
            .ops
            .iter()
            .take_while(|op| matches!(op, Op::Upload(_)))
            .count();
        let count = if uploads >= burst { uploads } else { 1 };
        let count = count.min(self.ops.len());
        self.ops.drain(..count).collect()
    }

    /// Takes everything (a reconcile covers it).
    pub fn take_all(&mut self) -> Vec<Op> {
        self.ops.drain(..).collect()
    }

    /// Puts work that failed back at the head, in its order.
    pub fn restore(&mut self, ops: Vec<Op>) {
        for op in ops.into_iter().rev() {
            self.ops.push_front(op);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(p: &str) -> Op {
        Op::Upload(p.into())
    }

    #[test]
    fn repeated_uploads_coalesce() {
        let mut queue = OpQueue::default();
        queue.push(up("a"));
        queue.push(up("b"));
        queue.push(up("a"));
        assert_eq!(queue.take_all(), [up("a"), up("b")]);
    }

    #[test]
    fn a_delete_drops_the_pending_upload() {
        let mut queue = OpQueue::default();
        queue.push(up("a"));
        queue.push(up("d/x"));
        queue.push(Op::Delete("a".into()));
        queue.push(Op::DeleteDir("d".into()));
        assert_eq!(
            queue.take_all(),
            [Op::Delete("a".into()), Op::DeleteDir("d".into())]
        );
    }

    #[test]
    fn coalescing_stops_at_a_move() {
        let mut queue = OpQueue::default();
        let rename = Op::Move {
            from: "a".into(),
            to: "b".into(),
            is_dir: false,
        };
        queue.push(up("a"));
        queue.push(rename.clone());
        queue.push(up("a"));
        queue.push(Op::Delete("a".into()));
        assert_eq!(queue.take_all(), [up("a"), rename, Op::Delete("a".into())]);
    }

    #[test]
    fn bursts_of_uploads_go_together() {
        let mut queue = OpQueue::default();
        for name in ["a", "b", "c"] {
            queue.push(up(name));
        }
        queue.push(Op::Delete("z".into()));
        queue.push(up("d"));
        assert_eq!(queue.take_batch(3), [up("a"), up("b"), up("c")]);
        assert_eq!(queue.take_batch(3), [Op::Delete("z".into())]);
        assert_eq!(queue.take_batch(3), [up("d")]);
        assert!(queue.take_batch(3).is_empty());
    }

    #[test]
    fn failed_work_goes_back_in_order() {
        let mut queue = OpQueue::default();
        queue.push(up("c"));
        queue.restore(vec![up("a"), up("b")]);
        assert_eq!(queue.take_all(), [up("a"), up("b"), up("c")]);
    }
}
