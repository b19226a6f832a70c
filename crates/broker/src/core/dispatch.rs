//! The message list at the heart of every destination: ready messages in
//! priority-then-arrival order, messages in flight to consumers or held by a
//! transaction, and the dispatch of ready messages to consumers with credit.
//!
//! A queue owns one `Dispatcher` shared by all its consumers; a topic owns
//! one per subscription. The dispatcher does no I/O and never waits: it
//! hands deliveries to consumers through channels whose occupancy its credit
//! accounting bounds, and reports what needs storage work (dead-lettering,
//! expiry, lost records) as [`Effect`]s for its owner to carry out.
//!
//! Deep queues. A stored message's body may be dropped from memory (it is
//! on disk); the entry keeps what ordering, expiry and credit need. Before
//! dispatching, the owner asks [`Dispatcher::wanted_loads`] which bodies to
//! read back and hands them over with [`Dispatcher::loaded`]. Dispatch never
//! skips ahead of an entry whose body is still being read, so order holds.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use tokio::sync::mpsc;

use super::groups::{GroupMember, Groups};
use crate::config::Redelivery;

mod delayed;
use crate::model::Message;
use crate::store::{StoreError, StoredMessage};
pub(crate) use delayed::wake_at;

mod selective;

/// A consumer's message selector as the dispatcher sees it: whether a
/// message is for the consumer. The core knows nothing of the selector
/// language (model/select.rs); its tests use plain closures.
pub(crate) trait Select: Send + Sync + std::fmt::Debug {
    /// Whether the consumer takes `message`, delivered `deliveries` times
    /// before (`JMSRedelivered`, `JMSXDeliveryCount`).
    fn selects(&self, message: &Message, deliveries: u32) -> bool;
    /// The selector as the client wrote it (a durable subscription keeps
    /// it in the store).
    fn text(&self) -> &str;
}

/// Broker-wide id of one subscription at one destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ConsumerId(pub(crate) u64);
/// A connection's own key for one of its subscriptions: what deliveries
/// carry so the connection knows which subscription they are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct SubKey(pub(crate) u64);
/// A message's broker-wide sequence number (its identity in the store).
pub(crate) type Seq = u64;

/// What a delivery is, beyond a message for a consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Note {
    /// A message, nothing more.
    #[default]
    Plain,
    /// The first message of a group to the consumer that now owns the
    /// group (`JMSXGroupFirstForConsumer`).
    FirstOfGroup,
    /// A browser has seen every message of its snapshot: the message is a
    /// placeholder and only the end is to be told.
    EndOfBrowse,
}

/// A message handed to a session for one of its subscriptions.
#[derive(Debug)]
pub(crate) struct Delivery {
    pub(crate) sub: SubKey,
    /// The registration that delivered it: acknowledgements go back to the
    /// destination this consumer is registered at (a subscription to a
    /// wildcard or a list of destinations has one per destination).
    pub(crate) consumer: ConsumerId,
    pub(crate) message: Arc<Message>,
    /// 1 on first delivery; more means redelivered.
    pub(crate) deliveries: u32,
    /// Whether the store holds the message, so its ack must remove it.
    pub(crate) stored: bool,
    /// Messages dropped for this subscription since its previous delivery
    /// (a slow topic subscriber's backlog overflowed).
    pub(crate) dropped: u32,
    pub(crate) note: Note,
}

/// Tells a session to close its connection: one of its subscribers has
/// been too slow for too long (`destinations.slow-subscriber-abort-ms`).
/// Destinations never wait on sessions, so this is a flag the session
/// watches, not a message it must receive.
#[derive(Debug, Default)]
pub(crate) struct Kick {
    token: tokio_util::sync::CancellationToken,
    reason: std::sync::OnceLock<String>,
}

impl Kick {
    /// Asks the session to close, with `reason` (the first reason wins).
    pub(crate) fn kick(&self, reason: String) {
        let _ = self.reason.set(reason);
        self.token.cancel();
    }

    /// Whether it has been asked to close.
    pub(crate) fn is_kicked(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves, with the reason, once kicked.
    pub(crate) async fn kicked(&self) -> String {
        self.token.cancelled().await;
        self.reason.get().cloned().unwrap_or_default()
    }
}

/// The channel deliveries travel on. Unbounded by type, bounded by credit:
/// a dispatcher never has more than `prefetch` messages in flight per
/// consumer, so it never holds more than the session's total prefetch. It
/// must not block, because destinations never wait on sessions (sessions do
/// wait on destinations; waits in both directions could deadlock).
pub(crate) type DeliveryTx = mpsc::UnboundedSender<Delivery>;

/// Credit shared by a subscription's consumers at several destinations (a
/// wildcard over queues, a list): its prefetch bounds what is in flight to
/// the subscription, not to each destination.
///
/// A destination counts a delivery in when it makes it; the connection
/// counts acknowledgements out when it sends them (so the count never waits
/// for a destination to get round to it). A destination that has messages
/// for the subscription but finds no credit marks it starved, then looks
/// again; the connection, having freed credit, wakes every destination of
/// the subscription if it finds it starved. One of the two always sees the
/// other's write, so no destination sleeps on credit that is free.
#[derive(Debug, Default)]
pub(crate) struct SharedCredit {
    inflight: AtomicU32,
    starved: AtomicBool,
}

impl SharedCredit {
    /// Takes one delivery's worth of credit, if the subscription has any
    /// left under `prefetch` (its destinations race for it).
    fn take(&self, prefetch: u32) -> bool {
        self.inflight
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| {
                (v < prefetch).then_some(v + 1)
            })
            .is_ok()
    }

    /// `n` deliveries were acknowledged (or rejected, or handed to a
    /// transaction). Returns whether the subscription's destinations must
    /// be woken.
    pub(crate) fn release(&self, n: usize) -> bool {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        let _ = self
            .inflight
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| {
                Some(v.saturating_sub(n))
            });
        self.starved.swap(false, Ordering::SeqCst)
    }
}

/// A consumer as a destination sees it.
#[derive(Debug, Clone)]
pub(crate) struct ConsumerReg {
    pub(crate) id: ConsumerId,
    pub(crate) sub: SubKey,
    pub(crate) prefetch: u32,
    pub(crate) tx: DeliveryTx,
    /// Record each delivery's count in the store as it happens, so that a
    /// message delivered when the broker dies comes back flagged as
    /// redelivered (after a restart or a takeover). Not needed for
    /// consumers that acknowledge on delivery.
    pub(crate) records_deliveries: bool,
    /// How to make its session close the connection.
    pub(crate) kick: Arc<Kick>,
    /// ActiveMQ's consumer priority (`activemq.priority`): a queue serves
    /// its highest-priority consumers with credit first.
    pub(crate) priority: i8,
    /// ActiveMQ's exclusive consumer (`activemq.exclusive`): while one
    /// lives, a queue delivers to it alone.
    pub(crate) exclusive: bool,
    /// A no-local topic subscriber (`activemq.noLocal`): messages published
    /// by the connection with this number are not for it.
    pub(crate) no_local: Option<u64>,
    /// A topic subscriber's own bound on its backlog
    /// (`activemq.maximumPendingMessageLimit`), instead of the broker's.
    pub(crate) pending_limit: Option<usize>,
    /// The subscription's credit, when it takes from several destinations.
    pub(crate) shared: Option<Arc<SharedCredit>>,
    /// Its message selector: it is given only the messages this selects.
    pub(crate) selector: Option<Arc<dyn Select>>,
}

impl ConsumerReg {
    /// A plain consumer `id` (its subscription numbered alike) of
    /// `prefetch`, delivering to `tx`: no priority, no options (tests and
    /// benches; the service fills in what a SUBSCRIBE asks for).
    pub(crate) fn plain(id: u64, prefetch: u32, tx: DeliveryTx) -> ConsumerReg {
        ConsumerReg {
            id: ConsumerId(id),
            sub: SubKey(id),
            prefetch,
            tx,
            records_deliveries: false,
            kick: Arc::default(),
            priority: 0,
            exclusive: false,
            no_local: None,
            pending_limit: None,
            shared: None,
            selector: None,
        }
    }

    /// The same consumer, registered under another id (a wildcard
    /// subscription's registration at one more destination).
    pub(crate) fn with_id(&self, id: ConsumerId) -> ConsumerReg {
        ConsumerReg { id, ..self.clone() }
    }
}

#[derive(Debug)]
struct Consumer {
    reg: ConsumerReg,
    inflight: u32,
    gone: bool,
    /// A selective consumer's scan position in each priority's ready list:
    /// every ready entry before it has been judged not for it. Entries are
    /// judged once each, however deep the queue (see `selective.rs`).
    cursor: [u64; 10],
}

impl Consumer {
    fn credit(&self) -> u32 {
        if self.gone {
            return 0;
        }
        let inflight = match &self.reg.shared {
            Some(s) => s.inflight.load(Ordering::SeqCst),
            None => self.inflight,
        };
        self.reg.prefetch.saturating_sub(inflight)
    }

    /// Its credit for the pass over the head of the ready lists, which
    /// serves consumers without a selector only.
    fn head_credit(&self) -> u32 {
        if self.reg.selector.is_some() {
            0
        } else {
            self.credit()
        }
    }

    /// Whether a message published by connection `origin` is not for this
    /// consumer (no-local).
    fn refuses(&self, origin: u64) -> bool {
        origin != 0 && self.reg.no_local == Some(origin)
    }
}

/// One message in a destination.
#[derive(Debug)]
struct Entry {
    seq: u64,
    /// Its message group, once its body has been seen (queues only).
    group: Option<GroupMember>,
    /// The connection that sent it (0: unknown), for no-local consumers.
    origin: u64,
    /// Position among messages of equal priority; a returned message keeps
    /// it, so it goes back exactly where it was.
    arrival: u64,
    expires: u64,
    /// `None` while the body is only on disk.
    message: Option<Arc<Message>>,
    weight: u32,
    deliveries: u32,
    priority: u8,
    /// The store holds it: acks remove it there, and its body may be paged.
    stored: bool,
}

