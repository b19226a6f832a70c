#!/usr/bin/env bash
# Runs every Halyard test: formatting, lints, unit, property and integration
# tests (real broker processes on real sockets), and interoperability tests
# with the independent Python client stomp.py.
#
# Needs only the Rust toolchain and Python 3; it installs the Python test
# clients into ./.venv itself. Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }
started=$SECONDS

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "build"
cargo build --workspace --all-targets --locked

step "Rust tests"
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
HALYARD_BIN="$PWD/target/debug/halyard" "$venv/bin/python" -m pytest tests/python -q -n 2

step "all tests passed in $((SECONDS - started)) s"
