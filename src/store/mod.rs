//! The store: the only module that imports redb.
//!
//! - `tables`: table definitions and composite index keys;
//! - `codec`: how the records (`domain::records`) are encoded;
//! - `writer`: the single writer thread, group commit, index maintenance and the event log;
//! - `read`: read transactions, pagination, project statuses;
//! - `cache`: the response cache, bounded in bytes, patched by the writer;
//! - `check`: the consistency check behind `flightdeck check`.
//!
//! Reads never wait for the writer (redb MVCC). The in-memory project summaries and the artifact
//! cache are changed only by the writer, after its commit succeeded.

mod backup;
mod cache;
mod check;
mod codec;
mod handoff;
mod migrate;
mod queues;
mod read;
mod status;
mod tables;
mod writer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use parking_lot::{Mutex, RwLock};
use redb::{ReadableDatabase, ReadableTable};

use crate::domain::{DomainError, Id, Micros, TaskStatus, Vocabulary};
use crate::events::Publisher;

pub use crate::domain::TaskSettings;
pub use crate::domain::records::{
    Agent, AgentHistoryEntry, Artifact, HitlHistoryEntry, HitlRequest, PhaseRun, PhaseStatus,
    Project, Task, WorkflowRun,
};
pub use backup::{backup_database, compact_database, restore_database};
pub use check::{CheckReport, check_database};
pub use handoff::Ticket;
pub use queues::QueueView;
pub use read::{ArtifactFilter, HitlFilter, LoggedEvent, Page, TaskFilter, decode_cursor};
/// The commands of the store, each its own type with its own result (`Store::write`).
pub mod command {
    pub use super::writer::{
        BulkApproveHitl, BulkApproved, Claim, CreateArtifact, CreateHitl, CreateProject,
        CreateTask, DeleteArtifact, FireTimers, Heartbeat, HitlAnswer, Idempotent, MeasureUsage,
        Probe, QueueChange, RecordAlert, Remembered, ResetAgent, RespondHitl, SetOversightLevel,
        SetProjectPaused, SetQueue, SetTaskStatus, SetWebhookCursor, StartWorkflow,
        TrimAgentHistory, TrimEvents, TrimIdempotency, UpdateArtifact, Write,
    };
}
pub use writer::Write;

pub mod metric_names;

/// The file inside the data directory that holds the database.
pub const DB_FILE: &str = "flightdeck.redb";

/// Whether a commit waits for fsync.
#[derive(
    Copy, Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Every acknowledged write is on disk (fsync before the answer).
    Immediate,
    /// Commits are not synced; a crash loses recent acknowledged writes. For tests and benchmarks.
    None,
}

/// How the store is opened.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub data_dir: PathBuf,
    pub durability: Durability,
    /// Bound of the writer queue; a write that finds it full is refused as overloaded.
    pub writer_queue: usize,
    /// Most writes one transaction takes from the queue.
    pub max_batch: usize,
    /// Bytes the cache of encoded responses may hold.
    pub cache_bytes: usize,
    /// redb's page cache, in bytes.
    pub page_cache_bytes: usize,
    pub tasks: TaskSettings,
    /// Workflow definitions by name, parsed; `sdlc` is built in.
    pub workflows: Vec<crate::domain::workflow::Workflow>,
    /// The writer's clock: every batch's `now`. The system clock, except in tests.
    pub clock: Clock,
    /// How long an idempotency key is remembered (microseconds).
    pub idempotency_ttl: Micros,
}

/// A source of the current time in microseconds since the epoch.
#[derive(Clone)]
pub struct Clock(pub Arc<dyn Fn() -> Micros + Send + Sync>);

impl Clock {
    pub fn system() -> Clock {
        Clock(Arc::new(crate::domain::now_micros))
    }

    pub fn now(&self) -> Micros {
        (self.0)()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Clock")
    }
}

