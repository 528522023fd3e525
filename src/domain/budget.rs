//! Budgets: a limit on what a scope (everything, a project, an agent type) may spend in a window
//! (for good, a UTC day, a UTC month), in dollars, tokens or both; the state that follows from
//! what it used (ok, warning past `warn_percent`, exhausted at 100 %).

use chrono::{Datelike, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use super::usage::{NANOS_PER_USD, Tokens, UsageTotals};
use super::{AgentType, DomainError, Id, Micros};

/// What a budget limits.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum BudgetScope {
    Global,
    Project(Id),
    AgentType(AgentType),
}

impl BudgetScope {
    /// `global`, `project:{id}` or `agent_type:{name}`.
    pub fn parse(text: &str) -> Result<BudgetScope, DomainError> {
        let bad = || {
            DomainError::invalid(
                "scope",
                format!("`{text}` is not global, project:{{id}} or agent_type:{{name}}"),
            )
        };
        if text == "global" {
            return Ok(BudgetScope::Global);
        }
        let (kind, name) = text.split_once(':').ok_or_else(bad)?;
        match kind {
            "project" => Id::parse(name).map(BudgetScope::Project).ok_or_else(bad),
            "agent_type" => AgentType::parse(name)
                .map(BudgetScope::AgentType)
                .map_err(|_| bad()),
            _ => Err(bad()),
        }
    }

    /// The canonical text, the budget's key.
    pub fn key(&self) -> String {
        match self {
            BudgetScope::Global => "global".into(),
            BudgetScope::Project(id) => format!("project:{id}"),
            BudgetScope::AgentType(name) => format!("agent_type:{name}"),
        }
    }

    /// Whether a task of this project and agent type is within the scope.
    pub fn covers(&self, project: &Id, agent: &AgentType) -> bool {
        match self {
            BudgetScope::Global => true,
            BudgetScope::Project(p) => p == project,
            BudgetScope::AgentType(a) => a == agent,
        }
    }

    /// The scopes over a task of this project and agent type, as keys.
    pub fn keys_over(project: &Id, agent: &AgentType) -> [String; 3] {
        [
            BudgetScope::Global.key(),
            BudgetScope::Project(*project).key(),
            BudgetScope::AgentType(agent.clone()).key(),
        ]
    }
}

/// The window a budget's use is counted in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Window {
    /// For good: what the scope ever spent.
    Total,
    /// A UTC day.
    Day,
    /// A UTC calendar month.
    Month,
}

impl Window {
    pub const NAMES: [&'static str; 3] = ["total", "day", "month"];

    pub fn parse(text: &str) -> Result<Window, DomainError> {
        match text {
            "total" => Ok(Window::Total),
            "day" => Ok(Window::Day),
            "month" => Ok(Window::Month),
            _ => Err(DomainError::invalid(
                "window",
                format!("`{text}` is not one of total, day, month"),
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Window::Total => "total",
            Window::Day => "day",
            Window::Month => "month",
        }
    }

    /// The window holding `at`: its start and its end (`None` for `Total`, which never ends).
    pub fn bounds(self, at: Micros) -> (Micros, Option<Micros>) {
        const DAY: Micros = 86_400_000_000;
        match self {
            Window::Total => (Micros::MIN, None),
            Window::Day => {
                let start = at.div_euclid(DAY) * DAY;
                (start, Some(start + DAY))
            }
            Window::Month => {
                let t = Utc.timestamp_micros(at).single().unwrap_or_default();
                let first = |y: i32, m: u32| {
                    Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0)
                        .single()
                        .map_or(0, |d| d.timestamp_micros())
                };
                let (y, m) = (t.year(), t.month());
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                (first(y, m), Some(first(ny, nm)))
            }
        }
    }
}

/// Where a budget stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BudgetState {
    Ok,
    /// Used at least `warn_percent` of a limit.
    Warning,
    /// Used all of a limit: the scope's work is held.
    Exhausted,
}

impl BudgetState {
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetState::Ok => "ok",
            BudgetState::Warning => "warning",
            BudgetState::Exhausted => "exhausted",
        }
    }
}

