"""What the server's refusals become."""

from __future__ import annotations

from typing import Optional


class ServerError(Exception):
    """The server answered an error: `status`, `code` (its `error.code`) and `message`; for
    `not_leader`, the leader's URL in `leader`."""

    def __init__(self, status: int, code: str, message: str, leader: Optional[str] = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.leader = leader


class LeaseLost(Exception):
    """The task is no longer this worker's (`lease_lost`, `task_cancelled`, or `budget_exhausted`:
    a budget over it ran out and it went back to pending): stop working on it."""
