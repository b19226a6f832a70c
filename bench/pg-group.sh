#!/usr/bin/env bash
# What PostgreSQL itself does with the broker's group statement, against
# pgbench's one-row insert (issue #19's goal 4: BENCHMARKS.md, "fourth
# pass").
#
#   bench/pg-group.sh [ROUNDS] [SECONDS] [b]
#
# Starts a throwaway PostgreSQL (scripts/test-postgres.sh), has the
# broker create its schema in a fresh database (a release build of
# `halyard`, $HALYARD_BIN or target/release/halyard, started and stopped),
# then runs with `pgbench -M prepared -c 1`, ROUNDS times (default 3) and
# SECONDS each (default 4), back to back so that each round's ratios are
# within one minute:
#   one    a 1 KiB INSERT of one row (compare.sh's pgbench figure)
#   group  scenario a's group as the broker sends it: one 1 KiB message in
#          both tables, the previous message's two deletes, the fence
#   inline the same with the fence as an UPDATE ... RETURNING the writes join
#   nofence the same without a fence (unsafe; for comparison only)
# With a third argument `b`, then scenario b's side (goal 4 b), ROUNDS times:
#   one-16  the one-row insert with `-c 16` (compare.sh's pgbench-16 figure)
#   gN      a group of N 1 KiB messages as the broker's one writer
#           connection sends it (`-c 1`; N = 16, 8, 4, 1), reported in
#           messages a second; like a's, its deletes find no row (index
#           lookups only), so it is the database's best case
# With a third argument `lanes` instead, the same groups of 8 messages with
# ascending sequence numbers (one shared sequence, as the broker's one
# writer numbers them), ROUNDS times, on 1 and 2 connections (`-c 1`,
# `-c 2`), each with the broker's fence and with a shared one (an advisory
# lock taken shared, then the epoch read; made here, not in the broker's
# schema): what a second writer connection does at the database alone.
# `-c 1` waits a round trip between groups, which the writer's own
# connection does not (it sends the next group ahead): compare `-c 2` with
# the store itself (pg_floor), as BENCHMARKS.md's seventh pass does.
# The session settings are the broker's own (plan_cache_mode,
# enable_seqscan). The statement text follows GROUP in
# crates/broker/src/store/postgres/mod.rs; keep them alike.
set -euo pipefail

rounds=${1:-3}
secs=${2:-4}
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${HALYARD_BIN:-$here/target/release/halyard}
[ -x "$bin" ] || { echo "pg-group: no $bin (cargo build --release -p halyard)" >&2; exit 1; }

eval "$("$here/scripts/test-postgres.sh" start $$)"
work=$(mktemp -d /tmp/pg-group.XXXXXX)
cleanup() {
    [ -n "${broker:-}" ] && kill "$broker" 2>/dev/null || true
    "$here/scripts/test-postgres.sh" stop "$HALYARD_TEST_PG_DIR"
    rm -rf "$work"
}
trap cleanup EXIT
bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
bindir=${HALYARD_TEST_PG_BINDIR:-$bindir}
port=$(echo "$HALYARD_TEST_DATABASE_URL" | sed 's/.*:\([0-9]*\)\/.*/\1/')
psql() { "$bindir/psql" -h 127.0.0.1 -p "$port" -U postgres -q -v ON_ERROR_STOP=1 "$@"; }
psql -d postgres -c "CREATE DATABASE pg_group"

# The broker makes its schema at its first start, then takes the lease
# (epoch 1, which the fence below names).
stomp=$(python3 "$here/bench/benchtool.py" free-port)
"$bin" broker --store postgres --store-url "postgres://postgres@127.0.0.1:$port/pg_group" \
    --data-dir "$work/data" --stomp "127.0.0.1:$stomp" --ws 127.0.0.1:0 \
    --http 127.0.0.1:0 --openwire 127.0.0.1:0 2>"$work/broker.log" &
broker=$!
for _ in $(seq 1 500); do
    (exec 3<>"/dev/tcp/127.0.0.1/$stomp") 2>/dev/null && break
    sleep 0.02
done
kill "$broker"
wait "$broker" 2>/dev/null || true
broker=
epoch=$(psql -d pg_group -At -c "SELECT epoch FROM halyard_lock WHERE id = 1")
psql -d pg_group -c "CREATE TABLE bench_rows (id bigserial PRIMARY KEY, body text)"

