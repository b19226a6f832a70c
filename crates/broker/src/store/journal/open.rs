//! Opening the journal after a restart or crash: every segment is read
//! back ([`recovery`](super::recovery) scans each), what was found is
//! judged against what the manifests and the progress stamp say should be
//! there, losses are reported (and refused, by default), repairs are made
//! only once the broker will start, and a new head segment seals the older
//! ones.

use super::format::{
    Entry, FIXED_LEN, FRAME_LEN, Frame, HEADER_LEN, Listed, STAMP_AT, STAMP_LEN, SegmentHeader,
    Stamp,
};
use super::index::{Index, SegStats};
use super::later::IndexWalk;
use super::recovery::{Expect, Loss};
use super::{
    JournalStore, OnCorruption, checkpoint, format, index, read, recovery, segment, write,
};
use crate::model::now_ms;
use crate::store::{DurableSubscription, Later, Recovered, StoreError};
use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

impl JournalStore {
    pub(super) fn recover_sync(&mut self) -> Result<Recovered, StoreError> {
        let started = Instant::now();
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| StoreError::io(format!("cannot create {}", self.dir.display()), e))?;
        if let Err(e) = segment::remove_unfinished(&self.dir) {
            tracing::warn!(error = %e, "cannot remove unfinished journal segments");
        }
        let ids = segment::list(&self.dir)
            .map_err(|e| StoreError::io(format!("cannot list {}", self.dir.display()), e))?;
        let limits = seal_limits(&self.dir, &ids);
        let mut stale = BTreeSet::new();
        let mut ids = ids;
        ids.retain(|id| match limits.get(id) {
            Some(Limit::Stale { epoch, sealed_by }) => {
                let path = segment::path(&self.dir, *id);
                let aside = path.with_extension("stale");
                tracing::warn!(segment = id, epoch, newer_epoch = sealed_by, moved_to = %aside.display(),
                    "ignoring a segment a stale master created after a newer master took over");
                let _ = std::fs::rename(&path, &aside);
                stale.insert(*id);
                false
            }
            _ => true,
        });

        // Read everything first, changing nothing: if confirmed data turns
        // out to be missing, the broker may refuse to start, and the files
        // must then be as the operator will back them up. With a usable
        // index checkpoint, only what was written after it is read.
        let t_ckpt = Instant::now();
        let checkpoint = self.usable_checkpoint();
        let ckpt_ms = t_ckpt.elapsed().as_millis() as u64;
        let t_read = Instant::now();
        let (back, used_checkpoint) = match checkpoint {
            Some(c) => match self.read_back(&ids, &limits, Some(c)) {
                Err(ReadError::Checkpoint(why)) => {
                    tracing::warn!(reason = %why, "the journal's index checkpoint does not match the journal: reading the whole journal");
                    checkpoint::discard(&self.dir);
                    (self.read_back(&ids, &limits, None), false)
                }
                other => (other, true),
            },
            None => (self.read_back(&ids, &limits, None), false),
        };
        self.from_checkpoint = used_checkpoint;
        let ReadBack {
            mut index,
            mut report,
            found,
            unreadable,
            mut fixes,
        } = back.map_err(|e| match e {
            ReadError::Store(e) => e,
            ReadError::Checkpoint(why) => StoreError::Failed(why.into()),
        })?;

        let read_ms = t_read.elapsed().as_millis() as u64;
        let losses = self.judge(&found, &unreadable, &stale, &index, &mut fixes, &mut report);
        if !losses.is_empty() {
            let text = damage_report(&self.dir, &losses);
            match self.cfg.on_corruption {
                OnCorruption::Refuse => {
                    tracing::error!(
                        "JOURNAL DAMAGED: refusing to start (journal.on-corruption = \"refuse\"); the files are left as they are"
                    );
                    return Err(StoreError::Corrupt(text.into()));
                }
                OnCorruption::Skip => {
                    tracing::error!(
                        "JOURNAL DAMAGED, starting with what is left (journal.on-corruption = \"skip\"): {text}"
                    );
                }
            }
        }
        self.usage.record_losses(
            losses.len() as u64,
            losses.iter().filter_map(|l| l.records).sum(),
            losses.iter().filter_map(|l| l.adds).sum(),
            losses.iter().map(|l| l.bytes).sum(),
        );
        for fix in fixes {
            self.apply(fix, &found)?;
        }

