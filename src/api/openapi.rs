//! `GET /openapi.json`: an OpenAPI 3.1 description of every route, built from one table so a test
//! can check that the table and the router agree.

use serde_json::{Value, json};

use super::AppState;
use crate::domain::{AgentType, Vocabulary};
use crate::http::body::json as json_response;
use crate::http::{ApiError, ErrorCode, Response, Route, StatusCode};

/// One operation: method, path template, route, summary, request body schema, success status.
pub struct Operation {
    pub method: &'static str,
    pub path: &'static str,
    pub route: Route,
    pub summary: &'static str,
    pub body: Option<&'static str>,
    pub status: u16,
}

macro_rules! op {
    ($m:literal, $p:literal, $r:ident, $s:literal, $b:expr, $st:literal) => {
        Operation {
            method: $m,
            path: $p,
            route: Route::$r,
            summary: $s,
            body: $b,
            status: $st,
        }
    };
}

/// Every operation flightdeck serves.
pub fn operations() -> Vec<Operation> {
    vec![
        op!(
            "get",
            "/api/v1/projects",
            ProjectsList,
            "List projects, newest first",
            None,
            200
        ),
        op!(
            "post",
            "/api/v1/projects",
            ProjectsCreate,
            "Create a project",
            Some("CreateProject"),
            201
        ),
        op!(
            "get",
            "/api/v1/projects/{id}",
            ProjectGet,
            "A project with task counts",
            None,
            200
        ),
        op!(
            "get",
            "/api/v1/projects/{id}/status",
            ProjectStatus,
            "A project's tasks (BotArmy)",
            None,
            200
        ),
        op!(
            "get",
            "/api/v1/projects/{id}/completion",
            ProjectCompletion,
            "Completion (BotArmy)",
            None,
            200
        ),
        op!(
            "get",
            "/api/v1/projects/{id}/tasks",
            ProjectTasksList,
            "A project's tasks, filtered",
            None,
            200
        ),
        op!(
            "post",
            "/api/v1/projects/{id}/tasks",
            ProjectTasksCreate,
            "Create a task (BotArmy)",
            Some("CreateTask"),
            201
        ),
        op!(
            "get",
            "/api/v1/projects/{id}/workflow",
            WorkflowGet,
            "The project's workflow",
            None,
            200
        ),
        op!(
            "post",
            "/api/v1/projects/{id}/workflow",
            WorkflowStart,
            "Start a workflow",
            Some("StartWorkflow"),
            201
        ),
        op!("get", "/api/v1/tasks/{id}", TaskGet, "A task", None, 200),
        op!(
            "post",
            "/api/v1/tasks/{id}/status",
            TaskSetStatus,
            "Change a task's status",
            Some("SetStatus"),
            200
        ),
        op!(
            "post",
            "/api/v1/tasks/claim",
            TaskClaim,
            "Claim the oldest pending task of an agent type",
            Some("Claim"),
            200
        ),
        op!(
            "post",
            "/api/v1/tasks/{id}/heartbeat",
            TaskHeartbeat,
            "Extend a claim's lease",
            Some("Heartbeat"),
            200
        ),
        op!(
            "get",
            "/api/v1/agents/status",
            AgentsStatus,
            "Every agent (BotArmy)",
            None,
            200
        ),
        op!(
            "get",
            "/api/v1/agents/status/{agent_type}",
            AgentStatus,
            "One agent (BotArmy)",
            None,
            200
        ),
        op!(
            "get",
            "/api/v1/agents/status-history/{agent_type}",
            AgentStatusHistory,
            "An agent's status changes (BotArmy)",
            None,
            200
        ),
        op!(
            "post",
            "/api/v1/tasks/{id}/progress",
            TaskProgress,
            "Report a working task's progress (ephemeral: reaches WebSocket subscribers, not the log)",
            Some("Progress"),
            202
        ),
        op!(
            "get",
            "/api/v1/queues",
            QueuesList,
            "Every agent type's queue: paused, pending, scheduled, working, waiting workers, oldest pending age, limit",
            None,
            200
        ),
        op!(
            "post",
            "/api/v1/queues/{agent_type}/pause",
            QueuePause,
            "Pause a queue: it hands out nothing, its tasks stay pending",
            None,
            200
        ),
        op!(
            "post",
            "/api/v1/queues/{agent_type}/resume",
            QueueResume,
            "Resume a queue",
            None,
            200
        ),
        op!(
            "patch",
            "/api/v1/queues/{agent_type}",
            QueueUpdate,
            "Set a queue's concurrency limit (max_working, or null for none)",
            Some("QueueLimit"),
            200
        ),
        op!(
            "post",
            "/api/v1/projects/{id}/pause",
            ProjectPause,
            "Pause a project: none of its tasks is handed out",
            None,
            200
        ),
        op!(
            "post",
            "/api/v1/projects/{id}/resume",
            ProjectResume,
            "Resume a project",
            None,
            200
        ),
        op!(
            "post",
            "/api/v1/agents/status/{agent_type}/reset",
            AgentReset,
            "Reset an agent to idle (BotArmy)",
            None,
            200
        ),
        op!(
            "post",
            "/api/v1/context/artifacts",
            ArtifactCreate,
            "Store an artifact",
            Some("CreateArtifact"),
            201
        ),
        op!(
            "post",
            "/api/v1/context/artifacts/batch",
            ArtifactBatch,
            "Fetch artifacts by id",
            Some("Batch"),
            200
        ),
        op!(
            "get",
            "/api/v1/context/artifacts/{id}",
            ArtifactGet,
            "An artifact (BotArmy)",
            None,
            200
        ),
        op!(
            "patch",
            "/api/v1/context/artifacts/{id}",
            ArtifactUpdate,
            "Update an artifact",
            Some("UpdateArtifact"),
            200
        ),
        op!(
            "delete",
            "/api/v1/context/artifacts/{id}",
            ArtifactDelete,
            "Delete an artifact",
            None,
            200
        ),
        op!(
            "get",
            "/api/v1/context/project/{id}/artifacts",
            ProjectArtifacts,
            "A project's artifacts (BotArmy)",
            None,
            200
        ),
        op!(
            "post",
            "/api/v1/hitl",
            HitlCreate,
            "Create a HITL request",
            Some("CreateHitl"),
            201
        ),
        op!(
            "get",
            "/api/v1/hitl/pending",
            HitlPending,
            "Pending HITL requests (BotArmy)",
            None,
            200
        ),
        op!(
            "post",
            "/api/v1/hitl/bulk/approve",
            HitlBulkApprove,
            "Approve several requests (BotArmy)",
            Some("BulkApprove"),
            200
        ),
        op!(
            "get",
            "/api/v1/hitl/project/{id}/requests",
            HitlProjectRequests,
            "A project's HITL requests (BotArmy)",
            None,
            200
        ),
        op!(
            "get",
            "/api/v1/hitl/project/{id}/oversight-level",
            OversightGet,
            "Oversight level (BotArmy)",
            None,
            200
        ),
        op!(
            "post",
            "/api/v1/hitl/project/{id}/oversight-level",
            OversightSet,
            "Set the oversight level (BotArmy)",
            Some("SetLevel"),
            200
        ),
        op!(
            "get",
            "/api/v1/hitl/{id}",
            HitlGet,
            "A HITL request (BotArmy)",
            None,
            200
        ),
        op!(
            "get",
            "/api/v1/hitl/{id}/history",
            HitlHistory,
            "A HITL request's history (BotArmy)",
            None,
            200
        ),
        op!(
            "post",
            "/api/v1/hitl/{id}/respond",
            HitlRespond,
            "Answer a HITL request (BotArmy)",
            Some("Respond"),
            200
        ),
        op!(
            "get",
            "/api/v1/events",
            EventsList,
            "The event log",
            None,
            200
        ),
        op!("get", "/ws", WsAll, "WebSocket: every event", None, 101),
        op!(
            "get",
            "/ws/{id}",
            WsProject,
            "WebSocket: one project's events",
            None,
            101
        ),
        op!("get", "/livez", Livez, "Liveness probe", None, 200),
        op!("get", "/readyz", Readyz, "Readiness probe", None, 200),
        op!("get", "/health", Health, "Health (BotArmy)", None, 200),
        op!(
            "get",
            "/health/detailed",
            HealthDetailed,
            "Health per component (BotArmy)",
            None,
            200
        ),
        op!(
            "get",
            "/health/ready",
            HealthReady,
            "Readiness (BotArmy)",
            None,
            200
        ),
        op!(
            "get",
            "/health/z",
            HealthZ,
            "Health checks (BotArmy)",
            None,
            200
        ),
        op!("get", "/metrics", Metrics, "Prometheus metrics", None, 200),
        op!(
            "get",
            "/api/v1/monitoring/metrics",
            MonitoringMetrics,
            "Windowed latency and figures",
            None,
            200
        ),
        op!(
            "get",
            "/api/v1/monitoring/performance",
            MonitoringPerformance,
            "Service levels",
            None,
            200
        ),
        op!(
            "get",
            "/api/v1/monitoring/alerts",
            MonitoringAlerts,
            "Alert rules and transitions",
            None,
            200
        ),
        op!(
            "get",
            "/api/v1/monitoring/history",
            MonitoringHistory,
            "The last hour of each class: p99 and rate every 30 s",
            None,
            200
        ),
        op!(
            "get",
            "/api/v1/monitoring/webhooks",
            MonitoringWebhooks,
            "Each webhook: its cursor, lag, deliveries and last error",
            None,
            200
        ),
        op!(
            "get",
            "/api/v1/auth/whoami",
            WhoAmI,
            "The presented API key's name and access",
            None,
            200
        ),
        op!("get", "/", Console, "The web console (HTML)", None, 200),
        op!(
            "post",
            "/api/v1/admin/backup",
            AdminBackup,
            "Write an online backup",
            None,
            201
        ),
        op!("get", "/openapi.json", OpenApi, "This document", None, 200),
    ]
}

