//! The API handlers, one file per resource: decode the request, call the store, encode the answer.
//! No business rules live here (they are in `domain` and the store's writer).

mod admin;
mod agents;
mod artifacts;
mod budgets;
mod events;
mod health;
mod hitl;
pub mod mcp;
mod monitoring;
pub mod openapi;
mod progress;
mod projects;
mod queues;
mod replication;
mod tasks;
mod usage;
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
use crate::http::router::{Access, Answers};
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
    /// Without API keys: the host names answered besides addresses and localhost.
    pub allowed_hosts: crate::http::site::AllowedHosts,
    /// Failed key attempts, per source address.
    pub auth_failures: crate::http::auth::Failures,
    /// Online backups kept in `DATA_DIR/backups` (the oldest beyond go).
    pub backup_keep: usize,
    /// A key may answer an approval about a task it claimed itself.
    pub allow_self_approval: bool,
    /// Cancelled when the server begins to shut down: waiting claims answer 204 at once.
    pub stopping: tokio_util::sync::CancellationToken,
    /// Task progress frames, at most 10 per second per task.
    pub progress: std::sync::Arc<progress::Coalescer>,
    /// The configured webhooks and what they have done.
    pub webhooks: crate::webhooks::Shared,
    /// The secret of the replication routes (`--replication-key`).
    pub replication_key: Option<crate::replication::Key>,
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

/// What a page on another site could make the user's browser do: ride a WebSocket (refused from
/// other origins when origins are configured or there are no keys), and without API keys reach a
/// data route through a rebound name or write without asking (`http::site`).
fn cross_site(state: &AppState, route: Route, req: &Request) -> Result<(), ApiError> {
    use crate::http::site;
    let keys_off = !state.keys.enabled();
    let (origin, host) = (req.header("origin"), req.header("host"));
    // The MCP endpoint is held to the WebSocket rule too, as its protocol asks (DNS rebinding).
    if (route.is_websocket() || route == Route::Mcp) && (keys_off || state.cors.enabled()) {
        site::check_websocket(&state.cors, origin, host)?;
    }
    if keys_off {
        match route.access() {
            Access::Open | Access::Scrape => {}
            // A POST that reads (the artifact batch) is held to the rules of writes too.
            Access::Read if req.method() != Method::POST => {
                site::check_host(&state.allowed_hosts, host)?
            }
            _ => {
                site::check_host(&state.allowed_hosts, host)?;
                let post = req.method() == Method::POST;
                site::check_write(&state.cors, post, origin, host, req.header("content-type"))?;
            }
        }
    }
    Ok(())
}

fn dispatch(state: &Arc<AppState>, mut req: Request, origin: Option<&http::HeaderValue>) -> Answer {
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
    if let Err(e) = cross_site(state, route, &req) {
        return now(Err(e), is_head);
    }
    let query = Query::parse(uri.query());
    let principal = match state.keys.authorize(
        route,
        Credentials {
            header: req.header("authorization"),
            query: query.get("token"),
        },
    ) {
        Ok(principal) => principal,
        Err(e) => {
            let presented = req.header("authorization").is_some() || query.get("token").is_some();
            if e.code == ErrorCode::Unauthorized
                && presented
                && let Some(hold) = state.auth_failures.record(req.peer())
            {
                // Guessing from this address: its refusals come slowly.
                return Answer::Later(Box::pin(async move {
                    tokio::time::sleep(hold).await;
                    finish(Err(e), is_head)
                }));
            }
            return now(Err(e), is_head);
        }
    };
    req.set_caller(principal.as_ref().map(|p| p.name.clone()));
    serve(state, route, param, query, principal, req, is_head)
}

