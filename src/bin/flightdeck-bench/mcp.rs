//! The MCP phase: what a tool call costs beside its REST route. The same work over both protocols
//! in rounds that take turns (every other round in reverse order): a worker's claim + complete of
//! a task (two calls, each a durable write) and `get_artifact` (a read; also as a REST `POST`, the
//! floor of any request with a body), from a few closed-loop clients, a fixed number of calls per
//! round. Reports each side's client-seen p50 and p99 and the server's CPU per call, and MCP's
//! ratio to REST (the target: within 1.5x). The MCP side speaks the stateless 2026-07-28
//! revision, its envelope and routing headers on every request, as an SDK client does.

use crate::cost::{CLIENTS, server_cpu};
use crate::http::Client;
use crate::process::Target;
use crate::stats::Samples;
use serde::Serialize;
use serde_json::{Value, json};
use std::sync::Arc;

/// Rounds per protocol, alternated.
const ROUNDS: usize = 4;
/// Claim + complete pairs per round (spread over the clients).
const TASKS_PER_ROUND: usize = 800;
/// `get_artifact` calls per round.
const READS_PER_ROUND: usize = 20_000;

/// One operation over one protocol, all rounds together.
#[derive(Clone, Debug, Serialize)]
pub struct McpRow {
    pub operation: &'static str,
    pub protocol: &'static str,
    pub calls: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Server CPU (user + system) per call, in µs.
    pub server_cpu_us: f64,
}

#[derive(Copy, Clone, PartialEq, Eq)]
enum Protocol {
    Rest,
    /// The read as a REST POST with a JSON body (`artifacts.batch` of one id): what any request
    /// with a body costs here, which an MCP call is.
    RestPost,
    Mcp,
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Protocol::Rest => "REST",
            Protocol::RestPost => "REST, by POST",
            Protocol::Mcp => "MCP",
        }
    }
}

/// A `tools/call` request of the 2026-07-28 revision.
fn tool_call(id: u64, tool: &str, arguments: Value) -> Vec<u8> {
    serde_json::to_vec(
        &json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {
        "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo": {"name": "flightdeck-bench", "version": "1"}},
        "name": tool, "arguments": arguments}}),
    )
    .expect("a JSON value serialises")
}

/// One call of a tool: its structured content, or `None` when it failed.
async fn call_tool(
    client: &mut Client,
    samples: &mut Samples,
    id: u64,
    tool: &str,
    arguments: Value,
) -> Option<Value> {
    let headers = [
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "tools/call"),
        ("mcp-name", tool),
        ("accept", "application/json, text/event-stream"),
    ];
    let body = tool_call(id, tool, arguments);
    match client
        .send_with(hyper::Method::POST, "/mcp", Some(body), &headers)
        .await
    {
        Ok(answer) if answer.status == 200 => {
            let value = answer.json()?;
            let result = &value["result"];
            if result["isError"] == true || result.is_null() {
                samples.error();
                return None;
            }
            samples.record(answer.elapsed);
            Some(result["structuredContent"].clone())
        }
        _ => {
            samples.error();
            None
        }
    }
}

/// One REST call: its JSON answer (`Value::Null` for a body-less success), or `None`.
async fn call_rest(
    client: &mut Client,
    samples: &mut Samples,
    method: hyper::Method,
    path: &str,
    body: Option<&Value>,
) -> Option<Value> {
    let body = body.map(|b| serde_json::to_vec(b).expect("a JSON value serialises"));
    match client.send(method, path, body).await {
        Ok(answer) if answer.status < 300 => {
            samples.record(answer.elapsed);
            Some(answer.json().unwrap_or(Value::Null))
        }
        _ => {
            samples.error();
            None
        }
    }
}

/// A claim and the completion of what it got: `true` when both were answered.
async fn claim_complete(
    client: &mut Client,
    samples: &mut Samples,
    protocol: Protocol,
    n: u64,
) -> bool {
    let worker = format!("bench-mcp-{n}");
    let claim = json!({"agent_type": AGENT, "worker_id": worker});
    let task = match protocol {
        Protocol::Rest | Protocol::RestPost => {
            call_rest(
                client,
                samples,
                hyper::Method::POST,
                "/api/v1/tasks/claim",
                Some(&claim),
            )
            .await
        }
        Protocol::Mcp => call_tool(client, samples, n, "claim_task", claim)
            .await
            .map(|v| v["task"].clone()),
    };
    let Some(task) = task.filter(|t| t.is_object()) else {
        return false;
    };
    let (id, lease) = (task["task_id"].clone(), task["lease_id"].clone());
    match protocol {
        Protocol::Rest | Protocol::RestPost => {
            let body = json!({"status": "completed", "lease_id": lease, "output": {"n": n}});
            let path = format!("/api/v1/tasks/{}/status", id.as_str().unwrap_or_default());
            call_rest(client, samples, hyper::Method::POST, &path, Some(&body))
                .await
                .is_some()
        }
        Protocol::Mcp => {
            let args = json!({"task_id": id, "lease_id": lease, "output": {"n": n}});
            call_tool(client, samples, n, "complete_task", args)
                .await
                .is_some()
        }
    }
}

