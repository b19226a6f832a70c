//! Acknowledgement, redelivery, dead-lettering and transactions, against an
//! in-process broker.

use std::time::Duration;

use crate::support::inproc::TestBroker;
use halyard_stomp::{Command, Frame};
use halyard_testkit::stomp::{Stomp, body};

async fn fill(b: &TestBroker, dest: &str, n: usize) {
    let mut p = Stomp::connect(b.stomp).await;
    for i in 0..n {
        p.send_msg(dest, &format!("m{i}"), &[]).await;
    }
    p.disconnect().await;
}

#[tokio::test]
async fn unacked_messages_return_to_the_head_in_order_when_the_consumer_leaves() {
    let b = TestBroker::start("").await;
    fill(&b, "/queue/r", 6).await;
    let mut c = Stomp::connect(b.stomp).await;
    c.subscribe(
        "s",
        "/queue/r",
        "client-individual",
        &[("activemq.prefetchSize", "4")],
    )
    .await;
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(c.recv_message().await);
    }
    // Prefetch bounds what is in flight.
    c.expect_silence(Duration::from_millis(200)).await;
    c.ack(&got[1]).await;
    assert_eq!(body(&c.recv_message().await), "m4");
    drop(c); // connection dropped without DISCONNECT
    // The broker sees the end of the connection in its own time: a new
    // consumer that came first would be handed m5, the one message the
    // first did not hold, before the returned ones are back at the head.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let d = crate::support::dest_stats(b.http, "/queue/r").await;
        if d.as_ref()
            .is_some_and(|d| d["consumers"] == 0 && d["inflight"] == 0)
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the first consumer did not go: {d:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let mut c2 = Stomp::connect(b.stomp).await;
    c2.subscribe("s", "/queue/r", "client-individual", &[])
        .await;
    let expect = [
        ("m0", true),
        ("m2", true),
        ("m3", true),
        ("m4", true),
        ("m5", false),
    ];
    for (text, redelivered) in expect {
        let m = c2.recv_message().await;
        assert_eq!(body(&m), text);
        assert_eq!(
            m.headers.get("redelivered") == Some("true"),
            redelivered,
            "{m:?}"
        );
        if redelivered {
            assert_eq!(m.headers.get("delivery-count"), Some("2"));
        }
        c2.ack(&m).await;
    }
    c2.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn unsubscribe_returns_unacked_messages() {
    let b = TestBroker::start("").await;
    fill(&b, "/queue/u", 2).await;
    let mut c = Stomp::connect(b.stomp).await;
    c.subscribe("s", "/queue/u", "client", &[]).await;
    c.recv_message().await;
    c.recv_message().await;
    c.request(Frame::new(Command::Unsubscribe).header("id", "s"))
        .await;
    c.subscribe("s2", "/queue/u", "client", &[]).await;
    let m = c.recv_message().await;
    assert_eq!(body(&m), "m0");
    assert_eq!(m.headers.get("redelivered"), Some("true"));
}

#[tokio::test]
async fn nack_redelivers_then_dead_letters_after_max_redeliveries() {
    let b = TestBroker::start("[destinations]\nmax-redeliveries = 2\n").await;
    let mut p = Stomp::connect(b.stomp).await;
    p.send_msg(
        "/queue/poison",
        "bad",
        &[("persistent", "true"), ("k", "v")],
    )
    .await;
    p.send_msg("/queue/poison", "good", &[]).await;
    let mut c = Stomp::connect(b.stomp).await;
    c.subscribe(
        "s",
        "/queue/poison",
        "client-individual",
        &[("activemq.prefetchSize", "1")],
    )
    .await;
    // Delivered 1 + 2 redeliveries = 3 times, then dead-lettered.
    for n in 1..=3 {
        let m = c.recv_message().await;
        assert_eq!(body(&m), "bad");
        if n > 1 {
            assert_eq!(m.headers.get("redelivered"), Some("true"));
            assert_eq!(
                m.headers.get("delivery-count"),
                Some(n.to_string().as_str())
            );
        }
        c.nack(&m).await;
    }
    let m = c.recv_message().await;
    assert_eq!(body(&m), "good");
    c.ack(&m).await;

    let mut d = Stomp::connect(b.stomp).await;
    d.subscribe("d", "/queue/DLQ.poison", "client", &[]).await;
    let m = d.recv_message().await;
    assert_eq!(body(&m), "bad");
    assert_eq!(m.headers.get("k"), Some("v"));
    assert_eq!(m.headers.get("persistent"), Some("true"));
    assert_eq!(m.headers.get("original-destination"), Some("/queue/poison"));
    assert!(
        m.headers
            .get("dlqDeliveryFailureCause")
            .unwrap()
            .contains("max-redeliveries"),
        "{m:?}"
    );
    d.ack(&m).await;
}

#[tokio::test]
async fn dead_letter_queues_keep_rejected_messages() {
    let b = TestBroker::start("[destinations]\nmax-redeliveries = 0\n").await;
    let mut p = Stomp::connect(b.stomp).await;
    p.send_msg("/queue/DLQ.x", "stuck", &[]).await;
    let mut c = Stomp::connect(b.stomp).await;
    c.subscribe("s", "/queue/DLQ.x", "client-individual", &[])
        .await;
    for _ in 0..3 {
        let m = c.recv_message().await;
        assert_eq!(body(&m), "stuck");
        c.nack(&m).await;
    }
}

#[tokio::test]
async fn transaction_sends_become_visible_only_at_commit() {
    let b = TestBroker::start("").await;
    let mut c = Stomp::connect(b.stomp).await;
    c.subscribe("s", "/queue/tx", "auto", &[]).await;
    let mut p = Stomp::connect(b.stomp).await;
    p.request(Frame::new(Command::Begin).header("transaction", "t1"))
        .await;
    for i in 0..3 {
        p.send_msg("/queue/tx", &format!("a{i}"), &[("transaction", "t1")])
            .await;
    }
    c.expect_silence(Duration::from_millis(200)).await;
    p.request(Frame::new(Command::Commit).header("transaction", "t1"))
        .await;
    for i in 0..3 {
        assert_eq!(body(&c.recv_message().await), format!("a{i}"));
    }

    p.request(Frame::new(Command::Begin).header("transaction", "t2"))
        .await;
    p.send_msg("/queue/tx", "never", &[("transaction", "t2")])
        .await;
    p.request(Frame::new(Command::Abort).header("transaction", "t2"))
        .await;
    c.expect_silence(Duration::from_millis(200)).await;

    // A transaction left open when the connection drops is aborted.
    p.request(Frame::new(Command::Begin).header("transaction", "t3"))
        .await;
    p.send_msg("/queue/tx", "dropped", &[("transaction", "t3")])
        .await;
    drop(p);
    c.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn acks_in_an_aborted_transaction_are_redelivered_and_committed_ones_are_not() {
    let b = TestBroker::start("").await;
    fill(&b, "/queue/txa", 3).await;
    let mut c = Stomp::connect(b.stomp).await;
    c.subscribe("s", "/queue/txa", "client-individual", &[])
        .await;
    let m0 = c.recv_message().await;
    let m1 = c.recv_message().await;
    let m2 = c.recv_message().await;
    c.request(Frame::new(Command::Begin).header("transaction", "t"))
        .await;
    for m in [&m0, &m1] {
        c.request(
            Frame::new(Command::Ack)
                .header("id", m.headers.get("ack").unwrap())
                .header("transaction", "t"),
        )
        .await;
    }
    c.request(Frame::new(Command::Abort).header("transaction", "t"))
        .await;
    // Aborted acks: m0 and m1 come back (m2 is still held by us).
    let r0 = c.recv_message().await;
    let r1 = c.recv_message().await;
    assert_eq!((body(&r0), body(&r1)), ("m0".into(), "m1".into()));
    assert_eq!(r0.headers.get("redelivered"), Some("true"));

    c.request(Frame::new(Command::Begin).header("transaction", "t2"))
        .await;
    for m in [&r0, &r1, &m2] {
        c.request(
            Frame::new(Command::Ack)
                .header("id", m.headers.get("ack").unwrap())
                .header("transaction", "t2"),
        )
        .await;
    }
    c.request(Frame::new(Command::Commit).header("transaction", "t2"))
        .await;
    drop(c);
    let mut c2 = Stomp::connect(b.stomp).await;
    c2.subscribe("s", "/queue/txa", "auto", &[]).await;
    c2.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn transaction_spanning_queues_and_acks_commits_together() {
    let b = TestBroker::start("").await;
    fill(&b, "/queue/in", 1).await;
    let mut w = Stomp::connect(b.stomp).await;
    w.subscribe("in", "/queue/in", "client-individual", &[])
        .await;
    let m = w.recv_message().await;
    w.request(Frame::new(Command::Begin).header("transaction", "t"))
        .await;
    w.send_msg(
        "/queue/out1",
        "x",
        &[("transaction", "t"), ("persistent", "true")],
    )
    .await;
    w.send_msg("/queue/out2", "y", &[("transaction", "t")])
        .await;
    w.request(
        Frame::new(Command::Ack)
            .header("id", m.headers.get("ack").unwrap())
            .header("transaction", "t"),
    )
    .await;
    w.request(Frame::new(Command::Commit).header("transaction", "t"))
        .await;
    let mut c = Stomp::connect(b.stomp).await;
    c.subscribe("o1", "/queue/out1", "auto", &[]).await;
    c.subscribe("o2", "/queue/out2", "auto", &[]).await;
    let a = body(&c.recv_message().await);
    let bb = body(&c.recv_message().await);
    let mut got = [a, bb];
    got.sort();
    assert_eq!(got, ["x".to_string(), "y".to_string()]);
    drop(w);
    c.subscribe("in", "/queue/in", "auto", &[]).await;
    c.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn producer_flow_control_holds_receipts_until_the_queue_drains() {
    // A tiny memory limit: the queue stops accepting after a few messages
    // (plus what fits in its publish channel).
    let b = TestBroker::start("[limits]\ndestination-memory-bytes = 4096\n").await;
    let mut p = Stomp::connect(b.stomp).await;
    let big = "x".repeat(1024);
    for _ in 0..100 {
        p.send(
            Frame::new(Command::Send)
                .header("destination", "/queue/full")
                .body(big.clone().into_bytes()),
        )
        .await;
    }
    p.send(
        Frame::new(Command::Send)
            .header("destination", "/queue/full")
            .header("receipt", "last")
            .body(&b"end"[..]),
    )
    .await;
    // The queue is over its limit: no receipt yet.
    assert!(p.recv_within(Duration::from_millis(300)).await.is_none());
    let mut c = Stomp::connect(b.stomp).await;
    c.subscribe("s", "/queue/full", "auto", &[]).await;
    for _ in 0..100 {
        assert_eq!(c.recv_message().await.body.len(), 1024);
    }
    assert_eq!(body(&c.recv_message().await), "end");
    let r = p.recv().await;
    assert_eq!(r.command, Command::Receipt);
    assert_eq!(r.headers.get("receipt-id"), Some("last"));
}

#[tokio::test]
async fn a_1_2_ack_naming_the_message_id_is_accepted() {
    // ActiveMQ-era clients often put the message-id in a 1.2 ACK's `id`.
    let b = TestBroker::start("").await;
    fill(&b, "/queue/mid", 2).await;
    let mut c = Stomp::connect(b.stomp).await;
    c.subscribe("s", "/queue/mid", "client-individual", &[])
        .await;
    let m0 = c.recv_message().await;
    let m1 = c.recv_message().await;
    c.request(Frame::new(Command::Ack).header("id", m1.headers.get("message-id").unwrap()))
        .await;
    drop(c);
    let mut c2 = Stomp::connect(b.stomp).await;
    c2.subscribe("s", "/queue/mid", "auto", &[]).await;
    assert_eq!(body(&c2.recv_message().await), body(&m0));
    c2.expect_silence(Duration::from_millis(200)).await;
}