impl StoreConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> StoreConfig {
        StoreConfig {
            data_dir: data_dir.into(),
            durability: Durability::Immediate,
            writer_queue: 16_384,
            max_batch: 512,
            cache_bytes: 256 * 1024 * 1024,
            page_cache_bytes: 1024 * 1024 * 1024,
            tasks: TaskSettings::default(),
            workflows: vec![crate::domain::workflow::builtin()],
            clock: Clock::system(),
            idempotency_ttl: 24 * 3600 * 1_000_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error("storage error: {0}")]
    Storage(String),
    #[error("the database is corrupt: {0}")]
    Corrupt(String),
    #[error(
        "the database has schema version {found}, newer than this build supports ({supported}); \
         use a newer flightdeck"
    )]
    NewerSchema { found: u64, supported: u64 },
    #[error("the writer queue is full; retry shortly")]
    Overloaded,
    #[error("the writer has stopped")]
    WriterGone,
    #[error("invalid cursor")]
    InvalidCursor,
    /// The disk is full: nothing was written; writes succeed again once space returns.
    #[error("the disk is full: {0}")]
    DiskFull(String),
    /// The database is being reopened after an I/O error.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
}

impl StoreError {
    /// A copy of a batch's failure for each of its callers.
    pub(crate) fn for_caller(&self) -> StoreError {
        match self {
            StoreError::DiskFull(_) => StoreError::DiskFull(self.to_string()),
            StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
            StoreError::Corrupt(m) => StoreError::Corrupt(m.clone()),
            _ => StoreError::Storage(self.to_string()),
        }
    }
}

fn is_storage_full(e: &redb::StorageError) -> bool {
    matches!(e, redb::StorageError::Io(io) if io.kind() == std::io::ErrorKind::StorageFull)
}

impl From<redb::StorageError> for StoreError {
    fn from(e: redb::StorageError) -> StoreError {
        if is_storage_full(&e) {
            StoreError::DiskFull(e.to_string())
        } else {
            StoreError::Storage(e.to_string())
        }
    }
}

impl From<redb::CommitError> for StoreError {
    fn from(e: redb::CommitError) -> StoreError {
        match e {
            redb::CommitError::Storage(s) => s.into(),
            other => StoreError::Storage(other.to_string()),
        }
    }
}

impl From<redb::TransactionError> for StoreError {
    fn from(e: redb::TransactionError) -> StoreError {
        match e {
            redb::TransactionError::Storage(s) => s.into(),
            other => StoreError::Storage(other.to_string()),
        }
    }
}

macro_rules! storage_error_from {
    ($($t:ty),+) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> StoreError {
                StoreError::Storage(e.to_string())
            }
        }
    )+};
}
storage_error_from!(
    redb::Error,
    redb::DatabaseError,
    redb::TableError,
    redb::SetDurabilityError,
    std::io::Error
);

/// What the writer keeps current for each project, so status queries need no scan.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProjectSummary {
    /// Indexed by `TaskStatus::code()`.
    pub task_counts: [u64; 5],
    pub artifacts: u64,
    pub hitl_pending: u64,
    /// The seq of the newest event about this project (0 if none).
    pub latest_seq: u64,
}

impl ProjectSummary {
    pub fn total_tasks(&self) -> u64 {
        self.task_counts.iter().sum()
    }

    pub fn count(&self, status: TaskStatus) -> u64 {
        self.task_counts[usize::from(status.code())]
    }
}

/// What the response cache holds: encoded responses that only the writer invalidates.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum CacheKey {
    /// `GET /api/v1/context/artifacts/{id}`.
    Artifact(Id),
    /// `GET /api/v1/projects/{id}/status`: the project and all its tasks.
    ProjectStatus(Id),
}

/// Sums over every project's summary.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub task_counts: [u64; 5],
    pub projects: u64,
    pub hitl_pending: u64,
    pub artifacts: u64,
}

/// The response cache's figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub entries: u64,
    /// Bytes held, and the most it may hold.
    pub bytes: u64,
    pub budget: u64,
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
}

