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

/// A stored workflow's phase, or `Corrupt` when the run names a phase it does not have.
fn phase_at(run: &WorkflowRun, index: usize) -> Result<&PhaseRun, StoreError> {
    run.phases.get(index).ok_or_else(|| {
        StoreError::Corrupt(format!(
            "the workflow of project {} is at phase {index} of {}",
            run.project_id,
            run.phases.len()
        ))
    })
}

/// A step of the writer answered with a reply of another kind: a bug, reported as a storage
/// failure (the batch is abandoned) instead of a panic.
fn misanswered(step: &str) -> ApplyError {
    ApplyError::Storage(StoreError::Storage(format!(
        "{step} answered with an unexpected reply"
    )))
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

impl<'t> Batch<'t> {
    fn open(
        txn: &'t WriteTransaction,
        shared: &'t Shared,
        now: Micros,
        next_seq: u64,
    ) -> Result<Batch<'t>, StoreError> {
        Ok(Batch {
            txn,
            shared,
            now,
            next_seq,
            meta: txn.open_table(tables::META)?,
            first_seq: next_seq,
            projects: txn.open_table(tables::PROJECTS)?,
            tasks: txn.open_table(tables::TASKS)?,
            artifacts: txn.open_table(tables::ARTIFACTS)?,
            hitl: txn.open_table(tables::HITL)?,
            agents: txn.open_table(tables::AGENTS)?,
            agent_history: txn.open_table(tables::AGENT_HISTORY)?,
            events: txn.open_table(tables::EVENTS)?,
            tasks_by_project: txn.open_table(tables::TASKS_BY_PROJECT)?,
            tasks_by_status: txn.open_table(tables::TASKS_BY_PROJECT_STATUS)?,
            tasks_by_agent: txn.open_table(tables::TASKS_BY_PROJECT_AGENT)?,
            tasks_by_agent_status: txn.open_table(tables::TASKS_BY_AGENT_STATUS)?,
            timers: txn.open_table(tables::TIMERS)?,
            workflows: txn.open_table(tables::WORKFLOWS)?,
            settings: &shared.settings,
            artifacts_by_project: txn.open_table(tables::ARTIFACTS_BY_PROJECT)?,
            artifacts_by_type: txn.open_table(tables::ARTIFACTS_BY_PROJECT_TYPE)?,
            artifacts_by_source: txn.open_table(tables::ARTIFACTS_BY_PROJECT_SOURCE)?,
            hitl_by_project: txn.open_table(tables::HITL_BY_PROJECT)?,
            hitl_by_project_status: txn.open_table(tables::HITL_BY_PROJECT_STATUS)?,
            hitl_by_status: txn.open_table(tables::HITL_BY_STATUS)?,
            events_by_project: txn.open_table(tables::EVENTS_BY_PROJECT)?,
            committed: Vec::new(),
            summaries: HashMap::new(),
            changes: Vec::new(),
        })
    }

    fn finish(mut self) -> Result<BatchOutput, StoreError> {
        if self.next_seq != self.first_seq {
            self.meta.insert(tables::META_LAST_SEQ, self.next_seq - 1)?;
        }
        Ok(BatchOutput {
            next_seq: self.next_seq,
            events: self.committed,
            summaries: self.summaries,
            changes: self.changes,
        })
    }

    fn apply(&mut self, command: Command) -> ApplyResult<Reply> {
        match command {
            Command::CreateProject { name, description } => self.create_project(name, description),
            Command::CreateTask {
                project_id,
                agent_type,
                instructions,
                context_ids,
            } => self.create_task(project_id, agent_type, instructions, context_ids),
            Command::SetTaskStatus {
                task_id,
                status,
                output,
                error_message,
            } => self.set_task_status(task_id, status, output, error_message),
            Command::ResetAgent { agent_type } => self.reset_agent(agent_type),
            Command::CreateArtifact {
                project_id,
                source_agent,
                artifact_type,
                content,
                metadata,
            } => self.create_artifact(project_id, source_agent, artifact_type, content, metadata),
            Command::UpdateArtifact {
                artifact_id,
                content,
                metadata,
            } => self.update_artifact(artifact_id, content, metadata),
            Command::DeleteArtifact { artifact_id } => self.delete_artifact(artifact_id),
            Command::CreateHitl {
                project_id,
                task_id,
                question,
                options,
                expires_in_seconds,
            } => self.create_hitl(project_id, task_id, question, options, expires_in_seconds),
            Command::RespondHitl {
                hitl_id,
                action,
                content,
                comment,
            } => self.respond_hitl(hitl_id, action, content, comment),
            Command::BulkApproveHitl { hitl_ids, comment } => self.bulk_approve(hitl_ids, comment),
            Command::SetOversightLevel { project_id, level } => {
                self.set_oversight_level(project_id, level)
            }
            Command::TrimEvents { through, max } => self.trim_events(through, max),
            #[cfg(test)]
            Command::InjectPanic => panic!("injected fault"),
            Command::TrimAgentHistory {
                agent_type,
                through,
                max,
            } => self.trim_agent_history(agent_type, through, max),
            Command::Claim {
                agent_type,
                worker_id,
                lease,
            } => self.claim(agent_type, worker_id, lease),
            Command::Heartbeat {
                task_id,
                worker_id,
                lease,
            } => self.heartbeat(task_id, worker_id, lease),
            Command::FireTimers { now, max } => self.fire_timers(now, max),
            Command::StartWorkflow {
                project_id,
                workflow,
                context,
            } => self.start_workflow(project_id, workflow, context),
            Command::Probe => {
                self.meta
                    .insert(tables::META_PROBE, self.now.max(0) as u64)?;
                Ok(Reply::Probed)
            }
            Command::MeasureUsage => {
                let stats = self.txn.stats()?;
                let used = stats.allocated_pages() * stats.page_size() as u64;
                self.shared.used_bytes.store(used, Ordering::Relaxed);
                Ok(Reply::Usage(used))
            }
            Command::RecordAlert { firing, data } => {
                let kind = if firing {
                    EventType::AlertFiring
                } else {
                    EventType::AlertResolved
                };
                self.emit(kind, None, None, None, data)?;
                Ok(Reply::Recorded)
            }
        }
    }

    // ----- commands -------------------------------------------------------------------------

    fn create_project(&mut self, name: String, description: Option<String>) -> ApplyResult<Reply> {
        let project = Project {
            id: Id::new_v7(),
            name,
            description,
            status: ProjectStatus::Active,
            oversight_level: OversightLevel::Medium,
            created_at: self.now,
            updated_at: self.now,
        };
        self.projects
            .insert(project.id.as_bytes(), encode(&project).as_slice())?;
        self.summaries.insert(project.id, ProjectSummary::default());
        let data = object_string(|o| {
            o.id("id", project.id)
                .str("name", &project.name)
                .opt_str("description", project.description.as_deref())
                .str("status", project.status.as_str())
                .timestamp("created_at", project.created_at);
        });
        self.emit(
            EventType::ProjectCreated,
            Some(project.id),
            None,
            None,
            data,
        )?;
        Ok(Reply::Project(project))
    }

    fn create_task(
        &mut self,
        project_id: Id,
        agent_type: AgentType,
        instructions: String,
        context_ids: Vec<Id>,
    ) -> ApplyResult<Reply> {
        self.require_project(&project_id)?;
        for (i, context_id) in context_ids.iter().enumerate() {
            let artifact: Option<Artifact> = read(&self.artifacts, context_id)?;
            if artifact.is_none_or(|a| a.project_id != project_id) {
                return Err(DomainError::invalid(
                    format!("context_ids[{i}]"),
                    format!("artifact {context_id} does not exist in project {project_id}"),
                )
                .into());
            }
        }
        let task = Task {
            id: Id::new_v7(),
            project_id,
            agent_type,
            status: TaskStatus::Pending,
            instructions,
            context_ids,
            output: None,
            error_message: None,
            created_at: self.now,
            updated_at: self.now,
            started_at: None,
            completed_at: None,
            attempts: 0,
            failures: 0,
            worker_id: None,
            lease_expires_at: None,
            retry_at: None,
            timeout_at: None,
        };
        self.put_task(None, &task)?;
        let data = task_event_data(&task);
        self.emit(
            EventType::TaskCreated,
            Some(project_id),
            Some(task.id),
            Some(agent_type),
            data,
        )?;
        Ok(Reply::Task(task))
    }

    fn set_task_status(
        &mut self,
        task_id: Id,
        status: TaskStatus,
        output: Option<String>,
        error_message: Option<String>,
    ) -> ApplyResult<Reply> {
        let old: Task =
            read(&self.tasks, &task_id)?.ok_or_else(|| DomainError::not_found("task", task_id))?;
        let transition = task_transition(old.status, status)?;
        let task = self.change_task(old, Change::To(transition), output, error_message, None)?;
        Ok(Reply::Task(task))
    }

    /// The oldest pending task of the agent type, now working for `worker_id` under a lease.
    fn claim(
        &mut self,
        agent_type: AgentType,
        worker_id: String,
        lease: Micros,
    ) -> ApplyResult<Reply> {
        let lo =
            tables::agent_status_key(agent_type.code(), TaskStatus::Pending.code(), &Id([0; 16]));
        let hi = tables::agent_status_key(
            agent_type.code(),
            TaskStatus::Pending.code(),
            &Id([0xff; 16]),
        );
        let first = match self
            .tasks_by_agent_status
            .range::<&[u8; 18]>(&lo..=&hi)?
            .next()
        {
            Some(entry) => Some(tables::trailing_id(entry?.0.value())),
            None => None,
        };
        let Some(id) = first else {
            return Ok(Reply::NothingToClaim);
        };
        let old: Task = read(&self.tasks, &id)?.ok_or_else(|| {
            StoreError::Corrupt(format!("claim index names task {id}, which is missing"))
        })?;
        let claim = Claim {
            worker_id,
            lease_expires_at: self.now.saturating_add(lease),
        };
        let task = self.change_task(
            old,
            Change::To(TaskTransition::Start),
            None,
            None,
            Some(claim),
        )?;
        Ok(Reply::Task(task))
    }

    /// Extends a working task's lease; only its worker may, when a worker id is given.
    fn heartbeat(
        &mut self,
        task_id: Id,
        worker_id: Option<String>,
        lease: Micros,
    ) -> ApplyResult<Reply> {
        let old: Task =
            read(&self.tasks, &task_id)?.ok_or_else(|| DomainError::not_found("task", task_id))?;
        if old.status != TaskStatus::Working {
            return Err(DomainError::InvalidTransition {
                message: format!(
                    "task {task_id} is {}, not working: there is no lease to extend",
                    old.status
                ),
            }
            .into());
        }
        if let (Some(asked), Some(holder)) = (&worker_id, &old.worker_id)
            && asked != holder
        {
            return Err(DomainError::InvalidTransition {
                message: format!("task {task_id} is claimed by another worker"),
            }
            .into());
        }
        let mut task = old.clone();
        task.lease_expires_at = Some(self.now.saturating_add(lease));
        task.updated_at = self.now;
        self.put_task(Some(&old), &task)?;
        Ok(Reply::Task(task))
    }

    /// Applies a change of status with everything that follows from it: timestamps, the lease,
    /// failures and their retry or escalation, the event, and the agent's status.
    fn change_task(
        &mut self,
        old: Task,
        change: Change,
        output: Option<String>,
        error_message: Option<String>,
        claim: Option<Claim>,
    ) -> ApplyResult<Task> {
        let mut task = old.clone();
        task.updated_at = self.now;
        if output.is_some() {
            task.output = output;
        }
        if error_message.is_some() {
            task.error_message = error_message;
        }
        let mut escalate = false;
        let event = match change {
            Change::To(transition) => {
                task.status = match transition {
                    TaskTransition::Start => TaskStatus::Working,
                    TaskTransition::Complete => TaskStatus::Completed,
                    TaskTransition::Fail => TaskStatus::Failed,
                    TaskTransition::Cancel => TaskStatus::Cancelled,
                    TaskTransition::Retry => TaskStatus::Pending,
                };
                match transition {
                    TaskTransition::Start => {
                        task.started_at = Some(self.now);
                        task.timeout_at = Some(self.now.saturating_add(self.settings.task_timeout));
                        task.attempts += 1;
                        task.error_message = None;
                        task.completed_at = None;
                    }
                    TaskTransition::Complete | TaskTransition::Cancel => {
                        task.completed_at = Some(self.now);
                        task.retry_at = None;
                    }
                    TaskTransition::Fail => {
                        task.completed_at = Some(self.now);
                        task.failures += 1;
                        if task.failures < self.settings.max_attempts {
                            let backoff = self
                                .settings
                                .retry_backoff
                                .saturating_mul(1 << (task.failures - 1).min(20));
                            task.retry_at = Some(self.now.saturating_add(backoff));
                        } else {
                            task.retry_at = None;
                            escalate = true;
                        }
                    }
                    TaskTransition::Retry => {
                        task.completed_at = None;
                        task.retry_at = None;
                    }
                }
                transition.event_type()
            }
            Change::LeaseExpired => {
                task.status = TaskStatus::Pending;
                EventType::TaskLeaseExpired
            }
        };
        match claim {
            Some(c) => {
                task.worker_id = Some(c.worker_id);
                task.lease_expires_at = Some(c.lease_expires_at);
            }
            None if task.status != TaskStatus::Working => {
                task.worker_id = None;
                task.lease_expires_at = None;
                task.timeout_at = None;
            }
            None => {}
        }
        self.put_task(Some(&old), &task)?;
        let data = task_event_data(&task);
        self.emit(
            event,
            Some(task.project_id),
            Some(task.id),
            Some(task.agent_type),
            data,
        )?;
        // The agent follows its tasks: working while it holds a working task.
        let mut agent = self.agent(task.agent_type)?;
        let before = agent.clone();
        if task.status == TaskStatus::Working {
            agent.working_tasks += 1;
            agent.current_task_id = Some(task.id);
            agent.status = AgentStatus::Working;
            agent.error_message = None;
        } else if old.status == TaskStatus::Working {
            agent.working_tasks = agent.working_tasks.saturating_sub(1);
            if agent.current_task_id == Some(task.id) {
                agent.current_task_id = None;
            }
            if task.status == TaskStatus::Failed {
                agent.error_message = task.error_message.clone();
            }
            if agent.working_tasks == 0 && agent.status == AgentStatus::Working {
                agent.status = AgentStatus::Idle;
            }
        }
        if escalate {
            agent.status = AgentStatus::Error;
            agent.error_message = Some(format!(
                "task {} failed {} times: {}",
                task.id,
                task.failures,
                task.error_message.as_deref().unwrap_or("no error message")
            ));
        }
        if agent != before {
            agent.last_activity = self.now;
            self.put_agent(&before, &agent, Some((task.id, task.project_id)))?;
        }
        if task.status == TaskStatus::Completed {
            self.after_task_completed(&task)?;
        }
        if escalate {
            let question = format!(
                "Task {} ({}) failed {} times, last with: {}. Retry it or cancel it?",
                task.id,
                task.agent_type,
                task.failures,
                task.error_message.as_deref().unwrap_or("no error message")
            );
            self.create_hitl(
                task.project_id,
                Some(task.id),
                question,
                vec!["retry".into(), "cancel".into()],
                None,
            )?;
        }
        Ok(task)
    }

    /// Fires every timer due by `now` (at most `max`): lease expiries, work timeouts, retries and
    /// HITL expiries. A timer whose record no longer calls for it is simply gone: timers are an
    /// index derived from the records.
    fn fire_timers(&mut self, now: Micros, max: usize) -> ApplyResult<Reply> {
        let hi = tables::timer_key(now, tables::TimerKind::HitlExpiry, &Id([0xff; 16]));
        let mut due = Vec::new();
        for entry in self.timers.range::<&[u8; 25]>(..=&hi)?.take(max) {
            let (key, _) = entry?;
            let key = *key.value();
            due.push((
                key,
                tables::TimerKind::from_code(key[8]),
                tables::trailing_id(&key),
            ));
        }
        let mut fired = 0u64;
        for (key, kind, id) in due {
            let before = fired;
            match kind {
                Some(tables::TimerKind::LeaseExpiry) => {
                    if let Some(old) = read::<Task>(&self.tasks, &id)?
                        && old.status == TaskStatus::Working
                        && old.lease_expires_at.is_some_and(|at| at <= now)
                    {
                        self.change_task(old, Change::LeaseExpired, None, None, None)?;
                        fired += 1;
                    }
                }
                Some(tables::TimerKind::WorkTimeout) => {
                    if let Some(old) = read::<Task>(&self.tasks, &id)?
                        && old.status == TaskStatus::Working
                        && self.work_deadline(&old).is_some_and(|at| at <= now)
                    {
                        let message = format!(
                            "timed out: working for longer than {} ms",
                            self.settings.task_timeout / 1000
                        );
                        self.change_task(
                            old,
                            Change::To(TaskTransition::Fail),
                            None,
                            Some(message),
                            None,
                        )?;
                        fired += 1;
                    }
                }
                Some(tables::TimerKind::Retry) => {
                    if let Some(old) = read::<Task>(&self.tasks, &id)?
                        && old.status == TaskStatus::Failed
                        && old.retry_at.is_some_and(|at| at <= now)
                    {
                        self.change_task(old, Change::To(TaskTransition::Retry), None, None, None)?;
                        fired += 1;
                    }
                }
                Some(tables::TimerKind::HitlExpiry) => {
                    if let Some(old) = read::<HitlRequest>(&self.hitl, &id)?
                        && old.status == HitlStatus::Pending
                        && old.expires_at.is_some_and(|at| at <= now)
                    {
                        self.expire_hitl(old)?;
                        fired += 1;
                    }
                }
                None => {}
            }
            if fired == before {
                // A timer no record calls for (it cannot be, but it must not fire forever).
                tracing::warn!(?kind, %id, "removing a timer that no record calls for");
                self.timers.remove(&key)?;
            }
        }
        Ok(Reply::Fired(fired))
    }

    fn work_deadline(&self, task: &Task) -> Option<Micros> {
        (task.status == TaskStatus::Working)
            .then_some(task.timeout_at)
            .flatten()
    }

    fn reset_agent(&mut self, agent_type: AgentType) -> ApplyResult<Reply> {
        let before = self.agent(agent_type)?;
        let mut agent = before.clone();
        agent.status = AgentStatus::Idle;
        agent.current_task_id = None;
        agent.error_message = None;
        agent.last_activity = self.now;
        self.put_agent(&before, &agent, None)?;
        Ok(Reply::Agent(agent))
    }

    fn create_artifact(
        &mut self,
        project_id: Id,
        source_agent: AgentType,
        artifact_type: ArtifactType,
        content: String,
        metadata: Option<String>,
    ) -> ApplyResult<Reply> {
        self.require_project(&project_id)?;
        let artifact = Artifact {
            id: Id::new_v7(),
            project_id,
            source_agent,
            artifact_type,
            content,
            metadata,
            created_at: self.now,
            updated_at: self.now,
            version: 1,
        };
        self.put_artifact(None, Some(&artifact))?;
        let data = artifact_event_data(&artifact);
        self.emit(
            EventType::ArtifactCreated,
            Some(project_id),
            None,
            Some(source_agent),
            data,
        )?;
        Ok(Reply::Artifact(artifact))
    }

    fn update_artifact(
        &mut self,
        artifact_id: Id,
        content: Option<String>,
        metadata: Option<String>,
    ) -> ApplyResult<Reply> {
        let old: Artifact = read(&self.artifacts, &artifact_id)?
            .ok_or_else(|| DomainError::not_found("artifact", artifact_id))?;
        let mut artifact = old.clone();
        if let Some(content) = content {
            artifact.content = content;
        }
        if metadata.is_some() {
            artifact.metadata = metadata;
        }
        artifact.updated_at = self.now;
        artifact.version += 1;
        self.put_artifact(Some(&old), Some(&artifact))?;
        let data = artifact_event_data(&artifact);
        let (project, source) = (artifact.project_id, artifact.source_agent);
        self.emit(
            EventType::ArtifactUpdated,
            Some(project),
            None,
            Some(source),
            data,
        )?;
        Ok(Reply::Artifact(artifact))
    }

    fn delete_artifact(&mut self, artifact_id: Id) -> ApplyResult<Reply> {
        let old: Artifact = read(&self.artifacts, &artifact_id)?
            .ok_or_else(|| DomainError::not_found("artifact", artifact_id))?;
        self.put_artifact(Some(&old), None)?;
        let data = object_string(|o| {
            o.id("context_id", old.id)
                .str("artifact_type", old.artifact_type.as_str());
        });
        self.emit(
            EventType::ArtifactDeleted,
            Some(old.project_id),
            None,
            Some(old.source_agent),
            data,
        )?;
        Ok(Reply::ArtifactDeleted(artifact_id))
    }

    fn create_hitl(
        &mut self,
        project_id: Id,
        task_id: Option<Id>,
        question: String,
        options: Vec<String>,
        expires_in_seconds: Option<u64>,
    ) -> ApplyResult<Reply> {
        self.require_project(&project_id)?;
        if let Some(task_id) = task_id {
            let task: Option<Task> = read(&self.tasks, &task_id)?;
            if task.is_none_or(|t| t.project_id != project_id) {
                return Err(DomainError::invalid(
                    "task_id",
                    format!("task {task_id} does not exist in project {project_id}"),
                )
                .into());
            }
        }
        let expires_at = expires_in_seconds.map(|s| {
            self.now.saturating_add(
                i64::try_from(s)
                    .unwrap_or(i64::MAX)
                    .saturating_mul(1_000_000),
            )
        });
        let request = HitlRequest {
            id: Id::new_v7(),
            project_id,
            task_id,
            question,
            options,
            status: HitlStatus::Pending,
            created_at: self.now,
            updated_at: self.now,
            expires_at,
            responded_at: None,
            amended_content: None,
            response_comment: None,
            history: vec![HitlHistoryEntry {
                action: "created".into(),
                at: self.now,
                content: None,
                comment: None,
            }],
        };
        self.put_hitl(None, &request)?;
        let data = object_string(|o| {
            o.id("request_id", request.id)
                .str("question", &request.question)
                .strs("options", &request.options)
                .str("status", request.status.as_str())
                .opt_timestamp("expires_at", request.expires_at);
        });
        self.emit(
            EventType::HitlRequestCreated,
            Some(project_id),
            task_id,
            None,
            data,
        )?;
        Ok(Reply::Hitl(request))
    }

    fn respond_hitl(
        &mut self,
        hitl_id: Id,
        action: HitlAction,
        content: Option<String>,
        comment: Option<String>,
    ) -> ApplyResult<Reply> {
        let old: HitlRequest = read(&self.hitl, &hitl_id)?
            .ok_or_else(|| DomainError::not_found("hitl_request", hitl_id))?;
        if old.status == HitlStatus::Pending && old.expires_at.is_some_and(|e| e <= self.now) {
            return Ok(Reply::HitlExpired(self.expire_hitl(old)?));
        }
        let status = hitl_outcome(old.status, action)?;
        if action == HitlAction::Amend && content.is_none() {
            return Err(DomainError::invalid("content", "is required to amend").into());
        }
        let mut request = old.clone();
        request.status = status;
        request.updated_at = self.now;
        request.responded_at = Some(self.now);
        request.response_comment = comment.clone();
        if action == HitlAction::Amend {
            request.amended_content = content.clone();
        }
        request.history.push(HitlHistoryEntry {
            action: action.as_str().into(),
            at: self.now,
            content,
            comment,
        });
        self.put_hitl(Some(&old), &request)?;
        let data = object_string(|o| {
            o.id("request_id", request.id)
                .str("action", action.as_str())
                .str("status", request.status.as_str())
                .str("user_response", request.status.as_str())
                .opt_raw("amended_content", request.amended_content.as_deref())
                .opt_str("comment", request.response_comment.as_deref());
        });
        self.emit(
            EventType::HitlResponse,
            Some(request.project_id),
            request.task_id,
            None,
            data,
        )?;
        let workflow_resumed = self.after_gate_answered(&request, action)?;
        Ok(Reply::HitlAnswered {
            request,
            workflow_resumed,
        })
    }

    // ----- workflows ----------------------------------------------------------------------------

    fn start_workflow(
        &mut self,
        project_id: Id,
        name: String,
        context: Option<String>,
    ) -> ApplyResult<Reply> {
        let project = self.require_project(&project_id)?;
        let Some(def) = self
            .shared
            .workflows
            .iter()
            .find(|w| w.name == name)
            .cloned()
        else {
            let known: Vec<&str> = self
                .shared
                .workflows
                .iter()
                .map(|w| w.name.as_str())
                .collect();
            return Err(DomainError::invalid(
                "workflow",
                format!("unknown workflow `{name}`; known: {}", known.join(", ")),
            )
            .into());
        };
        if let Some(run) = read::<WorkflowRun>(&self.workflows, &project_id)?
            && !run.completed
        {
            return Err(DomainError::InvalidTransition {
                message: format!(
                    "project {project_id} already runs the `{}` workflow",
                    run.workflow
                ),
            }
            .into());
        }
        let phases = def
            .phases
            .iter()
            .map(|p| -> Result<PhaseRun, DomainError> {
                Ok(PhaseRun {
                    // Definitions are validated at start-up; a bad one still refuses, not panics.
                    agent_type: AgentType::parse(&p.agent_type).ok_or_else(|| {
                        DomainError::unknown_value::<AgentType>("agent_type", &p.agent_type)
                    })?,
                    instructions: crate::domain::workflow::render(
                        &p.instructions,
                        &project.name,
                        context.as_deref(),
                    ),
                    produces: p
                        .produces
                        .iter()
                        .filter_map(|k| ArtifactType::parse(k))
                        .collect(),
                    gated: crate::domain::workflow::gated(project.oversight_level, p.gate),
                    status: PhaseStatus::Waiting,
                    task_id: None,
                    gate_id: None,
                })
            })
            .collect::<Result<Vec<_>, DomainError>>()?;
        let mut run = WorkflowRun {
            project_id,
            workflow: name,
            context,
            phases,
            current: 0,
            completed: false,
            started_at: self.now,
            completed_at: None,
        };
        self.workflow_event(&run, "workflow_started", None, None)?;
        self.start_phase(&mut run, 0)?;
        self.workflows
            .insert(project_id.as_bytes(), encode(&run).as_slice())?;
        Ok(Reply::Workflow(run))
    }

    /// Creates a phase's task, with every artifact of the project so far as its context.
    fn start_phase(&mut self, run: &mut WorkflowRun, index: usize) -> ApplyResult<()> {
        let lo = tables::key2(&run.project_id, &Id([0; 16]));
        let hi = tables::key2(&run.project_id, &Id([0xff; 16]));
        let mut context_ids = Vec::new();
        for entry in self
            .artifacts_by_project
            .range::<&[u8; 32]>(&lo..=&hi)?
            .take(crate::domain::Limits::CONTEXT_IDS)
        {
            context_ids.push(tables::trailing_id(entry?.0.value()));
        }
        let phase = phase_at(run, index)?;
        let reply = self.create_task(
            run.project_id,
            phase.agent_type,
            phase.instructions.clone(),
            context_ids,
        )?;
        let Reply::Task(task) = reply else {
            return Err(misanswered("create_task"));
        };
        run.current = index as u32;
        run.phases[index].task_id = Some(task.id);
        run.phases[index].status = PhaseStatus::Running;
        self.workflow_event(run, "phase_started", Some(task.id), None)
    }

    /// A completed task that is its workflow's current phase: gate the hand-off or hand off.
    fn after_task_completed(&mut self, task: &Task) -> ApplyResult<()> {
        let Some(mut run) = read::<WorkflowRun>(&self.workflows, &task.project_id)? else {
            return Ok(());
        };
        let index = run.current as usize;
        if run.completed || phase_at(&run, index)?.task_id != Some(task.id) {
            return Ok(());
        }
        if run.phases[index].gated {
            let next = run
                .phases
                .get(index + 1)
                .map_or("completion".to_string(), |p| p.agent_type.to_string());
            let question = format!(
                "Approve the {} phase's work on this project and hand it to {next}?",
                run.phases[index].agent_type
            );
            let options = vec!["approve".into(), "reject".into(), "amend".into()];
            let Reply::Hitl(gate) =
                self.create_hitl(task.project_id, Some(task.id), question, options, None)?
            else {
                return Err(misanswered("create_hitl"));
            };
            run.phases[index].status = PhaseStatus::AwaitingApproval;
            run.phases[index].gate_id = Some(gate.id);
            self.workflow_event(&run, "gate_opened", Some(task.id), Some(gate.id))?;
        } else {
            self.hand_off(&mut run)?;
        }
        self.workflows
            .insert(task.project_id.as_bytes(), encode(&run).as_slice())?;
        Ok(())
    }

    /// The current phase is done: start the next, or complete the project.
    fn hand_off(&mut self, run: &mut WorkflowRun) -> ApplyResult<()> {
        let index = run.current as usize;
        phase_at(run, index)?;
        run.phases[index].status = PhaseStatus::Done;
        run.phases[index].gate_id = None;
        self.workflow_event(run, "phase_completed", run.phases[index].task_id, None)?;
        if index + 1 < run.phases.len() {
            return self.start_phase(run, index + 1);
        }
        run.completed = true;
        run.completed_at = Some(self.now);
        let old = self.require_project(&run.project_id)?;
        let mut project = old.clone();
        project.status = ProjectStatus::Completed;
        project.updated_at = self.now;
        self.projects
            .insert(project.id.as_bytes(), encode(&project).as_slice())?;
        self.changes
            .push(CacheChange::Invalidate(CacheKey::ProjectStatus(project.id)));
        self.workflow_event(run, "project_completed", None, None)
    }

    /// A human answered a workflow gate: approve hands off; amend stores the amended content as
    /// an artifact, then hands off; reject sends the phase's task back with the comment.
    /// Whether the request was the workflow's open gate (and so the workflow moved on).
    fn after_gate_answered(
        &mut self,
        request: &HitlRequest,
        action: HitlAction,
    ) -> ApplyResult<bool> {
        let Some(mut run) = read::<WorkflowRun>(&self.workflows, &request.project_id)? else {
            return Ok(false);
        };
        let index = run.current as usize;
        if run.completed || phase_at(&run, index)?.gate_id != Some(request.id) {
            return Ok(false);
        }
        match action {
            HitlAction::Approve => self.hand_off(&mut run)?,
            HitlAction::Amend => {
                let content = request
                    .amended_content
                    .clone()
                    .unwrap_or_else(|| "null".into());
                let agent = run.phases[index].agent_type;
                self.create_artifact(
                    run.project_id,
                    agent,
                    ArtifactType::HitlResponse,
                    content,
                    None,
                )?;
                self.hand_off(&mut run)?;
            }
            HitlAction::Reject => {
                let task_id = run.phases[index].task_id.ok_or_else(|| {
                    StoreError::Corrupt(format!(
                        "the workflow of project {} gates phase {index}, which has no task",
                        run.project_id
                    ))
                })?;
                let old: Task = read(&self.tasks, &task_id)?.ok_or_else(|| {
                    StoreError::Corrupt(format!("workflow names task {task_id}, which is missing"))
                })?;
                let mut task = old.clone();
                task.status = TaskStatus::Pending;
                task.completed_at = None;
                task.updated_at = self.now;
                task.instructions.push_str(&format!(
                    "\n\nReviewer feedback: {}",
                    request
                        .response_comment
                        .as_deref()
                        .unwrap_or("rejected without a comment")
                ));
                self.put_task(Some(&old), &task)?;
                let data = task_event_data(&task);
                self.emit(
                    EventType::TaskReopened,
                    Some(task.project_id),
                    Some(task.id),
                    Some(task.agent_type),
                    data,
                )?;
                run.phases[index].status = PhaseStatus::Running;
                run.phases[index].gate_id = None;
                self.workflow_event(&run, "phase_rejected", Some(task_id), Some(request.id))?;
            }
        }
        self.workflows
            .insert(run.project_id.as_bytes(), encode(&run).as_slice())?;
        Ok(true)
    }

    fn workflow_event(
        &mut self,
        run: &WorkflowRun,
        action: &str,
        task: Option<Id>,
        gate: Option<Id>,
    ) -> ApplyResult<()> {
        let phase = phase_at(run, run.current as usize)?;
        let data = object_string(|o| {
            o.str("workflow", &run.workflow)
                .str("action", action)
                .u64("phase", u64::from(run.current))
                .str("phase_agent", phase.agent_type.as_str())
                .opt_id("request_id", gate);
        });
        self.emit(
            EventType::WorkflowEvent,
            Some(run.project_id),
            task,
            Some(phase.agent_type),
            data,
        )?;
        Ok(())
    }

    fn expire_hitl(&mut self, old: HitlRequest) -> ApplyResult<HitlRequest> {
        let mut request = old.clone();
        request.status = HitlStatus::Expired;
        request.updated_at = self.now;
        request.history.push(HitlHistoryEntry {
            action: "expire".into(),
            at: self.now,
            content: None,
            comment: None,
        });
        self.put_hitl(Some(&old), &request)?;
        let data = object_string(|o| {
            o.id("request_id", request.id)
                .str("status", request.status.as_str())
                .opt_timestamp("expires_at", request.expires_at);
        });
        self.emit(
            EventType::HitlExpired,
            Some(request.project_id),
            request.task_id,
            None,
            data,
        )?;
        Ok(request)
    }

    fn bulk_approve(&mut self, hitl_ids: Vec<Id>, comment: Option<String>) -> ApplyResult<Reply> {
        let mut approved = Vec::new();
        let mut skipped = Vec::new();
        for id in hitl_ids {
            match self.respond_hitl(id, HitlAction::Approve, None, comment.clone()) {
                Ok(Reply::HitlAnswered { request, .. }) => approved.push(request),
                Ok(Reply::HitlExpired(_)) => skipped.push((id, "expired".to_string())),
                Ok(_) => return Err(misanswered("respond_hitl")),
                Err(ApplyError::Domain(e)) => skipped.push((id, e.to_string())),
                Err(storage) => return Err(storage),
            }
        }
        Ok(Reply::BulkApproved { approved, skipped })
    }

    fn set_oversight_level(&mut self, project_id: Id, level: OversightLevel) -> ApplyResult<Reply> {
        let old = self.require_project(&project_id)?;
        let mut project = old.clone();
        project.oversight_level = level;
        project.updated_at = self.now;
        self.projects
            .insert(project.id.as_bytes(), encode(&project).as_slice())?;
        self.changes
            .push(CacheChange::Invalidate(CacheKey::ProjectStatus(project.id)));
        let data = object_string(|o| {
            o.str("level", level.as_str())
                .str("previous_level", old.oversight_level.as_str());
        });
        self.emit(
            EventType::OversightLevelChanged,
            Some(project_id),
            None,
            None,
            data,
        )?;
        Ok(Reply::Project(project))
    }

    fn trim_events(&mut self, through: u64, max: usize) -> ApplyResult<Reply> {
        let mut doomed = Vec::new();
        for entry in self.events.range(..=through)?.take(max) {
            let (seq, value) = entry?;
            let record: EventRecord = decode(value.value())?;
            doomed.push((
                seq.value(),
                record.project_id.unwrap_or(tables::GLOBAL_STREAM),
            ));
        }
        for (seq, stream) in &doomed {
            self.events.remove(*seq)?;
            self.events_by_project
                .remove(&tables::event_project_key(stream, *seq))?;
        }
        Ok(Reply::Trimmed(doomed.len() as u64))
    }

    fn trim_agent_history(
        &mut self,
        agent_type: AgentType,
        through: u64,
        max: usize,
    ) -> ApplyResult<Reply> {
        let lo = tables::agent_history_key(agent_type.code(), 0);
        let hi = tables::agent_history_key(agent_type.code(), through);
        let mut doomed = Vec::new();
        for entry in self.agent_history.range::<&[u8; 9]>(&lo..=&hi)?.take(max) {
            let (key, _) = entry?;
            doomed.push(*key.value());
        }
        for key in &doomed {
            self.agent_history.remove(key)?;
        }
        Ok(Reply::Trimmed(doomed.len() as u64))
    }

    // ----- records and their indexes ---------------------------------------------------------

    fn require_project(&self, id: &Id) -> ApplyResult<Project> {
        Ok(read(&self.projects, id)?.ok_or_else(|| DomainError::not_found("project", id))?)
    }

    /// The batch's copy of a project's summary, taken from the shared map on first touch.
    fn summary(&mut self, project: Id) -> &mut ProjectSummary {
        let shared = self.shared;
        self.summaries.entry(project).or_insert_with(|| {
            shared
                .summaries
                .read()
                .get(&project)
                .cloned()
                .unwrap_or_default()
        })
    }

    fn put_task(&mut self, old: Option<&Task>, new: &Task) -> ApplyResult<()> {
        self.tasks
            .insert(new.id.as_bytes(), encode(new).as_slice())?;
        self.changes.push(CacheChange::Task {
            project: new.project_id,
            task: new.id,
            entry: Bytes::from(super::read::task_status_entry(new)),
        });
        let old_keys = old.map(TaskKeys::of);
        let new_keys = TaskKeys::of(new);
        reindex(
            &mut self.tasks_by_project,
            old_keys.map(|k| k.by_project),
            Some(new_keys.by_project),
        )?;
        reindex(
            &mut self.tasks_by_status,
            old_keys.map(|k| k.by_status),
            Some(new_keys.by_status),
        )?;
        reindex(
            &mut self.tasks_by_agent,
            old_keys.map(|k| k.by_agent),
            Some(new_keys.by_agent),
        )?;
        reindex(
            &mut self.tasks_by_agent_status,
            old_keys.map(|k| k.by_agent_status),
            Some(new_keys.by_agent_status),
        )?;
        let old_timers = old.map(tables::task_timers).unwrap_or_default();
        for (old_key, new_key) in old_timers.into_iter().zip(tables::task_timers(new)) {
            reindex(&mut self.timers, old_key, new_key)?;
        }
        let summary = self.summary(new.project_id);
        if let Some(old) = old {
            let slot = &mut summary.task_counts[usize::from(old.status.code())];
            *slot = slot.saturating_sub(1);
        }
        summary.task_counts[usize::from(new.status.code())] += 1;
        Ok(())
    }

    /// Writes, replaces (`old` and `new`) or deletes (`new` = None) an artifact.
    fn put_artifact(&mut self, old: Option<&Artifact>, new: Option<&Artifact>) -> ApplyResult<()> {
        let old_keys = old.map(ArtifactKeys::of);
        let new_keys = new.map(ArtifactKeys::of);
        match new {
            Some(a) => {
                self.artifacts
                    .insert(a.id.as_bytes(), encode(a).as_slice())?;
            }
            None => {
                if let Some(o) = old {
                    self.artifacts.remove(o.id.as_bytes())?;
                }
            }
        }
        reindex(
            &mut self.artifacts_by_project,
            old_keys.map(|k| k.by_project),
            new_keys.map(|k| k.by_project),
        )?;
        reindex(
            &mut self.artifacts_by_type,
            old_keys.map(|k| k.by_type),
            new_keys.map(|k| k.by_type),
        )?;
        reindex(
            &mut self.artifacts_by_source,
            old_keys.map(|k| k.by_source),
            new_keys.map(|k| k.by_source),
        )?;
        if let Some(o) = old {
            self.changes
                .push(CacheChange::Invalidate(CacheKey::Artifact(o.id)));
        }
        let delta: i64 = i64::from(new.is_some()) - i64::from(old.is_some());
        let project = new.or(old).map(|a| a.project_id);
        if let (Some(project), true) = (project, delta != 0) {
            let summary = self.summary(project);
            summary.artifacts = summary.artifacts.saturating_add_signed(delta);
        }
        Ok(())
    }

    fn put_hitl(&mut self, old: Option<&HitlRequest>, new: &HitlRequest) -> ApplyResult<()> {
        self.hitl
            .insert(new.id.as_bytes(), encode(new).as_slice())?;
        let old_keys = old.map(HitlKeys::of);
        let new_keys = HitlKeys::of(new);
        reindex(
            &mut self.hitl_by_project,
            old_keys.map(|k| k.by_project),
            Some(new_keys.by_project),
        )?;
        reindex(
            &mut self.hitl_by_project_status,
            old_keys.map(|k| k.by_project_status),
            Some(new_keys.by_project_status),
        )?;
        reindex(
            &mut self.hitl_by_status,
            old_keys.map(|k| k.by_status),
            Some(new_keys.by_status),
        )?;
        reindex(
            &mut self.timers,
            old.and_then(tables::hitl_timer),
            tables::hitl_timer(new),
        )?;
        let was_pending = old.is_some_and(|o| o.status == HitlStatus::Pending);
        let is_pending = new.status == HitlStatus::Pending;
        if was_pending != is_pending {
            let summary = self.summary(new.project_id);
            summary.hitl_pending = if is_pending {
                summary.hitl_pending + 1
            } else {
                summary.hitl_pending.saturating_sub(1)
            };
        }
        Ok(())
    }

    fn agent(&self, agent_type: AgentType) -> ApplyResult<Agent> {
        match self.agents.get(agent_type.code())? {
            Some(bytes) => Ok(decode(bytes.value())?),
            None => Ok(Agent::idle(agent_type)),
        }
    }

    /// Stores an agent's new state, its history entry and its `agent_status_change` event. A
    /// change caused by a task belongs to that task's project stream (its subscribers, not every
    /// connection, are told); a reset belongs to no project and reaches everyone.
    fn put_agent(
        &mut self,
        before: &Agent,
        agent: &Agent,
        cause: Option<(Id, Id)>,
    ) -> ApplyResult<()> {
        let (task_id, project_id) = cause.unzip();
        self.agents
            .insert(agent.agent_type.code(), encode(agent).as_slice())?;
        let data = object_string(|o| {
            o.str("agent_type", agent.agent_type.as_str())
                .str("status", agent.status.as_str())
                .str("previous_status", before.status.as_str())
                .opt_id("current_task_id", agent.current_task_id)
                .opt_str("error_message", agent.error_message.as_deref());
        });
        let seq = self.emit(
            EventType::AgentStatusChange,
            project_id,
            task_id,
            Some(agent.agent_type),
            data,
        )?;
        let entry = AgentHistoryEntry {
            seq,
            agent_type: agent.agent_type,
            status: agent.status,
            task_id,
            error_message: agent.error_message.clone(),
            at: self.now,
        };
        let key = tables::agent_history_key(agent.agent_type.code(), seq);
        self.agent_history.insert(&key, encode(&entry).as_slice())?;
        Ok(())
    }

    /// Appends an event to the log with the next seq, indexed by its project.
    fn emit(
        &mut self,
        event_type: EventType,
        project_id: Option<Id>,
        task_id: Option<Id>,
        agent_type: Option<AgentType>,
        data: String,
    ) -> ApplyResult<u64> {
        let seq = self.next_seq;
        let draft = EventDraft {
            event_type,
            project_id,
            task_id,
            agent_type,
            data,
        };
        let json = events::encode(seq, self.now, &draft);
        let record = EventRecord { project_id, json };
        self.events.insert(seq, encode(&record).as_slice())?;
        let stream = project_id.unwrap_or(tables::GLOBAL_STREAM);
        self.events_by_project
            .insert(&tables::event_project_key(&stream, seq), ())?;
        if let Some(project) = project_id {
            self.summary(project).latest_seq = seq;
        }
        self.next_seq += 1;
        self.committed.push(CommittedEvent {
            seq,
            event_type,
            project_id,
            committed_at: self.now,
            json: Bytes::from(record.json),
        });
        Ok(seq)
    }
}

