//! The single writer thread. It drains its queue into one write transaction (group commit), applies
//! each command — record, index entries and the event describing the change, all in that one
//! transaction, every write recorded (`wal::LoggedTxn`) — appends the batch's record to the
//! write-ahead log and syncs it (unless configured otherwise), commits to redb without a sync, and
//! only then answers the callers, updates the summaries and the cache, and hands the events to the
//! publisher. Checkpoints (durable redb commits) run when it is idle, or when the log's size or
//! age forces one.
//!
//! Every command checks everything it needs before it writes anything, so a refused command leaves
//! nothing behind even when other commands of the same batch commit.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::thread::JoinHandle;

use parking_lot::Mutex;
use redb::WriteTransaction;
use tokio::sync::oneshot;

use crate::domain::records::Task;
use crate::domain::workflow::BrokenRun;
use crate::domain::{AgentType, DomainError, Id, Micros};
use crate::events::{CommittedEvent, Publisher};

use super::cache::Change as CacheChange;
use super::handoff::Waiter;
use super::tables::{ArtifactIndexes, HitlIndexes, TaskIndexes};
use super::wal::{AppendError, FRAME_HEAD, Logged, LoggedTxn, Wal};
use super::{ProjectSummary, Shared, StoreConfig, StoreError, TaskSettings, metric_names, tables};

mod artifacts;
mod batch;
mod budgets;
mod hitl;
mod idempotency;
mod meta;
mod projects;
mod queues;
mod replicate;
mod retention;
mod tasks;
mod timers;
mod usage;
mod workflows;

pub use artifacts::{CreateArtifact, DeleteArtifact, UpdateArtifact};
pub use budgets::{BudgetSet, DeleteBudget, Held, PutBudget, ReleaseHeld};
pub use hitl::{BulkApproveHitl, BulkApproved, CreateHitl, HitlAnswer, RespondHitl};
pub use idempotency::{Idempotent, Remembered, TrimIdempotency};
pub use meta::{AddDeadLetter, DeleteDeadLetters, Probe, RecordAlert, SetWebhookCursor};
pub use projects::{CreateProject, SetOversightLevel};
pub use queues::{QueueChange, SetProjectPaused, SetQueue};
pub use retention::{TrimAgentHistory, TrimEventIndex, TrimEvents};
pub use tasks::{
    Claim, CreateTask, Heartbeat, InternAgentType, ReleaseClaim, ResetAgent, SetTaskStatus,
};
pub use timers::FireTimers;
pub use usage::{Recorded, ReportUsage, UsageRecorded};
pub use workflows::{CancelWorkflow, DeleteWorkflow, PutOutcome, PutWorkflow, StartWorkflow};

