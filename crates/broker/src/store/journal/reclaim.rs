//! Giving space back: deleting segments nothing live is left in (their
//! deletion recorded first, so recovery knows they went on purpose),
//! compacting old, mostly dead ones a step at a time while the writer is
//! idle, and taking new messages again once a full disk has room.

use super::format::{Entry, FRAME_LEN, Frame, Writer, placed_entry};
use super::index::Loc;
use super::{COMPACT_STEP, Group, JournalStore, format, read, recovery, segment, write};
use crate::model::now_ms;
use crate::store::{Record, StoreError};

/// A batch marker record's length (frame and payload: type and count).
const MARKER_LEN: usize = FRAME_LEN + 5;

impl JournalStore {
    /// After space was freed: gives the head the preallocation a full disk
    /// denied it, and accepts new messages again once there is room.
    pub(super) fn regain_space(&mut self) {
        let want = self.cfg.segment_bytes;
        if let Some(h) = self.head.as_mut()
            && h.allocated < want
        {
            match segment::grow(&h.file, h.allocated, want) {
                Ok(len) => {
                    h.allocated = h.allocated.max(len);
                    let (id, allocated) = (h.id, h.allocated);
                    let mut idx = write(&self.catalog.index);
                    if let Some(s) = idx.segs.get_mut(&id) {
                        s.file_bytes = allocated;
                    }
                    self.usage.set(idx.disk_bytes());
                    self.usage.set_data(idx.data_bytes());
                }
                Err(e) => tracing::warn!(error = %e, "cannot extend the journal's preallocation"),
            }
        }
        if self.usage.is_short_of_space() {
            // Twice the reserve, so that sends do not flap at the edge.
            if self.room_for(self.reserve()).is_ok() {
                self.usage.space_freed();
                tracing::info!("the journal's disk has room again: new messages are accepted");
            }
        }
    }

    /// Deletes every segment that holds nothing live and nothing another
    /// segment depends on.
    pub(super) fn delete_dead(&mut self) -> Result<bool, StoreError> {
        self.deleting = true;
        let done = self.delete_dead_now();
        self.deleting = false;
        done
    }

    fn delete_dead_now(&mut self) -> Result<bool, StoreError> {
        let head = self.head()?.id;
        let dead: Vec<u64> = {
            let idx = read(&self.catalog.index);
            idx.segs
                .keys()
                .copied()
                .filter(|&s| s != head && idx.deletable(s))
                .collect()
        };
        if dead.is_empty() {
            return Ok(false);
        }
        // Duplicate-detection ids these segments carry move to the head,
        // and the deletion is recorded, so recovery does not take the
        // segments for lost.
        let carried = {
            let mut idx = write(&self.catalog.index);
            // Ids past their age are not worth carrying forward.
            idx.dups.expire(now_ms());
            idx.dups.carried_by(&dead.iter().copied().collect())
        };
        {
            let mut w = Writer::default();
            let mut records = Vec::new();
            for (key, ids) in carried {
                for chunk in ids.chunks(4096) {
                    let start = w.buf.len();
                    w.dup_ids(&key, chunk);
                    records.push((
                        start,
                        w.buf.len() - start,
                        Entry::DupIds {
                            key: key.clone(),
                            ids: chunk.to_vec(),
                        },
                    ));
                }
            }
            let start = w.buf.len();
            w.dropped(&dead);
            // The index notes it too: a checkpoint taken after this record
            // must still tell recovery these segments went on purpose.
            records.push((
                start,
                w.buf.len() - start,
                Entry::Dropped {
                    segments: dead.clone(),
                },
            ));
            self.append(Group {
                bytes: w.buf,
                records,
            })?;
        }
        // Whatever made them dead (acknowledgements, compaction copies)
        // and the carried ids must be on disk before they go.
        self.sync()?;
        self.verify_lock("not deleting journal segments")?;
        for &s in &dead {
            // A segment holding a seal limits older segments; once it goes,
            // anything a stale master wrote past those limits must already be
            // gone from them.
            let sealed = write(&self.catalog.index)
                .seals
                .remove(&s)
                .unwrap_or_default();
            for (older, end) in sealed {
                if let Some(f) = read(&self.catalog.files).get(&older).cloned()
                    && f.metadata().is_ok_and(|m| m.len() > end)
                {
                    f.set_len(end)
                        .and_then(|()| f.sync_all())
                        .map_err(|e| StoreError::io("cannot trim a sealed segment", e))?;
                }
            }
            write(&self.catalog.files).remove(&s);
            if let Err(e) = std::fs::remove_file(segment::path(&self.dir, s)) {
                tracing::warn!(segment = s, error = %e, "cannot delete journal segment");
            }
            write(&self.catalog.index).segs.remove(&s);
            if self.compaction.as_ref().is_some_and(|c| c.seg == s) {
                self.compaction = None;
            }
        }
        segment::sync_dir(&self.dir)
            .map_err(|e| StoreError::io("cannot sync journal directory", e))?;
        {
            let idx = read(&self.catalog.index);
            self.usage.set(idx.disk_bytes());
            self.usage.set_data(idx.data_bytes());
        }
        tracing::debug!(segments = ?dead, "deleted dead journal segments");
        Ok(true)
    }

    /// Picks the oldest segment worth compacting: not among the newest two
    /// closed ones (their messages are likely still being consumed), no
    /// older segment it depends on, and less than `compact-below` live.
    pub(super) fn pick_compaction(&self) -> Option<u64> {
        let head = self.head.as_ref()?.id;
        let idx = read(&self.catalog.index);
        let closed: Vec<u64> = idx.segs.keys().copied().filter(|&s| s != head).collect();
        let n = closed.len();
        closed.into_iter().take(n.saturating_sub(2)).find(|&s| {
            let st = &idx.segs[&s];
            let data = st.end.saturating_sub(st.start) as f64;
            st.live_items > 0
                && idx.independent(s)
                && (st.live_bytes as f64) < self.cfg.compact_below * data
        })
    }

