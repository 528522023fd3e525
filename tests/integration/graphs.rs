//! Workflows defined through the API, black-box: definitions stored, checked, versioned and
//! deleted (the built-in and the config file's read-only), runs that keep the version they started
//! with, phases that run at the same time and join, the context a phase's task gets from the
//! phases it depends on, a run failed by a task that failed for good, and a run cancelled.

use serde_json::{Value, json};

use crate::common::{Server, wait_for};

/// A team that is not BotArmy's: `plan`, then `research` and `outline` at the same time, then
/// `draft` when both are done, then `edit` behind a gate.
fn essay() -> Value {
    json!({"phases": [
        {"id": "plan", "agent_type": "planner", "instructions": "Plan an essay on {project}: {context}",
         "produces": ["plan"], "depends_on": []},
        {"id": "research", "agent_type": "researcher", "instructions": "Research {project}",
         "produces": ["research_notes"], "depends_on": ["plan"]},
        {"id": "outline", "agent_type": "writer", "instructions": "Outline {project}",
         "depends_on": ["plan"], "priority": 2},
        {"id": "draft", "agent_type": "writer", "instructions": "Draft {project}",
         "depends_on": ["research", "outline"]},
        {"id": "edit", "agent_type": "editor", "instructions": "Edit {project}",
         "depends_on": ["draft"], "gate": true}
    ]})
}

fn claim(s: &Server, agent: &str) -> Value {
    s.post(
        "/api/v1/tasks/claim",
        json!({"agent_type": agent, "worker_id": format!("{agent}-1"), "lease_seconds": 60}),
    )
    .expect(200)
}

fn complete(s: &Server, task: &Value, output: Value) {
    let id = task["task_id"].as_str().unwrap();
    s.post(
        &format!("/api/v1/tasks/{id}/status"),
        json!({"status": "completed", "output": output, "lease_id": task["lease_id"]}),
    )
    .expect(200);
}

/// Starts `workflow` on project `p` at the oversight `level`.
fn begin(s: &Server, p: &str, level: &str, workflow: &str) {
    s.post(
        &format!("/api/v1/hitl/project/{p}/oversight-level"),
        json!({ "level": level }),
    )
    .expect(200);
    s.post(
        &format!("/api/v1/projects/{p}/workflow"),
        json!({ "workflow": workflow }),
    )
    .expect(201);
}

fn run(s: &Server, p: &str) -> Value {
    s.get(&format!("/api/v1/projects/{p}/workflow")).expect(200)
}

fn phase<'a>(run: &'a Value, id: &str) -> &'a Value {
    run["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|ph| ph["id"] == id)
        .unwrap_or_else(|| panic!("phase {id} in {run}"))
}

fn pending(s: &Server, p: &str, agent: &str) -> Vec<Value> {
    s.get(&format!(
        "/api/v1/projects/{p}/tasks?agent_type={agent}&status=pending"
    ))
    .expect(200)["items"]
        .as_array()
        .unwrap()
        .clone()
}

