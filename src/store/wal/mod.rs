//! The write-ahead log in front of redb. For each batch the writer appends one framed record — the
//! batch's effects: every insert and removal in every table (`logged`) — syncs it (one sequential
//! `fdatasync`), and only then commits the batch to redb without a sync, recording the record's
//! number (its LSN) in that same transaction. A checkpoint, a durable redb commit, makes every
//! record up to it redundant; its segments are then reused. At open, redb is at its last durable
//! commit and the log is replayed from the next record (`recover`).
//!
//! A segment is a file of zeros written ahead (`LogStorage::create`) that starts with a header —
//! magic, format, flags, the schema version its records are written in, the segment's sequence
//! number and the LSN of its first record, with a checksum — followed by records, each a 4-byte
//! payload length, a CRC-32 of the length, the segment's sequence number, the LSN and the payload,
//! the 8-byte LSN, then the payload. Records of a segment have consecutive LSNs from its first;
//! what follows the last is zeros or what the segment's earlier use left, whose checksums fail
//! under the new sequence number.

pub(crate) mod logged;
mod storage;

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use redb::ReadableDatabase;

pub(crate) use logged::{Logged, LoggedTxn};
pub(crate) use storage::Files;
pub use storage::{LogFile, LogStorage, LogStore};

use super::{StoreError, metric_names, tables};

/// The log's directory inside the data directory.
pub const WAL_DIR: &str = "wal";

const MAGIC: [u8; 8] = *b"FDWAL\x00\x00\x01";
const FORMAT: u32 = 1;
/// Bytes before a segment's first record.
pub(crate) const HEADER_LEN: u64 = 64;
/// Bytes before a record's payload: length, checksum, LSN.
pub(crate) const FRAME_HEAD: usize = 16;
/// The header flag of a segment written with periodic syncs.
const FLAG_PERIODIC: u32 = 1;

/// When the log is synced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SyncMode {
    /// Before each answer.
    Immediate,
    /// Every interval, by a thread of its own; the record is written before the answer.
    Periodic(Duration),
}

/// A segment's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Header {
    periodic: bool,
    schema: u64,
    seq: u64,
    first_lsn: u64,
}

impl Header {
    fn encode(&self) -> [u8; HEADER_LEN as usize] {
        let mut out = [0u8; HEADER_LEN as usize];
        out[0..8].copy_from_slice(&MAGIC);
        out[8..12].copy_from_slice(&FORMAT.to_le_bytes());
        let flags = if self.periodic { FLAG_PERIODIC } else { 0 };
        out[12..16].copy_from_slice(&flags.to_le_bytes());
        out[16..24].copy_from_slice(&self.schema.to_le_bytes());
        out[24..32].copy_from_slice(&self.seq.to_le_bytes());
        out[32..40].copy_from_slice(&self.first_lsn.to_le_bytes());
        let crc = crc32fast::hash(&out[0..40]);
        out[40..44].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// The header at the start of `bytes`; `None` when there is none (zeros, a torn header, or
    /// another format).
    fn decode(bytes: &[u8]) -> Option<Header> {
        if bytes.len() < HEADER_LEN as usize || bytes[0..8] != MAGIC {
            return None;
        }
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4"));
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8"));
        if u32_at(40) != crc32fast::hash(&bytes[0..40]) || u32_at(8) != FORMAT {
            return None;
        }
        Some(Header {
            periodic: u32_at(12) & FLAG_PERIODIC != 0,
            schema: u64_at(16),
            seq: u64_at(24),
            first_lsn: u64_at(32),
        })
    }
}

/// Fills in the head of `frame` (whose first `FRAME_HEAD` bytes were left for it) for `lsn`, in
/// the segment of sequence number `seq`. The checksum covers the segment's sequence number too,
/// so a record left from a segment's earlier use never reads as one of its current use.
fn seal(frame: &mut [u8], lsn: u64, seq: u64) {
    let len = (frame.len() - FRAME_HEAD) as u32;
    frame[0..4].copy_from_slice(&len.to_le_bytes());
    frame[8..16].copy_from_slice(&lsn.to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&frame[0..4]);
    crc.update(&seq.to_le_bytes());
    crc.update(&frame[8..]);
    frame[4..8].copy_from_slice(&crc.finalize().to_le_bytes());
}

/// The record at `pos` of the bytes of segment `seq`, if a whole one of this use of the segment
/// with a good checksum is there: its LSN, payload and end.
fn parse(data: &[u8], pos: usize, seq: u64) -> Option<(u64, &[u8], usize)> {
    let head = data.get(pos..pos.checked_add(FRAME_HEAD)?)?;
    let len = u32::from_le_bytes(head[0..4].try_into().expect("4")) as usize;
    if len == 0 {
        return None;
    }
    let end = pos.checked_add(FRAME_HEAD)?.checked_add(len)?;
    let payload = data.get(pos + FRAME_HEAD..end)?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&head[0..4]);
    crc.update(&seq.to_le_bytes());
    crc.update(&head[8..16]);
    crc.update(payload);
    if crc.finalize() != u32::from_le_bytes(head[4..8].try_into().expect("4")) {
        return None;
    }
    let lsn = u64::from_le_bytes(head[8..16].try_into().expect("8"));
    Some((lsn, payload, end))
}

