"""stomp.py against halyard: ActiveMQ's destination and dispatch semantics
over STOMP (issue 14) — queue browsing, wildcards, composite destinations,
virtual topics, message groups, exclusive consumers, consumer priority,
no-local, refused ActiveMQ headers and temporary topics.

Every test uses its own broker (conftest.py) and its own destination names.
Waits are for events (a RECEIPT, a MESSAGE, a counter in /api/destinations)
with deadlines; where a test must show that nothing *more* arrives it
either sends a marker that must be next, or waits a short quiet period.
"""

from __future__ import annotations

import socket
import time
import uuid

import pytest

from conftest import EVENT_TIMEOUT, RawStomp, wait_until

# How long "nothing more arrives" is watched for, where no marker can show it.
QUIET = 0.3
GROUP_FIRST = "JMSXGroupFirstForConsumer"


def uniq(prefix: str) -> str:
    """A destination name no other test uses (no '.', '*', '>' or ',' in the
    random part, so it is one wildcard element)."""
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def quiet(*clients, seconds: float = QUIET) -> None:
    """Nothing more reaches any of `clients` for a short while."""
    time.sleep(seconds)
    for c in clients:
        c.messages.assert_empty()


def assert_fatal(client, *, mentions: str | list[str]):
    """The broker answered with an ERROR mentioning `mentions` and closed."""
    err = client.wait_error()
    assert err.cmd == "ERROR"
    msg = err.headers.get("message", "")
    for m in [mentions] if isinstance(mentions, str) else mentions:
        assert m.lower() in msg.lower(), err.headers
    client.wait_disconnected()
    assert not client.conn.is_connected()
    return err


def take_for(client, sub: str, n: int, timeout: float = EVENT_TIMEOUT) -> list:
    """The next `n` MESSAGEs of subscription `sub`."""
    deadline = time.monotonic() + timeout
    return [
        client.messages.take(
            lambda f: f.headers.get("subscription") == sub,
            max(0.0, deadline - time.monotonic()),
            f"MESSAGE {i + 1} of {n} for subscription {sub}",
        )
        for i in range(n)
    ]


def wait_total(clients, n: int, what: str) -> None:
    """Waits until `clients` hold `n` messages between them."""
    wait_until(lambda: sum(len(c.messages) for c in clients) >= n, EVENT_TIMEOUT, what,
               describe=lambda: f"have {[len(c.messages) for c in clients]}")


def first_flag(m) -> bool:
    return m.headers.get(GROUP_FIRST) == "true"


# --------------------------------------------------------------------------
# Queue browsing


def browse(client, queue: str, sub: str = "b", **headers) -> tuple[list, object]:
    """Subscribes a browser and collects what it is shown up to its end
    marker; returns (messages, end marker)."""
    client.subscribe(queue, id=sub, browser="true", **headers)
    shown = []
    while True:
        m = client.messages.take(lambda f: f.headers.get("subscription") == sub,
                                 what=f"browse of {queue} (shown {len(shown)} so far)")
        if m.headers.get("browser") == "end":
            return shown, m
        shown.append(m)


def assert_browse_end(end, queue: str, sub: str) -> None:
    """ActiveMQ's end-of-browse MESSAGE: message-id 0, browser:end, no body."""
    h = end.headers
    assert end.cmd == "MESSAGE"
    assert h["subscription"] == sub, h
    assert h["destination"] == queue, h
    assert h["message-id"] == "0", h
    assert h["browser"] == "end", h
    assert "ack" not in h, h
    assert end.body in ("", b""), end.body


def assert_consumable(stomp_connect, broker, queue: str, bodies: list, redelivered=()) -> None:
    """The queue holds exactly `bodies` (in that order) for a new consumer;
    only those in `redelivered` were delivered before."""
    broker.wait_stats(queue, ready=len(bodies), inflight=0)
    c = stomp_connect("1.2")
    c.subscribe(queue, id="check", ack="client-individual")
    got = c.take_messages(len(bodies))
    assert [m.body for m in got] == bodies
    for m in got:
        if m.body in redelivered:
            assert m.headers.get("redelivered") == "true", m.headers
        else:
            # Browsing is not a delivery: it must not count as one.
            assert "redelivered" not in m.headers, m.headers
            assert "delivery-count" not in m.headers, m.headers
    for m in got:
        c.ack(m, receipt=False)
    broker.wait_stats(queue, ready=0, inflight=0)
    quiet(c)


