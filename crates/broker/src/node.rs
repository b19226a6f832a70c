//! What a broker is, master or not ([`Node`]), and what it runs while
//! master ([`Master`]): read by the admin API, written by the lifecycle.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::BrokerConfig;
use crate::core::lock;
use crate::ha::driver::RoleState;
use crate::ha::{HaStatus, LockOwner, host_name};
use crate::resources::Resources;
use crate::service::Service;
use crate::store::open::{Mastery, Site};

/// What a broker is, master or not: its configuration, HA status and admin
/// endpoint.
pub(crate) struct Node {
    pub(crate) config: BrokerConfig,
    pub(crate) site: Site,
    pub(crate) resources: Resources,
    /// Users and rights: the same on master and slave (the admin API
    /// asks them too).
    pub(crate) security: Arc<crate::service::Security>,
    pub(crate) started_at_ms: u64,
    pub(crate) started: Instant,
    pub(crate) role: RoleState,
    /// Set once the broker is master.
    pub(crate) master: tokio::sync::watch::Sender<Option<Arc<Master>>>,
    /// The `[tls]` certificate, when anything is served over TLS; shared by
    /// the `+ssl` listeners and the HTTPS admin API, reloaded on SIGHUP.
    pub(crate) tls: Option<Arc<crate::tls::Tls>>,
}

/// What a master runs.
pub(crate) struct Master {
    pub(crate) service: Arc<Service>,
    /// Each client listener's protocol and address, once open.
    pub(crate) listeners: OnceLock<Vec<(&'static str, SocketAddr)>>,
    pub(crate) accept_stop: CancellationToken,
    pub(crate) sessions_stop: CancellationToken,
    pub(crate) tracker: TaskTracker,
    pub(crate) store_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    pub(crate) mastery: Mutex<Option<Mastery>>,
}

impl Master {
    /// The first STOMP listen address, once open.
    pub(crate) fn stomp_addr(&self) -> Option<SocketAddr> {
        self.listeners
            .get()?
            .iter()
            .find(|(p, _)| *p == "stomp")
            .map(|(_, a)| *a)
    }

    /// Every client listener's protocol and address, once open.
    pub(crate) fn listeners(&self) -> &[(&'static str, SocketAddr)] {
        self.listeners.get().map_or(&[], Vec::as_slice)
    }

    /// The database lease's counters, if this master holds one.
    pub(crate) fn lease_stats(&self) -> Option<Arc<crate::ha::LeaseStats>> {
        match &*lock(&self.mastery) {
            Some(Mastery::Lease(lease)) => Some(lease.stats()),
            _ => None,
        }
    }
}

impl Node {
    pub(crate) fn status(&self) -> HaStatus {
        self.role.status()
    }

    pub(crate) fn master(&self) -> Option<Arc<Master>> {
        self.master.borrow().clone()
    }

    pub(crate) fn owner(&self) -> LockOwner {
        LockOwner {
            name: self.config.name.clone(),
            host: host_name(),
            pid: std::process::id(),
            started_at_ms: self.started_at_ms,
            epoch: 0,
        }
    }
}
