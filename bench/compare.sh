#!/usr/bin/env bash
# Halyard vs Apache ActiveMQ Classic (Debian's `activemq` package), side by
# side, with the same load generator (`halyard bench`, plain STOMP 1.2) on
# the same machine, one broker at a time.  See bench/README.md.
#
# Usage: bench/compare.sh [--quick] [--only halyard|activemq] [--keep]
#                         [--no-build] [--out DIR]
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
TOOL=(python3 "$HERE/benchtool.py")

usage() {
    cat <<'EOF'
Usage: bench/compare.sh [options]

Runs the same STOMP scenarios against Halyard and against ActiveMQ Classic
5.17 (Debian package), one broker at a time, and prints a comparison table.

Options:
  --quick            short runs (3 s scenarios, 10k-message drain): a smoke
                     test of the whole pipeline, about 2 minutes; its figures
                     are not meant to be quoted
  --only BROKER      run only "halyard" or "activemq"
  --keep             keep the brokers' temporary data directories and logs
  --activemq-nagle   run ActiveMQ's STOMP connector with its default
                     transport.tcpNoDelay=false (Nagle's algorithm on)
                     instead of true, which Halyard's sockets match
  --no-build         do not run `cargo build --release -p halyard`
  --out DIR          results directory (default bench/results/<timestamp>)
  -h, --help         this help

Environment:
  HALYARD_BIN        halyard binary (default target/release/halyard); it is
                     both the Halyard broker and the load generator
  HALYARD_CONFIG     TOML config for `halyard broker --config` (default
                     bench/halyard.toml: journal store, sync = "always")
  ACTIVEMQ_HOME      default /usr/share/activemq (Debian layout)
  ACTIVEMQ_JVM_OPTS  default "-Xms64m -Xmx1g" (upstream ActiveMQ's default)
  TMPDIR             where the brokers' data directories go (default /tmp);
                     the fdatasync figure is measured there
EOF
}

# --------------------------------------------------------------------------
# Options

QUICK=0
ONLY=""
KEEP=0
AMQ_NODELAY=true
BUILD=1
OUT=""
while (($#)); do
    case "$1" in
        --quick) QUICK=1 ;;
        --only)
            shift
            ONLY=${1:-}
            [[ "$ONLY" == halyard || "$ONLY" == activemq ]] || { echo "--only takes halyard or activemq" >&2; exit 2; }
            ;;
        --only=*)
            ONLY=${1#--only=}
            [[ "$ONLY" == halyard || "$ONLY" == activemq ]] || { echo "--only takes halyard or activemq" >&2; exit 2; }
            ;;
        --keep) KEEP=1 ;;
        --activemq-nagle) AMQ_NODELAY=false ;;
        --no-build) BUILD=0 ;;
        --out) shift; OUT=${1:?--out needs a directory} ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

if ((QUICK)); then
    DUR=3              # measured seconds per scenario a-d, f
    SCEN_WARMUP=1      # unmeasured seconds at the start of each scenario
    BROKER_WARMUP=3    # unmeasured mixed load after each broker start
    DRAIN_N=10000      # messages queued and drained in scenario e
    DRAIN_TIMEOUT=5
    E_TIMEOUT=60
    FSYNC_SECS=1
else
    DUR=15
    SCEN_WARMUP=2
    BROKER_WARMUP=15
    DRAIN_N=100000
    DRAIN_TIMEOUT=10
    E_TIMEOUT=120
    FSYNC_SECS=2
fi
SIZE=1024
PREFETCH=1000
IDLE_SETTLE=2          # seconds between first CONNECTED and the idle RSS sample
START_DEADLINE=60      # seconds a broker may take to accept STOMP
STOP_DEADLINE=20       # seconds a broker may take to exit after SIGTERM

HALYARD=${HALYARD_BIN:-$ROOT/target/release/halyard}
HALYARD_CFG=${HALYARD_CONFIG:-$HERE/halyard.toml}
AMQ_HOME=${ACTIVEMQ_HOME:-/usr/share/activemq}
AMQ_JVM_OPTS=${ACTIVEMQ_JVM_OPTS:--Xms64m -Xmx1g}

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root (or sudo) for: $*"
    fi
}

want() { [[ -z "$ONLY" || "$ONLY" == "$1" ]]; }

SCRIPT_T0=$(date +%s)

# --------------------------------------------------------------------------
# Prerequisites