@pytest.mark.parametrize("ack", ["auto", "client-individual"])
@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_browse_shows_ready_and_inflight_without_consuming(stomp_connect, broker, version, ack):
    """A browser sees a snapshot of the queue — ready messages and those in
    flight to a consumer — then browser:end; it takes nothing, whatever its
    ack mode, and a message sent after it attached is not in its snapshot."""
    q = f"/queue/{uniq('browse')}"
    prod = stomp_connect()
    bodies = [f"m{i}" for i in range(6)]
    for i, b in enumerate(bodies):
        prod.send(q, b, receipt=(i == 5), persistent="true", n=str(i))
    holder = stomp_connect()
    holder.subscribe(q, id="h", ack="client-individual", **{"activemq.prefetchSize": "2"})
    held = holder.take_messages(2)
    assert [m.body for m in held] == ["m0", "m1"]
    broker.wait_stats(q, ready=4, inflight=2)

    b = stomp_connect(version)
    b.subscribe(q, id="b", ack=ack, browser="true")
    prod.send(q, "late", receipt=True)  # after the browser attached
    shown = []
    while True:
        m = b.messages.take(lambda f: f.headers.get("subscription") == "b")
        if m.headers.get("browser") == "end":
            end = m
            break
        shown.append(m)
    assert_browse_end(end, q, "b")
    assert sorted(m.body for m in shown) == bodies, [m.body for m in shown]
    ready_order = [m.body for m in shown if m.body not in ("m0", "m1")]
    assert ready_order == ["m2", "m3", "m4", "m5"]
    for m in shown:
        h = m.headers
        assert "ack" not in h, h  # a browser acknowledges nothing
        assert h["destination"] == q and h["subscription"] == "b", h
        assert h["message-id"] and h["message-id"] != "0", h
        assert h["n"] == m.body[1:]
    quiet(b)  # "late" is not shown, nor anything after the end
    # Nothing moved: the holder still holds two, the rest are ready.
    broker.wait_stats(q, ready=5, inflight=2)
    b.disconnect()
    holder.disconnect()
    assert_consumable(stomp_connect, broker, q, bodies + ["late"], redelivered=("m0", "m1"))
    holder.errors.assert_empty()


def test_browse_empty_queue_shows_only_end(stomp_connect):
    q = f"/queue/{uniq('empty')}"
    c = stomp_connect()
    shown, end = browse(c, q, sub="e")
    assert shown == []
    assert_browse_end(end, q, "e")
    quiet(c)


def test_browse_with_prefetch_one_sees_everything(stomp_connect, broker):
    """A browser's prefetch limits what is in flight to it, not what it is
    shown: with activemq.prefetchSize:1 it still sees all 30 messages."""
    q = f"/queue/{uniq('bpf')}"
    prod = stomp_connect()
    bodies = [f"p{i}" for i in range(30)]
    for i, body in enumerate(bodies):
        prod.send(q, body, receipt=(i == 29))
    c = stomp_connect("1.2")
    shown, end = browse(c, q, ack="client-individual", **{"activemq.prefetchSize": "1"})
    assert [m.body for m in shown] == bodies
    assert_browse_end(end, q, "b")
    # Browse again on the same connection: the same messages are all there.
    again, _ = browse(c, q, sub="b2")
    assert [m.body for m in again] == bodies
    c.disconnect()
    assert_consumable(stomp_connect, broker, q, bodies)


