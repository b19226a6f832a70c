"""The web console in a real browser: Debian's chromium, headless, driven by
selenium through Debian's chromium-driver (scripts/test.sh installs both
when missing), against real halyard brokers.

Every wait is a WebDriverWait (polls with a deadline). The console polls
its brokers every `?interval=` ms; the tests ask for 200 ms.

The browse/purge/retry tests need the management API of issue #18
(`/api/destinations/queue/{name}/messages`, `/purge`, `/retry`); until a
broker serves it they fail with the console's own error message.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import _BROKERS_KEY, EVENT_TIMEOUT, STARTUP_TIMEOUT

selenium = pytest.importorskip("selenium", reason="selenium is not installed (tests/python/requirements.txt)")
from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from test_ha import HaBroker  # noqa: E402

CHROMEDRIVER = os.environ.get("HALYARD_CHROMEDRIVER", "/usr/bin/chromedriver")
CHROMIUM = os.environ.get("HALYARD_CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
POLL = "interval=200"


@pytest.fixture
def driver(tmp_path: Path):
    if not (os.access(CHROMEDRIVER, os.X_OK) and os.access(CHROMIUM, os.X_OK)):
        pytest.skip(f"no chromium/chromedriver ({CHROMIUM}, {CHROMEDRIVER}): "
                    "install Debian's chromium and chromium-driver (scripts/test.sh does)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1366,768", "--no-first-run", f"--user-data-dir={tmp_path / 'chromium'}"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    yield d
    d.quit()


def wait(d, fn, what: str, timeout: float = EVENT_TIMEOUT):
    """Waits until fn(driver) is truthy; the failure says what and shows the page."""
    def check(drv):
        try:
            return fn(drv)
        except StaleElementReferenceException:
            return None  # the console re-rendered under us: ask again
    try:
        return WebDriverWait(d, timeout, poll_frequency=0.05).until(check)
    except Exception as e:
        text = d.find_element(By.TAG_NAME, "body").text
        raise AssertionError(f"timed out waiting for {what}; page text:\n{text[:3000]}") from e


def severe(d) -> list[dict]:
    return [e for e in d.get_log("browser") if e.get("level") == "SEVERE"]


def console_url(broker, route: str = "", query: str = POLL) -> str:
    return f"http://{broker.host}:{broker.http_port}/?{query}#/{route}"


def text_of(d, css: str) -> str:
    els = d.find_elements(By.CSS_SELECTOR, css)
    return els[0].text if els else ""


def confirm(d) -> None:
    """Clicks Confirm in the console's confirmation dialog."""
    wait(d, lambda drv: drv.find_element(By.ID, "confirm").get_attribute("open") is not None, "the dialog")
    d.find_element(By.ID, "confirm-ok").click()


def test_the_page_loads_without_errors_and_shows_a_queue_after_a_cli_send(broker, halyard_cli, driver):
    halyard_cli.send("/queue/console.orders", "hello console")
    driver.get(console_url(broker))
    wait(driver, lambda d: "MASTER" in text_of(d, "#pair").upper(), "the broker's role")
    assert driver.find_element(By.CSS_SELECTOR, "#pair .broker.master"), "the master is highlighted"
    driver.find_element(By.CSS_SELECTOR, 'nav a[data-route="destinations"]').click()
    row = '#dest-table tr[data-destination="/queue/console.orders"]'
    wait(driver, lambda d: text_of(d, f'{row} td[data-field="depth"]') == "1", "the queue with depth 1")
    # The filter hides what does not match.
    halyard_cli.send("/queue/console.other", "x")
    wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, '#dest-table tr[data-destination="/queue/console.other"]'),
         "the second queue")
    driver.find_element(By.ID, "filter").send_keys("orders")
    wait(driver, lambda d: not d.find_elements(By.CSS_SELECTOR, '#dest-table tr[data-destination="/queue/console.other"]'),
         "the filter to hide the other queue")
    assert driver.find_elements(By.CSS_SELECTOR, f"{row} svg.spark polyline"), "a depth sparkline"
    assert severe(driver) == []


def test_the_assets_are_served_with_a_strict_policy(broker):
    import urllib.request
    with urllib.request.urlopen(f"http://{broker.host}:{broker.http_port}/", timeout=5) as r:
        csp = r.headers["Content-Security-Policy"]
        assert r.headers["Content-Type"].startswith("text/html")
        assert "default-src 'self'" in csp and "connect-src 'self'" in csp, csp
        etag = r.headers["ETag"]
    req = urllib.request.Request(f"http://{broker.host}:{broker.http_port}/", headers={"If-None-Match": etag})
    try:
        urllib.request.urlopen(req, timeout=5)
        raise AssertionError("expected 304")
    except urllib.error.HTTPError as e:
        assert e.code == 304
    for path, ctype in (("/console/app.js", "text/javascript"), ("/console/app.css", "text/css")):
        with urllib.request.urlopen(f"http://{broker.host}:{broker.http_port}{path}", timeout=5) as r:
            assert r.headers["Content-Type"].startswith(ctype), path


# -- needs the management API (issue #18 part 1) -----------------------------


