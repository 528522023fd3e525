//! Optional API keys, each read-only or read-write, sent as `Authorization: Bearer …` (and, for
//! WebSocket upgrades, as `?token=`). Compared in constant time; never logged. Probes stay open,
//! and `/metrics` too unless `protect_metrics` is set.

use crate::http::ErrorCode;
use subtle::ConstantTimeEq;

use super::Method;
use super::error::ApiError;
use super::router::Route;

/// What a key may do.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Access {
    ReadOnly,
    ReadWrite,
}

/// The configured keys; none means the API is open.
#[derive(Clone, Default)]
pub struct ApiKeys {
    keys: Vec<(Vec<u8>, Access)>,
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

impl ApiKeys {
    /// Parses `ro:SECRET`, `rw:SECRET` or `SECRET` (read-write).
    pub fn parse(specs: &[String], protect_metrics: bool) -> Result<ApiKeys, String> {
        let mut keys = Vec::new();
        for spec in specs {
            let (access, secret) = match spec.split_once(':') {
                Some(("ro", s)) => (Access::ReadOnly, s),
                Some(("rw", s)) => (Access::ReadWrite, s),
                _ => (Access::ReadWrite, spec.as_str()),
            };
            if secret.len() < MIN_KEY_LEN || !secret.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!(
                    "an API key must be at least {MIN_KEY_LEN} printable characters (optionally prefixed ro: or rw:)"
                ));
            }
            keys.push((secret.as_bytes().to_vec(), access));
        }
        Ok(ApiKeys {
            keys,
            protect_metrics,
        })
    }

    pub fn enabled(&self) -> bool {
        !self.keys.is_empty()
    }

    /// The access of a presented secret: every key is compared, in constant time per key.
    fn access_of(&self, presented: &[u8]) -> Option<Access> {
        let mut found = None;
        for (secret, access) in &self.keys {
            if bool::from(secret.as_slice().ct_eq(presented)) {
                found = Some(*access);
            }
        }
        found
    }

    /// 401 without a known key, 403 for a read-only key on a write; open routes pass.
    pub fn authorize(
        &self,
        route: Route,
        method: &Method,
        authorization: Option<&str>,
        query_token: Option<&str>,
    ) -> Result<(), ApiError> {
        if !self.enabled() || route.is_probe() || (route == Route::Metrics && !self.protect_metrics)
        {
            return Ok(());
        }
        let bearer = authorization.and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        });
        let token = bearer.or(if route.is_websocket() {
            query_token
        } else {
            None
        });
        let Some(access) = token.and_then(|t| self.access_of(t.trim().as_bytes())) else {
            return Err(ApiError {
                www_authenticate: true,
                ..ApiError::new(
                    ErrorCode::Unauthorized,
                    "a valid API key is required: Authorization: Bearer <key>",
                )
            });
        };
        let writes = !(method == Method::GET || method == Method::HEAD);
        if writes && access == Access::ReadOnly {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                "this API key is read-only",
            ));
        }
        Ok(())
    }
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
        let ok = |route, method: Method, auth: Option<&str>| {
            keys.authorize(route, &method, auth, None)
                .map_err(|e| e.status.as_u16())
        };
        assert_eq!(ok(Route::ProjectsList, Method::GET, None), Err(401));
        assert_eq!(
            ok(
                Route::ProjectsList,
                Method::GET,
                Some("Bearer nope-nope-nope-nope")
            ),
            Err(401)
        );
        assert_eq!(
            ok(
                Route::ProjectsList,
                Method::GET,
                Some("Bearer reader-secret-0123")
            ),
            Ok(())
        );
        assert_eq!(
            ok(
                Route::ProjectsCreate,
                Method::POST,
                Some("Bearer reader-secret-0123")
            ),
            Err(403)
        );
        assert_eq!(
            ok(
                Route::ProjectsCreate,
                Method::POST,
                Some("Bearer writer-secret-01234")
            ),
            Ok(())
        );
        assert_eq!(ok(Route::Readyz, Method::GET, None), Ok(()));
        assert_eq!(ok(Route::Metrics, Method::GET, None), Ok(()));
        assert!(
            keys.authorize(Route::WsAll, &Method::GET, None, Some("reader-secret-0123"))
                .is_ok()
        );
        assert!(
            keys.authorize(
                Route::ProjectsList,
                &Method::GET,
                None,
                Some("reader-secret-0123")
            )
            .is_err(),
            "?token= is for WebSockets"
        );
        assert!(ApiKeys::parse(&["short".into()], false).is_err());
        let locked = ApiKeys::parse(&["writer-secret-01234".into()], true).unwrap();
        assert!(
            locked
                .authorize(Route::Metrics, &Method::GET, None, None)
                .is_err()
        );
        assert!(!format!("{locked:?}").contains("writer-secret"));
    }
}
