//! `GET /metrics`: every value a user would graph, read at scrape time from
//! where it lives (the HA status, the resources, the broker's counters, the
//! store's, the lease's, each destination's) into one
//! [`Exposition`](crate::metrics::Exposition), which writes the text.
//!
//! Durations are exported in seconds, Prometheus' base unit. The older
//! millisecond gauges (`takeover_ms`, `lease_renewal_ms`,
//! `lease_remaining_ms`) are still exported beside them, unchanged, so
//! dashboards and alerts built on them keep working.
//!
//! docs/OPERATIONS.md lists every series; a test checks the two agree.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::core::{DestinationStats, DispatchStats};
use crate::ha::Role;
use crate::metrics::{Exposition, Histogram, TAKEOVER_BUCKETS};
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
    out.labelled_gauges(
        "build_info",
        "Always 1; its label names the running version.",
        "version",
        [(env!("CARGO_PKG_VERSION").to_owned(), 1)],
    );
    process(&mut out);
    out.bare(
        "process_max_fds",
        "The file-descriptor limit (soft, after raising it to the hard one).",
        false,
        node.resources.fd_limit as f64,
    );
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
        // A broker takes over at most once in its life (a fenced master
        // exits), so the histogram holds that one takeover: summed across
        // restarts and instances by Prometheus, it is the distribution.
        let h = Histogram::seconds(TAKEOVER_BUCKETS);
        h.observe_duration(Duration::from_millis(ms));
        out.histogram(
            "takeover_seconds",
            "How long this broker's takeover took, from acquiring the lock to serving (at most one per process).",
            &h,
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
        let cap = m.service.core.config.metrics.max_destination_series;
        destinations(&mut out, &m.service.core.destination_stats().await, cap);
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
    out.counter(
        "memory_trims_total",
        "Times freed heap memory was given back to the operating system after a burst (limits.memory-trim-ms).",
        load(&memory.trims),
    );
}