        let t_build = Instant::now();
        let mut messages = crate::store::RecoveredMessages::with_keys(
            index
                .meta
                .as_ref()
                .map_or_else(Vec::new, |m| m.found.keys().to_vec()),
        );
        // Most stores have no redelivered or scheduled messages: skip the
        // lookups then (a million of them cost more than the rest).
        let (redelivered, scheduled) =
            (!index.redeliveries.is_empty(), !index.schedules.is_empty());
        let mut push = |seq: u64, l: &index::Live| {
            let delivery = if redelivered {
                index.delivery(seq)
            } else {
                (0, 0)
            };
            messages.push_compact(seq, l.key, l.priority, l.expires, l.at.len, delivery);
            if scheduled && let Some(state) = index.schedule(seq) {
                messages.set_schedule(seq, state);
            }
        };
        if self.later {
            // The rest come from the index once the broker serves
            // (`later.rs`); the scheduler's few are needed now.
            let mut seqs: Vec<u64> = index.schedules.keys().copied().collect();
            seqs.sort_unstable();
            for seq in seqs {
                if let Some(l) = index.messages.get(&seq) {
                    push(seq, l);
                }
            }
        } else {
            for (&seq, l) in &index.messages {
                push(seq, l);
            }
        }
        // The running journal keeps the keys: its checkpoints need them.
        index.meta.get_or_insert_with(Default::default);
        let build_ms = t_build.elapsed().as_millis() as u64;
        let subscriptions: Vec<DurableSubscription> = index
            .subs
            .iter()
            .map(|((client_id, name), s)| DurableSubscription {
                client_id: client_id.clone(),
                name: name.clone(),
                topic: s.topic.clone(),
                selector: s.selector.clone(),
            })
            .collect();
        let queues = index.declared_queues();
        let max_seq = index.max_seq;
        index.dups.expire(now_ms());
        let duplicate_ids = index.dups.export();
        let next_id = segment::list(&self.dir)
            .ok()
            .and_then(|all| all.last().copied())
            .max(ids.last().copied())
            .map_or(1, |l| l + 1);
        // The segment that was newest gets a successor: its stamp says so
        // once that exists (version 2 headers only).
        let previous = found.last().and_then(|f| {
            f.stamp.map(|_| {
                let stamp = Stamp {
                    end: f.scanned.end,
                    records: f.scanned.records,
                    adds: f.scanned.adds,
                    rolled: true,
                };
                (f.file.try_clone(), stamp)
            })
        });
        let files: HashMap<u64, Arc<File>> = found
            .into_iter()
            .map(|f| (f.id, Arc::new(f.file)))
            .collect();
        *write(&self.catalog.index) = index;
        *write(&self.catalog.files) = files;
        // The new head opens with a sealed manifest: the segments as this
        // master found them. A stale master's later appends to them, or
        // segments it creates, are ignored by every later recovery, and
        // anything missing from them later is noticed.
        self.new_head(next_id, true)?;
        if let Some((Ok(file), stamp)) = previous {
            segment::write_stamp(&file, &stamp)
                .and_then(|()| segment::sync_data(&file))
                .map_err(|e| StoreError::io("cannot close the previous journal segment", e))?;
        }
        {
            let idx = read(&self.catalog.index);
            self.usage.set(idx.disk_bytes());
            self.usage.set_data(idx.data_bytes());
        }
        let later = self
            .later
            .then(|| Later(Box::new(IndexWalk::new(self.catalog.clone()))));
        let elapsed = started.elapsed();
        let r = &report;
        tracing::info!(
            elapsed_ms = elapsed.as_millis() as u64,
            segments = r.segments,
            records = r.records,
            bytes = r.bytes,
            messages = messages.len() + later.as_ref().map_or(0, |l| l.0.len()),
            subscriptions = subscriptions.len(),
            queues = queues.len(),
            clean_shutdown = r.clean_shutdown,
            torn_tail_bytes = r.torn_bytes,
            corrupt_records = r.corrupt_records,
            lost_segments_or_stretches = losses.len(),
            rolled_back_batches = r.rolled_back_batches,
            unreadable_segments = r.bad_segments,
            from_checkpoint = used_checkpoint,
            checkpoint_ms = ckpt_ms,
            read_ms,
            build_ms,
            "journal recovered"
        );
        self.start_checkpoints();
        Ok(Recovered {
            messages,
            later,
            subscriptions,
            queues,
            max_seq,
            duplicate_ids,
        })
    }

    /// Compares what recovery read with what should be there: the newest
    /// segment's manifest (minus segments deleted on purpose, minus those a
    /// stale master made) for every other segment, the stamp for the newest
    /// one. Returns the confirmed data that is gone, logs each find, and
    /// notes the files to cut or set aside.
    fn judge(
        &self,
        found: &[Found],
        unreadable: &[(u64, String)],
        stale: &BTreeSet<u64>,
        index: &Index,
        fixes: &mut Vec<Fix>,
        report: &mut recovery::Report,
    ) -> Vec<Loss> {
        let mut losses = Vec::new();
        let newest = found.last().map(|f| f.id);
        let manifest: Option<HashMap<u64, Listed>> = found
            .last()
            .and_then(|f| f.scanned.manifest.as_ref())
            .map(|m| {
                m.iter()
                    .filter(|l| !index.dropped.contains(&l.id) && !stale.contains(&l.id))
                    .map(|l| (l.id, *l))
                    .collect()
            });
        for f in found {
            let listed = manifest.as_ref().and_then(|m| m.get(&f.id));
            let expect = match (listed, f.stamp) {
                (Some(l), _) => Expect::Listed(*l),
                (None, Some(st)) if Some(f.id) == newest => Expect::Stamped(st),
                (None, None) if Some(f.id) == newest => Expect::Newest,
                (None, _) => {
                    if manifest.is_some() {
                        tracing::warn!(
                            segment = f.id,
                            "a journal segment deleted earlier is still there (its deletion did not finish): reading it"
                        );
                    }
                    Expect::Older
                }
            };
            let name = file_name(f.id);
            let v = recovery::judge(&name, &f.scanned, f.len, expect);
            if v.loss.is_some() {
                for d in &f.scanned.damaged {
                    tracing::error!(
                        segment = f.id,
                        offset = d.offset,
                        skipped_bytes = d.bytes,
                        reason = %d.reason,
                        "CORRUPT JOURNAL RECORD in the middle of a segment: skipped"
                    );
                }
            } else if v.known_damage {
                tracing::warn!(
                    segment = f.id,
                    stretches = f.scanned.damaged.len(),
                    "damaged journal records accepted by an earlier recovery: skipped"
                );
            }
            if v.torn_bytes > 0 {
                tracing::warn!(
                    segment = f.id,
                    offset = f.scanned.end,
                    bytes = v.torn_bytes,
                    "cutting off the journal's torn tail (a write the crash interrupted, after the last confirmed record)"
                );
                report.torn_bytes += v.torn_bytes;
            }
            let cut = v
                .cut_to
                .or((Some(f.id) == newest && f.len > f.scanned.end).then_some(f.scanned.end));
            if let Some(to) = cut {
                fixes.push(Fix::Truncate { id: f.id, to });
            }
            report.corrupt_records += v.corrupt;
            if let Some(l) = v.loss {
                tracing::error!(segment = f.id, "JOURNAL DAMAGED: {l}");
                losses.push(l);
            }
        }
        let mut gone: Vec<&Listed> = manifest
            .iter()
            .flat_map(|m| m.values())
            .filter(|l| !found.iter().any(|f| f.id == l.id))
            .collect();
        gone.sort_by_key(|l| l.id);
        for l in gone {
            let what = match unreadable.iter().find(|(id, _)| *id == l.id) {
                Some((_, e)) => format!("has an unreadable header ({e})"),
                None => "is missing".to_owned(),
            };
            let loss = Loss {
                file: file_name(l.id),
                what,
                records: Some(l.records),
                adds: Some(l.adds),
                bytes: l.end,
            };
            tracing::error!(segment = l.id, "JOURNAL DAMAGED: {loss}");
            losses.push(loss);
        }
        for (id, e) in unreadable {
            report.bad_segments += 1;
            fixes.push(Fix::SetAside(*id));
            if manifest.as_ref().is_some_and(|m| m.contains_key(id)) {
                continue;
            }
            let loss = Loss {
                file: file_name(*id),
                what: format!("has an unreadable header ({e})"),
                records: None,
                adds: None,
                bytes: std::fs::metadata(segment::path(&self.dir, *id)).map_or(0, |m| m.len()),
            };
            tracing::error!(segment = id, "JOURNAL DAMAGED: {loss}");
            losses.push(loss);
        }
        if let Some(f) = found.last()
            && f.stamp.is_some_and(|s| s.rolled)
            && !unreadable.iter().any(|(id, _)| *id > f.id)
        {
            let loss = Loss {
                file: file_name(f.id + 1),
                what: format!(
                    "is missing (segment {} was closed when it was created; any newer segments are gone too)",
                    f.id
                ),
                records: None,
                adds: None,
                bytes: 0,
            };
            tracing::error!(segment = f.id + 1, "JOURNAL DAMAGED: {loss}");
            losses.push(loss);
        }
        losses
    }

    /// Carries out a change recovery decided on.
    fn apply(&self, fix: Fix, found: &[Found]) -> Result<(), StoreError> {
        match fix {
            Fix::Truncate { id, to } => {
                if let Some(f) = found.iter().find(|f| f.id == id) {
                    f.file
                        .set_len(to)
                        .and_then(|()| f.file.sync_all())
                        .map_err(|e| StoreError::io(format!("cannot truncate segment {id}"), e))?;
                }
            }
            Fix::SetAside(id) => {
                let path = segment::path(&self.dir, id);
                let aside = path.with_extension("corrupt");
                tracing::error!(segment = id, moved_to = %aside.display(),
                    "UNREADABLE JOURNAL SEGMENT set aside; the records in it are lost");
                let _ = std::fs::rename(&path, &aside);
            }
            Fix::Remove(id) => {
                let _ = std::fs::remove_file(segment::path(&self.dir, id));
            }
        }
        Ok(())
    }
}

