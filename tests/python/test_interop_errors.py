"""Protocol errors seen through stomp.py: the broker answers with an ERROR
frame carrying a `message` header (and `receipt-id` when the offending frame
asked for a receipt), stomp.py's on_error fires, and the connection closes."""

from __future__ import annotations

import pytest


def _assert_fatal(client, *, mentions: str, receipt: str | None = None):
    err = client.wait_error()
    assert err.cmd == "ERROR"
    msg = err.headers.get("message", "")
    assert mentions.lower() in msg.lower(), err.headers
    if receipt is not None:
        assert err.headers.get("receipt-id") == receipt, err.headers
    client.wait_disconnected()
    assert not client.conn.is_connected()
    return err


def test_subscribe_without_id_in_12(stomp_connect):
    c = stomp_connect("1.2")
    # stomp.py's subscribe() insists on an id; send the frame through it raw.
    c.conn.send_frame("SUBSCRIBE", {"destination": "/queue/x", "receipt": "r1"})
    _assert_fatal(c, mentions="id", receipt="r1")


def test_subscribe_without_id_in_11(stomp_connect):
    c = stomp_connect("1.1")
    c.conn.send_frame("SUBSCRIBE", {"destination": "/queue/x"})
    _assert_fatal(c, mentions="id")


def test_ack_of_unknown_id_in_12(stomp_connect):
    c = stomp_connect("1.2")
    c.conn.ack("424242", receipt="r-ack")
    _assert_fatal(c, mentions="424242", receipt="r-ack")


def test_ack_of_unknown_message_id_in_11(stomp_connect):
    c = stomp_connect("1.1")
    c.subscribe("/queue/x", id="s", ack="client")
    c.conn.ack("no-such-message", "s")
    _assert_fatal(c, mentions="no-such-message")


def test_nack_twice_is_an_error(stomp_connect):
    c = stomp_connect("1.2")
    c.subscribe("/queue/twice", id="s", ack="client-individual")
    c.send("/queue/twice", "m", receipt=True)
    m = c.next_message()
    c.ack(m)
    c.conn.ack(m.headers["ack"])
    _assert_fatal(c, mentions="ack")


def test_error_returns_unacked_messages(stomp_connect):
    """A connection closed by an ERROR gives back what it had not acked."""
    c = stomp_connect("1.2")
    c.subscribe("/queue/err", id="s", ack="client-individual")
    c.send("/queue/err", "keep me", receipt=True)
    c.next_message()
    c.conn.ack("999999")
    _assert_fatal(c, mentions="999999")
    c2 = stomp_connect("1.2")
    c2.subscribe("/queue/err", id="s", ack="client-individual")
    m = c2.next_message()
    assert m.body == "keep me"
    assert m.headers.get("redelivered") == "true"


@pytest.mark.parametrize("version", ["1.0", "1.1", "1.2"])
def test_send_to_unknown_destination_kind(stomp_connect, version):
    c = stomp_connect(version)
    c.conn.send("/bogus/x", "body", headers={"receipt": "r-bogus"})
    err = _assert_fatal(c, mentions="destination", receipt="r-bogus")
    # The message has ':' in it: escaped on the wire in 1.1/1.2, raw in 1.0.
    assert "'/bogus/x': use /queue/NAME" in err.headers["message"]


def test_commit_of_unknown_transaction(stomp_connect):
    c = stomp_connect("1.2")
    c.conn.commit("nope")
    _assert_fatal(c, mentions="nope")


def test_invalid_ack_mode(stomp_connect):
    c = stomp_connect("1.1")
    c.conn.subscribe("/queue/x", "s", ack="sometimes")
    _assert_fatal(c, mentions="sometimes")


def test_duplicate_client_id_is_refused(stomp_connect):
    first = stomp_connect("1.2", **{"client-id": "only-one"})
    second = stomp_connect("1.2", expect_error=True, **{"client-id": "only-one"})
    _assert_fatal(second, mentions="only-one")
    # The first connection is unaffected.
    first.send("/queue/x", "ok", receipt=True)
    first.errors.assert_empty()
    # Once it leaves, the id is free again.
    first.disconnect()
    third = stomp_connect("1.2", **{"client-id": "only-one"})
    third.send("/queue/x", "ok", receipt=True)
    third.errors.assert_empty()


def test_one_connections_error_does_not_affect_others(stomp_connect):
    good = stomp_connect("1.2")
    good.subscribe("/queue/iso")
    bad = stomp_connect("1.2")
    bad.conn.send_frame("SUBSCRIBE", {"destination": "/queue/iso"})
    _assert_fatal(bad, mentions="id")
    good.send("/queue/iso", "fine", receipt=True)
    assert good.next_message().body == "fine"
    good.errors.assert_empty()


def test_subscribing_to_another_connections_temp_queue(stomp_connect):
    owner = stomp_connect("1.2")
    owner.subscribe("/temp-queue/mine", id="t")
    owner.send("/queue/tq-name", "x", **{"reply-to": "/temp-queue/mine"})
    thief = stomp_connect("1.2")
    thief.subscribe("/queue/tq-name", id="q")
    remote = thief.next_message().headers["reply-to"]
    thief.conn.subscribe(remote, "steal")
    _assert_fatal(thief, mentions="temporary destination")
    owner.errors.assert_empty()
