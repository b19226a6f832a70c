//! Index checkpoints: recovery in O(what changed), not O(what is stored).
//!
//! Without a checkpoint, recovery reads every segment back (a million
//! 1 KiB messages is 1.3 GB and seconds). A checkpoint is the index as it
//! stood at one place in the journal — the end of the head segment when it
//! was taken — written to `<journal>/index.checkpoint`. Recovery loads it,
//! reads only the headers of the segments it covers, and replays the
//! records written after that place, as it would have replayed them after
//! reading everything.
//!
//! A checkpoint is never trusted blindly. It is used only if:
//! - its checksum, magic and version are right (a torn or half-written file
//!   fails here; it is written aside and renamed into place, so the old one
//!   stays whole until the new one is);
//! - every segment it covers is on disk and at least as long as the index
//!   says, and no newer master sealed any of them shorter (a checkpoint a
//!   stale master wrote after a takeover fails here);
//! - the segments on disk older than its place are exactly the ones it
//!   covers, except covered segments that held nothing live (deleted since);
//!   it carries the segments deleted since the newest manifest, so that
//!   one's list is still checked exactly;
//! - everything it covers was synced before it was written (the checkpointer
//!   syncs the head first, and proves the lock is still held).
//!
//! Anything else, and recovery reads everything, as before: the result is
//! the same index, only slower. Tests kill the broker at every step of
//! writing one.
//!
//! Checkpoints are written by a thread of their own, from a read-locked
//! index (the writer waits only while it is copied out; the live messages'
//! part is encoded after the lock is let go, and the debug log gives the
//! time held as `encode_ms`): after `journal.checkpoint-bytes` of journal, and
//! when the journal has been quiet for a second after a change.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::format::{self, Cursor, FormatError};
use super::index::{
    self, Carriers, Declared, Index, Loc, RecoveryMeta, Redelivery, Scheduled, SegStats, Sub,
};
use super::{Catalog, Fence, read, segment};
use crate::store::dedup::DuplicateBounds;
use crate::store::{RecoveredMessages, ScheduleState};

/// The checkpoint's file name in the journal directory.
pub(crate) const FILE: &str = "index.checkpoint";
const TEMP: &str = "index.checkpoint.tmp";
const MAGIC: [u8; 8] = *b"HLYDCKPT";
const VERSION: u16 = 1;
/// magic, version, reserved, body length, body checksum.
pub(crate) const HEADER: usize = 8 + 2 + 2 + 8 + 4;
/// How long the journal must be unchanged before a checkpoint is written
/// for what changed (when less than `checkpoint-bytes` changed).
const QUIET: Duration = Duration::from_secs(1);
const POLL: Duration = Duration::from_millis(100);

/// A checkpoint read back: the index at the end of segment `head` as it
/// then was, with recovery's view of live messages.
pub(crate) struct Loaded {
    pub(crate) index: Index,
    pub(crate) head: u64,
    /// Where in `head` the journal continues.
    pub(crate) end: u64,
    pub(crate) records: u64,
    pub(crate) adds: u64,
}

pub(crate) fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// One live message as a checkpoint stores it: sequence number, place,
/// key id, priority, expiry.
type Live = (u64, Loc, u32, u8, u64);

/// What a checkpoint holds, taken from a read-locked index: everything but
/// the live messages encoded, those copied out to be sorted (by sequence
/// number, so recovery gets them in order for free) after the lock is let go.
pub(crate) struct Snapshot {
    b: Vec<u8>,
    live: Vec<Live>,
}

/// Encodes `idx` (which must carry its [`RecoveryMeta`]) as a checkpoint
/// file written by master `epoch`.
#[cfg(test)]
pub(crate) fn encode(idx: &Index, epoch: u64) -> Vec<u8> {
    snapshot(idx, epoch).finish()
}

