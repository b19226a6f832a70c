"""STOMP over WebSocket with an independent client: @stomp/stompjs under
node (tests/js/stomp-client.mjs, its packages installed by scripts/test.sh
with `npm ci`), against real halyard brokers.

- a round trip on one broker: receipted sends, client-individual acks,
  heart-beats both ways through the WebSocket bridge;
- a takeover: a master/slave pair on one data directory, stompjs'
  brokerURL rotating between their ws URLs, the master killed with SIGKILL
  mid-stream. Every receipted message arrives, and none twice once its ack
  got a receipt.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from conftest import _BROKERS_KEY, REPO, Broker, wait_until
from test_ha import HaBroker

JS = REPO / "tests" / "js"
SCRIPT = JS / "stomp-client.mjs"
RUN_TIMEOUT = 90.0


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (scripts/test.sh installs Debian's nodejs and npm)")
    if not (JS / "node_modules" / "@stomp" / "stompjs").is_dir():
        pytest.fail(f"the JavaScript test clients are not installed: run `npm ci` in {JS}", pytrace=False)
    return node


class NodeClient:
    """The node script, its output read line by line on a thread."""

    def __init__(self, *args: str):
        self.proc = subprocess.Popen(
            [_node(), str(SCRIPT), *args],
            cwd=JS,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self.receipted = 0
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.strip()
            self.lines.append(line)
            if line.startswith("receipted "):
                self.receipted = int(line.split()[1])

    def result(self) -> dict:
        """Waits for the script to end; its summary."""
        try:
            code = self.proc.wait(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"the node client did not finish in {RUN_TIMEOUT}s; last output: {self.lines[-5:]}")
        self._reader.join(timeout=5)
        err = self.proc.stderr.read() if self.proc.stderr else ""
        summaries = [line for line in self.lines if line.startswith("{")]
        assert summaries, f"no summary from the node client (exit {code}): {err}\n{self.lines[-5:]}"
        summary = json.loads(summaries[-1])
        summary["exit"] = code
        summary["stderr"] = err
        return summary


def test_stompjs_round_trip(broker: Broker):
    count = 200
    summary = NodeClient("roundtrip", broker.ws_url(), "/queue/js-round-trip", str(count)).result()
    assert summary["exit"] == 0, summary
    assert summary["distinct"] == count and summary["outOfOrder"] == 0, summary
    assert any("subprotocol v12.stomp" in e for e in summary["events"]), summary["events"]
    broker.wait_stats("/queue/js-round-trip", enqueued=count, acked=count, ready=0, inflight=0)


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture
def shared_pair(halyard_bin: Path, tmp_path: Path, request: pytest.FixtureRequest):
    """(master, slave) on one data directory."""
    store = ["--data-dir", str(tmp_path / "shared-data")]
    started: list[HaBroker] = request.node.stash.setdefault(_BROKERS_KEY, [])
    master = HaBroker(halyard_bin, tmp_path / "a", "a", store)
    started.append(master)
    master.spawn().wait_role("master")
    slave = HaBroker(halyard_bin, tmp_path / "b", "b", store)
    started.append(slave)
    slave.spawn().wait_role("slave")
    yield master, slave
    for b in started:
        if b.alive():
            b.proc.kill()
            b.proc.wait(timeout=10)


def test_stompjs_rides_a_kill_9_takeover(shared_pair):
    master, slave = shared_pair
    wait_until(lambda: _port_open(master.ws_port), 10, "the master's ws port")
    assert not _port_open(slave.ws_port), "a slave keeps its ws port closed"
    count, kill_after = 300, 100
    queue = "/queue/js-failover"
    client = NodeClient("failover", f"{master.ws_url()},{slave.ws_url()}", queue, str(count))
    wait_until(lambda: client.receipted >= kill_after or client.proc.poll() is not None, 30,
               f"{kill_after} receipted sends", describe=lambda: str(client.lines[-3:]))
    assert client.proc.poll() is None, client.result()
    master.kill9()
    summary = client.result()
    print({k: v for k, v in summary.items() if k != "events"})
    assert summary["exit"] == 0, json.dumps(summary, indent=1)
    assert summary["distinct"] == count, summary
    assert summary["unexpectedDuplicates"] == 0, summary
    assert summary["producerConnects"] >= 2 and summary["consumerConnects"] >= 2, summary
    assert any(slave.ws_url() in e for e in summary["events"]), summary["events"]
    slave.wait_role("master")
    slave.wait_stats(queue, ready=0, inflight=0)
