//! `POST /mcp`: the Model Context Protocol over Streamable HTTP, so that an agent which reaches its
//! tools through MCP is a worker, a reviewer or an operator by one line of its configuration.
//!
//! Both eras of the protocol are served on the one endpoint, statelessly:
//! - 2026-07-28: every request carries its protocol version and client capabilities in
//!   `params._meta` (and the version, method and name in the `MCP-Protocol-Version`, `Mcp-Method`
//!   and `Mcp-Name` headers); no handshake, no session; `server/discover` describes the server.
//! - 2025-11-25 and 2025-06-18 (and 2025-03-26): the `initialize` handshake, which answers an
//!   `Mcp-Session-Id`. The server keeps nothing per session (every call is whole in itself), so any
//!   session id is taken and `DELETE` is refused with 405, as the protocol allows.
//!
//! Answers are JSON; `GET` (a stream of server-initiated messages) is 405: the server sends none.
//! Every tool is a REST route called inside the server (`api::call_local`), so the keys, roles,
//! fencing and errors are the REST API's. Calls are counted and timed by method and by tool name
//! from `tools::TOOLS` (an unknown name counts as `unknown`).

mod envelope;
pub mod tools;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use std::borrow::Cow;

use super::AppState;
use crate::http::auth::Principal;
use crate::http::{ApiError, Method, Request, Response, StatusCode, set_header};
use envelope::{
    CLIENT_CAPABILITIES_KEY, Members, Message, Meta, NotAMessage, PROTOCOL_VERSION_KEY, Params,
    text,
};
use tools::{Args, Shape, TOOLS, Tool};

/// The stateless revision.
pub const MODERN_VERSION: &str = "2026-07-28";
/// The revisions with the `initialize` handshake, newest first.
pub const HANDSHAKE_VERSIONS: [&str; 3] = ["2025-11-25", "2025-06-18", "2025-03-26"];

const SERVER_INFO_KEY: &str = "io.modelcontextprotocol/serverInfo";

/// JSON-RPC and MCP error codes.
const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;
const INTERNAL_ERROR: i64 = -32603;
const RESOURCE_NOT_FOUND: i64 = -32002;
const HEADER_MISMATCH: i64 = -32020;
const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;

/// Metric names.
pub const CALLS_TOTAL: &str = "flightdeck_mcp_requests_total";
pub const CALL_DURATION: &str = "flightdeck_mcp_request_duration_seconds";

/// The methods counted under their own name; any other is `other`.
const METHODS: [&str; 10] = [
    "initialize",
    "ping",
    "server/discover",
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "notification",
    "other",
];

const INSTRUCTIONS: &str = "flightdeck keeps the state of a team of AI agents: projects, tasks, \
    a context store of artifacts and human approvals. To work as a worker of an agent type, loop: \
    claim_task (with wait_seconds) until it answers a task; read the artifacts of its context_ids \
    with get_artifact; do the work, calling heartbeat (or report_progress) at least every half \
    lease with the task's lease_id; store results with put_artifact; then complete_task with its \
    output, or fail_task. If a call answers lease_lost or task_cancelled, drop the task and claim \
    again. Use request_approval when a human must decide.";

/// Describes the endpoint's metrics and creates the series of every method and tool at zero.
pub fn describe_metrics() {
    metrics::describe_counter!(
        CALLS_TOTAL,
        "MCP requests answered, by method, tool and outcome (ok, tool_error, rpc_error)."
    );
    metrics::describe_histogram!(
        CALL_DURATION,
        metrics::Unit::Seconds,
        "MCP request duration inside the server, by method and tool."
    );
    for tool in TOOLS {
        metrics::counter!(CALLS_TOTAL, "method" => "tools/call", "tool" => tool.name, "outcome" => "ok")
            .increment(0);
    }
}

/// A JSON-RPC error, with the HTTP status it is sent with.
struct RpcError {
    code: i64,
    message: String,
    data: Option<Value>,
}

impl RpcError {
    fn new(code: i64, message: impl Into<String>) -> RpcError {
        RpcError {
            code,
            message: message.into(),
            data: None,
        }
    }

    /// The HTTP status of this error's answer: the 2026-07-28 table; earlier revisions send
    /// every answer to a well-formed request with 200.
    fn status(&self, modern: bool) -> StatusCode {
        match self.code {
            PARSE_ERROR | INVALID_REQUEST => StatusCode::BAD_REQUEST,
            _ if !modern => StatusCode::OK,
            INVALID_PARAMS | HEADER_MISMATCH | UNSUPPORTED_PROTOCOL_VERSION => {
                StatusCode::BAD_REQUEST
            }
            METHOD_NOT_FOUND => StatusCode::NOT_FOUND,
            _ => StatusCode::OK,
        }
    }
}

/// Every revision served, newest first.
fn supported_versions() -> Vec<&'static str> {
    let mut supported = vec![MODERN_VERSION];
    supported.extend(HANDSHAKE_VERSIONS);
    supported
}

fn unsupported(requested: &str) -> RpcError {
    RpcError {
        data: Some(json!({"supported": supported_versions(), "requested": requested})),
        ..RpcError::new(
            UNSUPPORTED_PROTOCOL_VERSION,
            format!("protocol version `{requested}` is not supported"),
        )
    }
}