/// A segment recovery read.
struct Found {
    id: u64,
    /// Its progress stamp (version 2 headers).
    stamp: Option<Stamp>,
    file: File,
    /// Bytes read: the whole file, or for the newest as far as it was
    /// written.
    len: u64,
    scanned: recovery::Scanned,
}

/// What reading the segments back found, before it is judged.
struct ReadBack {
    index: Index,
    report: recovery::Report,
    found: Vec<Found>,
    unreadable: Vec<(u64, String)>,
    fixes: Vec<Fix>,
}

enum ReadError {
    Store(StoreError),
    /// The checkpoint does not match the files: read everything instead.
    Checkpoint(String),
}

impl From<StoreError> for ReadError {
    fn from(e: StoreError) -> ReadError {
        ReadError::Store(e)
    }
}

/// The first record of a segment, if it is a manifest.
fn first_manifest(buf: &[u8], start: usize) -> Option<Vec<Listed>> {
    let Frame::Record { len } = Frame::at(buf.get(start..)?) else {
        return None;
    };
    match format::decode(buf.get(start + FRAME_LEN..start + FRAME_LEN + len)?) {
        Ok(Entry::Manifest { segments, .. }) => Some(segments),
        _ => None,
    }
}

impl JournalStore {
    /// The checkpoint, if checkpoints are on and one can be read.
    fn usable_checkpoint(&self) -> Option<checkpoint::Loaded> {
        if self.cfg.checkpoint_bytes == 0 {
            return None;
        }
        if let Some(loaded) = self.standby.as_ref().and_then(|s| s.take()) {
            tracing::info!(
                "starting from the checkpoint decoded while this broker waited as a slave"
            );
            return Some(loaded);
        }
        match checkpoint::load(&self.dir, self.duplicates) {
            Ok(c) => Some(c),
            Err(checkpoint::Unusable::Missing) => None,
            Err(e) => {
                tracing::warn!(error = %e, "the journal's index checkpoint is unusable: reading the whole journal");
                checkpoint::discard(&self.dir);
                None
            }
        }
    }

