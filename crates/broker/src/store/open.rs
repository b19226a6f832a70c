//! The one place the configured store kind is looked at: where the store
//! lives, how the brokers sharing it elect a master, and how it is opened.
//!
//! Each backend brings its own election. Brokers sharing a data directory
//! (journal, or the memory store, which keeps nothing but still elects) are
//! elected by the OS lock on `data/lock` ([`DataDirLock`]); brokers sharing a
//! PostgreSQL database by the lease row beside the tables ([`Lease`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::dirlock::{DataDirLock, LockError, LockOwner};
use super::journal::JournalConfig;
use super::journal::{Fence, JournalStore};
use super::postgres::{self, Lease, LeaseConfig, LostSignal, PostgresConfig, PostgresStore};
use super::{
    DuplicateBounds, MemoryStore, Recovered, Store, StoreBackend, StoreError, Usage, WhenFull,
    WriterConfig,
};
use serde::{Deserialize, Serialize};

/// Batches waiting for the store writer before submitters must wait.
const STORE_QUEUE_DEPTH: usize = 8192;

/// The store implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StoreKind {
    /// Append-only journal files in `<data-dir>/journal` (the default).
    Journal,
    /// Keeps persistent messages in memory only: they do not survive a
    /// restart.
    Memory,
    /// Tables in a PostgreSQL database (`store.url`), shared by a
    /// master/slave group; the database's lease elects the master.
    Postgres,
}

/// A store name that is none of [`StoreKind`]'s (`--store`,
/// `HALYARD_STORE`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown store '{given}': expected journal, memory or postgres")]
pub struct UnknownStoreKind {
    /// The name as given.
    pub given: String,
}

impl std::str::FromStr for StoreKind {
    type Err = UnknownStoreKind;

    fn from_str(s: &str) -> Result<StoreKind, UnknownStoreKind> {
        match s {
            "journal" => Ok(StoreKind::Journal),
            "memory" => Ok(StoreKind::Memory),
            "postgres" | "postgresql" => Ok(StoreKind::Postgres),
            _ => Err(UnknownStoreKind {
                given: s.to_owned(),
            }),
        }
    }
}

impl StoreKind {
    /// Whether the store lives in a database (and so needs `store.url`).
    pub fn uses_database(self) -> bool {
        self == StoreKind::Postgres
    }
}

/// What opening a store needs from the broker's configuration.
#[derive(Debug, Clone)]
pub(crate) struct StoreSettings {
    pub(crate) journal: JournalConfig,
    /// `store.max-bytes`.
    pub(crate) max_bytes: u64,
    pub(crate) when_full: WhenFull,
    pub(crate) duplicates: DuplicateBounds,
    /// PostgreSQL reader connections.
    pub(crate) readers: usize,
    /// `store.writer-spin-us`.
    pub(crate) writer_spin: Duration,
    /// `store.groups-in-flight`.
    pub(crate) groups_in_flight: usize,
    /// `store.group-wait-us`.
    pub(crate) group_wait: Duration,
    /// The checkpoint a slave decoded while it waited (journal).
    pub(crate) standby: Option<Arc<crate::store::journal::Standby>>,
}

/// Where the store lives.
#[derive(Debug, Clone)]
pub(crate) enum Site {
    /// A data directory on a (possibly shared) file system.
    Directory { dir: PathBuf, journal: bool },
    /// A (shared) PostgreSQL database.
    Database { url: String },
}

/// How a broker becomes master of a site.
pub(crate) enum Election {
    /// Take the data directory's lock; a slave polls for it every `poll`
    /// (`None`: blocks in the kernel until it is released).
    Lock {
        dir: PathBuf,
        poll: Option<Duration>,
    },
    /// Take the database lease.
    Lease(LeaseConfig),
}

/// What makes this broker master: the data directory's lock, or the
/// database lease. Held for as long as it serves.
pub(crate) enum Mastery {
    Lock(DataDirLock),
    Lease(Lease),
}

/// How a master learns it is no longer master.
pub(crate) enum Watch {
    /// Check the lock file every `ha.lock-keepalive-ms` (the journal also
    /// checks it before confirming each group of writes).
    File(Fence),
    /// The lease's renewal task says so.
    Lease(LostSignal),
}

/// A recovered store with its writer running.
pub(crate) struct Opened {
    pub(crate) store: Store,
    pub(crate) writer: std::thread::JoinHandle<()>,
    pub(crate) recovered: Recovered,
}

