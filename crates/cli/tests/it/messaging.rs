//! Queues, topics and temporary queues, against an in-process broker.

use std::collections::HashSet;
use std::time::Duration;

use crate::support::inproc::TestBroker;
use halyard_stomp::{Command, Frame};
use halyard_testkit::stomp::{Stomp, body};

#[tokio::test]
async fn queue_delivers_in_order_with_broker_headers() {
    let b = TestBroker::start("").await;
    let mut p = Stomp::connect(b.stomp).await;
    for i in 0..5 {
        p.send_msg("/queue/orders", &format!("m{i}"), &[("color", "blue")])
            .await;
    }
    let mut c = Stomp::connect(b.stomp).await;
    c.subscribe("s1", "/queue/orders", "auto", &[]).await;
    for i in 0..5 {
        let m = c.recv_message().await;
        assert_eq!(body(&m), format!("m{i}"));
        assert_eq!(m.headers.get("destination"), Some("/queue/orders"));
        assert_eq!(m.headers.get("subscription"), Some("s1"));
        assert_eq!(m.headers.get("color"), Some("blue"));
        assert!(m.headers.get("message-id").unwrap().starts_with("ID:"));
        assert!(m.headers.get("timestamp").unwrap().parse::<u64>().unwrap() > 0);
        assert_eq!(
            m.headers.get("receipt"),
            None,
            "frame headers must not leak"
        );
        assert_eq!(
            m.headers.get("ack"),
            None,
            "auto subscriptions get no ack header"
        );
    }
}

#[tokio::test]
async fn competing_consumers_share_a_queue_round_robin() {
    let b = TestBroker::start("").await;
    let mut c1 = Stomp::connect(b.stomp).await;
    let mut c2 = Stomp::connect(b.stomp).await;
    c1.subscribe("a", "/queue/work", "client-individual", &[])
        .await;
    c2.subscribe("b", "/queue/work", "client-individual", &[])
        .await;
    let mut p = Stomp::connect(b.stomp).await;
    for i in 0..10 {
        p.send_msg("/queue/work", &i.to_string(), &[]).await;
    }
    let mut seen = HashSet::new();
    for _ in 0..5 {
        let m = c1.recv_message().await;
        assert!(seen.insert(body(&m)));
        c1.ack(&m).await;
        let m = c2.recv_message().await;
        assert!(seen.insert(body(&m)));
        c2.ack(&m).await;
    }
    assert_eq!(seen.len(), 10);
    c1.expect_silence(Duration::from_millis(200)).await;
    c2.expect_silence(Duration::from_millis(10)).await;
}

