//! The web console, served by the binary itself: `/` is its page, `/console/{file}` its assets
//! (plain JavaScript modules and CSS under `src/console/assets/`, embedded at compile time; nothing
//! is fetched from elsewhere, and `cargo build` stays the only build step). The console uses only
//! the public REST and WebSocket API, like any other client.
//!
//! Every answer carries a strict Content-Security-Policy (`default-src 'self'`, no inline script
//! or style, no framing), `X-Content-Type-Options: nosniff` and a strong ETag.

use std::sync::OnceLock;

use bytes::Bytes;
use hyper::header;

use crate::http::{ApiError, Response, StatusCode};

/// The embedded files: name, content type, bytes.
const FILES: &[(&str, &str, &[u8])] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("assets/index.html"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_bytes!("assets/style.css"),
    ),
    (
        "icon.svg",
        "image/svg+xml",
        include_bytes!("assets/icon.svg"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/app.js"),
    ),
    (
        "api.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/api.js"),
    ),
    (
        "dom.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/dom.js"),
    ),
    (
        "live.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/live.js"),
    ),
    (
        "approvals.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/approvals.js"),
    ),
    (
        "home.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/home.js"),
    ),
    (
        "project.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/project.js"),
    ),
    (
        "ops.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/ops.js"),
    ),
    (
        "spend.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/spend.js"),
    ),
];

/// The policy of every console answer. `connect-src 'self'` covers the same-origin WebSocket.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Each file's ETag: a hash of its bytes, computed once.
fn etags() -> &'static [String] {
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        use sha2::Digest;
        FILES
            .iter()
            .map(|(_, _, bytes)| {
                let digest = sha2::Sha256::digest(bytes);
                let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
                format!("\"{hex}\"")
            })
            .collect()
    })
}

/// Total bytes of the console's files.
pub fn total_bytes() -> usize {
    FILES.iter().map(|(_, _, b)| b.len()).sum()
}

/// The policy of a follower's console, whose writes go to its leader: `connect-src` names the
/// leader's origin too (scheme, host and port of its URL).
pub fn policy_with_leader(leader: &str) -> String {
    let rest = leader.split_once("://").map_or(leader, |(_, rest)| rest);
    let origin_len = leader.len() - rest.len() + rest.find('/').unwrap_or(rest.len());
    CONTENT_SECURITY_POLICY.replace(
        "connect-src 'self'",
        &format!("connect-src 'self' {}", &leader[..origin_len]),
    )
}

/// `/` (`file` empty) or `/console/{file}`: the file with its security headers; 304 when the
/// client's `If-None-Match` names its current ETag; 404 (JSON) for an unknown file. On a
/// follower (`leader`), the page may also connect to its leader.
pub fn serve(
    file: &str,
    if_none_match: Option<&str>,
    leader: Option<&str>,
) -> Result<Response, ApiError> {
    let name = if file.is_empty() { "index.html" } else { file };
    let Some(i) = FILES.iter().position(|(n, _, _)| *n == name) else {
        return Err(ApiError::not_found_route(&format!("/console/{file}")));
    };
    let (_, content_type, bytes) = FILES[i];
    let etag = &etags()[i];
    let fresh = if_none_match.is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let builder = hyper::Response::builder();
    let builder = match leader {
        Some(leader) => builder.header(header::CONTENT_SECURITY_POLICY, policy_with_leader(leader)),
        None => builder.header(header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
    }
    .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
    .header(header::X_FRAME_OPTIONS, "DENY")
    .header(header::REFERRER_POLICY, "no-referrer")
    .header(header::CACHE_CONTROL, "no-cache")
    .header(header::ETAG, etag.as_str());
    let response = if fresh {
        builder
            .status(StatusCode::NOT_MODIFIED)
            .body(crate::http::Body::default())
    } else {
        builder
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, content_type)
            .body(crate::http::Body::new(Bytes::from_static(bytes)))
    };
    Ok(response.expect("static headers are valid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_followers_policy_lets_the_page_connect_to_its_leaders_origin_only() {
        for (leader, origin) in [
            ("http://10.0.0.1:8080", "http://10.0.0.1:8080"),
            (
                "https://leader.example/flightdeck",
                "https://leader.example",
            ),
        ] {
            let policy = policy_with_leader(leader);
            assert!(
                policy.contains(&format!("connect-src 'self' {origin};")),
                "{policy}"
            );
            assert_eq!(
                policy.replace(&format!(" {origin}"), ""),
                CONTENT_SECURITY_POLICY,
                "nothing else changes"
            );
        }
    }

    #[test]
    fn every_module_the_page_imports_is_embedded_and_small() {
        // Every `import … from './x.js'` and every `/console/…` reference names an embedded file.
        for (name, _, bytes) in FILES {
            let text = std::str::from_utf8(bytes).unwrap();
            for part in text.split("from './").skip(1) {
                let target = &part[..part.find('\'').unwrap()];
                assert!(
                    FILES.iter().any(|(n, _, _)| *n == target),
                    "{name} imports {target}, which is not embedded"
                );
            }
            for part in text.split("/console/").skip(1) {
                let end = part.find(['"', '\'', ' ', '`']).unwrap_or(part.len());
                let target = &part[..end];
                assert!(
                    target.is_empty() || FILES.iter().any(|(n, _, _)| *n == target),
                    "{name} refers to /console/{target}, which is not embedded"
                );
            }
            // No inline script or style, and nothing from another origin.
            for sink in [
                ".innerHTML",
                ".outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
            ] {
                assert!(!text.contains(sink), "{name} uses {sink}");
            }
            // Every absolute URL is this page's own host (the SVG namespace is a name, not a
            // request).
            let text = text.replace("http://www.w3.org/2000/svg", "");
            for after in text.split("://").skip(1) {
                assert!(
                    after.starts_with("${location.host}"),
                    "{name} refers to another origin: {}",
                    &after[..after.len().min(40)]
                );
            }
        }
        assert!(total_bytes() < 300 * 1024, "{} bytes", total_bytes());
    }

    #[test]
    fn answers_carry_the_policy_and_an_etag_that_revalidates() {
        let page = serve("", None, None).unwrap();
        assert_eq!(page.status(), StatusCode::OK);
        let headers = page.headers();
        assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
        let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.starts_with("default-src 'self'") && csp.contains("frame-ancestors 'none'"));
        assert!(!csp.contains("unsafe-inline"));
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        let etag = headers[header::ETAG].to_str().unwrap().to_string();
        let again = serve("index.html", Some(&etag), None).unwrap();
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        let other = serve("app.js", Some(&etag), None).unwrap();
        assert_eq!(other.status(), StatusCode::OK, "another file's tag");
        assert_eq!(
            other.headers()[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        assert_eq!(
            serve("nope.js", None, None).unwrap_err().status.as_u16(),
            404
        );
    }
}
