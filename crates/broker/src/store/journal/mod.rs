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

mod checkpoint;
pub(crate) mod format;
mod index;
mod later;
mod open;
mod reader;
mod reclaim;
mod recovery;
mod segment;
mod standby;
pub use standby::{Standby, StopOnDrop};

use reader::Reader;

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use format::{Entry, FIXED_LEN, HEADER_LEN, Listed, SegmentHeader, Stamp, Writer};
use index::{Index, Loc, SegStats};
use serde::{Deserialize, Serialize};

use super::{Batch, MessageReader, Recovered, StoreBackend, StoreError, Usage};
use crate::model::now_ms;

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
    /// Write an index checkpoint after this many bytes of journal (and
    /// whenever the journal has been quiet for a second after a change),
    /// so that recovery and takeover read only what was written after it.
    /// 0: never (recovery reads the whole journal).
    pub checkpoint_bytes: u64,
    /// How much of a segment being compacted is read into memory at a time
    /// (a record larger than this is read whole). Reading the whole segment
    /// made compaction the largest allocation of a queue drain (issue #19).
    pub compact_read_bytes: usize,
    /// A slave decodes the master's newest checkpoint while it waits, so a
    /// takeover starts from it without reading it (the slave holds the
    /// decoded index meanwhile: about 40 bytes a stored message).
    pub standby_preload: bool,
}

impl Default for JournalConfig {
    fn default() -> JournalConfig {
        JournalConfig {
            segment_bytes: 32 * 1024 * 1024,
            sync: SyncMode::Always,
            compact_below: 0.5,
            on_corruption: OnCorruption::Refuse,
            checkpoint_bytes: 64 * 1024 * 1024,
            compact_read_bytes: COMPACT_STEP,
            standby_preload: true,
        }
    }
}

/// What is where: the index of live records and the open segment files.
/// The writer updates both; readers look messages up here to load bodies
/// (each lock held only for a lookup or an update, never across I/O).
#[derive(Debug, Default)]
struct Catalog {
    index: RwLock<Index>,
    files: RwLock<HashMap<u64, Arc<File>>>,
    /// How far the journal has got, for the checkpointer.
    progress: Arc<checkpoint::Progress>,
}

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    // Every critical section leaves the maps consistent, so a panic in
    // another holder does not make them unusable.
    l.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

/// How the journal of a master proves it still holds the data
/// directory's lock.
#[derive(Debug, Clone)]
pub struct Fence {
    /// The check.
    pub check: crate::store::dirlock::LockCheck,
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
///
/// The segment is read a window at a time (`JournalConfig::compact_read_bytes`
/// bytes, or one whole record if that is larger), not whole: a 32 MiB segment read at once
/// was the largest single allocation of a queue drain (issue #19).
struct Compaction {
    seg: u64,
    file: Arc<File>,
    window: usize,
    /// Where the segment's written records end.
    end: usize,
    /// The window: `data` holds the segment's bytes from offset `base`.
    base: usize,
    data: Vec<u8>,
    /// The next record's offset in the segment.
    at: usize,
}

impl Compaction {
    /// The window's bytes from `at` on.
    fn rest(&self) -> &[u8] {
        &self.data[self.at - self.base..]
    }

