//! Broker configuration: a TOML file, with every top-level setting also
//! reachable from the command line and `HALYARD_*` variables (the CLI does
//! that layering; this module owns the schema, the defaults and validation).
//!
//! Unknown keys are errors, so a typo in a config file is reported instead of
//! silently ignored.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod openwire;
mod policies;
mod security;
pub(crate) use security::check_users;

pub use crate::store::open::StoreKind;
pub use openwire::OpenWireConfig;
pub use policies::{
    DeadLetter, DeadLetterStrategy, DestinationPolicy, Policies, PolicyEntry, Redelivery,
};
pub use security::{Anonymous, AuthorizationEntry, Rights, SecurityConfig, UserEntry};

/// Everything a broker needs to start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct BrokerConfig {
    /// Broker name, shown in logs, CONNECTED `server` and message ids.
    pub name: String,
    /// Data directory (store files, later the HA lock).
    pub data_dir: PathBuf,
    /// STOMP listen address: shorthand for the STOMP listener's address
    /// (see [`BrokerConfig::listeners`]).
    pub stomp: String,
    /// STOMP over WebSocket listen address: shorthand for the `ws`
    /// listener's address; empty for none.
    pub ws: String,
    /// OpenWire (ActiveMQ's JMS clients) listen address: shorthand for the
    /// `openwire` listener's address; empty for none.
    pub openwire: String,
    /// Client listeners, `[[listeners]] protocol = "stomp", address =
    /// "0.0.0.0:61613"`. Empty: a STOMP listener at `stomp`, a WebSocket
    /// one at `ws` and an OpenWire one at `openwire`.
    pub listeners: Vec<ListenerConfig>,
    /// Admin HTTP listen address.
    pub http: String,
    /// Serve the admin API over HTTPS with the `[tls]` certificate
    /// (`http-tls = true`); plain HTTP is then refused on that port.
    pub http_tls: bool,
    /// Admin URLs of the other brokers of the master/slave group
    /// (`http-peers = ["http://broker-b:8161"]`). The web console polls
    /// them to follow a takeover, so they are the origins this admin API
    /// allows cross-origin requests from (CORS) and may connect to (its
    /// Content-Security-Policy); `/api/status` lists them.
    pub http_peers: Vec<String>,
    /// `[tls]`: the certificate for `+ssl` listeners and the HTTPS admin
    /// API, and which client certificates are asked for (docs/TLS.md).
    pub tls: TlsConfig,
    /// Which store keeps persistent messages, and how much it may hold.
    pub store: StoreConfig,
    /// The journal store's settings.
    pub journal: crate::store::journal::JournalConfig,
    /// Limits that protect the broker from its peers.
    pub limits: LimitsConfig,
    /// Connection-level timeouts.
    pub timeouts: TimeoutsConfig,
    /// STOMP heart-beat policy.
    pub heartbeat: HeartbeatConfig,
    /// Redelivery, dead-lettering and expiry.
    pub destinations: DestinationsConfig,
    /// Master/slave on a shared data directory.
    pub ha: HaConfig,
    /// Client identities.
    pub clients: ClientsConfig,
    /// JMS message selectors.
    pub selectors: SelectorsConfig,
    /// Scheduled delivery (`AMQ_SCHEDULED_*`).
    pub scheduler: SchedulerConfig,
    /// Per-destination policies (`[[policies]]`, ActiveMQ's `policyEntry`):
    /// see [`Policies`] for which entry a destination gets.
    pub policies: Vec<PolicyEntry>,
    /// Users, anonymous access and per-destination rights.
    pub security: SecurityConfig,
    /// `[openwire-options]`: the OpenWire head's wire format offered and
    /// the peers it announces (`openwire` itself is its listen address).
    pub openwire_options: OpenWireConfig,
    /// `[metrics]`: what `/metrics` exports (docs/OPERATIONS.md).
    pub metrics: MetricsConfig,
}

/// `[metrics]`: bounds on what `/metrics` exports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Destinations that get their own `destination="..."` series at most.
    /// Every series costs Prometheus memory for as long as it is kept, and
    /// destinations are made by clients, so their number is not ours to
    /// bound: beyond this many, the deepest destinations keep their series
    /// and the rest are summed into `destination="_other"`.
    pub max_destination_series: usize,
}

impl Default for MetricsConfig {
    fn default() -> MetricsConfig {
        MetricsConfig {
            max_destination_series: 1000,
        }
    }
}

/// `[selectors]`: how message selectors are read (docs/SELECTORS.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct SelectorsConfig {
    /// Compare a string property with a number (or a boolean) by
    /// converting it, as ActiveMQ's STOMP does: every STOMP header is a
    /// string, so `price > 10` would otherwise never match a STOMP message.
    pub convert_string_expressions: bool,
    /// Longest selector accepted, in bytes.
    pub max_length: usize,
}

impl Default for SelectorsConfig {
    fn default() -> SelectorsConfig {
        SelectorsConfig {
            convert_string_expressions: true,
            max_length: halyard_selector::DEFAULT_MAX_LEN,
        }
    }
}

/// `[scheduler]`: scheduled delivery, as ActiveMQ's scheduler
/// (`AMQ_SCHEDULED_DELAY`, `_PERIOD`, `_REPEAT`, `_CRON`). On by default:
/// ActiveMQ needs `schedulerSupport="true"`; Halyard does not, since
/// delivering a delayed message at once is never what its sender asked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct SchedulerConfig {
    /// Off: the `AMQ_SCHEDULED_*` properties are ordinary properties and
    /// the message is delivered at once (ActiveMQ without scheduler
    /// support).
    pub enabled: bool,
    /// Scheduled messages held at most; a SEND beyond it is refused.
    pub max_messages: usize,
    /// Largest `AMQ_SCHEDULED_REPEAT` accepted (ActiveMQ: 1000), so that
    /// no client makes the broker repeat a message without end.
    pub max_repeat: u32,
    /// The time zone cron expressions are read in: `local` (as ActiveMQ,
    /// the JVM's default zone) or `utc`.
    pub time_zone: TimeZone,
    /// Bytes of scheduled messages' bodies kept in memory; beyond it a
    /// stored message keeps only its index entry and its body is read back
    /// from the store when it fires.
    pub memory_bytes: u64,
}

/// The zone cron expressions are read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TimeZone {
    /// The system's local time zone.
    Local,
    /// UTC.
    Utc,
}

impl Default for SchedulerConfig {
    fn default() -> SchedulerConfig {
        SchedulerConfig {
            enabled: true,
            max_messages: 1_000_000,
            max_repeat: 1000,
            time_zone: TimeZone::Local,
            memory_bytes: 64 * 1024 * 1024,
        }
    }
}

/// `[[listeners]]`: one client listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ListenerConfig {
    /// The protocol spoken on it (`stomp`, `ws`, `openwire`; `+ssl` for
    /// TLS).
    pub protocol: String,
    /// `host:port` to listen on.
    pub address: String,
}

/// `[tls]`: the broker's certificate and what it asks of clients' (PEM
/// files, re-read on SIGHUP; docs/TLS.md).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct TlsConfig {
    /// The certificate chain, leaf first (PEM).
    pub cert_file: Option<PathBuf>,
    /// The certificate's private key (PEM: PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub key_file: Option<PathBuf>,
    /// CA certificates client certificates are verified against (a PEM
    /// bundle); needed for `client-auth = "want"` or `"need"`.
    pub client_ca_file: Option<PathBuf>,
    /// Whether clients are asked for a certificate (ActiveMQ's
    /// `wantClientAuth` / `needClientAuth`).
    pub client_auth: ClientAuth,
    /// The oldest TLS version accepted: `"1.2"` (the default) or `"1.3"`.
    pub min_version: TlsVersion,
}

/// `tls.client-auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientAuth {
    /// No client certificate is asked for.
    #[default]
    None,
    /// A client certificate is asked for and verified if given; clients
    /// without one are still served (`wantClientAuth`).
    Want,
    /// A verified client certificate is required (`needClientAuth`).
    Need,
}

/// `tls.min-version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3.
    #[default]
    #[serde(rename = "1.2")]
    V1_2,
    /// TLS 1.3 only.
    #[serde(rename = "1.3")]
    V1_3,
}

/// The listener protocol suffix that puts TLS under a protocol
/// (`stomp+ssl`, as ActiveMQ's transport connectors name it).
pub const TLS_SUFFIX: &str = "+ssl";

/// `[clients]`: client identities.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct ClientsConfig {
    /// A CONNECT with a `client-id` another connection holds is refused
    /// (the default, as ActiveMQ); with this, it takes the id over and the
    /// older connection is closed (ActiveMQ's `allowLinkStealing`) — for
    /// clients that reconnect before the broker notices their old
    /// connection died.
    pub link_stealing: bool,
}

