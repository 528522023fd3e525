//! The MCP tools: each stands for one REST route (`Tool::route`), whose handler answers it with the
//! same rules, roles and errors (`api::call_local`). A tool's arguments become the route's path,
//! query and body here; its answer becomes the tool's structured result in `super`.

use serde_json::{Map, Value, json};

use crate::domain::Id;
use crate::http::{ApiError, Method, Route};

/// The longest a tool call waits (claim_task, request_approval): under the usual 30 s of an HTTP
/// client's read timeout.
pub const MAX_WAIT_SECONDS: u64 = 25;

/// What a tool's answer becomes.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Shape {
    /// The route's JSON object as it is; a JSON list becomes `{"items": […], "next_cursor": …}`.
    Object,
    /// `{"<key>": <the route's object, or null when it answered 204>}`.
    Wrapped(&'static str),
}

/// One tool of the endpoint.
pub struct Tool {
    pub name: &'static str,
    pub title: &'static str,
    pub description: &'static str,
    /// The REST route it calls: its role decides who may list and call the tool.
    pub route: Route,
    pub shape: Shape,
    /// Whether it only reads (annotated `readOnlyHint`).
    pub read_only: bool,
    /// Whether calling it again with the same arguments changes nothing more.
    pub idempotent: bool,
}

/// Every tool, in the order `tools/list` gives them. Metric labels come from these names only.
pub const TOOLS: &[Tool] = &[
    Tool {
        name: "claim_task",
        title: "Claim a task",
        description: "Claim the next pending task of an agent type for a worker, waiting up to \
            wait_seconds (at most 25) for one. Answers {\"task\": …} with the task's id, lease_id \
            (send it with every later call about the task), instructions, context_ids and, for a \
            workflow phase, its workflow context (upstream outputs, fan-out item); or \
            {\"task\": null} when none came. Loop on it to work as a worker of that agent type.",
        route: Route::TaskClaim,
        shape: Shape::Wrapped("task"),
        read_only: false,
        idempotent: false,
    },
    Tool {
        name: "heartbeat",
        title: "Keep a task's lease",
        description: "Extend the lease of a task this worker claimed, optionally with a progress \
            message and percent. Refused with lease_lost when the lease expired and the task went \
            to another worker, task_cancelled when it was cancelled: stop working on it then.",
        route: Route::TaskHeartbeat,
        shape: Shape::Object,
        read_only: false,
        idempotent: false,
    },
    Tool {
        name: "report_progress",
        title: "Report progress",
        description: "Tell the humans watching what a working task is doing (message, percent, \
            data). Ephemeral: it reaches live subscribers, not the event log.",
        route: Route::TaskProgress,
        shape: Shape::Object,
        read_only: false,
        idempotent: false,
    },
    Tool {
        name: "report_usage",
        title: "Report model usage",
        description: "Record the tokens (and, if known, the dollars) a model call of a claimed task \
            spent: input, output, cache-read and cache-write tokens, under the claim's lease_id. \
            report_id is yours: the same one again for the same task counts once. Without \
            cost_usd the server prices the tokens from its price list.",
        route: Route::TaskUsage,
        shape: Shape::Object,
        read_only: false,
        idempotent: true,
    },
    Tool {
        name: "complete_task",
        title: "Complete a task",
        description: "Mark a claimed task completed with its output (any JSON). Needs the claim's \
            lease_id; refused with lease_lost if another worker holds the task now.",
        route: Route::TaskSetStatus,
        shape: Shape::Object,
        read_only: false,
        idempotent: false,
    },
    Tool {
        name: "fail_task",
        title: "Fail a task",
        description: "Mark a claimed task failed with an error message; it is retried while it has \
            attempts left. Needs the claim's lease_id.",
        route: Route::TaskSetStatus,
        shape: Shape::Object,
        read_only: false,
        idempotent: false,
    },
    Tool {
        name: "get_artifact",
        title: "Read an artifact",
        description: "One artifact of the context store by id: its type, source agent, content and \
            metadata. Also readable as the resource flightdeck://artifacts/{id}.",
        route: Route::ArtifactGet,
        shape: Shape::Object,
        read_only: true,
        idempotent: true,
    },
    Tool {
        name: "list_artifacts",
        title: "List a project's artifacts",
        description: "A project's artifacts, newest last, optionally of one artifact_type or \
            source_agent; pages with limit and cursor (next_cursor).",
        route: Route::ProjectArtifacts,
        shape: Shape::Object,
        read_only: true,
        idempotent: true,
    },
    Tool {
        name: "put_artifact",
        title: "Store an artifact",
        description: "Store an artifact in a project's context (project_id, source_agent, \
            artifact_type, content, metadata); with artifact_id, replace that artifact's content \
            and metadata instead.",
        route: Route::ArtifactCreate,
        shape: Shape::Object,
        read_only: false,
        idempotent: false,
    },
    Tool {
        name: "request_approval",
        title: "Ask a human",
        description: "Create a human-in-the-loop request (a question, options, optional task_id) \
            and wait up to wait_seconds (at most 25) for its answer. Answers the request: status \
            approved, rejected or amended with the response, or still pending with its id (read \
            it later with get_approval).",
        route: Route::HitlCreate,
        shape: Shape::Object,
        read_only: false,
        idempotent: false,
    },
    Tool {
        name: "get_approval",
        title: "Read an approval request",
        description: "A human-in-the-loop request by id: its status, question, options and answer.",
        route: Route::HitlGet,
        shape: Shape::Object,
        read_only: true,
        idempotent: true,
    },
    Tool {
        name: "list_pending_approvals",
        title: "List pending approvals",
        description: "The requests waiting for a human, optionally of one project; with \
            assignee \"me\", those this key is an assignee of.",
        route: Route::HitlPending,
        shape: Shape::Object,
        read_only: true,
        idempotent: true,
    },
    Tool {
        name: "answer_approval",
        title: "Answer an approval request",
        description: "Approve, reject or amend (with content) a pending request. The answer is \
            recorded as given by this API key.",
        route: Route::HitlRespond,
        shape: Shape::Object,
        read_only: false,
        idempotent: false,
    },
    Tool {
        name: "list_projects",
        title: "List projects",
        description: "The projects, with their status; pages with limit and cursor.",
        route: Route::ProjectsList,
        shape: Shape::Object,
        read_only: true,
        idempotent: true,
    },
    Tool {
        name: "project_status",
        title: "A project's status",
        description: "A project's tasks by status, its workflow and its progress.",
        route: Route::ProjectStatus,
        shape: Shape::Object,
        read_only: true,
        idempotent: true,
    },
    Tool {
        name: "list_queues",
        title: "List queues",
        description: "Every agent type's queue: paused, pending, working, waiting workers, oldest \
            pending age and concurrency limit.",
        route: Route::QueuesList,
        shape: Shape::Object,
        read_only: true,
        idempotent: true,
    },
    Tool {
        name: "events_since",
        title: "Read the event log",
        description: "Events after seq `since` (0: from the start), optionally of one project, in \
            order; pages with limit and next_cursor.",
        route: Route::EventsList,
        shape: Shape::Object,
        read_only: true,
        idempotent: true,
    },
    Tool {
        name: "service_levels",
        title: "Service levels",
        description: "Each service-level class's latency percentiles against its target, and \
            whether it is met.",
        route: Route::MonitoringPerformance,
        shape: Shape::Object,
        read_only: true,
        idempotent: true,
    },
];

