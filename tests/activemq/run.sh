#!/usr/bin/env bash
# Start a throwaway broker (ActiveMQ Classic 5.17 from Debian, or Halyard) on
# free ports, run tests/activemq/semantics.py against it, stop the broker.
# See tests/activemq/README.md.
#
# Usage: tests/activemq/run.sh activemq|halyard [--features] [script options...]
#   e.g. tests/activemq/run.sh activemq --json /tmp/amq.json
#        tests/activemq/run.sh halyard --only browse_basic,wildcards
#   --features runs features.py (selectors, scheduled delivery, redelivery)
#   instead, with activemq-features.xml / halyard-features.toml.
#
# Environment:
#   PYTHON         python with stomp.py (default: ./.venv/bin/python, created
#                  and filled from tests/python/requirements.txt if missing)
#   HALYARD_BIN    halyard binary (default: `cargo build -p halyard` and
#                  use target/debug/halyard, honouring CARGO_TARGET_DIR)
#   ACTIVEMQ_HOME  default /usr/share/activemq (Debian layout)
#   KEEP=1         keep the broker's temp directory (data + log)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
TOOL=(python3 "$ROOT/bench/benchtool.py")
BROKER=${1:-}
[[ "$BROKER" == activemq || "$BROKER" == halyard ]] || {
    sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}
shift
SCRIPT=semantics.py
AMQ_XML=$ROOT/bench/activemq.xml
HALYARD_CONF=()
if [[ "${1:-}" == --features ]]; then
    shift
    SCRIPT=features.py
    AMQ_XML=$HERE/activemq-features.xml
    HALYARD_CONF=(--config "$HERE/halyard-features.toml")
fi

log() { printf '[run.sh] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
as_root() {
    if [[ $(id -u) -eq 0 ]]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo "$@"
    else die "need root (or sudo) for: $*"; fi
}

# -- Python with stomp.py ---------------------------------------------------
if [[ -z "${PYTHON:-}" ]]; then
    venv=$ROOT/.venv
    if [[ ! -x "$venv/bin/python" ]]; then python3 -m venv "$venv"; fi
    if ! "$venv/bin/python" -c 'import stomp' 2>/dev/null; then
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
            -r "$ROOT/tests/python/requirements.txt"
    fi
    PYTHON=$venv/bin/python
fi

DIR=$(mktemp -d "${TMPDIR:-/tmp}/halyard-amq-semantics.XXXXXX")
PORT=$("${TOOL[@]}" free-port)
HTTP=$("${TOOL[@]}" free-port)
while [[ "$HTTP" == "$PORT" ]]; do HTTP=$("${TOOL[@]}" free-port); done
BROKER_PID=""

cleanup() {
    if [[ -n "$BROKER_PID" ]]; then
        # benchtool launched the broker as the leader of its own process
        # group: stop that group (ours), nothing else.
        kill -TERM -- "-$BROKER_PID" 2>/dev/null || true
        for _ in $(seq 200); do kill -0 "$BROKER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL -- "-$BROKER_PID" 2>/dev/null || true
    fi
    if [[ "${KEEP:-0}" == 1 ]]; then log "kept $DIR"; else rm -rf "$DIR"; fi
}
trap cleanup EXIT

if [[ $BROKER == activemq ]]; then
    AMQ_HOME=${ACTIVEMQ_HOME:-/usr/share/activemq}
    if [[ ! -e "$AMQ_HOME/bin/activemq.jar" ]] || ! command -v java >/dev/null 2>&1; then
        log "installing Debian's activemq package"
        as_root apt-get update -q
        # Its init script starts no instance by itself.
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q activemq default-jre-headless
    fi
    version=$(dpkg-query -W -f='${Version}' activemq 2>/dev/null || echo unknown)
    [[ $version == 5.17.* ]] || log "WARNING: activemq package version is $version, not 5.17.x"
    # The broker configuration and command line of bench/compare.sh (KahaDB,
    # one STOMP connector on 127.0.0.1, ActiveMQ's defaults otherwise, which
    # include the VirtualTopic interceptor "VirtualTopic.>" / "Consumer.*.").
    mkdir -p "$DIR/conf" "$DIR/data"
    cp "$AMQ_XML" "$DIR/conf/activemq.xml"
    cp "$ROOT/bench/activemq-log4j.properties" "$DIR/conf/log4j.properties"
    CMD=(java -Xms64m -Xmx1g
        --add-reads=java.xml=java.logging
        --add-opens java.base/java.security=ALL-UNNAMED
        --add-opens java.base/java.net=ALL-UNNAMED
        --add-opens java.base/java.lang=ALL-UNNAMED
        --add-opens java.base/java.util=ALL-UNNAMED
        --add-opens java.naming/javax.naming.spi=ALL-UNNAMED
        --add-opens java.rmi/sun.rmi.transport.tcp=ALL-UNNAMED
        --add-opens java.base/java.util.concurrent=ALL-UNNAMED
        --add-opens java.base/java.util.concurrent.atomic=ALL-UNNAMED
        --add-exports=java.base/sun.net.www.protocol.http=ALL-UNNAMED
        --add-exports=java.base/sun.net.www.protocol.https=ALL-UNNAMED
        --add-exports=java.base/sun.net.www.protocol.jar=ALL-UNNAMED
        --add-exports=jdk.xml.dom/org.w3c.dom.html=ALL-UNNAMED
        --add-exports=jdk.naming.rmi/com.sun.jndi.url.rmi=ALL-UNNAMED
        -Dactivemq.classpath="$DIR/conf"
        -Dactivemq.home="$AMQ_HOME"
        -Dactivemq.base="$DIR"
        -Dactivemq.conf="$DIR/conf"
        -Dactivemq.data="$DIR/data"
        -Dbench.stomp.port="$PORT"
        -Dbench.tcp.nodelay=true
        -jar "$AMQ_HOME/bin/activemq.jar" start "xbean:file:$DIR/conf/activemq.xml")
else
    if [[ -z "${HALYARD_BIN:-}" ]]; then
        (cd "$ROOT" && cargo build -q -p halyard) || die "cargo build failed"
        target=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps |
            python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
        HALYARD_BIN=$target/debug/halyard
    fi
    [[ -x "$HALYARD_BIN" ]] || die "$HALYARD_BIN not found"
    mkdir -p "$DIR/data"
    CMD=("$HALYARD_BIN" broker "${HALYARD_CONF[@]}" --data-dir "$DIR/data" --stomp "127.0.0.1:$PORT" --ws 127.0.0.1:0 --openwire 127.0.0.1:0 --http "127.0.0.1:$HTTP")
fi

log "starting $BROKER on 127.0.0.1:$PORT (log: $DIR/broker.log)"
ready=$("${TOOL[@]}" launch "$PORT" 60 "$DIR/broker.log" -- "${CMD[@]}") || {
    tail -20 "$DIR/broker.log" >&2 || true
    die "$BROKER did not accept a STOMP connection within 60 s"
}
BROKER_PID=${ready%% *}
log "ready: pid $BROKER_PID, ${ready#* }"
"$PYTHON" "$HERE/$SCRIPT" --host 127.0.0.1 --port "$PORT" "$@"
