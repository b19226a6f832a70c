//! Shared harness for the integration tests: starts the real `halyard`
//! binary on free ports in a temporary directory, and talks raw STOMP to it
//! over real sockets.

#![allow(dead_code, clippy::unwrap_used, unreachable_pub)]

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use halyard_stomp::{
    CodecError, Command as Cmd, Frame, Item, Limits, Outbound, StompCodec, Version,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

/// The binary under test: this build's, or the one `HALYARD_TEST_BIN`
/// names (to show that a test fails on an older build).
pub fn halyard_bin() -> String {
    std::env::var("HALYARD_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_halyard").to_owned())
}

/// A port nobody listens on right now, for a broker to bind next.
///
/// Drawn from 10000-19999, below Linux's ephemeral range (32768-60999): a
/// port the kernel hands out could be taken as the local end of some
/// parallel test's outgoing connection before the broker binds it (seen
/// in CI as "Address already in use"). The test PostgreSQL servers use
/// 20000-31999. A port is reserved for the life of this process with a
/// lock on a file named after it, so parallel test processes (and the
/// Python tests, which do the same) never pick the same one.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, RandomState};
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static HELD: Mutex<Vec<std::fs::File>> = Mutex::new(Vec::new());
    let dir = std::env::temp_dir().join("halyard-test-ports");
    let _ = std::fs::create_dir_all(&dir);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let r = RandomState::new().hash_one((std::process::id(), n));
        let port = 10_000 + (r % 10_000) as u16;
        // Without a usable lock directory (another user's), go on unlocked.
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(port.to_string()))
            .ok();
        if let Some(f) = &file
            && f.try_lock().is_err()
        {
            continue; // another test process has it
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            HELD.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .extend(file);
            return port;
        }
    }
}

/// Polls `f` until it returns `Some` or the deadline passes.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A running broker process, killed when dropped.
pub struct BrokerProcess {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub stomp: SocketAddr,
    pub http: SocketAddr,
    log: PathBuf,
}

