//! The message list at the heart of every destination: ready messages in
//! priority-then-arrival order, messages in flight to consumers or held by a
//! transaction, and the dispatch of ready messages to consumers with credit.
//!
//! A queue owns one `Dispatcher` shared by all its consumers; a topic owns
//! one per subscription. The dispatcher does no I/O and never waits: it
//! hands deliveries to consumers through channels whose occupancy its credit
//! accounting bounds, and reports what needs storage work (dead-lettering,
//! expiry) as [`Effect`]s for its owner to carry out.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::Message;

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
}

#[derive(Debug)]
struct Consumer {
    reg: ConsumerReg,
    inflight: u32,
    gone: bool,
}

impl Consumer {
    fn has_credit(&self) -> bool {
        !self.gone && self.inflight < self.reg.prefetch
    }
}

/// Dispatch order: higher priority first, then arrival. A returned message
/// keeps its key, so it goes back exactly where it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Order {
    inverted_priority: u8,
    arrival: u64,
}

#[derive(Debug)]
struct Entry {
    message: Arc<Message>,
    deliveries: u32,
    order: Order,
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
    },
    /// Drop (or dead-letter, if so configured) an expired message.
    Expired { message: Arc<Message> },
}

/// Delivery policy for one dispatcher.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    pub(crate) max_redeliveries: u32,
    /// Dead-letter queues keep their poison messages instead of
    /// dead-lettering them again.
    pub(crate) is_dead_letter_queue: bool,
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
}

#[derive(Debug)]
pub(crate) struct Dispatcher {
    ready: BTreeMap<Order, Entry>,
    ready_weight: usize,
    next_arrival: u64,
    inflight: HashMap<u64, (Entry, Holder)>,
    consumers: Vec<Consumer>,
    next_consumer: usize,
    expiring: usize,
    policy: Policy,
    stores: bool,
    enqueued: u64,
    delivered: u64,
    acked: u64,
}

impl Dispatcher {
    /// `stores`: whether persistent messages here are in the store (queues
    /// yes; temporary queues and non-durable topic subscriptions no).
    pub(crate) fn new(policy: Policy, stores: bool) -> Dispatcher {
        Dispatcher {
            ready: BTreeMap::new(),
            ready_weight: 0,
            next_arrival: 0,
            inflight: HashMap::new(),
            consumers: Vec::new(),
            next_consumer: 0,
            expiring: 0,
            policy,
            stores,
            enqueued: 0,
            delivered: 0,
            acked: 0,
        }
    }

    /// Bytes of ready messages, for producer flow control.
    pub(crate) fn ready_weight(&self) -> usize {
        self.ready_weight
    }

    pub(crate) fn stats(&self) -> DispatchStats {
        DispatchStats {
            ready: self.ready.len(),
            inflight: self.inflight.len(),
            consumers: self.consumers.len(),
            enqueued: self.enqueued,
            delivered: self.delivered,
            acked: self.acked,
        }
    }

    pub(crate) fn push(&mut self, message: Arc<Message>) {
        let order = Order {
            inverted_priority: 9 - message.priority.min(9),
            arrival: self.next_arrival,
        };
        self.next_arrival += 1;
        self.enqueued += 1;
        self.insert_ready(Entry {
            message,
            deliveries: 0,
            order,
        });
    }

    fn insert_ready(&mut self, entry: Entry) {
        self.ready_weight += entry.message.weight();
        if entry.message.expires != 0 {
            self.expiring += 1;
        }
        self.ready.insert(entry.order, entry);
    }

    fn pop_ready(&mut self) -> Option<Entry> {
        let (_, entry) = self.ready.pop_first()?;
        self.ready_weight -= entry.message.weight();
        if entry.message.expires != 0 {
            self.expiring -= 1;
        }
        Some(entry)
    }

    pub(crate) fn add_consumer(&mut self, reg: ConsumerReg) {
        self.consumers.push(Consumer {
            reg,
            inflight: 0,
            gone: false,
        });
    }

