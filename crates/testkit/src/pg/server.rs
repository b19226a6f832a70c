//! A throwaway PostgreSQL server: initdb, start, stop, kill, and clean-up.

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};

use super::install::{pg_bin_dir, server_command, server_user};
use super::spawn::{spawn_guard, spawn_tied_to_process};
use super::{SUPERUSER, on_own_thread};
use crate::ports;
use crate::process::{children_of, proc_state, signal_child, wait_timeout};

/// How long a throwaway server may take to accept connections (2-core CI
/// machines under load are slow).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Throwaway servers listen on a port drawn from this range (see
/// [`crate::ports`]), apart from the brokers' range. A server keeps its
/// port's reservation while it is stopped between [`PgServer::stop`] and
/// [`PgServer::start`], so no other server of any test process takes it
/// meanwhile; a race with some other program binding it is caught when the
/// server fails to bind, and retried.
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

/// A throwaway PostgreSQL server owned by a test; see [`super::private_server`].
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
    /// (see [`PORTS`]).
    port_lock: Option<File>,
    /// The running postmaster, if any.
    postmaster: Option<Child>,
    /// Whether the last postmaster was killed (left its shared memory).
    killed: bool,
    /// Removes `dir` once this process has exited (see [`spawn_guard`]).
    guard: Option<Child>,
}

impl PgServer {
    pub(super) fn new() -> PgServer {
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
            (server.port, server.port_lock) = ports::reserve(PORTS);
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
        signal_child(&postmaster, Signal::INT);
        if wait_timeout(&mut postmaster, Duration::from_secs(60)).is_none() {
            // Should not happen; do not leave it running in any case.
            signal_child(&postmaster, Signal::QUIT);
            if wait_timeout(&mut postmaster, Duration::from_secs(10)).is_none() {
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
        signal_child(&postmaster, Signal::STOP);
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
                    signal_child(&postmaster, Signal::QUIT);
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
            signal_child(&postmaster, Signal::QUIT);
            if wait_timeout(&mut postmaster, Duration::from_secs(10)).is_none() {
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
