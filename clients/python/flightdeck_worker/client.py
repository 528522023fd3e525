"""One HTTP call to flightdeck, with the standard library only."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from typing import Any, Dict, List, Optional, Tuple

from .errors import ServerError

log = logging.getLogger("flightdeck_worker")

#: A JSON value as the server answers it.
Json = Any


class Client:
    """Requests to one flightdeck server, with an optional API key. Given a follower, it reads
    from it and sends writes to its leader: a write a follower refuses (503 `not_leader`) is sent
    again to the leader it names, where every later write goes too."""

    def __init__(self, url: str, api_key: Optional[str] = None, timeout: float = 60) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        #: Where writes go: the server given, until a follower names its leader.
        self.write_url = self.url

    def call(self, method: str, path: str, body: Optional[Json] = None) -> Tuple[int, Json]:
        """One request: (status, parsed JSON or None). Error answers raise `ServerError`;
        connection failures raise `OSError` (`urllib.error.URLError` among them)."""
        base = self.url if method in ("GET", "HEAD") else self.write_url
        try:
            return self._send(base, method, path, body)
        except ServerError as e:
            if e.code != "not_leader" or not e.leader or e.leader.rstrip("/") == base:
                raise
            log.info("%s is a follower; writes go to its leader %s", base, e.leader)
            self.write_url = e.leader.rstrip("/")
            return self._send(self.write_url, method, path, body)

    def _send(self, base: str, method: str, path: str, body: Optional[Json]) -> Tuple[int, Json]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(base + path, data=data, method=method)
        if data is not None or method != "GET":
            # Also on a body-less write: a server without API keys refuses a POST that does not
            # say it is JSON (a web page could send it).
            request.add_header("content-type", "application/json")
        if self.api_key:
            request.add_header("authorization", f"Bearer {self.api_key}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
                status: int = response.status
                return status, (json.loads(raw) if raw else None)
        except urllib.error.HTTPError as e:
            raw = e.read()
            leader: Optional[str] = None
            try:
                error = json.loads(raw)["error"]
                code, message = str(error["code"]), str(error["message"])
                if isinstance(error.get("leader"), str):
                    leader = error["leader"]
            except (ValueError, KeyError, TypeError, AttributeError):
                code, message = "unknown", raw.decode(errors="replace")
            log.debug("%s %s answered %s %s: %s", method, path, e.code, code, message)
            raise ServerError(e.code, code, message, leader) from None

    def define_workflow(self, name: str, phases: List[Dict[str, Any]]) -> Json:
        """Stores a workflow definition (`PUT /api/v1/workflows/{name}`); returns it with its
        version."""
        return self.call("PUT", f"/api/v1/workflows/{name}", {"phases": phases})[1]

    def start_workflow(self, project_id: str, workflow: str, context: Json = None) -> Json:
        """Starts a run of `workflow` on the project; returns the run."""
        body: Dict[str, Json] = {"workflow": workflow}
        if context is not None:
            body["context"] = context
        return self.call("POST", f"/api/v1/projects/{project_id}/workflow", body)[1]

    def cancel_workflow(self, project_id: str, reason: Optional[str] = None) -> Json:
        """Cancels the project's running workflow and its open tasks; returns the run."""
        body: Dict[str, Json] = {} if reason is None else {"reason": reason}
        return self.call("POST", f"/api/v1/projects/{project_id}/workflow/cancel", body)[1]

    def inbox(self) -> List[Json]:
        """The pending approvals assigned to this client's API key."""
        answer: List[Json] = self.call("GET", "/api/v1/hitl/pending?assignee=me")[1]
        return answer

    def answer(self, request_id: str, action: str, comment: Optional[str] = None) -> Json:
        """Approves, rejects or amends an approval request as this client's API key."""
        body: Dict[str, Json] = {"action": action}
        if comment is not None:
            body["comment"] = comment
        return self.call("POST", f"/api/v1/hitl/{request_id}/respond", body)[1]

    def workflow(self, project_id: str) -> Json:
        """The project's workflow run, as `GET /api/v1/projects/{id}/workflow` answers it."""
        return self.call("GET", f"/api/v1/projects/{project_id}/workflow")[1]

    def phase_artifacts(self, project_id: str) -> Dict[str, str]:
        """What each agent type of the project's workflow produces (its first artifact type), as
        the server's workflow definition says: the one place the phase-to-artifact map is
        written."""
        run = self.workflow(project_id)
        return {
            phase["agent_type"]: phase["produces"][0]
            for phase in run["phases"]
            if phase.get("produces")
        }