/// The request's era, once its envelope checked out.
#[derive(Copy, Clone, PartialEq, Eq)]
enum Era {
    /// 2026-07-28: per-request envelope.
    Modern,
    /// The handshake revisions.
    Handshake,
}

/// The routing headers of a request, read before its body.
struct Headers {
    version: Option<String>,
    method: Option<String>,
    name: Option<String>,
    /// The client takes a stream of server-sent events (`Accept: text/event-stream`).
    streams: bool,
    /// A routing header sent more than once (its copies could disagree): refused.
    repeated: Option<&'static str>,
}

/// What the era checks and a waiting call read of a request's params.
struct Envelope<'a> {
    /// `params._meta`, when it is an object.
    meta: Option<&'a Meta>,
    /// The request's name, when a string: a tool call's `name`, a resource read's `uri`.
    named: Option<Cow<'a, str>>,
}

impl<'a> Envelope<'a> {
    fn of(method: &str, params: &'a Members<'a>) -> Envelope<'a> {
        let named = match method {
            "tools/call" => params.name,
            "resources/read" => params.uri,
            _ => None,
        };
        Envelope {
            meta: params.meta.as_ref(),
            named: named.and_then(text),
        }
    }

    fn progress_token(&self) -> Option<Value> {
        self.meta?.progress_token.clone()
    }
}

/// The headers 2026-07-28 routes by, which must agree with the body.
const ROUTING_HEADERS: [&str; 3] = ["mcp-protocol-version", "mcp-method", "mcp-name"];

impl Headers {
    /// Read in one pass over the request's headers.
    fn of(req: &Request) -> Headers {
        let mut values: [Option<String>; 3] = [None, None, None];
        let mut seen = [0usize; 3];
        let mut streams = false;
        for (name, value) in req.headers() {
            let name = name.as_str();
            if name == "accept" {
                streams |= value
                    .to_str()
                    .is_ok_and(|a| a.contains("text/event-stream"));
            } else if let Some(slot) = ROUTING_HEADERS.iter().position(|h| *h == name) {
                seen[slot] += 1;
                if seen[slot] == 1 {
                    values[slot] = value.to_str().ok().map(str::to_owned);
                }
            }
        }
        let [version, method, name] = values;
        Headers {
            version,
            method,
            name,
            streams,
            repeated: ROUTING_HEADERS
                .into_iter()
                .zip(seen)
                .find_map(|(header, n)| (n > 1).then_some(header)),
        }
    }
}

/// Reads `bytes` as a JSON-RPC message, with every member the endpoint reads (for the fuzzers).
#[cfg(feature = "fuzzing")]
pub(crate) fn decode_all(bytes: &[u8]) {
    if let Ok(message) = Message::parse(bytes)
        && let Some(Params::Object(members)) = &message.params
    {
        let _ = Envelope::of("tools/call", members).progress_token();
        let _ = members
            .arguments
            .map(|raw| serde_json::from_str::<Map<String, Value>>(raw.get()));
    }
}

/// `POST /mcp`.
pub async fn post(
    state: &Arc<AppState>,
    req: Request,
    principal: Option<Principal>,
) -> Result<Response, ApiError> {
    let headers = Headers::of(&req);
    let bytes = req.bytes(state.max_body_bytes).await?;
    let started = Instant::now();
    let (method_label, tool_label, response, outcome) =
        answer(state, &headers, &bytes, principal.as_ref()).await;
    if outcome != STREAMED {
        record(method_label, tool_label, outcome, started);
    }
    Ok(response)
}

/// The tool label of a request that calls no tool.
const NO_TOOL: &str = "none";

/// The outcome of a call answered as a stream: the stream's task records it when it ends.
const STREAMED: &str = "streamed";

/// Counts and times one answered request.
fn record(
    method_label: &'static str,
    tool_label: &'static str,
    outcome: &'static str,
    started: Instant,
) {
    let elapsed = started.elapsed().as_secs_f64();
    match TOOLS.iter().position(|t| t.name == tool_label) {
        // A tool call: its series' handles, resolved once.
        Some(tool) => {
            let (histogram, counters) = tool_series(tool);
            histogram.record(elapsed);
            counters[OUTCOMES.iter().position(|o| *o == outcome).unwrap_or(0)].increment(1);
        }
        None => {
            metrics::counter!(CALLS_TOTAL, "method" => method_label, "tool" => tool_label, "outcome" => outcome)
                .increment(1);
            metrics::histogram!(CALL_DURATION, "method" => method_label, "tool" => tool_label)
                .record(elapsed);
        }
    }
}

const OUTCOMES: [&str; 3] = ["ok", "tool_error", "rpc_error"];

/// A tool's duration histogram and its counters by outcome.
type ToolSeries = (metrics::Histogram, [metrics::Counter; 3]);

fn tool_series(tool: usize) -> &'static ToolSeries {
    static SERIES: std::sync::OnceLock<Box<[std::sync::OnceLock<ToolSeries>]>> =
        std::sync::OnceLock::new();
    let all = SERIES.get_or_init(|| TOOLS.iter().map(|_| std::sync::OnceLock::new()).collect());
    all[tool].get_or_init(|| {
        let name = TOOLS[tool].name;
        (
            metrics::histogram!(CALL_DURATION, "method" => "tools/call", "tool" => name),
            OUTCOMES.map(|outcome| {
                metrics::counter!(CALLS_TOTAL, "method" => "tools/call", "tool" => name, "outcome" => outcome)
            }),
        )
    })
}

