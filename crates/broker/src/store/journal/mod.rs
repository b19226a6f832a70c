//! The journal store: append-only segment files in `<data-dir>/journal/`,
//! group commit (one `fdatasync` per group of batches), crash recovery, and
//! space reclaimed by deleting dead segments and compacting old, mostly
//! dead ones. The format is in [`format`] and docs/STORAGE.md.
//!
//! All writing happens on the store's writer thread; the index of live
//! records is shared (behind a lock held only for lookups and updates, never
//! across I/O) with readers that load message bodies for deep queues.
//!
//! The journal notices what it lost. Every segment opens with a manifest of
//! the others (their ends and record counts), deletions are recorded before
//! files go, and the newest segment's header carries a progress stamp (how
//! far its records were confirmed). Recovery compares all of that with what
//! is on disk, so a missing or cut segment, or damaged records that held
//! confirmed data, are reported with what was lost, and by default the
//! broker refuses to start on them ([`OnCorruption`]).
//!
//! A full disk is survived: segments are preallocated as far as the disk
//! allows, new messages are refused while acknowledgements still have room,
//! and space comes back as consumers drain.

mod format;
mod index;
mod recovery;
mod segment;

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use format::{
    Entry, FIXED_LEN, FRAME_LEN, Frame, HEADER_LEN, Listed, STAMP_AT, STAMP_LEN, SegmentHeader,
    Stamp, Writer,
};
use index::{Index, Loc, SegStats};
use recovery::{Expect, Loss};
use serde::{Deserialize, Serialize};

use super::{
    Batch, DurableSubscription, MessageReader, Record, Recovered, StoreBackend, StoreError, Usage,
};
use crate::model::{Message, now_ms};

/// When the journal syncs to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// Every group of batches is synced before it is confirmed (the
    /// default; ActiveMQ's guarantee too).
    Always,
    /// At most one sync per interval; confirmations wait for it. Trades
    /// latency for fewer syncs.
    BatchMs(u64),
    /// Never sync; the OS writes data back when it likes. A crash of the
    /// machine (not just the broker) can lose confirmed messages.
    Never,
}

impl Serialize for SyncMode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            SyncMode::Always => s.serialize_str("always"),
            SyncMode::Never => s.serialize_str("never"),
            SyncMode::BatchMs(n) => s.serialize_str(&format!("batch-ms {n}")),
        }
    }
}

impl<'de> Deserialize<'de> for SyncMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<SyncMode, D::Error> {
        let s = String::deserialize(d)?;
        SyncMode::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "invalid journal sync mode '{s}': expected \"always\", \"never\" or \"batch-ms N\""
            ))
        })
    }
}

impl SyncMode {
    /// Parses `always`, `never` or `batch-ms N` (also `batch-ms=N`).
    pub fn parse(s: &str) -> Option<SyncMode> {
        match s.trim() {
            "always" => Some(SyncMode::Always),
            "never" => Some(SyncMode::Never),
            other => other
                .strip_prefix("batch-ms")
                .map(|n| n.trim_start_matches([' ', '=']).trim())
                .and_then(|n| n.parse::<u64>().ok())
                .filter(|n| (1..=10_000).contains(n))
                .map(SyncMode::BatchMs),
        }
    }
}

/// What recovery does when records that were confirmed are missing or
/// damaged (`journal.on-corruption`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnCorruption {
    /// Refuse to start, naming the files and what is lost: an operator
    /// decides (restore from a backup, or start with what is left). The
    /// default, since starting would make the loss permanent: the next
    /// segment's manifest accepts what is left.
    #[default]
    Refuse,
    /// Start with what is left, logging loudly what was lost and counting it
    /// in the metrics.
    Skip,
}

/// Journal settings (`[journal]` in the config file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct JournalConfig {
    /// Size of a segment file.
    pub segment_bytes: u64,
    /// When to sync.
    pub sync: SyncMode,
    /// An old segment whose live records are less than this fraction of it
    /// is compacted: its live records are copied forward and it is deleted.
    pub compact_below: f64,
    /// What to do when recovery finds confirmed records missing or damaged.
    pub on_corruption: OnCorruption,
}

impl Default for JournalConfig {
    fn default() -> JournalConfig {
        JournalConfig {
            segment_bytes: 32 * 1024 * 1024,
            sync: SyncMode::Always,
            compact_below: 0.5,
            on_corruption: OnCorruption::Refuse,
        }
    }
}

