//! Workers: claims are exclusive, leases expire without heartbeats, failures retry with backoff and
//! escalate after the last attempt, long work times out, HITL requests expire, and timers survive
//! a restart. Durations are milliseconds, configured per server.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use crate::common::{Server, check, wait_for};

fn claim(s: &Server, agent: &str, worker: &str, lease: f64) -> Option<Value> {
    let r = s.post(
        "/api/v1/tasks/claim",
        json!({"agent_type": agent, "worker_id": worker, "lease_seconds": lease}),
    );
    match r.status {
        200 => Some(r.json()),
        204 => None,
        other => panic!("claim answered {other}: {}", r.body),
    }
}

fn task(s: &Server, id: &str) -> Value {
    s.get(&format!("/api/v1/tasks/{id}")).expect(200)
}

fn parse_time(ts: &str) -> SystemTime {
    SystemTime::from(chrono::DateTime::parse_from_rfc3339(ts).unwrap())
}

#[test]
fn twenty_claimers_take_five_hundred_tasks_exactly_once() {
    let s = Server::start_with(&["--durability", "none"]);
    let p = s.project("p");
    let mut created = HashSet::new();
    for _ in 0..500 {
        created.insert(s.task(&p, "coder"));
    }
    let s = &s;
    let claimed: Vec<(String, String)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..20)
            .map(|w| {
                scope.spawn(move || {
                    let name = format!("worker-{w}");
                    let mut mine = Vec::new();
                    while let Some(t) = claim(s, "coder", &name, 60.0) {
                        assert_eq!(t["status"], "working");
                        assert_eq!(t["worker_id"], name.as_str());
                        mine.push((t["task_id"].as_str().unwrap().to_string(), name.clone()));
                    }
                    mine
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    assert_eq!(claimed.len(), 500, "every task claimed once, none twice");
    let ids: HashSet<String> = claimed.iter().map(|(t, _)| t.clone()).collect();
    assert_eq!(ids, created);
    for (id, worker) in claimed.iter().step_by(25) {
        assert_eq!(task(s, id)["worker_id"], worker.as_str());
    }
    assert!(
        claim(s, "tester", "w", 1.0).is_none(),
        "another agent type has nothing"
    );
    let summary = s.get(&format!("/api/v1/projects/{p}")).expect(200);
    assert_eq!(summary["task_counts"]["working"], 500);
}

#[test]
fn oldest_first_and_bad_claims() {
    let s = Server::start();
    let p = s.project("p");
    let first = s.task(&p, "analyst");
    let _second = s.task(&p, "analyst");
    let got = claim(&s, "analyst", "w", 10.0).unwrap();
    assert_eq!(got["task_id"], first.as_str(), "the oldest pending task");
    assert_eq!(
        s.get("/api/v1/agents/status/analyst").expect(200)["status"],
        "working"
    );
    s.post(
        "/api/v1/tasks/claim",
        json!({"agent_type": "wizard", "worker_id": "w"}),
    )
    .expect_error(422, "invalid_field");
    s.post(
        "/api/v1/tasks/claim",
        json!({"agent_type": "coder", "worker_id": ""}),
    )
    .expect_error(422, "invalid_field");
    s.post(
        "/api/v1/tasks/claim",
        json!({"agent_type": "coder", "worker_id": "w", "lease_seconds": -1}),
    )
    .expect_error(422, "invalid_field");
    s.post("/api/v1/tasks/claim", json!({"worker_id": "w"}))
        .expect_error(422, "invalid_field");
}

#[test]
fn a_lease_without_heartbeats_expires_and_another_worker_finishes() {
    let s = Server::start_with(&["--timer-tick-ms", "20"]);
    let p = s.project("p");
    let t = s.task(&p, "coder");
    let first = claim(&s, "coder", "dies", 0.2).unwrap();
    assert_eq!(first["task_id"], t.as_str());
    let back = wait_for("the lease to expire", || {
        let v = task(&s, &t);
        (v["status"] == "pending").then_some(v)
    });
    assert!(back["worker_id"].is_null() && back["lease_expires_at"].is_null());
    assert_eq!(back["attempts"], 1);
    let types: Vec<String> = s
        .all_events(Some(&p))
        .iter()
        .map(|e| e["event_type"].as_str().unwrap().to_string())
        .collect();
    assert!(
        types.contains(&"task_lease_expired".to_string()),
        "{types:?}"
    );
    let second = claim(&s, "coder", "lives", 30.0).unwrap();
    assert_eq!(second["task_id"], t.as_str());
    assert_eq!(second["attempts"], 2, "the attempt count was raised");
    s.post(
        &format!("/api/v1/tasks/{t}/status"),
        json!({"status": "completed", "output": {"ok": true}}),
    )
    .expect(200);
    assert_eq!(task(&s, &t)["status"], "completed");
}

#[test]
fn heartbeats_extend_the_lease_for_its_worker_only() {
    let s = Server::start_with(&["--timer-tick-ms", "20"]);
    let p = s.project("p");
    let t = s.task(&p, "coder");
    let claimed = claim(&s, "coder", "w1", 0.3).unwrap();
    let first_deadline = parse_time(claimed["lease_expires_at"].as_str().unwrap());
    let beat = s
        .post(
            &format!("/api/v1/tasks/{t}/heartbeat"),
            json!({"worker_id": "w1", "lease_seconds": 30}),
        )
        .expect(200);
    assert!(parse_time(beat["lease_expires_at"].as_str().unwrap()) > first_deadline);
    s.post(
        &format!("/api/v1/tasks/{t}/heartbeat"),
        json!({"worker_id": "w2"}),
    )
    .expect_error(409, "invalid_transition");
    // A heartbeat needs no body.
    s.send(
        "POST",
        &format!("/api/v1/tasks/{t}/heartbeat"),
        None,
        Vec::new(),
    )
    .expect(200);
    // Past the first deadline, the task is still the worker's.
    wait_for("the first deadline to pass", || {
        (SystemTime::now() > first_deadline + Duration::from_millis(100)).then_some(())
    });
    let v = task(&s, &t);
    assert_eq!(v["status"], "working");
    assert_eq!(v["worker_id"], "w1");
    let other = s.task(&p, "coder");
    s.post(&format!("/api/v1/tasks/{other}/heartbeat"), json!({}))
        .expect_error(409, "invalid_transition");
    s.post(
        "/api/v1/tasks/0190b5c2-1111-7000-8000-000000000000/heartbeat",
        json!({}),
    )
    .expect_error(404, "task_not_found");
}

#[test]
fn failures_retry_with_backoff_then_escalate() {
    let s = Server::start_with(&["--timer-tick-ms", "20", "--retry-backoff-ms", "50"]);
    let p = s.project("p");
    let t = s.task(&p, "tester");
    for attempt in 1..=3 {
        let got = wait_for("the task to be claimable", || {
            claim(&s, "tester", "w", 30.0)
        });
        assert_eq!(got["task_id"], t.as_str());
        assert_eq!(got["attempts"], attempt);
        let failed = s
            .post(
                &format!("/api/v1/tasks/{t}/status"),
                json!({"status": "failed", "error_message": format!("boom {attempt}")}),
            )
            .expect(200);
        assert_eq!(failed["failures"], attempt);
        if attempt < 3 {
            assert!(failed["retry_at"].is_string(), "a retry is scheduled");
        } else {
            assert!(failed["retry_at"].is_null(), "no more retries");
        }
    }
    let escalation = wait_for("the escalation request", || {
        let pending = s
            .get(&format!("/api/v1/hitl/project/{p}/requests?status=pending"))
            .expect(200);
        pending
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["task_id"] == t.as_str())
            .cloned()
    });
    assert!(
        escalation["question"]
            .as_str()
            .unwrap()
            .contains("failed 3 times"),
        "{escalation}"
    );
    assert_eq!(task(&s, &t)["status"], "failed", "it stays failed");
    let agent = s.get("/api/v1/agents/status/tester").expect(200);
    assert_eq!(agent["status"], "error");
    assert!(agent["error_message"].as_str().unwrap().contains("boom 3"));
    let types: Vec<String> = s
        .all_events(Some(&p))
        .iter()
        .map(|e| e["event_type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        types.iter().filter(|t| *t == "task_retried").count(),
        2,
        "{types:?}"
    );
    assert_eq!(types.iter().filter(|t| *t == "task_failed").count(), 3);
}

#[test]
fn work_longer_than_the_timeout_is_a_failed_attempt() {
    let s = Server::start_with(&[
        "--timer-tick-ms",
        "20",
        "--task-timeout-ms",
        "200",
        "--retry-backoff-ms",
        "60000",
    ]);
    let p = s.project("p");
    let t = s.task(&p, "deployer");
    claim(&s, "deployer", "slow", 600.0).unwrap();
    let v = wait_for("the timeout", || {
        let v = task(&s, &t);
        (v["status"] == "failed").then_some(v)
    });
    assert_eq!(v["failures"], 1);
    assert!(
        v["error_message"].as_str().unwrap().contains("timed out"),
        "{v}"
    );
    assert!(v["retry_at"].is_string());
}

#[test]
fn hitl_requests_expire_by_themselves() {
    let s = Server::start_with(&["--timer-tick-ms", "20"]);
    let p = s.project("p");
    let h = s
        .post(
            "/api/v1/hitl",
            json!({"project_id": p, "question": "ok?", "expires_in_seconds": 1}),
        )
        .expect(201);
    let id = h["request_id"].as_str().unwrap();
    wait_for("the request to expire", || {
        (s.get(&format!("/api/v1/hitl/{id}")).expect(200)["status"] == "expired").then_some(())
    });
    let types: Vec<String> = s
        .all_events(Some(&p))
        .iter()
        .map(|e| e["event_type"].as_str().unwrap().to_string())
        .collect();
    assert!(types.contains(&"hitl_expired".to_string()));
    assert!(
        s.get("/api/v1/hitl/pending")
            .expect(200)
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn a_restart_in_the_middle_of_a_lease_keeps_its_deadline() {
    let s = Server::start_with(&["--timer-tick-ms", "20"]);
    let p = s.project("p");
    let t = s.task(&p, "coder");
    let claimed = claim(&s, "coder", "w", 2.0).unwrap();
    let deadline = claimed["lease_expires_at"].as_str().unwrap().to_string();
    let dir = s.stop();
    let (ok, report) = check(dir.path());
    assert!(ok, "{report}");
    let s = Server::start_in(dir, &["--timer-tick-ms", "20"]);
    let v = task(&s, &t);
    assert_eq!(
        v["lease_expires_at"],
        deadline.as_str(),
        "the stored deadline"
    );
    assert_eq!(v["status"], "working");
    wait_for("the lease to expire after the restart", || {
        (task(&s, &t)["status"] == "pending").then_some(())
    });
    assert!(SystemTime::now() >= parse_time(&deadline));
    let dir = s.stop();
    let (ok, report) = check(dir.path());
    assert!(ok, "{report}");
}
