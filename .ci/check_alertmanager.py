#!/usr/bin/env python3
"""flightdeck's alerts against the real Alertmanager (Debian's prometheus-alertmanager).

Alertmanager is started on loopback with resolve_timeout 20s; flightdeck sends it a rule that
fires at once, re-sending every 5 s (valid for 20 s each time). The alert must stay active in
Alertmanager for a whole minute of firing (it would resolve by itself after 20 s without the
re-sends), then be resolved there once the rule clears (a SIGHUP reload that raises its threshold).
Meanwhile a budget crosses its warning share: the built-in `BudgetBurnHigh` must reach Alertmanager
too, with its severity.

usage: check_alertmanager.py FLIGHTDECK_BINARY
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from ci_common import free_port, start_flightdeck, stop, wait_for

ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
RULE = "CiAlwaysFiring"


def get_json(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.load(r)
    except OSError:
        return None


def call(method, url, body=None):
    """A JSON request to flightdeck; its decoded answer."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        url, data=data, method=method, headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        text = r.read()
        return json.loads(text) if text else None


def burn_a_budget(api):
    """A worker's usage report takes the global budget past its warning share (60 of 100 tokens)."""
    project = call("POST", f"{api}/projects", {"name": "spend", "description": "ci"})["id"]
    call("POST", f"{api}/projects/{project}/tasks", {"agent_type": "coder", "instructions": "x"})
    task = call("POST", f"{api}/tasks/claim", {"agent_type": "coder", "worker_id": "w"})
    call("PUT", f"{api}/budgets/global", {"max_tokens": 100, "window": "day", "warn_percent": 50})
    call(
        "POST",
        f"{api}/tasks/{task['task_id']}/usage",
        {"lease_id": task["lease_id"], "report_id": "r1", "model": "m",
         "input_tokens": 40, "output_tokens": 20},
    )
    budget = call("GET", f"{api}/budgets/global")
    assert budget["state"] == "warning", budget


def rules(threshold):
    return f"""
[[alert_rules]]
name = "{RULE}"
signal = "disk_free_bytes"
comparison = "above"
threshold = {threshold}
window_seconds = 60
for_seconds = 0
keep_firing_for_seconds = 0
severity = "critical"
summary = "CI: fires while the disk has any free space"
"""


def main():
    binary = sys.argv[1]
    work = tempfile.mkdtemp(prefix="flightdeck-am-")
    am_port = free_port()
    am_config = os.path.join(work, "alertmanager.yml")
    with open(am_config, "w") as f:
        f.write(
            "global:\n  resolve_timeout: 20s\n"
            "route:\n  receiver: nobody\n  group_wait: 1s\n  group_interval: 1s\n"
            "receivers:\n  - name: nobody\n"
        )
    fd_config = os.path.join(work, "flightdeck.toml")
    with open(fd_config, "w") as f:
        f.write(rules(0))
    started = []
    try:
        am = subprocess.Popen(
            [
                ALERTMANAGER,
                f"--config.file={am_config}",
                f"--storage.path={work}/am-data",
                f"--web.listen-address=127.0.0.1:{am_port}",
                "--cluster.listen-address=",
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(work, "am.log"), "w"),
        )
        started.append(am)
        base = f"http://127.0.0.1:{am_port}/api/v2"
        wait_for("Alertmanager to answer", lambda: get_json(f"{base}/status"))

        fd, address = start_flightdeck(
            binary, work,
            "--config", fd_config,
            "--alert-eval-interval-secs", "1",
            "--alert-resend-interval-secs", "5",
            "--alert-webhook-url", f"{base}/alerts",
        )
        started.append(fd)

        def ours():
            alerts = get_json(f"{base}/alerts") or []
            return [a for a in alerts if a["labels"].get("alertname") == RULE]

        # An empty list is an answer too (nothing there yet): wait for the alert itself.
        first = wait_for("the alert to reach Alertmanager", lambda: ours() or None)
        burn_a_budget(f"http://{address}/api/v1")

        def burning():
            alerts = get_json(f"{base}/alerts") or []
            return [a for a in alerts if a["labels"].get("alertname") == "BudgetBurnHigh"] or None
        assert first[0]["status"]["state"] == "active", first
        assert first[0]["labels"]["severity"] == "critical", first
        began = time.monotonic()
        checks = 0
        while time.monotonic() - began < 65:
            found = ours()
            if not found or found[0]["status"]["state"] != "active":
                raise SystemExit(
                    f"alertmanager check: the alert was not active after "
                    f"{time.monotonic() - began:.0f} s of firing: {found}"
                )
            checks += 1
            time.sleep(5)
        print(f"alertmanager: {RULE} active for {time.monotonic() - began:.0f} s ({checks} checks)")
        budget = wait_for("BudgetBurnHigh to reach Alertmanager", burning)
        assert budget[0]["status"]["state"] == "active", budget
        assert budget[0]["labels"]["severity"] == "warning", budget
        print("alertmanager: BudgetBurnHigh active after a budget passed its warning share")

        with open(fd_config, "w") as f:
            f.write(rules(1e30))
        fd.send_signal(signal.SIGHUP)
        cleared = time.monotonic()
        wait_for("Alertmanager to resolve the alert", lambda: not ours(), timeout=30, every=0.5)
        print(f"alertmanager: {RULE} resolved {time.monotonic() - cleared:.1f} s after the rule cleared")
        print("alertmanager: 3 passed, 0 failed")
    finally:
        stop(started)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
