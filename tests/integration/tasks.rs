use serde_json::json;

use crate::common::Server;

#[test]
fn create_returns_201_with_task_id_and_context() {
    let s = Server::start();
    let p = s.project("p");
    let a = s.artifact(&p, "project_plan", "analyst", json!({"plan": 1}));
    let v = s
        .post(
            &format!("/api/v1/projects/{p}/tasks"),
            json!({"agent_type": "coder", "instructions": "build", "context_ids": [a]}),
        )
        .expect(201);
    assert_eq!(v["status"], "pending");
    assert_eq!(v["context_ids"][0], a.as_str());
    // BotArmy names the Celery job; flightdeck has none, and says so.
    assert!(v.get("celery_task_id").is_some_and(|c| c.is_null()), "{v}");
    let id = v["task_id"].as_str().unwrap();
    let got = s.get(&format!("/api/v1/tasks/{id}")).expect(200);
    assert_eq!(got["instructions"], "build");
    assert_eq!(got["project_id"], p.as_str());
}

#[test]
fn context_ids_must_exist_in_the_project() {
    let s = Server::start();
    let p = s.project("p");
    let other = s.project("other");
    let foreign = s.artifact(&other, "project_plan", "analyst", json!({}));
    let path = format!("/api/v1/projects/{p}/tasks");
    let m = s
        .post(
            &path,
            json!({"agent_type": "coder", "instructions": "x", "context_ids": [foreign]}),
        )
        .expect_error(422, "invalid_field");
    assert!(m.contains("context_ids[0]"), "{m}");
    s.post(
        &path,
        json!({"agent_type": "coder", "instructions": "x", "context_ids": ["0190b5c2-1111-7000-8000-000000000000"]}),
    )
    .expect_error(422, "invalid_field");
    let m = s
        .post(
            &path,
            json!({"agent_type": "coder", "instructions": "x", "context_ids": ["nope"]}),
        )
        .expect_error(422, "invalid_field");
    assert!(m.contains("context_ids[0]"), "{m}");
    let listed = s.get(&format!("{path}?limit=10")).expect(200);
    assert_eq!(
        listed["items"].as_array().unwrap().len(),
        0,
        "nothing stored"
    );
}

#[test]
fn transitions_follow_the_state_machine() {
    let s = Server::start();
    let p = s.project("p");
    let t = s.task(&p, "coder");
    s.set_status(&t, "completed")
        .expect_error(409, "invalid_transition");
    let v = s.set_status(&t, "working").expect(200);
    assert_eq!(v["attempts"], 1);
    assert!(v["started_at"].is_string());
    let v = s
        .post(
            &format!("/api/v1/tasks/{t}/status"),
            json!({"status": "failed", "error_message": "boom"}),
        )
        .expect(200);
    assert_eq!(v["error_message"], "boom");
    s.set_status(&t, "completed")
        .expect_error(409, "invalid_transition");
    s.set_status(&t, "pending").expect(200); // retry
    s.set_status(&t, "working").expect(200);
    let v = s
        .post(
            &format!("/api/v1/tasks/{t}/status"),
            json!({"status": "completed", "output": {"files": [1, 2]}}),
        )
        .expect(200);
    assert_eq!(v["output"]["files"][1], 2);
    assert_eq!(v["attempts"], 2);
    for to in ["pending", "working", "failed", "cancelled", "completed"] {
        s.set_status(&t, to).expect_error(409, "invalid_transition");
    }
    let t2 = s.task(&p, "coder");
    s.set_status(&t2, "cancelled").expect(200);
    s.set_status(&t2, "working")
        .expect_error(409, "invalid_transition");
    s.set_status(&t2, "paused")
        .expect_error(422, "invalid_field");
    s.set_status("0190b5c2-1111-7000-8000-000000000000", "working")
        .expect_error(404, "task_not_found");
}

#[test]
fn list_filters_through_the_indexes_and_paginates() {
    let s = Server::start();
    let p = s.project("p");
    let mut coder = Vec::new();
    for i in 0..5 {
        coder.push(s.task(&p, "coder"));
        s.task(&p, if i % 2 == 0 { "tester" } else { "analyst" });
    }
    s.set_status(&coder[1], "working").expect(200);
    s.set_status(&coder[3], "working").expect(200);
    let ids = |path: &str| -> Vec<String> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let full = match &cursor {
                Some(c) => format!("{path}&cursor={c}"),
                None => path.to_string(),
            };
            let page = s.get(&full).expect(200);
            out.extend(
                page["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| t["task_id"].as_str().unwrap().to_string()),
            );
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return out,
            }
        }
    };
    let base = format!("/api/v1/projects/{p}/tasks?limit=2");
    assert_eq!(ids(&format!("{base}&agent_type=coder")), coder);
    assert_eq!(
        ids(&format!("{base}&status=working")),
        vec![coder[1].clone(), coder[3].clone()]
    );
    assert_eq!(
        ids(&format!("{base}&status=working&agent_type=tester")),
        Vec::<String>::new()
    );
    assert_eq!(
        ids(&format!("{base}&status=pending&agent_type=coder")),
        vec![coder[0].clone(), coder[2].clone(), coder[4].clone()]
    );
    assert_eq!(ids(&base).len(), 10);
    s.get(&format!("{base}&status=nope"))
        .expect_error(422, "invalid_field");
    s.get(&format!("{base}&cursor=zz"))
        .expect_error(400, "invalid_cursor");
    s.get(&format!("/api/v1/projects/{p}/tasks?limit=0"))
        .expect_error(422, "invalid_field");
    s.get(&format!("/api/v1/projects/{p}/tasks?limit=1001"))
        .expect_error(422, "invalid_field");
}
