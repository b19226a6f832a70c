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
use std::sync::Arc;

use super::{Batch, Record, StoreKey};

/// The header a SEND's duplicate-detection id travels in (ActiveMQ
/// Artemis's name, so applications written for it work unchanged).
pub const DUPLICATE_ID_HEADER: &str = "_AMQ_DUPL_ID";

/// Longest id accepted; a longer header is refused as a protocol error.
pub const MAX_DUPLICATE_ID_LEN: usize = 256;

/// How much the duplicate-detection memory keeps: the last `per_key` ids
/// of each queue, at most `total` ids in all (the oldest anywhere go first),
/// none older than `max_age_ms` (0: no age limit). ActiveMQ's producer audit
/// is bounded the same way, by count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DuplicateBounds {
    /// Ids per queue (`destinations.duplicate-window`; 0: detection off).
    pub per_key: usize,
    /// Ids in all (`destinations.duplicate-window-total`).
    pub total: usize,
    /// Longest an id is remembered, ms (`destinations.duplicate-window-ms`;
    /// 0: no age limit).
    pub max_age_ms: u64,
}

impl Default for DuplicateBounds {
    fn default() -> DuplicateBounds {
        DuplicateBounds {
            per_key: 2000,
            total: 100_000,
            max_age_ms: 3_600_000,
        }
    }
}

impl DuplicateBounds {
    /// Only a per-queue bound (tests).
    #[cfg(test)]
    pub(crate) fn per_key(per_key: usize) -> DuplicateBounds {
        DuplicateBounds {
            per_key,
            total: usize::MAX,
            max_age_ms: 0,
        }
    }
}

/// One queue's ids in arrival order (entries whose generation no longer
/// matches were removed, and are skipped).
#[derive(Debug)]
struct KeyWindow<V> {
    /// id -> (value, generation, learned at)
    ids: HashMap<Arc<str>, (V, u64, u64)>,
    order: VecDeque<(Arc<str>, u64)>,
}

/// Recent ids per key, each with a value, within [`DuplicateBounds`]. Removal is
/// lazy: an id leaves its map at once and its places in the two orders when
/// they reach the front, so every operation is amortised O(1).
#[derive(Debug)]
pub(crate) struct KeyedWindow<V> {
    bounds: DuplicateBounds,
    keys: HashMap<StoreKey, KeyWindow<V>>,
    /// Every id in arrival order: (key, id, generation, when).
    all: VecDeque<(StoreKey, Arc<str>, u64, u64)>,
    len: usize,
    next_gen: u64,
}

impl<V> KeyedWindow<V> {
    pub(crate) fn new(bounds: DuplicateBounds) -> KeyedWindow<V> {
        KeyedWindow {
            bounds,
            keys: HashMap::new(),
            all: VecDeque::new(),
            len: 0,
            next_gen: 0,
        }
    }

