//! Alert rules, evaluated in-process with the states Prometheus defines: inactive → pending (the
//! condition holds, for less than `for`) → firing → resolved (the condition has not held for
//! `keep_firing_for`). Evaluation is pure: the caller passes the time and the current values.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// What a rule watches. Latencies are p99 over the rule's window, in seconds.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    StatusQueryP99,
    TaskOperationP99,
    WsDeliveryP99,
    ContextRetrievalP99,
    /// Share of HTTP responses with a 5xx status.
    ErrorRatio5xx,
    /// Slow-consumer closes over the window.
    SlowConsumerCloses,
    WriterQueueDepth,
    /// Free bytes on the data directory's disk.
    DiskFreeBytes,
    /// p99 of the time tasks waited between becoming pending and their claim, in seconds.
    QueueWaitP99,
    /// Events webhooks gave up on, kept as dead letters (all webhooks together).
    WebhookDeadLetters,
    /// Budgets at or past their warning share in their current window (warning or exhausted).
    BudgetsBurning,
    /// p99 of the write-ahead log's syncs over the rule's window, in seconds.
    WalSyncP99,
    /// On a follower, for how long it has not held all its leader had, or heard nothing from it,
    /// in seconds (0 on a leader).
    ReplicationLagSeconds,
}

/// How much an alert matters: its `severity` label at Alertmanager, in the event and the API.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    #[default]
    Warning,
    /// Also marks `/health/detailed`'s alerts component degraded while firing.
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Comparison {
    Above,
    Below,
}

/// One rule as configured (defaults from the service levels; overridable in the config file).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub name: String,
    pub signal: Signal,
    #[serde(default = "above")]
    pub comparison: Comparison,
    pub threshold: f64,
    /// The window the signal is computed over, in seconds (60 or 300 for latencies).
    #[serde(default = "default_window")]
    pub window_seconds: u64,
    /// How long the condition must hold before the alert fires.
    #[serde(default)]
    pub for_seconds: u64,
    /// How long the alert keeps firing after the condition stops holding.
    #[serde(default)]
    pub keep_firing_for_seconds: u64,
    #[serde(default)]
    pub severity: Severity,
    #[serde(default)]
    pub summary: String,
}

fn above() -> Comparison {
    Comparison::Above
}
fn default_window() -> u64 {
    60
}

impl RuleConfig {
    fn holds(&self, value: f64) -> bool {
        match self.comparison {
            Comparison::Above => value > self.threshold,
            Comparison::Below => value < self.threshold,
        }
    }
}

