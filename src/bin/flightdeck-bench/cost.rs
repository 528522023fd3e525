//! The cost phase: each operation class alone, from a few closed-loop clients for a few seconds,
//! and the server's CPU time it took divided by the operations answered — the server's CPU cost
//! per operation, which shows a change's effect without a saturated machine. Run after the
//! workflow phase (the WebSocket clients gone, so a write's cost is the write's alone).

use crate::http::Client;
use crate::process::{Target, process_figures, remote_figures};
use crate::recorder::{Call, Recorder};
use crate::roles::{Rng, latest_seq};
use crate::ws::WsPlan;
use crate::{Class, ws};
use serde::Serialize;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Clients per class (enough to keep the server busy on two cores, few enough not to queue).
pub(super) const CLIENTS: usize = 4;

/// One class's cost.
#[derive(Clone, Debug, Serialize)]
pub struct CostRow {
    pub class: &'static str,
    pub operations: u64,
    pub seconds: f64,
    /// Server CPU (user + system) per operation answered, in µs.
    pub server_cpu_us: f64,
    /// The server's own p50 of the class (`Server-Timing`), in ms, for comparison.
    pub server_p50_ms: f64,
}

/// The classes measured, with what one operation of each is.
#[derive(Copy, Clone)]
enum Op {
    StatusQuery,
    /// A durable task write: create, then working, then completed (three operations).
    TaskOperation,
    ContextPut,
    ContextGet,
    ContextList,
    /// A model-usage report on a working task (a durable write; recorded under the task
    /// operation class's server timings), at `USAGE_RATE` rather than closed-loop.
    UsageReport,
}

/// The row of usage reports.
pub(super) const USAGE_ROW: &str = "usage report (1,000 a second)";
/// Usage reports a second, all clients together.
const USAGE_RATE: f64 = 1000.0;

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::UsageReport => USAGE_ROW,
            other => other.class().name(),
        }
    }

    fn class(self) -> Class {
        match self {
            Op::StatusQuery => Class::StatusQuery,
            Op::TaskOperation | Op::UsageReport => Class::TaskOperation,
            Op::ContextPut => Class::ContextPut,
            Op::ContextGet => Class::ContextGet,
            Op::ContextList => Class::ContextList,
        }
    }
}

/// The server's CPU seconds so far: from /proc for our own server, from `/metrics` otherwise.
pub(super) async fn server_cpu(target: &Target, client: &mut Client) -> Option<f64> {
    match target.process.as_ref().and_then(|own| own.child.id()) {
        Some(pid) => process_figures(pid).1,
        None => remote_figures(client).await.1,
    }
}

/// Runs each class alone for `seconds` and measures its cost.
pub(super) async fn cost_phase(
    target: &Target,
    token: &Option<String>,
    projects: &[String],
    artifact_ids: &[String],
    seconds: f64,
) -> Vec<CostRow> {
    eprintln!("cost phase: each class alone for {seconds:.0} s");
    let mut client = Client::new(target.addr, token.clone());
    let mut rows = Vec::new();
    let projects = Arc::new(projects.to_vec());
    let artifacts = Arc::new(artifact_ids.to_vec());
    for op in [
        Op::StatusQuery,
        Op::TaskOperation,
        Op::ContextPut,
        Op::ContextGet,
        Op::ContextList,
        Op::UsageReport,
    ] {
        if matches!(op, Op::ContextGet) && artifacts.is_empty() {
            continue;
        }
        let Some(before) = server_cpu(target, &mut client).await else {
            return Vec::new();
        };
        let started = Instant::now();
        let until = started + Duration::from_secs_f64(seconds);
        let handles: Vec<_> = (0..CLIENTS)
            .map(|n| {
                let (projects, artifacts, token) =
                    (projects.clone(), artifacts.clone(), token.clone());
                let addr = target.addr;
                tokio::spawn(async move {
                    let mut client = Client::new(addr, token);
                    let mut rec = Recorder::default();
                    let mut rng = Rng::seeded(0xA076_1D64_78BD_642F ^ (n as u64 + 1));
                    let mut ops = 0u64;
                    let mut usage = UsageClient {
                        n,
                        task: None,
                        sent: 0,
                    };
                    while Instant::now() < until {
                        ops += if matches!(op, Op::UsageReport) {
                            // Paced, not closed-loop: the rate a fleet reports at, spread over
                            // the clients (what one costs depends on how many share a commit).
                            let due = started
                                + Duration::from_secs_f64(
                                    usage.sent as f64 * CLIENTS as f64 / USAGE_RATE,
                                );
                            tokio::time::sleep_until(due.into()).await;
                            usage.report(&mut client, &mut rec, &projects).await
                        } else {
                            one(op, &mut client, &mut rec, &mut rng, &projects, &artifacts).await
                        };
                    }
                    (ops, rec)
                })
            })
            .collect();
        let (mut ops, mut rec) = (0u64, Recorder::default());
        for h in handles {
            if let Ok((n, r)) = h.await {
                ops += n;
                rec.merge(r);
            }
        }
        let elapsed = started.elapsed().as_secs_f64();
        let Some(after) = server_cpu(target, &mut client).await else {
            return Vec::new();
        };
        let class = op.class();
        let server = rec.server[Recorder::index(class)].clone().summary();
        rows.push(CostRow {
            class: op.name(),
            operations: ops,
            seconds: elapsed,
            server_cpu_us: (after - before) * 1e6 / ops.max(1) as f64,
            server_p50_ms: server.p50_ms,
        });
    }
    let write_us = rows
        .iter()
        .find(|r| r.class == Class::TaskOperation.name())
        .map(|r| r.server_cpu_us);
    if let (Some(write_us), Some(project)) = (write_us, projects.first()) {
        rows.extend(frame_cost(target, token, project, seconds, write_us).await);
    }
    rows
}

