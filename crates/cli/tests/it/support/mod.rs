//! What the integration tests share beyond `halyard-testkit`: the `halyard`
//! binary as a process ([`BrokerProcess`], [`run_cli`]), brokers of the
//! library in this process ([`inproc::TestBroker`]), and groups of broker
//! processes on one store with clients that fail over ([`cluster`]).

#![allow(unreachable_pub)]

pub mod cluster;
pub mod inproc;

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use halyard_testkit::free_port;
use halyard_testkit::http::{http_get, try_http_get};
use halyard_testkit::process::{kill9, terminate, wait_timeout};
use tokio::net::TcpStream;

/// The binary under test: this build's, or the one `HALYARD_TEST_BIN`
/// names (to show that a test fails on an older build).
pub fn halyard_bin() -> String {
    std::env::var("HALYARD_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_halyard").to_owned())
}

/// A running broker process, killed when dropped.
pub struct BrokerProcess {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub stomp: SocketAddr,
    /// The STOMP-over-WebSocket listener's address.
    pub ws: SocketAddr,
    /// The OpenWire listener's address (its own port, so that parallel
    /// tests do not all claim the default 61616).
    pub openwire: SocketAddr,
    pub http: SocketAddr,
    log: PathBuf,
}

impl BrokerProcess {
    /// Starts a broker with default settings plus `extra_toml` (which may
    /// contain `[section]` tables; top-level keys must come first).
    pub async fn start(extra_toml: &str) -> BrokerProcess {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, extra_toml).await
    }

    pub async fn start_in(dir: tempfile::TempDir, extra_toml: &str) -> BrokerProcess {
        let stomp: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let ws: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let openwire: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        std::fs::write(dir.path().join("halyard.toml"), extra_toml).unwrap();
        let log = dir.path().join("broker.log");
        let mut b = BrokerProcess {
            child: None,
            dir,
            stomp,
            ws,
            openwire,
            http,
            log,
        };
        b.spawn();
        b.wait_ready().await;
        b
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn spawn(&mut self) {
        // Append: a restarted broker's log follows the previous one's.
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(halyard_bin())
            .arg("broker")
            .arg("--config")
            .arg(self.dir.path().join("halyard.toml"))
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--stomp")
            .arg(self.stomp.to_string())
            .arg("--ws")
            .arg(self.ws.to_string())
            .arg("--openwire")
            .arg(self.openwire.to_string())
            .arg("--http")
            .arg(self.http.to_string())
            .env("RUST_LOG", "info,halyard_broker=debug")
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// Starts the broker again on the same data directory and ports (after
    /// [`BrokerProcess::kill`] or [`BrokerProcess::terminate`]; kills it
    /// first if it is still running). Retries while the old process's ports
    /// are being released.
    pub async fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            self.spawn();
            let started = Instant::now();
            loop {
                if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                    // Most likely the port is still held; try again.
                    assert!(
                        Instant::now() < deadline,
                        "broker did not restart ({status}):\n{}",
                        self.logs()
                    );
                    self.child = None;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    break;
                }
                if TcpStream::connect(self.stomp).await.is_ok() {
                    return self.wait_master().await;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(20),
                    "broker did not open {} in time:\n{}",
                    self.stomp,
                    self.logs()
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("broker exited during start-up ({status}):\n{}", self.logs());
            }
            if TcpStream::connect(self.stomp).await.is_ok() {
                return self.wait_master().await;
            }
            assert!(
                Instant::now() < deadline,
                "broker did not open {} in time:\n{}",
                self.stomp,
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for `/readyz` to say master. The first client port accepts a
    /// moment before that (the broker reports itself master once every
    /// listener is bound, so that a load balancer never sends a client to
    /// a port still closed): a test reading the broker's state right after
    /// connecting would otherwise race it. (An admin API over TLS does not
    /// answer plain HTTP: then there is nothing to wait for here.)
    async fn wait_master(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match try_http_get(self.http, "/readyz").await {
                Ok((200, _)) => return,
                Ok((0, _)) => return,
                _ => {}
            }
            assert!(
                Instant::now() < deadline,
                "broker opened {} but never reported itself master:\n{}",
                self.stomp,
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Everything the broker logged so far.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        terminate(child.id());
        wait_timeout(&mut child, Duration::from_secs(20))
            .unwrap_or_else(|| panic!("broker did not exit after SIGTERM:\n{}", self.logs()))
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill9(&mut child);
        }
    }

    /// The process's peak and current resident set, in MiB.
    pub fn rss_mib(&self) -> (u64, u64) {
        let pid = self.pid();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
                .unwrap()
                / 1024
        };
        (field("VmHWM:"), field("VmRSS:"))
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    /// GET an admin HTTP path; returns (status, body).
    pub async fn http_get(&self, path: &str) -> (u16, String) {
        http_get(self.http, path).await
    }

    pub fn url(&self) -> String {
        format!("stomp://{}", self.stomp)
    }

    /// The stats of one destination from the admin API, if it exists.
    pub async fn dest_stats(&self, dest: &str) -> Option<serde_json::Value> {
        dest_stats(self.http, dest).await
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs the CLI with `args`; returns (exit code, stdout, stderr).
pub fn run_cli(args: &[&str], stdin: Option<&[u8]>) -> (i32, String, String) {
    use std::io::Write;
    let mut child = Command::new(halyard_bin())
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Path helper for tests that write config files.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// The stats of one destination from the admin API at `http`, if it
/// exists.
pub async fn dest_stats(http: SocketAddr, dest: &str) -> Option<serde_json::Value> {
    let (status, text) = http_get(http, "/api/destinations").await;
    assert_eq!(status, 200, "GET /api/destinations: {text}");
    let all: serde_json::Value = serde_json::from_str(&text).unwrap();
    all.as_array()
        .unwrap()
        .iter()
        .find(|d| d["destination"] == dest)
        .cloned()
}
