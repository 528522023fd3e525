//! Budgets that stop spend: a warning, then an exhausted scope whose running worker is stopped at
//! its next report or heartbeat and whose tasks claims skip, until the budget is raised (which
//! serves a waiting claim at once) or removed.

use crate::common::*;
use serde_json::{Value, json};

fn claim(s: &Server, agent: &str, wait_ms: u64) -> Resp {
    s.post(
        "/api/v1/tasks/claim",
        json!({"agent_type": agent, "worker_id": "w", "wait_ms": wait_ms}),
    )
}

fn usage(s: &Server, task: &str, lease: &str, id: &str, tokens: u64) -> Resp {
    s.post(
        &format!("/api/v1/tasks/{task}/usage"),
        json!({"lease_id": lease, "report_id": id, "model": "m",
               "input_tokens": tokens, "output_tokens": 0}),
    )
}

fn events_of(s: &Server, kind: &str) -> Vec<Value> {
    s.all_events(None)
        .into_iter()
        .filter(|e| e["event_type"] == kind)
        .collect()
}

#[test]
fn a_budget_warns_stops_its_scope_and_raising_it_serves_the_waiting_claim() {
    let s = Server::start_with(&["--alert-eval-interval-secs", "1"]);
    let p = s.project("capped");
    let other = s.project("free");
    let t1 = s.task(&p, "developer");
    s.task(&p, "developer");
    let scope = format!("project:{p}");
    let set = s
        .put(
            &format!("/api/v1/budgets/{scope}"),
            json!({"max_tokens": 1000, "warn_percent": 50}),
        )
        .expect(201);
    assert_eq!(set["state"], "ok");
    assert_eq!(set["window"], "total");
    assert_eq!(set["used"]["total_tokens"], 0);

    let c = claim(&s, "developer", 0).expect(200);
    let (task, lease) = (
        c["task_id"].as_str().unwrap().to_string(),
        c["lease_id"].as_str().unwrap().to_string(),
    );
    assert_eq!(task, t1);
    usage(&s, &task, &lease, "a", 600).expect(201);
    let b = s.get(&format!("/api/v1/budgets/{scope}")).expect(200);
    assert_eq!(b["state"], "warning");
    assert_eq!(b["used"]["input_tokens"], 600);
    assert!((b["ratio"].as_f64().unwrap() - 0.6).abs() < 1e-9);
    let warned = events_of(&s, "budget_warning");
    assert_eq!(warned.len(), 1);
    assert_eq!(warned[0]["data"]["scope"], scope.as_str());
    assert_eq!(warned[0]["data"]["reason"], "reported");
    assert_eq!(warned[0]["project_id"], p.as_str());
    wait_for("BudgetBurnHigh to fire", || {
        (alert_state(&s, "BudgetBurnHigh") == "firing").then_some(())
    });
    s.post(
        &format!("/api/v1/tasks/{task}/heartbeat"),
        json!({"lease_id": lease}),
    )
    .expect(200);

    // The report that uses it up is recorded, and answers 409: the task went back to pending.
    let message = usage(&s, &task, &lease, "b", 500).expect_error(409, "budget_exhausted");
    assert!(message.contains(&scope), "{message}");
    let t = s.get(&format!("/api/v1/tasks/{task}")).expect(200);
    assert_eq!(t["status"], "pending");
    assert_eq!(t["usage"]["input_tokens"], 1100);
    let b = s.get(&format!("/api/v1/budgets/{scope}")).expect(200);
    assert_eq!(b["state"], "exhausted");
    assert_eq!(events_of(&s, "budget_exhausted").len(), 1);
    assert_eq!(events_of(&s, "task_held").len(), 1);
    // A human is asked, in the project, to raise the budget or cancel the work.
    let asked = s
        .get(&format!("/api/v1/hitl/project/{p}/requests"))
        .expect(200);
    let asked = asked
        .as_array()
        .or_else(|| asked["items"].as_array())
        .unwrap()
        .clone();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert!(asked[0]["question"].as_str().unwrap().contains(&scope));
    assert_eq!(
        asked[0]["options"],
        json!(["raise the budget", "cancel the work"])
    );
    // Its old lease is gone: the worker's next heartbeat is refused.
    s.post(
        &format!("/api/v1/tasks/{task}/heartbeat"),
        json!({"lease_id": lease}),
    )
    .expect_error(409, "lease_lost");

    // Claims skip the held project, not the others; the queues say which projects are held.
    assert_eq!(claim(&s, "developer", 0).status, 204);
    let queues = s.get("/api/v1/queues").expect(200);
    assert_eq!(queues["projects_held_by_budget"], json!([p]));
    let free = s.task(&other, "developer");
    let c = claim(&s, "developer", 0).expect(200);
    assert_eq!(c["task_id"], free.as_str());
    let list = s.get("/api/v1/budgets").expect(200);
    assert_eq!(list["items"][0]["state"], "exhausted");

    // A claim waiting for work is served the moment the budget is raised.
    let url = s.url("/api/v1/tasks/claim");
    let waiting = std::thread::spawn(move || {
        ureq::post(&url)
            .config()
            .http_status_as_error(false)
            .build()
            .send_json(json!({"agent_type": "developer", "worker_id": "w2", "wait_ms": 20000}))
            .map(|mut r| (r.status().as_u16(), r.body_mut().read_to_string().unwrap()))
            .unwrap()
    });
    wait_for("the claim to wait", || {
        let q = s.get("/api/v1/queues").expect(200);
        q.as_array()
            .or_else(|| q["queues"].as_array())
            .and_then(|qs| {
                qs.iter()
                    .find(|x| x["agent_type"] == "developer" && x["workers_waiting"] == 1)
                    .cloned()
            })
    });
    let raised = s
        .put(
            &format!("/api/v1/budgets/{scope}"),
            json!({"max_tokens": 5000, "warn_percent": 50}),
        )
        .expect(200);
    assert_eq!(raised["state"], "ok");
    assert_eq!(raised["used"]["input_tokens"], 1100);
    let (status, body) = waiting.join().unwrap();
    assert_eq!(status, 200, "{body}");
    let served: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(served["project_id"], p.as_str());
    let restored = events_of(&s, "budget_restored");
    assert_eq!(restored.len(), 1);
    assert_eq!(restored[0]["data"]["reason"], "set");
    assert_eq!(restored[0]["data"]["state"], "ok");
    let (ok, out) = check(s.stop().path());
    assert!(ok, "{out}");
}

