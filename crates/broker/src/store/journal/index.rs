//! What the journal knows about its records: where each live message is,
//! and for every segment how much of it is still live and which older
//! segments it depends on. Recovery rebuilds this by replaying the records;
//! the writer keeps it current as it appends.
//!
//! Liveness. A segment is live while it holds a record recovery still needs:
//! the Add of a message not yet removed, the latest Redelivered record of
//! such a message, the SubscriptionAdd of a subscription not yet removed,
//! or the latest QueueDeclared of a queue not dropped since.
//!
//! Dependencies. A Remove (or SubscriptionRemove, or QueueDropped) in
//! segment T that cancels a record in an older segment S must outlive S:
//! were T deleted first, recovery would find the Add in S and resurrect an
//! acknowledged message (or a dropped queue).
//! So T records S in its `refs`, and a segment can only be deleted once it
//! has nothing live and every segment it refers to is gone.
//!
//! Duplicate-detection ids. The recent ids of each queue are remembered
//! with the segment that last wrote each one (in an Add, or carried forward
//! in a DupIds record). Before a segment is deleted, the ids it carries are
//! written again to the head, so the memory outlives the Adds that brought
//! it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use super::format::Entry;
use crate::model::Destination;
use crate::store::dedup::{DuplicateBounds, KeyedWindow};
use crate::store::{Record, StoreKey};

/// Recent duplicate-detection ids per queue, and which segment carries
/// each, within the same bounds as the writer's memory of them.
#[derive(Debug)]
pub(crate) struct Carriers {
    pub(crate) window: KeyedWindow<u64>,
}

impl Default for Carriers {
    fn default() -> Carriers {
        Carriers::new(DuplicateBounds {
            per_key: 2000,
            total: usize::MAX,
            max_age_ms: 0,
        })
    }
}

impl Carriers {
    pub(crate) fn new(bounds: DuplicateBounds) -> Carriers {
        Carriers {
            window: KeyedWindow::new(bounds),
        }
    }

    fn note(&mut self, key: &StoreKey, id: Arc<str>, seg: u64, at_ms: u64) {
        self.window.insert(key, id, seg, at_ms);
    }

    /// Forgets ids older than the age bound: they are not carried forward.
    pub(crate) fn expire(&mut self, now_ms: u64) {
        self.window.expire(now_ms);
    }

    /// Ids that must be written again before the segments in `segs` go:
    /// for every queue with an id only they carry, all of its recent ids,
    /// oldest first. All of them, not just those: a DupIds record then
    /// holds the queue's whole window in age order, and recovery, which
    /// moves a record's ids behind the others ([`Carriers::carried`]),
    /// gets the order right however the carrying segments die (carrying
    /// only the dying segment's ids put old ids behind newer ones carried
    /// earlier, and the window then forgot the wrong ones).
    pub(crate) fn carried_by(&self, segs: &BTreeSet<u64>) -> Vec<(StoreKey, Vec<Arc<str>>)> {
        let mut out = Vec::new();
        for key in self.window.keys() {
            if self.window.iter_key(key).any(|(_, seg)| segs.contains(seg)) {
                out.push((
                    key.clone(),
                    self.window
                        .iter_key(key)
                        .map(|(id, _)| id.clone())
                        .collect(),
                ));
            }
        }
        out
    }

    /// Ids carried forward in a DupIds record in segment `seg`: they move
    /// behind the queue's other ids, in the record's order (see
    /// [`Carriers::carried_by`]). Their age counts from `at_ms` (a DupIds
    /// record does not keep when each id was learned).
    fn carried(&mut self, key: &StoreKey, ids: &[Arc<str>], seg: u64, at_ms: u64) {
        let moved: std::collections::HashSet<&Arc<str>> = ids.iter().collect();
        for (id, s, at) in self.window.take_key(key) {
            if !moved.contains(&id) {
                self.window.insert(key, id, s, at);
            }
        }
        for id in ids {
            self.window.insert(key, id.clone(), seg, at_ms);
        }
    }