    /// Reads the segments `ids` back: all of each, or with a checkpoint
    /// only the headers of those it covers and what was written after it.
    fn read_back(
        &self,
        ids: &[u64],
        limits: &HashMap<u64, Limit>,
        ckpt: Option<checkpoint::Loaded>,
    ) -> Result<ReadBack, ReadError> {
        let mismatch = |why: String| Err(ReadError::Checkpoint(why));
        let (mut index, cover) = match ckpt {
            Some(c) => {
                // Its head may be gone (deleted once dead, by a master that
                // then died before its next checkpoint): checked below with
                // the other covered segments that are gone.
                let cover = (c.head, c.end, c.records, c.adds);
                (c.index, Some(cover))
            }
            None => (
                Index {
                    meta: Some(index::RecoveryMeta::default()),
                    dups: index::Carriers::new(self.duplicates),
                    ..Index::default()
                },
                None,
            ),
        };
        let mut report = recovery::Report::default();
        let mut found: Vec<Found> = Vec::new();
        let mut unreadable: Vec<(u64, String)> = Vec::new();
        let mut fixes: Vec<Fix> = Vec::new();
        let mut buf = Vec::new();
        for (i, &id) in ids.iter().enumerate() {
            let last = i + 1 == ids.len();
            let path = segment::path(&self.dir, id);
            let cannot_read = |e| StoreError::io(format!("cannot read {}", path.display()), e);
            let file = segment::open(&self.dir, id)
                .map_err(|e| StoreError::io(format!("cannot open {}", path.display()), e))?;
            let head = segment::read_upto(&file, 0, HEADER_LEN).map_err(cannot_read)?;
            let header = match SegmentHeader::decode(&head) {
                Ok(h) if head.len() >= h.data_start() => Ok(h),
                Ok(h) => Err(format!(
                    "the file ends at byte {} inside its {}-byte header",
                    head.len(),
                    h.data_start()
                )),
                Err(e) => Err(e.to_string()),
            };
            let header = match header {
                Ok(h) => h,
                Err(e) => {
                    if cover.is_some_and(|(h, ..)| id <= h) {
                        return mismatch(format!("segment {id} it covers is unreadable now: {e}"));
                    }
                    buf.clear();
                    std::io::Read::read_to_end(&mut &file, &mut buf).map_err(cannot_read)?;
                    if last && buf.iter().skip(FIXED_LEN).all(|&b| b == 0) {
                        // A crash while an older version created it: it
                        // never held a record.
                        tracing::warn!(segment = id, error = %e, "removing a half-created journal segment");
                        fixes.push(Fix::Remove(id));
                    } else {
                        unreadable.push((id, e));
                    }
                    continue;
                }
            };
            let start = header.data_start();
            let stamp = if header.has_stamp() {
                match Stamp::decode(head.get(STAMP_AT..STAMP_AT + STAMP_LEN).unwrap_or_default()) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        tracing::warn!(segment = id, error = %e,
                            "unreadable progress stamp: how far the segment was confirmed cannot be checked");
                        None
                    }
                }
            } else {
                None
            };
            index.max_seq = index.max_seq.max(header.seq_floor.saturating_sub(1));
            // A segment the checkpoint covers whole: its header only.
            if let Some((ckpt_head, ..)) = cover
                && id < ckpt_head
            {
                let Some(st) = index.segs.get(&id).cloned() else {
                    return mismatch(format!("segment {id} is on disk but not in it"));
                };
                let len = file.metadata().map_err(cannot_read)?.len();
                if len < st.end {
                    return mismatch(format!(
                        "segment {id} ends at byte {len}, before {}",
                        st.end
                    ));
                }
                if let Some(Limit::End { end, sealed_by }) = limits.get(&id) {
                    if *end < st.end {
                        return mismatch(format!(
                            "segment {id} was sealed at byte {end}, before {}",
                            st.end
                        ));
                    }
                    if *end < len {
                        let extra = segment::read_at(&file, *end, (len - end) as usize)
                            .map_err(cannot_read)?;
                        if extra.iter().any(|&b| b != 0) {
                            tracing::warn!(
                                segment = id,
                                newer_epoch = sealed_by,
                                ignored_bytes = extra.len(),
                                "ignoring records a stale master wrote after a newer master took over"
                            );
                            fixes.push(Fix::Truncate { id, to: *end });
                        }
                    }
                }
                if let Some(s) = index.segs.get_mut(&id) {
                    s.file_bytes = len.max(st.end);
                }
                report.segments += 1;
                report.bytes += st.end;
                found.push(Found {
                    id,
                    stamp,
                    file,
                    len,
                    scanned: recovery::Scanned {
                        end: st.end,
                        records: st.records,
                        adds: st.adds,
                        records_to_mark: st.records,
                        adds_to_mark: st.adds,
                        ..recovery::Scanned::default()
                    },
                });
                continue;
            }
            // The checkpoint's own segment: read on from where it stopped.
            let resume = cover.filter(|(h, ..)| *h == id);
            let from = resume.map_or(start, |(_, end, ..)| end as usize);
            buf.clear();
            let read = if last {
                read_written(&file, &mut buf, from)
            } else {
                std::io::Read::read_to_end(&mut &file, &mut buf).map(|_| ())
            };
            read.map_err(cannot_read)?;
            if buf.len() < from {
                return mismatch(format!(
                    "segment {id} ends at byte {}, before {from}",
                    buf.len()
                ));
            }
            if let Some(Limit::End { end, sealed_by }) = limits.get(&id)
                && (*end as usize) < buf.len()
                && buf[*end as usize..].iter().any(|&b| b != 0)
            {
                if (*end as usize) < from {
                    return mismatch(format!(
                        "segment {id} was sealed at byte {end}, before {from}"
                    ));
                }
                tracing::warn!(
                    segment = id,
                    epoch = header.epoch,
                    newer_epoch = sealed_by,
                    ignored_bytes = buf.len() - *end as usize,
                    "ignoring records a stale master wrote after a newer master took over"
                );
                buf.truncate(*end as usize);
                fixes.push(Fix::Truncate { id, to: *end });
            }
            if resume.is_none() {
                index.segs.insert(
                    id,
                    SegStats {
                        start: start as u64,
                        file_bytes: buf.len() as u64,
                        ..SegStats::default()
                    },
                );
            }
            let mark = stamp.map(|s| s.end);
            let mut scanned = recovery::scan(id, &buf, from, mark, &mut index, &mut report);
            if let Some((_, end, records, adds)) = resume {
                scanned.manifest = first_manifest(&buf, start);
                scanned.records += records;
                scanned.adds += adds;
                match stamp {
                    Some(st) if st.end <= end => {
                        if st.records > records || st.adds > adds {
                            return mismatch(format!(
                                "segment {id}'s stamp counts more records than it covers"
                            ));
                        }
                        scanned.records_to_mark = st.records;
                        scanned.adds_to_mark = st.adds;
                    }
                    _ => {
                        scanned.records_to_mark += records;
                        scanned.adds_to_mark += adds;
                    }
                }
            }
            report.segments += 1;
            report.bytes += scanned.end;
            if let Some(s) = index.segs.get_mut(&id) {
                s.end = scanned.end;
                s.records = scanned.records;
                s.adds = scanned.adds;
                s.file_bytes = scanned.end.max(if last { 0 } else { buf.len() as u64 });
            }
            found.push(Found {
                id,
                stamp,
                file,
                len: buf.len() as u64,
                scanned,
            });
        }
        if cover.is_some() {
            // Covered segments deleted since: they must have held nothing
            // live (their deletion record may lie before the checkpoint's
            // place, where it is not read again).
            let gone: Vec<u64> = index
                .segs
                .keys()
                .copied()
                .filter(|id| !ids.contains(id))
                .collect();
            for id in gone {
                if index.segs.get(&id).is_some_and(|s| s.live_items > 0) {
                    return mismatch(format!("segment {id} held live records and is gone"));
                }
                index.segs.remove(&id);
                index.seals.remove(&id);
                index.dropped.insert(id);
            }
            // Only present segments can hold anything back (as after
            // reading everything, where absent ones are never referred to).
            let present: BTreeSet<u64> = index.segs.keys().copied().collect();
            for s in index.segs.values_mut() {
                s.refs.retain(|r| present.contains(r));
            }
        }
        Ok(ReadBack {
            index,
            report,
            found,
            unreadable,
            fixes,
        })
    }
}

