//! The connection's JMS state that the broker service does not keep:
//! consumers and what each was sent, producers and their windows, the
//! acknowledgements a local transaction holds, the advisory consumer. Owned
//! by the session task; the handlers (`consume.rs`, `produce.rs`,
//! `transaction.rs`, `advisory.rs`) change it.

use std::collections::{HashMap, HashSet, VecDeque};

use halyard_openwire as ow;
use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::core::{Delivery, SubKey};
use crate::model::Destination;
use crate::service::DeliveryToken;
use crate::service::temporary::TempEvent;

/// A consumer's (session, consumer) numbers.
pub(super) type Key = (i64, i64);

/// One consumer of the connection.
pub(super) struct Consumer {
    pub(super) id: ow::ConsumerId,
    /// Its subscription in the service (`None`: an advisory consumer).
    pub(super) sub: Option<SubKey>,
    /// The service's id for the subscription.
    pub(super) sub_id: String,
    /// Messages sent to it and not yet acknowledged, in the order sent:
    /// broker sequence number and delivery token.
    pub(super) unacked: VecDeque<(u64, DeliveryToken)>,
    /// Prefetch 0: messages go out only when pulled.
    pub(super) pull: Option<Pull>,
    /// The prefetch it asked for (0 for a pulling consumer).
    pub(super) prefetch: u32,
    /// How many of the first `unacked` the client reported delivered to
    /// its application (a JMS transaction's delivered acks): they no longer
    /// count against its prefetch, as ActiveMQ's prefetch extension.
    pub(super) delivered: usize,
    /// The prefetch the service applies now (`prefetch` plus the
    /// extension).
    pub(super) applied: u32,
}

/// A pulling consumer's state. It subscribes with a prefetch of one, and
/// the message the broker sends it waits here until the client asks.
#[derive(Default)]
pub(super) struct Pull {
    pub(super) held: Option<Delivery>,
    /// The client waits for a message: until this instant (`Some(None)`:
    /// for ever).
    pub(super) waiting: Option<Option<Instant>>,
}

/// The connection's consumers.
#[derive(Default)]
pub(super) struct Consumers {
    pub(super) by_id: HashMap<Key, Consumer>,
    pub(super) by_sub: HashMap<SubKey, Key>,
}

impl Consumers {
    /// The consumers of JMS session `session`.
    pub(super) fn of_session(&self, session: i64) -> Vec<ow::ConsumerId> {
        self.by_id
            .iter()
            .filter(|((s, _), _)| *s == session)
            .map(|(_, c)| c.id.clone())
            .collect()
    }

    /// When the earliest waiting pull times out.
    pub(super) fn next_pull_deadline(&self) -> Option<Instant> {
        self.by_id
            .values()
            .filter_map(|c| c.pull.as_ref()?.waiting.flatten())
            .min()
    }

    /// The deliveries an acknowledgement of `consumer` covers: up to and
    /// including message `last` (a range), or just `last`. Taken out of
    /// the consumer's unacknowledged list; `None` if it has no such
    /// message.
    pub(super) fn take(
        &mut self,
        consumer: &Key,
        last: u64,
        range: bool,
    ) -> Option<Vec<(u64, DeliveryToken)>> {
        let c = self.by_id.get_mut(consumer)?;
        let at = c.unacked.iter().position(|(seq, _)| *seq == last)?;
        if range {
            c.delivered = c.delivered.saturating_sub(at + 1);
            Some(c.unacked.drain(..=at).collect())
        } else {
            if at < c.delivered {
                c.delivered -= 1;
            }
            c.unacked.remove(at).map(|u| vec![u])
        }
    }

    /// The client reports what consumer `consumer` was sent up to message
    /// `last` as delivered to its application.
    pub(super) fn delivered(&mut self, consumer: &Key, last: u64) {
        if let Some(c) = self.by_id.get_mut(consumer)
            && let Some(at) = c.unacked.iter().position(|(seq, _)| *seq == last)
        {
            c.delivered = c.delivered.max(at + 1);
        }
    }

