//! The store: the only module that imports redb. This file is its facade (`Store`); the rest:
//!
//! - `config`: how it is opened (`StoreConfig`, `Durability`, `Clock`);
//! - `error`: `StoreError`, whose storage failures keep their source (`Cause`);
//! - `summary`: what it hands out from memory (`ProjectSummary`, `Totals`, cache keys and figures);
//! - `shared`: the state readers and the writer share (`Shared`), opening and reopening the
//!   database, the schema's creation and migration at open;
//! - `tables`: table definitions and composite index keys;
//! - `codec`: how the records (`domain::records`) are encoded;
//! - `writer`: the single writer thread, group commit, index maintenance and the event log;
//! - `read`: read transactions, pagination, project statuses;
//! - `cache`: the response cache, bounded in bytes, patched by the writer;
//! - `check`: the consistency check behind `flightdeck check`;
//! - `wal`: the write-ahead log in front of redb: records, segments, checkpoints' bookkeeping and
//!   the replay at open.
//!
//! Reads never wait for the writer (redb MVCC). What `Shared` keeps in memory is changed only by
//! the writer, after its commit succeeded (the one exception, the waiting claims a batch serves,
//! is explained at `Batch::serve_waiting_claims` and in ARCHITECTURE.md).

mod backup;
mod cache;
mod check;
mod codec;
mod config;
mod error;
mod handoff;
mod migrate;
mod queues;
mod quorum;
mod read;
mod replication;
mod shared;
mod status;
mod summary;
mod tables;
mod types;
mod usage;
mod wal;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use parking_lot::{Mutex, RwLock};
use redb::ReadableTable;

use crate::domain::{Id, Micros};
use crate::events::Publisher;

pub use crate::domain::TaskSettings;
pub use crate::domain::records::{
    Agent, AgentHistoryEntry, Artifact, DeadLetter, HitlHistoryEntry, HitlRequest, PhaseRun,
    PhaseStatus, Project, RunStatus, Task, WorkflowRun,
};
pub use backup::{backup_database, compact_database, restore_database};
pub use check::{CheckReport, check_database};
pub use config::{Backend, Clock, DB_FILE, Durability, StoreConfig};
pub use error::{Cause, StoreError};
pub use handoff::Ticket;
pub use queues::QueueView;
pub use quorum::{Connected, Quorum};
pub use read::{
    ArtifactFilter, HitlFilter, LoggedEvent, Page, TaskFilter, decode_cursor, encode_cursor,
};
pub use replication::{Backlog, Gone, Replicated};
use shared::begin_read;
pub(crate) use shared::{Shared, open_existing, open_recovered, private_dir};
use shared::{init_schema, redb_cache_size};
pub use summary::{CacheKey, CacheStats, ProjectSummary, Totals};
pub use tables::DEAD_LETTERS_KEPT;
/// The commands of the store, each its own type with its own result (`Store::write`).
pub mod command {
    pub use super::writer::{
        AddDeadLetter, BulkApproveHitl, BulkApproved, CancelWorkflow, Claim, CreateArtifact,
        CreateHitl, CreateProject, CreateTask, DeleteArtifact, DeleteDeadLetters, DeleteWorkflow,
        FireTimers, Heartbeat, HitlAnswer, Idempotent, InternAgentType, Probe, PutOutcome,
        PutWorkflow, QueueChange, RecordAlert, Remembered, ResetAgent, RespondHitl,
        SetOversightLevel, SetProjectPaused, SetQueue, SetTaskStatus, SetWebhookCursor,
        StartWorkflow, Then, TrimAgentHistory, TrimEventIndex, TrimEvents, TrimIdempotency,
        UpdateArtifact, Write,
    };
    pub use super::writer::{
        BudgetSet, DeleteBudget, Held, PutBudget, Recorded, ReleaseHeld, ReportUsage, UsageRecorded,
    };
}
pub use usage::MAX_ROWS as USAGE_MAX_ROWS;
pub use usage::{
    GroupBy, GroupKey, Held as HeldByBudgets, Scope as UsageScope, UsageQuery, UsageSums,
};
pub use wal::{LogFile, LogStorage, LogStore, WAL_DIR};
pub use writer::Write;

