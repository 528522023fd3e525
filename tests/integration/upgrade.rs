//! Upgrades: databases written by earlier schema versions (the fixtures in
//! `tests/fixtures/schema-v1` to `schema-v8`, made by
//! `tests/fixtures/make-fixture.sh` with those builds) are migrated at open, keep every record and
//! pass `flightdeck check` before and after.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::common::{Server, assert_gap_free, check, wait_for};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/schema-v1/flightdeck.redb"
);

/// The settings every fixture is opened with: whatever a fixture remembers relative to the time it
/// was written (idempotency keys, expiring after their lifetime) lives for a century, so a test
/// answers the same on any date after the fixture was made. (What a fixture stores as a deadline,
/// leases and work timeouts, `make-fixture.sh` already sets a century ahead.)
const TIMELESS: [&str; 2] = ["--idempotency-ttl-hours", "876000"];

/// The server on a fixture's copy, with `TIMELESS` and `args`.
fn open_fixture(dir: &Arc<tempfile::TempDir>, args: &[&str]) -> Server {
    let mut all = TIMELESS.to_vec();
    all.extend_from_slice(args);
    Server::start_in(dir.clone(), &all)
}

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

    let s = open_fixture(&dir, &[]);
    let projects = items(&s.get("/api/v1/projects").expect(200));
    let find = |name: &str| project_named(&projects, name);
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
    assert_eq!(schema_version(dir.path()), 9);
    let (ok, text) = check(dir.path());
    assert!(ok, "{text}");
    // Opening a migrated database again changes nothing.
    let s = open_fixture(&dir, &[]);
    assert_eq!(s.all_events(None).len(), events_before_restart);
    assert_eq!(agent_changes(&s.all_events(Some(&p))).len(), 5);
}

const FIXTURE_V2: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/schema-v2/flightdeck.redb"
);

#[test]
fn a_schema_v2_database_gets_lease_ids_and_its_claimed_task_finishes_without_one() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    std::fs::copy(FIXTURE_V2, dir.path().join("flightdeck.redb")).unwrap();
    assert_eq!(schema_version(dir.path()), 2);
    let (ok, text) = check(dir.path());
    assert!(ok, "the old database is consistent as it is: {text}");

    let s = open_fixture(&dir, &[]);
    let projects = items(&s.get("/api/v1/projects").expect(200));
    let shop = projects
        .iter()
        .find(|p| p["name"] == "fixture shop")
        .expect("the shop")["id"]
        .as_str()
        .unwrap()
        .to_string();
    let tasks = items(&s.get(&format!("/api/v1/projects/{shop}/tasks")).expect(200));
    assert_eq!(tasks.len(), 3, "every task decodes: {tasks:?}");
    let coder = tasks.iter().find(|t| t["agent_type"] == "coder").unwrap();
    assert_eq!(coder["output"], json!({"files": 3}));
    // Claimed by the old build and still working: its lease had no fencing token, so it finishes
    // like a task worked without a claim, and keeps its worker and deadline meanwhile.
    let architect = tasks
        .iter()
        .find(|t| t["agent_type"] == "architect")
        .unwrap();
    assert_eq!(architect["status"], "working");
    assert_eq!(architect["worker_id"], "w2");
    assert!(architect["lease_expires_at"].is_string());
    let id = architect["task_id"].as_str().unwrap();
    s.post(
        &format!("/api/v1/tasks/{id}/heartbeat"),
        json!({"worker_id": "w2"}),
    )
    .expect(200);
    s.post(
        &format!("/api/v1/tasks/{id}/status"),
        json!({"status": "completed", "output": {"sketch": true}}),
    )
    .expect(200);
    // New claims are fenced.
    let t = s.task(&shop, "deployer");
    let claimed = s
        .post(
            "/api/v1/tasks/claim",
            json!({"agent_type": "deployer", "worker_id": "w3"}),
        )
        .expect(200);
    assert_eq!(claimed["task_id"], t.as_str());
    s.post(
        &format!("/api/v1/tasks/{t}/status"),
        json!({"status": "completed"}),
    )
    .expect_error(409, "lease_lost");
    s.post(
        &format!("/api/v1/tasks/{t}/status"),
        json!({"status": "completed", "lease_id": claimed["lease_id"]}),
    )
    .expect(200);
    assert_gap_free(&s.all_events(None));

    let dir = s.stop();
    assert_eq!(schema_version(dir.path()), 9);
    let (ok, text) = check(dir.path());
    assert!(ok, "{text}");
}