/// A change to the store, its own type with its own result: `store.write(CreateTask { … })`
/// answers a `Task`. Applying one is two steps, so that a refused command leaves nothing behind:
/// `check` reads (it has only a shared borrow of the batch) and either refuses or answers a plan;
/// `apply` writes the plan and cannot refuse (only storage can fail it, which abandons the batch).
pub trait Write: Send + Sized + 'static {
    /// Everything `check` found that `apply` needs.
    type Plan;
    /// What the caller gets once the batch has committed.
    type Output: Send + 'static;
    #[doc(hidden)]
    fn check(self, batch: &Batch<'_>) -> Checked<Self::Plan>;
    #[doc(hidden)]
    fn apply(plan: Self::Plan, batch: &mut Batch<'_>) -> Written<Self::Output>;
}

/// A queued command with the channel its answer goes to, its type erased for the queue.
trait Job: Send {
    /// Checks and applies the command. An error abandons the whole batch.
    fn run(&mut self, batch: &mut Batch<'_>) -> Result<(), StoreError>;
    /// Answers the caller: with its own outcome, or with the batch's failure.
    fn answer(self: Box<Self>, batch_failed: Option<&StoreError>);
}

struct Queued<C: Write> {
    command: Option<C>,
    outcome: Option<Result<C::Output, StoreError>>,
    reply: oneshot::Sender<Result<C::Output, StoreError>>,
}

impl<C: Write> Job for Queued<C> {
    fn run(&mut self, batch: &mut Batch<'_>) -> Result<(), StoreError> {
        let Some(command) = self.command.take() else {
            return Ok(());
        };
        match command.check(batch) {
            Ok(plan) => {
                self.outcome = Some(Ok(C::apply(plan, batch)?));
                Ok(())
            }
            // Nothing was written: only this command is refused.
            Err(Refusal::Domain(e)) => {
                self.outcome = Some(Err(StoreError::Domain(e)));
                Ok(())
            }
            Err(Refusal::Corrupt(m)) => {
                self.outcome = Some(Err(StoreError::Corrupt(m)));
                Ok(())
            }
            Err(Refusal::Storage(e)) => Err(e),
        }
    }

    fn answer(self: Box<Self>, batch_failed: Option<&StoreError>) {
        let outcome = match (batch_failed, self.outcome) {
            (Some(e), _) => Err(e.for_caller()),
            (None, Some(outcome)) => outcome,
            (None, None) => Err(StoreError::Unavailable(
                "the writer did not apply this command; retry".into(),
            )),
        };
        let _ = self.reply.send(outcome);
    }
}

/// Why `check` refused a command: the request's fault, a record that is not what it must be
/// (both answered to this caller only; nothing was written) or storage failing (the batch is
/// abandoned).
pub enum Refusal {
    Domain(DomainError),
    Corrupt(String),
    Storage(StoreError),
}

impl From<DomainError> for Refusal {
    fn from(e: DomainError) -> Refusal {
        Refusal::Domain(e)
    }
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Refusal {
        match e {
            StoreError::Domain(d) => Refusal::Domain(d),
            StoreError::Corrupt(m) => Refusal::Corrupt(m),
            other => Refusal::Storage(other),
        }
    }
}

impl From<redb::StorageError> for Refusal {
    fn from(e: redb::StorageError) -> Refusal {
        Refusal::Storage(e.into())
    }
}

/// Two commands in one transaction and one commit: the second is checked once the first is
/// applied, so it sees the first's effects, as the next command of a batch would. The first's
/// refusal refuses both; the second's is its own answer and leaves the first's effects.
#[derive(Clone, Debug)]
pub struct Then<A, B>(pub A, pub B);

impl<A: Write, B: Write> Write for Then<A, B> {
    type Plan = (A::Plan, B);
    type Output = (A::Output, Result<B::Output, StoreError>);

    fn check(self, batch: &Batch<'_>) -> Checked<Self::Plan> {
        Ok((self.0.check(batch)?, self.1))
    }

    fn apply((plan, second): Self::Plan, batch: &mut Batch<'_>) -> Written<Self::Output> {
        let first = A::apply(plan, batch)?;
        let second = match second.check(batch) {
            Ok(plan) => Ok(B::apply(plan, batch)?),
            Err(Refusal::Domain(e)) => Err(StoreError::Domain(e)),
            Err(Refusal::Corrupt(m)) => Err(StoreError::Corrupt(m)),
            Err(Refusal::Storage(e)) => return Err(e),
        };
        Ok((first, second))
    }
}

/// The result of `check`: a plan, or a refusal.
pub type Checked<T> = Result<T, Refusal>;
/// The result of `apply` and of every write step: only storage can fail it.
pub type Written<T> = Result<T, StoreError>;

impl From<BrokenRun> for StoreError {
    fn from(e: BrokenRun) -> StoreError {
        StoreError::Corrupt(e.0)
    }
}

impl From<BrokenRun> for Refusal {
    fn from(e: BrokenRun) -> Refusal {
        Refusal::Corrupt(e.0)
    }
}

/// A command of the writer's own, queued without a caller (its answer goes nowhere).
fn internal<C: Write>(command: C) -> Box<dyn Job> {
    let (reply, _) = oneshot::channel();
    Box::new(Queued {
        command: Some(command),
        outcome: None,
        reply,
    })
}

enum Msg {
    Write(Box<dyn Job>),
    /// A record of the leader's log, on a follower.
    Replicate(replicate::Job),
    Shutdown,
}

/// The sending side of the writer queue.
#[derive(Clone)]
pub(crate) struct WriterHandle {
    tx: SyncSender<Msg>,
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
    shared: Arc<Shared>,
}

impl WriterHandle {
    pub(crate) fn submit<C: Write>(
        &self,
        command: C,
    ) -> Result<oneshot::Receiver<Result<C::Output, StoreError>>, StoreError> {
        if !self.shared.writer_alive.load(Ordering::Acquire) {
            return Err(StoreError::WriterGone);
        }
        if let Some(leader) = &self.shared.leader {
            return Err(StoreError::NotLeader(leader.clone()));
        }
        let (reply, answer) = oneshot::channel();
        let job = Box::new(Queued {
            command: Some(command),
            outcome: None,
            reply,
        });
        self.send(Msg::Write(job))?;
        Ok(answer)
    }

    /// Queues record `lsn` of the leader's log (a follower's only writes).
    pub(crate) fn replicate(
        &self,
        lsn: u64,
        payload: bytes::Bytes,
    ) -> Result<oneshot::Receiver<Result<super::Replicated, StoreError>>, StoreError> {
        if !self.shared.writer_alive.load(Ordering::Acquire) {
            return Err(StoreError::WriterGone);
        }
        if self.shared.leader.is_none() {
            return Err(StoreError::Unavailable(
                "this node leads: it takes no other node's log records".into(),
            ));
        }
        let (reply, answer) = oneshot::channel();
        self.send(Msg::Replicate(replicate::Job {
            lsn,
            payload,
            reply,
        }))?;
        Ok(answer)
    }

    fn send(&self, msg: Msg) -> Result<(), StoreError> {
        self.shared.queue_depth.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(msg) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.shared.queue_depth.fetch_sub(1, Ordering::Relaxed);
                Err(match e {
                    TrySendError::Full(_) => StoreError::Overloaded,
                    TrySendError::Disconnected(_) => StoreError::WriterGone,
                })
            }
        }
    }

    pub(crate) fn close(&self) {
        let Some(thread) = self.thread.lock().take() else {
            return;
        };
        let _ = self.tx.send(Msg::Shutdown);
        let _ = thread.join();
    }
}

pub(crate) fn start(
    shared: Arc<Shared>,
    config: &StoreConfig,
    publisher: Publisher,
    wal: Option<Wal>,
) -> Result<WriterHandle, StoreError> {
    let (tx, rx) = std::sync::mpsc::sync_channel(config.writer_queue.max(1));
    let max_batch = config.max_batch.max(1);
    let checkpoint_idle = config.checkpoint_idle;
    let thread_shared = shared.clone();
    let thread = std::thread::Builder::new()
        .name("flightdeck-writer".into())
        .spawn(move || {
            let writer = Writer {
                shared: thread_shared,
                wal: RefCell::new(wal),
                checkpoint_idle,
                checkpoint_soon: std::cell::Cell::new(false),
                max_batch,
                publisher,
                undelivered: Arc::default(),
            };
            writer.run(rx);
        })?;
    Ok(WriterHandle {
        tx,
        thread: Arc::new(Mutex::new(Some(thread))),
        shared,
    })
}

