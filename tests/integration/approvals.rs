//! Approvals that end, black-box with API keys: requests for named assignees (others 403
//! `not_an_assignee`), a reviewer's own inbox, timeouts that reject, approve or escalate (recorded
//! as the `system`'s answers, with `hitl_timed_out` and `hitl_escalated`), timers that survive a
//! restart, and the workflow gate of the team's essay that times out, escalates, and is approved by
//! the lead or fails the run when nobody answers.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::common::{Resp, Server, wait_for};

const ALICE: &str = "alice-secret-0123456789";
const BOB: &str = "bob-secret-012345678901";
const LEAD: &str = "lead-secret-01234567890";
const OPS: &str = "ops-secret-0123456789012";

fn keys() -> String {
    format!(
        "alice:reviewer:{ALICE},bob:reviewer:{BOB},lead:reviewer:{LEAD},ops:operator,worker:{OPS}"
    )
}

fn call(s: &Server, key: &str, method: &str, path: &str, body: Option<Value>) -> Resp {
    s.call_as(Some(key), method, path, body)
}

fn project(s: &Server, name: &str) -> String {
    call(
        s,
        OPS,
        "POST",
        "/api/v1/projects",
        Some(json!({"name": name})),
    )
    .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn ask(s: &Server, p: &str, extra: Value) -> String {
    let mut body = json!({"project_id": p, "question": "ship it?"});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    call(s, OPS, "POST", "/api/v1/hitl", Some(body)).expect(201)["request_id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn request(s: &Server, id: &str) -> Value {
    call(s, OPS, "GET", &format!("/api/v1/hitl/{id}"), None).expect(200)
}

fn answer(s: &Server, key: &str, id: &str, action: &str) -> Resp {
    call(
        s,
        key,
        "POST",
        &format!("/api/v1/hitl/{id}/respond"),
        Some(json!({"action": action})),
    )
}

fn inbox(s: &Server, key: &str) -> Vec<String> {
    call(s, key, "GET", "/api/v1/hitl/pending?assignee=me", None)
        .expect(200)
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["request_id"].as_str().unwrap().to_string())
        .collect()
}

/// The types of the events about request `id`, in order.
fn story(s: &Server, p: &str, id: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = call(
            s,
            OPS,
            "GET",
            &format!("/api/v1/events?limit=50&project_id={p}{cursor}"),
            None,
        )
        .expect(200);
        out.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["data"]["request_id"] == id)
                .map(|e| e["event_type"].as_str().unwrap().to_string()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => return out,
        }
    }
}

