use serde_json::json;

use crate::common::Server;

#[test]
fn every_change_emits_one_event_with_a_gap_free_seq() {
    let s = Server::start();
    let p = s.project("p");
    let a = s.artifact(&p, "project_plan", "analyst", json!({"x": 1}));
    let t = s.task(&p, "coder");
    s.set_status(&t, "working").expect(200);
    s.set_status(&t, "completed").expect(200);
    let t2 = s.task(&p, "tester");
    s.set_status(&t2, "cancelled").expect(200);
    let t3 = s.task(&p, "deployer");
    s.set_status(&t3, "working").expect(200);
    s.set_status(&t3, "failed").expect(200);
    s.patch(
        &format!("/api/v1/context/artifacts/{a}"),
        json!({"metadata": {"k": 1}}),
    )
    .expect(200);
    s.delete(&format!("/api/v1/context/artifacts/{a}"))
        .expect(200);
    let h = s
        .post("/api/v1/hitl", json!({"project_id": p, "question": "ok?"}))
        .expect(201);
    s.post(
        &format!("/api/v1/hitl/{}/respond", h["request_id"].as_str().unwrap()),
        json!({"action": "approve"}),
    )
    .expect(200);
    let events = s.all_events(None);
    crate::common::assert_gap_free(&events);
    let types: Vec<&str> = events
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        vec![
            "project_created",
            "artifact_created",
            "task_created",
            "task_started",
            "agent_status_change",
            "task_completed",
            "agent_status_change",
            "task_created",
            "task_cancelled",
            "task_created",
            "task_started",
            "agent_status_change",
            "task_failed",
            "agent_status_change",
            "artifact_updated",
            "artifact_deleted",
            "hitl_request_created",
            "hitl_response",
        ]
    );
    for e in &events {
        for field in [
            "seq",
            "event_type",
            "project_id",
            "task_id",
            "agent_type",
            "data",
            "timestamp",
        ] {
            assert!(e.get(field).is_some(), "{field} in {e}");
        }
        assert!(e["timestamp"].as_str().unwrap().ends_with('Z'));
    }
    assert_eq!(events[5]["task_id"], t.as_str());
    assert_eq!(events[5]["data"]["status"], "completed");
    // Every event here concerns the project, the agent changes its tasks caused included.
    let mine = s.all_events(Some(&p));
    assert_eq!(mine.len(), events.len());
    assert!(mine.iter().all(|e| e["project_id"] == p.as_str()));
}

#[test]
fn since_and_cursor_resume_after_a_seq() {
    let s = Server::start();
    let p = s.project("p");
    for _ in 0..9 {
        s.task(&p, "coder");
    }
    let page = s.get("/api/v1/events?since=4&limit=3").expect(200);
    let seqs: Vec<u64> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![5, 6, 7]);
    assert_eq!(page["next_cursor"], "7");
    let rest = s.get("/api/v1/events?cursor=7&limit=100").expect(200);
    assert_eq!(rest["items"].as_array().unwrap().len(), 3);
    assert!(rest["next_cursor"].is_null());
    s.get("/api/v1/events?since=-1")
        .expect_error(422, "invalid_field");
    s.get("/api/v1/events?project_id=0190b5c2-1111-7000-8000-000000000000")
        .expect_error(404, "project_not_found");
    s.get("/api/v1/events?project_id=abc")
        .expect_error(400, "invalid_id");
}

