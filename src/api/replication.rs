//! The replication routes a leader serves its followers, with the replication key
//! (`--replication-key`, `Authorization: Bearer <key>`):
//! - `GET /replication/snapshot`: a consistent snapshot of the database (a backup, taken in a read
//!   transaction while the server keeps serving), its LSN in the `Flightdeck-Lsn` header;
//! - `GET /replication/log?from=N`: the write-ahead log from record N on, a long-lived answer of
//!   frames (`replication::wire`): records as they commit, a heartbeat after each chunk and every
//!   second without one. 410 `snapshot_needed` when record N is no longer kept
//!   (`--replication-backlog-mib`) or is beyond this node's newest. With `&node=ID` the follower
//!   counts toward `--sync-replicas` while the stream is open;
//! - `POST /replication/ack?node=ID&lsn=N`: the follower holds the log through record N.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;

use super::{AppState, Query};
use crate::domain::now_micros;
use crate::http::{ApiError, ErrorCode, Request, Response, set_header};
use crate::replication::{LSN_HEADER, wire};
use crate::store::{Gone, Store};

/// Most record bytes one chunk of the stream carries.
const CHUNK_BYTES: usize = 1 << 20;
/// A heartbeat at least this often.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long a snapshot's last record is waited for in the backlog (a moment, after its commit).
const BACKLOG_PATIENCE: Duration = Duration::from_secs(5);
/// Bytes of the snapshot read and sent at a time.
const SNAPSHOT_CHUNK: usize = 256 << 10;

fn authorize(state: &AppState, req: &Request) -> Result<(), ApiError> {
    let Some(key) = &state.replication_key else {
        return Err(ApiError::new(
            ErrorCode::ReplicationRefused,
            "this node has no --replication-key: it serves no followers",
        ));
    };
    let presented = req
        .header("authorization")
        .and_then(crate::http::auth::bearer)
        .unwrap_or("");
    if key.matches(presented) {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::ReplicationRefused,
            "a replication route needs this node's replication key: Authorization: Bearer <key>",
        ))
    }
}

/// The records kept for followers; refused on a node that keeps none.
fn backlog(state: &AppState) -> Result<&crate::store::Backlog, ApiError> {
    state.store.backlog().ok_or_else(|| {
        ApiError::new(
            ErrorCode::ReplicationRefused,
            "this node keeps no log for followers: it is a follower itself, or runs without \
             --durability immediate",
        )
    })
}

fn gone(from: u64, why: Gone) -> ApiError {
    let message = match why {
        Gone::Trimmed {
            oldest: Some(oldest),
        } => format!(
            "record {from} is no longer kept (the oldest kept is {oldest}, \
             --replication-backlog-mib): start again from a snapshot"
        ),
        Gone::Trimmed { oldest: None } => format!(
            "record {from} was written before this node started: start again from a snapshot"
        ),
        Gone::Ahead { latest } => format!(
            "this node's log ends at record {latest}, before record {from}: the follower holds \
             records this node never had; start it again from a snapshot"
        ),
    };
    ApiError::new(ErrorCode::SnapshotNeeded, message)
}

pub async fn snapshot(state: &AppState, req: Request) -> Result<Response, ApiError> {
    authorize(state, &req)?;
    backlog(state)?;
    let store = state.store.clone();
    let floor = state.health.min_free_bytes();
    let (file, lsn) = tokio::task::spawn_blocking(move || take_snapshot(&store, floor))
        .await
        .map_err(|e| ApiError::new(ErrorCode::BackupFailed, e.to_string()))??;
    // The snapshot's last record is committed a moment before the writer hands it to the
    // backlog: answered once it is there, so the follower's first `from` is never ahead.
    let mut latest = backlog(state)?.latest();
    tokio::time::timeout(BACKLOG_PATIENCE, latest.wait_for(|&l| l >= lsn))
        .await
        .map_err(|_| {
            ApiError::new(
                ErrorCode::Unavailable,
                format!("record {lsn} of the snapshot did not reach the backlog; retry"),
            )
        })?
        .map_err(|_| ApiError::new(ErrorCode::Unavailable, "the writer has stopped"))?;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let stopping = state.stopping.clone();
    tokio::spawn(async move {
        let mut file = tokio::fs::File::from_std(file);
        loop {
            let mut chunk = BytesMut::zeroed(SNAPSHOT_CHUNK);
            let n = tokio::select! {
                n = file.read(&mut chunk) => n,
                () = stopping.cancelled() => return,
            };
            match n {
                Ok(0) => return,
                Ok(n) => {
                    chunk.truncate(n);
                    if tx.send(chunk.freeze()).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    // The follower sees the answer end short and fails the restore's check.
                    tracing::warn!(error = %e, "reading a snapshot for a follower failed");
                    return;
                }
            }
        }
    });
    let mut response = hyper::Response::new(crate::http::Body::stream(rx));
    set_header(&mut response, "content-type", "application/octet-stream");
    set_header(&mut response, "cache-control", "no-store");
    set_header(&mut response, LSN_HEADER, &lsn.to_string());
    Ok(response)
}

