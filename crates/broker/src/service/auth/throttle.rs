//! Slows down addresses that fail to log in: each failure doubles the wait
//! before that address's next attempt is even looked at (from
//! `security.login-delay-ms` up to `login-delay-max-ms`), and attempts made
//! in parallel queue behind each other instead of sharing one wait. A
//! success forgets the address. The table is bounded: when full, the
//! address whose penalty ends first is forgotten.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::core::lock;

/// Addresses remembered at most.
const MAX_ADDRESSES: usize = 4096;

struct Penalty {
    /// Failures in a row.
    failures: u32,
    /// When the next attempt from this address may be checked.
    next: Instant,
}

pub(crate) struct Throttle {
    base: Duration,
    max: Duration,
    table: Mutex<HashMap<IpAddr, Penalty>>,
}

impl Throttle {
    pub(crate) fn new(base: Duration, max: Duration) -> Throttle {
        Throttle {
            base,
            max,
            table: Mutex::new(HashMap::new()),
        }
    }

    /// When an attempt from `ip` may be checked: now for an address in good
    /// standing; otherwise its turn, which the attempt takes (the next one
    /// waits a further penalty behind it).
    pub(crate) fn turn(&self, ip: IpAddr) -> Instant {
        let now = Instant::now();
        let mut table = lock(&self.table);
        match table.get_mut(&ip) {
            None => now,
            Some(p) => {
                let at = p.next.max(now);
                p.next = at + self.delay(p.failures);
                at
            }
        }
    }

    /// An attempt from `ip` failed.
    pub(crate) fn failed(&self, ip: IpAddr) {
        let now = Instant::now();
        let mut table = lock(&self.table);
        if !table.contains_key(&ip) && table.len() >= MAX_ADDRESSES {
            let first = table.iter().min_by_key(|(_, p)| p.next).map(|(ip, _)| *ip);
            if let Some(first) = first {
                table.remove(&first);
            }
        }
        let p = table.entry(ip).or_insert(Penalty {
            failures: 0,
            next: now,
        });
        p.failures = p.failures.saturating_add(1);
        p.next = p.next.max(now + self.delay(p.failures));
    }

    /// An attempt from `ip` succeeded.
    pub(crate) fn succeeded(&self, ip: IpAddr) {
        lock(&self.table).remove(&ip);
    }

    fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(30);
        self.base.saturating_mul(1 << doublings).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn failures_double_the_wait_and_a_success_clears_it() {
        let t = Throttle::new(Duration::from_millis(100), Duration::from_millis(1000));
        let ip: IpAddr = [10, 0, 0, 1].into();
        let other: IpAddr = [10, 0, 0, 2].into();
        let start = Instant::now();
        assert_eq!(t.turn(ip), start);
        t.failed(ip);
        assert_eq!(t.turn(ip), start + Duration::from_millis(100));
        // A parallel attempt queues behind the first.
        assert!(t.turn(ip) >= start + Duration::from_millis(200));
        for _ in 0..10 {
            t.failed(ip);
        }
        let wait = t.turn(ip) - Instant::now();
        assert!(
            wait <= Duration::from_millis(1000) + Duration::from_millis(300),
            "{wait:?}"
        );
        assert_eq!(
            t.turn(other),
            Instant::now(),
            "other addresses are not slowed"
        );
        t.succeeded(ip);
        assert_eq!(t.turn(ip), Instant::now());
    }

    #[test]
    fn the_table_is_bounded() {
        let t = Throttle::new(Duration::from_millis(1), Duration::from_millis(2));
        for i in 0..(MAX_ADDRESSES as u32 + 100) {
            t.failed(IpAddr::from(i.to_be_bytes()));
        }
        assert_eq!(lock(&t.table).len(), MAX_ADDRESSES);
    }
}