    /// Every queue's recent ids, oldest first.
    pub(crate) fn export(&self) -> Vec<(StoreKey, Vec<Arc<str>>)> {
        self.window
            .keys()
            .map(|k| {
                (
                    k.clone(),
                    self.window.iter_key(k).map(|(id, _)| id.clone()).collect(),
                )
            })
            .collect()
    }
}

/// Where a record lies: segment, offset of its frame, frame length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Loc {
    pub(crate) seg: u64,
    pub(crate) off: u32,
    pub(crate) len: u32,
}

/// Per-segment accounting.
#[derive(Debug, Clone, Default)]
pub(crate) struct SegStats {
    /// Where its records start (the header's length).
    pub(crate) start: u64,
    /// Bytes the file occupies on disk.
    pub(crate) file_bytes: u64,
    /// End of the written records.
    pub(crate) end: u64,
    /// Records written to it (batch markers included), and the Adds among
    /// them: what the next segment's manifest lists, so recovery can tell
    /// exactly what went missing.
    pub(crate) records: u64,
    pub(crate) adds: u64,
    /// Bytes of live records.
    pub(crate) live_bytes: u64,
    /// Number of live records.
    pub(crate) live_items: u64,
    /// Older segments holding records this one cancels.
    pub(crate) refs: BTreeSet<u64>,
}

/// The latest Redelivered (or Delayed) record of a live message.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Redelivery {
    pub(crate) deliveries: u32,
    /// Not to be delivered before (a Delayed record); 0: no delay.
    pub(crate) until_ms: u64,
    pub(crate) at: Loc,
}

/// The latest Schedule record of a live scheduled message.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scheduled {
    pub(crate) state: crate::store::ScheduleState,
    pub(crate) at: Loc,
}

/// A live durable subscription and its SubscriptionAdd record.
#[derive(Debug, Clone)]
pub(crate) struct Sub {
    pub(crate) topic: crate::model::Destination,
    pub(crate) selector: Option<String>,
    pub(crate) at: Loc,
}

/// A declared queue: its place in declaration order and its latest
/// QueueDeclared record.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Declared {
    pub(crate) order: u64,
    pub(crate) at: Loc,
}

/// The keys live messages name ([`Live::key`] is an id in it). Kept while
/// the journal runs too, for its checkpoints.
#[derive(Debug, Default)]
pub(crate) struct RecoveryMeta {
    pub(crate) found: crate::store::RecoveredMessages,
}

/// A live message: where its Add is, and what recovery hands the broker
/// about it (32 bytes: a deep queue holds millions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Live {
    pub(crate) at: Loc,
    /// Its key's id in [`RecoveryMeta::found`] (`u32::MAX` without one).
    pub(crate) key: u32,
    pub(crate) priority: u8,
    pub(crate) expires: u64,
}

/// The journal's knowledge of its records.
#[derive(Debug, Default)]
pub(crate) struct Index {
    pub(crate) segs: BTreeMap<u64, SegStats>,
    /// Live messages: where their Add is, their key, priority and expiry
    /// (one map, not two: a deep store starts faster with half the
    /// memory to fault in). Ordered by sequence number, not
    /// hashed: a queue adds at one end and removes at the other, which
    /// keeps a B-tree's work in a few cached nodes, and a checkpoint's
    /// million messages, in order, are built into one in a single pass
    /// (inserting them into a hash table cost 0.5 µs each in cache misses).
    pub(crate) messages: BTreeMap<u64, Live>,
    pub(crate) redeliveries: HashMap<u64, Redelivery>,
    /// Scheduled messages' progress.
    pub(crate) schedules: HashMap<u64, Scheduled>,
    pub(crate) subs: HashMap<(String, String), Sub>,
    /// Declared queues.
    pub(crate) queues: HashMap<Destination, Declared>,
    /// The highest place in declaration order seen: a queue declared anew
    /// gets the next one.
    pub(crate) declarations: u64,
    /// The keys of live messages.
    pub(crate) meta: Option<RecoveryMeta>,
    pub(crate) max_seq: u64,
    /// Seals by the segment holding them: (segment, end) of older segments.
    pub(crate) seals: HashMap<u64, Vec<(u64, u64)>>,
    /// Segments recorded as deleted on purpose since the newest manifest:
    /// that manifest minus these is what should be on disk.
    pub(crate) dropped: BTreeSet<u64>,
    /// Recent duplicate-detection ids and the segments carrying them.
    pub(crate) dups: Carriers,
}

