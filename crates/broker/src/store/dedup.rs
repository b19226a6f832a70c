//! Duplicate detection: the memory of recent duplicate-detection ids
//! (`_AMQ_DUPL_ID`) per queue.
//!
//! A client that fails over resends every persistent SEND whose receipt it
//! had not seen, and some of those were stored before the broker died. The
//! store's writer decides, in log order, whether an Add carrying an id seen
//! recently on the same queue is a duplicate: if so the record is dropped
//! from its batch, the batch's completion names it, and the session confirms
//! the SEND without enqueuing it again. Deciding in the writer makes the
//! check and the write one step — two resends racing on two connections
//! cannot both get in — and keeps the memory in step with what is durable.
//!
//! The memory survives restarts and takeovers because backends store the id
//! with the message and hand the recent ones back from recovery
//! ([`crate::store::Recovered::duplicate_ids`]).

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::Arc;

use super::{Batch, Record, StoreKey};

/// The header a SEND's duplicate-detection id travels in (ActiveMQ
/// Artemis's name, so applications written for it work unchanged).
pub const DUPLICATE_ID_HEADER: &str = "_AMQ_DUPL_ID";

/// Longest id accepted; a longer header is refused as a protocol error.
pub const MAX_DUPLICATE_ID_LEN: usize = 256;

/// The most recent `cap` ids, each with a value, oldest evicted first.
#[derive(Debug)]
pub(crate) struct Recent<K, V> {
    cap: usize,
    order: VecDeque<K>,
    map: HashMap<K, V>,
}

impl<K: Clone + Eq + Hash, V> Recent<K, V> {
    pub(crate) fn new(cap: usize) -> Recent<K, V> {
        Recent {
            cap,
            order: VecDeque::new(),
            map: HashMap::new(),
        }
    }

    #[cfg(test)]
    pub(crate) fn contains(&self, k: &K) -> bool {
        self.map.contains_key(k)
    }

    /// Remembers `k` with `v` (replacing the value, keeping its place, if
    /// it is already known); false if it was known.
    pub(crate) fn insert(&mut self, k: K, v: V) -> bool {
        if let Some(old) = self.map.get_mut(&k) {
            *old = v;
            return false;
        }
        if self.cap == 0 {
            return true;
        }
        while self.order.len() >= self.cap {
            if let Some(gone) = self.order.pop_front() {
                self.map.remove(&gone);
            }
        }
        self.order.push_back(k.clone());
        self.map.insert(k, v);
        true
    }

    /// Forgets `k` (an insert whose write failed: it is near the back).
    pub(crate) fn remove(&mut self, k: &K) {
        if self.map.remove(k).is_some()
            && let Some(i) = self.order.iter().rposition(|x| x == k)
        {
            self.order.remove(i);
        }
    }

    /// Keys, oldest first, with their values.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.order
            .iter()
            .filter_map(|k| self.map.get(k).map(|v| (k, v)))
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }
}

/// Sequence numbers of the Adds a batch's writer found to be duplicates
/// (and did not store): the sender confirms them without enqueuing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Duplicates(pub Vec<u64>);

impl Duplicates {
    /// Whether the message with this sequence number was a duplicate.
    pub fn contains(&self, seq: u64) -> bool {
        self.0.contains(&seq)
    }
}

/// The writer's memory of recent ids, per queue.
#[derive(Debug)]
pub(crate) struct DupIndex {
    cap: usize,
    queues: HashMap<StoreKey, Recent<Arc<str>, ()>>,
}

impl DupIndex {
    /// Remembers up to `cap` ids per queue (0: duplicate detection off),
    /// starting with those recovery found.
    pub(crate) fn new(cap: usize, recovered: Vec<(StoreKey, Vec<Arc<str>>)>) -> DupIndex {
        let mut d = DupIndex {
            cap,
            queues: HashMap::new(),
        };
        for (key, ids) in recovered {
            for id in ids {
                d.window(&key).insert(id, ());
            }
        }
        d
    }

    fn window(&mut self, key: &StoreKey) -> &mut Recent<Arc<str>, ()> {
        let cap = self.cap;
        self.queues
            .entry(key.clone())
            .or_insert_with(|| Recent::new(cap))
    }

