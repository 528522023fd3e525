//! The report: its rows, the verdicts against the service levels, the table.

use crate::stats::Summary;
use crate::ws::WsReport;
use crate::{Class, ORIGINAL_WS_DELIVERY_MS, Scenario};
use serde::Serialize;

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

/// What 1,000 usage reports a second would cost (the cost phase's CPU per report) as a share
/// of the server's CPU per second in the workflow phase.
pub fn usage_share(report: &Report) -> Option<f64> {
    let per_report_us = report
        .costs
        .iter()
        .find(|c| c.class == super::cost::USAGE_ROW)?
        .server_cpu_us;
    let phase = report.server.phase_cpu_seconds? / report.workflow_seconds.max(1e-9);
    (phase > 0.0).then(|| per_report_us * 1000.0 / 1e6 / phase)
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
    /// How long tasks waited in their queue before a worker claimed them (the server's figure).
    pub queue_wait: Option<QueueWait>,
    /// The server's CPU per operation, each class alone (the cost phase).
    pub costs: Vec<super::cost::CostRow>,
    /// Tool calls over MCP beside their REST routes (the MCP phase).
    pub mcp: Vec<super::mcp::McpRow>,
    /// No errors, no event lost, duplicated or reordered, every task done, check consistent.
    pub clean: bool,
}

/// The server's queue wait: pending → claimed, over the last 5 minutes.
#[derive(Clone, Debug, Serialize)]
pub struct QueueWait {
    pub claims: u64,
    pub p99_ms: f64,
}

pub(super) fn verdicts(
    scenario: &Scenario,
    classes: &[ClassRow],
    websocket: &WsReport,
    quiet: &QuietPhase,
    server: &ServerFigures,
) -> Vec<Verdict> {
    let mut out = phase_verdicts(scenario, classes, websocket);
    let ms = |v: f64| format!("{v:.3} ms");
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

/// The service levels of a workflow phase: each class's p99 (inside the server and as the
/// client saw it), WebSocket delivery, and every event exactly once.
pub(super) fn phase_verdicts(
    scenario: &Scenario,
    classes: &[ClassRow],
    websocket: &WsReport,
) -> Vec<Verdict> {
    let mut out = Vec::new();
    let ms = |v: f64| format!("{v:.3} ms");
    for (class, row) in Class::ALL.iter().zip(classes) {
        if row.client.count == 0 && row.client.errors == 0 {
            // Not exercised: no request of this class was sent (context-store gets with no
            // artifacts preloaded), so there is nothing to judge; the class table shows 0.
            continue;
        }
        let (design, original) = class.targets(scenario);
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
    out
}

pub(super) fn machine() -> String {
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

/// Verdicts as a Markdown table whose first column is headed `what`.
pub(super) fn render_verdicts(out: &mut String, what: &str, verdicts: &[Verdict]) {
    use std::fmt::Write;
    let _ = writeln!(out, "| {what} | target | measured | met |");
    let _ = writeln!(out, "|---|---|---|---|");
    for v in verdicts {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            v.what,
            v.target,
            v.measured,
            if v.met { "met" } else { "MISSED" }
        );
    }
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
    let _ = match &s.rates {
        Some(r) => writeln!(
            out,
            "load: open loop, offered {:.0} status-client requests/s, {:.0} claim attempts/s, {:.0} reviews/s; client latencies run from each request's due time",
            r.status, r.tasks, r.review
        ),
        None => writeln!(
            out,
            "load: closed loop (saturation): each client sends as soon as it is answered; client latencies include queueing behind the other clients"
        ),
    };
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
    if let Some(q) = &report.queue_wait {
        let _ = writeln!(
            out,
            "queue wait (pending → claimed, measured by the server; the workers poll at their pace, or every 5 ms when idle in closed loop): p99 {:.3} ms over {} claims\n",
            q.p99_ms, q.claims
        );
    }
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
    if !report.costs.is_empty() {
        let _ = writeln!(
            out,
            "server CPU per operation, each class alone ({} closed-loop clients):\n",
            super::cost::CLIENTS
        );
        let _ = writeln!(
            out,
            "| class | operations | seconds | server CPU per operation | server p50 |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|");
        for c in &report.costs {
            let _ = writeln!(
                out,
                "| {} | {} | {:.1} | {:.0} µs | {:.3} ms |",
                c.class, c.operations, c.seconds, c.server_cpu_us, c.server_p50_ms
            );
        }
        let _ = writeln!(out);
        if let Some(share) = usage_share(report) {
            let _ = writeln!(
                out,
                "usage reports at 1,000 per second would take {:.1} % of the server CPU the workflow phase used per second\n",
                share * 100.0
            );
        }
    }
    if !report.mcp.is_empty() {
        let _ = writeln!(
            out,
            "MCP beside REST, the same calls in alternating rounds ({} closed-loop clients):\n",
            super::cost::CLIENTS
        );
        let _ = writeln!(
            out,
            "| operation | protocol | calls | errors | p50 | p99 | server CPU per call | p99 and CPU vs REST |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
        for m in &report.mcp {
            let rest = report
                .mcp
                .iter()
                .find(|r| r.operation == m.operation && r.protocol == "REST");
            let ratio = match rest {
                Some(r) if m.protocol != "REST" && r.p99_ms > 0.0 && r.server_cpu_us > 0.0 => {
                    format!(
                        "{:.2}x, {:.2}x",
                        m.p99_ms / r.p99_ms,
                        m.server_cpu_us / r.server_cpu_us
                    )
                }
                _ => "-".into(),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {:.3} ms | {:.3} ms | {:.0} µs | {} |",
                m.operation,
                m.protocol,
                m.calls,
                m.errors,
                m.p50_ms,
                m.p99_ms,
                m.server_cpu_us,
                ratio
            );
        }
        let _ = writeln!(out);
    }
    render_verdicts(&mut out, "service level", &report.verdicts);
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
