#!/usr/bin/env python3
"""The shipped HAProxy configuration (deploy/haproxy/flightdeck.cfg) in front of real nodes: a
leader with a replication key, a follower of it, and a third address where nothing listens.
Checked with `haproxy -c`, then run (Debian's haproxy):

- every write through HAProxy reaches the leader (201, `Flightdeck-Node: node1`), never a
  follower's 503 `not_leader`: HAProxy's check of `/readyz?role=leader` keeps the follower and the
  dead address out of the write backend;
- plain reads are answered by both nodes in turns, and answer what the leader wrote;
  `Flightdeck-Read: leader` sends a read to the leader;
- a WebSocket upgrade goes to the leader (101);
- the follower stopped, reads go on, answered by the leader alone.

usage: check_haproxy.py FLIGHTDECK_BINARY
"""

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile

from ci_common import free_port, start_flightdeck, stop, wait_for

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "deploy", "haproxy",
                      "flightdeck.cfg")
KEY = "replication-secret-for-haproxy"


def call(addr, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection(addr, timeout=30)
    all_headers = {"content-type": "application/json"} if body is not None else {}
    all_headers.update(headers or {})
    conn.request(method, path, None if body is None else json.dumps(body), all_headers)
    response = conn.getresponse()
    raw = response.read()
    conn.close()
    data = json.loads(raw) if raw else None
    return response.status, response.getheader("flightdeck-node"), data


def main():
    binary = sys.argv[1]
    work = [tempfile.mkdtemp() for _ in range(3)]
    processes = []
    try:
        leader, leader_addr = start_flightdeck(binary, work[0], "--replication-key", KEY)
        processes.append(leader)
        follower, follower_addr = start_flightdeck(binary, work[1], "--follow",
                                                   f"http://{leader_addr}", "--replication-key", KEY)
        processes.append(follower)
        bind = f"127.0.0.1:{free_port()}"
        env = dict(os.environ, FLIGHTDECK_BIND=bind, FLIGHTDECK_NODE1=leader_addr,
                   FLIGHTDECK_NODE2=follower_addr, FLIGHTDECK_NODE3=f"127.0.0.1:{free_port()}")
        checked = subprocess.run([HAPROXY, "-c", "-f", CONFIG], env=env, capture_output=True, text=True)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert "Warnings were found" not in checked.stdout + checked.stderr, checked.stdout + checked.stderr
        print("haproxy: haproxy -c passes the shipped configuration")
        proxy = subprocess.Popen([HAPROXY, "-f", CONFIG, "-db"], env=env, stdout=subprocess.DEVNULL,
                                 stderr=open(os.path.join(work[2], "haproxy.err"), "w"))
        processes.append(proxy)

        # The follower is ready (streaming) and the checks have run: both nodes read, one writes.
        def served_by_both():
            try:
                nodes = {call(bind, "GET", "/readyz")[1] for _ in range(6)}
            except OSError:
                return None  # HAProxy is not listening yet
            return nodes == {"node1", "node2"} or None
        wait_for("reads answered by both nodes", served_by_both)

        status, node, project = call(bind, "POST", "/api/v1/projects", {"name": "through haproxy"})
        assert (status, node) == (201, "node1"), (status, node, project)
        tasks = []
        for _ in range(20):
            status, node, task = call(bind, "POST", f"/api/v1/projects/{project['id']}/tasks",
                                      {"agent_type": "coder", "instructions": "x"})
            assert (status, node) == (201, "node1"), (status, node, task)
            tasks.append(task["task_id"])
        print("haproxy: 21 writes, each answered by the leader")

        def replicated():
            seen = set()
            for _ in range(4):
                status, node, found = call(bind, "GET", f"/api/v1/tasks/{tasks[-1]}")
                if status != 200:
                    return None
                assert found["task_id"] == tasks[-1], found
                seen.add(node)
            return seen
        assert wait_for("the last task read through both nodes", replicated) == {"node1", "node2"}
        for _ in range(4):
            status, node, _ = call(bind, "GET", f"/api/v1/tasks/{tasks[0]}",
                                   headers={"flightdeck-read": "leader"})
            assert (status, node) == (200, "node1"), (status, node)
        print("haproxy: reads answered by both nodes in turns; Flightdeck-Read: leader reads the leader")

        host, port = bind.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=30) as s:
            s.sendall(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                      b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                      b"Sec-WebSocket-Version: 13\r\n\r\n")
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = s.recv(4096)
                assert chunk, head
                head += chunk
            text = head.decode(errors="replace").lower()
            assert text.startswith("http/1.1 101"), text
            assert "flightdeck-node: node1" in text, text
        print("haproxy: a WebSocket upgrade reaches the leader")

        follower.terminate()
        follower.wait(timeout=30)
        processes.remove(follower)

        def leader_alone():
            nodes = set()
            for _ in range(6):
                status, node, _ = call(bind, "GET", f"/api/v1/tasks/{tasks[0]}")
                if status != 200:
                    return None
                nodes.add(node)
            return nodes == {"node1"} or None
        wait_for("reads answered by the leader alone once the follower stopped", leader_alone)
        status, node, _ = call(bind, "POST", "/api/v1/projects", {"name": "after the follower"})
        assert (status, node) == (201, "node1"), (status, node)
        print("haproxy: 4 passed, 0 failed")
    finally:
        stop(processes)
        for w in work:
            shutil.rmtree(w, ignore_errors=True)


if __name__ == "__main__":
    main()
