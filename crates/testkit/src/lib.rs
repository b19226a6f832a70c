//! Test infrastructure for Halyard: real PostgreSQL servers and databases
//! for tests.
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
use std::fs::{self, File, OpenOptions};
use std::hash::{BuildHasher, RandomState};
use std::io::{self, Write as _};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{OnceLock, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};

/// The environment variable naming the server [`database`] uses: a
/// `postgres://` URL, as `scripts/test.sh` sets it.
pub const DATABASE_URL_ENV: &str = "HALYARD_TEST_DATABASE_URL";

/// The environment variable that, if set, names the directory of the
/// PostgreSQL server binaries (`initdb`, `postgres`), overriding the search.
pub const PG_BINDIR_ENV: &str = "HALYARD_TEST_PG_BINDIR";

/// The superuser of throwaway servers (`initdb -U`), whoever runs them.
const SUPERUSER: &str = "postgres";

/// How long a throwaway server may take to accept connections (2-core CI
/// machines under load are slow).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Throwaway servers listen on a port drawn from this range, below Linux's
/// default ephemeral range (32768-60999) so as not to take a port that a
/// test got from the kernel (binding port 0) and is about to hand to a
/// broker.
const PORTS: std::ops::Range<u16> = 20_000..32_000;

/// Settings appended to a throwaway server's `postgresql.conf`.
const SETTINGS: &str = "
# halyard-testkit
listen_addresses = '127.0.0.1'
max_connections = 200
# The store's durability claims are tested against this server.
fsync = on
shared_buffers = 64MB
log_min_messages = warning
logging_collector = off
lc_messages = 'C'
# Notice dead peers (e.g. a killed broker) within seconds.
tcp_keepalives_idle = 5
tcp_keepalives_interval = 2
tcp_keepalives_count = 3
# Keep dynamic shared memory in the data directory rather than /dev/shm,
# so that nothing outlives a killed server but its directory.
dynamic_shared_memory_type = mmap
";

/// Creates a new, empty database unique to the caller and returns its URL,
/// `postgres://user@host:port/name`.
///
/// The name is `t_<hint>_<pid>_<counter>_<random>`, with `hint` reduced to
/// lowercase ASCII letters, digits and `_` and shortened to keep the name
/// within PostgreSQL's 63 bytes. The database is on the server of
/// `HALYARD_TEST_DATABASE_URL` if set (and left there), otherwise on a
/// throwaway server of this process (see the [crate] documentation).
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

/// A throwaway PostgreSQL server owned by a test; see [`private_server`].
///
/// Its superuser is `postgres` (no password), it listens on 127.0.0.1 at
/// [`port`](Self::port), which stays the same across [`stop`](Self::stop)
/// and [`start`](Self::start), and it has the `postgres` database plus the
/// templates. Dropping it shuts it down immediately and removes its
/// directory. It also dies if the test process dies.
#[derive(Debug)]
pub struct PgServer {
    /// The temporary directory: `data/`, `postgres.log`, the unix socket.
    dir: PathBuf,
    port: u16,
    /// Keeps `port` from other servers of ours while this one is stopped
    /// (see [`pick_port`]).
    port_lock: Option<File>,
    /// The running postmaster, if any.
    postmaster: Option<Child>,
    /// Whether the last postmaster was killed (left its shared memory).
    killed: bool,
    /// Removes `dir` once this process has exited (see [`spawn_guard`]).
    guard: Option<Child>,
}

impl PgServer {
    fn new() -> PgServer {
        let started = Instant::now();
        let bin = pg_bin_dir();
        let user = server_user();
        let dir = tempfile::Builder::new()
            .prefix("halyard-pg-")
            .tempdir()
            .unwrap_or_else(|e| panic!("halyard-testkit: cannot create a temporary directory: {e}"))
            .keep();
        // From here on a panic drops `server`, which removes `dir`.
        let mut server = PgServer {
            dir,
            port: 0,
            port_lock: None,
            postmaster: None,
            killed: false,
            guard: None,
        };
        server.guard = spawn_guard(&server.dir).ok();
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(&server.dir, Some(uid), Some(gid)).unwrap_or_else(|e| {
                panic!(
                    "halyard-testkit: cannot chown {} to the server user: {e}",
                    server.dir.display()
                )
            });
        }

