//! One run of the benchmark, as the list of its phases (the module comment of `main.rs` tells
//! what each does and why).

use crate::http::Client;
use crate::process::{
    OwnServer, Target, parse_url, process_figures, queue_wait, remote_figures, server_args,
    spawn_listening, stop_child,
};
use crate::recorder::Recorder;
use crate::report::{ClassRow, QuietPhase, Report, ServerFigures, machine, verdicts};
use crate::roles::{
    Shared, create_projects, fan_out, latest_seq, planner, preload, reviewer, status_client,
    status_only, worker,
};
use crate::stats::Samples;
use crate::ws::{WsPlan, WsReport};
use crate::{BenchArgs, Class, Scenario, cost, ws};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Runs the benchmark described by `args`; the report, or why it could not run.
pub async fn run(args: &BenchArgs) -> Result<Report, String> {
    let Setup {
        scenario,
        exe,
        token,
        mut target,
        mut server,
        prepared,
        mut client,
    } = set_up(args).await?;
    let since = latest_seq(&mut client).await?;
    let subscribers =
        subscribe(&exe, &target, &scenario, &token, &prepared.projects, since).await?;
    let work = workflow_phase(&target, &scenario, &token, prepared, false, &mut server).await?;
    if target.process.is_none() {
        let rss = remote_figures(&mut client).await.0;
        server.peak_rss_bytes = rss.max(server.peak_rss_bytes);
    }
    let workflows_completed = completed_workflows(&mut client, &work.projects).await;
    let queue_wait = queue_wait(&mut client).await;
    eprintln!(
        "workflow phase: {} tasks in {:.1} s; checking the WebSocket streams",
        work.tasks_completed, work.seconds
    );
    let websocket = subscribers.stop().await?;
    let costs = cost::cost_phase(
        &target,
        &token,
        &work.projects,
        &work.artifact_ids,
        scenario.quiet_seconds as f64,
    )
    .await;
    let mcp = crate::mcp::mcp_phase(&target, &token, &work.projects, &work.artifact_ids).await;
    let quiet = quiet_phase(
        &exe,
        &target,
        &scenario,
        &token,
        &work.projects,
        &mut client,
    )
    .await?;
    server.driver_cpu_seconds = process_figures(std::process::id()).1;
    finish_target(&mut target, &mut client, &mut server).await?;
    let measured = Measured {
        work,
        workflows_completed,
        websocket,
        quiet,
        server,
    };
    let mut report = report(args, &target, scenario, measured);
    report.queue_wait = queue_wait;
    report.costs = costs;
    report.mcp = mcp;
    Ok(report)
}

/// What every kind of run starts with: phases 1 and 2.
pub(super) struct Setup {
    pub(super) scenario: Scenario,
    /// This executable, which runs the WebSocket clients and the bare baseline; the server is the
    /// `flightdeck` executable beside it.
    pub(super) exe: PathBuf,
    pub(super) token: Option<String>,
    pub(super) target: Target,
    pub(super) server: ServerFigures,
    pub(super) prepared: Prepared,
    pub(super) client: Client,
}

/// Phases 1 and 2: the server, its projects and its preloaded context store.
pub(super) async fn set_up(args: &BenchArgs) -> Result<Setup, String> {
    let scenario = scenario_of(args)?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let token = args.api_key.clone();
    let mut target = start_target(args, &exe).await?;
    let mut server = ServerFigures::default();
    let prepared = prepare(&mut target, &scenario, &token, &mut server).await?;
    let mut client = Client::new(target.addr, token.clone());
    if target.process.is_none() {
        server.peak_rss_bytes = remote_figures(&mut client).await.0;
    }
    Ok(Setup {
        scenario,
        exe,
        token,
        target,
        server,
        prepared,
        client,
    })
}

