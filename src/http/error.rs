//! The one table that maps every failure to a status, an error code and a JSON body:
//! `{"error":{"code":"task_not_found","message":"…"}}`.

use bytes::Bytes;
use hyper::{Response, StatusCode, header};

use crate::domain::DomainError;
use crate::json::object;
use crate::store::StoreError;

/// Every error an answer can carry: its code (the `error.code` of the JSON body), its status and
/// what it means. The one place an error code is named; OpenAPI lists this table.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    MalformedJson,
    TooDeep,
    InvalidId,
    InvalidCursor,
    BodyReadFailed,
    BadWebsocketHandshake,
    MalformedMessage,
    UnknownOp,
    Unauthorized,
    Forbidden,
    SelfApproval,
    NotAnAssignee,
    OriginNotAllowed,
    HostNotAllowed,
    ProjectNotFound,
    TaskNotFound,
    ArtifactNotFound,
    HitlRequestNotFound,
    WorkflowNotFound,
    NotFound,
    RouteNotFound,
    MethodNotAllowed,
    BodyTimeout,
    InvalidTransition,
    ReadOnly,
    LeaseLost,
    TaskCancelled,
    BudgetExhausted,
    IdempotencyKeyReused,
    HitlExpired,
    PayloadTooLarge,
    UnsupportedMediaType,
    InvalidField,
    TooManyTypes,
    UpgradeRequired,
    InternalError,
    StorageError,
    BackupFailed,
    Overloaded,
    Unavailable,
    ShuttingDown,
    TooManyConnections,
    DiskFull,
    NotLeader,
    NotReplicated,
    ReplicationRefused,
    SnapshotNeeded,
}

