//! Workers: claims are exclusive, leases expire without heartbeats, failures retry with backoff and
//! escalate after the last attempt, long work times out, HITL requests expire, and timers survive
//! a restart. Durations are milliseconds, configured per server.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use crate::common::{Server, check, wait_for};

fn claim(s: &Server, agent: &str, worker: &str, lease: f64) -> Option<Value> {
    let r = s.post(
        "/api/v1/tasks/claim",
        json!({"agent_type": agent, "worker_id": worker, "lease_seconds": lease}),
    );
    match r.status {
        200 => Some(r.json()),
        204 => None,
        other => panic!("claim answered {other}: {}", r.body),
    }
}

fn task(s: &Server, id: &str) -> Value {
    s.get(&format!("/api/v1/tasks/{id}")).expect(200)
}

fn parse_time(ts: &str) -> SystemTime {
    SystemTime::from(chrono::DateTime::parse_from_rfc3339(ts).unwrap())
}

#[test]
fn twenty_claimers_take_five_hundred_tasks_exactly_once() {
    let s = Server::start_with(&["--durability", "none"]);
    let p = s.project("p");
    let mut created = HashSet::new();
    for _ in 0..500 {
        created.insert(s.task(&p, "coder"));
    }
    let s = &s;
    let claimed: Vec<(String, String)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..20)
            .map(|w| {
                scope.spawn(move || {
                    let name = format!("worker-{w}");
                    let mut mine = Vec::new();
                    while let Some(t) = claim(s, "coder", &name, 60.0) {
                        assert_eq!(t["status"], "working");
                        assert_eq!(t["worker_id"], name.as_str());
                        mine.push((t["task_id"].as_str().unwrap().to_string(), name.clone()));
                    }
                    mine
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    assert_eq!(claimed.len(), 500, "every task claimed once, none twice");
    let ids: HashSet<String> = claimed.iter().map(|(t, _)| t.clone()).collect();
    assert_eq!(ids, created);
    for (id, worker) in claimed.iter().step_by(25) {
        assert_eq!(task(s, id)["worker_id"], worker.as_str());
    }
    assert!(
        claim(s, "tester", "w", 1.0).is_none(),
        "another agent type has nothing"
    );
    let summary = s.get(&format!("/api/v1/projects/{p}")).expect(200);
    assert_eq!(summary["task_counts"]["working"], 500);
}

#[test]
fn oldest_first_and_bad_claims() {
    let s = Server::start();
    let p = s.project("p");
    let first = s.task(&p, "analyst");
    let _second = s.task(&p, "analyst");
    let got = claim(&s, "analyst", "w", 10.0).unwrap();
    assert_eq!(got["task_id"], first.as_str(), "the oldest pending task");
    assert_eq!(
        s.get("/api/v1/agents/status/analyst").expect(200)["status"],
        "working"
    );
    s.post(
        "/api/v1/tasks/claim",
        json!({"agent_type": "Wizard", "worker_id": "w"}),
    )
    .expect_error(422, "invalid_field");
    s.post(
        "/api/v1/tasks/claim",
        json!({"agent_type": "coder", "worker_id": ""}),
    )
    .expect_error(422, "invalid_field");
    s.post(
        "/api/v1/tasks/claim",
        json!({"agent_type": "coder", "worker_id": "w", "lease_seconds": -1}),
    )
    .expect_error(422, "invalid_field");
    s.post("/api/v1/tasks/claim", json!({"worker_id": "w"}))
        .expect_error(422, "invalid_field");
}

#[test]
fn a_lease_without_heartbeats_expires_and_another_worker_finishes() {
    let s = Server::start_with(&["--timer-tick-ms", "20"]);
    let p = s.project("p");
    let t = s.task(&p, "coder");
    let first = claim(&s, "coder", "dies", 0.2).unwrap();
    assert_eq!(first["task_id"], t.as_str());
    let back = wait_for("the lease to expire", || {
        let v = task(&s, &t);
        (v["status"] == "pending").then_some(v)
    });
    assert!(back["worker_id"].is_null() && back["lease_expires_at"].is_null());
    assert_eq!(back["attempts"], 1);
    let types: Vec<String> = s
        .all_events(Some(&p))
        .iter()
        .map(|e| e["event_type"].as_str().unwrap().to_string())
        .collect();
    assert!(
        types.contains(&"task_lease_expired".to_string()),
        "{types:?}"
    );
    let second = claim(&s, "coder", "lives", 30.0).unwrap();
    assert_eq!(second["task_id"], t.as_str());
    assert_eq!(second["attempts"], 2, "the attempt count was raised");
    assert_ne!(second["lease_id"], first["lease_id"], "a fresh lease");
    // The first worker comes back late: its completion, failure and heartbeat are refused and
    // change nothing.
    for body in [
        json!({"status": "completed", "output": {"by": "dies"}, "lease_id": first["lease_id"]}),
        json!({"status": "failed", "error_message": "late", "lease_id": first["lease_id"]}),
        json!({"status": "completed", "output": {"by": "no lease"}}),
    ] {
        s.post(&format!("/api/v1/tasks/{t}/status"), body)
            .expect_error(409, "lease_lost");
    }
    s.post(
        &format!("/api/v1/tasks/{t}/heartbeat"),
        json!({"lease_id": first["lease_id"]}),
    )
    .expect_error(409, "lease_lost");
    let v = task(&s, &t);
    assert_eq!(
        (v["status"].as_str(), v["worker_id"].as_str()),
        (Some("working"), Some("lives"))
    );
    assert!(v["output"].is_null());
    assert!(
        v.get("lease_id").is_none(),
        "the lease is shown only to its holder: {v}"
    );
    s.post(
        &format!("/api/v1/tasks/{t}/status"),
        json!({"status": "completed", "output": {"by": "lives"}, "lease_id": second["lease_id"]}),
    )
    .expect(200);
    let v = task(&s, &t);
    assert_eq!(v["status"], "completed");
    assert_eq!(
        v["output"],
        json!({"by": "lives"}),
        "the current worker's output"
    );
    // Once finished, no lease holds it.
    s.post(
        &format!("/api/v1/tasks/{t}/heartbeat"),
        json!({"lease_id": second["lease_id"]}),
    )
    .expect_error(409, "lease_lost");
}

#[test]
fn a_cancelled_task_tells_its_worker_to_stop() {
    let s = Server::start();
    let p = s.project("p");
    let t = s.task(&p, "coder");
    let claimed = claim(&s, "coder", "w", 60.0).unwrap();
    assert!(claimed["lease_id"].is_string());
    s.post(
        &format!("/api/v1/tasks/{t}/status"),
        json!({"status": "cancelled"}),
    )
    .expect(200);
    s.post(
        &format!("/api/v1/tasks/{t}/heartbeat"),
        json!({"lease_id": claimed["lease_id"]}),
    )
    .expect_error(409, "task_cancelled");
    s.post(
        &format!("/api/v1/tasks/{t}/status"),
        json!({"status": "completed", "lease_id": claimed["lease_id"]}),
    )
    .expect_error(409, "lease_lost");
    assert_eq!(task(&s, &t)["status"], "cancelled");
    // A task worked without a claim (BotArmy's way) needs no lease, and takes none.
    let u = s.task(&p, "coder");
    s.post(
        &format!("/api/v1/tasks/{u}/status"),
        json!({"status": "working"}),
    )
    .expect(200);
    s.post(
        &format!("/api/v1/tasks/{u}/status"),
        json!({"status": "completed", "lease_id": claimed["lease_id"]}),
    )
    .expect_error(409, "lease_lost");
    s.post(
        &format!("/api/v1/tasks/{u}/status"),
        json!({"status": "completed"}),
    )
    .expect(200);
    s.post(
        &format!("/api/v1/tasks/{t}/status"),
        json!({"status": "completed", "lease_id": "not-a-uuid"}),
    )
    .expect_error(400, "invalid_id");
}

#[test]
fn heartbeats_extend_the_lease_for_its_worker_only() {
    let s = Server::start_with(&["--timer-tick-ms", "20"]);
    let p = s.project("p");
    let t = s.task(&p, "coder");
    let claimed = claim(&s, "coder", "w1", 0.3).unwrap();
    let first_deadline = parse_time(claimed["lease_expires_at"].as_str().unwrap());
    let lease = claimed["lease_id"].clone();
    let beat = s
        .post(
            &format!("/api/v1/tasks/{t}/heartbeat"),
            json!({"worker_id": "w1", "lease_seconds": 30, "lease_id": lease}),
        )
        .expect(200);
    assert!(parse_time(beat["lease_expires_at"].as_str().unwrap()) > first_deadline);
    assert_eq!(beat["lease_id"], lease);
    s.post(
        &format!("/api/v1/tasks/{t}/heartbeat"),
        json!({"worker_id": "w2", "lease_id": lease}),
    )
    .expect_error(409, "invalid_transition");
    // A claimed task's heartbeat must name its lease.
    s.post(&format!("/api/v1/tasks/{t}/heartbeat"), json!({}))
        .expect_error(409, "lease_lost");
    s.post(
        &format!("/api/v1/tasks/{t}/heartbeat"),
        json!({"lease_id": lease}),
    )
    .expect(200);
    // Past the first deadline, the task is still the worker's.
    wait_for("the first deadline to pass", || {
        (SystemTime::now() > first_deadline + Duration::from_millis(100)).then_some(())
    });
    let v = task(&s, &t);
    assert_eq!(v["status"], "working");
    assert_eq!(v["worker_id"], "w1");
    let other = s.task(&p, "coder");
    s.post(&format!("/api/v1/tasks/{other}/heartbeat"), json!({}))
        .expect_error(409, "invalid_transition");
    s.post(
        "/api/v1/tasks/0190b5c2-1111-7000-8000-000000000000/heartbeat",
        json!({}),
    )
    .expect_error(404, "task_not_found");
}

#[test]
fn failures_retry_with_backoff_then_escalate() {
    let s = Server::start_with(&["--timer-tick-ms", "20", "--retry-backoff-ms", "50"]);
    let p = s.project("p");
    let t = s.task(&p, "tester");
    for attempt in 1..=3 {
        let got = wait_for("the task to be claimable", || {
            claim(&s, "tester", "w", 30.0)
        });
        assert_eq!(got["task_id"], t.as_str());
        assert_eq!(got["attempts"], attempt);
        let failed = s
            .post(
                &format!("/api/v1/tasks/{t}/status"),
                json!({"status": "failed", "error_message": format!("boom {attempt}"), "lease_id": got["lease_id"]}),
            )
            .expect(200);
        assert_eq!(failed["failures"], attempt);
        if attempt < 3 {
            assert!(failed["retry_at"].is_string(), "a retry is scheduled");
        } else {
            assert!(failed["retry_at"].is_null(), "no more retries");
        }
    }
    let escalation = wait_for("the escalation request", || {
        let pending = s
            .get(&format!("/api/v1/hitl/project/{p}/requests?status=pending"))
            .expect(200);
        pending
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["task_id"] == t.as_str())
            .cloned()
    });
    assert!(
        escalation["question"]
            .as_str()
            .unwrap()
            .contains("failed 3 times"),
        "{escalation}"
    );
    assert_eq!(task(&s, &t)["status"], "failed", "it stays failed");
    let agent = s.get("/api/v1/agents/status/tester").expect(200);
    assert_eq!(agent["status"], "error");
    assert!(agent["error_message"].as_str().unwrap().contains("boom 3"));
    let types: Vec<String> = s
        .all_events(Some(&p))
        .iter()
        .map(|e| e["event_type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        types.iter().filter(|t| *t == "task_retried").count(),
        2,
        "{types:?}"
    );
    assert_eq!(types.iter().filter(|t| *t == "task_failed").count(), 3);
}

#[test]
fn work_longer_than_the_timeout_is_a_failed_attempt() {
    let s = Server::start_with(&[
        "--timer-tick-ms",
        "20",
        "--task-timeout-ms",
        "200",
        "--retry-backoff-ms",
        "60000",
    ]);
    let p = s.project("p");
    let t = s.task(&p, "deployer");
    claim(&s, "deployer", "slow", 600.0).unwrap();
    let v = wait_for("the timeout", || {
        let v = task(&s, &t);
        (v["status"] == "failed").then_some(v)
    });
    assert_eq!(v["failures"], 1);
    assert!(
        v["error_message"].as_str().unwrap().contains("timed out"),
        "{v}"
    );
    assert!(v["retry_at"].is_string());
}

#[test]
fn hitl_requests_expire_by_themselves() {
    let s = Server::start_with(&["--timer-tick-ms", "20"]);
    let p = s.project("p");
    let h = s
        .post(
            "/api/v1/hitl",
            json!({"project_id": p, "question": "ok?", "expires_in_seconds": 1}),
        )
        .expect(201);
    let id = h["request_id"].as_str().unwrap();
    wait_for("the request to expire", || {
        (s.get(&format!("/api/v1/hitl/{id}")).expect(200)["status"] == "expired").then_some(())
    });
    let types: Vec<String> = s
        .all_events(Some(&p))
        .iter()
        .map(|e| e["event_type"].as_str().unwrap().to_string())
        .collect();
    assert!(types.contains(&"hitl_expired".to_string()));
    assert!(
        s.get("/api/v1/hitl/pending")
            .expect(200)
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn a_restart_in_the_middle_of_a_lease_keeps_its_deadline() {
    let s = Server::start_with(&["--timer-tick-ms", "20"]);
    let p = s.project("p");
    let t = s.task(&p, "coder");
    let claimed = claim(&s, "coder", "w", 2.0).unwrap();
    let deadline = claimed["lease_expires_at"].as_str().unwrap().to_string();
    let dir = s.stop();
    let (ok, report) = check(dir.path());
    assert!(ok, "{report}");
    let s = Server::start_in(dir, &["--timer-tick-ms", "20"]);
    let v = task(&s, &t);
    assert_eq!(
        v["lease_expires_at"],
        deadline.as_str(),
        "the stored deadline"
    );
    assert_eq!(v["status"], "working");
    wait_for("the lease to expire after the restart", || {
        (task(&s, &t)["status"] == "pending").then_some(())
    });
    assert!(SystemTime::now() >= parse_time(&deadline));
    let dir = s.stop();
    let (ok, report) = check(dir.path());
    assert!(ok, "{report}");
}

/// The `flightdeck_workers_waiting` sample for an agent type, from `/metrics`.
fn waiting(s: &Server, agent: &str) -> u64 {
    let text = s.get("/metrics").body;
    let prefix = format!("flightdeck_workers_waiting{{agent_type=\"{agent}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no {prefix} in /metrics"))
        .trim()
        .parse::<f64>()
        .unwrap() as u64
}

fn long_claim(s: &Server, agent: &str, worker: &str, wait_ms: u64) -> (u16, Value) {
    let r = s.post(
        "/api/v1/tasks/claim",
        json!({"agent_type": agent, "worker_id": worker, "wait_ms": wait_ms}),
    );
    let body = if r.status == 200 {
        r.json()
    } else {
        Value::Null
    };
    (r.status, body)
}

#[test]
fn a_waiting_claim_is_woken_by_the_commit_first_come_first_served() {
    let s = Server::start();
    assert_eq!(waiting(&s, "coder"), 0, "the family is there from start-up");
    let p = s.project("p");
    std::thread::scope(|scope| {
        let first = scope.spawn(|| long_claim(&s, "coder", "first", 20_000));
        wait_for("the first claim to wait", || {
            (waiting(&s, "coder") == 1).then_some(())
        });
        let second = scope.spawn(|| long_claim(&s, "coder", "second", 20_000));
        wait_for("the second claim to wait", || {
            (waiting(&s, "coder") == 2).then_some(())
        });
        // A task of another type wakes nobody.
        s.task(&p, "tester");
        let started = std::time::Instant::now();
        let t1 = s.task(&p, "coder");
        let (status, got) = first.join().unwrap();
        assert_eq!(status, 200);
        assert_eq!(
            got["task_id"],
            t1.as_str(),
            "the first waiter gets the first task"
        );
        assert_eq!(got["worker_id"], "first");
        assert!(got["lease_id"].is_string());
        // Woken, not timed out: long before the 20 s wait.
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(waiting(&s, "coder"), 1);
        let t2 = s.task(&p, "coder");
        let (status, got) = second.join().unwrap();
        assert_eq!((status, got["task_id"].as_str()), (200, Some(t2.as_str())));
        assert_eq!(got["worker_id"], "second");
    });
    assert_eq!(waiting(&s, "coder"), 0);
}

#[test]
fn a_waiting_claim_answers_204_when_its_time_is_up_and_the_wait_is_bounded() {
    let s = Server::start_with(&["--max-claim-wait-ms", "2000"]);
    let started = std::time::Instant::now();
    let (status, _) = long_claim(&s, "deployer", "w", 300);
    assert_eq!(status, 204);
    assert!(started.elapsed() >= Duration::from_millis(300));
    s.post(
        "/api/v1/tasks/claim",
        json!({"agent_type": "deployer", "worker_id": "w", "wait_ms": 2001}),
    )
    .expect_error(422, "invalid_field");
    // A task already there is handed out at once, waiting or not.
    let p = s.project("p");
    let t = s.task(&p, "deployer");
    let (status, got) = long_claim(&s, "deployer", "w", 2000);
    assert_eq!((status, got["task_id"].as_str()), (200, Some(t.as_str())));
}

#[test]
fn a_client_that_goes_away_while_waiting_claims_nothing() {
    let s = Server::start();
    let p = s.project("p");
    let body =
        json!({"agent_type": "architect", "worker_id": "gone", "wait_ms": 25_000}).to_string();
    let request = format!(
        "POST /api/v1/tasks/claim HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    {
        use std::io::Write;
        let mut stream =
            std::net::TcpStream::connect(s.url("").trim_start_matches("http://")).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        wait_for("the claim to wait", || {
            (waiting(&s, "architect") == 1).then_some(())
        });
        // The client goes away.
    }
    wait_for("the server to forget the claim", || {
        (waiting(&s, "architect") == 0).then_some(())
    });
    let t = s.task(&p, "architect");
    let got = claim(&s, "architect", "here", 30.0).expect("the task is still claimable");
    assert_eq!(got["task_id"], t.as_str());
    assert_eq!(task(&s, &t)["worker_id"], "here");
}

#[test]
fn shutdown_answers_a_waiting_claim_at_once() {
    use std::io::{Read, Write};
    let s = Server::start();
    let body = json!({"agent_type": "coder", "worker_id": "w", "wait_ms": 30_000}).to_string();
    let request = format!(
        "POST /api/v1/tasks/claim HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = std::net::TcpStream::connect(s.url("").trim_start_matches("http://")).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    wait_for("the claim to wait", || {
        (waiting(&s, "coder") == 1).then_some(())
    });
    let started = std::time::Instant::now();
    s.stop();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 204"), "{answer}");
    // Well before the claim's 30 s: the server did not sit out the wait.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn claims_hand_out_the_highest_priority_first() {
    let s = Server::start();
    let p = s.project("p");
    let post = |priority: Option<u64>| {
        let mut body = json!({"agent_type": "coder", "instructions": "x"});
        if let Some(p) = priority {
            body["priority"] = json!(p);
        }
        s.post(&format!("/api/v1/projects/{p}/tasks"), body)
    };
    let low = post(Some(5)).expect(201)["task_id"]
        .as_str()
        .unwrap()
        .to_string();
    let normal = post(None).expect(201);
    assert_eq!(normal["priority"], 3, "the default");
    let normal = normal["task_id"].as_str().unwrap().to_string();
    let urgent = post(Some(1)).expect(201)["task_id"]
        .as_str()
        .unwrap()
        .to_string();
    for bad in [0, 6, 1000] {
        post(Some(bad)).expect_error(422, "invalid_field");
    }
    let order: Vec<String> = std::iter::from_fn(|| claim(&s, "coder", "w", 60.0))
        .map(|t| t["task_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(order, vec![urgent, normal, low]);
}

#[test]
fn projects_take_turns_so_a_big_backlog_starves_nobody() {
    let s = Server::start_with(&["--durability", "none"]);
    let big = s.project("big");
    for _ in 0..30 {
        s.task(&big, "tester");
    }
    // A project that arrives later, with two tasks.
    let small = s.project("small");
    let small_tasks = [s.task(&small, "tester"), s.task(&small, "tester")];
    let projects: Vec<String> = (0..6)
        .map(|_| {
            claim(&s, "tester", "w", 60.0).unwrap()["project_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    // Within six claims the small project had both of its tasks: the two alternate while both
    // have work, then the big one goes on alone.
    let small_claims = projects.iter().filter(|p| **p == small).count();
    assert_eq!(small_claims, 2, "{projects:?}");
    for pair in projects[..4].chunks(2) {
        assert_ne!(pair[0], pair[1], "turns alternate: {projects:?}");
    }
    assert!(projects[4..].iter().all(|p| *p == big));
    for t in &small_tasks {
        assert_eq!(task(&s, t)["status"], "working");
    }
}

/// The value of the `/metrics` sample named exactly `series` (name and labels).
fn sample(s: &Server, series: &str) -> f64 {
    let text = s.get("/metrics").body;
    let prefix = format!("{series} ");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no {series} in /metrics"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn the_queue_metrics_follow_the_tasks_from_start_up() {
    let s = Server::start_with(&[
        "--timer-tick-ms",
        "20",
        "--retry-backoff-ms",
        "50",
        "--max-attempts",
        "2",
    ]);
    let series = |family: &str| format!("{family}{{agent_type=\"coder\"}}");
    for family in [
        "flightdeck_queue_depth",
        "flightdeck_queue_wait_seconds_count",
        "flightdeck_task_run_seconds_count",
        "flightdeck_task_lease_expirations_total",
        "flightdeck_task_retries_total",
        "flightdeck_task_escalations_total",
        "flightdeck_workers_waiting",
    ] {
        assert_eq!(sample(&s, &series(family)), 0.0, "{family} at start-up");
    }
    let p = s.project("p");
    let expiring = s.task(&p, "coder");
    let failing = s.task(&p, "coder");
    assert_eq!(sample(&s, &series("flightdeck_queue_depth")), 2.0);
    // A lease that runs out.
    let first = claim(&s, "coder", "w", 0.1).unwrap();
    assert_eq!(first["task_id"], expiring.as_str());
    assert_eq!(sample(&s, &series("flightdeck_queue_depth")), 1.0);
    wait_for("the lease to expire", || {
        (sample(&s, &series("flightdeck_task_lease_expirations_total")) == 1.0).then_some(())
    });
    assert_eq!(sample(&s, &series("flightdeck_queue_depth")), 2.0);
    // Two failed attempts of the other task: one retry, then the escalation. The projects take
    // turns, so claim until the failing task comes up, finishing the other.
    let mut claims = 1;
    let mut failures = 0;
    while failures < 2 {
        let Some(t) = claim(&s, "coder", "w", 60.0) else {
            wait_for("a task to be claimable again", || {
                (sample(&s, &series("flightdeck_queue_depth")) > 0.0).then_some(())
            });
            continue;
        };
        claims += 1;
        let id = t["task_id"].as_str().unwrap();
        let status = if id == failing { "failed" } else { "completed" };
        s.post(
            &format!("/api/v1/tasks/{id}/status"),
            json!({"status": status, "lease_id": t["lease_id"]}),
        )
        .expect(200);
        if id == failing {
            failures += 1;
        }
    }
    assert_eq!(sample(&s, &series("flightdeck_task_retries_total")), 1.0);
    assert_eq!(
        sample(&s, &series("flightdeck_task_escalations_total")),
        1.0
    );
    assert_eq!(
        sample(&s, &series("flightdeck_queue_wait_seconds_count")),
        claims as f64
    );
    // Every claim but the expired one ended in a completion or a failure.
    assert_eq!(
        sample(&s, &series("flightdeck_task_run_seconds_count")),
        (claims - 1) as f64
    );
    assert_eq!(sample(&s, &series("flightdeck_queue_depth")), 0.0);
    assert_eq!(
        sample(&s, "flightdeck_queue_depth{agent_type=\"tester\"}"),
        0.0
    );
}
