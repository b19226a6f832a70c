#!/usr/bin/env python3
"""What idle STOMP connections cost Halyard: memory per connection, and CPU
while they sit idle.

Starts a broker of its own (a throwaway data directory, free ports), opens
N STOMP connections to it (CONNECT with `heart-beat:0,0`, waits for each
CONNECTED), then reads the broker's RSS from /proc before and after, and
its CPU time over an idle period. Standard library only.

    bench/idle-connections.py [--halyard target/release/halyard] [-n 10000]
                              [--idle 10] [--json]

The broker's connection cap (`limits.max-connections`, "auto" stops at
10,000 less the admin connections) is raised by a config of the run's own;
this process raises its own RLIMIT_NOFILE to the hard limit (it needs N
descriptors plus a few).
"""

import argparse
import json
import os
import resource
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status(pid, key):
    """A /proc/PID/status figure in KiB (VmRSS, VmHWM...)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid):
    """User + system CPU time of the process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # Fields 14 and 15 (utime, stime) counted from 1; the split above
    # starts at field 3.
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def raise_nofile(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        new = hard if hard == resource.RLIM_INFINITY else min(hard, max(need, soft))
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        soft = new
    if soft < need:
        sys.exit(f"need {need} file descriptors, the hard limit is {hard} (ulimit -Hn)")


def wait_port(port, proc, deadline):
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the broker exited ({proc.returncode}) before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit("the broker did not start listening in time")


CONNECT = b"CONNECT\naccept-version:1.2\nhost:localhost\nheart-beat:0,0\n\n\0"


def open_connections(port, n, batch, deadline):
    """Opens n connections, `batch` handshakes at a time; returns the sockets."""
    sel = selectors.DefaultSelector()
    done = []
    opened = 0
    waiting = {}
    while len(done) < n:
        if time.monotonic() > deadline:
            sys.exit(f"only {len(done)} of {n} connections were CONNECTED in time")
        while opened < n and len(waiting) < batch:
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(CONNECT)
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
            waiting[s] = b""
            opened += 1
        for key, _ in sel.select(timeout=1):
            s = key.fileobj
            data = s.recv(4096)
            if not data:
                sys.exit(f"connection {len(done) + 1} closed before CONNECTED")
            waiting[s] += data
            if b"\0" in waiting[s]:
                frame = waiting.pop(s)
                if not frame.startswith(b"CONNECTED"):
                    sys.exit("refused: " + frame.decode(errors="replace")[:300])
                sel.unregister(s)
                done.append(s)
    sel.close()
    return done


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--halyard", default=os.environ.get("HALYARD_BIN",
                    os.path.join(ROOT, "target", "release", "halyard")))
    ap.add_argument("-n", "--connections", type=int, default=10_000)
    ap.add_argument("--idle", type=float, default=10.0, help="seconds of idleness measured")
    ap.add_argument("--batch", type=int, default=200, help="handshakes in flight at once")
    ap.add_argument("--config", help="extra TOML appended to the run's config")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    a = ap.parse_args()
    n = a.connections
    raise_nofile(n + 64)

    tmp = tempfile.mkdtemp(prefix="halyard-idle-")
    port, http = free_port(), free_port()
    cfg = os.path.join(tmp, "halyard.toml")
    with open(cfg, "w") as f:
        f.write(f"[limits]\nmax-connections = {n + 100}\n")
        if a.config:
            f.write(open(a.config).read())
    log = open(os.path.join(tmp, "broker.log"), "w")
    proc = subprocess.Popen(
        [a.halyard, "broker", "--config", cfg, "--data-dir", os.path.join(tmp, "data"),
         "--stomp", f"127.0.0.1:{port}", "--http", f"127.0.0.1:{http}", "--ws", "",
         "--openwire", ""],
        stdout=log, stderr=subprocess.STDOUT)
    socks = []
    try:
        wait_port(port, proc, time.monotonic() + 30)
        time.sleep(0.5)  # let start-up allocations settle
        rss0 = status(proc.pid, "VmRSS")
        t0 = time.monotonic()
        socks = open_connections(port, n, a.batch, time.monotonic() + 300)
        open_s = time.monotonic() - t0
        time.sleep(1.0)
        rss1 = status(proc.pid, "VmRSS")
        cpu0, w0 = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(a.idle)
        cpu1, w1 = cpu_seconds(proc.pid), time.monotonic()
        rss2 = status(proc.pid, "VmRSS")
        r = {
            "connections": n,
            "open_seconds": round(open_s, 2),
            "rss_before_kib": rss0,
            "rss_after_kib": rss1,
            "rss_after_idle_kib": rss2,
            "hwm_kib": status(proc.pid, "VmHWM"),
            "per_connection_bytes": round((rss1 - rss0) * 1024 / n),
            "idle_seconds": round(w1 - w0, 2),
            "idle_cpu_percent": round(100 * (cpu1 - cpu0) / (w1 - w0), 2),
        }
    finally:
        for s in socks:
            s.close()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    if a.json:
        print(json.dumps(r))
    else:
        print(f"{n} idle connections (opened in {r['open_seconds']} s)")
        print(f"  broker RSS before {r['rss_before_kib'] / 1024:.1f} MiB, after "
              f"{r['rss_after_kib'] / 1024:.1f} MiB ({r['rss_after_idle_kib'] / 1024:.1f} MiB "
              f"after {r['idle_seconds']} s idle; peak {r['hwm_kib'] / 1024:.1f} MiB)")
        print(f"  per connection {r['per_connection_bytes'] / 1024:.1f} KiB")
        print(f"  CPU while idle {r['idle_cpu_percent']}% of one core")


if __name__ == "__main__":
    main()
