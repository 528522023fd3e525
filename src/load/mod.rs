//! `flightdeck bench`: the load benchmark of the original requirement, run as a client of the
//! real HTTP and WebSocket API.
//!
//! One run, in order:
//! 1. start a server on a temporary directory (the same executable, `serve`) or use `--url`;
//! 2. create the projects; preload the context store with artifacts; restart the server to time
//!    start-up with them (own server only);
//! 3. connect the WebSocket clients, one project each, from the current seq (in a child process
//!    for the large scenario);
//! 4. the workflow phase: workers give each project its tasks and start its `sdlc` workflow, and
//!    claim, post an artifact and complete, a reviewer approves every gate, status
//!    clients query status, agents, projects, health and the context store, all at once, until
//!    every task is completed (or the bound);
//! 5. the WebSocket clients check they hold every event of their project's log exactly once and
//!    in order;
//! 6. the quiet phase: status queries alone, against flightdeck and against a bare hyper server
//!    answering the same JSON, alternating, same clients;
//! 7. stop the server, run `flightdeck check` on its directory, report.

pub mod http;
pub mod stats;
pub mod ws;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;

use crate::domain::Vocabulary;
use clap::Args;
use http::{Answer, Client};
use stats::{Samples, Summary};
use ws::{WsPlan, WsReport};

#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ScenarioName {
    Tiny,
    Seed,
    X100,
}

const WS_DELIVERY_MS: f64 = crate::monitor::service_levels::WS_DELIVERY * 1e3;
const ORIGINAL_WS_DELIVERY_MS: f64 = crate::monitor::service_levels::original::WS_DELIVERY * 1e3;

/// The size of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    pub name: ScenarioName,
    pub projects: usize,
    /// Tasks per project, the workflow's five phases included.
    pub tasks_per_project: usize,
    /// Concurrent status-query clients.
    pub clients: usize,
    /// Concurrent worker clients, which also give the projects their work (plus one reviewer).
    pub workers: usize,
    pub ws_connections: usize,
    pub ws_in_child: bool,
    pub artifacts: usize,
    /// Length of each of the four rounds of the quiet phase.
    pub quiet_seconds: u64,
    /// Bound of the workflow phase.
    pub max_seconds: u64,
    /// p99 target of WebSocket delivery at this size (service level).
    pub ws_target_ms: f64,
}

impl Scenario {
    pub fn of(name: ScenarioName) -> Scenario {
        match name {
            ScenarioName::Tiny => Scenario {
                name,
                projects: 2,
                tasks_per_project: 10,
                clients: 2,
                workers: 2,
                ws_connections: 4,
                ws_in_child: true,
                artifacts: 40,
                quiet_seconds: 1,
                max_seconds: 60,
                ws_target_ms: WS_DELIVERY_MS,
            },
            ScenarioName::Seed => Scenario {
                name,
                projects: 10,
                tasks_per_project: 50,
                clients: 10,
                workers: 10,
                ws_connections: 100,
                ws_in_child: false,
                artifacts: 10_000,
                quiet_seconds: 3,
                max_seconds: 120,
                ws_target_ms: WS_DELIVERY_MS,
            },
            ScenarioName::X100 => Scenario {
                name,
                projects: 1000,
                tasks_per_project: 50,
                clients: 100,
                workers: 100,
                ws_connections: 10_000,
                ws_in_child: true,
                artifacts: 1_000_000,
                quiet_seconds: 5,
                max_seconds: 600,
                ws_target_ms: crate::monitor::service_levels::WS_DELIVERY_10K * 1e3,
            },
        }
    }
}

/// The operation classes of the report.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Class {
    StatusQuery,
    TaskOperation,
    ContextPut,
    ContextGet,
    ContextList,
    Hitl,
}

impl Class {
    const ALL: [Class; 6] = [
        Class::StatusQuery,
        Class::TaskOperation,
        Class::ContextPut,
        Class::ContextGet,
        Class::ContextList,
        Class::Hitl,
    ];

    fn name(self) -> &'static str {
        match self {
            Class::StatusQuery => "status query",
            Class::TaskOperation => "task operation",
            Class::ContextPut => "context-store put",
            Class::ContextGet => "context-store get",
            Class::ContextList => "context-store list",
            Class::Hitl => "HITL (list, approve)",
        }
    }

    /// The p99 target of `docs/service-levels.md` for the time inside the server, and the original
    /// requirement's for the time the client sees, in ms.
    fn targets(self) -> (Option<f64>, Option<f64>) {
        use crate::monitor::service_levels::{self as sl, original};
        let (design, original) = match self {
            Class::StatusQuery => (sl::STATUS_QUERY, original::STATUS_QUERY),
            Class::TaskOperation => (sl::TASK_OPERATION, original::TASK_OPERATION),
            Class::ContextGet => (sl::CONTEXT_GET, original::CONTEXT_RETRIEVAL),
            Class::ContextList => (sl::CONTEXT_LIST, original::CONTEXT_RETRIEVAL),
            Class::ContextPut | Class::Hitl => return (None, None),
        };
        (Some(design * 1e3), Some(original * 1e3))
    }
}

