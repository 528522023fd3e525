//! Alert notifications to an Alertmanager-compatible receiver (`POST` of a JSON array of alerts
//! with `labels`, `annotations`, `startsAt`, `endsAt`, `generatorURL`). A queue and its own task:
//! sending, retrying (1 s, 2 s, 4 s) and giving up never hold up request handling.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const QUEUE: usize = 256;
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
const BACKOFF: [Duration; 3] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
];

/// Starts the sender; returns where to queue alert bodies (JSON arrays).
pub fn start(
    url: String,
    tracker: &tokio_util::task::TaskTracker,
    shutdown: CancellationToken,
) -> mpsc::Sender<String> {
    let (tx, mut rx) = mpsc::channel::<String>(QUEUE);
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    tracker.spawn(async move {
        loop {
            let body = tokio::select! {
                body = rx.recv() => match body {
                    Some(b) => b,
                    None => return,
                },
                () = shutdown.cancelled() => return,
            };
            let mut attempt = 0;
            loop {
                match send(&client, &url, &body).await {
                    Ok(()) => break,
                    Err(e) if attempt < BACKOFF.len() => {
                        tracing::warn!(error = %e, attempt, "alert webhook failed; retrying");
                        tokio::select! {
                            () = tokio::time::sleep(BACKOFF[attempt]) => {}
                            () = shutdown.cancelled() => return,
                        }
                        attempt += 1;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "alert webhook failed; giving up on this notification");
                        break;
                    }
                }
            }
        }
    });
    tx
}

async fn send(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    url: &str,
    body: &str,
) -> Result<(), String> {
    let request = hyper::Request::post(url)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| e.to_string())?;
    let response = tokio::time::timeout(ATTEMPT_TIMEOUT, client.request(request))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let _ = response.into_body().collect().await;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("receiver answered {status}"))
    }
}