        let data = server.data_dir();
        let output = server_command(&bin.join("initdb"), &server.dir)
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                SUPERUSER,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .output()
            .unwrap_or_else(|e| {
                panic!("halyard-testkit: cannot run {}/initdb: {e}", bin.display())
            });
        if !output.status.success() {
            panic!(
                "halyard-testkit: initdb failed ({}):\n{}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        // Unix sockets only where the path fits in sun_path (108 bytes).
        let socket_dir = if server.dir.as_os_str().len() <= 80 {
            server.dir.to_string_lossy().replace('\'', "''")
        } else {
            String::new()
        };
        OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .and_then(|mut conf| {
                writeln!(conf, "{SETTINGS}unix_socket_directories = '{socket_dir}'")
            })
            .unwrap_or_else(|e| panic!("halyard-testkit: cannot configure the server: {e}"));

        let mut attempt = 0;
        loop {
            attempt += 1;
            (server.port, server.port_lock) = pick_port();
            match server.try_start() {
                Ok(()) => break,
                Err(e) if attempt < 10 && e.contains("could not bind") => {}
                Err(e) => panic!("halyard-testkit: {e}"),
            }
        }
        // Shown with the output of a failing test.
        eprintln!(
            "halyard-testkit: started a throwaway PostgreSQL on port {} in {} ms ({})",
            server.port,
            started.elapsed().as_millis(),
            server.dir.display()
        );
        server
    }

    /// The URL of database `db` on this server, as superuser `postgres`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{db}", self.port)
    }

    /// The TCP port (on 127.0.0.1), the same across restarts.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its temporary directory: `data/` (the data directory), `postgres.log`
    /// (its log, for a failing test to show) and the unix socket. Removed
    /// when the server is dropped.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the server is running (started and not since stopped or
    /// killed by these methods).
    pub fn is_running(&self) -> bool {
        self.postmaster.is_some()
    }

    /// Stops the server with a fast shutdown (clients are disconnected, a
    /// shutdown checkpoint is written) and waits until it has exited. Does
    /// nothing if it is not running.
    pub fn stop(&mut self) {
        let Some(mut postmaster) = self.postmaster.take() else {
            return;
        };
        signal(&postmaster, Signal::INT);
        if !wait_exit(&mut postmaster, Duration::from_secs(60)) {
            // Should not happen; do not leave it running in any case.
            signal(&postmaster, Signal::QUIT);
            if !wait_exit(&mut postmaster, Duration::from_secs(10)) {
                let _ = postmaster.kill();
                let _ = postmaster.wait();
            }
            panic!(
                "halyard-testkit: fast shutdown took over 60 s; {}",
                self.log_tail()
            );
        }
    }

    /// Starts the server again, in the same directory and on the same port,
    /// and waits until it accepts connections. After [`kill`](Self::kill)
    /// this is crash recovery.
    ///
    /// # Panics
    ///
    /// If it is already running or does not come up (e.g. the port has been
    /// taken meanwhile).
    pub fn start(&mut self) {
        assert!(
            self.postmaster.is_none(),
            "halyard-testkit: the server is already running"
        );
        if let Err(e) = self.try_start() {
            panic!("halyard-testkit: {e}");
        }
    }