impl ErrorCode {
    pub const ALL: &[ErrorCode] = &[
        ErrorCode::MalformedJson,
        ErrorCode::TooDeep,
        ErrorCode::InvalidId,
        ErrorCode::InvalidCursor,
        ErrorCode::BodyReadFailed,
        ErrorCode::BadWebsocketHandshake,
        ErrorCode::MalformedMessage,
        ErrorCode::UnknownOp,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::SelfApproval,
        ErrorCode::NotAnAssignee,
        ErrorCode::OriginNotAllowed,
        ErrorCode::HostNotAllowed,
        ErrorCode::ProjectNotFound,
        ErrorCode::TaskNotFound,
        ErrorCode::ArtifactNotFound,
        ErrorCode::HitlRequestNotFound,
        ErrorCode::WorkflowNotFound,
        ErrorCode::NotFound,
        ErrorCode::RouteNotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::BodyTimeout,
        ErrorCode::InvalidTransition,
        ErrorCode::ReadOnly,
        ErrorCode::LeaseLost,
        ErrorCode::TaskCancelled,
        ErrorCode::BudgetExhausted,
        ErrorCode::IdempotencyKeyReused,
        ErrorCode::HitlExpired,
        ErrorCode::PayloadTooLarge,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::InvalidField,
        ErrorCode::TooManyTypes,
        ErrorCode::UpgradeRequired,
        ErrorCode::InternalError,
        ErrorCode::StorageError,
        ErrorCode::BackupFailed,
        ErrorCode::Overloaded,
        ErrorCode::Unavailable,
        ErrorCode::ShuttingDown,
        ErrorCode::TooManyConnections,
        ErrorCode::DiskFull,
        ErrorCode::NotLeader,
        ErrorCode::NotReplicated,
        ErrorCode::ReplicationRefused,
        ErrorCode::SnapshotNeeded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MalformedJson => "malformed_json",
            ErrorCode::TooDeep => "too_deep",
            ErrorCode::InvalidId => "invalid_id",
            ErrorCode::InvalidCursor => "invalid_cursor",
            ErrorCode::BodyReadFailed => "body_read_failed",
            ErrorCode::BadWebsocketHandshake => "bad_websocket_handshake",
            ErrorCode::MalformedMessage => "malformed_message",
            ErrorCode::UnknownOp => "unknown_op",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::SelfApproval => "self_approval",
            ErrorCode::NotAnAssignee => "not_an_assignee",
            ErrorCode::OriginNotAllowed => "origin_not_allowed",
            ErrorCode::HostNotAllowed => "host_not_allowed",
            ErrorCode::ProjectNotFound => "project_not_found",
            ErrorCode::TaskNotFound => "task_not_found",
            ErrorCode::ArtifactNotFound => "artifact_not_found",
            ErrorCode::HitlRequestNotFound => "hitl_request_not_found",
            ErrorCode::WorkflowNotFound => "workflow_not_found",
            ErrorCode::NotFound => "not_found",
            ErrorCode::RouteNotFound => "route_not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::BodyTimeout => "body_timeout",
            ErrorCode::InvalidTransition => "invalid_transition",
            ErrorCode::ReadOnly => "read_only",
            ErrorCode::LeaseLost => "lease_lost",
            ErrorCode::BudgetExhausted => "budget_exhausted",
            ErrorCode::TaskCancelled => "task_cancelled",
            ErrorCode::IdempotencyKeyReused => "idempotency_key_reused",
            ErrorCode::HitlExpired => "hitl_expired",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::InvalidField => "invalid_field",
            ErrorCode::TooManyTypes => "too_many_types",
            ErrorCode::UpgradeRequired => "upgrade_required",
            ErrorCode::InternalError => "internal_error",
            ErrorCode::StorageError => "storage_error",
            ErrorCode::BackupFailed => "backup_failed",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::TooManyConnections => "too_many_connections",
            ErrorCode::DiskFull => "disk_full",
            ErrorCode::NotLeader => "not_leader",
            ErrorCode::NotReplicated => "not_replicated",
            ErrorCode::ReplicationRefused => "replication_refused",
            ErrorCode::SnapshotNeeded => "snapshot_needed",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::MalformedJson => StatusCode::BAD_REQUEST,
            ErrorCode::TooDeep => StatusCode::BAD_REQUEST,
            ErrorCode::InvalidId => StatusCode::BAD_REQUEST,
            ErrorCode::InvalidCursor => StatusCode::BAD_REQUEST,
            ErrorCode::BodyReadFailed => StatusCode::BAD_REQUEST,
            ErrorCode::BadWebsocketHandshake => StatusCode::BAD_REQUEST,
            ErrorCode::MalformedMessage => StatusCode::BAD_REQUEST,
            ErrorCode::UnknownOp => StatusCode::BAD_REQUEST,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::SelfApproval => StatusCode::FORBIDDEN,
            ErrorCode::NotAnAssignee => StatusCode::FORBIDDEN,
            ErrorCode::OriginNotAllowed => StatusCode::FORBIDDEN,
            ErrorCode::HostNotAllowed => StatusCode::FORBIDDEN,
            ErrorCode::ProjectNotFound => StatusCode::NOT_FOUND,
            ErrorCode::TaskNotFound => StatusCode::NOT_FOUND,
            ErrorCode::ArtifactNotFound => StatusCode::NOT_FOUND,
            ErrorCode::HitlRequestNotFound => StatusCode::NOT_FOUND,
            ErrorCode::WorkflowNotFound => StatusCode::NOT_FOUND,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::RouteNotFound => StatusCode::NOT_FOUND,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ErrorCode::InvalidTransition => StatusCode::CONFLICT,
            ErrorCode::ReadOnly => StatusCode::CONFLICT,
            ErrorCode::LeaseLost => StatusCode::CONFLICT,
            ErrorCode::BudgetExhausted => StatusCode::CONFLICT,
            ErrorCode::TaskCancelled => StatusCode::CONFLICT,
            ErrorCode::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::HitlExpired => StatusCode::CONFLICT,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::InvalidField => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::TooManyTypes => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::UpgradeRequired => StatusCode::UPGRADE_REQUIRED,
            ErrorCode::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::StorageError => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::BackupFailed => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::TooManyConnections => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::DiskFull => StatusCode::INSUFFICIENT_STORAGE,
            ErrorCode::NotLeader => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::NotReplicated => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::ReplicationRefused => StatusCode::FORBIDDEN,
            ErrorCode::SnapshotNeeded => StatusCode::GONE,
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            ErrorCode::MalformedJson => "the body is not valid JSON",
            ErrorCode::TooDeep => "JSON nested deeper than 64 levels",
            ErrorCode::InvalidId => "an id that is not a UUID",
            ErrorCode::InvalidCursor => "a cursor this server did not issue",
            ErrorCode::BodyReadFailed => "the body could not be read",
            ErrorCode::BadWebsocketHandshake => "a WebSocket upgrade request that is not one",
            ErrorCode::MalformedMessage => {
                "a WebSocket client message that is not JSON with an `op` and its fields \
                 (an error event on the socket; the status is never sent)"
            }
            ErrorCode::UnknownOp => {
                "a WebSocket client message with an op other than subscribe, unsubscribe, ping \
                 (an error event on the socket; the status is never sent)"
            }
            ErrorCode::Unauthorized => "no or unknown API key",
            ErrorCode::Forbidden => "the key lacks the role the route needs",
            ErrorCode::SelfApproval => {
                "the key would answer an approval about a task it claimed itself"
            }
            ErrorCode::NotAnAssignee => "the request names its assignees and the key is not one",
            ErrorCode::OriginNotAllowed => {
                "a WebSocket upgrade, or a write without API keys, from a page of another origin not in cors_origins"
            }
            ErrorCode::HostNotAllowed => {
                "without API keys, a Host that is not an IP address, localhost or in allowed_hosts"
            }
            ErrorCode::ProjectNotFound => "no project with that id",
            ErrorCode::TaskNotFound => "no task with that id",
            ErrorCode::ArtifactNotFound => "no artifact with that id",
            ErrorCode::HitlRequestNotFound => "no HITL request with that id",
            ErrorCode::WorkflowNotFound => "no workflow of that name, or none started",
            ErrorCode::NotFound => "no such thing",
            ErrorCode::RouteNotFound => "no route for the path",
            ErrorCode::MethodNotAllowed => "the path exists with other methods (see Allow)",
            ErrorCode::BodyTimeout => "the body did not arrive within --body-read-timeout-ms",
            ErrorCode::InvalidTransition => "a state change the rules do not allow",
            ErrorCode::ReadOnly => {
                "a workflow of the config file, or the built-in, changed through the API"
            }
            ErrorCode::LeaseLost => {
                "the worker's claim no longer holds the task (or it gave no lease_id): stop"
            }
            ErrorCode::TaskCancelled => "the task was cancelled while the worker held it: stop",
            ErrorCode::BudgetExhausted => {
                "a budget over the task is exhausted: the task went back to pending; stop"
            }
            ErrorCode::IdempotencyKeyReused => {
                "an Idempotency-Key already used with another request (within its lifetime)"
            }
            ErrorCode::HitlExpired => "the HITL request expired before it was answered",
            ErrorCode::PayloadTooLarge => "the body is over --max-body-bytes",
            ErrorCode::UnsupportedMediaType => {
                "a body (or, without API keys, any write) not sent as application/json"
            }
            ErrorCode::InvalidField => "a missing, ill-typed, unknown-valued or too long field",
            ErrorCode::TooManyTypes => {
                "a new agent or artifact type beyond --max-agent-types or --max-artifact-types"
            }
            ErrorCode::UpgradeRequired => "a plain request to a WebSocket route",
            ErrorCode::InternalError => "a bug: the server answered itself wrongly",
            ErrorCode::StorageError => "the store failed; nothing of the write was kept",
            ErrorCode::BackupFailed => "the backup could not be written",
            ErrorCode::Overloaded => "the writer queue is full (see Retry-After)",
            ErrorCode::Unavailable => {
                "the store is being reopened or the writer failed (see Retry-After)"
            }
            ErrorCode::ShuttingDown => "the server is shutting down",
            ErrorCode::TooManyConnections => "the connection or WebSocket limit is reached",
            ErrorCode::DiskFull => "the disk is full; nothing was stored",
            ErrorCode::NotLeader => {
                "a write sent to a follower: send it to the leader (its URL in `leader` and in the \
                 Flightdeck-Leader header)"
            }
            ErrorCode::NotReplicated => {
                "the write is on the leader, but fewer followers than --sync-replicas held it \
                 within --sync-timeout-ms: its outcome after a failover is unknown"
            }
            ErrorCode::ReplicationRefused => {
                "a replication route asked without this node's --replication-key, or on a node \
                 that has none"
            }
            ErrorCode::SnapshotNeeded => {
                "the log from the record asked for is no longer kept: start again from a snapshot"
            }
        }
    }

    /// The code of "no {kind} with that id".
    fn not_found(kind: &str) -> ErrorCode {
        match kind {
            "project" => ErrorCode::ProjectNotFound,
            "task" => ErrorCode::TaskNotFound,
            "artifact" => ErrorCode::ArtifactNotFound,
            "hitl_request" => ErrorCode::HitlRequestNotFound,
            "workflow" => ErrorCode::WorkflowNotFound,
            _ => ErrorCode::NotFound,
        }
    }
}

