//! Recovered messages handed over from the running journal's index, a chunk
//! at a time, once the broker serves.
//!
//! Recovery keeps every live message's key, priority and expiry in the
//! index (`RecoveryMeta::live`) anyway, for checkpoints; copying a deep
//! store's million entries into a list before serving cost a taking-over
//! slave a few hundred milliseconds. Walking the index later is safe
//! because of what can change it meanwhile: new messages have sequence
//! numbers above the walk's end; a recovered message cannot be delivered,
//! and so acknowledged, before its destination has them all; one that is
//! removed anyway (its queue deleted) is simply not found; compaction moves
//! records but not sequence numbers or keys.

use std::sync::Arc;

use super::{Catalog, read};
use crate::store::{LaterChunk, LaterMessages, LaterShape, StoreKey, StoredMessage};

pub(super) struct IndexWalk {
    catalog: Arc<Catalog>,
    shape: LaterShape,
    /// The next sequence number to look from, and the last to hand over.
    next: u64,
    last: u64,
}

impl IndexWalk {
    /// The live messages of the index now (up to its highest sequence
    /// number), except the scheduler's, which recovery hands over at once.
    pub(super) fn new(catalog: Arc<Catalog>) -> IndexWalk {
        let (keys, in_use, len, last) = {
            let idx = read(&catalog.index);
            let Some(meta) = idx.meta.as_ref() else {
                drop(idx);
                return IndexWalk::done(catalog);
            };
            let keys = meta.found.keys().to_vec();
            let scheduled = keys.iter().position(|k| *k == StoreKey::Scheduled);
            let mut in_use = vec![false; keys.len()];
            let mut len = 0;
            for l in idx.messages.values() {
                let key = l.key as usize;
                if Some(key) != scheduled
                    && let Some(u) = in_use.get_mut(key)
                {
                    *u = true;
                    len += 1;
                }
            }
            (keys, in_use, len, idx.max_seq)
        };
        IndexWalk {
            catalog,
            shape: LaterShape { keys, in_use, len },
            next: 0,
            last,
        }
    }

    fn done(catalog: Arc<Catalog>) -> IndexWalk {
        IndexWalk {
            catalog,
            shape: LaterShape::default(),
            next: 1,
            last: 0,
        }
    }
}

impl LaterMessages for IndexWalk {
    fn shape(&self) -> &LaterShape {
        &self.shape
    }

    fn next_chunk(&mut self, max: usize) -> LaterChunk<'_> {
        Box::pin(std::future::ready(Ok(self.walk(max))))
    }
}

impl IndexWalk {
    /// The next up to `max` live messages of the index.
    fn walk(&mut self, max: usize) -> Vec<(u32, StoredMessage)> {
        let mut out = Vec::new();
        if self.next > self.last {
            return out;
        }
        // The writer waits while this lock is held: a chunk's worth of
        // lookups, well under a millisecond.
        let idx = read(&self.catalog.index);
        out.reserve(max);
        for (&seq, l) in idx.messages.range(self.next..=self.last) {
            self.next = seq + 1;
            let key = l.key;
            let Some(store_key) = self.shape.keys.get(key as usize) else {
                continue;
            };
            if *store_key == StoreKey::Scheduled {
                continue;
            }
            let (deliveries, not_before) = idx.delivery(seq);
            out.push((
                key,
                StoredMessage {
                    key: store_key.clone(),
                    seq,
                    priority: l.priority,
                    expires: l.expires,
                    weight: l.at.len,
                    deliveries,
                    not_before,
                    message: None,
                    schedule: None,
                },
            ));
            if out.len() >= max {
                return out;
            }
        }
        self.next = self.last + 1;
        out
    }
}
