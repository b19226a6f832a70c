#!/usr/bin/env bash
# Runs every Halyard test: formatting, lints, unit, property and integration
# tests (real broker processes on real sockets), and interoperability tests
# with the independent Python client stomp.py.
#
# Needs only the Rust toolchain and Python 3; it installs the Python test
# clients into ./.venv itself, the JavaScript one into tests/js/node_modules
# (npm ci), the web console's build toolchain into console/node_modules
# (npm ci; the committed bundle is checked against its sources), Debian's
# postgresql, nodejs, npm, chromium and chromium-driver packages if missing;
# and for the OpenWire tests the real ActiveMQ JMS client: Debian's
# openjdk-17-jdk-headless and activemq packages if java/javac or the jars
# are missing (HALYARD_TEST_SKIP_JAVA=1 skips those tests instead). The JMS
# test programs (tests/java) are compiled into <target dir>/java-tests when
# their sources change.
# The Rust tests use the PostgreSQL server of $HALYARD_TEST_DATABASE_URL if
# set, otherwise one throwaway server started here for the whole suite
# (scripts/test-postgres.sh) and stopped at exit. It also replays the fuzz
# corpora and fuzzes each target for 10 s (HALYARD_FUZZ_SEED=N repeats a
# run's seed), and checks dependency licenses and sources with cargo-deny
# (installed from crates.io if missing). Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }
started=$SECONDS

HALYARD_TEST_PG_DIR=
cleanup() { scripts/test-postgres.sh stop "$HALYARD_TEST_PG_DIR"; }
trap cleanup EXIT
trap 'exit 130' INT # so that the EXIT trap runs on ^C and kill too
trap 'exit 143' TERM

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "build"
cargo build --workspace --all-targets --locked

step "Rust tests"
if [ -n "${HALYARD_TEST_DATABASE_URL:-}" ]; then
    echo "PostgreSQL for the tests: $(sed -E 's#(://[^:/@]*):[^@/]*@#\1:***@#' <<<"$HALYARD_TEST_DATABASE_URL") (from HALYARD_TEST_DATABASE_URL)"
else
    pg_env=$(scripts/test-postgres.sh start $$)
    eval "$pg_env"
    export HALYARD_TEST_DATABASE_URL
fi
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast
    cargo test --workspace --locked --doc
else
    cargo test --workspace --locked
fi

# Where cargo puts what it builds (CARGO_TARGET_DIR, or ./target).
target_dir=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')

step "short fuzz run (fuzz/: corpora and regressions, then 10 s per target)"
# The fuzz project is its own workspace (fuzz/README.md). Built with the
# dev profile (the same settings as ours: overflow checks and debug
# assertions on) into our target directory, it reuses every dependency the
# build step compiled and takes seconds; a release build would compile
# them all again (minutes). One seed per run, printed, so a finding can be
# reproduced: HALYARD_FUZZ_SEED=N scripts/test.sh.
fuzz_seed=${HALYARD_FUZZ_SEED:-$(date +%s)}
echo "fuzz seed: $fuzz_seed"
cargo build --locked --manifest-path fuzz/Cargo.toml --target-dir "$target_dir"
for target in stomp selector url config journal openwire; do
    bin=$target
    [ "$target" = stomp ] && bin=halyard-stomp-fuzz
    "$target_dir/debug/$bin" --replay-dir "fuzz/corpus/$target" "fuzz/regressions/$target"
    "$target_dir/debug/$bin" --seconds 10 --seed "$fuzz_seed" \
        --artifacts "$target_dir/fuzz-artifacts" || {
        echo "fuzz target $target: FINDING (saved under $target_dir/fuzz-artifacts; seed $fuzz_seed)"
        exit 1
    }
done

step "dependency audit (cargo deny: licenses, bans, sources)"
# Advisories are not checked: that needs the RustSec database, a git clone
# from GitHub (fuzz/README.md, "Dependency audit"). cargo-deny installs in
# about 2.5 minutes on two cores; if that fails (no crates.io), say so.
if ! cargo deny --version >/dev/null 2>&1; then
    cargo install --locked cargo-deny --version 0.20.2 ||
        echo "cargo-deny could not be installed: dependency audit SKIPPED"
fi
if cargo deny --version >/dev/null 2>&1; then
    cargo deny --log-level error check licenses bans sources
    cargo deny --log-level error --manifest-path fuzz/Cargo.toml check licenses bans sources
fi

step "cargo-deb (for tests/python/test_deb.py)"
# The Debian package test packages the debug binary built above (seconds);
# cargo-deb itself installs once, like cargo-deny. If that fails, the test
# skips.
if ! cargo deb --version >/dev/null 2>&1; then
    cargo install --locked cargo-deb --version 3.8.0 ||
        echo "cargo-deb could not be installed: the Debian package test will be SKIPPED"
fi

