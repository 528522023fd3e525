//! `--soak SECONDS`: the scenario's mix, steady, at its offered rates (with any `--rate`) for a
//! long time, reported minute by minute: the server's resident memory and open file descriptors,
//! errors, p99 per class, WebSocket delivery and every event exactly once, and the alerts that
//! fired. Each minute is one steady step (`capacity::run_step`): the WebSocket clients subscribe
//! at its start and check their streams at its end.

use super::capacity::{Step, run_step};
use crate::http::Client;
use crate::pace::Rates;
use crate::recorder::Recorder;
use crate::report::{Verdict, machine, render_verdicts};
use crate::run::{Setup, finish_target, set_up};
use crate::{BenchArgs, Class, Scenario};
use serde::Serialize;
use std::time::Instant;

/// Resident memory may grow by at most this fraction from the end of minute 2 to the end.
pub(super) const RSS_GROWTH_LIMIT: f64 = 0.05;

/// One minute of the soak.
#[derive(Clone, Debug, Serialize)]
pub struct Minute {
    pub minute: usize,
    pub step: Step,
    /// The server's resident memory and open file descriptors at the end of the minute.
    pub rss_bytes: Option<u64>,
    pub open_fds: Option<u64>,
    /// Alert rules that went to firing during the minute.
    pub alerts_fired: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SoakReport {
    pub scenario: Scenario,
    pub machine: String,
    pub target: String,
    pub seconds: u64,
    pub minutes: Vec<Minute>,
    /// Resident memory growth from the end of minute 2 to the end of the soak.
    pub rss_growth_after_two_minutes: Option<f64>,
    pub errors: u64,
    /// Events missing, duplicated or out of order, over every minute.
    pub events_wrong: u64,
    pub alerts_fired: Vec<String>,
    pub verdicts: Vec<Verdict>,
    pub consistent: Option<bool>,
    /// Every verdict met and the store consistent afterwards.
    pub clean: bool,
}

/// Values of unlabelled series in the server's `/metrics`.
async fn metric_values(client: &mut Client, names: &[&str]) -> Vec<Option<f64>> {
    let text = match client.get("/metrics").await {
        Ok(a) => String::from_utf8_lossy(&a.body).into_owned(),
        Err(_) => String::new(),
    };
    names
        .iter()
        .map(|name| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        })
        .collect()
}

/// How many times each alert rule has gone to firing, from `/metrics`.
async fn firings(client: &mut Client) -> std::collections::BTreeMap<String, u64> {
    let text = match client.get("/metrics").await {
        Ok(a) => String::from_utf8_lossy(&a.body).into_owned(),
        Err(_) => String::new(),
    };
    text.lines()
        .filter(|l| l.starts_with("flightdeck_alert_transitions_total{"))
        .filter(|l| l.contains("state=\"firing\""))
        .filter_map(|l| {
            let rule = l.split("rule=\"").nth(1)?.split('"').next()?.to_string();
            let n = l.rsplit(' ').next()?.parse::<f64>().ok()? as u64;
            Some((rule, n))
        })
        .collect()
}

