//! Message groups (JMSX `JMSXGroupID`): a queue delivers the messages of one
//! group to one consumer at a time, so they are processed in order, while
//! different groups spread over the consumers.
//!
//! The rules are ActiveMQ Classic's:
//! - The first message of a group that has no owner assigns the group to
//!   the consumer it is dispatched to, and that delivery is marked
//!   (`JMSXGroupFirstForConsumer`), so the consumer knows to reset any state
//!   it keeps per group.
//! - A message with `JMSXGroupSeq` 1 starts the group afresh: it is
//!   assigned to whichever consumer it goes to.
//! - A message with a negative `JMSXGroupSeq` (ActiveMQ's -1) closes the
//!   group once delivered to its owner: the next message of the group may
//!   go to any consumer.
//! - When the owner goes, its groups are released; what it had not
//!   acknowledged is redelivered, and the next owner's first delivery is
//!   marked again.
//! - The owners are remembered for at most `destinations.max-groups` groups
//!   per queue (ActiveMQ's default cache holds 1024), least recently used
//!   forgotten first. They live in memory: after a restart or a takeover
//!   groups are assigned anew as consumers return, and the stored order of
//!   each group's messages is kept.
//!
//! A group is known by a 64-bit hash of its id: two ids that collide are
//! treated as one group, which only makes dispatch coarser, never wrong.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use super::ConsumerId;
use crate::model::{Message, Value};

/// The property naming a message's group.
pub(crate) const GROUP_ID: &str = "JMSXGroupID";
/// The property numbering a message within its group.
pub(crate) const GROUP_SEQ: &str = "JMSXGroupSeq";
/// The mark on the first delivery of a group to a new owner.
pub(crate) const GROUP_FIRST: &str = "JMSXGroupFirstForConsumer";

/// Which group a message belongs to, as the dispatcher tracks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct GroupKey(u64);

/// A message's place in its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GroupMember {
    pub(crate) key: GroupKey,
    /// `JMSXGroupSeq`: 1 starts the group, negative closes it, 0 if unset.
    pub(crate) seq: i64,
}

impl GroupMember {
    /// The group of `m`, if it names one (a non-empty `JMSXGroupID`).
    pub(crate) fn of(m: &Message) -> Option<GroupMember> {
        let id = m.properties.get(GROUP_ID)?;
        let mut h = DefaultHasher::new();
        match id {
            Value::String(s) if !s.is_empty() => s.hash(&mut h),
            _ => return None,
        }
        let seq = match m.properties.get(GROUP_SEQ) {
            Some(Value::String(s)) => s.trim().parse().unwrap_or(0),
            Some(Value::I8(n)) => i64::from(*n),
            Some(Value::I16(n)) => i64::from(*n),
            Some(Value::I32(n)) => i64::from(*n),
            Some(Value::I64(n)) => *n,
            _ => 0,
        };
        Some(GroupMember {
            key: GroupKey(h.finish()),
            seq,
        })
    }

    /// Whether this message starts its group afresh.
    pub(crate) fn starts(&self) -> bool {
        self.seq == 1
    }

    /// Whether this message closes its group.
    pub(crate) fn closes(&self) -> bool {
        self.seq < 0
    }
}

/// The owners of a queue's groups.
#[derive(Debug)]
pub(crate) struct Groups {
    owners: HashMap<GroupKey, Owner>,
    /// How many groups each owner has (new groups go to the least loaded).
    counts: HashMap<ConsumerId, usize>,
    max: usize,
    clock: u64,
}

#[derive(Debug, Clone, Copy)]
struct Owner {
    consumer: ConsumerId,
    used: u64,
}

impl Groups {
    /// Remembers the owners of at most `max` groups.
    pub(crate) fn new(max: usize) -> Groups {
        Groups {
            owners: HashMap::new(),
            counts: HashMap::new(),
            max: max.max(1),
            clock: 0,
        }
    }