/// State shared by the readers and the writer.
pub(crate) struct Shared {
    /// The open database. Replaced by the writer when an I/O error poisoned it (redb then refuses
    /// every write until the database is reopened); `None` while the reopen waits for readers.
    db: RwLock<Option<Arc<redb::Database>>>,
    /// redb's page cache, for reopening.
    page_cache_bytes: usize,
    /// An I/O error poisoned the handle for writes; reads still work through it. The next write
    /// reopens the database once there is room for it.
    poisoned: AtomicBool,
    summaries: RwLock<HashMap<Id, ProjectSummary>>,
    cache: Mutex<cache::ResponseCache>,
    /// The seq of the newest committed event.
    latest_seq: AtomicU64,
    queue_depth: AtomicUsize,
    writer_alive: AtomicBool,
    /// Bytes of the file in use, as the writer last measured it.
    used_bytes: AtomicU64,
    /// When the store was opened, and the microseconds after it of the writer's last commit.
    opened: std::time::Instant,
    last_commit: AtomicU64,
    path: PathBuf,
    settings: TaskSettings,
    workflows: Vec<crate::domain::workflow::Workflow>,
    clock: Clock,
    /// Per agent type (by code): signalled once per task that became claimable, after its commit.
    claimable: Vec<tokio::sync::Notify>,
    /// Per agent type (by code): the project the last claim was served from, where the next
    /// claim's turn starts (round-robin over projects). Only the writer touches it.
    claim_turn: Mutex<Vec<Option<Id>>>,
    /// Per agent type (by code): pending tasks, counted at open and kept by the writer.
    pending: Vec<AtomicU64>,
    /// Per agent type (by code): claims waiting for a task.
    waiting: Vec<AtomicUsize>,
    /// Waiting claims the writer hands a task inside the commit that made it claimable.
    handoffs: handoff::Handoffs,
    /// The most recent queue waits (when, seconds), for the `queue_wait_p99` alert signal.
    queue_waits: Mutex<std::collections::VecDeque<(Micros, f64)>>,
    /// Each working task's latest progress report (JSON text), until its next durable change
    /// takes it into the record. Bounded: at most `PROGRESS_KEPT` tasks.
    progress: Mutex<HashMap<Id, String>>,
    idempotency_ttl: Micros,
}

