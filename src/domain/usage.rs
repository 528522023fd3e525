//! What the agents spend: a worker's report of one model call (or several), its price, the
//! ledger entry it becomes and the totals kept per task, project, agent type and hour.

use super::{AgentType, DomainError, Id, Micros};
use serde::{Deserialize, Serialize};

/// Longest `report_id`, `model` and `provider`, in bytes.
pub const MAX_NAME_BYTES: usize = 128;
/// Most tokens of one kind in one report: far beyond any model call, small enough that sums of
/// a lifetime of reports stay far from `u64::MAX`.
pub const MAX_TOKENS: u64 = 1_000_000_000_000;
/// Most dollars one report may carry.
pub const MAX_COST_USD: f64 = 1_000_000.0;
/// Most reports in one request (a list riding on a heartbeat or a completion).
pub const MAX_REPORTS: usize = 100;
/// Nano-dollars in a dollar: costs are kept as whole nano-dollars, so sums are exact.
pub const NANOS_PER_USD: f64 = 1e9;

/// A worker's report of model usage, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct UsageReport {
    /// The worker's own id for this report: the same id for the same task counts once.
    pub report_id: String,
    pub model: String,
    pub provider: Option<String>,
    pub tokens: Tokens,
    /// The dollars the worker says the call cost, in nano-dollars.
    pub cost_nanos: Option<u64>,
}

/// Token counts by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tokens {
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cache_write: u64,
}

impl Tokens {
    /// The kinds in the order of `array`, as metric labels and JSON keys (without `_tokens`).
    pub const KINDS: [&'static str; 4] = ["input", "output", "cache_read", "cache_write"];

    pub fn array(&self) -> [u64; 4] {
        [self.input, self.output, self.cache_read, self.cache_write]
    }

    pub fn total(&self) -> u64 {
        self.array().iter().fold(0u64, |a, b| a.saturating_add(*b))
    }

    fn add(&mut self, other: &Tokens) {
        self.input = self.input.saturating_add(other.input);
        self.output = self.output.saturating_add(other.output);
        self.cache_read = self.cache_read.saturating_add(other.cache_read);
        self.cache_write = self.cache_write.saturating_add(other.cache_write);
    }
}

impl UsageReport {
    /// Checks a report's fields; `at` names it in errors (`usage[2].model`).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        at: &str,
        report_id: String,
        model: String,
        provider: Option<String>,
        tokens: Tokens,
        cost_usd: Option<f64>,
    ) -> Result<UsageReport, DomainError> {
        name(&format!("{at}report_id"), &report_id)?;
        name(&format!("{at}model"), &model)?;
        if let Some(p) = &provider {
            name(&format!("{at}provider"), p)?;
        }
        for (kind, n) in Tokens::KINDS.iter().zip(tokens.array()) {
            if n > MAX_TOKENS {
                return Err(DomainError::invalid(
                    format!("{at}{kind}_tokens"),
                    format!("at most {MAX_TOKENS}"),
                ));
            }
        }
        let cost_nanos = match cost_usd {
            None => None,
            Some(c) if c.is_finite() && (0.0..=MAX_COST_USD).contains(&c) => {
                Some((c * NANOS_PER_USD).round() as u64)
            }
            Some(_) => {
                return Err(DomainError::invalid(
                    format!("{at}cost_usd"),
                    format!("a number of dollars from 0 to {MAX_COST_USD}"),
                ));
            }
        };
        Ok(UsageReport {
            report_id,
            model,
            provider,
            tokens,
            cost_nanos,
        })
    }
}

/// A name a client gives: 1 to 128 bytes, no control characters.
fn name(field: &str, value: &str) -> Result<(), DomainError> {
    if value.is_empty() || value.len() > MAX_NAME_BYTES || value.chars().any(char::is_control) {
        return Err(DomainError::invalid(
            field,
            format!("1 to {MAX_NAME_BYTES} bytes without control characters"),
        ));
    }
    Ok(())
}

/// A model's price, from the config file's `[[prices]]`: USD per million tokens of each kind,
/// from `since` on (or always).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub model: String,
    #[serde(default)]
    pub input_per_million: f64,
    #[serde(default)]
    pub output_per_million: f64,
    #[serde(default)]
    pub cache_read_per_million: f64,
    #[serde(default)]
    pub cache_write_per_million: f64,
    /// A date (`2026-01-01`) or an RFC 3339 time, UTC.
    #[serde(default)]
    pub since: Option<String>,
}

