//! Claims: how long a task waits between its creation and a worker holding it, and how many claims
//! 100 workers make per second, with long-polling workers (`wait_ms`) and, as the baseline in the
//! same run, workers that poll without waiting and sleep 100 ms between empty answers (what a
//! worker had to do before long polls).
//!
//! Latency: from the moment the creating request is sent to the moment a worker has the claim's
//! answer (so it includes the create's own durable commit). Throughput: 100 workers draining a
//! backlog, each claim followed by the worker's completion with its lease.
//!
//! `cargo bench --bench claims` (FLIGHTDECK_BENCH_CLAIMS sets the tasks timed, default 1000).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::{Value, json};

#[path = "support/server.rs"]
mod server;
use server::{agent, start};

const WORKERS: usize = 100;
const BACKLOG: usize = 4000;
const POLL_SLEEP: Duration = Duration::from_millis(100);

/// Claims a coder task (waiting up to `wait_ms`); the task, or None on 204.
fn claim(agent: &ureq::Agent, base: &str, wait_ms: u64) -> Option<Value> {
    let mut r = agent
        .post(format!("{base}/tasks/claim"))
        .send_json(json!({"agent_type": "coder", "worker_id": "bench", "wait_ms": wait_ms}))
        .unwrap();
    match r.status().as_u16() {
        200 => Some(r.body_mut().read_json().unwrap()),
        204 => None,
        other => panic!("claim answered {other}"),
    }
}

fn complete(agent: &ureq::Agent, base: &str, task: &Value) {
    let id = task["task_id"].as_str().unwrap();
    let r = agent
        .post(format!("{base}/tasks/{id}/status"))
        .send_json(json!({"status": "completed", "lease_id": task["lease_id"]}))
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

fn create(agent: &ureq::Agent, base: &str, project: &str) -> String {
    let mut r = agent
        .post(format!("{base}/projects/{project}/tasks"))
        .send_json(json!({"agent_type": "coder", "instructions": "x"}))
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let v: Value = r.body_mut().read_json().unwrap();
    v["task_id"].as_str().unwrap().to_string()
}

/// A worker's loop until `stop`: claim (long poll or short poll), record when it got each task,
/// complete it.
fn worker(base: &str, long: bool, stop: &AtomicBool, got: &Mutex<HashMap<String, Instant>>) {
    let agent = agent();
    while !stop.load(Ordering::Acquire) {
        match claim(&agent, base, if long { 2_000 } else { 0 }) {
            Some(task) => {
                let at = Instant::now();
                got.lock()
                    .insert(task["task_id"].as_str().unwrap().to_string(), at);
                complete(&agent, base, &task);
            }
            None if long => {}
            None => std::thread::sleep(POLL_SLEEP),
        }
    }
}

struct Figures {
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    claims_per_second: f64,
}

fn run(long: bool, tasks: usize) -> Figures {
    let server = start(&[]);
    let base = server.base.clone();
    let agent = agent();
    let mut r = agent
        .post(format!("{base}/projects"))
        .send_json(json!({"name": "claims"}))
        .unwrap();
    let project: Value = r.body_mut().read_json().unwrap();
    let project = project["id"].as_str().unwrap().to_string();
    let stop = AtomicBool::new(false);
    let got: Mutex<HashMap<String, Instant>> = Mutex::new(HashMap::new());
    let (latencies, claims_per_second) = std::thread::scope(|scope| {
        // Throughput: a backlog created first, then drained by the workers.
        for _ in 0..BACKLOG {
            create(&agent, &base, &project);
        }
        let started = Instant::now();
        for _ in 0..WORKERS {
            scope.spawn(|| worker(&base, long, &stop, &got));
        }
        while got.lock().len() < BACKLOG {
            std::thread::sleep(Duration::from_millis(5));
        }
        let claims_per_second = BACKLOG as f64 / started.elapsed().as_secs_f64();
        // Latency: one task at a time, every 10 ms, with every worker idle in between.
        let mut sent = Vec::with_capacity(tasks);
        for _ in 0..tasks {
            let at = Instant::now();
            let id = create(&agent, &base, &project);
            sent.push((id, at));
            std::thread::sleep(Duration::from_millis(10));
        }
        let deadline = Instant::now() + Duration::from_secs(120);
        while got.lock().len() < BACKLOG + tasks && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        stop.store(true, Ordering::Release);
        let got = got.lock();
        let mut latencies: Vec<f64> = sent
            .iter()
            .map(|(id, at)| {
                let claimed = got.get(id).expect("every task claimed");
                claimed.duration_since(*at).as_secs_f64() * 1e3
            })
            .collect();
        latencies.sort_by(f64::total_cmp);
        (latencies, claims_per_second)
    });
    drop(server);
    let pct = |p: f64| {
        latencies
            [((latencies.len() as f64 * p / 100.0).ceil() as usize).clamp(1, latencies.len()) - 1]
    };
    Figures {
        p50_ms: pct(50.0),
        p99_ms: pct(99.0),
        max_ms: *latencies.last().unwrap(),
        claims_per_second,
    }
}

fn main() {
    let tasks: usize = std::env::var("FLIGHTDECK_BENCH_CLAIMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    println!("# claims: {WORKERS} workers, {BACKLOG} backlog tasks drained, {tasks} tasks timed");
    let long = run(true, tasks);
    let short = run(false, tasks);
    println!("| workers | create → claimed p50 | p99 | max | claims/s (backlog) |");
    println!("|---|---|---|---|---|");
    for (name, f) in [
        ("long poll (wait_ms)", &long),
        ("short poll, 100 ms sleep", &short),
    ] {
        println!(
            "| {name} | {:.2} ms | {:.2} ms | {:.2} ms | {:.0} |",
            f.p50_ms, f.p99_ms, f.max_ms, f.claims_per_second
        );
    }
    println!(
        "p99 ratio long/short: {:.3}x; throughput ratio: {:.2}x",
        long.p99_ms / short.p99_ms.max(1e-9),
        long.claims_per_second / short.claims_per_second.max(1e-9)
    );
}
