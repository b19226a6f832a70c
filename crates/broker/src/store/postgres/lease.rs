//! The master's lease in a shared PostgreSQL database: master/slave when
//! brokers share a database instead of a directory.
//!
//! The `halyard_lock` row says who is master (owner, **epoch**) and until
//! when (`expires_at`, in database time). The master renews it every
//! lease/3 and stops serving the moment it cannot prove a live lease **by
//! its own monotonic clock**, counted from when the last successful renewal
//! was *sent* (minus a tenth of the lease for clock-rate differences) — so
//! a master cut off from the database is gone before the lease expires in
//! database time, which is when a slave may take it. Taking the lease
//! increments the epoch, and every write transaction of the store checks
//! the epoch under a row lock (`halyard_fence`): a zombie master's late
//! write fails and is never visible.
//!
//! The fast path. The master also holds a session advisory lock on the
//! connection whose backend pid the row records. Slaves block on that
//! advisory lock, so they wake the moment the master's connection drops.
//! Holding it is not proof by itself — the master's session could have
//! dropped because PostgreSQL restarted — so a slave takes an unexpired
//! lease only if the database is the same instance that granted it
//! (`pg_postmaster_start_time()`) and the master's backend no longer
//! exists. The master keeps renewing through a database restart (its
//! lease is still valid), and slaves then wait for it to expire.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use super::{MASTER_LOCK, connect};
use crate::store::dirlock::LockOwner;

/// What the lease needs.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// `postgres://…` of the shared database.
    pub url: String,
    /// How long a granted lease lasts (database time).
    pub lease: Duration,
    /// Who we are, recorded in the row.
    pub owner: LockOwner,
}

/// The lease could not be taken or checked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseError {
    /// The database refused or could not be reached.
    #[error("lease on the database: {detail}")]
    Db {
        /// The database's message (tokio-postgres's own says only
        /// "db error").
        detail: String,
        /// The error.
        #[source]
        source: tokio_postgres::Error,
    },
}

impl From<tokio_postgres::Error> for LeaseError {
    fn from(source: tokio_postgres::Error) -> LeaseError {
        LeaseError::Db {
            detail: crate::store::postgres::describe(&source),
            source,
        }
    }
}

/// Says when, and why, a master lost its lease.
#[derive(Clone)]
pub struct LostSignal {
    token: CancellationToken,
    reason: watch::Receiver<Option<String>>,
}

impl LostSignal {
    /// Cancelled the moment the lease can no longer be proven.
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// Resolves, with the reason, when the lease is lost.
    pub async fn wait(&self) -> String {
        self.token.cancelled().await;
        self.reason
            .borrow()
            .clone()
            .unwrap_or_else(|| "the lease was lost".into())
    }
}

/// What the renewal task reports, for the metrics.
#[derive(Debug)]
pub struct LeaseStats {
    /// Successful renewals.
    pub renewals: AtomicU64,
    /// Renewals that failed or timed out.
    pub failures: AtomicU64,
    /// Round trip of the last successful renewal, in microseconds.
    pub last_rtt_us: AtomicU64,
    /// Until when the lease is proven, in microseconds after `base`.
    valid_until_us: AtomicU64,
    base: Instant,
}

impl LeaseStats {
    fn new(valid_until: Instant) -> LeaseStats {
        let stats = LeaseStats {
            renewals: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            last_rtt_us: AtomicU64::new(0),
            valid_until_us: AtomicU64::new(0),
            base: Instant::now(),
        };
        stats.set_valid_until(valid_until);
        stats
    }

    fn set_valid_until(&self, t: Instant) {
        let us = t.saturating_duration_since(self.base).as_micros() as u64;
        self.valid_until_us.store(us, Ordering::Relaxed);
    }

    /// How much longer the lease is proven by this broker's clock.
    pub fn remaining(&self) -> Duration {
        let us = self.valid_until_us.load(Ordering::Relaxed);
        (self.base + Duration::from_micros(us)).saturating_duration_since(Instant::now())
    }
}

