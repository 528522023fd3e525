//! Crash safety: concurrent writers, SIGKILL at a random moment, restart on the same directory;
//! every acknowledged write is there, the event log has no gap and no duplicate, and
//! `flightdeck check` passes. `FLIGHTDECK_CRASH_ROUNDS` sets the number of kills (default 5).

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;

use crate::common::{Server, check};

/// A write the server answered.
#[derive(Clone, Debug)]
enum Ack {
    Task(String),
    Started(String),
    Artifact(String),
}

fn rounds() -> usize {
    std::env::var("FLIGHTDECK_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
}

/// A small deterministic generator, seeded from the clock and printed so a failure can be replayed.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

#[test]
fn sigkill_at_random_moments_loses_no_acknowledged_write() {
    let seed = std::env::var("FLIGHTDECK_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("crash test seed: {seed} (FLIGHTDECK_CRASH_SEED)");
    let mut random = Lcg(seed);
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let first = Server::start_in(dir.clone(), &[]);
    let project = first.project("crash");
    drop(first.stop());
    let acknowledged: Arc<Mutex<Vec<Ack>>> = Arc::default();
    for round in 0..rounds() {
        let s = Server::start_in(dir.clone(), &[]);
        let addr = s.addr.clone();
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let (addr, project, acknowledged) = (addr.clone(), project.clone(), acknowledged.clone());
                std::thread::spawn(move || {
                    let agent: ureq::Agent = ureq::Agent::config_builder()
                        .http_status_as_error(false)
                        .timeout_global(Some(Duration::from_secs(10)))
                        .build()
                        .into();
                    // Each answer that arrives is an acknowledged write; a failed exchange is not.
                    let post = |path: String, body: serde_json::Value| -> Option<serde_json::Value> {
                        let mut response = agent.post(format!("http://{addr}{path}")).send_json(&body).ok()?;
                        if !response.status().is_success() {
                            return None;
                        }
                        response.body_mut().read_json::<serde_json::Value>().ok()
                    };
                    loop {
                        let body = json!({"agent_type": "coder", "instructions": format!("round {round} writer {w}")});
                        let Some(task) = post(format!("/api/v1/projects/{project}/tasks"), body) else { return };
                        let id = task["task_id"].as_str().unwrap().to_string();
                        acknowledged.lock().unwrap().push(Ack::Task(id.clone()));
                        let Some(_) = post(format!("/api/v1/tasks/{id}/status"), json!({"status": "working"})) else { return };
                        acknowledged.lock().unwrap().push(Ack::Started(id.clone()));
                        let artifact = json!({"project_id": project, "source_agent": "coder", "artifact_type": "source_code", "content": {"task": id}});
                        let Some(a) = post("/api/v1/context/artifacts".into(), artifact) else { return };
                        acknowledged.lock().unwrap().push(Ack::Artifact(a["context_id"].as_str().unwrap().to_string()));
                    }
                })
            })
            .collect();
        // Let some writes through, then kill at a random moment.
        let before = acknowledged.lock().unwrap().len();
        let deadline = Instant::now() + Duration::from_secs(60);
        while acknowledged.lock().unwrap().len() < before + 5 {
            assert!(Instant::now() < deadline, "no writes were acknowledged");
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(random.next() % 200));
        let pid = s.pid().to_string();
        assert!(
            Command::new("kill")
                .args(["-KILL", &pid])
                .status()
                .unwrap()
                .success()
        );
        for w in writers {
            w.join().unwrap();
        }
        drop(s);
    }
    let s = Server::start_in(dir.clone(), &[]);
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(acknowledged.len() >= 5 * rounds());
    let mut tasks = 0;
    for ack in &acknowledged {
        match ack {
            Ack::Task(id) => {
                tasks += 1;
                s.get(&format!("/api/v1/tasks/{id}")).expect(200);
            }
            Ack::Started(id) => assert_eq!(
                s.get(&format!("/api/v1/tasks/{id}")).expect(200)["status"],
                "working"
            ),
            Ack::Artifact(id) => {
                s.get(&format!("/api/v1/context/artifacts/{id}"))
                    .expect(200);
            }
        }
    }
    let events = s.all_events(None);
    crate::common::assert_gap_free(&events);
    let created = events
        .iter()
        .filter(|e| e["event_type"] == "task_created")
        .count();
    assert!(created >= tasks, "every acknowledged task has its event");
    let summary = s.get(&format!("/api/v1/projects/{project}")).expect(200);
    assert_eq!(
        summary["total_tasks"].as_u64().unwrap() as usize,
        created,
        "summaries rebuilt after crashes"
    );
    let dir = s.stop();
    let (ok, report) = check(dir.path());
    assert!(ok, "{report}");
}
