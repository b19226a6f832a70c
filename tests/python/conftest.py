"""Fixtures for the stomp.py interoperability suite.

Every test gets its own broker (own ports, own data directory), so the suite
can run in parallel (``pytest -n 2``). Nothing here sleeps and hopes: every
wait is for an event, polled with a deadline, and fails with a message that
says what was awaited.

Fixtures:
- ``broker``: a running broker; configure it with
  ``@pytest.mark.broker_config({"destinations": {"max-redeliveries": 2}})``
  (sections and keys as in crates/broker/src/config.rs).
- ``broker_factory``: start more brokers, or one with a config chosen at run time.
- ``stomp_connect``: ``stomp_connect(version="1.2", heartbeats=(0, 0), ...)``
  returns a connected :class:`StompClient` (a stomp.py connection plus a
  listener that queues everything the broker sends).
- ``raw_stomp``: ``raw_stomp()`` returns a :class:`RawStomp` socket for the
  frames stomp.py will not send.
- ``halyard_cli``: runs ``halyard send`` / ``halyard receive`` against the broker.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable

import pytest
import stomp

REPO = Path(__file__).resolve().parents[2]
# Default deadline for "this should happen now" events. Generous, because a
# loaded CI machine can stall for a while; tests pass as soon as the event
# arrives, so the size of this number costs nothing when things work.
EVENT_TIMEOUT = float(os.environ.get("HALYARD_TEST_TIMEOUT", "10"))
STARTUP_TIMEOUT = 15.0
LOG_TAIL_LINES = 400


# --------------------------------------------------------------------------
# pytest plumbing


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "broker_config(dict): TOML settings (nested dict of sections) for the `broker` fixture",
    )


_BROKERS_KEY = pytest.StashKey[list]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if report.failed:
        for b in item.stash.get(_BROKERS_KEY, []):
            report.sections.append((f"halyard broker log ({b.name}, {b.log_path})", b.log_tail()))
    return report


# --------------------------------------------------------------------------
# The broker


@pytest.fixture(scope="session")
def halyard_bin() -> Path:
    env = os.environ.get("HALYARD_BIN")
    path = Path(env) if env else REPO / "target" / "debug" / "halyard"
    if not (path.is_file() and os.access(path, os.X_OK)):
        how = "HALYARD_BIN" if env else "the default location (set HALYARD_BIN to override)"
        pytest.fail(
            f"halyard binary not found at {path} ({how}). "
            "Build it first with `cargo build -p halyard`.",
            pytrace=False,
        )
    return path


_HELD_PORTS: list = []


def _free_port() -> int:
    """A port nobody listens on now, from 10000-19999: below Linux's
    ephemeral range, so no parallel test's outgoing connection takes it
    before the broker binds it; reserved for this process's life with a
    lock on a file named after it, as the Rust tests do
    (crates/testkit/src/ports.rs), so no two test processes share one."""
    lock_dir = os.path.join(tempfile.gettempdir(), "halyard-test-ports")
    try:
        os.makedirs(lock_dir, exist_ok=True)
    except OSError:
        pass
    while True:
        port = random.randrange(10000, 20000)
        try:
            f = open(os.path.join(lock_dir, str(port)), "a")
        except OSError:
            f = None  # no usable lock directory (another user's): go on unlocked
        if f is not None:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                f.close()
                continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                if f is not None:
                    f.close()
                continue
        if f is not None:
            _HELD_PORTS.append(f)
        return port


def _free_ports(n: int) -> list[int]:
    """``n`` distinct free ports (see ``_free_port``)."""
    ports: list[int] = []
    while len(ports) < n:
        port = _free_port()
        if port not in ports:
            ports.append(port)
    return ports


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    if isinstance(v, list) and not _is_tables(v):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"unsupported TOML value {v!r}")


def _is_tables(v: Any) -> bool:
    """A list of dicts: an array of tables, such as ``[[policies]]``."""
    return isinstance(v, list) and bool(v) and all(isinstance(t, dict) for t in v)


def _to_toml(config: dict) -> str:
    top = [
        f"{k} = {_toml_value(v)}"
        for k, v in config.items()
        if not isinstance(v, dict) and not _is_tables(v)
    ]
    lines = top
    for section, values in config.items():
        if isinstance(values, dict):
            lines.append(f"\n[{section}]")
            lines.extend(f"{k} = {_toml_value(v)}" for k, v in values.items())
        elif _is_tables(values):
            for table in values:
                lines.append(f"\n[[{section}]]")
                lines.extend(f"{k} = {_toml_value(v)}" for k, v in table.items())
    return "\n".join(lines) + "\n"


class Broker:
    """A halyard broker process on free loopback ports."""

    def __init__(self, binary: Path, workdir: Path, name: str, config: dict | None):
        self.binary = binary
        self.workdir = workdir
        self.name = name
        self.config = config or {}
        self.host = "127.0.0.1"
        self.port = 0
        self.http_port = 0
        self.ws_port = 0  # STOMP over WebSocket
        self.openwire_port = 0  # OpenWire (ActiveMQ's JMS clients)
        self.proc: subprocess.Popen | None = None
        self.log_path = workdir / "broker.log"
        self.config_path = workdir / "broker.toml"

    # -- lifecycle --

    def start(self) -> "Broker":
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(_to_toml(self.config))
        last_error = ""
        # Ports found by binding port 0 can, rarely, be taken by someone else
        # before the broker binds them: retry with new ones in that case.
        for _attempt in range(3):
            self.pick_ports()
            with open(self.log_path, "ab") as log:
                log.write(f"=== starting broker: {self.ports_description()} ===\n".encode())
                log.flush()
                env = dict(os.environ)
                env.setdefault("RUST_LOG", "info")
                env.setdefault("NO_COLOR", "1")
                self.proc = subprocess.Popen(
                    [
                        str(self.binary),
                        "broker",
                        "--name", self.name,
                        "--config", str(self.config_path),
                        "--data-dir", str(self.workdir / "data"),
                        *self.listener_args(),
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
            ok, last_error = self._wait_ready()
            if ok:
                return self
            self.stop()
            if "in use" not in self.log_tail().lower():
                break
        raise RuntimeError(f"broker {self.name} did not start: {last_error}\n--- log ---\n{self.log_tail()}")

    def pick_ports(self) -> None:
        """New free ports for every listener of the broker."""
        self.port, self.http_port, self.ws_port, self.openwire_port = _free_ports(4)

    def listener_args(self) -> list[str]:
        """The command-line flags that put each listener on this broker's
        own port. Every head the broker has on by default must be here: one
        left out listens on its default port (61614 ws, 61616 OpenWire),
        where parallel tests' brokers collide."""
        return [
            "--stomp", f"{self.host}:{self.port}",
            "--ws", f"{self.host}:{self.ws_port}",
            "--openwire", f"{self.host}:{self.openwire_port}",
            "--http", f"{self.host}:{self.http_port}",
        ]

    def ports_description(self) -> str:
        return (f"stomp {self.port}, http {self.http_port}, ws {self.ws_port}, "
                f"openwire {self.openwire_port}")

    def _wait_ready(self) -> tuple[bool, str]:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            assert self.proc is not None
            rc = self.proc.poll()
            if rc is not None:
                return False, f"process exited with status {rc}"
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return True, ""
            except OSError:
                time.sleep(0.02)  # poll interval, bounded by the deadline
        return False, f"STOMP port {self.port} not accepting connections after {STARTUP_TIMEOUT}s"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int | None:
        """Stops the broker (SIGTERM, then SIGKILL); returns its exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        return self.proc.returncode

    # -- inspection --

    @property
    def url(self) -> str:
        return f"stomp://{self.host}:{self.port}"

    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.ws_port}/"

    @property
    def openwire_url(self) -> str:
        """``tcp://host:port``, as ActiveMQ's JMS clients name the broker."""
        return f"tcp://{self.host}:{self.openwire_port}"

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as e:
            return f"(no log: {e})"
        tail = text.splitlines()[-lines:]
        return "\n".join(tail)

    def http_json(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://{self.host}:{self.http_port}{path}", timeout=5) as r:
            return json.loads(r.read())

    def destination_stats(self, destination: str) -> dict | None:
        """The /api/destinations entry for `destination` (e.g. /queue/x), or None."""
        for e in self.http_json("/api/destinations"):
            if e.get("destination") == destination:
                return e
        return None

    def wait_stats_where(self, destination: str, pred: Callable[[dict], bool], what: str,
                         timeout: float = EVENT_TIMEOUT) -> dict:
        """Polls /api/destinations until pred(stats of destination) holds."""
        def check():
            s = self.destination_stats(destination)
            return s if s is not None and pred(s) else None
        return wait_until(check, timeout, f"{destination}: {what}",
                          describe=lambda: f"last: {self.destination_stats(destination)}")

    def wait_stats(self, destination: str, timeout: float = EVENT_TIMEOUT, **expected: int) -> dict:
        """Polls /api/destinations until the destination's counters match."""
        return wait_until(
            lambda: _matches(self.destination_stats(destination), expected),
            timeout,
            f"{destination} stats {expected}",
            describe=lambda: f"last: {self.destination_stats(destination)}",
        )


def _matches(stats: dict | None, expected: dict) -> dict | None:
    if stats is None:
        return None
    for k, v in expected.items():
        if stats.get(k) != v:
            return None
    return stats


def wait_until(
    fn: Callable[[], Any],
    timeout: float,
    what: str,
    describe: Callable[[], str] | None = None,
    interval: float = 0.02,
) -> Any:
    """Calls fn until it returns something truthy, or fails after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() >= deadline:
            extra = f" ({describe()})" if describe else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{extra}")
        time.sleep(interval)


@pytest.fixture
def broker_factory(halyard_bin: Path, tmp_path: Path, request: pytest.FixtureRequest):
    started: list[Broker] = []
    request.node.stash.setdefault(_BROKERS_KEY, started)

    def start(config: dict | None = None, name: str | None = None) -> Broker:
        name = name or f"b{len(started) + 1}"
        b = Broker(halyard_bin, tmp_path / name, name, config)
        started.append(b)
        return b.start()

    yield start

    crashed = [b for b in started if b.proc is not None and not b.alive()]
    for b in started:
        b.stop()
    if crashed:
        pytest.fail(
            "broker exited during the test: "
            + ", ".join(f"{b.name} (status {b.proc.returncode})" for b in crashed)
            + "\n"
            + "\n".join(b.log_tail(60) for b in crashed),
            pytrace=False,
        )


@pytest.fixture
def broker(broker_factory, request: pytest.FixtureRequest) -> Broker:
    marker = request.node.get_closest_marker("broker_config")
    config = marker.args[0] if marker else {}
    return broker_factory(config)


# --------------------------------------------------------------------------
# Collecting what the broker sends, and waiting for it


class Inbox:
    """A thread-safe list of events with blocking, deadline-bounded takes."""

    def __init__(self, what: str):
        self.what = what
        self._items: list = []
        self._cv = threading.Condition()

    def put(self, item) -> None:
        with self._cv:
            self._items.append(item)
            self._cv.notify_all()

    def take(self, pred: Callable[[Any], bool] | None = None, timeout: float = EVENT_TIMEOUT, what: str | None = None):
        """Removes and returns the first item matching `pred`, waiting up to `timeout`."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                for i, item in enumerate(self._items):
                    if pred is None or pred(item):
                        return self._items.pop(i)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"timed out after {timeout}s waiting for {what or self.what}; "
                        f"have {len(self._items)} other {self.what}(s): {self._describe()}"
                    )
                self._cv.wait(left)

    def take_n(self, n: int, timeout: float = EVENT_TIMEOUT) -> list:
        deadline = time.monotonic() + timeout
        out = []
        for i in range(n):
            try:
                out.append(self.take(timeout=max(0.0, deadline - time.monotonic())))
            except AssertionError as e:
                raise AssertionError(f"got {i} of {n} {self.what}s: {e}") from None
        return out

    def snapshot(self) -> list:
        with self._cv:
            return list(self._items)

    def __len__(self) -> int:
        with self._cv:
            return len(self._items)

    def assert_empty(self) -> None:
        items = self.snapshot()
        assert not items, f"unexpected {self.what}(s): {self._describe()}"

    def _describe(self) -> str:
        parts = []
        for item in self._items[:10]:
            if isinstance(item, stomp.utils.Frame):
                parts.append(f"{item.cmd} {item.headers} body={item.body!r:.80}")
            else:
                parts.append(repr(item)[:200])
        return "[" + "; ".join(parts) + "]"


