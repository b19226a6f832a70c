//! A broker's place in its master/slave group, as the log, the admin API
//! and `halyard status` show it.

use serde::Serialize;

use super::LockOwner;

/// The master/slave state machine:
/// `Slave` (waiting for the lock, client ports closed) → `Recovering`
/// (lock taken, reading the store) → `Master` (serving) → on losing the
/// lock, `Fenced` (closing everything, writing nothing, exiting).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Waiting for the data directory's lock.
    Slave,
    /// Holding the lock, recovering the store; ports still closed.
    Recovering,
    /// Serving clients.
    Master,
    /// Lost the lock: stopping without writing anything.
    Fenced,
    /// Shut down.
    Stopped,
}

impl Role {
    /// The name shown to users.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Slave => "slave",
            Role::Recovering => "recovering",
            Role::Master => "master",
            Role::Fenced => "fenced",
            Role::Stopped => "stopped",
        }
    }
}

/// How the last takeover went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Takeover {
    /// When the lock was acquired, ms since the epoch.
    pub at_ms: u64,
    /// How long this broker waited for the lock as a slave.
    pub waited_ms: u64,
    /// From acquiring the lock to serving clients (ports open).
    pub lock_to_serving_ms: u64,
    /// The store recovery's share of that.
    pub recovery_ms: u64,
}

/// The broker's HA state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HaStatus {
    /// Current role.
    pub role: Role,
    /// The master epoch this broker holds (0 before it first became
    /// master).
    pub epoch: u64,
    /// When the current role began, ms since the epoch.
    pub since_ms: u64,
    /// Who holds the lock, while this broker waits for it.
    pub lock_owner: Option<LockOwner>,
    /// The last takeover (this broker becoming master).
    pub takeover: Option<Takeover>,
    /// Why the broker was fenced or failed, if it was.
    pub reason: Option<String>,
}
