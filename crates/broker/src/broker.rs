//! The running broker: shared state, start-up and graceful shutdown.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{BrokerConfig, StoreKind};
use crate::core::{Control, DurableName};
use crate::core::{DestHandle, DestinationStats};
use crate::ha::{
    CheckFailed, DataDirLock, Fenced, HaStatus, Lease, LeaseConfig, LockOwner, LostSignal, Role,
    Takeover, host_name, read_owner,
};
use crate::metrics::Metrics;
use crate::model::{Destination, DestinationKind, now_ms};
use crate::resources::Resources;
use crate::store::postgres::{PostgresConfig, PostgresStore};
use crate::store::{
    JournalStore, MemoryStore, Recovered, Store, StoreBackend, StoreError, StoreKey, StoredMessage,
    Usage, WriterConfig,
};

/// State shared by every task of one broker. Mutable state here is either
/// atomic or behind a short, synchronous lock that is never held across an
/// `.await`; everything else is owned by actors.
pub(crate) struct Shared {
    pub(crate) config: BrokerConfig,
    /// Connection caps and the memory budget worked out at start.
    pub(crate) resources: Resources,
    pub(crate) store: Store,
    pub(crate) metrics: Metrics,
    /// Prefix of message ids made by this boot of the broker.
    pub(crate) id_prefix: Arc<str>,
    /// Cancelled when the broker stops: destination actors end.
    pub(crate) stop: CancellationToken,
    /// Every message the broker holds is charged to this
    /// (`limits.memory-bytes`).
    pub(crate) memory: Arc<crate::memory::MemoryBudget>,
    boot: String,
    seq: AtomicU64,
    next_connection: AtomicU64,
    next_consumer: AtomicU64,
    next_destination: AtomicU64,
    destinations: Mutex<HashMap<Destination, DestHandle>>,
    /// Connected client ids, each with what closes its connection.
    client_ids: Mutex<HashMap<String, Arc<crate::core::Kick>>>,
    /// Woken when a client id is released.
    client_id_released: tokio::sync::Notify,
    /// The topic of every durable subscription.
    durables: Mutex<HashMap<DurableName, Destination>>,
}

