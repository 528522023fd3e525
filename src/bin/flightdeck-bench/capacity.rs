//! `--find-capacity`: how much load one machine carries within the service levels. The offered
//! load is the scenario's rates times a factor; each step runs the workflow mix, steady (the
//! planners keep giving the projects work), for a fixed time with the WebSocket clients
//! subscribed, and is judged against the service levels of a workflow phase (`phase_verdicts`)
//! plus "no errors". The factor grows by [`GROWTH`] while every level holds; once one breaks the
//! search narrows between the highest load that held and the lowest that broke until they are
//! within [`RESOLUTION`]; when the first step already breaks it halves down to [`LOWEST`].

use crate::http::Client;
use crate::pace::Rates;
use crate::process::Target;
use crate::recorder::Recorder;
use crate::report::{ClassRow, ServerFigures, Verdict, machine, phase_verdicts};
use crate::roles::latest_seq;
use crate::run::{Prepared, Setup, finish_target, set_up, subscribe, workflow_phase};
use crate::stats::Samples;
use crate::ws::WsReport;
use crate::{BenchArgs, Class, Scenario, ScenarioName};
use serde::Serialize;
use std::path::Path;

/// The factor of each step over the last that held, while none has broken.
pub(super) const GROWTH: f64 = 1.5;
/// The search ends when the lowest load that broke is within this ratio of the highest that held.
pub(super) const RESOLUTION: f64 = 1.2;
/// The lowest factor tried when even the scenario's own rates break a level.
pub(super) const LOWEST: f64 = 1.0 / 16.0;

/// One step of the search.
#[derive(Clone, Debug, Serialize)]
pub struct Step {
    pub factor: f64,
    pub offered: Rates,
    pub seconds: f64,
    pub http_requests_per_second: f64,
    pub tasks_completed_per_second: f64,
    /// The server's CPU time during the step over its length: cores in use.
    pub server_cores: Option<f64>,
    pub classes: Vec<ClassRow>,
    pub websocket: WsReport,
    pub errors: u64,
    pub verdicts: Vec<Verdict>,
    pub met: bool,
}

impl Step {
    /// The load it offered and carried, as the report words it.
    fn load(&self) -> String {
        format!(
            "{:.3} x the scenario's rates ({:.0} status-client requests/s, {:.0} claim attempts/s, {:.0} reviews/s; {:.0} HTTP requests/s, {:.1} tasks/s)",
            self.factor,
            self.offered.status,
            self.offered.tasks,
            self.offered.review,
            self.http_requests_per_second,
            self.tasks_completed_per_second
        )
    }

    /// Whether every level held but those named in `excluded`.
    pub fn met_without(&self, excluded: &[String]) -> bool {
        self.verdicts
            .iter()
            .all(|v| v.met || excluded.contains(&v.what))
    }