#[test]
fn assignees_answer_their_requests_and_timeouts_act_for_nobody() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let s = Server::start_in(dir.clone(), &["--api-key", &keys()]);
    let p = project(&s, "release");

    // Only an assignee answers; the inbox is each reviewer's own.
    let for_alice = ask(&s, &p, json!({"assignees": ["alice"]}));
    let open = ask(&s, &p, json!({}));
    assert_eq!(inbox(&s, ALICE), std::slice::from_ref(&for_alice));
    assert!(inbox(&s, BOB).is_empty());
    let m = answer(&s, BOB, &for_alice, "approve").expect_error(403, "not_an_assignee");
    assert!(m.contains("alice") && m.contains("\"bob\""), "{m}");
    let bulk = call(
        &s,
        BOB,
        "POST",
        "/api/v1/hitl/bulk/approve",
        Some(json!({"request_ids": [for_alice, open]})),
    )
    .expect(200);
    assert_eq!(bulk["approved"], json!([open]));
    assert!(
        bulk["errors"][0]
            .as_str()
            .unwrap()
            .contains("not_an_assignee")
    );
    let done = answer(&s, ALICE, &for_alice, "approve").expect(200);
    assert_eq!(done["responded_by"], "alice");
    assert!(inbox(&s, ALICE).is_empty());
    assert_eq!(request(&s, &for_alice)["assignees"], json!(["alice"]));

    // What a request may name.
    for (extra, field) in [
        (
            json!({"assignees": ["carol"]}),
            "assignees[0]: no API key is named `carol`",
        ),
        (
            json!({"on_timeout": "approve"}),
            "on_timeout: needs timeout_seconds",
        ),
        (
            json!({"timeout_seconds": 5, "on_timeout": "escalate"}),
            "escalate_to: names nobody",
        ),
        (
            json!({"timeout_seconds": 5, "on_timeout": "shrug"}),
            "on_timeout: `shrug` is not one of",
        ),
        (
            json!({"timeout_seconds": 5, "escalate_to": ["lead"]}),
            "escalate_to: is only for on_timeout escalate",
        ),
        (
            json!({"timeout_seconds": 5, "expires_in_seconds": 5}),
            "expires_in_seconds: give either",
        ),
        (
            json!({"timeout_seconds": 0}),
            "timeout_seconds: must be from 1",
        ),
    ] {
        let mut body = json!({"project_id": p, "question": "q"});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let m =
            call(&s, OPS, "POST", "/api/v1/hitl", Some(body)).expect_error(422, "invalid_field");
        assert!(m.starts_with(field), "{extra}: {m}");
    }

    // Timeouts: rejected, approved, by the system.
    let rejected = ask(&s, &p, json!({"timeout_seconds": 1}));
    let approved = ask(
        &s,
        &p,
        json!({"timeout_seconds": 1, "on_timeout": "approve"}),
    );
    let r = request(&s, &rejected);
    assert_eq!(
        (r["timeout_seconds"].clone(), r["on_timeout"].clone()),
        (json!(1), json!("reject"))
    );
    assert!(r["expires_at"].is_string());
    for (id, status, action) in [
        (&rejected, "rejected", "reject"),
        (&approved, "approved", "approve"),
    ] {
        let r = wait_for("the timeout to answer", || {
            let r = request(&s, id);
            (r["status"] == status).then_some(r)
        });
        assert_eq!(r["responded_by"], "system");
        let last = r["history"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(last["action"], action);
        assert_eq!(last["user_id"], "system");
        assert_eq!(
            story(&s, &p, id),
            ["hitl_request_created", "hitl_timed_out", "hitl_response"]
        );
    }
    // Too late for a human: 409, saying what the system did.
    let m = answer(&s, ALICE, &approved, "reject").expect_error(409, "invalid_transition");
    assert!(m.contains("approved"), "{m}");

    // Escalation: to the lead with a fresh timeout; then, unanswered again, it expires.
    let escalating = ask(
        &s,
        &p,
        json!({"assignees": ["alice"], "timeout_seconds": 1, "on_timeout": "escalate", "escalate_to": ["lead"]}),
    );
    let r = wait_for("the escalation", || {
        let r = request(&s, &escalating);
        (r["escalated"] == true).then_some(r)
    });
    assert_eq!(r["status"], "pending");
    assert_eq!(r["assignees"], json!(["lead"]));
    let last = r["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["action"].clone(), last["user_id"].clone()),
        (json!("escalate"), json!("system"))
    );
    let expired = wait_for("the second timeout", || {
        let r = request(&s, &escalating);
        (r["status"] == "expired").then_some(r)
    });
    assert_eq!(
        expired["history"].as_array().unwrap().last().unwrap()["user_id"],
        "system"
    );
    assert_eq!(
        story(&s, &p, &escalating),
        [
            "hitl_request_created",
            "hitl_timed_out",
            "hitl_escalated",
            "hitl_timed_out",
            "hitl_expired"
        ]
    );

    // An escalated request is the lead's to answer, not alice's any more.
    // Two seconds: time enough for the lead once it is escalated.
    let to_lead = ask(
        &s,
        &p,
        json!({"assignees": ["alice"], "timeout_seconds": 2, "on_timeout": "escalate", "escalate_to": ["lead"]}),
    );
    wait_for("the escalation", || {
        (request(&s, &to_lead)["escalated"] == true).then_some(())
    });
    assert!(inbox(&s, ALICE).is_empty());
    answer(&s, ALICE, &to_lead, "approve").expect_error(403, "not_an_assignee");
    let lead = answer(&s, LEAD, &to_lead, "approve").expect(200);
    assert_eq!(lead["responded_by"], "lead");

    // Timers are stored with the requests: one that falls due while the server is down acts
    // when it is back.
    let later = ask(
        &s,
        &p,
        json!({"timeout_seconds": 2, "on_timeout": "approve"}),
    );
    let dir = s.stop();
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let s = Server::start_in(dir, &["--api-key", &keys()]);
    let r = wait_for("the timeout after the restart", || {
        let r = request(&s, &later);
        (r["status"] == "approved").then_some(r)
    });
    assert_eq!(r["responded_by"], "system");
}

