//! Workflows: definitions stored through the API (and the read-only built-in and config file's),
//! a run started on a project, its phases, tasks, artifacts and gates, and its cancellation.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{AppState, MAX_LIMIT, require};
use crate::domain::workflow::{Definition, DefinitionBody};
use crate::domain::{DomainError, Id, format_timestamp};
use crate::http::body::{empty, json};
use crate::http::{ApiError, Request, Response, StatusCode};
use crate::json::object;
use crate::store::{ArtifactFilter, WorkflowRun, command};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Cancel {
    #[serde(default)]
    reason: Option<String>,
}

/// `{reason?}` (or no body) → 200 the run, cancelled with its open tasks and gates; 409 if it
/// is not running.
pub async fn cancel(state: &AppState, project: &str, req: Request) -> Result<Response, ApiError> {
    let project_id = require(state, project)?;
    let body: Cancel = req.optional_json(state.max_body_bytes).await?;
    let run = state
        .store
        .write(command::CancelWorkflow {
            project_id,
            reason: body.reason,
        })
        .await?;
    Ok(json(StatusCode::OK, encode(state, &run)?))
}

/// `GET /api/v1/workflows` → every definition a run can start from (at most the built-in, the
/// config file's and `Limits::WORKFLOW_DEFINITIONS`), each without its phases' instructions:
/// its phase ids and what they depend on; `GET /api/v1/workflows/{name}` has the whole.
pub fn list(state: &AppState) -> Result<Response, ApiError> {
    let all = state.store.workflow_definitions()?;
    let items: Vec<serde_json::Value> = all
        .iter()
        .map(|d| {
            let mut v = definition(d);
            let phases: Vec<serde_json::Value> = v["phases"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| serde_json::json!({"id": p["id"], "agent_type": p["agent_type"], "depends_on": p["depends_on"]}))
                .collect();
            v["phases"] = phases.into();
            v
        })
        .collect();
    Ok(json(StatusCode::OK, to_json(&items)?))
}

/// `GET /api/v1/workflows/{name}` → the definition, every default spelled out.
pub fn get_definition(state: &AppState, name: &str) -> Result<Response, ApiError> {
    let def = state
        .store
        .workflow_definition(name)?
        .ok_or_else(|| DomainError::not_found("workflow", name))?;
    Ok(json(StatusCode::OK, to_json(&definition(&def))?))
}

/// `PUT /api/v1/workflows/{name} {phases: [...]}` → 201 when new, 200 when replaced (a new
/// version) or unchanged (the same version); 409 for the built-in or the config file's; 422
/// naming the failing field.
pub async fn put(state: &AppState, name: &str, req: Request) -> Result<Response, ApiError> {
    let (body, bytes): (DefinitionBody, _) = req.json_and_bytes(state.max_body_bytes).await?;
    for (i, phase) in body.phases.iter().enumerate() {
        let field = |f: &str| format!("phases[{i}].{f}");
        super::hitl::known_keys(state, &field("gate_assignees"), &phase.gate_assignees)?;
        super::hitl::known_keys(state, &field("gate_escalate_to"), &phase.gate_escalate_to)?;
    }
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| ApiError::invalid_field("body", "is not UTF-8"))?
        .to_string();
    let outcome = state
        .store
        .write(command::PutWorkflow {
            name: name.to_string(),
            json: text,
            body,
        })
        .await?;
    let status = if outcome.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(json(status, to_json(&definition(&outcome.definition))?))
}

/// `DELETE /api/v1/workflows/{name}` → 204; runs started from it go on with their copy.
pub async fn delete(state: &AppState, name: &str) -> Result<Response, ApiError> {
    state
        .store
        .write(command::DeleteWorkflow {
            name: name.to_string(),
        })
        .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(value)
        .map_err(|e| ApiError::new(crate::http::ErrorCode::InternalError, e.to_string()))
}

fn definition(d: &Definition) -> serde_json::Value {
    let w = &d.workflow;
    let def = w.to_def();
    let mut v = serde_json::json!({
        "name": w.name,
        "version": w.version,
        "source": w.source.as_str(),
        "read_only": w.source != crate::domain::workflow::Source::Api,
        "phases": def.phases,
    });
    if w.source == crate::domain::workflow::Source::Api {
        v["created_at"] = format_timestamp(d.created_at).into();
        v["updated_at"] = format_timestamp(d.updated_at).into();
    }
    v
}

