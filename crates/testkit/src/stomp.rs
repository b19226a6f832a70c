//! The one raw STOMP test connection: frames (or bytes) out, frames and
//! heart-beats in, every read with a deadline, nothing hidden.
//!
//! [`Stomp`] has three kinds of methods, for three kinds of test:
//!
//! * **asserting** ([`Stomp::connect`], [`Stomp::send`], [`Stomp::recv`],
//!   [`Stomp::request`], [`Stomp::expect_error`], ...): the broker is
//!   expected to behave, and anything else — a refusal, a close, a late
//!   frame — panics with what came instead. Most tests.
//! * **byte-level** ([`Stomp::open`], [`Stomp::write`], [`Stomp::next`],
//!   [`Stomp::frame`], [`Stomp::expect_closed_silently`], ...): malformed
//!   input, heart-beats and timing, where the test needs to see every
//!   heart-beat and exactly when the broker closes.
//! * **reporting** ([`Stomp::link`], [`Stomp::try_connect`], [`Stomp::try_send`],
//!   [`Stomp::next_frame`], [`Stomp::try_request`]): for clients that live
//!   through their broker's death (`kill -9`, fencing, takeover) and must
//!   notice it rather than panic.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use halyard_stomp::{CodecError, Command, Frame, Item, Limits, Outbound, StompCodec, Version};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

/// Default time to wait for an expected frame.
pub const WAIT: Duration = Duration::from_secs(10);

/// Body text of a frame.
pub fn body(f: &Frame) -> String {
    String::from_utf8_lossy(&f.body).into_owned()
}

/// What [`Stomp::next`] saw.
#[derive(Debug)]
pub enum Next {
    /// A frame arrived.
    Frame(Frame),
    /// A heart-beat (a bare EOL) arrived.
    Heartbeat,
    /// The broker closed (or reset) the connection.
    Closed,
    /// Nothing arrived in time.
    Timeout,
}

/// What [`Stomp::next_frame`] saw (heart-beats are skipped).
#[derive(Debug)]
pub enum Got {
    /// A frame arrived.
    Frame(Frame),
    /// The connection is gone: closed, reset, or broken mid-frame.
    Closed,
    /// Nothing arrived in time.
    Timeout,
}

/// A raw STOMP connection to a broker; see the [module](self) for its
/// three kinds of methods.
pub struct Stomp {
    conn: Framed<TcpStream, StompCodec>,
    addr: SocketAddr,
    next_receipt: u64,
    /// MESSAGE frames that arrived while a request waited for its RECEIPT;
    /// the next reads return them first.
    stash: VecDeque<Frame>,
}

impl Stomp {
    fn new(stream: TcpStream, addr: SocketAddr) -> Stomp {
        Stomp {
            conn: Framed::new(stream, StompCodec::new(Limits::default())),
            addr,
            next_receipt: 0,
            stash: VecDeque::new(),
        }
    }

    /// Where this connection goes.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// From now on, encode and decode as STOMP `v` (after a CONNECTED).
    pub fn set_version(&mut self, v: Version) {
        self.conn.codec_mut().set_version(v);
    }

    // -----------------------------------------------------------------
    // Connecting
    // -----------------------------------------------------------------

    /// Opens a TCP connection without sending anything.
    pub async fn open(addr: SocketAddr) -> Stomp {
        let stream = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
        Stomp::new(stream, addr)
    }

    /// Opens and CONNECTs with STOMP 1.2.
    pub async fn connect(addr: SocketAddr) -> Stomp {
        Self::connect_with(addr, &[("accept-version", "1.2"), ("host", "localhost")]).await
    }

    /// Opens and CONNECTs with the given headers; panics unless CONNECTED.
    /// The codec then follows the negotiated version.
    pub async fn connect_with(addr: SocketAddr, headers: &[(&str, &str)]) -> Stomp {
        match Self::try_connect_with(addr, headers).await {
            Ok(s) => s,
            Err(reply) => panic!("CONNECT refused: {reply:?}"),
        }
    }

    /// Like [`Stomp::connect_with`], but a refusal is returned (the frame
    /// the broker answered with) instead of panicking.
    pub async fn try_connect_with(
        addr: SocketAddr,
        headers: &[(&str, &str)],
    ) -> Result<Stomp, Frame> {
        let mut s = Self::open(addr).await;
        let mut f = Frame::new(Command::Connect);
        for (k, v) in headers {
            f.headers.push(*k, *v);
        }
        s.send(f).await;
        let reply = s.recv().await;
        if reply.command != Command::Connected {
            return Err(reply);
        }
        let v = reply
            .headers
            .get("version")
            .and_then(Version::parse)
            .unwrap_or_else(|| panic!("CONNECTED without a known version: {reply:?}"));
        s.set_version(v);
        Ok(s)
    }