pub mod metric_names;

/// A handle to the open store. Cheap to clone; the writer stops when `close` is called.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
    writer: writer::WriterHandle,
}

impl Store {
    /// Opens (creating if needed) the database in `config.data_dir`, checks its schema version,
    /// rebuilds the summaries from the indexes and starts the writer thread.
    pub fn open(config: &StoreConfig, publisher: Publisher) -> Result<Store, StoreError> {
        shared::private_dir(&config.data_dir).map_err(|e| {
            let what = format!("cannot create data directory {}", config.data_dir.display());
            StoreError::storage(what, e)
        })?;
        let path = config.data_dir.join(DB_FILE);
        let new = !path.exists() && config.backend.is_none();
        let mut builder = redb::Builder::new();
        builder.set_cache_size(redb_cache_size(config.page_cache_bytes));
        let db = match &config.backend {
            None => builder.create(&path),
            Some(backend) => backend.open(&builder),
        }
        .map_err(|e| StoreError::storage(format!("cannot open {}", path.display()), e))?;
        if new {
            shared::private_file(&path).map_err(|e| {
                StoreError::storage(format!("cannot protect {}", path.display()), e)
            })?;
        }
        let log_storage: Arc<dyn wal::LogStorage> = match &config.log_storage {
            Some(storage) => storage.0.clone(),
            None => Arc::new(wal::Files {
                dir: config.data_dir.join(WAL_DIR),
            }),
        };
        // Before the schema: the log's records are written in the schema the database had.
        let recovered = wal::recover(&db, &*log_storage)?;
        init_schema(&db)?;
        let registry = read::registry(&db, config)?;
        // Per-agent-type state is held in arrays indexed by the type's id, room for every id the
        // registry may give.
        let agent_slots = registry.agents.allowed.max.max(registry.agents.len());
        let (summaries, latest_seq) = read::rebuild_summaries(&db)?;
        let pending = read::pending_by_agent(&db, agent_slots)?;
        let shared = Arc::new(Shared {
            db: RwLock::new(Some(Arc::new(db))),
            page_cache_bytes: config.page_cache_bytes,
            poisoned: AtomicBool::new(false),
            summaries: RwLock::new(summaries),
            cache: Mutex::new(cache::ResponseCache::new(config.cache_bytes)),
            latest_seq: AtomicU64::new(latest_seq),
            queue_depth: AtomicUsize::new(0),
            writer_alive: AtomicBool::new(true),
            used_bytes: AtomicU64::new(0),
            opened: std::time::Instant::now(),
            last_commit: AtomicU64::new(0),
            path: path.clone(),
            backend: config.backend.clone(),
            log_storage: log_storage.clone(),
            failure: tokio::sync::watch::Sender::new(None),
            log_syncs: Arc::default(),
            replayed: (recovered.records, recovered.seconds),
            settings: config.tasks.clone(),
            workflows: config.workflows.clone(),
            max_fan_out: config.max_fan_out,
            prices: config.prices.clone(),
            max_models: config.max_models,
            clock: config.clock.clone(),
            claimable: (0..agent_slots)
                .map(|_| tokio::sync::Notify::new())
                .collect(),
            claim_turn: Mutex::new(vec![None; agent_slots]),
            pending,
            waiting: (0..agent_slots).map(|_| AtomicUsize::new(0)).collect(),
            handoffs: handoff::Handoffs::new(agent_slots),
            types: RwLock::new(registry),
            queue_waits: Mutex::new(std::collections::VecDeque::new()),
            progress: Mutex::new(shared::ProgressBoard::default()),
            progress_budget: config.progress_bytes,
            page_bytes: config.page_bytes,
            idempotency_keep: config.idempotency_keep,
            idempotency_ttl: config.idempotency_ttl,
            event_retention: config.event_retention.max(1),
            agent_history_retention: config.agent_history_retention.max(1),
            history_len: Mutex::default(),
            leader: config.follow.clone(),
            backlog: (config.serve_followers && config.durability != Durability::None).then(|| {
                Arc::new(replication::Backlog::new(
                    config.replication_backlog,
                    recovered.next_lsn - 1,
                ))
            }),
            quorum: match config.sync_replicas {
                n if n > 0 && config.serve_followers => {
                    Some(quorum::Quorum::start(n, config.sync_timeout)?)
                }
                _ => None,
            },
            applied_lsn: tokio::sync::watch::Sender::new(recovered.next_lsn - 1),
        });
        let wal = match config.durability {
            Durability::None => None,
            mode => {
                let failing = Arc::downgrade(&shared);
                let log_config = wal::LogConfig {
                    mode: match mode {
                        Durability::Periodic => wal::SyncMode::Periodic(config.sync_interval),
                        _ => wal::SyncMode::Immediate,
                    },
                    segment_bytes: config.segment_bytes.max(1 << 16),
                    checkpoint_bytes: config.checkpoint_bytes.max(1),
                    checkpoint_age: config.checkpoint_age,
                    spread: Some(config.checkpoint_spread),
                    schema: tables::SCHEMA_VERSION,
                };
                Some(wal::Wal::start(
                    log_storage,
                    log_config,
                    &recovered,
                    Arc::new(move |why| {
                        if let Some(shared) = failing.upgrade() {
                            shared.fail(why);
                        }
                    }),
                    shared.log_syncs.clone(),
                )?)
            }
        };
        let writer = writer::start(shared.clone(), config, publisher, wal)?;
        Ok(Store { shared, writer })
    }

