//! One task per webhook: read the log after the cursor, post what matches, retry until it is taken,
//! move the cursor on, store it now and then.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{DELIVERIES, FIRST_BACKOFF, Format, LAG, MAX_BACKOFF, Status, Webhook, Webhooks};
use crate::domain::now_micros;
use crate::store::Store;
use crate::store::command::SetWebhookCursor;

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Events read from the log at a time.
const PAGE: usize = 256;
/// How often a moving cursor is stored (and stored at shutdown).
const STORE_EVERY: Duration = Duration::from_secs(1);
/// Longest wait for a receiver's answer.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Most bytes of a receiver's answer read (the rest is dropped).
const ANSWER_BYTES: usize = 64 * 1024;

impl Webhooks {
    /// The webhooks, not yet running (`start` runs them once the store is open).
    pub fn new(hooks: Vec<Webhook>) -> Arc<Webhooks> {
        Arc::new(Webhooks {
            hooks: hooks
                .into_iter()
                .map(|w| (w, Mutex::new(Status::default())))
                .collect(),
            wake: Notify::new(),
        })
    }
}

/// Starts one delivery task per webhook on `tracker`; they stop with `shutdown`, storing their
/// cursors first.
pub fn start(
    webhooks: &Arc<Webhooks>,
    store: &Store,
    public_url: Option<String>,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) {
    // Described here, with the metrics recorder installed (the series exist from start-up).
    let hooks: Vec<Webhook> = webhooks.hooks.iter().map(|(w, _)| w.clone()).collect();
    super::describe_metrics(&hooks);
    if webhooks.is_empty() {
        return;
    }
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .build();
    let client: HttpsClient = Client::builder(TokioExecutor::new()).build(connector);
    for (index, (hook, _)) in webhooks.hooks.iter().enumerate() {
        // Where to start is settled now, before the server takes any request: the stored cursor,
        // or for a webhook seen for the first time the end of the log as it is now.
        let start = match store.webhook_cursor(&hook.name) {
            Ok(Some(seq)) => Some(Start::Stored(seq)),
            Ok(None) => Some(Start::New(store.latest_seq())),
            Err(e) => {
                tracing::warn!(webhook = %hook.name, error = %e, "reading the webhook's cursor failed; retrying");
                None
            }
        };
        tracker.spawn(run(
            webhooks.clone(),
            index,
            start,
            client.clone(),
            store.clone(),
            public_url.clone(),
            shutdown.clone(),
        ));
    }
}

/// Where a webhook's delivery starts.
#[derive(Clone, Copy)]
enum Start {
    /// After its stored cursor.
    Stored(u64),
    /// A new webhook: after the log's end when the server started (stored first thing).
    New(u64),
}

async fn run(
    webhooks: Arc<Webhooks>,
    index: usize,
    mut start: Option<Start>,
    client: HttpsClient,
    store: Store,
    public_url: Option<String>,
    shutdown: CancellationToken,
) {
    let (hook, status) = &webhooks.hooks[index];
    let mut cursor = loop {
        match start {
            Some(Start::Stored(seq)) => break seq,
            // Seen for the first time: from the end of the log, not its past.
            Some(Start::New(seq)) => {
                if store_cursor(&store, hook, seq).await {
                    break seq;
                }
            }
            None => {
                start = match store.webhook_cursor(&hook.name) {
                    Ok(Some(seq)) => Some(Start::Stored(seq)),
                    Ok(None) => Some(Start::New(store.latest_seq())),
                    Err(e) => {
                        tracing::warn!(webhook = %hook.name, error = %e, "reading the webhook's cursor failed");
                        None
                    }
                };
                if start.is_some() {
                    continue;
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(FIRST_BACKOFF) => {}
            () = shutdown.cancelled() => return,
        }
    };
    tracing::info!(webhook = %hook.name, url = %hook.shown_url(), cursor, "webhook delivering");
    status.lock().cursor = cursor;
    let mut stored = cursor;
    let mut stored_at = Instant::now();
    loop {
        // Registered before reading: a commit after the read wakes this task.
        let woken = webhooks.wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        metrics::gauge!(LAG, "webhook" => hook.name.clone())
            .set(store.latest_seq().saturating_sub(cursor) as f64);
        let page = match store.events(hook.project.as_ref(), cursor, PAGE) {
            Ok((page, _)) => page,
            Err(e) => {
                tracing::warn!(webhook = %hook.name, error = %e, "reading the event log failed");
                Vec::new()
            }
        };
        if page.is_empty() {
            if stored != cursor && store_cursor(&store, hook, cursor).await {
                stored = cursor;
                stored_at = Instant::now();
            }
            tokio::select! {
                () = &mut woken => {}
                () = tokio::time::sleep(STORE_EVERY) => {}
                () = shutdown.cancelled() => break,
            }
            continue;
        }
        if let Ok(oldest) = store.oldest_seq()
            && hook.project.is_none()
            && cursor.saturating_add(1) < oldest
        {
            tracing::warn!(webhook = %hook.name, cursor, oldest, "events were trimmed from the log before this webhook delivered them");
        }
        for (seq, frame) in page {
            let head: Head = serde_json::from_str(&frame).unwrap_or_default();
            if hook.wants(&head.event_type, head.project_id.as_deref()) {
                let body = match hook.format {
                    Format::Json => frame.into_bytes(),
                    Format::Slack => super::format::slack(&frame, public_url.as_deref()),
                };
                let delivered = deliver(
                    &client,
                    hook,
                    status,
                    seq,
                    &head.event_type,
                    body,
                    &shutdown,
                )
                .await;
                if !delivered {
                    // Shutting down with this event undelivered: it is posted after the restart.
                    store_cursor(&store, hook, cursor).await;
                    return;
                }
            }
            cursor = seq;
            status.lock().cursor = cursor;
            if stored_at.elapsed() >= STORE_EVERY && store_cursor(&store, hook, cursor).await {
                stored = cursor;
                stored_at = Instant::now();
            }
        }
        if shutdown.is_cancelled() {
            break;
        }
    }
    if stored != cursor {
        store_cursor(&store, hook, cursor).await;
    }
}

/// The fields of a frame a filter needs.
#[derive(serde::Deserialize, Default)]
struct Head {
    #[serde(default)]
    event_type: String,
    #[serde(default)]
    project_id: Option<String>,
}

async fn store_cursor(store: &Store, hook: &Webhook, seq: u64) -> bool {
    let command = SetWebhookCursor {
        name: hook.name.clone(),
        seq,
    };
    match store.write(command).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(webhook = %hook.name, error = %e, "storing the webhook's cursor failed; retrying later");
            false
        }
    }
}

