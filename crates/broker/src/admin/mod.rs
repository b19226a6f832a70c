//! The admin HTTP API: health, readiness, status, destinations and
//! Prometheus metrics. It is served from start-up, by masters and slaves
//! alike, so operators and load balancers can see every broker's role.
//! Once the broker has users it asks for them ([`guard`]).

mod api;
mod console;
mod guard;
mod metrics;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::acceptor::AcceptBackoff;

use crate::ha::{HaStatus, Role};
use crate::node::Node;

/// Largest request body accepted (no endpoint takes one yet).
const MAX_BODY_BYTES: usize = 64 * 1024;
/// Largest request head (request line and headers) buffered.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Serves the admin API until `stop`. The server is exposed to anyone who
/// can reach the port, so it is hardened like the STOMP port: connections
/// are capped (`limits.max-http-connections`; beyond it a 503), a request's
/// headers must arrive within `timeouts.http-header-ms` (also the longest
/// an idle keep-alive connection stays open), heads and bodies are limited,
/// and failed accepts back off.
pub(crate) async fn serve(listener: TcpListener, node: Arc<Node>, stop: CancellationToken) {
    let header_timeout = Duration::from_millis(node.config.timeouts.http_header_ms);
    let limit = node.resources.max_http_connections;
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/api/status", get(status))
        .route("/api/scheduled", get(scheduled))
        .route("/metrics", get(metrics::metrics))
        .merge(api::routes())
        .merge(console::routes())
        .layer(axum::middleware::from_fn_with_state(
            node.clone(),
            guard::guard,
        ))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(
            MAX_BODY_BYTES,
        ))
        .layer(cors(&node))
        .with_state(node.clone());
    // `http-tls`: the `[tls]` certificate, loaded at start (Broker::start
    // refuses to start without it).
    let tls = if node.config.http_tls {
        node.tls.clone()
    } else {
        None
    };
    let permits = Arc::new(Semaphore::new(limit));
    let connections = TaskTracker::new();
    let mut backoff = AcceptBackoff::default();
    let mut refusals: Option<Instant> = None;
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            r = listener.accept() => match r {
                Ok(a) => {
                    backoff.succeeded();
                    a
                }
                Err(e) => {
                    backoff.failed("HTTP", &e).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            if refusals.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                tracing::warn!(%peer, limit, "admin HTTP connection refused: limits.max-http-connections reached");
                refusals = Some(Instant::now());
            }
            // Over TLS a plain-text 503 would only break the handshake.
            if tls.is_none() {
                connections.spawn(refuse_http(stream));
            }
            continue;
        };
        // The peer's address, for the guard's log and login slowdown.
        let service = hyper_util::service::TowerToHyperService::new(
            app.clone().layer(axum::Extension(guard::Peer(peer))),
        );
        let stop = stop.clone();
        let tls = tls.clone();
        connections.spawn(async move {
            match tls {
                None => serve_connection(stream, service, header_timeout, peer, stop).await,
                Some(tls) => {
                    let handshake = tls.accept(stream, peer, header_timeout, "HTTPS");
                    let done = tokio::select! {
                        done = handshake => done,
                        _ = stop.cancelled() => None,
                    };
                    if let Some((stream, _)) = done {
                        serve_connection(stream, service, header_timeout, peer, stop).await;
                    }
                }
            }
            drop(permit);
        });
    }
    connections.close();
    let _ = tokio::time::timeout(Duration::from_secs(2), connections.wait()).await;
}

/// CORS for the web console of another broker of the group: a console
/// loaded from broker A polls broker B's API to follow a takeover, so B
/// allows exactly its `http-peers` origins (none by default: same-origin
/// only). Outermost, so a preflight (which carries no credentials) is
/// answered here, before the guard; the real request is guarded as usual.
fn cors(node: &Node) -> tower_http::cors::CorsLayer {
    use axum::http::{HeaderValue, Method, header};
    let origins: Vec<HeaderValue> = node
        .config
        .http_peers
        .iter()
        .filter_map(|p| crate::config::http_origin(p).ok())
        .filter_map(|o| HeaderValue::from_str(&o).ok())
        .collect();
    tower_http::cors::CorsLayer::new()
        .allow_origin(origins)
        .allow_methods([Method::GET, Method::POST, Method::DELETE])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .expose_headers([header::HeaderName::from_static("x-total-count")])
        .max_age(Duration::from_secs(600))
}