impl PartialEq<&str> for ErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// The header of a `not_leader` answer that names the leader's URL.
pub const LEADER_HEADER: &str = "flightdeck-leader";

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// Always `code.status()`.
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    /// For 405: the `Allow` header.
    pub allow: Option<&'static str>,
    /// For 429/503: the `Retry-After` header, in seconds.
    pub retry_after: Option<u32>,
    /// For 401: a `WWW-Authenticate: Bearer` header.
    pub www_authenticate: bool,
    /// For `not_leader`: the leader's URL, in the body's `leader` and the `Flightdeck-Leader`
    /// header.
    pub leader: Option<String>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status: code.status(),
            code,
            message: message.into(),
            allow: None,
            retry_after: None,
            www_authenticate: false,
            leader: None,
        }
    }

    /// A write sent to a follower of `leader`.
    pub fn not_leader(leader: &str) -> ApiError {
        ApiError {
            leader: Some(leader.to_owned()),
            ..ApiError::new(
                ErrorCode::NotLeader,
                format!("this node is a follower; send writes to the leader, {leader}"),
            )
        }
    }

    pub fn invalid_field(field: &str, message: impl std::fmt::Display) -> ApiError {
        ApiError::new(ErrorCode::InvalidField, format!("{field}: {message}"))
    }

    pub fn not_found_route(path: &str) -> ApiError {
        ApiError::new(ErrorCode::RouteNotFound, format!("no route for {path}"))
    }

    pub fn method_not_allowed(method: &hyper::Method, allow: &'static str) -> ApiError {
        ApiError {
            allow: Some(allow),
            ..ApiError::new(
                ErrorCode::MethodNotAllowed,
                format!("{method} is not allowed here; allowed: {allow}"),
            )
        }
    }

    /// A WebSocket upgrade from a page on an origin that is not allowed.
    pub fn origin_not_allowed(origin: &str) -> ApiError {
        ApiError::new(
            ErrorCode::OriginNotAllowed,
            format!("WebSocket connections from origin `{origin}` are not allowed (cors_origins)"),
        )
    }

    /// The JSON body: `{"error":{"code","message"}}`.
    pub fn body(&self) -> Vec<u8> {
        object(|o| {
            o.object("error", |e| {
                e.str("code", self.code.as_str())
                    .str("message", &self.message);
                if let Some(leader) = &self.leader {
                    e.str("leader", leader);
                }
            });
        })
    }

    pub fn into_response(self) -> Response<super::Body> {
        let body = self.body();
        let mut builder = Response::builder()
            .status(self.status)
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(allow) = self.allow {
            builder = builder.header(header::ALLOW, allow);
        }
        if self.www_authenticate {
            builder = builder.header(header::WWW_AUTHENTICATE, "Bearer");
        }
        if let Some(seconds) = self.retry_after {
            builder = builder.header(header::RETRY_AFTER, seconds);
        }
        if let Some(leader) = self.leader.as_deref()
            && let Ok(value) = header::HeaderValue::from_str(leader)
        {
            builder = builder.header(LEADER_HEADER, value);
        }
        builder
            .body(super::Body::new(Bytes::from(body)))
            .expect("static headers are valid")
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> ApiError {
        match &e {
            DomainError::NotFound { kind, .. } => {
                ApiError::new(ErrorCode::not_found(kind), e.to_string())
            }
            DomainError::InvalidTransition { .. } => {
                ApiError::new(ErrorCode::InvalidTransition, e.to_string())
            }
            DomainError::ReadOnly { .. } => ApiError::new(ErrorCode::ReadOnly, e.to_string()),
            DomainError::NotAnAssignee { .. } => {
                ApiError::new(ErrorCode::NotAnAssignee, e.to_string())
            }
            DomainError::TooManyTypes { .. } => {
                ApiError::new(ErrorCode::TooManyTypes, e.to_string())
            }
            DomainError::InvalidField { .. } => {
                ApiError::new(ErrorCode::InvalidField, e.to_string())
            }
            DomainError::LeaseLost { .. } => ApiError::new(ErrorCode::LeaseLost, e.to_string()),
            DomainError::TaskCancelled { .. } => {
                ApiError::new(ErrorCode::TaskCancelled, e.to_string())
            }
            DomainError::IdempotencyKeyReused { .. } => {
                ApiError::new(ErrorCode::IdempotencyKeyReused, e.to_string())
            }
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::Domain(d) => d.into(),
            StoreError::InvalidCursor => ApiError::new(
                ErrorCode::InvalidCursor,
                "the cursor is not one this server issued",
            ),
            StoreError::Overloaded => ApiError {
                retry_after: Some(1),
                ..ApiError::new(ErrorCode::Overloaded, e.to_string())
            },
            StoreError::DiskFull(_) => ApiError {
                retry_after: Some(10),
                ..ApiError::new(ErrorCode::DiskFull, without_paths(&e.to_string()))
            },
            StoreError::Unavailable(_) => ApiError {
                retry_after: Some(1),
                ..ApiError::new(ErrorCode::Unavailable, without_paths(&e.to_string()))
            },
            StoreError::NotLeader(leader) => ApiError::not_leader(&leader),
            StoreError::NotReplicated(message) => ApiError {
                retry_after: Some(1),
                ..ApiError::new(ErrorCode::NotReplicated, message)
            },
            StoreError::WriterGone => ApiError {
                retry_after: Some(5),
                ..ApiError::new(ErrorCode::Unavailable, e.to_string())
            },
            StoreError::Storage(_) | StoreError::Corrupt(_) | StoreError::NewerSchema { .. } => {
                // The log has it whole; the answer names no absolute path.
                tracing::error!(error = %e, "store failure");
                ApiError::new(ErrorCode::StorageError, without_paths(&e.to_string()))
            }
        }
    }
}

