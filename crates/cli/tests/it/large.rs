//! Large messages with the default configuration (the `halyard` binary,
//! no settings): bodies up to ActiveMQ's 100 MiB frame, held once in
//! memory however many subscribers they go to, and kept by the journal
//! across a restart.

use std::time::{Duration, Instant};

use bytes::Bytes;
use halyard_stomp::{Command, Frame};
use halyard_testkit::metrics::metric_at;
use halyard_testkit::stomp::Stomp;

use crate::support::BrokerProcess;

const MIB: usize = 1024 * 1024;
/// `limits.max-body-bytes` by default (ActiveMQ's `maxFrameSize`).
const DEFAULT_MAX_BODY: usize = 100 * MIB;

/// A body of `len` bytes that differs from every other seed's at every
/// 8-byte word (xorshift), so a body cut, shifted or swapped for another
/// fails the byte comparison.
fn body(seed: u64, len: usize) -> Bytes {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v.into()
}

fn send(dest: &str, persistent: bool, body: &Bytes) -> Frame {
    Frame::new(Command::Send)
        .header("destination", dest)
        .header("persistent", if persistent { "true" } else { "false" })
        .body(body.clone())
}

/// Asserts that `m` carries `want` whole (compared byte for byte; a
/// mismatch reports sizes and the first differing offset, not 16 MiB).
fn assert_body(m: &Frame, want: &Bytes, what: &str) {
    assert_eq!(m.command, Command::Message, "{what}: {m:?}");
    if m.body != *want {
        let at = m.body.iter().zip(want.iter()).position(|(a, b)| a != b);
        panic!(
            "{what}: body of {} bytes, expected {} bytes; first difference at {at:?}",
            m.body.len(),
            want.len()
        );
    }
}

/// A topic with two subscribers and two 16 MiB messages (one persistent,
/// one not): each subscriber gets both, whole. While both hold them
/// unacknowledged the broker's memory budget counts each body once, not
/// once per subscriber; once acknowledged it is all given back.
#[tokio::test]
async fn a_topic_delivers_two_16_mib_messages_whole_to_two_subscribers() {
    let started = Instant::now();
    let b = BrokerProcess::start("").await;
    let mut subs = [Stomp::connect(b.stomp).await, Stomp::connect(b.stomp).await];
    for (i, s) in subs.iter_mut().enumerate() {
        s.subscribe(&format!("s{i}"), "/topic/large", "client-individual", &[])
            .await;
    }
    let bodies = [body(1, 16 * MIB), body(2, 16 * MIB)];
    let mut p = Stomp::connect(b.stomp).await;
    p.request(send("/topic/large", true, &bodies[0])).await;
    p.request(send("/topic/large", false, &bodies[1])).await;

    let mut held = Vec::new();
    for (i, s) in subs.iter_mut().enumerate() {
        for (n, want) in bodies.iter().enumerate() {
            let m = s.recv_message().await;
            assert_body(&m, want, &format!("subscriber {i}, message {n}"));
            held.push(m);
        }
    }
    // Both subscribers hold both messages unacknowledged: two bodies in
    // memory (plus headers and bookkeeping), not four.
    let used = metric_at(b.http, "halyard_memory_bytes").await as usize;
    println!("memory held for 2 x 16 MiB messages to 2 subscribers: {used} bytes");
    assert!(
        (32 * MIB..33 * MIB).contains(&used),
        "halyard_memory_bytes is {used} with two 16 MiB messages held by two subscribers"
    );
    for (i, s) in subs.iter_mut().enumerate() {
        for m in &held[i * 2..i * 2 + 2] {
            s.ack(m).await;
        }
    }
    drop(held);
    memory_drains(&b).await;
    println!("topic test took {:?}", started.elapsed());
}

