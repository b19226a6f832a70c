#!/usr/bin/env python3
"""JMS selectors, scheduled delivery and redelivery over STOMP, observed.

The issue-15 companion of semantics.py: the same recording client, output
and options (`--only`, `--json`, `--timeout`, `--list`), other scenarios.
It asserts nothing.  Run it with `run.sh BROKER --features ...`, which
gives ActiveMQ `activemq-features.xml` (scheduler on, a redeliveryPlugin
policy) and Halyard `halyard-features.toml` (the same policy), so that the
`redelivery_policy` timings can be compared.  See README.md.

Arrival times are recorded as `t_ms`, milliseconds since the scenario's
reference point (the SEND, or the NACK before a redelivery), rounded to
100 ms.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import semantics as S  # noqa: E402  (the recording client and the runner)
from semantics import bodies, u  # noqa: E402

# Only this file's scenarios.
S.SCENARIOS[:] = []
scenario = S.scenario

# Record each frame's arrival time too (not part of the message records).
_orig_add = S.Client._add


def _timed_add(self, frame):
    _orig_add(self, frame)
    with self.cv:
        self.frames[-1]["at"] = time.monotonic()


S.Client._add = _timed_add
# Shown next to a body in the printed summary (the JSON has every header).
S.SALIENT += ["t_ms", "delivery-count", "scheduledJobId", "AMQ_SCHEDULED_DELAY",
              "AMQ_SCHEDULED_PERIOD", "AMQ_SCHEDULED_REPEAT"]

# The queues that the broker configurations give a redelivery policy.
POLICY_PREFIX = "sem.redeliv.policy."


def timed(c, t0, sub=None, since=0):
    """MESSAGE records of c with t_ms (arrival - t0, rounded to 100 ms)."""
    with c.cv:
        fs = [f for f in c.frames[since:] if f["cmd"] == "MESSAGE"
              and (sub is None or f["headers"].get("subscription") == sub)]
    out = []
    for f in fs:
        r = S.msg_record(f)
        r["t_ms"] = int(round((f["at"] - t0) * 10)) * 100
        out.append(r)
    return out


def per_sub(c, subs):
    return {s: bodies(c.messages(s)) for s in subs}


# --------------------------------------------------------------------------
# Selectors


@scenario
def sel_competing(ctx):
    """Two competing queue consumers with disjoint selectors; a message
    matching neither waits for a consumer without a selector."""
    o = {}
    q = "/queue/" + u("sem.sel.compete.")
    a = ctx.client("a")
    b = ctx.client("b")
    o["a_subscribe"] = a.subscribe(q, "a", headers={"selector": "color = 'red'"})
    o["b_subscribe"] = b.subscribe(q, "b", headers={"selector": "color = 'blue'"})
    p = ctx.client("p")
    for i, col in enumerate(["red", "blue", "green", "red", "blue"]):
        p.send(q, "%s%d" % (col, i), headers={"color": col})
    a.wait_count(2)
    b.wait_count(2)
    a.quiet()
    b.quiet()
    o["a_red_got"] = bodies(a.messages())
    o["b_blue_got"] = bodies(b.messages())
    c = ctx.client("c")
    c.subscribe(q, "c")
    c.wait_count(1)
    c.quiet()
    o["plain_consumer_afterwards_got"] = bodies(c.messages())
    return o


@scenario
def sel_numeric_string(ctx):
    """`price > 9` (and `price > 9.5`, `price = 12`) against STOMP string
    headers price:12, 9.99, abc, 10, ' 12', none."""
    o = {}
    t = "/topic/" + u("sem.sel.num.")
    c = ctx.client("c")
    sels = {"gt9": "price > 9", "gt9.5": "price > 9.5", "eq12": "price = 12",
            "eq12.0": "price = 12.0", "plus": "price + 1 > 10"}
    o["subscribe"] = {k: c.subscribe(t, k, headers={"selector": s})["outcome"]
                      for k, s in sels.items()}
    o["selectors"] = sels
    p = ctx.client("p")
    for v in ["12", "9.99", "abc", "10", " 12", None]:
        h = {} if v is None else {"price": v}
        p.send(t, "price=%r" % v, headers=h)
    c.quiet()
    o["got"] = per_sub(c, sels)
    return o


@scenario
def sel_jms_headers(ctx):
    """JMSType / JMSCorrelationID / JMSPriority / JMSDeliveryMode /
    JMSMessageID selectors against STOMP's type / correlation-id / priority /
    persistent headers (topic subscriptions, one per selector)."""
    o = {}
    t = "/topic/" + u("sem.sel.jms.")
    c = ctx.client("c")
    sels = {"type": "JMSType = 'order'", "corr": "JMSCorrelationID = 'c1'",
            "prio_gt5": "JMSPriority > 5", "prio_eq4": "JMSPriority = 4",
            "persistent": "JMSDeliveryMode = 'PERSISTENT'",
            "non_persistent": "JMSDeliveryMode = 'NON_PERSISTENT'",
            "msgid_like": "JMSMessageID LIKE 'ID:%'",
            "prop_type": "type = 'order'", "prop_priority": "priority = 7",
            "prop_persistent": "persistent = 'true'"}
    o["selectors"] = sels
    o["subscribe"] = {k: c.subscribe(t, k, headers={"selector": s})["outcome"]
                      for k, s in sels.items()}
    p = ctx.client("p")
    sends = [("type-order", {"type": "order"}), ("corr-c1", {"correlation-id": "c1"}),
             ("prio-7", {"priority": "7"}), ("prio-2", {"priority": "2"}),
             ("persistent", {"persistent": "true"}), ("plain", {})]
    o["send"] = [p.send(t, b, headers=h)["outcome"] for b, h in sends]
    c.quiet()
    o["got"] = per_sub(c, sels)
    o["one_message_all_headers"] = (c.messages("type") or [{}])[0].get("_headers")
    return o


@scenario
def sel_like_in_null(ctx):
    """LIKE with ESCAPE, IN / NOT IN, IS NULL / IS NOT NULL (topic)."""
    o = {}
    t = "/topic/" + u("sem.sel.like.")
    c = ctx.client("c")
    sels = {"like_escape": "name LIKE 'a\\_%' ESCAPE '\\'", "like": "name LIKE 'a_%'",
            "like_bang_escape": "name LIKE 'a!%%' ESCAPE '!'",
            "in": "region IN ('eu', 'us')", "not_in": "region NOT IN ('eu', 'us')",
            "is_null": "region IS NULL", "is_not_null": "region IS NOT NULL"}
    o["selectors"] = sels
    o["subscribe"] = {k: c.subscribe(t, k, headers={"selector": s})["outcome"]
                      for k, s in sels.items()}
    p = ctx.client("p")
    sends = [("n=a_x", {"name": "a_x"}), ("n=abc", {"name": "abc"}), ("n=a%z", {"name": "a%z"}),
             ("r=eu", {"region": "eu"}), ("r=asia", {"region": "asia"}), ("none", {})]
    for b, h in sends:
        p.send(t, b, headers=h)
    c.quiet()
    o["got"] = per_sub(c, sels)
    return o


@scenario
def sel_invalid(ctx):
    """Invalid selectors: the SUBSCRIBE's outcome, the ERROR text, whether the
    connection survives."""
    o = {}
    q = "/queue/" + u("sem.sel.bad.")
    for key, sel in [("double_eq", "a == 1"), ("dangling_and", "a = 1 AND"),
                     ("unterminated", "a = 'x"), ("eq_null", "a = NULL"),
                     ("empty", "")]:
        c = ctx.client("c-" + key)
        r = {"selector": sel, "subscribe": c.subscribe(q, "s", headers={"selector": sel})}
        c.quiet()
        r["connection_dropped"] = c.disconnected
        r["send_afterwards"] = c.send(q, key)["outcome"]
        c.quiet()
        r["got_afterwards"] = bodies(c.messages())
        o[key] = r
    return o


@scenario
def sel_durable_change(ctx):
    """A durable topic subscription (selector color='red') goes offline; red
    and blue are published; it comes back with color='blue': what is kept?"""
    o = {}
    t = "/topic/" + u("sem.sel.durable.")
    cid = u("semdur")
    sh = {"activemq.subscriptionName": "d1"}
    d = ctx.client("d", client_id=cid)
    o["subscribe_red"] = d.subscribe(t, "d", headers=dict(sh, selector="color = 'red'"))
    p = ctx.client("p")
    p.send(t, "red-online", headers={"color": "red"}, persistent=True)
    p.send(t, "blue-online", headers={"color": "blue"}, persistent=True)
    d.quiet()
    o["online_got"] = bodies(d.messages())
    d.close()
    for b, col in [("red-offline", "red"), ("blue-offline", "blue")]:
        p.send(t, b, headers={"color": col}, persistent=True)
    d2 = ctx.client("d2", client_id=cid)
    o["resubscribe_blue"] = d2.subscribe(t, "d", headers=dict(sh, selector="color = 'blue'"))
    d2.quiet()
    o["after_resubscribe_blue_got"] = bodies(d2.messages())
    p.send(t, "red-live", headers={"color": "red"}, persistent=True)
    p.send(t, "blue-live", headers={"color": "blue"}, persistent=True)
    d2.quiet()
    o["blue_total_got"] = bodies(d2.messages())
    d2.close()
    # Same selector again, offline in between: kept as usual?
    p.send(t, "blue-offline2", headers={"color": "blue"}, persistent=True)
    d3 = ctx.client("d3", client_id=cid)
    o["resubscribe_same_blue"] = d3.subscribe(t, "d", headers=dict(sh, selector="color = 'blue'"))
    d3.quiet()
    o["same_selector_got"] = bodies(d3.messages())
    d3.close()
    # No selector at all now.
    p.send(t, "red-offline3", headers={"color": "red"}, persistent=True)
    d4 = ctx.client("d4", client_id=cid)
    o["resubscribe_no_selector"] = d4.subscribe(t, "d", headers=sh)
    d4.quiet()
    o["no_selector_got"] = bodies(d4.messages())
    return o


@scenario
def sel_browser(ctx):
    """A queue browser with selector color='red' over red/blue messages."""
    o = {}
    q = "/queue/" + u("sem.sel.browse.")
    p = ctx.client("p")
    for i, col in enumerate(["red", "blue", "red", "blue"]):
        p.send(q, "%s%d" % (col, i), headers={"color": col}, persistent=True)
    b = ctx.client("b")
    o["browser_subscribe"] = b.subscribe(q, "b", headers={"browser": "true",
                                                          "selector": "color = 'red'"})
    b.wait_browser_end("b")
    b.quiet()
    o["browser_got"] = [[m["body"], m.get("browser")] for m in b.messages()]
    c = ctx.client("c")
    c.subscribe(q, "c")
    c.wait_count(4)
    c.quiet()
    o["consumer_afterwards_got"] = bodies(c.messages())
    return o


@scenario
def sel_redelivered(ctx):
    """JMSRedelivered / JMSXDeliveryCount selectors: consumer A
    (client-individual) takes two messages and leaves without acking; then
    consumers with `JMSRedelivered = TRUE` and `JMSXDeliveryCount > 1`
    subscribe in turn."""
    o = {}
    q = "/queue/" + u("sem.sel.redeliv.")
    p = ctx.client("p")
    for b in ("r1", "r2"):
        p.send(q, b, persistent=True)
    a = ctx.client("a")
    a.subscribe(q, "a", ack="client-individual")
    a.wait_count(2)
    o["a_got"] = bodies(a.messages())
    a.close()
    for key, sel in [("redelivered", "JMSRedelivered = TRUE"),
                     ("delivery_count", "JMSXDeliveryCount > 1")]:
        c = ctx.client("c-" + key)
        o[key + "_subscribe"] = c.subscribe(q, "s", headers={"selector": sel})
        c.quiet()
        o[key + "_got"] = c.messages()
        c.close()
    c = ctx.client("plain")
    c.subscribe(q, "s")
    c.quiet()
    o["plain_afterwards_got"] = c.messages()
    return o


# --------------------------------------------------------------------------
# Scheduled delivery


def _sched(ctx, o, key, headers, wait_s, topic=False):
    """Subscribe, SEND once with headers, record what arrives within wait_s."""
    d = ("/topic/" if topic else "/queue/") + u("sem.sched.%s." % key)
    c = ctx.client("c-" + key)
    c.subscribe(d, "s")
    p = ctx.client("p-" + key)
    t0 = time.monotonic()
    r = {"headers": headers, "send": p.send(d, key, headers=headers)}
    c.wait(lambda: False, timeout=wait_s)
    msgs = timed(c, t0)
    r["got"] = msgs
    r["count"] = len(msgs)
    r["distinct_message_ids"] = len({m.get("message-id") for m in msgs})
    r["first_all_headers"] = msgs[0]["_headers"] if msgs else None
    r["sender_errors"] = p.errors()
    r["sender_dropped"] = p.disconnected
    o[key] = r


@scenario
def sched_delay(ctx):
    """AMQ_SCHEDULED_DELAY:1000 on a queue and on a topic."""
    o = {}
    _sched(ctx, o, "delay1000", {"AMQ_SCHEDULED_DELAY": "1000"}, 2.5)
    _sched(ctx, o, "delay1000_topic", {"AMQ_SCHEDULED_DELAY": "1000"}, 2.5, topic=True)
    return o


@scenario
def sched_repeat(ctx):
    """PERIOD 300 REPEAT 2, and DELAY 1000 + PERIOD 300 + REPEAT 2."""
    o = {}
    _sched(ctx, o, "period300_repeat2",
           {"AMQ_SCHEDULED_PERIOD": "300", "AMQ_SCHEDULED_REPEAT": "2"}, 2.5)
    _sched(ctx, o, "delay1000_period300_repeat2",
           {"AMQ_SCHEDULED_DELAY": "1000", "AMQ_SCHEDULED_PERIOD": "300",
            "AMQ_SCHEDULED_REPEAT": "2"}, 3.0)
    return o


@scenario
def sched_invalid(ctx):
    """Invalid scheduler headers: non-numeric, negative, repeat without a
    period, a period alone."""
    o = {}
    _sched(ctx, o, "delay_abc", {"AMQ_SCHEDULED_DELAY": "abc"}, 1.5)
    _sched(ctx, o, "delay_neg", {"AMQ_SCHEDULED_DELAY": "-1000"}, 1.5)
    _sched(ctx, o, "delay_float", {"AMQ_SCHEDULED_DELAY": "500.5"}, 1.5)
    _sched(ctx, o, "repeat_only", {"AMQ_SCHEDULED_REPEAT": "2"}, 1.5)
    _sched(ctx, o, "period_neg", {"AMQ_SCHEDULED_PERIOD": "-300", "AMQ_SCHEDULED_REPEAT": "1"}, 1.5)
    _sched(ctx, o, "period_only_500", {"AMQ_SCHEDULED_PERIOD": "500"}, 1.8)
    return o


# --------------------------------------------------------------------------
# Redelivery


def _nack_loop(ctx, o, key, qname, persistent, rounds=9, wait_s=4.0):
    """One message on a client-individual subscription, NACKed every time it
    arrives; then where did it end up?"""
    q = "/queue/" + qname
    c = ctx.client("c-" + key)
    c.subscribe(q, "s", ack="client-individual")
    p = ctx.client("p-" + key)
    # The mark is taken before the SEND / NACK: the MESSAGE may arrive before
    # its RECEIPT.
    mark = c.mark()
    t0 = time.monotonic()
    r = {"persistent": persistent, "send": p.send(q, key, persistent=persistent)["outcome"]}
    deliveries = []
    for _ in range(rounds):
        c.wait(lambda: any(f["cmd"] == "MESSAGE" for f in c.frames[mark:]), timeout=wait_s)
        got = timed(c, t0, since=mark)
        if not got:
            break
        m = got[0]
        deliveries.append({k: m.get(k) for k in
                           ("body", "message-id", "redelivered", "delivery-count",
                            "t_ms", "scheduledJobId", "AMQ_SCHEDULED_DELAY")
                           if k in m})
        mark = c.mark()
        t0 = time.monotonic()
        r.setdefault("nacks", []).append(c.nack(m)["outcome"])
    r["deliveries"] = deliveries
    r["times_delivered"] = len(deliveries)
    r["last_delivery_all_headers"] = None
    if deliveries:
        msgs = c.messages()
        r["last_delivery_all_headers"] = msgs[-1]["_headers"]
    c.close()
    # Where is it now?  Look in both dead-letter conventions and the queue.
    found = {}
    for where in ["ActiveMQ.DLQ", "DLQ." + qname, qname]:
        w = ctx.client("w-%s-%s" % (key, where))
        w.subscribe("/queue/" + where, "w")
        w.quiet(limit=2.0)
        found[where] = [m for m in w.messages() if m["body"] == key]
        w.close()
    r["found_afterwards"] = found
    o[key] = r


@scenario
def redelivery_default(ctx):
    """NACK loop on a queue with the default policy: persistent and not."""
    o = {}
    _nack_loop(ctx, o, "persistent", u("sem.redeliv.default."), True)
    _nack_loop(ctx, o, "non_persistent", u("sem.redeliv.default.np."), False)
    return o


@scenario
def redelivery_policy(ctx):
    """NACK loop on a queue with the policy of run.sh --features: max 3
    redeliveries, initial delay 1000 ms, delay 1000, backoff x2, max 4000 ms
    (ActiveMQ's redeliveryPlugin refuses delays below 1000 ms)."""
    o = {}
    _nack_loop(ctx, o, "persistent", POLICY_PREFIX + u("q"), True, rounds=6, wait_s=6.0)
    return o


@scenario
def redelivery_disconnect(ctx):
    """Unacknowledged client-individual message left by a consumer that
    disconnects: headers when the next consumer gets it."""
    o = {}
    q = "/queue/" + u("sem.redeliv.disc.")
    p = ctx.client("p")
    p.send(q, "d1", persistent=True)
    a = ctx.client("a")
    a.subscribe(q, "a", ack="client-individual")
    a.wait_count(1)
    o["first"] = a.messages()
    a.close()
    b = ctx.client("b")
    b.subscribe(q, "b", ack="client-individual")
    b.wait_count(1)
    b.quiet()
    o["second"] = b.messages()
    return o


if __name__ == "__main__":
    sys.exit(S.main())