/// A tool by name, if the server has it.
pub fn find(name: &str) -> Option<&'static Tool> {
    TOOLS.iter().find(|t| t.name == name)
}

const NAME_PATTERN: &str = "^[a-z][a-z0-9_.-]{0,63}$";

fn uuid(description: &str) -> Value {
    json!({"type": "string", "format": "uuid", "description": description})
}

fn page() -> (Value, Value) {
    (
        json!({"type": "integer", "minimum": 1, "maximum": 1000, "description": "page size [default: 100]"}),
        json!({"type": "string", "description": "next_cursor of the page before"}),
    )
}

fn wait() -> Value {
    json!({"type": "integer", "minimum": 0, "maximum": MAX_WAIT_SECONDS,
        "description": "how long to wait, in seconds [default: 0]"})
}

/// The arguments a tool takes: its input schema's properties (a test holds them equal), without
/// building the schema on every call.
pub fn arguments(tool: &Tool) -> &'static [&'static str] {
    match tool.name {
        "claim_task" => &["agent_type", "worker_id", "wait_seconds", "lease_seconds"],
        "heartbeat" => &[
            "task_id",
            "lease_id",
            "worker_id",
            "lease_seconds",
            "message",
            "percent",
        ],
        "report_progress" => &["task_id", "lease_id", "message", "percent", "data"],
        "report_usage" => &[
            "task_id",
            "lease_id",
            "report_id",
            "model",
            "provider",
            "input_tokens",
            "output_tokens",
            "cache_read_tokens",
            "cache_write_tokens",
            "cost_usd",
        ],
        "complete_task" => &["task_id", "lease_id", "output"],
        "fail_task" => &["task_id", "lease_id", "error_message"],
        "get_artifact" => &["artifact_id"],
        "list_artifacts" => &[
            "project_id",
            "artifact_type",
            "source_agent",
            "limit",
            "cursor",
        ],
        "put_artifact" => &[
            "project_id",
            "artifact_id",
            "source_agent",
            "artifact_type",
            "content",
            "metadata",
        ],
        "request_approval" => &[
            "project_id",
            "task_id",
            "question",
            "options",
            "timeout_seconds",
            "on_timeout",
            "escalate_to",
            "assignees",
            "wait_seconds",
        ],
        "get_approval" => &["approval_id"],
        "list_pending_approvals" => &["project_id", "assignee", "limit", "cursor"],
        "answer_approval" => &["approval_id", "action", "content", "comment"],
        "list_projects" => &["limit", "cursor"],
        "project_status" => &["project_id"],
        "events_since" => &["since", "project_id", "limit"],
        _ => &[],
    }
}

