//! The protected admin API (HTTP basic auth over the broker's users, the
//! admin and monitor roles, open health probes, on master and slave alike,
//! `halyard status --user`) and the limits per principal and per address
//! (connections per user and per IP address, the send rate).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use halyard_broker::password;
use halyard_stomp::{Command, Frame};
use halyard_testkit::eventually;
use halyard_testkit::http::{HttpReply, http_request, try_http_request};
use halyard_testkit::metrics::metric;
use halyard_testkit::stomp::{Stomp, body};

use crate::support::cluster::Cluster;
use crate::support::inproc::TestBroker;
use crate::support::run_cli;

const ADMIN: (&str, &str) = ("root", "root-secret");
const MONITOR: (&str, &str) = ("watcher", "watcher-secret");
const APP: (&str, &str) = ("app", "app-secret");

/// `[security]` with an admin, a monitor and an application user (no admin
/// role), their hashes made now.
fn users() -> String {
    let user = |(name, pw): (&str, &str), groups: &str| {
        format!(
            "[[security.users]]\nname = \"{name}\"\npassword = \"{}\"\ngroups = [{groups}]\n",
            password::hash(pw).unwrap()
        )
    };
    [
        user(ADMIN, "\"admins\""),
        user(MONITOR, "\"monitors\""),
        user(APP, "\"apps\""),
    ]
    .concat()
}

async fn get(http: SocketAddr, path: &str, auth: Option<(&str, &str)>) -> HttpReply {
    http_request(http, "GET", path, auth).await
}

/// A counter from `/metrics`, read as the admin.
async fn counter(http: SocketAddr, name: &str) -> u64 {
    let r = get(http, "/metrics", Some(ADMIN)).await;
    assert_eq!(r.status, 200, "GET /metrics as admin: {}", r.body);
    metric(&r.body, name).unwrap_or_else(|| panic!("no {name} in /metrics:\n{}", r.body))
}