/// The project's workflow events as `action:phase_id`.
fn actions(s: &Server, p: &str) -> Vec<String> {
    s.all_events(Some(p))
        .iter()
        .filter(|e| e["event_type"] == "workflow_event")
        .map(|e| {
            format!(
                "{}:{}",
                e["data"]["action"].as_str().unwrap(),
                e["data"]["phase_id"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn definitions_are_checked_versioned_deleted_and_the_builtin_is_read_only() {
    let s = Server::start();
    let all = s.get("/api/v1/workflows").expect(200);
    assert_eq!(all[0]["name"], "sdlc");
    assert_eq!(all[0]["phases"][1]["id"], "architect");
    assert!(
        all[0]["phases"][1].get("instructions").is_none(),
        "the list leaves the instructions to GET"
    );
    let sdlc = &s.get("/api/v1/workflows/sdlc").expect(200);
    assert_eq!(sdlc["name"], "sdlc");
    assert!(
        sdlc["phases"][0]["instructions"]
            .as_str()
            .unwrap()
            .contains("{project}")
    );
    assert_eq!(sdlc["source"], "builtin");
    assert_eq!(sdlc["read_only"], true);
    assert_eq!(sdlc["version"], 1);
    let ids: Vec<&str> = sdlc["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["analyst", "architect", "coder", "tester", "deployer"]);
    assert_eq!(sdlc["phases"][2]["depends_on"], json!(["architect"]));
    assert_eq!(sdlc["phases"][0]["depends_on"], json!([]));
    let m = s
        .put("/api/v1/workflows/sdlc", essay())
        .expect_error(409, "read_only");
    assert!(m.contains("built in"), "{m}");
    s.delete("/api/v1/workflows/sdlc")
        .expect_error(409, "read_only");

    // Malformed definitions: 422 naming the failing field, nothing stored.
    let mut cycle = essay();
    cycle["phases"][0]["depends_on"] = json!(["edit"]);
    let m = s
        .put("/api/v1/workflows/essay", cycle)
        .expect_error(422, "invalid_field");
    assert_eq!(
        m,
        "phases[0].depends_on: the dependencies form a cycle: plan → edit → draft → research → plan"
    );
    let mut unknown = essay();
    unknown["phases"][3]["depends_on"] = json!(["research", "sketch"]);
    let m = s
        .put("/api/v1/workflows/essay", unknown)
        .expect_error(422, "invalid_field");
    assert!(
        m.starts_with("phases[3].depends_on[1]: unknown phase `sketch`"),
        "{m}"
    );
    let mut twice = essay();
    twice["phases"][2]["id"] = json!("research");
    let m = s
        .put("/api/v1/workflows/essay", twice)
        .expect_error(422, "invalid_field");
    assert_eq!(
        m,
        "phases[2].id: duplicate phase id `research` (phases[1] has it)"
    );
    let m = s
        .put("/api/v1/workflows/essay", json!({"phases": []}))
        .expect_error(422, "invalid_field");
    assert_eq!(m, "phases: needs at least one phase");
    let m = s
        .put("/api/v1/workflows/Essay!", essay())
        .expect_error(422, "invalid_field");
    assert!(m.starts_with("name: "), "{m}");
    s.put(
        "/api/v1/workflows/essay",
        json!({"phases": [{"agent_type": "planner"}]}),
    )
    .expect_error(422, "invalid_field");
    s.get("/api/v1/workflows/essay")
        .expect_error(404, "workflow_not_found");
    assert_eq!(
        s.get("/api/v1/workflows")
            .expect(200)
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Stored: 201, then 200 with the same version for the same body, a new one for a change.
    let v1 = s.put("/api/v1/workflows/essay", essay()).expect(201);
    assert_eq!(v1["version"], 1);
    assert_eq!(v1["source"], "api");
    assert_eq!(v1["read_only"], false);
    assert_eq!(v1["phases"][2]["priority"], 2);
    assert_eq!(
        v1["phases"][3]["depends_on"],
        json!(["research", "outline"])
    );
    let same = s.put("/api/v1/workflows/essay", essay()).expect(200);
    assert_eq!(same["version"], 1);
    assert_eq!(same["updated_at"], v1["updated_at"]);
    // The same definition written otherwise (defaults spelled out, as GET shows them) is no change.
    let spelled = json!({"name": "essay", "phases": v1["phases"].clone()});
    assert_eq!(
        s.put("/api/v1/workflows/essay", spelled).expect(200)["version"],
        1
    );
    let mut changed = essay();
    changed["phases"][4]["instructions"] = json!("Edit {project} hard");
    let v2 = s.put("/api/v1/workflows/essay", changed).expect(200);
    assert_eq!(v2["version"], 2);
    assert_eq!(v2["created_at"], v1["created_at"]);
    let listed = s.get("/api/v1/workflows").expect(200);
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["sdlc", "essay"]);
    assert_eq!(listed[1]["version"], 2);

    // A run keeps the version it started with, whatever happens to the definition.
    let p = s.project("on tides");
    let started = s
        .post(
            &format!("/api/v1/projects/{p}/workflow"),
            json!({"workflow": "essay", "context": {"words": 800}}),
        )
        .expect(201);
    assert_eq!(started["version"], 2);
    let mut shorter = essay();
    shorter["phases"] = json!([{"agent_type": "planner", "instructions": "just plan"}]);
    assert_eq!(
        s.put("/api/v1/workflows/essay", shorter).expect(200)["version"],
        3
    );
    assert_eq!(s.delete("/api/v1/workflows/essay").status, 204);
    s.delete("/api/v1/workflows/essay")
        .expect_error(404, "workflow_not_found");
    s.get("/api/v1/workflows/essay")
        .expect_error(404, "workflow_not_found");
    let m = s
        .post(
            &format!("/api/v1/projects/{}/workflow", s.project("other")),
            json!({"workflow": "essay"}),
        )
        .expect_error(422, "invalid_field");
    assert_eq!(m, "workflow: unknown workflow `essay`; known: sdlc");
    let plan = claim(&s, "planner");
    assert!(
        plan["instructions"]
            .as_str()
            .unwrap()
            .starts_with("Plan an essay on on tides: {\"words\":800}"),
        "{plan}"
    );
    complete(&s, &plan, json!({"sections": ["waves", "moon"]}));
    let view = run(&s, &p);
    assert_eq!(view["version"], 2);
    assert_eq!(view["phases"].as_array().unwrap().len(), 5);
    assert_eq!(phase(&view, "research")["status"], "running");
    assert_eq!(phase(&view, "outline")["status"], "running");

    // A re-created definition goes on from the version it had; all of it survives a restart.
    let again = s.put("/api/v1/workflows/essay", essay()).expect(201);
    assert_eq!(again["version"], 4);
    let dir = s.stop();
    let s = Server::start_in(dir, &[]);
    assert_eq!(s.get("/api/v1/workflows/essay").expect(200)["version"], 4);
    let view = run(&s, &p);
    assert_eq!(view["version"], 2);
    assert_eq!(phase(&view, "research")["status"], "running");
}

#[test]
fn parallel_phases_run_together_join_and_get_their_ancestors_context_by_phase() {
    let s = Server::start();
    s.put("/api/v1/workflows/essay", essay()).expect(201);
    let p = s.project("on tides");
    begin(&s, &p, "medium", "essay");
    // Only the root starts.
    assert!(pending(&s, &p, "researcher").is_empty());
    let plan = claim(&s, "planner");
    assert_eq!(plan["workflow"]["phase"], "plan");
    assert_eq!(plan["workflow"]["workflow"], "essay");
    assert_eq!(plan["workflow"]["version"], 1);
    assert_eq!(plan["workflow"]["upstream"], json!({}));
    let notes = s.artifact(&p, "plan", "planner", json!({"sections": 2}));
    complete(&s, &plan, json!({"sections": ["waves", "moon"]}));

    // Both branches at once, each with the plan's output and artifacts as context.
    let research = claim(&s, "researcher");
    let outline = claim(&s, "writer");
    assert_eq!(research["workflow"]["phase"], "research");
    assert_eq!(outline["workflow"]["phase"], "outline");
    assert_eq!(outline["priority"], 2);
    for task in [&research, &outline] {
        let up = &task["workflow"]["upstream"];
        assert_eq!(up.as_object().unwrap().len(), 1, "{up}");
        assert_eq!(up["plan"]["output"], json!({"sections": ["waves", "moon"]}));
        assert_eq!(up["plan"]["task_id"], plan["task_id"]);
        assert_eq!(up["plan"]["artifacts"], json!([notes]));
        assert_eq!(task["context_ids"], json!([notes]));
    }
    let view = run(&s, &p);
    assert_eq!(phase(&view, "research")["status"], "running");
    assert_eq!(phase(&view, "outline")["status"], "running");
    assert_eq!(phase(&view, "draft")["status"], "waiting");
    assert_eq!(
        phase(&view, "draft")["depends_on"],
        json!(["research", "outline"])
    );
    // A branch's artifacts are not the other branch's context.
    let found = s.artifact(&p, "research_notes", "researcher", json!({"tide": "lunar"}));
    complete(&s, &outline, json!({"outline": ["intro", "body"]}));
    assert!(
        pending(&s, &p, "writer").is_empty(),
        "the join waits for research"
    );
    assert_eq!(phase(&run(&s, &p), "outline")["status"], "done");
    complete(&s, &research, json!({"facts": 12}));

    let draft = claim(&s, "writer");
    assert_eq!(draft["workflow"]["phase"], "draft");
    let up = &draft["workflow"]["upstream"];
    let mut phases: Vec<&String> = up.as_object().unwrap().keys().collect();
    phases.sort();
    assert_eq!(phases, ["outline", "plan", "research"]);
    assert_eq!(up["research"]["output"], json!({"facts": 12}));
    assert_eq!(up["research"]["artifacts"], json!([found]));
    assert_eq!(
        up["outline"]["output"],
        json!({"outline": ["intro", "body"]})
    );
    assert_eq!(up["plan"]["output"]["sections"][1], "moon");
    assert_eq!(draft["context_ids"], json!([notes, found]));
    complete(&s, &draft, json!({"words": 812}));

    // The edit: its ancestors are every other phase; its gate rejected, then approved.
    let edit = claim(&s, "editor");
    assert_eq!(edit["workflow"]["upstream"].as_object().unwrap().len(), 4);
    complete(&s, &edit, json!({"edited": true}));
    let view = run(&s, &p);
    assert_eq!(phase(&view, "edit")["status"], "awaiting_approval");
    let gate = view["pending_gates"][0].as_str().unwrap().to_string();
    let request = s.get(&format!("/api/v1/hitl/{gate}")).expect(200);
    assert_eq!(
        request["question"],
        "Approve the edit phase's work on this project and hand it to completion?"
    );
    s.post(
        &format!("/api/v1/hitl/{gate}/respond"),
        json!({"action": "reject", "comment": "tighter"}),
    )
    .expect(200);
    let edit = claim(&s, "editor");
    assert!(edit["instructions"].as_str().unwrap().ends_with("tighter"));
    complete(&s, &edit, json!({"edited": 2}));
    let gate = run(&s, &p)["pending_gates"][0]
        .as_str()
        .unwrap()
        .to_string();
    s.post(
        &format!("/api/v1/hitl/{gate}/respond"),
        json!({"action": "approve"}),
    )
    .expect(200);
    let view = run(&s, &p);
    assert_eq!(view["status"], "completed");
    assert_eq!(
        s.get(&format!("/api/v1/projects/{p}")).expect(200)["status"],
        "completed"
    );
    assert_eq!(
        actions(&s, &p),
        [
            "workflow_started:plan",
            "phase_started:plan",
            "phase_completed:plan",
            "phase_started:research",
            "phase_started:outline",
            "phase_completed:outline",
            "phase_completed:research",
            "phase_started:draft",
            "phase_completed:draft",
            "phase_started:edit",
            "gate_opened:edit",
            "phase_rejected:edit",
            "gate_opened:edit",
            "phase_completed:edit",
            "project_completed:edit",
        ]
    );
    // The agents the team named are in the status list, idle again.
    let agents = s.get("/api/v1/agents/status").expect(200);
    for agent in ["planner", "researcher", "writer", "editor"] {
        assert_eq!(agents[agent]["status"], "idle", "{agent}: {agents}");
    }
}

#[test]
fn a_task_failing_for_good_fails_the_run_and_a_cancel_ends_one() {
    let s = Server::start_with(&["--max-attempts", "1"]);
    s.put("/api/v1/workflows/essay", essay()).expect(201);
    let p = s.project("doomed");
    begin(&s, &p, "low", "essay");
    complete(&s, &claim(&s, "planner"), json!({}));
    let research = claim(&s, "researcher");
    let outline_id = pending(&s, &p, "writer")[0]["task_id"]
        .as_str()
        .unwrap()
        .to_string();
    let id = research["task_id"].as_str().unwrap();
    s.post(
        &format!("/api/v1/tasks/{id}/status"),
        json!({"status": "failed", "error_message": "no sources", "lease_id": research["lease_id"]}),
    )
    .expect(200);
    let view = run(&s, &p);
    assert_eq!(view["status"], "failed");
    let reason = view["reason"].as_str().unwrap();
    assert!(
        reason.contains("phase `research`") && reason.contains("no sources"),
        "{reason}"
    );
    assert_eq!(phase(&view, "research")["status"], "failed");
    assert_eq!(phase(&view, "outline")["status"], "cancelled");
    assert_eq!(phase(&view, "draft")["status"], "cancelled");
    assert_eq!(phase(&view, "plan")["status"], "done");
    assert_eq!(
        s.get(&format!("/api/v1/tasks/{outline_id}")).expect(200)["status"],
        "cancelled"
    );
    let failed = s
        .all_events(Some(&p))
        .into_iter()
        .find(|e| e["data"]["action"] == "workflow_failed")
        .expect("workflow_failed");
    assert_eq!(failed["data"]["phase_id"], "research");
    assert_eq!(failed["data"]["reason"], reason);
    assert_eq!(
        s.get(&format!("/api/v1/projects/{p}")).expect(200)["status"],
        "active"
    );
    s.post(&format!("/api/v1/projects/{p}/workflow/cancel"), json!({}))
        .expect_error(409, "invalid_transition");

    // A new run may start where one failed; cancelling it cancels its open tasks and gates.
    begin(&s, &p, "high", "essay");
    complete(&s, &claim(&s, "planner"), json!({}));
    let gate = wait_for("the plan's gate", || {
        run(&s, &p)["pending_gates"][0].as_str().map(String::from)
    });
    s.post(
        &format!("/api/v1/hitl/{gate}/respond"),
        json!({"action": "approve"}),
    )
    .expect(200);
    let outline = claim(&s, "writer");
    complete(&s, &outline, json!({}));
    let outline_gate = run(&s, &p)["pending_gates"][0]
        .as_str()
        .unwrap()
        .to_string();
    let research = claim(&s, "researcher");
    let cancelled = s
        .post(
            &format!("/api/v1/projects/{p}/workflow/cancel"),
            json!({"reason": "topic dropped"}),
        )
        .expect(200);
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["reason"], "topic dropped");
    assert_eq!(phase(&cancelled, "research")["status"], "cancelled");
    assert_eq!(phase(&cancelled, "outline")["status"], "cancelled");
    assert_eq!(cancelled["pending_gates"], json!([]));
    assert_eq!(
        s.get(&format!("/api/v1/hitl/{outline_gate}")).expect(200)["status"],
        "expired"
    );
    // The researcher learns at its next heartbeat.
    let id = research["task_id"].as_str().unwrap();
    s.post(
        &format!("/api/v1/tasks/{id}/heartbeat"),
        json!({"lease_id": research["lease_id"]}),
    )
    .expect_error(409, "task_cancelled");
    assert_eq!(
        actions(&s, &p).last().unwrap(),
        "workflow_cancelled:research"
    );
    s.post(&format!("/api/v1/projects/{p}/workflow/cancel"), json!({}))
        .expect_error(409, "invalid_transition");
    let q = s.project("never ran");
    s.post(&format!("/api/v1/projects/{q}/workflow/cancel"), json!({}))
        .expect_error(404, "workflow_not_found");
}

/// The essay team with its draft fanned out over the plan's sections.
fn fanned() -> Value {
    let mut def = essay();
    def["phases"][3]["for_each"] = json!("plan.output.sections");
    def["phases"][3]["instructions"] = json!("Draft the section {item} of {project}");
    def["phases"][4]["gate"] = json!(false);
    def
}

fn start(s: &Server, name: &str, definition: Value) -> String {
    s.put("/api/v1/workflows/fanned", definition).expect(201);
    let p = s.project(name);
    begin(s, &p, "low", "fanned");
    p
}

/// Plans with `output`, then completes the research and the outline.
fn up_to_the_draft(s: &Server, output: Value) {
    complete(s, &claim(s, "planner"), output);
    complete(s, &claim(s, "researcher"), json!({}));
    complete(s, &claim(s, "writer"), json!({"outline": 1}));
}

#[test]
fn a_phase_fans_out_over_a_list_and_its_dependents_get_every_output_in_order() {
    let s = Server::start();
    // A fan-out's list comes from a phase it depends on, which does not fan out itself.
    let mut stranger = fanned();
    stranger["phases"][3]["for_each"] = json!("edit.output.sections");
    let m = s
        .put("/api/v1/workflows/fanned", stranger)
        .expect_error(422, "invalid_field");
    assert_eq!(
        m,
        "phases[3].for_each: `edit` is not a phase that `draft` depends on"
    );
    let mut malformed = fanned();
    malformed["phases"][3]["for_each"] = json!("plan.sections");
    let m = s
        .put("/api/v1/workflows/fanned", malformed)
        .expect_error(422, "invalid_field");
    assert!(
        m.starts_with("phases[3].for_each: `plan.sections` is not"),
        "{m}"
    );

    let p = start(&s, "tides", fanned());
    let sections = ["waves", "moon", "surf"];
    up_to_the_draft(&s, json!({"sections": sections}));
    let drafts = pending(&s, &p, "writer");
    assert_eq!(drafts.len(), 3);
    let mut by_item: Vec<(String, Value)> = drafts
        .iter()
        .map(|t| {
            (
                t["workflow"]["item"].as_str().unwrap().to_string(),
                t.clone(),
            )
        })
        .collect();
    by_item.sort_by_key(|(_, t)| t["workflow"]["index"].as_u64());
    let items: Vec<&str> = by_item.iter().map(|(i, _)| i.as_str()).collect();
    assert_eq!(items, sections);
    for (i, (item, task)) in by_item.iter().enumerate() {
        assert_eq!(task["workflow"]["index"], i);
        assert_eq!(task["workflow"]["count"], 3);
        assert_eq!(
            task["instructions"],
            format!("Draft the section {item} of tides")
        );
        assert_eq!(
            task["workflow"]["upstream"]["plan"]["output"]["sections"][2],
            "surf"
        );
    }
    let view = run(&s, &p);
    let draft = phase(&view, "draft");
    assert_eq!(draft["for_each"], "plan.output.sections");
    assert_eq!(draft["items_total"], 3);
    assert_eq!(draft["items_done"], 0);
    assert_eq!(draft["status"], "running");

    // Completed out of order; the phase is done when the last is.
    let mut claimed = Vec::new();
    for _ in 0..3 {
        let t = claim(&s, "writer");
        claimed.push(t);
    }
    claimed.sort_by_key(|t| std::cmp::Reverse(t["workflow"]["index"].as_u64()));
    for (n, t) in claimed.iter().enumerate() {
        let item = t["workflow"]["item"].as_str().unwrap();
        complete(&s, t, json!({"text": format!("about {item}")}));
        let view = run(&s, &p);
        assert_eq!(phase(&view, "draft")["items_done"], n + 1);
        if n < 2 {
            assert_eq!(phase(&view, "draft")["status"], "running");
            assert_eq!(phase(&view, "edit")["status"], "waiting");
        }
    }
    let edit = claim(&s, "editor");
    let draft = &edit["workflow"]["upstream"]["draft"];
    assert_eq!(
        draft["outputs"],
        json!([{"text": "about waves"}, {"text": "about moon"}, {"text": "about surf"}])
    );
    let order: Vec<&str> = draft["task_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let expected: Vec<&str> = by_item
        .iter()
        .map(|(_, t)| t["task_id"].as_str().unwrap())
        .collect();
    assert_eq!(order, expected);
    complete(&s, &edit, json!({}));
    assert_eq!(run(&s, &p)["status"], "completed");
    let done = actions(&s, &p)
        .iter()
        .filter(|a| *a == "item_completed:draft")
        .count();
    assert_eq!(done, 2, "the last item completes the phase instead");

    // An empty list: the phase is done at once.
    s.delete("/api/v1/workflows/fanned");
    let p = start(&s, "empty", fanned());
    up_to_the_draft(&s, json!({"sections": []}));
    let view = run(&s, &p);
    assert_eq!(phase(&view, "draft")["status"], "done");
    assert_eq!(phase(&view, "edit")["status"], "running");
}

#[test]
fn a_fan_out_that_cannot_start_fails_the_run_saying_why() {
    let s = Server::start_with(&["--max-fan-out", "2"]);
    let p = start(&s, "long", fanned());
    up_to_the_draft(&s, json!({"sections": ["a", "b", "c"]}));
    let view = run(&s, &p);
    assert_eq!(view["status"], "failed");
    assert_eq!(
        view["reason"],
        "phase `draft` fans out over `plan.output.sections`, which has 3 elements; at most 2 (--max-fan-out)"
    );
    assert_eq!(phase(&view, "draft")["status"], "failed");
    assert!(pending(&s, &p, "writer").is_empty());

    s.delete("/api/v1/workflows/fanned");
    let p = start(&s, "shapeless", fanned());
    up_to_the_draft(&s, json!({"sections": "one long one"}));
    let view = run(&s, &p);
    assert_eq!(view["status"], "failed");
    assert_eq!(
        view["reason"],
        "phase `draft` fans out over `plan.output.sections`, which is not a list"
    );
    s.delete("/api/v1/workflows/fanned");
    let p = start(&s, "silent", fanned());
    up_to_the_draft(&s, json!({"parts": []}));
    assert_eq!(
        run(&s, &p)["reason"],
        "phase `draft` fans out over `plan.output.sections`, which has no `sections`"
    );
}

#[test]
fn outputs_past_the_upstream_budget_are_left_out_and_read_from_their_tasks() {
    let s = Server::start();
    let p = start(&s, "big", fanned());
    let big = "x".repeat(70 * 1024);
    complete(
        &s,
        &claim(&s, "planner"),
        json!({"sections": ["one"], "notes": big}),
    );
    let research = claim(&s, "researcher");
    let plan = &research["workflow"]["upstream"]["plan"];
    assert_eq!(plan["output"], Value::Null);
    assert_eq!(plan["outputs_omitted"], 1);
    // The worker reads it from the plan's task.
    let task = s
        .get(&format!(
            "/api/v1/tasks/{}",
            plan["task_id"].as_str().unwrap()
        ))
        .expect(200);
    assert_eq!(task["output"]["notes"].as_str().unwrap().len(), 70 * 1024);
    complete(&s, &research, json!({"small": true}));
    complete(&s, &claim(&s, "writer"), json!({}));
    // The fan-out still reads its list from the plan's output itself.
    let draft = claim(&s, "writer");
    assert_eq!(draft["workflow"]["item"], "one");
    let up = &draft["workflow"]["upstream"];
    assert_eq!(up["research"]["output"], json!({"small": true}));
    assert!(up["research"].get("outputs_omitted").is_none());
    assert_eq!(up["plan"]["outputs_omitted"], 1);
    assert_eq!(run(&s, &p)["status"], "running");
}

#[test]
fn at_most_a_thousand_definitions_are_stored() {
    let s = Server::start_with(&["--durability", "none"]);
    let def = json!({"phases": [{"agent_type": "writer", "instructions": "x"}]});
    for i in 0..1000 {
        s.put(&format!("/api/v1/workflows/w{i}"), def.clone())
            .expect(201);
    }
    let m = s
        .put("/api/v1/workflows/one-more", def.clone())
        .expect_error(422, "invalid_field");
    assert_eq!(
        m,
        "name: 1000 workflows are stored, the most this server keeps; delete one first"
    );
    // Replacing one still works; deleting one makes room.
    s.put(
        "/api/v1/workflows/w7",
        json!({"phases": [{"agent_type": "editor", "instructions": "y"}]}),
    )
    .expect(200);
    assert_eq!(s.delete("/api/v1/workflows/w3").status, 204);
    s.put("/api/v1/workflows/one-more", def).expect(201);
    assert_eq!(
        s.get("/api/v1/workflows")
            .expect(200)
            .as_array()
            .unwrap()
            .len(),
        1001,
        "the built-in and the thousand"
    );
}

#[test]
fn an_empty_fan_out_beside_another_phase_starts_that_phase_once() {
    let s = Server::start();
    s.put(
        "/api/v1/workflows/split",
        json!({"phases": [
            {"id": "plan", "agent_type": "planner", "instructions": "plan"},
            {"id": "parts", "agent_type": "writer", "instructions": "write {item}",
             "depends_on": ["plan"], "for_each": "plan.output.parts"},
            {"id": "side", "agent_type": "editor", "instructions": "check", "depends_on": ["plan"]}
        ]}),
    )
    .expect(201);
    let p = s.project("split");
    begin(&s, &p, "low", "split");
    complete(&s, &claim(&s, "planner"), json!({"parts": []}));
    assert_eq!(pending(&s, &p, "editor").len(), 1, "one task for `side`");
    let view = run(&s, &p);
    assert_eq!(phase(&view, "parts")["status"], "done");
    assert_eq!(phase(&view, "side")["status"], "running");
    complete(&s, &claim(&s, "editor"), json!({}));
    assert_eq!(run(&s, &p)["status"], "completed");
}
