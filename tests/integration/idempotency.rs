//! Idempotency keys: a create repeated with the same `Idempotency-Key` and body answers the
//! original without writing again, across a restart and a SIGKILL right after the answer; the same
//! key with another body is 422 `idempotency_key_reused`.

use serde_json::{Value, json};

use crate::common::{Resp, Server};

fn post_with_key(s: &Server, path: &str, key: &str, body: &Value) -> Resp {
    let request = ureq::http::Request::builder()
        .method("POST")
        .uri(s.url(path))
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .body(body.to_string().into_bytes())
        .unwrap();
    s.send_request(request)
}

fn tasks_of(s: &Server, project: &str) -> Vec<Value> {
    let v = s
        .get(&format!("/api/v1/projects/{project}/tasks"))
        .expect(200);
    v["items"].as_array().or(v.as_array()).unwrap().clone()
}

#[test]
fn a_repeated_create_answers_the_original_and_writes_once() {
    let s = Server::start();
    let project = post_with_key(&s, "/api/v1/projects", "p-1", &json!({"name": "shop"}));
    let again = post_with_key(&s, "/api/v1/projects", "p-1", &json!({"name": "shop"}));
    assert_eq!((project.status, again.status), (201, 201));
    let p = project.json()["id"].as_str().unwrap().to_string();
    assert_eq!(again.json()["id"], p.as_str());
    let body = json!({"agent_type": "coder", "instructions": "build it"});
    let path = format!("/api/v1/projects/{p}/tasks");
    let first = post_with_key(&s, &path, "t-1", &body).expect(201);
    let latest = s.get("/api/v1/events?limit=1000").expect(200);
    let events_before = latest["items"]
        .as_array()
        .or(latest.as_array())
        .unwrap()
        .len();
    let second = post_with_key(&s, &path, "t-1", &body).expect(201);
    assert_eq!(first["task_id"], second["task_id"]);
    assert_eq!(tasks_of(&s, &p).len(), 1, "written once");
    let latest = s.get("/api/v1/events?limit=1000").expect(200);
    assert_eq!(
        latest["items"]
            .as_array()
            .or(latest.as_array())
            .unwrap()
            .len(),
        events_before,
        "no new event"
    );
    // The same key with another body is refused and changes nothing.
    let other = json!({"agent_type": "coder", "instructions": "build something else"});
    post_with_key(&s, &path, "t-1", &other).expect_error(422, "idempotency_key_reused");
    // The same key on another project's route is another key.
    let q = s.project("q");
    post_with_key(&s, &format!("/api/v1/projects/{q}/tasks"), "t-1", &body).expect(201);
    // Without a key, or with a new one, every create writes.
    post_with_key(&s, &path, "t-2", &body).expect(201);
    s.post(&path, body.clone()).expect(201);
    assert_eq!(tasks_of(&s, &p).len(), 3);
    for bad in ["", &"k".repeat(256), "has space"] {
        post_with_key(&s, &path, bad, &body).expect_error(422, "invalid_field");
    }
    // A key that is not visible ASCII is refused too, never ignored.
    let raw_body = body.to_string();
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\nidempotency-key: caf",
        raw_body.len()
    )
    .into_bytes();
    request.extend_from_slice("\u{e9}\r\nconnection: close\r\n\r\n".as_bytes());
    request.extend_from_slice(raw_body.as_bytes());
    let answer = s.raw(&request);
    assert!(answer.starts_with("HTTP/1.1 422"), "{answer}");
    assert!(answer.contains("Idempotency-Key"), "{answer}");
    assert_eq!(tasks_of(&s, &p).len(), 3, "nothing written");
    // Artifacts, HITL requests and workflow starts too.
    let artifact = json!({"project_id": p, "source_agent": "coder", "artifact_type": "source_code", "content": {"a": 1}});
    let a1 = post_with_key(&s, "/api/v1/context/artifacts", "a-1", &artifact).expect(201);
    let a2 = post_with_key(&s, "/api/v1/context/artifacts", "a-1", &artifact).expect(201);
    assert_eq!(a1["context_id"], a2["context_id"]);
    let hitl = json!({"project_id": p, "question": "ship it?"});
    let h1 = post_with_key(&s, "/api/v1/hitl", "h-1", &hitl).expect(201);
    let h2 = post_with_key(&s, "/api/v1/hitl", "h-1", &hitl).expect(201);
    assert_eq!(h1["request_id"], h2["request_id"]);
    let start = json!({"workflow": "sdlc"});
    let w = format!("/api/v1/projects/{q}/workflow");
    let w1 = post_with_key(&s, &w, "w-1", &start).expect(201);
    // Without the key this is 409: a workflow already runs.
    let w2 = post_with_key(&s, &w, "w-1", &start).expect(201);
    assert_eq!(w1["phases"][0]["task_id"], w2["phases"][0]["task_id"]);
    s.post(&w, start).expect_error(409, "invalid_transition");
}

