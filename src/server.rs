//! The accept loop: a connection limit, HTTP/1.1 keep-alive with a header read timeout and
//! WebSocket upgrades, the background tasks, and graceful shutdown — stop accepting, close every
//! WebSocket with 1001 and the seq to resume from, let in-flight requests finish (bounded), then let
//! the writer commit what it accepted and stop.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{AppState, handle};
use std::collections::HashMap;

use crate::config::Config;
use crate::domain::AgentType;
use crate::events::hub::Hub;
use crate::http::Request;
use crate::http::timing::Timed;
use crate::monitor::Monitor;
use crate::monitor::health::Health;
use crate::store::{Store, StoreError, command};
use crate::ws::WsContext;

/// How long in-flight requests and open WebSockets get to finish after shutdown begins.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How often what is beyond a retention is trimmed, and how much one trim removes at most (about
/// 7 ms of the writer's time at a million records).
const RETENTION_PERIOD: Duration = Duration::from_secs(5);
const TRIM_BATCH: usize = 1_000;
/// How often a share of the project index's streams is cleaned of trimmed events' entries, and
/// into how many shares the streams are cut: each is cleaned every five seconds.
const INDEX_CLEAN_PERIOD: Duration = Duration::from_millis(500);
const INDEX_CLEAN_SHARES: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("store task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("{0}")]
    Replication(String),
}

