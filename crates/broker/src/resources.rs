//! What the machine lets the broker hold: file descriptors and memory.
//!
//! Running out of either must cost a client its request, never the broker
//! its mastership. So at start the broker raises its soft file-descriptor
//! limit to the hard one, keeps back what the store and the broker itself
//! need, and derives its connection caps from what is left; and it derives
//! its memory budget from the machine (or the container) it runs on. The
//! figures are logged at start and shown in `/api/status`.

use serde::Serialize;

use crate::config::BrokerConfig;
use crate::store::open::Site;

/// Descriptors kept back for the broker itself: stdio, the runtime's
/// epoll and wake-up descriptors, listeners, the lock file, directory
/// syncs, segment files being created.
const BASE_FDS: u64 = 64;
/// Most client connections `"auto"` allows, however many descriptors
/// there are (each connection also costs memory).
const MAX_AUTO_CONNECTIONS: u64 = 10_000;
/// Admin HTTP connections `"auto"` allows, at least and at most.
const HTTP_AUTO: (u64, u64) = (16, 256);
/// `limits.memory-bytes = "auto"`: the smaller of this and a quarter of
/// the memory available.
const MAX_AUTO_MEMORY: u64 = 1 << 30;

/// The broker's share of the machine, worked out at start.
#[derive(Debug, Clone, Serialize)]
pub struct Resources {
    /// The soft file-descriptor limit, after raising it.
    pub fd_limit: u64,
    /// What the soft limit was before.
    pub fd_limit_before: u64,
    /// Descriptors kept back for the store and the broker itself.
    pub fds_reserved: u64,
    /// Client (STOMP) connections allowed at once.
    pub max_connections: usize,
    /// Admin HTTP connections allowed at once.
    pub max_http_connections: usize,
    /// Memory of the machine or container, in bytes (0 if unknown).
    pub memory_available: u64,
    /// The broker-wide budget for message bytes (`limits.memory-bytes`).
    pub memory_bytes: u64,
}

/// Raises the soft file-descriptor limit to the hard one; returns (before,
/// after).
fn raise_fd_limit() -> (u64, u64) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    // "Unlimited" is not a real figure for descriptors; the kernel caps
    // them anyway (fs.nr_open, 1 Mi by default).
    let before = limit.current.unwrap_or(1 << 20);
    let hard = limit.maximum.unwrap_or(1 << 20);
    if hard <= before {
        return (before, before);
    }
    let mut raised = limit;
    raised.current = Some(hard);
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => (before, hard),
        Err(e) => {
            tracing::warn!(error = %e, soft = before, hard,
                "cannot raise the file-descriptor limit; keeping the soft limit");
            (before, before)
        }
    }
}

/// Memory of the machine, or of the cgroup the broker runs in if that is
/// smaller (a container's limit).
fn memory_available() -> u64 {
    let info = rustix::system::sysinfo();
    let physical = u64::from(info.mem_unit).saturating_mul(info.totalram as u64);
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    match cgroup {
        Some(c) if c > 0 && (physical == 0 || c < physical) => c,
        _ => physical,
    }
}

/// Raises the descriptor limit and works out the caps (`"auto"` settings)
/// for `config`.
pub(crate) fn plan(config: &BrokerConfig, site: &Site) -> Resources {
    let (before, fd_limit) = raise_fd_limit();
    let reserved = BASE_FDS + site.descriptors(&config.store_settings(), fd_limit);
    let for_connections = fd_limit.saturating_sub(reserved).max(2);
    let http_auto = (for_connections / 16).clamp(HTTP_AUTO.0, HTTP_AUTO.1);
    let http_auto = http_auto.min(for_connections / 2).max(1);
    let limits = &config.limits;
    let max_http_connections = limits.max_http_connections.or(http_auto as usize);
    let stomp_auto = for_connections
        .saturating_sub(max_http_connections as u64)
        .clamp(1, MAX_AUTO_CONNECTIONS);
    let max_connections = limits.max_connections.or(stomp_auto as usize);
    let memory_available = memory_available();
    let memory_auto = match memory_available {
        0 => MAX_AUTO_MEMORY,
        m => (m / 4).min(MAX_AUTO_MEMORY),
    };
    let memory_bytes = limits.memory_bytes.or(memory_auto);
    let plan = Resources {
        fd_limit,
        fd_limit_before: before,
        fds_reserved: reserved,
        max_connections,
        max_http_connections,
        memory_available,
        memory_bytes,
    };
    let total = (max_connections + max_http_connections) as u64;
    if total > fd_limit.saturating_sub(reserved) {
        tracing::warn!(
            max_connections,
            max_http_connections,
            fd_limit,
            fds_reserved = reserved,
            "limits.max-connections and limits.max-http-connections exceed what the file-descriptor \
             limit leaves room for: connections may fail with \"too many open files\" \
             (raise the limit, e.g. LimitNOFILE= in a systemd unit, or use \"auto\")"
        );
    }
    tracing::info!(
        fd_limit,
        fd_limit_before = before,
        fds_reserved = reserved,
        max_connections,
        max_http_connections,
        memory_available,
        memory_bytes,
        "resources: file descriptors and memory"
    );
    plan
}
