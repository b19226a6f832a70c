//! Bad input against an in-process broker: every malformed or forbidden
//! frame gets an ERROR frame with a clear `message` and the connection is
//! closed, the broker keeps running, a fresh client can still send and
//! receive, and a bystander connection (an open queue subscription with
//! unacknowledged messages, plus a topic subscription) is never harmed: its
//! messages are neither lost nor duplicated.

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use crate::support::inproc::TestBroker;
use futures::FutureExt;
use halyard_stomp::{Command, Frame};
use halyard_testkit::assert_between;
use halyard_testkit::stomp::{Next, Stomp, WAIT, body};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

const BYSTANDER_QUEUE: &str = "/queue/bystander";
const BYSTANDER_TOPIC: &str = "/topic/bystander";

/// The CONNECT the helpers send (STOMP 1.2, no heart-beats).
fn connect_frame() -> Frame {
    Frame::new(Command::Connect)
        .header("accept-version", "1.2")
        .header("host", "localhost")
}

/// CONNECTs with STOMP 1.2, retrying while the broker refuses the
/// connection because `limits.max-connections` is reached: closed
/// connections give their slot back asynchronously, after the client has
/// seen the close. (The harness's `connect` panics on a refusal; that panic
/// is caught and the attempt repeated.)
async fn connect_retry(addr: SocketAddr) -> Stomp {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if let Ok(s) = AssertUnwindSafe(Stomp::connect(addr)).catch_unwind().await {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // One last time, letting its failure explain itself.
    Stomp::connect(addr).await
}

/// Asserts `f` is an ERROR whose `message` header contains every word
/// (case-insensitively) and that it explains itself in the body too.
#[track_caller]
fn assert_error(f: &Frame, words: &[&str]) {
    assert_eq!(f.command, Command::Error, "expected ERROR, got {f:?}");
    let msg = f
        .headers
        .get("message")
        .unwrap_or_else(|| panic!("ERROR without message header: {f:?}"));
    let lower = msg.to_lowercase();
    for w in words {
        assert!(
            lower.contains(&w.to_lowercase()),
            "ERROR message {msg:?} does not mention {w:?}"
        );
    }
    assert!(!f.body.is_empty(), "ERROR without a body: {f:?}");
}

/// Expects ERROR + close on `s` and checks the message.
async fn expect_fatal(s: &mut Stomp, words: &[&str]) -> Frame {
    let e = s.expect_error().await;
    assert_error(&e, words);
    e
}

/// A connection that minds its own business while others misbehave: it
/// holds two unacknowledged queue messages (prefetch 2, two more waiting
/// behind them) and a topic subscription.
struct Bystander {
    conn: Stomp,
    unacked: Vec<Frame>,
}

impl Bystander {
    async fn start(addr: SocketAddr) -> Bystander {
        let mut conn = connect_retry(addr).await;
        for i in 0..4 {
            conn.send_msg(BYSTANDER_QUEUE, &format!("b{i}"), &[]).await;
        }
        conn.subscribe("by-topic", BYSTANDER_TOPIC, "auto", &[])
            .await;
        conn.subscribe(
            "by-queue",
            BYSTANDER_QUEUE,
            "client-individual",
            &[("activemq.prefetchSize", "2")],
        )
        .await;
        let mut unacked = Vec::new();
        for i in 0..2 {
            let m = conn.recv_message().await;
            assert_eq!(body(&m), format!("b{i}"));
            unacked.push(m);
        }
        // Prefetch 2: b2 and b3 wait until something is acknowledged.
        conn.expect_silence(Duration::from_millis(100)).await;
        Bystander { conn, unacked }
    }
}

/// A broker plus a bystander.
struct Scene {
    b: TestBroker,
    by: Bystander,
}

impl Scene {
    async fn start(toml: &str) -> Scene {
        let b = TestBroker::start(toml).await;
        let by = Bystander::start(b.stomp).await;
        Scene { b, by }
    }

    fn addr(&self) -> SocketAddr {
        self.b.stomp
    }

    /// Opens a connection, optionally CONNECTs, writes `raw`, and expects an
    /// ERROR mentioning `words` followed by the close.
    async fn fatal_raw(&self, connect: bool, raw: &[u8], words: &[&str]) -> Frame {
        let mut s = if connect {
            connect_retry(self.addr()).await
        } else {
            Stomp::open(self.addr()).await
        };
        s.write(raw).await;
        let e = expect_fatal(&mut s, words).await;
        if !raw.windows(b"\nreceipt:".len()).any(|w| w == b"\nreceipt:") {
            assert_eq!(e.headers.get("receipt-id"), None, "{e:?}");
        }
        e
    }

    /// CONNECTs (1.2), sends `f`, expects an ERROR mentioning `words`.
    async fn fatal_frame(&self, f: Frame, words: &[&str]) -> Frame {
        let had_receipt = f.headers.get("receipt").is_some();
        let mut s = connect_retry(self.addr()).await;
        s.send(f).await;
        let e = expect_fatal(&mut s, words).await;
        if !had_receipt {
            assert_eq!(e.headers.get("receipt-id"), None, "{e:?}");
        }
        e
    }

    /// The broker is still running, a fresh client can send and receive,
    /// and the bystander got exactly the messages it was owed.
    async fn finish(mut self) {
        assert!(self.b.is_running(), "broker died:\n{}", self.b.logs());
        let addr = self.addr();
        let mut fresh = connect_retry(addr).await;
        fresh.send_msg(BYSTANDER_QUEUE, "b4", &[]).await;
        fresh.send_msg(BYSTANDER_TOPIC, "t0", &[]).await;

        let by = &mut self.by;
        let held = std::mem::take(&mut by.unacked);
        for m in &held {
            assert_eq!(m.headers.get("subscription"), Some("by-queue"));
            by.conn.ack(m).await;
        }
        let mut queue = Vec::new();
        let mut topic = Vec::new();
        while queue.len() < 3 || topic.is_empty() {
            let m = by.conn.recv_message().await;
            match m.headers.get("subscription") {
                Some("by-queue") => {
                    assert_eq!(m.headers.get("redelivered"), None, "{m:?}");
                    by.conn.ack(&m).await;
                    queue.push(body(&m));
                }
                Some("by-topic") => topic.push(body(&m)),
                other => panic!("unexpected subscription {other:?}: {m:?}"),
            }
        }
        assert_eq!(queue, ["b2", "b3", "b4"], "bystander queue messages");
        assert_eq!(topic, ["t0"], "bystander topic messages");
        // Nothing lost, nothing duplicated: nothing else arrives.
        by.conn.expect_silence(Duration::from_millis(150)).await;

        // The fresh client's own round trip.
        fresh
            .subscribe("fresh", "/queue/fresh", "client-individual", &[])
            .await;
        fresh.send_msg("/queue/fresh", "hello", &[]).await;
        let m = fresh.recv_message().await;
        assert_eq!(body(&m), "hello");
        fresh.ack(&m).await;
        fresh.disconnect().await;
        self.by.conn.disconnect().await;
        assert!(self.b.is_running(), "broker died:\n{}", self.b.logs());
    }
}

fn send_frame(dest: &str) -> Frame {
    Frame::new(Command::Send)
        .header("destination", dest)
        .body(&b"x"[..])
}

// ---------------------------------------------------------------------------
// Framing and commands
// ---------------------------------------------------------------------------

#[tokio::test]
async fn garbage_and_unknown_commands_are_refused() {
    let s = Scene::start("").await;
    // Binary garbage before CONNECT.
    s.fatal_raw(
        false,
        b"\x16\x03\x01GARBAGE\xff\xfe\n\n\0",
        &["unknown command"],
    )
    .await;
    // Plain text that is not STOMP (an HTTP request).
    s.fatal_raw(
        false,
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        &["unknown command", "GET / HTTP/1.1"],
    )
    .await;
    // An unknown command after CONNECT.
    s.fatal_raw(true, b"FROB\nx:y\n\n\0", &["unknown command", "FROB"])
        .await;
    s.finish().await;
}

#[tokio::test]
async fn unknown_command_error_message_has_no_control_characters() {
    let s = Scene::start("").await;
    let e = s
        .fatal_raw(false, b"\0\x01\x02JUNK\x07\n\n\0", &["unknown command"])
        .await;
    let msg = e.headers.get("message").unwrap();
    assert!(
        !msg.chars().any(char::is_control),
        "control characters in ERROR message: {msg:?}"
    );
    s.finish().await;
}

#[tokio::test]
async fn commands_are_case_sensitive() {
    let s = Scene::start("").await;
    s.fatal_raw(
        false,
        b"connect\naccept-version:1.2\n\n\0",
        &["unknown command", "connect"],
    )
    .await;
    s.fatal_raw(
        true,
        b"send\ndestination:/queue/a\n\nx\0",
        &["unknown command", "send"],
    )
    .await;
    s.fatal_raw(
        true,
        b"Subscribe\nid:1\ndestination:/queue/a\n\n\0",
        &["unknown command"],
    )
    .await;
    s.finish().await;
}

#[tokio::test]
async fn frames_before_connect_are_refused() {
    let s = Scene::start("").await;
    s.fatal_raw(
        false,
        b"SEND\ndestination:/queue/early\n\nx\0",
        &["expected a CONNECT or STOMP frame", "SEND"],
    )
    .await;
    s.fatal_raw(
        false,
        b"SUBSCRIBE\nid:1\ndestination:/queue/early\n\n\0",
        &["expected a CONNECT or STOMP frame", "SUBSCRIBE"],
    )
    .await;
    // The early SEND was not delivered.
    let mut c = connect_retry(s.addr()).await;
    c.subscribe("e", "/queue/early", "auto", &[]).await;
    c.expect_silence(Duration::from_millis(100)).await;
    c.disconnect().await;
    s.finish().await;
}

#[tokio::test]
async fn connect_twice_is_refused() {
    let s = Scene::start("").await;
    s.fatal_frame(connect_frame(), &["already connected"]).await;
    s.fatal_frame(
        Frame::new(Command::Stomp).header("accept-version", "1.2"),
        &["already connected"],
    )
    .await;
    s.finish().await;
}

#[tokio::test]
async fn unsupported_accept_version_lists_supported_versions() {
    let s = Scene::start("").await;
    for offered in ["2.0", "2.0,3.1", "", "1.3"] {
        let raw = format!("CONNECT\naccept-version:{offered}\nhost:localhost\n\n\0");
        let e = s
            .fatal_raw(
                false,
                raw.as_bytes(),
                &["none of the offered protocol versions", "1.0,1.1,1.2"],
            )
            .await;
        let msg = e.headers.get("message").unwrap();
        assert!(msg.contains(offered), "{msg:?} does not quote {offered:?}");
        assert_eq!(e.headers.get("version"), Some("1.0,1.1,1.2"), "{e:?}");
    }
    s.finish().await;
}

#[tokio::test]
async fn malformed_heart_beat_header_is_refused() {
    let s = Scene::start("").await;
    for hb in ["abc", "1000", "-1,0", "10,x", "1000;1000"] {
        let raw = format!("CONNECT\naccept-version:1.2\nhost:localhost\nheart-beat:{hb}\n\n\0");
        let e = s
            .fatal_raw(false, raw.as_bytes(), &["invalid heart-beat header"])
            .await;
        assert!(e.headers.get("message").unwrap().contains(hb), "{e:?}");
    }
    s.finish().await;
}

#[tokio::test]
async fn malformed_header_lines_are_refused() {
    let s = Scene::start("").await;
    // No colon.
    s.fatal_raw(
        true,
        b"SEND\ndestination:/queue/a\nnocolon\n\nx\0",
        &["header line 2", "no ':' separator"],
    )
    .await;
    // Invalid UTF-8 in a value and in a name.
    s.fatal_raw(
        true,
        b"SEND\ndestination:/queue/a\nk:\xff\xfe\n\nx\0",
        &["invalid UTF-8", "header line 2"],
    )
    .await;
    s.fatal_raw(
        true,
        b"SEND\n\xc3\x28:v\ndestination:/queue/a\n\nx\0",
        &["invalid UTF-8", "header line 1"],
    )
    .await;
    // Invalid UTF-8 in a CONNECT header, before the session exists.
    s.fatal_raw(
        false,
        b"CONNECT\naccept-version:1.2\nlogin:\x80\n\n\0",
        &["invalid UTF-8"],
    )
    .await;
    s.finish().await;
}

#[tokio::test]
async fn undefined_escape_sequences_are_refused_in_1_2() {
    let s = Scene::start("").await;
    let e = s
        .fatal_raw(
            true,
            b"SEND\ndestination:/queue/a\nk:a\\tb\n\nx\0",
            &["undefined escape sequence", "header line 2"],
        )
        .await;
    assert!(e.headers.get("message").unwrap().contains("\\t"), "{e:?}");
    // In a header name, and a lone trailing backslash.
    s.fatal_raw(
        true,
        b"SEND\nk\\x:v\ndestination:/queue/a\n\nx\0",
        &["undefined escape sequence"],
    )
    .await;
    s.fatal_raw(
        true,
        b"SEND\ndestination:/queue/a\nk:v\\\n\nx\0",
        &["undefined escape sequence"],
    )
    .await;
    s.finish().await;
}

#[tokio::test]
async fn bad_content_length_is_refused() {
    let s = Scene::start("").await;
    for cl in ["abc", "-5", "1e3", "", "0x10"] {
        let raw = format!("SEND\ndestination:/queue/cl\ncontent-length:{cl}\n\nx\0");
        s.fatal_raw(true, raw.as_bytes(), &["invalid content-length"])
            .await;
    }
    // Too large to be a length at all.
    s.fatal_raw(
        true,
        b"SEND\ndestination:/queue/cl\ncontent-length:99999999999999999999999\n\nx\0",
        &["body longer than"],
    )
    .await;
    // content-length shorter than the body: no NUL where one must be.
    s.fatal_raw(
        true,
        b"SEND\ndestination:/queue/cl\ncontent-length:2\n\nabcdef\0",
        &["content-length 2", "not followed by a NUL"],
    )
    .await;
    // None of them was delivered.
    let mut c = connect_retry(s.addr()).await;
    c.subscribe("cl", "/queue/cl", "auto", &[]).await;
    c.expect_silence(Duration::from_millis(100)).await;
    c.disconnect().await;
    s.finish().await;
}

// ---------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------

const SMALL_FRAME_LIMITS: &str = "[limits]\nmax-body-bytes = 1024\nmax-headers = 8\n\
max-header-line-bytes = 256\nmax-header-bytes = 1024\n";

#[tokio::test]
async fn frame_size_limits_are_enforced() {
    let s = Scene::start(SMALL_FRAME_LIMITS).await;
    // At the limits everything still works.
    let mut ok = connect_retry(s.addr()).await;
    ok.send_msg("/queue/limits", &"x".repeat(1024), &[]).await;

    // Body over max-body-bytes, without and with content-length.
    let mut raw = b"SEND\ndestination:/queue/limits\n\n".to_vec();
    raw.extend(std::iter::repeat_n(b'x', 2000));
    raw.push(0);
    s.fatal_raw(true, &raw, &["body longer than 1024 bytes"])
        .await;
    let raw = format!(
        "SEND\ndestination:/queue/limits\ncontent-length:1025\n\n{}\0",
        "x".repeat(1025)
    );
    s.fatal_raw(true, raw.as_bytes(), &["body longer than 1024 bytes"])
        .await;

    // More than max-headers headers.
    let mut raw = "SEND\ndestination:/queue/limits\n".to_owned();
    for i in 0..20 {
        raw.push_str(&format!("h{i}:v\n"));
    }
    raw.push_str("\nx\0");
    s.fatal_raw(true, raw.as_bytes(), &["more than 8 headers"])
        .await;

    // A header line over max-header-line-bytes.
    let raw = format!(
        "SEND\ndestination:/queue/limits\nlong:{}\n\nx\0",
        "v".repeat(1000)
    );
    s.fatal_raw(true, raw.as_bytes(), &["header line longer than 256 bytes"])
        .await;
    // ... also as the command line, before CONNECT.
    let raw = format!("{}\n\n\0", "C".repeat(300));
    s.fatal_raw(
        false,
        raw.as_bytes(),
        &["header line longer than 256 bytes"],
    )
    .await;

    // A header section over max-header-bytes, though every line and the
    // header count are within their limits.
    let mut raw = "SEND\ndestination:/queue/limits\n".to_owned();
    for i in 0..6 {
        raw.push_str(&format!("h{i}:{}\n", "v".repeat(200)));
    }
    raw.push_str("\nx\0");
    s.fatal_raw(
        true,
        raw.as_bytes(),
        &["header section longer than 1024 bytes"],
    )
    .await;

    // Only the message within the limits was delivered.
    ok.subscribe("l", "/queue/limits", "auto", &[]).await;
    assert_eq!(ok.recv_message().await.body.len(), 1024);
    ok.expect_silence(Duration::from_millis(100)).await;
    ok.disconnect().await;
    s.finish().await;
}

#[tokio::test]
async fn a_large_oversized_body_still_gets_an_error() {
    // The client keeps writing long after the broker has given up on the
    // frame: the ERROR must still reach it.
    let s = Scene::start(SMALL_FRAME_LIMITS).await;
    let mut r = Stomp::connect_1_2(s.addr()).await;
    let mut raw = b"SEND\ndestination:/queue/big\n\n".to_vec();
    raw.extend(std::iter::repeat_n(b'x', 1 << 20));
    raw.push(0);
    // The write may fail: the broker closes the connection mid-body.
    let _ = r.try_write(&raw).await;
    let e = r.expect_error_then_silence().await;
    assert_error(&e, &["body longer than 1024 bytes"]);
    s.finish().await;
}

#[tokio::test]
async fn too_many_subscriptions_and_transactions_are_refused() {
    let s = Scene::start(
        "[limits]\nmax-subscriptions-per-connection = 2\nmax-transactions-per-connection = 2\n",
    )
    .await;
    let mut c = connect_retry(s.addr()).await;
    c.subscribe("a", "/queue/s1", "auto", &[]).await;
    c.subscribe("b", "/topic/s2", "auto", &[]).await;
    // The limit counts subscriptions held, not ever made.
    c.request(Frame::new(Command::Unsubscribe).header("id", "a"))
        .await;
    c.subscribe("c", "/queue/s3", "auto", &[]).await;
    c.send(
        Frame::new(Command::Subscribe)
            .header("id", "d")
            .header("destination", "/queue/s4"),
    )
    .await;
    expect_fatal(&mut c, &["too many subscriptions", "2"]).await;

    let mut c = connect_retry(s.addr()).await;
    for t in ["t1", "t2"] {
        c.request(Frame::new(Command::Begin).header("transaction", t))
            .await;
    }
    c.request(Frame::new(Command::Commit).header("transaction", "t1"))
        .await;
    c.request(Frame::new(Command::Begin).header("transaction", "t3"))
        .await;
    // A message sent in an open transaction when the connection dies is
    // rolled back.
    c.send(send_frame("/queue/tx-limit").header("transaction", "t3"))
        .await;
    c.send(Frame::new(Command::Begin).header("transaction", "t4"))
        .await;
    expect_fatal(&mut c, &["too many open transactions", "2"]).await;
    let mut d = connect_retry(s.addr()).await;
    d.subscribe("x", "/queue/tx-limit", "auto", &[]).await;
    d.expect_silence(Duration::from_millis(100)).await;
    d.disconnect().await;
    s.finish().await;
}

#[tokio::test]
async fn too_many_connections_are_refused() {
    let s = Scene::start("[limits]\nmax-connections = 2\n").await;
    // The bystander holds one slot, this client the other.
    let mut a = connect_retry(s.addr()).await;
    // A third connection is refused without being asked anything...
    let mut third = Stomp::open(s.addr()).await;
    let e = third.expect_error_then_silence().await;
    assert_error(&e, &["too many connections"]);
    // ... and so is one that sends CONNECT straight away.
    let mut fourth = Stomp::open(s.addr()).await;
    let _ = fourth
        .try_write(b"CONNECT\naccept-version:1.2\nhost:localhost\n\n\0")
        .await;
    let e = fourth.expect_error_then_silence().await;
    assert_error(&e, &["too many connections"]);
    // The connections that were admitted are unaffected.
    a.send_msg("/queue/conn", "still here", &[]).await;
    a.subscribe("c", "/queue/conn", "auto", &[]).await;
    assert_eq!(body(&a.recv_message().await), "still here");
    // Once one leaves, a new client gets in (finish() connects one).
    a.disconnect().await;
    s.finish().await;
}

// ---------------------------------------------------------------------------
// SEND
// ---------------------------------------------------------------------------

#[tokio::test]
async fn send_destination_must_be_valid() {
    let s = Scene::start("").await;
    s.fatal_frame(
        Frame::new(Command::Send).body(&b"x"[..]),
        &["SEND frame has no destination header"],
    )
    .await;
    s.fatal_frame(
        send_frame("/foo/bar"),
        &["unsupported destination", "/foo/bar", "/queue/NAME"],
    )
    .await;
    s.fatal_frame(send_frame("queue/a"), &["unsupported destination"])
        .await;
    s.fatal_frame(send_frame(""), &["unsupported destination"])
        .await;
    for empty in ["/queue/", "/topic/", "/temp-queue/"] {
        s.fatal_frame(send_frame(empty), &["invalid destination name", empty])
            .await;
    }
    let long = format!("/queue/{}", "n".repeat(600));
    s.fatal_frame(send_frame(&long), &["invalid destination name"])
        .await;
    s.finish().await;
}

#[tokio::test]
async fn send_header_values_must_be_valid() {
    let s = Scene::start("").await;
    for p in ["high", "10", "-1", "4.5"] {
        s.fatal_frame(
            send_frame("/queue/h").header("priority", p),
            &["invalid priority header", p, "0 to 9"],
        )
        .await;
    }
    for x in ["tomorrow", "-1", "1.5"] {
        s.fatal_frame(
            send_frame("/queue/h").header("expires", x),
            &["invalid expires header", x],
        )
        .await;
    }
    for p in ["yes", "1", ""] {
        s.fatal_frame(
            send_frame("/queue/h").header("persistent", p),
            &["invalid persistent header", "true or false"],
        )
        .await;
    }
    // Nothing invalid was delivered.
    let mut c = connect_retry(s.addr()).await;
    c.subscribe("h", "/queue/h", "auto", &[]).await;
    c.expect_silence(Duration::from_millis(100)).await;
    c.disconnect().await;
    s.finish().await;
}

// ---------------------------------------------------------------------------
// SUBSCRIBE / UNSUBSCRIBE
// ---------------------------------------------------------------------------

fn sub_frame(id: &str, dest: &str) -> Frame {
    Frame::new(Command::Subscribe)
        .header("id", id)
        .header("destination", dest)
}

#[tokio::test]
async fn subscribe_needs_a_unique_id_and_a_destination() {
    let s = Scene::start("").await;
    s.fatal_frame(
        Frame::new(Command::Subscribe).header("destination", "/queue/s"),
        &["SUBSCRIBE frame has no id header"],
    )
    .await;
    s.fatal_frame(
        Frame::new(Command::Subscribe).header("id", "s"),
        &["SUBSCRIBE frame has no destination header"],
    )
    .await;
    s.fatal_frame(sub_frame("s", "/nope/x"), &["unsupported destination"])
        .await;

    // A duplicate id on the same connection; its first subscription's
    // unacknowledged message goes back to the queue for others.
    let mut p = connect_retry(s.addr()).await;
    p.send_msg("/queue/dup", "m1", &[]).await;
    let mut c = connect_retry(s.addr()).await;
    c.subscribe("s1", "/queue/dup", "client-individual", &[])
        .await;
    assert_eq!(body(&c.recv_message().await), "m1");
    c.send(sub_frame("s1", "/queue/other").header("ack", "auto"))
        .await;
    expect_fatal(&mut c, &["subscription id 's1' is already in use"]).await;
    p.subscribe("again", "/queue/dup", "client-individual", &[])
        .await;
    let m = p.recv_message().await;
    assert_eq!(body(&m), "m1");
    assert_eq!(m.headers.get("redelivered"), Some("true"), "{m:?}");
    p.ack(&m).await;
    p.disconnect().await;
    s.finish().await;
}

#[tokio::test]
async fn subscribe_options_must_be_valid() {
    let s =
        Scene::start("[limits]\nmax-prefetch = 100\n[destinations]\ndefault-prefetch = 50\n").await;
    for mode in ["sometimes", "CLIENT", ""] {
        s.fatal_frame(
            sub_frame("s", "/queue/o").header("ack", mode),
            &["invalid ack mode", "auto, client or client-individual"],
        )
        .await;
    }
    for (name, v) in [
        ("activemq.prefetchSize", "0"),
        ("activemq.prefetchSize", "lots"),
        ("activemq.prefetchSize", "101"),
        ("activemq.prefetchSize", "-1"),
        ("prefetch-count", "0"),
        ("prefetch-count", "100000"),
    ] {
        s.fatal_frame(
            sub_frame("s", "/queue/o").header(name, v),
            &["invalid", name, v, "1 to 100", "max-prefetch"],
        )
        .await;
    }
    s.fatal_frame(
        sub_frame("s", "/queue/o").header("selector", "color = = 'red'"),
        &["invalid selector at position 8"],
    )
    .await;
    // The limit itself is allowed.
    let mut c = connect_retry(s.addr()).await;
    c.subscribe(
        "s",
        "/queue/o",
        "client",
        &[("activemq.prefetchSize", "100")],
    )
    .await;
    c.disconnect().await;
    s.finish().await;
}

#[tokio::test]
async fn unsubscribe_of_an_unknown_id_is_refused() {
    let s = Scene::start("").await;
    s.fatal_frame(
        Frame::new(Command::Unsubscribe).header("id", "nope"),
        &["no subscription with id 'nope'"],
    )
    .await;
    s.fatal_frame(
        Frame::new(Command::Unsubscribe),
        &["UNSUBSCRIBE frame has no id header"],
    )
    .await;
    // Unsubscribing twice.
    let mut c = connect_retry(s.addr()).await;
    c.subscribe("u", "/queue/u", "auto", &[]).await;
    c.request(Frame::new(Command::Unsubscribe).header("id", "u"))
        .await;
    c.send(Frame::new(Command::Unsubscribe).header("id", "u"))
        .await;
    expect_fatal(&mut c, &["no subscription with id 'u'"]).await;
    s.finish().await;
}

// ---------------------------------------------------------------------------
// ACK / NACK
// ---------------------------------------------------------------------------

#[tokio::test]
async fn ack_and_nack_of_unknown_ids_are_refused() {
    let s = Scene::start("").await;
    for (cmd, id) in [
        (Command::Ack, "999"),
        (Command::Nack, "12345"),
        (Command::Ack, "not-a-number"),
    ] {
        s.fatal_frame(
            Frame::new(cmd).header("id", id),
            &[&format!("{cmd} failed"), "no unacknowledged message", id],
        )
        .await;
    }
    s.fatal_frame(Frame::new(Command::Ack), &["ACK frame has no id header"])
        .await;

    // 1.1 names messages by message-id (and subscription).
    let mut c = Stomp::connect_with(s.addr(), &[("accept-version", "1.1"), ("host", "x")]).await;
    c.send(
        Frame::new(Command::Ack)
            .header("message-id", "ID:nope-1")
            .header("subscription", "s"),
    )
    .await;
    expect_fatal(
        &mut c,
        &[
            "ACK failed",
            "no unacknowledged message with message-id 'ID:nope-1'",
        ],
    )
    .await;
    let mut c = Stomp::connect_with(s.addr(), &[("accept-version", "1.1"), ("host", "x")]).await;
    c.send(Frame::new(Command::Nack).header("subscription", "s"))
        .await;
    expect_fatal(&mut c, &["NACK frame has no message-id header"]).await;

    // An id that belongs to another connection's delivery is unknown here.
    let mut p = connect_retry(s.addr()).await;
    p.send_msg("/queue/acks", "m1", &[]).await;
    p.subscribe("p", "/queue/acks", "client-individual", &[])
        .await;
    let m = p.recv_message().await;
    let tag = m.headers.get("ack").unwrap().to_owned();
    s.fatal_frame(
        Frame::new(Command::Ack).header("id", tag.as_str()),
        &["no unacknowledged message", &tag],
    )
    .await;
    p.ack(&m).await;
    p.disconnect().await;
    s.finish().await;
}

#[tokio::test]
async fn double_ack_is_refused() {
    let s = Scene::start("").await;
    let mut c = connect_retry(s.addr()).await;
    c.send_msg("/queue/dbl", "m1", &[]).await;
    c.send_msg("/queue/dbl", "m2", &[]).await;
    c.subscribe("d", "/queue/dbl", "client-individual", &[])
        .await;
    let m1 = c.recv_message().await;
    let m2 = c.recv_message().await;
    c.ack(&m1).await;
    c.send(
        Frame::new(Command::Ack)
            .header("id", m1.headers.get("ack").unwrap())
            .header("receipt", "again"),
    )
    .await;
    let e = expect_fatal(&mut c, &["ACK failed", "already acknowledged"]).await;
    assert_eq!(e.headers.get("receipt-id"), Some("again"));
    // m1 stays acknowledged; m2 (never acknowledged) is redelivered once.
    let mut d = connect_retry(s.addr()).await;
    d.subscribe("d", "/queue/dbl", "client-individual", &[])
        .await;
    let m = d.recv_message().await;
    assert_eq!(body(&m), body(&m2));
    assert_eq!(m.headers.get("redelivered"), Some("true"));
    d.ack(&m).await;
    d.expect_silence(Duration::from_millis(100)).await;
    d.disconnect().await;
    s.finish().await;
}

// ---------------------------------------------------------------------------
// Transactions
// ---------------------------------------------------------------------------

#[tokio::test]
async fn transaction_misuse_is_refused() {
    let s = Scene::start("").await;
    // BEGIN twice with the same id; the open transaction's SEND is rolled
    // back when the connection dies.
    let mut c = connect_retry(s.addr()).await;
    c.request(Frame::new(Command::Begin).header("transaction", "t1"))
        .await;
    c.request(send_frame("/queue/tx").header("transaction", "t1"))
        .await;
    c.send(Frame::new(Command::Begin).header("transaction", "t1"))
        .await;
    expect_fatal(&mut c, &["transaction 't1' is already open"]).await;

    for cmd in [Command::Commit, Command::Abort] {
        s.fatal_frame(
            Frame::new(cmd).header("transaction", "nope"),
            &["unknown transaction 'nope'"],
        )
        .await;
    }
    for cmd in [Command::Begin, Command::Commit, Command::Abort] {
        s.fatal_frame(
            Frame::new(cmd),
            &[&format!("{cmd} frame has no transaction header")],
        )
        .await;
    }
    // COMMIT after ABORT: the transaction is gone.
    let mut c = connect_retry(s.addr()).await;
    c.request(Frame::new(Command::Begin).header("transaction", "t2"))
        .await;
    c.request(Frame::new(Command::Abort).header("transaction", "t2"))
        .await;
    c.send(Frame::new(Command::Commit).header("transaction", "t2"))
        .await;
    expect_fatal(&mut c, &["unknown transaction 't2'"]).await;

    // SEND in an unknown transaction.
    s.fatal_frame(
        send_frame("/queue/tx").header("transaction", "ghost"),
        &["unknown transaction 'ghost'"],
    )
    .await;

    // ACK in an unknown transaction; the message stays unacknowledged and
    // is redelivered.
    let mut c = connect_retry(s.addr()).await;
    c.send_msg("/queue/tx-ack", "m1", &[]).await;
    c.subscribe("a", "/queue/tx-ack", "client-individual", &[])
        .await;
    let m = c.recv_message().await;
    c.send(
        Frame::new(Command::Ack)
            .header("id", m.headers.get("ack").unwrap())
            .header("transaction", "ghost"),
    )
    .await;
    expect_fatal(&mut c, &["unknown transaction 'ghost'"]).await;

    let mut d = connect_retry(s.addr()).await;
    d.subscribe("a", "/queue/tx-ack", "client-individual", &[])
        .await;
    let m = d.recv_message().await;
    assert_eq!(body(&m), "m1");
    assert_eq!(m.headers.get("redelivered"), Some("true"));
    d.ack(&m).await;
    // Nothing sent in a transaction that never committed was delivered.
    d.subscribe("t", "/queue/tx", "auto", &[]).await;
    d.expect_silence(Duration::from_millis(100)).await;
    d.disconnect().await;
    s.finish().await;
}

// ---------------------------------------------------------------------------
// Server-only commands, client ids, receipts on errors
// ---------------------------------------------------------------------------

#[tokio::test]
async fn server_only_commands_from_a_client_are_refused() {
    let s = Scene::start("").await;
    for cmd in [
        Command::Message,
        Command::Receipt,
        Command::Error,
        Command::Connected,
    ] {
        s.fatal_frame(
            Frame::new(cmd)
                .header("destination", "/queue/x")
                .header("message-id", "fake")
                .header("subscription", "by-queue")
                .header("receipt-id", "r"),
            &[cmd.as_str(), "sent by servers, not clients"],
        )
        .await;
    }
    s.finish().await;
}

#[tokio::test]
async fn client_id_already_connected_is_refused() {
    let s = Scene::start("").await;
    let mut a = Stomp::connect_with(
        s.addr(),
        &[("accept-version", "1.2"), ("client-id", "app-1")],
    )
    .await;
    s.fatal_raw(
        false,
        b"CONNECT\naccept-version:1.2\nclient-id:app-1\n\n\0",
        &["client-id 'app-1' is already connected"],
    )
    .await;
    s.fatal_raw(
        false,
        b"CONNECT\naccept-version:1.2\nclient-id:\n\n\0",
        &["client-id must not be empty"],
    )
    .await;
    // The first holder of the id is unaffected.
    a.send_msg("/queue/cid", "m", &[]).await;
    a.subscribe("c", "/queue/cid", "auto", &[]).await;
    assert_eq!(body(&a.recv_message().await), "m");
    a.disconnect().await;
    // Once it has left, the id can be used again.
    let deadline = Instant::now() + WAIT;
    loop {
        let mut r = Stomp::open(s.addr()).await;
        r.try_write(b"CONNECT\naccept-version:1.2\nclient-id:app-1\n\n\0")
            .await
            .unwrap();
        let f = r.frame_or_close().await.unwrap();
        if f.command == Command::Connected {
            break;
        }
        assert_error(&f, &["already connected"]);
        assert!(Instant::now() < deadline, "client-id never released");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.finish().await;
}

#[tokio::test]
async fn errors_carry_the_receipt_id_of_the_offending_frame() {
    let s = Scene::start("").await;
    let e = s
        .fatal_frame(
            send_frame("/foo/bar").header("receipt", "r-send"),
            &["unsupported destination"],
        )
        .await;
    assert_eq!(e.headers.get("receipt-id"), Some("r-send"));
    let e = s
        .fatal_frame(
            sub_frame("s", "/queue/r")
                .header("ack", "bogus")
                .header("receipt", "r-sub"),
            &["invalid ack mode"],
        )
        .await;
    assert_eq!(e.headers.get("receipt-id"), Some("r-sub"));
    let e = s
        .fatal_frame(
            Frame::new(Command::Ack)
                .header("id", "42")
                .header("receipt", "r-ack"),
            &["ACK failed"],
        )
        .await;
    assert_eq!(e.headers.get("receipt-id"), Some("r-ack"));
    let e = s
        .fatal_frame(
            Frame::new(Command::Commit)
                .header("transaction", "none")
                .header("receipt", "r-commit"),
            &["unknown transaction"],
        )
        .await;
    assert_eq!(e.headers.get("receipt-id"), Some("r-commit"));
    // Also on a refused CONNECT, and with characters that need escaping.
    let e = s
        .fatal_raw(
            false,
            b"CONNECT\naccept-version:9.9\nreceipt:r-connect\n\n\0",
            &["none of the offered protocol versions"],
        )
        .await;
    assert_eq!(e.headers.get("receipt-id"), Some("r-connect"));
    let e = s
        .fatal_frame(
            send_frame("/foo/bar").header("receipt", "r:1\\x"),
            &["unsupported destination"],
        )
        .await;
    assert_eq!(e.headers.get("receipt-id"), Some("r:1\\x"));
    s.finish().await;
}

// ---------------------------------------------------------------------------
// Slow peers
// ---------------------------------------------------------------------------

/// Writes `chunks` one at a time, each once the broker has been silent for
/// 40 ms after the previous one, until the broker answers with a frame
/// (returned) or closes the connection (`None`).
async fn trickle<'a>(r: &mut Stomp, chunks: impl IntoIterator<Item = &'a [u8]>) -> Option<Frame> {
    for chunk in chunks {
        if r.try_write(chunk).await.is_err() {
            return None;
        }
        match r.next(Duration::from_millis(40)).await {
            Next::Timeout | Next::Heartbeat => continue,
            Next::Frame(f) => return Some(f),
            Next::Closed => return None,
        }
    }
    None
}

#[tokio::test]
async fn a_partial_frame_is_cut_off_after_frame_ms() {
    let s = Scene::start("[timeouts]\nframe-ms = 300\n").await;
    // After CONNECT: half a SEND, then nothing.
    let mut r = Stomp::connect_1_2(s.addr()).await;
    r.try_write(b"SEND\ndestination:/queue/loris\nhalf")
        .await
        .unwrap();
    let start = Instant::now();
    let e = r.expect_error_then_silence().await;
    assert_between(
        start.elapsed(),
        Duration::from_millis(280),
        Duration::from_millis(2000),
        "partial frame cut off",
    );
    assert_error(&e, &["incomplete frame", "300 ms"]);

    // A body that never ends (content-length promises more).
    let mut r = Stomp::connect_1_2(s.addr()).await;
    r.try_write(b"SEND\ndestination:/queue/loris\ncontent-length:100\n\nabc")
        .await
        .unwrap();
    let start = Instant::now();
    let e = r.expect_error_then_silence().await;
    assert_between(
        start.elapsed(),
        Duration::from_millis(280),
        Duration::from_millis(2000),
        "partial body cut off",
    );
    assert_error(&e, &["incomplete frame"]);

    // Before CONNECT: a CONNECT frame that never completes.
    let mut r = Stomp::open(s.addr()).await;
    r.try_write(b"CONNECT\naccept-version:1.2\n").await.unwrap();
    let start = Instant::now();
    let e = r.expect_error_then_silence().await;
    assert_between(
        start.elapsed(),
        Duration::from_millis(280),
        Duration::from_millis(2000),
        "partial CONNECT cut off",
    );
    assert_error(&e, &["incomplete frame"]);
    s.finish().await;
}

#[tokio::test]
async fn a_partial_frame_is_cut_off_no_later_than_frame_ms() {
    let s = Scene::start("[timeouts]\nframe-ms = 300\n").await;
    let mut r = Stomp::connect_1_2(s.addr()).await;
    r.try_write(b"SEND\ndestination:/queue/loris\nhalf")
        .await
        .unwrap();
    let start = Instant::now();
    let e = r.expect_error_then_silence().await;
    assert_error(&e, &["incomplete frame", "300 ms"]);
    assert_between(
        start.elapsed(),
        Duration::from_millis(280),
        Duration::from_millis(400),
        "partial frame cut off",
    );
    s.finish().await;
}

#[tokio::test]
async fn a_frame_trickling_in_byte_by_byte_is_cut_off_after_frame_ms() {
    let s = Scene::start("[timeouts]\nframe-ms = 300\n").await;
    let mut r = Stomp::connect_1_2(s.addr()).await;
    let frame = format!(
        "SEND\ndestination:/queue/loris\nx:{}\n\n\0",
        "y".repeat(200)
    );
    let start = Instant::now();
    // Each byte arrives well within frame-ms of the previous one, but the
    // frame as a whole takes far longer.
    let error = trickle(&mut r, frame.as_bytes().chunks(1)).await;
    let e = error.expect("the trickling frame was not cut off with an ERROR");
    assert_between(
        start.elapsed(),
        Duration::from_millis(280),
        Duration::from_millis(2000),
        "trickling frame cut off",
    );
    assert_error(&e, &["incomplete frame"]);
    r.expect_closed_silently().await;
    s.finish().await;
}

#[tokio::test]
async fn a_connection_without_connect_is_closed_after_connect_ms() {
    let s = Scene::start("[timeouts]\nconnect-ms = 300\n").await;
    let start = Instant::now();
    let mut r = Stomp::open(s.addr()).await;
    let e = r.expect_error_then_silence().await;
    assert_between(
        start.elapsed(),
        Duration::from_millis(250),
        Duration::from_millis(2000),
        "silent connection closed",
    );
    assert_error(&e, &["no CONNECT frame received within 300 ms"]);

    // Heart-beats before CONNECT do not keep it open.
    let start = Instant::now();
    let mut r = Stomp::open(s.addr()).await;
    let error = trickle(&mut r, std::iter::repeat_n(&b"\n"[..], 100)).await;
    let e = error.expect("the EOL-only connection was not closed with an ERROR");
    assert_between(
        start.elapsed(),
        Duration::from_millis(250),
        Duration::from_millis(2000),
        "EOL-only connection closed",
    );
    assert_error(&e, &["no CONNECT frame received"]);
    r.expect_closed_silently().await;
    s.finish().await;
}