    /// The agent type `text` names in `field`, if this store takes it (the syntax, and the
    /// closed list when there is one; a name new to the store is counted when it is written).
    pub fn agent_type(
        &self,
        field: &str,
        text: &str,
    ) -> Result<crate::domain::AgentType, crate::domain::DomainError> {
        self.shared.types.read().agents.allowed.parse(field, text)
    }

    /// The artifact type `text` names in `field`, as `agent_type`.
    pub fn artifact_type(
        &self,
        field: &str,
        text: &str,
    ) -> Result<crate::domain::ArtifactType, crate::domain::DomainError> {
        self.shared
            .types
            .read()
            .artifacts
            .allowed
            .parse(field, text)
    }

    /// The id of an agent type in use; `None` for one never used.
    pub fn agent_id(&self, name: &crate::domain::AgentType) -> Option<u16> {
        self.shared.types.read().agent(name)
    }

    /// The id of `name`, interning it first (one durable write) if it is new: what a claim does
    /// before it waits for a task of a type nothing has named yet.
    pub async fn intern_agent_type(
        &self,
        name: &crate::domain::AgentType,
    ) -> Result<u16, StoreError> {
        if let Some(id) = self.agent_id(name) {
            return Ok(id);
        }
        self.write(command::InternAgentType { name: name.clone() })
            .await?;
        self.agent_id(name)
            .ok_or_else(|| StoreError::Corrupt(format!("agent type {name} was not interned")))
    }

    /// Queues a write and waits for its durable commit.
    pub async fn write<C: Write>(&self, command: C) -> Result<C::Output, StoreError> {
        self.writer
            .submit(command)?
            .await
            .map_err(|_| StoreError::WriterGone)?
    }

    /// `write` for callers outside an async runtime (tests, tools).
    pub fn write_blocking<C: Write>(&self, command: C) -> Result<C::Output, StoreError> {
        self.writer
            .submit(command)?
            .blocking_recv()
            .map_err(|_| StoreError::WriterGone)?
    }

