//! The Halyard message broker as a library.
//!
//! [`Broker::start`] recovers the store, opens the STOMP and admin HTTP
//! listeners and serves until [`Broker::shutdown`]. The `halyard` binary is
//! a thin layer over this. See `docs/ARCHITECTURE.md` for how a message
//! travels from socket to store to subscriber.

mod acceptor;
mod admin;
#[doc(hidden)]
pub mod bench_support;
pub mod config;
pub mod core;
#[doc(hidden)]
pub mod fuzz_support;
pub mod ha;
mod lifecycle;
pub mod memory;
pub mod metrics;
pub mod model;
mod node;
pub mod password;
pub mod resources;
mod service;
pub mod store;
mod tls;
mod trim;

pub use config::{BrokerConfig, StoreKind};
pub use lifecycle::{Broker, StartError};

pub use tls::TlsError;