/// The first good record of segment `seq` after `from` whose LSN is `min_lsn` or more: what makes
/// a bad record corruption rather than a torn tail. Records left from the segment's earlier uses
/// fail the checksum, which covers the sequence number.
fn later_record(data: &[u8], from: usize, min_lsn: u64, seq: u64) -> Option<(usize, u64)> {
    let last = data.len().checked_sub(FRAME_HEAD)?;
    (from + 1..=last).find_map(|p| {
        let lsn = u64::from_le_bytes(data[p + 8..p + 16].try_into().expect("8"));
        if lsn < min_lsn || lsn - min_lsn > 1 << 40 {
            return None;
        }
        parse(data, p, seq).map(|(lsn, _, _)| (p, lsn))
    })
}

/// A segment found in the storage.
struct Found {
    name: String,
    file: Arc<dyn LogFile>,
    /// `None` for a file without a valid header: never used yet, or free.
    header: Option<Header>,
    len: u64,
}

fn find(storage: &dyn LogStorage) -> io::Result<Vec<Found>> {
    let mut found = Vec::new();
    for name in storage.list()? {
        let file = storage.open(&name)?;
        let len = file.size()?;
        let header = if len >= HEADER_LEN {
            let mut bytes = [0u8; HEADER_LEN as usize];
            file.read_at(0, &mut bytes)?;
            Header::decode(&bytes)
        } else {
            None
        };
        found.push(Found {
            name,
            file,
            header,
            len,
        });
    }
    found.sort_by_key(|f| f.header.map(|h| h.seq));
    Ok(found)
}

/// Where reading the log ended.
#[derive(Debug, Default)]
pub(crate) struct LogEnd {
    /// The LSN of the last good record, if any was read.
    pub last_lsn: Option<u64>,
    /// Records handed to the reader (those at or after the start).
    pub records: u64,
    /// Their bytes, heads included.
    pub bytes: u64,
    /// Where a torn last record was cut off: segment and offset.
    pub torn: Option<(String, u64)>,
    /// Good records found after a bad one in a segment written with periodic syncs, discarded:
    /// a power cut may leave such holes in what was not yet synced.
    pub discarded: u64,
    /// The highest segment sequence number seen.
    pub max_seq: u64,
}