/// The default rules: the service levels of the original requirement
/// (`monitor::service_levels::original`), and the server's own health.
pub fn default_rules(disk_floor_bytes: u64) -> Vec<RuleConfig> {
    use super::service_levels::original;
    /// A latency rule over 60 s, firing after a minute above its threshold.
    fn latency(name: &str, signal: Signal, threshold: f64, what: &str) -> RuleConfig {
        RuleConfig {
            summary: format!("{what} p99 above {:.0} ms", threshold * 1e3),
            ..rule(name, signal, threshold, 60, 60, Severity::Warning)
        }
    }
    fn rule(
        name: &str,
        signal: Signal,
        threshold: f64,
        window_seconds: u64,
        for_seconds: u64,
        severity: Severity,
    ) -> RuleConfig {
        RuleConfig {
            name: name.into(),
            signal,
            comparison: Comparison::Above,
            threshold,
            window_seconds,
            for_seconds,
            keep_firing_for_seconds: 60,
            severity,
            summary: String::new(),
        }
    }
    vec![
        latency(
            "StatusQueryLatencyHigh",
            Signal::StatusQueryP99,
            original::STATUS_QUERY,
            "status query",
        ),
        latency(
            "TaskOperationLatencyHigh",
            Signal::TaskOperationP99,
            original::TASK_OPERATION,
            "task operation",
        ),
        latency(
            "WebSocketDeliveryLatencyHigh",
            Signal::WsDeliveryP99,
            original::WS_DELIVERY,
            "WebSocket delivery",
        ),
        latency(
            "ContextRetrievalLatencyHigh",
            Signal::ContextRetrievalP99,
            original::CONTEXT_RETRIEVAL,
            "context store retrieval",
        ),
        RuleConfig {
            summary: "more than 1 % of responses are 5xx".into(),
            ..rule(
                "ServerErrorsHigh",
                Signal::ErrorRatio5xx,
                0.01,
                300,
                60,
                Severity::Critical,
            )
        },
        RuleConfig {
            summary: "WebSocket clients were closed for falling behind".into(),
            ..rule(
                "SlowConsumersClosed",
                Signal::SlowConsumerCloses,
                0.0,
                300,
                0,
                Severity::Info,
            )
        },
        RuleConfig {
            summary: "the writer queue holds more than 1000 writes".into(),
            ..rule(
                "WriterQueueBacklog",
                Signal::WriterQueueDepth,
                1000.0,
                60,
                30,
                Severity::Warning,
            )
        },
        RuleConfig {
            summary: "tasks wait more than 60 s (p99 over 5 min) between becoming pending and \
                      their claim"
                .into(),
            ..rule(
                "QueueWaitHigh",
                Signal::QueueWaitP99,
                60.0,
                300,
                60,
                Severity::Warning,
            )
        },
        RuleConfig {
            summary: "webhooks gave up on events (dead letters kept: retry or discard them)".into(),
            ..rule(
                "WebhookDeadLetters",
                Signal::WebhookDeadLetters,
                0.0,
                60,
                0,
                Severity::Warning,
            )
        },
        RuleConfig {
            summary: "a budget used its warning share or more (GET /api/v1/budgets)".into(),
            ..rule(
                "BudgetBurnHigh",
                Signal::BudgetsBurning,
                0.0,
                60,
                0,
                Severity::Warning,
            )
        },
        RuleConfig {
            summary: "syncs of the write-ahead log take more than 50 ms (p99 over 1 min): every \
                      durable write waits for one"
                .into(),
            ..rule(
                "WalSyncSlow",
                Signal::WalSyncP99,
                0.05,
                60,
                60,
                Severity::Warning,
            )
        },
        RuleConfig {
            summary: "a follower has not held all of its leader's log for over 30 s, or streams \
                      nothing from it"
                .into(),
            ..rule(
                "ReplicationLagHigh",
                Signal::ReplicationLagSeconds,
                30.0,
                0,
                60,
                Severity::Warning,
            )
        },
        RuleConfig {
            comparison: Comparison::Below,
            summary: "free disk space below the floor".into(),
            ..rule(
                "DiskFreeLow",
                Signal::DiskFreeBytes,
                disk_floor_bytes as f64,
                60,
                0,
                Severity::Critical,
            )
        },
    ]
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Inactive,
    Pending,
    Firing,
    Resolved,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Inactive => "inactive",
            State::Pending => "pending",
            State::Firing => "firing",
            State::Resolved => "resolved",
        }
    }
}

/// A rule and where it stands. Times are seconds on the caller's clock.
#[derive(Clone, Debug)]
pub struct Rule {
    pub config: RuleConfig,
    pub state: State,
    /// When the current state began.
    pub since: f64,
    /// When the condition last started to hold.
    active_since: f64,
    /// When the condition last held.
    last_held: f64,
    pub value: f64,
    /// When the alert last started firing (Alertmanager's `startsAt`).
    pub fired_at: f64,
    /// When the receiver was last told the alert fires (`None`: not since it started firing).
    last_sent: Option<f64>,
}

/// A change of state.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Transition {
    pub rule: String,
    pub from: State,
    pub to: State,
    pub at: f64,
    pub value: f64,
    pub threshold: f64,
}

impl Rule {
    pub fn new(config: RuleConfig) -> Rule {
        Rule {
            config,
            state: State::Inactive,
            since: 0.0,
            active_since: 0.0,
            last_held: 0.0,
            value: 0.0,
            fired_at: 0.0,
            last_sent: None,
        }
    }

    /// Applies one evaluation; returns the transition it caused, if any.
    pub fn evaluate(&mut self, now: f64, value: f64) -> Option<Transition> {
        self.value = value;
        let holds = self.config.holds(value);
        if holds {
            self.last_held = now;
        }
        let next = match self.state {
            State::Inactive | State::Resolved if holds => {
                self.active_since = now;
                if self.config.for_seconds == 0 {
                    State::Firing
                } else {
                    State::Pending
                }
            }
            State::Pending if !holds => State::Inactive,
            State::Pending if now - self.active_since >= self.config.for_seconds as f64 => {
                State::Firing
            }
            State::Firing
                if !holds && now - self.last_held >= self.config.keep_firing_for_seconds as f64 =>
            {
                State::Resolved
            }
            same => same,
        };
        if next == self.state {
            return None;
        }
        let transition = Transition {
            rule: self.config.name.clone(),
            from: self.state,
            to: next,
            at: now,
            value,
            threshold: self.config.threshold,
        };
        if next == State::Firing {
            self.fired_at = now;
            self.last_sent = None;
        }
        self.state = next;
        self.since = now;
        Some(transition)
    }
}

