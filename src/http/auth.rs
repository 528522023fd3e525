//! Optional API keys, each with roles, sent as `Authorization: Bearer …` (and, for WebSocket
//! upgrades, as `?token=`). Every key reads; a write needs the role its route names
//! (`router::Access`): `worker`, `reviewer`, `operator` or `admin`. `ro` is no role, `rw` every
//! role but `admin`. Compared in constant time; never logged. Probes stay open, and `/metrics` too
//! unless `protect_metrics` is set.

use crate::http::ErrorCode;
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::router::{Access as RouteAccess, Role, Route};

/// The roles of a key, as bits (`Role::bit`); none: it only reads.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Roles(u8);

impl Roles {
    /// `rw`: every role but `admin` (what a read-write key could do before roles).
    pub const READ_WRITE: Roles = Roles(0b0111);

    pub fn has(self, role: Role) -> bool {
        self.0 & role.bit() != 0
    }

    pub fn with(self, role: Role) -> Roles {
        Roles(self.0 | role.bit())
    }

    /// The role names, in `Role::ALL` order.
    pub fn names(self) -> Vec<&'static str> {
        Role::ALL
            .into_iter()
            .filter(|r| self.has(*r))
            .map(Role::as_str)
            .collect()
    }

    /// `ro`, `rw`, `read` or a comma-separated list of roles (`worker,reviewer`).
    fn parse(text: &str) -> Option<Roles> {
        match text {
            "ro" | "read" => return Some(Roles::default()),
            "rw" => return Some(Roles::READ_WRITE),
            _ => {}
        }
        let mut roles = Roles::default();
        for part in text.split(',') {
            roles = match part.trim() {
                "read" => roles,
                other => roles.with(Role::parse(other)?),
            };
        }
        Some(roles)
    }
}

