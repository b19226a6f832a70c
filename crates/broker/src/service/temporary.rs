//! Temporary destinations: created and deleted explicitly (JMS's
//! `createTemporaryQueue()` / `TemporaryQueue.delete()`; STOMP's come into
//! being on first use), and announced as they come and go, which is how a
//! JMS client learns that a temporary queue it was told to reply to exists
//! (ActiveMQ's temp-destination advisories).

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::broadcast;

use super::connection::Connection;
use super::{Right, ServiceError};
use crate::model::Destination;

/// Events a lagging watcher may miss before it must look again.
const EVENTS: usize = 1024;

/// A temporary destination came or went.
#[derive(Debug, Clone)]
pub(crate) struct TempEvent {
    pub(crate) dest: Destination,
    pub(crate) added: bool,
    /// Its name is the client's own (OpenWire's `CONNECTION-ID:N`), not
    /// a secret of the broker's (STOMP's): it may be announced to all.
    pub(crate) public: bool,
}

/// The broker's live temporary destinations, and their comings and goings.
pub(crate) struct Temporaries {
    /// Held only to copy or change, never across an await.
    live: Mutex<HashMap<Destination, bool>>,
    events: broadcast::Sender<TempEvent>,
}

impl Default for Temporaries {
    fn default() -> Temporaries {
        Temporaries {
            live: Mutex::default(),
            events: broadcast::channel(EVENTS).0,
        }
    }
}

impl Temporaries {
    fn changed(&self, dest: &Destination, added: bool, public: bool) {
        {
            let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
            let new = if added {
                live.insert(dest.clone(), public).is_none()
            } else {
                live.remove(dest).is_some()
            };
            if !new {
                return;
            }
        }
        // Nobody watching is fine.
        let _ = self.events.send(TempEvent {
            dest: dest.clone(),
            added,
            public,
        });
    }

    /// The live temporary destinations whose names are public, and what
    /// changes after: the receiver is made first, so nothing falls between
    /// the two.
    pub(crate) fn watch(&self) -> (Vec<Destination>, broadcast::Receiver<TempEvent>) {
        let rx = self.events.subscribe();
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        let public = live
            .iter()
            .filter(|(_, public)| **public)
            .map(|(d, _)| d.clone())
            .collect();
        (public, rx)
    }

    /// Whether `dest` is a live temporary destination.
    pub(crate) fn is_live(&self, dest: &Destination) -> bool {
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(dest)
    }
}

impl Connection {
    /// Creates temporary destination `dest`, which must be this
    /// connection's own (named in its scope). It lives until the
    /// connection closes or deletes it. Creating is administering it, as
    /// in ActiveMQ (`[security.temporary]` grants it).
    pub(crate) fn create_temporary(&mut self, dest: &Destination) -> Result<(), ServiceError> {
        if !dest.is_temp_of(&self.temp_scope) {
            return Err(ServiceError::OthersTemporary(dest.clone()));
        }
        self.authorize(Right::Admin, dest)?;
        self.destination(dest).map(|_| ())
    }

    /// Deletes this connection's temporary destination `dest`, dropping what
    /// it holds. Another connection's is refused; an unknown one of ours is
    /// nothing to do.
    pub(crate) fn delete_temporary(&mut self, dest: &Destination) -> Result<(), ServiceError> {
        if !dest.is_temp_of(&self.temp_scope) {
            return Err(ServiceError::OthersTemporary(dest.clone()));
        }
        if let Some(i) = self.temps.iter().position(|d| d == dest) {
            self.temps.swap_remove(i);
            self.service.core.delete_destination(dest);
            self.temporary_deleted(dest);
        }
        Ok(())
    }

    /// A temporary destination of this connection's came into being.
    pub(super) fn temporary_created(&self, dest: &Destination) {
        self.service
            .temporaries
            .changed(dest, true, self.public_temp_names);
    }

    /// A temporary destination of this connection's is gone.
    pub(super) fn temporary_deleted(&self, dest: &Destination) {
        self.service
            .temporaries
            .changed(dest, false, self.public_temp_names);
    }
}
