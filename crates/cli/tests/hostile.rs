//! What a hostile (or merely careless) client must not be able to do to a
//! broker, each tried against real `halyard broker` processes: stop the
//! master, make a master that lost its lock confirm anything, grow memory
//! or disk without bound, stall everyone behind one slow subscriber, fill
//! the destination table for good, or act in another client's name.
//!
//! Every test here failed on the broker before the fix it names.

#![allow(clippy::unwrap_used)]

#[path = "common/cluster.rs"]
mod cluster;
mod common;

use cluster::*;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use halyard_stomp::{Command, Frame};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Raises this test process's soft file-descriptor limit to its hard one:
/// the tests below open a few thousand connections.
fn raise_fd_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut l = getrlimit(Resource::Nofile);
    if l.current < l.maximum {
        l.current = l.maximum;
        let _ = setrlimit(Resource::Nofile, l);
    }
}

/// Asserts that broker `i` keeps `role` for `period`, polling.
async fn keeps_role(c: &mut Cluster, i: usize, role: &str, period: Duration) {
    let until = Instant::now() + period;
    while Instant::now() < until {
        if let Some(s) = c.nodes[i].exited() {
            panic!(
                "{} exited ({s}) while it should stay {role}:\n{}",
                c.nodes[i].name,
                c.logs()
            );
        }
        // The admin port may be saturated on purpose: a missing answer is
        // not a role change.
        if let Some(v) = c.nodes[i].status().await {
            assert_eq!(v["role"], role, "{}: {v}\n{}", c.nodes[i].name, c.logs());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How long one connection of a flood may take to be accepted.
const CONNECT_WAIT: Duration = Duration::from_secs(2);

/// Opens `n` STOMP connections that CONNECT without heart-beats and then
/// say nothing more.
async fn idle_stomp_connections(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        // A broker that stopped accepting fills its backlog; do not wait
        // out SYN retries for each connection then.
        let Ok(Ok(mut s)) = tokio::time::timeout(CONNECT_WAIT, TcpStream::connect(addr)).await
        else {
            break;
        };
        let _ = s
            .write_all(b"CONNECT\naccept-version:1.2\nhost:x\nheart-beat:0,0\n\n\0")
            .await;
        held.push(s);
    }
    held
}

/// Opens `n` admin HTTP connections, each with a request whose headers
/// never end.
async fn half_sent_http_requests(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        let Ok(Ok(mut s)) = tokio::time::timeout(CONNECT_WAIT, TcpStream::connect(addr)).await
        else {
            break;
        };
        let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost:x\r\n").await;
        held.push(s);
    }
    held
}

// ---------------------------------------------------------------------------
// 1. Running out of file descriptors never costs the master its mastership
// ---------------------------------------------------------------------------

/// Under `ulimit -n 1024`, 1,010 idle STOMP connections and 1,100
/// half-sent admin requests used to exhaust the master's descriptors; its
/// lock check then failed ("Too many open files") and it fenced itself.
/// Now the connection caps leave room, the lock check needs no descriptor,
/// and the master stays master, its slave stays slave, and both serve again
/// once the flood is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn descriptor_exhaustion_does_not_cost_the_master_its_lock() {
    raise_fd_limit();
    let mut c =
        Cluster::new("[journal]\nsegment-bytes = 1048576\n\n[ha]\nlock-keepalive-ms = 100\n");
    c.wrapper = ["sh", "-c", "ulimit -n 1024 && exec \"$@\"", "sh", "{}"]
        .map(String::from)
        .to_vec();
    let a = c.master("a").await;
    let b = c.slave("b").await;
    let stomp = idle_stomp_connections(c.nodes[a].stomp, 1_010).await;
    let http = half_sent_http_requests(c.nodes[a].http, 1_100).await;
    println!(
        "opened {} idle STOMP connections and {} half-sent HTTP requests",
        stomp.len(),
        http.len()
    );
    // Ten keep-alive checks at least, on both brokers.
    keeps_role(&mut c, a, "master", Duration::from_secs(2)).await;
    keeps_role(&mut c, b, "slave", Duration::from_millis(200)).await;
    let logs = c.nodes[a].logs();
    assert!(
        logs.contains("fd_limit=1024"),
        "the broker did not log its descriptor figures:\n{logs}"
    );
    assert!(
        logs.contains("limits.max-connections reached"),
        "the STOMP cap was not reached:\n{logs}"
    );
    assert!(!logs.contains("FENCED"), "{logs}");

    // The flood goes; the master serves again, persistent SENDs included,
    // and its admin API answers.
    drop(stomp);
    drop(http);
    let mut p = eventually_link(c.nodes[a].stomp).await;
    p.request(persistent_send("/queue/after-flood", "ok"), "r1")
        .await
        .unwrap();
    let (code, _) = common::http_get(c.nodes[a].http, "/healthz").await;
    assert_eq!(code, 200);
    keeps_role(&mut c, a, "master", Duration::from_millis(300)).await;
}

