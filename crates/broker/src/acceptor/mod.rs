//! Client listeners and the protocol heads that serve their connections.
//!
//! A protocol head lives in its own folder (`stomp/`) and translates its
//! frames into calls on the broker service. It is registered once, in
//! [`HEADS`]; `[[listeners]]` in the config then name it by protocol, and
//! the broker opens its listeners only while master.

pub(crate) mod stomp;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::Metrics;
use crate::service::Service;

/// Serves one accepted connection to its end.
type Serve = fn(
    Arc<Service>,
    TcpStream,
    SocketAddr,
    CancellationToken,
) -> Pin<Box<dyn Future<Output = ()> + Send>>;

/// A protocol head, as the listeners know it.
#[derive(Clone, Copy)]
pub(crate) struct Head {
    /// The protocol's name in `[[listeners]]`.
    pub(crate) name: &'static str,
    serve: Serve,
    /// What a connection beyond the connection cap is told before it is
    /// closed, in the protocol's own terms.
    refusal: &'static [u8],
}

/// Every protocol head the broker speaks. Adding one is a line here.
const HEADS: &[Head] = &[Head {
    name: "stomp",
    serve: |service, stream, peer, stop| Box::pin(stomp::run(service, stream, peer, stop)),
    refusal: stomp::REFUSAL,
}];

/// The head for `protocol`.
pub(crate) fn head(protocol: &str) -> Option<Head> {
    HEADS.iter().find(|h| h.name == protocol).copied()
}

/// The protocols there are heads for.
pub(crate) fn protocols() -> Vec<&'static str> {
    HEADS.iter().map(|h| h.name).collect()
}

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

/// Accepts connections for `head` until `accept_stop` is cancelled.
/// Connections beyond the connection cap (`limits.max-connections`, by
/// default derived from the file-descriptor limit; shared by every
/// listener of the broker through the core's counter) get the head's
/// refusal and are closed.
pub(crate) async fn accept(
    listener: TcpListener,
    head: Head,
    service: Arc<Service>,
    accept_stop: CancellationToken,
    sessions_stop: CancellationToken,
    tracker: TaskTracker,
) {
    let shared = service.core.clone();
    let limit = shared.resources.max_connections;
    let permits = shared.connection_permits.clone();
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
                backoff.failed(head.name, &e).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        match permits.clone().try_acquire_owned() {
            Ok(permit) => {
                let service = service.clone();
                let stop = sessions_stop.clone();
                tracker.spawn(async move {
                    (head.serve)(service, stream, peer, stop).await;
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
                tracker.spawn(refuse(stream, head.refusal));
            }
        }
    }
    tracing::debug!(protocol = head.name, "listener closed");
}

async fn refuse(mut stream: TcpStream, refusal: &[u8]) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(refusal).await;
        let _ = stream.shutdown().await;
    })
    .await;
}
