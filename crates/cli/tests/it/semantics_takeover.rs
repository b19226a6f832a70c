//! ActiveMQ's semantics through a `kill -9` takeover: a master/slave pair
//! on a shared data directory (the journal) and on a shared PostgreSQL
//! database. The master is killed; the slave takes over with what the
//! store holds; clients fail over to it. What must hold afterwards:
//!
//! * a queue browser still sees every message, and browsing still takes
//!   nothing;
//! * a virtual topic's consumer queue that was made, and empty, before the
//!   kill receives what is published after the takeover while its consumer
//!   is away — each message once, even when a producer resends across a
//!   second kill;
//! * each message group's remaining messages go to one consumer, in order,
//!   the first of them marked;
//! * a durable subscription on a wildcard topic gets what was published
//!   while it was away, before and after the takeover.
//!
//! Nothing sleeps and hopes: every wait polls for its event with a deadline.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::semantics::{Store, assert_groups_stick, database, error_text, hdr};
use crate::support::cluster::*;
use halyard_stomp::{Command, Frame};
use halyard_testkit::stomp::{Got, Stomp, WAIT, body, persistent_send};

/// Small journal segments: quick to preallocate and to recover.
const JOURNAL: &str = "[journal]\nsegment-bytes = 1048576\n";
/// ActiveMQ's default lease: a takeover after `kill -9` goes by the fast
/// path (the dead master's database session is gone), not by its expiry.
const DATABASE: &str = "[ha]\nlease-ms = 10000\n";

const QUIET: Duration = Duration::from_millis(200);

/// A master and a slave on one store; returns the cluster and their
/// indexes.
pub(crate) async fn pair(store: Store, hint: &'static str) -> (Cluster, usize, usize) {
    let mut c = match store {
        Store::Journal => Cluster::new(JOURNAL),
        Store::Postgres => Cluster::on_database(DATABASE, &database(hint).await),
    };
    let a = c.master("a").await;
    let b = c.slave("b").await;
    (c, a, b)
}

/// `kill -9` of the master; returns once the slave serves STOMP.
pub(crate) async fn take_over(c: &mut Cluster, master: usize, slave: usize) {
    c.nodes[master].kill();
    c.nodes[slave].wait_role("master", ROLE_WAIT).await;
    let addr = c.nodes[slave].stomp;
    halyard_testkit::eventually(ROLE_WAIT, "the new master to serve STOMP", || async move {
        Stomp::link(addr).await.map(|_| ())
    })
    .await;
}