impl Index {
    fn live(&mut self, at: Loc, delta: i64) {
        if let Some(s) = self.segs.get_mut(&at.seg) {
            if delta > 0 {
                s.live_bytes += u64::from(at.len);
                s.live_items += 1;
            } else {
                s.live_bytes = s.live_bytes.saturating_sub(u64::from(at.len));
                s.live_items = s.live_items.saturating_sub(1);
            }
        }
    }

    fn refer(&mut self, from: u64, to: u64) {
        if from != to
            && let Some(s) = self.segs.get_mut(&from)
        {
            s.refs.insert(to);
        }
    }

    /// Applies one record written (or found) at `at`.
    pub(crate) fn apply(&mut self, entry: &Entry, at: Loc) {
        match entry {
            Entry::Add(meta) => {
                self.max_seq = self.max_seq.max(meta.seq);
                // A second Add of the same message is a copy made by
                // compaction: the newer one is where it lives now.
                let key = self
                    .meta
                    .as_mut()
                    .map_or(u32::MAX, |m| m.found.key_id(&meta.key));
                let live = Live {
                    at,
                    key,
                    priority: meta.priority,
                    expires: meta.expires,
                };
                if let Some(old) = self.messages.insert(meta.seq, live) {
                    self.live(old.at, -1);
                }
                self.live(at, 1);
                if let Some(id) = &meta.dedup {
                    self.dups
                        .note(&meta.key, id.clone(), at.seg, meta.timestamp);
                }
            }
            Entry::DupIds { key, ids } => {
                self.dups.carried(key, ids, at.seg, crate::model::now_ms());
            }
            Entry::Remove { seq } => {
                if let Some(old) = self.messages.remove(seq) {
                    self.live(old.at, -1);
                    self.refer(at.seg, old.at.seg);
                }
                if let Some(r) = self.redeliveries.remove(seq) {
                    self.live(r.at, -1);
                }
                if let Some(r) = self.schedules.remove(seq) {
                    self.live(r.at, -1);
                }
            }
            Entry::Redelivered { seq, deliveries } => {
                self.redelivered(*seq, *deliveries, 0, at);
            }
            Entry::Delayed {
                seq,
                deliveries,
                until_ms,
            } => {
                self.redelivered(*seq, *deliveries, *until_ms, at);
            }
            Entry::Schedule { seq, due, fired } => {
                if !self.messages.contains_key(seq) {
                    return;
                }
                let state = crate::store::ScheduleState {
                    due: *due,
                    fired: *fired,
                };
                if let Some(old) = self.schedules.insert(*seq, Scheduled { state, at }) {
                    self.live(old.at, -1);
                }
                self.live(at, 1);
            }
            Entry::SubscriptionAdd {
                client_id,
                name,
                topic,
                selector,
            } => {
                let sub = Sub {
                    topic: topic.clone(),
                    selector: selector.clone(),
                    at,
                };
                if let Some(old) = self.subs.insert((client_id.clone(), name.clone()), sub) {
                    self.live(old.at, -1);
                }
                self.live(at, 1);
            }
            Entry::SubscriptionRemove { client_id, name } => {
                if let Some(old) = self.subs.remove(&(client_id.clone(), name.clone())) {
                    self.live(old.at, -1);
                    self.refer(at.seg, old.at.seg);
                }
            }
            Entry::QueueDeclared { order, queue } => {
                self.declarations = self.declarations.max(*order);
                // Declaring a declared queue changes nothing but where its
                // record is: a copy made by compaction, or a declaration
                // the broker repeated (which kept the queue's place).
                let old = match self.queues.get_mut(queue) {
                    Some(d) => Some(std::mem::replace(&mut d.at, at)),
                    None => {
                        let order = *order;
                        self.queues.insert(queue.clone(), Declared { order, at });
                        None
                    }
                };
                if let Some(old) = old {
                    self.live(old, -1);
                }
                self.live(at, 1);
            }
            Entry::QueueDropped { queue } => {
                if let Some(old) = self.queues.remove(queue) {
                    self.live(old.at, -1);
                    self.refer(at.seg, old.at.seg);
                }
            }
            Entry::Checkpoint { next_seq, .. } => {
                self.max_seq = self.max_seq.max(next_seq.saturating_sub(1));
            }
            Entry::Seal { segments } => {
                self.seals.insert(at.seg, segments.clone());
            }
            // A new master's manifest is also its seal; one written when a
            // segment fills limits nothing (its segments are this master's
            // own or were sealed already).
            Entry::Manifest { sealed, segments } => {
                // It lists only the segments there are: those deleted
                // before it no longer matter.
                self.dropped.clear();
                if *sealed {
                    self.seals
                        .insert(at.seg, segments.iter().map(|s| (s.id, s.end)).collect());
                }
            }
            // Segments deleted since the newest manifest was written, which
            // still lists them: recovery must not take them for lost (a
            // checkpoint carries these, as its place may lie after the
            // deletion record).
            Entry::Dropped { segments } => {
                self.dropped.extend(segments.iter().copied());
            }
            Entry::Batch { .. } => {}
        }
    }

