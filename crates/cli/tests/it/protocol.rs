//! STOMP 1.0–1.2 conformance against an in-process broker, over raw
//! sockets: version negotiation, CONNECTED headers, heart-beats, header
//! escaping per version, framing details (content-length, CRLF, repeated
//! headers), acknowledgement by message-id and cumulative client acks,
//! DISCONNECT receipts and receipt ordering.

use std::time::{Duration, Instant};

use crate::support::inproc::TestBroker;
use halyard_stomp::{Command, Frame};
use halyard_testkit::assert_between;
use halyard_testkit::stomp::{Next, Stomp, WAIT, body};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn connect_bytes(headers: &[&str]) -> Vec<u8> {
    let mut s = String::from("CONNECT\n");
    for h in headers {
        s.push_str(h);
        s.push('\n');
    }
    s.push_str("\n\0");
    s.into_bytes()
}

// ---------------------------------------------------------------------------
// CONNECT / CONNECTED
// ---------------------------------------------------------------------------

#[tokio::test]
async fn version_negotiation_picks_the_highest_common_version() {
    let b = TestBroker::start("").await;
    for (accept, want) in [
        (Some("1.0"), "1.0"),
        (Some("1.1"), "1.1"),
        (Some("1.2"), "1.2"),
        (Some("1.0,1.1,1.2"), "1.2"),
        (Some("1.1,1.0"), "1.1"),
        (Some("1.0,1.1"), "1.1"),
        (Some("1.2,2.0"), "1.2"),
        (None, "1.0"),
    ] {
        let mut headers = vec!["host:localhost".to_owned()];
        if let Some(a) = accept {
            headers.push(format!("accept-version:{a}"));
        }
        let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
        let (mut r, f) = Stomp::connect_with_bytes(b.stomp, &connect_bytes(&headers)).await;
        assert_eq!(
            f.headers.get("version"),
            Some(want),
            "accept-version {accept:?}: {f:?}"
        );
        // The session works in that version.
        r.send(
            Frame::new(Command::Send)
                .header("destination", "/queue/neg")
                .header("receipt", "r"),
        )
        .await;
        r.expect_receipt("r").await;
    }
}

#[tokio::test]
async fn stomp_command_is_an_alias_of_connect() {
    let b = TestBroker::start("").await;
    for (accept, want) in [("1.2", "1.2"), ("1.1", "1.1"), ("1.0,1.1,1.2", "1.2")] {
        let raw = format!("STOMP\naccept-version:{accept}\nhost:localhost\n\n\0");
        let (mut r, f) = Stomp::connect_with_bytes(b.stomp, raw.as_bytes()).await;
        assert_eq!(f.headers.get("version"), Some(want));
        assert!(f.headers.get("session").is_some_and(|s| !s.is_empty()));
        // A full round trip on the session it opened.
        r.send(
            Frame::new(Command::Subscribe)
                .header("id", "s")
                .header("destination", "/queue/alias")
                .header("receipt", "sub"),
        )
        .await;
        r.expect_receipt("sub").await;
        r.send(
            Frame::new(Command::Send)
                .header("destination", "/queue/alias")
                .body(&b"via STOMP"[..]),
        )
        .await;
        let m = r.frame().await;
        assert_eq!(m.command, Command::Message);
        assert_eq!(&m.body[..], b"via STOMP");
        assert_eq!(m.headers.get("destination"), Some("/queue/alias"));
    }
}

#[tokio::test]
async fn connected_carries_version_session_server_and_heart_beat() {
    let b = TestBroker::start("[heartbeat]\nmin-send-ms = 1234\nmin-receive-ms = 5678\n").await;
    let mut sessions = Vec::new();
    for accept in ["1.2", "1.1", "1.2"] {
        let raw = connect_bytes(&[
            &format!("accept-version:{accept}"),
            "host:localhost",
            "heart-beat:0,0",
        ]);
        let (_r, f) = Stomp::connect_with_bytes(b.stomp, &raw).await;
        assert_eq!(f.headers.get("version"), Some(accept));
        let server = f.headers.get("server").unwrap();
        assert!(
            server.starts_with("halyard/") && server.len() > "halyard/".len(),
            "server header {server:?}"
        );
        // The broker offers its configured floors.
        assert_eq!(f.headers.get("heart-beat"), Some("1234,5678"), "{f:?}");
        let session = f.headers.get("session").unwrap().to_owned();
        assert!(!session.is_empty());
        sessions.push(session);
    }
    sessions.sort();
    sessions.dedup();
    assert_eq!(
        sessions.len(),
        3,
        "session ids are not unique: {sessions:?}"
    );

    // A 1.0 client gets version and session too.
    let (_r, f) = Stomp::connect_with_bytes(b.stomp, &connect_bytes(&["host:localhost"])).await;
    assert_eq!(f.headers.get("version"), Some("1.0"));
    assert!(f.headers.get("session").is_some_and(|s| !s.is_empty()));
    assert!(f.headers.get("server").is_some());
}

