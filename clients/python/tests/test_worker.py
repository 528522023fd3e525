"""The worker library against the real server: claims, heartbeats, artifacts and progress, a lost
lease, a cancelled task, a failing handler, and the back-off from a server with no room."""

from __future__ import annotations

import logging
import socket
import threading
import time
import urllib.error
import urllib.request
from typing import Any, Callable, Dict, List, Optional

import pytest

from conftest import Server, wait_for
from flightdeck_worker import Client, LeaseLost, ServerError, Task, Worker


def new_task(server: Server, agent: str, name: str = "p") -> str:
    project = server.call("POST", "/api/v1/projects", {"name": name})["id"]
    task = server.call(
        "POST", f"/api/v1/projects/{project}/tasks", {"agent_type": agent, "instructions": "x"}
    )
    return str(task["task_id"])


def test_a_fleet_runs_a_workflow_to_completion(server: Server) -> None:
    p = server.call("POST", "/api/v1/projects", {"name": "python fleet"})["id"]
    server.call("POST", f"/api/v1/hitl/project/{p}/oversight-level", {"level": "low"})
    server.call(
        "POST", f"/api/v1/projects/{p}/workflow", {"workflow": "sdlc", "context": {"goal": "a blog"}}
    )
    # What each phase produces, from the server's own definition of the workflow.
    produces = Client(server.base).phase_artifacts(p)
    assert len(produces) == 5

    def handle(task: Task) -> Dict[str, Any]:
        task.progress("writing", 50)
        task.post_artifact(produces[task.agent_type], {"by": task.agent_type, "task": task.id})
        return {"done": task.agent_type}

    workers = [Worker(server.base, agent, lease_seconds=3, wait_ms=2000) for agent in produces]
    threads = [threading.Thread(target=w.run, args=(handle,), daemon=True) for w in workers]
    for t in threads:
        t.start()
    run = wait_for(
        "the fleet to finish the workflow",
        lambda: (lambda w: w if w["status"] == "completed" else None)(
            server.call("GET", f"/api/v1/projects/{p}/workflow")
        ),
        timeout=120,
    )
    for w in workers:
        w.stop()
    for t in threads:
        t.join(timeout=30)
    assert all(not t.is_alive() for t in threads)
    assert [w.completed for w in workers] == [1] * 5
    assert all(w.failed == 0 and w.lost == 0 for w in workers)
    items = server.call("GET", f"/api/v1/projects/{p}/tasks")["items"]
    assert [t["status"] for t in items] == ["completed"] * 5
    assert {t["output"]["done"] for t in items} == set(produces)
    assert all(t["progress"]["message"] == "writing" for t in items)
    artifacts = server.call("GET", f"/api/v1/context/project/{p}/artifacts")
    assert sorted(a["artifact_type"] for a in artifacts) == sorted(produces.values())
    assert len(run["phases"]) == 5


def test_a_claim_answers_none_when_nothing_is_pending(server: Server) -> None:
    worker = Worker(server.base, "coder", wait_ms=200)
    started = time.monotonic()
    assert worker.claim() is None
    assert time.monotonic() - started >= 0.15, "the claim waited for work"


def test_heartbeats_keep_a_slow_task_and_the_output_is_stored(server: Server) -> None:
    t = new_task(server, "coder")
    worker = Worker(server.base, "coder", lease_seconds=1.5, wait_ms=0)
    expiries: List[int] = []

    def slow(task: Task) -> Dict[str, bool]:
        # Two lease lengths: only the background heartbeats (every 0.5 s) keep the claim.
        for _ in range(6):
            time.sleep(0.5)
            expiries.append(server.call("GET", f"/api/v1/tasks/{task.id}")["lease_expires_at"])
        return {"slow": True}

    worker.run(slow, max_tasks=1)
    assert worker.completed == 1 and worker.lost == 0
    assert expiries == sorted(expiries) and expiries[-1] > expiries[0], expiries
    task = server.call("GET", f"/api/v1/tasks/{t}")
    assert task["status"] == "completed" and task["output"] == {"slow": True}


def test_a_failing_handler_fails_its_task_with_the_message(server: Server) -> None:
    t = new_task(server, "tester")

    def broken(task: Task) -> None:
        raise ValueError("no tests found")

    worker = Worker(server.base, "tester", wait_ms=0)
    worker.run(broken, max_tasks=1)
    assert worker.failed == 1
    task = server.call("GET", f"/api/v1/tasks/{t}")
    assert task["status"] == "failed"
    assert task["error_message"] == "ValueError: no tests found"


