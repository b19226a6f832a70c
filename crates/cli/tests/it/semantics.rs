//! ActiveMQ's semantics over STOMP, with Halyard's own test client: queue
//! browsers, wildcard subscriptions, composite destinations, virtual
//! topics, message groups, exclusive consumers, consumer priority, no-local,
//! a topic subscriber's own pending limit, temporary topics, and the
//! ActiveMQ headers Halyard refuses rather than ignore.
//!
//! In-process brokers, except where a test restarts the broker (`kill -9`:
//! the real binary). What the store keeps — a deep queue browsed through a
//! small window, virtual topics' consumer queues, durable wildcard
//! subscriptions — is tested on the journal and on PostgreSQL (a database
//! of the test's own from `halyard-testkit`, on the server of
//! `HALYARD_TEST_DATABASE_URL` or a throwaway one). Takeovers by a slave
//! are in `semantics_takeover.rs`.
//!
//! Nothing sleeps and hopes: waits poll for their event with a deadline,
//! and "nothing more arrives" is `expect_silence`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::support::inproc::TestBroker;
use crate::support::{BrokerProcess, dest_stats};
use halyard_stomp::{Command, Frame};
use halyard_testkit::eventually;
use halyard_testkit::http::http_get;
use halyard_testkit::stomp::{Stomp, WAIT, body, persistent_send};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// How long "nothing more arrives" is watched for.
const QUIET: Duration = Duration::from_millis(200);

/// Where a broker keeps its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Store {
    Journal,
    Postgres,
}

impl Store {
    /// The `[store]` table for a broker on this store (empty for the
    /// journal, the default); a new database of the test's own for
    /// PostgreSQL.
    pub(crate) async fn toml(self, hint: &'static str) -> String {
        match self {
            Store::Journal => String::new(),
            Store::Postgres => {
                let url = database(hint).await;
                format!("[store]\nkind = \"postgres\"\nurl = \"{url}\"\n")
            }
        }
    }
}

/// A new database of this test's own on the suite's server.
pub(crate) async fn database(hint: &'static str) -> String {
    tokio::task::spawn_blocking(move || halyard_testkit::database(hint))
        .await
        .unwrap()
}

/// A frame with these headers (and no body).
pub(crate) fn frame(command: Command, headers: &[(&str, &str)]) -> Frame {
    let mut f = Frame::new(command);
    for (k, v) in headers {
        f.headers.push(*k, *v);
    }
    f
}

/// A SEND of `text` to `dest` with `extra` headers (no receipt).
pub(crate) fn send_frame(dest: &str, text: &str, extra: &[(&str, &str)]) -> Frame {
    let mut f = Frame::new(Command::Send)
        .header("destination", dest)
        .body(text.as_bytes().to_vec());
    for (k, v) in extra {
        f.headers.push(*k, *v);
    }
    f
}

/// An ERROR frame's `message` header and body.
pub(crate) fn error_text(e: &Frame) -> String {
    format!(
        "{} {}",
        e.headers.get("message").unwrap_or_default(),
        body(e)
    )
}

/// Sends `f` and expects an ERROR mentioning every one of `needles`, then
/// the close.
pub(crate) async fn refused(s: &mut Stomp, f: Frame, needles: &[&str]) -> Frame {
    s.send(f).await;
    let e = s.expect_error().await;
    for n in needles {
        assert!(
            error_text(&e).contains(n),
            "ERROR does not mention {n:?}: {e:?}"
        );
    }
    e
}

/// The value of header `k`.
pub(crate) fn hdr<'a>(f: &'a Frame, k: &str) -> Option<&'a str> {
    f.headers.get(k)
}

/// Whether the MESSAGE is a browser's end marker.
fn is_browse_end(f: &Frame) -> bool {
    hdr(f, "browser") == Some("end")
}

/// The next `n` MESSAGE bodies.
pub(crate) async fn bodies(s: &mut Stomp, n: usize) -> Vec<String> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(body(&s.recv_message().await));
    }
    v
}

/// Everything a browser is shown up to its end marker (returned second).
async fn browse_all(s: &mut Stomp) -> (Vec<Frame>, Frame) {
    let mut shown = Vec::new();
    loop {
        let m = s.recv_message().await;
        if is_browse_end(&m) {
            return (shown, m);
        }
        shown.push(m);
    }
}

/// Collects `n` MESSAGEs from any of `consumers` (acknowledging each with
/// a receipt when `ack`); returns (consumer index, frame) in arrival order
/// per consumer. Panics if they do not arrive within [`WAIT`].
async fn collect(consumers: &mut [&mut Stomp], n: usize, ack: bool) -> Vec<(usize, Frame)> {
    let deadline = Instant::now() + WAIT;
    let mut got = Vec::new();
    while got.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} messages arrived: {got:?}",
            got.len()
        );
        for (i, c) in consumers.iter_mut().enumerate() {
            if let Some(f) = c.recv_within(Duration::from_millis(20)).await {
                assert_eq!(f.command, Command::Message, "{f:?}");
                if ack {
                    c.ack(&f).await;
                }
                got.push((i, f));
            }
        }
    }
    got
}

/// The stats of `dest` once they show `ready` ready and `inflight` in
/// flight messages.
async fn await_counts(
    http: SocketAddr,
    dest: &str,
    ready: u64,
    inflight: u64,
) -> serde_json::Value {
    eventually(
        WAIT,
        &format!("{dest} to show ready={ready} inflight={inflight}"),
        || async move {
            let s = dest_stats(http, dest).await?;
            (s["ready"] == ready && s["inflight"] == inflight).then_some(s)
        },
    )
    .await
}

// ---------------------------------------------------------------------------
// 1. Queue browsers
// ---------------------------------------------------------------------------

/// A connection subscribed to `dest` (the usual first two steps of a test).
async fn subscriber(
    addr: std::net::SocketAddr,
    id: &str,
    dest: &str,
    ack: &str,
    headers: &[(&str, &str)],
) -> Stomp {
    let mut c = Stomp::connect(addr).await;
    c.subscribe(id, dest, ack, headers).await;
    c
}

#[tokio::test]
async fn a_browser_is_shown_ready_and_in_flight_messages_in_order_then_the_end_and_takes_nothing() {
    let b = TestBroker::start("").await;
    let mut p = Stomp::connect(b.stomp).await;
    for i in 0..6 {
        p.send_msg(
            "/queue/browse",
            &format!("m{i}"),
            &[("persistent", "true"), ("i", &i.to_string())],
        )
        .await;
    }
    // A consumer holds the first two, unacknowledged.
    let mut c = subscriber(
        b.stomp,
        "c",
        "/queue/browse",
        "client-individual",
        &[("activemq.prefetchSize", "2")],
    )
    .await;
    let held = [c.recv_message().await, c.recv_message().await];
    assert_eq!(held.iter().map(body).collect::<Vec<_>>(), ["m0", "m1"]);
    await_counts(b.http, "/queue/browse", 4, 2).await;
    let before = dest_stats(b.http, "/queue/browse").await.unwrap();

    let mut br = Stomp::connect(b.stomp).await;
    // Whatever ack mode it asks for, a browser's deliveries carry no ack.
    br.subscribe(
        "br",
        "/queue/browse",
        "client-individual",
        &[("browser", "true")],
    )
    .await;
    let (shown, end) = browse_all(&mut br).await;
    assert_eq!(
        shown.iter().map(body).collect::<Vec<_>>(),
        ["m0", "m1", "m2", "m3", "m4", "m5"],
        "the snapshot: in-flight and ready messages, in dispatch order"
    );
    for m in &shown {
        assert_eq!(hdr(m, "subscription"), Some("br"), "{m:?}");
        assert_eq!(hdr(m, "destination"), Some("/queue/browse"), "{m:?}");
        assert_eq!(
            hdr(m, "ack"),
            None,
            "a browsed message cannot be acknowledged: {m:?}"
        );
        assert!(hdr(m, "message-id").unwrap().starts_with("ID:"), "{m:?}");
        assert_eq!(hdr(m, "i"), Some(&body(m)[1..]), "{m:?}");
    }
    assert_eq!(
        hdr(&shown[0], "message-id"),
        hdr(&held[0], "message-id"),
        "the browser sees the same message"
    );
    // The end: ActiveMQ's marker.
    assert_eq!(hdr(&end, "subscription"), Some("br"), "{end:?}");
    assert_eq!(hdr(&end, "destination"), Some("/queue/browse"), "{end:?}");
    assert_eq!(hdr(&end, "message-id"), Some("0"), "{end:?}");
    assert!(end.body.is_empty(), "{end:?}");
    // A snapshot: what is sent later is not shown.
    p.send_msg("/queue/browse", "m6", &[]).await;
    br.expect_silence(QUIET).await;

    // Nothing was taken: the counts are as they were (plus m6), and the
    // consumer gets everything.
    let after = await_counts(b.http, "/queue/browse", 5, 2).await;
    assert_eq!(
        after["delivered"], before["delivered"],
        "{before} -> {after}"
    );
    assert_eq!(after["acked"], before["acked"], "{before} -> {after}");
    for m in &held {
        c.ack(m).await;
    }
    let mut rest = Vec::new();
    for _ in 0..5 {
        let m = c.recv_message().await;
        c.ack(&m).await;
        rest.push(body(&m));
    }
    assert_eq!(rest, ["m2", "m3", "m4", "m5", "m6"]);
    c.expect_silence(QUIET).await;

    // Once consumed, a new browse shows nothing but the end.
    await_counts(b.http, "/queue/browse", 0, 0).await;
    br.subscribe("br2", "/queue/browse", "auto", &[("browser", "true")])
        .await;
    let (shown, end) = browse_all(&mut br).await;
    assert!(shown.is_empty(), "{shown:?}");
    assert_eq!(hdr(&end, "subscription"), Some("br2"), "{end:?}");
}