struct Writer {
    shared: Arc<Shared>,
    /// `None` with `--durability none`: then nothing is synced before a clean shutdown.
    wal: RefCell<Option<Wal>>,
    /// How long it waits for work before it checkpoints what it logged.
    checkpoint_idle: std::time::Duration,
    /// A segment could not be made: checkpoint after this batch, freeing the full ones.
    checkpoint_soon: std::cell::Cell<bool>,
    max_batch: usize,
    publisher: Publisher,
    /// Claims handed to waiters that were gone by the commit: released in the next batch.
    undelivered: Arc<Mutex<Vec<ReleaseClaim>>>,
}

type Pending = Vec<Box<dyn Job>>;

impl Writer {
    fn run(self, rx: Receiver<Msg>) {
        let mut next_seq = self.shared.latest_seq.load(Ordering::Acquire) + 1;
        let mut stop = false;
        while !stop {
            // Releases of undelivered hand-offs first, without waiting for a caller's write.
            let mut pending: Pending = std::mem::take(&mut *self.undelivered.lock())
                .into_iter()
                .map(internal)
                .collect();
            let internal_jobs = pending.len();
            let mut replicated = None;
            if pending.is_empty() {
                let idle = self.wal.borrow().as_ref().is_some_and(Wal::has_unchecked);
                let received = if idle {
                    // Records not yet checkpointed: checkpoint once the writer is idle.
                    match rx.recv_timeout(self.checkpoint_idle) {
                        Ok(msg) => Ok(msg),
                        Err(RecvTimeoutError::Timeout) if self.shared.failed() => break,
                        Err(RecvTimeoutError::Timeout) => {
                            self.checkpoint();
                            continue;
                        }
                        Err(RecvTimeoutError::Disconnected) => Err(()),
                    }
                } else {
                    rx.recv().map_err(|_| ())
                };
                match received {
                    Ok(Msg::Write(job)) => pending.push(job),
                    Ok(Msg::Replicate(job)) => replicated = Some(job),
                    Ok(Msg::Shutdown) | Err(()) => stop = true,
                }
            }
            while !stop && replicated.is_none() && pending.len() < self.max_batch {
                match rx.try_recv() {
                    Ok(Msg::Write(job)) => pending.push(job),
                    // A batch of its own, after the commands before it.
                    Ok(Msg::Replicate(job)) => replicated = Some(job),
                    Ok(Msg::Shutdown) => stop = true,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => stop = true,
                }
            }
            let worked = !pending.is_empty() || replicated.is_some();
            if !pending.is_empty() {
                self.shared
                    .queue_depth
                    .fetch_sub(pending.len() - internal_jobs, Ordering::Relaxed);
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    self.commit_batch(pending, &mut next_seq)
                }));
                if outcome.is_err() {
                    // After its commit (publishing, the caches): what committed stays; its callers
                    // are told the writer failed. The writer goes on.
                    tracing::error!("the writer panicked after committing a batch");
                }
            }
            if let Some(job) = replicated {
                self.shared.queue_depth.fetch_sub(1, Ordering::Relaxed);
                self.replicate(job, &mut next_seq);
            }
            if worked
                && (self.checkpoint_soon.replace(false)
                    || self.wal.borrow().as_ref().is_some_and(Wal::checkpoint_due))
            {
                self.checkpoint();
            }
            if self.shared.failed() {
                // Nothing more may be acknowledged; what is queued is answered `WriterGone`.
                break;
            }
        }
        if !self.shared.failed() {
            // Commits reach the database file durably only with a durable one: the last
            // checkpoint, after which the log is redundant.
            match self.durable_commit() {
                Ok(()) => {
                    if let Some(wal) = self.wal.borrow_mut().as_mut() {
                        let _ = wal.checkpointed();
                    }
                }
                Err(e) => tracing::error!(error = %e, "final durable commit failed"),
            }
        }
        if let Some(wal) = self.wal.borrow_mut().as_mut() {
            // After a failure the log is not synced again (`Wal::close` syncs otherwise).
            let closed = if self.shared.failed() {
                wal.abandon();
                Ok(())
            } else {
                wal.close()
            };
            if let Err(e) = closed {
                tracing::error!(error = %e, "closing the write-ahead log failed");
            }
        }
        if let Some(quorum) = &self.shared.quorum {
            quorum.stop();
        }
        self.shared.writer_alive.store(false, Ordering::Release);
        // Anything still queued is answered `WriterGone` when its sender drops with `rx`.
    }

    fn commit_batch(&self, mut pending: Pending, next_seq: &mut u64) {
        metrics::histogram!(metric_names::WRITE_BATCH_SIZE).record(pending.len() as f64);
        metrics::gauge!(metric_names::WRITER_QUEUE_DEPTH)
            .set(self.shared.queue_depth.load(Ordering::Relaxed) as f64);
        let now = self.shared.clock.now();
        let started = std::time::Instant::now();
        // A panic while applying (a bug, never bad input) abandons this batch only: its
        // transaction is dropped uncommitted, its callers are answered, and the writer goes on.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.apply_all(&mut pending, now, *next_seq)
        }))
        .unwrap_or_else(|_| {
            tracing::error!("the writer panicked while applying a batch; the batch is abandoned");
            Err(StoreError::Unavailable(
                "the writer failed on this batch; nothing of it was committed; retry".into(),
            ))
        });
        metrics::histogram!(metric_names::COMMIT_SECONDS).record(started.elapsed().as_secs_f64());
        self.shared.last_commit.store(
            self.shared.opened.elapsed().as_micros() as u64,
            Ordering::Relaxed,
        );
        match result {
            Ok(mut output) => {
                *next_seq = output.next_seq;
                let handed = std::mem::take(&mut output.handed);
                let lsn = output.lsn;
                self.after_commit(output);
                let undelivered = self.undelivered.clone();
                let answer = move |outcome: Result<(), StoreError>| match outcome {
                    Ok(()) => {
                        deliver(&undelivered, handed);
                        for job in pending {
                            job.answer(None);
                        }
                    }
                    Err(e) => {
                        // The claims handed out are released: no waiter is told of them.
                        undelivered
                            .lock()
                            .extend(handed.into_iter().filter_map(|(_, task)| {
                                Some(ReleaseClaim {
                                    task_id: task.id,
                                    lease_id: task.lease_id?,
                                })
                            }));
                        for job in pending {
                            job.answer(Some(&e));
                        }
                    }
                };
                // With synchronous replication, answered once enough followers hold the batch's
                // record — or, for a batch that wrote none (a refusal, an idempotent replay),
                // every record before it: no answer tells of a write they may not hold.
                let through = lsn.unwrap_or_else(|| *self.shared.applied_lsn.borrow());
                match &self.shared.quorum {
                    Some(quorum) if through > 0 => quorum.wait(through, Box::new(answer)),
                    _ => answer(Ok(())),
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "write transaction failed; nothing of it was committed");
                for job in pending {
                    job.answer(Some(&e));
                }
                // An I/O error leaves redb refusing every later write until the database is
                // reopened; the next write does that once there is room (`Shared::heal`).
                if matches!(e, StoreError::DiskFull(_) | StoreError::Storage(_)) {
                    self.shared.mark_poisoned();
                }
            }
        }
    }

    fn apply_all(
        &self,
        pending: &mut Pending,
        now: Micros,
        next_seq: u64,
    ) -> Result<BatchOutput, StoreError> {
        if let Some(why) = self.shared.failure.borrow().clone() {
            return Err(StoreError::Unavailable(why));
        }
        self.shared.heal()?;
        let mut txn = self.shared.database()?.begin_write()?;
        // Durable through the log; the database file is synced by checkpoints.
        txn.set_durability(redb::Durability::None)?;
        let txn = LoggedTxn::new(txn);
        let output = {
            let mut batch = Batch::open(&txn, &self.shared, now, next_seq)?;
            for job in pending.iter_mut() {
                job.run(&mut batch)?;
            }
            let handed = batch.serve_waiting_claims()?;
            // The retentions, kept as the batch added to them.
            retention::trim_to_retention(&mut batch)?;
            idempotency::forget_to_limits(&mut batch)?;
            let mut output = batch.finish()?;
            output.handed = handed;
            output
        };
        let (txn, record) = txn.into_parts();
        let mut wal = self.wal.borrow_mut();
        let Some(wal) = wal.as_mut().filter(|_| record.len() > FRAME_HEAD) else {
            commit(txn)?;
            return Ok(output);
        };
        let lsn = wal.next_lsn();
        self.log_and_commit(wal, txn, record, lsn)?;
        let mut output = output;
        output.lsn = Some(lsn);
        Ok(output)
    }

    /// Appends `record` to the log as record `lsn` (the log's next), syncs it, and commits `txn`
    /// with that LSN, without a sync; then keeps the record for followers.
    fn log_and_commit(
        &self,
        wal: &mut Wal,
        txn: WriteTransaction,
        mut record: Vec<u8>,
        lsn: u64,
    ) -> Result<(), StoreError> {
        if wal.next_lsn() != lsn {
            return Err(StoreError::Corrupt(format!(
                "record {lsn} cannot be logged: the log's next record is {}",
                wal.next_lsn()
            )));
        }
        txn.open_table(tables::META)?
            .insert(tables::META_WAL_LSN, lsn)?;
        match wal.append(&mut record) {
            Ok(_) => {}
            Err(AppendError::NoRoom(e)) => {
                // Nothing was written: the batch is refused, and a checkpoint frees the full
                // segments for the next one.
                self.checkpoint_soon.set(true);
                let what = "no room for a new write-ahead log segment";
                return Err(if e.kind() == std::io::ErrorKind::StorageFull {
                    StoreError::DiskFull(super::Cause::while_(what, e))
                } else {
                    StoreError::storage(what, e)
                });
            }
            Err(AppendError::Failed(e)) => {
                // Never retried: after a failed sync the kernel may have dropped the pages.
                let why = format!("writing the write-ahead log failed: {e}");
                self.shared.fail(why.clone());
                return Err(StoreError::Unavailable(why));
            }
        }
        if let Err(e) = commit(txn) {
            // The record is durable but its batch is not in the database: take it back, so that
            // what the callers are told (it failed) stays true after a restart.
            if let Err(r) = wal.retract() {
                self.shared.fail(format!(
                    "taking back a write-ahead log record after a failed commit failed: {r}"
                ));
            }
            return Err(e);
        }
        self.shared.applied_lsn.send_replace(lsn);
        if let Some(backlog) = &self.shared.backlog {
            backlog.push(lsn, bytes::Bytes::from(record).slice(FRAME_HEAD..));
        }
        Ok(())
    }

    /// An empty durable commit: it makes every commit before it durable in the database file.
    fn durable_commit(&self) -> Result<(), StoreError> {
        self.shared.database()?.begin_write()?.commit()?;
        Ok(())
    }

    /// A durable commit of the database: every log record so far becomes redundant, and the
    /// log's full segments free to reuse.
    fn checkpoint(&self) {
        if self.shared.failed() {
            // Nothing more is written once the store has failed.
            return;
        }
        let mut wal = self.wal.borrow_mut();
        let Some(wal) = wal.as_mut().filter(|w| w.has_unchecked()) else {
            return;
        };
        let started = std::time::Instant::now();
        let bytes = wal.unchecked_bytes();
        match self.durable_commit() {
            Ok(()) => {
                metrics::histogram!(metric_names::CHECKPOINT_SECONDS)
                    .record(started.elapsed().as_secs_f64());
                metrics::counter!(metric_names::CHECKPOINT_BYTES).increment(bytes);
                if let Err(e) = wal.checkpointed() {
                    tracing::warn!(error = %e, "removing a spare write-ahead log segment failed");
                }
            }
            Err(e) => {
                // The log still holds every record: the reopen replays them.
                tracing::error!(error = %e, "checkpoint failed; the database will be reopened");
                if matches!(e, StoreError::DiskFull(_) | StoreError::Storage(_)) {
                    self.shared.mark_poisoned();
                }
            }
        }
    }

    fn after_commit(&self, output: BatchOutput) {
        if !output.new_agents.is_empty() || !output.new_artifacts.is_empty() {
            let mut types = self.shared.types.write();
            for name in output.new_agents {
                let id = types.agents.len() as u16;
                // Its series exist from its first use, at zero.
                metrics::gauge!(metric_names::QUEUE_DEPTH, "agent_type" => name.to_string())
                    .set(0.0);
                metric_names::agent_type_series(name.as_str());
                types.agents.insert(id, name);
            }
            for name in output.new_artifacts {
                let id = types.artifacts.len() as u16;
                types.artifacts.insert(id, name);
            }
        }
        if !output.history_len.is_empty() {
            let mut lengths = self.shared.history_len.lock();
            for (id, len) in output.history_len {
                match len {
                    Some(len) => lengths.insert(id, len),
                    None => lengths.remove(&id),
                };
            }
        }
        if !output.claim_turns.is_empty() {
            let mut turns = self.shared.claim_turn.lock();
            for (agent, project) in output.claim_turns {
                turns[usize::from(agent)] = Some(project);
            }
        }
        if !output.progress_done.is_empty() {
            let mut board = self.shared.progress.lock();
            for task in &output.progress_done {
                board.remove(task);
            }
        }
        if !output.summaries.is_empty() {
            let mut summaries = self.shared.summaries.write();
            for (id, summary) in output.summaries {
                summaries.insert(id, summary);
            }
        }
        // The cached project statuses are patched task by task; the writer answers nobody before
        // this is done, so a client reads its own write.
        let patches = self.shared.cache.lock().apply(output.changes);
        for (key, view, change) in patches {
            if let CacheChange::Task { task, entry, .. } = change {
                let weight = {
                    let mut v = view.lock();
                    v.set_task(task, entry);
                    super::cache::view_weight(&v)
                };
                self.shared.cache.lock().reweigh(&key, &view, weight);
            }
        }
        if let Some(last) = output.events.last() {
            self.shared.latest_seq.store(last.seq, Ordering::Release);
            (self.publisher)(&output.events);
        }
        for (i, &delta) in output.pending_delta.iter().enumerate() {
            if delta != 0 {
                let counter = &self.shared.pending[i];
                let n = if delta > 0 {
                    counter.fetch_add(delta as u64, Ordering::Relaxed) + delta as u64
                } else {
                    let down = delta.unsigned_abs();
                    counter
                        .fetch_sub(down, Ordering::Relaxed)
                        .saturating_sub(down)
                };
                if let Some(agent) = self.shared.types.read().agents.name(i as u16) {
                    metrics::gauge!(metric_names::QUEUE_DEPTH, "agent_type" => agent.to_string())
                        .set(n as f64);
                }
            }
        }
        if !output.queue.is_empty() {
            let now = self.shared.clock.now();
            let mut waits = self.shared.queue_waits.lock();
            for event in output.queue {
                if let QueueEvent::Waited(_, seconds) = event {
                    super::queues::remember_wait(&mut waits, now, seconds);
                }
                event.record();
            }
        }
        // Waiting claims, one per task that became claimable (a waiter that finds it taken
        // waits again).
        for (signal, &n) in self.shared.claimable.iter().zip(&output.claimable) {
            for _ in 0..n.min(CLAIM_WAKEUPS_PER_BATCH) {
                signal.notify_one();
            }
        }
        for agent in output.wake_all {
            self.shared.claimable[usize::from(agent)].notify_waiters();
        }
    }
}

