//! Queues an operator steers: pause and resume an agent type's queue or a project, a concurrency
//! limit, and what `GET /api/v1/queues` shows; all persisted and all in the event log.

use serde_json::{Value, json};

use crate::common::{Server, wait_for};

fn claim(s: &Server, agent: &str) -> Option<Value> {
    let r = s.post(
        "/api/v1/tasks/claim",
        json!({"agent_type": agent, "worker_id": "w", "lease_seconds": 60}),
    );
    match r.status {
        200 => Some(r.json()),
        204 => None,
        other => panic!("claim answered {other}: {}", r.body),
    }
}

fn queue(s: &Server, agent: &str) -> Value {
    let all = s.get("/api/v1/queues").expect(200);
    let queues = all["queues"].as_array().unwrap();
    assert_eq!(queues.len(), 6, "one per agent type");
    queues
        .iter()
        .find(|q| q["agent_type"] == agent)
        .unwrap()
        .clone()
}

#[test]
fn a_paused_queue_hands_out_nothing_and_resuming_wakes_its_waiting_claims() {
    let s = Server::start();
    let p = s.project("p");
    let t = s.task(&p, "coder");
    let q = queue(&s, "coder");
    assert_eq!(q["paused"], false);
    assert_eq!(q["pending"], 1);
    assert!(q["oldest_pending_age_seconds"].as_f64().unwrap() >= 0.0);
    assert!(q["max_working"].is_null());
    assert!(queue(&s, "tester")["oldest_pending_age_seconds"].is_null());
    let paused = s.post("/api/v1/queues/coder/pause", json!({})).expect(200);
    assert_eq!(paused["paused"], true);
    assert!(
        claim(&s, "coder").is_none(),
        "a paused queue hands out nothing"
    );
    assert_eq!(
        s.get(&format!("/api/v1/tasks/{t}")).expect(200)["status"],
        "pending"
    );
    std::thread::scope(|scope| {
        let waiting = scope.spawn(|| {
            s.post(
                "/api/v1/tasks/claim",
                json!({"agent_type": "coder", "worker_id": "patient", "wait_ms": 20_000}),
            )
        });
        wait_for("the claim to wait", || {
            (queue(&s, "coder")["workers_waiting"] == 1).then_some(())
        });
        s.post("/api/v1/queues/coder/resume", json!({})).expect(200);
        let got = waiting.join().unwrap().expect(200);
        assert_eq!(
            got["task_id"],
            t.as_str(),
            "resuming woke the waiting claim"
        );
    });
    // Persisted: a restart keeps the queue paused.
    s.post("/api/v1/queues/tester/pause", json!({})).expect(200);
    let dir = s.stop();
    let s = Server::start_in(dir, &[]);
    assert_eq!(queue(&s, "tester")["paused"], true);
    let types: Vec<String> = s
        .all_events(None)
        .iter()
        .map(|e| e["event_type"].as_str().unwrap().to_string())
        .collect();
    for kind in ["queue_paused", "queue_resumed"] {
        assert!(types.iter().any(|t| t == kind), "{kind} in {types:?}");
    }
    s.post("/api/v1/queues/Wizard/pause", json!({}))
        .expect_error(422, "invalid_field");
}