    /// Puts taken deliveries back (a transaction that holds them rolled
    /// back: the client redelivers them itself and acknowledges again).
    pub(super) fn restore(&mut self, consumer: &Key, seqs: Vec<(u64, DeliveryToken)>) {
        if let Some(c) = self.by_id.get_mut(consumer) {
            for s in seqs.into_iter().rev() {
                c.unacked.push_front(s);
            }
        }
    }
}

pub(super) fn key(id: &ow::ConsumerId) -> Key {
    (id.session_id, id.value)
}

/// A producer as the broker knows it: its window.
pub(super) struct Producer {
    pub(super) window: i32,
    /// Counted among its destination's producers (operators see it).
    pub(super) _listed: Option<crate::service::directory::ProducerListing>,
}

/// The connection's producers, by (session, producer) number.
#[derive(Default)]
pub(super) struct Producers {
    pub(super) by_id: HashMap<(i64, i64), Producer>,
}

impl Producers {
    pub(super) fn remove(&mut self, id: &ow::ProducerId) {
        self.by_id.remove(&(id.session_id, id.value));
    }

    pub(super) fn remove_session(&mut self, session: i64) {
        self.by_id.retain(|(s, _), _| *s != session);
    }
}

/// One open transaction's state in the head.
#[derive(Default)]
pub(super) struct Tx {
    /// Acknowledged deliveries, per consumer, in order.
    pub(super) held: Vec<(Key, Vec<(u64, DeliveryToken)>)>,
    /// Its acknowledgements can no longer all be made: it can only roll
    /// back.
    pub(super) rollback_only: bool,
}

/// The connection's open transactions.
#[derive(Default)]
pub(super) struct Transactions {
    pub(super) open: HashMap<String, Tx>,
}

impl Transactions {
    /// Transaction `tx` acknowledged these deliveries of `consumer`.
    pub(super) fn hold(&mut self, tx: &str, consumer: Key, seqs: Vec<(u64, DeliveryToken)>) {
        let t = self.open.entry(tx.to_owned()).or_default();
        t.held.push((consumer, seqs));
    }

    /// Transaction `tx` acknowledged what this broker never sent.
    pub(super) fn rollback_only(&mut self, tx: &str) {
        self.open.entry(tx.to_owned()).or_default().rollback_only = true;
    }

    /// The consumers whose messages transaction `tx` holds.
    pub(super) fn consumers_of(&self, tx: &str) -> Vec<Key> {
        let mut keys: Vec<Key> = self
            .open
            .get(tx)
            .map(|t| t.held.iter().map(|(k, _)| *k).collect())
            .unwrap_or_default();
        keys.sort_unstable();
        keys.dedup();
        keys
    }

    /// How many of `consumer`'s messages open transactions hold.
    pub(super) fn held_for(&self, consumer: &Key) -> usize {
        self.open
            .values()
            .flat_map(|t| t.held.iter())
            .filter(|(k, _)| k == consumer)
            .map(|(_, seqs)| seqs.len())
            .sum()
    }

    /// `consumer` closed: transactions holding its acknowledgements can
    /// only roll back (its messages went back to the queue).
    pub(super) fn consumer_closed(&mut self, consumer: &Key) {
        for t in self.open.values_mut() {
            if t.held.iter().any(|(k, _)| k == consumer) {
                t.rollback_only = true;
            }
        }
    }
}

/// A connection's advisory consumer.
pub(super) struct Advisories {
    pub(super) consumer: ow::ConsumerId,
    pub(super) events: broadcast::Receiver<TempEvent>,
    /// What it was told exists.
    pub(super) announced: HashSet<Destination>,
    pub(super) next_seq: i64,
}

impl Advisories {
    /// The next event, for the session's loop.
    pub(super) async fn next(&mut self) -> Result<TempEvent, broadcast::error::RecvError> {
        self.events.recv().await
    }
}