/// Gives each handed-off claim its task, now that the commit that claimed it is durable (and, with
/// synchronous replication, held by enough followers); a claim whose client went away meanwhile
/// is released in the next batch.
fn deliver(undelivered: &Mutex<Vec<ReleaseClaim>>, handed: Vec<(Waiter, Task)>) {
    for (waiter, task) in handed {
        let lease_id = task.lease_id;
        if let (Err(task), Some(lease_id)) = (waiter.reply.send(task), lease_id) {
            undelivered.lock().push(ReleaseClaim {
                task_id: task.id,
                lease_id,
            });
        }
    }
}

/// Most waiting claims one batch wakes per agent type (each woken claim takes one task).
const CLAIM_WAKEUPS_PER_BATCH: u32 = 4096;

fn commit(txn: WriteTransaction) -> Result<(), StoreError> {
    txn.commit()?;
    Ok(())
}

/// What a batch hands over once its transaction has committed.
struct BatchOutput {
    next_seq: u64,
    events: Vec<CommittedEvent>,
    summaries: HashMap<Id, ProjectSummary>,
    /// What the response cache must learn once this commits.
    changes: Vec<CacheChange>,
    /// Per agent type id: tasks that became claimable.
    claimable: Vec<u32>,
    /// Per agent type id: the change in pending tasks.
    pending_delta: Vec<i64>,
    /// What the queue metrics must record once this commits.
    queue: Vec<QueueEvent>,
    wake_all: Vec<u16>,
    /// Per agent type id: the project the batch's last claim was served from
    /// (`Shared::claim_turn`).
    claim_turns: Vec<(u16, Id)>,
    /// Tasks whose progress report went into their record and leaves the board.
    progress_done: Vec<Id>,
    /// Waiting claims served in this batch, with the task each was handed.
    handed: Vec<(Waiter, Task)>,
    /// The batch's log record, if it wrote one.
    lsn: Option<u64>,
    /// Types interned by this batch, in id order.
    new_agents: Vec<AgentType>,
    new_artifacts: Vec<crate::domain::ArtifactType>,
    history_len: HashMap<u16, Option<u64>>,
}