/// A price, checked, with `since` as microseconds.
#[derive(Clone, Debug, PartialEq)]
pub struct PriceRule {
    pub model: String,
    /// USD per million tokens, in the order of [`Tokens::array`].
    pub per_million: [f64; 4],
    pub since: Micros,
}

impl Price {
    pub fn check(&self, at: &str) -> Result<PriceRule, String> {
        if self.model.is_empty() || self.model.len() > MAX_NAME_BYTES {
            return Err(format!("{at}.model: 1 to {MAX_NAME_BYTES} bytes"));
        }
        let per_million = [
            self.input_per_million,
            self.output_per_million,
            self.cache_read_per_million,
            self.cache_write_per_million,
        ];
        for (kind, p) in Tokens::KINDS.iter().zip(per_million) {
            if !p.is_finite() || !(0.0..=1_000_000.0).contains(&p) {
                return Err(format!(
                    "{at}.{kind}_per_million: USD from 0 to 1000000 (got {p})"
                ));
            }
        }
        let since = match &self.since {
            None => i64::MIN,
            Some(text) => parse_time(text)
                .ok_or_else(|| format!("{at}.since: a date (2026-01-01) or an RFC 3339 time"))?,
        };
        Ok(PriceRule {
            model: self.model.clone(),
            per_million,
            since,
        })
    }
}

/// A date (`2026-01-01`, midnight UTC) or an RFC 3339 time, as microseconds.
pub fn parse_time(text: &str) -> Option<Micros> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Some(t.timestamp_micros());
    }
    let date = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
    Some(date.and_hms_opt(0, 0, 0)?.and_utc().timestamp_micros())
}

/// Where an entry's cost came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CostSource {
    /// The worker said what it cost.
    Reported,
    /// Priced from its tokens by a `[[prices]]` entry.
    Priced,
    /// Neither: no cost reported and no price for the model (its tokens still count).
    Unpriced,
}

impl CostSource {
    pub fn as_str(self) -> &'static str {
        match self {
            CostSource::Reported => "reported",
            CostSource::Priced => "priced",
            CostSource::Unpriced => "unpriced",
        }
    }
}

/// The cost of a report: the reported one wins; else the price in force at `at` for its model
/// (the one with the latest `since` not after `at`).
pub fn cost(report: &UsageReport, prices: &[PriceRule], at: Micros) -> (u64, CostSource) {
    if let Some(nanos) = report.cost_nanos {
        return (nanos, CostSource::Reported);
    }
    let price = prices
        .iter()
        .filter(|p| p.model == report.model && p.since <= at)
        .max_by_key(|p| p.since);
    match price {
        Some(p) => {
            let dollars: f64 = report
                .tokens
                .array()
                .iter()
                .zip(p.per_million)
                .map(|(n, per)| *n as f64 * per / 1e6)
                .sum();
            ((dollars * NANOS_PER_USD).round() as u64, CostSource::Priced)
        }
        None => (0, CostSource::Unpriced),
    }
}

/// One report as stored: the ledger's entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UsageEntry {
    pub id: Id,
    pub task_id: Id,
    pub project_id: Id,
    pub agent_type: AgentType,
    pub worker_id: Option<String>,
    pub report_id: String,
    pub model: String,
    pub provider: Option<String>,
    pub tokens: Tokens,
    pub cost_nanos: u64,
    pub cost_source: CostSource,
    /// Reported with a lease the task no longer had (or after it ended): spent all the same.
    pub lease_lost: bool,
    pub at: Micros,
    /// Its model was past `--max-models` when it was reported: the rollups sum it as `other`.
    pub model_other: bool,
}

/// Sums of entries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageTotals {
    pub reports: u64,
    pub tokens: Tokens,
    pub cost_nanos: u64,
}

impl UsageTotals {
    pub fn add(&mut self, tokens: &Tokens, cost_nanos: u64) {
        self.reports = self.reports.saturating_add(1);
        self.tokens.add(tokens);
        self.cost_nanos = self.cost_nanos.saturating_add(cost_nanos);
    }

    pub fn merge(&mut self, other: &UsageTotals) {
        self.reports = self.reports.saturating_add(other.reports);
        self.tokens.add(&other.tokens);
        self.cost_nanos = self.cost_nanos.saturating_add(other.cost_nanos);
    }

    pub fn cost_usd(&self) -> f64 {
        self.cost_nanos as f64 / NANOS_PER_USD
    }
}

