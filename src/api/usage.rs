//! What the agents spend: usage reports under a task's lease (on their own route, or riding on a
//! heartbeat, a progress report or the completion), and the sums over them.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{AppState, Query, parse_id};
use crate::domain::usage::{Tokens, UsageReport, UsageTotals};
use crate::domain::{Id, format_timestamp};
use crate::http::body::json;
use crate::http::{ApiError, Request, Response, StatusCode};
use crate::json::{ObjectWriter, object};
use crate::store::command::{self, UsageRecorded};
use crate::store::{GroupBy, GroupKey, UsageQuery};

/// One report as a client sends it (flat, the names of OpenTelemetry's GenAI attributes without
/// their prefix).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReportBody {
    report_id: String,
    model: String,
    #[serde(default)]
    provider: Option<String>,
    input_tokens: u64,
    output_tokens: u64,
    #[serde(default)]
    cache_read_tokens: u64,
    #[serde(default)]
    cache_write_tokens: u64,
    #[serde(default)]
    cost_usd: Option<f64>,
}

impl ReportBody {
    fn check(self, at: &str) -> Result<UsageReport, ApiError> {
        Ok(UsageReport::new(
            at,
            self.report_id,
            self.model,
            self.provider,
            Tokens {
                input: self.input_tokens,
                output: self.output_tokens,
                cache_read: self.cache_read_tokens,
                cache_write: self.cache_write_tokens,
            },
            self.cost_usd,
        )?)
    }
}

/// `POST /api/v1/tasks/{id}/usage`: one report and the lease it is made under. The report's
/// fields are repeated rather than flattened from `ReportBody`: serde refuses unknown fields only
/// without `flatten`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PostBody {
    #[serde(default)]
    lease_id: Option<String>,
    #[serde(default)]
    worker_id: Option<String>,
    report_id: String,
    model: String,
    #[serde(default)]
    provider: Option<String>,
    input_tokens: u64,
    output_tokens: u64,
    #[serde(default)]
    cache_read_tokens: u64,
    #[serde(default)]
    cache_write_tokens: u64,
    #[serde(default)]
    cost_usd: Option<f64>,
}

