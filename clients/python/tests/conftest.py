"""The real flightdeck server for each test: its binary from `FLIGHTDECK_BIN`, else the repository's
`target/debug/flightdeck`, on a free port of 127.0.0.1 with a temporary data directory, stopped
(by its handle) after the test."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional, TypeVar

import pytest

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[3]


def binary() -> str:
    path = os.environ.get("FLIGHTDECK_BIN") or str(REPO / "target" / "debug" / "flightdeck")
    if not os.access(path, os.X_OK):
        pytest.fail(f"no flightdeck binary at {path} (build it, or set FLIGHTDECK_BIN)")
    return path


def wait_for(what: str, check: Callable[[], Optional[T]], timeout: float = 60.0) -> T:
    """Polls `check` until it returns something other than None or False."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value is not None and value is not False:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


class Server:
    """A running flightdeck: its base URL, and plain calls to it."""

    def __init__(self, process: "subprocess.Popen[bytes]", addr: str) -> None:
        self.process = process
        self.addr = addr
        self.base = f"http://{addr}"

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            request.add_header("content-type", "application/json")
        with urllib.request.urlopen(request, timeout=30) as r:
            raw = r.read()
            return json.loads(raw) if raw else None


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Starts servers with extra flags; every one is stopped after the test."""
    started: List[Server] = []

    def run(*args: str) -> Server:
        work = tmp_path / f"server{len(started)}"
        work.mkdir()
        out = work / "out"
        process = subprocess.Popen(
            [binary(), "--listen", "127.0.0.1:0", "--data-dir", str(work / "data"), *args],
            stdout=out.open("w"),
            stderr=(work / "err").open("w"),
        )

        def listening() -> Optional[str]:
            for line in out.read_text().splitlines():
                if line.startswith("listening on "):
                    return line.split()[-1]
            if process.poll() is not None:
                pytest.fail(f"flightdeck exited: {(work / 'err').read_text()}")
            return None

        server = Server(process, wait_for("flightdeck to listen", listening))
        started.append(server)
        return server

    yield run
    for server in reversed(started):
        server.process.terminate()
        try:
            server.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.process.kill()


@pytest.fixture
def server(start: Callable[..., Server]) -> Server:
    return start("--timer-tick-ms", "20")
