//! Every setting in one place: command-line flags, `FLIGHTDECK_*` environment variables, an
//! optional TOML file, and defaults — in that order of precedence. Nothing else reads flags or env.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};

use crate::http::auth::ApiKeys;
use crate::monitor::{MonitorConfig, RuleConfig};
use crate::store::{Durability, StoreConfig};
use crate::ws::WsConfig;

pub mod lists;

/// flightdeck: the state server of a team of AI agents.
#[derive(Parser, Debug)]
#[command(
    name = "flightdeck",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Subcommand, Debug)]
#[allow(clippy::large_enum_variant)] // parsed once at start-up
pub enum Command {
    /// Run the server (the default when no command is given).
    Serve(ServeArgs),
    /// Verify every index entry against its record and every record against its index entries.
    /// Exits non-zero on any mismatch. The server must not be running on the directory.
    Check(CheckArgs),
    /// Write a consistent, compact copy of the database to a file (server stopped; while it
    /// runs, use POST /api/v1/admin/backup).
    Backup(BackupArgs),
    /// Put a backup in place as a data directory's database, after checking it.
    Restore(RestoreArgs),
    /// Rewrite the database compactly in place (server stopped): redb files do not shrink alone.
    Compact(CheckArgs),
    /// The load benchmark: workers running the sdlc workflow, status-query clients and WebSocket
    /// subscribers against a fresh server (or `--url`), reported against the service levels.
    /// Hands over to the `flightdeck-bench` executable (`flightdeck bench --help` for its options).
    Bench(BenchHandOff),
}

/// Everything after `bench`, passed to `flightdeck-bench` as it is.
#[derive(Args, Debug)]
#[command(disable_help_flag = true)]
pub struct BenchHandOff {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

#[derive(Args, Debug)]
pub struct BackupArgs {
    /// Directory holding the database [default: ./data]
    #[arg(
        long,
        env = "FLIGHTDECK_DATA_DIR",
        value_name = "DIR",
        default_value = "./data"
    )]
    pub data_dir: PathBuf,
    /// The backup file to write (must not exist)
    #[arg(long, value_name = "FILE")]
    pub to: PathBuf,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// The backup file
    #[arg(long, value_name = "FILE")]
    pub from: PathBuf,
    /// Directory to restore into [default: ./data]
    #[arg(
        long,
        env = "FLIGHTDECK_DATA_DIR",
        value_name = "DIR",
        default_value = "./data"
    )]
    pub data_dir: PathBuf,
    /// Replace a database already in the directory
    #[arg(long)]
    pub force: bool,
}