    /// Kills the server as a crash would: SIGKILL to the postmaster and all
    /// its processes (backends, checkpointer, WAL writer, ...), so no client
    /// is served after this returns. No shutdown checkpoint; what was
    /// committed survives (fsync is on), as after a crash. Does nothing if it
    /// is not running.
    pub fn kill(&mut self) {
        let Some(mut postmaster) = self.postmaster.take() else {
            return;
        };
        let pid = Pid::from_child(&postmaster);
        // Freeze it first so that it forks no backend that we would miss: a
        // fork under way completes before it stops, so once it is stopped
        // all its children are listed in /proc. (Only the postmaster forks
        // server processes.)
        signal(&postmaster, Signal::STOP);
        let deadline = Instant::now() + Duration::from_secs(10);
        while proc_state(pid.as_raw_pid()).is_some_and(|s| s != 'T' && s != 't')
            && Instant::now() < deadline
        {
            thread::sleep(Duration::from_millis(1));
        }
        let children = children_of(pid.as_raw_pid());
        let _ = postmaster.kill();
        for &child in &children {
            if let Some(child) = Pid::from_raw(child) {
                let _ = rustix::process::kill_process(child, Signal::KILL);
            }
        }
        let _ = postmaster.wait();
        // They are no longer our children (their parent was the postmaster):
        // wait until they are gone or zombies, which hold no shared memory.
        let deadline = Instant::now() + Duration::from_secs(10);
        while children
            .iter()
            .any(|&c| proc_state(c).is_some_and(|s| s != 'Z' && s != 'X'))
            && Instant::now() < deadline
        {
            thread::sleep(Duration::from_millis(1));
        }
        self.killed = true;
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Spawns the postmaster and waits until it accepts connections; on
    /// failure it is not running and the error includes its log.
    fn try_start(&mut self) -> Result<(), String> {
        let log_path = self.dir.join("postgres.log");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("cannot open {}: {e}", log_path.display()))?;
        let log2 = log
            .try_clone()
            .map_err(|e| format!("cannot open {}: {e}", log_path.display()))?;
        let mut command = server_command(&pg_bin_dir().join("postgres"), &self.dir);
        command
            .arg("-D")
            .arg(self.data_dir())
            .arg("-p")
            .arg(self.port.to_string())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        let mut postmaster = spawn_tied_to_process(command)
            .map_err(|e| format!("cannot run {}/postgres: {e}", pg_bin_dir().display()))?;

        let url = self.url("postgres");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = postmaster.try_wait() {
                return Err(format!(
                    "PostgreSQL exited ({status}) on start on port {}; {}",
                    self.port,
                    self.log_tail()
                ));
            }
            match on_own_thread(|| postgres::Client::connect(&url, postgres::NoTls).map(drop)) {
                Ok(_) => break,
                Err(e) if Instant::now() > deadline => {
                    signal(&postmaster, Signal::QUIT);
                    let _ = postmaster.wait();
                    return Err(format!(
                        "PostgreSQL did not accept connections within {START_TIMEOUT:?} ({e}); {}",
                        self.log_tail()
                    ));
                }
                Err(_) => thread::sleep(Duration::from_millis(10)),
            }
        }
        self.postmaster = Some(postmaster);
        self.killed = false;
        Ok(())
    }

    fn log_tail(&self) -> String {
        let path = self.dir.join("postgres.log");
        let log = fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(30)..].join("\n");
        format!("end of {}:\n{tail}", path.display())
    }

    /// After a kill, the postmaster's small System V shared memory segment
    /// (its interlock) remains; a restart in the same directory would reuse
    /// it, but it would outlive a directory being removed. Its id is on line
    /// 7 of the stale `postmaster.pid`.
    fn remove_stale_shared_memory(&self) {
        let Ok(pid_file) = fs::read_to_string(self.data_dir().join("postmaster.pid")) else {
            return;
        };
        if let Some(shmid) = pid_file
            .lines()
            .nth(6)
            .and_then(|line| line.split_whitespace().nth(1))
            .filter(|id| id.chars().all(|c| c.is_ascii_digit()))
        {
            let _ = Command::new("ipcrm")
                .args(["-m", shmid])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if let Some(mut postmaster) = self.postmaster.take() {
            // Immediate shutdown: the data is about to be removed.
            signal(&postmaster, Signal::QUIT);
            if !wait_exit(&mut postmaster, Duration::from_secs(10)) {
                let _ = postmaster.kill();
                let _ = postmaster.wait();
            }
        } else if self.killed {
            self.remove_stale_shared_memory();
        }
        let _ = fs::remove_dir_all(&self.dir);
        if let Some(mut guard) = self.guard.take() {
            drop(guard.stdin.take());
            let _ = guard.wait();
        }
    }
}

