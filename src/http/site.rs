//! Cross-site protection for a server without API keys (the loopback default), where a browser
//! on the same machine is a client that any web page can borrow:
//!
//! - **DNS rebinding.** A page on `evil.example` whose name then resolves to 127.0.0.1 talks to
//!   this server as its own origin. The `Host` it sends still names `evil.example`, so a data
//!   route answers only a `Host` that is an IP address, `localhost`, or a name in
//!   `--allowed-hosts`.
//! - **Simple cross-site writes.** A page may POST `text/plain` (or nothing) to any address
//!   without asking first. A POST must come as `application/json`, which browsers send across
//!   origins only after a CORS preflight this server answers for `--cors-origins` alone, or from
//!   an origin that is allowed (its own, or one in `--cors-origins`). PATCH and DELETE are never
//!   sent across origins without that preflight. A write that names another origin is refused
//!   whatever its method and type.
//! - **WebSockets** are not covered by CORS: an upgrade whose `Origin` is neither this server's
//!   nor allowed is refused (also with keys, when `--cors-origins` is set).
//!
//! With API keys none of this is needed: a page cannot make a browser send the key.

use super::cors::Cors;
use super::error::{ApiError, ErrorCode};

/// The names, besides IP addresses and `localhost`, a data route answers to without keys.
#[derive(Clone, Debug, Default)]
pub struct AllowedHosts {
    /// Lower-case host names, without port.
    names: Vec<String>,
}

impl AllowedHosts {
    /// Parses `--allowed-hosts`: host names (`flightdeck.internal`), without scheme or port.
    pub fn parse(entries: &[String]) -> Result<AllowedHosts, String> {
        let mut names = Vec::new();
        for entry in entries.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
            let valid = entry.len() <= 253
                && entry
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
            if !valid {
                return Err(format!(
                    "allowed_hosts: `{entry}` is not a host name (letters, digits, `-` and `.`; no scheme or port)"
                ));
            }
            names.push(entry.to_ascii_lowercase());
        }
        Ok(AllowedHosts { names })
    }

    /// Whether a `Host` header's value (with or without port) may be answered without keys.
    pub fn allows(&self, host: &str) -> bool {
        let name = host_name(host);
        if name.is_empty() {
            return false;
        }
        name.eq_ignore_ascii_case("localhost")
            || name.parse::<std::net::IpAddr>().is_ok()
            || self.names.iter().any(|n| n.eq_ignore_ascii_case(name))
    }
}

/// The name of a `Host` value: without port, an IPv6 literal without its brackets.
fn host_name(host: &str) -> &str {
    let host = host.trim();
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default();
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// Whether `origin` (`scheme://host[:port]`) is the page of this server as the client reached it.
fn same_origin(origin: &str, host: Option<&str>) -> bool {
    let Some(host) = host else { return false };
    let rest = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    rest.is_some_and(|r| r.trim_end_matches('/').eq_ignore_ascii_case(host.trim()))
}

/// The server's own origin, or one in `--cors-origins`.
fn allowed_origin(cors: &Cors, origin: &str, host: Option<&str>) -> bool {
    same_origin(origin, host) || (cors.enabled() && cors.allows(origin))
}

/// Refuses a data route's request whose `Host` could be a rebound name (no keys only).
pub fn check_host(allowed: &AllowedHosts, host: Option<&str>) -> Result<(), ApiError> {
    match host {
        // HTTP/1.0 clients may send none; browsers always do.
        None => Ok(()),
        Some(h) if allowed.allows(h) => Ok(()),
        Some(h) => Err(ApiError::new(
            ErrorCode::HostNotAllowed,
            format!(
                "Host `{h}` is not an address of this server: without API keys only an IP address, \
                 localhost or a name in --allowed-hosts is answered (DNS rebinding)"
            ),
        )),
    }
}

/// Refuses a write a page on another site could have sent without asking (no keys only).
pub fn check_write(
    cors: &Cors,
    post: bool,
    origin: Option<&str>,
    host: Option<&str>,
    content_type: Option<&str>,
) -> Result<(), ApiError> {
    if let Some(o) = origin
        && !allowed_origin(cors, o, host)
    {
        return Err(ApiError::new(
            ErrorCode::OriginNotAllowed,
            format!("writes from origin `{o}` are not allowed (--cors-origins)"),
        ));
    }
    if !post || origin.is_some() || content_type.is_some_and(is_json) {
        return Ok(());
    }
    Err(ApiError::new(
        ErrorCode::UnsupportedMediaType,
        "without API keys a POST must be sent as Content-Type: application/json (so a browser \
         asks first, with a CORS preflight), even without a body, or from an allowed Origin",
    ))
}

/// Refuses a WebSocket upgrade from a page of another origin.
pub fn check_websocket(
    cors: &Cors,
    origin: Option<&str>,
    host: Option<&str>,
) -> Result<(), ApiError> {
    match origin {
        Some(o) if !allowed_origin(cors, o, host) => Err(ApiError::origin_not_allowed(o)),
        _ => Ok(()),
    }
}

/// `application/json`, with or without parameters, in any case.
fn is_json(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_addresses_localhost_or_named() {
        let allowed = AllowedHosts::parse(&["Flightdeck.Internal".into()]).unwrap();
        for ok in [
            "127.0.0.1",
            "127.0.0.1:8080",
            "[::1]:8080",
            "10.1.2.3:80",
            "localhost",
            "LOCALHOST:8080",
            "flightdeck.internal:8080",
        ] {
            assert!(allowed.allows(ok), "{ok}");
        }
        for refused in [
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "",
            "127.0.0.1.evil.example",
        ] {
            assert!(!allowed.allows(refused), "{refused}");
        }
        assert!(AllowedHosts::parse(&["http://x".into()]).is_err());
        assert!(AllowedHosts::parse(&["x:80".into()]).is_err());
    }

    #[test]
    fn writes_need_json_or_an_allowed_origin() {
        let none = Cors::default();
        let host = Some("127.0.0.1:8080");
        let json = Some("application/json; charset=utf-8");
        assert!(check_write(&none, true, None, host, json).is_ok());
        assert!(check_write(&none, true, None, host, Some("text/plain")).is_err());
        assert!(check_write(&none, true, None, host, None).is_err());
        assert!(
            check_write(&none, false, None, host, None).is_ok(),
            "DELETE is preflighted"
        );
        assert!(check_write(&none, true, Some("http://127.0.0.1:8080"), host, None).is_ok());
        for post in [true, false] {
            let foreign = check_write(&none, post, Some("http://evil.example"), host, json);
            assert_eq!(foreign.unwrap_err().code, ErrorCode::OriginNotAllowed);
        }
        let cors = Cors::parse(&["http://localhost:3000".into()]).unwrap();
        assert!(check_write(&cors, true, Some("http://localhost:3000"), host, None).is_ok());
        assert!(check_websocket(&none, Some("http://evil.example"), host).is_err());
        assert!(check_websocket(&none, Some("http://127.0.0.1:8080"), host).is_ok());
        assert!(check_websocket(&none, None, host).is_ok());
    }
}