fn scenario_of(args: &BenchArgs) -> Result<Scenario, String> {
    let mut scenario = Scenario::of(args.scenario);
    scenario.rates = match (args.closed_loop, scenario.rates) {
        (true, _) | (false, None) => None,
        (false, Some(rates)) => Some(rates.with(&args.rates)?),
    };
    if let Some(n) = args.artifacts {
        scenario.artifacts = n;
    }
    if let Some(n) = args.ws_connections {
        scenario.ws_connections = n;
    }
    if let Some(s) = args.max_seconds {
        scenario.max_seconds = s;
    }
    Ok(scenario)
}

/// Phase 1: a server of our own on a temporary directory, or the one `--url` names.
async fn start_target(args: &BenchArgs, exe: &Path) -> Result<Target, String> {
    if let Some(url) = &args.url {
        return Ok(Target {
            addr: parse_url(url)?,
            process: None,
            reviewer_token: args.reviewer_api_key.clone(),
        });
    }
    let server_exe = exe.with_file_name("flightdeck");
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let (child, addr) = spawn_listening(&server_exe, &server_args(dir.path())).await?;
    Ok(Target {
        addr,
        process: Some(OwnServer {
            child,
            dir,
            exe: server_exe,
        }),
        reviewer_token: None,
    })
}

/// What the preparation made.
#[derive(Clone)]
pub(super) struct Prepared {
    pub(super) projects: Vec<String>,
    pub(super) artifact_ids: Vec<String>,
    pub(super) preload_seconds: f64,
}

/// Phase 2: the projects, the preloaded context store, and (own server) a restart that times
/// start-up with everything loaded.
async fn prepare(
    target: &mut Target,
    scenario: &Scenario,
    token: &Option<String>,
    server: &mut ServerFigures,
) -> Result<Prepared, String> {
    eprintln!(
        "bench {:?}: server at {}; creating {} projects",
        scenario.name, target.addr, scenario.projects
    );
    let projects = create_projects(target.addr, token, scenario.projects, scenario.clients).await?;
    let started = Instant::now();
    eprintln!("preloading {} artifacts", scenario.artifacts);
    let artifact_ids = preload(target.addr, token, &projects, scenario.artifacts).await?;
    let preload_seconds = started.elapsed().as_secs_f64();
    if let Some(own) = &mut target.process {
        stop_child(&mut own.child).await;
        let started = Instant::now();
        let (child, addr) = spawn_listening(&own.exe, &server_args(own.dir.path())).await?;
        // The address is printed once bound, before the store opens: start-up ends with the
        // first answer that says the server is ready.
        ready(addr, token).await?;
        server.startup_ms = Some(started.elapsed().as_secs_f64() * 1e3);
        own.child = child;
        target.addr = addr;
    }
    Ok(Prepared {
        projects,
        artifact_ids,
        preload_seconds,
    })
}

