//! The broker core's shared context: configuration, the store, metrics, the
//! memory budget and the registry of destination actors.
//!
//! Every destination actor and the broker service hold an
//! `Arc<BrokerCore>`. Mutable state here is either atomic or behind a short,
//! synchronous lock that is never held across an `.await`; everything else
//! is owned by actors.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Control, DestHandle, DestinationStats, Gone, PublishError};
use crate::config::BrokerConfig;
use crate::memory::MemoryBudget;
use crate::metrics::Metrics;
use crate::model::{Destination, DestinationKind, Message};
use crate::resources::Resources;
use crate::store::Store;

/// What the core of one broker shares between its tasks.
pub(crate) struct BrokerCore {
    pub(crate) config: BrokerConfig,
    /// Connection caps and the memory budget worked out at start.
    pub(crate) resources: Resources,
    pub(crate) store: Store,
    pub(crate) metrics: Metrics,
    /// Prefix of message ids made by this boot of the broker.
    pub(crate) id_prefix: Arc<str>,
    /// Cancelled when the broker stops: destination actors end.
    pub(crate) stop: CancellationToken,
    /// Every message the broker holds is charged to this
    /// (`limits.memory-bytes`).
    pub(crate) memory: Arc<MemoryBudget>,
    /// Background work that must finish before the store closes (deleting
    /// a temporary queue, dead-lettering, a connection's pipeline):
    /// shutdown waits for it.
    pub(crate) tasks: TaskTracker,
    /// One per client connection (`limits.max-connections`), shared by
    /// every listener.
    pub(crate) connection_permits: Arc<tokio::sync::Semaphore>,
    seq: AtomicU64,
    next_consumer: AtomicU64,
    next_destination: AtomicU64,
    destinations: Mutex<HashMap<Destination, DestHandle>>,
}