/// Reads the log from record `start` on, handing each record's LSN, the schema version its
/// segment's records are written in, and its payload to `each`. `Err(Ok(message))` is a corrupt
/// log: a bad record followed by good ones, or a missing stretch.
pub(crate) fn read_log<E>(
    storage: &dyn LogStorage,
    start: u64,
    mut each: impl FnMut(u64, u64, &[u8]) -> Result<(), E>,
) -> Result<LogEnd, Result<String, E>> {
    let found = find(storage).map_err(|e| Ok(format!("cannot read the log: {e}")))?;
    let mut end = LogEnd {
        max_seq: found
            .iter()
            .filter_map(|f| f.header.map(|h| h.seq))
            .max()
            .unwrap_or(0),
        ..LogEnd::default()
    };
    let chain: Vec<&Found> = found.iter().filter(|f| f.header.is_some()).collect();
    let Some(base) = chain
        .iter()
        .rposition(|f| f.header.is_some_and(|h| h.first_lsn <= start))
    else {
        if let Some(first) = chain.first() {
            let h = first.header.expect("filtered");
            if h.first_lsn > start && chain.iter().any(|f| has_records(f)) {
                return Err(Ok(format!(
                    "the database needs the log from record {start}, but its earliest segment \
                     ({}) begins at record {}",
                    first.name, h.first_lsn
                )));
            }
        }
        return Ok(end);
    };
    let mut expected_first: Option<u64> = None;
    for (i, segment) in chain[base..].iter().enumerate() {
        let header = segment.header.expect("filtered");
        if let Some(expected) = expected_first
            && header.first_lsn != expected
        {
            return Err(Ok(format!(
                "segment {} begins at record {} where record {expected} was expected: records \
                 are missing",
                segment.name, header.first_lsn
            )));
        }
        let mut data = vec![0u8; segment.len as usize];
        segment
            .file
            .read_at(0, &mut data)
            .map_err(|e| Ok(format!("cannot read segment {}: {e}", segment.name)))?;
        let mut pos = HEADER_LEN as usize;
        let mut next = header.first_lsn;
        while let Some((lsn, payload, after)) = parse(&data, pos, header.seq) {
            if lsn != next {
                break;
            }
            if lsn >= start {
                each(lsn, header.schema, payload).map_err(Err)?;
                end.records += 1;
                end.bytes += (after - pos) as u64;
            }
            end.last_lsn = Some(lsn);
            next += 1;
            pos = after;
        }
        let last_segment = base + i + 1 == chain.len();
        if let Some((at, lsn)) = later_record(&data, pos, next, header.seq) {
            if last_segment && header.periodic {
                let mut discarded = 0;
                let mut p = at;
                while let Some((_, _, after)) = parse(&data, p, header.seq) {
                    discarded += 1;
                    p = after;
                }
                end.discarded = discarded;
            } else {
                return Err(Ok(format!(
                    "segment {}, offset {pos}: record {next} is missing or fails its checksum, \
                     but record {lsn} follows at offset {at}: the log is corrupt",
                    segment.name
                )));
            }
        }
        if last_segment {
            // A record begun there (its LSN written) and not whole: a torn tail. Anything else
            // there is zeros or what the segment's earlier use left.
            let begun = data
                .get(pos + 8..pos + FRAME_HEAD)
                .is_some_and(|b| u64::from_le_bytes(b.try_into().expect("8")) == next);
            if begun {
                end.torn = Some((segment.name.clone(), pos as u64));
            }
        } else {
            expected_first = Some(next);
        }
    }
    Ok(end)
}

/// Whether a segment holds a record of its current use.
fn has_records(f: &Found) -> bool {
    let Some(header) = f.header else {
        return false;
    };
    let mut data = vec![0u8; f.len as usize];
    f.file.read_at(0, &mut data).is_ok() && parse(&data, HEADER_LEN as usize, header.seq).is_some()
}

/// What recovery did.
#[derive(Debug, Default)]
pub(crate) struct Recovered {
    pub records: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub torn: Option<(String, u64)>,
    pub discarded: u64,
    /// The LSN the next record gets.
    pub next_lsn: u64,
    /// The sequence number the next segment gets.
    pub next_seq: u64,
}

/// The LSN of the last record in the database's durable state, and its schema version.
fn database_position(db: &redb::Database) -> Result<(u64, Option<u64>), StoreError> {
    let txn = db.begin_read()?;
    let meta = match txn.open_table(tables::META) {
        Ok(meta) => meta,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok((0, None)),
        Err(e) => return Err(e.into()),
    };
    let lsn = meta.get(tables::META_WAL_LSN)?.map_or(0, |v| v.value());
    let schema = meta.get(tables::META_SCHEMA_VERSION)?.map(|v| v.value());
    Ok((lsn, schema))
}

/// Bytes of records replayed in one transaction before it is committed (without a sync).
const REPLAY_TXN_BYTES: usize = 16 << 20;

/// Records read from the log, held until a transaction's worth is there: each its LSN (8 bytes),
/// its payload's length (4) and its payload.
#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    last_lsn: u64,
}

impl Pending {
    fn push(&mut self, lsn: u64, payload: &[u8]) {
        self.bytes.extend_from_slice(&lsn.to_le_bytes());
        self.bytes
            .extend_from_slice(&(payload.len() as u32).to_le_bytes());
        self.bytes.extend_from_slice(payload);
        self.last_lsn = lsn;
    }

