"""Stalled WebSocket subscribers: N clients subscribe to every event (`/ws`) and then never read
(each with a 4 KiB receive buffer), while 8 clients create tasks as fast as they can and one
client queries a project's status every 10 ms. Prints the server's resident memory every 5 s,
then the status query's latency, the server's peak resident memory (VmHWM) and its WebSocket
counters (connections closed for lagging, bytes written, bytes still queued).

    target/release/flightdeck serve --listen 127.0.0.1:0 --data-dir DIR &   # note its address
    python3 benches/stalled_subscribers.py PORT SUBSCRIBERS SECONDS SERVER_PID

Afterwards 20 of the stalled clients read what they were sent up to the close (4008, or the end
of the connection when the server gave up writing to them), reconnect with `since` = the last seq
they hold, read until they are caught up, and check that they then hold every event after their
subscription exactly once and in order, against the event log (`GET /api/v1/events`).

Talks only to 127.0.0.1 and stops after SECONDS (BENCHMARKS.md: 2,000 subscribers, 40 s)."""

import base64
import http.client
import struct
import json
import os
import socket
import sys
import threading
import time

port, n, secs, pid = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])


def status_value(key):
    with open(f"/proc/{pid}/status") as f:
        return int(next(l for l in f if l.startswith(key)).split()[1]) // 1024


def upgrade(path, small_buffer):
    """A WebSocket connection to `path`; answers the socket and the bytes read after the 101."""
    s = socket.socket()
    if small_buffer:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += s.recv(4096)
    return s, answer.split(b"\r\n\r\n", 1)[1]


def frames(buffer):
    """Complete server frames in `buffer` (unmasked): (opcode, payload) each, and the rest."""
    out = []
    while len(buffer) >= 2:
        opcode, length = buffer[0] & 0x0F, buffer[1] & 0x7F
        at = 2
        if length == 126:
            if len(buffer) < 4:
                break
            length, at = struct.unpack(">H", buffer[2:4])[0], 4
        elif length == 127:
            if len(buffer) < 10:
                break
            length, at = struct.unpack(">Q", buffer[2:10])[0], 10
        if len(buffer) < at + length:
            break
        out.append((opcode, buffer[at:at + length]))
        buffer = buffer[at + length:]
    return out, buffer


socks = []
for i in range(n):
    socks.append(upgrade("/ws", True))
print("subscribed", n, flush=True)
c = http.client.HTTPConnection("127.0.0.1", port)
c.request("POST", "/api/v1/projects", json.dumps({"name": "stall"}), {"content-type": "application/json"})
project = json.loads(c.getresponse().read())["id"]
stop = time.time() + secs
created = [0]


def writer():
    c = http.client.HTTPConnection("127.0.0.1", port)
    body = json.dumps({"agent_type": "coder", "instructions": "x" * 300})
    while time.time() < stop:
        c.request("POST", f"/api/v1/projects/{project}/tasks", body, {"content-type": "application/json"})
        c.getresponse().read()
        created[0] += 1


latencies = []


def prober():
    c = http.client.HTTPConnection("127.0.0.1", port)
    while time.time() < stop:
        t = time.perf_counter()
        c.request("GET", f"/api/v1/projects/{project}/status")
        c.getresponse().read()
        latencies.append((time.perf_counter() - t) * 1e3)
        time.sleep(0.01)


threads = [threading.Thread(target=writer) for _ in range(8)] + [threading.Thread(target=prober)]
for t in threads:
    t.start()
started = time.time()
while time.time() < stop:
    print(f"t={time.time() - started:.0f} s resident={status_value('VmRSS')} MiB tasks={created[0]}", flush=True)
    time.sleep(5)
for t in threads:
    t.join()
latencies.sort()
print(
    f"status query: n={len(latencies)} p50 {latencies[len(latencies) // 2]:.2f} "
    f"p99 {latencies[int(len(latencies) * 0.99)]:.2f} max {latencies[-1]:.2f} ms"
)
print(f"peak resident {status_value('VmHWM')} MiB; {created[0]} tasks created")
c = http.client.HTTPConnection("127.0.0.1", port)
c.request("GET", "/metrics")
for line in c.getresponse().read().decode().splitlines():
    if line.startswith(("flightdeck_ws_slow", "flightdeck_ws_queued", "flightdeck_ws_bytes")):
        print(line)


def log_after(seq):
    """Every seq of the event log after `seq`."""
    c = http.client.HTTPConnection("127.0.0.1", port)
    seqs, cursor = [], str(seq)
    while True:
        c.request("GET", f"/api/v1/events?since={cursor}&limit=1000")
        page = json.loads(c.getresponse().read())
        seqs.extend(item["seq"] for item in page["items"])
        if not page.get("next_cursor"):
            return seqs
        cursor = page["next_cursor"]


def read_all(s, buffer, until=None):
    """Reads frames until a close, the end of the stream, or (when `until` is set) the event with
    that seq; answers the event seqs, the subscription's latest_seq and how it ended."""
    seqs, latest, ended = [], None, "end"
    s.settimeout(30)
    while True:
        parsed, buffer = frames(buffer)
        for opcode, payload in parsed:
            if opcode == 0x8:
                return seqs, latest, f"close {struct.unpack('>H', payload[:2])[0]}"
            if opcode != 0x1:
                continue
            message = json.loads(payload)
            if "seq" in message:
                seqs.append(message["seq"])
                if until is not None and message["seq"] >= until:
                    return seqs, latest, "caught up"
            elif message.get("op") == "subscribed":
                latest = message["latest_seq"]
        try:
            chunk = s.recv(1 << 20)
        except (socket.timeout, ConnectionError):
            return seqs, latest, ended
        if not chunk:
            return seqs, latest, ended
        buffer += chunk


checked, exact, endings = 0, 0, {}
for s, rest in socks[:: max(1, n // 20)][:20]:
    seen, since, ending = read_all(s, rest)
    s.close()
    endings[ending] = endings.get(ending, 0) + 1
    expected = log_after(since)
    resume = seen[-1] if seen else since
    again, extra = upgrade(f"/ws?since={resume}", False)
    more, _, _ = read_all(again, extra, until=expected[-1] if expected else None)
    again.close()
    checked += 1
    # Events at or before the subscription's latest_seq may or may not have been sent to it.
    exact += [x for x in seen + more if x > since] == expected
print(f"resumed {checked} stalled clients with since: {exact} hold every event exactly once and "
      f"in order; their streams ended with {endings}")