def _small_window_socket(broker) -> RawStomp:
    """A raw STOMP socket with a tiny receive buffer, so the broker cannot
    write ahead much further than the client reads."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(EVENT_TIMEOUT)
    s.connect((broker.host, broker.port))
    raw = RawStomp.__new__(RawStomp)
    raw.sock, raw.buf, raw.closed, raw.heartbeats_received = s, b"", False, 0
    return raw


@pytest.mark.parametrize("how", ["drop", "unsubscribe"])
@pytest.mark.parametrize("ack", ["auto", "client-individual"])
def test_browser_leaving_midway_removes_nothing(stomp_connect, broker, ack, how):
    """A browser that reads one message of a large snapshot and then drops
    its connection, or UNSUBSCRIBEs, leaves every message in the queue, none
    of them counted as delivered. The snapshot is 8 MB, more than the socket
    buffers hold, and the browser's prefetch is 5, so the broker is mid-way
    through it when the browser leaves."""
    q = f"/queue/{uniq('midway')}"
    prod = stomp_connect()
    n, body = 200, "x" * 40_000
    for i in range(n):
        prod.send(q, f"{i:04d}{body}", receipt=(i == n - 1), persistent="true")
    broker.wait_stats(q, ready=n)

    raw = _small_window_socket(broker)
    raw.send_frame("CONNECT", {"accept-version": "1.2", "host": "localhost", "heart-beat": "0,0"})
    cmd, h, _ = raw.read_frame()
    assert cmd == "CONNECTED", h
    raw.send_frame("SUBSCRIBE", {"id": "b", "destination": q, "ack": ack, "browser": "true",
                                 "activemq.prefetchSize": "5"})
    cmd, h, first = raw.read_frame()
    assert cmd == "MESSAGE", h
    assert first.startswith(b"0000"), first[:10]
    assert "ack" not in h, h
    if how == "drop":
        raw.close()  # without DISCONNECT
    else:
        raw.send_frame("UNSUBSCRIBE", {"id": "b", "receipt": "unsub"})
        shown = 1
        while True:
            cmd, h, _ = raw.read_frame()
            if cmd == "RECEIPT":
                assert h["receipt-id"] == "unsub", h
                break
            assert cmd == "MESSAGE" and h.get("browser") != "end", (cmd, h)
            shown += 1
        assert shown < n, "the browser saw the whole snapshot before it unsubscribed"
        broker.wait_stats(q, ready=n, inflight=0)
        # Still connected: the messages stay put while it stays.
        raw.send_frame("DISCONNECT", {"receipt": "bye"})
        cmd, h, _ = raw.read_frame()
        assert (cmd, h.get("receipt-id")) == ("RECEIPT", "bye"), (cmd, h)
        raw.close()

    broker.wait_stats(q, ready=n, inflight=0)
    c = stomp_connect("1.2")
    c.subscribe(q, id="c", ack="client-individual")
    got = c.take_messages(n, timeout=EVENT_TIMEOUT * 2)
    assert [m.body[:4] for m in got] == [f"{i:04d}" for i in range(n)]
    for m in got:
        assert "redelivered" not in m.headers, m.headers
    for m in got[:-1]:
        c.ack(m, receipt=False)
    c.ack(got[-1])
    broker.wait_stats(q, ready=0, inflight=0)


def test_browse_shows_messages_in_delivery_order(stomp_connect, broker):
    """The snapshot is in the order a consumer would receive the messages:
    higher priority first, then arrival."""
    q = f"/queue/{uniq('bord')}"
    prod = stomp_connect()
    for body, prio in [("low", "1"), ("high", "9"), ("mid", "5"), ("high2", "9")]:
        prod.send(q, body, priority=prio)
    prod.send(q, "default", receipt=True)
    c = stomp_connect()
    shown, _ = browse(c, q)
    assert [m.body for m in shown] == ["high", "high2", "mid", "default", "low"]
    c.disconnect()
    assert_consumable(stomp_connect, broker, q, ["high", "high2", "mid", "default", "low"])


def test_browse_does_not_show_expired_messages(stomp_connect, broker):
    """A message whose `expires` has passed is never delivered — to a
    browser neither (ActiveMQ's browse skips expired messages too), even
    before the broker's periodic sweep (destinations.expiry-check-ms,
    5 s by default) has removed it."""
    q = f"/queue/{uniq('bexp')}"
    prod = stomp_connect()
    expires = int(time.time() * 1000) + 300
    prod.send(q, "stale", expires=str(expires))
    prod.send(q, "fresh", receipt=True)
    broker.wait_stats(q, ready=2)
    # Let the first one expire (waiting for time itself to pass).
    time.sleep(max(0.0, expires / 1000 - time.time()) + 0.1)
    c = stomp_connect()
    shown, end = browse(c, q)
    assert [m.body for m in shown] == ["fresh"]
    assert_browse_end(end, q, "b")
    c.disconnect()
    d = stomp_connect()
    d.subscribe(q, id="d")
    assert d.next_message().body == "fresh"
    quiet(d)


ACK_FORMS = [
    ("1.1", "ack"),  # ACK message-id + subscription
    ("1.1", "nack"),
    ("1.2", "ack"),  # ACK id:<message-id> (a browsed message has no ack header)
    ("1.2", "nack"),
    ("1.2", "ack-1.1-form"),  # 1.2 client using message-id + subscription
]


@pytest.mark.parametrize("version,how", ACK_FORMS)
def test_acknowledging_a_browsed_message_is_an_error(stomp_connect, broker, version, how):
    """ACK or NACK naming a browsed message is refused as what it is ("queue
    browser"), and the queue keeps every message."""
    q = f"/queue/{uniq('backs')}"
    prod = stomp_connect()
    for i in range(3):
        prod.send(q, f"k{i}", receipt=(i == 2), persistent="true")
    c = stomp_connect(version)
    shown, _ = browse(c, q, ack="client-individual")
    assert [m.body for m in shown] == ["k0", "k1", "k2"]
    m = shown[1]
    mid = m.headers["message-id"]
    if how == "ack-1.1-form":
        c.conn.send_frame("ACK", {"message-id": mid, "subscription": m.headers["subscription"]})
    elif version == "1.1":
        getattr(c.conn, how)(mid, m.headers["subscription"])
    else:
        getattr(c.conn, how)(mid)
    assert_fatal(c, mentions="queue browser")
    assert_consumable(stomp_connect, broker, q, ["k0", "k1", "k2"])


def test_browsing_a_topic_is_an_error(stomp_connect):
    c = stomp_connect()
    t = f"/topic/{uniq('bt')}"
    c.conn.subscribe(t, "b", headers={"browser": "true"})
    assert_fatal(c, mentions=["browse", t])


# --------------------------------------------------------------------------
# Wildcards


def test_wildcard_topic_subscriptions(stomp_connect):
    """'*' matches one element, '>' the rest (and 'A.>' matches A itself);
    each MESSAGE names the concrete topic it was sent to."""
    root = uniq("W")
    c = stomp_connect()
    c.subscribe(f"/topic/{root}.*.x", id="star-x")
    c.subscribe(f"/topic/{root}.>", id="rest")
    c.subscribe(f"/topic/{root}.*", id="star")
    prod = stomp_connect("1.1")
    sends = [root, f"{root}.a", f"{root}.a.x", f"{root}.b.y", f"{root}.a.b.x", f"Other{root}.a.x", f"{root}x.a"]
    for name in sends:
        prod.send(f"/topic/{name}", name)
    expected = {
        "star-x": [f"{root}.a.x"],
        "rest": [root, f"{root}.a", f"{root}.a.x", f"{root}.b.y", f"{root}.a.b.x"],
        "star": [f"{root}.a"],
    }
    for sub, names in expected.items():
        got = take_for(c, sub, len(names))
        assert [m.body for m in got] == names, sub
        for m in got:
            assert m.headers["destination"] == f"/topic/{m.body}", m.headers
    quiet(c)


def test_wildcard_queue_subscription_takes_existing_and_later_queues(stomp_connect, broker):
    """A wildcard queue subscription consumes from every matching queue,
    those made after it subscribed included; MESSAGE names the queue."""
    root = uniq("WQ")
    prod = stomp_connect()
    prod.send(f"/queue/{root}.old", "old-1")
    prod.send(f"/queue/{root}.old", "old-2", receipt=True)
    prod.send(f"/queue/{root}x.old", "not-mine", receipt=True)
    c = stomp_connect()
    c.subscribe(f"/queue/{root}.>", id="w", ack="client-individual")
    got = c.take_messages(2)
    assert [m.body for m in got] == ["old-1", "old-2"]
    for m in got:
        assert m.headers["destination"] == f"/queue/{root}.old"
        c.ack(m)
    broker.wait_stats(f"/queue/{root}.old", ready=0, inflight=0)
    # Queues that did not exist when it subscribed.
    prod.send(f"/queue/{root}.new.deep", "new-deep", receipt=True)
    m = c.next_message()
    assert (m.body, m.headers["destination"]) == ("new-deep", f"/queue/{root}.new.deep")
    c.ack(m)
    prod.send(f"/queue/{root}", "root", receipt=True)  # 'A.>' matches A
    m = c.next_message()
    assert (m.body, m.headers["destination"]) == ("root", f"/queue/{root}")
    c.ack(m)
    quiet(c)
    broker.wait_stats(f"/queue/{root}x.old", ready=1)


@pytest.mark.parametrize("dest", ["/queue/{r}.*", "/topic/{r}.>", "/queue/{r}.a,/topic/{r}.*"])
def test_send_to_a_wildcard_is_an_error(stomp_connect, dest):
    r = uniq("S")
    c = stomp_connect()
    c.conn.send(dest.format(r=r), "x")
    assert_fatal(c, mentions="wildcard")


def test_durable_wildcard_subscription_keeps_messages_while_away(stomp_connect, broker):
    """A durable subscription (client-id + activemq.subscriptionName) to
    /topic/A.> keeps what is sent to matching topics while its client is
    away — to topics that existed before and to ones first used meanwhile."""
    root = uniq("DW")
    client_id = uniq("cid")
    sub_headers = {"activemq.subscriptionName": "dur"}
    c = stomp_connect(**{"client-id": client_id})
    c.subscribe(f"/topic/{root}.>", id="d", **sub_headers)
    prod = stomp_connect()
    prod.send(f"/topic/{root}.a", "live", receipt=True)
    assert c.next_message().body == "live"
    c.disconnect()

    away = [f"{root}.a", f"{root}.b.c", root]
    for name in away:
        prod.send(f"/topic/{name}", name, persistent="true", receipt=True)
    prod.send(f"/topic/{root}x.a", "no-match", persistent="true", receipt=True)

    c2 = stomp_connect(**{"client-id": client_id})
    c2.subscribe(f"/topic/{root}.>", id="d", **sub_headers)
    got = c2.take_messages(3)
    assert [m.body for m in got] == away
    for m in got:
        assert m.headers["destination"] == f"/topic/{m.body}", m.headers
        assert m.headers["subscription"] == "d"
    quiet(c2)


@pytest.mark.parametrize("kind", ["wildcard", "composite"])
def test_prefetch_counts_across_every_destination_of_a_subscription(stomp_connect, broker, kind):
    """Prefetch bounds the unacknowledged messages in flight to the
    subscription (docs/STOMP.md; ActiveMQ's prefetch is per consumer), not
    to each queue a wildcard or composite subscription takes from: with
    activemq.prefetchSize:1 over three queues it holds one at a time."""
    root = uniq("PF")
    names = [f"/queue/{root}.{x}" for x in "abc"]
    prod = stomp_connect()
    for name in names:
        prod.send(name, name, receipt=True)
    dest = f"/queue/{root}.*" if kind == "wildcard" else ",".join(names)
    c = stomp_connect()
    c.subscribe(dest, id="s", ack="client-individual", **{"activemq.prefetchSize": "1"})
    got = []
    for _ in names:
        m = c.next_message()
        quiet(c)  # nothing more until it is acknowledged
        got.append(m.body)
        c.ack(m)
    assert sorted(got) == names
    for name in names:
        broker.wait_stats(name, ready=0, inflight=0)


def test_durable_wildcard_subscription_survives_a_restart(stomp_connect, broker):
    """What a durable wildcard subscription kept is stored: a broker restart
    loses none of it, and the subscription goes on collecting afterwards."""
    root = uniq("DR")
    client_id = uniq("cid")
    sub_headers = {"activemq.subscriptionName": "dur"}
    c = stomp_connect(**{"client-id": client_id})
    c.subscribe(f"/topic/{root}.>", id="d", **sub_headers)
    c.disconnect()
    prod = stomp_connect()
    prod.send(f"/topic/{root}.a", "before-restart", persistent="true", receipt=True)
    prod.disconnect()
    broker.stop()
    broker.start()
    prod = stomp_connect()
    prod.send(f"/topic/{root}.b", "after-restart", persistent="true", receipt=True)
    c2 = stomp_connect(**{"client-id": client_id})
    c2.subscribe(f"/topic/{root}.>", id="d", **sub_headers)
    got = c2.take_messages(2)
    assert [(m.body, m.headers["destination"]) for m in got] == [
        ("before-restart", f"/topic/{root}.a"), ("after-restart", f"/topic/{root}.b")]
    quiet(c2)


# --------------------------------------------------------------------------
# Composite destinations


def test_composite_send_delivers_a_copy_to_each(stomp_connect, broker):
    qa, tb, qc = f"/queue/{uniq('ca')}", f"/topic/{uniq('cb')}", uniq("cc")
    t_sub = stomp_connect()
    t_sub.subscribe(tb, id="t")
    prod = stomp_connect()
    # An entry without a prefix is of the kind of the one before it:
    # /queue/a,c names two queues (as in ActiveMQ).
    prod.send(f"{qa},{tb}", "to-both", receipt=True, persistent="true", x="1")
    prod.send(f"{qa},{qc}", "two-queues", receipt=True)
    broker.wait_stats(qa, ready=2)
    broker.wait_stats(f"/queue/{qc}", ready=1)
    q_sub = stomp_connect()
    q_sub.subscribe(qa, id="q")
    mq1, mq2 = q_sub.take_messages(2)
    mt = t_sub.next_message()
    assert (mq1.body, mt.body, mq2.body) == ("to-both", "to-both", "two-queues")
    assert mq1.headers["destination"] == qa
    assert mt.headers["destination"] == tb
    assert mq1.headers["x"] == mt.headers["x"] == "1"
    assert mq1.headers["message-id"] == mt.headers["message-id"]
    c_sub = stomp_connect()
    c_sub.subscribe(f"/queue/{qc}", id="c")
    mc = c_sub.next_message()
    assert mc.body == "two-queues"
    assert mc.headers["destination"] == f"/queue/{qc}"
    assert mc.headers["message-id"] == mq2.headers["message-id"]
    quiet(t_sub, q_sub, c_sub)


def test_composite_subscribe_is_one_subscription(stomp_connect):
    """SUBSCRIBE to a list takes from each destination under one id, and one
    UNSUBSCRIBE ends it everywhere."""
    q, t = f"/queue/{uniq('csq')}", f"/topic/{uniq('cst')}"
    c = stomp_connect()
    c.subscribe(f"{q},{t}", id="both")
    prod = stomp_connect()
    prod.send(q, "from-queue", receipt=True)
    prod.send(t, "from-topic", receipt=True)
    got = c.take_messages(2)
    assert sorted((m.body, m.headers["destination"]) for m in got) == [
        ("from-queue", q), ("from-topic", t)]
    assert all(m.headers["subscription"] == "both" for m in got)
    r = c.new_receipt()
    c.conn.unsubscribe("both", headers={"receipt": r})
    c.wait_receipt(r)
    prod.send(q, "q-after", receipt=True)
    prod.send(t, "t-after", receipt=True)
    quiet(c)
    # The queue message waits for another consumer.
    c.subscribe(q, id="q2")
    assert c.next_message().body == "q-after"


@pytest.mark.parametrize("outcome", ["commit", "abort"])
def test_composite_send_in_a_transaction(stomp_connect, broker, outcome):
    """Every copy of a composite SEND in a transaction is held until COMMIT
    and then delivered together, or discarded together by ABORT."""
    q, t = f"/queue/{uniq('txq')}", f"/topic/{uniq('txt')}"
    qs, ts = stomp_connect(), stomp_connect()
    qs.subscribe(q, id="q")
    ts.subscribe(t, id="t")
    prod = stomp_connect()
    prod.begin("tx")
    prod.send(f"{q},{t}", "held", transaction="tx")
    prod.send(f"{q},{t}", "marker", receipt=True)  # outside the transaction
    assert qs.next_message().body == "marker"
    assert ts.next_message().body == "marker"
    if outcome == "commit":
        prod.commit("tx")
        mq, mt = qs.next_message(), ts.next_message()
        assert mq.body == mt.body == "held"
        assert mq.headers["message-id"] == mt.headers["message-id"]
    else:
        prod.abort("tx")
        prod.send(f"{q},{t}", "after", receipt=True)
        assert qs.next_message().body == "after"
        assert ts.next_message().body == "after"
        broker.wait_stats(q, enqueued=2, ready=0)
    quiet(qs, ts)


# --------------------------------------------------------------------------
# Virtual topics


def test_virtual_topic_consumer_queues(stomp_connect, broker):
    """A message to /topic/VirtualTopic.X reaches the topic's subscribers and
    is enqueued once into each existing Consumer.<name>.VirtualTopic.X,
    whose consumers load-balance it; nothing sent before a consumer queue
    existed is in it, and it keeps what arrives while its consumers are away."""
    vt = f"VirtualTopic.{uniq('Orders')}"
    topic = f"/topic/{vt}"
    qa, qb = f"/queue/Consumer.A.{vt}", f"/queue/Consumer.B.{vt}"
    prod = stomp_connect()
    prod.send(topic, "before", receipt=True, persistent="true")

    a1, a2, b1, plain = stomp_connect(), stomp_connect(), stomp_connect(), stomp_connect()
    a1.subscribe(qa, id="a1")
    a2.subscribe(qa, id="a2")
    b1.subscribe(qb, id="b1", ack="client-individual")
    plain.subscribe(topic, id="t")
    bodies = [f"o{i}" for i in range(6)]
    for i, body in enumerate(bodies):
        prod.send(topic, body, receipt=(i == 5), persistent="true")

    assert [m.body for m in plain.take_messages(6)] == bodies
    got_b = b1.take_messages(6)
    assert [m.body for m in got_b] == bodies
    # A copy is a message of the consumer queue (as in ActiveMQ 5.13+).
    assert all(m.headers["destination"] == qb for m in got_b), got_b[0].headers
    for m in got_b:
        b1.ack(m, receipt=False)
    wait_total([a1, a2], 6, "6 messages over Consumer.A's two consumers")
    got_a1 = [m.body for m in a1.take_messages(len(a1.messages))]
    got_a2 = [m.body for m in a2.take_messages(len(a2.messages))]
    assert sorted(got_a1 + got_a2) == bodies  # each once: load-balanced, no copies
    assert got_a1 and got_a2, (got_a1, got_a2)
    broker.wait_stats(qa, enqueued=6, ready=0)
    broker.wait_stats(qb, enqueued=6, ready=0, inflight=0)
    quiet(a1, a2, b1, plain)  # "before" is in neither queue

    # Consumer.B's consumer goes away; its queue keeps receiving.
    b1.disconnect()
    prod.send(topic, "while-away", receipt=True, persistent="true")
    broker.wait_stats(qb, ready=1)
    b2 = stomp_connect()
    b2.subscribe(qb, id="b2")
    assert b2.next_message().body == "while-away"
    quiet(b2)


# --------------------------------------------------------------------------
# Message groups


def test_groups_stick_to_one_consumer(stomp_connect, broker):
    """Each group's messages go to one consumer, in order; the first one a
    consumer gets of a group is marked JMSXGroupFirstForConsumer."""
    q = f"/queue/{uniq('grp')}"
    a, b = stomp_connect(), stomp_connect()
    a.subscribe(q, id="a")
    b.subscribe(q, id="b")
    prod = stomp_connect()
    groups = ["G1", "G2", "G3", "G4"]
    n = 0
    for r in range(4):
        for g in groups:
            prod.send(q, f"{g}-{r}", JMSXGroupID=g)
            n += 1
    prod.send(q, "ungrouped", receipt=True)
    wait_total([a, b], n + 1, f"{n + 1} messages")
    owner = {}
    for c in (a, b):
        seen = set()
        for m in c.take_messages(len(c.messages)):
            if m.body == "ungrouped":
                assert not first_flag(m), m.headers
                continue
            g = m.headers["JMSXGroupID"]
            assert owner.setdefault(g, c) is c, f"group {g} went to both consumers"
            assert first_flag(m) == (g not in seen), m.headers
            seen.add(g)
    assert set(owner) == set(groups)
    # Different groups spread over the consumers.
    assert {id(c) for c in owner.values()} == {id(a), id(b)}, owner
    quiet(a, b)


@pytest.mark.parametrize("closed", [True, False])
def test_group_seq_minus_one_closes_the_group(stomp_connect, closed):
    """JMSXGroupSeq:-1 closes the group once delivered: the next message of
    the group goes to any consumer (here the only one with credit), marked
    first. Without it the group waits for its owner."""
    q = f"/queue/{uniq('close')}"
    a = stomp_connect()
    a.subscribe(q, id="a", ack="client-individual", **{"activemq.prefetchSize": "1"})
    prod = stomp_connect()
    prod.send(q, "g1", receipt=True, JMSXGroupID="G")
    m1 = a.next_message()
    assert first_flag(m1), m1.headers
    a.ack(m1)
    last = {"JMSXGroupSeq": "-1"} if closed else {}
    prod.send(q, "g2", receipt=True, JMSXGroupID="G", **last)
    m2 = a.next_message()
    assert m2.body == "g2" and not first_flag(m2), m2.headers
    # a holds g2 unacknowledged: it has no credit.
    b = stomp_connect()
    b.subscribe(q, id="b", ack="client-individual")
    prod.send(q, "g3", receipt=True, JMSXGroupID="G")
    if closed:
        m3 = b.next_message()
        assert m3.body == "g3" and first_flag(m3), m3.headers
        quiet(a)
    else:
        quiet(b)  # g3 waits for its owner
        a.ack(m2)
        m3 = a.next_message()
        assert m3.body == "g3" and not first_flag(m3), m3.headers
        quiet(b)


@pytest.mark.parametrize("how", ["disconnect", "drop"])
def test_group_moves_when_its_owner_goes(stomp_connect, how):
    """When a group's owner leaves, what it had not acknowledged goes to
    another consumer, the first of it marked, and the group stays there."""
    q = f"/queue/{uniq('move')}"
    a = stomp_connect()
    a.subscribe(q, id="a", ack="client-individual")
    prod = stomp_connect()
    prod.send(q, "g1", JMSXGroupID="G")
    prod.send(q, "g2", receipt=True, JMSXGroupID="G")
    m1, m2 = a.take_messages(2)
    assert first_flag(m1) and not first_flag(m2)
    b = stomp_connect()
    b.subscribe(q, id="b", ack="client-individual")
    prod.send(q, "g3", receipt=True, JMSXGroupID="G")
    quiet(b)  # a owns G
    assert a.next_message().body == "g3"
    if how == "disconnect":
        a.disconnect()
    else:
        a.drop()
    got = b.take_messages(3)
    assert [m.body for m in got] == ["g1", "g2", "g3"]
    assert [first_flag(m) for m in got] == [True, False, False], [m.headers for m in got]
    assert all(m.headers.get("redelivered") == "true" for m in got)
    prod.send(q, "g4", receipt=True, JMSXGroupID="G")
    m4 = b.next_message()
    assert m4.body == "g4" and not first_flag(m4)
    c = stomp_connect()
    c.subscribe(q, id="c")
    prod.send(q, "g5", receipt=True, JMSXGroupID="G")
    assert b.next_message().body == "g5"  # still b's group
    quiet(c)


# --------------------------------------------------------------------------
# Exclusive consumers, consumer priority, no-local


@pytest.mark.parametrize("exclusive_first", [True, False])
def test_exclusive_consumer_takes_everything_while_it_lives(stomp_connect, exclusive_first):
    q = f"/queue/{uniq('excl')}"
    ex, other = stomp_connect(), stomp_connect()
    order = [(ex, {"activemq.exclusive": "true"}), (other, {})]
    if not exclusive_first:
        order.reverse()
    for c, h in order:
        c.subscribe(q, id="s", ack="client-individual", **h)
    prod = stomp_connect()
    for i in range(6):
        prod.send(q, f"e{i}", receipt=(i == 5))
    got = ex.take_messages(6)
    assert [m.body for m in got] == [f"e{i}" for i in range(6)]
    quiet(other)
    ex.ack(got[2])
    ex.ack(got[4])
    ex.disconnect()  # the rest go to the other consumer now
    again = other.take_messages(4)
    assert [m.body for m in again] == ["e0", "e1", "e3", "e5"]
    prod.send(q, "after", receipt=True)
    assert other.next_message().body == "after"


def test_consumer_priority(stomp_connect):
    """activemq.priority: the higher-priority consumer is served while it has
    credit, the lower one gets only the overflow."""
    q = f"/queue/{uniq('cprio')}"
    low, high = stomp_connect(), stomp_connect()
    low.subscribe(q, id="low", ack="client-individual")
    high.subscribe(q, id="high", ack="client-individual",
                   **{"activemq.priority": "5", "activemq.prefetchSize": "3"})
    prod = stomp_connect()
    for i in range(5):
        prod.send(q, f"p{i}", receipt=(i == 4))
    assert [m.body for m in high.take_messages(3)] == ["p0", "p1", "p2"]
    assert [m.body for m in low.take_messages(2)] == ["p3", "p4"]
    quiet(high, low)


def test_consumer_priority_without_prefetch_limit(stomp_connect):
    q = f"/queue/{uniq('cprio2')}"
    hi, lo = stomp_connect(), stomp_connect()
    hi.subscribe(q, id="hi", **{"activemq.priority": "10"})
    lo.subscribe(q, id="lo", **{"activemq.priority": "1"})
    prod = stomp_connect()
    for i in range(8):
        prod.send(q, f"p{i}", receipt=(i == 7))
    assert [m.body for m in hi.take_messages(8)] == [f"p{i}" for i in range(8)]
    quiet(lo)


def test_no_local(stomp_connect):
    """activemq.noLocal on a topic subscription: not the messages its own
    connection publishes; others' still arrive, and a plain subscription on
    the same connection gets both."""
    t = f"/topic/{uniq('nl')}"
    me, other = stomp_connect(), stomp_connect()
    me.subscribe(t, id="nolocal", **{"activemq.noLocal": "true"})
    me.subscribe(t, id="all")
    me.send(t, "mine", receipt=True)
    other.send(t, "theirs", receipt=True)
    assert [m.body for m in take_for(me, "all", 2)] == ["mine", "theirs"]
    assert [m.body for m in take_for(me, "nolocal", 1)] == ["theirs"]
    quiet(me)


# --------------------------------------------------------------------------
# ActiveMQ headers Halyard refuses rather than ignores


@pytest.mark.parametrize("header,value", [
    ("activemq.retroactive", "true"),
    ("activemq.someOption", "1"),
])
def test_unimplemented_subscribe_headers_are_refused(stomp_connect, header, value):
    c = stomp_connect()
    c.conn.subscribe(f"/topic/{uniq('rh')}", "s", headers={header: value})
    assert_fatal(c, mentions=header)


def test_retroactive_false_is_accepted(stomp_connect):
    t = f"/topic/{uniq('rf')}"
    c = stomp_connect()
    c.subscribe(t, id="s", **{"activemq.retroactive": "false"})
    c.send(t, "ok", receipt=True)
    assert c.next_message().body == "ok"
    c.errors.assert_empty()


def test_activemq_selector_is_a_selector(stomp_connect):
    """ActiveMQ sets `activemq.*` headers on its consumer by name, so
    `activemq.selector` selects as `selector` does."""
    q = f"/queue/{uniq('as')}"
    c = stomp_connect()
    c.subscribe(q, id="s", **{"activemq.selector": "color = 'red'"})
    c.send(q, "blue", color="blue")
    c.send(q, "red", color="red", receipt=True)
    assert c.next_message().body == "red"
    c.errors.assert_empty()


# --------------------------------------------------------------------------
# Temporary topics


def test_temp_topic_request_reply(stomp_connect):
    """The owner of /temp-topic/x receives on it; its reply-to is rewritten
    to /remote-temp-topic/... so that another connection can publish to it."""
    requester, responder = stomp_connect(), stomp_connect("1.1")
    requester.subscribe("/temp-topic/replies", id="r")
    requests = f"/queue/{uniq('req')}"
    responder.subscribe(requests, id="q")
    requester.send(requests, "ping", **{"reply-to": "/temp-topic/replies"})
    req = responder.next_message()
    reply_to = req.headers["reply-to"]
    assert reply_to.startswith("/remote-temp-topic/"), reply_to
    responder.send(reply_to, "pong", receipt=True)
    rep = requester.next_message()
    assert rep.body == "pong"
    assert rep.headers["destination"] == "/temp-topic/replies"
    # Several subscriptions of the owner each get a copy: it is a topic.
    requester.subscribe("/temp-topic/replies", id="r2")
    responder.send(reply_to, "pong2", receipt=True)
    assert take_for(requester, "r", 1)[0].body == "pong2"
    assert take_for(requester, "r2", 1)[0].body == "pong2"


def _remote_name(stomp_connect, owner, name: str) -> str:
    """The rewritten reply-to naming `owner`'s /temp-topic/name."""
    q = f"/queue/{uniq('hand')}"
    owner.send(q, "x", receipt=True, **{"reply-to": f"/temp-topic/{name}"})
    reader = stomp_connect()
    reader.subscribe(q, id="h")
    remote = reader.next_message().headers["reply-to"]
    assert remote.startswith("/remote-temp-topic/"), remote
    return remote


def test_another_connection_cannot_subscribe_to_a_temp_topic(stomp_connect):
    owner = stomp_connect()
    owner.subscribe("/temp-topic/mine", id="t")
    remote = _remote_name(stomp_connect, owner, "mine")
    thief = stomp_connect()
    thief.conn.subscribe(remote, "steal")
    assert_fatal(thief, mentions="temporary destination")
    other = stomp_connect()
    other.send(remote, "still works", receipt=True)
    assert owner.next_message().body == "still works"
    owner.errors.assert_empty()


def test_temp_topic_is_gone_when_its_owner_disconnects(stomp_connect, broker):
    owner = stomp_connect()
    owner.subscribe("/temp-topic/gone", id="t")
    remote = _remote_name(stomp_connect, owner, "gone")
    listed = [e["destination"] for e in broker.http_json("/api/destinations")]
    assert remote in listed, listed
    owner.disconnect()
    wait_until(lambda: remote not in [e["destination"] for e in broker.http_json("/api/destinations")],
               EVENT_TIMEOUT, f"{remote} removed from /api/destinations")
    sender = stomp_connect()
    sender.send(remote, "to nobody", receipt=True)  # dropped, not an ERROR
    sender.errors.assert_empty()
    # Nobody may subscribe to it now either, and it does not come back.
    thief = stomp_connect()
    thief.conn.subscribe(remote, "late")
    assert_fatal(thief, mentions="temporary destination")
    assert remote not in [e["destination"] for e in broker.http_json("/api/destinations")]
