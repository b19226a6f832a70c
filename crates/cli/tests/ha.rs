//! High availability against real `halyard broker` processes sharing ONE
//! data directory: the lock election, `kill -9` and SIGTERM takeovers under
//! load with a failing-over client, chains of takeovers with growing epochs,
//! fencing a master whose lock file was tampered with, and a slave's closed
//! client port.
//!
//! The promises under test: exactly one broker serves at a time; when it
//! dies a slave takes over quickly with a higher epoch and serves everything
//! that was receipted (an ACK that got its RECEIPT stays acknowledged); a
//! master that lost its lock writes nothing more and exits.
//!
//! Nothing sleeps and hopes: every wait polls for its event with a deadline.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use common::{WAIT, body, free_port, halyard_bin, http_get, run_cli, try_http_get};
use futures::{SinkExt, StreamExt};
use halyard_stomp::{Command, Frame, Item, Limits, Outbound, StompCodec, Version};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_util::codec::Framed;

/// Small segments: quick to preallocate, to recover and to compare.
const CONFIG: &str = "[journal]\nsegment-bytes = 1048576\n";
/// The same, with a master that re-checks its lock file every 200 ms.
const FENCE_CONFIG: &str = "[journal]\nsegment-bytes = 1048576\n\n[ha]\nlock-keepalive-ms = 200\n";
/// How long a broker may take to reach a role (start-up, takeover).
const ROLE_WAIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------
// Brokers sharing one data directory
// ---------------------------------------------------------------------------

/// One `halyard broker` process of a [`Cluster`], killed when dropped. It
/// keeps its ports across restarts, and its log accumulates.
struct Node {
    name: String,
    stomp: SocketAddr,
    http: SocketAddr,
    log: PathBuf,
    config: PathBuf,
    data: PathBuf,
    child: Option<Child>,
}

impl Node {
    /// Starts the process (again), without waiting for anything.
    fn spawn(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let out = log.try_clone().unwrap();
        let child = Process::new(halyard_bin())
            .arg("broker")
            .arg("--name")
            .arg(&self.name)
            .arg("--config")
            .arg(&self.config)
            .arg("--data-dir")
            .arg(&self.data)
            .arg("--stomp")
            .arg(self.stomp.to_string())
            .arg("--http")
            .arg(self.http.to_string())
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("not running").id()
    }

    /// `kill -9`; returns the moment just before the signal.
    fn kill(&mut self) -> Instant {
        let mut child = self.child.take().expect("not running");
        let at = Instant::now();
        let _ = child.kill();
        let _ = child.wait();
        at
    }

    /// SIGTERM (the process is left to exit on its own; see
    /// [`Node::wait_exit`]); returns the moment just before the signal.
    fn sigterm(&mut self) -> Instant {
        let pid = self.pid();
        let at = Instant::now();
        let ok = Process::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .unwrap();
        assert!(ok.success());
        at
    }

