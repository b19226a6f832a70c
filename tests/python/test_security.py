"""Users and rights with stomp.py, a client nobody here wrote: its
``login``/``passcode`` accepted or refused (one answer whether or not the
user exists), a denied SEND answered with an ERROR while the connection and
its subscription go on, and ``halyard send``/``receive`` logging in through
their URL. Passwords are hashed by ``halyard passwd`` itself."""

from __future__ import annotations

import subprocess

import pytest

from conftest import EVENT_TIMEOUT


def _hash(halyard_bin, password: str) -> str:
    p = subprocess.run(
        [str(halyard_bin), "passwd", "--stdin"],
        input=(password + "\n").encode(),
        capture_output=True,
        timeout=30,
        check=True,
    )
    line = p.stdout.decode().strip()
    assert line.startswith('password = "$argon2id$'), line
    return line.split('"')[1]


@pytest.fixture
def secured(broker_factory, halyard_bin):
    config = {
        "security.users": [
            {"name": "pat", "password": _hash(halyard_bin, "pat-pw"), "groups": ["producers"]},
            {"name": "cora", "password": _hash(halyard_bin, "cora-pw"), "groups": ["consumers"]},
        ],
        "security.authorization": [
            {"queue": "orders.>", "read": ["consumers"], "write": ["producers"], "admin": ["producers"]},
        ],
    }
    return broker_factory(config)


def test_login_and_passcode_are_checked(secured, stomp_connect):
    ok = stomp_connect(target=secured, login="pat", passcode="pat-pw")
    ok.send("/queue/orders.a", "x", receipt=True)

    wrong = stomp_connect(target=secured, login="pat", passcode="nope", expect_error=True)
    unknown = stomp_connect(target=secured, login="ghost", passcode="nope", expect_error=True)
    anonymous = stomp_connect(target=secured, expect_error=True)
    w, u, a = wrong.wait_error(), unknown.wait_error(), anonymous.wait_error()
    assert w.headers["message"] == u.headers["message"], "an unknown user must look like a wrong passcode"
    assert "login failed" in w.headers["message"]
    assert "login required" in a.headers["message"]
    for c in (wrong, unknown, anonymous):
        c.wait_disconnected()


def test_a_denied_send_gets_an_error_and_the_connection_goes_on(secured, stomp_connect):
    pat = stomp_connect(target=secured, login="pat", passcode="pat-pw")
    pat.send("/queue/orders.a", "first", receipt=True)
    cora = stomp_connect(target=secured, login="cora", passcode="cora-pw")
    cora.subscribe("/queue/orders.a", ack="auto")
    assert cora.next_message().body == "first"

    cora.conn.send("/queue/orders.a", "not mine to send", headers={"receipt": "deny-1"})
    err = cora.wait_error()
    assert err.headers.get("receipt-id") == "deny-1"
    assert "not authorized" in err.headers["message"]
    assert "write" in err.headers["message"] and "/queue/orders.a" in err.headers["message"]

    # Still connected, still subscribed.
    pat.send("/queue/orders.a", "second", receipt=True)
    assert cora.next_message().body == "second"
    assert not cora.listener.disconnected.wait(0.2)


def test_halyard_cli_logs_in_through_its_url(secured, halyard_bin):
    url = f"stomp://pat:pat-pw@{secured.host}:{secured.port}"
    p = subprocess.run(
        [str(halyard_bin), "send", "--url", url, "-d", "/queue/orders.cli", "hello"],
        capture_output=True,
        timeout=EVENT_TIMEOUT,
    )
    assert p.returncode == 0, p.stderr.decode()
    bad = f"stomp://pat:wrong@{secured.host}:{secured.port}"
    p = subprocess.run(
        [str(halyard_bin), "send", "--url", bad, "-d", "/queue/orders.cli", "hello"],
        capture_output=True,
        timeout=EVENT_TIMEOUT,
    )
    assert p.returncode != 0
    assert "login failed" in p.stderr.decode(), p.stderr.decode()
