//! Tasks: create (BotArmy), list with filters, get, and status transitions.

use crate::http::{Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{AppState, Query, envelope, parse_id, parse_ids, parse_vocab, require};
use crate::domain::{AgentType, DomainError, Limits, TaskStatus, Vocabulary, check_len};
use crate::http::ApiError;
use crate::http::body::json;
use crate::json::object;
use crate::store::{Task, TaskFilter, command};

#[derive(Deserialize)]
struct CreateTask {
    agent_type: String,
    instructions: String,
    #[serde(default)]
    context_ids: Vec<String>,
}

pub async fn create(state: &AppState, project: &str, req: Request) -> Result<Response, ApiError> {
    let project_id = require(state, project)?;
    let body: CreateTask = req.json(state.max_body_bytes).await?;
    let agent_type: AgentType = parse_vocab("agent_type", &body.agent_type)?;
    check_len(
        "instructions",
        &body.instructions,
        Limits::INSTRUCTIONS,
        true,
    )?;
    if body.context_ids.len() > Limits::CONTEXT_IDS {
        return Err(ApiError::invalid_field(
            "context_ids",
            format!("at most {} ids", Limits::CONTEXT_IDS),
        ));
    }
    let context_ids = parse_ids("context_ids", &body.context_ids)?;
    let command = command::CreateTask {
        project_id,
        agent_type,
        instructions: body.instructions,
        context_ids,
    };
    let t = state.store.write(command).await?;
    // BotArmy's answer also names the Celery job that runs the task; flightdeck's tasks are run
    // by external workers, so there is none.
    Ok(json(
        StatusCode::CREATED,
        object(|o| {
            write(o, &t);
            o.null("celery_task_id");
        }),
    ))
}

pub fn list(state: &AppState, project: &str, query: &Query) -> Result<Response, ApiError> {
    let project_id = require(state, project)?;
    let filter = TaskFilter {
        status: query.vocab("status")?,
        agent_type: query.vocab("agent_type")?,
    };
    let page = state
        .store
        .project_tasks(&project_id, filter, query.cursor(), query.limit()?)?;
    let items: Vec<Vec<u8>> = page.items.iter().map(encode).collect();
    Ok(envelope(&items, page.next_cursor.as_deref()))
}

pub fn get(state: &AppState, id: &str) -> Result<Response, ApiError> {
    let id = parse_id("task_id", id)?;
    let task = state
        .store
        .get_task(&id)?
        .ok_or_else(|| DomainError::not_found("task", id))?;
    Ok(json(StatusCode::OK, encode(&task)))
}

#[derive(Deserialize)]
struct SetStatus {
    status: String,
    #[serde(default)]
    output: Option<Box<RawValue>>,
    #[serde(default)]
    error_message: Option<String>,
}

pub async fn set_status(state: &AppState, id: &str, req: Request) -> Result<Response, ApiError> {
    let task_id = parse_id("task_id", id)?;
    let body: SetStatus = req.json(state.max_body_bytes).await?;
    let status: TaskStatus = parse_vocab("status", &body.status)?;
    if let Some(m) = &body.error_message {
        check_len("error_message", m, Limits::ERROR_MESSAGE, false)?;
    }
    let output = body.output.map(|raw| String::from(Box::<str>::from(raw)));
    let command = command::SetTaskStatus {
        task_id,
        status,
        output,
        error_message: body.error_message,
    };
    let t = state.store.write(command).await?;
    Ok(json(StatusCode::OK, encode(&t)))
}

#[derive(Deserialize)]
struct ClaimBody {
    agent_type: String,
    worker_id: String,
    #[serde(default)]
    lease_seconds: Option<f64>,
}

/// Most a lease may be asked for: a day.
const MAX_LEASE_SECONDS: f64 = 86_400.0;

fn lease(state: &AppState, seconds: Option<f64>) -> Result<crate::domain::Micros, ApiError> {
    match seconds {
        None => Ok(state.store.task_settings().default_lease),
        Some(s) if s > 0.0 && s <= MAX_LEASE_SECONDS => Ok((s * 1e6) as crate::domain::Micros),
        Some(s) => Err(ApiError::invalid_field(
            "lease_seconds",
            format!("{s} is not a duration from 0 (exclusive) to {MAX_LEASE_SECONDS} seconds"),
        )),
    }
}

/// `{agent_type, worker_id, lease_seconds?}` → 200 the oldest pending task of that type, now
/// working for this worker, or 204 when there is none.
pub async fn claim(state: &AppState, req: Request) -> Result<Response, ApiError> {
    let body: ClaimBody = req.json(state.max_body_bytes).await?;
    let agent_type: AgentType = parse_vocab("agent_type", &body.agent_type)?;
    check_len("worker_id", &body.worker_id, Limits::NAME, true)?;
    let lease = lease(state, body.lease_seconds)?;
    let command = command::Claim {
        agent_type,
        worker_id: body.worker_id,
        lease,
    };
    match state.store.write(command).await? {
        Some(t) => Ok(json(StatusCode::OK, encode(&t))),
        None => Ok(crate::http::body::empty(StatusCode::NO_CONTENT)),
    }
}

#[derive(Deserialize, Default)]
struct HeartbeatBody {
    #[serde(default)]
    worker_id: Option<String>,
    #[serde(default)]
    lease_seconds: Option<f64>,
}

/// Extends the claim's lease from now; 409 unless the task is working (for this worker).
pub async fn heartbeat(state: &AppState, id: &str, req: Request) -> Result<Response, ApiError> {
    let task_id = parse_id("task_id", id)?;
    let body: HeartbeatBody = req.optional_json(state.max_body_bytes).await?;
    let lease = lease(state, body.lease_seconds)?;
    let command = command::Heartbeat {
        task_id,
        worker_id: body.worker_id,
        lease,
    };
    let t = state.store.write(command).await?;
    Ok(json(StatusCode::OK, encode(&t)))
}

pub(crate) fn encode(t: &Task) -> Vec<u8> {
    object(|o| write(o, t))
}

fn write(o: &mut crate::json::ObjectWriter<'_>, t: &Task) {
    o.id("task_id", t.id)
        .id("project_id", t.project_id)
        .str("agent_type", t.agent_type.as_str())
        .str("status", t.status.as_str())
        .str("instructions", &t.instructions)
        .ids("context_ids", &t.context_ids)
        .opt_raw("output", t.output.as_deref())
        .opt_str("error_message", t.error_message.as_deref())
        .u64("attempts", u64::from(t.attempts))
        .u64("failures", u64::from(t.failures))
        .opt_str("worker_id", t.worker_id.as_deref())
        .opt_timestamp("lease_expires_at", t.lease_expires_at)
        .opt_timestamp("retry_at", t.retry_at)
        .opt_timestamp("timeout_at", t.timeout_at)
        .timestamp("created_at", t.created_at)
        .timestamp("updated_at", t.updated_at)
        .opt_timestamp("started_at", t.started_at)
        .opt_timestamp("completed_at", t.completed_at);
}

/// Decodes `bytes` as every request body of this resource (for the fuzzers).
#[cfg(feature = "fuzzing")]
pub(crate) fn decode_all(bytes: &[u8]) {
    let _ = crate::http::body::decode_json::<CreateTask>(bytes);
    let _ = crate::http::body::decode_json::<SetStatus>(bytes);
    let _ = crate::http::body::decode_json::<ClaimBody>(bytes);
    let _ = crate::http::body::decode_json::<HeartbeatBody>(bytes);
}
