#!/usr/bin/env python3
"""ActiveMQ Classic destination/dispatch semantics over STOMP, observed.

Runs the same scenarios against any STOMP broker (ActiveMQ 5.17 or Halyard)
and records what each consumer received, in order, with the headers that
matter: queue browsing, wildcards, composite destinations, virtual topics,
message groups, exclusive consumers, consumer priority, noLocal, temporary
destinations, retroactive consumers and unknown activemq.* headers
(issue 14).  It asserts nothing: an ERROR frame, a refused receipt or a
dropped connection is an observation like any other.

Usage:
  semantics.py --host H --port P [--only NAME[,NAME...]] [--json OUT]
               [--timeout SECS] [--list]

Every run uses destination names and client ids with a fresh random token,
so runs against the same broker do not see each other's messages.  In the
output (and the JSON) that token is written as "{U}" so that two runs, or two
brokers, can be compared with diff.

Needs stomp.py (tests/python/requirements.txt pins the version).
"""

import argparse
import json
import logging
import sys
import threading
import time
import traceback
import uuid

import stomp
import stomp.protocol

# How long to wait for something that should arrive, and how long nothing
# must arrive to conclude that nothing more will.
DEADLINE = 5.0
QUIET = 0.5

TOKEN = uuid.uuid4().hex[:8]

# stomp.py logs a traceback when a frame is sent on a connection the broker
# has closed; the outcome records that already.
logging.getLogger("stomp.py").setLevel(logging.CRITICAL)

# Headers left out of the per-message records (they differ on every run and
# say nothing about the semantics).
DROP_HEADERS = {"content-length", "timestamp", "expires", "ack"}
# Headers shown next to a message body in the printed summary.
SALIENT = ["destination", "browser", "JMSXGroupID", "JMSXGroupSeq", "JMSXGroupFirstForConsumer",
           "redelivered", "reply-to", "original-destination", "persistent"]


