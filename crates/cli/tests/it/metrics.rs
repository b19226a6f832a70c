//! `/metrics` as Prometheus reads it, from a real broker: every family
//! described (HELP and TYPE), named by Prometheus' conventions, listed in
//! docs/OPERATIONS.md, and the values that matter moving when traffic
//! moves them. Also checks the Grafana dashboard under deploy/ against the
//! families the broker exports.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use halyard_testkit::eventually;
use halyard_testkit::http::http_get;
use halyard_testkit::stomp::{Stomp, body};

use crate::support::BrokerProcess;
use crate::support::inproc::TestBroker;

const OPERATIONS: &str = include_str!("../../../../docs/OPERATIONS.md");
const DASHBOARD: &str = include_str!("../../../../deploy/grafana/halyard.json");

/// One scrape, parsed: families by name (type, help) and samples.
struct Scrape {
    text: String,
    families: BTreeMap<String, (String, String)>,
    /// `(sample name, labels as written, value)`.
    samples: Vec<(String, String, f64)>,
}

impl Scrape {
    async fn of(http: SocketAddr) -> Scrape {
        let (code, text) = http_get(http, "/metrics").await;
        assert_eq!(code, 200, "{text}");
        Scrape::parse(text)
    }

    fn parse(text: String) -> Scrape {
        let mut types = BTreeMap::new();
        let mut helps = BTreeMap::new();
        let mut samples = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                // The 0.0.4 text names a counter's family with its _total.
                let base = match kind {
                    "counter" => name.strip_suffix("_total").unwrap_or(name),
                    _ => name,
                };
                let old = types.insert(base.to_owned(), kind.to_owned());
                assert!(old.is_none(), "{base} has two TYPE lines:\n{text}");
            } else if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
                let base = name.strip_suffix("_total").unwrap_or(name);
                helps.insert(base.to_owned(), help.to_owned());
            } else if !line.is_empty() {
                let (series, value) = line.rsplit_once(' ').unwrap();
                let (name, labels) = match series.split_once('{') {
                    Some((n, l)) => (n, l.trim_end_matches('}')),
                    None => (series, ""),
                };
                let value = match value {
                    "+Inf" => f64::INFINITY,
                    v => v.parse().unwrap_or_else(|_| panic!("bad value: {line}")),
                };
                samples.push((name.to_owned(), labels.to_owned(), value));
            }
        }
        let families = types
            .into_iter()
            .map(|(name, kind)| {
                let help = helps
                    .get(&name)
                    .unwrap_or_else(|| panic!("{name}: a TYPE and no HELP"))
                    .clone();
                (name, (kind, help))
            })
            .collect();
        Scrape {
            text,
            families,
            samples,
        }
    }

    /// The family a sample belongs to: itself (a gauge), its base with
    /// `_total` (a counter), or with `_bucket`, `_sum` or `_count` (a
    /// histogram).
    fn family_of<'a>(&self, sample: &'a str) -> Option<&'a str> {
        let is = |name: &str, kind: &str| self.families.get(name).is_some_and(|(k, _)| k == kind);
        if self.families.contains_key(sample) && !is(sample, "counter") {
            return Some(sample);
        }
        if let Some(base) = sample.strip_suffix("_total")
            && is(base, "counter")
        {
            return Some(base);
        }
        ["_bucket", "_sum", "_count"]
            .iter()
            .filter_map(|suffix| sample.strip_suffix(suffix))
            .find(|base| is(base, "histogram"))
    }

    /// The value of the sample `name` with exactly `labels` (as written,
    /// `destination="/queue/a"`), if present.
    fn value(&self, name: &str, labels: &str) -> Option<f64> {
        self.samples
            .iter()
            .find(|(n, l, _)| n == name && l == labels)
            .map(|(_, _, v)| *v)
    }

    fn get(&self, name: &str, labels: &str) -> f64 {
        self.value(name, labels)
            .unwrap_or_else(|| panic!("no {name}{{{labels}}} in:\n{}", self.text))
    }

    /// Every destination label value of a family.
    fn destinations(&self, name: &str) -> BTreeSet<String> {
        self.samples
            .iter()
            .filter(|(n, _, _)| n == name)
            .filter_map(|(_, l, _)| {
                let v = l.strip_prefix("destination=\"")?.strip_suffix('"')?;
                Some(v.to_owned())
            })
            .collect()
    }
}