/// A tool's input schema (JSON Schema 2020-12).
pub fn input_schema(tool: &Tool) -> Value {
    let (limit, cursor) = page();
    let lease = uuid("the lease_id claim_task answered");
    let any = json!({"description": "any JSON"});
    let (properties, required): (Value, &[&str]) = match tool.name {
        "claim_task" => (
            json!({
                "agent_type": {"type": "string", "pattern": NAME_PATTERN, "description": "the agent type to work as"},
                "worker_id": {"type": "string", "minLength": 1, "maxLength": 200, "description": "this worker's name"},
                "wait_seconds": wait(),
                "lease_seconds": {"type": "number", "exclusiveMinimum": 0, "description": "the lease's length [default: the server's]"}}),
            &["agent_type", "worker_id"],
        ),
        "heartbeat" => (
            json!({"task_id": uuid("the task"), "lease_id": lease, "worker_id": {"type": "string"},
                "lease_seconds": {"type": "number", "exclusiveMinimum": 0},
                "message": {"type": "string"}, "percent": {"type": "number", "minimum": 0, "maximum": 100}}),
            &["task_id", "lease_id"],
        ),
        "report_progress" => (
            json!({"task_id": uuid("the task"), "lease_id": lease, "message": {"type": "string"},
                "percent": {"type": "number", "minimum": 0, "maximum": 100}, "data": any}),
            &["task_id"],
        ),
        "report_usage" => {
            let tokens = json!({"type": "integer", "minimum": 0});
            (
                json!({"task_id": uuid("the task"), "lease_id": lease.clone(),
                    "report_id": {"type": "string", "minLength": 1, "maxLength": 128, "description": "your id of this report: a repeat counts once"},
                    "model": {"type": "string", "minLength": 1, "maxLength": 128},
                    "provider": {"type": "string", "minLength": 1, "maxLength": 128},
                    "input_tokens": tokens.clone(), "output_tokens": tokens.clone(),
                    "cache_read_tokens": tokens.clone(), "cache_write_tokens": tokens,
                    "cost_usd": {"type": "number", "minimum": 0, "description": "what the call cost, if known"}}),
                &[
                    "task_id",
                    "lease_id",
                    "report_id",
                    "model",
                    "input_tokens",
                    "output_tokens",
                ],
            )
        }
        "complete_task" => (
            json!({"task_id": uuid("the task"), "lease_id": lease, "output": any}),
            &["task_id", "lease_id"],
        ),
        "fail_task" => (
            json!({"task_id": uuid("the task"), "lease_id": lease,
                "error_message": {"type": "string", "minLength": 1}}),
            &["task_id", "lease_id", "error_message"],
        ),
        "get_artifact" => (
            json!({"artifact_id": uuid("the artifact")}),
            &["artifact_id"],
        ),
        "list_artifacts" => (
            json!({"project_id": uuid("the project"),
                "artifact_type": {"type": "string", "pattern": NAME_PATTERN},
                "source_agent": {"type": "string", "pattern": NAME_PATTERN},
                "limit": limit, "cursor": cursor}),
            &["project_id"],
        ),
        "put_artifact" => (
            json!({"project_id": uuid("the project (not with artifact_id)"),
                "artifact_id": uuid("an artifact to replace"),
                "source_agent": {"type": "string", "pattern": NAME_PATTERN},
                "artifact_type": {"type": "string", "pattern": NAME_PATTERN},
                "content": any, "metadata": any}),
            &["content"],
        ),
        "request_approval" => (
            json!({"project_id": uuid("the project"), "task_id": uuid("the task it is about"),
                "question": {"type": "string", "minLength": 1},
                "options": {"type": "array", "items": {"type": "string"}},
                "timeout_seconds": {"type": "integer", "minimum": 1, "description": "unanswered this long, on_timeout acts"},
                "on_timeout": {"type": "string", "enum": ["reject", "approve", "escalate"]},
                "escalate_to": {"type": "array", "items": {"type": "string"}},
                "assignees": {"type": "array", "items": {"type": "string"}, "description": "the API key names that may answer"},
                "wait_seconds": wait()}),
            &["project_id", "question"],
        ),
        "get_approval" => (
            json!({"approval_id": uuid("the request")}),
            &["approval_id"],
        ),
        "list_pending_approvals" => (
            json!({"project_id": uuid("only this project's"),
                "assignee": {"type": "string", "enum": ["me"], "description": "only those this key may answer"},
                "limit": limit, "cursor": cursor}),
            &[],
        ),
        "answer_approval" => (
            json!({"approval_id": uuid("the request"),
                "action": {"type": "string", "enum": ["approve", "reject", "amend"]},
                "content": {"description": "the amended content (amend)"},
                "comment": {"type": "string"}}),
            &["approval_id", "action"],
        ),
        "list_projects" => (json!({"limit": limit, "cursor": cursor}), &[]),
        "project_status" => (json!({"project_id": uuid("the project")}), &["project_id"]),
        "events_since" => (
            json!({"since": {"type": "integer", "minimum": 0, "description": "the last seq seen [default: 0]"},
                "project_id": uuid("only this project's"), "limit": limit}),
            &[],
        ),
        _ => (json!({}), &[]),
    };
    json!({"type": "object", "properties": properties, "required": required,
        "additionalProperties": false})
}