/// A task's step that a queue metric records.
#[derive(Clone, Debug)]
enum QueueEvent {
    /// Claimed (or started) after waiting this many seconds since it became pending.
    Waited(AgentType, f64),
    /// Completed or failed after running this many seconds.
    Ran(AgentType, f64),
    LeaseExpired(AgentType),
    Retried(AgentType),
    Escalated(AgentType),
}

impl QueueEvent {
    fn record(self) {
        use metric_names::{
            ESCALATIONS, LEASE_EXPIRATIONS, QUEUE_WAIT_SECONDS, RETRIES, TASK_RUN_SECONDS,
        };
        match self {
            QueueEvent::Waited(a, s) => {
                metrics::histogram!(QUEUE_WAIT_SECONDS, "agent_type" => a.to_string()).record(s)
            }
            QueueEvent::Ran(a, s) => {
                metrics::histogram!(TASK_RUN_SECONDS, "agent_type" => a.to_string()).record(s)
            }
            QueueEvent::LeaseExpired(a) => {
                metrics::counter!(LEASE_EXPIRATIONS, "agent_type" => a.to_string()).increment(1)
            }
            QueueEvent::Retried(a) => {
                metrics::counter!(RETRIES, "agent_type" => a.to_string()).increment(1)
            }
            QueueEvent::Escalated(a) => {
                metrics::counter!(ESCALATIONS, "agent_type" => a.to_string()).increment(1)
            }
        }
    }
}

