"""A flightdeck worker in plain Python (standard library only).

    from flightdeck_worker import Worker

    def write_code(task):
        task.post_artifact("source_code", {"files": ["main.py"]})
        return {"files": 1}                  # the task's output

    Worker("http://127.0.0.1:8080", "coder").run(write_code)

The worker claims a task of its agent type with a long poll (`wait_ms`), heartbeats its lease in
the background every third of the lease, lets the handler report progress (`task.progress(...)`),
and completes the task with the handler's return value, or fails it with the exception's message,
always with the claim's `lease_id`. When the server answers 409 `lease_lost` (the lease ran out
and another worker may hold the task), `task_cancelled` or `budget_exhausted` (a budget over the
task ran out: the task went back to pending until the budget is raised), the task is given up:
`task.lost`
becomes true, and nothing the worker sends for it afterwards changes anything on the server. On
503 (overloaded, restarting) and on connection errors it backs off and tries again, logging why
(logger `flightdeck_worker`).
"""

from .client import Client
from .errors import LeaseLost, ServerError
from .task import Task
from .worker import Handler, Worker

__all__ = ["Client", "Handler", "LeaseLost", "ServerError", "Task", "Worker"]
__version__ = "0.2.0"