/// Persistent messages of 16 MiB and of exactly `limits.max-body-bytes`
/// (larger than a 32 MiB journal segment; sent in a transaction, which
/// may hold one message of the largest size) are stored, survive
/// `kill -9` and come back whole.
#[tokio::test]
async fn persistent_16_and_100_mib_messages_survive_a_restart() {
    let started = Instant::now();
    let mut b = BrokerProcess::start("").await;
    let bodies = [body(3, 16 * MIB), body(4, DEFAULT_MAX_BODY)];
    let mut p = Stomp::connect(b.stomp).await;
    p.request(send("/queue/large", true, &bodies[0])).await;
    p.request(Frame::new(Command::Begin).header("transaction", "t"))
        .await;
    p.request(send("/queue/large", true, &bodies[1]).header("transaction", "t"))
        .await;
    p.request(Frame::new(Command::Commit).header("transaction", "t"))
        .await;
    drop(p);
    println!("sent after {:?}", started.elapsed());
    b.restart().await;
    println!("restarted after {:?}", started.elapsed());
    let mut c = Stomp::connect(b.stomp).await;
    c.subscribe("c", "/queue/large", "client-individual", &[])
        .await;
    for (n, want) in bodies.iter().enumerate() {
        let m = c.recv_message().await;
        assert_body(&m, want, &format!("message {n} after the restart"));
        c.ack(&m).await;
    }
    c.expect_silence(Duration::from_millis(100)).await;
    println!("queue test took {:?}", started.elapsed());
}

/// One byte over the default limit is refused with an ERROR that names
/// the limit, before the broker reads the body.
#[tokio::test]
async fn a_body_over_the_default_limit_gets_an_error() {
    let b = BrokerProcess::start("").await;
    let mut s = Stomp::connect(b.stomp).await;
    let head = format!(
        "SEND\ndestination:/queue/too-large\ncontent-length:{}\n\n",
        DEFAULT_MAX_BODY + 1
    );
    s.write(head.as_bytes()).await;
    let e = s.expect_error().await;
    let message = e.headers.get("message").unwrap_or_default();
    assert!(
        message.contains(&format!("body longer than {DEFAULT_MAX_BODY} bytes")),
        "{e:?}"
    );
}

/// Opens a connection with a 4 KiB receive buffer that subscribes to
/// `topic` and then reads only the first byte of what it is sent.
async fn stalled_subscriber(b: &BrokerProcess, topic: &str) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut s = socket.connect(b.stomp).await.unwrap();
    let frames = format!(
        "CONNECT\naccept-version:1.2\nhost:x\nheart-beat:0,0\n\n\0\
         SUBSCRIBE\nid:s\ndestination:{topic}\nack:client-individual\nreceipt:sub\n\n\0"
    );
    s.write_all(frames.as_bytes()).await.unwrap();
    // CONNECTED, then the RECEIPT of the subscription.
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    while seen.iter().filter(|&&b| b == 0).count() < 2 {
        tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut byte))
            .await
            .expect("no CONNECTED and RECEIPT in time")
            .unwrap();
        seen.push(byte[0]);
    }
    s
}

/// A large message to subscribers that do not read it is held once, not
/// once per subscriber: each subscriber's connection writes the shared
/// body from where it is instead of copying it into its output buffer
/// first, and the producer's read buffer gives the body its memory rather
/// than keeping a copy of it. Measured on the broker process's resident
/// set (peak included): eight stalled subscribers of one 32 MiB message
/// used to take it 9 copies (about 300 MiB) up.
#[tokio::test]
async fn a_large_message_to_subscribers_that_do_not_read_is_held_once() {
    use tokio::io::AsyncReadExt;
    const SUBSCRIBERS: usize = 8;
    const SIZE_MIB: u64 = 32;
    let b = BrokerProcess::start("").await;
    let mut stalled = Vec::new();
    for _ in 0..SUBSCRIBERS {
        stalled.push(stalled_subscriber(&b, "/topic/stalled").await);
    }
    let message = body(5, SIZE_MIB as usize * MIB);
    // Warm up: connections and the allocator's arenas, with a small message.
    let mut p = Stomp::connect(b.stomp).await;
    p.request(send("/topic/other", false, &body(6, MIB))).await;
    let (_, before) = b.rss_mib();
    p.request(send("/topic/stalled", false, &message)).await;
    // Every subscriber's connection has started writing the MESSAGE.
    for s in &mut stalled {
        let mut first = [0u8; 1];
        tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut first))
            .await
            .expect("no MESSAGE started in time")
            .unwrap();
        assert_eq!(&first, b"M");
    }
    let (peak, now) = b.rss_mib();
    println!(
        "one {SIZE_MIB} MiB message to {SUBSCRIBERS} stalled subscribers: RSS {before} MiB before, \
         {now} MiB now, peak {peak} MiB"
    );
    assert!(
        peak < before + SIZE_MIB + 16,
        "the broker went from {before} MiB to a peak of {peak} MiB for one {SIZE_MIB} MiB message"
    );
    assert_eq!(
        metric_at(b.http, "halyard_memory_bytes").await / MIB as u64,
        SIZE_MIB,
        "the memory budget counts the message once"
    );
}