/// The part of [`encode`] that needs the index.
pub(crate) fn snapshot(idx: &Index, epoch: u64) -> Snapshot {
    let mut b = Vec::with_capacity(4096);
    b.extend_from_slice(&[0; HEADER]);
    put64(&mut b, epoch);
    put64(&mut b, crate::model::now_ms());
    put64(&mut b, idx.max_seq);
    put64(&mut b, idx.declarations);
    put64(&mut b, idx.segs.len() as u64);
    for (&id, s) in &idx.segs {
        for v in [
            id,
            s.start,
            s.file_bytes,
            s.end,
            s.records,
            s.adds,
            s.live_bytes,
            s.live_items,
        ] {
            put64(&mut b, v);
        }
        put64(&mut b, s.refs.len() as u64);
        for &r in &s.refs {
            put64(&mut b, r);
        }
    }
    let empty = RecoveryMeta::default();
    let meta = idx.meta.as_ref().unwrap_or(&empty);
    let keys = meta.found.keys();
    put64(&mut b, keys.len() as u64);
    for k in keys {
        format::put_key(&mut b, k);
    }
    let live: Vec<Live> = idx
        .messages
        .iter()
        .map(|(&seq, l)| (seq, l.at, l.key, l.priority, l.expires))
        .collect();
    put64(&mut b, idx.redeliveries.len() as u64);
    for (&seq, r) in &idx.redeliveries {
        put64(&mut b, seq);
        b.extend_from_slice(&r.deliveries.to_le_bytes());
        put64(&mut b, r.until_ms);
        put_loc(&mut b, &r.at);
    }
    put64(&mut b, idx.schedules.len() as u64);
    for (&seq, s) in &idx.schedules {
        put64(&mut b, seq);
        put64(&mut b, s.state.due);
        b.extend_from_slice(&s.state.fired.to_le_bytes());
        put_loc(&mut b, &s.at);
    }
    put64(&mut b, idx.subs.len() as u64);
    for ((client_id, name), s) in &idx.subs {
        format::put_str(&mut b, client_id);
        format::put_str(&mut b, name);
        format::put_str(&mut b, &s.topic.to_string());
        match &s.selector {
            Some(sel) => {
                b.push(1);
                format::put_str(&mut b, sel);
            }
            None => b.push(0),
        }
        put_loc(&mut b, &s.at);
    }
    put64(&mut b, idx.queues.len() as u64);
    for (q, d) in &idx.queues {
        format::put_str(&mut b, &q.to_string());
        put64(&mut b, d.order);
        put_loc(&mut b, &d.at);
    }
    put64(&mut b, idx.seals.len() as u64);
    for (&seg, ends) in &idx.seals {
        put64(&mut b, seg);
        put64(&mut b, ends.len() as u64);
        for &(id, end) in ends {
            put64(&mut b, id);
            put64(&mut b, end);
        }
    }
    put64(&mut b, idx.dropped.len() as u64);
    for &id in &idx.dropped {
        put64(&mut b, id);
    }
    let dups: Vec<_> = idx.dups.window.entries().collect();
    put64(&mut b, dups.len() as u64);
    for (key, id, &seg, at) in dups {
        format::put_key(&mut b, key);
        format::put_str(&mut b, id);
        put64(&mut b, seg);
        put64(&mut b, at);
    }
    Snapshot { b, live }
}

impl Snapshot {
    /// Sorts the live messages, appends them and seals the file with its
    /// length and checksum.
    pub(crate) fn finish(self) -> Vec<u8> {
        let Snapshot { mut b, mut live } = self;
        live.sort_unstable_by_key(|l| l.0);
        b.reserve(8 + live.len() * 37);
        put64(&mut b, live.len() as u64);
        for (seq, loc, key, priority, expires) in live {
            put64(&mut b, seq);
            put_loc(&mut b, &loc);
            b.extend_from_slice(&key.to_le_bytes());
            b.push(priority);
            put64(&mut b, expires);
        }
        let body_len = (b.len() - HEADER) as u64;
        let crc = crc32c::crc32c(&b[HEADER..]);
        b[..8].copy_from_slice(&MAGIC);
        b[8..10].copy_from_slice(&VERSION.to_le_bytes());
        b[12..20].copy_from_slice(&body_len.to_le_bytes());
        b[20..24].copy_from_slice(&crc.to_le_bytes());
        b
    }
}

fn put64(b: &mut Vec<u8>, v: u64) {
    b.extend_from_slice(&v.to_le_bytes());
}

