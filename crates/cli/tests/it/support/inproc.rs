//! A broker of the `halyard_broker` library in the test's own process: no
//! process to spawn, no port to reserve, no binary to find. For tests that
//! need a broker on a socket and nothing a process gives (`kill -9`, exit
//! codes, resource limits, its stdout): protocol, delivery, bad input,
//! messaging, and the store-limit, durable-subscription and duplicate-id
//! tests that need no crash.
//!
//! The broker runs on a thread of its own with a tokio runtime of its own,
//! so it keeps serving whatever the test's runtime does (a test blocked in
//! a synchronous call, a paused clock), as a separate process would. It
//! listens on port 0 of 127.0.0.1 (the kernel picks free ports) with a data
//! directory in a temporary directory, and is shut down gracefully when
//! dropped. Its log goes to the test's captured output (`RUST_LOG` sets
//! the level; `info` by default), so a failing test shows what the broker
//! said.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use halyard_broker::{Broker, BrokerConfig};
use tokio::sync::oneshot;

/// A running in-process broker, shut down when dropped.
pub struct TestBroker {
    /// Its temporary directory: `halyard.toml` and `data/`.
    pub dir: tempfile::TempDir,
    /// Where it serves STOMP.
    pub stomp: SocketAddr,
    /// Where it serves the admin HTTP API.
    pub http: SocketAddr,
    /// Where it serves STOMP over WebSocket (`ws`, and `ws+ssl` when the
    /// config has such a listener).
    pub ws: Option<SocketAddr>,
    pub wss: Option<SocketAddr>,
    /// Where it serves OpenWire (`openwire`, and `openwire+ssl` when the
    /// config has such a listener): the addresses it bound, port 0 having
    /// let the kernel pick.
    pub openwire: Option<SocketAddr>,
    pub openwire_ssl: Option<SocketAddr>,
    /// Where it serves every protocol on one port (`auto`), when the
    /// config has such a listener.
    pub auto: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    /// Why the broker stopped by itself (fenced, store failed), if it did.
    failure: Arc<Mutex<Option<String>>>,
}

impl TestBroker {
    /// Starts a broker with default settings plus `extra_toml` (which may
    /// contain `[section]` tables; top-level keys must come first), read
    /// the way `halyard broker --config FILE` reads it.
    pub async fn start(extra_toml: &str) -> TestBroker {
        init_logging();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("halyard.toml");
        std::fs::write(&file, extra_toml).unwrap();
        // As `halyard broker --config FILE --data-dir DIR --stomp ADDR
        // --ws ADDR --openwire ADDR --http ADDR` builds it (crates/cli/src/broker.rs).
        let mut config = BrokerConfig::read_file(&file)
            .unwrap_or_else(|e| panic!("bad test config {extra_toml:?}: {e}"));
        config.data_dir = dir.path().join("data");
        config.stomp = "127.0.0.1:0".to_owned();
        config.ws = "127.0.0.1:0".to_owned();
        config.openwire = "127.0.0.1:0".to_owned();
        config.http = "127.0.0.1:0".to_owned();
        config
            .validate()
            .unwrap_or_else(|e| panic!("bad test config {extra_toml:?}: {e}"));

        let (ready_tx, ready_rx) = oneshot::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let failure = Arc::new(Mutex::new(None));
        let failed = failure.clone();
        let thread = std::thread::Builder::new()
            .name("test-broker".to_owned())
            .spawn(move || serve(config, ready_tx, stop_rx, failed))
            .unwrap();
        let Ready {
            stomp,
            http,
            ws,
            wss,
            openwire,
            openwire_ssl,
            auto,
        } = match ready_rx.await {
            Ok(Ok(addrs)) => addrs,
            Ok(Err(e)) => panic!("the broker did not start: {e}"),
            Err(_) => panic!("the broker thread ended during start-up (see its panic above)"),
        };
        TestBroker {
            dir,
            stomp,
            http,
            ws,
            wss,
            openwire,
            openwire_ssl,
            auto,
            stop: Some(stop_tx),
            thread: Some(thread),
            failure,
        }
    }

    /// The data directory.
    pub fn data_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    /// Whether the broker still serves: its thread runs and it has not
    /// stopped by itself.
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished()) && self.failure().is_none()
    }

    /// Why the broker stopped by itself, if it did (its log is in the
    /// test's output).
    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// For failure messages: what is known of the broker's state beyond
    /// its log, which is in the test's output.
    pub fn logs(&self) -> String {
        match self.failure() {
            Some(reason) => format!("the in-process broker stopped: {reason}"),
            None if self.is_running() => "the in-process broker is running".to_owned(),
            None => "the in-process broker's thread ended (see its panic above)".to_owned(),
        }
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            // A graceful shutdown: connections get their ERROR, the store is
            // closed, and nothing of the broker outlives the test.
            let _ = t.join();
        }
    }
}

/// The addresses a started broker reports.
struct Ready {
    stomp: SocketAddr,
    http: SocketAddr,
    ws: Option<SocketAddr>,
    wss: Option<SocketAddr>,
    openwire: Option<SocketAddr>,
    openwire_ssl: Option<SocketAddr>,
    auto: Option<SocketAddr>,
}

/// The broker thread: starts the broker, reports its addresses, serves until
/// told to stop (or until it fails), then shuts it down.
fn serve(
    config: BrokerConfig,
    ready: oneshot::Sender<Result<Ready, String>>,
    stop: oneshot::Receiver<()>,
    failure: Arc<Mutex<Option<String>>>,
) {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("test-broker-rt")
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            let _ = ready.send(Err(format!("cannot start a runtime: {e}")));
            return;
        }
    };
    runtime.block_on(async move {
        let broker = match Broker::start(config).await {
            Ok(b) => b,
            Err(e) => {
                let _ = ready.send(Err(e.to_string()));
                return;
            }
        };
        let Some(stomp) = broker.stomp_addr() else {
            let _ = ready.send(Err(format!(
                "the broker is not master (role {:?})",
                broker.role()
            )));
            broker.shutdown().await;
            return;
        };
        let addrs = Ready {
            stomp,
            http: broker.http_addr(),
            ws: broker.listener_addr("ws"),
            wss: broker.listener_addr("ws+ssl"),
            openwire: broker.listener_addr("openwire"),
            openwire_ssl: broker.listener_addr("openwire+ssl"),
            auto: broker.listener_addr("auto"),
        };
        if ready.send(Ok(addrs)).is_err() {
            broker.shutdown().await;
            return;
        }
        tokio::select! {
            // Told to stop, or the test (and its TestBroker) is gone.
            _ = stop => {}
            reason = broker.failed() => {
                tracing::error!(%reason, "the in-process broker failed");
                *failure.lock().unwrap_or_else(PoisonError::into_inner) = Some(reason);
            }
        }
        broker.shutdown().await;
    });
}

/// Sends the broker's log (and any other `tracing` output) to the test's
/// captured output, once per process.
fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}