impl BrokerProcess {
    /// Starts a broker with default settings plus `extra_toml` (which may
    /// contain `[section]` tables; top-level keys must come first).
    pub async fn start(extra_toml: &str) -> BrokerProcess {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, extra_toml).await
    }

    pub async fn start_in(dir: tempfile::TempDir, extra_toml: &str) -> BrokerProcess {
        let stomp: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        std::fs::write(dir.path().join("halyard.toml"), extra_toml).unwrap();
        let log = dir.path().join("broker.log");
        let mut b = BrokerProcess {
            child: None,
            dir,
            stomp,
            http,
            log,
        };
        b.spawn();
        b.wait_ready().await;
        b
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn spawn(&mut self) {
        // Append: a restarted broker's log follows the previous one's.
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(halyard_bin())
            .arg("broker")
            .arg("--config")
            .arg(self.dir.path().join("halyard.toml"))
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--stomp")
            .arg(self.stomp.to_string())
            .arg("--http")
            .arg(self.http.to_string())
            .env("RUST_LOG", "info,halyard_broker=debug")
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// Starts the broker again on the same data directory and ports (after
    /// [`BrokerProcess::kill`] or [`BrokerProcess::terminate`]; kills it
    /// first if it is still running). Retries while the old process's ports
    /// are being released.
    pub async fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            self.spawn();
            let started = Instant::now();
            loop {
                if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                    // Most likely the port is still held; try again.
                    assert!(
                        Instant::now() < deadline,
                        "broker did not restart ({status}):\n{}",
                        self.logs()
                    );
                    self.child = None;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    break;
                }
                if TcpStream::connect(self.stomp).await.is_ok() {
                    return;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(20),
                    "broker did not open {} in time:\n{}",
                    self.stomp,
                    self.logs()
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("broker exited during start-up ({status}):\n{}", self.logs());
            }
            if TcpStream::connect(self.stomp).await.is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "broker did not open {} in time:\n{}",
                self.stomp,
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Everything the broker logged so far.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        signal(child.id(), "TERM");
        wait_timeout(&mut child, Duration::from_secs(20))
            .unwrap_or_else(|| panic!("broker did not exit after SIGTERM:\n{}", self.logs()))
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    /// GET an admin HTTP path; returns (status, body).
    pub async fn http_get(&self, path: &str) -> (u16, String) {
        http_get(self.http, path).await
    }

    pub fn url(&self) -> String {
        format!("stomp://{}", self.stomp)
    }

    /// The stats of one destination from the admin API, if it exists.
    pub async fn dest_stats(&self, dest: &str) -> Option<serde_json::Value> {
        let (status, text) = self.http_get("/api/destinations").await;
        assert_eq!(status, 200, "GET /api/destinations: {text}");
        let all: serde_json::Value = serde_json::from_str(&text).unwrap();
        all.as_array()
            .unwrap()
            .iter()
            .find(|d| d["destination"] == dest)
            .cloned()
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

pub fn wait_timeout(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// [`http_get`], or `None` if nothing answers at `addr` (not yet, or no
/// more: a broker that exits mid-request resets the connection).
pub async fn try_http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    http_exchange(addr, path).await.ok()
}

/// The value of `name` in a `/metrics` text (an unlabelled counter or
/// gauge), if it is there.
pub fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The value of `name` in the `/metrics` of the broker at `http`.
pub async fn metric_at(http: SocketAddr, name: &str) -> u64 {
    let (code, text) = http_get(http, "/metrics").await;
    assert_eq!(code, 200, "GET /metrics: {text}");
    metric(&text, name).unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
}

/// A minimal HTTP/1.1 GET over a raw socket (the admin API is tiny).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_exchange(addr, path)
        .await
        .unwrap_or_else(|e| panic!("GET http://{addr}{path}: {e}"))
}

async fn http_exchange(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    use tokio::io::AsyncReadExt;
    let mut s = TcpStream::connect(addr).await?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    // Undo chunked encoding if present.
    let body = if text
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(&body)
    } else {
        body
    };
    Ok((status, body))
}

fn dechunk(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = &after[n..];
        rest = rest.strip_prefix("\r\n").unwrap_or(rest);
    }
    out
}

/// Default time to wait for an expected frame.
pub const WAIT: Duration = Duration::from_secs(10);

/// A raw STOMP connection: frames in, frames out, nothing hidden.
pub struct Stomp {
    conn: Framed<TcpStream, StompCodec>,
    next_receipt: u64,
    /// Frames that arrived while `request` waited for a receipt.
    stash: std::collections::VecDeque<Frame>,
}

impl Stomp {
    /// Opens a TCP connection without sending anything.
    pub async fn open(addr: SocketAddr) -> Stomp {
        let stream = TcpStream::connect(addr).await.unwrap();
        Stomp {
            conn: Framed::new(stream, StompCodec::new(Limits::default())),
            next_receipt: 0,
            stash: Default::default(),
        }
    }

    /// Opens and CONNECTs with STOMP 1.2.
    pub async fn connect(addr: SocketAddr) -> Stomp {
        Self::connect_with(addr, &[("accept-version", "1.2"), ("host", "localhost")]).await
    }

    /// Opens and CONNECTs with the given headers; panics unless CONNECTED.
    pub async fn connect_with(addr: SocketAddr, headers: &[(&str, &str)]) -> Stomp {
        let mut s = Self::open(addr).await;
        let mut f = Frame::new(Cmd::Connect);
        for (k, v) in headers {
            f.headers.push(*k, *v);
        }
        s.send(f).await;
        let reply = s.recv().await;
        assert_eq!(reply.command, Cmd::Connected, "CONNECT refused: {reply:?}");
        let v = reply
            .headers
            .get("version")
            .and_then(Version::parse)
            .unwrap();
        s.conn.codec_mut().set_version(v);
        s
    }