/// Posts one event until the receiver takes it (true), or the server stops (false).
async fn deliver(
    client: &HttpsClient,
    hook: &Webhook,
    status: &Mutex<Status>,
    seq: u64,
    event_type: &str,
    body: Vec<u8>,
    shutdown: &CancellationToken,
) -> bool {
    let body = Bytes::from(body);
    let signature = hook.secret.as_ref().map(|secret| sign(secret, &body));
    let mut delay = FIRST_BACKOFF;
    loop {
        let attempt = post(
            client,
            hook,
            seq,
            event_type,
            body.clone(),
            signature.as_deref(),
        );
        let outcome = tokio::select! {
            outcome = attempt => outcome,
            () = shutdown.cancelled() => return false,
        };
        match outcome {
            Ok(()) => {
                metrics::counter!(DELIVERIES, "webhook" => hook.name.clone(), "result" => "delivered")
                    .increment(1);
                let mut s = status.lock();
                s.delivered += 1;
                s.attempts = 0;
                s.last_delivered_at = Some(now_micros());
                s.next_attempt_at = None;
                return true;
            }
            Err(e) => {
                metrics::counter!(DELIVERIES, "webhook" => hook.name.clone(), "result" => "failed")
                    .increment(1);
                {
                    let mut s = status.lock();
                    s.failed += 1;
                    s.attempts += 1;
                    s.next_attempt_at = Some(now_micros() + delay.as_micros() as i64);
                    if s.attempts == 1 || s.attempts.is_power_of_two() {
                        tracing::warn!(webhook = %hook.name, seq, attempts = s.attempts, error = %e, retry_in = ?delay, "webhook delivery failed");
                    }
                    s.last_error = Some(e);
                }
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = shutdown.cancelled() => return false,
                }
                delay = (delay * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// `sha256=` and the hex HMAC-SHA256 of `body` keyed with `secret`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    use hmac::Mac;
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

async fn post(
    client: &HttpsClient,
    hook: &Webhook,
    seq: u64,
    event_type: &str,
    body: Bytes,
    signature: Option<&str>,
) -> Result<(), String> {
    let mut request = hyper::Request::post(hook.url.clone())
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(
            hyper::header::USER_AGENT,
            concat!("flightdeck/", env!("CARGO_PKG_VERSION")),
        )
        .header("x-flightdeck-event", event_type)
        .header("x-flightdeck-seq", seq.to_string())
        .header("x-flightdeck-webhook", hook.name.as_str());
    if let Some(signature) = signature {
        request = request.header("x-flightdeck-signature", signature);
    }
    let request = request.body(Full::new(body)).map_err(|e| e.to_string())?;
    let response = tokio::time::timeout(ATTEMPT_TIMEOUT, client.request(request))
        .await
        .map_err(|_| format!("no answer within {} s", ATTEMPT_TIMEOUT.as_secs()))?
        .map_err(|e| format!("{e}: {}", source_chain(&e)))?;
    let status = response.status();
    let _ = Limited::new(response.into_body(), ANSWER_BYTES)
        .collect()
        .await;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("the receiver answered {status}"))
    }
}

/// The causes of an error, joined (hyper's client errors say little at the top).
fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = Vec::new();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push(c.to_string());
        cause = c.source();
    }
    out.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256_in_hex() {
        // RFC 4231, test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
