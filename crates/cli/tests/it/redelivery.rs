//! Per-destination policies (`[[policies]]`, ActiveMQ's `policyEntry`):
//! redelivery delays with backoff, max-redeliveries per pattern, the
//! dead-letter strategies (individual, shared, discard), expired and
//! non-persistent messages per entry, and a delay that survives `kill -9`
//! (journal and PostgreSQL) and a takeover by a slave on a shared data
//! directory.
//!
//! In-process brokers, except where a test kills the broker (the binary).
//! Nothing sleeps and hopes: waits poll for their event with a deadline,
//! and "nothing more arrives" is `expect_silence`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::semantics::{Store, hdr};
use crate::support::cluster::{Cluster, ROLE_WAIT};
use crate::support::inproc::TestBroker;
use crate::support::{BrokerProcess, dest_stats};
use halyard_testkit::eventually;
use halyard_testkit::metrics::metric_at;
use halyard_testkit::stomp::{Stomp, body};

/// How long "nothing more arrives" is watched for.
const QUIET: Duration = Duration::from_millis(300);
/// How late a delayed redelivery may arrive (a loaded test machine).
const LATE: Duration = Duration::from_millis(700);
/// Timer and clock granularity: the broker counts whole milliseconds.
const EARLY: Duration = Duration::from_millis(3);

/// A client-individual subscriber to `dest` (prefetch 1).
async fn subscriber(addr: SocketAddr, dest: &str) -> Stomp {
    let mut s = Stomp::connect(addr).await;
    s.subscribe(
        "s",
        dest,
        "client-individual",
        &[("activemq.prefetchSize", "1")],
    )
    .await;
    s
}