/// The master's lease, renewed in the background until dropped or
/// released.
pub struct Lease {
    stats: Arc<LeaseStats>,
    epoch: u64,
    lost: CancellationToken,
    reason: watch::Receiver<Option<String>>,
    renewer: Option<tokio::task::JoinHandle<Option<Client>>>,
    stop: CancellationToken,
}

/// Renewals per lease.
const RENEWALS: u32 = 3;

/// SQL that takes the lease: when it has expired, or — with the advisory
/// lock held ($3) — when the master's session is gone from the same
/// database instance.
const TAKE: &str = "UPDATE halyard_lock SET epoch = epoch + 1, owner = $1, \
     owner_backend = pg_backend_pid(), postmaster = pg_postmaster_start_time(), \
     expires_at = now() + $2::bigint * interval '1 millisecond' \
     WHERE id = 1 AND (expires_at < now() OR ($3::bool AND postmaster = pg_postmaster_start_time() \
       AND NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = halyard_lock.owner_backend))) \
     RETURNING epoch";

const RENEW: &str = "UPDATE halyard_lock SET expires_at = now() + $2::bigint * interval '1 millisecond', \
     owner_backend = pg_backend_pid(), postmaster = pg_postmaster_start_time() \
     WHERE id = 1 AND epoch = $1 RETURNING epoch";

fn owner_json(owner: &LockOwner) -> String {
    serde_json::to_string(owner).unwrap_or_default()
}

/// Reads who holds the lease now (`None` if nobody ever did).
pub(crate) async fn read_owner(client: &Client) -> Result<Option<LockOwner>, LeaseError> {
    let row = client
        .query_opt("SELECT owner, epoch FROM halyard_lock WHERE id = 1", &[])
        .await?;
    Ok(row.and_then(|r| {
        let text: String = r.get(0);
        let epoch: i64 = r.get(1);
        let mut o: LockOwner = serde_json::from_str(&text).ok()?;
        o.epoch = epoch as u64;
        Some(o)
    }))
}

/// Takes the lease if the database agrees; returns the epoch and when the
/// statement was sent — the lease runs from a moment after that, in
/// database time, so counting from it never overestimates what is left.
async fn take(
    client: &Client,
    cfg: &LeaseConfig,
    fast: bool,
) -> Result<Option<(u64, Instant)>, LeaseError> {
    let sent = Instant::now();
    let row = client
        .query_opt(
            TAKE,
            &[
                &owner_json(&cfg.owner),
                &(cfg.lease.as_millis() as i64),
                &fast,
            ],
        )
        .await?;
    Ok(row.map(|r| (r.get::<_, i64>(0) as u64, sent)))
}

/// The fast path's advisory lock, keyed by schema (see `MASTER_LOCK`).
const TRY_LOCK: &str = "SELECT pg_try_advisory_lock(hashtextextended(current_schema(), $1))";
const LOCK: &str = "SELECT pg_advisory_lock(hashtextextended(current_schema(), $1))";
const UNLOCK: &str = "SELECT pg_advisory_unlock(hashtextextended(current_schema(), $1))";

/// With the advisory lock held: takes the lease if TAKE's fast-path check
/// agrees (the master's session is gone), else gives the lock back.
async fn take_or_unlock(
    waiter: &Client,
    cfg: &LeaseConfig,
) -> Result<Option<(u64, Instant)>, LeaseError> {
    let taken = take(waiter, cfg, true).await?;
    if taken.is_none() {
        waiter.execute(UNLOCK, &[&MASTER_LOCK]).await?;
    }
    Ok(taken)
}

async fn try_advisory(client: &Client) -> Result<bool, LeaseError> {
    Ok(client.query_one(TRY_LOCK, &[&MASTER_LOCK]).await?.get(0))
}

impl Lease {
    /// Takes the lease if it is free (expired, never taken, or its holder's
    /// session is gone from this database instance).
    pub async fn try_acquire(cfg: &LeaseConfig) -> Result<Option<Lease>, LeaseError> {
        let client = connect(&cfg.url).await?;
        let advisory = try_advisory(&client).await?;
        match take(&client, cfg, advisory).await? {
            Some(taken) => Ok(Some(Lease::start(client, cfg, taken, advisory))),
            None => Ok(None),
        }
    }

