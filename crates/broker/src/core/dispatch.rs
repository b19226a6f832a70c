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

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::Message;
use crate::store::{StoreError, StoredMessage};

/// Broker-wide id of one subscription at one destination.
pub(crate) type ConsumerId = u64;
/// A session's own key for one of its subscriptions.
pub(crate) type SubKey = u64;

/// A message handed to a session for one of its subscriptions.
#[derive(Debug)]
pub(crate) struct Delivery {
    pub(crate) sub: SubKey,
    pub(crate) message: Arc<Message>,
    /// 1 on first delivery; more means redelivered.
    pub(crate) deliveries: u32,
    /// Whether the store holds the message, so its ack must remove it.
    pub(crate) stored: bool,
}

/// The channel deliveries travel on. Unbounded by type, bounded by credit:
/// a dispatcher never has more than `prefetch` messages in flight per
/// consumer, so it never holds more than the session's total prefetch. It
/// must not block, because destinations never wait on sessions (sessions do
/// wait on destinations; waits in both directions could deadlock).
pub(crate) type DeliveryTx = mpsc::UnboundedSender<Delivery>;

/// A consumer as a destination sees it.
#[derive(Debug)]
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
}

#[derive(Debug)]
struct Consumer {
    reg: ConsumerReg,
    inflight: u32,
    gone: bool,
}

impl Consumer {
    fn credit(&self) -> u32 {
        if self.gone {
            0
        } else {
            self.reg.prefetch.saturating_sub(self.inflight)
        }
    }
}

/// One message in a destination.
#[derive(Debug)]
struct Entry {
    seq: u64,
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
    },
    /// Drop (or dead-letter, if so configured) an expired message.
    Expired {
        seq: u64,
        message: Option<Arc<Message>>,
        stored: bool,
    },
    /// Record a stored message's delivery count (written without forcing a
    /// sync).
    Deliveries { seq: u64, deliveries: u32 },
    /// A stored message could not be read back: it is dropped.
    Lost { seq: u64, error: StoreError },
}

/// Delivery policy for one dispatcher.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    pub(crate) max_redeliveries: u32,
    /// Dead-letter queues keep their poison messages instead of
    /// dead-lettering them again.
    pub(crate) is_dead_letter_queue: bool,
    /// Bytes of message bodies to keep in memory.
    pub(crate) memory_limit: usize,
    /// Whether stored bodies can be dropped from memory and read back.
    pub(crate) pages: bool,
}

/// Counters a destination reports.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct DispatchStats {
    /// Messages waiting for a consumer.
    pub ready: usize,
    /// Messages delivered and not yet acknowledged.
    pub inflight: usize,
    /// Consumers attached.
    pub consumers: usize,
    /// Messages ever enqueued.
    pub enqueued: u64,
    /// Messages ever delivered (redeliveries included).
    pub delivered: u64,
    /// Messages ever acknowledged.
    pub acked: u64,
    /// Bytes of ready message bodies held in memory.
    pub memory_bytes: usize,
}

/// Entries read ahead of the consumers, at least.
const LOAD_AHEAD: usize = 64;
/// Most bodies requested in one load.
const LOAD_BATCH: usize = 256;

#[derive(Debug)]
pub(crate) struct Dispatcher {
    /// Ready messages, by priority (index = priority), each in arrival order.
    ready: [VecDeque<Entry>; 10],
    ready_count: usize,
    next_arrival: u64,
    inflight: HashMap<u64, (Entry, Holder)>,
    consumers: Vec<Consumer>,
    next_consumer: usize,
    expiring: usize,
    policy: Policy,
    /// Bytes of ready bodies that cannot be paged out (flow control).
    pinned: usize,
    /// Bytes of ready bodies that could be paged out.
    paged_in: usize,
    /// Bodies being read back: seq -> priority.
    loading: HashMap<u64, u8>,
    enqueued: u64,
    delivered: u64,
    acked: u64,
}

impl Dispatcher {
    pub(crate) fn new(policy: Policy) -> Dispatcher {
        Dispatcher {
            ready: Default::default(),
            ready_count: 0,
            next_arrival: 0,
            inflight: HashMap::new(),
            consumers: Vec::new(),
            next_consumer: 0,
            expiring: 0,
            policy,
            pinned: 0,
            paged_in: 0,
            loading: HashMap::new(),
            enqueued: 0,
            delivered: 0,
            acked: 0,
        }
    }

