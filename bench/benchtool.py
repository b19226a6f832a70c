#!/usr/bin/env python3
"""Helpers for bench/compare.sh (standard library only).

Subcommands:
  free-port                      print a free TCP port on 127.0.0.1
  launch PORT SECS LOG -- CMD...  start CMD in a new session (process group)
                                 with stdout+stderr to LOG, then wait until a
                                 STOMP CONNECT on PORT is answered with
                                 CONNECTED; print "PID MS SERVER" where MS is
                                 the time from just before the exec to the
                                 CONNECTED frame.  On failure the process
                                 group is killed and the exit status is 1.
  probe PORT                     raw STOMP 1.2 exchange: CONNECT, persistent
                                 SEND with receipt, SUBSCRIBE
                                 client-individual, MESSAGE, ACK with
                                 receipt, DISCONNECT with receipt; with
                                 TLS also prints the negotiated version and
                                 cipher suite
  (launch and probe connect over TLS, verifying the broker against the CA
  file in $BENCH_TLS_CA, when that is set: compare.sh --tls)
  rss PID                        VmRSS of PID in KiB
  sample-rss PID OUT             every 100 ms write the peak VmRSS (KiB) seen
                                 so far to OUT, until PID exits or SIGTERM
  fsync DIR SECS                 write+fdatasync loop in DIR; print JSON
  floor RESULTS_DIR              print the floor section's figures (floor-*.json)
  cpu-watch OUT ROOTPID...       creates OUT.started once it has taken its first
                                 sample; at SIGTERM writes JSON to OUT: CPU used
                                 by the process trees under ROOTPIDs ("ours":
                                 this script, the broker, the PostgreSQL
                                 server) and by everything else on the
                                 machine ("foreign"), in cores
  pgbench BINDIR PORT DB SECS CLIENTS...
                                 one-row INSERT (1 KiB) + COMMIT per
                                 transaction with pgbench, for each client
                                 count; print JSON
  record FILE KEY=VALUE...       merge keys into a JSON object file (values
                                 that parse as JSON numbers are stored as
                                 numbers)
  table RESULTS_DIR              print the comparison table (and write
                                 table.txt and summary.json there)
"""

import json
import os
import signal
import socket
import ssl
import sys
import time


# --------------------------------------------------------------------------
# STOMP probes


def _read_frame(sock, buf, deadline):
    """Read one frame; returns (frame_bytes, rest). Skips heart-beat EOLs."""
    while True:
        buf = buf.lstrip(b"\r\n")
        i = buf.find(b"\x00")
        if i >= 0:
            return buf[:i], buf[i + 1:]
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no complete frame")
        sock.settimeout(left)
        d = sock.recv(65536)
        if not d:
            raise ConnectionError("connection closed; got %r" % buf)
        buf += d


def _headers(frame):
    head = frame.split(b"\n\n", 1)[0].decode("utf-8", "replace")
    lines = head.split("\n")
    hdrs = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            hdrs.setdefault(k, v)
    return lines[0], hdrs


def _unescape(v):
    out, i = [], 0
    while i < len(v):
        c = v[i]
        if c == "\\" and i + 1 < len(v):
            out.append({"c": ":", "n": "\n", "r": "\r", "\\": "\\"}.get(v[i + 1], v[i + 1]))
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _escape(v):
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace(":", "\\c")


def cmd_free_port(_args):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1])
    s.close()