/// Tasks whose latest progress is kept in memory at most (about one per working task).
const PROGRESS_KEPT: usize = 100_000;

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
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            StoreError::Storage(format!(
                "cannot create data directory {}: {e}",
                config.data_dir.display()
            ))
        })?;
        let path = config.data_dir.join(DB_FILE);
        let db = redb::Builder::new()
            .set_cache_size(redb_cache_size(config.page_cache_bytes))
            .create(&path)
            .map_err(|e| StoreError::Storage(format!("cannot open {}: {e}", path.display())))?;
        init_schema(&db)?;
        let (summaries, latest_seq) = read::rebuild_summaries(&db)?;
        let pending = read::pending_by_agent(&db)?;
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
            settings: config.tasks.clone(),
            workflows: config.workflows.clone(),
            clock: config.clock.clone(),
            claimable: crate::domain::AgentType::ALL
                .iter()
                .map(|_| tokio::sync::Notify::new())
                .collect(),
            claim_turn: Mutex::new(vec![None; crate::domain::AgentType::ALL.len()]),
            pending,
            waiting: crate::domain::AgentType::ALL
                .iter()
                .map(|_| AtomicUsize::new(0))
                .collect(),
            handoffs: handoff::Handoffs::new(),
            queue_waits: Mutex::new(std::collections::VecDeque::new()),
            progress: Mutex::new(HashMap::new()),
            idempotency_ttl: config.idempotency_ttl,
        });
        let writer = writer::start(shared.clone(), config, publisher)?;
        Ok(Store { shared, writer })
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
    pub fn pending_count(&self, agent_type: crate::domain::AgentType) -> u64 {
        self.shared.pending[usize::from(agent_type.code())].load(Ordering::Acquire)
    }

    /// Signalled (`notify_one`, first waiter first) once per task of `agent_type` that became
    /// claimable, after the commit that made it so. A claim that waits registers with it before it
    /// tries, so no task slips between the try and the wait.
    pub fn claimable(&self, agent_type: crate::domain::AgentType) -> &tokio::sync::Notify {
        &self.shared.claimable[usize::from(agent_type.code())]
    }

    /// Leaves a waiting claim for the writer, which hands it the next task of `agent_type` that
    /// becomes claimable, claimed for `worker_id` with `lease` in the very commit that made it
    /// claimable (`handoff`). The claim leaves the queue when the ticket is dropped.
    pub fn wait_for_task(
        &self,
        agent_type: crate::domain::AgentType,
        worker_id: String,
        lease: Micros,
    ) -> handoff::Ticket<'_> {
        self.shared.handoffs.wait(agent_type, worker_id, lease)
    }

    /// How long an idempotency key is remembered (microseconds).
    pub fn idempotency_ttl(&self) -> Micros {
        self.shared.idempotency_ttl
    }

    /// Sets the queue depth gauges to the pending counts (the writer keeps them from then on):
    /// for start-up, once the metrics recorder is installed.
    pub fn report_queue_depth(&self) {
        for (agent, n) in crate::domain::AgentType::ALL
            .iter()
            .zip(&self.shared.pending)
        {
            metrics::gauge!(metric_names::QUEUE_DEPTH, "agent_type" => agent.as_str())
                .set(n.load(Ordering::Relaxed) as f64);
        }
    }

    /// Records a working task's latest progress report (JSON text of an object); it is shown with
    /// the task and stored with it at its next durable change. False when too many tasks hold
    /// reports already (the report still reaches the WebSocket subscribers).
    pub fn set_progress(&self, task: Id, report: String) -> bool {
        let mut board = self.shared.progress.lock();
        if board.len() >= PROGRESS_KEPT && !board.contains_key(&task) {
            return false;
        }
        board.insert(task, report);
        true
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

    /// Bytes of the file in use, as of the last probe write.
    pub fn used_bytes(&self) -> u64 {
        self.shared.used_bytes.load(Ordering::Relaxed)
    }

    /// The consistency check of `flightdeck check`, on the open store, against one snapshot.
    pub fn check(&self) -> Result<CheckReport, StoreError> {
        check::check_open(&*self.shared.database()?)
    }
}

impl Shared {
    /// The open database, or `Unavailable` while it is being reopened.
    pub(crate) fn database(&self) -> Result<Arc<redb::Database>, StoreError> {
        self.db.read().clone().ok_or_else(|| {
            StoreError::Unavailable("the database is being reopened after an I/O error".into())
        })
    }

    pub(crate) fn mark_poisoned(&self) {
        self.poisoned.store(true, Ordering::Release);
    }

    /// Before a write: if an I/O error poisoned the handle, reopen it — but only once the disk
    /// has room again, so reads keep working through the old handle meanwhile.
    pub(crate) fn heal(&self) -> Result<(), StoreError> {
        if !self.poisoned.load(Ordering::Acquire) && self.db.read().is_some() {
            return Ok(());
        }
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let free = fs4::available_space(dir).unwrap_or(0);
        if free < REOPEN_MIN_FREE_BYTES && self.db.read().is_some() {
            return Err(StoreError::DiskFull(format!(
                "{free} bytes free; waiting for space before writing again"
            )));
        }
        self.reopen()?;
        self.poisoned.store(false, Ordering::Release);
        Ok(())
    }

    /// Closes and reopens the database after an I/O error, waiting (a few seconds at most) for
    /// readers of the old handle to finish: redb opens a file once per process.
    pub(crate) fn reopen(&self) -> Result<(), StoreError> {
        let old = self.db.write().take();
        drop(old);
        let mut wait = std::time::Duration::from_millis(10);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match redb::Builder::new()
                .set_cache_size(redb_cache_size(self.page_cache_bytes))
                .open(&self.path)
            {
                Ok(db) => {
                    *self.db.write() = Some(Arc::new(db));
                    tracing::warn!(path = %self.path.display(), "database reopened after an I/O error");
                    return Ok(());
                }
                Err(redb::DatabaseError::DatabaseAlreadyOpen)
                    if std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(std::time::Duration::from_millis(500));
                }
                Err(e) => return Err(StoreError::Unavailable(format!("reopening failed: {e}"))),
            }
        }
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
}

