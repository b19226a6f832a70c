//! Broker-wide names the service hands out: connected client ids and the
//! topic of every durable subscription.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::core::{DurableName, Kick, lock};
use crate::model::Destination;

/// Who holds a client id: what closes its connection, and its user.
#[derive(Clone)]
pub(crate) struct Holder {
    pub(crate) kick: Arc<Kick>,
    pub(crate) user: Option<String>,
}

/// Client ids in use, each with who holds it: one connection at a time may
/// have a client id (as in ActiveMQ).
#[derive(Default)]
pub(crate) struct ClientIds {
    ids: Mutex<HashMap<String, Holder>>,
    /// Woken when a client id is released.
    released: tokio::sync::Notify,
}

impl ClientIds {
    /// Registers `id` for the connection `kick` closes, of `user`; if
    /// another connection has it, gives back who holds it.
    pub(crate) fn claim(
        &self,
        id: &str,
        kick: &Arc<Kick>,
        user: Option<&str>,
    ) -> Result<(), Holder> {
        let mut ids = lock(&self.ids);
        match ids.get(id) {
            Some(holder) => Err(holder.clone()),
            None => {
                let holder = Holder {
                    kick: kick.clone(),
                    user: user.map(str::to_owned),
                };
                ids.insert(id.to_owned(), holder);
                Ok(())
            }
        }
    }

    /// Claims a client id another connection holds: closes that connection
    /// (ActiveMQ's link stealing) and waits, up to `within`, for it to let
    /// the id go.
    pub(crate) async fn steal(
        &self,
        id: &str,
        kick: &Arc<Kick>,
        user: Option<&str>,
        within: Duration,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let released = self.released.notified();
            match self.claim(id, kick, user) {
                Ok(()) => return true,
                Err(holder) => holder.kick.kick(format!(
                    "client-id '{id}' was taken over by a new connection (clients.link-stealing)"
                )),
            }
            if tokio::time::timeout_at(deadline, released).await.is_err() {
                return false;
            }
        }
    }

    pub(crate) fn release(&self, id: &str) {
        lock(&self.ids).remove(id);
        self.released.notify_waiters();
    }
}

/// The topic of every durable subscription, so a subscription re-made on
/// another topic, or removed by name alone, can be found.
#[derive(Default)]
pub(crate) struct Durables(Mutex<HashMap<DurableName, Destination>>);

impl Durables {
    pub(crate) fn topic(&self, name: &DurableName) -> Option<Destination> {
        lock(&self.0).get(name).cloned()
    }

    /// Records (or forgets, with `None`) a durable subscription's topic.
    pub(crate) fn set(&self, name: &DurableName, topic: Option<Destination>) {
        let mut map = lock(&self.0);
        match topic {
            Some(t) => map.insert(name.clone(), t),
            None => map.remove(name),
        };
    }
}