/// Per class, what the clients saw and what the server reported in `Server-Timing`.
#[derive(Default)]
pub struct Recorder {
    client: [Samples; 6],
    server: [Samples; 6],
}

impl Recorder {
    fn index(class: Class) -> usize {
        Class::ALL.iter().position(|c| *c == class).expect("listed")
    }

    pub fn merge(&mut self, other: Recorder) {
        for (mine, theirs) in self.client.iter_mut().zip(other.client) {
            mine.merge(theirs);
        }
        for (mine, theirs) in self.server.iter_mut().zip(other.server) {
            mine.merge(theirs);
        }
    }

    pub fn errors(&self, class: Class) -> u64 {
        self.client[Self::index(class)].clone().summary().errors
    }

    /// Sends one request and records it under `class`: an answer with a status outside `ok`, or
    /// no answer, is an error.
    pub async fn request(
        &mut self,
        client: &mut Client,
        class: Class,
        method: hyper::Method,
        path: &str,
        body: Option<&Value>,
        ok: &[u16],
    ) -> Option<Answer> {
        let i = Self::index(class);
        let body = body.map(|b| serde_json::to_vec(b).expect("a JSON value serialises"));
        match client.send(method, path, body).await {
            Ok(answer) if ok.contains(&answer.status) => {
                self.client[i].record(answer.elapsed);
                if let Some(micros) = answer.server_micros {
                    self.server[i].record_micros(micros);
                }
                Some(answer)
            }
            Ok(answer) => {
                tracing::warn!(
                    %path,
                    status = answer.status,
                    body = %String::from_utf8_lossy(&answer.body),
                    "unexpected answer"
                );
                self.client[i].error();
                None
            }
            Err(e) => {
                tracing::warn!(%path, error = %e, "request failed");
                self.client[i].error();
                None
            }
        }
    }
}

/// One row of the report.
#[derive(Serialize, Debug, Clone)]
pub struct ClassRow {
    pub class: &'static str,
    pub client: Summary,
    pub server: Summary,
}

/// A service level and whether this run met it.
#[derive(Serialize, Debug, Clone)]
pub struct Verdict {
    pub what: String,
    pub target: String,
    pub measured: String,
    pub met: bool,
}

#[derive(Serialize, Debug, Clone, Default)]
pub struct QuietPhase {
    pub flightdeck: Summary,
    /// The same queries as flightdeck timed them (`Server-Timing`).
    pub flightdeck_server: Summary,
    pub flightdeck_per_second: f64,
    pub bare: Summary,
    pub bare_per_second: f64,
    pub p99_ratio: f64,
    pub throughput_ratio: f64,
}

#[derive(Serialize, Debug, Clone, Default)]
pub struct ServerFigures {
    /// VmHWM of the server started by the driver; for `--url`, the largest of the resident sizes
    /// its `/metrics` reported after the preload, after the workflow phase and at the end.
    pub peak_rss_bytes: Option<u64>,
    pub cpu_seconds: Option<f64>,
    /// CPU time of the driver process (HTTP clients, and WebSocket clients unless in a child).
    pub driver_cpu_seconds: Option<f64>,
    /// CPU time of the server and of the driver during the workflow phase alone.
    pub phase_cpu_seconds: Option<f64>,
    pub phase_driver_cpu_seconds: Option<f64>,
    pub startup_ms: Option<f64>,
    /// `flightdeck check` on the data directory after the run (own server only).
    pub consistent: Option<bool>,
}

#[derive(Serialize, Debug, Clone)]
pub struct Report {
    pub scenario: Scenario,
    pub machine: String,
    pub target: String,
    pub preload_seconds: f64,
    pub workflow_seconds: f64,
    pub tasks_expected: u64,
    pub tasks_completed: u64,
    pub workflows_completed: u64,
    pub http_requests_per_second: f64,
    pub classes: Vec<ClassRow>,
    pub websocket: WsReport,
    pub quiet: QuietPhase,
    pub server: ServerFigures,
    pub verdicts: Vec<Verdict>,
    /// No errors, no event lost, duplicated or reordered, every task done, check consistent.
    pub clean: bool,
}

/// The server the run loads: its address, and the process when the driver started it.
struct Target {
    addr: SocketAddr,
    process: Option<OwnServer>,
}

struct OwnServer {
    child: tokio::process::Child,
    dir: tempfile::TempDir,
    exe: PathBuf,
}

