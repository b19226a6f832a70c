"""stomp.py against halyard: connecting, version negotiation, sending and
receiving on queues and topics, header escaping and binary bodies.

Each test runs its own broker (see conftest.py). "Nothing else arrived"
checks never sleep: they send a marker after the thing that must not be
delivered and check that the marker is the next message, which works because
one producer's messages reach a destination in the order it sent them.
"""

from __future__ import annotations

import os
import time

import pytest

from conftest import EVENT_TIMEOUT, wait_until

VERSIONS = ["1.0", "1.1", "1.2"]
ESCAPING_VERSIONS = ["1.1", "1.2"]


# --------------------------------------------------------------------------
# Connecting


@pytest.mark.parametrize("version", VERSIONS)
def test_connect_and_disconnect_with_receipt(stomp_connect, broker, version):
    """CONNECTED names the version stomp.py asked for, the server and a
    session; DISCONNECT with a receipt gets its RECEIPT, then the broker
    closes the connection."""
    c = stomp_connect(version)
    f = c.connected_frame
    assert f.cmd == "CONNECTED"
    assert f.headers["version"] == version
    assert f.headers["server"].startswith("halyard/")
    assert f.headers.get("session")
    if version == "1.0":
        assert "heart-beat" not in f.headers
    else:
        # Broker defaults: heartbeat min-send-ms / min-receive-ms = 1000.
        assert f.headers["heart-beat"] == "1000,1000"
    receipt = c.disconnect()
    assert receipt.cmd == "RECEIPT"
    assert not c.conn.is_connected()
    c.errors.assert_empty()


def test_default_connection_class(stomp_connect):
    """stomp.Connection, the class most stomp.py users reach for (it speaks
    1.1 in stomp.py 9), connects, sends and receives."""
    import stomp

    c = stomp_connect("1.1", connection_class=stomp.Connection)
    assert c.connected_frame.headers["version"] == c.conn.version
    c.subscribe("/queue/default", id="d")
    c.send("/queue/default", "hi", receipt=True)
    assert c.next_message().body == "hi"
    c.disconnect()


def test_sessions_are_distinct_and_credentials_accepted(stomp_connect):
    """Two connections get distinct sessions; login/passcode headers do not
    stop a connection to a broker without users (it ignores them, as
    ActiveMQ without an authentication plugin does)."""
    a = stomp_connect("1.2", login="guest", passcode="pa:ss\\word")
    b = stomp_connect("1.1", login="guest", passcode="guest")
    assert a.connected_frame.headers["session"] != b.connected_frame.headers["session"]


@pytest.mark.parametrize(
    "command,offered,expected",
    [
        ("CONNECT", "1.0,1.1,1.2", "1.2"),
        ("STOMP", "1.2", "1.2"),
        ("CONNECT", "1.1,1.0", "1.1"),
        ("CONNECT", "1.0", "1.0"),
        ("CONNECT", None, "1.0"),
        ("CONNECT", "1.1,9.9", "1.1"),
    ],
)
def test_version_negotiation(raw_stomp, command, offered, expected):
    """The broker picks the highest version both sides support (stomp.py
    always offers exactly one, so the lists are sent raw)."""
    s = raw_stomp()
    headers = {"host": "localhost"}
    if offered is not None:
        headers["accept-version"] = offered
    s.send_frame(command, headers)
    cmd, h, _ = s.read_frame()
    assert cmd == "CONNECTED", h
    assert h["version"] == expected


def test_unsupported_version_is_refused(raw_stomp):
    s = raw_stomp()
    s.send_frame("CONNECT", {"accept-version": "2.0,3.1", "host": "localhost"})
    cmd, h, body = s.read_frame()
    assert cmd == "ERROR"
    assert h.get("message")
    assert h.get("version") == "1.0,1.1,1.2"
    s.wait_closed()


# --------------------------------------------------------------------------
# Queues