fn put_loc(b: &mut Vec<u8>, l: &Loc) {
    put64(b, l.seg);
    b.extend_from_slice(&l.off.to_le_bytes());
    b.extend_from_slice(&l.len.to_le_bytes());
}

fn get_loc(c: &mut Cursor<'_>) -> Result<Loc, FormatError> {
    Ok(Loc {
        seg: c.u64()?,
        off: c.u32()?,
        len: c.u32()?,
    })
}

/// A count read from the file, checked against what is left of it (each
/// item takes at least `min` bytes) so a damaged count cannot make us
/// reserve memory for billions.
fn count(c: &mut Cursor<'_>, left: usize, min: usize) -> Result<usize, FormatError> {
    let n = c.u64()?;
    if n.saturating_mul(min as u64) > left as u64 {
        return Err(FormatError::Malformed("count larger than the file"));
    }
    Ok(n as usize)
}

/// Why a checkpoint file cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Unusable {
    #[error("none")]
    Missing,
    #[error("cannot read it: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Bad(String),
}

impl From<FormatError> for Unusable {
    fn from(e: FormatError) -> Unusable {
        Unusable::Bad(e.to_string())
    }
}

/// Reads the checkpoint in `dir`, checking its checksum.
pub(crate) fn load(dir: &Path, bounds: DuplicateBounds) -> Result<Loaded, Unusable> {
    let bytes = match std::fs::read(path(dir)) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Unusable::Missing),
        Err(e) => return Err(e.into()),
    };
    decode(&bytes, bounds)
}