/// The directory of the PostgreSQL server binaries (`initdb`, `postgres`,
/// `pg_ctl`): `$HALYARD_TEST_PG_BINDIR` if set, else the highest version in
/// Debian's `/usr/lib/postgresql/<version>/bin`, else `pg_config --bindir`,
/// else the first directory of `PATH` that has them.
///
/// # Panics
///
/// If none has them, saying what to install.
pub fn pg_bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let has_server =
            |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
        if let Some(dir) = env::var_os(PG_BINDIR_ENV).filter(|d| !d.is_empty()) {
            let dir = PathBuf::from(dir);
            assert!(
                has_server(&dir),
                "halyard-testkit: {PG_BINDIR_ENV}={} has no initdb and postgres",
                dir.display()
            );
            return dir;
        }
        let mut debian: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let version = entry.file_name().to_str()?.parse().ok()?;
                Some((version, entry.path().join("bin")))
            })
            .filter(|(_, dir)| has_server(dir))
            .collect();
        debian.sort();
        if let Some((_, dir)) = debian.pop() {
            return dir;
        }
        if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
            && out.status.success()
        {
            let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if has_server(&dir) {
                return dir;
            }
        }
        env::var_os("PATH")
            .and_then(|path| env::split_paths(&path).find(|dir| has_server(dir)))
            .unwrap_or_else(|| {
                panic!(
                    "halyard-testkit: the PostgreSQL server binaries (initdb, postgres) are not \
                     installed: not in /usr/lib/postgresql/*/bin, `pg_config --bindir` or PATH. \
                     Install them (Debian/Ubuntu: `apt-get install postgresql`; scripts/test.sh \
                     does it), or set {PG_BINDIR_ENV} to their directory. Tests that only need \
                     a database can instead use a server of yours: set {DATABASE_URL_ENV}."
                )
            })
    })
}

/// The uid and gid to run server processes as: `None` (ourselves) unless
/// we are root, which `initdb` and `postgres` refuse; then the `postgres`
/// user, created (as Debian's package would) if missing.
fn server_user() -> Option<(u32, u32)> {
    static USER: OnceLock<Option<(u32, u32)>> = OnceLock::new();
    *USER.get_or_init(|| {
        if !rustix::process::geteuid().is_root() {
            return None;
        }
        let id = |flag: &str| {
            Command::new("id")
                .args([flag, SUPERUSER])
                .stderr(Stdio::null())
                .output()
                .ok()
                .filter(|out| out.status.success())
                .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
        };
        if id("-u").is_none() {
            let _ = Command::new("useradd")
                .args(["--system", "--user-group", "--no-create-home"])
                .args([
                    "--home-dir",
                    "/var/lib/postgresql",
                    "--shell",
                    "/bin/bash",
                    SUPERUSER,
                ])
                .status();
        }
        match (id("-u"), id("-g")) {
            (Some(uid), Some(gid)) => Some((uid, gid)),
            _ => panic!(
                "halyard-testkit: running as root, PostgreSQL must run as an unprivileged user, \
                 but there is no `{SUPERUSER}` user and it could not be created \
                 (Debian's postgresql package creates it)"
            ),
        }
    })
}

/// A command for a server binary: run as [`server_user`], in `dir` (the
/// server user may not be able to enter our working directory), with
/// messages in English.
fn server_command(program: &Path, dir: &Path) -> Command {
    let mut command = Command::new(program);
    command.current_dir(dir).env("LC_ALL", "C");
    if let Some((uid, gid)) = server_user() {
        command.uid(uid).gid(gid);
    }
    command
}

/// Spawns `command` from a thread that lives as long as the process, with
/// SIGQUIT (PostgreSQL's immediate shutdown) as its parent-death signal, so
/// that the server dies with the test process however that ends.
///
/// The kernel sends the parent-death signal when the *thread* that forked
/// the child exits, not the process: spawning from a test's own thread (or
/// a tokio blocking-pool thread) would kill the server when that thread
/// ends. Hence the dedicated thread.
fn spawn_tied_to_process(command: Command) -> io::Result<Child> {
    type Request = (Command, mpsc::Sender<io::Result<Child>>);
    static SPAWNER: OnceLock<mpsc::Sender<Request>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (requests, incoming) = mpsc::channel::<Request>();
        thread::Builder::new()
            .name("halyard-testkit-spawner".to_owned())
            .spawn(move || {
                // Ends only if SPAWNER is dropped, which it never is.
                for (mut command, reply) in incoming {
                    let _ = reply.send(spawn_with_parent_death_signal(&mut command));
                }
            })
            .unwrap_or_else(|e| panic!("halyard-testkit: cannot spawn a thread: {e}"));
        requests
    });
    let gone = || io::Error::other("the halyard-testkit spawner thread is gone");
    let (reply, response) = mpsc::channel();
    spawner.send((command, reply)).map_err(|_| gone())?;
    response.recv().map_err(|_| gone())?
}