/// Waits until the admin API shows `n` delayed messages at `dest`.
async fn delayed(http: SocketAddr, dest: &'static str, n: u64) {
    eventually(
        Duration::from_secs(10),
        "the delayed count",
        || async move {
            dest_stats(http, dest)
                .await
                .filter(|s| s["delayed"] == n)
                .map(|_| ())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nacked_messages_come_back_after_backed_off_delays() {
    let b = TestBroker::start(
        r#"
        [[policies]]
        queue = "backoff.>"
        max-redeliveries = 5
        initial-redelivery-delay = 200
        redelivery-delay = 200
        use-exponential-backoff = true
        backoff-multiplier = 2.0
        maximum-redelivery-delay = 1000
        "#,
    )
    .await;
    let mut p = Stomp::connect(b.stomp).await;
    p.send_msg("/queue/backoff.a", "m", &[("persistent", "true")])
        .await;
    let mut s = subscriber(b.stomp, "/queue/backoff.a").await;
    let mut m = s.recv_message().await;
    for (n, ms) in [200u64, 400, 800, 1000, 1000].into_iter().enumerate() {
        let delay = Duration::from_millis(ms);
        let nacked = Instant::now();
        s.nack(&m).await;
        // Not before its delay (the NACK left before the broker saw it).
        s.expect_silence(delay.saturating_sub(Duration::from_millis(50)))
            .await;
        m = s.recv_message().await;
        let took = nacked.elapsed();
        assert!(
            took + EARLY >= delay && took <= delay + LATE,
            "redelivery {} after {took:?}, expected {delay:?}",
            n + 1
        );
        assert_eq!(hdr(&m, "redelivered"), Some("true"), "{m:?}");
    }
    // Six deliveries in all: the next NACK dead-letters it at once.
    s.nack(&m).await;
    let mut d = subscriber(b.stomp, "/queue/DLQ.backoff.a").await;
    let dead = d.recv_message().await;
    assert_eq!(body(&dead), "m");
    assert_eq!(hdr(&dead, "original-destination"), Some("/queue/backoff.a"));
    s.expect_silence(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_message_does_not_hold_up_the_ones_behind_it() {
    let b = TestBroker::start(
        r#"
        [[policies]]
        queue = "slow"
        initial-redelivery-delay = 3000
        "#,
    )
    .await;
    let mut p = Stomp::connect(b.stomp).await;
    for text in ["first", "second", "third"] {
        p.send_msg("/queue/slow", text, &[]).await;
    }
    let mut s = subscriber(b.stomp, "/queue/slow").await;
    let first = s.recv_message().await;
    assert_eq!(body(&first), "first");
    let nacked = Instant::now();
    s.nack(&first).await;
    for text in ["second", "third"] {
        let m = s.recv_message().await;
        assert_eq!(body(&m), text);
        s.ack(&m).await;
    }
    assert!(nacked.elapsed() < Duration::from_secs(2), "held up");
    delayed(b.http, "/queue/slow", 1).await;
    let again = s.recv_message().await;
    assert_eq!(body(&again), "first");
    assert!(nacked.elapsed() + EARLY >= Duration::from_secs(3));
    s.ack(&again).await;
    delayed(b.http, "/queue/slow", 0).await;
}

/// NACKs `dest`'s message until it stops coming back; returns how often it
/// was delivered.
async fn deliveries_until_dead(addr: SocketAddr, dest: &str) -> usize {
    let mut s = subscriber(addr, dest).await;
    let mut n = 0;
    while let Some(m) = s.recv_within(QUIET * 2).await {
        n += 1;
        s.nack(&m).await;
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_pattern_has_its_own_max_redeliveries() {
    let b = TestBroker::start(
        r#"
        [destinations]
        max-redeliveries = 4

        [[policies]]
        queue = "one.>"
        max-redeliveries = 1

        [[policies]]
        queue = "three.>"
        max-redeliveries = 3
        "#,
    )
    .await;
    let mut p = Stomp::connect(b.stomp).await;
    for q in ["one.a", "three.a", "other"] {
        p.send_msg(&format!("/queue/{q}"), q, &[]).await;
    }
    assert_eq!(deliveries_until_dead(b.stomp, "/queue/one.a").await, 2);
    assert_eq!(deliveries_until_dead(b.stomp, "/queue/three.a").await, 4);
    assert_eq!(deliveries_until_dead(b.stomp, "/queue/other").await, 5);
    for q in ["one.a", "three.a", "other"] {
        let mut d = subscriber(b.stomp, &format!("/queue/DLQ.{q}")).await;
        assert_eq!(body(&d.recv_message().await), q);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn individual_shared_and_discard_strategies() {
    let b = TestBroker::start(
        r#"
        [destinations]
        max-redeliveries = 0

        [[policies]]
        queue = "mine.>"
        dead-letter-prefix = "DEAD."

        [[policies]]
        queue = "shared.>"
        dead-letter-strategy = "shared"

        [[policies]]
        queue = "bin.>"
        dead-letter-strategy = "discard"
        "#,
    )
    .await;
    let mut p = Stomp::connect(b.stomp).await;
    for q in ["mine.a", "shared.a", "shared.b", "bin.a"] {
        p.send_msg(&format!("/queue/{q}"), q, &[("persistent", "true")])
            .await;
        assert_eq!(
            deliveries_until_dead(b.stomp, &format!("/queue/{q}")).await,
            1
        );
    }
    let mut d = subscriber(b.stomp, "/queue/DEAD.mine.a").await;
    assert_eq!(body(&d.recv_message().await), "mine.a");
    let mut shared = subscriber(b.stomp, "/queue/ActiveMQ.DLQ").await;
    for q in ["shared.a", "shared.b"] {
        let m = shared.recv_message().await;
        assert_eq!(body(&m), q);
        assert_eq!(
            hdr(&m, "original-destination"),
            Some(format!("/queue/{q}").as_str())
        );
        // A dead-letter queue's own messages are never dead-lettered again.
        shared.nack(&m).await;
        let again = shared.recv_message().await;
        assert_eq!(body(&again), q);
        shared.ack(&again).await;
    }
    let mut bin = subscriber(b.stomp, "/queue/DLQ.bin.a").await;
    bin.expect_silence(QUIET).await;
    assert_eq!(
        metric_at(b.http, "halyard_messages_dead_letter_discarded_total").await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_non_persistent_messages_follow_their_entry() {
    let b = TestBroker::start(
        r#"
        [destinations]
        max-redeliveries = 0
        expiry-check-ms = 50

        [[policies]]
        queue = "keep.>"
        dead-letter-expired = true

        [[policies]]
        queue = "durable-only.>"
        dead-letter-non-persistent = false
        "#,
    )
    .await;
    let mut p = Stomp::connect(b.stomp).await;
    let soon = (halyard_broker_now() + 100).to_string();
    for q in ["keep.a", "drop.a"] {
        p.send_msg(&format!("/queue/{q}"), q, &[("expires", soon.as_str())])
            .await;
    }
    let mut kept = subscriber(b.stomp, "/queue/DLQ.keep.a").await;
    let m = kept.recv_message().await;
    assert_eq!(body(&m), "keep.a");
    assert_eq!(hdr(&m, "dlqDeliveryFailureCause"), Some("expired"));
    let mut dropped = subscriber(b.stomp, "/queue/DLQ.drop.a").await;
    dropped.expect_silence(QUIET).await;

    p.send_msg("/queue/durable-only.a", "transient", &[]).await;
    p.send_msg("/queue/durable-only.a", "kept", &[("persistent", "true")])
        .await;
    assert_eq!(
        deliveries_until_dead(b.stomp, "/queue/durable-only.a").await,
        2
    );
    let mut d = subscriber(b.stomp, "/queue/DLQ.durable-only.a").await;
    assert_eq!(body(&d.recv_message().await), "kept");
    d.expect_silence(QUIET).await;
}

/// Now, ms since the epoch (the clock of STOMP's `expires`).
fn halyard_broker_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

const DELAY_3S: &str = r#"
[[policies]]
queue = "later.>"
initial-redelivery-delay = 3000
"#;

/// A message NACKed with a 3 s delay, recorded: returns when it was
/// NACKed. The delay's record is written behind the NACK, without a sync of
/// its own; a receipted persistent send after it is synced with it.
async fn nack_with_delay(addr: SocketAddr, http: SocketAddr) -> Instant {
    let mut p = Stomp::connect(addr).await;
    p.send_msg("/queue/later.a", "m", &[("persistent", "true")])
        .await;
    let mut s = subscriber(addr, "/queue/later.a").await;
    let m = s.recv_message().await;
    let nacked = Instant::now();
    s.nack(&m).await;
    delayed(http, "/queue/later.a", 1).await;
    p.send_msg("/queue/later.sync", "s", &[("persistent", "true")])
        .await;
    nacked
}

/// The delayed message, after its delay and not before.
async fn expect_after_delay(addr: SocketAddr, nacked: Instant) {
    let mut s = subscriber(addr, "/queue/later.a").await;
    let due = Duration::from_secs(3);
    if let Some(early) = due.checked_sub(nacked.elapsed() + Duration::from_millis(100)) {
        s.expect_silence(early).await;
    }
    let m = s.recv_message().await;
    let took = nacked.elapsed();
    assert_eq!(body(&m), "m");
    assert!(took + EARLY >= due, "delivered {took:?} after the NACK");
    assert!(
        took <= due + Duration::from_secs(3),
        "delivered {took:?} after the NACK"
    );
    assert_eq!(hdr(&m, "redelivered"), Some("true"), "{m:?}");
    s.ack(&m).await;
}

async fn delay_survives_kill_9(store: Store) {
    let toml = format!("{}{DELAY_3S}", store.toml("redelivery_restart").await);
    let mut b = BrokerProcess::start(&toml).await;
    let nacked = nack_with_delay(b.stomp, b.http).await;
    b.kill();
    b.restart().await;
    assert!(
        nacked.elapsed() < Duration::from_millis(2500),
        "the restart took too long for the test to mean anything: {:?}",
        nacked.elapsed()
    );
    expect_after_delay(b.stomp, nacked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivery_delay_survives_kill_9_on_the_journal() {
    delay_survives_kill_9(Store::Journal).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivery_delay_survives_kill_9_on_postgres() {
    delay_survives_kill_9(Store::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivery_delay_survives_a_takeover_on_a_shared_data_directory() {
    let mut c = Cluster::new(&format!("[journal]\nsegment-bytes = 1048576\n{DELAY_3S}"));
    let a = c.master("a").await;
    let b = c.slave("b").await;
    let nacked = nack_with_delay(c.nodes[a].stomp, c.nodes[a].http).await;
    c.nodes[a].kill();
    c.nodes[b].wait_role("master", ROLE_WAIT).await;
    let addr = c.nodes[b].stomp;
    eventually(ROLE_WAIT, "the new master to serve STOMP", || async move {
        Stomp::link(addr).await.map(|_| ())
    })
    .await;
    assert!(
        nacked.elapsed() < Duration::from_millis(2500),
        "the takeover took too long for the test to mean anything: {:?}",
        nacked.elapsed()
    );
    expect_after_delay(addr, nacked).await;
}
