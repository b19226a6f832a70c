//! The HA driver: a broker's role and the waits that change it.
//!
//! `Slave` (waiting for the lock or lease) → `Recovering` → `Master` → on
//! loss `Fenced`. The driver owns the role ([`RoleState`]), takes mastery
//! at once or waits for it ([`try_elect`], [`wait_elected`]) and watches it
//! while master ([`watch`]). What a master runs (the store, the service,
//! the listeners) is the lifecycle's business, one layer up: the driver
//! knows nothing of it.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::status::{HaStatus, Role, Takeover};
use crate::config::BrokerConfig;
use crate::store::dirlock::{CheckFailed, DataDirLock, Fenced, LockError, LockOwner, read_owner};
use crate::store::open::{Election, Mastery, Watch};
use crate::store::postgres::{Lease, LeaseError};

/// Why mastery could not be taken or waited for.
#[derive(Debug, thiserror::Error)]
pub enum ElectionError {
    /// The data directory's lock could not be taken.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The database lease could not be taken or waited for.
    #[error(transparent)]
    Lease(#[from] LeaseError),
    /// The thread that waits on the lock could not start, or died.
    #[error("cannot wait for the lock: {0}")]
    Thread(std::io::Error),
}

/// The broker's role and why it must stop, if it must.
pub(crate) struct RoleState {
    status: Mutex<HaStatus>,
    /// Cancelled when the broker must stop (fenced, store failed, could
    /// not take over).
    failed: CancellationToken,
}

impl RoleState {
    pub(crate) fn new(now_ms: u64) -> RoleState {
        RoleState {
            status: Mutex::new(HaStatus {
                role: Role::Slave,
                epoch: 0,
                since_ms: now_ms,
                lock_owner: None,
                takeover: None,
                reason: None,
            }),
            failed: CancellationToken::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HaStatus> {
        // Each critical section is a few field writes: consistent even if a
        // holder panicked.
        self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn status(&self) -> HaStatus {
        self.lock().clone()
    }

    pub(crate) fn set_role(&self, role: Role) {
        let mut s = self.lock();
        s.role = role;
        s.since_ms = crate::model::now_ms();
    }

    /// A slave saw who holds the lock or lease now (logged when it changes).
    pub(crate) fn saw_owner(&self, owner: Option<LockOwner>) {
        let mut s = self.lock();
        if s.role == Role::Slave && owner.is_some() && s.lock_owner != owner {
            if let Some(o) = &owner {
                tracing::info!(holder = %o, "another broker is master now; still waiting");
            }
            s.lock_owner = owner;
        }
    }

    /// This broker serves as master `epoch` from now on.
    pub(crate) fn mastered(&self, epoch: u64, takeover: Takeover) {
        let mut s = self.lock();
        s.role = Role::Master;
        s.epoch = epoch;
        s.since_ms = crate::model::now_ms();
        s.lock_owner = None;
        s.takeover = Some(takeover);
    }

    /// The broker must stop: records why and wakes [`RoleState::failed`].
    pub(crate) fn fail(&self, reason: String) {
        {
            let mut s = self.lock();
            if s.reason.is_none() {
                s.reason = Some(reason);
            }
        }
        self.failed.cancel();
    }

    /// Resolves, with the reason, once the broker must stop.
    pub(crate) async fn failed(&self) -> String {
        self.failed.cancelled().await;
        self.status()
            .reason
            .unwrap_or_else(|| "the broker failed".to_owned())
    }
}

/// Takes mastery if it is free; `None` if another broker has it.
pub(crate) async fn try_elect(election: &Election) -> Result<Option<Mastery>, ElectionError> {
    Ok(match election {
        Election::Lock { dir, .. } => DataDirLock::try_acquire(dir)?.map(Mastery::Lock),
        Election::Lease(cfg) => Lease::try_acquire(cfg).await?.map(Mastery::Lease),
    })
}

/// A slave's wait for mastery, keeping the holder it reports current (a
/// takeover by another slave changes it). `refresh` is how often the lock
/// file's owner is read again.
pub(crate) async fn wait_elected(
    election: &Election,
    state: &RoleState,
    refresh: Duration,
) -> Result<Mastery, ElectionError> {
    match election {
        Election::Lock { dir, poll } => {
            // The wait blocks a thread of its own, not one of the runtime's
            // blocking pool: a slave told to stop must not keep the runtime
            // (and so the process) waiting for a lock it will never take.
            let (got_tx, mut got) = tokio::sync::oneshot::channel();
            let lock_dir = dir.clone();
            let poll = *poll;
            std::thread::Builder::new()
                .name("halyard-lock-wait".into())
                .spawn(move || {
                    let _ = got_tx.send(DataDirLock::acquire_blocking(&lock_dir, poll));
                })
                .map_err(ElectionError::Thread)?;
            let mut tick = tokio::time::interval(refresh);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    r = &mut got => {
                        return r.map(Mastery::Lock).map_err(|_| {
                            ElectionError::Thread(std::io::Error::other("the lock-waiting thread ended"))
                        });
                    }
                    _ = tick.tick() => state.saw_owner(read_owner(dir)),
                }
            }
        }
        Election::Lease(cfg) => {
            let holder = |owner: Option<LockOwner>| state.saw_owner(owner);
            Ok(Mastery::Lease(Lease::wait(cfg, &holder).await?))
        }
    }
}

/// Keep-alive intervals the lock may go unverifiable (errors that say
/// nothing about the lock itself) before the master stops, unable to prove
/// it still is master.
const UNVERIFIED_KEEPALIVES: u32 = 10;

/// How long the lock may go unverifiable before a master fences itself.
pub(crate) fn unverified_budget(config: &BrokerConfig) -> Duration {
    Duration::from_millis(config.ha.lock_keepalive_ms) * UNVERIFIED_KEEPALIVES
}

/// Watches mastery while master, checking the lock file every `every`.
/// Returns why it was lost, or `None` once `stop` is cancelled.
pub(crate) async fn watch(
    watch: Watch,
    every: Duration,
    stop: &CancellationToken,
) -> Option<String> {
    let fence = match watch {
        Watch::File(f) => f,
        Watch::Lease(lost) => {
            return tokio::select! {
                _ = stop.cancelled() => None,
                why = lost.wait() => Some(Fenced::Lease(why).to_string()),
            };
        }
    };
    let mut failing_since: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return None,
            _ = tokio::time::sleep(every) => {}
        }
        let checked = {
            let c = fence.check.clone();
            tokio::task::spawn_blocking(move || c.check()).await
        };
        match checked {
            Ok(Ok(())) => {
                if let Some(since) = failing_since.take() {
                    tracing::info!(
                        failing_ms = since.elapsed().as_millis() as u64,
                        "the lock file can be checked again"
                    );
                }
            }
            Ok(Err(CheckFailed::Lost(fenced))) => return Some(fenced.to_string()),
            Ok(Err(CheckFailed::Unverified(e))) => {
                let since = *failing_since.get_or_insert_with(Instant::now);
                let failing = since.elapsed();
                if failing >= fence.budget {
                    let why = Fenced::Unverifiable {
                        path: fence.check.path().to_owned(),
                        reason: e.to_string(),
                        for_ms: failing.as_millis() as u64,
                    };
                    return Some(why.to_string());
                }
                tracing::warn!(error = %e, failing_ms = failing.as_millis() as u64,
                    "cannot check the lock file (not evidence that it was lost); retrying");
            }
            Err(e) => tracing::warn!(error = %e, "lock check did not run"),
        }
    }
}
