//! Project status at size: `GET /api/v1/projects/{id}/status` of one project with 50,000 tasks while
//! writers change and add tasks of that project, timed inside the server (`Server-Timing`) and by
//! the client. Baseline in the same run: the same server with a response cache too small to keep
//! the project's status view (`--cache-mib 1`), so every answer reads and encodes every task again
//! (what every answer after a write cost before the writer patched the view).
//!
//! `cargo bench --bench status` (FLIGHTDECK_BENCH_TASKS sets the task count, default 50000).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use serde_json::{Value, json};

#[path = "support/server.rs"]
mod server;
use server::{agent, start};

const WRITERS: usize = 4;
const SAMPLES: usize = 200;
const BASELINE_SAMPLES: usize = 40;

fn post(agent: &ureq::Agent, url: &str, body: Value) -> Value {
    agent
        .post(url)
        .send_json(&body)
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap()
}

/// Server time of one status answer, and the client's, in ms; checks it lists `tasks` or more.
fn status(agent: &ureq::Agent, url: &str, tasks: usize) -> (f64, f64) {
    let started = Instant::now();
    let mut response = agent.get(url).call().unwrap();
    let server = response
        .headers()
        .get("server-timing")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split("dur=").nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .expect("Server-Timing");
    let body: Value = response
        .body_mut()
        .with_config()
        .limit(1 << 30)
        .read_json()
        .unwrap();
    let client = started.elapsed().as_secs_f64() * 1000.0;
    let listed = body["tasks"].as_array().unwrap().len();
    assert!(listed >= tasks, "{listed} tasks listed, {tasks} expected");
    (server, client)
}

/// Status answers timed (server ms, client ms) while `WRITERS` threads change and add tasks of the
/// project, and the writes per second meanwhile.
fn measure(args: &[&str], tasks: usize, samples: usize) -> (Vec<f64>, Vec<f64>, f64) {
    let server = start(args);
    let a = agent();
    let project = post(
        &a,
        &format!("{}/projects", server.base),
        json!({"name": "big"}),
    )["id"]
        .as_str()
        .unwrap()
        .to_string();
    let create = format!("{}/projects/{project}/tasks", server.base);
    let ids: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let create = &create;
                scope.spawn(move || {
                    let a = agent();
                    (t..tasks)
                        .step_by(8)
                        .map(|i| {
                            post(
                                &a,
                                create,
                                json!({"agent_type":"coder","instructions":format!("task {i}")}),
                            )["task_id"]
                                .as_str()
                                .unwrap()
                                .to_string()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let url = format!("{}/projects/{project}/status", server.base);
    let stop = AtomicBool::new(false);
    let writes = AtomicU64::new(0);
    std::thread::scope(|scope| {
        for w in 0..WRITERS {
            let (ids, stop, writes, base, create) = (&ids, &stop, &writes, &server.base, &create);
            scope.spawn(move || {
                let a = agent();
                let mut next = w;
                while !stop.load(Ordering::Relaxed) {
                    // One task of the project to working and on to completed, one new task.
                    let id = &ids[next % ids.len()];
                    next += WRITERS;
                    for to in ["working", "completed"] {
                        let _ = a
                            .post(format!("{base}/tasks/{id}/status"))
                            .send_json(json!({ "status": to }));
                    }
                    post(
                        &a,
                        create,
                        json!({"agent_type":"tester","instructions":"more"}),
                    );
                    writes.fetch_add(3, Ordering::Relaxed);
                }
            });
        }
        // Warm-up: the first answer builds the view.
        status(&a, &url, tasks);
        let mut server_ms = Vec::with_capacity(samples);
        let mut client_ms = Vec::with_capacity(samples);
        let started = Instant::now();
        for _ in 0..samples {
            let (s, c) = status(&a, &url, tasks);
            server_ms.push(s);
            client_ms.push(c);
        }
        stop.store(true, Ordering::Relaxed);
        let rate = writes.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
        (server_ms, client_ms, rate)
    })
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn main() {
    let tasks: usize = std::env::var("FLIGHTDECK_BENCH_TASKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    println!(
        "# status benchmark: one project of {tasks} tasks, {WRITERS} writers changing and adding its tasks (durable)"
    );
    let (mut ours, mut ours_client, ours_rate) = measure(&[], tasks, SAMPLES);
    let (mut base, mut base_client, base_rate) =
        measure(&["--cache-mib", "1"], tasks, BASELINE_SAMPLES);
    for v in [&mut ours, &mut ours_client, &mut base, &mut base_client] {
        v.sort_by(f64::total_cmp);
    }
    println!();
    println!(
        "| | samples | writes/s meanwhile | server p50 ms | server p99 ms | server max ms | client p50 ms | client p99 ms |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (name, s, c, rate) in [
        (
            "flightdeck (view patched by the writer)",
            &ours,
            &ours_client,
            ours_rate,
        ),
        (
            "baseline (`--cache-mib 1`: every task read and encoded)",
            &base,
            &base_client,
            base_rate,
        ),
    ] {
        println!(
            "| {name} | {} | {rate:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
            s.len(),
            pct(s, 0.5),
            pct(s, 0.99),
            s.last().unwrap(),
            pct(c, 0.5),
            pct(c, 0.99),
        );
    }
    println!(
        "server p99 flightdeck / baseline: {:.3}x (target: p99 < 25 ms inside the server)",
        pct(&ours, 0.99) / pct(&base, 0.99)
    );
}
