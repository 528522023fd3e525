//! The server's settings, one row each (`settings!`): its doc comment (the help text and the
//! README's description), its file key and flag (the field's name, `_` as `-`), its variable, its
//! default, and how it reaches `Config`. From the rows come `ServeArgs` (clap's flags and
//! variables, serde's file keys), `apply` (every setting into `Config`, the default when none is
//! given) and `DOCS` (the README's settings table, checked by a test against README.md).
//!
//! A row's default is text, parsed as a flag's value would be; `none` means the setting is absent
//! unless given (its apply sees an `Option`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde::{Deserialize, Serialize};

use super::{Config, LogFormat, lists};
use crate::http::auth::ApiKeys;
use crate::store::Durability;

/// A setting as the README's table shows it.
#[derive(Debug)]
pub struct SettingDoc {
    /// The field: the file key, and the flag with `-` for `_` unless its row names another.
    pub key: &'static str,
    /// The default as text, or `None`.
    pub default: Option<&'static str>,
    /// The doc comment's lines.
    pub description: &'static [&'static str],
}

/// A setting's type, as its default text is read.
trait FromDefault: Sized {
    fn from_default(text: &str) -> Result<Self, String>;
}

macro_rules! from_str_default {
    ($($t:ty),+) => {$(
        impl FromDefault for $t {
            fn from_default(text: &str) -> Result<Self, String> {
                text.parse().map_err(|e| format!("the default {text:?}: {e}"))
            }
        }
    )+};
}
from_str_default!(SocketAddr, PathBuf, usize, u32, u64, bool, String);

macro_rules! value_enum_default {
    ($($t:ty),+) => {$(
        impl FromDefault for $t {
            fn from_default(text: &str) -> Result<Self, String> {
                <$t as clap::ValueEnum>::from_str(text, false)
            }
        }
    )+};
}
value_enum_default!(Durability, LogFormat);