    /// The latest redelivery record of live message `seq` (written at `at`)
    /// replaces its earlier one.
    fn redelivered(&mut self, seq: u64, deliveries: u32, until_ms: u64, at: Loc) {
        if !self.messages.contains_key(&seq) {
            return;
        }
        let r = Redelivery {
            deliveries,
            until_ms,
            at,
        };
        if let Some(old) = self.redeliveries.insert(seq, r) {
            self.live(old.at, -1);
        }
        self.live(at, 1);
    }

    /// Deliveries recorded for a live message.
    #[cfg(test)]
    pub(crate) fn deliveries(&self, seq: u64) -> u32 {
        self.redeliveries.get(&seq).map_or(0, |r| r.deliveries)
    }

    /// A live scheduled message's progress.
    pub(crate) fn schedule(&self, seq: u64) -> Option<crate::store::ScheduleState> {
        self.schedules.get(&seq).map(|s| s.state)
    }

    /// Deliveries recorded for a live message, and when a delayed
    /// redelivery of it is due (0: not delayed).
    pub(crate) fn delivery(&self, seq: u64) -> (u32, u64) {
        self.redeliveries
            .get(&seq)
            .map_or((0, 0), |r| (r.deliveries, r.until_ms))
    }

    /// Whether `seg` can be deleted: nothing live in it, and every segment
    /// whose records it cancels is gone.
    pub(crate) fn deletable(&self, seg: u64) -> bool {
        self.segs
            .get(&seg)
            .is_some_and(|s| s.live_items == 0 && s.refs.iter().all(|r| !self.segs.contains_key(r)))
    }

    /// Whether nothing older keeps `seg` from being deleted once empty.
    pub(crate) fn independent(&self, seg: u64) -> bool {
        self.segs
            .get(&seg)
            .is_some_and(|s| s.refs.iter().all(|r| !self.segs.contains_key(r)))
    }

    /// Whether the record at `at` is live: the current Add of a message,
    /// the current SubscriptionAdd of a subscription.
    pub(crate) fn is_live_add(&self, seq: u64, at: Loc) -> bool {
        self.messages.get(&seq).is_some_and(|l| l.at == at)
    }