def _open(port, timeout):
    """A connection to the broker on 127.0.0.1:PORT: plain TCP, or TLS
    (certificate and host name verified) when $BENCH_TLS_CA names a CA."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    ca = os.environ.get("BENCH_TLS_CA")
    if not ca:
        return s
    ctx = ssl.create_default_context(cafile=ca)
    try:
        return ctx.wrap_socket(s, server_hostname="127.0.0.1")
    except BaseException:
        s.close()
        raise


def _try_connect(port, deadline):
    """One CONNECT attempt; returns the CONNECTED headers or raises."""
    with _open(port, 1) as s:
        s.sendall(b"CONNECT\naccept-version:1.2\nhost:localhost\nheart-beat:0,0\n\n\x00")
        frame, _ = _read_frame(s, b"", min(deadline, time.monotonic() + 5))
        cmd, hdrs = _headers(frame)
        if cmd != "CONNECTED":
            raise ConnectionError("got %s" % cmd)
        try:
            s.sendall(b"DISCONNECT\n\n\x00")
        except OSError:
            pass
        return hdrs


def cmd_launch(args):
    import subprocess
    port, secs, logf = int(args[0]), float(args[1]), args[2]
    if args[3] != "--":
        raise SystemExit("launch: expected -- before the command")
    cmd = args[4:]
    out = open(logf, "ab")
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = t0 + secs
    last_err = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            print("broker exited with status %s before accepting a connection" % proc.returncode,
                  file=sys.stderr)
            return 1
        try:
            hdrs = _try_connect(port, deadline)
            t1 = time.monotonic()
            print("%d %.1f %s" % (proc.pid, (t1 - t0) * 1e3, hdrs.get("server", "?")))
            return 0
        except (OSError, TimeoutError, ConnectionError) as e:
            last_err = str(e)
            time.sleep(0.005)
    print("no CONNECTED within %.0f s (last: %s); killing it" % (secs, last_err), file=sys.stderr)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    return 1


def cmd_probe(args):
    port = int(args[0])
    dest = "/queue/bench.probe.%d" % os.getpid()
    deadline = time.monotonic() + 15
    s = _open(port, 5)
    if isinstance(s, ssl.SSLSocket):
        print("  tls %s %s (Python %s)" % (s.version(), s.cipher()[0], ssl.OPENSSL_VERSION))
    buf = b""

    def exchange(frame, expect):
        nonlocal buf
        s.sendall(frame)
        f, buf = _read_frame(s, buf, deadline)
        cmd, hdrs = _headers(f)
        print("  <- %s %s" % (cmd, " ".join("%s:%s" % kv for kv in sorted(hdrs.items())
                                            if kv[0] in ("server", "version", "receipt-id", "ack",
                                                         "persistent", "subscription", "message"))))
        if cmd != expect:
            raise SystemExit("probe: expected %s, got %s: %r" % (expect, cmd, f))
        return f, hdrs

    exchange(b"CONNECT\naccept-version:1.2\nhost:localhost\nheart-beat:0,0\n\n\x00", "CONNECTED")
    body = b"probe-body"
    exchange(("SEND\ndestination:%s\npersistent:true\nreceipt:r-send\ncontent-type:text/plain\n"
              "content-length:%d\n\n" % (dest, len(body))).encode() + body + b"\x00", "RECEIPT")
    f, hdrs = exchange(("SUBSCRIBE\nid:0\ndestination:%s\nack:client-individual\n\n\x00" % dest).encode(),
                       "MESSAGE")
    if not f.endswith(body):
        raise SystemExit("probe: MESSAGE body differs: %r" % f)
    ack_id = _unescape(hdrs["ack"])
    exchange(("ACK\nid:%s\nreceipt:r-ack\n\n\x00" % _escape(ack_id)).encode(), "RECEIPT")
    exchange(("UNSUBSCRIBE\nid:0\nreceipt:r-unsub\n\n\x00").encode(), "RECEIPT")
    exchange(b"DISCONNECT\nreceipt:r-bye\n\n\x00", "RECEIPT")
    s.close()
    print("  probe ok")
    return 0


# --------------------------------------------------------------------------
# Process memory


def _rss_kb(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def cmd_rss(args):
    v = _rss_kb(int(args[0]))
    if v is None:
        return 1
    print(v)
    return 0


def cmd_sample_rss(args):
    pid, out = int(args[0]), args[1]
    peak = 0
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    while not stop:
        v = _rss_kb(pid)
        if v is None:
            break
        if v > peak:
            peak = v
            tmp = out + ".tmp"
            with open(tmp, "w") as f:
                f.write("%d\n" % peak)
            os.replace(tmp, out)
        time.sleep(0.1)
    return 0


# --------------------------------------------------------------------------
# CPU used by others


def _proc_table():
    """{pid: (ppid, utime+stime+cutime+cstime in clock ticks)}"""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                st = f.read()
        except OSError:
            continue
        # The command name (field 2) may contain spaces: split after it.
        rest = st[st.rfind(")") + 2:].split()
        try:
            ppid = int(rest[1])
            ticks = int(rest[11]) + int(rest[12]) + int(rest[13]) + int(rest[14])
        except (IndexError, ValueError):
            continue
        out[int(name)] = (ppid, ticks)
    return out


def _tree_ticks(table, roots):
    children = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    seen, todo = set(), [r for r in roots if r in table]
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        todo.extend(children.get(p, ()))
    return sum(table[p][1] for p in seen)


def _busy_ticks():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system: time processes ran (guest time is inside user).
    return v[0] + v[1] + v[2]


def cmd_cpu_watch(args):
    out, roots = args[0], [int(a) for a in args[1:] if a]
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    hz = os.sysconf("SC_CLK_TCK")
    t0, b0, o0 = time.monotonic(), _busy_ticks(), _tree_ticks(_proc_table(), roots)
    # Tells the caller that the first sample is taken (and SIGTERM handled).
    open(out + ".started", "w").close()
    while not stop:
        time.sleep(0.1)
    t1, b1, o1 = time.monotonic(), _busy_ticks(), _tree_ticks(_proc_table(), roots)
    secs = max(t1 - t0, 1e-3)
    busy = (b1 - b0) / hz / secs
    ours = (o1 - o0) / hz / secs
    res = {"seconds": round(secs, 2), "cpus": os.cpu_count(), "busy_cores": round(busy, 2),
           "ours_cores": round(ours, 2), "foreign_cores": round(max(busy - ours, 0.0), 2)}
    with open(out + ".tmp", "w") as f:
        json.dump(res, f)
    os.replace(out + ".tmp", out)
    try:
        os.unlink(out + ".started")
    except OSError:
        pass
    return 0


# --------------------------------------------------------------------------
# PostgreSQL's own single-row commit rate


def cmd_pgbench(args):
    import re
    import subprocess
    import tempfile
    bindir, port, db, secs = args[0], args[1], args[2], args[3]
    clients = [int(c) for c in args[4:]] or [1]
    conn = ["-h", "127.0.0.1", "-p", port, "-U", "postgres"]
    subprocess.run([os.path.join(bindir, "psql")] + conn + ["-d", db, "-qAt", "-c",
                    "CREATE TABLE IF NOT EXISTS bench_rows (id bigserial PRIMARY KEY, body text NOT NULL)"],
                   check=True)
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write("INSERT INTO bench_rows (body) VALUES (repeat('x', 1024));\n")
        script = f.name
    res = {"script": "INSERT INTO bench_rows (body) VALUES (repeat('x', 1024)) -- one autocommitted "
                     "transaction each, prepared (-M prepared), synchronous_commit as the server has it",
           "seconds": float(secs), "runs": []}
    try:
        for c in clients:
            # As before every measured run in PostgreSQL mode (compare.sh's
            # pg_checkpoint): no checkpoint left over from the last one.
            subprocess.run([os.path.join(bindir, "psql")] + conn + ["-d", db, "-qAt", "-c", "CHECKPOINT"],
                           check=True)
            cmd = [os.path.join(bindir, "pgbench")] + conn + [
                "-n", "-M", "prepared", "-f", script, "-T", str(secs), "-c", str(c),
                "-j", str(min(c, os.cpu_count() or 1)), db]
            p = subprocess.run(cmd, capture_output=True, text=True)
            m = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", p.stdout)
            lat = re.search(r"latency average = ([0-9.]+) ms", p.stdout)
            res["runs"].append({"clients": c, "tps": m and float(m.group(1)),
                                "latency_avg_ms": lat and float(lat.group(1)),
                                "exit": p.returncode,
                                "error": None if m else (p.stderr.strip().splitlines() or ["?"])[-1]})
    finally:
        os.unlink(script)
    print(json.dumps(res))
    return 0


# --------------------------------------------------------------------------
# Disk


def _fsync_loop(path, secs, prealloc):
    block = b"x" * 4096
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        if prealloc:
            # Like a journal file: allocated and flushed once, then
            # overwritten in place, so fdatasync need not update the size.
            size = 64 << 20
            os.posix_fallocate(fd, 0, size)
            os.fsync(fd)
        lat = []
        off = 0
        end = time.monotonic() + secs
        while time.monotonic() < end:
            t = time.perf_counter()
            if prealloc:
                os.pwrite(fd, block, off)
                off = (off + 4096) % size
            else:
                os.write(fd, block)
            os.fdatasync(fd)
            lat.append(time.perf_counter() - t)
    finally:
        os.close(fd)
        os.unlink(path)
    lat.sort()
    n = len(lat)

    def pct(p):
        return round(lat[min(n - 1, int(n * p))] * 1e6, 1)

    return {"ops": n, "seconds": secs, "ops_per_s": round(n / secs, 1),
            "p50_us": pct(0.50), "p99_us": pct(0.99), "max_us": round(lat[-1] * 1e6, 1)}


def _floor(rd):
    """The floor section's send rates: {producers: (sync_floor, halyard)}."""
    got = {}
    for p in (1, 16):
        rates = []
        for t in ("floor", "halyard"):
            d = _load(os.path.join(rd, "floor-%s-%d.json" % (t, p)))
            rates.append(d.get("send_rate") if d else None)
        if all(rates):
            got[p] = tuple(rates)
    return got