    /// Applies the held records in one transaction committed without a sync, with the last
    /// one's LSN, and empties the holder.
    fn apply(&mut self, db: &redb::Database) -> Result<(), StoreError> {
        if self.bytes.is_empty() {
            return Ok(());
        }
        let mut txn = db.begin_write()?;
        txn.set_durability(redb::Durability::None)?;
        {
            let mut replay = logged::Replay::new(&txn);
            let mut rest = &self.bytes[..];
            while !rest.is_empty() {
                let lsn = u64::from_le_bytes(rest[..8].try_into().expect("8 bytes"));
                let len = u32::from_le_bytes(rest[8..12].try_into().expect("4 bytes")) as usize;
                let payload = &rest[12..12 + len];
                rest = &rest[12 + len..];
                for op in logged::ops(payload) {
                    let op = op.map_err(|m| StoreError::Corrupt(format!("record {lsn}: {m}")))?;
                    replay.apply(&op)?;
                }
            }
        }
        // Its tables are closed: `meta` may have been one of them.
        txn.open_table(tables::META)?
            .insert(tables::META_WAL_LSN, self.last_lsn)?;
        txn.commit()?;
        self.bytes.clear();
        Ok(())
    }
}

/// Replays the log into `db` from the record after the last one its durable state holds, then
/// makes the result durable: after this every record of the log is redundant. Idempotent: a
/// record's operations are puts and removals of whole values.
pub(crate) fn recover(
    db: &redb::Database,
    storage: &dyn LogStorage,
) -> Result<Recovered, StoreError> {
    let started = Instant::now();
    let (durable_lsn, schema) = database_position(db)?;
    let mut pending = Pending::default();
    let read = read_log(storage, durable_lsn + 1, |lsn, written, payload| {
        if schema != Some(written) {
            return Err(StoreError::Corrupt(format!(
                "the log's records are written in schema {written} but the database is at \
                 schema {}; start the build that wrote them once to replay them",
                schema.map_or("none".to_string(), |s| s.to_string())
            )));
        }
        pending.push(lsn, payload);
        if pending.bytes.len() >= REPLAY_TXN_BYTES {
            pending.apply(db)?;
        }
        Ok(())
    });
    let end = match read {
        Ok(end) => end,
        Err(Ok(corrupt)) => {
            return Err(StoreError::Corrupt(format!(
                "{corrupt}; the server will not start on it (see the README's \"A corrupt \
                 write-ahead log\")"
            )));
        }
        Err(Err(e)) => return Err(e),
    };
    pending.apply(db)?;
    // The checkpoint that makes the replayed records durable in the database.
    db.begin_write()?.commit()?;
    let last = end.last_lsn.unwrap_or(0).max(durable_lsn);
    let recovered = Recovered {
        records: end.records,
        bytes: end.bytes,
        seconds: started.elapsed().as_secs_f64(),
        torn: end.torn,
        discarded: end.discarded,
        next_lsn: last + 1,
        next_seq: end.max_seq + 1,
    };
    if recovered.records > 0 || recovered.torn.is_some() || recovered.discarded > 0 {
        tracing::warn!(
            records = recovered.records,
            bytes = recovered.bytes,
            seconds = recovered.seconds,
            torn = ?recovered.torn,
            discarded = recovered.discarded,
            "write-ahead log replayed"
        );
    }
    Ok(recovered)
}

/// What `check` finds in a data directory's log without changing it.
#[derive(Debug)]
pub(crate) struct LogReport {
    /// Records the database does not hold yet: replayed at the next start.
    pub pending: u64,
    /// What is wrong, if anything.
    pub problem: Option<String>,
}

/// Reads the whole log after the database's durable position, checking every record's frame and
/// operations.
pub(crate) fn check_log(
    db: &redb::Database,
    storage: &dyn LogStorage,
) -> Result<LogReport, StoreError> {
    let (durable_lsn, _) = database_position(db)?;
    let read = read_log(storage, durable_lsn + 1, |lsn, _, payload| {
        for op in logged::ops(payload) {
            op.map_err(|m| format!("record {lsn}: {m}"))?;
        }
        Ok::<(), String>(())
    });
    Ok(match read {
        Ok(end) => LogReport {
            pending: end.records,
            problem: None,
        },
        Err(Ok(m)) | Err(Err(m)) => LogReport {
            pending: 0,
            problem: Some(m),
        },
    })
}

