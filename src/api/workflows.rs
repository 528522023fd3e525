//! Workflows: start one on a project, and see its phases, tasks, artifacts and gates.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{AppState, MAX_LIMIT, require};
use crate::domain::{DomainError, Id};
use crate::http::body::json;
use crate::http::{ApiError, Request, Response, StatusCode};
use crate::json::object;
use crate::store::{ArtifactFilter, WorkflowRun, command};

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
        phases.push(object(|o| {
            o.u64("index", i as u64)
                .str("agent_type", phase.agent_type.as_str())
                .str("status", phase.status.as_str())
                .bool("gated", phase.gated)
                .opt_id("task_id", phase.task_id)
                .opt_id("gate_request_id", phase.gate_id)
                .strs("produces", &produces)
                .ids("artifacts", &artifacts);
        }));
    }
    Ok(object(|o| {
        o.id("project_id", run.project_id)
            .str("workflow", &run.workflow)
            .str(
                "status",
                if run.completed {
                    "completed"
                } else {
                    "running"
                },
            )
            .u64("current_phase", u64::from(run.current))
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
}