impl Default for BrokerConfig {
    fn default() -> BrokerConfig {
        BrokerConfig {
            name: "halyard".to_owned(),
            data_dir: PathBuf::from("./data"),
            stomp: "127.0.0.1:61613".to_owned(),
            ws: "127.0.0.1:61614".to_owned(),
            openwire: "127.0.0.1:61616".to_owned(),
            listeners: Vec::new(),
            http: "127.0.0.1:8161".to_owned(),
            http_tls: false,
            http_peers: Vec::new(),
            tls: TlsConfig::default(),
            store: StoreConfig::default(),
            journal: Default::default(),
            limits: LimitsConfig::default(),
            timeouts: TimeoutsConfig::default(),
            heartbeat: HeartbeatConfig::default(),
            destinations: DestinationsConfig::default(),
            ha: HaConfig::default(),
            clients: ClientsConfig::default(),
            selectors: SelectorsConfig::default(),
            scheduler: SchedulerConfig::default(),
            policies: Vec::new(),
            security: SecurityConfig::default(),
            openwire_options: OpenWireConfig::default(),
            metrics: MetricsConfig::default(),
        }
    }
}

/// `[ha]`: master/slave on a shared data directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct HaConfig {
    /// How a slave waits for the lock: 0 blocks on it (woken the moment
    /// the master dies); N > 0 tries every N ms instead, for file systems
    /// whose locks cannot block.
    pub lock_poll_ms: u64,
    /// How often the master checks that the lock file is still its own
    /// (not removed, replaced, or taken by a newer epoch).
    pub lock_keepalive_ms: u64,
    /// Client URLs of the other brokers of this master/slave group (e.g.
    /// `stomp://broker-b:61613`), announced to clients in the CONNECTED
    /// frame's `peers` header so a failover client that knew only one
    /// broker finds the others (ActiveMQ's `updateClusterClients`).
    pub peers: Vec<String>,
    /// With the `postgres` store: how long the master's lease in the
    /// database lasts. The master renews it every third of this and stops
    /// serving if it cannot for nine tenths of it; a slave takes over once
    /// it has expired in database time (at once if the master's database
    /// session is gone).
    pub lease_ms: u64,
}

impl Default for HaConfig {
    fn default() -> HaConfig {
        HaConfig {
            lock_poll_ms: 0,
            lock_keepalive_ms: 1_000,
            peers: Vec::new(),
            lease_ms: 10_000,
        }
    }
}

/// `[store]`: which store, and its limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct StoreConfig {
    /// The implementation.
    pub kind: StoreKind,
    /// Most bytes the store may use (the journal: its files on disk).
    pub max_bytes: u64,
    /// What a persistent SEND gets when the store is full: an ERROR
    /// (`fail`), or a wait until space is freed (`wait`, ActiveMQ's producer
    /// flow control).
    pub when_full: crate::store::WhenFull,
    /// The database of the `postgres` store: `postgres://user:pass@host:5432/db`
    /// (or a `key=value` connection string).
    pub url: String,
    /// Connections the `postgres` store uses to read message bodies back
    /// (deep queues), besides the writer's and the lease's.
    pub readers: usize,
    /// How long a broker starting waits for a `postgres` database it cannot
    /// reach before it gives up and exits; 0: for as long as it takes (as a
    /// slave waits for the lease), so that a group can start before its
    /// database.
    pub start_timeout_ms: u64,
    /// How long the store's writer, having confirmed a group, polls for
    /// the next batch before it sleeps, in microseconds (0: it sleeps at
    /// once). A producer that waits for each receipt sends its next
    /// message within this; catching it saves a wake-up of the writer's
    /// thread. The writer polls only while the gaps it sees are this short.
    pub writer_spin_us: u64,
    /// `postgres`: most groups the writer has at the database at once (1:
    /// one at a time). A group is sent on the writer's connection while the
    /// one before it commits, so the database need not sit idle for a
    /// round trip between two commits; the receipts still go out in order.
    /// More pays across a network (a database on another machine), less
    /// where the database shares the broker's CPUs (each group is a commit
    /// of its own).
    pub groups_in_flight: usize,
    /// `postgres`: how long, in microseconds, a group waits for as many
    /// producers as the last group answered while the group ahead of it
    /// is still at the database (0: it leaves at once). It leaves as soon
    /// as they are in or the group ahead is done, so the database is never
    /// kept idle; only larger groups come of it. Matters only with
    /// `groups-in-flight` above 1.
    pub group_wait_us: u64,
    /// How long a connection whose one pending request waits for the store
    /// (a producer awaiting each receipt) polls for the confirmation before
    /// its task sleeps, in microseconds (0: it sleeps at once). Saves the
    /// wake-up of a runtime thread between the sync and the receipt. A
    /// connection polls only while no other request is waited for, and
    /// only while its requests are confirmed within this.
    pub confirm_spin_us: u64,
    /// Whether a persistent message sent to queues only is dispatched to
    /// their consumers as soon as the store's writer has checked it for
    /// duplicates, while its write is under way, rather than once it is
    /// durable (ActiveMQ's `concurrentStoreAndDispatchQueues`, which
    /// KahaDB enables by default). An acknowledgement that comes before
    /// the write cancels it: neither the message nor its removal is
    /// written. The producer's receipt still waits for the write, or for
    /// the consumer's acknowledgement that made it unnecessary.
    pub concurrent_dispatch: bool,
}

impl Default for StoreConfig {
    fn default() -> StoreConfig {
        StoreConfig {
            kind: StoreKind::Journal,
            max_bytes: 100 * 1024 * 1024 * 1024,
            when_full: crate::store::WhenFull::Fail,
            url: String::new(),
            readers: 4,
            start_timeout_ms: 0,
            writer_spin_us: 200,
            groups_in_flight: 2,
            group_wait_us: 400,
            confirm_spin_us: 1000,
            concurrent_dispatch: true,
        }
    }
}

/// A setting the broker works out for itself (`"auto"`, written as that
/// string), or a number the operator chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Auto<T> {
    /// Derived at start from the machine (and logged).
    #[default]
    Auto,
    /// As configured.
    Set(T),
}

impl<T: Copy> Auto<T> {
    /// The configured value, or `derived` for `"auto"`.
    pub fn or(self, derived: T) -> T {
        match self {
            Auto::Auto => derived,
            Auto::Set(v) => v,
        }
    }
}

impl<T: Serialize> Serialize for Auto<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Auto::Auto => s.serialize_str("auto"),
            Auto::Set(v) => v.serialize(s),
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Auto<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Auto<T>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw<T> {
            Text(String),
            Value(T),
        }
        match Raw::<T>::deserialize(d)
            .map_err(|_| serde::de::Error::custom("expected \"auto\" or a non-negative number"))?
        {
            Raw::Text(t) if t == "auto" => Ok(Auto::Auto),
            Raw::Text(t) => Err(serde::de::Error::custom(format!(
                "invalid value '{t}': expected \"auto\" or a number"
            ))),
            Raw::Value(v) => Ok(Auto::Set(v)),
        }
    }
}

/// The largest `limits.max-body-bytes` allowed: a stored message is one
/// journal record, or one PostgreSQL value, and neither may pass 1 GiB.
pub const MAX_BODY_BYTES: usize = 512 * 1024 * 1024;

