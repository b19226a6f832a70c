//! The OpenWire head: ActiveMQ's JMS clients (and its `failover:`
//! transport) on Halyard, through the same broker service as STOMP.
//!
//! One task per connection ([`session`]) owns the codec, the connection's
//! service side and the JMS state the service does not know: sessions,
//! producers (and their flow-control windows), consumers (and the messages
//! each was sent, which acknowledgements name), and the acknowledgements a
//! local transaction holds until it commits. docs/OPENWIRE.md says what is
//! supported and what each refusal looks like to the client.
//!
//! - `connect.rs`: wire-format negotiation, `ConnectionInfo`, what the
//!   broker announces (`BrokerInfo`, `ConnectionControl`);
//! - `produce.rs`: producers and their messages;
//! - `consume.rs`: consumers, dispatch, acknowledgements, pulls;
//! - `transaction.rs`: local transactions;
//! - `convert.rs`: messages and destinations in and out;
//! - `error.rs`: refusals as Java exceptions.

mod advisory;
mod connect;
mod consume;
mod convert;
mod error;
mod produce;
mod session;
mod state;
mod transaction;

pub(crate) use session::run;

/// What a connection beyond the connection cap gets before it is closed:
/// nothing (an OpenWire refusal needs a negotiated format; the client sees
/// the close and, with `failover:`, tries again or elsewhere).
pub(crate) const REFUSAL: &[u8] = b"";
/// Likewise beyond `limits.max-connections-per-address`.
pub(crate) const ADDRESS_REFUSAL: &[u8] = b"";