    /// Makes the window hold at least `need` bytes from `at` on (or all of
    /// the segment that is left), reading a new one from `at` if it does not.
    fn ensure(&mut self, need: usize) -> std::io::Result<()> {
        let have = self.base + self.data.len() - self.at;
        if have >= need || self.base + self.data.len() >= self.end {
            return Ok(());
        }
        let len = need.max(self.window).min(self.end - self.at);
        // Freed first: never two windows at once.
        self.data = Vec::new();
        self.data = segment::read_at(&self.file, self.at as u64, len)?;
        self.base = self.at;
        Ok(())
    }
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
    catalog: Arc<Catalog>,
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
    /// The thread writing index checkpoints, once recovered.
    checkpointer: Option<checkpoint::Running>,
    /// Whether recovery started from a checkpoint (else it read everything).
    from_checkpoint: bool,
    /// Recovery hands live messages over from the index once the broker
    /// serves ([`crate::store::Recovered::later`]) instead of listing them.
    later: bool,
    /// The checkpoint a slave decoded while it waited.
    standby: Option<Arc<Standby>>,
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
            catalog: Arc::default(),
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
            checkpointer: None,
            from_checkpoint: false,
            later: false,
            standby: None,
        }
    }

    /// A checkpointer for this journal's current state.
    fn checkpointer(&self) -> checkpoint::Checkpointer {
        checkpoint::Checkpointer {
            dir: self.dir.clone(),
            catalog: self.catalog.clone(),
            progress: self.catalog.progress.clone(),
            fence: self.fence.clone(),
            epoch: self.epoch,
            every: self.cfg.checkpoint_bytes,
            due: !self.from_checkpoint,
        }
    }

    /// Starts writing checkpoints in the background (after recovery).
    fn start_checkpoints(&mut self) {
        if self.cfg.checkpoint_bytes == 0 {
            return;
        }
        match self.checkpointer().spawn() {
            Ok(thread) => {
                self.checkpointer = Some(checkpoint::Running {
                    progress: self.catalog.progress.clone(),
                    thread: Some(thread),
                })
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the journal's checkpoint thread: recovery will read the whole journal")
            }
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

    /// Has recovery hand the live messages over from the index once the
    /// broker serves, a chunk at a time (see `later.rs`), rather than list
    /// them all before it returns.
    pub fn hand_over_later(mut self) -> JournalStore {
        self.later = true;
        self
    }

    /// Recovery first tries the checkpoint `standby` decoded while this
    /// broker waited as a slave (used only if it is still the file in
    /// place).
    pub fn with_standby(mut self, standby: Option<Arc<Standby>>) -> JournalStore {
        self.standby = standby;
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
            let idx = read(&self.catalog.index);
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
                StoreError::Unavailable {
                    reason: format!("cannot create journal segment {id}: {e}").into(),
                    source: Some(Arc::new(e)),
                }
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
        write(&self.catalog.files).insert(id, file.clone());
        {
            let mut idx = write(&self.catalog.index);
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
            self.catalog
                .progress
                .appended
                .fetch_add(first, std::sync::atomic::Ordering::Release);
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
            Err(e @ StoreError::Unavailable { .. }) => {
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
            .map_err(|e| StoreError::io("cannot close journal segment", e))?;
        if let Some(s) = write(&self.catalog.index).segs.get_mut(&id) {
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
            segment::sync_data(&h.file).map_err(|e| StoreError::io("journal sync failed", e))?;
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
        let idx = read(&self.catalog.index);
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
            StoreError::unavailable(
                format!(
                    "no space left for new messages on the journal's disk ({free} bytes free, {reserve} kept for acknowledgements); they are accepted again once consumers free space"
                ),
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
        if base + g.bytes.len() as u64 > u64::from(u32::MAX) {
            // The index keeps 32-bit offsets within a segment. The writer
            // gathers at most 8 MiB of new messages into a group, so only
            // one transaction of more than about 4 GiB gets here.
            return Err(StoreError::unavailable(format!(
                "a batch of {} bytes is too large for the journal (at most 4 GiB in one segment)",
                g.bytes.len()
            )));
        }
        if let Err(e) = std::os::unix::fs::FileExt::write_all_at(&*file, &g.bytes, base) {
            if let Err(c) = self.clear_failed_write(base, g.bytes.len()) {
                return Err(StoreError::io(
                    format!("journal write failed (and clearing what it left failed too: {c})"),
                    e,
                ));
            }
            if segment::no_space(&e) {
                self.usage.short_of_space(SHORT_OF_SPACE_MS);
                self.usage
                    .no_space
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return Err(StoreError::Unavailable {
                    reason: format!("journal write failed: {e}").into(),
                    source: Some(Arc::new(e)),
                });
            }
            return Err(StoreError::io("journal write failed", e));
        }
        self.unsynced = true;
        let end = base + g.bytes.len() as u64;
        if let Some(h) = self.head.as_mut() {
            h.len = end;
            h.allocated = h.allocated.max(end);
            h.records += records;
            h.adds += adds;
        }
        let mut idx = write(&self.catalog.index);
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
        self.catalog
            .progress
            .appended
            .fetch_add(g.bytes.len() as u64, std::sync::atomic::Ordering::Release);
        self.usage.set(idx.disk_bytes());
        self.usage.set_data(idx.data_bytes());
        Ok(())
    }

    fn write_sync(&mut self, batches: &[Batch]) -> Result<(), StoreError> {
        let mut w = Writer::default();
        let mut records = Vec::new();
        {
            // Only this thread changes the index: the places given here
            // are still right when the group is appended.
            let idx = read(&self.catalog.index);
            let mut placing = idx.placing();
            for batch in batches {
                records.extend(w.batch_with_offsets(batch, &mut |r| placing.place(r)));
            }
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
            let file = read(&self.catalog.files).get(&seg).cloned();
            let (start, end) = read(&self.catalog.index)
                .segs
                .get(&seg)
                .map_or((0, 0), |s| (s.start, s.end));
            let Some(file) = file else { return Ok(false) };
            tracing::debug!(segment = seg, "compacting journal segment");
            // The first window is read by the first step.
            self.compaction = Some(Compaction {
                seg,
                file,
                window: self.cfg.compact_read_bytes.max(1),
                end: end as usize,
                base: start as usize,
                data: Vec::new(),
                at: start as usize,
            });
        }
        self.compact_step()?;
        Ok(true)
    }

    async fn close(&mut self) {
        let next_seq = read(&self.catalog.index).max_seq + 1;
        let mut w = Writer::default();
        w.checkpoint(next_seq, now_ms());
        let done = self
            .append(Group {
                bytes: w.buf,
                records: Vec::new(),
            })
            .and_then(|()| self.sync());
        if let Some(mut c) = self.checkpointer.take() {
            c.stop();
        }
        if let (Ok(()), Some(h)) = (done, &self.head) {
            let _ = h.file.set_len(h.len);
            let _ = h.file.sync_all();
            // A clean restart then reads the checkpoint and nothing else.
            if self.cfg.checkpoint_bytes > 0
                && let Err(e) = self.checkpointer().write_one()
            {
                tracing::warn!(error = %e, "cannot write the journal's index checkpoint at shutdown");
            }
        }
    }

    fn reader(&self) -> Arc<dyn MessageReader> {
        Arc::new(Reader {
            catalog: self.catalog.clone(),
        })
    }
}

#[cfg(test)]
mod tests;