/// Every setting of the server, declared once: a flag (with its `FLIGHTDECK_*` variable) and the
/// key of the same name in the TOML file. `Config::resolve` lays the flags over the file over the
/// defaults. Unknown keys in the file are refused.
#[derive(Args, Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8080]
    #[arg(long, env = "FLIGHTDECK_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Directory holding the database; created if missing [default: ./data]
    #[arg(long, env = "FLIGHTDECK_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// TOML file with any of these settings (flags and environment variables win over it)
    #[arg(long, env = "FLIGHTDECK_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// immediate: every acknowledged write is fsynced; none: faster, a crash loses recent writes
    /// [default: immediate]
    #[arg(long, env = "FLIGHTDECK_DURABILITY", value_enum)]
    pub durability: Option<Durability>,
    /// Log format on stderr [default: text]
    #[arg(long, env = "FLIGHTDECK_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Largest accepted request body, in bytes [default: 1048576]
    #[arg(long, env = "FLIGHTDECK_MAX_BODY_BYTES", value_name = "BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Most writes waiting for the writer; beyond it writes answer 503 [default: 16384]
    #[arg(long, env = "FLIGHTDECK_WRITER_QUEUE", value_name = "N")]
    pub writer_queue: Option<usize>,
    /// Most open HTTP connections; further ones wait to be accepted [default: 10000]
    #[arg(long, env = "FLIGHTDECK_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,
    /// Connections the kernel queues for accepting (the listen backlog), capped by
    /// net.core.somaxconn; clients beyond it wait for a SYN retransmit [default: 4096]
    #[arg(long, env = "FLIGHTDECK_LISTEN_BACKLOG", value_name = "N")]
    pub listen_backlog: Option<u32>,
    /// Bytes the cache of encoded responses (artifacts, project statuses) may hold, in MiB; a
    /// response larger than an eighth of it is not cached [default: 256]
    #[arg(long, env = "FLIGHTDECK_CACHE_MIB", value_name = "MIB")]
    pub cache_mib: Option<usize>,
    /// Status changes kept per agent type; older ones are trimmed in the background
    /// [default: 10000]
    #[arg(long, env = "FLIGHTDECK_AGENT_HISTORY_RETENTION", value_name = "N")]
    pub agent_history_retention: Option<u64>,
    /// Origins whose pages may call the API from a browser (CORS), comma-separated, or `*`;
    /// when set, WebSocket upgrades from other origins are refused [default: none]
    #[arg(
        long = "cors-origins",
        env = "FLIGHTDECK_CORS_ORIGINS",
        value_name = "ORIGINS",
        value_delimiter = ','
    )]
    #[serde(deserialize_with = "lists::list_or_text")]
    pub cors_origins: Vec<String>,
    /// Events kept in the log; older ones are trimmed in the background [default: 1000000]
    #[arg(long, env = "FLIGHTDECK_EVENT_RETENTION", value_name = "N")]
    pub event_retention: Option<u64>,
    /// Bound of each WebSocket's queue of unsent frames; a client that fills it is closed with
    /// 4008 and the seq to resume from [default: 4194304]
    #[arg(long, env = "FLIGHTDECK_WS_QUEUE_BYTES", value_name = "BYTES")]
    pub ws_queue_bytes: Option<usize>,
    /// Bound of all WebSocket connections' unsent frames together, in MiB; over it, the
    /// connections holding the most are closed with 4008 and the seq to resume from, largest
    /// first [default: 512]
    #[arg(long, env = "FLIGHTDECK_WS_TOTAL_QUEUE_MIB", value_name = "MIB")]
    pub ws_total_queue_mib: Option<usize>,
    /// Kernel send buffer (SO_SNDBUF) of each accepted connection, in KiB, so a client that
    /// stops reading holds at most about this much kernel memory (the kernel caps it at
    /// net.core.wmem_max); 0: the kernel's autotuning [default: 256]
    #[arg(long, env = "FLIGHTDECK_SOCKET_SEND_BUFFER_KIB", value_name = "KIB")]
    pub socket_send_buffer_kib: Option<usize>,
    /// Seconds between server pings; two missed pongs close the connection [default: 20]
    #[arg(long, env = "FLIGHTDECK_WS_PING_INTERVAL_SECS", value_name = "SECS")]
    pub ws_ping_interval_secs: Option<u64>,
    /// Most open WebSocket connections; further upgrades answer 503 [default: 10000]
    #[arg(long, env = "FLIGHTDECK_MAX_WS_CONNECTIONS", value_name = "N")]
    pub max_ws_connections: Option<usize>,
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
    /// POST alert transitions here, in the Alertmanager v2 format
    #[arg(long, env = "FLIGHTDECK_ALERT_WEBHOOK_URL", value_name = "URL")]
    pub alert_webhook_url: Option<String>,
    /// While an alert fires it is sent again this often, valid for four times as long, so the
    /// receiver never resolves it on its own [default: 60]
    #[arg(
        long,
        env = "FLIGHTDECK_ALERT_RESEND_INTERVAL_SECS",
        value_name = "SECS"
    )]
    pub alert_resend_interval_secs: Option<u64>,
    /// Seconds between alert rule evaluations [default: 5]
    #[arg(long, env = "FLIGHTDECK_ALERT_EVAL_INTERVAL_SECS", value_name = "SECS")]
    pub alert_eval_interval_secs: Option<u64>,
    /// Status queries slower than this are logged as warnings, in ms (0: every one) [default: 200]
    #[arg(long, env = "FLIGHTDECK_SLOW_STATUS_QUERY_MS", value_name = "MS")]
    pub slow_status_query_ms: Option<u64>,
    /// Task operations slower than this are logged as warnings, in ms [default: 500]
    #[arg(long, env = "FLIGHTDECK_SLOW_TASK_OPERATION_MS", value_name = "MS")]
    pub slow_task_operation_ms: Option<u64>,
    /// Other requests slower than this are logged as warnings, in ms [default: 1000]
    #[arg(long, env = "FLIGHTDECK_SLOW_REQUEST_MS", value_name = "MS")]
    pub slow_request_ms: Option<u64>,
    /// Readiness fails and the disk alert fires below this much free disk, in MiB [default: 256]
    #[arg(long, env = "FLIGHTDECK_MIN_FREE_DISK_MB", value_name = "MIB")]
    pub min_free_disk_mb: Option<u64>,
    /// A working task older than this counts as a failed attempt, in ms [default: 300000]
    #[arg(long, env = "FLIGHTDECK_TASK_TIMEOUT_MS", value_name = "MS")]
    pub task_timeout_ms: Option<u64>,
    /// Failed attempts after which a task stays failed and is escalated [default: 3]
    #[arg(long, env = "FLIGHTDECK_MAX_ATTEMPTS", value_name = "N")]
    pub max_attempts: Option<u32>,
    /// Delay before the first retry of a failed task, doubled for each further one, in ms
    /// [default: 1000]
    #[arg(long, env = "FLIGHTDECK_RETRY_BACKOFF_MS", value_name = "MS")]
    pub retry_backoff_ms: Option<u64>,
    /// A claim's lease when the worker does not ask for one, in ms [default: 60000]
    #[arg(long, env = "FLIGHTDECK_DEFAULT_LEASE_MS", value_name = "MS")]
    pub default_lease_ms: Option<u64>,
    /// How long an `Idempotency-Key` is remembered, in hours [default: 24]
    #[arg(long, env = "FLIGHTDECK_IDEMPOTENCY_TTL_HOURS", value_name = "HOURS")]
    pub idempotency_ttl_hours: Option<u64>,
    /// The longest a claim may wait for work (its `wait_ms`), in ms [default: 30000]
    #[arg(long, env = "FLIGHTDECK_MAX_CLAIM_WAIT_MS", value_name = "MS")]
    pub max_claim_wait_ms: Option<u64>,
    /// How often due timers (leases, retries, timeouts, HITL expiry) are checked, in ms
    /// [default: 100]
    #[arg(long, env = "FLIGHTDECK_TIMER_TICK_MS", value_name = "MS")]
    pub timer_tick_ms: Option<u64>,
    /// API key, `ro:SECRET` (read-only) or `rw:SECRET`/`SECRET` (read-write); repeat for more.
    /// Without any, the API is open [env: comma-separated]
    #[arg(
        long = "api-key",
        env = "FLIGHTDECK_API_KEYS",
        value_name = "KEY",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_keys: Vec<String>,
    /// Require an API key for /metrics too (probes always stay open); `--protect-metrics=false`
    /// overrides the file [default: false]
    #[arg(
        long,
        env = "FLIGHTDECK_PROTECT_METRICS",
        num_args = 0..=1,
        default_missing_value = "true",
        value_name = "BOOL"
    )]
    pub protect_metrics: Option<bool>,
    /// Longest a client may take to send a request's headers (slowloris), in ms [default: 30000]
    #[arg(long, env = "FLIGHTDECK_HEADER_READ_TIMEOUT_MS", value_name = "MS")]
    pub header_read_timeout_ms: Option<u64>,
    /// Keep-alive connections idle this long are closed, in ms [default: 60000]
    #[arg(long, env = "FLIGHTDECK_IDLE_TIMEOUT_MS", value_name = "MS")]
    pub idle_timeout_ms: Option<u64>,
    /// Longest a request body may take to arrive, in ms [default: 30000]
    #[arg(long, env = "FLIGHTDECK_BODY_READ_TIMEOUT_MS", value_name = "MS")]
    pub body_read_timeout_ms: Option<u64>,
    /// Largest request head (request line and headers), in bytes, at least 8192 [default: 16384]
    #[arg(long, env = "FLIGHTDECK_MAX_HEADER_BYTES", value_name = "BYTES")]
    pub max_header_bytes: Option<usize>,
    /// redb's page cache: the resident memory it may hold, in MiB [default: 1024]
    #[arg(long, env = "FLIGHTDECK_PAGE_CACHE_MIB", value_name = "MIB")]
    pub page_cache_mib: Option<usize>,
    /// File only: rules that replace the default of the same name, or add to them.
    #[arg(skip)]
    pub alert_rules: Vec<RuleConfig>,
    /// File only: workflow definitions; one named `sdlc` replaces the built-in one.
    #[arg(skip)]
    pub workflows: Vec<crate::domain::workflow::WorkflowDef>,
    /// File only: `[[webhooks]]`, each a durable consumer of the event log.
    #[arg(skip)]
    pub webhooks: Vec<crate::webhooks::WebhookConfig>,
    /// The address people reach this server at (`https://flightdeck.example`), for links into the
    /// console in webhook messages
    #[arg(long, env = "FLIGHTDECK_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Directory holding the database [default: ./data]
    #[arg(
        long,
        env = "FLIGHTDECK_DATA_DIR",
        value_name = "DIR",
        default_value = "./data"
    )]
    pub data_dir: PathBuf,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The settings of `over` laid on those of `under`: each one `over` sets (a value, or a list that
/// is not empty) replaces `under`'s.
fn overlay(under: ServeArgs, over: &ServeArgs) -> Result<ServeArgs, String> {
    let mut merged = serde_json::to_value(under).map_err(|e| e.to_string())?;
    let over = serde_json::to_value(over).map_err(|e| e.to_string())?;
    if let (Some(merged), Some(over)) = (merged.as_object_mut(), over.as_object()) {
        for (key, value) in over {
            let unset = value.is_null() || value.as_array().is_some_and(Vec::is_empty);
            if !unset {
                merged.insert(key.clone(), value.clone());
            }
        }
    }
    serde_json::from_value(merged).map_err(|e| e.to_string())
}

/// What protects the server from slow or oversized clients.
#[derive(Clone, Debug)]
pub struct HttpLimits {
    pub header_read_timeout: std::time::Duration,
    pub idle_timeout: std::time::Duration,
    pub body_read_timeout: std::time::Duration,
    pub max_header_bytes: usize,
}

impl Default for HttpLimits {
    fn default() -> HttpLimits {
        HttpLimits {
            header_read_timeout: std::time::Duration::from_secs(30),
            idle_timeout: std::time::Duration::from_secs(60),
            body_read_timeout: std::time::Duration::from_secs(30),
            max_header_bytes: 16 * 1024,
        }
    }
}

/// The resolved settings the server runs with.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    /// The listen backlog asked of the kernel (which caps it at net.core.somaxconn).
    pub listen_backlog: u32,
    pub log_format: LogFormat,
    pub max_body_bytes: usize,
    pub max_connections: usize,
    /// Events kept in the log.
    pub event_retention: u64,
    /// How often due timers are fired.
    pub timer_tick: std::time::Duration,
    pub api_keys: ApiKeys,
    /// Browser origins allowed to call the API.
    pub cors: crate::http::cors::Cors,
    /// Status changes kept per agent type.
    pub agent_history_retention: u64,
    pub limits: HttpLimits,
    pub ws: WsConfig,
    pub monitor: MonitorConfig,
    pub store: StoreConfig,
    /// The config file, re-read for alert rules on SIGHUP.
    pub source: Option<PathBuf>,
    pub webhooks: Vec<crate::webhooks::Webhook>,
    /// Links into the console start with this (no trailing slash).
    pub public_url: Option<String>,
}

