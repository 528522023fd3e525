//! The load's roles: workers running sdlc, the reviewer, status clients, and the set-up (projects, preload).

use crate::http::Client;
use crate::pace::Pace;
use crate::recorder::{Call, Recorder};
use crate::stats::Samples;
use crate::{Class, Scenario};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A tiny deterministic generator for picking projects and ids.
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn seeded(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub(super) fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n.max(1) as u64) as usize
    }
}

/// The `sdlc` workflow's phases: each agent type and the artifact type it produces, from the
/// server's built-in definition (the one place that map is written).
pub(super) static SDLC: std::sync::LazyLock<Vec<(&'static str, &'static str)>> =
    std::sync::LazyLock::new(|| {
        BUILTIN
            .phases
            .iter()
            .map(|phase| {
                let produces = phase.produces.first().map_or("text", |a| a.as_str());
                (phase.agent_type.as_str(), produces)
            })
            .collect()
    });

/// The known default artifact and agent types, which every server takes.
pub(super) const ARTIFACT_TYPES: &[&str] =
    <flightdeck::domain::names::ArtifactKind as flightdeck::domain::names::NameKind>::DEFAULTS;
pub(super) const AGENT_TYPES: &[&str] =
    <flightdeck::domain::names::AgentKind as flightdeck::domain::names::NameKind>::DEFAULTS;

/// The server's built-in workflow, kept for the names `SDLC` borrows.
static BUILTIN: std::sync::LazyLock<flightdeck::domain::workflow::Workflow> =
    std::sync::LazyLock::new(flightdeck::domain::workflow::builtin);

/// Everything the concurrent clients of the workflow phase share.
pub(super) struct Shared {
    pub(super) addr: SocketAddr,
    pub(super) token: Option<String>,
    /// The reviewer's key (the workers' unless `--reviewer-api-key`).
    pub(super) reviewer_token: Option<String>,
    pub(super) projects: Vec<String>,
    pub(super) artifact_ids: Vec<String>,
    pub(super) scenario: Scenario,
    /// Work without end: after the last project, the planners (the workers, in a closed loop)
    /// give the first more tasks, and so on, and start its workflow again (a 409 while the last
    /// one still runs).
    pub(super) steady: bool,
    pub(super) next_project: AtomicUsize,
    pub(super) completed: AtomicU64,
    pub(super) done: AtomicBool,
    pub(super) done_signal: tokio::sync::Notify,
}

impl Shared {
    fn client(&self) -> Client {
        Client::new(self.addr, self.token.clone())
    }

    pub(super) fn finish(&self) {
        self.done.store(true, Ordering::Release);
        self.done_signal.notify_waiters();
    }

    pub(super) fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }
}

/// Gives the next project without work its tasks and starts its workflow; false when every
/// project has been given its work (never, when steady). With `pace`, each create is sent when
/// the pace has it due and timed from then (open loop); without, one after another.
pub(super) async fn seed_next(
    shared: &Shared,
    client: &mut Client,
    rec: &mut Recorder,
    mut pace: Option<&mut Pace>,
) -> bool {
    let extra = shared.scenario.tasks_per_project - SDLC.len();
    let i = shared.next_project.fetch_add(1, Ordering::Relaxed);
    let project = match shared.projects.get(i) {
        Some(p) => p,
        None if shared.steady && !shared.projects.is_empty() => {
            &shared.projects[i % shared.projects.len()]
        }
        None => return false,
    };
    let started: &[u16] = if shared.steady { &[201, 409] } else { &[201] };
    for t in 0..extra {
        let body = json!({
            "agent_type": SDLC[t % SDLC.len()].0,
            "instructions": format!("benchmark task {t}"),
        });
        let due = match pace.as_mut() {
            Some(p) => Some(p.due().await),
            None => None,
        };
        rec.request_due(
            due,
            client,
            Call {
                class: Class::TaskOperation,
                method: hyper::Method::POST,
                path: &format!("/api/v1/projects/{project}/tasks"),
                body: Some(&body),
                ok: &[201],
            },
        )
        .await;
        if shared.is_done() {
            return false;
        }
    }
    let body = json!({"workflow": "sdlc", "context": {"goal": "benchmark"}});
    rec.request(
        client,
        Call {
            class: Class::TaskOperation,
            method: hyper::Method::POST,
            path: &format!("/api/v1/projects/{project}/workflow"),
            body: Some(&body),
            ok: started,
        },
    )
    .await;
    true
}