#[tokio::test]
async fn browsing_an_empty_queue_shows_only_the_end() {
    let b = TestBroker::start("").await;
    let mut br = subscriber(
        b.stomp,
        "br",
        "/queue/nothing",
        "auto",
        &[("browser", "true")],
    )
    .await;
    let (shown, end) = browse_all(&mut br).await;
    assert!(shown.is_empty(), "{shown:?}");
    assert_eq!(hdr(&end, "message-id"), Some("0"), "{end:?}");
    br.expect_silence(QUIET).await;
}

#[tokio::test]
async fn acknowledging_or_rejecting_a_browsed_message_is_an_error_naming_the_queue_browser() {
    let b = TestBroker::start("").await;
    let mut p = Stomp::connect(b.stomp).await;
    p.send_msg("/queue/nb", "one", &[("persistent", "true")])
        .await;

    fn ack_by_id(m: &Frame) -> Frame {
        frame(Command::Ack, &[("id", hdr(m, "message-id").unwrap())])
    }
    fn ack_by_message_id(m: &Frame) -> Frame {
        frame(
            Command::Ack,
            &[
                ("message-id", hdr(m, "message-id").unwrap()),
                ("subscription", hdr(m, "subscription").unwrap()),
            ],
        )
    }
    fn nack_by_id(m: &Frame) -> Frame {
        frame(Command::Nack, &[("id", hdr(m, "message-id").unwrap())])
    }
    type Attempt = fn(&Frame) -> Frame;
    let attempts: [(&str, Attempt); 3] = [
        ("ACK id:<message-id> (1.2)", ack_by_id),
        (
            "ACK message-id + subscription (1.1 form)",
            ack_by_message_id,
        ),
        ("NACK id:<message-id> (1.2)", nack_by_id),
    ];
    for (what, make) in attempts {
        let mut br = subscriber(b.stomp, "br", "/queue/nb", "client", &[("browser", "true")]).await;
        let (shown, _end) = browse_all(&mut br).await;
        assert_eq!(shown.iter().map(body).collect::<Vec<_>>(), ["one"]);
        let e = refused(&mut br, make(&shown[0]), &["queue browser"]).await;
        println!("{what}: {}", error_text(&e));
    }
    // The message is still there, never delivered.
    let s = await_counts(b.http, "/queue/nb", 1, 0).await;
    assert_eq!(s["delivered"], 0, "{s}");
    let mut c = subscriber(b.stomp, "c", "/queue/nb", "auto", &[]).await;
    let m = c.recv_message().await;
    assert_eq!(body(&m), "one");
    assert_eq!(hdr(&m, "redelivered"), None, "{m:?}");
}

#[tokio::test]
async fn browsing_a_topic_a_wildcard_or_a_list_is_refused() {
    let b = TestBroker::start("").await;
    for (dest, needle) in [
        ("/topic/t", "only queues"),
        ("/queue/q.*", "one queue"),
        ("/queue/q.>", "one queue"),
        ("/queue/a,/queue/b", "one queue"),
    ] {
        let mut s = Stomp::connect(b.stomp).await;
        refused(
            &mut s,
            frame(
                Command::Subscribe,
                &[("id", "br"), ("destination", dest), ("browser", "true")],
            ),
            &[needle],
        )
        .await;
    }
}

