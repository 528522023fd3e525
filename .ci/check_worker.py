"""The Python worker library (clients/python, installed with pip) against a real server: a fleet
of its workers, one per agent type, runs an sdlc workflow to completion; a worker whose lease ran
out is refused when it comes back late; a cancelled task stops its worker's heartbeats; a worker
that meets 503 backs off and claims once the server has room."""

import json
import sys
import tempfile
import threading
import urllib.request

from ci_common import start_flightdeck, stop, wait_for
from flightdeck_worker import LeaseLost, Worker

PHASES = {
    "analyst": "software_specification",
    "architect": "system_architecture",
    "coder": "source_code",
    "tester": "test_results",
    "deployer": "deployment_log",
}


def call(base, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method)
    if data is not None:
        request.add_header("content-type", "application/json")
    with urllib.request.urlopen(request, timeout=30) as r:
        raw = r.read()
        return json.loads(raw) if raw else None


def main():
    binary = sys.argv[1]
    work = tempfile.mkdtemp()
    server, addr = start_flightdeck(binary, work, "--timer-tick-ms", "20")
    base = f"http://{addr}"
    try:
        p = call(base, "POST", "/api/v1/projects", {"name": "python fleet"})["id"]
        call(base, "POST", f"/api/v1/hitl/project/{p}/oversight-level", {"level": "low"})
        call(base, "POST", f"/api/v1/projects/{p}/workflow", {"workflow": "sdlc", "context": {"goal": "a blog"}})

        def handler_for(kind):
            def handle(task):
                task.progress("writing", 50)
                task.post_artifact(kind, {"by": task.agent_type, "task": task.id})
                return {"done": task.agent_type}
            return handle

        workers = [Worker(base, agent, lease_seconds=3, wait_ms=2000) for agent in PHASES]
        threads = [
            threading.Thread(target=w.run, args=(handler_for(PHASES[w.agent_type]),), daemon=True)
            for w in workers
        ]
        for t in threads:
            t.start()
        run = wait_for(
            "the fleet to finish the workflow",
            lambda: (lambda w: w if w["status"] == "completed" else None)(
                call(base, "GET", f"/api/v1/projects/{p}/workflow")),
            timeout=120,
        )
        for w in workers:
            w.stop()
        for t in threads:
            t.join(timeout=30)
        assert all(not t.is_alive() for t in threads), "every worker stopped"
        assert sum(w.completed for w in workers) == 5, [w.completed for w in workers]
        assert all(w.failed == 0 and w.lost == 0 for w in workers)
        tasks = call(base, "GET", f"/api/v1/projects/{p}/tasks")
        items = tasks["items"] if isinstance(tasks, dict) else tasks
        assert [t["status"] for t in items] == ["completed"] * 5, items
        assert {t["output"]["done"] for t in items} == set(PHASES)
        assert all(t["progress"]["message"] == "writing" for t in items), items
        artifacts = call(base, "GET", f"/api/v1/context/project/{p}/artifacts")
        assert sorted(a["artifact_type"] for a in artifacts) == sorted(PHASES.values()), artifacts
        assert len(run["phases"]) == 5

        # A worker that comes back after its lease ran out is refused, and changes nothing.
        q = call(base, "POST", "/api/v1/projects", {"name": "late"})["id"]
        t = call(base, "POST", f"/api/v1/projects/{q}/tasks", {"agent_type": "coder", "instructions": "x"})["task_id"]
        late = Worker(base, "coder", lease_seconds=0.3, wait_ms=0)
        stale = late.claim()
        assert stale.id == t
        wait_for("the lease to run out",
                 lambda: call(base, "GET", f"/api/v1/tasks/{t}")["status"] == "pending")
        fresh = Worker(base, "coder", lease_seconds=30, wait_ms=0).claim()
        assert fresh.id == t and fresh.lease_id != stale.lease_id
        try:
            late._finish(stale, {"status": "completed", "output": {"late": True}})
            raise SystemExit("a stale completion was accepted")
        except LeaseLost:
            assert stale.lost and stale.lost_reason == "lease_lost"
        assert call(base, "GET", f"/api/v1/tasks/{t}")["output"] is None

        # A cancelled task: the worker's next heartbeat tells it to stop.
        call(base, "POST", f"/api/v1/tasks/{t}/status", {"status": "cancelled"})
        try:
            fresh.heartbeat()
            raise SystemExit("a heartbeat on a cancelled task was accepted")
        except LeaseLost:
            assert fresh.lost_reason == "task_cancelled"
    finally:
        stop([server])
    backs_off_on_503(binary)
    print("worker library: a fleet ran sdlc to completion; lease_lost and task_cancelled stop a "
          "worker; a worker backs off on 503 and claims once the server has room")


def backs_off_on_503(binary):
    """A server at its connection limit answers 503; the worker backs off and claims once there is
    room again."""
    import socket
    import urllib.error

    work = tempfile.mkdtemp()
    server, addr = start_flightdeck(binary, work, "--max-connections", "1")
    base = f"http://{addr}"
    def settled(method, path, body=None):
        """`call`, again while the server still counts the previous connection (a 503 until it
        has seen that one close)."""
        def attempt():
            try:
                return call(base, method, path, body)
            except urllib.error.HTTPError as e:
                if e.code == 503:
                    return None
                raise
        return wait_for(f"{method} {path} to find room", attempt)

    try:
        p = settled("POST", "/api/v1/projects", {"name": "busy"})["id"]
        t = settled("POST", f"/api/v1/projects/{p}/tasks", {"agent_type": "tester", "instructions": "x"})["task_id"]
        host, port = addr.rsplit(":", 1)

        def hold():
            """A connection the server keeps open, waiting for its request: the one slot. One
            that arrived while the server still counted an earlier connection is refused (503,
            closed), and another one is tried."""
            while True:
                settled("GET", "/livez")
                holder = socket.create_connection((host, int(port)))
                holder.settimeout(1.0)
                try:
                    holder.recv(1)  # an answer or a close: refused
                except socket.timeout:
                    return holder  # silence: the server waits for this connection's request
                holder.close()

        holder = hold()

        def refused():
            try:
                call(base, "GET", "/api/v1/health")
                return False
            except urllib.error.HTTPError as e:
                return e.code == 503
            except (urllib.error.URLError, ConnectionError):
                return False
        wait_for("the held connection to fill the limit", refused)
        worker = Worker(base, "tester", lease_seconds=30, wait_ms=0)
        got = []
        claimer = threading.Thread(target=lambda: got.append(worker.claim()), daemon=True)
        claimer.start()
        wait_for("the worker to back off twice",
                 lambda: worker.unavailable + worker.unreachable >= 2)
        assert not got, "nothing claimed while the server has no room"
        holder.close()
        claimer.join(timeout=60)
        assert got and got[0] is not None and got[0].id == t, got
        assert worker.unavailable >= 1, (worker.unavailable, worker.unreachable)
        assert settled("GET", f"/api/v1/tasks/{t}")["worker_id"] == worker.worker_id
    finally:
        stop([server])


if __name__ == "__main__":
    main()