/// A budget as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    pub scope: BudgetScope,
    pub max_cost_nanos: Option<u64>,
    pub max_tokens: Option<u64>,
    pub window: Window,
    pub warn_percent: u8,
    pub created_at: Micros,
    pub updated_at: Micros,
    /// The start of the window `used` counts.
    pub window_start: Micros,
    pub used: UsageTotals,
    pub state: BudgetState,
}

/// Most dollars a budget may allow.
pub const MAX_BUDGET_USD: f64 = 1e9;

impl Budget {
    /// Checks a budget's limits: at least one, each positive.
    pub fn limits(
        max_cost_usd: Option<f64>,
        max_tokens: Option<u64>,
        warn_percent: Option<u64>,
    ) -> Result<(Option<u64>, Option<u64>, u8), DomainError> {
        let cost = match max_cost_usd {
            None => None,
            Some(c) if c.is_finite() && c > 0.0 && c <= MAX_BUDGET_USD => {
                Some((c * NANOS_PER_USD).round() as u64)
            }
            Some(_) => {
                return Err(DomainError::invalid(
                    "max_cost_usd",
                    format!("a number of dollars above 0, at most {MAX_BUDGET_USD}"),
                ));
            }
        };
        if max_tokens == Some(0) {
            return Err(DomainError::invalid("max_tokens", "at least 1"));
        }
        if cost.is_none() && max_tokens.is_none() {
            return Err(DomainError::invalid(
                "max_cost_usd",
                "a budget needs max_cost_usd, max_tokens or both",
            ));
        }
        let warn = match warn_percent {
            None => 80,
            Some(p) if (1..=100).contains(&p) => p as u8,
            Some(_) => {
                return Err(DomainError::invalid(
                    "warn_percent",
                    "a whole number from 1 to 100",
                ));
            }
        };
        Ok((cost, max_tokens, warn))
    }

    /// The larger of the used shares of its limits (1.0 is all of one).
    pub fn ratio(&self) -> f64 {
        let cost = self
            .max_cost_nanos
            .map_or(0.0, |m| self.used.cost_nanos as f64 / m as f64);
        let tokens = self
            .max_tokens
            .map_or(0.0, |m| self.used.tokens.total() as f64 / m as f64);
        cost.max(tokens)
    }

    /// The state its use puts it in.
    pub fn evaluate(&self) -> BudgetState {
        let exhausted = self
            .max_cost_nanos
            .is_some_and(|m| self.used.cost_nanos >= m)
            || self
                .max_tokens
                .is_some_and(|m| self.used.tokens.total() >= m);
        if exhausted {
            BudgetState::Exhausted
        } else if self.ratio() * 100.0 >= f64::from(self.warn_percent) {
            BudgetState::Warning
        } else {
            BudgetState::Ok
        }
    }

    /// Whether the window `used` counts has ended by `now`.
    pub fn window_over(&self, now: Micros) -> bool {
        let (_, end) = self.window.bounds(self.window_start);
        end.is_some_and(|end| now >= end)
    }

    /// The state as of `now`: a window that ended lifts a warning or an exhaustion.
    pub fn state_at(&self, now: Micros) -> BudgetState {
        if self.window_over(now) {
            BudgetState::Ok
        } else {
            self.state
        }
    }