    /// The levels this step missed, as "what: measured (target)".
    pub fn broken(&self) -> Vec<String> {
        self.verdicts
            .iter()
            .filter(|v| !v.met)
            .map(|v| format!("{}: {} (target {})", v.what, v.measured, v.target))
            .collect()
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct CapacityReport {
    /// The scenario, with its base rates (factor 1).
    pub scenario: Scenario,
    pub machine: String,
    pub target: String,
    pub step_seconds: u64,
    pub steps: Vec<Step>,
    /// The step with the highest load at which every level held (below every step that broke).
    pub capacity: Option<usize>,
    /// The step with the lowest load at which a level broke.
    pub first_break: Option<usize>,
    /// When no load held every level: the search again without the levels that broke at the
    /// lowest load tried (the machine cannot meet them at any load), so the other levels still
    /// get their capacity.
    pub relaxed: Option<Relaxed>,
    /// `flightdeck check` on the data directory after the search (own server only).
    pub consistent: Option<bool>,
    /// Every step delivered every event exactly once, and the store is consistent after.
    pub clean: bool,
}

/// The capacity when some levels are left out.
#[derive(Clone, Debug, Serialize)]
pub struct Relaxed {
    /// The levels left out: those broken at the lowest load tried.
    pub excluded: Vec<String>,
    /// The index of the first step this search ran (those before are judged again, without the
    /// levels left out).
    pub first_step: usize,
    pub capacity: Option<usize>,
    pub first_break: Option<usize>,
}

/// The next factor to try after the steps `tried` (factor, every level met), or None when the
/// search is over (or `max_steps` are spent).
pub fn next_factor(tried: &[(f64, bool)], max_steps: usize) -> Option<f64> {
    if tried.len() >= max_steps {
        return None;
    }
    if tried.is_empty() {
        return Some(1.0);
    }
    let (held, broke) = bounds(tried);
    match (held.map(|i| tried[i].0), broke.map(|i| tried[i].0)) {
        (Some(h), None) => Some(h * GROWTH),
        (None, Some(b)) => Some(b / 2.0).filter(|f| *f >= LOWEST),
        (Some(h), Some(b)) if b / h > RESOLUTION => Some((h * b).sqrt()),
        _ => None,
    }
}

/// Among `tried`: the step of the highest load that held below every load that broke, and the
/// step of the lowest load that broke. (A step that held above one that broke is noise and does
/// not count as capacity.)
pub fn bounds(tried: &[(f64, bool)]) -> (Option<usize>, Option<usize>) {
    let broke = (0..tried.len())
        .filter(|&i| !tried[i].1)
        .min_by(|&a, &b| tried[a].0.total_cmp(&tried[b].0));
    let ceiling = broke.map_or(f64::INFINITY, |i| tried[i].0);
    let held = (0..tried.len())
        .filter(|&i| tried[i].1 && tried[i].0 < ceiling)
        .max_by(|&a, &b| tried[a].0.total_cmp(&tried[b].0));
    (held, broke)
}

/// Runs the search described by `args`.
pub(super) async fn find(args: &BenchArgs) -> Result<CapacityReport, String> {
    let Setup {
        scenario,
        exe,
        token,
        mut target,
        mut server,
        prepared,
        mut client,
    } = set_up(args).await?;
    let base = scenario
        .rates
        .ok_or("the capacity search offers fixed rates: it cannot run closed loop")?;
    let step_seconds = args.step_seconds.unwrap_or(match scenario.name {
        ScenarioName::Tiny => 3,
        ScenarioName::Seed => 20,
        ScenarioName::X100 => 30,
    });
    let runner = Runner {
        exe: &exe,
        target: &target,
        scenario: &scenario,
        token: &token,
        prepared: &prepared,
        base,
        step_seconds,
    };
    let mut steps: Vec<Step> = Vec::new();
    let mut tried = Vec::new();
    runner
        .search(&mut client, &mut steps, &mut tried, args.max_steps, |s| {
            s.met
        })
        .await?;
    let (capacity, first_break) = bounds(&tried);
    let lowest = (0..steps.len()).min_by(|&a, &b| steps[a].factor.total_cmp(&steps[b].factor));
    let relaxed = match (capacity, lowest) {
        (None, Some(lowest)) => {
            let excluded: Vec<String> = steps[lowest]
                .verdicts
                .iter()
                .filter(|v| !v.met)
                .map(|v| v.what.clone())
                .collect();
            eprintln!(
                "no load held every level; again without those broken at the lowest load: {}",
                excluded.join("; ")
            );
            let mut tried: Vec<(f64, bool)> = steps
                .iter()
                .map(|s| (s.factor, s.met_without(&excluded)))
                .collect();
            let budget = tried.len() + args.max_steps;
            let first_step = steps.len();
            runner
                .search(&mut client, &mut steps, &mut tried, budget, |s| {
                    s.met_without(&excluded)
                })
                .await?;
            let (capacity, first_break) = bounds(&tried);
            Some(Relaxed {
                excluded,
                first_step,
                capacity,
                first_break,
            })
        }
        _ => None,
    };
    finish_target(&mut target, &mut client, &mut server).await?;
    let clean = steps
        .iter()
        .all(|s| s.websocket.verdict.is_exact() && s.websocket.incomplete == 0)
        && server.consistent != Some(false);
    Ok(CapacityReport {
        machine: machine(),
        target: target.name(args),
        scenario,
        step_seconds,
        steps,
        capacity,
        first_break,
        relaxed,
        consistent: server.consistent,
        clean,
    })
}

/// What every step of one search shares.
struct Runner<'a> {
    exe: &'a Path,
    target: &'a Target,
    scenario: &'a Scenario,
    token: &'a Option<String>,
    prepared: &'a Prepared,
    /// The scenario's rates: factor 1.
    base: Rates,
    step_seconds: u64,
}

impl Runner<'_> {
    /// Runs the steps `next_factor` asks for (up to `max_steps` in `tried`), each judged by
    /// `holds`, adding them to `steps` and their outcomes to `tried`.
    async fn search(
        &self,
        client: &mut Client,
        steps: &mut Vec<Step>,
        tried: &mut Vec<(f64, bool)>,
        max_steps: usize,
        holds: impl Fn(&Step) -> bool,
    ) -> Result<(), String> {
        while let Some(factor) = next_factor(tried, max_steps) {
            let mut at = self.scenario.clone();
            at.rates = Some(self.base.scaled(factor));
            at.max_seconds = self.step_seconds;
            eprintln!(
                "capacity step {}: {factor:.3} x the scenario's rates",
                steps.len() + 1
            );
            let step = run_step(
                self.exe,
                self.target,
                &at,
                self.token,
                self.prepared,
                factor,
                client,
            )
            .await?;
            let held = holds(&step);
            match held {
                true => eprintln!("  the levels held"),
                false => eprintln!("  broke: {}", step.broken().join("; ")),
            }
            tried.push((factor, held));
            steps.push(step);
        }
        Ok(())
    }
}