class Collector(stomp.ConnectionListener):
    """stomp.py listener that queues every event for the test thread."""

    def __init__(self):
        self.connected = Inbox("CONNECTED frame")
        self.messages = Inbox("MESSAGE")
        self.receipts = Inbox("RECEIPT")
        self.errors = Inbox("ERROR")
        self.disconnected = threading.Event()
        self.heartbeat_timeout = threading.Event()
        self.heartbeats = 0
        self._lock = threading.Lock()

    def on_connected(self, frame):
        self.connected.put(frame)

    def on_message(self, frame):
        self.messages.put(frame)

    def on_receipt(self, frame):
        self.receipts.put(frame)

    def on_error(self, frame):
        self.errors.put(frame)

    def on_disconnected(self):
        self.disconnected.set()

    def on_heartbeat_timeout(self):
        self.heartbeat_timeout.set()

    def on_heartbeat(self):
        with self._lock:
            self.heartbeats += 1


# Note: in stomp.py 9, plain `stomp.Connection` is the 1.1 class.
CONNECTION_CLASSES = {
    "1.0": stomp.Connection10,
    "1.1": stomp.Connection11,
    "1.2": stomp.Connection12,
}


class StompClient:
    """A connected stomp.py connection and what it has received."""

    def __init__(self, conn, listener: Collector, version: str, connected: stomp.utils.Frame):
        self.conn = conn
        self.listener = listener
        self.version = version
        self.connected_frame = connected

    # Shorthands for the inboxes
    @property
    def messages(self) -> Inbox:
        return self.listener.messages

    @property
    def errors(self) -> Inbox:
        return self.listener.errors

    @staticmethod
    def new_receipt() -> str:
        return "r-" + uuid.uuid4().hex[:12]

    def wait_receipt(self, receipt: str, timeout: float = EVENT_TIMEOUT) -> stomp.utils.Frame:
        return self.listener.receipts.take(
            lambda f: f.headers.get("receipt-id") == receipt, timeout, f"RECEIPT {receipt}"
        )

    def wait_error(self, timeout: float = EVENT_TIMEOUT) -> stomp.utils.Frame:
        return self.errors.take(timeout=timeout)

    def wait_disconnected(self, timeout: float = EVENT_TIMEOUT) -> None:
        assert self.listener.disconnected.wait(timeout), f"connection not closed within {timeout}s"

    def next_message(self, timeout: float = EVENT_TIMEOUT) -> stomp.utils.Frame:
        return self.messages.take(timeout=timeout)

    def take_messages(self, n: int, timeout: float = EVENT_TIMEOUT) -> list:
        return self.messages.take_n(n, timeout)

    # Frames, with receipts awaited where asked

    def subscribe(self, destination: str, id: str | None = "s1", ack: str = "auto", receipt: bool = True, **headers) -> None:
        """Subscribes and (by default) waits for the broker's receipt, so the
        subscription is known to be registered before the test goes on."""
        r = self.new_receipt() if receipt else None
        if r:
            headers["receipt"] = r
        if self.version == "1.0":
            self.conn.subscribe(destination, id=id, ack=ack, headers=headers)
        else:
            self.conn.subscribe(destination, id, ack=ack, headers=headers)
        if r:
            self.wait_receipt(r)

    def send(self, destination: str, body, receipt: bool = False, **headers) -> None:
        r = self.new_receipt() if receipt else None
        if r:
            headers["receipt"] = r
        self.conn.send(destination, body, headers=headers)
        if r:
            self.wait_receipt(r)

    def _ack_args(self, frame: stomp.utils.Frame) -> tuple:
        h = frame.headers
        if self.version == "1.2":
            return (h["ack"],)
        if self.version == "1.1":
            return (h["message-id"], h["subscription"])
        return (h["message-id"],)

    def ack(self, frame: stomp.utils.Frame, receipt: bool = True, transaction: str | None = None) -> None:
        r = self.new_receipt() if receipt else None
        self.conn.ack(*self._ack_args(frame), transaction=transaction, receipt=r)
        if r:
            self.wait_receipt(r)

    def nack(self, frame: stomp.utils.Frame, receipt: bool = True, transaction: str | None = None) -> None:
        r = self.new_receipt() if receipt else None
        self.conn.nack(*self._ack_args(frame), transaction=transaction, receipt=r)
        if r:
            self.wait_receipt(r)

    def begin(self, tx: str) -> None:
        r = self.new_receipt()
        self.conn.begin(tx, headers={"receipt": r})
        self.wait_receipt(r)

    def commit(self, tx: str) -> None:
        r = self.new_receipt()
        self.conn.commit(tx, headers={"receipt": r})
        self.wait_receipt(r)

    def abort(self, tx: str) -> None:
        r = self.new_receipt()
        self.conn.abort(tx, headers={"receipt": r})
        self.wait_receipt(r)

    def disconnect(self, timeout: float = EVENT_TIMEOUT) -> stomp.utils.Frame:
        """DISCONNECT with a receipt, through stomp.py's own disconnect().
        Returns the RECEIPT frame once the connection has closed."""
        r = self.new_receipt()
        # stomp.py's disconnect(receipt=...) blocks until its I/O thread ends,
        # with no timeout of its own: run it on a thread we can wait for.
        t = threading.Thread(target=self.conn.disconnect, kwargs={"receipt": r}, daemon=True)
        t.start()
        frame = self.wait_receipt(r, timeout)
        t.join(timeout)
        assert not t.is_alive(), f"stomp.py disconnect() did not return within {timeout}s"
        self.wait_disconnected(timeout)
        return frame

    def drop(self) -> None:
        """Closes the socket without DISCONNECT (a crashed client)."""
        self.conn.transport.disconnect_socket()
        self.wait_disconnected()

    def close_quietly(self) -> None:
        try:
            if self.conn.transport.socket is not None:
                self.conn.transport.disconnect_socket()
        except Exception:
            pass


