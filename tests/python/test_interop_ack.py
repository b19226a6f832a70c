"""stomp.py against halyard: acknowledgement modes, redelivery, NACK and
dead-lettering, transactions and receipts for persistent sends."""

from __future__ import annotations

import time

import pytest

VERSIONS = ["1.0", "1.1", "1.2"]
NACK_VERSIONS = ["1.1", "1.2"]  # NACK does not exist in STOMP 1.0


def _redelivered(m, count: int = 2) -> None:
    assert m.headers.get("redelivered") == "true", m.headers
    assert m.headers.get("delivery-count") == str(count), m.headers


def _fresh(m) -> None:
    assert "redelivered" not in m.headers, m.headers
    assert "delivery-count" not in m.headers, m.headers


# --------------------------------------------------------------------------
# Acknowledgement modes


@pytest.mark.parametrize("how", ["disconnect", "drop"])
@pytest.mark.parametrize("version", VERSIONS)
def test_client_individual_ack_redelivers_only_unacked(stomp_connect, broker, version, how):
    """client-individual: ACK covers one message. The unacknowledged ones come
    back, marked redelivered, when the consumer disconnects (gracefully or by
    dropping the socket)."""
    prod = stomp_connect()
    for i in range(4):
        prod.send("/queue/ci", f"m{i}", receipt=(i == 3))
    c1 = stomp_connect(version)
    c1.subscribe("/queue/ci", id="c1", ack="client-individual")
    ms = c1.take_messages(4)
    assert [m.body for m in ms] == ["m0", "m1", "m2", "m3"]
    for m in ms:
        _fresh(m)
        if version == "1.2":
            assert m.headers.get("ack"), "1.2 MESSAGE for a client-ack subscription needs an ack header"
    c1.ack(ms[1])
    c1.ack(ms[3])
    broker.wait_stats("/queue/ci", inflight=2, acked=2)
    if how == "disconnect":
        c1.disconnect()
    else:
        c1.drop()
    broker.wait_stats("/queue/ci", ready=2, inflight=0, consumers=0)

    c2 = stomp_connect(version)
    c2.subscribe("/queue/ci", id="c2", ack="client-individual")
    again = c2.take_messages(2)
    assert [m.body for m in again] == ["m0", "m2"]
    for m in again:
        _redelivered(m)
        assert m.headers["subscription"] == "c2"
    prod.send("/queue/ci", "marker", receipt=True)
    assert c2.next_message().body == "marker"  # m1 and m3 stay acknowledged


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_client_ack_is_cumulative(stomp_connect, broker, version):
    """client mode: ACK of a message acknowledges it and every earlier one;
    later ones are redelivered once the consumer goes."""
    prod = stomp_connect()
    for i in range(5):
        prod.send("/queue/cum", f"m{i}", receipt=(i == 4))
    c1 = stomp_connect(version)
    c1.subscribe("/queue/cum", id="c1", ack="client")
    ms = c1.take_messages(5)
    c1.ack(ms[2])  # m0, m1, m2
    broker.wait_stats("/queue/cum", inflight=2, acked=3)
    c1.disconnect()

    c2 = stomp_connect(version)
    c2.subscribe("/queue/cum", id="c2", ack="client")
    again = c2.take_messages(2)
    assert [m.body for m in again] == ["m3", "m4"]
    for m in again:
        _redelivered(m)
    c2.ack(again[1])
    broker.wait_stats("/queue/cum", inflight=0, ready=0, acked=5)
    prod.send("/queue/cum", "marker", receipt=True)
    assert c2.next_message().body == "marker"


def test_client_ack_in_stomp10(stomp_connect, broker):
    """STOMP 1.0 ACK by message-id."""
    prod = stomp_connect("1.0")
    prod.send("/queue/ten", "a")
    prod.send("/queue/ten", "b", receipt=True)
    c = stomp_connect("1.0")
    c.subscribe("/queue/ten", id=None, ack="client")
    a, b = c.take_messages(2)
    c.ack(b)
    broker.wait_stats("/queue/ten", inflight=0, acked=2)


def test_auto_ack_messages_are_not_redelivered(stomp_connect, broker):
    prod = stomp_connect()
    c1 = stomp_connect()
    c1.subscribe("/queue/auto")
    prod.send("/queue/auto", "once", receipt=True)
    assert c1.next_message().body == "once"
    broker.wait_stats("/queue/auto", inflight=0, acked=1)
    c1.disconnect()
    c2 = stomp_connect()
    c2.subscribe("/queue/auto")
    prod.send("/queue/auto", "marker", receipt=True)
    m = c2.next_message()
    assert m.body == "marker"
    _fresh(m)