/// A planner, open loop only: gives the projects their work, one after another, each task
/// create paced so that the planners together create tasks as fast as the workers try to claim
/// them (the `tasks` rate; each project's workflow adds the rest of its tasks). The workers of a
/// closed-loop run give the projects their work themselves, as fast as they can.
pub(super) async fn planner(shared: Arc<Shared>, n: usize) -> Recorder {
    let mut rec = Recorder::default();
    let Some(rates) = shared.scenario.rates else {
        return rec;
    };
    let mut client = shared.client();
    let per_project = shared.scenario.tasks_per_project as f64;
    let created = (shared.scenario.tasks_per_project - SDLC.len()) as f64;
    let mut pace = Pace::share(
        rates.tasks * created / per_project,
        shared.scenario.workers,
        n,
    );
    while !shared.is_done() && seed_next(&shared, &mut client, &mut rec, Some(&mut pace)).await {}
    rec
}

/// A worker: claims work of each sdlc agent type in turn, posts its artifact and completes it.
/// Open loop: its claim attempts are paced (its share of the `tasks` rate), each timed from when
/// it was due, and the planners give the projects their work. Closed loop: it gives a project its
/// work (while some have none) before it claims, and again after a project's worth of tasks or
/// when there is nothing to claim.
pub(super) async fn worker(shared: Arc<Shared>, n: usize) -> Recorder {
    let mut rec = Recorder::default();
    let mut client = shared.client();
    let workers = shared.scenario.workers;
    let mut pace = shared
        .scenario
        .rates
        .map(|r| Pace::share(r.tasks, workers, n));
    let expected = match shared.steady {
        true => u64::MAX,
        false => (shared.projects.len() * shared.scenario.tasks_per_project) as u64,
    };
    let mut turn = n;
    let mut idle = 0;
    let mut seeding = pace.is_none();
    let mut budget = 0;
    while !shared.is_done() {
        if seeding && budget == 0 {
            seeding = seed_next(&shared, &mut client, &mut rec, None).await;
            budget = shared.scenario.tasks_per_project;
        }
        let (agent, kind) = SDLC[turn % SDLC.len()];
        turn += 1;
        let claim =
            json!({"agent_type": agent, "worker_id": format!("bench-{n}"), "lease_seconds": 600});
        let due = match pace.as_mut() {
            Some(p) => Some(p.due().await),
            None => None,
        };
        let Some(answer) = rec
            .request_due(
                due,
                &mut client,
                Call {
                    class: Class::TaskOperation,
                    method: hyper::Method::POST,
                    path: "/api/v1/tasks/claim",
                    body: Some(&claim),
                    ok: &[200, 204],
                },
            )
            .await
        else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        if answer.status == 204 {
            idle += 1;
            if idle >= SDLC.len() && seeding {
                idle = 0;
                budget = 0;
            } else if idle >= SDLC.len() {
                // Nothing of any type: poll again shortly, as a real worker would (paced workers
                // wait for their next due time anyway).
                idle = 0;
                if pace.is_none() {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            continue;
        }
        idle = 0;
        budget = budget.saturating_sub(1);
        let task = answer.json().unwrap_or_default();
        let (Some(task_id), Some(project)) =
            (task["task_id"].as_str(), task["project_id"].as_str())
        else {
            rec.client[Recorder::index(Class::TaskOperation)].error();
            continue;
        };
        let artifact = json!({
            "project_id": project,
            "source_agent": agent,
            "artifact_type": kind,
            "content": {"task": task_id, "text": "benchmark output of the phase"},
        });
        rec.request(
            &mut client,
            Call {
                class: Class::ContextPut,
                method: hyper::Method::POST,
                path: "/api/v1/context/artifacts",
                body: Some(&artifact),
                ok: &[201],
            },
        )
        .await;
        let done = json!({
            "status": "completed",
            "output": {"by": agent},
            "lease_id": task["lease_id"],
        });
        if rec
            .request(
                &mut client,
                Call {
                    class: Class::TaskOperation,
                    method: hyper::Method::POST,
                    path: &format!("/api/v1/tasks/{task_id}/status"),
                    body: Some(&done),
                    ok: &[200],
                },
            )
            .await
            .is_some()
            && shared.completed.fetch_add(1, Ordering::AcqRel) + 1 == expected
        {
            shared.finish();
        }
    }
    rec
}

/// Approves every pending HITL gate. Open loop: its looks at the pending list are paced (the
/// `review` rate).
pub(super) async fn reviewer(shared: Arc<Shared>) -> Recorder {
    let mut rec = Recorder::default();
    let mut client = Client::new(shared.addr, shared.reviewer_token.clone());
    let mut pace = shared.scenario.rates.map(|r| Pace::share(r.review, 1, 0));
    while !shared.is_done() {
        let due = match pace.as_mut() {
            Some(p) => Some(p.due().await),
            None => None,
        };
        let pending = rec
            .request_due(
                due,
                &mut client,
                Call {
                    class: Class::Hitl,
                    method: hyper::Method::GET,
                    path: "/api/v1/hitl/pending",
                    body: None,
                    ok: &[200],
                },
            )
            .await
            .and_then(|a| a.json())
            .unwrap_or_default();
        let items = pending
            .as_array()
            .or_else(|| pending["items"].as_array())
            .cloned()
            .unwrap_or_default();
        if items.is_empty() && pace.is_none() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for item in items {
            if let Some(id) = item["request_id"].as_str().or(item["id"].as_str()) {
                rec.request(
                    &mut client,
                    Call {
                        class: Class::Hitl,
                        method: hyper::Method::POST,
                        path: &format!("/api/v1/hitl/{id}/respond"),
                        body: Some(&json!({"action": "approve", "comment": "benchmark reviewer"})),
                        ok: &[200],
                    },
                )
                .await;
            }
        }
    }
    rec
}

/// Status queries and context-store reads in a fixed mix until the phase ends. Open loop: paced
/// at its share of the `status` rate, each request timed from when it was due.
pub(super) async fn status_client(shared: Arc<Shared>, n: usize) -> Recorder {
    let mut rec = Recorder::default();
    let mut client = shared.client();
    let clients = shared.scenario.clients;
    let mut pace = shared
        .scenario
        .rates
        .map(|r| Pace::share(r.status, clients, n));
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (n as u64 + 1));
    let types = ARTIFACT_TYPES;
    let mut turn = n;
    while !shared.is_done() {
        let project = &shared.projects[rng.below(shared.projects.len())];
        let (class, path) = match turn % 6 {
            0 => (
                Class::StatusQuery,
                format!("/api/v1/projects/{project}/status"),
            ),
            1 => (Class::StatusQuery, "/api/v1/agents/status".to_string()),
            2 => (Class::StatusQuery, format!("/api/v1/projects/{project}")),
            3 => (Class::StatusQuery, "/health".to_string()),
            4 if !shared.artifact_ids.is_empty() => {
                let id = &shared.artifact_ids[rng.below(shared.artifact_ids.len())];
                (Class::ContextGet, format!("/api/v1/context/artifacts/{id}"))
            }
            _ => {
                let kind = types[rng.below(types.len())];
                (
                    Class::ContextList,
                    format!(
                        "/api/v1/context/project/{project}/artifacts?artifact_type={kind}&limit=100"
                    ),
                )
            }
        };
        turn += 1;
        let due = match pace.as_mut() {
            Some(p) => Some(p.due().await),
            None => None,
        };
        rec.request_due(
            due,
            &mut client,
            Call {
                class,
                method: hyper::Method::GET,
                path: &path,
                body: None,
                ok: &[200],
            },
        )
        .await;
    }
    rec
}

/// Status queries only, for `seconds`, from `clients` connections to `addr`: the samples seen by
/// the clients, those the server reported in `Server-Timing` (none from the bare server), and the
/// answers per second.
pub(super) async fn status_only(
    addr: SocketAddr,
    token: Option<String>,
    paths: Arc<Vec<String>>,
    clients: usize,
    seconds: u64,
) -> (Samples, Samples, f64) {
    let until = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|n| {
            let (paths, token) = (paths.clone(), token.clone());
            tokio::spawn(async move {
                let mut client = Client::new(addr, token);
                let mut rng = Rng(0xD1B5_4A32_D192_ED03 ^ (n as u64 + 1));
                let (mut seen, mut inside) = (Samples::default(), Samples::default());
                while Instant::now() < until {
                    let path = &paths[rng.below(paths.len())];
                    match client.get(path).await {
                        Ok(a) if a.status == 200 => {
                            seen.record(a.elapsed);
                            if let Some(micros) = a.server_micros {
                                inside.record_micros(micros);
                            }
                        }
                        _ => seen.error(),
                    }
                }
                (seen, inside)
            })
        })
        .collect();
    let (mut all, mut server) = (Samples::default(), Samples::default());
    for h in handles {
        if let Ok((seen, inside)) = h.await {
            all.merge(seen);
            server.merge(inside);
        }
    }
    let rate = all.len() as f64 / started.elapsed().as_secs_f64();
    (all, server, rate)
}