type RecordTable<'t> = Logged<'t, &'static [u8; 16], &'static [u8]>;

/// A table (or a record kind's index tables) of the batch, opened at its first use: opening one
/// is a lookup in redb's table of tables, and most batches touch a few of the two dozen.
pub(super) struct Lazy<'t, T> {
    txn: &'t LoggedTxn,
    opener: fn(&'t LoggedTxn) -> Result<T, redb::TableError>,
    table: std::cell::OnceCell<T>,
}

impl<'t, T> Lazy<'t, T> {
    fn new(txn: &'t LoggedTxn, opener: fn(&'t LoggedTxn) -> Result<T, redb::TableError>) -> Self {
        Lazy {
            txn,
            opener,
            table: std::cell::OnceCell::new(),
        }
    }

    /// The table, opened now if it was not yet.
    pub(super) fn open(&self) -> Result<&T, StoreError> {
        if let Some(table) = self.table.get() {
            return Ok(table);
        }
        let table = (self.opener)(self.txn)?;
        Ok(self.table.get_or_init(|| table))
    }

    /// The table to write, opened now if it was not yet.
    pub(super) fn open_mut(&mut self) -> Result<&mut T, StoreError> {
        self.open()?;
        Ok(self.table.get_mut().expect("opened just now"))
    }
}
type Index<'t, const N: usize> = Logged<'t, &'static [u8; N], ()>;

