"""Helpers shared by the real-program checks in .ci/: free ports, waiting on a condition, starting
flightdeck on a temporary directory, and stopping only the processes a check started."""

import os
import socket
import subprocess
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what, check, timeout=60.0, every=0.2):
    """Polls `check` until it returns something other than None or False."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value is not None and value is not False:
            return value
        time.sleep(every)
    raise SystemExit(f"{os.path.basename(__import__('sys').argv[0])}: timed out waiting for {what}")


def start_flightdeck(binary, work, *args, listen="127.0.0.1:0"):
    """Starts flightdeck on `listen` (a free port by default) with its data in `work`; returns
    (process, address)."""
    out_path = os.path.join(work, "fd.out")
    process = subprocess.Popen(
        [binary, "--listen", listen, "--data-dir", os.path.join(work, "data"), *args],
        stdout=open(out_path, "w"),
        stderr=open(os.path.join(work, "fd.err"), "w"),
    )

    def listening():
        with open(out_path) as f:
            for line in f:
                if line.startswith("listening on "):
                    return line.split()[-1]
        return None

    return process, wait_for("flightdeck to listen", listening)


def stop(processes):
    """Stops the given processes (ours, by their handles), newest first."""
    for process in reversed(processes):
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
