//! `GET /openapi.json`: an OpenAPI 3.1 description of every route, its paths, methods, summaries
//! and statuses from the route table (`http::router::TABLE`), the bodies' schemas from here.

use serde_json::{Value, json};

use super::AppState;
use crate::http::body::json as json_response;
use crate::http::router::TABLE;
use crate::http::{ApiError, ErrorCode, Response, Route, StatusCode};

/// What an agent or artifact type looks like (`domain::names`).
const NAME_PATTERN: &str = "^[a-z][a-z0-9_.-]{0,63}$";

fn schemas() -> Value {
    let string = json!({"type": "string"});
    let uuid = json!({"type": "string", "format": "uuid"});
    let any = json!({});
    let tokens =
        json!({"type": "integer", "minimum": 0, "maximum": crate::domain::usage::MAX_TOKENS});
    let name = json!({"type": "string", "minLength": 1, "maxLength": crate::domain::usage::MAX_NAME_BYTES});
    // One model-usage report (OpenTelemetry GenAI's `gen_ai.usage.*`, `gen_ai.request.model`).
    let usage_report = json!({"type": "object", "required": ["report_id", "model", "input_tokens", "output_tokens"],
        "additionalProperties": false, "properties": {
        "report_id": {"type": "string", "minLength": 1, "maxLength": crate::domain::usage::MAX_NAME_BYTES,
            "description": "the worker's id of the report: a repeat for the same task counts once"},
        "model": name.clone(), "provider": {"type": ["string", "null"], "minLength": 1, "maxLength": crate::domain::usage::MAX_NAME_BYTES},
        "input_tokens": tokens.clone(), "output_tokens": tokens.clone(),
        "cache_read_tokens": tokens.clone(), "cache_write_tokens": tokens.clone(),
        "cost_usd": {"type": ["number", "null"], "minimum": 0, "maximum": crate::domain::usage::MAX_COST_USD,
            "description": "what the call cost; without it the tokens are priced by [[prices]]"}}});
    let usage_field = json!({"description": "model usage spent meanwhile, recorded durably first (a lost lease still records it)",
        "oneOf": [{"type": "null"}, usage_report.clone(),
            {"type": "array", "items": usage_report.clone(), "maxItems": crate::domain::usage::MAX_REPORTS}]});
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
            "agent_type": {"type": "string", "pattern": NAME_PATTERN}, "instructions": {"type": "string", "minLength": 1},
            "context_ids": {"type": "array", "items": uuid, "maxItems": 1000},
            "priority": {"type": ["integer", "null"], "minimum": 1, "maximum": 5,
                "description": "1 is the highest; claims hand out the highest priority first (default 3)"}}},
        "StartWorkflow": {"type": "object", "required": ["workflow"], "properties": {"workflow": string, "context": any}},
        "CancelWorkflow": {"type": "object", "additionalProperties": false, "properties": {"reason": {"type": ["string", "null"], "maxLength": 10000}}},
        "WorkflowDefinition": {"type": "object", "required": ["phases"], "additionalProperties": false, "properties": {
            "name": {"type": ["string", "null"], "description": "if given, the name in the path"},
            "phases": {"type": "array", "minItems": 1, "maxItems": 100, "items": {"type": "object",
                "required": ["agent_type", "instructions"], "additionalProperties": false, "properties": {
                "id": {"type": ["string", "null"], "pattern": NAME_PATTERN, "description": "unique in the workflow [default: the agent type; `coder.2` for a second default `coder`]"},
                "agent_type": {"type": "string", "pattern": NAME_PATTERN},
                "instructions": {"type": "string", "minLength": 1, "description": "`{project}` is replaced by the project's name, `{context}` by the run's context JSON"},
                "produces": {"type": "array", "items": {"type": "string", "pattern": NAME_PATTERN}},
                "gate": {"type": "boolean", "description": "a human approves the hand-off at the medium oversight level (high gates every phase, low none)"},
                "priority": {"type": ["integer", "null"], "minimum": 1, "maximum": 5},
                "depends_on": {"type": ["array", "null"], "items": {"type": "string"},
                    "description": "the ids of the phases it waits for [default: the phase before it; [] starts at once]; no cycles"},
                "for_each": {"type": ["string", "null"], "description": "`<phase id>.output.<field>`: one task per element of that list in the output of a phase it depends on (at most --max-fan-out)"},
                "gate_timeout_seconds": {"type": ["integer", "null"], "minimum": 1},
                "gate_on_timeout": {"type": ["string", "null"], "enum": ["reject", "approve", "escalate", null]},
                "gate_escalate_to": {"type": "array", "items": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"}, "maxItems": 20},
                "gate_assignees": {"type": "array", "items": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"}, "maxItems": 20}}}}}},
        "SetStatus": {"type": "object", "required": ["status"], "properties": {
            "status": {"enum": ["pending", "working", "completed", "failed", "cancelled"]},
            "output": any, "error_message": {"type": ["string", "null"]},
            "lease_id": {"type": ["string", "null"], "format": "uuid",
                "description": "the claim's fencing token: required to complete or fail a claimed task"},
            "usage": usage_field.clone()}},
        "Claim": {"type": "object", "required": ["agent_type", "worker_id"], "properties": {
            "agent_type": {"type": "string", "pattern": NAME_PATTERN}, "worker_id": string, "lease_seconds": {"type": ["number", "null"]},
            "wait_ms": {"type": ["integer", "null"], "minimum": 0,
                "description": "with nothing to hand out, wait up to this long (at most --max-claim-wait-ms) for a task"}}},
        "Heartbeat": {"type": "object", "properties": {"worker_id": {"type": ["string", "null"]}, "lease_seconds": {"type": ["number", "null"]},
            "lease_id": {"type": ["string", "null"], "format": "uuid", "description": "the claim's fencing token (required for a claimed task)"},
            "message": {"type": ["string", "null"]}, "percent": {"type": ["number", "null"], "minimum": 0, "maximum": 100},
            "data": any, "usage": usage_field.clone()}},
        "Usage": usage_report.clone(),
        "UsageReport": {"type": "object", "required": ["report_id", "model", "input_tokens", "output_tokens"],
            "additionalProperties": false, "properties": {
            "lease_id": {"type": ["string", "null"], "format": "uuid", "description": "the claim the usage was spent under; a lost one still records it, marked lease_lost"},
            "worker_id": {"type": ["string", "null"]},
            "report_id": usage_report["properties"]["report_id"].clone(), "model": usage_report["properties"]["model"].clone(),
            "provider": usage_report["properties"]["provider"].clone(),
            "input_tokens": tokens.clone(), "output_tokens": tokens.clone(),
            "cache_read_tokens": tokens.clone(), "cache_write_tokens": tokens.clone(),
            "cost_usd": usage_report["properties"]["cost_usd"].clone()}},
        "Budget": {"type": "object", "additionalProperties": false, "properties": {
            "max_cost_usd": {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": crate::domain::budget::MAX_BUDGET_USD},
            "max_tokens": {"type": ["integer", "null"], "minimum": 1},
            "window": {"type": ["string", "null"], "enum": ["total", "day", "month", null], "description": "what the use is counted over [default: total]; day and month are UTC"},
            "warn_percent": {"type": ["integer", "null"], "minimum": 1, "maximum": 100, "description": "budget_warning at this share of a limit [default: 80]"}},
            "description": "at least one of max_cost_usd and max_tokens"},
        "CreateArtifact": {"type": "object", "required": ["project_id", "source_agent", "artifact_type", "content"], "properties": {
            "project_id": uuid, "source_agent": {"type": "string", "pattern": NAME_PATTERN}, "artifact_type": {"type": "string", "pattern": NAME_PATTERN}, "content": any, "metadata": any}},
        "UpdateArtifact": {"type": "object", "properties": {"content": any, "metadata": any}},
        "Batch": {"type": "object", "required": ["context_ids"], "properties": {"context_ids": {"type": "array", "items": uuid, "maxItems": 1000}}},
        "CreateHitl": {"type": "object", "required": ["project_id", "question"], "properties": {
            "project_id": uuid, "task_id": {"type": ["string", "null"]}, "question": {"type": "string", "minLength": 1},
            "options": {"type": "array", "items": string}, "expires_in_seconds": {"type": ["integer", "null"], "minimum": 1},
            "timeout_seconds": {"type": ["integer", "null"], "minimum": 1, "description": "unanswered this long, on_timeout acts (not with expires_in_seconds)"},
            "on_timeout": {"type": ["string", "null"], "enum": ["reject", "approve", "escalate", null], "description": "what a timeout does [default: reject]; escalate opens it to escalate_to with a fresh timeout"},
            "escalate_to": {"type": "array", "items": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"}, "maxItems": 20},
            "assignees": {"type": "array", "items": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"}, "maxItems": 20, "description": "the API key names that may answer it (others: 403 not_an_assignee)"}}},
        "BulkApprove": {"type": "object", "required": ["request_ids"], "properties": {
            "request_ids": {"type": "array", "items": uuid}, "comment": {"type": ["string", "null"]}}},
        "Progress": {"type": "object", "properties": {
            "lease_id": {"type": ["string", "null"], "format": "uuid"},
            "message": {"type": ["string", "null"]}, "percent": {"type": ["number", "null"], "minimum": 0, "maximum": 100},
            "data": any, "usage": usage_field.clone()}},
        "DeadLetters": {"type": "object", "properties": {"seq": {"type": ["integer", "null"], "minimum": 0,
            "description": "the dead letter's event seq; absent or null: every dead letter of the webhook"}}},
        "QueueLimit": {"type": "object", "required": ["max_working"], "properties": {
            "max_working": {"type": ["integer", "null"], "minimum": 0, "maximum": 4_294_967_295u64}},
            "additionalProperties": false},
        "SetLevel": {"type": "object", "required": ["level"], "properties": {"level": {"enum": ["high", "medium", "low"]}}},
        "JsonRpcRequest": {"type": "object", "required": ["jsonrpc", "method"], "properties": {
            "jsonrpc": {"const": "2.0"}, "id": {"type": ["string", "integer"]}, "method": string,
            "params": {"type": "object"}},
            "description": "one JSON-RPC 2.0 message of the Model Context Protocol (README: MCP)"},
        "JsonRpcError": {"type": "object", "required": ["jsonrpc", "error"], "properties": {
            "jsonrpc": {"const": "2.0"}, "id": {"type": ["string", "integer", "null"]},
            "error": {"type": "object", "required": ["code", "message"], "properties": {
                "code": {"type": "integer"}, "message": string, "data": any}}}},
        "Respond": {"type": "object", "required": ["action"], "properties": {
            "action": {"enum": ["approve", "reject", "amend"]}, "content": any, "comment": {"type": ["string", "null"]}}}
    })
}

/// The document.
pub fn document() -> Value {
    let mut paths = serde_json::Map::new();
    let error = json!({"description": "an error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    for op in TABLE {
        // The first template is the documented one (the console's assets are not described).
        let path = op.paths[0];
        let mut parameters = Vec::new();
        if path.contains("{id}") {
            parameters.push(json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string", "format": "uuid"}}));
        }
        if path.contains("{name}") {
            parameters.push(json!({"name": "name", "in": "path", "required": true,
                "description": "a webhook's name",
                "schema": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"}}));
        }
        if path.contains("{workflow}") {
            parameters.push(json!({"name": "workflow", "in": "path", "required": true,
                "description": "a workflow definition's name",
                "schema": {"type": "string", "pattern": NAME_PATTERN}}));
        }
        if path.contains("{scope}") {
            parameters.push(json!({"name": "scope", "in": "path", "required": true,
                "description": "global, project:{id} or agent_type:{name}",
                "schema": {"type": "string",
                    "pattern": "^(global|project:[0-9A-Fa-f-]{36}|agent_type:[a-z][a-z0-9_.-]{0,63})$"}}));
        }
        if path.contains("{agent_type}") {
            parameters.push(json!({"name": "agent_type", "in": "path", "required": true,
                "description": "an agent type: BotArmy's (orchestrator, analyst, architect, coder, tester, deployer) or any the team names",
                "schema": {"type": "string", "pattern": NAME_PATTERN}}));
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
        } else if op.status == 204 {
            json!({"description": "done; no body"})
        } else {
            json!({"description": "success", "content": {"application/json": {"schema": {"type": ["object", "array"]}}}})
        };
        responses.insert(op.status.to_string(), success);
        if op.route == Route::TaskClaim {
            responses.insert("204".into(), json!({"description": "nothing to claim"}));
        }
        if matches!(op.route, Route::WorkflowDefPut | Route::BudgetPut) {
            responses.insert(
                "201".into(),
                json!({"description": "a new definition or budget",
                "content": {"application/json": {"schema": {"type": "object"}}}}),
            );
        }
        if op.route == Route::TaskUsage {
            responses.insert(
                "200".into(),
                json!({"description": "a report_id the task had: the first report's entry",
                "content": {"application/json": {"schema": {"type": "object"}}}}),
            );
        }
        for code in [
            "400", "401", "403", "404", "405", "408", "409", "413", "415", "422", "426", "503",
            "507",
        ] {
            responses.insert(code.into(), error.clone());
        }
        if op.route == Route::Mcp {
            // JSON-RPC: a notification is accepted without a body; a malformed request, a version
            // or envelope refused, or an unknown method (2026-07-28) is a JSON-RPC error.
            responses.insert(
                "202".into(),
                json!({"description": "a notification or response, accepted"}),
            );
            let rpc_error = json!({"description": "a JSON-RPC error, or an error of the HTTP layer",
                "content": {"application/json": {"schema": {"anyOf": [
                    {"$ref": "#/components/schemas/Error"},
                    {"$ref": "#/components/schemas/JsonRpcError"}]}}}});
            responses.insert("400".into(), rpc_error.clone());
            responses.insert("404".into(), rpc_error);
        }
        let mut operation = json!({
            "operationId": op.route.name(),
            "summary": op.summary,
            "parameters": parameters,
            "responses": responses,
        });
        // Which key may call it: `read` (any key), or the role a write needs (`http::auth`).
        match (op.access, op.access.role()) {
            (_, Some(role)) => operation["x-flightdeck-role"] = json!(role.as_str()),
            (crate::http::router::Access::Read, None) => {
                operation["x-flightdeck-role"] = json!("read")
            }
            _ => {}
        }
        if let Some(schema) = op.body {
            operation["requestBody"] = json!({"required": true, "content": {"application/json": {
                "schema": {"$ref": format!("#/components/schemas/{schema}")}}}});
        }
        let method = op.verb.as_str().to_ascii_lowercase();
        paths.entry(path).or_insert_with(|| json!({}))[method] = operation;
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
    use crate::http::router::Answers;

    /// Every route is in the document at its first template and method, named by its label, and
    /// every body schema a row names exists; a route reads a body exactly when its row has one.
    #[test]
    fn the_document_describes_every_route_of_the_table() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        let schemas = schemas();
        let mut operations = 0;
        for def in TABLE {
            let method = def.verb.as_str().to_ascii_lowercase();
            let op = &doc["paths"][def.paths[0]][&method];
            assert_eq!(op["operationId"], def.name, "{:?}", def.route);
            // Every parameter of the path's template is declared (schemathesis refuses the
            // document otherwise).
            for part in def.paths[0].split('/') {
                if let Some(name) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                    let declared = op["parameters"].as_array().is_some_and(|ps| {
                        ps.iter().any(|p| p["name"] == name && p["in"] == "path")
                    });
                    assert!(declared, "{:?}: {{{name}}} is not declared", def.route);
                }
            }
            assert_eq!(op["summary"], def.summary, "{:?}", def.route);
            assert!(
                op["responses"][def.status.to_string()].is_object(),
                "{:?}",
                def.route
            );
            match def.body {
                Some(schema) => {
                    assert!(schemas[schema].is_object(), "no schema {schema}");
                    assert_eq!(
                        op["requestBody"]["content"]["application/json"]["schema"]["$ref"],
                        format!("#/components/schemas/{schema}")
                    );
                }
                None => assert!(op["requestBody"].is_null(), "{:?}", def.route),
            }
            assert_eq!(
                def.body.is_some(),
                def.answers == Answers::Body,
                "{:?} reads a body exactly when it has a schema",
                def.route
            );
            operations += 1;
        }
        let documented: usize = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .map(|methods| methods.as_object().unwrap().len())
            .sum();
        assert_eq!(documented, operations);
        assert_eq!(operations, Route::ALL.len());
    }
}