pkgs=()
command -v python3 >/dev/null 2>&1 || pkgs+=(python3)
if want activemq; then
    [[ -e "$AMQ_HOME/bin/activemq.jar" ]] || pkgs+=(activemq)
    command -v java >/dev/null 2>&1 || pkgs+=(default-jre-headless)
fi
if ((${#pkgs[@]})); then
    log "installing from Debian: ${pkgs[*]}"
    as_root apt-get update -q
    # The package's init script starts no instance by itself (instances-enabled/
    # is empty), so installing it leaves nothing running.
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${pkgs[@]}"
fi
if want activemq; then
    [[ -e "$AMQ_HOME/bin/activemq.jar" ]] || die "$AMQ_HOME/bin/activemq.jar not found (set ACTIVEMQ_HOME)"
    AMQ_VERSION=$(dpkg-query -W -f='${Version}' activemq 2>/dev/null || echo unknown)
    case "$AMQ_VERSION" in
        5.17.*) ;;
        *) log "WARNING: activemq package version is $AMQ_VERSION, not 5.17.x" ;;
    esac
fi

if ((BUILD)); then
    log "building halyard (release)"
    (cd "$ROOT" && cargo build --release -p halyard) || die "cargo build failed"
fi
[[ -x "$HALYARD" ]] || die "$HALYARD not found (build it or set HALYARD_BIN)"
[[ -r "$HALYARD_CFG" ]] || die "Halyard config $HALYARD_CFG not readable"

# --------------------------------------------------------------------------
# Output and scratch space

STAMP=$(date +%Y%m%d-%H%M%S)
OUT=${OUT:-$HERE/results/$STAMP}
mkdir -p "$OUT/runs" "$OUT/sessions" "$OUT/logs"
TMPBASE=$(mktemp -d "${TMPDIR:-/tmp}/halyard-compare.XXXXXX")

# Every session runs this copy, so a rebuild of target/release during the
# run cannot mix two versions into one table.
cp "$HALYARD" "$TMPBASE/halyard"
HALYARD_ORIG=$HALYARD
HALYARD=$TMPBASE/halyard
cp "$HALYARD_CFG" "$OUT/halyard.toml"
BENCH_HELP=$("$HALYARD" bench --help 2>&1) || die "'$HALYARD_ORIG bench' is not available: $BENCH_HELP"
BENCH_EXTRA=()
if grep -q -- '--no-progress' <<<"$BENCH_HELP"; then BENCH_EXTRA+=(--no-progress); fi

BROKER=""          # name of the running broker, if any
BROKER_PID=""      # its PID (for ActiveMQ: the java process); leads its process group
SAMPLER_PID=""

alive() {
    local st
    st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
    [[ -n "$st" && "$st" != Z ]]
}

stop_broker() {
    [[ -n "$BROKER_PID" ]] || return 0
    local pid=$BROKER_PID t0 t1 deadline
    t0=$(date +%s%N)
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + STOP_DEADLINE))
    while alive "$pid" && ((SECONDS < deadline)); do sleep 0.05; done
    if alive "$pid"; then
        log "WARNING: $BROKER (pid $pid) still running ${STOP_DEADLINE}s after SIGTERM; killing it"
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
    t1=$(date +%s%N)
    STOP_S=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", (b-a)/1e9}')
    BROKER_PID=""
    BROKER=""
}