/// Opens the database of a data directory that must already hold one (offline commands).
pub(crate) fn open_existing(data_dir: &Path) -> Result<redb::Database, StoreError> {
    let path = data_dir.join(DB_FILE);
    if !path.exists() {
        return Err(StoreError::Storage(format!(
            "no database at {}",
            path.display()
        )));
    }
    redb::Database::open(&path)
        .map_err(|e| StoreError::Storage(format!("cannot open {}: {e}", path.display())))
}

/// The cache size handed to redb for a page-cache budget of `bytes` of resident memory. redb counts
/// a cached page by its 4 KiB, but holds it in one allocation with its reference counts (4,112
/// bytes), which the server's allocator (jemalloc, `src/main.rs`) serves from its 5 KiB size
/// class: a quarter more than redb counts.
fn redb_cache_size(bytes: usize) -> usize {
    bytes / 5 * 4
}

/// Free space needed before a poisoned database is reopened for writing.
const REOPEN_MIN_FREE_BYTES: u64 = 4 * 1024 * 1024;

/// Creates every table, records the schema version in a new database, migrates an older one and
/// refuses a newer one.
fn init_schema(db: &redb::Database) -> Result<(), StoreError> {
    let txn = db.begin_write()?;
    {
        let mut meta = txn.open_table(tables::META)?;
        let found = meta.get(tables::META_SCHEMA_VERSION)?.map(|v| v.value());
        match found {
            Some(v) if v > tables::SCHEMA_VERSION => {
                return Err(StoreError::NewerSchema {
                    found: v,
                    supported: tables::SCHEMA_VERSION,
                });
            }
            Some(v) if v < tables::SCHEMA_VERSION => {
                let done = migrate::migrate(&txn, v)?;
                meta.insert(tables::META_SCHEMA_VERSION, tables::SCHEMA_VERSION)?;
                tracing::info!(
                    from = v,
                    to = tables::SCHEMA_VERSION,
                    events_moved = done.events_moved,
                    tasks_rewritten = done.tasks_rewritten,
                    hitl_rewritten = done.hitl_rewritten,
                    records_reindexed = done.records_reindexed,
                    "database migrated"
                );
            }
            Some(_) => {}
            None => {
                meta.insert(tables::META_SCHEMA_VERSION, tables::SCHEMA_VERSION)?;
            }
        }
    }
    // Every table exists from the start (meta again too: its handle above is closed).
    macro_rules! open_table {
        ($table:ident) => {
            txn.open_table(tables::$table)?;
        };
    }
    tables::for_each_table!(open_table);
    txn.commit()?;
    Ok(())
}

/// A read transaction: a consistent snapshot of everything committed so far.
fn begin_read(shared: &Shared) -> Result<redb::ReadTransaction, StoreError> {
    Ok(shared.database()?.begin_read()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::{ReadableDatabase, TableHandle};

    /// The schema's table list (`tables::for_each_table`) is exactly what a database that has seen
    /// every kind of write holds: a table the writer opens but the list forgets would be missing
    /// from every backup.
    #[test]
    fn the_table_list_names_every_table_a_database_holds() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = StoreConfig::new(dir.path());
        config.durability = Durability::None;
        let store = Store::open(&config, crate::events::no_publisher()).unwrap();
        let p = store
            .write_blocking(command::CreateProject {
                name: "p".into(),
                description: None,
            })
            .unwrap();
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
            })
            .unwrap();
        store
            .write_blocking(command::CreateArtifact {
                project_id: p.id,
                source_agent: crate::domain::AgentType::Coder,
                artifact_type: crate::domain::ArtifactType::SourceCode,
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
