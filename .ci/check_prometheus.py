#!/usr/bin/env python3
"""flightdeck scraped by the real Prometheus server (Debian's prometheus package).

Starts flightdeck and Prometheus on loopback (scraping every second, with the shipped rules in
deploy/prometheus loaded), sends status queries, and checks through Prometheus's HTTP API that the
target is up, that histogram_quantile over the request-duration buckets of the status route is a
number, and that the shipped recording rule for status queries yields one too.

usage: check_prometheus.py FLIGHTDECK_BINARY
"""

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

from ci_common import free_port, start_flightdeck, stop, wait_for

PROMETHEUS = "/usr/bin/prometheus"
RULES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "deploy", "prometheus",
                     "flightdeck-rules.yml")


def http(url, data=None):
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    if data:
        request.add_header("content-type", "application/json")
    with urllib.request.urlopen(request, timeout=5) as r:
        return json.load(r)


def query(base, expr):
    """The value of an instant query's single sample, or None."""
    try:
        answer = http(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    except OSError:
        return None
    result = answer.get("data", {}).get("result", [])
    if len(result) != 1:
        return None
    value = float(result[0]["value"][1])
    return value if math.isfinite(value) else None


def main():
    binary = sys.argv[1]
    work = tempfile.mkdtemp(prefix="flightdeck-prom-")
    started = []
    traffic_done = threading.Event()
    try:
        fd, target = start_flightdeck(binary, work)
        started.append(fd)
        api = f"http://{target}/api/v1"
        project = http(f"{api}/projects", json.dumps({"name": "prometheus"}).encode())["id"]

        def traffic():
            try:
                while not traffic_done.is_set():
                    for _ in range(20):
                        http(f"{api}/projects/{project}/status")
                    time.sleep(0.05)
            except OSError:
                pass  # the server is being stopped

        threading.Thread(target=traffic, daemon=True).start()

        port = free_port()
        config = os.path.join(work, "prometheus.yml")
        shutil.copy(RULES, os.path.join(work, "flightdeck-rules.yml"))
        with open(config, "w") as f:
            f.write(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                "rule_files: [flightdeck-rules.yml]\n"
                "scrape_configs:\n  - job_name: flightdeck\n"
                f"    static_configs: [{{targets: ['{target}']}}]\n"
            )
        prometheus = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={work}/tsdb",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(work, "prometheus.log"), "w"),
        )
        started.append(prometheus)
        base = f"http://127.0.0.1:{port}"

        def target_up():
            try:
                targets = http(f"{base}/api/v1/targets")["data"]["activeTargets"]
            except OSError:
                return None
            return any(t["health"] == "up" for t in targets) or None

        wait_for("the flightdeck target to be up", target_up)
        print(f"prometheus: target {target} is up")
        p99 = wait_for(
            "histogram_quantile over the status route",
            lambda: query(base, 'histogram_quantile(0.99, sum by (le) (rate('
                                'flightdeck_http_request_duration_seconds_bucket'
                                '{route="projects.status"}[30s])))'),
        )
        assert 0 < p99 < 10, p99
        print(f"prometheus: status route p99 = {p99 * 1000:.3f} ms")
        recorded = wait_for(
            "the recorded status-query p99",
            lambda: query(base, "flightdeck:status_query_latency_seconds:p99_1m"),
        )
        assert 0 < recorded < 10, recorded
        print(f"prometheus: flightdeck:status_query_latency_seconds:p99_1m = {recorded * 1000:.3f} ms")
        print("prometheus: 3 passed, 0 failed")
    finally:
        traffic_done.set()
        stop(started)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
