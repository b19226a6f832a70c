#!/usr/bin/env bash
# Runs every Halyard test: formatting, lints, unit, property and integration
# tests (real broker processes on real sockets), and interoperability tests
# with the independent Python client stomp.py.
#
# Needs only the Rust toolchain and Python 3; it installs the Python test
# clients into ./.venv itself, and Debian's postgresql package if missing.
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

step "Python interoperability tests (stomp.py)"
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
# The binary the build step made (in $target_dir, found above).
HALYARD_BIN="$target_dir/debug/halyard" "$venv/bin/python" -m pytest tests/python -q -n 2

step "all tests passed in $((SECONDS - started)) s"
