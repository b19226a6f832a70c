"""High availability with stomp.py as the independent client.

Two halyard brokers share one store — a data directory, or a PostgreSQL
database (`HALYARD_TEST_DATABASE_URL`, which scripts/test.sh sets): the
first is master, the second a slave with its STOMP port closed. A stomp.py producer and consumer
are given BOTH host/port pairs. The master is killed with SIGKILL mid-stream;
the clients reconnect to the new master (stomp.py walks its host list when
connecting, but does not reconnect by itself after a drop: the clients below
do it from their own loops) and carry on. Every message that got a RECEIPT is
delivered at least once, and no message whose ACK got a RECEIPT comes back.
"""

from __future__ import annotations

import glob
import os
import queue
import secrets
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import stomp

from conftest import (
    _BROKERS_KEY,
    EVENT_TIMEOUT,
    STARTUP_TIMEOUT,
    Broker,
    _to_toml,
    wait_until,
)

QUEUE = "/queue/ha-py"
TOTAL = 300
KILL_AFTER = 100
WINDOW = 10
FAILOVER_TIMEOUT = 15.0


class HaBroker(Broker):
    """A broker on a data directory shared with others: it may start as a
    slave, whose STOMP port stays closed, so readiness is judged by its
    admin API instead."""

    def __init__(self, binary: Path, workdir: Path, name: str, store_args: list[str]):
        super().__init__(binary, workdir, name, {"journal": {"segment-bytes": 1048576}})
        self.store_args = store_args

    def spawn(self) -> "HaBroker":
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(_to_toml(self.config))
        self.pick_ports()
        with open(self.log_path, "ab") as log:
            log.write(f"=== starting broker: {self.ports_description()} ===\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [
                    str(self.binary), "broker",
                    "--name", self.name,
                    "--config", str(self.config_path),
                    *self.store_args,
                    *self.listener_args(),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "RUST_LOG": "info", "NO_COLOR": "1"},
            )
        return self

    def status(self) -> dict | None:
        try:
            return self.http_json("/api/status")
        except (OSError, ValueError):
            return None

    def wait_role(self, role: str, timeout: float = STARTUP_TIMEOUT) -> dict:
        def check():
            assert self.alive(), (
                f"broker {self.name} exited ({self.proc.returncode}) waiting to be {role}:\n{self.log_tail(60)}"
            )
            s = self.status()
            return s if s and s.get("role") == role else None

        return wait_until(check, timeout, f"broker {self.name} to be {role}",
                          describe=lambda: f"last status: {self.status()}")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)