    /// The group's owner, if it has one.
    pub(crate) fn owner(&mut self, key: GroupKey) -> Option<ConsumerId> {
        self.clock += 1;
        let o = self.owners.get_mut(&key)?;
        o.used = self.clock;
        Some(o.consumer)
    }

    /// The group's owner, without counting as a use (a selective
    /// consumer's scan only looks).
    pub(crate) fn peek_owner(&self, key: GroupKey) -> Option<ConsumerId> {
        self.owners.get(&key).map(|o| o.consumer)
    }

    /// Makes `consumer` the group's owner, forgetting the least recently
    /// used group if there are too many.
    pub(crate) fn assign(&mut self, key: GroupKey, consumer: ConsumerId) {
        self.clock += 1;
        if self.owners.len() >= self.max
            && !self.owners.contains_key(&key)
            && let Some(oldest) = self
                .owners
                .iter()
                .min_by_key(|(_, o)| o.used)
                .map(|(k, _)| *k)
        {
            self.close(oldest);
        }
        let previous = self.owners.insert(
            key,
            Owner {
                consumer,
                used: self.clock,
            },
        );
        if let Some(p) = previous {
            self.uncount(p.consumer);
        }
        *self.counts.entry(consumer).or_default() += 1;
    }

    fn uncount(&mut self, consumer: ConsumerId) {
        if let Some(n) = self.counts.get_mut(&consumer) {
            *n -= 1;
            if *n == 0 {
                self.counts.remove(&consumer);
            }
        }
    }

    /// Closes the group (it has no owner until its next message).
    pub(crate) fn close(&mut self, key: GroupKey) {
        if let Some(o) = self.owners.remove(&key) {
            self.uncount(o.consumer);
        }
    }

    /// Releases every group `consumer` owns (it has gone).
    pub(crate) fn release(&mut self, consumer: ConsumerId) {
        self.owners.retain(|_, o| o.consumer != consumer);
        self.counts.remove(&consumer);
    }

    /// How many groups `consumer` owns.
    pub(crate) fn owned_by(&self, consumer: ConsumerId) -> usize {
        self.counts.get(&consumer).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Properties, test_message};
    use std::sync::Arc;

    fn grouped(id: &str, seq: Option<&str>) -> Arc<Message> {
        let mut m = (*test_message(1, 4)).clone();
        let mut props = vec![(GROUP_ID.to_owned(), Value::String(id.into()))];
        if let Some(s) = seq {
            props.push((GROUP_SEQ.to_owned(), Value::String(s.into())));
        }
        m.properties = props.into_iter().collect::<Properties>();
        Arc::new(m)
    }

    #[test]
    fn members_know_their_group_and_place() {
        let a = GroupMember::of(&grouped("a", None)).unwrap();
        let a2 = GroupMember::of(&grouped("a", Some("-1"))).unwrap();
        let b = GroupMember::of(&grouped("b", Some("1"))).unwrap();
        assert_eq!(a.key, a2.key);
        assert_ne!(a.key, b.key);
        assert!(a2.closes() && !a.closes());
        assert!(b.starts() && !a.starts());
        assert!(GroupMember::of(&grouped("", None)).is_none());
        assert!(GroupMember::of(&test_message(1, 4)).is_none());
    }

    #[test]
    fn owners_are_bounded_least_recently_used_first() {
        let mut g = Groups::new(2);
        let key = |s: &str| GroupMember::of(&grouped(s, None)).unwrap().key;
        g.assign(key("a"), ConsumerId(1));
        g.assign(key("b"), ConsumerId(2));
        assert_eq!(g.owner(key("a")), Some(ConsumerId(1)));
        g.assign(key("c"), ConsumerId(1));
        assert_eq!(g.owner(key("b")), None, "b was least recently used");
        assert_eq!(g.owned_by(ConsumerId(1)), 2);
        g.release(ConsumerId(1));
        assert_eq!(g.owner(key("a")), None);
        assert_eq!(g.owned_by(ConsumerId(1)), 0);
        g.assign(key("a"), ConsumerId(3));
        g.close(key("a"));
        assert_eq!(g.owner(key("a")), None);
    }
}