def _floor_lines(rd):
    """With pgbench in the run (--store postgres), the floor is pg_floor,
    and both rates are also given as a share of pgbench's with as many
    clients."""
    pgb = _load(os.path.join(rd, "pgbench.json"))
    tps = {r["clients"]: r["tps"] for r in (pgb or {}).get("runs", []) if r.get("tps")}
    name = "pg_floor" if pgb else "sync_floor"
    lines = []
    for p, (f, h) in sorted(_floor(rd).items()):
        line = "%2d synchronous producer(s), no consumer: %s %.0f msg/s, Halyard %.0f msg/s (%.0f %% of the floor)" % (
            p, name, f, h, 100.0 * h / f)
        if tps.get(p):
            line += "; of pgbench with %d client(s): %s %.0f %%, Halyard %.0f %%" % (
                p, name, 100.0 * f / tps[p], 100.0 * h / tps[p])
        lines.append(line)
    removed = _load(os.path.join(rd, "floor-removed-16.json"))
    if removed and removed.get("send_rate"):
        r = removed["send_rate"]
        line = "16 synchronous producer(s), each message deleted once stored (b's database work): %s %.0f msg/s" % (name, r)
        if tps.get(16):
            line += " (%.0f %% of pgbench with 16 clients)" % (100.0 * r / tps[16])
        lines.append(line)
    return lines


