//! Followers, black-box: two real servers, a leader with a replication key and a follower of it,
//! each on port 0 with a data directory of its own, read over real sockets (ureq, and
//! tokio-tungstenite for the follower's WebSocket).

use serde_json::{Value, json};

use crate::common::{Server, check, wait_for};
use crate::websocket::{connect, log_for, next_event, runtime};

const KEY: &str = "replication-secret-0123456789";

fn leader(extra: &[&str]) -> Server {
    let mut args = vec!["--replication-key", KEY];
    args.extend_from_slice(extra);
    Server::start_with(&args)
}

fn follow_args(leader: &Server) -> Vec<String> {
    vec![
        "--follow".into(),
        leader.url(""),
        "--replication-key".into(),
        KEY.into(),
    ]
}

fn follower_in(leader: &Server, dir: std::sync::Arc<tempfile::TempDir>) -> Server {
    let args = follow_args(leader);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start_in(dir, &args)
}

/// Waits until the follower's event log is the leader's, event for event.
fn caught_up(leader: &Server, follower: &Server) -> Vec<Value> {
    let expected = leader.all_events(None);
    wait_for("the follower to hold the leader's event log", || {
        (follower.all_events(None) == expected).then_some(())
    });
    expected
}

/// A counter of the leader's `/metrics`: requests answered 200 on `route`.
fn requests(s: &Server, route: &str) -> u64 {
    let needle = format!("route=\"{route}\"");
    s.get("/metrics")
        .body
        .lines()
        .filter(|l| l.starts_with("flightdeck_http_requests_total{") && l.contains(&needle))
        .filter(|l| l.contains("status=\"200\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[test]
fn a_follower_serves_the_leaders_state_and_events_and_sends_writes_to_the_leader() {
    let leader = leader(&[]);
    let project = leader.project("before the follower");
    let first = leader.task(&project, "coder");
    let follower = follower_in(&leader, std::sync::Arc::new(tempfile::tempdir().unwrap()));

    // From the snapshot: what the leader held before the follower started.
    assert_eq!(
        follower.get(&format!("/api/v1/tasks/{first}")).expect(200),
        leader.get(&format!("/api/v1/tasks/{first}")).expect(200)
    );

    // Streamed: the follower's subscribers get the leader's events, with the leader's seqs,
    // exactly once and in order, and its reads answer what the leader's do.
    runtime().block_on(async {
        let mut socket = connect(&follower, &format!("/ws/{project}?since=0")).await;
        let second = leader.task(&project, "coder");
        leader.set_status(&second, "cancelled").expect(200);
        let artifact = leader.artifact(&project, "code", "coder", json!({"text": "fn main() {}"}));
        let expected = log_for(&leader, &project, 0);
        let mut seen = Vec::new();
        while seen.len() < expected.len() {
            let event = next_event(&mut socket).await;
            seen.push(event);
        }
        let seqs: Vec<u64> = seen.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs, expected);
        let leaders: Vec<Value> = leader
            .all_events(None)
            .into_iter()
            .filter(|e| e["project_id"].is_null() || e["project_id"] == project.as_str())
            .collect();
        assert_eq!(seen, leaders, "the same frames as the leader's log");
        for path in [
            format!("/api/v1/projects/{project}"),
            format!("/api/v1/projects/{project}/status"),
            format!("/api/v1/projects/{project}/tasks"),
            format!("/api/v1/tasks/{second}"),
            format!("/api/v1/context/artifacts/{artifact}"),
            "/api/v1/agents/status".to_string(),
        ] {
            assert_eq!(
                follower.get(&path).expect(200),
                leader.get(&path).expect(200),
                "{path}"
            );
        }
        // The queues, but for the oldest task's age, which grows between the two reads.
        let queues = |s: &Server| {
            let mut v = s.get("/api/v1/queues").expect(200);
            for q in v["queues"].as_array_mut().unwrap() {
                q.as_object_mut()
                    .unwrap()
                    .remove("oldest_pending_age_seconds");
            }
            v
        };
        let on_follower = queues(&follower);
        assert_eq!(on_follower, queues(&leader));
        let coder = on_follower["queues"]
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["agent_type"] == "coder");
        assert_eq!(
            coder.unwrap()["pending"],
            1,
            "kept from the claim queue's entries"
        );
        // What the follower answered from its cache is not answered again once stale.
        let status = format!("/api/v1/projects/{project}/status");
        let stored = format!("/api/v1/context/artifacts/{artifact}");
        for path in [&status, &stored] {
            assert_eq!(follower.get(path).expect(200), leader.get(path).expect(200));
        }
        leader.set_status(&first, "cancelled").expect(200);
        leader
            .patch(&stored, json!({"content": {"text": "fn main() { run() }"}}))
            .expect(200);
        caught_up(&leader, &follower);
        for path in [&status, &stored] {
            assert_eq!(
                follower.get(path).expect(200),
                leader.get(path).expect(200),
                "{path}"
            );
        }
        assert_eq!(
            follower.get(&stored).expect(200)["content"]["text"],
            "fn main() { run() }"
        );
    });
    caught_up(&leader, &follower);

    // Writes go to the leader: 503 not_leader with its URL, and nothing changes.
    let refused = follower.post("/api/v1/projects", json!({"name": "on the follower"}));
    refused.expect_error(503, "not_leader");
    assert_eq!(refused.json()["error"]["leader"], leader.url(""));
    assert_eq!(
        refused.header("flightdeck-leader"),
        Some(leader.url("").as_str())
    );
    follower
        .post(
            &format!("/api/v1/projects/{project}/tasks"),
            json!({"agent_type": "coder"}),
        )
        .expect_error(503, "not_leader");
    caught_up(&leader, &follower);

    // Probes: the role, and `?role=leader` for load balancers.
    let ready = leader.get("/readyz?role=leader").expect(200);
    assert_eq!(ready["role"], "leader");
    let ready = wait_for("the follower to be ready", || {
        let r = follower.get("/readyz");
        (r.status == 200).then(|| r.json())
    });
    assert_eq!(ready["role"], "follower");
    assert_eq!(ready["leader"], leader.url(""));
    let not_leader = follower.get("/readyz?role=leader");
    assert_eq!(not_leader.status, 503, "{}", not_leader.body);
    assert_eq!(not_leader.json()["role"], "follower");
    wait_for("the follower's lag to be exported as 0", || {
        let metrics = follower.get("/metrics").body;
        (metrics.contains("flightdeck_replication_lag_records 0")
            && metrics.contains("flightdeck_replication_streaming 1"))
        .then_some(())
    });

    // Restarted, it resumes from its own last record: no second snapshot.
    let dir = follower.stop();
    let third = leader.task(&project, "coder");
    let follower = follower_in(&leader, dir);
    let events = caught_up(&leader, &follower);
    assert_eq!(
        follower.get(&format!("/api/v1/tasks/{third}")).expect(200),
        leader.get(&format!("/api/v1/tasks/{third}")).expect(200)
    );
    assert_eq!(requests(&leader, "replication.snapshot"), 1);
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "no gap");

    let dir = follower.stop();
    let (consistent, report) = check(dir.path());
    assert!(consistent, "{report}");
}