/// The segment the writer appends to, or one it holds for later.
#[derive(Debug)]
struct Segment {
    name: String,
    file: Arc<dyn LogFile>,
    /// Its sequence number in its current use (0 while free).
    seq: u64,
    len: u64,
    /// Where the next record goes.
    pos: u64,
    /// The LSN of its last record (0 before the first).
    last_lsn: u64,
}

/// How the log is set up.
#[derive(Clone, Debug)]
pub(crate) struct LogConfig {
    pub mode: SyncMode,
    pub segment_bytes: u64,
    /// Log bytes after which a checkpoint is forced.
    pub checkpoint_bytes: u64,
    /// Age of the oldest record not yet checkpointed after which a checkpoint is forced.
    pub checkpoint_age: Duration,
    /// Under a steady load, a checkpoint this often (`--checkpoint-spread-ms`; `None` or zero:
    /// only when idle or forced). A checkpoint is a durable redb commit, which holds the writer
    /// up while it writes out what the commits since the last one left to it (their freed pages'
    /// records, the allocator's state) and syncs; its time grows with the commits it covers, so
    /// they are spread: many short ones rather than one long one at `checkpoint_age`.
    pub spread: Option<Duration>,
    pub schema: u64,
}

/// The writer's log.
pub(crate) struct Wal {
    storage: Arc<dyn LogStorage>,
    config: LogConfig,
    current: Segment,
    /// Segments before the current one, not yet made redundant by a checkpoint.
    full: VecDeque<Segment>,
    /// Segments ready to be reused.
    free: Vec<Segment>,
    next_lsn: u64,
    next_seq: u64,
    next_name: u64,
    /// Bytes written since the last checkpoint, and when the first of them was.
    unchecked_bytes: u64,
    unchecked_since: Option<Instant>,
    /// The position of the last record, while it may still be taken back.
    last_record: Option<u64>,
    periodic: Option<Arc<Periodic>>,
    /// A write or sync failed: nothing more is written or synced.
    broken: bool,
    sync_times: SyncTimes,
    /// The next segment, made ahead on a thread of its own (`prepare_spare`).
    spare: Arc<Mutex<Option<Segment>>>,
    spare_pending: Arc<AtomicBool>,
}

/// Why a record was not appended.
#[derive(Debug)]
pub(crate) enum AppendError {
    /// No segment could be made or prepared for it; nothing of it was written.
    NoRoom(io::Error),
    /// Writing or syncing it failed: the log can no longer be trusted.
    Failed(io::Error),
}

/// The latest syncs of the log: when (microseconds since the epoch) and how long (seconds), for
/// the `wal_sync_p99` alert signal.
pub(crate) type SyncTimes = Arc<Mutex<VecDeque<(crate::domain::Micros, f64)>>>;

fn record_sync(times: &SyncTimes, started: Instant) {
    let seconds = started.elapsed().as_secs_f64();
    metrics::histogram!(metric_names::WAL_SYNC_SECONDS).record(seconds);
    super::queues::remember_wait(&mut times.lock(), crate::domain::now_micros(), seconds);
}

/// Why the log stopped: after a failed sync nothing more may be acknowledged.
pub(crate) type OnFailure = Arc<dyn Fn(String) + Send + Sync>;

impl Segment {
    /// A segment not in use: free to begin.
    fn unused(name: String, file: Arc<dyn LogFile>, len: u64) -> Segment {
        Segment {
            name,
            file,
            seq: 0,
            len,
            pos: HEADER_LEN,
            last_lsn: 0,
        }
    }
}