/// Limits on what peers may make the broker hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Concurrent client connections; more are refused with an ERROR.
    /// `"auto"`: what the file-descriptor limit leaves room for (at most
    /// 10,000), worked out at start.
    pub max_connections: Auto<usize>,
    /// Concurrent admin HTTP connections; more get a 503. `"auto"`: a
    /// share of the file-descriptor limit (16 to 256).
    pub max_http_connections: Auto<usize>,
    /// Client connections one user may hold at once, on every listener
    /// together; more are refused with an ERROR. 0: no limit (the
    /// default: ActiveMQ has none, and an application's pool of
    /// connections under one user is normal).
    pub max_connections_per_user: usize,
    /// Client connections from one IP address at once; more are refused
    /// with an ERROR before the protocol handshake. 0: no limit (the
    /// default: many clients behind one NAT or proxy share an address, and
    /// `max-connections` already bounds the total).
    pub max_connections_per_address: usize,
    /// Messages one connection may send per second; faster SENDs are held
    /// back (the connection is not read meanwhile), not refused. 0: no
    /// limit. Bursts of up to one second's worth pass unheld.
    pub max_send_rate_per_connection: u32,
    /// Subscriptions one connection may hold.
    pub max_subscriptions_per_connection: usize,
    /// Open transactions one connection may hold.
    pub max_transactions_per_connection: usize,
    /// SENDs, ACKs and NACKs one transaction may hold.
    pub max_transaction_frames: usize,
    /// Body bytes of the SENDs one transaction may hold (they stay in
    /// memory until COMMIT); beyond it the SEND gets an ERROR. 128 MiB by
    /// default: above `max-body-bytes`, so that a transaction may carry a
    /// message of the largest size.
    pub max_transaction_bytes: usize,
    /// Destinations the broker will create.
    pub max_destinations: usize,
    /// Longest command or header line, in bytes.
    pub max_header_line_bytes: usize,
    /// Most headers in one frame.
    pub max_headers: usize,
    /// Longest header section of one frame, in bytes.
    pub max_header_bytes: usize,
    /// Longest frame body, in bytes: 100 MiB by default, ActiveMQ's
    /// `maxFrameSize`.
    pub max_body_bytes: usize,
    /// Frames one connection may have in flight (sent, not yet fully
    /// processed); the broker stops reading from a connection at this depth.
    pub max_inflight_frames: usize,
    /// Bytes one connection may have in flight: its pending messages'
    /// bodies and what delivering each holds meanwhile (1-3 KiB).
    pub max_inflight_bytes: usize,
    /// Bytes of undelivered message bodies one destination (or one topic
    /// subscription) holds in memory before producers are made to wait.
    pub destination_memory_bytes: usize,
    /// Largest prefetch a subscription may ask for.
    pub max_prefetch: u32,
    /// How long a producer held back by flow control (the memory budget,
    /// a full destination, a full store in `when-full = "wait"`) waits
    /// before its SEND gets an ERROR; 0 waits for as long as it takes
    /// (ActiveMQ's default; `sendFailIfNoSpaceAfterTimeout` otherwise).
    pub flow_control_timeout_ms: u64,
    /// Bytes of messages the whole broker holds in memory — queued,
    /// in flight to consumers, in open transactions, waiting for receipts —
    /// before producers are held back. `"auto"`: the smaller of 1 GiB and a
    /// quarter of the machine's (or container's) memory.
    pub memory_bytes: Auto<u64>,
    /// The kernel send buffer of each client connection's socket, in bytes
    /// (`SO_SNDBUF`; Linux doubles it for its bookkeeping); 0 leaves it to
    /// the kernel, which grows it up to `net.ipv4.tcp_wmem`'s maximum (4
    /// MiB by default). What waits there for a slow consumer is beyond the
    /// broker's flow control: with a topic's subscribers saturated it is
    /// most of their end-to-end latency. ActiveMQ sets 64 KiB
    /// (`socketBufferSize`). A small buffer bounds the throughput of a
    /// single connection over a long round trip (buffer / RTT).
    pub socket_send_buffer_bytes: usize,
    /// How often (ms) the broker checks whether to give freed heap memory
    /// back to the operating system; 0: never. glibc's allocator keeps
    /// what a burst freed (a drained queue's bodies) mapped, so the
    /// process's resident memory stayed at its peak for good (issue #19).
    pub memory_trim_ms: u64,
    /// Give freed memory back once the messages held (the memory budget's
    /// use) have fallen this many bytes below their highest since the last
    /// time and stopped falling: after a burst, not during steady load (each time costs page
    /// faults when the memory is used again).
    pub memory_trim_after_bytes: u64,
}

impl Default for LimitsConfig {
    fn default() -> LimitsConfig {
        LimitsConfig {
            max_connections: Auto::Auto,
            max_http_connections: Auto::Auto,
            max_connections_per_user: 0,
            max_connections_per_address: 0,
            max_send_rate_per_connection: 0,
            max_subscriptions_per_connection: 1_000,
            max_transactions_per_connection: 100,
            max_transaction_frames: 100_000,
            max_transaction_bytes: 128 * 1024 * 1024,
            max_destinations: 100_000,
            max_header_line_bytes: 10 * 1024,
            max_headers: 1_000,
            max_header_bytes: 256 * 1024,
            max_body_bytes: 100 * 1024 * 1024,
            max_inflight_frames: 4_096,
            max_inflight_bytes: 1024 * 1024,
            destination_memory_bytes: 32 * 1024 * 1024,
            max_prefetch: 65_535,
            memory_bytes: Auto::Auto,
            flow_control_timeout_ms: 0,
            socket_send_buffer_bytes: 64 * 1024,
            memory_trim_ms: 250,
            memory_trim_after_bytes: 8 * 1024 * 1024,
        }
    }
}

/// Connection timeouts, in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct TimeoutsConfig {
    /// Time a new connection has to send CONNECT.
    pub connect_ms: u64,
    /// Time a frame may take to arrive once its first byte has (defends
    /// against peers that send part of a frame and stall).
    pub frame_ms: u64,
    /// Time a graceful shutdown waits for connections to finish in-flight
    /// work before closing them anyway.
    pub shutdown_ms: u64,
    /// Time an admin HTTP client has to send a request's headers (and an
    /// idle keep-alive connection stays open).
    pub http_header_ms: u64,
}

impl Default for TimeoutsConfig {
    fn default() -> TimeoutsConfig {
        TimeoutsConfig {
            connect_ms: 10_000,
            frame_ms: 30_000,
            shutdown_ms: 5_000,
            http_header_ms: 10_000,
        }
    }
}

/// Heart-beat policy. The broker offers `min-send-ms,min-receive-ms` in
/// CONNECTED; per the specification each direction then runs at the larger
/// of what one side can do and what the other wants, so clients get what
/// they ask for unless it is faster than these floors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct HeartbeatConfig {
    /// Fastest the broker sends heart-beats, in ms (0: never).
    pub min_send_ms: u64,
    /// Fastest the broker wants to receive them, in ms (0: never).
    pub min_receive_ms: u64,
    /// How many receive intervals of silence the broker tolerates before it
    /// closes a connection.
    pub grace_factor: f64,
}

impl Default for HeartbeatConfig {
    fn default() -> HeartbeatConfig {
        HeartbeatConfig {
            min_send_ms: 1_000,
            min_receive_ms: 1_000,
            grace_factor: 2.0,
        }
    }
}

/// Delivery policy shared by all destinations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct DestinationsConfig {
    /// Prefetch for subscriptions that do not ask for one.
    pub default_prefetch: u32,
    /// Redeliveries before a message is dead-lettered (ActiveMQ's
    /// `maximumRedeliveries`): a message is delivered at most this + 1 times.
    pub max_redeliveries: u32,
    /// Delay before the first redelivery of a message that went back
    /// (NACK, rollback), in ms (ActiveMQ's `initialRedeliveryDelay`).
    pub initial_redelivery_delay: u64,
    /// Delay before each later redelivery, in ms (ActiveMQ's
    /// `redeliveryDelay`); the base of the backoff.
    pub redelivery_delay: u64,
    /// Whether each delay is the previous one times `backoff-multiplier`.
    pub use_exponential_backoff: bool,
    /// The backoff's factor (ActiveMQ's `backOffMultiplier`, 5).
    pub backoff_multiplier: f64,
    /// The longest a backed-off delay grows to, in ms; -1 or 0: no bound
    /// (ActiveMQ's `maximumRedeliveryDelay`).
    pub maximum_redelivery_delay: i64,
    /// Where dead messages go: `individual` (`<dead-letter-prefix><name>`),
    /// `shared` (`dead-letter-queue`) or `discard`.
    pub dead_letter_strategy: DeadLetterStrategy,
    /// The shared dead-letter queue (ActiveMQ's `ActiveMQ.DLQ`).
    pub dead_letter_queue: String,
    /// Prefix of dead-letter queue names: `/queue/<prefix><name>`.
    pub dead_letter_prefix: String,
    /// Whether expired messages go to the dead-letter queue (otherwise they
    /// are dropped).
    pub dead_letter_expired: bool,
    /// Whether non-persistent messages go to the dead-letter queue
    /// (otherwise they are dropped). True by default, unlike ActiveMQ's
    /// `processNonPersistent`, because Halyard always did.
    pub dead_letter_non_persistent: bool,
    /// How often destinations sweep out expired messages, in ms.
    pub expiry_check_ms: u64,
    /// Duplicate-detection ids (`_AMQ_DUPL_ID`) remembered per queue, in
    /// the store, so a resend of a stored message after a failover is
    /// confirmed without being enqueued twice; 0 turns detection off.
    /// Each remembered id costs about 200 bytes of memory.
    pub duplicate_window: usize,
    /// Duplicate-detection ids remembered in all, over every queue: the
    /// oldest anywhere are forgotten first (so many queues cannot make the
    /// memory grow without bound).
    pub duplicate_window_total: usize,
    /// Longest a duplicate-detection id is remembered, in ms (a failover
    /// client resends within seconds of reconnecting); 0: no age limit.
    /// The age of ids recovered from a DupIds record counts from the
    /// broker's start.
    pub duplicate_window_ms: u64,
    /// What a topic subscriber that falls behind costs: itself
    /// (`drop-oldest`), or everyone (`flow-control`).
    pub slow_subscriber: SlowSubscriber,
    /// With `drop-oldest`: messages a topic subscription may have waiting
    /// beyond its prefetch (or `limits.destination-memory-bytes` of them)
    /// before the oldest (of the lowest priority) are dropped for it
    /// (ActiveMQ's pending message limit). Messages a durable subscription
    /// keeps in the store are never dropped.
    pub subscriber_pending_limit: usize,
    /// Bytes of message bodies a topic subscription may have waiting
    /// beyond its prefetch. With `flow-control` the topic's producers wait
    /// once any subscription has this much (ActiveMQ's per-destination
    /// memory limit, which throttles a topic's producer long before
    /// `limits.destination-memory-bytes` would): the backlog, and so the
    /// end-to-end latency of a saturated topic, stays at what the slowest
    /// subscriber reads in a few milliseconds instead of seconds. With
    /// `drop-oldest` the oldest are dropped beyond it (as beyond
    /// `subscriber-pending-limit`). Capped by
    /// `limits.destination-memory-bytes`.
    pub subscriber_backlog_bytes: usize,
    /// A subscriber whose backlog keeps overflowing for this long is
    /// disconnected (ActiveMQ's slow consumer abort); 0: never.
    pub slow_subscriber_abort_ms: u64,
    /// A queue or topic with no messages, no consumers and no traffic for
    /// this long is removed (made again when next used; ActiveMQ's
    /// `gcInactiveDestinations`); while the destination table is nine
    /// tenths full, idle ones go at once. 0: never.
    pub gc_inactive_ms: u64,
    /// Message groups whose owner a queue remembers (ActiveMQ's message
    /// group cache, 1024 by default); beyond it the least recently used
    /// group is forgotten and may move to another consumer.
    pub max_groups: usize,
    /// Topics that are virtual topics (ActiveMQ's `VirtualTopic.>`): a
    /// message sent to one is also enqueued into every consumer queue of it
    /// that exists. Empty: no virtual topics.
    pub virtual_topics: String,
    /// The prefix naming a virtual topic's consumer queues (ActiveMQ's
    /// `Consumer.*.`): the queue `Consumer.A.VirtualTopic.Orders` is group
    /// A's copy of topic `VirtualTopic.Orders`. Ends with `.`.
    pub virtual_topic_consumers: String,
}

