//! High availability against real `halyard broker` processes sharing ONE
//! PostgreSQL database (a real server: see `halyard-testkit`): takeover by
//! the advisory-lock fast path after `kill -9`, a graceful hand-over on
//! SIGTERM, a network partition between the master and the database (a TCP
//! proxy of halyard-testkit is cut), a frozen master whose late write the
//! database refuses, PostgreSQL restarting and crashing under load, and
//! clear errors for bad database settings.
//!
//! The promises under test: exactly one broker serves at a time — under a
//! partition the old master stops before the new one starts; nothing
//! receipted is lost; a master that lost its lease writes nothing more.
//!
//! Nothing sleeps and hopes: every wait polls for its event with a deadline.

use std::process::{Command as Process, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::cluster::*;
use crate::support::{halyard_bin, run_cli};
use halyard_stomp::{Command, Frame};
use halyard_testkit::proxy::Proxy;
use halyard_testkit::stomp::{Got, Stomp, WAIT, body, persistent_send};

/// ActiveMQ's default lease (10 s): a takeover much faster than that went
/// by the fast path (the dead master's session, and its advisory lock, are
/// gone from the database).
const LONG_LEASE: &str = "[ha]\nlease-ms = 10000\n";
/// A short lease, for tests that must wait for one to expire.
const SHORT_LEASE: &str = "[ha]\nlease-ms = 1500\n";
const SHORT_LEASE_MS: u64 = 1500;

/// A new database of this test's own on the suite's server.
async fn database(hint: &'static str) -> String {
    tokio::task::spawn_blocking(move || halyard_testkit::database(hint))
        .await
        .unwrap()
}

/// A SQL session for checking what the database holds.
async fn sql(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

fn store_args(url: &str) -> Vec<String> {
    ["--store", "postgres", "--store-url", url]
        .map(String::from)
        .to_vec()
}

/// The timestamp of the first log line containing `what` (RFC 3339, UTC,
/// fixed width: compares as text).
fn log_time(log: &str, what: &str) -> String {
    let line = log
        .lines()
        .find(|l| l.contains(what))
        .unwrap_or_else(|| panic!("no {what:?} in the log:\n{log}"));
    line.split_whitespace().next().unwrap().to_owned()
}

/// A partition proxy (see [`Proxy`]) in front of the database at `url`, and
/// the same URL through it.
async fn proxy_to(url: &str) -> (Proxy, String) {
    let parsed: tokio_postgres::Config = url.parse().unwrap();
    let (upstream, upstream_port) = match (&parsed.get_hosts()[0], parsed.get_ports()[0]) {
        (tokio_postgres::config::Host::Tcp(h), port) => (format!("{h}:{port}"), port),
        other => panic!("the test database is not on TCP: {other:?}"),
    };
    let proxy = Proxy::start(upstream).await;
    let port = proxy.addr().port();
    let url = url.replacen(&format!(":{upstream_port}/"), &format!(":{port}/"), 1);
    assert!(url.contains(&format!(":{port}/")), "cannot re-point {url}");
    (proxy, url)
}

// ---------------------------------------------------------------------------
// 1. kill -9 and SIGTERM
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_master_under_load_takes_over_by_the_fast_path() {
    let url = database("ha_kill").await;
    let times = kill_restart_cycles(
        Cluster::on_database(LONG_LEASE, &url),
        6,
        2,
        100,
        "postgres store, kill -9 takeovers",
    )
    .await;
    let m = median(&times);
    println!(
        "MEDIAN kill -9 -> first RECEIPT from the new master over {} takeovers on PostgreSQL: {} (goal <= 500 ms; lease 10 s)",
        times.len(),
        ms(m)
    );
    let slowest = *times.iter().max().unwrap();
    assert!(
        slowest < Duration::from_secs(5),
        "a takeover waited for the 10 s lease instead of taking the fast path: {}",
        spread(&times)
    );
    assert!(m < Duration::from_millis(1500), "{}", spread(&times));
}

/// A counter from a broker's `/metrics`.
async fn metric_of(http: std::net::SocketAddr, name: &str) -> u64 {
    let (_, text) = halyard_testkit::http::http_get(http, "/metrics").await;
    halyard_testkit::metrics::metric(&text, name)
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
}

/// With `store.concurrent-dispatch` (the default) a message reaches its
/// consumer while its write waits for the group ahead, and an ACK that
/// comes before the write cancels it (neither is written). Killed with
/// such messages about, the master loses nothing: every receipted message
/// is delivered, before the kill or by the new master, and none whose ACK
/// was receipted comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_consumed_while_being_stored_survive_a_kill_9_takeover() {
    let started = Instant::now();
    let url = database("ha_cancel").await;
    let mut c = Cluster::on_database(LONG_LEASE, &url);
    let a = c.master("a").await;
    let b = c.slave("b").await;
    let traffic = Traffic::start(&c.stomp_addrs(), 8);
    let http = c.nodes[a].http;
    let cancelled = halyard_testkit::eventually(
        ROLE_WAIT,
        "ACKs that cancel writes on the master",
        || async {
            traffic.check_tasks(|| c.logs());
            let n = metric_of(http, "halyard_store_adds_cancelled_total").await;
            (n >= 20).then_some(n)
        },
    )
    .await;
    let killed_at = c.nodes[a].kill();
    c.nodes[b].wait_role("master", ROLE_WAIT).await;
    traffic
        .receipts_from(c.nodes[b].stomp, killed_at, 200, || c.logs())
        .await;
    let after = metric_of(c.nodes[b].http, "halyard_store_adds_cancelled_total").await;
    let summary = traffic.finish().await;
    println!(
        "concurrent dispatch: {cancelled}+ writes cancelled by ACKs before the kill, {after} on the new master; {summary}; took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_of_the_master_hands_the_lease_over_at_once() {
    let started = Instant::now();
    let url = database("ha_sigterm").await;
    let mut c = Cluster::on_database(LONG_LEASE, &url);
    let a = c.master("a").await;
    let b = c.slave("b").await;
    // The slave names the master (once it has read the lease row).
    let pid = c.nodes[a].pid();
    halyard_testkit::eventually(WAIT, "the slave to name the master", || async {
        let v = c.nodes[b].status().await?;
        (v["lock_owner"]["pid"] == pid).then_some(())
    })
    .await;
    let v = c.nodes[a].status().await.unwrap();
    assert_eq!(
        (v["store"].as_str(), v["database"].as_str()),
        (Some("postgres"), Some(url.as_str())),
        "{v}"
    );
    assert!(v.get("data_dir").is_none(), "{v}");
    let traffic = Traffic::start(&c.stomp_addrs(), 2);
    traffic
        .receipts_from(c.nodes[a].stomp, started, 200, || c.logs())
        .await;
    let at = c.nodes[a].sigterm();
    let status = c.nodes[a].wait_exit(ROLE_WAIT, "SIGTERM").await;
    assert!(status.success(), "{status}:\n{}", c.logs());
    let first = traffic
        .first_receipt(c.nodes[b].stomp, at, || c.logs())
        .await;
    println!(
        "SIGTERM of the master -> first RECEIPT from the new master: {}",
        ms(first - at)
    );
    let s = c.nodes[b].wait_role("master", ROLE_WAIT).await;
    assert_eq!(s["epoch"], 2, "{s}");
    assert!(
        first - at < Duration::from_secs(5),
        "the slave waited for the 10 s lease: the master did not release it"
    );
    traffic
        .receipts_from(c.nodes[b].stomp, at, 200, || c.logs())
        .await;
    println!("  {}", traffic.finish().await);
}

// ---------------------------------------------------------------------------
// 2. A partition between the master and the database
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_master_stops_before_a_slave_takes_over() {
    let started = Instant::now();
    let url = database("ha_partition").await;
    let (proxy, proxy_url) = proxy_to(&url).await;
    let mut c = Cluster::on_database(SHORT_LEASE, &url);
    // a reaches the database only through the proxy; b directly.
    c.store = store_args(&proxy_url);
    let a = c.master("a").await;
    c.store = store_args(&url);
    let b = c.slave("b").await;
    let traffic = Traffic::start(&c.stomp_addrs(), 2);
    traffic
        .receipts_from(c.nodes[a].stomp, started, 200, || c.logs())
        .await;

    proxy.cut();
    let cut_at = Instant::now();
    // Poll b, then a: if a still says master after b said so, two masters
    // served at once.
    let mut a_stopped: Option<Instant> = None;
    let mut a_exit = None;
    let b_master = loop {
        let now = Instant::now();
        let b_is_master = c.nodes[b]
            .status()
            .await
            .is_some_and(|v| v["role"] == "master");
        if let Some(st) = c.nodes[a].exited() {
            a_exit = Some(st);
        }
        let a_is_master = a_exit.is_none()
            && c.nodes[a]
                .status()
                .await
                .is_some_and(|v| v["role"] == "master");
        if !a_is_master && a_stopped.is_none() {
            a_stopped = Some(now);
        }
        assert!(
            !(a_is_master && b_is_master),
            "two masters at once, {} after the cut:\n{}",
            ms(now - cut_at),
            c.logs()
        );
        if b_is_master {
            break now;
        }
        assert!(
            now - cut_at < ROLE_WAIT,
            "b did not take over within {ROLE_WAIT:?} of the cut:\n{}",
            c.logs()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let a_stopped = a_stopped.unwrap();
    println!(
        "partition (lease {SHORT_LEASE_MS} ms): the old master stopped serving {} after the cut, the new master served {} after it ({} later)",
        ms(a_stopped - cut_at),
        ms(b_master - cut_at),
        ms(b_master - a_stopped)
    );
    assert!(a_stopped < b_master);
    assert!(
        a_stopped - cut_at <= Duration::from_millis(SHORT_LEASE_MS),
        "the old master served {} after the cut, longer than its lease",
        ms(a_stopped - cut_at)
    );
    let status = match a_exit {
        Some(s) => s,
        None => c.nodes[a].wait_exit(ROLE_WAIT, "fenced").await,
    };
    assert!(!status.success(), "a fenced master exits non-zero");
    assert!(
        c.nodes[a].logs().contains("lease"),
        "the old master's log says why:\n{}",
        c.nodes[a].logs()
    );
    // The brokers' own clocks agree (one machine): the old master fenced
    // itself before the new one so much as took the lease.
    let fenced = log_time(&c.nodes[a].logs(), "FENCED");
    let took = log_time(&c.nodes[b].logs(), "the lock is ours");
    println!("  by the logs: old master fenced at {fenced}, new master took the lease at {took}");
    for l in c.nodes[a].logs().lines().filter(|l| l.contains("lease")) {
        println!("  a: {l}");
    }
    assert!(fenced < took, "{}", c.logs());
    let s = c.nodes[b].wait_role("master", ROLE_WAIT).await;
    assert_eq!(s["epoch"], 2, "{s}");
    traffic
        .receipts_from(c.nodes[b].stomp, b_master, 200, || c.logs())
        .await;
    println!("  {}", traffic.finish().await);
}

// ---------------------------------------------------------------------------
// 3. A zombie master
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_masters_late_write_is_refused_and_never_visible() {
    let url = database("ha_zombie").await;
    let mut c = Cluster::on_database(SHORT_LEASE, &url);
    let a = c.master("a").await;
    let b = c.slave("b").await;
    let mut zombie = Stomp::link(c.nodes[a].stomp).await.unwrap();
    zombie
        .try_request(persistent_send("/queue/zombie", "before"), "r1")
        .await
        .unwrap();

    // Frozen, its database sessions (and advisory lock) stay open: the
    // slave must wait for the lease to expire in database time.
    c.nodes[a].freeze();
    let frozen_at = Instant::now();
    let m = c.wait_new_master(&[b]).await;
    let waited = frozen_at.elapsed();
    println!(
        "a frozen master (lease {SHORT_LEASE_MS} ms) was replaced after {}",
        ms(waited)
    );
    assert!(
        waited >= Duration::from_millis(SHORT_LEASE_MS * 6 / 10),
        "the slave took over after {} while the master's lease (renewed every {} ms) was live",
        ms(waited),
        SHORT_LEASE_MS / 3
    );

    // Its client sends while it is frozen; then it wakes.
    assert!(
        zombie
            .try_send(
                persistent_send("/queue/zombie", "late")
                    .header("zombie", "yes")
                    .header("receipt", "r2")
            )
            .await
    );
    c.nodes[a].resume();
    match zombie.next_frame(WAIT).await {
        Got::Frame(f) if f.command == Command::Receipt => {
            panic!("the zombie receipted a late write: {f:?}\n{}", c.logs())
        }
        Got::Frame(f) if f.command == Command::Error => {}
        Got::Closed => {}
        Got::Frame(f) => panic!("unexpected {f:?}"),
        Got::Timeout => panic!("the zombie neither answered nor closed:\n{}", c.logs()),
    }
    let status = c.nodes[a].wait_exit(ROLE_WAIT, "fenced after waking").await;
    assert!(!status.success());

    let db = sql(&url).await;
    let late: i64 = db
        .query_one(
            "SELECT count(*) FROM halyard_message_bodies WHERE headers::text LIKE '%zombie%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(late, 0, "the zombie's write reached the database");

    // The new master has the receipted message and nothing after it but
    // what it was sent itself.
    let mut l = Stomp::link(c.nodes[m].stomp).await.unwrap();
    l.try_request(persistent_send("/queue/zombie", "after"), "r3")
        .await
        .unwrap();
    let sub = Frame::new(Command::Subscribe)
        .header("id", "s")
        .header("destination", "/queue/zombie")
        .header("ack", "auto");
    assert!(l.try_send(sub).await);
    let mut got = Vec::new();
    while got.len() < 2 {
        match l.next_frame(WAIT).await {
            Got::Frame(f) if f.command == Command::Message => got.push(body(&f)),
            other => panic!("expected a MESSAGE, got {other:?}"),
        }
    }
    assert_eq!(got, ["before", "after"]);
}

// ---------------------------------------------------------------------------
// 4. PostgreSQL itself restarts or crashes
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarting_or_crashing_under_load_loses_nothing() {
    let started = Instant::now();
    let server = tokio::task::spawn_blocking(halyard_testkit::private_server)
        .await
        .unwrap();
    let server = Arc::new(std::sync::Mutex::new(server));
    let url = server.lock().unwrap().url("postgres");
    // Longer than a restart takes, so the master can ride one out.
    let mut c = Cluster::on_database("[ha]\nlease-ms = 4000\n", &url);
    let a = c.master("a").await;
    c.slave("b").await;
    let traffic = Traffic::start(&c.stomp_addrs(), 2);
    traffic
        .receipts_from(c.nodes[a].stomp, started, 200, || c.logs())
        .await;
    for how in ["restart", "kill -9"] {
        let down_at = Instant::now();
        let s = server.clone();
        tokio::task::spawn_blocking(move || {
            let mut s = s.lock().unwrap();
            if how == "restart" {
                s.stop();
            } else {
                s.kill();
            }
            s.start();
        })
        .await
        .unwrap();
        let up_at = Instant::now();
        let first = traffic.receipts_from_any(up_at, 100, || c.logs()).await;
        let mut roles = Vec::new();
        for n in &mut c.nodes {
            let role = match n.exited() {
                Some(status) => format!("exited ({status})"),
                None => n
                    .status()
                    .await
                    .map_or("?".into(), |v| v["role"].to_string()),
            };
            roles.push(format!("{}: {role}", n.name));
        }
        println!(
            "PostgreSQL {how}: down for {}, first RECEIPT {} after it was back; brokers now {}",
            ms(up_at - down_at),
            ms(first.saturating_duration_since(up_at)),
            roles.join(", ")
        );
        // A broker that stepped down comes back as a slave.
        for n in &mut c.nodes {
            if n.child.is_none() {
                n.spawn();
            }
        }
    }
    // Down for longer than the lease: the master cannot prove its lease and
    // steps down; once the database is back a broker takes over.
    let mut master = None;
    for (i, n) in c.nodes.iter().enumerate() {
        if n.status().await.is_some_and(|v| v["role"] == "master") {
            master = Some(i);
        }
    }
    let master = master.expect("a master");
    // The outages show in the master's metrics, and its renewals go on.
    let http = c.nodes[master].http;
    let metrics = || async move {
        let (_, text) = halyard_testkit::http::http_get(http, "/metrics").await;
        let value = |name: &str| -> u64 {
            halyard_testkit::metrics::metric(&text, name)
                .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
        };
        [
            value("halyard_lease_renewals_total"),
            value("halyard_lease_renewal_failures_total"),
            value("halyard_store_retries_total"),
            value("halyard_lease_remaining_ms"),
        ]
    };
    let [renewals, failures, retries, remaining] =
        halyard_testkit::eventually(WAIT, "a lease renewal", || async {
            let m = metrics().await;
            (m[0] >= 1).then_some(m)
        })
        .await;
    println!(
        "master's metrics: {renewals} lease renewals, {failures} failed, {retries} store writes retried, lease proven for {remaining} ms more"
    );
    assert!(remaining > 0 && remaining <= 4000, "{remaining}");
    // The master rode the outages out, and its metrics show them; or (on a
    // loaded machine, where PostgreSQL took longer than the lease to come
    // back) it stepped down and the slave took over, whose metrics start
    // after them: the takeover is the trace then.
    assert!(
        failures + retries >= 1 || master != a,
        "the outages left no trace in the metrics"
    );
    let down_at = Instant::now();
    let s = server.clone();
    tokio::task::spawn_blocking(move || s.lock().unwrap().stop())
        .await
        .unwrap();
    let status = c.nodes[master]
        .wait_exit(ROLE_WAIT, "stepping down without its database")
        .await;
    let stepped_down = down_at.elapsed();
    assert!(!status.success());
    let s = server.clone();
    tokio::task::spawn_blocking(move || s.lock().unwrap().start())
        .await
        .unwrap();
    let up_at = Instant::now();
    let first = traffic.receipts_from_any(up_at, 100, || c.logs()).await;
    println!(
        "PostgreSQL down for {} (lease 4000 ms): the master stepped down after {}, first RECEIPT {} after the database was back",
        ms(up_at - down_at),
        ms(stepped_down),
        ms(first.saturating_duration_since(up_at))
    );
    assert!(
        stepped_down < Duration::from_millis(4000 + 2000),
        "the master took {} to step down",
        ms(stepped_down)
    );
    println!("  {}", traffic.finish().await);
}

// ---------------------------------------------------------------------------
// 5. Bad settings
// ---------------------------------------------------------------------------

#[test]
fn bad_database_settings_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let bad_lease = crate::support::write_file(dir.path(), "lease.toml", "[ha]\nlease-ms = 5\n");
    let bad_lease = bad_lease.to_str().unwrap();
    // The store chosen in the file, its URL given as a flag: valid. (An
    // unreachable database is waited for, by default for ever: these
    // brokers give up at once, to show the error they give up with.)
    let kind_only = crate::support::write_file(
        dir.path(),
        "store.toml",
        "[store]\nkind = \"postgres\"\nstart-timeout-ms = 1\n",
    );
    let kind_only = kind_only.to_str().unwrap();
    let no_wait = crate::support::write_file(
        dir.path(),
        "no-wait.toml",
        "[store]\nstart-timeout-ms = 1\n",
    );
    let no_wait = no_wait.to_str().unwrap();
    let ports = [
        "--stomp",
        "127.0.0.1:0",
        "--ws",
        "127.0.0.1:0",
        "--openwire",
        "127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
    ];
    let cases: &[(&[&str], &str)] = &[
        (&["--store", "postgres"], "needs a database URL"),
        (
            &["--store", "postgres", "--store-url", "nonsense"],
            "not a valid database URL",
        ),
        (
            &[
                "--store",
                "postgres",
                "--store-url",
                "postgres://u:secret@127.0.0.1:1/x",
                "--config",
                no_wait,
            ],
            "cannot connect to the database postgres://u@127.0.0.1:1/x",
        ),
        (&["--store", "mysql"], "mysql"),
        (
            &[
                "--config",
                kind_only,
                "--store-url",
                "postgres://u@127.0.0.1:1/x",
            ],
            "cannot connect to the database postgres://u@127.0.0.1:1/x",
        ),
        (
            &[
                "--store",
                "postgres",
                "--store-url",
                "postgres://u@127.0.0.1:1/x",
                "--config",
                bad_lease,
            ],
            "ha.lease-ms",
        ),
    ];
    for (args, expected) in cases {
        let mut all = vec!["broker"];
        all.extend_from_slice(args);
        all.extend_from_slice(&ports);
        let (code, _, err) = run_cli(&all, None);
        assert_ne!(code, 0, "{all:?} succeeded");
        assert!(err.contains(expected), "{all:?}: {err}");
        assert!(!err.contains("panicked"), "{all:?}: {err}");
        assert!(!err.contains("secret"), "{all:?} shows the password: {err}");
    }
    // The same from the environment.
    let out = Process::new(halyard_bin())
        .args(["broker"])
        .args(ports)
        .env("HALYARD_STORE", "postgres")
        .env("HALYARD_STORE_URL", "postgres://u:secret@127.0.0.1:1/x")
        .env("HALYARD_STORE__START_TIMEOUT_MS", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("cannot connect to the database postgres://u@127.0.0.1:1/x"),
        "{err}"
    );
    assert!(!err.contains("secret"), "{err}");
}

// ---------------------------------------------------------------------------
// 6. TLS to the database
// ---------------------------------------------------------------------------

/// Writes a file that the server's user owns (the server refuses a key
/// file it does not own).
fn server_file(dir: &std::path::Path, name: &str, text: &str) {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let owner = std::fs::metadata(dir).unwrap();
    std::os::unix::fs::chown(&path, Some(owner.uid()), Some(owner.gid())).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_reaches_postgres_over_tls_and_checks_its_certificate() {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    // A CA, and a certificate it signs for the server's address.
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "halyard test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();

    let mut server = tokio::task::spawn_blocking(halyard_testkit::private_server)
        .await
        .unwrap();
    let data = server.dir().join("data");
    server_file(&data, "server.crt", &cert.pem());
    server_file(&data, "server.key", &key.serialize_pem());
    let mut conf = std::fs::OpenOptions::new()
        .append(true)
        .open(data.join("postgresql.conf"))
        .unwrap();
    std::io::Write::write_all(
        &mut conf,
        b"\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n",
    )
    .unwrap();
    let server = tokio::task::spawn_blocking(move || {
        server.stop();
        server.start();
        server
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let base = server.url("postgres");

    // Verified TLS: the broker serves, and every connection it holds is
    // encrypted.
    let url = format!(
        "{base}?sslmode=verify-full&sslrootcert={}",
        ca_file.display()
    );
    let mut c = Cluster::on_database("", &url);
    let a = c.master("a").await;
    assert!(c.nodes[a].logs().contains(" (TLS)"), "{}", c.logs());
    let mut l = Stomp::link(c.nodes[a].stomp).await.unwrap();
    l.try_request(persistent_send("/queue/tls", "over TLS"), "r1")
        .await
        .unwrap();
    let db = sql(&base).await;
    let row = db
        .query_one(
            "SELECT count(*) FILTER (WHERE s.ssl), count(*) FROM pg_stat_activity a \
             JOIN pg_stat_ssl s USING (pid) WHERE a.application_name = 'halyard'",
            &[],
        )
        .await
        .unwrap();
    let (encrypted, all): (i64, i64) = (row.get(0), row.get(1));
    assert!(all >= 2, "the broker holds {all} connections");
    assert_eq!(encrypted, all, "unencrypted broker connections");
    drop(c);

    // TLS without a trusted certificate: refused, never sent in the clear.
    let ports = [
        "--stomp",
        "127.0.0.1:0",
        "--ws",
        "127.0.0.1:0",
        "--openwire",
        "127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
    ];
    let untrusted = format!("{base}?sslmode=require");
    let mut args = vec!["broker", "--store", "postgres", "--store-url", &untrusted];
    args.extend_from_slice(&ports);
    let (code, _, err) = run_cli(&args, None);
    assert_ne!(code, 0);
    println!("untrusted certificate: {}", err.trim());
    assert!(err.contains("certificate"), "{err}");

    // TLS asked of a server without it: a clear error.
    let plain = format!("{}?sslmode=require", database("tls_plain").await);
    let mut args = vec!["broker", "--store", "postgres", "--store-url", &plain];
    args.extend_from_slice(&ports);
    let (code, _, err) = run_cli(&args, None);
    assert_ne!(code, 0);
    println!("no TLS on the server: {}", err.trim());
    assert!(err.to_lowercase().contains("tls"), "{err}");
    drop(server);
}

// ---------------------------------------------------------------------------
// 7. Two groups of brokers in one database
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_in_different_schemas_of_one_database_are_independent() {
    let url = database("ha_schemas").await;
    let db = sql(&url).await;
    db.batch_execute("CREATE SCHEMA g1; CREATE SCHEMA g2;")
        .await
        .unwrap();
    let in_schema = |s: &str| format!("{url}?options=-c%20search_path%3D{s}");
    let mut g1 = Cluster::on_database(LONG_LEASE, &in_schema("g1"));
    let mut g2 = Cluster::on_database(LONG_LEASE, &in_schema("g2"));
    let a1 = g1.master("a1").await;
    // Each group elects its own master: g2's first broker does not wait.
    let a2 = g2.master("a2").await;
    let b1 = g1.slave("b1").await;
    let b2 = g2.slave("b2").await;
    for (c, a) in [(&g1, a1), (&g2, a2)] {
        let mut l = Stomp::link(c.nodes[a].stomp).await.unwrap();
        let text = format!("for {}", c.nodes[a].name);
        l.try_request(persistent_send("/queue/mine", &text), "r")
            .await
            .unwrap();
    }
    let tables: i64 = db
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE tablename = 'halyard_messages' \
             AND schemaname IN ('g1', 'g2')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 2, "each group has its own tables");
    // Each master holds its own group's advisory lock (the fast path); with
    // one key for the database the second master could not.
    let held: i64 = db
        .query_one(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) \
             WHERE l.locktype = 'advisory' AND l.granted AND a.application_name = 'halyard' \
             AND a.datname = current_database()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(held, 2, "advisory locks held by the two masters");

    // g1's master dies: its slave takes over by the fast path (well under
    // the 10 s lease), and g2 does not notice.
    let killed_at = g1.nodes[a1].kill();
    let s = g1.nodes[b1].wait_role("master", ROLE_WAIT).await;
    let took = killed_at.elapsed();
    println!("g1 takeover after kill -9: {}", ms(took));
    assert_eq!(s["epoch"], 2, "{s}");
    assert!(took < Duration::from_secs(5), "no fast path: {}", ms(took));
    let s2 = g2.nodes[a2].status().await.unwrap();
    assert_eq!(
        (s2["role"].as_str(), s2["epoch"].as_u64()),
        (Some("master"), Some(1)),
        "{s2}"
    );
    assert_eq!(
        g2.nodes[b2].status().await.unwrap()["role"],
        "slave",
        "{}",
        g2.logs()
    );

    // Each master serves its own group's messages only.
    for (c, m, want) in [(&g1, b1, "for a1"), (&g2, a2, "for a2")] {
        let mut l = Stomp::link(c.nodes[m].stomp).await.unwrap();
        l.try_request(persistent_send("/queue/mine", "end"), "r")
            .await
            .unwrap();
        let sub = Frame::new(Command::Subscribe)
            .header("id", "s")
            .header("destination", "/queue/mine")
            .header("ack", "auto");
        assert!(l.try_send(sub).await);
        let mut got = Vec::new();
        while got.last().map(String::as_str) != Some("end") {
            match l.next_frame(WAIT).await {
                Got::Frame(f) if f.command == Command::Message => got.push(body(&f)),
                other => panic!("expected a MESSAGE, got {other:?}"),
            }
        }
        assert_eq!(got, [want, "end"]);
    }
}
