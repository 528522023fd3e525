//! Upgrades: a database written by the previous schema version (the fixture in
//! `tests/fixtures/schema-v1`, made by `tests/fixtures/make-fixture.sh` with that build) is
//! migrated at open, keeps every record and passes `flightdeck check` before and after.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::common::{Server, assert_gap_free, check, wait_for};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/schema-v1/flightdeck.redb"
);

fn schema_version(dir: &std::path::Path) -> u64 {
    use redb::ReadableDatabase;
    let db = redb::Database::open(dir.join("flightdeck.redb")).unwrap();
    let txn = db.begin_read().unwrap();
    let meta = txn
        .open_table(redb::TableDefinition::<&str, u64>::new("meta"))
        .unwrap();
    meta.get("schema_version").unwrap().unwrap().value()
}

/// A list's items, whether it is a bare array (BotArmy shapes) or an `items` envelope.
fn items(v: &Value) -> Vec<Value> {
    v.as_array()
        .or_else(|| v["items"].as_array())
        .cloned()
        .unwrap_or_default()
}

fn agent_changes(events: &[Value]) -> Vec<&Value> {
    events
        .iter()
        .filter(|e| e["event_type"] == "agent_status_change")
        .collect()
}

#[test]
fn a_schema_v1_database_is_migrated_and_keeps_everything() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    std::fs::copy(FIXTURE, dir.path().join("flightdeck.redb")).unwrap();
    assert_eq!(schema_version(dir.path()), 1);
    let (ok, text) = check(dir.path());
    assert!(ok, "the old database is consistent as it is: {text}");

    let s = Server::start_in(dir.clone(), &[]);
    let projects = items(&s.get("/api/v1/projects").expect(200));
    let find = |name: &str| {
        projects
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {projects:?}"))["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (p, q) = (find("fixture shop"), find("fixture workflow"));
    assert_eq!(projects.len(), 2);

    // Records as the old build wrote them.
    let tasks = items(&s.get(&format!("/api/v1/projects/{p}/tasks")).expect(200));
    assert_eq!(tasks.len(), 2);
    let coder = tasks.iter().find(|t| t["agent_type"] == "coder").unwrap();
    assert_eq!(coder["status"], "completed");
    assert_eq!(coder["output"], json!({"files": 3}));
    assert_eq!(coder["context_ids"].as_array().unwrap().len(), 1);
    let artifact = s
        .get(&format!(
            "/api/v1/context/artifacts/{}",
            coder["context_ids"][0].as_str().unwrap()
        ))
        .expect(200);
    assert_eq!(artifact["content"], json!({"spec": "sell things"}));
    // The tester's task failed once with retries left; its retry fell due long ago, so the timer
    // task reopens it as soon as the server runs (before this, its status is a race).
    let tester = tasks.iter().find(|t| t["agent_type"] == "tester").unwrap();
    assert_eq!(tester["failures"], 1);
    let tester_id = tester["task_id"].as_str().unwrap();
    let tester = wait_for("the due retry to reopen the tester's task", || {
        let t = s.get(&format!("/api/v1/tasks/{tester_id}")).expect(200);
        (t["status"] == "pending").then_some(t)
    });
    assert_eq!(tester["failures"], 1);
    let hitl = items(
        &s.get(&format!("/api/v1/hitl/project/{p}/requests"))
            .expect(200),
    );
    assert_eq!(hitl[0]["status"], "approved");
    let workflow = s.get(&format!("/api/v1/projects/{q}/workflow")).expect(200);
    assert_eq!(workflow["status"], "running");
    assert_eq!(workflow["phases"][0]["status"], "running");

    // The migration: the four changes the shop's tasks caused are in its stream now; the reset,
    // caused by no task, stays global.
    let all = s.all_events(None);
    assert_gap_free(&all);
    let changes = agent_changes(&all);
    assert_eq!(changes.len(), 5);
    let (caused, reset): (Vec<&&Value>, Vec<_>) =
        changes.iter().partition(|e| e["task_id"].is_string());
    assert!(
        caused.iter().all(|e| e["project_id"] == p.as_str()),
        "{caused:?}"
    );
    assert_eq!(reset.len(), 1);
    assert!(reset[0]["project_id"].is_null());
    let shop = s.all_events(Some(&p));
    assert_eq!(agent_changes(&shop).len(), 4);
    assert!(shop.iter().all(|e| e["project_id"] == p.as_str()));

    // It takes writes, and they follow the new rule.
    let t = s.task(&p, "coder");
    s.set_status(&t, "working").expect(200);
    let after = s.all_events(Some(&p));
    assert_eq!(agent_changes(&after).len(), 5);
    let events_before_restart = s.all_events(None).len();

    let dir = s.stop();
    assert_eq!(schema_version(dir.path()), 2);
    let (ok, text) = check(dir.path());
    assert!(ok, "{text}");
    // Opening a migrated database again changes nothing.
    let s = Server::start_in(dir.clone(), &[]);
    assert_eq!(s.all_events(None).len(), events_before_restart);
    assert_eq!(agent_changes(&s.all_events(Some(&p))).len(), 5);
}
