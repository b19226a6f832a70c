"""stomp.py over TLS (``stomp+ssl`` listeners, docs/TLS.md).

Certificates are made per test with the ``cryptography`` package into the
test's temporary directory: a throwaway CA, a broker certificate for
127.0.0.1 and a client certificate (``O=Acme, CN=app1``).
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

import pytest
import stomp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from conftest import Collector, _free_port

def _name(**parts: str) -> x509.Name:
    oids = {"O": NameOID.ORGANIZATION_NAME, "CN": NameOID.COMMON_NAME}
    return x509.Name([x509.NameAttribute(oids[k], v) for k, v in parts.items()])


def _write_key(path: Path, key) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))


def make_pki(d: Path) -> dict[str, str]:
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name(CN="halyard test CA")
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    (d / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for name, subject, usage, san in [
        ("server", _name(CN="broker"), ExtendedKeyUsageOID.SERVER_AUTH,
         x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])),
        ("client", _name(O="Acme", CN="app1"), ExtendedKeyUsageOID.CLIENT_AUTH, None),
    ]:
        key = ec.generate_private_key(ec.SECP256R1())
        b = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca_name)
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
             .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
        if san is not None:
            b = b.add_extension(san, critical=False)
        cert = b.sign(ca_key, hashes.SHA256())
        (d / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(d / f"{name}.key", key)
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