fn store(out: &mut Exposition, store: &crate::store::Usage) {
    out.gauge(
        "store_bytes",
        "Bytes of live data the message store holds (the journal: live records, not its preallocated or reclaimable space; postgres: its tables).",
        store.data(),
    );
    out.gauge(
        "store_disk_bytes",
        "Bytes the message store takes on disk (the journal: its files, preallocation included), which store.max-bytes limits.",
        store.get(),
    );
    out.histogram(
        "store_sync_seconds",
        "How long each synced group took to write and make durable (the journal: write and fdatasync; postgres: the group's transaction and commit, from when it was sent).",
        &store.sync_seconds,
    );
    out.histogram(
        "store_wait_seconds",
        "How long each batch someone waits for (a SEND, ACK or COMMIT) was queued before its group went to the store: behind the group being written, and gathering.",
        &store.wait_seconds,
    );
    out.histogram(
        "store_batch_messages",
        "Batches (one per SEND, ACK or COMMIT waiting for it) made durable by each synced group: the group-commit factor.",
        &store.group_batches,
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
        "store_adds_cancelled_total",
        "Messages dispatched while being stored whose acknowledgement came before their write: neither was written (store.concurrent-dispatch).",
        load(&store.adds_cancelled),
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

/// The destination series of the `cap` deepest destinations, and the rest
/// summed into `destination="_other"` (one series more), so that a client
/// making destinations without end cannot make the scrape grow without end.
/// A destination moving into or out of the top `cap` moves its counts
/// between its own series and `_other`: rate() reads the drop as a reset.
fn destinations(out: &mut Exposition, stats: &[DestinationStats], cap: usize) {
    let depth = |s: &DispatchStats| s.ready + s.inflight + s.delayed;
    // (destination, counters, age of its oldest message in ms)
    let mut rows: Vec<(String, DispatchStats, Option<u64>)> = stats
        .iter()
        .map(|s| (s.destination.clone(), s.dispatch, s.oldest_age_ms))
        .collect();
    if rows.len() > cap {
        rows.sort_by(|a, b| depth(&b.1).cmp(&depth(&a.1)).then_with(|| a.0.cmp(&b.0)));
        let mut other = DispatchStats::default();
        let mut oldest = None;
        for (_, s, age) in rows.drain(cap..) {
            other.ready += s.ready;
            other.inflight += s.inflight;
            other.delayed += s.delayed;
            other.consumers += s.consumers;
            other.enqueued += s.enqueued;
            other.delivered += s.delivered;
            other.acked += s.acked;
            other.memory_bytes += s.memory_bytes;
            other.discarded += s.discarded;
            other.expired += s.expired;
            other.dead_lettered += s.dead_lettered;
            oldest = oldest.max(age);
        }
        rows.push(("_other".to_owned(), other, oldest));
    }
    type Gauge = (&'static str, &'static str, fn(&DispatchStats) -> u64);
    let gauges: [Gauge; 6] = [
        (
            "destination_depth",
            "Messages held: ready, in flight and delayed.",
            |s| (s.ready + s.inflight + s.delayed) as u64,
        ),
        (
            "destination_ready",
            "Messages waiting for a consumer.",
            |s| s.ready as u64,
        ),
        (
            "destination_inflight",
            "Messages delivered and not yet acknowledged.",
            |s| s.inflight as u64,
        ),
        (
            "destination_delayed",
            "Messages waiting out a redelivery delay.",
            |s| s.delayed as u64,
        ),
        ("destination_consumers", "Consumers attached.", |s| {
            s.consumers as u64
        }),
        (
            "destination_memory_bytes",
            "Bytes of message bodies the destination holds in memory.",
            |s| s.memory_bytes as u64,
        ),
    ];
    for (name, help, value) in gauges {
        out.labelled_gauges(
            name,
            help,
            "destination",
            rows.iter().map(|(d, s, _)| (d.clone(), value(s))),
        );
    }
    out.labelled_gauges_f64(
        "destination_oldest_message_age_seconds",
        "How long ago the oldest message the destination holds was sent, as far as it can tell cheaply: the first ones of each priority and those in flight whose bodies are in memory (0 when it holds none).",
        "destination",
        rows.iter().map(|(d, _, age)| {
            let ms = age.unwrap_or(0);
            (d.clone(), Duration::from_millis(ms).as_secs_f64())
        }),
    );
    let counters: [Gauge; 4] = [
        (
            "destination_enqueued_total",
            "Messages the destination took in (for a topic: published to it).",
            |s| s.enqueued,
        ),
        (
            "destination_dequeued_total",
            "Messages acknowledged by consumers (for a topic: over its subscriptions, ended ones included).",
            |s| s.acked,
        ),
        (
            "destination_expired_total",
            "Messages that expired before delivery.",
            |s| s.expired,
        ),
        (
            "destination_dead_lettered_total",
            "Messages sent on to dead-letter handling (redelivered too often, or rejected as poison).",
            |s| s.dead_lettered,
        ),
    ];
    for (name, help, value) in counters {
        out.labelled_counters(
            name,
            help,
            "destination",
            rows.iter().map(|(d, s, _)| (d.clone(), value(s))),
        );
    }
}

/// The standard `process_*` series, read from `/proc/self` (Linux; left
/// out elsewhere, or where `/proc` cannot be read).
fn process(out: &mut Exposition) {
    let Some(p) = ProcessStats::read() else {
        return;
    };
    out.bare(
        "process_cpu_seconds_total",
        "User and system CPU time spent, in seconds.",
        true,
        p.cpu_seconds,
    );
    out.bare(
        "process_resident_memory_bytes",
        "Resident memory size, in bytes.",
        false,
        p.resident_bytes as f64,
    );
    out.bare(
        "process_virtual_memory_bytes",
        "Virtual memory size, in bytes.",
        false,
        p.virtual_bytes as f64,
    );
    if let Some(fds) = p.open_fds {
        out.bare(
            "process_open_fds",
            "Open file descriptors.",
            false,
            fds as f64,
        );
    }
    if let Some(start) = p.start_time_seconds {
        out.bare(
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch, in seconds.",
            false,
            start,
        );
    }
}

/// What `/proc/self` tells of this process.
#[derive(Debug, PartialEq)]
struct ProcessStats {
    cpu_seconds: f64,
    resident_bytes: u64,
    virtual_bytes: u64,
    open_fds: Option<u64>,
    start_time_seconds: Option<f64>,
}

impl ProcessStats {
    fn read() -> Option<ProcessStats> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let boot = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| boot_time(&s));
        let mut p = ProcessStats::parse(
            &stat,
            rustix::param::clock_ticks_per_second(),
            rustix::param::page_size() as u64,
            boot,
        )?;
        p.open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as u64);
        Some(p)
    }

    /// Parses `/proc/self/stat` (proc(5)): the fields after the command
    /// name, which is in parentheses and may hold spaces or parentheses
    /// itself, hence the split at the last `)`.
    fn parse(stat: &str, ticks: u64, page: u64, boot: Option<u64>) -> Option<ProcessStats> {
        let (_, rest) = stat.rsplit_once(')')?;
        // Field 3 (state) is the first after the name.
        let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
        let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
        let ticks = ticks.max(1) as f64;
        let cpu = (field(14)? + field(15)?) as f64 / ticks;
        let start = field(22)? as f64 / ticks;
        Some(ProcessStats {
            cpu_seconds: cpu,
            virtual_bytes: field(23)?,
            resident_bytes: field(24)? * page,
            open_fds: None,
            start_time_seconds: boot.map(|b| b as f64 + start),
        })
    }
}

