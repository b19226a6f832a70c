//! A group of real `halyard broker` processes sharing one store (a data
//! directory or a PostgreSQL database), and STOMP clients that fail over
//! between them while checking that nothing receipted is lost: the harness
//! of ha, ha_postgres, hostile and failover.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command as Process, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::halyard_bin;
use halyard_stomp::{Command, Frame};
use halyard_testkit::free_port;
use halyard_testkit::http::{http_get, try_http_get, try_http_request};
use halyard_testkit::process;
use halyard_testkit::stomp::{Got, Stomp, WAIT, body, persistent_send};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// How long a broker may take to reach a role (start-up, takeover).
pub const ROLE_WAIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------
// Brokers sharing one data directory
// ---------------------------------------------------------------------------

/// One `halyard broker` process of a [`Cluster`], killed when dropped. It
/// keeps its ports across restarts, and its log accumulates.
pub struct Node {
    pub name: String,
    pub stomp: SocketAddr,
    /// The STOMP-over-WebSocket listener's address.
    pub ws: SocketAddr,
    /// The OpenWire listener's address.
    pub openwire: SocketAddr,
    pub http: SocketAddr,
    pub log: PathBuf,
    pub config: PathBuf,
    /// Where the store is: `--data-dir DIR` or `--store postgres
    /// --store-url URL`.
    pub store: Vec<String>,
    /// A command line the broker runs under (e.g. `setpriv ...`, or a
    /// shell that sets a `ulimit` first): `{}` stands for the broker's own
    /// command line. Empty: run it directly.
    pub wrapper: Vec<String>,
    pub child: Option<Child>,
    /// The user and password `/api/status` is asked as, for brokers with
    /// users (whose admin API wants a login).
    pub admin_auth: Option<(String, String)>,
}

impl Node {
    /// `stomp://host:port`, as the client names brokers.
    pub fn url(&self) -> String {
        format!("stomp://{}", self.stomp)
    }

    /// Starts the process (again), without waiting for anything.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let out = log.try_clone().unwrap();
        let mut line: Vec<String> = vec![halyard_bin(), "broker".into()];
        line.extend(["--name".into(), self.name.clone()]);
        line.extend(["--config".into(), self.config.display().to_string()]);
        line.extend(self.store.iter().cloned());
        line.extend(["--stomp".into(), self.stomp.to_string()]);
        line.extend(["--ws".into(), self.ws.to_string()]);
        line.extend(["--openwire".into(), self.openwire.to_string()]);
        line.extend(["--http".into(), self.http.to_string()]);
        if !self.wrapper.is_empty() {
            let mut wrapped = Vec::new();
            for w in &self.wrapper {
                if w == "{}" {
                    wrapped.extend(line.iter().cloned());
                } else {
                    wrapped.push(w.clone());
                }
            }
            line = wrapped;
        }
        let child = Process::new(&line[0])
            .args(&line[1..])
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("not running").id()
    }

    /// `kill -9`; returns the moment just before the signal.
    pub fn kill(&mut self) -> Instant {
        let mut child = self.child.take().expect("not running");
        let at = Instant::now();
        process::kill9(&mut child);
        at
    }

    /// SIGTERM (the process is left to exit on its own; see
    /// [`Node::wait_exit`]); returns the moment just before the signal.
    pub fn sigterm(&mut self) -> Instant {
        let pid = self.pid();
        let at = Instant::now();
        process::terminate(pid);
        at
    }

    /// SIGSTOP: the broker freezes (a stalled machine) until [`Node::resume`].
    pub fn freeze(&self) {
        process::freeze(self.pid());
    }

    /// SIGCONT: a broker frozen by [`Node::freeze`] runs on.
    pub fn resume(&self) {
        process::resume(self.pid());
    }

    /// The exit status if the process has ended.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().unwrap()?;
        self.child = None;
        Some(status)
    }

    /// Waits (polling) for the process to end.
    pub async fn wait_exit(&mut self, within: Duration, what: &str) -> ExitStatus {
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

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `/api/status`, if the admin API answers (as
    /// [`Node::admin_auth`], if set).
    pub async fn status(&self) -> Option<Value> {
        match &self.admin_auth {
            None => status_of(self.http).await,
            Some((user, password)) => {
                let r = try_http_request(self.http, "GET", "/api/status", Some((user, password)))
                    .await
                    .ok()?;
                (r.status == 200).then(|| serde_json::from_str(&r.body).ok())?
            }
        }
    }

    /// Waits until `/api/status` says `role`; panics if the process exits
    /// or the deadline passes. Returns the status.
    pub async fn wait_role(&mut self, role: &str, within: Duration) -> Value {
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
            process::kill9(&mut c);
        }
    }
}