    /// Drops the duplicate Adds from `batches` (in order: a duplicate may
    /// be of an Add earlier in the same group), returning for each batch
    /// the duplicates found and, for a rollback, the ids newly remembered.
    pub(crate) fn filter(
        &mut self,
        batches: &mut [Batch],
    ) -> (Vec<Duplicates>, Vec<(StoreKey, Arc<str>)>) {
        let mut dups = vec![Duplicates::default(); batches.len()];
        let mut added = Vec::new();
        if self.cap == 0 {
            return (dups, added);
        }
        for (batch, found) in batches.iter_mut().zip(dups.iter_mut()) {
            if !batch
                .iter()
                .any(|r| matches!(r, Record::Add { dedup: Some(_), .. }))
            {
                continue;
            }
            batch.retain(|r| {
                let Record::Add {
                    key,
                    message,
                    dedup: Some(id),
                } = r
                else {
                    return true;
                };
                if self.window(key).insert(id.clone(), ()) {
                    added.push((key.clone(), id.clone()));
                    true
                } else {
                    found.0.push(message.seq);
                    false
                }
            });
        }
        (dups, added)
    }

    /// Forgets ids whose write failed, so a retry is stored.
    pub(crate) fn roll_back(&mut self, added: Vec<(StoreKey, Arc<str>)>) {
        for (key, id) in added {
            if let Some(w) = self.queues.get_mut(&key) {
                w.remove(&id);
            }
        }
    }

    /// Whether `id` is remembered for `key` (for tests).
    #[cfg(test)]
    pub(crate) fn knows(&self, key: &StoreKey, id: &str) -> bool {
        self.queues
            .get(key)
            .is_some_and(|w| w.contains(&Arc::from(id)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(seq: u64, id: Option<&str>) -> Record {
        Record::Add {
            key: StoreKey::Queue("q".into()),
            message: crate::core::test_message(seq, 4),
            dedup: id.map(Arc::from),
        }
    }

    fn seqs(b: &Batch) -> Vec<u64> {
        b.iter()
            .filter_map(|r| match r {
                Record::Add { message, .. } => Some(message.seq),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn recent_keeps_the_newest_and_updates_in_place() {
        let mut r = Recent::new(3);
        for (i, k) in ["a", "b", "c", "d"].into_iter().enumerate() {
            assert!(r.insert(k, i));
        }
        assert!(!r.contains(&"a"));
        assert!(!r.insert("b", 9));
        let got: Vec<(&str, usize)> = r.iter().map(|(k, v)| (*k, *v)).collect();
        assert_eq!(got, vec![("b", 9), ("c", 2), ("d", 3)]);
        r.remove(&"c");
        assert_eq!(r.len(), 2);
        assert!(r.insert("c", 5));
        assert!(r.insert("e", 6));
        assert!(!r.contains(&"b"));
    }

    #[test]
    fn duplicates_within_and_across_groups_are_dropped() {
        let mut d = DupIndex::new(10, vec![(StoreKey::Queue("q".into()), vec!["old".into()])]);
        let mut batches = vec![
            vec![add(1, Some("x")), add(2, None)],
            vec![add(3, Some("x")), add(4, Some("y"))],
            vec![add(5, Some("old"))],
        ];
        let (dups, added) = d.filter(&mut batches);
        assert_eq!(seqs(&batches[0]), vec![1, 2]);
        assert_eq!(seqs(&batches[1]), vec![4]);
        assert!(batches[2].is_empty());
        assert_eq!(dups[1], Duplicates(vec![3]));
        assert!(dups[2].contains(5));
        assert_eq!(added.len(), 2);
        // A failed write forgets what it added: the retry is stored.
        d.roll_back(added);
        assert!(!d.knows(&StoreKey::Queue("q".into()), "x"));
        assert!(d.knows(&StoreKey::Queue("q".into()), "old"));
        let mut retry = vec![vec![add(6, Some("x"))]];
        let (dups, _) = d.filter(&mut retry);
        assert!(dups[0].0.is_empty());
        assert_eq!(seqs(&retry[0]), vec![6]);
    }

    #[test]
    fn ids_are_per_queue_and_zero_turns_it_off() {
        let mut d = DupIndex::new(10, vec![]);
        let other = Record::Add {
            key: StoreKey::Queue("other".into()),
            message: crate::core::test_message(2, 4),
            dedup: Some("x".into()),
        };
        let mut batches = vec![vec![add(1, Some("x")), other]];
        let (dups, _) = d.filter(&mut batches);
        assert!(dups[0].0.is_empty());
        assert_eq!(batches[0].len(), 2);

        let mut off = DupIndex::new(0, vec![]);
        let mut batches = vec![vec![add(1, Some("x")), add(2, Some("x"))]];
        let (dups, _) = off.filter(&mut batches);
        assert!(dups[0].0.is_empty());
        assert_eq!(batches[0].len(), 2);
    }
}