#[test]
fn without_keys_assignee_me_is_refused_and_a_named_inbox_still_works() {
    let s = Server::start();
    let p = s.project("p");
    let id = s
        .post(
            "/api/v1/hitl",
            json!({"project_id": p, "question": "q", "assignees": ["alice"]}),
        )
        .expect(201)["request_id"]
        .as_str()
        .unwrap()
        .to_string();
    s.get("/api/v1/hitl/pending?assignee=me")
        .expect_error(422, "invalid_field");
    let listed = s.get("/api/v1/hitl/pending?assignee=alice").expect(200);
    assert_eq!(listed[0]["request_id"], id.as_str());
    assert_eq!(
        s.get("/api/v1/hitl/pending?assignee=bob").expect(200),
        json!([])
    );
    // Nobody is named without keys: anyone answers.
    s.post(
        &format!("/api/v1/hitl/{id}/respond"),
        json!({"action": "approve"}),
    )
    .expect(200);
}

/// The team of the issue: `plan`, then `research` and `outline` at the same time, then `draft`
/// fanned out over the plan's `sections`, then `edit` behind a gate for alice that times out
/// after `timeout` seconds and escalates to the lead.
fn essay(timeout: u64) -> Value {
    json!({"phases": [
        {"id": "plan", "agent_type": "planner", "instructions": "Plan {project}", "depends_on": []},
        {"id": "research", "agent_type": "researcher", "instructions": "Research {project}", "depends_on": ["plan"]},
        {"id": "outline", "agent_type": "writer", "instructions": "Outline {project}", "depends_on": ["plan"]},
        {"id": "draft", "agent_type": "writer", "instructions": "Write the section {item}",
         "depends_on": ["research", "outline"], "for_each": "plan.output.sections"},
        {"id": "edit", "agent_type": "editor", "instructions": "Edit {project}", "depends_on": ["draft"],
         "gate": true, "gate_assignees": ["alice"], "gate_timeout_seconds": timeout,
         "gate_on_timeout": "escalate", "gate_escalate_to": ["lead"]}
    ]})
}

/// Claims a task of `agent` as the team's worker and completes it with `output`; the task.
fn work(s: &Server, agent: &str, output: Value) -> Value {
    let task = call(
        s,
        OPS,
        "POST",
        "/api/v1/tasks/claim",
        Some(json!({"agent_type": agent, "worker_id": format!("{agent}-1")})),
    )
    .expect(200);
    let id = task["task_id"].as_str().unwrap();
    call(
        s,
        OPS,
        "POST",
        &format!("/api/v1/tasks/{id}/status"),
        Some(json!({"status": "completed", "output": output, "lease_id": task["lease_id"]})),
    )
    .expect(200);
    task
}

fn run(s: &Server, p: &str) -> Value {
    call(
        s,
        OPS,
        "GET",
        &format!("/api/v1/projects/{p}/workflow"),
        None,
    )
    .expect(200)
}

/// Runs the essay on a new project up to its edit's gate; the gate's request id.
fn up_to_the_gate(s: &Server, name: &str) -> (String, String) {
    let p = project(s, name);
    call(
        s,
        OPS,
        "POST",
        &format!("/api/v1/projects/{p}/workflow"),
        Some(json!({"workflow": "essay"})),
    )
    .expect(201);
    work(s, "planner", json!({"sections": ["intro", "body", "end"]}));
    work(s, "researcher", json!({"sources": 4}));
    work(s, "writer", json!({"outline": 3}));
    let mut items = Vec::new();
    for _ in 0..3 {
        let t = work(s, "writer", json!({"words": 300}));
        items.push(t["workflow"]["item"].as_str().unwrap().to_string());
    }
    items.sort();
    assert_eq!(items, ["body", "end", "intro"]);
    let edit = work(s, "editor", json!({"edited": true}));
    assert_eq!(
        edit["workflow"]["upstream"]["draft"]["outputs"],
        json!([{"words": 300}, {"words": 300}, {"words": 300}])
    );
    let view = run(s, &p);
    let gate = view["pending_gates"][0].as_str().unwrap().to_string();
    (p, gate)
}