/// Why a site could not be made ready.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SiteError {
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Site {
    /// Where a store of `kind` lives: `data_dir`, or the database `url`.
    pub(crate) fn of(kind: StoreKind, data_dir: &Path, url: &str) -> Site {
        match kind {
            StoreKind::Journal => Site::Directory {
                dir: data_dir.to_owned(),
                journal: true,
            },
            StoreKind::Memory => Site::Directory {
                dir: data_dir.to_owned(),
                journal: false,
            },
            StoreKind::Postgres => Site::Database {
                url: url.to_owned(),
            },
        }
    }

    /// Makes the site ready for an election: creates the data directory,
    /// or brings the database schema (where the lease row lives) up to
    /// date, waiting for the database while it cannot be reached (for at
    /// most `wait`, if given).
    pub(crate) async fn prepare(&self, wait: Option<Duration>) -> Result<(), SiteError> {
        match self {
            Site::Directory { dir, .. } => {
                std::fs::create_dir_all(dir).map_err(|source| SiteError::DataDir {
                    path: dir.clone(),
                    source,
                })
            }
            Site::Database { url } => Ok(PostgresStore::migrate_when_up(url, wait).await?),
        }
    }

    /// How brokers sharing this site elect their master: a slave polls
    /// the lock every `poll` (`None`: waits in the kernel); a lease lasts
    /// `lease`.
    pub(crate) fn election(
        &self,
        poll: Option<Duration>,
        lease: Duration,
        owner: LockOwner,
    ) -> Election {
        match self {
            Site::Directory { dir, .. } => Election::Lock {
                dir: dir.clone(),
                poll,
            },
            Site::Database { url } => Election::Lease(LeaseConfig {
                url: url.clone(),
                lease,
                owner,
            }),
        }
    }

    /// The data directory, for a site that is one.
    pub(crate) fn data_dir(&self) -> Option<&Path> {
        match self {
            Site::Directory { dir, .. } => Some(dir),
            Site::Database { .. } => None,
        }
    }

    /// The database URL without its password, for a site that is one.
    pub(crate) fn database(&self) -> Option<String> {
        match self {
            Site::Directory { .. } => None,
            Site::Database { url } => Some(postgres::redact(url)),
        }
    }

    /// Where the store is, for logs: a path, or a URL without its password.
    pub(crate) fn describe(&self) -> String {
        match self {
            Site::Directory { dir, .. } => dir.display().to_string(),
            Site::Database { url } => {
                let tls = if postgres::uses_tls(url) {
                    " (TLS)"
                } else {
                    ""
                };
                format!("{}{tls}", postgres::redact(url))
            }
        }
    }

    /// Descriptors the store may hold open: the journal keeps each segment
    /// open; the postgres store holds its connections.
    pub(crate) fn descriptors(&self, settings: &StoreSettings, fd_limit: u64) -> u64 {
        match self {
            Site::Directory { journal: true, .. } => {
                let segments = settings
                    .max_bytes
                    .div_ceil(settings.journal.segment_bytes.max(1))
                    + 2;
                segments.min(fd_limit / 4)
            }
            Site::Directory { journal: false, .. } => 0,
            // Readers, the writer, the lease, and a slave's two waiting
            // connections.
            Site::Database { .. } => settings.readers as u64 + 4,
        }
    }

    /// Claims a new epoch with `mastery` and says how to watch it.
    pub(crate) fn claim(
        &self,
        mastery: &mut Mastery,
        owner: LockOwner,
        unverified_budget: Duration,
    ) -> Result<(u64, Watch), LockError> {
        match mastery {
            Mastery::Lock(lock) => {
                let max = self.data_dir().map_or(0, JournalStore::max_epoch);
                let epoch = lock.claim(owner, max)?;
                let fence = Fence {
                    check: lock.checker()?,
                    budget: unverified_budget,
                };
                Ok((epoch, Watch::File(fence)))
            }
            Mastery::Lease(lease) => Ok((lease.epoch(), Watch::Lease(lease.lost_signal()))),
        }
    }

    /// Recovers the store as master `epoch` and starts its writer.
    pub(crate) async fn open(
        &self,
        epoch: u64,
        watch: &Watch,
        settings: &StoreSettings,
    ) -> Result<Opened, StoreError> {
        let usage = Arc::new(Usage::default());
        match (self, watch) {
            (Site::Database { url }, Watch::Lease(lost)) => {
                let backend = PostgresStore::connect(
                    PostgresConfig {
                        url: url.clone(),
                        readers: settings.readers,
                        duplicates: settings.duplicates,
                    },
                    epoch,
                    lost.token(),
                    usage.clone(),
                )
                .await?
                .hand_over_later();
                start(backend, usage, settings).await
            }
            (Site::Directory { journal: false, .. }, _) => {
                start(MemoryStore::with_usage(usage.clone()), usage, settings).await
            }
            (Site::Directory { dir, journal: true }, Watch::File(fence)) => {
                let backend = JournalStore::with_fence(
                    dir,
                    settings.journal.clone(),
                    usage.clone(),
                    epoch,
                    Some(fence.clone()),
                )
                .duplicate_bounds(settings.duplicates)
                .hand_over_later()
                .with_standby(settings.standby.clone());
                start(backend, usage, settings).await
            }
            _ => Err(StoreError::Failed(
                "the store and the way its master was elected do not match".into(),
            )),
        }
    }
}

impl Mastery {
    /// Gives up mastery: the lease is released at once (a slave need not
    /// wait for it to expire); the lock goes when dropped.
    pub(crate) async fn release(self) {
        if let Mastery::Lease(lease) = self {
            lease.release().await;
        }
    }
}

/// Recovers a backend's state and starts its writer.
async fn start<B: StoreBackend>(
    mut backend: B,
    usage: Arc<Usage>,
    settings: &StoreSettings,
) -> Result<Opened, StoreError> {
    let mut recovered = backend.recover().await?;
    let writer = WriterConfig {
        queue_depth: STORE_QUEUE_DEPTH,
        limit: settings.max_bytes,
        when_full: settings.when_full,
        duplicates: settings.duplicates,
        spin: settings.writer_spin,
        in_flight: settings.groups_in_flight,
        group_wait: settings.group_wait,
    };
    let duplicate_ids = std::mem::take(&mut recovered.duplicate_ids);
    let (store, writer) = Store::spawn(backend, usage, writer, duplicate_ids)
        .map_err(|e| StoreError::Failed(format!("cannot start the store writer: {e}").into()))?;
    Ok(Opened {
        store,
        writer,
        recovered,
    })
}
