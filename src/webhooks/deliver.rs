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

use super::{
    DEAD_LETTERS, DELIVERIES, FIRST_BACKOFF, Format, LAG, MAX_BACKOFF, Status, Webhook, Webhooks,
};
use crate::domain::now_micros;
use crate::store::command::{AddDeadLetter, DeleteDeadLetters, SetWebhookCursor};
use crate::store::{DeadLetter, Store};

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
    /// The webhooks, not yet running (`start` runs them once the store is open). An event is
    /// given up on (a dead letter) after `max_attempts` failed attempts.
    pub fn new(hooks: Vec<Webhook>, max_attempts: u32) -> Arc<Webhooks> {
        Arc::new(Webhooks {
            hooks: hooks
                .into_iter()
                .map(|w| (w, Mutex::new(Status::default())))
                .collect(),
            wake: Notify::new(),
            max_attempts: max_attempts.max(1),
            poster: std::sync::OnceLock::new(),
        })
    }

    /// Posts a webhook's dead letter `seq` once more, now: `Ok(None)` when there is no such
    /// letter, `Ok(Some(Ok(())))` when the receiver took it (the letter is removed), and
    /// `Ok(Some(Err(why)))` when it failed again (the letter stays, its attempts counted).
    pub async fn retry(
        &self,
        store: &Store,
        index: usize,
        seq: u64,
    ) -> Result<Option<Result<(), String>>, crate::store::StoreError> {
        let (hook, status) = &self.hooks[index];
        let Some(poster) = self.poster.get() else {
            return Ok(Some(Err("webhooks are not running".into())));
        };
        let Some(mut letter) = store.dead_letter(&hook.name, seq)? else {
            return Ok(None);
        };
        let body = Bytes::from(match hook.format {
            Format::Json => letter.frame.clone().into_bytes(),
            Format::Slack => super::format::slack(&letter.frame, poster.public_url.as_deref()),
        });
        let signature = hook.secret.as_ref().map(|secret| sign(secret, &body));
        let outcome = post(
            &poster.client,
            hook,
            seq,
            &letter.event_type,
            body,
            signature.as_deref(),
        )
        .await;
        count(hook, status, &outcome);
        match outcome {
            Ok(()) => {
                store
                    .write(DeleteDeadLetters {
                        name: hook.name.clone(),
                        seqs: vec![seq],
                    })
                    .await?;
                set_dead_letters(store, hook);
                Ok(Some(Ok(())))
            }
            Err(failure) => {
                letter.attempts = letter.attempts.saturating_add(1);
                letter.error = failure.message.clone();
                letter.at = now_micros();
                store
                    .write(AddDeadLetter {
                        name: hook.name.clone(),
                        seq,
                        letter,
                        cursor: None,
                    })
                    .await?;
                Ok(Some(Err(failure.message)))
            }
        }
    }

    /// Failed attempts after which an event becomes a dead letter.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The name of the webhook at `index`.
    pub fn name(&self, index: usize) -> &str {
        &self.hooks[index].0.name
    }

    /// Sets the webhook's dead-letter gauge after a change made elsewhere (a discard).
    pub fn dead_letters_changed(&self, store: &Store, index: usize) {
        set_dead_letters(store, &self.hooks[index].0);
    }

    /// The index of the webhook of this name.
    pub fn find(&self, name: &str) -> Option<usize> {
        self.hooks.iter().position(|(w, _)| w.name == name)
    }
}

/// What posting needs, set once the webhooks start.
pub(crate) struct Poster {
    client: HttpsClient,
    public_url: Option<String>,
}

