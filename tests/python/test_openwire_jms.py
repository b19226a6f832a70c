"""OpenWire with the real ActiveMQ 5.17 JMS client as the test peer.

The JMS programs of tests/java (compiled on demand by tests/java/build.sh)
run against a broker URL and print one JSON line each; these tests assert on
it. Targets:

* ``halyard``: ``halyard broker --openwire ...``. Skipped, with the reason,
  until ``halyard broker --help`` lists ``--openwire``; then they run by
  themselves.
* ``activemq``: Apache ActiveMQ Classic 5.17 (Debian's package), the
  reference the programs were validated against. Off unless
  ``HALYARD_TEST_AGAINST_ACTIVEMQ=1`` (JVM brokers are slow to start; the
  suite does not need them to test Halyard).

Failover: a master/slave pair (halyard on a shared directory and on
PostgreSQL; ActiveMQ on a shared KahaDB directory), FailoverProducer and
FailoverConsumer on ``failover:(tcp://master,tcp://slave)?randomize=false``,
the master killed with SIGKILL mid-run: every sent message is consumed
exactly once. And the command-line producer/consumer of ActiveMQ
(``activemq producer`` / ``activemq consumer``), with a tcp:// and a
failover: URL. A pair whose brokers name each other in ``[openwire-options]
peers``, the clients' URL naming only the master (updateClusterClients).

STOMP and JMS on one broker (stomp.py and CrossProtocol), on both targets.
Halyard only: an ``openwire+ssl`` listener with an ``ssl://`` client, and
users and rights (Security).
"""

from __future__ import annotations

import getpass
import json
import os
import shlex
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import stomp

from conftest import _BROKERS_KEY, REPO, Collector, StompClient, _free_port
from openwire import (
    ACTIVEMQ_SKIP_REASON,
    AGAINST_ACTIVEMQ,
    ActiveMQ,
    JavaRun,
    OpenwireHalyard,
    failover_url,
    require_openwire,
    run_java,
    wait_for,
)

# The checks RunChecks runs (tests/java/RunChecks.java, ALL).
CHECKS = ["MessageTypes", "AckModes", "Selectors", "DurableSubscribers", "RequestReply",
          "Browser", "MessageGroups", "PriorityExpiry", "ScheduledDelivery", "ProducerFlowControl"]

FAILOVER_COUNT = 400  # messages per failover run
KILL_AFTER = 150  # the master is killed once the producer has sent this many
SEND_SLEEP_MS = "5"  # between sends, so the kill lands mid-run on a fast broker


# --------------------------------------------------------------------------
# One broker per target, shared by the module's tests