fn schemas() -> Value {
    let string = json!({"type": "string"});
    let uuid = json!({"type": "string", "format": "uuid"});
    let any = json!({});
    // Every error code, from the one table, with its status and meaning.
    let codes: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    let meanings: serde_json::Map<String, Value> = ErrorCode::ALL
        .iter()
        .map(|c| {
            (
                c.as_str().to_string(),
                json!(format!("{}: {}", c.status().as_u16(), c.description())),
            )
        })
        .collect();
    json!({
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {
            "type": "object", "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "enum": codes, "x-meanings": meanings},
                "message": string}}}},
        "CreateProject": {"type": "object", "required": ["name"], "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 200}, "description": {"type": ["string", "null"]}}},
        "CreateTask": {"type": "object", "required": ["agent_type", "instructions"], "properties": {
            "agent_type": {"type": "string"}, "instructions": {"type": "string", "minLength": 1},
            "context_ids": {"type": "array", "items": uuid, "maxItems": 1000},
            "priority": {"type": ["integer", "null"], "minimum": 1, "maximum": 5,
                "description": "1 is the highest; claims hand out the highest priority first (default 3)"}}},
        "StartWorkflow": {"type": "object", "required": ["workflow"], "properties": {"workflow": string, "context": any}},
        "SetStatus": {"type": "object", "required": ["status"], "properties": {
            "status": {"enum": ["pending", "working", "completed", "failed", "cancelled"]},
            "output": any, "error_message": {"type": ["string", "null"]},
            "lease_id": {"type": ["string", "null"], "format": "uuid",
                "description": "the claim's fencing token: required to complete or fail a claimed task"}}},
        "Claim": {"type": "object", "required": ["agent_type", "worker_id"], "properties": {
            "agent_type": string, "worker_id": string, "lease_seconds": {"type": ["number", "null"]},
            "wait_ms": {"type": ["integer", "null"], "minimum": 0,
                "description": "with nothing to hand out, wait up to this long (at most --max-claim-wait-ms) for a task"}}},
        "Heartbeat": {"type": "object", "properties": {"worker_id": {"type": ["string", "null"]}, "lease_seconds": {"type": ["number", "null"]},
            "lease_id": {"type": ["string", "null"], "format": "uuid", "description": "the claim's fencing token (required for a claimed task)"},
            "message": {"type": ["string", "null"]}, "percent": {"type": ["number", "null"], "minimum": 0, "maximum": 100},
            "data": any}},
        "CreateArtifact": {"type": "object", "required": ["project_id", "source_agent", "artifact_type", "content"], "properties": {
            "project_id": uuid, "source_agent": string, "artifact_type": string, "content": any, "metadata": any}},
        "UpdateArtifact": {"type": "object", "properties": {"content": any, "metadata": any}},
        "Batch": {"type": "object", "required": ["context_ids"], "properties": {"context_ids": {"type": "array", "items": uuid, "maxItems": 1000}}},
        "CreateHitl": {"type": "object", "required": ["project_id", "question"], "properties": {
            "project_id": uuid, "task_id": {"type": ["string", "null"]}, "question": {"type": "string", "minLength": 1},
            "options": {"type": "array", "items": string}, "expires_in_seconds": {"type": ["integer", "null"], "minimum": 1}}},
        "BulkApprove": {"type": "object", "required": ["request_ids"], "properties": {
            "request_ids": {"type": "array", "items": uuid}, "comment": {"type": ["string", "null"]}}},
        "Progress": {"type": "object", "properties": {
            "lease_id": {"type": ["string", "null"], "format": "uuid"},
            "message": {"type": ["string", "null"]}, "percent": {"type": ["number", "null"], "minimum": 0, "maximum": 100},
            "data": any}},
        "QueueLimit": {"type": "object", "required": ["max_working"], "properties": {
            "max_working": {"type": ["integer", "null"], "minimum": 0, "maximum": 4_294_967_295u64}},
            "additionalProperties": false},
        "SetLevel": {"type": "object", "required": ["level"], "properties": {"level": {"enum": ["high", "medium", "low"]}}},
        "Respond": {"type": "object", "required": ["action"], "properties": {
            "action": {"enum": ["approve", "reject", "amend"]}, "content": any, "comment": {"type": ["string", "null"]}}}
    })
}

