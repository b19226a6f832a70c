//! Broker-wide counters. Plain atomics: they are written from many tasks
//! and read only by the admin endpoints, so no ordering beyond `Relaxed` is
//! needed.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! metrics {
    ($( $(#[doc = $doc:literal])* $kind:ident $name:ident ),* $(,)?) => {
        /// Counters and gauges a user would graph.
        #[derive(Debug, Default)]
        pub struct Metrics {
            $( $(#[doc = $doc])* pub $name: AtomicU64, )*
        }

        impl Metrics {
            /// `(name, kind, help, value)` for every metric.
            pub fn snapshot(&self) -> Vec<(&'static str, &'static str, &'static str, u64)> {
                vec![$(
                    (stringify!($name), stringify!($kind), concat!($($doc),*).trim_ascii(), self.$name.load(Ordering::Relaxed)),
                )*]
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

    /// The Prometheus text exposition of every metric, prefixed `halyard_`.
    pub fn prometheus(&self) -> String {
        let mut out = String::new();
        for (name, kind, help, value) in self.snapshot() {
            let _ = writeln!(out, "# HELP halyard_{name} {help}");
            let _ = writeln!(out, "# TYPE halyard_{name} {kind}");
            let _ = writeln!(out, "halyard_{name} {value}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_help_type_and_value() {
        let m = Metrics::default();
        Metrics::inc(&m.connections_total);
        let text = m.prometheus();
        assert!(
            text.contains(
                "# HELP halyard_connections_total Client connections accepted since start."
            )
        );
        assert!(text.contains("# TYPE halyard_connections gauge"));
        assert!(text.contains("halyard_connections_total 1\n"));
    }
}
