//! The context store: artifacts created, read (cached encoded), updated, deleted, listed and
//! fetched in batches.

use crate::http::{Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{AppState, Query, bare_list, parse_id, parse_ids, require};
use crate::domain::{AgentType, ArtifactType, DomainError, Limits};
use crate::http::ApiError;
use crate::http::body::json;
use crate::json::{ObjectWriter, object};
use crate::store::{Artifact, ArtifactFilter, command};

#[derive(Deserialize)]
struct CreateArtifact {
    project_id: String,
    source_agent: String,
    artifact_type: String,
    content: Box<RawValue>,
    #[serde(default)]
    metadata: Option<Box<RawValue>>,
}

fn raw_text(raw: Box<RawValue>) -> String {
    String::from(Box::<str>::from(raw))
}

pub async fn create(state: &AppState, req: Request) -> Result<Response, ApiError> {
    let key = super::idempotency_key(&req);
    let (body, bytes): (CreateArtifact, _) = req.json_and_bytes(state.max_body_bytes).await?;
    let project_id = parse_id("project_id", &body.project_id).map_err(|_| {
        ApiError::invalid_field("project_id", format!("`{}` is not a UUID", body.project_id))
    })?;
    let source_agent: AgentType = state.store.agent_type("source_agent", &body.source_agent)?;
    let artifact_type: ArtifactType = state
        .store
        .artifact_type("artifact_type", &body.artifact_type)?;
    let command = command::CreateArtifact {
        project_id,
        source_agent,
        artifact_type,
        content: raw_text(body.content),
        metadata: body.metadata.map(raw_text),
    };
    let route = crate::http::Route::ArtifactCreate;
    let a = super::write_once(state, route, None, key.as_ref(), &bytes, command).await?;
    Ok(json(StatusCode::CREATED, encode(&a)))
}

/// BotArmy: `{context_id, project_id, source_agent, artifact_type, content, metadata, created_at, updated_at}`.
pub fn get(state: &AppState, id: &str) -> Result<Response, ApiError> {
    let id = parse_id("context_id", id)?;
    match state.store.artifact_response(&id, encode)? {
        Some(bytes) => Ok(json(StatusCode::OK, bytes)),
        None => Err(DomainError::not_found("artifact", id).into()),
    }
}

#[derive(Deserialize)]
struct UpdateArtifact {
    #[serde(default)]
    content: Option<Box<RawValue>>,
    #[serde(default)]
    metadata: Option<Box<RawValue>>,
}

pub async fn update(state: &AppState, id: &str, req: Request) -> Result<Response, ApiError> {
    let artifact_id = parse_id("context_id", id)?;
    let body: UpdateArtifact = req.json(state.max_body_bytes).await?;
    if body.content.is_none() && body.metadata.is_none() {
        return Err(ApiError::invalid_field(
            "body",
            "give content, metadata or both",
        ));
    }
    let command = command::UpdateArtifact {
        artifact_id,
        content: body.content.map(raw_text),
        metadata: body.metadata.map(raw_text),
    };
    let a = state.store.write(command).await?;
    Ok(json(StatusCode::OK, encode(&a)))
}

pub async fn delete(state: &AppState, id: &str) -> Result<Response, ApiError> {
    let artifact_id = parse_id("context_id", id)?;
    let command = command::DeleteArtifact { artifact_id };
    let id = state.store.write(command).await?;
    Ok(json(
        StatusCode::OK,
        object(|o| {
            o.id("context_id", id).bool("deleted", true);
        }),
    ))
}

/// BotArmy: the project's artifacts as a bare array of summaries (`?include=content` adds content).
pub fn list(state: &AppState, project: &str, query: &Query) -> Result<Response, ApiError> {
    let project_id = require(state, project)?;
    let with_content = match query.get("include") {
        None => false,
        Some("content") => true,
        Some(other) => {
            return Err(ApiError::invalid_field(
                "include",
                format!("unknown value `{other}`; allowed: content"),
            ));
        }
    };
    let filter = ArtifactFilter {
        artifact_type: query.artifact_type(state, "artifact_type")?,
        source_agent: query.agent_type(state, "source_agent")?,
        summaries: !with_content,
    };
    let page =
        state
            .store
            .project_artifacts(&project_id, filter, query.cursor(), query.limit()?)?;
    let items: Vec<Vec<u8>> = page
        .items
        .iter()
        .map(|a| {
            if with_content {
                encode(a)
            } else {
                encode_summary(a)
            }
        })
        .collect();
    let (items, next) = super::fit(state, items, &page, |a| a.id);
    Ok(bare_list(&items, next.as_deref()))
}

#[derive(Deserialize)]
struct Batch {
    context_ids: Vec<String>,
}

/// `{context_ids:[…]}` → the artifacts found, in the order asked.
pub async fn batch(state: &AppState, req: Request) -> Result<Response, ApiError> {
    let body: Batch = req.json(state.max_body_bytes).await?;
    if body.context_ids.len() > Limits::BATCH_IDS {
        return Err(ApiError::invalid_field(
            "context_ids",
            format!("at most {} ids", Limits::BATCH_IDS),
        ));
    }
    let ids = parse_ids("context_ids", &body.context_ids)?;
    let (found, mut not_fetched) = state.store.artifacts_by_ids(&ids)?;
    let looked_at = &ids[..ids.len() - not_fetched.len()];
    let missing: Vec<_> = looked_at
        .iter()
        .filter(|id| !found.iter().any(|a| a.id == **id))
        .copied()
        .collect();
    // The answer stops at --max-page-bytes (the first artifact whatever its size): the ids it
    // left out are `not_fetched`, to ask for again.
    let budget = state.store.page_bytes();
    let mut items: Vec<Vec<u8>> = Vec::with_capacity(found.len());
    let mut held = 0usize;
    for (i, a) in found.iter().enumerate() {
        let item = encode(a);
        if !items.is_empty() && held.saturating_add(item.len() + 1) > budget {
            let left: Vec<crate::domain::Id> = found[i..].iter().map(|a| a.id).collect();
            not_fetched.splice(0..0, left);
            break;
        }
        held = held.saturating_add(item.len() + 1);
        items.push(item);
    }
    let body = object(|o| {
        o.raw_array("artifacts", items.iter().map(Vec::as_slice))
            .ids("missing", &missing)
            .ids("not_fetched", &not_fetched);
    });
    Ok(json(StatusCode::OK, body))
}

fn write_common(o: &mut ObjectWriter<'_>, a: &Artifact) {
    o.id("context_id", a.id)
        .id("project_id", a.project_id)
        .str("source_agent", a.source_agent.as_str())
        .str("artifact_type", a.artifact_type.as_str());
}

pub(crate) fn encode(a: &Artifact) -> Vec<u8> {
    object(|o| {
        write_common(o, a);
        o.raw("content", &a.content)
            .raw("metadata", a.metadata.as_deref().unwrap_or("{}"))
            .u64("version", u64::from(a.version))
            .timestamp("created_at", a.created_at)
            .timestamp("updated_at", a.updated_at);
    })
}

fn encode_summary(a: &Artifact) -> Vec<u8> {
    object(|o| {
        write_common(o, a);
        o.raw("metadata", a.metadata.as_deref().unwrap_or("{}"))
            .u64("content_bytes", a.content.len() as u64)
            .u64("version", u64::from(a.version))
            .timestamp("created_at", a.created_at)
            .timestamp("updated_at", a.updated_at);
    })
}

#[cfg(feature = "fuzzing")]
/// Decodes `bytes` as every request body of this resource (for the fuzzers).
pub(crate) fn decode_all(bytes: &[u8]) {
    let _ = crate::http::body::decode_json::<CreateArtifact>(bytes);
    let _ = crate::http::body::decode_json::<UpdateArtifact>(bytes);
    let _ = crate::http::body::decode_json::<Batch>(bytes);
}