/// Answers a request on a route it matched, once its key was accepted: the handlers.
fn serve(
    state: &Arc<AppState>,
    route: Route,
    param: &str,
    query: Query,
    principal: Option<crate::http::auth::Principal>,
    req: Request,
    is_head: bool,
) -> Answer {
    use Route::{
        AdminBackup, AgentReset, AgentStatus, AgentStatusHistory, AgentsStatus, ArtifactBatch,
        ArtifactCreate, ArtifactDelete, ArtifactGet, ArtifactUpdate, BudgetDelete, BudgetGet,
        BudgetPut, BudgetsList, Console, EventsList, Health, HealthDetailed, HealthReady, HealthZ,
        HitlBulkApprove, HitlCreate, HitlGet, HitlHistory, HitlPending, HitlProjectRequests,
        HitlRespond, Livez, Mcp, Metrics, MonitoringAlerts, MonitoringHistory, MonitoringMetrics,
        MonitoringPerformance, MonitoringWebhooks, OpenApi, OversightGet, OversightSet,
        ProjectArtifacts, ProjectCompletion, ProjectGet, ProjectPause, ProjectResume,
        ProjectStatus, ProjectTasksCreate, ProjectTasksList, ProjectsCreate, ProjectsList,
        QueuePause, QueueResume, QueueUpdate, QueuesList, Readyz, ReplicationAck, ReplicationLog,
        ReplicationSnapshot, TaskClaim, TaskGet, TaskHeartbeat, TaskProgress, TaskSetStatus,
        TaskUsage, UsageGet, WebhookDiscard, WebhookRetry, WhoAmI, WorkflowCancel,
        WorkflowDefDelete, WorkflowDefGet, WorkflowDefPut, WorkflowGet, WorkflowStart,
        WorkflowsList, WsAll, WsProject,
    };
    // A route answered while it is called (its row says `Now`).
    macro_rules! now {
        ($result:expr) => {{
            debug_assert_eq!(route.answers(), Answers::Now, "{route:?}");
            now($result, is_head)
        }};
    }
    // A route answered by a future (its row says `Body` or `Wait`), which owns its handle on the
    // state (`s`), its path parameter and the request: `wait!(|s, param, req| handler(…))`.
    macro_rules! wait {
        (|$s:ident, $param:pat_param, $req:pat_param| $answer:expr) => {{
            debug_assert_ne!(route.answers(), Answers::Now, "{route:?}");
            let param = param.to_owned();
            later(state, is_head, move |$s| async move {
                let $s = &$s;
                let $param = param.as_str();
                let $req = req;
                $answer.await
            })
        }};
    }
    if let Some(leader) = state.store.leader()
        && route.access().role().is_some()
    {
        // A follower takes no writes: the client is sent to the leader.
        return now(Err(ApiError::not_leader(leader)), is_head);
    }
    match route {
        ProjectsCreate => wait!(|s, _, req| projects::create(s, req)),
        ProjectTasksCreate => wait!(|s, id, req| tasks::create(s, id, req)),
        TaskSetStatus => wait!(|s, id, req| tasks::set_status(s, id, req)),
        TaskClaim => wait!(|s, _, req| tasks::claim(s, req)),
        TaskHeartbeat => wait!(|s, id, req| tasks::heartbeat(s, id, req)),
        TaskProgress => wait!(|s, id, req| progress::post(s, id, req)),
        TaskUsage => wait!(|s, id, req| usage::post(s, id, req)),
        BudgetPut => wait!(|s, scope, req| budgets::put(s, scope, req)),
        BudgetDelete => wait!(|s, scope, _| budgets::delete(s, scope)),
        WorkflowStart => wait!(|s, id, req| workflows::start(s, id, req)),
        WorkflowCancel => wait!(|s, id, req| workflows::cancel(s, id, req)),
        WorkflowDefPut => wait!(|s, name, req| workflows::put(s, name, req)),
        WorkflowDefDelete => wait!(|s, name, _| workflows::delete(s, name)),
        QueuePause => wait!(|s, agent, _| queues::pause(s, agent, true)),
        QueueResume => wait!(|s, agent, _| queues::pause(s, agent, false)),
        QueueUpdate => wait!(|s, agent, req| queues::update(s, agent, req)),
        ProjectPause => wait!(|s, id, _| queues::project(s, id, true)),
        ProjectResume => wait!(|s, id, _| queues::project(s, id, false)),
        AgentReset => wait!(|s, agent, _| agents::reset(s, agent)),
        ArtifactCreate => wait!(|s, _, req| artifacts::create(s, req)),
        ArtifactBatch => wait!(|s, _, req| artifacts::batch(s, req)),
        ArtifactUpdate => wait!(|s, id, req| artifacts::update(s, id, req)),
        ArtifactDelete => wait!(|s, id, _| artifacts::delete(s, id)),
        HitlCreate => wait!(|s, _, req| hitl::create(s, req)),
        HitlBulkApprove => {
            wait!(|s, _, req| hitl::bulk_approve(s, req, principal.map(|p| p.name)))
        }
        OversightSet => wait!(|s, id, req| hitl::oversight_set(s, id, req)),
        HitlRespond => wait!(|s, id, req| hitl::respond(s, id, req, principal.map(|p| p.name))),
        WsAll => now!(events::subscribe(
            state,
            query.get("project_id"),
            &query,
            req
        )),
        WsProject => now!(events::subscribe(state, Some(param), &query, req)),
        AdminBackup => wait!(|s, _, _| admin::backup(s)),
        ReplicationSnapshot => wait!(|s, _, req| replication::snapshot(s, req)),
        ReplicationLog => wait!(|s, _, req| replication::log(s, req, &query)),
        ReplicationAck => wait!(|s, _, req| replication::ack(s, req, &query)),
        Readyz => wait!(|s, _, _| health::readyz(s, &query)),
        HealthDetailed => wait!(|s, _, _| health::detailed(s)),
        HealthReady => wait!(|s, _, _| health::ready(s)),
        HealthZ => wait!(|s, _, _| health::z(s)),
        WebhookRetry => wait!(|s, name, req| monitoring::webhook_retry(s, name, req)),
        WebhookDiscard => wait!(|s, name, req| monitoring::webhook_discard(s, name, req)),
        Console => now!(crate::console::serve(
            param,
            req.header("if-none-match"),
            state.store.leader()
        )),
        Mcp => wait!(|s, _, req| mcp::post(s, req, principal)),
        // The reads, answered from the state alone.
        ProjectsList
        | ProjectGet
        | ProjectStatus
        | ProjectCompletion
        | ProjectTasksList
        | TaskGet
        | UsageGet
        | BudgetsList
        | BudgetGet
        | WorkflowGet
        | WorkflowsList
        | WorkflowDefGet
        | QueuesList
        | AgentsStatus
        | AgentStatus
        | AgentStatusHistory
        | ArtifactGet
        | ProjectArtifacts
        | HitlPending
        | HitlProjectRequests
        | OversightGet
        | HitlGet
        | HitlHistory
        | EventsList
        | OpenApi
        | Livez
        | Health
        | Metrics
        | MonitoringMetrics
        | MonitoringPerformance
        | MonitoringAlerts
        | MonitoringHistory
        | MonitoringWebhooks
        | WhoAmI => now!(
            read(state, route, param, &query, principal.as_ref())
                .expect("every route of this arm is a read")
        ),
    }
}