/// A JSON-RPC answer: its body and HTTP status.
fn reply(status: StatusCode, body: Vec<u8>) -> Response {
    crate::http::body::json(status, body)
}

fn error_reply(id: &Value, error: RpcError, modern: bool) -> Response {
    let status = error.status(modern);
    let mut object = json!({"code": error.code, "message": error.message});
    if let Some(data) = error.data {
        object["data"] = data;
    }
    let body = json!({"jsonrpc": "2.0", "id": id, "error": object});
    reply(status, serde_json::to_vec(&body).unwrap_or_default())
}

fn result_reply(id: &Value, result: Value) -> Response {
    let body = json!({"jsonrpc": "2.0", "id": id, "result": result});
    reply(
        StatusCode::OK,
        serde_json::to_vec(&body).unwrap_or_default(),
    )
}

/// Answers one JSON-RPC message: (method label, tool label, response, outcome label).
async fn answer(
    state: &Arc<AppState>,
    headers: &Headers,
    bytes: &[u8],
    principal: Option<&Principal>,
) -> (&'static str, &'static str, Response, &'static str) {
    const RPC: &str = "rpc_error";
    let null = Value::Null;
    if crate::json::nesting_depth(bytes, crate::http::body::MAX_JSON_DEPTH + 1)
        > crate::http::body::MAX_JSON_DEPTH
    {
        let e = RpcError::new(PARSE_ERROR, "the JSON nests too deep");
        return ("other", NO_TOOL, error_reply(&null, e, true), RPC);
    }
    let message = match Message::parse(bytes) {
        Ok(message) => message,
        Err(why) => {
            let e = match why {
                NotAMessage::Json(message) => RpcError::new(PARSE_ERROR, message),
                NotAMessage::Invalid(message) => RpcError::new(INVALID_REQUEST, message),
            };
            return ("other", NO_TOOL, error_reply(&null, e, true), RPC);
        }
    };
    if message.jsonrpc.and_then(text).as_deref() != Some("2.0") {
        let e = RpcError::new(INVALID_REQUEST, "a message needs \"jsonrpc\": \"2.0\"");
        return ("other", NO_TOOL, error_reply(&null, e, true), RPC);
    }
    let method = message.method.and_then(text);
    let Some(id) = message.id else {
        // A notification, or a client's answer to a request: nothing to answer.
        let status = match method {
            Some(_) => StatusCode::ACCEPTED,
            None if message.result.is_some() || message.error.is_some() => StatusCode::ACCEPTED,
            None => {
                let e = RpcError::new(INVALID_REQUEST, "a request needs a method");
                return ("notification", NO_TOOL, error_reply(&null, e, true), RPC);
            }
        };
        return (
            "notification",
            NO_TOOL,
            crate::http::body::empty(status),
            "ok",
        );
    };
    let id: Value = serde_json::from_str(id.get()).unwrap_or(Value::Null);
    if !(id.is_string() || id.is_i64() || id.is_u64()) {
        let e = RpcError::new(
            INVALID_REQUEST,
            "a request's id must be a string or an integer",
        );
        return ("other", NO_TOOL, error_reply(&null, e, true), RPC);
    }
    let id = &id;
    let Some(method) = method.as_deref() else {
        let e = RpcError::new(INVALID_REQUEST, "a request needs a method");
        return ("other", NO_TOOL, error_reply(id, e, true), RPC);
    };
    let method_label = METHODS
        .iter()
        .copied()
        .find(|m| *m == method)
        .unwrap_or("other");
    // JSON-RPC 2.0: params, when present, is a structured value (here: an object).
    let params = match message.params {
        None => Members::default(),
        Some(Params::Object(members)) => members,
        Some(Params::NotObject) => {
            let e = RpcError::new(INVALID_PARAMS, "params must be an object");
            return (method_label, NO_TOOL, error_reply(id, e, true), RPC);
        }
    };
    let envelope = Envelope::of(method, &params);
    let era = match era(headers, method, &envelope) {
        Ok(era) => era,
        // Every refusal of a version or an envelope is a 400, in either era.
        Err(e) => return (method_label, NO_TOOL, error_reply(id, e, true), RPC),
    };
    let modern = era == Era::Modern;
    if method == "tools/call" {
        return call(state, headers, principal, id, &params, &envelope, modern).await;
    }
    let result = match method {
        "initialize" => initialize(params.protocol_version.and_then(text).as_deref()),
        "ping" if !modern => Ok(json!({})),
        "server/discover" => Ok(discover(principal)),
        "tools/list" => Ok(list_tools(principal, modern)),
        "resources/templates/list" => Ok(templates(modern)),
        "resources/list" => {
            let cursor = params.cursor.and_then(text);
            list_resources(state, principal, cursor.as_deref(), modern).await
        }
        "resources/read" => {
            let uri = envelope.named.as_deref();
            read_resource(state, principal, uri, modern).await
        }
        _ => Err(RpcError::new(
            METHOD_NOT_FOUND,
            format!("method `{method}` is not served here"),
        )),
    };
    match result {
        Ok(mut result) => {
            if modern && let Some(object) = result.as_object_mut() {
                object.insert("resultType".into(), json!("complete"));
            }
            let mut response = result_reply(id, result);
            if method == "initialize" {
                let session = uuid::Uuid::now_v7().simple().to_string();
                set_header(&mut response, "mcp-session-id", &session);
            }
            (method_label, NO_TOOL, response, "ok")
        }
        Err(e) => (method_label, NO_TOOL, error_reply(id, e, modern), RPC),
    }
}

