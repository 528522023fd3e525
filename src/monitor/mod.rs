//! Monitoring: the Prometheus recorder and every metric's description, windowed latency per route
//! and per service-level class, health checks, and alert rules evaluated every few seconds.

pub mod alerts;
pub mod health;
pub mod history;
pub mod usage;
mod webhook;
pub mod window;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use metrics::{Unit, describe_counter, describe_gauge};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use parking_lot::Mutex;

use crate::domain::{TaskStatus, Vocabulary};
use crate::http::{Class, Route, timing};
use crate::store::{Store, metric_names as store_names};
use crate::ws;

pub use alerts::{Alerts, RuleConfig, Severity, Signal, State, Transition};
pub use window::Summary;

/// The service levels of `docs/service-levels.md`, p99 in seconds: flightdeck's targets and the
/// original requirement's. The monitoring API judges live traffic against them, `flightdeck bench`
/// its runs.
pub mod service_levels {
    pub const STATUS_QUERY: f64 = 0.0005;
    pub const TASK_OPERATION: f64 = 0.005;
    /// At x100 (1,000 projects, 100 workers, a million artifacts), half its capacity.
    pub const TASK_OPERATION_X100: f64 = 0.010;
    /// At 100 connections.
    pub const WS_DELIVERY: f64 = 0.005;
    /// At 10,000 connections (x100 at half its capacity).
    pub const WS_DELIVERY_10K: f64 = 0.060;
    pub const CONTEXT_GET: f64 = 0.001;
    pub const CONTEXT_LIST: f64 = 0.005;

    /// The requirement flightdeck was born from (10 projects x 50 tasks, 100 WebSockets).
    pub mod original {
        pub const STATUS_QUERY: f64 = 0.2;
        pub const TASK_OPERATION: f64 = 0.5;
        pub const WS_DELIVERY: f64 = 0.1;
        pub const CONTEXT_RETRIEVAL: f64 = 0.2;
    }
}

/// Histogram buckets for every `_seconds` histogram: 50 µs to 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

pub const BUILD_INFO: &str = "flightdeck_build_info";
pub const TASKS: &str = "flightdeck_tasks";
pub const PROJECTS: &str = "flightdeck_projects";
pub const HITL_PENDING: &str = "flightdeck_hitl_requests_pending";
pub const EVENTS_RETAINED: &str = "flightdeck_events_retained";
pub const LATEST_SEQ: &str = "flightdeck_events_latest_seq";
pub const ALERTS_FIRING: &str = "flightdeck_alerts_firing";
pub const DISK_FREE_BYTES: &str = "flightdeck_disk_free_bytes";
pub const ALERT_TRANSITIONS: &str = "flightdeck_alert_transitions_total";

/// Monitoring settings.
#[derive(Clone, Debug)]
pub struct MonitorConfig {
    pub rules: Vec<RuleConfig>,
    /// Where alert transitions are POSTed, in the Alertmanager v2 format.
    pub webhook_url: Option<String>,
    /// How often a firing alert is sent again (with `endsAt` four intervals ahead).
    pub resend_interval: Duration,
    pub eval_interval: Duration,
    /// Readiness fails, and the disk alert fires, below this many free bytes.
    pub min_free_disk_bytes: u64,
    /// Requests slower than these are logged as warnings.
    pub slow_status_query: Duration,
    pub slow_task_operation: Duration,
    pub slow_other: Duration,
}

impl Default for MonitorConfig {
    fn default() -> MonitorConfig {
        let floor = 256 * 1024 * 1024;
        MonitorConfig {
            rules: alerts::default_rules(floor),
            webhook_url: None,
            resend_interval: Duration::from_secs(60),
            eval_interval: Duration::from_secs(5),
            min_free_disk_bytes: floor,
            slow_status_query: Duration::from_millis(200),
            slow_task_operation: Duration::from_millis(500),
            slow_other: Duration::from_secs(1),
        }
    }
}

/// The process's one Prometheus recorder (metrics are global to the process).
static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

