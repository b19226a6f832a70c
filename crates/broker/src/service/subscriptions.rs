//! A connection's subscriptions and the deliveries awaiting acknowledgement.

use std::collections::{HashMap, VecDeque};

use super::directory::{Shown, SubscriptionView};
use super::error::{AckTarget, ServiceError};
use std::sync::Arc;

use crate::core::{ConsumerId, Control, DestHandle, Registrations, Seq, SharedCredit, SubKey};
use crate::model::MessageId;

/// How a subscription acknowledges, whatever the protocol calls it (STOMP's
/// `auto` / `client` / `client-individual`, JMS's `AUTO_ACKNOWLEDGE` /
/// `CLIENT_ACKNOWLEDGE` / `INDIVIDUAL_ACKNOWLEDGE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AckMode {
    /// A message counts as acknowledged once it is written to the client.
    Auto,
    /// An acknowledgement covers the named delivery and every earlier one.
    Cumulative,
    /// An acknowledgement covers just the named delivery.
    Individual,
}

/// Names one delivery awaiting acknowledgement on its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct DeliveryToken(pub(crate) u64);

/// A delivery the client has yet to acknowledge.
#[derive(Debug, Clone)]
pub(crate) struct Unacked {
    pub(crate) token: DeliveryToken,
    /// The registration it came through.
    pub(crate) consumer: ConsumerId,
    pub(crate) seq: Seq,
    pub(crate) id: MessageId,
    /// Whether acknowledging it must remove it from the store.
    pub(crate) stored: bool,
}

pub(crate) struct Subscription {
    /// The client's id for it.
    pub(crate) id: String,
    /// Its consumer at each destination it takes from.
    pub(crate) registrations: Registrations,
    pub(crate) ack: AckMode,
    pub(crate) unacked: VecDeque<Unacked>,
    /// A queue browser: it sees messages without consuming them, so it
    /// acknowledges nothing.
    pub(crate) browser: bool,
    /// Its id in the core's table of wildcard subscriptions over queues.
    pub(crate) wildcard: Option<u64>,
    /// A browser's latest messages, so that acknowledging one is refused
    /// as what it is rather than as an unknown message.
    pub(crate) seen: VecDeque<MessageId>,
    /// The credit its consumers share, when it takes from several
    /// destinations.
    pub(crate) credit: Option<Credit>,
    /// When it takes from several destinations, the messages it was shown
    /// lately: names that overlap (`/topic/a.*,/topic/a.b`) bring the same
    /// message through two of them, and a subscriber gets each message
    /// once, as from ActiveMQ.
    pub(crate) recent: Option<Recent>,
}

/// The sequence numbers of a subscription's latest deliveries.
#[derive(Debug, Default)]
pub(crate) struct Recent {
    seqs: std::collections::HashSet<Seq>,
    order: VecDeque<Seq>,
}

/// Deliveries a subscription to several destinations remembers. The copies
/// one message makes are published one after another, so the second
/// arrives long before this many others.
const RECENT_REMEMBERED: usize = 4096;

impl Recent {
    /// Whether message `seq` is new to the subscription (and now seen).
    pub(crate) fn first_sight(&mut self, seq: Seq) -> bool {
        if !self.seqs.insert(seq) {
            return false;
        }
        self.order.push_back(seq);
        if self.order.len() > RECENT_REMEMBERED
            && let Some(old) = self.order.pop_front()
        {
            self.seqs.remove(&old);
        }
        true
    }
}

/// A subscription's shared credit, and the destinations to wake when
/// acknowledgements free some (see [`SharedCredit`]).
#[derive(Debug, Clone)]
pub(crate) struct Credit {
    pub(crate) shared: Arc<SharedCredit>,
    pub(crate) registrations: Registrations,
}

impl Credit {
    /// `n` deliveries stopped counting against the subscription's prefetch.
    pub(crate) async fn release(&self, n: usize) {
        if self.shared.release(n) {
            for h in self.registrations.handles() {
                let _ = h.control(Control::Wake).await;
            }
        }
    }
}

/// Message ids a browser subscription remembers.
const BROWSED_REMEMBERED: usize = 1024;

impl Subscription {
    /// A browser showed message `id`.
    pub(crate) fn browsed(&mut self, id: MessageId) {
        if self.seen.len() >= BROWSED_REMEMBERED {
            self.seen.pop_front();
        }
        self.seen.push_back(id);
    }
}