#[derive(Deserialize)]
struct Start {
    workflow: String,
    #[serde(default)]
    context: Option<Box<RawValue>>,
}

/// `{workflow, context?}` → 201 the workflow, its first phase's task created; 409 if one runs.
pub async fn start(state: &AppState, project: &str, req: Request) -> Result<Response, ApiError> {
    let project_id = require(state, project)?;
    let key = super::idempotency_key(&req);
    let (body, bytes): (Start, _) = req.json_and_bytes(state.max_body_bytes).await?;
    let context = body.context.map(|raw| String::from(Box::<str>::from(raw)));
    let command = command::StartWorkflow {
        project_id,
        workflow: body.workflow,
        context,
    };
    let route = crate::http::Route::WorkflowStart;
    let run = super::write_once(
        state,
        route,
        Some(project_id),
        key.as_ref(),
        &bytes,
        command,
    )
    .await?;
    Ok(json(StatusCode::CREATED, encode(state, &run)?))
}

pub fn get(state: &AppState, project: &str) -> Result<Response, ApiError> {
    let project_id = require(state, project)?;
    let run = state
        .store
        .workflow(&project_id)?
        .ok_or_else(|| DomainError::not_found("workflow", project_id))?;
    Ok(json(StatusCode::OK, encode(state, &run)?))
}

fn encode(state: &AppState, run: &WorkflowRun) -> Result<Vec<u8>, ApiError> {
    let mut phases = Vec::with_capacity(run.phases.len());
    let mut pending_gates: Vec<Id> = Vec::new();
    for (i, phase) in run.phases.iter().enumerate() {
        let filter = ArtifactFilter {
            artifact_type: None,
            source_agent: Some(phase.agent_type.clone()),
            summaries: true,
        };
        let artifacts: Vec<Id> = if phase.task_id.is_some() {
            state
                .store
                .project_artifacts(&run.project_id, filter, None, MAX_LIMIT)?
                .items
                .iter()
                .map(|a| a.id)
                .collect()
        } else {
            Vec::new()
        };
        if let Some(gate) = phase.gate_id {
            pending_gates.push(gate);
        }
        let produces: Vec<String> = phase
            .produces
            .iter()
            .map(|k| k.as_str().to_string())
            .collect();
        let depends_on: Vec<String> = phase
            .depends_on
            .iter()
            .filter_map(|&d| run.phases.get(d as usize).map(|p| p.id.clone()))
            .collect();
        phases.push(object(|o| {
            o.u64("index", i as u64)
                .str("id", &phase.id)
                .str("agent_type", phase.agent_type.as_str())
                .str("status", phase.status.as_str())
                .strs("depends_on", &depends_on)
                .bool("gated", phase.gated)
                .opt_id("task_id", phase.task_id)
                .opt_id("gate_request_id", phase.gate_id)
                .strs("produces", &produces)
                .ids("artifacts", &artifacts);
            if let Some((from, path)) = &phase.for_each {
                let source = run
                    .phases
                    .get(*from as usize)
                    .map_or("?", |p| p.id.as_str());
                o.str("for_each", &format!("{source}.output.{path}"))
                    .u64("items_total", phase.items.len() as u64)
                    .u64("items_done", u64::from(phase.items_done))
                    .ids("item_task_ids", &phase.items);
            }
        }));
    }
    Ok(object(|o| {
        o.id("project_id", run.project_id)
            .str("workflow", &run.workflow)
            .u64("version", u64::from(run.version))
            .str("status", run.status.as_str())
            .u64(
                "current_phase",
                crate::domain::workflow::current(run) as u64,
            )
            .opt_str("reason", run.reason.as_deref())
            .opt_raw("context", run.context.as_deref())
            .raw_array("phases", phases.iter().map(Vec::as_slice))
            .ids("pending_gates", &pending_gates)
            .timestamp("started_at", run.started_at)
            .opt_timestamp("completed_at", run.completed_at);
    }))
}

#[cfg(feature = "fuzzing")]
/// Decodes `bytes` as every request body of this resource (for the fuzzers).
pub(crate) fn decode_all(bytes: &[u8]) {
    let _ = crate::http::body::decode_json::<Start>(bytes);
    let _ = crate::http::body::decode_json::<Cancel>(bytes);
    let _ = crate::http::body::decode_json::<DefinitionBody>(bytes);
}
