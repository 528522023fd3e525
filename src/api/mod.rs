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
mod progress;
mod projects;
mod queues;
mod tasks;
mod workflows;

use crate::http::ErrorCode;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use crate::domain::{DomainError, Id, Vocabulary};
use crate::http::auth::Credentials;
use crate::http::cors::{self, Cors};
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
    /// The origins whose pages may call the API (and open WebSockets, when any is set).
    pub cors: Cors,
    /// Cancelled when the server begins to shut down: waiting claims answer 204 at once.
    pub stopping: tokio_util::sync::CancellationToken,
    /// Task progress frames, at most 10 per second per task.
    pub progress: std::sync::Arc<progress::Coalescer>,
    /// The configured webhooks and what they have done.
    pub webhooks: crate::webhooks::Shared,
}

/// A request's answer. Most routes answer while `handle` runs (a read is a cache or B-tree lookup);
/// the routes that wait — for a body, the writer or a probe — answer through a boxed future. The
/// future of every request is moved when it is handed to hyper and to the timing wrapper, so it is
/// kept to a response's size: one future with room for every waiting route's state was 1.6 KB.
pub enum Answer {
    Now(Option<Response>),
    Later(Pin<Box<dyn Future<Output = Response> + Send>>),
}

impl Future for Answer {
    type Output = Result<Response, std::convert::Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Answer::Now(response) => Poll::Ready(Ok(response
                .take()
                .expect("an answer is not polled after it completed"))),
            Answer::Later(future) => future.as_mut().poll(cx).map(Ok),
        }
    }
}

/// The response of a result: every failure becomes a JSON error; a HEAD request gets no body.
fn finish(result: Result<Response, ApiError>, is_head: bool) -> Response {
    let mut response = result.unwrap_or_else(ApiError::into_response);
    if is_head {
        *response.body_mut() = Body::default();
    }
    response
}

/// An answer given at once.
fn now(result: Result<Response, ApiError>, is_head: bool) -> Answer {
    Answer::Now(Some(finish(result, is_head)))
}

/// A route that waits, boxed; `answer` gets its own handle on the state.
fn later<F, Fut>(state: &Arc<AppState>, is_head: bool, answer: F) -> Answer
where
    F: FnOnce(Arc<AppState>) -> Fut,
    Fut: Future<Output = Result<Response, ApiError>> + Send + 'static,
{
    let future = answer(state.clone());
    Answer::Later(Box::pin(async move { finish(future.await, is_head) }))
}

/// Routes and answers one request. An answer to an allowed browser origin carries the CORS
/// headers, whatever route or error it is.
pub fn handle(state: &Arc<AppState>, req: Request) -> Answer {
    let origin = if state.cors.enabled() {
        state.cors.allowed_origin(req.header("origin"))
    } else {
        None
    };
    let answer = dispatch(state, req, origin.as_ref());
    match (origin, answer) {
        (None, answer) => answer,
        (Some(origin), Answer::Now(mut response)) => {
            if let Some(r) = response.as_mut() {
                cors::decorate(r, origin);
            }
            Answer::Now(response)
        }
        (Some(origin), Answer::Later(future)) => Answer::Later(Box::pin(async move {
            let mut response = future.await;
            cors::decorate(&mut response, origin);
            response
        })),
    }
}

/// `OPTIONS` on a known path: 204 with `Allow`, and for an allowed origin's preflight the
/// `Access-Control-Allow-*` headers. Answered before the API key is checked, as browsers send
/// preflights without credentials.
fn options(req: &Request, origin: Option<&http::HeaderValue>) -> Result<Response, ApiError> {
    let allow = match route(&Method::OPTIONS, req.path()) {
        Err(NoRoute::MethodNotAllowed(allow)) => allow,
        _ => return Err(ApiError::not_found_route(req.path())),
    };
    let mut response = crate::http::body::empty(StatusCode::NO_CONTENT);
    set_header(&mut response, "allow", &format!("{allow}, OPTIONS"));
    if let Some(origin) = origin
        && req.header("access-control-request-method").is_some()
    {
        cors::preflight(&mut response, origin.clone(), allow);
    }
    Ok(response)
}