/// Answers a read: a route answered at once from the state alone, without the request's headers
/// or body (`None` for any other route). An MCP tool's read calls it without building a request.
fn read(
    state: &Arc<AppState>,
    route: Route,
    param: &str,
    query: &Query,
    principal: Option<&crate::http::auth::Principal>,
) -> Option<Result<Response, ApiError>> {
    use Route::{
        AgentStatus, AgentStatusHistory, AgentsStatus, ArtifactGet, BudgetGet, BudgetsList,
        EventsList, Health, HitlGet, HitlHistory, HitlPending, HitlProjectRequests, Livez, Metrics,
        MonitoringAlerts, MonitoringHistory, MonitoringMetrics, MonitoringPerformance,
        MonitoringWebhooks, OpenApi, OversightGet, ProjectArtifacts, ProjectCompletion, ProjectGet,
        ProjectStatus, ProjectTasksList, ProjectsList, QueuesList, TaskGet, UsageGet, WhoAmI,
        WorkflowDefGet, WorkflowGet, WorkflowsList,
    };
    Some(match route {
        ProjectsList => projects::list(state, query),
        ProjectGet => projects::get(state, param),
        ProjectStatus => projects::status(state, param, query),
        ProjectCompletion => projects::completion(state, param),
        ProjectTasksList => tasks::list(state, param, query),
        TaskGet => tasks::get(state, param),
        UsageGet => usage::list(state, query),
        BudgetsList => budgets::list(state),
        BudgetGet => budgets::get(state, param),
        WorkflowGet => workflows::get(state, param),
        WorkflowsList => workflows::list(state),
        WorkflowDefGet => workflows::get_definition(state, param),
        QueuesList => queues::list(state),
        AgentsStatus => agents::all(state),
        AgentStatus => agents::one(state, param),
        AgentStatusHistory => agents::history(state, param, query),
        ArtifactGet => artifacts::get(state, param),
        ProjectArtifacts => artifacts::list(state, param, query),
        HitlPending => hitl::pending(state, query, principal.map(|p| p.name.as_str())),
        HitlProjectRequests => hitl::list(state, param, query),
        OversightGet => hitl::oversight_get(state, param),
        HitlGet => hitl::get(state, param),
        HitlHistory => hitl::history(state, param),
        EventsList => events::list(state, query),
        OpenApi => openapi::serve(state),
        Livez => health::livez(),
        Health => health::health(),
        Metrics => monitoring::prometheus(state),
        MonitoringMetrics => monitoring::metrics(state),
        MonitoringPerformance => monitoring::performance(state),
        MonitoringAlerts => monitoring::alerts(state),
        MonitoringHistory => monitoring::history(state),
        MonitoringWebhooks => monitoring::webhooks(state),
        WhoAmI => Ok(admin::whoami(state, principal)),
        _ => return None,
    })
}