step "Python test clients (.venv)"
venv=.venv
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
stamp="$venv/.requirements.sha256"
want=$(sha256sum tests/python/requirements.txt | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
    echo "$want" > "$stamp"
fi

step "Java test peers (ActiveMQ 5.17 JMS client, tests/java)"
# The OpenWire tests (tests/python/test_openwire_jms.py) drive Halyard with
# ActiveMQ's own client: small JMS programs compiled here, only when their
# sources changed (tests/java/build.sh), and the `activemq` command's
# producer/consumer. Installed from Debian when missing, as PostgreSQL is
# (scripts/test-postgres.sh): as root, or through sudo when it needs no
# password. Checking costs nothing when they are there.
if [ "${HALYARD_TEST_SKIP_JAVA:-}" = 1 ]; then
    echo "HALYARD_TEST_SKIP_JAVA=1: the JMS (OpenWire) tests will be skipped"
else
    java_pkgs=()
    { command -v java && command -v javac; } >/dev/null 2>&1 || java_pkgs+=(openjdk-17-jdk-headless)
    for f in /usr/share/java/activemq-client.jar /usr/share/java/geronimo-jms_1.1_spec.jar \
        /usr/share/activemq/bin/activemq.jar; do
        [ -e "$f" ] || { java_pkgs+=(activemq); break; }
    done
    command -v activemq >/dev/null 2>&1 || [[ " ${java_pkgs[*]} " == *" activemq "* ]] || java_pkgs+=(activemq)
    if ((${#java_pkgs[@]})); then
        sudo=()
        if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
            sudo=(sudo -n)
        fi
        if { [ "$(id -u)" != 0 ] && [ ${#sudo[@]} = 0 ]; } || ! command -v apt-get >/dev/null; then
            echo "missing for the JMS tests: ${java_pkgs[*]} (Debian packages); install them, or set HALYARD_TEST_SKIP_JAVA=1" >&2
            exit 1
        fi
        echo "installing Debian's ${java_pkgs[*]}"
        # The activemq package starts no broker by itself (instances-enabled/ is empty).
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${java_pkgs[@]}" ||
            { "${sudo[@]}" apt-get update -q &&
                "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${java_pkgs[@]}"; } || {
            echo "apt-get install ${java_pkgs[*]} failed" >&2
            exit 1
        }
    fi
    export HALYARD_JAVA_BUILD_DIR="$target_dir/java-tests"
    tests/java/build.sh "$HALYARD_JAVA_BUILD_DIR" >/dev/null
    echo "JMS test programs built in $HALYARD_JAVA_BUILD_DIR ($(javac -version 2>&1), activemq $(dpkg-query -W -f='${Version}' activemq 2>/dev/null || echo '?'))"
fi

step "JavaScript test client (stompjs, tests/js)"
# The JavaScript client for STOMP over WebSocket (@stomp/stompjs under
# node, tests/js): Debian's nodejs and npm if missing, then `npm ci` from
# the committed lock file, only when node_modules is older than the lock.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    sudo=()
    if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        sudo=(sudo -n)
    fi
    echo "installing Debian's nodejs and npm (for tests/js)"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs npm ||
        { "${sudo[@]}" apt-get update -q &&
            "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs npm; }
fi
js_stamp=tests/js/node_modules/.package-lock.sha256
js_want=$(sha256sum tests/js/package-lock.json | cut -d' ' -f1)
if [ ! -f "$js_stamp" ] || [ "$(cat "$js_stamp")" != "$js_want" ]; then
    (cd tests/js && npm ci --no-audit --no-fund --loglevel=error)
    echo "$js_want" > "$js_stamp"
fi
step "web console bundle (console/ -> crates/broker/src/admin/console/)"
# The console's bundle is committed, so `cargo build` needs only the Rust
# toolchain; this rebuilds it from console/src with the pinned toolchain
# (npm ci from the committed lock file) and fails if the committed bundle
# is not byte for byte what the sources give (esbuild is deterministic).
console_stamp=console/node_modules/.package-lock.sha256
console_want=$(sha256sum console/package-lock.json | cut -d' ' -f1)
if [ ! -f "$console_stamp" ] || [ "$(cat "$console_stamp")" != "$console_want" ]; then
    (cd console && npm ci --no-audit --no-fund --loglevel=error)
    echo "$console_want" > "$console_stamp"
fi
console_out=$(mktemp -d)
(cd console && npx --no-install tsc --noEmit -p . && node build.mjs "$console_out")
for f in index.html app.js app.css; do
    cmp -s "$console_out/$f" "crates/broker/src/admin/console/$f" || {
        echo "crates/broker/src/admin/console/$f is stale: run (cd console && npm ci && npm run build) and commit it" >&2
        rm -rf "$console_out"
        exit 1
    }
done
rm -rf "$console_out"
echo "the committed console bundle matches console/src"

step "browser for the web console test (Debian's chromium and chromium-driver)"
# tests/python/test_console.py drives Debian's chromium headless through
# its chromedriver with selenium; installed here when missing, as the
# other Debian packages above are (it skips, saying why, if they are not).
if ! command -v chromium >/dev/null || [ ! -x /usr/bin/chromedriver ]; then
    sudo=()
    if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        sudo=(sudo -n)
    fi
    echo "installing Debian's chromium and chromium-driver (for tests/python/test_console.py)"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver ||
        { "${sudo[@]}" apt-get update -q &&
            "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; } ||
        echo "chromium could not be installed: the web console browser tests will be skipped"
fi

step "Python interoperability tests (stomp.py, stompjs, ActiveMQ JMS client)"
# The binary the build step made (in $target_dir, found above). The JMS
# tests against ActiveMQ itself (validating the test programs) run only with
# HALYARD_TEST_AGAINST_ACTIVEMQ=1 (tests/java/README.md).
HALYARD_BIN="$target_dir/debug/halyard" "$venv/bin/python" -m pytest tests/python -q -n 2

step "all tests passed in $((SECONDS - started)) s"