@pytest.mark.parametrize("version", VERSIONS)
def test_queue_send_receive_keeps_headers(stomp_connect, version):
    prod, cons = stomp_connect(version), stomp_connect(version)
    cons.subscribe("/queue/q1", id="sub-1")
    prod.send(
        "/queue/q1",
        "hello",
        receipt=True,
        **{
            "x-custom": "v1",
            "correlation-id": "c-42",
            "content-type": "text/plain",
            "reply-to": "/queue/replies",
        },
    )
    m = cons.next_message()
    h = m.headers
    assert m.body == "hello"
    assert h["destination"] == "/queue/q1"
    assert h["subscription"] == "sub-1"
    assert h["message-id"]
    assert h["x-custom"] == "v1"
    assert h["correlation-id"] == "c-42"
    assert h["content-type"] == "text/plain"
    assert h["reply-to"] == "/queue/replies"
    assert h["content-length"] == "5"
    assert int(h["timestamp"]) > 0
    # Frame-level headers are not message headers.
    assert "receipt" not in h
    assert "redelivered" not in h
    # auto-ack subscriptions get no ack header.
    assert "ack" not in h


@pytest.mark.parametrize("version", VERSIONS)
def test_queue_keeps_order_and_empty_bodies(stomp_connect, version):
    prod, cons = stomp_connect(version), stomp_connect(version)
    cons.subscribe("/queue/order")
    bodies = [f"m{i}" for i in range(20)] + [""]
    for b in bodies:
        prod.send("/queue/order", b)
    got = [m.body for m in cons.take_messages(len(bodies))]
    assert got == bodies


def test_queue_messages_wait_for_a_consumer(stomp_connect, broker):
    prod = stomp_connect()
    for i in range(3):
        prod.send("/queue/later", f"m{i}")
    prod.send("/queue/later", "m3", receipt=True)
    broker.wait_stats("/queue/later", ready=4, consumers=0, enqueued=4)
    prod.disconnect()
    cons = stomp_connect("1.1")
    cons.subscribe("/queue/later")
    assert [m.body for m in cons.take_messages(4)] == ["m0", "m1", "m2", "m3"]


def test_queue_competing_consumers_round_robin(stomp_connect, broker):
    a, b = stomp_connect("1.2"), stomp_connect("1.1")
    a.subscribe("/queue/work", id="a")
    b.subscribe("/queue/work", id="b")
    prod = stomp_connect("1.0")
    for i in range(10):
        prod.send("/queue/work", f"job{i}")
    broker.wait_stats("/queue/work", enqueued=10, delivered=10, ready=0, consumers=2)
    got_a = [m.body for m in a.take_messages(5)]
    got_b = [m.body for m in b.take_messages(5)]
    assert sorted(got_a + got_b) == sorted(f"job{i}" for i in range(10))
    # Round robin: consumers alternate, each keeping the producer's order.
    assert got_a == [f"job{i}" for i in range(0, 10, 2)] or got_a == [f"job{i}" for i in range(1, 10, 2)]
    a.messages.assert_empty()
    b.messages.assert_empty()


def test_prefetch_limits_unacknowledged_deliveries(stomp_connect):
    """activemq.prefetchSize:1 with client-individual: the consumer holds one
    unacknowledged message, so a second consumer gets all the rest."""
    slow = stomp_connect()
    slow.subscribe("/queue/pf", id="slow", ack="client-individual", **{"activemq.prefetchSize": "1"})
    prod = stomp_connect()
    for i in range(5):
        prod.send("/queue/pf", f"m{i}", receipt=(i == 4))
    first = slow.next_message()
    assert first.body == "m0"
    fast = stomp_connect()
    fast.subscribe("/queue/pf", id="fast")
    assert [m.body for m in fast.take_messages(4)] == ["m1", "m2", "m3", "m4"]
    slow.messages.assert_empty()
    slow.ack(first)
    prod.send("/queue/pf", "m5")
    prod.send("/queue/pf", "m6", receipt=True)
    # With credit back, slow takes part in the round robin again.
    got = [slow.next_message().body, fast.next_message().body]
    assert sorted(got) == ["m5", "m6"]


def test_priority_orders_waiting_messages(stomp_connect):
    prod = stomp_connect()
    for body, prio in [("low", 1), ("high", 9), ("default", None), ("mid", 6)]:
        headers = {} if prio is None else {"priority": str(prio)}
        prod.send("/queue/prio", body, **headers)
    prod.send("/queue/prio", "low2", receipt=True, priority="1")
    cons = stomp_connect()
    cons.subscribe("/queue/prio")
    assert [m.body for m in cons.take_messages(5)] == ["high", "mid", "default", "low", "low2"]