impl Config {
    /// Defaults only, with data in `data_dir`: what tests start from.
    pub fn for_data_dir(data_dir: impl Into<PathBuf>) -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            listen_backlog: 4096,
            log_format: LogFormat::Text,
            max_body_bytes: 1024 * 1024,
            max_connections: 10_000,
            event_retention: 1_000_000,
            timer_tick: std::time::Duration::from_millis(100),
            api_keys: ApiKeys::default(),
            cors: crate::http::cors::Cors::default(),
            agent_history_retention: 10_000,
            limits: HttpLimits::default(),
            ws: WsConfig::default(),
            monitor: MonitorConfig::default(),
            store: StoreConfig::new(data_dir),
            source: None,
            webhooks: Vec::new(),
            public_url: None,
        }
    }

    /// Flags and environment over the config file over the defaults.
    pub fn resolve(args: &ServeArgs) -> Result<Config, String> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => ServeArgs::default(),
        };
        let s = overlay(file, args)?;
        let data_dir = s
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("./data"));
        let mut config = Config::for_data_dir(data_dir);
        if let Some(v) = s.listen {
            config.listen = v;
        }
        if let Some(v) = s.log_format {
            config.log_format = v;
        }
        if let Some(v) = s.durability {
            config.store.durability = v;
        }
        if let Some(v) = s.max_body_bytes {
            config.max_body_bytes = positive("max_body_bytes", v)?;
        }
        if let Some(v) = s.writer_queue {
            config.store.writer_queue = positive("writer_queue", v)?;
        }
        if let Some(v) = s.max_connections {
            config.max_connections = positive("max_connections", v)?;
        }
        if let Some(v) = s.listen_backlog {
            config.listen_backlog = positive("listen_backlog", v as usize)? as u32;
        }
        if let Some(v) = s.cache_mib {
            config.store.cache_bytes = positive("cache_mib", v)?.saturating_mul(1024 * 1024);
        }
        if let Some(v) = s.agent_history_retention {
            config.agent_history_retention =
                positive("agent_history_retention", v as usize)? as u64;
        }
        config.cors = crate::http::cors::Cors::parse(&s.cors_origins)?;
        if let Some(v) = s.alert_resend_interval_secs {
            config.monitor.resend_interval = std::time::Duration::from_secs(positive(
                "alert_resend_interval_secs",
                v as usize,
            )? as u64);
        }
        if let Some(v) = s.event_retention {
            config.event_retention = positive("event_retention", v as usize)? as u64;
        }
        if let Some(v) = s.ws_queue_bytes {
            config.ws.queue_bytes = positive("ws_queue_bytes", v)?;
        }
        if let Some(v) = s.ws_total_queue_mib {
            config.ws.total_queue_bytes =
                positive("ws_total_queue_mib", v)?.saturating_mul(1024 * 1024);
        }
        if let Some(v) = s.socket_send_buffer_kib {
            config.ws.socket_send_buffer = v.saturating_mul(1024);
        }
        if let Some(v) = s.ws_ping_interval_secs {
            config.ws.ping_interval = std::time::Duration::from_secs(positive(
                "ws_ping_interval_secs",
                v as usize,
            )? as u64);
        }
        if let Some(v) = s.max_ws_connections {
            config.ws.max_connections = positive("max_ws_connections", v)?;
        }
        #[cfg(feature = "conformance")]
        {
            config.ws.echo = s.ws_echo.unwrap_or(false);
        }
        let mut names = std::collections::HashSet::new();
        for entry in &s.webhooks {
            let hook = crate::webhooks::Webhook::parse(entry)?;
            if !names.insert(hook.name.clone()) {
                return Err(format!(
                    "webhooks: the name {} is used twice (name them with `name`)",
                    hook.name
                ));
            }
            config.webhooks.push(hook);
        }
        if let Some(url) = s.public_url.clone() {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!(
                    "public_url must be an http:// or https:// URL (got {url})"
                ));
            }
            config.public_url = Some(url.trim_end_matches('/').to_string());
        }
        if let Some(url) = s.alert_webhook_url.clone() {
            if !url.starts_with("http://") {
                return Err(format!(
                    "alert_webhook_url must be an http:// URL (got {url})"
                ));
            }
            config.monitor.webhook_url = Some(url);
        }
        if let Some(v) = s.alert_eval_interval_secs {
            config.monitor.eval_interval = std::time::Duration::from_secs(positive(
                "alert_eval_interval_secs",
                v as usize,
            )? as u64);
        }
        if let Some(mib) = s.min_free_disk_mb {
            config.monitor.min_free_disk_bytes = mib.saturating_mul(1024 * 1024);
            config.monitor.rules =
                crate::monitor::alerts::default_rules(config.monitor.min_free_disk_bytes);
        }
        config.monitor.rules = merge_rules(config.monitor.rules, s.alert_rules.clone())?;
        config.source = args.config.clone();
        let millis = |name: &str, v: u64| {
            positive(name, v as usize).map(|v| std::time::Duration::from_millis(v as u64))
        };
        let slow = std::time::Duration::from_millis;
        if let Some(v) = s.slow_status_query_ms {
            config.monitor.slow_status_query = slow(v);
        }
        if let Some(v) = s.slow_task_operation_ms {
            config.monitor.slow_task_operation = slow(v);
        }
        if let Some(v) = s.slow_request_ms {
            config.monitor.slow_other = slow(v);
        }
        if let Some(v) = s.header_read_timeout_ms {
            config.limits.header_read_timeout = millis("header_read_timeout_ms", v)?;
        }
        if let Some(v) = s.idle_timeout_ms {
            config.limits.idle_timeout = millis("idle_timeout_ms", v)?;
        }
        if let Some(v) = s.body_read_timeout_ms {
            config.limits.body_read_timeout = millis("body_read_timeout_ms", v)?;
        }
        if let Some(v) = s.max_header_bytes {
            if v < 8192 {
                return Err("max_header_bytes must be at least 8192".into());
            }
            config.limits.max_header_bytes = v;
        }
        let keys: Vec<String> = s
            .api_keys
            .iter()
            .filter(|k| !k.is_empty())
            .cloned()
            .collect();
        config.api_keys = ApiKeys::parse(&keys, s.protect_metrics.unwrap_or(false))?;
        for workflow in s.workflows {
            let workflow = workflow.parse().map_err(|e| format!("config file: {e}"))?;
            match config
                .store
                .workflows
                .iter_mut()
                .find(|w| w.name == workflow.name)
            {
                Some(existing) => *existing = workflow,
                None => config.store.workflows.push(workflow),
            }
        }
        let ms = |name: &str, v: u64| -> Result<i64, String> {
            positive(name, v as usize).map(|v| (v as i64).saturating_mul(1000))
        };
        if let Some(v) = s.task_timeout_ms {
            config.store.tasks.task_timeout = ms("task_timeout_ms", v)?;
        }
        if let Some(v) = s.max_attempts {
            config.store.tasks.max_attempts = positive("max_attempts", v as usize)? as u32;
        }
        if let Some(v) = s.retry_backoff_ms {
            config.store.tasks.retry_backoff = ms("retry_backoff_ms", v)?;
        }
        if let Some(v) = s.default_lease_ms {
            config.store.tasks.default_lease = ms("default_lease_ms", v)?;
        }
        if let Some(v) = s.idempotency_ttl_hours {
            config.store.idempotency_ttl = (positive("idempotency_ttl_hours", v as usize)? as i64)
                .saturating_mul(3_600_000_000);
        }
        if let Some(v) = s.max_claim_wait_ms {
            config.store.tasks.max_claim_wait = ms("max_claim_wait_ms", v)?;
        }
        if let Some(v) = s.timer_tick_ms {
            config.timer_tick =
                std::time::Duration::from_millis(positive("timer_tick_ms", v as usize)? as u64);
        }
        if let Some(v) = s.page_cache_mib {
            config.store.page_cache_bytes =
                positive("page_cache_mib", v)?.saturating_mul(1024 * 1024);
        }
        Ok(config)
    }
}