/// A tool's output schema: what its `structuredContent` holds when it succeeds (the REST route's
/// answer; the fields named are those a caller needs, the others are described in the OpenAPI
/// document).
pub fn output_schema(tool: &Tool) -> Value {
    let string = json!({"type": "string"});
    let list = json!({"type": "object", "required": ["items"], "properties": {
        "items": {"type": "array", "items": {"type": "object"}},
        "next_cursor": {"type": ["string", "null"]}}});
    let task = json!({"type": "object",
        "required": ["task_id", "project_id", "agent_type", "status", "instructions", "context_ids"],
        "properties": {"task_id": string, "project_id": string, "agent_type": string,
            "status": string, "instructions": string,
            "context_ids": {"type": "array", "items": string},
            "lease_id": string, "output": {},
            "workflow": {"type": "object", "description": "a workflow phase's context: workflow, version, phase, upstream outputs, fan-out item"}}});
    match tool.name {
        "claim_task" => json!({"type": "object", "required": ["task"], "properties": {
            "task": {"anyOf": [{"type": "null"}, task]}}}),
        "heartbeat" | "complete_task" | "fail_task" => task,
        "report_usage" => json!({"type": "object",
            "required": ["usage_id", "task_id", "model", "cost_usd", "cost_source", "lease_lost", "repeated", "task_usage"],
            "properties": {"usage_id": string, "task_id": string, "model": string,
                "cost_usd": {"type": "number"}, "cost_source": {"type": "string", "enum": ["reported", "priced", "unpriced"]},
                "lease_lost": {"type": "boolean"}, "repeated": {"type": "boolean"},
                "task_usage": {"type": "object", "description": "the task's totals: reports, tokens by kind, cost_usd"}}}),
        "get_artifact" | "put_artifact" => json!({"type": "object",
            "required": ["context_id", "project_id", "source_agent", "artifact_type", "content"],
            "properties": {"context_id": string, "project_id": string, "source_agent": string,
                "artifact_type": string, "content": {}, "metadata": {}, "version": {"type": "integer"}}}),
        "answer_approval" => json!({"type": "object",
            "required": ["request_id", "action", "status", "request"], "properties": {
            "request_id": string, "action": string, "status": string,
            "workflow_resumed": {"type": "boolean"}, "responded_by": {"type": ["string", "null"]},
            "request": {"type": "object"}}}),
        "request_approval" | "get_approval" => json!({"type": "object",
            "required": ["request_id", "project_id", "question", "status"], "properties": {
            "request_id": string, "project_id": string, "question": string,
            "status": {"type": "string", "description": "pending, approved, rejected, amended or expired"},
            "user_response": {}, "amended_content": {}, "responded_by": {"type": ["string", "null"]}}}),
        "list_queues" => json!({"type": "object", "required": ["queues"], "properties": {
            "queues": {"type": "array", "items": {"type": "object"}}}}),
        "list_artifacts" | "list_pending_approvals" | "list_projects" | "events_since" => list,
        _ => json!({"type": "object"}),
    }
}