// ---------------------------------------------------------------------------
// Heart-beats
// ---------------------------------------------------------------------------

const FAST_HEARTBEATS: &str = "[heartbeat]\nmin-send-ms = 100\nmin-receive-ms = 100\n";

/// Sends an EOL every 50 ms for `how_long`, counting the broker's EOLs;
/// panics on any frame or close. Returns the heart-beats received and when
/// the last EOL was sent.
async fn keep_alive(r: &mut Stomp, how_long: Duration) -> (usize, Instant) {
    let end = Instant::now() + how_long;
    let mut next_beat = Instant::now();
    let mut last_sent = Instant::now();
    let mut beats = 0;
    loop {
        let now = Instant::now();
        if now >= next_beat {
            if now >= end {
                return (beats, last_sent);
            }
            r.write(b"\n").await;
            last_sent = Instant::now();
            next_beat = last_sent + Duration::from_millis(50);
        }
        match r
            .next(next_beat.saturating_duration_since(Instant::now()))
            .await
        {
            Next::Heartbeat => beats += 1,
            Next::Timeout => {}
            other => panic!("connection kept alive with EOLs got {other:?}"),
        }
    }
}

#[tokio::test]
async fn heart_beats_flow_and_keep_the_connection_alive() {
    let b = TestBroker::start(&format!("{FAST_HEARTBEATS}grace-factor = 2.0\n")).await;
    let (mut r, f) = Stomp::connect_with_bytes(
        b.stomp,
        &connect_bytes(&["accept-version:1.2", "host:localhost", "heart-beat:100,100"]),
    )
    .await;
    assert_eq!(f.headers.get("heart-beat"), Some("100,100"));
    // Five times the grace period: the client's EOLs keep it open, and the
    // broker sends an EOL about every 100 ms.
    let (beats, _) = keep_alive(&mut r, Duration::from_millis(1000)).await;
    assert!(
        (5..=15).contains(&beats),
        "{beats} heart-beats from the broker in 1 s at a 100 ms interval"
    );
    // Still connected and working.
    r.send(
        Frame::new(Command::Send)
            .header("destination", "/queue/hb")
            .header("receipt", "alive"),
    )
    .await;
    r.expect_receipt("alive").await;
}

#[tokio::test]
async fn a_client_that_goes_silent_is_disconnected_after_the_grace_period() {
    let b = TestBroker::start(&format!("{FAST_HEARTBEATS}grace-factor = 3.0\n")).await;
    let (mut r, _) = Stomp::connect_with_bytes(
        b.stomp,
        &connect_bytes(&["accept-version:1.2", "host:localhost", "heart-beat:100,100"]),
    )
    .await;
    // Alive for a while (longer than the grace period)...
    let (_, last_sent) = keep_alive(&mut r, Duration::from_millis(400)).await;
    // ...then silent: ERROR after about 3 x 100 ms, then the close. The
    // broker's own heart-beats keep coming meanwhile.
    let error = loop {
        match r.next(WAIT).await {
            Next::Heartbeat => continue,
            Next::Frame(f) => break f,
            other => panic!("expected an ERROR, got {other:?}"),
        }
    };
    assert_between(
        last_sent.elapsed(),
        Duration::from_millis(250),
        Duration::from_millis(1500),
        "silent client disconnected",
    );
    assert_eq!(error.command, Command::Error, "{error:?}");
    let msg = error.headers.get("message").unwrap();
    assert!(
        msg.contains("no frame or heart-beat received") && msg.contains("interval 100 ms"),
        "{msg:?}"
    );
    r.expect_closed_silently().await;
}