impl Config {
    /// The alert rules as the config file says now: the defaults, overridden by its `alert_rules`.
    pub fn reload_rules(&self) -> Result<Vec<RuleConfig>, String> {
        let defaults = crate::monitor::alerts::default_rules(self.monitor.min_free_disk_bytes);
        match &self.source {
            Some(path) => merge_rules(defaults, read_file(path)?.alert_rules),
            None => Ok(defaults),
        }
    }
}

/// Rules from the file replace the default of the same name, or are added.
fn merge_rules(
    mut rules: Vec<RuleConfig>,
    overrides: Vec<RuleConfig>,
) -> Result<Vec<RuleConfig>, String> {
    for rule in overrides {
        if rule.name.trim().is_empty() {
            return Err("alert_rules: every rule needs a name".into());
        }
        match rules.iter_mut().find(|r| r.name == rule.name) {
            Some(existing) => *existing = rule,
            None => rules.push(rule),
        }
    }
    Ok(rules)
}

fn positive(name: &str, value: usize) -> Result<usize, String> {
    if value == 0 {
        Err(format!("{name} must be at least 1"))
    } else {
        Ok(value)
    }
}

fn read_file(path: &Path) -> Result<ServeArgs, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| {
        let first = e.to_string().lines().next().unwrap_or("").to_string();
        format!("config file {}: {}: {first}", path.display(), e.message())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_which_wins_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9000\"\ndurability = \"none\"\nmax_body_bytes = 10\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(file),
            max_body_bytes: Some(20),
            ..Default::default()
        };
        let c = Config::resolve(&args).unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.store.durability, Durability::None);
        assert_eq!(c.max_body_bytes, 20);
        assert_eq!(c.store.data_dir, PathBuf::from("./data"));
    }

    #[test]
    fn socket_and_websocket_budget_settings_from_the_file_with_their_defaults() {
        let defaults = Config::resolve(&ServeArgs::default()).unwrap();
        assert_eq!(defaults.listen_backlog, 4096);
        assert_eq!(defaults.ws.total_queue_bytes, 512 << 20);
        assert_eq!(defaults.ws.socket_send_buffer, 256 << 10);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f.toml");
        std::fs::write(
            &file,
            "listen_backlog = 77\nws_total_queue_mib = 3\nsocket_send_buffer_kib = 0\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(file.clone()),
            ..Default::default()
        };
        let c = Config::resolve(&args).unwrap();
        assert_eq!(c.listen_backlog, 77);
        assert_eq!(c.ws.total_queue_bytes, 3 << 20);
        assert_eq!(c.ws.socket_send_buffer, 0, "0: the kernel's autotuning");
        std::fs::write(&file, "listen_backlog = 0\n").unwrap();
        let err = Config::resolve(&args).unwrap_err();
        assert!(err.contains("listen_backlog"), "{err}");
    }

    #[test]
    fn boolean_flags_override_the_file_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f.toml");
        std::fs::write(&file, "protect_metrics = true\n").unwrap();
        let path = file.to_str().unwrap();
        let resolve = |extra: &[&str]| {
            let mut argv = vec!["flightdeck", "--config", path];
            argv.extend_from_slice(extra);
            let cli = Cli::try_parse_from(argv).unwrap();
            Config::resolve(&cli.serve)
                .unwrap()
                .api_keys
                .protect_metrics
        };
        assert!(resolve(&[]), "the file's true");
        assert!(
            !resolve(&["--protect-metrics=false"]),
            "the flag's false wins"
        );
        assert!(resolve(&["--protect-metrics"]), "a bare flag is true");
        std::fs::write(&file, "protect_metrics = false\n").unwrap();
        assert!(resolve(&["--protect-metrics=true"]));
        assert!(!resolve(&[]));
    }

    #[test]
    fn lists_from_flags_replace_the_files_and_the_file_takes_both_spellings() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f.toml");
        std::fs::write(
            &file,
            "cors_origins = \"http://a.example, http://b.example\"\n\
             api_keys = [\"ro:file-key-0123456789\"]\n",
        )
        .unwrap();
        let path = file.to_str().unwrap();
        let resolve = |extra: &[&str]| {
            let mut argv = vec!["flightdeck", "--config", path];
            argv.extend_from_slice(extra);
            Config::resolve(&Cli::try_parse_from(argv).unwrap().serve).unwrap()
        };
        let c = resolve(&[]);
        assert!(c.cors.allows("http://b.example") && !c.cors.allows("http://c.example"));
        // The file's read-only key: it reads, it may not write.
        let write = |c: &Config, key: &str| {
            c.api_keys
                .authorize(
                    crate::http::Route::ProjectsCreate,
                    crate::http::auth::Credentials {
                        header: Some(&format!("Bearer {key}")),
                        query: None,
                    },
                )
                .map(|_| ())
                .map_err(|e| e.status.as_u16())
        };
        assert_eq!(write(&c, "file-key-0123456789"), Err(403));
        let c = resolve(&[
            "--cors-origins",
            "http://c.example",
            "--api-key",
            "flag-key-0123456789",
        ]);
        assert!(c.cors.allows("http://c.example") && !c.cors.allows("http://a.example"));
        assert_eq!(write(&c, "file-key-0123456789"), Err(401));
        assert_eq!(write(&c, "flag-key-0123456789"), Ok(()));
        std::fs::write(&file, "cors_origins = [\"http://d.example\"]\n").unwrap();
        assert!(resolve(&[]).cors.allows("http://d.example"));
    }

    #[test]
    fn unknown_keys_and_zero_limits_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f.toml");
        std::fs::write(&file, "listn = \"x\"\n").unwrap();
        let err = Config::resolve(&ServeArgs {
            config: Some(file),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.contains("listn"), "{err}");
        let err = Config::resolve(&ServeArgs {
            writer_queue: Some(0),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.contains("writer_queue"), "{err}");
    }
}
