//! Reclaiming destinations nobody uses (ActiveMQ's `gcInactiveDestinations`).
//!
//! A queue or topic with no messages, no consumers or subscriptions and no
//! traffic (no message sent to it, no subscription change) for
//! `destinations.gc-inactive-ms` removes itself from the
//! registry and stops; it is made again, empty, the next time a client names
//! it. While the registry is nine tenths full, an idle destination goes at
//! once, so a client cannot fill the table with names it touched once.
//!
//! The actor decides, and only under the registry's lock, with its own
//! channels empty: nobody can look the destination up in between. A session
//! that had looked it up before may still send on its old handle in the
//! instant before the channels close; whatever arrived is handed to the
//! destination made anew, and whatever is sent after the close fails with
//! `Gone`, on which callers look the destination up again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::registry::BrokerCore;
use super::{Control, DestinationStats, Publish};
use crate::model::Destination;

/// How long a destination has been idle.
#[derive(Debug, Default)]
pub(crate) struct Idleness {
    since: Option<Instant>,
}

impl Idleness {
    /// Records whether the destination is idle now, and whether it just
    /// had traffic (which restarts the clock: a topic published to without
    /// subscribers holds nothing, but is in use); true if it is idle.
    pub(crate) fn update(&mut self, idle: bool, traffic: bool) -> bool {
        if idle && !traffic {
            self.since.get_or_insert_with(Instant::now);
        } else if idle {
            self.since = Some(Instant::now());
        } else {
            self.since = None;
        }
        idle
    }

    /// Whether an idle destination should go now: idle long enough, or the
    /// registry is crowded.
    pub(crate) fn due(&self, shared: &BrokerCore) -> bool {
        let gc = shared.config.destinations.gc_inactive_ms;
        let Some(since) = self.since else {
            return false;
        };
        gc > 0 && (since.elapsed() >= Duration::from_millis(gc) || shared.destinations_crowded())
    }
}

impl Idleness {
    /// After a turn of an actor's loop: records whether it is `idle` and
    /// had `traffic`, and reclaims it if that is due; true if the actor
    /// must stop.
    pub(crate) async fn reclaim_if_due(
        &mut self,
        (idle, traffic): (bool, bool),
        shared: &Arc<BrokerCore>,
        (destination, id): (&Destination, u64),
        control: &mut mpsc::Receiver<Control>,
        publish: &mut mpsc::Receiver<Publish>,
    ) -> bool {
        self.update(idle, traffic)
            && self.due(shared)
            && try_reclaim(shared, destination, id, control, publish).await
    }
}

/// Removes the destination from the registry if it is still this actor's
/// and nothing waits in its channels; on success, closes the channels and
/// hands whatever slipped in to the destination made anew. Returns whether
/// the actor must stop.
async fn try_reclaim(
    shared: &Arc<BrokerCore>,
    destination: &Destination,
    id: u64,
    control: &mut mpsc::Receiver<Control>,
    publish: &mut mpsc::Receiver<Publish>,
) -> bool {
    if !shared.reclaim(destination, id, || control.is_empty() && publish.is_empty()) {
        return false;
    }
    control.close();
    publish.close();
    let mut late_publish = Vec::new();
    while let Ok(p) = publish.try_recv() {
        late_publish.push(p);
    }
    let mut late_control = Vec::new();
    while let Ok(c) = control.try_recv() {
        match c {
            Control::Stats { reply } => {
                let _ = reply.send(DestinationStats::new(destination, Default::default(), None));
            }
            // For consumers this destination does not have: nothing to do.
            c if c.needs_existing() => {}
            c => late_control.push(c),
        }
    }
    tracing::debug!(%destination, late = late_publish.len() + late_control.len(),
        "reclaimed an idle destination");
    if late_publish.is_empty() && late_control.is_empty() {
        return true;
    }
    let successor = match shared.destination(destination) {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(%destination, error = %e,
                "a reclaimed destination got traffic at the last moment and cannot be made again");
            return true;
        }
    };
    // Never wait on another destination from an actor.
    shared.tasks.spawn(async move {
        for c in late_control {
            let _ = successor.control_or_back(c).await;
        }
        for p in late_publish {
            let _ = successor.forward(p).await;
        }
    });
    true
}