/// A STOMP connection to `addr`, retried while connections of a flood are
/// still being closed.
async fn eventually_link(addr: SocketAddr) -> Link {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(l) = Link::open(addr).await {
            return l;
        }
        assert!(Instant::now() < deadline, "cannot connect to {addr}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------
// 2. A master that has lost its lock never confirms anything
// ---------------------------------------------------------------------------

/// `rm <data-dir>/lock` and a third broker on the directory: the old
/// master used to keep confirming for up to a keep-alive (1 s), and the
/// new master's recovery, sealed before those writes, lost thousands of
/// receipted messages. Now every group commit proves the lock before its
/// receipts go out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_whose_lock_is_taken_confirms_nothing_more() {
    let started = Instant::now();
    let mut c =
        Cluster::new("[journal]\nsegment-bytes = 1048576\n\n[ha]\nlock-keepalive-ms = 1000\n");
    let a = c.master("a").await;
    let n = c.reserve("c");
    let traffic = Traffic::start(&[c.nodes[a].stomp, c.nodes[n].stomp], 4);
    traffic
        .receipts_from(c.nodes[a].stomp, started, 1000, || c.logs())
        .await;
    std::fs::remove_file(c.data().join("lock")).unwrap();
    let taken = Instant::now();
    c.nodes[n].spawn();
    c.nodes[n].wait_role("master", ROLE_WAIT).await;
    let status = c.nodes[a]
        .wait_exit(Duration::from_secs(10), "after its lock was taken")
        .await;
    assert!(!status.success(), "the old master must exit non-zero");
    assert!(c.nodes[a].logs().contains("FENCED"), "{}", c.logs());
    traffic
        .receipts_from(c.nodes[n].stomp, taken, 1000, || c.logs())
        .await;
    let summary = traffic.finish().await;
    println!("lock taken by a third broker under load: {summary}");
}

/// `chmod 000 lock` while a master and a slave run (as a user the mode
/// applies to): both used to exit, the master because its keep-alive could
/// not read the file, then the slave for the same reason once it took
/// over. The master holds the file open; the mode changes nothing for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_lock_file_stops_neither_master_nor_slave() {
    let mut c =
        Cluster::new("[journal]\nsegment-bytes = 1048576\n\n[ha]\nlock-keepalive-ms = 100\n");
    if rustix::process::geteuid().is_root() {
        // Root ignores file modes: run the brokers as nobody.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(c.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir(c.data()).unwrap();
        rustix::fs::chown(
            c.data(),
            Some(rustix::process::Uid::from_raw(65534)),
            Some(rustix::process::Gid::from_raw(65534)),
        )
        .unwrap();
        c.wrapper = [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "{}",
        ]
        .map(String::from)
        .to_vec();
    }
    let a = c.master("a").await;
    let b = c.slave("b").await;
    let mut p = Link::open(c.nodes[a].stomp).await.unwrap();
    p.request(persistent_send("/queue/chmod", "before"), "r1")
        .await
        .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            c.data().join("lock"),
            std::fs::Permissions::from_mode(0o000),
        )
        .unwrap();
    }
    keeps_role(&mut c, a, "master", Duration::from_secs(1)).await;
    keeps_role(&mut c, b, "slave", Duration::from_millis(100)).await;
    p.request(persistent_send("/queue/chmod", "during"), "r2")
        .await
        .unwrap();
    // The slave takes over through the descriptor it waited on, and keeps
    // serving.
    c.nodes[a].kill();
    c.nodes[b].wait_role("master", ROLE_WAIT).await;
    keeps_role(&mut c, b, "master", Duration::from_secs(1)).await;
    let mut cons = Link::open(c.nodes[b].stomp).await.unwrap();
    cons.request(
        Frame::new(Command::Subscribe)
            .header("id", "s")
            .header("destination", "/queue/chmod")
            .header("ack", "auto"),
        "sub",
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    while got.len() < 2 {
        match cons.next(common::WAIT).await {
            Got::Frame(f) if f.command == Command::Message => got.push(common::body(&f)),
            other => panic!("expected the two messages, got {other:?}:\n{}", c.logs()),
        }
    }
    assert_eq!(got, ["before", "during"]);
}

