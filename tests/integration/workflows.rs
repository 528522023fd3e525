//! Workflows end to end over HTTP: simulated workers claim each phase's task, post its artifact and
//! complete it; a simulated reviewer answers the gates the oversight level calls for.

use serde_json::{Value, json};

use crate::common::Server;

const SDLC: [(&str, &str); 5] = [
    ("analyst", "software_specification"),
    ("architect", "system_architecture"),
    ("coder", "source_code"),
    ("tester", "test_results"),
    ("deployer", "deployment_log"),
];

/// The project's events as `type` or `workflow_event:action`.
fn story(s: &Server, p: &str) -> Vec<String> {
    s.all_events(Some(p))
        .iter()
        .map(|e| match e["event_type"].as_str().unwrap() {
            "workflow_event" => format!("workflow_event:{}", e["data"]["action"].as_str().unwrap()),
            other => other.to_string(),
        })
        .collect()
}

fn pending_gates(s: &Server, p: &str) -> Vec<Value> {
    s.get(&format!("/api/v1/hitl/project/{p}/requests?status=pending"))
        .expect(200)
        .as_array()
        .unwrap()
        .clone()
}

/// One phase by a worker: claim, post the artifact, complete. Returns the task.
fn work(s: &Server, agent: &str, kind: &str, p: &str) -> Value {
    let task = s
        .post("/api/v1/tasks/claim", json!({"agent_type": agent, "worker_id": format!("{agent}-worker"), "lease_seconds": 60}))
        .expect(200);
    assert_eq!(task["project_id"], p);
    let id = task["task_id"].as_str().unwrap();
    s.post(
        "/api/v1/context/artifacts",
        json!({"project_id": p, "source_agent": agent, "artifact_type": kind, "content": {"by": agent}}),
    )
    .expect(201);
    s.post(
        &format!("/api/v1/tasks/{id}/status"),
        json!({"status": "completed", "output": {"done": agent}, "lease_id": task["lease_id"]}),
    )
    .expect(200);
    task
}

fn run_sdlc(level: &str) -> (Server, String, usize) {
    let s = Server::start();
    let p = s.project("shop");
    s.post(
        &format!("/api/v1/hitl/project/{p}/oversight-level"),
        json!({"level": level}),
    )
    .expect(200);
    s.get(&format!("/api/v1/projects/{p}/workflow"))
        .expect_error(404, "workflow_not_found");
    let started = s
        .post(
            &format!("/api/v1/projects/{p}/workflow"),
            json!({"workflow": "sdlc", "context": {"goal": "a shop"}}),
        )
        .expect(201);
    assert_eq!(started["status"], "running");
    assert_eq!(started["phases"][0]["status"], "running");
    s.post(
        &format!("/api/v1/projects/{p}/workflow"),
        json!({"workflow": "sdlc"}),
    )
    .expect_error(409, "invalid_transition");
    let mut gates = 0;
    for (i, (agent, kind)) in SDLC.iter().enumerate() {
        let task = work(&s, agent, kind, &p);
        assert_eq!(
            task["context_ids"].as_array().unwrap().len(),
            i,
            "phase {i} gets every earlier artifact (one per phase)"
        );
        if i == 0 {
            assert!(
                task["instructions"].as_str().unwrap().contains("shop"),
                "rendered: {task}"
            );
        }
        let waiting = pending_gates(&s, &p);
        if let Some(gate) = waiting.first() {
            gates += 1;
            let view = s.get(&format!("/api/v1/projects/{p}/workflow")).expect(200);
            assert_eq!(view["phases"][i]["status"], "awaiting_approval");
            assert_eq!(view["pending_gates"][0], gate["request_id"]);
            let id = gate["request_id"].as_str().unwrap();
            let answer = s
                .post(
                    &format!("/api/v1/hitl/{id}/respond"),
                    json!({"action": "approve"}),
                )
                .expect(200);
            assert_eq!(answer["workflow_resumed"], true, "{answer}");
        }
    }
    let view = s.get(&format!("/api/v1/projects/{p}/workflow")).expect(200);
    assert_eq!(view["status"], "completed");
    assert!(
        view["phases"]
            .as_array()
            .unwrap()
            .iter()
            .all(|ph| ph["status"] == "done" && ph["artifacts"].as_array().unwrap().len() == 1)
    );
    assert_eq!(
        s.get(&format!("/api/v1/projects/{p}")).expect(200)["status"],
        "completed"
    );
    let c = s
        .get(&format!("/api/v1/projects/{p}/completion"))
        .expect(200);
    assert_eq!(c["completion_percentage"], 100.0);
    assert_eq!(c["is_complete"], true);
    assert_eq!(c["project_status"], "completed");
    (s, p, gates)
}

/// The exact story of an `sdlc` run where the phases in `gated` wait for an approval.
fn expected_story(gated: &[usize]) -> Vec<String> {
    let mut want: Vec<String> = vec![
        "project_created".into(),
        "oversight_level_changed".into(),
        "workflow_event:workflow_started".into(),
        "task_created".into(),
        "workflow_event:phase_started".into(),
    ];
    for i in 0..5 {
        want.extend(
            [
                "task_started",
                "agent_status_change",
                "artifact_created",
                "task_completed",
                "agent_status_change",
            ]
            .map(String::from),
        );
        if gated.contains(&i) {
            want.extend(
                [
                    "hitl_request_created",
                    "workflow_event:gate_opened",
                    "hitl_response",
                ]
                .map(String::from),
            );
        }
        want.push("workflow_event:phase_completed".into());
        if i < 4 {
            want.extend(["task_created", "workflow_event:phase_started"].map(String::from));
        }
    }
    want.push("workflow_event:project_completed".into());
    want
}