    /// Like [`Stomp::connect_with`], but a refusal is returned (the frame
    /// the broker answered with) instead of panicking.
    pub async fn try_connect_with(
        addr: SocketAddr,
        headers: &[(&str, &str)],
    ) -> Result<Stomp, Frame> {
        let mut s = Self::open(addr).await;
        let mut f = Frame::new(Cmd::Connect);
        for (k, v) in headers {
            f.headers.push(*k, *v);
        }
        s.send(f).await;
        let reply = s.recv().await;
        if reply.command != Cmd::Connected {
            return Err(reply);
        }
        let v = reply
            .headers
            .get("version")
            .and_then(Version::parse)
            .unwrap();
        s.conn.codec_mut().set_version(v);
        Ok(s)
    }

    pub async fn send(&mut self, f: Frame) {
        self.conn.send(Outbound::Frame(f)).await.unwrap();
    }

    /// Writes raw bytes, bypassing the encoder.
    pub async fn write_raw(&mut self, bytes: &[u8]) {
        self.conn.get_mut().write_all(bytes).await.unwrap();
    }

    /// The next frame (heart-beats skipped), within [`WAIT`].
    pub async fn recv(&mut self) -> Frame {
        self.recv_within(WAIT)
            .await
            .expect("expected a frame, got none in time")
    }

    /// The next frame within `t`, or `None` if none arrives.
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

    /// Asserts that no frame (other than heart-beats) arrives within `t`.
    pub async fn expect_silence(&mut self, t: Duration) {
        if let Some(f) = self.recv_within(t).await {
            panic!("expected no frame, got {f:?}");
        }
    }

    /// Expects an ERROR frame and then the connection closing; returns it.
    pub async fn expect_error(&mut self) -> Frame {
        let f = self.recv().await;
        assert_eq!(f.command, Cmd::Error, "expected ERROR, got {f:?}");
        self.expect_closed().await;
        f
    }

    /// Expects the broker to close the connection (frames before that are
    /// returned).
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

    /// Sends `f` with a receipt header and waits for the RECEIPT.
    pub async fn request(&mut self, mut f: Frame) {
        self.next_receipt += 1;
        let id = format!("rcpt-{}", self.next_receipt);
        f.headers.push("receipt", id.clone());
        self.send(f).await;
        // Other frames (MESSAGEs) may arrive before the receipt.
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
                Cmd::Receipt if f.headers.get("receipt-id") == Some(id.as_str()) => return,
                Cmd::Message => self.stash.push_back(f),
                _ => panic!("expected RECEIPT for {id}, got {f:?}"),
            }
        }
    }

    /// SEND with a receipt.
    pub async fn send_msg(&mut self, dest: &str, body: &str, headers: &[(&str, &str)]) {
        let mut f = Frame::new(Cmd::Send)
            .header("destination", dest)
            .body(body.as_bytes().to_vec());
        for (k, v) in headers {
            f.headers.push(*k, *v);
        }
        self.request(f).await;
    }

    /// SUBSCRIBE with a receipt.
    pub async fn subscribe(&mut self, id: &str, dest: &str, ack: &str, extra: &[(&str, &str)]) {
        let mut f = Frame::new(Cmd::Subscribe)
            .header("id", id)
            .header("destination", dest)
            .header("ack", ack);
        for (k, v) in extra {
            f.headers.push(*k, *v);
        }
        self.request(f).await;
    }

    /// The next MESSAGE frame.
    pub async fn recv_message(&mut self) -> Frame {
        let f = self.recv().await;
        assert_eq!(f.command, Cmd::Message, "expected MESSAGE, got {f:?}");
        f
    }

    /// ACK (1.2 style) with a receipt.
    pub async fn ack(&mut self, m: &Frame) {
        let f = Frame::new(Cmd::Ack).header("id", m.headers.get("ack").unwrap());
        self.request(f).await;
    }

    /// NACK (1.2 style) with a receipt.
    pub async fn nack(&mut self, m: &Frame) {
        let f = Frame::new(Cmd::Nack).header("id", m.headers.get("ack").unwrap());
        self.request(f).await;
    }

    /// DISCONNECT with a receipt, then wait for the close.
    pub async fn disconnect(mut self) {
        self.request(Frame::new(Cmd::Disconnect)).await;
        self.expect_closed().await;
    }
}

