//! Real PostgreSQL servers and databases for tests.
//!
//! * [`database`] creates a new, empty database for the caller and returns
//!   its URL. Every call gives a different database, so tests never see each
//!   other's tables, however they run.
//! * [`server_url`] is the admin URL of the server those databases live on,
//!   for tests that need to run SQL such as `pg_terminate_backend`.
//! * [`private_server`] starts a dedicated server that the caller owns and
//!   may stop, start again or kill: for tests of PostgreSQL restarts and
//!   crashes, which must not disturb the server other tests share.
//!
//! # Which server
//!
//! If `HALYARD_TEST_DATABASE_URL` is set, [`database`] creates its databases
//! on that server. `scripts/test.sh` sets it to one throwaway server that it
//! starts for the whole suite (cargo-nextest runs every test in its own
//! process, so a server per process would cost about a second per test). It
//! may also point at your own server: a `postgres://` URL of a role that may
//! create databases. Databases created there are left in place (their names
//! start with `t_`); drop them when you like.
//!
//! Otherwise the first call in a process initialises a throwaway server in a
//! temporary directory and starts it on a free port of 127.0.0.1; it dies
//! with the process and its directory is then removed.
//!
//! Throwaway servers need the PostgreSQL server binaries (Debian: `apt-get
//! install postgresql`; `scripts/test.sh` installs it when missing), found
//! by [`pg_bin_dir`]. As root, they run as the unprivileged `postgres` user,
//! because `initdb` and `postgres` refuse to run as root.
//!
//! All functions panic, with a message saying what is wrong, on failure:
//! they are for tests. They block, but may be called from async tests.
//!
//! ```no_run
//! // A database of its own for this test (any client library will do).
//! let url = halyard_testkit::database("journal_replay");
//! let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
//! client.batch_execute("CREATE TABLE t (x int)").unwrap();
//!
//! // A server of its own, to crash.
//! let mut server = halyard_testkit::private_server();
//! let url = server.url("postgres");
//! // ... write through `url` ...
//! server.kill(); // SIGKILL: no shutdown checkpoint
//! server.start(); // crash recovery, same port
//! // ... check what survived ...
//! ```

use std::env;
use std::hash::{BuildHasher, RandomState};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::Instant;

mod install;
mod server;
mod spawn;

pub use install::pg_bin_dir;
pub use server::PgServer;

/// The environment variable naming the server [`database`] uses: a
/// `postgres://` URL, as `scripts/test.sh` sets it.
pub const DATABASE_URL_ENV: &str = "HALYARD_TEST_DATABASE_URL";

/// The environment variable that, if set, names the directory of the
/// PostgreSQL server binaries (`initdb`, `postgres`), overriding the search.
pub const PG_BINDIR_ENV: &str = "HALYARD_TEST_PG_BINDIR";

/// The superuser of throwaway servers (`initdb -U`), whoever runs them.
const SUPERUSER: &str = "postgres";

/// Creates a new, empty database unique to the caller and returns its URL,
/// `postgres://user@host:port/name`.
///
/// The name is `t_<hint>_<pid>_<counter>_<random>`, with `hint` reduced to
/// lowercase ASCII letters, digits and `_` and shortened to keep the name
/// within PostgreSQL's 63 bytes. The database is on the server of
/// `HALYARD_TEST_DATABASE_URL` if set (and left there), otherwise on a
/// throwaway server of this process (see the [module](self) documentation).
///
/// # Panics
///
/// If the server cannot be started or reached, or refuses to create the
/// database.
pub fn database(hint: &str) -> String {
    let admin = server_url();
    let name = unique_name(hint);
    on_own_thread(|| {
        let mut client = connect(&admin);
        // template0: nobody is ever connected to it, unlike template1, so
        // concurrent CREATE DATABASEs cannot fail with "source database is
        // being accessed by other users", and nothing added to template1
        // leaks in.
        let create = format!("CREATE DATABASE \"{name}\" TEMPLATE template0");
        if let Err(e) = client.batch_execute(&create) {
            panic!(
                "halyard-testkit: cannot create database {name} on {}: {e}",
                redact(&admin)
            );
        }
    });
    with_database(&admin, &name)
}

