//! The data directory's `lock` file. The owning broker holds an exclusive
//! OS lock on it (`flock`; on NFS a whole-file `fcntl` lock, which is why the
//! file is opened for writing) for its whole life; the kernel releases it
//! when the process dies, `kill -9` included. The file's contents say who
//! holds it, for the error another broker prints.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The lock on a data directory, held until dropped.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
    path: PathBuf,
}

/// The lock could not be taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// Another process holds it.
    #[error(
        "data directory {dir} is in use by another broker ({owner}); only one broker may use a data directory at a time"
    )]
    Held {
        /// The data directory.
        dir: PathBuf,
        /// What the holder wrote in the lock file.
        owner: String,
    },
    /// The lock file could not be opened or written.
    #[error("cannot lock {path}: {source}")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl DataDirLock {
    /// Takes the lock on `<dir>/lock` without waiting, and records `owner`
    /// (a one-line description of this broker) in it.
    pub fn try_acquire(dir: &Path, owner: &str) -> Result<DataDirLock, LockError> {
        let path = dir.join("lock");
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut owner = String::new();
                let _ = file.read_to_string(&mut owner);
                let owner = owner.trim();
                return Err(LockError::Held {
                    dir: dir.to_owned(),
                    owner: if owner.is_empty() {
                        "owner unknown".to_owned()
                    } else {
                        owner.to_owned()
                    },
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{owner}").map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok(DataDirLock { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_owner_named() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::try_acquire(dir.path(), "broker a (pid 1)").unwrap();
        let e = DataDirLock::try_acquire(dir.path(), "broker b").unwrap_err();
        let text = e.to_string();
        assert!(text.contains("broker a (pid 1)"), "{text}");
        assert!(text.contains("in use by another broker"), "{text}");
        drop(first);
        DataDirLock::try_acquire(dir.path(), "broker b").unwrap();
    }
}
