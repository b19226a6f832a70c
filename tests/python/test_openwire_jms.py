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
failover: URL.
"""

from __future__ import annotations

import getpass
import os
import shlex
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from conftest import _BROKERS_KEY, REPO, _free_port
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
          "Browser", "MessageGroups", "PriorityExpiry", "ScheduledDelivery"]

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
    url = failover_url(pair.master.tcp_url, pair.slave.tcp_url)
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


def test_openwire_suite_knows_every_program():
    """CHECKS here and RunChecks.ALL must agree, or a program goes untested."""
    src = (Path(__file__).resolve().parents[1] / "java" / "RunChecks.java").read_text()
    listed = src.split("ALL = Arrays.asList(", 1)[1].split(");", 1)[0]
    assert [x.strip().strip('"') for x in listed.replace("\n", " ").split(",")] == CHECKS
    # Every program besides the helpers and the failover pair is a check.
    programs = {p.stem for p in (Path(__file__).resolve().parents[1] / "java").glob("*.java")}
    assert programs - set(CHECKS) == {"Jms", "RunChecks", "FailoverProducer", "FailoverConsumer"}
    assert os.access(Path(__file__).resolve().parents[1] / "java" / "build.sh", os.X_OK)
