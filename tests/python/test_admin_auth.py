"""The admin HTTP API of a broker with users, as an operator's HTTP client
(urllib) sees it: basic auth over the broker's users, the monitor and admin
roles, the health probes open."""

from __future__ import annotations

import base64
import subprocess
import urllib.error
import urllib.request

import pytest

USERS = {"root": ("root-pw", "admins"), "watcher": ("watcher-pw", "monitors")}


def _hash(halyard_bin, password: str) -> str:
    out = subprocess.run(
        [str(halyard_bin), "passwd", "--stdin"],
        input=password + "\n", capture_output=True, text=True, check=True, timeout=30,
    ).stdout
    # `password = "$argon2id$..."`
    return out.split("=", 1)[1].strip()


@pytest.fixture
def secured(broker_factory, halyard_bin, tmp_path):
    users = tmp_path / "users.toml"
    users.write_text("".join(
        f'[[users]]\nname = "{name}"\npassword = {_hash(halyard_bin, pw)}\ngroups = ["{group}"]\n\n'
        for name, (pw, group) in USERS.items()
    ))
    return broker_factory({"security": {"users-file": str(users)}})


def _request(broker, path: str, user: str | None = None, method: str = "GET"):
    """(status, headers, body) of one request, with basic auth as `user`."""
    req = urllib.request.Request(f"http://{broker.host}:{broker.http_port}{path}", method=method,
                                 data=b"" if method != "GET" else None)
    if user is not None:
        token = base64.b64encode(f"{user}:{USERS[user][0]}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()


def test_probes_are_open_and_the_rest_needs_a_login(secured):
    assert _request(secured, "/healthz")[0] == 200
    assert _request(secured, "/readyz")[0] == 200
    status, headers, _ = _request(secured, "/api/status")
    assert status == 401
    assert headers["WWW-Authenticate"] == 'Basic realm="halyard"'


def test_a_monitor_reads_and_an_admin_passes(secured):
    status, _, body = _request(secured, "/api/status", "watcher")
    assert status == 200 and '"role":"master"' in body
    assert _request(secured, "/metrics", "watcher")[0] == 200
    status, _, body = _request(secured, "/api/status", "watcher", method="POST")
    assert status == 403 and "admin role" in body
    # Past the guard: no endpoint takes a POST yet.
    assert _request(secured, "/api/status", "root", method="POST")[0] == 405


def test_a_wrong_password_is_counted(secured):
    req = urllib.request.Request(f"http://{secured.host}:{secured.http_port}/api/status")
    req.add_header("Authorization", "Basic " + base64.b64encode(b"root:nope").decode())
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 401
    _, _, metrics = _request(secured, "/metrics", "root")
    assert "halyard_admin_login_failures_total 1" in metrics.splitlines()
