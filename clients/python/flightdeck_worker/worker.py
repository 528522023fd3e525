"""The worker loop: claim with a long poll, heartbeat in the background, finish under the lease."""

from __future__ import annotations

import logging
import random
import socket
import threading
from typing import Any, Callable, Dict, Optional, Tuple, TypeVar

from .client import Client, Json
from .errors import LeaseLost, ServerError
from .task import Task

log = logging.getLogger("flightdeck_worker")

T = TypeVar("T")

#: What handles a task: returns its output (any JSON value), or raises to fail it.
Handler = Callable[[Task], Json]


class Worker:
    """Claims and works tasks of one agent type until `stop()` (or `max_tasks`)."""

    def __init__(
        self,
        url: str,
        agent_type: str,
        worker_id: Optional[str] = None,
        api_key: Optional[str] = None,
        lease_seconds: float = 60,
        wait_ms: int = 25_000,
        timeout: float = 60,
    ) -> None:
        self.client = Client(url, api_key=api_key, timeout=timeout)
        self.agent_type = agent_type
        self.worker_id = (
            worker_id or f"{agent_type}-{socket.gethostname()}-{random.getrandbits(32):08x}"
        )
        self.lease_seconds = lease_seconds
        self.wait_ms = wait_ms
        self._stop = threading.Event()
        self.completed = 0
        self.failed = 0
        self.lost = 0
        #: Back-offs so far: 503 answers, and requests that failed to connect or were cut off.
        self.unavailable = 0
        self.unreachable = 0

    def stop(self) -> None:
        """Ends `run` after the task in hand, and any back-off at once."""
        self._stop.set()

    def _with_backoff(self, attempt: Callable[[], T]) -> Optional[T]:
        """Runs `attempt` until it returns, backing off (0.1 s doubling to 5 s) on 503 and on
        connection errors; None once the worker is stopped."""
        delay = 0.1
        while not self._stop.is_set():
            try:
                return attempt()
            except ServerError as e:
                if e.status != 503:
                    raise
                self.unavailable += 1
                log.warning("the server is unavailable (%s); retrying in %.1f s", e.code, delay)
            except OSError as e:  # connection refused or reset, timeouts, URLError
                self.unreachable += 1
                log.warning("the server is unreachable (%s); retrying in %.1f s", e, delay)
            self._stop.wait(delay)
            delay = min(delay * 2, 5.0)
        return None

    def claim(self) -> Optional[Task]:
        """A task (long poll), or None when nothing came within the wait or the worker stopped."""
        body = {
            "agent_type": self.agent_type,
            "worker_id": self.worker_id,
            "lease_seconds": self.lease_seconds,
            "wait_ms": self.wait_ms,
        }
        answer: Optional[Tuple[int, Json]] = self._with_backoff(
            lambda: self.client.call("POST", "/api/v1/tasks/claim", body)
        )
        if answer is None or answer[0] == 204:
            return None
        task = Task(self, answer[1])
        log.info("claimed task %s (%s)", task.id, self.agent_type)
        return task

    def run(self, handler: Handler, max_tasks: Optional[int] = None) -> None:
        """Claims and handles tasks until `stop()` or `max_tasks` were handled."""
        handled = 0
        while not self._stop.is_set() and (max_tasks is None or handled < max_tasks):
            task = self.claim()
            if task is None:
                continue
            handled += 1
            self._work(task, handler)

    def _work(self, task: Task, handler: Handler) -> None:
        beating = threading.Event()

        def heartbeats() -> None:
            while not beating.wait(self.lease_seconds / 3):
                try:
                    task.heartbeat()
                except LeaseLost:
                    return
                except (ServerError, OSError) as e:
                    # The next beat tries again; the lease is three beats long.
                    log.warning("heartbeat of task %s failed: %s", task.id, e)

        beat = threading.Thread(target=heartbeats, daemon=True)
        beat.start()
        try:
            try:
                output = handler(task)
            except LeaseLost:
                self.lost += 1
                return
            except Exception as e:  # the handler's failure is the task's
                log.exception("the handler failed task %s", task.id)
                message = f"{type(e).__name__}: {e}"[:10_000]
                self.finish(task, {"status": "failed", "error_message": message})
                self.failed += 1
                return
            self.finish(task, {"status": "completed", "output": output})
            self.completed += 1
        except LeaseLost:
            self.lost += 1
        finally:
            beating.set()
            beat.join()

    def finish(self, task: Task, body: Dict[str, Any]) -> None:
        """Completes or fails `task` under its lease (`body`: `status` and `output` or
        `error_message`), backing off as a claim does; `LeaseLost` when it is no longer ours."""
        task._check()
        body["lease_id"] = task.lease_id
        self._with_backoff(
            lambda: task._fenced("POST", f"/api/v1/tasks/{task.id}/status", body)
        )