/// State shared between the writer and readers.
#[derive(Debug, Default)]
struct Shared {
    index: RwLock<Index>,
    files: RwLock<HashMap<u64, Arc<File>>>,
}

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    // Every critical section leaves the maps consistent, so a panic in
    // another holder does not make them unusable.
    l.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

fn io(what: &str, e: std::io::Error) -> StoreError {
    StoreError::Failed(format!("{what}: {e}").into())
}

/// How the journal of a master proves it still holds the data
/// directory's lock.
#[derive(Debug, Clone)]
pub struct Fence {
    /// The check.
    pub check: crate::ha::LockCheck,
    /// How long errors that say nothing about the lock (EIO, ENOMEM) are
    /// retried before the master gives up proving it is master.
    pub budget: Duration,
}

/// The segment being appended to.
struct Head {
    id: u64,
    file: Arc<File>,
    /// End of its records.
    len: u64,
    /// End of its opening records (the manifest): a head holding no more
    /// than these never rolls over, however large they are.
    first: u64,
    /// Bytes reserved for it on disk: appends below this need no
    /// allocation.
    allocated: u64,
    /// Records and Adds in it, for its progress stamp.
    records: u64,
    adds: u64,
}

/// A compaction in progress: the segment being emptied and how far through
/// it the copying has got.
struct Compaction {
    seg: u64,
    data: Vec<u8>,
    at: usize,
}

/// Framed records ready to append, and what they mean for the index.
#[derive(Default)]
struct Group {
    bytes: Vec<u8>,
    /// (offset in `bytes`, frame length, entry) of each record.
    records: Vec<(usize, usize, Entry)>,
}

/// Bytes of live records copied per upkeep step, so compaction never holds
/// up producers for long.
const COMPACT_STEP: usize = 4 * 1024 * 1024;

/// Disk space new messages must leave free, whatever else is stored: room
/// for the records that free space (acknowledgements, the duplicate ids
/// and deletion records written before a segment goes, a new segment's
/// manifest). Without it a full disk could not be drained.
const RESERVE_BASE: u64 = 1024 * 1024;
/// Reserved per stored message (its Remove, with some slack) and per
/// segment (its line in a manifest, its deletion record).
const RESERVE_PER_MESSAGE: u64 = 32;
const RESERVE_PER_SEGMENT: u64 = 64;
/// How long new messages are refused after the disk was found short of
/// space, before a write tries again (unless deleting segments frees space
/// sooner).
const SHORT_OF_SPACE_MS: u64 = 1000;

/// The journal [`StoreBackend`].
pub struct JournalStore {
    dir: PathBuf,
    cfg: JournalConfig,
    epoch: u64,
    usage: Arc<Usage>,
    shared: Arc<Shared>,
    head: Option<Head>,
    compaction: Option<Compaction>,
    /// The head holds data written since the last sync.
    unsynced: bool,
    last_sync: Instant,
    /// Checks that this broker still holds the data directory's lock:
    /// before a synced group is confirmed (a master that lost its lock must
    /// never confirm a write the new master's recovery may not see) and
    /// before files are deleted (it must never delete what the new master
    /// needs).
    fence: Option<Fence>,
    /// Duplicate-detection ids remembered per queue.
    duplicates: super::DuplicateBounds,
    /// A roll is under way: what it appends goes into the old head, even
    /// past its size.
    rolling: bool,
    /// Dead segments are being deleted (a roll then does not start
    /// another deletion).
    deleting: bool,
}

impl JournalStore {
    /// A journal in `<data_dir>/journal` (created if missing). Nothing is
    /// read until [`StoreBackend::recover`].
    pub fn new(data_dir: &Path, cfg: JournalConfig, usage: Arc<Usage>, epoch: u64) -> JournalStore {
        JournalStore::with_fence(data_dir, cfg, usage, epoch, None)
    }

    /// Like [`JournalStore::new`], for a master holding the data
    /// directory's lock: `fence` is checked before a group of writes is
    /// confirmed and before any file is deleted.
    pub fn with_fence(
        data_dir: &Path,
        cfg: JournalConfig,
        usage: Arc<Usage>,
        epoch: u64,
        fence: Option<Fence>,
    ) -> JournalStore {
        JournalStore {
            dir: data_dir.join("journal"),
            cfg,
            epoch,
            usage,
            shared: Arc::default(),
            head: None,
            compaction: None,
            unsynced: false,
            last_sync: Instant::now(),
            fence,
            // The last 2000 ids of each queue, as before bounds in all and
            // by age existed; the broker sets its configured bounds.
            duplicates: super::DuplicateBounds {
                per_key: 2000,
                total: usize::MAX,
                max_age_ms: 0,
            },
            rolling: false,
            deleting: false,
        }
    }

