//! The single writer thread. It drains its queue into one write transaction (group commit), applies
//! each command — record, index entries and the event describing the change, all in that one
//! transaction — commits (durably unless configured otherwise) and only then answers the callers,
//! updates the summaries and the cache, and hands the events to the publisher.
//!
//! Every command checks everything it needs before it writes anything, so a refused command leaves
//! nothing behind even when other commands of the same batch commit.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError};
use std::thread::JoinHandle;

use bytes::Bytes;
use parking_lot::Mutex;
use redb::{ReadableTable, Table, WriteTransaction};
use serde::de::DeserializeOwned;
use tokio::sync::oneshot;

use crate::domain::TaskTransition;
use crate::domain::{
    AgentStatus, AgentType, ArtifactType, DomainError, EventType, HitlAction, HitlStatus, Id,
    Micros, OversightLevel, ProjectStatus, TaskStatus, Vocabulary, hitl_outcome, now_micros,
    task_transition,
};
use crate::events::{self, CommittedEvent, EventDraft, Publisher};
use crate::json::object_string;

use super::cache::Change as CacheChange;
use super::codec::{decode, encode};
use super::records::*;
use super::tables::{self, ArtifactKeys, HitlKeys, TaskKeys};
use super::{
    CacheKey, Durability, ProjectSummary, Shared, StoreConfig, StoreError, TaskSettings,
    metric_names,
};

mod artifacts;
mod batch;
mod hitl;
mod retention;
mod tasks;
mod workflows;

use batch::read;
use tasks::task_event_data;
use workflows::misanswered;

/// A change to the store.
#[derive(Clone, Debug)]
pub enum Command {
    CreateProject {
        name: String,
        description: Option<String>,
    },
    CreateTask {
        project_id: Id,
        agent_type: AgentType,
        instructions: String,
        context_ids: Vec<Id>,
    },
    SetTaskStatus {
        task_id: Id,
        status: TaskStatus,
        /// JSON text.
        output: Option<String>,
        error_message: Option<String>,
    },
    ResetAgent {
        agent_type: AgentType,
    },
    CreateArtifact {
        project_id: Id,
        source_agent: AgentType,
        artifact_type: ArtifactType,
        /// JSON text.
        content: String,
        /// JSON text.
        metadata: Option<String>,
    },
    UpdateArtifact {
        artifact_id: Id,
        /// JSON text.
        content: Option<String>,
        /// JSON text.
        metadata: Option<String>,
    },
    DeleteArtifact {
        artifact_id: Id,
    },
    CreateHitl {
        project_id: Id,
        task_id: Option<Id>,
        question: String,
        options: Vec<String>,
        expires_in_seconds: Option<u64>,
    },
    RespondHitl {
        hitl_id: Id,
        action: HitlAction,
        /// JSON text.
        content: Option<String>,
        comment: Option<String>,
    },
    BulkApproveHitl {
        hitl_ids: Vec<Id>,
        comment: Option<String>,
    },
    SetOversightLevel {
        project_id: Id,
        level: OversightLevel,
    },
    /// Deletes the oldest events, those with seq <= `through`, at most `max` of them. No event.
    TrimEvents {
        through: u64,
        max: usize,
    },
    /// A test's injected fault: applying it panics.
    #[cfg(test)]
    InjectPanic,
    /// Deletes an agent type's oldest status changes, those with seq <= `through`, at most `max`
    /// of them. No event.
    TrimAgentHistory {
        agent_type: AgentType,
        through: u64,
        max: usize,
    },
    /// Hands the oldest pending task of the agent type to one worker, under a lease.
    Claim {
        agent_type: AgentType,
        worker_id: String,
        /// Microseconds.
        lease: Micros,
    },
    /// Extends a working task's lease by `lease` from now.
    Heartbeat {
        task_id: Id,
        worker_id: Option<String>,
        /// Microseconds.
        lease: Micros,
    },
    /// Fires the timers due by `now`, at most `max` of them.
    FireTimers {
        now: Micros,
        max: usize,
    },
    /// Starts a workflow on a project: its first phase's task.
    StartWorkflow {
        project_id: Id,
        workflow: String,
        /// JSON text.
        context: Option<String>,
    },
    /// A write round trip for readiness: records the time in the meta table. No event.
    Probe,
    /// Measures the bytes of the file in use (walks every table: run it rarely). No event.
    MeasureUsage,
    /// An alert changed state: only its event (`alert_firing` or `alert_resolved`), no record.
    RecordAlert {
        firing: bool,
        data: String,
    },
}

/// How a task's status changes.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Change {
    To(TaskTransition),
    /// working → pending: the worker's lease ran out.
    LeaseExpired,
}

/// A worker taking a task.
struct Claim {
    worker_id: String,
    lease_expires_at: Micros,
}

