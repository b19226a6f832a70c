//! Test infrastructure for Halyard, shared by every crate's tests. It knows
//! STOMP (through `halyard-stomp`) but not the broker: nothing here starts
//! one. (The harnesses that run the `halyard` binary or the broker library
//! are in `crates/cli/tests/it/support/`.)
//!
//! * [`ports`]: free TCP ports, reserved across parallel test processes.
//! * [`stomp`]: the one raw STOMP test connection ([`stomp::Stomp`]).
//! * [`http`]: the one HTTP getter, for the admin API; [`metrics`] reads
//!   its `/metrics` text.
//! * [`process`]: signals (SIGTERM, SIGSTOP/SIGCONT, `kill -9`) through
//!   `rustix`, waiting for an exit with a deadline.
//! * [`proxy`]: a TCP proxy that can be cut like a network partition.
//! * [`pg`]: throwaway PostgreSQL servers and per-test databases (its main
//!   functions are re-exported here: [`database`], [`private_server`]).
//! * [`eventually`]: poll for an event with a deadline, instead of sleeping
//!   and hoping; [`assert_between`] for when it happened.
//!
//! Everything panics, with a message saying what is wrong, on failure:
//! these are for tests.

pub mod http;
pub mod metrics;
pub mod pg;
pub mod ports;
pub mod process;
pub mod proxy;
pub mod stomp;

pub use pg::{
    DATABASE_URL_ENV, PG_BINDIR_ENV, PgServer, database, pg_bin_dir, private_server, server_url,
};
pub use ports::free_port;

use std::time::{Duration, Instant};

/// Asserts that `elapsed` is at least `min` and at most `max` (`what`
/// happened after `elapsed`).
#[track_caller]
pub fn assert_between(elapsed: Duration, min: Duration, max: Duration, what: &str) {
    assert!(
        elapsed >= min && elapsed <= max,
        "{what} after {elapsed:?}, expected between {min:?} and {max:?}"
    );
}

/// Polls `f` until it returns `Some` (returned) or the deadline passes
/// (panics, naming `what`).
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
