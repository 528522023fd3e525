#!/usr/bin/env python3
"""The MCP endpoint with the official MCP Python SDK (`pip install mcp`): a team of MCP workers,
one per agent type of the built-in `sdlc` workflow, each speaking the stateless 2026-07-28
revision (the SDK's `auto` mode: `server/discover`, no handshake), claims its phase's task, reads
the task's context artifacts (as tools and as resources), stores the phase's artifact, reports
progress and completes; a reviewer speaking the 2025-11-25 revision (the `initialize` handshake)
approves every gate over MCP. Afterwards the REST API must show the whole run: every phase
completed by its MCP worker with its output, every artifact, every gate answered by the
reviewer's key. Then one client of the 2025-06-18 revision lists and calls the read tools.

usage: check_mcp.py FLIGHTDECK_BINARY
"""

import asyncio
import json
import os
import sys
import tempfile
import urllib.request
from typing import Any, Dict, List

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from ci_common import start_flightdeck, stop

OPERATOR = "mcp-ci-operator-secret"
TEAM = "mcp-ci-team-secret-000"
REVIEWER = "mcp-ci-reviewer-secret"


def rest(addr: str, method: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://{addr}{path}", data=data, method=method)
    request.add_header("authorization", f"Bearer {OPERATOR}")
    if data is not None:
        request.add_header("content-type", "application/json")
    with urllib.request.urlopen(request, timeout=30) as response:
        text = response.read()
        return json.loads(text) if text else None


def client(addr: str, key: str, mode: str) -> Client:
    http = httpx2.AsyncClient(
        headers={"authorization": f"Bearer {key}"}, timeout=httpx2.Timeout(60.0)
    )
    return Client(streamable_http_client(f"http://{addr}/mcp", http_client=http), mode=mode)


async def tool(c: Client, name: str, args: Dict[str, Any]) -> Any:
    result = await c.call_tool(name, args)
    if result.is_error:
        raise SystemExit(f"check_mcp: {name} failed: {result.structured_content}")
    text = result.content[0].text  # type: ignore[union-attr]
    assert json.loads(text) == result.structured_content, f"{name}: text and structure differ"
    return result.structured_content


async def worker(addr: str, agent: str, produces: str, done: asyncio.Event, log: List[Dict[str, Any]]) -> None:
    async with client(addr, TEAM, "auto") as c:
        assert c.protocol_version == "2026-07-28", c.protocol_version
        while not done.is_set():
            claimed = await tool(
                c, "claim_task", {"agent_type": agent, "worker_id": f"mcp-{agent}", "wait_seconds": 2}
            )
            task = claimed["task"]
            if task is None:
                continue
            read = []
            for i, artifact_id in enumerate(task["context_ids"]):
                if i == 0:
                    contents = await c.read_resource(f"flightdeck://artifacts/{artifact_id}")
                    artifact = json.loads(contents.contents[0].text)  # type: ignore[union-attr]
                else:
                    artifact = await tool(c, "get_artifact", {"artifact_id": artifact_id})
                assert artifact["context_id"] == artifact_id
                read.append(artifact["artifact_type"])
            await tool(
                c,
                "report_progress",
                {"task_id": task["task_id"], "lease_id": task["lease_id"], "message": "writing", "percent": 50},
            )
            stored = await tool(
                c,
                "put_artifact",
                {
                    "project_id": task["project_id"],
                    "source_agent": agent,
                    "artifact_type": produces,
                    "content": {"by": agent, "read": read},
                },
            )
            await tool(c, "heartbeat", {"task_id": task["task_id"], "lease_id": task["lease_id"]})
            await tool(
                c,
                "complete_task",
                {"task_id": task["task_id"], "lease_id": task["lease_id"], "output": {"done": agent, "artifact": stored["context_id"]}},
            )
            log.append({"agent": agent, "task": task["task_id"], "read": read})


async def reviewer(addr: str, project: str, done: asyncio.Event, answered: List[str]) -> None:
    async with client(addr, REVIEWER, "legacy") as c:
        assert c.protocol_version == "2025-11-25", c.protocol_version
        tools = {t.name for t in (await c.list_tools()).tools}
        assert "answer_approval" in tools and "claim_task" not in tools, tools
        while not done.is_set():
            pending = await tool(c, "list_pending_approvals", {"project_id": project})
            for request in pending["items"]:
                answer = await tool(
                    c, "answer_approval", {"approval_id": request["request_id"], "action": "approve", "comment": "ok"}
                )
                assert answer["status"] == "approved", answer
                answered.append(request["request_id"])
            await asyncio.sleep(0.2)


async def team(addr: str) -> None:
    project = rest(addr, "POST", "/api/v1/projects", {"name": "mcp team"})["id"]
    rest(addr, "POST", f"/api/v1/hitl/project/{project}/oversight-level", {"level": "high"})
    rest(addr, "POST", f"/api/v1/projects/{project}/workflow", {"workflow": "sdlc", "context": {"goal": "a blog"}})
    run = rest(addr, "GET", f"/api/v1/projects/{project}/workflow")
    produces = {p["agent_type"]: p["produces"][0] for p in run["phases"] if p.get("produces")}
    assert len(produces) == 5, produces
    done = asyncio.Event()
    log: List[Dict[str, Any]] = []
    answered: List[str] = []
    tasks = [asyncio.create_task(worker(addr, a, p, done, log)) for a, p in produces.items()]
    tasks.append(asyncio.create_task(reviewer(addr, project, done, answered)))
    deadline = asyncio.get_running_loop().time() + 180
    while True:
        run = rest(addr, "GET", f"/api/v1/projects/{project}/workflow")
        if run["status"] == "completed":
            break
        failed = [t for t in tasks if t.done() and t.exception()]
        if failed:
            raise failed[0].exception()  # type: ignore[misc]
        if asyncio.get_running_loop().time() > deadline:
            raise SystemExit(f"check_mcp: the workflow did not complete: {run}")
        await asyncio.sleep(0.3)
    done.set()
    await asyncio.gather(*tasks)

    items = rest(addr, "GET", f"/api/v1/projects/{project}/tasks")["items"]
    assert [t["status"] for t in items] == ["completed"] * 5, items
    assert {t["output"]["done"] for t in items} == set(produces)
    assert all(t["progress"]["message"] == "writing" for t in items)
    assert sorted(entry["agent"] for entry in log) == sorted(produces), log
    artifacts = rest(addr, "GET", f"/api/v1/context/project/{project}/artifacts")
    assert sorted(a["artifact_type"] for a in artifacts) == sorted(produces.values())
    # Each phase read the artifacts of the phases before it.
    assert any(entry["read"] for entry in log), log
    assert len(answered) >= 4, answered
    for request_id in answered:
        request = rest(addr, "GET", f"/api/v1/hitl/{request_id}")
        assert request["status"] == "approved" and request["responded_by"] == "alice", request
    print(f"mcp: sdlc done by 5 MCP workers (2026-07-28), {len(answered)} gates approved over MCP (2025-11-25)")

    # A claim that waits streams its progress (server-sent events), then its answer.
    async with client(addr, TEAM, "auto") as c:
        seen: List[Any] = []

        async def progress(done: float, total: Any, message: Any) -> None:
            seen.append((done, total, message))

        result = await c.call_tool(
            "claim_task",
            {"agent_type": "nobody-here", "worker_id": "idle", "wait_seconds": 6},
            progress_callback=progress,
        )
        assert not result.is_error and result.structured_content == {"task": None}, result
        assert seen and seen[0][1] == 6 and seen[0][2] == "waiting for a task", seen
        print(f"mcp: a 6 s claim streamed {len(seen)} progress notification(s), then answered no task")

    async with client(addr, REVIEWER, "legacy") as old:
        # The SDK asks for its newest handshake revision; the server must also take 2025-06-18.
        assert old.protocol_version in ("2025-11-25", "2025-06-18")
        projects = await tool(old, "list_projects", {})
        assert projects["items"][0]["id"] == project


def handshake_2025_06_18(addr: str) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "ci", "version": "1"}}}
    request = urllib.request.Request(f"http://{addr}/mcp", data=json.dumps(body).encode(), method="POST")
    for name, value in (("authorization", f"Bearer {REVIEWER}"), ("content-type", "application/json"),
                        ("accept", "application/json, text/event-stream")):
        request.add_header(name, value)
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.headers["mcp-session-id"], "the handshake answers a session id"
        assert json.loads(response.read())["result"]["protocolVersion"] == "2025-06-18"
    print("mcp: a 2025-06-18 handshake is answered in its own revision")


def main() -> None:
    binary = sys.argv[1]
    processes = []
    with tempfile.TemporaryDirectory() as work:
        try:
            process, addr = start_flightdeck(
                binary, work,
                "--api-key", f"ops:rw:{OPERATOR}",
                "--api-key", f"team:worker:{TEAM}",
                "--api-key", f"alice:reviewer:{REVIEWER}",
            )
            processes.append(process)
            asyncio.run(team(addr))
            handshake_2025_06_18(addr)
        finally:
            stop(processes)
            err = os.path.join(work, "fd.err")
            if os.path.exists(err) and "panicked" in open(err).read():
                print(open(err).read())
                raise SystemExit("check_mcp: the server panicked")


if __name__ == "__main__":
    main()