/// How an acknowledgement names its delivery.
#[derive(Debug)]
pub(crate) enum AckRef<'a> {
    /// By token, as a client spelled it; if no delivery has it, by message
    /// id.
    Token(&'a str),
    /// By the token the service gave the delivery (a head that keeps its
    /// own map from what the client names to tokens).
    Delivery(DeliveryToken),
    /// By message id, optionally within one subscription.
    MessageId {
        id: &'a str,
        subscription: Option<&'a str>,
    },
}

/// The deliveries an acknowledgement covers at one destination.
pub(crate) struct Acked {
    pub(crate) handle: DestHandle,
    pub(crate) consumer: ConsumerId,
    pub(crate) items: Vec<Unacked>,
    /// The subscription's shared credit, if it has one.
    pub(crate) credit: Option<Credit>,
}

impl Acked {
    pub(crate) fn seqs(&self) -> Vec<Seq> {
        self.items.iter().map(|u| u.seq).collect()
    }

    /// Ends a transaction's hold on these deliveries: committed
    /// acknowledgements are final; otherwise (a rollback, or a committed
    /// rejection) the messages go back for redelivery.
    pub(crate) async fn release(self, acknowledged: bool) {
        let (consumer, seqs) = (self.consumer, self.seqs());
        let control = if acknowledged {
            Control::Commit { consumer, seqs }
        } else {
            Control::Rollback { consumer, seqs }
        };
        let _ = self.handle.control(control).await;
    }
}

pub(crate) struct Subscriptions {
    /// What the directory of connections shows of this table.
    shown: Arc<Shown>,
    by_key: HashMap<SubKey, Subscription>,
    by_id: HashMap<String, SubKey>,
    tokens: HashMap<DeliveryToken, SubKey>,
    next_key: u64,
    next_token: u64,
}

