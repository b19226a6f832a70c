//! Users, anonymous access and per-destination rights (docs/SECURITY.md),
//! end to end over STOMP: right and wrong credentials (one answer whether
//! or not the user exists), failed logins slowing their address down,
//! anonymous access off, read-only and on, every right (read, write,
//! admin) on queue, topic, wildcard, temporary and dead-letter patterns,
//! a denied SEND or SUBSCRIBE answered with an ERROR that leaves the
//! connection and its other subscriptions alone, client ids owned per
//! user, `halyard passwd`, and the refusal to start on a network address
//! with nobody to log in.
//!
//! In-process brokers, except where the binary itself is the subject.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::semantics::{error_text, frame, hdr, send_frame};
use crate::support::inproc::TestBroker;
use crate::support::{BrokerProcess, halyard_bin, run_cli};
use halyard_stomp::{Command, Frame};
use halyard_testkit::metrics::{metric_at, metric_at_as};
use halyard_testkit::stomp::{Stomp, WAIT, body};

/// How long "nothing more arrives" is watched for.
const QUIET: Duration = Duration::from_millis(200);

/// Every test user's password is its name backwards plus this.
const SALT: &str = "-pw";

pub(crate) fn password(user: &str) -> String {
    format!("{}{SALT}", user.chars().rev().collect::<String>())
}

/// The argon2id hash of every test user's password, made once per test
/// binary (hashing is slow on purpose).
fn hash(user: &str) -> String {
    static HASHES: OnceLock<std::sync::Mutex<std::collections::HashMap<String, String>>> =
        OnceLock::new();
    let map = HASHES.get_or_init(Default::default);
    let mut map = map.lock().unwrap();
    map.entry(user.to_owned())
        .or_insert_with(|| halyard_broker::password::hash(&password(user)).unwrap())
        .clone()
}

/// `[[security.users]]` entries for `(name, groups)`.
pub(crate) fn users(list: &[(&str, &[&str])]) -> String {
    let mut s = String::new();
    for (name, groups) in list {
        let groups: Vec<String> = groups.iter().map(|g| format!("\"{g}\"")).collect();
        s.push_str(&format!(
            "[[security.users]]\nname = \"{name}\"\npassword = \"{}\"\ngroups = [{}]\n",
            hash(name),
            groups.join(", ")
        ));
    }
    s
}

/// The rights of the authorization tests, as an operator would write them
/// (ActiveMQ's classic example: admins everywhere, producers and consumers
/// on their part of the tree, a team reading the dead-letter queues).
const RIGHTS: &str = r#"
[[security.authorization]]
queue = ">"
read = ["admins"]
write = ["admins"]
admin = ["admins"]

[[security.authorization]]
topic = ">"
read = ["admins"]
write = ["admins"]
admin = ["admins"]

[[security.authorization]]
queue = "orders.>"
read = ["consumers"]
write = ["producers"]
admin = ["producers"]

[[security.authorization]]
topic = "prices.*"
read = ["consumers"]
write = ["producers"]
# Subscribing to a topic no one has used yet makes it (as in ActiveMQ).
admin = ["producers", "consumers"]

[[security.authorization]]
queue = "DLQ.>"
read = ["ops"]
admin = ["producers", "consumers"]

[security.temporary]
read = ["producers", "consumers", "ops"]
write = ["producers", "consumers"]
admin = ["producers", "consumers"]
"#;

/// A broker with the standard users and, if `rights`, [`RIGHTS`].
async fn secured(extra: &str, rights: bool) -> TestBroker {
    let config = format!(
        "{extra}\n{}{}",
        users(&[
            ("root", &["admins"]),
            ("pat", &["producers"]),
            ("cora", &["consumers"]),
            ("olga", &["ops"]),
            ("nemo", &[]),
        ]),
        if rights { RIGHTS } else { "" }
    );
    TestBroker::start(&config).await
}