#[test]
fn task_events_carry_the_task_as_the_change_left_it() {
    // A client (the console) applies a task event without reading the task again: the event's
    // data holds the worker, the priority and the rest, as a read of the task answers them.
    let s = Server::start();
    let p = s.project("p");
    let created = s
        .post(
            &format!("/api/v1/projects/{p}/tasks"),
            json!({"agent_type": "coder", "instructions": "write it", "priority": 1}),
        )
        .expect(201);
    let t = created["task_id"].as_str().unwrap().to_string();
    let claim = s
        .post(
            "/api/v1/tasks/claim",
            json!({"agent_type": "coder", "worker_id": "coder-7"}),
        )
        .expect(200);
    assert_eq!(claim["task_id"], t.as_str());
    s.post(
        &format!("/api/v1/tasks/{t}/status"),
        json!({"status": "failed", "error_message": "out of disk", "lease_id": claim["lease_id"]}),
    )
    .expect(200);
    let task = s.get(&format!("/api/v1/tasks/{t}")).json();
    let events: Vec<_> = s
        .all_events(Some(&p))
        .into_iter()
        .filter(|e| e["task_id"] == t.as_str() && e["event_type"] != "agent_status_change")
        .collect();
    let seen: Vec<(&str, &serde_json::Value)> = events
        .iter()
        .map(|e| (e["event_type"].as_str().unwrap(), &e["data"]["worker_id"]))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("task_created", &serde_json::Value::Null),
            ("task_started", &json!("coder-7")),
            ("task_failed", &task["worker_id"]),
        ]
    );
    for e in &events {
        assert_eq!(e["data"]["priority"], 1, "{e}");
    }
    let last = &events.last().unwrap()["data"];
    for field in [
        "status",
        "attempts",
        "worker_id",
        "priority",
        "error_message",
    ] {
        assert_eq!(last[field], task[field], "{field}");
    }
    assert_eq!(last["status"], "failed");
    assert_eq!(last["error_message"], "out of disk");
    assert_eq!(events.last().unwrap()["timestamp"], task["updated_at"]);
}

#[test]
fn a_lowered_retention_is_reached_without_writes_and_each_write_keeps_it() {
    // 200 events kept under a retention of 1,000; restarted with 30, the log is trimmed in the
    // background to exactly the newest 30 though nothing is written, and each write afterwards
    // keeps it at 30.
    let s = Server::start_with(&["--event-retention", "1000"]);
    let p = s.project("p");
    for _ in 0..199 {
        s.task(&p, "coder");
    }
    assert_eq!(s.all_events(None).len(), 200);
    let dir = s.stop();
    let s = Server::start_in(dir, &["--event-retention", "30"]);
    let events = crate::common::wait_for("the log to be trimmed to 30", || {
        let events = s.all_events(None);
        (events.len() == 30).then_some(events)
    });
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (171..=200).collect::<Vec<u64>>());
    s.task(&p, "coder");
    let seqs: Vec<u64> = s
        .all_events(None)
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (172..=201).collect::<Vec<u64>>());
    let (ok, report) = crate::common::check(s.stop().path());
    assert!(ok, "{report}");
}

#[test]
fn retention_trims_the_log_and_each_project_index_to_exactly_the_newest_events() {
    // 352 events over a retention of 25: what stays is exactly the newest 25, in the global log
    // and in each project's index alike, after every write.
    let s = Server::start_with(&["--event-retention", "25", "--durability", "none"]);
    let (p, q) = (s.project("p"), s.project("q"));
    for i in 0..350 {
        s.task(if i % 2 == 0 { &p } else { &q }, "coder");
    }
    let latest = s.get("/api/v1/events?since=351&limit=1").expect(200)["items"][0]["seq"]
        .as_u64()
        .unwrap();
    assert_eq!(latest, 352, "two projects and 350 tasks");
    // Each write trims as it appends: exactly 25 as soon as the writes are answered.
    let events = s.all_events(None);
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (328..=352).collect::<Vec<u64>>());
    for project in [&p, &q] {
        let indexed: Vec<u64> = s
            .all_events(Some(project))
            .iter()
            .map(|e| e["seq"].as_u64().unwrap())
            .collect();
        let expected: Vec<u64> = events
            .iter()
            .filter(|e| e["project_id"] == project.as_str())
            .map(|e| e["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(indexed, expected, "project {project}");
        assert!(!indexed.is_empty());
    }
}