impl Entry {
    fn is_expired(&self, now_ms: u64) -> bool {
        self.expires != 0 && now_ms >= self.expires
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holder {
    Consumer(ConsumerId),
    /// Acknowledged (or rejected) inside a transaction that has not ended.
    Transaction,
}

/// Work the dispatcher's owner must do with the store or other
/// destinations.
#[derive(Debug)]
pub(crate) enum Effect {
    /// Move to the dead-letter queue.
    DeadLetter {
        message: Arc<Message>,
        reason: String,
        stored: bool,
        deliveries: u32,
        /// The dispatcher's tag, to put it back if it cannot be moved.
        tag: u64,
    },
    /// Messages dropped for a slow subscriber (counted).
    Discarded(u64),
    /// A slow subscriber's connection was told to close (counted).
    SlowSubscriberClosed,
    /// Drop (or dead-letter, if so configured) an expired message.
    Expired {
        seq: u64,
        message: Option<Arc<Message>>,
        stored: bool,
        tag: u64,
    },
    /// Record a stored message's delivery count (written without forcing a
    /// sync).
    Deliveries { seq: u64, deliveries: u32 },
    /// Record that a stored message waits for a delayed redelivery until
    /// `until_ms` (so it stays delayed across a restart or a takeover).
    Delayed {
        seq: u64,
        deliveries: u32,
        until_ms: u64,
    },
    /// A stored message could not be read back: it is dropped.
    Lost { seq: u64, error: StoreError },
}

/// Delivery policy for one dispatcher.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    pub(crate) max_redeliveries: u32,
    /// How long a NACKed or rolled-back message waits before it is
    /// redelivered.
    pub(crate) redelivery: Redelivery,
    /// Dead-letter queues keep their poison messages instead of
    /// dead-lettering them again.
    pub(crate) is_dead_letter_queue: bool,
    /// Bytes of message bodies to keep in memory.
    pub(crate) memory_limit: usize,
    /// Whether stored bodies can be dropped from memory and read back.
    pub(crate) pages: bool,
    /// A topic subscription's backlog bound: beyond this many ready
    /// messages (or `memory_limit` bytes of them that cannot be paged out)
    /// the oldest of the lowest priority that the store does not hold is
    /// dropped instead of holding producers back. `None` for queues.
    pub(crate) pending_limit: Option<usize>,
    /// Bytes of ready bodies that cannot be paged out beyond which
    /// producers wait (or, with `pending_limit`, the oldest are dropped):
    /// a topic subscription's `subscriber-backlog-bytes`, below
    /// `memory_limit`, so that a saturated topic holds its producer back
    /// before seconds of backlog build up. `memory_limit` for queues.
    pub(crate) backlog_limit: usize,
    /// A subscriber whose backlog keeps overflowing for this long is
    /// disconnected.
    pub(crate) abort_after: Option<std::time::Duration>,
    /// Keep message groups together, remembering at most this many owners
    /// (queues; `None` for topic subscriptions, which have one consumer).
    pub(crate) groups: Option<usize>,
}

/// Counters a destination reports.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct DispatchStats {
    /// Messages waiting for a consumer.
    pub ready: usize,
    /// Messages delivered and not yet acknowledged.
    pub inflight: usize,
    /// Messages waiting out a redelivery delay.
    pub delayed: usize,
    /// Consumers attached.
    pub consumers: usize,
    /// Messages ever enqueued.
    pub enqueued: u64,
    /// Messages ever delivered (redeliveries included).
    pub delivered: u64,
    /// Messages ever acknowledged.
    pub acked: u64,
    /// Bytes of message bodies held in memory (ready and in flight).
    pub memory_bytes: usize,
    /// Messages dropped for slow subscribers (topics).
    pub discarded: u64,
    /// Messages that expired here before delivery (dropped or
    /// dead-lettered, as the policy says).
    pub expired: u64,
    /// Messages sent on to dead-letter handling from here: redelivered too
    /// often, or given up by their client (expired ones are in `expired`).
    pub dead_lettered: u64,
}

/// Entries read ahead of the consumers, at least.
const LOAD_AHEAD: usize = 64;
/// Ready messages a dispatch pass looks past when they cannot go yet (their
/// group's owner has no credit): beyond this, later messages wait. ActiveMQ
/// bounds the same scan by its page size (200).
const SKIP_LIMIT: usize = 1000;

/// One message of a snapshot.
#[derive(Debug)]
pub(crate) struct Snap {
    pub(crate) seq: u64,
    /// The delivery count a browser shows (a message returned to the queue
    /// shows as redelivered).
    pub(crate) deliveries: u32,
    /// `None` while its body is only on disk.
    pub(crate) message: Option<Arc<Message>>,
}

/// A message an operator took out of a destination (see
/// [`Dispatcher::take_for_operator`]).
#[derive(Debug)]
pub(crate) struct Taken(Entry);

impl Taken {
    pub(crate) fn seq(&self) -> u64 {
        self.0.seq
    }

    /// `None` while its body is only on disk.
    pub(crate) fn message(&self) -> Option<&Arc<Message>> {
        self.0.message.as_ref()
    }

    /// Whether the store holds it.
    pub(crate) fn stored(&self) -> bool {
        self.0.stored
    }
}

/// Who a ready message goes to.
enum Pick {
    /// Consumer `index`; `assigns` its group to it.
    To { index: usize, assigns: bool },
    /// Nobody yet (its group's owner has no credit); later messages may go.
    Skip,
    /// Nobody: no consumer that could take it has credit.
    Nobody,
}
/// Most bodies requested in one load.
const LOAD_BATCH: usize = 256;

/// Restored messages take arrivals below this, new ones at or above it: no
/// store holds 2^40 messages of one destination.
const RESTORED_BELOW: u64 = 1 << 40;

#[derive(Debug)]
pub(crate) struct Dispatcher {
    /// Ready messages, by priority (index = priority), each keyed by
    /// arrival: a returned message goes back to its place, and a selective
    /// consumer resumes its scan where it stopped, in O(log n).
    ready: [BTreeMap<u64, Entry>; 10],
    ready_count: usize,
    next_arrival: u64,
    /// While recovery's messages are still arriving ([`Dispatcher::begin_restore`]):
    /// the arrival the next restored message takes. New messages take theirs
    /// from [`RESTORED_BELOW`] up meanwhile, so the restored ones, older,
    /// stay ahead of them whenever they come in.
    restoring: Option<u64>,
    inflight: HashMap<u64, (Entry, Holder)>,
    /// Messages waiting out a redelivery delay.
    delayed: delayed::Delayed,
    /// By consumer priority, highest first; in order of arrival within one.
    consumers: Vec<Consumer>,
    next_consumer: usize,
    /// The exclusive consumer receiving everything while it lives.
    exclusive_owner: Option<ConsumerId>,
    /// Owners of message groups (queues).
    groups: Option<Groups>,
    expiring: usize,
    policy: Policy,
    /// Bytes of ready bodies that cannot be paged out (flow control).
    pinned: usize,
    /// Bytes of ready bodies that could be paged out.
    paged_in: usize,
    /// Bytes of bodies in flight (delivered, not yet acknowledged).
    inflight_bytes: usize,
    /// Of those, the bodies that could be paged out once back: they count
    /// against the paging budget with `paged_in`, so consumers with a huge
    /// prefetch cannot page a whole deep queue into memory.
    inflight_pageable: usize,
    /// Bodies being read back: seq -> (priority, weight, arrival).
    loading: HashMap<u64, (u8, u32, u64)>,
    /// Bytes being read back.
    loading_bytes: usize,
    /// The broker-wide budget: no body is kept or read back beyond it.
    memory: Option<std::sync::Arc<crate::memory::MemoryBudget>>,
    enqueued: u64,
    delivered: u64,
    acked: u64,
    /// Dropped for a slow subscriber: in all, and since the last delivery.
    discarded: u64,
    /// Expired, and sent to dead-letter handling (see [`DispatchStats`]).
    expired: u64,
    dead_lettered: u64,
    dropped_since_delivery: u32,
    /// Since when the backlog has been overflowing.
    overflowing_since: Option<std::time::Instant>,
    /// Consumers with a selector.
    selective: usize,
    /// Per priority: the arrival up to which bodies that every selective
    /// consumer had judged were dropped (see `selective.rs`).
    judged_dropped: [u64; 10],
    /// Its owner's name for it, carried by the effects it reports (a topic
    /// has one dispatcher per subscription).
    tag: u64,
}

impl Dispatcher {
    pub(crate) fn new(policy: Policy) -> Dispatcher {
        Dispatcher {
            ready: Default::default(),
            ready_count: 0,
            next_arrival: 0,
            restoring: None,
            inflight: HashMap::new(),
            delayed: delayed::Delayed::default(),
            consumers: Vec::new(),
            next_consumer: 0,
            exclusive_owner: None,
            groups: policy.groups.map(Groups::new),
            expiring: 0,
            policy,
            pinned: 0,
            paged_in: 0,
            inflight_bytes: 0,
            inflight_pageable: 0,
            loading: HashMap::new(),
            loading_bytes: 0,
            memory: None,
            enqueued: 0,
            delivered: 0,
            acked: 0,
            discarded: 0,
            expired: 0,
            dead_lettered: 0,
            dropped_since_delivery: 0,
            overflowing_since: None,
            selective: 0,
            judged_dropped: [0; 10],
            tag: 0,
        }
    }

    /// Names this dispatcher in the effects it reports.
    pub(crate) fn with_tag(mut self, tag: u64) -> Dispatcher {
        self.tag = tag;
        self
    }

    /// A message that could not be moved to its dead-letter queue goes back
    /// where it was (at the end of its priority), with the deliveries it
    /// had: the next rejection tries again.
    pub(crate) fn put_back(&mut self, message: Arc<Message>, stored: bool, deliveries: u32) {
        let entry = Entry {
            seq: message.seq,
            group: self.group_of(&message),
            origin: 0,
            arrival: 0,
            expires: message.expires,
            weight: message.weight() as u32,
            deliveries,
            priority: message.priority.min(9),
            stored,
            message: Some(message),
        };
        self.add(entry);
    }

    /// Bodies it keeps are also bounded by the broker-wide `budget`.
    pub(crate) fn with_memory(
        mut self,
        budget: std::sync::Arc<crate::memory::MemoryBudget>,
    ) -> Dispatcher {
        self.memory = Some(budget);
        self
    }

    /// Whether the broker-wide budget has room for `bytes` more.
    fn global_room(&self, bytes: usize) -> bool {
        self.memory
            .as_ref()
            .is_none_or(|m| m.has_room(bytes as u64))
    }

    /// Bytes of pageable bodies resident: ready, in flight, being read.
    fn resident_pageable(&self) -> usize {
        self.paged_in + self.inflight_pageable + self.loading_bytes
    }

    /// Bytes of bodies that cannot be paged out it holds at most.
    fn backlog_limit(&self) -> usize {
        self.policy.backlog_limit.min(self.policy.memory_limit)
    }

    /// Whether producers may add more: bodies that cannot be paged out are
    /// under the memory limit (producer flow control).
    pub(crate) fn accepting(&self) -> bool {
        // A bounded backlog drops instead of holding producers back.
        self.policy.pending_limit.is_some() || self.pinned < self.backlog_limit()
    }

    pub(crate) fn stats(&self) -> DispatchStats {
        DispatchStats {
            ready: self.ready_count,
            inflight: self.inflight.len(),
            delayed: self.delayed.len(),
            consumers: self.consumers.len(),
            enqueued: self.enqueued,
            delivered: self.delivered,
            acked: self.acked,
            memory_bytes: self.pinned + self.paged_in + self.inflight_bytes,
            discarded: self.discarded,
            expired: self.expired,
            dead_lettered: self.dead_lettered,
        }
    }