#[test]
fn max_working_limits_claims_and_a_finished_task_makes_room() {
    let s = Server::start();
    let p = s.project("p");
    for _ in 0..3 {
        s.task(&p, "tester");
    }
    let limited = s
        .patch("/api/v1/queues/tester", json!({"max_working": 2}))
        .expect(200);
    assert_eq!(limited["max_working"], 2);
    let a = claim(&s, "tester").unwrap();
    claim(&s, "tester").unwrap();
    assert!(claim(&s, "tester").is_none(), "no claim beyond 2 working");
    assert_eq!(queue(&s, "tester")["working"], 2);
    assert_eq!(queue(&s, "tester")["pending"], 1);
    // A claim waiting at the limit is handed the pending task by the completion that makes room.
    std::thread::scope(|scope| {
        let waiter = scope.spawn(|| {
            s.post(
                "/api/v1/tasks/claim",
                json!({"agent_type": "tester", "worker_id": "waiter", "wait_ms": 20_000}),
            )
        });
        wait_for("the claim to wait", || {
            (queue(&s, "tester")["workers_waiting"] == 1).then_some(())
        });
        let id = a["task_id"].as_str().unwrap();
        s.post(
            &format!("/api/v1/tasks/{id}/status"),
            json!({"status": "completed", "lease_id": a["lease_id"]}),
        )
        .expect(200);
        let got = waiter.join().unwrap().expect(200);
        let held = s
            .get(&format!(
                "/api/v1/tasks/{}",
                got["task_id"].as_str().unwrap()
            ))
            .expect(200);
        assert_eq!(held["status"], "working");
        assert_eq!(held["worker_id"], "waiter");
    });
    assert_eq!(queue(&s, "tester")["working"], 2);
    assert_eq!(queue(&s, "tester")["pending"], 0);
    let lifted = s
        .patch("/api/v1/queues/tester", json!({"max_working": null}))
        .expect(200);
    assert!(lifted["max_working"].is_null());
    for bad in [
        json!({}),
        json!({"max_working": -1}),
        json!({"max_working": "2"}),
        json!({"limit": 2}),
    ] {
        s.patch("/api/v1/queues/tester", bad)
            .expect_error(422, "invalid_field");
    }
    let types: Vec<String> = s
        .all_events(None)
        .iter()
        .map(|e| e["event_type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        types.iter().filter(|t| *t == "queue_limit_changed").count(),
        2
    );
}

#[test]
fn a_paused_project_is_skipped_and_its_turn_comes_back_when_resumed() {
    let s = Server::start();
    let paused = s.project("paused");
    let open = s.project("open");
    let held = s.task(&paused, "architect");
    let free = s.task(&open, "architect");
    let r = s
        .post(&format!("/api/v1/projects/{paused}/pause"), json!({}))
        .expect(200);
    assert_eq!(r["paused"], true);
    let got = claim(&s, "architect").unwrap();
    assert_eq!(
        got["task_id"],
        free.as_str(),
        "the paused project's task is skipped"
    );
    assert!(claim(&s, "architect").is_none());
    s.post(&format!("/api/v1/projects/{paused}/resume"), json!({}))
        .expect(200);
    assert_eq!(claim(&s, "architect").unwrap()["task_id"], held.as_str());
    let types: Vec<String> = s
        .all_events(Some(&paused))
        .iter()
        .map(|e| e["event_type"].as_str().unwrap().to_string())
        .collect();
    assert!(types.contains(&"project_paused".to_string()), "{types:?}");
    assert!(types.contains(&"project_resumed".to_string()), "{types:?}");
    s.post(
        "/api/v1/projects/0190b5c2-1111-7000-8000-000000000000/pause",
        json!({}),
    )
    .expect_error(404, "project_not_found");
}

#[test]
fn queue_wait_feeds_the_monitoring_api_and_its_alert() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("flightdeck.toml");
    std::fs::write(
        &config,
        "[[alert_rules]]\nname = \"QueueWaitHigh\"\nsignal = \"queue_wait_p99\"\nthreshold = 0.0\n\
         window_seconds = 60\nfor_seconds = 0\nkeep_firing_for_seconds = 0\nsummary = \"test\"\n",
    )
    .unwrap();
    let s = Server::start_with(&[
        "--config",
        config.to_str().unwrap(),
        "--alert-eval-interval-secs",
        "1",
    ]);
    let rule = |s: &Server| {
        s.get("/api/v1/monitoring/alerts").expect(200)["rules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "QueueWaitHigh")
            .unwrap()
            .clone()
    };
    assert_eq!(rule(&s)["state"], "inactive");
    let p = s.project("p");
    let perf = s.get("/api/v1/monitoring/performance").expect(200);
    assert_eq!(perf["queue_wait"]["claims"], 0);
    let started = std::time::Instant::now();
    s.task(&p, "coder");
    claim(&s, "coder").unwrap();
    let waited = started.elapsed().as_secs_f64();
    let perf = s.get("/api/v1/monitoring/performance").expect(200);
    assert_eq!(perf["queue_wait"]["claims"], 1);
    let p99 = perf["queue_wait"]["p99_seconds"].as_f64().unwrap();
    // The wait the server measured: from the task's commit to the claim's, within what the
    // client saw around both.
    assert!(p99 > 0.0 && p99 <= waited, "{p99} vs {waited}");
    let fired = wait_for("QueueWaitHigh to fire", || {
        let r = rule(&s);
        (r["state"] == "firing").then_some(r)
    });
    assert_eq!(fired["value"].as_f64().unwrap(), p99);
}