fn server_args(dir: &Path) -> Vec<String> {
    [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--max-connections",
        "25000",
        "--max-ws-connections",
        "20000",
        "--data-dir",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([dir.display().to_string()])
    .collect()
}

/// Starts `exe` with `args` and reads its `listening on ADDR` line.
async fn spawn_listening(
    exe: &Path,
    args: &[String],
) -> Result<(tokio::process::Child, SocketAddr), String> {
    let mut child = tokio::process::Command::new(exe)
        .args(args)
        .env("FLIGHTDECK_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("piped")).lines();
    let line = lines
        .next_line()
        .await
        .map_err(|e| e.to_string())?
        .unwrap_or_default();
    let addr = line
        .strip_prefix("listening on ")
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| format!("{} said {line:?}", exe.display()))?;
    Ok((child, addr))
}

async fn stop_child(child: &mut tokio::process::Child) {
    if let Some(pid) = child.id() {
        let _ = tokio::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await;
    }
    if tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}

/// Peak resident memory (VmHWM) and CPU seconds of a local process, from /proc.
pub(crate) fn process_figures(pid: u32) -> (Option<u64>, Option<f64>) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib * 1024);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let cpu = stat.rsplit_once(')').and_then(|(_, rest)| {
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
        Some(ticks / 100.0)
    });
    (hwm, cpu)
}

/// Resident memory and CPU seconds of a remote server, from its `/metrics`.
async fn remote_figures(client: &mut Client) -> (Option<u64>, Option<f64>) {
    let Ok(answer) = client.get("/metrics").await else {
        return (None, None);
    };
    let text = String::from_utf8_lossy(&answer.body);
    let value = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    (
        value("flightdeck_process_resident_memory_bytes").map(|b| b as u64),
        value("flightdeck_process_cpu_seconds_total"),
    )
}

fn parse_url(url: &str) -> Result<SocketAddr, String> {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let host = rest.split('/').next().unwrap_or_default();
    std::net::ToSocketAddrs::to_socket_addrs(host)
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| format!("`{url}` is not http://HOST:PORT"))
}

/// A tiny deterministic generator for picking projects and ids.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n.max(1) as u64) as usize
    }
}

const SDLC: [(&str, &str); 5] = [
    ("analyst", "software_specification"),
    ("architect", "system_architecture"),
    ("coder", "source_code"),
    ("tester", "test_results"),
    ("deployer", "deployment_package"),
];

/// Everything the concurrent clients of the workflow phase share.
struct Shared {
    addr: SocketAddr,
    token: Option<String>,
    projects: Vec<String>,
    artifact_ids: Vec<String>,
    scenario: Scenario,
    next_project: AtomicUsize,
    completed: AtomicU64,
    done: AtomicBool,
    done_signal: tokio::sync::Notify,
}

impl Shared {
    fn client(&self) -> Client {
        Client::new(self.addr, self.token.clone())
    }

    fn finish(&self) {
        self.done.store(true, Ordering::Release);
        self.done_signal.notify_waiters();
    }

    fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }
}

/// Gives the next project without work its tasks and starts its workflow; false when every
/// project has been given its work.
async fn seed_next(shared: &Shared, client: &mut Client, rec: &mut Recorder) -> bool {
    let extra = shared.scenario.tasks_per_project - SDLC.len();
    let i = shared.next_project.fetch_add(1, Ordering::Relaxed);
    let Some(project) = shared.projects.get(i) else {
        return false;
    };
    {
        for t in 0..extra {
            let body = json!({
                "agent_type": SDLC[t % SDLC.len()].0,
                "instructions": format!("benchmark task {t}"),
            });
            rec.request(
                client,
                Class::TaskOperation,
                hyper::Method::POST,
                &format!("/api/v1/projects/{project}/tasks"),
                Some(&body),
                &[201],
            )
            .await;
        }
        let body = json!({"workflow": "sdlc", "context": {"goal": "benchmark"}});
        rec.request(
            client,
            Class::TaskOperation,
            hyper::Method::POST,
            &format!("/api/v1/projects/{project}/workflow"),
            Some(&body),
            &[201],
        )
        .await;
    }
    true
}