    pub(crate) fn has_consumer(&self, id: ConsumerId) -> bool {
        self.consumers.iter().any(|c| c.reg.id == id)
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
            effects.push(Effect::DeadLetter {
                reason: format!(
                    "delivered {} times, more than max-redeliveries ({}); last: {why}",
                    entry.deliveries, self.policy.max_redeliveries
                ),
                message: entry.message,
            });
        } else {
            self.insert_ready(entry);
        }
    }

    /// Delivers ready messages to consumers with credit, round-robin.
    pub(crate) fn dispatch(&mut self, now_ms: u64, effects: &mut Vec<Effect>) {
        let n = self.consumers.len();
        if n == 0 {
            return;
        }
        while !self.ready.is_empty() {
            let Some(ci) = (0..n)
                .map(|i| (self.next_consumer + i) % n)
                .find(|&i| self.consumers[i].has_credit())
            else {
                return;
            };
            let Some(mut entry) = self.pop_ready() else {
                return;
            };
            if entry.message.is_expired(now_ms) {
                effects.push(Effect::Expired {
                    message: entry.message,
                });
                continue;
            }
            entry.deliveries += 1;
            let consumer = &mut self.consumers[ci];
            let delivery = Delivery {
                sub: consumer.reg.sub,
                message: entry.message.clone(),
                deliveries: entry.deliveries,
                stored: self.stores && entry.message.persistent,
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
            self.delivered += 1;
            self.next_consumer = (ci + 1) % n;
            self.inflight
                .insert(entry.message.seq, (entry, Holder::Consumer(id)));
        }
    }

    /// Removes expired ready messages.
    pub(crate) fn sweep_expired(&mut self, now_ms: u64, effects: &mut Vec<Effect>) {
        if self.expiring == 0 {
            return;
        }
        let expired: Vec<Order> = self
            .ready
            .iter()
            .filter(|(_, e)| e.message.is_expired(now_ms))
            .map(|(k, _)| *k)
            .collect();
        for key in expired {
            if let Some(entry) = self.ready.remove(&key) {
                self.ready_weight -= entry.message.weight();
                self.expiring -= 1;
                effects.push(Effect::Expired {
                    message: entry.message,
                });
            }
        }
    }

    /// Drops every message (a temporary queue being deleted).
    pub(crate) fn clear(&mut self) {
        self.ready.clear();
        self.inflight.clear();
        self.ready_weight = 0;
        self.expiring = 0;
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
        let mut d = Dispatcher::new(policy(), true);
        for (seq, p) in [(1, 4), (2, 9), (3, 4), (4, 0), (5, 9)] {
            d.push(msg(seq, p));
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
        let mut d = Dispatcher::new(policy(), true);
        let mut a = consumer(&mut d, 1, 10);
        let mut b = consumer(&mut d, 2, 10);
        for seq in 1..=6 {
            d.push(msg(seq, 4));
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
        let mut d = Dispatcher::new(policy(), true);
        let mut rx = consumer(&mut d, 1, 1);
        d.push(msg(1, 4));
        let mut fx = Vec::new();
        for n in 1..=3 {
            d.dispatch(0, &mut fx);
            assert_eq!(drain(&mut rx), vec![(1, n)]);
            d.nack(1, &[1], &mut fx);
        }
        assert_eq!(fx.len(), 1);
        assert!(matches!(&fx[0], Effect::DeadLetter { message, .. } if message.seq == 1));
        assert_eq!(d.stats().ready + d.stats().inflight, 0);
    }

    #[test]
    fn transaction_hold_commit_and_rollback() {
        let mut d = Dispatcher::new(policy(), true);
        let mut rx = consumer(&mut d, 1, 2);
        for seq in 1..=4 {
            d.push(msg(seq, 4));
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
        let mut d = Dispatcher::new(policy(), true);
        let mut m = (*msg(1, 4)).clone();
        m.expires = 100;
        d.push(Arc::new(m));
        d.push(msg(2, 4));
        let mut fx = Vec::new();
        d.sweep_expired(50, &mut fx);
        assert!(fx.is_empty());
        let mut rx = consumer(&mut d, 1, 10);
        d.dispatch(100, &mut fx);
        assert_eq!(drain(&mut rx), vec![(2, 1)]);
        assert!(matches!(&fx[..], [Effect::Expired { message }] if message.seq == 1));
        assert_eq!(d.ready_weight(), 0);
    }

    #[test]
    fn a_consumer_whose_session_is_gone_gets_nothing() {
        let mut d = Dispatcher::new(policy(), true);
        let rx = consumer(&mut d, 1, 10);
        drop(rx);
        let mut live = consumer(&mut d, 2, 10);
        d.push(msg(1, 4));
        d.push(msg(2, 4));
        let mut fx = Vec::new();
        d.dispatch(0, &mut fx);
        assert_eq!(drain(&mut live), vec![(1, 1), (2, 1)]);
    }
}