/// What the receiver (Alertmanager) is told about one alert.
#[derive(Clone, Debug, PartialEq)]
pub struct Notification {
    pub rule: String,
    pub severity: Severity,
    pub summary: String,
    pub value: f64,
    pub threshold: f64,
    /// When the alert started firing, on the caller's clock.
    pub starts_at: f64,
    /// Until when the alert holds unless sent again: four resend intervals ahead while firing
    /// (so the receiver never resolves it on its own), the resolve time once resolved.
    pub ends_at: f64,
    pub firing: bool,
}

impl Rule {
    fn notification(&self, firing: bool, ends_at: f64) -> Notification {
        Notification {
            rule: self.config.name.clone(),
            severity: self.config.severity,
            summary: self.config.summary.clone(),
            value: self.value,
            threshold: self.config.threshold,
            starts_at: self.fired_at,
            ends_at,
            firing,
        }
    }
}

/// Every rule and the last transitions.
pub struct Alerts {
    pub rules: Vec<Rule>,
    pub history: VecDeque<Transition>,
}

/// Transitions kept for the monitoring API.
pub const HISTORY: usize = 100;

impl Alerts {
    pub fn new(configs: Vec<RuleConfig>) -> Alerts {
        Alerts {
            rules: configs.into_iter().map(Rule::new).collect(),
            history: VecDeque::new(),
        }
    }

    /// What is due to the receiver at `now`, as Prometheus does it: a firing alert when it starts
    /// firing and again every `resend` seconds, each time valid until four intervals ahead; a
    /// resolved one once, ending at the time it resolved. `transitions` are this evaluation's.
    pub fn notifications(
        &mut self,
        now: f64,
        resend: f64,
        transitions: &[Transition],
    ) -> Vec<Notification> {
        let mut out = Vec::new();
        for rule in &mut self.rules {
            match rule.state {
                State::Firing if rule.last_sent.is_none_or(|at| now - at >= resend) => {
                    rule.last_sent = Some(now);
                    out.push(rule.notification(true, now + 4.0 * resend));
                }
                State::Resolved
                    if transitions
                        .iter()
                        .any(|t| t.rule == rule.config.name && t.to == State::Resolved) =>
                {
                    rule.last_sent = None;
                    out.push(rule.notification(false, now));
                }
                _ => {}
            }
        }
        out
    }

    /// Takes new rule definitions; a rule that keeps its name keeps its state, so a changed
    /// threshold is judged at the next evaluation. Returns the resolve notifications of the
    /// rules that were firing and are gone, so the receiver does not keep them.
    pub fn replace_rules(&mut self, configs: Vec<RuleConfig>, now: f64) -> Vec<Notification> {
        let mut old = std::mem::take(&mut self.rules);
        self.rules = configs
            .into_iter()
            .map(
                |config| match old.iter().position(|r| r.config.name == config.name) {
                    Some(i) => Rule {
                        config,
                        ..old.swap_remove(i)
                    },
                    None => Rule::new(config),
                },
            )
            .collect();
        old.iter()
            .filter(|r| r.state == State::Firing)
            .map(|r| r.notification(false, now))
            .collect()
    }

