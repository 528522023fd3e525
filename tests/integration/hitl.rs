use std::time::{Duration, SystemTime};

use serde_json::json;

use crate::common::Server;

fn create(s: &Server, project: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut body = json!({"project_id": project, "question": "Ship it?", "options": ["yes", "no"]});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    s.post("/api/v1/hitl", body).expect(201)
}

#[test]
fn approve_once_with_history() {
    let s = Server::start();
    let p = s.project("p");
    let t = s.task(&p, "architect");
    let h = create(&s, &p, json!({"task_id": t}));
    let id = h["request_id"].as_str().unwrap();
    assert_eq!(h["status"], "pending");
    assert_eq!(h["task_id"], t.as_str());
    assert_eq!(h["options"][1], "no");
    let r = s
        .post(
            &format!("/api/v1/hitl/{id}/respond"),
            json!({"action": "approve", "comment": "lgtm"}),
        )
        .expect(200);
    assert_eq!(r["request_id"], id);
    assert_eq!(r["action"], "approve");
    assert_eq!(r["status"], "approved");
    assert_eq!(r["message"], "Request approved.");
    // No workflow waits on this request.
    assert_eq!(r["workflow_resumed"], false);
    s.post(
        &format!("/api/v1/hitl/{id}/respond"),
        json!({"action": "reject"}),
    )
    .expect_error(409, "invalid_transition");
    let got = s.get(&format!("/api/v1/hitl/{id}")).expect(200);
    assert_eq!(got["status"], "approved");
    assert_eq!(got["user_response"], "approved");
    let history = s.get(&format!("/api/v1/hitl/{id}/history")).expect(200);
    let actions: Vec<&str> = history["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, vec!["created", "approve"]);
    assert_eq!(history["history"][1]["comment"], "lgtm");
}

#[test]
fn amend_needs_content_and_keeps_it() {
    let s = Server::start();
    let p = s.project("p");
    let id = create(&s, &p, json!({}))["request_id"]
        .as_str()
        .unwrap()
        .to_string();
    s.post(
        &format!("/api/v1/hitl/{id}/respond"),
        json!({"action": "amend"}),
    )
    .expect_error(422, "invalid_field");
    s.post(
        &format!("/api/v1/hitl/{id}/respond"),
        json!({"action": "maybe"}),
    )
    .expect_error(422, "invalid_field");
    let r = s
        .post(
            &format!("/api/v1/hitl/{id}/respond"),
            json!({"action": "amend", "content": {"plan": "B"}, "comment": "use B"}),
        )
        .expect(200);
    assert_eq!(r["status"], "amended");
    let got = s.get(&format!("/api/v1/hitl/{id}")).expect(200);
    assert_eq!(got["amended_content"]["amended_content"]["plan"], "B");
    assert_eq!(got["amended_content"]["comment"], "use B");
}

#[test]
fn lists_pending_and_bulk_approval() {
    let s = Server::start();
    let p = s.project("p");
    let q = s.project("q");
    let a = create(&s, &p, json!({}))["request_id"]
        .as_str()
        .unwrap()
        .to_string();
    let b = create(&s, &p, json!({}))["request_id"]
        .as_str()
        .unwrap()
        .to_string();
    let c = create(&s, &q, json!({}))["request_id"]
        .as_str()
        .unwrap()
        .to_string();
    s.post(
        &format!("/api/v1/hitl/{b}/respond"),
        json!({"action": "reject"}),
    )
    .expect(200);
    let ids = |v: serde_json::Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|h| h["request_id"].as_str().unwrap().to_string())
            .collect()
    };
    // Newest first, as BotArmy lists them.
    assert_eq!(
        ids(s
            .get(&format!("/api/v1/hitl/project/{p}/requests"))
            .expect(200)),
        vec![b.clone(), a.clone()]
    );
    assert_eq!(
        ids(s
            .get(&format!(
                "/api/v1/hitl/project/{p}/requests?status=rejected"
            ))
            .expect(200)),
        vec![b.clone()]
    );
    assert_eq!(
        ids(s.get("/api/v1/hitl/pending").expect(200)),
        vec![c.clone(), a.clone()]
    );
    // One project's pending requests.
    assert_eq!(
        ids(s
            .get(&format!("/api/v1/hitl/pending?project_id={q}"))
            .expect(200)),
        vec![c.clone()]
    );
    s.get("/api/v1/hitl/pending?project_id=nope")
        .expect_error(400, "invalid_id");
    // Every request carries its history (BotArmy's `history`), attributed to no user yet.
    let rejected = s.get(&format!("/api/v1/hitl/{b}")).expect(200);
    let actions: Vec<&str> = rejected["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, vec!["created", "reject"]);
    assert!(rejected["history"][1]["user_id"].is_null());
    assert!(rejected["history"][1].get("user_id").is_some());
    let untouched = s.get(&format!("/api/v1/hitl/{a}")).expect(200);
    assert_eq!(untouched["history"].as_array().unwrap().len(), 1);
    assert_eq!(
        s.get(&format!("/api/v1/projects/{p}")).expect(200)["pending_hitl_requests"],
        1
    );
    let r = s
        .post(
            "/api/v1/hitl/bulk/approve",
            json!({"request_ids": [a, b, c], "comment": "all fine"}),
        )
        .expect(200);
    assert_eq!(r["approved_count"], 2);
    assert_eq!(r["failed_count"], 1);
    let error = r["errors"][0].as_str().unwrap();
    assert!(error.starts_with(&format!("{b}: ")), "{error}");
    assert_eq!(r["message"], "Approved 2 of 3 requests.");
    assert_eq!(r["skipped"][0]["request_id"], b.as_str());
    assert_eq!(
        ids(s.get("/api/v1/hitl/pending").expect(200)),
        Vec::<String>::new()
    );
    s.post("/api/v1/hitl/bulk/approve", json!({"request_ids": ["x"]}))
        .expect_error(422, "invalid_field");
}

