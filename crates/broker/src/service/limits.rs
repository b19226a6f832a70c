//! Limits on what one principal or one address may hold: connections per
//! user and per IP address (counted here, each held by an RAII [`Slot`]
//! that gives it back when the connection ends, however it ends), and a
//! connection's send rate ([`SendRate`], a token bucket).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::core::lock;

/// How many connections each key (a user, an address) holds. A plain
/// map behind a lock held only to add or subtract one: there is nothing
/// to await, and an entry exists only while its count is above zero, so
/// the map is as large as the number of connected users or addresses.
pub(crate) struct Counts<K> {
    held: Mutex<HashMap<K, usize>>,
}

impl<K> Default for Counts<K> {
    fn default() -> Self {
        Counts {
            held: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash + Clone> Counts<K> {
    /// Takes one of `key`'s `limit` slots (0: no limit, and nothing is
    /// counted), or `None` if it holds them all.
    pub(crate) fn take(self: &Arc<Self>, key: K, limit: usize) -> Option<Slot<K>> {
        if limit == 0 {
            return Some(Slot {
                counts: self.clone(),
                key: None,
            });
        }
        let mut held = lock(&self.held);
        let n = held.entry(key.clone()).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(Slot {
            counts: self.clone(),
            key: Some(key),
        })
    }

    /// How many slots `key` holds now.
    #[cfg(test)]
    pub(crate) fn held(&self, key: &K) -> usize {
        lock(&self.held).get(key).copied().unwrap_or(0)
    }
}

/// One connection's slot: given back when dropped.
pub(crate) struct Slot<K: Eq + Hash> {
    counts: Arc<Counts<K>>,
    key: Option<K>,
}

impl<K: Eq + Hash> Drop for Slot<K> {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else { return };
        let mut held = lock(&self.counts.held);
        if let Some(n) = held.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                held.remove(&key);
            }
        }
    }
}

/// A connection's send rate limit (`limits.max-send-rate-per-connection`):
/// a token bucket of one second's worth of messages, refilled at the rate.
/// A SEND beyond it waits for its token instead of being refused, so a
/// fast producer is slowed to the rate (its connection is not read
/// meanwhile, which is TCP backpressure) and loses nothing.
pub(crate) struct SendRate {
    per_second: f64,
    /// Tokens now (negative: owed by SENDs already let through to wait).
    tokens: f64,
    at: Instant,
}

impl SendRate {
    /// A full bucket for `per_second` messages a second (more than 0).
    pub(crate) fn new(per_second: u32) -> SendRate {
        let per_second = f64::from(per_second.max(1));
        SendRate {
            per_second,
            tokens: per_second,
            at: Instant::now(),
        }
    }

    /// Takes a token for one message: how long the message must wait
    /// for it (zero while the bucket has some).
    pub(crate) fn take(&mut self) -> Duration {
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.per_second) - 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.per_second)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_limited_per_key_and_given_back_on_drop() {
        let counts = Arc::new(Counts::<String>::default());
        let a1 = counts.take("a".into(), 2).expect("first");
        let _a2 = counts.take("a".into(), 2).expect("second");
        assert!(counts.take("a".into(), 2).is_none(), "third is over");
        let _b = counts.take("b".into(), 2).expect("other keys are apart");
        drop(a1);
        assert_eq!(counts.held(&"a".to_owned()), 1);
        assert!(counts.take("a".into(), 2).is_some());
        let _c = counts.take("c".into(), 0).expect("0 is no limit");
        assert_eq!(counts.held(&"c".to_owned()), 0, "and counts nothing");
    }

    #[tokio::test(start_paused = true)]
    async fn the_send_rate_lets_a_burst_pass_then_spaces_messages() {
        let mut rate = SendRate::new(10);
        for _ in 0..10 {
            assert_eq!(rate.take(), Duration::ZERO);
        }
        let wait = rate.take();
        assert!(
            wait > Duration::from_millis(90) && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(rate.take(), Duration::ZERO, "refilled");
    }
}
