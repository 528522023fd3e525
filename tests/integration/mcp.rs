//! The MCP endpoint, black-box, through the official MCP Rust SDK's client (`rmcp`): the stateless
//! 2026-07-28 revision (`server/discover`) and the 2025-11-25 handshake, keys and roles, the
//! tools against the REST API's own state, fencing across both protocols, an approval answered
//! while its requester waits, resources, and the JSON-RPC errors a malformed request gets (over a
//! plain socket, as no SDK sends those).

use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientConfig, ProtocolVersion,
    ReadResourceRequestParams, ResourceContents,
};
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ClientLifecycleMode, ClientServiceExt};
use serde_json::{Value, json};

use crate::common::{Server, wait_for};

const WORKER: &str = "mcp-worker-secret-0123";
const REVIEWER: &str = "mcp-reviewer-secret-0123";
const READER: &str = "mcp-reader-secret-01234";
const OPS: &str = "mcp-operator-secret-0123";

type Client = RunningService<RoleClient, ClientConfig>;

fn keyed(extra: &[&str]) -> Server {
    let mut args = vec![
        "--api-key".to_string(),
        format!("agent:worker:{WORKER}"),
        "--api-key".to_string(),
        format!("alice:reviewer:{REVIEWER}"),
        "--api-key".to_string(),
        format!("watcher:ro:{READER}"),
        "--api-key".to_string(),
        format!("ops:rw:{OPS}"),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start_with(&args)
}

/// A client of the given revision: `None` for 2026-07-28 (discover, no handshake), or the
/// handshake's version.
async fn connect(s: &Server, key: &str, handshake: Option<ProtocolVersion>) -> Client {
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(s.url("/mcp")).auth_header(key),
    );
    let lifecycle = match handshake {
        None => ClientLifecycleMode::Discover {
            preferred_versions: vec![ProtocolVersion::V_2026_07_28],
        },
        Some(_) => ClientLifecycleMode::Initialize,
    };
    let mut config = ClientConfig::default();
    if let Some(version) = handshake {
        config.protocol_version = version;
    }
    config
        .serve_with_lifecycle(transport, lifecycle)
        .await
        .expect("the MCP client connects")
}

async fn call(client: &Client, tool: &str, args: Value) -> CallToolResult {
    let Value::Object(args) = args else {
        panic!("arguments are an object")
    };
    client
        .call_tool(CallToolRequestParams::new(tool.to_string()).with_arguments(args))
        .await
        .unwrap_or_else(|e| panic!("{tool}: {e}"))
}

/// A call that must succeed: its structured content, which the text content repeats.
async fn ok(client: &Client, tool: &str, args: Value) -> Value {
    let result = call(client, tool, args).await;
    let structured = result
        .structured_content
        .clone()
        .unwrap_or_else(|| panic!("{tool} answered no structured content"));
    assert_ne!(result.is_error, Some(true), "{tool} failed: {structured}");
    let text = result.content[0]
        .as_text()
        .expect("the first content is text")
        .text
        .clone();
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap(),
        structured,
        "{tool}: the text is the structured content"
    );
    structured
}

/// A call that must be refused: flightdeck's error code and message.
async fn refused(client: &Client, tool: &str, args: Value) -> (String, String) {
    let result = call(client, tool, args).await;
    assert_eq!(result.is_error, Some(true), "{tool} was not refused");
    let error = &result.structured_content.expect("a refusal is structured")["error"];
    (
        error["code"].as_str().unwrap().to_string(),
        error["message"].as_str().unwrap().to_string(),
    )
}

/// A project made by the operator key: its id.
fn new_project(s: &Server, name: &str) -> String {
    let project = rest(
        s,
        OPS,
        "POST",
        "/api/v1/projects",
        Some(json!({"name": name})),
    );
    project["id"].as_str().unwrap().to_string()
}

