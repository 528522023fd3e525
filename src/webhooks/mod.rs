//! Webhooks: each configured `[[webhooks]]` entry is a durable consumer of the event log. Its own
//! task reads the log after its stored cursor (woken after every commit, never in the writer's
//! way), posts each matching event — the event frame as JSON, or a Slack-compatible message — one
//! at a time and in seq order, and retries a failed delivery with exponential backoff (1 s
//! doubling, at most an hour between attempts) until the receiver takes it. The cursor (the seq of
//! the last event handled) is stored through the writer at most every second and at shutdown, so
//! delivery is at least once: after a crash the events since the last stored cursor are posted
//! again. A webhook seen for the first time starts at the end of the log (it is not sent the past).
//!
//! A body may be signed: `X-Flightdeck-Signature: sha256=<hex HMAC-SHA256 of the body>` with the
//! webhook's `secret`. Every post also carries `X-Flightdeck-Event`, `X-Flightdeck-Seq` (the
//! receiver's idempotency key) and `X-Flightdeck-Webhook`.
//!
//! An event the receiver refuses for good (a 4xx other than 408 and 429) or that failed
//! `--webhook-max-attempts` times is kept as a dead letter (`store` table `webhook_dead_letters`,
//! the cursor moved past it in the same commit) and delivery goes on with the next one. Dead
//! letters are listed by `GET /api/v1/monitoring/webhooks`, posted again by `POST
//! …/webhooks/{name}/retry` or dropped by `…/discard`, and raise the `WebhookDeadLetters` alert.

mod deliver;
pub mod format;

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::domain::{EventType, Id, Micros, Vocabulary};

pub use deliver::start;

/// Deliveries (by result), how far each webhook is behind the log, its dead letters.
pub const DELIVERIES: &str = "flightdeck_webhook_deliveries_total";
pub const LAG: &str = "flightdeck_webhook_lag_events";
/// Events each webhook gave up on, kept until retried or discarded.
pub const DEAD_LETTERS: &str = "flightdeck_webhook_dead_letters";

/// The longest wait between two attempts of one delivery.
pub const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// The wait after a first failed attempt; doubled after each further one.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// What the body of a post is.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// The event frame, as WebSocket clients and `GET /api/v1/events` see it.
    #[default]
    Json,
    /// `{"text": …}` for a Slack-compatible incoming webhook, with a link into the console.
    Slack,
}

/// One `[[webhooks]]` entry of the config file, as written.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Names the webhook's stored cursor and metrics; default `webhook-` and 8 hex digits of the
    /// URL's SHA-256 (the URL of an incoming webhook is a secret: it is never shown).
    #[serde(default)]
    pub name: Option<String>,
    pub url: String,
    /// Event types to post (a list, or one comma-separated string), or `"*"` for all. Required.
    #[serde(default, deserialize_with = "crate::config::lists::list_or_text")]
    pub events: Vec<String>,
    /// Only this project's events.
    #[serde(default)]
    pub project_id: Option<String>,
    /// Signs each body (HMAC-SHA256) in `X-Flightdeck-Signature`.
    #[serde(default)]
    pub secret: Option<String>,
    #[serde(default)]
    pub format: Format,
}

/// A validated webhook.
#[derive(Clone, Debug, PartialEq)]
pub struct Webhook {
    pub name: String,
    pub url: hyper::Uri,
    /// None: every event.
    pub events: Option<Vec<EventType>>,
    pub project: Option<Id>,
    pub secret: Option<Vec<u8>>,
    pub format: Format,
}

impl Webhook {
    /// Checks an entry: an http(s) URL, known event types (and not `task_progress`, which is not
    /// logged), a project id that is a UUID, a name that is a name.
    pub fn parse(c: &WebhookConfig) -> Result<Webhook, String> {
        let url: hyper::Uri = c
            .url
            .parse()
            .map_err(|e| format!("webhooks: url {:?}: {e}", redact(&c.url)))?;
        if !matches!(url.scheme_str(), Some("http" | "https")) || url.host().is_none() {
            return Err(format!(
                "webhooks: url {} must be an http:// or https:// URL",
                redact(&c.url)
            ));
        }
        let name = match &c.name {
            Some(n) => n.clone(),
            None => {
                use sha2::Digest;
                let digest = sha2::Sha256::digest(c.url.as_bytes());
                let hex: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
                format!("webhook-{hex}")
            }
        };
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !valid {
            return Err(format!(
                "webhooks: name {name:?} must be 1 to 64 of A-Z a-z 0-9 . _ -"
            ));
        }
        if c.events.is_empty() {
            return Err(format!(
                "webhooks: {name}: events is required (event types, or \"*\" for all)"
            ));
        }
        let events = if c.events.iter().any(|e| e == "*") {
            None
        } else {
            let mut types = Vec::new();
            for e in &c.events {
                if e == "task_progress" {
                    return Err(format!(
                        "webhooks: {name}: task_progress is ephemeral (not in the log) and cannot be delivered"
                    ));
                }
                let t = EventType::parse(e)
                    .ok_or_else(|| format!("webhooks: {name}: {e:?} is not an event type"))?;
                types.push(t);
            }
            Some(types)
        };
        let project = match &c.project_id {
            Some(p) => Some(
                Id::parse(p)
                    .ok_or_else(|| format!("webhooks: {name}: project_id {p:?} is not a UUID"))?,
            ),
            None => None,
        };
        if c.secret.as_deref().is_some_and(str::is_empty) {
            return Err(format!("webhooks: {name}: secret is empty"));
        }
        Ok(Webhook {
            name,
            url,
            events,
            project,
            secret: c.secret.as_ref().map(|s| s.as_bytes().to_vec()),
            format: c.format,
        })
    }