/// Runs the soak described by `args` for `seconds`.
pub(super) async fn soak(args: &BenchArgs, seconds: u64) -> Result<SoakReport, String> {
    let Setup {
        scenario,
        exe,
        token,
        mut target,
        mut server,
        prepared,
        mut client,
    } = set_up(args).await?;
    if scenario.rates.is_none() {
        return Err("the soak offers fixed rates: it cannot run closed loop".into());
    }
    let mut minutes = Vec::new();
    let mut fired_before = firings(&mut client).await;
    let started = Instant::now();
    while started.elapsed().as_secs() < seconds {
        let left = seconds - started.elapsed().as_secs();
        let mut at = scenario.clone();
        at.max_seconds = left.min(60);
        eprintln!("soak minute {}", minutes.len() + 1);
        let step = run_step(&exe, &target, &at, &token, &prepared, 1.0, &mut client).await?;
        let figures = metric_values(
            &mut client,
            &[
                "flightdeck_process_resident_memory_bytes",
                "flightdeck_process_open_fds",
            ],
        )
        .await;
        let fired_now = firings(&mut client).await;
        let alerts_fired: Vec<String> = fired_now
            .iter()
            .filter(|(rule, n)| **n > fired_before.get(*rule).copied().unwrap_or(0))
            .map(|(rule, _)| rule.clone())
            .collect();
        fired_before = fired_now;
        let minute = Minute {
            minute: minutes.len() + 1,
            rss_bytes: figures[0].map(|v| v as u64),
            open_fds: figures[1].map(|v| v as u64),
            alerts_fired,
            step,
        };
        eprintln!(
            "  resident {} MiB, {} fds, {} errors, alerts fired: {:?}",
            minute.rss_bytes.unwrap_or(0) >> 20,
            minute.open_fds.unwrap_or(0),
            minute.step.errors,
            minute.alerts_fired
        );
        minutes.push(minute);
    }
    finish_target(&mut target, &mut client, &mut server).await?;
    let growth = match (minutes.get(1), minutes.last()) {
        (Some(second), Some(last)) if minutes.len() > 2 => {
            let (a, b) = (second.rss_bytes, last.rss_bytes);
            a.zip(b)
                .map(|(a, b)| (b as f64 - a as f64) / (a as f64).max(1.0))
        }
        _ => None,
    };
    let errors: u64 = minutes.iter().map(|m| m.step.errors).sum();
    let events_wrong: u64 = minutes
        .iter()
        .map(|m| {
            let v = &m.step.websocket.verdict;
            v.missing + v.duplicated + v.reordered + v.unexpected + m.step.websocket.incomplete
        })
        .sum();
    let mut alerts_fired: Vec<String> = minutes
        .iter()
        .flat_map(|m| m.alerts_fired.iter().cloned())
        .collect();
    alerts_fired.sort();
    alerts_fired.dedup();
    let verdicts = vec![
        Verdict {
            what: "errors over the soak".into(),
            target: "0".into(),
            measured: errors.to_string(),
            met: errors == 0,
        },
        Verdict {
            what: "events missing, duplicated or reordered".into(),
            target: "0".into(),
            measured: events_wrong.to_string(),
            met: events_wrong == 0,
        },
        Verdict {
            what: "resident memory growth after the first two minutes".into(),
            target: format!("< {:.0} %", RSS_GROWTH_LIMIT * 100.0),
            measured: growth.map_or("n/a (under 3 minutes)".into(), |g| {
                format!("{:.1} %", g * 100.0)
            }),
            met: growth.is_none_or(|g| g < RSS_GROWTH_LIMIT),
        },
        Verdict {
            what: "alerts fired".into(),
            target: "none".into(),
            measured: match alerts_fired.is_empty() {
                true => "none".into(),
                false => alerts_fired.join(", "),
            },
            met: alerts_fired.is_empty(),
        },
    ];
    let clean = verdicts.iter().all(|v| v.met) && server.consistent != Some(false);
    Ok(SoakReport {
        machine: machine(),
        target: target.name(args),
        scenario,
        seconds,
        minutes,
        rss_growth_after_two_minutes: growth,
        errors,
        events_wrong,
        alerts_fired,
        verdicts,
        consistent: server.consistent,
        clean,
    })
}

/// The soak as Markdown: a row per minute, then the verdicts.
pub fn render_soak(report: &SoakReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let s = &report.scenario;
    let r = s.rates.unwrap_or(Rates::ZERO);
    let _ = writeln!(
        out,
        "soak, scenario {:?}, {} s: {} projects, {} status clients, {} workers + 1 reviewer, {} WebSocket connections, {} artifacts; open loop at {:.0} status-client requests/s, {:.0} claim attempts/s, {:.0} reviews/s",
        s.name,
        report.seconds,
        s.projects,
        s.clients,
        s.workers,
        s.ws_connections,
        s.artifacts,
        r.status,
        r.tasks,
        r.review
    );
    let _ = writeln!(
        out,
        "machine: {}; server: {}\n",
        report.machine, report.target
    );
    let _ = writeln!(
        out,
        "| minute | resident MiB | open fds | HTTP req/s | tasks/s | errors | status p99 server | task op p99 server | list p99 server | WS p99 | events exactly once | alerts fired |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    let p99 = |step: &Step, class: Class| step.classes[Recorder::index(class)].server.p99_ms;
    for m in &report.minutes {
        let v = &m.step.websocket.verdict;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.0} | {:.1} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {} | {} |",
            m.minute,
            m.rss_bytes
                .map_or("n/a".into(), |b| format!("{:.1}", b as f64 / 1048576.0)),
            m.open_fds.map_or("n/a".into(), |f| f.to_string()),
            m.step.http_requests_per_second,
            m.step.tasks_completed_per_second,
            m.step.errors,
            p99(&m.step, Class::StatusQuery),
            p99(&m.step, Class::TaskOperation),
            p99(&m.step, Class::ContextList),
            m.step.websocket.delivery.p99_ms,
            if v.is_exact() && m.step.websocket.incomplete == 0 {
                format!("{} of {}", v.delivered, v.expected)
            } else {
                format!("NO: {v:?}")
            },
            if m.alerts_fired.is_empty() {
                "none".into()
            } else {
                m.alerts_fired.join(", ")
            }
        );
    }
    let _ = writeln!(out);
    render_verdicts(&mut out, "soak", &report.verdicts);
    let _ = writeln!(
        out,
        "\nsoak {}; store consistent afterwards: {}",
        if report.clean { "clean" } else { "NOT clean" },
        report
            .consistent
            .map_or("not checked (--url)", |c| if c { "yes" } else { "NO" })
    );
    out
}
