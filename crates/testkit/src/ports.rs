//! Free TCP ports on 127.0.0.1 for servers a test starts, reserved so that
//! parallel test processes never pick the same one.
//!
//! Ports come from fixed ranges below Linux's ephemeral range
//! (32768-60999): a port the kernel hands out could be taken as the local
//! end of some parallel test's outgoing connection before the server binds
//! it (seen in CI as "Address already in use"). Brokers get [`BROKER_PORTS`]
//! (the Python tests draw from the same range, with the same locks);
//! throwaway PostgreSQL servers get [`crate::pg`]'s range. A port is
//! reserved with an exclusive lock on a file named after it in
//! `$TMPDIR/halyard-test-ports/`, which the kernel releases when the
//! holder's process ends.
//!
//! A test that starts a server *in its own process* should bind port 0
//! instead and ask the listener which port it got (see the in-process
//! broker harness of `crates/cli/tests/it`).

use std::fs::{File, OpenOptions};
use std::hash::{BuildHasher, RandomState};
use std::net::{Ipv4Addr, TcpListener};
use std::ops::Range;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// The range [`free_port`] draws from.
pub const BROKER_PORTS: Range<u16> = 10_000..20_000;

/// A port of [`BROKER_PORTS`] that nobody listens on right now, reserved
/// for the life of this process: for a broker (or any server) a test is
/// about to start in another process.
pub fn free_port() -> u16 {
    static HELD: Mutex<Vec<File>> = Mutex::new(Vec::new());
    let (port, lock) = reserve(BROKER_PORTS);
    HELD.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .extend(lock);
    port
}

/// A port of `range` that is free now, with the lock that reserves it
/// (`None` where the lock directory is unusable, e.g. another user's: then
/// it goes on unlocked). The port stays reserved while the file is open,
/// even while nothing listens on it (a server being restarted).
///
/// # Panics
///
/// If no port of `range` is free after many attempts.
pub fn reserve(range: Range<u16>) -> (u16, Option<File>) {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join("halyard-test-ports");
    let _ = std::fs::create_dir_all(&dir);
    let width = u64::from(range.end - range.start);
    for _ in 0..10_000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let r = RandomState::new().hash_one((std::process::id(), n));
        let port = range.start + (r % width) as u16;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(port.to_string()))
            .ok();
        if let Some(f) = &lock
            && f.try_lock().is_err()
        {
            continue; // another test process has it
        }
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return (port, lock);
        }
    }
    panic!("halyard-testkit: no free port in {range:?} on 127.0.0.1")
}