    /// The exit status if the process has ended.
    fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().unwrap()?;
        self.child = None;
        Some(status)
    }

    /// Waits (polling) for the process to end.
    async fn wait_exit(&mut self, within: Duration, what: &str) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.exited() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {within:?} ({what}):\n{}",
                self.name,
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `/api/status`, if the admin API answers.
    async fn status(&self) -> Option<Value> {
        status_of(self.http).await
    }

    /// Waits until `/api/status` says `role`; panics if the process exits
    /// or the deadline passes. Returns the status.
    async fn wait_role(&mut self, role: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        let mut last = None;
        loop {
            if let Some(s) = self.exited() {
                panic!(
                    "{} exited ({s}) while waiting for role {role}; last status {last:?}:\n{}",
                    self.name,
                    self.logs()
                );
            }
            if let Some(v) = self.status().await {
                if v["role"] == role {
                    return v;
                }
                last = Some(v);
            }
            assert!(
                Instant::now() < deadline,
                "{} not {role} within {within:?}; last status {last:?}:\n{}",
                self.name,
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Brokers on one data directory, each with its own ports and log, in one
/// temporary directory.
struct Cluster {
    dir: tempfile::TempDir,
    nodes: Vec<Node>,
}

impl Cluster {
    fn new(toml: &str) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("halyard.toml"), toml).unwrap();
        Cluster {
            dir,
            nodes: Vec::new(),
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts another broker on fresh ports; returns its index.
    fn spawn(&mut self, name: &str) -> usize {
        let mut node = Node {
            name: name.to_owned(),
            stomp: local(free_port()),
            http: local(free_port()),
            log: self.dir.path().join(format!("{name}.log")),
            config: self.dir.path().join("halyard.toml"),
            data: self.data(),
            child: None,
        };
        node.spawn();
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// Starts a broker that must become master (the directory is free).
    async fn master(&mut self, name: &str) -> usize {
        let i = self.spawn(name);
        self.nodes[i].wait_role("master", ROLE_WAIT).await;
        i
    }

    /// Starts a broker that must wait as a slave.
    async fn slave(&mut self, name: &str) -> usize {
        let i = self.spawn(name);
        self.nodes[i].wait_role("slave", ROLE_WAIT).await;
        i
    }

    fn stomp_addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|n| n.stomp).collect()
    }

    /// Every broker's log, for failure messages.
    fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("===== {} =====\n{}", n.name, n.logs()))
            .collect()
    }

    /// Waits until exactly one of `candidates` is master; returns it. Panics
    /// if two are master at once.
    async fn wait_new_master(&mut self, candidates: &[usize]) -> usize {
        let deadline = Instant::now() + ROLE_WAIT;
        loop {
            let mut masters = Vec::new();
            for &i in candidates {
                if let Some(s) = self.nodes[i].exited() {
                    panic!("{} exited ({s}):\n{}", self.nodes[i].name, self.logs());
                }
                if let Some(v) = self.nodes[i].status().await
                    && v["role"] == "master"
                {
                    masters.push(i);
                }
            }
            assert!(
                masters.len() <= 1,
                "two masters at once: {masters:?}\n{}",
                self.logs()
            );
            if let Some(&m) = masters.first() {
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "no broker took over within {ROLE_WAIT:?}:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

fn local(port: u16) -> SocketAddr {
    format!("127.0.0.1:{port}").parse().unwrap()
}

async fn status_of(http: SocketAddr) -> Option<Value> {
    let (code, text) = try_http_get(http, "/api/status").await?;
    if code != 200 {
        return None;
    }
    serde_json::from_str(&text).ok()
}

async fn readyz(http: SocketAddr) -> u16 {
    http_get(http, "/readyz").await.0
}

/// Whether anything accepts TCP connections at `addr`.
async fn accepts(addr: SocketAddr) -> bool {
    TcpStream::connect(addr).await.is_ok()
}

/// The lock file's JSON.
fn lock_file(data: &Path) -> Value {
    let text = std::fs::read_to_string(data.join("lock")).unwrap();
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("lock file {text:?}: {e}"))
}

/// `<data>/journal/*.seg`, sorted.
fn segments(data: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(data.join("journal"))
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "seg"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The master epoch in a segment's 64-byte header (u64 LE at offset 24).
fn segment_epoch(path: &Path) -> u64 {
    let bytes = std::fs::read(path).unwrap();
    assert!(
        bytes.len() >= 64,
        "{} is shorter than a header",
        path.display()
    );
    assert_eq!(&bytes[0..8], b"HLYDJRNL", "{}: bad magic", path.display());
    u64::from_le_bytes(bytes[24..32].try_into().unwrap())
}

/// Every segment's size, mtime and contents.
type JournalSnapshot = BTreeMap<PathBuf, (u64, SystemTime, Vec<u8>)>;

fn snapshot(data: &Path) -> JournalSnapshot {
    segments(data)
        .into_iter()
        .map(|p| {
            let meta = std::fs::metadata(&p).unwrap();
            let bytes = std::fs::read(&p).unwrap();
            (p, (meta.len(), meta.modified().unwrap(), bytes))
        })
        .collect()
}

fn describe_changes(before: &JournalSnapshot, after: &JournalSnapshot) -> String {
    let mut out = Vec::new();
    for (p, (len, mtime, bytes)) in before {
        match after.get(p) {
            None => out.push(format!("{} deleted", p.display())),
            Some((l2, m2, b2)) => {
                if (len, mtime) != (l2, m2) || bytes != b2 {
                    let first_diff = bytes.iter().zip(b2).position(|(a, b)| a != b);
                    out.push(format!(
                        "{} changed: len {len} -> {l2}, mtime {mtime:?} -> {m2:?}, first differing byte {first_diff:?}",
                        p.display()
                    ));
                }
            }
        }
    }
    for p in after.keys() {
        if !before.contains_key(p) {
            out.push(format!("{} created", p.display()));
        }
    }
    out.join("\n")
}

fn median(v: &[Duration]) -> Duration {
    let mut s = v.to_vec();
    s.sort();
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn spread(v: &[Duration]) -> String {
    let mut s = v.to_vec();
    s.sort();
    format!(
        "median {}, min {}, max {}, all [{}]",
        ms(median(&s)),
        ms(s[0]),
        ms(s[s.len() - 1]),
        v.iter().map(|d| ms(*d)).collect::<Vec<_>>().join(", ")
    )
}

// ---------------------------------------------------------------------------
// A raw STOMP client that survives its broker and fails over
// ---------------------------------------------------------------------------

/// What [`Link::next`] saw.
#[derive(Debug)]
enum Got {
    Frame(Frame),
    Closed,
    Timeout,
}

/// A raw STOMP 1.2 connection that reports a dead broker instead of
/// panicking.
struct Link {
    conn: Framed<TcpStream, StompCodec>,
    addr: SocketAddr,
    /// MESSAGEs that arrived while [`Link::request`] waited for a RECEIPT.
    stash: VecDeque<Frame>,
}

impl Link {
    /// Connects and CONNECTs; `None` if nothing serves STOMP at `addr`.
    async fn open(addr: SocketAddr) -> Option<Link> {
        let stream = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr))
            .await
            .ok()?
            .ok()?;
        let _ = stream.set_nodelay(true);
        let mut l = Link {
            conn: Framed::new(stream, StompCodec::new(Limits::default())),
            addr,
            stash: VecDeque::new(),
        };
        let f = Frame::new(Command::Connect)
            .header("accept-version", "1.2")
            .header("host", "localhost");
        if !l.send(f).await {
            return None;
        }
        match l.next(Duration::from_secs(5)).await {
            Got::Frame(f) if f.command == Command::Connected => {}
            _ => return None,
        }
        l.conn.codec_mut().set_version(Version::V1_2);
        Some(l)
    }

    /// Sends a frame; false if the connection is gone.
    async fn send(&mut self, f: Frame) -> bool {
        self.conn.send(Outbound::Frame(f)).await.is_ok()
    }

    /// The next frame (heart-beats skipped) within `within`.
    async fn next(&mut self, within: Duration) -> Got {
        if let Some(f) = self.stash.pop_front() {
            return Got::Frame(f);
        }
        self.next_unstashed(within).await
    }

    /// The next frame from the connection itself, past the stash.
    async fn next_unstashed(&mut self, within: Duration) -> Got {
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

    /// Sends `f` with a receipt and waits for it; `Err` with what came
    /// instead (an ERROR, a close, nothing).
    async fn request(&mut self, f: Frame, receipt: &str) -> Result<(), String> {
        if !self.send(f.header("receipt", receipt)).await {
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

/// Connects to whichever of `addrs` serves STOMP, starting with the one
/// after `lost` (the broker that just went away), round-robin, with a short
/// backoff between rounds.
async fn failover(addrs: &[SocketAddr], lost: Option<SocketAddr>) -> Link {
    let start = lost
        .and_then(|l| addrs.iter().position(|a| *a == l))
        .map_or(0, |i| i + 1);
    let deadline = Instant::now() + ROLE_WAIT;
    let mut backoff = Duration::from_millis(1);
    loop {
        for k in 0..addrs.len() {
            if let Some(l) = Link::open(addrs[(start + k) % addrs.len()]).await {
                return l;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no broker of {addrs:?} accepted a STOMP connection within {ROLE_WAIT:?}"
        );
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_millis(10));
    }
}

fn persistent_send(dest: &str, text: &str) -> Frame {
    Frame::new(Command::Send)
        .header("destination", dest)
        .header("persistent", "true")
        .body(text.as_bytes().to_vec())
}

// ---------------------------------------------------------------------------
// Traffic: producers and a consumer that fail over, and what they saw
// ---------------------------------------------------------------------------

const QUEUE: &str = "/queue/ha";
/// SENDs a producer has in flight (awaiting their RECEIPT).
const WINDOW: usize = 4;

/// One physical SEND: (producer, message number, attempt). A resent message
/// keeps its (producer, number) but gets a new attempt.
type Key = (usize, u64, u64);

#[derive(Debug)]
enum Ev {
    Delivered {
        key: Key,
        redelivered: bool,
    },
    /// The RECEIPT for the ACK of this delivery arrived.
    AckConfirmed {
        key: Key,
    },
    /// A MESSAGE no producer could have sent.
    Bogus(String),
}

#[derive(Debug, Default)]
struct Ledger {
    /// (producer, n) that got a RECEIPT.
    receipted: BTreeSet<(usize, u64)>,
    /// When each producer RECEIPT arrived, and from which broker.
    receipts: Vec<(Instant, SocketAddr)>,
    /// What the consumer saw, in order.
    events: Vec<Ev>,
    resent: u64,
    reconnects: u64,
}

fn lock(l: &Mutex<Ledger>) -> MutexGuard<'_, Ledger> {
    l.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn producer_send(p: usize, n: u64, a: u64, rid: &str) -> Frame {
    persistent_send(QUEUE, &format!("p{p} n{n}"))
        .header("p", p.to_string())
        .header("n", n.to_string())
        .header("a", a.to_string())
        .header("receipt", rid)
}

/// (producer, n, attempt) of a MESSAGE a producer could have sent.
fn parse_message(f: &Frame) -> Option<Key> {
    let p: usize = f.headers.get("p")?.parse().ok()?;
    let n: u64 = f.headers.get("n")?.parse().ok()?;
    let a: u64 = f.headers.get("a")?.parse().ok()?;
    (f.headers.get("destination") == Some(QUEUE) && body(f) == format!("p{p} n{n}"))
        .then_some((p, n, a))
}

/// Sends persistent messages, [`WINDOW`] at a time, each with a receipt,
/// until `stop`; then waits for the RECEIPTs still due. On losing its
/// broker it fails over and RESENDS every SEND whose RECEIPT had not come.
async fn producer(
    id: usize,
    addrs: Vec<SocketAddr>,
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
) {
    let mut link = failover(&addrs, None).await;
    // n -> the receipt id of its latest attempt
    let mut outstanding: BTreeMap<u64, String> = BTreeMap::new();
    let mut next_n = 0u64;
    let mut attempts = 0u64;
    let mut alive = true;
    loop {
        if !alive {
            link = failover(&addrs, Some(link.addr)).await;
            alive = true;
            lock(&ledger).reconnects += 1;
            for (n, rid) in outstanding.iter_mut() {
                attempts += 1;
                *rid = format!("s-{id}-{n}-{attempts}");
                lock(&ledger).resent += 1;
                if !link.send(producer_send(id, *n, attempts, rid)).await {
                    alive = false;
                    break;
                }
            }
            if !alive {
                continue;
            }
        }
        while !stop.load(Ordering::Relaxed) && outstanding.len() < WINDOW {
            next_n += 1;
            attempts += 1;
            let rid = format!("s-{id}-{next_n}-{attempts}");
            outstanding.insert(next_n, rid.clone());
            if !link.send(producer_send(id, next_n, attempts, &rid)).await {
                alive = false;
                break;
            }
        }
        if !alive {
            continue;
        }
        if outstanding.is_empty() {
            return;
        }
        match link.next(WAIT).await {
            Got::Frame(f) if f.command == Command::Receipt => {
                let rid = f.headers.get("receipt-id").unwrap_or_default();
                let n: Option<u64> = rid.split('-').nth(2).and_then(|n| n.parse().ok());
                if let Some(n) = n
                    && outstanding.get(&n).map(String::as_str) == Some(rid)
                {
                    outstanding.remove(&n);
                    let mut l = lock(&ledger);
                    l.receipted.insert((id, n));
                    l.receipts.push((Instant::now(), link.addr));
                }
            }
            // The broker is going away (shutting down, fenced).
            Got::Frame(f) if f.command == Command::Error => alive = false,
            Got::Frame(f) => panic!("producer {id}: unexpected frame {f:?}"),
            Got::Closed => alive = false,
            Got::Timeout => panic!(
                "producer {id}: no RECEIPT from {} within {WAIT:?} ({} outstanding)",
                link.addr,
                outstanding.len()
            ),
        }
    }
}

/// Whether every receipted message was delivered at least once.
fn missing_deliveries(l: &Ledger) -> Vec<(usize, u64)> {
    let delivered: HashSet<(usize, u64)> = l
        .events
        .iter()
        .filter_map(|e| match e {
            Ev::Delivered { key, .. } => Some((key.0, key.1)),
            _ => None,
        })
        .collect();
    l.receipted
        .iter()
        .filter(|k| !delivered.contains(k))
        .copied()
        .collect()
}

/// Consumes [`QUEUE`] with client-individual ACKs, each with a receipt,
/// failing over (and subscribing again) when its broker goes. Once
/// `producers_done`, returns when every receipted message was delivered and
/// no ACK awaits its receipt.
async fn consumer(
    addrs: Vec<SocketAddr>,
    ledger: Arc<Mutex<Ledger>>,
    producers_done: Arc<AtomicBool>,
) {
    let mut lost: Option<SocketAddr> = None;
    let mut link: Option<Link> = None;
    let mut pending: HashMap<String, Key> = HashMap::new();
    let mut acks = 0u64;
    let mut drain_deadline: Option<Instant> = None;
    loop {
        let Some(l) = link.as_mut() else {
            let mut l = failover(&addrs, lost).await;
            if lost.is_some() {
                lock(&ledger).reconnects += 1;
            }
            // ACKs of the lost connection are in doubt: their messages may
            // come back, which is allowed.
            pending.clear();
            let sub = Frame::new(Command::Subscribe)
                .header("id", "c")
                .header("destination", QUEUE)
                .header("ack", "client-individual")
                .header("activemq.prefetchSize", "50")
                .header("receipt", "sub");
            if l.send(sub).await {
                link = Some(l);
            } else {
                lost = Some(l.addr);
            }
            continue;
        };
        let mut gone = false;
        match l.next(Duration::from_millis(100)).await {
            Got::Frame(f) if f.command == Command::Message => {
                let key = parse_message(&f);
                let redelivered = f.headers.get("redelivered") == Some("true");
                lock(&ledger).events.push(match key {
                    Some(key) => Ev::Delivered { key, redelivered },
                    None => Ev::Bogus(format!("{f:?}")),
                });
                let ack_id = f
                    .headers
                    .get("ack")
                    .unwrap_or_else(|| panic!("MESSAGE without an ack header: {f:?}"));
                acks += 1;
                let rid = format!("a-{acks}");
                let ack = Frame::new(Command::Ack)
                    .header("id", ack_id)
                    .header("receipt", rid.clone());
                if let Some(k) = key {
                    pending.insert(rid, k);
                }
                gone = !l.send(ack).await;
            }
            Got::Frame(f) if f.command == Command::Receipt => {
                let rid = f.headers.get("receipt-id").unwrap_or_default();
                if let Some(key) = pending.remove(rid) {
                    lock(&ledger).events.push(Ev::AckConfirmed { key });
                } else {
                    assert_eq!(rid, "sub", "consumer: unexpected RECEIPT {f:?}");
                }
            }
            Got::Frame(f) if f.command == Command::Error => gone = true,
            Got::Frame(f) => panic!("consumer: unexpected frame {f:?}"),
            Got::Closed => gone = true,
            Got::Timeout => {
                if producers_done.load(Ordering::Relaxed) {
                    let missing = missing_deliveries(&lock(&ledger));
                    if missing.is_empty() && pending.is_empty() {
                        return;
                    }
                    let deadline = *drain_deadline
                        .get_or_insert_with(|| Instant::now() + Duration::from_secs(20));
                    assert!(
                        Instant::now() < deadline,
                        "drain incomplete: {} receipted messages never delivered (producer, n): {:?}; {} ACK receipts outstanding",
                        missing.len(),
                        &missing[..missing.len().min(20)],
                        pending.len()
                    );
                }
            }
        }
        if gone {
            lost = Some(l.addr);
            link = None;
        }
    }
}

/// Producers and a consumer running against a group of brokers.
struct Traffic {
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
    producers_done: Arc<AtomicBool>,
    producers: Vec<JoinHandle<()>>,
    consumer: JoinHandle<()>,
}

/// What [`Traffic::finish`] verified.
struct Summary {
    receipted: usize,
    deliveries: usize,
    redeliveries: usize,
    duplicates: usize,
    resent: u64,
    reconnects: u64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} messages receipted, {} deliveries ({} flagged redelivered, {} duplicates), {} SENDs resent, {} client reconnections",
            self.receipted,
            self.deliveries,
            self.redeliveries,
            self.duplicates,
            self.resent,
            self.reconnects
        )
    }
}

impl Traffic {
    fn start(addrs: &[SocketAddr], producers: usize) -> Traffic {
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let producers_done = Arc::new(AtomicBool::new(false));
        let producers = (0..producers)
            .map(|id| tokio::spawn(producer(id, addrs.to_vec(), ledger.clone(), stop.clone())))
            .collect();
        let consumer = tokio::spawn(consumer(
            addrs.to_vec(),
            ledger.clone(),
            producers_done.clone(),
        ));
        Traffic {
            ledger,
            stop,
            producers_done,
            producers,
            consumer,
        }
    }

    /// Panics if a client task ended before being told to (its own panic
    /// message is printed above).
    fn check_tasks(&self) {
        let ended =
            self.producers.iter().any(JoinHandle::is_finished) || self.consumer.is_finished();
        assert!(!ended, "a client task ended early (see its panic above)");
    }

    /// Waits for the first producer RECEIPT from `from` after `since`;
    /// returns when it arrived.
    async fn first_receipt(
        &self,
        from: SocketAddr,
        since: Instant,
        logs: impl Fn() -> String,
    ) -> Instant {
        self.receipts_from(from, since, 1, logs).await
    }

    /// Waits until `count` producer RECEIPTs came from `from` after
    /// `since`; returns when the first of them arrived.
    async fn receipts_from(
        &self,
        from: SocketAddr,
        since: Instant,
        count: usize,
        logs: impl Fn() -> String,
    ) -> Instant {
        let deadline = Instant::now() + ROLE_WAIT;
        loop {
            self.check_tasks();
            {
                let l = lock(&self.ledger);
                let mut got = l
                    .receipts
                    .iter()
                    .filter(|(t, a)| *a == from && *t > since)
                    .map(|(t, _)| *t);
                if let Some(first) = got.next()
                    && 1 + got.count() >= count
                {
                    return first;
                }
            }
            assert!(
                Instant::now() < deadline,
                "fewer than {count} RECEIPTs from {from} within {ROLE_WAIT:?}:\n{}",
                logs()
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Stops the producers (after their last RECEIPTs), lets the consumer
    /// drain, and checks: every receipted message was delivered at least
    /// once, nothing whose ACK was receipted came back, nothing bogus.
    async fn finish(self) -> Summary {
        self.stop.store(true, Ordering::Relaxed);
        for p in self.producers {
            tokio::time::timeout(Duration::from_secs(30), p)
                .await
                .expect("a producer did not finish")
                .expect("a producer panicked");
        }
        self.producers_done.store(true, Ordering::Relaxed);
        tokio::time::timeout(Duration::from_secs(40), self.consumer)
            .await
            .expect("the consumer did not drain")
            .expect("the consumer panicked");
        let l = lock(&self.ledger);
        let missing = missing_deliveries(&l);
        assert!(
            missing.is_empty(),
            "{} receipted messages never delivered: {:?}",
            missing.len(),
            &missing[..missing.len().min(20)]
        );
        let mut confirmed: HashSet<Key> = HashSet::new();
        let mut seen: HashSet<(usize, u64)> = HashSet::new();
        let (mut deliveries, mut redeliveries, mut duplicates) = (0, 0, 0);
        for e in &l.events {
            match e {
                Ev::AckConfirmed { key } => {
                    confirmed.insert(*key);
                }
                Ev::Delivered { key, redelivered } => {
                    assert!(
                        !confirmed.contains(key),
                        "message {key:?} came back after its ACK was receipted"
                    );
                    deliveries += 1;
                    redeliveries += usize::from(*redelivered);
                    if !seen.insert((key.0, key.1)) {
                        duplicates += 1;
                    }
                }
                Ev::Bogus(f) => panic!("a MESSAGE no producer sent: {f}"),
            }
        }
        assert!(deliveries >= l.receipted.len());
        Summary {
            receipted: l.receipted.len(),
            deliveries,
            redeliveries,
            duplicates,
            resent: l.resent,
            reconnects: l.reconnects,
        }
    }
}

/// Two brokers under continuous traffic: `cycles` times, `kill -9` the
/// master, measure kill → first RECEIPT from the new master, restart the
/// killed one as a slave on its ports; `per_master` RECEIPTs come from each
/// master before it is killed. Returns the takeover times.
async fn kill_restart_cycles(
    toml: &str,
    cycles: usize,
    producers: usize,
    per_master: usize,
    label: &str,
) -> Vec<Duration> {
    let started = Instant::now();
    let mut c = Cluster::new(toml);
    let a = c.master("a").await;
    let b = c.slave("b").await;
    let addrs = c.stomp_addrs();
    let traffic = Traffic::start(&addrs, producers);
    let mut master = a;
    traffic
        .receipts_from(c.nodes[master].stomp, started, per_master, || c.logs())
        .await;
    let mut times = Vec::new();
    for cycle in 0..cycles {
        let slave = if master == a { b } else { a };
        let killed_at = c.nodes[master].kill();
        let first = traffic
            .first_receipt(c.nodes[slave].stomp, killed_at, || c.logs())
            .await;
        times.push(first - killed_at);
        let s = c.nodes[slave].wait_role("master", ROLE_WAIT).await;
        assert_eq!(s["epoch"], cycle as u64 + 2, "{s}");
        // The killed one comes back as a slave, on its own ports.
        c.nodes[master].spawn();
        c.nodes[master].wait_role("slave", ROLE_WAIT).await;
        // Traffic flows through the new master before the next kill.
        traffic
            .receipts_from(c.nodes[slave].stomp, killed_at, per_master, || c.logs())
            .await;
        master = slave;
    }
    let summary = traffic.finish().await;
    println!(
        "{label}: {cycles} kill -9 takeovers, kill -9 -> first RECEIPT from the new master: {}",
        spread(&times)
    );
    println!("{label}: {summary}; took {:?}", started.elapsed());
    times
}

// ---------------------------------------------------------------------------
// 1. Exactly one serves
// ---------------------------------------------------------------------------

#[tokio::test]
async fn two_brokers_on_one_data_directory_exactly_one_serves() {
    let mut c = Cluster::new(CONFIG);
    let a = c.master("a").await;
    let b = c.slave("b").await;
    let (ma, sb) = (&c.nodes[a], &c.nodes[b]);

    // STOMP: the master serves, the slave refuses.
    let mut client = Link::open(ma.stomp)
        .await
        .expect("the master must accept STOMP");
    client
        .request(persistent_send("/queue/one", "hello"), "r1")
        .await
        .unwrap();
    assert!(
        !accepts(sb.stomp).await,
        "the slave must refuse STOMP connections"
    );

    // Health and readiness.
    assert_eq!(http_get(ma.http, "/healthz").await.0, 200);
    assert_eq!(http_get(sb.http, "/healthz").await.0, 200);
    assert_eq!(readyz(ma.http).await, 200);
    assert_eq!(readyz(sb.http).await, 503);

    // Roles, epochs, who holds the lock.
    let sm = ma.status().await.unwrap();
    assert_eq!(sm["role"], "master", "{sm}");
    assert_eq!(sm["epoch"], 1, "{sm}");
    assert_eq!(sm["stomp"], ma.stomp.to_string(), "{sm}");
    assert!(sm["lock_owner"].is_null(), "{sm}");
    assert_eq!(sm["takeover"]["waited_ms"], 0, "{sm}");
    let ss = sb.status().await.unwrap();
    assert_eq!(ss["role"], "slave", "{ss}");
    assert_eq!(ss["epoch"], 0, "{ss}");
    assert!(ss["stomp"].is_null(), "{ss}");
    assert!(ss["takeover"].is_null(), "{ss}");
    assert_eq!(ss["lock_owner"]["pid"], ma.pid(), "{ss}");
    assert_eq!(ss["lock_owner"]["name"], "a", "{ss}");
    assert_eq!(ss["lock_owner"]["epoch"], 1, "{ss}");
    let lf = lock_file(&c.data());
    assert_eq!(lf["pid"], ma.pid(), "{lf}");
    assert_eq!(lf["epoch"], 1, "{lf}");
    assert_eq!(lf["name"], "a", "{lf}");

    // `halyard status`, text and JSON.
    let (code, out, err) = run_cli(&["status", "--http", &ma.http.to_string()], None);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("'a'") && out.contains("master, epoch 1"),
        "{out}"
    );
    assert!(out.contains(&ma.stomp.to_string()), "{out}");
    let (code, out, err) = run_cli(&["status", "--http", &sb.http.to_string()], None);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("'b'") && out.contains("slave, epoch 0"),
        "{out}"
    );
    assert!(
        out.contains("held by broker 'a'") && out.contains(&format!("pid {}", ma.pid())),
        "{out}"
    );
    for (node, role) in [(ma, "master"), (sb, "slave")] {
        let (code, out, err) = run_cli(
            &["status", "--http", &node.http.to_string(), "--json"],
            None,
        );
        assert_eq!(code, 0, "{err}");
        let v: Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(v["role"], role, "{v}");
        assert_eq!(v["name"], node.name, "{v}");
    }

    // Still exactly one serving after all that.
    assert!(!accepts(sb.stomp).await);
    client
        .request(persistent_send("/queue/one", "again"), "r2")
        .await
        .unwrap();
}

/// Brokers started at the same moment on one directory: exactly one wins.
#[tokio::test]
async fn brokers_started_together_elect_exactly_one_master() {
    let mut c = Cluster::new(CONFIG);
    for name in ["a", "b", "c"] {
        c.spawn(name);
    }
    let deadline = Instant::now() + ROLE_WAIT;
    let master = loop {
        let mut roles = Vec::new();
        for n in &c.nodes {
            roles.push(n.status().await.map(|v| v["role"].clone()));
        }
        let masters: Vec<usize> = (0..roles.len())
            .filter(|&i| roles[i].as_ref().is_some_and(|r| r == "master"))
            .collect();
        assert!(
            masters.len() <= 1,
            "two masters at once: {roles:?}\n{}",
            c.logs()
        );
        let settled = roles
            .iter()
            .all(|r| r.as_ref().is_some_and(|r| r == "master" || r == "slave"));
        if settled && masters.len() == 1 {
            break masters[0];
        }
        assert!(
            Instant::now() < deadline,
            "no settled election: {roles:?}\n{}",
            c.logs()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    for (i, n) in c.nodes.iter().enumerate() {
        assert_eq!(accepts(n.stomp).await, i == master, "{}", n.name);
        assert_eq!(readyz(n.http).await, if i == master { 200 } else { 503 });
    }
    let s = c.nodes[master].status().await.unwrap();
    assert_eq!(s["epoch"], 1, "{s}");
    let lf = lock_file(&c.data());
    assert_eq!(lf["pid"], c.nodes[master].pid(), "{lf}");
    assert_eq!(lf["epoch"], 1, "{lf}");
}

// ---------------------------------------------------------------------------
// 2. Takeover under load
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_master_under_load_loses_nothing_receipted() {
    let started = Instant::now();
    let mut c = Cluster::new(CONFIG);
    let a = c.master("a").await;
    let b = c.slave("b").await;
    let traffic = Traffic::start(&c.stomp_addrs(), 3);
    traffic
        .receipts_from(c.nodes[a].stomp, started, 2000, || c.logs())
        .await;

    let killed_at = c.nodes[a].kill();
    let first = traffic
        .first_receipt(c.nodes[b].stomp, killed_at, || c.logs())
        .await;
    let takeover = first - killed_at;
    println!(
        "takeover under load (3 producers, 1 consumer): kill -9 -> first RECEIPT from the new master in {}",
        ms(takeover)
    );
    let s = c.nodes[b].wait_role("master", ROLE_WAIT).await;
    assert_eq!(s["epoch"], 2, "{s}");
    assert!(s["takeover"]["lock_to_serving_ms"].is_u64(), "{s}");
    println!("  the new master's own account: {}", s["takeover"]);
    traffic
        .receipts_from(c.nodes[b].stomp, killed_at, 2000, || c.logs())
        .await;
    let summary = traffic.finish().await;
    println!("  {summary}; took {:?}", started.elapsed());
    assert!(
        summary.reconnects >= 4,
        "every client must have failed over: {summary}"
    );
    assert!(
        takeover < Duration::from_secs(2),
        "takeover took {takeover:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn median_takeover_after_kill_9_over_ten_takeovers() {
    let times = kill_restart_cycles(CONFIG, 10, 1, 50, "median takeover").await;
    let m = median(&times);
    println!(
        "MEDIAN kill -9 -> first RECEIPT over {} takeovers: {} (goal <= 200 ms)",
        times.len(),
        ms(m)
    );
    assert!(m < Duration::from_secs(2), "median takeover {m:?}");
}

/// A slave that polls for the lock (`[ha] lock-poll-ms`, for file systems
/// whose locks cannot block) takes over too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_polling_slave_takes_over_too() {
    let toml = format!("{CONFIG}\n[ha]\nlock-poll-ms = 20\n");
    let times = kill_restart_cycles(&toml, 3, 1, 50, "polling slaves (lock-poll-ms = 20)").await;
    assert!(median(&times) < Duration::from_secs(2), "{times:?}");
}

// ---------------------------------------------------------------------------
// 3. A chain of takeovers
// ---------------------------------------------------------------------------

#[tokio::test]
async fn three_brokers_each_kill_promotes_exactly_one_slave_with_a_higher_epoch() {
    let mut c = Cluster::new(CONFIG);
    let a = c.master("a").await;
    let b = c.slave("b").await;
    let d = c.slave("c").await;
    let data = c.data();
    for s in [b, d] {
        let v = c.nodes[s].status().await.unwrap();
        assert_eq!(v["lock_owner"]["pid"], c.nodes[a].pid(), "{v}");
    }
    let mut epochs = vec![
        c.nodes[a].status().await.unwrap()["epoch"]
            .as_u64()
            .unwrap(),
    ];
    assert_eq!(epochs, [1]);
    assert_eq!(lock_file(&data)["epoch"], 1);
    let mut p = Link::open(c.nodes[a].stomp).await.unwrap();
    p.request(persistent_send("/queue/chain", "m1"), "r1")
        .await
        .unwrap();
    drop(p);

    // First kill: exactly one of the two slaves takes over.
    c.nodes[a].kill();
    let w1 = c.wait_new_master(&[b, d]).await;
    let other = if w1 == b { d } else { b };
    let s1 = c.nodes[w1].status().await.unwrap();
    let e1 = s1["epoch"].as_u64().unwrap();
    epochs.push(e1);
    let lf = lock_file(&data);
    assert_eq!(lf["epoch"], e1, "{lf}");
    assert_eq!(lf["pid"], c.nodes[w1].pid(), "{lf}");
    assert_eq!(segment_epoch(segments(&data).last().unwrap()), e1);
    // The other stays a slave, its port closed, for a while.
    let until = Instant::now() + Duration::from_millis(300);
    while Instant::now() < until {
        let v = c.nodes[other].status().await.unwrap();
        assert_eq!(v["role"], "slave", "{v}");
        assert!(!accepts(c.nodes[other].stomp).await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut p = Link::open(c.nodes[w1].stomp).await.unwrap();
    p.request(persistent_send("/queue/chain", "m2"), "r2")
        .await
        .unwrap();
    drop(p);

    // Second kill: the last one takes over.
    c.nodes[w1].kill();
    let w2 = c.wait_new_master(&[other]).await;
    let s2 = c.nodes[w2].status().await.unwrap();
    let e2 = s2["epoch"].as_u64().unwrap();
    epochs.push(e2);
    let lf = lock_file(&data);
    assert_eq!(lf["epoch"], e2, "{lf}");
    assert_eq!(lf["pid"], c.nodes[w2].pid(), "{lf}");
    assert_eq!(segment_epoch(segments(&data).last().unwrap()), e2);
    assert!(epochs.windows(2).all(|w| w[0] < w[1]), "epochs {epochs:?}");
    assert_eq!(epochs, [1, 2, 3]);
    println!("epochs over the chain of takeovers: {epochs:?}");

    // Everything receipted on the earlier masters is served by the last.
    let mut cons = Link::open(c.nodes[w2].stomp).await.unwrap();
    cons.request(
        Frame::new(Command::Subscribe)
            .header("id", "s")
            .header("destination", "/queue/chain")
            .header("ack", "auto"),
        "sub",
    )
    .await
    .unwrap();
    let mut got = BTreeSet::new();
    while got.len() < 2 {
        match cons.next(WAIT).await {
            Got::Frame(f) if f.command == Command::Message => {
                got.insert(body(&f));
            }
            Got::Frame(f) if f.command == Command::Receipt => {}
            other => panic!("expected the chain's messages, got {other:?}; have {got:?}"),
        }
    }
    assert_eq!(got, BTreeSet::from(["m1".to_owned(), "m2".to_owned()]));
}

/// After a takeover, a remaining slave's status names the NEW master (and
/// its epoch) as the lock holder.
#[tokio::test]
async fn a_remaining_slave_names_the_new_master_after_a_takeover() {
    let mut c = Cluster::new(CONFIG);
    let a = c.master("a").await;
    let b = c.slave("b").await;
    let d = c.slave("c").await;
    c.nodes[a].kill();
    let w = c.wait_new_master(&[b, d]).await;
    let other = if w == b { d } else { b };
    let epoch = c.nodes[w].status().await.unwrap()["epoch"].clone();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let v = c.nodes[other].status().await.unwrap();
        assert_eq!(v["role"], "slave", "{v}");
        if v["lock_owner"]["pid"] == c.nodes[w].pid() && v["lock_owner"]["epoch"] == epoch {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the slave still names {} as the lock holder; the master is {} (pid {}, epoch {epoch})",
            v["lock_owner"],
            c.nodes[w].name,
            c.nodes[w].pid()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------
// 4. Many kill/restart cycles
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_kill_restart_cycles_under_continuous_traffic_lose_nothing() {
    let started = Instant::now();
    let times = kill_restart_cycles(CONFIG, 20, 2, 200, "20 kill/restart cycles").await;
    assert_eq!(times.len(), 20);
    assert!(
        started.elapsed() < Duration::from_secs(90),
        "took {:?}",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------
// 5. Fencing
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq)]
enum Tamper {
    /// `rm <data>/lock`.
    Remove,
    /// A new file (new inode) renamed over it, with a higher epoch.
    Replace,
    /// The same file rewritten in place with a higher epoch.
    Overwrite,
}

/// The epoch an intruder writes.
const INTRUDER_EPOCH: u64 = 41;

fn tamper(data: &Path, how: Tamper) {
    let path = data.join("lock");
    let intruder = format!(
        "{{\"name\":\"intruder\",\"host\":\"elsewhere\",\"pid\":1,\"started_at_ms\":0,\"epoch\":{INTRUDER_EPOCH}}}\n"
    );
    match how {
        Tamper::Remove => std::fs::remove_file(&path).unwrap(),
        Tamper::Replace => {
            let tmp = data.join("lock.intruder");
            std::fs::write(&tmp, intruder).unwrap();
            std::fs::rename(&tmp, &path).unwrap();
        }
        Tamper::Overwrite => {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(&path)
                .unwrap();
            f.write_all(intruder.as_bytes()).unwrap();
            f.sync_all().unwrap();
        }
    }
}

/// What a producer saw while its master was being fenced.
#[derive(Debug, Default)]
struct FenceLog {
    /// (body, when the SEND was written)
    sent: Vec<(String, Instant)>,
    /// (body, when its RECEIPT arrived)
    receipted: Vec<(String, Instant)>,
    /// How the connection ended.
    end: Option<String>,
}

/// Tampers with a running master's lock file and checks the fence. With
/// `with_slave`, a slave waits on the lock all along and must be the one
/// that takes over once the fenced master is gone; otherwise a new broker
/// started afterwards does.
async fn fencing(how: Tamper, with_slave: bool) {
    let mut c = Cluster::new(FENCE_CONFIG);
    let m = c.master("m").await;
    let slave = if with_slave {
        Some(c.slave("s").await)
    } else {
        None
    };
    let data = c.data();
    let tag = if with_slave { " (a slave waiting)" } else { "" };
    let old_epoch = c.nodes[m].status().await.unwrap()["epoch"]
        .as_u64()
        .unwrap();
    assert_eq!(lock_file(&data)["epoch"], old_epoch);

    // Receipted before the tampering.
    let mut p = Link::open(c.nodes[m].stomp).await.unwrap();
    let mut before = Vec::new();
    for i in 0..20 {
        let text = format!("before-{i}");
        p.request(persistent_send("/queue/fence", &text), &format!("b{i}"))
            .await
            .unwrap();
        before.push(text);
    }
    // A connected, subscribed client that must be thrown out.
    let mut idle = Link::open(c.nodes[m].stomp).await.unwrap();
    idle.request(
        Frame::new(Command::Subscribe)
            .header("id", "i")
            .header("destination", "/queue/idle")
            .header("ack", "client-individual"),
        "isub",
    )
    .await
    .unwrap();

    // Tamper, then keep sending (one at a time, each with a receipt) until
    // the master throws the producer out.
    let tampered_at = Instant::now();
    tamper(&data, how);
    let log = Arc::new(Mutex::new(FenceLog::default()));
    let plog = log.clone();
    let sender = tokio::spawn(async move {
        for i in 0.. {
            let text = format!("after-{i}");
            let f = persistent_send("/queue/fence", &text).header("receipt", format!("a{i}"));
            let sent_at = Instant::now();
            if !p.send(f).await {
                plog.lock().unwrap().end = Some("write failed".into());
                return;
            }
            plog.lock().unwrap().sent.push((text.clone(), sent_at));
            match p.next(WAIT).await {
                Got::Frame(f) if f.command == Command::Receipt => {
                    plog.lock().unwrap().receipted.push((text, Instant::now()));
                }
                other => {
                    plog.lock().unwrap().end = Some(format!("{other:?}"));
                    return;
                }
            }
        }
    });

    // The FENCED line, then the journal as the fence left it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !c.nodes[m].logs().contains("FENCED") {
        assert!(
            Instant::now() < deadline,
            "no FENCED within 5 s of {how:?}{tag} (keep-alive 200 ms):\n{}",
            c.logs()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let fenced_seen = Instant::now();
    let at_fence = snapshot(&data);
    println!(
        "{how:?}{tag}: FENCED logged within {} of the tampering (keep-alive 200 ms)",
        ms(fenced_seen - tampered_at)
    );

    // A SEND attempted after the fence is never receipted: the idle client
    // gets an ERROR or EOF, whatever it writes.
    let late = idle
        .request(persistent_send("/queue/fence", "late"), "late")
        .await;
    assert!(late.is_err(), "a SEND after the fence was receipted");
    let late = late.unwrap_err();
    assert!(
        late.contains("Closed") || late.contains("Error") || late.contains("closed"),
        "the idle client must see an ERROR or EOF, got {late}"
    );

    // The master exits non-zero, and the journal did not change after the
    // fence.
    let status = c.nodes[m]
        .wait_exit(Duration::from_secs(15), "after FENCED")
        .await;
    assert!(
        !status.success(),
        "a fenced master must exit non-zero: {status}"
    );
    // (With a slave waiting, it takes over the moment the fenced master
    // exits and writes its own segment: only the segments the fenced
    // master had are compared, and only if it is quick enough to look
    // before the new master settles; the variants without a slave check
    // the whole journal.)
    let mut exited = snapshot(&data);
    if with_slave {
        exited.retain(|p, _| at_fence.contains_key(p));
        let s = c.nodes[slave.unwrap()].status().await.unwrap();
        if s["role"] != "slave" {
            exited = at_fence.clone();
        }
    }
    assert!(
        at_fence == exited,
        "the fenced master wrote its journal after the fence:\n{}",
        describe_changes(&at_fence, &exited)
    );
    tokio::time::timeout(WAIT, sender)
        .await
        .expect("the producer was not thrown out")
        .unwrap();
    let plog = std::mem::take(&mut *log.lock().unwrap());
    println!(
        "{how:?}{tag}: {} SENDs after the tampering, {} receipted (before the fence), connection ended with {:?}",
        plog.sent.len(),
        plog.receipted.len(),
        plog.end
    );
    assert!(plog.end.is_some());
    for (text, _) in &plog.receipted {
        let sent_at = plog.sent.iter().find(|(t, _)| t == text).unwrap().1;
        assert!(
            sent_at < fenced_seen,
            "{text} was written after the FENCED line and still receipted"
        );
    }
    let logs = c.nodes[m].logs();
    assert!(logs.contains("FENCED"), "{logs}");

    // (c) A new broker takes over with a higher epoch and serves everything
    // receipted before the fence.
    let n = match slave {
        Some(s) => {
            c.nodes[s].wait_role("master", ROLE_WAIT).await;
            // A broker started now waits as a slave.
            c.slave("n").await;
            s
        }
        None => c.master("n").await,
    };
    let s = c.nodes[n].status().await.unwrap();
    let new_epoch = s["epoch"].as_u64().unwrap();
    let floor = match how {
        Tamper::Remove => old_epoch,
        Tamper::Replace | Tamper::Overwrite => INTRUDER_EPOCH,
    };
    assert!(
        new_epoch > floor,
        "new epoch {new_epoch} must exceed {floor}: {s}"
    );
    let lf = lock_file(&data);
    assert_eq!(lf["epoch"], new_epoch, "{lf}");
    assert_eq!(lf["name"], c.nodes[n].name.as_str(), "{lf}");
    assert_eq!(segment_epoch(segments(&data).last().unwrap()), new_epoch);
    let mut expect: BTreeSet<String> = before.into_iter().collect();
    expect.extend(plog.receipted.iter().map(|(t, _)| t.clone()));
    let mut cons = Link::open(c.nodes[n].stomp).await.unwrap();
    cons.request(
        Frame::new(Command::Subscribe)
            .header("id", "s")
            .header("destination", "/queue/fence")
            .header("ack", "auto"),
        "sub",
    )
    .await
    .unwrap();
    let mut got = BTreeSet::new();
    while !expect.is_subset(&got) {
        match cons.next(WAIT).await {
            Got::Frame(f) if f.command == Command::Message => {
                got.insert(body(&f));
            }
            Got::Frame(f) if f.command == Command::Receipt => {}
            other => panic!(
                "missing {:?}; got {other:?}",
                expect.difference(&got).collect::<Vec<_>>()
            ),
        }
    }
    println!(
        "{how:?}{tag}: the new master (epoch {new_epoch}, was {old_epoch}) served all {} receipted messages",
        expect.len()
    );
}

#[tokio::test]
async fn removing_the_lock_file_fences_the_master() {
    fencing(Tamper::Remove, false).await;
}

#[tokio::test]
async fn replacing_the_lock_file_with_a_newer_epoch_fences_the_master() {
    fencing(Tamper::Replace, false).await;
}

#[tokio::test]
async fn a_newer_epoch_written_into_the_lock_file_fences_the_master() {
    fencing(Tamper::Overwrite, false).await;
}

#[tokio::test]
async fn removing_the_lock_file_fences_the_master_and_the_waiting_slave_takes_over() {
    fencing(Tamper::Remove, true).await;
}

#[tokio::test]
async fn replacing_the_lock_file_fences_the_master_and_the_waiting_slave_takes_over() {
    fencing(Tamper::Replace, true).await;
}

// ---------------------------------------------------------------------------
// 6. Graceful hand-over
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_of_the_master_hands_over_quickly_and_loses_nothing() {
    let started = Instant::now();
    let mut c = Cluster::new(CONFIG);
    let a = c.master("a").await;
    let b = c.slave("b").await;
    let traffic = Traffic::start(&c.stomp_addrs(), 2);
    traffic
        .receipts_from(c.nodes[a].stomp, started, 500, || c.logs())
        .await;
    let term_at = c.nodes[a].sigterm();
    let first = traffic
        .first_receipt(c.nodes[b].stomp, term_at, || c.logs())
        .await;
    let status = c.nodes[a]
        .wait_exit(Duration::from_secs(15), "after SIGTERM")
        .await;
    println!(
        "SIGTERM of the master: first RECEIPT from the new master after {}; the old master exited ({status}) within {}",
        ms(first - term_at),
        ms(term_at.elapsed())
    );
    assert!(status.success(), "graceful shutdown must exit 0: {status}");
    let s = c.nodes[b].wait_role("master", ROLE_WAIT).await;
    assert_eq!(s["epoch"], 2, "{s}");
    traffic
        .receipts_from(c.nodes[b].stomp, term_at, 500, || c.logs())
        .await;
    let summary = traffic.finish().await;
    println!("  {summary}");
    assert!(
        first - term_at < Duration::from_secs(5),
        "hand-over took {:?}",
        first - term_at
    );
}

// ---------------------------------------------------------------------------
// 7. A slave's ports
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_slave_keeps_its_stomp_port_closed_and_is_not_ready_until_it_takes_over() {
    let mut c = Cluster::new(CONFIG);
    let a = c.master("a").await;
    let b = c.slave("b").await;
    let (b_stomp, b_http) = (c.nodes[b].stomp, c.nodes[b].http);
    // While the master serves traffic, check the slave again and again.
    let mut p = Link::open(c.nodes[a].stomp).await.unwrap();
    for i in 0..25 {
        p.request(
            persistent_send("/queue/ports", &format!("m{i}")),
            &format!("r{i}"),
        )
        .await
        .unwrap();
        assert!(
            !accepts(b_stomp).await,
            "check {i}: the slave accepted STOMP"
        );
        assert_eq!(readyz(b_http).await, 503, "check {i}");
        assert_eq!(http_get(b_http, "/healthz").await.0, 200, "check {i}");
        let v = status_of(b_http).await.unwrap();
        assert_eq!(v["role"], "slave", "check {i}: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(p);

    // Through the takeover: the port opens only once the slave has the lock,
    // and /readyz says 200 only once it is master.
    c.nodes[a].kill();
    let deadline = Instant::now() + ROLE_WAIT;
    let mut polls = 0;
    loop {
        polls += 1;
        let open = accepts(b_stomp).await;
        let ready = readyz(b_http).await;
        let role = status_of(b_http).await.unwrap()["role"].clone();
        if open {
            assert_ne!(role, "slave", "the STOMP port opened while still a slave");
        }
        if ready == 200 {
            assert_eq!(role, "master");
            break;
        }
        assert_eq!(ready, 503);
        assert!(Instant::now() < deadline, "no takeover:\n{}", c.logs());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(accepts(b_stomp).await, "a ready master must accept STOMP");
    let mut cons = Link::open(b_stomp).await.unwrap();
    cons.request(
        Frame::new(Command::Subscribe)
            .header("id", "s")
            .header("destination", "/queue/ports")
            .header("ack", "auto"),
        "sub",
    )
    .await
    .unwrap();
    println!("slave ports: takeover seen after {polls} polls; the messages follow");
    let mut n = 0;
    while n < 25 {
        match cons.next(WAIT).await {
            Got::Frame(f) if f.command == Command::Message => n += 1,
            Got::Frame(f) if f.command == Command::Receipt => {}
            other => panic!("expected MESSAGE, got {other:?}"),
        }
    }
}

/// A slave asked to stop (SIGTERM) must exit even while the master lives.
#[tokio::test]
async fn a_slave_exits_promptly_on_sigterm() {
    let mut c = Cluster::new(CONFIG);
    let a = c.master("a").await;
    let b = c.slave("b").await;
    c.nodes[b].sigterm();
    let status = c.nodes[b]
        .wait_exit(Duration::from_secs(5), "a slave after SIGTERM")
        .await;
    assert!(status.success(), "{status}");
    assert_eq!(c.nodes[a].status().await.unwrap()["role"], "master");
}