/// `tools/call`, its envelope checked: the tool called with its arguments.
async fn call(
    state: &Arc<AppState>,
    headers: &Headers,
    principal: Option<&Principal>,
    id: &Value,
    params: &Members<'_>,
    envelope: &Envelope<'_>,
    modern: bool,
) -> (&'static str, &'static str, Response, &'static str) {
    const RPC: &str = "rpc_error";
    const METHOD: &str = "tools/call";
    let name = envelope.named.as_deref().unwrap_or("");
    let Some(tool) = tools::find(name) else {
        let e = RpcError::new(INVALID_PARAMS, format!("unknown tool `{name}`"));
        return (METHOD, "unknown", error_reply(id, e, modern), RPC);
    };
    let arguments: Map<String, Value> = match params.arguments.map(RawValue::get) {
        None | Some("null") => Map::new(),
        Some(json) if json.starts_with('{') => serde_json::from_str(json).unwrap_or_default(),
        Some(_) => {
            let e = RpcError::new(INVALID_PARAMS, "arguments must be an object");
            return (METHOD, tool.name, error_reply(id, e, modern), RPC);
        }
    };
    if let Some(token) = envelope.progress_token()
        && headers.streams
        && let Some(wait) = waits(tool, &arguments)
    {
        let call = Streamed {
            state: state.clone(),
            principal: principal.cloned(),
            tool,
            arguments,
            id: id.clone(),
            token,
            wait,
            modern,
        };
        return (METHOD, tool.name, call.start(), STREAMED);
    }
    let (body, failed) = call_tool(state, principal, tool, &arguments).await;
    let response = reply(StatusCode::OK, tool_reply(id, &body, failed, modern));
    let outcome = if failed { "tool_error" } else { "ok" };
    (METHOD, tool.name, response, outcome)
}

/// Which revision a request speaks, checked as 2026-07-28 asks: the envelope's version and
/// capabilities present, the routing headers agreeing with the body, the version served.
fn era(headers: &Headers, method: &str, envelope: &Envelope<'_>) -> Result<Era, RpcError> {
    if let Some(header) = headers.repeated {
        return Err(RpcError::new(
            HEADER_MISMATCH,
            format!("the {header} header was sent more than once"),
        ));
    }
    let meta = envelope.meta.as_ref();
    let enveloped = meta.is_some_and(|m| m.version.is_some());
    let modern_header = headers.version.as_deref() == Some(MODERN_VERSION);
    if method == "initialize" && !enveloped {
        return Ok(Era::Handshake);
    }
    if !enveloped && !modern_header {
        return match headers.version.as_deref() {
            None => Ok(Era::Handshake),
            Some(v) if HANDSHAKE_VERSIONS.contains(&v) => Ok(Era::Handshake),
            Some(v) => Err(unsupported(v)),
        };
    }
    let Some(version) = meta
        .filter(|m| m.capabilities)
        .and_then(|m| m.version.as_ref())
    else {
        return Err(RpcError::new(
            INVALID_PARAMS,
            format!("params._meta must carry {PROTOCOL_VERSION_KEY} and {CLIENT_CAPABILITIES_KEY}"),
        ));
    };
    if headers.version.as_deref() != version.as_str() {
        return Err(RpcError::new(
            HEADER_MISMATCH,
            "the MCP-Protocol-Version header does not match params._meta's protocol version",
        ));
    }
    if headers.method.as_deref() != Some(method) {
        return Err(RpcError::new(
            HEADER_MISMATCH,
            "the Mcp-Method header does not match the request's method",
        ));
    }
    if let Some(name) = envelope.named.as_deref() {
        let sent = headers.name.as_deref().and_then(header_value);
        if sent.as_deref() != Some(name) {
            return Err(RpcError::new(
                HEADER_MISMATCH,
                "the Mcp-Name header does not match the request's name",
            ));
        }
    }
    let Some(version) = version.as_str() else {
        return Err(RpcError::new(
            INVALID_PARAMS,
            "the protocol version must be a string",
        ));
    };
    if version != MODERN_VERSION {
        return Err(unsupported(version));
    }
    Ok(Era::Modern)
}

/// A routing header's value: as sent, or decoded when sent base64-encoded (`=?base64?…?=`, for a
/// value that is not plain ASCII); `None` for a malformed encoding.
fn header_value(sent: &str) -> Option<std::borrow::Cow<'_, str>> {
    use base64::Engine as _;
    match sent
        .strip_prefix("=?base64?")
        .and_then(|s| s.strip_suffix("?="))
    {
        None => Some(std::borrow::Cow::Borrowed(sent)),
        Some(encoded) => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .map(std::borrow::Cow::Owned),
    }
}

