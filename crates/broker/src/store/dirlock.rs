//! The data directory's `lock` file: the master/slave election on a shared
//! file system.
//!
//! The master holds an exclusive OS lock on it (`flock`; on NFS a whole-file
//! `fcntl` lock, which is why the file is opened for writing) for its whole
//! life; the kernel releases it when the process dies, `kill -9` included.
//! A slave waits for it with a blocking lock call on a thread of its own, so
//! it wakes the moment the master dies (or, where a file system cannot
//! block, polls).
//!
//! The file's contents say who holds it — name, host, pid, start time — and
//! the **epoch**: a number each new master makes one higher. The master
//! checks the file now and then, and before it confirms any write; if it was
//! removed or replaced, or holds a newer epoch, someone else believes they
//! are master, and this broker must stop before it confirms anything again
//! (fencing).
//!
//! What counts as *lost* is positive evidence only: the path is gone, names
//! another file, or holds a newer epoch. The check needs no new file
//! descriptor — it stats the path and reads the contents through the
//! descriptor the lock is held on — so running out of descriptors cannot make
//! a master doubt itself, and a permission change on the file cannot either.
//! Any other error (EIO, ENOMEM, ...) is not evidence: the check is retried,
//! and only if the lock cannot be verified at all for a whole budget
//! (`Unverifiable`) does the master stop, since it then cannot prove it is
//! still master.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Who holds the lock, as written in the lock file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockOwner {
    /// Broker name.
    pub name: String,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// When the holder started, ms since the epoch.
    pub started_at_ms: u64,
    /// The holder's master epoch.
    pub epoch: u64,
}

impl std::fmt::Display for LockOwner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "broker '{}' on {} (pid {}, epoch {})",
            self.name, self.host, self.pid, self.epoch
        )
    }
}

/// The lock could not be taken or checked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// The lock file could not be opened, locked or written.
    #[error("cannot lock {path}: {source}")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The lock on a data directory, held until dropped.
#[derive(Debug)]
pub struct DataDirLock {
    /// Shared with every [`LockCheck`]: they read the file through the
    /// descriptor the lock is held on.
    file: Arc<File>,
    path: PathBuf,
    epoch: u64,
    /// What `claim` wrote: a check that reads back exactly this needs no
    /// parsing.
    claimed: Arc<[u8]>,
}

/// What the master's periodic check found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Fenced {
    /// The lock file is gone.
    #[error("the lock file {0} was removed")]
    Removed(PathBuf),
    /// Another file now has its name.
    #[error("the lock file {0} was replaced")]
    Replaced(PathBuf),
    /// This broker let the lock go (it is shutting down).
    #[error("the lock on {0} was released")]
    Released(PathBuf),
    /// A newer master wrote its epoch.
    #[error("a newer master (epoch {theirs}, ours {ours}) has taken over: {owner}")]
    Superseded {
        /// Their epoch.
        theirs: u64,
        /// Ours.
        ours: u64,
        /// What the file says.
        owner: String,
    },
    /// The database lease was lost (see `ha::Lease`).
    #[error("lost the database lease: {0}")]
    Lease(String),
    /// The file could not be checked at all for a whole budget: this
    /// broker cannot prove it is still master.
    #[error("the lock file {path} could not be checked for {for_ms} ms: {reason}")]
    Unverifiable {
        /// The lock file.
        path: PathBuf,
        /// The last error.
        reason: String,
        /// How long it has been failing.
        for_ms: u64,
    },
}

/// The path of a data directory's lock file.
pub fn lock_path(dir: &Path) -> PathBuf {
    dir.join("lock")
}

fn open(path: &Path) -> Result<File, LockError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|source| LockError::Io {
            path: path.to_owned(),
            source,
        })
}

/// Reads the owner recorded in a lock file (`None` if absent or not ours).
pub fn read_owner(dir: &Path) -> Option<LockOwner> {
    let text = std::fs::read_to_string(lock_path(dir)).ok()?;
    serde_json::from_str(text.trim()).ok()
}

