//! The broker's directory of open connections, for operators: who is
//! connected, over what, with which subscriptions and how much
//! unacknowledged, and a way to close one.
//!
//! A [`Connection`](super::Connection) is owned by its session's task and
//! no other task may reach into it, so each one publishes a small
//! [`Listing`] here instead: fixed facts set once, and a [`Shown`] view its
//! subscription table keeps current (short, uncontended locks never held
//! across an await). The listing leaves the directory when the connection
//! is dropped, whatever ends it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use serde::Serialize;

use crate::core::{Kick, lock};

/// What a protocol head says about itself when its client connects.
#[derive(Debug, Clone)]
pub(crate) struct Wire {
    /// `stomp`, `openwire`, `stomp+ws`, ... (with `+ssl` over TLS).
    pub(crate) protocol: String,
    /// The protocol version agreed (`1.2`, `12`).
    pub(crate) version: String,
}

impl Wire {
    pub(crate) fn new(protocol: impl Into<String>, version: impl Into<String>) -> Wire {
        Wire {
            protocol: protocol.into(),
            version: version.into(),
        }
    }
}

/// One subscription as an operator sees it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SubscriptionView {
    /// The client's id for it.
    pub id: String,
    /// What it takes from, as clients name it (several, comma-separated).
    pub destination: String,
    pub selector: Option<String>,
    /// The durable subscription's name, if it is one.
    pub durable: Option<String>,
    pub browser: bool,
}

/// What a connection's subscription table keeps up to date for the
/// directory.
#[derive(Debug, Default)]
pub(crate) struct Shown {
    subscriptions: Mutex<Vec<SubscriptionView>>,
    unacked: AtomicUsize,
}

impl Shown {
    pub(crate) fn subscribed(&self, view: SubscriptionView) {
        lock(&self.subscriptions).push(view);
    }

    pub(crate) fn unsubscribed(&self, id: &str, unacked: usize) {
        lock(&self.subscriptions).retain(|s| s.id != id);
        self.unacked.fetch_sub(unacked, Ordering::Relaxed);
    }

    pub(crate) fn cleared(&self) {
        lock(&self.subscriptions).clear();
        self.unacked.store(0, Ordering::Relaxed);
    }

    pub(crate) fn delivered(&self) {
        self.unacked.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn settled(&self, n: usize) {
        self.unacked.fetch_sub(n, Ordering::Relaxed);
    }
}

/// A connection in the directory.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) number: u64,
    pub(crate) id: Arc<str>,
    pub(crate) peer: SocketAddr,
    pub(crate) wire: Wire,
    pub(crate) user: Option<String>,
    pub(crate) client_id: Option<String>,
    pub(crate) connected_at_ms: u64,
    pub(crate) kick: Arc<Kick>,
    pub(crate) shown: Arc<Shown>,
    /// Its requests whose outcome is pending (sends not yet stored, ...).
    pub(crate) inflight: Arc<AtomicUsize>,
}

/// A connection as `GET /api/connections` shows it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ConnectionView {
    /// The number `DELETE /api/connections/{id}` takes.
    pub id: u64,
    /// The broker's name for it in logs.
    pub name: String,
    pub peer: String,
    pub protocol: String,
    pub version: String,
    pub user: Option<String>,
    pub client_id: Option<String>,
    pub connected_at_ms: u64,
    pub subscriptions: Vec<SubscriptionView>,
    /// Its requests whose outcome is pending: sends not yet stored,
    /// commits not yet made (the receipts it waits for).
    pub inflight: usize,
    /// Deliveries written to the client and not yet acknowledged.
    pub unacked: usize,
}

/// Every open client connection, and the producers that name a
/// destination (OpenWire's `ProducerInfo`; a STOMP SEND has no producer).
#[derive(Debug, Default)]
pub(crate) struct Directory {
    entries: Mutex<BTreeMap<u64, Arc<Entry>>>,
    producers: Mutex<std::collections::HashMap<String, usize>>,
}

impl Directory {
    /// Lists a connection until the returned guard is dropped.
    pub(crate) fn list(self: &Arc<Self>, entry: Entry) -> Listing {
        let number = entry.number;
        lock(&self.entries).insert(number, Arc::new(entry));
        Listing {
            directory: Arc::downgrade(self),
            number,
        }
    }

    /// Counts a producer of `destination` (as clients name it) until the
    /// returned guard is dropped.
    pub(crate) fn producer(self: &Arc<Self>, destination: String) -> ProducerListing {
        *lock(&self.producers)
            .entry(destination.clone())
            .or_default() += 1;
        ProducerListing {
            directory: Arc::downgrade(self),
            destination,
        }
    }

    /// Producers of `destination` (as clients name it).
    pub(crate) fn producers_of(&self, destination: &str) -> usize {
        lock(&self.producers).get(destination).copied().unwrap_or(0)
    }

    pub(crate) fn views(&self) -> Vec<ConnectionView> {
        let entries: Vec<Arc<Entry>> = lock(&self.entries).values().cloned().collect();
        entries.iter().map(|e| view(e)).collect()
    }

    /// Closes every connection subscribed to `destination` (as clients
    /// name it); returns how many.
    pub(crate) fn close_subscribers(&self, destination: &str, reason: String) -> usize {
        let entries: Vec<Arc<Entry>> = lock(&self.entries).values().cloned().collect();
        let mut closed = 0;
        for e in entries {
            let subscribed = lock(&e.shown.subscriptions)
                .iter()
                .any(|s| s.destination.split(',').any(|d| d == destination));
            if subscribed {
                e.kick.kick(reason.clone());
                closed += 1;
            }
        }
        closed
    }

    /// Closes connection `number` (its session ends with `reason`); false
    /// if there is none.
    pub(crate) fn close(&self, number: u64, reason: String) -> bool {
        let entry = lock(&self.entries).get(&number).cloned();
        match entry {
            // Closing already: it is as good as gone.
            Some(e) if e.kick.is_kicked() => false,
            Some(e) => {
                e.kick.kick(reason);
                true
            }
            None => false,
        }
    }
}

fn view(e: &Entry) -> ConnectionView {
    ConnectionView {
        id: e.number,
        name: e.id.to_string(),
        peer: e.peer.to_string(),
        protocol: e.wire.protocol.clone(),
        version: e.wire.version.clone(),
        user: e.user.clone(),
        client_id: e.client_id.clone(),
        connected_at_ms: e.connected_at_ms,
        subscriptions: lock(&e.shown.subscriptions).clone(),
        inflight: e.inflight.load(Ordering::Relaxed),
        unacked: e.shown.unacked.load(Ordering::Relaxed),
    }
}

/// Keeps a connection in the directory; dropping it takes it out.
#[derive(Debug)]
pub(crate) struct Listing {
    directory: Weak<Directory>,
    number: u64,
}

impl Drop for Listing {
    fn drop(&mut self) {
        if let Some(d) = self.directory.upgrade() {
            lock(&d.entries).remove(&self.number);
        }
    }
}

/// Counts a producer; dropping it stops counting.
#[derive(Debug)]
pub(crate) struct ProducerListing {
    directory: Weak<Directory>,
    destination: String,
}

impl Drop for ProducerListing {
    fn drop(&mut self) {
        if let Some(d) = self.directory.upgrade() {
            let mut producers = lock(&d.producers);
            if let Some(n) = producers.get_mut(&self.destination) {
                *n -= 1;
                if *n == 0 {
                    producers.remove(&self.destination);
                }
            }
        }
    }
}
