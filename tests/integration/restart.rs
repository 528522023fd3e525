use serde_json::json;

use crate::common::{Server, check};

#[test]
fn everything_survives_a_restart_and_the_check_passes() {
    let s = Server::start();
    let p = s.project("kept");
    let a = s.artifact(&p, "source_code", "coder", json!({"file": "main.rs"}));
    let t = s.task(&p, "coder");
    s.set_status(&t, "working").expect(200);
    s.set_status(&t, "completed").expect(200);
    s.task(&p, "tester");
    let h = s
        .post("/api/v1/hitl", json!({"project_id": p, "question": "ok?"}))
        .expect(201);
    let before_events = s.all_events(None);
    let before_project = s.get(&format!("/api/v1/projects/{p}")).expect(200);
    let dir = s.stop();

    let (ok, report) = check(dir.path());
    assert!(ok, "{report}");
    assert!(report.contains("consistent"), "{report}");

    let s = Server::start_in(dir, &[]);
    assert_eq!(
        s.get(&format!("/api/v1/projects/{p}")).expect(200),
        before_project,
        "summary rebuilt"
    );
    assert_eq!(
        s.get(&format!("/api/v1/context/artifacts/{a}")).expect(200)["content"]["file"],
        "main.rs"
    );
    assert_eq!(
        s.get(&format!("/api/v1/tasks/{t}")).expect(200)["status"],
        "completed"
    );
    assert_eq!(
        s.get(&format!(
            "/api/v1/hitl/{}",
            h["request_id"].as_str().unwrap()
        ))
        .expect(200)["status"],
        "pending"
    );
    assert_eq!(
        s.get("/api/v1/agents/status/coder").expect(200)["status"],
        "idle"
    );
    assert_eq!(s.all_events(None), before_events);
    let c = s
        .get(&format!("/api/v1/projects/{p}/completion"))
        .expect(200);
    assert_eq!(c["completed_tasks"], 1);
    assert_eq!(c["total_tasks"], 2);
    // The seq goes on where it stopped.
    s.task(&p, "coder");
    let after = s.all_events(None);
    assert_eq!(
        after.last().unwrap()["seq"].as_u64().unwrap(),
        before_events.len() as u64 + 1
    );
    let dir = s.stop();
    let (ok, report) = check(dir.path());
    assert!(ok, "{report}");
}