const FIXTURE_V3: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/schema-v3/flightdeck.redb"
);

#[test]
fn a_schema_v3_database_keeps_its_answers_unattributed_and_records_new_responders() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    std::fs::copy(FIXTURE_V3, dir.path().join("flightdeck.redb")).unwrap();
    assert_eq!(schema_version(dir.path()), 3);
    let (ok, text) = check(dir.path());
    assert!(ok, "the old database is consistent as it is: {text}");

    let s = open_fixture(&dir, &["--api-key", "carol:rw:carol-secret-0123456"]);
    let key = "carol-secret-0123456";
    let get = |path: &str| {
        let r = s.send_request(
            ureq::http::Request::get(s.url(path))
                .header("authorization", format!("Bearer {key}"))
                .body(Vec::new())
                .unwrap(),
        );
        r.expect(200)
    };
    let projects = items(&get("/api/v1/projects"));
    assert_eq!(projects.len(), 3, "{projects:?}");
    let shop = projects
        .iter()
        .find(|p| p["name"] == "fixture shop")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let requests = items(&get(&format!("/api/v1/hitl/project/{shop}/requests")));
    assert_eq!(requests.len(), 3, "{requests:?}");
    // Answered before the upgrade: kept, with nobody named.
    let rejected = requests.iter().find(|r| r["status"] == "rejected").unwrap();
    assert_eq!(rejected["response_comment"], "not yet");
    assert!(rejected["responded_by"].is_null());
    let history = rejected["history"].as_array().unwrap();
    assert_eq!(history.len(), 2);
    assert!(history.iter().all(|e| e["user_id"].is_null()));
    // Answered after it: the key's name on the request, its history and the event.
    let waiting = requests.iter().find(|r| r["status"] == "pending").unwrap()["request_id"]
        .as_str()
        .unwrap()
        .to_string();
    let answer = s.send_request(
        ureq::http::Request::post(s.url(&format!("/api/v1/hitl/{waiting}/respond")))
            .header("authorization", format!("Bearer {key}"))
            .header("content-type", "application/json")
            .body(json!({"action": "approve"}).to_string().into_bytes())
            .unwrap(),
    );
    assert_eq!(answer.expect(200)["responded_by"], "carol");
    let request = get(&format!("/api/v1/hitl/{waiting}"));
    assert_eq!(request["responded_by"], "carol");
    assert_eq!(request["history"][1]["user_id"], "carol");
    // Schema 3's own tables came through: the paused queue and the remembered key.
    let queues = get("/api/v1/queues");
    let deployer = queues["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["agent_type"] == "deployer")
        .unwrap()
        .clone();
    assert_eq!(deployer["paused"], true);
    assert_eq!(deployer["pending"], 1);
    // The remembered key was sent without API keys: it is not carol's, whose same key is a
    // request of her own (keys are scoped by the caller)...
    fn repeat(s: &Server, bearer: Option<&str>) -> Value {
        let mut request = ureq::http::Request::post(s.url("/api/v1/projects"))
            .header("content-type", "application/json")
            .header("idempotency-key", "fixture-key-1");
        if let Some(k) = bearer {
            request = request.header("authorization", format!("Bearer {k}"));
        }
        let body = json!({"name": "fixture idempotent"}).to_string();
        s.send_request(request.body(body.into_bytes()).unwrap())
            .expect(201)
    }
    let carols = repeat(&s, Some(key));
    assert_eq!(carols["name"], "fixture idempotent");
    assert_eq!(
        items(&get("/api/v1/projects")).len(),
        4,
        "carol's own project"
    );
    let dir = s.stop();
    // ... and without keys, as it was sent, the repeat answers the original.
    let s = open_fixture(&dir, &[]);
    let original = repeat(&s, None);
    assert_ne!(original["id"], carols["id"]);
    assert_eq!(
        items(&s.get("/api/v1/projects").expect(200)).len(),
        4,
        "a repeat, not a new project"
    );
    let dir = s.stop();
    assert_eq!(schema_version(dir.path()), 9);
    let (ok, text) = check(dir.path());
    assert!(ok, "{text}");
}