pub(crate) fn decode(bytes: &[u8], bounds: DuplicateBounds) -> Result<Loaded, Unusable> {
    if bytes.len() < HEADER || bytes[..8] != MAGIC {
        return Err(Unusable::Bad("not a checkpoint file".into()));
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    if version != VERSION || bytes[10..12] != [0, 0] {
        return Err(Unusable::Bad(format!(
            "version {version}, expected {VERSION}"
        )));
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&bytes[12..20]);
    let body_len = u64::from_le_bytes(len);
    if body_len != (bytes.len() - HEADER) as u64 {
        return Err(Unusable::Bad(format!(
            "{} bytes of body, the header says {body_len} (cut short?)",
            bytes.len() - HEADER
        )));
    }
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&bytes[20..24]);
    let body = &bytes[HEADER..];
    if crc32c::crc32c(body) != u32::from_le_bytes(crc) {
        return Err(Unusable::Bad("checksum mismatch".into()));
    }
    let left = body.len();
    let mut c = Cursor::new(body);
    let _epoch = c.u64()?;
    let _written_ms = c.u64()?;
    let mut idx = Index {
        max_seq: c.u64()?,
        declarations: c.u64()?,
        dups: Carriers::new(bounds),
        ..Index::default()
    };
    for _ in 0..count(&mut c, left, 72)? {
        let id = c.u64()?;
        let mut s = SegStats {
            start: c.u64()?,
            file_bytes: c.u64()?,
            end: c.u64()?,
            records: c.u64()?,
            adds: c.u64()?,
            live_bytes: c.u64()?,
            live_items: c.u64()?,
            refs: BTreeSet::new(),
        };
        for _ in 0..count(&mut c, left, 8)? {
            s.refs.insert(c.u64()?);
        }
        idx.segs.insert(id, s);
    }
    let mut keys = Vec::new();
    for _ in 0..count(&mut c, left, 1)? {
        keys.push(format::get_key(&mut c)?);
    }
    let key_count = keys.len() as u32;
    let meta = RecoveryMeta {
        found: RecoveredMessages::with_keys(keys),
    };
    for _ in 0..count(&mut c, left, 36)? {
        let seq = c.u64()?;
        let r = Redelivery {
            deliveries: c.u32()?,
            until_ms: c.u64()?,
            at: get_loc(&mut c)?,
        };
        idx.redeliveries.insert(seq, r);
    }
    for _ in 0..count(&mut c, left, 36)? {
        let seq = c.u64()?;
        let state = ScheduleState {
            due: c.u64()?,
            fired: c.u32()?,
        };
        let at = get_loc(&mut c)?;
        idx.schedules.insert(seq, Scheduled { state, at });
    }
    for _ in 0..count(&mut c, left, 29)? {
        let client_id = c.str()?.to_owned();
        let name = c.str()?.to_owned();
        let topic = format::get_destination(&mut c)?;
        let selector = match c.u8()? {
            0 => None,
            _ => Some(c.str()?.to_owned()),
        };
        let at = get_loc(&mut c)?;
        idx.subs.insert(
            (client_id, name),
            Sub {
                topic,
                selector,
                at,
            },
        );
    }
    for _ in 0..count(&mut c, left, 28)? {
        let queue = format::get_destination(&mut c)?;
        let order = c.u64()?;
        let at = get_loc(&mut c)?;
        idx.queues.insert(queue, Declared { order, at });
    }
    for _ in 0..count(&mut c, left, 16)? {
        let seg = c.u64()?;
        let mut ends = Vec::new();
        for _ in 0..count(&mut c, left, 16)? {
            ends.push((c.u64()?, c.u64()?));
        }
        idx.seals.insert(seg, ends);
    }
    for _ in 0..count(&mut c, left, 8)? {
        idx.dropped.insert(c.u64()?);
    }
    for _ in 0..count(&mut c, left, 21)? {
        let key = format::get_key(&mut c)?;
        let id: Arc<str> = c.str()?.into();
        let seg = c.u64()?;
        let at = c.u64()?;
        idx.dups.window.insert(&key, id, seg, at);
    }
    let n = count(&mut c, left, 37)?;
    let mut last = None;
    // Collected, then built into the map in one go: a B-tree built from
    // sorted entries fills its nodes (inserted one by one at the right
    // end, every node is split half full), so it takes half the memory,
    // and fresh memory is most of what a start from a checkpoint costs.
    let mut messages = Vec::with_capacity(n);
    for _ in 0..n {
        let seq = c.u64()?;
        let loc = get_loc(&mut c)?;
        let key = c.u32()?;
        if key >= key_count {
            return Err(Unusable::Bad("a message names an unknown key".into()));
        }
        let priority = c.u8()?;
        let expires = c.u64()?;
        if last.is_some_and(|l| l >= seq) {
            return Err(Unusable::Bad("messages out of order".into()));
        }
        last = Some(seq);
        messages.push((
            seq,
            index::Live {
                at: loc,
                key,
                priority,
                expires,
            },
        ));
    }
    idx.messages = messages.into_iter().collect();
    idx.meta = Some(meta);
    c.done()?;
    let Some((&head, h)) = idx.segs.iter().next_back() else {
        return Err(Unusable::Bad("it covers no segment".into()));
    };
    let (end, records, adds) = (h.end, h.records, h.adds);
    Ok(Loaded {
        index: idx,
        head,
        end,
        records,
        adds,
    })
}

/// Writes `bytes` as the checkpoint: aside first, synced, then renamed over
/// the old one and the directory synced. A crash at any step leaves the old
/// checkpoint or the new one whole (or a leftover temporary file, ignored).
pub(crate) fn store(dir: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let temp = dir.join(TEMP);
    {
        let mut f = File::create(&temp)?;
        f.write_all(bytes)?;
        f.sync_data()?;
    }
    std::fs::rename(&temp, path(dir))?;
    segment::sync_dir(dir)
}

/// Removes the checkpoint (recovery found it unusable: the next one is
/// written from scratch).
pub(crate) fn discard(dir: &Path) {
    let _ = std::fs::remove_file(path(dir));
    let _ = std::fs::remove_file(dir.join(TEMP));
}

/// What the checkpointer thread shares with the journal.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    /// Bytes appended to the journal since it was opened (advanced by the
    /// writer under the index's write lock, so a read-locked index and this
    /// agree).
    pub(crate) appended: AtomicU64,
    pub(crate) stop: AtomicBool,
}