cleanup() {
    local rc=$?
    set +e
    if [[ -n "$SAMPLER_PID" ]]; then kill "$SAMPLER_PID" 2>/dev/null; wait "$SAMPLER_PID" 2>/dev/null; fi
    stop_broker
    if ((KEEP)); then
        log "kept temporary directories in $TMPBASE"
    else
        rm -rf "$TMPBASE"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --------------------------------------------------------------------------
# Machine facts

{
    echo "date: $(date -Is)"
    echo "host: $(uname -srm), $(nproc) cpus, $(awk '/MemTotal/{printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
    echo "cpu: $(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)"
    echo "halyard: $("$HALYARD" --version 2>&1) ($HALYARD_ORIG, copied to $HALYARD)"
    echo "halyard config: $HALYARD_CFG: $(grep -v '^#' "$HALYARD_CFG" | grep -v '^$' | tr '\n' ' ')"
    echo "halyard git: $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)"
    if want activemq; then
        echo "activemq package: $AMQ_VERSION ($AMQ_HOME)"
        echo "java: $(java -version 2>&1 | head -1)"
        echo "activemq JVM options: $AMQ_JVM_OPTS"
    fi
    echo "mode: $( ((QUICK)) && echo quick || echo full ), scenario duration ${DUR}s (+${SCEN_WARMUP}s warm-up), broker warm-up ${BROKER_WARMUP}s, drain ${DRAIN_N}"
    echo "scratch: $TMPBASE"
} | tee "$OUT/env.txt" >&2

log "disk: write+fdatasync loop for ${FSYNC_SECS}s in $TMPBASE"
"${TOOL[@]}" fsync "$TMPBASE" "$FSYNC_SECS" >"$OUT/fsync.json"
python3 - "$OUT/fsync.json" >&2 <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
print("  %s" % d["filesystem"])
for k, name in (("append_4k", "append 4 KiB + fdatasync"), ("overwrite_4k", "overwrite 4 KiB in a preallocated file + fdatasync")):
    r = d[k]
    print("  %-50s %7.0f/s  p50 %6.0f us  p99 %6.0f us" % (name, r["ops_per_s"], r["p50_us"], r["p99_us"]))
EOF

# --------------------------------------------------------------------------
# Brokers

# broker_cmd_halyard DIR PORT HTTP / broker_cmd_activemq DIR PORT: fill
# CMD with the command line that runs the broker in the foreground.
broker_cmd_halyard() {
    local dir=$1 port=$2 http=$3
    mkdir -p "$dir/data"
    CMD=("$HALYARD" broker --config "$HALYARD_CFG" --data-dir "$dir/data" --stomp "127.0.0.1:$port"
        --http "127.0.0.1:$http")
}

broker_cmd_activemq() {
    local dir=$1 port=$2
    mkdir -p "$dir/conf" "$dir/data"
    cp "$HERE/activemq.xml" "$dir/conf/activemq.xml"
    # Debian's ActiveMQ logs through slf4j-log4j12: log4j 1.2 properties.
    cp "$HERE/activemq-log4j.properties" "$dir/conf/log4j.properties"
    # shellcheck disable=SC2206
    local jvm=($AMQ_JVM_OPTS)
    # The module flags are the ones Debian's /usr/bin/activemq passes on
    # Java > 8; the -D properties are its ACTIVEMQ_* directories, here all
    # inside the session's temp dir.
    CMD=(java "${jvm[@]}"
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
        -Dactivemq.classpath="$dir/conf"
        -Dactivemq.home="$AMQ_HOME"
        -Dactivemq.base="$dir"
        -Dactivemq.conf="$dir/conf"
        -Dactivemq.data="$dir/data"
        -Dbench.stomp.port="$port"
        -Dbench.tcp.nodelay="$AMQ_NODELAY"
        -jar "$AMQ_HOME/bin/activemq.jar" start "xbean:file:$dir/conf/activemq.xml")
}

# run_bench NAME ARGS... : one `halyard bench --json` run against the running
# broker, sampling the broker's RSS meanwhile.  Never aborts the script.
run_bench() {
    local name=$1
    shift
    local stem="$OUT/runs/${SEQ}-${BROKER}-${name}" rc=0
    printf '%s\n' "$HALYARD bench --url stomp://127.0.0.1:$PORT $* --json ${BENCH_EXTRA[*]}" >"$stem.cmd"
    "${TOOL[@]}" sample-rss "$BROKER_PID" "$stem.rss" &
    SAMPLER_PID=$!
    "$HALYARD" bench --url "stomp://127.0.0.1:$PORT" "$@" --json "${BENCH_EXTRA[@]}" \
        >"$stem.json" 2>"$stem.stderr" || rc=$?
    kill "$SAMPLER_PID" 2>/dev/null || true
    wait "$SAMPLER_PID" 2>/dev/null || true
    SAMPLER_PID=""
    # A run shorter than the sampler's start-up still gets one sample.
    local now prev=0
    now=$("${TOOL[@]}" rss "$BROKER_PID" 2>/dev/null || echo 0)
    if [[ -s "$stem.rss" ]]; then prev=$(<"$stem.rss"); fi
    if ((now > prev)); then echo "$now" >"$stem.rss"; fi
    python3 - "$stem" "$rc" >&2 <<'EOF' || true
import json, sys
stem, rc = sys.argv[1], int(sys.argv[2])
name = stem.rsplit("/", 1)[1]
try:
    r = json.load(open(stem + ".json"))
except Exception:
    err = open(stem + ".stderr").read().strip().splitlines()
    print("    %-28s FAILED (exit %d): %s" % (name, rc, err[-1] if err else "no output"))
    sys.exit(0)
def p(k, q):
    v = (r.get(k) or {}).get(q)
    return "-" if v is None else "%.0f" % v
try:
    peak = int(open(stem + ".rss").read()) // 1024
except Exception:
    peak = "?"
line = "    %-28s sent %8d (%9.0f/s)  recv %8d (%9.0f/s)  receipt p50/p99 %s/%s us  e2e p50/p99 %s/%s us  rss %s MiB" % (
    name, r.get("sent", 0), r.get("send_rate", 0), r.get("received", 0), r.get("receive_rate", 0),
    p("receipt_latency_us", "p50"), p("receipt_latency_us", "p99"),
    p("e2e_latency_us", "p50"), p("e2e_latency_us", "p99"), peak)
if r.get("missing") or r.get("errors") or r.get("extra") or rc:
    line += "\n      !! exit %d missing %s extra %s errors %s" % (rc, r.get("missing"), r.get("extra"), r.get("errors"))
print(line)
EOF
    return 0
}

# The scenarios.  Queues get a per-session name so nothing left over from
# an earlier run can mix in.  Queue scenarios a-d run one consumer per
# producer: of the splits tried (1 consumer per 4 producers, 1 per 2, 1 per
# 1) it is the one kindest to ActiveMQ, whose single consumer cannot keep up
# with 4 producers (Halyard is a little faster with fewer consumers).
scenario() {
    local s=$1 q="/queue/bench.$1.$SEQ"
    local common=(--size "$SIZE" --prefetch "$PREFETCH" --drain-timeout "$DRAIN_TIMEOUT")
    local timed=(--duration "$DUR" --warmup "$SCEN_WARMUP")
    case "$s" in
        a) run_bench a -d "$q" --producers 1 --consumers 1 --persistent --receipt-every 1 "${timed[@]}" "${common[@]}" ;;
        b) run_bench b -d "$q" --producers 16 --consumers 16 --persistent --receipt-every 1 "${timed[@]}" "${common[@]}" ;;
        c) run_bench c -d "$q" --producers 4 --consumers 4 --persistent --receipt-every 100 "${timed[@]}" "${common[@]}" ;;
        d) run_bench d -d "$q" --producers 4 --consumers 4 "${timed[@]}" "${common[@]}" ;;
        e)
            # Fill (not part of the figure), then time only the drain.
            run_bench e-fill -d "$q" --producers 4 --consumers 0 --persistent --receipt-every 100 \
                --count "$DRAIN_N" "${common[@]}"
            run_bench e-drain -d "$q" --producers 0 --consumers 1 --ack client-individual \
                --count "$DRAIN_N" --size "$SIZE" --prefetch "$PREFETCH" --drain-timeout "$E_TIMEOUT"
            ;;
        f) run_bench f -d "/topic/bench.f.$SEQ" --producers 1 --consumers 10 "${timed[@]}" "${common[@]}" ;;
    esac
}

