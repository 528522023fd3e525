//! The cost phase: each operation class alone, from a few closed-loop clients for a few seconds,
//! and the server's CPU time it took divided by the operations answered — the server's CPU cost
//! per operation, which shows a change's effect without a saturated machine. Run after the
//! workflow phase (the WebSocket clients gone, so a write's cost is the write's alone).

use super::*;

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
}

impl Op {
    fn class(self) -> Class {
        match self {
            Op::StatusQuery => Class::StatusQuery,
            Op::TaskOperation => Class::TaskOperation,
            Op::ContextPut => Class::ContextPut,
            Op::ContextGet => Class::ContextGet,
            Op::ContextList => Class::ContextList,
        }
    }
}

/// The server's CPU seconds so far: from /proc for our own server, from `/metrics` otherwise.
async fn server_cpu(target: &Target, client: &mut Client) -> Option<f64> {
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
                    while Instant::now() < until {
                        ops +=
                            one(op, &mut client, &mut rec, &mut rng, &projects, &artifacts).await;
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
            class: class.name(),
            operations: ops,
            seconds: elapsed,
            server_cpu_us: (after - before) * 1e6 / ops.max(1) as f64,
            server_p50_ms: server.p50_ms,
        });
    }
    rows
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
            let types = flightdeck::domain::ArtifactType::ALL;
            let kind = types[rng.below(types.len())].as_str();
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
        Op::TaskOperation => {
            let class = Class::TaskOperation;
            let created = rec
                .request(
                    client,
                    class,
                    hyper::Method::POST,
                    &format!("/api/v1/projects/{project}/tasks"),
                    Some(&json!({"agent_type": "orchestrator", "instructions": "cost phase"})),
                    &[201],
                )
                .await
                .and_then(|a| a.json());
            let Some(id) = created.and_then(|t| t["task_id"].as_str().map(String::from)) else {
                return 0;
            };
            let mut done = 1;
            for status in ["working", "completed"] {
                let answered = rec
                    .request(
                        client,
                        class,
                        hyper::Method::POST,
                        &format!("/api/v1/tasks/{id}/status"),
                        Some(&json!({"status": status})),
                        &[200],
                    )
                    .await;
                done += u64::from(answered.is_some());
            }
            return done;
        }
    };
    let answered = rec
        .request(client, op.class(), method, &path, body.as_ref(), &[status])
        .await;
    u64::from(answered.is_some())
}