impl Wal {
    /// Starts the log after recovery: every segment found is redundant and free.
    pub(crate) fn start(
        storage: Arc<dyn LogStorage>,
        config: LogConfig,
        recovered: &Recovered,
        on_failure: OnFailure,
        sync_times: SyncTimes,
    ) -> Result<Wal, StoreError> {
        let found = find(&*storage)?;
        let mut next_name = 0;
        let mut free = Vec::new();
        for f in found {
            if let Ok(n) = f.name.parse::<u64>() {
                next_name = next_name.max(n + 1);
            }
            if f.len < config.segment_bytes {
                // Shorter than a segment is made (the size was changed, or it was copied
                // trimmed): redundant after recovery, and not worth reusing.
                storage.remove(&f.name)?;
                continue;
            }
            free.push(Segment::unused(f.name, f.file, f.len));
        }
        let placeholder = Segment::unused(String::new(), Arc::new(Nothing), 0);
        let mut wal = Wal {
            storage,
            config,
            current: placeholder,
            full: VecDeque::new(),
            free,
            next_lsn: recovered.next_lsn.max(1),
            next_seq: recovered.next_seq.max(1),
            next_name,
            unchecked_bytes: 0,
            unchecked_since: None,
            last_record: None,
            periodic: None,
            broken: false,
            sync_times: sync_times.clone(),
            spare: Arc::default(),
            spare_pending: Arc::default(),
        };
        wal.current = wal.begin_segment(0)?;
        wal.trim_free()?;
        if let SyncMode::Periodic(interval) = wal.config.mode {
            wal.periodic = Some(Periodic::start(
                wal.current.file.clone(),
                interval,
                on_failure,
                wal.sync_times.clone(),
            )?);
        }
        Ok(wal)
    }

    /// The LSN the next record gets.
    pub(crate) fn next_lsn(&self) -> u64 {
        self.next_lsn
    }

    /// Appends `frame` (its first `FRAME_HEAD` bytes left for the head) as record `next_lsn()`,
    /// synced unless the log syncs periodically. `Err(NoRoom)`: no segment could be made for it
    /// (nothing was written; a checkpoint frees segments). `Err(Failed)` is final: the kernel may
    /// have dropped the pages of a failed write or sync, so nothing may be acknowledged after it.
    pub(crate) fn append(&mut self, frame: &mut [u8]) -> Result<u64, AppendError> {
        if self.broken {
            return Err(AppendError::Failed(io::Error::other(
                "an earlier write or sync of the log failed",
            )));
        }
        let lsn = self.next_lsn;
        let len = frame.len() as u64;
        if self.current.pos + len > self.current.len {
            self.switch(len)?;
        }
        seal(frame, lsn, self.current.seq);
        let written = self.current.file.write_at(self.current.pos, frame);
        written.map_err(|e| self.failed(e))?;
        match &self.periodic {
            None => {
                let started = Instant::now();
                let synced = self.current.file.sync_data();
                synced.map_err(|e| self.failed(e))?;
                record_sync(&self.sync_times, started);
            }
            Some(periodic) => periodic.dirty.store(true, Ordering::Release),
        }
        self.last_record = Some(self.current.pos);
        self.current.pos += len;
        if self.current.pos > self.current.len / 2 {
            self.prepare_spare();
        }
        self.current.last_lsn = lsn;
        self.next_lsn += 1;
        self.unchecked_bytes += len;
        self.unchecked_since.get_or_insert_with(Instant::now);
        metrics::counter!(metric_names::WAL_BYTES).increment(len);
        metrics::gauge!(metric_names::WAL_UNCHECKPOINTED_BYTES).set(self.unchecked_bytes as f64);
        Ok(lsn)
    }

    /// The log can no longer be trusted: it is never synced again (a later sync that succeeds
    /// proves nothing of the pages the failed one dropped).
    fn failed(&mut self, e: io::Error) -> AppendError {
        self.broken = true;
        if let Some(periodic) = self.periodic.take() {
            periodic.stop();
        }
        AppendError::Failed(e)
    }

    /// Takes back the last record (its commit to the database failed, so its callers are told it
    /// failed): its head is zeroed and synced, and its LSN is given to the next record.
    pub(crate) fn retract(&mut self) -> io::Result<()> {
        let Some(pos) = self.last_record.take() else {
            return Ok(());
        };
        self.current.file.write_at(pos, &[0u8; FRAME_HEAD])?;
        self.current.file.sync_data()?;
        self.current.pos = pos;
        self.next_lsn -= 1;
        self.current.last_lsn = self.next_lsn - 1;
        Ok(())
    }

    /// Whether a checkpoint is due by the log's size or its oldest record's age: the configured
    /// bounds, or the spread, whichever comes first.
    pub(crate) fn checkpoint_due(&self) -> bool {
        let age = match self.config.spread {
            Some(spread) if !spread.is_zero() => self.config.checkpoint_age.min(spread),
            _ => self.config.checkpoint_age,
        };
        self.unchecked_bytes >= self.config.checkpoint_bytes
            || self.unchecked_since.is_some_and(|t| t.elapsed() >= age)
    }

