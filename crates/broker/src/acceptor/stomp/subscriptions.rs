//! A session's subscriptions and the deliveries awaiting acknowledgement.

use std::collections::{HashMap, VecDeque};

use crate::core::{ConsumerId, DestHandle, SubKey};
use crate::model::MessageId;

/// How a subscription acknowledges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AckMode {
    /// The broker treats a message as acknowledged once it is written.
    Auto,
    /// An ACK acknowledges the message and every earlier one.
    Client,
    /// An ACK acknowledges just that message.
    ClientIndividual,
}

impl AckMode {
    pub(super) fn parse(s: &str) -> Option<AckMode> {
        match s {
            "auto" => Some(AckMode::Auto),
            "client" => Some(AckMode::Client),
            "client-individual" => Some(AckMode::ClientIndividual),
            _ => None,
        }
    }
}

/// A delivery the client has yet to acknowledge.
#[derive(Debug, Clone)]
pub(super) struct Unacked {
    /// The `ack` header value we sent (1.2).
    pub(super) tag: u64,
    pub(super) seq: u64,
    pub(super) id: MessageId,
    /// Whether acknowledging it must remove it from the store.
    pub(super) stored: bool,
}

pub(super) struct Subscription {
    /// The client's id for it.
    pub(super) id: String,
    pub(super) handle: DestHandle,
    pub(super) consumer: ConsumerId,
    pub(super) ack: AckMode,
    /// The `destination` header of its MESSAGE frames.
    pub(super) destination_header: String,
    pub(super) unacked: VecDeque<Unacked>,
}

/// How an ACK or NACK names its message.
#[derive(Debug)]
pub(super) enum AckRef<'a> {
    /// By our `ack` header value (1.2).
    Tag(&'a str),
    /// By message id, optionally within one subscription (1.0, 1.1).
    MessageId {
        id: &'a str,
        subscription: Option<&'a str>,
    },
}

/// The deliveries an ACK or NACK covers.
pub(super) struct Acked {
    pub(super) handle: DestHandle,
    pub(super) consumer: ConsumerId,
    pub(super) items: Vec<Unacked>,
}

impl Acked {
    pub(super) fn seqs(&self) -> Vec<u64> {
        self.items.iter().map(|u| u.seq).collect()
    }
}

#[derive(Default)]
pub(super) struct Subscriptions {
    by_key: HashMap<SubKey, Subscription>,
    by_id: HashMap<String, SubKey>,
    tags: HashMap<u64, SubKey>,
    next_key: SubKey,
    next_tag: u64,
}

impl Subscriptions {
    pub(super) fn len(&self) -> usize {
        self.by_key.len()
    }

    pub(super) fn contains_id(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }

    /// Reserves the key a new subscription will have.
    pub(super) fn next_key(&mut self) -> SubKey {
        self.next_key += 1;
        self.next_key
    }

    pub(super) fn insert(&mut self, key: SubKey, sub: Subscription) {
        self.by_id.insert(sub.id.clone(), key);
        self.by_key.insert(key, sub);
    }

    pub(super) fn remove(&mut self, id: &str) -> Option<Subscription> {
        let key = self.by_id.remove(id)?;
        let sub = self.by_key.remove(&key)?;
        for u in &sub.unacked {
            self.tags.remove(&u.tag);
        }
        Some(sub)
    }

    /// Removes the subscription to `destination_header` (1.0 clients may
    /// unsubscribe by destination).
    pub(super) fn remove_by_destination(&mut self, destination: &str) -> Option<Subscription> {
        let id = self
            .by_key
            .values()
            .find(|s| s.destination_header == destination)?
            .id
            .clone();
        self.remove(&id)
    }

    pub(super) fn drain(&mut self) -> Vec<Subscription> {
        self.by_id.clear();
        self.tags.clear();
        self.by_key.drain().map(|(_, s)| s).collect()
    }

    pub(super) fn get(&self, key: SubKey) -> Option<&Subscription> {
        self.by_key.get(&key)
    }

    /// Records a delivery that needs acknowledgement and returns its tag.
    pub(super) fn track(&mut self, key: SubKey, seq: u64, id: MessageId, stored: bool) -> u64 {
        self.next_tag += 1;
        let tag = self.next_tag;
        if let Some(sub) = self.by_key.get_mut(&key) {
            sub.unacked.push_back(Unacked {
                tag,
                seq,
                id,
                stored,
            });
            self.tags.insert(tag, key);
        }
        tag
    }

    /// Takes the deliveries an ACK/NACK covers: in `client` mode the named
    /// one and every earlier one, otherwise just the named one.
    pub(super) fn take(&mut self, r: &AckRef<'_>) -> Result<Acked, String> {
        let (key, pos) = self.find(r).ok_or_else(|| match r {
            AckRef::Tag(t) => format!(
                "no unacknowledged message with ack id '{t}' on this connection (never delivered, or already acknowledged)"
            ),
            AckRef::MessageId { id, .. } => format!(
                "no unacknowledged message with message-id '{id}' on this connection (never delivered, or already acknowledged)"
            ),
        })?;
        let Some(sub) = self.by_key.get_mut(&key) else {
            return Err("subscription vanished".to_owned());
        };
        let items: Vec<Unacked> = match sub.ack {
            AckMode::Client => sub.unacked.drain(..=pos).collect(),
            _ => sub.unacked.remove(pos).into_iter().collect(),
        };
        for u in &items {
            self.tags.remove(&u.tag);
        }
        Ok(Acked {
            handle: sub.handle.clone(),
            consumer: sub.consumer,
            items,
        })
    }

    fn find(&self, r: &AckRef<'_>) -> Option<(SubKey, usize)> {
        match r {
            AckRef::Tag(t) => {
                let by_tag = t.parse::<u64>().ok().and_then(|tag| {
                    let key = *self.tags.get(&tag)?;
                    let sub = self.by_key.get(&key)?;
                    let pos = sub.unacked.iter().position(|u| u.tag == tag)?;
                    Some((key, pos))
                });
                // Some 1.2 clients put the message-id in the `id` header.
                by_tag.or_else(|| {
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