    /// Evaluates every rule with `value_of(signal, window_seconds)`.
    pub fn evaluate(
        &mut self,
        now: f64,
        mut value_of: impl FnMut(Signal, u64) -> f64,
    ) -> Vec<Transition> {
        let mut out = Vec::new();
        for rule in &mut self.rules {
            let value = value_of(rule.config.signal, rule.config.window_seconds);
            if let Some(t) = rule.evaluate(now, value) {
                if self.history.len() == HISTORY {
                    self.history.pop_front();
                }
                self.history.push_back(t.clone());
                out.push(t);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use State::*;

    fn rule(for_s: u64, keep: u64) -> Rule {
        Rule::new(RuleConfig {
            name: "r".into(),
            signal: Signal::StatusQueryP99,
            comparison: Comparison::Above,
            threshold: 1.0,
            window_seconds: 60,
            for_seconds: for_s,
            keep_firing_for_seconds: keep,
            severity: Severity::Warning,
            summary: String::new(),
        })
    }

    /// Feeds (time, value) pairs and checks the state after each.
    fn check(mut r: Rule, steps: &[(f64, f64, State)]) {
        for (i, (t, v, want)) in steps.iter().enumerate() {
            r.evaluate(*t, *v);
            assert_eq!(r.state, *want, "step {i}: t={t} v={v}");
        }
    }

    #[test]
    fn pending_then_firing_after_for() {
        check(
            rule(10, 0),
            &[
                (0.0, 0.5, Inactive),
                (1.0, 2.0, Pending),
                (5.0, 2.0, Pending),
                (11.0, 2.0, Firing),
                (12.0, 0.5, Resolved),
                (13.0, 0.5, Resolved),
            ],
        );
    }

    #[test]
    fn pending_that_stops_holding_goes_back_to_inactive() {
        check(
            rule(10, 0),
            &[
                (0.0, 2.0, Pending),
                (4.0, 0.0, Inactive),
                (6.0, 2.0, Pending),
                (15.0, 2.0, Pending),
                (16.0, 2.0, Firing),
            ],
        );
    }

    #[test]
    fn zero_for_fires_at_once() {
        check(
            rule(0, 0),
            &[(0.0, 2.0, Firing), (1.0, 0.0, Resolved), (2.0, 2.0, Firing)],
        );
    }

    #[test]
    fn keep_firing_for_rides_out_flapping() {
        check(
            rule(0, 10),
            &[
                (0.0, 2.0, Firing),
                (3.0, 0.0, Firing),
                (6.0, 2.0, Firing),
                (9.0, 0.0, Firing),
                (15.0, 0.0, Firing),
                (16.0, 0.0, Resolved),
            ],
        );
    }

    #[test]
    fn a_firing_alert_is_sent_again_every_interval_and_resolved_once() {
        let mut alerts = Alerts::new(vec![rule(0, 0).config]);
        let mut sent = Vec::new();
        for t in 0..=130 {
            let now = t as f64;
            let value = if t < 100 { 2.0 } else { 0.0 };
            let transitions = alerts.evaluate(now, |_, _| value);
            for n in alerts.notifications(now, 30.0, &transitions) {
                sent.push((now, n.firing, n.ends_at, n.starts_at));
            }
        }
        assert_eq!(
            sent,
            vec![
                (0.0, true, 120.0, 0.0),
                (30.0, true, 150.0, 0.0),
                (60.0, true, 180.0, 0.0),
                (90.0, true, 210.0, 0.0),
                (100.0, false, 100.0, 0.0),
            ]
        );
        // Firing again: sent at once, with the new start.
        let transitions = alerts.evaluate(140.0, |_, _| 2.0);
        let again = alerts.notifications(140.0, 30.0, &transitions);
        assert_eq!(again.len(), 1);
        assert_eq!((again[0].starts_at, again[0].ends_at), (140.0, 260.0));
    }

    #[test]
    fn a_rule_removed_while_firing_is_resolved() {
        let mut alerts = Alerts::new(vec![rule(0, 0).config]);
        alerts.evaluate(0.0, |_, _| 2.0);
        assert_eq!(alerts.rules[0].state, Firing);
        let resolved = alerts.replace_rules(Vec::new(), 5.0);
        assert_eq!(resolved.len(), 1);
        assert_eq!((resolved[0].firing, resolved[0].ends_at), (false, 5.0));
        assert!(alerts.rules.is_empty());
    }

    #[test]
    fn below_rules_and_history() {
        let mut config = rule(0, 0).config;
        config.comparison = Comparison::Below;
        let mut alerts = Alerts::new(vec![config]);
        let t = alerts.evaluate(0.0, |_, _| 0.5);
        assert_eq!(t.len(), 1);
        assert_eq!((t[0].from, t[0].to), (Inactive, Firing));
        assert!(alerts.evaluate(1.0, |_, _| 0.5).is_empty());
        let t = alerts.evaluate(2.0, |_, _| 5.0);
        assert_eq!(t[0].to, Resolved);
        for i in 0..200 {
            alerts.evaluate(3.0 + i as f64, |_, _| if i % 2 == 0 { 0.0 } else { 5.0 });
        }
        assert_eq!(alerts.history.len(), HISTORY);
    }
}