/// The checkpointer: writes a checkpoint after `every` bytes of journal,
/// or once the journal has been quiet for [`QUIET`] after a change.
pub(crate) struct Checkpointer {
    pub(crate) dir: PathBuf,
    pub(crate) catalog: Arc<Catalog>,
    pub(crate) progress: Arc<Progress>,
    pub(crate) fence: Option<Fence>,
    pub(crate) epoch: u64,
    pub(crate) every: u64,
    /// Write one once the journal is first quiet, changed or not: recovery
    /// read the whole journal, and the next one should not have to.
    pub(crate) due: bool,
}

impl Checkpointer {
    pub(crate) fn spawn(self) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("journal-checkpoint".into())
            .spawn(move || self.run())
    }

    fn run(self) {
        let mut seen = self.progress.appended.load(Ordering::Acquire);
        // How far the last checkpoint reached; `None`: there is none for
        // this journal yet (recovery read everything), so everything
        // appended counts and the first quiet second writes one.
        let mut done = (!self.due).then_some(seen);
        let mut quiet_since = Instant::now();
        while !self.progress.stop.load(Ordering::Acquire) {
            std::thread::park_timeout(POLL);
            let now = self.progress.appended.load(Ordering::Acquire);
            if now != seen {
                seen = now;
                quiet_since = Instant::now();
            }
            let changed = done != Some(now);
            let due = now.saturating_sub(done.unwrap_or(0)) >= self.every
                || (changed && quiet_since.elapsed() >= QUIET);
            if !due || self.progress.stop.load(Ordering::Acquire) {
                continue;
            }
            match self.write_one() {
                Ok(Some(at)) => done = Some(at),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "cannot write the journal's index checkpoint (recovery reads the whole journal until one is written)");
                    // Do not retry at once.
                    done = Some(now);
                }
            }
        }
    }

    /// Encodes the index, makes what it covers durable, proves the lock is
    /// still held, and stores it. The position written up to, or `None` if
    /// the head's file is not there (being replaced: try again later).
    pub(crate) fn write_one(&self) -> Result<Option<u64>, String> {
        let started = Instant::now();
        let (bytes, head, appended) = {
            let idx = read(&self.catalog.index);
            let Some(&head) = idx.segs.keys().next_back() else {
                return Ok(None);
            };
            (
                snapshot(&idx, self.epoch),
                head,
                self.progress.appended.load(Ordering::Acquire),
            )
        };
        let encoded = started.elapsed();
        let bytes = bytes.finish();
        let Some(file) = read(&self.catalog.files).get(&head).cloned() else {
            return Ok(None);
        };
        segment::sync_data(&file).map_err(|e| format!("cannot sync the journal: {e}"))?;
        if let Some(f) = &self.fence {
            f.check
                .verify(f.budget)
                .map_err(|e| format!("not writing a checkpoint: {e}"))?;
        }
        store(&self.dir, &bytes).map_err(|e| format!("cannot write {FILE}: {e}"))?;
        tracing::debug!(
            bytes = bytes.len(),
            encode_ms = encoded.as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "journal index checkpoint written"
        );
        Ok(Some(appended))
    }
}

/// Ties the checkpointer's life to the journal's.
pub(crate) struct Running {
    pub(crate) progress: Arc<Progress>,
    pub(crate) thread: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    pub(crate) fn stop(&mut self) {
        self.progress.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_damaged_or_cut_checkpoint_is_refused_never_misread() {
        let mut idx = Index {
            meta: Some(RecoveryMeta::default()),
            ..Index::default()
        };
        idx.segs.insert(
            3,
            SegStats {
                start: 128,
                end: 4096,
                records: 10,
                ..SegStats::default()
            },
        );
        let bytes = encode(&idx, 7);
        let back = decode(&bytes, DuplicateBounds::per_key(10)).unwrap();
        assert_eq!((back.head, back.end, back.records), (3, 4096, 10));
        for cut in 0..bytes.len() {
            assert!(
                decode(&bytes[..cut], DuplicateBounds::per_key(10)).is_err(),
                "cut at {cut}"
            );
        }
        for at in 0..bytes.len() {
            let mut b = bytes.clone();
            b[at] ^= 0x40;
            assert!(
                decode(&b, DuplicateBounds::per_key(10)).is_err(),
                "flip at {at}"
            );
        }
    }
}