/// WebSocket clients subscribed to the cost row of frames.
const FRAME_CLIENTS: usize = 100;

/// A counter of the server's `/metrics`.
async fn metric(client: &mut Client, name: &str) -> Option<f64> {
    let answer = client.get("/metrics").await.ok()?;
    String::from_utf8_lossy(&answer.body)
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// The server's CPU per WebSocket frame delivered: `FRAME_CLIENTS` connections subscribed to one
/// project while one client creates tasks in it for `seconds`; the CPU of the writes themselves
/// (`write_us` each, the task row) is taken off, the rest divided by the frames written.
async fn frame_cost(
    target: &Target,
    token: &Option<String>,
    project: &str,
    seconds: f64,
    write_us: f64,
) -> Option<CostRow> {
    let mut client = Client::new(target.addr, token.clone());
    let since = latest_seq(&mut client).await.ok()?;
    let plan = WsPlan {
        addr: target.addr,
        token: token.clone(),
        projects: vec![project.to_string()],
        connections: FRAME_CLIENTS,
        since,
    };
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<usize>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let clients = tokio::spawn(ws::run(
        plan,
        move |n| {
            let _ = ready_tx.send(n);
        },
        async {
            let _ = stop_rx.await;
        },
        Duration::from_secs(30),
    ));
    ready_rx.await.ok()?;
    const FRAMES: &str = "flightdeck_ws_frames_sent_total";
    let frames_before = metric(&mut client, FRAMES).await?;
    let before = server_cpu(target, &mut client).await?;
    let started = Instant::now();
    let mut rec = Recorder::default();
    let mut writes = 0u64;
    while started.elapsed().as_secs_f64() < seconds {
        let body = json!({"agent_type": "orchestrator", "instructions": "frame cost"});
        let path = format!("/api/v1/projects/{project}/tasks");
        let class = Class::TaskOperation;
        let answer = rec
            .request(
                &mut client,
                Call {
                    class,
                    method: hyper::Method::POST,
                    path: &path,
                    body: Some(&body),
                    ok: &[201],
                },
            )
            .await;
        writes += u64::from(answer.is_some());
    }
    // Until every frame is written: the counter stops moving.
    let mut frames = metric(&mut client, FRAMES).await?;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = metric(&mut client, FRAMES).await?;
        if now == frames {
            break;
        }
        frames = now;
    }
    let after = server_cpu(target, &mut client).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let _ = stop_tx.send(());
    let _ = clients.await;
    let delivered = (frames - frames_before).max(1.0);
    let cpu_us = ((after - before) * 1e6 - writes as f64 * write_us).max(0.0);
    Some(CostRow {
        class: "WebSocket frame delivered (100 connections)",
        operations: delivered as u64,
        seconds: elapsed,
        server_cpu_us: cpu_us / delivered,
        server_p50_ms: 0.0,
    })
}

