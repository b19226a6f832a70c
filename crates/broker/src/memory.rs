//! The broker-wide memory budget for messages (`limits.memory-bytes`).
//!
//! Every [`Message`](crate::model::Message) carries a [`Charge`] for its
//! weight from the moment it is made (a SEND read, a body loaded back from
//! the store, a dead letter; a durable subscriber's copy shares the
//! original's, as it shares its body) until the last reference to it is
//! dropped, wherever it is held: queued in a destination, in flight to a
//! consumer, in an open transaction, in a connection's receipt pipeline, on
//! its way to the store. So the budget counts what the broker holds, not
//! what some part of it believes it holds, and nothing needs to remember to
//! give memory back.
//!
//! What happens at the limit is decided elsewhere: producers whose
//! messages would have to stay in memory wait (producer flow control, in
//! the connection's pipeline), stored messages keep only an index entry in
//! memory, and deep queues read bodies back only while there is room.
//!
//! This module sits at the bottom of the crate, below [`crate::model`]: it
//! counts bytes and needs nothing from the messages it is charged for, so
//! the model can hold a [`Charge`] without depending on anything above it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::sync::Notify;

/// Bytes of messages held, against a limit.
#[derive(Debug)]
pub struct MemoryBudget {
    used: AtomicU64,
    limit: u64,
    /// Woken when usage drops below the limit.
    freed: Notify,
    /// Producers waiting for memory now (a gauge).
    pub(crate) waiting: AtomicU64,
    /// Producers that gave up waiting (`limits.flow-control-timeout-ms`).
    pub(crate) timeouts: AtomicU64,
    /// Times freed heap was given back to the OS (`crate::trim`).
    pub(crate) trims: AtomicU64,
}

impl MemoryBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: u64) -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget {
            used: AtomicU64::new(0),
            limit,
            freed: Notify::new(),
            waiting: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            trims: AtomicU64::new(0),
        })
    }

    /// Charges `bytes` to this budget until the charge is dropped.
    pub fn charge(self: &Arc<Self>, bytes: usize) -> Charge {
        let bytes = bytes as u64;
        self.used.fetch_add(bytes, Ordering::Relaxed);
        Charge {
            budget: Some(self.clone()),
            bytes,
            shared: OnceLock::new(),
        }
    }

    /// Bytes held now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// The limit.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Whether the limit is reached: messages that must stay in memory
    /// wait.
    pub fn over(&self) -> bool {
        self.used() >= self.limit
    }

    /// Whether `bytes` more would still be under the limit.
    pub fn has_room(&self, bytes: u64) -> bool {
        self.used().saturating_add(bytes) < self.limit
    }

    /// Waits until usage is below the limit.
    pub async fn below_limit(&self) {
        self.room_beside(0).await;
    }

    /// Waits until what is held besides `own` bytes (the waiter's own
    /// message, charged already) is below the limit: a message never waits
    /// for room only its own departure could make (one larger than the
    /// whole budget goes through alone).
    pub async fn room_beside(&self, own: u64) {
        loop {
            // Registered before the check, so a release in between is not
            // missed.
            let freed = self.freed.notified();
            if self.used().saturating_sub(own) < self.limit {
                return;
            }
            freed.await;
        }
    }

    fn release(&self, bytes: u64) {
        let before = self.used.fetch_sub(bytes, Ordering::Relaxed);
        // Every release while over the limit: a waiter's threshold is the
        // limit plus its own message.
        if before >= self.limit {
            self.freed.notify_waiters();
        }
    }
}

/// A message's share of the [`MemoryBudget`], given back when dropped.
///
/// Cloning shares the charge: a cloned message (a durable subscriber's
/// copy of a topic's message) shares its body (`Bytes`) and properties
/// with the original, so however many copies there are, the bytes are
/// held, and counted, once, until the last copy is dropped. The first
/// clone moves the charge into a shared part (an allocation only then), so
/// a message that is never cloned costs none.
#[derive(Debug, Default)]
pub struct Charge {
    budget: Option<Arc<MemoryBudget>>,
    bytes: u64,
    /// Set by the first clone: the copies' common charge, given back when
    /// the last of them is dropped (this one then gives nothing back
    /// itself).
    shared: OnceLock<Arc<Shared>>,
}

/// A charge that copies hold together.
#[derive(Debug)]
struct Shared {
    budget: Arc<MemoryBudget>,
    bytes: u64,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.budget.release(self.bytes);
    }
}

impl Charge {
    /// A charge against nothing (tests, messages outside a broker).
    pub fn none() -> Charge {
        Charge::default()
    }
}

impl Clone for Charge {
    fn clone(&self) -> Charge {
        let Some(budget) = &self.budget else {
            return Charge::none();
        };
        let shared = self.shared.get_or_init(|| {
            Arc::new(Shared {
                budget: budget.clone(),
                bytes: self.bytes,
            })
        });
        Charge {
            budget: Some(budget.clone()),
            bytes: self.bytes,
            shared: OnceLock::from(shared.clone()),
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        if let Some(b) = &self.budget
            && self.shared.get().is_none()
        {
            b.release(self.bytes);
        }
    }
}

/// Charges never make two messages different.
impl PartialEq for Charge {
    fn eq(&self, _: &Charge) -> bool {
        true
    }
}

impl Eq for Charge {}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn charges_come_back_when_dropped_and_wake_waiters() {
        let b = MemoryBudget::new(100);
        let one = b.charge(60);
        let two = b.charge(60);
        assert_eq!(b.used(), 120);
        assert!(b.over());
        let waiter = {
            let b = b.clone();
            tokio::spawn(async move { b.below_limit().await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(one);
        waiter.await.unwrap();
        assert!(!b.over() && b.has_room(39) && !b.has_room(40));
        drop(two);
        assert_eq!(b.used(), 0);
        // A charge larger than the whole budget does not wait for itself,
        // only for the others.
        let own = b.charge(150);
        b.room_beside(150).await;
        let other = b.charge(10);
        let waiter = {
            let b = b.clone();
            tokio::spawn(async move { b.room_beside(150).await })
        };
        let another = b.charge(95);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(another);
        waiter.await.unwrap();
        drop((own, other));
        let free = Charge::none();
        assert_eq!(free.clone(), Charge::none());
    }

    #[test]
    fn copies_share_their_charge_until_the_last_is_dropped() {
        let b = MemoryBudget::new(1000);
        let original = b.charge(100);
        let copy = original.clone();
        let copy_of_copy = copy.clone();
        assert_eq!(b.used(), 100, "a copy shares the original's bytes");
        drop(original);
        assert_eq!(b.used(), 100, "the copies still hold them");
        drop(copy_of_copy);
        assert_eq!(b.used(), 100);
        drop(copy);
        assert_eq!(b.used(), 0);
        // Clones of a charge cloned before share the same charge.
        let first = b.charge(7);
        let a = first.clone();
        let c = first.clone();
        drop(first);
        drop(a);
        assert_eq!(b.used(), 7);
        drop(c);
        assert_eq!(b.used(), 0);
    }
}
