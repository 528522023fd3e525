//! `POST /api/v1/admin/backup`: a consistent online snapshot into `DATA_DIR/backups/`, taken in a
//! read transaction while the server keeps serving (a read-write key when keys are configured).
//! `GET /api/v1/auth/whoami`: who the presented key is.

use super::AppState;
use crate::domain::now_micros;
use crate::http::ErrorCode;
use crate::http::body::json;
use crate::http::{ApiError, Response, StatusCode};
use crate::json::object;

pub async fn backup(state: &AppState) -> Result<Response, ApiError> {
    let dir = state.store.data_dir().join("backups");
    let name = format!("flightdeck-{}.redb", now_micros());
    let path = dir.join(&name);
    let store = state.store.clone();
    let target = path.clone();
    let written = tokio::task::spawn_blocking(move || {
        crate::store::private_dir(&dir)?;
        store.backup_to(&target)
    })
    .await
    .map_err(|e| ApiError::new(ErrorCode::BackupFailed, e.to_string()))??;
    let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let body = object(|o| {
        // Relative to the data directory: an answer names no absolute path.
        o.str("path", &format!("backups/{name}"))
            .str("file", &name)
            .u64("entries", written)
            .u64("bytes", bytes);
    });
    Ok(json(StatusCode::CREATED, body))
}

/// `{keys_required, name, access}`: whether the server asks for keys, the presented key's name
/// (null without keys) and what it may do (`read_write` or `read_only`). Without a valid key when
/// keys are set, the request was already answered 401.
pub fn whoami(state: &AppState, principal: Option<&crate::http::auth::Principal>) -> Response {
    use crate::http::auth::Access;
    let access = match principal.map(|p| p.access) {
        Some(Access::ReadOnly) => "read_only",
        _ => "read_write",
    };
    let body = object(|o| {
        o.bool("keys_required", state.keys.enabled())
            .opt_str("name", principal.map(|p| p.name.as_str()))
            .str("access", access);
    });
    json(StatusCode::OK, body)
}