/// The boot time (`btime`, seconds since the epoch) in `/proc/stat`.
fn boot_time(stat: &str) -> Option<u64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_is_read_past_a_name_with_spaces_and_parentheses() {
        let stat = "4242 (a b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 1000 \
                    123456789 300 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        let p = ProcessStats::parse(stat, 100, 4096, Some(1_700_000_000)).unwrap();
        assert_eq!(
            p,
            ProcessStats {
                cpu_seconds: 3.0,
                resident_bytes: 300 * 4096,
                virtual_bytes: 123_456_789,
                open_fds: None,
                start_time_seconds: Some(1_700_000_010.0),
            }
        );
        assert_eq!(
            boot_time("cpu 1 2\nbtime 1700000000\nprocesses 5\n"),
            Some(1_700_000_000)
        );
        assert!(ProcessStats::parse("garbage", 100, 4096, None).is_none());
    }

    fn stats(d: &str, ready: usize, enqueued: u64) -> DestinationStats {
        DestinationStats {
            destination: d.to_owned(),
            kind: "queue",
            name: d.trim_start_matches("/queue/").to_owned(),
            depth: ready,
            producers: 0,
            oldest_age_ms: None,
            dispatch: DispatchStats {
                ready,
                enqueued,
                ..DispatchStats::default()
            },
        }
    }

    #[test]
    fn beyond_the_cap_the_deepest_keep_their_series_and_the_rest_are_summed() {
        let all = [
            stats("/queue/a", 1, 10),
            stats("/queue/b", 5, 20),
            stats("/queue/c", 3, 30),
            stats("/queue/d", 0, 40),
        ];
        let mut out = Exposition::default();
        destinations(&mut out, &all, 2);
        let text = out.text();
        assert!(
            text.contains("halyard_destination_depth{destination=\"/queue/b\"} 5\n"),
            "{text}"
        );
        assert!(
            text.contains("halyard_destination_depth{destination=\"/queue/c\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("halyard_destination_depth{destination=\"_other\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("halyard_destination_enqueued_total{destination=\"_other\"} 50\n"),
            "{text}"
        );
        assert!(!text.contains("/queue/a"), "{text}");
        // Within the cap, every destination has its own, and no _other.
        let mut out = Exposition::default();
        destinations(&mut out, &all, 4);
        let text = out.text();
        assert!(!text.contains("_other"), "{text}");
        assert!(
            text.contains("halyard_destination_depth{destination=\"/queue/d\"} 0\n"),
            "{text}"
        );
    }
}
