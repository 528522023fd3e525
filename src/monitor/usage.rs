//! What the agents spent, as Prometheus counters: tokens by agent type, model and kind, and
//! dollars by agent type and model. The model is the ledger's label (`other` past
//! `--max-models`) and the agent type one in use, so the series are bounded. Rendered here rather
//! than through the recorder, whose counters are whole numbers: dollars are not.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use parking_lot::Mutex;

use crate::domain::usage::{NANOS_PER_USD, Tokens};

pub const TOKENS: &str = "flightdeck_usage_tokens_total";
pub const COST: &str = "flightdeck_usage_cost_usd_total";

/// One series' sums: tokens by kind (`Tokens::KINDS`), and nano-dollars.
type Sums = ([u64; 4], u64);

/// Sums since start-up per (agent type, model).
#[derive(Default)]
pub struct Meter {
    series: Mutex<BTreeMap<(String, String), Sums>>,
}

impl Meter {
    /// Counts one report that was recorded (not a repeat).
    pub fn record(&self, agent_type: &str, model: &str, tokens: &Tokens, cost_nanos: u64) {
        let mut series = self.series.lock();
        let entry = match series.get_mut(&(agent_type.to_string(), model.to_string())) {
            Some(entry) => entry,
            None => series
                .entry((agent_type.to_string(), model.to_string()))
                .or_default(),
        };
        for (sum, n) in entry.0.iter_mut().zip(tokens.array()) {
            *sum = sum.saturating_add(n);
        }
        entry.1 = entry.1.saturating_add(cost_nanos);
    }

    /// The two families in Prometheus's text format (nothing before the first report).
    pub fn render(&self, out: &mut String) {
        let series = self.series.lock();
        if series.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "# HELP {TOKENS} Model tokens the agents reported, by agent type, model and kind."
        );
        let _ = writeln!(out, "# TYPE {TOKENS} counter");
        for ((agent, model), (tokens, _)) in series.iter() {
            for (kind, n) in Tokens::KINDS.iter().zip(tokens) {
                let _ = writeln!(
                    out,
                    "{TOKENS}{{agent_type=\"{}\",model=\"{}\",kind=\"{kind}\"}} {n}",
                    escape(agent),
                    escape(model)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP {COST} Dollars the agents' model usage cost (reported or priced), by agent type and model."
        );
        let _ = writeln!(out, "# TYPE {COST} counter");
        for ((agent, model), (_, nanos)) in series.iter() {
            let _ = writeln!(
                out,
                "{COST}{{agent_type=\"{}\",model=\"{}\"}} {}",
                escape(agent),
                escape(model),
                *nanos as f64 / NANOS_PER_USD
            );
        }
    }
}

/// A label value escaped as Prometheus's text format asks.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_render_per_series_with_escaped_labels() {
        let meter = Meter::default();
        let mut out = String::new();
        meter.render(&mut out);
        assert_eq!(out, "");
        let t = Tokens {
            input: 10,
            output: 5,
            cache_read: 0,
            cache_write: 1,
        };
        meter.record("developer", "m\"1", &t, 1_500_000_000);
        meter.record("developer", "m\"1", &t, 250_000_000);
        meter.render(&mut out);
        assert!(out.contains(
            "flightdeck_usage_tokens_total{agent_type=\"developer\",model=\"m\\\"1\",kind=\"input\"} 20\n"
        ));
        assert!(out.contains(
            "flightdeck_usage_tokens_total{agent_type=\"developer\",model=\"m\\\"1\",kind=\"cache_write\"} 2\n"
        ));
        assert!(out.contains(
            "flightdeck_usage_cost_usd_total{agent_type=\"developer\",model=\"m\\\"1\"} 1.75\n"
        ));
        assert_eq!(out.matches("# TYPE").count(), 2);
    }
}
