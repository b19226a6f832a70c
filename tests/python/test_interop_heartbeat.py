"""Heart-beats and connection timeouts, with stomp.py and with raw sockets."""

from __future__ import annotations

import time

import pytest

FAST_HEARTBEATS = {"heartbeat": {"min-send-ms": 100, "min-receive-ms": 100}}
IDLE_SECONDS = 3.0


@pytest.mark.broker_config(FAST_HEARTBEATS)
@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_stomp_py_heartbeats_keep_an_idle_connection_alive(stomp_connect, broker, version):
    """stomp.py with heartbeats=(500,500): the broker offers 100,100, so both
    directions run at 500 ms. Idle for several intervals, neither side may
    time the other out, and stomp.py must see the broker's heart-beats."""
    c = stomp_connect(version, heartbeats=(500, 500))
    assert c.connected_frame.headers["heart-beat"] == "100,100"
    other = stomp_connect(version)
    c.subscribe("/queue/hb")
    # The one wait here that is meant to run out: the connection must stay
    # up for IDLE_SECONDS (6 heart-beat intervals, 3 broker grace periods).
    closed = c.listener.disconnected.wait(IDLE_SECONDS)
    assert not closed, "connection closed while idle with heart-beats on:\n" + broker.log_tail(20)
    assert not c.listener.heartbeat_timeout.is_set(), "stomp.py timed out the broker's heart-beats"
    assert c.listener.heartbeats >= 2, f"stomp.py saw only {c.listener.heartbeats} heart-beats"
    c.errors.assert_empty()
    other.send("/queue/hb", "still here", receipt=True)
    assert c.next_message().body == "still here"
    c.disconnect()


@pytest.mark.broker_config(FAST_HEARTBEATS)
@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_silent_client_is_disconnected(raw_stomp, broker, version):
    """A client that promises heart-beats every 100 ms and then says nothing
    gets an ERROR and is disconnected (grace factor 2: after ~200 ms)."""
    s = raw_stomp()
    s.send_frame("CONNECT", {"accept-version": version, "host": "localhost", "heart-beat": "100,100"})
    cmd, h, _ = s.read_frame()
    assert cmd == "CONNECTED"
    assert h["heart-beat"] == "100,100"
    start = time.monotonic()
    frame = s.read_frame(timeout=5)
    elapsed = time.monotonic() - start
    assert frame is not None, "connection closed without an ERROR frame"
    cmd, h, body = frame
    assert cmd == "ERROR", (cmd, h, body)
    assert "heart-beat" in h["message"], h
    s.wait_closed(timeout=5)
    assert 0.1 <= elapsed <= 3.0, f"disconnected after {elapsed:.3f}s"


@pytest.mark.broker_config(FAST_HEARTBEATS)
def test_client_that_sends_heartbeats_stays_connected(raw_stomp, broker):
    """The same raw client, now sending an EOL every 50 ms for a second,
    stays connected and receives the broker's heart-beats."""
    s = raw_stomp()
    s.send_frame("CONNECT", {"accept-version": "1.2", "host": "localhost", "heart-beat": "100,100"})
    cmd, _, _ = s.read_frame()
    assert cmd == "CONNECTED"
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        s.sock.sendall(b"\n")
        time.sleep(0.05)  # the heart-beat period, not a wait for an event
    s.send_frame("DISCONNECT", {"receipt": "bye"})
    cmd, h, _ = s.read_frame()
    assert (cmd, h.get("receipt-id")) == ("RECEIPT", "bye"), (cmd, h)
    assert s.heartbeats_received >= 2, f"only {s.heartbeats_received} heart-beats from the broker"
    s.wait_closed()


@pytest.mark.broker_config({"timeouts": {"connect-ms": 300}})
def test_connection_without_connect_frame_times_out(raw_stomp, broker):
    s = raw_stomp()
    frame = s.read_frame(timeout=5)
    assert frame is not None, "closed without an ERROR frame"
    cmd, h, _ = frame
    assert cmd == "ERROR"
    assert "CONNECT" in h["message"], h
    s.wait_closed()


def test_heartbeats_not_negotiated_in_stomp10(stomp_connect, broker):
    c = stomp_connect("1.0")
    assert "heart-beat" not in c.connected_frame.headers
    c.send("/queue/x", "y", receipt=True)
    c.disconnect()