/// Serves HTTP/1.1 on one connection (plain or TLS) until it ends or
/// `stop`.
async fn serve_connection<S>(
    stream: S,
    service: hyper_util::service::TowerToHyperService<Router>,
    header_timeout: Duration,
    peer: std::net::SocketAddr,
    stop: CancellationToken,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(MAX_HEAD_BYTES);
    let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "admin HTTP connection ended");
            }
        }
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(1), conn).await;
        }
    }
}

/// Answers a connection over the cap with a 503 and closes it.
async fn refuse_http(mut stream: tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt;
    let body = "too many admin connections (limits.max-http-connections)\n";
    let reply = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(reply.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// `GET /readyz`: 200 only on a master, so load balancers send clients to
/// it; 503 with the role otherwise.
async fn readyz(State(node): State<Arc<Node>>) -> Response {
    match node.status().role {
        Role::Master => (StatusCode::OK, "ready\n").into_response(),
        role => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", role.as_str()),
        )
            .into_response(),
    }
}

/// `GET /api/status`.
#[derive(Serialize)]
struct Status {
    name: String,
    version: &'static str,
    #[serde(flatten)]
    ha: HaStatus,
    started_at_ms: u64,
    uptime_ms: u64,
    /// The STOMP listen address, while master.
    stomp: Option<String>,
    /// Every client listener open, as `protocol address` (a slave has
    /// none).
    listeners: Vec<String>,
    /// Where the store is: the data directory, or the database (its URL
    /// without the password) for the postgres store.
    #[serde(skip_serializing_if = "Option::is_none")]
    data_dir: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    database: Option<String>,
    store: String,
    connections: u64,
    destinations: usize,
    /// Descriptor limit, connection caps, memory budget.
    resources: crate::resources::Resources,
    /// Bytes of messages held in memory now, while master.
    #[serde(skip_serializing_if = "Option::is_none")]
    memory_bytes: Option<u64>,
    /// Scheduled messages waiting for a firing.
    scheduled: u64,
    /// The admin URLs of the group's other brokers (`http-peers`), which
    /// the web console also polls.
    http_peers: Vec<String>,
}

async fn status(State(node): State<Arc<Node>>) -> Json<Status> {
    let master = node.master();
    let c = &node.config;
    Json(Status {
        name: c.name.clone(),
        version: env!("CARGO_PKG_VERSION"),
        ha: node.status(),
        started_at_ms: node.started_at_ms,
        uptime_ms: node.started.elapsed().as_millis() as u64,
        stomp: master
            .as_ref()
            .and_then(|m| m.stomp_addr())
            .map(|a| a.to_string()),
        listeners: master.as_ref().map_or_else(Vec::new, |m| {
            m.listeners()
                .iter()
                .map(|(p, a)| format!("{p} {a}"))
                .collect()
        }),
        data_dir: node.site.data_dir().map(|d| d.display().to_string()),
        database: node.site.database(),
        store: format!("{:?}", c.store.kind).to_lowercase(),
        connections: master.as_ref().map_or(0, |m| {
            m.service.core.metrics.connections.load(Ordering::Relaxed)
        }),
        destinations: master
            .as_ref()
            .map_or(0, |m| m.service.core.destination_count()),
        resources: node.resources.clone(),
        memory_bytes: master.as_ref().map(|m| m.service.core.memory.used()),
        scheduled: master.as_ref().map_or(0, |m| {
            m.service
                .core
                .metrics
                .scheduled_messages
                .load(Ordering::Relaxed)
        }),
        http_peers: c.http_peers.clone(),
    })
}

/// Entries `GET /api/scheduled` lists at most (`?limit=` asks for fewer).
const SCHEDULED_SHOWN: usize = 100;

/// `GET /api/scheduled[?limit=N]`: how many scheduled messages there are,
/// the next due time, and the first N in due order.
async fn scheduled(
    State(node): State<Arc<Node>>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    let limit = query
        .as_deref()
        .unwrap_or_default()
        .split('&')
        .find_map(|kv| kv.strip_prefix("limit="))
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(SCHEDULED_SHOWN)
        .min(SCHEDULED_SHOWN);
    let listing = match node.master() {
        Some(m) => match m.service.scheduler.get() {
            Some(s) => s.list(limit).await,
            None => None,
        },
        None => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "not master: no scheduler here\n",
            )
                .into_response();
        }
    };
    match listing {
        Some(l) => Json(l).into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the scheduler has stopped\n",
        )
            .into_response(),
    }
}