/// One step: the WebSocket clients subscribed from the current seq, the steady workflow mix at
/// `scenario`'s rates for its bound, then every stream checked and the levels judged.
pub(super) async fn run_step(
    exe: &Path,
    target: &Target,
    scenario: &Scenario,
    token: &Option<String>,
    prepared: &Prepared,
    factor: f64,
    client: &mut Client,
) -> Result<Step, String> {
    let since = latest_seq(client).await?;
    let subscribers = subscribe(exe, target, scenario, token, &prepared.projects, since).await?;
    let mut figures = ServerFigures::default();
    let work = workflow_phase(
        target,
        scenario,
        token,
        prepared.clone(),
        true,
        &mut figures,
    )
    .await?;
    let websocket = subscribers.stop().await?;
    let classes: Vec<ClassRow> = Class::ALL
        .iter()
        .enumerate()
        .map(|(i, class)| ClassRow {
            class: class.name(),
            client: work.rec.client[i].clone().summary(),
            server: work.rec.server[i].clone().summary(),
        })
        .collect();
    let errors = classes.iter().map(|c| c.client.errors).sum::<u64>() + websocket.errors;
    let mut verdicts = phase_verdicts(scenario, &classes, &websocket);
    verdicts.push(Verdict {
        what: "errors (failed or unexpected answers, lost connections)".into(),
        target: "0".into(),
        measured: errors.to_string(),
        met: errors == 0,
    });
    let requests: usize = work.rec.client.iter().map(Samples::len).sum();
    let seconds = work.seconds.max(1e-6);
    Ok(Step {
        factor,
        offered: scenario.rates.expect("a step offers rates"),
        seconds: work.seconds,
        http_requests_per_second: requests as f64 / seconds,
        tasks_completed_per_second: work.tasks_completed as f64 / seconds,
        server_cores: figures.phase_cpu_seconds.map(|c| c / seconds),
        met: verdicts.iter().all(|v| v.met),
        classes,
        websocket,
        errors,
        verdicts,
    })
}