#[test]
fn replication_routes_need_the_key_and_a_follower_too_far_behind_starts_from_a_new_snapshot() {
    let leader = leader(&["--replication-backlog-mib", "1"]);
    // A follower must keep what it acknowledges.
    let args = follow_args(&leader);
    let scratch = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(crate::common::BIN)
        .args(["--listen", "127.0.0.1:0", "--durability", "periodic"])
        .args(&args)
        .arg("--data-dir")
        .arg(scratch.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("needs --durability immediate"), "{said}");
    let plain = Server::start();
    plain
        .get("/replication/log?from=1")
        .expect_error(403, "replication_refused");
    leader
        .get("/replication/log?from=1")
        .expect_error(403, "replication_refused");
    leader
        .call_as(
            Some("not-the-replication-key"),
            "GET",
            "/replication/snapshot",
            None,
        )
        .expect_error(403, "replication_refused");
    // Bad input, with the key: a clear error naming the field, and nothing changes.
    for path in [
        "/replication/log",
        "/replication/log?from=0",
        "/replication/log?from=x",
    ] {
        let message = leader
            .call_as(Some(KEY), "GET", path, None)
            .expect_error(422, "invalid_field");
        assert!(message.starts_with("from:"), "{path}: {message}");
    }
    let message = leader
        .call_as(Some(KEY), "POST", "/replication/ack?node=n1", None)
        .expect_error(422, "invalid_field");
    assert!(message.starts_with("lsn:"), "{message}");
    assert_eq!(
        leader
            .call_as(Some(KEY), "POST", "/replication/ack?node=n1&lsn=7", None)
            .status,
        204
    );
    // Beyond the leader's newest record: a follower that holds what it never had.
    let message = leader
        .call_as(Some(KEY), "GET", "/replication/log?from=5", None)
        .expect_error(410, "snapshot_needed");
    assert!(message.contains("never had"), "{message}");
    let project = leader.project("far behind");
    let follower = follower_in(&leader, std::sync::Arc::new(tempfile::tempdir().unwrap()));
    caught_up(&leader, &follower);
    let dir = follower.stop();

    // Over a mebibyte of records while it is away: more than the leader keeps.
    let text = "x".repeat(100_000);
    let mut artifacts = Vec::new();
    for _ in 0..15 {
        artifacts.push(leader.artifact(&project, "code", "coder", json!({ "text": text })));
    }
    let follower = follower_in(&leader, dir);
    let (succeeded, dir) = follower.exits_by_itself();
    assert!(
        !succeeded,
        "a follower that cannot go on exits for its supervisor to restart it"
    );
    assert!(dir.path().join("flightdeck.resnapshot").exists());

    let follower = follower_in(&leader, dir);
    caught_up(&leader, &follower);
    for id in &artifacts {
        let path = format!("/api/v1/context/artifacts/{id}");
        assert_eq!(
            follower.get(&path).expect(200),
            leader.get(&path).expect(200)
        );
    }
    assert_eq!(requests(&leader, "replication.snapshot"), 2);
    let dir = follower.stop();
    assert!(!dir.path().join("flightdeck.resnapshot").exists());
}

