#!/usr/bin/env bash
# A throwaway PostgreSQL server for the test suite; scripts/test.sh uses it.
#
#   scripts/test-postgres.sh start [PID]
#       Initialises a server in a new temporary directory and starts it on a
#       free port of 127.0.0.1, then prints two shell assignments:
#         HALYARD_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:PORT/postgres
#         HALYARD_TEST_PG_DIR=DIR
#       With PID, a watchdog stops the server if process PID ends without
#       having run `stop` (say it was killed with SIGKILL).
#   scripts/test-postgres.sh stop DIR
#       Stops that server (immediate shutdown) and removes DIR. Does nothing
#       if DIR is not such a directory or is already gone.
#
# The server binaries are looked for as crates/testkit does (pg_bin_dir):
# $HALYARD_TEST_PG_BINDIR, the highest /usr/lib/postgresql/<version>/bin,
# `pg_config --bindir`, PATH. If there are none and we are root, Debian's
# `postgresql` package is installed. As root, the server runs as the
# unprivileged `postgres` user (initdb and postgres refuse to run as root).
# Everything but the assignments goes to stderr.
set -euo pipefail

self=$(readlink -f "$0")
marker=.halyard-test-postgres

die() {
    echo "test-postgres: $*" >&2
    exit 1
}

has_server() { [ -x "$1/initdb" ] && [ -x "$1/postgres" ] && [ -x "$1/pg_ctl" ]; }

find_bindir() {
    local dir
    if [ -n "${HALYARD_TEST_PG_BINDIR:-}" ]; then
        has_server "$HALYARD_TEST_PG_BINDIR" && echo "$HALYARD_TEST_PG_BINDIR"
        return
    fi
    for dir in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V -r); do
        if has_server "$dir"; then
            echo "$dir"
            return
        fi
    done
    dir=$(pg_config --bindir 2>/dev/null) && has_server "$dir" && { echo "$dir"; return; }
    dir=$(command -v initdb 2>/dev/null) && dir=$(dirname "$dir") && has_server "$dir" && { echo "$dir"; return; }
    return 1
}

# Runs a command as the owner of directory $1 (the server's user), the rest
# of the arguments being the command.
as_owner() {
    local owner
    owner=$(stat -c %U "$1")
    shift
    if [ "$(id -u)" = 0 ] && [ "$owner" != root ]; then
        runuser -u "$owner" -- "$@"
    else
        "$@"
    fi
}

stop() {
    local dir=${1:-}
    [ -n "$dir" ] && [ -e "$dir/$marker" ] || return 0
    if [ -f "$dir/data/postmaster.pid" ] && [ -f "$dir/bindir" ]; then
        (cd "$dir" && as_owner "$dir" "$(cat "$dir/bindir")/pg_ctl" -D "$dir/data" stop -m immediate -w >/dev/null 2>&1) || true
    fi
    rm -rf "$dir"
}

start() {
    local owner_pid=${1:-} bindir dir port attempt t0 version
    t0=$(date +%s%N)

    if ! bindir=$(find_bindir); then
        [ -z "${HALYARD_TEST_PG_BINDIR:-}" ] ||
            die "HALYARD_TEST_PG_BINDIR=$HALYARD_TEST_PG_BINDIR has no initdb, postgres and pg_ctl"
        # As root, or through sudo when it needs no password.
        local sudo=()
        if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
            sudo=(sudo -n)
        fi
        if { [ "$(id -u)" != 0 ] && [ ${#sudo[@]} = 0 ]; } || ! command -v apt-get >/dev/null; then
            die "the PostgreSQL server binaries (initdb, postgres) are missing: install them (Debian: apt-get install postgresql), or set HALYARD_TEST_PG_BINDIR, or set HALYARD_TEST_DATABASE_URL to a server of yours"
        fi
        echo "test-postgres: installing Debian's postgresql package" >&2
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2 ||
            { "${sudo[@]}" apt-get update -q >&2 &&
                "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2; } ||
            die "apt-get install postgresql failed"
        bindir=$(find_bindir) || die "installed postgresql, yet found no server binaries"
    fi

    if [ "$(id -u)" = 0 ] && ! id -u postgres >/dev/null 2>&1; then
        # What Debian's package would create.
        useradd --system --user-group --no-create-home --home-dir /var/lib/postgresql \
            --shell /bin/bash postgres || die "cannot create the postgres user"
    fi

    dir=$(mktemp -d "${TMPDIR:-/tmp}/halyard-pg.XXXXXX")
    touch "$dir/$marker"
    echo "$bindir" >"$dir/bindir"
    trap 'stop "$dir"' EXIT
    [ "$(id -u)" = 0 ] && chown postgres: "$dir"
    cd "$dir" # a directory the server user can enter

    as_owner "$dir" "$bindir/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C \
        --no-sync >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; die "initdb failed"; }
    # As in crates/testkit/src/lib.rs (SETTINGS).
    cat >>"$dir/data/postgresql.conf" <<EOF

# halyard scripts/test-postgres.sh
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
max_connections = 200
fsync = on
shared_buffers = 64MB
log_min_messages = warning
logging_collector = off
lc_messages = 'C'
tcp_keepalives_idle = 5
tcp_keepalives_interval = 2
tcp_keepalives_count = 3
dynamic_shared_memory_type = mmap
EOF

    # A port below Linux's ephemeral range (32768-60999), so as not to take
    # one that a test got from the kernel and is about to use; retried if
    # another process has it.
    for attempt in 1 2 3 4 5 6 7 8 9 10; do
        port=$((20000 + RANDOM % 12000))
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            continue # something listens there
        fi
        if as_owner "$dir" "$bindir/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -o "-p $port" \
            -w -t 60 start >/dev/null 2>&1; then
            break
        fi
        if ! grep -q "could not bind" "$dir/postgres.log" 2>/dev/null || [ "$attempt" = 10 ]; then
            tail -n 30 "$dir/postgres.log" >&2 || true
            die "PostgreSQL did not start"
        fi
        : >"$dir/postgres.log"
    done
    for attempt in $(seq 100); do
        "$bindir/pg_isready" -q -h 127.0.0.1 -p "$port" && break
        [ "$attempt" = 100 ] && die "PostgreSQL does not accept connections"
        sleep 0.1
    done
    trap - EXIT

    if [ -n "$owner_pid" ]; then
        (
            trap '' INT TERM HUP
            while kill -0 "$owner_pid" 2>/dev/null && [ -e "$dir/$marker" ]; do
                sleep 2
            done
            "$self" stop "$dir"
        ) </dev/null >/dev/null 2>&1 &
    fi

    version=$("$bindir/postgres" --version | awk '{print $3}')
    echo "PostgreSQL for the tests: a throwaway PostgreSQL $version at postgres://postgres@127.0.0.1:$port/postgres (data in $dir; started in $((($(date +%s%N) - t0) / 1000000)) ms)" >&2
    printf 'HALYARD_TEST_DATABASE_URL=%q\n' "postgres://postgres@127.0.0.1:$port/postgres"
    printf 'HALYARD_TEST_PG_DIR=%q\n' "$dir"
}

case "${1:-}" in
start) start "${2:-}" ;;
stop) stop "${2:-}" ;;
*) die "usage: $0 start [PID] | stop DIR" ;;
esac