/// Answers a request made inside the server (an MCP tool's call of the REST route it stands for)
/// as the route would answer it from a client holding `principal`'s key: the same handlers, rules,
/// role checks and errors. `path` may carry a query. The caller's own request is the one timed.
pub(crate) async fn call_local(
    state: &Arc<AppState>,
    principal: Option<&crate::http::auth::Principal>,
    method: Method,
    path: &str,
    body: Option<bytes::Bytes>,
) -> Response {
    let (route_path, query) = match path.split_once('?') {
        Some((route_path, query)) => (route_path, Some(query)),
        None => (path, None),
    };
    let matched = match route(&method, route_path) {
        Ok(matched) => matched,
        Err(_) => return ApiError::not_found_route(route_path).into_response(),
    };
    let (route, param) = (matched.route, matched.param);
    if let Some(p) = principal
        && let Err(e) = p.may_call(route)
    {
        return e.into_response();
    }
    let query = Query::parse(query);
    // A read needs no request: answered from the state, as the route answers it.
    if body.is_none()
        && let Some(result) = read(state, route, param, &query, principal)
    {
        return finish(result, false);
    }
    let uri: http::Uri = match path.parse() {
        Ok(uri) => uri,
        Err(_) => return ApiError::not_found_route(route_path).into_response(),
    };
    let param = param.to_owned();
    let mut builder = hyper::Request::builder().method(method).uri(uri);
    if body.is_some() {
        builder = builder.header("content-type", "application/json");
    }
    let req = match builder.body(body.unwrap_or_default()) {
        Ok(req) => Request::local(req, principal.map(|p| p.name.clone())),
        Err(_) => return ApiError::not_found_route(route_path).into_response(),
    };
    match serve(state, route, &param, query, principal.cloned(), req, false).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
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
    usage::decode_all(bytes);
    budgets::decode_all(bytes);
    mcp::decode_all(bytes);
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

/// A request's `Idempotency-Key` as sent (checked by `write_once`, so a malformed one is refused
/// rather than ignored), and whose it is: the name of the API key that sent it.
pub(crate) struct IdempotencyKey {
    key: Vec<u8>,
    /// `None` when keys are off: then every client shares one space of keys.
    caller: Option<String>,
}

/// The request's `Idempotency-Key`, if it sent one.
pub(crate) fn idempotency_key(req: &crate::http::Request) -> Option<IdempotencyKey> {
    req.header_bytes("idempotency-key")
        .map(|key| IdempotencyKey {
            key: key.to_vec(),
            caller: req.caller().map(str::to_owned),
        })
}

/// The longest `Idempotency-Key` accepted.
const MAX_IDEMPOTENCY_KEY: usize = 255;

/// Writes `command`, at most once per `Idempotency-Key` of one caller (the API key that sent it)
/// on this route and path: a repeat with the same body answers the original output without
/// writing; one with another body is 422 `idempotency_key_reused`. Another API key sending the
/// same `Idempotency-Key` has a key of its own: it never sees this one's answer (a claim's
/// `lease_id`, say). `project`, the path's id when the route has one, counts in its canonical
/// form, however the client spelled it. Without a key, a plain write.
pub(crate) async fn write_once<C>(
    state: &AppState,
    route: crate::http::Route,
    project: Option<Id>,
    key: Option<&IdempotencyKey>,
    body: &[u8],
    command: C,
) -> Result<C::Output, ApiError>
where
    C: crate::store::Write,
    C::Output: crate::store::command::Remembered,
{
    use sha1::{Digest, Sha1};
    let Some(IdempotencyKey { key, caller }) = key else {
        return Ok(state.store.write(command).await?);
    };
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY || !key.iter().all(u8::is_ascii_graphic) {
        return Err(ApiError::invalid_field(
            "Idempotency-Key",
            format!("must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"),
        ));
    }
    // Each part length-prefixed. Without keys the digest is what it was before keys were scoped
    // (route, path id, key), so keys remembered by an older build still match after an upgrade;
    // with keys, the caller's name follows.
    let project = project.map(|id| id.to_string()).unwrap_or_default();
    let mut parts = vec![route.name().as_bytes(), project.as_bytes(), key.as_slice()];
    if let Some(name) = caller {
        parts.push(name.as_bytes());
    }
    let mut digest = Sha1::new();
    for part in parts {
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
pub fn progress_coalescer(max_report_bytes: usize) -> std::sync::Arc<progress::Coalescer> {
    progress::Coalescer::new(max_report_bytes)
}

/// Describes the API's own metrics (the worker protocol's).
pub fn describe_metrics() {
    tasks::describe_metrics();
    mcp::describe_metrics();
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

    /// An agent type in the query, if this server takes it.
    pub fn agent_type(
        &self,
        state: &AppState,
        key: &str,
    ) -> Result<Option<crate::domain::AgentType>, ApiError> {
        Ok(self
            .get(key)
            .map(|t| state.store.agent_type(key, t))
            .transpose()?)
    }

    /// An artifact type in the query, if this server takes it.
    pub fn artifact_type(
        &self,
        state: &AppState,
        key: &str,
    ) -> Result<Option<crate::domain::ArtifactType>, ApiError> {
        Ok(self
            .get(key)
            .map(|t| state.store.artifact_type(key, t))
            .transpose()?)
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

/// A page's encoded items cut to `--max-page-bytes` (the first is kept whatever its size), and
/// its next cursor: after the last item kept when the cut dropped any. The store stopped reading
/// near the bound already (it counts stored bytes); this makes the answer's bound exact.
pub(crate) fn fit<T>(
    state: &AppState,
    mut items: Vec<Vec<u8>>,
    page: &crate::store::Page<T>,
    id: impl Fn(&T) -> Id,
) -> (Vec<Vec<u8>>, Option<String>) {
    let budget = state.store.page_bytes();
    // Each item and its comma; the envelope's few bytes are not counted.
    let mut held = 0usize;
    let keep = items
        .iter()
        .position(|item| {
            held = held.saturating_add(item.len() + 1);
            held > budget
        })
        .map_or(items.len(), |first_over| first_over.max(1));
    if keep == items.len() {
        return (items, page.next_cursor.clone());
    }
    items.truncate(keep);
    let cursor = crate::store::encode_cursor(&id(&page.items[keep - 1]));
    (items, Some(cursor))
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