    /// Opens and writes the bytes of a STOMP 1.2 CONNECT; panics unless
    /// CONNECTED. The codec then speaks 1.2.
    pub async fn connect_1_2(addr: SocketAddr) -> Stomp {
        let mut r = Stomp::open(addr).await;
        r.write(b"CONNECT\naccept-version:1.2\nhost:localhost\n\n\0")
            .await;
        match r.next(WAIT).await {
            Next::Frame(f) if f.command == Command::Connected => {}
            other => panic!("CONNECT refused: {other:?}"),
        }
        r.set_version(Version::V1_2);
        r
    }

    /// Opens, writes `connect` (a whole CONNECT or STOMP frame) and returns
    /// the CONNECTED frame; panics on anything else. The codec then follows
    /// the negotiated version.
    pub async fn connect_with_bytes(addr: SocketAddr, connect: &[u8]) -> (Stomp, Frame) {
        let mut r = Stomp::open(addr).await;
        r.write(connect).await;
        let f = r.frame().await;
        assert_eq!(f.command, Command::Connected, "CONNECT refused: {f:?}");
        let v = f
            .headers
            .get("version")
            .and_then(Version::parse)
            .unwrap_or_else(|| panic!("CONNECTED without a known version: {f:?}"));
        r.set_version(v);
        (r, f)
    }

