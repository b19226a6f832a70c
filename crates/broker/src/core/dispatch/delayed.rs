//! Messages waiting out a redelivery delay (the destination's redelivery
//! policy: ActiveMQ's broker-side `redeliveryPolicy`).
//!
//! A message that goes back after a NACK or a rollback is parked here,
//! keyed by when it is due, instead of going straight back to the ready
//! list; the messages behind it go on being dispatched. The owner of the
//! dispatcher sleeps until the earliest due time ([`wake_at`], one timer
//! per destination rather than a task per message), and every dispatch
//! first moves what is due back to the ready list, where the message takes
//! its old place (it keeps its arrival).

use std::collections::BTreeMap;

use super::Entry;

/// The parked messages, by (due time in ms since the epoch, seq).
#[derive(Debug, Default)]
pub(super) struct Delayed {
    parked: BTreeMap<(u64, u64), Entry>,
}

impl Delayed {
    /// Parks `entry` until `due_ms`.
    pub(super) fn park(&mut self, due_ms: u64, entry: Entry) {
        self.parked.insert((due_ms, entry.seq), entry);
    }

    /// Takes out every entry due at `now_ms`, earliest first.
    pub(super) fn take_due(&mut self, now_ms: u64) -> Vec<Entry> {
        let mut due = Vec::new();
        while let Some(entry) = self.parked.first_entry() {
            if entry.key().0 > now_ms {
                break;
            }
            due.push(entry.remove());
        }
        due
    }

    /// When the earliest parked entry is due.
    pub(super) fn next_due(&self) -> Option<u64> {
        self.parked.keys().next().map(|(due, _)| *due)
    }

    pub(super) fn len(&self) -> usize {
        self.parked.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.parked.is_empty()
    }

    pub(super) fn clear(&mut self) {
        self.parked.clear();
    }

    /// Takes out the entries `pick` chooses, at most `max` of them.
    pub(super) fn take_where(&mut self, max: usize, pick: impl Fn(&Entry) -> bool) -> Vec<Entry> {
        let keys: Vec<(u64, u64)> = self
            .parked
            .iter()
            .filter(|(_, e)| pick(e))
            .map(|(k, _)| *k)
            .take(max)
            .collect();
        keys.iter().filter_map(|k| self.parked.remove(k)).collect()
    }

    /// The parked entries (in due order).
    pub(super) fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.parked.values()
    }
}

/// Resolves at `due_ms` (ms since the epoch, the clock messages' expiry
/// uses), or never when nothing is parked: the branch of a destination's
/// select that wakes it for its next delayed message.
pub(crate) async fn wake_at(due_ms: Option<u64>) {
    let Some(due) = due_ms else {
        return std::future::pending().await;
    };
    let wait = due.saturating_sub(crate::model::now_ms());
    // One millisecond more, so that the wake-up finds the entry due.
    tokio::time::sleep(std::time::Duration::from_millis(wait + 1)).await;
}
