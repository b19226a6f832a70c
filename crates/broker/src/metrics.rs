//! Broker-wide counters, and the one writer of the Prometheus text that
//! `/metrics` serves.
//!
//! The counters are plain `AtomicU64`s, bumped with `Relaxed` ordering from
//! many tasks and read only when scraped: the hot path pays one uncontended
//! atomic add (no `Arc` to follow, no lock, no registry lookup), and no
//! ordering beyond `Relaxed` is needed because nothing is derived from two
//! counters at once.
//!
//! Everything `/metrics` shows — these counters, the store's and the
//! lease's statistics, the HA role, the per-destination gauges — is read
//! at scrape time into one [`Exposition`], which `prometheus-client` writes
//! in the Prometheus text format (0.0.4): its encoder does the escaping,
//! the `# HELP` and `# TYPE` lines and the `_total` suffix, so no caller
//! formats exposition text by hand.
//!
//! Histograms ([`Histogram`]) are this module's own rather than
//! prometheus-client's, whose `observe` takes a mutex: these are observed
//! on the send path (every receipt) and by the store writer (every sync),
//! where an observation must stay two uncontended atomic adds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// The label set of a histogram's exemplars, which none has.
type NoLabels = Vec<(String, String)>;

/// The prefix of every series name.
const PREFIX: &str = "halyard";

