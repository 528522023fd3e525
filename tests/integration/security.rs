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
    s.call_as(key, method, path, body)
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
    // The components' details (paths, sizes, lag) are protected with the metrics.
    with_key(&s, "GET", "/health/detailed", None, None).expect_error(401, "unauthorized");
    assert_eq!(
        with_key(&s, "GET", "/health/detailed", Some(WRITER), None).status,
        200
    );
    assert_eq!(s.get("/health").status, 200, "the plain probes stay open");
    let out = std::process::Command::new(crate::common::BIN)
        .args(["--api-key", "short"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("at least 16"), "{err}");
    assert!(!err.contains("short"), "the key is not echoed: {err}");
}

#[test]
fn named_keys_answer_who_they_are_and_the_console_loads_without_one() {
    let s = Server::start_with(&[
        "--api-key",
        "alice:rw:alice-secret-0123456",
        "--api-key",
        &format!("ro:{READER}"),
    ]);
    let me = with_key(
        &s,
        "GET",
        "/api/v1/auth/whoami",
        Some("alice-secret-0123456"),
        None,
    )
    .expect(200);
    assert_eq!(
        me,
        json!({"keys_required": true, "name": "alice", "access": "read_write",
               "roles": ["worker", "reviewer", "operator"]})
    );
    // An unnamed key gets a name from its secret's hash: stable, and not the secret.
    let reader = with_key(&s, "GET", "/api/v1/auth/whoami", Some(READER), None).expect(200);
    assert_eq!(reader["access"], "read_only");
    assert_eq!(reader["roles"], json!([]));
    let name = reader["name"].as_str().unwrap();
    assert!(
        name.starts_with("key-") && !READER.contains(&name[4..]),
        "{name}"
    );
    with_key(&s, "GET", "/api/v1/auth/whoami", None, None).expect_error(401, "unauthorized");
    let refused = with_key(
        &s,
        "POST",
        "/api/v1/projects",
        Some(READER),
        Some(json!({"name": "q"})),
    );
    refused.expect_error(403, "forbidden");
    // The console's page and assets need no key (the page asks for one), with a strict policy.
    for path in ["/", "/console/app.js", "/console/style.css"] {
        let r = s.get(path);
        assert_eq!(r.status, 200, "{path}");
        let csp = r.header("content-security-policy").unwrap();
        assert!(csp.starts_with("default-src 'self'"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'") && !csp.contains("unsafe-inline"));
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    }
    let page = s.get("/");
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert!(
        page.body
            .contains("<script type=\"module\" src=\"/console/app.js\">")
    );
    assert!(!page.body.contains("<script>"), "no inline script");
    s.get("/console/missing.js")
        .expect_error(404, "route_not_found");
    // Without keys whoami says so.
    let open = Server::start();
    assert_eq!(
        open.get("/api/v1/auth/whoami").expect(200),
        json!({"keys_required": false, "name": null, "access": "read_write",
               "roles": ["worker", "reviewer", "operator", "admin"]})
    );
}

#[test]
fn every_answer_records_the_key_that_gave_it() {
    let s = Server::start_with(&[
        "--api-key",
        "dana:rw:dana-secret-012345678",
        "--api-key",
        "erin:rw:erin-secret-012345678",
    ]);
    let (dana, erin) = (Some("dana-secret-012345678"), Some("erin-secret-012345678"));
    let p = with_key(
        &s,
        "POST",
        "/api/v1/projects",
        dana,
        Some(json!({"name": "p"})),
    )
    .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_string();
    let ask = |q: &str| {
        with_key(
            &s,
            "POST",
            "/api/v1/hitl",
            dana,
            Some(json!({"project_id": p, "question": q})),
        )
        .expect(201)["request_id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (one, two, three) = (ask("one?"), ask("two?"), ask("three?"));
    let answer = with_key(
        &s,
        "POST",
        &format!("/api/v1/hitl/{one}/respond"),
        erin,
        Some(json!({"action": "reject", "comment": "no"})),
    )
    .expect(200);
    assert_eq!(answer["responded_by"], "erin");
    let bulk = with_key(
        &s,
        "POST",
        "/api/v1/hitl/bulk/approve",
        dana,
        Some(json!({"request_ids": [two, three]})),
    )
    .expect(200);
    assert_eq!(bulk["approved_count"], 2);
    for (id, who) in [(&one, "erin"), (&two, "dana"), (&three, "dana")] {
        let r = with_key(&s, "GET", &format!("/api/v1/hitl/{id}"), erin, None).expect(200);
        assert_eq!(r["responded_by"], who, "{id}");
        let history =
            with_key(&s, "GET", &format!("/api/v1/hitl/{id}/history"), erin, None).expect(200);
        let entries = history["history"].as_array().unwrap();
        assert!(
            entries[0]["user_id"].is_null(),
            "created by nobody's answer"
        );
        assert_eq!(entries[1]["user_id"], who);
    }
    // The events say who answered too.
    let events = with_key(&s, "GET", "/api/v1/events?limit=100", dana, None).expect(200);
    let answers: Vec<(&str, &str)> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event_type"] == "hitl_response")
        .map(|e| {
            (
                e["data"]["request_id"].as_str().unwrap(),
                e["data"]["responded_by"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        answers,
        [
            (one.as_str(), "erin"),
            (two.as_str(), "dana"),
            (three.as_str(), "dana")
        ]
    );
}

/// One request over a fresh connection, its head written as given: (status, body).
fn raw(s: &Server, head: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(&s.addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

#[test]
fn without_keys_a_rebound_name_and_a_simple_cross_site_post_are_refused() {
    // The attacks: a page whose name is rebound to 127.0.0.1 reads the API as its own origin;
    // any page POSTs text/plain (or nothing) to pause a queue. Without API keys the browser is
    // the credential, so neither may work.
    let s = Server::start_with(&["--allowed-hosts", "flightdeck.internal"]);
    let port = s.addr.rsplit(':').next().unwrap().to_string();
    let get = |path: &str, host: &str| {
        raw(
            &s,
            &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        )
    };
    let (status, body) = get("/api/v1/projects", &format!("rebound.example:{port}"));
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("host_not_allowed"), "{body}");
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
        format!("flightdeck.internal:{port}"),
    ] {
        assert_eq!(get("/api/v1/projects", &host).0, 200, "{host}");
    }
    // Probes answer whatever name a load balancer uses.
    assert_eq!(get("/livez", "rebound.example").0, 200);

    let post = |extra: &str| {
        raw(
            &s,
            &format!(
                "POST /api/v1/queues/coder/pause HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n"
            ),
        )
    };
    let paused = || {
        s.get("/api/v1/queues").json()["queues"]
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["agent_type"] == "coder")
            .unwrap()["paused"]
            .clone()
    };
    let (status, body) = post("Content-Type: text/plain\r\n");
    assert_eq!(status, 415, "{body}");
    assert!(body.contains("unsupported_media_type"), "{body}");
    assert_eq!(post("").0, 415, "a body-less POST without a type");
    let (status, body) = post("Origin: http://evil.example\r\nContent-Type: application/json\r\n");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("origin_not_allowed"), "{body}");
    assert_eq!(paused(), false, "nothing refused took effect");
    // The server's own page, and a client that says it sends JSON, may.
    assert_eq!(post(&format!("Origin: http://127.0.0.1:{port}\r\n")).0, 200);
    assert_eq!(paused(), true);
    assert_eq!(
        raw(
            &s,
            &format!(
                "POST /api/v1/queues/coder/resume HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
        )
        .0,
        200
    );
    assert_eq!(paused(), false);

    // With API keys a page cannot make the browser send the key: nothing of this applies.
    let keyed = Server::start_with(&["--api-key", &format!("ops:rw:{WRITER}")]);
    let (status, body) = raw(
        &keyed,
        &format!(
            "POST /api/v1/queues/coder/pause HTTP/1.1\r\nHost: anything.example\r\nAuthorization: Bearer {WRITER}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
    );
    assert_eq!(status, 200, "{body}");
}

#[test]
fn what_the_server_creates_only_its_user_can_read() {
    // A data directory the server creates, its database and its backups hold every artifact and
    // answer: 0700 and 0600, whatever the umask left readable to others.
    use std::os::unix::fs::PermissionsExt;
    let holder = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let data = holder.path().join("fresh").join("data");
    let s = Server::start_at(holder.clone(), &data, &[]);
    s.project("private");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("flightdeck.redb")), 0o600);
    let backup = s.backup().expect(201);
    assert_eq!(mode(&data.join("backups")), 0o700);
    let file = data.join("backups").join(backup["file"].as_str().unwrap());
    assert_eq!(mode(&file), 0o600);
    // Restored into a new directory: the same.
    let restored = holder.path().join("restored");
    let out = std::process::Command::new(crate::common::BIN)
        .args(["restore", "--from"])
        .arg(&file)
        .arg("--data-dir")
        .arg(&restored)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(mode(&restored), 0o700);
    assert_eq!(mode(&restored.join("flightdeck.redb")), 0o600);
}

#[test]
fn guessed_keys_are_counted_and_slowed_per_address() {
    // The attack: try keys until one works. Each wrong key is counted; after ten from one
    // address within a minute, its refusals come a second late.
    let s = Server::start_with(&["--api-key", &format!("ops:rw:{WRITER}")]);
    let failures = || -> f64 {
        s.get("/metrics")
            .body
            .lines()
            .find_map(|l| l.strip_prefix("flightdeck_auth_failures_total "))
            .and_then(|v| v.parse().ok())
            .expect("flightdeck_auth_failures_total")
    };
    assert_eq!(failures(), 0.0);
    // A request without a key is not a guess.
    with_key(&s, "GET", "/api/v1/projects", None, None).expect_error(401, "unauthorized");
    assert_eq!(failures(), 0.0);
    for i in 0..10 {
        let guess = format!("guess-{i:02}-0123456789");
        with_key(&s, "GET", "/api/v1/projects", Some(&guess), None)
            .expect_error(401, "unauthorized");
    }
    assert_eq!(failures(), 10.0);
    for i in 10..12 {
        let guess = format!("guess-{i:02}-0123456789");
        let started = std::time::Instant::now();
        with_key(&s, "GET", "/api/v1/projects", Some(&guess), None)
            .expect_error(401, "unauthorized");
        assert!(
            started.elapsed() >= std::time::Duration::from_millis(900),
            "the 11th guess was answered after {:?}",
            started.elapsed()
        );
    }
    assert_eq!(failures(), 12.0);
    // The right key from the same address still works.
    assert_eq!(
        with_key(&s, "GET", "/api/v1/projects", Some(WRITER), None).status,
        200
    );
}

const W: &str = "worker-secret-0123456";
const R: &str = "reviewer-secret-012345";
const B: &str = "both-secret-0123456789";
const O: &str = "operator-secret-012345";
const L: &str = "legacy-secret-01234567";

/// POSTs with a key and a JSON body.
fn post_as(s: &Server, key: &str, path: &str, body: serde_json::Value) -> Resp {
    with_key(s, "POST", path, Some(key), Some(body))
}

fn claim_as(s: &Server, key: &str, agent: &str) -> (String, String) {
    let t = post_as(
        s,
        key,
        "/api/v1/tasks/claim",
        json!({"agent_type": agent, "worker_id": "w1"}),
    )
    .expect(200);
    (
        t["task_id"].as_str().unwrap().to_string(),
        t["lease_id"].as_str().unwrap().to_string(),
    )
}

fn ask_about(s: &Server, key: &str, project: &str, task: &str) -> String {
    post_as(
        s,
        key,
        "/api/v1/hitl",
        json!({"project_id": project, "task_id": task, "question": "ship my own work?"}),
    )
    .expect(201)["request_id"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn roles_decide_who_writes_and_no_key_approves_its_own_claim() {
    // Given as one comma-separated list, as FLIGHTDECK_API_KEYS would: the roles list of `both`
    // keeps its comma.
    let keys = format!(
        "work:worker:{W},rev:reviewer:{R},both:worker,reviewer:{B},ops:operator:{O},legacy:rw:{L}"
    );
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let s = Server::start_in(dir.clone(), &["--api-key", &keys]);
    let me = |key: &str| with_key(&s, "GET", "/api/v1/auth/whoami", Some(key), None).expect(200);
    assert_eq!(me(B)["name"], "both");
    assert_eq!(me(B)["roles"], json!(["worker", "reviewer"]));
    assert_eq!(me(L)["roles"], json!(["worker", "reviewer", "operator"]));
    assert_eq!(me(W)["access"], "read_write");

    // Projects and queues are the operator's; a worker cannot make or pause them.
    let e = post_as(&s, W, "/api/v1/projects", json!({"name": "p"})).expect_error(403, "forbidden");
    assert!(e.contains("operator"), "{e}");
    let p = post_as(&s, O, "/api/v1/projects", json!({"name": "p"})).expect(201)["id"]
        .as_str()
        .unwrap()
        .to_string();
    with_key(&s, "POST", "/api/v1/queues/coder/pause", Some(W), None)
        .expect_error(403, "forbidden");
    with_key(&s, "POST", "/api/v1/queues/coder/pause", Some(R), None)
        .expect_error(403, "forbidden");
    // Workers make tasks, claim them and ask for approval; the operator cannot claim.
    for _ in 0..4 {
        post_as(
            &s,
            W,
            &format!("/api/v1/projects/{p}/tasks"),
            json!({"agent_type": "coder", "instructions": "build"}),
        )
        .expect(201);
    }
    post_as(
        &s,
        O,
        "/api/v1/tasks/claim",
        json!({"agent_type": "coder", "worker_id": "x"}),
    )
    .expect_error(403, "forbidden");
    let (t_work, _) = claim_as(&s, W, "coder");
    let (t_both, _) = claim_as(&s, B, "coder");
    let (t_legacy, _) = claim_as(&s, L, "coder");
    let h_work = ask_about(&s, W, &p, &t_work);
    let h_both = ask_about(&s, B, &p, &t_both);
    let h_legacy = ask_about(&s, L, &p, &t_legacy);
    let approve = json!({"action": "approve", "comment": "ok"});
    // A worker key cannot answer approvals at all.
    post_as(
        &s,
        W,
        &format!("/api/v1/hitl/{h_work}/respond"),
        approve.clone(),
    )
    .expect_error(403, "forbidden");
    // A key with both roles, or an old read-write key, cannot answer about its own claim.
    let e = post_as(
        &s,
        B,
        &format!("/api/v1/hitl/{h_both}/respond"),
        approve.clone(),
    )
    .expect_error(403, "self_approval");
    assert!(e.contains(&t_both), "{e}");
    post_as(
        &s,
        L,
        &format!("/api/v1/hitl/{h_legacy}/respond"),
        approve.clone(),
    )
    .expect_error(403, "self_approval");
    // ...but may answer about another key's task; a reviewer answers any.
    let answered = post_as(
        &s,
        B,
        &format!("/api/v1/hitl/{h_work}/respond"),
        approve.clone(),
    )
    .expect(200);
    assert_eq!(answered["responded_by"], "both");
    // Bulk approval skips the requests about the key's own claims and approves the rest.
    let bulk = post_as(
        &s,
        L,
        "/api/v1/hitl/bulk/approve",
        json!({"request_ids": [h_both, h_legacy]}),
    )
    .expect(200);
    assert_eq!(bulk["approved"], json!([h_both]), "{bulk}");
    assert!(bulk.to_string().contains("self_approval"), "{bulk}");

    // Who claimed is durable: after a restart the legacy key is still refused.
    let dir = s.stop();
    let s = Server::start_in(dir, &["--api-key", &keys]);
    post_as(
        &s,
        L,
        &format!("/api/v1/hitl/{h_legacy}/respond"),
        approve.clone(),
    )
    .expect_error(403, "self_approval");
    let answered = post_as(&s, R, &format!("/api/v1/hitl/{h_legacy}/respond"), approve).expect(200);
    assert_eq!(answered["responded_by"], "rev");
    // The route table names the role each write needs.
    let doc = s.get("/openapi.json").expect(200);
    assert_eq!(
        doc["paths"]["/api/v1/hitl/{id}/respond"]["post"]["x-flightdeck-role"],
        "reviewer"
    );
    assert_eq!(
        doc["paths"]["/api/v1/admin/backup"]["post"]["x-flightdeck-role"],
        "admin"
    );
}