    pub(crate) fn is_live_sub(&self, client_id: &str, name: &str, at: Loc) -> bool {
        self.subs
            .get(&(client_id.to_owned(), name.to_owned()))
            .is_some_and(|s| s.at == at)
    }

    /// Whether the record at `at` is the current QueueDeclared of `queue`.
    pub(crate) fn is_live_queue(&self, queue: &Destination, at: Loc) -> bool {
        self.queues.get(queue).is_some_and(|d| d.at == at)
    }

    /// The declared queues in declaration order.
    pub(crate) fn declared_queues(&self) -> Vec<Destination> {
        let mut queues: Vec<(u64, &Destination)> =
            self.queues.iter().map(|(q, d)| (d.order, q)).collect();
        queues.sort_unstable();
        queues.into_iter().map(|(_, q)| q.clone()).collect()
    }

    /// Places in declaration order for the queues records about to be
    /// written declare (see [`Placing::place`]).
    pub(crate) fn placing(&self) -> Placing<'_> {
        Placing {
            index: self,
            changed: HashMap::new(),
            next: self.declarations,
        }
    }

    /// Bytes of all segment files.
    pub(crate) fn disk_bytes(&self) -> u64 {
        self.segs.values().map(|s| s.file_bytes).sum()
    }

    /// Bytes of live records: the data held, without the preallocated
    /// tail of the head segment or the dead records not yet reclaimed.
    pub(crate) fn data_bytes(&self) -> u64 {
        self.segs.values().map(|s| s.live_bytes).sum()
    }
}

/// Gives queue declarations about to be written their place in declaration
/// order, as the index will have them once they are written: earlier
/// records of the same group count.
pub(crate) struct Placing<'a> {
    index: &'a Index,
    /// Declarations and drops earlier in the group: the queue's place, or
    /// `None` once dropped.
    changed: HashMap<Destination, Option<u64>>,
    next: u64,
}