fn server_info() -> Value {
    json!({"name": "flightdeck", "title": "flightdeck", "version": env!("CARGO_PKG_VERSION")})
}

fn capabilities() -> Value {
    json!({"tools": {"listChanged": false}, "resources": {"listChanged": false}})
}

/// The handshake: the client's version when it is one served, else the newest.
fn initialize(asked: Option<&str>) -> Result<Value, RpcError> {
    let version = asked
        .filter(|v| HANDSHAKE_VERSIONS.contains(v))
        .unwrap_or(HANDSHAKE_VERSIONS[0]);
    Ok(json!({
        "protocolVersion": version,
        "capabilities": capabilities(),
        "serverInfo": server_info(),
        "instructions": INSTRUCTIONS,
    }))
}

fn discover(principal: Option<&Principal>) -> Value {
    json!({
        "supportedVersions": supported_versions(),
        "capabilities": capabilities(),
        "instructions": INSTRUCTIONS,
        // What a key may call differs: no cache shared between keys.
        "cacheScope": if principal.is_some() { "private" } else { "public" },
        "ttlMs": 60_000,
        "_meta": {SERVER_INFO_KEY: server_info()},
    })
}

/// Whether the key may call the tool (keys off: everyone may).
fn may(principal: Option<&Principal>, tool: &Tool) -> bool {
    principal.is_none_or(|p| p.may_call(tool.route).is_ok())
}

fn list_tools(principal: Option<&Principal>, modern: bool) -> Value {
    let tools: Vec<Value> = TOOLS
        .iter()
        .filter(|t| may(principal, t))
        .map(|t| {
            json!({
                "name": t.name,
                "title": t.title,
                "description": t.description,
                "inputSchema": tools::input_schema(t),
                "outputSchema": tools::output_schema(t),
                "annotations": {
                    "title": t.title,
                    "readOnlyHint": t.read_only,
                    "destructiveHint": false,
                    "idempotentHint": t.idempotent,
                    "openWorldHint": false,
                },
            })
        })
        .collect();
    let mut result = json!({ "tools": tools });
    if modern {
        result["cacheScope"] = json!(if principal.is_some() {
            "private"
        } else {
            "public"
        });
        result["ttlMs"] = json!(60_000);
    }
    result
}

/// A route's answer: its status and body.
async fn route_answer(
    state: &Arc<AppState>,
    principal: Option<&Principal>,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> (StatusCode, Bytes, Option<String>) {
    let body = body.map(|b| Bytes::from(serde_json::to_vec(b).unwrap_or_default()));
    let response = super::call_local(state, principal, method, path, body).await;
    let status = response.status();
    let cursor = response
        .headers()
        .get("x-next-cursor")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = match response.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(never) => match never {},
    };
    (status, bytes, cursor)
}

/// A tool's `structuredContent` as JSON text, and whether the call failed.
async fn call_tool(
    state: &Arc<AppState>,
    principal: Option<&Principal>,
    tool: &'static Tool,
    arguments: &Map<String, Value>,
) -> (Bytes, bool) {
    // The route would refuse it too; refused here so that the call reaches nothing.
    if let Some(p) = principal
        && let Err(e) = p.may_call(tool.route)
    {
        return (error_json(&e), true);
    }
    let args = Args(arguments);
    let call = match tools::call(tool, &args) {
        Ok(call) => call,
        Err(e) => return (error_json(&e), true),
    };
    let (status, bytes, cursor) = route_answer(
        state,
        principal,
        call.method,
        &call.path,
        call.body.as_ref(),
    )
    .await;
    if !status.is_success() {
        return (bytes, true);
    }
    if tool.name == "request_approval" {
        let wait = args.opt_u64("wait_seconds", tools::MAX_WAIT_SECONDS);
        let wait = Duration::from_secs(wait.ok().flatten().unwrap_or(0));
        return (await_answer(state, principal, bytes, wait).await, false);
    }
    (shape(tool.shape, status, &bytes, cursor.as_deref()), false)
}

/// A REST error as the JSON text a tool answers.
fn error_json(e: &ApiError) -> Bytes {
    Bytes::from(e.body())
}

/// A route's successful answer in the tool's shape: an object as the route wrote it (its bytes
/// shared, not copied).
fn shape(shape: Shape, status: StatusCode, bytes: &Bytes, cursor: Option<&str>) -> Bytes {
    if status == StatusCode::NO_CONTENT || bytes.is_empty() {
        return match shape {
            Shape::Wrapped(key) => Bytes::from(crate::json::object(|o| {
                o.raw(key, "null");
            })),
            Shape::Object => Bytes::from_static(b"null"),
        };
    }
    let text = || std::str::from_utf8(bytes).unwrap_or("null");
    match shape {
        Shape::Wrapped(key) => Bytes::from(crate::json::object(|o| {
            o.raw(key, text());
        })),
        Shape::Object if bytes.first() == Some(&b'[') => Bytes::from(crate::json::object(|o| {
            o.raw("items", text()).opt_str("next_cursor", cursor);
        })),
        Shape::Object => bytes.clone(),
    }
}

