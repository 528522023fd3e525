//! Queues an operator steers: every agent type's queue (`GET /api/v1/queues`), paused and resumed,
//! a concurrency limit; a project's tasks paused and resumed.

use serde_json::Value;

use super::{AppState, require};
use crate::domain::AgentType;
use crate::http::body::json;
use crate::http::{ApiError, Request, Response, StatusCode};
use crate::json::{ObjectWriter, object};
use crate::store::QueueView;
use crate::store::command::{self, QueueChange};

/// `{queues:[{agent_type, paused, pending, scheduled, working, workers_waiting,
/// oldest_pending_age_seconds, max_working}]}`, one per agent type.
pub fn list(state: &AppState) -> Result<Response, ApiError> {
    let queues = state.store.queues(crate::domain::now_micros())?;
    let held = state.store.held_by_budgets()?;
    let items: Vec<Vec<u8>> = queues
        .iter()
        .map(|q| {
            object(|o| {
                write(o, q);
                let scope = held
                    .queues
                    .iter()
                    .find(|(a, _)| *a == q.agent_type)
                    .and_then(|(_, s)| s.as_deref());
                o.opt_str("held_by_budget", scope);
            })
        })
        .collect();
    let body = object(|o| {
        o.raw_array("queues", items.iter().map(Vec::as_slice))
            .ids("projects_held_by_budget", &held.projects);
    });
    Ok(json(StatusCode::OK, body))
}

/// `POST /api/v1/queues/{agent_type}/pause` or `/resume` → 200 the queue.
pub async fn pause(state: &AppState, agent: &str, paused: bool) -> Result<Response, ApiError> {
    let agent_type: AgentType = state.store.agent_type("agent_type", agent)?;
    let change = if paused {
        QueueChange::Pause
    } else {
        QueueChange::Resume
    };
    set(state, agent_type, change).await
}

/// `PATCH /api/v1/queues/{agent_type} {"max_working": N|null}` → 200 the queue.
pub async fn update(state: &AppState, agent: &str, req: Request) -> Result<Response, ApiError> {
    let agent_type: AgentType = state.store.agent_type("agent_type", agent)?;
    let body: Value = req.json(state.max_body_bytes).await?;
    let Some(fields) = body.as_object() else {
        return Err(ApiError::invalid_field("body", "must be an object"));
    };
    if let Some(unknown) = fields.keys().find(|k| *k != "max_working") {
        return Err(ApiError::invalid_field(unknown, "unknown field"));
    }
    let limit = match fields.get("max_working") {
        None => {
            return Err(ApiError::invalid_field(
                "max_working",
                "is required (a number or null)",
            ));
        }
        Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| {
                    ApiError::invalid_field("max_working", format!("{v} is not a count or null"))
                })?,
        ),
    };
    set(state, agent_type, QueueChange::Limit(limit)).await
}

async fn set(
    state: &AppState,
    agent_type: AgentType,
    change: QueueChange,
) -> Result<Response, ApiError> {
    state
        .store
        .write(command::SetQueue {
            agent_type: agent_type.clone(),
            change,
        })
        .await?;
    let queues = state.store.queues(crate::domain::now_micros())?;
    let queue = queues
        .iter()
        .find(|q| q.agent_type == agent_type)
        .ok_or_else(|| ApiError::invalid_field("agent_type", "unknown"))?;
    Ok(json(StatusCode::OK, object(|o| write(o, queue))))
}

/// `POST /api/v1/projects/{id}/pause` or `/resume` → 200 `{project_id, paused}`.
pub async fn project(state: &AppState, id: &str, paused: bool) -> Result<Response, ApiError> {
    let project_id = require(state, id)?;
    let paused = state
        .store
        .write(command::SetProjectPaused { project_id, paused })
        .await?;
    let body = object(|o| {
        o.id("project_id", project_id).bool("paused", paused);
    });
    Ok(json(StatusCode::OK, body))
}

fn write(o: &mut ObjectWriter<'_>, q: &QueueView) {
    o.str("agent_type", q.agent_type.as_str())
        .bool("paused", q.paused)
        .u64("pending", q.pending)
        .u64("scheduled", q.scheduled)
        .u64("working", u64::from(q.working))
        .u64("workers_waiting", q.workers_waiting);
    match q.oldest_pending_age_seconds {
        Some(age) => o.f64("oldest_pending_age_seconds", age),
        None => o.null("oldest_pending_age_seconds"),
    };
    match q.max_working {
        Some(n) => o.u64("max_working", u64::from(n)),
        None => o.null("max_working"),
    };
}