/// The broker will not create more destinations.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot create {0}: the broker already has limits.max-destinations ({1}) destinations")]
pub(crate) struct TooManyDestinations(String, usize);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The protected maps stay consistent even if a holder panicked: every
    // critical section is a single insert, remove or lookup.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    /// The next broker-wide sequence number.
    pub(crate) fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub(crate) fn next_consumer(&self) -> u64 {
        self.next_consumer.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The id of a new destination actor.
    pub(crate) fn next_destination_id(&self) -> u64 {
        self.next_destination.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Removes a destination from the registry if the entry is still the
    /// actor `id` and `idle` (evaluated under the registry's lock, so
    /// nobody can look the destination up meanwhile) says it may go.
    pub(crate) fn reclaim(&self, dest: &Destination, id: u64, idle: impl FnOnce() -> bool) -> bool {
        let mut map = lock(&self.destinations);
        match map.get(dest) {
            Some(h) if h.id() == id && idle() => {
                map.remove(dest);
                Metrics::inc(&self.metrics.destinations_reclaimed_total);
                true
            }
            _ => false,
        }
    }

    /// Whether the registry is nine tenths full: idle destinations then go
    /// at once.
    pub(crate) fn destinations_crowded(&self) -> bool {
        let max = self.config.limits.max_destinations;
        lock(&self.destinations).len() >= max - max / 10
    }

    /// How many destinations exist.
    pub(crate) fn destination_count(&self) -> usize {
        lock(&self.destinations).len()
    }

    /// A connection id unique across restarts of this broker (it names
    /// temporary queues, which clients may hold on to across a restart).
    pub(crate) fn next_connection_id(&self) -> String {
        let n = self.next_connection.fetch_add(1, Ordering::Relaxed) + 1;
        format!("{}-{n}", self.boot)
    }

    /// The destination, created on first use.
    pub(crate) fn destination(
        self: &Arc<Self>,
        dest: &Destination,
    ) -> Result<DestHandle, TooManyDestinations> {
        let mut map = lock(&self.destinations);
        if let Some(h) = map.get(dest) {
            return Ok(h.clone());
        }
        let max = self.config.limits.max_destinations;
        if map.len() >= max {
            return Err(TooManyDestinations(dest.to_string(), max));
        }
        let handle = match dest.kind() {
            DestinationKind::Topic => crate::core::spawn_topic(self.clone(), dest.clone()),
            DestinationKind::Queue | DestinationKind::TempQueue => {
                crate::core::spawn_queue(self.clone(), dest.clone())
            }
        };
        map.insert(dest.clone(), handle.clone());
        Ok(handle)
    }

    /// Publishes to `handle`'s destination; if it was reclaimed meanwhile
    /// (idle destinations go), to the one made anew. Temporary queues are
    /// not made anew: a message to one that is gone is `Gone`.
    pub(crate) async fn publish(
        self: &Arc<Self>,
        handle: &DestHandle,
        message: Arc<crate::model::Message>,
        confirm: bool,
    ) -> Result<(), crate::core::PublishError> {
        let mut h = handle.clone();
        let mut attempts = 0;
        loop {
            match h.publish(message.clone(), confirm).await {
                Err(crate::core::PublishError::Gone(gone))
                    if h.destination().kind() != DestinationKind::TempQueue && attempts < 3 =>
                {
                    attempts += 1;
                    h = self
                        .destination(h.destination())
                        .map_err(|_| crate::core::PublishError::Gone(gone))?;
                }
                other => return other,
            }
        }
    }

    /// Sends `c` to `handle`'s destination, or to the one made anew if it
    /// was reclaimed meanwhile; returns the handle that took it.
    pub(crate) async fn control(
        self: &Arc<Self>,
        handle: &DestHandle,
        c: Control,
    ) -> Result<DestHandle, crate::core::Gone> {
        let mut h = handle.clone();
        let mut c = c;
        for _ in 0..3 {
            match h.control_or_back(c).await {
                Ok(()) => return Ok(h),
                Err(back) => c = back,
            }
            if h.destination().kind() == DestinationKind::TempQueue {
                break;
            }
            h = match self.destination(h.destination()) {
                Ok(h) => h,
                Err(_) => break,
            };
        }
        Err(crate::core::Gone(h.destination().to_string()))
    }

    /// The destination if it exists.
    pub(crate) fn existing_destination(&self, dest: &Destination) -> Option<DestHandle> {
        lock(&self.destinations).get(dest).cloned()
    }

    /// Deletes a temporary queue and the messages in it.
    pub(crate) fn delete_destination(&self, dest: &Destination) {
        if let Some(h) = lock(&self.destinations).remove(dest)
            && !h.try_control(crate::core::Control::Delete)
        {
            tokio::spawn(async move {
                let _ = h.control(crate::core::Control::Delete).await;
            });
        }
    }

    pub(crate) fn destination_handles(&self) -> Vec<DestHandle> {
        lock(&self.destinations).values().cloned().collect()
    }

    /// Registers a client id; `false` if another connection has it.
    /// Registers a client id for the connection `kick` closes; if another
    /// connection has it, gives back what closes that one.
    pub(crate) fn claim_client_id(
        &self,
        id: &str,
        kick: &Arc<crate::core::Kick>,
    ) -> Result<(), Arc<crate::core::Kick>> {
        let mut ids = lock(&self.client_ids);
        match ids.get(id) {
            Some(owner) => Err(owner.clone()),
            None => {
                ids.insert(id.to_owned(), kick.clone());
                Ok(())
            }
        }
    }

    /// Claims a client id another connection holds: closes that connection
    /// (ActiveMQ's link stealing) and waits, up to `within`, for it to let
    /// the id go.
    pub(crate) async fn steal_client_id(
        &self,
        id: &str,
        kick: &Arc<crate::core::Kick>,
        within: Duration,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let released = self.client_id_released.notified();
            match self.claim_client_id(id, kick) {
                Ok(()) => return true,
                Err(owner) => owner.kick(format!(
                    "client-id '{id}' was taken over by a new connection (clients.link-stealing)"
                )),
            }
            if tokio::time::timeout_at(deadline, released).await.is_err() {
                return false;
            }
        }
    }

    pub(crate) fn release_client_id(&self, id: &str) {
        lock(&self.client_ids).remove(id);
        self.client_id_released.notify_waiters();
    }

    /// The topic a durable subscription is on.
    pub(crate) fn durable_topic(&self, name: &DurableName) -> Option<Destination> {
        lock(&self.durables).get(name).cloned()
    }

    /// Records (or forgets, with `None`) a durable subscription's topic.
    pub(crate) fn set_durable_topic(&self, name: &DurableName, topic: Option<Destination>) {
        let mut map = lock(&self.durables);
        match topic {
            Some(t) => map.insert(name.clone(), t),
            None => map.remove(name),
        };
    }

    /// Statistics of every destination, sorted by name. Destinations that
    /// do not answer within a second are left out.
    pub(crate) async fn destination_stats(&self) -> Vec<DestinationStats> {
        let mut out = Vec::new();
        for h in self.destination_handles() {
            let (reply, rx) = tokio::sync::oneshot::channel();
            if h.control(crate::core::Control::Stats { reply })
                .await
                .is_err()
            {
                continue;
            }
            if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(1), rx).await {
                out.push(s);
            }
        }
        out.sort_by(|a, b| a.destination.cmp(&b.destination));
        out
    }
}

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The data directory could not be created.
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A listener could not be opened.
    #[error("cannot listen for {what} on {addr}: {source}")]
    Bind {
        /// `STOMP` or `HTTP`.
        what: &'static str,
        /// The configured address.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The store could not be opened or recovered.
    #[error("cannot open the message store: {0}")]
    Store(#[from] StoreError),
    /// The data directory's lock could not be taken.
    #[error(transparent)]
    Lock(#[from] crate::ha::LockError),
    /// The database lease could not be taken or waited for.
    #[error(transparent)]
    Lease(#[from] crate::ha::LeaseError),
    /// A thread could not be started.
    #[error("cannot start the store writer: {0}")]
    Thread(std::io::Error),
}

/// Batches waiting for the store writer before submitters must wait.
const STORE_QUEUE_DEPTH: usize = 8192;
/// Recovered messages handed to a destination at a time.
const RESTORE_CHUNK: usize = 4096;

/// What a broker is, master or not: its configuration, HA status and admin
/// endpoint.
pub(crate) struct Node {
    pub(crate) config: BrokerConfig,
    pub(crate) resources: Resources,
    pub(crate) started_at_ms: u64,
    pub(crate) started: Instant,
    status: Mutex<HaStatus>,
    /// Set once the broker is master.
    master: tokio::sync::watch::Sender<Option<Arc<Master>>>,
    /// Cancelled when the broker must stop (fenced, store failed, could
    /// not take over).
    failed: CancellationToken,
}

/// What a master runs.
pub(crate) struct Master {
    pub(crate) shared: Arc<Shared>,
    /// Set once the STOMP port is open.
    stomp_addr: std::sync::OnceLock<SocketAddr>,
    accept_stop: CancellationToken,
    sessions_stop: CancellationToken,
    tracker: TaskTracker,
    store_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    lock: Mutex<Option<Mastery>>,
}

/// What makes this broker master: the data directory's lock, or the
/// database lease.
pub(crate) enum Mastery {
    Dir(DataDirLock),
    Lease(Lease),
}

impl Master {
    /// The STOMP listen address, once open.
    pub(crate) fn stomp_addr(&self) -> Option<SocketAddr> {
        self.stomp_addr.get().copied()
    }

    /// The database lease's counters, if this master holds one.
    pub(crate) fn lease_stats(&self) -> Option<Arc<crate::ha::LeaseStats>> {
        match &*lock(&self.lock) {
            Some(Mastery::Lease(lease)) => Some(lease.stats()),
            _ => None,
        }
    }
}

impl Node {
    pub(crate) fn status(&self) -> HaStatus {
        lock(&self.status).clone()
    }

    fn set_role(&self, role: Role) {
        let mut s = lock(&self.status);
        s.role = role;
        s.since_ms = now_ms();
    }

    pub(crate) fn master(&self) -> Option<Arc<Master>> {
        self.master.borrow().clone()
    }

    /// The broker must stop: records why and wakes whoever waits on
    /// [`Broker::failed`].
    fn fail(&self, reason: String) {
        {
            let mut s = lock(&self.status);
            if s.reason.is_none() {
                s.reason = Some(reason);
            }
        }
        self.failed.cancel();
    }
}

/// A broker: a master serving clients, or a slave waiting to take over.
/// Dropping it without [`Broker::shutdown`] leaves its tasks running until
/// the runtime ends.
pub struct Broker {
    node: Arc<Node>,
    http_addr: SocketAddr,
    http_task: JoinHandle<()>,
    admin_stop: CancellationToken,
    waiter: Option<JoinHandle<()>>,
}

/// Recovers a backend's state and starts its writer.
async fn open_store<B: StoreBackend>(
    mut backend: B,
    usage: Arc<Usage>,
    config: &BrokerConfig,
) -> Result<(Store, std::thread::JoinHandle<()>, Recovered), StartError> {
    let mut recovered = backend.recover().await?;
    let writer = WriterConfig {
        queue_depth: STORE_QUEUE_DEPTH,
        limit: config.store.max_bytes,
        when_full: config.store.when_full,
        duplicates: config.duplicate_bounds(),
    };
    let duplicate_ids = std::mem::take(&mut recovered.duplicate_ids);
    let (store, thread) =
        Store::spawn(backend, usage, writer, duplicate_ids).map_err(StartError::Thread)?;
    Ok((store, thread, recovered))
}

impl Broker {
    /// Opens the admin endpoint and takes the data directory's lock. If it
    /// is free the broker recovers the store and serves before this returns
    /// (a master); if another broker holds it, this broker becomes a slave
    /// that waits in the background — client ports closed — and takes over
    /// the moment the lock is released (see [`Broker::role`]).
    pub async fn start(config: BrokerConfig) -> Result<Broker, StartError> {
        if config.store.kind != StoreKind::Postgres {
            std::fs::create_dir_all(&config.data_dir).map_err(|source| StartError::DataDir {
                path: config.data_dir.clone(),
                source,
            })?;
        } else {
            // The schema must exist before the lease row can be read.
            PostgresStore::migrate(&config.store.url).await?;
        }
        let resources = crate::resources::plan(&config);
        let http = bind("HTTP", &config.http).await?;
        let http_addr = http.local_addr().map_err(|source| StartError::Bind {
            what: "HTTP",
            addr: config.http.clone(),
            source,
        })?;
        let started_at_ms = now_ms();
        let node = Arc::new(Node {
            config,
            resources,
            started_at_ms,
            started: Instant::now(),
            status: Mutex::new(HaStatus {
                role: Role::Slave,
                epoch: 0,
                since_ms: started_at_ms,
                lock_owner: None,
                takeover: None,
                reason: None,
            }),
            master: tokio::sync::watch::channel(None).0,
            failed: CancellationToken::new(),
        });
        let admin_stop = CancellationToken::new();
        let http_task = tokio::spawn(crate::admin::serve(http, node.clone(), admin_stop.clone()));
        let mut broker = Broker {
            node: node.clone(),
            http_addr,
            http_task,
            admin_stop,
            waiter: None,
        };
        if node.config.store.kind == StoreKind::Postgres {
            if let Err(e) = start_on_database(&node, &mut broker).await {
                broker.admin_stop.cancel();
                return Err(e);
            }
            return Ok(broker);
        }
        let dir = node.config.data_dir.clone();
        match DataDirLock::try_acquire(&dir) {
            Ok(Some(l)) => {
                if let Err(e) = promote(&node, Mastery::Dir(l), Duration::ZERO).await {
                    broker.admin_stop.cancel();
                    return Err(e);
                }
            }
            Ok(None) => {
                let owner = read_owner(&dir);
                tracing::info!(
                    name = %node.config.name,
                    http = %http_addr,
                    data_dir = %dir.display(),
                    holder = %owner.as_ref().map_or_else(|| "unknown".to_owned(), ToString::to_string),
                    "slave: the data directory is locked by the master; waiting to take over (client ports stay closed)"
                );
                lock(&node.status).lock_owner = owner;
                let poll = match node.config.ha.lock_poll_ms {
                    0 => None,
                    ms => Some(Duration::from_millis(ms)),
                };
                let waiting = node.clone();
                // The wait blocks a thread of its own, not one of the
                // runtime's blocking pool: a slave told to stop must not
                // keep the runtime (and so the process) waiting for a lock
                // it will never take.
                let (got_tx, got_rx) = tokio::sync::oneshot::channel();
                let lock_dir = dir.clone();
                std::thread::Builder::new()
                    .name("halyard-lock-wait".into())
                    .spawn(move || {
                        let _ = got_tx.send(DataDirLock::acquire_blocking(&lock_dir, poll));
                    })
                    .map_err(StartError::Thread)?;
                let refresh = Duration::from_millis(node.config.ha.lock_keepalive_ms.max(10));
                broker.waiter = Some(tokio::spawn(async move {
                    let since = Instant::now();
                    let got = wait_for_lock(&waiting, &dir, got_rx, refresh).await;
                    let result = match got {
                        Some(l) => promote(&waiting, Mastery::Dir(l), since.elapsed()).await,
                        None => Err(StartError::Thread(std::io::Error::other(
                            "the lock-waiting thread ended",
                        ))),
                    };
                    if let Err(e) = result {
                        tracing::error!(error = %e, "cannot take over as master");
                        waiting.fail(format!("cannot take over as master: {e}"));
                    }
                }));
            }
            Err(e) => {
                broker.admin_stop.cancel();
                return Err(e.into());
            }
        }
        Ok(broker)
    }

    /// The broker's role now.
    pub fn role(&self) -> Role {
        self.node.status().role
    }

    /// The broker's HA status (role, epoch, last takeover).
    pub fn status(&self) -> HaStatus {
        self.node.status()
    }

    /// Waits until this broker is master (a slave: until it takes over).
    pub async fn wait_until_master(&self) {
        let mut rx = self.node.master.subscribe();
        while rx.borrow_and_update().is_none() {
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Resolves, with the reason, if the broker must stop: it was fenced
    /// (lost its lock), its store failed, or it could not take over.
    pub async fn failed(&self) -> String {
        self.node.failed.cancelled().await;
        self.node
            .status()
            .reason
            .unwrap_or_else(|| "the broker failed".to_owned())
    }

    /// Where clients connect with STOMP, once master.
    pub fn stomp_addr(&self) -> Option<SocketAddr> {
        self.node.master().and_then(|m| m.stomp_addr())
    }

    /// Where the admin HTTP API listens.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// A master stops accepting, lets connections finish in-flight work (up
    /// to `timeouts.shutdown-ms`), closes them with an ERROR frame, stops
    /// destinations, closes the store and releases the lock, so a slave can
    /// take over at once. A slave just stops waiting.
    pub async fn shutdown(mut self) {
        if let Some(w) = self.waiter.take() {
            // Cancelled at its next await; if it is in the middle of taking
            // over, that finishes first, and the new master is shut down
            // below like any other.
            w.abort();
            let _ = w.await;
        }
        if let Some(m) = self.node.master() {
            let fenced = self.node.status().role == Role::Fenced;
            if !fenced {
                tracing::info!("shutting down: no new connections; finishing in-flight work");
            }
            m.accept_stop.cancel();
            m.sessions_stop.cancel();
            m.tracker.close();
            let grace = Duration::from_millis(self.node.config.timeouts.shutdown_ms + 1_000);
            if tokio::time::timeout(grace, m.tracker.wait()).await.is_err() {
                tracing::warn!("some connections did not finish within the shutdown timeout");
            }
            m.shared.stop.cancel();
            m.shared.store.close().await;
            let thread = lock(&m.store_thread).take();
            if let Some(t) = thread {
                let _ = tokio::task::spawn_blocking(move || t.join()).await;
            }
            // Release the lock last: the store is closed and synced.
            let mastery = lock(&m.lock).take();
            if let Some(Mastery::Lease(lease)) = mastery {
                lease.release().await;
            }
        }
        if self.node.status().role != Role::Fenced {
            self.node.set_role(Role::Stopped);
        }
        self.admin_stop.cancel();
        let _ = self.http_task.await;
        tracing::info!("halyard broker stopped");
    }
}

/// A slave's wait for the lock, keeping the lock owner it reports current
/// (a takeover by another slave changes it). `None` if the waiting thread
/// died.
async fn wait_for_lock(
    node: &Node,
    dir: &std::path::Path,
    mut got: tokio::sync::oneshot::Receiver<DataDirLock>,
    refresh: Duration,
) -> Option<DataDirLock> {
    let mut tick = tokio::time::interval(refresh);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            r = &mut got => return r.ok(),
            _ = tick.tick() => {
                let owner = read_owner(dir);
                let mut status = lock(&node.status);
                if status.role == Role::Slave && owner.is_some() && status.lock_owner != owner {
                    tracing::info!(
                        holder = %owner.as_ref().map_or_else(String::new, ToString::to_string),
                        "the data directory has a new master; still waiting"
                    );
                    status.lock_owner = owner;
                }
            }
        }
    }
}

fn owner(node: &Node) -> LockOwner {
    LockOwner {
        name: node.config.name.clone(),
        host: host_name(),
        pid: std::process::id(),
        started_at_ms: node.started_at_ms,
        epoch: 0,
    }
}

fn lease_config(node: &Node) -> LeaseConfig {
    LeaseConfig {
        url: node.config.store.url.clone(),
        lease: Duration::from_millis(node.config.ha.lease_ms),
        owner: owner(node),
    }
}

/// Master/slave on a shared database: the lease elects the master.
async fn start_on_database(node: &Arc<Node>, broker: &mut Broker) -> Result<(), StartError> {
    let cfg = lease_config(node);
    if let Some(lease) = Lease::try_acquire(&cfg).await? {
        return promote(node, Mastery::Lease(lease), Duration::ZERO).await;
    }
    tracing::info!(
        name = %node.config.name,
        http = %broker.http_addr,
        database = %crate::store::postgres::redact(&cfg.url),
        "slave: another broker holds the database lease; waiting to take over (client ports stay closed)"
    );
    let waiting = node.clone();
    broker.waiter = Some(tokio::spawn(async move {
        let since = Instant::now();
        let seen = waiting.clone();
        let holder = move |owner: Option<LockOwner>| {
            let mut status = lock(&seen.status);
            if status.role == Role::Slave && status.lock_owner != owner {
                if let Some(o) = &owner {
                    tracing::info!(holder = %o, "the database lease is held by");
                }
                status.lock_owner = owner;
            }
        };
        let mut retry = Duration::from_millis(250);
        let result = loop {
            let result = match Lease::wait(&cfg, &holder).await {
                Ok(lease) => promote(&waiting, Mastery::Lease(lease), since.elapsed()).await,
                Err(e) => Err(e.into()),
            };
            match result {
                // The database failed us mid-takeover (say it is restarting):
                // nothing was served yet and the lease went with the
                // dropped store, so wait for it again rather than exit.
                Err(StartError::Store(e)) => {
                    tracing::error!(error = %e, retry_in_ms = retry.as_millis() as u64,
                        "taking over failed: could not open the store; waiting for the lease again");
                    waiting.set_role(Role::Slave);
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(Duration::from_secs(5));
                }
                other => break other,
            }
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "cannot take over as master");
            waiting.fail(format!("cannot take over as master: {e}"));
        }
    }));
    Ok(())
}

/// Takes over as master: claims a new epoch (in the lock file; the lease
/// has one already), recovers the store, opens the STOMP port and starts
/// watching the lock.
async fn promote(
    node: &Arc<Node>,
    mut mastery: Mastery,
    waited: Duration,
) -> Result<(), StartError> {
    let took_lock = Instant::now();
    node.set_role(Role::Recovering);
    let config = &node.config;
    let (epoch, watch) = match &mut mastery {
        Mastery::Dir(dir_lock) => {
            let epoch = dir_lock.claim(owner(node), JournalStore::max_epoch(&config.data_dir))?;
            let fence = crate::store::journal::Fence {
                check: dir_lock.checker()?,
                budget: unverified_budget(config),
            };
            (epoch, Watch::File(fence))
        }
        Mastery::Lease(lease) => (lease.epoch(), Watch::Lease(lease.lost_signal())),
    };
    if !waited.is_zero() {
        tracing::info!(
            epoch,
            waited_ms = waited.as_millis() as u64,
            "the lock is ours: taking over as master"
        );
    }
    let usage = Arc::new(Usage::default());
    let recovery = Instant::now();
    let (store, store_thread, recovered) = match (config.store.kind, &watch) {
        (StoreKind::Postgres, Watch::Lease(lost)) => {
            let backend = PostgresStore::connect(
                PostgresConfig {
                    url: config.store.url.clone(),
                    readers: config.store.readers,
                    duplicates: config.duplicate_bounds(),
                },
                epoch,
                lost.token(),
                usage.clone(),
            )
            .await?;
            open_store(backend, usage, config).await?
        }
        (StoreKind::Memory, _) => {
            open_store(MemoryStore::with_usage(usage.clone()), usage, config).await?
        }
        (_, Watch::File(fence)) => {
            let backend = JournalStore::with_fence(
                &config.data_dir,
                config.journal.clone(),
                usage.clone(),
                epoch,
                Some(fence.clone()),
            )
            .duplicate_bounds(config.duplicate_bounds());
            open_store(backend, usage, config).await?
        }
        (_, Watch::Lease(_)) => {
            return Err(StartError::Store(StoreError::Failed(
                "a database lease is only used with the postgres store".into(),
            )));
        }
    };
    let recovery_ms = recovery.elapsed().as_millis() as u64;
    let started_at_ms = now_ms();
    let boot = format!("{started_at_ms:x}{:04x}", std::process::id() & 0xffff);
    let shared = Arc::new(Shared {
        id_prefix: format!("ID:{}-{boot}-", config.name).into(),
        boot,
        config: config.clone(),
        resources: node.resources.clone(),
        store,
        metrics: Metrics::default(),
        stop: CancellationToken::new(),
        memory: crate::memory::MemoryBudget::new(node.resources.memory_bytes),
        seq: AtomicU64::new(recovered.max_seq),
        next_connection: AtomicU64::new(0),
        next_consumer: AtomicU64::new(0),
        next_destination: AtomicU64::new(0),
        destinations: Mutex::new(HashMap::new()),
        client_ids: Mutex::new(HashMap::new()),
        client_id_released: tokio::sync::Notify::new(),
        durables: Mutex::new(HashMap::new()),
    });
    let recovered_count = recovered.messages.len();
    restore(&shared, recovered).await;
    let master = Arc::new(Master {
        shared: shared.clone(),
        stomp_addr: std::sync::OnceLock::new(),
        accept_stop: CancellationToken::new(),
        sessions_stop: CancellationToken::new(),
        tracker: TaskTracker::new(),
        store_thread: Mutex::new(Some(store_thread)),
        lock: Mutex::new(Some(mastery)),
    });
    // Published before the port opens: whoever can connect can also see the
    // destinations.
    node.master.send_replace(Some(master.clone()));
    let stomp = bind("STOMP", &config.stomp).await?;
    let stomp_addr = stomp.local_addr().map_err(|source| StartError::Bind {
        what: "STOMP",
        addr: config.stomp.clone(),
        source,
    })?;
    let _ = master.stomp_addr.set(stomp_addr);
    tokio::spawn(crate::acceptor::accept_stomp(
        stomp,
        shared.clone(),
        master.accept_stop.clone(),
        master.sessions_stop.clone(),
        master.tracker.clone(),
    ));
    tokio::spawn(keep_alive(node.clone(), master.clone(), watch));
    let watcher = node.clone();
    let failing = master.clone();
    tokio::spawn(async move {
        failing.shared.store.failed().await;
        if watcher.status().role != Role::Master {
            return;
        }
        match failing.shared.store.failure() {
            Some(StoreError::Fenced(why)) => fence(&watcher, &failing, &why),
            other => {
                let why = other.map_or_else(|| "unknown".to_owned(), |e| e.to_string());
                tracing::error!(error = %why, "the message store failed: stopping so that a slave can take over");
                watcher.fail(format!("the message store failed: {why}"));
            }
        }
    });
    let takeover = Takeover {
        at_ms: now_ms().saturating_sub(took_lock.elapsed().as_millis() as u64),
        waited_ms: waited.as_millis() as u64,
        lock_to_serving_ms: took_lock.elapsed().as_millis() as u64,
        recovery_ms,
    };
    {
        let mut s = lock(&node.status);
        s.role = Role::Master;
        s.epoch = epoch;
        s.since_ms = now_ms();
        s.lock_owner = None;
        s.takeover = Some(takeover);
    }
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        name = %config.name,
        epoch,
        stomp = %stomp_addr,
        http = %config.http,
        store = ?config.store.kind,
        data = %if config.store.kind == StoreKind::Postgres {
            let tls = if crate::store::postgres::uses_tls(&config.store.url) {
                " (TLS)"
            } else {
                ""
            };
            format!("{}{tls}", crate::store::postgres::redact(&config.store.url))
        } else {
            config.data_dir.display().to_string()
        },
        recovered = recovered_count,
        waited_ms = takeover.waited_ms,
        lock_to_serving_ms = takeover.lock_to_serving_ms,
        recovery_ms,
        "halyard broker started: master, serving clients"
    );
    Ok(())
}

/// How a master learns it is no longer master.
enum Watch {
    /// Check the lock file every `ha.lock-keepalive-ms` (and the journal
    /// checks it before confirming each group of writes).
    File(crate::store::journal::Fence),
    /// The lease's renewal task says so.
    Lease(LostSignal),
}

/// Keep-alive intervals the lock may go unverifiable (errors that say
/// nothing about the lock itself) before the master stops, unable to prove
/// it still is master.
const UNVERIFIED_KEEPALIVES: u32 = 10;

fn unverified_budget(config: &BrokerConfig) -> Duration {
    Duration::from_millis(config.ha.lock_keepalive_ms) * UNVERIFIED_KEEPALIVES
}

/// Watches the lock while master; fences the broker when it is lost.
async fn keep_alive(node: Arc<Node>, master: Arc<Master>, watch: Watch) {
    let fence_check = match watch {
        Watch::File(f) => f,
        Watch::Lease(lost) => {
            tokio::select! {
                _ = master.shared.stop.cancelled() => {}
                why = lost.wait() => fence(&node, &master, &Fenced::Lease(why).to_string()),
            }
            return;
        }
    };
    let every = Duration::from_millis(node.config.ha.lock_keepalive_ms);
    let mut failing_since: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = master.shared.stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let checked = {
            let c = fence_check.check.clone();
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
            Ok(Err(CheckFailed::Lost(fenced))) => {
                return fence(&node, &master, &fenced.to_string());
            }
            Ok(Err(CheckFailed::Unverified(e))) => {
                let since = *failing_since.get_or_insert_with(Instant::now);
                let failing = since.elapsed();
                if failing >= fence_check.budget {
                    let why = Fenced::Unverifiable {
                        path: fence_check.check.path().to_owned(),
                        reason: e.to_string(),
                        for_ms: failing.as_millis() as u64,
                    };
                    return fence(&node, &master, &why.to_string());
                }
                tracing::warn!(error = %e, failing_ms = failing.as_millis() as u64,
                    "cannot check the lock file (not evidence that it was lost); retrying");
            }
            Err(e) => tracing::warn!(error = %e, "lock check did not run"),
        }
    }
}