#[test]
fn an_exhausted_scope_stops_heartbeats_and_progress_until_it_is_removed() {
    let s = Server::start();
    let p = s.project("p");
    let a = s.task(&p, "coder.v2");
    let b = s.task(&p, "coder.v2");
    let lease = |c: Value| c["lease_id"].as_str().unwrap().to_string();
    let la = lease(claim(&s, "coder.v2", 0).expect(200));
    let lb = lease(claim(&s, "coder.v2", 0).expect(200));
    s.put(
        "/api/v1/budgets/agent_type:coder.v2",
        json!({"max_cost_usd": 1.0, "window": "day"}),
    )
    .expect(201);
    // Task a's report spends the whole dollar: a is held at once.
    s.post(
        &format!("/api/v1/tasks/{a}/usage"),
        json!({"lease_id": la, "report_id": "x", "model": "m", "input_tokens": 1,
               "output_tokens": 1, "cost_usd": 1.0}),
    )
    .expect_error(409, "budget_exhausted");
    // Task b learns it at its next progress report, then its heartbeat meets a lost lease.
    s.post(
        &format!("/api/v1/tasks/{b}/progress"),
        json!({"lease_id": lb, "message": "still going"}),
    )
    .expect_error(409, "budget_exhausted");
    assert_eq!(
        s.get(&format!("/api/v1/tasks/{b}")).expect(200)["status"],
        "pending"
    );
    let budget = s.get("/api/v1/budgets/agent_type:coder.v2").expect(200);
    assert_eq!(budget["state"], "exhausted");
    assert_eq!(budget["window"], "day");
    assert!(
        budget["window_start"]
            .as_str()
            .unwrap()
            .ends_with("T00:00:00.000000Z")
    );
    assert_eq!(claim(&s, "coder.v2", 0).status, 204);
    let queues = s.get("/api/v1/queues").expect(200);
    let queue = queues["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["agent_type"] == "coder.v2")
        .unwrap()
        .clone();
    assert_eq!(queue["held_by_budget"], "agent_type:coder.v2");
    assert_eq!(queue["pending"], 2);
    assert!(
        s.get("/metrics")
            .body
            .contains("flightdeck_queue_held_by_budget{agent_type=\"coder.v2\"} 1")
    );
    // Removed: its work is served again.
    assert_eq!(s.delete("/api/v1/budgets/agent_type:coder.v2").status, 204);
    s.get("/api/v1/budgets/agent_type:coder.v2")
        .expect_error(404, "not_found");
    let c = claim(&s, "coder.v2", 0).expect(200);
    // A heartbeat under a global budget that ran out (tokens, with no cost reported).
    s.put("/api/v1/budgets/global", json!({"max_tokens": 10}))
        .expect(201);
    let (t, l) = (c["task_id"].as_str().unwrap(), lease(c.clone()));
    s.post(
        &format!("/api/v1/tasks/{t}/heartbeat"),
        json!({"lease_id": l, "usage": {"report_id": "y", "model": "m", "input_tokens": 10, "output_tokens": 0}}),
    )
    .expect_error(409, "budget_exhausted");
    assert_eq!(
        s.get(&format!("/api/v1/tasks/{t}")).expect(200)["status"],
        "pending"
    );
    assert_eq!(claim(&s, "coder.v2", 0).status, 204);
}

#[test]
fn bad_budgets_are_refused_by_field() {
    let s = Server::start();
    let p = s.project("p");
    let put = |scope: &str, body: Value| s.put(&format!("/api/v1/budgets/{scope}"), body);
    for (scope, body, field) in [
        ("global", json!({}), "max_cost_usd"),
        ("global", json!({"max_cost_usd": 0}), "max_cost_usd"),
        ("global", json!({"max_tokens": 0}), "max_tokens"),
        (
            "global",
            json!({"max_tokens": 5, "window": "week"}),
            "window",
        ),
        (
            "global",
            json!({"max_tokens": 5, "warn_percent": 0}),
            "warn_percent",
        ),
        (
            "global",
            json!({"max_tokens": 5, "surprise": 1}),
            "surprise",
        ),
        ("team:x", json!({"max_tokens": 5}), "scope"),
        ("project:nope", json!({"max_tokens": 5}), "scope"),
    ] {
        let message = put(scope, body).expect_error(422, "invalid_field");
        assert!(message.contains(field), "{field}: {message}");
    }
    put(
        "project:01900000-0000-7000-8000-000000000000",
        json!({"max_tokens": 5}),
    )
    .expect_error(404, "project_not_found");
    // The scope may come percent-encoded; it is stored under its canonical spelling.
    let b = put(
        &format!("project%3A{}", p.to_uppercase()),
        json!({"max_tokens": 5}),
    )
    .expect(201);
    assert_eq!(b["scope"], format!("project:{p}").as_str());
    assert_eq!(
        s.get("/api/v1/budgets").expect(200)["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn a_completion_that_uses_the_budget_up_still_completes() {
    let s = Server::start();
    let p = s.project("p");
    let t = s.task(&p, "tester");
    let c = claim(&s, "tester", 0).expect(200);
    s.put(
        &format!("/api/v1/budgets/project:{p}"),
        json!({"max_tokens": 10}),
    )
    .expect(201);
    let done = s
        .post(
            &format!("/api/v1/tasks/{t}/status"),
            json!({"status": "completed", "lease_id": c["lease_id"], "output": {"ok": true},
                   "usage": {"report_id": "last", "model": "m", "input_tokens": 50, "output_tokens": 0}}),
        )
        .expect(200);
    assert_eq!(done["status"], "completed");
    let b = s.get(&format!("/api/v1/budgets/project:{p}")).expect(200);
    assert_eq!(b["state"], "exhausted");
    assert_eq!(b["used"]["input_tokens"], 50);
    assert!(events_of(&s, "task_held").is_empty());
}
