//! API keys, black-box: no key 401, a read-only key cannot write (403), a read-write key can,
//! probes and /metrics stay open, WebSockets take `?token=`.

use serde_json::json;

use crate::common::{Resp, Server};

const READER: &str = "reader-secret-0123";
const WRITER: &str = "writer-secret-01234";

fn with_key(
    s: &Server,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<serde_json::Value>,
) -> Resp {
    let mut request = ureq::http::Request::builder()
        .method(method)
        .uri(s.url(path));
    if let Some(k) = key {
        request = request.header("authorization", format!("Bearer {k}"));
    }
    let bytes = match body {
        Some(b) => {
            request = request.header("content-type", "application/json");
            b.to_string().into_bytes()
        }
        None => Vec::new(),
    };
    s.send_request(request.body(bytes).unwrap())
}

#[test]
fn keys_gate_the_api_but_not_the_probes() {
    let s = Server::start_with(&[
        "--api-key",
        &format!("ro:{READER}"),
        "--api-key",
        &format!("rw:{WRITER}"),
    ]);
    let r = with_key(&s, "GET", "/api/v1/projects", None, None);
    r.expect_error(401, "unauthorized");
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    with_key(
        &s,
        "GET",
        "/api/v1/projects",
        Some("not-the-right-key-at-all"),
        None,
    )
    .expect_error(401, "unauthorized");
    let created = with_key(
        &s,
        "POST",
        "/api/v1/projects",
        Some(WRITER),
        Some(json!({"name": "p"})),
    )
    .expect(201);
    let p = created["id"].as_str().unwrap();
    with_key(
        &s,
        "GET",
        &format!("/api/v1/projects/{p}"),
        Some(READER),
        None,
    )
    .expect(200);
    with_key(
        &s,
        "POST",
        "/api/v1/projects",
        Some(READER),
        Some(json!({"name": "q"})),
    )
    .expect_error(403, "forbidden");
    assert_eq!(
        with_key(&s, "GET", "/api/v1/projects", Some(WRITER), None).expect(200)["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    for probe in ["/livez", "/readyz", "/health", "/health/z", "/metrics"] {
        assert_eq!(s.get(probe).status, 200, "{probe} stays open");
    }
    // WebSocket: refused before the upgrade without a token; accepted with ?token=.
    with_key(&s, "GET", "/ws", None, None).expect_error(401, "unauthorized");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let url = format!("ws://{}/ws?token={READER}", s.addr);
        assert!(tokio_tungstenite::connect_async(url).await.is_ok());
        match tokio_tungstenite::connect_async(format!(
            "ws://{}/ws?token=wrong-wrong-wrong-wrong",
            s.addr
        ))
        .await
        {
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
                assert_eq!(r.status().as_u16(), 401)
            }
            other => panic!("expected 401, got {:?}", other.map(|_| ())),
        }
    });
}

#[test]
fn metrics_can_be_protected_and_weak_keys_are_refused() {
    let s = Server::start_with(&["--api-key", WRITER, "--protect-metrics"]);
    with_key(&s, "GET", "/metrics", None, None).expect_error(401, "unauthorized");
    assert_eq!(
        with_key(&s, "GET", "/metrics", Some(WRITER), None).status,
        200
    );
    assert_eq!(s.get("/readyz").status, 200);
    let out = std::process::Command::new(crate::common::BIN)
        .args(["--api-key", "short"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("at least 16"), "{err}");
    assert!(!err.contains("short"), "the key is not echoed: {err}");
}
