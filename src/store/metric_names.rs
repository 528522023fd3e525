//! Metric names of the store, their descriptions, and the queue histograms' buckets.

pub const WRITE_BATCH_SIZE: &str = "flightdeck_store_write_batch_size";
pub const COMMIT_SECONDS: &str = "flightdeck_store_commit_duration_seconds";
pub const WRITER_QUEUE_DEPTH: &str = "flightdeck_store_writer_queue_depth";
pub const READ_SECONDS: &str = "flightdeck_store_read_duration_seconds";
pub const FILE_SIZE_BYTES: &str = "flightdeck_store_file_size_bytes";
pub const USED_BYTES: &str = "flightdeck_store_used_bytes";
pub const RECORDS: &str = "flightdeck_store_records";
pub const CACHE_HITS: &str = "flightdeck_cache_hits_total";
pub const CACHE_MISSES: &str = "flightdeck_cache_misses_total";
pub const CACHE_EVICTIONS: &str = "flightdeck_cache_evictions_total";
pub const CACHE_ENTRIES: &str = "flightdeck_cache_entries";
pub const CACHE_BYTES: &str = "flightdeck_cache_bytes";
/// Pending tasks, by agent type (a gauge).
pub const QUEUE_DEPTH: &str = "flightdeck_queue_depth";
/// 1 while an exhausted budget (over everything, or over the agent type) holds the queue.
pub const QUEUE_HELD: &str = "flightdeck_queue_held_by_budget";
/// From a task becoming pending to its claim, by agent type (a histogram).
pub const QUEUE_WAIT_SECONDS: &str = "flightdeck_queue_wait_seconds";
/// From a task's start to its completion or failure, by agent type (a histogram).
pub const TASK_RUN_SECONDS: &str = "flightdeck_task_run_seconds";
pub const LEASE_EXPIRATIONS: &str = "flightdeck_task_lease_expirations_total";
pub const RETRIES: &str = "flightdeck_task_retries_total";
pub const ESCALATIONS: &str = "flightdeck_task_escalations_total";
/// Bytes of the progress reports held in memory (a gauge).
pub const PROGRESS_BYTES: &str = "flightdeck_progress_bytes";
/// Progress reports sent on but not kept: the board was at its bound.
pub const PROGRESS_NOT_KEPT: &str = "flightdeck_progress_not_kept_total";
/// Bytes appended to the write-ahead log (a counter).
pub const WAL_BYTES: &str = "flightdeck_wal_bytes_total";
/// Bytes of the log not yet made redundant by a checkpoint (a gauge).
pub const WAL_UNCHECKPOINTED_BYTES: &str = "flightdeck_wal_uncheckpointed_bytes";
/// Time of one `fdatasync` of the log (a histogram).
pub const WAL_SYNC_SECONDS: &str = "flightdeck_wal_sync_duration_seconds";
/// Time of one checkpoint: a durable commit of the database (a histogram).
pub const CHECKPOINT_SECONDS: &str = "flightdeck_checkpoint_duration_seconds";
/// Log bytes made redundant by checkpoints (a counter).
pub const CHECKPOINT_BYTES: &str = "flightdeck_checkpoint_bytes_total";
/// Records replayed from the log at start-up (a gauge).
pub const WAL_REPLAYED_RECORDS: &str = "flightdeck_wal_replayed_records";
/// Time the replay at start-up took (a gauge).
pub const WAL_REPLAY_SECONDS: &str = "flightdeck_wal_replay_seconds";
/// The buckets of the queue histograms, in seconds: 1 ms to an hour.
pub const QUEUE_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
    3600.0,
];
/// The `operation` label values of `READ_SECONDS`.
pub const READ_OPERATIONS: &[&str] = &["get", "list", "events", "replay", "agents"];

