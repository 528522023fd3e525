//! How the store is opened: its settings, durability and clock.

use std::path::PathBuf;
use std::sync::Arc;

use crate::domain::names::{AgentKind, Allowed, ArtifactKind};
use crate::domain::{Micros, TaskSettings};

/// The file inside the data directory that holds the database.
pub const DB_FILE: &str = "flightdeck.redb";

/// When a write is durable: what a crash of the process, or of the machine, may lose.
#[derive(
    Copy, Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Every acknowledged write is on disk: its write-ahead log record is synced before the
    /// answer. Nothing acknowledged is lost, whatever crashes.
    Immediate,
    /// The write-ahead log record is written before the answer and synced every
    /// `--sync-interval-ms`: a crash of the process loses nothing, a power cut or a crash of the
    /// machine at most the last interval.
    Periodic,
    /// No log and no sync: the database reaches the disk at a clean shutdown only, so a crash of
    /// the process loses every write since start-up. For tests and benchmarks.
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
    /// Most idempotency keys remembered (the oldest beyond are forgotten first).
    pub idempotency_keep: u64,
    /// Events kept in the log (`--event-retention`): each batch that appends events removes as
    /// many of the oldest as go beyond it.
    pub event_retention: u64,
    /// Status changes kept per agent type (`--agent-history-retention`), trimmed alike by each
    /// batch that adds some.
    pub agent_history_retention: u64,
    /// Most bytes of records one page of a list reads (then it stops, with a cursor).
    pub page_bytes: usize,
    /// Most bytes of progress reports held in memory, all tasks together.
    pub progress_bytes: usize,
    /// Which agent types the store takes (`agent_types`, `--max-agent-types`).
    pub agent_types: Allowed<AgentKind>,
    /// Which artifact types it takes (`artifact_types`, `--max-artifact-types`).
    pub artifact_types: Allowed<ArtifactKind>,
    /// Most tasks one fan-out phase creates (`--max-fan-out`); a longer list fails the run.
    pub max_fan_out: usize,
    /// The config file's `[[prices]]`: how a usage report without a cost is priced.
    pub prices: Vec<crate::domain::usage::PriceRule>,
    /// Most distinct model names kept apart in the usage rollups and metrics; the rest are `other`.
    pub max_models: usize,
    /// Where the database's bytes live: `None`, its file in `data_dir`; else a storage layer a
    /// test gives (one that forgets every write not yet synced when its "power" is cut).
    pub backend: Option<Backend>,
    /// Where the write-ahead log lives: `None`, files in `data_dir/wal`; else a test's storage.
    pub log_storage: Option<crate::store::LogStore>,
    /// How often `periodic` durability syncs the log.
    pub sync_interval: std::time::Duration,
    /// Bytes of log after which a checkpoint is forced (`--checkpoint-mib`).
    pub checkpoint_bytes: u64,
    /// Age of the oldest record not yet checkpointed after which a checkpoint is forced
    /// (`--checkpoint-secs`).
    pub checkpoint_age: std::time::Duration,
    /// Size of a log segment (`--wal-segment-mib`).
    pub segment_bytes: u64,
    /// How long the writer waits for work before it checkpoints what it logged.
    pub checkpoint_idle: std::time::Duration,
    /// Under a steady load, a checkpoint this often (`--checkpoint-spread-ms`); zero: only when
    /// idle or forced by `checkpoint_bytes` or `checkpoint_age`.
    pub checkpoint_spread: std::time::Duration,
    /// `Some(url)`: this store is a follower of the leader at `url`: it takes no writes of its
    /// own, only the leader's log records (`Store::replicate`).
    pub follow: Option<String>,
    /// Bytes of the latest log records kept in memory for followers to stream, when
    /// `serve_followers`.
    pub replication_backlog: usize,
    /// Keep the latest log records for followers (a node with `--replication-key`).
    pub serve_followers: bool,
    /// Followers that must hold a write's record before it is acknowledged (0: asynchronous).
    pub sync_replicas: usize,
    /// How long a write waits for them before it answers 503 `not_replicated`.
    pub sync_timeout: std::time::Duration,
}

/// Makes the storage layer of a database, once at open and again at each reopen.
#[derive(Clone)]
pub struct Backend(pub Arc<dyn Fn() -> Box<dyn redb::StorageBackend> + Send + Sync>);

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Backend")
    }
}

impl Backend {
    /// A database on a fresh handle of this storage.
    pub(super) fn open(
        &self,
        builder: &redb::Builder,
    ) -> Result<redb::Database, redb::DatabaseError> {
        builder.create_with_backend(Boxed((self.0)()))
    }
}

/// A boxed storage layer as redb takes one.
#[derive(Debug)]
struct Boxed(Box<dyn redb::StorageBackend>);

impl redb::StorageBackend for Boxed {
    fn len(&self) -> std::io::Result<u64> {
        self.0.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.0.read(offset, out)
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.0.set_len(len)
    }

    fn sync_data(&self) -> std::io::Result<()> {
        self.0.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.0.write(offset, data)
    }

    fn close(&self) -> std::io::Result<()> {
        self.0.close()
    }
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
            idempotency_keep: 1_000_000,
            event_retention: 1_000_000,
            agent_history_retention: 10_000,
            page_bytes: 8 * 1024 * 1024,
            progress_bytes: 64 * 1024 * 1024,
            agent_types: Allowed::open(256),
            artifact_types: Allowed::open(1024),
            max_fan_out: 1000,
            prices: Vec::new(),
            max_models: 256,
            backend: None,
            log_storage: None,
            sync_interval: std::time::Duration::from_millis(1000),
            checkpoint_bytes: 256 << 20,
            checkpoint_age: std::time::Duration::from_secs(60),
            segment_bytes: 16 << 20,
            checkpoint_idle: std::time::Duration::from_secs(1),
            checkpoint_spread: std::time::Duration::from_millis(500),
            follow: None,
            replication_backlog: 64 << 20,
            serve_followers: false,
            sync_replicas: 0,
            sync_timeout: std::time::Duration::from_millis(5000),
        }
    }
}