def cmd_floor(args):
    """Prints the floor section's figures (compare.sh's floor section)."""
    for line in _floor_lines(args[0]):
        print("  " + line)
    return 0


def cmd_fsync(args):
    d, secs = args[0], float(args[1])
    path = os.path.join(d, "fsync-probe.%d" % os.getpid())
    st = os.statvfs(d)
    fstype = "?"
    try:
        # Longest mount point that prefixes the directory.
        real = os.path.realpath(d)
        best = ""
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                mp = parts[1]
                if (real == mp or real.startswith(mp.rstrip("/") + "/")) and len(mp) >= len(best):
                    best, fstype = mp, "%s on %s (%s)" % (parts[2], mp, parts[0])
    except OSError:
        pass
    res = {
        "dir": d,
        "filesystem": fstype,
        "free_gib": round(st.f_bavail * st.f_frsize / 2**30, 1),
        "append_4k": _fsync_loop(path, secs / 2, prealloc=False),
        "overwrite_4k": _fsync_loop(path, secs / 2, prealloc=True),
    }
    print(json.dumps(res))
    return 0


# --------------------------------------------------------------------------
# Results


def cmd_record(args):
    path = args[0]
    try:
        with open(path) as f:
            obj = json.load(f)
    except (OSError, ValueError):
        obj = {}
    for kv in args[1:]:
        k, v = kv.split("=", 1)
        try:
            obj[k] = json.loads(v)
        except ValueError:
            obj[k] = v
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
    os.replace(path + ".tmp", path)
    return 0


