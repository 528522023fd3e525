//! A follower: before its store opens, a snapshot of the leader when the data directory has no
//! database (or was marked for a new one); then, while it serves, the leader's log streamed from
//! the record after its own last, each record applied through its writer (`Store::replicate`).
//! A follower the leader no longer keeps records for (410 `snapshot_needed`) marks its data
//! directory and stops its store, so that the process exits and its supervisor restarts it into
//! a new snapshot, as after a failed sync of the log.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use parking_lot::Mutex;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use super::Key;
use super::wire::{Decoder, Frame};
use crate::store::{DB_FILE, Store};

/// The file that marks a data directory for a new snapshot at the next start.
pub const RESNAPSHOT: &str = "flightdeck.resnapshot";
/// The file that holds a follower's node id: how its leader tells it from the others.
pub const NODE_ID: &str = "flightdeck.node";
/// A stream that brings no frame for this long is given up and opened again (the leader sends
/// a heartbeat every second it has nothing else to send).
const SILENCE: Duration = Duration::from_secs(5);
/// How long a snapshot is waited for, the leader down, before the start is given up.
const SNAPSHOT_PATIENCE: Duration = Duration::from_secs(60);

pub type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

pub fn client() -> HttpClient {
    // Each acknowledgement is one small request that a write waits for: sent at once.
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new()).build(connector)
}

/// What a follower knows of its leader: readiness and the replication metrics read it.
#[derive(Debug)]
pub struct Status {
    leader: String,
    connected: AtomicBool,
    /// The newest LSN the leader said it has.
    leader_lsn: AtomicU64,
    /// When this follower last held everything the leader said it had.
    caught_up: Mutex<Instant>,
    /// When a frame last came.
    contact: Mutex<Option<Instant>>,
    /// Why the last stream ended.
    last_error: Mutex<String>,
    started: Instant,
}

impl Status {
    pub fn new(leader: &str) -> Status {
        Status {
            leader: leader.to_owned(),
            connected: AtomicBool::new(false),
            leader_lsn: AtomicU64::new(0),
            caught_up: Mutex::new(Instant::now()),
            contact: Mutex::new(None),
            last_error: Mutex::new(String::new()),
            started: Instant::now(),
        }
    }

    pub fn leader(&self) -> &str {
        &self.leader
    }

    /// Records behind the leader, and for how long, in seconds, this follower has not held all
    /// the leader had — or, while it streams nothing, has not heard from it.
    pub fn lag(&self, applied: u64) -> (u64, f64) {
        let behind = self
            .leader_lsn
            .load(Ordering::Acquire)
            .saturating_sub(applied);
        let mut seconds = if behind == 0 {
            0.0
        } else {
            self.caught_up.lock().elapsed().as_secs_f64()
        };
        if self.streaming().is_err() {
            let heard = (*self.contact.lock()).unwrap_or(self.started);
            seconds = seconds.max(heard.elapsed().as_secs_f64());
        }
        (behind, seconds)
    }

    /// Whether a stream from the leader is open and brought a frame lately; why not otherwise.
    pub fn streaming(&self) -> Result<(), String> {
        let fresh = self.contact.lock().is_some_and(|at| at.elapsed() < SILENCE);
        if self.connected.load(Ordering::Acquire) && fresh {
            Ok(())
        } else {
            let why = self.last_error.lock().clone();
            Err(if why.is_empty() {
                format!("not streaming from the leader {} yet", self.leader)
            } else {
                format!("not streaming from the leader {}: {why}", self.leader)
            })
        }
    }

    fn heard(&self, leader_lsn: u64, applied: u64) {
        self.leader_lsn.fetch_max(leader_lsn, Ordering::AcqRel);
        let now = Instant::now();
        *self.contact.lock() = Some(now);
        if applied >= self.leader_lsn.load(Ordering::Acquire) {
            *self.caught_up.lock() = now;
        }
    }

    fn lost(&self, why: String) {
        self.connected.store(false, Ordering::Release);
        *self.last_error.lock() = why;
    }
}

