#!/usr/bin/env bash
# Deep queues and recovery: fills one queue with N persistent 1 KiB messages,
# records the broker's memory, kills it with -9, measures recovery (the
# journal's own figure and start -> first CONNECTED), and drains the queue.
#
# Usage: bench/deep-queue.sh [N]        (default 1000000; 5000000 for the
#                                        deep-queue figure; needs ~1.2 KiB of
#                                        disk per message in TMPDIR)
# Environment: HALYARD_BIN (default target/release/halyard), TMPDIR.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${1:-1000000}
BIN=${HALYARD_BIN:-target/release/halyard}
[[ -x "$BIN" ]] || cargo build --release -p halyard
WORK=$(mktemp -d "${TMPDIR:-/tmp}/halyard-deep.XXXXXX")
trap 'pkill -KILL -f "broker --data-dir $WORK/data" 2>/dev/null || true; rm -rf "$WORK"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
STOMP=127.0.0.1:$(free_port)
HTTP=127.0.0.1:$(free_port)
URL=stomp://$STOMP

start() {
    local t0
    t0=$(date +%s%N)
    "$BIN" broker --data-dir "$WORK/data" --stomp "$STOMP" --ws 127.0.0.1:0 --openwire 127.0.0.1:0 --http "$HTTP" 2>>"$WORK/broker.log" &
    PID=$!
    until python3 - "$STOMP" <<'EOF' 2>/dev/null
import socket, sys
host, port = sys.argv[1].split(":")
s = socket.create_connection((host, int(port)), timeout=1)
s.sendall(b"CONNECT\naccept-version:1.2\nhost:x\n\n\0")
assert s.recv(9) == b"CONNECTED"
EOF
    do
        kill -0 "$PID" 2>/dev/null || { echo "broker died:"; tail -20 "$WORK/broker.log"; exit 1; }
        sleep 0.005
    done
    START_MS=$(( ($(date +%s%N) - t0) / 1000000 ))
}

rss() { awk '/^VmRSS/ {printf "%.0f", $2/1024}' "/proc/$PID/status"; }
hwm() { awk '/^VmHWM/ {printf "%.0f", $2/1024}' "/proc/$PID/status"; }

echo "== filling /queue/deep with $N persistent 1 KiB messages"
start
"$BIN" bench --url "$URL" -d /queue/deep --producers 4 --consumers 0 --count "$N" \
    --persistent --receipt-every 1000 --no-progress | grep -E "sent"
FILLED=$(date +%s)
echo "   broker RSS after fill: $(rss) MiB (peak $(hwm) MiB); journal $(du -sh "$WORK/data/journal" | cut -f1)"

echo "== waiting for the journal's index checkpoint (written once the journal is quiet for a second)"
t0=$(date +%s%N)
until [[ -f "$WORK/data/journal/index.checkpoint" && $(stat -c %Y "$WORK/data/journal/index.checkpoint") -ge $FILLED ]]; do
    (( ($(date +%s%N) - t0) / 1000000000 < 120 )) || { echo "no checkpoint after 120 s"; break; }
    sleep 0.1
done
echo "   checkpoint: $(du -h "$WORK/data/journal/index.checkpoint" | cut -f1) after $(( ($(date +%s%N) - t0) / 1000000 )) ms"

echo "== kill -9 and restart"
kill -KILL "$PID"
wait "$PID" 2>/dev/null || true
start
grep "journal recovered" "$WORK/broker.log" | tail -1 | sed 's/.*INFO //'
echo "   start -> first CONNECTED: $START_MS ms; broker RSS after recovery: $(rss) MiB (peak $(hwm) MiB)"

echo "== draining with client-individual acks"
"$BIN" bench --url "$URL" -d /queue/deep --producers 0 --consumers 1 --count "$N" \
    --ack client-individual --no-progress | grep -E "received|missing"
echo "   broker RSS after drain: $(rss) MiB (peak $(hwm) MiB)"
