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

use crate::broker::Shared;
use crate::metrics::Metrics;

/// Accepts STOMP connections until `accept_stop` is cancelled. Connections
/// beyond `limits.max-connections` get an ERROR frame and are closed.
pub(crate) async fn accept_stomp(
    listener: TcpListener,
    shared: Arc<Shared>,
    accept_stop: CancellationToken,
    sessions_stop: CancellationToken,
    tracker: TaskTracker,
) {
    let permits = Arc::new(Semaphore::new(shared.config.limits.max_connections));
    loop {
        let accepted = tokio::select! {
            _ = accept_stop.cancelled() => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Typically EMFILE: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        match permits.clone().try_acquire_owned() {
            Ok(permit) => {
                let shared = shared.clone();
                let stop = sessions_stop.clone();
                tracker.spawn(async move {
                    stomp::run(shared, stream, peer, stop).await;
                    drop(permit);
                });
            }
            Err(_) => {
                Metrics::inc(&shared.metrics.connections_refused_total);
                tracing::warn!(%peer, limit = shared.config.limits.max_connections,
                    "connection refused: limits.max-connections reached");
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