fn dispatch(state: &Arc<AppState>, req: Request, origin: Option<&http::HeaderValue>) -> Answer {
    if req.method() == Method::OPTIONS {
        return now(options(&req, origin), false);
    }
    let is_head = req.method() == Method::HEAD;
    // The path is read through a handle of its own (a reference count, not a copy), so `req` can
    // move into the routes that take it.
    let uri = req.uri().clone();
    let matched = match route(req.method(), uri.path()) {
        Ok(matched) => matched,
        Err(NoRoute::NotFound) => {
            return now(Err(ApiError::not_found_route(uri.path())), is_head);
        }
        Err(NoRoute::MethodNotAllowed(allow)) => {
            return now(
                Err(ApiError::method_not_allowed(req.method(), allow)),
                is_head,
            );
        }
    };
    let (route, param) = (matched.route, matched.param);
    crate::http::timing::set_route(route);
    if route.is_websocket()
        && state.cors.enabled()
        && origin.is_none()
        && let Some(foreign) = req.header("origin")
    {
        // A page on another origin may not ride the user's WebSocket (cross-site hijacking).
        return now(Err(ApiError::origin_not_allowed(foreign)), is_head);
    }
    let query = Query::parse(uri.query());
    let principal = match state.keys.authorize(
        route,
        req.method(),
        Credentials {
            header: req.header("authorization"),
            query: query.get("token"),
        },
    ) {
        Ok(principal) => principal,
        Err(e) => return now(Err(e), is_head),
    };
    use Route::{
        AdminBackup, AgentReset, AgentStatus, AgentStatusHistory, AgentsStatus, ArtifactBatch,
        ArtifactCreate, ArtifactDelete, ArtifactGet, ArtifactUpdate, Console, EventsList, Health,
        HealthDetailed, HealthReady, HealthZ, HitlBulkApprove, HitlCreate, HitlGet, HitlHistory,
        HitlPending, HitlProjectRequests, HitlRespond, Livez, Metrics, MonitoringAlerts,
        MonitoringHistory, MonitoringMetrics, MonitoringPerformance, MonitoringWebhooks, OpenApi,
        OversightGet, OversightSet, ProjectArtifacts, ProjectCompletion, ProjectGet, ProjectPause,
        ProjectResume, ProjectStatus, ProjectTasksCreate, ProjectTasksList, ProjectsCreate,
        ProjectsList, QueuePause, QueueResume, QueueUpdate, QueuesList, Readyz, TaskClaim, TaskGet,
        TaskHeartbeat, TaskProgress, TaskSetStatus, WhoAmI, WorkflowGet, WorkflowStart, WsAll,
        WsProject,
    };
    let result = match route {
        ProjectsList => projects::list(state, &query),
        ProjectsCreate => {
            return later(state, is_head, |s| async move {
                projects::create(&s, req).await
            });
        }
        ProjectGet => projects::get(state, param),
        ProjectStatus => projects::status(state, param, &query),
        ProjectCompletion => projects::completion(state, param),
        QueuesList => queues::list(state),
        TaskProgress => {
            let param = param.to_owned();
            return later(state, is_head, |s| async move {
                progress::post(&s, &param, req).await
            });
        }
        QueuePause | QueueResume | ProjectPause | ProjectResume => {
            let param = param.to_owned();
            return later(state, is_head, move |s| async move {
                match route {
                    QueuePause => queues::pause(&s, &param, true).await,
                    QueueResume => queues::pause(&s, &param, false).await,
                    ProjectPause => queues::project(&s, &param, true).await,
                    _ => queues::project(&s, &param, false).await,
                }
            });
        }
        QueueUpdate => {
            let param = param.to_owned();
            return later(state, is_head, |s| async move {
                queues::update(&s, &param, req).await
            });
        }
        ProjectTasksList => tasks::list(state, param, &query),
        ProjectTasksCreate => {
            let param = param.to_owned();
            return later(state, is_head, |s| async move {
                tasks::create(&s, &param, req).await
            });
        }
        TaskGet => tasks::get(state, param),
        TaskSetStatus => {
            let param = param.to_owned();
            return later(state, is_head, |s| async move {
                tasks::set_status(&s, &param, req).await
            });
        }
        TaskClaim => {
            return later(
                state,
                is_head,
                |s| async move { tasks::claim(&s, req).await },
            );
        }
        WorkflowStart => {
            let param = param.to_owned();
            return later(state, is_head, |s| async move {
                workflows::start(&s, &param, req).await
            });
        }
        WorkflowGet => workflows::get(state, param),
        AdminBackup => return later(state, is_head, |s| async move { admin::backup(&s).await }),
        OpenApi => openapi::serve(state),
        TaskHeartbeat => {
            let param = param.to_owned();
            return later(state, is_head, |s| async move {
                tasks::heartbeat(&s, &param, req).await
            });
        }
        AgentsStatus => agents::all(state),
        AgentStatus => agents::one(state, param),
        AgentStatusHistory => agents::history(state, param, &query),
        AgentReset => {
            let param = param.to_owned();
            return later(state, is_head, |s| async move {
                agents::reset(&s, &param).await
            });
        }
        ArtifactCreate => {
            return later(state, is_head, |s| async move {
                artifacts::create(&s, req).await
            });
        }
        ArtifactBatch => {
            return later(state, is_head, |s| async move {
                artifacts::batch(&s, req).await
            });
        }
        ArtifactGet => artifacts::get(state, param),
        ArtifactUpdate => {
            let param = param.to_owned();
            return later(state, is_head, |s| async move {
                artifacts::update(&s, &param, req).await
            });
        }
        ArtifactDelete => {
            let param = param.to_owned();
            return later(state, is_head, |s| async move {
                artifacts::delete(&s, &param).await
            });
        }
        ProjectArtifacts => artifacts::list(state, param, &query),
        HitlCreate => {
            return later(
                state,
                is_head,
                |s| async move { hitl::create(&s, req).await },
            );
        }
        HitlPending => hitl::pending(state, &query),
        HitlBulkApprove => {
            let by = principal.map(|p| p.name);
            return later(state, is_head, |s| async move {
                hitl::bulk_approve(&s, req, by).await
            });
        }
        HitlProjectRequests => hitl::list(state, param, &query),
        OversightGet => hitl::oversight_get(state, param),
        OversightSet => {
            let param = param.to_owned();
            return later(state, is_head, |s| async move {
                hitl::oversight_set(&s, &param, req).await
            });
        }
        HitlGet => hitl::get(state, param),
        HitlHistory => hitl::history(state, param),
        HitlRespond => {
            let param = param.to_owned();
            let by = principal.map(|p| p.name);
            return later(state, is_head, |s| async move {
                hitl::respond(&s, &param, req, by).await
            });
        }
        EventsList => events::list(state, &query),
        WsAll => events::subscribe(state, query.get("project_id"), &query, req),
        WsProject => events::subscribe(state, Some(param), &query, req),
        Livez => health::livez(),
        Readyz => {
            return later(state, is_head, |s| async move {
                health::readyz(&s, &query).await
            });
        }
        Health => health::health(),
        HealthDetailed => {
            return later(
                state,
                is_head,
                |s| async move { health::detailed(&s).await },
            );
        }
        HealthReady => return later(state, is_head, |s| async move { health::ready(&s).await }),
        HealthZ => return later(state, is_head, |s| async move { health::z(&s).await }),
        Metrics => monitoring::prometheus(state),
        MonitoringMetrics => monitoring::metrics(state),
        MonitoringPerformance => monitoring::performance(state),
        MonitoringAlerts => monitoring::alerts(state),
        MonitoringHistory => monitoring::history(state),
        MonitoringWebhooks => monitoring::webhooks(state),
        WhoAmI => Ok(admin::whoami(state, principal.as_ref())),
        Console => crate::console::serve(param, req.header("if-none-match")),
    };
    now(result, is_head)
}