/// Checks every family has HELP and TYPE, keeps to Prometheus' naming
/// conventions, has a row in docs/OPERATIONS.md, and that no two families
/// share a base name (a gauge `x` beside a counter `x_total`).
fn check_conventions(s: &Scrape) {
    for (sample, _, _) in &s.samples {
        assert!(
            s.family_of(sample).is_some(),
            "{sample}: a sample of no described family:\n{}",
            s.text
        );
    }
    for (name, (kind, help)) in &s.families {
        assert!(!help.trim().is_empty(), "{name}: empty HELP");
        assert!(
            name.starts_with("halyard_") || name.starts_with("process_"),
            "{name}: neither halyard_ nor process_"
        );
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "{name}: not snake case"
        );
        // The family name of a counter is its base; nothing else may end
        // in _total (it would read as a counter).
        assert!(
            !name.ends_with("_total"),
            "{name} ({kind}) ends in _total but is not a counter"
        );
        assert!(
            !name.ends_with("_ms") || kind == "gauge",
            "{name}: milliseconds only in the older gauges kept for compatibility"
        );
        if kind == "histogram" {
            assert!(
                name.ends_with("_seconds") || name.ends_with("_messages"),
                "{name}: a histogram without its unit"
            );
        }
        let shown = if kind == "counter" {
            format!("`{name}_total`")
        } else {
            format!("`{name}`")
        };
        assert!(
            OPERATIONS.contains(&shown),
            "{shown} ({kind}) is not in docs/OPERATIONS.md's metrics reference"
        );
    }
}

/// A real broker process: after persistent sends with receipts to a few
/// queues, `/metrics` is described and conventionally named throughout,
/// the receipt, store-sync and batch histograms have observations, the
/// connections are told apart by protocol, the process series are there,
/// and only `max-destination-series` destinations (the deepest) get series
/// of their own, the rest summed into `_other`.
#[tokio::test]
async fn metrics_are_described_conventional_documented_and_bounded() {
    let b = BrokerProcess::start("[metrics]\nmax-destination-series = 3\n").await;
    let mut p = Stomp::connect(b.stomp).await;
    // Depths 3, 2, 1 and 0 (the last one consumed).
    for (queue, n) in [("m.a", 3), ("m.b", 2), ("m.c", 1), ("m.d", 1)] {
        for i in 0..n {
            let body = format!("{queue}-{i}");
            p.send_msg(&format!("/queue/{queue}"), &body, &[("persistent", "true")])
                .await;
        }
    }
    let mut c = Stomp::connect(b.stomp).await;
    c.subscribe("s", "/queue/m.d", "auto", &[]).await;
    assert_eq!(body(&c.recv_message().await), "m.d-0");
    // A connection on the OpenWire port counts as one of that protocol
    // from its accept on, before any handshake.
    let ow = tokio::net::TcpStream::connect(b.openwire).await.unwrap();
    let s = eventually(
        Duration::from_secs(10),
        "the ack and the openwire connection",
        || async {
            let s = Scrape::of(b.http).await;
            let acked = s.value(
                "halyard_destination_dequeued_total",
                "destination=\"_other\"",
            );
            let ow = s.value("halyard_connections", "protocol=\"openwire\"");
            // The start-up probe's STOMP connection has gone by then too.
            let stomp = s.value("halyard_connections", "protocol=\"stomp\"");
            (acked == Some(1.0) && ow == Some(1.0) && stomp == Some(2.0)).then_some(s)
        },
    )
    .await;
    check_conventions(&s);

    // Bounded: the three deepest, and _other for the rest.
    let expected: BTreeSet<String> = ["/queue/m.a", "/queue/m.b", "/queue/m.c", "_other"]
        .map(str::to_owned)
        .into();
    assert_eq!(s.destinations("halyard_destination_depth"), expected);
    assert_eq!(
        s.destinations("halyard_destination_enqueued_total"),
        expected
    );
    let d = |q: &str| format!("destination=\"{q}\"");
    assert_eq!(s.get("halyard_destination_depth", &d("/queue/m.a")), 3.0);
    assert_eq!(s.get("halyard_destination_depth", &d("/queue/m.b")), 2.0);
    assert_eq!(
        s.get("halyard_destination_enqueued_total", &d("/queue/m.a")),
        3.0
    );
    assert_eq!(s.get("halyard_destination_depth", &d("_other")), 0.0);
    assert_eq!(s.get("halyard_destination_consumers", &d("_other")), 1.0);
    assert!(s.get("halyard_destination_memory_bytes", &d("/queue/m.a")) > 0.0);
    let age = |q: &str| s.get("halyard_destination_oldest_message_age_seconds", &d(q));
    // m.a's first message was stored (synced) before m.c's was sent.
    assert!(age("/queue/m.a") > 0.0 && age("/queue/m.a") >= age("/queue/m.c"));
    assert!(age("/queue/m.a") < 60.0);
    assert_eq!(age("_other"), 0.0, "m.d has none waiting");
    assert_eq!(
        s.get("halyard_destination_expired_total", &d("/queue/m.a")),
        0.0
    );
    assert_eq!(
        s.get("halyard_destination_dead_lettered_total", &d("/queue/m.a")),
        0.0
    );

    // Seven persistent SENDs answered with a RECEIPT after being stored.
    assert_eq!(s.get("halyard_receipt_seconds_count", ""), 7.0);
    assert_eq!(s.get("halyard_receipt_seconds_bucket", "le=\"+Inf\""), 7.0);
    assert!(s.get("halyard_receipt_seconds_sum", "") > 0.0);
    assert!(s.get("halyard_store_sync_seconds_count", "") >= 1.0);
    assert!(s.get("halyard_store_batch_messages_count", "") >= 1.0);
    assert!(s.get("halyard_store_batch_messages_sum", "") >= 7.0);
    // Each of the seven waited in the writer's queue for some time.
    assert!(s.get("halyard_store_wait_seconds_count", "") >= 7.0);
    assert!(s.get("halyard_store_wait_seconds_bucket", "le=\"+Inf\"") >= 7.0);
    // The journal's data is what it holds, not its preallocated files.
    let data = s.get("halyard_store_bytes", "");
    let disk = s.get("halyard_store_disk_bytes", "");
    assert!(data > 0.0 && data < disk, "data {data}, disk {disk}");

    // Connections by protocol, and the counter under its new name.
    assert_eq!(s.get("halyard_connections", "protocol=\"stomp\""), 2.0);
    assert!(s.get("halyard_connections_accepted_total", "") >= 3.0);
    assert_eq!(
        s.get(
            "halyard_build_info",
            &format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))
        ),
        1.0
    );
    assert_eq!(s.get("halyard_role", "role=\"master\""), 1.0);
    // The broker's own process, not the test's.
    assert!(s.get("process_resident_memory_bytes", "") > 1e6);
    assert!(s.get("process_open_fds", "") >= 5.0);
    assert!(s.get("process_max_fds", "") >= s.get("process_open_fds", ""));
    // In clock ticks (10 ms): a broker this young may not have used one.
    assert!(s.get("process_cpu_seconds_total", "") >= 0.0);
    let started = s.get("process_start_time_seconds", "");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (now - 600.0..=now + 5.0).contains(&started),
        "started {started}, now {now}"
    );
    drop(ow);
    eventually(
        Duration::from_secs(10),
        "the openwire connection gone",
        || async {
            let s = Scrape::of(b.http).await;
            (s.value("halyard_connections", "protocol=\"openwire\"") == Some(0.0)).then_some(())
        },
    )
    .await;
    p.disconnect().await;
    c.disconnect().await;
}