impl Default for DestinationsConfig {
    fn default() -> DestinationsConfig {
        DestinationsConfig {
            default_prefetch: 1_000,
            max_redeliveries: 6,
            initial_redelivery_delay: 0,
            redelivery_delay: 0,
            use_exponential_backoff: false,
            backoff_multiplier: 5.0,
            maximum_redelivery_delay: -1,
            dead_letter_strategy: DeadLetterStrategy::Individual,
            dead_letter_queue: "ActiveMQ.DLQ".to_owned(),
            dead_letter_prefix: "DLQ.".to_owned(),
            dead_letter_expired: false,
            dead_letter_non_persistent: true,
            expiry_check_ms: 5_000,
            duplicate_window: 2_000,
            duplicate_window_total: 100_000,
            duplicate_window_ms: 3_600_000,
            slow_subscriber: SlowSubscriber::DropOldest,
            subscriber_pending_limit: 1_000,
            subscriber_backlog_bytes: 1024 * 1024,
            slow_subscriber_abort_ms: 0,
            gc_inactive_ms: 60_000,
            max_groups: 1_024,
            virtual_topics: "VirtualTopic.>".to_owned(),
            virtual_topic_consumers: "Consumer.*.".to_owned(),
        }
    }
}

/// What happens when a topic subscriber cannot keep up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SlowSubscriber {
    /// Its backlog is bounded: the oldest messages it has not received are
    /// dropped for it (and it is told so), and nobody else slows down.
    DropOldest,
    /// Producers to the topic wait until it catches up (producer flow
    /// control): nothing is dropped, and everyone goes at its pace.
    FlowControl,
}

/// What every environment variable naming a setting starts with.
const ENV_PREFIX: &str = "HALYARD_";

/// Every setting, with its default: the schema environment variables are
/// checked against and listed from.
fn known_settings() -> toml::Table {
    let mut known = toml::Table::try_from(BrokerConfig::default()).unwrap_or_default();
    // Settings that are unset by default are missing from the defaults'
    // table; a variable may still set them.
    for (section, keys) in UNSET_BY_DEFAULT {
        if let Some(t) = known.get_mut(*section).and_then(toml::Value::as_table_mut) {
            for key in *keys {
                t.insert((*key).to_owned(), toml::Value::String(String::new()));
            }
        }
    }
    known
}

/// Settings with no default value (absent from a serialized default).
const UNSET_BY_DEFAULT: &[(&str, &[&str])] = &[
    ("security", &["anonymous", "users-file"]),
    ("tls", &["cert-file", "key-file", "client-ca-file"]),
];

impl BrokerConfig {
    /// Every setting's environment variable with its default as the
    /// variable would spell it (a string as is, anything else as a TOML
    /// value; empty for a setting unset by default), sorted. Derived from
    /// the schema (a serialized default config), so a new setting is
    /// listed without anyone writing it down: `halyard broker --print-env`.
    pub fn env_vars() -> Vec<(String, String)> {
        fn walk(prefix: &str, table: &toml::Table, out: &mut Vec<(String, String)>) {
            for (key, value) in table {
                let name = format!("{prefix}{}", key.to_ascii_uppercase().replace('-', "_"));
                match value {
                    toml::Value::Table(t) => walk(&format!("{name}__"), t, out),
                    toml::Value::String(s) => out.push((name, s.clone())),
                    other => out.push((name, other.to_string())),
                }
            }
        }
        let mut out = Vec::new();
        walk(ENV_PREFIX, &known_settings(), &mut out);
        out.sort();
        out
    }
}

/// Sets the setting environment variable `var` names to `value` in `table`.
fn apply_env(
    table: &mut toml::Table,
    known: &toml::Table,
    var: &str,
    value: &str,
) -> Result<(), ConfigError> {
    let err = |message: String| ConfigError::Env {
        var: var.to_owned(),
        message,
    };
    let path: Vec<String> = var[ENV_PREFIX.len()..]
        .split("__")
        .map(|p| p.to_ascii_lowercase().replace('_', "-"))
        .collect();
    // The setting must exist, with a value of the kind given.
    let mut at = known;
    let mut table = table;
    for (i, key) in path.iter().enumerate() {
        let Some(default) = at.get(key) else {
            return Err(err(format!(
                "no setting '{}' (see docs/CONFIGURATION.md)",
                path.join(".")
            )));
        };
        if i + 1 == path.len() {
            if default.is_table() {
                return Err(err(format!(
                    "'{}' is a section, not a setting",
                    path.join(".")
                )));
            }
            // A number where the default is "auto" is one of the two forms.
            let either = default.as_str() == Some("auto");
            let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .filter(|v| v.same_type(default) || either)
                .unwrap_or_else(|| toml::Value::String(value.to_owned()));
            table.insert(key.clone(), parsed);
            return Ok(());
        }
        let (Some(next_known), entry) = (
            default.as_table(),
            table
                .entry(key.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new())),
        ) else {
            return Err(err(format!("'{key}' is a setting, not a section")));
        };
        let Some(next) = entry.as_table_mut() else {
            return Err(err(format!("'{key}' is not a section in the config file")));
        };
        at = next_known;
        table = next;
    }
    Err(err("names no setting".into()))
}

