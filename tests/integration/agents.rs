use serde_json::json;

use crate::common::Server;

#[test]
fn agent_status_follows_its_tasks_and_can_be_reset() {
    let s = Server::start();
    let all = s.get("/api/v1/agents/status").expect(200);
    for agent in [
        "orchestrator",
        "analyst",
        "architect",
        "coder",
        "tester",
        "deployer",
    ] {
        assert_eq!(all[agent]["status"], "idle", "{agent}");
        assert_eq!(all[agent]["agent_type"], agent);
    }
    let p = s.project("p");
    let t1 = s.task(&p, "coder");
    let t2 = s.task(&p, "coder");
    s.set_status(&t1, "working").expect(200);
    s.set_status(&t2, "working").expect(200);
    let coder = s.get("/api/v1/agents/status/coder").expect(200);
    assert_eq!(coder["status"], "working");
    assert_eq!(coder["current_task_id"], t2.as_str());
    s.set_status(&t2, "completed").expect(200);
    assert_eq!(
        s.get("/api/v1/agents/status/coder").expect(200)["status"],
        "working",
        "t1 still works"
    );
    s.post(
        &format!("/api/v1/tasks/{t1}/status"),
        json!({"status": "failed", "error_message": "oops"}),
    )
    .expect(200);
    let coder = s.get("/api/v1/agents/status/coder").expect(200);
    assert_eq!(coder["status"], "idle");
    assert_eq!(coder["error_message"], "oops");
    assert_eq!(
        s.get("/api/v1/agents/status").expect(200)["tester"]["status"],
        "idle"
    );

    let reset = s
        .send(
            "POST",
            "/api/v1/agents/status/coder/reset",
            Some("application/json"),
            Vec::new(),
        )
        .expect(200);
    assert_eq!(reset["status"], "idle");
    assert!(reset["error_message"].is_null());

    let history = s.get("/api/v1/agents/status-history/coder").expect(200);
    let statuses: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        vec!["idle", "idle", "working", "working", "working"],
        "newest first"
    );
    // BotArmy's fields: the task the agent was on, and when.
    let newest_working = &history[2];
    assert!(
        newest_working["current_task_id"].is_string(),
        "{newest_working}"
    );
    assert_eq!(newest_working["current_task_id"], newest_working["task_id"]);
    assert_eq!(newest_working["last_activity"], newest_working["timestamp"]);
    assert_eq!(newest_working["updated_at"], newest_working["timestamp"]);
    assert!(history[0]["current_task_id"].is_null(), "reset: no task");
    let page = s.get("/api/v1/agents/status-history/coder?limit=2");
    assert_eq!(page.expect(200).as_array().unwrap().len(), 2);
    let cursor = page
        .header("x-next-cursor")
        .expect("a next cursor")
        .to_string();
    let rest = s
        .get(&format!(
            "/api/v1/agents/status-history/coder?limit=10&cursor={cursor}"
        ))
        .expect(200);
    assert_eq!(rest.as_array().unwrap().len(), 3);

    let events = s.all_events(None);
    let changes: Vec<_> = events
        .iter()
        .filter(|e| e["event_type"] == "agent_status_change")
        .collect();
    assert_eq!(changes.len(), 5);
    assert!(changes.iter().all(|e| e["agent_type"] == "coder"));
    // A change caused by a task is in that task's project stream; the reset is in no project's.
    let (caused, reset): (Vec<&&serde_json::Value>, Vec<_>) =
        changes.iter().partition(|e| e["task_id"].is_string());
    assert_eq!(reset.len(), 1);
    assert!(reset[0]["project_id"].is_null());
    assert!(
        caused.iter().all(|e| e["project_id"] == p.as_str()),
        "{caused:?}"
    );
    let project_log = s.all_events(Some(&p));
    assert_eq!(
        project_log
            .iter()
            .filter(|e| e["event_type"] == "agent_status_change")
            .count(),
        4
    );
}

#[test]
fn malformed_agent_types_are_refused_naming_the_rule() {
    let s = Server::start();
    let m = s
        .get("/api/v1/agents/status/Wizard")
        .expect_error(422, "invalid_field");
    assert!(m.contains("`Wizard` is not a name"), "{m}");
    s.send(
        "POST",
        "/api/v1/agents/status/wiz%20ard/reset",
        Some("application/json"),
        Vec::new(),
    )
    .expect_error(422, "invalid_field");
    let p = s.project("p");
    let m = s
        .post(
            &format!("/api/v1/projects/{p}/tasks"),
            json!({"agent_type": "-wizard", "instructions": "x"}),
        )
        .expect_error(422, "invalid_field");
    assert!(m.starts_with("agent_type"), "{m}");
}
