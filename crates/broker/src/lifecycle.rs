//! The broker's lifecycle: start (as master, or as a slave that waits),
//! taking over, fencing, and graceful shutdown.
//!
//! This is the top of the broker: it puts together the store (chosen in
//! `store/open.rs`), the HA driver (`ha/`), the broker core and service and
//! the protocol listeners (`acceptor/`), and owns nothing they could own.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::BrokerConfig;
use crate::core::{BrokerCore, lock};
use crate::ha::driver::{self, ElectionError, RoleState};
use crate::ha::{HaStatus, Role, Takeover};
use crate::model::now_ms;
use crate::node::{Master, Node};
use crate::service::Service;
use crate::store::StoreError;
use crate::store::open::{Election, Mastery, Site, SiteError};

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
        /// `STOMP` (a protocol) or `HTTP`.
        what: String,
        /// The configured address.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A `[[listeners]]` entry names a protocol the broker does not speak.
    #[error("unknown listener protocol '{protocol}' (this broker speaks: {known})")]
    UnknownProtocol {
        /// The protocol named.
        protocol: String,
        /// The protocols there are.
        known: String,
    },
    /// The store could not be opened or recovered.
    #[error("cannot open the message store: {0}")]
    Store(#[from] StoreError),
    /// `[security]` cannot be used (the users file is unreadable, a
    /// user's hash is not argon2id).
    #[error(transparent)]
    Security(#[from] crate::config::ConfigError),
    /// Mastery could not be taken or waited for.
    #[error(transparent)]
    Election(#[from] ElectionError),
    /// The data directory's lock could not be claimed.
    #[error(transparent)]
    Lock(#[from] crate::ha::LockError),
    /// The `[tls]` certificate could not be loaded.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

impl From<SiteError> for StartError {
    fn from(e: SiteError) -> StartError {
        match e {
            SiteError::DataDir { path, source } => StartError::DataDir { path, source },
            SiteError::Store(e) => StartError::Store(e),
        }
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

impl Broker {
    /// Opens the admin endpoint and tries to become master (the data
    /// directory's lock, or the database lease). If mastery is free the
    /// broker recovers the store and serves before this returns; if another
    /// broker holds it, this broker becomes a slave that waits in the
    /// background — client ports closed — and takes over the moment it is
    /// released (see [`Broker::role`]).
    pub async fn start(config: BrokerConfig) -> Result<Broker, StartError> {
        for l in config.listeners() {
            if crate::acceptor::head(&l.protocol).is_none() {
                return Err(StartError::UnknownProtocol {
                    protocol: l.protocol,
                    known: crate::acceptor::protocols().join(", "),
                });
            }
        }
        let security = Arc::new(crate::service::Security::new(&config.security)?);
        // Before anything is opened: a certificate that cannot be read is
        // a configuration mistake to report at once.
        let tls = if config.uses_tls() {
            Some(Arc::new(crate::tls::Tls::load(&config.tls)?))
        } else {
            None
        };
        let site = Site::of(config.store.kind, &config.data_dir, &config.store.url);
        let resources = crate::resources::plan(&config, &site);
        let http = bind("HTTP", &config.http).await?;
        let http_addr = http.local_addr().map_err(|source| StartError::Bind {
            what: "HTTP".into(),
            addr: config.http.clone(),
            source,
        })?;
        let started_at_ms = now_ms();
        let node = Arc::new(Node {
            config,
            site,
            resources,
            security,
            started_at_ms,
            started: Instant::now(),
            role: RoleState::new(started_at_ms),
            master: tokio::sync::watch::channel(None).0,
            tls,
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
        // The admin listener serves (`/healthz`, a slave's status) while
        // the site is prepared: a broker started before its database waits
        // for it there, and this future may be dropped meanwhile (ctrl-c).
        let admin_guard = broker.admin_stop.clone().drop_guard();
        let wait = node.config.store.start_timeout_ms;
        node.site
            .prepare((wait > 0).then(|| Duration::from_millis(wait)))
            .await?;
        let ha = &node.config.ha;
        let poll = (ha.lock_poll_ms > 0).then(|| Duration::from_millis(ha.lock_poll_ms));
        let lease = Duration::from_millis(ha.lease_ms);
        let election = node.site.election(poll, lease, node.owner());
        let elected = match driver::try_elect(&election).await {
            Ok(Some(mastery)) => promote(&node, mastery, Duration::ZERO, None).await,
            Ok(None) => {
                broker.waiter = Some(wait_to_take_over(&node, election, http_addr));
                Ok(())
            }
            Err(e) => Err(e.into()),
        };
        elected?;
        admin_guard.disarm();
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
        self.node.role.failed().await
    }

    /// Where clients connect with STOMP, once master.
    pub fn stomp_addr(&self) -> Option<SocketAddr> {
        self.node.master().and_then(|m| m.stomp_addr())
    }

    /// Where the admin HTTP API listens.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Where the first listener for `protocol` (`stomp`, `stomp+ssl`)
    /// listens, once master.
    pub fn listener_addr(&self, protocol: &str) -> Option<SocketAddr> {
        let master = self.node.master()?;
        master
            .listeners()
            .iter()
            .find(|(p, _)| *p == protocol)
            .map(|(_, a)| *a)
    }

    /// Re-reads the `[tls]` certificate, key and client CA files (what
    /// SIGHUP does). Connections made from now on get the new certificate;
    /// open ones are untouched. On error the old certificate stays in use.
    /// Without TLS configured this does nothing.
    pub fn reload_tls(&self) -> Result<(), crate::tls::TlsError> {
        match &self.node.tls {
            Some(tls) => tls.reload(),
            None => Ok(()),
        }
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
            let core = &m.service.core;
            core.stop.cancel();
            // Work connections left behind (pipelines finishing, dead
            // letters being published) ends before the store closes.
            core.tasks.close();
            if tokio::time::timeout(grace, core.tasks.wait())
                .await
                .is_err()
            {
                tracing::warn!("some background work did not finish within the shutdown timeout");
            }
            core.store.close().await;
            let thread = lock(&m.store_thread).take();
            if let Some(t) = thread {
                let _ = tokio::task::spawn_blocking(move || t.join()).await;
            }
            // Release mastery last: the store is closed and synced.
            let mastery = lock(&m.mastery).take();
            if let Some(mastery) = mastery {
                mastery.release().await;
            }
        }
        if self.node.status().role != Role::Fenced {
            self.node.role.set_role(Role::Stopped);
        }
        self.admin_stop.cancel();
        let _ = self.http_task.await;
        tracing::info!("halyard broker stopped");
    }
}

/// A slave: waits in the background for mastery, then takes over.
fn wait_to_take_over(node: &Arc<Node>, election: Election, http: SocketAddr) -> JoinHandle<()> {
    let owner = match &election {
        Election::Lock { dir, .. } => crate::ha::read_owner(dir),
        Election::Lease(_) => None,
    };
    tracing::info!(
        name = %node.config.name,
        %http,
        store = %node.site.describe(),
        holder = %owner.as_ref().map_or_else(|| "unknown".to_owned(), ToString::to_string),
        "slave: another broker is master; waiting to take over (client ports stay closed)"
    );
    node.role.saw_owner(owner);
    let standby = standby(node);
    let node = node.clone();
    tokio::spawn(async move {
        let _stop = standby.clone().map(crate::store::journal::StopOnDrop);
        let since = Instant::now();
        let refresh = Duration::from_millis(node.config.ha.lock_keepalive_ms.max(10));
        let mut retry = Duration::from_millis(250);
        let result = loop {
            let result = match driver::wait_elected(&election, &node.role, refresh).await {
                Ok(mastery) => promote(&node, mastery, since.elapsed(), standby.clone()).await,
                Err(e) => Err(e.into()),
            };
            match result {
                // The database failed us mid-takeover (say it is restarting):
                // nothing was served yet and the lease went with the dropped
                // store, so wait for it again rather than exit.
                Err(StartError::Store(e)) if matches!(election, Election::Lease(_)) => {
                    tracing::error!(error = %e, retry_in_ms = retry.as_millis() as u64,
                        "taking over failed: could not open the store; waiting for the lease again");
                    node.role.set_role(Role::Slave);
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(Duration::from_secs(5));
                }
                other => break other,
            }
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "cannot take over as master");
            node.role.fail(format!("cannot take over as master: {e}"));
        }
    })
}

/// A slave of a journal on a shared directory decodes the master's newest
/// index checkpoint while it waits (`journal.standby-preload`).
fn standby(node: &Node) -> Option<Arc<crate::store::journal::Standby>> {
    let config = &node.config;
    let crate::store::open::Site::Directory { dir, journal: true } = &node.site else {
        return None;
    };
    if !config.journal.standby_preload || config.journal.checkpoint_bytes == 0 {
        return None;
    }
    match crate::store::journal::Standby::watch(dir, config.duplicate_bounds()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot start decoding the journal's checkpoint ahead of a takeover");
            None
        }
    }
}

/// Takes over as master: claims a new epoch, recovers the store, opens the
/// client listeners and starts watching mastery.
async fn promote(
    node: &Arc<Node>,
    mut mastery: Mastery,
    waited: Duration,
    standby: Option<Arc<crate::store::journal::Standby>>,
) -> Result<(), StartError> {
    let took_lock = Instant::now();
    node.role.set_role(Role::Recovering);
    let config = &node.config;
    let (epoch, watch) = node.site.claim(
        &mut mastery,
        node.owner(),
        driver::unverified_budget(config),
    )?;
    if !waited.is_zero() {
        tracing::info!(
            epoch,
            waited_ms = waited.as_millis() as u64,
            "the lock is ours: taking over as master"
        );
    }
    let recovery = Instant::now();
    let mut settings = config.store_settings();
    settings.standby = standby;
    let opened = node.site.open(epoch, &watch, &settings).await?;
    let recovery_ms = recovery.elapsed().as_millis() as u64;
    let started_at_ms = now_ms();
    let boot = format!("{started_at_ms:x}{:04x}", std::process::id() & 0xffff);
    let core = Arc::new(BrokerCore::new(
        config.clone(),
        node.resources.clone(),
        opened.store,
        format!("ID:{}-{boot}-", config.name).into(),
        opened.recovered.max_seq,
    ));
    crate::trim::start(&core);
    let service = Arc::new(Service::new(core, boot, node.security.clone()));
    let recovered_count = opened.recovered.message_count();
    service.restore(opened.recovered).await;
    let master = Arc::new(Master {
        service: service.clone(),
        listeners: OnceLock::new(),
        accept_stop: CancellationToken::new(),
        sessions_stop: CancellationToken::new(),
        tracker: TaskTracker::new(),
        store_thread: Mutex::new(Some(opened.writer)),
        mastery: Mutex::new(Some(mastery)),
    });
    // Published before the ports open: whoever can connect can also see the
    // destinations.
    node.master.send_replace(Some(master.clone()));
    let mut open = Vec::new();
    for l in config.listeners() {
        let Some((head, over_tls)) = crate::acceptor::head(&l.protocol) else {
            continue;
        };
        let name = if over_tls { head.tls_name } else { head.name };
        let tls = if over_tls {
            // Loaded at start whenever a listener is `+ssl`.
            let Some(tls) = node.tls.clone() else {
                return Err(crate::tls::TlsError::Missing {
                    key: "tls.cert-file",
                }
                .into());
            };
            Some(tls)
        } else {
            None
        };
        let listener = bind(name, &l.address).await?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            what: name.to_uppercase(),
            addr: l.address.clone(),
            source,
        })?;
        tokio::spawn(crate::acceptor::accept(
            listener,
            head,
            tls,
            service.clone(),
            master.accept_stop.clone(),
            master.sessions_stop.clone(),
            master.tracker.clone(),
        ));
        open.push((name, addr));
    }
    let shown = open
        .iter()
        .map(|(p, a)| format!("{p} {a}"))
        .collect::<Vec<_>>()
        .join(", ");
    let stomp = open
        .iter()
        .find(|(p, _)| *p == "stomp")
        .map(|(_, a)| a.to_string());
    let _ = master.listeners.set(open);
    spawn_watch(node, &master, watch);
    let takeover = Takeover {
        at_ms: now_ms().saturating_sub(took_lock.elapsed().as_millis() as u64),
        waited_ms: waited.as_millis() as u64,
        lock_to_serving_ms: took_lock.elapsed().as_millis() as u64,
        recovery_ms,
    };
    node.role.mastered(epoch, takeover);
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        name = %config.name,
        epoch,
        stomp = %stomp.unwrap_or_default(),
        listeners = %shown,
        http = %config.http,
        store = ?config.store.kind,
        data = %node.site.describe(),
        recovered = recovered_count,
        waited_ms = takeover.waited_ms,
        lock_to_serving_ms = takeover.lock_to_serving_ms,
        recovery_ms,
        "halyard broker started: master, serving clients"
    );
    Ok(())
}

/// Watches mastery and the store while master: losing either stops the
/// broker.
fn spawn_watch(node: &Arc<Node>, master: &Arc<Master>, watch: crate::store::open::Watch) {
    let every = Duration::from_millis(node.config.ha.lock_keepalive_ms);
    let (n, m) = (node.clone(), master.clone());
    tokio::spawn(async move {
        if let Some(why) = driver::watch(watch, every, &m.service.core.stop).await {
            fence(&n, &m, &why);
        }
    });
    let (n, m) = (node.clone(), master.clone());
    tokio::spawn(async move {
        let store = &m.service.core.store;
        store.failed().await;
        if n.status().role != Role::Master {
            return;
        }
        match store.failure() {
            Some(StoreError::Fenced(why)) => fence(&n, &m, &why),
            other => {
                let why = other.map_or_else(|| "unknown".to_owned(), |e| e.to_string());
                tracing::error!(error = %why, "the message store failed: stopping so that a slave can take over");
                n.role.fail(format!("the message store failed: {why}"));
            }
        }
    });
}

/// This broker is no longer master: stop at once, write nothing.
fn fence(node: &Node, master: &Master, why: &str) {
    if node.status().role == Role::Fenced {
        return;
    }
    node.role.set_role(Role::Fenced);
    tracing::error!(
        reason = %why,
        "FENCED: this broker is no longer master; closing every client connection and writing nothing more"
    );
    let core = &master.service.core;
    core.store.fence();
    master.accept_stop.cancel();
    master.sessions_stop.cancel();
    core.stop.cancel();
    node.role.fail(format!("fenced: {why}"));
}

async fn bind(what: &str, addr: &str) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind {
            what: what.to_uppercase(),
            addr: addr.to_owned(),
            source,
        })
}