fn rest(s: &Server, key: &str, method: &str, path: &str, body: Option<Value>) -> Value {
    let r = s.call_as(Some(key), method, path, body);
    assert!(r.status < 300, "{method} {path}: {} {}", r.status, r.body);
    r.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_over_the_stateless_revision_does_a_task_end_to_end() {
    let s = keyed(&[]);
    let p = new_project(&s, "mcp");
    let brief = rest(
        &s,
        WORKER,
        "POST",
        "/api/v1/context/artifacts",
        Some(
            json!({"project_id": p, "source_agent": "analyst", "artifact_type": "requirements",
            "content": {"goal": "a parser"}}),
        ),
    );
    let brief_id = brief["context_id"].as_str().unwrap().to_string();
    let task = rest(
        &s,
        WORKER,
        "POST",
        &format!("/api/v1/projects/{p}/tasks"),
        Some(json!({"agent_type": "coder", "instructions": "write it", "context_ids": [brief_id]})),
    );
    let t = task["task_id"].as_str().unwrap().to_string();

    let client = connect(&s, WORKER, None).await;
    assert_eq!(
        client.peer_info().map(|i| i.protocol_version.clone()),
        Some(ProtocolVersion::V_2026_07_28)
    );
    let tools = client.list_all_tools().await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert_eq!(tools.len(), 17, "{names:?}");
    assert!(
        !names.contains(&"answer_approval"),
        "a worker key lacks the reviewer role: {names:?}"
    );
    let claim = tools.iter().find(|t| t.name == "claim_task").unwrap();
    assert_eq!(
        claim.input_schema.get("required"),
        Some(&json!(["agent_type", "worker_id"]))
    );
    assert!(claim.output_schema.is_some());

    let claimed = ok(
        &client,
        "claim_task",
        json!({"agent_type": "coder", "worker_id": "mcp-1", "wait_seconds": 1}),
    )
    .await;
    let task = &claimed["task"];
    assert_eq!(task["task_id"], t.as_str());
    assert_eq!(task["context_ids"], json!([brief_id]));
    let lease = task["lease_id"].as_str().unwrap().to_string();

    // The context, as a tool and as a resource.
    let read = ok(&client, "get_artifact", json!({"artifact_id": brief_id})).await;
    assert_eq!(read["content"], json!({"goal": "a parser"}));
    let resource = client
        .read_resource(ReadResourceRequestParams::new(format!(
            "flightdeck://artifacts/{brief_id}"
        )))
        .await
        .unwrap();
    let ResourceContents::TextResourceContents {
        text, mime_type, ..
    } = &resource.contents[0]
    else {
        panic!("an artifact reads as text")
    };
    assert_eq!(mime_type.as_deref(), Some("application/json"));
    assert_eq!(
        serde_json::from_str::<Value>(text).unwrap()["content"]["goal"],
        "a parser"
    );

    let beat = ok(
        &client,
        "heartbeat",
        json!({"task_id": t, "lease_id": lease, "message": "parsing", "percent": 40}),
    )
    .await;
    assert_eq!(beat["status"], "working");
    ok(
        &client,
        "report_progress",
        json!({"task_id": t, "lease_id": lease, "message": "half", "percent": 50}),
    )
    .await;
    let code = ok(
        &client,
        "put_artifact",
        json!({"project_id": p, "source_agent": "coder", "artifact_type": "code",
            "content": {"files": ["parser.rs"]}}),
    )
    .await;
    let code_id = code["context_id"].as_str().unwrap().to_string();
    let listed = ok(&client, "list_artifacts", json!({"project_id": p})).await;
    let ids: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["context_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![brief_id.as_str(), code_id.as_str()]);
    // What the model calls cost, reported under the lease; the same report_id again counts once.
    let spent = json!({"task_id": t, "lease_id": lease, "report_id": "turn-1", "model": "model-x",
        "input_tokens": 1200, "output_tokens": 300, "cost_usd": 0.02});
    let usage = ok(&client, "report_usage", spent.clone()).await;
    assert_eq!(usage["repeated"], false);
    assert_eq!(usage["cost_source"], "reported");
    assert_eq!(usage["task_usage"]["input_tokens"], 1200);
    let again = ok(&client, "report_usage", spent).await;
    assert_eq!(again["repeated"], true);
    assert_eq!(again["usage_id"], usage["usage_id"]);
    assert_eq!(again["task_usage"]["reports"], 1);
    let done = ok(
        &client,
        "complete_task",
        json!({"task_id": t, "lease_id": lease, "output": {"artifact": code_id}}),
    )
    .await;
    assert_eq!(done["status"], "completed");

    // The REST API sees what MCP did.
    let seen = rest(&s, READER, "GET", &format!("/api/v1/tasks/{t}"), None);
    assert_eq!(seen["status"], "completed");
    assert_eq!(seen["output"], json!({"artifact": code_id}));
    assert_eq!(seen["usage"]["output_tokens"], 300);
    let status = ok(&client, "project_status", json!({"project_id": p})).await;
    assert_eq!(status["project_id"], p.as_str());
    let events = ok(
        &client,
        "events_since",
        json!({"since": 0, "project_id": p}),
    )
    .await;
    let types: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert!(
        types.contains(&"task_completed") && types.contains(&"artifact_created"),
        "{types:?}"
    );

    // Nothing left: a claim that waits answers none.
    let none = ok(
        &client,
        "claim_task",
        json!({"agent_type": "coder", "worker_id": "mcp-1", "wait_seconds": 0}),
    )
    .await;
    assert_eq!(none, json!({"task": null}));

    // A refusal names flightdeck's code and the field.
    let (code, message) = refused(
        &client,
        "complete_task",
        json!({"task_id": "not-an-id", "lease_id": lease}),
    )
    .await;
    assert_eq!(code, "invalid_field");
    assert!(message.contains("task_id"), "{message}");
    let (code, message) = refused(
        &client,
        "claim_task",
        json!({"agent_type": "Not A Type", "worker_id": "w"}),
    )
    .await;
    assert_eq!(code, "invalid_field");
    assert!(message.contains("agent_type"), "{message}");

    // Every call was counted under its tool's name.
    let metrics = s.get("/metrics").body;
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with("flightdeck_mcp_requests_total{")
                && l.contains("tool=\"claim_task\"")
                && l.contains("outcome=\"ok\"")
        })
        .unwrap_or_else(|| panic!("no claim_task series:\n{metrics}"));
    assert!(line.ends_with(" 2"), "{line}");
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_key_lists_and_calls_only_the_read_tools() {
    let s = keyed(&[]);
    let p = new_project(&s, "ro");
    let reader = connect(&s, READER, None).await;
    let mut names: Vec<String> = reader
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "events_since",
            "get_approval",
            "get_artifact",
            "list_artifacts",
            "list_pending_approvals",
            "list_projects",
            "list_queues",
            "project_status",
            "service_levels"
        ]
    );
    let projects = ok(&reader, "list_projects", json!({})).await;
    assert_eq!(projects["items"][0]["id"], p.as_str());
    let queues = ok(&reader, "list_queues", json!({})).await;
    assert_eq!(queues, rest(&s, READER, "GET", "/api/v1/queues", None));
    let levels = ok(&reader, "service_levels", json!({})).await;
    assert!(levels["service_levels"].is_array(), "{levels}");
    let (code, message) = refused(
        &reader,
        "put_artifact",
        json!({"project_id": p, "source_agent": "coder", "artifact_type": "code", "content": 1}),
    )
    .await;
    assert_eq!(code, "forbidden");
    assert!(message.contains("worker"), "{message}");
    let artifacts = rest(
        &s,
        READER,
        "GET",
        &format!("/api/v1/context/project/{p}/artifacts"),
        None,
    );
    assert_eq!(artifacts, json!([]), "the refused write wrote nothing");
    reader.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fencing_holds_across_mcp_and_rest() {
    let s = keyed(&["--timer-tick-ms", "20"]);
    let p = new_project(&s, "fence");
    let t = rest(
        &s,
        WORKER,
        "POST",
        &format!("/api/v1/projects/{p}/tasks"),
        Some(json!({"agent_type": "coder", "instructions": "x"})),
    )["task_id"]
        .as_str()
        .unwrap()
        .to_string();
    let client = connect(&s, WORKER, None).await;
    // An MCP worker whose lease lapses; a REST worker takes the task over.
    let first = ok(
        &client,
        "claim_task",
        json!({"agent_type": "coder", "worker_id": "slow", "lease_seconds": 0.2}),
    )
    .await;
    let stale = first["task"]["lease_id"].as_str().unwrap().to_string();
    wait_for("the lease to lapse", || {
        let v = rest(&s, READER, "GET", &format!("/api/v1/tasks/{t}"), None);
        (v["status"] == "pending").then_some(())
    });
    let second = rest(
        &s,
        WORKER,
        "POST",
        "/api/v1/tasks/claim",
        Some(json!({"agent_type": "coder", "worker_id": "rest", "lease_seconds": 30})),
    );
    assert_eq!(second["task_id"], t.as_str());
    for (tool, args) in [
        (
            "complete_task",
            json!({"task_id": t, "lease_id": stale, "output": "late"}),
        ),
        (
            "fail_task",
            json!({"task_id": t, "lease_id": stale, "error_message": "late"}),
        ),
        ("heartbeat", json!({"task_id": t, "lease_id": stale})),
    ] {
        let (code, _) = refused(&client, tool, args).await;
        assert_eq!(code, "lease_lost", "{tool}");
    }
    let v = rest(&s, READER, "GET", &format!("/api/v1/tasks/{t}"), None);
    assert_eq!(
        (v["status"].as_str(), v["worker_id"].as_str()),
        (Some("working"), Some("rest"))
    );
    assert!(v["output"].is_null());

    // The other way round: the REST worker's lease lapses, the MCP worker re-claims, and the
    // REST worker's late completion is refused.
    let rest_lease = second["lease_id"].as_str().unwrap().to_string();
    rest(
        &s,
        WORKER,
        "POST",
        &format!("/api/v1/tasks/{t}/heartbeat"),
        Some(json!({"lease_id": rest_lease, "lease_seconds": 0.2})),
    );
    wait_for("the REST lease to lapse", || {
        let v = rest(&s, READER, "GET", &format!("/api/v1/tasks/{t}"), None);
        (v["status"] == "pending").then_some(())
    });
    let third = ok(
        &client,
        "claim_task",
        json!({"agent_type": "coder", "worker_id": "mcp", "wait_seconds": 5}),
    )
    .await;
    let lease = third["task"]["lease_id"].as_str().unwrap().to_string();
    s.call_as(
        Some(WORKER),
        "POST",
        &format!("/api/v1/tasks/{t}/status"),
        Some(json!({"status": "completed", "output": "late", "lease_id": rest_lease})),
    )
    .expect_error(409, "lease_lost");
    let done = ok(
        &client,
        "complete_task",
        json!({"task_id": t, "lease_id": lease, "output": {"by": "mcp"}}),
    )
    .await;
    assert_eq!(done["output"], json!({"by": "mcp"}));
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_requested_over_mcp_is_answered_by_a_reviewer_of_the_older_revision() {
    let s = keyed(&[]);
    let p = new_project(&s, "hitl");
    let worker = connect(&s, WORKER, None).await;
    let reviewer = connect(&s, REVIEWER, Some(ProtocolVersion::V_2025_11_25)).await;
    assert_eq!(
        reviewer.peer_info().map(|i| i.protocol_version.clone()),
        Some(ProtocolVersion::V_2025_11_25)
    );
    // Unanswered, the request comes back pending with its id.
    let pending = ok(
        &worker,
        "request_approval",
        json!({"project_id": p, "question": "first?", "wait_seconds": 0}),
    )
    .await;
    assert_eq!(pending["status"], "pending");
    let first = pending["request_id"].as_str().unwrap().to_string();

    let asking = tokio::spawn(async move {
        let answer = ok(
            &worker,
            "request_approval",
            json!({"project_id": p, "question": "ship it?", "options": ["yes", "no"],
                "wait_seconds": 20}),
        )
        .await;
        (worker, answer)
    });
    let waiting = loop {
        let listed = ok(&reviewer, "list_pending_approvals", json!({})).await;
        let found: Vec<Value> = listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["question"] == "ship it?")
            .cloned()
            .collect();
        if let Some(r) = found.first() {
            break r["request_id"].as_str().unwrap().to_string();
        }
        assert!(
            !asking.is_finished(),
            "the request answered before it was asked"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let answered = ok(
        &reviewer,
        "answer_approval",
        json!({"approval_id": waiting, "action": "approve", "comment": "fine"}),
    )
    .await;
    assert_eq!(answered["status"], "approved");
    let (worker, answer) = asking.await.unwrap();
    assert_eq!(answer["request_id"], waiting.as_str());
    assert_eq!(answer["status"], "approved");
    assert_eq!(
        answer["responded_by"], "alice",
        "the reviewer key's name answers"
    );
    // The worker key may not answer, and a read shows the first request still pending.
    let (code, _) = refused(
        &worker,
        "answer_approval",
        json!({"approval_id": first, "action": "approve"}),
    )
    .await;
    assert_eq!(code, "forbidden");
    let first_now = ok(&reviewer, "get_approval", json!({"approval_id": first})).await;
    assert_eq!(first_now["status"], "pending");
    worker.cancel().await.unwrap();
    reviewer.cancel().await.unwrap();
}

/// A raw POST to /mcp: status, headers' session id, body.
fn raw(s: &Server, headers: &[(&str, &str)], body: &str) -> (u16, Option<String>, Value) {
    let mut request = ureq::http::Request::builder()
        .method("POST")
        .uri(s.url("/mcp"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let r = s.send_request(request.body(body.as_bytes().to_vec()).unwrap());
    let session = r.header("mcp-session-id").map(str::to_owned);
    let body = serde_json::from_str(&r.body).unwrap_or(Value::Null);
    (r.status, session, body)
}

fn modern_meta() -> Value {
    json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {}})
}

#[test]
fn malformed_requests_get_json_rpc_errors_and_the_endpoint_keeps_the_rest_rules() {
    let s = Server::start_with(&[
        "--cors-origins",
        "https://console.example",
        "--max-body-bytes",
        "4096",
    ]);
    // Not JSON, a batch, no method.
    let (status, _, body) = raw(&s, &[], "{nope");
    assert_eq!(
        (status, body["error"]["code"].as_i64()),
        (400, Some(-32700))
    );
    assert!(body["id"].is_null());
    let (status, _, body) = raw(
        &s,
        &[],
        r#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"}]"#,
    );
    assert_eq!(
        (status, body["error"]["code"].as_i64()),
        (400, Some(-32600))
    );
    let (_, _, body) = raw(&s, &[], r#"{"jsonrpc":"2.0","id":7}"#);
    assert_eq!(body["error"]["code"], -32600);
    assert_eq!(body["id"], 7);
    // Not JSON-RPC 2.0, or params that are not an object.
    let (status, _, body) = raw(&s, &[], r#"{"method":"notifications/initialized"}"#);
    assert_eq!(
        (status, body["error"]["code"].as_i64()),
        (400, Some(-32600))
    );
    let (status, _, body) = raw(
        &s,
        &[],
        r#"{"jsonrpc":"2.0","id":3,"method":"tools/list","params":null}"#,
    );
    assert_eq!(
        (status, body["error"]["code"].as_i64()),
        (400, Some(-32602))
    );
    // A notification is accepted with no body.
    let (status, _, _) = raw(
        &s,
        &[],
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
    );
    assert_eq!(status, 202);

    // The handshake answers a session id and the version asked for, or the newest.
    let init = |version: &str| {
        raw(
            &s,
            &[],
            &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": version, "capabilities": {},
                "clientInfo": {"name": "t", "version": "1"}}})
            .to_string(),
        )
    };
    let (status, session, body) = init("2025-06-18");
    assert_eq!(status, 200);
    assert!(session.is_some_and(|s| s.len() == 32));
    assert_eq!(body["result"]["protocolVersion"], "2025-06-18");
    assert_eq!(body["result"]["serverInfo"]["name"], "flightdeck");
    assert_eq!(
        init("2024-01-01").2["result"]["protocolVersion"],
        "2025-11-25"
    );

    // 2026-07-28: the envelope and its headers must agree.
    let discover = json!({"jsonrpc": "2.0", "id": 2, "method": "server/discover",
        "params": {"_meta": modern_meta()}})
    .to_string();
    let (status, _, body) = raw(
        &s,
        &[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "server/discover"),
        ],
        &discover,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["supportedVersions"][0], "2026-07-28");
    assert_eq!(body["result"]["resultType"], "complete");
    let (status, _, body) = raw(
        &s,
        &[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/list"),
        ],
        &discover,
    );
    assert_eq!(
        (status, body["error"]["code"].as_i64()),
        (400, Some(-32020))
    );
    // A routing header sent twice could be read either way: refused.
    let (status, _, body) = raw(
        &s,
        &[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "server/discover"),
            ("mcp-method", "tools/call"),
        ],
        &discover,
    );
    assert_eq!(
        (status, body["error"]["code"].as_i64()),
        (400, Some(-32020))
    );
    let no_meta =
        json!({"jsonrpc": "2.0", "id": 3, "method": "tools/list", "params": {}}).to_string();
    let (status, _, body) = raw(
        &s,
        &[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/list"),
        ],
        &no_meta,
    );
    assert_eq!(
        (status, body["error"]["code"].as_i64()),
        (400, Some(-32602))
    );
    let future = json!({"jsonrpc": "2.0", "id": 4, "method": "tools/list", "params": {"_meta": {
        "io.modelcontextprotocol/protocolVersion": "2030-01-01",
        "io.modelcontextprotocol/clientCapabilities": {}}}})
    .to_string();
    let (status, _, body) = raw(
        &s,
        &[
            ("mcp-protocol-version", "2030-01-01"),
            ("mcp-method", "tools/list"),
        ],
        &future,
    );
    assert_eq!(
        (status, body["error"]["code"].as_i64()),
        (400, Some(-32022))
    );
    assert_eq!(body["error"]["data"]["requested"], "2030-01-01");
    assert!(
        body["error"]["data"]["supported"]
            .as_array()
            .unwrap()
            .contains(&json!("2025-11-25"))
    );
    let unknown = json!({"jsonrpc": "2.0", "id": 5, "method": "prompts/list",
        "params": {"_meta": modern_meta()}})
    .to_string();
    let (status, _, body) = raw(
        &s,
        &[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "prompts/list"),
        ],
        &unknown,
    );
    assert_eq!(
        (status, body["error"]["code"].as_i64()),
        (404, Some(-32601))
    );
    // An unknown tool is a JSON-RPC error, and its made-up name never becomes a metric label.
    let (status, _, body) = raw(
        &s,
        &[],
        r#"{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"drop_tables_x9","arguments":{}}}"#,
    );
    assert_eq!(
        (status, body["error"]["code"].as_i64()),
        (200, Some(-32602))
    );
    let metrics = s.get("/metrics").body;
    assert!(!metrics.contains("drop_tables_x9"));
    assert!(
        metrics.lines().any(|l| l.contains("tool=\"unknown\"")
            && l.contains("outcome=\"rpc_error\"")
            && l.ends_with(" 1")),
        "{metrics}"
    );

    // The REST rules: a foreign origin is refused, the body limit holds, GET has no stream.
    let (status, _, body) = raw(&s, &[("origin", "https://evil.example")], &discover);
    assert_eq!(status, 403);
    assert_eq!(body["error"]["code"], "origin_not_allowed");
    let (status, _, _) = raw(
        &s,
        &[("origin", "https://console.example")],
        r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
    );
    assert_eq!(status, 200);
    let big =
        json!({"jsonrpc": "2.0", "id": 8, "method": "ping", "params": {"pad": "x".repeat(5000)}})
            .to_string();
    let (status, _, body) = raw(&s, &[], &big);
    assert_eq!(status, 413);
    assert_eq!(body["error"]["code"], "payload_too_large");
    let get = s.get("/mcp");
    assert_eq!(get.status, 405);
    assert_eq!(get.header("allow"), Some("POST"));
}