/// A refusal of a tool's arguments, before any route sees them.
pub fn bad(field: &str, message: impl std::fmt::Display) -> ApiError {
    ApiError::invalid_field(field, message)
}

/// The arguments of a call.
pub struct Args<'a>(pub &'a Map<String, Value>);

impl Args<'_> {
    /// A required id, canonical, for a path.
    pub fn id(&self, field: &str) -> Result<String, ApiError> {
        match self.0.get(field) {
            None | Some(Value::Null) => Err(bad(field, "is required")),
            Some(Value::String(text)) => Id::parse(text)
                .map(|id| id.to_string())
                .ok_or_else(|| bad(field, format!("`{text}` is not a UUID"))),
            Some(_) => Err(bad(field, "must be a string (a UUID)")),
        }
    }

    pub fn opt_id(&self, field: &str) -> Result<Option<String>, ApiError> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(None),
            _ => self.id(field).map(Some),
        }
    }

    /// An optional string, for a query.
    pub fn opt_str(&self, field: &str) -> Result<Option<&str>, ApiError> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Ok(Some(text)),
            Some(_) => Err(bad(field, "must be a string")),
        }
    }

    /// An optional whole number, at most `max`.
    pub fn opt_u64(&self, field: &str, max: u64) -> Result<Option<u64>, ApiError> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => match n.as_u64() {
                Some(n) if n <= max => Ok(Some(n)),
                _ => Err(bad(
                    field,
                    format!("must be a whole number from 0 to {max}"),
                )),
            },
            Some(_) => Err(bad(
                field,
                format!("must be a whole number from 0 to {max}"),
            )),
        }
    }

    /// The listed arguments that were given, as a route's body.
    pub fn body(&self, fields: &[&str]) -> Map<String, Value> {
        fields
            .iter()
            .filter_map(|f| self.0.get(*f).map(|v| ((*f).to_string(), v.clone())))
            .collect()
    }

    /// Refuses an argument the tool does not take (a misspelt one would be silently lost).
    pub fn only(&self, tool: &Tool) -> Result<(), ApiError> {
        let known = arguments(tool);
        for key in self.0.keys() {
            if !known.contains(&key.as_str()) {
                return Err(bad(key, format!("is not an argument of {}", tool.name)));
            }
        }
        Ok(())
    }
}

