//! The admin HTTP API: health, readiness, status, destinations and
//! Prometheus metrics. Later: the REST management API and web console.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::broker::Shared;
use crate::core::DestinationStats;

#[derive(Clone)]
struct Admin {
    shared: Arc<Shared>,
    stomp_addr: SocketAddr,
}

pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    stomp_addr: SocketAddr,
    stop: CancellationToken,
) {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(|| async { "ready\n" }))
        .route("/api/status", get(status))
        .route("/api/destinations", get(destinations))
        .route("/metrics", get(metrics))
        .with_state(Admin { shared, stomp_addr });
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
    {
        tracing::error!(error = %e, "admin HTTP server failed");
    }
}

/// `GET /api/status`.
#[derive(Serialize)]
struct Status {
    name: String,
    version: &'static str,
    role: &'static str,
    started_at_ms: u64,
    uptime_ms: u64,
    stomp: String,
    data_dir: String,
    store: String,
    connections: u64,
    destinations: usize,
}

async fn status(State(a): State<Admin>) -> Json<Status> {
    let s = &a.shared;
    Json(Status {
        name: s.config.name.clone(),
        version: env!("CARGO_PKG_VERSION"),
        role: "master",
        started_at_ms: s.started_at_ms,
        uptime_ms: s.started.elapsed().as_millis() as u64,
        stomp: a.stomp_addr.to_string(),
        data_dir: s.config.data_dir.display().to_string(),
        store: format!("{:?}", s.config.store).to_lowercase(),
        connections: s
            .metrics
            .connections
            .load(std::sync::atomic::Ordering::Relaxed),
        destinations: s.destination_handles().len(),
    })
}

async fn destinations(State(a): State<Admin>) -> Json<Vec<DestinationStats>> {
    Json(a.shared.destination_stats().await)
}

async fn metrics(State(a): State<Admin>) -> impl IntoResponse {
    use std::fmt::Write as _;
    let mut text = a.shared.metrics.prometheus();
    let store = a.shared.store.stats();
    let relaxed = std::sync::atomic::Ordering::Relaxed;
    let counters: [(&str, &str, &str, u64); 5] = [
        ("store_bytes", "gauge", "Bytes the message store uses (the journal: its files).", store.get()),
        ("store_groups_total", "counter", "Groups of batches the store writer wrote.", store.groups.load(relaxed)),
        ("store_syncs_total", "counter", "Groups made durable with one sync (group commit).", store.synced_groups.load(relaxed)),
        ("store_synced_batches_total", "counter", "Batches confirmed after a sync (SENDs, ACKs, COMMITs that waited).", store.synced_batches.load(relaxed)),
        ("store_lazy_batches_total", "counter", "Bookkeeping batches written without a sync of their own.", store.lazy_batches.load(relaxed)),
    ];
    for (name, kind, help, value) in counters {
        let _ = writeln!(text, "# HELP halyard_{name} {help}");
        let _ = writeln!(text, "# TYPE halyard_{name} {kind}");
        let _ = writeln!(text, "halyard_{name} {value}");
    }
    let stats = a.shared.destination_stats().await;
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
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}