# pgbench turns :s into a parameter; a colon elsewhere (a message id's)
# would be taken for one.
message="ARRAY[CAST(:s AS bigint)], ARRAY[1::smallint], ARRAY['/queue/qa'], ARRAY[''], \
ARRAY[4::smallint], ARRAY[true], ARRAY[0::bigint], ARRAY[1796615874905::bigint], \
ARRAY['/queue/qa'], ARRAY['ID-halyard-1'], ARRAY[1::bigint], ARRAY['[]'], \
ARRAY[decode(repeat('78', 1024), 'hex')], ARRAY[1100]"
body="c AS (SELECT set_config('synchronous_commit', coalesce(NULL::text, current_setting('synchronous_commit')), true)), \
d AS (INSERT INTO halyard_duplicate_ids (queue, id, seq) SELECT q, i, sq FROM UNNEST(ARRAY[]::text[], ARRAY[]::text[], ARRAY[]::bigint[]) AS x(q, i, sq) ON CONFLICT (queue, id) DO UPDATE SET seq = EXCLUDED.seq, at = now()), \
r AS (DELETE FROM halyard_messages WHERE seq = ANY(ARRAY[CAST(:s AS bigint) - 1]) GUARD), \
rb AS (DELETE FROM halyard_message_bodies WHERE seq = ANY(ARRAY[CAST(:s AS bigint) - 1]) GUARD), \
u AS MATERIALIZED (SELECT * FROM UNNEST($message) AS u(s, kk, ka, kb, p, pe, e, t, d, ip, n, h, b, z) JOINED), \
ab AS (INSERT INTO halyard_message_bodies (seq, persistent, timestamp, destination, id_prefix, id_n, headers, body) SELECT s, pe, t, d, ip, n, h::jsonb, b FROM u WHERE NOT EXISTS (SELECT 1 FROM halyard_message_bodies x WHERE x.seq = u.s)), \
a AS (INSERT INTO halyard_messages (seq, key_kind, key_a, key_b, priority, expires, size) SELECT s, kk, ka, kb, p, e, z FROM u WHERE NOT EXISTS (SELECT 1 FROM halyard_messages x WHERE x.seq = u.s))"
seq="\\set s random(1000, 1000000000000)"
echo "INSERT INTO bench_rows (body) VALUES (repeat('x', 1024))" >"$work/one.sql"
{
    echo "$seq"
    echo "WITH f AS (SELECT halyard_fence($epoch, CAST(:s AS bigint))), ${body//GUARD/} SELECT 1 FROM f, c;" | sed 's/ JOINED//'
} >"$work/group.sql"
{
    echo "$seq"
    echo "WITH f AS (UPDATE halyard_lock SET max_seq = GREATEST(max_seq, CAST(:s AS bigint)) WHERE id = 1 AND epoch = $epoch RETURNING 1), ${body//GUARD/AND EXISTS (SELECT FROM f)} SELECT 1 FROM f, c;" | sed 's/ JOINED/, f/'
} >"$work/inline.sql"
{
    echo "$seq"
    echo "WITH ${body//GUARD/} SELECT 1 FROM c;" | sed 's/ JOINED//'
} >"$work/nofence.sql"

export PGOPTIONS="-c plan_cache_mode=force_generic_plan -c enable_seqscan=off"
printf '%-8s' round
for script in one group inline nofence; do printf '%12s' "$script"; done
echo "   (average latency, µs; ratio one/group)"
for r in $(seq 1 "$rounds"); do
    printf '%-8s' "$r"
    declare -A lat=()
    for script in one group inline nofence; do
        out=$("$bindir/pgbench" -h 127.0.0.1 -p "$port" -U postgres -n -M prepared -c 1 \
            -T "$secs" -f "$work/$script.sql" pg_group 2>&1)
        ms=$(echo "$out" | sed -n 's/^latency average = \([0-9.]*\) ms$/\1/p')
        [ -n "$ms" ] || { echo; echo "$out" >&2; exit 1; }
        lat[$script]=$(python3 -c "print(round($ms * 1000))")
        printf '%12s' "${lat[$script]}"
    done
    python3 -c "print('   %d %%' % round(100 * ${lat[one]} / ${lat[group]}))"
done