/// This broker is no longer master: stop at once, write nothing.
fn fence(node: &Node, master: &Master, why: &str) {
    if node.status().role == Role::Fenced {
        return;
    }
    node.set_role(Role::Fenced);
    tracing::error!(
        reason = %why,
        "FENCED: this broker is no longer master; closing every client connection and writing nothing more"
    );
    master.shared.store.fence();
    master.accept_stop.cancel();
    master.sessions_stop.cancel();
    master.shared.stop.cancel();
    node.fail(format!("fenced: {why}"));
}

/// Hands what recovery found to the destinations, in sequence order, a
/// chunk at a time.
async fn restore(shared: &Arc<Shared>, recovered: Recovered) {
    let mut topics: HashMap<DurableName, crate::core::DestHandle> = HashMap::new();
    for s in recovered.subscriptions {
        let topic = s.topic;
        let name = DurableName {
            client_id: s.client_id.into(),
            name: s.name.into(),
        };
        match shared.destination(&topic) {
            Ok(h) => {
                let _ = h
                    .control(Control::RestoreSubscription { name: name.clone() })
                    .await;
                shared.set_durable_topic(&name, Some(topic));
                topics.insert(name, h);
            }
            Err(e) => tracing::error!(error = %e, "cannot restore durable subscription"),
        }
    }
    let mut chunks: HashMap<StoreKey, Vec<StoredMessage>> = HashMap::new();
    for m in recovered.messages.into_sorted() {
        let chunk = chunks.entry(m.key.clone()).or_default();
        chunk.push(m);
        if chunk.len() >= RESTORE_CHUNK {
            let full = std::mem::take(chunk);
            restore_chunk(shared, &topics, full).await;
        }
    }
    for (_, chunk) in chunks {
        if !chunk.is_empty() {
            restore_chunk(shared, &topics, chunk).await;
        }
    }
}

async fn restore_chunk(
    shared: &Arc<Shared>,
    topics: &HashMap<DurableName, crate::core::DestHandle>,
    messages: Vec<StoredMessage>,
) {
    let (handle, durable) = match &messages[0].key {
        StoreKey::Queue(name) => match shared.destination(&Destination::queue(name)) {
            Ok(h) => (h, None),
            Err(e) => {
                tracing::error!(error = %e, "cannot restore recovered messages");
                return;
            }
        },
        StoreKey::Durable { client_id, name } => {
            let name = DurableName {
                client_id: client_id.clone(),
                name: name.clone(),
            };
            match topics.get(&name) {
                Some(h) => (h.clone(), Some(name)),
                None => {
                    tracing::error!(client_id = %name.client_id, subscription = %name.name,
                        count = messages.len(), "recovered messages of an unknown durable subscription");
                    return;
                }
            }
        }
    };
    let _ = handle.control(Control::Restore { durable, messages }).await;
}

async fn bind(what: &'static str, addr: &str) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind {
            what,
            addr: addr.to_owned(),
            source,
        })
}
