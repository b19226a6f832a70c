//! JMS message selectors over STOMP (the `selector` header on SUBSCRIBE,
//! docs/SELECTORS.md), end to end against the real broker: competing
//! selective consumers on a queue, a match deep behind non-matching
//! messages (in memory and paged out to the store), typed comparisons over
//! STOMP's string headers and the JMS header fields, refusals (a selector
//! that does not parse, one too long), topic subscribers, NACK and aborted
//! ACKs, queue browsers, wildcard and composite subscriptions, Halyard's
//! failover client across a takeover, and durable subscriptions whose
//! selector is kept across a restart and a `kill -9` takeover, on the
//! journal and on PostgreSQL.
//!
//! In-process brokers, except where the broker is killed (the binary).
//! Nothing sleeps and hopes: waits poll for their event with a deadline,
//! and "nothing more arrives" is `expect_silence`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::semantics::{Store, error_text, frame, hdr, send_frame};
use crate::semantics_takeover::{connect_to_any, pair, take_over};
use crate::support::inproc::TestBroker;
use crate::support::{BrokerProcess, dest_stats};
use halyard_stomp::Command;
use halyard_testkit::eventually;
use halyard_testkit::stomp::{Stomp, WAIT, body};

/// How long "nothing more arrives" is watched for.
const QUIET: Duration = Duration::from_millis(200);

/// A connection subscribed to `dest` with `selector` (and `extra` headers).
async fn selective(addr: SocketAddr, dest: &str, ack: &str, selector: &str) -> Stomp {
    let mut c = Stomp::connect(addr).await;
    c.subscribe("s", dest, ack, &[("selector", selector)]).await;
    c
}

/// The next `n` MESSAGEs' `i` headers.
async fn numbers(s: &mut Stomp, n: usize) -> Vec<String> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let m = s.recv_message().await;
        v.push(hdr(&m, "i").unwrap_or_default().to_owned());
    }
    v
}

/// `i` values `from`, `from + step`, ... below `to`, as strings.
fn every(from: usize, to: usize, step: usize) -> Vec<String> {
    (from..to).step_by(step).map(|i| i.to_string()).collect()
}

/// Waits until the admin API shows `ready` messages ready on `dest`.
async fn await_ready(http: SocketAddr, dest: &str, ready: u64) {
    eventually(
        WAIT,
        &format!("{dest} to show ready={ready}"),
        || async move {
            let s = dest_stats(http, dest).await?;
            (s["ready"] == ready).then_some(())
        },
    )
    .await;
}

// ---------------------------------------------------------------------------
// 1. Queues
// ---------------------------------------------------------------------------

