//! `flightdeck-bench` (also `flightdeck bench …`, which hands over to it): the load benchmark of
//! the original requirement, run as a client of the real HTTP and WebSocket API. A binary of its
//! own, outside the server library: it starts the `flightdeck` executable beside it.
//!
//! One run, in order:
//! 1. start a server on a temporary directory (the same executable, `serve`) or use `--url`;
//! 2. create the projects; preload the context store with artifacts; restart the server to time
//!    start-up with them (own server only);
//! 3. connect the WebSocket clients, one project each, from the current seq (in a child process
//!    for the large scenario);
//! 4. the workflow phase: planners give each project its tasks and start its `sdlc` workflow
//!    (open loop: paced at the rate the workers try to claim; closed loop: the workers do it, as
//!    fast as they can), workers claim, post an artifact and complete, a reviewer approves every
//!    gate, status clients query status, agents, projects, health and the context store, all at
//!    once, until every task is completed (or the bound);
//! 5. the WebSocket clients check they hold every event of their project's log exactly once and
//!    in order;
//! 6. the quiet phase: status queries alone, against flightdeck and against a bare hyper server
//!    answering the same JSON, alternating, same clients;
//! 7. stop the server, run `flightdeck check` on its directory, report.
//!
//! `--find-capacity` (`capacity`) and `--soak` (`soak`) share phases 1 and 2, then run steady
//! steps of the workflow mix instead (each with the WebSocket clients subscribed and checked),
//! and end with phase 7.

mod capacity;
mod cost;
mod http;
mod mcp;
mod pace;
mod process;
mod recorder;
mod report;
mod roles;
mod run;
mod soak;
mod stats;
mod ws;

use process::process_figures;
use report::render;
use run::run;

use std::path::PathBuf;

use serde::Serialize;

use clap::{Args, Parser, Subcommand};
use pace::Rates;

#[derive(Parser, Debug)]
#[command(
    name = "flightdeck-bench",
    version,
    about = "The flightdeck load benchmark"
)]
struct Cli {
    #[command(subcommand)]
    part: Option<Part>,
    #[command(flatten)]
    args: BenchArgs,
}