/// A queue far larger than `limits.destination-memory-bytes` (its bodies
/// are on disk) is browsed through a small window: in order, every body
/// intact, the broker's memory stays small, and nothing is taken.
async fn browse_a_deep_queue(store: Store) {
    const N: usize = 3000;
    let started = Instant::now();
    let toml = format!(
        "{}[limits]\ndestination-memory-bytes = 65536\n",
        store.toml("semantics_deep_browse").await
    );
    let b = TestBroker::start(&toml).await;
    let pad = "b".repeat(1024 - 6);
    let mut p = Stomp::connect(b.stomp).await;
    for i in 0..N {
        let f = persistent_send("/queue/deep", &format!("{i:06}{pad}")).header("i", i.to_string());
        if i % 100 == 99 {
            p.request(f).await;
        } else {
            p.send(f).await;
        }
    }
    let s = await_counts(b.http, "/queue/deep", N as u64, 0).await;
    let paged = s["memory_bytes"].as_u64().unwrap();
    assert!(paged <= 512 * 1024, "{paged} body bytes in memory: {s}");
    let sent = started.elapsed();

    let mut br = subscriber(
        b.stomp,
        "br",
        "/queue/deep",
        "auto",
        &[("browser", "true"), ("activemq.prefetchSize", "16")],
    )
    .await;
    let mut peak = 0;
    for i in 0..N {
        let m = br.recv_message().await;
        assert!(
            !is_browse_end(&m),
            "the browse ended after {i} of {N}: {m:?}"
        );
        assert_eq!(
            hdr(&m, "i"),
            Some(i.to_string().as_str()),
            "out of order at {i}"
        );
        assert_eq!(m.body.len(), 1024, "{i}");
        assert_eq!(&body(&m)[..6], format!("{i:06}"));
        if i % 500 == 250 {
            let (code, text) = http_get(b.http, "/api/status").await;
            assert_eq!(code, 200, "{text}");
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            peak = peak.max(v["memory_bytes"].as_u64().unwrap());
        }
    }
    let end = br.recv_message().await;
    assert!(is_browse_end(&end), "{end:?}");
    // About 3 MB of bodies went by; the broker held a small window of them.
    assert!(
        peak <= 1024 * 1024,
        "the broker held {peak} bytes of messages while browsing {N} KiB of bodies"
    );
    let s = await_counts(b.http, "/queue/deep", N as u64, 0).await;
    assert_eq!(s["delivered"], 0, "{s}");
    // Everything is still there for a consumer.
    let mut c = subscriber(b.stomp, "c", "/queue/deep", "auto", &[]).await;
    for i in 0..N {
        let m = c.recv_message().await;
        assert_eq!(
            hdr(&m, "i"),
            Some(i.to_string().as_str()),
            "out of order at {i}"
        );
    }
    c.expect_silence(QUIET).await;
    println!(
        "{store:?}: {N} messages sent in {sent:?}; browsed (peak broker memory {peak} bytes) and consumed in {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deep_queue_is_browsed_through_a_small_window_on_the_journal() {
    browse_a_deep_queue(Store::Journal).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deep_queue_is_browsed_through_a_small_window_on_postgres() {
    browse_a_deep_queue(Store::Postgres).await;
}

// ---------------------------------------------------------------------------
// 2. Wildcards
// ---------------------------------------------------------------------------

#[tokio::test]
async fn wildcard_topic_subscriptions_match_by_element_and_show_the_concrete_topic() {
    let b = TestBroker::start("").await;
    let mut s = subscriber(b.stomp, "star", "/topic/news.*", "auto", &[]).await;
    let mut g = subscriber(b.stomp, "rest", "/topic/news.>", "auto", &[]).await;
    let mut mid = subscriber(b.stomp, "mid", "/topic/*.sport.*", "auto", &[]).await;

    let mut p = Stomp::connect(b.stomp).await;
    for dest in [
        "/topic/news",
        "/topic/news.a",
        "/topic/news.a.b",
        "/topic/newsx.a",
        "/topic/other.a",
        "/topic/news.sport.x",
        "/queue/news.b",
    ] {
        p.send_msg(dest, dest, &[]).await;
    }
    let check = |m: &Frame, sub: &str| {
        assert_eq!(hdr(m, "subscription"), Some(sub), "{m:?}");
        assert_eq!(
            hdr(m, "destination"),
            Some(body(m).as_str()),
            "the concrete topic: {m:?}"
        );
    };
    let m = s.recv_message().await;
    check(&m, "star");
    assert_eq!(body(&m), "/topic/news.a", "* is exactly one element");
    s.expect_silence(QUIET).await;
    let mut rest = Vec::new();
    for _ in 0..4 {
        let m = g.recv_message().await;
        check(&m, "rest");
        rest.push(body(&m));
    }
    assert_eq!(
        rest,
        [
            "/topic/news",
            "/topic/news.a",
            "/topic/news.a.b",
            "/topic/news.sport.x"
        ],
        "A.> matches A and everything below it"
    );
    g.expect_silence(QUIET).await;
    let m = mid.recv_message().await;
    check(&m, "mid");
    assert_eq!(body(&m), "/topic/news.sport.x");
    mid.expect_silence(QUIET).await;
}

#[tokio::test]
async fn a_wildcard_queue_subscription_takes_from_matching_queues_including_later_ones() {
    let b = TestBroker::start("").await;
    let mut p = Stomp::connect(b.stomp).await;
    p.send_msg("/queue/jobs.a", "early-a", &[("persistent", "true")])
        .await;
    p.send_msg("/queue/jobs.b.deep", "early-deep", &[]).await;
    p.send_msg("/queue/other", "other", &[]).await;

    let mut c = subscriber(b.stomp, "w", "/queue/jobs.*", "client-individual", &[]).await;
    let m = c.recv_message().await;
    assert_eq!(body(&m), "early-a");
    assert_eq!(hdr(&m, "destination"), Some("/queue/jobs.a"), "{m:?}");
    assert_eq!(hdr(&m, "subscription"), Some("w"), "{m:?}");
    c.ack(&m).await;
    c.expect_silence(QUIET).await;

    // A queue made after the subscription is included.
    p.send_msg("/queue/jobs.late", "late", &[("persistent", "true")])
        .await;
    let m = c.recv_message().await;
    assert_eq!(body(&m), "late");
    assert_eq!(hdr(&m, "destination"), Some("/queue/jobs.late"), "{m:?}");
    c.ack(&m).await;
    // Queues share the consumer with their own subscribers.
    let mut direct = Stomp::connect(b.stomp).await;
    direct
        .subscribe("d", "/queue/jobs.b.deep", "auto", &[])
        .await;
    assert_eq!(body(&direct.recv_message().await), "early-deep");
    c.expect_silence(QUIET).await;

    // Acknowledged messages are gone; an unacknowledged one goes back to
    // its own queue when the subscription ends.
    p.send_msg("/queue/jobs.c", "unacked", &[("persistent", "true")])
        .await;
    let m = c.recv_message().await;
    assert_eq!(hdr(&m, "destination"), Some("/queue/jobs.c"), "{m:?}");
    c.disconnect().await;
    await_counts(b.http, "/queue/jobs.a", 0, 0).await;
    await_counts(b.http, "/queue/jobs.late", 0, 0).await;
    await_counts(b.http, "/queue/jobs.c", 1, 0).await;
}

#[tokio::test]
async fn sending_to_a_wildcard_or_subscribing_with_gt_not_last_is_refused() {
    let b = TestBroker::start("").await;
    for dest in ["/queue/a.*", "/topic/a.>", "/queue/ok,/topic/x.*"] {
        let mut s = Stomp::connect(b.stomp).await;
        refused(
            &mut s,
            send_frame(dest, "x", &[("receipt", "r")]),
            &["wildcard"],
        )
        .await;
    }
    for dest in ["/topic/a.>.b", "/queue/>.x"] {
        let mut s = Stomp::connect(b.stomp).await;
        let e = refused(
            &mut s,
            frame(Command::Subscribe, &[("id", "s"), ("destination", dest)]),
            &[">"],
        )
        .await;
        println!("SUBSCRIBE {dest}: {}", error_text(&e));
    }
    // Nothing was made of them.
    let (code, text) = http_get(b.http, "/api/destinations").await;
    assert_eq!(code, 200);
    assert!(
        !text.contains("/queue/ok"),
        "part of a refused SEND went through: {text}"
    );
}

/// CONNECT headers of the durable subscriber.
const DURABLE_CLIENT: &[(&str, &str)] = &[
    ("accept-version", "1.2"),
    ("host", "localhost"),
    ("client-id", "wild-client"),
];

/// Connects as [`DURABLE_CLIENT`], retrying while the broker still holds
/// the client id of a connection that was dropped.
pub(crate) async fn durable_client(
    addr: SocketAddr,
    headers: &'static [(&'static str, &'static str)],
) -> Stomp {
    eventually(WAIT, "the client-id to be free", || async move {
        match Stomp::try_connect_with(addr, headers).await {
            Ok(s) => Some(s),
            Err(e) if error_text(&e).contains("already connected") => None,
            Err(e) => panic!("CONNECT refused: {e:?}"),
        }
    })
    .await
}

/// A durable subscription on a wildcard topic keeps persistent messages of
/// every matching topic while its subscriber is away, across `kill -9`.
async fn durable_wildcard_across_restart(store: Store) {
    let mut b = BrokerProcess::start(&store.toml("semantics_durable_wild").await).await;
    let sub = [("activemq.subscriptionName", "all-prices")];
    let mut s = durable_client(b.stomp, DURABLE_CLIENT).await;
    s.subscribe("d", "/topic/prices.>", "client-individual", &sub)
        .await;
    s.disconnect().await;

    let mut p = Stomp::connect(b.stomp).await;
    let sent = [
        ("/topic/prices.eur", "p1", true),
        ("/topic/fx.eur", "not-matching", true),
        ("/topic/prices.usd.spot", "p2", true),
        ("/topic/prices.usd", "not-persistent", false),
        ("/topic/prices", "p3", true),
    ];
    for (dest, text, persistent) in sent {
        p.send_msg(
            dest,
            text,
            &[("persistent", if persistent { "true" } else { "false" })],
        )
        .await;
    }
    p.disconnect().await;
    b.kill();
    b.restart().await;
    let mut p = Stomp::connect(b.stomp).await;
    p.send_msg("/topic/prices.gbp", "p4", &[("persistent", "true")])
        .await;

    let mut s = durable_client(b.stomp, DURABLE_CLIENT).await;
    s.subscribe("d", "/topic/prices.>", "client-individual", &sub)
        .await;
    let mut got = Vec::new();
    for _ in 0..4 {
        let m = s.recv_message().await;
        assert_eq!(hdr(&m, "subscription"), Some("d"), "{m:?}");
        got.push((body(&m), hdr(&m, "destination").unwrap().to_owned()));
        s.ack(&m).await;
    }
    assert_eq!(
        got,
        [
            ("p1".to_owned(), "/topic/prices.eur".to_owned()),
            ("p2".to_owned(), "/topic/prices.usd.spot".to_owned()),
            ("p3".to_owned(), "/topic/prices".to_owned()),
            ("p4".to_owned(), "/topic/prices.gbp".to_owned()),
        ]
    );
    s.expect_silence(QUIET).await;
    // Attached, it gets new messages at once.
    p.send_msg("/topic/prices.chf", "live", &[]).await;
    let m = s.recv_message().await;
    assert_eq!(body(&m), "live");
    s.ack(&m).await;
    s.disconnect().await;
    // And the acknowledged ones stay acknowledged across a crash.
    b.kill();
    b.restart().await;
    let mut s = durable_client(b.stomp, DURABLE_CLIENT).await;
    s.subscribe("d", "/topic/prices.>", "client-individual", &sub)
        .await;
    s.expect_silence(QUIET).await;

    // Removed by name, it keeps nothing more, across a crash too.
    s.request(frame(
        Command::Unsubscribe,
        &[("id", "d"), ("activemq.subscriptionName", "all-prices")],
    ))
    .await;
    s.disconnect().await;
    let mut p = Stomp::connect(b.stomp).await;
    p.send_msg("/topic/prices.eur", "gone", &[("persistent", "true")])
        .await;
    b.kill();
    b.restart().await;
    let mut p = Stomp::connect(b.stomp).await;
    p.send_msg("/topic/prices.eur", "gone-2", &[("persistent", "true")])
        .await;
    let mut s = durable_client(b.stomp, DURABLE_CLIENT).await;
    s.subscribe("d", "/topic/prices.>", "client-individual", &sub)
        .await;
    s.expect_silence(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_wildcard_subscription_keeps_every_matching_topic_across_kill_9_on_the_journal() {
    durable_wildcard_across_restart(Store::Journal).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_wildcard_subscription_keeps_every_matching_topic_across_kill_9_on_postgres() {
    durable_wildcard_across_restart(Store::Postgres).await;
}

// ---------------------------------------------------------------------------
// 3. Composite destinations
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_composite_send_gives_each_destination_a_copy_with_one_message_id() {
    let b = TestBroker::start("").await;
    let mut t = subscriber(b.stomp, "t", "/topic/audit", "auto", &[]).await;
    let mut p = Stomp::connect(b.stomp).await;
    // An entry without a prefix is of the kind before it.
    p.send_msg(
        "/queue/orders,/topic/audit,/queue/billing,archive",
        "order-1",
        &[("persistent", "true"), ("color", "red")],
    )
    .await;
    let mut ids = HashSet::new();
    let tm = t.recv_message().await;
    assert_eq!(hdr(&tm, "destination"), Some("/topic/audit"), "{tm:?}");
    ids.insert(hdr(&tm, "message-id").unwrap().to_owned());
    for q in ["/queue/orders", "/queue/billing", "/queue/archive"] {
        let mut c = subscriber(b.stomp, "c", q, "client-individual", &[]).await;
        let m = c.recv_message().await;
        assert_eq!(body(&m), "order-1");
        assert_eq!(hdr(&m, "destination"), Some(q), "{m:?}");
        assert_eq!(hdr(&m, "color"), Some("red"), "{m:?}");
        assert_eq!(hdr(&m, "persistent"), Some("true"), "{m:?}");
        ids.insert(hdr(&m, "message-id").unwrap().to_owned());
        // Acknowledging one copy takes nothing from the others.
        c.ack(&m).await;
        c.expect_silence(Duration::from_millis(50)).await;
    }
    assert_eq!(ids.len(), 1, "every copy has the same message-id: {ids:?}");
    t.expect_silence(QUIET).await;
}

#[tokio::test]
async fn a_composite_send_in_a_transaction_commits_or_aborts_for_every_destination() {
    let b = TestBroker::start("").await;
    let mut t = subscriber(b.stomp, "t", "/topic/tx-t", "auto", &[]).await;
    let mut p = Stomp::connect(b.stomp).await;
    let dests = "/queue/tx-a,/queue/tx-b,/topic/tx-t";
    p.request(frame(Command::Begin, &[("transaction", "t1")]))
        .await;
    p.send_msg(
        dests,
        "aborted",
        &[("transaction", "t1"), ("persistent", "true")],
    )
    .await;
    p.request(frame(Command::Abort, &[("transaction", "t1")]))
        .await;
    p.request(frame(Command::Begin, &[("transaction", "t2")]))
        .await;
    p.send_msg(
        dests,
        "committed",
        &[("transaction", "t2"), ("persistent", "true")],
    )
    .await;
    // Nothing is visible before the commit.
    t.expect_silence(QUIET).await;
    for q in ["/queue/tx-a", "/queue/tx-b"] {
        assert!(
            dest_stats(b.http, q).await.is_none_or(|s| s["ready"] == 0),
            "{q} has a message of an open transaction"
        );
    }
    p.request(frame(Command::Commit, &[("transaction", "t2")]))
        .await;
    assert_eq!(body(&t.recv_message().await), "committed");
    for q in ["/queue/tx-a", "/queue/tx-b"] {
        let mut c = subscriber(b.stomp, "c", q, "auto", &[]).await;
        assert_eq!(body(&c.recv_message().await), "committed", "{q}");
        c.expect_silence(QUIET).await;
    }
    t.expect_silence(Duration::from_millis(50)).await;
}

#[tokio::test]
async fn a_composite_subscription_takes_from_each_destination_under_one_id() {
    let b = TestBroker::start("").await;
    let mut c = subscriber(
        b.stomp,
        "both",
        "/queue/in-a,/queue/in-b,/topic/in-t",
        "client-individual",
        &[],
    )
    .await;
    let mut p = Stomp::connect(b.stomp).await;
    p.send_msg("/queue/in-a", "a", &[]).await;
    p.send_msg("/queue/in-b", "b", &[]).await;
    p.send_msg("/topic/in-t", "t", &[]).await;
    let mut got = BTreeMap::new();
    for _ in 0..3 {
        let m = c.recv_message().await;
        assert_eq!(hdr(&m, "subscription"), Some("both"), "{m:?}");
        got.insert(body(&m), hdr(&m, "destination").unwrap().to_owned());
        c.ack(&m).await;
    }
    assert_eq!(
        got,
        BTreeMap::from([
            ("a".to_owned(), "/queue/in-a".to_owned()),
            ("b".to_owned(), "/queue/in-b".to_owned()),
            ("t".to_owned(), "/topic/in-t".to_owned()),
        ])
    );
    // One UNSUBSCRIBE ends it on every destination.
    c.request(frame(Command::Unsubscribe, &[("id", "both")]))
        .await;
    p.send_msg("/queue/in-a", "after", &[]).await;
    p.send_msg("/topic/in-t", "after", &[]).await;
    c.expect_silence(QUIET).await;
    await_counts(b.http, "/queue/in-a", 1, 0).await;
}

#[tokio::test]
async fn a_durable_subscription_to_a_list_is_refused() {
    let b = TestBroker::start("").await;
    let mut s = durable_client(b.stomp, DURABLE_CLIENT).await;
    refused(
        &mut s,
        frame(
            Command::Subscribe,
            &[
                ("id", "d"),
                ("destination", "/topic/a,/topic/b"),
                ("activemq.subscriptionName", "both"),
            ],
        ),
        &["durable", "list"],
    )
    .await;
}

/// The RECEIPT of a persistent composite SEND means every queue's copy is
/// stored: a `kill -9` right after it loses none of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_copy_of_a_receipted_composite_send_survives_kill_9() {
    let mut b = BrokerProcess::start("").await;
    let mut p = Stomp::connect(b.stomp).await;
    for i in 0..20 {
        p.send(persistent_send(
            "/queue/ca,/queue/cb,/topic/ct,/queue/cc",
            &format!("m{i}"),
        ))
        .await;
    }
    p.send_msg(
        "/queue/ca,/queue/cb,/topic/ct,/queue/cc",
        "m20",
        &[("persistent", "true")],
    )
    .await;
    b.kill();
    b.restart().await;
    let mut ids: Vec<Vec<String>> = Vec::new();
    for q in ["/queue/ca", "/queue/cb", "/queue/cc"] {
        let mut c = subscriber(b.stomp, "c", q, "auto", &[]).await;
        let mut v = Vec::new();
        for i in 0..=20 {
            let m = c.recv_message().await;
            assert_eq!(body(&m), format!("m{i}"), "{q}");
            v.push(hdr(&m, "message-id").unwrap().to_owned());
        }
        c.expect_silence(QUIET).await;
        ids.push(v);
    }
    assert!(
        ids.iter().all(|v| *v == ids[0]),
        "copies differ in message-id: {ids:?}"
    );
}

// ---------------------------------------------------------------------------
// 4. Virtual topics
// ---------------------------------------------------------------------------

const ORDERS: &str = "/topic/VirtualTopic.Orders";
const ORDERS_A: &str = "/queue/Consumer.A.VirtualTopic.Orders";
const ORDERS_B: &str = "/queue/Consumer.B.VirtualTopic.Orders";

#[tokio::test]
async fn a_virtual_topic_gives_each_consumer_queue_a_copy_that_its_consumers_share() {
    let b = TestBroker::start("").await;
    let mut a1 = Stomp::connect(b.stomp).await;
    let mut a2 = Stomp::connect(b.stomp).await;
    let mut b1 = Stomp::connect(b.stomp).await;
    let mut t = Stomp::connect(b.stomp).await;
    a1.subscribe("a1", ORDERS_A, "client-individual", &[]).await;
    a2.subscribe("a2", ORDERS_A, "client-individual", &[]).await;
    b1.subscribe("b1", ORDERS_B, "client-individual", &[]).await;
    t.subscribe("t", ORDERS, "auto", &[]).await;

    let mut p = Stomp::connect(b.stomp).await;
    const N: usize = 10;
    for i in 0..N {
        p.send_msg(ORDERS, &format!("o{i}"), &[("persistent", "true")])
            .await;
    }
    // The topic's own subscribers get every message, as from any topic.
    let got = bodies(&mut t, N).await;
    assert_eq!(got, (0..N).map(|i| format!("o{i}")).collect::<Vec<_>>());
    // Group B alone gets all of them, from its queue.
    for i in 0..N {
        let m = b1.recv_message().await;
        assert_eq!(body(&m), format!("o{i}"));
        assert_eq!(hdr(&m, "destination"), Some(ORDERS_B), "{m:?}");
        b1.ack(&m).await;
    }
    // Group A's two consumers share theirs: each message once, both busy.
    let got = collect(&mut [&mut a1, &mut a2], N, true).await;
    let mut seen: Vec<String> = got.iter().map(|(_, m)| body(m)).collect();
    seen.sort();
    let mut want: Vec<String> = (0..N).map(|i| format!("o{i}")).collect();
    want.sort();
    assert_eq!(seen, want, "each message once to group A");
    let per: HashMap<usize, usize> = got.iter().fold(HashMap::new(), |mut h, (i, _)| {
        *h.entry(*i).or_default() += 1;
        h
    });
    assert_eq!(
        per.len(),
        2,
        "both of group A's consumers got messages: {per:?}"
    );
    assert!(
        got.iter()
            .all(|(_, m)| hdr(m, "destination") == Some(ORDERS_A))
    );
    for c in [&mut a1, &mut a2, &mut b1, &mut t] {
        c.expect_silence(Duration::from_millis(100)).await;
    }
    // The copies are stored: acknowledged, they are gone.
    await_counts(b.http, ORDERS_A, 0, 0).await;
    await_counts(b.http, ORDERS_B, 0, 0).await;
}

#[tokio::test]
async fn a_consumer_queue_gets_only_what_is_sent_after_it_exists() {
    let b = TestBroker::start("").await;
    let mut p = Stomp::connect(b.stomp).await;
    p.send_msg(ORDERS, "before-any", &[("persistent", "true")])
        .await;

    // Made by a consumer.
    let mut a = subscriber(b.stomp, "a", ORDERS_A, "client-individual", &[]).await;
    a.expect_silence(QUIET).await;
    // Made by a message sent to it directly.
    p.send_msg(ORDERS_B, "direct-to-b", &[("persistent", "true")])
        .await;
    p.send_msg(ORDERS, "after", &[("persistent", "true")]).await;

    let m = a.recv_message().await;
    assert_eq!(body(&m), "after");
    a.ack(&m).await;
    a.expect_silence(QUIET).await;
    // The consumer leaves; the queue keeps receiving while it is away.
    a.disconnect().await;
    p.send_msg(ORDERS, "while-away", &[]).await;

    let mut bq = subscriber(b.stomp, "b", ORDERS_B, "auto", &[]).await;
    assert_eq!(
        bodies(&mut bq, 3).await,
        ["direct-to-b", "after", "while-away"]
    );
    bq.expect_silence(QUIET).await;
    let mut a = subscriber(b.stomp, "a", ORDERS_A, "auto", &[]).await;
    assert_eq!(bodies(&mut a, 1).await, ["while-away"]);
    a.expect_silence(QUIET).await;
    // Queues that only look like consumer queues of other topics get
    // nothing.
    let mut other = Stomp::connect(b.stomp).await;
    other
        .subscribe("o", "/queue/Consumer.A.Orders", "auto", &[])
        .await;
    other
        .subscribe("o2", "/queue/Consumer.VirtualTopic.Orders", "auto", &[])
        .await;
    p.send_msg(ORDERS, "last", &[]).await;
    other.expect_silence(QUIET).await;
}

#[tokio::test]
async fn virtual_topic_names_follow_the_configuration() {
    let b = TestBroker::start(
        "[destinations]\nvirtual-topics = \"VT.*\"\nvirtual-topic-consumers = \"Group.*.in.\"\n",
    )
    .await;
    let mut g = subscriber(b.stomp, "g", "/queue/Group.x.in.VT.events", "auto", &[]).await;
    // The default names mean nothing here.
    let mut d = subscriber(
        b.stomp,
        "d",
        "/queue/Consumer.A.VirtualTopic.events",
        "auto",
        &[],
    )
    .await;
    let mut p = Stomp::connect(b.stomp).await;
    p.send_msg("/topic/VT.events", "e1", &[]).await;
    p.send_msg("/topic/VirtualTopic.events", "e2", &[]).await;
    p.send_msg("/topic/VT.events.deeper", "e3", &[]).await;
    let m = g.recv_message().await;
    assert_eq!(body(&m), "e1");
    assert_eq!(hdr(&m, "destination"), Some("/queue/Group.x.in.VT.events"));
    g.expect_silence(QUIET).await;
    d.expect_silence(Duration::from_millis(50)).await;
}

/// An empty consumer queue is remembered by the store: after `kill -9` it
/// receives what is published before its consumer returns; and what it
/// held before the crash is still there, each message once.
async fn consumer_queue_survives_restart(store: Store) {
    let mut b = BrokerProcess::start(&store.toml("semantics_vt_restart").await).await;
    let a = subscriber(b.stomp, "a", ORDERS_A, "client-individual", &[]).await;
    a.disconnect().await;
    // Empty, consumerless, and through a crash.
    b.kill();
    b.restart().await;
    let mut p = Stomp::connect(b.stomp).await;
    p.send_msg(ORDERS, "r1", &[("persistent", "true")]).await;
    p.send_msg(ORDERS, "r2-np", &[]).await;
    p.send_msg(ORDERS, "r3", &[("persistent", "true")]).await;
    b.kill();
    b.restart().await;
    // Empty again after a crash: it still exists.
    let mut p = Stomp::connect(b.stomp).await;
    p.send_msg(ORDERS, "r4", &[("persistent", "true")]).await;
    let mut a = subscriber(b.stomp, "a", ORDERS_A, "client-individual", &[]).await;
    let mut got = Vec::new();
    for _ in 0..3 {
        let m = a.recv_message().await;
        assert_eq!(hdr(&m, "destination"), Some(ORDERS_A), "{m:?}");
        got.push(body(&m));
        a.ack(&m).await;
    }
    assert_eq!(
        got,
        ["r1", "r3", "r4"],
        "persistent copies survive; the non-persistent one does not"
    );
    a.expect_silence(QUIET).await;
    a.disconnect().await;

    // Emptied by its consumer, it is still remembered across a crash.
    b.kill();
    b.restart().await;
    let mut p = Stomp::connect(b.stomp).await;
    p.send_msg(ORDERS, "r5", &[("persistent", "true")]).await;
    let mut a = subscriber(b.stomp, "a", ORDERS_A, "client-individual", &[]).await;
    let m = a.recv_message().await;
    assert_eq!(body(&m), "r5");
    a.ack(&m).await;
    a.expect_silence(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_consumer_queue_keeps_receiving_across_kill_9_on_the_journal() {
    consumer_queue_survives_restart(Store::Journal).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_consumer_queue_keeps_receiving_across_kill_9_on_postgres() {
    consumer_queue_survives_restart(Store::Postgres).await;
}

// ---------------------------------------------------------------------------
// 5. Message groups
// ---------------------------------------------------------------------------

/// A grouped SEND: `JMSXGroupID` and a number `n` (and `JMSXGroupSeq` if
/// given).
fn grouped(dest: &str, group: &str, n: usize, seq: Option<&str>) -> Frame {
    let mut f = persistent_send(dest, &format!("{group}-{n}"))
        .header("JMSXGroupID", group)
        .header("n", n.to_string());
    if let Some(s) = seq {
        f.headers.push("JMSXGroupSeq", s);
    }
    f
}

/// Checks that each group's messages in `got` went to one consumer, in
/// order (by `n`), and that exactly the first one is marked
/// `JMSXGroupFirstForConsumer:true`. Returns group → consumer.
pub(crate) fn assert_groups_stick(got: &[(usize, Frame)]) -> BTreeMap<String, usize> {
    let mut owner: BTreeMap<String, usize> = BTreeMap::new();
    let mut last: HashMap<String, usize> = HashMap::new();
    for (c, m) in got {
        let g = hdr(m, "JMSXGroupID")
            .unwrap_or_else(|| panic!("no group: {m:?}"))
            .to_owned();
        let n: usize = hdr(m, "n").unwrap().parse().unwrap();
        let first = hdr(m, "JMSXGroupFirstForConsumer");
        match owner.get(&g) {
            None => {
                owner.insert(g.clone(), *c);
                assert_eq!(
                    first,
                    Some("true"),
                    "the first of group {g} is not marked: {m:?}"
                );
            }
            Some(o) => {
                assert_eq!(o, c, "group {g} went to consumers {o} and {c}: {m:?}");
                assert_eq!(first, None, "a later message of group {g} is marked: {m:?}");
            }
        }
        if let Some(prev) = last.insert(g.clone(), n) {
            assert!(prev < n, "group {g} out of order: {n} after {prev}");
        }
    }
    owner
}

#[tokio::test]
async fn a_group_goes_to_one_consumer_at_a_time_in_order_its_first_delivery_marked() {
    let b = TestBroker::start("").await;
    let mut c1 = Stomp::connect(b.stomp).await;
    let mut c2 = Stomp::connect(b.stomp).await;
    c1.subscribe("c1", "/queue/grp", "client-individual", &[])
        .await;
    c2.subscribe("c2", "/queue/grp", "client-individual", &[])
        .await;
    let mut p = Stomp::connect(b.stomp).await;
    const PER: usize = 5;
    let groups = ["g-a", "g-b", "g-c", "g-d"];
    for n in 0..PER {
        for g in groups {
            p.send(grouped("/queue/grp", g, n, None)).await;
        }
    }
    p.send_msg("/queue/grp", "ungrouped", &[]).await;
    let got = collect(&mut [&mut c1, &mut c2], PER * groups.len() + 1, true).await;
    let grouped_only: Vec<(usize, Frame)> = got
        .iter()
        .filter(|(_, m)| body(m) != "ungrouped")
        .cloned()
        .collect();
    let owners = assert_groups_stick(&grouped_only);
    assert_eq!(owners.len(), groups.len());
    let used: HashSet<usize> = owners.values().copied().collect();
    assert_eq!(
        used.len(),
        2,
        "the groups spread over both consumers: {owners:?}"
    );
    let plain = got.iter().find(|(_, m)| body(m) == "ungrouped").unwrap();
    assert_eq!(hdr(&plain.1, "JMSXGroupFirstForConsumer"), None);
    c1.expect_silence(QUIET).await;
    c2.expect_silence(Duration::from_millis(20)).await;
}

#[tokio::test]
async fn group_seq_minus_one_closes_the_group_and_its_next_message_is_first_again() {
    let b = TestBroker::start("").await;
    let mut c1 = Stomp::connect(b.stomp).await;
    let mut c2 = Stomp::connect(b.stomp).await;
    c1.subscribe("c1", "/queue/close", "client-individual", &[])
        .await;
    c2.subscribe("c2", "/queue/close", "client-individual", &[])
        .await;
    let mut p = Stomp::connect(b.stomp).await;
    p.send(grouped("/queue/close", "g", 0, None)).await;
    p.send(grouped("/queue/close", "g", 1, None)).await;
    p.request(grouped("/queue/close", "g", 2, Some("-1"))).await;
    let got = collect(&mut [&mut c1, &mut c2], 3, true).await;
    assert_groups_stick(&got);
    // Closed: the next message of the group is assigned afresh, and marked.
    p.request(grouped("/queue/close", "g", 3, None)).await;
    let got = collect(&mut [&mut c1, &mut c2], 1, true).await;
    assert_eq!(
        hdr(&got[0].1, "JMSXGroupFirstForConsumer"),
        Some("true"),
        "after JMSXGroupSeq:-1 the group starts again: {:?}",
        got[0].1
    );
    p.request(grouped("/queue/close", "g", 4, None)).await;
    let next = collect(&mut [&mut c1, &mut c2], 1, true).await;
    assert_eq!(next[0].0, got[0].0, "the new owner keeps the group");
    assert_eq!(
        hdr(&next[0].1, "JMSXGroupFirstForConsumer"),
        None,
        "{:?}",
        next[0].1
    );
}

#[tokio::test]
async fn when_a_group_owner_leaves_its_unacknowledged_messages_go_to_another_first_marked() {
    let b = TestBroker::start("").await;
    let mut cs = [Stomp::connect(b.stomp).await, Stomp::connect(b.stomp).await];
    for (i, c) in cs.iter_mut().enumerate() {
        c.subscribe(&format!("c{i}"), "/queue/leave", "client-individual", &[])
            .await;
    }
    let mut p = Stomp::connect(b.stomp).await;
    for n in 0..3 {
        p.send(grouped("/queue/leave", "g", n, None)).await;
    }
    p.request(grouped("/queue/leave", "g", 3, None)).await;
    // Whoever got the group gets all four; it acknowledges the first only.
    let [c0, c1] = &mut cs;
    let first = collect(&mut [c0, c1], 1, false).await;
    let owner = first[0].0;
    let other = 1 - owner;
    let mut held = vec![first[0].1.clone()];
    for _ in 0..3 {
        held.push(cs[owner].recv_message().await);
    }
    assert_eq!(
        held.iter().map(body).collect::<Vec<_>>(),
        ["g-0", "g-1", "g-2", "g-3"]
    );
    cs[owner].ack(&held[0]).await;
    cs[other].expect_silence(QUIET).await;

    // The owner leaves.
    let [c0, c1] = cs;
    let (gone, mut heir) = if owner == 0 { (c0, c1) } else { (c1, c0) };
    gone.disconnect().await;
    let mut got = Vec::new();
    for _ in 0..3 {
        let m = heir.recv_message().await;
        got.push((other, m));
    }
    assert_eq!(
        got.iter().map(|(_, m)| body(m)).collect::<Vec<_>>(),
        ["g-1", "g-2", "g-3"]
    );
    assert_groups_stick(&got);
    assert!(
        got.iter()
            .all(|(_, m)| hdr(m, "redelivered") == Some("true")),
        "{got:?}"
    );
    // The heir owns the group now.
    p.send_msg("/queue/leave", "g-4", &[("JMSXGroupID", "g"), ("n", "4")])
        .await;
    let m = heir.recv_message().await;
    assert_eq!(body(&m), "g-4");
    assert_eq!(hdr(&m, "JMSXGroupFirstForConsumer"), None, "{m:?}");
}

// ---------------------------------------------------------------------------
// 6. Exclusive consumers and consumer priority
// ---------------------------------------------------------------------------

#[tokio::test]
async fn an_exclusive_consumer_is_the_only_receiver_until_it_leaves_or_a_higher_priority_one_comes()
{
    let b = TestBroker::start("").await;
    let ex = [("activemq.exclusive", "true")];
    let mut first = Stomp::connect(b.stomp).await;
    first
        .subscribe("x1", "/queue/ex", "client-individual", &ex)
        .await;
    let mut second = Stomp::connect(b.stomp).await;
    second
        .subscribe("x2", "/queue/ex", "client-individual", &ex)
        .await;
    let mut plain = Stomp::connect(b.stomp).await;
    plain
        .subscribe("p", "/queue/ex", "client-individual", &[])
        .await;

    let mut p = Stomp::connect(b.stomp).await;
    for i in 0..6 {
        p.send_msg("/queue/ex", &format!("a{i}"), &[]).await;
    }
    let got = bodies(&mut first, 6).await;
    assert_eq!(got, (0..6).map(|i| format!("a{i}")).collect::<Vec<_>>());
    second.expect_silence(QUIET).await;
    plain.expect_silence(Duration::from_millis(20)).await;

    // It leaves without acknowledging: the next exclusive one takes over,
    // its messages included.
    first.disconnect().await;
    p.send_msg("/queue/ex", "b0", &[]).await;
    let got = bodies(&mut second, 7).await;
    let mut want: Vec<String> = (0..6).map(|i| format!("a{i}")).collect();
    want.push("b0".into());
    assert_eq!(got, want);
    plain.expect_silence(QUIET).await;

    // An exclusive consumer of higher priority takes over.
    let mut high = subscriber(
        b.stomp,
        "x3",
        "/queue/ex",
        "client-individual",
        &[("activemq.exclusive", "true"), ("activemq.priority", "5")],
    )
    .await;
    for i in 0..3 {
        p.send_msg("/queue/ex", &format!("c{i}"), &[]).await;
    }
    assert_eq!(bodies(&mut high, 3).await, ["c0", "c1", "c2"]);
    second.expect_silence(QUIET).await;
    plain.expect_silence(Duration::from_millis(20)).await;

    // With no exclusive consumer left, the others get everything, what
    // the exclusive ones held included.
    high.disconnect().await;
    second.disconnect().await;
    p.send_msg("/queue/ex", "d0", &[]).await;
    let mut got = bodies(&mut plain, 11).await;
    got.sort();
    let mut want: Vec<String> = [
        "a0", "a1", "a2", "a3", "a4", "a5", "b0", "c0", "c1", "c2", "d0",
    ]
    .map(String::from)
    .to_vec();
    want.sort();
    assert_eq!(got, want);
}

#[tokio::test]
async fn higher_priority_consumers_with_credit_are_served_first() {
    let b = TestBroker::start("").await;
    let mut low = subscriber(
        b.stomp,
        "low",
        "/queue/prio-c",
        "client-individual",
        &[
            ("activemq.priority", "-5"),
            ("activemq.prefetchSize", "100"),
        ],
    )
    .await;
    let mut mid = subscriber(
        b.stomp,
        "mid",
        "/queue/prio-c",
        "client-individual",
        &[("activemq.prefetchSize", "100")],
    )
    .await;
    let mut high = subscriber(
        b.stomp,
        "high",
        "/queue/prio-c",
        "client-individual",
        &[("activemq.priority", "127"), ("activemq.prefetchSize", "2")],
    )
    .await;
    let mut p = Stomp::connect(b.stomp).await;
    for i in 0..6 {
        p.send_msg("/queue/prio-c", &format!("m{i}"), &[]).await;
    }
    // The highest takes what its credit allows; the default-priority one
    // the rest; the lowest nothing while others have credit.
    let h = [high.recv_message().await, high.recv_message().await];
    assert_eq!(h.iter().map(body).collect::<Vec<_>>(), ["m0", "m1"]);
    assert_eq!(bodies(&mut mid, 4).await, ["m2", "m3", "m4", "m5"]);
    low.expect_silence(QUIET).await;
    high.expect_silence(Duration::from_millis(20)).await;
    // Credit back: the highest is served first again.
    high.ack(&h[0]).await;
    p.send_msg("/queue/prio-c", "m6", &[]).await;
    assert_eq!(body(&high.recv_message().await), "m6");
    mid.expect_silence(QUIET).await;
    low.expect_silence(Duration::from_millis(20)).await;

    // Out of range is refused, naming the header.
    let mut s = Stomp::connect(b.stomp).await;
    refused(
        &mut s,
        frame(
            Command::Subscribe,
            &[
                ("id", "x"),
                ("destination", "/queue/prio-c"),
                ("activemq.priority", "128"),
            ],
        ),
        &["activemq.priority"],
    )
    .await;
}

// ---------------------------------------------------------------------------
// 7. noLocal, the pending-message limit
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_no_local_subscriber_does_not_get_what_its_own_connection_publishes() {
    let b = TestBroker::start("").await;
    let mut me = subscriber(
        b.stomp,
        "nl",
        "/topic/chat",
        "auto",
        &[("activemq.noLocal", "true")],
    )
    .await;
    me.subscribe("all", "/topic/chat.>", "auto", &[]).await;
    let mut other = Stomp::connect(b.stomp).await;
    me.send_msg("/topic/chat", "mine", &[]).await;
    other.send_msg("/topic/chat", "theirs", &[]).await;
    let mut got: Vec<(String, String)> = Vec::new();
    for _ in 0..3 {
        let m = me.recv_message().await;
        got.push((hdr(&m, "subscription").unwrap().to_owned(), body(&m)));
    }
    got.sort();
    assert_eq!(
        got,
        [
            ("all".to_owned(), "mine".to_owned()),
            ("all".to_owned(), "theirs".to_owned()),
            ("nl".to_owned(), "theirs".to_owned()),
        ]
    );
    me.expect_silence(QUIET).await;
}

#[tokio::test]
async fn a_subscribers_own_pending_limit_drops_its_oldest_messages_for_it_alone() {
    let b = TestBroker::start("").await;
    let mut slow = subscriber(
        b.stomp,
        "slow",
        "/topic/ticks",
        "client-individual",
        &[
            ("activemq.prefetchSize", "1"),
            ("activemq.maximumPendingMessageLimit", "2"),
        ],
    )
    .await;
    let mut full = subscriber(
        b.stomp,
        "full",
        "/topic/ticks",
        "client-individual",
        &[("activemq.prefetchSize", "1")],
    )
    .await;
    let mut p = Stomp::connect(b.stomp).await;
    for i in 0..10 {
        p.send_msg("/topic/ticks", &format!("t{i}"), &[]).await;
    }
    // Prefetch 1 in flight, 2 waiting: the oldest waiting ones are dropped.
    let m = slow.recv_message().await;
    assert_eq!(body(&m), "t0");
    slow.ack(&m).await;
    let m = slow.recv_message().await;
    assert_eq!(body(&m), "t8");
    assert_eq!(hdr(&m, "dropped-count"), Some("7"), "{m:?}");
    slow.ack(&m).await;
    let m = slow.recv_message().await;
    assert_eq!(body(&m), "t9");
    assert_eq!(hdr(&m, "dropped-count"), None, "{m:?}");
    slow.ack(&m).await;
    slow.expect_silence(QUIET).await;
    // The other subscriber, on the broker's default limit, lost nothing.
    for i in 0..10 {
        let m = full.recv_message().await;
        assert_eq!(body(&m), format!("t{i}"));
        assert_eq!(hdr(&m, "dropped-count"), None, "{m:?}");
        full.ack(&m).await;
    }
}

// ---------------------------------------------------------------------------
// 8. What Halyard refuses rather than ignore
// ---------------------------------------------------------------------------

#[tokio::test]
async fn activemq_options_halyard_does_not_implement_are_refused_by_name() {
    let b = TestBroker::start("").await;
    let sub = |extra: (&'static str, &'static str)| {
        frame(
            Command::Subscribe,
            &[("id", "s"), ("destination", "/topic/r"), extra],
        )
    };
    let cases: Vec<(Frame, &[&str])> = vec![
        (
            sub(("activemq.retroactive", "true")),
            &["activemq.retroactive"],
        ),
        (
            sub(("activemq.selectorish", "x")),
            &["activemq.selectorish"],
        ),
        (
            sub(("activemq.maximumPendingMessageLimit", "0")),
            &["activemq.maximumPendingMessageLimit"],
        ),
        (sub(("activemq.exclusive", "yes")), &["activemq.exclusive"]),
        (
            sub(("transformation", "jms-map-json")),
            &["transformation", "jms-map-json"],
        ),
        (
            send_frame("/queue/r", "x", &[("transformation", "jms-object-xml")]),
            &["transformation"],
        ),
    ];
    for (f, needles) in cases {
        let mut s = Stomp::connect(b.stomp).await;
        refused(&mut s, f, needles).await;
    }
    // Nothing refused reached the queue.
    assert!(
        dest_stats(b.http, "/queue/r")
            .await
            .is_none_or(|s| s["ready"] == 0)
    );

    // What is implemented, or harmless, is accepted.
    let mut s = subscriber(
        b.stomp,
        "ok",
        "/queue/r",
        "auto",
        &[
            ("activemq.retroactive", "false"),
            ("activemq.dispatchAsync", "true"),
            ("transformation", "jms-byte"),
        ],
    )
    .await;
    s.send_msg("/queue/r", "bytes", &[("transformation", "jms-byte")])
        .await;
    assert_eq!(body(&s.recv_message().await), "bytes");
}

// ---------------------------------------------------------------------------
// 9. Temporary topics
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_temporary_topic_is_its_owners_to_subscribe_others_reply_to_it_and_it_dies_with_its_owner()
 {
    let b = TestBroker::start("").await;
    let mut owner = Stomp::connect(b.stomp).await;
    owner
        .subscribe("r1", "/temp-topic/replies", "auto", &[])
        .await;
    owner
        .subscribe("r2", "/temp-topic/replies", "auto", &[])
        .await;
    owner
        .send_msg(
            "/queue/requests",
            "ping",
            &[("reply-to", "/temp-topic/replies")],
        )
        .await;

    let mut server = Stomp::connect(b.stomp).await;
    server
        .subscribe("req", "/queue/requests", "auto", &[])
        .await;
    let req = server.recv_message().await;
    let reply_to = hdr(&req, "reply-to").unwrap().to_owned();
    assert!(
        reply_to.starts_with("/remote-temp-topic/"),
        "reply-to not rewritten: {reply_to}"
    );
    assert!(reply_to.ends_with(".replies"), "{reply_to}");
    server.send_msg(&reply_to, "pong", &[]).await;
    // A topic: each of the owner's subscriptions gets a copy, shown under
    // the name the owner used.
    let mut subs = Vec::new();
    for _ in 0..2 {
        let m = owner.recv_message().await;
        assert_eq!(body(&m), "pong");
        assert_eq!(hdr(&m, "destination"), Some("/temp-topic/replies"), "{m:?}");
        subs.push(hdr(&m, "subscription").unwrap().to_owned());
    }
    subs.sort();
    assert_eq!(subs, ["r1", "r2"]);
    // Listed as what it is.
    assert!(
        dest_stats(b.http, &reply_to).await.is_some(),
        "{reply_to} is not listed"
    );

    // Nobody else may subscribe.
    let mut thief = Stomp::connect(b.stomp).await;
    refused(
        &mut thief,
        frame(
            Command::Subscribe,
            &[("id", "x"), ("destination", reply_to.as_str())],
        ),
        &["temporary destination"],
    )
    .await;
    // Another connection's own /temp-topic/replies is another topic.
    let mut other = Stomp::connect(b.stomp).await;
    other
        .subscribe("mine", "/temp-topic/replies", "auto", &[])
        .await;
    server.send_msg(&reply_to, "pong2", &[]).await;
    assert_eq!(body(&owner.recv_message().await), "pong2");
    other.expect_silence(QUIET).await;

    // Gone with its owner: replies are dropped, and still receipted.
    owner.disconnect().await;
    eventually(WAIT, "the temporary topic to be deleted", || {
        let reply_to = reply_to.clone();
        let http = b.http;
        async move { dest_stats(http, &reply_to).await.is_none().then_some(()) }
    })
    .await;
    server.send_msg(&reply_to, "too late", &[]).await;
    other.expect_silence(QUIET).await;
}

// ---------------------------------------------------------------------------
// 10. Where the features meet
// ---------------------------------------------------------------------------

/// A subscription to several queues (a wildcard, or a list) is one
/// consumer with one prefetch, as in ActiveMQ (its `PrefetchSubscription`
/// is one subscription added to every matching queue, and counts what it
/// has in flight over all of them): with `activemq.prefetchSize:1` it has
/// one unacknowledged message at a time, whichever queue it came from.
async fn one_prefetch_over_several_queues(dest: &str, prefix: &str) {
    let b = TestBroker::start("").await;
    let mut p = Stomp::connect(b.stomp).await;
    for q in ["a", "b", "c"] {
        p.send_msg(&format!("/queue/{prefix}.{q}"), q, &[]).await;
    }
    let mut c = subscriber(
        b.stomp,
        "s",
        dest,
        "client-individual",
        &[("activemq.prefetchSize", "1")],
    )
    .await;
    let mut seen = Vec::new();
    for _ in 0..3 {
        let m = c.recv_message().await;
        if let Some(second) = c.recv_within(QUIET).await {
            panic!(
                "SUBSCRIBE {dest} with activemq.prefetchSize:1 has two unacknowledged messages in flight: {} and {}",
                hdr(&m, "destination").unwrap(),
                hdr(&second, "destination").unwrap()
            );
        }
        seen.push(body(&m));
        c.ack(&m).await;
    }
    seen.sort();
    assert_eq!(seen, ["a", "b", "c"]);
}

#[tokio::test]
async fn a_wildcard_queue_subscription_has_one_prefetch_over_all_its_queues() {
    one_prefetch_over_several_queues("/queue/pfw.*", "pfw").await;
}

#[tokio::test]
async fn a_composite_queue_subscription_has_one_prefetch_over_all_its_queues() {
    one_prefetch_over_several_queues("/queue/pfl.a,/queue/pfl.b,/queue/pfl.c", "pfl").await;
}

/// A group's messages wait for their owner while it has no credit; other
/// groups go on to other consumers.
#[tokio::test]
async fn a_groups_messages_wait_for_their_owner_while_other_groups_go_on() {
    let b = TestBroker::start("").await;
    let mut owner = Stomp::connect(b.stomp).await;
    owner
        .subscribe(
            "o",
            "/queue/wait",
            "client-individual",
            &[("activemq.prefetchSize", "1")],
        )
        .await;
    let mut p = Stomp::connect(b.stomp).await;
    p.request(grouped("/queue/wait", "a", 0, None)).await;
    let a0 = owner.recv_message().await;
    assert_eq!(body(&a0), "a-0");
    // Another consumer arrives; the owner has no credit.
    let mut other = Stomp::connect(b.stomp).await;
    other
        .subscribe("x", "/queue/wait", "client-individual", &[])
        .await;
    p.request(grouped("/queue/wait", "a", 1, None)).await;
    p.request(grouped("/queue/wait", "b", 0, None)).await;
    let m = other.recv_message().await;
    assert_eq!(body(&m), "b-0", "group a must wait for its owner: {m:?}");
    other.ack(&m).await;
    other.expect_silence(QUIET).await;
    owner.expect_silence(Duration::from_millis(20)).await;
    owner.ack(&a0).await;
    let m = owner.recv_message().await;
    assert_eq!(body(&m), "a-1");
    assert_eq!(hdr(&m, "JMSXGroupFirstForConsumer"), None, "{m:?}");
    owner.ack(&m).await;
}

/// A browse of a deep queue while a consumer takes its messages: the
/// browser is shown each message at most once, in order, and is told the
/// end; the consumer gets every message.
async fn browse_while_consumed(store: Store) {
    const N: usize = 2000;
    let toml = format!(
        "{}[limits]\ndestination-memory-bytes = 32768\n",
        store.toml("semantics_browse_consumed").await
    );
    let b = TestBroker::start(&toml).await;
    let pad = "c".repeat(1024 - 6);
    let mut p = Stomp::connect(b.stomp).await;
    for i in 0..N {
        let f = persistent_send("/queue/busy", &format!("{i:06}{pad}")).header("i", i.to_string());
        if i % 100 == 99 {
            p.request(f).await;
        } else {
            p.send(f).await;
        }
    }
    await_counts(b.http, "/queue/busy", N as u64, 0).await;
    let mut br = subscriber(
        b.stomp,
        "br",
        "/queue/busy",
        "auto",
        &[("browser", "true"), ("activemq.prefetchSize", "8")],
    )
    .await;
    let mut shown: Vec<usize> = Vec::new();
    for _ in 0..100 {
        let m = br.recv_message().await;
        shown.push(hdr(&m, "i").unwrap().parse().unwrap());
    }
    // A consumer takes every message meanwhile.
    let mut c = subscriber(
        b.stomp,
        "c",
        "/queue/busy",
        "client-individual",
        &[("activemq.prefetchSize", "50")],
    )
    .await;
    for i in 0..N {
        let m = c.recv_message().await;
        assert_eq!(hdr(&m, "i"), Some(i.to_string().as_str()));
        let ack = frame(Command::Ack, &[("id", hdr(&m, "ack").unwrap())]);
        if i % 100 == 99 {
            c.request(ack).await;
        } else {
            c.send(ack).await;
        }
    }
    await_counts(b.http, "/queue/busy", 0, 0).await;
    loop {
        let m = br.recv_message().await;
        if is_browse_end(&m) {
            break;
        }
        let i: usize = hdr(&m, "i").unwrap().parse().unwrap();
        assert_eq!(&body(&m)[..6], format!("{i:06}"), "a body mixed up");
        shown.push(i);
    }
    assert!(
        shown.windows(2).all(|w| w[0] < w[1]),
        "the browser was shown messages out of order or twice"
    );
    println!(
        "{store:?}: the browser was shown {} of {N} messages while they were consumed",
        shown.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browse_of_a_deep_queue_being_consumed_ends_in_order_on_the_journal() {
    browse_while_consumed(Store::Journal).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browse_of_a_deep_queue_being_consumed_ends_in_order_on_postgres() {
    browse_while_consumed(Store::Postgres).await;
}

/// A resent persistent SEND (same `_AMQ_DUPL_ID`, as after a failover) to
/// a list of queues or to a virtual topic is stored once in each queue.
#[tokio::test]
async fn a_resent_composite_or_virtual_topic_send_is_stored_once_per_queue() {
    let b = TestBroker::start("").await;
    let a = subscriber(b.stomp, "a", ORDERS_A, "auto", &[]).await;
    a.disconnect().await;
    let mut p = Stomp::connect(b.stomp).await;
    for _ in 0..2 {
        p.send_msg(
            "/queue/dup-1,/queue/dup-2",
            "once",
            &[("persistent", "true"), ("_AMQ_DUPL_ID", "dup-list")],
        )
        .await;
        p.send_msg(
            ORDERS,
            "once-vt",
            &[("persistent", "true"), ("_AMQ_DUPL_ID", "dup-vt")],
        )
        .await;
    }
    for (q, want) in [
        ("/queue/dup-1", "once"),
        ("/queue/dup-2", "once"),
        (ORDERS_A, "once-vt"),
    ] {
        let mut c = subscriber(b.stomp, "c", q, "auto", &[]).await;
        assert_eq!(body(&c.recv_message().await), want, "{q}");
        c.expect_silence(QUIET).await;
    }
}

/// A SEND to a virtual topic inside a transaction reaches its consumer
/// queues at COMMIT, and not at all on ABORT.
#[tokio::test]
async fn a_virtual_topic_send_in_a_transaction_reaches_consumer_queues_only_at_commit() {
    let b = TestBroker::start("").await;
    let mut a = subscriber(b.stomp, "a", ORDERS_A, "auto", &[]).await;
    let mut p = Stomp::connect(b.stomp).await;
    p.request(frame(Command::Begin, &[("transaction", "t1")]))
        .await;
    p.send_msg(
        &format!("{ORDERS},/queue/vt-side"),
        "aborted",
        &[("transaction", "t1"), ("persistent", "true")],
    )
    .await;
    p.request(frame(Command::Abort, &[("transaction", "t1")]))
        .await;
    p.request(frame(Command::Begin, &[("transaction", "t2")]))
        .await;
    p.send_msg(
        &format!("{ORDERS},/queue/vt-side"),
        "committed",
        &[("transaction", "t2"), ("persistent", "true")],
    )
    .await;
    a.expect_silence(QUIET).await;
    p.request(frame(Command::Commit, &[("transaction", "t2")]))
        .await;
    let m = a.recv_message().await;
    assert_eq!(body(&m), "committed");
    assert_eq!(hdr(&m, "destination"), Some(ORDERS_A), "{m:?}");
    a.expect_silence(QUIET).await;
    let mut side = subscriber(b.stomp, "s", "/queue/vt-side", "auto", &[]).await;
    assert_eq!(bodies(&mut side, 1).await, ["committed"]);
    side.expect_silence(QUIET).await;
}

/// Waits until the admin API no longer lists `dest` (reclaimed), asking
/// every 250 ms: each question is a turn of the destination's loop (see
/// `admin_requests_do_not_keep_idle_destinations_alive`), so asking more
/// often than `gc-inactive-ms` would keep it alive.
async fn until_reclaimed(http: SocketAddr, dest: &str) {
    let deadline = Instant::now() + WAIT;
    while dest_stats(http, dest).await.is_some() {
        assert!(Instant::now() < deadline, "{dest} was not reclaimed");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Idle destinations are reclaimed (`destinations.gc-inactive-ms`), but a
/// consumer queue of a virtual topic is not, and a wildcard subscription
/// keeps getting messages from a topic reclaimed and made anew.
#[tokio::test]
async fn reclaiming_idle_destinations_spares_consumer_queues_and_wildcard_subscriptions() {
    let b = TestBroker::start("[destinations]\ngc-inactive-ms = 50\n").await;
    let a = subscriber(b.stomp, "a", ORDERS_A, "auto", &[]).await;
    a.disconnect().await;
    let mut wild = subscriber(b.stomp, "wt", "/topic/gc.>", "auto", &[]).await;

    let mut p = Stomp::connect(b.stomp).await;
    p.send_msg("/topic/gc.one", "t1", &[]).await;
    p.send_msg("/queue/plain", "plain", &[]).await;
    let mut c = subscriber(b.stomp, "c", "/queue/plain", "auto", &[]).await;
    assert_eq!(body(&c.recv_message().await), "plain");
    c.disconnect().await;
    assert_eq!(body(&wild.recv_message().await), "t1");
    // The plain queue and the topic go once idle; the empty consumer
    // queue stays.
    until_reclaimed(b.http, "/queue/plain").await;
    until_reclaimed(b.http, "/topic/gc.one").await;
    assert!(
        dest_stats(b.http, ORDERS_A).await.is_some(),
        "the consumer queue was reclaimed"
    );
    p.send_msg(ORDERS, "kept", &[]).await;
    p.send_msg("/topic/gc.one", "t2", &[]).await;
    let m = wild.recv_message().await;
    assert_eq!(
        body(&m),
        "t2",
        "the wildcard subscription lost a topic made anew"
    );
    assert_eq!(hdr(&m, "destination"), Some("/topic/gc.one"));
    let mut a = subscriber(b.stomp, "a", ORDERS_A, "auto", &[]).await;
    assert_eq!(bodies(&mut a, 1).await, ["kept"]);
}

/// An idle queue or topic is reclaimed after `gc-inactive-ms` even while
/// the admin API is asked about it (a Prometheus scrape of `/metrics`, a
/// dashboard polling `/api/destinations`): looking is not traffic.
#[tokio::test]
async fn admin_requests_do_not_keep_idle_destinations_alive() {
    let b = TestBroker::start("[destinations]\ngc-inactive-ms = 300\n").await;
    let mut p = Stomp::connect(b.stomp).await;
    p.send_msg("/topic/watched", "t", &[]).await;
    p.send_msg("/queue/watched", "q", &[]).await;
    let mut c = subscriber(b.stomp, "c", "/queue/watched", "auto", &[]).await;
    assert_eq!(body(&c.recv_message().await), "q");
    c.disconnect().await;
    p.disconnect().await;
    // Scraped every 100 ms, for ten times gc-inactive-ms.
    let started = Instant::now();
    let mut listed = Vec::new();
    while started.elapsed() < Duration::from_secs(3) {
        let (code, text) = http_get(b.http, "/metrics").await;
        assert_eq!(code, 200);
        listed = ["/topic/watched", "/queue/watched"]
            .into_iter()
            .filter(|d| text.contains(&format!("halyard_destination_ready{{destination=\"{d}\"}}")))
            .collect();
        if listed.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "idle for {:?} (gc-inactive-ms = 300) and never reclaimed while /metrics was scraped every 100 ms: {listed:?}",
        started.elapsed()
    );
}

/// A durable subscription on a wildcard also keeps messages of topics that
/// existed before it was made.
#[tokio::test]
async fn a_durable_wildcard_subscription_covers_topics_that_existed_before_it() {
    let b = TestBroker::start("").await;
    let mut live = subscriber(b.stomp, "l", "/topic/old.x", "auto", &[]).await;
    let sub = [("activemq.subscriptionName", "olds")];
    let mut s = durable_client(b.stomp, DURABLE_CLIENT).await;
    s.subscribe("d", "/topic/old.>", "client-individual", &sub)
        .await;
    s.disconnect().await;
    let mut p = Stomp::connect(b.stomp).await;
    p.send_msg("/topic/old.x", "kept", &[("persistent", "true")])
        .await;
    assert_eq!(body(&live.recv_message().await), "kept");
    let mut s = durable_client(b.stomp, DURABLE_CLIENT).await;
    s.subscribe("d", "/topic/old.>", "client-individual", &sub)
        .await;
    let m = s.recv_message().await;
    assert_eq!(body(&m), "kept");
    assert_eq!(hdr(&m, "destination"), Some("/topic/old.x"));
    s.ack(&m).await;
    s.expect_silence(QUIET).await;
}

/// UNSUBSCRIBE of a wildcard queue subscription: queues made afterwards
/// do not deliver to it.
#[tokio::test]
async fn an_ended_wildcard_queue_subscription_gets_nothing_from_later_queues() {
    let b = TestBroker::start("").await;
    let mut c = subscriber(b.stomp, "w", "/queue/end.*", "auto", &[]).await;
    c.request(frame(Command::Unsubscribe, &[("id", "w")])).await;
    let mut p = Stomp::connect(b.stomp).await;
    p.send_msg("/queue/end.new", "x", &[]).await;
    c.expect_silence(QUIET).await;
    await_counts(b.http, "/queue/end.new", 1, 0).await;
}

/// A subscription whose destinations overlap (a list naming a topic twice,
/// directly and through a wildcard) is one consumer: it gets each message
/// once, as in ActiveMQ (a consumer is added once to each destination its
/// composite destination matches).
#[tokio::test]
async fn a_subscription_to_overlapping_destinations_gets_each_message_once() {
    let b = TestBroker::start("").await;
    let mut s = subscriber(b.stomp, "t", "/topic/ov.*,/topic/ov.a", "auto", &[]).await;
    s.subscribe("w", "/topic/ovw.>,/topic/ovw.*", "auto", &[])
        .await;
    let mut p = Stomp::connect(b.stomp).await;
    p.send_msg("/topic/ov.a", "once", &[]).await;
    p.send_msg("/topic/ovw.a", "once-w", &[]).await;
    let mut got = bodies(&mut s, 2).await;
    got.sort();
    assert_eq!(got, ["once", "once-w"]);
    s.expect_silence(QUIET).await;
}

#[tokio::test]
async fn no_local_holds_on_wildcard_subscriptions_and_browsing_a_temporary_queue_works() {
    let b = TestBroker::start("").await;
    let mut me = subscriber(
        b.stomp,
        "nl",
        "/topic/nlw.>",
        "auto",
        &[("activemq.noLocal", "true")],
    )
    .await;
    let mut other = Stomp::connect(b.stomp).await;
    me.send_msg("/topic/nlw.a", "mine", &[]).await;
    other.send_msg("/topic/nlw.a", "theirs", &[]).await;
    assert_eq!(bodies(&mut me, 1).await, ["theirs"]);
    me.expect_silence(QUIET).await;

    // The owner may browse its temporary queue.
    me.send_msg("/temp-queue/mine", "t1", &[]).await;
    me.subscribe("br", "/temp-queue/mine", "auto", &[("browser", "true")])
        .await;
    let (shown, end) = browse_all(&mut me).await;
    assert_eq!(shown.iter().map(body).collect::<Vec<_>>(), ["t1"]);
    assert_eq!(hdr(&shown[0], "destination"), Some("/temp-queue/mine"));
    assert_eq!(hdr(&end, "destination"), Some("/temp-queue/mine"));
    // A wildcard cannot name temporary destinations.
    refused(
        &mut other,
        frame(
            Command::Subscribe,
            &[("id", "x"), ("destination", "/temp-topic/a.*")],
        ),
        &["temporary"],
    )
    .await;
}

/// A browser is shown the queue in dispatch order: by priority, then
/// arrival.
#[tokio::test]
async fn a_browser_is_shown_the_queue_in_priority_order() {
    let b = TestBroker::start("").await;
    let mut p = Stomp::connect(b.stomp).await;
    for (text, prio) in [("low", "1"), ("mid", "4"), ("high", "9"), ("mid2", "4")] {
        p.send_msg("/queue/bprio", text, &[("priority", prio)])
            .await;
    }
    let mut br = subscriber(
        b.stomp,
        "br",
        "/queue/bprio",
        "auto",
        &[("browser", "true")],
    )
    .await;
    let (shown, _) = browse_all(&mut br).await;
    assert_eq!(
        shown.iter().map(body).collect::<Vec<_>>(),
        ["high", "mid", "mid2", "low"]
    );
}