@pytest.fixture
def stomp_connect(broker: Broker):
    clients: list[StompClient] = []

    def connect(
        version: str = "1.2",
        target: Broker | None = None,
        heartbeats: tuple[int, int] = (0, 0),
        auto_decode: bool = True,
        expect_error: bool = False,
        connection_class=None,
        **headers,
    ) -> StompClient:
        b = target or broker
        cls = connection_class or CONNECTION_CLASSES[version]
        kwargs: dict = dict(
            prefer_localhost=False,
            try_loopback_connect=False,
            reconnect_attempts_max=1,
            auto_decode=auto_decode,
        )
        if version != "1.0":
            kwargs["heartbeats"] = heartbeats
        conn = cls([(b.host, b.port)], **kwargs)
        listener = Collector()
        conn.set_listener("collector", listener)
        conn.connect(wait=False, headers=headers)
        client = StompClient(conn, listener, version, None)  # type: ignore[arg-type]
        clients.append(client)
        if expect_error:
            return client
        client.connected_frame = listener.connected.take(what="CONNECTED frame")
        return client

    yield connect

    for c in clients:
        c.close_quietly()


# --------------------------------------------------------------------------
# Raw sockets, for frames stomp.py will not produce


class RawStomp:
    """A bare STOMP socket: write bytes, read frames with a deadline."""

    def __init__(self, host: str, port: int):
        self.sock = socket.create_connection((host, port), timeout=EVENT_TIMEOUT)
        self.buf = b""
        self.closed = False
        self.heartbeats_received = 0

    def send_frame(self, command: str, headers: dict | None = None, body: bytes = b"") -> None:
        lines = [command] + [f"{k}:{v}" for k, v in (headers or {}).items()]
        data = ("\n".join(lines) + "\n\n").encode() + body + b"\0"
        self.sock.sendall(data)

    def _fill(self, deadline: float) -> bool:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            return False
        except OSError:
            chunk = b""
        if not chunk:
            self.closed = True
            return False
        self.buf += chunk
        return True

    def read_frame(self, timeout: float = EVENT_TIMEOUT):
        """Returns (command, headers, body) for the next frame; counts the
        heart-beats (EOLs) before it. Returns None if the socket closed."""
        deadline = time.monotonic() + timeout
        while True:
            while self.buf[:1] in (b"\n", b"\r"):
                if self.buf[:1] == b"\n":
                    self.heartbeats_received += 1
                self.buf = self.buf[1:]
            end = self.buf.find(b"\n\n")
            if end >= 0:
                head = self.buf[:end].decode("utf-8")
                lines = head.split("\n")
                headers: dict = {}
                for line in lines[1:]:
                    k, _, v = line.partition(":")
                    headers.setdefault(k, v)
                start = end + 2
                if "content-length" in headers:
                    stop = start + int(headers["content-length"])
                    if len(self.buf) > stop:
                        body = self.buf[start:stop]
                        self.buf = self.buf[stop + 1:]
                        return lines[0], headers, body
                else:
                    nul = self.buf.find(b"\0", start)
                    if nul >= 0:
                        body = self.buf[start:nul]
                        self.buf = self.buf[nul + 1:]
                        return lines[0], headers, body
            if self.closed:
                return None
            if not self._fill(deadline):
                if self.closed:
                    continue
                raise AssertionError(f"no complete frame within {timeout}s (buffer: {self.buf[:200]!r})")

    def wait_closed(self, timeout: float = EVENT_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not self.closed:
            if not self._fill(deadline) and not self.closed:
                raise AssertionError(f"broker did not close the connection within {timeout}s")

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


@pytest.fixture
def raw_stomp(broker: Broker):
    socks: list[RawStomp] = []

    def open_(target: Broker | None = None) -> RawStomp:
        b = target or broker
        s = RawStomp(b.host, b.port)
        socks.append(s)
        return s

    yield open_
    for s in socks:
        s.close()


# --------------------------------------------------------------------------
# The project's CLI


class HalyardCli:
    def __init__(self, binary: Path, broker: Broker):
        self.binary = binary
        self.broker = broker

    def run(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
        env = dict(os.environ)
        env.pop("HALYARD_URL", None)
        env.setdefault("NO_COLOR", "1")
        return subprocess.run(
            [str(self.binary), *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            env=env,
        )

    def receive(self, destination: str, n: int, timeout_s: float = 5, extra: Iterable[str] = ()) -> list[dict]:
        p = self.run(
            "receive", "--url", self.broker.url, "-d", destination,
            "-n", str(n), "--timeout", str(timeout_s), "--json", *extra,
        )
        assert p.returncode == 0, (
            f"halyard receive failed ({p.returncode}): stderr={p.stderr.decode(errors='replace')}"
        )
        return [json.loads(line) for line in p.stdout.decode().splitlines() if line.strip()]

    def send(self, destination: str, body: str, n: int = 1, extra: Iterable[str] = ()) -> None:
        p = self.run("send", "--url", self.broker.url, "-d", destination, "-n", str(n), *extra, body)
        assert p.returncode == 0, (
            f"halyard send failed ({p.returncode}): stderr={p.stderr.decode(errors='replace')}"
        )


@pytest.fixture
def halyard_cli(halyard_bin: Path, broker: Broker) -> HalyardCli:
    return HalyardCli(halyard_bin, broker)
