//! Client listeners and the protocol heads that serve their connections.
//!
//! A protocol head lives in its own folder (`stomp/`, `ws/`) and translates its
//! frames into calls on the broker service. It is registered once, in
//! [`HEADS`]; `[[listeners]]` in the config then name it by protocol, and
//! the broker opens its listeners only while master.

mod auto;
mod openwire;
pub(crate) mod stomp;
mod ws;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::TLS_SUFFIX;
use crate::metrics::Metrics;
use crate::service::Service;
use crate::tls::Tls;

/// A connection's read half (a socket's, a TLS stream's; in tests, an
/// in-memory pipe's).
pub(crate) type Reader = Box<dyn AsyncRead + Send + Unpin>;
/// A connection's write half.
pub(crate) type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// An accepted connection, past its TLS handshake if it has one: what a
/// protocol head serves.
pub(crate) struct Transport {
    pub(crate) read: Reader,
    pub(crate) write: Writer,
    pub(crate) peer: SocketAddr,
    /// The verified client certificate's subject (`CN=app1,O=Acme`), when
    /// the client presented one over TLS.
    pub(crate) tls_subject: Option<String>,
}

impl Transport {
    /// A plain TCP connection.
    fn plain(stream: TcpStream, peer: SocketAddr) -> Transport {
        let (read, write) = stream.into_split();
        Transport {
            read: Box::new(read),
            write: Box::new(write),
            peer,
            tls_subject: None,
        }
    }
}

/// Serves one accepted connection to its end.
type Serve =
    fn(Arc<Service>, Transport, CancellationToken) -> Pin<Box<dyn Future<Output = ()> + Send>>;

/// A protocol head, as the listeners know it.
#[derive(Clone, Copy)]
pub(crate) struct Head {
    /// The protocol's name in `[[listeners]]`.
    pub(crate) name: &'static str,
    /// Its name over TLS (`name` + `+ssl`).
    pub(crate) tls_name: &'static str,
    serve: Serve,
    /// What a connection beyond the connection cap is told before it is
    /// closed, in the protocol's own terms.
    refusal: &'static [u8],
    /// What a connection beyond its address's cap
    /// (`limits.max-connections-per-address`) is told.
    address_refusal: &'static [u8],
}

/// Every protocol head the broker speaks. Adding one is a line here.
const HEADS: &[Head] = &[
    Head {
        name: "stomp",
        tls_name: "stomp+ssl",
        serve: |service, transport, stop| Box::pin(stomp::run(service, transport, stop)),
        refusal: stomp::REFUSAL,
        address_refusal: stomp::ADDRESS_REFUSAL,
    },
    Head {
        name: "ws",
        tls_name: "ws+ssl",
        serve: |service, transport, stop| Box::pin(ws::run(service, transport, stop)),
        refusal: ws::REFUSAL,
        address_refusal: ws::ADDRESS_REFUSAL,
    },
    Head {
        name: "openwire",
        tls_name: "openwire+ssl",
        serve: |service, transport, stop| Box::pin(openwire::run(service, transport, stop)),
        refusal: openwire::REFUSAL,
        address_refusal: openwire::ADDRESS_REFUSAL,
    },
    Head {
        name: "auto",
        tls_name: "auto+ssl",
        serve: |service, transport, stop| Box::pin(auto::run(service, transport, stop)),
        refusal: auto::REFUSAL,
        address_refusal: auto::REFUSAL,
    },
];

/// The head for `protocol`, and whether it is spoken over TLS
/// (`stomp+ssl`).
pub(crate) fn head(protocol: &str) -> Option<(Head, bool)> {
    let (name, tls) = match protocol.strip_suffix(TLS_SUFFIX) {
        Some(name) => (name, true),
        None => (protocol, false),
    };
    HEADS.iter().find(|h| h.name == name).map(|h| (*h, tls))
}

/// The protocols there are heads for, plain and over TLS.
pub(crate) fn protocols() -> Vec<&'static str> {
    HEADS.iter().flat_map(|h| [h.name, h.tls_name]).collect()
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
///
/// With `tls`, each connection's handshake runs in its own task (a slow or
/// silent peer never holds up the accept loop), within
/// `timeouts.connect-ms`; one that fails is counted and closed.
pub(crate) async fn accept(
    listener: TcpListener,
    head: Head,
    tls: Option<Arc<Tls>>,
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
    let name = if tls.is_some() {
        head.tls_name
    } else {
        head.name
    };
    let handshake_timeout = Duration::from_millis(service.core.config.timeouts.connect_ms);
    let per_address = shared.config.limits.max_connections_per_address;
    let mut address_refusals = None;
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
                backoff.failed(name, &e).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let send_buffer = shared.config.limits.socket_send_buffer_bytes;
        if send_buffer > 0
            && let Err(e) = rustix::net::sockopt::set_socket_send_buffer_size(&stream, send_buffer)
        {
            tracing::debug!(%peer, error = %e, "cannot set the socket's send buffer size");
        }
        // Counted before the handshake, so that one address cannot hold
        // more even for the seconds a CONNECT may take to come.
        let Some(address_slot) = service.per_address.take(peer.ip(), per_address) else {
            Metrics::inc(&shared.metrics.connections_refused_per_address_total);
            if address_refusals
                .is_none_or(|t: std::time::Instant| t.elapsed() >= Duration::from_secs(1))
            {
                tracing::warn!(%peer, limit = per_address,
                    "connection refused: limits.max-connections-per-address reached");
                address_refusals = Some(std::time::Instant::now());
            }
            // Over TLS, as for the connection cap: just close.
            if tls.is_none() {
                tracker.spawn(refuse(stream, head.address_refusal));
            }
            continue;
        };
        match permits.clone().try_acquire_owned() {
            Ok(permit) => {
                let service = service.clone();
                let stop = sessions_stop.clone();
                let tls = tls.clone();
                tracker.spawn(async move {
                    let transport = match tls {
                        None => Transport::plain(stream, peer),
                        Some(tls) => {
                            // Boxed: inline, the handshake's state would
                            // sit in every connection's task, TLS or not,
                            // for the connection's whole life.
                            let handshake =
                                Box::pin(tls.accept(stream, peer, handshake_timeout, name));
                            let done = tokio::select! {
                                done = handshake => done,
                                _ = stop.cancelled() => None,
                            };
                            let Some((stream, tls_subject)) = done else {
                                return;
                            };
                            let (read, write) = tokio::io::split(stream);
                            Transport {
                                read: Box::new(read),
                                write: Box::new(write),
                                peer,
                                tls_subject,
                            }
                        }
                    };
                    (head.serve)(service, transport, stop).await;
                    drop(permit);
                    drop(address_slot);
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
                // Over TLS the refusal would be read as a broken
                // handshake anyway: just close.
                if tls.is_none() {
                    tracker.spawn(refuse(stream, head.refusal));
                }
            }
        }
    }
    tracing::debug!(protocol = name, "listener closed");
}

async fn refuse(mut stream: TcpStream, refusal: &[u8]) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(refusal).await;
        let _ = stream.shutdown().await;
    })
    .await;
}