def test_a_worker_whose_lease_ran_out_is_refused_and_changes_nothing(server: Server) -> None:
    t = new_task(server, "coder", "late")
    late = Worker(server.base, "coder", lease_seconds=0.3, wait_ms=0)
    stale = late.claim()
    assert stale is not None and stale.id == t
    wait_for(
        "the lease to run out",
        lambda: server.call("GET", f"/api/v1/tasks/{t}")["status"] == "pending",
    )
    fresh = Worker(server.base, "coder", lease_seconds=30, wait_ms=0).claim()
    assert fresh is not None and fresh.id == t and fresh.lease_id != stale.lease_id
    with pytest.raises(LeaseLost):
        late.finish(stale, {"status": "completed", "output": {"late": True}})
    assert stale.lost and stale.lost_reason == "lease_lost"
    # Once lost, the task refuses everything without asking the server.
    with pytest.raises(LeaseLost):
        stale.post_artifact("source_code", {})
    assert server.call("GET", f"/api/v1/tasks/{t}")["output"] is None
    assert server.call("GET", f"/api/v1/tasks/{t}")["worker_id"] == fresh.data["worker_id"]


def test_usage_is_reported_once_per_report_and_summed_on_the_task(server: Server) -> None:
    t = new_task(server, "coder", "spend")
    worker = Worker(server.base, "coder", lease_seconds=30, wait_ms=0)
    seen: List[Dict[str, Any]] = []

    def spend(task: Task) -> Dict[str, bool]:
        seen.append(task.report_usage("model-x", 1000, 200, cache_read_tokens=50, cost_usd=0.01))
        # The same report again (a retry): counted once.
        again = task.report_usage("model-x", 1000, 200, cost_usd=0.01, report_id="turn-2")
        seen.append(task.report_usage("model-x", 1000, 200, cost_usd=0.01, report_id="turn-2"))
        assert again["usage_id"] == seen[-1]["usage_id"] and seen[-1]["repeated"] is True
        return {"spent": True}

    worker.run(spend, max_tasks=1)
    assert worker.completed == 1 and worker.failed == 0
    assert seen[0]["cost_source"] == "reported" and seen[0]["lease_lost"] is False
    usage = server.call("GET", f"/api/v1/tasks/{t}")["usage"]
    assert usage["reports"] == 2
    assert usage["input_tokens"] == 2000 and usage["output_tokens"] == 400
    assert usage["cache_read_tokens"] == 50
    assert abs(usage["cost_usd"] - 0.02) < 1e-9
    # After the task is done, its lease no longer holds: recorded, marked, and LeaseLost raised.
    # A lease id that is not the task's (it holds none once done): what a late report carries.
    late_lease = "01900000-0000-7000-8000-000000000000"
    done = Task(worker, {"task_id": t, "project_id": "", "agent_type": "coder", "lease_id": late_lease})
    with pytest.raises(LeaseLost):
        done.report_usage("model-x", 1, 1, report_id="late")
    assert done.lost
    assert server.call("GET", f"/api/v1/tasks/{t}")["usage"]["reports"] == 3


def test_a_worker_stops_when_its_projects_budget_runs_out_and_resumes_once_raised(
    server: Server,
) -> None:
    t = new_task(server, "coder", "capped")
    project = server.call("GET", f"/api/v1/tasks/{t}")["project_id"]
    server.call("PUT", f"/api/v1/budgets/project:{project}", {"max_tokens": 100})
    worker = Worker(server.base, "coder", lease_seconds=30, wait_ms=0)
    spent: List[str] = []

    def spend(task: Task) -> Dict[str, bool]:
        spent.append(task.id)
        task.report_usage("model-x", 150, 0)  # past the budget: LeaseLost (budget_exhausted)
        return {"unreachable": True}

    worker.run(spend, max_tasks=1)
    assert spent == [t] and worker.lost == 1 and worker.completed == 0
    task = server.call("GET", f"/api/v1/tasks/{t}")
    assert task["status"] == "pending" and task["usage"]["input_tokens"] == 150
    budget = server.call("GET", f"/api/v1/budgets/project:{project}")
    assert budget["state"] == "exhausted"
    assert Worker(server.base, "coder", wait_ms=0).claim() is None
    # Raised: the task is claimable again and the worker finishes it.
    server.call("PUT", f"/api/v1/budgets/project:{project}", {"max_tokens": 10_000})
    worker.run(lambda task: {"done": True}, max_tasks=1)
    assert worker.completed == 1
    assert server.call("GET", f"/api/v1/tasks/{t}")["status"] == "completed"