def norm(v):
    """Replace the run's token by {U}, recursively."""
    if isinstance(v, str):
        return v.replace(TOKEN, "{U}")
    if isinstance(v, dict):
        return {norm(k): norm(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [norm(x) for x in v]
    return v


def u(name):
    """A destination/client name unique to this run."""
    return "%s%s" % (name, TOKEN)


# --------------------------------------------------------------------------
# A recording STOMP 1.2 connection


class Client(stomp.ConnectionListener):
    """One STOMP 1.2 connection that records every frame it receives.

    Every operation returns an outcome dict instead of raising:
    {"outcome": "receipt"} / {"outcome": "error", "message": ..., "headers":
    ..., "body": ...} / {"outcome": "disconnected"} / {"outcome": "timeout"} /
    {"outcome": "exception", "exception": ...}.
    """

    def __init__(self, ctx, name, client_id=None):
        self.ctx = ctx
        self.name = name
        self.client_id = client_id
        self.cv = threading.Condition()
        self.frames = []  # dicts: cmd, headers, body
        self.disconnected = False
        self.closed = False
        self.seq = 0
        self.conn = stomp.Connection12([(ctx.host, ctx.port)], heartbeats=(0, 0),
                                       reconnect_attempts_max=1, timeout=DEADLINE)
        self.conn.set_listener("recorder", self)
        ctx.clients.append(self)

    # -- listener callbacks (stomp.py's receiver thread) ----------------------

    def _add(self, frame):
        with self.cv:
            self.frames.append({"cmd": frame.cmd, "headers": dict(frame.headers), "body": frame.body})
            self.cv.notify_all()

    def on_connected(self, frame):
        self._add(frame)

    def on_message(self, frame):
        self._add(frame)

    def on_receipt(self, frame):
        self._add(frame)

    def on_error(self, frame):
        self._add(frame)

    def on_disconnected(self):
        with self.cv:
            self.disconnected = True
            self.cv.notify_all()

    # -- waiting ----------------------------------------------------------------

    def wait(self, pred, timeout=None):
        """Wait until pred() (called under the lock) is true; returns it."""
        deadline = time.monotonic() + (DEADLINE if timeout is None else timeout)
        with self.cv:
            while True:
                r = pred()
                if r:
                    return r
                left = deadline - time.monotonic()
                if left <= 0:
                    return r
                # Poll as well: pred may look at other connections, whose
                # frames do not wake this one.
                self.cv.wait(min(left, 0.05))

    def quiet(self, period=QUIET, limit=None):
        """Wait until no frame has arrived for `period` seconds."""
        end = time.monotonic() + (DEADLINE if limit is None else limit)
        with self.cv:
            while True:
                n = len(self.frames)
                self.cv.wait(period)
                if len(self.frames) == n or time.monotonic() > end:
                    return

    def _outcome(self, mark, receipt_id):
        """Wait for RECEIPT receipt_id, an ERROR after frame index mark, or disconnection."""
        def pred():
            for f in self.frames[mark:]:
                if f["cmd"] == "RECEIPT" and f["headers"].get("receipt-id") == receipt_id:
                    return {"outcome": "receipt"}
                if f["cmd"] == "ERROR":
                    return error_outcome(f)
            if self.disconnected:
                return {"outcome": "disconnected"}
            return None
        r = self.wait(pred)
        return r or {"outcome": "timeout"}

    def _do(self, fn, receipt=True):
        """Run fn(headers) (which sends one frame) and wait for its receipt."""
        self.seq += 1
        rid = "%s-%d" % (self.name, self.seq)
        with self.cv:
            mark = len(self.frames)
        headers = {"receipt": rid} if receipt else {}
        try:
            fn(headers)
        except Exception as e:  # not connected, socket closed...
            return {"outcome": "exception", "exception": "%s: %s" % (type(e).__name__, e)}
        if not receipt:
            return {"outcome": "sent"}
        return self._outcome(mark, rid)

    # -- frames -------------------------------------------------------------------

    def open(self, headers=None):
        """CONNECT (STOMP 1.2); returns the outcome and the CONNECTED headers."""
        h = dict(headers or {})
        if self.client_id:
            h["client-id"] = self.client_id
        try:
            self.conn.connect(wait=False, headers=h, with_connect_command=True)
        except Exception as e:
            self.disconnected = True
            return {"outcome": "exception", "exception": "%s: %s" % (type(e).__name__, e)}

        def pred():
            for f in self.frames:
                if f["cmd"] == "CONNECTED":
                    return {"outcome": "connected", "headers": f["headers"]}
                if f["cmd"] == "ERROR":
                    return error_outcome(f)
            if self.disconnected:
                return {"outcome": "disconnected"}
            return None
        return self.wait(pred) or {"outcome": "timeout"}

    def send(self, dest, body, headers=None, persistent=False, receipt=True):
        h = dict(headers or {})
        if persistent:
            h["persistent"] = "true"

        def fn(rh):
            h.update(rh)
            self.conn.send(dest, body, headers=h)
        return self._do(fn, receipt)

    def subscribe(self, dest, sid, ack="auto", headers=None, receipt=True):
        h = dict(headers or {})

        def fn(rh):
            h.update(rh)
            self.conn.subscribe(dest, id=sid, ack=ack, headers=h)
        return self._do(fn, receipt)

    def unsubscribe(self, sid, headers=None):
        h = dict(headers or {})

        def fn(rh):
            h.update(rh)
            self.conn.unsubscribe(id=sid, headers=h)
        return self._do(fn)

    def ack(self, msg, transaction=None):
        return self._ack_nack("ACK", msg, transaction)

    def nack(self, msg, transaction=None):
        return self._ack_nack("NACK", msg, transaction)

    def _ack_nack(self, cmd, msg, transaction):
        # STOMP 1.2 acknowledges by the MESSAGE's ack header; fall back to its
        # message-id if the broker sent none (e.g. on an auto-ack subscription).
        h = msg.get("_headers", msg.get("headers", {}))
        mid = h.get("ack") or h.get("message-id") or ""

        def fn(rh):
            hh = {"id": mid}
            if transaction:
                hh["transaction"] = transaction
            hh.update(rh)
            self.conn.send_frame(cmd, hh)
        return self._do(fn)

    def begin(self, tx):
        return self._do(lambda rh: self.conn.send_frame("BEGIN", dict(rh, transaction=tx)))

    def commit(self, tx):
        return self._do(lambda rh: self.conn.send_frame("COMMIT", dict(rh, transaction=tx)))

    def abort(self, tx):
        return self._do(lambda rh: self.conn.send_frame("ABORT", dict(rh, transaction=tx)))

    def close(self):
        """DISCONNECT with a receipt (bounded wait), then close the socket."""
        if self.closed:
            return {"outcome": "already-closed"}
        self.closed = True
        out = {"outcome": "disconnected"}
        if not self.disconnected:
            out = self._do(lambda rh: stomp.protocol.Protocol12.disconnect(self.conn, receipt=rh["receipt"]))
        try:
            self.conn.transport.disconnect_socket()
        except Exception:
            pass
        return out

    # -- what arrived -------------------------------------------------------------

    def messages(self, sub=None, since=0):
        """MESSAGE frames (as records), optionally of one subscription."""
        with self.cv:
            fs = [f for f in self.frames[since:] if f["cmd"] == "MESSAGE"]
        if sub is not None:
            fs = [f for f in fs if f["headers"].get("subscription") == sub]
        return [msg_record(f) for f in fs]

    def errors(self, since=0):
        with self.cv:
            return [error_outcome(f) for f in self.frames[since:] if f["cmd"] == "ERROR"]

    def mark(self):
        with self.cv:
            return len(self.frames)

    def count(self, sub=None, since=0):
        with self.cv:
            return sum(1 for f in self.frames[since:] if f["cmd"] == "MESSAGE"
                       and (sub is None or f["headers"].get("subscription") == sub))

    def wait_count(self, n, sub=None, since=0, timeout=None):
        self.wait(lambda: sum(1 for f in self.frames[since:] if f["cmd"] == "MESSAGE"
                              and (sub is None or f["headers"].get("subscription") == sub)) >= n,
                  timeout)
        return self.count(sub, since)

    def wait_browser_end(self, sub, since=0, timeout=None):
        return bool(self.wait(lambda: any(
            f["cmd"] == "MESSAGE" and f["headers"].get("subscription") == sub
            and f["headers"].get("browser") == "end" for f in self.frames[since:]), timeout))


def error_outcome(f):
    return {"outcome": "error", "message": f["headers"].get("message"),
            "headers": {k: v for k, v in f["headers"].items() if k != "content-length"},
            "body": (f["body"] or "")[:300]}


def msg_record(f):
    r = {"body": f["body"]}
    for k, v in f["headers"].items():
        if k not in DROP_HEADERS:
            r[k] = v
    r["_headers"] = f["headers"]  # full set, removed before output
    return r


def strip(v):
    """Remove the private full-header copies from records before output."""
    if isinstance(v, dict):
        return {k: strip(x) for k, x in v.items() if k != "_headers"}
    if isinstance(v, list):
        return [strip(x) for x in v]
    return v


def bodies(msgs):
    return [m["body"] for m in msgs]


class Ctx:
    def __init__(self, host, port):
        self.host = host
        self.port = port
        self.clients = []

    def client(self, name, client_id=None, connect_headers=None):
        c = Client(self, name, client_id)
        c.open_outcome = c.open(connect_headers)
        return c

    def close_all(self):
        for c in self.clients:
            try:
                c.close()
            except Exception:
                pass
        self.clients = []


# --------------------------------------------------------------------------
# Scenarios.  Each takes a Ctx and returns a dict of observations.

SCENARIOS = []


def scenario(fn):
    SCENARIOS.append(fn)
    return fn


@scenario
def browse_basic(ctx):
    """3 persistent messages; a browser (ack auto) sees them and then a
    browser:end MESSAGE; a message sent after the end; then a normal consumer
    still gets everything.  Also a browser on an empty queue."""
    o = {}
    q = "/queue/" + u("sem.browse.")
    p = ctx.client("p")
    o["send"] = [p.send(q, "m%d" % i, persistent=True)["outcome"] for i in (1, 2, 3)]
    b = ctx.client("b")
    o["browser_subscribe"] = b.subscribe(q, "b1", ack="auto", headers={"browser": "true"})
    o["browser_end_seen"] = b.wait_browser_end("b1")
    b.quiet()
    msgs = b.messages()
    o["browser_got"] = msgs
    ends = [m for m in msgs if m.get("browser") == "end"]
    o["browser_first_message_all_headers"] = msgs[0]["_headers"] if msgs else None
    o["browser_end_frame_all_headers"] = ends[0]["_headers"] if ends else None
    o["browser_end_frame_body"] = ends[0]["body"] if ends else None
    o["browser_errors"] = b.errors()
    # Does a browser that has reached the end see messages sent afterwards?
    m = b.mark()
    o["send_after_end"] = p.send(q, "m4", persistent=True)["outcome"]
    b.quiet()
    o["browser_got_after_end"] = b.messages(since=m)
    o["browser_unsubscribe"] = b.unsubscribe("b1")
    c = ctx.client("c")
    o["consumer_subscribe"] = c.subscribe(q, "c1", ack="auto")
    c.wait_count(4, "c1")
    c.quiet()
    o["consumer_got"] = bodies(c.messages())
    # Browsing an empty queue.
    e = ctx.client("e")
    eq = "/queue/" + u("sem.browse.empty.")
    o["empty_browser_subscribe"] = e.subscribe(eq, "e1", headers={"browser": "true"})
    e.wait_browser_end("e1")
    e.quiet()
    o["empty_browser_got"] = e.messages()
    ends = [m for m in e.messages() if m.get("browser") == "end"]
    o["empty_browser_end_frame_all_headers"] = ends[0]["_headers"] if ends else None
    return o


@scenario
def browse_inflight(ctx):
    """4 messages; consumer A (client-individual, prefetch 2) holds 2 unacked;
    a browser then subscribes: which does it see?"""
    o = {}
    q = "/queue/" + u("sem.browse.inflight.")
    p = ctx.client("p")
    o["send"] = [p.send(q, "m%d" % i, persistent=True)["outcome"] for i in (1, 2, 3, 4)]
    a = ctx.client("a")
    o["a_subscribe"] = a.subscribe(q, "a1", ack="client-individual",
                                   headers={"activemq.prefetchSize": "2"})
    a.wait_count(2, "a1")
    a.quiet()
    o["a_got_unacked"] = bodies(a.messages())
    b = ctx.client("b")
    o["browser_subscribe"] = b.subscribe(q, "b1", headers={"browser": "true"})
    b.wait_browser_end("b1")
    b.quiet()
    o["browser_got"] = b.messages()
    o["browser_errors"] = b.errors()
    # A acks nothing and leaves; a second browser then sees all 4 again?
    o["a_close"] = a.close()["outcome"]
    b2 = ctx.client("b2")
    b2.subscribe(q, "b2", headers={"browser": "true"})
    b2.wait_browser_end("b2")
    b2.quiet()
    o["browser_after_a_left_got"] = bodies(b2.messages())
    return o


def _browse_ack_case(ctx, o, key, ack_mode, what, target):
    """Fresh queue with 2 messages; a browser with ack_mode; ACK/NACK
    `target` ("first" message or the "end" frame); then see what a normal
    consumer still gets."""
    q = "/queue/" + u("sem.browse.ack.%s." % key)
    p = ctx.client("p-" + key)
    for i in (1, 2):
        p.send(q, "m%d" % i, persistent=True)
    b = ctx.client("b-" + key)
    r = {"ack_mode": ack_mode, "frame": what, "target": target}
    r["subscribe"] = b.subscribe(q, "b1", ack=ack_mode, headers={"browser": "true"})
    b.wait_browser_end("b1")
    b.quiet()
    msgs = b.messages()
    r["browser_got"] = msgs
    r["first_message_all_headers"] = msgs[0]["_headers"] if msgs else None
    if target == "first":
        tgt = msgs[0] if msgs else None
    else:
        tgt = ([m for m in msgs if m.get("browser") == "end"] or [None])[0]
    if tgt is None:
        r["result"] = {"outcome": "nothing-to-ack"}
    else:
        m = b.mark()
        r["result"] = (b.ack if what == "ACK" else b.nack)(tgt)
        b.quiet()
        r["frames_after"] = b.messages(since=m)
        r["errors_after"] = b.errors(since=m)
        r["connection_dropped"] = b.disconnected
    b.close()
    c = ctx.client("c-" + key)
    c.subscribe(q, "c1")
    c.wait_count(2, "c1")
    c.quiet()
    r["consumer_afterwards_got"] = bodies(c.messages())
    o[key] = r


@scenario
def browse_ack(ctx):
    """ACK / NACK of messages received on a browser subscription."""
    o = {}
    _browse_ack_case(ctx, o, "ack_client_individual", "client-individual", "ACK", "first")
    _browse_ack_case(ctx, o, "nack_client_individual", "client-individual", "NACK", "first")
    _browse_ack_case(ctx, o, "ack_client", "client", "ACK", "first")
    _browse_ack_case(ctx, o, "ack_auto", "auto", "ACK", "first")
    _browse_ack_case(ctx, o, "ack_end_frame", "client-individual", "ACK", "end")
    return o


@scenario
def browse_topic(ctx):
    """browser:true on a topic."""
    o = {}
    t = "/topic/" + u("sem.browse.topic.")
    b = ctx.client("b")
    o["subscribe"] = b.subscribe(t, "b1", headers={"browser": "true"})
    b.quiet()
    o["got_before_send"] = b.messages()
    p = ctx.client("p")
    o["send"] = p.send(t, "t1")
    b.quiet()
    o["got"] = b.messages()
    o["errors"] = b.errors()
    o["connection_dropped"] = b.disconnected
    return o


@scenario
def wildcards(ctx):
    """Topic and queue wildcard subscriptions; SEND to wildcard names."""
    o = {}
    P = u("semwild")  # one path element, unique to the run
    # Topics: one connection per pattern.
    patterns = ["%s" % P, "%s.>" % P, "%s.*" % P, "%s.*.c" % P, "%s.a.>" % P, "%s.*.*" % P,
                "%s.a.*" % P]
    subs = {}
    for i, pat in enumerate(patterns):
        c = ctx.client("t%d" % i)
        subs[pat] = (c, c.subscribe("/topic/" + pat, "s%d" % i))
    p = ctx.client("p")
    targets = [P, P + ".a", P + ".a.b", P + ".a.c", P + ".b.c.d"]
    o["topic_send"] = {t: p.send("/topic/" + t, t)["outcome"] for t in targets}
    for c, _ in subs.values():
        c.quiet()
    o["topic"] = {pat: {"subscribe": r["outcome"],
                        "got": [[m["body"], m.get("destination"), m.get("subscription")]
                                for m in c.messages()]}
                  for pat, (c, r) in subs.items()}

    # Queues: Q.x exists (with a message) before the wildcard consumer.
    Q = u("semwildq")
    o["queue_send_before"] = {t: p.send("/queue/" + t, t, persistent=True)["outcome"]
                              for t in [Q + ".x", Q]}
    qc = ctx.client("qc")
    o["queue_subscribe_Q.>"] = qc.subscribe("/queue/%s.>" % Q, "q1")
    qs = ctx.client("qs")
    o["queue_subscribe_Q.*"] = qs.subscribe("/queue/%s.*" % Q, "q2")
    qc.quiet()
    qs.quiet()
    o["queue_send_after"] = {t: p.send("/queue/" + t, t, persistent=True)["outcome"]
                             for t in [Q + ".y.z", Q + ".w"]}
    qc.quiet()
    qs.quiet()
    o["queue_Q.>_got"] = [[m["body"], m.get("destination"), m.get("subscription")]
                          for m in qc.messages()]
    o["queue_Q.*_got"] = [[m["body"], m.get("destination"), m.get("subscription")]
                          for m in qs.messages()]
    qc.close()
    qs.close()
    # What the wildcard consumers left behind on the root queue Q itself.
    qr = ctx.client("qr")
    qr.subscribe("/queue/" + Q, "r")
    qr.quiet()
    o["queue_Q_exact_got_afterwards"] = bodies(qr.messages())

    # SEND to wildcard names.
    S = u("semwilds")
    cons = {}
    for name in ["/topic/%s.a" % S, "/topic/%s.b.c" % S, "/topic/%s.>" % S,
                 "/queue/%s.a" % S, "/queue/%s.b" % S]:
        c = ctx.client("w-" + name.split("/")[1] + name.rsplit(".", 1)[1])
        c.subscribe(name, "w")
        cons[name] = c
    s = ctx.client("s")
    o["send_to_wildcard"] = {}
    for dest, body in [("/topic/%s.>" % S, "to-topic-gt"), ("/topic/%s.*" % S, "to-topic-star"),
                       ("/queue/%s.*" % S, "to-queue-star"), ("/queue/%s.>" % S, "to-queue-gt")]:
        o["send_to_wildcard"][dest] = s.send(dest, body, persistent=True)
    s.quiet()
    o["send_to_wildcard_sender_errors"] = s.errors()
    o["send_to_wildcard_sender_dropped"] = s.disconnected
    for c in cons.values():
        c.quiet()
    o["send_to_wildcard_got"] = {name: [[m["body"], m.get("destination")] for m in c.messages()]
                                 for name, c in cons.items()}
    for name, c in cons.items():
        if name.startswith("/queue/"):
            c.close()
    # Did a literal queue named "S.*" / "S.>" keep anything?  Drain with a
    # wildcard consumer and look at the destination headers.
    d = ctx.client("drain")
    d.subscribe("/queue/%s.>" % S, "d")
    d.quiet()
    o["send_to_wildcard_queue_leftovers"] = [[m["body"], m.get("destination")] for m in d.messages()]
    return o


@scenario
def wildcard_durable(ctx):
    """Durable subscription on /topic/P.>; offline publishes; reconnect."""
    o = {}
    P = u("semwdur")
    cid = u("sem-wdur-")
    sub_headers = {"activemq.subscriptionName": "d1"}
    d = ctx.client("d", client_id=cid)
    o["connect"] = d.open_outcome["outcome"]
    o["subscribe"] = d.subscribe("/topic/%s.>" % P, "s1", headers=sub_headers)
    p = ctx.client("p")
    p.send("/topic/%s.live" % P, "live", persistent=True)
    d.wait_count(1)
    o["got_while_connected"] = [[m["body"], m.get("destination")] for m in d.messages()]
    o["disconnect"] = d.close()
    o["offline_send"] = {t: p.send("/topic/" + t, t, persistent=True)["outcome"]
                         for t in [P + ".a", P + ".b.c", P]}
    d2 = ctx.client("d2", client_id=cid)
    o["reconnect"] = d2.open_outcome
    o["resubscribe"] = d2.subscribe("/topic/%s.>" % P, "s1", headers=sub_headers)
    d2.wait_count(2)
    d2.quiet()
    o["got_after_reconnect"] = [[m["body"], m.get("destination"), m.get("subscription")]
                                for m in d2.messages()]
    # Removing the durable subscription while its consumer is open, then
    # after a plain UNSUBSCRIBE.
    o["unsubscribe_durable_while_active"] = d2.unsubscribe("s1", headers=sub_headers)
    o["unsubscribe_plain"] = d2.unsubscribe("s1")
    o["unsubscribe_durable_after_plain"] = d2.unsubscribe("s1", headers=sub_headers)
    return o


@scenario
def composite(ctx):
    """Composite destinations on SEND (queue+topic, queue+queue, unprefixed
    second element), on SUBSCRIBE, and inside a transaction."""
    o = {}
    A, B, C = u("semcompA"), u("semcompB"), u("semcompC")
    ca, cb, cc, ct = ctx.client("ca"), ctx.client("cb"), ctx.client("cc"), ctx.client("ct")
    ca.subscribe("/queue/" + A, "a")
    cb.subscribe("/topic/" + B, "b")
    cc.subscribe("/queue/" + C, "c")
    # Would an unprefixed second element name a topic?
    ct.subscribe("/topic/" + C, "ct")
    p = ctx.client("p")
    o["send_queue_and_topic"] = p.send("/queue/%s,/topic/%s" % (A, B), "x1", persistent=True)
    o["send_queue_and_queue"] = p.send("/queue/%s,/queue/%s" % (A, C), "x2", persistent=True)
    o["send_queue_and_bare_name"] = p.send("/queue/%s,%s" % (A, C), "x3", persistent=True)
    for c in (ca, cb, cc, ct):
        c.quiet()
    keep = ("body", "destination", "message-id", "original-destination", "subscription")
    o["got"] = {"/queue/A": [{k: m.get(k) for k in keep if k in m} for m in ca.messages()],
                "/topic/B": [{k: m.get(k) for k in keep if k in m} for m in cb.messages()],
                "/queue/C": [{k: m.get(k) for k in keep if k in m} for m in cc.messages()],
                "/topic/C": [{k: m.get(k) for k in keep if k in m} for m in ct.messages()]}
    o["full_headers_first_copies"] = {"/queue/A": (ca.messages() or [{}])[0].get("_headers"),
                                      "/topic/B": (cb.messages() or [{}])[0].get("_headers")}
    mids = {}
    for c in (ca, cb, cc):
        for m in c.messages():
            mids.setdefault(m["body"], []).append(m.get("message-id"))
    o["same_message_id_for_copies"] = {b: (len(set(v)) == 1 if len(v) > 1 else None)
                                       for b, v in mids.items()}
    o["sender_errors"] = p.errors()

    # SUBSCRIBE to a composite.
    A2, C2 = u("semcompA2"), u("semcompC2")
    s = ctx.client("s")
    o["subscribe_composite"] = s.subscribe("/queue/%s,/queue/%s" % (A2, C2), "comp")
    p.send("/queue/" + A2, "y1", persistent=True)
    p.send("/queue/" + C2, "y2", persistent=True)
    s.wait_count(2)
    s.quiet()
    o["composite_subscription_got"] = [[m["body"], m.get("destination"), m.get("subscription")]
                                       for m in s.messages()]
    # A topic+topic composite subscription.
    T1, T2 = u("semcompT1"), u("semcompT2")
    st = ctx.client("st")
    o["subscribe_composite_topics"] = st.subscribe("/topic/%s,/topic/%s" % (T1, T2), "compt")
    p.send("/topic/" + T1, "z1")
    p.send("/topic/" + T2, "z2")
    st.wait_count(2)
    st.quiet()
    o["composite_topic_subscription_got"] = [[m["body"], m.get("destination")]
                                             for m in st.messages()]

    # Inside a transaction: ABORT then COMMIT.
    A3, C3 = u("semcompA3"), u("semcompC3")
    ta, tc = ctx.client("ta"), ctx.client("tc")
    ta.subscribe("/queue/" + A3, "a")
    tc.subscribe("/queue/" + C3, "c")
    t = ctx.client("t")
    comp = "/queue/%s,/queue/%s" % (A3, C3)
    o["tx"] = {"begin1": t.begin("tx1")["outcome"],
               "send1": t.send(comp, "t1", headers={"transaction": "tx1"})["outcome"],
               "abort1": t.abort("tx1")["outcome"],
               "begin2": t.begin("tx2")["outcome"],
               "send2": t.send(comp, "t2", headers={"transaction": "tx2"})["outcome"]}
    ta.quiet()
    o["tx"]["delivered_before_commit"] = bodies(ta.messages()) + bodies(tc.messages())
    o["tx"]["commit2"] = t.commit("tx2")["outcome"]
    ta.wait_count(1)
    tc.wait_count(1)
    ta.quiet()
    tc.quiet()
    o["tx"]["A_got"] = [[m["body"], m.get("destination")] for m in ta.messages()]
    o["tx"]["C_got"] = [[m["body"], m.get("destination")] for m in tc.messages()]
    return o


@scenario
def virtual_topic(ctx):
    """/topic/VirtualTopic.V fanned out to /queue/Consumer.<name>.VirtualTopic.V."""
    o = {}
    V = "VirtualTopic." + u("semvt")
    topic = "/topic/" + V
    qa, qb, qc = ("/queue/Consumer.%s.%s" % (n, V) for n in "ABC")
    p = ctx.client("p")
    # Sent before any Consumer.* queue exists.
    o["send_before_consumers"] = [p.send(topic, "pre%d" % i, persistent=True)["outcome"]
                                  for i in (1, 2)]
    a1, a2, b1, t = ctx.client("a1"), ctx.client("a2"), ctx.client("b1"), ctx.client("t")
    o["subscribe"] = {"a1": a1.subscribe(qa, "a")["outcome"], "a2": a2.subscribe(qa, "a")["outcome"],
                      "b1": b1.subscribe(qb, "b")["outcome"], "plain_topic": t.subscribe(topic, "t")["outcome"]}
    o["send"] = [p.send(topic, "v%d" % i, persistent=True)["outcome"] for i in range(1, 7)]
    a1.wait(lambda: a1.count() + a2.count() >= 6)
    b1.wait_count(6)
    t.wait_count(6)
    for c in (a1, a2, b1, t):
        c.quiet()
    o["Consumer.A_1_got"] = [[m["body"], m.get("destination")] for m in a1.messages()]
    o["Consumer.A_2_got"] = [[m["body"], m.get("destination")] for m in a2.messages()]
    o["Consumer.B_got"] = [[m["body"], m.get("destination")] for m in b1.messages()]
    o["plain_topic_subscriber_got"] = [[m["body"], m.get("destination")] for m in t.messages()]
    o["message_headers_Consumer.B_first"] = (b1.messages() or [{}])[0].get("_headers")
    ids = {}
    for c in (a1, a2, b1, t):
        for m in c.messages():
            ids.setdefault(m["body"], set()).add(m.get("message-id"))
    o["one_message_id_per_body_across_copies"] = all(len(v) == 1 for v in ids.values()) if ids else None
    # A consumer queue created only now.
    c1 = ctx.client("c1")
    o["Consumer.C_subscribe_late"] = c1.subscribe(qc, "c")
    c1.quiet()
    o["Consumer.C_got_earlier"] = bodies(c1.messages())
    # Consumer.A's consumers all leave; the queue keeps receiving copies?
    a1.close()
    a2.close()
    o["send_while_A_has_no_consumer"] = p.send(topic, "v7", persistent=True)["outcome"]
    b1.wait_count(7)
    a3 = ctx.client("a3")
    a3.subscribe(qa, "a")
    a3.wait_count(1)
    a3.quiet()
    o["Consumer.A_new_consumer_got"] = bodies(a3.messages())
    c1.quiet()
    o["Consumer.C_got_v7"] = bodies(c1.messages())
    return o


def _grp(msgs):
    return [[m["body"], m.get("JMSXGroupID"), m.get("JMSXGroupSeq"),
             m.get("JMSXGroupFirstForConsumer"), m.get("redelivered")] for m in msgs]


def _gsend(p, q, body, seq=None):
    """Send body "gN-..." in group gN (the group is read back from the body,
    as a broker need not echo JMSXGroupID)."""
    h = {"JMSXGroupID": body.split("-")[0]}
    if seq is not None:
        h["JMSXGroupSeq"] = seq
    return p.send(q, body, headers=h, persistent=True)["outcome"]


def _groups_of(msgs):
    return sorted({m["body"].split("-")[0] for m in msgs})


@scenario
def groups(ctx):
    """Message groups: assignment, JMSXGroupFirstForConsumer, reassignment
    when the owner closes, JMSXGroupSeq -1 closing a group.
    Records are [body, JMSXGroupID, JMSXGroupSeq, JMSXGroupFirstForConsumer, redelivered];
    a message's group is the part of its body before the first "-"."""
    o = {"record_format": ["body", "JMSXGroupID", "JMSXGroupSeq", "JMSXGroupFirstForConsumer",
                           "redelivered"]}
    # Part 1: client-individual, prefetch 100 (never full), A and B present
    # before the messages.
    q = "/queue/" + u("sem.groups.")
    a, b = ctx.client("a"), ctx.client("b")
    hdr = {"activemq.prefetchSize": "100"}
    a.subscribe(q, "a", ack="client-individual", headers=hdr)
    b.subscribe(q, "b", ack="client-individual", headers=hdr)
    p = ctx.client("p")
    for i in range(1, 5):
        for g in ("g1", "g2"):
            _gsend(p, q, "%s-%d" % (g, i))
    a.wait(lambda: a.count() + b.count() >= 8)
    a.quiet()
    b.quiet()
    am = a.messages()
    o["1_A_got"] = _grp(am)
    o["1_B_got"] = _grp(b.messages())
    o["1_A_first_message_all_headers"] = (am or [{}])[0].get("_headers")
    o["1_A_second_message_all_headers"] = (am + [{}, {}])[1].get("_headers")
    # A acks its first message only, then disconnects: where do its unacked
    # messages go, and then new messages of its group(s)?
    gA = _groups_of(am)
    o["A_owned_groups"] = gA
    if am:
        o["A_ack_first"] = a.ack(am[0])["outcome"]
    mb = b.mark()
    o["A_close"] = a.close()["outcome"]
    b.wait_count(max(len(am) - 1, 0), since=mb)
    b.quiet()
    o["2_after_A_closed_B_got"] = _grp(b.messages(since=mb))
    o["2_B_first_redelivered_all_headers"] = (b.messages(since=mb) or [{}])[0].get("_headers")
    g = gA[0] if gA else "g1"
    mb = b.mark()
    for i in (5, 6):
        _gsend(p, q, "%s-%d" % (g, i))
    b.wait_count(2, since=mb)
    b.quiet()
    o["3_new_msgs_of_A_group_B_got"] = _grp(b.messages(since=mb))
    # C joins: do existing groups stay with B; where do new groups go?
    c = ctx.client("c")
    c.subscribe(q, "c", ack="client-individual", headers=hdr)
    mb = b.mark()
    for body in ("g1-7", "g2-7", "g3-1", "g4-1", "g5-1", "g3-2", "g4-2", "g5-2"):
        _gsend(p, q, body)
    b.wait(lambda: b.count(since=mb) + c.count() >= 8)
    b.quiet()
    c.quiet()
    o["4_C_joined_B_got"] = _grp(b.messages(since=mb))
    o["4_C_joined_C_got"] = _grp(c.messages())
    # Close g2 (owned by B) with JMSXGroupSeq:-1, then more g2.
    mb, mc = b.mark(), c.mark()
    _gsend(p, q, "g2-close", seq="-1")
    b.wait(lambda: b.count(since=mb) + c.count(since=mc) >= 1)
    b.quiet()
    c.quiet()
    o["5_g2_closing_msg_B_got"] = _grp(b.messages(since=mb))
    o["5_g2_closing_msg_C_got"] = _grp(c.messages(since=mc))
    mb, mc = b.mark(), c.mark()
    for i in (8, 9, 10, 11):
        _gsend(p, q, "g2-%d" % i)
    b.wait(lambda: b.count(since=mb) + c.count(since=mc) >= 4)
    b.quiet()
    c.quiet()
    o["6_g2_after_close_B_got"] = _grp(b.messages(since=mb))
    o["6_g2_after_close_C_got"] = _grp(c.messages(since=mc))
    b.close()
    c.close()

    # Part 2: prefetch 1, ack auto, three groups, two consumers.
    q2 = "/queue/" + u("sem.groups.p1.")
    a, b = ctx.client("a1p"), ctx.client("b1p")
    a.subscribe(q2, "a", headers={"activemq.prefetchSize": "1"})
    b.subscribe(q2, "b", headers={"activemq.prefetchSize": "1"})
    for i in range(1, 4):
        for g in ("g1", "g2", "g3"):
            _gsend(p, q2, "%s-%d" % (g, i))
    a.wait(lambda: a.count() + b.count() >= 9)
    a.quiet()
    b.quiet()
    o["7_prefetch1_auto_A_got"] = _grp(a.messages())
    o["7_prefetch1_auto_B_got"] = _grp(b.messages())

    # Part 3: messages queued before any consumer; then A and B subscribe.
    q3 = "/queue/" + u("sem.groups.pre.")
    for i in range(1, 3):
        for g in ("g1", "g2"):
            _gsend(p, q3, "%s-%d" % (g, i))
    a, b = ctx.client("a3"), ctx.client("b3")
    a.subscribe(q3, "a", ack="client-individual", headers=hdr)
    b.subscribe(q3, "b", ack="client-individual", headers=hdr)
    a.wait(lambda: a.count() + b.count() >= 4)
    a.quiet()
    b.quiet()
    o["8_queued_first_A_got"] = _grp(a.messages())
    o["8_queued_first_B_got"] = _grp(b.messages())
    return o


@scenario
def exclusive(ctx):
    """Exclusive consumers: A (exclusive), B (plain), C (exclusive, later),
    A leaves, D (exclusive, priority 10) arrives, the owner leaves."""
    o = {}
    q = "/queue/" + u("sem.exclusive.")
    p = ctx.client("p")
    cons = {}

    def sub(name, headers):
        c = ctx.client(name)
        cons[name] = c
        return c.subscribe(q, name, headers=headers)["outcome"]

    n = [0]

    def burst(label, k=4):
        marks = {name: c.mark() for name, c in cons.items() if not c.closed}
        for _ in range(k):
            n[0] += 1
            p.send(q, "e%d" % n[0], persistent=True)
        total = lambda: sum(c.count(since=marks[nm]) for nm, c in cons.items() if nm in marks)
        p.wait(lambda: total() >= k)
        for nm in marks:
            cons[nm].quiet()
        o[label] = {nm: bodies(cons[nm].messages(since=marks[nm])) for nm in marks}

    o["subscribe_A_exclusive"] = sub("A", {"activemq.exclusive": "true"})
    o["subscribe_B_plain"] = sub("B", {})
    burst("1_A_excl_B_plain")
    o["subscribe_C_exclusive"] = sub("C", {"activemq.exclusive": "true"})
    burst("2_C_excl_joined")
    o["close_A"] = cons["A"].close()["outcome"]
    burst("3_A_closed")
    o["subscribe_D_exclusive_priority10"] = sub("D", {"activemq.exclusive": "true",
                                                      "activemq.priority": "10"})
    burst("4_D_excl_prio10_joined")
    # Close the consumer that received burst 4 (D if it was not just one).
    owner = [nm for nm, got in o["4_D_excl_prio10_joined"].items() if got]
    owner = owner[0] if len(owner) == 1 else "D"
    o["closed_owner_of_4"] = owner
    cons[owner].close()
    burst("5_owner_closed")
    # A second queue: only non-exclusive consumers first, then an exclusive.
    q2 = "/queue/" + u("sem.exclusive.late.")
    x, y = ctx.client("X"), ctx.client("Y")
    x.subscribe(q2, "x")
    y.subscribe(q2, "y", headers={"activemq.exclusive": "true"})
    for i in range(4):
        p.send(q2, "f%d" % (i + 1), persistent=True)
    x.wait(lambda: x.count() + y.count() >= 4)
    x.quiet()
    y.quiet()
    o["6_plain_X_then_exclusive_Y"] = {"X": bodies(x.messages()), "Y": bodies(y.messages())}
    return o


@scenario
def consumer_priority(ctx):
    """activemq.priority on queue consumers."""
    o = {}
    q = "/queue/" + u("sem.prio.")
    low, high = ctx.client("low"), ctx.client("high")
    o["subscribe_low"] = low.subscribe(q, "low", headers={"activemq.priority": "1",
                                                          "activemq.prefetchSize": "100"})["outcome"]
    o["subscribe_high"] = high.subscribe(q, "high", headers={"activemq.priority": "10",
                                                             "activemq.prefetchSize": "100"})["outcome"]
    p = ctx.client("p")
    for i in range(10):
        p.send(q, "p%d" % (i + 1), persistent=True)
    low.wait(lambda: low.count() + high.count() >= 10)
    low.quiet()
    high.quiet()
    o["big_prefetch"] = {"low_prio1": bodies(low.messages()), "high_prio10": bodies(high.messages())}
    # High priority with prefetch 2, not acking.
    q2 = "/queue/" + u("sem.prio.full.")
    low2, high2 = ctx.client("low2"), ctx.client("high2")
    low2.subscribe(q2, "low", ack="client-individual",
                   headers={"activemq.priority": "1", "activemq.prefetchSize": "100"})
    high2.subscribe(q2, "high", ack="client-individual",
                    headers={"activemq.priority": "10", "activemq.prefetchSize": "2"})
    for i in range(10):
        p.send(q2, "r%d" % (i + 1), persistent=True)
    low2.wait(lambda: low2.count() + high2.count() >= 10)
    low2.quiet()
    high2.quiet()
    o["high_prefetch2_unacked"] = {"low_prio1": bodies(low2.messages()),
                                   "high_prio10": bodies(high2.messages())}
    # Messages queued before the consumers; low subscribes first.
    q3 = "/queue/" + u("sem.prio.queued.")
    for i in range(10):
        p.send(q3, "s%d" % (i + 1), persistent=True)
    low3, high3 = ctx.client("low3"), ctx.client("high3")
    low3.subscribe(q3, "low", headers={"activemq.priority": "1", "activemq.prefetchSize": "100"})
    high3.subscribe(q3, "high", headers={"activemq.priority": "10", "activemq.prefetchSize": "100"})
    low3.wait(lambda: low3.count() + high3.count() >= 10)
    low3.quiet()
    high3.quiet()
    o["queued_before_low_subscribed_first"] = {"low_prio1": bodies(low3.messages()),
                                               "high_prio10": bodies(high3.messages())}
    return o


@scenario
def no_local(ctx):
    """activemq.noLocal:true on a topic (and, for comparison, on a queue)."""
    o = {}
    t = "/topic/" + u("sem.nolocal.")
    x = ctx.client("x")
    o["subscribe_noLocal"] = x.subscribe(t, "nl", headers={"activemq.noLocal": "true"})
    o["subscribe_plain_same_conn"] = x.subscribe(t, "plain")
    z = ctx.client("z")
    z.subscribe(t, "obs")
    x.send(t, "from-x")
    z.send(t, "from-z")
    z.wait_count(2)
    x.wait_count(3)
    x.quiet()
    o["x_noLocal_sub_got"] = bodies(x.messages("nl"))
    o["x_plain_sub_got"] = bodies(x.messages("plain"))
    o["other_conn_got"] = bodies(z.messages())
    q = "/queue/" + u("sem.nolocal.q.")
    y = ctx.client("y")
    o["queue_subscribe_noLocal"] = y.subscribe(q, "nlq", headers={"activemq.noLocal": "true"})
    y.send(q, "q-from-y")
    y.quiet()
    o["queue_noLocal_self_send_got"] = bodies(y.messages())
    w = ctx.client("w")
    w.send(q, "q-from-w")
    y.quiet()
    o["queue_noLocal_other_send_got"] = bodies(y.messages())
    y.close()
    w.subscribe(q, "drain")
    w.quiet()
    o["queue_left_for_a_later_consumer"] = bodies(w.messages())
    return o


def _temp(ctx, kind):
    o = {}
    name = "/%s/%s" % (kind, u("x"))
    owner = ctx.client("owner")
    o["owner_subscribe"] = owner.subscribe(name, "t")
    o["owner_send_to_own"] = owner.send(name, "self")
    owner.wait_count(1)
    owner.quiet()
    o["owner_got_own"] = [[m["body"], m.get("destination")] for m in owner.messages()]
    o["owner_got_own_full_headers"] = (owner.messages() or [{}])[0].get("_headers")
    # Request/reply through a queue.
    req = "/queue/" + u("sem.req.")
    r = ctx.client("responder")
    r.subscribe(req, "req")
    owner.send(req, "request", headers={"reply-to": name})
    r.wait_count(1)
    rm = r.messages()
    seen = rm[0].get("reply-to") if rm else None
    o["responder_sees_reply_to"] = seen
    o["responder_request_full_headers"] = rm[0]["_headers"] if rm else None
    if seen:
        mo = owner.mark()
        o["reply_send"] = r.send(seen, "reply")
        owner.wait_count(1, since=mo)
        owner.quiet()
        o["owner_got_reply"] = [[m["body"], m.get("destination")] for m in owner.messages(since=mo)]
        # Can the responder subscribe to the name it saw?
        mr, mo = r.mark(), owner.mark()
        o["responder_subscribe_to_reply_to"] = r.subscribe(seen, "steal")
        for i in (1, 2):
            owner.send(name, "after-steal-%d" % i)
        r.quiet()
        owner.quiet()
        o["responder_sub_got"] = [[m["body"], m.get("destination")] for m in r.messages("steal")]
        o["owner_got_after_steal"] = bodies(owner.messages(since=mo))
        o["responder_errors"] = r.errors(since=mr)
        # A third connection, by the owner's own spelling.
        th = ctx.client("third")
        o["third_subscribe_owner_spelling"] = th.subscribe(name, "t3")
        mo = owner.mark()
        owner.send(name, "to-own-name-after-third")
        owner.quiet()
        th.quiet()
        o["third_got"] = [[m["body"], m.get("destination")] for m in th.messages()]
        o["owner_got_after_third"] = bodies(owner.messages(since=mo))
        # The owner disconnects; what does the responder's subscription see,
        # and what does a SEND to the name do (from a fresh connection)?
        mr = r.mark()
        o["responder_dropped_before_owner_left"] = r.disconnected
        o["owner_disconnect"] = owner.close()["outcome"]
        time.sleep(QUIET)  # let the broker tear down the temporary destination
        o["responder_frames_after_owner_left"] = r.messages(since=mr)
        o["responder_errors_after_owner_left"] = r.errors(since=mr)
        r2 = ctx.client("responder2")
        o["send_after_owner_left"] = r2.send(seen, "after-owner-left")
        r2.quiet()
        o["sender_dropped_after_send"] = r2.disconnected
    return o


@scenario
def temp_topic(ctx):
    """/temp-topic/x: own use, reply-to rewriting, other connections, owner leaving."""
    return _temp(ctx, "temp-topic")


@scenario
def temp_queue(ctx):
    """The same for /temp-queue/x, for comparison."""
    return _temp(ctx, "temp-queue")


@scenario
def retroactive(ctx):
    """activemq.retroactive:true on a topic; with and without ActiveMQ.Retain."""
    o = {}
    t = "/topic/" + u("sem.retro.")
    p = ctx.client("p")
    o["send"] = [p.send(t, "r1")["outcome"],
                 p.send(t, "r2-retain", headers={"ActiveMQ.Retain": "true"})["outcome"],
                 p.send(t, "r3")["outcome"],
                 p.send(t, "r4-persistent", persistent=True)["outcome"]]
    r = ctx.client("r")
    o["subscribe_retroactive"] = r.subscribe(t, "r", headers={"activemq.retroactive": "true"})
    r.quiet()
    o["retroactive_got"] = r.messages()
    n = ctx.client("n")
    o["subscribe_plain"] = n.subscribe(t, "n")
    n.quiet()
    o["plain_got"] = n.messages()
    p.send(t, "r5-live")
    r.wait_count(len(o["retroactive_got"]) + 1)
    r.quiet()
    o["retroactive_got_total"] = bodies(r.messages())
    return o


@scenario
def unknown_activemq_header(ctx):
    """SUBSCRIBE with an unknown activemq.* header, and with a malformed known one."""
    o = {}
    q = "/queue/" + u("sem.bogus.")
    c = ctx.client("c")
    o["subscribe_bogus"] = c.subscribe(q, "s", headers={"activemq.bogus": "1"})
    p = ctx.client("p")
    p.send(q, "b1")
    c.wait_count(1)
    c.quiet()
    o["delivered"] = bodies(c.messages())
    o["connection_dropped"] = c.disconnected
    q2 = "/queue/" + u("sem.bogus.bad.")
    d = ctx.client("d")
    o["subscribe_prefetch_not_a_number"] = d.subscribe(q2, "s", headers={"activemq.prefetchSize": "abc"})
    p.send(q2, "b2")
    d.quiet()
    o["prefetch_not_a_number_delivered"] = bodies(d.messages())
    o["prefetch_not_a_number_dropped"] = d.disconnected
    e = ctx.client("e")
    o["send_with_bogus_activemq_header"] = e.send(q, "b3", headers={"activemq.bogus": "1"})
    c.quiet()
    o["send_bogus_header_delivered_as"] = [m for m in c.messages() if m["body"] == "b3"]
    return o


# --------------------------------------------------------------------------
# Running and printing


def short(m):
    if isinstance(m, dict) and "body" in m:
        extra = ["%s=%s" % (k, m[k]) for k in SALIENT if k in m]
        return "%s[%s]" % (m["body"], ",".join(extra)) if extra else str(m["body"])
    return json.dumps(m)


def render(v, indent):
    pad = "  " * indent
    if isinstance(v, dict) and "outcome" in v:
        s = v["outcome"]
        if v.get("message"):
            s += ": " + v["message"]
        if v.get("exception"):
            s += ": " + v["exception"]
        return s
    if isinstance(v, list) and v and all(isinstance(m, dict) and "body" in m for m in v):
        return " ".join(short(m) for m in v)
    if isinstance(v, dict) and v and len(json.dumps(v)) > 100:
        lines = [""]
        for k, x in v.items():
            lines.append("%s  %s: %s" % (pad, k, render(x, indent + 1)))
        return "\n".join(lines)
    if isinstance(v, list) and v and len(json.dumps(v)) > 100:
        return "".join("\n%s  - %s" % (pad, render(x, indent + 1)) for x in v)
    return json.dumps(v)


def main():
    global DEADLINE
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=61613)
    ap.add_argument("--only", help="comma-separated scenario names")
    ap.add_argument("--json", help="write the observations here")
    ap.add_argument("--timeout", type=float, default=DEADLINE,
                    help="seconds to wait for anything expected (default %(default)s)")
    ap.add_argument("--list", action="store_true", help="list the scenarios and exit")
    args = ap.parse_args()
    DEADLINE = args.timeout
    if args.list:
        for fn in SCENARIOS:
            print("%-24s %s" % (fn.__name__, (fn.__doc__ or "").strip().split("\n")[0]))
        return 0
    names = [fn.__name__ for fn in SCENARIOS]
    chosen = SCENARIOS
    if args.only:
        want = [w.strip() for w in args.only.split(",") if w.strip()]
        bad = [w for w in want if w not in names]
        if bad:
            ap.error("unknown scenario(s): %s (have: %s)" % (", ".join(bad), ", ".join(names)))
        chosen = [fn for fn in SCENARIOS if fn.__name__ in want]

    # The server header of a first connection says which broker this is.
    ctx = Ctx(args.host, args.port)
    probe = ctx.client("probe")
    server = (probe.open_outcome.get("headers") or {}).get("server")
    ctx.close_all()
    if probe.open_outcome.get("outcome") != "connected":
        print("cannot connect to %s:%d: %s" % (args.host, args.port, probe.open_outcome), file=sys.stderr)
        return 1
    out = {"broker": {"host": args.host, "port": args.port, "server": server},
           "stomp.py": stomp.__version__, "token": "{U}",
           "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "scenarios": {}}
    print("broker %s:%d  server: %s" % (args.host, args.port, server))
    for fn in chosen:
        ctx = Ctx(args.host, args.port)
        t0 = time.monotonic()
        rec = {}
        try:
            rec["observations"] = fn(ctx)
        except Exception:
            rec["crashed"] = traceback.format_exc()
        finally:
            ctx.close_all()
        rec["seconds"] = round(time.monotonic() - t0, 2)
        rec = norm(strip(rec))
        out["scenarios"][fn.__name__] = rec
        print("\n== %s (%.1fs)" % (fn.__name__, rec["seconds"]))
        if "crashed" in rec:
            print("  SCRIPT ERROR:\n" + rec["crashed"])
        for k, v in (rec.get("observations") or {}).items():
            print("  %s: %s" % (k, render(v, 1)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1, sort_keys=False)
            f.write("\n")
        print("\nwrote %s" % args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