impl Placing<'_> {
    /// The place of the queue `r` declares: the one it has if it is
    /// declared, else the next one. 0 for every other record.
    pub(crate) fn place(&mut self, r: &Record) -> u64 {
        match r {
            Record::QueueDeclared { queue } => {
                let known = match self.changed.get(queue) {
                    Some(c) => *c,
                    None => self.index.queues.get(queue).map(|d| d.order),
                };
                let order = known.unwrap_or_else(|| {
                    self.next += 1;
                    self.next
                });
                self.changed.insert(queue.clone(), Some(order));
                order
            }
            Record::QueueDropped { queue } => {
                self.changed.insert(queue.clone(), None);
                0
            }
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreKey;
    use crate::store::journal::format::AddMeta;

    fn add(seq: u64) -> Entry {
        Entry::Add(AddMeta {
            key: StoreKey::Queue("q".into()),
            seq,
            priority: 4,
            persistent: true,
            expires: 0,
            dedup: None,
            timestamp: 0,
        })
    }

    fn at(seg: u64, off: u32) -> Loc {
        Loc { seg, off, len: 100 }
    }

    fn index(segs: &[u64]) -> Index {
        let mut i = Index::default();
        for &s in segs {
            i.segs.insert(s, SegStats::default());
        }
        i
    }

    #[test]
    fn a_remove_pins_its_segment_until_the_add_is_gone() {
        let mut i = index(&[1, 2]);
        i.apply(&add(10), at(1, 64));
        i.apply(&add(11), at(1, 164));
        i.apply(&Entry::Remove { seq: 10 }, at(2, 64));
        assert_eq!(i.segs[&1].live_items, 1);
        assert_eq!(i.segs[&2].live_items, 0);
        // Segment 2 is empty but cancels an Add in segment 1.
        assert!(!i.deletable(2));
        assert!(!i.deletable(1));
        i.apply(&Entry::Remove { seq: 11 }, at(2, 164));
        assert!(i.deletable(1));
        i.segs.remove(&1);
        assert!(i.deletable(2));
    }

    #[test]
    fn compaction_copies_move_liveness_and_redeliveries() {
        let mut i = index(&[1, 2, 3]);
        i.apply(&add(5), at(1, 64));
        i.apply(
            &Entry::Redelivered {
                seq: 5,
                deliveries: 2,
            },
            Loc {
                seg: 2,
                off: 64,
                len: 21,
            },
        );
        assert_eq!(i.segs[&2].live_items, 1);
        // Compaction copies the Add and its delivery count into segment 3.
        i.apply(&add(5), at(3, 64));
        i.apply(
            &Entry::Redelivered {
                seq: 5,
                deliveries: 2,
            },
            Loc {
                seg: 3,
                off: 164,
                len: 21,
            },
        );
        assert_eq!(i.segs[&1].live_items, 0);
        assert_eq!(i.segs[&2].live_items, 0);
        assert_eq!(i.segs[&3].live_items, 2);
        assert!(i.deletable(1) && i.deletable(2));
        assert_eq!(i.deliveries(5), 2);
        assert!(i.is_live_add(5, at(3, 64)));
        assert!(!i.is_live_add(5, at(1, 64)));
    }

    #[test]
    fn duplicate_ids_remember_their_carrier() {
        let mut i = index(&[1, 2, 3]);
        let with_id = |seq: u64, id: &str| {
            Entry::Add(AddMeta {
                key: StoreKey::Queue("q".into()),
                seq,
                priority: 4,
                persistent: true,
                expires: 0,
                dedup: Some(id.into()),
                timestamp: 0,
            })
        };
        i.apply(&with_id(1, "a"), at(1, 64));
        i.apply(&with_id(2, "b"), at(1, 164));
        i.apply(&with_id(3, "c"), at(2, 64));
        let one: BTreeSet<u64> = [1].into();
        let carried = i.dups.carried_by(&one);
        assert_eq!(carried.len(), 1);
        // The whole window goes, in age order.
        assert_eq!(
            carried[0].1,
            vec![Arc::from("a"), Arc::from("b"), Arc::from("c")]
        );
        // Carried forward into segment 3: segment 1 no longer holds them.
        i.apply(
            &Entry::DupIds {
                key: StoreKey::Queue("q".into()),
                ids: carried[0].1.clone(),
            },
            at(3, 64),
        );
        assert!(i.dups.carried_by(&one).is_empty());
        let all = i.dups.export();
        assert_eq!(
            all[0].1,
            vec![Arc::from("a"), Arc::from("b"), Arc::from("c")]
        );
    }

    #[test]
    fn carried_ids_keep_their_age_order_whichever_carrier_dies_first() {
        let mut i = index(&[1, 2, 3, 4, 5]);
        let q = StoreKey::Queue("q".into());
        let id = |n: u64| -> Arc<str> { format!("id-{n}").into() };
        let add = |n: u64| {
            Entry::Add(AddMeta {
                key: q.clone(),
                seq: n,
                priority: 4,
                persistent: true,
                expires: 0,
                dedup: Some(id(n)),
                timestamp: 0,
            })
        };
        for n in 1..=4 {
            i.apply(&add(n), at(if n <= 2 { 1 } else { 2 }, 64 * n as u32));
        }
        // Segment 1 dies: the window is carried into segment 3.
        let carried = i.dups.carried_by(&[1].into());
        i.apply(
            &Entry::DupIds {
                key: q.clone(),
                ids: carried[0].1.clone(),
            },
            at(3, 64),
        );
        // Segment 2 no longer carries anything: segment 3 has them all.
        assert!(i.dups.carried_by(&[2].into()).is_empty());
        let carried = i.dups.carried_by(&[3].into());
        assert_eq!(carried[0].1, (1..=4).map(id).collect::<Vec<_>>());
        i.apply(
            &Entry::DupIds {
                key: q.clone(),
                ids: carried[0].1.clone(),
            },
            at(5, 64),
        );
        assert_eq!(i.dups.export()[0].1, (1..=4).map(id).collect::<Vec<_>>());
        // A recovery reading what is left: an id older than the window
        // (0, from a segment not yet deleted), segment 4's record, an Add
        // after it, and segment 5's record.
        let mut r = Index::default();
        r.apply(&add(0), at(0, 64));
        let dup_ids = |ns: std::ops::RangeInclusive<u64>| Entry::DupIds {
            key: q.clone(),
            ids: ns.map(id).collect(),
        };
        r.apply(&add(3), at(2, 64));
        r.apply(&dup_ids(1..=4), at(4, 64));
        r.apply(&add(5), at(4, 1000));
        r.apply(&dup_ids(1..=5), at(5, 64));
        assert_eq!(r.dups.export()[0].1, (0..=5).map(id).collect::<Vec<_>>());
        assert_eq!(i.dups.export()[0].1, (1..=4).map(id).collect::<Vec<_>>());
    }

    #[test]
    fn subscriptions_are_live_until_removed() {
        let mut i = index(&[1, 2]);
        let sub = Entry::SubscriptionAdd {
            client_id: "c".into(),
            name: "s".into(),
            topic: crate::model::Destination::topic("t"),
            selector: None,
        };
        i.apply(&sub, at(1, 64));
        assert!(!i.deletable(1));
        assert!(i.is_live_sub("c", "s", at(1, 64)));
        i.apply(
            &Entry::SubscriptionRemove {
                client_id: "c".into(),
                name: "s".into(),
            },
            at(2, 64),
        );
        assert!(i.deletable(1));
        assert!(!i.deletable(2));
        assert!(i.subs.is_empty());
    }

    #[test]
    fn declared_queues_are_live_until_dropped_and_keep_their_place() {
        let q = |n: &str| crate::model::Destination::queue(n);
        let declared = |order: u64, name: &str| Entry::QueueDeclared {
            order,
            queue: q(name),
        };
        let mut i = index(&[1, 2, 3, 4]);
        i.apply(&declared(1, "a"), at(1, 64));
        i.apply(&declared(2, "b"), at(1, 164));
        assert_eq!(i.segs[&1].live_items, 2);
        // Declared again (a copy made by compaction, or the broker
        // repeating itself): the newer record is the live one, the place
        // stays.
        i.apply(&declared(1, "a"), at(2, 64));
        assert_eq!((i.segs[&1].live_items, i.segs[&2].live_items), (1, 1));
        assert!(i.is_live_queue(&q("a"), at(2, 64)));
        assert!(!i.is_live_queue(&q("a"), at(1, 64)));
        assert_eq!(i.declared_queues(), vec![q("a"), q("b")]);
        // A drop pins its segment until the declaration's is gone.
        i.apply(&Entry::QueueDropped { queue: q("b") }, at(3, 64));
        assert!(i.deletable(1));
        assert!(!i.deletable(3));
        assert_eq!(i.declared_queues(), vec![q("a")]);
        // Places for what is about to be written: a declared queue keeps
        // its own; a new one, or one dropped earlier in the group, gets the
        // next.
        let mut p = i.placing();
        assert_eq!(p.place(&Record::QueueDeclared { queue: q("a") }), 1);
        assert_eq!(p.place(&Record::QueueDeclared { queue: q("b") }), 3);
        assert_eq!(p.place(&Record::QueueDeclared { queue: q("b") }), 3);
        assert_eq!(p.place(&Record::QueueDropped { queue: q("a") }), 0);
        assert_eq!(p.place(&Record::QueueDeclared { queue: q("a") }), 4);
        assert_eq!(p.place(&Record::Remove { seq: 1 }), 0);
        // Nothing changed until written.
        assert_eq!(i.declarations, 2);
        i.apply(&declared(3, "b"), at(4, 64));
        assert_eq!(i.declared_queues(), vec![q("a"), q("b")]);
        i.apply(&Entry::QueueDropped { queue: q("a") }, at(4, 164));
        i.apply(&declared(4, "a"), at(4, 264));
        assert_eq!(i.declared_queues(), vec![q("b"), q("a")]);
    }
}