/// Before the store opens: a snapshot of the leader into `data_dir` when it holds no database
/// or was marked for a new one.
pub async fn prepare(data_dir: &Path, leader: &str, key: &Key) -> Result<(), String> {
    let marker = data_dir.join(RESNAPSHOT);
    if data_dir.join(DB_FILE).exists() && !marker.exists() {
        return Ok(());
    }
    crate::store::private_dir(data_dir)
        .map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
    let client = client();
    let staged = data_dir.join(format!("{DB_FILE}.snapshot"));
    let started = Instant::now();
    let lsn = loop {
        match fetch_snapshot(&client, leader, key, &staged).await {
            Ok(lsn) => break lsn,
            Err(why) if started.elapsed() < SNAPSHOT_PATIENCE => {
                tracing::warn!(leader, error = %why, "no snapshot from the leader yet; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(why) => return Err(format!("no snapshot from the leader {leader}: {why}")),
        }
    };
    let (from, dir) = (staged.clone(), data_dir.to_path_buf());
    let report =
        tokio::task::spawn_blocking(move || crate::store::restore_database(&from, &dir, true))
            .await
            .map_err(|e| format!("restoring the snapshot failed: {e}"))?
            .map_err(|e| format!("restoring the snapshot failed: {e}"))?;
    let _ = std::fs::remove_file(&staged);
    let _ = std::fs::remove_file(&marker);
    tracing::info!(
        leader,
        lsn,
        records = report.records,
        "started from the leader's snapshot"
    );
    Ok(())
}

async fn fetch_snapshot(
    client: &HttpClient,
    leader: &str,
    key: &Key,
    to: &Path,
) -> Result<u64, String> {
    let response = get(client, &format!("{leader}/replication/snapshot"), key).await?;
    let lsn = response
        .headers()
        .get(super::LSN_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or("the snapshot's answer names no LSN")?;
    let mut file = tokio::fs::File::create(to)
        .await
        .map_err(|e| format!("cannot create {}: {e}", to.display()))?;
    let mut body = response.into_body();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("reading the snapshot failed: {e}"))?;
        if let Ok(data) = frame.into_data() {
            file.write_all(&data)
                .await
                .map_err(|e| format!("writing {} failed: {e}", to.display()))?;
        }
    }
    file.sync_all()
        .await
        .map_err(|e| format!("syncing {} failed: {e}", to.display()))?;
    Ok(lsn)
}

/// A GET with the replication key, its answer when it is a 200; the error's message otherwise.
async fn get(
    client: &HttpClient,
    url: &str,
    key: &Key,
) -> Result<hyper::Response<hyper::body::Incoming>, String> {
    let request = hyper::Request::get(url)
        .header("authorization", key.bearer())
        .body(Empty::new())
        .map_err(|e| format!("{url}: {e}"))?;
    let response = tokio::time::timeout(SILENCE, client.request(request))
        .await
        .map_err(|_| format!("{url}: no answer within {} s", SILENCE.as_secs()))?
        .map_err(|e| format!("{url}: {e}"))?;
    if response.status() == hyper::StatusCode::OK {
        return Ok(response);
    }
    let status = response.status();
    let body = tokio::time::timeout(SILENCE, response.into_body().collect())
        .await
        .ok()
        .and_then(Result::ok)
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
        .unwrap_or_default();
    Err(format!("{url}: {status} {body}"))
}

/// Why a stream ended.
enum Ended {
    /// The server is stopping.
    Stopping,
    /// The leader no longer keeps the records this follower needs.
    SnapshotNeeded(String),
    /// Anything else: open it again.
    Lost(String),
}

/// This follower's node id, made at its first start and kept in its data directory.
pub fn node_id(data_dir: &Path) -> Result<String, String> {
    let path = data_dir.join(NODE_ID);
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    }
    let id = crate::domain::Id::new_v7().to_string();
    std::fs::write(&path, &id).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(id)
}