SCENARIOS = [
    ("a", "a  persistent, 1 prod/1 cons, receipt per msg"),
    ("b", "b  persistent, 16 prod/16 cons, receipt per msg"),
    ("c", "c  persistent, 4 prod/4 cons, receipt every 100"),
    ("d", "d  non-persistent, 4 prod/4 cons, no receipts"),
    ("e", "e  drain {n} queued persistent, client-indiv. ack"),
    ("f", "f  topic, 1 prod -> 10 subscribers, non-persistent"),
    ("s", "s  persistent, 4 prod/10 selective cons (1/10 each)"),
    # PostgreSQL mode only: the same drain with Halyard on its journal
    # store, for comparison (no ActiveMQ figure).
    ("ej", "ej same drain, Halyard's journal store (reference)"),
    # OpenWire: bench/java/JmsLoad.java (ActiveMQ's JMS client) on each
    # broker's OpenWire port; one consumer, AUTO_ACKNOWLEDGE.
    ("ow-a", "ow-a JMS persistent (sync send), 1 prod/1 cons"),
    ("ow-b", "ow-b JMS persistent (sync send), 16 prod/1 cons"),
    ("ow-c", "ow-c JMS non-persistent (async), 1 prod/1 cons"),
    ("ow-d", "ow-d JMS non-persistent (async), 16 prod/1 cons"),
]
BROKERS = ("halyard", "activemq")


def _load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _pct(run, which, p):
    lat = (run or {}).get(which)
    if not lat:
        return None
    v = lat.get(p)
    return None if v is None else float(v)


def _fmt(v, unit):
    if v is None:
        return "-"
    if unit == "msg/s":
        return "{:,.0f}".format(v)
    if unit == "us":
        return "{:,.0f}".format(v) if v >= 100 else "{:.1f}".format(v)
    if unit == "MiB":
        return "{:,.1f}".format(v)
    if unit == "ms":
        return "{:,.0f}".format(v)
    return str(v)


