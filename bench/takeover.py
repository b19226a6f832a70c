#!/usr/bin/env python3
"""Takeover time of a master/slave pair on one data directory (or database).

Starts broker a (master) and b (slave) on a temporary data directory (or,
with --store-url, on that PostgreSQL database: --store postgres),
optionally fills a queue with N persistent 1 KiB messages, then repeatedly:
kill -9 the master, and measure the time from the kill to the first RECEIPT
for a persistent SEND from the new master (the client polls its port as fast
as connections are refused). The killed broker is restarted as the new slave
and the next round kills the other one.

    bench/takeover.py [--messages N] [--rounds R] [--binary target/release/halyard]
                      [--store-url postgres://USER@HOST:PORT/DATABASE] [--logs DIR]

Prints every round and the median; with --json, a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Node:
    def __init__(self, binary: str, name: str, store: list[str], logdir: Path):
        self.binary, self.name, self.store = binary, name, store
        self.stomp, self.http = free_port(), free_port()
        self.log = open(logdir / f"{name}.log", "ab")
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "broker", "--name", self.name, *self.store,
             "--stomp", f"127.0.0.1:{self.stomp}", "--ws", "127.0.0.1:0", "--openwire", "127.0.0.1:0",
             "--http", f"127.0.0.1:{self.http}"],
            stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.http}/healthz", timeout=1)
                return
            except OSError:
                time.sleep(0.01)
        raise SystemExit(f"broker {self.name} did not start")

    def role(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/api/status", timeout=2) as r:
            return json.load(r)["role"]

    def kill(self) -> None:
        assert self.proc
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def read_frame(sock: socket.socket, buf: bytearray) -> bytes:
    while b"\0" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        buf.extend(chunk)
    i = buf.index(b"\0")
    frame = bytes(buf[:i])
    del buf[: i + 1]
    return frame.lstrip(b"\r\n")


def first_receipt(port: int, deadline: float) -> float:
    """Polls until a persistent SEND to `port` is receipted; returns when."""
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                buf = bytearray()
                s.sendall(b"CONNECT\naccept-version:1.2\nhost:x\n\n\0")
                if not read_frame(s, buf).startswith(b"CONNECTED"):
                    continue
                s.sendall(b"SEND\ndestination:/queue/probe\npersistent:true\nreceipt:1\n\nx\0")
                if read_frame(s, buf).startswith(b"RECEIPT"):
                    return time.monotonic()
        except OSError:
            time.sleep(0.0005)
    raise SystemExit("no receipt from the new master")


def fill(binary: str, port: int, n: int) -> None:
    if n <= 0:
        return
    subprocess.run(
        [binary, "bench", "--url", f"stomp://127.0.0.1:{port}", "-d", "/queue/deep",
         "--producers", "8", "--consumers", "0", "--count", str(n), "--size", "1024",
         "--persistent", "--receipt-every", "100", "--json"],
        check=True, stdout=subprocess.DEVNULL)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--binary", default="target/release/halyard")
    ap.add_argument("--store-url", help="a PostgreSQL database for both brokers (default: a data directory)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--settle", type=float, default=2.0,
                    help="seconds the master serves after the fill and after each takeover before it is "
                         "killed (default 2: long enough for a journal master to checkpoint its index; "
                         "0: kill it the moment the fill ends, with up to journal.checkpoint-bytes of "
                         "journal written after its last checkpoint)")
    ap.add_argument("--logs", help="keep the brokers' logs (a.log, b.log) in this directory")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        store = (["--store", "postgres", "--store-url", args.store_url] if args.store_url
                 else ["--data-dir", str(tmp / "data")])
        logdir = Path(args.logs) if args.logs else tmp
        logdir.mkdir(parents=True, exist_ok=True)
        nodes = [Node(args.binary, n, store, logdir) for n in ("a", "b")]
        times = []
        try:
            nodes[0].start()
            nodes[1].start()
            # A broker answers /healthz before it knows its role (it is
            # still trying the lock or lease), and either may end up master:
            # wait for one master and one slave, with a deadline.
            deadline = time.monotonic() + 30
            while sorted(roles := [n.role() for n in nodes]) != ["master", "slave"]:
                if time.monotonic() > deadline:
                    raise SystemExit(f"roles: {roles}, not one master and one slave")
                time.sleep(0.01)
            master, slave = nodes if roles[0] == "master" else nodes[::-1]
            fill(args.binary, master.stomp, args.messages)
            for r in range(args.rounds):
                time.sleep(args.settle)
                killed = time.monotonic()
                master.kill()
                got = first_receipt(slave.stomp, killed + 120)
                ms = (got - killed) * 1000
                times.append(ms)
                if not args.json:
                    print(f"round {r + 1}: kill -9 -> first receipt from {slave.name}: {ms:.1f} ms",
                          flush=True)
                master.start()
                master, slave = slave, master
        finally:
            for n in nodes:
                if n.proc and n.proc.poll() is None:
                    n.kill()
        summary = {"store": "postgres" if args.store_url else "journal",
                   "messages": args.messages, "rounds": len(times), "settle_s": args.settle,
                   "median_ms": round(statistics.median(times), 1),
                   "min_ms": round(min(times), 1), "max_ms": round(max(times), 1)}
        print(json.dumps(summary) if args.json else
              f"median {summary['median_ms']} ms (min {summary['min_ms']}, max {summary['max_ms']}) "
              f"with {args.messages} messages stored")


if __name__ == "__main__":
    sys.exit(main())