/// A worker: gives a project its work (while some have none), then claims work of each sdlc agent
/// type in turn, posts its artifact and completes it; after a project's worth of tasks, or when
/// there is nothing to claim, it gives the next project its work.
async fn worker(shared: Arc<Shared>, n: usize) -> Recorder {
    let mut rec = Recorder::default();
    let mut client = shared.client();
    let expected = (shared.projects.len() * shared.scenario.tasks_per_project) as u64;
    let mut turn = n;
    let mut idle = 0;
    let mut seeding = true;
    let mut budget = 0;
    while !shared.is_done() {
        if seeding && budget == 0 {
            seeding = seed_next(&shared, &mut client, &mut rec).await;
            budget = shared.scenario.tasks_per_project;
        }
        let (agent, kind) = SDLC[turn % SDLC.len()];
        turn += 1;
        let claim =
            json!({"agent_type": agent, "worker_id": format!("bench-{n}"), "lease_seconds": 600});
        let Some(answer) = rec
            .request(
                &mut client,
                Class::TaskOperation,
                hyper::Method::POST,
                "/api/v1/tasks/claim",
                Some(&claim),
                &[200, 204],
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
                // Nothing of any type: poll again shortly, as a real worker would.
                idle = 0;
                tokio::time::sleep(Duration::from_millis(5)).await;
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
            Class::ContextPut,
            hyper::Method::POST,
            "/api/v1/context/artifacts",
            Some(&artifact),
            &[201],
        )
        .await;
        let done = json!({"status": "completed", "output": {"by": agent}});
        if rec
            .request(
                &mut client,
                Class::TaskOperation,
                hyper::Method::POST,
                &format!("/api/v1/tasks/{task_id}/status"),
                Some(&done),
                &[200],
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

/// Approves every pending HITL gate.
async fn reviewer(shared: Arc<Shared>) -> Recorder {
    let mut rec = Recorder::default();
    let mut client = shared.client();
    while !shared.is_done() {
        let pending = rec
            .request(
                &mut client,
                Class::Hitl,
                hyper::Method::GET,
                "/api/v1/hitl/pending",
                None,
                &[200],
            )
            .await
            .and_then(|a| a.json())
            .unwrap_or_default();
        let items = pending
            .as_array()
            .or_else(|| pending["items"].as_array())
            .cloned()
            .unwrap_or_default();
        if items.is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for item in items {
            if let Some(id) = item["request_id"].as_str().or(item["id"].as_str()) {
                rec.request(
                    &mut client,
                    Class::Hitl,
                    hyper::Method::POST,
                    &format!("/api/v1/hitl/{id}/respond"),
                    Some(&json!({"action": "approve", "comment": "benchmark reviewer"})),
                    &[200],
                )
                .await;
            }
        }
    }
    rec
}

/// Status queries and context-store reads in a fixed mix until the phase ends.
async fn status_client(shared: Arc<Shared>, n: usize) -> Recorder {
    let mut rec = Recorder::default();
    let mut client = shared.client();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (n as u64 + 1));
    let types = crate::domain::ArtifactType::ALL;
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
                let kind = types[rng.below(types.len())].as_str();
                (
                    Class::ContextList,
                    format!(
                        "/api/v1/context/project/{project}/artifacts?artifact_type={kind}&limit=100"
                    ),
                )
            }
        };
        turn += 1;
        rec.request(&mut client, class, hyper::Method::GET, &path, None, &[200])
            .await;
    }
    rec
}

