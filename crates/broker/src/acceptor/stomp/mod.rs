//! A STOMP 1.0–1.2 session: one task per connection that owns all of the
//! connection's protocol state (subscriptions, unacknowledged deliveries,
//! transactions, heart-beats) and talks to destinations through their
//! handles.
//!
//! Work whose result the client may wait for (a RECEIPT) runs through the
//! connection's ordered [`effects`] pipeline, so receipts are sent in frame
//! order and only once their effect is complete: for a persistent SEND, when
//! the store has it and the destination has accepted it.

mod ack;
mod activity;
mod codec;
mod connect;
mod destination;
mod effects;
mod error;
mod outbound;
mod send;
mod session;
mod subscribe;
mod subscriptions;
mod transaction;

pub(crate) use session::run;