#[tokio::test]
async fn heart_beat_negotiation_takes_the_slower_side_and_zero_means_never() {
    let b = TestBroker::start(FAST_HEARTBEATS).await;
    // Wants heart-beats only every 300 ms and cannot send any.
    let (mut slow, _) = Stomp::connect_with_bytes(
        b.stomp,
        &connect_bytes(&["accept-version:1.2", "host:localhost", "heart-beat:0,300"]),
    )
    .await;
    // Neither sends nor wants heart-beats.
    let (mut none, _) = Stomp::connect_with_bytes(
        b.stomp,
        &connect_bytes(&["accept-version:1.2", "host:localhost", "heart-beat:0,0"]),
    )
    .await;
    // STOMP 1.0 has no heart-beats: the header is ignored.
    let (mut old, f) = Stomp::connect_with_bytes(
        b.stomp,
        &connect_bytes(&["host:localhost", "heart-beat:100,100"]),
    )
    .await;
    assert_eq!(f.headers.get("version"), Some("1.0"));

    // The slow client gets EOLs at its pace, not the broker's floor, and is
    // never disconnected for its own silence.
    let mut last = Instant::now();
    for i in 0..3 {
        match slow.next(Duration::from_secs(2)).await {
            Next::Heartbeat => {}
            other => panic!("expected heart-beat {i}, got {other:?}"),
        }
        let gap = last.elapsed();
        if i > 0 {
            assert_between(
                gap,
                Duration::from_millis(250),
                Duration::from_millis(1000),
                "heart-beat gap",
            );
        }
        last = Instant::now();
    }
    // Meanwhile (about a second, ten times the broker's 100 ms floor) the
    // other two got no EOLs and were not disconnected.
    for (name, r) in [("heart-beat:0,0", &mut none), ("STOMP 1.0", &mut old)] {
        match r.next(Duration::from_millis(50)).await {
            Next::Timeout => {}
            other => panic!("{name} client got {other:?}"),
        }
        r.send(
            Frame::new(Command::Send)
                .header("destination", "/queue/hb0")
                .header("receipt", "still-here"),
        )
        .await;
        r.expect_receipt("still-here").await;
    }
    slow.send(Frame::new(Command::Disconnect).header("receipt", "bye"))
        .await;
    slow.expect_receipt("bye").await;
}

// ---------------------------------------------------------------------------
// Header escaping
// ---------------------------------------------------------------------------

#[tokio::test]
async fn header_escaping_round_trips_from_1_2_to_1_2_and_1_1() {
    let b = TestBroker::start("").await;
    let mut r12 = Stomp::connect(b.stomp).await;
    let mut r11 = Stomp::connect_with(b.stomp, &[("accept-version", "1.1"), ("host", "x")]).await;
    r12.subscribe("s12", "/topic/esc", "auto", &[]).await;
    r11.subscribe("s11", "/topic/esc", "auto", &[]).await;

    // Name `k:e\y<LF>n<CR>a`, value `v:a\l<LF>u<CR>e:`, escaped for 1.2.
    let name = "k:e\\y\nn\ra";
    let value = "v:a\\l\nu\re:";
    let mut p = Stomp::connect(b.stomp).await;
    p.write(
        b"SEND\ndestination:/topic/esc\nk\\ce\\\\y\\nn\\ra:v\\ca\\\\l\\nu\\re\\c\n\
          plain:x\nreceipt:r\n\nbody\0",
    )
    .await;
    let f = p.recv().await;
    assert_eq!(f.command, Command::Receipt, "{f:?}");

    for (who, r) in [("1.2", &mut r12), ("1.1", &mut r11)] {
        let m = r.recv_message().await;
        assert_eq!(m.headers.get(name), Some(value), "{who} receiver: {m:?}");
        assert_eq!(m.headers.get("plain"), Some("x"), "{who} receiver");
        assert_eq!(m.headers.get("destination"), Some("/topic/esc"));
        assert_eq!(body(&m), "body");
    }
}

