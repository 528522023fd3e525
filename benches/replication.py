"""Durable writes with followers against a single node, in the same run (issue 30's target: one
synchronous replica adds less than 1 ms to a durable write's p99 on loopback).

Setups, taken in turns for ROUNDS rounds (ABCABC…), each on fresh temporary directories:
- `single`: one server (`--durability immediate`, the default) with a replication key and no
  follower;
- `async`: the same with one follower streaming its log;
- `sync`: `--sync-replicas 1` with one follower: each write is answered once the follower holds
  its record durably.
In each, after WARMUP writes, WRITES durable task creates are sent one after another over one
keep-alive connection (Python's http.client), each timed from send to answer; the same sequential
fdatasync of a small append is timed on the data directory's disk in the same round (the
physical floor one sync costs). Prints a row per setup and round, then each setup's p50/p99 over
all rounds and the sync p99 minus the single node's.

    python3 benches/replication.py BINARY [--rounds 3] [--writes 2000] [--warmup 200]

Talks only to 127.0.0.1, stops by itself (BENCHMARKS.md)."""

import argparse
import http.client
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".ci"))
from ci_common import start_flightdeck, stop, wait_for  # noqa: E402

KEY = "replication-bench-secret-0123456789"


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def ready(base):
    def check():
        try:
            conn = http.client.HTTPConnection(base, timeout=5)
            conn.request("GET", "/readyz")
            ok = conn.getresponse().status == 200
            conn.close()
            return ok or None
        except OSError:
            return None
    wait_for(f"{base} to be ready", check)


def writes(addr, n, warmup):
    conn = http.client.HTTPConnection(addr, timeout=30)
    headers = {"content-type": "application/json"}
    conn.request("POST", "/api/v1/projects", json.dumps({"name": "bench"}), headers)
    response = conn.getresponse()
    project = json.loads(response.read())["id"]
    assert response.status == 201, response.status
    body = json.dumps({"agent_type": "coder", "instructions": "x"})
    times = []
    for i in range(warmup + n):
        started = time.perf_counter()
        conn.request("POST", f"/api/v1/projects/{project}/tasks", body, headers)
        response = conn.getresponse()
        response.read()
        elapsed = time.perf_counter() - started
        assert response.status == 201, response.status
        if i >= warmup:
            times.append(elapsed)
    conn.close()
    return times


def syncs(directory, n):
    """Small sequential appends, each followed by fdatasync: the floor of one durable write."""
    path = os.path.join(directory, "fsync-probe")
    times = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for _ in range(n):
            started = time.perf_counter()
            os.write(fd, b"x" * 200)
            os.fdatasync(fd)
            times.append(time.perf_counter() - started)
    finally:
        os.close(fd)
        os.unlink(path)
    return times


def run(binary, setup, n, warmup):
    work = [tempfile.mkdtemp(), tempfile.mkdtemp()]
    processes = []
    try:
        args = ["--replication-key", KEY]
        if setup == "sync":
            args += ["--sync-replicas", "1"]
        leader, addr = start_flightdeck(binary, work[0], *args)
        processes.append(leader)
        if setup != "single":
            follower, faddr = start_flightdeck(binary, work[1], "--follow", f"http://{addr}",
                                               "--replication-key", KEY)
            processes.append(follower)
            ready(faddr)
        ready(addr)
        times = writes(addr, n, warmup)
        floor = syncs(work[0], 500)
        return times, floor
    finally:
        stop(processes)
        for w in work:
            shutil.rmtree(w, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("binary")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--writes", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    args = parser.parse_args()
    setups = ["single", "async", "sync"]
    all_times = {s: [] for s in setups}
    floors = []
    print(f"{'round':>5} {'setup':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'fdatasync p99 ms':>17}")
    for round_ in range(1, args.rounds + 1):
        for setup in setups:
            times, floor = run(args.binary, setup, args.writes, args.warmup)
            all_times[setup] += times
            floors += floor
            print(f"{round_:>5} {setup:>7} {percentile(times, 50) * 1e3:8.3f} "
                  f"{percentile(times, 99) * 1e3:8.3f} {max(times) * 1e3:8.3f} "
                  f"{percentile(floor, 99) * 1e3:17.3f}", flush=True)
    print()
    for setup in setups:
        t = all_times[setup]
        print(f"{setup:>7}: {len(t)} writes, p50 {percentile(t, 50) * 1e3:.3f} ms, "
              f"p99 {percentile(t, 99) * 1e3:.3f} ms")
    added = percentile(all_times["sync"], 99) - percentile(all_times["single"], 99)
    print(f"fdatasync p99 {percentile(floors, 99) * 1e3:.3f} ms; "
          f"one synchronous replica adds {added * 1e3:.3f} ms to the p99 (target < 1 ms)")


if __name__ == "__main__":
    main()