/// The document.
pub fn document() -> Value {
    let mut paths = serde_json::Map::new();
    let error = json!({"description": "an error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    for op in operations() {
        let mut parameters = Vec::new();
        if op.path.contains("{id}") {
            parameters.push(json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string", "format": "uuid"}}));
        }
        if op.path.contains("{agent_type}") {
            let agents: Vec<&str> = AgentType::ALL.iter().map(|a| a.as_str()).collect();
            parameters.push(json!({"name": "agent_type", "in": "path", "required": true, "schema": {"enum": agents}}));
        }
        use Route::{
            ArtifactCreate, HitlCreate, ProjectTasksCreate, ProjectsCreate, TaskClaim,
            WorkflowStart,
        };
        if matches!(
            op.route,
            ProjectsCreate
                | ProjectTasksCreate
                | ArtifactCreate
                | HitlCreate
                | WorkflowStart
                | TaskClaim
        ) {
            parameters.push(json!({"name": "Idempotency-Key", "in": "header", "required": false,
                "description": "a repeat with the same key and body answers the original without writing again",
                "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"}}));
        }
        let mut responses = serde_json::Map::new();
        let success = if op.route == Route::Metrics {
            json!({"description": "Prometheus text", "content": {"text/plain": {"schema": {"type": "string"}}}})
        } else if op.route == Route::Readyz {
            json!({"description": "ready", "content": {"application/json": {"schema": {"type": "object"}}, "text/plain": {"schema": {"type": "string"}}}})
        } else if op.route == Route::Console {
            json!({"description": "the console's page", "content": {"text/html": {"schema": {"type": "string"}}}})
        } else if op.status == 101 {
            json!({"description": "switching to WebSocket"})
        } else {
            json!({"description": "success", "content": {"application/json": {"schema": {"type": ["object", "array"]}}}})
        };
        responses.insert(op.status.to_string(), success);
        if op.route == Route::TaskClaim {
            responses.insert("204".into(), json!({"description": "nothing to claim"}));
        }
        for code in [
            "400", "401", "403", "404", "405", "408", "409", "413", "415", "422", "426", "503",
            "507",
        ] {
            responses.insert(code.into(), error.clone());
        }
        let mut operation = json!({
            "operationId": op.route.name(),
            "summary": op.summary,
            "parameters": parameters,
            "responses": responses,
        });
        if let Some(schema) = op.body {
            operation["requestBody"] = json!({"required": true, "content": {"application/json": {
                "schema": {"$ref": format!("#/components/schemas/{schema}")}}}});
        }
        paths.entry(op.path).or_insert_with(|| json!({}))[op.method] = operation;
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "flightdeck", "version": env!("CARGO_PKG_VERSION"),
                 "description": "State server for a team of AI agents. Errors are {\"error\":{\"code\",\"message\"}}."},
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}
        },
        "security": [{"bearer": []}, {}]
    })
}

pub fn serve(_state: &AppState) -> Result<Response, ApiError> {
    let body = serde_json::to_vec(&document()).unwrap_or_default();
    Ok(json_response(StatusCode::OK, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{Method, route};

    /// The table and the router agree: every route is documented, and every documented
    /// operation routes to the route it names.
    #[test]
    fn the_document_covers_every_route() {
        let ops = operations();
        for r in Route::ALL {
            assert!(
                ops.iter().any(|o| o.route == *r),
                "{} is not documented",
                r.name()
            );
        }
        for op in &ops {
            let path = op
                .path
                .replace("{id}", "0190b5c2-0000-7000-8000-000000000000")
                .replace("{agent_type}", "coder");
            let method = Method::from_bytes(op.method.to_uppercase().as_bytes()).unwrap();
            let matched = route(&method, &path)
                .unwrap_or_else(|e| panic!("{} {}: {e:?}", op.method, op.path));
            assert_eq!(matched.route, op.route, "{} {}", op.method, op.path);
        }
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        assert!(doc["paths"]["/api/v1/projects"]["post"]["requestBody"].is_object());
    }
}