/// What a committed command produced.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    Project(Project),
    Task(Task),
    Agent(Agent),
    Artifact(Artifact),
    ArtifactDeleted(Id),
    Hitl(HitlRequest),
    /// A HITL request answered; `workflow_resumed` when it was a workflow's gate, which the
    /// answer moved on (handed off, or sent back to its phase).
    HitlAnswered {
        request: HitlRequest,
        workflow_resumed: bool,
    },
    /// The request had passed its `expires_at`: it is now `expired` and was not answered.
    HitlExpired(HitlRequest),
    BulkApproved {
        approved: Vec<HitlRequest>,
        skipped: Vec<(Id, String)>,
    },
    /// How many events were trimmed.
    Trimmed(u64),
    Probed,
    /// No pending task of that agent type.
    NothingToClaim,
    Workflow(WorkflowRun),
    /// How many timers acted.
    Fired(u64),
    /// Bytes of the file in use.
    Usage(u64),
    Recorded,
}

enum Msg {
    Write(Command, oneshot::Sender<Result<Reply, StoreError>>),
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
    pub(crate) fn submit(
        &self,
        command: Command,
    ) -> Result<oneshot::Receiver<Result<Reply, StoreError>>, StoreError> {
        if !self.shared.writer_alive.load(Ordering::Acquire) {
            return Err(StoreError::WriterGone);
        }
        let (reply, answer) = oneshot::channel();
        self.shared.queue_depth.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(Msg::Write(command, reply)) {
            Ok(()) => Ok(answer),
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
) -> Result<WriterHandle, StoreError> {
    let (tx, rx) = std::sync::mpsc::sync_channel(config.writer_queue.max(1));
    let durability = match config.durability {
        Durability::Immediate => redb::Durability::Immediate,
        Durability::None => redb::Durability::None,
    };
    let max_batch = config.max_batch.max(1);
    let thread_shared = shared.clone();
    let thread = std::thread::Builder::new()
        .name("flightdeck-writer".into())
        .spawn(move || {
            let writer = Writer {
                shared: thread_shared,
                durability,
                max_batch,
                publisher,
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
    durability: redb::Durability,
    max_batch: usize,
    publisher: Publisher,
}

type Pending = Vec<(Command, oneshot::Sender<Result<Reply, StoreError>>)>;

impl Writer {
    fn run(self, rx: Receiver<Msg>) {
        let mut next_seq = self.shared.latest_seq.load(Ordering::Acquire) + 1;
        let mut stop = false;
        while !stop {
            let mut pending: Pending = Vec::new();
            match rx.recv() {
                Ok(Msg::Write(c, r)) => pending.push((c, r)),
                Ok(Msg::Shutdown) | Err(_) => stop = true,
            }
            while !stop && pending.len() < self.max_batch {
                match rx.try_recv() {
                    Ok(Msg::Write(c, r)) => pending.push((c, r)),
                    Ok(Msg::Shutdown) => stop = true,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => stop = true,
                }
            }
            if !pending.is_empty() {
                self.shared
                    .queue_depth
                    .fetch_sub(pending.len(), Ordering::Relaxed);
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    self.commit_batch(pending, &mut next_seq)
                }));
                if outcome.is_err() {
                    // After its commit (publishing, the caches): what committed stays; its callers
                    // are told the writer failed. The writer goes on.
                    tracing::error!("the writer panicked after committing a batch");
                }
            }
        }
        if matches!(self.durability, redb::Durability::None) {
            // Non-durable commits reach the disk only with a later durable one.
            let final_commit = self
                .shared
                .database()
                .and_then(|db| Ok(db.begin_write()?.commit()?));
            if let Err(e) = final_commit {
                tracing::error!(error = %e, "final durable commit failed");
            }
        }
        self.shared.writer_alive.store(false, Ordering::Release);
        // Anything still queued is answered `WriterGone` when its sender drops with `rx`.
    }

    fn commit_batch(&self, pending: Pending, next_seq: &mut u64) {
        let (commands, replies): (Vec<_>, Vec<_>) = pending.into_iter().unzip();
        metrics::histogram!(metric_names::WRITE_BATCH_SIZE).record(commands.len() as f64);
        metrics::gauge!(metric_names::WRITER_QUEUE_DEPTH)
            .set(self.shared.queue_depth.load(Ordering::Relaxed) as f64);
        let now = now_micros();
        let started = std::time::Instant::now();
        // A panic while applying (a bug, never bad input) abandons this batch only: its
        // transaction is dropped uncommitted, its callers are answered, and the writer goes on.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.apply_all(commands, now, *next_seq)
        }))
        .unwrap_or_else(|_| {
            tracing::error!("the writer panicked while applying a batch; the batch is abandoned");
            Err(StoreError::Unavailable(
                "the writer failed on this batch; nothing of it was committed; retry".into(),
            ))
        });
        metrics::histogram!(metric_names::COMMIT_SECONDS).record(started.elapsed().as_secs_f64());
        match result {
            Ok((outcomes, output)) => {
                *next_seq = output.next_seq;
                self.after_commit(output);
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(outcome.map_err(StoreError::Domain));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "write transaction failed; nothing of it was committed");
                let message = e.to_string();
                for reply in replies {
                    let error = match &e {
                        StoreError::DiskFull(_) => StoreError::DiskFull(message.clone()),
                        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
                        _ => StoreError::Storage(message.clone()),
                    };
                    let _ = reply.send(Err(error));
                }
                // An I/O error leaves redb refusing every later write until the database is
                // reopened; the next write does that once there is room (`Shared::heal`).
                if matches!(e, StoreError::DiskFull(_) | StoreError::Storage(_)) {
                    self.shared.mark_poisoned();
                }
            }
        }
    }

    #[allow(clippy::type_complexity)]
    fn apply_all(
        &self,
        commands: Vec<Command>,
        now: Micros,
        next_seq: u64,
    ) -> Result<(Vec<Result<Reply, DomainError>>, BatchOutput), StoreError> {
        self.shared.heal()?;
        let mut txn = self.shared.database()?.begin_write()?;
        txn.set_durability(self.durability)?;
        let mut outcomes = Vec::with_capacity(commands.len());
        let output = {
            let mut batch = Batch::open(&txn, &self.shared, now, next_seq)?;
            for command in commands {
                match batch.apply(command) {
                    Ok(reply) => outcomes.push(Ok(reply)),
                    Err(ApplyError::Domain(e)) => outcomes.push(Err(e)),
                    Err(ApplyError::Storage(e)) => return Err(e),
                }
            }
            batch.finish()?
        };
        commit(txn)?;
        Ok((outcomes, output))
    }

    fn after_commit(&self, output: BatchOutput) {
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
    }
}

