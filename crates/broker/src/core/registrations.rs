//! Where one subscription is registered: a consumer at each destination it
//! takes messages from.
//!
//! A subscription to one destination has one registration. A subscription
//! to a list of destinations (`/queue/a,/queue/b`) has one per destination,
//! and a subscription to a wildcard over queues (`/queue/orders.>`) gains
//! one whenever a matching queue is made — by the core, under its registry
//! lock, which is why the list is shared. Deliveries name the registration
//! they came through ([`super::Delivery::consumer`]); acknowledgements go
//! back to its destination.

use std::sync::{Arc, Mutex};

use super::{ConsumerId, DestHandle, lock};

/// A subscription's registrations (shared between its connection and, for
/// a wildcard over queues, the core).
#[derive(Debug, Clone, Default)]
pub(crate) struct Registrations(Arc<Mutex<Vec<(ConsumerId, DestHandle)>>>);

impl Registrations {
    /// Notes that `consumer` is registered at `handle`'s destination.
    pub(crate) fn add(&self, consumer: ConsumerId, handle: DestHandle) {
        lock(&self.0).push((consumer, handle));
    }

    /// The destination `consumer` is registered at.
    pub(crate) fn handle_of(&self, consumer: ConsumerId) -> Option<DestHandle> {
        lock(&self.0)
            .iter()
            .find(|(c, _)| *c == consumer)
            .map(|(_, h)| h.clone())
    }

    /// The destinations it is registered at.
    pub(crate) fn handles(&self) -> Vec<DestHandle> {
        lock(&self.0).iter().map(|(_, h)| h.clone()).collect()
    }

    /// Every registration (a copy).
    pub(crate) fn all(&self) -> Vec<(ConsumerId, DestHandle)> {
        lock(&self.0).clone()
    }

    /// Every registration, taken out (the subscription is ending).
    pub(crate) fn take_all(&self) -> Vec<(ConsumerId, DestHandle)> {
        std::mem::take(&mut *lock(&self.0))
    }
}