    /// A slave's wait: returns once this broker holds the lease. Reports
    /// the current holder through `holder` as it changes.
    pub async fn wait(
        cfg: &LeaseConfig,
        holder: impl Fn(Option<LockOwner>) + Send,
    ) -> Result<Lease, LeaseError> {
        let poll = (cfg.lease / 10).clamp(Duration::from_millis(50), Duration::from_secs(1));
        loop {
            match Lease::wait_once(cfg, poll, &holder).await {
                Ok(lease) => return Ok(lease),
                Err(e) => {
                    tracing::warn!(error = %e, "waiting for the lease: database unavailable; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    /// One round of waiting on a pair of fresh connections: one blocks on
    /// the master's advisory lock (the fast path), the other watches the
    /// lease expire.
    async fn wait_once(
        cfg: &LeaseConfig,
        poll: Duration,
        holder: &(impl Fn(Option<LockOwner>) + Send),
    ) -> Result<Lease, LeaseError> {
        let waiter = connect(&cfg.url).await?;
        let watcher = connect(&cfg.url).await?;
        holder(read_owner(&watcher).await?);
        loop {
            if try_advisory(&waiter).await? {
                // Free at once: no evidence that a master died (it may be
                // reconnecting after a database restart). The check in TAKE
                // decides; if it says no, give the lock back so the master
                // can have it, and watch the lease.
                if let Some(taken) = take_or_unlock(&waiter, cfg).await? {
                    return Ok(Lease::start(waiter, cfg, taken, true));
                }
                let until = Instant::now() + cfg.lease / 2;
                while Instant::now() < until {
                    holder(read_owner(&watcher).await?);
                    if let Some(taken) = take(&watcher, cfg, false).await? {
                        return Ok(Lease::start(watcher, cfg, taken, false));
                    }
                    tokio::time::sleep(poll).await;
                }
                continue;
            }
            {
                let blocked = waiter.query_one(LOCK, &[&MASTER_LOCK]);
                tokio::pin!(blocked);
                loop {
                    tokio::select! {
                        r = &mut blocked => {
                            r?;
                            break;
                        }
                        _ = tokio::time::sleep(poll) => {
                            holder(read_owner(&watcher).await?);
                            if let Some(taken) = take(&watcher, cfg, false).await? {
                                // The waiter's blocked call dies with its
                                // connection.
                                return Ok(Lease::start(watcher, cfg, taken, false));
                            }
                        }
                    }
                }
            }
            // The master's session ended while we waited.
            if let Some(taken) = take_or_unlock(&waiter, cfg).await? {
                return Ok(Lease::start(waiter, cfg, taken, true));
            }
            tokio::time::sleep(poll).await;
        }
    }

    fn start(
        client: Client,
        cfg: &LeaseConfig,
        (epoch, sent): (u64, Instant),
        advisory: bool,
    ) -> Lease {
        let lost = CancellationToken::new();
        let stop = CancellationToken::new();
        let (tell, reason) = watch::channel(None);
        let stats = Arc::new(LeaseStats::new(sent + cfg.lease - cfg.lease / 10));
        let renewer = tokio::spawn(renew(
            client,
            cfg.clone(),
            (epoch, sent),
            advisory,
            (Arc::new(tell), lost.clone()),
            stop.clone(),
            stats.clone(),
        ));
        Lease {
            stats,
            epoch,
            lost,
            reason,
            renewer: Some(renewer),
            stop,
        }
    }

    /// The epoch this master claimed.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The renewal task's counters.
    pub fn stats(&self) -> Arc<LeaseStats> {
        self.stats.clone()
    }

    /// What tells the broker (and its store) that the lease is lost.
    pub fn lost_signal(&self) -> LostSignal {
        LostSignal {
            token: self.lost.clone(),
            reason: self.reason.clone(),
        }
    }

    /// Gives the lease up at once (graceful shutdown), so a slave takes over
    /// without waiting for it to expire.
    pub async fn release(mut self) {
        self.stop.cancel();
        let Some(renewer) = self.renewer.take() else {
            return;
        };
        let Ok(Some(client)) = renewer.await else {
            return;
        };
        let released = client
            .execute(
                "UPDATE halyard_lock SET expires_at = '-infinity' WHERE id = 1 AND epoch = $1",
                &[&(self.epoch as i64)],
            )
            .await;
        if let Err(e) = released {
            tracing::warn!(error = %e, "could not release the lease; a slave takes over when it expires");
        }
        // The advisory lock goes with the connection.
        drop(client);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The master's renewal loop. Returns its connection when stopped (for
/// `release`), `None` once the lease is lost.
async fn renew(
    mut client: Client,
    cfg: LeaseConfig,
    (epoch, taken): (u64, Instant),
    mut advisory: bool,
    (tell, lost): (Arc<watch::Sender<Option<String>>>, CancellationToken),
    stop: CancellationToken,
    stats: Arc<LeaseStats>,
) -> Option<Client> {
    let every = cfg.lease / RENEWALS;
    // The lease is provably ours until `valid_until` by our own clock: a
    // tenth of it is kept back for clock-rate differences.
    let keep_back = cfg.lease / 10;
    // Counted from when the TAKE was sent, not from now: this task may
    // first run well after (a busy runtime during a takeover).
    let mut valid_until = taken + cfg.lease - keep_back;
    let mut next = taken + every;
    let mut stale = false;
    let lose = |why: String| {
        tracing::error!(reason = %why, "lease lost");
        let _ = tell.send(Some(why));
        lost.cancel();
    };
    let expired = |valid_until: Instant| {
        // A starved runtime notices late, eating into the margin kept
        // back: say so, it would explain an overlap with a new master.
        let late = Instant::now().saturating_duration_since(valid_until);
        format!(
            "cannot prove the lease: no successful renewal for {} ms (lease {} ms; noticed {} ms late)",
            (cfg.lease - keep_back).as_millis(),
            cfg.lease.as_millis(),
            late.as_millis()
        )
    };
    loop {
        // The deadline is watched while waiting AND while a renewal is in
        // flight: a renewal hanging on a partitioned network must not hold
        // the master past it.
        tokio::select! {
            _ = stop.cancelled() => return Some(client),
            _ = tokio::time::sleep_until(valid_until.into()) => {
                lose(expired(valid_until));
                return None;
            }
            _ = tokio::time::sleep_until(next.into()) => {}
        }
        let sent = Instant::now();
        let attempt = async {
            if client.is_closed() || stale {
                client = connect(&cfg.url).await?;
                advisory = false;
                stale = false;
            }
            if !advisory {
                advisory = try_advisory(&client).await?;
            }
            let row = client
                .query_opt(RENEW, &[&(epoch as i64), &(cfg.lease.as_millis() as i64)])
                .await?;
            Ok::<_, LeaseError>(row.is_some())
        };
        let outcome = tokio::select! {
            _ = stop.cancelled() => return Some(client),
            _ = tokio::time::sleep_until(valid_until.into()) => None,
            r = tokio::time::timeout(every, attempt) => Some(r),
        };
        let Some(outcome) = outcome else {
            lose(expired(valid_until));
            return None;
        };
        match outcome {
            Ok(Ok(true)) => {
                valid_until = sent + cfg.lease - keep_back;
                next = sent + every;
                stats.set_valid_until(valid_until);
                stats.renewals.fetch_add(1, Ordering::Relaxed);
                stats
                    .last_rtt_us
                    .store(sent.elapsed().as_micros() as u64, Ordering::Relaxed);
            }
            Ok(Ok(false)) => {
                lose(format!(
                    "a newer master has taken the lease (ours was epoch {epoch})"
                ));
                return None;
            }
            Ok(Err(e)) => {
                stats.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "lease renewal failed; retrying");
                next = Instant::now() + every / 4;
            }
            Err(_) => {
                stats.failures.fetch_add(1, Ordering::Relaxed);
                // Whatever hangs on this connection is abandoned with it.
                tracing::warn!("lease renewal timed out; retrying on a new connection");
                stale = true;
                next = Instant::now();
            }
        }
    }
}