/// A topic's counters are sums over its subscriptions; one that ends keeps
/// counting in them, so they never go backwards (Prometheus would read a
/// drop as a restart).
#[tokio::test]
async fn topic_counters_do_not_go_backwards_when_a_subscription_ends() {
    let b = TestBroker::start("").await;
    let topic = "/topic/metrics.mono";
    let label = format!("destination=\"{topic}\"");
    let mut sub = Stomp::connect(b.stomp).await;
    sub.subscribe("s", topic, "auto", &[]).await;
    let mut p = Stomp::connect(b.stomp).await;
    p.send_msg(topic, "one", &[]).await;
    p.send_msg(topic, "two", &[]).await;
    assert_eq!(body(&sub.recv_message().await), "one");
    assert_eq!(body(&sub.recv_message().await), "two");
    eventually(Duration::from_secs(10), "two acknowledged", || async {
        let s = Scrape::of(b.http).await;
        (s.value("halyard_destination_dequeued_total", &label) == Some(2.0)).then_some(())
    })
    .await;
    sub.disconnect().await;
    eventually(Duration::from_secs(10), "the subscription gone", || async {
        let s = Scrape::of(b.http).await;
        (s.value("halyard_destination_consumers", &label) == Some(0.0)).then_some(s)
    })
    .await;
    let s = Scrape::of(b.http).await;
    assert_eq!(s.get("halyard_destination_dequeued_total", &label), 2.0);
    assert_eq!(s.get("halyard_destination_enqueued_total", &label), 2.0);
    p.disconnect().await;
}

