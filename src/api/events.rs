//! The event log: `GET /api/v1/events?project_id=&since=&limit=`, frames exactly as the WebSocket
//! sends them, oldest first.

use super::{AppState, Query, envelope, parse_id};
use crate::http::ErrorCode;
use crate::http::{ApiError, Request, Response};

pub fn list(state: &AppState, query: &Query) -> Result<Response, ApiError> {
    let project = query.id("project_id")?;
    if let Some(p) = &project
        && state.store.summary(p).is_none()
    {
        return Err(crate::domain::DomainError::not_found("project", p).into());
    }
    // `cursor` (what the previous page returned) and `since` mean the same: events after that seq.
    let since = match query.cursor() {
        Some(c) => c.parse::<u64>().map_err(|_| {
            ApiError::new(
                ErrorCode::InvalidCursor,
                "the cursor is not one this server issued",
            )
        })?,
        None => query.u64("since")?.unwrap_or(0),
    };
    let (events, more) = state
        .store
        .events(project.as_ref(), since, query.limit()?)?;
    let next = if more {
        events.last().map(|(seq, _)| seq.to_string())
    } else {
        None
    };
    let items: Vec<Vec<u8>> = events
        .into_iter()
        .map(|(_, json)| json.into_bytes())
        .collect();
    Ok(envelope(&items, next.as_deref()))
}

/// `GET /ws?project_id=&since=` and `GET /ws/{project_id}?since=`: validates the subscription
/// (400 malformed id, 404 unknown project, 422 bad `since` or one beyond the latest seq), then
/// upgrades.
pub fn subscribe(
    state: &AppState,
    project: Option<&str>,
    query: &Query,
    req: Request,
) -> Result<Response, ApiError> {
    let project = match project {
        Some(text) => {
            let id = parse_id("project_id", text)?;
            if state.store.summary(&id).is_none() {
                return Err(crate::domain::DomainError::not_found("project", id).into());
            }
            Some(id)
        }
        None => None,
    };
    let since = query.u64("since")?;
    if let Some(since) = since {
        crate::ws::check_since(&state.store, since)
            .map_err(|message| ApiError::invalid_field("since", message))?;
    }
    crate::ws::upgrade(&state.ws, crate::ws::Subscription { project, since }, req)
}