impl DataDirLock {
    /// Takes the lock if it is free; `None` if another process holds it.
    pub fn try_acquire(dir: &Path) -> Result<Option<DataDirLock>, LockError> {
        let path = lock_path(dir);
        let file = open(&path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(DataDirLock::held(file, path))),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(source)) => Err(LockError::Io { path, source }),
        }
    }

    fn held(file: File, path: PathBuf) -> DataDirLock {
        DataDirLock {
            file: Arc::new(file),
            path,
            epoch: 0,
            claimed: Arc::from(&b""[..]),
        }
    }

    /// Waits for the lock: a blocking lock call (woken by the kernel the
    /// moment the holder dies), or with `poll`, a try every `poll` for file
    /// systems whose locks cannot block. Call on a thread that may block.
    ///
    /// A slave must outlast trouble with the lock file that is not its own
    /// business — an operator's `chmod`, a descriptor shortage, a flaky
    /// mount: errors opening or locking it are logged and retried (backing
    /// off to 5 s), never returned.
    pub fn acquire_blocking(dir: &Path, poll: Option<Duration>) -> DataDirLock {
        let path = lock_path(dir);
        let mut backoff = Duration::from_millis(100);
        loop {
            match DataDirLock::try_blocking(&path, poll) {
                Ok(Some(l)) => return l,
                Ok(None) => {
                    backoff = Duration::from_millis(100);
                    if let Some(p) = poll {
                        std::thread::sleep(p);
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, retry_in_ms = backoff.as_millis() as u64,
                        "slave: cannot wait on the data directory's lock; still waiting");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// One attempt of [`DataDirLock::acquire_blocking`]: `None` if the
    /// lock is held (with `poll`) or the file locked was not the one the
    /// path names by then.
    fn try_blocking(path: &Path, poll: Option<Duration>) -> Result<Option<DataDirLock>, LockError> {
        {
            let file = open(path)?;
            let locked = match poll {
                None => file.lock().map(|()| true),
                Some(_) => match file.try_lock() {
                    Ok(()) => Ok(true),
                    Err(TryLockError::WouldBlock) => Ok(false),
                    Err(TryLockError::Error(e)) => Err(e),
                },
            }
            .map_err(|source| LockError::Io {
                path: path.to_owned(),
                source,
            })?;
            if !locked {
                return Ok(None);
            }
            // The file we locked may have been removed or replaced while
            // we waited (a fencing test, or an operator): only a lock on
            // the file the path names now counts.
            let same = std::fs::metadata(path)
                .and_then(|m| file.metadata().map(|f| (m, f)))
                .is_ok_and(|(m, f)| m.dev() == f.dev() && m.ino() == f.ino());
            Ok(same.then(|| DataDirLock::held(file, path.to_owned())))
        }
    }

    /// Becomes master: records `owner` with an epoch one higher than both
    /// the file's previous epoch and `at_least`, and makes it durable.
    /// Returns the new epoch.
    pub fn claim(&mut self, mut owner: LockOwner, at_least: u64) -> Result<u64, LockError> {
        let io = |source| LockError::Io {
            path: self.path.clone(),
            source,
        };
        let mut previous = String::new();
        let mut file = &*self.file;
        file.rewind().map_err(io)?;
        let _ = file.read_to_string(&mut previous);
        let before = serde_json::from_str::<LockOwner>(previous.trim())
            .map(|o| o.epoch)
            .unwrap_or(0);
        owner.epoch = before.max(at_least) + 1;
        let text = format!("{}\n", serde_json::to_string(&owner).unwrap_or_default());
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        file.write_all(text.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        self.epoch = owner.epoch;
        self.claimed = Arc::from(text.as_bytes());
        Ok(owner.epoch)
    }

    /// The epoch this holder claimed.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A cheap, shareable check that this holder is still the master.
    pub fn checker(&self) -> Result<LockCheck, LockError> {
        let meta = self.file.metadata().map_err(|source| LockError::Io {
            path: self.path.clone(),
            source,
        })?;
        Ok(LockCheck {
            path: self.path.clone(),
            file: Arc::downgrade(&self.file),
            dev: meta.dev(),
            ino: meta.ino(),
            epoch: self.epoch,
            claimed: self.claimed.clone(),
        })
    }
}

/// Checks that the lock file is still the one this master locked, with its
/// epoch. Shared with the store, which checks before it confirms a group of
/// writes and before it deletes files.
#[derive(Debug, Clone)]
pub struct LockCheck {
    path: PathBuf,
    /// The descriptor the lock is held on: the contents are read through
    /// it, so a check never needs a new descriptor or read permission.
    /// Weak: a check must not keep the lock held once its holder has
    /// released it.
    file: std::sync::Weak<File>,
    dev: u64,
    ino: u64,
    epoch: u64,
    claimed: Arc<[u8]>,
}

/// Why a single check did not succeed.
#[derive(Debug)]
pub enum CheckFailed {
    /// Evidence that another broker is (or may become) master.
    Lost(Fenced),
    /// The check could not be made (an I/O error that says nothing about
    /// the lock); try again.
    Unverified(std::io::Error),
}

/// Longest lock file read back (an owner record is about 150 bytes).
const MAX_LOCK_FILE: usize = 4096;

impl LockCheck {
    /// One check: the path still names the file the lock is held on, and
    /// that file holds no newer epoch. Costs a `stat` and a `pread`.
    pub fn check(&self) -> Result<(), CheckFailed> {
        let Some(file) = self.file.upgrade() else {
            return Err(CheckFailed::Lost(Fenced::Released(self.path.clone())));
        };
        let meta = match std::fs::metadata(&self.path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(CheckFailed::Lost(Fenced::Removed(self.path.clone())));
            }
            Err(e) => return Err(CheckFailed::Unverified(e)),
        };
        if meta.dev() != self.dev || meta.ino() != self.ino {
            return Err(CheckFailed::Lost(Fenced::Replaced(self.path.clone())));
        }
        let mut buf = [0u8; MAX_LOCK_FILE];
        let mut len = 0;
        while len < buf.len() {
            match file.read_at(&mut buf[len..], len as u64) {
                Ok(0) => break,
                Ok(n) => len += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(CheckFailed::Unverified(e)),
            }
        }
        let text = &buf[..len];
        if text == &*self.claimed {
            return Ok(());
        }
        if let Ok(owner) = serde_json::from_slice::<LockOwner>(text.trim_ascii())
            && owner.epoch > self.epoch
        {
            return Err(CheckFailed::Lost(Fenced::Superseded {
                theirs: owner.epoch,
                ours: self.epoch,
                owner: owner.to_string(),
            }));
        }
        Ok(())
    }

    /// Checks, retrying errors that are not evidence (backing off from
    /// 1 ms) for up to `budget`; `Err` on evidence that the lock is lost,
    /// or if it could not be verified at all within the budget. Blocks.
    pub fn verify(&self, budget: Duration) -> Result<(), Fenced> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            match self.check() {
                Ok(()) => return Ok(()),
                Err(CheckFailed::Lost(f)) => return Err(f),
                Err(CheckFailed::Unverified(e)) => {
                    let waited = started.elapsed();
                    if waited >= budget {
                        return Err(Fenced::Unverifiable {
                            path: self.path.clone(),
                            reason: e.to_string(),
                            for_ms: waited.as_millis() as u64,
                        });
                    }
                    std::thread::sleep(pause.min(budget - waited));
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
            }
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// This host's name.
pub fn host_name() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(name: &str) -> LockOwner {
        LockOwner {
            name: name.into(),
            host: host_name(),
            pid: 1,
            started_at_ms: 0,
            epoch: 0,
        }
    }

    #[test]
    fn one_holder_at_a_time_and_epochs_grow() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = DataDirLock::try_acquire(dir.path()).unwrap().unwrap();
        assert_eq!(first.claim(owner("a"), 0).unwrap(), 1);
        assert!(DataDirLock::try_acquire(dir.path()).unwrap().is_none());
        assert_eq!(read_owner(dir.path()).unwrap().name, "a");
        let check = first.checker().unwrap();
        check.check().unwrap();
        drop(first);
        let mut second = DataDirLock::try_acquire(dir.path()).unwrap().unwrap();
        // The journal may know of a higher epoch than the file.
        assert_eq!(second.claim(owner("b"), 5).unwrap(), 6);
        // The old holder's check fails: it let the lock go. (A holder that
        // still runs sees the newer epoch: see below.)
        assert!(matches!(
            check.check(),
            Err(CheckFailed::Lost(Fenced::Released(_)))
        ));
    }

    #[test]
    fn a_removed_or_replaced_lock_file_fences_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = DataDirLock::try_acquire(dir.path()).unwrap().unwrap();
        l.claim(owner("a"), 0).unwrap();
        let check = l.checker().unwrap();
        std::fs::remove_file(lock_path(dir.path())).unwrap();
        assert!(matches!(
            check.check(),
            Err(CheckFailed::Lost(Fenced::Removed(_)))
        ));
        std::fs::write(lock_path(dir.path()), "{}").unwrap();
        assert!(matches!(
            check.check(),
            Err(CheckFailed::Lost(Fenced::Replaced(_)))
        ));
        assert!(matches!(
            check.verify(Duration::from_secs(1)),
            Err(Fenced::Replaced(_))
        ));
    }

    /// The check reads through the held descriptor: it neither opens the
    /// path nor needs read permission on it.
    #[test]
    fn the_check_reads_through_the_held_descriptor() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mut l = DataDirLock::try_acquire(dir.path()).unwrap().unwrap();
        l.claim(owner("a"), 0).unwrap();
        let check = l.checker().unwrap();
        let path = lock_path(dir.path());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)).unwrap();
        check.check().unwrap();
        check.verify(Duration::from_millis(10)).unwrap();
        // Rewritten in place with a newer epoch: seen through the same
        // descriptor.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut newer = owner("b");
        newer.epoch = 9;
        std::fs::write(&path, serde_json::to_string(&newer).unwrap()).unwrap();
        assert!(matches!(
            check.check(),
            Err(CheckFailed::Lost(Fenced::Superseded { theirs: 9, .. }))
        ));
    }

    #[test]
    fn a_waiting_slave_gets_the_lock_when_the_holder_goes() {
        let dir = tempfile::tempdir().unwrap();
        let held = DataDirLock::try_acquire(dir.path()).unwrap().unwrap();
        let path = dir.path().to_owned();
        let waiter = std::thread::spawn(move || DataDirLock::acquire_blocking(&path, None));
        std::thread::sleep(Duration::from_millis(50));
        assert!(!waiter.is_finished());
        drop(held);
        drop(waiter.join().unwrap());
        let path = dir.path().to_owned();
        let poller = std::thread::spawn(move || {
            DataDirLock::acquire_blocking(&path, Some(Duration::from_millis(5)))
        });
        drop(poller.join().unwrap());
    }
}
