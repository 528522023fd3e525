//! The one table that maps every failure to a status, an error code and a JSON body:
//! `{"error":{"code":"task_not_found","message":"…"}}`.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode, header};

use crate::domain::DomainError;
use crate::json::object;
use crate::store::StoreError;

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    /// For 405: the `Allow` header.
    pub allow: Option<&'static str>,
    /// For 429/503: the `Retry-After` header, in seconds.
    pub retry_after: Option<u32>,
    /// For 401: a `WWW-Authenticate: Bearer` header.
    pub www_authenticate: bool,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        code: impl Into<String>,
        message: impl Into<String>,
    ) -> ApiError {
        ApiError {
            status,
            code: code.into(),
            message: message.into(),
            allow: None,
            retry_after: None,
            www_authenticate: false,
        }
    }

    pub fn bad_request(code: &str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn invalid_field(field: &str, message: impl std::fmt::Display) -> ApiError {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            format!("{field}: {message}"),
        )
    }

    pub fn not_found_route(path: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "route_not_found",
            format!("no route for {path}"),
        )
    }

    pub fn method_not_allowed(method: &hyper::Method, allow: &'static str) -> ApiError {
        ApiError {
            allow: Some(allow),
            ..ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{method} is not allowed here; allowed: {allow}"),
            )
        }
    }

    /// A WebSocket upgrade from a page on an origin that is not allowed.
    pub fn origin_not_allowed(origin: &str) -> ApiError {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "origin_not_allowed",
            format!("WebSocket connections from origin `{origin}` are not allowed (cors_origins)"),
        )
    }

    pub fn into_response(self) -> Response<Full<Bytes>> {
        let body = object(|o| {
            o.object("error", |e| {
                e.str("code", &self.code).str("message", &self.message);
            });
        });
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
        builder
            .body(Full::new(Bytes::from(body)))
            .expect("static headers are valid")
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> ApiError {
        match &e {
            DomainError::NotFound { kind, .. } => ApiError::new(
                StatusCode::NOT_FOUND,
                format!("{kind}_not_found"),
                e.to_string(),
            ),
            DomainError::InvalidTransition { .. } => {
                ApiError::new(StatusCode::CONFLICT, "invalid_transition", e.to_string())
            }
            DomainError::InvalidField { .. } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_field",
                e.to_string(),
            ),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::Domain(d) => d.into(),
            StoreError::InvalidCursor => {
                ApiError::bad_request("invalid_cursor", "the cursor is not one this server issued")
            }
            StoreError::Overloaded => ApiError {
                retry_after: Some(1),
                ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", e.to_string())
            },
            StoreError::DiskFull(_) => ApiError {
                retry_after: Some(10),
                ..ApiError::new(StatusCode::INSUFFICIENT_STORAGE, "disk_full", e.to_string())
            },
            StoreError::Unavailable(_) => ApiError {
                retry_after: Some(1),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    e.to_string(),
                )
            },
            StoreError::WriterGone => ApiError {
                retry_after: Some(5),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    e.to_string(),
                )
            },
            StoreError::Storage(_) | StoreError::Corrupt(_) | StoreError::NewerSchema { .. } => {
                tracing::error!(error = %e, "store failure");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "storage_error",
                    e.to_string(),
                )
            }
        }
    }
}