macro_rules! settings {
    (
        extra {
            $($extra:tt)*
        }
        $(
            $(#[doc = $doc:literal])*
            $field:ident: $t:ty = $default:tt, $env:literal, $value:literal $(, #[$attr:meta])*
                => |$c:ident, $v:ident| $apply:expr;
        )+
    ) => {
        /// Every setting of the server: a flag (with its `FLIGHTDECK_*` variable) and the key of
        /// the same name in the TOML file (`settings!`). `Config::resolve` lays the flags over the
        /// file over the defaults. Unknown keys in the file are refused.
        #[derive(Args, Debug, Default, Clone, Serialize, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct ServeArgs {
            $(
                $(#[doc = $doc])*
                #[arg(
                    long,
                    env = $env,
                    value_name = $value,
                    help = concat!($($doc,)* settings!(@default_help $default)).trim_start()
                )]
                $(#[$attr])*
                pub $field: Option<$t>,
            )+
            $($extra)*
        }

        /// The settings of `over` laid on those of `under`: each one `over` gives replaces
        /// `under`'s (the file-only tables are `under`'s).
        pub(super) fn overlay(under: ServeArgs, over: &ServeArgs) -> ServeArgs {
            #[allow(unused_mut)] // without the conformance build's flag
            let mut merged = ServeArgs {
                $($field: over.$field.clone().or(under.$field),)+
                ..under
            };
            #[cfg(feature = "conformance")]
            {
                merged.ws_echo = over.ws_echo.or(merged.ws_echo);
            }
            merged
        }

        /// Every row's setting into `config`: the value given, else the row's default.
        pub(super) fn apply(s: &ServeArgs, config: &mut Config) -> Result<(), String> {
            $(
                {
                    let $v = settings!(@value s.$field.clone(), $default, $t);
                    let $c = &mut *config;
                    $apply;
                }
            )+
            Ok(())
        }

        /// The rows, for the README's table.
        pub const DOCS: &[SettingDoc] = &[$(
            SettingDoc {
                key: stringify!($field),
                default: settings!(@default_text $default),
                description: &[$($doc),*],
            },
        )+];
    };
    (@value $given:expr, none, $t:ty) => { $given };
    (@value $given:expr, $default:literal, $t:ty) => {
        match $given {
            Some(v) => v,
            None => <$t as FromDefault>::from_default($default)?,
        }
    };
    (@default_text none) => { None };
    (@default_text $default:literal) => { Some($default) };
    (@default_help none) => { "" };
    (@default_help $default:literal) => { concat!(" [default: ", $default, "]") };
}

/// A count or size that must be at least 1.
fn positive<T: Into<u64> + Copy>(name: &str, value: T) -> Result<T, String> {
    if value.into() == 0 {
        Err(format!("{name} must be at least 1"))
    } else {
        Ok(value)
    }
}

/// `positive`, for `usize` values.
fn at_least_1(name: &str, value: usize) -> Result<usize, String> {
    positive(name, value as u64).map(|_| value)
}

/// Milliseconds of at least 1, as a duration.
fn millis(name: &str, value: u64) -> Result<Duration, String> {
    positive(name, value).map(Duration::from_millis)
}

/// Milliseconds of at least 1, in the store's microseconds.
fn micros(name: &str, value: u64) -> Result<i64, String> {
    positive(name, value).map(|v| (v as i64).saturating_mul(1000))
}

const MIB: usize = 1024 * 1024;

settings! {
    extra {
        /// Protocol conformance testing only: /ws echoes every message instead of serving events.
        /// Present only in builds with the `conformance` feature.
        #[cfg(feature = "conformance")]
        #[arg(
            long,
            env = "FLIGHTDECK_WS_ECHO",
            num_args = 0..=1,
            default_missing_value = "true",
            value_name = "BOOL"
        )]
        pub ws_echo: Option<bool>,
        /// File only: rules that replace the default of the same name, or add to them.
        #[arg(skip)]
        pub alert_rules: Vec<crate::monitor::RuleConfig>,
        /// File only: workflow definitions; one named `sdlc` replaces the built-in one.
        #[arg(skip)]
        pub workflows: Vec<crate::domain::workflow::WorkflowDef>,
        /// File only: `[[webhooks]]`, each a durable consumer of the event log.
        #[arg(skip)]
        pub webhooks: Vec<crate::webhooks::WebhookConfig>,
        /// File only: `[[prices]]`, what a model's tokens cost (reports without a cost).
        #[arg(skip)]
        pub prices: Vec<crate::domain::usage::Price>,
    }
    /// Address to serve on
    listen: SocketAddr = "127.0.0.1:8080", "FLIGHTDECK_LISTEN", "ADDR"
        => |c, v| c.listen = v;
    /// Where the database lives (created if missing)
    data_dir: PathBuf = "./data", "FLIGHTDECK_DATA_DIR", "DIR"
        => |c, v| c.store.data_dir = v;
    /// TOML file with any of these keys (flags and variables win over it)
    config: PathBuf = none, "FLIGHTDECK_CONFIG", "FILE",
        #[serde(skip)]
        => |c, v| c.source = v;
    /// `immediate`: every acknowledged write's write-ahead log record is synced before the
    /// answer (nothing acknowledged is lost). `periodic`: the record is written before the answer
    /// and synced every `--sync-interval-ms` (a crash of the process loses nothing, a power cut at
    /// most the last interval). `none`: no log and no sync; a crash (not a clean stop) loses
    /// every write since start-up — for tests and benchmarks only
    durability: Durability = "immediate", "FLIGHTDECK_DURABILITY", "MODE",
        #[arg(value_enum)]
        => |c, v| c.store.durability = v;
    /// With `--durability periodic`: milliseconds between syncs of the write-ahead log
    sync_interval_ms: u64 = "1000", "FLIGHTDECK_SYNC_INTERVAL_MS", "MS"
        => |c, v| c.store.sync_interval = Duration::from_millis(positive("sync_interval_ms", v)?);
    /// Write-ahead log, in MiB, after which a checkpoint (a durable commit of the database) is
    /// forced; checkpoints also run when the writer has been idle for a second
    checkpoint_mib: u64 = "256", "FLIGHTDECK_CHECKPOINT_MIB", "MIB"
        => |c, v| c.store.checkpoint_bytes = positive("checkpoint_mib", v)?.saturating_mul(MIB as u64);
    /// Age in seconds of the oldest write-ahead log record not yet checkpointed after which a
    /// checkpoint is forced
    checkpoint_secs: u64 = "60", "FLIGHTDECK_CHECKPOINT_SECS", "SECS"
        => |c, v| c.store.checkpoint_age = Duration::from_secs(positive("checkpoint_secs", v)?);
    /// Under a steady load, a checkpoint every this many milliseconds, each short: its time grows
    /// with the commits it covers, and the writer waits for it; `0`: only when the writer is idle
    /// or one is forced by `--checkpoint-mib` or `--checkpoint-secs`
    checkpoint_spread_ms: u64 = "500", "FLIGHTDECK_CHECKPOINT_SPREAD_MS", "MS"
        => |c, v| c.store.checkpoint_spread = Duration::from_millis(v);
    /// Size of one write-ahead log segment, in MiB: written with zeros ahead of use and reused
    /// after a checkpoint
    wal_segment_mib: u64 = "16", "FLIGHTDECK_WAL_SEGMENT_MIB", "MIB"
        => |c, v| c.store.segment_bytes = positive("wal_segment_mib", v)?.saturating_mul(MIB as u64);
    /// `text` or `json`, on stderr; level via `FLIGHTDECK_LOG` (e.g. `debug`)
    log_format: LogFormat = "text", "FLIGHTDECK_LOG_FORMAT", "FORMAT",
        #[arg(value_enum)]
        => |c, v| c.log_format = v;
    /// Largest request body, in bytes
    max_body_bytes: usize = "1048576", "FLIGHTDECK_MAX_BODY_BYTES", "BYTES"
        => |c, v| c.max_body_bytes = at_least_1("max_body_bytes", v)?;
    /// Most bytes of one page of a list (tasks, artifacts, HITL requests, projects, events):
    /// a page stops at `limit` items or here, whichever comes first, with `next_cursor`; a single
    /// item larger than it is a page of its own
    max_page_bytes: usize = "8388608", "FLIGHTDECK_MAX_PAGE_BYTES", "BYTES"
        => |c, v| c.store.page_bytes = at_least_1("max_page_bytes", v)?;
    /// Largest task progress report (message, percent and data, encoded); larger ones answer 413
    max_progress_bytes: usize = "65536", "FLIGHTDECK_MAX_PROGRESS_BYTES", "BYTES"
        => |c, v| c.max_progress_bytes = at_least_1("max_progress_bytes", v)?;
    /// Progress reports held in memory, all working tasks together, in MiB; beyond it a report
    /// still reaches WebSocket subscribers but is not kept with its task
    progress_mib: usize = "64", "FLIGHTDECK_PROGRESS_MIB", "MIB"
        => |c, v| c.store.progress_bytes = at_least_1("progress_mib", v)?.saturating_mul(MIB);
    /// Writes waiting for the writer; beyond it, 503
    writer_queue: usize = "16384", "FLIGHTDECK_WRITER_QUEUE", "N"
        => |c, v| c.store.writer_queue = at_least_1("writer_queue", v)?;
    /// Open HTTP connections; further ones get 503 and are closed
    max_connections: usize = "10000", "FLIGHTDECK_MAX_CONNECTIONS", "N"
        => |c, v| c.max_connections = at_least_1("max_connections", v)?;
    /// The kernel's queue of connections waiting to be accepted (capped by
    /// `net.core.somaxconn`); a burst of connects beyond it overflows, and each dropped client
    /// waits for a SYN retransmit (1 s, 3 s, …)
    listen_backlog: u32 = "4096", "FLIGHTDECK_LISTEN_BACKLOG", "N"
        => |c, v| c.listen_backlog = positive("listen_backlog", v)?;
    /// SO_SNDBUF of every accepted connection, in KiB (capped by `net.core.wmem_max`), so a
    /// client that stops reading holds this much kernel memory rather than the megabytes
    /// autotuning grows to; `0`: the kernel's autotuning
    socket_send_buffer_kib: usize = "256", "FLIGHTDECK_SOCKET_SEND_BUFFER_KIB", "KIB"
        => |c, v| c.ws.socket_send_buffer = v.saturating_mul(1024);
    /// Encoded responses (artifacts, project statuses) kept in memory, in MiB; one larger than an
    /// eighth of it is not cached (replaces `--artifact-cache-entries`)
    cache_mib: usize = "256", "FLIGHTDECK_CACHE_MIB", "MIB"
        => |c, v| c.store.cache_bytes = at_least_1("cache_mib", v)?.saturating_mul(MIB);
    /// Status changes kept per agent type; each change removes the oldest beyond it
    agent_history_retention: u64 = "10000", "FLIGHTDECK_AGENT_HISTORY_RETENTION", "N"
        => |c, v| c.store.agent_history_retention = positive("agent_history_retention", v)?;
    /// The only agent types taken, comma-separated (`analyst,coder`); any other is refused with
    /// 422 naming the list. Unset: any name matching `^[a-z][a-z0-9_.-]{0,63}$`, BotArmy's six
    /// listed first
    agent_types: Vec<String> = none, "FLIGHTDECK_AGENT_TYPES", "NAMES",
        #[arg(value_delimiter = ',')],
        #[serde(deserialize_with = "lists::some_list_or_text")]
        => |c, v| c.store.agent_types.only = closed_list("agent_types", v)?;
    /// The only artifact types taken, comma-separated, as `agent_types` (BotArmy's eleven listed
    /// first when unset)
    artifact_types: Vec<String> = none, "FLIGHTDECK_ARTIFACT_TYPES", "NAMES",
        #[arg(value_delimiter = ',')],
        #[serde(deserialize_with = "lists::some_list_or_text")]
        => |c, v| c.store.artifact_types.only = closed_list("artifact_types", v)?;
    /// Most distinct agent types in use (each is a label value of the per-type metrics);
    /// beyond it a new one answers 422 `too_many_types`
    max_agent_types: usize = "256", "FLIGHTDECK_MAX_AGENT_TYPES", "N"
        => |c, v| c.store.agent_types.max = type_limit("max_agent_types", v)?;
    /// Most distinct artifact types in use; beyond it a new one answers 422 `too_many_types`
    max_artifact_types: usize = "1024", "FLIGHTDECK_MAX_ARTIFACT_TYPES", "N"
        => |c, v| c.store.artifact_types.max = type_limit("max_artifact_types", v)?;
    /// Most distinct model names kept apart in usage sums and metrics; reports of models beyond
    /// count as `other` there (the ledger keeps every name)
    max_models: usize = "256", "FLIGHTDECK_MAX_MODELS", "N"
        => |c, v| c.store.max_models = type_limit("max_models", v)?;
    /// Most tasks one workflow phase fans out to (`for_each`); a longer list fails the run
    max_fan_out: usize = "1000", "FLIGHTDECK_MAX_FAN_OUT", "N"
        => |c, v| c.store.max_fan_out = fan_out_limit(v)?;
    /// Origins (`http://localhost:3000`) whose pages may call the API, or `*`, comma-separated;
    /// when set (or without API keys), WebSocket upgrades from other origins are refused; see
    /// "Browsers"
    cors_origins: Vec<String> = none, "FLIGHTDECK_CORS_ORIGINS", "ORIGINS",
        #[arg(value_delimiter = ',')],
        #[serde(deserialize_with = "lists::some_list_or_text")]
        => |c, v| c.cors = crate::http::cors::Cors::parse(&v.unwrap_or_default())?;
    /// Online backups (`POST /api/v1/admin/backup`) kept in `DATA_DIR/backups`; the oldest beyond
    /// are removed after each new one
    backup_keep: usize = "7", "FLIGHTDECK_BACKUP_KEEP", "COUNT"
        => |c, v| c.backup_keep = at_least_1("backup_keep", v)?;
    /// Failed posts of one event after which a webhook gives up on it: the event becomes a dead
    /// letter (`GET /api/v1/monitoring/webhooks`) and delivery goes on; a 4xx other than 408 and
    /// 429 gives up at once
    webhook_max_attempts: u32 = "20", "FLIGHTDECK_WEBHOOK_MAX_ATTEMPTS", "N"
        => |c, v| c.webhook_max_attempts = positive("webhook_max_attempts", v)?;
    /// Host names, besides IP addresses and localhost, a server without API keys answers to,
    /// comma-separated (DNS rebinding); see "Security and operations"
    allowed_hosts: Vec<String> = none, "FLIGHTDECK_ALLOWED_HOSTS", "HOSTS",
        #[arg(value_delimiter = ',')],
        #[serde(deserialize_with = "lists::some_list_or_text")]
        => |c, v| c.allowed_hosts = crate::http::site::AllowedHosts::parse(&v.unwrap_or_default())?;
    /// redb's page cache: the resident memory it may hold (its allocation overhead included), in
    /// MiB
    page_cache_mib: usize = "1024", "FLIGHTDECK_PAGE_CACHE_MIB", "MIB"
        => |c, v| c.store.page_cache_bytes = at_least_1("page_cache_mib", v)?.saturating_mul(MIB);
    /// Events kept in the log; each write removes as many of the oldest as it appends beyond it
    /// (a lowered retention is reached in the background, 1,000 events a write)
    event_retention: u64 = "1000000", "FLIGHTDECK_EVENT_RETENTION", "N"
        => |c, v| c.store.event_retention = positive("event_retention", v)?;
    /// Per-connection bound of unsent WebSocket frames, in bytes (then close 4008); counts each
    /// frame's bytes plus its queue slot, and the batch being written
    ws_queue_bytes: usize = "4194304", "FLIGHTDECK_WS_QUEUE_BYTES", "BYTES"
        => |c, v| c.ws.queue_bytes = at_least_1("ws_queue_bytes", v)?;
    /// Bound of all WebSocket connections' unsent frames together, in MiB
    /// (`flightdeck_ws_queued_bytes`); over it, the connections holding the most are closed with
    /// 4008, largest first, until the rest fits; publishing never waits
    ws_total_queue_mib: usize = "512", "FLIGHTDECK_WS_TOTAL_QUEUE_MIB", "MIB"
        => |c, v| c.ws.total_queue_bytes =
            at_least_1("ws_total_queue_mib", v)?.saturating_mul(MIB);
    /// Seconds between server pings; two missed pongs close the connection
    ws_ping_interval_secs: u64 = "20", "FLIGHTDECK_WS_PING_INTERVAL_SECS", "SECS"
        => |c, v| c.ws.ping_interval =
            Duration::from_secs(positive("ws_ping_interval_secs", v)?);
    /// Open WebSockets; further upgrades answer 503
    max_ws_connections: usize = "10000", "FLIGHTDECK_MAX_WS_CONNECTIONS", "N"
        => |c, v| c.ws.max_connections = at_least_1("max_ws_connections", v)?;
    /// POST alert transitions here (Alertmanager v2 format, `http://` only)
    alert_webhook_url: String = none, "FLIGHTDECK_ALERT_WEBHOOK_URL", "URL"
        => |c, v| if let Some(url) = v {
            if !url.starts_with("http://") {
                return Err(format!("alert_webhook_url must be an http:// URL (got {url})"));
            }
            c.monitor.webhook_url = Some(url);
        };
    /// A firing alert is sent again this often, in seconds, valid for four intervals, so the
    /// receiver never resolves it on its own
    alert_resend_interval_secs: u64 = "60", "FLIGHTDECK_ALERT_RESEND_INTERVAL_SECS", "SECS"
        => |c, v| c.monitor.resend_interval =
            Duration::from_secs(positive("alert_resend_interval_secs", v)?);
    /// How often alert rules are evaluated, in seconds
    alert_eval_interval_secs: u64 = "5", "FLIGHTDECK_ALERT_EVAL_INTERVAL_SECS", "SECS"
        => |c, v| c.monitor.eval_interval =
            Duration::from_secs(positive("alert_eval_interval_secs", v)?);
    /// Status queries slower than this are logged as warnings, in ms (0: every one)
    slow_status_query_ms: u64 = "200", "FLIGHTDECK_SLOW_STATUS_QUERY_MS", "MS"
        => |c, v| c.monitor.slow_status_query = Duration::from_millis(v);
    /// Task operations slower than this are logged as warnings, in ms
    slow_task_operation_ms: u64 = "500", "FLIGHTDECK_SLOW_TASK_OPERATION_MS", "MS"
        => |c, v| c.monitor.slow_task_operation = Duration::from_millis(v);
    /// Other requests slower than this are logged as warnings, in ms
    slow_request_ms: u64 = "1000", "FLIGHTDECK_SLOW_REQUEST_MS", "MS"
        => |c, v| c.monitor.slow_other = Duration::from_millis(v);
    /// Readiness fails and `DiskFreeLow` fires below this much free disk, in MiB
    min_free_disk_mb: u64 = "256", "FLIGHTDECK_MIN_FREE_DISK_MB", "MIB"
        => |c, v| {
            c.monitor.min_free_disk_bytes = v.saturating_mul(MIB as u64);
            c.monitor.rules = crate::monitor::alerts::default_rules(c.monitor.min_free_disk_bytes);
        };
    /// A task working longer counts as a failed attempt, in ms
    task_timeout_ms: u64 = "300000", "FLIGHTDECK_TASK_TIMEOUT_MS", "MS"
        => |c, v| c.store.tasks.task_timeout = micros("task_timeout_ms", v)?;
    /// Failed attempts before a task stays failed and is escalated
    max_attempts: u32 = "3", "FLIGHTDECK_MAX_ATTEMPTS", "N"
        => |c, v| c.store.tasks.max_attempts = positive("max_attempts", v)?;
    /// The first retry's delay, doubled for each further one, in ms
    retry_backoff_ms: u64 = "1000", "FLIGHTDECK_RETRY_BACKOFF_MS", "MS"
        => |c, v| c.store.tasks.retry_backoff = micros("retry_backoff_ms", v)?;
    /// A claim's lease when the worker asks for none, in ms
    default_lease_ms: u64 = "60000", "FLIGHTDECK_DEFAULT_LEASE_MS", "MS"
        => |c, v| c.store.tasks.default_lease = micros("default_lease_ms", v)?;
    /// How long an `Idempotency-Key` is remembered, in hours
    idempotency_ttl_hours: u64 = "24", "FLIGHTDECK_IDEMPOTENCY_TTL_HOURS", "HOURS"
        => |c, v| c.store.idempotency_ttl =
            (positive("idempotency_ttl_hours", v)? as i64).saturating_mul(3_600_000_000);
    /// Most `Idempotency-Key`s remembered; beyond it the oldest are forgotten first (each is about
    /// 100 bytes on disk: a digest, the request's digest and the record's id)
    idempotency_max_keys: u64 = "1000000", "FLIGHTDECK_IDEMPOTENCY_MAX_KEYS", "N"
        => |c, v| c.store.idempotency_keep = positive("idempotency_max_keys", v)?;
    /// The longest a claim may wait for work (its `wait_ms`), in ms
    max_claim_wait_ms: u64 = "30000", "FLIGHTDECK_MAX_CLAIM_WAIT_MS", "MS"
        => |c, v| c.store.tasks.max_claim_wait = micros("max_claim_wait_ms", v)?;
    /// How often due timers (leases, retries, timeouts, HITL expiry) are fired, in ms
    timer_tick_ms: u64 = "100", "FLIGHTDECK_TIMER_TICK_MS", "MS"
        => |c, v| c.timer_tick = millis("timer_tick_ms", v)?;
    /// Require a key for `/metrics` and `/health/detailed` too (probes always stay open); `--protect-metrics=false`
    /// overrides a file that sets it
    protect_metrics: bool = "false", "FLIGHTDECK_PROTECT_METRICS", "BOOL",
        #[arg(num_args = 0..=1, default_missing_value = "true")]
        => |c, v| c.api_keys.protect_metrics = v;
    /// API keys, repeatable (comma-separated in the variable): `NAME:ROLES:SECRET`, ROLES being
    /// `ro` (read only), `rw` (every role but admin) or a list of `worker`, `reviewer`,
    /// `operator`, `admin` (`alice:worker,reviewer:SECRET`); NAME: 1–64 of `A-Z a-z 0-9 . _ -`,
    /// each once; without a name `ROLES:SECRET` or `SECRET` (rw), named `key-` + 8 hex digits of
    /// the secret's SHA-256; secrets at least 16 printable characters. Without any, the API is
    /// open; see "Roles"
    api_keys: Vec<String> = none, "FLIGHTDECK_API_KEYS", "KEY",
        #[arg(long = "api-key", value_delimiter = ',', hide_env_values = true)],
        #[serde(deserialize_with = "lists::some_list_or_text")]
        => |c, v| {
            let keys: Vec<String> =
                v.unwrap_or_default().into_iter().filter(|k| !k.is_empty()).collect();
            c.api_keys = ApiKeys::parse(&keys, c.api_keys.protect_metrics)?;
        };
    /// Let a key answer an approval about a task it claimed itself (refused by default, 403
    /// `self_approval`)
    allow_self_approval: bool = "false", "FLIGHTDECK_ALLOW_SELF_APPROVAL", "BOOL",
        #[arg(num_args = 0..=1, default_missing_value = "true")]
        => |c, v| c.allow_self_approval = v;
    /// A client must send its request's headers within this, in ms (slowloris)
    header_read_timeout_ms: u64 = "30000", "FLIGHTDECK_HEADER_READ_TIMEOUT_MS", "MS"
        => |c, v| c.limits.header_read_timeout = millis("header_read_timeout_ms", v)?;
    /// Idle keep-alive connections are closed after this, in ms
    idle_timeout_ms: u64 = "60000", "FLIGHTDECK_IDLE_TIMEOUT_MS", "MS"
        => |c, v| c.limits.idle_timeout = millis("idle_timeout_ms", v)?;
    /// A request body must arrive within this, in ms (else 408)
    body_read_timeout_ms: u64 = "30000", "FLIGHTDECK_BODY_READ_TIMEOUT_MS", "MS"
        => |c, v| c.limits.body_read_timeout = millis("body_read_timeout_ms", v)?;
    /// A response the client stops reading is dropped with its connection after its bytes made no progress for this long, in ms
    write_timeout_ms: u64 = "30000", "FLIGHTDECK_WRITE_TIMEOUT_MS", "MS"
        => |c, v| c.limits.write_timeout = millis("write_timeout_ms", v)?;
    /// Largest request head (request line and headers), in bytes, at least 8192
    max_header_bytes: usize = "16384", "FLIGHTDECK_MAX_HEADER_BYTES", "BYTES"
        => |c, v| {
            if v < 8192 {
                return Err("max_header_bytes must be at least 8192".into());
            }
            c.limits.max_header_bytes = v;
        };
    /// Where people reach this server (`https://flightdeck.example`): the start of console links
    /// in webhook messages
    public_url: String = none, "FLIGHTDECK_PUBLIC_URL", "URL"
        => |c, v| if let Some(url) = v {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!("public_url must be an http:// or https:// URL (got {url})"));
            }
            c.public_url = Some(url.trim_end_matches('/').to_string());
        };
    /// Follow the leader at this URL (`http://leader:8080`): start from its snapshot when the
    /// data directory has no database, stream its write-ahead log, serve reads, the console and
    /// WebSocket subscriptions with its seqs; writes answer 503 `not_leader` with its URL. Needs
    /// `--replication-key`; see "Followers"
    follow: String = none, "FLIGHTDECK_FOLLOW", "URL"
        => |c, v| if let Some(url) = v {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!("follow must be an http:// or https:// URL (got {url})"));
            }
            c.store.follow = Some(url.trim_end_matches('/').to_string());
        };
    /// The secret of the replication routes (`/replication/snapshot`, `log` and `ack`): a
    /// leader serves followers that send it, a follower sends it; at least 16 printable
    /// characters. Without it a node serves no followers
    replication_key: String = none, "FLIGHTDECK_REPLICATION_KEY", "KEY",
        #[arg(hide_env_values = true)]
        => |c, v| if let Some(key) = v {
            if key.len() < 16 || !key.bytes().all(|b| b.is_ascii_graphic()) {
                return Err("replication_key must be at least 16 printable characters".into());
            }
            c.replication_key = Some(crate::replication::Key::new(key));
        };
    /// Synchronous replication: a write is acknowledged only once this many followers hold its
    /// log record durably (0: asynchronous). With fewer connected, writes wait
    /// `--sync-timeout-ms`, then answer 503 `not_replicated`. Needs `--replication-key`
    sync_replicas: usize = "0", "FLIGHTDECK_SYNC_REPLICAS", "N"
        => |c, v| c.store.sync_replicas = v;
    /// With `--sync-replicas`: how long, in ms, a write waits for its followers
    sync_timeout_ms: u64 = "5000", "FLIGHTDECK_SYNC_TIMEOUT_MS", "MS"
        => |c, v| c.store.sync_timeout = millis("sync_timeout_ms", v)?;
    /// Write-ahead log records a leader keeps in memory for its followers, in MiB: a follower
    /// further behind than this starts again from a snapshot
    replication_backlog_mib: u64 = "64", "FLIGHTDECK_REPLICATION_BACKLOG_MIB", "MIB"
        => |c, v| c.store.replication_backlog =
            usize::try_from(positive("replication_backlog_mib", v)?.saturating_mul(MIB as u64))
                .unwrap_or(usize::MAX);
}