/// Runs `jobs` concurrent clients `make(0..jobs)` and merges their recorders.
pub(super) async fn fan_out<F, Fut>(jobs: usize, make: F) -> Recorder
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Recorder> + Send + 'static,
{
    let handles: Vec<_> = (0..jobs).map(|j| tokio::spawn(make(j))).collect();
    let mut rec = Recorder::default();
    for h in handles {
        if let Ok(r) = h.await {
            rec.merge(r);
        }
    }
    rec
}

/// Creates the projects; returns their ids.
pub(super) async fn create_projects(
    addr: SocketAddr,
    token: &Option<String>,
    count: usize,
    clients: usize,
) -> Result<Vec<String>, String> {
    let next = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..clients.max(1))
        .map(|_| {
            let (next, token) = (next.clone(), token.clone());
            tokio::spawn(async move {
                let mut client = Client::new(addr, token);
                let mut ids = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        return Ok(ids);
                    }
                    let body = json!({"name": format!("bench project {i}"), "description": "flightdeck bench"});
                    let answer = client
                        .post("/api/v1/projects", &body)
                        .await
                        .map_err(|e| e.to_string())?;
                    match answer.json() {
                        Some(p) if answer.status == 201 => {
                            ids.push(p["id"].as_str().unwrap_or_default().to_string())
                        }
                        _ => {
                            return Err(format!(
                                "creating a project answered {}: {}",
                                answer.status,
                                String::from_utf8_lossy(&answer.body)
                            ));
                        }
                    }
                }
            })
        })
        .collect();
    let mut ids = Vec::with_capacity(count);
    for h in handles {
        ids.extend(h.await.map_err(|e| e.to_string())??);
    }
    ids.sort();
    Ok(ids)
}