#[test]
fn a_repeated_claim_gets_the_same_task_and_lease_even_after_a_crash() {
    let s = Server::start();
    let p = s.project("p");
    let t1 = s.task(&p, "coder");
    let t2 = s.task(&p, "coder");
    let claim = json!({"agent_type": "coder", "worker_id": "w"});
    let first = post_with_key(&s, "/api/v1/tasks/claim", "c-1", &claim).expect(200);
    assert_eq!(first["task_id"], t1.as_str());
    // The worker never saw the answer: the server dies right after it, and comes back.
    let dir = s.kill();
    let s = Server::start_in(dir, &[]);
    let again = post_with_key(&s, "/api/v1/tasks/claim", "c-1", &claim).expect(200);
    assert_eq!(
        again["task_id"],
        t1.as_str(),
        "the same task, not the next one"
    );
    assert_eq!(again["lease_id"], first["lease_id"]);
    // A claim that found nothing is not remembered: its retry may find work.
    let other = json!({"agent_type": "tester", "worker_id": "w"});
    let none = post_with_key(&s, "/api/v1/tasks/claim", "c-2", &other);
    assert_eq!(none.status, 204);
    let t3 = s.task(&p, "tester");
    let found = post_with_key(&s, "/api/v1/tasks/claim", "c-2", &other).expect(200);
    assert_eq!(found["task_id"], t3.as_str());
    let next = post_with_key(&s, "/api/v1/tasks/claim", "c-3", &claim).expect(200);
    assert_eq!(next["task_id"], t2.as_str());
    let dir = s.stop();
    let (ok, report) = crate::common::check(dir.path());
    assert!(ok, "{report}");
}

const ALICE: &str = "alice-secret-0123456789";
const MALLORY: &str = "mallory-secret-0123456789";

fn post_as(s: &Server, bearer: &str, path: &str, key: &str, body: &Value) -> Resp {
    let request = ureq::http::Request::builder()
        .method("POST")
        .uri(s.url(path))
        .header("authorization", format!("Bearer {bearer}"))
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .body(body.to_string().into_bytes())
        .unwrap();
    s.send_request(request)
}

#[test]
fn another_api_keys_repeat_is_a_request_of_its_own() {
    // The attack: a second key replays a claim's Idempotency-Key to be handed the first worker's
    // lease, completes its task with forged output, and the first worker is told its lease is
    // lost. Each key's Idempotency-Keys are its own.
    let s = Server::start_with(&[
        "--api-key",
        &format!("alice:rw:{ALICE}"),
        "--api-key",
        &format!("mallory:rw:{MALLORY}"),
    ]);
    let p = post_as(&s, ALICE, "/api/v1/projects", "p", &json!({"name": "p"})).expect(201)["id"]
        .as_str()
        .unwrap()
        .to_string();
    let body = |i: u32| json!({"agent_type": "coder", "instructions": format!("task {i}")});
    let path = format!("/api/v1/projects/{p}/tasks");
    let t1 = post_as(&s, ALICE, &path, "t1", &body(1)).expect(201)["task_id"].clone();
    let t2 = post_as(&s, ALICE, &path, "t2", &body(2)).expect(201)["task_id"].clone();
    let claim = json!({"agent_type": "coder", "worker_id": "w"});
    let alice = post_as(&s, ALICE, "/api/v1/tasks/claim", "claim-1", &claim).expect(200);
    assert_eq!(alice["task_id"], t1);
    let mallory = post_as(&s, MALLORY, "/api/v1/tasks/claim", "claim-1", &claim).expect(200);
    assert_eq!(mallory["task_id"], t2, "a claim of its own, the next task");
    assert_ne!(mallory["lease_id"], alice["lease_id"]);
    // Alice's own repeat still answers her claim, and her lease holds.
    let again = post_as(&s, ALICE, "/api/v1/tasks/claim", "claim-1", &claim).expect(200);
    assert_eq!(
        (&again["task_id"], &again["lease_id"]),
        (&alice["task_id"], &alice["lease_id"])
    );
    let done =
        json!({"status": "completed", "output": {"ok": true}, "lease_id": alice["lease_id"]});
    let t1 = t1.as_str().unwrap();
    post_as(
        &s,
        ALICE,
        &format!("/api/v1/tasks/{t1}/status"),
        "done",
        &done,
    )
    .expect(200);
    // Mallory's create with Alice's key and body is a task of its own too.
    let created = post_as(&s, MALLORY, &path, "t1", &body(1)).expect(201);
    assert_ne!(created["task_id"], t1);
}