mode=${3:-}
[ "$mode" = b ] || [ "$mode" = lanes ] || exit 0
# N messages, seqs s .. s+N-1, in the broker's group statement.
for n in 16 8 4 1; do
    many="ARRAY(SELECT generate_series(CAST(:s AS bigint), CAST(:s AS bigint) + $n - 1))"
    each() { echo "ARRAY(SELECT $1 FROM generate_series(1, $n))"; }
    msgs="$many, $(each 1::smallint), $(each "'/queue/qb'::text"), $(each "''::text"), \
$(each 4::smallint), $(each true), $(each 0::bigint), $(each 1796615874905::bigint), \
$(each "'/queue/qb'::text"), $(each "'ID-halyard-1'::text"), $many, $(each "'[]'::text"), \
$(each "decode(repeat('78', 1024), 'hex')"), $(each 1100)"
    prev="ARRAY(SELECT generate_series(CAST(:s AS bigint) - $n, CAST(:s AS bigint) - 1))"
    part=${body//ARRAY\[CAST(:s AS bigint) - 1\]/$prev}
    {
        echo "$seq"
        echo "WITH f AS (SELECT halyard_fence($epoch, CAST(:s AS bigint) + $n)), ${part//GUARD/} SELECT 1 FROM f, c;" \
            | sed 's/ JOINED//' | sed "s|UNNEST(ARRAY\[CAST(:s AS bigint)\].*AS u(s,|UNNEST($msgs) AS u(s,|"
    } >"$work/g$n.sql"
done
if [ "$mode" = lanes ]; then
    psql -d pg_group -c "CREATE SEQUENCE lanes_seq" -c "CREATE FUNCTION lanes_fence(e bigint) RETURNS void AS \$\$
        BEGIN
            PERFORM pg_advisory_xact_lock_shared(hashtextextended(current_schema(), 1));
            PERFORM 1 FROM halyard_lock WHERE id = 1 AND epoch = e;
            IF NOT FOUND THEN RAISE EXCEPTION 'fenced'; END IF;
        END \$\$ LANGUAGE plpgsql VOLATILE"
    {
        echo "SELECT nextval('lanes_seq') * 8 AS s \\gset"
        tail -n +2 "$work/g8.sql"
    } >"$work/fence8.sql"
    sed "s/SELECT halyard_fence($epoch, CAST(:s AS bigint) + 8)/SELECT lanes_fence($epoch)/" \
        "$work/fence8.sql" >"$work/shared8.sql"
    echo
    printf '%-8s%12s%12s%12s%12s\n' round fence-c1 fence-c2 shared-c1 shared-c2
    for r in $(seq 1 "$rounds"); do
        printf '%-8s' "$r"
        for run in "1 fence8" "2 fence8" "1 shared8" "2 shared8"; do
            set -- $run
            out=$("$bindir/pgbench" -h 127.0.0.1 -p "$port" -U postgres -n -M prepared -c "$1" -j "$1" \
                -T "$secs" -f "$work/$2.sql" pg_group 2>&1) || true
            tps=$(echo "$out" | sed -n 's/^tps = \([0-9.]*\) .*/\1/p')
            [ -n "$tps" ] || { echo; echo "$out" >&2; exit 1; }
            printf '%12.0f' "$(python3 -c "print($tps * 8)")"
        done
        echo
    done
    echo "(messages a second, groups of 8)"
    exit 0
fi
echo
printf '%-8s%12s' round one-16
for n in 16 8 4 1; do printf '%12s' "g$n"; done
echo "   (transactions or messages a second)"
for r in $(seq 1 "$rounds"); do
    printf '%-8s' "$r"
    out=$("$bindir/pgbench" -h 127.0.0.1 -p "$port" -U postgres -n -M prepared -c 16 -j 2 \
        -T "$secs" -f "$work/one.sql" pg_group 2>&1)
    tps=$(echo "$out" | sed -n 's/^tps = \([0-9.]*\) .*/\1/p')
    [ -n "$tps" ] || { echo; echo "$out" >&2; exit 1; }
    printf '%12.0f' "$tps"
    for n in 16 8 4 1; do
        out=$("$bindir/pgbench" -h 127.0.0.1 -p "$port" -U postgres -n -M prepared -c 1 \
            -T "$secs" -f "$work/g$n.sql" pg_group 2>&1)
        tps=$(echo "$out" | sed -n 's/^tps = \([0-9.]*\) .*/\1/p')
        [ -n "$tps" ] || { echo; echo "$out" >&2; exit 1; }
        printf '%12.0f' "$(python3 -c "print($tps * $n)")"
    done
    echo
done