/// Preloads `count` artifacts spread over the projects and artifact types; returns a sample of
/// their ids (at most 10,000) for the context-store gets.
pub(super) async fn preload(
    addr: SocketAddr,
    token: &Option<String>,
    projects: &[String],
    count: usize,
) -> Result<Vec<String>, String> {
    let next = Arc::new(AtomicUsize::new(0));
    let projects = Arc::new(projects.to_vec());
    let keep_every = (count / 10_000).max(1);
    let text = "x".repeat(200);
    let handles: Vec<_> = (0..64)
        .map(|_| {
            let (next, token, projects, text) =
                (next.clone(), token.clone(), projects.clone(), text.clone());
            tokio::spawn(async move {
                let mut client = Client::new(addr, token);
                let mut kept = Vec::new();
                let types = ARTIFACT_TYPES;
                let agents = AGENT_TYPES;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        return Ok(kept);
                    }
                    let body = json!({
                        "project_id": projects[i % projects.len()],
                        "source_agent": agents[i % agents.len()],
                        "artifact_type": types[(i / projects.len()) % types.len()],
                        "content": {"n": i, "text": text},
                    });
                    let answer = client
                        .post("/api/v1/context/artifacts", &body)
                        .await
                        .map_err(|e| e.to_string())?;
                    if answer.status != 201 {
                        return Err(format!("preloading answered {}", answer.status));
                    }
                    if i % keep_every == 0 {
                        let id = answer
                            .json()
                            .and_then(|a| a["context_id"].as_str().map(String::from));
                        kept.extend(id);
                    }
                }
            })
        })
        .collect();
    let mut ids = Vec::new();
    for h in handles {
        ids.extend(h.await.map_err(|e| e.to_string())??);
    }
    Ok(ids)
}

/// The server's latest event seq, from the monitoring API.
pub(super) async fn latest_seq(client: &mut Client) -> Result<u64, String> {
    let answer = client
        .get("/api/v1/monitoring/metrics")
        .await
        .map_err(|e| e.to_string())?;
    answer
        .json()
        .and_then(|v| v["store"]["latest_seq"].as_u64())
        .ok_or_else(|| format!("monitoring metrics answered {}", answer.status))
}
