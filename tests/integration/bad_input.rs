//! Every kind of bad input gets the right status and a JSON error; the server stays up and nothing
//! is stored half-way.

use serde_json::json;

use crate::common::Server;

fn event_count(s: &Server) -> usize {
    s.all_events(None).len()
}

#[test]
fn malformed_wrong_type_too_large_too_deep() {
    let s = Server::start_with(&["--max-body-bytes", "4096"]);
    let before = event_count(&s);
    let path = "/api/v1/projects";
    s.send(
        "POST",
        path,
        Some("application/json"),
        b"{\"name\": ".to_vec(),
    )
    .expect_error(400, "malformed_json");
    s.send(
        "POST",
        path,
        Some("application/json"),
        b"{\"name\":\"a\"} trailing".to_vec(),
    )
    .expect_error(400, "malformed_json");
    s.send(
        "POST",
        path,
        Some("text/plain"),
        b"{\"name\":\"a\"}".to_vec(),
    )
    .expect_error(415, "unsupported_media_type");
    s.send("POST", path, None, b"{\"name\":\"a\"}".to_vec())
        .expect_error(415, "unsupported_media_type");
    let big = format!("{{\"name\":\"{}\"}}", "x".repeat(5000));
    s.send("POST", path, Some("application/json"), big.into_bytes())
        .expect_error(413, "payload_too_large");
    let deep = format!(
        "{{\"name\":\"a\",\"description\":{}1{}}}",
        "[".repeat(70),
        "]".repeat(70)
    );
    s.send("POST", path, Some("application/json"), deep.into_bytes())
        .expect_error(400, "too_deep");
    let m = s
        .post(path, json!({"description": "no name"}))
        .expect_error(422, "invalid_field");
    assert!(m.contains("name"), "{m}");
    let m = s
        .post(path, json!({"name": 42}))
        .expect_error(422, "invalid_field");
    assert!(m.starts_with("name"), "names the field: {m}");
    let m = s
        .post(path, json!({"name": "n".repeat(201)}))
        .expect_error(422, "invalid_field");
    assert!(m.contains("200"), "{m}");
    s.post(path, json!({"name": "   "}))
        .expect_error(422, "invalid_field");
    s.post(path, json!([1, 2]))
        .expect_error(422, "invalid_field");
    assert_eq!(event_count(&s), before, "nothing was stored");
    assert_eq!(
        s.get("/api/v1/projects").expect(200)["items"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
}

#[test]
fn a_body_over_the_limit_is_refused_even_without_content_length() {
    let s = Server::start_with(&["--max-body-bytes", "1024"]);
    let chunk = "x".repeat(2000);
    let body = format!("{{\"name\":\"{chunk}\"}}");
    let request = format!(
        "POST /api/v1/projects HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    let response = s.raw(request.as_bytes());
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(response.contains("payload_too_large"), "{response}");
}

#[test]
fn routes_methods_ids_and_transitions() {
    let s = Server::start();
    s.get("/api/v1/nothing-here")
        .expect_error(404, "route_not_found");
    s.get("/console/nothing-here.js")
        .expect_error(404, "route_not_found");
    s.get("/elsewhere").expect_error(404, "route_not_found");
    let r = s.send(
        "PUT",
        "/api/v1/projects",
        Some("application/json"),
        b"{}".to_vec(),
    );
    r.expect_error(405, "method_not_allowed");
    assert_eq!(r.header("allow"), Some("GET, HEAD, POST"));
    let r = s.send(
        "DELETE",
        "/api/v1/tasks/0190b5c2-1111-7000-8000-000000000000",
        None,
        Vec::new(),
    );
    r.expect_error(405, "method_not_allowed");
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    s.get("/api/v1/tasks/123").expect_error(400, "invalid_id");
    s.get("/api/v1/tasks/0190b5c2-1111-7000-8000-000000000000")
        .expect_error(404, "task_not_found");
    s.get("/api/v1/hitl/0190b5c2-1111-7000-8000-000000000000")
        .expect_error(404, "hitl_request_not_found");
    let p = s.project("p");
    let m = s
        .post(
            &format!("/api/v1/projects/{p}/tasks"),
            json!({"agent_type": "coder", "instructions": "i".repeat(100_001)}),
        )
        .expect_error(422, "invalid_field");
    assert!(m.starts_with("instructions"), "{m}");
    let head = s.send("HEAD", &format!("/api/v1/projects/{p}"), None, Vec::new());
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    // Still up and answering.
    s.get(&format!("/api/v1/projects/{p}")).expect(200);
}

#[test]
fn many_concurrent_writers_all_commit_in_order() {
    let s = Server::start();
    let p = s.project("p");
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                for _ in 0..10 {
                    s.task(&p, "coder");
                }
            });
        }
    });
    let summary = s.get(&format!("/api/v1/projects/{p}")).expect(200);
    assert_eq!(summary["task_counts"]["pending"], 80);
    let events = s.all_events(Some(&p));
    assert_eq!(events.len(), 81);
    assert_eq!(summary["latest_seq"], events.last().unwrap()["seq"]);
}

#[test]
fn half_a_surrogate_pair_is_refused_even_in_raw_content() {
    // serde_json refuses `\ud800` in the strings it decodes, but an artifact's content is kept as
    // sent: stored, it is text no reader can decode.
    let s = Server::start();
    let p = s.project("p");
    let body = |content: &str| {
        format!(
            r#"{{"project_id":"{p}","source_agent":"coder","artifact_type":"source_code","content":{content}}}"#
        )
        .into_bytes()
    };
    let path = "/api/v1/context/artifacts";
    for lone in [
        r#"{"x":"\ud800"}"#,
        r#""\udfff tail""#,
        r#"["\ud83d\u0041"]"#,
    ] {
        s.send("POST", path, Some("application/json"), body(lone))
            .expect_error(422, "invalid_field");
    }
    let listed = s.get(&format!("/api/v1/context/project/{p}/artifacts"));
    assert_eq!(listed.json().as_array().unwrap().len(), 0, "nothing stored");
    // A whole pair is Unicode, and reads back as the character.
    let made = s
        .send(
            "POST",
            path,
            Some("application/json"),
            body(r#"{"x":"\ud83d\ude00"}"#),
        )
        .expect(201);
    let id = made["context_id"].as_str().unwrap();
    let read = s
        .get(&format!("/api/v1/context/artifacts/{id}"))
        .expect(200);
    assert_eq!(read["content"]["x"], "\u{1F600}");
}