/// A change to the files recovery decided on, made only once it is sure
/// the broker will start.
enum Fix {
    /// Cut a segment to this length (a torn tail, a stale master's
    /// appends, damage past what was recorded).
    Truncate { id: u64, to: u64 },
    /// Rename an unreadable segment to `.corrupt`.
    SetAside(u64),
    /// Remove a segment a crash left half-created.
    Remove(u64),
}

/// A segment's file name.
pub(super) fn file_name(id: u64) -> String {
    format!("{id:020}.seg")
}

/// What a refusing (or skipping) recovery tells the operator.
fn damage_report(dir: &Path, losses: &[Loss]) -> String {
    let records: u64 = losses.iter().filter_map(|l| l.records).sum();
    let adds: u64 = losses.iter().filter_map(|l| l.adds).sum();
    let bytes: u64 = losses.iter().map(|l| l.bytes).sum();
    let unknown = losses.iter().any(|l| l.adds.is_none());
    let each: Vec<String> = losses.iter().map(ToString::to_string).collect();
    let data_dir = dir.parent().unwrap_or(dir);
    let total = match (records, unknown) {
        (0, true) => {
            format!("How many messages are gone is not known (at least {bytes} bytes of records)")
        }
        (_, true) => format!(
            "In all {adds} messages ({records} records, {bytes} bytes) are gone, and an unknown number more"
        ),
        (_, false) => format!("In all {adds} messages ({records} records, {bytes} bytes) are gone"),
    };
    format!(
        "the journal in {} has lost confirmed records: {}. {total}. \
         Back up the data directory ({}) before anything else. Then restore the missing or damaged files from a backup if you have one, \
         or set journal.on-corruption = \"skip\" to start with what is left (the loss is then accepted for good).",
        dir.display(),
        each.join("; "),
        data_dir.display()
    )
}

