"""A claimed task, and what its handler may do while it holds the claim."""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from .client import Json
from .errors import LeaseLost, ServerError

if TYPE_CHECKING:  # pragma: no cover
    from .worker import Worker

log = logging.getLogger("flightdeck_worker")


class Task:
    """A claimed task: its fields as the claim answered them, and what the handler may do."""

    def __init__(self, worker: "Worker", data: Dict[str, Any]) -> None:
        self._worker = worker
        self.data = data
        self.id: str = data["task_id"]
        self.project_id: str = data["project_id"]
        self.agent_type: str = data["agent_type"]
        self.instructions: str = data.get("instructions", "")
        self.context_ids: List[str] = data.get("context_ids", [])
        self.lease_id: str = data["lease_id"]
        #: A workflow phase's task: `{workflow, version, phase, upstream, item?, index?, count?}`
        #: (None for a task a client created).
        self.workflow: Optional[Dict[str, Any]] = data.get("workflow")
        self.lost = False
        self.lost_reason: Optional[str] = None

    @property
    def phase(self) -> Optional[str]:
        """The id of the workflow phase this task is, if it is one."""
        return None if self.workflow is None else str(self.workflow["phase"])

    @property
    def item(self) -> Any:
        """A fan-out task's element of its phase's list (None otherwise)."""
        return None if self.workflow is None else self.workflow.get("item")

    @property
    def upstream(self) -> Dict[str, Any]:
        """Every phase this one depends on, directly or not, by id: `{agent_type, task_id, output,
        artifacts}`, or for a fan-out `{agent_type, task_ids, outputs, artifacts}` (outputs in its
        list's order)."""
        return {} if self.workflow is None else dict(self.workflow.get("upstream", {}))

    def post_artifact(
        self, artifact_type: str, content: Json, metadata: Optional[Json] = None
    ) -> Json:
        """Stores an artifact in the task's project; returns it."""
        self._check()
        body: Dict[str, Json] = {
            "project_id": self.project_id,
            "source_agent": self.agent_type,
            "artifact_type": artifact_type,
            "content": content,
        }
        if metadata is not None:
            body["metadata"] = metadata
        return self._worker.client.call("POST", "/api/v1/context/artifacts", body)[1]

    def progress(
        self,
        message: Optional[str] = None,
        percent: Optional[float] = None,
        data: Optional[Json] = None,
    ) -> None:
        """Reports progress: the project's WebSocket subscribers see it at once (coalesced to 10
        frames per second), and it is shown with the task."""
        self._check()
        body: Dict[str, Json] = {"lease_id": self.lease_id}
        for key, value in (("message", message), ("percent", percent), ("data", data)):
            if value is not None:
                body[key] = value
        self._fenced("POST", f"/api/v1/tasks/{self.id}/progress", body)

    def report_usage(
        self,
        model: str,
        input_tokens: int,
        output_tokens: int,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
        cost_usd: Optional[float] = None,
        provider: Optional[str] = None,
        report_id: Optional[str] = None,
    ) -> Json:
        """Records what a model call spent (OpenTelemetry GenAI's `gen_ai.usage.*`), durably, and
        returns the ledger's entry with the task's totals (`task_usage`). `report_id` names the
        report (one is made when none is given): the same one again for this task counts once.
        Without `cost_usd` the server prices the tokens from its `[[prices]]`. Usage spent after
        the lease was lost is still recorded; the task is then marked lost and `LeaseLost` raised."""
        body: Dict[str, Json] = {
            "lease_id": self.lease_id,
            "worker_id": self._worker.worker_id,
            "report_id": report_id or str(uuid.uuid4()),
            "model": model,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cache_read_tokens": cache_read_tokens,
            "cache_write_tokens": cache_write_tokens,
        }
        if cost_usd is not None:
            body["cost_usd"] = cost_usd
        if provider is not None:
            body["provider"] = provider
        entry = self._fenced("POST", f"/api/v1/tasks/{self.id}/usage", body)[1]
        if isinstance(entry, dict) and entry.get("lease_lost"):
            self.lost = True
            self.lost_reason = self.lost_reason or "lease_lost"
            raise LeaseLost("lease_lost")
        return entry

    def heartbeat(self) -> None:
        """Extends the lease now (the worker also does it in the background)."""
        self._check()
        self._fenced(
            "POST",
            f"/api/v1/tasks/{self.id}/heartbeat",
            {
                "lease_id": self.lease_id,
                "worker_id": self._worker.worker_id,
                "lease_seconds": self._worker.lease_seconds,
            },
        )

    def _check(self) -> None:
        if self.lost:
            raise LeaseLost(self.lost_reason or "lease lost")

    def _fenced(self, method: str, path: str, body: Json) -> Json:
        """A request under the claim's lease: `lease_lost`, `task_cancelled` or `budget_exhausted`
        (a budget over the task ran out and the task went back to pending) marks the task lost and
        raises `LeaseLost`."""
        try:
            return self._worker.client.call(method, path, body)
        except ServerError as e:
            if e.status == 409 and e.code in ("lease_lost", "task_cancelled", "budget_exhausted"):
                self.lost = True
                self.lost_reason = e.code
                log.info("task %s is no longer this worker's: %s", self.id, e.code)
                raise LeaseLost(e.code) from e
            raise
