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
use crate::core::{DestHandle, Destination, DestinationKind, DestinationStats, now_ms};
use crate::metrics::Metrics;
use crate::store::{MemoryStore, Store, StoreBackend, StoreError};

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
    store_task: JoinHandle<()>,
    http_task: JoinHandle<()>,
}

/// Batches waiting for the store writer before submitters must wait.
const STORE_QUEUE_DEPTH: usize = 8192;

impl Broker {
    /// Recovers the store, opens the listeners and starts serving.
    pub async fn start(config: BrokerConfig) -> Result<Broker, StartError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|source| StartError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
        let (store, store_task, recovered) = match config.store {
            StoreKind::Memory => {
                let mut backend = MemoryStore::new();
                let recovered = backend.recover().await?;
                let (store, task) = Store::spawn(backend, STORE_QUEUE_DEPTH);
                (store, task, recovered)
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

        let started_at_ms = now_ms();
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
        });

        let recovered_count = recovered.messages.len();
        for (dest, message) in recovered.messages {
            match shared.destination(&dest) {
                Ok(h) => {
                    let _ = h.publish(message, false).await;
                }
                Err(e) => tracing::error!(error = %e, "cannot restore recovered message"),
            }
        }

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
            store = ?shared.config.store,
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
            store_task,
            http_task,
        })
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
        let _ = self.store_task.await;
        tracing::info!("halyard broker stopped");
    }
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