    fn pageable(&self, e: &Entry) -> bool {
        e.stored && self.policy.pages
    }

    /// Adds a new message. `stored`: whether the store holds it (a queue's
    /// persistent messages, once durable). A bounded backlog that overflows
    /// drops what it must (reported as an effect).
    pub(crate) fn push_bounded(
        &mut self,
        message: Arc<Message>,
        stored: bool,
        effects: &mut Vec<Effect>,
    ) {
        self.push(message, stored);
        if let Some(limit) = self.policy.pending_limit {
            self.bound_backlog(limit, effects);
        }
    }

    /// Drops the oldest messages of the lowest priority that the store
    /// does not hold while the backlog is over its bounds; disconnects the
    /// subscriber if that has gone on for too long.
    fn bound_backlog(&mut self, limit: usize, effects: &mut Vec<Effect>) {
        let mut dropped = 0u64;
        // The newest message always stays: one larger than the byte bound
        // is delivered, not dropped on arrival.
        while self.ready_count > limit
            || (self.pinned > self.backlog_limit() && self.ready_count > 1)
        {
            let victim = (0..10).find_map(|p| {
                self.ready[p]
                    .iter()
                    .take(64)
                    .find(|(_, e)| !e.stored)
                    .map(|(&arrival, _)| (p, arrival))
            });
            let Some((p, arrival)) = victim else { break };
            let Some(e) = self.ready[p].remove(&arrival) else {
                break;
            };
            self.took(&e);
            if let Some((_, w, _)) = self.loading.remove(&e.seq) {
                self.loading_bytes -= w as usize;
            }
            dropped += 1;
        }
        if dropped == 0 {
            self.overflowing_since = None;
            return;
        }
        self.discarded += dropped;
        self.dropped_since_delivery = self
            .dropped_since_delivery
            .saturating_add(dropped.min(u64::from(u32::MAX)) as u32);
        effects.push(Effect::Discarded(dropped));
        let since = *self
            .overflowing_since
            .get_or_insert_with(std::time::Instant::now);
        if let Some(abort) = self.policy.abort_after
            && since.elapsed() >= abort
        {
            effects.push(Effect::SlowSubscriberClosed);
            for c in &self.consumers {
                c.reg.kick.kick(format!(
                    "slow subscriber: its backlog has overflowed for more than destinations.slow-subscriber-abort-ms ({} ms); {} messages dropped",
                    abort.as_millis(),
                    self.discarded
                ));
            }
        }
    }

    /// Adds a new message (unbounded: see [`Dispatcher::push_bounded`]).
    pub(crate) fn push(&mut self, message: Arc<Message>, stored: bool) {
        let group = self.group_of(&message);
        self.push_from(message, stored, 0, group);
    }

    /// Adds a new message of `group`, sent by connection `origin` (which
    /// no-local consumers do not get).
    pub(crate) fn push_from(
        &mut self,
        message: Arc<Message>,
        stored: bool,
        origin: u64,
        group: Option<GroupMember>,
    ) {
        let entry = Entry {
            seq: message.seq,
            group: self.groups.as_ref().and(group),
            origin,
            arrival: 0,
            expires: message.expires,
            weight: message.weight() as u32,
            deliveries: 0,
            priority: message.priority.min(9),
            stored: stored && message.persistent,
            message: Some(message),
        };
        self.add(entry);
    }

    /// Recovery's messages are coming, a chunk at a time, while the broker
    /// already serves: until [`Dispatcher::end_restore`] nothing is
    /// delivered (a consumer would otherwise get new messages before older
    /// ones still on their way), and new messages queue behind every
    /// restored one.
    pub(crate) fn begin_restore(&mut self) {
        if self.restoring.is_none() {
            self.restoring = Some(self.next_arrival);
            self.next_arrival = self.next_arrival.max(RESTORED_BELOW);
        }
    }

    /// Recovery's messages are all in: deliveries start.
    pub(crate) fn end_restore(&mut self) {
        self.restoring = None;
    }

    /// Whether recovery's messages are still coming in.
    pub(crate) fn is_restoring(&self) -> bool {
        self.restoring.is_some()
    }

    /// The arrival of a message recovery found: below every new message's
    /// while a restore is under way.
    fn restored_arrival(&mut self) -> u64 {
        let slot = match &mut self.restoring {
            Some(next) if *next < RESTORED_BELOW => next,
            _ => &mut self.next_arrival,
        };
        let arrival = *slot;
        *slot += 1;
        arrival
    }

    /// Adds a message found by recovery. One that was waiting out a
    /// redelivery delay waits for the rest of it.
    pub(crate) fn restore(&mut self, m: StoredMessage) {
        let not_before = m.not_before;
        let mut entry = Entry {
            seq: m.seq,
            group: m.message.as_deref().and_then(|m| self.group_of(m)),
            origin: 0,
            arrival: 0,
            expires: m.expires,
            weight: m.weight,
            deliveries: m.deliveries,
            priority: m.priority.min(9),
            stored: true,
            message: m.message,
        };
        entry.arrival = self.restored_arrival();
        self.enqueued += 1;
        if not_before > crate::model::now_ms() {
            self.park(not_before, entry);
            return;
        }
        self.insert_ready(entry);
    }

    /// Parks an entry until `due_ms`. A body the store holds is dropped
    /// from memory meanwhile (it is read back when due).
    fn park(&mut self, due_ms: u64, mut entry: Entry) {
        if self.pageable(&entry) {
            entry.message = None;
        }
        self.delayed.park(due_ms, entry);
    }

    /// When the earliest message waiting out a redelivery delay is due (ms
    /// since the epoch): its owner wakes then ([`wake_at`]).
    pub(crate) fn next_due(&self) -> Option<u64> {
        self.delayed.next_due()
    }

    /// The group a message belongs to, if this dispatcher keeps groups.
    fn group_of(&self, m: &Message) -> Option<GroupMember> {
        self.groups.as_ref().and_then(|_| GroupMember::of(m))
    }

    fn add(&mut self, mut entry: Entry) {
        entry.arrival = self.next_arrival;
        self.next_arrival += 1;
        self.enqueued += 1;
        self.insert_ready(entry);
    }

    fn insert_ready(&mut self, mut entry: Entry) {
        if entry.message.is_some() {
            let w = entry.weight as usize;
            if !self.pageable(&entry) {
                self.pinned += w;
            } else if self.resident_pageable() + w <= self.policy.memory_limit
                && self.global_room(w)
            {
                self.paged_in += w;
            } else {
                // Over this destination's or the broker's budget: keep only
                // the index entry; the body is on disk and is read back
                // before delivery.
                entry.message = None;
            }
        }
        if entry.expires != 0 {
            self.expiring += 1;
        }
        self.ready_count += 1;
        let p = entry.priority as usize;
        self.rewind(p, entry.arrival);
        self.ready[p].insert(entry.arrival, entry);
    }

    /// Accounts for an entry leaving the ready list.
    fn took(&mut self, e: &Entry) {
        self.ready_count -= 1;
        if e.expires != 0 {
            self.expiring -= 1;
        }
        if e.message.is_some() {
            let w = e.weight as usize;
            if self.pageable(e) {
                self.paged_in -= w;
            } else {
                self.pinned -= w;
            }
        }
    }

    /// Attaches a consumer, after those of its priority or higher. An
    /// exclusive consumer becomes the queue's sole receiver if there is none
    /// yet, or if it outranks the current one (ActiveMQ: a higher priority,
    /// or the highest, 127).
    pub(crate) fn add_consumer(&mut self, reg: ConsumerReg) {
        if reg.exclusive {
            let takes_over = match self.exclusive_owner.and_then(|o| self.consumer(o)) {
                None => true,
                Some(owner) => reg.priority == i8::MAX || reg.priority > owner.reg.priority,
            };
            if takes_over {
                self.exclusive_owner = Some(reg.id);
            }
        }
        let at = self
            .consumers
            .partition_point(|c| c.reg.priority >= reg.priority);
        if self.next_consumer > at {
            self.next_consumer += 1;
        }
        if reg.selector.is_some() {
            self.selective += 1;
            self.judged_dropped = [0; 10];
        }
        self.consumers.insert(
            at,
            Consumer {
                reg,
                inflight: 0,
                gone: false,
                cursor: [0; 10],
            },
        );
    }

    /// Whether a message published by connection `origin` is local to a
    /// no-local consumer here (and so not for it).
    pub(crate) fn is_local(&self, origin: u64) -> bool {
        origin != 0
            && self
                .consumers
                .iter()
                .any(|c| c.reg.no_local == Some(origin))
    }

    fn consumer(&self, id: ConsumerId) -> Option<&Consumer> {
        self.consumers.iter().find(|c| c.reg.id == id)
    }

    /// Detaches a consumer and returns what it held (not what transactions
    /// hold) to the ready list, as redelivered, in original order.
    pub(crate) fn remove_consumer(&mut self, id: ConsumerId, effects: &mut Vec<Effect>) {
        let Some(i) = self.consumers.iter().position(|c| c.reg.id == id) else {
            return;
        };
        let gone = self.consumers.remove(i);
        if self.next_consumer > i {
            self.next_consumer -= 1;
        }
        if gone.reg.selector.is_some() {
            self.selective -= 1;
        }
        // Groups and exclusivity it held are free: what selective
        // consumers passed over for them may be theirs now.
        self.rewind_all();
        if let Some(groups) = &mut self.groups {
            groups.release(id);
        }
        if self.exclusive_owner == Some(id) {
            // The next exclusive consumer by priority, the earliest among
            // equals, takes over.
            self.exclusive_owner = self
                .consumers
                .iter()
                .filter(|c| c.reg.exclusive)
                .fold(None::<&Consumer>, |best, c| match best {
                    Some(b) if b.reg.priority >= c.reg.priority => Some(b),
                    _ => Some(c),
                })
                .map(|c| c.reg.id);
        }
        let mut held: Vec<u64> = self
            .inflight
            .iter()
            .filter(|(_, (_, h))| *h == Holder::Consumer(id))
            .map(|(seq, _)| *seq)
            .collect();
        held.sort_unstable();
        for seq in held {
            if let Some((entry, _)) = self.inflight.remove(&seq) {
                self.left_flight(&entry);
                // Redelivered at once: ActiveMQ's redelivery delay is for
                // messages a consumer rejected, not for those it left.
                self.release_entry(entry, "consumer closed", None, effects);
            }
        }
    }

    fn consumer_mut(&mut self, id: ConsumerId) -> Option<&mut Consumer> {
        self.consumers.iter_mut().find(|c| c.reg.id == id)
    }

