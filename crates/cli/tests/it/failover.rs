//! The failover client (`halyard_client`) and the broker's duplicate
//! detection, against REAL `halyard broker` processes: master/slave pairs on
//! one shared data directory, `kill -9` in the middle of traffic, brokers
//! that come back on the same port, brokers that announce their peers, and
//! the `halyard` command itself failing over.
//!
//! The promises under test:
//! - a producer that awaits its receipts loses nothing across a failover, and
//!   the resends the failover causes are never enqueued twice;
//! - a consumer sees every message at least once, and a message delivered
//!   before the master died comes back flagged `redelivered` (except in the
//!   few milliseconds before its delivery count is written: docs/CLIENT.md);
//! - the reconnect schedule follows the URL's options (measured), and the
//!   attempt limits and `timeout` end in the documented errors;
//! - what cannot be carried over (an open transaction) is reported;
//! - the broker's `_AMQ_DUPL_ID` memory survives kill -9, restarts and
//!   takeovers, and outlives the message it came with (the duplicate-id
//!   settings that need no crash are tried on an in-process broker).
//!
//! Nothing sleeps and hopes: every wait polls for its event with a deadline.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::process::{Command as Process, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::cluster::{Node, ROLE_WAIT, local, ms};
use crate::support::inproc::TestBroker;
use crate::support::{BrokerProcess, halyard_bin, run_cli};
use halyard_client::{
    AckMode, Client, ClientError, ConnectionEvent, Receipt, SendMessage, SubscribeOptions,
};
use halyard_stomp::{Command, Frame};
use halyard_testkit::free_port;
use halyard_testkit::http::try_http_get;
use halyard_testkit::metrics::metric_at;
use halyard_testkit::process::wait_timeout;
use halyard_testkit::stomp::{Stomp, WAIT, body};
use serde_json::Value;

/// Small segments: quick to preallocate, to recover and to compare.
const CONFIG: &str = "[journal]\nsegment-bytes = 1048576\n";
/// How long a failover client may take to resume after its broker died.
const RESUME_BOUND: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------
// Brokers sharing one data directory, with a config per broker
// ---------------------------------------------------------------------------

/// Brokers on one data directory, each with its own ports, config and log.
struct Group {
    dir: tempfile::TempDir,
    nodes: Vec<Node>,
}

impl Group {
    fn new() -> Group {
        Group {
            dir: tempfile::tempdir().unwrap(),
            nodes: Vec::new(),
        }
    }

    /// Declares a broker on fresh ports with config `toml` (not started).
    fn add(&mut self, name: &str, toml: &str) -> usize {
        let config = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(&config, toml).unwrap();
        self.nodes.push(Node {
            name: name.to_owned(),
            stomp: local(free_port()),
            ws: local(free_port()),
            openwire: local(free_port()),
            http: local(free_port()),
            log: self.dir.path().join(format!("{name}.log")),
            config,
            store: vec![
                "--data-dir".into(),
                self.dir.path().join("data").to_string_lossy().into_owned(),
            ],
            wrapper: Vec::new(),
            child: None,
            admin_auth: None,
        });
        self.nodes.len() - 1
    }

    /// Rewrites a broker's config (takes effect at its next start).
    fn configure(&self, i: usize, toml: &str) {
        std::fs::write(&self.nodes[i].config, toml).unwrap();
    }

    /// Starts broker `i`, which must become master.
    async fn start_master(&mut self, i: usize) {
        self.nodes[i].spawn();
        self.nodes[i].wait_role("master", ROLE_WAIT).await;
    }

    /// Starts broker `i`, which must wait as a slave.
    async fn start_slave(&mut self, i: usize) {
        self.nodes[i].spawn();
        self.nodes[i].wait_role("slave", ROLE_WAIT).await;
    }

    /// A master (index 0) and a slave (index 1) on one data directory.
    async fn pair(toml: &str) -> Group {
        let mut g = Group::new();
        let a = g.add("a", toml);
        let b = g.add("b", toml);
        g.start_master(a).await;
        g.start_slave(b).await;
        g
    }

    /// `failover:(every broker, in order)?options`.
    fn failover_url(&self, options: &str) -> String {
        let list: Vec<String> = self.nodes.iter().map(Node::url).collect();
        format!("failover:({})?{options}", list.join(","))
    }

    /// Every broker's log, for failure messages.
    fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("===== {} =====\n{}", n.name, n.logs()))
            .collect()
    }
}

// ---------------------------------------------------------------------------
// Admin API: queue stats and metrics
// ---------------------------------------------------------------------------

/// One destination's stats from `/api/destinations` (`None` if the broker
/// does not answer or does not have it).
async fn queue_stats(http: SocketAddr, dest: &str) -> Option<Value> {
    let (code, text) = try_http_get(http, "/api/destinations").await.ok()?;
    if code != 200 {
        return None;
    }
    let all: Value = serde_json::from_str(&text).ok()?;
    all.as_array()?
        .iter()
        .find(|d| d["destination"] == dest)
        .cloned()
}

/// Ready messages of `dest` (0 if the destination does not exist).
async fn ready(http: SocketAddr, dest: &str) -> u64 {
    queue_stats(http, dest)
        .await
        .map_or(0, |s| s["ready"].as_u64().unwrap())
}