#[test]
fn without_a_key_the_endpoint_answers_401_and_no_oauth_metadata() {
    let s = Server::start_with(&["--api-key", &format!("agent:worker:{WORKER}")]);
    let (status, _, body) = raw(&s, &[], r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#);
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "unauthorized");
    let r = s.call_as(
        None,
        "POST",
        "/mcp",
        Some(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})),
    );
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer"),
        "no resource_metadata to send clients to OAuth"
    );
    assert_eq!(s.get("/.well-known/oauth-protected-resource").status, 404);
    assert_eq!(s.get("/.well-known/oauth-authorization-server").status, 404);
}

#[test]
fn a_waiting_claim_streams_its_progress_then_the_task_that_came() {
    use std::io::{Read, Write};
    let s = Server::start();
    let p = s.project("stream");
    let body = json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {
        "_meta": {"progressToken": "wait-1"}, "name": "claim_task",
        "arguments": {"agent_type": "coder", "worker_id": "streamer", "wait_seconds": 20}}})
    .to_string();
    let mut stream = std::net::TcpStream::connect(&s.addr).unwrap();
    write!(
        stream,
        "POST /mcp HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\n\
         accept: application/json, text/event-stream\r\ncontent-length: {}\r\n\r\n{body}",
        s.addr,
        body.len()
    )
    .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut seen = Vec::new();
    let mut read_until = |needle: &str, seen: &mut Vec<u8>| {
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(seen).contains(needle) {
            let n = stream.read(&mut buf).expect("the stream stays open");
            assert!(
                n > 0,
                "the stream ended early: {}",
                String::from_utf8_lossy(seen)
            );
            seen.extend_from_slice(&buf[..n]);
        }
    };
    read_until("notifications/progress", &mut seen);
    let head = String::from_utf8_lossy(&seen).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("content-type: text/event-stream"), "{head}");
    assert!(head.contains("\"progressToken\":\"wait-1\""), "{head}");
    assert!(!head.contains("\"id\":9"), "no result yet: {head}");
    // A task arrives while the claim waits: the stream ends with it.
    let t = s.task(&p, "coder");
    read_until("\"id\":9", &mut seen);
    let text = String::from_utf8_lossy(&seen).to_string();
    let result_line = text
        .lines()
        .find(|l| l.starts_with("data: ") && l.contains("\"id\":9"))
        .unwrap();
    let result: Value = serde_json::from_str(&result_line["data: ".len()..]).unwrap();
    assert_eq!(
        result["result"]["structuredContent"]["task"]["task_id"],
        t.as_str()
    );
    assert_eq!(result["result"]["isError"], false);
    let task = s.get(&format!("/api/v1/tasks/{t}")).json();
    assert_eq!(
        (task["status"].as_str(), task["worker_id"].as_str()),
        (Some("working"), Some("streamer"))
    );
}