def cmd_table(args):
    rd = args[0]
    runs, peaks = {}, {}
    for name in sorted(os.listdir(os.path.join(rd, "runs"))):
        if not name.endswith(".json"):
            continue
        # <session>-<broker>-<scenario>[-<part>].json
        stem = name[:-5]
        parts = stem.split("-")
        if len(parts) < 3:
            continue
        broker, scen = parts[1], "-".join(parts[2:])
        runs[(broker, scen)] = _load(os.path.join(rd, "runs", name))
        try:
            with open(os.path.join(rd, "runs", stem + ".rss")) as f:
                peaks[(broker, scen)] = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    run_info = _load(os.path.join(rd, "run.json")) or {}
    pg_mode = run_info.get("store") == "postgres"
    sessions = {}
    sdir = os.path.join(rd, "sessions")
    for name in sorted(os.listdir(sdir)) if os.path.isdir(sdir) else []:
        s = _load(os.path.join(sdir, name))
        if s:
            sessions.setdefault(s.get("broker"), []).append(s)

    # (label, figure, unit, halyard, activemq, higher_is_better)
    rows = []
    for key, label in SCENARIOS:
        drain = key in ("e", "ej")
        main = key + "-drain" if drain else key
        h, a = runs.get(("halyard", main)), runs.get(("activemq", main))
        if h is None and a is None:
            continue
        if key == "e":
            n = max((r or {}).get("expected") or 0 for r in (h, a))
            label = label.format(n="{:,}".format(n) if n % 1000 else "%dk" % (n // 1000))
        figs = []
        if drain:
            figs.append(("drain msg/s", "msg/s", lambda r: r and r.get("receive_rate"), True))
            hf, af = runs.get(("halyard", key + "-fill")), runs.get(("activemq", key + "-fill"))
            figs.append(("(fill send msg/s)", "msg/s", None, True))
        else:
            figs.append(("send msg/s", "msg/s", lambda r: r and r.get("send_rate"), True))
            figs.append(("deliveries/s, all 10 subs" if key == "f" else "receive msg/s", "msg/s",
                         lambda r: r and r.get("receive_rate"), True))
            if key in ("a", "b", "c", "s"):
                figs.append(("receipt p50 us", "us", lambda r: _pct(r, "receipt_latency_us", "p50"), False))
                figs.append(("receipt p99 us", "us", lambda r: _pct(r, "receipt_latency_us", "p99"), False))
            if key.startswith("ow-"):
                # How long the JMS send() call took: for a persistent
                # message the broker's round trip (store write included).
                figs.append(("send() p50 us", "us", lambda r: _pct(r, "send_latency_us", "p50"), False))
                figs.append(("send() p99 us", "us", lambda r: _pct(r, "send_latency_us", "p99"), False))
            figs.append(("e2e p50 us", "us", lambda r: _pct(r, "e2e_latency_us", "p50"), False))
            figs.append(("e2e p99 us", "us", lambda r: _pct(r, "e2e_latency_us", "p99"), False))
        first = True
        for fname, unit, get, hib in figs:
            if get is None:  # fill rate of scenario e
                hv = hf and hf.get("send_rate")
                av = af and af.get("send_rate")
            else:
                hv, av = get(h), get(a)
            rows.append((label if first else "", fname, unit, hv, av, hib))
            first = False
        # peak RSS during this scenario
        parts_ = (key + "-fill", key + "-drain") if drain else (key,)
        hp = max([peaks[("halyard", p)] for p in parts_ if ("halyard", p) in peaks] or [None])
        ap = max([peaks[("activemq", p)] for p in parts_ if ("activemq", p) in peaks] or [None])
        rows.append(("", "broker peak RSS MiB", "MiB", hp and hp / 1024, ap and ap / 1024, False))

    def sess(broker, field, agg):
        # Reference sessions (PostgreSQL mode: Halyard on its journal store)
        # are not the broker under comparison.
        vals = [s.get(field) for s in sessions.get(broker, [])
                if s.get(field) is not None and not s.get("reference")]
        return agg(vals) if vals else None

    rows.append(("broker", "start -> CONNECTED ms (median)", "ms",
                 sess("halyard", "start_to_connected_ms", _median),
                 sess("activemq", "start_to_connected_ms", _median), False))
    rows.append(("", "RSS idle after start MiB (median)", "MiB",
                 _div(sess("halyard", "rss_idle_kb", _median), 1024),
                 _div(sess("activemq", "rss_idle_kb", _median), 1024), False))
    rows.append(("", "RSS peak, whole session (VmHWM) MiB", "MiB",
                 _div(sess("halyard", "rss_hwm_kb", max), 1024),
                 _div(sess("activemq", "rss_hwm_kb", max), 1024), False))

    if pg_mode:
        head = ("scenario", "figure", "Halyard (PostgreSQL)", "ActiveMQ (JDBC)", "ratio")
    else:
        head = ("scenario", "figure", "Halyard", "ActiveMQ", "ratio")
    table = [head]
    for label, fname, unit, hv, av, hib in rows:
        ratio = None
        if hv and av:
            ratio = hv / av if hib else av / hv
        table.append((label, fname, _fmt(hv, unit), _fmt(av, unit),
                      "-" if ratio is None else "{:.2f}x".format(ratio)))
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    lines = []
    for i, r in enumerate(table):
        cells = [r[0].ljust(widths[0]), r[1].ljust(widths[1])] + [c.rjust(w) for c, w in zip(r[2:], widths[2:])]
        lines.append("  ".join(cells).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("")
    lines.append("ratio: > 1.00x means Halyard is better. Throughput: Halyard/ActiveMQ;")
    lines.append("latency, RSS and start time: ActiveMQ/Halyard.")
    if run_info.get("tls"):
        lines.append("Transport: STOMP over TLS on both brokers (stomp+ssl, %s certificate from a "
                     "throwaway CA); the load generator connects over TLS." % (
                         "RSA 2048" if run_info.get("tls_key") == "rsa" else "ECDSA P-256"))
    if pg_mode:
        lines.append("Both brokers store in the same PostgreSQL server (a fresh database per session);")
        lines.append("RSS is the broker process's only, not the PostgreSQL server's.")

        def fig(broker, scen, key):
            r = runs.get((broker, scen))
            return r and r.get(key)
        lines.append("")
        lines.append("issue #8 targets:")
        for key, what in (("a", "1 synchronous producer"), ("b", "16 synchronous producers")):
            hv, av = fig("halyard", key, "send_rate"), fig("activemq", key, "send_rate")
            if hv and av:
                lines.append("  %s send, %s: %.2fx ActiveMQ's JDBC store (target >= 20x): %s" % (
                    key, what, hv / av, "met" if hv / av >= 20 else "NOT met"))
        hv, jv = fig("halyard", "e-drain", "receive_rate"), fig("halyard", "ej-drain", "receive_rate")
        if hv and jv:
            lines.append("  e drain: Halyard on PostgreSQL %s msg/s = %.2fx its journal store's %s msg/s "
                         "(target: the same order)" % (_fmt(hv, "msg/s"), hv / jv, _fmt(jv, "msg/s")))

    # Anything that makes a figure suspect.
    notes = []
    cpu = {}
    for name in sorted(os.listdir(os.path.join(rd, "runs"))):
        if name.endswith(".cpu"):
            c = _load(os.path.join(rd, "runs", name))
            if c:
                cpu[name[:-4]] = c
    for stem, c in sorted(cpu.items()):
        if "warmup" not in stem and (c.get("foreign_cores") or 0) > 0.25:
            notes.append("%s: other processes used %.2f of %s cores meanwhile (this run used %.2f)"
                         % (stem, c["foreign_cores"], c.get("cpus"), c.get("ours_cores") or 0))
    for (broker, scen), r in sorted(runs.items()):
        if r is None:
            notes.append("%s %s: no JSON (bench failed; see its .stderr)" % (broker, scen))
            continue
        if r.get("missing") or r.get("errors") or r.get("extra"):
            notes.append("%s %s: missing=%s extra=%s errors=%s" % (
                broker, scen, r.get("missing"), r.get("extra"), r.get("errors")))
    floor = _floor_lines(rd)
    if floor:
        lines.append("floor (crates/cli/examples/pg_floor.rs: Halyard's store writer and nothing above it):"
                     if pg_mode else
                     "floor (crates/cli/examples/sync_floor.rs: read, append, fdatasync, RECEIPT; best group commit):")
        lines.extend("  " + l for l in floor)
    for broker in BROKERS:
        for s in sessions.get(broker, []):
            if s.get("other_busy_processes"):
                notes.append("%s session %s: %s other rustc/cargo/java/halyard processes were running "
                             "when it started" % (broker, s.get("session"), s.get("other_busy_processes")))
            if s.get("store") and broker == "halyard" and str(s.get("store")).lower() == "memory":
                notes.append("halyard session %s: store=Memory -- persistent messages are NOT written "
                             "to disk, so scenarios a, b, c, e are not equal durability "
                             "(ActiveMQ fsyncs KahaDB)." % s.get("session"))
            if pg_mode and broker == "halyard" and s.get("expected_store") and \
                    str(s.get("store")).lower() != str(s.get("expected_store")).lower():
                notes.append("halyard session %s: store=%s, expected %s" % (
                    s.get("session"), s.get("store"), s.get("expected_store")))
    pgb = _load(os.path.join(rd, "pgbench.json"))
    if pgb:
        lines.append("")
        lines.append("PostgreSQL %s: pgbench, one 1 KiB row INSERT + COMMIT per transaction: %s" % (
            run_info.get("pg_version", "?"), "; ".join(
                "%d client%s %s tps (avg %s ms)" % (r["clients"], "" if r["clients"] == 1 else "s",
                                                    _fmt(r.get("tps"), "msg/s"), r.get("latency_avg_ms"))
                for r in pgb.get("runs", []))))
    if run_info.get("pg_settings"):
        lines.append("PostgreSQL settings: %s" % run_info["pg_settings"])
    takeovers = _takeovers(rd)
    if takeovers:
        lines.append("")
        lines.append("Halyard master/slave takeover (bench/takeover.py): kill -9 of the master -> first RECEIPT "
                     "for a persistent SEND from the new master")
        lines.append("%-30s %12s %9s %7s %10s %10s %10s" % ("store", "messages", "settle s", "rounds",
                                                            "median ms", "min ms", "max ms"))
        for t in takeovers:
            lines.append("%-30s %12s %9s %7s %10s %10s %10s" % (
                "shared database (PostgreSQL)" if t.get("store") == "postgres" else "shared directory (journal)",
                "{:,}".format(t.get("messages") or 0), t.get("settle_s", "-"), t.get("rounds"),
                t.get("median_ms"), t.get("min_ms"), t.get("max_ms")))
    fs = _load(os.path.join(rd, "fsync.json"))
    if fs:
        lines.append("")
        lines.append("disk (%s): write 4 KiB + fdatasync: append %.0f/s (p50 %.0f us, p99 %.0f us); "
                     "overwrite preallocated %.0f/s (p50 %.0f us, p99 %.0f us)" % (
                         fs["filesystem"],
                         fs["append_4k"]["ops_per_s"], fs["append_4k"]["p50_us"], fs["append_4k"]["p99_us"],
                         fs["overwrite_4k"]["ops_per_s"], fs["overwrite_4k"]["p50_us"],
                         fs["overwrite_4k"]["p99_us"]))
    for broker in BROKERS:
        for s in sessions.get(broker, []):
            lines.append("session %s %s: %s" % (s.get("session"), broker, ", ".join(
                "%s=%s" % (k, s[k]) for k in ("server", "store", "start_to_connected_ms", "rss_idle_kb",
                                              "rss_hwm_kb", "stop_s", "loadavg_at_start", "loadavg_at_end",
                                              "scenarios", "tls_openssl") if k in s)))
    if notes:
        lines.append("")
        lines.append("NOTES:")
        lines.extend("  " + n for n in notes)
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    with open(os.path.join(rd, "table.txt"), "w") as f:
        f.write(text)
    summary = {"rows": [{"scenario": l, "figure": fn, "unit": u, "halyard": hv, "activemq": av,
                         "higher_is_better": hib} for l, fn, u, hv, av, hib in rows],
               "notes": notes, "store": run_info.get("store", "journal"),
               "tls": bool(run_info.get("tls")), "tls_key": run_info.get("tls_key") or None,
               "takeover": takeovers,
               "floor": {str(p): {"sync_floor": f, "halyard": h} for p, (f, h) in _floor(rd).items()}}
    with open(os.path.join(rd, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return 0


def _takeovers(rd):
    """The takeover section's summaries (takeover/STORE-MESSAGES.json),
    journal first, then by stored messages."""
    tdir = os.path.join(rd, "takeover")
    out = []
    for name in os.listdir(tdir) if os.path.isdir(tdir) else []:
        if name.endswith(".json"):
            t = _load(os.path.join(tdir, name))
            if t:
                out.append(t)
    return sorted(out, key=lambda t: (t.get("store") != "journal", t.get("messages") or 0,
                                      -(t.get("settle_s") or 0)))


def _median(vals):
    vals = sorted(vals)
    n = len(vals)
    return vals[n // 2] if n % 2 else (vals[n // 2 - 1] + vals[n // 2]) / 2


def _div(v, d):
    return None if v is None else v / d


COMMANDS = {
    "free-port": cmd_free_port,
    "launch": cmd_launch,
    "probe": cmd_probe,
    "rss": cmd_rss,
    "sample-rss": cmd_sample_rss,
    "fsync": cmd_fsync,
    "floor": cmd_floor,
    "record": cmd_record,
    "cpu-watch": cmd_cpu_watch,
    "pgbench": cmd_pgbench,
    "table": cmd_table,
}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(COMMANDS[sys.argv[1]](sys.argv[2:]) or 0)