/// Binds `addr` with a listen backlog of `backlog` (the kernel caps it at net.core.somaxconn):
/// a burst of connects beyond the backlog would overflow the accept queue, and each client it
/// drops waits for a SYN retransmit (1 s, then 3 s). Must be called inside the runtime.
pub fn listen(addr: std::net::SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = match addr {
        std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// Opens the store in `config.store.data_dir` and serves `listener` until `shutdown` resolves.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let hub = Hub::new(config.ws.total_queue_bytes);
    let ws_budget = hub.budget().clone();
    let publisher_hub = hub.clone();
    let webhooks =
        crate::webhooks::Webhooks::new(config.webhooks.clone(), config.webhook_max_attempts);
    let leader = config.store.follow.clone();
    // A follower's webhooks are its leader's: it posts nothing.
    let woken = (!webhooks.is_empty() && leader.is_none()).then(|| webhooks.clone());
    let publisher: crate::events::Publisher = Arc::new(move |events| {
        publisher_hub.publish(events);
        if let Some(webhooks) = &woken {
            webhooks.committed();
        }
    });
    let mut store_config = config.store.clone();
    if store_config.sync_replicas > 0 && (config.replication_key.is_none() || leader.is_some()) {
        return Err(ServerError::Replication(
            "--sync-replicas is a leader's setting: it needs --replication-key, and no --follow"
                .into(),
        ));
    }
    // A follower: its leader's snapshot when it has no database, and its node id.
    let follower = match &leader {
        Some(url) => {
            let key = config.replication_key.as_ref().ok_or_else(|| {
                ServerError::Replication("--follow needs --replication-key".into())
            })?;
            if store_config.durability != crate::store::Durability::Immediate {
                // What it acknowledges to a leader with --sync-replicas must be durable.
                return Err(ServerError::Replication(
                    "a follower acknowledges only records it synced: it needs --durability \
                     immediate"
                        .into(),
                ));
            }
            crate::replication::follower::prepare(&store_config.data_dir, url, key)
                .await
                .map_err(ServerError::Replication)?;
            let node = crate::replication::follower::node_id(&store_config.data_dir)
                .map_err(ServerError::Replication)?;
            Some((
                Arc::new(crate::replication::follower::Status::new(url)),
                node,
            ))
        }
        None => None,
    };
    if config.replication_key.is_some() && leader.is_none() {
        if store_config.durability != crate::store::Durability::Immediate {
            return Err(ServerError::Replication(
                "a node with --replication-key serves followers only records it synced: it \
                 needs --durability immediate"
                    .into(),
            ));
        }
        store_config.serve_followers = true;
    }
    let store =
        tokio::task::spawn_blocking(move || Store::open(&store_config, publisher)).await??;

    let stopping = CancellationToken::new();
    let tracker = TaskTracker::new();
    let monitor = Monitor::new(config.monitor.clone());
    // Each layer describes its own metrics (the monitor those of the layers below the API).
    crate::api::describe_metrics();
    crate::http::auth::describe_metrics();
    store.report_queue_depth();
    let mut health = Health::new(
        store.clone(),
        config.store.data_dir.clone(),
        config.monitor.min_free_disk_bytes,
        stopping.clone(),
    );
    if let Some((status, _)) = &follower {
        health = health.following(status.clone());
    }
    let health = Arc::new(health);
    let ws = WsContext::new(
        config.ws.clone(),
        hub,
        store.clone(),
        monitor.clone(),
        stopping.clone(),
        tracker.clone(),
    );
    let state = Arc::new(AppState {
        store: store.clone(),
        max_body_bytes: config.max_body_bytes,
        ws,
        monitor: monitor.clone(),
        health: health.clone(),
        keys: config.api_keys.clone(),
        cors: config.cors.clone(),
        allowed_hosts: config.allowed_hosts.clone(),
        auth_failures: Default::default(),
        backup_keep: config.backup_keep,
        allow_self_approval: config.allow_self_approval,
        stopping: stopping.clone(),
        progress: crate::api::progress_coalescer(config.max_progress_bytes),
        webhooks: webhooks.clone(),
        replication_key: config.replication_key.clone(),
    });
    if follower.is_none() {
        crate::webhooks::start(
            &webhooks,
            &store,
            config.public_url.clone(),
            &tracker,
            &stopping,
        );
    }
    let body_timeout = config.limits.body_read_timeout;
    let service = Timed::new(
        hyper::service::service_fn(move |req| {
            handle(&state, Request::with_body_timeout(req, body_timeout))
        }),
        monitor.clone(),
    );
    let generator_url = format!(
        "http://{}/api/v1/monitoring/alerts",
        listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default()
    );
    let reload_config = config.clone();
    tracker.spawn(crate::monitor::run(
        monitor.clone(),
        health,
        store.clone(),
        generator_url,
        move || reload_config.reload_rules(),
        tracker.clone(),
        stopping.clone(),
    ));
    tracker.spawn(report_ws_queued_bytes(ws_budget, stopping.clone()));
    match &follower {
        // A follower's writes are its leader's records: timers, trims and the index cleaning
        // are the leader's, and reach it through its log.
        Some((status, node)) => {
            let key = config.replication_key.clone().expect("checked above");
            tracker.spawn(crate::replication::follower::follow(
                store.clone(),
                key,
                node.clone(),
                status.clone(),
                stopping.clone(),
            ));
            tracker.spawn(crate::replication::follower::report_lag(
                store.clone(),
                status.clone(),
                monitor.clone(),
                stopping.clone(),
            ));
        }
        None => {
            tracker.spawn(fire_timers(
                store.clone(),
                config.timer_tick,
                stopping.clone(),
            ));
            tracker.spawn(retain(store.clone(), stopping.clone()));
            tracker.spawn(clean_event_index(store.clone(), stopping.clone()));
        }
    }

    let limit = Arc::new(Semaphore::new(config.max_connections));
    let send_buffer = config.ws.socket_send_buffer;
    let limits = config.limits.clone();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.keep_alive(true)
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes);

    tokio::pin!(shutdown);
    // A failed sync of the write-ahead log stops the store for good: the process then exits, so
    // that its supervisor restarts it into recovery.
    let failing = store.clone();
    let failed = async move { failing.failed().await };
    tokio::pin!(failed);
    let mut failure = None;
    let mut backoff = Duration::from_millis(5);
    // A descriptor held in reserve: out of descriptors, it is let go to take the waiting
    // connection and tell it 503, instead of leaving it to hang in the accept queue.
    let mut reserve = std::fs::File::open("/dev/null").ok();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
            why = &mut failed => {
                failure = Some(why);
                break;
            }
        };
        let (stream, peer) = match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(5);
                (stream, Some(peer))
            }
            Err(e) if is_out_of_descriptors(&e) && reserve.is_some() => {
                drop(reserve.take());
                if let Ok(Ok((stream, _))) =
                    tokio::time::timeout(Duration::from_millis(100), listener.accept()).await
                {
                    metrics::counter!(crate::http::timing::OUT_OF_DESCRIPTORS).increment(1);
                    // Answered on this task: a task of its own could wait behind the next accept.
                    refuse_with(
                        stream,
                        "the server is out of file descriptors; retry shortly",
                        false,
                    )
                    .await;
                }
                reserve = std::fs::File::open("/dev/null").ok();
                tracing::warn!(error = %e, "out of file descriptors: a connection was refused with 503");
                continue;
            }
            Err(e) => {
                // Out of file descriptors and similar: wait and retry rather than spin or die.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            // Beyond the connection limit: a clear 503, then close, rather than a silent queue.
            tracker.spawn(refuse(stream));
            continue;
        };
        let _ = stream.set_nodelay(true);
        if send_buffer > 0 {
            let _ = socket2::SockRef::from(&stream).set_send_buffer_size(send_buffer);
        }
        let activity = Arc::new(Activity::default());
        let started = Instant::now();
        let io = TokioIo::new(Tracked {
            inner: stream,
            activity: activity.clone(),
            started,
        });
        let service = crate::http::WithPeer {
            inner: service.clone(),
            peer: peer.map(|a| a.ip()),
        };
        let connection =
            crate::http::repoll::Repoll::new(http.serve_connection(io, service).with_upgrades());
        let stopping = stopping.clone();
        let (idle_timeout, write_timeout) = (limits.idle_timeout, limits.write_timeout);
        tracker.spawn(async move {
            tokio::pin!(connection);
            let every = (idle_timeout.min(write_timeout) / 4).max(Duration::from_millis(10));
            let mut check = tokio::time::interval(every);
            let mut closing = false;
            let result = loop {
                tokio::select! {
                    result = connection.as_mut() => break result,
                    () = stopping.cancelled(), if !closing => {
                        connection.as_mut().inner().graceful_shutdown();
                        closing = true;
                    }
                    _ = check.tick() => {
                        let now = started.elapsed();
                        if activity.write_stalled_for(now) > write_timeout {
                            // The client stopped reading its answer: a graceful close would wait
                            // for it for good, holding the answer's memory. Drop the connection.
                            metrics::counter!(crate::http::timing::WRITE_TIMEOUTS).increment(1);
                            tracing::debug!("a response made no progress within the write timeout; connection dropped");
                            break Ok(());
                        }
                        if !closing && now.saturating_sub(activity.last()) > idle_timeout {
                            // Idle keep-alive connection: close it (a request in flight finishes).
                            connection.as_mut().inner().graceful_shutdown();
                            closing = true;
                        }
                    }
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    tracing::info!("shutting down: closing WebSockets, draining connections");
    stopping.cancel();
    tracker.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not finish within the drain timeout");
    }
    tokio::task::spawn_blocking(move || store.close()).await?;
    if let Some(why) = failure {
        tracing::error!(reason = %why, "stopped: the store failed; restart to recover from its log");
        return Err(ServerError::Store(StoreError::Unavailable(why)));
    }
    tracing::info!("stopped");
    Ok(())
}

/// The gauge of every WebSocket's unsent bytes, once a second (publishing and writing only move
/// the counter).
async fn report_ws_queued_bytes(
    budget: Arc<crate::events::hub::Budget>,
    stopping: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                metrics::gauge!(crate::ws::QUEUED_BYTES).set(budget.used() as f64);
            }
            () = stopping.cancelled() => return,
        }
    }
}