/// Reads the newest segment only as far as it was written: it is
/// preallocated, and reading megabytes of zeros would only slow a takeover.
/// Stops at the first place where a record should start and zeros are
/// found — exactly where recovery's scan stops too — and otherwise (a torn
/// or damaged record, which recovery handles with the whole file) reads
/// everything.
fn read_written(file: &File, buf: &mut Vec<u8>, start: usize) -> std::io::Result<()> {
    let len = file.metadata()?.len() as usize;
    let mut chunk = 16 * 1024;
    let mut at = start;
    loop {
        let eof = fill(file, buf, (buf.len() + chunk).min(len))?;
        // Walk whole records; decide once the frame after them is known.
        while at < buf.len() {
            match Frame::at(&buf[at..]) {
                Frame::Record { len } => at += FRAME_LEN + len,
                Frame::End if buf.len() - at >= FRAME_LEN => return Ok(()),
                Frame::End | Frame::Incomplete => break,
                Frame::Bad(_) => {
                    fill(file, buf, len)?;
                    return Ok(());
                }
            }
        }
        if eof {
            return Ok(());
        }
        chunk = (chunk * 2).min(16 * 1024 * 1024);
    }
}

/// Extends `buf` with the file's bytes up to `upto`; true if the file
/// ended there (or earlier).
fn fill(file: &File, buf: &mut Vec<u8>, upto: usize) -> std::io::Result<bool> {
    use std::os::unix::fs::FileExt;
    let start = buf.len();
    buf.resize(upto.max(start), 0);
    let mut filled = start;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], filled as u64)? {
            0 => break,
            n => filled += n,
        }
    }
    let short = filled < buf.len();
    buf.truncate(filled);
    Ok(short || filled as u64 >= file.metadata()?.len())
}