#[tokio::test]
async fn the_admin_api_wants_a_user_with_the_right_role() {
    let b = TestBroker::start(&users()).await;

    // Load balancers' probes need nothing.
    assert_eq!(get(b.http, "/healthz", None).await.status, 200);
    assert_eq!(get(b.http, "/readyz", None).await.status, 200);

    // No credentials: 401 asking for basic auth, on every other path.
    for path in ["/api/status", "/api/destinations", "/metrics", "/nowhere"] {
        let r = get(b.http, path, None).await;
        assert_eq!(r.status, 401, "GET {path} without credentials: {r:?}");
        assert_eq!(
            r.header("www-authenticate"),
            Some(r#"Basic realm="halyard""#),
            "{r:?}"
        );
    }

    // A wrong password: 401, counted.
    let before = counter(b.http, "halyard_admin_login_failures_total").await;
    let r = get(b.http, "/api/status", Some((ADMIN.0, "wrong"))).await;
    assert_eq!(r.status, 401, "{r:?}");
    assert!(r.header("www-authenticate").is_some(), "{r:?}");
    let r = get(b.http, "/api/status", Some(("nobody", "x"))).await;
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(
        counter(b.http, "halyard_admin_login_failures_total").await,
        before + 2
    );

    // A monitor reads everything, changes nothing.
    for path in ["/api/status", "/api/destinations", "/metrics"] {
        let r = get(b.http, path, Some(MONITOR)).await;
        assert_eq!(r.status, 200, "GET {path} as monitor: {r:?}");
    }
    for method in ["POST", "DELETE", "PUT"] {
        let r = http_request(b.http, method, "/api/destinations", Some(MONITOR)).await;
        assert_eq!(r.status, 403, "{method} as monitor: {r:?}");
        assert!(r.body.contains("admin role"), "{r:?}");
    }

    // A user without an admin role reads nothing.
    let r = get(b.http, "/api/status", Some(APP)).await;
    assert_eq!(r.status, 403, "{r:?}");
    assert!(r.body.contains("monitor role"), "{r:?}");

    // The admin passes the guard everywhere (no endpoint takes a POST
    // yet: the router's 405, not the guard's 403).
    let r = get(b.http, "/api/status", Some(ADMIN)).await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = http_request(b.http, "POST", "/api/status", Some(ADMIN)).await;
    assert_eq!(r.status, 405, "{r:?}");
    assert!(counter(b.http, "halyard_admin_forbidden_total").await >= 4);
}

#[tokio::test]
async fn an_open_broker_keeps_an_open_admin_api() {
    let b = TestBroker::start("").await;
    assert_eq!(get(b.http, "/api/status", None).await.status, 200);
    assert_eq!(
        http_request(b.http, "POST", "/api/status", None)
            .await
            .status,
        405
    );
}

/// `/api/status` as `auth`, if it answers 200.
async fn status_as(http: SocketAddr, auth: (&str, &str)) -> Option<serde_json::Value> {
    let r = try_http_request(http, "GET", "/api/status", Some(auth))
        .await
        .ok()?;
    (r.status == 200).then(|| serde_json::from_str(&r.body).ok())?
}

#[tokio::test]
async fn the_slave_asks_for_the_same_users_and_status_logs_in() {
    let mut c = Cluster::new(&users());
    let a = c.spawn("a");
    let a_http = c.nodes[a].http;
    eventually(Duration::from_secs(20), "a master", || async {
        status_as(a_http, MONITOR)
            .await
            .filter(|s| s["role"] == "master")
    })
    .await;
    let s = c.spawn("b");
    let http = c.nodes[s].http;
    eventually(Duration::from_secs(20), "b a slave", || async {
        status_as(http, MONITOR)
            .await
            .filter(|s| s["role"] == "slave")
    })
    .await;
    let r = get(http, "/api/status", None).await;
    assert_eq!(r.status, 401, "{r:?}");
    let r = get(http, "/api/status", Some((MONITOR.0, "wrong"))).await;
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(get(http, "/healthz", None).await.status, 200);
    let r = http_request(http, "POST", "/api/status", Some(MONITOR)).await;
    assert_eq!(r.status, 403, "{r:?}");
    // The slave counts its own failures.
    let m = get(http, "/metrics", Some(MONITOR)).await;
    assert_eq!(
        metric(&m.body, "halyard_admin_login_failures_total"),
        Some(1)
    );

    let addr = http.to_string();
    let (code, out, err) = run_cli(&["status", "--http", &addr], None);
    assert_ne!(code, 0, "{out}{err}");
    assert!(err.contains("--user"), "{err}");
    let (code, out, err) = run_cli(
        &[
            "status",
            "--http",
            &addr,
            "--user",
            MONITOR.0,
            "--password",
            MONITOR.1,
        ],
        None,
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("slave"), "{out}");
}

/// CONNECT as `user`.
async fn login(stomp: SocketAddr, (user, pw): (&str, &str)) -> Result<Stomp, Frame> {
    Stomp::try_connect_with(
        stomp,
        &[
            ("accept-version", "1.2"),
            ("host", "localhost"),
            ("login", user),
            ("passcode", pw),
        ],
    )
    .await
}

#[tokio::test]
async fn connections_per_user_are_limited_and_given_back() {
    let b = TestBroker::start(&format!(
        "[limits]\nmax-connections-per-user = 2\n{}",
        users()
    ))
    .await;
    let first = login(b.stomp, APP).await.expect("first");
    let _second = login(b.stomp, APP).await.expect("second");
    let refused = login(b.stomp, APP).await.err().expect("a third is refused");
    assert_eq!(refused.command, Command::Error);
    let message = refused.headers.get("message").unwrap_or_default();
    assert!(
        message.contains("limits.max-connections-per-user") && message.contains("'app'"),
        "{refused:?}"
    );
    // Another user is not affected.
    let _other = login(b.stomp, MONITOR).await.expect("another user");
    assert_eq!(
        counter(b.http, "halyard_connections_refused_per_user_total").await,
        1
    );
    drop(first);
    eventually(Duration::from_secs(10), "the slot given back", || async {
        login(b.stomp, APP).await.ok()
    })
    .await;
}

#[tokio::test]
async fn connections_per_address_are_limited_and_given_back() {
    let b = TestBroker::start("[limits]\nmax-connections-per-address = 2\n").await;
    let first = Stomp::connect(b.stomp).await;
    // Counted from the TCP connection, before any CONNECT.
    let _second = Stomp::open(b.stomp).await;
    let refused = Stomp::try_connect_with(b.stomp, &[("accept-version", "1.2")])
        .await
        .err()
        .expect("a third is refused");
    assert_eq!(refused.command, Command::Error);
    assert!(
        body(&refused).contains("limits.max-connections-per-address"),
        "{refused:?}"
    );
    assert_eq!(
        counter(b.http, "halyard_connections_refused_per_address_total").await,
        1
    );
    drop(first);
    eventually(Duration::from_secs(10), "the slot given back", || async {
        Stomp::try_connect(b.stomp, &[], Duration::from_secs(5))
            .await
            .ok()
    })
    .await;
}

#[tokio::test]
async fn a_fast_producer_is_held_to_the_send_rate() {
    let b = TestBroker::start("[limits]\nmax-send-rate-per-connection = 20\n").await;
    let mut s = Stomp::connect(b.stomp).await;
    let started = Instant::now();
    // 20 pass at once (a second's worth), the other 20 at 20 a second.
    for i in 0..39 {
        s.send(
            Frame::new(Command::Send)
                .header("destination", "/queue/rate")
                .body(format!("m{i}")),
        )
        .await;
    }
    s.request(
        Frame::new(Command::Send)
            .header("destination", "/queue/rate")
            .body("last"),
    )
    .await;
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900), "40 SENDs in {took:?}");
    assert!(took < Duration::from_secs(5), "40 SENDs in {took:?}");
    assert!(counter(b.http, "halyard_sends_delayed_total").await >= 19);
}