    /// Copies the next stretch of live records of the segment being
    /// compacted to the head.
    pub(super) fn compact_step(&mut self) -> Result<(), StoreError> {
        let Some(mut c) = self.compaction.take() else {
            return Ok(());
        };
        let mut group = Group::default();
        let mut count = 0u32;
        // Room for the batch marker, written once the count is known.
        let mut body = vec![0u8; MARKER_LEN];
        let mut entries = Vec::new();
        let read_err = |e| StoreError::io("cannot read segment for compaction", e);
        while c.at < c.end && body.len() < COMPACT_STEP {
            // The window for the next record, read without the index's lock.
            c.ensure(FRAME_LEN).map_err(read_err)?;
            if Frame::at(c.rest()) == Frame::Incomplete && c.rest().len() >= FRAME_LEN {
                // A record the window cuts: read it whole (the length is
                // below MAX_PAYLOAD, or the frame would be Bad).
                let mut len = [0u8; 4];
                len.copy_from_slice(&c.rest()[..4]);
                let len = u32::from_le_bytes(len) as usize;
                c.ensure(FRAME_LEN + len).map_err(read_err)?;
            }
            let mut damaged = false;
            let idx = read(&self.catalog.index);
            while c.at < c.end && body.len() < COMPACT_STEP {
                let window_ends_early = c.base + c.data.len() < c.end;
                if window_ends_early && c.rest().len() < FRAME_LEN {
                    break;
                }
                let len = match Frame::at(c.rest()) {
                    Frame::Record { len } => len,
                    Frame::End => {
                        c.at = c.end;
                        break;
                    }
                    // Cut by the window: the next one has it.
                    Frame::Incomplete if window_ends_early => break,
                    Frame::Incomplete | Frame::Bad(_) => {
                        damaged = true;
                        break;
                    }
                };
                let off = c.at;
                c.at += FRAME_LEN + len;
                let frame = &c.data[off - c.base..c.at - c.base];
                let loc = Loc {
                    seg: c.seg,
                    off: off as u32,
                    len: frame.len() as u32,
                };
                let Ok(entry) = format::decode(&frame[FRAME_LEN..]) else {
                    continue;
                };
                let keep = match &entry {
                    Entry::Add(m) => idx.is_live_add(m.seq, loc),
                    Entry::SubscriptionAdd {
                        client_id, name, ..
                    } => idx.is_live_sub(client_id, name, loc),
                    // Copied as it is: with its place in declaration order.
                    Entry::QueueDeclared { queue, .. } => idx.is_live_queue(queue, loc),
                    _ => false,
                };
                if !keep {
                    continue;
                }
                let redelivered = match &entry {
                    Entry::Add(m) => Some((m.seq, idx.delivery(m.seq)))
                        .filter(|(_, (d, until))| *d > 0 || *until > 0),
                    _ => None,
                };
                // A scheduled message's progress moves with its Add.
                let scheduled = match &entry {
                    Entry::Add(m) => idx.schedule(m.seq).map(|s| (m.seq, s)),
                    _ => None,
                };
                entries.push((body.len(), frame.len(), entry));
                body.extend_from_slice(frame);
                count += 1;
                if let Some((seq, (deliveries, until_ms))) = redelivered {
                    // A delayed message stays delayed in the copy.
                    let record = if until_ms > 0 {
                        Record::Delayed {
                            seq,
                            deliveries,
                            until_ms,
                        }
                    } else {
                        Record::Redelivered { seq, deliveries }
                    };
                    let mut w = Writer::default();
                    w.record(&record);
                    entries.push((body.len(), w.buf.len(), placed_entry(&record, 0)));
                    body.extend_from_slice(&w.buf);
                    count += 1;
                }
                if let Some((seq, s)) = scheduled {
                    let (due, fired) = (s.due, s.fired);
                    let mut w = Writer::default();
                    w.record(&Record::Schedule { seq, due, fired });
                    entries.push((body.len(), w.buf.len(), Entry::Schedule { seq, due, fired }));
                    body.extend_from_slice(&w.buf);
                    count += 1;
                }
            }
            drop(idx);
            if damaged {
                // Damage a recovery accepted: the records after it are live
                // too (stopping here would leave them, and pick the segment
                // again and again). Rare: the rest of the segment is read
                // whole to find the next record.
                c.ensure(c.end - c.at).map_err(read_err)?;
                let from = c.at - c.base + 1;
                c.at = recovery::resync(&c.data, from).map_or(c.end, |o| c.base + o);
            }
        }
        if count > 0 {
            // The copies go in as one batch, like any other: its marker
            // takes the room kept for it at the front of `body` (so the
            // step's copies are not copied once more behind it).
            let shift = if count > 1 {
                let mut w = Writer::default();
                w.batch_marker(count);
                body[..MARKER_LEN].copy_from_slice(&w.buf);
                0
            } else {
                body.drain(..MARKER_LEN);
                MARKER_LEN
            };
            group.bytes = body;
            group.records = entries
                .into_iter()
                .map(|(off, len, e)| (off - shift, len, e))
                .collect();
            self.append(group)?;
        }
        if c.at < c.end {
            self.compaction = Some(c);
        } else {
            tracing::debug!(segment = c.seg, "journal segment compacted");
        }
        Ok(())
    }
}
