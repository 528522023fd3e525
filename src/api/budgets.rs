//! Budgets: what a scope (everything, a project, an agent type) may spend in a window, and where
//! each stands.

use serde::Deserialize;

use super::AppState;
use crate::domain::budget::{Budget, BudgetScope, BudgetState, Window};
use crate::domain::usage::{NANOS_PER_USD, UsageTotals};
use crate::domain::{Micros, format_timestamp};
use crate::http::body::{empty, json};
use crate::http::{ApiError, Request, Response, StatusCode};
use crate::json::{ObjectWriter, object};
use crate::store::command;

/// `PUT /api/v1/budgets/{scope}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutBody {
    #[serde(default)]
    max_cost_usd: Option<f64>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    window: Option<String>,
    #[serde(default)]
    warn_percent: Option<u64>,
}

/// The scope of the path (`:` may come percent-encoded).
fn scope(text: &str) -> Result<BudgetScope, ApiError> {
    let text = text.replace("%3A", ":").replace("%3a", ":");
    Ok(BudgetScope::parse(&text)?)
}

/// `PUT /api/v1/budgets/{scope} {max_cost_usd?, max_tokens?, window?, warn_percent?}` → 201 new,
/// 200 changed: the budget as it stands, its use summed from what was reported in its window.
pub async fn put(state: &AppState, param: &str, req: Request) -> Result<Response, ApiError> {
    let scope = scope(param)?;
    let body: PutBody = req.json(state.max_body_bytes).await?;
    let (max_cost_nanos, max_tokens, warn_percent) =
        Budget::limits(body.max_cost_usd, body.max_tokens, body.warn_percent)?;
    let window = match body.window.as_deref() {
        None => Window::Total,
        Some(w) => Window::parse(w)?,
    };
    let set = state
        .store
        .write(command::PutBudget {
            scope,
            max_cost_nanos,
            max_tokens,
            window,
            warn_percent,
        })
        .await?;
    let status = if set.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let now = state.store.now();
    Ok(json(status, object(|o| write(o, &set.budget, now))))
}

/// `GET /api/v1/budgets/{scope}`.
pub fn get(state: &AppState, param: &str) -> Result<Response, ApiError> {
    let scope = scope(param)?;
    let budget = state
        .store
        .budget(&scope)?
        .ok_or_else(|| crate::domain::DomainError::not_found("budget", scope.key()))?;
    let now = state.store.now();
    Ok(json(StatusCode::OK, object(|o| write(o, &budget, now))))
}

/// `GET /api/v1/budgets`: every budget, with its use, ratio and state.
pub fn list(state: &AppState) -> Result<Response, ApiError> {
    let budgets = state.store.budgets()?;
    let now = state.store.now();
    let items: Vec<Vec<u8>> = budgets
        .iter()
        .map(|b| object(|o| write(o, b, now)))
        .collect();
    Ok(json(
        StatusCode::OK,
        object(|o| {
            o.raw_array("items", items.iter().map(Vec::as_slice));
        }),
    ))
}

/// `DELETE /api/v1/budgets/{scope}` → 204; work it held is served again.
pub async fn delete(state: &AppState, param: &str) -> Result<Response, ApiError> {
    let scope = scope(param)?;
    state.store.write(command::DeleteBudget { scope }).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// A budget as of `now`: a window that ended shows the next one, unused.
fn write(o: &mut ObjectWriter<'_>, b: &Budget, now: Micros) {
    let mut shown = b.clone();
    if b.window_over(now) {
        shown.window_start = b.window.bounds(now).0;
        shown.used = UsageTotals::default();
        shown.state = BudgetState::Ok;
    }
    let (start, end) = shown.window.bounds(shown.window_start);
    o.str("scope", &shown.scope.key());
    match shown.max_cost_nanos {
        Some(m) => o.f64("max_cost_usd", m as f64 / NANOS_PER_USD),
        None => o.null("max_cost_usd"),
    };
    match shown.max_tokens {
        Some(m) => o.u64("max_tokens", m),
        None => o.null("max_tokens"),
    };
    o.str("window", shown.window.as_str())
        .u64("warn_percent", u64::from(shown.warn_percent));
    if shown.window == Window::Total {
        o.null("window_start");
    } else {
        o.str("window_start", &format_timestamp(start));
    }
    o.opt_str("window_end", end.map(format_timestamp).as_deref())
        .object("used", |u| super::usage::write_totals(u, &shown.used))
        .f64("ratio", (shown.ratio() * 10_000.0).round() / 10_000.0)
        .str("state", shown.state.as_str())
        .timestamp("created_at", shown.created_at)
        .timestamp("updated_at", shown.updated_at);
}

/// Decodes `bytes` as every request body of this resource (for the fuzzers).
#[cfg(feature = "fuzzing")]
pub(crate) fn decode_all(bytes: &[u8]) {
    let _ = crate::http::body::decode_json::<PutBody>(bytes);
}