#[test]
fn sdlc_at_low_oversight_runs_without_gates_and_tells_its_story() {
    let (s, p, gates) = run_sdlc("low");
    assert_eq!(gates, 0);
    assert_eq!(story(&s, &p), expected_story(&[]));
}

#[test]
fn sdlc_at_medium_oversight_gates_after_architect_and_before_deployer() {
    let (s, p, gates) = run_sdlc("medium");
    assert_eq!(gates, 2);
    assert_eq!(
        story(&s, &p),
        expected_story(&[1, 3]),
        "gates after the architect and the tester"
    );
    let events = s.all_events(Some(&p));
    let gated: Vec<&str> = events
        .iter()
        .filter(|e| e["data"]["action"] == "gate_opened")
        .map(|e| e["data"]["phase_agent"].as_str().unwrap())
        .collect();
    assert_eq!(gated, vec!["architect", "tester"]);
}

#[test]
fn sdlc_at_high_oversight_gates_every_phase() {
    let (s, p, gates) = run_sdlc("high");
    assert_eq!(gates, 5);
    assert_eq!(story(&s, &p), expected_story(&[0, 1, 2, 3, 4]));
}

#[test]
fn a_rejected_phase_goes_back_with_the_comment_and_an_amendment_becomes_an_artifact() {
    let s = Server::start();
    let p = s.project("p");
    s.post(
        &format!("/api/v1/hitl/project/{p}/oversight-level"),
        json!({"level": "high"}),
    )
    .expect(200);
    s.post(
        &format!("/api/v1/projects/{p}/workflow"),
        json!({"workflow": "sdlc"}),
    )
    .expect(201);
    let first = work(&s, "analyst", "software_specification", &p);
    let gate = pending_gates(&s, &p)[0]["request_id"]
        .as_str()
        .unwrap()
        .to_string();
    let answer = s
        .post(
            &format!("/api/v1/hitl/{gate}/respond"),
            json!({"action": "reject", "comment": "cover payments too"}),
        )
        .expect(200);
    assert_eq!(
        answer["workflow_resumed"], true,
        "a reject sends the phase back to work"
    );
    let again = work(&s, "analyst", "software_specification", &p);
    assert_eq!(
        again["task_id"], first["task_id"],
        "the same task, back to pending"
    );
    assert!(
        again["instructions"]
            .as_str()
            .unwrap()
            .ends_with("Reviewer feedback: cover payments too")
    );
    let gate = pending_gates(&s, &p)[0]["request_id"]
        .as_str()
        .unwrap()
        .to_string();
    s.post(
        &format!("/api/v1/hitl/{gate}/respond"),
        json!({"action": "amend", "content": {"payments": "stripe"}}),
    )
    .expect(200);
    let amended = s
        .get(&format!(
            "/api/v1/context/project/{p}/artifacts?artifact_type=hitl_response&include=content"
        ))
        .expect(200);
    assert_eq!(amended[0]["content"]["payments"], "stripe");
    let architect = work(&s, "architect", "system_architecture", &p);
    let context: Vec<&str> = architect["context_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        context.contains(&amended[0]["context_id"].as_str().unwrap()),
        "the amendment is in the next phase's context"
    );
    let story = story(&s, &p);
    assert!(
        story.contains(&"task_reopened".to_string())
            && story.contains(&"workflow_event:phase_rejected".to_string())
    );
}

#[test]
fn unknown_workflows_and_malformed_definitions() {
    let s = Server::start();
    let p = s.project("p");
    let m = s
        .post(
            &format!("/api/v1/projects/{p}/workflow"),
            json!({"workflow": "waterfall"}),
        )
        .expect_error(422, "invalid_field");
    assert!(m.contains("sdlc"), "{m}");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        // A closed list in the file: a workflow naming another agent type stops start-up.
        "agent_types = [\"coder\"]\n[[workflows]]\nname = \"tiny\"\n[[workflows.phases]]\nagent_type = \"wizard\"\ninstructions = \"x\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(crate::common::BIN)
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("phases[0].agent_type") && err.contains("unknown agent_type `wizard`"),
        "{err}"
    );
    std::fs::write(
        &config,
        "[[workflows]]\nname = \"tiny\"\n[[workflows.phases]]\nagent_type = \"coder\"\ninstructions = \"build {project}\"\n",
    )
    .unwrap();
    let s = Server::start_with(&["--config", config.to_str().unwrap()]);
    let p = s.project("p");
    s.post(
        &format!("/api/v1/projects/{p}/workflow"),
        json!({"workflow": "tiny"}),
    )
    .expect(201);
    work(&s, "coder", "source_code", &p);
    assert_eq!(
        s.get(&format!("/api/v1/projects/{p}/workflow")).expect(200)["status"],
        "completed"
    );
}
