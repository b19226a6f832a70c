"""stomp.py and the project's own CLI (`halyard send` / `halyard receive`,
built on the Rust client) talking to each other through the broker."""

from __future__ import annotations

import base64

import pytest


@pytest.mark.parametrize("version", ["1.0", "1.1", "1.2"])
def test_stomp_py_producer_cli_consumer(stomp_connect, halyard_cli, version):
    prod = stomp_connect(version)
    for i in range(5):
        prod.send("/queue/to-cli", f"msg {i}", receipt=(i == 4), **{"x-seq": str(i), "x-from": "stomp.py"})
    out = halyard_cli.receive("/queue/to-cli", 5)
    assert [o["body"] for o in out] == [f"msg {i}" for i in range(5)]
    for i, o in enumerate(out):
        assert o["redelivered"] is False
        assert o["destination"] == "/queue/to-cli"
        assert o["message_id"]
        assert o["headers"]["x-seq"] == str(i)
        assert o["headers"]["x-from"] == "stomp.py"


def test_stomp_py_escaped_headers_and_binary_body_reach_cli(stomp_connect, halyard_cli):
    prod = stomp_connect("1.2")
    tricky = "a:b\nc\\d ✓ 日本"
    binary = b"\x00\x01\x02\xff\xfe\x00end"
    prod.send("/queue/cli-bin", "text ✓", **{"x-tricky": tricky})
    prod.send("/queue/cli-bin", binary, receipt=True)
    text, blob = halyard_cli.receive("/queue/cli-bin", 2)
    assert text["body"] == "text ✓"
    assert text["headers"]["x-tricky"] == tricky
    assert "body" not in blob
    assert base64.b64decode(blob["body_base64"]) == binary


def test_cli_sees_redelivered_after_stomp_py_consumer_leaves(stomp_connect, halyard_cli):
    prod = stomp_connect("1.1")
    prod.send("/queue/redo", "again", receipt=True)
    c = stomp_connect("1.1")
    c.subscribe("/queue/redo", id="s", ack="client")
    assert c.next_message().body == "again"
    c.disconnect()  # without acking
    (o,) = halyard_cli.receive("/queue/redo", 1)
    assert o["body"] == "again"
    assert o["redelivered"] is True
    assert o["headers"]["delivery-count"] == "2"


@pytest.mark.parametrize("version", ["1.0", "1.1", "1.2"])
def test_cli_producer_stomp_py_consumer(stomp_connect, halyard_cli, version):
    cons = stomp_connect(version)
    cons.subscribe("/queue/from-cli", id="s", ack="client-individual")
    halyard_cli.send("/queue/from-cli", "hi from cli ✓", n=3, extra=["-H", "x-origin=cli", "-H", "x-colon=a:b"])
    ms = cons.take_messages(3)
    for m in ms:
        assert m.body == "hi from cli ✓"
        assert m.headers["x-origin"] == "cli"
        assert m.headers["x-colon"] == "a:b"
        assert m.headers["destination"] == "/queue/from-cli"
        cons.ack(m)


def test_cli_persistent_send_to_topic_fans_out_to_stomp_py(stomp_connect, halyard_cli):
    subs = [stomp_connect(v) for v in ("1.0", "1.1", "1.2")]
    for s in subs:
        s.subscribe("/topic/cli-news", id="t")
    halyard_cli.send("/topic/cli-news", "flash", n=2, extra=["--persistent"])
    for s in subs:
        assert [m.body for m in s.take_messages(2)] == ["flash", "flash"]


def test_cli_receive_times_out_when_messages_are_missing(stomp_connect, halyard_cli):
    prod = stomp_connect()
    prod.send("/queue/short", "only one", receipt=True)
    p = halyard_cli.run(
        "receive", "--url", halyard_cli.broker.url, "-d", "/queue/short",
        "-n", "2", "--timeout", "0.5", "--json",
    )
    assert p.returncode != 0
    assert b"received 1 of 2" in p.stderr, p.stderr
    assert p.stdout.count(b"\n") == 1
