//! SEND: turning a frame into a message and handing it to its destination.

use std::sync::Arc;

use halyard_stomp::Frame;

use super::destination::StompDestination;
use super::error::{Fatal, missing};
use super::session::Session;
use crate::broker::Shared;
use crate::core::DestHandle;
use crate::metrics::Metrics;
use crate::model::{
    DEFAULT_PRIORITY, Destination, DestinationKind, Message, MessageId, Properties, Value, now_ms,
};
use crate::store::{DUPLICATE_ID_HEADER, MAX_DUPLICATE_ID_LEN, Record, StoreError, StoreKey};

/// Headers that describe the frame rather than the message, or that the
/// broker sets itself on delivery; they are not kept with the message.
const NOT_KEPT: &[&str] = &[
    "content-length",
    "receipt",
    "transaction",
    "destination",
    "message-id",
    "subscription",
    "ack",
    "redelivered",
    "delivery-count",
    "timestamp",
];

impl Session {
    pub(super) async fn send(
        &mut self,
        frame: Frame,
        receipt: Option<String>,
    ) -> Result<(), Fatal> {
        let dest_header = frame
            .headers
            .get("destination")
            .ok_or_else(|| missing("SEND", "destination"))?;
        let dest = Destination::parse(dest_header, &self.temp_scope)
            .map_err(|e| Fatal::protocol(e.to_string()))?;
        let tx_id = frame.headers.get("transaction").map(str::to_owned);
        if let Some(t) = &tx_id
            && !self.txs.contains_key(t)
        {
            return Err(Fatal::protocol(format!("unknown transaction '{t}'")));
        }
        let message = Arc::new(self.message(frame, dest.clone())?);
        let handle = self.resolve_for_send(&dest)?;

        if let Some(t) = tx_id {
            let limits = &self.shared.config.limits;
            let (max, max_bytes) = (limits.max_transaction_frames, limits.max_transaction_bytes);
            let tx = self
                .txs
                .get_mut(&t)
                .ok_or_else(|| Fatal::protocol("transaction vanished"))?;
            if tx.frames >= max {
                return Err(Fatal::protocol(format!(
                    "transaction '{t}' has more than limits.max-transaction-frames ({max}) frames"
                )));
            }
            let bytes = message.body.len();
            if tx.bytes + bytes > max_bytes {
                return Err(Fatal::protocol(format!(
                    "transaction '{t}' would hold more than limits.max-transaction-bytes ({max_bytes}) bytes of messages"
                )));
            }
            tx.frames += 1;
            tx.bytes += bytes;
            tx.sends.push((handle, message));
            if self.shared.memory.over() {
                // The message stays in memory until COMMIT: hold the
                // producer (and stop reading its frames) until there is room.
                let shared = self.shared.clone();
                self.effects.push(
                    bytes,
                    Box::pin(async move {
                        flow_control(&shared, "transactional SEND", memory_room(&shared)).await?;
                        Ok(receipt)
                    }),
                );
            } else {
                self.effects.receipt(receipt);
            }
            return Ok(());
        }

        let Some(handle) = handle else {
            Metrics::inc(&self.shared.metrics.messages_dropped_total);
            self.effects.receipt(receipt);
            return Ok(());
        };
        let completion = if message.persistent && handle.stores() {
            let not_stored = |e: StoreError| Fatal::broker(format!("message not stored: {e}"));
            flow_control(&self.shared, "persistent SEND", self.shared.store.admit())
                .await?
                .map_err(not_stored)?;
            let record = Record::Add {
                key: StoreKey::Queue(dest.name().into()),
                message: message.clone(),
                dedup: duplicate_id(&message),
            };
            Some(
                self.shared
                    .store
                    .submit(vec![record])
                    .await
                    .map_err(not_stored)?,
            )
        } else {
            None
        };
        let shared = self.shared.clone();
        let bytes = message.body.len();
        // A message the destination must keep in memory waits for room in
        // the broker's budget; a stored one can be paged out instead.
        let pinned = !(message.persistent && handle.stores() && shared.store.pages());
        self.effects.push(
            bytes,
            Box::pin(async move {
                if let Some(c) = completion {
                    let duplicates = c
                        .await
                        .map_err(|e| Fatal::broker(format!("message not stored: {e}")))?;
                    if duplicates.contains(message.seq) {
                        // Stored before (a resend after a failover): the
                        // receipt confirms that one.
                        Metrics::inc(&shared.metrics.duplicates_total);
                        return Ok(receipt);
                    }
                }
                // A queue has the message once it is in its channel (any
                // later consumer gets it); a topic only once it has fanned
                // it out to the subscribers of that moment.
                let confirm =
                    receipt.is_some() && handle.destination().kind() == DestinationKind::Topic;
                if pinned {
                    flow_control(&shared, "SEND", memory_room(&shared)).await?;
                }
                flow_control(&shared, "SEND", publish(&shared, &handle, message, confirm))
                    .await??;
                Ok(receipt)
            }),
        );
        Ok(())
    }

    /// The destination a SEND goes to, created on first use. `None` for a
    /// temporary queue of another connection that no longer exists: replies
    /// to a requester that has gone are dropped, not treated as errors.
    fn resolve_for_send(&mut self, dest: &Destination) -> Result<Option<DestHandle>, Fatal> {
        if dest.kind() == DestinationKind::TempQueue && !dest.is_temp_of(&self.temp_scope) {
            return Ok(self.shared.existing_destination(dest));
        }
        self.destination(dest).map(Some)
    }

