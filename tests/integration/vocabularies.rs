//! A team that is not BotArmy's: its own agent types and artifact types, taken wherever a type
//! is, shown wherever the defaults are, kept across a restart; an operator's closed list; the
//! bound on how many there are.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::common::{Server, check, wait_for};

/// A sample of `/metrics`, if the series is there.
fn sample(s: &Server, series: &str) -> Option<f64> {
    let text = s.get("/metrics").body;
    let prefix = format!("{series} ");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map(|v| v.trim().parse().unwrap())
}

fn listed(v: &Value) -> Vec<String> {
    v.as_array()
        .or_else(|| v["items"].as_array())
        .unwrap()
        .iter()
        .map(|t| {
            t.get("task_id")
                .or_else(|| t.get("context_id"))
                .unwrap()
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

fn queue_names(s: &Server) -> Vec<String> {
    s.get("/api/v1/queues").expect(200)["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["agent_type"].as_str().unwrap().to_string())
        .collect()
}

const DEFAULTS: [&str; 6] = [
    "orchestrator",
    "analyst",
    "architect",
    "coder",
    "tester",
    "deployer",
];

#[test]
fn a_team_works_under_its_own_agent_and_artifact_types_and_keeps_them_across_a_restart() {
    let s = Server::start();
    // Before first use only the defaults are shown.
    assert_eq!(queue_names(&s), DEFAULTS);
    let all = s.get("/api/v1/agents/status").expect(200);
    assert!(all.get("researcher").is_none(), "{all}");
    assert_eq!(
        s.get("/api/v1/agents/status/researcher").expect(200)["status"],
        "idle",
        "a valid name nothing used yet is an idle agent"
    );
    let p = s.project("p");

    // A claim waits for the first task of a type nothing named yet, and gets it.
    let (task, lease) = std::thread::scope(|scope| {
        let waiting = scope.spawn(|| {
            s.post(
                "/api/v1/tasks/claim",
                json!({"agent_type": "researcher", "worker_id": "r1", "wait_ms": 20_000}),
            )
        });
        wait_for("the claim to wait", || {
            (sample(&s, "flightdeck_workers_waiting{agent_type=\"researcher\"}") == Some(1.0))
                .then_some(())
        });
        let task = s.task(&p, "researcher");
        let claimed = waiting.join().unwrap().expect(200);
        assert_eq!(claimed["task_id"], task.as_str());
        assert_eq!(claimed["agent_type"], "researcher");
        (task, claimed["lease_id"].as_str().unwrap().to_string())
    });
    let researcher = s.get("/api/v1/agents/status/researcher").expect(200);
    assert_eq!(researcher["status"], "working");
    assert_eq!(researcher["current_task_id"], task.as_str());
    assert_eq!(
        s.get("/api/v1/agents/status").expect(200)["researcher"]["status"],
        "working"
    );
    let notes = s.artifact(
        &p,
        "research_notes",
        "researcher",
        json!({"finding": "rust is fast"}),
    );
    s.artifact(&p, "source_code", "coder", json!({"main": "fn main() {}"}));
    s.post(
        &format!("/api/v1/tasks/{task}/status"),
        json!({"status": "completed", "output": {"notes": notes}, "lease_id": lease}),
    )
    .expect(200);

    // Filters take the new names; a well-formed name nothing used lists nothing; a malformed
    // one is refused naming the field.
    let by_type = s
        .get(&format!(
            "/api/v1/context/project/{p}/artifacts?artifact_type=research_notes"
        ))
        .expect(200);
    assert_eq!(listed(&by_type), std::slice::from_ref(&notes));
    let by_source = s
        .get(&format!(
            "/api/v1/context/project/{p}/artifacts?source_agent=researcher"
        ))
        .expect(200);
    assert_eq!(listed(&by_source), std::slice::from_ref(&notes));
    let tasks = s
        .get(&format!("/api/v1/projects/{p}/tasks?agent_type=researcher"))
        .expect(200);
    assert_eq!(listed(&tasks), std::slice::from_ref(&task));
    let none = s
        .get(&format!("/api/v1/projects/{p}/tasks?agent_type=nobody_yet"))
        .expect(200);
    assert!(listed(&none).is_empty());
    let m = s
        .get(&format!("/api/v1/projects/{p}/tasks?agent_type=Researcher"))
        .expect_error(422, "invalid_field");
    assert!(m.contains("agent_type"), "{m}");
    s.post(
        &format!("/api/v1/projects/{p}/tasks"),
        json!({"agent_type": "9lives", "instructions": "x"}),
    )
    .expect_error(422, "invalid_field");
    s.post(
        "/api/v1/context/artifacts",
        json!({"project_id": p, "source_agent": "researcher",
               "artifact_type": "x".repeat(65), "content": {}}),
    )
    .expect_error(422, "invalid_field");

    // The queues, after the defaults, and the per-type metrics show it.
    let mut expected: Vec<String> = DEFAULTS.iter().map(|d| d.to_string()).collect();
    expected.push("researcher".into());
    assert_eq!(queue_names(&s), expected);
    assert_eq!(
        sample(
            &s,
            "flightdeck_task_run_seconds_count{agent_type=\"researcher\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&s, "flightdeck_queue_depth{agent_type=\"researcher\"}"),
        Some(0.0)
    );
    s.post("/api/v1/queues/researcher/pause", json!({}))
        .expect(200);

    // After a restart every name means what it meant.
    let dir = s.stop();
    let (ok, report) = check(dir.path());
    assert!(ok, "{report}");
    let s = Server::start_in(dir, &[]);
    assert_eq!(queue_names(&s), expected);
    let queues = s.get("/api/v1/queues").expect(200);
    let q = queues["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["agent_type"] == "researcher")
        .unwrap()
        .clone();
    assert_eq!(q["paused"], true, "{q}");
    assert_eq!(
        s.get("/api/v1/agents/status/researcher").expect(200)["status"],
        "idle"
    );
    let by_type = s
        .get(&format!(
            "/api/v1/context/project/{p}/artifacts?artifact_type=research_notes"
        ))
        .expect(200);
    assert_eq!(listed(&by_type), [notes]);
    let tasks = s
        .get(&format!("/api/v1/projects/{p}/tasks?agent_type=researcher"))
        .expect(200);
    assert_eq!(listed(&tasks), [task]);
    // A second new type after the restart gets an id of its own.
    let other = s.task(&p, "writer.v2");
    let tasks = s
        .get(&format!("/api/v1/projects/{p}/tasks?agent_type=writer.v2"))
        .expect(200);
    assert_eq!(listed(&tasks), [other]);
    let dir = s.stop();
    let (ok, report) = check(dir.path());
    assert!(ok, "{report}");
}

#[test]
fn a_closed_list_refuses_what_it_does_not_name() {
    let s = Server::start_with(&[
        "--agent-types",
        "coder,researcher",
        "--artifact-types",
        "research_notes,source_code",
    ]);
    let p = s.project("p");
    let m = s
        .post(
            &format!("/api/v1/projects/{p}/tasks"),
            json!({"agent_type": "resercher", "instructions": "x"}),
        )
        .expect_error(422, "invalid_field");
    assert!(
        m.contains("unknown agent_type `resercher`") && m.contains("allowed: coder, researcher"),
        "{m}"
    );
    // A default the list leaves out is refused too.
    s.post(
        &format!("/api/v1/projects/{p}/tasks"),
        json!({"agent_type": "tester", "instructions": "x"}),
    )
    .expect_error(422, "invalid_field");
    s.task(&p, "researcher");
    let m = s
        .post(
            "/api/v1/context/artifacts",
            json!({"project_id": p, "source_agent": "coder",
                   "artifact_type": "project_plan", "content": {}}),
        )
        .expect_error(422, "invalid_field");
    assert!(m.contains("allowed: research_notes, source_code"), "{m}");
    s.artifact(&p, "research_notes", "researcher", json!({}));
    s.post(
        "/api/v1/tasks/claim",
        json!({"agent_type": "deployer", "worker_id": "w"}),
    )
    .expect_error(422, "invalid_field");
    // The built-in workflow names types the list leaves out: starting it is refused.
    let m = s
        .post(
            &format!("/api/v1/projects/{p}/workflow"),
            json!({"workflow": "sdlc"}),
        )
        .expect_error(422, "invalid_field");
    assert!(m.contains("unknown agent_type `analyst`"), "{m}");
    // Only the listed types are shown.
    assert_eq!(queue_names(&s), ["coder", "researcher"]);
    let all = s.get("/api/v1/agents/status").expect(200);
    let mut names: Vec<&String> = all.as_object().unwrap().keys().collect();
    names.sort();
    assert_eq!(names, ["coder", "researcher"]);
    s.stop();
}

#[test]
fn past_the_type_limits_a_new_name_is_refused_and_known_ones_still_work() {
    // The defaults count: six agent types and eleven artifact types are there from the start.
    let s = Server::start_with(&["--max-agent-types", "7", "--max-artifact-types", "12"]);
    let p = s.project("p");
    s.task(&p, "researcher");
    let m = s
        .post(
            &format!("/api/v1/projects/{p}/tasks"),
            json!({"agent_type": "reviewer", "instructions": "x"}),
        )
        .expect_error(422, "too_many_types");
    assert!(m.contains("reviewer") && m.contains('7'), "{m}");
    // A waiting claim for a new type would need an id too.
    s.post(
        "/api/v1/tasks/claim",
        json!({"agent_type": "reviewer", "worker_id": "w", "wait_ms": 50}),
    )
    .expect_error(422, "too_many_types");
    // One that does not wait for a type nothing named answers no task, as for any empty queue.
    let r = s.post(
        "/api/v1/tasks/claim",
        json!({"agent_type": "reviewer", "worker_id": "w"}),
    );
    assert_eq!(r.status, 204, "{}", r.body);
    s.post("/api/v1/queues/reviewer/pause", json!({}))
        .expect_error(422, "too_many_types");
    s.artifact(&p, "research_notes", "researcher", json!({}));
    s.post(
        "/api/v1/context/artifacts",
        json!({"project_id": p, "source_agent": "researcher",
               "artifact_type": "more_notes", "content": {}}),
    )
    .expect_error(422, "too_many_types");
    // An artifact naming a new source agent is refused the same way, and writes nothing.
    s.post(
        "/api/v1/context/artifacts",
        json!({"project_id": p, "source_agent": "reviewer",
               "artifact_type": "research_notes", "content": {}}),
    )
    .expect_error(422, "too_many_types");
    let artifacts = s
        .get(&format!("/api/v1/context/project/{p}/artifacts"))
        .expect(200);
    assert_eq!(listed(&artifacts).len(), 1);
    s.task(&p, "researcher");
    s.task(&p, "coder");
    // No series for a refused name.
    let text = s.get("/metrics").body;
    assert!(
        !text.contains("\"reviewer\""),
        "a refused name has no series"
    );
    assert!(text.contains("agent_type=\"researcher\""));
    let dir = s.stop();
    let (ok, report) = check(dir.path());
    assert!(ok, "{report}");
    // A restart with the same limits keeps refusing; a higher one takes the name.
    let s = Server::start_in(Arc::clone(&dir), &["--max-agent-types", "8"]);
    s.task(&p, "reviewer");
    assert_eq!(
        s.get("/api/v1/agents/status/reviewer").expect(200)["agent_type"],
        "reviewer"
    );
    s.stop();
}