macro_rules! metrics {
    ($( $(#[doc = $doc:literal])* $kind:ident $name:ident ),* $(,)?) => {
        /// Counters and gauges a user would graph.
        #[derive(Debug, Default)]
        pub struct Metrics {
            $( $(#[doc = $doc])* pub $name: AtomicU64, )*
            /// Client connections open now, all protocols (the admin API's
            /// count); exported by protocol, from the two below.
            pub connections: AtomicU64,
            /// STOMP connections open now (TCP, TLS and WebSocket).
            pub stomp_connections: AtomicU64,
            /// OpenWire connections open now.
            pub openwire_connections: AtomicU64,
            /// From a persistent SEND's (or synchronous OpenWire send's)
            /// arrival to its RECEIPT (Response) being queued for writing.
            pub receipt_seconds: Histogram,
        }

        impl Metrics {
            /// Adds every metric, with its doc comment as its help, to a
            /// scrape.
            pub fn export(&self, out: &mut Exposition) {
                out.labelled_gauges(
                    "connections",
                    "Client connections open now, by protocol (stomp: TCP, TLS and WebSocket).",
                    "protocol",
                    [
                        ("stomp".to_owned(), self.stomp_connections.load(Ordering::Relaxed)),
                        ("openwire".to_owned(), self.openwire_connections.load(Ordering::Relaxed)),
                    ],
                );
                out.histogram(
                    "receipt_seconds",
                    "From a SEND's arrival to its RECEIPT being written (STOMP SENDs with a receipt header, OpenWire sends that wait for a Response): for persistent messages, this includes storing them.",
                    &self.receipt_seconds,
                );
                $(
                    out.$kind(
                        stringify!($name),
                        concat!($($doc),*).trim_ascii(),
                        self.$name.load(Ordering::Relaxed),
                    );
                )*
            }
        }
    };
}

metrics! {
    /// Client connections accepted since start (formerly
    /// halyard_connections_total, renamed so that no counter shares its
    /// base name with the halyard_connections gauge).
    counter connections_accepted_total,
    /// Connections refused because the connection limit was reached.
    counter connections_refused_total,
    /// Connections refused because their user held
    /// limits.max-connections-per-user connections already.
    counter connections_refused_per_user_total,
    /// Connections refused because their IP address held
    /// limits.max-connections-per-address connections already.
    counter connections_refused_per_address_total,
    /// SENDs held back by limits.max-send-rate-per-connection.
    counter sends_delayed_total,
    /// Client logins refused: unknown user or wrong passcode, or no
    /// credentials where anonymous access is off.
    counter login_failures_total,
    /// Requests refused for want of a right on a destination.
    counter authorization_denied_total,
    /// Frames received from clients.
    counter frames_received_total,
    /// Connections closed with an ERROR frame because of a protocol error.
    counter protocol_errors_total,
    /// Messages accepted from producers (committed ones, for transactions).
    counter messages_received_total,
    /// MESSAGE frames sent to subscribers, redeliveries included.
    counter messages_delivered_total,
    /// Deliveries that were redeliveries.
    counter messages_redelivered_total,
    /// Messages acknowledged by consumers (auto acknowledgements included).
    counter messages_acked_total,
    /// Messages moved to a dead-letter queue.
    counter messages_dead_lettered_total,
    /// Messages dropped instead of dead-lettered: the discard dead-letter
    /// strategy, or non-persistent ones a policy does not dead-letter.
    counter messages_dead_letter_discarded_total,
    /// Messages that expired before delivery.
    counter messages_expired_total,
    /// Messages sent to a temporary queue that no longer exists.
    counter messages_dropped_total,
    /// Messages dropped for slow topic subscribers whose backlog overflowed
    /// (destinations.subscriber-pending-limit).
    counter messages_discarded_total,
    /// Idle destinations removed (destinations.gc-inactive-ms).
    counter destinations_reclaimed_total,
    /// Messages that could not be moved to their dead-letter queue and
    /// stayed where they were.
    counter dead_letter_failures_total,
    /// Connections closed because a subscriber stayed too slow
    /// (destinations.slow-subscriber-abort-ms).
    counter slow_subscribers_disconnected_total,
    /// Persistent SENDs recognised as repeats of a stored message by their
    /// duplicate-detection id: confirmed, not enqueued again.
    counter duplicates_total,
    /// Scheduled messages waiting for a firing (`AMQ_SCHEDULED_*`).
    gauge scheduled_messages,
    /// Firings of scheduled messages: messages the scheduler sent on.
    counter scheduled_deliveries_total,
}

impl Metrics {
    /// Adds one to a counter.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Subtracts one from a gauge.
    pub fn dec(gauge: &AtomicU64) {
        gauge.fetch_sub(1, Ordering::Relaxed);
    }

    /// The gauge of open connections of `protocol`.
    fn open_of(&self, protocol: Protocol) -> &AtomicU64 {
        match protocol {
            Protocol::Stomp => &self.stomp_connections,
            Protocol::OpenWire => &self.openwire_connections,
        }
    }

    /// A client connection was accepted.
    pub fn opened(&self, protocol: Protocol) {
        Metrics::inc(&self.connections_accepted_total);
        Metrics::inc(&self.connections);
        Metrics::inc(self.open_of(protocol));
    }

    /// A client connection ended.
    pub fn closed(&self, protocol: Protocol) {
        Metrics::dec(&self.connections);
        Metrics::dec(self.open_of(protocol));
    }
}

/// The wire protocol of a client connection, for `halyard_connections`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// STOMP over TCP, TLS or WebSocket.
    Stomp,
    /// ActiveMQ's OpenWire.
    OpenWire,
}

/// Bucket bounds (seconds) for latencies the broker adds: a receipt, a
/// store sync. From half a millisecond (a sync on a fast SSD) to ten
/// seconds (a stalled disk or database).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Bucket bounds (seconds) for a takeover: lock to serving, which replays
/// the store: milliseconds for a small store (Halyard's usual case), up to
/// minutes for a deep one.
pub const TAKEOVER_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// Bucket bounds for counts: group-commit batch sizes (powers of two up to
/// the writer's largest group).
pub const COUNT_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// Most buckets a [`Histogram`] has (besides `+Inf`).
const MAX_BUCKETS: usize = 16;

/// A histogram observed with atomics only: one add to a bucket, one to the
/// sum. The sum is kept in whole units of `unit` (nanoseconds for
/// durations, ones for counts) so that it can be an integer add; the count
/// is the buckets' total, read at scrape time (a scrape that races an
/// observation may see its bucket and not its sum: harmless for rates).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// What one unit of `sum` is worth, in the exported unit.
    unit: f64,
    /// Observations per bucket (not cumulative); the last is `+Inf`.
    counts: [AtomicU64; MAX_BUCKETS + 1],
    sum: AtomicU64,
}

impl Default for Histogram {
    /// A latency histogram in seconds ([`LATENCY_BUCKETS`]).
    fn default() -> Histogram {
        Histogram::seconds(LATENCY_BUCKETS)
    }
}

impl Histogram {
    /// A histogram of durations, exported in seconds.
    pub fn seconds(bounds: &'static [f64]) -> Histogram {
        Histogram::new(bounds, 1e-9)
    }

    /// A histogram of counts.
    pub fn counts(bounds: &'static [f64]) -> Histogram {
        Histogram::new(bounds, 1.0)
    }

    fn new(bounds: &'static [f64], unit: f64) -> Histogram {
        assert!(bounds.len() <= MAX_BUCKETS, "too many buckets");
        Histogram {
            bounds,
            unit,
            counts: Default::default(),
            sum: AtomicU64::new(0),
        }
    }

    /// Records a duration (for histograms made by [`Histogram::seconds`]).
    pub fn observe_duration(&self, d: Duration) {
        self.observe_units(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Records a count (for histograms made by [`Histogram::counts`]).
    pub fn observe(&self, n: u64) {
        self.observe_units(n);
    }

    fn observe_units(&self, units: u64) {
        let value = units as f64 * self.unit;
        let i = self
            .bounds
            .iter()
            .position(|b| value <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(units, Ordering::Relaxed);
    }

    /// `(sum, count, buckets)` as the encoder wants them: bucket counts
    /// not cumulative, the last one `+Inf`.
    fn read(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let buckets: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(&self.counts)
            .map(|(b, c)| (b, c.load(Ordering::Relaxed)))
            .collect();
        let count = buckets.iter().map(|(_, c)| c).sum();
        let sum = self.sum.load(Ordering::Relaxed) as f64 * self.unit;
        (sum, count, buckets)
    }
}

/// One scrape: the families `/metrics` shows, read from wherever their
/// values live, then written at once by [`Exposition::text`].
///
/// Names are given without the `halyard_` prefix and, for counters, with
/// the `_total` suffix the series carries (so the name in the code is the
/// one users grep for).
#[derive(Debug, Default)]
pub struct Exposition {
    families: Vec<Family>,
}

#[derive(Debug)]
struct Family {
    name: &'static str,
    /// Exported without the `halyard_` prefix (the standard `process_*`
    /// series, which dashboards expect under their usual names).
    bare: bool,
    help: &'static str,
    kind: MetricType,
    samples: Vec<Sample>,
}

#[derive(Debug)]
struct Sample {
    /// `(label name, value)`, for families of labelled series.
    label: Option<(&'static str, String)>,
    value: Value,
}

#[derive(Debug, Clone)]
enum Value {
    Int(u64),
    Float(f64),
    Histogram {
        sum: f64,
        count: u64,
        buckets: Vec<(f64, u64)>,
    },
}

impl Exposition {
    /// The `Content-Type` of [`Exposition::text`].
    pub const CONTENT_TYPE: &'static str =
        prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

    /// A counter: only ever goes up (until the broker restarts). Its name
    /// ends in `_total`, as Prometheus names counters.
    pub fn counter(&mut self, name: &'static str, help: &'static str, value: u64) {
        debug_assert!(
            name.ends_with("_total"),
            "counter {name} must end in _total"
        );
        self.one(name, help, MetricType::Counter, Value::Int(value));
    }

    /// A gauge: a value now, which may go up or down.
    pub fn gauge(&mut self, name: &'static str, help: &'static str, value: u64) {
        self.one(name, help, MetricType::Gauge, Value::Int(value));
    }

    /// A gauge with a fractional value (durations in seconds, Prometheus'
    /// base unit).
    pub fn gauge_f64(&mut self, name: &'static str, help: &'static str, value: f64) {
        self.one(name, help, MetricType::Gauge, Value::Float(value));
    }

    /// A family of gauges told apart by one label (`role="master"`,
    /// `destination="/queue/a"`); label values are escaped as needed. A
    /// family without series still shows its help and type.
    pub fn labelled_gauges(
        &mut self,
        name: &'static str,
        help: &'static str,
        label: &'static str,
        values: impl IntoIterator<Item = (String, u64)>,
    ) {
        let values = values.into_iter().map(|(v, n)| (v, Value::Int(n)));
        self.labelled(name, help, MetricType::Gauge, label, values);
    }

    /// A family of one label's series.
    fn labelled(
        &mut self,
        name: &'static str,
        help: &'static str,
        kind: MetricType,
        label: &'static str,
        values: impl Iterator<Item = (String, Value)>,
    ) {
        let samples = values
            .map(|(v, value)| Sample {
                label: Some((label, v)),
                value,
            })
            .collect();
        self.push(name, help, kind, samples);
    }

    /// [`Exposition::labelled_gauges`] with fractional values (seconds).
    pub fn labelled_gauges_f64(
        &mut self,
        name: &'static str,
        help: &'static str,
        label: &'static str,
        values: impl IntoIterator<Item = (String, f64)>,
    ) {
        let values = values.into_iter().map(|(v, n)| (v, Value::Float(n)));
        self.labelled(name, help, MetricType::Gauge, label, values);
    }

    /// A family of counters told apart by one label.
    pub fn labelled_counters(
        &mut self,
        name: &'static str,
        help: &'static str,
        label: &'static str,
        values: impl IntoIterator<Item = (String, u64)>,
    ) {
        debug_assert!(
            name.ends_with("_total"),
            "counter {name} must end in _total"
        );
        let values = values.into_iter().map(|(v, n)| (v, Value::Int(n)));
        self.labelled(name, help, MetricType::Counter, label, values);
    }

    /// A histogram's buckets, sum and count now.
    pub fn histogram(&mut self, name: &'static str, help: &'static str, h: &Histogram) {
        let (sum, count, buckets) = h.read();
        let value = Value::Histogram {
            sum,
            count,
            buckets,
        };
        self.one(name, help, MetricType::Histogram, value);
    }

    /// A gauge or counter under its standard name, without the `halyard_`
    /// prefix (`process_resident_memory_bytes`).
    pub fn bare(&mut self, name: &'static str, help: &'static str, counter: bool, value: f64) {
        let kind = if counter {
            MetricType::Counter
        } else {
            MetricType::Gauge
        };
        self.one(name, help, kind, Value::Float(value));
        if let Some(f) = self.families.last_mut() {
            f.bare = true;
        }
    }

    fn one(&mut self, name: &'static str, help: &'static str, kind: MetricType, value: Value) {
        let sample = Sample { label: None, value };
        self.push(name, help, kind, vec![sample]);
    }

    fn push(
        &mut self,
        name: &'static str,
        help: &'static str,
        kind: MetricType,
        samples: Vec<Sample>,
    ) {
        debug_assert!(
            self.families.iter().all(|f| f.name != name),
            "metric {name} added twice"
        );
        self.families.push(Family {
            name,
            bare: false,
            help,
            kind,
            samples,
        });
    }

    /// The Prometheus text (format 0.0.4) of everything added, every name
    /// prefixed `halyard_`.
    pub fn text(self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self));
        let mut out = String::new();
        // Writing into a String cannot fail, and every family is valid.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
        out
    }
}

/// Writes the families through prometheus-client's encoder, as constant
/// metrics: the values were read when the scrape was gathered.
impl Collector for Exposition {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for f in &self.families {
            // The encoder adds `_total` to counters itself.
            let base = match f.kind {
                MetricType::Counter => f.name.strip_suffix("_total").unwrap_or(f.name),
                _ => f.name,
            };
            let name = if f.bare {
                base.to_owned()
            } else {
                format!("{PREFIX}_{base}")
            };
            let mut family = encoder.encode_descriptor(&name, f.help, None, f.kind)?;
            for s in &f.samples {
                let labels: Vec<(&str, &str)> =
                    s.label.iter().map(|(k, v)| (*k, v.as_str())).collect();
                let series = family.encode_family(&labels)?;
                match (f.kind, &s.value) {
                    (
                        _,
                        Value::Histogram {
                            sum,
                            count,
                            buckets,
                        },
                    ) => {
                        let mut series = series;
                        series.encode_histogram::<NoLabels>(*sum, *count, buckets, None)?
                    }
                    (MetricType::Counter, Value::Int(v)) => ConstCounter::new(*v).encode(series)?,
                    (MetricType::Counter, Value::Float(v)) => {
                        ConstCounter::new(*v).encode(series)?
                    }
                    (_, Value::Int(v)) => ConstGauge::new(*v).encode(series)?,
                    (_, Value::Float(v)) => ConstGauge::new(*v).encode(series)?,
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_help_type_and_value() {
        let m = Metrics::default();
        m.opened(Protocol::Stomp);
        let mut out = Exposition::default();
        m.export(&mut out);
        let text = out.text();
        assert!(
            text.contains(
                "# TYPE halyard_connections_accepted_total counter\n\
                 halyard_connections_accepted_total 1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "# TYPE halyard_connections gauge\n\
                 halyard_connections{protocol=\"stomp\"} 1\n\
                 halyard_connections{protocol=\"openwire\"} 0\n"
            ),
            "{text}"
        );
        // Help that spans doc lines reads as one sentence.
        assert!(text.contains(
            "# HELP halyard_messages_discarded_total Messages dropped for slow topic subscribers whose backlog overflowed (destinations.subscriber-pending-limit).\n"
        ));
    }

    /// Every series has its HELP and TYPE, and every name keeps to
    /// Prometheus' conventions: snake case, counters ending in `_total`.
    #[test]
    fn every_series_is_described_and_conventionally_named() {
        let mut out = Exposition::default();
        Metrics::default().export(&mut out);
        let h = Histogram::seconds(TAKEOVER_BUCKETS);
        h.observe_duration(Duration::from_millis(250));
        out.histogram("takeover_seconds", "How long.", &h);
        out.labelled_gauges("role", "Role.", "role", [("master".to_owned(), 1)]);
        let text = out.text();
        let mut described = std::collections::HashMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap_or_default();
                described.insert(name.to_owned(), kind.to_owned());
                assert!(text.contains(&format!("# HELP {name} ")), "{name}: no HELP");
            } else if !line.starts_with('#') {
                let sample = line.split(['{', ' ']).next().unwrap_or_default();
                // A histogram's samples carry a suffix on its name.
                let name = ["_bucket", "_sum", "_count"]
                    .iter()
                    .filter_map(|s| sample.strip_suffix(s))
                    .find(|n| described.get(*n).is_some_and(|k| k == "histogram"))
                    .unwrap_or(sample);
                let kind = described
                    .get(name)
                    .unwrap_or_else(|| panic!("{name}: no TYPE"));
                assert!(name.starts_with("halyard_"), "{name}");
                assert!(
                    name.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                    "{name}"
                );
                assert_eq!(
                    kind == "counter",
                    name.ends_with("_total"),
                    "{name} is a {kind}"
                );
            }
        }
        assert!(
            text.contains("halyard_takeover_seconds_sum 0.25\n"),
            "{text}"
        );
        assert!(
            text.contains("halyard_takeover_seconds_bucket{le=\"0.25\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("halyard_takeover_seconds_bucket{le=\"0.1\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("halyard_takeover_seconds_bucket{le=\"+Inf\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("halyard_takeover_seconds_count 1\n"),
            "{text}"
        );
        assert!(text.contains("halyard_role{role=\"master\"} 1\n"), "{text}");
    }

    #[test]
    fn histograms_count_each_observation_in_its_bucket() {
        let h = Histogram::counts(COUNT_BUCKETS);
        for n in [1, 1, 3, 5000] {
            h.observe(n);
        }
        let (sum, count, buckets) = h.read();
        assert_eq!((sum, count), (5005.0, 4));
        assert_eq!(buckets[0], (1.0, 2));
        assert_eq!(buckets[2], (4.0, 1));
        assert_eq!(buckets.last(), Some(&(f64::INFINITY, 1)));
    }

    #[test]
    fn process_series_keep_their_standard_names() {
        let mut out = Exposition::default();
        out.bare("process_cpu_seconds_total", "CPU.", true, 1.5);
        out.bare("process_open_fds", "Fds.", false, 7.0);
        let text = out.text();
        assert!(
            text.contains("# TYPE process_cpu_seconds_total counter\n"),
            "{text}"
        );
        assert!(text.contains("process_cpu_seconds_total 1.5\n"), "{text}");
        assert!(text.contains("process_open_fds 7.0\n"), "{text}");
    }

    #[test]
    fn label_values_are_escaped() {
        let mut out = Exposition::default();
        out.labelled_gauges(
            "destination_ready",
            "Ready.",
            "destination",
            [("/queue/a\"b\\c".to_owned(), 3)],
        );
        let text = out.text();
        assert!(
            text.contains(r#"halyard_destination_ready{destination="/queue/a\"b\\c"} 3"#),
            "{text}"
        );
    }
}
