#!/usr/bin/env python3
"""Real clients against a live flightdeck: Python's urllib writing an oversize body before it
reads (it must read the 413, not a broken pipe), and headless Chromium (Debian's chromium) on a
page of another origin calling the API (CORS preflight, reading a header the API exposes, a
WebSocket) — from an allowed origin, and from a foreign one that must be refused, along with its
simple (text/plain and body-less) POSTs; and Chromium reaching the server through a DNS name
rebound to 127.0.0.1, which a server without API keys must not answer.

usage: check_clients.py FLIGHTDECK_BINARY
"""

import functools
import html
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

from ci_common import free_port, start_flightdeck, stop, wait_for

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

PAGE = """<!doctype html><html><body><pre id="out">running</pre><script>
const api = "http://%(api)s/api/v1";
const out = document.getElementById("out");
async function run() {
  const result = {};
  try {
    const created = await fetch(api + "/projects", {
      method: "POST",
      headers: {"content-type": "application/json", "x-request-id": "from-the-page"},
      body: JSON.stringify({name: "from " + location.origin}),
    });
    result.create_status = created.status;
    result.request_id = created.headers.get("x-request-id");
    result.project = (await created.json()).name;
    const listed = await fetch(api + "/hitl/pending?limit=1");
    result.list_status = listed.status;
  } catch (e) {
    result.fetch_error = String(e);
  }
  // Simple requests, which a browser sends to any address without asking: a text/plain POST
  // and a body-less one (as a form would). Without API keys the server must refuse them.
  const pause = new URLSearchParams(location.search).get("pause");
  if (pause) {
    try {
      await fetch(api + "/queues/" + pause + "/pause",
                  {method: "POST", mode: "no-cors", headers: {"content-type": "text/plain"}, body: "pause"});
      await fetch(api + "/queues/" + pause + "/pause", {method: "POST", mode: "no-cors"});
      result.simple_posts = "sent";
    } catch (e) {
      result.simple_posts = String(e);
    }
  }
  result.websocket = await new Promise((resolve) => {
    const ws = new WebSocket("ws://%(api)s/ws");
    ws.onopen = () => { ws.close(); resolve("open"); };
    ws.onerror = () => resolve("refused");
  });
  out.textContent = "RESULT " + JSON.stringify(result);
}
run();
</script></body></html>"""


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def serve_page(directory, port):
    handler = functools.partial(QuietHandler, directory=directory)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def chromium_result(url, profile):
    """The page's result line, from the DOM headless Chromium dumps once the page settled. A busy
    machine may dump before the page's requests finished: then it is loaded again (6 tries; a
    clean-clone CI run once saw 3 in a row dumped early)."""
    marker = '<pre id="out">RESULT '
    dom = ""
    for attempt in range(6):
        dom = subprocess.run(
            [
                CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--user-data-dir={profile}-{attempt}", "--virtual-time-budget=30000",
                "--dump-dom", url,
            ],
            capture_output=True, text=True, timeout=180,
        ).stdout
        start = dom.find(marker)
        if start >= 0:
            start += len(marker)
            return json.loads(html.unescape(dom[start:dom.index("</pre>", start)]))
    raise SystemExit(f"clients check: the page did not finish in 6 loads: {dom[:2000]}")


def main():
    binary = sys.argv[1]
    work = tempfile.mkdtemp(prefix="flightdeck-clients-")
    allowed_port, foreign_port = free_port(), free_port()
    started = []
    try:
        fd, addr = start_flightdeck(
            binary, work, "--cors-origins", f"http://127.0.0.1:{allowed_port}")
        started.append(fd)

        # Python's urllib sends the whole body, then reads: it must see the 413 and its JSON.
        for size in (2 * 1024 * 1024, 24 * 1024 * 1024):
            request = urllib.request.Request(
                f"http://{addr}/api/v1/projects", data=b"x" * size, method="POST",
                headers={"content-type": "application/json"},
            )
            try:
                urllib.request.urlopen(request, timeout=30)
                raise SystemExit("clients check: an oversize body was accepted")
            except urllib.error.HTTPError as e:
                body = json.load(e)
                assert e.code == 413, e.code
                assert body["error"]["code"] == "payload_too_large", body
        print("clients: urllib read the 413 of a 2 MiB and a 24 MiB body")

        pages = os.path.join(work, "pages")
        os.makedirs(pages)
        with open(os.path.join(pages, "index.html"), "w") as f:
            f.write(PAGE % {"api": addr})
        started_servers = [serve_page(pages, allowed_port), serve_page(pages, foreign_port)]

        allowed = chromium_result(f"http://127.0.0.1:{allowed_port}/index.html",
                                  os.path.join(work, "profile-a"))
        assert allowed.get("create_status") == 201, allowed
        assert allowed.get("request_id") == "from-the-page", allowed
        assert allowed.get("project") == f"from http://127.0.0.1:{allowed_port}", allowed
        assert allowed.get("list_status") == 200, allowed
        assert allowed.get("websocket") == "open", allowed
        print(f"clients: chromium on an allowed origin: {allowed}")

        foreign = chromium_result(f"http://127.0.0.1:{foreign_port}/index.html?pause=coder",
                                  os.path.join(work, "profile-f"))
        assert "fetch_error" in foreign and "create_status" not in foreign, foreign
        assert foreign.get("websocket") == "refused", foreign
        # The preflight stopped the POST: nothing from the foreign page was stored.
        with urllib.request.urlopen(f"http://{addr}/api/v1/projects", timeout=10) as r:
            names = [p["name"] for p in json.load(r)["items"]]
        # (The allowed page may have been loaded more than once.)
        assert names and set(names) == {f"from http://127.0.0.1:{allowed_port}"}, names
        # Its simple POSTs (text/plain, and none) reached the server and were refused.
        assert foreign.get("simple_posts") == "sent", foreign
        with urllib.request.urlopen(f"http://{addr}/api/v1/queues", timeout=10) as r:
            coder = next(q for q in json.load(r)["queues"] if q["agent_type"] == "coder")
        assert coder["paused"] is False, coder
        print(f"clients: chromium on a foreign origin: {foreign}; its simple POSTs paused nothing")

        # DNS rebinding: a name the page's site controls, resolved to this machine. The browser
        # sends that name as Host; without API keys the server answers it no data.
        port = addr.rsplit(":", 1)[1]
        rebound = subprocess.run(
            [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={os.path.join(work, 'profile-r')}",
             "--host-resolver-rules=MAP rebound.test 127.0.0.1", "--dump-dom",
             f"http://rebound.test:{port}/api/v1/projects"],
            capture_output=True, text=True, timeout=180,
        ).stdout
        assert "host_not_allowed" in rebound and "from http" not in rebound, rebound[:2000]
        print("clients: chromium reaching the server through a rebound name was refused (host_not_allowed)")
        for server in started_servers:
            server.shutdown()
        print("clients: 4 passed, 0 failed")
    finally:
        stop(started)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