# run_session SEQ BROKER SCENARIO... : fresh data dir, start, time to first
# CONNECTED, idle RSS, protocol probe, warm-up, scenarios, stop.
run_session() {
    SEQ=$1
    BROKER=$2
    shift 2
    local dir="$TMPBASE/$SEQ-$BROKER" logf="$OUT/logs/$SEQ-$BROKER.log"
    local sfile="$OUT/sessions/$SEQ-$BROKER.json"
    mkdir -p "$dir"
    PORT=$("${TOOL[@]}" free-port)
    local http
    http=$("${TOOL[@]}" free-port)
    while [[ "$http" == "$PORT" ]]; do http=$("${TOOL[@]}" free-port); done
    log "session $SEQ: $BROKER on 127.0.0.1:$PORT, scenarios $*"
    # Other CPU-heavy work on the machine skews everything; say so.
    local busy=0 name n
    for name in rustc cargo java halyard; do
        n=$(pgrep -c -x "$name" 2>/dev/null || true)
        busy=$((busy + ${n:-0}))
    done
    if ((busy > 0)); then
        log "  WARNING: $busy rustc/cargo/java/halyard process(es) already running: figures may be skewed"
    fi
    "broker_cmd_$BROKER" "$dir" "$PORT" "$http"
    printf '%q ' "${CMD[@]}" >"$OUT/logs/$SEQ-$BROKER.cmd"
    # benchtool launches the broker in its own process group (setsid) and
    # times exec -> first CONNECTED frame.
    local ready
    if ! ready=$("${TOOL[@]}" launch "$PORT" "$START_DEADLINE" "$logf" -- "${CMD[@]}"); then
        tail -20 "$logf" >&2 || true
        die "$BROKER did not accept a STOMP connection within ${START_DEADLINE}s (log: $logf)"
    fi
    BROKER_PID=${ready%% *}
    ready=${ready#* }
    local start_ms=${ready%% *} server=${ready#* }
    [[ "$(cat "/proc/$BROKER_PID/comm" 2>/dev/null)" == "$([[ $BROKER == activemq ]] && echo java || echo halyard)" ]] ||
        log "WARNING: pid $BROKER_PID is $(cat "/proc/$BROKER_PID/comm" 2>/dev/null), not the broker itself"
    log "  first CONNECTED after $start_ms ms ($server)"
    sleep "$IDLE_SETTLE"
    local rss_idle
    rss_idle=$("${TOOL[@]}" rss "$BROKER_PID")
    log "  idle RSS $((rss_idle / 1024)) MiB"
    local store=""
    if [[ $BROKER == halyard ]]; then
        store=$(grep -o 'store=[A-Za-z0-9_-]*' "$logf" | head -1 | cut -d= -f2 || true)
    else
        store="KahaDB(enableJournalDiskSyncs=true)"
    fi
    "${TOOL[@]}" record "$sfile" "broker=$BROKER" "session=$SEQ" "port=$PORT" "server=$server" \
        "start_to_connected_ms=$start_ms" "rss_idle_kb=$rss_idle" "store=$store" "scenarios=$*" \
        "loadavg_at_start=$(cut -d' ' -f1-3 /proc/loadavg)" "other_busy_processes=$busy"
    "${TOOL[@]}" probe "$PORT" >"$OUT/logs/$SEQ-$BROKER.probe" 2>&1 ||
        { cat "$OUT/logs/$SEQ-$BROKER.probe" >&2; die "raw STOMP probe against $BROKER failed"; }

    log "  warm-up ${BROKER_WARMUP}s (persistent queue with receipts + topic; not counted)"
    run_bench warmup-queue -d "/queue/bench.warmup.$SEQ" --producers 4 --consumers 4 --persistent \
        --receipt-every 10 --duration "$BROKER_WARMUP" --size "$SIZE" --drain-timeout "$DRAIN_TIMEOUT" &
    local wq=$!
    # The second warm-up stream does not sample RSS (one sampler at a time).
    "$HALYARD" bench --url "stomp://127.0.0.1:$PORT" -d "/topic/bench.warmup.$SEQ" --producers 1 \
        --consumers 2 --duration "$BROKER_WARMUP" --size "$SIZE" --drain-timeout "$DRAIN_TIMEOUT" --json \
        "${BENCH_EXTRA[@]}" >"$OUT/runs/$SEQ-$BROKER-warmup-topic.json" \
        2>"$OUT/runs/$SEQ-$BROKER-warmup-topic.stderr" || true
    wait "$wq" || true

    local s
    for s in "$@"; do
        log "  scenario $s"
        scenario "$s"
    done

    local hwm
    hwm=$(awk '/VmHWM/{print $2}' "/proc/$BROKER_PID/status" 2>/dev/null || echo 0)
    stop_broker
    log "  stopped in ${STOP_S}s; peak RSS (VmHWM) $((hwm / 1024)) MiB"
    "${TOOL[@]}" record "$sfile" "rss_hwm_kb=$hwm" "stop_s=$STOP_S"
}

# Counterbalanced (ABBA) order: Halyard, ActiveMQ, ActiveMQ, Halyard.  Each
# session is a fresh broker process with an empty data directory.
G1=(a b c)
G2=(d e f)
if [[ -z "$ONLY" ]]; then
    run_session 1 halyard "${G1[@]}"
    run_session 2 activemq "${G1[@]}"
    run_session 3 activemq "${G2[@]}"
    run_session 4 halyard "${G2[@]}"
else
    run_session 1 "$ONLY" "${G1[@]}"
    run_session 2 "$ONLY" "${G2[@]}"
fi

echo >&2
"${TOOL[@]}" table "$OUT"
elapsed=$(($(date +%s) - SCRIPT_T0))
echo "total time: $((elapsed / 60))m$((elapsed % 60))s; results in $OUT" | tee -a "$OUT/table.txt"