/// The descriptions of the store's metrics, and their series at zero from start-up.
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_histogram!(WRITE_BATCH_SIZE, "Writes committed per write transaction.");
    describe_histogram!(
        COMMIT_SECONDS,
        Unit::Seconds,
        "Time to apply and commit one write transaction."
    );
    describe_gauge!(WRITER_QUEUE_DEPTH, "Writes waiting for the writer thread.");
    describe_histogram!(
        READ_SECONDS,
        Unit::Seconds,
        "Read transaction duration, by operation."
    );
    describe_gauge!(FILE_SIZE_BYTES, Unit::Bytes, "Size of the database file.");
    describe_gauge!(
        USED_BYTES,
        Unit::Bytes,
        "Bytes of the database file the tables' pages take (measured when the writer is idle)."
    );
    describe_gauge!(RECORDS, "Records per table.");
    describe_counter!(
        CACHE_HITS,
        "Encoded responses (artifacts, project statuses) served from the cache."
    );
    describe_counter!(
        CACHE_MISSES,
        "Responses encoded because the cache did not hold them."
    );
    describe_counter!(
        CACHE_EVICTIONS,
        "Responses evicted from the cache to make room."
    );
    describe_gauge!(CACHE_ENTRIES, "Encoded responses in the cache.");
    describe_gauge!(
        CACHE_BYTES,
        Unit::Bytes,
        "Bytes the response cache holds (bounded by --cache-mib)."
    );
    describe_counter!(
        WAL_BYTES,
        Unit::Bytes,
        "Bytes appended to the write-ahead log."
    );
    describe_gauge!(
        WAL_UNCHECKPOINTED_BYTES,
        Unit::Bytes,
        "Bytes of the write-ahead log not yet made redundant by a checkpoint (at most --checkpoint-mib before one is forced)."
    );
    describe_histogram!(
        WAL_SYNC_SECONDS,
        Unit::Seconds,
        "Time of one fdatasync of the write-ahead log."
    );
    describe_histogram!(
        CHECKPOINT_SECONDS,
        Unit::Seconds,
        "Time of one checkpoint (a durable commit of the database)."
    );
    describe_counter!(
        CHECKPOINT_BYTES,
        Unit::Bytes,
        "Write-ahead log bytes made redundant by checkpoints."
    );
    describe_gauge!(
        WAL_REPLAYED_RECORDS,
        "Write-ahead log records replayed at start-up."
    );
    describe_gauge!(
        WAL_REPLAY_SECONDS,
        Unit::Seconds,
        "Time the write-ahead log's replay took at start-up."
    );
    let _ = metrics::histogram!(WAL_SYNC_SECONDS);
    let _ = metrics::histogram!(CHECKPOINT_SECONDS);
    metrics::counter!(WAL_BYTES).increment(0);
    metrics::counter!(CHECKPOINT_BYTES).increment(0);
    let _ = metrics::histogram!(WRITE_BATCH_SIZE);
    let _ = metrics::histogram!(COMMIT_SECONDS);
    for operation in READ_OPERATIONS {
        let _ = metrics::histogram!(READ_SECONDS, "operation" => *operation);
    }
    metrics::gauge!(USED_BYTES).set(0.0);
    metrics::counter!(CACHE_HITS).increment(0);
    metrics::counter!(CACHE_MISSES).increment(0);
    metrics::counter!(CACHE_EVICTIONS).increment(0);
    describe_gauge!(QUEUE_DEPTH, "Pending tasks, by agent type.");
    describe_gauge!(
        QUEUE_HELD,
        "1 while an exhausted budget (global or the agent type's) holds the agent type's queue."
    );
    describe_histogram!(
        QUEUE_WAIT_SECONDS,
        Unit::Seconds,
        "Time from a task becoming pending to its claim, by agent type."
    );
    describe_histogram!(
        TASK_RUN_SECONDS,
        Unit::Seconds,
        "Time from a task's start to its completion or failure, by agent type."
    );
    describe_counter!(
        LEASE_EXPIRATIONS,
        "Claims whose lease ran out (the task went back to pending), by agent type."
    );
    describe_counter!(
        RETRIES,
        "Failed tasks sent back to pending for another attempt, by agent type."
    );
    describe_counter!(
        ESCALATIONS,
        "Tasks that failed their last attempt and were escalated to a human, by agent type."
    );
    describe_gauge!(
        PROGRESS_BYTES,
        Unit::Bytes,
        "Bytes of the working tasks' latest progress reports held in memory (at most --progress-mib)."
    );
    describe_counter!(
        PROGRESS_NOT_KEPT,
        "Progress reports sent to subscribers but not kept with their task: the reports held were at --progress-mib or 100,000 tasks."
    );
    metrics::counter!(PROGRESS_NOT_KEPT).increment(0);
    metrics::gauge!(PROGRESS_BYTES).set(0.0);
    for agent in crate::domain::AgentType::defaults() {
        agent_type_series(agent.as_str());
    }
}

/// Creates an agent type's series at zero, so that a rate over them starts at its first use. Only
/// interned types get here, so their number is bounded by `--max-agent-types`.
pub fn agent_type_series(agent: &str) {
    let a = agent.to_owned();
    let _ = metrics::histogram!(QUEUE_WAIT_SECONDS, "agent_type" => a.clone());
    let _ = metrics::histogram!(TASK_RUN_SECONDS, "agent_type" => a.clone());
    metrics::counter!(LEASE_EXPIRATIONS, "agent_type" => a.clone()).increment(0);
    metrics::counter!(RETRIES, "agent_type" => a.clone()).increment(0);
    metrics::counter!(ESCALATIONS, "agent_type" => a).increment(0);
}