#[cfg(feature = "fuzzing")]
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
/// Loads a project by its textual id: 400 if not a UUID, 404 if unknown.
pub(crate) fn find(state: &AppState, id: &str) -> Result<crate::store::Project, ApiError> {
    let id = parse_id("project_id", id)?;
    state
        .store
        .get_project(&id)?
        .ok_or_else(|| DomainError::not_found("project", id).into())
}

/// Checks that a project exists, without decoding it when the summary says so.
pub(crate) fn require(state: &AppState, id: &str) -> Result<Id, ApiError> {
    let id = parse_id("project_id", id)?;
    if state.store.summary(&id).is_some() {
        return Ok(id);
    }
    Err(DomainError::not_found("project", id).into())
}

/// The request's `Idempotency-Key` as sent (checked by `write_once`, so a malformed one is refused
/// rather than ignored).
pub(crate) fn idempotency_key(req: &crate::http::Request) -> Option<Vec<u8>> {
    req.header_bytes("idempotency-key").map(<[u8]>::to_vec)
}

/// The longest `Idempotency-Key` accepted.
const MAX_IDEMPOTENCY_KEY: usize = 255;

/// Writes `command`, at most once per `Idempotency-Key` (`key`) on this route and path: a repeat
/// with the same body answers the original output without writing; one with another body is 422
/// `idempotency_key_reused`. Without a key, a plain write.
pub(crate) async fn write_once<C>(
    state: &AppState,
    route: crate::http::Route,
    param: &str,
    key: Option<&[u8]>,
    body: &[u8],
    command: C,
) -> Result<C::Output, ApiError>
where
    C: crate::store::Write,
    C::Output: crate::store::command::Remembered,
{
    use sha1::{Digest, Sha1};
    let Some(key) = key else {
        return Ok(state.store.write(command).await?);
    };
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY || !key.iter().all(u8::is_ascii_graphic) {
        return Err(ApiError::invalid_field(
            "Idempotency-Key",
            format!("must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"),
        ));
    }
    let mut digest = Sha1::new();
    for part in [route.name().as_bytes(), param.as_bytes(), key] {
        digest.update((part.len() as u64).to_be_bytes());
        digest.update(part);
    }
    let command = crate::store::command::Idempotent {
        inner: command,
        key: digest.finalize().into(),
        fingerprint: Sha1::digest(body).into(),
    };
    Ok(state.store.write(command).await?)
}

/// A fresh progress coalescer for `AppState::progress`.
pub fn progress_coalescer() -> std::sync::Arc<progress::Coalescer> {
    progress::Coalescer::new()
}

/// Describes the API's own metrics (the worker protocol's).
pub fn describe_metrics() {
    tasks::describe_metrics();
}

pub(crate) fn parse_id(field: &str, text: &str) -> Result<Id, ApiError> {
    Id::parse(text).ok_or_else(|| {
        ApiError::new(
            ErrorCode::InvalidId,
            format!("{field} `{text}` is not a UUID"),
        )
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