    /// Gets or creates a destination, remembering our temporary queues.
    pub(super) fn destination(&mut self, dest: &Destination) -> Result<DestHandle, Fatal> {
        let handle = self
            .shared
            .destination(dest)
            .map_err(|e| Fatal::protocol(e.to_string()))?;
        if dest.is_temp_of(&self.temp_scope) && !self.temp_queues.contains(dest) {
            self.temp_queues.push(dest.clone());
        }
        Ok(handle)
    }

    /// Builds the message a SEND frame describes. The user's headers become
    /// string properties, in order; where a name repeats, the first value
    /// counts (STOMP's rule, which is also how properties are built).
    fn message(&self, frame: Frame, destination: Destination) -> Result<Message, Fatal> {
        let headers = frame.headers;
        let persistent = match headers.get("persistent") {
            None => false,
            Some(v) if v.eq_ignore_ascii_case("true") => true,
            Some(v) if v.eq_ignore_ascii_case("false") => false,
            Some(v) => {
                return Err(Fatal::protocol(format!(
                    "invalid persistent header '{v}': expected true or false"
                )));
            }
        };
        let priority = match headers.get("priority") {
            None => DEFAULT_PRIORITY,
            Some(v) => v
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= 9)
                .ok_or_else(|| {
                    Fatal::protocol(format!("invalid priority header '{v}': expected 0 to 9"))
                })?,
        };
        let expires = match headers.get("expires") {
            None => 0,
            Some(v) => v.trim().parse::<u64>().map_err(|_| {
                Fatal::protocol(format!(
                    "invalid expires header '{v}': expected milliseconds since the epoch (0 for never)"
                ))
            })?,
        };
        if let Some(id) = headers.get(DUPLICATE_ID_HEADER)
            && (id.is_empty() || id.len() > MAX_DUPLICATE_ID_LEN)
        {
            return Err(Fatal::protocol(format!(
                "invalid {DUPLICATE_ID_HEADER} header: must be 1 to {MAX_DUPLICATE_ID_LEN} bytes"
            )));
        }
        let properties: Properties = headers
            .into_vec()
            .into_iter()
            .filter(|(k, _)| !NOT_KEPT.contains(&k.as_str()))
            .map(|(k, mut v)| {
                // A reply-to naming our temporary queue must mean the same
                // queue to whoever replies, so it is rewritten to the
                // broker-wide name.
                if k == "reply-to"
                    && v.starts_with("/temp-queue/")
                    && let Ok(d) = Destination::parse(&v, &self.temp_scope)
                {
                    v = d.stomp_name();
                }
                (k, Value::String(v))
            })
            .collect();
        let seq = self.shared.next_seq();
        Ok(Message {
            seq,
            id: MessageId {
                prefix: self.shared.id_prefix.clone(),
                n: seq,
            },
            destination,
            properties,
            body: frame.body,
            persistent,
            priority,
            expires,
            timestamp: now_ms(),
            charge: crate::memory::Charge::none(),
        }
        .charged(&self.shared.memory))
    }
}

/// Waits for `wait` — flow control: a full destination, the memory budget —
/// for at most `limits.flow-control-timeout-ms` (0: as long as it takes);
/// then the frame gets an ERROR.
pub(super) async fn flow_control<T>(
    shared: &Shared,
    what: &str,
    wait: impl std::future::Future<Output = T>,
) -> Result<T, Fatal> {
    let ms = shared.config.limits.flow_control_timeout_ms;
    if ms == 0 {
        return Ok(wait.await);
    }
    tokio::time::timeout(std::time::Duration::from_millis(ms), wait)
        .await
        .map_err(|_| {
            Metrics::inc(&shared.memory.timeouts);
            Fatal::broker(format!(
                "{what} held back by producer flow control for longer than limits.flow-control-timeout-ms ({ms} ms): the broker is at its memory limit or the destination is full"
            ))
        })
}

/// Waits until the broker's memory budget has room, counted as a waiting
/// producer meanwhile.
pub(super) async fn memory_room(shared: &Shared) {
    if !shared.memory.over() {
        return;
    }
    struct Waiting<'a>(&'a std::sync::atomic::AtomicU64);
    impl Drop for Waiting<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
    shared
        .memory
        .waiting
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let _waiting = Waiting(&shared.memory.waiting);
    shared.memory.below_limit().await;
}

/// A message's duplicate-detection id, checked by the store's writer.
pub(super) fn duplicate_id(message: &Message) -> Option<Arc<str>> {
    message.string_property(DUPLICATE_ID_HEADER).map(Arc::from)
}

/// Hands a message to its destination and counts it; with `confirm`, waits
/// until the destination has taken it in. A temporary queue deleted in the
/// meantime drops it.
pub(super) async fn publish(
    shared: &Arc<Shared>,
    handle: &DestHandle,
    message: Arc<Message>,
    confirm: bool,
) -> Result<(), Fatal> {
    match shared.publish(handle, message, confirm).await {
        Ok(()) => {
            Metrics::inc(&shared.metrics.messages_received_total);
            Ok(())
        }
        Err(_) if handle.destination().kind() == DestinationKind::TempQueue => {
            Metrics::inc(&shared.metrics.messages_dropped_total);
            Ok(())
        }
        Err(e) => Err(Fatal::broker(format!("message not accepted: {e}"))),
    }
}