#[tokio::test]
async fn competing_selective_consumers_get_exactly_their_messages_in_order_and_the_rest_waits() {
    const Q: &str = "/queue/sel.compete";
    let b = TestBroker::start("").await;
    let mut red = selective(b.stomp, Q, "auto", "color = 'red'").await;
    let mut blue = selective(b.stomp, Q, "auto", "color = 'blue'").await;
    let mut p = Stomp::connect(b.stomp).await;
    let colors = ["red", "blue", "green"];
    for i in 0..30 {
        let f =
            send_frame(Q, &format!("m{i}"), &[("color", colors[i % 3])]).header("i", i.to_string());
        p.request(f).await;
    }
    assert_eq!(numbers(&mut red, 10).await, every(0, 30, 3));
    assert_eq!(numbers(&mut blue, 10).await, every(1, 30, 3));
    red.expect_silence(QUIET).await;
    blue.expect_silence(QUIET).await;
    // Nobody selects green: the ten stay queued, for whoever comes.
    await_ready(b.http, Q, 10).await;
    let mut plain = Stomp::connect(b.stomp).await;
    plain.subscribe("p", Q, "auto", &[]).await;
    assert_eq!(numbers(&mut plain, 10).await, every(2, 30, 3));
    plain.expect_silence(QUIET).await;
    // The selective ones still get theirs, the plain one the rest.
    p.request(send_frame(Q, "late-red", &[("color", "red")]).header("i", "r"))
        .await;
    p.request(send_frame(Q, "late-blue", &[("color", "blue")]).header("i", "b"))
        .await;
    assert_eq!(body(&red.recv_message().await), "late-red");
    assert_eq!(body(&blue.recv_message().await), "late-blue");
    plain.expect_silence(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_match_behind_twenty_thousand_others_arrives_promptly_and_more_keep_flowing() {
    const Q: &str = "/queue/sel.deep";
    const N: usize = 20_000;
    let b = TestBroker::start("").await;
    let mut p = Stomp::connect(b.stomp).await;
    for i in 0..N {
        let f = send_frame(Q, "no", &[("kind", "other")]);
        if i % 1000 == 999 {
            // Receipts come in order: this one says every earlier SEND is in.
            p.request(f).await;
        } else {
            p.send(f).await;
        }
    }
    p.request(send_frame(Q, "wanted-0", &[("kind", "wanted")]))
        .await;
    await_ready(b.http, Q, (N + 1) as u64).await;

    let started = Instant::now();
    let mut c = selective(b.stomp, Q, "client-individual", "kind = 'wanted'").await;
    let m = c.recv_message().await;
    let took = started.elapsed();
    assert_eq!(body(&m), "wanted-0");
    assert!(
        took < Duration::from_secs(2),
        "the match behind {N} others took {took:?}"
    );
    c.ack(&m).await;
    // New matches, mixed with more non-matching ones, keep coming.
    for i in 1..=5 {
        p.send(send_frame(Q, "no", &[("kind", "other")])).await;
        p.request(send_frame(Q, &format!("wanted-{i}"), &[("kind", "wanted")]))
            .await;
        let m = c.recv_message().await;
        assert_eq!(body(&m), format!("wanted-{i}"));
        c.ack(&m).await;
    }
    c.expect_silence(QUIET).await;
    await_ready(b.http, Q, (N + 5) as u64).await;
}

/// With a small memory limit most of a deep queue's bodies are paged out,
/// and a paged-out body cannot be judged until it is read back: a
/// selective consumer must still reach its match behind thousands of
/// stored messages, and what it skipped must stay intact, in order, for a
/// plain consumer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_match_behind_paged_out_messages_arrives_and_the_skipped_ones_stay_in_order() {
    const Q: &str = "/queue/sel.paged";
    const N: usize = 3_000;
    let b = TestBroker::start("[limits]\ndestination-memory-bytes = 65536\n").await;
    let mut p = Stomp::connect(b.stomp).await;
    let filler = "x".repeat(1024);
    for i in 0..N {
        let f = send_frame(Q, &filler, &[("persistent", "true"), ("kind", "other")])
            .header("i", i.to_string());
        if i % 500 == 499 {
            p.request(f).await;
        } else {
            p.send(f).await;
        }
    }
    p.request(send_frame(
        Q,
        "wanted-0",
        &[("persistent", "true"), ("kind", "wanted")],
    ))
    .await;
    let started = Instant::now();
    let mut c = selective(b.stomp, Q, "client-individual", "kind = 'wanted'").await;
    let m = c.recv_message().await;
    let took = started.elapsed();
    assert_eq!(body(&m), "wanted-0");
    assert!(
        took < Duration::from_secs(5),
        "the match behind {N} paged-out messages took {took:?}"
    );
    c.ack(&m).await;
    p.request(send_frame(
        Q,
        "wanted-1",
        &[("persistent", "true"), ("kind", "wanted")],
    ))
    .await;
    let m = c.recv_message().await;
    assert_eq!(body(&m), "wanted-1");
    c.ack(&m).await;
    c.expect_silence(QUIET).await;
    // A plain consumer gets every skipped message, bodies intact, in order.
    let mut plain = Stomp::connect(b.stomp).await;
    plain.subscribe("p", Q, "auto", &[]).await;
    for i in 0..N {
        let Some(m) = plain.recv_within(WAIT).await else {
            panic!("the plain consumer stalled after {i} of {N} messages");
        };
        assert_eq!(hdr(&m, "i"), Some(i.to_string().as_str()), "{m:?}");
        assert_eq!(m.body.len(), 1024);
    }
    plain.expect_silence(QUIET).await;
    c.expect_silence(QUIET).await;
}

/// A selective consumer and a plain one on a deep queue whose bodies are
/// mostly paged out: reading bodies back for the one must not starve the
/// other, and every message goes out exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_selective_and_a_plain_consumer_share_a_paged_queue_each_message_once() {
    const N: usize = 3_000;
    let b = TestBroker::start("[limits]\ndestination-memory-bytes = 65536\n").await;
    let q = "/queue/sel.mixed";
    let mut p = Stomp::connect(b.stomp).await;
    let filler = "x".repeat(1024);
    for i in 0..N {
        let kind = if i % 10 == 0 { "wanted" } else { "other" };
        let f = send_frame(q, &filler, &[("persistent", "true"), ("kind", kind)])
            .header("i", i.to_string());
        if i % 500 == 499 {
            p.request(f).await;
        } else {
            p.send(f).await;
        }
    }
    let mut s = selective(b.stomp, q, "auto", "kind = 'wanted'").await;
    let mut plain = Stomp::connect(b.stomp).await;
    plain
        .subscribe("p", q, "auto", &[("activemq.prefetchSize", "10")])
        .await;
    let started = Instant::now();
    let mut seen = std::collections::BTreeSet::new();
    let mut sel_got = 0;
    while seen.len() < N {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "stalled after {} of {N} (selective: {sel_got})",
            seen.len()
        );
        tokio::select! {
            m = s.recv_within(Duration::from_secs(1)) => if let Some(m) = m {
                assert_eq!(hdr(&m, "kind"), Some("wanted"));
                sel_got += 1;
                assert!(seen.insert(hdr(&m, "i").unwrap().to_owned()));
            },
            m = plain.recv_within(Duration::from_secs(1)) => if let Some(m) = m {
                assert!(seen.insert(hdr(&m, "i").unwrap().to_owned()));
            },
        }
    }
    println!(
        "{N} messages in {:?}, {sel_got} to the selective consumer",
        started.elapsed()
    );
    s.expect_silence(QUIET).await;
    plain.expect_silence(QUIET).await;
}

