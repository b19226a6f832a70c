//! The broker core's shared context: configuration, the store, metrics, the
//! memory budget and the registry of destination actors.
//!
//! Every destination actor and the broker service hold an
//! `Arc<BrokerCore>`. Mutable state here is either atomic or behind a short,
//! synchronous lock that is never held across an `.await`; everything else
//! is owned by actors.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::registrations::Registrations;
use super::virtual_topic::VirtualTopics;
use super::{ConsumerReg, Control, DestHandle, DestinationStats, Gone, PublishError};
use crate::config::BrokerConfig;
use crate::memory::MemoryBudget;
use crate::metrics::Metrics;
use crate::model::{Destination, DestinationKind, Message, NamePattern};
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
    destinations: Mutex<Registry>,
    /// How many topics are named by wildcards (so publishing to a topic
    /// looks for them only when there are some).
    pattern_topics: AtomicUsize,
    /// How many virtual topics' consumer queues exist (likewise).
    virtual_queues: AtomicUsize,
    pub(crate) virtual_topics: VirtualTopics,
    /// The `[[policies]]` over the defaults: each destination's policy.
    pub(crate) policies: crate::config::Policies,
}

/// The destinations, and who must hear of new ones. One lock covers all of
/// it, so a destination made while a wildcard subscription comes or goes
/// is seen by exactly one of the two.
#[derive(Default)]
struct Registry {
    map: HashMap<Destination, DestHandle>,
    /// Topics named by a wildcard: a message published to any topic the
    /// pattern matches is published to them too, so their subscriptions,
    /// durable ones included, see every matching topic.
    pattern_topics: Vec<(NamePattern, DestHandle)>,
    /// Subscriptions to wildcards over queues: each is registered as a
    /// consumer at every matching queue, those made later included.
    wildcard_consumers: Vec<WildcardConsumer>,
    next_wildcard: u64,
    /// Virtual topics' consumer queues, by topic name.
    virtual_queues: HashMap<String, Vec<Destination>>,
    /// Consumer queues the store has been asked to remember.
    declared: std::collections::HashSet<Destination>,
}

/// A subscription to a wildcard over queues.
struct WildcardConsumer {
    id: u64,
    pattern: NamePattern,
    /// What each registration is made from (with an id of its own).
    template: ConsumerReg,
    registrations: Registrations,
}

