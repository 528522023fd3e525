//! WebSocket: the upgrade (fastwebsockets, from the hyper server), and per connection a reader
//! (client messages, pings, closes) and a writer (replay from the log, then live frames from the
//! hub, heartbeats, slow-consumer and shutdown closes). Only this module, `http` and `server` touch
//! hyper and fastwebsockets.

mod conn;
mod gate;
mod protocol;

pub use crate::events::frame;
#[doc(hidden)]
#[cfg(feature = "fuzzing")]
pub use conn::fuzz_client_input;

use crate::http::ErrorCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::domain::Id;
use crate::events::hub::Hub;
use crate::http::{ApiError, Request, Response};
use crate::store::Store;

/// Metric names of the WebSocket layer.
pub const CONNECTIONS: &str = "flightdeck_ws_connections";
pub const FRAMES_SENT: &str = "flightdeck_ws_frames_sent_total";
pub const BYTES_SENT: &str = "flightdeck_ws_bytes_sent_total";
pub const SLOW_CONSUMER_CLOSES: &str = "flightdeck_ws_slow_consumer_closes_total";
pub const REPLAYED_EVENTS: &str = "flightdeck_ws_replayed_events_total";
pub const REPLAY_READ_EVENTS: &str = "flightdeck_ws_replay_read_events_total";
pub const DELIVERY_SECONDS: &str = "flightdeck_ws_delivery_seconds";
pub const QUEUED_BYTES: &str = "flightdeck_ws_queued_bytes";

/// WebSocket settings.
#[derive(Clone, Debug)]
pub struct WsConfig {
    /// Bound of each connection's queue of frames not yet written.
    pub queue_bytes: usize,
    /// Bound of all connections' unsent frames together (the hub's budget).
    pub total_queue_bytes: usize,
    /// SO_SNDBUF of accepted connections (0: the kernel's autotuning), so a stalled client
    /// holds at most this much kernel memory.
    pub socket_send_buffer: usize,
    /// How often the server pings; a connection that misses two pongs is closed.
    pub ping_interval: Duration,
    /// Upgrades beyond this many open connections answer 503.
    pub max_connections: usize,
    /// Largest client message; larger ones close the connection with 1009.
    pub max_message_bytes: usize,
    /// Longest a single socket write may take before the connection is dropped.
    pub write_timeout: Duration,
    /// Protocol-conformance mode: echo every message instead of serving events.
    pub echo: bool,
}

impl Default for WsConfig {
    fn default() -> WsConfig {
        WsConfig {
            queue_bytes: 4 * 1024 * 1024,
            total_queue_bytes: 512 * 1024 * 1024,
            socket_send_buffer: 256 * 1024,
            ping_interval: Duration::from_secs(20),
            max_connections: 10_000,
            max_message_bytes: 64 * 1024,
            write_timeout: Duration::from_secs(30),
            echo: false,
        }
    }
}

/// Who learns of deliveries and slow-consumer closes: the monitoring side (`monitor::Monitor`
/// implements it), so this layer reports without depending on it.
pub trait Observer: Send + Sync + 'static {
    /// One frame written, `micros` after its event was committed.
    fn observe_delivery(&self, micros: u64);
    /// A connection closed with 4008 for falling behind.
    fn observe_slow_consumer_close(&self);
}

/// The descriptions of this layer's metrics, and their series at zero from start-up.
pub fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(CONNECTIONS, "Open WebSocket connections.");
    describe_gauge!(
        QUEUED_BYTES,
        Unit::Bytes,
        "Bytes queued to WebSocket connections and not yet written, all connections together (bounded by --ws-total-queue-mib)."
    );
    describe_counter!(FRAMES_SENT, "WebSocket frames written.");
    describe_counter!(BYTES_SENT, Unit::Bytes, "WebSocket bytes written.");
    describe_counter!(
        SLOW_CONSUMER_CLOSES,
        "WebSocket connections closed with 4008 for falling behind."
    );
    describe_counter!(
        REPLAYED_EVENTS,
        "Events replayed from the log to resuming WebSocket clients."
    );
    describe_counter!(
        REPLAY_READ_EVENTS,
        "Events read from the log by WebSocket replays (written or, already sent, dropped)."
    );
    describe_histogram!(
        DELIVERY_SECONDS,
        Unit::Seconds,
        "Time from an event's commit to its frame being written to a WebSocket."
    );
    metrics::counter!(FRAMES_SENT).increment(0);
    metrics::counter!(BYTES_SENT).increment(0);
    metrics::counter!(SLOW_CONSUMER_CLOSES).increment(0);
    metrics::counter!(REPLAYED_EVENTS).increment(0);
    metrics::counter!(REPLAY_READ_EVENTS).increment(0);
    let _ = metrics::histogram!(DELIVERY_SECONDS);
}