/// A selector, headers of a message it must not select, headers of one it
/// must.
type Case = (
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static [(&'static str, &'static str)],
);

const CASES: &[Case] = &[
    ("price > 10", &[("price", "9")], &[("price", "12")]),
    ("price > 10", &[("price", "abc")], &[("price", "11")]),
    ("price >= 9.5", &[("price", "9.49")], &[("price", "9.99")]),
    (
        "JMSPriority > 5",
        &[("priority", "3")],
        &[("priority", "7")],
    ),
    ("JMSType = 'x'", &[("type", "y")], &[("type", "x")]),
    (
        "JMSCorrelationID = 'c-1'",
        &[("correlation-id", "c-2")],
        &[("correlation-id", "c-1")],
    ),
    (
        "JMSDeliveryMode = 'PERSISTENT'",
        &[("persistent", "false")],
        &[("persistent", "true")],
    ),
    (
        "JMSDeliveryMode = 'NON_PERSISTENT'",
        &[("persistent", "true")],
        &[],
    ),
    (
        "name LIKE 'ord%'",
        &[("name", "xorder")],
        &[("name", "order-1")],
    ),
    (
        "code LIKE 'a\\_b' ESCAPE '\\'",
        &[("code", "axb")],
        &[("code", "a_b")],
    ),
    (
        "region IN ('eu-1', 'eu-2')",
        &[("region", "us-1")],
        &[("region", "eu-2")],
    ),
    (
        "weight BETWEEN 2 AND 5",
        &[("weight", "7")],
        &[("weight", "3")],
    ),
    ("extra IS NULL", &[("extra", "x")], &[]),
    ("extra IS NOT NULL", &[], &[("extra", "")]),
    (
        "NOT (color = 'red')",
        &[("color", "red")],
        &[("color", "blue")],
    ),
    // A missing header is NULL: neither `=` nor `<>` selects it.
    ("color <> 'red'", &[], &[("color", "blue")]),
    ("NOT color = 'red'", &[], &[("color", "green")]),
    // A header compared with a boolean converts ('true' in any case);
    // a bare string header is no condition (UNKNOWN), as in ActiveMQ.
    (
        "urgent = TRUE AND n > 1",
        &[("urgent", "true"), ("n", "1")],
        &[("urgent", "TRUE"), ("n", "2")],
    ),
    (
        "JMSXGroupID = 'g1'",
        &[("JMSXGroupID", "g2")],
        &[("JMSXGroupID", "g1")],
    ),
];