def test_expired_messages_are_not_delivered(stomp_connect):
    prod = stomp_connect()
    now_ms = int(time.time() * 1000)
    prod.send("/queue/exp", "stale", expires=str(now_ms - 60_000))
    prod.send("/queue/exp", "fresh", expires=str(now_ms + 600_000))
    prod.send("/queue/exp", "forever", receipt=True, expires="0")
    cons = stomp_connect()
    cons.subscribe("/queue/exp")
    assert [m.body for m in cons.take_messages(2)] == ["fresh", "forever"]
    prod.send("/queue/exp", "marker", receipt=True)
    assert cons.next_message().body == "marker"


# --------------------------------------------------------------------------
# Header escaping and bodies


def _tricky_value(version: str) -> str:
    v = "colon:here and\nnewline, back\\slash, ünïcødé ✓ 日本語 🚀 a:b:c"
    if version == "1.2":
        v += " carriage\rreturn"  # \r is only escaped from 1.2 on
    return v


@pytest.mark.parametrize("version", ESCAPING_VERSIONS)
def test_header_escaping_round_trip(stomp_connect, version):
    """stomp.py escapes ':' '\\n' '\\\\' (and '\\r' in 1.2) in header values;
    the broker must decode them and escape them again on the MESSAGE."""
    prod, cons = stomp_connect(version), stomp_connect(version)
    cons.subscribe("/queue/esc")
    value = _tricky_value(version)
    prod.send("/queue/esc", "body ✓", receipt=True, **{"x-tricky": value, "x-ünï": "ç"})
    m = cons.next_message()
    assert m.headers["x-tricky"] == value
    assert m.headers["x-ünï"] == "ç"
    assert m.body == "body ✓"
    assert m.headers["content-length"] == str(len("body ✓".encode()))


@pytest.mark.parametrize("producer,consumer", [("1.2", "1.1"), ("1.1", "1.2"), ("1.0", "1.2"), ("1.2", "1.0")])
def test_header_values_across_versions(stomp_connect, producer, consumer):
    """A value survives a change of protocol version between producer and
    consumer. 1.0 has no escaping, so only ':' (legal raw in a 1.0 value)
    is used where 1.0 is involved."""
    prod, cons = stomp_connect(producer), stomp_connect(consumer)
    cons.subscribe("/queue/xver", id="x")
    if "1.0" in (producer, consumer):
        value = "urn:example:ünï:1"
    else:
        value = "a:b\nc\\d ✓"
    prod.send("/queue/xver", "x", receipt=True, **{"x-value": value})
    assert cons.next_message().headers["x-value"] == value


@pytest.mark.parametrize("version", VERSIONS)
def test_binary_body_with_nul_bytes(stomp_connect, version):
    """content-length frames carry NULs; the frame after a binary one still
    parses (framing is not thrown off)."""
    prod = stomp_connect(version)
    cons = stomp_connect(version, auto_decode=False)
    cons.subscribe("/queue/bin")
    body1 = bytes(range(256)) * 4 + b"\x00\x00\x00"
    body2 = b"\x00"
    prod.send("/queue/bin", body1, **{"content-type": "application/octet-stream"})
    prod.send("/queue/bin", body2)
    prod.send("/queue/bin", "after", receipt=True)
    m1, m2, m3 = cons.take_messages(3)
    assert m1.body == body1
    assert m1.headers["content-length"] == str(len(body1))
    assert m1.headers["content-type"] == "application/octet-stream"
    assert m2.body == body2
    assert m3.body == b"after"


# --------------------------------------------------------------------------
# Topics and temporary queues


