//! The state the readers and the writer share (`Shared`): the open database with its reopening
//! after an I/O error, and what the writer keeps in memory beside it; opening a database and
//! laying out its schema.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use parking_lot::{Mutex, RwLock};
use redb::{ReadableDatabase, ReadableTable};

use super::config::{Clock, DB_FILE};
use super::error::{Cause, StoreError};
use super::summary::ProjectSummary;
use super::{cache, handoff, migrate, tables};
use crate::domain::{Id, Micros, TaskSettings};

/// State shared by the readers and the writer.
pub(crate) struct Shared {
    /// The open database. Replaced by the writer when an I/O error poisoned it (redb then refuses
    /// every write until the database is reopened); `None` while the reopen waits for readers.
    pub(super) db: RwLock<Option<Arc<redb::Database>>>,
    /// redb's page cache, for reopening.
    pub(super) page_cache_bytes: usize,
    /// An I/O error poisoned the handle for writes; reads still work through it. The next write
    /// reopens the database once there is room for it.
    pub(super) poisoned: AtomicBool,
    pub(super) summaries: RwLock<HashMap<Id, ProjectSummary>>,
    pub(super) cache: Mutex<cache::ResponseCache>,
    /// The seq of the newest committed event.
    pub(super) latest_seq: AtomicU64,
    pub(super) queue_depth: AtomicUsize,
    pub(super) writer_alive: AtomicBool,
    /// Bytes of the file in use, as the writer last measured it.
    pub(super) used_bytes: AtomicU64,
    /// When the store was opened, and the microseconds after it of the writer's last commit.
    pub(super) opened: std::time::Instant,
    pub(super) last_commit: AtomicU64,
    pub(super) path: PathBuf,
    /// The storage layer a test gave, instead of the file at `path`.
    pub(super) backend: Option<super::config::Backend>,
    /// The write-ahead log's segments, replayed again when the database is reopened.
    pub(super) log_storage: Arc<dyn super::wal::LogStorage>,
    /// Why the store stopped taking writes for good (a failed sync of the log): set once, then
    /// the writer stops, readiness fails and the server exits into recovery.
    pub(super) failure: tokio::sync::watch::Sender<Option<String>>,
    /// Records the log's replay at open gave the database, and the seconds it took.
    pub(super) replayed: (u64, f64),
    /// The latest syncs of the log (`Store::log_sync_p99`).
    pub(super) log_syncs: super::wal::SyncTimes,
    pub(super) settings: TaskSettings,
    pub(super) workflows: Vec<crate::domain::workflow::Workflow>,
    /// Most tasks one fan-out phase creates.
    pub(super) max_fan_out: usize,
    /// How usage reports without a cost are priced (`[[prices]]`).
    pub(super) prices: Vec<crate::domain::usage::PriceRule>,
    /// Most model names kept apart in the usage rollups (`--max-models`).
    pub(super) max_models: usize,
    pub(super) clock: Clock,
    /// The agent and artifact types in use, by id; changed by the writer after the commit that
    /// interned a new one.
    pub(super) types: RwLock<super::types::Registry>,
    /// Per agent type (by id): signalled once per task that became claimable, after its commit.
    pub(super) claimable: Vec<tokio::sync::Notify>,
    /// Per agent type (by id): the project the last claim was served from, where the next
    /// claim's turn starts (round-robin over projects). Only the writer touches it.
    pub(super) claim_turn: Mutex<Vec<Option<Id>>>,
    /// Per agent type (by id): pending tasks, counted at open and kept by the writer.
    pub(super) pending: Vec<AtomicU64>,
    /// Per agent type (by id): claims waiting for a task.
    pub(super) waiting: Vec<AtomicUsize>,
    /// Waiting claims the writer hands a task inside the commit that made it claimable.
    pub(super) handoffs: handoff::Handoffs,
    /// The most recent queue waits (when, seconds), for the `queue_wait_p99` alert signal.
    pub(super) queue_waits: Mutex<std::collections::VecDeque<(Micros, f64)>>,
    /// Each working task's latest progress report (JSON text), until its next durable change
    /// takes it into the record. Bounded: at most `PROGRESS_KEPT` tasks and `progress_budget`
    /// bytes.
    pub(super) progress: Mutex<ProgressBoard>,
    pub(super) progress_budget: usize,
    /// Most bytes of records one page of a list reads.
    pub(super) page_bytes: usize,
    /// Most idempotency keys remembered.
    pub(super) idempotency_keep: u64,
    pub(super) idempotency_ttl: Micros,
    /// Events kept in the log.
    pub(super) event_retention: u64,
    /// Status changes kept per agent type.
    pub(super) agent_history_retention: u64,
    /// Per agent type id, how many status changes its history holds, once counted (a type's
    /// first change after the store opened counts them; the writer keeps the count from then on).
    pub(super) history_len: Mutex<HashMap<u16, u64>>,
    /// The leader's URL when this store is a follower (it then takes only replicated records).
    pub(super) leader: Option<String>,
    /// The latest log records, for followers to stream (`--replication-key`).
    pub(super) backlog: Option<Arc<super::replication::Backlog>>,
    /// Synchronous replication's waiting room (`--sync-replicas`), on a leader that has it.
    pub(super) quorum: Option<Arc<super::quorum::Quorum>>,
    /// The LSN of the last log record committed to the database (0: none yet).
    pub(super) applied_lsn: tokio::sync::watch::Sender<u64>,
}