fn prometheus() -> Option<PrometheusHandle> {
    PROMETHEUS
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets(LATENCY_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(store_names::WRITE_BATCH_SIZE.into()),
                        BATCH_BUCKETS,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(store_names::QUEUE_WAIT_SECONDS.into()),
                        store_names::QUEUE_BUCKETS,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(store_names::TASK_RUN_SECONDS.into()),
                        store_names::QUEUE_BUCKETS,
                    )
                });
            match builder.map(|b| b.install_recorder()) {
                Ok(Ok(handle)) => Some(handle),
                Ok(Err(e)) | Err(e) => {
                    tracing::warn!(error = %e, "no Prometheus recorder: metrics are not exported");
                    None
                }
            }
        })
        .clone()
}

/// The measuring side of the server.
pub struct Monitor {
    pub config: MonitorConfig,
    started: Instant,
    /// The wall clock at `started`, in microseconds: uptime seconds (the alert rules' clock) to
    /// timestamps.
    started_wall: crate::domain::Micros,
    prometheus: Option<PrometheusHandle>,
    /// One series per route, by `Route::index()`; class and overall figures merge them when asked.
    routes: Box<[window::Window]>,
    /// Requests that matched no route.
    unmatched: window::Window,
    ws_delivery: window::Window,
    slow_closes: window::Window,
    alerts: Mutex<Alerts>,
    process: metrics_process::Collector,
    /// HTTP requests being handled; exported as a gauge when metrics are read.
    in_flight: std::sync::atomic::AtomicI64,
    /// The last hour of each class, for charts.
    history: Mutex<history::History>,
    /// The agents' reported usage, as counters.
    pub usage: usage::Meter,
    /// A follower's lag in seconds, as `f64` bits (0 on a leader).
    replication_lag: std::sync::atomic::AtomicU64,
}