    /// How many duplicate-detection ids to remember per queue (default
    /// 2000), across restarts: recovery hands back at most this many.
    pub fn duplicate_window(mut self, ids: usize) -> JournalStore {
        self.duplicates.per_key = ids;
        self
    }

    /// How much of the duplicate-detection memory to keep (per queue, in
    /// all, by age), across restarts.
    pub fn duplicate_bounds(mut self, bounds: super::DuplicateBounds) -> JournalStore {
        self.duplicates = bounds;
        self
    }

    /// The highest master epoch recorded in the segment headers of a data
    /// directory's journal (0 if there is none). A new master takes a higher
    /// one.
    pub fn max_epoch(data_dir: &Path) -> u64 {
        let dir = data_dir.join("journal");
        let Ok(ids) = segment::list(&dir) else {
            return 0;
        };
        ids.iter()
            .filter_map(|&id| {
                let file = segment::open(&dir, id).ok()?;
                let bytes = segment::read_at(&file, 0, FIXED_LEN).ok()?;
                SegmentHeader::decode(&bytes).ok().map(|h| h.epoch)
            })
            .max()
            .unwrap_or(0)
    }

    fn head(&self) -> Result<&Head, StoreError> {
        self.head
            .as_ref()
            .ok_or_else(|| StoreError::Failed("journal used before recovery".into()))
    }

    /// Starts a new head segment, opening with a manifest of every other
    /// segment (their ends and counts as the index has them); `sealed` for a
    /// new master's first segment, whose manifest is also its seal.
    fn new_head(&mut self, id: u64, sealed: bool) -> Result<(), StoreError> {
        let (seq_floor, listed) = {
            let idx = read(&self.shared.index);
            let listed: Vec<Listed> = idx
                .segs
                .iter()
                .map(|(&id, s)| Listed {
                    id,
                    end: s.end,
                    records: s.records,
                    adds: s.adds,
                })
                .collect();
            (idx.max_seq + 1, listed)
        };
        let header = SegmentHeader::new(id, self.epoch, seq_floor, now_ms());
        let mut w = Writer::default();
        w.manifest(sealed, &listed);
        let first = (HEADER_LEN + w.buf.len()) as u64;
        let stamp = Stamp {
            end: first,
            records: 1,
            adds: 0,
            rolled: false,
        };
        let mut opening = Vec::with_capacity(first as usize);
        opening.extend_from_slice(&header.encode());
        opening.extend_from_slice(&stamp.encode());
        opening.extend_from_slice(&w.buf);
        let tag = format!("{}-{}", self.epoch, std::process::id());
        let created = segment::create(&self.dir, id, &tag, &opening, self.cfg.segment_bytes)
            .map_err(|e| {
                if segment::no_space(&e) {
                    self.usage.short_of_space(SHORT_OF_SPACE_MS);
                }
                StoreError::Unavailable(format!("cannot create journal segment {id}: {e}").into())
            })?;
        if created.allocated < self.cfg.segment_bytes {
            tracing::warn!(
                segment = id,
                preallocated = created.allocated,
                wanted = self.cfg.segment_bytes,
                "the disk is short of space: journal segment created with a smaller preallocation"
            );
        }
        let file = Arc::new(created.file);
        write(&self.shared.files).insert(id, file.clone());
        {
            let mut idx = write(&self.shared.index);
            idx.segs.insert(
                id,
                SegStats {
                    start: HEADER_LEN as u64,
                    file_bytes: created.allocated,
                    end: first,
                    records: 1,
                    ..SegStats::default()
                },
            );
            let loc = Loc {
                seg: id,
                off: HEADER_LEN as u32,
                len: w.buf.len() as u32,
            };
            idx.apply(
                &Entry::Manifest {
                    sealed,
                    segments: listed,
                },
                loc,
            );
        }
        self.head = Some(Head {
            id,
            file,
            len: first,
            first,
            allocated: created.allocated,
            records: 1,
            adds: 0,
        });
        Ok(())
    }

