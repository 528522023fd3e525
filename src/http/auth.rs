//! Optional API keys, each read-only or read-write, sent as `Authorization: Bearer …` (and, for
//! WebSocket upgrades, as `?token=`). Compared in constant time; never logged. Probes stay open,
//! and `/metrics` too unless `protect_metrics` is set.

use crate::http::ErrorCode;
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::router::{Access as RouteAccess, Route};

/// What a key may do.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Access {
    ReadOnly,
    ReadWrite,
}

/// One configured key: its secret, what it may do and the name its answers are recorded under.
#[derive(Clone)]
struct Key {
    secret: Vec<u8>,
    access: Access,
    name: String,
}

/// What a request offers as its key: the `Authorization` header, and the `token` query parameter
/// (taken for WebSocket upgrades only: browsers cannot set headers on them).
#[derive(Copy, Clone, Debug, Default)]
pub struct Credentials<'a> {
    pub header: Option<&'a str>,
    pub query: Option<&'a str>,
}

/// Who a request comes from: the name of the key it presented and what that key may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub access: Access,
}

/// The configured keys; none means the API is open.
#[derive(Clone, Default)]
pub struct ApiKeys {
    keys: Vec<Key>,
    pub protect_metrics: bool,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secrets themselves are never printed.
        f.debug_struct("ApiKeys")
            .field("keys", &self.keys.len())
            .field("protect_metrics", &self.protect_metrics)
            .finish()
    }
}

/// Shortest secret accepted.
pub const MIN_KEY_LEN: usize = 16;
/// Longest key name.
pub const MAX_NAME_LEN: usize = 64;

/// A key name: 1 to 64 of `A-Z a-z 0-9 . _ -`.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The name of a key given without one: `key-` and the first 8 hex digits of its secret's SHA-256,
/// so it stays the same when keys are added or reordered, and says nothing usable of the secret.
fn generated_name(secret: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(secret.as_bytes());
    let hex: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("key-{hex}")
}

impl ApiKeys {
    /// Parses each key: `NAME:ro:SECRET` or `NAME:rw:SECRET` (named), or without a name
    /// `ro:SECRET`, `rw:SECRET` or `SECRET` (read-write), which get a generated name. Names are
    /// 1–64 of `A-Z a-z 0-9 . _ -`, each used once; secrets at least 16 printable characters.
    pub fn parse(specs: &[String], protect_metrics: bool) -> Result<ApiKeys, String> {
        let mut keys: Vec<Key> = Vec::new();
        for spec in specs {
            let access_of = |a: &str| match a {
                "ro" => Some(Access::ReadOnly),
                "rw" => Some(Access::ReadWrite),
                _ => None,
            };
            let (name, access, secret) = if let Some((a, secret)) = spec.split_once(':')
                && let Some(access) = access_of(a)
            {
                (None, access, secret)
            } else if let Some((name, rest)) = spec.split_once(':')
                && let Some((a, secret)) = rest.split_once(':')
                && let Some(access) = access_of(a)
            {
                if !valid_name(name) {
                    return Err(format!(
                        "API key name {name:?} must be 1 to {MAX_NAME_LEN} of A-Z a-z 0-9 . _ -"
                    ));
                }
                (Some(name.to_string()), access, secret)
            } else {
                (None, Access::ReadWrite, spec.as_str())
            };
            if secret.len() < MIN_KEY_LEN || !secret.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!(
                    "an API key must be at least {MIN_KEY_LEN} printable characters (NAME:ro:SECRET, NAME:rw:SECRET, ro:SECRET, rw:SECRET or SECRET)"
                ));
            }
            let name = name.unwrap_or_else(|| generated_name(secret));
            if keys.iter().any(|k| k.name == name) {
                return Err(format!("API key name {name:?} is used twice"));
            }
            if keys.iter().any(|k| k.secret == secret.as_bytes()) {
                return Err(format!("API key {name:?} repeats another key's secret"));
            }
            keys.push(Key {
                secret: secret.as_bytes().to_vec(),
                access,
                name,
            });
        }
        Ok(ApiKeys {
            keys,
            protect_metrics,
        })
    }

    pub fn enabled(&self) -> bool {
        !self.keys.is_empty()
    }

    /// The key a presented secret is: every key is compared, in constant time per key.
    fn key_of(&self, presented: &[u8]) -> Option<&Key> {
        let mut found = None;
        for key in &self.keys {
            if bool::from(key.secret.as_slice().ct_eq(presented)) {
                found = Some(key);
            }
        }
        found
    }

    /// 401 without a known key, 403 for a read-only key on a write; open routes pass. Answers
    /// who the request comes from: the key's name and access, or None when keys are off (or for
    /// an open route asked without one).
    pub fn authorize(
        &self,
        route: Route,
        credentials: Credentials<'_>,
    ) -> Result<Option<Principal>, ApiError> {
        if !self.enabled() {
            return Ok(None);
        }
        let Credentials {
            header: authorization,
            query: query_token,
        } = credentials;
        let bearer = authorization.and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        });
        let token = bearer.or(if route.is_websocket() {
            query_token
        } else {
            None
        });
        let key = token.and_then(|t| self.key_of(t.trim().as_bytes()));
        let open = match route.access() {
            RouteAccess::Open => true,
            RouteAccess::Scrape => !self.protect_metrics,
            RouteAccess::Read | RouteAccess::Write => false,
        };
        if open {
            return Ok(key.map(|k| Principal {
                name: k.name.clone(),
                access: k.access,
            }));
        }
        let Some(key) = key else {
            return Err(ApiError {
                www_authenticate: true,
                ..ApiError::new(
                    ErrorCode::Unauthorized,
                    "a valid API key is required: Authorization: Bearer <key>",
                )
            });
        };
        if route.access() == RouteAccess::Write && key.access == Access::ReadOnly {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                format!("API key {:?} is read-only", key.name),
            ));
        }
        Ok(Some(Principal {
            name: key.name.clone(),
            access: key.access,
        }))
    }
}