#[test]
fn a_path_id_is_the_same_key_however_it_is_spelled() {
    let s = Server::start();
    let p = s.project("p");
    let spellings = [
        p.clone(),
        p.to_uppercase(),
        p.replace('-', ""),
        format!("urn:uuid:{p}"),
    ];
    let body = json!({"agent_type": "coder", "instructions": "once"});
    let answers: Vec<Value> = spellings
        .iter()
        .map(|spelled| {
            post_with_key(&s, &format!("/api/v1/projects/{spelled}/tasks"), "k", &body).expect(201)
                ["task_id"]
                .clone()
        })
        .collect();
    assert!(answers.iter().all(|a| *a == answers[0]), "{answers:?}");
    assert_eq!(
        tasks_of(&s, &p).len(),
        1,
        "one task, however the id was spelled"
    );
}

#[test]
fn a_remembered_key_holds_a_reference_not_the_answer_and_the_oldest_beyond_the_bound_go() {
    let s = Server::start_with(&["--idempotency-max-keys", "5"]);
    let p = post_with_key(&s, "/api/v1/projects", "p", &json!({"name": "p"})).expect(201)["id"]
        .as_str()
        .unwrap()
        .to_string();
    // A large artifact: the key keeps the artifact's id, so a repeat answers it as it is now.
    let body = json!({"project_id": p, "source_agent": "coder", "artifact_type": "source_code",
                      "content": "x".repeat(500_000)});
    let created = post_with_key(&s, "/api/v1/context/artifacts", "a", &body).expect(201);
    let id = created["context_id"].as_str().unwrap().to_string();
    assert_eq!(created["version"], 1);
    s.patch(
        &format!("/api/v1/context/artifacts/{id}"),
        json!({"content": "changed"}),
    )
    .expect(200);
    let again = post_with_key(&s, "/api/v1/context/artifacts", "a", &body).expect(201);
    assert_eq!(again["context_id"], id.as_str(), "not written twice");
    assert_eq!(again["version"], 2, "the artifact as it is now");
    assert_eq!(again["content"], "changed");
    // Deleted since: the repeat says so rather than creating it again.
    s.delete(&format!("/api/v1/context/artifacts/{id}"))
        .expect(200);
    post_with_key(&s, "/api/v1/context/artifacts", "a", &body)
        .expect_error(404, "artifact_not_found");

    // A repeated claim answers the task while the claim holds it, and lease_lost once it does
    // not: never a lease that is no longer the task's.
    let task = post_with_key(
        &s,
        &format!("/api/v1/projects/{p}/tasks"),
        "t",
        &json!({"agent_type": "coder", "instructions": "x"}),
    )
    .expect(201);
    let claim = json!({"agent_type": "coder", "worker_id": "w", "lease_seconds": 60});
    let first = post_with_key(&s, "/api/v1/tasks/claim", "c", &claim).expect(200);
    assert_eq!(first["task_id"], task["task_id"]);
    let repeat = post_with_key(&s, "/api/v1/tasks/claim", "c", &claim).expect(200);
    assert_eq!(repeat["lease_id"], first["lease_id"]);
    let t = first["task_id"].as_str().unwrap();
    s.post(
        &format!("/api/v1/tasks/{t}/status"),
        json!({"status": "completed", "lease_id": first["lease_id"], "output": {}}),
    )
    .expect(200);
    post_with_key(&s, "/api/v1/tasks/claim", "c", &claim).expect_error(409, "lease_lost");

    // At most 5 keys, kept by each write that remembers one: the newest five (more-1 to more-5)
    // are still answered as they were, and the oldest ("p") is forgotten, so repeating it
    // creates anew, at once.
    let mut more = Vec::new();
    for i in 0..6 {
        let created = post_with_key(
            &s,
            "/api/v1/projects",
            &format!("more-{i}"),
            &json!({"name": format!("m{i}")}),
        )
        .expect(201);
        more.push(created["id"].as_str().unwrap().to_string());
    }
    let oldest_kept =
        post_with_key(&s, "/api/v1/projects", "more-1", &json!({"name": "m1"})).expect(201);
    assert_eq!(
        oldest_kept["id"],
        more[1].as_str(),
        "the fifth newest key is kept"
    );
    let fresh = post_with_key(&s, "/api/v1/projects", "p", &json!({"name": "p"})).expect(201);
    assert_ne!(fresh["id"], p.as_str(), "the oldest key was forgotten");
    // The newest are still remembered.
    let kept = post_with_key(&s, "/api/v1/projects", "more-5", &json!({"name": "m5"})).expect(201);
    assert_eq!(kept["id"], more[5].as_str());
    let listed = s.get("/api/v1/projects?limit=1000").expect(200);
    let named_m5 = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["name"] == "m5")
        .count();
    assert_eq!(named_m5, 1, "{kept}");
    let (ok, report) = crate::common::check(s.stop().path());
    assert!(ok, "{report}");
}