/// Every table, each opened once per transaction at its first use (`Lazy`), plus what the batch
/// has produced so far.
pub struct Batch<'t> {
    txn: &'t LoggedTxn,
    shared: &'t Shared,
    now: Micros,
    next_seq: u64,
    meta: Lazy<'t, Logged<'t, &'static str, u64>>,
    first_seq: u64,
    projects: Lazy<'t, RecordTable<'t>>,
    tasks: Lazy<'t, RecordTable<'t>>,
    artifacts: Lazy<'t, RecordTable<'t>>,
    hitl: Lazy<'t, RecordTable<'t>>,
    agents: Lazy<'t, Logged<'t, u16, &'static [u8]>>,
    agent_history: Lazy<'t, Logged<'t, &'static [u8; 10], &'static [u8]>>,
    events: Lazy<'t, Logged<'t, u64, &'static [u8]>>,
    task_ix: Lazy<'t, TaskIndexes<'t>>,
    timers: Lazy<'t, Index<'t, 25>>,
    workflows: Lazy<'t, RecordTable<'t>>,
    settings: &'t TaskSettings,
    artifact_ix: Lazy<'t, ArtifactIndexes<'t>>,
    hitl_ix: Lazy<'t, HitlIndexes<'t>>,
    events_by_project: Lazy<'t, Index<'t, 24>>,
    pending_since: Lazy<'t, Index<'t, 26>>,
    queues: Lazy<'t, Logged<'t, u16, &'static [u8]>>,
    paused_projects: Lazy<'t, Index<'t, 16>>,
    idempotency: Lazy<'t, Logged<'t, &'static [u8; 20], &'static [u8]>>,
    idempotency_by_age: Lazy<'t, Index<'t, 28>>,
    /// Budgets by scope: read by every claim and heartbeat, opened once per batch.
    budgets: Lazy<'t, Logged<'t, &'static str, &'static [u8]>>,
    committed: Vec<CommittedEvent>,
    /// Copies of the summaries this batch changed; they replace the shared ones after the commit.
    summaries: HashMap<Id, ProjectSummary>,
    changes: Vec<CacheChange>,
    claimable: Vec<u32>,
    pending_delta: Vec<i64>,
    queue: Vec<QueueEvent>,
    /// Agent types whose waiting claims must all try again (a queue or project resumed, a
    /// limit raised).
    wake_all: Vec<u16>,
    /// Claims served in this batch: per agent type id, the project the last one came from.
    /// Later claims of the batch start their turn from here; `Shared::claim_turn` learns it
    /// after the commit.
    claim_turns: Vec<(u16, Id)>,
    /// Tasks whose latest progress report this batch wrote into their record as they stopped
    /// working: taken off the board after the commit.
    progress_done: Vec<Id>,
    type_names: Lazy<'t, Logged<'t, (u8, u16), &'static str>>,
    /// Idempotency keys this batch remembered: as many old ones are forgotten at its end.
    remembered: usize,
    /// Per agent type id, the length of its history as this batch left it (`None`: to be
    /// counted again); `Shared::history_len` learns it after the commit.
    history_len: HashMap<u16, Option<u64>>,
    /// Types this batch interned, in id order after the registry's: the registry learns them
    /// after the commit.
    new_agents: Vec<AgentType>,
    new_artifacts: Vec<crate::domain::ArtifactType>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::TaskStatus;
    use crate::events::no_publisher;
    use crate::store::{Durability, Store, StoreConfig};

    #[test]
    fn a_panic_abandons_its_batch_and_the_writer_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = StoreConfig::new(dir.path());
        config.durability = Durability::None;
        let store = Store::open(&config, no_publisher()).unwrap();
        let before = store.latest_seq();
        let error = store.write_blocking(meta::InjectPanic).unwrap_err();
        assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
        assert!(store.writer_alive());
        // Nothing of the batch was committed, and the next write works.
        assert_eq!(store.latest_seq(), before);
        let project = store
            .write_blocking(CreateProject {
                name: "after".into(),
                description: None,
            })
            .unwrap();
        assert_eq!(
            store.get_project(&project.id).unwrap().unwrap().name,
            "after"
        );
        assert_eq!(store.latest_seq(), before + 1);
        store.close();
    }

    #[test]
    fn trimmed_events_leave_index_entries_that_readers_skip_until_they_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = StoreConfig::new(dir.path());
        config.durability = Durability::None;
        config.event_retention = 10;
        let store = Store::open(&config, no_publisher()).unwrap();
        let mut projects = Vec::new();
        for name in ["a", "b", "c"] {
            projects.push(
                store
                    .write_blocking(CreateProject {
                        name: name.into(),
                        description: None,
                    })
                    .unwrap()
                    .id,
            );
        }
        // 3 projects and 3 x 8 tasks: 27 events at least, the newest 10 kept.
        for round in 0..8 {
            for p in &projects {
                store
                    .write_blocking(CreateTask {
                        project_id: *p,
                        agent_type: crate::domain::AgentType::parse("coder").unwrap(),
                        instructions: format!("t{round}"),
                        context_ids: Vec::new(),
                        priority: 3,
                    })
                    .unwrap();
            }
        }
        let latest = store.latest_seq();
        assert_eq!(store.oldest_seq().unwrap(), latest - 9);
        let index_entries = |store: &Store| -> Vec<u64> {
            let txn =
                redb::ReadableDatabase::begin_read(&*store.shared.database().unwrap()).unwrap();
            let table = txn.open_table(tables::EVENTS_BY_PROJECT).unwrap();
            use redb::ReadableTable;
            let mut seqs: Vec<u64> = table
                .iter()
                .unwrap()
                .map(|e| u64::from_be_bytes(e.unwrap().0.value()[16..].try_into().unwrap()))
                .collect();
            seqs.sort_unstable();
            seqs
        };
        // Every event's entry is still there: the trims removed the events only.
        assert_eq!(index_entries(&store), (1..=latest).collect::<Vec<_>>());
        // Readers start at the oldest event kept: each project's newest, nothing trimmed.
        let mut seen = Vec::new();
        for p in &projects {
            let (events, more) = store.events(Some(p), 0, 100).unwrap();
            assert!(!more);
            let (replayed, _) = store.replay(Some(p), 0, 100).unwrap();
            assert_eq!(
                replayed.iter().map(|e| e.seq).collect::<Vec<_>>(),
                events.iter().map(|(s, _)| *s).collect::<Vec<_>>()
            );
            assert!(
                events.iter().all(|(seq, _)| *seq > latest - 10),
                "{events:?}"
            );
            seen.extend(events.into_iter().map(|(seq, _)| seq));
        }
        seen.sort_unstable();
        assert_eq!(seen, ((latest - 9)..=latest).collect::<Vec<_>>());
        assert!(store.check().unwrap().is_consistent());
        // Removed in bounded steps, stream by stream.
        let streams = store.event_streams();
        assert_eq!(
            streams.len(),
            4,
            "three projects and the stream of no project"
        );
        assert!(store.event_index_has_trimmed(&streams).unwrap());
        // The stream of no project has no event at all: nothing of it to remove.
        assert!(
            !store
                .event_index_has_trimmed(&[tables::GLOBAL_STREAM])
                .unwrap()
        );
        let removed = store
            .write_blocking(TrimEventIndex {
                streams: streams.clone(),
                max: 5,
            })
            .unwrap();
        assert_eq!(removed, 5);
        assert_eq!(index_entries(&store).len() as u64, latest - 5);
        let removed = store
            .write_blocking(TrimEventIndex {
                streams: streams.clone(),
                max: 1000,
            })
            .unwrap();
        assert_eq!(removed, latest - 10 - 5);
        assert!(!store.event_index_has_trimmed(&streams).unwrap());
        assert_eq!(
            index_entries(&store),
            ((latest - 9)..=latest).collect::<Vec<_>>()
        );
        assert!(store.check().unwrap().is_consistent());
        store.close();
    }

    /// Opens a store without durability, with one project.
    fn store_with_project(dir: &std::path::Path) -> (Store, Id) {
        let mut config = StoreConfig::new(dir);
        config.durability = Durability::None;
        let store = Store::open(&config, no_publisher()).unwrap();
        let project = store
            .write_blocking(CreateProject {
                name: "p".into(),
                description: None,
            })
            .unwrap();
        (store, project.id)
    }

    fn create_task(store: &Store, project: Id, agent_type: AgentType) -> Task {
        store
            .write_blocking(CreateTask {
                project_id: project,
                agent_type,
                instructions: "x".into(),
                context_ids: Vec::new(),
                priority: crate::domain::tasks::DEFAULT_PRIORITY,
            })
            .unwrap()
    }

    fn event_types(store: &Store, since: u64) -> Vec<String> {
        let (events, _) = store.events(None, since, 100).unwrap();
        events
            .iter()
            .map(|(_, json)| {
                let v: serde_json::Value = serde_json::from_str(json).unwrap();
                v["event_type"].as_str().unwrap().to_string()
            })
            .collect()
    }

    #[test]
    fn a_waiting_claim_is_handed_its_task_in_the_commit_that_created_it() {
        let dir = tempfile::tempdir().unwrap();
        let (store, project) = store_with_project(dir.path());
        let mut first = store.wait_for_task(
            store.agent_id(&AgentType::CODER).unwrap(),
            "first".into(),
            60_000_000,
            None,
        );
        let mut second = store.wait_for_task(
            store.agent_id(&AgentType::CODER).unwrap(),
            "second".into(),
            60_000_000,
            None,
        );
        let before = store.latest_seq();
        // Another agent type's task is nobody's here.
        create_task(&store, project, AgentType::TESTER);
        let created = create_task(&store, project, AgentType::CODER);
        // The create's answer is the task as created; the waiter got it claimed, by the same
        // commit (no other write happened).
        assert_eq!(created.status, TaskStatus::Pending);
        let handed = first.task.try_recv().expect("handed over with the commit");
        assert_eq!(handed.id, created.id);
        assert_eq!(handed.status, TaskStatus::Working);
        assert_eq!(handed.worker_id.as_deref(), Some("first"));
        assert!(second.task.try_recv().is_err(), "one task, one waiter");
        let stored = store.get_task(&created.id).unwrap().unwrap();
        assert_eq!(stored.lease_id, handed.lease_id);
        assert_eq!(
            event_types(&store, before),
            [
                "task_created",
                "task_created",
                "task_started",
                "agent_status_change"
            ]
        );
        assert!(store.check().unwrap().is_consistent());
        store.close();
    }

    #[test]
    fn a_hand_off_whose_waiter_went_away_is_released() {
        let dir = tempfile::tempdir().unwrap();
        let (store, project) = store_with_project(dir.path());
        let mut gone = store.wait_for_task(
            store.agent_id(&AgentType::CODER).unwrap(),
            "gone".into(),
            60_000_000,
            None,
        );
        // The client goes away after the writer took its claim, before the commit: here, its
        // receiver closes while it is still queued.
        gone.task.close();
        let before = store.latest_seq();
        let created = create_task(&store, project, AgentType::CODER);
        // The release is the writer's next batch, without any other write.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let released = loop {
            let t = store.get_task(&created.id).unwrap().unwrap();
            if t.status == TaskStatus::Pending && t.attempts == 1 {
                break t;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "never released: {t:?}"
            );
            std::thread::yield_now();
        };
        assert_eq!(released.lease_id, None);
        assert_eq!(released.worker_id, None);
        let types = event_types(&store, before);
        assert_eq!(types.first().map(String::as_str), Some("task_created"));
        assert!(types.contains(&"task_started".to_string()), "{types:?}");
        assert!(
            types.contains(&"task_lease_expired".to_string()),
            "{types:?}"
        );
        // The task is claimable again, by a claim that asks.
        let claimed = store
            .write_blocking(Claim {
                agent_type: AgentType::CODER,
                worker_id: "here".into(),
                lease: 60_000_000,
                claimer: None,
            })
            .unwrap()
            .expect("claimable again");
        assert_eq!(claimed.id, created.id);
        assert!(store.check().unwrap().is_consistent());
        store.close();
    }

    #[test]
    fn an_idempotency_key_answers_its_original_until_it_is_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(std::sync::atomic::AtomicI64::new(1_000_000));
        let reader = clock.clone();
        let mut config = StoreConfig::new(dir.path());
        config.durability = Durability::None;
        config.clock = crate::store::Clock(Arc::new(move || reader.load(Ordering::SeqCst)));
        config.idempotency_ttl = 10_000_000;
        let store = Store::open(&config, no_publisher()).unwrap();
        let create = |name: &str, fingerprint: u8| Idempotent {
            inner: CreateProject {
                name: name.into(),
                description: None,
            },
            key: [7; 20],
            fingerprint: [fingerprint; 20],
        };
        let first = store.write_blocking(create("a", 1)).unwrap();
        let again = store.write_blocking(create("a", 1)).unwrap();
        assert_eq!(first, again);
        let refused = store.write_blocking(create("b", 2)).unwrap_err();
        assert!(matches!(
            refused,
            StoreError::Domain(DomainError::IdempotencyKeyReused { .. })
        ));
        // Past its lifetime the key no longer holds: a new write.
        clock.store(12_000_000, Ordering::SeqCst);
        let later = store.write_blocking(create("c", 3)).unwrap();
        assert_ne!(later.id, first.id);
        // Trimming forgets keys remembered before the cut, with their index entries.
        let trimmed = store
            .write_blocking(TrimIdempotency {
                before: 12_000_001,
                keep: u64::MAX,
                max: 100,
            })
            .unwrap();
        assert_eq!(trimmed, 1);
        let fresh = store.write_blocking(create("d", 4)).unwrap();
        assert_ne!(fresh.id, later.id);
        assert!(store.check().unwrap().is_consistent());
        store.close();
    }
}
