//! High availability. Today: the exclusive lock on the data directory that
//! guarantees only one broker writes a store. Master/slave election and
//! fencing build on it.

mod lock;

pub use lock::{DataDirLock, LockError};
