#!/usr/bin/env bash
# The README's master/slave failover demo, step by step, as a script: two
# brokers on one data directory under /tmp, a 30-second bench through a
# failover URL, a kill -9 of the master halfway, and the check that nothing
# was lost. Run it to see the demo, or read it next to the README.
#
#   PATH=$PWD/target/debug:$PATH scripts/failover-demo.sh
#
# DEMO_DURATION (seconds, default 30) and DEMO_PORT_A/B/HTTP_A/HTTP_B
# (defaults: the README's 61613/61623/8161/8171) change the run.
set -euo pipefail

duration=${DEMO_DURATION:-30}
a=${DEMO_PORT_A:-61613}
b=${DEMO_PORT_B:-61623}
ha=${DEMO_HTTP_A:-8161}
hb=${DEMO_HTTP_B:-8171}
dir=/tmp/halyard-demo

command -v halyard >/dev/null || {
    echo "put the halyard binary on PATH first: cargo build -p halyard && PATH=\$PWD/target/debug:\$PATH" >&2
    exit 1
}
rm -rf "$dir" && mkdir -p "$dir"
cleanup() {
    for f in "$dir"/a.pid "$dir"/b.pid; do
        [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true
    done
}
trap cleanup EXIT

echo "== 1. two brokers on one data directory (b waits as a slave)"
halyard broker --name a --data-dir "$dir/data" --stomp 127.0.0.1:$a --http 127.0.0.1:$ha 2>"$dir/a.log" &
echo $! >"$dir/a.pid"
until halyard status --http 127.0.0.1:$ha >/dev/null 2>&1; do sleep 0.1; done
halyard broker --name b --data-dir "$dir/data" --stomp 127.0.0.1:$b --http 127.0.0.1:$hb 2>"$dir/b.log" &
echo $! >"$dir/b.pid"
until halyard status --http 127.0.0.1:$hb >/dev/null 2>&1; do sleep 0.1; done
halyard status --http 127.0.0.1:$ha
halyard status --http 127.0.0.1:$hb

echo "== 2. bench for ${duration} s through the failover URL; kill -9 broker a halfway"
(
    sleep $((duration / 2))
    echo "== kill -9 \$(cat $dir/a.pid)" >&2
    kill -9 "$(cat "$dir/a.pid")"
) &
killer=$!
halyard bench --duration "$duration" --persistent --receipt-every 1 --ack client-individual \
    --url "failover:(stomp://127.0.0.1:$a,stomp://127.0.0.1:$b)" -d /queue/demo
wait "$killer"

echo "== 3. check: b is master now, and the queue is empty (bench got everything)"
halyard status --http 127.0.0.1:$hb
halyard receive -d /queue/demo --url stomp://127.0.0.1:$b --timeout 1 | wc -l
