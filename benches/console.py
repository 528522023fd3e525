"""The console's project page under a stream of events, in a real headless Chromium (Debian's
chromium and chromium-driver, selenium from PyPI, as .ci/check_console.py uses them).

For each build given, in turns (ABAB…): a server on a temporary directory, a project of TASKS
tasks (and 50 artifacts, 5 pending approvals), the page opened at #/project/ID; then, for SECONDS,
RATE operations per second through the API, each committing one event of the project (a claim and
a completion also change an agent's status: a second event), in a fixed cycle: a task created, a
task claimed, an artifact posted, an approval asked, the claimed task completed, the approval
answered, the artifact changed (or deleted, every other cycle), the created task cancelled. With
--verify, the page is then compared with the server (each board column's count and cards, the
artifacts, the pending approvals).

Measured inside the page by a script added before the console's own (so any build can be
measured, the old one included): each project event's arrival on the WebSocket, and the moment
its row shows in the page's timeline (a MutationObserver) — the time to apply it, the console's
whole work for that event, reads included; every fetch() the page makes; Chrome's own main-thread
task time (CDP Performance.getMetrics). Prints a row per run: events received, requests made
while they came (and per event), the time to apply one (p50, p99, max), main-thread time per
event, and the events not applied within 30 s of the last one.

    python3 benches/console.py NEW_BINARY [--baseline OLD_BINARY] [--rounds 2] [--seconds 30]
        [--rate 10] [--tasks 2000]

Talks only to 127.0.0.1, stops by itself (BENCHMARKS.md)."""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".ci"))
from check_console import browser  # noqa: E402
from ci_common import start_flightdeck, stop, wait_for  # noqa: E402

from selenium.webdriver.common.by import By  # noqa: E402

AGENTS = ["analyst", "architect", "coder", "tester", "deployer"]

# Added to every document before its own scripts: records each project event's arrival and when
# its timeline row appears, and every fetch.
PROBE = """
window.__probe = { project: null, arrivals: new Map(), applied: [], fetches: [], received: 0, types: {} };
(() => {
  const probe = window.__probe;
  const Socket = window.WebSocket;
  window.WebSocket = class extends Socket {
    constructor(...args) {
      super(...args);
      this.addEventListener('message', (m) => {
        let f;
        try { f = JSON.parse(m.data); } catch { return; }
        if (typeof f.seq === 'number' && f.project_id === probe.project) {
          probe.received += 1;
          probe.types[f.event_type] = (probe.types[f.event_type] || 0) + 1;
          probe.arrivals.set(f.seq, performance.now());
        }
      });
    }
  };
  const fetchFirst = window.fetch;
  window.fetch = function (input, init) {
    probe.fetches.push([performance.now(), String(input)]);
    return fetchFirst.call(this, input, init);
  };
  new MutationObserver(() => {
    if (!probe.arrivals.size) return;
    const now = performance.now();
    for (const [seq, at] of probe.arrivals) {
      if (document.querySelector(`#timeline [data-seq="${seq}"]`)) {
        probe.applied.push(now - at);
        probe.arrivals.delete(seq);
      }
    }
  }).observe(document, { subtree: true, childList: true });
})();
"""


def call(base, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method)
    if data is not None:
        request.add_header("content-type", "application/json")
    with urllib.request.urlopen(request, timeout=30) as r:
        raw = r.read()
        return json.loads(raw) if raw else None


def percentile(values, p):
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def seed(base, tasks):
    p = call(base, "POST", "/api/v1/projects", {"name": "console bench", "description": "2,000 tasks"})["id"]
    for i in range(tasks):
        call(base, "POST", f"/api/v1/projects/{p}/tasks",
             {"agent_type": AGENTS[i % len(AGENTS)], "instructions": f"Task {i}: " + "do the thing. " * 8})
    for i in range(50):
        call(base, "POST", "/api/v1/context/artifacts",
             {"project_id": p, "source_agent": "coder", "artifact_type": "source_code",
              "content": {"file": f"src/{i}.rs", "text": "fn main() {}\n" * 60}})
    for i in range(5):
        call(base, "POST", "/api/v1/hitl", {"project_id": p, "question": f"Ship part {i}?",
                                            "options": ["yes", "no"], "expires_in_seconds": 86400})
    return p


