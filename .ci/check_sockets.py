"""The listening and connection socket settings reach the kernel, as `ss` (iproute2) reads them
back: `--listen-backlog` is the listen queue's length (Send-Q of the listening socket; the
default 4096, capped by net.core.somaxconn), and `--socket-send-buffer-kib` is the send buffer
of an accepted connection (`skmem` tb: the kernel keeps twice the value asked, capped first at
net.core.wmem_max).

Usage: python3 .ci/check_sockets.py path/to/flightdeck"""

import os
import re
import socket
import subprocess
import sys
import tempfile
import time

from ci_common import start_flightdeck, stop


def ss(*args):
    return subprocess.run(["ss", "-H", *args], capture_output=True, text=True, check=True).stdout


def listen_queue(port):
    """The Send-Q of the listening socket on `port`: its backlog."""
    out = ss("-ltn", f"sport = :{port}")
    fields = out.split()
    if len(fields) < 3:
        raise SystemExit(f"check_sockets: no listening socket on {port}: {out!r}")
    return int(fields[2])


def server_send_buffer(port, client_port):
    """The send buffer (skmem tb) of the server's side of the connection from `client_port`."""
    out = ss("-tnm", "state", "established", f"( sport = :{port} and dport = :{client_port} )")
    found = re.search(r"\btb(\d+)", out)
    return int(found.group(1)) if found else None


def settled(port, client_port, expected, timeout=30.0):
    """The connection's send buffer once the server has accepted it and set it: until then `ss`
    shows the kernel's own starting size (the connection waits in the accept queue), so the
    check waits for the expected value, and reports the last one seen if it never comes."""
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        seen = server_send_buffer(port, client_port)
        if seen == expected:
            return seen
        time.sleep(0.1)
    return seen


def main():
    binary = sys.argv[1]
    somaxconn = int(open("/proc/sys/net/core/somaxconn").read())
    # The kernel caps SO_SNDBUF at net.core.wmem_max, then doubles it.
    wmem_max = int(open("/proc/sys/net/core/wmem_max").read())

    def held(kib):
        return 2 * min(kib * 1024, wmem_max)

    processes = []
    try:
        with tempfile.TemporaryDirectory() as work:
            os.mkdir(os.path.join(work, "a"))
            os.mkdir(os.path.join(work, "b"))
            p, addr = start_flightdeck(
                binary, os.path.join(work, "a"), "--listen-backlog", "77",
                "--socket-send-buffer-kib", "64")
            processes.append(p)
            port = int(addr.rsplit(":", 1)[1])
            assert listen_queue(port) == 77, ss("-ltn", f"sport = :{port}")
            client = socket.create_connection(("127.0.0.1", port))
            client_port = client.getsockname()[1]
            tb = settled(port, client_port, held(64))
            assert tb == held(64), f"send buffer {tb}, wmem_max {wmem_max}"
            client.close()
            print(f"check_sockets: --listen-backlog 77 -> listen queue 77; "
                  f"--socket-send-buffer-kib 64 -> tb {tb}")

            p, addr = start_flightdeck(binary, os.path.join(work, "b"))
            processes.append(p)
            port = int(addr.rsplit(":", 1)[1])
            expected = min(4096, somaxconn)
            got = listen_queue(port)
            assert got == expected, f"default backlog {got}, expected {expected}"
            client = socket.create_connection(("127.0.0.1", port))
            client_port = client.getsockname()[1]
            tb = settled(port, client_port, held(256))
            assert tb == held(256), f"default send buffer {tb}, wmem_max {wmem_max}"
            client.close()
            print(f"check_sockets: defaults -> listen queue {got} (somaxconn {somaxconn}), tb {tb}")
    finally:
        stop(processes)


if __name__ == "__main__":
    main()