def test_a_cancelled_task_stops_its_worker(server: Server) -> None:
    t = new_task(server, "coder", "cancel")
    cancelled = threading.Event()
    reasons: List[Optional[str]] = []

    def waits_for_cancel(task: Task) -> None:
        server.call("POST", f"/api/v1/tasks/{t}/status", {"status": "cancelled"})
        cancelled.set()
        try:
            task.heartbeat()
        finally:
            reasons.append(task.lost_reason)

    worker = Worker(server.base, "coder", wait_ms=0)
    worker.run(waits_for_cancel, max_tasks=1)
    assert cancelled.is_set()
    assert reasons == ["task_cancelled"] and worker.lost == 1 and worker.completed == 0
    assert server.call("GET", f"/api/v1/tasks/{t}")["status"] == "cancelled"


def test_errors_carry_the_servers_code(server: Server) -> None:
    client = Client(server.base)
    with pytest.raises(ServerError) as refused:
        client.call("GET", "/api/v1/tasks/not-a-uuid")
    assert (refused.value.status, refused.value.code) == (400, "invalid_id")


def test_a_worker_backs_off_on_503_and_claims_once_there_is_room(
    start: Callable[..., Server], caplog: pytest.LogCaptureFixture
) -> None:
    server = start("--max-connections", "1")

    def settled(method: str, path: str, body: Any = None) -> Any:
        """A call, again while the server still counts the previous connection."""

        def attempt() -> Any:
            try:
                return server.call(method, path, body)
            except urllib.error.HTTPError as e:
                if e.code == 503:
                    return None
                raise

        return wait_for(f"{method} {path} to find room", attempt)

    p = settled("POST", "/api/v1/projects", {"name": "busy"})["id"]
    t = settled("POST", f"/api/v1/projects/{p}/tasks", {"agent_type": "tester", "instructions": "x"})[
        "task_id"
    ]
    host, port = server.addr.rsplit(":", 1)

    def hold() -> socket.socket:
        """A connection the server keeps open, waiting for its request: the one slot."""
        while True:
            settled("GET", "/livez")
            holder = socket.create_connection((host, int(port)))
            holder.settimeout(1.0)
            try:
                holder.recv(1)  # an answer or a close: refused, try again
            except socket.timeout:
                return holder
            holder.close()

    holder = hold()

    def refused() -> bool:
        try:
            server.call("GET", "/livez")
            return False
        except urllib.error.HTTPError as e:
            return e.code == 503
        except OSError:
            return False

    wait_for("the held connection to fill the limit", refused)
    worker = Worker(server.base, "tester", lease_seconds=30, wait_ms=0)
    got: List[Optional[Task]] = []
    with caplog.at_level(logging.WARNING, logger="flightdeck_worker"):
        claimer = threading.Thread(target=lambda: got.append(worker.claim()), daemon=True)
        claimer.start()
        wait_for("the worker to back off twice", lambda: worker.unavailable + worker.unreachable >= 2)
        assert not got, "nothing claimed while the server has no room"
        holder.close()
        claimer.join(timeout=60)
    assert got and got[0] is not None and got[0].id == t
    assert worker.unavailable >= 1
    assert any("unavailable" in r.getMessage() for r in caplog.records), caplog.records
    assert settled("GET", f"/api/v1/tasks/{t}")["worker_id"] == worker.worker_id