def drive(base, p, seconds, rate):
    """The cycle of operations, open loop at `rate` per second; each commits one project event."""
    claimed, asked, created, posted = [], [], [], []
    n = int(seconds * rate)
    start = time.monotonic()
    for i in range(n):
        due = start + i / rate
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        step = i % 8
        if step == 0:
            created.append(call(base, "POST", f"/api/v1/projects/{p}/tasks",
                                {"agent_type": "tester", "instructions": f"Added while watched, {i}"})["task_id"])
        elif step == 1:
            claimed.append(call(base, "POST", "/api/v1/tasks/claim",
                                {"agent_type": AGENTS[(i // 6) % len(AGENTS)], "worker_id": f"w{i}"}))
        elif step == 2:
            posted.append(call(base, "POST", "/api/v1/context/artifacts",
                               {"project_id": p, "source_agent": "tester", "artifact_type": "test_results",
                                "content": {"run": i, "passed": i % 7 != 0}})["context_id"])
        elif step == 3:
            asked.append(call(base, "POST", "/api/v1/hitl", {"project_id": p, "question": f"Accept run {i}?"})["request_id"])
        elif step == 4:
            c = claimed.pop()
            call(base, "POST", f"/api/v1/tasks/{c['task_id']}/status",
                 {"status": "completed", "output": {"ok": True}, "lease_id": c["lease_id"]})
        elif step == 5:
            call(base, "POST", f"/api/v1/hitl/{asked.pop()}/respond", {"action": "approve"})
        elif step == 6:
            if (i // 8) % 2:
                call(base, "DELETE", f"/api/v1/context/artifacts/{posted.pop()}")
            else:
                call(base, "PATCH", f"/api/v1/context/artifacts/{posted[-1]}", {"content": {"run": i, "rerun": True}})
        else:
            call(base, "POST", f"/api/v1/tasks/{created.pop()}/status", {"status": "cancelled"})
    return n


def run(binary, args, label):
    work = tempfile.mkdtemp()
    server, addr = start_flightdeck(binary, work)
    base = f"http://{addr}"
    driver = browser()
    try:
        p = seed(base, args.tasks)
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": PROBE})
        driver.execute_cdp_cmd("Performance.enable", {})
        opened = time.monotonic()
        driver.get(f"{base}/#/project/{p}")
        driver.execute_script("window.__probe.project = arguments[0];", p)
        wait_for("the board", lambda: len(driver.find_elements(By.CSS_SELECTOR, "#board [data-task]")) >= 200, timeout=120)
        wait_for("the stream", lambda: driver.find_elements(By.CSS_SELECTOR, "#live[data-state='live']"), timeout=60)
        load_s = time.monotonic() - opened
        before = metrics(driver)
        fetched_before = driver.execute_script("return window.__probe.fetches.length;")
        seq0 = call(base, "GET", f"/api/v1/projects/{p}")["latest_seq"]
        drive(base, p, args.seconds, args.rate)
        sent = len(project_events(base, p, seq0))
        # Until every event is received and applied (30 s at most after the last).
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            state = driver.execute_script("return [window.__probe.received, window.__probe.arrivals.size];")
            if state[0] >= sent and state[1] == 0:
                break
            time.sleep(0.2)
        after = metrics(driver)
        if args.verify:
            verify(driver, base, p)
        probe = driver.execute_script(
            "const p = window.__probe; return {types: p.types, received: p.received, pending: p.arrivals.size, applied: p.applied, fetches: p.fetches.slice(arguments[0]).map((f) => f[1])};",
            fetched_before)
        received = probe["received"]
        applied = probe["applied"]
        task_ms = (after["TaskDuration"] - before["TaskDuration"]) * 1000
        reads = [u for u in probe["fetches"]]
        kinds = {}
        for u in reads:
            path = u.split("?")[0].replace(base, "")
            parts = path.split("/")
            key = "/".join(x if len(x) != 36 else "{id}" for x in parts)
            kinds[key] = kinds.get(key, 0) + 1
        return {
            "label": label, "load_s": load_s, "sent": sent, "received": received, "requests": len(reads),
            "per_event": len(reads) / max(received, 1), "p50": percentile(applied, 50), "p99": percentile(applied, 99),
            "max": max(applied) if applied else float("nan"), "applied": len(applied), "unapplied": probe["pending"],
            "task_ms_per_event": task_ms / max(received, 1), "kinds": kinds,
            "split": {k: round((after[k] - before[k]) * 1000 / max(received, 1), 2)
                      for k in after if k.endswith("Duration") or k.endswith("Count")},
            "types": probe["types"],
        }
    finally:
        driver.quit()
        stop([server])
        shutil.rmtree(work, ignore_errors=True)


def project_events(base, p, since):
    events = []
    while True:
        page = call(base, "GET", f"/api/v1/events?project_id={p}&since={since}&limit=1000")
        events += page["items"]
        if not page["items"] or not page["next_cursor"]:
            return events
        since = page["items"][-1]["seq"]


def verify(driver, base, p):
    """The page after the events agrees with the server: each column's count and its cards (the
    first 200 of its tasks, oldest first), the artifacts and the pending approvals."""
    project = call(base, "GET", f"/api/v1/projects/{p}")
    tasks, cursor = [], None
    while True:
        page = call(base, "GET", f"/api/v1/projects/{p}/tasks?limit=1000" + (f"&cursor={cursor}" if cursor else ""))
        tasks += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            break
    shown = driver.execute_script("""
        const out = {};
        for (const c of document.querySelectorAll('#board [data-column]')) {
          out[c.dataset.column] = {count: Number(c.querySelector('h4 .count').textContent),
                                   cards: [...c.querySelectorAll('[data-task]')].map((e) => e.dataset.task)};
        }
        out.artifacts = document.querySelectorAll('#artifacts [data-artifact]').length;
        out.approvals = Number(document.querySelector('#project-approvals h3 .count').textContent);
        return out;""")
    for status, count in project["task_counts"].items():
        want = sorted(t["task_id"] for t in tasks if t["status"] == status)[:200]
        assert shown[status]["count"] == count, (status, shown[status]["count"], count)
        assert shown[status]["cards"] == want, f"the {status} column's cards differ from the server's tasks"
    assert shown["approvals"] == project["pending_hitl_requests"], (shown["approvals"], project)
    assert shown["artifacts"] == project["artifact_count"], (shown["artifacts"], project)


def metrics(driver):
    return {m["name"]: m["value"] for m in driver.execute_cdp_cmd("Performance.getMetrics", {})["metrics"]}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("binary")
    parser.add_argument("--baseline")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--rate", type=float, default=10)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--verify", action="store_true",
                        help="check the page against the server after the events (the console check in .ci/run)")
    args = parser.parse_args()
    builds = [(args.baseline, "baseline"), (args.binary, "this build")] if args.baseline else [(args.binary, "this build")]
    print(f"{args.tasks} tasks, {args.rate:g} events/s for {args.seconds:g} s per run")
    print("| build | page opened | events received | requests (per event) | apply p50 | apply p99 | apply max | main thread per event | not applied |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in range(args.rounds):
        for binary, label in builds:
            x = run(binary, args, f"{label}, {r + 1}")
            print(f"| {x['label']} | {x['load_s']:.1f} s | {x['received']} of {x['sent']} | {x['requests']} ({x['per_event']:.2f}) | "
                  f"{x['p50']:.1f} ms | {x['p99']:.1f} ms | {x['max']:.1f} ms | {x['task_ms_per_event']:.1f} ms | {x['unapplied']} |",
                  flush=True)
            print(f"    requests: {json.dumps(x['kinds'], sort_keys=True)}; main thread per event, ms: "
                  f"{json.dumps(x['split'])}; events: {json.dumps(x['types'], sort_keys=True)}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