    /// Whether any record is not yet checkpointed.
    pub(crate) fn has_unchecked(&self) -> bool {
        self.unchecked_since.is_some()
    }

    /// Bytes written since the last checkpoint.
    pub(crate) fn unchecked_bytes(&self) -> u64 {
        self.unchecked_bytes
    }

    /// After a durable commit of the database holding every record so far: the full segments
    /// are free to reuse.
    pub(crate) fn checkpointed(&mut self) -> io::Result<()> {
        self.unchecked_bytes = 0;
        self.unchecked_since = None;
        self.last_record = None;
        let last = self.next_lsn - 1;
        while self.full.front().is_some_and(|s| s.last_lsn <= last) {
            let mut segment = self.full.pop_front().expect("checked");
            segment.pos = HEADER_LEN;
            segment.last_lsn = 0;
            self.free.push(segment);
        }
        metrics::gauge!(metric_names::WAL_UNCHECKPOINTED_BYTES).set(0.0);
        self.trim_free()
    }

    /// Keeps the segments, full, current and free together, to about what a checkpoint interval
    /// fills (`--checkpoint-mib`) and two more, removing free ones beyond.
    fn trim_free(&mut self) -> io::Result<()> {
        let most = (self.config.checkpoint_bytes / self.config.segment_bytes.max(1) + 2) as usize;
        let keep = most.saturating_sub(self.full.len() + 1).max(1);
        while self.free.len() > keep {
            let segment = self.free.pop().expect("checked");
            self.storage.remove(&segment.name)?;
        }
        Ok(())
    }

    /// Moves to a new segment with room for a record of `len` bytes.
    fn switch(&mut self, len: u64) -> Result<(), AppendError> {
        if self.periodic.is_some() {
            // Every record of a segment is durable before the next segment's first.
            let synced = self.current.file.sync_data();
            synced.map_err(|e| self.failed(e))?;
        }
        let next = self.begin_segment(len).map_err(AppendError::NoRoom)?;
        let old = std::mem::replace(&mut self.current, next);
        self.last_record = None;
        self.full.push_back(old);
        if let Some(periodic) = &self.periodic {
            *periodic.file.lock() = self.current.file.clone();
        }
        Ok(())
    }

    /// Makes the next segment on a thread of its own when none is free (once the current one is
    /// half full), so that the writer does not wait for its zeros to be written.
    fn prepare_spare(&mut self) {
        if !self.free.is_empty()
            || self.spare_pending.load(Ordering::Acquire)
            || self.spare.lock().is_some()
        {
            return;
        }
        let name = format!("{:016}", self.next_name);
        self.next_name += 1;
        let (storage, size) = (self.storage.clone(), self.config.segment_bytes);
        let (slot, pending) = (self.spare.clone(), self.spare_pending.clone());
        pending.store(true, Ordering::Release);
        let made = std::thread::Builder::new()
            .name("flightdeck-wal-segment".into())
            .spawn(move || {
                match storage.create(&name, size) {
                    Ok(file) => *slot.lock() = Some(Segment::unused(name, file, size)),
                    Err(e) => {
                        tracing::warn!(error = %e, "preparing a write-ahead log segment failed")
                    }
                }
                pending.store(false, Ordering::Release);
            });
        if made.is_err() {
            self.spare_pending.store(false, Ordering::Release);
        }
    }

    /// A segment with room for a record of `len` bytes, its header written and synced: a free
    /// one if one is large enough (the one prepared ahead first), else a new one.
    fn begin_segment(&mut self, len: u64) -> io::Result<Segment> {
        let needed = HEADER_LEN + len;
        if let Some(spare) = self.spare.lock().take() {
            self.free.push(spare);
        }
        let mut segment = match self.free.iter().position(|s| s.len >= needed) {
            Some(i) => self.free.swap_remove(i),
            None => {
                let name = format!("{:016}", self.next_name);
                self.next_name += 1;
                // A record larger than a segment gets a segment of its own, in whole MiB.
                let size = if needed > self.config.segment_bytes {
                    needed.next_multiple_of(1 << 20)
                } else {
                    self.config.segment_bytes
                };
                let file = self.storage.create(&name, size)?;
                Segment::unused(name, file, size)
            }
        };
        let header = Header {
            periodic: matches!(self.config.mode, SyncMode::Periodic(_)),
            schema: self.config.schema,
            seq: self.next_seq,
            first_lsn: self.next_lsn,
        };
        segment.file.write_at(0, &header.encode())?;
        segment.file.sync_data()?;
        segment.seq = self.next_seq;
        self.next_seq += 1;
        segment.pos = HEADER_LEN;
        segment.last_lsn = 0;
        Ok(segment)
    }