/// What every connection shares.
pub struct WsContext {
    pub config: WsConfig,
    pub hub: Arc<Hub>,
    pub store: Store,
    pub monitor: Arc<dyn Observer>,
    /// Cancelled when the server shuts down: every connection closes with 1001.
    pub shutdown: CancellationToken,
    /// Every connection task, so shutdown can wait for them.
    pub tracker: TaskTracker,
    open: AtomicUsize,
}

impl WsContext {
    pub fn new(
        config: WsConfig,
        hub: Arc<Hub>,
        store: Store,
        monitor: Arc<dyn Observer>,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) -> Arc<WsContext> {
        metrics::gauge!(CONNECTIONS).set(0.0);
        Arc::new(WsContext {
            config,
            hub,
            store,
            monitor,
            shutdown,
            tracker,
            open: AtomicUsize::new(0),
        })
    }

    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

/// Counts an open connection for as long as it lives.
struct OpenGuard(Arc<WsContext>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!(CONNECTIONS).decrement(1.0);
    }
}

/// A subscription: every event (no project) or one project's, replayed after `since` when given.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Subscription {
    pub project: Option<Id>,
    pub since: Option<u64>,
}

/// A subscription's `since` must not be beyond the latest seq: the client cannot have seen events
/// that were never written (and would otherwise be sent none of the next ones).
pub fn check_since(store: &Store, since: u64) -> Result<(), String> {
    let latest = store.latest_seq();
    if since > latest {
        return Err(format!(
            "{since} is beyond the latest seq {latest}: resume from a seq this server sent"
        ));
    }
    Ok(())
}

/// Upgrades a request whose subscription the API layer has validated.
pub fn upgrade(
    ctx: &Arc<WsContext>,
    subscription: Subscription,
    req: Request,
) -> Result<Response, ApiError> {
    let mut req = req.into_hyper();
    if !fastwebsockets::upgrade::is_upgrade_request(&req) {
        return Err(ApiError::new(
            ErrorCode::UpgradeRequired,
            "this route speaks WebSocket: send Connection: Upgrade and Upgrade: websocket",
        ));
    }
    if ctx.shutdown.is_cancelled() {
        return Err(ApiError::new(
            ErrorCode::ShuttingDown,
            "the server is shutting down",
        ));
    }
    if ctx.open.fetch_add(1, Ordering::Relaxed) >= ctx.config.max_connections {
        ctx.open.fetch_sub(1, Ordering::Relaxed);
        return Err(ApiError {
            retry_after: Some(5),
            ..ApiError::new(
                ErrorCode::TooManyConnections,
                format!(
                    "at most {} WebSocket connections are served",
                    ctx.config.max_connections
                ),
            )
        });
    }
    metrics::gauge!(CONNECTIONS).increment(1.0);
    let guard = OpenGuard(ctx.clone());
    let (response, upgraded) = fastwebsockets::upgrade::upgrade(&mut req)
        .map_err(|e| ApiError::new(ErrorCode::BadWebsocketHandshake, e.to_string()))?;
    let ctx = ctx.clone();
    // The upgrade completes only after the 101 response has been sent, so it is awaited here.
    ctx.tracker.clone().spawn(async move {
        let _guard = guard;
        match upgraded.await {
            Ok(ws) => conn::run(ctx, ws, subscription).await,
            Err(e) => tracing::debug!(error = %e, "WebSocket upgrade failed"),
        }
    });
    let (parts, _) = response.into_parts();
    Ok(hyper::Response::from_parts(
        parts,
        crate::http::Body::default(),
    ))
}
