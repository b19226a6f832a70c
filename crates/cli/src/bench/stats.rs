//! Latency histograms and the figures reported for them.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies in microseconds, up to a minute, 3 significant digits.
pub(super) struct Latency(Histogram<u64>);

impl Latency {
    pub(super) fn new() -> Latency {
        // Bounds are constants, so construction cannot fail.
        Latency(
            Histogram::new_with_bounds(1, 60_000_000, 3).unwrap_or_else(|_| {
                Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant digits is valid"))
            }),
        )
    }

    pub(super) fn record(&mut self, micros: u64) {
        self.0.saturating_record(micros.max(1));
    }

    pub(super) fn merge(&mut self, other: &Latency) {
        // Same bounds on both sides; a failure would only drop figures.
        let _ = self.0.add(&other.0);
    }

    pub(super) fn summary(&self) -> Option<Percentiles> {
        if self.0.is_empty() {
            return None;
        }
        let h = &self.0;
        Some(Percentiles {
            count: h.len(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean().round() as u64,
        })
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub(super) struct Percentiles {
    pub(super) count: u64,
    pub(super) p50: u64,
    pub(super) p90: u64,
    pub(super) p99: u64,
    pub(super) p999: u64,
    pub(super) max: u64,
    pub(super) mean: u64,
}

impl std::fmt::Display for Percentiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (n={})",
            us(self.p50),
            us(self.p90),
            us(self.p99),
            us(self.p999),
            us(self.max),
            self.count
        )
    }
}

/// A duration in microseconds, shown in a readable unit.
fn us(v: u64) -> String {
    match v {
        0..1_000 => format!("{v}µs"),
        1_000..1_000_000 => format!("{:.2}ms", v as f64 / 1e3),
        _ => format!("{:.2}s", v as f64 / 1e6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut l = Latency::new();
        for v in 1..=1000 {
            l.record(v);
        }
        let s = l.summary().unwrap();
        assert_eq!(s.count, 1000);
        assert!((495..=505).contains(&s.p50), "{s:?}");
        assert!((985..=995).contains(&s.p99), "{s:?}");
        assert_eq!(s.max, 1000);
        let mut other = Latency::new();
        other.record(5_000_000);
        l.merge(&other);
        assert!(l.summary().unwrap().max >= 4_990_000);
        assert!(Latency::new().summary().is_none());
        assert_eq!(us(1_500), "1.50ms");
    }
}