/// The toml crate's message as it writes it: for an error in a file, over
/// several lines — where, the line itself with a caret under the mistake,
/// then what is wrong — which is what an operator needs to fix it.
fn parse_message(e: &toml::de::Error) -> String {
    e.to_string().trim_end().to_owned()
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column and (for a mistake
        /// in the file) the line with a caret under it: several lines.
        message: String,
    },
    /// A value is out of range.
    #[error("invalid setting {key}: {message}")]
    Invalid {
        /// The setting, in config-file spelling.
        key: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// A `HALYARD_*` environment variable names no setting, or its value
    /// does not fit the setting.
    #[error("invalid environment variable {var}: {message}")]
    Env {
        /// The variable.
        var: String,
        /// What is wrong with it.
        message: String,
    },
    /// `store.url` is not a database URL the postgres store can use.
    #[error("invalid setting store.url: not a valid database URL: {0}")]
    DatabaseUrl(#[source] crate::store::postgres::DatabaseUrlError),
    /// A `[[policies]]` entry cannot be used.
    #[error("invalid policies[{index}] (the [[policies]] entry number {index}, from 0): {message}")]
    Policy {
        /// Its place among the entries, from 0.
        index: usize,
        /// What is wrong with it.
        message: String,
    },
    /// An entry of `ha.peers` is not a URL clients can be handed.
    #[error("invalid setting ha.peers: {0}")]
    PeerUrl(#[source] PeerUrlError),
}

/// An `ha.peers` entry that is not `stomp://HOST:PORT` (or `tcp://`,
/// `ssl://`, `stomp+ssl://`: TLS clients learn only TLS peers).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{url}' {problem} (expected stomp://HOST:PORT or ssl://HOST:PORT)")]
pub struct PeerUrlError {
    /// The entry as given.
    pub url: String,
    /// What is wrong with it.
    pub problem: PeerUrlProblem,
}

/// What is wrong with an `ha.peers` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerUrlProblem {
    /// Neither `stomp://`, `tcp://`, `ssl://` nor `stomp+ssl://`.
    #[error("has no stomp://, tcp://, ssl:// or stomp+ssl:// scheme")]
    NoScheme,
    /// A character that would break the comma-separated `peers` header or
    /// make it more than an address (`,`, `?`, `/`, `@`, spaces, controls).
    #[error("contains characters a peer URL cannot have")]
    BadCharacters,
    /// No `:PORT`.
    #[error("has no port")]
    NoPort,
    /// Nothing before `:PORT`.
    #[error("has no host")]
    NoHost,
    /// A port that is not 1–65535.
    #[error("has an invalid port")]
    BadPort,
}

impl BrokerConfig {
    /// Reads and validates a TOML config file.
    pub fn from_file(path: &Path) -> Result<BrokerConfig, ConfigError> {
        let config = BrokerConfig::read_file(path)?;
        config.validate()?;
        Ok(config)
    }

    /// Reads a TOML config file without validating it, for a caller that
    /// applies overrides (command-line flags) and then calls
    /// [`validate`](Self::validate): a setting the file leaves to a flag
    /// (say `store.url` beside `kind = "postgres"`) is not an error.
    pub fn read_file(path: &Path) -> Result<BrokerConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        BrokerConfig::parse(&text, path)
    }

    /// Reads the file at `path` (if any) and applies the settings given as
    /// environment variables in `env` over it: `HALYARD_` followed by the
    /// setting's path, sections joined by a double underscore, in capitals
    /// with `_` for `-` — `HALYARD_LIMITS__MAX_BODY_BYTES` is
    /// `limits.max-body-bytes`, `HALYARD_JOURNAL__SYNC` is `journal.sync`.
    /// A variable with `__` that names no setting is an error; one without
    /// is a setting only if it names a top-level one (`HALYARD_LISTENERS`).
    /// A value is read as a TOML value (`1000`, `true`, `["a", "b"]`), or
    /// as a string if it is not one. Variables in `skip` are someone
    /// else's (the command line's own, like `HALYARD_STORE`). Not
    /// validated: the caller applies its flags first.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        skip: &[&str],
    ) -> Result<BrokerConfig, ConfigError> {
        let (text, shown) = match path {
            Some(p) => (
                std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_owned(),
                    source,
                })?,
                p.to_owned(),
            ),
            None => (String::new(), PathBuf::from("<defaults>")),
        };
        let mut table: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: shown.clone(),
            message: parse_message(&e),
        })?;
        let known = known_settings();
        // A setting in a section always has `__` in its variable; without
        // one only a top-level setting counts (other `HALYARD_*` variables
        // belong to other tools, tests among them).
        let top_level = |k: &str| {
            known
                .get(&k[ENV_PREFIX.len()..].to_ascii_lowercase().replace('_', "-"))
                .is_some_and(|v| !v.is_table())
        };
        let mut vars: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| {
                k.starts_with(ENV_PREFIX)
                    && !skip.contains(&k.as_str())
                    && (k.contains("__") || top_level(k))
            })
            .collect();
        vars.sort();
        for (var, value) in vars {
            apply_env(&mut table, &known, &var, &value)?;
        }
        table.try_into().map_err(|e: toml::de::Error| {
            // A table has no positions: if the file alone is wrong, say so
            // from its text, with the line and a caret under the value.
            let message = match toml::from_str::<BrokerConfig>(&text) {
                Err(in_file) => parse_message(&in_file),
                Ok(_) => format!("{} (set by a HALYARD_* variable)", parse_message(&e)),
            };
            ConfigError::Parse {
                path: shown,
                message,
            }
        })
    }

    /// Parses and validates TOML text.
    pub fn from_toml(text: &str) -> Result<BrokerConfig, ConfigError> {
        let config = BrokerConfig::parse(text, Path::new("<string>"))?;
        config.validate()?;
        Ok(config)
    }

    fn parse(text: &str, path: &Path) -> Result<BrokerConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: parse_message(&e),
        })
    }

    /// Checks ranges and relations between settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn positive(key: &'static str, v: usize) -> Result<(), ConfigError> {
            if v == 0 {
                return Err(ConfigError::Invalid {
                    key,
                    message: "must be greater than 0".into(),
                });
            }
            Ok(())
        }
        if self.name.trim().is_empty() || self.name.chars().any(|c| c.is_control()) {
            return Err(ConfigError::Invalid {
                key: "name",
                message: "must be non-empty and printable".into(),
            });
        }
        for peer in &self.http_peers {
            http_origin(peer).map_err(|message| ConfigError::Invalid {
                key: "http-peers",
                message,
            })?;
        }
        let l = &self.limits;
        if let Auto::Set(n) = l.max_connections {
            positive("limits.max-connections", n)?;
        }
        if let Auto::Set(n) = l.max_http_connections {
            positive("limits.max-http-connections", n)?;
        }
        positive(
            "limits.max-subscriptions-per-connection",
            l.max_subscriptions_per_connection,
        )?;
        positive(
            "limits.max-transactions-per-connection",
            l.max_transactions_per_connection,
        )?;
        positive("limits.max-transaction-frames", l.max_transaction_frames)?;
        positive("limits.max-transaction-bytes", l.max_transaction_bytes)?;
        positive("limits.max-destinations", l.max_destinations)?;
        positive("limits.max-header-line-bytes", l.max_header_line_bytes)?;
        positive("limits.max-headers", l.max_headers)?;
        positive("limits.max-header-bytes", l.max_header_bytes)?;
        positive("limits.max-body-bytes", l.max_body_bytes)?;
        if l.max_body_bytes > MAX_BODY_BYTES {
            return Err(ConfigError::Invalid {
                key: "limits.max-body-bytes",
                message: format!(
                    "must be at most {MAX_BODY_BYTES} (512 MiB): a stored message is one journal \
                     record or one PostgreSQL value, of at most 1 GiB"
                ),
            });
        }
        positive("limits.max-inflight-frames", l.max_inflight_frames)?;
        positive("limits.max-inflight-bytes", l.max_inflight_bytes)?;
        positive(
            "limits.memory-trim-after-bytes",
            l.memory_trim_after_bytes as usize,
        )?;
        positive(
            "limits.destination-memory-bytes",
            l.destination_memory_bytes,
        )?;
        positive("limits.max-prefetch", l.max_prefetch as usize)?;
        if let Auto::Set(n) = l.memory_bytes
            && n < 1024 * 1024
        {
            return Err(ConfigError::Invalid {
                key: "limits.memory-bytes",
                message: "must be at least 1048576 (1 MiB) or \"auto\"".into(),
            });
        }
        if l.max_header_bytes < l.max_header_line_bytes {
            return Err(ConfigError::Invalid {
                key: "limits.max-header-bytes",
                message: "must be at least limits.max-header-line-bytes".into(),
            });
        }
        let d = &self.destinations;
        if d.default_prefetch == 0 || d.default_prefetch > l.max_prefetch {
            return Err(ConfigError::Invalid {
                key: "destinations.default-prefetch",
                message: format!(
                    "must be between 1 and limits.max-prefetch ({})",
                    l.max_prefetch
                ),
            });
        }
        if d.dead_letter_prefix.is_empty() || d.dead_letter_prefix.contains('/') {
            return Err(ConfigError::Invalid {
                key: "destinations.dead-letter-prefix",
                message: "must be non-empty and contain no '/'".into(),
            });
        }
        positive("destinations.expiry-check-ms", d.expiry_check_ms as usize)?;
        policies::validate(d, &self.policies)?;
        for (index, e) in self.policies.iter().enumerate() {
            if let Some(n) = e.default_prefetch
                && n > l.max_prefetch
            {
                return Err(ConfigError::Policy {
                    index,
                    message: format!(
                        "default-prefetch {n} is above limits.max-prefetch ({})",
                        l.max_prefetch
                    ),
                });
            }
        }
        positive("destinations.max-groups", d.max_groups)?;
        if !d.virtual_topics.is_empty()
            && let Err(e) = crate::model::NamePattern::parse(&d.virtual_topics)
        {
            return Err(ConfigError::Invalid {
                key: "destinations.virtual-topics",
                message: e.to_string(),
            });
        }
        if !d.virtual_topic_consumers.ends_with('.')
            || crate::model::NamePattern::parse(d.virtual_topic_consumers.trim_end_matches('.'))
                .is_err()
        {
            return Err(ConfigError::Invalid {
                key: "destinations.virtual-topic-consumers",
                message:
                    "must be a destination name prefix ending with '.', such as \"Consumer.*.\""
                        .into(),
            });
        }
        positive(
            "destinations.subscriber-pending-limit",
            d.subscriber_pending_limit,
        )?;
        positive(
            "destinations.subscriber-backlog-bytes",
            d.subscriber_backlog_bytes,
        )?;
        positive("timeouts.connect-ms", self.timeouts.connect_ms as usize)?;
        positive("timeouts.frame-ms", self.timeouts.frame_ms as usize)?;
        positive(
            "timeouts.http-header-ms",
            self.timeouts.http_header_ms as usize,
        )?;
        let j = &self.journal;
        if !(4096..=(1u64 << 31)).contains(&j.segment_bytes) {
            return Err(ConfigError::Invalid {
                key: "journal.segment-bytes",
                message: "must be between 4096 and 2147483648".into(),
            });
        }
        if !(j.compact_below > 0.0 && j.compact_below <= 1.0) {
            return Err(ConfigError::Invalid {
                key: "journal.compact-below",
                message: "must be a fraction above 0 and at most 1".into(),
            });
        }
        positive("journal.compact-read-bytes", j.compact_read_bytes)?;
        positive("store.max-bytes", self.store.max_bytes as usize)?;
        // The store's polls and waits, in µs: polling longer than a slow
        // sync takes only burns a core.
        for (key, us) in [
            ("store.writer-spin-us", self.store.writer_spin_us),
            ("store.confirm-spin-us", self.store.confirm_spin_us),
            ("store.group-wait-us", self.store.group_wait_us),
        ] {
            if us > 10_000 {
                return Err(ConfigError::Invalid {
                    key,
                    message: "must be at most 10000 (10 ms)".into(),
                });
            }
        }
        if !(1..=16).contains(&self.store.groups_in_flight) {
            return Err(ConfigError::Invalid {
                key: "store.groups-in-flight",
                message: "must be from 1 (one group at a time) to 16".into(),
            });
        }
        positive("ha.lock-keepalive-ms", self.ha.lock_keepalive_ms as usize)?;
        if !(300..=3_600_000).contains(&self.ha.lease_ms) {
            return Err(ConfigError::Invalid {
                key: "ha.lease-ms",
                message: "must be between 300 and 3600000".into(),
            });
        }
        if self.store.kind.uses_database() {
            if self.store.url.is_empty() {
                return Err(ConfigError::Invalid {
                    key: "store.url",
                    message: "the postgres store needs a database URL (postgres://user:password@host:5432/database)".into(),
                });
            }
            crate::store::postgres::check_url(&self.store.url).map_err(ConfigError::DatabaseUrl)?;
        }
        positive("store.readers", self.store.readers)?;
        for p in &self.ha.peers {
            check_peer_url(p).map_err(ConfigError::PeerUrl)?;
        }
        if d.duplicate_window > 0 && d.duplicate_window_total == 0 {
            return Err(ConfigError::Invalid {
                key: "destinations.duplicate-window-total",
                message: "must be greater than 0 while duplicate detection is on".into(),
            });
        }
        if d.duplicate_window > 1_000_000 {
            return Err(ConfigError::Invalid {
                key: "destinations.duplicate-window",
                message: "must be at most 1000000".into(),
            });
        }
        self.validate_tls()?;
        self.openwire_options.validate()?;
        if !(self.heartbeat.grace_factor >= 1.0 && self.heartbeat.grace_factor <= 100.0) {
            return Err(ConfigError::Invalid {
                key: "heartbeat.grace-factor",
                message: "must be between 1.0 and 100.0".into(),
            });
        }
        self.security.validate()?;
        self.check_exposure()
    }

    /// Refuses a broker that anyone on the network could use without
    /// credentials: a listener (client or admin) on a non-loopback address
    /// while there are no users and anonymous access is on — unless the
    /// operator said so with `security.allow-anonymous-network`.
    fn check_exposure(&self) -> Result<(), ConfigError> {
        let sec = &self.security;
        let users = sec.all_users()?;
        if !users.is_empty()
            || sec.anonymous(false) == Anonymous::None
            || sec.allow_anonymous_network
        {
            return Ok(());
        }
        let exposed = self
            .listeners()
            .into_iter()
            .map(|l| l.address)
            .chain(std::iter::once(self.http.clone()))
            .find(|a| !is_loopback_address(a));
        match exposed {
            None => Ok(()),
            Some(address) => Err(ConfigError::Invalid {
                key: "security",
                message: format!(
                    "refusing to listen on {address}, a non-loopback address, with no users and \
                     anonymous access ({}): anyone who can reach it could read, send and delete \
                     every message. Add users ([[security.users]], hashes from `halyard passwd`; \
                     see docs/SECURITY.md), or listen on 127.0.0.1, or if this network is \
                     trusted set security.allow-anonymous-network = true \
                     (HALYARD_SECURITY__ALLOW_ANONYMOUS_NETWORK=true)",
                    sec.anonymous(false).as_str()
                ),
            }),
        }
    }

    /// Whether anything is served over TLS (a `+ssl` listener, or the
    /// admin API with `http-tls`).
    pub fn uses_tls(&self) -> bool {
        self.http_tls
            || self
                .listeners()
                .iter()
                .any(|l| l.protocol.ends_with(TLS_SUFFIX))
    }

    /// TLS settings that cannot work (the files themselves are read, and
    /// their problems reported, when the broker starts).
    fn validate_tls(&self) -> Result<(), ConfigError> {
        if !self.uses_tls() {
            return Ok(());
        }
        let what = if self.http_tls {
            "http-tls = true"
        } else {
            "a +ssl listener"
        };
        let t = &self.tls;
        if t.cert_file.is_none() {
            return Err(ConfigError::Invalid {
                key: "tls.cert-file",
                message: format!(
                    "{what} needs the broker's certificate: set [tls] cert-file and key-file (PEM files)"
                ),
            });
        }
        if t.key_file.is_none() {
            return Err(ConfigError::Invalid {
                key: "tls.key-file",
                message: format!(
                    "{what} needs the certificate's private key: set [tls] key-file (a PEM file)"
                ),
            });
        }
        if t.client_auth != ClientAuth::None && t.client_ca_file.is_none() {
            return Err(ConfigError::Invalid {
                key: "tls.client-ca-file",
                message: "client-auth = \"want\" or \"need\" needs the CA certificates that client certificates are verified against".into(),
            });
        }
        Ok(())
    }

    /// How much of the duplicate-detection memory to keep.
    pub fn duplicate_bounds(&self) -> crate::store::DuplicateBounds {
        let d = &self.destinations;
        crate::store::DuplicateBounds {
            per_key: d.duplicate_window,
            total: d.duplicate_window_total,
            max_age_ms: d.duplicate_window_ms,
        }
    }

    /// The client listeners to open: `[[listeners]]`, or when there are
    /// none, a STOMP listener at `stomp` and a WebSocket one at `ws` (unless
    /// `ws` is empty).
    pub fn listeners(&self) -> Vec<ListenerConfig> {
        if self.listeners.is_empty() {
            let shorthands = [
                ("stomp", &self.stomp),
                ("ws", &self.ws),
                ("openwire", &self.openwire),
            ];
            return shorthands
                .into_iter()
                .filter(|(_, address)| !address.is_empty())
                .map(|(protocol, address)| ListenerConfig {
                    protocol: protocol.to_owned(),
                    address: address.clone(),
                })
                .collect();
        }
        self.listeners.clone()
    }

    /// Sets the STOMP listen address (`--stomp`, `HALYARD_STOMP`): the
    /// first STOMP listener's, when `[[listeners]]` has one, else the
    /// `stomp` shorthand's.
    pub fn set_stomp(&mut self, address: String) {
        self.set_listener("stomp", &address);
        self.stomp = address;
    }

    /// Sets the WebSocket listen address (`--ws`, `HALYARD_WS`) as
    /// [`BrokerConfig::set_stomp`] does; empty closes it.
    pub fn set_ws(&mut self, address: String) {
        self.set_listener("ws", &address);
        self.ws = address;
    }

    /// Sets the OpenWire listen address (`--openwire`, `HALYARD_OPENWIRE`)
    /// as [`BrokerConfig::set_stomp`] does; empty closes it.
    pub fn set_openwire(&mut self, address: String) {
        self.set_listener("openwire", &address);
        self.openwire = address;
    }

    /// With `[[listeners]]`: sets the first `protocol` listener's address,
    /// adding one if there is none, or with an empty address removes them.
    fn set_listener(&mut self, protocol: &str, address: &str) {
        if self.listeners.is_empty() {
            return;
        }
        if address.is_empty() {
            self.listeners.retain(|l| l.protocol != protocol);
            return;
        }
        match self.listeners.iter_mut().find(|l| l.protocol == protocol) {
            Some(l) => address.clone_into(&mut l.address),
            None => self.listeners.push(ListenerConfig {
                protocol: protocol.to_owned(),
                address: address.to_owned(),
            }),
        }
    }

    /// What the store needs to know to open.
    /// `store.confirm-spin-us`.
    pub(crate) fn confirm_spin(&self) -> std::time::Duration {
        std::time::Duration::from_micros(self.store.confirm_spin_us)
    }

    pub(crate) fn store_settings(&self) -> crate::store::open::StoreSettings {
        crate::store::open::StoreSettings {
            journal: self.journal.clone(),
            max_bytes: self.store.max_bytes,
            when_full: self.store.when_full,
            duplicates: self.duplicate_bounds(),
            readers: self.store.readers,
            writer_spin: std::time::Duration::from_micros(self.store.writer_spin_us),
            groups_in_flight: self.store.groups_in_flight,
            group_wait: std::time::Duration::from_micros(self.store.group_wait_us),
            standby: None,
        }
    }

    /// The parser limits for STOMP connections.
    pub fn frame_limits(&self) -> halyard_stomp::Limits {
        halyard_stomp::Limits {
            max_line_bytes: self.limits.max_header_line_bytes,
            max_headers: self.limits.max_headers,
            max_header_bytes: self.limits.max_header_bytes,
            max_body_bytes: self.limits.max_body_bytes,
        }
    }
}