/// Waits until `dest` has exactly `n` ready messages, failing at once if it
/// ever has more; then checks, after a pause, that it still has exactly `n`
/// (nothing late arrives). Returns the stats.
async fn settle_ready(http: SocketAddr, dest: &str, n: u64) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let s = queue_stats(http, dest).await;
        let r = s.as_ref().map_or(0, |s| s["ready"].as_u64().unwrap());
        assert!(
            r <= n,
            "{dest} has {r} ready messages, more than {n}: {s:?}"
        );
        if r == n {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{dest} never reached {n} ready messages; last {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    let s = queue_stats(http, dest).await;
    let r = s.as_ref().map_or(0, |s| s["ready"].as_u64().unwrap());
    assert_eq!(r, n, "{dest} changed after settling: {s:?}");
    s.unwrap_or(Value::Null)
}

// ---------------------------------------------------------------------------
// Client helpers
// ---------------------------------------------------------------------------

/// Every [`ConnectionEvent`] of a client, with when it arrived.
struct EventLog {
    events: Arc<Mutex<Vec<(Instant, ConnectionEvent)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl EventLog {
    fn start(client: &Client) -> EventLog {
        let mut rx = client.events();
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        let task = tokio::spawn(async move {
            while let Some(e) = rx.next().await {
                sink.lock().unwrap().push((Instant::now(), e));
            }
        });
        EventLog { events, task }
    }

    fn all(&self) -> Vec<(Instant, ConnectionEvent)> {
        self.events.lock().unwrap().clone()
    }

    /// Waits for the first event matching `pred`; returns it and when it
    /// arrived.
    async fn wait(
        &self,
        what: &str,
        within: Duration,
        pred: impl Fn(&ConnectionEvent) -> bool,
    ) -> (Instant, ConnectionEvent) {
        let deadline = Instant::now() + within;
        loop {
            if let Some(found) = self.all().into_iter().find(|(_, e)| pred(e)) {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} event within {within:?}; events so far: {:?}",
                self.all()
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Waits for `Interrupted` from `from`, then `Resumed` on `to` (in that
    /// order, nothing else between); returns (interrupted at, resumed at,
    /// the `after` the client reported).
    async fn failover(&self, from: &str, to: &str) -> (Instant, Instant, Duration) {
        let (resumed_at, _) = self
            .wait("Resumed", RESUME_BOUND + WAIT, |e| {
                matches!(e, ConnectionEvent::Resumed { .. })
            })
            .await;
        let all = self.all();
        match &all[..] {
            [
                (
                    t0,
                    ConnectionEvent::Interrupted {
                        broker: lost,
                        reason,
                    },
                ),
                (
                    t1,
                    ConnectionEvent::Resumed {
                        broker: now,
                        after,
                        attempts,
                        ..
                    },
                ),
                ..,
            ] => {
                assert_eq!(lost, from, "interrupted from the wrong broker ({reason})");
                assert_eq!(now, to, "resumed on the wrong broker");
                assert!(*attempts >= 1);
                assert_eq!(*t1, resumed_at);
                (*t0, *t1, *after)
            }
            other => panic!("expected Interrupted then Resumed, got {other:?}"),
        }
    }
}

impl Drop for EventLog {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Awaits a receipt within [`WAIT`].
async fn receipt(what: &str, r: Receipt) -> Result<(), ClientError> {
    tokio::time::timeout(WAIT, r)
        .await
        .unwrap_or_else(|_| panic!("no outcome for {what} within {WAIT:?}"))
}

/// Sends `n` persistent messages `f(i)` to `dest`, `window` receipts in
/// flight, all of which must succeed.
async fn fill(client: &Client, dest: &str, n: usize, window: usize, f: impl Fn(usize) -> String) {
    let mut inflight = VecDeque::new();
    for i in 0..n {
        let r = client
            .send_nowait(SendMessage::new(dest, f(i)).persistent(true))
            .await
            .unwrap();
        inflight.push_back((i, r));
        if inflight.len() >= window {
            let (j, r) = inflight.pop_front().unwrap();
            receipt(&format!("message {j}"), r).await.unwrap();
        }
    }
    for (j, r) in inflight {
        receipt(&format!("message {j}"), r).await.unwrap();
    }
}

// ---------------------------------------------------------------------------
// 1. A producer under load across a kill -9 of the master
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_under_load_loses_nothing_and_enqueues_nothing_twice() {
    const N: usize = 5000;
    const WINDOW: usize = 500;
    const Q: &str = "/queue/fo-load";
    let started = Instant::now();
    let mut g = Group::pair(CONFIG).await;
    let (a, b) = (0, 1);
    let url = g.failover_url("randomize=false&initialReconnectDelay=10&maxReconnectDelay=200");
    let client = Client::connect(&url).await.unwrap();
    let events = EventLog::start(&client);
    let text = |i: usize| format!("load-{i:05}");

    let mut inflight: VecDeque<(usize, Receipt)> = VecDeque::new();
    let mut confirmed = 0usize;
    let mut killed: Option<(Instant, usize)> = None;
    for i in 0..N {
        let r = client
            .send_nowait(SendMessage::new(Q, text(i)).persistent(true))
            .await
            .unwrap_or_else(|e| panic!("send {i}: {e}"));
        inflight.push_back((i, r));
        if inflight.len() >= WINDOW {
            let (j, r) = inflight.pop_front().unwrap();
            if let Err(e) = receipt(&format!("message {j}"), r).await {
                panic!("message {j} failed: {e}\n{}", g.logs());
            }
            confirmed += 1;
        }
        if killed.is_none() && confirmed >= N / 3 {
            killed = Some((g.nodes[a].kill(), inflight.len()));
        }
    }
    for (j, r) in inflight {
        if let Err(e) = receipt(&format!("message {j}"), r).await {
            panic!("message {j} failed: {e}\n{}", g.logs());
        }
    }
    let sent_in = started.elapsed();
    let (killed_at, in_flight_at_kill) = killed.expect("the master was never killed");
    let (interrupted_at, resumed_at, after) =
        events.failover(&g.nodes[a].url(), &g.nodes[b].url()).await;
    client.disconnect().await.unwrap();

    let s = g.nodes[b].wait_role("master", ROLE_WAIT).await;
    assert_eq!(s["epoch"], 2, "{s}");
    let stats = settle_ready(g.nodes[b].http, Q, N as u64).await;
    let duplicates = metric_at(g.nodes[b].http, "halyard_duplicates_total").await;
    println!(
        "failover under load: {N} persistent sends, {in_flight_at_kill} in flight at the kill -9; \
         kill -> Interrupted {}, kill -> Resumed {} (client says {}); \
         the new master detected {duplicates} duplicate resends; queue stats {stats}; all sent in {sent_in:?}",
        ms(interrupted_at - killed_at),
        ms(resumed_at - killed_at),
        ms(after)
    );
    assert!(after < RESUME_BOUND, "resumed after {after:?}");
    assert!(resumed_at - killed_at < RESUME_BOUND);
    assert!(
        duplicates <= in_flight_at_kill as u64,
        "{duplicates} duplicates, but only {in_flight_at_kill} sends were in flight"
    );

    // Every body exactly once.
    let consumer = Client::connect(&g.nodes[b].url()).await.unwrap();
    let mut sub = consumer
        .subscribe(Q, SubscribeOptions::default().prefetch(1000))
        .await
        .unwrap();
    let mut got = BTreeSet::new();
    for k in 0..N {
        let m = tokio::time::timeout(WAIT, sub.next())
            .await
            .unwrap_or_else(|_| panic!("only {k} of {N} messages delivered"))
            .unwrap();
        let t = m.text().unwrap().to_owned();
        assert!(got.insert(t.clone()), "{t} delivered twice");
    }
    let expected: BTreeSet<String> = (0..N).map(text).collect();
    assert_eq!(got, expected);
    consumer.disconnect().await.unwrap();
    println!(
        "  consumed all {N} exactly once; took {:?}",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------
// 2. A consumer across a kill -9 of the master
// ---------------------------------------------------------------------------

/// What [`consume_across_a_failover`] saw.
struct Consumed {
    /// Repeats NOT flagged redelivered: (body, where the application saw
    /// its first copy relative to the kill: 1 = the last message before
    /// the kill, 5 = five before; 0 or less = after the kill, still from
    /// the dead master's buffer, before the client noticed; and how long
    /// before the kill it saw it, zero if after).
    unflagged: Vec<(String, isize, Duration)>,
}

/// Fills a queue on the master, consumes it with a failover client
/// (client-individual, prefetch 100, ACKs with receipts) and kill -9s the
/// master a third of the way. Checks: every message seen at least once,
/// nothing whose ACK was receipted came back, the new master's queue ends
/// empty, the client resumed within [`RESUME_BOUND`]. Repeats not flagged
/// redelivered are returned, not judged.
async fn consume_across_a_failover(label: &str) -> Consumed {
    const N: usize = 2000;
    let q = format!("/queue/fo-consume-{label}");
    let q = q.as_str();
    let started = Instant::now();
    let mut g = Group::pair(CONFIG).await;
    let (a, b) = (0, 1);
    let text = |i: usize| format!("c-{i:05}");
    let producer = Client::connect(&g.nodes[a].url()).await.unwrap();
    fill(&producer, q, N, 500, text).await;
    producer.disconnect().await.unwrap();
    settle_ready(g.nodes[a].http, q, N as u64).await;

    let url = g.failover_url("randomize=false&initialReconnectDelay=10&maxReconnectDelay=200");
    let client = Client::connect(&url).await.unwrap();
    let events = EventLog::start(&client);
    let mut sub = client
        .subscribe(
            q,
            SubscribeOptions::default()
                .ack(AckMode::ClientIndividual)
                .prefetch(100),
        )
        .await
        .unwrap();

    // body -> the redelivered flag of each copy, in order
    let mut copies: HashMap<String, Vec<bool>> = HashMap::new();
    // bodies in the order first seen
    let mut order: Vec<String> = Vec::new();
    // when the application saw each of them first
    let mut first_seen: Vec<Instant> = Vec::new();
    // (body, copy number) of each ACK awaiting its receipt
    let mut acks: VecDeque<((String, usize), Receipt)> = VecDeque::new();
    // body -> the copy whose ACK was receipted
    let mut acked: HashMap<String, usize> = HashMap::new();
    let mut not_confirmed = 0u64;
    let mut killed: Option<(Instant, usize)> = None;

    async fn settle_ack(
        key: (String, usize),
        r: Receipt,
        acked: &mut HashMap<String, usize>,
        not_confirmed: &mut u64,
    ) {
        match receipt(&format!("ACK of {key:?}"), r).await {
            Ok(()) => {
                acked.insert(key.0, key.1);
            }
            Err(ClientError::AckNotConfirmed) => *not_confirmed += 1,
            Err(e) => panic!("ACK of {key:?}: {e}"),
        }
    }

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let all_seen = copies.len() == N;
        if all_seen {
            while let Some((k, r)) = acks.pop_front() {
                settle_ack(k, r, &mut acked, &mut not_confirmed).await;
            }
        }
        // Until everything was seen, wait long; then only briefly, to
        // catch redeliveries still coming.
        let wait = if all_seen {
            Duration::from_millis(100)
        } else {
            WAIT
        };
        let m = match tokio::time::timeout(wait, sub.next()).await {
            Ok(Some(m)) => m,
            Ok(None) => panic!("the subscription ended: {:?}", client.close_reason()),
            Err(_) if all_seen => {
                let s = queue_stats(g.nodes[b].http, q).await.unwrap();
                if s["ready"] == 0 && s["inflight"] == 0 {
                    break;
                }
                assert!(Instant::now() < deadline, "the queue never emptied: {s}");
                continue;
            }
            Err(_) => panic!(
                "no message within {WAIT:?}; seen {} of {N}\n{}",
                copies.len(),
                g.logs()
            ),
        };
        let t = m.text().unwrap().to_owned();
        let flags = copies.entry(t.clone()).or_default();
        flags.push(m.redelivered());
        if flags.len() == 1 {
            order.push(t.clone());
            first_seen.push(Instant::now());
        }
        let key = (t, flags.len());
        match client.ack_nowait(&m).await {
            Ok(r) => acks.push_back((key, r)),
            Err(ClientError::AckNotConfirmed) => not_confirmed += 1,
            Err(e) => panic!("ACK of {key:?}: {e}"),
        }
        if acks.len() > 100 {
            let (k, r) = acks.pop_front().unwrap();
            settle_ack(k, r, &mut acked, &mut not_confirmed).await;
        }
        if killed.is_none() && copies.len() >= N / 3 {
            killed = Some((g.nodes[a].kill(), order.len()));
        }
    }
    let (killed_at, seen_at_kill) = killed.unwrap();
    let (_, resumed_at, after) = events.failover(&g.nodes[a].url(), &g.nodes[b].url()).await;

    // Every body at least once; nothing whose ACK was receipted came back.
    let expected: BTreeSet<String> = (0..N).map(text).collect();
    let seen: BTreeSet<String> = copies.keys().cloned().collect();
    assert_eq!(seen, expected);
    let (mut repeats, mut flagged) = (0, 0);
    let mut unflagged = Vec::new();
    for (i, t) in order.iter().enumerate() {
        let flags = &copies[t];
        flagged += flags.iter().filter(|f| **f).count();
        repeats += flags.len() - 1;
        if flags.len() > 1 && !flags[1..].iter().all(|f| *f) {
            unflagged.push((
                t.clone(),
                seen_at_kill as isize - i as isize,
                killed_at.saturating_duration_since(first_seen[i]),
            ));
        }
        if let Some(k) = acked.get(t) {
            assert_eq!(
                *k,
                flags.len(),
                "{t}: copy {k} was acknowledged (receipted), yet delivered again: {flags:?}"
            );
        }
    }
    let s = settle_ready(g.nodes[b].http, q, 0).await;
    assert_eq!(s["inflight"], 0, "{s}");
    println!(
        "consumer across a kill -9 ({label}): kill -> Resumed {} (client says {}); {N} messages, {repeats} repeats, \
         {flagged} deliveries flagged redelivered, repeats NOT flagged {unflagged:?}, {not_confirmed} ACKs not confirmed; \
         new master's queue {s}; took {:?}",
        ms(resumed_at - killed_at),
        ms(after),
        started.elapsed()
    );
    assert!(resumed_at - killed_at < RESUME_BOUND);
    client.disconnect().await.unwrap();
    Consumed { unflagged }
}

/// The consumer's promises, and the redelivered flag's as docs/CLIENT.md
/// gives it: the broker writes a delivery's count without making anyone
/// wait (with the next write, or within 2 ms), so a repeat may lack the
/// flag only if its first copy was delivered in the last moments before the
/// master died. The application sees a message after its delivery, so such
/// a repeat was seen by it among the last few messages before the kill, or
/// within [`UNFLAGGED_WINDOW`] of it (a machine busy with other tests can
/// leave the writer waiting for a CPU that long), or after it, from the
/// dead master's buffer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_fails_over_and_sees_every_message_at_least_once() {
    let c = consume_across_a_failover("tolerant").await;
    for (t, from_end, before) in &c.unflagged {
        assert!(
            *from_end <= 5 || *before <= UNFLAGGED_WINDOW,
            "{t}, first seen {from_end} messages and {before:?} before the kill, was repeated without redelivered:true"
        );
    }
}

/// How long before a master's death a delivery may still lack its written
/// count, on a loaded test machine: the 2 ms of docs/CLIENT.md, plus the
/// time the store's writer may wait for a CPU.
const UNFLAGGED_WINDOW: Duration = Duration::from_millis(50);

// ---------------------------------------------------------------------------
// 3. The reconnect schedule, measured
// ---------------------------------------------------------------------------

/// A TCP listener that accepts each connection and closes it at once,
/// recording when it accepted.
struct Slammer {
    port: u16,
    accepts: Arc<Mutex<Vec<Instant>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Slammer {
    fn start() -> Slammer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepts = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log, halt) = (accepts.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for s in listener.incoming() {
                let at = Instant::now();
                if halt.load(Ordering::SeqCst) {
                    return;
                }
                log.lock().unwrap().push(at);
                drop(s);
            }
        });
        Slammer {
            port,
            accepts,
            stop,
            thread: Some(thread),
        }
    }

    fn accepts(&self) -> Vec<Instant> {
        self.accepts.lock().unwrap().clone()
    }
}

impl Drop for Slammer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Connects to a [`Slammer`] with `options`; checks that it gives up with
/// `Unreachable { attempts }` after exactly `attempts` connections, with the
/// gaps between them within -10% / +10% + 40 ms of `gaps_ms`. Returns the
/// measured gaps.
async fn backoff(options: &str, attempts: u64, gaps_ms: &[u64]) -> Vec<Duration> {
    assert_eq!(gaps_ms.len() as u64 + 1, attempts);
    let slammer = Slammer::start();
    let url = format!("failover:(stomp://127.0.0.1:{})?{options}", slammer.port);
    let t0 = Instant::now();
    let r = Client::connect(&url).await;
    let took = t0.elapsed();
    match r {
        Err(ClientError::Unreachable { attempts: n, last }) => {
            assert_eq!(
                n, attempts,
                "{options}: gave up after {n} attempts ({last})"
            );
        }
        Err(e) => panic!("{options}: expected Unreachable, got {e}"),
        Ok(_) => panic!("{options}: connected to a listener that only closes"),
    }
    let accepts = slammer.accepts();
    assert_eq!(
        accepts.len() as u64,
        attempts,
        "{options}: {} connection attempts reached the listener, expected {attempts}",
        accepts.len()
    );
    let gaps: Vec<Duration> = accepts.windows(2).map(|w| w[1] - w[0]).collect();
    println!(
        "backoff {options}: gave up after {attempts} attempts in {}; gaps [{}], expected ~[{}] ms",
        ms(took),
        gaps.iter().map(|d| ms(*d)).collect::<Vec<_>>().join(", "),
        gaps_ms
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    for (k, (got, want)) in gaps.iter().zip(gaps_ms).enumerate() {
        let want = Duration::from_millis(*want);
        // The delay is jittered by ±10%; the listener's clock may lag the
        // client's by a little either way, and a busy machine adds more.
        let lo = want.mul_f64(0.9).saturating_sub(Duration::from_millis(2));
        let hi = want.mul_f64(1.1) + Duration::from_millis(40);
        assert!(
            *got >= lo && *got <= hi,
            "{options}: gap {k} was {got:?}, expected {want:?} (between {lo:?} and {hi:?}); all gaps {gaps:?}"
        );
    }
    gaps
}

#[tokio::test]
async fn the_reconnect_backoff_follows_the_url_options() {
    tokio::join!(
        // Exponential, capped at maxReconnectDelay.
        backoff(
            "initialReconnectDelay=50&maxReconnectDelay=400&startupMaxReconnectAttempts=6&randomize=false",
            6,
            &[50, 100, 200, 400, 400],
        ),
        // Constant.
        backoff(
            "initialReconnectDelay=50&useExponentialBackOff=false&startupMaxReconnectAttempts=4&randomize=false",
            4,
            &[50, 50, 50],
        ),
        // Another exponent.
        backoff(
            "initialReconnectDelay=20&reconnectDelayExponent=3&maxReconnectDelay=1000&startupMaxReconnectAttempts=5",
            5,
            &[20, 60, 180, 540],
        ),
        // "No attempts" still tries once.
        backoff(
            "initialReconnectDelay=50&startupMaxReconnectAttempts=0",
            1,
            &[]
        ),
    );
}

// ---------------------------------------------------------------------------
// 4. maxReconnectAttempts, 5. timeout
// ---------------------------------------------------------------------------

#[tokio::test]
async fn max_reconnect_attempts_ends_in_unreachable_and_a_failed_event() {
    let mut broker = BrokerProcess::start(CONFIG).await;
    let url = format!(
        "failover:({})?maxReconnectAttempts=3&initialReconnectDelay=10",
        broker.url()
    );
    let client = Client::connect(&url).await.unwrap();
    let events = EventLog::start(&client);
    client
        .send(SendMessage::new("/queue/fo-max", "before").persistent(true))
        .await
        .unwrap();

    let killed_at = Instant::now();
    broker.kill();
    let r = tokio::time::timeout(
        WAIT,
        client.send(SendMessage::new("/queue/fo-max", "after").persistent(true)),
    )
    .await
    .expect("the send neither succeeded nor failed");
    let failed_in = killed_at.elapsed();
    match &r {
        Err(ClientError::Unreachable { attempts: 3, .. }) => {}
        other => panic!("expected Unreachable after 3 attempts, got {other:?}"),
    }
    // 3 passes with 10 + 20 ms between them: well under a second.
    assert!(failed_in < Duration::from_secs(2), "took {failed_in:?}");
    let (failed_at, e) = events
        .wait("Failed", WAIT, |e| {
            matches!(e, ConnectionEvent::Failed { .. })
        })
        .await;
    let all = events.all();
    assert!(
        matches!(&all[0].1, ConnectionEvent::Interrupted { broker: b, .. } if *b == broker.url()),
        "{all:?}"
    );
    assert_eq!(all.len(), 2, "{all:?}");
    println!(
        "maxReconnectAttempts=3: kill -> send failed {} ({}); kill -> {e:?} {}",
        ms(failed_in),
        r.unwrap_err(),
        ms(failed_at - killed_at)
    );
    // From now on every request fails the same way, at once.
    assert!(matches!(
        client.close_reason(),
        Some(ClientError::Unreachable { attempts: 3, .. })
    ));
    let t = Instant::now();
    let again = client
        .send(SendMessage::new("/queue/fo-max", "later").persistent(true))
        .await;
    assert!(
        matches!(again, Err(ClientError::Unreachable { attempts: 3, .. })),
        "{again:?}"
    );
    assert!(t.elapsed() < Duration::from_millis(100));
}

#[tokio::test]
async fn timeout_fails_a_send_in_time_and_the_client_recovers_when_a_broker_returns() {
    const Q: &str = "/queue/fo-timeout";
    let mut broker = BrokerProcess::start(CONFIG).await;
    let url = format!(
        "failover:({})?timeout=300&initialReconnectDelay=10&maxReconnectDelay=100",
        broker.url()
    );
    let client = Client::connect(&url).await.unwrap();
    let events = EventLog::start(&client);
    client
        .send(SendMessage::new(Q, "before").persistent(true))
        .await
        .unwrap();

    broker.kill();
    events
        .wait("Interrupted", WAIT, |e| {
            matches!(e, ConnectionEvent::Interrupted { .. })
        })
        .await;
    let t = Instant::now();
    let r = tokio::time::timeout(
        WAIT,
        client.send(SendMessage::new(Q, "lost").persistent(true)),
    )
    .await
    .expect("the send neither succeeded nor failed");
    let took = t.elapsed();
    println!("timeout=300: the send failed after {} with {r:?}", ms(took));
    assert!(
        matches!(r, Err(ClientError::Timeout(d)) if d == Duration::from_millis(300)),
        "{r:?}"
    );
    assert!(
        took >= Duration::from_millis(295) && took <= Duration::from_millis(1500),
        "failed after {took:?}"
    );
    // Still reconnecting, not closed.
    assert!(client.close_reason().is_none());

    // A broker on the same port (the same data directory): the client
    // resumes on its own and later sends work.
    let restarted = Instant::now();
    broker.restart().await;
    let (resumed_at, _) = events
        .wait(
            "Resumed",
            WAIT,
            |e| matches!(e, ConnectionEvent::Resumed { broker: b, .. } if *b == broker.url()),
        )
        .await;
    client
        .send(SendMessage::new(Q, "after").persistent(true))
        .await
        .unwrap();
    println!(
        "  restarted broker -> Resumed in {}",
        ms(resumed_at.saturating_duration_since(restarted))
    );
    // The timed-out send was abandoned, not sent later.
    settle_ready(broker.http, Q, 2).await;
    let consumer = Client::connect(&broker.url()).await.unwrap();
    let mut sub = consumer
        .subscribe(Q, SubscribeOptions::default())
        .await
        .unwrap();
    let mut got = Vec::new();
    for _ in 0..2 {
        let m = tokio::time::timeout(WAIT, sub.next())
            .await
            .unwrap()
            .unwrap();
        got.push(m.text().unwrap().to_owned());
    }
    assert_eq!(got, ["before", "after"]);
}

// ---------------------------------------------------------------------------
// 6. A transaction open at the failover
// ---------------------------------------------------------------------------

/// A master/slave pair and a failover client with a transaction that sent
/// `sends` messages to `queue` on the master, which is then killed; returns
/// once the client has failed over to the slave.
async fn transaction_across_a_failover(
    queue: &str,
    sends: &[&str],
) -> (Group, Client, halyard_client::Transaction) {
    let mut g = Group::pair(CONFIG).await;
    let (a, b) = (0, 1);
    let client = Client::connect(&g.failover_url("randomize=false&initialReconnectDelay=10"))
        .await
        .unwrap();
    let events = EventLog::start(&client);
    let tx = client.begin().await.unwrap();
    for text in sends {
        tx.send(SendMessage::new(queue.to_owned(), text.to_string()).persistent(true))
            .await
            .unwrap();
    }
    // A receipted send after them: the master has taken in the
    // transaction's sends (frames are handled in order).
    client
        .send(SendMessage::new("/queue/fo-tx-sync", "sync").persistent(true))
        .await
        .unwrap();
    g.nodes[a].kill();
    events.failover(&g.nodes[a].url(), &g.nodes[b].url()).await;
    (g, client, tx)
}

#[tokio::test]
async fn a_transaction_open_at_the_failover_is_rolled_back() {
    const Q: &str = "/queue/fo-tx";
    let (g, client, tx) = transaction_across_a_failover(Q, &["tx-0", "tx-1", "tx-2"]).await;
    let b = 1;
    let id = tx.id().to_owned();
    match tx.commit().await {
        Err(ClientError::TransactionRolledBack(t)) => assert_eq!(t, id),
        other => panic!("commit after the failover: expected TransactionRolledBack, got {other:?}"),
    }
    client
        .send(SendMessage::new(Q, "plain").persistent(true))
        .await
        .unwrap();
    // A new transaction works.
    let tx2 = client.begin().await.unwrap();
    tx2.send(SendMessage::new(Q, "tx2").persistent(true))
        .await
        .unwrap();
    tx2.commit().await.unwrap();

    settle_ready(g.nodes[b].http, Q, 2).await;
    let mut c = Stomp::connect(g.nodes[b].stomp).await;
    c.subscribe("s", Q, "auto", &[]).await;
    let got = [body(&c.recv_message().await), body(&c.recv_message().await)];
    assert_eq!(got, ["plain", "tx2"]);
}

/// The docs promise that a rolled-back transaction's LATER OPERATIONS (not
/// only its commit) return `TransactionRolledBack`.
#[tokio::test]
async fn an_operation_in_a_transaction_rolled_back_by_a_failover_reports_it() {
    const Q: &str = "/queue/fo-tx-op";
    let (_g, _client, tx) = transaction_across_a_failover(Q, &["in-tx"]).await;
    let r = tx
        .send(SendMessage::new(Q, "after-failover").persistent(true))
        .await;
    assert!(
        matches!(&r, Err(ClientError::TransactionRolledBack(t)) if t == tx.id()),
        "a send in a transaction rolled back by the failover returned {r:?}"
    );
}

// ---------------------------------------------------------------------------
// 7. Duplicate detection at the broker (raw STOMP)
// ---------------------------------------------------------------------------

const DUP: &str = "_AMQ_DUPL_ID";

/// A persistent SEND with a duplicate-detection id (and maybe a
/// transaction); must be receipted.
async fn send_dup(c: &mut Stomp, dest: &str, text: &str, id: &str, tx: Option<&str>) {
    let mut h = vec![("persistent", "true"), (DUP, id)];
    if let Some(t) = tx {
        h.push(("transaction", t));
    }
    c.send_msg(dest, text, &h).await;
}

/// Takes the one ready message of `dest` (client-individual, acked with a
/// receipt); returns its body.
async fn take_one(c: &mut Stomp, sub: &str, dest: &str) -> String {
    c.subscribe(sub, dest, "client-individual", &[]).await;
    let m = c.recv_message().await;
    c.ack(&m).await;
    c.request(Frame::new(Command::Unsubscribe).header("id", sub))
        .await;
    body(&m)
}

#[tokio::test]
async fn the_broker_drops_duplicate_ids_across_kill_9_takeovers_and_after_consumption() {
    const Q: &str = "/queue/dedup";
    let mut g = Group::pair(CONFIG).await;
    let (a, b) = (0, 1);

    // On the first master: the same id twice is enqueued once.
    let mut c = Stomp::connect(g.nodes[a].stomp).await;
    send_dup(&mut c, Q, "x-1", "x", None).await;
    send_dup(&mut c, Q, "x-2", "x", None).await;
    let s = settle_ready(g.nodes[a].http, Q, 1).await;
    assert_eq!(s["enqueued"], 1, "{s}");
    assert_eq!(
        metric_at(g.nodes[a].http, "halyard_duplicates_total").await,
        1
    );
    drop(c);

    // kill -9; the slave takes over and still knows x.
    g.nodes[a].kill();
    let s = g.nodes[b].wait_role("master", ROLE_WAIT).await;
    assert_eq!(s["epoch"], 2, "{s}");
    let mut c = Stomp::connect(g.nodes[b].stomp).await;
    send_dup(&mut c, Q, "x-3", "x", None).await;
    settle_ready(g.nodes[b].http, Q, 1).await;
    assert_eq!(
        metric_at(g.nodes[b].http, "halyard_duplicates_total").await,
        1
    );
    // It is the first copy that is there; consumed, the id outlives it.
    assert_eq!(take_one(&mut c, "s1", Q).await, "x-1");
    settle_ready(g.nodes[b].http, Q, 0).await;
    send_dup(&mut c, Q, "x-4", "x", None).await;
    settle_ready(g.nodes[b].http, Q, 0).await;
    assert_eq!(
        metric_at(g.nodes[b].http, "halyard_duplicates_total").await,
        2
    );
    // A different id is enqueued.
    send_dup(&mut c, Q, "z-1", "z", None).await;
    settle_ready(g.nodes[b].http, Q, 1).await;
    assert_eq!(take_one(&mut c, "s2", Q).await, "z-1");

    // In a transaction: the duplicate is dropped at COMMIT, the new one kept.
    c.request(Frame::new(Command::Begin).header("transaction", "t1"))
        .await;
    send_dup(&mut c, Q, "y-1", "y", Some("t1")).await;
    send_dup(&mut c, Q, "x-5", "x", Some("t1")).await;
    c.request(Frame::new(Command::Commit).header("transaction", "t1"))
        .await;
    settle_ready(g.nodes[b].http, Q, 1).await;
    assert_eq!(
        metric_at(g.nodes[b].http, "halyard_duplicates_total").await,
        3
    );
    assert_eq!(take_one(&mut c, "s3", Q).await, "y-1");
    drop(c);

    // Another kill -9 and takeover (the first broker, back as a slave):
    // x, y and z are all still known, though none of their messages is.
    g.start_slave(a).await;
    g.nodes[b].kill();
    let s = g.nodes[a].wait_role("master", ROLE_WAIT).await;
    assert_eq!(s["epoch"], 3, "{s}");
    let mut c = Stomp::connect(g.nodes[a].stomp).await;
    for id in ["x", "y", "z"] {
        send_dup(&mut c, Q, &format!("{id}-again"), id, None).await;
    }
    settle_ready(g.nodes[a].http, Q, 0).await;
    assert_eq!(
        metric_at(g.nodes[a].http, "halyard_duplicates_total").await,
        3
    );
    // Ids are per queue: x on another queue is new.
    send_dup(&mut c, "/queue/dedup-other", "x-elsewhere", "x", None).await;
    settle_ready(g.nodes[a].http, "/queue/dedup-other", 1).await;
    println!(
        "duplicate detection: x dropped 2x on the first master, 2x after takeover 1 (once in a transaction), x/y/z 3x after takeover 2"
    );
}

#[tokio::test]
async fn a_duplicate_window_of_zero_turns_detection_off() {
    const Q: &str = "/queue/dedup-off";
    let b = TestBroker::start(&format!("{CONFIG}\n[destinations]\nduplicate-window = 0\n")).await;
    let mut c = Stomp::connect(b.stomp).await;
    send_dup(&mut c, Q, "x-1", "x", None).await;
    send_dup(&mut c, Q, "x-2", "x", None).await;
    let s = settle_ready(b.http, Q, 2).await;
    assert_eq!(s["enqueued"], 2, "{s}");
    assert_eq!(metric_at(b.http, "halyard_duplicates_total").await, 0);
}

#[tokio::test]
async fn an_empty_or_oversized_duplicate_id_is_refused_with_an_error() {
    const Q: &str = "/queue/dedup-bad";
    let b = TestBroker::start(CONFIG).await;
    // The longest accepted id: 256 bytes.
    let longest = "k".repeat(256);
    let mut c = Stomp::connect(b.stomp).await;
    send_dup(&mut c, Q, "longest", &longest, None).await;
    send_dup(&mut c, Q, "longest-again", &longest, None).await;
    settle_ready(b.http, Q, 1).await;
    for bad in [String::new(), "k".repeat(257)] {
        let mut c = Stomp::connect(b.stomp).await;
        c.send(
            Frame::new(Command::Send)
                .header("destination", Q)
                .header("persistent", "true")
                .header(DUP, bad.clone())
                .header("receipt", "r")
                .body(b"bad".to_vec()),
        )
        .await;
        let e = c.expect_error().await;
        let msg = e.headers.get("message").unwrap_or_default();
        assert!(
            msg.contains(DUP),
            "a {}-byte id: ERROR should name {DUP}: {e:?}",
            bad.len()
        );
    }
    settle_ready(b.http, Q, 1).await;
}

// ---------------------------------------------------------------------------
// 8. Peers announced in CONNECTED
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_client_that_knew_one_broker_learns_its_peer_from_connected_and_fails_over_to_it() {
    let mut g = Group::new();
    let a = g.add("a", CONFIG);
    let b = g.add("b", CONFIG);
    let peers = |other: usize| format!("{CONFIG}\n[ha]\npeers = [\"{}\"]\n", g.nodes[other].url());
    let (conf_a, conf_b) = (peers(b), peers(a));
    g.configure(a, &conf_a);
    g.configure(b, &conf_b);
    g.start_master(a).await;
    g.start_slave(b).await;
    let (url_a, url_b) = (g.nodes[a].url(), g.nodes[b].url());

    // The raw CONNECTED frame names the peer.
    let (_raw, connected) = Stomp::connect_with_bytes(
        g.nodes[a].stomp,
        b"CONNECT\naccept-version:1.2\nhost:localhost\n\n\0",
    )
    .await;
    assert_eq!(
        connected.headers.get("peers"),
        Some(url_b.as_str()),
        "{connected:?}"
    );

    // A client that names only A finds B through A.
    let client = Client::connect(&format!(
        "failover:({url_a})?randomize=false&initialReconnectDelay=10"
    ))
    .await
    .unwrap();
    let events = EventLog::start(&client);
    client
        .send(SendMessage::new("/queue/fo-peers", "on-a").persistent(true))
        .await
        .unwrap();
    let killed_at = g.nodes[a].kill();
    let (_, resumed_at, after) = events.failover(&url_a, &url_b).await;
    client
        .send(SendMessage::new("/queue/fo-peers", "on-b").persistent(true))
        .await
        .unwrap();
    settle_ready(g.nodes[b].http, "/queue/fo-peers", 2).await;
    println!(
        "peers: a client given only A resumed on B {} after the kill (client says {})",
        ms(resumed_at - killed_at),
        ms(after)
    );

    // Negative control: with updateURIsSupported=false a client that names
    // only B does not learn of A, and gives up when B dies, while a client
    // that does learn resumes on A.
    g.start_slave(a).await;
    let blind = Client::connect(&format!(
        "failover:({url_b})?updateURIsSupported=false&maxReconnectAttempts=5&initialReconnectDelay=10&randomize=false"
    ))
    .await
    .unwrap();
    let blind_events = EventLog::start(&blind);
    let seeing = Client::connect(&format!(
        "failover:({url_b})?maxReconnectAttempts=100&initialReconnectDelay=10&randomize=false"
    ))
    .await
    .unwrap();
    let seeing_events = EventLog::start(&seeing);
    g.nodes[b].kill();
    seeing_events.failover(&url_b, &url_a).await;
    seeing
        .send(SendMessage::new("/queue/fo-peers", "on-a-again").persistent(true))
        .await
        .unwrap();
    blind_events
        .wait("Failed", WAIT, |e| {
            matches!(e, ConnectionEvent::Failed { .. })
        })
        .await;
    let r = blind
        .send(SendMessage::new("/queue/fo-peers", "nowhere").persistent(true))
        .await;
    assert!(
        matches!(r, Err(ClientError::Unreachable { attempts: 5, .. })),
        "{r:?}"
    );
    assert!(
        !blind_events
            .all()
            .iter()
            .any(|(_, e)| matches!(e, ConnectionEvent::Resumed { .. })),
        "{:?}",
        blind_events.all()
    );
    settle_ready(g.nodes[a].http, "/queue/fo-peers", 3).await;
}

// ---------------------------------------------------------------------------
// 9. The CLI across a failover
// ---------------------------------------------------------------------------

#[tokio::test]
async fn halyard_send_survives_a_kill_9_of_the_master_and_stores_each_message_once() {
    const N: u64 = 3000;
    const Q: &str = "/queue/fo-cli";
    let mut g = Group::pair(CONFIG).await;
    let (a, b) = (0, 1);
    let url = g.failover_url("randomize=false&initialReconnectDelay=10&maxReconnectDelay=200");
    let n = N.to_string();
    let mut child = Process::new(halyard_bin())
        .args([
            "send",
            "--url",
            &url,
            "-d",
            Q,
            "-n",
            &n,
            "--persistent",
            "body",
        ])
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Kill the master once some messages are in, while the command runs.
    let deadline = Instant::now() + WAIT;
    let before_kill = loop {
        let r = ready(g.nodes[a].http, Q).await;
        if r >= 300 {
            break r;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "halyard send finished before the kill ({r} messages in); make it longer"
        );
        assert!(Instant::now() < deadline, "halyard send is not sending");
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    assert!(
        child.try_wait().unwrap().is_none(),
        "halyard send finished before the kill"
    );
    let killed_at = g.nodes[a].kill();
    let status = tokio::task::spawn_blocking(move || {
        let s = wait_timeout(&mut child, Duration::from_secs(30));
        (s, child)
    })
    .await
    .unwrap();
    let (status, child) = status;
    let status = status.expect("halyard send did not finish within 30 s");
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(status.success(), "halyard send exited {status}:\n{stderr}");
    // One line for the failover (where it resumed, the sends replayed),
    // printed by the command, not a WARN log line.
    assert!(
        stderr.contains("failover complete: resumed on") && stderr.contains("replayed"),
        "halyard send did not report a failover:\n{stderr}"
    );
    assert!(!stderr.contains("WARN"), "{stderr}");
    let s = settle_ready(g.nodes[b].http, Q, N).await;
    println!(
        "halyard send -n {N} across a kill -9 ({before_kill} in at the kill): exit 0 {} after the kill; \
         the new master holds exactly {N} ({s}), {} duplicates dropped",
        ms(killed_at.elapsed()),
        metric_at(g.nodes[b].http, "halyard_duplicates_total").await
    );
}

#[tokio::test]
async fn halyard_receive_json_shows_a_redelivered_message() {
    const Q: &str = "/queue/fo-cli-redelivered";
    let b = BrokerProcess::start(CONFIG).await;
    let mut c = Stomp::connect(b.stomp).await;
    c.send_msg(Q, "again", &[("persistent", "true")]).await;
    // Delivered once, not acknowledged, connection gone: back in the queue.
    c.subscribe("s", Q, "client-individual", &[]).await;
    let m = c.recv_message().await;
    assert_eq!(m.headers.get("redelivered"), None, "{m:?}");
    c.disconnect().await;
    settle_ready(b.http, Q, 1).await;

    let http = b.http;
    let url = b.url();
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        run_cli(
            &[
                "receive",
                "--url",
                &url,
                "-d",
                Q,
                "-n",
                "1",
                "--json",
                "--timeout",
                "10",
            ],
            None,
        )
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "{out}");
    assert!(lines[0].contains("\"redelivered\":true"), "{out}");
    let v: Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(v["redelivered"], true, "{v}");
    assert_eq!(v["body"], "again", "{v}");
    assert_eq!(v["destination"], Q, "{v}");
    // Acknowledged by the CLI: gone.
    settle_ready(http, Q, 0).await;
    let s = queue_stats(http, Q).await.unwrap();
    assert_eq!(s["inflight"], 0, "{s}");
}

// ---------------------------------------------------------------------------
// A repeat of a message delivered just before the master died
// ---------------------------------------------------------------------------

/// docs/CLIENT.md: messages delivered but not acknowledged are delivered
/// again by the new master, flagged redelivered, once the broker has
/// recorded the delivery (within a few ms; on an idle broker too). Here the
/// master dies right after that.
#[tokio::test]
async fn a_message_delivered_just_before_the_master_dies_comes_back_flagged_redelivered() {
    const Q: &str = "/queue/fo-flag";
    let mut g = Group::pair(CONFIG).await;
    let (a, b) = (0, 1);
    let mut p = Stomp::connect(g.nodes[a].stomp).await;
    p.send_msg(Q, "only-once?", &[("persistent", "true")]).await;
    drop(p);
    let client = Client::connect(&g.failover_url("randomize=false&initialReconnectDelay=10"))
        .await
        .unwrap();
    let events = EventLog::start(&client);
    let lazy = "halyard_store_lazy_batches_total";
    let recorded = metric_at(g.nodes[a].http, lazy).await;
    let mut sub = client
        .subscribe(
            Q,
            SubscribeOptions::default()
                .ack(AckMode::ClientIndividual)
                .prefetch(1),
        )
        .await
        .unwrap();
    let first = tokio::time::timeout(WAIT, sub.next())
        .await
        .unwrap()
        .unwrap();
    // The delivery count goes to the store as bookkeeping nobody waits
    // for: no durable write follows here, and it must be written anyway.
    let deadline = Instant::now() + WAIT;
    while metric_at(g.nodes[a].http, lazy).await <= recorded {
        assert!(
            Instant::now() < deadline,
            "the delivery count was never written on an idle broker"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The application has it (and is processing it) when the master dies.
    g.nodes[a].kill();
    assert!(!first.redelivered());
    events.failover(&g.nodes[a].url(), &g.nodes[b].url()).await;
    let again = tokio::time::timeout(WAIT, sub.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.text(), first.text());
    assert!(
        again.redelivered(),
        "the new master delivered {:?} a second time WITHOUT redelivered:true: {:?}",
        again.text(),
        again.headers
    );
}

/// A SEND the broker drops as a duplicate (a failover client's replay of
/// what it had stored) is still receipted, and the receipt says how many of
/// the connection's SENDs were dropped so: the client counts the
/// duplicates it suppressed from it.
#[tokio::test]
async fn a_receipt_tells_how_many_sends_were_dropped_as_duplicates() {
    let b = TestBroker::start("").await;
    let mut c = Stomp::connect(b.stomp).await;
    let send = |r: &str| {
        Frame::new(Command::Send)
            .header("destination", "/queue/replayed")
            .header("persistent", "true")
            .header("_AMQ_DUPL_ID", "producer-7:1")
            .header("receipt", r)
            .body(b"once".to_vec())
    };
    c.send(send("r1")).await;
    let first = c.recv().await;
    assert_eq!(first.command, Command::Receipt, "{first:?}");
    assert_eq!(first.headers.get("duplicates-dropped"), None, "{first:?}");
    c.send(send("r2")).await;
    let second = c.recv().await;
    assert_eq!(second.headers.get("receipt-id"), Some("r2"));
    assert_eq!(
        second.headers.get("duplicates-dropped"),
        Some("1"),
        "{second:?}"
    );
    c.subscribe("s", "/queue/replayed", "auto", &[]).await;
    assert_eq!(body(&c.recv_message().await), "once");
    c.expect_silence(Duration::from_millis(200)).await;
}