def test_topic_fan_out_to_every_subscriber(stomp_connect, broker):
    subs = [stomp_connect(v) for v in ("1.0", "1.1", "1.2", "1.2")]
    for i, s in enumerate(subs):
        s.subscribe("/topic/news", id=f"t{i}")
    prod = stomp_connect()
    for i in range(5):
        prod.send("/topic/news", f"n{i}", seq=str(i))
    for i, s in enumerate(subs):
        ms = s.take_messages(5)
        assert [m.body for m in ms] == [f"n{i}" for i in range(5)]
        assert [m.headers["seq"] for m in ms] == [str(i) for i in range(5)]
        assert all(m.headers["destination"] == "/topic/news" for m in ms)
        assert all(m.headers["subscription"] == f"t{i}" for m in ms)
    # Each subscriber got its own copy, distinct from the others only by subscription.
    prod.send("/topic/news", "end", receipt=True)
    for s in subs:
        assert s.next_message().body == "end"
        s.messages.assert_empty()


def test_topic_drops_messages_nobody_subscribed_to(stomp_connect):
    prod = stomp_connect()
    prod.send("/topic/void", "lost", receipt=True)
    sub = stomp_connect()
    sub.subscribe("/topic/void")
    prod.send("/topic/void", "seen", receipt=True)
    assert sub.next_message().body == "seen"
    sub.messages.assert_empty()


def test_topic_unsubscribe_stops_delivery(stomp_connect):
    a, b = stomp_connect(), stomp_connect()
    a.subscribe("/topic/t", id="a")
    b.subscribe("/topic/t", id="b")
    r = a.new_receipt()
    a.conn.unsubscribe("a", headers={"receipt": r})
    a.wait_receipt(r)
    prod = stomp_connect()
    prod.send("/topic/t", "only-b", receipt=True)
    assert b.next_message().body == "only-b"
    # a's unsubscribe was acknowledged before the send: nothing for a. A
    # second subscription on a, made afterwards, sees the next message first.
    a.subscribe("/topic/t", id="a2")
    prod.send("/topic/t", "both", receipt=True)
    assert a.next_message().body == "both"


def test_stomp10_subscribe_without_id_and_unsubscribe_by_destination(stomp_connect):
    c = stomp_connect("1.0")
    c.subscribe("/queue/ten", id=None)
    prod = stomp_connect("1.0")
    prod.send("/queue/ten", "one", receipt=True)
    m = c.next_message()
    assert m.body == "one"
    assert m.headers["subscription"] == "/queue/ten"  # the destination stands in for the id
    r = c.new_receipt()
    c.conn.unsubscribe(destination="/queue/ten", headers={"receipt": r})
    c.wait_receipt(r)
    c.errors.assert_empty()


def test_temp_queue_request_reply(stomp_connect):
    """reply-to naming the requester's /temp-queue/ is rewritten so another
    connection can answer it."""
    requester, responder = stomp_connect(), stomp_connect("1.1")
    requester.subscribe("/temp-queue/replies", id="replies")
    responder.subscribe("/queue/requests", id="req")
    requester.send("/queue/requests", "ping", **{"reply-to": "/temp-queue/replies", "correlation-id": "7"})
    req = responder.next_message()
    reply_to = req.headers["reply-to"]
    assert reply_to.startswith("/remote-temp-queue/"), reply_to
    responder.send(reply_to, "pong", receipt=True, **{"correlation-id": req.headers["correlation-id"]})
    rep = requester.next_message()
    assert rep.body == "pong"
    assert rep.headers["correlation-id"] == "7"
    assert rep.headers["destination"] == "/temp-queue/replies"


def test_reply_to_a_vanished_temp_queue_is_dropped_quietly(stomp_connect, broker):
    requester, responder = stomp_connect(), stomp_connect()
    requester.subscribe("/temp-queue/gone", id="replies")
    responder.subscribe("/queue/requests2", id="req")
    requester.send("/queue/requests2", "ping", **{"reply-to": "/temp-queue/gone"})
    reply_to = responder.next_message().headers["reply-to"]
    requester.disconnect()
    responder.send(reply_to, "pong", receipt=True)  # receipted, not an ERROR
    responder.send("/queue/requests2", "still connected", receipt=True)
    assert responder.next_message().body == "still connected"
    responder.errors.assert_empty()


# --------------------------------------------------------------------------
# Volume: large frames, bursts, flow control


