//! `POST /api/v1/admin/backup`: a consistent online snapshot into `DATA_DIR/backups/`, taken in a
//! read transaction while the server keeps serving (a read-write key when keys are configured).

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
        std::fs::create_dir_all(&dir)?;
        store.backup_to(&target)
    })
    .await
    .map_err(|e| ApiError::new(ErrorCode::BackupFailed, e.to_string()))??;
    let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let body = object(|o| {
        o.str("path", &path.display().to_string())
            .str("file", &name)
            .u64("entries", written)
            .u64("bytes", bytes);
    });
    Ok(json(StatusCode::CREATED, body))
}