/// The search as Markdown: one row per step, then the capacity and what broke first.
pub fn render_capacity(report: &CapacityReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let s = &report.scenario;
    let base = s.rates.unwrap_or(Rates::ZERO);
    let _ = writeln!(
        out,
        "capacity search, scenario {:?}: {} projects, {} status clients, {} workers + 1 reviewer, {} WebSocket connections, {} artifacts; steps of {} s, open loop, offered load = factor x ({:.0} status-client requests/s, {:.0} claim attempts/s, {:.0} reviews/s)",
        s.name,
        s.projects,
        s.clients,
        s.workers,
        s.ws_connections,
        s.artifacts,
        report.step_seconds,
        base.status,
        base.tasks,
        base.review
    );
    let _ = writeln!(
        out,
        "machine: {}; server: {}\n",
        report.machine, report.target
    );
    let _ = writeln!(
        out,
        "| factor | offered status/s, claims/s, reviews/s | HTTP req/s | tasks/s | server cores | status p99 server | task op p99 server | list p99 server | WS delivery p99 | errors | levels |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|");
    let p99 = |step: &Step, class: Class| {
        let i = Recorder::index(class);
        format!("{:.3}", step.classes[i].server.p99_ms)
    };
    for step in &report.steps {
        let _ = writeln!(
            out,
            "| {:.3} | {:.0}, {:.0}, {:.0} | {:.0} | {:.1} | {} | {} | {} | {} | {:.3} | {} | {} |",
            step.factor,
            step.offered.status,
            step.offered.tasks,
            step.offered.review,
            step.http_requests_per_second,
            step.tasks_completed_per_second,
            step.server_cores
                .map_or("n/a".into(), |c| format!("{c:.2}")),
            p99(step, Class::StatusQuery),
            p99(step, Class::TaskOperation),
            p99(step, Class::ContextList),
            step.websocket.delivery.p99_ms,
            step.errors,
            if step.met { "all met" } else { "MISSED" }
        );
    }
    let _ = writeln!(out);
    match report.capacity.map(|i| &report.steps[i]) {
        Some(step) => {
            let _ = writeln!(
                out,
                "capacity: {}: the highest load tried at which every service level held",
                step.load()
            );
        }
        None => {
            let _ = writeln!(
                out,
                "capacity: none found: every load tried broke a service level"
            );
        }
    }
    match report.first_break.map(|i| &report.steps[i]) {
        Some(step) => {
            let _ = writeln!(out, "first to break, at {:.3} x:", step.factor);
            for why in step.broken() {
                let _ = writeln!(out, "- {why}");
            }
        }
        None => {
            let _ = writeln!(
                out,
                "nothing broke within the steps allowed (raise --max-steps)"
            );
        }
    }
    if let Some(r) = &report.relaxed {
        let _ = writeln!(
            out,
            "\nwithout the levels broken at the lowest load tried ({}):",
            r.excluded.join("; ")
        );
        match r.capacity.map(|i| &report.steps[i]) {
            Some(step) => {
                let _ = writeln!(out, "capacity: {}", step.load());
            }
            None => {
                let _ = writeln!(out, "capacity: none found");
            }
        }
        if let Some(step) = r.first_break.map(|i| &report.steps[i]) {
            let _ = writeln!(out, "first to break, at {:.3} x:", step.factor);
            for why in step
                .broken()
                .into_iter()
                .filter(|w| !r.excluded.iter().any(|e| w.starts_with(e.as_str())))
            {
                let _ = writeln!(out, "- {why}");
            }
        }
    }
    let _ = writeln!(
        out,
        "\nsearch {}; store consistent afterwards: {}",
        if report.clean {
            "clean: every step delivered every event exactly once and in order"
        } else {
            "NOT clean: events lost, duplicated or reordered in a step, or the store inconsistent"
        },
        report
            .consistent
            .map_or("not checked (--url)", |c| if c { "yes" } else { "NO" })
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the search against a machine whose capacity is `limit` (a step holds when its factor
    /// is at most `limit`); answers the factors tried.
    fn search(limit: f64, max_steps: usize) -> Vec<(f64, bool)> {
        let mut tried = Vec::new();
        while let Some(f) = next_factor(&tried, max_steps) {
            tried.push((f, f <= limit));
        }
        tried
    }

    #[test]
    fn the_search_grows_then_narrows_to_the_resolution() {
        let tried = search(3.0, 20);
        let factors: Vec<f64> = tried.iter().map(|t| t.0).collect();
        // 1, 1.5, 2.25 held; 3.375 broke; then between 2.25 and 3.375.
        assert_eq!(&factors[..4], &[1.0, 1.5, 2.25, 3.375]);
        assert!((factors[4] - (2.25f64 * 3.375).sqrt()).abs() < 1e-9);
        let (held, broke) = bounds(&tried);
        let (h, b) = (tried[held.unwrap()].0, tried[broke.unwrap()].0);
        assert!(h <= 3.0 && b > 3.0, "{tried:?}");
        assert!(b / h <= RESOLUTION, "narrowed to the resolution: {tried:?}");
    }

    #[test]
    fn the_search_halves_when_the_first_step_breaks_and_gives_up_at_the_lowest() {
        let tried = search(0.3, 20);
        let factors: Vec<f64> = tried.iter().map(|t| t.0).collect();
        assert_eq!(&factors[..3], &[1.0, 0.5, 0.25]);
        let (held, broke) = bounds(&tried);
        assert!(tried[held.unwrap()].0 <= 0.3);
        assert!(tried[broke.unwrap()].0 > 0.3);
        // Nothing holds: halving stops at LOWEST, no capacity.
        let tried = search(0.0, 20);
        assert_eq!(tried.last().unwrap().0, LOWEST);
        assert_eq!(tried.len(), 5, "1, 1/2, 1/4, 1/8, 1/16");
        assert_eq!(bounds(&tried), (None, Some(4)));
    }

    #[test]
    fn the_search_stops_at_its_step_bound_and_ignores_a_noisy_pass_above_a_break() {
        assert_eq!(search(1e9, 4).len(), 4, "never broke: stops at max_steps");
        // Held at 2 after breaking at 1.5: the capacity is the 1, below the break.
        let tried = [(1.0, true), (1.5, false), (2.0, true)];
        assert_eq!(bounds(&tried), (Some(0), Some(1)));
        assert!((next_factor(&tried, 10).unwrap() - 1.5f64.sqrt()).abs() < 1e-9);
    }
}
