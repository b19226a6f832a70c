#!/usr/bin/env bash
# Halyard vs Apache ActiveMQ Classic (Debian's `activemq` package), side by
# side, with the same load generator (`halyard bench`, plain STOMP 1.2; for
# the OpenWire scenarios ow-*, bench/java/JmsLoad.java on ActiveMQ's own JMS
# client) on the same machine, one broker at a time.  See bench/README.md.
#
# Usage: bench/compare.sh [--store journal|postgres] [--tls [--tls-key ecdsa|rsa]]
#                         [--quick] [--only halyard|activemq] [--scenarios LIST]
#                         [--keep] [--no-build] [--out DIR]
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
TOOL=(python3 "$HERE/benchtool.py")

usage() {
    cat <<'EOF'
Usage: bench/compare.sh [options]

Runs the same STOMP scenarios, and the same JMS (OpenWire) scenarios,
against Halyard and against ActiveMQ Classic 5.17 (Debian package), one
broker at a time, and prints a comparison table.

Options:
  --store STORE      "journal" (default): Halyard's journal against
                     ActiveMQ's KahaDB, scenarios a-f and s, and the
                     OpenWire (JMS client) scenarios ow-a .. ow-d.
                     "postgres": both brokers store in one throwaway
                     PostgreSQL server started for the run (fresh database
                     per broker session): Halyard's postgres store against
                     ActiveMQ's jdbcPersistenceAdapter
                     (bench/activemq-jdbc.xml), scenarios a, b, c and a
                     50k-message drain e, plus the same drain on Halyard's
                     journal store for reference (ej); about 5 minutes
  --tls              STOMP over TLS on both brokers (ActiveMQ's stomp+ssl
                     connector with a PKCS#12 keystore, Halyard's stomp+ssl
                     listener) and for the load generator
                     (stomp+ssl://...?trustCa=...); a throwaway CA and
                     server certificate for 127.0.0.1/localhost are made
                     with openssl in the run's temp dir. Journal store
                     only; the OpenWire scenarios are left out
  --tls-key KIND     the certificates' key type with --tls: "ecdsa"
                     (P-256, default) or "rsa" (2048 bits); the same
                     certificate for both brokers
  --quick            short runs (3 s scenarios, 10k-message drain; 5k with
                     --store postgres): a smoke test of the whole pipeline,
                     about 2 minutes; its figures are not meant to be quoted
  --only BROKER      run only "halyard" or "activemq"
  --scenarios LIST   run only these scenarios, comma-separated (e.g. c,s;
                     journal mode: a b c d e f s ow-a ow-b ow-c ow-d;
                     postgres mode: a b c e; "ow" = all four ow-*).
                     Each keeps its place in the counterbalanced order
                     (a-c, ow-a, ow-b in sessions 1-2, the others in 3-4); a session
                     left without scenarios is not run. "takeover" (in
                     every full and quick run unless a LIST leaves it out):
                     Halyard's master/slave takeover, kill -9 -> first
                     RECEIPT from the new master (bench/takeover.py), on a
                     shared directory and, with --store postgres, a shared
                     database, each with an empty store (5 rounds) and with
                     1,000,000 stored 1 KiB messages (3 rounds; 20,000 with
                     --quick); about 3 minutes (5 with --store postgres).
                     "floor" (likewise): 1 and 16 synchronous producers
                     against a floor server and against Halyard, 8 s
                     each. Journal runs: sync_floor
                     (crates/cli/examples/sync_floor.rs: read, append,
                     fdatasync, RECEIPT, nothing else), what any server
                     reaches over a socket here. --store postgres:
                     pg_floor (crates/cli/examples/pg_floor.rs: Halyard's
                     store writer on the database, nothing above it)
  --keep             keep the brokers' temporary data directories and logs
                     (and, with --store postgres, the session databases until
                     the run's PostgreSQL server is stopped at its end)
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
                     bench/halyard.toml: journal store, sync = "always";
                     with --store postgres bench/halyard-postgres.toml)
  ACTIVEMQ_HOME      default /usr/share/activemq (Debian layout)
  ACTIVEMQ_JVM_OPTS  default "-Xms64m -Xmx1g" (upstream ActiveMQ's default)
  TMPDIR             where the brokers' data directories go (default /tmp);
                     the fdatasync figure is measured there; with --store
                     postgres also the PostgreSQL server's data directory
  HALYARD_TEST_PG_BINDIR  PostgreSQL server binaries for --store postgres
                     (default: the newest /usr/lib/postgresql/*/bin; see
                     scripts/test-postgres.sh)
EOF
}

# --------------------------------------------------------------------------
# Options

QUICK=0
STORE=journal
ONLY=""
KEEP=0
AMQ_NODELAY=true
BUILD=1
OUT=""
SCENARIOS=""
TLS=0
TLS_KEY=ecdsa
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
        --store|--store=*)
            if [[ "$1" == --store ]]; then shift; STORE=${1:-}; else STORE=${1#--store=}; fi
            [[ "$STORE" == journal || "$STORE" == postgres ]] || { echo "--store takes journal or postgres" >&2; exit 2; }
            ;;
        --scenarios|--scenarios=*)
            if [[ "$1" == --scenarios ]]; then shift; SCENARIOS=${1:-}; else SCENARIOS=${1#--scenarios=}; fi
            [[ "$SCENARIOS" =~ ^[a-z-]+(,[a-z-]+)*$ ]] || { echo "--scenarios takes a comma-separated list, e.g. c,s" >&2; exit 2; }
            # "ow": all the OpenWire scenarios.
            SCENARIOS=$(sed -e 's/^ow$/ow-a,ow-b,ow-c,ow-d/; s/^ow,/ow-a,ow-b,ow-c,ow-d,/; s/,ow,/,ow-a,ow-b,ow-c,ow-d,/; s/,ow$/,ow-a,ow-b,ow-c,ow-d/' <<<"$SCENARIOS")
            ;;
        --keep) KEEP=1 ;;
        --tls) TLS=1 ;;
        --tls-key|--tls-key=*)
            if [[ "$1" == --tls-key ]]; then shift; TLS_KEY=${1:-}; else TLS_KEY=${1#--tls-key=}; fi
            [[ "$TLS_KEY" == ecdsa || "$TLS_KEY" == rsa ]] || { echo "--tls-key takes ecdsa or rsa" >&2; exit 2; }
            ;;
        --activemq-nagle) AMQ_NODELAY=false ;;
        --no-build) BUILD=0 ;;
        --out) shift; OUT=${1:?--out needs a directory} ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

if ((TLS)) && [[ $STORE == postgres ]]; then
    # Nothing stops it in principle (the same generated connector and
    # listener), but it has never been run: refuse rather than guess.
    echo "--tls runs with --store journal only" >&2
    exit 2
fi

if ((QUICK)); then
    DUR=3              # measured seconds per scenario a-d, f
    SCEN_WARMUP=1      # unmeasured seconds at the start of each scenario
    BROKER_WARMUP=3    # unmeasured mixed load after each broker start
    DRAIN_N=10000      # messages queued and drained in scenario e
    DRAIN_TIMEOUT=5
    E_TIMEOUT=60
    OW_DRAIN_TIMEOUT=30
    FSYNC_SECS=1
else
    DUR=15
    SCEN_WARMUP=2
    BROKER_WARMUP=15
    DRAIN_N=100000
    DRAIN_TIMEOUT=10
    E_TIMEOUT=120
    # ow-d's 16 asynchronous producers outrun its single consumer on both
    # brokers: the backlog left at the end takes longer than 10 s to drain.
    # The consumer stops as soon as everything has arrived.
    OW_DRAIN_TIMEOUT=60
    FSYNC_SECS=2
fi
PGBENCH_SECS=$(( QUICK ? 2 : 10 ))
FLOOR_SECS=$(( QUICK ? 2 : 8 ))
if [[ $STORE == postgres ]]; then
    # ActiveMQ's JDBC store fills and drains at 1-4k msgs/s on this kind of
    # machine: a 100k fill + drain would take it two minutes per session.
    # 50k keeps Halyard's drain long enough (~2 s) to time.
    DRAIN_N=$(( QUICK ? 5000 : 50000 ))
    E_TIMEOUT=300
fi
SIZE=1024
PREFETCH=1000
IDLE_SETTLE=2          # seconds between first CONNECTED and the idle RSS sample
START_DEADLINE=60      # seconds a broker may take to accept STOMP
STOP_DEADLINE=20       # seconds a broker may take to exit after SIGTERM

HALYARD=${HALYARD_BIN:-$ROOT/target/release/halyard}
HALYARD_JOURNAL_CFG=$HERE/halyard.toml
if [[ $STORE == postgres ]]; then
    HALYARD_CFG=${HALYARD_CONFIG:-$HERE/halyard-postgres.toml}
else
    HALYARD_CFG=${HALYARD_CONFIG:-$HALYARD_JOURNAL_CFG}
fi
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

# Counterbalanced (ABBA) order: Halyard, ActiveMQ, ActiveMQ, Halyard.  Each
# session is a fresh broker process with an empty data directory.
if [[ $STORE == postgres ]]; then
    # a, b: synchronous sends; c: streaming sends; e: drain.  Then the same
    # drain on Halyard's journal store, for reference.
    G1=(a b)
    G2=(c e)
elif ((TLS)); then
    # The OpenWire scenarios would run on plain TCP: not in a TLS table.
    G1=(a b c)
    G2=(d e f s)
else
    # ow-*: the same JMS program (bench/java/JmsLoad.java) on each broker's
    # OpenWire port, persistent (synchronous sends) in sessions 1-2,
    # non-persistent in 3-4.
    G1=(a b c ow-a ow-b)
    G2=(d e f s ow-c ow-d)
fi
if [[ -n "$SCENARIOS" ]]; then
    # Keep only the chosen ones, each in its own place.
    IFS=, read -r -a chosen <<<"$SCENARIOS"
    for s in "${chosen[@]}"; do
        [[ " ${G1[*]} ${G2[*]} takeover floor " == *" $s "* ]] ||
            die "--scenarios: no scenario '$s' with --store $STORE (there are: ${G1[*]} ${G2[*]} takeover floor)"
    done
    keep_chosen() {
        local s out=()
        for s in "$@"; do [[ ",$SCENARIOS," == *",$s,"* ]] && out+=("$s"); done
        echo "${out[*]}"
    }
    read -r -a G1 <<<"$(keep_chosen "${G1[@]}")"
    read -r -a G2 <<<"$(keep_chosen "${G2[@]}")"
fi
# The takeover section: Halyard only, not with --tls (the same code path).
TAKEOVER=0
if want halyard && ((!TLS)) && [[ -z "$SCENARIOS" || ",$SCENARIOS," == *,takeover,* ]]; then
    TAKEOVER=1
fi
TAKEOVER_DEEP=$(( QUICK ? 20000 : 1000000 ))
# run_group SEQ BROKER SCENARIO...: a session, unless it has nothing to run.
run_group() {
    (($# > 2)) || return 0
    run_session "$@"
}

SCRIPT_T0=$(date +%s)

# --------------------------------------------------------------------------
# Prerequisites

pkgs=()
command -v python3 >/dev/null 2>&1 || pkgs+=(python3)
if ((TLS)); then command -v openssl >/dev/null 2>&1 || pkgs+=(openssl); fi
# The OpenWire scenarios compile bench/java with javac against Debian's
# ActiveMQ client jars (tests/java/build.sh), whichever broker runs.
OW=0
[[ " ${G1[*]} ${G2[*]} " == *" ow-"* ]] && OW=1
if ((OW)); then
    [[ -e /usr/share/java/activemq-client.jar ]] || pkgs+=(activemq)
    command -v javac >/dev/null 2>&1 || pkgs+=(openjdk-17-jdk-headless)
fi
if want activemq; then
    [[ -e "$AMQ_HOME/bin/activemq.jar" ]] || pkgs+=(activemq)
    command -v java >/dev/null 2>&1 || pkgs+=(default-jre-headless)
    if [[ $STORE == postgres ]]; then
        # The JDBC driver, and commons-dbcp for the connection pool (the
        # activemq package links lib/optional/commons-dbcp.jar to it).
        [[ -e /usr/share/java/postgresql.jar ]] || pkgs+=(libpostgresql-jdbc-java)
        [[ -e /usr/share/java/commons-dbcp.jar ]] || pkgs+=(libcommons-dbcp-java)
    fi
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
    if [[ $STORE == postgres ]]; then
        [[ -e /usr/share/java/postgresql.jar ]] || die "/usr/share/java/postgresql.jar (libpostgresql-jdbc-java) not found"
        PGJDBC_VERSION=$(dpkg-query -W -f='${Version}' libpostgresql-jdbc-java 2>/dev/null || echo unknown)
    fi
    AMQ_VERSION=$(dpkg-query -W -f='${Version}' activemq 2>/dev/null || echo unknown)
    case "$AMQ_VERSION" in
        5.17.*) ;;
        *) log "WARNING: activemq package version is $AMQ_VERSION, not 5.17.x" ;;
    esac
fi

JMS_CP=""   # class path of the JMS load program
if ((OW)); then
    log "compiling bench/java (the JMS load program)"
    JMS_CP=$("$ROOT/tests/java/build.sh" "$ROOT/target/bench-java" "$HERE/java") || die "bench/java did not compile"
fi

if ((BUILD)); then
    log "building halyard (release)"
    (cd "$ROOT" && cargo build --release -p halyard) || die "cargo build failed"
    # Write back what the build left dirty in the page cache now, not while
    # the disk is being measured.
    sync
fi
[[ -x "$HALYARD" ]] || die "$HALYARD not found (build it or set HALYARD_BIN)"
[[ -r "$HALYARD_CFG" ]] || die "Halyard config $HALYARD_CFG not readable"

# --------------------------------------------------------------------------
# Output and scratch space

STAMP=$(date +%Y%m%d-%H%M%S)
if [[ $STORE == postgres ]]; then
    OUT=${OUT:-$HERE/results/$STAMP-postgres}
else
    OUT=${OUT:-$HERE/results/$STAMP}
fi
mkdir -p "$OUT/runs" "$OUT/sessions" "$OUT/logs"
TMPBASE=$(mktemp -d "${TMPDIR:-/tmp}/halyard-compare.XXXXXX")

# Every session runs this copy, so a rebuild of target/release during the
# run cannot mix two versions into one table.
cp "$HALYARD" "$TMPBASE/halyard"
HALYARD_ORIG=$HALYARD
HALYARD=$TMPBASE/halyard
cp "$HALYARD_CFG" "$OUT/halyard.toml"
"${TOOL[@]}" record "$OUT/run.json" "store=$STORE" "tls=$TLS" "tls_key=$(if ((TLS)); then echo "$TLS_KEY"; fi)" "loadavg_at_start=$(cut -d' ' -f1-3 /proc/loadavg)"
BENCH_HELP=$("$HALYARD" bench --help 2>&1) || die "'$HALYARD_ORIG bench' is not available: $BENCH_HELP"
BENCH_EXTRA=()
if grep -q -- '--no-progress' <<<"$BENCH_HELP"; then BENCH_EXTRA+=(--no-progress); fi

# --tls: a throwaway CA and one server certificate for 127.0.0.1 and
# localhost, made here and deleted with the temp dir.  Both brokers serve
# the same certificate (same key type, same chain length), so the
# handshake costs the same on each side of the table.
TLS_DIR=""
TLS_CA=""
AMQ_KEYSTORE_PASS=bench-keystore
if ((TLS)); then
    TLS_DIR=$TMPBASE/tls
    mkdir -p "$TLS_DIR"
    if [[ $TLS_KEY == rsa ]]; then
        TLS_NEWKEY=(-newkey rsa:2048)
    else
        TLS_NEWKEY=(-newkey ec -pkeyopt ec_paramgen_curve:P-256)
    fi
    (
        cd "$TLS_DIR"
        openssl req -x509 "${TLS_NEWKEY[@]}" -nodes -days 2 -subj "/CN=Halyard bench CA" \
            -keyout ca.key -out ca.pem
        openssl req "${TLS_NEWKEY[@]}" -nodes -subj "/CN=localhost" -keyout server.key -out server.csr
        printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >server.ext
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
            -extfile server.ext -out server.pem
        # ActiveMQ's sslContext takes a JVM keystore: the key, its
        # certificate and the CA, as PKCS#12.
        openssl pkcs12 -export -name broker -inkey server.key -in server.pem -certfile ca.pem \
            -passout "pass:$AMQ_KEYSTORE_PASS" -out server.p12
    ) >"$OUT/logs/tls-certs.log" 2>&1 || { cat "$OUT/logs/tls-certs.log" >&2; die "openssl could not make the certificates"; }
    TLS_CA=$TLS_DIR/ca.pem
    log "TLS: throwaway CA and server certificate ($TLS_KEY) in $TLS_DIR"
fi

# broker_url PORT: what the load generator connects to.
broker_url() {
    if ((TLS)); then
        echo "stomp+ssl://127.0.0.1:$1?trustCa=$TLS_CA"
    else
        echo "stomp://127.0.0.1:$1"
    fi
}
# benchtool's launch and probe speak TLS when this is set.
if ((TLS)); then export BENCH_TLS_CA=$TLS_CA; fi

PG_DIR=""          # the throwaway PostgreSQL server (--store postgres)
PG_POSTMASTER=""   # its postmaster's PID (its CPU counts as ours)
SESSION_STORE=$STORE   # the store of the session being run
SESSION_DB=""      # its database (--store postgres)
BROKER=""          # name of the running broker, if any
BROKER_PID=""      # its PID (for ActiveMQ: the java process); leads its process group
OWPORT=""          # the session's OpenWire port (both brokers)
SESSION_OW=0       # 1 when the session runs OpenWire scenarios (ActiveMQ gets the connector)
# The JMS load program's JVM: a fixed heap so that its footprint does not
# depend on the machine's memory.
JMS_JVM=(-Xms256m -Xmx1g)
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
    if [[ -n "$PG_DIR" ]]; then
        "$ROOT/scripts/test-postgres.sh" stop "$PG_DIR"
    fi
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
    if [[ $STORE == postgres ]]; then
        echo "halyard store: --store postgres --store-url postgres://postgres@127.0.0.1:PORT/bench_N_halyard (session 5: $HALYARD_JOURNAL_CFG)"
    fi
    echo "halyard git: $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)"
    if want activemq; then
        echo "activemq package: $AMQ_VERSION ($AMQ_HOME)"
        echo "java: $(java -version 2>&1 | head -1)"
        echo "activemq JVM options: $AMQ_JVM_OPTS"
    fi
    if [[ $STORE == postgres ]] && want activemq; then
        echo "postgresql jdbc driver: libpostgresql-jdbc-java $PGJDBC_VERSION"
        echo "commons-dbcp: libcommons-dbcp-java $(dpkg-query -W -f='${Version}' libcommons-dbcp-java 2>/dev/null || echo unknown)"
    fi
    if ((OW)); then
        echo "openwire client: bench/java/JmsLoad.java, $(readlink -f /usr/share/java/activemq-client.jar), JVM ${JMS_JVM[*]}"
    fi
    echo "store: $STORE"
    if ((TLS)); then
        echo "transport: STOMP over TLS (stomp+ssl) on both brokers, $TLS_KEY certificate; $(openssl version)"
    else
        echo "transport: plain STOMP (TCP)$( ((OW)) && echo "; OpenWire (TCP) for ow-*")"
    fi
    echo "mode: $( ((QUICK)) && echo quick || echo full ), scenario duration ${DUR}s (+${SCEN_WARMUP}s warm-up), broker warm-up ${BROKER_WARMUP}s, drain ${DRAIN_N}"
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
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
# PostgreSQL (--store postgres): one throwaway server for the whole run,
# the test suite's (scripts/test-postgres.sh: fsync on, synchronous_commit
# at its default, on; trust authentication on 127.0.0.1).  With $$ as owner
# its watchdog stops the server should this script die without cleanup.

if [[ $STORE == postgres ]]; then
    log "starting a throwaway PostgreSQL server (scripts/test-postgres.sh)"
    pg_env=$("$ROOT/scripts/test-postgres.sh" start $$) || die "scripts/test-postgres.sh start failed"
    eval "$pg_env"
    PG_DIR=$HALYARD_TEST_PG_DIR
    PG_URL=$HALYARD_TEST_DATABASE_URL          # postgres://postgres@127.0.0.1:PORT/postgres
    PG_PORT=${PG_URL##*:}
    PG_PORT=${PG_PORT%%/*}
    PG_BIN=$(cat "$PG_DIR/bindir")
    PG_POSTMASTER=$(head -1 "$PG_DIR/data/postmaster.pid")
    PSQL=(env PGOPTIONS="-c client_min_messages=warning" "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -X -q -A -t -v ON_ERROR_STOP=1)
    PG_VERSION=$("${PSQL[@]}" -c "SHOW server_version" | awk '{print $1}')
    PG_SETTINGS=$("${PSQL[@]}" -c "SELECT string_agg(name || '=' || current_setting(name), ', ' ORDER BY name)
        FROM pg_settings WHERE name IN ('synchronous_commit', 'fsync', 'wal_sync_method', 'full_page_writes',
        'shared_buffers', 'wal_level', 'commit_delay', 'max_wal_size', 'checkpoint_timeout', 'wal_buffers')")
    case "$PG_SETTINGS" in
        *fsync=on*synchronous_commit=on*) ;;
        *) die "PostgreSQL is not synchronous_commit=on, fsync=on: $PG_SETTINGS" ;;
    esac
    {
        echo "postgresql: $PG_VERSION ($PG_BIN), 127.0.0.1:$PG_PORT, data in $PG_DIR"
        echo "postgresql settings: $PG_SETTINGS"
    } | tee -a "$OUT/env.txt" >&2
    "${TOOL[@]}" record "$OUT/run.json" "pg_version=$PG_VERSION" "pg_settings=$PG_SETTINGS"
    # PostgreSQL's own rate for what one synchronous persistent send costs
    # at least: one small INSERT and one COMMIT (WAL flush).
    "${PSQL[@]}" -c "CREATE DATABASE bench_pgbench TEMPLATE template0"
    log "pgbench: 1 KiB single-row INSERT + COMMIT, ${PGBENCH_SECS}s each with 1 and 16 clients"
    "${TOOL[@]}" pgbench "$PG_BIN" "$PG_PORT" bench_pgbench "$PGBENCH_SECS" 1 16 >"$OUT/pgbench.json"
    "${PSQL[@]}" -c "DROP DATABASE bench_pgbench"
    python3 - "$OUT/pgbench.json" >&2 <<'EOF'
import json, sys
for r in json.load(open(sys.argv[1]))["runs"]:
    print("  %2d client(s): %s tps, average latency %s ms%s" % (
        r["clients"], r["tps"], r["latency_avg_ms"], "" if r["tps"] else " (" + str(r["error"]) + ")"))
EOF
fi

# pg_new_db NAME: a fresh database for one broker session.
# pg_checkpoint: before each measured run in PostgreSQL mode, so that no
# run pays for a checkpoint of the WAL its predecessors wrote (with
# max_wal_size 1 GB one came every few runs, mid-run, and took a fifth
# off whatever was measuring then). Each run still starts its own cycle
# (full-page images of the pages it first touches), the same for every
# run and both brokers.
pg_checkpoint() {
    "${PSQL[@]}" -c CHECKPOINT >/dev/null || log "CHECKPOINT failed"
}

pg_new_db() {
    "${PSQL[@]}" -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" -c "CREATE DATABASE $1 TEMPLATE template0"
}

# pg_wal: "LSN_BYTES WAL_SYNCS" of the whole server (the sync count is
# PostgreSQL's cumulative statistics: approximate, reported with a delay).
pg_wal() {
    "${PSQL[@]}" -F ' ' -c "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn, wal_sync FROM pg_stat_wal" 2>/dev/null || echo "0 0"
}

# --------------------------------------------------------------------------
# The floor for synchronous persistent sends: the same load generator
# against a server that does nothing for a receipted SEND but store it and
# answer, and against Halyard with the same producers-only load, one after
# the other. For the journal, crates/cli/examples/sync_floor.rs reads each
# SEND, appends it, fdatasyncs (the best group commit) and answers: what a
# server can reach over a socket on this machine, next to the disk's raw
# rate above. For PostgreSQL, crates/cli/examples/pg_floor.rs hands each
# SEND to Halyard's own store writer (its group commit, group statement and
# fence) with nothing above it: what the store reaches of pgbench's rate,
# and so how much of the gap lies above it. A second pg_floor also deletes
# each message once stored (HALYARD_FLOOR_REMOVE=1), as the broker records
# an automatic acknowledgement: scenario b's database work, 16 producers.

if want halyard && ((!TLS)) && [[ -z "$SCENARIOS" || ",$SCENARIOS," == *,floor,* ]]; then
    floor_example=sync_floor
    [[ $STORE == postgres ]] && floor_example=pg_floor
    FLOOR_BIN=$ROOT/target/release/examples/$floor_example
    if ((BUILD)); then
        (cd "$ROOT" && cargo build --release -p halyard --example "$floor_example") || die "cannot build $floor_example"
    fi
    if [[ -x $FLOOR_BIN ]]; then
        log "floor: 1 and 16 synchronous producers (no consumers), ${FLOOR_SECS}s each, against $floor_example and Halyard"
        floor_port=$("${TOOL[@]}" free-port)
        hal_port=$("${TOOL[@]}" free-port)
        mkdir -p "$TMPBASE/floor-halyard"
        hal_store=(--config "$HALYARD_JOURNAL_CFG")
        if [[ $STORE == postgres ]]; then
            pg_new_db bench_floor_pg
            pg_new_db bench_floor_halyard
            "$FLOOR_BIN" "127.0.0.1:$floor_port" "postgres://postgres@127.0.0.1:$PG_PORT/bench_floor_pg" \
                >/dev/null 2>>"$OUT/logs/floor.log" &
            hal_store=(--config "$HALYARD_CFG" --store postgres
                --store-url "postgres://postgres@127.0.0.1:$PG_PORT/bench_floor_halyard")
        else
            "$FLOOR_BIN" "127.0.0.1:$floor_port" "$TMPBASE/floor.log" >/dev/null 2>>"$OUT/logs/floor.log" &
        fi
        floor_pid=$!
        "$HALYARD" broker "${hal_store[@]}" --data-dir "$TMPBASE/floor-halyard" \
            --stomp "127.0.0.1:$hal_port" --ws 127.0.0.1:0 --http "127.0.0.1:$("${TOOL[@]}" free-port)" \
            --openwire 127.0.0.1:0 2>>"$OUT/logs/floor-halyard.log" &
        hal_pid=$!
        for port in "$floor_port" "$hal_port"; do
            for _ in $(seq 1 500); do
                (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
                sleep 0.02
            done
        done
        for p in 1 16; do
            for target in floor halyard; do
                port=$floor_port
                [[ $target == halyard ]] && port=$hal_port
                [[ $STORE == postgres ]] && pg_checkpoint
                "$HALYARD" bench --url "stomp://127.0.0.1:$port" -d "/queue/floor.$p" --producers "$p" --consumers 0 \
                    --persistent --receipt-every 1 --duration "$FLOOR_SECS" --warmup 1 --size 1024 --json --no-progress \
                    >"$OUT/floor-$target-$p.json" 2>>"$OUT/logs/floor.log" || log "floor: $target with $p producer(s) failed"
            done
        done
        kill "$floor_pid" "$hal_pid" 2>/dev/null || true
        wait "$floor_pid" "$hal_pid" 2>/dev/null || true
        if [[ $STORE == postgres ]]; then
            pg_new_db bench_floor_pg_rm
            HALYARD_FLOOR_REMOVE=1 "$FLOOR_BIN" "127.0.0.1:$floor_port" \
                "postgres://postgres@127.0.0.1:$PG_PORT/bench_floor_pg_rm" >/dev/null 2>>"$OUT/logs/floor.log" &
            floor_pid=$!
            for _ in $(seq 1 500); do
                (exec 3<>"/dev/tcp/127.0.0.1/$floor_port") 2>/dev/null && break
                sleep 0.02
            done
            pg_checkpoint
            "$HALYARD" bench --url "stomp://127.0.0.1:$floor_port" -d /queue/floor.rm --producers 16 --consumers 0 \
                --persistent --receipt-every 1 --duration "$FLOOR_SECS" --warmup 1 --size 1024 --json --no-progress \
                >"$OUT/floor-removed-16.json" 2>>"$OUT/logs/floor.log" || log "floor: pg_floor with deletions failed"
            kill "$floor_pid" 2>/dev/null || true
            wait "$floor_pid" 2>/dev/null || true
            "${PSQL[@]}" -c "DROP DATABASE bench_floor_pg_rm WITH (FORCE)" || true
        fi
        rm -f "$TMPBASE/floor.log"
        rm -rf "$TMPBASE/floor-halyard"
        if [[ $STORE == postgres ]]; then
            # Their rows would otherwise be checkpointed and vacuumed
            # during the scenarios that follow.
            "${PSQL[@]}" -c "DROP DATABASE bench_floor_pg WITH (FORCE)" -c "DROP DATABASE bench_floor_halyard WITH (FORCE)" || true
        fi
        "${TOOL[@]}" floor "$OUT" >&2
    fi
fi

# --------------------------------------------------------------------------
# Brokers

# broker_cmd_halyard DIR PORT HTTP / broker_cmd_activemq DIR PORT: fill
# CMD with the command line that runs the broker in the foreground.
broker_cmd_halyard() {
    local dir=$1 port=$2 http=$3
    mkdir -p "$dir/data"
    if [[ $SESSION_STORE == postgres ]]; then
        CMD=("$HALYARD" broker --config "$HALYARD_CFG" --data-dir "$dir/data" --stomp "127.0.0.1:$port" --ws 127.0.0.1:0
            --http "127.0.0.1:$http" --openwire "127.0.0.1:$OWPORT" --store postgres
            --store-url "postgres://postgres@127.0.0.1:$PG_PORT/$SESSION_DB")
    else
        # The journal reference session of --store postgres runs on the
        # journal mode's config.
        local cfg=$HALYARD_CFG
        [[ $STORE == journal ]] || cfg=$HALYARD_JOURNAL_CFG
        if ((TLS)); then
            # The same config plus the certificate and one stomp+ssl
            # listener, which replaces the plain STOMP one (ActiveMQ too
            # gets its TLS connector only).
            {
                cat "$cfg"
                printf '\n# Added by compare.sh --tls\n[tls]\ncert-file = "%s"\nkey-file = "%s"\n' \
                    "$TLS_DIR/server.pem" "$TLS_DIR/server.key"
                printf '\n[[listeners]]\nprotocol = "stomp+ssl"\naddress = "127.0.0.1:%s"\n' "$port"
            } >"$dir/halyard.toml"
            cp "$dir/halyard.toml" "$OUT/logs/$SEQ-halyard.toml"
            CMD=("$HALYARD" broker --config "$dir/halyard.toml" --data-dir "$dir/data" --http "127.0.0.1:$http"
                --openwire "127.0.0.1:$OWPORT")
        else
            CMD=("$HALYARD" broker --config "$cfg" --data-dir "$dir/data" --stomp "127.0.0.1:$port" --ws 127.0.0.1:0
                --http "127.0.0.1:$http" --openwire "127.0.0.1:$OWPORT")
        fi
    fi
}

broker_cmd_activemq() {
    local dir=$1 port=$2
    mkdir -p "$dir/conf" "$dir/data"
    local jdbc=()
    if [[ $SESSION_STORE == postgres ]]; then
        cp "$HERE/activemq-jdbc.xml" "$dir/conf/activemq.xml"
        # ActiveMQ's launcher puts the jars in ${activemq.base}/lib on its
        # class path: Debian's PostgreSQL JDBC driver.
        mkdir -p "$dir/lib"
        ln -s /usr/share/java/postgresql.jar "$dir/lib/postgresql.jar"
        jdbc=(-Dbench.jdbc.url="jdbc:postgresql://127.0.0.1:$PG_PORT/$SESSION_DB"
            -Dbench.jdbc.user=postgres -Dbench.jdbc.password=)
    else
        cp "$HERE/activemq.xml" "$dir/conf/activemq.xml"
    fi
    if ((TLS)); then
        # The same connector as stomp+ssl (ActiveMQ's blocking TLS
        # transport, thread per connection like stomp://) and the broker's
        # sslContext holding the PKCS#12 keystore.
        python3 - "$dir/conf/activemq.xml" "$TLS_DIR/server.p12" "$AMQ_KEYSTORE_PASS" <<'PY'
import sys
path, ks, pw = sys.argv[1:]
x = open(path).read()
old = 'name="stomp"\n                uri="stomp://127.0.0.1:'
assert x.count(old) == 1, "activemq.xml: expected one stomp:// connector"
x = x.replace(old, 'name="stomp+ssl"\n                uri="stomp+ssl://127.0.0.1:')
ctx = ('<sslContext>\n            <sslContext keyStore="file:%s" keyStorePassword="%s" keyStoreType="PKCS12"/>\n'
       '        </sslContext>\n\n        <transportConnectors>' % (ks, pw))
assert x.count("<transportConnectors>") == 1
x = x.replace("<transportConnectors>", ctx)
open(path, "w").write(x)
PY
        cp "$dir/conf/activemq.xml" "$OUT/logs/$SEQ-activemq.xml"
    fi
    if ((SESSION_OW)); then
        # A session with OpenWire scenarios: a second connector, OpenWire
        # on tcp:// (ActiveMQ's default transport for its JMS clients), with
        # the STOMP connector's tcpNoDelay.  Other sessions keep the single
        # STOMP connector.
        python3 - "$dir/conf/activemq.xml" <<'PY'
import sys
path = sys.argv[1]
x = open(path).read()
end = "</transportConnectors>"
assert x.count(end) == 1, "activemq.xml: expected one <transportConnectors>"
ow = ('    <transportConnector name="openwire"\n'
      '                uri="tcp://127.0.0.1:${bench.openwire.port}?transport.tcpNoDelay=${bench.tcp.nodelay}"/>\n'
      '        ' + end)
open(path, "w").write(x.replace(end, ow))
PY
        cp "$dir/conf/activemq.xml" "$OUT/logs/$SEQ-activemq.xml"
    fi
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
        -Dbench.openwire.port="$OWPORT"
        -Dbench.tcp.nodelay="$AMQ_NODELAY"
        "${jdbc[@]}"
        -jar "$AMQ_HOME/bin/activemq.jar" start "xbean:file:$dir/conf/activemq.xml")
}

# run_bench NAME ARGS... : one `halyard bench --json` run against the running
# broker, sampling the broker's RSS meanwhile.  Never aborts the script.
run_bench() {
    local name=$1
    shift
    run_load "$name" "$HALYARD" bench --url "$(broker_url "$PORT")" "$@" --json "${BENCH_EXTRA[@]}"
}

# run_jms NAME ARGS... : the same for one run of the JMS load program
# (bench/java/JmsLoad.java) against the broker's OpenWire port.
run_jms() {
    local name=$1
    shift
    run_load "$name" java "${JMS_JVM[@]}" -cp "$JMS_CP" JmsLoad "$(ow_url "$OWPORT")" "$@"
}

# The client's URL: plain tcp://, TCP_NODELAY on (both brokers' ends have
# it too, see activemq.xml's connectors).
ow_url() { echo "tcp://127.0.0.1:$1?tcpNoDelay=true"; }

# run_load NAME CMD... : runs CMD (a load generator printing one JSON
# report) with its stdout in runs/SEQ-BROKER-NAME.json.
run_load() {
    local name=$1
    shift
    local stem="$OUT/runs/${SEQ}-${BROKER}-${name}" rc=0
    printf '%s\n' "$*" >"$stem.cmd"
    local wal0=""
    if [[ $SESSION_STORE == postgres ]]; then
        pg_checkpoint
        wal0=$(pg_wal)
    fi
    "${TOOL[@]}" sample-rss "$BROKER_PID" "$stem.rss" &
    SAMPLER_PID=$!
    # CPU used by anything but this script, the broker and our PostgreSQL
    # server (another user's build or tests skew the figures).
    "${TOOL[@]}" cpu-watch "$stem.cpu" $$ "$BROKER_PID" $PG_POSTMASTER &
    local cpu_pid=$! i
    for i in $(seq 100); do [[ -e "$stem.cpu.started" ]] && break; sleep 0.02; done
    "$@" >"$stem.json" 2>"$stem.stderr" || rc=$?
    kill "$SAMPLER_PID" "$cpu_pid" 2>/dev/null || true
    wait "$SAMPLER_PID" 2>/dev/null || true
    wait "$cpu_pid" 2>/dev/null || true
    SAMPLER_PID=""
    if [[ -n "$wal0" ]]; then
        local wal1
        wal1=$(pg_wal)
        "${TOOL[@]}" record "$stem.pg" "wal_bytes=$((${wal1% *} - ${wal0% *}))" \
            "wal_syncs_approx=$((${wal1#* } - ${wal0#* }))"
    fi
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
try:
    cpu = json.load(open(stem + ".cpu"))
    cpu = "  cpu ours/others %.2f/%.2f" % (cpu["ours_cores"], cpu["foreign_cores"])
except Exception:
    cpu = ""
try:
    pg = json.load(open(stem + ".pg"))
    n = r.get("sent") or r.get("received") or 0
    pg = "  WAL %.1f KiB/msg" % (pg["wal_bytes"] / 1024 / n) if n else ""
except Exception:
    pg = ""
# JmsLoad reports the time send() took instead of receipts.
lat = "send_latency_us" if "send_latency_us" in r else "receipt_latency_us"
line = "    %-28s sent %8d (%9.0f/s)  recv %8d (%9.0f/s)  %s p50/p99 %s/%s us  e2e p50/p99 %s/%s us  rss %s MiB" % (
    name, r.get("sent", 0), r.get("send_rate", 0), r.get("received", 0), r.get("receive_rate", 0),
    "send()" if lat == "send_latency_us" else "receipt", p(lat, "p50"), p(lat, "p99"),
    p("e2e_latency_us", "p50"), p("e2e_latency_us", "p99"), peak) + cpu + pg
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
        e|ej)
            # Fill (not part of the figure), then time only the drain.
            run_bench "$s-fill" -d "$q" --producers 4 --consumers 0 --persistent --receipt-every 100 \
                --count "$DRAIN_N" "${common[@]}"
            run_bench "$s-drain" -d "$q" --producers 0 --consumers 1 --ack client-individual \
                --count "$DRAIN_N" --size "$SIZE" --prefetch "$PREFETCH" --drain-timeout "$E_TIMEOUT"
            ;;
        f) run_bench f -d "/topic/bench.f.$SEQ" --producers 1 --consumers 10 "${timed[@]}" "${common[@]}" ;;
        # Selective consumers: c's persistent streaming load, but 10
        # consumers each selecting one tenth of the queue (shard = 'k').
        s) run_bench s -d "$q" --producers 4 --consumers 10 --selectors 10 --persistent --receipt-every 100 \
            "${timed[@]}" "${common[@]}" ;;
        # OpenWire: the JMS program, 1 KiB BytesMessages, one consumer
        # (AUTO_ACKNOWLEDGE, the client's default prefetch of 1000).
        # Persistent = the client's synchronous send; non-persistent =
        # its asynchronous one.
        ow-*)
            local jq="bench.$s.$SEQ" jt=(--warmup "$SCEN_WARMUP" --duration "$DUR" --drain-timeout "$OW_DRAIN_TIMEOUT" --size "$SIZE")
            case "$s" in
                ow-a) run_jms "$s" "$jq" --producers 1 --consumers 1 --persistent "${jt[@]}" ;;
                ow-b) run_jms "$s" "$jq" --producers 16 --consumers 1 --persistent "${jt[@]}" ;;
                ow-c) run_jms "$s" "$jq" --producers 1 --consumers 1 "${jt[@]}" ;;
                ow-d) run_jms "$s" "$jq" --producers 16 --consumers 1 "${jt[@]}" ;;
            esac
            ;;
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
    OWPORT=$("${TOOL[@]}" free-port)
    while [[ "$OWPORT" == "$PORT" || "$OWPORT" == "$http" ]]; do OWPORT=$("${TOOL[@]}" free-port); done
    SESSION_OW=0
    [[ " $* " == *" ow-"* ]] && SESSION_OW=1
    SESSION_DB=""
    if [[ $SESSION_STORE == postgres ]]; then
        SESSION_DB="bench_${SEQ}_${BROKER}"
        pg_new_db "$SESSION_DB"
    fi
    log "session $SEQ: $BROKER on 127.0.0.1:$PORT ($SESSION_STORE store${SESSION_DB:+, database $SESSION_DB}), scenarios $*"
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
    elif [[ $SESSION_STORE == postgres ]]; then
        store="JDBC(PostgreSQL $PG_VERSION, synchronous_commit=on)"
    else
        store="KahaDB(enableJournalDiskSyncs=true)"
    fi
    local reference=0
    [[ $SESSION_STORE == "$STORE" ]] || reference=1
    "${TOOL[@]}" record "$sfile" "expected_store=$SESSION_STORE" "reference=$reference" "database=$SESSION_DB"
    "${TOOL[@]}" record "$sfile" "broker=$BROKER" "session=$SEQ" "port=$PORT" "server=$server" \
        "start_to_connected_ms=$start_ms" "rss_idle_kb=$rss_idle" "store=$store" "scenarios=$*" \
        "loadavg_at_start=$(cut -d' ' -f1-3 /proc/loadavg)" "other_busy_processes=$busy"
    "${TOOL[@]}" probe "$PORT" >"$OUT/logs/$SEQ-$BROKER.probe" 2>&1 ||
        { cat "$OUT/logs/$SEQ-$BROKER.probe" >&2; die "raw STOMP probe against $BROKER failed"; }
    if ((TLS)); then
        # What the broker negotiates with OpenSSL's client (the Python probe
        # above is OpenSSL too; the load generator is rustls, whose choice
        # its debug log shows: see bench/README.md).
        local tls_info
        tls_info=$(openssl s_client -connect "127.0.0.1:$PORT" -CAfile "$TLS_CA" -verify_return_error \
            </dev/null 2>&1 | tee "$OUT/logs/$SEQ-$BROKER.s_client" |
            awk '/^New, /{sub(/^New, /,""); n=$0} /Server Temp Key:/{sub(/.*Temp Key: /,""); k=$0}
                 /Peer signature type:/{sub(/.*type: /,""); p=$0}
                 END{print n "; key exchange " k "; signature " p}')
        log "  TLS (openssl s_client): $tls_info"
        "${TOOL[@]}" record "$sfile" "tls_openssl=$tls_info" \
            "tls_python=$(sed -n 's/^  tls //p' "$OUT/logs/$SEQ-$BROKER.probe")"
    fi

    log "  warm-up ${BROKER_WARMUP}s (persistent queue with receipts + topic; not counted)"
    run_bench warmup-queue -d "/queue/bench.warmup.$SEQ" --producers 4 --consumers 4 --persistent \
        --receipt-every 10 --duration "$BROKER_WARMUP" --size "$SIZE" --drain-timeout "$DRAIN_TIMEOUT" &
    local wq=$!
    # The second warm-up stream does not sample RSS (one sampler at a time).
    local wj=""
    if ((SESSION_OW)); then
        # The OpenWire path (codec, connection handling) gets its own
        # warm-up at the same time: the JMS program's persistent queue load.
        log "  + OpenWire warm-up ${BROKER_WARMUP}s (JMS, 4 producers persistent, 4 consumers; not counted)"
        java "${JMS_JVM[@]}" -cp "$JMS_CP" JmsLoad "$(ow_url "$OWPORT")" "bench.warmup.ow.$SEQ" --producers 4 \
            --consumers 4 --persistent --warmup 0 --duration "$BROKER_WARMUP" --drain-timeout "$DRAIN_TIMEOUT" \
            --size "$SIZE" >"$OUT/runs/$SEQ-$BROKER-warmup-ow.json" 2>"$OUT/runs/$SEQ-$BROKER-warmup-ow.stderr" &
        wj=$!
    fi
    "$HALYARD" bench --url "$(broker_url "$PORT")" -d "/topic/bench.warmup.$SEQ" --producers 1 \
        --consumers 2 --duration "$BROKER_WARMUP" --size "$SIZE" --drain-timeout "$DRAIN_TIMEOUT" --json \
        "${BENCH_EXTRA[@]}" >"$OUT/runs/$SEQ-$BROKER-warmup-topic.json" \
        2>"$OUT/runs/$SEQ-$BROKER-warmup-topic.stderr" || true
    wait "$wq" || true
    if [[ -n "$wj" ]]; then wait "$wj" || log "  WARNING: the OpenWire warm-up failed: see runs/$SEQ-$BROKER-warmup-ow.*"; fi

    local s
    for s in "$@"; do
        log "  scenario $s"
        scenario "$s"
    done

    local hwm
    hwm=$(awk '/VmHWM/{print $2}' "/proc/$BROKER_PID/status" 2>/dev/null || echo 0)
    stop_broker
    log "  stopped in ${STOP_S}s; peak RSS (VmHWM) $((hwm / 1024)) MiB"
    "${TOOL[@]}" record "$sfile" "rss_hwm_kb=$hwm" "stop_s=$STOP_S" \
        "loadavg_at_end=$(cut -d' ' -f1-3 /proc/loadavg)"
    if [[ -n "$SESSION_DB" ]] && ((!KEEP)); then
        "${PSQL[@]}" -c "DROP DATABASE IF EXISTS $SESSION_DB WITH (FORCE)" || true
    fi
}

# The sessions, in the counterbalanced order chosen above.
if [[ -z "$ONLY" ]]; then
    run_group 1 halyard "${G1[@]}"
    run_group 2 activemq "${G1[@]}"
    run_group 3 activemq "${G2[@]}"
    run_group 4 halyard "${G2[@]}"
else
    run_group 1 "$ONLY" "${G1[@]}"
    run_group 2 "$ONLY" "${G2[@]}"
fi
if [[ $STORE == postgres ]] && want halyard && [[ -z "$SCENARIOS" || ",$SCENARIOS," == *,e,* ]]; then
    SESSION_STORE=journal
    run_session 5 halyard ej
    SESSION_STORE=$STORE
fi

# takeover STORE MESSAGES ROUNDS [SETTLE]: bench/takeover.py on a shared
# directory (journal) or a fresh database of the run's server (postgres),
# its JSON summary in takeover/STORE-MESSAGES[-SETTLE].json for the table.
# SETTLE: seconds the master serves before each kill (takeover.py's
# default 2, time for the journal's index checkpoint; 0: killed the moment
# the fill ends).
takeover() {
    local store=$1 n=$2 rounds=$3 settle=${4:-2} url=() db="" stem
    stem="$store-$n-settle$settle"
    if [[ $store == postgres ]]; then
        db="bench_takeover_$n"
        pg_new_db "$db"
        url=(--store-url "postgres://postgres@127.0.0.1:$PG_PORT/$db")
    fi
    log "takeover: $store store, $n stored messages, $rounds rounds, ${settle}s settle"
    if python3 "$HERE/takeover.py" --binary "$HALYARD" --messages "$n" --rounds "$rounds" --settle "$settle" --json "${url[@]}" \
        >"$OUT/takeover/$stem.json" 2>"$OUT/takeover/$stem.stderr"; then
        log "  $(cat "$OUT/takeover/$stem.json")"
    else
        log "  WARNING: takeover.py failed: see takeover/$stem.stderr"
        rm -f "$OUT/takeover/$stem.json"
    fi
    if [[ -n "$db" ]] && ((!KEEP)); then
        "${PSQL[@]}" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" || true
    fi
}
if ((TAKEOVER)); then
    mkdir -p "$OUT/takeover"
    takeover journal 0 5
    takeover journal "$TAKEOVER_DEEP" 3
    takeover journal "$TAKEOVER_DEEP" 3 0
    if [[ $STORE == postgres ]]; then
        takeover postgres 0 5
        takeover postgres "$TAKEOVER_DEEP" 3
    fi
fi
"${TOOL[@]}" record "$OUT/run.json" "loadavg_at_end=$(cut -d' ' -f1-3 /proc/loadavg)"
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/env.txt"

echo >&2
"${TOOL[@]}" table "$OUT"
elapsed=$(($(date +%s) - SCRIPT_T0))
echo "total time: $((elapsed / 60))m$((elapsed % 60))s; results in $OUT" | tee -a "$OUT/table.txt"