/// The dashboard is valid JSON, takes its data source from the
/// `DS_PROMETHEUS` input, and graphs only families the broker exports
/// (or the standard process ones).
#[tokio::test]
async fn the_grafana_dashboard_graphs_exported_families() {
    let dash: serde_json::Value = serde_json::from_str(DASHBOARD).expect("valid JSON");
    let inputs = dash["__inputs"].as_array().expect("__inputs");
    assert!(
        inputs.iter().any(|i| i["name"] == "DS_PROMETHEUS"),
        "{inputs:?}"
    );
    let panels = dash["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10, "{} panels", panels.len());
    let b = TestBroker::start("").await;
    let mut p = Stomp::connect(b.stomp).await;
    p.send_msg("/queue/dash", "x", &[("persistent", "true")])
        .await;
    let s = Scrape::of(b.http).await;
    let mut used = BTreeSet::new();
    for panel in panels {
        assert_eq!(
            panel["datasource"]["uid"], "${DS_PROMETHEUS}",
            "panel {}",
            panel["title"]
        );
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("expr");
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("halyard_") || word.starts_with("process_") {
                    used.insert(word.to_owned());
                }
            }
        }
    }
    // Families only a master with a takeover behind it (or a lease)
    // exports are not in this broker's scrape; the docs must have them.
    for name in &used {
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name);
        assert!(
            s.family_of(name).is_some() || OPERATIONS.contains(&format!("`{base}`")),
            "the dashboard graphs {name}, which is neither exported nor documented"
        );
    }
    p.disconnect().await;
}

/// With the PostgreSQL store, each group's transaction and commit is a
/// sync: the sync and batch histograms and the receipts move as with the
/// journal, and the store's bytes are its tables'.
#[tokio::test]
async fn the_postgres_store_times_its_commits() {
    let url = tokio::task::spawn_blocking(|| halyard_testkit::database("metrics_pg"))
        .await
        .unwrap();
    let b = BrokerProcess::start(&format!("[store]\nkind = \"postgres\"\nurl = \"{url}\"\n")).await;
    let mut p = Stomp::connect(b.stomp).await;
    let before = Scrape::of(b.http).await;
    let count = |s: &Scrape, name: &str| s.value(name, "").unwrap_or(0.0);
    for i in 0..3 {
        p.send_msg("/queue/m.pg", &i.to_string(), &[("persistent", "true")])
            .await;
    }
    let s = Scrape::of(b.http).await;
    check_conventions(&s);
    for (name, at_least) in [
        ("halyard_receipt_seconds_count", 3.0),
        ("halyard_store_sync_seconds_count", 1.0),
        ("halyard_store_batch_messages_sum", 3.0),
    ] {
        let grown = count(&s, name) - count(&before, name);
        assert!(grown >= at_least, "{name} grew by {grown}:\n{}", s.text);
    }
    assert!(s.get("halyard_store_sync_seconds_sum", "") > 0.0);
    assert!(s.get("halyard_store_bytes", "") > 0.0);
    assert_eq!(
        s.get("halyard_destination_depth", "destination=\"/queue/m.pg\""),
        3.0
    );
    p.disconnect().await;
}

/// The broker's resident memory (VmRSS), in bytes.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

/// `limits.memory-trim-*`: once a burst of messages has gone, the heap it
/// freed goes back to the operating system (counted, and the process's
/// resident memory falls), where glibc alone kept it mapped for good.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[tokio::test]
async fn memory_a_drained_burst_freed_is_given_back_to_the_os() {
    let b =
        BrokerProcess::start("[limits]\nmemory-trim-ms = 50\nmemory-trim-after-bytes = 4194304\n")
            .await;
    let trims = |s: &Scrape| s.get("halyard_memory_trims_total", "");
    assert_eq!(trims(&Scrape::of(b.http).await), 0.0);
    // 16 MiB of bodies held in the queue (non-persistent: in memory).
    const N: usize = 2048;
    let body = "x".repeat(8 * 1024);
    let mut p = Stomp::connect(b.stomp).await;
    for _ in 0..N {
        p.send_msg("/queue/trim", &body, &[]).await;
    }
    eventually(Duration::from_secs(30), "the burst held", || async {
        let used = Scrape::of(b.http).await.get("halyard_memory_bytes", "");
        (used >= (N * 8 * 1024) as f64).then_some(())
    })
    .await;
    let full = rss_bytes(b.pid());
    let mut c = Stomp::connect(b.stomp).await;
    c.subscribe("s", "/queue/trim", "auto", &[]).await;
    for _ in 0..N {
        c.recv_message().await;
    }
    eventually(
        Duration::from_secs(30),
        "a trim after the drain",
        || async {
            let s = Scrape::of(b.http).await;
            (s.get("halyard_memory_bytes", "") < 1024.0 * 1024.0 && trims(&s) >= 1.0).then_some(())
        },
    )
    .await;
    let after = rss_bytes(b.pid());
    assert!(
        after + 8 * 1024 * 1024 < full,
        "resident memory {full} B with the burst held, {after} B after it went"
    );
}
