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
//! re-reads the file now and then; if it was removed or replaced, or holds a
//! newer epoch, someone else believes they are master, and this broker must
//! stop before it writes anything again (fencing).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
    file: File,
    path: PathBuf,
    epoch: u64,
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
    /// The file could not be checked.
    #[error("the lock file {path} cannot be checked: {reason}")]
    Unreadable {
        /// The lock file.
        path: PathBuf,
        /// Why.
        reason: String,
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
            Ok(()) => Ok(Some(DataDirLock {
                file,
                path,
                epoch: 0,
            })),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(source)) => Err(LockError::Io { path, source }),
        }
    }

    /// Waits for the lock: a blocking lock call (woken by the kernel the
    /// moment the holder dies), or with `poll`, a try every `poll` for file
    /// systems whose locks cannot block. Call on a thread that may block.
    pub fn acquire_blocking(dir: &Path, poll: Option<Duration>) -> Result<DataDirLock, LockError> {
        let path = lock_path(dir);
        loop {
            let file = open(&path)?;
            let locked = match poll {
                None => file.lock().map(|()| true),
                Some(_) => match file.try_lock() {
                    Ok(()) => Ok(true),
                    Err(TryLockError::WouldBlock) => Ok(false),
                    Err(TryLockError::Error(e)) => Err(e),
                },
            }
            .map_err(|source| LockError::Io {
                path: path.clone(),
                source,
            })?;
            if locked {
                // The file we locked may have been removed or replaced while
                // we waited (a fencing test, or an operator): only a lock on
                // the file the path names now counts.
                let same = std::fs::metadata(&path)
                    .and_then(|m| file.metadata().map(|f| (m, f)))
                    .is_ok_and(|(m, f)| m.dev() == f.dev() && m.ino() == f.ino());
                if same {
                    return Ok(DataDirLock {
                        file,
                        path,
                        epoch: 0,
                    });
                }
                continue;
            }
            if let Some(p) = poll {
                std::thread::sleep(p);
            }
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
        self.file.rewind().map_err(io)?;
        let _ = self.file.read_to_string(&mut previous);
        let before = serde_json::from_str::<LockOwner>(previous.trim())
            .map(|o| o.epoch)
            .unwrap_or(0);
        owner.epoch = before.max(at_least) + 1;
        let text = serde_json::to_string(&owner).unwrap_or_default();
        self.file.set_len(0).map_err(io)?;
        self.file.rewind().map_err(io)?;
        writeln!(self.file, "{text}").map_err(io)?;
        self.file.sync_all().map_err(io)?;
        self.epoch = owner.epoch;
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
            dev: meta.dev(),
            ino: meta.ino(),
            epoch: self.epoch,
        })
    }
}

/// Checks that the lock file is still the one this master locked, with its
/// epoch. Shared with the store, which checks before deleting files.
#[derive(Debug, Clone)]
pub struct LockCheck {
    path: PathBuf,
    dev: u64,
    ino: u64,
    epoch: u64,
}

impl LockCheck {
    /// `Ok` while this broker is still the master.
    pub fn check(&self) -> Result<(), Fenced> {
        let meta = match std::fs::metadata(&self.path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Fenced::Removed(self.path.clone()));
            }
            Err(e) => {
                return Err(Fenced::Unreadable {
                    path: self.path.clone(),
                    reason: e.to_string(),
                });
            }
        };
        if meta.dev() != self.dev || meta.ino() != self.ino {
            return Err(Fenced::Replaced(self.path.clone()));
        }
        let text = std::fs::read_to_string(&self.path).map_err(|e| Fenced::Unreadable {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        if let Ok(owner) = serde_json::from_str::<LockOwner>(text.trim())
            && owner.epoch > self.epoch
        {
            return Err(Fenced::Superseded {
                theirs: owner.epoch,
                ours: self.epoch,
                owner: owner.to_string(),
            });
        }
        Ok(())
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
        // The old master's check now fails: a newer epoch.
        assert!(matches!(
            check.check(),
            Err(Fenced::Superseded {
                theirs: 6,
                ours: 1,
                ..
            })
        ));
    }

    #[test]
    fn a_removed_or_replaced_lock_file_fences_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = DataDirLock::try_acquire(dir.path()).unwrap().unwrap();
        l.claim(owner("a"), 0).unwrap();
        let check = l.checker().unwrap();
        std::fs::remove_file(lock_path(dir.path())).unwrap();
        assert!(matches!(check.check(), Err(Fenced::Removed(_))));
        std::fs::write(lock_path(dir.path()), "{}").unwrap();
        assert!(matches!(check.check(), Err(Fenced::Replaced(_))));
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
        waiter.join().unwrap().unwrap();
        let path = dir.path().to_owned();
        let poller = std::thread::spawn(move || {
            DataDirLock::acquire_blocking(&path, Some(Duration::from_millis(5)))
        });
        poller.join().unwrap().unwrap();
    }
}