fn read<T: DeserializeOwned>(table: &RecordTable<'_>, id: &Id) -> Result<Option<T>, StoreError> {
    match table.get(id.as_bytes())? {
        Some(bytes) => Ok(Some(decode(bytes.value())?)),
        None => Ok(None),
    }
}

/// Moves an index entry from its old key to its new one; nothing when they are equal.
fn reindex<const N: usize>(
    index: &mut Index<'_, N>,
    old: Option<[u8; N]>,
    new: Option<[u8; N]>,
) -> Result<(), redb::StorageError> {
    if old == new {
        return Ok(());
    }
    if let Some(old) = old {
        index.remove(&old)?;
    }
    if let Some(new) = new {
        index.insert(&new, ())?;
    }
    Ok(())
}

fn task_event_data(task: &Task) -> String {
    object_string(|o| {
        o.id("task_id", task.id)
            .str("agent_type", task.agent_type.as_str())
            .str("status", task.status.as_str())
            .u64("attempts", u64::from(task.attempts))
            .opt_raw("output", task.output.as_deref())
            .opt_str("error_message", task.error_message.as_deref());
    })
}

fn artifact_event_data(artifact: &Artifact) -> String {
    object_string(|o| {
        o.id("context_id", artifact.id)
            .str("artifact_type", artifact.artifact_type.as_str())
            .str("source_agent", artifact.source_agent.as_str())
            .u64("version", u64::from(artifact.version));
    })
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