/// Failed key attempts (a key presented that is none of the configured ones), per source address:
/// counted (`flightdeck_auth_failures_total`), logged at most once per `LOG_EVERY`, and from an
/// address that failed `SLOW_AFTER` times within `WINDOW`, answered only after `SLOW_DOWN`, so
/// guessing costs a second a try per connection. A key that works is never slowed. The table of
/// addresses is bounded (`MAX_SOURCES`; when full it starts afresh).
pub struct Failures {
    inner: parking_lot::Mutex<FailureTable>,
}

#[derive(Default)]
struct FailureTable {
    /// Per address: failures in the current window, and when it began.
    sources: std::collections::HashMap<std::net::IpAddr, (u32, std::time::Instant)>,
    /// Failures since the last log line, and when that was.
    unlogged: u64,
    logged_at: Option<std::time::Instant>,
}

/// Failed attempts counted.
pub const AUTH_FAILURES: &str = "flightdeck_auth_failures_total";
const WINDOW: std::time::Duration = std::time::Duration::from_secs(60);
const SLOW_AFTER: u32 = 10;
const SLOW_DOWN: std::time::Duration = std::time::Duration::from_secs(1);
const LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(10);
const MAX_SOURCES: usize = 10_000;

impl Default for Failures {
    fn default() -> Failures {
        Failures {
            inner: parking_lot::Mutex::new(FailureTable::default()),
        }
    }
}

impl Failures {
    /// Records a failed attempt from `source`; answers how long to hold its 401 back.
    pub fn record(&self, source: Option<std::net::IpAddr>) -> Option<std::time::Duration> {
        metrics::counter!(AUTH_FAILURES).increment(1);
        let now = std::time::Instant::now();
        let mut table = self.inner.lock();
        table.unlogged += 1;
        if table
            .logged_at
            .is_none_or(|at| now.duration_since(at) >= LOG_EVERY)
        {
            let source = source.map_or_else(|| "unknown".to_string(), |s| s.to_string());
            tracing::warn!(failures = table.unlogged, latest_from = %source, "API keys that are not this server's were presented");
            table.unlogged = 0;
            table.logged_at = Some(now);
        }
        let source = source?;
        if table.sources.len() >= MAX_SOURCES && !table.sources.contains_key(&source) {
            table.sources.clear();
        }
        let entry = table.sources.entry(source).or_insert((0, now));
        if now.duration_since(entry.1) >= WINDOW {
            *entry = (0, now);
        }
        entry.0 = entry.0.saturating_add(1);
        (entry.0 > SLOW_AFTER).then_some(SLOW_DOWN)
    }
}