/// Waits (up to 10 minutes) until `/readyz` answers 200.
async fn ready(addr: SocketAddr, token: &Option<String>) -> Result<(), String> {
    let mut client = Client::new(addr, token.clone());
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if let Ok(a) = client.get("/readyz").await
            && a.status == 200
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err("the restarted server was not ready within 10 minutes".into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The WebSocket clients, running until told to stop.
pub(super) struct Subscribers {
    task: tokio::task::JoinHandle<Result<WsReport, String>>,
    stop: tokio::sync::oneshot::Sender<()>,
}

impl Subscribers {
    /// Phase 5: stop the clients; each checks it holds its project's log exactly once, in order.
    pub(super) async fn stop(self) -> Result<WsReport, String> {
        let _ = self.stop.send(());
        self.task.await.map_err(|e| e.to_string())?
    }
}

/// Phase 3: the WebSocket clients, one project each, from `since` (in a child process for the
/// large scenario); answers once they are all subscribed.
pub(super) async fn subscribe(
    exe: &Path,
    target: &Target,
    scenario: &Scenario,
    token: &Option<String>,
    projects: &[String],
    since: u64,
) -> Result<Subscribers, String> {
    eprintln!("connecting {} WebSocket clients", scenario.ws_connections);
    let plan = WsPlan {
        addr: target.addr,
        token: token.clone(),
        projects: projects.to_vec(),
        connections: scenario.ws_connections,
        since,
    };
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<usize>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let ready = |n| {
        let _ = ready_tx.send(n);
    };
    let stopped = async {
        let _ = stop_rx.await;
    };
    let task = if scenario.ws_in_child {
        let exe = exe.to_path_buf();
        tokio::spawn(async move { ws::run_in_child(&exe, plan, ready, stopped).await })
    } else {
        tokio::spawn(
            async move { Ok(ws::run(plan, ready, stopped, Duration::from_secs(60)).await) },
        )
    };
    let connected = ready_rx
        .await
        .map_err(|_| "the WebSocket clients ended before connecting".to_string())?;
    eprintln!(
        "{connected} WebSocket clients subscribed; workflow phase (at most {} s)",
        scenario.max_seconds
    );
    Ok(Subscribers {
        task,
        stop: stop_tx,
    })
}

/// What the workflow phase did.
pub(super) struct Work {
    pub(super) projects: Vec<String>,
    pub(super) artifact_ids: Vec<String>,
    pub(super) preload_seconds: f64,
    pub(super) rec: Recorder,
    pub(super) seconds: f64,
    pub(super) tasks_completed: u64,
}

/// Phase 4: workers, the reviewer and the status clients all at once, until every task is
/// completed or the bound; the server's and the driver's CPU time meanwhile. `steady`: the
/// planners keep giving the projects more work, so the phase runs for its bound at its rates (a
/// step of the capacity search, a minute of the soak).
pub(super) async fn workflow_phase(
    target: &Target,
    scenario: &Scenario,
    token: &Option<String>,
    prepared: Prepared,
    steady: bool,
    server: &mut ServerFigures,
) -> Result<Work, String> {
    let shared = Arc::new(Shared {
        addr: target.addr,
        token: token.clone(),
        reviewer_token: target.reviewer_token.clone().or_else(|| token.clone()),
        projects: prepared.projects.clone(),
        artifact_ids: prepared.artifact_ids,
        scenario: scenario.clone(),
        steady,
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
    let started = Instant::now();
    let bound = {
        let shared = shared.clone();
        tokio::spawn(async move {
            let notified = shared.done_signal.notified();
            if !shared.is_done() {
                let bound = Duration::from_secs(shared.scenario.max_seconds);
                let _ = tokio::time::timeout(bound, notified).await;
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
    let planners = {
        let shared = shared.clone();
        tokio::spawn(fan_out(scenario.workers, move |n| {
            planner(shared.clone(), n)
        }))
    };
    let review = tokio::spawn(reviewer(shared.clone()));
    let mut rec = Recorder::default();
    for part in [workers, planners, readers, review] {
        rec.merge(part.await.map_err(|e| e.to_string())?);
    }
    let _ = bound.await;
    let seconds = started.elapsed().as_secs_f64();
    let cpu_after = cpu_now();
    let used = |a: Option<f64>, b: Option<f64>| Some(b? - a?);
    server.phase_cpu_seconds = used(cpu_before.0, cpu_after.0);
    server.phase_driver_cpu_seconds = used(cpu_before.1, cpu_after.1);
    Ok(Work {
        projects: prepared.projects,
        artifact_ids: shared.artifact_ids.clone(),
        preload_seconds: prepared.preload_seconds,
        rec,
        seconds,
        tasks_completed: shared.completed.load(Ordering::Acquire),
    })
}

async fn completed_workflows(client: &mut Client, projects: &[String]) -> u64 {
    let mut completed = 0;
    for p in projects {
        if let Ok(a) = client.get(&format!("/api/v1/projects/{p}/workflow")).await
            && a.json().is_some_and(|w| w["status"] == "completed")
        {
            completed += 1;
        }
    }
    completed
}

/// Phase 6: status queries alone, against flightdeck and against a bare hyper server answering
/// the same JSON, alternating (ABBA), same clients.
async fn quiet_phase(
    exe: &Path,
    target: &Target,
    scenario: &Scenario,
    token: &Option<String>,
    projects: &[String],
    client: &mut Client,
) -> Result<QuietPhase, String> {
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
    let args = [
        "bare".into(),
        "--body-file".into(),
        body_file.path().display().to_string(),
    ];
    let (mut bare, bare_addr) = spawn_listening(exe, &args).await?;
    let (mut ours, mut ours_inside, mut base) =
        (Samples::default(), Samples::default(), Samples::default());
    let (mut ours_rate, mut base_rate) = (0.0, 0.0);
    for round in 0..4 {
        let ours_turn = round == 0 || round == 3;
        let (addr, token) = if ours_turn {
            (target.addr, token.clone())
        } else {
            (bare_addr, None)
        };
        let (s, inside, r) = status_only(
            addr,
            token,
            paths.clone(),
            scenario.clients,
            scenario.quiet_seconds,
        )
        .await;
        if ours_turn {
            ours.merge(s);
            ours_inside.merge(inside);
            ours_rate += r / 2.0;
        } else {
            base.merge(s);
            base_rate += r / 2.0;
        }
    }
    stop_child(&mut bare).await;
    let (ours, base) = (ours.summary(), base.summary());
    Ok(QuietPhase {
        flightdeck: ours,
        flightdeck_server: ours_inside.summary(),
        flightdeck_per_second: ours_rate,
        bare: base,
        bare_per_second: base_rate,
        p99_ratio: ours.p99_ms / base.p99_ms.max(1e-6),
        throughput_ratio: ours_rate / base_rate.max(1e-6),
    })
}

/// Phase 7: the server's figures; our own server stopped and its directory checked.
pub(super) async fn finish_target(
    target: &mut Target,
    client: &mut Client,
    server: &mut ServerFigures,
) -> Result<(), String> {
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
            let (rss, cpu) = remote_figures(client).await;
            server.peak_rss_bytes = rss.max(server.peak_rss_bytes);
            server.cpu_seconds = cpu;
        }
    }
    Ok(())
}

/// The report: every class's figures, the verdicts against the service levels, and whether the
/// What the phases of a run measured, for its report.
struct Measured {
    work: Work,
    workflows_completed: u64,
    websocket: WsReport,
    quiet: QuietPhase,
    server: ServerFigures,
}

/// run was clean.
fn report(args: &BenchArgs, target: &Target, scenario: Scenario, measured: Measured) -> Report {
    let Measured {
        work,
        workflows_completed,
        websocket,
        quiet,
        server,
    } = measured;
    let target_name = target.name(args);
    let classes: Vec<ClassRow> = Class::ALL
        .iter()
        .enumerate()
        .map(|(i, class)| ClassRow {
            class: class.name(),
            client: work.rec.client[i].clone().summary(),
            server: work.rec.server[i].clone().summary(),
        })
        .collect();
    let requests: usize = work.rec.client.iter().map(Samples::len).sum();
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
        && work.tasks_completed == tasks_expected
        && workflows_completed == work.projects.len() as u64
        && server.consistent != Some(false);
    Report {
        machine: machine(),
        target: target_name,
        preload_seconds: work.preload_seconds,
        workflow_seconds: work.seconds,
        tasks_expected,
        tasks_completed: work.tasks_completed,
        workflows_completed,
        http_requests_per_second: requests as f64 / work.seconds.max(1e-6),
        classes,
        websocket,
        quiet,
        server,
        verdicts,
        queue_wait: None,
        costs: Vec::new(),
        mcp: Vec::new(),
        clean,
        scenario,
    }
}