def _new_database() -> str:
    """A new database on the suite's PostgreSQL server; its URL."""
    admin = os.environ.get("HALYARD_TEST_DATABASE_URL", "").strip()
    if not admin:
        pytest.skip("HALYARD_TEST_DATABASE_URL is not set (scripts/test.sh sets it)")
    psql = shutil.which("psql") or next(
        iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/psql"), reverse=True)), None)
    assert psql, "psql not found"
    name = f"py_ha_{os.getpid()}_{secrets.token_hex(4)}"
    subprocess.run([psql, admin, "-qc", f'CREATE DATABASE "{name}" TEMPLATE template0'],
                   check=True, stdout=subprocess.DEVNULL)
    base, _, query = admin.partition("?")
    return base.rsplit("/", 1)[0] + "/" + name + (f"?{query}" if query else "")


@pytest.fixture(params=["journal", "postgres"])
def ha_pair(halyard_bin: Path, tmp_path: Path, request: pytest.FixtureRequest):
    """(master, slave): two brokers on one data directory, or one database."""
    if request.param == "postgres":
        store = ["--store", "postgres", "--store-url", _new_database()]
    else:
        store = ["--data-dir", str(tmp_path / "shared-data")]
    started: list[HaBroker] = request.node.stash.setdefault(_BROKERS_KEY, [])
    master = HaBroker(halyard_bin, tmp_path / "a", "a", store)
    started.append(master)
    master.spawn().wait_role("master")
    slave = HaBroker(halyard_bin, tmp_path / "b", "b", store)
    started.append(slave)
    slave.spawn().wait_role("slave")
    yield master, slave
    # SIGKILL: the test has checked what it needs, and a slave that gets
    # SIGTERM does not exit while a master still holds the lock (a broker
    # bug, see crates/cli/tests/it/ha.rs `a_slave_exits_promptly_on_sigterm`).
    for b in started:
        if b.alive():
            b.proc.kill()
            b.proc.wait(timeout=10)


class _Events(stomp.ConnectionListener):
    """Puts everything a connection sees on one queue, in order."""

    def __init__(self, events: queue.Queue):
        self.events = events

    def on_connected(self, frame):
        self.events.put(("connected", frame))

    def on_message(self, frame):
        self.events.put(("message", frame))

    def on_receipt(self, frame):
        self.events.put(("receipt", frame))

    def on_error(self, frame):
        self.events.put(("error", frame))

    def on_disconnected(self):
        self.events.put(("disconnected", None))


class FailoverClient:
    """A stomp.py 1.2 connection given every broker's host/port pair. It
    reconnects itself (one stomp.py connection object, connect() again:
    stomp.py tries the hosts in turn) whenever the connection drops."""

    def __init__(self, hosts: list[tuple[str, int]], label: str):
        self.label = label
        self.events: queue.Queue = queue.Queue()
        self.conn = stomp.Connection12(
            hosts,
            prefer_localhost=False,
            try_loopback_connect=False,
            reconnect_sleep_initial=0.02,
            reconnect_sleep_increase=0.0,
            reconnect_sleep_jitter=0.0,
            reconnect_sleep_max=0.05,
            reconnect_attempts_max=200,
            heartbeats=(0, 0),
        )
        self.conn.set_listener("events", _Events(self.events))
        self.served_by: list[tuple[str, int]] = []
        self.up = False
        self.connect()

    def connect(self) -> None:
        deadline = time.monotonic() + FAILOVER_TIMEOUT
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"{self.label}: no broker accepted a connection within {FAILOVER_TIMEOUT}s"
            try:
                self.conn.connect(wait=False)
            except (stomp.exception.StompException, OSError):
                continue
            while True:
                try:
                    kind, _frame = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
                except queue.Empty:
                    raise AssertionError(f"{self.label}: no CONNECTED within {FAILOVER_TIMEOUT}s") from None
                if kind == "connected":
                    self.up = True
                    self.served_by.append(self.conn.transport.current_host_and_port)
                    return
                if kind == "disconnected":
                    break

    def send_frame(self, fn, *args, **kwargs) -> bool:
        """Calls a stomp.py send method; False if the connection is gone."""
        if not self.up:
            return False
        try:
            fn(*args, **kwargs)
            return True
        except Exception:  # stomp.py raises socket errors or NotConnectedException
            return False

    def next_event(self, timeout: float):
        """The next (kind, frame), or None after `timeout`. A "disconnected"
        marks the client down until connect() is called."""
        try:
            kind, frame = self.events.get(timeout=timeout)
        except queue.Empty:
            return None
        if kind == "disconnected":
            self.up = False
        return kind, frame

    def close(self) -> None:
        try:
            if self.conn.transport.socket is not None:
                self.conn.transport.disconnect_socket()
        except Exception:
            pass


class Consumer(threading.Thread):
    """Consumes QUEUE with client-individual ACKs, each with a receipt,
    reconnecting and subscribing again whenever its broker goes."""

    def __init__(self, hosts):
        super().__init__(daemon=True)
        self.hosts = hosts
        self.lock = threading.Lock()
        self.delivered: list[tuple[str, str]] = []  # (body, attempt) in order
        self.ack_confirmed_before: list[tuple[str, int]] = []  # (attempt, index in delivered)
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.client: FailoverClient | None = None

    def bodies(self) -> set[str]:
        with self.lock:
            return {b for b, _ in self.delivered}

    def _subscribe(self) -> None:
        c = self.client
        c.send_frame(c.conn.subscribe, QUEUE, "c", ack="client-individual",
                     headers={"activemq.prefetchSize": "50"})

    def run(self) -> None:
        try:
            self.client = FailoverClient(self.hosts, "consumer")
            self._subscribe()
            pending: dict[str, str] = {}  # ack receipt -> attempt
            n = 0
            while not self.stop.is_set():
                if not self.client.up:
                    pending.clear()  # those ACKs are in doubt
                    self.client.connect()
                    self._subscribe()
                    continue
                ev = self.client.next_event(0.05)
                if ev is None:
                    continue
                kind, frame = ev
                if kind == "message":
                    attempt = frame.headers.get("x-attempt", "?")
                    with self.lock:
                        self.delivered.append((frame.body, attempt))
                    n += 1
                    rid = f"ack-{n}"
                    pending[rid] = attempt
                    self.client.send_frame(self.client.conn.ack, frame.headers["ack"], receipt=rid)
                elif kind == "receipt":
                    attempt = pending.pop(frame.headers.get("receipt-id"), None)
                    if attempt is not None:
                        with self.lock:
                            self.ack_confirmed_before.append((attempt, len(self.delivered)))
        except BaseException as e:  # reported by the test thread
            self.error = e
        finally:
            if self.client is not None:
                self.client.close()


def test_stomp_py_fails_over_to_the_new_master_after_kill_9(ha_pair):
    master, slave = ha_pair
    hosts = [(master.host, master.port), (slave.host, slave.port)]
    # The slave refuses clients until it takes over.
    with pytest.raises(OSError):
        socket.create_connection((slave.host, slave.port), timeout=1).close()
    wait_until(lambda: ((slave.status() or {}).get("lock_owner") or {}).get("pid") == master.proc.pid,
               EVENT_TIMEOUT, "the slave to name the master")

    consumer = Consumer(hosts)
    consumer.start()
    producer = FailoverClient(hosts, "producer")
    assert producer.served_by == [(master.host, master.port)]

    receipted: set[str] = set()
    receipt_body: dict[str, str] = {}  # receipt id -> body (every attempt)
    outstanding: dict[str, str] = {}  # body -> receipt id of its latest attempt
    attempts = 0
    resent = 0
    next_i = 0
    killed_at: float | None = None
    first_after_kill: float | None = None
    deadline = time.monotonic() + 60

    def send(body: str) -> None:
        nonlocal attempts
        attempts += 1
        rid = f"s-{attempts}"
        receipt_body[rid] = body
        outstanding[body] = rid
        producer.send_frame(producer.conn.send, QUEUE, body,
                            headers={"persistent": "true", "receipt": rid, "x-attempt": rid})

    while next_i < TOTAL or outstanding:
        assert time.monotonic() < deadline, f"producer stuck: {len(outstanding)} outstanding"
        assert consumer.error is None, f"consumer failed: {consumer.error!r}"
        if not producer.up:
            producer.connect()
            # RESEND every SEND whose RECEIPT had not come.
            for body in sorted(outstanding):
                resent += 1
                send(body)
            continue
        while next_i < TOTAL and len(outstanding) < WINDOW:
            send(f"m{next_i:04d}")
            next_i += 1
        ev = producer.next_event(0.05)
        if ev is None:
            continue
        kind, frame = ev
        if kind == "receipt":
            body = receipt_body.get(frame.headers.get("receipt-id"))
            if body is not None and body not in receipted:
                receipted.add(body)
                outstanding.pop(body, None)
                if (killed_at is not None and first_after_kill is None
                        and producer.served_by[-1] == (slave.host, slave.port)):
                    first_after_kill = time.monotonic()
        if killed_at is None and len(receipted) >= KILL_AFTER:
            killed_at = time.monotonic()
            master.kill9()

    assert killed_at is not None and first_after_kill is not None
    assert producer.served_by[-1] == (slave.host, slave.port), producer.served_by
    status = slave.wait_role("master")
    assert status["epoch"] == 2, status

    # Every receipted message is delivered at least once.
    def all_delivered() -> bool:
        assert consumer.error is None, f"consumer failed: {consumer.error!r}"
        return receipted <= consumer.bodies()

    wait_until(all_delivered, EVENT_TIMEOUT, "every receipted message to be delivered",
               describe=lambda: f"missing {sorted(receipted - consumer.bodies())[:20]}")
    assert consumer.error is None, f"consumer failed: {consumer.error!r}"
    consumer.stop.set()
    consumer.join(EVENT_TIMEOUT)
    assert not consumer.is_alive()
    producer.close()
    assert consumer.client.served_by[-1] == (slave.host, slave.port), consumer.client.served_by
    # No message whose ACK got a RECEIPT came back.
    with consumer.lock:
        for attempt, index in consumer.ack_confirmed_before:
            later = [b for b, a in consumer.delivered[index:] if a == attempt]
            assert not later, f"{later} came back after their ACK was receipted"
    print(
        f"stomp.py failover: {len(receipted)} receipted, {len(consumer.delivered)} deliveries, "
        f"{resent} resent; first RECEIPT from the new master "
        f"{(first_after_kill - killed_at) * 1000:.0f} ms after kill -9; "
        f"producer connections {producer.served_by}, consumer connections {consumer.client.served_by}"
    )