/// Sets the webhook's dead-letter gauge from the store.
fn set_dead_letters(store: &Store, hook: &Webhook) {
    if let Ok(letters) = store.dead_letters(&hook.name) {
        metrics::gauge!(DEAD_LETTERS, "webhook" => hook.name.clone()).set(letters.len() as f64);
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
    let _ = webhooks.poster.set(Poster {
        client: client.clone(),
        public_url: public_url.clone(),
    });
    for (index, (hook, _)) in webhooks.hooks.iter().enumerate() {
        set_dead_letters(store, hook);
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
                    Format::Json => frame.clone().into_bytes(),
                    Format::Slack => super::format::slack(&frame, public_url.as_deref()),
                };
                let outcome = deliver(
                    &client,
                    hook,
                    status,
                    webhooks.max_attempts,
                    seq,
                    &head.event_type,
                    body,
                    &shutdown,
                )
                .await;
                match outcome {
                    Delivery::Delivered => {}
                    Delivery::Stopped => {
                        // Shutting down with this event undelivered: posted after the restart.
                        store_cursor(&store, hook, cursor).await;
                        return;
                    }
                    Delivery::GaveUp { error, attempts } => {
                        // Kept as a dead letter, the cursor past it in the same commit; delivery
                        // goes on with the next event.
                        let letter = DeadLetter {
                            event_type: head.event_type.clone(),
                            frame: frame.clone(),
                            error,
                            attempts,
                            at: now_micros(),
                        };
                        if !dead_letter(&store, hook, seq, letter, &shutdown).await {
                            store_cursor(&store, hook, cursor).await;
                            return;
                        }
                        stored = seq;
                        stored_at = Instant::now();
                    }
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

/// How posting one event ended.
enum Delivery {
    /// The receiver took it.
    Delivered,
    /// Given up: a permanent refusal, or `max_attempts` failures.
    GaveUp { error: String, attempts: u32 },
    /// The server is stopping.
    Stopped,
}

/// Stores a dead letter (and the cursor past it), retrying a failed write each second until the
/// server stops (false).
async fn dead_letter(
    store: &Store,
    hook: &Webhook,
    seq: u64,
    letter: DeadLetter,
    shutdown: &CancellationToken,
) -> bool {
    tracing::warn!(webhook = %hook.name, seq, attempts = letter.attempts, error = %letter.error, "webhook delivery given up: the event is kept as a dead letter");
    loop {
        let command = AddDeadLetter {
            name: hook.name.clone(),
            seq,
            letter: letter.clone(),
            cursor: Some(seq),
        };
        match store.write(command).await {
            Ok(dropped) => {
                if dropped > 0 {
                    tracing::warn!(webhook = %hook.name, dropped, kept = crate::store::DEAD_LETTERS_KEPT, "the oldest dead letters were dropped");
                }
                set_dead_letters(store, hook);
                return true;
            }
            Err(e) => {
                tracing::warn!(webhook = %hook.name, seq, error = %e, "storing a dead letter failed; retrying");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(FIRST_BACKOFF) => {}
            () = shutdown.cancelled() => return false,
        }
    }
}

/// Counts an attempt's outcome in the metrics and the webhook's status.
fn count(hook: &Webhook, status: &Mutex<Status>, outcome: &Result<(), Failure>) {
    let result = if outcome.is_ok() {
        "delivered"
    } else {
        "failed"
    };
    metrics::counter!(DELIVERIES, "webhook" => hook.name.clone(), "result" => result).increment(1);
    let mut s = status.lock();
    match outcome {
        Ok(()) => {
            s.delivered += 1;
            s.last_delivered_at = Some(now_micros());
        }
        Err(f) => {
            s.failed += 1;
            s.last_error = Some(f.message.clone());
        }
    }
}

/// Posts one event until the receiver takes it, refuses it for good (a 4xx other than 408 and
/// 429), or has failed `max_attempts` times; or the server stops.
#[allow(clippy::too_many_arguments)]
async fn deliver(
    client: &HttpsClient,
    hook: &Webhook,
    status: &Mutex<Status>,
    max_attempts: u32,
    seq: u64,
    event_type: &str,
    body: Vec<u8>,
    shutdown: &CancellationToken,
) -> Delivery {
    let body = Bytes::from(body);
    let signature = hook.secret.as_ref().map(|secret| sign(secret, &body));
    let mut delay = FIRST_BACKOFF;
    let mut attempts = 0u32;
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
            () = shutdown.cancelled() => return Delivery::Stopped,
        };
        attempts += 1;
        count(hook, status, &outcome);
        match outcome {
            Ok(()) => {
                let mut s = status.lock();
                s.attempts = 0;
                s.next_attempt_at = None;
                return Delivery::Delivered;
            }
            Err(failure) => {
                if failure.permanent || attempts >= max_attempts {
                    let mut s = status.lock();
                    s.attempts = 0;
                    s.next_attempt_at = None;
                    return Delivery::GaveUp {
                        error: failure.message,
                        attempts,
                    };
                }
                {
                    let mut s = status.lock();
                    s.attempts = attempts;
                    s.next_attempt_at = Some(now_micros() + delay.as_micros() as i64);
                    if attempts == 1 || attempts.is_power_of_two() {
                        tracing::warn!(webhook = %hook.name, seq, attempts, error = %failure.message, retry_in = ?delay, "webhook delivery failed");
                    }
                }
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = shutdown.cancelled() => return Delivery::Stopped,
                }
                delay = (delay * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// A failed attempt: why, and whether the receiver refused the event for good.
struct Failure {
    message: String,
    permanent: bool,
}

impl Failure {
    fn transient(message: String) -> Failure {
        Failure {
            message,
            permanent: false,
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
) -> Result<(), Failure> {
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
    let request = request
        .body(Full::new(body))
        .map_err(|e| Failure::transient(e.to_string()))?;
    let response = tokio::time::timeout(ATTEMPT_TIMEOUT, client.request(request))
        .await
        .map_err(|_| {
            Failure::transient(format!("no answer within {} s", ATTEMPT_TIMEOUT.as_secs()))
        })?
        .map_err(|e| Failure::transient(format!("{e}: {}", source_chain(&e))))?;
    let status = response.status();
    let _ = Limited::new(response.into_body(), ANSWER_BYTES)
        .collect()
        .await;
    if status.is_success() {
        Ok(())
    } else {
        Err(Failure {
            message: format!("the receiver answered {status}"),
            permanent: permanent(status),
        })
    }
}

/// Whether a receiver's answer refuses the event for good: a 4xx other than 408 (timeout) and 429
/// (too many requests), which say to try again later.
fn permanent(status: hyper::StatusCode) -> bool {
    status.is_client_error()
        && status != hyper::StatusCode::REQUEST_TIMEOUT
        && status != hyper::StatusCode::TOO_MANY_REQUESTS
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
    fn only_a_4xx_but_408_and_429_refuses_for_good() {
        for (code, refused) in [
            (400, true),
            (404, true),
            (413, true),
            (408, false),
            (429, false),
            (500, false),
            (503, false),
            (301, false),
        ] {
            assert_eq!(
                permanent(hyper::StatusCode::from_u16(code).unwrap()),
                refused,
                "{code}"
            );
        }
    }

    #[test]
    fn signatures_are_hmac_sha256_in_hex() {
        // RFC 4231, test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