/// Waits for a new approval request's answer, up to `wait`: the request as it stands then.
async fn await_answer(
    state: &Arc<AppState>,
    principal: Option<&Principal>,
    created: Bytes,
    wait: Duration,
) -> Bytes {
    let id = serde_json::from_slice::<Value>(&created)
        .ok()
        .and_then(|v| {
            v.get("request_id")
                .and_then(Value::as_str)
                .map(str::to_owned)
        });
    let Some(id) = id else {
        return created;
    };
    let deadline = tokio::time::Instant::now() + wait;
    let path = format!("/api/v1/hitl/{id}");
    let mut latest = created;
    let mut pause = Duration::from_millis(20);
    loop {
        let pending = serde_json::from_slice::<Value>(&latest)
            .ok()
            .and_then(|v| {
                v.get("status")
                    .and_then(Value::as_str)
                    .map(|s| s == "pending")
            })
            .unwrap_or(false);
        if !pending || tokio::time::Instant::now() >= deadline {
            return latest;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + pause)) => {}
            _ = state.stopping.cancelled() => return latest,
        }
        pause = (pause * 2).min(Duration::from_millis(250));
        let (status, bytes, _) = route_answer(state, principal, Method::GET, &path, None).await;
        if status.is_success() {
            latest = bytes;
        }
    }
}

/// `{"jsonrpc":"2.0","id":…,"result":{"content":[{"type":"text","text":…}],"structuredContent":…,
/// "isError":…}}`, written around the route's JSON without decoding it again.
fn tool_reply(id: &Value, structured: &[u8], failed: bool, modern: bool) -> Vec<u8> {
    // A route's answer, or an error this server wrote: UTF-8 JSON either way.
    let structured = if structured.is_empty() {
        b"{}".as_slice()
    } else {
        structured
    };
    let mut out = Vec::with_capacity(structured.len() * 2 + 160);
    out.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"id\":");
    // An id is a string or an integer (checked when the request was read).
    let _ = serde_json::to_writer(&mut out, id);
    out.extend_from_slice(b",\"result\":{\"content\":[{\"type\":\"text\",\"text\":");
    crate::json::write_text(&mut out, structured);
    out.extend_from_slice(b"}],\"structuredContent\":");
    out.extend_from_slice(structured);
    out.extend_from_slice(b",\"isError\":");
    out.extend_from_slice(if failed { b"true" } else { b"false" });
    if modern {
        out.extend_from_slice(b",\"resultType\":\"complete\"");
    }
    out.extend_from_slice(b"}}");
    out
}

/// How often a waiting call reports progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// How long a call will wait, when it is one that waits.
fn waits(tool: &Tool, arguments: &Map<String, Value>) -> Option<u64> {
    if !matches!(tool.name, "claim_task" | "request_approval") {
        return None;
    }
    arguments
        .get("wait_seconds")
        .and_then(Value::as_u64)
        .filter(|w| (1..=tools::MAX_WAIT_SECONDS).contains(w))
}

/// One server-sent event holding a JSON-RPC message. The message's line breaks are whitespace
/// between tokens (a JSON string holds none raw), so they become spaces: one `data:` line.
fn sse_event(message: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(message.len() + 24);
    out.extend_from_slice(b"event: message\ndata: ");
    out.extend(
        message
            .iter()
            .map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b }),
    );
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// A call that waits, answered as a stream of server-sent events: `notifications/progress` every
/// `PROGRESS_EVERY` while it waits, then its result. A client that goes away ends the call (as a
/// REST claim whose client went away).
struct Streamed {
    state: Arc<AppState>,
    principal: Option<Principal>,
    tool: &'static Tool,
    arguments: Map<String, Value>,
    id: Value,
    token: Value,
    wait: u64,
    modern: bool,
}

impl Streamed {
    fn start(self) -> Response {
        let (events, chunks) = tokio::sync::mpsc::channel::<Bytes>(4);
        let started = Instant::now();
        tokio::spawn(async move {
            let call = call_tool(
                &self.state,
                self.principal.as_ref(),
                self.tool,
                &self.arguments,
            );
            tokio::pin!(call);
            let mut tick = tokio::time::interval_at(
                tokio::time::Instant::now() + PROGRESS_EVERY,
                PROGRESS_EVERY,
            );
            let message = match self.tool.name {
                "claim_task" => "waiting for a task",
                _ => "waiting for a human's answer",
            };
            let outcome = loop {
                tokio::select! {
                    outcome = &mut call => break Some(outcome),
                    _ = tick.tick() => {
                        let progress = json!({"jsonrpc": "2.0", "method": "notifications/progress",
                            "params": {"progressToken": self.token,
                                "progress": started.elapsed().as_secs(), "total": self.wait,
                                "message": message}});
                        let event = sse_event(&serde_json::to_vec(&progress).unwrap_or_default());
                        if events.send(event).await.is_err() {
                            break None;
                        }
                    }
                    () = events.closed() => break None,
                }
            };
            let Some((body, failed)) = outcome else {
                return;
            };
            let reply = tool_reply(&self.id, &body, failed, self.modern);
            let _ = events.send(sse_event(&reply)).await;
            let outcome = if failed { "tool_error" } else { "ok" };
            record("tools/call", self.tool.name, outcome, started);
        });
        let mut response = hyper::Response::new(crate::http::Body::stream(chunks));
        set_header(&mut response, "content-type", "text/event-stream");
        set_header(&mut response, "cache-control", "no-cache");
        response
    }
}