def test_unsubscribe_returns_unacked_messages(stomp_connect, broker):
    c = stomp_connect()
    c.subscribe("/queue/unsub", id="s1", ack="client-individual")
    prod = stomp_connect()
    prod.send("/queue/unsub", "x", receipt=True)
    c.next_message()
    r = c.new_receipt()
    c.conn.unsubscribe("s1", headers={"receipt": r})
    c.wait_receipt(r)
    c.subscribe("/queue/unsub", id="s2", ack="client-individual")
    m = c.next_message()
    assert m.body == "x"
    assert m.headers["subscription"] == "s2"
    _redelivered(m)


# --------------------------------------------------------------------------
# NACK and dead-lettering


@pytest.mark.broker_config({"destinations": {"max-redeliveries": 2}})
@pytest.mark.parametrize("version", NACK_VERSIONS)
def test_nack_until_dead_lettered(stomp_connect, broker, version):
    """With max-redeliveries = 2 a message is delivered 3 times; the third
    NACK moves it to /queue/DLQ.<name> with the dead-letter headers."""
    prod = stomp_connect()
    prod.send("/queue/poison", "bad", receipt=True, **{"x-custom": "kept", "persistent": "true"})
    c = stomp_connect(version)
    c.subscribe("/queue/poison", id="p", ack="client-individual")
    for delivery in (1, 2, 3):
        m = c.next_message()
        assert m.body == "bad"
        if delivery == 1:
            _fresh(m)
        else:
            _redelivered(m, delivery)
        c.nack(m)
    broker.wait_stats("/queue/poison", ready=0, inflight=0)
    dlq = stomp_connect("1.2")
    dlq.subscribe("/queue/DLQ.poison", id="d", ack="client-individual")
    d = dlq.next_message()
    assert d.body == "bad"
    assert d.headers["destination"] == "/queue/DLQ.poison"
    assert d.headers["original-destination"] == "/queue/poison"
    cause = d.headers["dlqDeliveryFailureCause"]
    assert "3" in cause and "max-redeliveries" in cause, cause
    assert d.headers["x-custom"] == "kept"
    dlq.ack(d)
    # Nothing more reaches the original consumer.
    prod.send("/queue/poison", "good", receipt=True)
    assert c.next_message().body == "good"


@pytest.mark.parametrize("version", NACK_VERSIONS)
def test_nack_redelivers_and_ack_settles(stomp_connect, broker, version):
    """A NACKed message goes back to the queue (to any consumer) marked
    redelivered; the other messages are unaffected; an ACK then settles it."""
    a = stomp_connect(version)
    a.subscribe("/queue/nk", id="a", ack="client-individual")
    prod = stomp_connect()
    prod.send("/queue/nk", "m0")
    prod.send("/queue/nk", "m1", receipt=True)
    m0, m1 = a.take_messages(2)
    b = stomp_connect(version)
    b.subscribe("/queue/nk", id="b", ack="client-individual")
    a.nack(m0)
    broker.wait_stats("/queue/nk", inflight=2, ready=0)
    # The broker has sent it again, to a or to b; it may not have reached
    # either client yet, so wait for it to land somewhere.
    deadline = time.monotonic() + 10
    while not len(a.messages) and not len(b.messages):
        assert time.monotonic() < deadline, "the NACKed message reached neither consumer"
        time.sleep(0.005)
    holder = a if len(a.messages) else b
    again = holder.next_message()
    assert again.body == "m0"
    _redelivered(again)
    holder.ack(again)
    a.ack(m1)
    broker.wait_stats("/queue/nk", inflight=0, ready=0, acked=2, enqueued=2)


# --------------------------------------------------------------------------
# Transactions


@pytest.mark.parametrize("version", VERSIONS)
def test_transaction_commit_makes_sends_visible(stomp_connect, version):
    cons = stomp_connect()
    cons.subscribe("/queue/tx")
    prod = stomp_connect(version)
    prod.begin("tx1")
    prod.send("/queue/tx", "t1", transaction="tx1")
    prod.send("/queue/tx", "t2", transaction="tx1", **{"x-h": "v"})
    prod.send("/queue/tx", "outside", receipt=True)
    # Sent after the transaction's messages, yet first: they are held.
    assert cons.next_message().body == "outside"
    prod.commit("tx1")
    t1, t2 = cons.take_messages(2)
    assert (t1.body, t2.body) == ("t1", "t2")
    assert t2.headers["x-h"] == "v"
    assert "transaction" not in t1.headers


@pytest.mark.parametrize("version", VERSIONS)
def test_transaction_abort_discards_sends(stomp_connect, broker, version):
    cons = stomp_connect()
    cons.subscribe("/queue/txa")
    prod = stomp_connect(version)
    prod.begin("tx1")
    prod.send("/queue/txa", "never", transaction="tx1")
    prod.abort("tx1")
    prod.send("/queue/txa", "marker", receipt=True)
    assert cons.next_message().body == "marker"
    broker.wait_stats("/queue/txa", enqueued=1, ready=0)
    cons.messages.assert_empty()


