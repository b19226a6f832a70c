//! `GET /metrics`: every value a user would graph, read at scrape time from
//! where it lives (the HA status, the resources, the broker's counters, the
//! store's, the lease's, each destination's) into one
//! [`Exposition`](crate::metrics::Exposition), which writes the text.
//!
//! Durations are exported in seconds, Prometheus' base unit. The older
//! millisecond gauges (`takeover_ms`, `lease_renewal_ms`,
//! `lease_remaining_ms`) are still exported beside them, unchanged, so
//! dashboards and alerts built on them keep working.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::core::DestinationStats;
use crate::ha::Role;
use crate::metrics::Exposition;
use crate::node::Node;

/// Every role, in the order the state machine goes through them.
const ROLES: [Role; 5] = [
    Role::Slave,
    Role::Recovering,
    Role::Master,
    Role::Fenced,
    Role::Stopped,
];

pub(super) async fn metrics(State(node): State<Arc<Node>>) -> impl IntoResponse {
    let mut out = Exposition::default();
    let ha = node.status();
    out.labelled_gauges(
        "role",
        "The broker's master/slave role (1 for the current one).",
        "role",
        ROLES.map(|r| (r.as_str().to_owned(), u64::from(ha.role == r))),
    );
    out.gauge("epoch", "The master epoch this broker holds.", ha.epoch);
    let r = &node.resources;
    out.gauge(
        "fd_limit",
        "The file-descriptor limit (soft, after raising it to the hard one).",
        r.fd_limit,
    );
    out.gauge(
        "max_connections",
        "Client connections allowed at once (limits.max-connections).",
        r.max_connections as u64,
    );
    out.gauge(
        "max_http_connections",
        "Admin HTTP connections allowed at once (limits.max-http-connections).",
        r.max_http_connections as u64,
    );
    if let Some(tls) = &node.tls {
        out.counter(
            "tls_handshake_failures_total",
            "TLS handshakes that failed or timed out (client listeners and HTTPS admin).",
            tls.handshake_failures.load(Ordering::Relaxed),
        );
        out.counter(
            "tls_reloads_total",
            "Successful reloads of the [tls] certificate (SIGHUP).",
            tls.reloads.load(Ordering::Relaxed),
        );
        out.counter(
            "tls_reload_failures_total",
            "Reloads of the [tls] certificate that failed (the old one was kept).",
            tls.reload_failures.load(Ordering::Relaxed),
        );
    }
    if let Some(t) = ha.takeover {
        let ms = t.lock_to_serving_ms;
        out.gauge_f64(
            "takeover_seconds",
            "How long the last takeover took, from acquiring the lock to serving.",
            ms as f64 / 1000.0,
        );
        out.gauge(
            "takeover_ms",
            "halyard_takeover_seconds in milliseconds (the older name, kept for existing dashboards).",
            ms,
        );
    }
    out.counter(
        "admin_login_failures_total",
        "Admin API requests refused for an unknown user or a wrong password.",
        node.security
            .admin_login_failures_total
            .load(Ordering::Relaxed),
    );
    out.counter(
        "admin_forbidden_total",
        "Admin API requests refused because the user's role does not allow them.",
        node.security.admin_forbidden_total.load(Ordering::Relaxed),
    );
    if let Some(m) = node.master() {
        m.service.core.metrics.export(&mut out);
        memory(&mut out, &m.service.core.memory);
        store(&mut out, m.service.core.store.stats());
        if let Some(lease) = m.lease_stats() {
            self::lease(&mut out, &lease);
        }
        destinations(&mut out, &m.service.core.destination_stats().await);
    }
    (
        [(header::CONTENT_TYPE, Exposition::CONTENT_TYPE)],
        out.text(),
    )
}