/// `POST /api/v1/tasks/{id}/usage {lease_id, report_id, model, provider?, input_tokens,
/// output_tokens, cache_read_tokens?, cache_write_tokens?, cost_usd?}` → 201 with the entry and
/// the task's totals; 200 with the first entry when the task already had this `report_id`.
pub async fn post(state: &AppState, id: &str, req: Request) -> Result<Response, ApiError> {
    let task_id = parse_id("task_id", id)?;
    let body: PostBody = req.json(state.max_body_bytes).await?;
    let report = ReportBody {
        report_id: body.report_id,
        model: body.model,
        provider: body.provider,
        input_tokens: body.input_tokens,
        output_tokens: body.output_tokens,
        cache_read_tokens: body.cache_read_tokens,
        cache_write_tokens: body.cache_write_tokens,
        cost_usd: body.cost_usd,
    }
    .check("")?;
    let lease_id = body
        .lease_id
        .as_deref()
        .map(|t| parse_id("lease_id", t))
        .transpose()?;
    let done = record(state, task_id, lease_id, body.worker_id, vec![report], true).await?;
    let first = &done.recorded[0];
    let status = if first.repeated {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let body = object(|o| {
        write_entry(o, first);
        o.object("task_usage", |t| write_totals(t, &done.task_totals));
    });
    Ok(json(status, body))
}

/// The `usage` field of a heartbeat, a progress report or a completion: one report or a list.
pub(crate) fn parse_field(raw: Option<&RawValue>) -> Result<Vec<UsageReport>, ApiError> {
    let Some(raw) = raw else {
        return Ok(Vec::new());
    };
    let text = raw.get().trim_start();
    let bodies: Vec<ReportBody> = if text.starts_with('[') {
        serde_json::from_str(text).map_err(|e| ApiError::invalid_field("usage", e.to_string()))?
    } else if text == "null" {
        Vec::new()
    } else {
        vec![
            serde_json::from_str(text)
                .map_err(|e| ApiError::invalid_field("usage", e.to_string()))?,
        ]
    };
    if bodies.len() > crate::domain::usage::MAX_REPORTS {
        return Err(ApiError::invalid_field(
            "usage",
            format!("at most {} reports", crate::domain::usage::MAX_REPORTS),
        ));
    }
    bodies
        .into_iter()
        .enumerate()
        .map(|(i, b)| b.check(&format!("usage[{i}].")))
        .collect()
}

/// The answer to a worker whose task a budget holds: 409 `budget_exhausted`.
pub(crate) fn held(task: Id, held: &command::Held) -> ApiError {
    ApiError::new(
        crate::http::ErrorCode::BudgetExhausted,
        format!(
            "the budget of {} is exhausted: task {task} went back to pending; stop working on it",
            held.scope
        ),
    )
}

/// Records reports durably, then counts the new ones in the metrics. With `hold`, a budget over
/// the task that is exhausted (by these reports or before) sends the task back to pending and
/// answers 409 `budget_exhausted` once they are recorded.
pub(crate) async fn record(
    state: &AppState,
    task_id: Id,
    lease_id: Option<Id>,
    worker_id: Option<String>,
    reports: Vec<UsageReport>,
    hold: bool,
) -> Result<UsageRecorded, ApiError> {
    let done = state
        .store
        .write(command::ReportUsage {
            task_id,
            lease_id,
            worker_id,
            reports,
            hold,
        })
        .await?;
    recorded(state, task_id, done)
}

/// Records usage reports and then makes the change they rode on, in one commit: the change sees
/// what the reports did (a budget they used up). A change refused is its own answer; the reports
/// stay recorded (the money was spent).
/// `hold` as for `record`.
pub(crate) async fn record_then<C: command::Write>(
    state: &AppState,
    (task_id, lease_id, worker_id): (Id, Option<Id>, Option<String>),
    reports: Vec<UsageReport>,
    hold: bool,
    change: C,
) -> Result<C::Output, ApiError> {
    let report = command::ReportUsage {
        task_id,
        lease_id,
        worker_id,
        reports,
        hold,
    };
    let (done, changed) = state.store.write(command::Then(report, change)).await?;
    recorded(state, task_id, done)?;
    Ok(changed?)
}

/// What a commit of reports leaves to do: count them in the metrics, and refuse with 409
/// `budget_exhausted` when they used up a budget over a task they held back.
fn recorded(state: &AppState, task_id: Id, done: UsageRecorded) -> Result<UsageRecorded, ApiError> {
    for r in done.recorded.iter().filter(|r| !r.repeated) {
        state.monitor.usage.record(
            r.entry.agent_type.as_str(),
            &r.model_label,
            &r.entry.tokens,
            r.entry.cost_nanos,
        );
    }
    if let Some(h) = &done.held {
        return Err(held(task_id, h));
    }
    Ok(done)
}

fn write_entry(o: &mut ObjectWriter<'_>, r: &command::Recorded) {
    let e = &r.entry;
    o.id("usage_id", e.id)
        .id("task_id", e.task_id)
        .id("project_id", e.project_id)
        .str("agent_type", e.agent_type.as_str())
        .opt_str("worker_id", e.worker_id.as_deref())
        .str("report_id", &e.report_id)
        .str("model", &e.model)
        .opt_str("provider", e.provider.as_deref())
        .u64("input_tokens", e.tokens.input)
        .u64("output_tokens", e.tokens.output)
        .u64("cache_read_tokens", e.tokens.cache_read)
        .u64("cache_write_tokens", e.tokens.cache_write)
        .f64(
            "cost_usd",
            e.cost_nanos as f64 / crate::domain::usage::NANOS_PER_USD,
        )
        .str("cost_source", e.cost_source.as_str())
        .bool("lease_lost", e.lease_lost)
        .timestamp("reported_at", e.at)
        .bool("repeated", r.repeated);
}

/// A scope's totals as JSON fields.
pub(crate) fn write_totals(o: &mut ObjectWriter<'_>, t: &UsageTotals) {
    o.u64("reports", t.reports)
        .u64("input_tokens", t.tokens.input)
        .u64("output_tokens", t.tokens.output)
        .u64("cache_read_tokens", t.tokens.cache_read)
        .u64("cache_write_tokens", t.tokens.cache_write)
        .u64("total_tokens", t.tokens.total())
        .f64("cost_usd", t.cost_usd());
}

/// `GET /api/v1/usage?project_id=&agent_type=&model=&from=&to=&group_by=`: the totals over the
/// hours from `from` (its hour) to `to` (exclusive; its hour when it is not on one), and per
/// group.
pub fn list(state: &AppState, query: &Query) -> Result<Response, ApiError> {
    let project = match query.get("project_id") {
        Some(t) => Some(super::require(state, t)?),
        None => None,
    };
    let agent_type = match query.get("agent_type") {
        Some(t) => Some(
            crate::domain::AgentType::parse(t)
                .map_err(|e| ApiError::invalid_field("agent_type", e))?,
        ),
        None => None,
    };
    let time = |key: &str| -> Result<Option<i64>, ApiError> {
        query
            .get(key)
            .map(|t| {
                crate::domain::usage::parse_time(t).ok_or_else(|| {
                    ApiError::invalid_field(
                        key,
                        format!("`{t}` is not a date (2026-01-01) or an RFC 3339 time"),
                    )
                })
            })
            .transpose()
    };
    let (from, to) = (time("from")?, time("to")?);
    let from_hour = from.map_or(0, crate::domain::usage::hour_of);
    // `to` is exclusive: an hour that has begun before it is summed.
    let to_hour = to.map_or(u32::MAX, |t| {
        let h = crate::domain::usage::hour_of(t);
        if i64::from(h) * 3_600_000_000 < t {
            h + 1
        } else {
            h
        }
    });
    let group_by = match query.get("group_by") {
        Some(t) => Some(GroupBy::parse(t).ok_or_else(|| {
            ApiError::invalid_field(
                "group_by",
                format!("`{t}` is not one of {}", GroupBy::NAMES.join(", ")),
            )
        })?),
        None => None,
    };
    let q = UsageQuery {
        project,
        agent_type,
        model: query.get("model").map(str::to_owned),
        from_hour,
        to_hour,
        group_by,
    };
    let sums = state.store.usage_sums(&q)?.ok_or_else(|| {
        ApiError::invalid_field(
            "from",
            format!(
                "the range holds more than {} hourly rows: narrow it with from and to",
                crate::store::USAGE_MAX_ROWS
            ),
        )
    })?;
    let hour_start = |h: u32| format_timestamp(i64::from(h) * 3_600_000_000);
    let body = object(|o| {
        o.opt_id("project_id", project)
            .opt_str("agent_type", q.agent_type.as_ref().map(|a| a.as_str()))
            .opt_str("model", q.model.as_deref())
            .opt_str("from", from.map(|_| hour_start(from_hour)).as_deref())
            .opt_str("to", to.map(|_| hour_start(to_hour)).as_deref())
            .opt_str("group_by", group_by.map(|g| GroupBy::NAMES[g as usize]));
        o.object("totals", |t| write_totals(t, &sums.totals));
        let items: Vec<Vec<u8>> = sums
            .groups
            .iter()
            .map(|(key, totals)| {
                object(|g| {
                    match key {
                        GroupKey::Project(p) => g.id("project_id", *p),
                        GroupKey::Agent(a) => g.str("agent_type", a),
                        GroupKey::Model(m) => g.str("model", m),
                        GroupKey::Hour(h) if group_by == Some(GroupBy::Day) => {
                            g.str("day", &hour_start(*h)[..10])
                        }
                        GroupKey::Hour(h) => g.str("hour", &hour_start(*h)),
                    };
                    write_totals(g, totals);
                })
            })
            .collect();
        o.raw_array("groups", items.iter().map(Vec::as_slice));
    });
    Ok(json(StatusCode::OK, body))
}

/// Decodes `bytes` as every request body of this resource (for the fuzzers).
#[cfg(feature = "fuzzing")]
pub(crate) fn decode_all(bytes: &[u8]) {
    let _ = crate::http::body::decode_json::<PostBody>(bytes);
    let _ = crate::http::body::decode_json::<ReportBody>(bytes);
}