/// The REST call a tool makes: method, path with query, body.
pub struct Call {
    pub method: Method,
    pub path: String,
    pub body: Option<Value>,
}

fn get(path: String) -> Call {
    Call {
        method: Method::GET,
        path,
        body: None,
    }
}

fn post(path: String, body: Map<String, Value>) -> Call {
    Call {
        method: Method::POST,
        path,
        body: Some(Value::Object(body)),
    }
}

/// Appends `?k=v&…` for the given pairs.
fn with_query(path: &str, pairs: &[(&str, Option<String>)]) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    let mut any = false;
    for (key, value) in pairs {
        if let Some(value) = value {
            query.append_pair(key, value);
            any = true;
        }
    }
    if any {
        format!("{path}?{}", query.finish())
    } else {
        path.to_string()
    }
}

/// The REST call of a tool (`request_approval`'s wait is `super`'s).
pub fn call(tool: &Tool, args: &Args<'_>) -> Result<Call, ApiError> {
    args.only(tool)?;
    let limit = || {
        args.opt_u64("limit", 1000)
            .map(|n| n.map(|n| n.to_string()))
    };
    let cursor = || args.opt_str("cursor").map(|c| c.map(str::to_owned));
    Ok(match tool.name {
        "claim_task" => {
            let mut body = args.body(&["agent_type", "worker_id", "lease_seconds"]);
            if let Some(seconds) = args.opt_u64("wait_seconds", MAX_WAIT_SECONDS)? {
                body.insert("wait_ms".into(), json!(seconds * 1000));
            }
            post("/api/v1/tasks/claim".into(), body)
        }
        "heartbeat" => {
            let id = args.id("task_id")?;
            let body = args.body(&[
                "lease_id",
                "worker_id",
                "lease_seconds",
                "message",
                "percent",
            ]);
            post(format!("/api/v1/tasks/{id}/heartbeat"), body)
        }
        "report_progress" => {
            let id = args.id("task_id")?;
            let body = args.body(&["lease_id", "message", "percent", "data"]);
            post(format!("/api/v1/tasks/{id}/progress"), body)
        }
        "report_usage" => {
            let id = args.id("task_id")?;
            let body = args.body(&arguments(tool)[1..]);
            post(format!("/api/v1/tasks/{id}/usage"), body)
        }
        "complete_task" | "fail_task" => {
            let id = args.id("task_id")?;
            let mut body = args.body(&["lease_id", "output", "error_message"]);
            let status = if tool.name == "complete_task" {
                "completed"
            } else {
                "failed"
            };
            body.insert("status".into(), json!(status));
            post(format!("/api/v1/tasks/{id}/status"), body)
        }
        "get_artifact" => get(format!(
            "/api/v1/context/artifacts/{}",
            args.id("artifact_id")?
        )),
        "list_artifacts" => {
            let id = args.id("project_id")?;
            let path = format!("/api/v1/context/project/{id}/artifacts");
            get(with_query(
                &path,
                &[
                    (
                        "artifact_type",
                        args.opt_str("artifact_type")?.map(str::to_owned),
                    ),
                    (
                        "source_agent",
                        args.opt_str("source_agent")?.map(str::to_owned),
                    ),
                    ("limit", limit()?),
                    ("cursor", cursor()?),
                ],
            ))
        }
        "put_artifact" => match args.opt_id("artifact_id")? {
            Some(id) => {
                for field in ["project_id", "source_agent", "artifact_type"] {
                    if args.0.contains_key(field) {
                        return Err(bad(
                            field,
                            "is not taken with artifact_id (a replaced artifact keeps its own)",
                        ));
                    }
                }
                Call {
                    method: Method::PATCH,
                    path: format!("/api/v1/context/artifacts/{id}"),
                    body: Some(Value::Object(args.body(&["content", "metadata"]))),
                }
            }
            None => post(
                "/api/v1/context/artifacts".into(),
                args.body(&[
                    "project_id",
                    "source_agent",
                    "artifact_type",
                    "content",
                    "metadata",
                ]),
            ),
        },
        "request_approval" => {
            args.opt_u64("wait_seconds", MAX_WAIT_SECONDS)?;
            // Every argument but the wait is the request's.
            let fields: Vec<&str> = arguments(tool)
                .iter()
                .copied()
                .filter(|f| *f != "wait_seconds")
                .collect();
            post("/api/v1/hitl".into(), args.body(&fields))
        }
        "get_approval" => get(format!("/api/v1/hitl/{}", args.id("approval_id")?)),
        "list_pending_approvals" => get(with_query(
            "/api/v1/hitl/pending",
            &[
                ("project_id", args.opt_id("project_id")?),
                ("assignee", args.opt_str("assignee")?.map(str::to_owned)),
                ("limit", limit()?),
                ("cursor", cursor()?),
            ],
        )),
        "answer_approval" => {
            let id = args.id("approval_id")?;
            post(
                format!("/api/v1/hitl/{id}/respond"),
                args.body(&["action", "content", "comment"]),
            )
        }
        "list_projects" => get(with_query(
            "/api/v1/projects",
            &[("limit", limit()?), ("cursor", cursor()?)],
        )),
        "project_status" => get(format!(
            "/api/v1/projects/{}/status",
            args.id("project_id")?
        )),
        "list_queues" => get("/api/v1/queues".into()),
        "events_since" => get(with_query(
            "/api/v1/events",
            &[
                (
                    "since",
                    args.opt_u64("since", u64::MAX)?.map(|n| n.to_string()),
                ),
                ("project_id", args.opt_id("project_id")?),
                ("limit", limit()?),
            ],
        )),
        "service_levels" => get("/api/v1/monitoring/performance".into()),
        other => unreachable!("tool {other} has no call"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_has_schemas_its_route_and_a_unique_name() {
        let mut names = std::collections::HashSet::new();
        for tool in TOOLS {
            assert!(names.insert(tool.name), "{} twice", tool.name);
            let input = input_schema(tool);
            assert_eq!(input["type"], "object", "{}", tool.name);
            for required in input["required"].as_array().unwrap() {
                let field = required.as_str().unwrap();
                assert!(
                    input["properties"].get(field).is_some(),
                    "{}: required {field} is not a property",
                    tool.name
                );
            }
            assert_eq!(output_schema(tool)["type"], "object", "{}", tool.name);
            let mut properties: Vec<&str> = input["properties"]
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            let mut taken = arguments(tool).to_vec();
            properties.sort();
            taken.sort();
            assert_eq!(
                properties, taken,
                "{}: arguments() and the schema",
                tool.name
            );
            assert_eq!(
                tool.read_only,
                tool.route.access().role().is_none(),
                "{}: read_only must say whether its route needs a role",
                tool.name
            );
        }
        assert_eq!(TOOLS.len(), 18);
    }

    #[test]
    fn arguments_are_checked_by_name() {
        let tool = find("heartbeat").unwrap();
        let args = json!({"task_id": "nope", "lease_id": "x"});
        let e = call(tool, &Args(args.as_object().unwrap()))
            .err()
            .expect("a bad id is refused");
        assert!(e.message.contains("task_id"), "{}", e.message);
        let args = json!({"task_id": Id::new_v7().to_string(), "lease_id": "x", "leas": 1});
        let e = call(tool, &Args(args.as_object().unwrap()))
            .err()
            .expect("an unknown argument is refused");
        assert!(e.message.contains("leas"), "{}", e.message);
        let args = json!({"agent_type": "coder", "worker_id": "w", "wait_seconds": 26});
        let e = call(
            find("claim_task").unwrap(),
            &Args(args.as_object().unwrap()),
        )
        .err()
        .expect("a wait past 25 s is refused");
        assert!(e.message.contains("wait_seconds"), "{}", e.message);
    }
}