impl Registry {
    fn remove(
        &mut self,
        dest: &Destination,
        pattern_topics: &AtomicUsize,
        virtual_queues: &AtomicUsize,
    ) -> Option<DestHandle> {
        let h = self.map.remove(dest)?;
        for queues in self.virtual_queues.values_mut() {
            let before = queues.len();
            queues.retain(|q| q != dest);
            virtual_queues.fetch_sub(before - queues.len(), Ordering::Relaxed);
        }
        self.virtual_queues.retain(|_, q| !q.is_empty());
        let before = self.pattern_topics.len();
        self.pattern_topics.retain(|(_, p)| p.id() != h.id());
        pattern_topics.fetch_sub(before - self.pattern_topics.len(), Ordering::Relaxed);
        Some(h)
    }
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
            resources,
            store,
            metrics: Metrics::default(),
            id_prefix,
            stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
            seq: AtomicU64::new(max_seq),
            next_consumer: AtomicU64::new(0),
            next_destination: AtomicU64::new(0),
            destinations: Mutex::new(Registry::default()),
            pattern_topics: AtomicUsize::new(0),
            virtual_queues: AtomicUsize::new(0),
            virtual_topics: VirtualTopics::new(&config.destinations),
            policies: crate::config::Policies::new(
                &config.policies,
                &config.destinations,
                &config.limits,
            ),
            config,
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
        let mut registry = lock(&self.destinations);
        match registry.map.get(dest) {
            Some(h) if h.id() == id && idle() => {
                registry.remove(dest, &self.pattern_topics, &self.virtual_queues);
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
        lock(&self.destinations).map.len() >= max - max / 10
    }

    /// How many destinations exist.
    pub(crate) fn destination_count(&self) -> usize {
        lock(&self.destinations).map.len()
    }

    /// The destination, created on first use.
    pub(crate) fn destination(
        self: &Arc<Self>,
        dest: &Destination,
    ) -> Result<DestHandle, TooManyDestinations> {
        let mut registry = lock(&self.destinations);
        if let Some(h) = registry.map.get(dest) {
            return Ok(h.clone());
        }
        let max = self.config.limits.max_destinations;
        if registry.map.len() >= max {
            return Err(TooManyDestinations(dest.to_string(), max));
        }
        let handle = match dest.kind() {
            DestinationKind::Topic | DestinationKind::TempTopic => {
                super::spawn_topic(self.clone(), dest.clone())
            }
            DestinationKind::Queue | DestinationKind::TempQueue => {
                super::spawn_queue(self.clone(), dest.clone())
            }
        };
        match dest.kind() {
            DestinationKind::Topic if NamePattern::is_wildcard(dest.name()) => {
                if let Ok(p) = NamePattern::parse(dest.name()) {
                    registry.pattern_topics.push((p, handle.clone()));
                    self.pattern_topics.fetch_add(1, Ordering::Relaxed);
                }
            }
            DestinationKind::Queue => {
                if let Some(topic) = self.virtual_topics.topic_of(dest.name()) {
                    registry
                        .virtual_queues
                        .entry(topic.to_owned())
                        .or_default()
                        .push(dest.clone());
                    self.virtual_queues.fetch_add(1, Ordering::Relaxed);
                }
                // Wildcard subscriptions over queues take from it too. Its
                // control channel is new and empty: these cannot fail, and
                // they are in before anyone else can reach it.
                for w in &registry.wildcard_consumers {
                    if w.pattern.matches(dest.name()) {
                        let consumer = w.template.with_id(self.next_consumer());
                        let id = consumer.id;
                        let (done, _) = tokio::sync::oneshot::channel();
                        if handle.try_control(Control::Subscribe { consumer, done }) {
                            w.registrations.add(id, handle.clone());
                        }
                    }
                }
            }
            _ => {}
        }
        registry.map.insert(dest.clone(), handle.clone());
        Ok(handle)
    }

    /// Registers a subscription to the queues `pattern` matches: it will be
    /// registered (as a copy of `template`) at every matching queue made
    /// from now on. Returns its id and the matching queues that exist,
    /// where the caller registers it itself.
    pub(crate) fn add_wildcard_consumer(
        &self,
        pattern: NamePattern,
        template: ConsumerReg,
        registrations: Registrations,
    ) -> (u64, Vec<DestHandle>) {
        let mut registry = lock(&self.destinations);
        registry.next_wildcard += 1;
        let id = registry.next_wildcard;
        let existing = registry
            .map
            .iter()
            .filter(|(d, _)| d.kind() == DestinationKind::Queue && pattern.matches(d.name()))
            .map(|(_, h)| h.clone())
            .collect();
        registry.wildcard_consumers.push(WildcardConsumer {
            id,
            pattern,
            template,
            registrations,
        });
        (id, existing)
    }

    /// Stops registering wildcard subscription `id` at new queues.
    pub(crate) fn remove_wildcard_consumer(&self, id: u64) {
        lock(&self.destinations)
            .wildcard_consumers
            .retain(|w| w.id != id);
    }

    /// Whether `dest` is a virtual topic's consumer queue the store has not
    /// yet been asked to remember; if so, it is marked as asked (the caller
    /// writes the declaration, or calls [`Self::undeclared`] if it cannot).
    pub(crate) fn claim_declaration(&self, dest: &Destination) -> bool {
        dest.kind() == DestinationKind::Queue
            && self.virtual_topics.topic_of(dest.name()).is_some()
            && lock(&self.destinations).declared.insert(dest.clone())
    }

    /// A declaration claimed with [`Self::claim_declaration`] was not
    /// stored.
    pub(crate) fn undeclared(&self, dest: &Destination) {
        lock(&self.destinations).declared.remove(dest);
    }

    /// The store remembers `dest` (recovery found its declaration).
    pub(crate) fn declared(&self, dest: &Destination) {
        lock(&self.destinations).declared.insert(dest.clone());
    }

    /// The consumer queues of virtual topic `name` that exist.
    pub(crate) fn virtual_topic_queues(&self, name: &str) -> Vec<Destination> {
        if self.virtual_queues.load(Ordering::Relaxed) == 0 {
            return Vec::new();
        }
        lock(&self.destinations)
            .virtual_queues
            .get(name)
            .cloned()
            .unwrap_or_default()
    }

    /// The wildcard-named topics whose pattern matches topic `name`: a
    /// message published to it goes to them too.
    pub(crate) fn pattern_topics_for(&self, name: &str) -> Vec<DestHandle> {
        if self.pattern_topics.load(Ordering::Relaxed) == 0 || NamePattern::is_wildcard(name) {
            return Vec::new();
        }
        lock(&self.destinations)
            .pattern_topics
            .iter()
            .filter(|(p, _)| p.matches(name))
            .map(|(_, h)| h.clone())
            .collect()
    }

    /// Publishes to `handle`'s destination; if it was reclaimed meanwhile
    /// (idle destinations go), to the one made anew. Temporary destinations
    /// are not made anew: a message to one that is gone is `Gone`.
    pub(crate) async fn publish(
        self: &Arc<Self>,
        handle: &DestHandle,
        message: Arc<Message>,
        confirm: bool,
        envelope: super::Envelope,
    ) -> Result<(), PublishError> {
        let mut h = handle.clone();
        let mut attempts = 0;
        loop {
            match h.publish(message.clone(), confirm, envelope).await {
                Err(PublishError::Gone(gone))
                    if !h.destination().kind().is_temporary() && attempts < 3 =>
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
            if h.destination().kind().is_temporary() {
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
        lock(&self.destinations).map.get(dest).cloned()
    }

    /// Deletes a temporary destination and the messages in it.
    pub(crate) fn delete_destination(&self, dest: &Destination) {
        let removed =
            lock(&self.destinations).remove(dest, &self.pattern_topics, &self.virtual_queues);
        if let Some(h) = removed
            && !h.try_control(Control::Delete)
        {
            self.tasks.spawn(async move {
                let _ = h.control(Control::Delete).await;
            });
        }
    }

    /// Takes a destination out of the registry without stopping it (an
    /// operator's delete stops it itself, to learn what it held): the next
    /// use makes a new one.
    pub(crate) fn forget_destination(&self, dest: &Destination) {
        lock(&self.destinations).remove(dest, &self.pattern_topics, &self.virtual_queues);
    }

    pub(crate) fn destination_handles(&self) -> Vec<DestHandle> {
        lock(&self.destinations).map.values().cloned().collect()
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
