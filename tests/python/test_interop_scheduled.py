"""stomp.py against halyard: scheduled delivery with ActiveMQ's headers
(AMQ_SCHEDULED_DELAY, AMQ_SCHEDULED_PERIOD, AMQ_SCHEDULED_REPEAT).

Every test uses its own broker (conftest.py) and its own destination names.
Waits are for events (a RECEIPT, a MESSAGE) with deadlines; "nothing more
arrives" is a short quiet period after the last expected firing.
"""

from __future__ import annotations

import time
import uuid

QUIET = 0.4


def uniq(prefix: str) -> str:
    return f"/queue/{prefix}{uuid.uuid4().hex[:10]}"


def test_a_delayed_message_arrives_after_its_delay(stomp_connect):
    q = uniq("sched-delay-")
    c = stomp_connect("1.2")
    c.subscribe(q)
    before = time.monotonic()
    c.send(q, "later", receipt=True, AMQ_SCHEDULED_DELAY="600")
    # Not there at once.
    time.sleep(0.3)
    c.messages.assert_empty()
    m = c.next_message()
    elapsed = time.monotonic() - before
    assert m.body == "later"
    assert elapsed >= 0.6, f"arrived {elapsed:.3f}s after the SEND, before its delay"
    assert m.headers.get("scheduledJobId", "").startswith("ID:"), m.headers
    assert "AMQ_SCHEDULED_DELAY" not in m.headers


def test_period_and_repeat_deliver_repeat_plus_one_copies(stomp_connect):
    q = uniq("sched-repeat-")
    c = stomp_connect("1.2")
    c.subscribe(q)
    c.send(q, "tick", receipt=True, AMQ_SCHEDULED_PERIOD="150", AMQ_SCHEDULED_REPEAT="2")
    got = c.take_messages(3)
    assert [m.body for m in got] == ["tick"] * 3
    assert len({m.headers["message-id"] for m in got}) == 3, [m.headers for m in got]
    time.sleep(QUIET)
    c.messages.assert_empty()


def test_repeats_are_not_duplicates_of_each_other(stomp_connect):
    # A duplicate-detection id guards the SEND, not each repeat: every copy
    # arrives (a JMS client's message id is such an id).
    q = uniq("sched-repeat-dup-")
    c = stomp_connect("1.2")
    c.subscribe(q)
    c.send(
        q,
        "tick",
        receipt=True,
        AMQ_SCHEDULED_PERIOD="150",
        AMQ_SCHEDULED_REPEAT="2",
        _AMQ_DUPL_ID=uniq("dup-"),
    )
    got = c.take_messages(3)
    assert [m.body for m in got] == ["tick"] * 3
    time.sleep(QUIET)
    c.messages.assert_empty()


def test_a_negative_delay_is_refused(stomp_connect):
    c = stomp_connect("1.2")
    c.send(uniq("sched-bad-"), "x", AMQ_SCHEDULED_DELAY="-1")
    err = c.wait_error()
    assert "AMQ_SCHEDULED_DELAY" in err.headers.get("message", ""), err.headers
