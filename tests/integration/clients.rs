//! What real clients meet: browsers on other origins (CORS, WebSocket origins), clients that write
//! their whole body before reading, paged project statuses, bounded agent history.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::Server;

const UI: &str = "http://localhost:3000";

fn request(s: &Server, method: &str, path: &str, headers: &[(&str, &str)]) -> crate::common::Resp {
    let mut builder = ureq::http::Request::builder()
        .method(method)
        .uri(s.url(path));
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    s.send_request(builder.body(Vec::new()).unwrap())
}

#[test]
fn a_browser_on_an_allowed_origin_is_answered_with_cors_headers() {
    let s = Server::start_with(&["--cors-origins", "http://localhost:3000,https://ui.example"]);
    let p = s.project("cors");

    // The preflight a browser sends before a JSON POST.
    let pre = request(
        &s,
        "OPTIONS",
        &format!("/api/v1/projects/{p}/tasks"),
        &[
            ("origin", UI),
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "content-type, idempotency-key",
            ),
        ],
    );
    assert_eq!(pre.status, 204, "{}", pre.body);
    assert_eq!(pre.header("access-control-allow-origin"), Some(UI));
    assert_eq!(
        pre.header("access-control-allow-methods"),
        Some("GET, HEAD, POST")
    );
    let allowed = pre.header("access-control-allow-headers").unwrap();
    for needed in [
        "authorization",
        "content-type",
        "x-request-id",
        "idempotency-key",
    ] {
        assert!(allowed.contains(needed), "{needed} in {allowed}");
    }
    assert_eq!(pre.header("access-control-max-age"), Some("600"));
    assert_eq!(pre.header("vary"), Some("origin"));

    // The actual request, and an error answer: both readable by the page.
    let mut builder = ureq::http::Request::builder()
        .method("POST")
        .uri(s.url(&format!("/api/v1/projects/{p}/tasks")))
        .header("origin", UI)
        .header("content-type", "application/json");
    builder = builder.header("x-request-id", "from-the-page");
    let created = s.send_request(
        builder
            .body(
                json!({"agent_type":"coder","instructions":"x"})
                    .to_string()
                    .into_bytes(),
            )
            .unwrap(),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.header("access-control-allow-origin"), Some(UI));
    let exposed = created.header("access-control-expose-headers").unwrap();
    for needed in ["x-next-cursor", "x-request-id", "server-timing"] {
        assert!(exposed.contains(needed), "{needed} in {exposed}");
    }
    assert_eq!(created.header("x-request-id"), Some("from-the-page"));
    let missing = request(&s, "GET", "/api/v1/tasks/nope", &[("origin", UI)]);
    assert_eq!(missing.status, 400);
    assert_eq!(missing.header("access-control-allow-origin"), Some(UI));

    // A foreign origin gets no CORS headers at all, preflight or not.
    for method in ["OPTIONS", "GET"] {
        let foreign = request(
            &s,
            method,
            "/api/v1/projects",
            &[
                ("origin", "http://evil.example"),
                ("access-control-request-method", "GET"),
            ],
        );
        assert!(foreign.status == 204 || foreign.status == 200, "{method}");
        assert_eq!(
            foreign.header("access-control-allow-origin"),
            None,
            "{method}"
        );
        assert_eq!(foreign.header("access-control-allow-methods"), None);
    }
    // OPTIONS of an unknown path is a 404, of a known one 204 with Allow.
    let unknown = request(&s, "OPTIONS", "/api/v1/nothing", &[]);
    assert_eq!(unknown.status, 404);
    let plain = request(&s, "OPTIONS", "/api/v1/projects", &[]);
    assert_eq!(plain.status, 204);
    assert_eq!(plain.header("allow"), Some("GET, HEAD, POST, OPTIONS"));
}

#[test]
fn without_cors_origins_no_page_elsewhere_can_read_the_api() {
    let s = Server::start();
    let pre = request(
        &s,
        "OPTIONS",
        "/api/v1/projects",
        &[("origin", UI), ("access-control-request-method", "POST")],
    );
    assert_eq!(pre.status, 204);
    assert_eq!(pre.header("access-control-allow-origin"), None);
    let get = request(&s, "GET", "/api/v1/projects", &[("origin", UI)]);
    assert_eq!(get.status, 200);
    assert_eq!(get.header("access-control-allow-origin"), None);
}

#[test]
fn a_preflight_needs_no_api_key_but_the_request_does() {
    let s = Server::start_with(&[
        "--cors-origins",
        "*",
        "--api-key",
        "a-long-enough-secret-key",
    ]);
    let pre = request(
        &s,
        "OPTIONS",
        "/api/v1/projects",
        &[("origin", UI), ("access-control-request-method", "GET")],
    );
    assert_eq!(pre.status, 204);
    assert_eq!(pre.header("access-control-allow-origin"), Some(UI));
    // The 401 itself is readable by the page, so it can ask for a key.
    let denied = request(&s, "GET", "/api/v1/projects", &[("origin", UI)]);
    assert_eq!(denied.status, 401);
    assert_eq!(denied.header("access-control-allow-origin"), Some(UI));
}

