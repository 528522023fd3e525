#!/usr/bin/env python3
"""The replay amplifier of issue 25, point 3: N events in the log, a client reads one full replay, then
sends 600 `{"op":"subscribe","since":0}` (19 KB) and reads only what comes; the server's CPU
seconds for those 600 and /livez latency meanwhile.

    python3 -m pip install websockets
    python3 benches/replay_amplifier.py target/release/flightdeck 20000

Loopback only; the server it starts (on a temporary directory) is killed at the end."""
import asyncio, json, os, subprocess, sys, tempfile, time, urllib.request, threading
import websockets

binary, n = sys.argv[1], int(sys.argv[2])
work = tempfile.mkdtemp()
p = subprocess.Popen([binary, "--listen", "127.0.0.1:0", "--data-dir", work + "/d", "--durability", "none"],
                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
addr = p.stdout.readline().split()[-1]
base = f"http://{addr}"
def call(method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    r = urllib.request.Request(base + path, data=data, method=method, headers={"content-type": "application/json", "host": "127.0.0.1"})
    with urllib.request.urlopen(r) as resp:
        return json.loads(resp.read() or b"null")
proj = call("POST", "/api/v1/projects", {"name": "p"})["id"]
for i in range(n):
    call("POST", f"/api/v1/projects/{proj}/tasks", {"agent_type": "coder", "instructions": "x" * 100})
def cpu():
    f = open(f"/proc/{p.pid}/stat").read().split(")")[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
lat = []
stop = False
def probe():
    while not stop:
        t = time.perf_counter(); urllib.request.urlopen(base + "/livez").read(); lat.append(time.perf_counter() - t)
        time.sleep(0.01)
async def main():
    global stop
    async with websockets.connect(f"ws://{addr}/ws", max_size=None) as ws:
        await ws.send('{"op":"subscribe","since":0}')
        acks = 0
        while True:
            m = json.loads(await ws.recv())
            if m.get("op") == "subscribed":
                acks += 1
                if acks == 2: break
        th = threading.Thread(target=probe); th.start()
        c0, t0 = cpu(), time.perf_counter()
        for _ in range(600):
            await ws.send('{"op":"subscribe","since":0}')
        await ws.send('{"op":"ping"}')
        pongs = 0
        while pongs < 1:
            m = json.loads(await ws.recv())
            if m.get("op") == "pong": pongs += 1
        await ws.send('{"op":"ping"}')
        while True:
            m = json.loads(await ws.recv())
            if m.get("op") == "pong": break
        c1, t1 = cpu(), time.perf_counter()
        stop = True; th.join()
    lat.sort()
    print(f"{binary}: {n} events; 600 repeated since:0 subscribes: server CPU {c1-c0:.2f} s over {t1-t0:.2f} s; /livez p50 {lat[len(lat)//2]*1e3:.1f} ms, max {lat[-1]*1e3:.1f} ms ({len(lat)} probes)")
asyncio.run(main())
p.kill()