impl Monitor {
    pub fn new(config: MonitorConfig) -> Arc<Monitor> {
        let prometheus = prometheus();
        let process = metrics_process::Collector::new("flightdeck_");
        describe_all(&process);
        register_series(&config.rules);
        let alerts = Mutex::new(Alerts::new(config.rules.clone()));
        Arc::new(Monitor {
            config,
            started: Instant::now(),
            started_wall: crate::domain::now_micros(),
            prometheus,
            routes: Route::ALL
                .iter()
                .map(|_| window::Window::default())
                .collect(),
            unmatched: window::Window::default(),
            ws_delivery: window::Window::default(),
            slow_closes: window::Window::default(),
            alerts,
            process,
            in_flight: std::sync::atomic::AtomicI64::new(0),
            history: Mutex::new(history::History::default()),
            usage: usage::Meter::default(),
            replication_lag: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Seconds since start-up: the clock of the windows.
    pub fn now_secs(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// The wall-clock time of `seconds` of uptime, in microseconds.
    pub fn wall_clock(&self, seconds: f64) -> crate::domain::Micros {
        self.started_wall + (seconds * 1e6) as crate::domain::Micros
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn request_started(&self) {
        self.in_flight
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// HTTP requests being handled.
    pub fn in_flight(&self) -> i64 {
        self.in_flight.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn request_finished(&self) {
        self.in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// One HTTP request, into its route's window.
    /// `started` is when the request began: its slot is computed from it, without reading the
    /// clock again.
    pub fn observe_request(
        &self,
        route: Option<Route>,
        status: u16,
        started: Instant,
        elapsed: Duration,
    ) {
        let window = route.map_or(&self.unmatched, |r| &self.routes[r.index()]);
        let at = started.saturating_duration_since(self.started).as_secs();
        window.record(at, elapsed.as_micros() as u64, status >= 500);
    }

    pub fn observe_delivery(&self, micros: u64) {
        self.ws_delivery.record(self.now_secs(), micros, false);
    }

    pub fn observe_slow_consumer_close(&self) {
        self.slow_closes.record(self.now_secs(), 0, false);
    }

    /// The slow-request threshold of a class.
    pub fn slow_threshold_of(&self, class: Class) -> Duration {
        match class {
            Class::StatusQuery => self.config.slow_status_query,
            Class::TaskOperation => self.config.slow_task_operation,
            _ => self.config.slow_other,
        }
    }

    pub fn route_summary(&self, route: Route, seconds: u64) -> Summary {
        self.routes[route.index()].summary(self.now_secs(), seconds)
    }

    pub fn class_summary(&self, class: Class, seconds: u64) -> Summary {
        let windows: Vec<&window::Window> = Route::ALL
            .iter()
            .filter(|r| r.class() == class)
            .map(|r| &self.routes[r.index()])
            .collect();
        window::summarize(&windows, self.now_secs(), seconds)
    }

    pub fn ws_delivery_summary(&self, seconds: u64) -> Summary {
        self.ws_delivery.summary(self.now_secs(), seconds)
    }

    pub fn http_summary(&self, seconds: u64) -> Summary {
        let windows: Vec<&window::Window> = self.routes.iter().chain([&self.unmatched]).collect();
        window::summarize(&windows, self.now_secs(), seconds)
    }

    pub fn slow_consumer_closes(&self, seconds: u64) -> u64 {
        self.slow_closes.summary(self.now_secs(), seconds).count
    }

    /// Records the history point of the step just ended, if it has none yet (the monitor loop
    /// calls this every evaluation).
    pub fn record_history(&self) {
        let now = self.now_secs();
        let mut history = self.history.lock();
        if !history.due(now) {
            return;
        }
        // The step that just ended: its slots are complete.
        let end = (now / history::STEP_SECONDS) * history::STEP_SECONDS;
        let last = |class| {
            let windows: Vec<&window::Window> = Route::ALL
                .iter()
                .filter(|r| r.class() == class)
                .map(|r| &self.routes[r.index()])
                .collect();
            window::summarize(&windows, end.saturating_sub(1), history::STEP_SECONDS)
        };
        let summaries = [
            last(Class::StatusQuery),
            last(Class::TaskOperation),
            last(Class::ContextRetrieval),
            self.ws_delivery
                .summary(end.saturating_sub(1), history::STEP_SECONDS),
        ];
        history.record(now, self.wall_clock(end as f64), summaries);
    }

    /// The history points, oldest first.
    pub fn history(&self) -> Vec<history::Point> {
        self.history.lock().points().cloned().collect()
    }

    pub fn alerts(&self) -> parking_lot::MutexGuard<'_, Alerts> {
        self.alerts.lock()
    }

    /// A follower's lag, in seconds (`replication::follower::report_lag`).
    pub fn set_replication_lag(&self, seconds: f64) {
        self.replication_lag
            .store(seconds.to_bits(), std::sync::atomic::Ordering::Relaxed);
    }

    /// The signal values the alert rules compare.
    pub fn signal(&self, signal: Signal, window: u64, store: &Store, disk_free: u64) -> f64 {
        match signal {
            Signal::StatusQueryP99 => self.class_summary(Class::StatusQuery, window).p99,
            Signal::TaskOperationP99 => self.class_summary(Class::TaskOperation, window).p99,
            Signal::ContextRetrievalP99 => self.class_summary(Class::ContextRetrieval, window).p99,
            Signal::WsDeliveryP99 => self.ws_delivery_summary(window).p99,
            Signal::ErrorRatio5xx => self.http_summary(window).error_ratio,
            Signal::SlowConsumerCloses => self.slow_consumer_closes(window) as f64,
            Signal::WriterQueueDepth => store.writer_queue_depth() as f64,
            Signal::DiskFreeBytes => disk_free as f64,
            Signal::QueueWaitP99 => store.queue_wait_p99(window).1,
            Signal::WebhookDeadLetters => store.dead_letter_count().unwrap_or(0) as f64,
            Signal::BudgetsBurning => store.budgets_burning().unwrap_or(0) as f64,
            Signal::WalSyncP99 => store.log_sync_p99(window).1,
            Signal::ReplicationLagSeconds => f64::from_bits(
                self.replication_lag
                    .load(std::sync::atomic::Ordering::Relaxed),
            ),
        }
    }

    /// Sets the gauges that are read rather than counted, then renders the Prometheus text.
    pub fn render_prometheus(&self, store: &Store) -> String {
        self.refresh_gauges(store);
        self.process.collect();
        let mut text = match &self.prometheus {
            Some(handle) => handle.render(),
            None => String::new(),
        };
        self.usage.render(&mut text);
        text
    }

    /// Drains histogram buffers; called every evaluation.
    pub fn upkeep(&self) {
        if let Some(handle) = &self.prometheus {
            handle.run_upkeep();
        }
    }

    pub fn refresh_gauges(&self, store: &Store) {
        metrics::gauge!(timing::REQUESTS_IN_FLIGHT)
            .set(self.in_flight.load(std::sync::atomic::Ordering::Relaxed) as f64);
        let totals = store.totals();
        for status in TaskStatus::ALL {
            metrics::gauge!(TASKS, "status" => status.as_str())
                .set(totals.task_counts[usize::from(status.code())] as f64);
        }
        metrics::gauge!(PROJECTS).set(totals.projects as f64);
        metrics::gauge!(HITL_PENDING).set(totals.hitl_pending as f64);
        metrics::gauge!(LATEST_SEQ).set(store.latest_seq() as f64);
        if let Ok(sizes) = store.table_sizes() {
            for (table, n) in sizes {
                metrics::gauge!(store_names::RECORDS, "table" => table).set(n as f64);
                if table == "events" {
                    metrics::gauge!(EVENTS_RETAINED).set(n as f64);
                }
            }
        }
        metrics::gauge!(store_names::FILE_SIZE_BYTES).set(store.file_size() as f64);
        // The replay ran before the recorder existed; what it did is kept by the store.
        let (replayed, seconds) = store.replayed();
        metrics::gauge!(store_names::WAL_REPLAYED_RECORDS).set(replayed as f64);
        metrics::gauge!(store_names::WAL_REPLAY_SECONDS).set(seconds);
        metrics::gauge!(store_names::WRITER_QUEUE_DEPTH).set(store.writer_queue_depth() as f64);
        if let Ok(held) = store.held_by_budgets() {
            for (agent, held) in held.queues {
                metrics::gauge!(store_names::QUEUE_HELD, "agent_type" => agent.to_string())
                    .set(if held.is_some() { 1.0 } else { 0.0 });
            }
        }
        let cache = store.cache_stats();
        metrics::gauge!(store_names::CACHE_ENTRIES).set(cache.entries as f64);
        metrics::gauge!(store_names::CACHE_BYTES).set(cache.bytes as f64);
        metrics::gauge!(store_names::PROGRESS_BYTES).set(store.progress_bytes() as f64);
    }

    /// The `flightdeck_process_*` figures as the recorder last rendered them, for the JSON views.
    pub fn process_figures(&self, store: &Store) -> Vec<(String, f64)> {
        self.render_prometheus(store)
            .lines()
            .filter(|l| l.starts_with("flightdeck_process_") && !l.contains('{'))
            .filter_map(|l| {
                let (name, value) = l.split_once(' ')?;
                Some((name.to_string(), value.trim().parse().ok()?))
            })
            .collect()
    }
}

fn describe_all(process: &metrics_process::Collector) {
    describe_gauge!(BUILD_INFO, "Build information; the value is always 1.");
    // Each layer describes its own metrics.
    timing::describe_metrics();
    ws::describe_metrics();
    store_names::describe();
    describe_gauge!(
        DISK_FREE_BYTES,
        Unit::Bytes,
        "Free bytes on the data directory's disk, as of the last alert evaluation."
    );
    describe_gauge!(TASKS, "Tasks by status.");
    describe_gauge!(PROJECTS, "Projects.");
    describe_gauge!(HITL_PENDING, "HITL requests waiting for an answer.");
    describe_gauge!(EVENTS_RETAINED, "Events in the log.");
    describe_gauge!(LATEST_SEQ, "The seq of the newest event.");
    describe_gauge!(ALERTS_FIRING, "1 while the alert rule fires, by rule.");
    describe_counter!(
        ALERT_TRANSITIONS,
        "Alert state changes, by rule and new state."
    );
    process.describe();
}

/// Creates the series whose labels are known in advance, so they exist (at zero) from start-up.
fn register_series(rules: &[RuleConfig]) {
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    for rule in rules {
        metrics::gauge!(ALERTS_FIRING, "rule" => rule.name.clone()).set(0.0);
        for state in ["pending", "firing", "resolved", "inactive"] {
            metrics::counter!(ALERT_TRANSITIONS, "rule" => rule.name.clone(), "state" => state)
                .increment(0);
        }
    }
}

impl timing::Observer for Monitor {
    fn request_started(&self) {
        Monitor::request_started(self);
    }

    fn request_finished(&self) {
        Monitor::request_finished(self);
    }

    fn observe_request(
        &self,
        route: Option<Route>,
        status: u16,
        started: Instant,
        elapsed: Duration,
    ) {
        Monitor::observe_request(self, route, status, started, elapsed);
    }

    fn slow_threshold(&self, class: Class) -> Duration {
        self.slow_threshold_of(class)
    }
}

impl ws::Observer for Monitor {
    fn observe_delivery(&self, micros: u64) {
        Monitor::observe_delivery(self, micros);
    }

    fn observe_slow_consumer_close(&self) {
        Monitor::observe_slow_consumer_close(self);
    }
}

/// How often at most the bytes in use are measured. It walks every B-tree (in a read transaction,
/// beside the writer, but a core's work for a while: 0.3 s at 200,000 artifacts), so it waits
/// until the writer has been idle for `USAGE_IDLE`, and the next one waits at least a minute and a
/// hundred times as long as the last one took.
const USAGE_EVERY: Duration = Duration::from_secs(60);
const USAGE_IDLE: Duration = Duration::from_secs(2);

/// Evaluates the alert rules every `eval_interval` and acts on each transition: log, count, the
/// `alert_firing` / `alert_resolved` event (which reaches every WebSocket), and the webhook.
pub async fn run(
    monitor: Arc<Monitor>,
    health: Arc<health::Health>,
    store: Store,
    generator_url: String,
    reload_rules: impl Fn() -> Result<Vec<RuleConfig>, String> + Send + 'static,
    tracker: tokio_util::task::TaskTracker,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut hangups = hangups();
    let webhook = monitor
        .config
        .webhook_url
        .clone()
        .map(|url| webhook::start(url, &tracker, shutdown.clone()));
    let mut tick = tokio::time::interval(monitor.config.eval_interval);
    let mut measured: Option<Instant> = None;
    let mut usage_every = USAGE_EVERY;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return,
            () = next_hangup(&mut hangups) => {
                match reload_rules() {
                    Ok(rules) => {
                        register_series(&rules);
                        tracing::info!(rules = rules.len(), "alert rules reloaded");
                        let now = monitor.uptime().as_secs_f64();
                        let gone = monitor.alerts().replace_rules(rules, now);
                        notify(&monitor, webhook.as_ref(), &gone, &generator_url);
                    }
                    Err(e) => tracing::error!(error = %e, "alert rules not reloaded; keeping the current ones"),
                }
            }
        }
        monitor.upkeep();
        monitor.record_history();
        if measured.is_none_or(|at| at.elapsed() >= usage_every)
            && store.writer_idle_for() >= USAGE_IDLE
        {
            let started = Instant::now();
            measured = Some(started);
            let measuring = store.clone();
            if let Ok(Ok(bytes)) =
                tokio::task::spawn_blocking(move || measuring.measure_usage()).await
            {
                metrics::gauge!(store_names::USED_BYTES).set(bytes as f64);
            }
            usage_every = USAGE_EVERY.max(started.elapsed() * 100);
        }
        let disk_free = health.disk_free();
        metrics::gauge!(DISK_FREE_BYTES).set(disk_free as f64);
        let now = monitor.uptime().as_secs_f64();
        let resend = monitor.config.resend_interval.as_secs_f64();
        let (transitions, due) = {
            let mut alerts = monitor.alerts();
            let transitions = alerts.evaluate(now, |signal, window| {
                monitor.signal(signal, window, &store, disk_free)
            });
            let due = alerts.notifications(now, resend, &transitions);
            (transitions, due)
        };
        for transition in transitions {
            act(&monitor, &store, &transition).await;
        }
        notify(&monitor, webhook.as_ref(), &due, &generator_url);
    }
}

/// Queues the notifications due to the alert receiver as one Alertmanager v2 body. The queue is
/// bounded and never waited on: when it is full, this round is dropped (a firing alert is sent
/// again at its next interval).
fn notify(
    monitor: &Monitor,
    webhook: Option<&tokio::sync::mpsc::Sender<String>>,
    due: &[alerts::Notification],
    generator_url: &str,
) {
    let Some(webhook) = webhook else { return };
    if due.is_empty() {
        return;
    }
    let wall = |t: f64| monitor.wall_clock(t);
    let alerts: Vec<String> = due
        .iter()
        .map(|n| {
            crate::json::object_string(|o| {
                o.object("labels", |l| {
                    l.str("alertname", &n.rule)
                        .str("severity", n.severity.as_str())
                        .str("service", "flightdeck");
                })
                .object("annotations", |a| {
                    a.str("summary", &n.summary)
                        .str("value", &n.value.to_string())
                        .str("threshold", &n.threshold.to_string());
                })
                .timestamp("startsAt", wall(n.starts_at))
                .timestamp("endsAt", wall(n.ends_at))
                .str("generatorURL", generator_url);
            })
        })
        .collect();
    if webhook.try_send(format!("[{}]", alerts.join(","))).is_err() {
        tracing::warn!(
            alerts = due.len(),
            "the alert webhook queue is full; these notifications are dropped"
        );
    }
}

#[cfg(unix)]
fn hangups() -> Option<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
}

#[cfg(not(unix))]
fn hangups() -> Option<()> {
    None
}

#[cfg(unix)]
async fn next_hangup(signal: &mut Option<tokio::signal::unix::Signal>) {
    match signal {
        Some(s) => {
            if s.recv().await.is_none() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

#[cfg(not(unix))]
async fn next_hangup(_: &mut Option<()>) {
    std::future::pending().await
}

async fn act(monitor: &Monitor, store: &Store, t: &Transition) {
    let (severity, summary, fired_at) = {
        let alerts = monitor.alerts();
        let rule = alerts.rules.iter().find(|r| r.config.name == t.rule);
        rule.map(|r| (r.config.severity, r.config.summary.clone(), r.fired_at))
            .unwrap_or_default()
    };
    let (from, to) = (t.from.as_str(), t.to.as_str());
    if t.to == State::Firing {
        tracing::warn!(rule = %t.rule, from, to, value = t.value, threshold = t.threshold, "alert firing");
    } else {
        tracing::info!(rule = %t.rule, from, to, value = t.value, threshold = t.threshold, "alert state changed");
    }
    metrics::counter!(ALERT_TRANSITIONS, "rule" => t.rule.clone(), "state" => to).increment(1);
    metrics::gauge!(ALERTS_FIRING, "rule" => t.rule.clone()).set(if t.to == State::Firing {
        1.0
    } else {
        0.0
    });
    if !matches!(t.to, State::Firing | State::Resolved) {
        return;
    }
    let firing = t.to == State::Firing;
    let started = monitor.wall_clock(fired_at);
    let data = crate::json::object_string(|o| {
        o.str("rule", &t.rule)
            .str("state", to)
            .str("severity", severity.as_str())
            .str("summary", &summary)
            .f64("value", t.value)
            .f64("threshold", t.threshold)
            .timestamp("starts_at", started);
    });
    if store.leader().is_some() {
        // A follower's event log is its leader's: its alerts are logged and exported only.
        return;
    }
    if let Err(e) = store
        .write(crate::store::command::RecordAlert { firing, data })
        .await
    {
        tracing::warn!(error = %e, "recording the alert event failed");
    }
}