async fn read(client: &mut Client, samples: &mut Samples, protocol: Protocol, id: &str, n: u64) {
    match protocol {
        Protocol::Rest => {
            let path = format!("/api/v1/context/artifacts/{id}");
            call_rest(client, samples, hyper::Method::GET, &path, None).await;
        }
        Protocol::RestPost => {
            let body = json!({"context_ids": [id]});
            let path = "/api/v1/context/artifacts/batch";
            call_rest(client, samples, hyper::Method::POST, path, Some(&body)).await;
        }
        Protocol::Mcp => {
            call_tool(
                client,
                samples,
                n,
                "get_artifact",
                json!({"artifact_id": id}),
            )
            .await;
        }
    }
}

/// The agent type of the phase's own tasks: no workflow waits on it.
const AGENT: &str = "mcp-bench";

/// Creates `count` tasks of `AGENT` in `project` (not measured).
async fn create_tasks(target: &Target, token: &Option<String>, project: &str, count: usize) {
    let per = count.div_ceil(CLIENTS);
    let handles: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (addr, token, project) = (target.addr, token.clone(), project.to_string());
            tokio::spawn(async move {
                let mut client = Client::new(addr, token);
                let path = format!("/api/v1/projects/{project}/tasks");
                for _ in 0..per {
                    let _ = client
                        .post(
                            &path,
                            &json!({"agent_type": AGENT, "instructions": "bench"}),
                        )
                        .await;
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.await;
    }
}

/// Runs the phase; nothing when the target has no project or artifact to use.
pub(super) async fn mcp_phase(
    target: &Target,
    token: &Option<String>,
    projects: &[String],
    artifact_ids: &[String],
) -> Vec<McpRow> {
    let (Some(project), false) = (projects.first(), artifact_ids.is_empty()) else {
        return Vec::new();
    };
    eprintln!("mcp phase: claim + complete and get_artifact over REST and MCP, {ROUNDS} rounds");
    let mut client = Client::new(target.addr, token.clone());
    let artifacts = Arc::new(artifact_ids.to_vec());
    // Per (operation, protocol): samples, calls, CPU seconds.
    let mut totals: Vec<(&'static str, Protocol, Samples, u64, f64)> = Vec::new();
    let sides = |op: &str| -> &'static [Protocol] {
        if op == "get_artifact" {
            &[Protocol::Rest, Protocol::RestPost, Protocol::Mcp]
        } else {
            &[Protocol::Rest, Protocol::Mcp]
        }
    };
    for op in ["claim+complete", "get_artifact"] {
        for &protocol in sides(op) {
            totals.push((op, protocol, Samples::default(), 0, 0.0));
        }
    }
    // Each round runs the sides in turn, every other round in reverse: no side always runs on a
    // warmer server.
    for round in 0..ROUNDS {
        for op in ["claim+complete", "get_artifact"] {
            let mut order = sides(op).to_vec();
            if round % 2 == 1 {
                order.reverse();
            }
            for protocol in order {
                if op == "claim+complete" {
                    create_tasks(target, token, project, TASKS_PER_ROUND).await;
                }
                let Some(before) = server_cpu(target, &mut client).await else {
                    return Vec::new();
                };
                let handles: Vec<_> = (0..CLIENTS)
                    .map(|c| {
                        let (addr, token, artifacts) =
                            (target.addr, token.clone(), artifacts.clone());
                        tokio::spawn(async move {
                            let mut client = Client::new(addr, token);
                            let mut samples = Samples::default();
                            let mut calls = 0u64;
                            if op == "claim+complete" {
                                for i in 0..TASKS_PER_ROUND / CLIENTS {
                                    let n = (c * TASKS_PER_ROUND + i) as u64;
                                    if claim_complete(&mut client, &mut samples, protocol, n).await
                                    {
                                        calls += 2;
                                    }
                                }
                            } else {
                                for i in 0..READS_PER_ROUND / CLIENTS {
                                    let id = &artifacts[(c * 7919 + i) % artifacts.len()];
                                    read(&mut client, &mut samples, protocol, id, i as u64).await;
                                    calls += 1;
                                }
                            }
                            (samples, calls)
                        })
                    })
                    .collect();
                let mut samples = Samples::default();
                let mut calls = 0u64;
                for h in handles {
                    if let Ok((s, n)) = h.await {
                        samples.merge(s);
                        calls += n;
                    }
                }
                let Some(after) = server_cpu(target, &mut client).await else {
                    return Vec::new();
                };
                let row = totals
                    .iter_mut()
                    .find(|t| t.0 == op && t.1 == protocol)
                    .expect("every pair has a row");
                row.2.merge(samples);
                row.3 += calls;
                row.4 += after - before;
            }
        }
    }
    totals
        .into_iter()
        .map(|(operation, protocol, samples, calls, cpu)| {
            let summary = samples.summary();
            McpRow {
                operation,
                protocol: protocol.name(),
                calls,
                errors: summary.errors,
                p50_ms: summary.p50_ms,
                p99_ms: summary.p99_ms,
                server_cpu_us: cpu * 1e6 / calls.max(1) as f64,
            }
        })
        .collect()
}