/// Selectors that select none of these messages' headers.
const NEVER: &[(&str, &[(&str, &str)])] = &[
    // A bare string header is no condition (UNKNOWN), as in ActiveMQ.
    ("urgent", &[("urgent", "true")]),
    // IN, LIKE and arithmetic do not convert strings.
    ("price + 1 > 10", &[("price", "20")]),
    ("n IN ('1')", &[]),
    ("n NOT IN ('1')", &[]),
    ("n NOT LIKE '1%'", &[]),
    ("n NOT BETWEEN 1 AND 2", &[]),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_comparisons_over_stomp_headers_and_jms_header_fields() {
    let b = TestBroker::start("").await;
    let mut c = Stomp::connect(b.stomp).await;
    for (n, (selector, _, _)) in CASES.iter().enumerate() {
        c.subscribe(
            &n.to_string(),
            &format!("/queue/sel.typed.{n}"),
            "auto",
            &[("selector", selector)],
        )
        .await;
    }
    let mut p = Stomp::connect(b.stomp).await;
    for (n, (_, no, yes)) in CASES.iter().enumerate() {
        let q = format!("/queue/sel.typed.{n}");
        p.request(send_frame(&q, "no", no)).await;
        p.request(send_frame(&q, "yes", yes)).await;
    }
    let mut got = vec![0; CASES.len()];
    for _ in 0..CASES.len() {
        let Some(m) = c.recv_within(WAIT).await else {
            let missing: Vec<_> = (0..CASES.len())
                .filter(|&n| got[n] == 0)
                .map(|n| CASES[n].0)
                .collect();
            panic!("no match arrived for {missing:?}");
        };
        let n: usize = hdr(&m, "subscription").unwrap().parse().unwrap();
        assert_eq!(body(&m), "yes", "selector {:?} selected {m:?}", CASES[n].0);
        got[n] += 1;
    }
    for (n, (selector, headers)) in NEVER.iter().enumerate() {
        let q = format!("/queue/sel.never.{n}");
        c.subscribe(&format!("never-{n}"), &q, "auto", &[("selector", selector)])
            .await;
        p.request(send_frame(&q, "never", headers)).await;
    }
    c.expect_silence(QUIET).await;
    assert!(got.iter().all(|&g| g == 1), "{got:?}");
    // Every "no" is still there, selected by nobody.
    for n in 0..CASES.len() {
        await_ready(b.http, &format!("/queue/sel.typed.{n}"), 1).await;
    }
}

/// The header fields the broker sets: `JMSMessageID` is the MESSAGE's
/// `message-id`, `JMSDestination` ActiveMQ's name (`queue://NAME`),
/// `JMSTimestamp` the
/// `timestamp`, `JMSExpiration` the `expires` (0: never).
#[tokio::test]
async fn header_fields_the_broker_sets_select_too() {
    const Q: &str = "/queue/sel.fields";
    let b = TestBroker::start("").await;
    let mut p = Stomp::connect(b.stomp).await;
    let far = "4102444800000"; // 2100-01-01
    p.send_msg(Q, "first", &[]).await;
    p.send_msg(Q, "second", &[("expires", far)]).await;
    // A browser learns the first one's id and timestamp.
    let mut s = Stomp::connect(b.stomp).await;
    s.subscribe("b", Q, "auto", &[("browser", "true")]).await;
    let first = s.recv_message().await;
    assert_eq!(body(&first), "first");
    let id = hdr(&first, "message-id").unwrap().to_owned();
    let ts: u64 = hdr(&first, "timestamp").unwrap().parse().unwrap();
    let cases = [
        (format!("JMSMessageID = '{id}'"), "first"),
        (
            format!("JMSTimestamp = {ts} AND JMSExpiration = 0"),
            "first",
        ),
        (format!("JMSExpiration = {far}"), "second"),
        (
            format!("JMSMessageID <> '{id}' AND JMSTimestamp >= {ts}"),
            "second",
        ),
        (
            format!("JMSDestination = 'queue://sel.fields' AND JMSMessageID = '{id}'"),
            "first",
        ),
    ];
    for (n, (selector, expected)) in cases.iter().enumerate() {
        let mut c = Stomp::connect(b.stomp).await;
        c.subscribe(
            &n.to_string(),
            Q,
            "auto",
            &[("browser", "true"), ("selector", selector)],
        )
        .await;
        let m = c.recv_message().await;
        assert_eq!(body(&m), *expected, "{selector}: {m:?}");
        let end = c.recv_message().await;
        assert_eq!(hdr(&end, "browser"), Some("end"), "{selector}: {end:?}");
    }
}

#[tokio::test]
async fn an_invalid_selector_is_an_error_naming_its_position_then_a_new_connection_works() {
    const Q: &str = "/queue/sel.invalid";
    let b = TestBroker::start("").await;
    let mut c = Stomp::connect(b.stomp).await;
    c.subscribe("ok", Q, "auto", &[("selector", "a = 1")]).await;
    for (selector, position) in [
        ("a = 1 AND", "at position 9"),
        ("color = 'red", "at position 8"),
        ("a == 1", "at position 2"),
    ] {
        let mut s = Stomp::connect(b.stomp).await;
        s.send(frame(
            Command::Subscribe,
            &[
                ("id", "bad"),
                ("destination", Q),
                ("selector", selector),
                ("receipt", "r-bad"),
            ],
        ))
        .await;
        // STOMP requires the close after an ERROR: the head closes.
        let e = s.expect_error().await;
        let text = error_text(&e);
        assert!(
            text.contains("invalid selector") && text.contains(position),
            "{selector:?}: {e:?}"
        );
        assert_eq!(hdr(&e, "receipt-id"), Some("r-bad"), "{e:?}");
    }
    // Others' subscriptions are untouched, and a new connection works.
    let mut p = Stomp::connect(b.stomp).await;
    p.send_msg(Q, "one", &[("a", "1")]).await;
    assert_eq!(body(&c.recv_message().await), "one");
    let mut again = Stomp::connect(b.stomp).await;
    again
        .subscribe("s", Q, "auto", &[("selector", "a = 2")])
        .await;
    p.send_msg(Q, "two", &[("a", "2")]).await;
    assert_eq!(body(&again.recv_message().await), "two");
}

#[tokio::test]
async fn a_selector_over_the_configured_length_is_refused_clearly() {
    let b = TestBroker::start("[selectors]\nmax-length = 64\n").await;
    let fits = format!("a = '{}'", "x".repeat(58));
    assert_eq!(fits.len(), 64);
    let mut c = Stomp::connect(b.stomp).await;
    c.subscribe("fits", "/queue/sel.len", "auto", &[("selector", &fits)])
        .await;
    let long = format!("a = '{}'", "x".repeat(59));
    c.send(frame(
        Command::Subscribe,
        &[
            ("id", "long"),
            ("destination", "/queue/sel.len"),
            ("selector", &long),
        ],
    ))
    .await;
    let e = c.expect_error().await;
    let text = error_text(&e);
    assert!(
        text.contains("at position 0") && text.contains("65 bytes") && text.contains("64 bytes"),
        "{e:?}"
    );
    // The default limit: 4096 bytes.
    let b = TestBroker::start("").await;
    let mut c = Stomp::connect(b.stomp).await;
    let long = format!("a = '{}'", "x".repeat(4096 - 6 + 1));
    c.send(frame(
        Command::Subscribe,
        &[
            ("id", "long"),
            ("destination", "/queue/sel.len"),
            ("selector", &long),
        ],
    ))
    .await;
    let e = c.expect_error().await;
    assert!(
        error_text(&e).contains("4097 bytes long, more than the limit of 4096 bytes"),
        "{e:?}"
    );
}

#[tokio::test]
async fn a_nacked_message_comes_back_to_the_selective_consumer() {
    const Q: &str = "/queue/sel.nack";
    let b = TestBroker::start("").await;
    let mut red = selective(b.stomp, Q, "client-individual", "color = 'red'").await;
    let mut blue = selective(b.stomp, Q, "client-individual", "color = 'blue'").await;
    let mut p = Stomp::connect(b.stomp).await;
    p.send_msg(Q, "r1", &[("color", "red")]).await;
    let m = red.recv_message().await;
    assert_eq!(body(&m), "r1");
    red.nack(&m).await;
    let again = red.recv_message().await;
    assert_eq!(body(&again), "r1");
    assert_eq!(hdr(&again, "redelivered"), Some("true"), "{again:?}");
    assert_eq!(hdr(&again, "delivery-count"), Some("2"), "{again:?}");
    red.ack(&again).await;
    blue.expect_silence(QUIET).await;
    // Left unacknowledged by a consumer that goes, a red one waits for the
    // next red consumer, not the blue one.
    p.send_msg(Q, "r2", &[("color", "red")]).await;
    assert_eq!(body(&red.recv_message().await), "r2");
    red.disconnect().await;
    blue.expect_silence(QUIET).await;
    let mut red2 = selective(b.stomp, Q, "client-individual", "color = 'red'").await;
    let m = red2.recv_message().await;
    assert_eq!(body(&m), "r2");
    assert_eq!(hdr(&m, "redelivered"), Some("true"), "{m:?}");
    red2.ack(&m).await;
    await_ready(b.http, Q, 0).await;
}

/// `JMSRedelivered` and `JMSXDeliveryCount` are the delivery's: a
/// consumer selecting redeliveries gets a message only once another has
/// left it unacknowledged.
#[tokio::test]
async fn a_selector_on_the_delivery_count_takes_redeliveries_only() {
    const Q: &str = "/queue/sel.count";
    let b = TestBroker::start("").await;
    let mut retry = selective(
        b.stomp,
        Q,
        "client-individual",
        "JMSRedelivered AND JMSXDeliveryCount >= 2",
    )
    .await;
    let mut p = Stomp::connect(b.stomp).await;
    p.send_msg(Q, "m1", &[]).await;
    await_ready(b.http, Q, 1).await;
    retry.expect_silence(QUIET).await;
    let mut first = selective(b.stomp, Q, "client-individual", "JMSXDeliveryCount = 1").await;
    assert_eq!(body(&first.recv_message().await), "m1");
    first.disconnect().await;
    let m = retry.recv_message().await;
    assert_eq!(body(&m), "m1");
    assert_eq!(hdr(&m, "delivery-count"), Some("2"), "{m:?}");
    retry.ack(&m).await;
    await_ready(b.http, Q, 0).await;
}

#[tokio::test]
async fn an_ack_rolled_back_comes_back_to_the_selective_consumer() {
    const Q: &str = "/queue/sel.tx";
    let b = TestBroker::start("").await;
    let mut red = selective(b.stomp, Q, "client-individual", "color = 'red'").await;
    let mut plain = Stomp::connect(b.stomp).await;
    plain.subscribe("p", Q, "client-individual", &[]).await;
    let mut p = Stomp::connect(b.stomp).await;
    p.send_msg(Q, "r1", &[("color", "red")]).await;
    let m = red.recv_message().await;
    red.request(frame(Command::Begin, &[("transaction", "t")]))
        .await;
    red.request(frame(
        Command::Ack,
        &[("id", hdr(&m, "ack").unwrap()), ("transaction", "t")],
    ))
    .await;
    red.request(frame(Command::Abort, &[("transaction", "t")]))
        .await;
    let again = red.recv_message().await;
    assert_eq!(body(&again), "r1");
    assert_eq!(hdr(&again, "redelivered"), Some("true"), "{again:?}");
    red.ack(&again).await;
    plain.expect_silence(QUIET).await;
    await_ready(b.http, Q, 0).await;
}

#[tokio::test]
async fn a_queue_browser_with_a_selector_is_shown_only_what_it_selects_and_takes_nothing() {
    const Q: &str = "/queue/sel.browse";
    let b = TestBroker::start("").await;
    let mut p = Stomp::connect(b.stomp).await;
    for i in 0..10 {
        let f =
            send_frame(Q, &format!("m{i}"), &[("n", &i.to_string())]).header("i", i.to_string());
        p.request(f).await;
    }
    let mut s = Stomp::connect(b.stomp).await;
    s.subscribe(
        "b",
        Q,
        "auto",
        &[("browser", "true"), ("selector", "n >= 3 AND n < 7")],
    )
    .await;
    let mut shown = Vec::new();
    loop {
        let m = s.recv_message().await;
        if hdr(&m, "browser") == Some("end") {
            break;
        }
        shown.push(hdr(&m, "i").unwrap().to_owned());
    }
    assert_eq!(shown, every(3, 7, 1));
    s.expect_silence(QUIET).await;
    await_ready(b.http, Q, 10).await;
    let mut c = Stomp::connect(b.stomp).await;
    c.subscribe("c", Q, "auto", &[]).await;
    assert_eq!(numbers(&mut c, 10).await, every(0, 10, 1));
}

#[tokio::test]
async fn wildcard_and_composite_queue_subscriptions_apply_their_selector_to_every_queue() {
    let b = TestBroker::start("").await;
    let mut p = Stomp::connect(b.stomp).await;
    // Queues that exist before the subscription, and one made after.
    p.send_msg("/queue/selw.a", "a-no", &[("k", "0")]).await;
    p.send_msg("/queue/selw.a", "a-yes", &[("k", "1")]).await;
    let mut w = selective(b.stomp, "/queue/selw.>", "auto", "k = 1").await;
    assert_eq!(body(&w.recv_message().await), "a-yes");
    p.send_msg("/queue/selw.b.c", "bc-no", &[("k", "2")]).await;
    p.send_msg("/queue/selw.b.c", "bc-yes", &[("k", "1")]).await;
    let m = w.recv_message().await;
    assert_eq!(body(&m), "bc-yes");
    assert_eq!(hdr(&m, "destination"), Some("/queue/selw.b.c"));
    w.expect_silence(QUIET).await;

    let mut l = selective(b.stomp, "/queue/sell.a,/queue/sell.b", "auto", "k = 1").await;
    for q in ["/queue/sell.a", "/queue/sell.b"] {
        p.send_msg(q, "no", &[("k", "0")]).await;
        p.send_msg(q, q, &[("k", "1")]).await;
        let m = l.recv_message().await;
        assert_eq!(body(&m), q);
        assert_eq!(hdr(&m, "subscription"), Some("s"));
    }
    l.expect_silence(QUIET).await;
    for q in [
        "/queue/selw.a",
        "/queue/selw.b.c",
        "/queue/sell.a",
        "/queue/sell.b",
    ] {
        await_ready(b.http, q, 1).await;
    }
}

/// Halyard's failover client restores a selective queue subscription
/// (selector included) on the slave that takes over after `kill -9`: it
/// goes on getting only its matches, and the others wait in the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_client_keeps_its_selector_across_a_kill_9_takeover() {
    use halyard_client::{AckMode, Client, SubscribeOptions};
    const Q: &str = "/queue/sel.failover";
    let (mut c, a, b) = pair(Store::Journal, "sel_failover").await;
    let addrs = c.stomp_addrs();
    let url = format!(
        "failover:(stomp://{},stomp://{})?randomize=false&initialReconnectDelay=10&maxReconnectDelay=200",
        addrs[0], addrs[1]
    );
    let client = Client::connect(&url).await.unwrap();
    let mut sub = client
        .subscribe(
            Q,
            SubscribeOptions {
                headers: vec![("selector".to_owned(), "color = 'red'".to_owned())],
                ..SubscribeOptions::default().ack(AckMode::ClientIndividual)
            },
        )
        .await
        .unwrap();
    let mut next = async || {
        let m = tokio::time::timeout(WAIT, sub.next())
            .await
            .expect("a message in time")
            .expect("the subscription lives");
        client.ack(&m).await.unwrap();
        m.text().unwrap_or_default().to_owned()
    };
    let mut p = Stomp::connect(c.nodes[a].stomp).await;
    for (text, color) in [("r1", "red"), ("b1", "blue"), ("r2", "red")] {
        p.send_msg(Q, text, &[("persistent", "true"), ("color", color)])
            .await;
    }
    assert_eq!([next().await, next().await], ["r1", "r2"]);
    take_over(&mut c, a, b).await;
    let mut p = connect_to_any(&addrs, &[]).await;
    for (text, color) in [("b2", "blue"), ("r3", "red"), ("b3", "blue"), ("r4", "red")] {
        p.send_msg(Q, text, &[("persistent", "true"), ("color", color)])
            .await;
    }
    assert_eq!([next().await, next().await], ["r3", "r4"]);
    // The blues are all still there, for a consumer without a selector.
    let mut plain = connect_to_any(&addrs, &[]).await;
    plain.subscribe("p", Q, "auto", &[]).await;
    let blues: Vec<String> = [
        plain.recv_message().await,
        plain.recv_message().await,
        plain.recv_message().await,
    ]
    .iter()
    .map(body)
    .collect();
    assert_eq!(blues, ["b1", "b2", "b3"]);
    plain.expect_silence(QUIET).await;
    assert!(
        tokio::time::timeout(QUIET, sub.next()).await.is_err(),
        "the selective subscription got more"
    );
}