/// Whether a listen address (`host:port`) is on loopback only: `localhost`
/// or a loopback IP. A name that needs resolving counts as exposed.
fn is_loopback_address(address: &str) -> bool {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A peer's client URL must be `stomp://host:port` (or `tcp://`): it is
/// handed to clients as is, in a comma-separated header.
/// The origin (`scheme://host:port`, as a browser sends it in `Origin`)
/// of an `http-peers` entry: an `http` or `https` URL with a host and no
/// more than a `/` of path — the console and CORS work per origin, so a
/// path would only mislead.
pub fn http_origin(url: &str) -> Result<String, String> {
    let bad = |why: &str| format!("'{url}': {why} (expected e.g. \"http://broker-b:8161\")");
    let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("not a URL"))?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return Err(bad("the scheme must be http or https"));
    }
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty()
        || authority
            .chars()
            .any(|c| matches!(c, '/' | '?' | '#' | '@' | ' ' | '\'') || c.is_control())
    {
        return Err(bad("only scheme, host and port are allowed"));
    }
    Ok(format!("{scheme}://{}", authority.to_ascii_lowercase()))
}

fn check_peer_url(url: &str) -> Result<(), PeerUrlError> {
    let bad = |problem| PeerUrlError {
        url: url.to_owned(),
        problem,
    };
    let rest = url
        .strip_prefix("stomp://")
        .or_else(|| url.strip_prefix("tcp://"))
        .or_else(|| url.strip_prefix("ssl://"))
        .or_else(|| url.strip_prefix("stomp+ssl://"))
        .ok_or_else(|| bad(PeerUrlProblem::NoScheme))?;
    if rest.contains([',', '?', '/', '@']) || rest.chars().any(|c| c.is_control() || c == ' ') {
        return Err(bad(PeerUrlProblem::BadCharacters));
    }
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| bad(PeerUrlProblem::NoPort))?;
    if host.trim_matches(['[', ']']).is_empty() {
        return Err(bad(PeerUrlProblem::NoHost));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(bad(PeerUrlProblem::BadPort)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error a config is refused with, as the operator sees it.
    fn refused(toml: &str) -> String {
        BrokerConfig::from_toml(toml).unwrap_err().to_string()
    }

    #[test]
    fn empty_file_gives_defaults() {
        assert_eq!(
            BrokerConfig::from_toml("").unwrap(),
            BrokerConfig::default()
        );
    }

    /// docs/CONFIGURATION.md shows every setting with its default; keep it
    /// true.
    #[test]
    fn every_setting_has_an_environment_variable() {
        let env = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<Vec<_>>()
        };
        let c = BrokerConfig::load(
            None,
            env(&[
                ("HALYARD_LIMITS__MAX_BODY_BYTES", "12345"),
                ("HALYARD_JOURNAL__SYNC", "never"),
                ("HALYARD_DESTINATIONS__VIRTUAL_TOPICS", "VT.>"),
                ("HALYARD_LIMITS__MEMORY_BYTES", "1000000"),
                ("HALYARD_HA__PEERS", r#"["stomp://b:61613"]"#),
                ("HALYARD_CLIENTS__LINK_STEALING", "true"),
                ("HALYARD_SECURITY__ANONYMOUS", "read"),
                ("HALYARD_SECURITY__USERS_FILE", "/etc/halyard/users.toml"),
                ("HALYARD_SECURITY__ALLOW_ANONYMOUS_NETWORK", "true"),
                ("HALYARD_TLS__CERT_FILE", "/etc/halyard/broker.pem"),
                ("HALYARD_NAME", "9"),
                ("HALYARD_STORE", "memory"),
                ("OTHER", "x"),
            ]),
            &["HALYARD_STORE"],
        )
        .unwrap();
        assert_eq!(c.limits.max_body_bytes, 12345);
        assert_eq!(c.destinations.virtual_topics, "VT.>");
        assert_eq!(c.limits.memory_bytes, Auto::Set(1_000_000));
        assert_eq!(c.ha.peers, vec!["stomp://b:61613".to_owned()]);
        assert!(c.clients.link_stealing);
        assert_eq!(c.security.anonymous, Some(Anonymous::Read));
        assert_eq!(
            c.security.users_file.as_deref(),
            Some(Path::new("/etc/halyard/users.toml"))
        );
        assert!(c.security.allow_anonymous_network);
        assert_eq!(
            c.tls.cert_file.as_deref(),
            Some(Path::new("/etc/halyard/broker.pem"))
        );
        assert_eq!(c.name, "9");
        assert_eq!(c.store.kind, StoreKind::Journal, "skipped: the flag's own");
        // Other tools' variables are theirs.
        assert!(
            BrokerConfig::load(
                None,
                env(&[("HALYARD_BIN", "x"), ("HALYARD_LIMITS", "1")]),
                &[]
            )
            .is_ok()
        );
        for bad in [
            "HALYARD_LIMITS__NOPE",
            "HALYARD_NAME__X",
            "HALYARD_LIMITS__MAX_BODY_BYTES__X",
        ] {
            let e = BrokerConfig::load(None, env(&[(bad, "1")]), &[]).unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
        let e = BrokerConfig::load(
            None,
            env(&[("HALYARD_LIMITS__MAX_BODY_BYTES", "lots")]),
            &[],
        )
        .unwrap_err();
        assert!(e.to_string().contains("max-body-bytes"), "{e}");
    }

    /// Every setting has a variable, listed from the schema, and each
    /// variable set to the default it is listed with is accepted and
    /// changes nothing; the documented example names the same settings.
    #[test]
    fn the_listed_variables_cover_every_setting_and_are_accepted() {
        let env = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<Vec<_>>()
        };
        let vars = BrokerConfig::env_vars();
        let doc = include_str!("../../../docs/CONFIGURATION.md");
        let block = doc
            .split("```toml\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("a toml block in docs/CONFIGURATION.md");
        let documented: toml::Table = toml::from_str(block).unwrap();
        let mut from_doc = Vec::new();
        fn names(prefix: &str, t: &toml::Table, out: &mut Vec<String>) {
            for (k, v) in t {
                let name = format!("{prefix}{}", k.to_ascii_uppercase().replace('-', "_"));
                match v.as_table() {
                    Some(inner) => names(&format!("{name}__"), inner, out),
                    None => out.push(name),
                }
            }
        }
        names("HALYARD_", &documented, &mut from_doc);
        for name in &from_doc {
            assert!(
                vars.iter().any(|(v, _)| v == name),
                "{name} is documented but has no variable"
            );
        }
        assert!(vars.len() >= from_doc.len());
        for (var, default) in &vars {
            let unset = UNSET_BY_DEFAULT.iter().any(|(section, keys)| {
                keys.iter().any(|k| {
                    *var == format!(
                        "HALYARD_{}__{}",
                        section.to_ascii_uppercase(),
                        k.to_ascii_uppercase().replace('-', "_")
                    )
                })
            });
            if unset {
                // Accepted (the value is checked by validation, later).
                let set = if var.ends_with("ANONYMOUS") {
                    "read"
                } else {
                    "x.pem"
                };
                BrokerConfig::load(None, env(&[(var, set)]), &[])
                    .unwrap_or_else(|e| panic!("{var}: {e}"));
                continue;
            }
            let c = BrokerConfig::load(None, env(&[(var, default)]), &[])
                .unwrap_or_else(|e| panic!("{var}={default}: {e}"));
            assert_eq!(c, BrokerConfig::default(), "{var}={default}");
        }
    }

    /// The configs shipped under deploy/ (the package's default, the
    /// container's, the example pairs) are valid.
    #[test]
    fn the_deployment_configs_are_valid() {
        // The pairs name a users file (they listen beyond loopback).
        let dir = tempfile::tempdir().unwrap();
        let users = dir.path().join("users.toml");
        let hash = crate::password::hash("secret").unwrap();
        std::fs::write(
            &users,
            format!("[[users]]\nname = \"app\"\npassword = \"{hash}\"\n"),
        )
        .unwrap();
        for (name, text) in [
            (
                "debian",
                include_str!("../../../deploy/debian/halyard.toml"),
            ),
            (
                "docker",
                include_str!("../../../deploy/docker/halyard.toml"),
            ),
            (
                "pair-shared/a",
                include_str!("../../../deploy/pair-shared/a.toml"),
            ),
            (
                "pair-shared/b",
                include_str!("../../../deploy/pair-shared/b.toml"),
            ),
            (
                "pair-postgres/a",
                include_str!("../../../deploy/pair-postgres/a.toml"),
            ),
            (
                "pair-postgres/b",
                include_str!("../../../deploy/pair-postgres/b.toml"),
            ),
        ] {
            let text = text.replace("/etc/halyard/users.toml", &users.to_string_lossy());
            let c = BrokerConfig::from_toml(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            if name.starts_with("pair") {
                assert_eq!(c.ha.peers.len(), 1, "{name}");
                assert!(
                    c.ha.peers[0].contains(if name.ends_with('a') { "-b:" } else { "-a:" }),
                    "{name}"
                );
            }
        }
    }

    /// `http-peers` entries are origins: scheme, host and port, nothing
    /// else (CORS and the console's Content-Security-Policy match origins).
    #[test]
    fn http_peers_are_origins() {
        assert_eq!(
            http_origin("http://Broker-B:8161/").unwrap(),
            "http://broker-b:8161"
        );
        assert_eq!(
            http_origin("https://10.0.0.2:8443").unwrap(),
            "https://10.0.0.2:8443"
        );
        for bad in [
            "broker-b:8161",
            "ftp://b:1",
            "http://",
            "http://b:8161/api",
            "http://u:p@b:8161",
            "http://b:8161?x",
        ] {
            assert!(http_origin(bad).is_err(), "{bad}");
        }
        let mut c = BrokerConfig {
            http_peers: vec!["http://b:8161/console".into()],
            ..BrokerConfig::default()
        };
        let e = c.validate().unwrap_err();
        assert!(e.to_string().contains("http-peers"), "{e}");
        c.http_peers = vec!["http://b:8161".into()];
        c.validate().unwrap();
    }

    #[test]
    fn documented_example_is_the_defaults() {
        let doc = include_str!("../../../docs/CONFIGURATION.md");
        let toml = doc
            .split("```toml\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("a toml block in docs/CONFIGURATION.md");
        assert_eq!(
            BrokerConfig::from_toml(toml).unwrap(),
            BrokerConfig::default()
        );
        let documented: toml::Table = toml::from_str(toml).unwrap();
        let defaults = toml::Table::try_from(BrokerConfig::default()).unwrap();
        assert_eq!(documented, defaults, "the doc must list every setting");
    }

    /// The `stomp` and `ws` shorthands give the default listeners; with
    /// `[[listeners]]`, `--ws` sets, adds or (empty) removes the `ws` one.
    #[test]
    fn the_ws_and_openwire_shorthands_and_flags() {
        let protocols = |c: &BrokerConfig| {
            c.listeners()
                .into_iter()
                .map(|l| format!("{} {}", l.protocol, l.address))
                .collect::<Vec<_>>()
        };
        let mut c = BrokerConfig::default();
        assert_eq!(
            protocols(&c),
            [
                "stomp 127.0.0.1:61613",
                "ws 127.0.0.1:61614",
                "openwire 127.0.0.1:61616"
            ]
        );
        c.set_ws(String::new());
        c.set_openwire(String::new());
        assert_eq!(protocols(&c), ["stomp 127.0.0.1:61613"]);
        // `ws+ssl` is a TLS listener like `stomp+ssl`: it needs [tls].
        let e = BrokerConfig::from_toml(
            "[[listeners]]\nprotocol = \"ws+ssl\"\naddress = \"127.0.0.1:1\"\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("tls.cert-file"), "{e}");
        let mut c = BrokerConfig::from_toml(
            "[[listeners]]\nprotocol = \"stomp\"\naddress = \"127.0.0.1:1\"\n",
        )
        .unwrap();
        assert_eq!(
            protocols(&c),
            ["stomp 127.0.0.1:1"],
            "the shorthand is not added"
        );
        c.set_ws("127.0.0.1:2".into());
        c.set_ws("127.0.0.1:3".into());
        assert_eq!(protocols(&c), ["stomp 127.0.0.1:1", "ws 127.0.0.1:3"]);
        c.set_ws(String::new());
        assert_eq!(protocols(&c), ["stomp 127.0.0.1:1"]);
        c.set_openwire("127.0.0.1:4".into());
        assert_eq!(protocols(&c), ["stomp 127.0.0.1:1", "openwire 127.0.0.1:4"]);
        // `openwire+ssl` and `auto+ssl` need [tls] too.
        for p in ["openwire+ssl", "auto+ssl"] {
            let e = BrokerConfig::from_toml(&format!(
                "[[listeners]]\nprotocol = \"{p}\"\naddress = \"127.0.0.1:1\"\n"
            ))
            .unwrap_err();
            assert!(e.to_string().contains("tls.cert-file"), "{p}: {e}");
        }
    }

    #[test]
    fn nested_settings_parse() {
        let c = BrokerConfig::from_toml(
            "name = \"b1\"\nstomp = \"127.0.0.2:1\"\n[limits]\nmax-connections = 5\n[destinations]\nmax-redeliveries = 2\n",
        )
        .unwrap();
        assert_eq!(c.name, "b1");
        assert_eq!(c.limits.max_connections, Auto::Set(5));
        assert_eq!(c.destinations.max_redeliveries, 2);
        let c = BrokerConfig::from_toml("[limits]\nmax-connections = \"auto\"\n").unwrap();
        assert_eq!(c.limits.max_connections, Auto::Auto);
        let e = refused("[limits]\nmax-connections = \"many\"\n");
        assert!(e.contains("max-connections") && e.contains("auto"), "{e}");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let e = refused("nmae = \"x\"");
        assert!(e.contains("nmae"), "{e}");
        let e = refused("[limits]\nmax-connections = 0");
        assert!(e.contains("limits.max-connections"), "{e}");
        let e = refused("[limits]\nmax-connections = -1");
        assert!(e.contains("max-connections"), "{e}");
        let e = refused("[store]\nkind = \"nope\"");
        assert!(e.contains("nope"), "{e}");
        let e = refused("[journal]\nsync = \"sometimes\"");
        assert!(e.contains("invalid journal sync mode 'sometimes'"), "{e}");
        let c = BrokerConfig::from_toml("[journal]\nsync = \"batch-ms 5\"").unwrap();
        assert_eq!(c.journal.sync, crate::store::journal::SyncMode::BatchMs(5));
        let c = BrokerConfig::from_toml("[journal]\non-corruption = \"skip\"").unwrap();
        assert_eq!(
            c.journal.on_corruption,
            crate::store::journal::OnCorruption::Skip
        );
        let e = refused("[journal]\non-corruption = \"ignore\"");
        assert!(e.contains("ignore") && e.contains("refuse"), "{e}");
        BrokerConfig::from_toml("[store]\nwriter-spin-us = 10000").unwrap();
        let e = refused("[store]\nwriter-spin-us = 10001");
        assert!(e.contains("store.writer-spin-us"), "{e}");
        for bad in [0, 17] {
            let e = refused(&format!("[store]\ngroups-in-flight = {bad}"));
            assert!(e.contains("store.groups-in-flight"), "{e}");
        }
        let e = refused("[store]\nconfirm-spin-us = 10001");
        assert!(e.contains("store.confirm-spin-us"), "{e}");
        let c = BrokerConfig::from_toml("[store]\ngroups-in-flight = 4").unwrap();
        assert_eq!(c.store_settings().groups_in_flight, 4);
        let e = refused("[store]\ngroup-wait-us = 10001");
        assert!(e.contains("store.group-wait-us"), "{e}");
        let c = BrokerConfig::from_toml("[store]\ngroup-wait-us = 0").unwrap();
        assert!(c.store_settings().group_wait.is_zero());
        BrokerConfig::from_toml("[limits]\nmax-body-bytes = 536870912").unwrap();
        let e = refused("[limits]\nmax-body-bytes = 536870913");
        assert!(
            e.contains("limits.max-body-bytes") && e.contains("512 MiB"),
            "{e}"
        );
    }

    #[test]
    fn peers_and_the_duplicate_window_are_checked() {
        let c = BrokerConfig::from_toml(
            "[ha]\npeers = [\"stomp://b:61613\", \"tcp://[::1]:1\"]\n[destinations]\nduplicate-window = 0",
        )
        .unwrap();
        assert_eq!(c.ha.peers.len(), 2);
        assert_eq!(c.destinations.duplicate_window, 0);
        for bad in [
            "b:61613",
            "stomp://b",
            "stomp://b:0",
            "stomp://a:1,stomp://b:2",
            "stomp://:1",
        ] {
            let e = refused(&format!("[ha]\npeers = [\"{bad}\"]"));
            assert!(e.contains("ha.peers") && e.contains(bad), "{bad}: {e}");
        }
        let e = refused("[destinations]\nduplicate-window = 2000000");
        assert!(e.contains("destinations.duplicate-window"), "{e}");
    }
}