/// A STOMP 1.2 connection with `extra` CONNECT headers to whichever broker
/// of `addrs` serves; retries while a client id is still held by a
/// connection that went with its broker or was just dropped.
pub(crate) async fn connect_to_any(addrs: &[SocketAddr], extra: &[(&str, &str)]) -> Stomp {
    let deadline = Instant::now() + ROLE_WAIT;
    loop {
        for a in addrs {
            match Stomp::try_connect(*a, extra, Duration::from_secs(5)).await {
                Ok(s) => return s,
                Err(Got::Frame(e)) if error_text(&e).contains("already connected") => {}
                Err(Got::Frame(e)) => panic!("CONNECT refused: {e:?}"),
                Err(_) => {}
            }
        }
        assert!(
            Instant::now() < deadline,
            "no broker of {addrs:?} took a CONNECT within {ROLE_WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Everything a browser subscribed as `id` is shown, up to its end.
async fn browse(s: &mut Stomp, id: &str, dest: &str) -> Vec<Frame> {
    s.subscribe(id, dest, "auto", &[("browser", "true")]).await;
    let mut shown = Vec::new();
    loop {
        let m = s.recv_message().await;
        assert_eq!(hdr(&m, "subscription"), Some(id), "{m:?}");
        if hdr(&m, "browser") == Some("end") {
            return shown;
        }
        assert_eq!(hdr(&m, "ack"), None, "{m:?}");
        shown.push(m);
    }
}

/// The `i` headers of `frames`.
fn numbers(frames: &[Frame]) -> Vec<usize> {
    frames
        .iter()
        .map(|m| hdr(m, "i").unwrap().parse().unwrap())
        .collect()
}

// ---------------------------------------------------------------------------
// 1. Browsing after a takeover
// ---------------------------------------------------------------------------

async fn browse_after_takeover(store: Store) {
    const N: usize = 50;
    const Q: &str = "/queue/browse-ha";
    let started = Instant::now();
    let (mut c, a, b) = pair(store, "sem_ha_browse").await;
    let mut p = Stomp::connect(c.nodes[a].stomp).await;
    for i in 0..N {
        let f = persistent_send(Q, &format!("m{i}")).header("i", i.to_string());
        if i == N - 1 {
            p.request(f).await;
        } else {
            p.send(f).await;
        }
    }
    // A consumer takes ten and acknowledges five; five are in flight at
    // the kill.
    let mut consumer = Stomp::connect(c.nodes[a].stomp).await;
    consumer
        .subscribe(
            Q,
            Q,
            "client-individual",
            &[("activemq.prefetchSize", "10")],
        )
        .await;
    for i in 0..10 {
        let m = consumer.recv_message().await;
        assert_eq!(hdr(&m, "i"), Some(i.to_string().as_str()));
        if i < 5 {
            consumer.ack(&m).await;
        }
    }
    let mut br = Stomp::connect(c.nodes[a].stomp).await;
    let before = numbers(&browse(&mut br, "b0", Q).await);
    assert_eq!(before, (5..N).collect::<Vec<_>>(), "browse before the kill");

    take_over(&mut c, a, b).await;
    let addrs = c.stomp_addrs();
    let mut br = connect_to_any(&addrs, &[]).await;
    let first = browse(&mut br, "b1", Q).await;
    assert_eq!(
        numbers(&first),
        (5..N).collect::<Vec<_>>(),
        "after the takeover: every unacknowledged message, in order"
    );
    for m in &first {
        let i = hdr(m, "i").unwrap();
        assert_eq!(body(m), format!("m{i}"));
    }
    // Browsing took nothing: a second browse shows the same.
    let second = browse(&mut br, "b2", Q).await;
    let ids = |v: &[Frame]| -> Vec<String> {
        v.iter()
            .map(|m| hdr(m, "message-id").unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(&second), ids(&first));
    // And a consumer gets exactly those.
    let mut consumer = connect_to_any(&addrs, &[]).await;
    consumer.subscribe("c", Q, "client-individual", &[]).await;
    for want in 5..N {
        let m = consumer.recv_message().await;
        assert_eq!(hdr(&m, "i"), Some(want.to_string().as_str()), "{m:?}");
        consumer.ack(&m).await;
    }
    consumer.expect_silence(QUIET).await;
    assert!(browse(&mut br, "b3", Q).await.is_empty());
    println!(
        "{store:?}: browse after takeover in {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsing_after_a_kill_9_takeover_shows_every_message_and_takes_none_on_the_journal() {
    browse_after_takeover(Store::Journal).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsing_after_a_kill_9_takeover_shows_every_message_and_takes_none_on_postgres() {
    browse_after_takeover(Store::Postgres).await;
}

// ---------------------------------------------------------------------------
// 2. Virtual topics
// ---------------------------------------------------------------------------

const VT: &str = "/topic/VirtualTopic.Payments";
const VT_A: &str = "/queue/Consumer.A.VirtualTopic.Payments";

/// What the producer saw: numbers receipted, SENDs resent after a failover.
#[derive(Default)]
struct Sent {
    receipted: BTreeSet<u64>,
    resent: u64,
}

/// Publishes persistent messages 0..`total` to [`VT`], four at a time,
/// each with a receipt and an `_AMQ_DUPL_ID` (as Halyard's failover client
/// does); after its broker goes it fails over and resends every SEND not
/// yet receipted, with the same id.
async fn vt_producer(addrs: Vec<SocketAddr>, total: u64, sent: Arc<Mutex<Sent>>) {
    const WINDOW: usize = 4;
    let send = |n: u64| {
        persistent_send(VT, &format!("pay-{n}"))
            .header("n", n.to_string())
            .header("_AMQ_DUPL_ID", format!("vt-producer-{n}"))
            .header("receipt", format!("r-{n}"))
    };
    let mut link = failover(&addrs, None).await;
    let mut outstanding: BTreeSet<u64> = BTreeSet::new();
    let mut next = 0;
    loop {
        let mut alive = true;
        while next < total && outstanding.len() < WINDOW {
            outstanding.insert(next);
            alive &= link.try_send(send(next)).await;
            next += 1;
        }
        if outstanding.is_empty() {
            return;
        }
        if alive {
            match link.next_frame(WAIT).await {
                Got::Frame(f) if f.command == Command::Receipt => {
                    let n: u64 = f.headers.get("receipt-id").unwrap()[2..].parse().unwrap();
                    assert!(outstanding.remove(&n), "unexpected {f:?}");
                    sent.lock().unwrap().receipted.insert(n);
                    continue;
                }
                Got::Frame(f) if f.command == Command::Error => {}
                Got::Frame(f) => panic!("producer: unexpected {f:?}"),
                Got::Closed => {}
                Got::Timeout => panic!("producer: no RECEIPT within {WAIT:?}"),
            }
        }
        // The broker went: fail over and resend what is not receipted.
        link = failover(&addrs, Some(link.addr())).await;
        for n in &outstanding {
            sent.lock().unwrap().resent += 1;
            if !link.try_send(send(*n)).await {
                break;
            }
        }
    }
}

async fn virtual_topic_across_takeover(store: Store) {
    const TOTAL: u64 = 300;
    let started = Instant::now();
    let (mut c, a, b) = pair(store, "sem_ha_vt").await;
    let addrs = c.stomp_addrs();
    // The consumer queue is made (its receipt: declared in the store),
    // and left empty and without a consumer.
    let mut consumer = Stomp::connect(c.nodes[a].stomp).await;
    consumer
        .subscribe("a", VT_A, "client-individual", &[])
        .await;
    consumer.disconnect().await;

    // Killed while the queue is empty: the slave takes over with the
    // queue's declaration alone. The killed broker comes back as a slave.
    take_over(&mut c, a, b).await;
    c.nodes[a].spawn();
    c.nodes[a].wait_role("slave", ROLE_WAIT).await;

    // A producer publishes to the new master, and across a second kill,
    // resending what that kill left without a receipt.
    let sent = Arc::new(Mutex::new(Sent::default()));
    let producer = tokio::spawn(vt_producer(addrs.clone(), TOTAL, sent.clone()));
    halyard_testkit::eventually(WAIT, "100 receipts from the second master", || {
        let sent = sent.clone();
        async move { (sent.lock().unwrap().receipted.len() >= 100).then_some(()) }
    })
    .await;
    let before = sent.lock().unwrap().receipted.len();
    take_over(&mut c, b, a).await;
    tokio::time::timeout(Duration::from_secs(30), producer)
        .await
        .expect("the producer did not finish")
        .expect("the producer panicked");
    let (receipted, resent) = {
        let s = sent.lock().unwrap();
        (s.receipted.clone(), s.resent)
    };
    assert_eq!(receipted, (0..TOTAL).collect::<BTreeSet<_>>());
    assert!(
        before < TOTAL as usize,
        "the kill came after the producer was done"
    );

    // The consumer comes back to the new master: each message once.
    let mut consumer = connect_to_any(&addrs, &[]).await;
    consumer
        .subscribe(
            "a",
            VT_A,
            "client-individual",
            &[("activemq.prefetchSize", "100")],
        )
        .await;
    let mut got: BTreeMap<u64, usize> = BTreeMap::new();
    let mut order = Vec::new();
    for _ in 0..TOTAL {
        let m = consumer.recv_message().await;
        assert_eq!(hdr(&m, "destination"), Some(VT_A), "{m:?}");
        let n: u64 = hdr(&m, "n").unwrap().parse().unwrap();
        assert_eq!(body(&m), format!("pay-{n}"));
        *got.entry(n).or_default() += 1;
        order.push(n);
        consumer.ack(&m).await;
    }
    consumer.expect_silence(QUIET).await;
    let doubled: Vec<_> = got.iter().filter(|(_, k)| **k > 1).collect();
    assert!(doubled.is_empty(), "delivered more than once: {doubled:?}");
    assert_eq!(got.len(), TOTAL as usize);
    // Published after the second takeover: in order.
    let tail = &order[order.len() - 100..];
    assert!(
        tail.windows(2).all(|w| w[0] < w[1]),
        "out of order after the takeover: {tail:?}"
    );
    println!(
        "{store:?}: {TOTAL} messages through a virtual topic after a takeover, {before} receipted before a second kill, {resent} SENDs resent; each in the consumer queue once; {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_consumer_queue_receives_what_is_published_after_a_takeover_once_on_the_journal() {
    virtual_topic_across_takeover(Store::Journal).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_consumer_queue_receives_what_is_published_after_a_takeover_once_on_postgres() {
    virtual_topic_across_takeover(Store::Postgres).await;
}

// ---------------------------------------------------------------------------
// 3. Message groups
// ---------------------------------------------------------------------------

async fn groups_across_takeover(store: Store) {
    const Q: &str = "/queue/groups-ha";
    const GROUPS: usize = 4;
    const PER: usize = 8;
    let started = Instant::now();
    let (mut c, a, b) = pair(store, "sem_ha_groups").await;
    let mut p = Stomp::connect(c.nodes[a].stomp).await;
    for n in 0..PER {
        for g in 0..GROUPS {
            let f = persistent_send(Q, &format!("g{g}-{n}"))
                .header("JMSXGroupID", format!("g{g}"))
                .header("n", n.to_string());
            if n == PER - 1 && g == GROUPS - 1 {
                p.request(f).await;
            } else {
                p.send(f).await;
            }
        }
    }
    // Before the kill one consumer owns every group: it acknowledges the
    // first two of each and holds the third unacknowledged.
    let mut before = Stomp::connect(c.nodes[a].stomp).await;
    before
        .subscribe(
            "c",
            Q,
            "client-individual",
            &[("activemq.prefetchSize", &(3 * GROUPS).to_string())],
        )
        .await;
    for _ in 0..3 * GROUPS {
        let m = before.recv_message().await;
        let n: usize = hdr(&m, "n").unwrap().parse().unwrap();
        if n < 2 {
            before.ack(&m).await;
        }
    }

    take_over(&mut c, a, b).await;
    let addrs = c.stomp_addrs();
    // Two consumers with a small prefetch, so both get groups.
    let mut x = connect_to_any(&addrs, &[]).await;
    x.subscribe(
        "x",
        Q,
        "client-individual",
        &[("activemq.prefetchSize", "2")],
    )
    .await;
    let mut y = connect_to_any(&addrs, &[]).await;
    y.subscribe(
        "y",
        Q,
        "client-individual",
        &[("activemq.prefetchSize", "2")],
    )
    .await;
    let remaining = GROUPS * (PER - 2);
    let deadline = Instant::now() + WAIT;
    let mut got: Vec<(usize, Frame)> = Vec::new();
    while got.len() < remaining {
        assert!(
            Instant::now() < deadline,
            "{} of {remaining} arrived: {got:?}",
            got.len()
        );
        for (i, s) in [&mut x, &mut y].into_iter().enumerate() {
            if let Some(m) = s.recv_within(Duration::from_millis(20)).await {
                assert_eq!(m.command, Command::Message, "{m:?}");
                s.ack(&m).await;
                got.push((i, m));
            }
        }
    }
    x.expect_silence(QUIET).await;
    y.expect_silence(Duration::from_millis(20)).await;
    let owners = assert_groups_stick(&got);
    assert_eq!(owners.len(), GROUPS, "{owners:?}");
    for g in 0..GROUPS {
        let ns: Vec<usize> = got
            .iter()
            .filter(|(_, m)| hdr(m, "JMSXGroupID") == Some(format!("g{g}").as_str()))
            .map(|(_, m)| hdr(m, "n").unwrap().parse().unwrap())
            .collect();
        assert_eq!(
            ns,
            (2..PER).collect::<Vec<_>>(),
            "group g{g}: acknowledged ones came back or some are missing"
        );
    }
    let used: BTreeSet<usize> = owners.values().copied().collect();
    assert_eq!(
        used.len(),
        2,
        "the groups spread over both consumers: {owners:?}"
    );
    println!(
        "{store:?}: groups after takeover: {owners:?}; {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_takeover_each_group_still_goes_to_one_consumer_in_order_first_marked_on_the_journal()
 {
    groups_across_takeover(Store::Journal).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_takeover_each_group_still_goes_to_one_consumer_in_order_first_marked_on_postgres()
{
    groups_across_takeover(Store::Postgres).await;
}

// ---------------------------------------------------------------------------
// 4. Durable wildcard subscriptions
// ---------------------------------------------------------------------------

async fn durable_wildcard_across_takeover(store: Store) {
    const CLIENT: &[(&str, &str)] = &[("client-id", "ha-wild")];
    const SUB: &[(&str, &str)] = &[("activemq.subscriptionName", "ha-prices")];
    const PATTERN: &str = "/topic/ha.prices.>";
    let started = Instant::now();
    let (mut c, a, b) = pair(store, "sem_ha_wild").await;
    let addrs = c.stomp_addrs();
    let mut s = connect_to_any(&addrs, CLIENT).await;
    s.subscribe("d", PATTERN, "client-individual", SUB).await;
    s.disconnect().await;

    let mut p = Stomp::connect(c.nodes[a].stomp).await;
    p.send_msg(
        "/topic/ha.prices.eur",
        "before-1",
        &[("persistent", "true")],
    )
    .await;
    p.send_msg("/topic/ha.other", "elsewhere", &[("persistent", "true")])
        .await;
    p.send_msg(
        "/topic/ha.prices.usd.spot",
        "before-2",
        &[("persistent", "true")],
    )
    .await;
    take_over(&mut c, a, b).await;
    let mut p = connect_to_any(&addrs, &[]).await;
    p.send_msg("/topic/ha.prices.eur", "after-1", &[("persistent", "true")])
        .await;
    p.send_msg("/topic/ha.prices.new", "after-2", &[("persistent", "true")])
        .await;

    let mut s = connect_to_any(&addrs, CLIENT).await;
    s.subscribe("d", PATTERN, "client-individual", SUB).await;
    let mut got = Vec::new();
    for _ in 0..4 {
        let m = s.recv_message().await;
        got.push((body(&m), hdr(&m, "destination").unwrap().to_owned()));
        s.ack(&m).await;
    }
    assert_eq!(
        got,
        [
            ("before-1".to_owned(), "/topic/ha.prices.eur".to_owned()),
            (
                "before-2".to_owned(),
                "/topic/ha.prices.usd.spot".to_owned()
            ),
            ("after-1".to_owned(), "/topic/ha.prices.eur".to_owned()),
            ("after-2".to_owned(), "/topic/ha.prices.new".to_owned()),
        ]
    );
    s.expect_silence(QUIET).await;
    // Attached, it gets new messages as they come.
    p.send_msg("/topic/ha.prices.chf", "live", &[]).await;
    let m = s.recv_message().await;
    assert_eq!(body(&m), "live");
    s.ack(&m).await;
    s.disconnect().await;
    println!(
        "{store:?}: durable wildcard across takeover in {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_wildcard_subscription_gets_what_was_published_across_a_takeover_on_the_journal()
{
    durable_wildcard_across_takeover(Store::Journal).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_wildcard_subscription_gets_what_was_published_across_a_takeover_on_postgres() {
    durable_wildcard_across_takeover(Store::Postgres).await;
}