/// Fires due timers (leases, work timeouts, retries, HITL expiry) through the writer. Timers live
/// in the database, so those that came due while the server was down fire at the first tick.
async fn fire_timers(store: Store, tick: Duration, stopping: CancellationToken) {
    const BATCH: usize = 1000;
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            () = stopping.cancelled() => return,
        }
        loop {
            let now = crate::domain::now_micros();
            match store.next_timer() {
                Ok(Some(at)) if at <= now => {}
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "reading the timers failed");
                    break;
                }
            }
            match store.write(command::FireTimers { now, max: BATCH }).await {
                Ok(_) => {
                    // Loop while timers remain due (a batch may not have covered them all).
                }
                Err(e) => {
                    tracing::warn!(error = %e, "firing timers failed");
                    break;
                }
            }
        }
    }
}

/// Answers a connection over the limit with 503 and closes it.
async fn refuse(stream: tokio::net::TcpStream) {
    refuse_with(
        stream,
        "the server is at its connection limit; retry shortly",
        true,
    )
    .await;
}

/// A 503 `too_many_connections` saying `why`, then close. The request is not read; before the
/// close, what the client sends is read and dropped for a moment (a lingering close): closing a
/// socket with unread data resets the connection, and a client that was still writing its request
/// would see the reset instead of the 503. At most `MAX_LINGERING` refusals linger at a time (each
/// holds a descriptor while the server has none to spare); the others close at once, as does a
/// refusal answered on the accept loop itself (`linger` false: the loop must not wait).
async fn refuse_with(mut stream: tokio::net::TcpStream, why: &str, linger: bool) {
    let body = crate::http::ApiError::new(crate::http::ErrorCode::TooManyConnections, why).body();
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let answered = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(&body).await?;
        stream.shutdown().await
    })
    .await;
    if !linger || !matches!(answered, Ok(Ok(()))) {
        return;
    }
    static LINGERING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    const MAX_LINGERING: usize = 256;
    const LINGER: Duration = Duration::from_millis(500);
    const MAX_DRAINED: usize = 64 * 1024;
    if LINGERING.fetch_add(1, std::sync::atomic::Ordering::AcqRel) < MAX_LINGERING {
        let _ = tokio::time::timeout(LINGER, async {
            let mut buf = [0u8; 4096];
            let mut drained = 0;
            while drained < MAX_DRAINED {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => drained += n,
                }
            }
        })
        .await;
    }
    LINGERING.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
}

