//! A slave's copy of the master's newest index checkpoint, decoded while it
//! waits (`journal.standby-preload`).
//!
//! Decoding a deep store's checkpoint is most of a takeover (about 100 ms
//! a million messages, more on a machine that has been idle), and it is
//! work a waiting slave can do ahead: the master replaces the file whole
//! (written aside, renamed into place), so a copy decoded from it is
//! exactly what a takeover would read, for as long as the file is the same
//! one. A takeover uses the copy only if the file in place is still the
//! one it was decoded from — same inode, modification time, length and
//! header (whose checksum covers the body) — and then judges it against
//! the segments like any checkpoint; otherwise it reads the file as usual.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::checkpoint::{self, Loaded};
use crate::store::dedup::DuplicateBounds;

/// How often a waiting slave looks at the checkpoint file.
const EVERY: Duration = Duration::from_millis(200);

/// Which file a copy was decoded from.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Identity {
    ino: u64,
    dev: u64,
    mtime_ns: i128,
    len: u64,
    header: [u8; checkpoint::HEADER],
}

impl Identity {
    fn of(dir: &Path) -> Option<Identity> {
        let mut f = std::fs::File::open(checkpoint::path(dir)).ok()?;
        let m = f.metadata().ok()?;
        let mut header = [0u8; checkpoint::HEADER];
        f.read_exact(&mut header).ok()?;
        Some(Identity {
            ino: m.ino(),
            dev: m.dev(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            len: m.len(),
            header,
        })
    }
}

/// The decoded copy, kept up to date by a thread of its own until a
/// takeover takes it or the slave stops.
pub struct Standby {
    dir: PathBuf,
    copy: Mutex<Option<(Identity, Loaded)>>,
    stopped: AtomicBool,
    /// One decoded already.
    decoded: AtomicBool,
}

impl std::fmt::Debug for Standby {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Standby").field("dir", &self.dir).finish()
    }
}

impl Standby {
    /// Starts watching the checkpoint of the journal in `<data_dir>/journal`.
    pub fn watch(data_dir: &Path, bounds: DuplicateBounds) -> std::io::Result<Arc<Standby>> {
        let standby = Arc::new(Standby {
            dir: data_dir.join("journal"),
            copy: Mutex::new(None),
            stopped: AtomicBool::new(false),
            decoded: AtomicBool::new(false),
        });
        let s = standby.clone();
        std::thread::Builder::new()
            .name("journal-standby".into())
            .spawn(move || s.run(bounds))?;
        Ok(standby)
    }

    fn run(&self, bounds: DuplicateBounds) {
        while !self.stopped.load(Ordering::Acquire) {
            self.refresh(bounds);
            std::thread::sleep(EVERY);
        }
    }

    /// Decodes the checkpoint in place if it is not the one held.
    fn refresh(&self, bounds: DuplicateBounds) {
        let Some(id) = Identity::of(&self.dir) else {
            *self.lock() = None;
            return;
        };
        if self.lock().as_ref().is_some_and(|(held, _)| *held == id) {
            return;
        }
        let loaded = checkpoint::load(&self.dir, bounds);
        // Replaced while it was read: try again next time.
        if Identity::of(&self.dir).as_ref() != Some(&id) {
            return;
        }
        let mut copy = self.lock();
        match loaded {
            Ok(l) if !self.stopped.load(Ordering::Acquire) => {
                // Said once; each newer checkpoint after that at debug.
                if self.decoded.swap(true, Ordering::Relaxed) {
                    tracing::debug!(
                        messages = l.index.messages.len(),
                        "standby: the master's newer checkpoint decoded"
                    );
                } else {
                    tracing::info!(
                        messages = l.index.messages.len(),
                        "standby: the master's index checkpoint decoded; a takeover starts from it"
                    );
                }
                *copy = Some((id, l));
            }
            _ => *copy = None,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(Identity, Loaded)>> {
        self.copy.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stops watching and hands over the copy if the checkpoint in place is
    /// still the file it was decoded from.
    pub(crate) fn take(&self) -> Option<Loaded> {
        self.stop();
        let (held, loaded) = self.lock().take()?;
        (Identity::of(&self.dir).as_ref() == Some(&held)).then_some(loaded)
    }

    /// Stops watching and drops the copy (a slave that stops waiting).
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
    }

    /// Whether a copy is held (tests wait for one).
    #[cfg(test)]
    pub(crate) fn holds_copy(&self) -> bool {
        self.lock().is_some()
    }
}

/// Stops a [`Standby`] when dropped: a slave's waiting task may end by
/// being cancelled.
pub struct StopOnDrop(pub Arc<Standby>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop();
    }
}