/// Writes a snapshot beside the database and opens it; its name is removed at once (the open
/// file is read to its end). Refused when it could leave less free than the server's floor.
fn take_snapshot(store: &Store, floor: u64) -> Result<(std::fs::File, u64), ApiError> {
    let data_dir = store.data_dir();
    let dir = data_dir.join("replication");
    super::admin::room_for_copy(&data_dir, &dir, floor, "a snapshot")?;
    let path = dir.join(format!("snapshot-{}.redb", now_micros()));
    let taken = store.snapshot_to(&path).and_then(|(_, lsn)| {
        let file = std::fs::File::open(&path)?;
        Ok((file, lsn))
    });
    let _ = std::fs::remove_file(&path);
    taken.map_err(ApiError::from)
}

pub async fn log(state: &AppState, req: Request, query: &Query) -> Result<Response, ApiError> {
    authorize(state, &req)?;
    let from: u64 = query
        .get("from")
        .ok_or_else(|| ApiError::invalid_field("from", "the first record to send is required"))?
        .parse()
        .ok()
        .filter(|&n| n >= 1)
        .ok_or_else(|| ApiError::invalid_field("from", "must be a record number (1 or more)"))?;
    backlog(state)?
        .read(from, 0)
        .map_err(|why| gone(from, why))?;
    // The follower counts toward `--sync-replicas` while its stream is open.
    let connected = match (state.store.quorum(), query.get("node")) {
        (Some(quorum), Some(node)) => Some(quorum.connected(node)),
        _ => None,
    };
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let store = state.store.clone();
    let stopping = state.stopping.clone();
    tokio::spawn(async move {
        stream(store, from, tx, stopping).await;
        drop(connected);
    });
    let mut response = hyper::Response::new(crate::http::Body::stream(rx));
    set_header(&mut response, "content-type", "application/octet-stream");
    set_header(&mut response, "cache-control", "no-store");
    Ok(response)
}

/// `POST /replication/ack?node=ID&lsn=N`: follower `node` holds every record through `lsn`
/// durably (what `--sync-replicas` waits for). 204.
pub async fn ack(state: &AppState, req: Request, query: &Query) -> Result<Response, ApiError> {
    authorize(state, &req)?;
    let node = query
        .get("node")
        .filter(|n| n.len() <= 64)
        .ok_or_else(|| ApiError::invalid_field("node", "the follower's node id is required"))?;
    let lsn: u64 = query
        .get("lsn")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| ApiError::invalid_field("lsn", "must be a record number"))?;
    if let Some(quorum) = state.store.quorum() {
        quorum.acked(node, lsn);
    }
    let mut response = hyper::Response::new(crate::http::Body::default());
    *response.status_mut() = hyper::StatusCode::NO_CONTENT;
    Ok(response)
}

/// Sends the records from `next` on as they commit, until the follower goes, falls behind what
/// is kept (it then reconnects and is told why), or the server stops.
async fn stream(
    store: Store,
    mut next: u64,
    tx: tokio::sync::mpsc::Sender<Bytes>,
    stopping: tokio_util::sync::CancellationToken,
) {
    let Some(backlog) = store.backlog() else {
        return;
    };
    let mut latest = backlog.latest();
    loop {
        match backlog.read(next, CHUNK_BYTES) {
            Ok(records) if !records.is_empty() => {
                let mut out = BytesMut::new();
                for (lsn, payload) in &records {
                    wire::record(&mut out, *lsn, payload);
                    next = lsn + 1;
                }
                let newest = *latest.borrow_and_update();
                out.extend_from_slice(&wire::heartbeat(newest.max(next - 1), now_micros()));
                if tx.send(out.freeze()).await.is_err() {
                    return;
                }
                continue;
            }
            Ok(_) => {}
            Err(_) => return,
        }
        tokio::select! {
            changed = latest.changed() => if changed.is_err() {
                return;
            },
            () = tokio::time::sleep(HEARTBEAT) => {
                let newest = *latest.borrow();
                if tx.send(wire::heartbeat(newest, now_micros())).await.is_err() {
                    return;
                }
            }
            () = tx.closed() => return,
            () = stopping.cancelled() => return,
        }
    }
}