/// `accept` failed for want of a descriptor (the process's or the system's).
fn is_out_of_descriptors(e: &std::io::Error) -> bool {
    // EMFILE (24) and ENFILE (23) on Linux.
    matches!(e.raw_os_error(), Some(23 | 24))
}

/// Raises the soft limit on open files to the hard limit, as far as the system lets it: each
/// connection and WebSocket holds one. Answers the limit now in force.
pub fn raise_open_files_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => Some(limit),
        Err(e) => {
            tracing::warn!(error = %e, "could not raise the open-files limit");
            None
        }
    }
}

/// When bytes last moved on a connection, and since when a write has waited for the client: in
/// milliseconds since the connection started.
struct Activity {
    last: AtomicU64,
    /// `u64::MAX` while no write waits.
    write_blocked_since: AtomicU64,
}

impl Default for Activity {
    fn default() -> Activity {
        Activity {
            last: AtomicU64::new(0),
            write_blocked_since: AtomicU64::new(u64::MAX),
        }
    }
}

impl Activity {
    fn last(&self) -> Duration {
        Duration::from_millis(self.last.load(Ordering::Relaxed))
    }

    /// How long a write has been waiting for the client to read (zero when none waits).
    fn write_stalled_for(&self, now: Duration) -> Duration {
        match self.write_blocked_since.load(Ordering::Relaxed) {
            u64::MAX => Duration::ZERO,
            since => now.saturating_sub(Duration::from_millis(since)),
        }
    }
}

/// A socket that records when bytes last moved, for the idle timeout, and since when a write
/// has made no progress, for the write timeout.
struct Tracked {
    inner: tokio::net::TcpStream,
    activity: Arc<Activity>,
    started: Instant,
}