    /// Closes the head and starts the next segment. Dead segments are
    /// deleted first, so the new one's preallocation can use their space.
    /// The new segment (whose manifest gives the old head's final end) is
    /// durable before the old head is marked rolled and its unused
    /// preallocation released: a crash in between leaves an untrimmed old
    /// head, never a trimmed newest segment.
    fn roll(&mut self) -> Result<(), StoreError> {
        let id = self.head()?.id;
        self.sync()?;
        self.rolling = true;
        let freed = if self.deleting {
            Ok(false)
        } else {
            self.delete_dead()
        };
        self.rolling = false;
        match freed {
            Ok(_) => {}
            // No room even for the deletion records: the roll itself may
            // still succeed.
            Err(StoreError::Unavailable(e)) => {
                tracing::warn!(error = %e, "cannot delete dead journal segments before rolling over");
            }
            Err(e) => return Err(e),
        }
        self.sync()?;
        let (file, len, records, adds) = {
            let h = self.head()?;
            (h.file.clone(), h.len, h.records, h.adds)
        };
        self.new_head(id + 1, false)?;
        let stamp = Stamp {
            end: len,
            records,
            adds,
            rolled: true,
        };
        segment::write_stamp(&file, &stamp)
            .and_then(|()| file.set_len(len))
            .and_then(|()| segment::sync_data(&file))
            .map_err(|e| io("cannot close journal segment", e))?;
        if let Some(s) = write(&self.shared.index).segs.get_mut(&id) {
            s.file_bytes = len;
            s.end = len;
        }
        Ok(())
    }

    /// Proves this broker still holds the lock, or fails the store for
    /// good (`Fenced`).
    fn verify_lock(&self, doing: &str) -> Result<(), StoreError> {
        match &self.fence {
            Some(f) => f
                .check
                .verify(f.budget)
                .map_err(|e| StoreError::Fenced(format!("{doing}: {e}").into())),
            None => Ok(()),
        }
    }

    /// Makes everything appended durable, then stamps the head with how far
    /// that is. The stamp is written after the sync and not synced itself:
    /// it reaches the disk with the next sync, so it never claims more than
    /// is durable (and lags at most one sync behind).
    fn sync(&mut self) -> Result<(), StoreError> {
        if self.unsynced {
            let h = self.head()?;
            segment::sync_data(&h.file).map_err(|e| io("journal sync failed", e))?;
            let stamp = Stamp {
                end: h.len,
                records: h.records,
                adds: h.adds,
                rolled: false,
            };
            if let Err(e) = segment::write_stamp(&h.file, &stamp) {
                // Only the stamp is stale (a lower bound still): recovery
                // then reports less than it could, never more.
                tracing::warn!(segment = h.id, error = %e, "cannot update the journal's progress stamp");
            }
            self.unsynced = false;
            self.last_sync = Instant::now();
        }
        Ok(())
    }

    /// Bytes new messages must leave free on the disk: see
    /// [`RESERVE_BASE`].
    fn reserve(&self) -> u64 {
        let idx = read(&self.shared.index);
        RESERVE_BASE
            + RESERVE_PER_MESSAGE * idx.messages.len() as u64
            + RESERVE_PER_SEGMENT * idx.segs.len() as u64
    }

    /// Whether `len` more bytes of new messages fit, leaving the reserve:
    /// in the head's preallocation or, near its end, on the disk. If not,
    /// the bytes free on the disk and the reserve.
    fn room_for(&self, len: u64) -> Result<(), (u64, u64)> {
        let Some(h) = &self.head else { return Ok(()) };
        let reserve = self.reserve();
        let room = h.allocated.saturating_sub(h.len);
        if room >= len + reserve {
            return Ok(());
        }
        // If the file system cannot say, the write itself will.
        let free = segment::free_bytes(&self.dir).unwrap_or(u64::MAX);
        if room.saturating_add(free) >= len + reserve {
            return Ok(());
        }
        Err((free, reserve))
    }

    /// Refuses `len` bytes of new messages if they do not fit (see
    /// [`JournalStore::room_for`]), and holds new messages back at
    /// admission for a while.
    fn check_space(&self, len: u64) -> Result<(), StoreError> {
        self.room_for(len).map_err(|(free, reserve)| {
            self.usage.short_of_space(SHORT_OF_SPACE_MS);
            self.usage
                .no_space
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            StoreError::Unavailable(
                format!(
                    "no space left for new messages on the journal's disk ({free} bytes free, {reserve} kept for acknowledgements); they are accepted again once consumers free space"
                )
                .into(),
            )
        })
    }

