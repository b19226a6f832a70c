//! High availability on a shared file system: the data directory's lock
//! elects the master, and a broker that loses it fences itself.
//!
//! The state machine (see [`Role`]) is driven by `Broker`: a broker that
//! finds the lock taken becomes a slave, keeps its client ports closed and
//! waits on the lock from a thread of its own; when the master dies the
//! kernel releases the lock, the slave wakes at once, claims a new epoch,
//! recovers the store and opens its ports. A master re-checks the lock file
//! every `ha.lock-keepalive-ms` and stops without writing anything more if
//! it was removed, replaced, or taken over by a newer epoch.

pub(crate) mod driver;
mod status;

pub use driver::ElectionError;

pub use crate::store::dirlock::{
    CheckFailed, DataDirLock, Fenced, LockCheck, LockError, LockOwner, host_name, lock_path,
    read_owner,
};
pub use crate::store::postgres::{Lease, LeaseConfig, LeaseError, LeaseStats, LostSignal};
pub use status::{HaStatus, Role, Takeover};
