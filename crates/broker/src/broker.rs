//! The running broker: shared state, start-up and graceful shutdown.

use std::collections::{HashMap, HashSet};
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
use crate::core::{DestHandle, Destination, DestinationKind, DestinationStats, now_ms};
use crate::ha::DataDirLock;
use crate::metrics::Metrics;
use crate::store::{
    JournalStore, MemoryStore, Recovered, Store, StoreBackend, StoreError, StoreKey, StoredMessage,
    Usage,
};

/// State shared by every task of one broker. Mutable state here is either
/// atomic or behind a short, synchronous lock that is never held across an
/// `.await`; everything else is owned by actors.
pub(crate) struct Shared {
    pub(crate) config: BrokerConfig,
    pub(crate) store: Store,
    pub(crate) metrics: Metrics,
    /// Prefix of message ids made by this boot of the broker.
    pub(crate) id_prefix: Arc<str>,
    /// Cancelled when the broker stops: destination actors end.
    pub(crate) stop: CancellationToken,
    pub(crate) started: Instant,
    pub(crate) started_at_ms: u64,
    boot: String,
    seq: AtomicU64,
    next_connection: AtomicU64,
    next_consumer: AtomicU64,
    destinations: Mutex<HashMap<Destination, DestHandle>>,
    client_ids: Mutex<HashSet<String>>,
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
    pub(crate) fn claim_client_id(&self, id: &str) -> bool {
        lock(&self.client_ids).insert(id.to_owned())
    }

    pub(crate) fn release_client_id(&self, id: &str) {
        lock(&self.client_ids).remove(id);
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
    /// Another broker uses the data directory.
    #[error(transparent)]
    Lock(#[from] crate::ha::LockError),
    /// A thread could not be started.
    #[error("cannot start the store writer: {0}")]
    Thread(std::io::Error),
}

/// A running broker. Dropping it without [`Broker::shutdown`] leaves its
/// tasks running until the runtime ends.
pub struct Broker {
    shared: Arc<Shared>,
    stomp_addr: SocketAddr,
    http_addr: SocketAddr,
    accept_stop: CancellationToken,
    sessions_stop: CancellationToken,
    tracker: TaskTracker,
    store_thread: std::thread::JoinHandle<()>,
    http_task: JoinHandle<()>,
    _lock: DataDirLock,
}

/// Batches waiting for the store writer before submitters must wait.
const STORE_QUEUE_DEPTH: usize = 8192;
/// Recovered messages handed to a destination at a time.
const RESTORE_CHUNK: usize = 4096;

/// Recovers a backend's state and starts its writer.
async fn open_store<B: StoreBackend>(
    mut backend: B,
    usage: Arc<Usage>,
    config: &BrokerConfig,
) -> Result<(Store, std::thread::JoinHandle<()>, Recovered), StartError> {
    let recovered = backend.recover().await?;
    let (store, thread) = Store::spawn(
        backend,
        usage,
        STORE_QUEUE_DEPTH,
        config.store.max_bytes,
        config.store.when_full,
    )
    .map_err(StartError::Thread)?;
    Ok((store, thread, recovered))
}

impl Broker {
    /// Locks the data directory, recovers the store, opens the listeners and
    /// starts serving.
    pub async fn start(config: BrokerConfig) -> Result<Broker, StartError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|source| StartError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
        let started_at_ms = now_ms();
        let owner = format!(
            "broker '{}' pid {} started at {} ms since the epoch",
            config.name,
            std::process::id(),
            started_at_ms
        );
        let lock = DataDirLock::try_acquire(&config.data_dir, &owner)?;
        let usage = Arc::new(Usage::default());
        let (store, store_thread, recovered) = match config.store.kind {
            StoreKind::Journal => {
                let backend =
                    JournalStore::new(&config.data_dir, config.journal.clone(), usage.clone(), 0);
                open_store(backend, usage, &config).await?
            }
            StoreKind::Memory => {
                open_store(MemoryStore::with_usage(usage.clone()), usage, &config).await?
            }
        };
        let stomp = bind("STOMP", &config.stomp).await?;
        let http = bind("HTTP", &config.http).await?;
        let stomp_addr = stomp.local_addr().map_err(|source| StartError::Bind {
            what: "STOMP",
            addr: config.stomp.clone(),
            source,
        })?;
        let http_addr = http.local_addr().map_err(|source| StartError::Bind {
            what: "HTTP",
            addr: config.http.clone(),
            source,
        })?;

        let boot = format!("{started_at_ms:x}{:04x}", std::process::id() & 0xffff);
        let shared = Arc::new(Shared {
            id_prefix: format!("ID:{}-{boot}-", config.name).into(),
            boot,
            config,
            store,
            metrics: Metrics::default(),
            stop: CancellationToken::new(),
            started: Instant::now(),
            started_at_ms,
            seq: AtomicU64::new(recovered.max_seq),
            next_connection: AtomicU64::new(0),
            next_consumer: AtomicU64::new(0),
            destinations: Mutex::new(HashMap::new()),
            client_ids: Mutex::new(HashSet::new()),
            durables: Mutex::new(HashMap::new()),
        });
        let recovered_count = recovered.messages.len();
        restore(&shared, recovered).await;

        let accept_stop = CancellationToken::new();
        let sessions_stop = CancellationToken::new();
        let tracker = TaskTracker::new();
        tokio::spawn(crate::acceptor::accept_stomp(
            stomp,
            shared.clone(),
            accept_stop.clone(),
            sessions_stop.clone(),
            tracker.clone(),
        ));
        let http_task = tokio::spawn(crate::admin::serve(
            http,
            shared.clone(),
            stomp_addr,
            accept_stop.clone(),
        ));
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            name = %shared.config.name,
            stomp = %stomp_addr,
            http = %http_addr,
            data_dir = %shared.config.data_dir.display(),
            store = ?shared.config.store.kind,
            recovered = recovered_count,
            "halyard broker started"
        );
        Ok(Broker {
            shared,
            stomp_addr,
            http_addr,
            accept_stop,
            sessions_stop,
            tracker,
            store_thread,
            http_task,
            _lock: lock,
        })
    }