    /// Counts a report at `at`, first moving to the window that holds it. Answers the state
    /// before (as of `at`) and after.
    pub fn add(
        &mut self,
        tokens: &Tokens,
        cost_nanos: u64,
        at: Micros,
    ) -> (BudgetState, BudgetState) {
        let before = self.state_at(at);
        if self.window_over(at) {
            self.window_start = self.window.bounds(at).0;
            self.used = UsageTotals::default();
        }
        self.used.add(tokens, cost_nanos);
        self.state = self.evaluate();
        (before, self.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::usage::parse_time;

    fn budget(cost: Option<f64>, tokens: Option<u64>, window: Window) -> Budget {
        let (c, t, w) = Budget::limits(cost, tokens, None).unwrap();
        Budget {
            scope: BudgetScope::Global,
            max_cost_nanos: c,
            max_tokens: t,
            window,
            warn_percent: w,
            created_at: 0,
            updated_at: 0,
            window_start: window.bounds(parse_time("2026-12-06T10:00:00Z").unwrap()).0,
            used: UsageTotals::default(),
            state: BudgetState::Ok,
        }
    }

    fn tokens(n: u64) -> Tokens {
        Tokens {
            input: n,
            ..Tokens::default()
        }
    }

    #[test]
    fn scopes_parse_and_print_canonically() {
        let id = Id::new_v7();
        assert_eq!(BudgetScope::parse("global").unwrap(), BudgetScope::Global);
        let upper = format!("project:{}", id.to_string().to_uppercase());
        assert_eq!(
            BudgetScope::parse(&upper).unwrap().key(),
            format!("project:{id}")
        );
        assert_eq!(
            BudgetScope::parse("agent_type:coder").unwrap().key(),
            "agent_type:coder"
        );
        for bad in [
            "",
            "project:nope",
            "team:x",
            "agent_type:Bad Name",
            "global:",
        ] {
            assert!(BudgetScope::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn windows_are_utc_days_and_months() {
        let t = parse_time("2026-12-31T23:59:59Z").unwrap();
        let (s, e) = Window::Day.bounds(t);
        assert_eq!(s, parse_time("2026-12-31").unwrap());
        assert_eq!(e, parse_time("2027-01-01"));
        let (s, e) = Window::Month.bounds(t);
        assert_eq!(s, parse_time("2026-12-01").unwrap());
        assert_eq!(e, parse_time("2027-01-01"));
        let (s, e) = Window::Month.bounds(parse_time("2028-02-29T12:00:00Z").unwrap());
        assert_eq!(s, parse_time("2028-02-01").unwrap());
        assert_eq!(e, parse_time("2028-03-01"));
        assert_eq!(Window::Total.bounds(t).1, None);
    }

    #[test]
    fn use_warns_then_exhausts_on_either_limit() {
        let mut b = budget(Some(1.0), Some(1000), Window::Total);
        let at = parse_time("2026-12-06T11:00:00Z").unwrap();
        assert_eq!(
            b.add(&tokens(100), 100_000_000, at),
            (BudgetState::Ok, BudgetState::Ok)
        );
        // 80 % of the dollars.
        assert_eq!(
            b.add(&tokens(100), 700_000_000, at),
            (BudgetState::Ok, BudgetState::Warning)
        );
        // The tokens run out first: 1000 of 1000.
        assert_eq!(
            b.add(&tokens(800), 0, at),
            (BudgetState::Warning, BudgetState::Exhausted)
        );
        assert!((b.ratio() - 1.0).abs() < 1e-12);
        // Tokens alone cap a budget when no cost is reported.
        let mut t = budget(None, Some(10), Window::Total);
        assert_eq!(t.add(&tokens(10), 0, at).1, BudgetState::Exhausted);
        assert!(Budget::limits(None, None, None).is_err());
        assert!(Budget::limits(Some(0.0), None, None).is_err());
        assert!(Budget::limits(Some(1.0), Some(0), None).is_err());
        assert!(Budget::limits(Some(1.0), None, Some(0)).is_err());
        assert!(Budget::limits(Some(1.0), None, Some(101)).is_err());
    }

    #[test]
    fn a_new_day_lifts_an_exhausted_daily_budget() {
        let mut b = budget(None, Some(100), Window::Day);
        let today = parse_time("2026-12-06T23:00:00Z").unwrap();
        b.add(&tokens(100), 0, today);
        assert_eq!(b.state_at(today), BudgetState::Exhausted);
        let tomorrow = parse_time("2026-12-07T00:00:00Z").unwrap();
        assert_eq!(b.state_at(tomorrow - 1), BudgetState::Exhausted);
        assert_eq!(b.state_at(tomorrow), BudgetState::Ok);
        assert_eq!(
            b.add(&tokens(5), 0, tomorrow),
            (BudgetState::Ok, BudgetState::Ok)
        );
        assert_eq!(b.used.tokens.total(), 5);
        assert_eq!(b.window_start, tomorrow);
    }
}