    /// Stops the writer after it has committed everything already queued. Idempotent.
    pub fn close(&self) {
        self.writer.close();
    }

    /// Pending tasks of `agent_type`, as of the last commit (the writer updates the count after
    /// each commit, before it wakes waiting claims). Zero means no claim of that type can succeed
    /// now, so a claim need not queue for the writer to learn it.
    pub fn pending_count(&self, agent: u16) -> u64 {
        self.shared.pending[usize::from(agent)].load(Ordering::Acquire)
    }

    /// Signalled (`notify_one`, first waiter first) once per task of `agent_type` that became
    /// claimable, after the commit that made it so. A claim that waits registers with it before it
    /// tries, so no task slips between the try and the wait.
    pub fn claimable(&self, agent: u16) -> &tokio::sync::Notify {
        &self.shared.claimable[usize::from(agent)]
    }

    /// Leaves a waiting claim for the writer, which hands it the next task of `agent_type` that
    /// becomes claimable, claimed for `worker_id` with `lease` in the very commit that made it
    /// claimable (`handoff`). The claim leaves the queue when the ticket is dropped.
    pub fn wait_for_task(
        &self,
        agent: u16,
        worker_id: String,
        lease: Micros,
        claimer: Option<String>,
    ) -> handoff::Ticket<'_> {
        self.shared.handoffs.wait(agent, worker_id, lease, claimer)
    }

    /// Most idempotency keys remembered (`--idempotency-max-keys`).
    pub fn idempotency_keep(&self) -> u64 {
        self.shared.idempotency_keep
    }

    /// How long an idempotency key is remembered (microseconds).
    pub fn idempotency_ttl(&self) -> Micros {
        self.shared.idempotency_ttl
    }

    /// Status changes kept per agent type (`--agent-history-retention`).
    pub fn agent_history_retention(&self) -> u64 {
        self.shared.agent_history_retention
    }

    /// Events kept in the log (`--event-retention`).
    pub fn event_retention(&self) -> u64 {
        self.shared.event_retention
    }

    /// Sets the queue depth gauges to the pending counts (the writer keeps them from then on):
    /// for start-up, once the metrics recorder is installed.
    pub fn report_queue_depth(&self) {
        let types = self.shared.types.read();
        for (agent, n) in types.agents.names().iter().zip(&self.shared.pending) {
            metrics::gauge!(metric_names::QUEUE_DEPTH, "agent_type" => agent.to_string())
                .set(n.load(Ordering::Relaxed) as f64);
        }
    }

    /// Records a working task's latest progress report (JSON text of an object); it is shown with
    /// the task and stored with it at its next durable change. False when too many tasks hold
    /// reports already, or their bytes would pass `--progress-mib` (the report still reaches the
    /// WebSocket subscribers).
    pub fn set_progress(&self, task: Id, report: String) -> bool {
        let kept = self
            .shared
            .progress
            .lock()
            .put(task, report, self.shared.progress_budget);
        if !kept {
            metrics::counter!(metric_names::PROGRESS_NOT_KEPT).increment(1);
        }
        kept
    }

    /// Most bytes of one page of a list (`--max-page-bytes`).
    pub fn page_bytes(&self) -> usize {
        self.shared.page_bytes
    }

    /// Bytes of the progress reports held (`flightdeck_progress_bytes`).
    pub fn progress_bytes(&self) -> usize {
        self.shared.progress.lock().bytes
    }

    /// The task's latest progress report not yet stored with it.
    pub fn progress(&self, task: &Id) -> Option<String> {
        self.shared.progress.lock().get(task).cloned()
    }

    pub fn latest_seq(&self) -> u64 {
        self.shared.latest_seq.load(Ordering::Acquire)
    }

    pub fn writer_queue_depth(&self) -> usize {
        self.shared.queue_depth.load(Ordering::Relaxed)
    }

    pub fn writer_alive(&self) -> bool {
        self.shared.writer_alive.load(Ordering::Acquire)
    }

    /// How many syncs of the write-ahead log the last `window` seconds saw, and their p99 in
    /// seconds (the `wal_sync_p99` alert signal).
    pub fn log_sync_p99(&self, window: u64) -> (u64, f64) {
        queues::wait_p99(
            &self.shared.log_syncs.lock(),
            window,
            crate::domain::now_micros(),
        )
    }

    /// The records the log's replay gave the database when it opened, and the seconds it took.
    pub fn replayed(&self) -> (u64, f64) {
        self.shared.replayed
    }

    /// Why the store stopped taking writes for good, if it did (a failed sync of its log).
    pub fn failure(&self) -> Option<String> {
        self.shared.failure.borrow().clone()
    }

    /// Waits until the store stops taking writes for good, and says why.
    pub async fn failed(&self) -> String {
        let mut failure = self.shared.failure.subscribe();
        match failure.wait_for(Option::is_some).await {
            Ok(why) => why.clone().unwrap_or_default(),
            // The store is gone: it will not fail any more.
            Err(_) => std::future::pending().await,
        }
    }

    /// How long the writer has committed nothing (since the store opened, at most).
    pub fn writer_idle_for(&self) -> std::time::Duration {
        let last =
            std::time::Duration::from_micros(self.shared.last_commit.load(Ordering::Relaxed));
        self.shared.opened.elapsed().saturating_sub(last)
    }

    pub fn summary(&self, project: &Id) -> Option<ProjectSummary> {
        self.shared.summaries.read().get(project).cloned()
    }

    /// A project's workflow, if one was started.
    pub fn workflow(&self, project: &Id) -> Result<Option<WorkflowRun>, StoreError> {
        let txn = begin_read(&self.shared)?;
        let table = txn.open_table(tables::WORKFLOWS)?;
        match table.get(project.as_bytes())? {
            Some(bytes) => Ok(Some(codec::decode(bytes.value())?)),
            None => Ok(None),
        }
    }

    /// Every workflow definition a run can start from: the built-in and the config file's
    /// (read-only, no dates), then those stored through the API, by name. A stored one whose
    /// name the config file took since is not listed (the config file's wins).
    pub fn workflow_definitions(
        &self,
    ) -> Result<Vec<crate::domain::workflow::Definition>, StoreError> {
        let mut all: Vec<crate::domain::workflow::Definition> = self
            .shared
            .workflows
            .iter()
            .map(|w| crate::domain::workflow::Definition {
                workflow: w.clone(),
                created_at: 0,
                updated_at: 0,
            })
            .collect();
        let txn = begin_read(&self.shared)?;
        let table = txn.open_table(tables::WORKFLOW_DEFS)?;
        for entry in table.iter()? {
            let (key, value) = entry?;
            let name = key.value();
            if self.shared.workflows.iter().any(|w| w.name == name) {
                continue;
            }
            if let Some(def) = read::stored_definition(name, value.value())? {
                all.push(def);
            }
        }
        Ok(all)
    }

    /// One definition by name, as `workflow_definitions` lists it.
    pub fn workflow_definition(
        &self,
        name: &str,
    ) -> Result<Option<crate::domain::workflow::Definition>, StoreError> {
        if let Some(w) = self.shared.workflows.iter().find(|w| w.name == name) {
            return Ok(Some(crate::domain::workflow::Definition {
                workflow: w.clone(),
                created_at: 0,
                updated_at: 0,
            }));
        }
        let txn = begin_read(&self.shared)?;
        let table = txn.open_table(tables::WORKFLOW_DEFS)?;
        match table.get(name)? {
            Some(bytes) => read::stored_definition(name, bytes.value()),
            None => Ok(None),
        }
    }

    /// The task timing settings.
    pub fn task_settings(&self) -> &TaskSettings {
        &self.shared.settings
    }

    /// The earliest timer's deadline, if any (a cheap read: the first key of the timers table).
    pub fn next_timer(&self) -> Result<Option<Micros>, StoreError> {
        let txn = begin_read(&self.shared)?;
        let timers = txn.open_table(tables::TIMERS)?;
        Ok(timers.first()?.map(|(key, _)| {
            let mut at = [0u8; 8];
            at.copy_from_slice(&key.value()[..8]);
            u64::from_be_bytes(at) as Micros
        }))
    }

    /// Sums over every project's summary.
    pub fn totals(&self) -> Totals {
        let summaries = self.shared.summaries.read();
        let mut totals = Totals {
            projects: summaries.len() as u64,
            ..Totals::default()
        };
        for s in summaries.values() {
            for (t, n) in totals.task_counts.iter_mut().zip(s.task_counts) {
                *t += n;
            }
            totals.hitl_pending += s.hitl_pending;
            totals.artifacts += s.artifacts;
        }
        totals
    }

    pub fn cache_stats(&self) -> CacheStats {
        self.shared.cache.lock().stats()
    }

    /// The directory holding the database.
    pub fn data_dir(&self) -> PathBuf {
        self.shared
            .path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }

    /// Size of the database file, in bytes (0 if it cannot be read).
    pub fn file_size(&self) -> u64 {
        std::fs::metadata(&self.shared.path)
            .map(|m| m.len())
            .unwrap_or(0)
    }

    /// Bytes of the file the tables' pages take, as last measured (`measure_usage`).
    pub fn used_bytes(&self) -> u64 {
        self.shared.used_bytes.load(Ordering::Relaxed)
    }

    /// Measures the bytes of the file the tables' pages take (their data, their B-trees' pages
    /// and what is unused in those pages): a walk of every table's B-tree in a read transaction,
    /// so the writer goes on meanwhile (it took 0.3 s at 200,000 artifacts). Blocking.
    pub fn measure_usage(&self) -> Result<u64, StoreError> {
        use redb::ReadableTableMetadata;
        let txn = begin_read(&self.shared)?;
        let mut used = 0u64;
        macro_rules! add {
            ($table:ident) => {
                match txn.open_table(tables::$table) {
                    Ok(table) => {
                        let stats = table.stats()?;
                        used += stats.stored_bytes()
                            + stats.metadata_bytes()
                            + stats.fragmented_bytes();
                    }
                    Err(redb::TableError::TableDoesNotExist(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            };
        }
        tables::for_each_table!(add);
        self.shared.used_bytes.store(used, Ordering::Relaxed);
        Ok(used)
    }

    /// The consistency check of `flightdeck check`, on the open store, against one snapshot.
    pub fn check(&self) -> Result<CheckReport, StoreError> {
        check::check_open(&*self.shared.database()?)
    }
}

#[cfg(feature = "fuzzing")]
/// Decodes `bytes` as every stored record type: the entry point of the codec fuzzer. A corrupt
/// record must give an error, never a panic.
#[doc(hidden)]
pub fn fuzz_decode_records(bytes: &[u8]) {
    let _ = codec::decode::<crate::domain::records::Project>(bytes);
    let _ = codec::decode::<crate::domain::records::Task>(bytes);
    let _ = codec::decode::<crate::domain::records::Agent>(bytes);
    let _ = codec::decode::<crate::domain::records::AgentHistoryEntry>(bytes);
    let _ = codec::decode::<crate::domain::records::Artifact>(bytes);
    let _ = codec::decode::<crate::domain::records::HitlRequest>(bytes);
    let _ = codec::decode::<crate::domain::records::WorkflowRun>(bytes);
    let _ = codec::decode::<crate::domain::records::EventRecord>(bytes);
    let _ = codec::decode::<crate::domain::records::DeadLetter>(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::{ReadableDatabase, TableHandle};

    /// A store without a log in `dir`, holding one project.
    fn store_with_project(dir: &Path) -> (Store, crate::domain::records::Project) {
        let mut config = StoreConfig::new(dir);
        config.durability = Durability::None;
        let store = Store::open(&config, crate::events::no_publisher()).unwrap();
        let p = store
            .write_blocking(command::CreateProject {
                name: "p".into(),
                description: None,
            })
            .unwrap();
        (store, p)
    }

    /// The bytes in use are measured in a read transaction: they grow with what is stored, stay
    /// inside the file, and are measured while a write transaction is open (once the writer's
    /// own measurement, which would have waited for it).
    #[test]
    fn usage_is_measured_beside_an_open_write_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let (store, p) = store_with_project(dir.path());
        let small = store.measure_usage().unwrap();
        assert!(small > 0);
        for _ in 0..200 {
            store
                .write_blocking(command::CreateArtifact {
                    project_id: p.id,
                    source_agent: crate::domain::AgentType::CODER,
                    artifact_type: crate::domain::ArtifactType::SOURCE_CODE,
                    content: format!("{{\"text\":\"{}\"}}", "x".repeat(4000)),
                    metadata: None,
                })
                .unwrap();
        }
        let db = store.shared.database().unwrap();
        let open = db.begin_write().unwrap();
        let large = store.measure_usage().unwrap();
        drop(open);
        assert!(large >= small + 200 * 4000, "{small} then {large}");
        assert!(
            large <= store.file_size(),
            "{large} > {}",
            store.file_size()
        );
        assert_eq!(store.used_bytes(), large);
    }

    /// The schema's table list (`tables::for_each_table`) is exactly what a database that has seen
    /// every kind of write holds: a table the writer opens but the list forgets would be missing
    /// from every backup.
    #[test]
    fn the_table_list_names_every_table_a_database_holds() {
        let dir = tempfile::tempdir().unwrap();
        let (store, p) = store_with_project(dir.path());
        store
            .write_blocking(command::StartWorkflow {
                project_id: p.id,
                workflow: "sdlc".into(),
                context: None,
            })
            .unwrap();
        store
            .write_blocking(command::CreateHitl {
                project_id: p.id,
                task_id: None,
                question: "q".into(),
                options: Vec::new(),
                expires_in_seconds: Some(60),
                assignees: Vec::new(),
                on_timeout: None,
            })
            .unwrap();
        store
            .write_blocking(command::CreateArtifact {
                project_id: p.id,
                source_agent: crate::domain::AgentType::CODER,
                artifact_type: crate::domain::ArtifactType::SOURCE_CODE,
                content: "{}".into(),
                metadata: None,
            })
            .unwrap();
        let db = store.shared.database().unwrap();
        let mut held: Vec<String> = db
            .begin_read()
            .unwrap()
            .list_tables()
            .unwrap()
            .map(|t| t.name().to_string())
            .collect();
        held.sort();
        let mut listed: Vec<String> = Vec::new();
        macro_rules! name {
            ($table:ident) => {
                listed.push(tables::$table.name().to_string());
            };
        }
        tables::for_each_table!(name);
        listed.sort();
        assert_eq!(held, listed);
        // The check reads every one of them.
        let mut declared: Vec<&str> = Vec::new();
        macro_rules! declared {
            ($table:ident) => {
                declared.push(stringify!($table));
            };
        }
        tables::for_each_table!(declared);
        declared.sort();
        let mut checked: Vec<&str> = check::CHECKED_TABLES
            .iter()
            .chain(tables::TaskKeys::TABLES)
            .chain(tables::ArtifactKeys::TABLES)
            .chain(tables::HitlKeys::TABLES)
            .copied()
            .collect();
        checked.sort();
        assert_eq!(declared, checked);
        assert!(store.check().unwrap().is_consistent());
        store.close();
    }
}