    /// Ids remembered in all.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn contains(&self, key: &StoreKey, id: &str) -> bool {
        self.keys.get(key).is_some_and(|w| w.ids.contains_key(id))
    }

    /// Remembers `id` for `key` with `value`, learned at `at_ms` (wall
    /// clock). If it is known already, only the value changes (it keeps its
    /// place); false then.
    pub(crate) fn insert(&mut self, key: &StoreKey, id: Arc<str>, value: V, at_ms: u64) -> bool {
        if self.bounds.per_key == 0 || self.bounds.total == 0 {
            return true;
        }
        if let Some(w) = self.keys.get_mut(key)
            && let Some(slot) = w.ids.get_mut(&id)
        {
            slot.0 = value;
            return false;
        }
        let generation = self.next_gen;
        self.next_gen += 1;
        let w = self.keys.entry(key.clone()).or_insert_with(|| KeyWindow {
            ids: HashMap::new(),
            order: VecDeque::new(),
        });
        w.ids.insert(id.clone(), (value, generation, at_ms));
        w.order.push_back((id.clone(), generation));
        // Removed ids wait in the orders until they reach the front; do not
        // let them pile up behind live ones.
        if w.order.len() > 2 * w.ids.len() + 16 {
            let ids = &w.ids;
            w.order
                .retain(|(id, g)| ids.get(id).is_some_and(|(_, live, _)| live == g));
        }
        self.all.push_back((key.clone(), id, generation, at_ms));
        self.len += 1;
        self.trim_key(key);
        while self.len > self.bounds.total {
            self.pop_oldest();
        }
        if self.all.len() > 2 * self.len + 64 {
            let keys = &self.keys;
            self.all.retain(|(k, id, g, _)| {
                keys.get(k)
                    .and_then(|w| w.ids.get(id))
                    .is_some_and(|(_, live, _)| live == g)
            });
        }
        true
    }

    /// Drops the oldest ids of `key` beyond its bound.
    fn trim_key(&mut self, key: &StoreKey) {
        let Some(w) = self.keys.get_mut(key) else {
            return;
        };
        while w.ids.len() > self.bounds.per_key {
            let Some((id, generation)) = w.order.pop_front() else {
                break;
            };
            if w.ids.get(&id).is_some_and(|(_, g, _)| *g == generation) {
                w.ids.remove(&id);
                self.len -= 1;
            }
        }
    }

    /// Removes the oldest id anywhere; false if there is none.
    fn pop_oldest(&mut self) -> bool {
        while let Some((key, id, generation, _)) = self.all.pop_front() {
            if self.remove_if(&key, &id, generation) {
                return true;
            }
        }
        false
    }

    /// Removes `id` of `key` if it still is the entry of that generation.
    fn remove_if(&mut self, key: &StoreKey, id: &Arc<str>, generation: u64) -> bool {
        let Some(w) = self.keys.get_mut(key) else {
            return false;
        };
        if w.ids.get(id).is_none_or(|(_, g, _)| *g != generation) {
            return false;
        }
        w.ids.remove(id);
        self.len -= 1;
        if w.ids.is_empty() {
            self.keys.remove(key);
        }
        true
    }

    /// Forgets ids learned before `now_ms - max_age_ms`.
    pub(crate) fn expire(&mut self, now_ms: u64) {
        if self.bounds.max_age_ms == 0 {
            return;
        }
        let cutoff = now_ms.saturating_sub(self.bounds.max_age_ms);
        while let Some((_, _, _, at)) = self.all.front() {
            if *at >= cutoff {
                break;
            }
            if let Some((key, id, generation, _)) = self.all.pop_front() {
                self.remove_if(&key, &id, generation);
            }
        }
    }

    /// Forgets `id` of `key` (an insert whose write failed).
    pub(crate) fn remove(&mut self, key: &StoreKey, id: &Arc<str>) {
        let generation = self
            .keys
            .get(key)
            .and_then(|w| w.ids.get(id).map(|(_, g, _)| *g));
        if let Some(g) = generation {
            self.remove_if(key, id, g);
        }
    }

    /// Forgets every id of `key`; returns them with their values and when
    /// they were learned, oldest first.
    pub(crate) fn take_key(&mut self, key: &StoreKey) -> Vec<(Arc<str>, V, u64)> {
        let Some(mut w) = self.keys.remove(key) else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(w.ids.len());
        for (id, generation) in w.order.drain(..) {
            if w.ids.get(&id).is_some_and(|(_, g, _)| *g == generation)
                && let Some((v, _, at)) = w.ids.remove(&id)
            {
                out.push((id, v, at));
            }
        }
        self.len -= out.len();
        out
    }

    /// Every id remembered, oldest first, with its key, value and when it
    /// was learned: inserted in this order into an empty window, they make
    /// the same window (a journal checkpoint stores them so).
    pub(crate) fn entries(&self) -> impl Iterator<Item = (&StoreKey, &Arc<str>, &V, u64)> {
        self.all.iter().filter_map(|(key, id, generation, at)| {
            self.keys
                .get(key)
                .and_then(|w| w.ids.get(id))
                .filter(|(_, g, _)| g == generation)
                .map(|(v, _, _)| (key, id, v, *at))
        })
    }

    /// The keys with ids.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &StoreKey> {
        self.keys.keys()
    }

    /// `key`'s ids, oldest first, with their values.
    pub(crate) fn iter_key(&self, key: &StoreKey) -> impl Iterator<Item = (&Arc<str>, &V)> {
        self.keys.get(key).into_iter().flat_map(|w| {
            w.order.iter().filter_map(|(id, generation)| {
                w.ids
                    .get(id)
                    .filter(|(_, g, _)| g == generation)
                    .map(|(v, _, _)| (id, v))
            })
        })
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
    window: KeyedWindow<()>,
}