/// One configured key: its secret, what it may do and the name its answers are recorded under.
#[derive(Clone)]
struct Key {
    secret: Vec<u8>,
    roles: Roles,
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
    pub roles: Roles,
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

/// Keys given as one comma-separated list (`--api-key a,b`, `FLIGHTDECK_API_KEYS`) come split at
/// every comma, roles lists included: `alice:worker,reviewer:SECRET` arrives as `alice:worker` and
/// `reviewer:SECRET`. A piece that is a name and roles without a secret is joined to the next.
fn rejoin(specs: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut open = false;
    for piece in specs {
        if open && let Some(last) = out.last_mut() {
            last.push(',');
            last.push_str(piece);
        } else {
            out.push(piece.clone());
        }
        open = out.last().is_some_and(|p| incomplete(p));
    }
    out
}

/// `NAME:ROLES` with nothing after: a key whose secret is missing (or the first piece of a roles
/// list split at its comma).
fn incomplete(piece: &str) -> bool {
    piece.split_once(':').is_some_and(|(name, roles)| {
        valid_name(name)
            && Roles::parse(name).is_none()
            && !roles.contains(':')
            && Roles::parse(roles).is_some()
    })
}

/// The name of a key given without one: `key-` and the first 8 hex digits of its secret's SHA-256,
/// so it stays the same when keys are added or reordered, and says nothing usable of the secret.
fn generated_name(secret: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(secret.as_bytes());
    let hex: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("key-{hex}")
}

/// The token of an `Authorization: Bearer …` header (trimmed), if it is one.
pub fn bearer(header: &str) -> Option<&str> {
    header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .map(str::trim)
}

impl ApiKeys {
    /// Parses each key: `NAME:ROLES:SECRET` (named) or `ROLES:SECRET` and `SECRET` (read-write),
    /// which get a generated name. ROLES is `ro` (read only), `rw` (every role but admin) or a
    /// comma-separated list of `read`, `worker`, `reviewer`, `operator`, `admin`. Names are 1–64 of
    /// `A-Z a-z 0-9 . _ -`, each used once; secrets at least 16 printable characters.
    pub fn parse(specs: &[String], protect_metrics: bool) -> Result<ApiKeys, String> {
        let mut keys: Vec<Key> = Vec::new();
        for spec in &rejoin(specs) {
            if incomplete(spec) {
                return Err(format!(
                    "API key {:?} has no secret (NAME:ROLES:SECRET)",
                    spec.split(':').next().unwrap_or("")
                ));
            }
            let (name, roles, secret) = if let Some((r, secret)) = spec.split_once(':')
                && let Some(roles) = Roles::parse(r)
            {
                (None, roles, secret)
            } else if let Some((name, rest)) = spec.split_once(':')
                && let Some((r, secret)) = rest.split_once(':')
                && (Roles::parse(r).is_some()
                    || (valid_name(name)
                        && !r.is_empty()
                        && r.bytes().all(|b| b.is_ascii_lowercase() || b == b',')))
            {
                let roles = Roles::parse(r).ok_or_else(|| {
                    format!(
                        "API key {name:?}: roles {r:?} must be ro, rw, or a comma-separated list of read, worker, reviewer, operator, admin"
                    )
                })?;
                if !valid_name(name) {
                    return Err(format!(
                        "API key name {name:?} must be 1 to {MAX_NAME_LEN} of A-Z a-z 0-9 . _ -"
                    ));
                }
                (Some(name.to_string()), roles, secret)
            } else {
                (None, Roles::READ_WRITE, spec.as_str())
            };
            if secret.len() < MIN_KEY_LEN || !secret.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!(
                    "an API key must be at least {MIN_KEY_LEN} printable characters (NAME:ROLES:SECRET, ROLES:SECRET or SECRET; ROLES: ro, rw or a list such as worker,reviewer)"
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
                roles,
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

    /// Whether a key of this name is configured.
    pub fn has_name(&self, name: &str) -> bool {
        self.keys.iter().any(|k| k.name == name)
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
        let token = authorization.and_then(bearer).or(if route.is_websocket() {
            query_token
        } else {
            None
        });
        let key = token.and_then(|t| self.key_of(t.trim().as_bytes()));
        let open = match route.access() {
            RouteAccess::Open => true,
            RouteAccess::Scrape => !self.protect_metrics,
            _ => false,
        };
        if open {
            return Ok(key.map(|k| Principal {
                name: k.name.clone(),
                roles: k.roles,
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
        let principal = Principal {
            name: key.name.clone(),
            roles: key.roles,
        };
        principal.may_call(route)?;
        Ok(Some(principal))
    }
}

impl Principal {
    /// 403 when the route needs a role this key lacks.
    pub fn may_call(&self, route: Route) -> Result<(), ApiError> {
        if let Some(role) = route.access().role()
            && !self.roles.has(role)
        {
            let held = self.roles.names();
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                format!(
                    "API key {:?} lacks the {} role this route needs (it holds: {})",
                    self.name,
                    role.as_str(),
                    if held.is_empty() {
                        "read only".to_string()
                    } else {
                        held.join(", ")
                    }
                ),
            ));
        }
        Ok(())
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
    fn roles_decide_every_write_and_survive_a_comma_separated_list() {
        // As `FLIGHTDECK_API_KEYS` or `--api-key a,b` hand them over: split at every comma.
        let given = "w:worker:worker-secret-0123,r:reviewer,worker:both-secret-01234,\
                     ops:operator:ops-secret-0123456,root:admin:root-secret-012345,\
                     legacy:rw:legacy-secret-0123,ro:reader-secret-0123,worker:anon-worker-0123";
        let specs: Vec<String> = given.split(',').map(|p| p.trim().to_string()).collect();
        let keys = ApiKeys::parse(&specs, false).unwrap();
        assert_eq!(keys.keys.len(), 7);
        let roles_of = |secret: &str| {
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
        assert_eq!(roles_of("both-secret-01234").name, "r");
        assert_eq!(
            roles_of("both-secret-01234").roles.names(),
            ["worker", "reviewer"]
        );
        assert_eq!(roles_of("anon-worker-0123").roles.names(), ["worker"]);
        assert_eq!(
            roles_of("legacy-secret-0123").roles.names(),
            ["worker", "reviewer", "operator"],
            "rw is every role but admin"
        );
        // Every route that writes needs exactly its row's role.
        for route in Route::ALL {
            for (secret, held) in [
                ("worker-secret-0123", vec![Role::Worker]),
                ("both-secret-01234", vec![Role::Worker, Role::Reviewer]),
                ("ops-secret-0123456", vec![Role::Operator]),
                ("root-secret-012345", vec![Role::Admin]),
                ("reader-secret-0123", vec![]),
                (
                    "legacy-secret-0123",
                    vec![Role::Worker, Role::Reviewer, Role::Operator],
                ),
            ] {
                let answer = keys.authorize(
                    *route,
                    Credentials {
                        header: Some(&format!("Bearer {secret}")),
                        query: None,
                    },
                );
                let allowed = route.access().role().is_none_or(|r| held.contains(&r));
                assert_eq!(answer.is_ok(), allowed, "{route:?} with {secret}");
                if let Err(e) = answer {
                    assert_eq!(e.code, ErrorCode::Forbidden);
                    let role = route.access().role().unwrap().as_str();
                    assert!(e.message.contains(role), "{}", e.message);
                }
            }
        }
        assert_eq!(Route::AdminBackup.access().role(), Some(Role::Admin));
        assert_eq!(Route::HitlRespond.access().role(), Some(Role::Reviewer));
        assert_eq!(Route::TaskClaim.access().role(), Some(Role::Worker));
        assert_eq!(Route::QueuePause.access().role(), Some(Role::Operator));
        assert_eq!(Route::ArtifactBatch.access().role(), None, "a read");
        // A misspelt role is an error, not a key with other powers.
        for bad in [
            "alice:wroker:secret-secret-0123",
            "alice:worker,x:secret-secret-0123",
        ] {
            assert!(ApiKeys::parse(&[bad.to_string()], false).is_err(), "{bad}");
        }
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
                roles: Roles::READ_WRITE
            }
        );
        assert_eq!(who("bots-secret-012345678").roles, Roles::default());
        // Unnamed keys: a name from their secret's hash, stable, saying nothing of the secret.
        let reader = who("old-reader-secret-01");
        assert_eq!(reader.roles, Roles::default());
        assert_eq!(reader.name, generated_name("old-reader-secret-01"));
        assert!(reader.name.starts_with("key-") && reader.name.len() == 12);
        // A bare secret may contain colons: it is not a name unless ro/rw follows.
        let writer = who("old-writer:secret-0123");
        assert_eq!(writer.roles, Roles::READ_WRITE);
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
