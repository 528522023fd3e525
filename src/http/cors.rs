//! Cross-origin requests from browsers (CORS): which origins may call the API, the answer to a
//! preflight, and the headers every answer to an allowed origin carries. With no origins
//! configured, nothing here adds a header: pages on other origins cannot read the API.

use hyper::header::{self, HeaderValue};

use super::Response;

/// Request headers a page may send (the preflight's `Access-Control-Allow-Headers`).
const ALLOW_HEADERS: &str = "authorization, content-type, x-request-id, idempotency-key";
/// Response headers a page may read beyond the safelisted ones.
const EXPOSE_HEADERS: &str = "x-next-cursor, x-request-id, server-timing, retry-after";
/// How long a browser may reuse a preflight's answer, in seconds.
const MAX_AGE: &str = "600";

/// The origins allowed to call the API from a browser.
#[derive(Clone, Debug, Default)]
pub struct Cors {
    /// `*`: every origin.
    any: bool,
    /// Exact origins (`scheme://host[:port]`), lower-case.
    origins: Vec<String>,
}

impl Cors {
    /// Parses the setting: origins such as `http://localhost:3000`, or `*`.
    pub fn parse(entries: &[String]) -> Result<Cors, String> {
        let mut cors = Cors::default();
        for entry in entries.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
            if entry == "*" {
                cors.any = true;
                continue;
            }
            let origin = entry.trim_end_matches('/').to_ascii_lowercase();
            let rest = origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"));
            match rest {
                Some(host) if !host.is_empty() && !host.contains('/') => cors.origins.push(origin),
                _ => {
                    return Err(format!(
                        "cors_origins: `{entry}` is not an origin (scheme://host[:port]) or *"
                    ));
                }
            }
        }
        Ok(cors)
    }

    /// Whether any origin is allowed at all.
    pub fn enabled(&self) -> bool {
        self.any || !self.origins.is_empty()
    }

    /// Whether a request's `Origin` may use the API.
    pub fn allows(&self, origin: &str) -> bool {
        self.any
            || self
                .origins
                .iter()
                .any(|o| o.eq_ignore_ascii_case(origin.trim_end_matches('/')))
    }

    /// The request's origin as the `Access-Control-Allow-Origin` value, if it is allowed.
    pub fn allowed_origin(&self, origin: Option<&str>) -> Option<HeaderValue> {
        let origin = origin?;
        if !self.enabled() || !self.allows(origin) {
            return None;
        }
        HeaderValue::from_str(origin).ok()
    }
}

/// The headers of every answer to an allowed origin.
pub fn decorate(response: &mut Response, origin: HeaderValue) {
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSE_HEADERS),
    );
    headers.append(header::VARY, HeaderValue::from_static("origin"));
}

/// The headers of a preflight's answer to an allowed origin; `methods` are the path's methods.
pub fn preflight(response: &mut Response, origin: HeaderValue, methods: &'static str) {
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(methods),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(ALLOW_HEADERS),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static(MAX_AGE),
    );
    headers.append(header::VARY, HeaderValue::from_static("origin"));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors(entries: &[&str]) -> Cors {
        Cors::parse(&entries.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn listed_origins_only() {
        let c = cors(&["http://localhost:3000", "https://ui.example.com/"]);
        assert!(c.allows("http://localhost:3000"));
        assert!(c.allows("HTTPS://UI.example.com"));
        assert!(!c.allows("http://localhost:3001"));
        assert!(!c.allows("http://evil.example"));
        assert!(c.allowed_origin(Some("http://evil.example")).is_none());
        assert_eq!(
            c.allowed_origin(Some("http://localhost:3000")).unwrap(),
            "http://localhost:3000"
        );
        assert!(c.allowed_origin(None).is_none());
    }

    #[test]
    fn star_allows_any_and_none_allows_nothing() {
        assert!(cors(&["*"]).allows("http://anything:1"));
        let none = cors(&[]);
        assert!(!none.enabled());
        assert!(none.allowed_origin(Some("http://localhost:3000")).is_none());
    }

    #[test]
    fn malformed_origins_are_refused() {
        for bad in ["localhost:3000", "http://", "http://a/b", "ftp://x"] {
            let err = Cors::parse(&[bad.to_string()]).unwrap_err();
            assert!(err.contains("cors_origins"), "{err}");
        }
    }
}