    /// Whether producers may add more: bodies that cannot be paged out are
    /// under the memory limit (producer flow control).
    pub(crate) fn accepting(&self) -> bool {
        self.pinned < self.policy.memory_limit
    }

    pub(crate) fn stats(&self) -> DispatchStats {
        DispatchStats {
            ready: self.ready_count,
            inflight: self.inflight.len(),
            consumers: self.consumers.len(),
            enqueued: self.enqueued,
            delivered: self.delivered,
            acked: self.acked,
            memory_bytes: self.pinned + self.paged_in,
        }
    }

    fn pageable(&self, e: &Entry) -> bool {
        e.stored && self.policy.pages
    }

    /// Adds a new message. `stored`: whether the store holds it (a queue's
    /// persistent messages, once durable).
    pub(crate) fn push(&mut self, message: Arc<Message>, stored: bool) {
        let entry = Entry {
            seq: message.seq,
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

    /// Adds a message found by recovery.
    pub(crate) fn restore(&mut self, m: StoredMessage) {
        let entry = Entry {
            seq: m.seq,
            arrival: 0,
            expires: m.expires,
            weight: m.weight,
            deliveries: m.deliveries,
            priority: m.priority.min(9),
            stored: true,
            message: m.message,
        };
        self.add(entry);
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
            } else if self.paged_in + w <= self.policy.memory_limit {
                self.paged_in += w;
            } else {
                // Over the limit: keep only the index entry; the body is on
                // disk and is read back before delivery.
                entry.message = None;
            }
        }
        if entry.expires != 0 {
            self.expiring += 1;
        }
        self.ready_count += 1;
        let q = &mut self.ready[entry.priority as usize];
        let pos = q.partition_point(|e| e.arrival < entry.arrival);
        q.insert(pos, entry);
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

    fn top_priority(&self) -> Option<usize> {
        (0..10).rev().find(|&p| !self.ready[p].is_empty())
    }

    pub(crate) fn add_consumer(&mut self, reg: ConsumerReg) {
        self.consumers.push(Consumer {
            reg,
            inflight: 0,
            gone: false,
        });
    }

    /// Detaches a consumer and returns what it held (not what transactions
    /// hold) to the ready list, as redelivered, in original order.
    pub(crate) fn remove_consumer(&mut self, id: ConsumerId, effects: &mut Vec<Effect>) {
        let Some(i) = self.consumers.iter().position(|c| c.reg.id == id) else {
            return;
        };
        self.consumers.remove(i);
        if self.next_consumer > i {
            self.next_consumer -= 1;
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
                self.release_entry(entry, "consumer closed", effects);
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
        if let Holder::Consumer(id) = holder
            && let Some(c) = self.consumer_mut(id)
        {
            c.inflight -= 1;
        }
        Some(entry)
    }

    /// The consumer acknowledged these messages: they are done.
    pub(crate) fn ack(&mut self, consumer: ConsumerId, seqs: &[u64]) {
        for &seq in seqs {
            if self.take(seq, Holder::Consumer(consumer)).is_some() {
                self.acked += 1;
            }
        }
    }

    /// The consumer acknowledged (or rejected) these inside a transaction:
    /// they stop counting against its credit but stay held until the
    /// transaction ends.
    pub(crate) fn hold(&mut self, consumer: ConsumerId, seqs: &[u64]) {
        for &seq in seqs {
            if let Some(entry) = self.take(seq, Holder::Consumer(consumer)) {
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
    pub(crate) fn nack(&mut self, consumer: ConsumerId, seqs: &[u64], effects: &mut Vec<Effect>) {
        for &seq in seqs {
            if let Some(entry) = self.take(seq, Holder::Consumer(consumer)) {
                self.release_entry(entry, "rejected (NACK)", effects);
            }
        }
    }

    /// The transaction that held these rolled back (or committed a NACK):
    /// redeliver or dead-letter.
    pub(crate) fn rollback(&mut self, seqs: &[u64], effects: &mut Vec<Effect>) {
        for &seq in seqs {
            if let Some(entry) = self.take(seq, Holder::Transaction) {
                self.release_entry(entry, "transaction rolled back", effects);
            }
        }
    }

    fn release_entry(&mut self, entry: Entry, why: &str, effects: &mut Vec<Effect>) {
        if entry.deliveries > self.policy.max_redeliveries && !self.policy.is_dead_letter_queue {
            // In-flight entries always have their body.
            if let Some(message) = entry.message {
                effects.push(Effect::DeadLetter {
                    reason: format!(
                        "delivered {} times, more than max-redeliveries ({}); last: {why}",
                        entry.deliveries, self.policy.max_redeliveries
                    ),
                    message,
                    stored: entry.stored,
                });
            }
        } else {
            if entry.stored {
                effects.push(Effect::Deliveries {
                    seq: entry.seq,
                    deliveries: entry.deliveries,
                });
            }
            self.insert_ready(entry);
        }
    }

    /// Credit the consumers have left in all.
    fn free_credit(&self) -> usize {
        self.consumers.iter().map(|c| c.credit() as usize).sum()
    }

    /// Bodies to read back so that the next deliveries can go out: the
    /// first entries in dispatch order whose bodies are on disk. Marks them
    /// as being loaded.
    pub(crate) fn wanted_loads(&mut self) -> Vec<u64> {
        let credit = self.free_credit();
        if credit == 0 {
            return Vec::new();
        }
        let window = (credit * 2).max(LOAD_AHEAD);
        let mut want = Vec::new();
        let mut seen = 0;
        'outer: for p in (0..10).rev() {
            for e in &self.ready[p] {
                if seen >= window || want.len() >= LOAD_BATCH {
                    break 'outer;
                }
                seen += 1;
                if e.message.is_none() && !self.loading.contains_key(&e.seq) {
                    want.push((e.seq, e.priority));
                }
            }
        }
        for &(seq, p) in &want {
            self.loading.insert(seq, p);
        }
        want.into_iter().map(|(seq, _)| seq).collect()
    }

    /// Bodies read back. An entry whose body cannot be read is dropped.
    pub(crate) fn loaded(
        &mut self,
        results: Vec<(u64, Result<Arc<Message>, StoreError>)>,
        effects: &mut Vec<Effect>,
    ) {
        for (seq, result) in results {
            let Some(p) = self.loading.remove(&seq) else {
                continue;
            };
            let q = &mut self.ready[p as usize];
            // Loads are for entries near the front.
            let Some(pos) = q.iter().position(|e| e.seq == seq) else {
                continue;
            };
            match result {
                Ok(m) => {
                    let e = &mut q[pos];
                    if e.message.is_none() {
                        e.message = Some(m);
                        self.paged_in += e.weight as usize;
                    }
                }
                Err(error) => {
                    if let Some(e) = q.remove(pos) {
                        self.took(&e);
                        effects.push(Effect::Lost { seq, error });
                    }
                }
            }
        }
    }

    /// Delivers ready messages to consumers with credit, round-robin.
    pub(crate) fn dispatch(&mut self, now_ms: u64, effects: &mut Vec<Effect>) {
        let n = self.consumers.len();
        if n == 0 {
            return;
        }
        while let Some(p) = self.top_priority() {
            let Some(ci) = (0..n)
                .map(|i| (self.next_consumer + i) % n)
                .find(|&i| self.consumers[i].credit() > 0)
            else {
                return;
            };
            let Some(front) = self.ready[p].front() else {
                return;
            };
            if front.is_expired(now_ms) {
                if let Some(e) = self.ready[p].pop_front() {
                    self.took(&e);
                    effects.push(Effect::Expired {
                        seq: e.seq,
                        message: e.message,
                        stored: e.stored,
                    });
                }
                continue;
            }
            if front.message.is_none() {
                // Its body is being read: nothing may overtake it.
                return;
            }
            let Some(mut entry) = self.ready[p].pop_front() else {
                return;
            };
            self.took(&entry);
            let Some(message) = entry.message.clone() else {
                return;
            };
            entry.deliveries += 1;
            let consumer = &mut self.consumers[ci];
            let delivery = Delivery {
                sub: consumer.reg.sub,
                message,
                deliveries: entry.deliveries,
                stored: entry.stored,
            };
            if consumer.reg.tx.send(delivery).is_err() {
                // The session has gone; its unsubscribe is on the way.
                consumer.gone = true;
                entry.deliveries -= 1;
                self.insert_ready(entry);
                continue;
            }
            consumer.inflight += 1;
            let id = consumer.reg.id;
            if entry.stored && consumer.reg.records_deliveries {
                effects.push(Effect::Deliveries {
                    seq: entry.seq,
                    deliveries: entry.deliveries,
                });
            }
            self.delivered += 1;
            self.next_consumer = (ci + 1) % n;
            self.inflight
                .insert(entry.seq, (entry, Holder::Consumer(id)));
        }
    }

    /// Removes expired ready messages.
    pub(crate) fn sweep_expired(&mut self, now_ms: u64, effects: &mut Vec<Effect>) {
        if self.expiring == 0 {
            return;
        }
        for p in 0..10 {
            if !self.ready[p].iter().any(|e| e.is_expired(now_ms)) {
                continue;
            }
            let (expired, kept): (VecDeque<Entry>, VecDeque<Entry>) =
                std::mem::take(&mut self.ready[p])
                    .into_iter()
                    .partition(|e| e.is_expired(now_ms));
            self.ready[p] = kept;
            for e in expired {
                self.took(&e);
                self.loading.remove(&e.seq);
                effects.push(Effect::Expired {
                    seq: e.seq,
                    message: e.message,
                    stored: e.stored,
                });
            }
        }
    }

    /// Drops every message (a temporary queue being deleted).
    pub(crate) fn clear(&mut self) {
        self.ready = Default::default();
        self.inflight.clear();
        self.loading.clear();
        self.ready_count = 0;
        self.pinned = 0;
        self.paged_in = 0;
        self.expiring = 0;
    }

    /// Every stored message it holds (for removing a durable subscription).
    pub(crate) fn stored_seqs(&self) -> Vec<u64> {
        self.ready
            .iter()
            .flatten()
            .chain(self.inflight.values().map(|(e, _)| e))
            .filter(|e| e.stored)
            .map(|e| e.seq)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::core::test_message as msg;

    fn policy() -> Policy {
        Policy {
            max_redeliveries: 2,
            is_dead_letter_queue: false,
            memory_limit: usize::MAX,
            pages: false,
        }
    }

    fn consumer(
        d: &mut Dispatcher,
        id: ConsumerId,
        prefetch: u32,
    ) -> mpsc::UnboundedReceiver<Delivery> {
        let (tx, rx) = mpsc::unbounded_channel();
        d.add_consumer(ConsumerReg {
            id,
            sub: id,
            prefetch,
            tx,
            records_deliveries: false,
        });
        rx
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
        d.ack(1, &[2]);
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
        d.remove_consumer(2, &mut fx);
        d.remove_consumer(1, &mut fx);
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
            d.nack(1, &[1], &mut fx);
        }
        let dead: Vec<_> = fx
            .iter()
            .filter(|e| matches!(e, Effect::DeadLetter { message, .. } if message.seq == 1))
            .collect();
        assert_eq!(dead.len(), 1);
        assert_eq!(
            fx.iter()
                .filter(|e| matches!(e, Effect::Deliveries { seq: 1, .. }))
                .count(),
            2
        );
        assert_eq!(d.stats().ready + d.stats().inflight, 0);
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
        d.hold(1, &[1, 2]);
        d.dispatch(0, &mut fx);
        assert_eq!(drain(&mut rx), vec![(3, 1), (4, 1)]);
        // Closing the consumer does not return what the transaction holds.
        d.remove_consumer(1, &mut fx);
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
        let want = d.wanted_loads();
        assert_eq!(want, vec![3, 4, 5]);
        assert!(d.wanted_loads().is_empty(), "already being loaded");
        // 4 and 5 arrive first: 3 still blocks them.
        d.loaded(vec![(4, Ok(msg(4, 4))), (5, Ok(msg(5, 4)))], &mut fx);
        d.dispatch(0, &mut fx);
        assert!(drain(&mut rx).is_empty());
        d.loaded(vec![(3, Ok(msg(3, 4)))], &mut fx);
        d.dispatch(0, &mut fx);
        assert_eq!(drain(&mut rx), vec![(3, 1), (4, 1), (5, 1)]);
        assert!(fx.is_empty());
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
        assert_eq!(d.wanted_loads(), vec![1, 2]);
        let err = StoreError::Read {
            seq: 1,
            reason: "gone".into(),
        };
        d.loaded(vec![(1, Err(err)), (2, Ok(msg(2, 4)))], &mut fx);
        d.dispatch(0, &mut fx);
        assert_eq!(drain(&mut rx), vec![(2, 1)]);
        assert!(matches!(&fx[..], [Effect::Lost { seq: 1, .. }]));
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