// ---------------------------------------------------------------------------
// 2. Topics
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_topic_subscriber_with_a_selector_gets_only_matches_one_without_gets_all() {
    const T: &str = "/topic/sel.prices";
    let b = TestBroker::start("").await;
    let mut big = selective(b.stomp, T, "auto", "price > 100").await;
    let mut eur = selective(b.stomp, T, "auto", "cur = 'EUR' AND price <= 100").await;
    let mut all = Stomp::connect(b.stomp).await;
    all.subscribe("s", T, "auto", &[]).await;
    let mut p = Stomp::connect(b.stomp).await;
    let sent = [
        ("EUR", "50"),
        ("USD", "150"),
        ("EUR", "101"),
        ("USD", "5"),
        ("EUR", "100"),
    ];
    for (i, (cur, price)) in sent.iter().enumerate() {
        p.request(
            send_frame(T, &format!("m{i}"), &[("cur", cur), ("price", price)])
                .header("i", i.to_string()),
        )
        .await;
    }
    assert_eq!(numbers(&mut big, 2).await, ["1", "2"]);
    assert_eq!(numbers(&mut eur, 2).await, ["0", "4"]);
    assert_eq!(numbers(&mut all, 5).await, every(0, 5, 1));
    big.expect_silence(QUIET).await;
    eur.expect_silence(QUIET).await;
    all.expect_silence(QUIET).await;
}