/// The benchmark's own child processes.
#[derive(Subcommand, Debug)]
enum Part {
    /// WebSocket clients in a process of their own.
    #[command(hide = true)]
    WsClients,
    /// The bare hyper baseline server, answering a file's bytes.
    #[command(hide = true)]
    Bare {
        #[arg(long, value_name = "FILE")]
        body_file: PathBuf,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.part {
        Some(Part::WsClients) => io_outcome(ws::child_main()),
        Some(Part::Bare { body_file }) => {
            io_outcome(std::fs::read(&body_file).and_then(|body| http::bare_server(body.into())))
        }
        None => bench(&cli.args),
    }
}

fn io_outcome(result: std::io::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flightdeck-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn bench(args: &BenchArgs) -> std::process::ExitCode {
    use std::process::ExitCode;
    flightdeck::logging::init(flightdeck::config::LogFormat::Text);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("flightdeck-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        if let Some(seconds) = args.soak {
            let report = soak::soak(args, seconds).await?;
            Ok::<_, String>((
                soak::render_soak(&report),
                serde_json::to_string_pretty(&report),
                format!("flightdeck-bench-soak-{:?}.json", report.scenario.name),
                report.clean,
            ))
        } else if args.find_capacity {
            let report = capacity::find(args).await?;
            Ok((
                capacity::render_capacity(&report),
                serde_json::to_string_pretty(&report),
                format!("flightdeck-bench-capacity-{:?}.json", report.scenario.name),
                report.clean,
            ))
        } else {
            let report = run(args).await?;
            Ok((
                render(&report),
                serde_json::to_string_pretty(&report),
                format!("flightdeck-bench-{:?}.json", report.scenario.name),
                report.clean,
            ))
        }
    });
    let (text, json, name, clean) = match outcome {
        Ok(outcome) => outcome,
        Err(e) => {
            eprintln!("flightdeck-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("{text}");
    let path = args
        .json
        .clone()
        .unwrap_or_else(|| name.to_lowercase().into());
    let json = json.unwrap_or_default();
    if let Err(e) = std::fs::write(&path, json) {
        eprintln!("flightdeck-bench: cannot write {}: {e}", path.display());
        return ExitCode::FAILURE;
    }
    println!("report written to {}", path.display());
    if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ScenarioName {
    Tiny,
    Seed,
    X100,
}

const WS_DELIVERY_MS: f64 = flightdeck::monitor::service_levels::WS_DELIVERY * 1e3;
const ORIGINAL_WS_DELIVERY_MS: f64 =
    flightdeck::monitor::service_levels::original::WS_DELIVERY * 1e3;

/// The size of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    pub name: ScenarioName,
    pub projects: usize,
    /// Tasks per project, the workflow's five phases included.
    pub tasks_per_project: usize,
    /// Concurrent status-query clients.
    pub clients: usize,
    /// Concurrent worker clients (plus one reviewer); as many planners give the projects their
    /// work in an open-loop run, the workers themselves in a closed-loop one.
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
    /// p99 target of a task operation inside the server at this size (service level).
    pub task_target_ms: f64,
    /// The offered rates of the workflow phase (open loop); None: closed loop, every client as
    /// fast as the server answers (the saturation mode).
    pub rates: Option<Rates>,
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
                task_target_ms: flightdeck::monitor::service_levels::TASK_OPERATION * 1e3,
                rates: Some(Rates {
                    status: 100.0,
                    tasks: 50.0,
                    review: 10.0,
                }),
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
                task_target_ms: flightdeck::monitor::service_levels::TASK_OPERATION * 1e3,
                rates: Some(Rates {
                    status: 1000.0,
                    tasks: 60.0,
                    review: 20.0,
                }),
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
                ws_target_ms: flightdeck::monitor::service_levels::WS_DELIVERY_10K * 1e3,
                task_target_ms: flightdeck::monitor::service_levels::TASK_OPERATION_X100 * 1e3,
                rates: Some(Rates {
                    status: 2000.0,
                    tasks: 250.0,
                    review: 50.0,
                }),
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

    /// The p99 target of `docs/service-levels.md` for the time inside the server at `scenario`'s
    /// size, and the original requirement's for the time the client sees, in ms.
    fn targets(self, scenario: &Scenario) -> (Option<f64>, Option<f64>) {
        use flightdeck::monitor::service_levels::{self as sl, original};
        let (design, original) = match self {
            Class::StatusQuery => (sl::STATUS_QUERY, original::STATUS_QUERY),
            Class::TaskOperation => (scenario.task_target_ms / 1e3, original::TASK_OPERATION),
            Class::ContextGet => (sl::CONTEXT_GET, original::CONTEXT_RETRIEVAL),
            Class::ContextList => (sl::CONTEXT_LIST, original::CONTEXT_RETRIEVAL),
            Class::ContextPut | Class::Hitl => return (None, None),
        };
        (Some(design * 1e3), Some(original * 1e3))
    }
}

/// The benchmark's command line.
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
    /// API key (read-write, or worker and operator) for a server that requires one
    #[arg(
        long,
        env = "FLIGHTDECK_BENCH_API_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub api_key: Option<String>,
    /// The reviewer's API key (with the reviewer role), when it must not be `--api-key`: the
    /// server refuses a key's approval of a task that same key claimed
    #[arg(
        long,
        env = "FLIGHTDECK_BENCH_REVIEWER_API_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub reviewer_api_key: Option<String>,
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
    /// Override an offered rate of the workflow phase, per second: status=N (status clients'
    /// requests), tasks=N (workers' claim attempts), review=N (the reviewer's looks at the
    /// pending approvals); repeatable
    #[arg(long = "rate", value_name = "CLASS=N")]
    pub rates: Vec<String>,
    /// Closed loop: every client sends its next request as soon as the last is answered (the
    /// saturation mode; the latencies then include the queueing behind the other clients)
    #[arg(long, conflicts_with = "rates")]
    pub closed_loop: bool,
    /// Find the capacity: steps of rising offered load (the scenario's rates, with any --rate,
    /// times 1, 1.5, 2.25, …; halving instead when the first step already breaks), each run for a
    /// fixed time and judged against the service levels; reports the highest load at which every
    /// level held and the first to break, and why
    #[arg(long, conflicts_with = "closed_loop")]
    pub find_capacity: bool,
    /// Length of each capacity step, in seconds [default: tiny 3, seed 20, x100 30]
    #[arg(long, value_name = "SECS", requires = "find_capacity")]
    pub step_seconds: Option<u64>,
    /// At most this many capacity steps
    #[arg(
        long,
        value_name = "N",
        default_value_t = 10,
        requires = "find_capacity"
    )]
    pub max_steps: usize,
    /// Soak: the scenario's mix, steady, at its offered rates (with any --rate) for SECONDS,
    /// reported per minute: resident memory, open file descriptors, errors, p99 per class,
    /// events exactly once, alerts fired
    #[arg(
        long,
        value_name = "SECONDS",
        conflicts_with_all = ["closed_loop", "find_capacity"]
    )]
    pub soak: Option<u64>,
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::http::Client;
    use crate::pace::Pace;
    use crate::recorder::{Call, Recorder};

    /// A server answering `/code/N` with status N, and `/sleep/MS` with 200 after MS ms.
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
                        let path = req.uri().path();
                        if let Some(ms) = path.strip_prefix("/sleep/") {
                            let ms = ms.parse().unwrap_or(0);
                            tokio::time::sleep(Duration::from_millis(ms)).await;
                        }
                        let code: u16 = match path.strip_prefix("/code/") {
                            Some(code) => code.parse().unwrap_or(500),
                            None => 200,
                        };
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
    fn open_loop_latency_counts_from_the_due_time_when_the_server_stalls() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let addr = echo_status_server().await;
            let status = Recorder::index(Class::StatusQuery);
            // 50 per second, one every 20 ms; the first answer stalls 200 ms, while the next
            // four come due (at 20, 40, 60 and 80 ms).
            let run = |paced: bool| async move {
                let mut client = Client::new(addr, None);
                let mut rec = Recorder::default();
                let mut pace = Pace::share(50.0, 1, 0);
                for i in 0..5 {
                    let due = pace.due().await;
                    let path = if i == 0 { "/sleep/200" } else { "/code/200" };
                    let due = paced.then_some(due);
                    rec.request_due(
                        due,
                        &mut client,
                        Call {
                            class: Class::StatusQuery,
                            method: hyper::Method::GET,
                            path,
                            body: None,
                            ok: &[200],
                        },
                    )
                    .await;
                }
                rec
            };
            let open = run(true).await.client[status].clone().summary();
            assert_eq!(open.count, 5);
            // Each later request is sent at 200 ms at the earliest: it waited 120-180 ms.
            assert!(open.p50_ms >= 120.0, "{open:?}");
            assert!(open.max_ms >= 200.0, "{open:?}");
            // Timed from when they were sent instead, the four answers look fast: the stall
            // is hidden (coordinated omission), which is what the due time prevents.
            let hidden = run(false).await.client[status].clone().summary();
            assert_eq!(hidden.count, 5);
            assert!(hidden.p50_ms < 100.0, "{hidden:?}");
        });
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
                    Call {
                        class: Class::StatusQuery,
                        method: hyper::Method::GET,
                        path,
                        body: None,
                        ok: &[200, 204],
                    },
                )
                .await;
            }
            // Nobody listens here any more: a transport failure.
            let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let gone = closed.local_addr().unwrap();
            drop(closed);
            rec.request(
                &mut Client::new(gone, None),
                Call {
                    class: Class::TaskOperation,
                    method: hyper::Method::POST,
                    path: "/x",
                    body: Some(&json!({})),
                    ok: &[200],
                },
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

    #[test]
    fn task_operations_are_judged_at_their_scenario_level_and_unsent_classes_not_at_all() {
        use crate::report::{ClassRow, phase_verdicts};
        use crate::stats::Summary;
        use crate::ws::WsReport;
        let rows = |task_p99: f64, get: Summary| -> Vec<ClassRow> {
            Class::ALL
                .iter()
                .map(|class| {
                    let mut s = Summary {
                        count: 100,
                        p50_ms: 0.05,
                        p95_ms: 0.1,
                        p99_ms: 0.2,
                        max_ms: 0.3,
                        ..Summary::default()
                    };
                    if *class == Class::TaskOperation {
                        s.p99_ms = task_p99;
                        s.max_ms = task_p99;
                    }
                    if *class == Class::ContextGet {
                        s = get;
                    }
                    ClassRow {
                        class: class.name(),
                        client: s,
                        server: s,
                    }
                })
                .collect()
        };
        let ws = WsReport::default();
        let task_level = |scenario: ScenarioName, task_p99: f64, get: Summary| {
            let verdicts = phase_verdicts(&Scenario::of(scenario), &rows(task_p99, get), &ws);
            let task = verdicts
                .iter()
                .find(|v| v.what.starts_with("task operation p99, inside"))
                .expect("judged")
                .clone();
            let gets = verdicts
                .iter()
                .filter(|v| v.what.starts_with("context-store get"))
                .count();
            (task.met, task.target, gets)
        };
        let sent = Summary {
            count: 10,
            p99_ms: 0.4,
            max_ms: 0.4,
            ..Summary::default()
        };
        // 8 ms: inside x100's level (10 ms at 1,000 projects), outside seed's (5 ms).
        assert_eq!(
            task_level(ScenarioName::X100, 8.0, sent),
            (true, "< 10 ms".to_string(), 2)
        );
        assert_eq!(
            task_level(ScenarioName::Seed, 8.0, sent),
            (false, "< 5 ms".to_string(), 2)
        );
        assert!(!task_level(ScenarioName::X100, 12.0, sent).0);
        // No get sent (no artifacts preloaded): nothing to judge. Gets that all failed: judged,
        // and broken.
        assert_eq!(task_level(ScenarioName::X100, 8.0, Summary::default()).2, 0);
        let failed = Summary {
            errors: 3,
            ..Summary::default()
        };
        assert_eq!(task_level(ScenarioName::X100, 8.0, failed).2, 2);
        let verdicts = phase_verdicts(&Scenario::of(ScenarioName::X100), &rows(8.0, failed), &ws);
        assert!(
            verdicts
                .iter()
                .filter(|v| v.what.starts_with("context-store get"))
                .all(|v| !v.met)
        );
    }
}
