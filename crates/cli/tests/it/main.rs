//! The integration tests of Halyard: ONE test binary (one compile, one
//! link), a module per concern. Layout, for whoever adds a test:
//!
//! * Put a test in the module of its concern (below), or add a module here.
//! * A test that only needs a broker on a socket starts one in this process
//!   with [`support::inproc::TestBroker`] (fast, no port to reserve). A test
//!   that needs a process — `kill -9`, SIGTERM, exit codes, the command
//!   line, its log, resource limits, several brokers on one store — starts
//!   the `halyard` binary with [`support::BrokerProcess`] or
//!   [`support::cluster::Cluster`].
//! * Generic helpers (free ports, the raw STOMP connection, the HTTP getter,
//!   `/metrics`, signals, the partition proxy, PostgreSQL) live once in
//!   `halyard-testkit`; look there before writing one.
//!
//! Run one module with `cargo nextest run -p halyard --test it protocol::`.

#![allow(clippy::unwrap_used)]

mod support;

// In-process brokers (halyard_broker::Broker on a thread of the test).
mod bad_input;
mod delivery;
mod messaging;
mod protocol;
// Per-destination policies: redelivery delays, dead-letter strategies.
mod redelivery;
// Scheduled delivery; its restart and takeover tests use the binary.
mod scheduled;
// ActiveMQ's semantics; its restart tests use the binary.
mod semantics;
// Message selectors; their restart and takeover tests use the binary.
mod selectors;
// Users and rights; the start-up refusal and `halyard passwd` use the binary.
mod security;
// STOMP over WebSocket (tokio-tungstenite as the client), ws and wss.
mod ws;
// The other heads' listeners (OpenWire) on ports of their own.
mod listeners;
// `/metrics`: conventions, the docs' reference, the Grafana dashboard.
mod metrics;
// The OpenWire head against our own codec: bad input, refusals, the auto port.
mod openwire;

// Broker processes (the `halyard` binary).
// The protected admin API (one test runs a master and a slave) and the
// limits per user, per address and per connection.
mod admin_api;
mod admin_security;
mod cli;
// Deployment: JSON logs, settings from the environment, config errors,
// a PostgreSQL group started before its database.
mod deploy;
mod durability;
mod failover;
mod ha;
mod ha_postgres;
mod hostile;
mod large;
// What a newcomer trips over: the failover line, errors, spellings.
mod newcomer;
// The operator's CLI over the admin API (dstat, status of a pair, ...).
mod operator;
mod semantics_takeover;
// TLS listeners, HTTPS admin, mutual TLS, reload on SIGHUP.
mod tls;
