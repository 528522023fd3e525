"""A flightdeck worker in plain Python (standard library only).

    from flightdeck_worker import Worker

    def write_code(task):
        task.post_artifact("source_code", {"files": ["main.py"]})
        return {"files": 1}                  # the task's output

    Worker("http://127.0.0.1:8080", "coder").run(write_code)

The worker claims a task of its agent type with a long poll (`wait_ms`), heartbeats its lease in
the background every third of the lease, lets the handler report progress (`task.progress(...)`), and completes the task with the handler's return value,
or fails it with the exception's message, always with the claim's `lease_id`. When the server
answers 409 `lease_lost` (the lease ran out and another worker may hold the task) or
`task_cancelled`, the task is given up: `task.lost` becomes true, and nothing the worker sends for
it afterwards changes anything on the server. On 503 (overloaded, restarting) and on connection
errors it backs off and tries again.
"""

import json
import random
import socket
import threading
import time
import urllib.error
import urllib.request

__all__ = ["Worker", "Task", "LeaseLost", "ServerError"]


class ServerError(Exception):
    """The server answered an error: `status`, `code` (its `error.code`) and `message`."""

    def __init__(self, status, code, message):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class LeaseLost(Exception):
    """The task is no longer this worker's (`lease_lost` or `task_cancelled`): stop working on it."""


class Task:
    """A claimed task: its fields as the claim answered them, and what the handler may do."""

    def __init__(self, worker, data):
        self._worker = worker
        self.data = data
        self.id = data["task_id"]
        self.project_id = data["project_id"]
        self.agent_type = data["agent_type"]
        self.instructions = data.get("instructions", "")
        self.context_ids = data.get("context_ids", [])
        self.lease_id = data["lease_id"]
        self.lost = False
        self.lost_reason = None

    def post_artifact(self, artifact_type, content, metadata=None):
        """Stores an artifact in the task's project; returns it."""
        self._check()
        body = {
            "project_id": self.project_id,
            "source_agent": self.agent_type,
            "artifact_type": artifact_type,
            "content": content,
        }
        if metadata is not None:
            body["metadata"] = metadata
        return self._worker._call("POST", "/api/v1/context/artifacts", body)[1]

    def progress(self, message=None, percent=None, data=None):
        """Reports progress: the project's WebSocket subscribers see it at once (coalesced to 10
        frames per second), and it is shown with the task."""
        self._check()
        body = {"lease_id": self.lease_id}
        for key, value in (("message", message), ("percent", percent), ("data", data)):
            if value is not None:
                body[key] = value
        self._fenced("POST", f"/api/v1/tasks/{self.id}/progress", body)

    def heartbeat(self):
        """Extends the lease now (the worker also does it in the background)."""
        self._check()
        self._fenced("POST", f"/api/v1/tasks/{self.id}/heartbeat", {
            "lease_id": self.lease_id,
            "worker_id": self._worker.worker_id,
            "lease_seconds": self._worker.lease_seconds,
        })

    def _check(self):
        if self.lost:
            raise LeaseLost(self.lost_reason or "lease lost")

    def _fenced(self, method, path, body):
        try:
            return self._worker._call(method, path, body)
        except ServerError as e:
            if e.status == 409 and e.code in ("lease_lost", "task_cancelled"):
                self.lost = True
                self.lost_reason = e.code
                raise LeaseLost(e.code) from e
            raise


class Worker:
    """Claims and works tasks of one agent type until `stop()` (or `max_tasks`)."""

    def __init__(self, url, agent_type, worker_id=None, api_key=None, lease_seconds=60,
                 wait_ms=25_000, timeout=60):
        self.url = url.rstrip("/")
        self.agent_type = agent_type
        self.worker_id = worker_id or f"{agent_type}-{socket.gethostname()}-{random.getrandbits(32):08x}"
        self.api_key = api_key
        self.lease_seconds = lease_seconds
        self.wait_ms = wait_ms
        self.timeout = timeout
        self._stop = threading.Event()
        self.completed = 0
        self.failed = 0
        self.lost = 0
        # Back-offs so far: 503 answers, and requests that failed to connect or were cut off.
        self.unavailable = 0
        self.unreachable = 0

    def stop(self):
        self._stop.set()

    def _call(self, method, path, body=None):
        """One request; (status, parsed JSON or None). Error answers raise ServerError."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            request.add_header("content-type", "application/json")
        if self.api_key:
            request.add_header("authorization", f"Bearer {self.api_key}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
                return response.status, (json.loads(raw) if raw else None)
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                error = json.loads(raw)["error"]
                code, message = error["code"], error["message"]
            except (ValueError, KeyError, TypeError):
                code, message = "unknown", raw.decode(errors="replace")
            raise ServerError(e.code, code, message) from None

    def _with_backoff(self, attempt):
        """Runs `attempt` until it returns, backing off on 503 and connection errors."""
        delay = 0.1
        while not self._stop.is_set():
            try:
                return attempt()
            except ServerError as e:
                if e.status != 503:
                    raise
                self.unavailable += 1
            except (urllib.error.URLError, ConnectionError, socket.timeout):
                self.unreachable += 1
            self._stop.wait(delay)
            delay = min(delay * 2, 5.0)
        return None

    def claim(self):
        """A task (long poll), or None when nothing came within the wait or the worker stopped."""
        body = {
            "agent_type": self.agent_type,
            "worker_id": self.worker_id,
            "lease_seconds": self.lease_seconds,
            "wait_ms": self.wait_ms,
        }
        answer = self._with_backoff(lambda: self._call("POST", "/api/v1/tasks/claim", body))
        if answer is None or answer[0] == 204:
            return None
        return Task(self, answer[1])

    def run(self, handler, max_tasks=None):
        """Claims and handles tasks until `stop()` or `max_tasks` were handled. `handler(task)`
        returns the task's output (any JSON value) or raises to fail it."""
        handled = 0
        while not self._stop.is_set() and (max_tasks is None or handled < max_tasks):
            task = self.claim()
            if task is None:
                continue
            handled += 1
            self._work(task, handler)

    def _work(self, task, handler):
        beating = threading.Event()

        def heartbeats():
            while not beating.wait(self.lease_seconds / 3):
                try:
                    task.heartbeat()
                except LeaseLost:
                    return
                except (ServerError, OSError):
                    pass  # the next beat tries again; the lease is three beats long

        beat = threading.Thread(target=heartbeats, daemon=True)
        beat.start()
        try:
            try:
                output = handler(task)
            except LeaseLost:
                self.lost += 1
                return
            except Exception as e:  # the handler's failure is the task's
                self._finish(task, {"status": "failed", "error_message": f"{type(e).__name__}: {e}"[:10_000]})
                self.failed += 1
                return
            self._finish(task, {"status": "completed", "output": output})
            self.completed += 1
        except LeaseLost:
            self.lost += 1
        finally:
            beating.set()
            beat.join()

    def _finish(self, task, body):
        task._check()
        body["lease_id"] = task.lease_id
        self._with_backoff(lambda: task._fenced("POST", f"/api/v1/tasks/{task.id}/status", body))