@pytest.mark.parametrize("version", ["1.0", "1.2"])
def test_large_bodies(stomp_connect, version):
    prod = stomp_connect(version)
    cons = stomp_connect(version, auto_decode=False)
    cons.subscribe("/queue/big")
    text = ("0123456789abcdef" * 65536)  # 1 MiB
    blob = bytes(range(256)) * 8192  # 2 MiB, NULs included
    prod.send("/queue/big", text)
    prod.send("/queue/big", blob, receipt=True)
    m1, m2 = cons.take_messages(2)
    assert m1.body == text.encode()
    assert m2.body == blob


def test_topic_delivers_16_mib_messages_whole_to_two_subscribers(stomp_connect, broker):
    """With the default configuration (limits.max-body-bytes is ActiveMQ's
    100 MiB), two 16 MiB messages, one persistent and one not, reach both
    subscribers of a topic byte for byte; while both hold them
    unacknowledged the broker's memory budget counts each body once."""
    subs = [stomp_connect("1.2", auto_decode=False) for _ in range(2)]
    for i, s in enumerate(subs):
        s.subscribe("/topic/large", id=f"l{i}", ack="client-individual")
    prod = stomp_connect("1.2")
    bodies = [os.urandom(16 << 20), os.urandom(16 << 20)]
    prod.send("/topic/large", bodies[0], receipt=True, persistent="true")
    prod.send("/topic/large", bodies[1], receipt=True, persistent="false")
    received = [s.take_messages(2, timeout=30) for s in subs]
    for got in received:
        assert [len(m.body) for m in got] == [len(b) for b in bodies]
        assert [m.body == b for m, b in zip(got, bodies)] == [True, True]
        assert [m.headers["persistent"] for m in got] == ["true", "false"]
    held = broker.http_json("/api/status")["memory_bytes"]
    assert 32 << 20 <= held < 33 << 20, f"{held} bytes held for two 16 MiB messages"
    for s, got in zip(subs, received):
        for m in got:
            s.ack(m)
    wait_until(
        lambda: broker.http_json("/api/status")["memory_bytes"] == 0,
        EVENT_TIMEOUT,
        "memory_bytes back to 0 once both subscribers acknowledged",
    )


def test_burst_of_mixed_frames(stomp_connect, broker):
    """Many small text and binary frames back to back: stomp.py's parser sees
    several frames per read and frames split across reads."""
    prod = stomp_connect("1.2")
    cons = stomp_connect("1.1", auto_decode=False)
    cons.subscribe("/queue/burst", id="b")
    expected = []
    for i in range(600):
        body = f"t{i}".encode() if i % 3 else bytes([0, i % 256, 0]) * (i % 50 + 1)
        expected.append(body)
        prod.send("/queue/burst", body, n=str(i))
    prod.send("/queue/burst", b"end", receipt=True)
    got = cons.take_messages(601)
    assert [m.body for m in got[:-1]] == expected
    assert [m.headers["n"] for m in got[:-1]] == [str(i) for i in range(600)]
    assert got[-1].body == b"end"


@pytest.mark.broker_config({"limits": {"destination-memory-bytes": 65536}})
def test_flow_control_holds_producer_without_losing_messages(stomp_connect, broker):
    """A queue over limits.destination-memory-bytes stops accepting; the
    producer's receipts wait, and everything arrives once a consumer drains it."""
    prod = stomp_connect()
    body = "x" * 4096
    for i in range(150):
        prod.conn.send("/queue/full", body, headers={"n": str(i)})
    last = prod.new_receipt()
    prod.conn.send("/queue/full", "last", headers={"receipt": last})
    stats = broker.wait_stats_where(
        "/queue/full", lambda s: s["enqueued"] >= 12, "enqueued >= 12"
    )
    # Nothing drains the queue yet, so it can hold only ~64 KiB of 4 KiB
    # messages (plus the one that crosses the limit).
    assert stats["ready"] <= 17, stats
    cons = stomp_connect()
    cons.subscribe("/queue/full", ack="client-individual", **{"activemq.prefetchSize": "10"})
    got = []
    for _ in range(151):
        m = cons.next_message()
        got.append(m.headers.get("n", m.body))
        cons.ack(m, receipt=False)
    assert got == [str(i) for i in range(150)] + ["last"]
    prod.wait_receipt(last)