/// A closed list of names (`agent_types`, `artifact_types`): each a well-formed name, once;
/// absent or empty leaves the vocabulary open.
fn closed_list<K: crate::domain::names::NameKind>(
    key: &str,
    v: Option<Vec<String>>,
) -> Result<Option<Vec<crate::domain::names::Name<K>>>, String> {
    let mut names = Vec::new();
    for text in v.unwrap_or_default() {
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        let name = crate::domain::names::Name::parse(text).map_err(|e| format!("{key}: {e}"))?;
        if names.contains(&name) {
            return Err(format!("{key}: `{name}` is listed twice"));
        }
        names.push(name);
    }
    Ok((!names.is_empty()).then_some(names))
}

/// A `--max-*-types` value: 1 to 65,535 (ids are two bytes, and one is kept unused).
fn fan_out_limit(v: usize) -> Result<usize, String> {
    if (1..=100_000).contains(&v) {
        Ok(v)
    } else {
        Err(format!(
            "max_fan_out must be between 1 and 100000 (got {v})"
        ))
    }
}

fn type_limit(key: &str, v: usize) -> Result<usize, String> {
    if (1..usize::from(u16::MAX)).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{key} must be between 1 and 65534 (got {v})"))
    }
}

/// The settings that are not rows, as the README's table shows them after the rows: the
/// conformance build's flag and the file's tables.
const OTHER_ROWS: &[&str] = &[
    "| `--ws-echo[=BOOL]` | `FLIGHTDECK_WS_ECHO` | `ws_echo` | off | only in a build with \
     `--features conformance` (CI's Autobahn run): `/ws` echoes messages instead of serving \
     events |",
    "| | | `[[workflows]]` | `sdlc` | workflow definitions, see \"Workflows\" |",
    "| | | `[[alert_rules]]` | the defaults | alert rules, see \"Operating flightdeck\" |",
    "| | | `[[webhooks]]` | none | event webhooks, see \"Webhooks\" |",
    "| | | `[[prices]]` | none | model prices, see \"What the agents spend\" |",
];

