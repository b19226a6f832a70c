//! Handing messages to destinations, and the waits on the way: flow
//! control (a full destination or store, the memory budget) with its
//! timeout.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::error::ServiceError;
use crate::core::{BrokerCore, DestHandle, Envelope};
use crate::metrics::Metrics;
use crate::model::Message;
use crate::store::DUPLICATE_ID_HEADER;

/// Counts a batch waiting for room in the store while it lives.
pub(super) struct Waiting(Arc<AtomicUsize>);

impl Waiting {
    pub(super) fn start(count: &Arc<AtomicUsize>) -> Waiting {
        count.fetch_add(1, Ordering::AcqRel);
        Waiting(count.clone())
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Waits for `wait` — flow control: a full destination, a full store, the
/// memory budget — for at most `limits.flow-control-timeout-ms` (0: as long
/// as it takes); then the request fails.
pub(super) async fn flow_control<T>(
    core: &BrokerCore,
    what: &'static str,
    wait: impl Future<Output = T>,
) -> Result<T, ServiceError> {
    let ms = core.config.limits.flow_control_timeout_ms;
    if ms == 0 {
        return Ok(wait.await);
    }
    tokio::time::timeout(std::time::Duration::from_millis(ms), wait)
        .await
        .map_err(|_| {
            Metrics::inc(&core.memory.timeouts);
            ServiceError::FlowControlTimeout { what, ms }
        })
}

/// Waits until the broker's memory budget has room beside `own` bytes (the
/// waiting message's charge), counted as a waiting producer meanwhile.
pub(super) async fn memory_room(core: &BrokerCore, own: u64) {
    if core.memory.used().saturating_sub(own) < core.memory.limit() {
        return;
    }
    struct Counted<'a>(&'a std::sync::atomic::AtomicU64);
    impl Drop for Counted<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::Relaxed);
        }
    }
    core.memory.waiting.fetch_add(1, Ordering::Relaxed);
    let _counted = Counted(&core.memory.waiting);
    core.memory.room_beside(own).await;
}

/// A message's duplicate-detection id, checked by the store's writer.
pub(super) fn duplicate_id(message: &Message) -> Option<Arc<str>> {
    message.string_property(DUPLICATE_ID_HEADER).map(Arc::from)
}

/// Hands a message to its destination; with `confirm`, waits
/// until the destination has taken it in. A temporary queue deleted in the
/// meantime drops it.
pub(super) async fn publish(
    core: &Arc<BrokerCore>,
    handle: &DestHandle,
    message: Arc<Message>,
    confirm: bool,
    envelope: Envelope,
) -> Result<(), ServiceError> {
    match core.publish(handle, message, confirm, envelope).await {
        Ok(()) => Ok(()),
        Err(_) if handle.destination().kind().is_temporary() => {
            Metrics::inc(&core.metrics.messages_dropped_total);
            Ok(())
        }
        Err(e) => Err(ServiceError::NotAccepted(e)),
    }
}