/// The same flood against a lone master on a PostgreSQL database, whose
/// lease connection is cut meanwhile (PostgreSQL terminates it; with a
/// slave waiting, the slave would rightly take over at once): renewing
/// needs a new connection, which used to fail with "Too many open files"
/// until the lease ran out and the master fenced itself, leaving nobody to
/// serve. The caps leave the lease room to reconnect, and a failed renewal
/// is retried for as long as the lease is valid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn descriptor_exhaustion_does_not_cost_the_master_its_lease() {
    raise_fd_limit();
    let url = tokio::task::spawn_blocking(|| halyard_testkit::database("hostile_fd_lease"))
        .await
        .unwrap();
    let mut c = Cluster::on_database("[ha]\nlease-ms = 1500\n", &url);
    c.wrapper = ["sh", "-c", "ulimit -n 1024 && exec \"$@\"", "sh", "{}"]
        .map(String::from)
        .to_vec();
    let a = c.master("a").await;
    let stomp = idle_stomp_connections(c.nodes[a].stomp, 1_010).await;
    let http = half_sent_http_requests(c.nodes[a].http, 1_100).await;
    let (db, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let cut = db
        .query_one(
            "SELECT pg_terminate_backend(owner_backend) FROM halyard_lock WHERE id = 1",
            &[],
        )
        .await
        .unwrap();
    assert!(cut.get::<_, bool>(0), "the lease's connection was not cut");
    // Two lease periods: the lease had to be renewed on a new connection.
    keeps_role(&mut c, a, "master", Duration::from_secs(3)).await;
    let logs = c.nodes[a].logs();
    assert!(!logs.contains("FENCED"), "{logs}");
    drop(stomp);
    drop(http);
    let mut p = eventually_link(c.nodes[a].stomp).await;
    p.request(persistent_send("/queue/after-flood", "ok"), "r1")
        .await
        .unwrap();
}

/// The admin port is as exposed as the STOMP port: beyond
/// `limits.max-http-connections` a connection gets a 503 at once, and a
/// request whose headers never end is dropped after
/// `timeouts.http-header-ms`, freeing its place. (It used to have neither:
/// about 4,100 half-sent requests took the master's last descriptors.)
#[tokio::test]
async fn the_admin_port_caps_connections_and_times_out_slow_requests() {
    let b = common::BrokerProcess::start(
        "[limits]\nmax-http-connections = 4\n\n[timeouts]\nhttp-header-ms = 500\n",
    )
    .await;
    let held = half_sent_http_requests(b.http, 4).await;
    assert_eq!(held.len(), 4);
    let (code, body) = common::http_get(b.http, "/healthz").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("max-http-connections"), "{body}");
    // The stalled requests are closed by the broker, not by us.
    for mut s in held {
        use tokio::io::AsyncReadExt;
        let started = Instant::now();
        let mut buf = [0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("a half-sent request was not closed")
            .unwrap_or(0);
        assert!(started.elapsed() < Duration::from_secs(5));
        let _ = n;
    }
    let (code, _) = common::http_get(b.http, "/healthz").await;
    assert_eq!(code, 200);
    // A body larger than the admin API takes is refused before it is read.
    let mut s = TcpStream::connect(b.http).await.unwrap();
    s.write_all(b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n")
        .await
        .unwrap();
    let mut reply = String::new();
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    reply.push_str(&String::from_utf8_lossy(&buf[..n]));
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
}