/// The README's settings table, from the rows: flag, variable, file key, default, description.
pub fn markdown_table() -> String {
    use clap::CommandFactory;
    let command = super::Cli::command();
    let in_file = serde_json::to_value(ServeArgs::default()).unwrap_or_default();
    let mut out =
        String::from("| flag | variable | file key | default | what |\n|---|---|---|---|---|\n");
    for doc in DOCS {
        let arg = command
            .get_arguments()
            .find(|a| a.get_id() == doc.key)
            .expect("every row is a flag");
        let long = arg.get_long().unwrap_or(doc.key);
        let takes_bool = arg.get_num_args().is_some_and(|n| n.min_values() == 0);
        let repeats = arg.get_value_delimiter().is_some();
        let flag = match (takes_bool, repeats) {
            (true, _) => format!("`--{long}[=BOOL]`"),
            (false, true) => format!("`--{long}` (repeatable)"),
            (false, false) => format!("`--{long}`"),
        };
        let env = arg
            .get_env()
            .and_then(|e| e.to_str())
            .expect("every row has a variable");
        let env = if repeats {
            format!("`{env}` (comma-separated)")
        } else {
            format!("`{env}`")
        };
        let key = match (in_file.get(doc.key).is_some(), repeats) {
            (false, _) => String::new(),
            (true, true) => format!("`{}` (a list or a comma-separated string)", doc.key),
            (true, false) => format!("`{}`", doc.key),
        };
        let default = match doc.default {
            Some("false") => "off".to_string(),
            Some(d) => format!("`{d}`"),
            None => "none".to_string(),
        };
        let description: Vec<&str> = doc.description.iter().map(|l| l.trim()).collect();
        out.push_str(&format!(
            "| {flag} | {env} | {key} | {default} | {} |\n",
            description.join(" ")
        ));
    }
    for row in OTHER_ROWS {
        out.push_str(row);
        out.push('\n');
    }
    out
}
