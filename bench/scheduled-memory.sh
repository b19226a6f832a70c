#!/usr/bin/env bash
# Scheduler memory and recovery: RSS of an idle broker (nothing scheduled),
# then of the same broker holding N persistent 100-byte messages scheduled
# an hour ahead (AMQ_SCHEDULED_DELAY), then kill -9, restart: start ->
# first CONNECTED, and RSS after recovery. Journal store.
#
# Usage: bench/scheduled-memory.sh [N]   (default 1000000; needs ~0.4 KiB
#                                         of disk per message in TMPDIR)
# Environment: HALYARD_BIN (default target/release/halyard), TMPDIR;
# PLAIN=1 queues the messages instead (the same figures for comparison).
set -euo pipefail
cd "$(dirname "$0")/.."

N=${1:-1000000}
BIN=${HALYARD_BIN:-target/release/halyard}
[[ -x "$BIN" ]] || cargo build --release -p halyard
WORK=$(mktemp -d "${TMPDIR:-/tmp}/halyard-sched.XXXXXX")
PID=
trap '[[ -n "$PID" ]] && kill -KILL "$PID" 2>/dev/null; rm -rf "$WORK"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
STOMP=127.0.0.1:$(free_port)
HTTP=127.0.0.1:$(free_port)
URL=stomp://$STOMP
# max-messages above N: the limit is not what is measured.
printf '[scheduler]\nmax-messages = %d\n' $((N + 1000)) >"$WORK/halyard.toml"

start() {
    local t0
    t0=$(date +%s%N)
    "$BIN" broker --config "$WORK/halyard.toml" --data-dir "$WORK/data" \
        --stomp "$STOMP" --ws 127.0.0.1:0 --openwire 127.0.0.1:0 --http "$HTTP" 2>>"$WORK/broker.log" &
    PID=$!
    until python3 - "$STOMP" <<'PY' 2>/dev/null
import socket, sys
host, port = sys.argv[1].split(":")
s = socket.create_connection((host, int(port)), timeout=1)
s.sendall(b"CONNECT\naccept-version:1.2\nhost:x\n\n\0")
assert s.recv(9) == b"CONNECTED"
PY
    do
        kill -0 "$PID" 2>/dev/null || { echo "broker died:"; tail -20 "$WORK/broker.log"; exit 1; }
        sleep 0.005
    done
    START_MS=$(( ($(date +%s%N) - t0) / 1000000 ))
}

rss() { awk '/^VmRSS/ {printf "%.0f", $2/1024}' "/proc/$PID/status"; }
hwm() { awk '/^VmHWM/ {printf "%.0f", $2/1024}' "/proc/$PID/status"; }
scheduled() { python3 -c "import json,sys,urllib.request; print(json.load(urllib.request.urlopen('http://$HTTP/api/scheduled?limit=0'))['count'])"; }

start
IDLE=$(rss)
echo "== idle broker, nothing scheduled: RSS $IDLE MiB"

SCHEDULE=(--header AMQ_SCHEDULED_DELAY:3600000)
if [[ -n "${PLAIN:-}" ]]; then SCHEDULE=(); fi
echo "== sending $N persistent 100-byte messages${SCHEDULE:+, scheduled an hour ahead}"
"$BIN" bench --url "$URL" -d /queue/later --producers 4 --consumers 0 --count "$N" \
    --size 100 --persistent --receipt-every 1000 --no-progress "${SCHEDULE[@]}" | grep -E "sent"
FULL=$(rss)
echo "   scheduled: $(scheduled); broker RSS $FULL MiB (peak $(hwm) MiB);" \
    "$(( (FULL - IDLE) * 1048576 / N )) bytes per message over idle;" \
    "journal $(du -sh "$WORK/data/journal" | cut -f1)"

echo "== kill -9 and restart"
kill -KILL "$PID"
wait "$PID" 2>/dev/null || true
start
grep "journal recovered" "$WORK/broker.log" | tail -1 | sed 's/.*INFO //'
[[ -n "${KEEP_LOG:-}" ]] && cp "$WORK/broker.log" "$KEEP_LOG"
AFTER=$(rss)
echo "   start -> first CONNECTED: $START_MS ms; scheduled: $(scheduled);" \
    "broker RSS after recovery $AFTER MiB (peak $(hwm) MiB);" \
    "$(( (AFTER - IDLE) * 1048576 / N )) bytes per message over idle"