const FIXTURE_V4: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/schema-v4/flightdeck.redb"
);

/// The tables of a database file, by name.
/// The id of the fixture's project called `name`, among `projects`.
fn project_named(projects: &[Value], name: &str) -> String {
    projects
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("{name} in {projects:?}"))["id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn table_names(dir: &std::path::Path) -> Vec<String> {
    use redb::{ReadableDatabase, TableHandle};
    let db = redb::Database::open(dir.join("flightdeck.redb")).unwrap();
    let txn = db.begin_read().unwrap();
    txn.list_tables()
        .unwrap()
        .map(|t| t.name().to_string())
        .collect()
}

fn ids(list: &[Value], field: &str) -> Vec<String> {
    list.iter()
        .map(|v| v[field].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_schema_v4_database_gets_its_project_indexes_merged_and_every_list_still_answers() {
    const OLD: [&str; 8] = [
        "ix_tasks_project",
        "ix_tasks_project_status",
        "ix_tasks_project_agent",
        "ix_artifacts_project",
        "ix_artifacts_project_type",
        "ix_artifacts_project_source",
        "ix_hitl_project",
        "ix_hitl_project_status",
    ];
    let dir = Arc::new(tempfile::tempdir().unwrap());
    std::fs::copy(FIXTURE_V4, dir.path().join("flightdeck.redb")).unwrap();
    assert_eq!(schema_version(dir.path()), 4);
    let before = table_names(dir.path());
    assert!(
        OLD.iter().all(|t| before.iter().any(|b| b == t)),
        "{before:?}"
    );
    let (ok, text) = check(dir.path());
    assert!(ok, "the old database is consistent as it is: {text}");

    let s = open_fixture(&dir, &[]);
    let projects = items(&s.get("/api/v1/projects").expect(200));
    assert_eq!(projects.len(), 3, "{projects:?}");
    let shop = projects
        .iter()
        .find(|p| p["name"] == "fixture shop")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // The failed task's retry is long due: it goes back to pending first.
    let tasks = wait_for("the failed task to be retried", || {
        let tasks = items(&s.get(&format!("/api/v1/projects/{shop}/tasks")).expect(200));
        tasks
            .iter()
            .all(|t| t["status"] != "failed")
            .then_some(tasks)
    });
    // Every list of every index, against the unfiltered list read record by record.
    assert_eq!(
        tasks.len(),
        4,
        "coder, tester, architect, deployer: {tasks:?}"
    );
    let mut agents: Vec<&str> = tasks
        .iter()
        .map(|t| t["agent_type"].as_str().unwrap())
        .collect();
    agents.sort();
    assert_eq!(agents, ["architect", "coder", "deployer", "tester"]);
    for task in &tasks {
        let id = task["task_id"].as_str().unwrap();
        assert_eq!(
            s.get(&format!("/api/v1/tasks/{id}")).expect(200)["status"],
            task["status"]
        );
        for (filter, field) in [("status", "status"), ("agent_type", "agent_type")] {
            let value = task[field].as_str().unwrap();
            let listed = items(
                &s.get(&format!("/api/v1/projects/{shop}/tasks?{filter}={value}"))
                    .expect(200),
            );
            let expected: Vec<Value> = tasks
                .iter()
                .filter(|t| t[field] == value)
                .cloned()
                .collect();
            assert_eq!(
                ids(&listed, "task_id"),
                ids(&expected, "task_id"),
                "{filter}={value}"
            );
        }
    }
    let status = s
        .get(&format!("/api/v1/projects/{shop}/status"))
        .expect(200);
    assert_eq!(status["tasks"].as_array().unwrap().len(), 4, "{status}");
    let artifacts = items(
        &s.get(&format!("/api/v1/context/project/{shop}/artifacts"))
            .expect(200),
    );
    assert_eq!(artifacts.len(), 1, "{artifacts:?}");
    assert_eq!(artifacts[0]["artifact_type"], "software_specification");
    for (filter, value, found) in [
        ("artifact_type", "software_specification", 1),
        ("artifact_type", "source_code", 0),
        ("source_agent", "analyst", 1),
        ("source_agent", "coder", 0),
    ] {
        let listed = items(
            &s.get(&format!(
                "/api/v1/context/project/{shop}/artifacts?{filter}={value}"
            ))
            .expect(200),
        );
        assert_eq!(listed.len(), found, "{filter}={value}: {listed:?}");
    }
    let requests = items(
        &s.get(&format!("/api/v1/hitl/project/{shop}/requests"))
            .expect(200),
    );
    assert_eq!(requests.len(), 3, "{requests:?}");
    for state in ["pending", "approved", "rejected"] {
        let listed = items(
            &s.get(&format!(
                "/api/v1/hitl/project/{shop}/requests?status={state}"
            ))
            .expect(200),
        );
        assert_eq!(listed.len(), 1, "{state}: {listed:?}");
        assert_eq!(listed[0]["status"], state);
    }
    // New writes land in the merged indexes and are listed beside the migrated ones.
    let added = s.artifact(
        &shop,
        "source_code",
        "coder",
        json!({"main": "fn main() {}"}),
    );
    let listed = items(
        &s.get(&format!(
            "/api/v1/context/project/{shop}/artifacts?artifact_type=source_code"
        ))
        .expect(200),
    );
    assert_eq!(ids(&listed, "context_id"), [added]);
    let task = s.task(&shop, "coder");
    let coders = items(
        &s.get(&format!("/api/v1/projects/{shop}/tasks?agent_type=coder"))
            .expect(200),
    );
    assert_eq!(ids(&coders, "task_id").last(), Some(&task));
    assert_eq!(coders.len(), 2);
    let dir = s.stop();
    assert_eq!(schema_version(dir.path()), 9);
    let after = table_names(dir.path());
    for table in OLD {
        assert!(
            !after.iter().any(|a| a == table),
            "{table} is still there: {after:?}"
        );
    }
    for table in ["ix_tasks", "ix_artifacts", "ix_hitl"] {
        assert!(
            after.iter().any(|a| a == table),
            "{table} is missing: {after:?}"
        );
    }
    let (ok, text) = check(dir.path());
    assert!(ok, "{text}");
    // The summaries are rebuilt from the merged indexes at the next start.
    let s = open_fixture(&dir, &[]);
    let status = s
        .get(&format!("/api/v1/projects/{shop}/status"))
        .expect(200);
    assert_eq!(status["tasks"].as_array().unwrap().len(), 5, "{status}");
    let listed = items(
        &s.get(&format!("/api/v1/context/project/{shop}/artifacts"))
            .expect(200),
    );
    assert_eq!(listed.len(), 2);
    s.stop();
}

const FIXTURE_V5: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/schema-v5/flightdeck.redb"
);

#[test]
fn a_schema_v5_database_gets_its_type_codes_interned_and_every_key_still_finds_its_record() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    std::fs::copy(FIXTURE_V5, dir.path().join("flightdeck.redb")).unwrap();
    assert_eq!(schema_version(dir.path()), 5);
    assert!(!table_names(dir.path()).iter().any(|t| t == "type_names"));
    // `check` on an old file checks it as migrated, in a copy, and leaves the file as it is.
    let (ok, text) = check(dir.path());
    assert!(ok, "{text}");
    assert_eq!(schema_version(dir.path()), 5);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, ["flightdeck.redb"], "the copy is removed");

    let s = open_fixture(&dir, &[]);
    let projects = items(&s.get("/api/v1/projects").expect(200));
    let shop = project_named(&projects, "fixture shop");
    let tasks = wait_for("the failed task to be retried", || {
        let tasks = items(&s.get(&format!("/api/v1/projects/{shop}/tasks")).expect(200));
        tasks
            .iter()
            .all(|t| t["status"] != "failed")
            .then_some(tasks)
    });
    assert_eq!(tasks.len(), 4, "{tasks:?}");
    // Every agent type's filter finds exactly its tasks (the keys held its enum code before).
    for agent in ["coder", "tester", "architect", "deployer", "analyst"] {
        let listed = items(
            &s.get(&format!("/api/v1/projects/{shop}/tasks?agent_type={agent}"))
                .expect(200),
        );
        let expected: Vec<Value> = tasks
            .iter()
            .filter(|t| t["agent_type"] == agent)
            .cloned()
            .collect();
        assert_eq!(
            ids(&listed, "task_id"),
            ids(&expected, "task_id"),
            "{agent}"
        );
    }
    for (filter, value, found) in [
        ("artifact_type", "software_specification", 1),
        ("artifact_type", "source_code", 0),
        ("source_agent", "analyst", 1),
    ] {
        let listed = items(
            &s.get(&format!(
                "/api/v1/context/project/{shop}/artifacts?{filter}={value}"
            ))
            .expect(200),
        );
        assert_eq!(listed.len(), found, "{filter}={value}: {listed:?}");
    }
    // The paused deployer queue is still paused and holds its task; the tester's history of
    // status changes (the reset among them) is still under its type.
    let queues = s.get("/api/v1/queues").expect(200);
    let deployer = queues["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["agent_type"] == "deployer")
        .unwrap()
        .clone();
    assert_eq!(deployer["paused"], true, "{deployer}");
    assert_eq!(deployer["pending"], 1, "{deployer}");
    let history = s.get("/api/v1/agents/status-history/tester").expect(200);
    assert!(
        !items(&history).is_empty(),
        "the tester's history survived: {history}"
    );
    // The retried tester task is claimable by its type, then a team's own type joins in.
    let claimed = s
        .post(
            "/api/v1/tasks/claim",
            json!({"agent_type": "tester", "worker_id": "w"}),
        )
        .expect(200);
    assert_eq!(claimed["agent_type"], "tester");
    let own = s.task(&shop, "researcher");
    let listed = items(
        &s.get(&format!(
            "/api/v1/projects/{shop}/tasks?agent_type=researcher"
        ))
        .expect(200),
    );
    assert_eq!(ids(&listed, "task_id"), [own]);
    let dir = s.stop();
    assert_eq!(schema_version(dir.path()), 9);
    assert!(table_names(dir.path()).iter().any(|t| t == "type_names"));
    let (ok, text) = check(dir.path());
    assert!(ok, "{text}");
}