fn commit(txn: WriteTransaction) -> Result<(), StoreError> {
    txn.commit()?;
    Ok(())
}

/// Why one command of a batch failed: its own fault (answered, the batch goes on) or the storage's
/// (the whole batch is abandoned).
enum ApplyError {
    Domain(DomainError),
    Storage(StoreError),
}

impl From<DomainError> for ApplyError {
    fn from(e: DomainError) -> ApplyError {
        ApplyError::Domain(e)
    }
}

impl From<StoreError> for ApplyError {
    fn from(e: StoreError) -> ApplyError {
        match e {
            StoreError::Domain(d) => ApplyError::Domain(d),
            other => ApplyError::Storage(other),
        }
    }
}

impl From<redb::StorageError> for ApplyError {
    fn from(e: redb::StorageError) -> ApplyError {
        ApplyError::Storage(e.into())
    }
}

type ApplyResult<T> = Result<T, ApplyError>;

/// What a batch hands over once its transaction has committed.
struct BatchOutput {
    next_seq: u64,
    events: Vec<CommittedEvent>,
    summaries: HashMap<Id, ProjectSummary>,
    /// What the response cache must learn once this commits.
    changes: Vec<CacheChange>,
}

type RecordTable<'t> = Table<'t, &'static [u8; 16], &'static [u8]>;
type Index<'t, const N: usize> = Table<'t, &'static [u8; N], ()>;

/// Every table, opened once per transaction, plus what the batch has produced so far.
struct Batch<'t> {
    txn: &'t WriteTransaction,
    shared: &'t Shared,
    now: Micros,
    next_seq: u64,
    meta: Table<'t, &'static str, u64>,
    first_seq: u64,
    projects: RecordTable<'t>,
    tasks: RecordTable<'t>,
    artifacts: RecordTable<'t>,
    hitl: RecordTable<'t>,
    agents: Table<'t, u8, &'static [u8]>,
    agent_history: Table<'t, &'static [u8; 9], &'static [u8]>,
    events: Table<'t, u64, &'static [u8]>,
    tasks_by_project: Index<'t, 32>,
    tasks_by_status: Index<'t, 33>,
    tasks_by_agent: Index<'t, 33>,
    tasks_by_agent_status: Index<'t, 18>,
    timers: Index<'t, 25>,
    workflows: RecordTable<'t>,
    settings: &'t TaskSettings,
    artifacts_by_project: Index<'t, 32>,
    artifacts_by_type: Index<'t, 33>,
    artifacts_by_source: Index<'t, 33>,
    hitl_by_project: Index<'t, 32>,
    hitl_by_project_status: Index<'t, 33>,
    hitl_by_status: Index<'t, 17>,
    events_by_project: Index<'t, 24>,
    committed: Vec<CommittedEvent>,
    /// Copies of the summaries this batch changed; they replace the shared ones after the commit.
    summaries: HashMap<Id, ProjectSummary>,
    changes: Vec<CacheChange>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::no_publisher;
    use crate::store::{Store, StoreConfig};

    #[test]
    fn a_panic_abandons_its_batch_and_the_writer_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = StoreConfig::new(dir.path());
        config.durability = Durability::None;
        let store = Store::open(&config, no_publisher()).unwrap();
        let before = store.latest_seq();
        let error = store.write_blocking(Command::InjectPanic).unwrap_err();
        assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
        assert!(store.writer_alive());
        // Nothing of the batch was committed, and the next write works.
        assert_eq!(store.latest_seq(), before);
        let created = store
            .write_blocking(Command::CreateProject {
                name: "after".into(),
                description: None,
            })
            .unwrap();
        let Reply::Project(project) = created else {
            panic!("{created:?}")
        };
        assert_eq!(
            store.get_project(&project.id).unwrap().unwrap().name,
            "after"
        );
        assert_eq!(store.latest_seq(), before + 1);
        store.close();
    }
}