/// Brokers on one data directory, each with its own ports and log, in one
/// temporary directory.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    /// Every node's store arguments.
    pub store: Vec<String>,
    /// Every node's wrapper (see [`Node::wrapper`]).
    pub wrapper: Vec<String>,
    pub nodes: Vec<Node>,
}

impl Cluster {
    /// Brokers sharing a data directory (the journal store).
    pub fn new(toml: &str) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        Cluster::with_store(dir, toml, &["--data-dir", &data.to_string_lossy()])
    }

    /// Brokers sharing the PostgreSQL database at `url`.
    pub fn on_database(toml: &str, url: &str) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        Cluster::with_store(dir, toml, &["--store", "postgres", "--store-url", url])
    }

    fn with_store(dir: tempfile::TempDir, toml: &str, store: &[&str]) -> Cluster {
        std::fs::write(dir.path().join("halyard.toml"), toml).unwrap();
        Cluster {
            dir,
            store: store.iter().map(|s| s.to_string()).collect(),
            wrapper: Vec::new(),
            nodes: Vec::new(),
        }
    }

    /// The shared data directory (journal clusters).
    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts another broker on fresh ports; returns its index.
    pub fn spawn(&mut self, name: &str) -> usize {
        let i = self.reserve(name);
        self.nodes[i].spawn();
        i
    }

    /// Adds a broker with its ports chosen but does not start it (start it
    /// with `nodes[i].spawn()`): clients can be given its address first.
    pub fn reserve(&mut self, name: &str) -> usize {
        self.nodes.push(Node {
            name: name.to_owned(),
            stomp: local(free_port()),
            ws: local(free_port()),
            openwire: local(free_port()),
            http: local(free_port()),
            log: self.dir.path().join(format!("{name}.log")),
            config: self.dir.path().join("halyard.toml"),
            store: self.store.clone(),
            wrapper: self.wrapper.clone(),
            child: None,
            admin_auth: None,
        });
        self.nodes.len() - 1
    }

    /// Starts a broker that must become master (the directory is free).
    pub async fn master(&mut self, name: &str) -> usize {
        let i = self.spawn(name);
        self.nodes[i].wait_role("master", ROLE_WAIT).await;
        i
    }

    /// Starts broker `name` while another is master; returns once it says
    /// it is a slave and names the holder (it answers as a slave a moment
    /// before its first look at the lock).
    pub async fn slave(&mut self, name: &str) -> usize {
        let i = self.spawn(name);
        let node = &mut self.nodes[i];
        let deadline = Instant::now() + ROLE_WAIT;
        while node.wait_role("slave", ROLE_WAIT).await["lock_owner"].is_null() {
            assert!(
                Instant::now() < deadline,
                "{name} never named the lock's holder:\n{}",
                node.logs()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        i
    }

    pub fn stomp_addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|n| n.stomp).collect()
    }

    /// Every broker's log, for failure messages.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("===== {} =====\n{}", n.name, n.logs()))
            .collect()
    }

    /// Waits until exactly one of `candidates` is master; returns it. Panics
    /// if two are master at once.
    pub async fn wait_new_master(&mut self, candidates: &[usize]) -> usize {
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

pub fn local(port: u16) -> SocketAddr {
    format!("127.0.0.1:{port}").parse().unwrap()
}

pub async fn status_of(http: SocketAddr) -> Option<Value> {
    let (code, text) = try_http_get(http, "/api/status").await.ok()?;
    if code != 200 {
        return None;
    }
    serde_json::from_str(&text).ok()
}

pub async fn readyz(http: SocketAddr) -> u16 {
    http_get(http, "/readyz").await.0
}

/// Whether anything accepts TCP connections at `addr`.
pub async fn accepts(addr: SocketAddr) -> bool {
    TcpStream::connect(addr).await.is_ok()
}

pub fn median(v: &[Duration]) -> Duration {
    let mut s = v.to_vec();
    s.sort();
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2
    }
}

pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

pub fn spread(v: &[Duration]) -> String {
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

/// Connects to whichever of `addrs` serves STOMP, starting with the one
/// after `lost` (the broker that just went away), round-robin, with a short
/// backoff between rounds.
pub async fn failover(addrs: &[SocketAddr], lost: Option<SocketAddr>) -> Stomp {
    let start = lost
        .and_then(|l| addrs.iter().position(|a| *a == l))
        .map_or(0, |i| i + 1);
    let deadline = Instant::now() + ROLE_WAIT;
    let mut backoff = Duration::from_millis(1);
    loop {
        for k in 0..addrs.len() {
            if let Some(l) = Stomp::link(addrs[(start + k) % addrs.len()]).await {
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

// ---------------------------------------------------------------------------
// Traffic: producers and a consumer that fail over, and what they saw
// ---------------------------------------------------------------------------

pub const QUEUE: &str = "/queue/ha";
/// SENDs a producer has in flight (awaiting their RECEIPT).
pub const WINDOW: usize = 4;

/// One physical SEND: (producer, message number, attempt). A resent message
/// keeps its (producer, number) but gets a new attempt.
pub type Key = (usize, u64, u64);

#[derive(Debug)]
pub enum Ev {
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
pub struct Ledger {
    /// (producer, n) that got a RECEIPT.
    pub receipted: BTreeSet<(usize, u64)>,
    /// When each producer RECEIPT arrived, and from which broker.
    pub receipts: Vec<(Instant, SocketAddr)>,
    /// What the consumer saw, in order.
    pub events: Vec<Ev>,
    pub resent: u64,
    pub reconnects: u64,
}

pub fn lock(l: &Mutex<Ledger>) -> MutexGuard<'_, Ledger> {
    l.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub fn producer_send(p: usize, n: u64, a: u64, rid: &str) -> Frame {
    persistent_send(QUEUE, &format!("p{p} n{n}"))
        .header("p", p.to_string())
        .header("n", n.to_string())
        .header("a", a.to_string())
        .header("receipt", rid)
}

/// (producer, n, attempt) of a MESSAGE a producer could have sent.
pub fn parse_message(f: &Frame) -> Option<Key> {
    let p: usize = f.headers.get("p")?.parse().ok()?;
    let n: u64 = f.headers.get("n")?.parse().ok()?;
    let a: u64 = f.headers.get("a")?.parse().ok()?;
    (f.headers.get("destination") == Some(QUEUE) && body(f) == format!("p{p} n{n}"))
        .then_some((p, n, a))
}

/// Sends persistent messages, [`WINDOW`] at a time, each with a receipt,
/// until `stop`; then waits for the RECEIPTs still due. On losing its
/// broker it fails over and RESENDS every SEND whose RECEIPT had not come.
pub async fn producer(
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
            link = failover(&addrs, Some(link.addr())).await;
            alive = true;
            lock(&ledger).reconnects += 1;
            for (n, rid) in outstanding.iter_mut() {
                attempts += 1;
                *rid = format!("s-{id}-{n}-{attempts}");
                lock(&ledger).resent += 1;
                if !link.try_send(producer_send(id, *n, attempts, rid)).await {
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
            if !link
                .try_send(producer_send(id, next_n, attempts, &rid))
                .await
            {
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
        match link.next_frame(WAIT).await {
            Got::Frame(f) if f.command == Command::Receipt => {
                let rid = f.headers.get("receipt-id").unwrap_or_default();
                let n: Option<u64> = rid.split('-').nth(2).and_then(|n| n.parse().ok());
                if let Some(n) = n
                    && outstanding.get(&n).map(String::as_str) == Some(rid)
                {
                    outstanding.remove(&n);
                    let mut l = lock(&ledger);
                    l.receipted.insert((id, n));
                    l.receipts.push((Instant::now(), link.addr()));
                }
            }
            // The broker is going away (shutting down, fenced).
            Got::Frame(f) if f.command == Command::Error => alive = false,
            Got::Frame(f) => panic!("producer {id}: unexpected frame {f:?}"),
            Got::Closed => alive = false,
            Got::Timeout => panic!(
                "producer {id}: no RECEIPT from {} within {WAIT:?} ({} outstanding)",
                link.addr(),
                outstanding.len()
            ),
        }
    }
}

/// Whether every receipted message was delivered at least once.
pub fn missing_deliveries(l: &Ledger) -> Vec<(usize, u64)> {
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
pub async fn consumer(
    addrs: Vec<SocketAddr>,
    ledger: Arc<Mutex<Ledger>>,
    producers_done: Arc<AtomicBool>,
) {
    let mut lost: Option<SocketAddr> = None;
    let mut link: Option<Stomp> = None;
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
            if l.try_send(sub).await {
                link = Some(l);
            } else {
                lost = Some(l.addr());
            }
            continue;
        };
        let mut gone = false;
        match l.next_frame(Duration::from_millis(100)).await {
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
                gone = !l.try_send(ack).await;
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
            lost = Some(l.addr());
            link = None;
        }
    }
}

/// Producers and a consumer running against a group of brokers.
pub struct Traffic {
    pub ledger: Arc<Mutex<Ledger>>,
    pub stop: Arc<AtomicBool>,
    pub producers_done: Arc<AtomicBool>,
    pub producers: Vec<JoinHandle<()>>,
    pub consumer: JoinHandle<()>,
}

/// What [`Traffic::finish`] verified.
pub struct Summary {
    pub receipted: usize,
    pub deliveries: usize,
    pub redeliveries: usize,
    pub duplicates: usize,
    pub resent: u64,
    pub reconnects: u64,
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
    pub fn start(addrs: &[SocketAddr], producers: usize) -> Traffic {
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
    /// message is printed above), with the brokers' `logs`.
    pub fn check_tasks(&self, logs: impl Fn() -> String) {
        let ended =
            self.producers.iter().any(JoinHandle::is_finished) || self.consumer.is_finished();
        assert!(
            !ended,
            "a client task ended early (see its panic above):\n{}",
            logs()
        );
    }

    /// Waits for the first producer RECEIPT from `from` after `since`;
    /// returns when it arrived.
    pub async fn first_receipt(
        &self,
        from: SocketAddr,
        since: Instant,
        logs: impl Fn() -> String,
    ) -> Instant {
        self.receipts_from(from, since, 1, logs).await
    }

    /// Waits until `count` producer RECEIPTs came from `from` after
    /// `since`; returns when the first of them arrived.
    pub async fn receipts_from(
        &self,
        from: SocketAddr,
        since: Instant,
        count: usize,
        logs: impl Fn() -> String,
    ) -> Instant {
        self.receipts_where(Some(from), since, count, logs).await
    }

    /// Waits until `count` producer RECEIPTs came from any broker after
    /// `since`; returns when the first of them arrived.
    pub async fn receipts_from_any(
        &self,
        since: Instant,
        count: usize,
        logs: impl Fn() -> String,
    ) -> Instant {
        self.receipts_where(None, since, count, logs).await
    }

    async fn receipts_where(
        &self,
        from: Option<SocketAddr>,
        since: Instant,
        count: usize,
        logs: impl Fn() -> String,
    ) -> Instant {
        let deadline = Instant::now() + ROLE_WAIT;
        loop {
            self.check_tasks(&logs);
            {
                let l = lock(&self.ledger);
                let mut got = l
                    .receipts
                    .iter()
                    .filter(|(t, a)| from.is_none_or(|f| f == *a) && *t > since)
                    .map(|(t, _)| *t);
                if let Some(first) = got.next()
                    && 1 + got.count() >= count
                {
                    return first;
                }
            }
            assert!(
                Instant::now() < deadline,
                "fewer than {count} RECEIPTs from {from:?} within {ROLE_WAIT:?}:\n{}",
                logs()
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Stops the producers (after their last RECEIPTs), lets the consumer
    /// drain, and checks: every receipted message was delivered at least
    /// once, nothing whose ACK was receipted came back, nothing bogus.
    pub async fn finish(self) -> Summary {
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
pub async fn kill_restart_cycles(
    mut c: Cluster,
    cycles: usize,
    producers: usize,
    per_master: usize,
    label: &str,
) -> Vec<Duration> {
    let started = Instant::now();
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