#[test]
fn the_team_runs_its_workflow_and_the_gate_escalates_to_the_lead_who_approves() {
    let s = Server::start_with(&["--api-key", &keys()]);
    // Definitions name real keys.
    let mut stranger = essay(1);
    stranger["phases"][4]["gate_assignees"] = json!(["carol"]);
    let m = call(&s, OPS, "PUT", "/api/v1/workflows/essay", Some(stranger))
        .expect_error(422, "invalid_field");
    assert_eq!(
        m,
        "phases[4].gate_assignees[0]: no API key is named `carol`"
    );
    // Long enough for the lead to answer in time once the gate is escalated.
    let def = call(&s, OPS, "PUT", "/api/v1/workflows/essay", Some(essay(3))).expect(201);
    assert_eq!(def["phases"][4]["gate_on_timeout"], "escalate");
    assert_eq!(def["phases"][3]["for_each"], "plan.output.sections");

    let (p, gate) = up_to_the_gate(&s, "essay one");
    let request = request(&s, &gate);
    assert_eq!(request["assignees"], json!(["alice"]));
    assert_eq!(request["on_timeout"], "escalate");
    assert_eq!(inbox(&s, ALICE), std::slice::from_ref(&gate));
    // Alice does not answer: the lead gets it, and approves.
    wait_for("the gate to escalate", || {
        (request_of(&s, &gate)["assignees"] == json!(["lead"])).then_some(())
    });
    assert_eq!(inbox(&s, LEAD), std::slice::from_ref(&gate));
    answer(&s, ALICE, &gate, "approve").expect_error(403, "not_an_assignee");
    let approved = answer(&s, LEAD, &gate, "approve").expect(200);
    assert_eq!(approved["workflow_resumed"], true);
    let view = run(&s, &p);
    assert_eq!(view["status"], "completed");
    let history = request_of(&s, &gate)["history"].clone();
    let who: Vec<(String, String)> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["action"].as_str().unwrap().to_string(),
                h["user_id"].as_str().unwrap_or("-").to_string(),
            )
        })
        .collect();
    assert_eq!(
        who,
        [
            ("created".to_string(), "-".to_string()),
            ("escalate".to_string(), "system".to_string()),
            ("approve".to_string(), "lead".to_string())
        ]
    );
}

fn request_of(s: &Server, id: &str) -> Value {
    request(s, id)
}

#[test]
fn a_gate_nobody_answers_after_its_escalation_fails_the_run() {
    let s = Server::start_with(&["--api-key", &keys()]);
    call(&s, OPS, "PUT", "/api/v1/workflows/essay", Some(essay(1))).expect(201);
    let (p, gate) = up_to_the_gate(&s, "essay two");
    let view = wait_for("the run to fail", || {
        let v = run(&s, &p);
        (v["status"] == "failed").then_some(v)
    });
    assert_eq!(
        view["reason"],
        format!("the gate of phase `edit` (request {gate}) timed out unanswered")
    );
    assert_eq!(request_of(&s, &gate)["status"], "expired");
    let edit = view["phases"][4].clone();
    assert_eq!(edit["status"], "failed");
}

#[test]
fn a_config_file_gate_must_name_keys_the_server_has() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        "[[workflows]]\nname = \"review\"\n[[workflows.phases]]\nagent_type = \"coder\"\ninstructions = \"x\"\ngate = true\ngate_timeout_seconds = 60\ngate_on_timeout = \"escalate\"\ngate_escalate_to = [\"carol\"]\n",
    )
    .unwrap();
    let out = std::process::Command::new(crate::common::BIN)
        .arg("--config")
        .arg(&config)
        .args(["--api-key", &keys(), "--data-dir"])
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("workflows.review.phases[0]: no API key is named `carol`"),
        "{err}"
    );
    // With the lead instead, it starts and lists the gate's timeout.
    std::fs::write(
        &config,
        "[[workflows]]\nname = \"review\"\n[[workflows.phases]]\nagent_type = \"coder\"\ninstructions = \"x\"\ngate = true\ngate_timeout_seconds = 60\ngate_on_timeout = \"escalate\"\ngate_escalate_to = [\"lead\"]\n",
    )
    .unwrap();
    let s = Server::start_with(&["--config", config.to_str().unwrap(), "--api-key", &keys()]);
    let def = call(&s, OPS, "GET", "/api/v1/workflows/review", None).expect(200);
    assert_eq!(def["source"], "config");
    assert_eq!(def["phases"][0]["gate_escalate_to"], json!(["lead"]));
    assert_eq!(def["phases"][0]["gate_timeout_seconds"], 60);
    call(&s, OPS, "DELETE", "/api/v1/workflows/review", None).expect_error(409, "read_only");
}
