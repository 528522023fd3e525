//! Health checks that tell the truth: a read transaction, a write round trip through the writer
//! (at most one probe write per 5 s, each within 1 s), the writer thread, the data directory's
//! free space and writability, and whether the server is shutting down.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::store::{Store, command};

/// How long a write probe's answer is reused, and how long it may take.
const PROBE_EVERY: Duration = Duration::from_secs(5);
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// The readiness checks, each named as the probes' answers name it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum CheckName {
    StoreRead,
    WriterRoundTrip,
    /// On a follower, in the write probe's place: streaming from the leader.
    Replication,
    WriterAlive,
    DiskSpace,
    DataDirWritable,
    NotShuttingDown,
}

impl CheckName {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckName::StoreRead => "store_read",
            CheckName::WriterRoundTrip => "writer_round_trip",
            CheckName::Replication => "replication",
            CheckName::WriterAlive => "writer_alive",
            CheckName::DiskSpace => "disk_space",
            CheckName::DataDirWritable => "data_dir_writable",
            CheckName::NotShuttingDown => "not_shutting_down",
        }
    }
}

/// One check's outcome.
#[derive(Clone, Debug)]
pub struct Check {
    pub name: CheckName,
    pub ok: bool,
    /// What failed, or a figure worth showing when it passed.
    pub detail: String,
    pub latency: Duration,
}

/// The outcome of every readiness check, each by name.
pub struct Checks {
    pub store_read: Check,
    pub writer_round_trip: Check,
    pub writer_alive: Check,
    pub disk_space: Check,
    pub data_dir_writable: Check,
    pub not_shutting_down: Check,
}

impl Checks {
    /// Every check, in the order the probes list them.
    pub fn all(&self) -> [&Check; 6] {
        [
            &self.store_read,
            &self.writer_round_trip,
            &self.writer_alive,
            &self.disk_space,
            &self.data_dir_writable,
            &self.not_shutting_down,
        ]
    }

    /// How many passed.
    pub fn passed(&self) -> usize {
        self.all().iter().filter(|c| c.ok).count()
    }

    pub fn ok(&self) -> bool {
        self.passed() == self.all().len()
    }
}

pub struct Health {
    store: Store,
    data_dir: PathBuf,
    min_free_bytes: u64,
    shutdown: CancellationToken,
    probe: tokio::sync::Mutex<Option<(Instant, Check)>>,
    /// A follower's view of its leader (its write probe is the stream from the leader).
    follower: Option<std::sync::Arc<crate::replication::follower::Status>>,
}

impl Health {
    pub fn new(
        store: Store,
        data_dir: PathBuf,
        min_free_bytes: u64,
        shutdown: CancellationToken,
    ) -> Health {
        Health {
            store,
            data_dir,
            min_free_bytes,
            shutdown,
            probe: tokio::sync::Mutex::new(None),
            follower: None,
        }
    }

    /// A follower's health: its write probe is the stream from its leader.
    pub fn following(
        mut self,
        status: std::sync::Arc<crate::replication::follower::Status>,
    ) -> Health {
        self.follower = Some(status);
        self
    }

    pub fn min_free_bytes(&self) -> u64 {
        self.min_free_bytes
    }

    /// Free bytes on the data directory's disk (0 if it cannot be read).
    pub fn disk_free(&self) -> u64 {
        fs4::available_space(&self.data_dir).unwrap_or(0)
    }

    /// Every readiness check.
    pub async fn checks(&self) -> Checks {
        Checks {
            store_read: self.store_read(),
            writer_round_trip: self.writer_round_trip().await,
            writer_alive: self.writer_alive(),
            disk_space: self.disk_space(),
            data_dir_writable: self.data_dir_writable(),
            not_shutting_down: self.not_shutting_down(),
        }
    }

    fn store_read(&self) -> Check {
        let started = Instant::now();
        let result = self.store.oldest_seq();
        Check {
            name: CheckName::StoreRead,
            ok: result.is_ok(),
            detail: result.err().map(|e| e.to_string()).unwrap_or_default(),
            latency: started.elapsed(),
        }
    }

    /// A real write through the writer, cached for 5 s so probes cost at most one write per 5 s.
    pub async fn writer_round_trip(&self) -> Check {
        if let Some(status) = &self.follower {
            let streaming = status.streaming();
            return Check {
                name: CheckName::Replication,
                ok: streaming.is_ok(),
                detail: streaming.err().unwrap_or_default(),
                latency: Duration::ZERO,
            };
        }
        let mut cached = self.probe.lock().await;
        if let Some((at, check)) = cached.as_ref()
            && at.elapsed() < PROBE_EVERY
        {
            return check.clone();
        }
        let started = Instant::now();
        let outcome = tokio::time::timeout(PROBE_TIMEOUT, self.store.write(command::Probe)).await;
        let (ok, detail) = match outcome {
            Ok(Ok(_)) => (true, String::new()),
            Ok(Err(e)) => (false, e.to_string()),
            Err(_) => (
                false,
                format!("no commit within {} ms", PROBE_TIMEOUT.as_millis()),
            ),
        };
        let check = Check {
            name: CheckName::WriterRoundTrip,
            ok,
            detail,
            latency: started.elapsed(),
        };
        *cached = Some((Instant::now(), check.clone()));
        check
    }

    fn writer_alive(&self) -> Check {
        let ok = self.store.writer_alive();
        Check {
            name: CheckName::WriterAlive,
            ok,
            detail: match (ok, self.store.failure()) {
                (true, _) => String::new(),
                (false, Some(why)) => format!("the writer has stopped for good: {why}"),
                (false, None) => "the writer thread has stopped".into(),
            },
            latency: Duration::ZERO,
        }
    }

    fn disk_space(&self) -> Check {
        let started = Instant::now();
        let (ok, detail) = match fs4::available_space(&self.data_dir) {
            Ok(free) if free >= self.min_free_bytes => (true, format!("{free} bytes free")),
            Ok(free) => (
                false,
                format!(
                    "{free} bytes free, below the floor of {}",
                    self.min_free_bytes
                ),
            ),
            Err(e) => (false, format!("cannot read free space: {e}")),
        };
        Check {
            name: CheckName::DiskSpace,
            ok,
            detail,
            latency: started.elapsed(),
        }
    }

    /// Creates, writes and removes a file in the data directory: a file of its own per probe, so
    /// probes at the same moment do not remove each other's. The answer names no path.
    fn data_dir_writable(&self) -> Check {
        use std::io::Write;
        static PROBES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let started = Instant::now();
        let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = self
            .data_dir
            .join(format!(".readiness-probe-{}-{n}", std::process::id()));
        let result = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .and_then(|mut f| f.write_all(b"ok"))
            .and_then(|()| std::fs::remove_file(&path));
        Check {
            name: CheckName::DataDirWritable,
            ok: result.is_ok(),
            detail: result
                .err()
                .map(|e| format!("the data directory: {e}"))
                .unwrap_or_default(),
            latency: started.elapsed(),
        }
    }

    fn not_shutting_down(&self) -> Check {
        let stopping = self.shutdown.is_cancelled();
        Check {
            name: CheckName::NotShuttingDown,
            ok: !stopping,
            detail: if stopping {
                "the server is shutting down".into()
            } else {
                String::new()
            },
            latency: Duration::ZERO,
        }
    }
}