    /// Whether an event of this type and project goes to this webhook.
    pub fn wants(&self, event_type: &str, project: Option<&str>) -> bool {
        let type_ok = match &self.events {
            None => true,
            Some(types) => types.iter().any(|t| t.as_str() == event_type),
        };
        let project_ok = match self.project {
            None => true,
            Some(p) => project == Some(p.to_string().as_str()),
        };
        type_ok && project_ok
    }

    /// The URL without its path and query (an incoming webhook's path is its secret).
    pub fn shown_url(&self) -> String {
        redact(&self.url.to_string())
    }
}

/// `scheme://host[:port]/…` of a URL.
fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let host = rest.split(['/', '?']).next().unwrap_or("");
            // Credentials in the authority are a secret too.
            let host = host.rsplit('@').next().unwrap_or(host);
            format!("{scheme}://{host}/…")
        }
        None => "…".into(),
    }
}

/// What a webhook has done, for the monitoring API.
#[derive(Clone, Debug, Default)]
pub struct Status {
    /// The seq of the last event handled.
    pub cursor: u64,
    pub delivered: u64,
    pub failed: u64,
    /// Failed attempts of the event being delivered now.
    pub attempts: u32,
    pub last_error: Option<String>,
    pub last_delivered_at: Option<Micros>,
    pub next_attempt_at: Option<Micros>,
}

/// The running webhooks: their status, and the signal the publisher gives after each commit.
pub struct Webhooks {
    pub(crate) hooks: Vec<(Webhook, Mutex<Status>)>,
    pub(crate) wake: Notify,
    /// Failed attempts after which an event becomes a dead letter.
    pub(crate) max_attempts: u32,
    /// The HTTP client and the console's URL, once started.
    pub(crate) poster: std::sync::OnceLock<deliver::Poster>,
}

impl Webhooks {
    /// Wakes every webhook's task: something was committed (the publisher calls this).
    pub fn committed(&self) {
        self.wake.notify_waiters();
    }

    pub fn is_empty(&self) -> bool {
        self.hooks.is_empty()
    }

    /// Each webhook with its status, for `GET /api/v1/monitoring/webhooks`.
    pub fn statuses(&self) -> Vec<(Webhook, Status)> {
        self.hooks
            .iter()
            .map(|(w, s)| (w.clone(), s.lock().clone()))
            .collect()
    }
}

/// Describes the webhook metrics and creates each webhook's series.
pub fn describe_metrics(hooks: &[Webhook]) {
    metrics::describe_counter!(
        DELIVERIES,
        "Webhook posts, by webhook and result (delivered: the receiver answered 2xx; failed: an error or another status, retried)."
    );
    metrics::describe_gauge!(
        LAG,
        "Events in the log after the webhook's cursor (not yet handled)."
    );
    metrics::describe_gauge!(
        DEAD_LETTERS,
        "Events the webhook gave up on (a permanent refusal, or --webhook-max-attempts failures), kept until retried or discarded."
    );
    for w in hooks {
        for result in ["delivered", "failed"] {
            metrics::counter!(DELIVERIES, "webhook" => w.name.clone(), "result" => result)
                .absolute(0);
        }
        metrics::gauge!(LAG, "webhook" => w.name.clone()).set(0.0);
        metrics::gauge!(DEAD_LETTERS, "webhook" => w.name.clone()).set(0.0);
    }
}

/// Shared by the server and the delivery tasks.
pub type Shared = Arc<Webhooks>;

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str, events: &[&str]) -> WebhookConfig {
        WebhookConfig {
            url: url.into(),
            events: events.iter().map(|e| e.to_string()).collect(),
            ..WebhookConfig::default()
        }
    }

    #[test]
    fn entries_are_checked_and_named() {
        let w = Webhook::parse(&config("https://hooks.example/T0/B0/secretpath", &["*"])).unwrap();
        assert!(w.events.is_none());
        assert!(w.name.starts_with("webhook-") && w.name.len() == 16);
        assert_eq!(w.shown_url(), "https://hooks.example/…");
        assert!(!format!("{w:?}").is_empty());
        let named = Webhook::parse(&WebhookConfig {
            name: Some("ops".into()),
            project_id: Some("0190b5c2-0000-7000-8000-000000000000".into()),
            ..config("http://127.0.0.1:9/x", &["task_created", "hitl_response"])
        })
        .unwrap();
        assert_eq!(named.name, "ops");
        assert!(named.wants("task_created", Some("0190b5c2-0000-7000-8000-000000000000")));
        assert!(!named.wants("task_created", Some("0190b5c2-0000-7000-8000-000000000001")));
        assert!(!named.wants("task_created", None));
        assert!(!named.wants("task_started", Some("0190b5c2-0000-7000-8000-000000000000")));
        for bad in [
            config("ftp://x/", &["*"]),
            config("not a url", &["*"]),
            config("http://x/", &[]),
            config("http://x/", &["no_such_event"]),
            config("http://x/", &["task_progress"]),
            WebhookConfig {
                project_id: Some("nope".into()),
                ..config("http://x/", &["*"])
            },
            WebhookConfig {
                name: Some("a b".into()),
                ..config("http://x/", &["*"])
            },
            WebhookConfig {
                secret: Some(String::new()),
                ..config("http://x/", &["*"])
            },
        ] {
            let e = Webhook::parse(&bad).unwrap_err();
            assert!(!e.contains("secretpath"), "{e}");
        }
        assert_eq!(
            redact("https://user:pw@h.example:8443/a?b"),
            "https://h.example:8443/…"
        );
    }
}