/// CONNECTs as `user` with its password.
async fn login(addr: SocketAddr, user: &str) -> Stomp {
    let pw = password(user);
    Stomp::connect_with(
        addr,
        &[
            ("accept-version", "1.2"),
            ("host", "localhost"),
            ("login", user),
            ("passcode", &pw),
        ],
    )
    .await
}

/// CONNECT with these credentials, expecting a refusal: the ERROR.
async fn refused(addr: SocketAddr, creds: &[(&str, &str)]) -> Frame {
    let mut headers = vec![("accept-version", "1.2"), ("host", "localhost")];
    headers.extend_from_slice(creds);
    match Stomp::try_connect_with(addr, &headers).await {
        Ok(_) => panic!("CONNECT with {creds:?} was accepted"),
        Err(e) => {
            assert_eq!(e.command, Command::Error, "{e:?}");
            e
        }
    }
}

/// Sends `f` with receipt `id`, expecting a non-fatal ERROR for it (with
/// `receipt-id`) mentioning every needle; the connection stays open.
async fn denied(c: &mut Stomp, mut f: Frame, id: &str, needles: &[&str]) {
    f.headers.push("receipt", id);
    c.send(f).await;
    let e = c.recv().await;
    assert_eq!(e.command, Command::Error, "expected a refusal, got {e:?}");
    assert_eq!(hdr(&e, "receipt-id"), Some(id), "{e:?}");
    let text = error_text(&e);
    assert!(text.contains("not authorized"), "{text}");
    for n in needles {
        assert!(text.contains(n), "{text:?} should mention {n:?}");
    }
}

#[tokio::test]
async fn right_credentials_connect_and_wrong_ones_get_one_answer() {
    let b = secured("", false).await;
    let mut c = login(b.stomp, "pat").await;
    c.send_msg("/queue/a", "x", &[]).await;

    let wrong = refused(b.stomp, &[("login", "pat"), ("passcode", "nope")]).await;
    let unknown = refused(b.stomp, &[("login", "ghost"), ("passcode", "nope")]).await;
    assert_eq!(
        error_text(&wrong),
        error_text(&unknown),
        "an unknown user must get the same answer as a wrong passcode"
    );
    assert!(error_text(&wrong).contains("login failed"), "{wrong:?}");
    // Users exist, so anonymous access is off unless asked for.
    let anon = refused(b.stomp, &[]).await;
    assert!(error_text(&anon).contains("login required"), "{anon:?}");
    // Empty credentials are no credentials.
    let empty = refused(b.stomp, &[("login", ""), ("passcode", "")]).await;
    assert!(error_text(&empty).contains("login required"), "{empty:?}");
    assert_eq!(
        metric_at_as(
            b.http,
            "halyard_login_failures_total",
            ("root", &password("root"))
        )
        .await,
        4
    );
}

