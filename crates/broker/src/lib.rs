//! The Halyard message broker as a library.
//!
//! [`Broker::start`] recovers the store, opens the STOMP and admin HTTP
//! listeners and serves until [`Broker::shutdown`]. The `halyard` binary is
//! a thin layer over this. See `docs/ARCHITECTURE.md` for how a message
//! travels from socket to store to subscriber.

mod acceptor;
mod admin;
mod broker;
pub mod config;
pub mod core;
pub mod ha;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod resources;
pub mod store;

pub use broker::{Broker, StartError};
pub use config::{BrokerConfig, StoreKind};