impl Tracked {
    fn touch(&self) {
        self.activity
            .last
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// A write's outcome: progress clears the stall, a wait starts it (if not started).
    fn wrote<T>(&self, polled: &Poll<std::io::Result<T>>, progressed: bool) {
        match polled {
            Poll::Pending => {
                let now = self.started.elapsed().as_millis() as u64;
                let _ = self.activity.write_blocked_since.compare_exchange(
                    u64::MAX,
                    now,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
            Poll::Ready(_) if progressed => {
                self.touch();
                self.activity
                    .write_blocked_since
                    .store(u64::MAX, Ordering::Relaxed);
            }
            Poll::Ready(_) => {}
        }
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        let progressed = matches!(polled, Poll::Ready(Ok(n)) if n > 0);
        self.wrote(&polled, progressed);
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        let progressed = matches!(polled, Poll::Ready(Ok(n)) if n > 0);
        self.wrote(&polled, progressed);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Each write keeps the event log, the agent history and the idempotency keys within their
/// retention as it adds to them (`store::writer`); this trims, in bounded steps, what is beyond
/// them otherwise: after a retention was lowered, and idempotency keys that expire while none
/// are remembered.
async fn retain(store: Store, stopping: CancellationToken) {
    let agent_history = store.agent_history_retention();
    let mut tick = tokio::time::interval(RETENTION_PERIOD);
    // The newest seq each agent type's history was last measured at: unchanged means nothing new.
    let mut measured: HashMap<AgentType, u64> = HashMap::new();
    loop {
        if !writer_round(&mut tick, &stopping, &store).await {
            return;
        }
        retain_events(&store).await;
        forget_idempotency_keys(&store).await;
        let latest = store.latest_seq();
        for agent_type in store.agent_types() {
            if measured.get(&agent_type) == Some(&latest) {
                continue;
            }
            measured.insert(agent_type.clone(), latest);
            trim_in_batches(&store, "trimming the agent history failed", || match store
                .agent_history_cutoff(&agent_type, agent_history)
            {
                Ok(through) => through.map(|through| command::TrimAgentHistory {
                    agent_type: agent_type.clone(),
                    through,
                    max: TRIM_BATCH,
                }),
                Err(e) => {
                    tracing::warn!(error = %e, "reading the agent history for retention failed");
                    None
                }
            })
            .await;
        }
    }
}

/// Waits for the next tick of a trimming task at which the writer is up (none is written while
/// it is down); false once the server stops.
async fn writer_round(
    tick: &mut tokio::time::Interval,
    stopping: &CancellationToken,
    store: &Store,
) -> bool {
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stopping.cancelled() => return false,
        }
        if store.writer_alive() {
            return true;
        }
    }
}

/// Writes the trim that `next` builds, again while each removes a whole `TRIM_BATCH` (so that no
/// trim holds the writer up for longer than one batch), until `next` has nothing to trim or a
/// write fails (logged as `failed`).
async fn trim_in_batches<C>(store: &Store, failed: &str, mut next: impl FnMut() -> Option<C>)
where
    C: command::Write<Output = u64>,
{
    while let Some(command) = next() {
        match store.write(command).await {
            Ok(n) if n as usize == TRIM_BATCH => continue,
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(error = %e, "{failed}");
                return;
            }
        }
    }
}

/// Removes the project-index entries of trimmed events (each write trims the events table only:
/// `store::writer::retention`), a tenth of the streams every half second, so that a checkpoint
/// writes a few index pages for it rather than one per trimmed event's project. A read looks
/// first, so that a quiet store's writer is left alone.
async fn clean_event_index(store: Store, stopping: CancellationToken) {
    let mut tick = tokio::time::interval(INDEX_CLEAN_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next = 0;
    loop {
        if !writer_round(&mut tick, &stopping, &store).await {
            return;
        }
        let streams = store.event_streams();
        let share = streams.len().div_ceil(INDEX_CLEAN_SHARES);
        if next >= streams.len() {
            next = 0;
        }
        let these: Vec<_> = streams[next..(next + share).min(streams.len())].to_vec();
        next += share;
        match store.event_index_has_trimmed(&these) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "reading the project index for trimmed events failed");
                continue;
            }
        }
        trim_in_batches(
            &store,
            "removing trimmed events from the project index failed",
            || {
                Some(command::TrimEventIndex {
                    streams: these.clone(),
                    max: TRIM_BATCH,
                })
            },
        )
        .await;
    }
}

/// Forgets the idempotency keys older than their lifetime, and the oldest beyond
/// `--idempotency-max-keys`, in bounded steps.
async fn forget_idempotency_keys(store: &Store) {
    trim_in_batches(store, "forgetting old idempotency keys failed", || {
        Some(command::TrimIdempotency {
            before: crate::domain::now_micros().saturating_sub(store.idempotency_ttl()),
            keep: store.idempotency_keep(),
            max: TRIM_BATCH,
        })
    })
    .await;
}

/// Trims the event log to its newest `--event-retention` events.
async fn retain_events(store: &Store) {
    let retention = store.event_retention();
    trim_in_batches(store, "trimming the event log failed", || {
        let latest = store.latest_seq();
        let oldest = match store.oldest_seq() {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(error = %e, "reading the event log for retention failed");
                return None;
            }
        };
        if oldest == 0 || latest.saturating_sub(oldest) < retention {
            return None;
        }
        Some(command::TrimEvents {
            through: latest - retention,
            max: TRIM_BATCH,
        })
    })
    .await;
}