// ---------------------------------------------------------------------------
// 3. Durable subscriptions
// ---------------------------------------------------------------------------

/// Connects with this client id, retrying while the broker still holds it
/// for a connection that was just dropped.
async fn durable_client(addr: SocketAddr, client_id: &str) -> Stomp {
    let headers = [
        ("accept-version", "1.2"),
        ("host", "localhost"),
        ("client-id", client_id),
    ];
    let headers = &headers;
    eventually(WAIT, "the client-id to be free", || async move {
        match Stomp::try_connect_with(addr, headers).await {
            Ok(s) => Some(s),
            Err(e) if error_text(&e).contains("already connected") => None,
            Err(e) => panic!("CONNECT refused: {e:?}"),
        }
    })
    .await
}

const DT: &str = "/topic/sel.durable";

/// SUBSCRIBE headers of the durable subscription `name` with `selector`.
fn durable_sub<'a>(name: &'a str, selector: &'a str) -> [(&'a str, &'a str); 2] {
    [("activemq.subscriptionName", name), ("selector", selector)]
}

/// Publishes `n` persistent messages to [`DT`], alternating `color:red`
/// and `color:blue` (even `i` red), bodies `{prefix}{i}`.
async fn publish_colors(p: &mut Stomp, prefix: &str, n: usize) {
    for i in 0..n {
        let color = if i % 2 == 0 { "red" } else { "blue" };
        p.request(send_frame(
            DT,
            &format!("{prefix}{i}"),
            &[("persistent", "true"), ("color", color)],
        ))
        .await;
    }
}

