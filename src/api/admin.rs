//! `POST /api/v1/admin/backup`: a consistent online snapshot into `DATA_DIR/backups/`, taken in a
//! read transaction while the server keeps serving (a key with the `admin` role when keys are
//! configured).
//! `GET /api/v1/auth/whoami`: who the presented key is.

use super::AppState;
use crate::domain::now_micros;
use crate::http::ErrorCode;
use crate::http::body::json;
use crate::http::{ApiError, Response, StatusCode};
use crate::json::object;

pub async fn backup(state: &AppState) -> Result<Response, ApiError> {
    let data_dir = state.store.data_dir();
    let dir = data_dir.join("backups");
    let name = format!("flightdeck-{}.redb", now_micros());
    let path = dir.join(&name);
    let store = state.store.clone();
    let (keep, floor) = (state.backup_keep, state.health.min_free_bytes());
    let target = path.clone();
    let written = tokio::task::spawn_blocking(move || -> Result<u64, ApiError> {
        room_for_copy(&data_dir, &dir, floor, "a backup")?;
        let written = store.backup_to(&target).map_err(|e| {
            let _ = std::fs::remove_file(&target);
            ApiError::from(e)
        })?;
        prune(&dir, keep);
        Ok(written)
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

/// The error of a copy of the database that failed (a backup, a follower's snapshot).
pub(super) fn copy_failed(what: &str, e: &dyn std::fmt::Display) -> ApiError {
    tracing::warn!(error = %e, "{what} failed");
    ApiError::new(
        ErrorCode::BackupFailed,
        crate::http::error::without_paths(&e.to_string()),
    )
}

/// Makes `dir` and checks that a fresh copy of the database (at most its size) fits there
/// without leaving less free than `floor` (`--min-free-disk-mb`); `what` names the copy.
pub(super) fn room_for_copy(
    data_dir: &std::path::Path,
    dir: &std::path::Path,
    floor: u64,
    what: &str,
) -> Result<(), ApiError> {
    let failed = |e: &dyn std::fmt::Display| copy_failed(what, e);
    crate::store::private_dir(dir).map_err(|e| failed(&e))?;
    let needed = std::fs::metadata(data_dir.join(crate::store::DB_FILE))
        .map_err(|e| failed(&e))?
        .len();
    let free = fs4::available_space(dir).map_err(|e| failed(&e))?;
    if free < needed.saturating_add(floor) {
        return Err(ApiError::new(
            ErrorCode::DiskFull,
            format!(
                "{what} needs up to {needed} bytes and {free} are free: it would leave less than \
                 the {floor} bytes the server keeps free (--min-free-disk-mb)"
            ),
        ));
    }
    Ok(())
}

/// Keeps the newest `keep` backups the server wrote in `dir` (`flightdeck-<micros>.redb`);
/// other files are left alone.
fn prune(dir: &std::path::Path, keep: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut ours: Vec<(u64, std::path::PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name();
            let micros = name
                .to_str()?
                .strip_prefix("flightdeck-")?
                .strip_suffix(".redb")?
                .parse()
                .ok()?;
            Some((micros, e.path()))
        })
        .collect();
    ours.sort_unstable();
    let surplus = ours.len().saturating_sub(keep);
    for (_, old) in ours.into_iter().take(surplus) {
        if let Err(e) = std::fs::remove_file(&old) {
            tracing::warn!(error = %e, "removing an old backup failed");
        }
    }
}

/// `{keys_required, name, access, roles}`: whether the server asks for keys, the presented key's
/// name (null without keys), what it may do (`read_only` for a key without roles, else
/// `read_write`) and its roles (every role without keys). Without a valid key when keys are set,
/// the request was already answered 401.
pub fn whoami(state: &AppState, principal: Option<&crate::http::auth::Principal>) -> Response {
    use crate::http::auth::Roles;
    use crate::http::router::Role;
    let roles = match principal {
        Some(p) => p.roles,
        None if state.keys.enabled() => Roles::default(),
        None => Role::ALL.into_iter().fold(Roles::default(), Roles::with),
    };
    let names: Vec<String> = roles.names().into_iter().map(String::from).collect();
    let access = if names.is_empty() {
        "read_only"
    } else {
        "read_write"
    };
    let body = object(|o| {
        o.bool("keys_required", state.keys.enabled())
            .opt_str("name", principal.map(|p| p.name.as_str()))
            .str("access", access)
            .strs("roles", &names);
    });
    json(StatusCode::OK, body)
}