#[tokio::test]
async fn backslashes_from_a_1_0_sender_arrive_literally() {
    let b = TestBroker::start("").await;
    let mut r12 = Stomp::connect(b.stomp).await;
    let mut r10 = Stomp::connect_with(b.stomp, &[("host", "x")]).await;
    r12.subscribe("s12", "/topic/lit", "auto", &[]).await;
    r10.subscribe("s10", "/topic/lit", "auto", &[]).await;

    let (mut p, f) = Stomp::connect_with_bytes(b.stomp, &connect_bytes(&["host:localhost"])).await;
    assert_eq!(f.headers.get("version"), Some("1.0"));
    // In 1.0 there is no escaping: `\t`, `\n`, `\c` and `\\` are just
    // backslashes followed by letters, and a value may contain colons.
    p.write(
        b"SEND\ndestination:/topic/lit\npath:C:\\temp\\new\\c\\\\x\nw\\n:a\\tb\nreceipt:r\n\nx\0",
    )
    .await;
    p.expect_receipt("r").await;

    for (who, r) in [("1.2", &mut r12), ("1.0", &mut r10)] {
        let m = r.recv_message().await;
        assert_eq!(
            m.headers.get("path"),
            Some("C:\\temp\\new\\c\\\\x"),
            "{who} receiver: {m:?}"
        );
        assert_eq!(
            m.headers.get("w\\n"),
            Some("a\\tb"),
            "{who} receiver: {m:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// Framing
// ---------------------------------------------------------------------------

#[tokio::test]
async fn content_length_bodies_with_nul_bytes_are_delivered_intact() {
    let b = TestBroker::start("").await;
    let mut c = Stomp::connect(b.stomp).await;
    c.subscribe("s", "/queue/bin", "auto", &[]).await;
    let mut p = Stomp::connect(b.stomp).await;
    let bodies: Vec<Vec<u8>> = vec![
        b"\0".to_vec(),
        b"a\0b\0\0c".to_vec(),
        (0..=255u8).cycle().take(5000).collect(),
    ];
    for (i, payload) in bodies.iter().enumerate() {
        let mut raw = format!(
            "SEND\ndestination:/queue/bin\ncontent-length:{}\nreceipt:r{i}\n\n",
            payload.len()
        )
        .into_bytes();
        raw.extend_from_slice(payload);
        raw.push(0);
        p.write(&raw).await;
        let f = p.recv().await;
        assert_eq!(f.command, Command::Receipt, "{f:?}");
    }
    for payload in &bodies {
        let m = c.recv_message().await;
        assert_eq!(&m.body[..], &payload[..]);
        assert_eq!(
            m.headers.get("content-length"),
            Some(payload.len().to_string().as_str())
        );
    }
}

#[tokio::test]
async fn crlf_line_endings_are_accepted() {
    let b = TestBroker::start("").await;
    let (mut r, f) = Stomp::connect_with_bytes(
        b.stomp,
        b"CONNECT\r\naccept-version:1.2\r\nhost:localhost\r\n\r\n\0",
    )
    .await;
    assert_eq!(f.headers.get("version"), Some("1.2"));
    r.write(b"\r\nSUBSCRIBE\r\nid:s\r\ndestination:/queue/crlf\r\nack:client-individual\r\nreceipt:r1\r\n\r\n\0\r\n")
        .await;
    r.expect_receipt("r1").await;
    r.write(b"SEND\r\ndestination:/queue/crlf\r\ncolor:red\r\nreceipt:r2\r\n\r\nhello\0")
        .await;
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(r.frame().await);
    }
    let m = got
        .iter()
        .find(|f| f.command == Command::Message)
        .expect("no MESSAGE");
    assert!(
        got.iter()
            .any(|f| f.command == Command::Receipt && f.headers.get("receipt-id") == Some("r2")),
        "{got:?}"
    );
    assert_eq!(m.headers.get("destination"), Some("/queue/crlf"));
    assert_eq!(m.headers.get("color"), Some("red"));
    assert_eq!(m.headers.get("subscription"), Some("s"));
    assert_eq!(&m.body[..], b"hello");
    let ack = m.headers.get("ack").unwrap();
    r.write(format!("ACK\r\nid:{ack}\r\nreceipt:r3\r\n\r\n\0").as_bytes())
        .await;
    r.expect_receipt("r3").await;
}

#[tokio::test]
async fn repeated_headers_first_one_wins() {
    let b = TestBroker::start("").await;
    let mut c = Stomp::connect(b.stomp).await;
    c.subscribe("first", "/queue/first", "auto", &[]).await;
    c.subscribe("second", "/queue/second", "auto", &[]).await;
    let mut p = Stomp::connect(b.stomp).await;
    p.write(
        b"SEND\ndestination:/queue/first\ndestination:/queue/second\n\
          color:red\ncolor:blue\nreceipt:r-a\nreceipt:r-b\n\nx\0",
    )
    .await;
    let f = p.recv().await;
    assert_eq!(f.command, Command::Receipt, "{f:?}");
    assert_eq!(f.headers.get("receipt-id"), Some("r-a"));
    let m = c.recv_message().await;
    assert_eq!(m.headers.get("destination"), Some("/queue/first"));
    assert_eq!(m.headers.get("subscription"), Some("first"));
    assert_eq!(m.headers.get("color"), Some("red"));
    c.expect_silence(Duration::from_millis(150)).await;
}

// ---------------------------------------------------------------------------
// Acknowledgement
// ---------------------------------------------------------------------------

#[tokio::test]
async fn stomp_1_0_acks_by_message_id() {
    let b = TestBroker::start("").await;
    let mut p = Stomp::connect(b.stomp).await;
    for m in ["m1", "m2"] {
        p.send_msg("/queue/ack10", m, &[]).await;
    }
    let mut c = Stomp::connect_with(b.stomp, &[("host", "x")]).await;
    // 1.0: no subscription id needed.
    c.request(
        Frame::new(Command::Subscribe)
            .header("destination", "/queue/ack10")
            .header("ack", "client"),
    )
    .await;
    let m1 = c.recv_message().await;
    let m2 = c.recv_message().await;
    assert_eq!((body(&m1).as_str(), body(&m2).as_str()), ("m1", "m2"));
    assert_eq!(
        m1.headers.get("ack"),
        None,
        "1.0 MESSAGE with an ack header"
    );
    c.request(Frame::new(Command::Ack).header("message-id", m1.headers.get("message-id").unwrap()))
        .await;
    c.disconnect().await;
    // Only m2 was left unacknowledged.
    let mut d = Stomp::connect(b.stomp).await;
    d.subscribe("d", "/queue/ack10", "auto", &[]).await;
    let m = d.recv_message().await;
    assert_eq!(body(&m), "m2");
    assert_eq!(m.headers.get("redelivered"), Some("true"));
    d.expect_silence(Duration::from_millis(150)).await;
}

#[tokio::test]
async fn stomp_1_1_acks_and_nacks_by_message_id_and_subscription() {
    let b = TestBroker::start("").await;
    let mut p = Stomp::connect(b.stomp).await;
    for m in ["m1", "m2", "m3"] {
        p.send_msg("/queue/ack11", m, &[]).await;
    }
    let mut c = Stomp::connect_with(b.stomp, &[("accept-version", "1.1"), ("host", "x")]).await;
    c.subscribe("s11", "/queue/ack11", "client-individual", &[])
        .await;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(c.recv_message().await);
    }
    for m in &got {
        assert_eq!(m.headers.get("ack"), None, "1.1 MESSAGE with an ack header");
        assert_eq!(m.headers.get("subscription"), Some("s11"));
    }
    let mid = |m: &Frame| m.headers.get("message-id").unwrap().to_owned();
    // ACK m2 only (client-individual), by message-id and subscription.
    c.request(
        Frame::new(Command::Ack)
            .header("message-id", mid(&got[1]))
            .header("subscription", "s11"),
    )
    .await;
    // NACK m3: it is redelivered.
    c.request(
        Frame::new(Command::Nack)
            .header("message-id", mid(&got[2]))
            .header("subscription", "s11"),
    )
    .await;
    let again = c.recv_message().await;
    assert_eq!(body(&again), "m3");
    assert_eq!(again.headers.get("redelivered"), Some("true"));
    c.request(
        Frame::new(Command::Ack)
            .header("message-id", mid(&again))
            .header("subscription", "s11"),
    )
    .await;
    c.disconnect().await;
    // m1 was never acknowledged: it alone comes back.
    let mut d = Stomp::connect(b.stomp).await;
    d.subscribe("d", "/queue/ack11", "auto", &[]).await;
    let m = d.recv_message().await;
    assert_eq!(body(&m), "m1");
    assert_eq!(m.headers.get("redelivered"), Some("true"));
    d.expect_silence(Duration::from_millis(150)).await;
}

#[tokio::test]
async fn client_ack_mode_is_cumulative() {
    let b = TestBroker::start("").await;
    let mut p = Stomp::connect(b.stomp).await;
    for i in 1..=5 {
        p.send_msg("/queue/cumul", &format!("m{i}"), &[]).await;
    }
    let mut c = Stomp::connect(b.stomp).await;
    c.subscribe("s", "/queue/cumul", "client", &[]).await;
    let mut got = Vec::new();
    for i in 1..=5 {
        let m = c.recv_message().await;
        assert_eq!(body(&m), format!("m{i}"));
        got.push(m);
    }
    // ACK the third: acknowledges m1, m2 and m3.
    c.ack(&got[2]).await;
    c.disconnect().await;
    let mut d = Stomp::connect(b.stomp).await;
    d.subscribe("d", "/queue/cumul", "client-individual", &[])
        .await;
    for want in ["m4", "m5"] {
        let m = d.recv_message().await;
        assert_eq!(body(&m), want);
        assert_eq!(m.headers.get("redelivered"), Some("true"));
        d.ack(&m).await;
    }
    d.expect_silence(Duration::from_millis(150)).await;
}

// ---------------------------------------------------------------------------
// Receipts
// ---------------------------------------------------------------------------

#[tokio::test]
async fn disconnect_with_receipt_gets_the_receipt_then_the_close() {
    let b = TestBroker::start("").await;
    let (mut r, _) = Stomp::connect_with_bytes(
        b.stomp,
        &connect_bytes(&["accept-version:1.2", "host:localhost"]),
    )
    .await;
    // A SEND without receipt just before: the DISCONNECT receipt means it
    // has taken effect.
    r.write(b"SEND\ndestination:/queue/bye\n\nlast words\0DISCONNECT\nreceipt:bye-1\n\n\0")
        .await;
    r.expect_receipt("bye-1").await;
    r.expect_closed_silently().await;
    let mut c = Stomp::connect(b.stomp).await;
    c.subscribe("s", "/queue/bye", "auto", &[]).await;
    assert_eq!(body(&c.recv_message().await), "last words");
}

#[tokio::test]
async fn a_receipt_arrives_only_after_earlier_frames_took_effect() {
    let b = TestBroker::start("").await;
    let mut p = Stomp::connect(b.stomp).await;
    for i in 0..100 {
        // Mix persistent (store first) and non-persistent messages.
        let persistent = if i % 3 == 0 { "true" } else { "false" };
        p.send(
            Frame::new(Command::Send)
                .header("destination", "/queue/order")
                .header("persistent", persistent)
                .body(format!("m{i}").into_bytes()),
        )
        .await;
    }
    p.send_msg("/queue/order", "m100", &[]).await;
    // Subscribed only after the receipt: all 101 are already there.
    let mut c = Stomp::connect(b.stomp).await;
    c.subscribe("s", "/queue/order", "auto", &[]).await;
    for i in 0..=100 {
        assert_eq!(body(&c.recv_message().await), format!("m{i}"));
    }
    c.expect_silence(Duration::from_millis(150)).await;
}

#[tokio::test]
async fn a_topic_subscription_made_after_a_receipt_gets_none_of_the_earlier_messages() {
    // A small memory limit and a slow subscriber (prefetch 1, acks one at
    // a time) make the topic apply flow control, so the producer's earlier
    // messages are still waiting to be published when its receipt arrives.
    let b = TestBroker::start(
        "[limits]\ndestination-memory-bytes = 4096\n\n[destinations]\nslow-subscriber = \"flow-control\"\n",
    )
    .await;
    let mut slow = Stomp::connect(b.stomp).await;
    slow.subscribe(
        "slow",
        "/topic/fc",
        "client-individual",
        &[("activemq.prefetchSize", "1")],
    )
    .await;
    let mut late = Stomp::connect(b.stomp).await;
    let mut p = Stomp::connect(b.stomp).await;
    let pad = "x".repeat(1000);
    for i in 0..40 {
        p.send(
            Frame::new(Command::Send)
                .header("destination", "/topic/fc")
                .body(format!("m{i:02}-{pad}").into_bytes()),
        )
        .await;
    }
    p.send(
        Frame::new(Command::Send)
            .header("destination", "/topic/fc")
            .header("receipt", "r-last")
            .body(&b"last"[..]),
    )
    .await;
    // The slow subscriber consumes until the producer has its receipt.
    let mut slow_got = 0;
    let receipt = loop {
        if let Some(f) = p.recv_within(Duration::from_millis(1)).await {
            break f;
        }
        let m = slow.recv_message().await;
        slow_got += 1;
        slow.ack(&m).await;
    };
    assert_eq!(receipt.command, Command::Receipt, "{receipt:?}");
    assert_eq!(receipt.headers.get("receipt-id"), Some("r-last"));
    // Every message above was receipted before this subscription exists.
    late.subscribe("late", "/topic/fc", "auto", &[]).await;
    // The slow subscriber drains the rest.
    loop {
        let m = slow.recv_message().await;
        slow_got += 1;
        slow.ack(&m).await;
        if body(&m) == "last" {
            break;
        }
    }
    assert_eq!(slow_got, 41);
    let mut leaked = Vec::new();
    while let Some(f) = late.recv_within(Duration::from_millis(200)).await {
        let b = body(&f);
        leaked.push(b[..b.len().min(4)].to_owned());
    }
    assert!(
        leaked.is_empty(),
        "the subscription made after the RECEIPT got {} earlier messages: {leaked:?}",
        leaked.len()
    );
}

/// `subscriber-backlog-bytes` (here from a `[[policies]]` entry): a topic
/// under flow control holds its producer back once a slow subscriber has
/// that much waiting — not at `limits.destination-memory-bytes` (32 MiB
/// here, room for every message sent) — while a subscriber that keeps up
/// gets everything published, and a topic whose subscribers keep up never
/// holds its producer.
#[tokio::test]
async fn a_slow_topic_subscriber_holds_the_producer_back_at_the_backlog_bound() {
    const BOUND: usize = 16 * 1024;
    const SENT: usize = 200;
    let b = TestBroker::start(&format!(
        "[destinations]\nslow-subscriber = \"flow-control\"\n\n\
         [[policies]]\ntopic = \"bounded.>\"\nsubscriber-backlog-bytes = {BOUND}\n"
    ))
    .await;
    let pad = "x".repeat(1000);
    // Every SEND asks for a receipt: a topic gives one once it has
    // published the message to its subscribers.
    let send_all = async |p: &mut Stomp, dest: &str| {
        for i in 0..SENT {
            p.send(
                Frame::new(Command::Send)
                    .header("destination", dest)
                    .header("receipt", format!("r{i}"))
                    .body(format!("m{i:03}-{pad}").into_bytes()),
            )
            .await;
        }
    };

    // Subscribers that keep up: the producer is never held back.
    let mut fast = Stomp::connect(b.stomp).await;
    fast.subscribe("f", "/topic/bounded.free", "auto", &[])
        .await;
    let mut p = Stomp::connect(b.stomp).await;
    send_all(&mut p, "/topic/bounded.free").await;
    for i in 0..SENT {
        p.expect_receipt(&format!("r{i}")).await;
    }
    for i in 0..SENT {
        assert!(body(&fast.recv_message().await).starts_with(&format!("m{i:03}-")));
    }

    // A slow subscriber (prefetch 1, acknowledges nothing yet) beside one
    // that keeps up.
    let mut slow = Stomp::connect(b.stomp).await;
    slow.subscribe(
        "s",
        "/topic/bounded.slow",
        "client-individual",
        &[("activemq.prefetchSize", "1")],
    )
    .await;
    fast.subscribe("f2", "/topic/bounded.slow", "auto", &[])
        .await;
    send_all(&mut p, "/topic/bounded.slow").await;
    // Receipts come for what the topic took before the slow subscriber's
    // backlog reached the bound, then stop.
    let mut receipted = 0;
    while let Some(f) = p.recv_within(Duration::from_millis(500)).await {
        assert_eq!(f.command, Command::Receipt, "{f:?}");
        receipted += 1;
    }
    // About BOUND / 1 KiB messages wait, one more is in flight to it.
    assert!(
        (BOUND / 1100..=BOUND / 1000 + 2).contains(&receipted),
        "the producer was held back after {receipted} of {SENT} messages; \
         a {BOUND}-byte backlog holds about {}",
        BOUND / 1000
    );
    // The subscriber that keeps up got every message published so far.
    for i in 0..receipted {
        assert!(body(&fast.recv_message().await).starts_with(&format!("m{i:03}-")));
    }
    fast.expect_silence(Duration::from_millis(100)).await;
    // The slow one catches up: the producer goes on, nothing is lost.
    for i in 0..SENT {
        let m = slow.recv_message().await;
        assert!(body(&m).starts_with(&format!("m{i:03}-")));
        slow.ack(&m).await;
    }
    for _ in receipted..SENT {
        assert_eq!(p.recv().await.command, Command::Receipt);
    }
    for i in receipted..SENT {
        assert!(body(&fast.recv_message().await).starts_with(&format!("m{i:03}-")));
    }
}
