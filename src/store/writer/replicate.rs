//! A follower's writes: records of the leader's log, each applied in a batch of its own and
//! logged under the leader's LSN (`Wal::append` gives the next; the record must be it). What the
//! writer keeps in memory beside the database is then brought up to date from what the record
//! changed: the summaries of the projects it touched, the pending counts of the claim queue, the
//! registry of types; the response cache is cleared, and the record's events are published.

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::domain::records::EventRecord;
use crate::domain::{Id, TaskStatus, Vocabulary};
use crate::events::CommittedEvent;
use crate::store::codec::decode;
use crate::store::wal::logged::Op;
use crate::store::{Replicated, StoreError, tables};

use super::{LoggedTxn, Writer, commit};

/// A record of the leader's log, queued to a follower's writer.
pub(crate) struct Job {
    pub(crate) lsn: u64,
    pub(crate) payload: Bytes,
    pub(crate) reply: oneshot::Sender<Result<Replicated, StoreError>>,
}

/// What a replicated record changed that the writer keeps in memory.
#[derive(Default)]
struct Changed {
    events: Vec<(u64, EventRecord)>,
    projects: HashSet<Id>,
    types: bool,
    /// Per agent type id: pending tasks added (or, negative, taken).
    pending: Vec<(u16, i64)>,
}

impl Changed {
    fn note(&mut self, op: &Op<'_>, existed: bool) -> Result<(), StoreError> {
        use redb::TableHandle;
        let corrupt = |what: &str| StoreError::Corrupt(format!("a replicated record: {what}"));
        if op.table == tables::EVENTS.name() {
            if let Some(value) = op.value {
                let seq = u64::from_le_bytes(
                    op.key
                        .try_into()
                        .map_err(|_| corrupt("an event's key is not a seq"))?,
                );
                let record: EventRecord = decode(value)?;
                if let Some(project) = record.project_id {
                    self.projects.insert(project);
                }
                self.events.push((seq, record));
            }
        } else if op.table == tables::PROJECTS.name() {
            let id: [u8; 16] = op
                .key
                .try_into()
                .map_err(|_| corrupt("a project's key is not an id"))?;
            self.projects.insert(Id(id));
        } else if op.table == tables::TYPE_NAMES.name() {
            self.types = true;
        } else if op.table == tables::TASKS_CLAIM.name() {
            if op.key.len() != 36 {
                return Err(corrupt("a claim queue key is not 36 bytes"));
            }
            let agent = u16::from_be_bytes([op.key[0], op.key[1]]);
            let delta = match (op.value.is_some(), existed) {
                (true, false) => 1,
                (false, true) => -1,
                _ => 0,
            };
            if op.key[2] == TaskStatus::Pending.code() && delta != 0 {
                self.pending.push((agent, delta));
            }
        }
        Ok(())
    }
}

impl Writer {
    /// Applies and answers one replicated record; `next_seq` follows the leader's events.
    pub(super) fn replicate(&self, job: Job, next_seq: &mut u64) {
        let Job {
            lsn,
            payload,
            reply,
        } = job;
        let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.apply_replicated(lsn, &payload)
        }))
        .unwrap_or_else(|_| {
            tracing::error!(
                lsn,
                "the writer panicked while applying a replicated record"
            );
            Err(StoreError::Unavailable(format!(
                "the writer failed on replicated record {lsn}; nothing of it was committed"
            )))
        });
        let answer = match applied {
            Ok(changed) => {
                let events = changed.events.len();
                self.after_replicated(changed, next_seq);
                Ok(Replicated { lsn, events })
            }
            Err(e) => {
                tracing::error!(lsn, error = %e, "a replicated record was not applied");
                if matches!(e, StoreError::DiskFull(_) | StoreError::Storage(_)) {
                    self.shared.mark_poisoned();
                }
                Err(e)
            }
        };
        let _ = reply.send(answer);
    }

    fn apply_replicated(&self, lsn: u64, payload: &[u8]) -> Result<Changed, StoreError> {
        if let Some(why) = self.shared.failure.borrow().clone() {
            return Err(StoreError::Unavailable(why));
        }
        self.shared.heal()?;
        let expected = *self.shared.applied_lsn.borrow() + 1;
        if lsn != expected {
            return Err(StoreError::Corrupt(format!(
                "the leader sent record {lsn} where record {expected} was expected"
            )));
        }
        let mut txn = self.shared.database()?.begin_write()?;
        txn.set_durability(redb::Durability::None)?;
        let txn = LoggedTxn::new(txn);
        let mut changed = Changed::default();
        txn.replay(payload, |op, existed| changed.note(op, existed))?;
        let (txn, record) = txn.into_parts();
        let mut wal = self.wal.borrow_mut();
        match wal.as_mut() {
            Some(wal) => self.log_and_commit(wal, txn, record, lsn)?,
            None => {
                // No log of its own (`--durability none`): the LSN goes with the commit.
                txn.open_table(tables::META)?
                    .insert(tables::META_WAL_LSN, lsn)?;
                commit(txn)?;
                self.shared.applied_lsn.send_replace(lsn);
            }
        }
        Ok(changed)
    }

    fn after_replicated(&self, changed: Changed, next_seq: &mut u64) {
        if let Err(e) = self.refresh(&changed) {
            // The database holds the record; only what is kept in memory beside it lags, until
            // the next record that touches the same projects.
            tracing::error!(error = %e, "refreshing the summaries after a replicated record failed");
        }
        for (agent, delta) in changed.pending {
            if let Some(counter) = self.shared.pending.get(usize::from(agent)) {
                if delta > 0 {
                    counter.fetch_add(delta as u64, Ordering::Relaxed);
                } else {
                    let down = delta.unsigned_abs();
                    let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                        Some(n.saturating_sub(down))
                    });
                }
            }
        }
        // The cached answers cannot be patched from table writes: they are built again.
        self.shared.cache.lock().clear();
        if changed.events.is_empty() {
            return;
        }
        let now = self.shared.clock.now();
        let events: Vec<CommittedEvent> = changed
            .events
            .into_iter()
            .map(|(seq, record)| CommittedEvent {
                seq,
                project_id: record.project_id,
                committed_at: now,
                json: Bytes::from(record.json),
            })
            .collect();
        if let Some(last) = events.last() {
            self.shared.latest_seq.store(last.seq, Ordering::Release);
            *next_seq = last.seq + 1;
        }
        (self.publisher)(&events);
    }

    /// The summaries of the projects the record touched, and the registry when it interned a
    /// type, read back from the database.
    fn refresh(&self, changed: &Changed) -> Result<(), StoreError> {
        use redb::ReadableDatabase;
        if changed.projects.is_empty() && !changed.types {
            return Ok(());
        }
        let db = self.shared.database()?;
        let txn = db.begin_read()?;
        if !changed.projects.is_empty() {
            let summaries = crate::store::read::summarize(&txn, changed.projects.iter().copied())?;
            self.shared.summaries.write().extend(summaries);
        }
        if changed.types {
            let table = txn.open_table(tables::TYPE_NAMES)?;
            let mut types = self.shared.types.write();
            let (agents, artifacts) = (
                types.agents.allowed.clone(),
                types.artifacts.allowed.clone(),
            );
            *types = crate::store::types::Registry::load(&table, agents, artifacts)?;
        }
        Ok(())
    }
}
