//! The API handlers, one file per resource: decode the request, call the store, encode the answer.
//! No business rules live here (they are in `domain` and the store's writer).

mod admin;
mod agents;
mod artifacts;
mod events;
mod health;
mod hitl;
mod monitoring;
pub mod openapi;
mod projects;
mod tasks;
mod workflows;

use std::collections::HashMap;

use crate::domain::{DomainError, Id, Vocabulary};
use crate::http::timing::RouteLabel;
use crate::http::{
    ApiError, Body, Method, NoRoute, Request, Response, Route, StatusCode, route, set_header,
};
use crate::store::Store;

/// Default and largest page size of every list.
pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1000;

/// What every handler can reach.
pub struct AppState {
    pub store: Store,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    pub ws: std::sync::Arc<crate::ws::WsContext>,
    pub monitor: std::sync::Arc<crate::monitor::Monitor>,
    pub health: std::sync::Arc<crate::monitor::health::Health>,
    pub keys: crate::http::auth::ApiKeys,
}

/// Routes and answers one request. Every failure becomes a JSON error.
pub async fn handle(state: &AppState, req: Request) -> Response {
    let is_head = req.method() == Method::HEAD;
    let path = req.path().to_string();
    let matched = route(req.method(), &path).map(|m| (m.route, m.param.to_string()));
    let (label, result) = match matched {
        Ok((route, param)) => {
            let query = Query::parse(req.query());
            let allowed = state.keys.authorize(
                route,
                req.method(),
                req.header("authorization"),
                query.get("token"),
            );
            match allowed {
                Ok(()) => (
                    Some(route),
                    dispatch(state, route, &param, &query, req).await,
                ),
                Err(e) => (Some(route), Err(e)),
            }
        }
        Err(NoRoute::NotFound) => (None, Err(ApiError::not_found_route(&path))),
        Err(NoRoute::MethodNotAllowed(allow)) => {
            (None, Err(ApiError::method_not_allowed(req.method(), allow)))
        }
    };
    let mut response = result.unwrap_or_else(ApiError::into_response);
    if is_head {
        *response.body_mut() = Body::default();
    }
    response.extensions_mut().insert(RouteLabel(label));
    response
}

async fn dispatch(
    state: &AppState,
    route: Route,
    param: &str,
    query: &Query,
    req: Request,
) -> Result<Response, ApiError> {
    use Route::*;
    match route {
        ProjectsList => projects::list(state, query),
        ProjectsCreate => projects::create(state, req).await,
        ProjectGet => projects::get(state, param),
        ProjectStatus => projects::status(state, param),
        ProjectCompletion => projects::completion(state, param),
        ProjectTasksList => tasks::list(state, param, query),
        ProjectTasksCreate => tasks::create(state, param, req).await,
        TaskGet => tasks::get(state, param),
        TaskSetStatus => tasks::set_status(state, param, req).await,
        TaskClaim => tasks::claim(state, req).await,
        WorkflowStart => workflows::start(state, param, req).await,
        WorkflowGet => workflows::get(state, param),
        AdminBackup => admin::backup(state).await,
        OpenApi => openapi::serve(state),
        TaskHeartbeat => tasks::heartbeat(state, param, req).await,
        AgentsStatus => agents::all(state),
        AgentStatus => agents::one(state, param),
        AgentStatusHistory => agents::history(state, param, query),
        AgentReset => agents::reset(state, param).await,
        ArtifactCreate => artifacts::create(state, req).await,
        ArtifactBatch => artifacts::batch(state, req).await,
        ArtifactGet => artifacts::get(state, param),
        ArtifactUpdate => artifacts::update(state, param, req).await,
        ArtifactDelete => artifacts::delete(state, param).await,
        ProjectArtifacts => artifacts::list(state, param, query),
        HitlCreate => hitl::create(state, req).await,
        HitlPending => hitl::pending(state, query),
        HitlBulkApprove => hitl::bulk_approve(state, req).await,
        HitlProjectRequests => hitl::list(state, param, query),
        OversightGet => hitl::oversight_get(state, param),
        OversightSet => hitl::oversight_set(state, param, req).await,
        HitlGet => hitl::get(state, param),
        HitlHistory => hitl::history(state, param),
        HitlRespond => hitl::respond(state, param, req).await,
        EventsList => events::list(state, query),
        WsAll => events::subscribe(state, query.get("project_id"), query, req),
        WsProject => events::subscribe(state, Some(param), query, req),
        Livez => health::livez(),
        Readyz => health::readyz(state, query).await,
        Health => health::health(),
        HealthDetailed => health::detailed(state).await,
        HealthReady => health::ready(state).await,
        HealthZ => health::z(state).await,
        Metrics => monitoring::prometheus(state),
        MonitoringMetrics => monitoring::metrics(state),
        MonitoringPerformance => monitoring::performance(state),
        MonitoringAlerts => monitoring::alerts(state),
    }
}