#[test]
fn oversight_level_round_trips() {
    let s = Server::start();
    let p = s.project("p");
    let path = format!("/api/v1/hitl/project/{p}/oversight-level");
    let got = s.get(&path).expect(200);
    assert_eq!(got["oversight_level"], "medium");
    assert_eq!(got["level"], "medium");
    let v = s.post(&path, json!({"level": "high"})).expect(200);
    assert_eq!(v["oversight_level"], "high");
    assert_eq!(v["level"], "high");
    assert_eq!(v["project_id"], p.as_str());
    assert_eq!(v["message"], "Oversight level set to high.");
    assert_eq!(s.get(&path).expect(200)["oversight_level"], "high");
    s.post(&path, json!({"level": "extreme"}))
        .expect_error(422, "invalid_field");
    s.get("/api/v1/hitl/project/0190b5c2-1111-7000-8000-000000000000/oversight-level")
        .expect_error(404, "project_not_found");
}

#[test]
fn an_expired_request_cannot_be_answered() {
    let s = Server::start();
    let p = s.project("p");
    let h = create(&s, &p, json!({"expires_in_seconds": 1}));
    let id = h["request_id"].as_str().unwrap();
    let expires_at = parse_timestamp(h["expires_at"].as_str().unwrap());
    // Wait for the clock to pass the expiry (a condition, not a guess at how long a step takes).
    while SystemTime::now() <= expires_at + Duration::from_millis(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    s.post(
        &format!("/api/v1/hitl/{id}/respond"),
        json!({"action": "approve"}),
    )
    .expect_error(409, "hitl_expired");
    assert_eq!(
        s.get(&format!("/api/v1/hitl/{id}")).expect(200)["status"],
        "expired"
    );
    let types: Vec<String> = s
        .all_events(Some(&p))
        .iter()
        .map(|e| e["event_type"].as_str().unwrap().to_string())
        .collect();
    assert!(types.contains(&"hitl_expired".to_string()), "{types:?}");
    s.post(
        "/api/v1/hitl",
        json!({"project_id": p, "question": "q", "expires_in_seconds": 0}),
    )
    .expect_error(422, "invalid_field");
}

fn parse_timestamp(ts: &str) -> SystemTime {
    SystemTime::from(chrono::DateTime::parse_from_rfc3339(ts).expect("RFC 3339"))
}