#[tokio::test]
async fn failed_logins_slow_their_address_down_and_a_success_clears_it() {
    let b = secured(
        "[security]\nlogin-delay-ms = 400\nlogin-delay-max-ms = 800",
        false,
    )
    .await;
    let bad = [("login", "pat"), ("passcode", "nope")];
    refused(b.stomp, &bad).await;
    let t = Instant::now();
    refused(b.stomp, &bad).await;
    let second = t.elapsed();
    assert!(
        second >= Duration::from_millis(400),
        "second attempt answered after {second:?}"
    );
    // The next one waits longer still (doubled, up to the maximum)...
    let t = Instant::now();
    let _ok = login(b.stomp, "pat").await;
    assert!(
        t.elapsed() >= Duration::from_millis(700),
        "{:?}",
        t.elapsed()
    );
    // ...and after a success the address is in good standing again.
    let t = Instant::now();
    let _ok = login(b.stomp, "pat").await;
    assert!(
        t.elapsed() < Duration::from_millis(400),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn anonymous_access_none_read_and_all() {
    // No users: anonymous does everything (a laptop's broker).
    let open = TestBroker::start("").await;
    let mut c = Stomp::connect(open.stomp).await;
    c.send_msg("/queue/a", "x", &[]).await;

    // Read-only anonymous beside users: it reads what exists, and may
    // neither send nor create.
    let b = secured("[security]\nanonymous = \"read\"", false).await;
    let mut reader = Stomp::connect(b.stomp).await;
    denied(
        &mut reader,
        frame(
            Command::Subscribe,
            &[("id", "s"), ("destination", "/queue/news"), ("ack", "auto")],
        ),
        "r0",
        &["anonymous", "admin", "/queue/news"],
    )
    .await;
    let mut pat = login(b.stomp, "pat").await;
    pat.send_msg("/queue/news", "hello", &[]).await;
    reader.subscribe("s", "/queue/news", "auto", &[]).await;
    assert_eq!(body(&reader.recv_message().await), "hello");
    denied(
        &mut reader,
        send_frame("/queue/news", "spam", &[]),
        "r1",
        &["anonymous", "write", "/queue/news"],
    )
    .await;
    pat.send_msg("/queue/news", "more", &[]).await;
    assert_eq!(body(&reader.recv_message().await), "more");

    // Everything, explicitly, beside users.
    let all = secured("[security]\nanonymous = \"all\"", true).await;
    let mut anon = Stomp::connect(all.stomp).await;
    anon.send_msg("/queue/anything", "x", &[]).await;
    anon.subscribe("s", "/topic/whatever", "auto", &[]).await;
}

#[tokio::test]
async fn write_read_and_admin_rights_per_destination_pattern() {
    let b = secured("", true).await;
    let mut pat = login(b.stomp, "pat").await;
    let mut cora = login(b.stomp, "cora").await;
    let mut nemo = login(b.stomp, "nemo").await;

    // Write (and admin, to create it) on orders.>.
    pat.send_msg("/queue/orders.eu", "o1", &[]).await;
    denied(
        &mut pat,
        send_frame("/queue/payments", "p", &[]),
        "w1",
        &["user 'pat'", "write", "/queue/payments"],
    )
    .await;
    denied(
        &mut cora,
        send_frame("/queue/orders.eu", "o", &[]),
        "w2",
        &["user 'cora'", "write", "/queue/orders.eu"],
    )
    .await;
    denied(
        &mut nemo,
        send_frame("/queue/orders.eu", "o", &[]),
        "w3",
        &["user 'nemo'", "write"],
    )
    .await;
    // A composite SEND needs the right on every destination it names.
    denied(
        &mut pat,
        send_frame("/queue/orders.us,/queue/payments", "p", &[]),
        "w4",
        &["/queue/payments"],
    )
    .await;

    // Read: cora subscribes to what exists.
    cora.subscribe("o", "/queue/orders.eu", "client-individual", &[])
        .await;
    let m = cora.recv_message().await;
    assert_eq!(body(&m), "o1");
    cora.ack(&m).await;
    denied(
        &mut pat,
        frame(
            Command::Subscribe,
            &[
                ("id", "x"),
                ("destination", "/queue/orders.eu"),
                ("ack", "auto"),
            ],
        ),
        "r1",
        &["user 'pat'", "read"],
    )
    .await;
    // Browsing is reading.
    denied(
        &mut pat,
        frame(
            Command::Subscribe,
            &[
                ("id", "b"),
                ("destination", "/queue/orders.eu"),
                ("browser", "true"),
            ],
        ),
        "r2",
        &["read"],
    )
    .await;

    // Admin: subscribing to a queue that does not exist creates it.
    denied(
        &mut cora,
        frame(
            Command::Subscribe,
            &[
                ("id", "n"),
                ("destination", "/queue/orders.new"),
                ("ack", "auto"),
            ],
        ),
        "a1",
        &["user 'cora'", "admin", "/queue/orders.new"],
    )
    .await;
    pat.send_msg("/queue/orders.new", "first", &[]).await;
    cora.subscribe("n", "/queue/orders.new", "auto", &[]).await;
    assert_eq!(body(&cora.recv_message().await), "first");

    // Wildcard subscriptions need rights covering all they stand for.
    cora.subscribe("w", "/queue/orders.>", "auto", &[]).await;
    denied(
        &mut cora,
        frame(
            Command::Subscribe,
            &[("id", "w2"), ("destination", "/queue/>"), ("ack", "auto")],
        ),
        "a2",
        &["read", "/queue/>"],
    )
    .await;

    // Topics: prices.* but not deeper.
    cora.subscribe("t", "/topic/prices.eur", "auto", &[]).await;
    denied(
        &mut cora,
        frame(
            Command::Subscribe,
            &[
                ("id", "t2"),
                ("destination", "/topic/prices.eur.spot"),
                ("ack", "auto"),
            ],
        ),
        "t1",
        &["/topic/prices.eur.spot"],
    )
    .await;
    pat.send_msg("/topic/prices.eur", "1.08", &[]).await;
    let m = cora.recv_message().await;
    assert_eq!(body(&m), "1.08");
    // Queue rights are not topic rights.
    denied(
        &mut pat,
        send_frame("/topic/orders.eu", "x", &[]),
        "t2",
        &["/topic/orders.eu"],
    )
    .await;

    // The admins may do anything.
    let mut root = login(b.stomp, "root").await;
    root.send_msg("/queue/payments", "p", &[]).await;
    root.subscribe("p", "/topic/anything.at.all", "auto", &[])
        .await;

    assert_eq!(
        metric_at_as(
            b.http,
            "halyard_authorization_denied_total",
            ("root", &password("root"))
        )
        .await,
        10
    );
}

#[tokio::test]
async fn a_refusal_leaves_the_connection_and_its_subscriptions_alone() {
    let b = secured("", true).await;
    let mut pat = login(b.stomp, "pat").await;
    pat.send_msg("/queue/orders.a", "seed", &[]).await;
    let mut cora = login(b.stomp, "cora").await;
    cora.subscribe("a", "/queue/orders.a", "client-individual", &[])
        .await;
    let seed = cora.recv_message().await;
    // A transaction open across the refusal survives it too.
    cora.request(frame(Command::Begin, &[("transaction", "t")]))
        .await;
    cora.send(frame(
        Command::Ack,
        &[("id", hdr(&seed, "ack").unwrap()), ("transaction", "t")],
    ))
    .await;
    denied(
        &mut cora,
        send_frame("/queue/orders.a", "x", &[]),
        "d1",
        &["write"],
    )
    .await;
    denied(
        &mut cora,
        frame(
            Command::Subscribe,
            &[
                ("id", "z"),
                ("destination", "/queue/payments"),
                ("ack", "auto"),
            ],
        ),
        "d2",
        &["read"],
    )
    .await;
    cora.request(frame(Command::Commit, &[("transaction", "t")]))
        .await;
    // Frames after a refusal are answered in order; the subscription still
    // delivers.
    pat.send_msg("/queue/orders.a", "after", &[]).await;
    let m = cora.recv_message().await;
    assert_eq!(body(&m), "after");
    cora.ack(&m).await;
    // The refused subscription id was never taken.
    cora.subscribe("z", "/queue/orders.a", "auto", &[]).await;
    cora.expect_silence(QUIET).await;
}

#[tokio::test]
async fn temporary_destinations_have_their_own_rights() {
    let b = secured("", true).await;
    let mut pat = login(b.stomp, "pat").await;
    pat.subscribe("r", "/temp-queue/replies", "auto", &[]).await;
    pat.send_msg(
        "/queue/orders.req",
        "question",
        &[("reply-to", "/temp-queue/replies")],
    )
    .await;
    let mut cora = login(b.stomp, "cora").await;
    cora.subscribe("q", "/queue/orders.req", "auto", &[]).await;
    let request = cora.recv_message().await;
    let reply_to = hdr(&request, "reply-to").unwrap().to_owned();
    // Consumers may write to temporary queues ([security.temporary])...
    cora.send_msg(&reply_to, "answer", &[]).await;
    assert_eq!(body(&pat.recv_message().await), "answer");
    // ...a user with no group may neither answer nor make its own.
    let mut nemo = login(b.stomp, "nemo").await;
    denied(
        &mut nemo,
        send_frame(&reply_to, "spoof", &[]),
        "t1",
        &["user 'nemo'", "write"],
    )
    .await;
    denied(
        &mut nemo,
        frame(
            Command::Subscribe,
            &[
                ("id", "r"),
                ("destination", "/temp-queue/mine"),
                ("ack", "auto"),
            ],
        ),
        "t2",
        &["user 'nemo'", "read", "/temp-queue/mine"],
    )
    .await;
    // Reading one's own temporary queue makes it: that is the admin right.
    let mut olga = login(b.stomp, "olga").await;
    denied(
        &mut olga,
        frame(
            Command::Subscribe,
            &[
                ("id", "r"),
                ("destination", "/temp-queue/mine"),
                ("ack", "auto"),
            ],
        ),
        "t3",
        &["user 'olga'", "admin", "/temp-queue/mine"],
    )
    .await;
    pat.expect_silence(QUIET).await;
}

#[tokio::test]
async fn dead_letter_queues_are_read_by_whom_the_rules_say() {
    let b = secured("[destinations]\nmax-redeliveries = 0", true).await;
    let mut pat = login(b.stomp, "pat").await;
    pat.send_msg("/queue/orders.bad", "poison", &[("persistent", "true")])
        .await;
    let mut cora = login(b.stomp, "cora").await;
    cora.subscribe("c", "/queue/orders.bad", "client-individual", &[])
        .await;
    let m = cora.recv_message().await;
    // The broker dead-letters it on its own authority.
    cora.nack(&m).await;
    denied(
        &mut cora,
        frame(
            Command::Subscribe,
            &[
                ("id", "d"),
                ("destination", "/queue/DLQ.orders.bad"),
                ("ack", "auto"),
            ],
        ),
        "d1",
        &["user 'cora'", "read", "/queue/DLQ.orders.bad"],
    )
    .await;
    let mut olga = login(b.stomp, "olga").await;
    olga.subscribe("d", "/queue/DLQ.orders.bad", "auto", &[])
        .await;
    assert_eq!(body(&olga.recv_message().await), "poison");
}

#[tokio::test]
async fn a_client_id_belongs_to_its_user() {
    let b = secured("[clients]\nlink-stealing = true", false).await;
    let pw = |u: &str| password(u);
    let as_user = |u: &'static str, id: &'static str| {
        let pw = pw(u);
        async move {
            Stomp::try_connect_with(
                b.stomp,
                &[
                    ("accept-version", "1.2"),
                    ("host", "localhost"),
                    ("login", u),
                    ("passcode", &pw),
                    ("client-id", id),
                ],
            )
            .await
        }
    };
    let mut first = as_user("pat", "app-1").await.unwrap();
    // Another user cannot take it over, even with link stealing on...
    let e = as_user("cora", "app-1")
        .await
        .err()
        .expect("cora took pat's client id");
    assert!(error_text(&e).contains("already connected"), "{e:?}");
    first.send_msg("/queue/still-here", "x", &[]).await;
    // ...its own user can.
    let _second = as_user("pat", "app-1").await.unwrap();
    let end = first.expect_closed().await;
    assert!(
        end.iter().any(|f| error_text(f).contains("taken over")),
        "{end:?}"
    );
}

#[tokio::test]
async fn halyard_passwd_prints_a_hash_the_broker_accepts() {
    let (code, out, err) = run_cli(
        &[
            "passwd",
            "--stdin",
            "--user",
            "app",
            "--groups",
            "producers,consumers",
        ],
        Some(b"correct horse\n"),
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("[[security.users]]") && out.contains("$argon2id$"),
        "{out}"
    );
    assert!(
        !out.contains("correct horse"),
        "the password itself was printed: {out}"
    );
    assert!(
        out.contains("groups = [\"producers\", \"consumers\"]"),
        "{out}"
    );
    let b = BrokerProcess::start(&out).await;
    let mut c = Stomp::connect_with(
        b.stomp,
        &[
            ("accept-version", "1.2"),
            ("host", "localhost"),
            ("login", "app"),
            ("passcode", "correct horse"),
        ],
    )
    .await;
    c.send_msg("/queue/a", "x", &[]).await;

    // Without a terminal and without --stdin it says what to do.
    let (code, _, err) = run_cli(&["passwd"], None);
    assert_ne!(code, 0);
    assert!(err.contains("--stdin"), "{err}");
    let (code, _, err) = run_cli(&["passwd", "--stdin"], Some(b"\n"));
    assert_ne!(code, 0);
    assert!(err.contains("empty"), "{err}");
}

/// Runs `halyard broker` with `args` and this config, expecting it to exit
/// at once: its exit code and stderr.
fn broker_exits(config: &str, args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("halyard.toml");
    std::fs::write(&file, config).unwrap();
    let mut cmd = std::process::Command::new(halyard_bin());
    cmd.arg("broker")
        .arg("--config")
        .arg(&file)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_broker_with_nobody_to_log_in_refuses_a_network_address() {
    let port = halyard_testkit::free_port();
    let http = format!("127.0.0.1:{}", halyard_testkit::free_port());
    let stomp = format!("0.0.0.0:{port}");
    let (code, err) = broker_exits(
        "",
        &[
            "--stomp",
            &stomp,
            "--ws",
            "",
            "--openwire",
            "",
            "--http",
            &http,
        ],
        &[],
    );
    assert_ne!(code, 0);
    assert!(
        err.contains(&stomp)
            && err.contains("allow-anonymous-network")
            && err.contains("halyard passwd"),
        "the refusal must say how to proceed: {err}"
    );
    // The admin listener counts too.
    let (code, err) = broker_exits(
        "",
        &[
            "--stomp",
            "127.0.0.1:0",
            "--ws",
            "",
            "--openwire",
            "",
            "--http",
            "0.0.0.0:0",
        ],
        &[],
    );
    assert_ne!(code, 0);
    assert!(err.contains("0.0.0.0:0"), "{err}");
    // Anonymous access off, or users, or the operator's explicit word: it
    // starts (seen through its admin port).
    for config in [
        "[security]\nanonymous = \"none\"".to_owned(),
        users(&[("root", &["admins"])]),
        "[security]\nallow-anonymous-network = true".to_owned(),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("halyard.toml");
        std::fs::write(&file, &config).unwrap();
        let http: SocketAddr = format!("127.0.0.1:{}", halyard_testkit::free_port())
            .parse()
            .unwrap();
        let stomp = format!("0.0.0.0:{}", halyard_testkit::free_port());
        let mut child = std::process::Command::new(halyard_bin())
            .arg("broker")
            .arg("--config")
            .arg(&file)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args([
                "--stomp",
                &stomp,
                "--ws",
                "127.0.0.1:0",
                "--openwire",
                "127.0.0.1:0",
                "--http",
                &http.to_string(),
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let what = format!("a broker with {config:?} up");
        halyard_testkit::eventually(WAIT, &what, || async {
            match halyard_testkit::http::try_http_get(http, "/healthz").await {
                Ok((200, _)) => Some(()),
                _ => None,
            }
        })
        .await;
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[tokio::test]
async fn a_broker_without_users_ignores_credentials() {
    let b = TestBroker::start("").await;
    let mut c = Stomp::connect_with(
        b.stomp,
        &[
            ("accept-version", "1.2"),
            ("host", "localhost"),
            ("login", "guest"),
            ("passcode", "guest"),
        ],
    )
    .await;
    c.send_msg("/queue/a", "x", &[]).await;
    assert_eq!(metric_at(b.http, "halyard_login_failures_total").await, 0);
}