/// Describes the counter, which exists from start-up.
pub fn describe_metrics() {
    metrics::describe_counter!(
        AUTH_FAILURES,
        "Requests that presented an API key this server does not have."
    );
    metrics::counter!(AUTH_FAILURES).increment(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_and_authorize() {
        let keys = ApiKeys::parse(
            &["ro:reader-secret-0123".into(), "writer-secret-01234".into()],
            false,
        )
        .unwrap();
        let ok = |route, auth: Option<&str>| {
            keys.authorize(
                route,
                Credentials {
                    header: auth,
                    query: None,
                },
            )
            .map(|_| ())
            .map_err(|e| e.status.as_u16())
        };
        assert_eq!(ok(Route::ProjectsList, None), Err(401));
        assert_eq!(
            ok(Route::ProjectsList, Some("Bearer nope-nope-nope-nope")),
            Err(401)
        );
        assert_eq!(
            ok(Route::ProjectsList, Some("Bearer reader-secret-0123")),
            Ok(())
        );
        assert_eq!(
            ok(Route::ProjectsCreate, Some("Bearer reader-secret-0123")),
            Err(403)
        );
        assert_eq!(
            ok(Route::ProjectsCreate, Some("Bearer writer-secret-01234")),
            Ok(())
        );
        assert_eq!(ok(Route::Readyz, None), Ok(()));
        assert_eq!(ok(Route::Metrics, None), Ok(()));
        assert!(
            keys.authorize(
                Route::WsAll,
                Credentials {
                    header: None,
                    query: Some("reader-secret-0123")
                }
            )
            .is_ok()
        );
        assert!(
            keys.authorize(
                Route::ProjectsList,
                Credentials {
                    header: None,
                    query: Some("reader-secret-0123")
                }
            )
            .is_err(),
            "?token= is for WebSockets"
        );
        assert!(ApiKeys::parse(&["short".into()], false).is_err());
        let locked = ApiKeys::parse(&["writer-secret-01234".into()], true).unwrap();
        assert!(
            locked
                .authorize(
                    Route::Metrics,
                    Credentials {
                        header: None,
                        query: None
                    }
                )
                .is_err()
        );
        assert!(!format!("{locked:?}").contains("writer-secret"));
    }

    #[test]
    fn keys_have_names_given_or_generated() {
        let keys = ApiKeys::parse(
            &[
                "alice:rw:alice-secret-0123456".into(),
                "bots:ro:bots-secret-012345678".into(),
                "ro:old-reader-secret-01".into(),
                "old-writer:secret-0123".into(),
            ],
            false,
        )
        .unwrap();
        let who = |secret: &str| {
            keys.authorize(
                Route::ProjectsList,
                Credentials {
                    header: Some(&format!("Bearer {secret}")),
                    query: None,
                },
            )
            .unwrap()
            .unwrap()
        };
        assert_eq!(
            who("alice-secret-0123456"),
            Principal {
                name: "alice".into(),
                access: Access::ReadWrite
            }
        );
        assert_eq!(who("bots-secret-012345678").access, Access::ReadOnly);
        // Unnamed keys: a name from their secret's hash, stable, saying nothing of the secret.
        let reader = who("old-reader-secret-01");
        assert_eq!(reader.access, Access::ReadOnly);
        assert_eq!(reader.name, generated_name("old-reader-secret-01"));
        assert!(reader.name.starts_with("key-") && reader.name.len() == 12);
        // A bare secret may contain colons: it is not a name unless ro/rw follows.
        let writer = who("old-writer:secret-0123");
        assert_eq!(writer.access, Access::ReadWrite);
        assert_ne!(writer.name, reader.name);
        // An open route answers who asked, when a key came with it; nobody otherwise.
        assert_eq!(
            keys.authorize(
                Route::Livez,
                Credentials {
                    header: None,
                    query: None
                }
            )
            .unwrap(),
            None
        );
        let forbidden = keys
            .authorize(
                Route::ProjectsCreate,
                Credentials {
                    header: Some("Bearer bots-secret-012345678"),
                    query: None,
                },
            )
            .unwrap_err();
        assert!(forbidden.message.contains("bots"), "{}", forbidden.message);
        for bad in [
            vec!["a b:rw:secret-secret-0123".to_string()],
            vec!["x:rw:short".into()],
            vec![
                "same:rw:secret-secret-0123".into(),
                "same:ro:secret-secret-4567".into(),
            ],
            vec![
                "a:rw:secret-secret-0123".into(),
                "b:ro:secret-secret-0123".into(),
            ],
        ] {
            assert!(ApiKeys::parse(&bad, false).is_err(), "{bad:?}");
        }
        assert!(
            ApiKeys::parse(&[], false)
                .unwrap()
                .authorize(
                    Route::ProjectsCreate,
                    Credentials {
                        header: None,
                        query: None
                    }
                )
                .unwrap()
                .is_none()
        );
    }
}
