"""stomp.py against halyard's per-destination policies ([[policies]]):
a NACKed message comes back after backed-off delays, and a shared
dead-letter queue collects the dead messages of several queues."""

from __future__ import annotations

import time

import pytest

POLICIES = {
    "policies": [
        {
            "queue": "py.backoff.>",
            "max-redeliveries": 3,
            "initial-redelivery-delay": 200,
            "redelivery-delay": 200,
            "use-exponential-backoff": True,
            "backoff-multiplier": 2.0,
            "maximum-redelivery-delay": 500,
        },
        {
            "queue": "py.shared.>",
            "max-redeliveries": 0,
            "dead-letter-strategy": "shared",
            "dead-letter-queue": "PY.DLQ",
        },
    ]
}

# How late a redelivery may be on a loaded machine.
LATE = 0.7


@pytest.mark.broker_config(POLICIES)
def test_nack_comes_back_after_backed_off_delays(stomp_connect, broker):
    prod = stomp_connect()
    prod.send("/queue/py.backoff.a", "m", receipt=True, persistent="true")
    c = stomp_connect("1.2")
    c.subscribe("/queue/py.backoff.a", id="c", ack="client-individual")
    m = c.next_message()
    assert m.body == "m"
    # 200 ms, then 400, then 800 capped at 500.
    for n, delay in enumerate([0.2, 0.4, 0.5], start=2):
        nacked = time.monotonic()
        c.nack(m)
        m = c.next_message(timeout=delay + 5)
        took = time.monotonic() - nacked
        assert delay - 0.005 <= took <= delay + LATE, f"redelivery {n - 1} after {took:.3f}s, expected {delay}s"
        assert m.body == "m"
        assert m.headers.get("redelivered") == "true", m.headers
        assert m.headers.get("delivery-count") == str(n), m.headers
    # Four deliveries: the next NACK dead-letters it.
    c.nack(m)
    d = stomp_connect("1.2")
    d.subscribe("/queue/DLQ.py.backoff.a", id="d", ack="auto")
    dead = d.next_message()
    assert dead.body == "m"
    assert dead.headers.get("original-destination") == "/queue/py.backoff.a", dead.headers


@pytest.mark.broker_config(POLICIES)
def test_shared_dead_letter_queue(stomp_connect, broker):
    prod = stomp_connect()
    c = stomp_connect("1.2")
    for q in ["py.shared.a", "py.shared.b"]:
        prod.send(f"/queue/{q}", q, receipt=True, persistent="true")
        c.subscribe(f"/queue/{q}", id=q, ack="client-individual")
        m = c.next_message()
        assert m.body == q
        c.nack(m)
    d = stomp_connect("1.2")
    d.subscribe("/queue/PY.DLQ", id="d", ack="client-individual")
    got = d.take_messages(2)
    assert sorted((m.body, m.headers.get("original-destination")) for m in got) == [
        ("py.shared.a", "/queue/py.shared.a"),
        ("py.shared.b", "/queue/py.shared.b"),
    ]
    for m in got:
        assert m.headers.get("dlqDeliveryFailureCause"), m.headers
        d.ack(m)
    broker.wait_stats("/queue/PY.DLQ", ready=0, inflight=0)
    broker.wait_stats("/queue/py.shared.a", ready=0, inflight=0, delayed=0)