    /// Resolves if the broker can no longer keep its promises (the store
    /// failed to sync): it must stop, so that a slave can take over.
    pub async fn failed(&self) {
        self.shared.store.failed().await;
    }

    /// Where clients connect with STOMP.
    pub fn stomp_addr(&self) -> SocketAddr {
        self.stomp_addr
    }

    /// Where the admin HTTP API listens.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Stops accepting, lets connections finish in-flight work (up to
    /// `timeouts.shutdown-ms`), closes them with an ERROR frame, then stops
    /// destinations and closes the store.
    pub async fn shutdown(self) {
        tracing::info!("shutting down: no new connections; finishing in-flight work");
        self.accept_stop.cancel();
        self.sessions_stop.cancel();
        self.tracker.close();
        let grace = Duration::from_millis(self.shared.config.timeouts.shutdown_ms + 1_000);
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("some connections did not finish within the shutdown timeout");
        }
        let _ = self.http_task.await;
        self.shared.stop.cancel();
        self.shared.store.close().await;
        let _ = tokio::task::spawn_blocking(move || self.store_thread.join()).await;
        tracing::info!("halyard broker stopped");
    }
}

/// Hands what recovery found to the destinations, in sequence order, a
/// chunk at a time.
async fn restore(shared: &Arc<Shared>, recovered: Recovered) {
    let mut topics: HashMap<DurableName, crate::core::DestHandle> = HashMap::new();
    for s in recovered.subscriptions {
        let topic = match Destination::parse(&s.topic, "") {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(topic = %s.topic, error = %e, "cannot restore durable subscription");
                continue;
            }
        };
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