/// The admin URL of the server that [`database`] creates databases on:
/// `HALYARD_TEST_DATABASE_URL` if set, otherwise the `postgres` database of
/// this process's throwaway server (started by this call if need be).
///
/// # Panics
///
/// If a throwaway server is needed and cannot be started.
pub fn server_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    // Never dropped: the server lives as long as the process, and dies with
    // it (parent-death signal), after which its guard removes its directory.
    static LOCAL: OnceLock<PgServer> = OnceLock::new();
    URL.get_or_init(|| match env::var(DATABASE_URL_ENV) {
        Ok(url) if !url.trim().is_empty() => url.trim().to_owned(),
        _ => LOCAL.get_or_init(PgServer::new).url("postgres"),
    })
    .clone()
}

/// Starts a dedicated throwaway server (its own directory and port) that the
/// caller owns, regardless of `HALYARD_TEST_DATABASE_URL`. For tests that
/// stop, restart or kill PostgreSQL. Dropping it stops it and removes its
/// directory.
///
/// # Panics
///
/// If the server binaries are missing or the server cannot be started.
pub fn private_server() -> PgServer {
    PgServer::new()
}

fn unique_name(hint: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // The pid and counter are unique on this machine; the random part keeps
    // names apart on a server shared by several machines or containers.
    let random = RandomState::new().hash_one((n, Instant::now())) as u32;
    let tail = format!("_{}_{n}_{random:08x}", std::process::id());
    let room = 63usize.saturating_sub("t_".len() + tail.len());
    let hint: String = hint
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(room)
        .collect();
    format!("t_{hint}{tail}")
}

/// `url` with its database name replaced by `db` (query parameters kept).
fn with_database(url: &str, db: &str) -> String {
    let authority = url.find("://").map_or(0, |i| i + 3);
    let path = url[authority..]
        .find(['/', '?'])
        .map_or(url.len(), |i| authority + i);
    let query = url[path..].find('?').map_or("", |i| &url[path + i..]);
    format!("{}/{db}{query}", &url[..path])
}

/// `url` with any password replaced by `***`, for messages.
fn redact(url: &str) -> String {
    let authority = url.find("://").map_or(0, |i| i + 3);
    let Some(at) = url[authority..].find('@').map(|i| authority + i) else {
        return url.to_owned();
    };
    match url[authority..at].find(':') {
        Some(colon) => format!("{}:***{}", &url[..authority + colon], &url[at..]),
        None => url.to_owned(),
    }
}

/// Runs `f` on a thread of its own and returns its result (or resumes its
/// panic). The `postgres` crate's blocking client drives a tokio runtime of
/// its own, which panics when called from within another's, and tests of
/// async code call us from within one.
pub(super) fn on_own_thread<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    thread::scope(|scope| scope.spawn(f).join())
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

fn connect(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls)
        .unwrap_or_else(|e| panic!("halyard-testkit: cannot connect to {}: {e}", redact(url)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_database_replaces_only_the_name() {
        assert_eq!(
            with_database("postgres://u@h:1/postgres", "t_x"),
            "postgres://u@h:1/t_x"
        );
        assert_eq!(
            with_database("postgres://u@h:1", "t_x"),
            "postgres://u@h:1/t_x"
        );
        assert_eq!(
            with_database("postgresql://u:p@h/db?sslmode=disable&x=/y", "t_x"),
            "postgresql://u:p@h/t_x?sslmode=disable&x=/y"
        );
        assert_eq!(
            with_database("postgres://h?x=1", "t_x"),
            "postgres://h/t_x?x=1"
        );
    }

    #[test]
    fn redact_hides_the_password() {
        assert_eq!(
            redact("postgres://u:secret@h:1/db"),
            "postgres://u:***@h:1/db"
        );
        assert_eq!(redact("postgres://u@h:1/db"), "postgres://u@h:1/db");
        assert_eq!(redact("postgres://h:1/db"), "postgres://h:1/db");
    }

    #[test]
    fn names_are_valid_unique_and_short() {
        let a = unique_name("Store: recovers after restart / with many messages and more words");
        let b = unique_name("Store: recovers after restart / with many messages and more words");
        assert_ne!(a, b);
        for name in [&a, &b, &unique_name(""), &unique_name("é")] {
            assert!(name.len() <= 63, "{name}");
            assert!(name.starts_with("t_"), "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{name}"
            );
        }
        assert!(a.starts_with("t_store__recovers_after"), "{a}");
    }
}
