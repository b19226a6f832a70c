//! Adds dispatched while they are being stored (`store.concurrent-dispatch`),
//! and the acknowledgements that cancel them.
//!
//! A queue message sent with a receipt is normally handed to its queue
//! once it is durable, so a consumer's acknowledgement reaches the store
//! after the message did: each message costs an insert and a delete, each
//! in a group commit of its own. Dispatched as soon as the writer has
//! checked it for duplicates, a message is often consumed while its Add
//! still waits for the group ahead of it; the acknowledgement then cancels
//! the Add, and neither is written (ActiveMQ's KahaDB does the same with
//! `concurrentStoreAndDispatchQueues`, its default).
//!
//! Each such Add is tracked here from its submission until its group is
//! answered:
//! - `Pending` until the writer hands its group to the backend; a Remove
//!   of it meanwhile cancels it (the Remove is dropped) and the writer
//!   drops the Add.
//! - `Writing` from then on: a Remove is kept, and goes to the store after
//!   the Add (it is submitted after the writer took the Add, so it is in a
//!   later group).
//!
//! Reading a tracked message back (a paged-out body) waits until its
//! group is answered, so it never reads a row not yet committed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, oneshot};

use super::{Batch, Record};

/// The sequence numbers of the messages `batch` adds.
pub(crate) fn added(batch: &Batch) -> impl Iterator<Item = u64> + '_ {
    batch.iter().filter_map(|r| match r {
        Record::Add { message, .. } => Some(message.seq),
        _ => None,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Pending,
    Cancelled,
    Writing,
}

/// A tracked Add and the batch it came in.
#[derive(Debug)]
struct Tracked {
    state: State,
    batch: Arc<Batched>,
}

/// A batch of tracked Adds: once every one is cancelled, its submitter is
/// told at once (its receipt need not wait for a write that no longer
/// holds anything of it).
#[derive(Debug)]
struct Batched {
    /// Its Adds not cancelled.
    left: AtomicUsize,
    cancelled: Mutex<Option<oneshot::Sender<()>>>,
}

/// The tracked Adds, by sequence number; shared by the store's handle and
/// its writer.
#[derive(Debug, Default)]
pub(crate) struct PendingAdds {
    states: Mutex<HashMap<u64, Tracked>>,
    /// How many are tracked: a Remove looks only when some are.
    count: AtomicUsize,
    settled: Notify,
}

impl PendingAdds {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Tracked>> {
        // Every update leaves the map consistent.
        self.states
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Tracks the Adds of `batch`, about to be dispatched before they are
    /// durable. The receiver resolves if acknowledgements cancel them all.
    pub(crate) fn track(&self, batch: &Batch) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let seqs: Vec<u64> = added(batch).collect();
        let batched = Arc::new(Batched {
            left: AtomicUsize::new(seqs.len()),
            cancelled: Mutex::new(Some(tx)),
        });
        let mut states = self.lock();
        for seq in seqs {
            let tracked = Tracked {
                state: State::Pending,
                batch: batched.clone(),
            };
            states.insert(seq, tracked);
        }
        self.count.store(states.len(), Ordering::Release);
        rx
    }

    /// Whether nothing is tracked (so nothing can be cancelled).
    pub(crate) fn is_empty(&self) -> bool {
        self.count.load(Ordering::Acquire) == 0
    }

    /// Drops from `batch` the Removes of Adds not yet written, cancelling
    /// those Adds; returns how many it cancelled.
    pub(crate) fn cancel(&self, batch: &mut Batch) -> usize {
        if self.is_empty() {
            return 0;
        }
        let mut states = self.lock();
        let before = batch.len();
        batch.retain(|r| {
            let Record::Remove { seq } = r else {
                return true;
            };
            let Some(t) = states.get_mut(seq).filter(|t| t.state == State::Pending) else {
                return true;
            };
            t.state = State::Cancelled;
            if t.batch.left.fetch_sub(1, Ordering::AcqRel) == 1 {
                let told = t
                    .batch
                    .cancelled
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take();
                if let Some(tx) = told {
                    let _ = tx.send(());
                }
            }
            false
        });
        before - batch.len()
    }

    /// The writer is about to hand `batch` to the backend: its tracked
    /// Adds are written from now on, and the cancelled ones are not
    /// (and are forgotten). A cancelled Add with a duplicate-detection id
    /// leaves the id: it becomes the Add of an empty message followed by
    /// its Remove, which a backend may fold into the id alone, so that a
    /// resend after a restart is still dropped, as for a message consumed
    /// after its write.
    ///
    /// Returns whether every Add in `batch` was cancelled: its submitter
    /// has had its answer already, and this group's answer releases
    /// nobody.
    pub(crate) fn write(&self, batch: &mut Batch) -> bool {
        let mut states = self.lock();
        let mut kept = Vec::with_capacity(batch.len());
        let (mut adds, mut cancelled) = (0usize, 0usize);
        for r in batch.drain(..) {
            let Record::Add {
                key,
                message,
                dedup,
            } = &r
            else {
                kept.push(r);
                continue;
            };
            adds += 1;
            match states.get_mut(&message.seq).map(|t| &mut t.state) {
                Some(s @ State::Pending) => {
                    *s = State::Writing;
                    kept.push(r);
                }
                Some(State::Cancelled) => {
                    cancelled += 1;
                    states.remove(&message.seq);
                    if let Some(id) = dedup {
                        kept.push(Record::Add {
                            key: key.clone(),
                            message: Arc::new(message.emptied()),
                            dedup: Some(id.clone()),
                        });
                        kept.push(Record::Remove { seq: message.seq });
                    }
                }
                _ => kept.push(r),
            }
        }
        *batch = kept;
        self.count.store(states.len(), Ordering::Release);
        drop(states);
        self.settled.notify_waiters();
        adds > 0 && cancelled == adds
    }

    /// Stops tracking `seqs`: their group is answered (or they were found
    /// to be duplicates and never written).
    pub(crate) fn settle(&self, seqs: impl IntoIterator<Item = u64>) {
        let mut states = self.lock();
        let before = states.len();
        for seq in seqs {
            states.remove(&seq);
        }
        self.count.store(states.len(), Ordering::Release);
        let changed = states.len() != before;
        drop(states);
        if changed {
            self.settled.notify_waiters();
        }
    }

    /// Stops tracking everything: the writer has stopped, and nothing
    /// tracked will be written now.
    pub(crate) fn clear(&self) {
        self.lock().clear();
        self.count.store(0, Ordering::Release);
        self.settled.notify_waiters();
    }

    /// Waits until none of `seqs` is tracked any more.
    pub(crate) async fn written(&self, seqs: &[u64]) {
        loop {
            // Registered before looking, so a settle in between wakes it.
            let settled = self.settled.notified();
            if self.is_empty() {
                return;
            }
            let any = {
                let states = self.lock();
                seqs.iter().any(|s| states.contains_key(s))
            };
            if !any {
                return;
            }
            settled.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreKey;

    fn add(seq: u64) -> Record {
        Record::test_add(seq)
    }

    fn seqs(batch: &Batch) -> Vec<(bool, u64)> {
        batch
            .iter()
            .map(|r| match r {
                Record::Add { message, .. } => (true, message.seq),
                Record::Remove { seq } => (false, *seq),
                _ => (false, 0),
            })
            .collect()
    }

    #[test]
    fn a_remove_before_the_write_cancels_the_add_and_one_after_it_is_kept() {
        let p = PendingAdds::default();
        let mut all_cancelled = p.track(&vec![add(1), add(2)]);
        let mut acks = vec![Record::Remove { seq: 1 }, Record::Remove { seq: 9 }];
        assert_eq!(p.cancel(&mut acks), 1);
        assert_eq!(seqs(&acks), vec![(false, 9)], "untracked removes stay");
        assert!(all_cancelled.try_recv().is_err(), "2 is not cancelled");

        let mut group = vec![add(1), add(2)];
        assert!(!p.write(&mut group), "2 is written: its submitter waits");
        assert_eq!(
            seqs(&group),
            vec![(true, 2)],
            "the cancelled add is dropped"
        );

        let mut late = vec![Record::Remove { seq: 2 }];
        p.cancel(&mut late);
        assert_eq!(seqs(&late), vec![(false, 2)], "being written: kept");
        p.settle([2]);
        assert_eq!(p.count.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_batch_whose_adds_are_all_cancelled_is_told_at_once() {
        let p = PendingAdds::default();
        let mut all_cancelled = p.track(&vec![add(1), add(2)]);
        let mut other = p.track(&vec![add(3)]);
        p.cancel(&mut vec![Record::Remove { seq: 2 }]);
        assert!(all_cancelled.try_recv().is_err());
        p.cancel(&mut vec![Record::Remove { seq: 1 }]);
        assert_eq!(all_cancelled.try_recv(), Ok(()));
        assert!(other.try_recv().is_err(), "another batch is not told");
    }

    #[test]
    fn a_cancelled_add_with_a_duplicate_id_leaves_the_id() {
        let p = PendingAdds::default();
        let with_id = Record::Add {
            key: StoreKey::Queue("q".into()),
            message: crate::model::test_message(7, 100),
            dedup: Some("p:7".into()),
        };
        p.track(&vec![with_id.clone()]);
        p.cancel(&mut vec![Record::Remove { seq: 7 }]);
        let mut group = vec![with_id];
        assert!(p.write(&mut group), "its submitter was released");
        assert_eq!(seqs(&group), vec![(true, 7), (false, 7)]);
        let Record::Add { message, dedup, .. } = &group[0] else {
            unreachable!()
        };
        assert!(message.body.is_empty(), "the body is not written again");
        assert_eq!(dedup.as_deref(), Some("p:7"));
    }

    #[test]
    fn untracked_adds_are_written_as_they_are() {
        let p = PendingAdds::default();
        let mut group = vec![add(5), Record::Remove { seq: 5 }];
        assert!(!p.write(&mut group));
        assert_eq!(group.len(), 2);
    }

    #[tokio::test]
    async fn reading_back_waits_until_the_add_is_answered() {
        let p = std::sync::Arc::new(PendingAdds::default());
        p.track(&vec![add(3)]);
        let reader = {
            let p = p.clone();
            tokio::spawn(async move { p.written(&[3]).await })
        };
        tokio::task::yield_now().await;
        assert!(!reader.is_finished());
        let mut group = vec![add(3)];
        p.write(&mut group);
        tokio::task::yield_now().await;
        assert!(!reader.is_finished(), "written, not yet answered");
        p.settle([3]);
        tokio::time::timeout(std::time::Duration::from_secs(10), reader)
            .await
            .unwrap()
            .unwrap();
        p.written(&[4]).await;
    }
}
