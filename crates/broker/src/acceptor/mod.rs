//! Listeners and per-connection protocol sessions. STOMP is the only
//! protocol today; MQTT, AMQP and OpenWire acceptors will sit beside it and
//! share the broker core.

pub(crate) mod stomp;

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::Metrics;
use crate::service::Service;

/// Backs off after failed accepts (typically EMFILE: out of descriptors)
/// instead of spinning, and logs them at most once a second.
#[derive(Default)]
pub(crate) struct AcceptBackoff {
    pause: Duration,
    failures: u64,
    logged: Option<std::time::Instant>,
}

impl AcceptBackoff {
    /// An accept failed: log (rate-limited) and wait, 10 ms doubling to 1 s.
    pub(crate) async fn failed(&mut self, what: &str, e: &std::io::Error) {
        self.failures += 1;
        if self
            .logged
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            tracing::warn!(error = %e, failures = self.failures, listener = what,
                "accept failed; backing off");
            self.logged = Some(std::time::Instant::now());
        }
        self.pause = (self.pause * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
        tokio::time::sleep(self.pause).await;
    }

    /// An accept succeeded.
    pub(crate) fn succeeded(&mut self) {
        self.pause = Duration::ZERO;
    }
}

/// Accepts STOMP connections until `accept_stop` is cancelled. Connections
/// beyond the connection cap (`limits.max-connections`, by default derived
/// from the file-descriptor limit) get an ERROR frame and are closed.
pub(crate) async fn accept_stomp(
    listener: TcpListener,
    service: Arc<Service>,
    accept_stop: CancellationToken,
    sessions_stop: CancellationToken,
    tracker: TaskTracker,
) {
    let shared = service.core.clone();
    let limit = shared.resources.max_connections;
    let permits = Arc::new(Semaphore::new(limit));
    let mut backoff = AcceptBackoff::default();
    let mut refusals = None;
    loop {
        let accepted = tokio::select! {
            _ = accept_stop.cancelled() => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(a) => {
                backoff.succeeded();
                a
            }
            Err(e) => {
                backoff.failed("STOMP", &e).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        match permits.clone().try_acquire_owned() {
            Ok(permit) => {
                let service = service.clone();
                let stop = sessions_stop.clone();
                tracker.spawn(async move {
                    stomp::run(service, stream, peer, stop).await;
                    drop(permit);
                });
            }
            Err(_) => {
                Metrics::inc(&shared.metrics.connections_refused_total);
                if refusals
                    .is_none_or(|t: std::time::Instant| t.elapsed() >= Duration::from_secs(1))
                {
                    tracing::warn!(%peer, limit,
                        refused_total = shared.metrics.connections_refused_total.load(std::sync::atomic::Ordering::Relaxed),
                        "connection refused: limits.max-connections reached");
                    refusals = Some(std::time::Instant::now());
                }
                tracker.spawn(refuse(stream));
            }
        }
    }
    tracing::debug!("STOMP listener closed");
}

async fn refuse(mut stream: TcpStream) {
    let frame = b"ERROR\nmessage:too many connections\ncontent-type:text/plain\n\n\
the broker has reached its connection limit (limits.max-connections)\0";
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(frame).await;
        let _ = stream.shutdown().await;
    })
    .await;
}