/// What seals say about a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Limit {
    /// A newer master found it ending here; anything after was written by a
    /// stale master.
    End { end: u64, sealed_by: u64 },
    /// Created by an older master after a newer one sealed the journal.
    Stale { epoch: u64, sealed_by: u64 },
}

/// Reads every segment's header and leading seal (only the first record
/// of a segment can be one: a format 1 seal, or a sealed manifest) and
/// works out the limits they set.
fn seal_limits(dir: &Path, ids: &[u64]) -> HashMap<u64, Limit> {
    let mut epochs = HashMap::new();
    let mut seals: Vec<(u64, Vec<(u64, u64)>)> = Vec::new();
    for &id in ids {
        let Ok(file) = segment::open(dir, id) else {
            continue;
        };
        let Ok(head) = segment::read_upto(&file, 0, HEADER_LEN) else {
            continue;
        };
        let Ok(h) = SegmentHeader::decode(&head) else {
            continue;
        };
        epochs.insert(id, h.epoch);
        let start = h.data_start() as u64;
        let Ok(frame) = segment::read_at(&file, start, FRAME_LEN) else {
            continue;
        };
        let len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
        if len == 0 || len > format::MAX_PAYLOAD {
            continue;
        }
        let Ok(frame) = segment::read_at(&file, start, FRAME_LEN + len) else {
            continue;
        };
        if let Frame::Record { len } = Frame::at(&frame) {
            match format::decode(&frame[FRAME_LEN..FRAME_LEN + len]) {
                Ok(Entry::Seal { segments }) => seals.push((h.epoch, segments)),
                Ok(Entry::Manifest {
                    sealed: true,
                    segments,
                }) => seals.push((h.epoch, segments.iter().map(|s| (s.id, s.end)).collect())),
                _ => {}
            }
        }
    }
    let mut limits: HashMap<u64, Limit> = HashMap::new();
    for &id in ids {
        let Some(&epoch) = epochs.get(&id) else {
            continue;
        };
        let newer: Vec<&(u64, Vec<(u64, u64)>)> =
            seals.iter().filter(|(e, _)| *e > epoch).collect();
        if newer.is_empty() {
            continue;
        }
        let ends: Vec<(u64, u64)> = newer
            .iter()
            .filter_map(|(e, segs)| {
                segs.iter()
                    .find(|(s, _)| *s == id)
                    .map(|(_, end)| (*end, *e))
            })
            .collect();
        let limit = match ends.iter().min() {
            Some(&(end, sealed_by)) => Limit::End { end, sealed_by },
            None => Limit::Stale {
                epoch,
                sealed_by: newer.iter().map(|(e, _)| *e).min().unwrap_or(epoch),
            },
        };
        limits.insert(id, limit);
    }
    limits
}
