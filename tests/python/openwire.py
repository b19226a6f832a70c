"""Helpers for the OpenWire tests with the real ActiveMQ 5.17 JMS client.

The JMS programs live in tests/java (see its README.md); they are compiled
by tests/java/build.sh into ``$HALYARD_JAVA_BUILD_DIR`` (default
``target/java-tests``, git-ignored) when their sources change, and each
prints one JSON line of results.

Two kinds of broker speak OpenWire to them:

* Halyard, started with ``--openwire 127.0.0.1:PORT``. Until the OpenWire
  head exists (``halyard broker --help`` does not list ``--openwire``) the
  tests against it skip, saying so; they turn on by themselves when it lands.
* Apache ActiveMQ Classic 5.17 from Debian's ``activemq`` package, in a temp
  dir with its own ports and data (tests/java/activemq.xml). That is how the
  programs themselves were validated, and how to check that a program and
  not Halyard is wrong. A JVM broker takes seconds of CPU to start, so these
  runs are off unless ``HALYARD_TEST_AGAINST_ACTIVEMQ=1``.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from conftest import REPO, STARTUP_TIMEOUT, Broker, _free_port, _to_toml, wait_until

JAVA_DIR = REPO / "tests" / "java"
AMQ_HOME = Path(os.environ.get("ACTIVEMQ_HOME", "/usr/share/activemq"))
AGAINST_ACTIVEMQ = os.environ.get("HALYARD_TEST_AGAINST_ACTIVEMQ") == "1"
ACTIVEMQ_SKIP_REASON = (
    "the ActiveMQ 5.17 reference runs are off (they start JVM brokers): "
    "set HALYARD_TEST_AGAINST_ACTIVEMQ=1 to validate the JMS programs against ActiveMQ"
)
# A JVM, a JMS connection and a few round trips: generous for a loaded machine.
JAVA_TIMEOUT = float(os.environ.get("HALYARD_JAVA_TIMEOUT", "180"))


# --------------------------------------------------------------------------
# Java


@functools.cache
def java_classpath() -> str:
    """Compiles tests/java if needed (skips the test if Java or the jars
    are missing); returns the class path to run the programs with."""
    if shutil.which("java") is None or shutil.which("javac") is None:
        pytest.skip("java/javac not found (scripts/test.sh installs openjdk-17-jdk-headless)")
    build = Path(os.environ.get("HALYARD_JAVA_BUILD_DIR", REPO / "target" / "java-tests"))
    p = subprocess.run([str(JAVA_DIR / "build.sh"), str(build)], capture_output=True, text=True)
    if p.returncode != 0:
        if "is missing" in p.stderr:
            pytest.skip(p.stderr.strip())
        raise AssertionError(f"compiling tests/java failed:\n{p.stderr}")
    return p.stdout.strip()


class JavaRun:
    """A JMS program running in the background; its stderr is collected
    line by line so a test can wait for "progress ..." lines."""

    def __init__(self, main: str, *args: str, jvm_args: tuple[str, ...] = ()):
        self.cmd = ["java", "-Xmx128m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", *jvm_args,
                    "-cp", java_classpath(), main, *args]
        self.label = " ".join([main, *args])
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.stderr_lines: list[str] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._lock:
                self.stderr_lines.append(line.rstrip("\n"))

    def progress(self, key: str) -> int:
        """The last "progress KEY=N" number on stderr (0 if none yet)."""
        with self._lock:
            for line in reversed(self.stderr_lines):
                if line.startswith(f"progress {key}="):
                    return int(line.split("=", 1)[1])
        return 0

    def stderr_tail(self, n: int = 40) -> str:
        with self._lock:
            return "\n".join(self.stderr_lines[-n:])

    def finish(self, timeout: float = JAVA_TIMEOUT) -> list[dict]:
        """Waits for the exit; returns the JSON lines of its stdout."""
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
            raise AssertionError(f"{self.label} did not finish within {timeout}s;"
                                 f" stderr:\n{self.stderr_tail()}") from None
        self._reader.join(5)
        results = []
        for line in out.splitlines():
            line = line.strip()
            if line.startswith("{"):
                results.append(json.loads(line))
        assert results, (f"{self.label} printed no result (exit {self.proc.returncode});"
                         f" stdout: {out!r}; stderr:\n{self.stderr_tail()}")
        return results

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def run_java(main: str, *args: str, timeout: float = JAVA_TIMEOUT,
             jvm_args: tuple[str, ...] = ()) -> list[dict]:
    return JavaRun(main, *args, jvm_args=jvm_args).finish(timeout)


# --------------------------------------------------------------------------
# Brokers that speak OpenWire


@functools.cache
def halyard_has_openwire(binary: str) -> bool:
    p = subprocess.run([binary, "broker", "--help"], capture_output=True, text=True, timeout=30)
    return "--openwire" in p.stdout


def require_openwire(halyard_bin: Path) -> None:
    if not halyard_has_openwire(str(halyard_bin)):
        pytest.skip("halyard has no OpenWire listener yet (`halyard broker --help` lists no "
                    "--openwire); these tests turn on by themselves when it does")


class OpenwireHalyard(Broker):
    """A halyard broker for the JMS tests, on the fixtures' ports (every
    listener, OpenWire included, on a free port: ``listener_args``).
    ``store_args`` replaces ``--data-dir`` (a shared directory or
    ``--store postgres --store-url ...`` for a master/slave pair); such a
    broker may start as a slave with its ports closed, so ``spawn`` does not
    wait: use ``wait_role`` or ``wait_openwire``. ``openwire_port``: a port
    chosen beforehand (a peer's configuration names it); 0: a free one."""

    def __init__(self, binary: Path, workdir: Path, name: str, store_args: list[str] | None = None,
                 config: dict | None = None, openwire_port: int = 0):
        super().__init__(binary, workdir, name, config or {"journal": {"segment-bytes": 1048576}})
        self.store_args = store_args or ["--data-dir", str(workdir / "data")]
        self.preset_openwire_port = openwire_port

    def spawn(self) -> "OpenwireHalyard":
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(_to_toml(self.config))
        self.pick_ports()
        while self.preset_openwire_port in (self.port, self.http_port, self.ws_port):
            self.pick_ports()
        if self.preset_openwire_port:
            self.openwire_port = self.preset_openwire_port
        with open(self.log_path, "ab") as log:
            log.write(f"=== starting broker: {self.ports_description()} ===\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [str(self.binary), "broker", "--name", self.name, "--config", str(self.config_path),
                 *self.store_args, *self.listener_args()],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "info"), "NO_COLOR": "1"},
            )
        return self

    def wait_openwire(self, timeout: float = STARTUP_TIMEOUT) -> "OpenwireHalyard":
        wait_until(lambda: _accepts(self.host, self.openwire_port, self),
                   timeout, f"halyard {self.name} OpenWire port {self.openwire_port}",
                   describe=lambda: self.log_tail(20))
        return self

    def status(self) -> dict | None:
        try:
            return self.http_json("/api/status")
        except (OSError, ValueError):
            return None

    def wait_role(self, role: str, timeout: float = STARTUP_TIMEOUT) -> dict:
        def check():
            assert self.alive(), f"broker {self.name} exited:\n{self.log_tail(60)}"
            s = self.status()
            return s if s and s.get("role") == role else None
        return wait_until(check, timeout, f"broker {self.name} to be {role}",
                          describe=lambda: f"last status: {self.status()}")

    @property
    def tcp_url(self) -> str:
        return self.openwire_url

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)