#[test]
fn with_a_synchronous_replica_a_write_is_answered_once_the_follower_holds_it_and_never_without() {
    let leader = leader(&["--sync-replicas", "1", "--sync-timeout-ms", "500"]);
    // No follower: the write is on the leader, but its answer says it is not replicated.
    let refused = leader.post("/api/v1/projects", json!({"name": "alone"}));
    let message = refused.expect_error(503, "not_replicated");
    assert!(
        message.contains("fewer than 1 followers (of 0 connected)"),
        "{message}"
    );
    let names: Vec<Value> = leader.get("/api/v1/projects").expect(200)["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].clone())
        .collect();
    assert_eq!(
        names,
        vec![json!("alone")],
        "committed on the leader all the same"
    );

    let follower = follower_in(&leader, std::sync::Arc::new(tempfile::tempdir().unwrap()));
    wait_for("the follower to be ready", || {
        (follower.get("/readyz").status == 200).then_some(())
    });
    let project = wait_for("a write acknowledged through the follower", || {
        let r = leader.post("/api/v1/projects", json!({"name": "replicated"}));
        (r.status == 201).then(|| r.json()["id"].as_str().unwrap().to_string())
    });
    // Acknowledged only once the follower held it: it is there at once.
    for _ in 0..20 {
        let task = leader.task(&project, "coder");
        assert_eq!(
            follower.get(&format!("/api/v1/tasks/{task}")).expect(200),
            leader.get(&format!("/api/v1/tasks/{task}")).expect(200)
        );
    }
    caught_up(&leader, &follower);

    // The follower gone: writes wait for it, then are refused, never silently asynchronous.
    follower.kill();
    let keyed = || {
        let request = ureq::http::Request::builder()
            .method("POST")
            .uri(leader.url(&format!("/api/v1/projects/{project}/tasks")))
            .header("content-type", "application/json")
            .header("idempotency-key", "sync-replica-retry")
            .body(
                json!({"agent_type": "coder", "instructions": "x"})
                    .to_string()
                    .into_bytes(),
            )
            .unwrap();
        leader.send_request(request)
    };
    keyed().expect_error(503, "not_replicated");
    // Retried with its key: the original's answer is not given while no follower holds it.
    keyed().expect_error(503, "not_replicated");
    // A follower back: the retry tells the original's outcome, now that it holds it.
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let _follower = follower_in(&leader, dir);
    let answered = wait_for("the retry answered once a follower holds the write", || {
        let r = keyed();
        assert!(r.status == 201 || r.status == 503, "{}", r.body);
        (r.status == 201).then(|| r.json())
    });
    let tasks = leader
        .get(&format!("/api/v1/projects/{project}/tasks"))
        .expect(200);
    let same: Vec<&Value> = tasks["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["task_id"] == answered["task_id"])
        .collect();
    assert_eq!(same.len(), 1, "written once");
}