/// A lower-level raw STOMP connection than [`Stomp`]: bytes out (writes
/// may fail once the broker has closed), frames *and heart-beats* in, and
/// closes and timeouts reported rather than panicked on.
pub struct Raw {
    conn: Framed<TcpStream, StompCodec>,
}

/// What [`Raw::next`] saw.
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

impl Raw {
    /// Opens a TCP connection without sending anything.
    pub async fn open(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).await.unwrap();
        Raw {
            conn: Framed::new(stream, StompCodec::new(Limits::default())),
        }
    }

    /// Opens and CONNECTs with STOMP 1.2; panics unless CONNECTED. The codec
    /// then speaks 1.2.
    pub async fn connect_1_2(addr: SocketAddr) -> Raw {
        let mut r = Raw::open(addr).await;
        r.write(b"CONNECT\naccept-version:1.2\nhost:localhost\n\n\0")
            .await;
        match r.next(WAIT).await {
            Next::Frame(f) if f.command == Cmd::Connected => {}
            other => panic!("CONNECT refused: {other:?}"),
        }
        r.conn.codec_mut().set_version(Version::V1_2);
        r
    }

    /// Opens, writes `connect` (a whole CONNECT or STOMP frame) and returns
    /// the CONNECTED frame; panics on anything else. The codec then follows
    /// the negotiated version.
    pub async fn connect_with_bytes(addr: SocketAddr, connect: &[u8]) -> (Raw, Frame) {
        let mut r = Raw::open(addr).await;
        r.write(connect).await;
        let f = r.frame().await;
        assert_eq!(f.command, Cmd::Connected, "CONNECT refused: {f:?}");
        let v = Version::parse(f.headers.get("version").unwrap()).unwrap();
        r.conn.codec_mut().set_version(v);
        (r, f)
    }

    /// Writes raw bytes and flushes; fails if the broker already closed.
    pub async fn try_write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let s = self.conn.get_mut();
        s.write_all(bytes).await?;
        s.flush().await
    }

    /// Writes raw bytes and flushes; panics if that fails.
    pub async fn write(&mut self, bytes: &[u8]) {
        self.try_write(bytes).await.unwrap();
    }

    /// Encodes and sends a frame; panics if that fails.
    pub async fn send(&mut self, f: Frame) {
        self.conn.send(Outbound::Frame(f)).await.unwrap();
    }

    /// Whatever comes next within `within`. An I/O error (e.g. a reset
    /// after an ERROR) counts as closed; an undecodable frame panics.
    pub async fn next(&mut self, within: Duration) -> Next {
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

    /// Expects an ERROR frame (returned) and then the close.
    pub async fn expect_error(&mut self) -> Frame {
        let f = self
            .frame_or_close()
            .await
            .expect("connection closed without an ERROR frame");
        assert_eq!(f.command, Cmd::Error, "expected ERROR, got {f:?}");
        self.expect_closed().await;
        f
    }

    /// Expects the broker to close the connection within [`WAIT`], with no
    /// frame first (heart-beats skipped); panics on a frame or a timeout.
    pub async fn expect_closed(&mut self) {
        if let Some(f) = self.frame_or_close().await {
            panic!("expected the connection to close, got {f:?}");
        }
    }

    /// Expects a RECEIPT with this id as the next frame.
    pub async fn expect_receipt(&mut self, id: &str) {
        let f = self.frame().await;
        assert_eq!(f.command, Cmd::Receipt, "expected RECEIPT, got {f:?}");
        assert_eq!(f.headers.get("receipt-id"), Some(id));
    }
}

/// Body text of a frame.
pub fn body(f: &Frame) -> String {
    String::from_utf8_lossy(&f.body).into_owned()
}

/// Runs the CLI with `args`; returns (exit code, stdout, stderr).
pub fn run_cli(args: &[&str], stdin: Option<&[u8]>) -> (i32, String, String) {
    use std::io::Write;
    let mut child = Command::new(halyard_bin())
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Path helper for tests that write config files.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}