    /// Takes `seq` out of flight if `holder` holds it.
    fn take(&mut self, seq: u64, holder: Holder) -> Option<Entry> {
        match self.inflight.get(&seq) {
            Some((_, h)) if *h == holder => {}
            _ => return None,
        }
        let (entry, _) = self.inflight.remove(&seq)?;
        self.left_flight(&entry);
        if let Holder::Consumer(id) = holder
            && let Some(c) = self.consumer_mut(id)
        {
            c.inflight -= 1;
        }
        Some(entry)
    }

    /// Accounts for an entry leaving flight (acknowledged, returned).
    fn left_flight(&mut self, e: &Entry) {
        if e.message.is_some() {
            let w = e.weight as usize;
            self.inflight_bytes -= w;
            if self.pageable(e) {
                self.inflight_pageable -= w;
            }
        }
    }

    /// Accounts for an entry going into flight.
    fn entered_flight(&mut self, e: &Entry) {
        if e.message.is_some() {
            let w = e.weight as usize;
            self.inflight_bytes += w;
            if self.pageable(e) {
                self.inflight_pageable += w;
            }
        }
    }

    /// The consumer acknowledged these messages: they are done.
    pub(crate) fn ack(&mut self, consumer: ConsumerId, seqs: &[u64]) {
        for &seq in seqs {
            if self.take(seq, Holder::Consumer(consumer)).is_some() {
                self.acked += 1;
            }
        }
    }

    /// The consumer's prefetch changes (a JMS client restoring its consumer
    /// after a failover subscribes with none, then sets the real one).
    pub(crate) fn set_prefetch(&mut self, consumer: ConsumerId, prefetch: u32) {
        if let Some(c) = self.consumer_mut(consumer) {
            c.reg.prefetch = prefetch;
        }
    }

    /// The consumer acknowledged (or rejected) these inside a transaction:
    /// they stop counting against its credit but stay held until the
    /// transaction ends.
    pub(crate) fn hold(&mut self, consumer: ConsumerId, seqs: &[u64]) {
        for &seq in seqs {
            if let Some(entry) = self.take(seq, Holder::Consumer(consumer)) {
                self.entered_flight(&entry);
                self.inflight.insert(seq, (entry, Holder::Transaction));
            }
        }
    }

    /// The transaction that held these committed its acknowledgement.
    pub(crate) fn commit(&mut self, seqs: &[u64]) {
        for &seq in seqs {
            if self.take(seq, Holder::Transaction).is_some() {
                self.acked += 1;
            }
        }
    }

    /// The consumer rejected these (NACK): redeliver or dead-letter.
    pub(crate) fn nack(
        &mut self,
        consumer: ConsumerId,
        seqs: &[u64],
        poison: bool,
        effects: &mut Vec<Effect>,
    ) {
        let now = crate::model::now_ms();
        for &seq in seqs {
            if let Some(entry) = self.take(seq, Holder::Consumer(consumer)) {
                if poison && !self.policy.is_dead_letter_queue {
                    self.dead_letter(
                        entry,
                        "the client gave up on it (poison acknowledgement)".into(),
                        effects,
                    );
                } else {
                    self.release_entry(entry, "rejected (NACK)", Some(now), effects);
                }
            }
        }
    }

    /// The transaction that held these rolled back (or committed a NACK):
    /// redeliver or dead-letter.
    pub(crate) fn rollback(&mut self, seqs: &[u64], effects: &mut Vec<Effect>) {
        let now = crate::model::now_ms();
        for &seq in seqs {
            if let Some(entry) = self.take(seq, Holder::Transaction) {
                self.release_entry(entry, "transaction rolled back", Some(now), effects);
            }
        }
    }

    /// Redelivers a returned entry, or dead-letters it past the policy's
    /// redeliveries. `delay_from`: the time it was rejected, if the
    /// policy's redelivery delay applies (NACK, rollback).
    fn release_entry(
        &mut self,
        entry: Entry,
        why: &str,
        delay_from: Option<u64>,
        effects: &mut Vec<Effect>,
    ) {
        if entry.deliveries > self.policy.max_redeliveries && !self.policy.is_dead_letter_queue {
            let reason = format!(
                "delivered {} times, more than max-redeliveries ({}); last: {why}",
                entry.deliveries, self.policy.max_redeliveries
            );
            self.dead_letter(entry, reason, effects);
        } else {
            let delay = match delay_from {
                Some(now) => now.saturating_add(
                    self.policy.redelivery.delay(entry.deliveries).as_millis() as u64,
                ),
                None => 0,
            };
            let delayed = delay_from.is_some_and(|now| delay > now);
            if entry.stored {
                effects.push(if delayed {
                    Effect::Delayed {
                        seq: entry.seq,
                        deliveries: entry.deliveries,
                        until_ms: delay,
                    }
                } else {
                    Effect::Deliveries {
                        seq: entry.seq,
                        deliveries: entry.deliveries,
                    }
                });
            }
            if delayed {
                self.park(delay, entry);
            } else {
                self.insert_ready(entry);
            }
        }
    }

    /// Sends an in-flight entry to the dead-letter queue.
    fn dead_letter(&mut self, entry: Entry, reason: String, effects: &mut Vec<Effect>) {
        // In-flight entries always have their body.
        if let Some(message) = entry.message {
            self.dead_lettered += 1;
            effects.push(Effect::DeadLetter {
                reason,
                message,
                stored: entry.stored,
                deliveries: entry.deliveries,
                tag: self.tag,
            });
        }
    }

    /// Credit the consumers have left in all.
    fn free_credit(&self) -> usize {
        self.consumers.iter().map(|c| c.credit() as usize).sum()
    }