/// The next `n` MESSAGE bodies, each acknowledged.
async fn take_acked(s: &mut Stomp, n: usize) -> Vec<String> {
    let mut v = Vec::new();
    for _ in 0..n {
        let m = s.recv_message().await;
        v.push(body(&m));
        s.ack(&m).await;
    }
    v
}

#[tokio::test]
async fn a_durable_subscription_keeps_only_matches_and_another_selector_makes_it_anew() {
    let b = TestBroker::start("").await;
    let sub = durable_sub("reds", "color = 'red'");
    let mut s = durable_client(b.stomp, "sel-dur").await;
    s.subscribe("d", DT, "client-individual", &sub).await;
    s.disconnect().await;
    let mut p = Stomp::connect(b.stomp).await;
    publish_colors(&mut p, "a", 6).await;

    // The same selector: what was kept is there, only the reds.
    let mut s = durable_client(b.stomp, "sel-dur").await;
    s.subscribe("d", DT, "client-individual", &sub).await;
    assert_eq!(take_acked(&mut s, 3).await, ["a0", "a2", "a4"]);
    s.expect_silence(QUIET).await;
    s.disconnect().await;

    publish_colors(&mut p, "b", 4).await;
    // Another selector: the subscription is made anew, empty (ActiveMQ).
    let blues = durable_sub("reds", "color = 'blue'");
    let mut s = durable_client(b.stomp, "sel-dur").await;
    s.subscribe("d", DT, "client-individual", &blues).await;
    s.expect_silence(QUIET).await;
    publish_colors(&mut p, "c", 4).await;
    assert_eq!(take_acked(&mut s, 2).await, ["c1", "c3"]);
    s.expect_silence(QUIET).await;
    s.disconnect().await;

    // No selector at all is a change too: anew, and then it takes all.
    publish_colors(&mut p, "d", 2).await;
    let mut s = durable_client(b.stomp, "sel-dur").await;
    s.subscribe(
        "d",
        DT,
        "client-individual",
        &[("activemq.subscriptionName", "reds")],
    )
    .await;
    s.expect_silence(QUIET).await;
    publish_colors(&mut p, "e", 2).await;
    assert_eq!(take_acked(&mut s, 2).await, ["e0", "e1"]);
}