/// The broker will not create more destinations.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot create {0}: the broker already has limits.max-destinations ({1}) destinations")]
pub(crate) struct TooManyDestinations(String, usize);

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The protected maps stay consistent even if a holder panicked: every
    // critical section is a single insert, remove or lookup.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl BrokerCore {
    /// A core whose sequence numbers continue after `max_seq` (the highest
    /// one recovery found).
    pub(crate) fn new(
        config: BrokerConfig,
        resources: Resources,
        store: Store,
        id_prefix: Arc<str>,
        max_seq: u64,
    ) -> BrokerCore {
        BrokerCore {
            memory: MemoryBudget::new(resources.memory_bytes),
            connection_permits: Arc::new(tokio::sync::Semaphore::new(resources.max_connections)),
            config,
            resources,
            store,
            metrics: Metrics::default(),
            id_prefix,
            stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
            seq: AtomicU64::new(max_seq),
            next_consumer: AtomicU64::new(0),
            next_destination: AtomicU64::new(0),
            destinations: Mutex::new(HashMap::new()),
        }
    }

    /// The next broker-wide sequence number.
    pub(crate) fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub(crate) fn next_consumer(&self) -> super::ConsumerId {
        super::ConsumerId(self.next_consumer.fetch_add(1, Ordering::Relaxed) + 1)
    }

    /// The id of a new destination actor.
    pub(crate) fn next_destination_id(&self) -> u64 {
        self.next_destination.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Removes a destination from the registry if the entry is still the
    /// actor `id` and `idle` (evaluated under the registry's lock, so
    /// nobody can look the destination up meanwhile) says it may go.
    pub(crate) fn reclaim(&self, dest: &Destination, id: u64, idle: impl FnOnce() -> bool) -> bool {
        let mut map = lock(&self.destinations);
        match map.get(dest) {
            Some(h) if h.id() == id && idle() => {
                map.remove(dest);
                Metrics::inc(&self.metrics.destinations_reclaimed_total);
                true
            }
            _ => false,
        }
    }

    /// Whether the registry is nine tenths full: idle destinations then go
    /// at once.
    pub(crate) fn destinations_crowded(&self) -> bool {
        let max = self.config.limits.max_destinations;
        lock(&self.destinations).len() >= max - max / 10
    }

    /// How many destinations exist.
    pub(crate) fn destination_count(&self) -> usize {
        lock(&self.destinations).len()
    }

    /// The destination, created on first use.
    pub(crate) fn destination(
        self: &Arc<Self>,
        dest: &Destination,
    ) -> Result<DestHandle, TooManyDestinations> {
        let mut map = lock(&self.destinations);
        if let Some(h) = map.get(dest) {
            return Ok(h.clone());
        }
        let max = self.config.limits.max_destinations;
        if map.len() >= max {
            return Err(TooManyDestinations(dest.to_string(), max));
        }
        let handle = match dest.kind() {
            DestinationKind::Topic => super::spawn_topic(self.clone(), dest.clone()),
            DestinationKind::Queue | DestinationKind::TempQueue => {
                super::spawn_queue(self.clone(), dest.clone())
            }
        };
        map.insert(dest.clone(), handle.clone());
        Ok(handle)
    }

    /// Publishes to `handle`'s destination; if it was reclaimed meanwhile
    /// (idle destinations go), to the one made anew. Temporary queues are
    /// not made anew: a message to one that is gone is `Gone`.
    pub(crate) async fn publish(
        self: &Arc<Self>,
        handle: &DestHandle,
        message: Arc<Message>,
        confirm: bool,
    ) -> Result<(), PublishError> {
        let mut h = handle.clone();
        let mut attempts = 0;
        loop {
            match h.publish(message.clone(), confirm).await {
                Err(PublishError::Gone(gone))
                    if h.destination().kind() != DestinationKind::TempQueue && attempts < 3 =>
                {
                    attempts += 1;
                    h = self
                        .destination(h.destination())
                        .map_err(|_| PublishError::Gone(gone))?;
                }
                other => return other,
            }
        }
    }

    /// Sends `c` to `handle`'s destination, or to the one made anew if it
    /// was reclaimed meanwhile; returns the handle that took it.
    pub(crate) async fn control(
        self: &Arc<Self>,
        handle: &DestHandle,
        c: Control,
    ) -> Result<DestHandle, Gone> {
        let mut h = handle.clone();
        let mut c = c;
        for _ in 0..3 {
            match h.control_or_back(c).await {
                Ok(()) => return Ok(h),
                Err(back) => c = back,
            }
            if h.destination().kind() == DestinationKind::TempQueue {
                break;
            }
            h = match self.destination(h.destination()) {
                Ok(h) => h,
                Err(_) => break,
            };
        }
        Err(Gone(h.destination().to_string()))
    }

    /// The destination if it exists.
    pub(crate) fn existing_destination(&self, dest: &Destination) -> Option<DestHandle> {
        lock(&self.destinations).get(dest).cloned()
    }

    /// Deletes a temporary queue and the messages in it.
    pub(crate) fn delete_destination(&self, dest: &Destination) {
        if let Some(h) = lock(&self.destinations).remove(dest)
            && !h.try_control(Control::Delete)
        {
            self.tasks.spawn(async move {
                let _ = h.control(Control::Delete).await;
            });
        }
    }

    pub(crate) fn destination_handles(&self) -> Vec<DestHandle> {
        lock(&self.destinations).values().cloned().collect()
    }

    /// Statistics of every destination, sorted by name. Destinations that
    /// do not answer within a second are left out.
    pub(crate) async fn destination_stats(&self) -> Vec<DestinationStats> {
        let mut out = Vec::new();
        for h in self.destination_handles() {
            let (reply, rx) = tokio::sync::oneshot::channel();
            if h.control(Control::Stats { reply }).await.is_err() {
                continue;
            }
            if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(1), rx).await {
                out.push(s);
            }
        }
        out.sort_by(|a, b| a.destination.cmp(&b.destination));
        out
    }
}