const FIXTURE_V6: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/schema-v6/flightdeck.redb"
);

#[test]
fn a_schema_v6_database_gets_its_runs_as_chains_of_phases_that_go_on_running() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    std::fs::copy(FIXTURE_V6, dir.path().join("flightdeck.redb")).unwrap();
    assert_eq!(schema_version(dir.path()), 6);
    assert!(!table_names(dir.path()).iter().any(|t| t == "workflow_defs"));
    let (ok, text) = check(dir.path());
    assert!(ok, "the old database is consistent as it is: {text}");

    let s = open_fixture(&dir, &[]);
    let projects = items(&s.get("/api/v1/projects").expect(200));
    let find = |name: &str| project_named(&projects, name);
    let (shop, q) = (find("fixture shop"), find("fixture workflow"));
    // Tasks keep every field; a client's task has no workflow.
    let tasks = items(&s.get(&format!("/api/v1/projects/{shop}/tasks")).expect(200));
    let coder = tasks.iter().find(|t| t["agent_type"] == "coder").unwrap();
    assert_eq!(coder["status"], "completed");
    assert_eq!(coder["output"], json!({"files": 3}));
    assert_eq!(coder["context_ids"].as_array().unwrap().len(), 1);
    assert!(coder.get("workflow").is_none(), "{coder}");
    let deployer = tasks
        .iter()
        .find(|t| t["agent_type"] == "deployer")
        .unwrap();
    assert_eq!(deployer["priority"], 1);

    // The run, started by the old build, is a chain of phases with their default ids.
    let run = s.get(&format!("/api/v1/projects/{q}/workflow")).expect(200);
    assert_eq!(run["status"], "running");
    assert_eq!(run["version"], 1);
    assert_eq!(run["current_phase"], 0);
    let phases = run["phases"].as_array().unwrap();
    let ids: Vec<&str> = phases.iter().map(|p| p["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["analyst", "architect", "coder", "tester", "deployer"]);
    assert_eq!(phases[0]["depends_on"], json!([]));
    assert_eq!(phases[3]["depends_on"], json!(["coder"]));
    assert_eq!(phases[0]["status"], "running");
    assert_eq!(phases[1]["status"], "waiting");
    // It goes on: the analyst's task (started before the upgrade, so without a workflow
    // context) completes, and the architect's is created with the analyst as its upstream.
    let analyst = s
        .post(
            "/api/v1/tasks/claim",
            json!({"agent_type": "analyst", "worker_id": "w"}),
        )
        .expect(200);
    assert_eq!(analyst["project_id"], q);
    assert!(analyst.get("workflow").is_none(), "{analyst}");
    let id = analyst["task_id"].as_str().unwrap();
    s.post(
        &format!("/api/v1/tasks/{id}/status"),
        json!({"status": "completed", "output": {"spec": 1}, "lease_id": analyst["lease_id"]}),
    )
    .expect(200);
    let architect = s
        .post(
            "/api/v1/tasks/claim",
            json!({"agent_type": "architect", "worker_id": "w"}),
        )
        .expect(200);
    // The shop's architect task was claimed before the upgrade: the only pending one is the run's.
    assert_eq!(architect["project_id"], q);
    assert_eq!(architect["workflow"]["phase"], "architect");
    assert_eq!(
        architect["workflow"]["upstream"]["analyst"]["output"],
        json!({"spec": 1})
    );
    // Definitions can be stored in the migrated database.
    s.put(
        "/api/v1/workflows/tiny",
        json!({"phases": [{"agent_type": "coder", "instructions": "x"}]}),
    )
    .expect(201);
    let dir = s.stop();
    assert_eq!(schema_version(dir.path()), 9);
    assert!(table_names(dir.path()).iter().any(|t| t == "workflow_defs"));
    let (ok, text) = check(dir.path());
    assert!(ok, "{text}");
}

const FIXTURE_V8: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/schema-v8/flightdeck.redb"
);