/// Streams the leader's log into `store` until `stopping`, and tells the leader what it holds.
pub async fn follow(
    store: Store,
    key: Key,
    node: String,
    status: std::sync::Arc<Status>,
    stopping: CancellationToken,
) {
    let client = client();
    let again = std::sync::Arc::new(tokio::sync::Notify::new());
    tokio::spawn(acknowledge(
        client.clone(),
        status.leader().to_owned(),
        key.clone(),
        node.clone(),
        store.applied_watch(),
        again.clone(),
        stopping.clone(),
    ));
    let link = Link {
        client: &client,
        store: &store,
        key: &key,
        node: &node,
        status: &status,
        again: &again,
        stopping: &stopping,
    };
    let mut backoff = Duration::from_millis(100);
    loop {
        match stream(&link).await {
            Ended::Stopping => return,
            Ended::SnapshotNeeded(why) => {
                status.lost(why.clone());
                let marker = store.data_dir().join(RESNAPSHOT);
                if let Err(e) = std::fs::write(&marker, b"") {
                    tracing::error!(error = %e, "cannot mark the data directory for a new snapshot");
                }
                store.stop_for(format!(
                    "the leader no longer keeps the records this follower needs ({why}); \
                     restarting into a new snapshot"
                ));
                return;
            }
            Ended::Lost(why) => {
                if status.connected.load(Ordering::Acquire) {
                    backoff = Duration::from_millis(100);
                }
                tracing::warn!(leader = status.leader(), error = %why, "replication stream lost");
                status.lost(why);
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = stopping.cancelled() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// What a stream from the leader works with.
struct Link<'a> {
    client: &'a HttpClient,
    store: &'a Store,
    key: &'a Key,
    node: &'a str,
    status: &'a Status,
    /// Acknowledges what this follower holds again (a new stream).
    again: &'a tokio::sync::Notify,
    stopping: &'a CancellationToken,
}

async fn stream(link: &Link<'_>) -> Ended {
    let Link {
        client,
        store,
        key,
        node,
        status,
        again,
        stopping,
    } = *link;
    let from = store.applied_lsn() + 1;
    let url = format!(
        "{}/replication/log?from={from}&node={node}",
        status.leader()
    );
    let response = tokio::select! {
        r = get(client, &url, key) => r,
        () = stopping.cancelled() => return Ended::Stopping,
    };
    let response = match response {
        Ok(response) => response,
        Err(why) if why.contains("snapshot_needed") => return Ended::SnapshotNeeded(why),
        Err(why) => return Ended::Lost(why),
    };
    status.connected.store(true, Ordering::Release);
    // What it holds already, told again: an acknowledgement lost with the last stream.
    again.notify_one();
    tracing::info!(leader = status.leader(), from, "streaming the leader's log");
    let mut body = response.into_body();
    let mut decoder = Decoder::default();
    loop {
        let frame = tokio::select! {
            f = tokio::time::timeout(SILENCE, body.frame()) => f,
            () = stopping.cancelled() => return Ended::Stopping,
        };
        let data = match frame {
            Err(_) => {
                return Ended::Lost(format!(
                    "nothing from the leader for {} s",
                    SILENCE.as_secs()
                ));
            }
            Ok(None) => return Ended::Lost("the leader ended the stream".into()),
            Ok(Some(Err(e))) => return Ended::Lost(format!("reading the stream failed: {e}")),
            Ok(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => data,
                Err(_) => continue,
            },
        };
        decoder.push(&data);
        loop {
            match decoder.next_frame() {
                Ok(None) => break,
                Err(why) => return Ended::Lost(why),
                Ok(Some(Frame::Heartbeat { latest, .. })) => {
                    status.heard(latest, store.applied_lsn());
                }
                Ok(Some(Frame::Record { lsn, payload })) => {
                    if let Err(e) = store.replicate(lsn, payload).await {
                        return Ended::Lost(format!("applying record {lsn} failed: {e}"));
                    }
                    status.heard(lsn, lsn);
                }
            }
        }
    }
}

/// Tells the leader the last record this follower holds, as soon as its writer committed it
/// (the newest only, when several came while an acknowledgement was on its way), and again on
/// each new stream: what `--sync-replicas` waits for.
async fn acknowledge(
    client: HttpClient,
    leader: String,
    key: Key,
    node: String,
    mut applied: tokio::sync::watch::Receiver<u64>,
    again: std::sync::Arc<tokio::sync::Notify>,
    stopping: CancellationToken,
) {
    loop {
        tokio::select! {
            changed = applied.changed() => if changed.is_err() {
                return;
            },
            () = again.notified() => {}
            () = stopping.cancelled() => return,
        }
        let lsn = *applied.borrow_and_update();
        let url = format!("{leader}/replication/ack?node={node}&lsn={lsn}");
        let request = hyper::Request::post(&url)
            .header("authorization", key.bearer())
            .body(Empty::new());
        let sent = match request {
            Ok(request) => tokio::time::timeout(SILENCE, client.request(request)).await,
            Err(e) => {
                tracing::error!(error = %e, "cannot build an acknowledgement");
                return;
            }
        };
        match sent {
            Ok(Ok(response)) if response.status() == hyper::StatusCode::NO_CONTENT => {}
            other => {
                let why = match other {
                    Ok(Ok(response)) => format!("answered {}", response.status()),
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => format!("no answer within {} s", SILENCE.as_secs()),
                };
                tracing::warn!(leader, lsn, error = %why, "an acknowledgement to the leader failed");
                // Sent again with the next change, or after a pause.
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(100)) => {}
                    () = stopping.cancelled() => return,
                }
                applied.mark_changed();
            }
        }
    }
}

/// The follower's records behind its leader.
pub const LAG_RECORDS: &str = "flightdeck_replication_lag_records";
/// For how long, in seconds, the follower has not held every record its leader said it had, or,
/// while it streams nothing, has not heard from it (the `replication_lag_seconds` alert signal).
pub const LAG_SECONDS: &str = "flightdeck_replication_lag_seconds";
/// 1 while a stream from the leader is open and brought a frame within 5 s.
pub const STREAMING: &str = "flightdeck_replication_streaming";

/// Exports the follower's lag every second (it grows between frames too).
pub async fn report_lag(
    store: Store,
    status: std::sync::Arc<Status>,
    monitor: std::sync::Arc<crate::monitor::Monitor>,
    stopping: CancellationToken,
) {
    metrics::describe_gauge!(
        LAG_RECORDS,
        "Records of the leader's log this follower does not hold yet"
    );
    metrics::describe_gauge!(
        LAG_SECONDS,
        metrics::Unit::Seconds,
        "How long this follower has not held every record its leader said it had (0: caught up)"
    );
    metrics::describe_gauge!(STREAMING, "1 while this follower streams its leader's log");
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stopping.cancelled() => return,
        }
        let (records, seconds) = status.lag(store.applied_lsn());
        metrics::gauge!(LAG_RECORDS).set(records as f64);
        metrics::gauge!(LAG_SECONDS).set(seconds);
        monitor.set_replication_lag(seconds);
        metrics::gauge!(STREAMING).set(if status.streaming().is_ok() { 1.0 } else { 0.0 });
    }
}