impl Subscriptions {
    pub(crate) fn new(shown: Arc<Shown>) -> Subscriptions {
        Subscriptions {
            shown,
            by_key: HashMap::new(),
            by_id: HashMap::new(),
            tokens: HashMap::new(),
            next_key: 0,
            next_token: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.by_key.len()
    }

    pub(crate) fn contains_id(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }

    /// The key of the subscription the client calls `id`.
    pub(crate) fn key_of(&self, id: &str) -> Option<SubKey> {
        self.by_id.get(id).copied()
    }

    /// Reserves the key a new subscription will have.
    pub(crate) fn next_key(&mut self) -> SubKey {
        self.next_key += 1;
        SubKey(self.next_key)
    }

    pub(crate) fn insert(&mut self, key: SubKey, sub: Subscription, view: SubscriptionView) {
        self.shown.subscribed(view);
        self.by_id.insert(sub.id.clone(), key);
        self.by_key.insert(key, sub);
    }

    pub(crate) fn remove(&mut self, key: SubKey) -> Option<Subscription> {
        let sub = self.by_key.remove(&key)?;
        self.shown.unsubscribed(&sub.id, sub.unacked.len());
        self.by_id.remove(&sub.id);
        for u in &sub.unacked {
            self.tokens.remove(&u.token);
        }
        Some(sub)
    }

    pub(crate) fn drain(&mut self) -> Vec<Subscription> {
        self.shown.cleared();
        self.by_id.clear();
        self.tokens.clear();
        self.by_key.drain().map(|(_, s)| s).collect()
    }

    pub(crate) fn get(&self, key: SubKey) -> Option<&Subscription> {
        self.by_key.get(&key)
    }

    pub(crate) fn get_mut(&mut self, key: SubKey) -> Option<&mut Subscription> {
        self.by_key.get_mut(&key)
    }

    /// The browser subscription that showed the message `id` lately, if
    /// one did (acknowledging it is refused by name).
    fn browsed_by(&self, id: &str) -> Option<&Subscription> {
        self.by_key
            .values()
            .find(|s| s.browser && s.seen.iter().any(|m| m.matches(id)))
    }

    /// Records a delivery that needs acknowledgement and returns its token.
    pub(crate) fn track(
        &mut self,
        key: SubKey,
        consumer: ConsumerId,
        seq: Seq,
        id: MessageId,
        stored: bool,
    ) -> DeliveryToken {
        self.next_token += 1;
        let token = DeliveryToken(self.next_token);
        if let Some(sub) = self.by_key.get_mut(&key) {
            sub.unacked.push_back(Unacked {
                token,
                consumer,
                seq,
                id,
                stored,
            });
            self.tokens.insert(token, key);
            self.shown.delivered();
        }
        token
    }

    /// Takes the deliveries an acknowledgement covers: for a cumulative
    /// subscription the named one and every earlier one, otherwise just the
    /// named one; grouped by the destination each came from.
    pub(crate) fn take(&mut self, r: &AckRef<'_>) -> Result<Vec<Acked>, ServiceError> {
        if let AckRef::MessageId {
            subscription: Some(s),
            ..
        } = r
            && let Some(sub) = self.by_id.get(*s).and_then(|k| self.by_key.get(k))
            && sub.browser
        {
            return Err(ServiceError::BrowserAck(sub.id.clone()));
        }
        let named = match r {
            AckRef::Token(t) => Some(*t),
            AckRef::MessageId { id, .. } => Some(*id),
            AckRef::Delivery(_) => None,
        };
        if self.find(r).is_none()
            && let Some(sub) = named.and_then(|n| self.browsed_by(n))
        {
            return Err(ServiceError::BrowserAck(sub.id.clone()));
        }
        let (key, pos) = self.find(r).ok_or_else(|| {
            ServiceError::NotUnacknowledged(match r {
                AckRef::Token(t) => AckTarget::Token((*t).to_owned()),
                AckRef::Delivery(t) => AckTarget::Token(t.0.to_string()),
                AckRef::MessageId { id, .. } => AckTarget::MessageId((*id).to_owned()),
            })
        })?;
        let sub = self
            .by_key
            .get_mut(&key)
            .ok_or_else(|| ServiceError::NoSuchSubscription(format!("{key:?}")))?;
        let items: Vec<Unacked> = match sub.ack {
            AckMode::Cumulative => sub.unacked.drain(..=pos).collect(),
            _ => sub.unacked.remove(pos).into_iter().collect(),
        };
        for u in &items {
            self.tokens.remove(&u.token);
        }
        self.shown.settled(items.len());
        let mut parts: Vec<Acked> = Vec::new();
        for u in items {
            match parts.iter_mut().find(|a| a.consumer == u.consumer) {
                Some(a) => a.items.push(u),
                None => {
                    // A registration ended with its destination (a
                    // temporary queue deleted): nothing to tell it.
                    let Some(handle) = sub.registrations.handle_of(u.consumer) else {
                        continue;
                    };
                    parts.push(Acked {
                        handle,
                        consumer: u.consumer,
                        items: vec![u],
                        credit: sub.credit.clone(),
                    });
                }
            }
        }
        Ok(parts)
    }

    /// Where the delivery with `token` is: its subscription and its place
    /// among the subscription's unacknowledged deliveries.
    fn find_token(&self, token: DeliveryToken) -> Option<(SubKey, usize)> {
        let key = *self.tokens.get(&token)?;
        let sub = self.by_key.get(&key)?;
        let pos = sub.unacked.iter().position(|u| u.token == token)?;
        Some((key, pos))
    }

    fn find(&self, r: &AckRef<'_>) -> Option<(SubKey, usize)> {
        match r {
            AckRef::Delivery(token) => self.find_token(*token),
            AckRef::Token(t) => {
                let by_token = t
                    .parse::<u64>()
                    .ok()
                    .and_then(|n| self.find_token(DeliveryToken(n)));
                // Some clients put the message id where the token belongs.
                by_token.or_else(|| {
                    self.find(&AckRef::MessageId {
                        id: t,
                        subscription: None,
                    })
                })
            }
            AckRef::MessageId { id, subscription } => {
                let mut candidates: Vec<SubKey> = match subscription {
                    Some(s) => vec![*self.by_id.get(*s)?],
                    None => self.by_key.keys().copied().collect(),
                };
                candidates.sort_unstable();
                candidates.into_iter().find_map(|key| {
                    let pos = self
                        .by_key
                        .get(&key)?
                        .unacked
                        .iter()
                        .position(|u| u.id.matches(id))?;
                    Some((key, pos))
                })
            }
        }
    }
}