/// Decodes `bytes` as every request body type, and `text` as a query string: the entry point of
/// the request-decoding fuzzer. Bad input must give errors, never panics.
#[doc(hidden)]
pub fn fuzz_decode(bytes: &[u8]) {
    artifacts::decode_all(bytes);
    hitl::decode_all(bytes);
    projects::decode_all(bytes);
    tasks::decode_all(bytes);
    workflows::decode_all(bytes);
    if let Ok(text) = std::str::from_utf8(bytes) {
        let query = Query::parse(Some(text));
        let _ = query.limit();
        let _ = query.u64("since");
        let _ = query.id("project_id");
        let _ = query.vocab::<crate::domain::TaskStatus>("status");
        let _ = crate::store::decode_cursor(text);
    }
}

/// A path or query id: 400 when it is not a UUID.
pub(crate) fn parse_id(field: &str, text: &str) -> Result<Id, ApiError> {
    Id::parse(text).ok_or_else(|| {
        ApiError::bad_request("invalid_id", format!("{field} `{text}` is not a UUID"))
    })
}

/// A vocabulary value: 422 naming the allowed values when unknown.
pub(crate) fn parse_vocab<V: Vocabulary>(field: &str, text: &str) -> Result<V, ApiError> {
    V::parse(text).ok_or_else(|| DomainError::unknown_value::<V>(field, text).into())
}

/// Ids in a request body: 422 naming the element when one is not a UUID.
pub(crate) fn parse_ids(field: &str, texts: &[String]) -> Result<Vec<Id>, ApiError> {
    texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            Id::parse(t).ok_or_else(|| {
                ApiError::invalid_field(&format!("{field}[{i}]"), format!("`{t}` is not a UUID"))
            })
        })
        .collect()
}

/// The query string, decoded.
pub(crate) struct Query(HashMap<String, String>);

impl Query {
    fn parse(query: Option<&str>) -> Query {
        Query(
            form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// `?limit=`: 1 to 1000, default 100.
    pub fn limit(&self) -> Result<usize, ApiError> {
        match self.get("limit") {
            None => Ok(DEFAULT_LIMIT),
            Some(text) => match text.parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
                _ => Err(ApiError::invalid_field(
                    "limit",
                    format!("`{text}` is not a whole number from 1 to {MAX_LIMIT}"),
                )),
            },
        }
    }

    /// Whether the key is in the query at all (`?verbose`).
    pub fn present(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    pub fn cursor(&self) -> Option<&str> {
        self.get("cursor")
    }

    pub fn vocab<V: Vocabulary>(&self, key: &str) -> Result<Option<V>, ApiError> {
        self.get(key).map(|t| parse_vocab::<V>(key, t)).transpose()
    }

    pub fn id(&self, key: &str) -> Result<Option<Id>, ApiError> {
        self.get(key).map(|t| parse_id(key, t)).transpose()
    }

    pub fn u64(&self, key: &str) -> Result<Option<u64>, ApiError> {
        self.get(key)
            .map(|t| {
                t.parse::<u64>().map_err(|_| {
                    ApiError::invalid_field(key, format!("`{t}` is not a non-negative integer"))
                })
            })
            .transpose()
    }
}

/// A list in flightdeck's own envelope: `{"items":[…],"next_cursor":…}`.
pub(crate) fn envelope(items: &[Vec<u8>], next_cursor: Option<&str>) -> Response {
    let body = crate::json::object(|o| {
        o.raw_array("items", items.iter().map(Vec::as_slice))
            .opt_str("next_cursor", next_cursor);
    });
    crate::http::body::json(StatusCode::OK, body)
}

/// A list in the BotArmy shape: a bare JSON array; the next page's cursor goes in `X-Next-Cursor`.
pub(crate) fn bare_list(items: &[Vec<u8>], next_cursor: Option<&str>) -> Response {
    let mut body = Vec::with_capacity(items.iter().map(Vec::len).sum::<usize>() + items.len() + 2);
    crate::json::write_raw_array(&mut body, items.iter().map(Vec::as_slice));
    let mut response = crate::http::body::json(StatusCode::OK, body);
    if let Some(cursor) = next_cursor {
        set_header(&mut response, "x-next-cursor", cursor);
    }
    response
}
