#!/usr/bin/env bash
# Runs every Halyard test: formatting, lints, unit, property and integration
# tests (real broker processes on real sockets), and interoperability tests
# with the independent Python client stomp.py.
#
# Needs only the Rust toolchain and Python 3; it installs the Python test
# clients into ./.venv itself, and Debian's postgresql package if missing.
# The Rust tests use the PostgreSQL server of $HALYARD_TEST_DATABASE_URL if
# set, otherwise one throwaway server started here for the whole suite
# (scripts/test-postgres.sh) and stopped at exit. Usage: scripts/test.sh
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
# The binary the build step made, wherever cargo puts it (CARGO_TARGET_DIR).
target_dir=$(cargo metadata --format-version 1 --no-deps |
    "$venv/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
HALYARD_BIN="$target_dir/debug/halyard" "$venv/bin/python" -m pytest tests/python -q -n 2

step "all tests passed in $((SECONDS - started)) s"