/// A counter's or gauge's value now.
fn load(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

fn memory(out: &mut Exposition, memory: &crate::memory::MemoryBudget) {
    out.gauge(
        "memory_bytes",
        "Bytes of messages the broker holds in memory (queued, in flight, in transactions, awaiting receipts).",
        memory.used(),
    );
    out.gauge(
        "memory_limit_bytes",
        "The broker-wide memory budget for messages (limits.memory-bytes).",
        memory.limit(),
    );
    out.gauge(
        "producers_waiting_for_memory",
        "SENDs held back now because the broker is at its memory limit.",
        load(&memory.waiting),
    );
    out.counter(
        "flow_control_timeouts_total",
        "SENDs refused after waiting longer than limits.flow-control-timeout-ms.",
        load(&memory.timeouts),
    );
}

fn store(out: &mut Exposition, store: &crate::store::Usage) {
    out.gauge(
        "store_bytes",
        "Bytes the message store uses (the journal: its files).",
        store.get(),
    );
    out.counter(
        "store_groups_total",
        "Groups of batches the store writer wrote.",
        load(&store.groups),
    );
    out.counter(
        "store_syncs_total",
        "Groups made durable with one sync (group commit).",
        load(&store.synced_groups),
    );
    out.counter(
        "store_synced_batches_total",
        "Batches confirmed after a sync (SENDs, ACKs, COMMITs that waited).",
        load(&store.synced_batches),
    );
    out.counter(
        "store_lazy_batches_total",
        "Bookkeeping batches written without a sync of their own.",
        load(&store.lazy_batches),
    );
    out.gauge(
        "duplicate_ids",
        "Duplicate-detection ids remembered (destinations.duplicate-window, -total, -ms).",
        load(&store.duplicate_ids),
    );
    out.counter(
        "store_retries_total",
        "Writes sent again after the database connection broke (postgres store).",
        load(&store.retries),
    );
    out.counter(
        "store_no_space_total",
        "Writes of new messages refused because the store's disk was short of space.",
        load(&store.no_space),
    );
    out.counter(
        "store_corruption_total",
        "Missing or damaged pieces of confirmed journal data found by recovery (started with on-corruption = skip).",
        load(&store.corruption),
    );
    out.gauge(
        "store_lost_records",
        "Confirmed records the last recovery found missing or damaged (as far as known).",
        load(&store.lost_records),
    );
    out.gauge(
        "store_lost_messages",
        "Confirmed messages the last recovery found missing or damaged (as far as known).",
        load(&store.lost_messages),
    );
    out.gauge(
        "store_lost_bytes",
        "Bytes of confirmed records the last recovery found missing or damaged.",
        load(&store.lost_bytes),
    );
}

fn lease(out: &mut Exposition, lease: &crate::ha::LeaseStats) {
    out.counter(
        "lease_renewals_total",
        "Successful renewals of the database lease.",
        load(&lease.renewals),
    );
    out.counter(
        "lease_renewal_failures_total",
        "Lease renewals that failed or timed out (retried within the lease).",
        load(&lease.failures),
    );
    let rtt = Duration::from_micros(load(&lease.last_rtt_us));
    out.gauge_f64(
        "lease_renewal_seconds",
        "Round trip of the last successful lease renewal.",
        rtt.as_secs_f64(),
    );
    out.gauge(
        "lease_renewal_ms",
        "halyard_lease_renewal_seconds in whole milliseconds (the older name, kept for existing dashboards).",
        rtt.as_millis() as u64,
    );
    let remaining = lease.remaining();
    out.gauge_f64(
        "lease_remaining_seconds",
        "How much longer the master can prove its lease by its own clock; it fences itself at 0.",
        remaining.as_secs_f64(),
    );
    out.gauge(
        "lease_remaining_ms",
        "halyard_lease_remaining_seconds in whole milliseconds (the older name, kept for existing dashboards).",
        remaining.as_millis() as u64,
    );
}

fn destinations(out: &mut Exposition, stats: &[DestinationStats]) {
    type Gauge = (&'static str, &'static str, fn(&DestinationStats) -> usize);
    let gauges: [Gauge; 4] = [
        (
            "destination_ready",
            "Messages waiting for a consumer.",
            |s| s.dispatch.ready,
        ),
        (
            "destination_inflight",
            "Messages delivered and not yet acknowledged.",
            |s| s.dispatch.inflight,
        ),
        (
            "destination_delayed",
            "Messages waiting out a redelivery delay.",
            |s| s.dispatch.delayed,
        ),
        ("destination_consumers", "Consumers attached.", |s| {
            s.dispatch.consumers
        }),
    ];
    for (name, help, value) in gauges {
        out.labelled_gauges(
            name,
            help,
            "destination",
            stats
                .iter()
                .map(|s| (s.destination.clone(), value(s) as u64)),
        );
    }
}