#[allow(unsafe_code)]
fn spawn_with_parent_death_signal(command: &mut Command) -> io::Result<Child> {
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe operations are allowed (another thread of the parent
    // may have held a lock, e.g. the allocator's, at the fork). It makes one
    // raw prctl(PR_SET_PDEATHSIG) system call: no allocation, no lock, no
    // access to shared state; on failure it returns the error code, which
    // std reports to the parent without allocating either. std runs it after
    // its own setup, including setuid/setgid (a credential change would
    // clear the parent-death signal), and `postgres` is not set-user-ID
    // (whose exec would clear it too).
    unsafe {
        command.pre_exec(|| {
            rustix::process::set_parent_process_death_signal(Some(Signal::QUIT))?;
            Ok(())
        });
    }
    command.spawn()
}

/// Spawns a process that removes `dir` once this process has exited, however
/// (a static server is never dropped; a test may abort): it waits for
/// end-of-file on its stdin, which only this process holds open, then for
/// the postmaster to exit (it has been sent its parent-death signal), then
/// removes `dir`. In its own process group, so that a signal to the test's
/// group spares it.
fn spawn_guard(dir: &Path) -> io::Result<Child> {
    const SCRIPT: &str = r#"
read -r _
pid=$(head -n 1 "$1/data/postmaster.pid" 2>/dev/null)
i=0
while [ -n "$pid" ] && [ "$i" -lt 300 ] && kill -0 "$pid" 2>/dev/null; do
    sleep 0.1
    i=$((i + 1))
done
rm -rf "$1"
"#;
    Command::new("/bin/sh")
        .args(["-c", SCRIPT, "halyard-testkit-guard"])
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
}

/// A port in [`PORTS`] that is free now, with a lock on it that keeps other
/// throwaway servers (of any process of this user) from taking it while the
/// server is stopped between [`PgServer::stop`] and [`PgServer::start`]: an
/// exclusive `flock` on `$TMPDIR/halyard-testkit-ports-<uid>/<port>`, which
/// the kernel releases when the process ends. Without it the port could be
/// given to another server that starts meanwhile; other processes taking it
/// are unlikely (the range is below the kernel's ephemeral ports), and a
/// race with one binding it now is caught when the server fails to bind,
/// and retried.
fn pick_port() -> (u16, Option<File>) {
    let locks = env::temp_dir().join(format!(
        "halyard-testkit-ports-{}",
        rustix::process::getuid().as_raw()
    ));
    let _ = fs::create_dir_all(&locks);
    let seed = RandomState::new();
    for i in 0u64..1000 {
        let port = PORTS.start + (seed.hash_one(i) % u64::from(PORTS.end - PORTS.start)) as u16;
        let lock = match OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(locks.join(port.to_string()))
        {
            Ok(file) => {
                match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive)
                {
                    Ok(()) => Some(file),
                    Err(_) => continue, // another server of ours has it
                }
            }
            Err(_) => None, // cannot lock; best effort
        };
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return (port, lock);
        }
    }
    panic!("halyard-testkit: no free port in {PORTS:?} on 127.0.0.1")
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
fn on_own_thread<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    thread::scope(|scope| scope.spawn(f).join())
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

fn connect(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls)
        .unwrap_or_else(|e| panic!("halyard-testkit: cannot connect to {}: {e}", redact(url)))
}

fn signal(child: &Child, signal: Signal) {
    let _ = rustix::process::kill_process(Pid::from_child(child), signal);
}

/// Waits up to `timeout` for `child` to exit; whether it did.
fn wait_exit(child: &mut Child, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return true,
            Ok(None) if Instant::now() > deadline => return false,
            Ok(None) => thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// The state letter of process `pid` (`R`, `S`, `T`, `Z`, ...), if it exists.
fn proc_state(pid: i32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may contain anything, even ")".
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

/// The pids of the processes whose parent is `parent`.
fn children_of(parent: i32) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                stat.rfind(')')
                    .and_then(|i| stat[i + 1..].split_whitespace().nth(1)?.parse::<i32>().ok())
                    == Some(parent)
            })
        })
        .collect()
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