/// A message larger than the whole memory budget (a small machine's
/// "auto" budget can be below `max-body-bytes`) does not wait for room
/// that only its own departure could make: it goes through, alone, as it
/// would into a budget used by nothing else; and, in a transaction, the
/// same.
#[tokio::test]
async fn a_message_larger_than_the_memory_budget_is_not_held_back_by_itself() {
    let b = BrokerProcess::start(&format!(
        "[limits]\nmemory-bytes = {}\nflow-control-timeout-ms = 2000\n",
        4 * MIB
    ))
    .await;
    let bodies = [body(7, 8 * MIB), body(8, 8 * MIB)];
    let mut c = Stomp::connect(b.stomp).await;
    c.subscribe("c", "/queue/over-budget", "auto", &[]).await;
    let mut p = Stomp::connect(b.stomp).await;
    p.request(send("/queue/over-budget", false, &bodies[0]))
        .await;
    assert_body(&c.recv_message().await, &bodies[0], "the plain SEND");
    p.request(Frame::new(Command::Begin).header("transaction", "t"))
        .await;
    p.request(send("/queue/over-budget", false, &bodies[1]).header("transaction", "t"))
        .await;
    p.request(Frame::new(Command::Commit).header("transaction", "t"))
        .await;
    assert_body(
        &c.recv_message().await,
        &bodies[1],
        "the transactional SEND",
    );
}

/// Durable subscribers get copies of a persistent message of their own
/// (stored, each with its own sequence number), but the copies share the
/// body, and the memory budget counts it once.
#[tokio::test]
async fn durable_subscribers_copies_share_one_body_in_the_memory_budget() {
    let b = BrokerProcess::start("").await;
    let mut subs = Vec::new();
    for id in ["d1", "d2"] {
        let mut s = Stomp::connect_with(
            b.stomp,
            &[("accept-version", "1.2"), ("host", "x"), ("client-id", id)],
        )
        .await;
        s.subscribe(
            "s",
            "/topic/durable-large",
            "client-individual",
            &[("activemq.subscriptionName", "large")],
        )
        .await;
        subs.push(s);
    }
    let want = body(9, 16 * MIB);
    let mut p = Stomp::connect(b.stomp).await;
    p.request(send("/topic/durable-large", true, &want)).await;
    let mut held = Vec::new();
    for s in &mut subs {
        let m = s.recv_message().await;
        assert_body(&m, &want, "durable copy");
        held.push(m);
    }
    let used = metric_at(b.http, "halyard_memory_bytes").await as usize;
    println!("memory held for one 16 MiB message to 2 durable subscribers: {used} bytes");
    assert!(
        (16 * MIB..17 * MIB).contains(&used),
        "halyard_memory_bytes is {used} for one 16 MiB message held by two durable subscribers"
    );
    // Given back once the last copy is acknowledged.
    for (s, m) in subs.iter_mut().zip(&held) {
        s.ack(m).await;
    }
    drop(held);
    memory_drains(&b).await;
}

/// Waits until the broker holds no message bytes.
async fn memory_drains(b: &BrokerProcess) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let used = metric_at(b.http, "halyard_memory_bytes").await;
        if used == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{used} bytes still held after every message was acknowledged"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A SEND to a composite destination makes a copy per queue, sharing the
/// body; the memory budget counts it once.
#[tokio::test]
async fn a_composite_sends_copies_share_one_body_in_the_memory_budget() {
    let b = BrokerProcess::start("").await;
    let want = body(10, 16 * MIB);
    let mut p = Stomp::connect(b.stomp).await;
    p.request(send("/queue/composite-a,/queue/composite-b", false, &want))
        .await;
    let used = metric_at(b.http, "halyard_memory_bytes").await as usize;
    println!("memory held for one 16 MiB message in two queues: {used} bytes");
    assert!(
        (16 * MIB..17 * MIB).contains(&used),
        "halyard_memory_bytes is {used} for one 16 MiB message in two queues"
    );
    let mut c = Stomp::connect(b.stomp).await;
    for q in ["/queue/composite-a", "/queue/composite-b"] {
        c.subscribe(q, q, "auto", &[]).await;
        assert_body(&c.recv_message().await, &want, q);
    }
    memory_drains(&b).await;
}
