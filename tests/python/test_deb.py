"""The Debian package (cargo-deb; `[package.metadata.deb]` in
crates/cli/Cargo.toml, maintainer scripts in deploy/debian/).

Built from the binary under test (HALYARD_BIN, the suite's debug build) with
`cargo deb --no-build --profile dev`, so the suite compiles nothing more: a
few seconds instead of a release build's minutes. Its contents are checked
everywhere cargo-deb is installed (scripts/test.sh installs it); when the
suite runs as root on a machine with dpkg, the package is installed for
real, a broker is run from it as the `halyard` user on the packaged config,
and it is removed again, leaving the machine as it was."""

import fcntl
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO

PKG = "halyard"


def _has_cargo_deb() -> bool:
    try:
        return subprocess.run(["cargo", "deb", "--version"], capture_output=True).returncode == 0
    except FileNotFoundError:
        return False


@pytest.fixture(scope="module")
def deb(halyard_bin: Path, tmp_path_factory) -> Path:
    if not _has_cargo_deb():
        pytest.skip("cargo-deb is not installed (`cargo install cargo-deb --locked`; scripts/test.sh does it)")
    if halyard_bin.parent.name != "debug":
        pytest.skip(f"HALYARD_BIN={halyard_bin} is not in a cargo target's debug/ directory")
    out = tmp_path_factory.mktemp("deb")
    env = dict(os.environ, CARGO_TARGET_DIR=str(halyard_bin.parent.parent))
    r = subprocess.run(
        ["cargo", "deb", "-p", "halyard", "--no-build", "--profile", "dev", "--fast", "-o", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    debs = list(out.glob("*.deb"))
    assert len(debs) == 1, debs
    return debs[0]


def _dpkg_deb(*args) -> str:
    return subprocess.run(["dpkg-deb", *map(str, args)], capture_output=True, text=True, check=True).stdout


def test_the_package_holds_the_binary_the_unit_and_a_conffile(deb: Path):
    if not shutil.which("dpkg-deb"):
        pytest.skip("no dpkg-deb")
    contents = _dpkg_deb("--contents", deb)
    for path in ["./usr/bin/halyard", "./lib/systemd/system/halyard.service",
                 "./etc/halyard/halyard.toml", "./usr/share/doc/halyard/README.md"]:
        assert path in contents, contents
    assert "/etc/halyard/halyard.toml" in _dpkg_deb("--info", deb, "conffiles")
    assert "useradd --system" in _dpkg_deb("--info", deb, "postinst")
    control = _dpkg_deb("--field", deb, "Package", "Depends")
    assert "Package: halyard" in control and "passwd" in control, control


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def test_installs_runs_as_the_halyard_user_and_removes(deb: Path):
    if os.geteuid() != 0 or not shutil.which("dpkg"):
        pytest.skip("installing the package needs root and dpkg")
    if subprocess.run(["dpkg-query", "-W", PKG], capture_output=True).returncode == 0:
        pytest.skip("a halyard package is installed on this machine already: not touching it")
    if os.path.exists("/usr/bin/halyard"):
        pytest.skip("/usr/bin/halyard exists (not from a package): not overwriting it")
    had_user = _user_exists()
    had_data = os.path.exists("/var/lib/halyard")
    # One install at a time on this machine (parallel test runs).
    with open("/tmp/halyard-test-deb.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            r = subprocess.run(["dpkg", "-i", str(deb)], capture_output=True, text=True)
            assert r.returncode == 0, r.stdout + r.stderr
            version = subprocess.run(["/usr/bin/halyard", "--version"], capture_output=True, text=True, check=True)
            assert version.stdout.startswith("halyard "), version.stdout
            unit = Path("/lib/systemd/system/halyard.service").read_text()
            assert "ExecStart=/usr/bin/halyard broker --config /etc/halyard/halyard.toml" in unit
            assert "Restart=always" in unit and "User=halyard" in unit
            if shutil.which("systemd-analyze"):
                v = subprocess.run(["systemd-analyze", "verify", "/lib/systemd/system/halyard.service"],
                                   capture_output=True, text=True)
                assert v.returncode == 0, v.stdout + v.stderr
            assert _user_exists()
            data = os.stat("/var/lib/halyard")
            assert pwd.getpwuid(data.st_uid).pw_name == "halyard"
            conf = os.stat("/etc/halyard/halyard.toml")
            assert stat.S_IMODE(conf.st_mode) == 0o640
            _run_the_packaged_broker()
        finally:
            subprocess.run(["dpkg", "--purge", PKG], capture_output=True)
            assert not os.path.exists("/usr/bin/halyard")
            if not had_data:
                shutil.rmtree("/var/lib/halyard", ignore_errors=True)
            if not had_user and _user_exists():
                subprocess.run(["userdel", "halyard"], capture_output=True)
                subprocess.run(["groupdel", "halyard"], capture_output=True)


def _user_exists() -> bool:
    try:
        pwd.getpwnam("halyard")
        return True
    except KeyError:
        return False


def _run_the_packaged_broker():
    """As the unit would: the halyard user, the packaged config, data in
    /var/lib/halyard (free ports instead of the config's, which another
    broker on this machine may hold)."""
    http = _free_port()
    cmd = ["setpriv", "--reuid=halyard", "--regid=halyard", "--init-groups",
           "/usr/bin/halyard", "broker", "--config", "/etc/halyard/halyard.toml",
           "--stomp", f"127.0.0.1:{_free_port()}", "--ws", "", "--openwire", "",
           "--http", f"127.0.0.1:{http}"]
    broker = subprocess.Popen(cmd, cwd="/", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while _http_status(f"http://127.0.0.1:{http}/readyz") != 200:
            if broker.poll() is not None:
                pytest.fail(f"the packaged broker exited ({broker.returncode}): {broker.stderr.read()}")
            assert time.monotonic() < deadline, "the packaged broker did not become master"
            time.sleep(0.05)
        assert os.path.isdir("/var/lib/halyard/journal")
    finally:
        broker.send_signal(signal.SIGTERM)
        try:
            broker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            broker.kill()
            broker.wait()
    assert broker.returncode == 0, broker.stderr.read()