def test_transaction_dropped_with_connection_is_rolled_back(stomp_connect, broker):
    cons = stomp_connect()
    cons.subscribe("/queue/txd")
    prod = stomp_connect()
    prod.begin("tx1")
    prod.send("/queue/txd", "never", transaction="tx1")
    prod.drop()
    prod2 = stomp_connect()
    prod2.send("/queue/txd", "marker", receipt=True)
    assert cons.next_message().body == "marker"
    cons.messages.assert_empty()


@pytest.mark.parametrize("version", VERSIONS)
def test_ack_in_aborted_transaction_is_redelivered(stomp_connect, broker, version):
    prod = stomp_connect()
    prod.send("/queue/txack", "m", receipt=True)
    c = stomp_connect(version)
    c.subscribe("/queue/txack", id="s", ack="client-individual")
    m = c.next_message()
    c.begin("tx1")
    c.ack(m, transaction="tx1")
    c.abort("tx1")
    again = c.next_message()
    assert again.body == "m"
    _redelivered(again)
    c.ack(again)
    broker.wait_stats("/queue/txack", ready=0, inflight=0, acked=1)


@pytest.mark.parametrize("how", ["disconnect", "drop"])
def test_ack_in_unfinished_transaction_is_rolled_back_when_connection_ends(stomp_connect, broker, how):
    prod = stomp_connect()
    prod.send("/queue/txopen", "m", receipt=True)
    c = stomp_connect("1.2")
    c.subscribe("/queue/txopen", id="s", ack="client-individual")
    m = c.next_message()
    c.begin("tx1")
    c.ack(m, transaction="tx1")
    if how == "disconnect":
        c.disconnect()
    else:
        c.drop()
    c2 = stomp_connect("1.2")
    c2.subscribe("/queue/txopen", id="s", ack="client-individual")
    again = c2.next_message()
    assert again.body == "m"
    _redelivered(again)


@pytest.mark.parametrize("version", NACK_VERSIONS)
def test_nack_in_transaction_applies_on_commit(stomp_connect, broker, version):
    prod = stomp_connect()
    prod.send("/queue/txnack", "m", receipt=True)
    c = stomp_connect(version)
    c.subscribe("/queue/txnack", id="s", ack="client-individual")
    m = c.next_message()
    c.begin("tx1")
    c.nack(m, transaction="tx1")
    prod.send("/queue/txnack", "marker", receipt=True)
    # The NACK is held by the transaction: the marker comes first.
    assert c.next_message().body == "marker"
    c.commit("tx1")
    again = c.next_message()
    assert again.body == "m"
    _redelivered(again)


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_ack_in_committed_transaction_sticks(stomp_connect, broker, version):
    prod = stomp_connect()
    prod.send("/queue/txc", "m", receipt=True)
    c = stomp_connect(version)
    c.subscribe("/queue/txc", id="s", ack="client-individual")
    m = c.next_message()
    c.begin("tx1")
    c.ack(m, transaction="tx1")
    c.commit("tx1")
    broker.wait_stats("/queue/txc", ready=0, inflight=0, acked=1)
    c.disconnect()
    c2 = stomp_connect(version)
    c2.subscribe("/queue/txc", id="s", ack="client-individual")
    prod.send("/queue/txc", "marker", receipt=True)
    assert c2.next_message().body == "marker"


# --------------------------------------------------------------------------
# Receipts


@pytest.mark.parametrize("version", VERSIONS)
def test_persistent_sends_are_receipted_in_order(stomp_connect, broker, version):
    prod = stomp_connect(version)
    receipts = [prod.new_receipt() for _ in range(10)]
    for i, r in enumerate(receipts):
        prod.conn.send("/queue/durable", f"p{i}", headers={"persistent": "true", "receipt": r})
    got = [prod.listener.receipts.take().headers["receipt-id"] for _ in receipts]
    assert got == receipts
    # A receipt means the broker has the message: it is queued.
    assert broker.destination_stats("/queue/durable")["enqueued"] == 10
    cons = stomp_connect()
    cons.subscribe("/queue/durable")
    ms = cons.take_messages(10)
    assert [m.body for m in ms] == [f"p{i}" for i in range(10)]
    assert all(m.headers.get("persistent") == "true" for m in ms)


@pytest.mark.parametrize("version", VERSIONS)
def test_receipts_for_every_frame_kind(stomp_connect, version):
    """SUBSCRIBE, SEND, ACK, BEGIN, COMMIT, UNSUBSCRIBE and DISCONNECT all
    honour the receipt header (the helpers wait for each receipt)."""
    c = stomp_connect(version)
    c.subscribe("/queue/rc", id="s", ack="client")
    c.send("/queue/rc", "x", receipt=True)
    m = c.next_message()
    c.begin("t")
    c.ack(m, transaction="t")
    c.commit("t")
    r = c.new_receipt()
    if version == "1.0":
        c.conn.unsubscribe(id="s", headers={"receipt": r})
    else:
        c.conn.unsubscribe("s", headers={"receipt": r})
    c.wait_receipt(r)
    c.disconnect()
    c.errors.assert_empty()