    /// Bodies to read back so that the next deliveries can go out: the
    /// first entries in dispatch order whose bodies are on disk. Marks them
    /// as being loaded.
    ///
    /// Reading back is bounded by bytes, not by the consumers' credit:
    /// bodies resident here (ready, in flight, being read) stay within the
    /// destination's memory limit and the broker's budget, however large
    /// the prefetch. When nothing is resident one body is read anyway, so a
    /// message larger than the limit still goes out.
    pub(crate) fn wanted_loads(&mut self) -> Vec<u64> {
        let credit = self.free_credit();
        if credit == 0 {
            return Vec::new();
        }
        let window = (credit * 2).max(LOAD_AHEAD);
        let mut room = self
            .policy
            .memory_limit
            .saturating_sub(self.resident_pageable());
        let mut want = Vec::new();
        let mut seen = 0;
        // The first body on disk that did not fit, if nothing came before.
        let mut blocked = None;
        'outer: for p in (0..10).rev() {
            for e in self.ready[p].values() {
                if seen >= window || want.len() >= LOAD_BATCH {
                    break 'outer;
                }
                seen += 1;
                if e.message.is_none() && !self.loading.contains_key(&e.seq) {
                    let w = e.weight as usize;
                    let first = want.is_empty() && self.resident_pageable() == 0;
                    if !first && (w > room || !self.global_room(w)) {
                        if want.is_empty() {
                            blocked = Some((e.seq, e.priority, e.weight, e.arrival));
                        }
                        break 'outer;
                    }
                    room = room.saturating_sub(w);
                    want.push((e.seq, e.priority, e.weight, e.arrival));
                }
            }
        }
        // Bodies behind the head can fill the budget: those read back for
        // selective consumers, or kept on arrival while earlier ones were
        // on disk. Nothing would then be read back for the head, and
        // consumers without a selector would wait for ever; those bodies
        // are stored, so they are dropped again to make room.
        if let Some(load) = blocked
            && self.consumers.iter().any(|c| c.head_credit() > 0)
        {
            let w = load.2 as usize;
            room += self.drop_bodies_behind(usize::from(load.1), load.3, w.saturating_sub(room));
            if w <= room && self.global_room(w) {
                room -= w;
                want.push(load);
            }
        }
        if self.selective > 0 && want.len() < LOAD_BATCH {
            for load in self.selective_loads(LOAD_BATCH - want.len()) {
                if want.iter().any(|w| w.0 == load.0) {
                    continue;
                }
                let w = load.2 as usize;
                let first = want.is_empty() && self.resident_pageable() == 0;
                if !first && (w > room || !self.global_room(w)) {
                    room += self.drop_judged_bodies(w.saturating_sub(room));
                    if w > room || !self.global_room(w) {
                        break;
                    }
                }
                room = room.saturating_sub(w);
                want.push(load);
            }
        }
        for &(seq, p, w, arrival) in &want {
            self.loading.insert(seq, (p, w, arrival));
            self.loading_bytes += w as usize;
        }
        want.into_iter().map(|(seq, ..)| seq).collect()
    }

    /// Drops the resident bodies of stored ready entries that come after
    /// (priority `p`, `arrival`) in dispatch order, the last first, until
    /// `bytes` are freed (they are read back when their turn comes).
    /// Returns the bytes freed.
    fn drop_bodies_behind(&mut self, p: usize, arrival: u64, bytes: usize) -> usize {
        if !self.policy.pages {
            return 0;
        }
        let mut freed = 0;
        for q in 0..=p {
            let from = if q == p { arrival + 1 } else { 0 };
            let behind = self.ready[q].range_mut(from..).rev().map(|(_, e)| e);
            freed += drop_stored_bodies(behind, bytes.saturating_sub(freed));
        }
        self.paged_in -= freed;
        freed
    }

    /// Bodies read back. An entry whose body cannot be read is dropped.
    pub(crate) fn loaded(
        &mut self,
        results: Vec<(u64, Result<Arc<Message>, StoreError>)>,
        effects: &mut Vec<Effect>,
    ) {
        for (seq, result) in results {
            let Some((p, w, arrival)) = self.loading.remove(&seq) else {
                continue;
            };
            self.loading_bytes -= w as usize;
            let q = &mut self.ready[p as usize];
            if q.get(&arrival).is_none_or(|e| e.seq != seq) {
                continue;
            }
            match result {
                Ok(m) => {
                    let group = self.groups.as_ref().and_then(|_| GroupMember::of(&m));
                    let Some(e) = q.get_mut(&arrival) else {
                        continue;
                    };
                    if e.message.is_none() {
                        e.group = group;
                        e.message = Some(m);
                        self.paged_in += e.weight as usize;
                    }
                }
                Err(error) => {
                    if let Some(e) = q.remove(&arrival) {
                        self.took(&e);
                        effects.push(Effect::Lost { seq, error });
                    }
                }
            }
        }
    }

    /// Delivers ready messages to consumers with credit: highest message
    /// priority first, then arrival; to the exclusive consumer if there is
    /// one, to a group's owner if the message is in an owned group, and
    /// otherwise to the highest-priority consumers with credit, round-robin
    /// among equals. A message that cannot go yet (its group's owner has no
    /// credit) is passed over, up to [`SKIP_LIMIT`] of them per pass.
    pub(crate) fn dispatch(&mut self, now_ms: u64, effects: &mut Vec<Effect>) {
        if self.restoring.is_some() {
            return;
        }
        if self.delayed.next_due().is_some_and(|due| due <= now_ms) {
            for entry in self.delayed.take_due(now_ms) {
                self.insert_ready(entry);
            }
        }
        while self.dispatch_pass(now_ms, effects) && self.starve() {}
    }

    /// One pass of [`Dispatcher::dispatch`]; `true` if it stopped with
    /// messages left for want of credit.
    fn dispatch_pass(&mut self, now_ms: u64, effects: &mut Vec<Effect>) -> bool {
        if self.consumers.is_empty() {
            return false;
        }
        if self.selective > 0 {
            self.dispatch_selective(now_ms, effects);
            if self.selective == self.consumers.len() {
                return self.ready_count > 0;
            }
        }
        let mut skipped = 0;
        for p in (0..10).rev() {
            // The arrival to go on from: entries before it were passed over.
            let mut from = 0;
            while let Some((&arrival, entry)) = self.ready[p].range(from..).next() {
                if entry.is_expired(now_ms) {
                    if let Some(e) = self.ready[p].remove(&arrival) {
                        self.took(&e);
                        self.expired += 1;
                        effects.push(Effect::Expired {
                            seq: e.seq,
                            message: e.message,
                            stored: e.stored,
                            tag: self.tag,
                        });
                    }
                    continue;
                }
                if entry.message.is_none() {
                    // Its body is being read: nothing may overtake it.
                    return false;
                }
                let (group, origin) = (entry.group, entry.origin);
                match self.pick(group, origin) {
                    Pick::To { index, assigns } => {
                        if !self.deliver(p, arrival, index, group, assigns, effects) {
                            // The consumer's session has gone: try again.
                            continue;
                        }
                    }
                    Pick::Skip => {
                        skipped += 1;
                        if skipped >= SKIP_LIMIT {
                            return false;
                        }
                        if self.next_with_credit(0).is_none() {
                            return true;
                        }
                        from = arrival + 1;
                    }
                    Pick::Nobody => return true,
                }
            }
        }
        false
    }

    /// Marks the shared credit of consumers without credit as starved, so
    /// their connection wakes this destination when it frees some; `true`
    /// if credit appeared meanwhile (dispatch again).
    fn starve(&self) -> bool {
        let mut again = false;
        for c in &self.consumers {
            if let Some(shared) = &c.reg.shared
                && !c.gone
                && c.credit() == 0
            {
                shared.starved.store(true, Ordering::SeqCst);
                again |= c.credit() > 0;
            }
        }
        again
    }

    /// Who the next ready message, of `group` and sent by connection
    /// `origin`, goes to.
    fn pick(&mut self, group: Option<GroupMember>, origin: u64) -> Pick {
        // Nobody, or (if someone refuses it as no-local) not yet.
        let none = |consumers: &[Consumer]| {
            if origin != 0 && consumers.iter().any(|c| c.refuses(origin)) {
                Pick::Skip
            } else {
                Pick::Nobody
            }
        };
        let chosen = match self.exclusive_owner {
            Some(owner) => self
                .consumers
                .iter()
                .position(|c| c.reg.id == owner && c.head_credit() > 0 && !c.refuses(origin)),
            None => None,
        };
        if self.exclusive_owner.is_some() && chosen.is_none() {
            return none(&self.consumers);
        }
        let (Some(groups), Some(member)) = (&mut self.groups, group) else {
            return match chosen.or_else(|| self.next_with_credit(origin)) {
                Some(index) => Pick::To {
                    index,
                    assigns: false,
                },
                None => none(&self.consumers),
            };
        };
        if !member.starts()
            && let Some(owner) = groups.owner(member.key)
            && let Some(index) = self.consumers.iter().position(|c| c.reg.id == owner)
        {
            return match chosen {
                // The exclusive consumer takes its groups over.
                Some(index) if index != self.owner_index(owner) => Pick::To {
                    index,
                    assigns: true,
                },
                _ if self.consumers[index].head_credit() > 0
                    && !self.consumers[index].refuses(origin) =>
                {
                    Pick::To {
                        index,
                        assigns: false,
                    }
                }
                _ => Pick::Skip,
            };
        }
        match chosen.or_else(|| self.least_loaded(origin)) {
            Some(index) => Pick::To {
                index,
                assigns: true,
            },
            None => none(&self.consumers),
        }
    }

    /// For a group without an owner: among the highest-priority consumers
    /// with credit, the one owning the fewest groups (ActiveMQ favours the
    /// least loaded), the next in turn among equals.
    fn least_loaded(&self, origin: u64) -> Option<usize> {
        let first = self.next_with_credit(origin)?;
        let (Some(groups), priority) = (&self.groups, self.consumers[first].reg.priority) else {
            return Some(first);
        };
        let n = self.consumers.len();
        (0..n)
            .map(|k| (first + k) % n)
            .filter(|&i| {
                let c = &self.consumers[i];
                c.reg.priority == priority && c.head_credit() > 0 && !c.refuses(origin)
            })
            .min_by_key(|&i| groups.owned_by(self.consumers[i].reg.id))
    }

    fn owner_index(&self, owner: ConsumerId) -> usize {
        self.consumers
            .iter()
            .position(|c| c.reg.id == owner)
            .unwrap_or(usize::MAX)
    }

    /// The consumer next in turn among the highest-priority ones with
    /// credit that take messages from connection `origin` (0: any).
    fn next_with_credit(&self, origin: u64) -> Option<usize> {
        let n = self.consumers.len();
        // The usual case: every consumer of one priority.
        if n > 0 && self.consumers[0].reg.priority == self.consumers[n - 1].reg.priority {
            let start = if self.next_consumer < n {
                self.next_consumer
            } else {
                0
            };
            return (0..n).map(|k| (start + k) % n).find(|&i| {
                self.consumers[i].head_credit() > 0 && !self.consumers[i].refuses(origin)
            });
        }
        let mut a = 0;
        while a < n {
            let priority = self.consumers[a].reg.priority;
            let len = self.consumers[a..]
                .iter()
                .take_while(|c| c.reg.priority == priority)
                .count();
            let start = if (a..a + len).contains(&self.next_consumer) {
                self.next_consumer - a
            } else {
                0
            };
            if let Some(i) = (0..len).map(|k| a + (start + k) % len).find(|&i| {
                self.consumers[i].head_credit() > 0 && !self.consumers[i].refuses(origin)
            }) {
                return Some(i);
            }
            a += len;
        }
        None
    }

    /// Delivers ready entry `i` of priority `p` to consumer `ci`; `false`
    /// (and the entry stays) if the consumer's session has gone or its
    /// subscription's shared credit is gone.
    fn deliver(
        &mut self,
        p: usize,
        arrival: u64,
        ci: usize,
        group: Option<GroupMember>,
        assigns: bool,
        effects: &mut Vec<Effect>,
    ) -> bool {
        let Some(mut entry) = self.ready[p].remove(&arrival) else {
            return false;
        };
        self.took(&entry);
        let Some(message) = entry.message.clone() else {
            self.insert_ready(entry);
            return false;
        };
        let consumer = &mut self.consumers[ci];
        if let Some(shared) = &consumer.reg.shared
            && !shared.take(consumer.reg.prefetch)
        {
            // Another destination of the subscription took the last of its
            // credit meanwhile: choose again.
            self.insert_ready(entry);
            return false;
        }
        entry.deliveries += 1;
        let delivery = Delivery {
            sub: consumer.reg.sub,
            consumer: consumer.reg.id,
            message,
            deliveries: entry.deliveries,
            stored: entry.stored,
            dropped: self.dropped_since_delivery,
            note: if assigns {
                Note::FirstOfGroup
            } else {
                Note::Plain
            },
        };
        if consumer.reg.tx.send(delivery).is_err() {
            // The session has gone; its unsubscribe is on the way.
            consumer.gone = true;
            if let Some(shared) = &consumer.reg.shared {
                shared.release(1);
            }
            entry.deliveries -= 1;
            self.insert_ready(entry);
            return false;
        }
        consumer.inflight += 1;
        let id = consumer.reg.id;
        if entry.stored && consumer.reg.records_deliveries {
            effects.push(Effect::Deliveries {
                seq: entry.seq,
                deliveries: entry.deliveries,
            });
        }
        if let (Some(groups), Some(member)) = (&mut self.groups, group) {
            if assigns {
                groups.assign(member.key, id);
            } else if member.closes() {
                groups.close(member.key);
                // Selective consumers passed over the group's messages.
                self.rewind_all();
            }
        }
        self.entered_flight(&entry);
        self.delivered += 1;
        self.dropped_since_delivery = 0;
        if self.exclusive_owner != Some(id) {
            self.next_consumer = ci + 1;
        }
        self.inflight
            .insert(entry.seq, (entry, Holder::Consumer(id)));
        true
    }

    /// Removes expired ready messages.
    pub(crate) fn sweep_expired(&mut self, now_ms: u64, effects: &mut Vec<Effect>) {
        if self.expiring == 0 {
            return;
        }
        for p in 0..10 {
            let expired: Vec<u64> = self.ready[p]
                .iter()
                .filter(|(_, e)| e.is_expired(now_ms))
                .map(|(&arrival, _)| arrival)
                .collect();
            for arrival in expired {
                let Some(e) = self.ready[p].remove(&arrival) else {
                    continue;
                };
                self.took(&e);
                if let Some((_, w, _)) = self.loading.remove(&e.seq) {
                    self.loading_bytes -= w as usize;
                }
                self.expired += 1;
                effects.push(Effect::Expired {
                    seq: e.seq,
                    message: e.message,
                    stored: e.stored,
                    tag: self.tag,
                });
            }
        }
    }

    /// Whether it holds nothing and nobody: no message ready, in flight,
    /// held by a transaction or being read, and no consumer.
    pub(crate) fn is_idle(&self) -> bool {
        self.restoring.is_none()
            && self.ready_count == 0
            && self.inflight.is_empty()
            && self.delayed.is_empty()
            && self.loading.is_empty()
            && self.consumers.is_empty()
    }

    /// Drops every message (a temporary queue being deleted).
    pub(crate) fn clear(&mut self) {
        self.ready = Default::default();
        self.inflight.clear();
        self.delayed.clear();
        self.loading.clear();
        self.loading_bytes = 0;
        self.ready_count = 0;
        self.pinned = 0;
        self.paged_in = 0;
        self.inflight_bytes = 0;
        self.inflight_pageable = 0;
        self.expiring = 0;
    }

    /// What a queue browser is shown: every message ready or in flight, in
    /// dispatch order (priority, then arrival), with the bodies that are in
    /// memory.
    pub(crate) fn snapshot(&self, now_ms: u64) -> Vec<Snap> {
        let mut out = Vec::with_capacity(self.ready_count + self.inflight.len());
        for p in (0..10).rev() {
            let mut flying: Vec<&Entry> = self
                .inflight
                .values()
                .map(|(e, _)| e)
                .filter(|e| e.priority as usize == p)
                .collect();
            flying.sort_unstable_by_key(|e| e.arrival);
            let mut flying = flying.into_iter().peekable();
            for e in self.ready[p].values() {
                while let Some(f) = flying.next_if(|f| f.arrival < e.arrival) {
                    out.push(snap(f, f.deliveries));
                }
                if !e.is_expired(now_ms) {
                    out.push(snap(e, e.deliveries + 1));
                }
            }
            out.extend(flying.map(|f| snap(f, f.deliveries)));
        }
        out
    }

    /// Takes ready and delayed messages out for an operator (a purge, a
    /// move): those whose seq is in `only`, or any, at most `max`, in
    /// dispatch order. Messages in flight stay with their consumers: an
    /// operator does not pull a message from under a client that may be
    /// acknowledging it.
    pub(crate) fn take_for_operator(
        &mut self,
        only: Option<&std::collections::HashSet<u64>>,
        max: usize,
    ) -> Vec<Taken> {
        let picked = |e: &Entry| only.is_none_or(|o| o.contains(&e.seq));
        let mut keys = Vec::new();
        'scan: for p in (0..10).rev() {
            for (arrival, e) in &self.ready[p] {
                if keys.len() >= max {
                    break 'scan;
                }
                if picked(e) {
                    keys.push((p, *arrival));
                }
            }
        }
        let mut out = Vec::with_capacity(keys.len());
        for (p, arrival) in keys {
            if let Some(e) = self.ready[p].remove(&arrival) {
                self.took(&e);
                if let Some((_, w, _)) = self.loading.remove(&e.seq) {
                    self.loading_bytes -= w as usize;
                }
                out.push(Taken(e));
            }
        }
        let room = max - out.len();
        if room > 0 {
            out.extend(self.delayed.take_where(room, picked).into_iter().map(Taken));
        }
        out
    }

    /// Puts back messages an operator took and could not move: each goes
    /// back to its place (its arrival is kept).
    pub(crate) fn give_back(&mut self, taken: Vec<Taken>) {
        for Taken(e) in taken {
            self.insert_ready(e);
        }
    }

    /// When the oldest message it holds was sent (ms since the epoch), as
    /// far as it can tell cheaply: the head of each priority's ready list
    /// (kept in arrival order) and what is in flight. A head whose body is
    /// paged out shows the first message behind it that is in memory.
    pub(crate) fn oldest_timestamp(&self) -> Option<u64> {
        const LOOK: usize = 16;
        self.ready
            .iter()
            .flat_map(|q| q.values().take(LOOK))
            .chain(self.inflight.values().map(|(e, _)| e))
            .filter_map(|e| e.message.as_ref().map(|m| m.timestamp))
            .min()
    }

    /// Every stored message it holds (for removing a durable subscription).
    pub(crate) fn stored_seqs(&self) -> Vec<u64> {
        self.ready
            .iter()
            .flat_map(BTreeMap::values)
            .chain(self.inflight.values().map(|(e, _)| e))
            .chain(self.delayed.entries())
            .filter(|e| e.stored)
            .map(|e| e.seq)
            .collect()
    }
}

