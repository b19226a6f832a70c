//! The STOMP 1.0–1.2 protocol head: one task per connection that owns the
//! connection's protocol state (version, heart-beats, the frames in and
//! out) and translates frames into calls on the broker service, which
//! keeps subscriptions, unacknowledged deliveries and transactions.
//!
//! Work whose result the client may wait for (a RECEIPT) runs through the
//! connection's ordered pipeline, so receipts are sent in frame order and
//! only once their work is complete: for a persistent SEND, when the store
//! has it and the destination has accepted it.

mod ack;
mod activity;
mod codec;
mod connect;
mod destination;
mod error;
mod out;
mod outbound;
mod refused;
mod send;
mod session;
mod subscribe;
mod transaction;

pub(crate) use session::run;

/// What a connection beyond the broker's connection cap is told.
pub(crate) const REFUSAL: &[u8] =
    b"ERROR\nmessage:too many connections\ncontent-type:text/plain\n\n\
the broker has reached its connection limit (limits.max-connections)\0";

/// What a connection beyond its address's cap is told.
pub(crate) const ADDRESS_REFUSAL: &[u8] =
    b"ERROR\nmessage:too many connections from your address\ncontent-type:text/plain\n\n\
this address holds as many connections as the broker allows one address (limits.max-connections-per-address)\0";

#[cfg(test)]
mod tests;