/// A durable subscription with a selector keeps only its matches while
/// away, across `kill -9` and a restart, and the restored subscription
/// keeps applying the selector (and a changed selector still makes it
/// anew after the restart).
async fn durable_selector_across_restart(store: Store) {
    let mut b = BrokerProcess::start(&store.toml("sel_durable_restart").await).await;
    let sub = durable_sub("reds", "color = 'red'");
    let mut s = durable_client(b.stomp, "sel-restart").await;
    s.subscribe("d", DT, "client-individual", &sub).await;
    s.disconnect().await;
    let mut p = Stomp::connect(b.stomp).await;
    publish_colors(&mut p, "a", 4).await;
    b.kill();
    b.restart().await;

    // Restored with its selector: only reds are kept while it is away.
    let mut p = Stomp::connect(b.stomp).await;
    publish_colors(&mut p, "b", 4).await;
    let mut s = durable_client(b.stomp, "sel-restart").await;
    s.subscribe("d", DT, "client-individual", &sub).await;
    assert_eq!(take_acked(&mut s, 4).await, ["a0", "a2", "b0", "b2"]);
    s.expect_silence(QUIET).await;
    s.disconnect().await;

    publish_colors(&mut p, "c", 2).await;
    b.kill();
    b.restart().await;
    // After the restart another selector still makes it anew.
    let mut s = durable_client(b.stomp, "sel-restart").await;
    s.subscribe(
        "d",
        DT,
        "client-individual",
        &durable_sub("reds", "color = 'blue'"),
    )
    .await;
    s.expect_silence(QUIET).await;
    s.disconnect().await;
    let mut p = Stomp::connect(b.stomp).await;
    publish_colors(&mut p, "d", 4).await;
    b.kill();
    b.restart().await;
    // ...and that new selector is what was stored.
    let mut s = durable_client(b.stomp, "sel-restart").await;
    s.subscribe(
        "d",
        DT,
        "client-individual",
        &durable_sub("reds", "color = 'blue'"),
    )
    .await;
    assert_eq!(take_acked(&mut s, 2).await, ["d1", "d3"]);
    s.expect_silence(QUIET).await;
}

/// A stored selector is read back as it was accepted: a `max-length`
/// lowered since does not make the subscription keep everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_selector_outlives_a_lower_length_limit() {
    let mut b = BrokerProcess::start("").await;
    let mut s = durable_client(b.stomp, "sel-limit").await;
    s.subscribe(
        "d",
        DT,
        "client-individual",
        &durable_sub("reds", "color = 'red'"),
    )
    .await;
    s.disconnect().await;
    std::fs::write(
        b.dir.path().join("halyard.toml"),
        "[selectors]\nmax-length = 5\n",
    )
    .unwrap();
    b.kill();
    b.restart().await;
    let mut p = Stomp::connect(b.stomp).await;
    // Receipted: the subscription's copies are in before each receipt.
    publish_colors(&mut p, "a", 4).await;
    let stats = dest_stats(b.http, DT)
        .await
        .expect("the topic's statistics");
    assert_eq!(stats["ready"], 2, "only the reds are kept: {stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_selector_survives_kill_9_and_restart_on_the_journal() {
    durable_selector_across_restart(Store::Journal).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_selector_survives_kill_9_and_restart_on_postgres() {
    durable_selector_across_restart(Store::Postgres).await;
}

/// A durable subscription with a selector on a master/slave pair: the
/// slave that takes over after `kill -9` keeps applying it.
async fn durable_selector_across_takeover(store: Store) {
    const CLIENT: &[(&str, &str)] = &[("client-id", "sel-ha")];
    let sub = durable_sub("ha-reds", "color = 'red'");
    let (mut c, a, b) = pair(store, "sel_ha_durable").await;
    let addrs = c.stomp_addrs();
    let mut s = connect_to_any(&addrs, CLIENT).await;
    s.subscribe("d", DT, "client-individual", &sub).await;
    s.disconnect().await;
    let mut p = Stomp::connect(c.nodes[a].stomp).await;
    publish_colors(&mut p, "before", 4).await;
    take_over(&mut c, a, b).await;
    let mut p = connect_to_any(&addrs, &[]).await;
    publish_colors(&mut p, "after", 4).await;

    let mut s = connect_to_any(&addrs, CLIENT).await;
    s.subscribe("d", DT, "client-individual", &sub).await;
    assert_eq!(
        take_acked(&mut s, 4).await,
        ["before0", "before2", "after0", "after2"]
    );
    s.expect_silence(QUIET).await;
    // Attached, it gets new matches at once, and only those.
    publish_colors(&mut p, "live", 2).await;
    assert_eq!(take_acked(&mut s, 1).await, ["live0"]);
    s.expect_silence(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_selector_survives_a_kill_9_takeover_on_the_journal() {
    durable_selector_across_takeover(Store::Journal).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_selector_survives_a_kill_9_takeover_on_postgres() {
    durable_selector_across_takeover(Store::Postgres).await;
}