    /// Connects (within 2 s) and CONNECTs with STOMP 1.2 and `extra`
    /// headers, waiting up to `within` for the answer; `Err` with what came
    /// instead of a CONNECTED: [`Got::Closed`] if nothing serves STOMP at
    /// `addr` (not yet, or no more) or it closed the connection, the frame
    /// it refused with, or [`Got::Timeout`].
    pub async fn try_connect(
        addr: SocketAddr,
        extra: &[(&str, &str)],
        within: Duration,
    ) -> Result<Stomp, Got> {
        let stream =
            match tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => stream,
                _ => return Err(Got::Closed),
            };
        let _ = stream.set_nodelay(true);
        let mut s = Stomp::new(stream, addr);
        let mut f = Frame::new(Command::Connect)
            .header("accept-version", "1.2")
            .header("host", "localhost");
        for (k, v) in extra {
            f.headers.push(*k, *v);
        }
        if !s.try_send(f).await {
            return Err(Got::Closed);
        }
        match s.next_frame(within).await {
            Got::Frame(f) if f.command == Command::Connected => {}
            other => return Err(other),
        }
        s.set_version(Version::V1_2);
        Ok(s)
    }

    /// A STOMP 1.2 connection to whatever serves `addr` now, for a client
    /// that fails over: `None` if nothing does, or it does not answer the
    /// CONNECT with CONNECTED within 5 s (see [`Stomp::try_connect`]).
    pub async fn link(addr: SocketAddr) -> Option<Stomp> {
        Stomp::try_connect(addr, &[], Duration::from_secs(5))
            .await
            .ok()
    }

    // -----------------------------------------------------------------
    // Writing
    // -----------------------------------------------------------------

    /// Encodes and sends a frame; panics if that fails.
    pub async fn send(&mut self, f: Frame) {
        self.conn
            .send(Outbound::Frame(f))
            .await
            .unwrap_or_else(|e| panic!("cannot send to {}: {e}", self.addr));
    }

    /// Encodes and sends a frame; false if the connection is gone.
    pub async fn try_send(&mut self, f: Frame) -> bool {
        self.conn.send(Outbound::Frame(f)).await.is_ok()
    }

    /// Writes raw bytes, bypassing the encoder, and flushes; panics if that
    /// fails.
    pub async fn write(&mut self, bytes: &[u8]) {
        self.try_write(bytes)
            .await
            .unwrap_or_else(|e| panic!("cannot write to {}: {e}", self.addr));
    }

    /// Writes raw bytes and flushes; fails if the broker already closed.
    pub async fn try_write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let s = self.conn.get_mut();
        s.write_all(bytes).await?;
        s.flush().await
    }

    // -----------------------------------------------------------------
    // Reading, asserting
    // -----------------------------------------------------------------

    /// The next frame (heart-beats skipped), within [`WAIT`].
    pub async fn recv(&mut self) -> Frame {
        self.recv_within(WAIT)
            .await
            .expect("expected a frame, got none in time")
    }

    /// The next frame within `t`, or `None` if none arrives; panics if the
    /// connection closes or breaks.
    pub async fn recv_within(&mut self, t: Duration) -> Option<Frame> {
        if let Some(f) = self.stash.pop_front() {
            return Some(f);
        }
        let deadline = tokio::time::Instant::now() + t;
        loop {
            match tokio::time::timeout_at(deadline, self.conn.next()).await {
                Err(_) => return None,
                Ok(None) => panic!("connection closed while waiting for a frame"),
                Ok(Some(Err(e))) => panic!("bad frame from broker: {e}"),
                Ok(Some(Ok(Item::Heartbeat))) => continue,
                Ok(Some(Ok(Item::Frame(f)))) => return Some(f),
            }
        }
    }

    /// The next MESSAGE frame.
    pub async fn recv_message(&mut self) -> Frame {
        let f = self.recv().await;
        assert_eq!(f.command, Command::Message, "expected MESSAGE, got {f:?}");
        f
    }

    /// Asserts that no frame (other than heart-beats) arrives within `t`.
    pub async fn expect_silence(&mut self, t: Duration) {
        if let Some(f) = self.recv_within(t).await {
            panic!("expected no frame, got {f:?}");
        }
    }

    /// Expects an ERROR frame and then the connection closing (any frames
    /// in between are allowed); returns the ERROR.
    pub async fn expect_error(&mut self) -> Frame {
        let f = self.recv().await;
        assert_eq!(f.command, Command::Error, "expected ERROR, got {f:?}");
        self.expect_closed().await;
        f
    }

    /// Expects the broker to close the connection within [`WAIT`]; returns
    /// the frames that came first.
    pub async fn expect_closed(&mut self) -> Vec<Frame> {
        let mut frames: Vec<Frame> = self.stash.drain(..).collect();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.conn.next()).await {
                Err(_) => panic!("connection not closed in time; got {frames:?}"),
                Ok(None) | Ok(Some(Err(_))) => return frames,
                Ok(Some(Ok(Item::Heartbeat))) => continue,
                Ok(Some(Ok(Item::Frame(f)))) => frames.push(f),
            }
        }
    }

    /// Sends `f` with a fresh receipt header and waits for the RECEIPT;
    /// MESSAGEs arriving meanwhile are kept for the next reads, anything
    /// else panics.
    pub async fn request(&mut self, mut f: Frame) {
        self.next_receipt += 1;
        let id = format!("rcpt-{}", self.next_receipt);
        f.headers.push("receipt", id.clone());
        self.send(f).await;
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let f = match tokio::time::timeout_at(deadline, self.conn.next()).await {
                Err(_) => panic!("no RECEIPT for {id} in time"),
                Ok(None) => panic!("connection closed while waiting for RECEIPT {id}"),
                Ok(Some(Err(e))) => panic!("bad frame from broker: {e}"),
                Ok(Some(Ok(Item::Heartbeat))) => continue,
                Ok(Some(Ok(Item::Frame(f)))) => f,
            };
            match f.command {
                Command::Receipt if f.headers.get("receipt-id") == Some(id.as_str()) => return,
                Command::Message => self.stash.push_back(f),
                _ => panic!("expected RECEIPT for {id}, got {f:?}"),
            }
        }
    }

    /// SEND with a receipt.
    pub async fn send_msg(&mut self, dest: &str, body: &str, headers: &[(&str, &str)]) {
        let mut f = Frame::new(Command::Send)
            .header("destination", dest)
            .body(body.as_bytes().to_vec());
        for (k, v) in headers {
            f.headers.push(*k, *v);
        }
        self.request(f).await;
    }

    /// SUBSCRIBE with a receipt.
    pub async fn subscribe(&mut self, id: &str, dest: &str, ack: &str, extra: &[(&str, &str)]) {
        let mut f = Frame::new(Command::Subscribe)
            .header("id", id)
            .header("destination", dest)
            .header("ack", ack);
        for (k, v) in extra {
            f.headers.push(*k, *v);
        }
        self.request(f).await;
    }

    /// ACK (1.2 style) with a receipt.
    pub async fn ack(&mut self, m: &Frame) {
        let f = Frame::new(Command::Ack).header("id", ack_id(m));
        self.request(f).await;
    }

    /// NACK (1.2 style) with a receipt.
    pub async fn nack(&mut self, m: &Frame) {
        let f = Frame::new(Command::Nack).header("id", ack_id(m));
        self.request(f).await;
    }

    /// DISCONNECT with a receipt, then wait for the close.
    pub async fn disconnect(mut self) {
        self.request(Frame::new(Command::Disconnect)).await;
        self.expect_closed().await;
    }

    // -----------------------------------------------------------------
    // Reading, byte-level
    // -----------------------------------------------------------------

    /// Whatever comes next within `within`, heart-beats included. An I/O
    /// error (e.g. a reset after an ERROR) counts as closed; an undecodable
    /// frame panics.
    pub async fn next(&mut self, within: Duration) -> Next {
        if let Some(f) = self.stash.pop_front() {
            return Next::Frame(f);
        }
        match tokio::time::timeout(within, self.conn.next()).await {
            Err(_) => Next::Timeout,
            Ok(None) | Ok(Some(Err(CodecError::Io(_)))) => Next::Closed,
            Ok(Some(Err(e))) => panic!("bad frame from broker: {e}"),
            Ok(Some(Ok(Item::Heartbeat))) => Next::Heartbeat,
            Ok(Some(Ok(Item::Frame(f)))) => Next::Frame(f),
        }
    }

    /// The next frame within [`WAIT`], heart-beats skipped; panics on a
    /// close or a timeout.
    pub async fn frame(&mut self) -> Frame {
        let deadline = Instant::now() + WAIT;
        loop {
            match self
                .next(deadline.saturating_duration_since(Instant::now()))
                .await
            {
                Next::Frame(f) => return f,
                Next::Heartbeat => continue,
                other => panic!("expected a frame, got {other:?}"),
            }
        }
    }

    /// The next frame, heart-beats skipped; `None` if the connection closed
    /// first. Panics if nothing happens within [`WAIT`].
    pub async fn frame_or_close(&mut self) -> Option<Frame> {
        let deadline = Instant::now() + WAIT;
        loop {
            match self
                .next(deadline.saturating_duration_since(Instant::now()))
                .await
            {
                Next::Frame(f) => return Some(f),
                Next::Heartbeat => continue,
                Next::Closed => return None,
                Next::Timeout => panic!("neither a frame nor a close within {WAIT:?}"),
            }
        }
    }

    /// Expects an ERROR frame (returned) and then the close, with no frame
    /// after the ERROR.
    pub async fn expect_error_then_silence(&mut self) -> Frame {
        let f = self
            .frame_or_close()
            .await
            .expect("connection closed without an ERROR frame");
        assert_eq!(f.command, Command::Error, "expected ERROR, got {f:?}");
        self.expect_closed_silently().await;
        f
    }

    /// Expects the broker to close the connection within [`WAIT`], with no
    /// frame first (heart-beats skipped); panics on a frame or a timeout.
    pub async fn expect_closed_silently(&mut self) {
        if let Some(f) = self.frame_or_close().await {
            panic!("expected the connection to close, got {f:?}");
        }
    }

    /// Expects a RECEIPT with this id as the next frame.
    pub async fn expect_receipt(&mut self, id: &str) {
        let f = self.frame().await;
        assert_eq!(f.command, Command::Receipt, "expected RECEIPT, got {f:?}");
        assert_eq!(f.headers.get("receipt-id"), Some(id));
    }

    // -----------------------------------------------------------------
    // Reading, reporting
    // -----------------------------------------------------------------

    /// The next frame (heart-beats skipped) within `within`, or how the
    /// wait ended: any error counts as the connection being gone.
    pub async fn next_frame(&mut self, within: Duration) -> Got {
        if let Some(f) = self.stash.pop_front() {
            return Got::Frame(f);
        }
        self.next_unstashed(within).await
    }

    /// The next frame from the connection itself, past the stash.
    pub async fn next_unstashed(&mut self, within: Duration) -> Got {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.conn.next()).await {
                Err(_) => return Got::Timeout,
                Ok(None) | Ok(Some(Err(_))) => return Got::Closed,
                Ok(Some(Ok(Item::Heartbeat))) => continue,
                Ok(Some(Ok(Item::Frame(f)))) => return Got::Frame(f),
            }
        }
    }

    /// Sends `f` with receipt `receipt` and waits for it, keeping MESSAGEs
    /// that arrive meanwhile; `Err` with what came instead (an ERROR, a
    /// close, nothing within [`WAIT`]).
    pub async fn try_request(&mut self, f: Frame, receipt: &str) -> Result<(), String> {
        if !self.try_send(f.header("receipt", receipt)).await {
            return Err("cannot write: closed".into());
        }
        loop {
            match self.next_unstashed(WAIT).await {
                Got::Frame(f)
                    if f.command == Command::Receipt
                        && f.headers.get("receipt-id") == Some(receipt) =>
                {
                    return Ok(());
                }
                Got::Frame(f) if f.command == Command::Message => self.stash.push_back(f),
                other => return Err(format!("{other:?}")),
            }
        }
    }
}

/// The `ack` header of a MESSAGE (STOMP 1.2).
fn ack_id(m: &Frame) -> &str {
    m.headers
        .get("ack")
        .unwrap_or_else(|| panic!("MESSAGE without an ack header: {m:?}"))
}

/// A persistent SEND of `text` to `dest` (no receipt).
pub fn persistent_send(dest: &str, text: &str) -> Frame {
    Frame::new(Command::Send)
        .header("destination", dest)
        .header("persistent", "true")
        .body(text.as_bytes().to_vec())
}