#[tokio::test]
async fn topic_gives_every_subscriber_a_copy() {
    let b = TestBroker::start("").await;
    let mut subs = Vec::new();
    for i in 0..3 {
        let mut s = Stomp::connect(b.stomp).await;
        s.subscribe(&format!("t{i}"), "/topic/news", "auto", &[])
            .await;
        subs.push(s);
    }
    let mut p = Stomp::connect(b.stomp).await;
    p.send_msg("/topic/news", "hello", &[]).await;
    p.send_msg("/topic/news", "world", &[]).await;
    for s in &mut subs {
        assert_eq!(body(&s.recv_message().await), "hello");
        let m = s.recv_message().await;
        assert_eq!(body(&m), "world");
        assert_eq!(m.headers.get("destination"), Some("/topic/news"));
    }
    // A subscriber that joins later does not see earlier messages.
    let mut late = Stomp::connect(b.stomp).await;
    late.subscribe("late", "/topic/news", "auto", &[]).await;
    late.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn two_subscriptions_on_one_connection_each_get_a_topic_copy() {
    let b = TestBroker::start("").await;
    let mut s = Stomp::connect(b.stomp).await;
    s.subscribe("x", "/topic/t", "client-individual", &[]).await;
    s.subscribe("y", "/topic/t", "client-individual", &[]).await;
    let mut p = Stomp::connect(b.stomp).await;
    p.send_msg("/topic/t", "once", &[]).await;
    let m1 = s.recv_message().await;
    let m2 = s.recv_message().await;
    let subs: HashSet<_> = [
        m1.headers.get("subscription"),
        m2.headers.get("subscription"),
    ]
    .into_iter()
    .flatten()
    .map(str::to_owned)
    .collect();
    assert_eq!(subs.len(), 2);
    assert_ne!(m1.headers.get("ack"), m2.headers.get("ack"));
    s.ack(&m1).await;
    s.ack(&m2).await;
}

#[tokio::test]
async fn temp_queue_reply_to_is_rewritten_and_dies_with_its_connection() {
    let b = TestBroker::start("").await;
    let mut requester = Stomp::connect(b.stomp).await;
    requester
        .subscribe("replies", "/temp-queue/replies", "auto", &[])
        .await;
    requester
        .send_msg(
            "/queue/requests",
            "ping",
            &[("reply-to", "/temp-queue/replies")],
        )
        .await;

    let mut server = Stomp::connect(b.stomp).await;
    server
        .subscribe("req", "/queue/requests", "auto", &[])
        .await;
    let req = server.recv_message().await;
    let reply_to = req.headers.get("reply-to").unwrap().to_owned();
    assert!(
        reply_to.starts_with("/remote-temp-queue/"),
        "reply-to not rewritten: {reply_to}"
    );
    server.send_msg(&reply_to, "pong", &[]).await;
    let reply = requester.recv_message().await;
    assert_eq!(body(&reply), "pong");
    assert_eq!(
        reply.headers.get("destination"),
        Some("/temp-queue/replies")
    );

    // Another connection may not consume from it.
    let mut thief = Stomp::connect(b.stomp).await;
    thief
        .send(
            Frame::new(Command::Subscribe)
                .header("id", "x")
                .header("destination", reply_to.as_str()),
        )
        .await;
    let e = thief.expect_error().await;
    assert!(
        e.headers
            .get("message")
            .unwrap()
            .contains("temporary destination")
    );

    // Once the requester is gone, replies are dropped but still receipted.
    requester.disconnect().await;
    server.send_msg(&reply_to, "late", &[]).await;
}

#[tokio::test]
async fn priority_orders_a_backlog() {
    let b = TestBroker::start("").await;
    let mut p = Stomp::connect(b.stomp).await;
    for (body, prio) in [
        ("low", "1"),
        ("mid", "4"),
        ("high", "9"),
        ("mid2", "4"),
        ("high2", "9"),
    ] {
        p.send_msg("/queue/prio", body, &[("priority", prio)]).await;
    }
    let mut c = Stomp::connect(b.stomp).await;
    c.subscribe("s", "/queue/prio", "auto", &[]).await;
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(body(&c.recv_message().await));
    }
    assert_eq!(got, ["high", "high2", "mid", "mid2", "low"]);
}

#[tokio::test]
async fn expired_messages_are_never_delivered() {
    let b = TestBroker::start("[destinations]\nexpiry-check-ms = 50\n").await;
    let mut p = Stomp::connect(b.stomp).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let past = (now - 1000).to_string();
    let soon = (now + 300).to_string();
    let later = (now + 600_000).to_string();
    p.send_msg("/queue/exp", "already-expired", &[("expires", &past)])
        .await;
    p.send_msg("/queue/exp", "expires-soon", &[("expires", &soon)])
        .await;
    p.send_msg("/queue/exp", "fresh", &[("expires", &later)])
        .await;
    p.send_msg("/queue/exp", "forever", &[("expires", "0")])
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut c = Stomp::connect(b.stomp).await;
    c.subscribe("s", "/queue/exp", "auto", &[]).await;
    assert_eq!(body(&c.recv_message().await), "fresh");
    assert_eq!(body(&c.recv_message().await), "forever");
    c.expect_silence(Duration::from_millis(200)).await;
    // Expired messages are dropped, not dead-lettered, unless configured.
    let mut d = Stomp::connect(b.stomp).await;
    d.subscribe("d", "/queue/DLQ.exp", "auto", &[]).await;
    d.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn expired_messages_go_to_the_dlq_when_configured() {
    let b = TestBroker::start("[destinations]\ndead-letter-expired = true\nexpiry-check-ms = 50\n")
        .await;
    let mut p = Stomp::connect(b.stomp).await;
    p.send_msg("/queue/e2", "old", &[("expires", "1")]).await;
    let mut d = Stomp::connect(b.stomp).await;
    d.subscribe("d", "/queue/DLQ.e2", "auto", &[]).await;
    let m = d.recv_message().await;
    assert_eq!(body(&m), "old");
    assert_eq!(m.headers.get("original-destination"), Some("/queue/e2"));
    assert_eq!(m.headers.get("dlqDeliveryFailureCause"), Some("expired"));
}

#[tokio::test]
async fn persistent_send_is_receipted_and_delivered() {
    let b = TestBroker::start("").await;
    let mut p = Stomp::connect(b.stomp).await;
    p.send_msg("/queue/p", "durable", &[("persistent", "true")])
        .await;
    let mut c = Stomp::connect(b.stomp).await;
    c.subscribe("s", "/queue/p", "client", &[]).await;
    let m = c.recv_message().await;
    assert_eq!(body(&m), "durable");
    assert_eq!(m.headers.get("persistent"), Some("true"));
    c.ack(&m).await;
}