const ARTIFACT_PREFIX: &str = "flightdeck://artifacts/";
const PROJECT_PREFIX: &str = "flightdeck://projects/";

fn templates(modern: bool) -> Value {
    let mut result = json!({"resourceTemplates": [
        {"uriTemplate": "flightdeck://artifacts/{artifact_id}", "name": "artifact",
            "title": "An artifact of the context store", "mimeType": "application/json"},
        {"uriTemplate": "flightdeck://projects/{project_id}/artifacts", "name": "project-artifacts",
            "title": "A project's artifacts (the first 100)", "mimeType": "application/json"},
    ]});
    if modern {
        result["cacheScope"] = json!("public");
        result["ttlMs"] = json!(3_600_000);
    }
    result
}

/// `resources/list`: each project's list of artifacts, a page of projects at a time.
async fn list_resources(
    state: &Arc<AppState>,
    principal: Option<&Principal>,
    cursor: Option<&str>,
    modern: bool,
) -> Result<Value, RpcError> {
    let mut path = "/api/v1/projects".to_string();
    if let Some(cursor) = cursor {
        let query: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("cursor", cursor)
            .finish();
        path = format!("{path}?{query}");
    }
    let (status, bytes, cursor) = route_answer(state, principal, Method::GET, &path, None).await;
    if !status.is_success() {
        return Err(rest_error(&bytes, INVALID_PARAMS));
    }
    let page: Value = serde_json::from_slice(&bytes).unwrap_or_default();
    let cursor = cursor.or_else(|| page["next_cursor"].as_str().map(str::to_owned));
    let resources: Vec<Value> = page["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let id = p.get("id")?.as_str()?;
            let name = p.get("name").and_then(Value::as_str).unwrap_or(id);
            Some(json!({
                "uri": format!("{PROJECT_PREFIX}{id}/artifacts"),
                "name": format!("{name}: artifacts"),
                "mimeType": "application/json",
            }))
        })
        .collect();
    let mut result = json!({ "resources": resources });
    if let Some(cursor) = cursor {
        result["nextCursor"] = json!(cursor);
    }
    if modern {
        result["cacheScope"] = json!("private");
        result["ttlMs"] = json!(0);
    }
    Ok(result)
}

/// A REST error's message as a JSON-RPC error.
fn rest_error(bytes: &[u8], code: i64) -> RpcError {
    let error: Value = serde_json::from_slice(bytes).unwrap_or_default();
    let rest_code = error["error"]["code"].as_str().unwrap_or("error");
    let message = error["error"]["message"].as_str().unwrap_or("refused");
    RpcError {
        data: Some(error["error"].clone()),
        ..RpcError::new(code, format!("{rest_code}: {message}"))
    }
}