/// `text` with each absolute path cut to its last component (`…/flightdeck.redb`): answers do not
/// tell a client where the server keeps its files. The log keeps the whole text.
pub fn without_paths(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, word) in text.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let bare = word.trim_start_matches(['"', '\'', '(', '`']);
        let lead = &word[..word.len() - bare.len()];
        if bare.starts_with('/') && bare[1..].contains('/') {
            let tail = bare.rsplit('/').next().unwrap_or("");
            out.push_str(lead);
            out.push_str("…/");
            out.push_str(tail);
        } else {
            out.push_str(word);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_named_once_and_answers_its_status() {
        let mut names: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(names.len(), before, "a code named twice");
        for code in ErrorCode::ALL {
            let e = ApiError::new(*code, "m");
            assert_eq!(e.status, code.status());
            let body: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
            assert_eq!(body["error"]["code"], code.as_str());
            assert!(!code.description().is_empty());
        }
    }

    #[test]
    fn store_failures_name_no_absolute_path() {
        assert_eq!(
            without_paths("cannot open /var/lib/flightdeck/data/flightdeck.redb: denied"),
            "cannot open …/flightdeck.redb: denied"
        );
        assert_eq!(
            without_paths("\"/tmp/x/backups/f.redb\" already exists"),
            "\"…/f.redb\" already exists"
        );
        assert_eq!(without_paths("no path / here"), "no path / here");
        let e = ApiError::from(StoreError::Storage(crate::store::Cause::found(
            "/srv/data/flightdeck.redb already exists".to_string(),
        )));
        assert!(!e.message.contains("/srv"), "{}", e.message);
    }

    #[test]
    fn domain_not_found_names_its_kind() {
        for (kind, code, status) in [
            ("project", "project_not_found", 404),
            ("task", "task_not_found", 404),
            ("artifact", "artifact_not_found", 404),
            ("hitl_request", "hitl_request_not_found", 404),
            ("workflow", "workflow_not_found", 404),
        ] {
            let e: ApiError = DomainError::not_found(kind, "x").into();
            assert_eq!((e.code.as_str(), e.status.as_u16()), (code, status));
        }
    }
}