/// The start of the UTC day holding now, as the API writes times.
fn today_utc() -> String {
    chrono::Utc::now()
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

#[test]
fn a_schema_v8_database_gets_a_timer_for_each_budget_window() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    std::fs::copy(FIXTURE_V8, dir.path().join("flightdeck.redb")).unwrap();
    assert_eq!(schema_version(dir.path()), 8);
    let (ok, text) = check(dir.path());
    assert!(ok, "the old database is consistent as it is: {text}");

    let s = open_fixture(&dir, &[]);
    let projects = items(&s.get("/api/v1/projects").expect(200));
    let shop = project_named(&projects, "fixture shop");
    let budgets = items(&s.get("/api/v1/budgets").expect(200));
    let scopes: Vec<&str> = budgets
        .iter()
        .map(|b| b["scope"].as_str().unwrap())
        .collect();
    assert_eq!(scopes.len(), 2, "{budgets:?}");
    assert!(scopes.contains(&"global"), "{scopes:?}");
    assert!(
        scopes.contains(&format!("project:{shop}").as_str()),
        "{scopes:?}"
    );
    // Shown in the window that holds now, whichever day the fixture was written.
    let global = s.get("/api/v1/budgets/global").expect(200);
    assert_eq!(global["window"], "day");
    assert_eq!(global["state"], "ok");
    assert_eq!(global["max_tokens"], 1_000_000_000u64);
    let today = today_utc();
    let tomorrow_or_today = global["window_start"].as_str().unwrap();
    // (At midnight the answer may already be the next day's.)
    assert!(tomorrow_or_today >= today.as_str(), "{global}");
    let month = s
        .get(&format!("/api/v1/budgets/project:{shop}"))
        .expect(200);
    assert_eq!(month["window"], "month");
    assert!(
        (month["max_cost_usd"].as_f64().unwrap() - 100.0).abs() < 1e-9,
        "{month}"
    );
    let dir = s.stop();
    assert_eq!(schema_version(dir.path()), 9);
    // Schema 9's check wants each budget's timer: the migration wrote them.
    let (ok, text) = check(dir.path());
    assert!(ok, "{text}");
}
