"""stomp.py over TLS (``stomp+ssl`` listeners, docs/TLS.md).

Certificates are made per test with the ``openssl`` command line into the
test's temporary directory: a throwaway CA, a broker certificate for
127.0.0.1 and a client certificate (``/O=Acme/CN=app1``).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import stomp

from conftest import Collector, _free_port

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(d: Path) -> dict[str, str]:
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-days", "2", "-subj", "/CN=halyard test CA", "-keyout", "ca.key", "-out", "ca.pem",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign",
             cwd=d)
    for name, subj, ext in [
        ("server", "/CN=broker", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth"),
        ("client", "/O=Acme/CN=app1", "extendedKeyUsage=clientAuth"),
    ]:
        _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                 "-subj", subj, "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)
        (d / f"{name}.ext").write_text(ext + "\n")
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem", cwd=d)
    return {n: str(d / n) for n in ["ca.pem", "server.pem", "server.key", "client.pem", "client.key"]}


def tls_broker(broker_factory, tmp_path: Path, client_auth: str):
    pki = make_pki(tmp_path)
    port = _free_port()
    b = broker_factory({
        "tls": {
            "cert-file": pki["server.pem"],
            "key-file": pki["server.key"],
            "client-ca-file": pki["ca.pem"],
            "client-auth": client_auth,
        },
        "listeners": [
            {"protocol": "stomp", "address": "127.0.0.1:0"},
            {"protocol": "stomp+ssl", "address": f"127.0.0.1:{port}"},
        ],
    })
    return b, port, pki


def connect_tls(port: int, pki: dict, with_cert: bool):
    conn = stomp.Connection12([("127.0.0.1", port)], prefer_localhost=False,
                              try_loopback_connect=False, reconnect_attempts_max=1)
    kwargs = {"for_hosts": [("127.0.0.1", port)], "ca_certs": pki["ca.pem"]}
    if with_cert:
        kwargs.update(cert_file=pki["client.pem"], key_file=pki["client.key"])
    conn.set_ssl(**kwargs)
    listener = Collector()
    conn.set_listener("collector", listener)
    return conn, listener


def test_send_and_receive_over_tls(broker_factory, tmp_path):
    b, port, pki = tls_broker(broker_factory, tmp_path, "none")
    conn, listener = connect_tls(port, pki, with_cert=False)
    conn.connect(wait=True)
    try:
        conn.subscribe("/queue/tls", id="s1", ack="auto")
        conn.send("/queue/tls", "over tls", receipt="r1")
        listener.receipts.take(what="RECEIPT r1")
        msg = listener.messages.take(what="the message")
        assert msg.body == "over tls"
    finally:
        conn.disconnect()


def test_mutual_tls_refuses_a_client_without_a_certificate(broker_factory, tmp_path):
    b, port, pki = tls_broker(broker_factory, tmp_path, "need")
    conn, _ = connect_tls(port, pki, with_cert=False)
    with pytest.raises(Exception):
        conn.connect(wait=True)
    conn, listener = connect_tls(port, pki, with_cert=True)
    conn.connect(wait=True)
    try:
        conn.send("/queue/mtls", "hello", receipt="r1")
        listener.receipts.take(what="RECEIPT r1")
        assert "CN=app1,O=Acme" in b.log_tail()
    finally:
        conn.disconnect()
