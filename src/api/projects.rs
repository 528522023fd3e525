//! Projects: create, list, get, status (BotArmy) and completion (BotArmy).

use crate::http::{Request, Response, StatusCode};
use serde::Deserialize;

use super::{AppState, Query, envelope, find, parse_id};
use crate::domain::{Limits, TaskStatus, Vocabulary, check_len};
use crate::http::ApiError;
use crate::http::body::json;
use crate::json::{ObjectWriter, object};
use crate::store::{Project, ProjectSummary, command};

#[derive(Deserialize)]
struct CreateProject {
    name: String,
    #[serde(default)]
    description: Option<String>,
}

pub async fn create(state: &AppState, req: Request) -> Result<Response, ApiError> {
    let key = super::idempotency_key(&req);
    let (body, bytes): (CreateProject, _) = req.json_and_bytes(state.max_body_bytes).await?;
    check_len("name", &body.name, Limits::NAME, true)?;
    if let Some(d) = &body.description {
        check_len("description", d, Limits::DESCRIPTION, false)?;
    }
    let command = command::CreateProject {
        name: body.name,
        description: body.description,
    };
    let route = crate::http::Route::ProjectsCreate;
    let p = super::write_once(state, route, None, key.as_ref(), &bytes, command).await?;
    Ok(json(
        StatusCode::CREATED,
        encode(&p, state.store.summary(&p.id).as_ref()),
    ))
}

pub fn list(state: &AppState, query: &Query) -> Result<Response, ApiError> {
    let page = state.store.list_projects(query.cursor(), query.limit()?)?;
    let items: Vec<Vec<u8>> = page
        .items
        .iter()
        .map(|p| encode(p, state.store.summary(&p.id).as_ref()))
        .collect();
    let (items, next) = super::fit(state, items, &page, |p| p.id);
    Ok(envelope(&items, next.as_deref()))
}

pub fn get(state: &AppState, id: &str) -> Result<Response, ApiError> {
    let project = find(state, id)?;
    let usage = state
        .store
        .usage_totals(crate::store::UsageScope::Project(project.id))?;
    let body = object(|o| {
        write_fields(o, &project, state.store.summary(&project.id).as_ref());
        o.object("usage", |u| super::usage::write_totals(u, &usage));
    });
    Ok(json(StatusCode::OK, body))
}

/// BotArmy: `{project_id, status, tasks:[{task_id, agent_type, status, created_at, updated_at}]}`,
/// every task by default; `?limit=` (and `?cursor=`) asks for one page, with `next_cursor`.
pub fn status(state: &AppState, id: &str, query: &Query) -> Result<Response, ApiError> {
    let id = parse_id("project_id", id)?;
    let body = if query.get("limit").is_some() || query.cursor().is_some() {
        state
            .store
            .project_status_page(&id, query.cursor(), query.limit()?)?
    } else {
        state.store.project_status(&id)?
    };
    match body {
        Some(bytes) => Ok(json(StatusCode::OK, bytes)),
        None => Err(crate::domain::DomainError::not_found("project", id).into()),
    }
}

/// BotArmy: `{project_id, project_name, project_status, completion_percentage, total_tasks,
/// completed_tasks, failed_tasks, pending_tasks, working_tasks, artifacts_count,
/// artifacts_available, last_updated, is_complete}`. `artifacts_available` means the project has
/// an artifact (BotArmy: its ZIP export exists, a feature flightdeck has not).
pub fn completion(state: &AppState, id: &str) -> Result<Response, ApiError> {
    let project = find(state, id)?;
    let summary = state.store.summary(&project.id).unwrap_or_default();
    let usage = state
        .store
        .usage_totals(crate::store::UsageScope::Project(project.id))?;
    let total = summary.total_tasks();
    let completed = summary.count(TaskStatus::Completed);
    let percentage = if total == 0 {
        0.0
    } else {
        (completed as f64 * 10_000.0 / total as f64).round() / 100.0
    };
    let body = object(|o| {
        o.id("project_id", project.id)
            .f64("completion_percentage", percentage)
            .u64("total_tasks", total)
            .u64("completed_tasks", completed)
            .bool("artifacts_available", summary.artifacts > 0)
            .u64("artifact_count", summary.artifacts)
            .str("status", project.status.as_str())
            .str("project_name", &project.name)
            .str("project_status", project.status.as_str())
            .u64("failed_tasks", summary.count(TaskStatus::Failed))
            .u64("pending_tasks", summary.count(TaskStatus::Pending))
            .u64("working_tasks", summary.count(TaskStatus::Working))
            .u64("artifacts_count", summary.artifacts)
            .timestamp("last_updated", project.updated_at)
            .bool(
                "is_complete",
                project.status == crate::domain::ProjectStatus::Completed,
            )
            .object("usage", |u| super::usage::write_totals(u, &usage));
    });
    Ok(json(StatusCode::OK, body))
}

fn encode(p: &Project, summary: Option<&ProjectSummary>) -> Vec<u8> {
    object(|o| write_fields(o, p, summary))
}

/// A project with its summary's counts.
fn write_fields(o: &mut ObjectWriter<'_>, p: &Project, summary: Option<&ProjectSummary>) {
    write(o, p);
    if let Some(s) = summary {
        o.object("task_counts", |c| {
            for status in TaskStatus::ALL {
                c.u64(status.as_str(), s.count(*status));
            }
        })
        .u64("total_tasks", s.total_tasks())
        .u64("artifact_count", s.artifacts)
        .u64("pending_hitl_requests", s.hitl_pending)
        .u64("latest_seq", s.latest_seq);
    }
}

fn write(o: &mut ObjectWriter<'_>, p: &Project) {
    o.id("id", p.id)
        .str("name", &p.name)
        .opt_str("description", p.description.as_deref())
        .str("status", p.status.as_str())
        .str("oversight_level", p.oversight_level.as_str())
        .timestamp("created_at", p.created_at)
        .timestamp("updated_at", p.updated_at);
}

#[cfg(feature = "fuzzing")]
/// Decodes `bytes` as every request body of this resource (for the fuzzers).
pub(crate) fn decode_all(bytes: &[u8]) {
    let _ = crate::http::body::decode_json::<CreateProject>(bytes);
}
