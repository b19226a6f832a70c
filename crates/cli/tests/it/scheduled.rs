//! Scheduled delivery (ActiveMQ's `AMQ_SCHEDULED_DELAY`, `_PERIOD`,
//! `_REPEAT`, `_CRON`): a delayed message arrives not before its delay and
//! within 50 ms after it, repeats come as many times as asked and spaced
//! by their period, cron fires every second, cron with a repeat starts a
//! run of `repeat + 1` firings at every cron time (also across a `kill -9`
//! and restart, journal and PostgreSQL), a delay works to a topic and
//! to a composite destination, bad values get an ERROR, `max-messages`
//! refuses more, a disabled scheduler delivers at once, and a schedule
//! survives a restart on the journal and on PostgreSQL and a `kill -9`
//! takeover on a shared data directory — firing once.
//!
//! Nothing sleeps and hopes: arrivals are awaited with a deadline, and
//! "nothing more arrives" is `expect_silence`.

use std::time::{Duration, Instant};

use crate::semantics::{Store, error_text, hdr, refused, send_frame};
use crate::support::BrokerProcess;
use crate::support::cluster::{Cluster, ROLE_WAIT};
use crate::support::inproc::TestBroker;
use halyard_stomp::Frame;
use halyard_testkit::http::http_get;
use halyard_testkit::stomp::{Stomp, body};

/// Slack for "within 50 ms of the due time" in the first test, and for
/// timing elsewhere.
const ON_TIME: Duration = Duration::from_millis(50);

/// A connection subscribed to `dest` with auto acknowledgement.
async fn subscriber(addr: std::net::SocketAddr, dest: &str) -> Stomp {
    let mut c = Stomp::connect(addr).await;
    c.subscribe("s", dest, "auto", &[]).await;
    c
}

/// The next MESSAGE within `within`, or a panic naming `what`.
async fn next_within(c: &mut Stomp, within: Duration, what: &str) -> Frame {
    match c.recv_within(within).await {
        Some(f) => f,
        None => panic!("{what}: nothing arrived within {within:?}"),
    }
}