@pytest.fixture(scope="module", params=["halyard", "activemq"])
def jms_target(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """A broker with an OpenWire port: `.tcp_url`, `.log_tail()`."""
    work = tmp_path_factory.mktemp(f"jms-{request.param}")
    if request.param == "activemq":
        if not AGAINST_ACTIVEMQ:
            pytest.skip(ACTIVEMQ_SKIP_REASON)
        broker = ActiveMQ(work, "amq").spawn()
        try:
            broker.wait_openwire()
            yield broker
        finally:
            broker.stop()
    else:
        halyard_bin = request.getfixturevalue("halyard_bin")
        require_openwire(halyard_bin)
        broker = OpenwireHalyard(halyard_bin, work, "ow").spawn()
        try:
            broker.wait_openwire()
            yield broker
        finally:
            broker.stop()


@pytest.fixture(scope="module")
def check_results(jms_target) -> dict[str, dict]:
    """Every check of RunChecks, run once (one JVM) against the target."""
    return {r["check"]: r for r in run_java("RunChecks", jms_target.tcp_url)}


@pytest.mark.parametrize("check", CHECKS)
def test_jms_program(check_results: dict, jms_target, check: str):
    r = check_results.get(check)
    assert r is not None, f"{check} reported nothing; got {sorted(check_results)}"
    assert r["ok"], (
        f"{check} against {jms_target.tcp_url}: {len(r['errors'])} failed expectations:\n  "
        + "\n  ".join(r["errors"]) + f"\n{r.get('stack', '')}\n--- broker log ---\n{jms_target.log_tail(40)}"
    )


# --------------------------------------------------------------------------
# ActiveMQ's command-line producer and consumer (`activemq producer/consumer`)


def _activemq_tool(conf: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Runs Debian's `activemq` script with a tool command. Its messages
    ("Produced: N messages") go through log4j: ``conf`` gets the
    log4j.properties that prints them (the script puts ACTIVEMQ_CONF on the
    class path). ACTIVEMQ_USER = us: as root the script would otherwise
    switch to the `activemq` user, who may not read our temp dir.

    The script runs java through `sh -c` with its arguments pasted in
    unquoted (Debian 5.17.2 /usr/bin/activemq, COMMANDLINE_ARGS="$@"), so a
    `failover:(...)?a&b` URL or a message with spaces would be mangled by
    that shell: each argument is shell-quoted here for it."""
    tool = shutil.which("activemq")
    if tool is None:
        pytest.skip("the `activemq` command is missing (Debian: apt-get install activemq)")
    conf.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "bench" / "activemq-log4j.properties", conf / "log4j.properties")
    env = {**os.environ, "ACTIVEMQ_CONF": str(conf), "ACTIVEMQ_USER": getpass.getuser()}
    return subprocess.run([tool, *(shlex.quote(a) for a in args)], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=conf)


@pytest.mark.parametrize("url_kind", ["tcp", "failover"])
def test_activemq_command_line_producer_and_consumer(jms_target, url_kind: str, tmp_path: Path):
    if url_kind == "failover":
        # A dead address first: the failover transport has to move on to the broker.
        url = (f"failover:(tcp://127.0.0.1:{_free_port()},{jms_target.tcp_url})"
               "?randomize=false&initialReconnectDelay=50&maxReconnectAttempts=20")
    else:
        url = jms_target.tcp_url
    dest = f"queue://cli.{url_kind}.{uuid.uuid4().hex[:8]}"
    n = 25
    p = _activemq_tool(tmp_path, "producer", "--brokerUrl", url, "--destination", dest,
                       "--messageCount", str(n), "--message", "hello from the cli")
    assert p.returncode == 0, f"activemq producer failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    assert f"Produced: {n} messages" in p.stdout, p.stdout[-3000:]
    c = _activemq_tool(tmp_path, "consumer", "--brokerUrl", url, "--destination", dest, "--messageCount", str(n))
    assert c.returncode == 0, f"activemq consumer failed ({c.returncode}):\n{c.stdout[-3000:]}\n{c.stderr[-3000:]}"
    assert f"Consumed: {n} messages" in c.stdout, c.stdout[-3000:]
    assert c.stdout.count("hello from the cli") == n, c.stdout[-3000:]


# --------------------------------------------------------------------------
# Failover: kill -9 of the master under a JMS producer and consumer


class Pair:
    def __init__(self, master, slave, after_kill):
        self.master = master
        self.slave = slave
        self.after_kill = after_kill  # checks that the slave took over


def _new_database() -> str:
    from test_ha import _new_database as new_db  # skips without HALYARD_TEST_DATABASE_URL
    return new_db()


@pytest.fixture(params=["halyard-journal", "halyard-postgres", "activemq-kahadb"])
def failover_pair(request: pytest.FixtureRequest, tmp_path: Path):
    """(master, slave) sharing one store, both with an OpenWire port. Their
    logs are attached to a failure report (conftest's makereport hook)."""
    brokers: list = request.node.stash.setdefault(_BROKERS_KEY, [])
    try:
        if request.param == "activemq-kahadb":
            if not AGAINST_ACTIVEMQ:
                pytest.skip(ACTIVEMQ_SKIP_REASON)
            shared = tmp_path / "shared-kahadb"
            master = ActiveMQ(tmp_path / "a", "a", kahadb=shared).spawn()
            brokers.append(master)
            master.wait_openwire()
            slave = ActiveMQ(tmp_path / "b", "b", kahadb=shared).spawn()
            brokers.append(slave)
            slave.wait_slave()
            yield Pair(master, slave, lambda: slave.wait_openwire(30))
        else:
            halyard_bin = request.getfixturevalue("halyard_bin")
            require_openwire(halyard_bin)
            if request.param == "halyard-postgres":
                store = ["--store", "postgres", "--store-url", _new_database()]
            else:
                store = ["--data-dir", str(tmp_path / "shared-data")]
            master = OpenwireHalyard(halyard_bin, tmp_path / "a", "a", store).spawn()
            brokers.append(master)
            master.wait_role("master")
            master.wait_openwire()
            slave = OpenwireHalyard(halyard_bin, tmp_path / "b", "b", store).spawn()
            brokers.append(slave)
            slave.wait_role("slave")
            yield Pair(master, slave, lambda: slave.wait_role("master"))
    finally:
        for b in brokers:
            if b.alive():
                b.proc.kill()
                b.proc.wait(timeout=10)


@pytest.mark.parametrize("mode", ["transacted", "client"])
def test_jms_failover_exactly_once_across_kill_9_of_the_master(failover_pair: Pair, mode: str):
    pair = failover_pair
    _failover_exactly_once(pair, failover_url(pair.master.tcp_url, pair.slave.tcp_url), mode)


def _failover_exactly_once(pair: Pair, url: str, mode: str) -> None:
    """FailoverProducer and FailoverConsumer on ``url``; the master killed
    with SIGKILL once KILL_AFTER are sent: each message consumed once."""
    queue = f"failover.{mode}.{uuid.uuid4().hex[:8]}"
    consumer = JavaRun("FailoverConsumer", url, queue, str(FAILOVER_COUNT), mode, "3000", "150")
    producer = JavaRun("FailoverProducer", url, queue, str(FAILOVER_COUNT), SEND_SLEEP_MS)
    try:
        def ready():
            assert producer.proc.poll() is None, (
                f"the producer ended before the kill:\n{producer.stderr_tail()}")
            assert consumer.proc.poll() is None, (
                f"the consumer ended before the kill:\n{consumer.stderr_tail()}")
            return producer.progress("sent") >= KILL_AFTER and consumer.progress("consumed") > 0
        wait_for(ready, 120, f"{KILL_AFTER} sends and a first consumed message",
                 describe=lambda: f"sent {producer.progress('sent')}, consumed {consumer.progress('consumed')}")
        sent_at_kill = producer.progress("sent")
        pair.master.kill9()
        killed = time.monotonic()
        pair.after_kill()
        took_over = time.monotonic() - killed
        prod = producer.finish()[0]
        cons = consumer.finish()[0]
    finally:
        producer.kill()
        consumer.kill()
    assert prod["ok"] and prod["sent"] == FAILOVER_COUNT, f"producer: {prod}\n{producer.stderr_tail()}"
    assert sent_at_kill < FAILOVER_COUNT, "the kill came after the last send"
    assert prod["interrupted"] >= 1 and prod["resumed"] >= 1, f"the producer never failed over: {prod}"
    assert cons["interrupted"] >= 1 and cons["resumed"] >= 1, f"the consumer never failed over: {cons}"
    assert cons["ok"], (
        f"not exactly once: {cons['errors']}; duplicates {cons['duplicates'][:50]}, "
        f"missing {cons['missing']} (of {cons['missing_count']})\n{consumer.stderr_tail()}"
    )
    assert cons["distinct"] == FAILOVER_COUNT
    print(f"failover ({mode}): killed after {sent_at_kill} sends, slave serving after "
          f"{took_over * 1000:.0f} ms; consumer: {cons['deliveries']} deliveries, "
          f"{cons['redelivered']} redelivered, {cons['rollbacks']} rollbacks, "
          f"{cons['ack_failures']} failed acks")


def test_jms_failover_finds_the_slave_from_the_masters_connection_control(
        halyard_bin, tmp_path: Path, request: pytest.FixtureRequest):
    """ActiveMQ's updateClusterClients: each broker of the pair names the
    other in ``[openwire-options] peers``; the clients' failover URL lists
    only the master. Killed, the master leaves them nothing to reconnect to
    but the peer list its ConnectionControl gave them: they must find the
    slave through it, and each message is still consumed exactly once."""
    require_openwire(halyard_bin)
    ports: set[int] = set()
    while len(ports) < 2:
        ports.add(_free_port())
    a_port, b_port = sorted(ports)
    store = ["--data-dir", str(tmp_path / "shared-data")]

    def config(peer_port: int) -> dict:
        return {"journal": {"segment-bytes": 1048576},
                "openwire-options": {"peers": [f"tcp://127.0.0.1:{peer_port}"]}}

    brokers: list = request.node.stash.setdefault(_BROKERS_KEY, [])
    try:
        master = OpenwireHalyard(halyard_bin, tmp_path / "a", "a", store, config(b_port), a_port).spawn()
        brokers.append(master)
        master.wait_role("master")
        master.wait_openwire()
        slave = OpenwireHalyard(halyard_bin, tmp_path / "b", "b", store, config(a_port), b_port).spawn()
        brokers.append(slave)
        slave.wait_role("slave")
        pair = Pair(master, slave, lambda: slave.wait_role("master"))
        _failover_exactly_once(pair, failover_url(master.tcp_url), "client")
    finally:
        for b in brokers:
            if b.alive():
                b.proc.kill()
                b.proc.wait(timeout=10)


# --------------------------------------------------------------------------
# STOMP and JMS on one broker (ActiveMQ's mapping; convert.rs in Halyard)


def _stomp_client(target) -> StompClient:
    """A STOMP 1.2 client of the target's STOMP port. It writes no
    ``content-length`` unless told (a SEND without one is a TextMessage to
    JMS) and leaves bodies as bytes."""
    conn = stomp.Connection12([(target.host, target.port)], prefer_localhost=False,
                              try_loopback_connect=False, reconnect_attempts_max=1,
                              auto_decode=False, auto_content_length=False)
    listener = Collector()
    conn.set_listener("collector", listener)
    conn.connect(wait=False)
    client = StompClient(conn, listener, "1.2", None)  # type: ignore[arg-type]
    client.connected_frame = listener.connected.take(what="CONNECTED frame")
    return client


def _wait_stomp(target) -> None:
    wait_for(lambda: _accepts(target.host, target.port), 60, f"STOMP port {target.port}")


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def interop(jms_target) -> dict[str, list[str]]:
    """STOMP -> JMS: a SEND without content-length is a TextMessage, with
    one a BytesMessage; other headers are String properties; correlation-id,
    reply-to (/queue/x and a /temp-queue/ the JMS side answers to), type,
    priority, persistent and expires are the JMS header fields. JMS ->
    STOMP: a TextMessage is its text with the typed properties as headers, a
    BytesMessage comes with content-length, JMSCorrelationID/JMSReplyTo/
    JMSType are correlation-id/reply-to/type. Runs the exchange once and
    returns every difference found: "mapping" (the tests' main list) and
    "fields" (JMS header fields a STOMP MESSAGE should carry as headers)."""
    _wait_stomp(jms_target)
    tag = uuid.uuid4().hex[:8]
    q_in, q_out, q_x = f"xp.in.{tag}", f"xp.out.{tag}", f"xp.x.{tag}"
    st = _stomp_client(jms_target)
    errors: list[str] = []
    field_errors: list[str] = []

    def expect(cond: bool, what: str) -> None:
        if not cond:
            errors.append(what)

    def expect_eq(want, got, what: str) -> None:
        expect(want == got, f"{what}: want {want!r}, got {got!r}")

    try:
        st.subscribe(f"/queue/{q_out}", id="out")
        st.subscribe(f"/queue/{q_x}", id="x")
        st.subscribe("/temp-queue/replies", id="tmp")
        expires = int(time.time() * 1000) + 3_600_000
        st.send(f"/queue/{q_in}", b"hello from STOMP", receipt=True, **{
            "correlation-id": "corr-1", "reply-to": f"/queue/{q_x}", "type": "stomp-type",
            "priority": "7", "persistent": "true", "expires": str(expires),
            "custom": "value 1", "num": "42"})
        st.send(f"/queue/{q_in}", b"\x00\x01\x02ab", receipt=True,
                **{"content-length": "5", "persistent": "false"})
        st.send(f"/queue/{q_in}", b"please reply", receipt=True,
                **{"reply-to": "/temp-queue/replies", "correlation-id": "corr-3"})

        r = run_java("CrossProtocol", jms_target.tcp_url, q_in, "3", q_out, q_x)[0]
        expect(r["ok"], f"CrossProtocol: {r['errors']} {r.get('stack', '')}")
        got = r.get("received", [])
        expect_eq(3, len(got), "messages the JMS side received")
        if len(got) == 3:
            text, raw, ask = got
            expect_eq("TextMessage", text["class"], "SEND without content-length")
            expect_eq("hello from STOMP", text.get("text"), "its text")
            props = text["properties"]
            expect_eq("String:value 1", props.get("custom"), "header custom as a property")
            expect_eq("String:42", props.get("num"), "header num as a property (a string)")
            for field in ["correlation-id", "reply-to", "type", "priority", "persistent", "expires",
                          "content-length", "destination", "receipt"]:
                expect(field not in props, f"header {field} is also a JMS property: {props.get(field)}")
            expect_eq("corr-1", text["JMSCorrelationID"], "JMSCorrelationID from correlation-id")
            expect_eq(f"queue://{q_x}", text["JMSReplyTo"], "JMSReplyTo from reply-to /queue/x")
            expect_eq("stomp-type", text["JMSType"], "JMSType from type")
            expect_eq(7, text["JMSPriority"], "JMSPriority from priority")
            expect_eq(2, text["JMSDeliveryMode"], "JMSDeliveryMode from persistent:true")
            expect_eq(expires, text["JMSExpiration"], "JMSExpiration from expires")
            expect_eq("BytesMessage", raw["class"], "SEND with content-length")
            expect_eq("0001026162", raw.get("hex"), "its bytes")
            expect_eq(1, raw["JMSDeliveryMode"], "JMSDeliveryMode from persistent:false")
            expect_eq(4, raw["JMSPriority"], "JMSPriority without priority")
            expect_eq(0, raw["JMSExpiration"], "JMSExpiration without expires")
            expect(str(ask["JMSReplyTo"]).startswith("temp-queue://"),
                   f"JMSReplyTo from reply-to /temp-queue/: {ask['JMSReplyTo']}")
            print("STOMP -> JMS:", json.dumps(got))

        # The JMS side's answers: to /queue/x and to the STOMP temp queue.
        for sub, corr in [("x", "corr-1"), ("tmp", "corr-3")]:
            try:
                m = st.messages.take(lambda f, s=sub: f.headers.get("subscription") == s,
                                     what=f"the JMS reply on {sub}")
            except AssertionError as e:
                errors.append(str(e))
                continue
            expect_eq(b"reply from JMS", m.body, f"reply body on {sub}")
            expect_eq(corr, m.headers.get("correlation-id"), f"reply correlation-id on {sub}")

        # JMS -> STOMP
        out = []
        for _ in range(2):
            try:
                out.append(st.messages.take(lambda f: f.headers.get("subscription") == "out",
                                            what="a JMS message at STOMP"))
            except AssertionError as e:
                errors.append(str(e))
        if len(out) == 2:
            t, b = out
            print("JMS -> STOMP:", t.headers, b.headers)
            expect_eq(b"text from JMS", t.body, "TextMessage body")
            for k, v in {"i": "5", "l": "1234567890123", "b": "true", "d": "1.5", "s": "a string",
                         "correlation-id": "jms-corr-1", "reply-to": f"/queue/{q_x}",
                         "type": "jms-type-1"}.items():
                expect_eq(v, t.headers.get(k), f"TextMessage header {k}")
            # ActiveMQ writes these on every MESSAGE that came from JMS.
            for k, v in {"persistent": "true", "priority": "4", "expires": "0"}.items():
                if t.headers.get(k) != v:
                    field_errors.append(f"TextMessage header {k}: want {v!r}, got {t.headers.get(k)!r}")
            expect_eq(b"\x00\x01\x02a\xff", b.body, "BytesMessage body")
            expect_eq("5", b.headers.get("content-length"), "BytesMessage content-length")
            expect_eq("bytes", b.headers.get("kind"), "BytesMessage property kind")
        return {"mapping": errors, "fields": field_errors}
    finally:
        st.close_quietly()


def test_stomp_and_jms_interoperate(interop: dict, jms_target):
    errors = interop["mapping"]
    assert not errors, ("STOMP/JMS mapping:\n  " + "\n  ".join(errors)
                        + f"\n--- broker log ---\n{jms_target.log_tail(30)}")


def test_jms_header_fields_reach_stomp_as_headers(interop: dict):
    """A STOMP consumer of a JMS message gets its JMSDeliveryMode,
    JMSPriority and JMSExpiration as ``persistent``, ``priority`` and
    ``expires`` headers, as from ActiveMQ 5.17."""
    errors = interop["fields"]
    assert not errors, "JMS header fields at STOMP:\n  " + "\n  ".join(errors)


# --------------------------------------------------------------------------
# TLS, users and rights


def test_jms_over_tls(halyard_bin, tmp_path: Path, request: pytest.FixtureRequest):
    """An ``openwire+ssl`` listener with the [tls] certificate, and the JMS
    client on ``ssl://`` trusting the test CA (a PKCS#12 truststore made by
    keytool): messages of every type go and come back, request/reply too."""
    require_openwire(halyard_bin)
    if shutil.which("keytool") is None:
        pytest.skip("keytool not found (it comes with the JDK)")
    from test_tls import make_pki
    pki = make_pki(tmp_path)
    truststore = tmp_path / "truststore.p12"
    subprocess.run(["keytool", "-importcert", "-noprompt", "-alias", "halyard-test-ca",
                    "-file", pki["ca.pem"], "-keystore", str(truststore), "-storetype", "PKCS12",
                    "-storepass", "changeit"], check=True, capture_output=True, timeout=60)
    ssl_port = _free_port()
    broker = OpenwireHalyard(halyard_bin, tmp_path / "b", "tls", config={
        "tls": {"cert-file": pki["server.pem"], "key-file": pki["server.key"]},
        "listeners": [{"protocol": "openwire+ssl", "address": f"127.0.0.1:{ssl_port}"}],
    }).spawn()
    request.node.stash.setdefault(_BROKERS_KEY, []).append(broker)
    try:
        broker.wait_openwire()
        wait_for(lambda: _accepts("127.0.0.1", ssl_port), 30, f"openwire+ssl port {ssl_port}")
        results = run_java("RunChecks", f"ssl://127.0.0.1:{ssl_port}", "MessageTypes", "RequestReply",
                           jvm_args=(f"-Djavax.net.ssl.trustStore={truststore}",
                                     "-Djavax.net.ssl.trustStorePassword=changeit",
                                     "-Djavax.net.ssl.trustStoreType=PKCS12"))
        for r in results:
            assert r["ok"], (f"{r['check']} over TLS: {r['errors']}\n{r.get('stack', '')}"
                             f"\n--- broker log ---\n{broker.log_tail(30)}")
        assert [r["check"] for r in results] == ["MessageTypes", "RequestReply"]
    finally:
        broker.stop()


def test_jms_authentication_and_authorization(halyard_bin, tmp_path: Path, request: pytest.FixtureRequest):
    """[[security.users]] and [[security.authorization]]: a wrong password
    (and none) fails the JMS connection with JMSSecurityException; the user
    connects (the client's advisory subscription needs no entry); a send or
    consumer without the right throws JMSSecurityException and the
    connection carries on with what the user may do."""
    require_openwire(halyard_bin)
    from test_security import _hash
    broker = OpenwireHalyard(halyard_bin, tmp_path / "b", "sec", config={
        "security.users": [{"name": "app", "password": _hash(halyard_bin, "app-pw"), "groups": ["apps"]}],
        "security.authorization": [
            {"queue": "allowed.>", "read": ["apps"], "write": ["apps"], "admin": ["apps"]},
            {"queue": "denied.>", "read": ["others"], "write": ["others"], "admin": ["others"]},
        ],
    }).spawn()
    request.node.stash.setdefault(_BROKERS_KEY, []).append(broker)
    try:
        broker.wait_openwire()
        tag = uuid.uuid4().hex[:8]
        r = run_java("Security", broker.tcp_url, "app", "app-pw", "not-the-password",
                     f"allowed.{tag}", f"denied.{tag}")[0]
        print(json.dumps(r))
        assert r["ok"], (f"Security: {r['errors']}\n{r.get('stack', '')}"
                         f"\n--- broker log ---\n{broker.log_tail(40)}")
        assert len(r["refusals"]) == 3, r
    finally:
        broker.stop()


def test_openwire_suite_knows_every_program():
    """CHECKS here and RunChecks.ALL must agree, or a program goes untested."""
    src = (Path(__file__).resolve().parents[1] / "java" / "RunChecks.java").read_text()
    listed = src.split("ALL = Arrays.asList(", 1)[1].split(");", 1)[0]
    assert [x.strip().strip('"') for x in listed.replace("\n", " ").split(",")] == CHECKS
    # Every program besides the helpers and the failover pair is a check.
    programs = {p.stem for p in (Path(__file__).resolve().parents[1] / "java").glob("*.java")}
    assert programs - set(CHECKS) == {"Jms", "RunChecks", "FailoverProducer", "FailoverConsumer",
                                      "CrossProtocol", "Security"}
    assert os.access(Path(__file__).resolve().parents[1] / "java" / "build.sh", os.X_OK)