    /// After a failed write at `base` of `len` bytes: clears whatever part
    /// of it reached the file, so that a later, shorter write over the same
    /// place cannot leave the rest to look like records to a recovery.
    /// Zeros go where the file has room already (no allocation needed),
    /// and what the write appended beyond that is given back.
    fn clear_failed_write(&self, base: u64, len: usize) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let Some(h) = &self.head else { return Ok(()) };
        let upto = (base + len as u64).min(h.allocated.max(base));
        let zeros = vec![0u8; 64 * 1024];
        let mut at = base;
        while at < upto {
            let n = (upto - at).min(zeros.len() as u64) as usize;
            h.file.write_all_at(&zeros[..n], at)?;
            at += n as u64;
        }
        if h.file.metadata()?.len() > h.allocated.max(base) {
            h.file.set_len(h.allocated.max(base))?;
        }
        Ok(())
    }

    /// Appends a group of records to the head, rolling over first if it
    /// does not fit, and applies it to the index. Does not sync. Either the
    /// whole group is written or (on error) none of it counts. A group with
    /// new messages is refused ([`StoreError::Unavailable`]) if it would eat
    /// into the space kept for acknowledgements; a write that fails for
    /// want of space is refused the same way (nothing was confirmed, later
    /// writes may succeed).
    fn append(&mut self, g: Group) -> Result<(), StoreError> {
        if g.bytes.is_empty() {
            return Ok(());
        }
        let (records, adds) = format::tally(&g.bytes);
        let h = self.head()?;
        if !self.rolling && h.len + g.bytes.len() as u64 > self.cfg.segment_bytes && h.len > h.first
        {
            self.roll()?;
        }
        if adds > 0 {
            self.check_space(g.bytes.len() as u64)?;
        }
        let h = self.head()?;
        let (seg, base, file) = (h.id, h.len, h.file.clone());
        if let Err(e) = std::os::unix::fs::FileExt::write_all_at(&*file, &g.bytes, base) {
            if let Err(c) = self.clear_failed_write(base, g.bytes.len()) {
                return Err(StoreError::Failed(
                    format!("journal write failed: {e}; and cannot clear what it left: {c}").into(),
                ));
            }
            if segment::no_space(&e) {
                self.usage.short_of_space(SHORT_OF_SPACE_MS);
                self.usage
                    .no_space
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return Err(StoreError::Unavailable(
                    format!("journal write failed: {e}").into(),
                ));
            }
            return Err(io("journal write failed", e));
        }
        self.unsynced = true;
        let end = base + g.bytes.len() as u64;
        if let Some(h) = self.head.as_mut() {
            h.len = end;
            h.allocated = h.allocated.max(end);
            h.records += records;
            h.adds += adds;
        }
        let mut idx = write(&self.shared.index);
        if let Some(s) = idx.segs.get_mut(&seg) {
            s.end = end;
            s.file_bytes = s.file_bytes.max(end);
            s.records += records;
            s.adds += adds;
        }
        for (off, len, entry) in &g.records {
            let loc = Loc {
                seg,
                off: (base + *off as u64) as u32,
                len: *len as u32,
            };
            idx.apply(entry, loc);
        }
        self.usage.set(idx.disk_bytes());
        Ok(())
    }

    /// After space was freed: gives the head the preallocation a full disk
    /// denied it, and accepts new messages again once there is room.
    fn regain_space(&mut self) {
        let want = self.cfg.segment_bytes;
        if let Some(h) = self.head.as_mut()
            && h.allocated < want
        {
            match segment::grow(&h.file, h.allocated, want) {
                Ok(len) => {
                    h.allocated = h.allocated.max(len);
                    let (id, allocated) = (h.id, h.allocated);
                    let mut idx = write(&self.shared.index);
                    if let Some(s) = idx.segs.get_mut(&id) {
                        s.file_bytes = allocated;
                    }
                    self.usage.set(idx.disk_bytes());
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
    fn delete_dead(&mut self) -> Result<bool, StoreError> {
        self.deleting = true;
        let done = self.delete_dead_now();
        self.deleting = false;
        done
    }

    fn delete_dead_now(&mut self) -> Result<bool, StoreError> {
        let head = self.head()?.id;
        let dead: Vec<u64> = {
            let idx = read(&self.shared.index);
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
            let mut idx = write(&self.shared.index);
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
            w.dropped(&dead);
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
            let sealed = write(&self.shared.index)
                .seals
                .remove(&s)
                .unwrap_or_default();
            for (older, end) in sealed {
                if let Some(f) = read(&self.shared.files).get(&older).cloned()
                    && f.metadata().is_ok_and(|m| m.len() > end)
                {
                    f.set_len(end)
                        .and_then(|()| f.sync_all())
                        .map_err(|e| io("cannot trim a sealed segment", e))?;
                }
            }
            write(&self.shared.files).remove(&s);
            if let Err(e) = std::fs::remove_file(segment::path(&self.dir, s)) {
                tracing::warn!(segment = s, error = %e, "cannot delete journal segment");
            }
            write(&self.shared.index).segs.remove(&s);
            if self.compaction.as_ref().is_some_and(|c| c.seg == s) {
                self.compaction = None;
            }
        }
        segment::sync_dir(&self.dir).map_err(|e| io("cannot sync journal directory", e))?;
        self.usage.set(read(&self.shared.index).disk_bytes());
        tracing::debug!(segments = ?dead, "deleted dead journal segments");
        Ok(true)
    }

    /// Picks the oldest segment worth compacting: not among the newest two
    /// closed ones (their messages are likely still being consumed), no
    /// older segment it depends on, and less than `compact-below` live.
    fn pick_compaction(&self) -> Option<u64> {
        let head = self.head.as_ref()?.id;
        let idx = read(&self.shared.index);
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
    fn compact_step(&mut self) -> Result<(), StoreError> {
        let Some(mut c) = self.compaction.take() else {
            return Ok(());
        };
        let mut group = Group::default();
        let mut count = 0u32;
        let mut body = Vec::new();
        let mut entries = Vec::new();
        {
            let idx = read(&self.shared.index);
            while c.at < c.data.len() && body.len() < COMPACT_STEP {
                let len = match Frame::at(&c.data[c.at..]) {
                    Frame::Record { len } => len,
                    Frame::End => {
                        c.at = c.data.len();
                        break;
                    }
                    // Damage a recovery accepted: the records after it are
                    // live too (stopping here would leave them, and pick
                    // the segment again and again).
                    Frame::Incomplete | Frame::Bad(_) => {
                        c.at = recovery::resync(&c.data, c.at + 1).unwrap_or(c.data.len());
                        continue;
                    }
                };
                let frame = &c.data[c.at..c.at + FRAME_LEN + len];
                let loc = Loc {
                    seg: c.seg,
                    off: c.at as u32,
                    len: frame.len() as u32,
                };
                c.at += frame.len();
                let Ok(entry) = format::decode(&frame[FRAME_LEN..]) else {
                    continue;
                };
                let keep = match &entry {
                    Entry::Add(m) => idx.is_live_add(m.seq, loc),
                    Entry::SubscriptionAdd {
                        client_id, name, ..
                    } => idx.is_live_sub(client_id, name, loc),
                    _ => false,
                };
                if !keep {
                    continue;
                }
                let redelivered = match &entry {
                    Entry::Add(m) => Some((m.seq, idx.deliveries(m.seq))).filter(|(_, d)| *d > 0),
                    _ => None,
                };
                entries.push((body.len(), frame.len(), entry));
                body.extend_from_slice(frame);
                count += 1;
                if let Some((seq, deliveries)) = redelivered {
                    let mut w = Writer::default();
                    w.record(&Record::Redelivered { seq, deliveries });
                    entries.push((
                        body.len(),
                        w.buf.len(),
                        Entry::Redelivered { seq, deliveries },
                    ));
                    body.extend_from_slice(&w.buf);
                    count += 1;
                }
            }
        }
        if count > 0 {
            // The copies go in as one batch, like any other.
            let mut w = Writer::default();
            if count > 1 {
                w.batch_marker(count);
            }
            let shift = w.buf.len();
            group.bytes = w.buf;
            group.bytes.extend_from_slice(&body);
            group.records = entries
                .into_iter()
                .map(|(off, len, e)| (off + shift, len, e))
                .collect();
            self.append(group)?;
        }
        if c.at < c.data.len() {
            self.compaction = Some(c);
        } else {
            tracing::debug!(segment = c.seg, "journal segment compacted");
        }
        Ok(())
    }

    fn recover_sync(&mut self) -> Result<Recovered, StoreError> {
        let started = Instant::now();
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| io(&format!("cannot create {}", self.dir.display()), e))?;
        if let Err(e) = segment::remove_unfinished(&self.dir) {
            tracing::warn!(error = %e, "cannot remove unfinished journal segments");
        }
        let ids = segment::list(&self.dir)
            .map_err(|e| io(&format!("cannot list {}", self.dir.display()), e))?;
        let mut index = Index {
            meta: Some(index::RecoveryMeta::default()),
            dups: index::Carriers::new(self.duplicates),
            ..Index::default()
        };
        let mut report = recovery::Report::default();
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
        // must then be as the operator will back them up.
        let mut found: Vec<Found> = Vec::new();
        let mut unreadable: Vec<(u64, String)> = Vec::new();
        let mut fixes: Vec<Fix> = Vec::new();
        let mut buf = Vec::new();
        for (i, &id) in ids.iter().enumerate() {
            let last = i + 1 == ids.len();
            let path = segment::path(&self.dir, id);
            let cannot_read = |e| io(&format!("cannot read {}", path.display()), e);
            let file = segment::open(&self.dir, id)
                .map_err(|e| io(&format!("cannot open {}", path.display()), e))?;
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
            buf.clear();
            let read = if last {
                read_written(&file, &mut buf, start)
            } else {
                std::io::Read::read_to_end(&mut &file, &mut buf).map(|_| ())
            };
            read.map_err(cannot_read)?;
            index.max_seq = index.max_seq.max(header.seq_floor.saturating_sub(1));
            if let Some(Limit::End { end, sealed_by }) = limits.get(&id)
                && (*end as usize) < buf.len()
                && buf[*end as usize..].iter().any(|&b| b != 0)
            {
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
            index.segs.insert(
                id,
                SegStats {
                    start: start as u64,
                    file_bytes: buf.len() as u64,
                    ..SegStats::default()
                },
            );
            let scanned = recovery::scan(
                id,
                &buf,
                start,
                stamp.map(|s| s.end),
                &mut index,
                &mut report,
            );
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
        drop(buf);

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

        let meta = index.meta.take().unwrap_or_default();
        index.dropped.clear();
        let mut messages = meta.found;
        for (seq, (key, priority, expires)) in meta.live {
            let weight = index.messages.get(&seq).map_or(0, |l| l.len);
            messages.push_compact(seq, key, priority, expires, weight, index.deliveries(seq));
        }
        let subscriptions: Vec<DurableSubscription> = index
            .subs
            .iter()
            .map(|((client_id, name), s)| DurableSubscription {
                client_id: client_id.clone(),
                name: name.clone(),
                topic: s.topic.clone(),
            })
            .collect();
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
        *write(&self.shared.index) = index;
        *write(&self.shared.files) = files;
        // The new head opens with a sealed manifest: the segments as this
        // master found them. A stale master's later appends to them, or
        // segments it creates, are ignored by every later recovery, and
        // anything missing from them later is noticed.
        self.new_head(next_id, true)?;
        if let Some((Ok(file), stamp)) = previous {
            segment::write_stamp(&file, &stamp)
                .and_then(|()| segment::sync_data(&file))
                .map_err(|e| io("cannot close the previous journal segment", e))?;
        }
        self.usage.set(read(&self.shared.index).disk_bytes());
        let elapsed = started.elapsed();
        let r = &report;
        tracing::info!(
            elapsed_ms = elapsed.as_millis() as u64,
            segments = r.segments,
            records = r.records,
            bytes = r.bytes,
            messages = messages.len(),
            subscriptions = subscriptions.len(),
            clean_shutdown = r.clean_shutdown,
            torn_tail_bytes = r.torn_bytes,
            corrupt_records = r.corrupt_records,
            lost_segments_or_stretches = losses.len(),
            rolled_back_batches = r.rolled_back_batches,
            unreadable_segments = r.bad_segments,
            "journal recovered"
        );
        Ok(Recovered {
            messages,
            subscriptions,
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
                        .map_err(|e| io(&format!("cannot truncate segment {id}"), e))?;
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

    fn write_sync(&mut self, batches: &[Batch]) -> Result<(), StoreError> {
        let mut w = Writer::default();
        let mut records = Vec::new();
        for batch in batches {
            records.extend(w.batch_with_offsets(batch));
        }
        self.append(Group {
            bytes: w.buf,
            records,
        })
    }
}

impl StoreBackend for JournalStore {
    async fn recover(&mut self) -> Result<Recovered, StoreError> {
        self.recover_sync()
    }

    async fn write(&mut self, batches: &[Batch], sync: bool) -> Result<(), StoreError> {
        self.write_sync(batches)?;
        if !sync {
            return Ok(());
        }
        match self.cfg.sync {
            SyncMode::Always => self.sync()?,
            SyncMode::BatchMs(ms) => {
                let due = self.last_sync + Duration::from_millis(ms);
                if Instant::now() < due {
                    tokio::time::sleep_until(due.into()).await;
                }
                self.sync()?;
            }
            SyncMode::Never => {}
        }
        // Someone waits for this group: only a master that still holds the
        // lock may confirm it. Had a new master taken over before this
        // check, its recovery could have sealed the journal before these
        // records; once the check passes, any later takeover recovers them.
        self.verify_lock("not confirming writes")
    }

    async fn maintain(&mut self) -> Result<bool, StoreError> {
        if self.delete_dead()? {
            self.regain_space();
            return Ok(true);
        }
        // Compaction copies before it frees: not while the disk is short.
        if self.usage.is_short_of_space() {
            return Ok(false);
        }
        if self.compaction.is_none() {
            let Some(seg) = self.pick_compaction() else {
                return Ok(false);
            };
            let file = read(&self.shared.files).get(&seg).cloned();
            let (start, end) = read(&self.shared.index)
                .segs
                .get(&seg)
                .map_or((0, 0), |s| (s.start, s.end));
            let Some(file) = file else { return Ok(false) };
            let data = segment::read_at(&file, 0, end as usize)
                .map_err(|e| io("cannot read segment for compaction", e))?;
            tracing::debug!(segment = seg, "compacting journal segment");
            self.compaction = Some(Compaction {
                seg,
                data,
                at: start as usize,
            });
        }
        self.compact_step()?;
        Ok(true)
    }

    async fn close(&mut self) {
        let next_seq = read(&self.shared.index).max_seq + 1;
        let mut w = Writer::default();
        w.checkpoint(next_seq, now_ms());
        let done = self
            .append(Group {
                bytes: w.buf,
                records: Vec::new(),
            })
            .and_then(|()| self.sync());
        if let (Ok(()), Some(h)) = (done, &self.head) {
            let _ = h.file.set_len(h.len);
            let _ = h.file.sync_all();
        }
    }

    fn reader(&self) -> Arc<dyn MessageReader> {
        Arc::new(Reader {
            shared: self.shared.clone(),
        })
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
fn file_name(id: u64) -> String {
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
    let mut chunk = 256 * 1024;
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

/// Loads message bodies from the segments.
struct Reader {
    shared: Arc<Shared>,
}

impl Reader {
    fn load_one(&self, seq: u64, common: &mut format::Common) -> Result<Arc<Message>, StoreError> {
        let fail = |reason: String| StoreError::Read {
            seq,
            reason: reason.into(),
        };
        // Compaction may move the record and delete its segment between the
        // lookup and the read: look again.
        for _ in 0..3 {
            let Some(loc) = read(&self.shared.index).messages.get(&seq).copied() else {
                return Err(fail("not in the journal".into()));
            };
            let Some(file) = read(&self.shared.files).get(&loc.seg).cloned() else {
                continue;
            };
            let bytes = segment::read_at(&file, u64::from(loc.off), loc.len as usize)
                .map_err(|e| fail(e.to_string()))?;
            let Frame::Record { len } = Frame::at(&bytes) else {
                return Err(fail(format!(
                    "damaged record in segment {} at {}",
                    loc.seg, loc.off
                )));
            };
            let (_, message) = format::decode_message(&bytes[FRAME_LEN..FRAME_LEN + len], common)
                .map_err(|e| fail(e.to_string()))?;
            if message.seq != seq {
                return Err(fail("index points at another message".into()));
            }
            return Ok(Arc::new(message));
        }
        Err(fail("its segment keeps moving".into()))
    }
}

impl MessageReader for Reader {
    fn pages(&self) -> bool {
        true
    }

    fn load(&self, seqs: &[u64]) -> Vec<Result<Arc<Message>, StoreError>> {
        let mut common = format::Common::default();
        seqs.iter()
            .map(|&s| self.load_one(s, &mut common))
            .collect()
    }
}

#[cfg(test)]
mod tests;