def test_browse_shows_the_message_and_purge_empties_the_queue(broker, halyard_cli, driver):
    halyard_cli.send("/queue/console.browse", "look at me")
    driver.get(console_url(broker, "destination/queue/console.browse"))
    wait(driver, lambda d: "look at me" in d.find_element(By.ID, "messages").get_attribute("textContent"),
         "the browsed message")
    driver.find_element(By.CSS_SELECTOR, "#messages details.msg summary").click()
    assert "look at me" in text_of(driver, "#messages details.msg pre.body")
    # Browsing consumed nothing.
    assert broker.destination_stats("/queue/console.browse")["ready"] == 1
    driver.find_element(By.ID, "purge").click()
    confirm(driver)
    wait(driver, lambda d: d.find_elements(By.ID, "no-messages"), "the empty queue")
    wait(driver, lambda d: "1 messages purged" in text_of(d, "#live"), "the purge result")
    broker.wait_stats("/queue/console.browse", ready=0)
    wait(driver, lambda d: d.find_element(By.ID, "dest-stats").get_attribute("data-depth") == "0", "depth 0")
    assert severe(driver) == []


@pytest.mark.broker_config({"policies": [{"queue": "console.dlq.>", "max-redeliveries": 0}]})
def test_dlq_retry_moves_a_dead_letter_back(broker, stomp_connect, driver):
    c = stomp_connect("1.2")
    c.send("/queue/console.dlq.a", "dead soon", receipt=True, persistent="true")
    c.subscribe("/queue/console.dlq.a", id="s", ack="client-individual")
    c.nack(c.next_message())
    c.conn.unsubscribe(id="s")
    broker.wait_stats_where("/queue/DLQ.console.dlq.a", lambda s: s["ready"] == 1, "the dead letter")
    driver.get(console_url(broker, "destination/queue/DLQ.console.dlq.a"))
    wait(driver, lambda d: "dead soon" in d.find_element(By.ID, "messages").get_attribute("textContent"),
         "the dead letter in the browser")
    driver.find_element(By.ID, "retry").click()
    confirm(driver)
    wait(driver, lambda d: "1 retried" in text_of(d, "#live"), "the retry result")
    broker.wait_stats_where("/queue/console.dlq.a", lambda s: s["ready"] == 1, "the message back on its queue")
    broker.wait_stats_where("/queue/DLQ.console.dlq.a", lambda s: s["ready"] == 0, "an empty DLQ")


# -- HA --------------------------------------------------------------------


class PairBroker(HaBroker):
    """A broker of a shared-directory pair whose ports are chosen before
    either starts, so each one's `http-peers` can name the other."""

    def pick_ports(self) -> None:
        if not self.port:
            super().pick_ports()

    @property
    def admin_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"


def test_the_role_shown_changes_after_a_kill_9_takeover(halyard_bin, tmp_path, request, driver):
    store = ["--data-dir", str(tmp_path / "shared-data")]
    started = request.node.stash.setdefault(_BROKERS_KEY, [])
    a = PairBroker(halyard_bin, tmp_path / "a", "a", store)
    b = PairBroker(halyard_bin, tmp_path / "b", "b", store)
    a.pick_ports()
    b.pick_ports()
    a.config["http-peers"] = [b.admin_url]
    b.config["http-peers"] = [a.admin_url]
    started += [a, b]
    try:
        a.spawn().wait_role("master")
        b.spawn().wait_role("slave")
        # Loaded from A, the master; B is found through A's http_peers.
        driver.get(console_url(a))
        card = lambda name: f'#pair .broker[aria-label="broker {name}"] .role'  # noqa: E731
        wait(driver, lambda d: text_of(d, card("a")).lower() == "master"
             and text_of(d, card("b")).lower() == "slave", "a master, b slave")
        assert severe(driver) == [], "CORS and CSP let the page poll B"
        a.kill9()
        wait(driver, lambda d: text_of(d, card("b")).lower() == "master", "b shown as master",
             timeout=STARTUP_TIMEOUT)
        wait(driver, lambda d: text_of(d, card("a")).lower() == "down", "a shown as down")
        wait(driver, lambda d: "takeover: b is master since" in text_of(d, "#banner"), "the takeover banner")
        # The data views now read from B.
        wait(driver, lambda d: "Broker\nb\n" in text_of(d, '#main section[aria-label="master"]'),
             "the overview showing b")
    finally:
        for x in started:
            if x.alive():
                x.proc.kill()
                x.proc.wait(timeout=10)


# -- login -----------------------------------------------------------------


def _hash(halyard_bin, password: str) -> str:
    out = subprocess.run([str(halyard_bin), "passwd", "--stdin"], input=password + "\n",
                         capture_output=True, text=True, check=True, timeout=30).stdout
    return out.split("=", 1)[1].strip()


def test_login_with_a_configured_user(broker_factory, halyard_bin, tmp_path, driver):
    users = tmp_path / "users.toml"
    users.write_text(f'[[users]]\nname = "root"\npassword = {_hash(halyard_bin, "root-pw")}\ngroups = ["admins"]\n')
    broker = broker_factory({"security": {"users-file": str(users)}})
    driver.get(console_url(broker))
    wait(driver, lambda d: d.find_elements(By.ID, "login"), "the login form")
    driver.find_element(By.ID, "login-user").send_keys("root")
    driver.find_element(By.ID, "login-password").send_keys("wrong")
    driver.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()
    wait(driver, lambda d: "wrong password" in text_of(d, "main"), "the refusal")
    driver.find_element(By.ID, "login-user").send_keys("root")
    driver.find_element(By.ID, "login-password").send_keys("root-pw")
    driver.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()
    wait(driver, lambda d: text_of(d, "#pair .role").lower() == "master", "the role after login")
    wait(driver, lambda d: "logged in as root" in text_of(d, "#who"), "the user shown")
    assert base64.b64decode(driver.execute_script(
        "return sessionStorage.getItem('halyard-console-auth')")).decode() == "root:root-pw"