/// Tasks whose latest progress is kept in memory at most (about one per working task).
pub(super) const PROGRESS_KEPT: usize = 100_000;

/// The working tasks' latest progress reports and the bytes they hold.
#[derive(Default)]
pub(crate) struct ProgressBoard {
    pub(super) reports: HashMap<Id, String>,
    pub(super) bytes: usize,
}

impl ProgressBoard {
    /// Replaces the task's report if the board has room for it (false: it was not kept).
    pub(super) fn put(&mut self, task: Id, report: String, budget: usize) -> bool {
        let old = self.reports.get(&task).map_or(0, String::len);
        if old == 0 && self.reports.len() >= PROGRESS_KEPT {
            return false;
        }
        if self.bytes - old + report.len() > budget {
            return false;
        }
        self.bytes = self.bytes - old + report.len();
        self.reports.insert(task, report);
        true
    }

    pub(super) fn remove(&mut self, task: &Id) {
        if let Some(old) = self.reports.remove(task) {
            self.bytes -= old.len();
        }
    }

    pub(super) fn get(&self, task: &Id) -> Option<&String> {
        self.reports.get(task)
    }
}

impl Shared {
    /// How many agent type ids the per-type claim state has room for.
    pub(crate) fn agent_slots(&self) -> usize {
        self.claimable.len()
    }

    /// The open database, or `Unavailable` while it is being reopened.
    pub(crate) fn database(&self) -> Result<Arc<redb::Database>, StoreError> {
        self.db.read().clone().ok_or_else(|| {
            StoreError::Unavailable("the database is being reopened after an I/O error".into())
        })
    }

    /// Stops the store for good: nothing may be acknowledged after a failed sync of the log (the
    /// kernel may have dropped the pages it failed to write). The first reason given is kept.
    pub(crate) fn fail(&self, why: String) {
        self.writer_alive.store(false, Ordering::Release);
        self.failure.send_if_modified(|failure| {
            if failure.is_some() {
                return false;
            }
            tracing::error!(reason = %why, "the store stops taking writes; restart it to recover from its log");
            *failure = Some(why);
            true
        });
    }

    pub(crate) fn failed(&self) -> bool {
        self.failure.borrow().is_some()
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
            return Err(StoreError::DiskFull(Cause::found(format!(
                "{free} bytes free; waiting for space before writing again"
            ))));
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
            let mut builder = redb::Builder::new();
            builder.set_cache_size(redb_cache_size(self.page_cache_bytes));
            let opened = match &self.backend {
                None => builder.open(&self.path),
                Some(backend) => backend.open(&builder),
            };
            match opened {
                Ok(db) => {
                    // What redb had not made durable before the error is in the log.
                    super::wal::recover(&db, &*self.log_storage)?;
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

/// Opens the database of a data directory that must already hold one (offline commands).
pub(crate) fn open_existing(data_dir: &Path) -> Result<redb::Database, StoreError> {
    let path = data_dir.join(DB_FILE);
    if !path.exists() {
        return Err(StoreError::Storage(Cause::found(format!(
            "no database at {}",
            path.display()
        ))));
    }
    redb::Database::open(&path)
        .map_err(|e| StoreError::storage(format!("cannot open {}", path.display()), e))
}

/// Opens the database of a data directory (offline commands that write: backup, compact) and
/// replays its write-ahead log into it, as the server's start would.
pub(crate) fn open_recovered(data_dir: &Path) -> Result<redb::Database, StoreError> {
    let db = open_existing(data_dir)?;
    super::wal::recover(
        &db,
        &super::wal::Files {
            dir: data_dir.join(super::WAL_DIR),
        },
    )?;
    Ok(db)
}

/// Creates `path` and its missing parents for the server's own use: readable by its user alone
/// (0700), like the files it writes there (`private_file`). An existing directory keeps the mode
/// its operator gave it.
pub(crate) fn private_dir(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

/// Makes a file the server has just created readable by its user alone (0600): the database and
/// its backups hold every artifact and answer.
pub(crate) fn private_file(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

/// The cache size handed to redb for a page-cache budget of `bytes` of resident memory. redb counts
/// a cached page by its 4 KiB, but holds it in one allocation with its reference counts (4,112
/// bytes), which the server's allocator (jemalloc, `src/main.rs`) serves from its 5 KiB size
/// class: a quarter more than redb counts.
pub(super) fn redb_cache_size(bytes: usize) -> usize {
    bytes / 5 * 4
}

/// Free space needed before a poisoned database is reopened for writing.
const REOPEN_MIN_FREE_BYTES: u64 = 4 * 1024 * 1024;

/// Creates every table, records the schema version in a new database, migrates an older one and
/// refuses a newer one.
pub(super) fn init_schema(db: &redb::Database) -> Result<(), StoreError> {
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
    super::types::seed_defaults(&mut txn.open_table(tables::TYPE_NAMES)?)?;
    txn.commit()?;
    Ok(())
}

/// A read transaction: a consistent snapshot of everything committed so far.
pub(super) fn begin_read(shared: &Shared) -> Result<redb::ReadTransaction, StoreError> {
    Ok(shared.database()?.begin_read()?)
}