#[tokio::test]
async fn a_delayed_message_arrives_not_before_its_delay_and_within_50_ms_after() {
    let b = TestBroker::start("").await;
    let mut c = subscriber(b.stomp, "/queue/sch-delay").await;
    let mut p = Stomp::connect(b.stomp).await;
    let before = Instant::now();
    p.send_msg(
        "/queue/sch-delay",
        "later",
        &[("AMQ_SCHEDULED_DELAY", "500")],
    )
    .await;
    // The broker counted the delay from a moment between these two.
    let receipted = Instant::now();
    let m = next_within(&mut c, Duration::from_secs(5), "the delayed message").await;
    let arrived = Instant::now();
    assert_eq!(body(&m), "later");
    assert!(
        arrived - before >= Duration::from_millis(500),
        "arrived {:?} after the SEND, before its 500 ms delay",
        arrived - before
    );
    assert!(
        arrived - receipted <= Duration::from_millis(500) + ON_TIME,
        "arrived {:?} after the RECEIPT: later than 50 ms past its due time",
        arrived - receipted
    );
    // As ActiveMQ: the firing names its job and keeps no schedule.
    assert!(
        hdr(&m, "scheduledJobId").is_some_and(|id| id.starts_with("ID:")),
        "{m:?}"
    );
    assert_eq!(hdr(&m, "AMQ_SCHEDULED_DELAY"), None, "{m:?}");
    c.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn period_and_repeat_fire_repeat_plus_one_times_spaced_by_the_period() {
    let b = TestBroker::start("").await;
    let mut c = subscriber(b.stomp, "/queue/sch-repeat").await;
    let mut p = Stomp::connect(b.stomp).await;
    p.send_msg(
        "/queue/sch-repeat",
        "tick",
        &[
            ("AMQ_SCHEDULED_PERIOD", "200"),
            ("AMQ_SCHEDULED_REPEAT", "3"),
        ],
    )
    .await;
    let mut at = Vec::new();
    let mut ids = Vec::new();
    for i in 0..4 {
        let m = next_within(&mut c, Duration::from_secs(5), &format!("firing {i}")).await;
        at.push(Instant::now());
        assert_eq!(body(&m), "tick");
        ids.push(hdr(&m, "message-id").unwrap().to_owned());
        assert!(hdr(&m, "scheduledJobId").is_some(), "{m:?}");
    }
    for w in at.windows(2) {
        let gap = w[1] - w[0];
        assert!(
            gap >= Duration::from_millis(200) - ON_TIME
                && gap <= Duration::from_millis(200) + 4 * ON_TIME,
            "firings {gap:?} apart, not about the 200 ms period: {at:?}"
        );
    }
    // Each firing of a repeating schedule is a message of its own.
    let distinct: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(distinct.len(), 4, "{ids:?}");
    c.expect_silence(Duration::from_millis(500)).await;
    // And the scheduler holds nothing more.
    let (code, text) = http_get(b.http, "/api/scheduled").await;
    assert_eq!(code, 200, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["count"], 0, "{v}");
}

#[tokio::test]
async fn a_cron_expression_with_seconds_fires_every_second() {
    let b = TestBroker::start("[scheduler]\ntime-zone = \"utc\"\n").await;
    let mut c = subscriber(b.stomp, "/queue/sch-cron").await;
    let mut p = Stomp::connect(b.stomp).await;
    p.send_msg(
        "/queue/sch-cron",
        "cron",
        &[("AMQ_SCHEDULED_CRON", "* * * * * *")],
    )
    .await;
    let first = next_within(&mut c, Duration::from_secs(3), "the first cron firing").await;
    let t0 = Instant::now();
    let second = next_within(&mut c, Duration::from_secs(3), "the second cron firing").await;
    let gap = t0.elapsed();
    assert!(
        gap >= Duration::from_millis(1000) - 2 * ON_TIME
            && gap <= Duration::from_millis(1000) + 4 * ON_TIME,
        "cron firings {gap:?} apart"
    );
    assert_ne!(hdr(&first, "message-id"), hdr(&second, "message-id"));
    assert_eq!(hdr(&second, "AMQ_SCHEDULED_CRON"), None, "{second:?}");
}

/// The headers of a cron schedule with repeats: every second, a run of 3
/// firings 100 ms apart.
const CRON_RUNS: &[(&str, &str)] = &[
    ("AMQ_SCHEDULED_CRON", "* * * * * *"),
    ("AMQ_SCHEDULED_REPEAT", "2"),
    ("AMQ_SCHEDULED_PERIOD", "100"),
    ("persistent", "true"),
];

/// A firing as the cron-run tests look at it: when it arrived, its id and
/// the run (`scheduledJobId`) it belongs to.
struct Firing {
    at: Instant,
    /// ms into the wall-clock second.
    ms: u128,
    id: String,
    run: String,
}

async fn next_firing(c: &mut Stomp, what: &str) -> Firing {
    let m = next_within(c, Duration::from_secs(5), what).await;
    let at = Instant::now();
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        % 1000;
    assert_eq!(body(&m), "run", "{m:?}");
    for h in ["CRON", "REPEAT", "PERIOD", "DELAY"] {
        assert_eq!(hdr(&m, &format!("AMQ_SCHEDULED_{h}")), None, "{m:?}");
    }
    Firing {
        at,
        ms,
        id: hdr(&m, "message-id").unwrap().to_owned(),
        run: hdr(&m, "scheduledJobId").unwrap().to_owned(),
    }
}

/// Asserts that `run` is one whole run: 3 firings of one job 100 ms apart.
fn assert_a_run(run: &[Firing]) {
    assert_eq!(run.len(), 3);
    assert!(run.iter().all(|f| f.run == run[0].run), "one job");
    for w in run.windows(2) {
        let gap = w[1].at - w[0].at;
        assert!(
            gap >= Duration::from_millis(100) - ON_TIME
                && gap <= Duration::from_millis(100) + 4 * ON_TIME,
            "firings of a run {gap:?} apart, not about the 100 ms period"
        );
    }
}

#[tokio::test]
async fn cron_with_a_repeat_starts_a_run_of_repeat_plus_one_firings_at_every_cron_time() {
    let b = TestBroker::start("[scheduler]\ntime-zone = \"utc\"\n").await;
    let mut c = subscriber(b.stomp, "/queue/sch-cron-runs").await;
    let mut p = Stomp::connect(b.stomp).await;
    p.send_msg("/queue/sch-cron-runs", "run", CRON_RUNS).await;
    let mut all = Vec::new();
    for i in 0..6 {
        all.push(next_firing(&mut c, &format!("firing {i}")).await);
    }
    let (first, second) = all.split_at(3);
    assert_a_run(first);
    assert_a_run(second);
    assert_ne!(first[0].run, second[0].run, "a run of its own each second");
    // The run the second cron time (a whole second) starts fires a period
    // after it: 100 ms into the second, 700 ms after the first run ended.
    let between = second[0].at - first[2].at;
    assert!(
        between >= Duration::from_millis(700) - 2 * ON_TIME
            && between <= Duration::from_millis(700) + 4 * ON_TIME,
        "runs {between:?} apart"
    );
    assert!(
        (100..=100 + 4 * ON_TIME.as_millis()).contains(&second[0].ms),
        "the second run began {} ms into the second",
        second[0].ms
    );
    let ids: std::collections::HashSet<_> = all.iter().map(|f| &f.id).collect();
    assert_eq!(ids.len(), 6, "each firing a message of its own");
    // The cron schedule stays, and the run has ended (or the next begun).
    let (code, text) = http_get(b.http, "/api/scheduled").await;
    assert_eq!(code, 200, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let count = v["count"].as_u64().unwrap();
    assert!((1..=2).contains(&count), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_runs_go_on_across_a_kill_9_and_restart_on_the_journal() {
    cron_runs_go_on_across_a_kill_9_and_restart(Store::Journal, "sch_cron_runs_journal").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_runs_go_on_across_a_kill_9_and_restart_on_postgres() {
    cron_runs_go_on_across_a_kill_9_and_restart(Store::Postgres, "sch_cron_runs_pg").await;
}

/// Killed inside a run: after the restart the run ends with the firings it
/// had left, once each, and the cron schedule goes on starting runs.
async fn cron_runs_go_on_across_a_kill_9_and_restart(store: Store, hint: &'static str) {
    let mut b = BrokerProcess::start(&store.toml(hint).await).await;
    let mut c = subscriber(b.stomp, "/queue/sch-cron-restart").await;
    let mut p = Stomp::connect(b.stomp).await;
    p.send_msg("/queue/sch-cron-restart", "run", CRON_RUNS)
        .await;
    // Killed inside a run, after its first firing.
    let first = next_firing(&mut c, "the first firing").await;
    drop((c, p));
    b.kill();
    b.restart().await;
    let mut c = subscriber(b.stomp, "/queue/sch-cron-restart").await;
    // The killed run's last firings and the next run's may interleave
    // when the restart took longer than a second.
    let mut rest = Vec::new();
    let mut next_run: Vec<Firing> = Vec::new();
    while next_run.len() < 3 || rest.len() < 2 {
        let f = next_firing(&mut c, "a firing after the restart").await;
        if f.id == first.id {
            // The first firing again: its auto-ack was not yet durable at
            // the kill (at-least-once, as any queue) - not a new firing.
            continue;
        }
        if f.run == first.run {
            rest.push(f);
        } else if next_run.first().is_none_or(|n| n.run == f.run) {
            next_run.push(f);
        }
    }
    // The killed run ends with its 2 firings left, once each...
    assert_eq!(rest.len(), 2, "firings of the killed run after the restart");
    // ...and the cron schedule goes on starting whole runs.
    assert_a_run(&next_run);
}

#[tokio::test]
async fn a_delay_works_to_a_topic_and_to_a_composite_destination() {
    let b = TestBroker::start("").await;
    let mut t = subscriber(b.stomp, "/topic/sch-t").await;
    let mut q = subscriber(b.stomp, "/queue/sch-q").await;
    let mut p = Stomp::connect(b.stomp).await;
    p.send_msg(
        "/topic/sch-t",
        "to-topic",
        &[("AMQ_SCHEDULED_DELAY", "200")],
    )
    .await;
    // Not there at once.
    t.expect_silence(Duration::from_millis(100)).await;
    let m = next_within(
        &mut t,
        Duration::from_secs(5),
        "the topic's delayed message",
    )
    .await;
    assert_eq!(body(&m), "to-topic");

    p.send_msg(
        "/queue/sch-q,/topic/sch-t",
        "to-both",
        &[("AMQ_SCHEDULED_DELAY", "200")],
    )
    .await;
    let mq = next_within(&mut q, Duration::from_secs(5), "the queue's copy").await;
    let mt = next_within(&mut t, Duration::from_secs(5), "the topic's copy").await;
    assert_eq!(body(&mq), "to-both");
    assert_eq!(body(&mt), "to-both");
    assert_eq!(hdr(&mq, "_HALYARD_SCHEDULED_ALSO"), None, "{mq:?}");
    assert_eq!(hdr(&mq, "destination"), Some("/queue/sch-q"));
    assert_eq!(hdr(&mt, "destination"), Some("/topic/sch-t"));
}

#[tokio::test]
async fn invalid_schedule_headers_get_an_error_naming_them() {
    let b = TestBroker::start("").await;
    type Case = (Vec<(&'static str, &'static str)>, &'static [&'static str]);
    let cases: Vec<Case> = vec![
        (
            vec![("AMQ_SCHEDULED_DELAY", "-5")],
            &["AMQ_SCHEDULED_DELAY", "negative"],
        ),
        (
            vec![("AMQ_SCHEDULED_DELAY", "soon")],
            &["AMQ_SCHEDULED_DELAY", "soon"],
        ),
        (
            vec![("AMQ_SCHEDULED_PERIOD", "1.5")],
            &["AMQ_SCHEDULED_PERIOD"],
        ),
        (
            vec![
                ("AMQ_SCHEDULED_PERIOD", "10"),
                ("AMQ_SCHEDULED_REPEAT", "5000"),
            ],
            &["AMQ_SCHEDULED_REPEAT", "max-repeat"],
        ),
        (
            vec![
                ("AMQ_SCHEDULED_PERIOD", "10"),
                ("AMQ_SCHEDULED_REPEAT", "-1"),
            ],
            &["AMQ_SCHEDULED_REPEAT"],
        ),
        (
            vec![("AMQ_SCHEDULED_CRON", "every tuesday")],
            &["AMQ_SCHEDULED_CRON", "every tuesday"],
        ),
        (
            vec![
                ("AMQ_SCHEDULED_CRON", "* * * * *"),
                ("AMQ_SCHEDULED_REPEAT", "2"),
            ],
            &["AMQ_SCHEDULED_REPEAT", "AMQ_SCHEDULED_PERIOD"],
        ),
        (
            vec![("AMQ_SCHEDULED_DELAY", "10"), ("AMQ_SCHEDULED_REPEAT", "2")],
            &["AMQ_SCHEDULED_PERIOD"],
        ),
    ];
    for (headers, needles) in cases {
        let mut s = Stomp::connect(b.stomp).await;
        refused(&mut s, send_frame("/queue/sch-bad", "x", &headers), needles).await;
    }
    // The broker is well, and nothing was scheduled.
    let (_, text) = http_get(b.http, "/api/status").await;
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["scheduled"], 0, "{v}");
}

#[tokio::test]
async fn max_messages_refuses_more_and_the_api_and_metrics_show_the_schedule() {
    let b = TestBroker::start("[scheduler]\nmax-messages = 2\n").await;
    let mut p = Stomp::connect(b.stomp).await;
    for i in 0..2 {
        p.send_msg(
            "/queue/sch-max",
            &format!("m{i}"),
            &[("AMQ_SCHEDULED_DELAY", "3600000")],
        )
        .await;
    }
    let (code, text) = http_get(b.http, "/api/scheduled").await;
    assert_eq!(code, 200, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["count"], 2, "{v}");
    assert!(v["next_due"].as_u64().is_some(), "{v}");
    assert_eq!(v["entries"][0]["destination"], "/queue/sch-max", "{v}");
    assert_eq!(v["entries"][0]["repeats_left"], 0, "{v}");
    let (_, text) = http_get(b.http, "/api/status").await;
    let status: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(status["scheduled"], 2, "{status}");
    let (_, metrics) = http_get(b.http, "/metrics").await;
    assert!(
        metrics.lines().any(|l| l == "halyard_scheduled_messages 2"),
        "{metrics}"
    );
    let e = refused(
        &mut p,
        send_frame(
            "/queue/sch-max",
            "m2",
            &[("AMQ_SCHEDULED_DELAY", "3600000")],
        ),
        &["max-messages"],
    )
    .await;
    assert!(error_text(&e).contains('2'), "{e:?}");
}

#[tokio::test]
async fn a_disabled_scheduler_delivers_at_once() {
    let b = TestBroker::start("[scheduler]\nenabled = false\n").await;
    let mut c = subscriber(b.stomp, "/queue/sch-off").await;
    let mut p = Stomp::connect(b.stomp).await;
    p.send_msg(
        "/queue/sch-off",
        "now",
        &[("AMQ_SCHEDULED_DELAY", "3600000")],
    )
    .await;
    let m = next_within(&mut c, Duration::from_secs(2), "the unscheduled message").await;
    assert_eq!(body(&m), "now");
    // An ordinary property then, as on an ActiveMQ without scheduler support.
    assert_eq!(hdr(&m, "AMQ_SCHEDULED_DELAY"), Some("3600000"));
}

/// A 3 s delay, `kill -9` of the broker right after its RECEIPT, a restart:
/// the message fires once, at its time.
async fn survives_a_restart(store: Store, hint: &'static str) {
    let mut b = BrokerProcess::start(&store.toml(hint).await).await;
    let mut p = Stomp::connect(b.stomp).await;
    let sent = Instant::now();
    p.send_msg(
        "/queue/sch-restart",
        "durable",
        &[("AMQ_SCHEDULED_DELAY", "3000")],
    )
    .await;
    b.kill();
    b.restart().await;
    let mut c = subscriber(b.stomp, "/queue/sch-restart").await;
    let m = next_within(
        &mut c,
        Duration::from_secs(10),
        "the delayed message after a restart",
    )
    .await;
    assert_eq!(body(&m), "durable");
    assert!(
        sent.elapsed() >= Duration::from_millis(3000),
        "fired {:?} after the SEND, before its delay",
        sent.elapsed()
    );
    c.expect_silence(Duration::from_millis(500)).await;
    // Once: not again after another restart either.
    drop(c);
    b.restart().await;
    let mut c = subscriber(b.stomp, "/queue/sch-restart").await;
    c.expect_silence(Duration::from_millis(500)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delay_survives_a_restart_on_the_journal() {
    survives_a_restart(Store::Journal, "sch_restart_journal").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delay_survives_a_restart_on_postgres() {
    survives_a_restart(Store::Postgres, "sch_restart_pg").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delay_survives_a_kill_9_takeover_on_a_shared_data_directory() {
    let mut c = Cluster::new("[journal]\nsegment-bytes = 1048576\n");
    let a = c.master("a").await;
    let s = c.slave("b").await;
    let mut p = Stomp::connect(c.nodes[a].stomp).await;
    let sent = Instant::now();
    p.send_msg(
        "/queue/sch-ha",
        "taken-over",
        &[("AMQ_SCHEDULED_DELAY", "2000")],
    )
    .await;
    c.nodes[a].kill();
    c.nodes[s].wait_role("master", ROLE_WAIT).await;
    let addr = c.nodes[s].stomp;
    halyard_testkit::eventually(ROLE_WAIT, "the new master to serve STOMP", || async move {
        Stomp::link(addr).await.map(|_| ())
    })
    .await;
    let mut cons = subscriber(addr, "/queue/sch-ha").await;
    let m = next_within(
        &mut cons,
        Duration::from_secs(10),
        "the delayed message on the new master",
    )
    .await;
    assert_eq!(body(&m), "taken-over");
    assert!(
        sent.elapsed() >= Duration::from_millis(2000),
        "{:?}",
        sent.elapsed()
    );
    cons.expect_silence(Duration::from_millis(500)).await;
}