/// The status line of a WebSocket handshake sent with `origin`.
fn upgrade_status(s: &Server, origin: Option<&str>) -> String {
    let origin = origin
        .map(|o| format!("origin: {o}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "GET /ws HTTP/1.1\r\nhost: {}\r\nupgrade: websocket\r\nconnection: upgrade\r\n\
         sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n{origin}\r\n",
        s.addr
    );
    let mut stream = TcpStream::connect(&s.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut buf = [0u8; 2048];
    let n = stream.read(&mut buf).unwrap();
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

#[test]
fn a_websocket_from_a_foreign_origin_is_refused_before_the_upgrade() {
    let s = Server::start_with(&["--cors-origins", UI]);
    assert_eq!(
        upgrade_status(&s, Some("http://evil.example")),
        "HTTP/1.1 403 Forbidden"
    );
    assert_eq!(
        upgrade_status(&s, Some(UI)),
        "HTTP/1.1 101 Switching Protocols"
    );
    // Tools that send no Origin are not browsers: allowed.
    assert_eq!(upgrade_status(&s, None), "HTTP/1.1 101 Switching Protocols");
    // Without API keys the browser is the credential, so a page of another origin is refused
    // there too; the server's own page and tools that send no Origin are not. (A frontend on
    // another port, as BotArmy's was, is named in cors_origins.)
    let open = Server::start();
    assert_eq!(
        upgrade_status(&open, Some("http://evil.example")),
        "HTTP/1.1 403 Forbidden"
    );
    assert_eq!(
        upgrade_status(&open, Some(&format!("http://{}", open.addr))),
        "HTTP/1.1 101 Switching Protocols"
    );
    assert_eq!(
        upgrade_status(&open, None),
        "HTTP/1.1 101 Switching Protocols"
    );
}

/// Writes the whole request — head and body — before reading anything, as Python's urllib does,
/// then reads the answer.
fn write_first(s: &Server, head: &str, body: &[u8]) -> String {
    let mut request = head.as_bytes().to_vec();
    request.extend_from_slice(body);
    s.raw(&request)
}

#[test]
fn a_client_that_writes_first_reads_the_413_of_an_oversize_body() {
    let s = Server::start();
    // More than loopback's socket buffers take at once, so the client is still writing when the
    // server answers.
    let body = vec![b'x'; 24 * 1024 * 1024];
    let head = format!(
        "POST /api/v1/projects HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n",
        body.len()
    );
    let answer = write_first(&s, &head, &body);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer:.200}");
    assert!(
        answer.contains(r#""code":"payload_too_large""#),
        "{answer:.400}"
    );

    // Chunked, so the size is only known while reading: the same.
    let mut chunked = Vec::new();
    for _ in 0..384 {
        chunked.extend_from_slice(format!("{:x}\r\n", 64 * 1024).as_bytes());
        chunked.extend_from_slice(&[b' '; 64 * 1024]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let answer = write_first(
        &s,
        "POST /api/v1/projects HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
         transfer-encoding: chunked\r\n\r\n",
        &chunked,
    );
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer:.200}");

    // Not JSON, refused before the body is read: a 415 the client sees.
    let answer = write_first(&s, &head.replace("application/json", "text/plain"), &body);
    assert!(answer.starts_with("HTTP/1.1 415"), "{answer:.200}");
    // An unknown route with a body: its 404.
    let answer = write_first(
        &s,
        &head.replace("/api/v1/projects", "/api/v1/nowhere"),
        &body,
    );
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer:.200}");
    // Nothing was stored.
    assert_eq!(s.get("/api/v1/projects").expect(200)["items"], json!([]));
}

#[test]
fn a_connection_survives_a_drained_body() {
    // A drained body leaves the connection usable: the next request on it is answered.
    let s = Server::start_with(&["--max-body-bytes", "1024"]);
    let body = vec![b'x'; 4096];
    let mut request = format!(
        "POST /api/v1/projects HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    request
        .extend_from_slice(b"GET /livez HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n");
    let mut stream = TcpStream::connect(&s.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(&request).unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer:.200}");
    assert_eq!(
        answer.matches("HTTP/1.1 ").count(),
        2,
        "two answers: {answer}"
    );
    assert!(answer.contains("HTTP/1.1 200 OK"), "{answer}");
}

#[test]
fn project_status_pages_on_request_and_follows_every_write() {
    let s = Server::start();
    let p = s.project("big");
    let tasks: Vec<String> = (0..7).map(|_| s.task(&p, "coder")).collect();
    let all = s.get(&format!("/api/v1/projects/{p}/status")).expect(200);
    let ids: Vec<&str> = all["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["task_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, tasks.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(all.get("next_cursor").is_none());

    // Every write shows in the next status (served from the patched view).
    s.set_status(&tasks[3], "working").expect(200);
    let after = s.get(&format!("/api/v1/projects/{p}/status")).expect(200);
    assert_eq!(after["tasks"][3]["status"], "working");
    assert_eq!(after["tasks"][2]["status"], "pending");
    let new = s.task(&p, "tester");
    let after = s.get(&format!("/api/v1/projects/{p}/status")).expect(200);
    assert_eq!(after["tasks"].as_array().unwrap().len(), 8);
    assert_eq!(after["tasks"][7]["task_id"], new.as_str());
    assert_eq!(after["tasks"][7]["agent_type"], "tester");

    // Pages of 3.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/projects/{p}/status?limit=3&cursor={c}"),
            None => format!("/api/v1/projects/{p}/status?limit=3"),
        };
        let page = s.get(&path).expect(200);
        assert_eq!(page["project_id"], p.as_str());
        let items = page["tasks"].as_array().unwrap();
        assert!(items.len() <= 3);
        seen.extend(
            items
                .iter()
                .map(|t| t["task_id"].as_str().unwrap().to_string()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let mut want = tasks.clone();
    want.push(new);
    assert_eq!(seen, want);
    s.get(&format!("/api/v1/projects/{p}/status?limit=0"))
        .expect_error(422, "invalid_field");
}

#[test]
fn agent_history_is_trimmed_to_its_retention() {
    let s = Server::start_with(&["--agent-history-retention", "4"]);
    let p = s.project("history");
    for _ in 0..6 {
        let t = s.task(&p, "coder");
        s.set_status(&t, "working").expect(200);
        s.set_status(&t, "completed").expect(200);
    }
    // Each status change trims the history as it adds to it: exactly the newest four are
    // there as soon as the writes are answered, newest first.
    let history: Value = s
        .get("/api/v1/agents/status-history/coder?limit=100")
        .expect(200);
    let seqs: Vec<u64> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    let mut changes: Vec<u64> = s
        .all_events(Some(&p))
        .iter()
        .filter(|e| e["event_type"] == "agent_status_change")
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(changes.len(), 12, "working and idle for each of six tasks");
    changes.reverse();
    assert_eq!(seqs, changes[..4]);
}

/// Resident memory of a process, in bytes: the peak (`VmHWM`) and now (`VmRSS`).
fn resident(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (field("VmHWM:"), field("VmRSS:"))
}

#[test]
fn large_artifacts_read_back_stay_inside_the_memory_budget() {
    // 1,200 artifacts of 0.9 MB, each read once (twice for some): with a 64 MiB page cache and a
    // 64 MiB response cache, the server's resident set stays under 200 MiB throughout: the two
    // budgets and 72 MiB for the rest (about 30 MiB at start, a few requests' buffers). It peaks
    // near 150 MiB; before large freed buffers went back to the system (`src/main.rs`,
    // `MALLOC_CONF`) it reached 260–336 MiB.
    let s = Server::start_with(&[
        "--page-cache-mib",
        "64",
        "--cache-mib",
        "64",
        "--durability",
        "none",
    ]);
    let p = s.project("big");
    // Bodies written as text: encoding 0.9 MB through serde_json 1,200 times would cost the
    // (debug-built) test more than the server spends.
    let blob = "y".repeat(900 * 1024);
    let ids: Vec<String> = (0..1200)
        .map(|i| {
            let body = format!(
                r#"{{"project_id":"{p}","source_agent":"coder","artifact_type":"source_code","content":{{"i":{i},"blob":"{blob}"}}}}"#
            );
            s.send(
                "POST",
                "/api/v1/context/artifacts",
                Some("application/json"),
                body.into_bytes(),
            )
            .expect(201)["context_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    for (i, id) in ids.iter().enumerate() {
        let got = s.get(&format!("/api/v1/context/artifacts/{id}"));
        assert_eq!(got.status, 200);
        assert!(got.body.len() > 900 * 1024 && got.body.contains(id.as_str()));
        if i % 10 == 0 {
            // Read again: a cache hit while it is still cached.
            assert_eq!(
                s.get(&format!("/api/v1/context/artifacts/{id}")).status,
                200
            );
        }
    }
    let metrics = s.get("/metrics").body;
    let cache_bytes: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("flightdeck_cache_bytes "))
        .expect("flightdeck_cache_bytes")
        .parse()
        .unwrap();
    assert!(cache_bytes <= 64.0 * 1024.0 * 1024.0, "{cache_bytes}");
    let (peak, now) = resident(s.pid());
    eprintln!("resident: peak {} MiB, now {} MiB", peak >> 20, now >> 20);
    assert!(peak < 200 << 20, "peak resident {} MiB", peak >> 20);
}