/// Drops the bodies of the stored entries among `entries`, in the order
/// given, until `bytes` are freed (they are on disk and read back when
/// their turn comes); returns the bytes freed, for the caller to account.
fn drop_stored_bodies<'a>(entries: impl Iterator<Item = &'a mut Entry>, bytes: usize) -> usize {
    let mut freed = 0;
    if bytes == 0 {
        return 0;
    }
    for e in entries {
        if e.stored && e.message.take().is_some() {
            freed += e.weight as usize;
            if freed >= bytes {
                break;
            }
        }
    }
    freed
}

fn snap(e: &Entry, deliveries: u32) -> Snap {
    Snap {
        seq: e.seq,
        deliveries: deliveries.max(1),
        message: e.message.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::model::test_message as msg;

    fn policy() -> Policy {
        Policy {
            max_redeliveries: 2,
            redelivery: Redelivery::IMMEDIATE,
            is_dead_letter_queue: false,
            memory_limit: usize::MAX,
            pages: false,
            pending_limit: None,
            backlog_limit: usize::MAX,
            abort_after: None,
            groups: Some(16),
        }
    }

    /// A plain consumer `id` of prefetch `prefetch` delivering to `tx`.
    fn reg(id: u64, prefetch: u32, tx: DeliveryTx) -> ConsumerReg {
        ConsumerReg::plain(id, prefetch, tx)
    }

    fn consumer(d: &mut Dispatcher, id: u64, prefetch: u32) -> mpsc::UnboundedReceiver<Delivery> {
        consumer_with(d, id, prefetch, 0, false)
    }

    fn drain(rx: &mut mpsc::UnboundedReceiver<Delivery>) -> Vec<(u64, u32)> {
        let mut v = Vec::new();
        while let Ok(d) = rx.try_recv() {
            v.push((d.message.seq, d.deliveries));
        }
        v
    }

    #[test]
    fn priority_then_arrival_and_credit() {
        let mut d = Dispatcher::new(policy());
        for (seq, p) in [(1, 4), (2, 9), (3, 4), (4, 0), (5, 9)] {
            d.push(msg(seq, p), true);
        }
        let mut rx = consumer(&mut d, 1, 3);
        let mut fx = Vec::new();
        d.dispatch(0, &mut fx);
        assert_eq!(drain(&mut rx), vec![(2, 1), (5, 1), (1, 1)]);
        d.ack(ConsumerId(1), &[2]);
        d.dispatch(0, &mut fx);
        assert_eq!(drain(&mut rx), vec![(3, 1)]);
        assert!(fx.is_empty());
    }

    #[test]
    fn round_robin_and_return_on_close_in_order() {
        let mut d = Dispatcher::new(policy());
        let mut a = consumer(&mut d, 1, 10);
        let mut b = consumer(&mut d, 2, 10);
        for seq in 1..=6 {
            d.push(msg(seq, 4), true);
        }
        let mut fx = Vec::new();
        d.dispatch(0, &mut fx);
        assert_eq!(drain(&mut a), vec![(1, 1), (3, 1), (5, 1)]);
        assert_eq!(drain(&mut b), vec![(2, 1), (4, 1), (6, 1)]);
        d.remove_consumer(ConsumerId(2), &mut fx);
        d.remove_consumer(ConsumerId(1), &mut fx);
        let mut c = consumer(&mut d, 3, 10);
        d.dispatch(0, &mut fx);
        assert_eq!(
            drain(&mut c),
            vec![(1, 2), (2, 2), (3, 2), (4, 2), (5, 2), (6, 2)]
        );
    }

    #[test]
    fn nack_redelivers_then_dead_letters() {
        let mut d = Dispatcher::new(policy());
        let mut rx = consumer(&mut d, 1, 1);
        d.push(msg(1, 4), true);
        let mut fx = Vec::new();
        for n in 1..=3 {
            d.dispatch(0, &mut fx);
            assert_eq!(drain(&mut rx), vec![(1, n)]);
            d.nack(ConsumerId(1), &[1], false, &mut fx);
        }
        let dead: Vec<_> = fx
            .iter()
            .filter(|e| matches!(e, Effect::DeadLetter { message, .. } if message.seq == 1))
            .collect();
        assert_eq!(dead.len(), 1);
        assert_eq!(d.stats().dead_lettered, 1);
        assert_eq!(
            fx.iter()
                .filter(|e| matches!(e, Effect::Deliveries { seq: 1, .. }))
                .count(),
            2
        );
        assert_eq!(d.stats().ready + d.stats().inflight, 0);
    }

    #[test]
    fn a_poison_nack_dead_letters_at_once() {
        let mut d = Dispatcher::new(policy());
        let mut rx = consumer(&mut d, 1, 1);
        d.push(msg(1, 4), true);
        let mut fx = Vec::new();
        d.dispatch(0, &mut fx);
        assert_eq!(drain(&mut rx), vec![(1, 1)]);
        d.nack(ConsumerId(1), &[1], true, &mut fx);
        assert!(
            fx.iter().any(
                |e| matches!(e, Effect::DeadLetter { message, reason, .. } if message.seq == 1 && reason.contains("poison"))
            )
        );
        d.dispatch(0, &mut fx);
        assert!(
            drain(&mut rx).is_empty(),
            "a poisoned message is not redelivered"
        );
        assert_eq!(d.stats().ready + d.stats().inflight, 0);
    }

    #[test]
    fn a_delayed_redelivery_waits_without_blocking_the_messages_behind_it() {
        let mut d = Dispatcher::new(Policy {
            redelivery: Redelivery {
                initial_ms: 60_000,
                delay_ms: 60_000,
                ..Redelivery::IMMEDIATE
            },
            ..policy()
        });
        let mut rx = consumer(&mut d, 1, 1);
        d.push(msg(1, 4), true);
        d.push(msg(2, 4), true);
        let mut fx = Vec::new();
        d.dispatch(0, &mut fx);
        assert_eq!(drain(&mut rx), vec![(1, 1)]);
        d.nack(ConsumerId(1), &[1], false, &mut fx);
        let until = match fx.as_slice() {
            [
                Effect::Delayed {
                    seq: 1,
                    deliveries: 1,
                    until_ms,
                },
            ] => *until_ms,
            other => panic!("{other:?}"),
        };
        assert!(until >= crate::model::now_ms() + 59_000);
        assert_eq!(d.next_due(), Some(until));
        assert_eq!(d.stats().delayed, 1);
        // Message 2 goes while 1 waits.
        d.dispatch(crate::model::now_ms(), &mut fx);
        assert_eq!(drain(&mut rx), vec![(2, 1)]);
        d.ack(ConsumerId(1), &[2]);
        d.dispatch(crate::model::now_ms(), &mut fx);
        assert!(drain(&mut rx).is_empty(), "not before it is due");
        assert!(!d.is_idle());
        assert_eq!(d.stored_seqs(), vec![1]);
        d.dispatch(until, &mut fx);
        assert_eq!(drain(&mut rx), vec![(1, 2)]);
        assert_eq!((d.stats().delayed, d.next_due()), (0, None));
        // A consumer that goes leaves its messages for at once.
        d.remove_consumer(ConsumerId(1), &mut fx);
        assert_eq!(d.stats().ready, 1);
    }

    #[test]
    fn a_restored_message_waits_out_the_rest_of_its_delay() {
        let mut d = Dispatcher::new(policy());
        let mut rx = consumer(&mut d, 1, 10);
        let due = crate::model::now_ms() + 60_000;
        for (seq, not_before) in [(1, due), (2, 0)] {
            let m = msg(seq, 4);
            d.restore(StoredMessage {
                key: crate::store::StoreKey::Queue("q".into()),
                seq,
                priority: 4,
                expires: 0,
                weight: m.weight() as u32,
                deliveries: 1,
                not_before,
                message: Some(m),
                schedule: None,
            });
        }
        let mut fx = Vec::new();
        d.dispatch(crate::model::now_ms(), &mut fx);
        assert_eq!(drain(&mut rx), vec![(2, 2)]);
        d.dispatch(due, &mut fx);
        assert_eq!(drain(&mut rx), vec![(1, 2)]);
    }

    fn stored(seq: u64, priority: u8) -> StoredMessage {
        let m = msg(seq, priority);
        StoredMessage {
            key: crate::store::StoreKey::Queue("q".into()),
            seq,
            priority,
            expires: 0,
            weight: m.weight() as u32,
            deliveries: 0,
            not_before: 0,
            message: Some(m),
            schedule: None,
        }
    }

    #[test]
    fn while_restoring_nothing_is_delivered_and_new_messages_queue_behind_the_restored() {
        let mut d = Dispatcher::new(policy());
        let mut rx = consumer(&mut d, 1, 100);
        let mut fx = Vec::new();
        d.begin_restore();
        assert!(!d.is_idle(), "a restoring queue is not reclaimed");
        d.restore(stored(1, 4));
        // Sent after the takeover, before the rest of recovery's messages.
        d.push(msg(10, 4), true);
        d.dispatch(0, &mut fx);
        assert!(drain(&mut rx).is_empty(), "nothing goes while restoring");
        d.restore(stored(2, 4));
        d.restore(stored(3, 9));
        d.push(msg(11, 9), true);
        d.restore(stored(4, 4));
        d.dispatch(0, &mut fx);
        assert!(drain(&mut rx).is_empty());
        d.end_restore();
        d.dispatch(0, &mut fx);
        let order: Vec<u64> = drain(&mut rx).into_iter().map(|(seq, _)| seq).collect();
        assert_eq!(order, vec![3, 11, 1, 2, 4, 10]);
        // After the restore, arrivals go on from the new messages'.
        d.push(msg(12, 4), true);
        d.restore(stored(5, 4));
        d.dispatch(0, &mut fx);
        let order: Vec<u64> = drain(&mut rx).into_iter().map(|(seq, _)| seq).collect();
        assert_eq!(order, vec![12, 5]);
        assert_eq!(d.stats().ready, 0);
    }

    #[test]
    fn transaction_hold_commit_and_rollback() {
        let mut d = Dispatcher::new(policy());
        let mut rx = consumer(&mut d, 1, 2);
        for seq in 1..=4 {
            d.push(msg(seq, 4), true);
        }
        let mut fx = Vec::new();
        d.dispatch(0, &mut fx);
        assert_eq!(drain(&mut rx), vec![(1, 1), (2, 1)]);
        d.hold(ConsumerId(1), &[1, 2]);
        d.dispatch(0, &mut fx);
        assert_eq!(drain(&mut rx), vec![(3, 1), (4, 1)]);
        // Closing the consumer does not return what the transaction holds.
        d.remove_consumer(ConsumerId(1), &mut fx);
        assert_eq!(d.stats().ready, 2);
        d.commit(&[1]);
        d.rollback(&[2], &mut fx);
        let mut rx = consumer(&mut d, 2, 10);
        d.dispatch(0, &mut fx);
        assert_eq!(drain(&mut rx), vec![(2, 2), (3, 2), (4, 2)]);
        assert_eq!(d.stats().acked, 1);
    }

    #[test]
    fn expired_messages_are_not_delivered() {
        let mut d = Dispatcher::new(policy());
        let mut m = (*msg(1, 4)).clone();
        m.expires = 100;
        d.push(Arc::new(m), true);
        d.push(msg(2, 4), true);
        let mut fx = Vec::new();
        d.sweep_expired(50, &mut fx);
        assert!(fx.is_empty());
        let mut rx = consumer(&mut d, 1, 10);
        d.dispatch(100, &mut fx);
        assert_eq!(drain(&mut rx), vec![(2, 1)]);
        assert!(matches!(&fx[..], [Effect::Expired { seq: 1, .. }]));
        assert_eq!(d.stats().expired, 1);
        // What is left in memory is the one in flight.
        assert_eq!(d.stats().memory_bytes, msg(2, 4).weight());
        d.ack(ConsumerId(1), &[2]);
        assert_eq!(d.stats().memory_bytes, 0);
    }

    #[test]
    fn a_consumer_whose_session_is_gone_gets_nothing() {
        let mut d = Dispatcher::new(policy());
        let rx = consumer(&mut d, 1, 10);
        drop(rx);
        let mut live = consumer(&mut d, 2, 10);
        d.push(msg(1, 4), true);
        d.push(msg(2, 4), true);
        let mut fx = Vec::new();
        d.dispatch(0, &mut fx);
        assert_eq!(drain(&mut live), vec![(1, 1), (2, 1)]);
    }

    #[test]
    fn bodies_beyond_the_memory_limit_are_paged_out_and_read_back_in_order() {
        let weight = msg(1, 4).weight();
        let mut d = Dispatcher::new(Policy {
            memory_limit: weight * 2,
            pages: true,
            ..policy()
        });
        for seq in 1..=5 {
            d.push(msg(seq, 4), true);
        }
        // Two bodies stay in memory, three are paged out.
        assert_eq!(d.stats().memory_bytes, weight * 2);
        assert!(d.accepting(), "stored messages never hold producers back");
        let mut rx = consumer(&mut d, 1, 10);
        let mut fx = Vec::new();
        d.dispatch(0, &mut fx);
        assert_eq!(drain(&mut rx), vec![(1, 1), (2, 1)]);
        // Two bodies in flight fill the budget: nothing is read back until
        // they are acknowledged, whatever the consumer's credit.
        assert!(d.wanted_loads().is_empty());
        d.ack(ConsumerId(1), &[1, 2]);
        let want = d.wanted_loads();
        assert_eq!(want, vec![3, 4]);
        assert!(d.wanted_loads().is_empty(), "already being loaded");
        // 4 arrives first: 3 still blocks it.
        d.loaded(vec![(4, Ok(msg(4, 4)))], &mut fx);
        d.dispatch(0, &mut fx);
        assert!(drain(&mut rx).is_empty());
        d.loaded(vec![(3, Ok(msg(3, 4)))], &mut fx);
        d.dispatch(0, &mut fx);
        assert_eq!(drain(&mut rx), vec![(3, 1), (4, 1)]);
        d.ack(ConsumerId(1), &[3, 4]);
        assert_eq!(d.wanted_loads(), vec![5]);
        d.loaded(vec![(5, Ok(msg(5, 4)))], &mut fx);
        d.dispatch(0, &mut fx);
        assert_eq!(drain(&mut rx), vec![(5, 1)]);
        assert!(fx.is_empty());
    }

    #[test]
    fn bodies_kept_behind_the_head_are_dropped_again_to_read_the_head_back() {
        let weight = msg(1, 4).weight();
        let mut d = Dispatcher::new(Policy {
            memory_limit: weight * 2,
            pages: true,
            ..policy()
        });
        for seq in 1..=5 {
            d.push(msg(seq, 4), true);
        }
        let mut rx = consumer(&mut d, 1, 10);
        let mut fx = Vec::new();
        d.dispatch(0, &mut fx);
        assert_eq!(drain(&mut rx), vec![(1, 1), (2, 1)]);
        d.ack(ConsumerId(1), &[1, 2]);
        // Room again: 6 and 7 keep their bodies, behind 3 to 5 on disk,
        // and fill the budget.
        d.push(msg(6, 4), true);
        d.push(msg(7, 4), true);
        assert_eq!(d.stats().memory_bytes, weight * 2);
        // The head is read back all the same, in place of the last body.
        assert_eq!(d.wanted_loads(), vec![3]);
        d.loaded(vec![(3, Ok(msg(3, 4)))], &mut fx);
        d.dispatch(0, &mut fx);
        assert_eq!(drain(&mut rx), vec![(3, 1)]);
        d.ack(ConsumerId(1), &[3]);
        // The rest follows, in order.
        let mut got = Vec::new();
        for _ in 0..10 {
            for load in d.wanted_loads() {
                d.loaded(vec![(load, Ok(msg(load, 4)))], &mut fx);
            }
            d.dispatch(0, &mut fx);
            for (seq, _) in drain(&mut rx) {
                d.ack(ConsumerId(1), &[seq]);
                got.push(seq);
            }
        }
        assert_eq!(got, vec![4, 5, 6, 7]);
        assert!(fx.is_empty());
        assert_eq!(d.stats().memory_bytes, 0);
    }

    #[test]
    fn reading_back_stops_at_the_broker_wide_budget() {
        let weight = msg(1, 4).weight();
        let budget = crate::memory::MemoryBudget::new(weight as u64 * 3);
        let mut d = Dispatcher::new(Policy {
            memory_limit: 0,
            pages: true,
            ..policy()
        })
        .with_memory(budget.clone());
        for seq in 1..=3 {
            d.push(msg(seq, 4), true);
        }
        let _rx = consumer(&mut d, 1, 10);
        // Nothing resident: one body is read anyway, so a message larger
        // than the limit still goes out.
        assert_eq!(d.wanted_loads(), vec![1]);
        // Something else holds the whole budget: nothing more is read.
        let _held = budget.charge(weight * 3);
        let mut d = Dispatcher::new(Policy {
            memory_limit: usize::MAX,
            pages: true,
            ..policy()
        })
        .with_memory(budget.clone());
        d.push(msg(1, 4), true);
        assert_eq!(d.stats().memory_bytes, 0, "paged out at once");
        let _rx = consumer(&mut d, 1, 10);
        assert_eq!(d.wanted_loads(), vec![1], "the first body is read anyway");
        d.push(msg(2, 4), true);
        assert!(d.wanted_loads().is_empty());
    }

    #[test]
    fn an_unreadable_body_is_dropped_and_reported() {
        let mut d = Dispatcher::new(Policy {
            memory_limit: 0,
            pages: true,
            ..policy()
        });
        d.push(msg(1, 4), true);
        d.push(msg(2, 4), true);
        let mut rx = consumer(&mut d, 1, 10);
        let mut fx = Vec::new();
        assert_eq!(d.wanted_loads(), vec![1]);
        let err = StoreError::Read {
            seq: 1,
            reason: "gone".into(),
        };
        d.loaded(vec![(1, Err(err))], &mut fx);
        assert_eq!(d.wanted_loads(), vec![2]);
        d.loaded(vec![(2, Ok(msg(2, 4)))], &mut fx);
        d.dispatch(0, &mut fx);
        assert_eq!(drain(&mut rx), vec![(2, 1)]);
        assert!(matches!(&fx[..], [Effect::Lost { seq: 1, .. }]));
    }

    fn consumer_with(
        d: &mut Dispatcher,
        id: u64,
        prefetch: u32,
        priority: i8,
        exclusive: bool,
    ) -> mpsc::UnboundedReceiver<Delivery> {
        let (tx, rx) = mpsc::unbounded_channel();
        d.add_consumer(ConsumerReg {
            priority,
            exclusive,
            ..reg(id, prefetch, tx)
        });
        rx
    }

    fn grouped(seq: u64, group: &str, group_seq: Option<&str>) -> Arc<Message> {
        use crate::core::groups::{GROUP_ID, GROUP_SEQ};
        use crate::model::Value;
        let mut m = (*msg(seq, 4)).clone();
        let mut props = vec![(GROUP_ID.to_owned(), Value::String(group.into()))];
        if let Some(s) = group_seq {
            props.push((GROUP_SEQ.to_owned(), Value::String(s.into())));
        }
        m.properties = props.into_iter().collect();
        Arc::new(m)
    }

    fn drain_notes(rx: &mut mpsc::UnboundedReceiver<Delivery>) -> Vec<(u64, bool)> {
        let mut v = Vec::new();
        while let Ok(d) = rx.try_recv() {
            v.push((d.message.seq, d.note == Note::FirstOfGroup));
        }
        v
    }

    #[test]
    fn a_group_goes_to_one_consumer_at_a_time_and_moves_when_it_leaves() {
        let mut d = Dispatcher::new(policy());
        let mut a = consumer(&mut d, 1, 10);
        let mut b = consumer(&mut d, 2, 10);
        for (seq, g) in [(1, "x"), (2, "y"), (3, "x"), (4, "y"), (5, "x")] {
            d.push(grouped(seq, g, None), true);
        }
        let mut fx = Vec::new();
        d.dispatch(0, &mut fx);
        assert_eq!(drain_notes(&mut a), vec![(1, true), (3, false), (5, false)]);
        assert_eq!(drain_notes(&mut b), vec![(2, true), (4, false)]);
        // a leaves without acknowledging 3 and 5: group x moves to b, and
        // its first delivery there is marked.
        d.ack(ConsumerId(1), &[1]);
        d.remove_consumer(ConsumerId(1), &mut fx);
        d.dispatch(0, &mut fx);
        assert_eq!(drain_notes(&mut b), vec![(3, true), (5, false)]);
    }

    #[test]
    fn a_group_waits_for_its_owner_without_blocking_other_groups() {
        let mut d = Dispatcher::new(policy());
        let mut a = consumer(&mut d, 1, 1);
        let mut b = consumer(&mut d, 2, 10);
        for (seq, g) in [(1, "x"), (2, "x"), (3, "x"), (4, "y"), (5, "z")] {
            d.push(grouped(seq, g, None), true);
        }
        let mut fx = Vec::new();
        d.dispatch(0, &mut fx);
        // x belongs to a (prefetch 1): 2 and 3 wait for it; y and z go on.
        assert_eq!(drain_notes(&mut a), vec![(1, true)]);
        assert_eq!(drain_notes(&mut b), vec![(4, true), (5, true)]);
        d.ack(ConsumerId(1), &[1]);
        d.dispatch(0, &mut fx);
        assert_eq!(drain_notes(&mut a), vec![(2, false)]);
        assert!(drain_notes(&mut b).is_empty());
    }

    #[test]
    fn a_new_group_goes_to_the_consumer_owning_fewest() {
        let mut d = Dispatcher::new(policy());
        let mut a = consumer(&mut d, 1, 10);
        d.push(grouped(1, "x", None), true);
        d.push(grouped(2, "y", None), true);
        let mut fx = Vec::new();
        d.dispatch(0, &mut fx);
        assert_eq!(drain_notes(&mut a), vec![(1, true), (2, true)]);
        // b joins: the next two new groups both go to it (a owns two).
        let mut b = consumer(&mut d, 2, 10);
        d.push(grouped(3, "z", None), true);
        d.push(grouped(4, "w", None), true);
        d.dispatch(0, &mut fx);
        assert_eq!(drain_notes(&mut b), vec![(3, true), (4, true)]);
        assert!(drain_notes(&mut a).is_empty());
    }

    #[test]
    fn group_sequence_minus_one_closes_and_one_restarts_a_group() {
        let mut d = Dispatcher::new(policy());
        let mut a = consumer(&mut d, 1, 10);
        let mut b = consumer(&mut d, 2, 10);
        d.push(grouped(1, "x", None), true);
        d.push(grouped(2, "x", Some("-1")), true);
        let mut fx = Vec::new();
        d.dispatch(0, &mut fx);
        assert_eq!(drain_notes(&mut a), vec![(1, true), (2, false)]);
        // Closed: the next x message is assigned afresh (round-robin: b).
        d.push(grouped(3, "x", None), true);
        d.dispatch(0, &mut fx);
        assert_eq!(drain_notes(&mut b), vec![(3, true)]);
        // JMSXGroupSeq 1 starts the group over wherever it goes.
        d.push(grouped(4, "x", Some("1")), true);
        d.dispatch(0, &mut fx);
        assert_eq!(drain_notes(&mut a), vec![(4, true)]);
    }

    #[test]
    fn higher_priority_consumers_with_credit_are_served_first() {
        let mut d = Dispatcher::new(policy());
        let mut low = consumer_with(&mut d, 1, 10, 1, false);
        let mut high = consumer_with(&mut d, 2, 2, 10, false);
        let mut high2 = consumer_with(&mut d, 3, 2, 10, false);
        for seq in 1..=6 {
            d.push(msg(seq, 4), true);
        }
        let mut fx = Vec::new();
        d.dispatch(0, &mut fx);
        // Round-robin among the high ones until their credit is gone.
        assert_eq!(drain(&mut high), vec![(1, 1), (3, 1)]);
        assert_eq!(drain(&mut high2), vec![(2, 1), (4, 1)]);
        assert_eq!(drain(&mut low), vec![(5, 1), (6, 1)]);
    }

    #[test]
    fn an_exclusive_consumer_gets_everything_and_the_next_takes_over() {
        let mut d = Dispatcher::new(policy());
        let mut plain = consumer_with(&mut d, 1, 10, 0, false);
        let mut first = consumer_with(&mut d, 2, 10, 0, true);
        let mut second = consumer_with(&mut d, 3, 10, 0, true);
        d.push(msg(1, 4), true);
        d.push(msg(2, 4), true);
        let mut fx = Vec::new();
        d.dispatch(0, &mut fx);
        assert_eq!(drain(&mut first), vec![(1, 1), (2, 1)]);
        assert!(drain(&mut plain).is_empty() && drain(&mut second).is_empty());
        d.remove_consumer(ConsumerId(2), &mut fx);
        d.dispatch(0, &mut fx);
        assert_eq!(drain(&mut second), vec![(1, 2), (2, 2)]);
        // A higher-priority exclusive consumer takes over at once.
        let mut boss = consumer_with(&mut d, 4, 10, 5, true);
        d.push(msg(3, 4), true);
        d.dispatch(0, &mut fx);
        assert_eq!(drain(&mut boss), vec![(3, 1)]);
        assert!(drain(&mut plain).is_empty());
    }

    #[test]
    fn a_snapshot_shows_ready_and_in_flight_messages_in_dispatch_order() {
        let mut d = Dispatcher::new(policy());
        for (seq, p) in [(1, 4), (2, 9), (3, 4), (4, 4)] {
            d.push(msg(seq, p), true);
        }
        let mut rx = consumer(&mut d, 1, 2);
        d.dispatch(0, &mut Vec::new());
        assert_eq!(drain(&mut rx), vec![(2, 1), (1, 1)]);
        let snap: Vec<(u64, u32)> = d
            .snapshot(0)
            .iter()
            .map(|s| (s.seq, s.deliveries))
            .collect();
        assert_eq!(snap, vec![(2, 1), (1, 1), (3, 1), (4, 1)]);
        // Taking a snapshot takes nothing.
        assert_eq!(d.stats().ready, 2);
        assert_eq!(d.stats().inflight, 2);
    }

    #[test]
    fn shared_credit_bounds_a_subscription_across_destinations() {
        let shared = Arc::new(SharedCredit::default());
        let (tx, mut rx) = mpsc::unbounded_channel();
        let one_sub = |id| ConsumerReg {
            sub: SubKey(1),
            shared: Some(shared.clone()),
            ..reg(id, 2, tx.clone())
        };
        let (mut a, mut b) = (Dispatcher::new(policy()), Dispatcher::new(policy()));
        a.add_consumer(one_sub(1));
        b.add_consumer(one_sub(2));
        for seq in 1..=2 {
            a.push(msg(seq, 4), true);
        }
        b.push(msg(3, 4), true);
        let mut fx = Vec::new();
        a.dispatch(0, &mut fx);
        b.dispatch(0, &mut fx);
        assert_eq!(drain(&mut rx), vec![(1, 1), (2, 1)], "prefetch 2 in all");
        // b found no credit: freeing some says b must be woken.
        a.ack(ConsumerId(1), &[1]);
        assert!(shared.release(1));
        b.dispatch(0, &mut fx);
        assert_eq!(drain(&mut rx), vec![(3, 1)]);
        a.ack(ConsumerId(1), &[2]);
        assert!(!shared.release(1), "nobody waits");
    }

    #[test]
    fn a_no_local_queue_consumer_leaves_its_own_messages_to_others() {
        let mut d = Dispatcher::new(policy());
        let (tx, mut own) = mpsc::unbounded_channel();
        d.add_consumer(ConsumerReg {
            no_local: Some(7),
            ..reg(1, 10, tx)
        });
        d.push_from(msg(1, 4), true, 7, None);
        d.push_from(msg(2, 4), true, 8, None);
        let mut fx = Vec::new();
        d.dispatch(0, &mut fx);
        assert_eq!(drain(&mut own), vec![(2, 1)]);
        let mut other = consumer(&mut d, 2, 10);
        d.dispatch(0, &mut fx);
        assert_eq!(drain(&mut other), vec![(1, 1)]);
    }

    #[test]
    fn messages_that_cannot_be_paged_hold_producers_back() {
        let weight = msg(1, 4).weight();
        let mut d = Dispatcher::new(Policy {
            memory_limit: weight,
            pages: true,
            ..policy()
        });
        d.push(msg(1, 4), false);
        assert!(!d.accepting());
        let mut rx = consumer(&mut d, 1, 10);
        d.dispatch(0, &mut Vec::new());
        assert_eq!(drain(&mut rx), vec![(1, 1)]);
        assert!(d.accepting());
    }
}