impl DupIndex {
    /// Remembers ids within `bounds` (a per-queue bound of 0: duplicate
    /// detection off), starting with those recovery found (oldest first;
    /// their age counts from now).
    pub(crate) fn new(
        bounds: DuplicateBounds,
        recovered: Vec<(StoreKey, Vec<Arc<str>>)>,
    ) -> DupIndex {
        let mut window = KeyedWindow::new(bounds);
        let now = crate::model::now_ms();
        for (key, ids) in recovered {
            for id in ids {
                window.insert(&key, id, (), now);
            }
        }
        DupIndex { window }
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
        if self.window.bounds.per_key == 0 {
            return (dups, added);
        }
        let now = crate::model::now_ms();
        self.window.expire(now);
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
                if self.window.insert(key, id.clone(), (), now) {
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

    /// Whether an Add in `batches` carries an id remembered already, which
    /// [`filter`](Self::filter) would find a duplicate. The writer asks
    /// before it filters a group while another is still being written: if
    /// that one fails its ids are forgotten, and a copy of one of them found
    /// a duplicate meanwhile would be lost.
    pub(crate) fn knows_any(&self, batches: &[Batch]) -> bool {
        self.window.bounds.per_key != 0
            && batches.iter().flatten().any(|r| {
                matches!(r, Record::Add { key, dedup: Some(id), .. } if self.window.contains(key, id))
            })
    }

    /// Forgets ids whose write failed, so a retry is stored.
    pub(crate) fn roll_back(&mut self, added: Vec<(StoreKey, Arc<str>)>) {
        for (key, id) in added {
            self.window.remove(&key, &id);
        }
    }

    /// Ids remembered in all.
    pub(crate) fn len(&self) -> usize {
        self.window.len()
    }

    /// Whether `id` is remembered for `key` (for tests).
    #[cfg(test)]
    pub(crate) fn knows(&self, key: &StoreKey, id: &str) -> bool {
        self.window.contains(key, id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(seq: u64, id: Option<&str>) -> Record {
        Record::Add {
            key: StoreKey::Queue("q".into()),
            message: crate::model::test_message(seq, 4),
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

    fn q(name: &str) -> StoreKey {
        StoreKey::Queue(name.into())
    }

    fn ids<V>(w: &KeyedWindow<V>, key: &StoreKey) -> Vec<String> {
        w.iter_key(key).map(|(id, _)| id.to_string()).collect()
    }

    #[test]
    fn a_window_keeps_the_newest_per_key_and_updates_in_place() {
        let mut r = KeyedWindow::new(DuplicateBounds::per_key(3));
        for (i, k) in ["a", "b", "c", "d"].into_iter().enumerate() {
            assert!(r.insert(&q("q"), k.into(), i, 0));
        }
        assert!(!r.contains(&q("q"), "a"));
        assert!(!r.insert(&q("q"), "b".into(), 9, 0));
        let got: Vec<(String, usize)> = r
            .iter_key(&q("q"))
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        assert_eq!(got, [("b".into(), 9), ("c".into(), 2), ("d".into(), 3)]);
        r.remove(&q("q"), &"c".into());
        assert_eq!(r.len(), 2);
        assert!(r.insert(&q("q"), "c".into(), 5, 0));
        assert!(r.insert(&q("q"), "e".into(), 6, 0));
        assert!(!r.contains(&q("q"), "b"));
        assert_eq!(ids(&r, &q("q")), ["d", "c", "e"]);
        let taken: Vec<String> = r
            .take_key(&q("q"))
            .into_iter()
            .map(|(id, _, _)| id.to_string())
            .collect();
        assert_eq!(taken, ["d", "c", "e"]);
        assert_eq!(r.len(), 0);
    }

    #[test]
    fn a_window_is_bounded_in_total_and_by_age() {
        let mut r = KeyedWindow::new(DuplicateBounds {
            per_key: 100,
            total: 5,
            max_age_ms: 1_000,
        });
        for i in 0..4 {
            r.insert(&q("a"), format!("a{i}").into(), (), 10 * i);
            r.insert(&q("b"), format!("b{i}").into(), (), 10 * i + 5);
        }
        // The oldest anywhere went first.
        assert_eq!(r.len(), 5);
        assert_eq!(ids(&r, &q("a")), ["a2", "a3"]);
        assert_eq!(ids(&r, &q("b")), ["b1", "b2", "b3"]);
        // Age: everything learned before 1,026 - 1,000 goes.
        r.expire(1_026);
        assert_eq!(ids(&r, &q("a")), ["a3"]);
        assert_eq!(ids(&r, &q("b")), ["b3"]);
        r.expire(10_000);
        assert_eq!(r.len(), 0);
        assert_eq!(r.keys().count(), 0);
        // Lots of churn leaves no garbage behind.
        for i in 0..10_000u64 {
            r.insert(&q("c"), i.to_string().into(), (), 20_000 + i);
            r.expire(20_000 + i);
        }
        assert!(
            r.len() <= 5 && r.all.len() < 200,
            "{} {}",
            r.len(),
            r.all.len()
        );
        assert!(r.keys.values().all(|w| w.order.len() < 100));
    }

    #[test]
    fn duplicates_within_and_across_groups_are_dropped() {
        let mut d = DupIndex::new(
            DuplicateBounds::per_key(10),
            vec![(StoreKey::Queue("q".into()), vec!["old".into()])],
        );
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
        let mut d = DupIndex::new(DuplicateBounds::per_key(10), vec![]);
        let other = Record::Add {
            key: StoreKey::Queue("other".into()),
            message: crate::model::test_message(2, 4),
            dedup: Some("x".into()),
        };
        let mut batches = vec![vec![add(1, Some("x")), other]];
        let (dups, _) = d.filter(&mut batches);
        assert!(dups[0].0.is_empty());
        assert_eq!(batches[0].len(), 2);

        let mut off = DupIndex::new(DuplicateBounds::per_key(0), vec![]);
        let mut batches = vec![vec![add(1, Some("x")), add(2, Some("x"))]];
        let (dups, _) = off.filter(&mut batches);
        assert!(dups[0].0.is_empty());
        assert_eq!(batches[0].len(), 2);
    }
}
