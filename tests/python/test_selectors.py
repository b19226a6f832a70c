"""stomp.py against halyard's JMS message selectors (the `selector` header on
SUBSCRIBE, docs/SELECTORS.md): competing selective consumers on a queue, a
numeric comparison on a string header, an invalid selector's ERROR, and a
durable subscriber whose selector is kept across a broker restart."""

from __future__ import annotations

import time
import uuid

# How long "nothing more arrives" is watched for.
QUIET = 0.2


def uniq(prefix: str) -> str:
    """A destination name no other test uses."""
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def quiet(*clients) -> None:
    """Nothing more reaches any of `clients` for a short while."""
    time.sleep(QUIET)
    for c in clients:
        c.messages.assert_empty()


def test_competing_selective_consumers_get_their_own_and_the_rest_waits(stomp_connect, broker):
    q = f"/queue/{uniq('sel')}"
    red = stomp_connect()
    red.subscribe(q, id="r", selector="color = 'red'")
    blue = stomp_connect()
    blue.subscribe(q, id="b", selector="color = 'blue'")
    prod = stomp_connect()
    colors = ["red", "blue", "green"]
    for i in range(12):
        prod.send(q, f"m{i}", receipt=True, color=colors[i % 3], i=str(i))
    assert [m.headers["i"] for m in red.take_messages(4)] == ["0", "3", "6", "9"]
    assert [m.headers["i"] for m in blue.take_messages(4)] == ["1", "4", "7", "10"]
    quiet(red, blue)
    # Nobody selects green: those stay queued for a plain consumer.
    broker.wait_stats(q, ready=4)
    plain = stomp_connect()
    plain.subscribe(q, id="p")
    assert [m.headers["i"] for m in plain.take_messages(4)] == ["2", "5", "8", "11"]
    quiet(plain)


def test_numeric_comparison_on_a_string_header(stomp_connect, broker):
    q = f"/queue/{uniq('price')}"
    c = stomp_connect()
    c.subscribe(q, id="s", selector="price > 10 AND JMSPriority >= 5")
    prod = stomp_connect()
    for body, price, priority in [("cheap", "9", "5"), ("dear", "12", "5"), ("low", "12", "4"),
                                  ("text", "ten", "9"), ("exact", "10.5", "9"), ("big", "100", "9")]:
        prod.send(q, body, receipt=True, price=price, priority=priority)
    # STOMP headers are strings; `price > 10` converts them (ActiveMQ's
    # convertStringExpressions), "10.5" is not an integer and stays UNKNOWN.
    assert sorted(m.body for m in c.take_messages(2)) == ["big", "dear"]
    quiet(c)
    broker.wait_stats(q, ready=4)


def test_invalid_selector_is_an_error_with_its_position(stomp_connect):
    q = f"/queue/{uniq('bad')}"
    c = stomp_connect()
    c.conn.subscribe(q, "s", ack="auto", headers={"selector": "a = 1 AND", "receipt": "r-bad"})
    err = c.wait_error()
    assert err.cmd == "ERROR"
    message = err.headers.get("message", "")
    assert "invalid selector at position 9" in message, err.headers
    assert err.headers.get("receipt-id") == "r-bad", err.headers
    # STOMP closes the connection after an ERROR; a new one works.
    c.wait_disconnected()
    ok = stomp_connect()
    ok.subscribe(q, id="s", selector="a = 1")
    ok.send(q, "hit", receipt=True, a="1")
    assert ok.next_message().body == "hit"


def test_durable_subscriber_keeps_only_matches_across_a_restart(stomp_connect, broker):
    topic = f"/topic/{uniq('dur')}"
    client_id = uniq("cid")
    sub = {"activemq.subscriptionName": "reds", "selector": "color = 'red'"}
    c = stomp_connect(**{"client-id": client_id})
    c.subscribe(topic, id="d", ack="client-individual", **sub)
    c.disconnect()
    prod = stomp_connect()
    for i, color in enumerate(["red", "blue", "red", "green"]):
        prod.send(topic, f"before{i}", receipt=True, persistent="true", color=color)
    prod.disconnect()
    broker.stop()
    broker.start()
    prod = stomp_connect()
    for i, color in enumerate(["blue", "red"]):
        prod.send(topic, f"after{i}", receipt=True, persistent="true", color=color)
    c2 = stomp_connect(**{"client-id": client_id})
    c2.subscribe(topic, id="d", ack="client-individual", **sub)
    got = c2.take_messages(3)
    assert [m.body for m in got] == ["before0", "before2", "after1"]
    for m in got:
        c2.ack(m)
    quiet(c2)