def test_a_team_of_its_own_runs_a_workflow_defined_through_the_api(
    start: Callable[..., Server],
) -> None:
    """The issue's team: `plan`, then `research` and `outline` at the same time, then `draft` fanned
    out over the plan's sections, then `edit` behind alice's gate, which times out and escalates
    to the lead, who approves it from her inbox."""
    team, alice, lead = "team-secret-0123456789", "alice-secret-012345678", "lead-secret-0123456789"
    server = start(
        "--timer-tick-ms",
        "20",
        "--api-key",
        f"team:operator,worker:{team},alice:reviewer:{alice},lead:reviewer:{lead}",
    )
    ops = Client(server.base, api_key=team)
    definition = ops.define_workflow(
        "essay",
        [
            {"id": "plan", "agent_type": "planner", "instructions": "Plan {project}",
             "depends_on": []},
            {"id": "research", "agent_type": "researcher", "instructions": "Research {project}",
             "depends_on": ["plan"]},
            {"id": "outline", "agent_type": "writer", "instructions": "Outline {project}",
             "depends_on": ["plan"]},
            {"id": "draft", "agent_type": "writer", "instructions": "Write about {item}",
             "depends_on": ["research", "outline"], "for_each": "plan.output.sections"},
            {"id": "edit", "agent_type": "editor", "instructions": "Edit {project}",
             "depends_on": ["draft"], "gate": True, "gate_assignees": ["alice"],
             "gate_timeout_seconds": 3, "gate_on_timeout": "escalate",
             "gate_escalate_to": ["lead"]},
        ],
    )
    assert definition["version"] == 1
    p = ops.call("POST", "/api/v1/projects", {"name": "tides"})[1]["id"]
    ops.start_workflow(p, "essay")

    seen: Dict[str, List[Any]] = {}
    lock = threading.Lock()

    def handle(task: Task) -> Dict[str, Any]:
        with lock:
            seen.setdefault(task.phase or "", []).append(task)
        if task.phase == "plan":
            return {"sections": ["waves", "moon", "surf"]}
        if task.phase == "draft":
            assert task.upstream["plan"]["output"]["sections"][task.workflow["index"]] == task.item
            return {"text": f"about {task.item}"}
        if task.phase == "edit":
            return {"edited": [o["text"] for o in task.upstream["draft"]["outputs"]]}
        return {"done": task.phase}

    workers = [
        Worker(server.base, agent, api_key=team, lease_seconds=5, wait_ms=500)
        for agent in ["planner", "researcher", "writer", "writer", "editor"]
    ]
    threads = [threading.Thread(target=w.run, args=(handle,), daemon=True) for w in workers]
    for t in threads:
        t.start()
    try:
        # Nobody answers alice's gate: it times out and escalates; the lead approves it.
        boss = Client(server.base, api_key=lead)
        gate = wait_for("the escalated gate in the lead's inbox", lambda: boss.inbox() or None)[0]
        assert gate["escalated"] is True and gate["assignees"] == ["lead"]
        with pytest.raises(ServerError) as refused:
            Client(server.base, api_key=alice).answer(gate["request_id"], "approve")
        assert (refused.value.status, refused.value.code) == (403, "not_an_assignee")
        assert boss.answer(gate["request_id"], "approve")["workflow_resumed"] is True
        run = wait_for(
            "the run to complete",
            lambda: (lambda r: r if r["status"] == "completed" else None)(ops.workflow(p)),
        )
    finally:
        for w in workers:
            w.stop()
        for t in threads:
            t.join(timeout=30)
    assert [ph["status"] for ph in run["phases"]] == ["done"] * 5
    draft = next(ph for ph in run["phases"] if ph["id"] == "draft")
    assert (draft["items_done"], draft["items_total"]) == (3, 3)
    assert sorted(t.item for t in seen["draft"]) == ["moon", "surf", "waves"]
    edit = seen["edit"][0]
    assert [o["text"] for o in edit.upstream["draft"]["outputs"]] == [
        "about waves", "about moon", "about surf"
    ]
    assert sum(w.completed for w in workers) == 7  # plan, research, outline, 3 drafts, edit
    assert all(w.failed == 0 and w.lost == 0 for w in workers)


def test_given_a_follower_the_client_reads_from_it_and_writes_to_its_leader(
    start: Callable[..., Server],
) -> None:
    key = "replication-secret-for-python"
    leader = start("--replication-key", key)
    follower = start("--follow", leader.base, "--replication-key", key)
    client = Client(follower.base)
    status, project = client.call("POST", "/api/v1/projects", {"name": "through a follower"})
    assert status == 201
    assert client.write_url == leader.base
    assert leader.call("GET", f"/api/v1/projects/{project['id']}")["name"] == "through a follower"

    def replicated() -> Optional[Dict[str, Any]]:
        try:
            found: Dict[str, Any] = client.call("GET", f"/api/v1/projects/{project['id']}")[1]
            return found
        except ServerError as e:
            assert e.code == "project_not_found"
            return None

    # Read from the follower, once its stream from the leader has brought the project.
    assert wait_for("the project on the follower", replicated)["name"] == "through a follower"
    assert client.url == follower.base
    # A follower's refusal names its leader; the library's next write goes there directly.
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(
            urllib.request.Request(
                follower.base + "/api/v1/projects",
                data=b'{"name": "x"}',
                method="POST",
                headers={"content-type": "application/json"},
            ),
            timeout=30,
        )
    assert refused.value.code == 503
    assert refused.value.headers["flightdeck-leader"] == leader.base
    task = client.call(
        "POST", f"/api/v1/projects/{project['id']}/tasks", {"agent_type": "coder", "instructions": "x"}
    )[1]
    assert leader.call("GET", f"/api/v1/tasks/{task['task_id']}")["status"] == "pending"
