//! The marshalling cache: the per-direction table through which repeated
//! ids and destinations travel as a 2-byte index instead of in full.
//!
//! The sender decides the indices; the receiver only stores what it is told.
//! Eviction is the sender's business too, and it follows the Java
//! implementation so that both ends keep the same table whichever side is
//! Java: indices are handed out round-robin, a value is stored only while
//! the table has room, and before each frame the oldest entries are dropped
//! until 100 slots are free.

use std::collections::HashMap;

use crate::Command;
use crate::error::{Error, Result};

/// The cache size used when the negotiated size is 0 (as Java does).
pub(crate) const DEFAULT_CACHE_SIZE: usize = (i16::MAX / 2) as usize;
/// Slots kept free by the eviction sweep before each frame.
const FREE_SPACE: usize = 100;

/// A cached value: `None` is Java's `null`, which is cached like any other.
pub(crate) type Key = Option<Command>;

/// A table slot. Boxed: a peer can make the table 16383 entries long (by
/// offering a cache size of 0), and unboxed commands would make that many
/// megabytes per connection.
type Slot = Option<Box<Command>>;

/// Clamps a negotiated size to what a 2-byte signed index can address.
pub(crate) fn effective_size(negotiated: i32) -> usize {
    if negotiated <= 0 {
        DEFAULT_CACHE_SIZE
    } else {
        (negotiated as usize).min(i16::MAX as usize)
    }
}

/// One addition: the `next` index before it, the slot it overwrote (and
/// what was there) if it stored, and its key.
type Added = (usize, Option<(usize, Slot)>, Key);

/// The sending side's table.
#[derive(Debug)]
pub(crate) struct EncodeCache {
    slots: Vec<Slot>,
    index: HashMap<Key, i16>,
    next: usize,
    evict: usize,
    /// Additions made while encoding the current frame, undone if the frame
    /// fails to encode (nothing was sent, so the peer never saw them).
    journal: Vec<Added>,
}

impl EncodeCache {
    pub(crate) fn new(size: usize) -> Self {
        EncodeCache {
            slots: vec![None; size.max(1)],
            index: HashMap::new(),
            next: 0,
            evict: 0,
            journal: Vec::new(),
        }
    }

    /// Drops the oldest entries until `FREE_SPACE` slots are free, at most
    /// one full turn (Java loops forever on a table smaller than the free
    /// space; this stops).
    pub(crate) fn sweep(&mut self) {
        self.journal.clear();
        let len = self.slots.len();
        let mut turns = 0;
        while self.index.len() + FREE_SPACE > len && turns < len {
            let old = self.slots[self.evict].take();
            self.index.remove(&old.map(|b| *b));
            self.evict = (self.evict + 1) % len;
            turns += 1;
        }
    }

    pub(crate) fn lookup(&self, key: &Key) -> Option<i16> {
        self.index.get(key).copied()
    }

    /// Assigns the next index; -1 when the table is full (the value then
    /// travels in full and the receiver does not store it).
    pub(crate) fn add(&mut self, key: Key) -> i16 {
        let len = self.slots.len();
        let i = self.next;
        self.next = (self.next + 1) % len;
        if self.index.len() < len {
            let old = std::mem::replace(&mut self.slots[i], key.clone().map(Box::new));
            self.index.insert(key.clone(), i as i16);
            self.journal.push((i, Some((i, old)), key));
            i as i16
        } else {
            self.journal.push((i, None, None));
            -1
        }
    }

    /// Forgets the additions of a frame that was not sent.
    pub(crate) fn rollback(&mut self) {
        while let Some((next, stored, key)) = self.journal.pop() {
            self.next = next;
            if let Some((slot, old)) = stored {
                self.index.remove(&key);
                self.slots[slot] = old;
            }
        }
    }
}

/// The receiving side's table.
#[derive(Debug)]
pub(crate) struct DecodeCache {
    slots: Vec<Slot>,
    /// Stores made while decoding the current frame, undone when the frame
    /// turns out to be incomplete and will be decoded again.
    journal: Vec<(usize, Slot)>,
}

impl DecodeCache {
    pub(crate) fn new(size: usize) -> Self {
        DecodeCache {
            slots: vec![None; size.max(1)],
            journal: Vec::new(),
        }
    }

    fn slot(&self, index: i16) -> Result<usize> {
        usize::try_from(index)
            .ok()
            .filter(|i| *i < self.slots.len())
            .ok_or_else(|| {
                Error::malformed(format!(
                    "cache index {index} outside the negotiated cache of {} entries",
                    self.slots.len()
                ))
            })
    }

    pub(crate) fn set(&mut self, index: i16, value: Key) -> Result<()> {
        if index == -1 {
            return Ok(());
        }
        let i = self.slot(index)?;
        let old = std::mem::replace(&mut self.slots[i], value.map(Box::new));
        self.journal.push((i, old));
        Ok(())
    }

    /// The value at `index`; an index never set reads as null, as in Java.
    pub(crate) fn get(&self, index: i16) -> Result<Key> {
        Ok(self.slots[self.slot(index)?].as_deref().cloned())
    }

    pub(crate) fn begin(&mut self) {
        self.journal.clear();
    }

    pub(crate) fn rollback(&mut self) {
        while let Some((i, old)) = self.journal.pop() {
            self.slots[i] = old;
        }
    }
}