def _accepts(host: str, port: int, broker) -> bool:
    assert broker.alive(), f"broker {broker.name} exited:\n{broker.log_tail(40)}"
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class ActiveMQ:
    """An Apache ActiveMQ Classic 5.17 broker (Debian's package) in its own
    directory, with one OpenWire connector on a free port of 127.0.0.1.
    Give two of them the same ``kahadb`` directory for a master/slave pair:
    the second waits for the first's lock and opens its port only then."""

    def __init__(self, workdir: Path, name: str, kahadb: Path | None = None):
        self.workdir = workdir
        self.name = name
        self.kahadb = kahadb or workdir / "data" / "kahadb"
        self.host = "127.0.0.1"
        self.openwire_port = 0
        self.port = 0  # STOMP, as a conftest Broker's
        self.proc: subprocess.Popen | None = None
        self.log_path = workdir / "activemq.log"

    def spawn(self) -> "ActiveMQ":
        if not (AMQ_HOME / "bin" / "activemq.jar").exists():
            pytest.skip(f"{AMQ_HOME}/bin/activemq.jar not found (Debian: apt-get install activemq)")
        conf = self.workdir / "conf"
        conf.mkdir(parents=True, exist_ok=True)
        (self.workdir / "data").mkdir(exist_ok=True)
        shutil.copy(JAVA_DIR / "activemq.xml", conf / "activemq.xml")
        shutil.copy(REPO / "bench" / "activemq-log4j.properties", conf / "log4j.properties")
        self.openwire_port = _free_port()
        self.port = _free_port()
        d = self.workdir
        # The module flags are those Debian's /usr/bin/activemq passes (as
        # bench/compare.sh); the -D directories are all inside workdir.
        cmd = ["java", "-Xms32m", "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
               "--add-reads=java.xml=java.logging",
               "--add-opens", "java.base/java.security=ALL-UNNAMED",
               "--add-opens", "java.base/java.net=ALL-UNNAMED",
               "--add-opens", "java.base/java.lang=ALL-UNNAMED",
               "--add-opens", "java.base/java.util=ALL-UNNAMED",
               "--add-opens", "java.naming/javax.naming.spi=ALL-UNNAMED",
               "--add-opens", "java.base/java.util.concurrent=ALL-UNNAMED",
               "--add-opens", "java.base/java.util.concurrent.atomic=ALL-UNNAMED",
               f"-Dactivemq.classpath={conf}", f"-Dactivemq.home={AMQ_HOME}",
               f"-Dactivemq.base={d}", f"-Dactivemq.conf={conf}", f"-Dactivemq.data={d / 'data'}",
               f"-Dhalyard.test.kahadb={self.kahadb}",
               f"-Dhalyard.test.openwire.port={self.openwire_port}",
               f"-Dhalyard.test.stomp.port={self.port}",
               "-jar", str(AMQ_HOME / "bin" / "activemq.jar"), "start",
               f"xbean:file:{conf / 'activemq.xml'}"]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, cwd=d, stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError as e:
            return f"(no log: {e})"

    def wait_openwire(self, timeout: float = 60) -> "ActiveMQ":
        wait_until(lambda: _accepts(self.host, self.openwire_port, self), timeout,
                   f"ActiveMQ {self.name} OpenWire port {self.openwire_port}",
                   describe=lambda: self.log_tail(20), interval=0.1)
        return self

    def wait_slave(self, timeout: float = 60) -> "ActiveMQ":
        """Waits until this broker reports waiting for the store's lock."""
        def check():
            assert self.alive(), f"ActiveMQ {self.name} exited:\n{self.log_tail()}"
            return "slave mode" in self.log_path.read_text(errors="replace")
        wait_until(check, timeout, f"ActiveMQ {self.name} to wait as a slave",
                   describe=lambda: self.log_tail(10), interval=0.1)
        return self

    @property
    def tcp_url(self) -> str:
        return f"tcp://{self.host}:{self.openwire_port}"

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def failover_url(*tcp_urls: str) -> str:
    """The failover URL both failover programs get: brokers in the given
    order (randomize=false), quick reconnects, and a bound on the attempts so
    a broken takeover fails the test instead of hanging it."""
    return (f"failover:({','.join(tcp_urls)})?randomize=false&initialReconnectDelay=50"
            "&maxReconnectDelay=500&useExponentialBackOff=true&maxReconnectAttempts=120"
            "&startupMaxReconnectAttempts=20")


def wait_for(pred, timeout: float, what: str, describe=None):
    return wait_until(pred, timeout, what, describe=describe, interval=0.05)


__all__ = [
    "AGAINST_ACTIVEMQ", "ACTIVEMQ_SKIP_REASON", "ActiveMQ", "JavaRun", "OpenwireHalyard",
    "failover_url", "halyard_has_openwire", "java_classpath", "require_openwire", "run_java",
    "wait_for",
]