/// The hour an instant falls in, as hours since the epoch.
pub fn hour_of(at: Micros) -> u32 {
    u32::try_from(at.max(0) / 3_600_000_000).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(model: &str, tokens: Tokens, cost: Option<f64>) -> UsageReport {
        UsageReport::new("", "r1".into(), model.into(), None, tokens, cost).unwrap()
    }

    fn rule(model: &str, per_million: [f64; 4], since: Option<&str>) -> PriceRule {
        Price {
            model: model.into(),
            input_per_million: per_million[0],
            output_per_million: per_million[1],
            cache_read_per_million: per_million[2],
            cache_write_per_million: per_million[3],
            since: since.map(str::to_owned),
        }
        .check("prices[0]")
        .unwrap()
    }

    #[test]
    fn a_reported_cost_wins_over_the_price() {
        let prices = [rule("m", [3.0, 15.0, 0.3, 3.75], None)];
        let tokens = Tokens {
            input: 1000,
            ..Tokens::default()
        };
        assert_eq!(
            cost(&report("m", tokens, Some(0.5)), &prices, 0),
            (500_000_000, CostSource::Reported)
        );
    }

    #[test]
    fn tokens_are_priced_per_million_by_the_price_in_force() {
        let prices = [
            rule("m", [3.0, 15.0, 0.3, 3.75], None),
            rule("m", [1.0, 5.0, 0.1, 1.25], Some("2026-06-01")),
            rule("other", [100.0, 100.0, 100.0, 100.0], None),
        ];
        let tokens = Tokens {
            input: 1_000_000,
            output: 200_000,
            cache_read: 500_000,
            cache_write: 100_000,
        };
        // 3 + 3 + 0.15 + 0.375 dollars before June, a third of that after.
        let before = parse_time("2026-05-31T23:59:59Z").unwrap();
        assert_eq!(
            cost(&report("m", tokens, None), &prices, before),
            (6_525_000_000, CostSource::Priced)
        );
        let after = parse_time("2026-06-01").unwrap();
        assert_eq!(
            cost(&report("m", tokens, None), &prices, after),
            (2_175_000_000, CostSource::Priced)
        );
        assert_eq!(
            cost(&report("unknown", tokens, None), &prices, after),
            (0, CostSource::Unpriced)
        );
    }

    #[test]
    fn bad_reports_name_their_field() {
        let err = |r: Result<UsageReport, DomainError>| r.unwrap_err().to_string();
        let t = Tokens::default();
        assert!(
            err(UsageReport::new(
                "usage[1].",
                String::new(),
                "m".into(),
                None,
                t,
                None
            ))
            .starts_with("usage[1].report_id:")
        );
        assert!(
            err(UsageReport::new(
                "",
                "r".into(),
                "m\n".into(),
                None,
                t,
                None
            ))
            .starts_with("model:")
        );
        let huge = Tokens {
            output: MAX_TOKENS + 1,
            ..t
        };
        assert!(
            err(UsageReport::new(
                "",
                "r".into(),
                "m".into(),
                None,
                huge,
                None
            ))
            .starts_with("output_tokens:")
        );
        for bad in [-0.01, f64::NAN, f64::INFINITY, MAX_COST_USD * 2.0] {
            assert!(
                err(UsageReport::new(
                    "",
                    "r".into(),
                    "m".into(),
                    None,
                    t,
                    Some(bad)
                ))
                .starts_with("cost_usd:")
            );
        }
    }

    #[test]
    fn a_bad_price_is_refused_with_its_place() {
        let mut p = Price {
            model: "m".into(),
            input_per_million: -1.0,
            output_per_million: 0.0,
            cache_read_per_million: 0.0,
            cache_write_per_million: 0.0,
            since: None,
        };
        assert!(
            p.check("prices[3]")
                .unwrap_err()
                .starts_with("prices[3].input_per_million")
        );
        p.input_per_million = 1.0;
        p.since = Some("June".into());
        assert!(
            p.check("prices[3]")
                .unwrap_err()
                .starts_with("prices[3].since")
        );
    }

    #[test]
    fn totals_add_exactly_and_hours_count_from_the_epoch() {
        let mut t = UsageTotals::default();
        let tokens = Tokens {
            input: 1,
            output: 2,
            cache_read: 3,
            cache_write: 4,
        };
        t.add(&tokens, 100_000_000);
        t.add(&tokens, 200_000_000);
        assert_eq!(t.reports, 2);
        assert_eq!(t.tokens.array(), [2, 4, 6, 8]);
        assert_eq!(t.tokens.total(), 20);
        assert!((t.cost_usd() - 0.3).abs() < 1e-12);
        assert_eq!(hour_of(3_600_000_000 * 5 + 1), 5);
        assert_eq!(hour_of(-1), 0);
    }
}