/// Status queries only, for `seconds`, from `clients` connections to `addr`: the samples seen by
/// the clients, those the server reported in `Server-Timing` (none from the bare server), and the
/// answers per second.
async fn status_only(
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
async fn fan_out<F, Fut>(jobs: usize, make: F) -> Recorder
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
async fn create_projects(
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
async fn preload(
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
                let types = crate::domain::ArtifactType::ALL;
                let agents = crate::domain::AgentType::ALL;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        return Ok(kept);
                    }
                    let body = json!({
                        "project_id": projects[i % projects.len()],
                        "source_agent": agents[i % agents.len()].as_str(),
                        "artifact_type": types[(i / projects.len()) % types.len()].as_str(),
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
async fn latest_seq(client: &mut Client) -> Result<u64, String> {
    let answer = client
        .get("/api/v1/monitoring/metrics")
        .await
        .map_err(|e| e.to_string())?;
    answer
        .json()
        .and_then(|v| v["store"]["latest_seq"].as_u64())
        .ok_or_else(|| format!("monitoring metrics answered {}", answer.status))
}

/// `flightdeck bench`'s command line.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// seed: 10 projects x 50 tasks, 10 clients, 100 WebSocket connections; x100: 1,000 projects,
    /// 100 clients, 10,000 connections, 1,000,000 artifacts; tiny: a smoke run of a few seconds
    #[arg(long, value_enum, default_value = "seed")]
    pub scenario: ScenarioName,
    /// Load a running server (`http://127.0.0.1:8080`) instead of starting a release server on a
    /// temporary directory
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// API key (read-write) for a server that requires one
    #[arg(
        long,
        env = "FLIGHTDECK_BENCH_API_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub api_key: Option<String>,
    /// Where to write the JSON report [default: flightdeck-bench-SCENARIO.json]
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Override the scenario's artifacts preloaded for the context-store rows
    #[arg(long, value_name = "N")]
    pub artifacts: Option<usize>,
    /// Override the scenario's WebSocket connections
    #[arg(long, value_name = "N")]
    pub ws_connections: Option<usize>,
    /// Override the bound on the workflow phase, in seconds
    #[arg(long, value_name = "SECS")]
    pub max_seconds: Option<u64>,
}

/// Runs the benchmark described by `args`; the report, or why it could not run.
pub async fn run(args: &BenchArgs) -> Result<Report, String> {
    let mut scenario = Scenario::of(args.scenario);
    if let Some(n) = args.artifacts {
        scenario.artifacts = n;
    }
    if let Some(n) = args.ws_connections {
        scenario.ws_connections = n;
    }
    if let Some(s) = args.max_seconds {
        scenario.max_seconds = s;
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let token = args.api_key.clone();
    let mut target = match &args.url {
        Some(url) => Target {
            addr: parse_url(url)?,
            process: None,
        },
        None => {
            let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
            let (child, addr) = spawn_listening(&exe, &server_args(dir.path())).await?;
            Target {
                addr,
                process: Some(OwnServer {
                    child,
                    dir,
                    exe: exe.clone(),
                }),
            }
        }
    };
    let target_name = match &target.process {
        Some(_) => format!(
            "flightdeck {} started by the driver",
            env!("CARGO_PKG_VERSION")
        ),
        None => args.url.clone().unwrap_or_default(),
    };
    eprintln!(
        "bench {:?}: server at {}; creating {} projects",
        scenario.name, target.addr, scenario.projects
    );
    let projects =
        create_projects(target.addr, &token, scenario.projects, scenario.clients).await?;

    let preload_started = Instant::now();
    eprintln!("preloading {} artifacts", scenario.artifacts);
    let artifact_ids = preload(target.addr, &token, &projects, scenario.artifacts).await?;
    let preload_seconds = preload_started.elapsed().as_secs_f64();
    let mut server = ServerFigures::default();
    if let Some(own) = &mut target.process {
        // Start-up with everything preloaded: stop, start again on the same directory.
        stop_child(&mut own.child).await;
        let started = Instant::now();
        let (child, addr) = spawn_listening(&own.exe, &server_args(own.dir.path())).await?;
        server.startup_ms = Some(started.elapsed().as_secs_f64() * 1e3);
        own.child = child;
        target.addr = addr;
    }
    let addr = target.addr;
    let mut client = Client::new(addr, token.clone());
    if target.process.is_none() {
        server.peak_rss_bytes = remote_figures(&mut client).await.0;
    }
    let since = latest_seq(&mut client).await?;

    // The WebSocket clients run until told to stop, then check their streams.
    eprintln!("connecting {} WebSocket clients", scenario.ws_connections);
    let plan = WsPlan {
        addr,
        token: token.clone(),
        projects: projects.clone(),
        connections: scenario.ws_connections,
        since,
    };
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<usize>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let ws_task: tokio::task::JoinHandle<Result<WsReport, String>> = if scenario.ws_in_child {
        let exe = exe.clone();
        tokio::spawn(async move {
            ws::run_in_child(
                &exe,
                plan,
                |n| {
                    let _ = ready_tx.send(n);
                },
                async {
                    let _ = stop_rx.await;
                },
            )
            .await
        })
    } else {
        tokio::spawn(async move {
            Ok(ws::run(
                plan,
                |n| {
                    let _ = ready_tx.send(n);
                },
                async {
                    let _ = stop_rx.await;
                },
                Duration::from_secs(60),
            )
            .await)
        })
    };
    let connected = ready_rx
        .await
        .map_err(|_| "the WebSocket clients ended before connecting".to_string())?;
    eprintln!(
        "{connected} WebSocket clients subscribed; workflow phase (at most {} s)",
        scenario.max_seconds
    );

    let shared = Arc::new(Shared {
        addr,
        token: token.clone(),
        projects: projects.clone(),
        artifact_ids,
        scenario: scenario.clone(),
        next_project: AtomicUsize::new(0),
        completed: AtomicU64::new(0),
        done: AtomicBool::new(false),
        done_signal: tokio::sync::Notify::new(),
    });
    let server_pid = target.process.as_ref().and_then(|own| own.child.id());
    let cpu_now = move || {
        (
            server_pid.and_then(|pid| process_figures(pid).1),
            process_figures(std::process::id()).1,
        )
    };
    let cpu_before = cpu_now();
    let phase_started = Instant::now();
    let bound = {
        let shared = shared.clone();
        tokio::spawn(async move {
            let notified = shared.done_signal.notified();
            if !shared.is_done() {
                let _ = tokio::time::timeout(
                    Duration::from_secs(shared.scenario.max_seconds),
                    notified,
                )
                .await;
            }
            shared.finish();
        })
    };
    let workers = {
        let shared = shared.clone();
        tokio::spawn(fan_out(scenario.workers, move |n| {
            worker(shared.clone(), n)
        }))
    };
    let readers = {
        let shared = shared.clone();
        tokio::spawn(fan_out(scenario.clients, move |n| {
            status_client(shared.clone(), n)
        }))
    };
    let review = tokio::spawn(reviewer(shared.clone()));
    let mut rec = Recorder::default();
    for part in [workers, readers, review] {
        rec.merge(part.await.map_err(|e| e.to_string())?);
    }
    let _ = bound.await;
    let workflow_seconds = phase_started.elapsed().as_secs_f64();
    let cpu_after = cpu_now();
    if target.process.is_none() {
        server.peak_rss_bytes = remote_figures(&mut client)
            .await
            .0
            .max(server.peak_rss_bytes);
    }
    let used = |a: Option<f64>, b: Option<f64>| Some(b? - a?);
    server.phase_cpu_seconds = used(cpu_before.0, cpu_after.0);
    server.phase_driver_cpu_seconds = used(cpu_before.1, cpu_after.1);
    let tasks_completed = shared.completed.load(Ordering::Acquire);
    let mut workflows_completed = 0;
    for p in &projects {
        if let Ok(a) = client.get(&format!("/api/v1/projects/{p}/workflow")).await
            && a.json().is_some_and(|w| w["status"] == "completed")
        {
            workflows_completed += 1;
        }
    }
    let requests: usize = rec.client.iter().map(Samples::len).sum();
    eprintln!(
        "workflow phase: {tasks_completed} tasks in {workflow_seconds:.1} s; checking the WebSocket streams"
    );
    let _ = stop_tx.send(());
    let websocket = ws_task.await.map_err(|e| e.to_string())??;

    // The quiet phase: the same status JSON from flightdeck and from a bare hyper server.
    eprintln!("quiet phase: status queries against flightdeck and a bare hyper server");
    let paths: Arc<Vec<String>> = Arc::new(
        projects
            .iter()
            .map(|p| format!("/api/v1/projects/{p}/status"))
            .collect(),
    );
    let body = client.get(&paths[0]).await.map_err(|e| e.to_string())?.body;
    let body_file = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
    std::fs::write(body_file.path(), &body).map_err(|e| e.to_string())?;
    let (mut bare, bare_addr) = spawn_listening(
        &exe,
        &[
            "bench-bare".into(),
            "--body-file".into(),
            body_file.path().display().to_string(),
        ],
    )
    .await?;
    let (mut ours, mut ours_inside, mut base) =
        (Samples::default(), Samples::default(), Samples::default());
    let (mut ours_rate, mut base_rate) = (0.0, 0.0);
    for round in 0..4 {
        // ABBA: flightdeck, bare, bare, flightdeck.
        if round == 0 || round == 3 {
            let (s, inside, r) = status_only(
                addr,
                token.clone(),
                paths.clone(),
                scenario.clients,
                scenario.quiet_seconds,
            )
            .await;
            ours.merge(s);
            ours_inside.merge(inside);
            ours_rate += r / 2.0;
        } else {
            let (s, _, r) = status_only(
                bare_addr,
                None,
                paths.clone(),
                scenario.clients,
                scenario.quiet_seconds,
            )
            .await;
            base.merge(s);
            base_rate += r / 2.0;
        }
    }
    stop_child(&mut bare).await;
    let (ours, base) = (ours.summary(), base.summary());
    let quiet = QuietPhase {
        flightdeck: ours,
        flightdeck_server: ours_inside.summary(),
        flightdeck_per_second: ours_rate,
        bare: base,
        bare_per_second: base_rate,
        p99_ratio: ours.p99_ms / base.p99_ms.max(1e-6),
        throughput_ratio: ours_rate / base_rate.max(1e-6),
    };

    server.driver_cpu_seconds = process_figures(std::process::id()).1;
    match &mut target.process {
        Some(own) => {
            let pid = own.child.id().unwrap_or_default();
            let (rss, cpu) = process_figures(pid);
            server.peak_rss_bytes = rss;
            server.cpu_seconds = cpu;
            stop_child(&mut own.child).await;
            let check = tokio::process::Command::new(&own.exe)
                .args(["check", "--data-dir"])
                .arg(own.dir.path())
                .stdout(Stdio::null())
                .status()
                .await
                .map_err(|e| e.to_string())?;
            server.consistent = Some(check.success());
        }
        None => {
            let (rss, cpu) = remote_figures(&mut client).await;
            server.peak_rss_bytes = rss.max(server.peak_rss_bytes);
            server.cpu_seconds = cpu;
        }
    }

    let classes: Vec<ClassRow> = Class::ALL
        .iter()
        .enumerate()
        .map(|(i, class)| ClassRow {
            class: class.name(),
            client: rec.client[i].clone().summary(),
            server: rec.server[i].clone().summary(),
        })
        .collect();
    let tasks_expected = (scenario.projects * scenario.tasks_per_project) as u64;
    let verdicts = verdicts(&scenario, &classes, &websocket, &quiet, &server);
    let errors: u64 = classes.iter().map(|c| c.client.errors).sum::<u64>()
        + websocket.errors
        + quiet.flightdeck.errors
        + quiet.bare.errors;
    let clean = errors == 0
        && websocket.verdict.is_exact()
        && websocket.incomplete == 0
        && websocket.connected == websocket.connections
        && tasks_completed == tasks_expected
        && workflows_completed == projects.len() as u64
        && server.consistent != Some(false);
    Ok(Report {
        machine: machine(),
        target: target_name,
        preload_seconds,
        workflow_seconds,
        tasks_expected,
        tasks_completed,
        workflows_completed,
        http_requests_per_second: requests as f64 / workflow_seconds.max(1e-6),
        classes,
        websocket,
        quiet,
        server,
        verdicts,
        clean,
        scenario,
    })
}

fn verdicts(
    scenario: &Scenario,
    classes: &[ClassRow],
    websocket: &WsReport,
    quiet: &QuietPhase,
    server: &ServerFigures,
) -> Vec<Verdict> {
    let mut out = Vec::new();
    let ms = |v: f64| format!("{v:.3} ms");
    for (class, row) in Class::ALL.iter().zip(classes) {
        let (design, original) = class.targets();
        if let Some(t) = design {
            out.push(Verdict {
                what: format!(
                    "{} p99, inside the server, workflow phase (service level)",
                    row.class
                ),
                target: format!("< {t} ms"),
                measured: ms(row.server.p99_ms),
                met: row.server.count > 0 && row.server.p99_ms < t,
            });
        }
        if let Some(t) = original {
            out.push(Verdict {
                what: format!(
                    "{} p99, seen by the client (original requirement)",
                    row.class
                ),
                target: format!("< {t} ms"),
                measured: ms(row.client.p99_ms),
                met: row.client.count > 0 && row.client.p99_ms < t,
            });
        }
    }
    out.push(Verdict {
        what: format!(
            "status query p99 seen by the client, quiet, {} clients, vs bare hyper (service level)",
            scenario.clients
        ),
        target: "within 1.5x".into(),
        measured: format!(
            "{:.2}x ({} vs {})",
            quiet.p99_ratio,
            ms(quiet.flightdeck.p99_ms),
            ms(quiet.bare.p99_ms)
        ),
        met: quiet.p99_ratio <= 1.5,
    });
    out.push(Verdict {
        what: format!(
            "status query p99 inside the server, quiet, {} clients (service level)",
            scenario.clients
        ),
        target: "< 0.5 ms".into(),
        measured: ms(quiet.flightdeck_server.p99_ms),
        met: quiet.flightdeck_server.count > 0 && quiet.flightdeck_server.p99_ms < 0.5,
    });
    out.push(Verdict {
        what: "status query throughput vs bare hyper (service level)".into(),
        target: "at least 0.5x".into(),
        measured: format!(
            "{:.2}x ({:.0}/s vs {:.0}/s)",
            quiet.throughput_ratio, quiet.flightdeck_per_second, quiet.bare_per_second
        ),
        met: quiet.throughput_ratio >= 0.5,
    });
    out.push(Verdict {
        what: format!(
            "WebSocket delivery p99, {} connections (service level)",
            websocket.connections
        ),
        target: format!("< {} ms", scenario.ws_target_ms),
        measured: ms(websocket.delivery.p99_ms),
        met: websocket.delivery.count > 0 && websocket.delivery.p99_ms < scenario.ws_target_ms,
    });
    out.push(Verdict {
        what: "WebSocket delivery p99 (original requirement)".into(),
        target: format!("< {ORIGINAL_WS_DELIVERY_MS} ms"),
        measured: ms(websocket.delivery.p99_ms),
        met: websocket.delivery.count > 0 && websocket.delivery.p99_ms < ORIGINAL_WS_DELIVERY_MS,
    });
    out.push(Verdict {
        what: "every event delivered exactly once, in order".into(),
        target: "0 missing, duplicated, reordered".into(),
        measured: format!(
            "{} of {} delivered; {} missing, {} duplicated, {} reordered, {} unexpected",
            websocket.verdict.delivered,
            websocket.verdict.expected,
            websocket.verdict.missing,
            websocket.verdict.duplicated,
            websocket.verdict.reordered,
            websocket.verdict.unexpected
        ),
        met: websocket.verdict.is_exact() && websocket.incomplete == 0,
    });
    if let Some(startup) = server.startup_ms {
        out.push(Verdict {
            what: format!(
                "start-up with {} artifacts (service level)",
                scenario.artifacts
            ),
            target: "< 1000 ms".into(),
            measured: ms(startup),
            met: startup < 1000.0,
        });
    }
    out
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(String::new(), |kib| {
            format!(", {:.0} GiB", kib as f64 / 1048576.0)
        });
    format!("{cores} cores ({model}){memory}, {}", std::env::consts::OS)
}

/// The report as Markdown tables.
pub fn render(report: &Report) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let s = &report.scenario;
    let _ = writeln!(
        out,
        "scenario {:?}: {} projects x {} tasks, {} status clients, {} workers + 1 reviewer, {} WebSocket connections, {} artifacts preloaded",
        s.name,
        s.projects,
        s.tasks_per_project,
        s.clients,
        s.workers,
        s.ws_connections,
        s.artifacts
    );
    let _ = writeln!(
        out,
        "machine: {}; server: {}",
        report.machine, report.target
    );
    let _ = writeln!(
        out,
        "workflow phase: {} of {} tasks completed, {} of {} workflows, in {:.1} s; {:.0} HTTP requests/s; preload {:.1} s\n",
        report.tasks_completed,
        report.tasks_expected,
        report.workflows_completed,
        s.projects,
        report.workflow_seconds,
        report.http_requests_per_second,
        report.preload_seconds
    );
    let _ = writeln!(
        out,
        "| class (ms) | count | errors | p50 | p95 | p99 | max | server p50 | server p99 |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    let row = |out: &mut String, name: &str, c: &Summary, server: Option<&Summary>| {
        let (sp50, sp99) = server
            .filter(|s| s.count > 0)
            .map_or(("".into(), "".into()), |s| {
                (format!("{:.3}", s.p50_ms), format!("{:.3}", s.p99_ms))
            });
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {sp50} | {sp99} |",
            c.count, c.errors, c.p50_ms, c.p95_ms, c.p99_ms, c.max_ms
        );
    };
    for c in &report.classes {
        row(&mut out, c.class, &c.client, Some(&c.server));
    }
    row(
        &mut out,
        "WebSocket delivery",
        &report.websocket.delivery,
        None,
    );
    row(
        &mut out,
        "status query, quiet",
        &report.quiet.flightdeck,
        Some(&report.quiet.flightdeck_server),
    );
    row(
        &mut out,
        "bare hyper, same JSON, quiet",
        &report.quiet.bare,
        None,
    );
    let _ = writeln!(
        out,
        "\nWebSocket: {} of {} connected, {} resumed after lagging, {} errors",
        report.websocket.connected,
        report.websocket.connections,
        report.websocket.resumed,
        report.websocket.errors
    );
    let mb =
        |b: Option<u64>| b.map_or("n/a".into(), |b| format!("{:.1} MiB", b as f64 / 1048576.0));
    let secs = |c: Option<f64>| c.map_or("n/a".into(), |c| format!("{c:.1} s"));
    let _ = writeln!(
        out,
        "CPU time: server {}, driver {}, WebSocket client process {}; in the {:.1} s workflow phase: server {}, driver {}",
        secs(report.server.cpu_seconds),
        secs(report.server.driver_cpu_seconds),
        secs(report.websocket.process_cpu_seconds),
        report.workflow_seconds,
        secs(report.server.phase_cpu_seconds),
        secs(report.server.phase_driver_cpu_seconds)
    );
    let _ = writeln!(
        out,
        "server: peak resident memory {}, start-up {}, consistent after the run: {}\n",
        mb(report.server.peak_rss_bytes),
        report
            .server
            .startup_ms
            .map_or("n/a".into(), |c| format!("{c:.0} ms")),
        report
            .server
            .consistent
            .map_or("not checked", |c| if c { "yes" } else { "NO" })
    );
    let _ = writeln!(out, "| service level | target | measured | met |");
    let _ = writeln!(out, "|---|---|---|---|");
    for v in &report.verdicts {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            v.what,
            v.target,
            v.measured,
            if v.met { "met" } else { "MISSED" }
        );
    }
    let _ = writeln!(
        out,
        "\nrun {}",
        if report.clean {
            "clean: no errors, every event exactly once and in order, every task done"
        } else {
            "NOT clean: see errors, events or tasks above"
        }
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server answering `/code/N` with status N.
    async fn echo_status_server() -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(|req: hyper::Request<_>| async move {
                        let code: u16 = req
                            .uri()
                            .path()
                            .trim_start_matches("/code/")
                            .parse()
                            .unwrap_or(500);
                        let mut response =
                            hyper::Response::new(http_body_util::Full::new(bytes::Bytes::new()));
                        *response.status_mut() = hyper::StatusCode::from_u16(code).unwrap();
                        response.headers_mut().insert(
                            "server-timing",
                            hyper::header::HeaderValue::from_static("app;dur=0.250"),
                        );
                        Ok::<_, std::convert::Infallible>(response)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        addr
    }

    #[test]
    fn the_recorder_counts_unexpected_answers_and_failures_as_errors() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let addr = echo_status_server().await;
            let mut client = Client::new(addr, None);
            let mut rec = Recorder::default();
            for path in [
                "/code/200",
                "/code/204",
                "/code/503",
                "/code/404",
                "/code/200",
            ] {
                rec.request(
                    &mut client,
                    Class::StatusQuery,
                    hyper::Method::GET,
                    path,
                    None,
                    &[200, 204],
                )
                .await;
            }
            // Nobody listens here any more: a transport failure.
            let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let gone = closed.local_addr().unwrap();
            drop(closed);
            rec.request(
                &mut Client::new(gone, None),
                Class::TaskOperation,
                hyper::Method::POST,
                "/x",
                Some(&json!({})),
                &[200],
            )
            .await;
            assert_eq!(rec.errors(Class::StatusQuery), 2);
            assert_eq!(rec.errors(Class::TaskOperation), 1);
            let status = rec.client[Recorder::index(Class::StatusQuery)]
                .clone()
                .summary();
            assert_eq!(status.count, 3, "only the expected answers are timed");
            let server = rec.server[Recorder::index(Class::StatusQuery)]
                .clone()
                .summary();
            assert_eq!((server.count, server.p99_ms), (3, 0.25));
        });
    }
}