/// A client of the usage row: one working task of its own (made working without a claim, so its
/// reports hold no lease to check), reports with fresh ids over four models.
struct UsageClient {
    n: usize,
    task: Option<String>,
    sent: u64,
}

impl UsageClient {
    /// One report (the first call also makes the task: not counted); the number answered.
    async fn report(
        &mut self,
        client: &mut Client,
        rec: &mut Recorder,
        projects: &[String],
    ) -> u64 {
        let class = Class::TaskOperation;
        if self.task.is_none() {
            let project = &projects[self.n % projects.len()];
            let Some(id) = create_task(client, rec, project, "usage").await else {
                return 0;
            };
            if !set_status(client, rec, &id, "working").await {
                return 0;
            }
            self.task = Some(id);
        }
        let Some(task) = &self.task else { return 0 };
        self.sent += 1;
        let body = json!({"report_id": format!("bench-{}-{}", self.n, self.sent),
            "model": format!("bench-model-{}", self.sent % 4), "provider": "bench",
            "input_tokens": 1200, "output_tokens": 300, "cache_read_tokens": 800});
        let answered = rec
            .request(
                client,
                Call {
                    class,
                    method: hyper::Method::POST,
                    path: &format!("/api/v1/tasks/{task}/usage"),
                    body: Some(&body),
                    ok: &[201],
                },
            )
            .await;
        u64::from(answered.is_some())
    }
}

/// Creates an orchestrator's task in `project`: its id.
async fn create_task(
    client: &mut Client,
    rec: &mut Recorder,
    project: &str,
    instructions: &str,
) -> Option<String> {
    let created = rec
        .request(
            client,
            Call {
                class: Class::TaskOperation,
                method: hyper::Method::POST,
                path: &format!("/api/v1/projects/{project}/tasks"),
                body: Some(&json!({"agent_type": "orchestrator", "instructions": instructions})),
                ok: &[201],
            },
        )
        .await
        .and_then(|a| a.json())?;
    created["task_id"].as_str().map(String::from)
}

/// Moves a task to `status` (without a claim); whether it was answered 200.
async fn set_status(client: &mut Client, rec: &mut Recorder, task: &str, status: &str) -> bool {
    rec.request(
        client,
        Call {
            class: Class::TaskOperation,
            method: hyper::Method::POST,
            path: &format!("/api/v1/tasks/{task}/status"),
            body: Some(&json!({ "status": status })),
            ok: &[200],
        },
    )
    .await
    .is_some()
}

/// One operation (or, for tasks, three); the number answered as expected.
async fn one(
    op: Op,
    client: &mut Client,
    rec: &mut Recorder,
    rng: &mut Rng,
    projects: &[String],
    artifacts: &[String],
) -> u64 {
    let project = &projects[rng.below(projects.len())];
    let get = |path: String| (hyper::Method::GET, path, None::<Value>, 200u16);
    let (method, path, body, status) = match op {
        Op::StatusQuery => get(format!("/api/v1/projects/{project}/status")),
        Op::ContextGet => get(format!(
            "/api/v1/context/artifacts/{}",
            artifacts[rng.below(artifacts.len())]
        )),
        Op::ContextList => {
            let types = crate::roles::ARTIFACT_TYPES;
            let kind = types[rng.below(types.len())];
            get(format!(
                "/api/v1/context/project/{project}/artifacts?artifact_type={kind}&limit=100"
            ))
        }
        Op::ContextPut => (
            hyper::Method::POST,
            "/api/v1/context/artifacts".to_string(),
            Some(json!({
                "project_id": project,
                "source_agent": "coder",
                "artifact_type": "source_code",
                "content": {"cost": true, "text": "x".repeat(200)},
            })),
            201,
        ),
        Op::UsageReport => unreachable!("usage reports are `UsageClient`'s"),
        Op::TaskOperation => {
            let Some(id) = create_task(client, rec, project, "cost phase").await else {
                return 0;
            };
            let mut done = 1;
            for status in ["working", "completed"] {
                done += u64::from(set_status(client, rec, &id, status).await);
            }
            return done;
        }
    };
    let answered = rec
        .request(
            client,
            Call {
                class: op.class(),
                method,
                path: &path,
                body: body.as_ref(),
                ok: &[status],
            },
        )
        .await;
    u64::from(answered.is_some())
}
