//! The store's side of replication. A leader keeps its latest log records in memory (`Backlog`,
//! bounded in bytes, like Redis's replication backlog) for followers to stream, and hands out a
//! consistent snapshot with the LSN of the last record it holds (`Store::snapshot_to`). A follower's
//! writer takes only the leader's records (`Store::replicate`): each is applied and logged as its
//! own batch, under the leader's LSN, so the follower's log and database hold what the leader's
//! do, and its recovery is the leader's.

use std::collections::VecDeque;

use bytes::Bytes;
use parking_lot::Mutex;

use super::{Store, StoreError};

/// The latest committed log records, oldest first, at most `budget` bytes of payload (the newest
/// record is kept whatever its size).
pub struct Backlog {
    inner: Mutex<Held>,
    budget: usize,
    /// The LSN of the newest committed record: streams wait on it.
    latest: tokio::sync::watch::Sender<u64>,
}

#[derive(Default)]
struct Held {
    records: VecDeque<(u64, Bytes)>,
    bytes: usize,
}

/// Why the records asked for cannot be streamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gone {
    /// They are older than the backlog's oldest (`oldest`, if it holds any): a snapshot is needed.
    Trimmed { oldest: Option<u64> },
    /// They are beyond this node's newest record (`latest`): the asker holds records this node
    /// never had.
    Ahead { latest: u64 },
}

impl Backlog {
    pub(super) fn new(budget: usize, latest: u64) -> Backlog {
        Backlog {
            inner: Mutex::new(Held::default()),
            budget,
            latest: tokio::sync::watch::Sender::new(latest),
        }
    }

    /// Keeps record `lsn` (the one after the newest kept) and wakes the streams.
    pub(super) fn push(&self, lsn: u64, payload: Bytes) {
        {
            let mut held = self.inner.lock();
            if held.records.back().is_some_and(|(last, _)| last + 1 != lsn) {
                // Never expected: a gap would hand a follower a log with a hole; start over.
                held.records.clear();
                held.bytes = 0;
            }
            held.bytes += payload.len();
            held.records.push_back((lsn, payload));
            while held.bytes > self.budget && held.records.len() > 1 {
                let (_, gone) = held.records.pop_front().expect("more than one");
                held.bytes -= gone.len();
            }
        }
        self.latest.send_replace(lsn);
    }

    /// The records from `from` on, about `max_bytes` of them (one at least); none when `from` is
    /// the next record to come.
    pub fn read(&self, from: u64, max_bytes: usize) -> Result<Vec<(u64, Bytes)>, Gone> {
        let latest = *self.latest.borrow();
        if from > latest + 1 {
            return Err(Gone::Ahead { latest });
        }
        if from == latest + 1 {
            return Ok(Vec::new());
        }
        let held = self.inner.lock();
        let oldest = held.records.front().map(|(lsn, _)| *lsn);
        let Some(first) = oldest.filter(|&oldest| oldest <= from) else {
            return Err(Gone::Trimmed { oldest });
        };
        let mut out = Vec::new();
        let mut bytes = 0;
        for (lsn, payload) in held.records.range((from - first) as usize..) {
            if !out.is_empty() && bytes + payload.len() > max_bytes {
                break;
            }
            bytes += payload.len();
            out.push((*lsn, payload.clone()));
        }
        Ok(out)
    }

    /// The newest committed record's LSN, to wait on.
    pub fn latest(&self) -> tokio::sync::watch::Receiver<u64> {
        self.latest.subscribe()
    }
}

/// What a replicated record did on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replicated {
    pub lsn: u64,
    /// Events it logged (published to this node's subscribers).
    pub events: usize,
}

impl Store {
    /// The leader's URL when this store is a follower.
    pub fn leader(&self) -> Option<&str> {
        self.shared.leader.as_deref()
    }

    /// Stops the store for good, as a failed sync of the log does: the writer stops, readiness
    /// fails and the server exits, for its supervisor to restart it (a follower that needs a
    /// new snapshot).
    pub fn stop_for(&self, why: String) {
        self.shared.fail(why);
    }

    /// The LSN of the last log record committed to the database (0: none yet).
    pub fn applied_lsn(&self) -> u64 {
        *self.shared.applied_lsn.borrow()
    }

    /// Synchronous replication's waiting room, on a leader with `--sync-replicas`.
    pub fn quorum(&self) -> Option<&std::sync::Arc<super::Quorum>> {
        self.shared.quorum.as_ref()
    }

    /// The LSN of the last log record committed, to wait on: what a follower acknowledges.
    pub fn applied_watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.applied_lsn.subscribe()
    }

    /// The records kept for followers, when this node keeps them.
    pub fn backlog(&self) -> Option<&Backlog> {
        self.shared.backlog.as_deref()
    }

    /// Applies record `lsn` of the leader's log on this follower: in a batch of its own, logged
    /// under the same LSN, after which its events are published. The record must be the one
    /// after the last applied.
    pub async fn replicate(&self, lsn: u64, payload: Bytes) -> Result<Replicated, StoreError> {
        self.writer
            .replicate(lsn, payload)?
            .await
            .unwrap_or(Err(StoreError::WriterGone))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: usize) -> Bytes {
        Bytes::from(vec![7u8; n])
    }

    #[test]
    fn the_backlog_hands_out_what_it_holds_and_says_why_not_otherwise() {
        let backlog = Backlog::new(100, 4);
        assert_eq!(backlog.read(5, 1000), Ok(vec![]));
        assert_eq!(backlog.read(6, 1000), Err(Gone::Ahead { latest: 4 }));
        assert_eq!(
            backlog.read(4, 1000),
            Err(Gone::Trimmed { oldest: None }),
            "record 4 was committed before the backlog began"
        );
        for lsn in 5..=9 {
            backlog.push(lsn, record(30));
        }
        // 150 bytes pushed, 100 kept: records 7, 8 and 9.
        assert_eq!(
            backlog.read(6, 1000),
            Err(Gone::Trimmed { oldest: Some(7) })
        );
        let all: Vec<u64> = backlog.read(7, 1000).unwrap().iter().map(|r| r.0).collect();
        assert_eq!(all, vec![7, 8, 9]);
        let some: Vec<u64> = backlog.read(8, 30).unwrap().iter().map(|r| r.0).collect();
        assert_eq!(some, vec![8], "about max_bytes");
        let one: Vec<u64> = backlog.read(8, 1).unwrap().iter().map(|r| r.0).collect();
        assert_eq!(one, vec![8], "one record at least");
        assert_eq!(backlog.read(10, 1000), Ok(vec![]));
        assert_eq!(*backlog.latest().borrow(), 9);
        // A record beyond the budget alone is still kept.
        backlog.push(10, record(500));
        let last: Vec<u64> = backlog.read(10, 1).unwrap().iter().map(|r| r.0).collect();
        assert_eq!(last, vec![10]);
        assert_eq!(
            backlog.read(9, 1000),
            Err(Gone::Trimmed { oldest: Some(10) })
        );
    }
}