/// `resources/read` of an artifact or a project's artifacts.
async fn read_resource(
    state: &Arc<AppState>,
    principal: Option<&Principal>,
    uri: Option<&str>,
    modern: bool,
) -> Result<Value, RpcError> {
    let Some(uri) = uri else {
        return Err(RpcError::new(INVALID_PARAMS, "uri is required"));
    };
    let not_found = || RpcError {
        data: Some(json!({"uri": uri})),
        ..RpcError::new(RESOURCE_NOT_FOUND, format!("no resource `{uri}`"))
    };
    let path = if let Some(id) = uri.strip_prefix(ARTIFACT_PREFIX) {
        let id = crate::domain::Id::parse(id).ok_or_else(not_found)?;
        format!("/api/v1/context/artifacts/{id}")
    } else if let Some(rest) = uri.strip_prefix(PROJECT_PREFIX)
        && let Some(id) = rest.strip_suffix("/artifacts")
    {
        let id = crate::domain::Id::parse(id).ok_or_else(not_found)?;
        format!("/api/v1/context/project/{id}/artifacts")
    } else {
        return Err(not_found());
    };
    let (status, bytes, cursor) = route_answer(state, principal, Method::GET, &path, None).await;
    if status == StatusCode::NOT_FOUND {
        return Err(not_found());
    }
    if !status.is_success() {
        return Err(rest_error(&bytes, INTERNAL_ERROR));
    }
    let text = shape(Shape::Object, status, &bytes, cursor.as_deref());
    let mut result = json!({"contents": [{
        "uri": uri,
        "mimeType": "application/json",
        "text": String::from_utf8_lossy(&text),
    }]});
    if modern {
        result["cacheScope"] = json!("private");
        result["ttlMs"] = json!(0);
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(version: Option<&str>, method: Option<&str>, name: Option<&str>) -> Headers {
        Headers {
            version: version.map(str::to_owned),
            method: method.map(str::to_owned),
            name: name.map(str::to_owned),
            streams: false,
            repeated: None,
        }
    }

    fn params(value: Value) -> String {
        json!({ "params": value }).to_string()
    }

    /// The era of a request with these params (`params`' body), read as a request's are.
    fn era_of(headers: &Headers, method: &str, body: &str) -> Result<Era, RpcError> {
        let message = Message::parse(body.as_bytes()).ok().expect("a message");
        let members = match message.params {
            Some(Params::Object(members)) => members,
            _ => Members::default(),
        };
        era(headers, method, &Envelope::of(method, &members))
    }

    fn envelope(version: &str) -> Value {
        json!({PROTOCOL_VERSION_KEY: version, CLIENT_CAPABILITIES_KEY: {}})
    }

    #[test]
    fn the_era_follows_the_envelope_and_its_headers_must_agree() {
        let call = params(json!({"_meta": envelope("2026-07-28"), "name": "claim_task"}));
        let modern = headers(Some("2026-07-28"), Some("tools/call"), Some("claim_task"));
        assert!(era_of(&modern, "tools/call", &call).ok() == Some(Era::Modern));
        // Each routing header that disagrees with the body is a mismatch.
        for wrong in [
            headers(Some("2025-11-25"), Some("tools/call"), Some("claim_task")),
            headers(Some("2026-07-28"), Some("tools/list"), Some("claim_task")),
            headers(Some("2026-07-28"), Some("tools/call"), Some("heartbeat")),
            headers(None, Some("tools/call"), Some("claim_task")),
        ] {
            let e = era_of(&wrong, "tools/call", &call)
                .err()
                .expect("a mismatch");
            assert_eq!(e.code, HEADER_MISMATCH, "{}", e.message);
        }
        // A name sent base64-encoded is compared decoded; a bad encoding is a mismatch.
        let encoded = headers(
            Some("2026-07-28"),
            Some("tools/call"),
            Some("=?base64?Y2xhaW1fdGFzaw==?="),
        );
        assert!(era_of(&encoded, "tools/call", &call).ok() == Some(Era::Modern));
        let garbled = headers(
            Some("2026-07-28"),
            Some("tools/call"),
            Some("=?base64?!!?="),
        );
        assert_eq!(
            era_of(&garbled, "tools/call", &call).err().unwrap().code,
            HEADER_MISMATCH
        );
        let twice = Headers {
            repeated: Some("mcp-method"),
            ..headers(Some("2026-07-28"), Some("tools/call"), Some("claim_task"))
        };
        assert_eq!(
            era_of(&twice, "tools/call", &call).err().unwrap().code,
            HEADER_MISMATCH
        );
        // The modern header without the envelope: the envelope is missing.
        let bare = params(json!({"name": "claim_task"}));
        assert_eq!(
            era_of(&modern, "tools/call", &bare).err().unwrap().code,
            INVALID_PARAMS
        );
        // A version not served names the ones that are.
        let future = params(json!({"_meta": envelope("2030-01-01")}));
        let e = era_of(
            &headers(Some("2030-01-01"), Some("tools/list"), None),
            "tools/list",
            &future,
        )
        .err()
        .unwrap();
        assert_eq!(e.code, UNSUPPORTED_PROTOCOL_VERSION);
        assert_eq!(e.data.unwrap()["supported"][0], MODERN_VERSION);
        // The handshake era: no envelope, a handshake version or none in the header.
        let empty = params(json!({}));
        for version in [None, Some("2025-06-18"), Some("2025-11-25")] {
            let h = headers(version, None, None);
            assert!(era_of(&h, "tools/list", &empty).ok() == Some(Era::Handshake));
        }
        let e = era_of(
            &headers(Some("1999-01-01"), None, None),
            "tools/list",
            &empty,
        )
        .err()
        .unwrap();
        assert_eq!(e.code, UNSUPPORTED_PROTOCOL_VERSION);
        assert!(
            era_of(&headers(None, None, None), "initialize", &empty).ok() == Some(Era::Handshake)
        );
    }

    #[test]
    fn an_event_is_one_data_line_whatever_the_json_holds() {
        let message = b"{\"a\":\n  [1,\r\n 2],\"s\":\"x\\ny\"}";
        let event = sse_event(message);
        let text = std::str::from_utf8(&event).unwrap();
        assert!(text.starts_with("event: message\ndata: "));
        assert!(text.ends_with("\n\n"));
        let data = text
            .strip_prefix("event: message\ndata: ")
            .unwrap()
            .strip_suffix("\n\n")
            .unwrap();
        assert!(!data.contains('\n') && !data.contains('\r'), "{data:?}");
        let value: Value = serde_json::from_str(data).unwrap();
        assert_eq!(value, json!({"a": [1, 2], "s": "x\ny"}));
    }

    #[test]
    fn a_tool_result_carries_the_json_as_structure_and_as_text() {
        let body = tool_reply(&json!(7), br#"{"task":{"id":"t","n":"a\"b"}}"#, false, true);
        let value: Value = serde_json::from_slice(&body).unwrap();
        let result = &value["result"];
        assert_eq!(value["id"], 7);
        assert_eq!(result["isError"], false);
        assert_eq!(result["resultType"], "complete");
        assert_eq!(result["structuredContent"]["task"]["n"], "a\"b");
        let text = result["content"][0]["text"].as_str().unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(text).unwrap(),
            result["structuredContent"]
        );
        let legacy: Value =
            serde_json::from_slice(&tool_reply(&json!("x"), b"{}", true, false)).unwrap();
        assert_eq!(legacy["result"]["isError"], true);
        assert!(legacy["result"].get("resultType").is_none());
    }
}