    /// Stops the periodic sync thread without a last sync: the store failed.
    pub(crate) fn abandon(&mut self) {
        self.broken = true;
        if let Some(periodic) = self.periodic.take() {
            periodic.stop();
        }
    }

    /// Stops the periodic sync thread after a last sync (none once a write or sync failed).
    pub(crate) fn close(&mut self) -> io::Result<()> {
        if let Some(periodic) = self.periodic.take() {
            periodic.stop();
        }
        if self.broken {
            return Ok(());
        }
        self.current.file.sync_data()
    }
}

/// A file that is never used (the placeholder while the first segment is made).
#[derive(Debug)]
struct Nothing;

impl LogFile for Nothing {
    fn size(&self) -> io::Result<u64> {
        Ok(0)
    }
    fn read_at(&self, _: u64, _: &mut [u8]) -> io::Result<()> {
        Err(io::Error::other("no segment"))
    }
    fn write_at(&self, _: u64, _: &[u8]) -> io::Result<()> {
        Err(io::Error::other("no segment"))
    }
    fn sync_data(&self) -> io::Result<()> {
        Ok(())
    }
}

/// The thread that syncs the log every interval in `periodic` mode.
struct Periodic {
    file: Mutex<Arc<dyn LogFile>>,
    dirty: AtomicBool,
    stopped: Mutex<bool>,
    wake: Condvar,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Periodic {
    fn start(
        file: Arc<dyn LogFile>,
        interval: Duration,
        on_failure: OnFailure,
        sync_times: SyncTimes,
    ) -> io::Result<Arc<Periodic>> {
        let periodic = Arc::new(Periodic {
            file: Mutex::new(file),
            dirty: AtomicBool::new(false),
            stopped: Mutex::new(false),
            wake: Condvar::new(),
            thread: Mutex::new(None),
        });
        let this = periodic.clone();
        let thread = std::thread::Builder::new()
            .name("flightdeck-wal-sync".into())
            .spawn(move || {
                loop {
                    {
                        let mut stopped = this.stopped.lock();
                        if !*stopped {
                            this.wake.wait_for(&mut stopped, interval);
                        }
                        if *stopped {
                            return;
                        }
                    }
                    if this.dirty.swap(false, Ordering::AcqRel) {
                        let file = this.file.lock().clone();
                        let started = Instant::now();
                        if let Err(e) = file.sync_data() {
                            on_failure(format!("syncing the write-ahead log failed: {e}"));
                            return;
                        }
                        record_sync(&sync_times, started);
                    }
                }
            })?;
        *periodic.thread.lock() = Some(thread);
        Ok(periodic)
    }

    fn stop(&self) {
        *self.stopped.lock() = true;
        self.wake.notify_all();
        if let Some(thread) = self.thread.lock().take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_reads_back_and_a_flipped_bit_fails_it() {
        let header = Header {
            periodic: true,
            schema: 9,
            seq: 7,
            first_lsn: 12_345,
        };
        let bytes = header.encode();
        assert_eq!(Header::decode(&bytes), Some(header));
        for bit in 0..(44 * 8) {
            let mut bad = bytes;
            bad[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(Header::decode(&bad), None, "bit {bit}");
        }
    }

    #[test]
    fn a_record_reads_back_and_any_flipped_bit_fails_it() {
        let mut frame = vec![0u8; FRAME_HEAD];
        frame.extend_from_slice(b"the payload of a record");
        seal(&mut frame, 42, 7);
        let (lsn, payload, end) = parse(&frame, 0, 7).unwrap();
        assert_eq!(
            (lsn, payload, end),
            (42, &b"the payload of a record"[..], frame.len())
        );
        for bit in 0..frame.len() * 8 {
            let mut bad = frame.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(parse(&bad, 0, 7).is_none(), "bit {bit} went unnoticed");
        }
    }
}
