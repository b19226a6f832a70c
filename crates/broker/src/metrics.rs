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

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// The prefix of every series name.
const PREFIX: &str = "halyard";

macro_rules! metrics {
    ($( $(#[doc = $doc:literal])* $kind:ident $name:ident ),* $(,)?) => {
        /// Counters and gauges a user would graph.
        #[derive(Debug, Default)]
        pub struct Metrics {
            $( $(#[doc = $doc])* pub $name: AtomicU64, )*
        }

        impl Metrics {
            /// Adds every metric, with its doc comment as its help, to a
            /// scrape.
            pub fn export(&self, out: &mut Exposition) {
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
    /// Client connections open now.
    gauge connections,
    /// Client connections accepted since start.
    counter connections_total,
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

#[derive(Debug, Clone, Copy)]
enum Value {
    Int(u64),
    Float(f64),
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
        let samples = values
            .into_iter()
            .map(|(v, n)| Sample {
                label: Some((label, v)),
                value: Value::Int(n),
            })
            .collect();
        self.push(name, help, MetricType::Gauge, samples);
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
            help,
            kind,
            samples,
        });
    }

    /// The Prometheus text (format 0.0.4) of everything added, every name
    /// prefixed `halyard_`.
    pub fn text(self) -> String {
        let mut registry = Registry::with_prefix(PREFIX);
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
            let name = match f.kind {
                MetricType::Counter => f.name.strip_suffix("_total").unwrap_or(f.name),
                _ => f.name,
            };
            let mut family = encoder.encode_descriptor(name, f.help, None, f.kind)?;
            for s in &f.samples {
                let labels: Vec<(&str, &str)> =
                    s.label.iter().map(|(k, v)| (*k, v.as_str())).collect();
                let series = family.encode_family(&labels)?;
                match (f.kind, s.value) {
                    (MetricType::Counter, Value::Int(v)) => ConstCounter::new(v).encode(series)?,
                    (MetricType::Counter, Value::Float(v)) => {
                        ConstCounter::new(v).encode(series)?
                    }
                    (_, Value::Int(v)) => ConstGauge::new(v).encode(series)?,
                    (_, Value::Float(v)) => ConstGauge::new(v).encode(series)?,
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
        Metrics::inc(&m.connections_total);
        Metrics::inc(&m.connections);
        let mut out = Exposition::default();
        m.export(&mut out);
        let text = out.text();
        assert!(
            text.contains(
                "# HELP halyard_connections_total Client connections accepted since start.\n\
                 # TYPE halyard_connections_total counter\n\
                 halyard_connections_total 1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "# HELP halyard_connections Client connections open now.\n\
                 # TYPE halyard_connections gauge\n\
                 halyard_connections 1\n"
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
        out.gauge_f64("takeover_seconds", "How long.", 0.25);
        out.labelled_gauges("role", "Role.", "role", [("master".to_owned(), 1)]);
        let text = out.text();
        let mut described = std::collections::HashMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap_or_default();
                described.insert(name.to_owned(), kind.to_owned());
                assert!(text.contains(&format!("# HELP {name} ")), "{name}: no HELP");
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap_or_default();
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
        assert!(text.contains("halyard_takeover_seconds 0.25\n"), "{text}");
        assert!(text.contains("halyard_role{role=\"master\"} 1\n"), "{text}");
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
