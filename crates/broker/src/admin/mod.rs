//! The admin HTTP API: health, readiness, status, destinations and
//! Prometheus metrics. It is served from start-up, by masters and slaves
//! alike, so operators and load balancers can see every broker's role.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::acceptor::AcceptBackoff;

use crate::core::DestinationStats;
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
        .route("/api/destinations", get(destinations))
        .route("/metrics", get(metrics))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(
            MAX_BODY_BYTES,
        ))
        .with_state(node.clone());
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
            connections.spawn(refuse_http(stream));
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let stop = stop.clone();
        connections.spawn(async move {
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
            drop(permit);
        });
    }
    connections.close();
    let _ = tokio::time::timeout(Duration::from_secs(2), connections.wait()).await;
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
    })
}

async fn destinations(State(node): State<Arc<Node>>) -> Response {
    match node.master() {
        Some(m) => Json(m.service.core.destination_stats().await).into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not master: no destinations here\n",
        )
            .into_response(),
    }
}

fn metric(text: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    let _ = writeln!(text, "# HELP halyard_{name} {help}");
    let _ = writeln!(text, "# TYPE halyard_{name} {kind}");
    let _ = writeln!(text, "halyard_{name} {value}");
}

async fn metrics(State(node): State<Arc<Node>>) -> impl IntoResponse {
    let mut text = String::new();
    let ha = node.status();
    let _ = writeln!(
        text,
        "# HELP halyard_role The broker's master/slave role (1 for the current one)."
    );
    let _ = writeln!(text, "# TYPE halyard_role gauge");
    for role in [
        Role::Slave,
        Role::Recovering,
        Role::Master,
        Role::Fenced,
        Role::Stopped,
    ] {
        let _ = writeln!(
            text,
            "halyard_role{{role=\"{}\"}} {}",
            role.as_str(),
            u8::from(ha.role == role)
        );
    }
    metric(
        &mut text,
        "epoch",
        "gauge",
        "The master epoch this broker holds.",
        ha.epoch,
    );
    let r = &node.resources;
    for (name, help, value) in [
        (
            "fd_limit",
            "The file-descriptor limit (soft, after raising it to the hard one).",
            r.fd_limit,
        ),
        (
            "max_connections",
            "Client connections allowed at once (limits.max-connections).",
            r.max_connections as u64,
        ),
        (
            "max_http_connections",
            "Admin HTTP connections allowed at once (limits.max-http-connections).",
            r.max_http_connections as u64,
        ),
    ] {
        metric(&mut text, name, "gauge", help, value);
    }
    if let Some(t) = ha.takeover {
        metric(
            &mut text,
            "takeover_ms",
            "gauge",
            "How long the last takeover took, from acquiring the lock to serving.",
            t.lock_to_serving_ms,
        );
    }
    if let Some(m) = node.master() {
        text.push_str(&m.service.core.metrics.prometheus());
        let store = m.service.core.store.stats();
        let relaxed = Ordering::Relaxed;
        let memory = &m.service.core.memory;
        let mut counters: Vec<(&str, &str, &str, u64)> = vec![
            (
                "memory_bytes",
                "gauge",
                "Bytes of messages the broker holds in memory (queued, in flight, in transactions, awaiting receipts).",
                memory.used(),
            ),
            (
                "memory_limit_bytes",
                "gauge",
                "The broker-wide memory budget for messages (limits.memory-bytes).",
                memory.limit(),
            ),
            (
                "producers_waiting_for_memory",
                "gauge",
                "SENDs held back now because the broker is at its memory limit.",
                memory.waiting.load(relaxed),
            ),
            (
                "flow_control_timeouts_total",
                "counter",
                "SENDs refused after waiting longer than limits.flow-control-timeout-ms.",
                memory.timeouts.load(relaxed),
            ),
            (
                "store_bytes",
                "gauge",
                "Bytes the message store uses (the journal: its files).",
                store.get(),
            ),
            (
                "store_groups_total",
                "counter",
                "Groups of batches the store writer wrote.",
                store.groups.load(relaxed),
            ),
            (
                "store_syncs_total",
                "counter",
                "Groups made durable with one sync (group commit).",
                store.synced_groups.load(relaxed),
            ),
            (
                "store_synced_batches_total",
                "counter",
                "Batches confirmed after a sync (SENDs, ACKs, COMMITs that waited).",
                store.synced_batches.load(relaxed),
            ),
            (
                "store_lazy_batches_total",
                "counter",
                "Bookkeeping batches written without a sync of their own.",
                store.lazy_batches.load(relaxed),
            ),
            (
                "duplicate_ids",
                "gauge",
                "Duplicate-detection ids remembered (destinations.duplicate-window, -total, -ms).",
                store.duplicate_ids.load(relaxed),
            ),
            (
                "store_retries_total",
                "counter",
                "Writes sent again after the database connection broke (postgres store).",
                store.retries.load(relaxed),
            ),
            (
                "store_no_space_total",
                "counter",
                "Writes of new messages refused because the store's disk was short of space.",
                store.no_space.load(relaxed),
            ),
            (
                "store_corruption_total",
                "counter",
                "Missing or damaged pieces of confirmed journal data found by recovery (started with on-corruption = skip).",
                store.corruption.load(relaxed),
            ),
            (
                "store_lost_records",
                "gauge",
                "Confirmed records the last recovery found missing or damaged (as far as known).",
                store.lost_records.load(relaxed),
            ),
            (
                "store_lost_messages",
                "gauge",
                "Confirmed messages the last recovery found missing or damaged (as far as known).",
                store.lost_messages.load(relaxed),
            ),
            (
                "store_lost_bytes",
                "gauge",
                "Bytes of confirmed records the last recovery found missing or damaged.",
                store.lost_bytes.load(relaxed),
            ),
        ];
        if let Some(lease) = m.lease_stats() {
            counters.extend([
                (
                    "lease_renewals_total",
                    "counter",
                    "Successful renewals of the database lease.",
                    lease.renewals.load(relaxed),
                ),
                (
                    "lease_renewal_failures_total",
                    "counter",
                    "Lease renewals that failed or timed out (retried within the lease).",
                    lease.failures.load(relaxed),
                ),
                (
                    "lease_renewal_ms",
                    "gauge",
                    "Round trip of the last successful lease renewal.",
                    lease.last_rtt_us.load(relaxed) / 1000,
                ),
                (
                    "lease_remaining_ms",
                    "gauge",
                    "How much longer the master can prove its lease by its own clock; it fences itself at 0.",
                    lease.remaining().as_millis() as u64,
                ),
            ]);
        }
        for (name, kind, help, value) in counters {
            metric(&mut text, name, kind, help, value);
        }
        let stats = m.service.core.destination_stats().await;
        type Gauge = (&'static str, &'static str, fn(&DestinationStats) -> u64);
        let gauges: [Gauge; 3] = [
            (
                "destination_ready",
                "Messages waiting for a consumer.",
                |s| s.dispatch.ready as u64,
            ),
            (
                "destination_inflight",
                "Messages delivered and not yet acknowledged.",
                |s| s.dispatch.inflight as u64,
            ),
            ("destination_consumers", "Consumers attached.", |s| {
                s.dispatch.consumers as u64
            }),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(text, "# HELP halyard_{name} {help}");
            let _ = writeln!(text, "# TYPE halyard_{name} gauge");
            for s in &stats {
                let dest = s.destination.replace('\\', "\\\\").replace('"', "\\\"");
                let _ = writeln!(
                    text,
                    "halyard_{name}{{destination=\"{dest}\"}} {}",
                    value(s)
                );
            }
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}
