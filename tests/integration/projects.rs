use serde_json::json;

use crate::common::Server;

#[test]
fn create_with_trailing_slash_returns_201_with_botarmy_fields() {
    let s = Server::start();
    let v = s
        .post(
            "/api/v1/projects/",
            json!({"name": "alpha", "description": "first"}),
        )
        .expect(201);
    assert_eq!(v["name"], "alpha");
    assert_eq!(v["description"], "first");
    assert_eq!(v["status"], "active");
    assert!(v["created_at"].as_str().unwrap().ends_with('Z'));
    let id = v["id"].as_str().unwrap();
    let got = s.get(&format!("/api/v1/projects/{id}")).expect(200);
    assert_eq!(got["name"], "alpha");
    assert_eq!(got["total_tasks"], 0);
    assert_eq!(got["task_counts"]["pending"], 0);
}

#[test]
fn list_is_newest_first_and_paginates_without_gaps_or_repeats() {
    let s = Server::start();
    let ids: Vec<String> = (0..7).map(|i| s.project(&format!("p{i}"))).collect();
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/projects?limit=3&cursor={c}"),
            None => "/api/v1/projects?limit=3".to_string(),
        };
        let page = s.get(&path).expect(200);
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 3);
        seen.extend(items.iter().map(|p| p["id"].as_str().unwrap().to_string()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first);
}

#[test]
fn status_and_completion_follow_the_tasks() {
    let s = Server::start();
    let p = s.project("p");
    let t1 = s.task(&p, "coder");
    let t2 = s.task(&p, "tester");
    let _t3 = s.task(&p, "analyst");
    s.set_status(&t1, "working").expect(200);
    s.set_status(&t1, "completed").expect(200);
    s.set_status(&t2, "cancelled").expect(200);
    let status = s.get(&format!("/api/v1/projects/{p}/status")).expect(200);
    assert_eq!(status["project_id"], p.as_str());
    assert_eq!(status["status"], "active");
    let tasks = status["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 3);
    assert_eq!(tasks[0]["task_id"], t1.as_str());
    assert_eq!(tasks[0]["status"], "completed");
    assert_eq!(tasks[1]["agent_type"], "tester");
    for t in tasks {
        assert!(t["created_at"].is_string() && t["updated_at"].is_string());
    }
    let c = s
        .get(&format!("/api/v1/projects/{p}/completion"))
        .expect(200);
    assert_eq!(c["total_tasks"], 3);
    assert_eq!(c["completed_tasks"], 1);
    assert_eq!(c["completion_percentage"], 33.33);
    assert_eq!(c["artifacts_available"], false);
    // BotArmy's other fields, with its meanings.
    assert_eq!(c["project_name"], "p");
    assert_eq!(c["project_status"], "active");
    assert_eq!(c["failed_tasks"], 0);
    assert_eq!(c["pending_tasks"], 1);
    assert_eq!(c["working_tasks"], 0);
    assert_eq!(c["artifacts_count"], 0);
    assert_eq!(c["is_complete"], false);
    let project = s.get(&format!("/api/v1/projects/{p}")).expect(200);
    assert_eq!(c["last_updated"], project["updated_at"]);
    let got = s.get(&format!("/api/v1/projects/{p}")).expect(200);
    assert_eq!(got["task_counts"]["cancelled"], 1);
    assert_eq!(got["task_counts"]["pending"], 1);
}

#[test]
fn unknown_and_malformed_project_ids() {
    let s = Server::start();
    let unknown = "0190b5c2-1111-7000-8000-000000000000";
    for suffix in ["", "/status", "/completion", "/tasks"] {
        s.get(&format!("/api/v1/projects/{unknown}{suffix}"))
            .expect_error(404, "project_not_found");
        s.get(&format!("/api/v1/projects/not-a-uuid{suffix}"))
            .expect_error(400, "invalid_id");
    }
}
