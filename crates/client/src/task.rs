//! The connection engine: one task per client that owns the connection and
//! everything needed to replace it.
//!
//! With a `failover:` URL, losing the connection is not the end: the engine
//! reconnects (backing off as the options say), then restores its state on
//! the new connection — the same client id, every active subscription
//! (same id, headers and ack mode), and, in order, every SEND whose receipt
//! had not arrived (with the same duplicate-detection id, so a broker that
//! did store it does not enqueue it twice). What cannot be carried over is
//! reported: a transaction open at the failover is rolled back, a COMMIT in
//! flight has an unknown outcome, an ACK in flight may not have landed.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use halyard_stomp::{Command, Frame};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::backup::Backup;
use crate::conn::{Conn, ConnectParams, broker_error};
use crate::url::{Endpoint, FailoverOptions};
use crate::{ClientError, ClientState, Cmd, ConnectionEvent, Message, ReceiptTx};

/// What a frame awaiting its receipt was, to know what to do if the
/// connection fails first.
enum Kind {
    /// A SEND; the frame is kept to be sent again after a failover.
    Send(Option<Frame>),
    Subscribe(String),
    Ack,
    Begin(String),
    Commit(String),
    Other,
}

struct Pending {
    kind: Kind,
    waiter: ReceiptTx,
    /// When the operation began (for `timeout`).
    at: Instant,
}

struct Sub {
    /// The SUBSCRIBE frame, without a receipt, to send again after a
    /// failover.
    frame: Frame,
    tx: mpsc::Sender<Message>,
}

/// Why serving a connection stopped.
enum Stop {
    /// The client is done (disconnected, or every handle dropped).
    Closed,
    /// The connection failed.
    Lost(ClientError),
}

pub(crate) struct Engine {
    endpoints: Vec<Endpoint>,
    failover: Option<FailoverOptions>,
    params: ConnectParams,
    cmds: mpsc::Receiver<Cmd>,
    state: Arc<ClientState>,
    subs: BTreeMap<String, Sub>,
    /// Frames awaiting receipts, in the order they were sent.
    pending: BTreeMap<u64, Pending>,
    by_receipt: HashMap<String, u64>,
    next_order: u64,
    open_txs: HashSet<String>,
    rolled_back: HashSet<String>,
    /// Requests that arrived while disconnected.
    waiting: VecDeque<(Cmd, Instant)>,
    /// SUBSCRIBEs interrupted by a failover: confirmed by the re-subscribe.
    sub_waiters: HashMap<String, ReceiptTx>,
    disconnecting: bool,
    /// Warm standby connections (`backup=true`).
    backups: Vec<Backup>,
    rng: u64,
    /// Sends replayed after the last failover whose receipts are awaited,
    /// for the `ReplayConfirmed` event.
    replay: Option<Replay>,
}

/// The replays of one failover, until the new broker has confirmed them.
struct Replay {
    replayed: u64,
    awaiting: HashSet<String>,
    /// The broker's count of this connection's SENDs it dropped as
    /// duplicates (`duplicates-dropped` on its receipts).
    duplicates: u64,
}

/// What a background connection attempt is for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Probe {
    /// A priority broker is up again (`priorityBackup`): move to it.
    Priority,
    /// A standby connection for the pool (`backup`).
    Backup,
}

/// How long the engine waits between attempts to reach a priority broker,
/// or to fill its pool of backup connections.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// How long a move to a priority broker may wait for what is in flight
/// to be confirmed before it is given up (and tried again later).
const SWITCH_DRAIN: Duration = Duration::from_secs(5);

/// While disconnected, how often requests that arrived are taken in and
/// checked against `timeout`.
const ABSORB_EVERY: Duration = Duration::from_millis(20);

impl Engine {
    pub(crate) fn new(
        endpoints: Vec<Endpoint>,
        failover: Option<FailoverOptions>,
        params: ConnectParams,
        cmds: mpsc::Receiver<Cmd>,
        state: Arc<ClientState>,
    ) -> Engine {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            | 1;
        Engine {
            endpoints,
            failover,
            params,
            cmds,
            state,
            subs: BTreeMap::new(),
            pending: BTreeMap::new(),
            by_receipt: HashMap::new(),
            next_order: 0,
            open_txs: HashSet::new(),
            rolled_back: HashSet::new(),
            waiting: VecDeque::new(),
            sub_waiters: HashMap::new(),
            disconnecting: false,
            backups: Vec::new(),
            rng: seed,
            replay: None,
        }
    }

    fn random(&mut self) -> u64 {
        // xorshift64: plenty for shuffling a broker list and jitter.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    fn emit(&self, e: ConnectionEvent) {
        let _ = self.state.events.send(e);
    }

    /// Connects for the first time: the one broker, or for a failover URL,
    /// pass after pass over the list as `startupMaxReconnectAttempts`
    /// allows.
    pub(crate) async fn connect_first(&mut self) -> Result<Conn, ClientError> {
        let Some(options) = self.failover.clone() else {
            return Conn::open(&self.endpoints[0], &self.params).await;
        };
        let limit = options.startup_max_reconnect_attempts;
        // Even "no attempts" tries each broker once.
        let limit = if limit == 0 { 1 } else { limit };
        self.connect_any(&options, None, limit)
            .await
            .map(|(c, _)| c)
    }

    /// Runs the client until it is closed or gives up.
    pub(crate) async fn run(mut self, mut conn: Conn) {
        self.connected(&conn);
        loop {
            let stop = self.serve(&mut conn).await;
            let error = match stop {
                Stop::Closed => break self.finish(ClientError::Closed),
                Stop::Lost(e) => e,
            };
            let broker = conn.endpoint.clone();
            let Some(options) = self.failover.clone() else {
                break self.finish(error);
            };
            if options.max_reconnect_attempts == 0 || self.disconnecting {
                break self.finish(error);
            }
            let lost_at = Instant::now();
            // Info, not warn: it is not an error yet (the client carries
            // on), and the `Interrupted` event below tells the application,
            // which may say so in its own words (the CLI prints one line
            // per failover from the events).
            tracing::info!(broker = %broker, error = %error, "connection lost; failing over");
            self.interrupted();
            self.emit(ConnectionEvent::Interrupted {
                broker: broker.to_string(),
                reason: error.to_string(),
            });
            let next = match self.take_backup().await {
                Some(c) => Ok((c, 1)),
                None => {
                    self.connect_any(&options, Some(&broker), options.max_reconnect_attempts)
                        .await
                }
            };
            match next {
                Ok((next, attempts)) => {
                    conn = next;
                    tracing::info!(broker = %conn.endpoint, attempts,
                        after_ms = lost_at.elapsed().as_millis() as u64, "failover complete");
                    self.connected(&conn);
                    let (replayed, resubscribed) = match self.restore(&mut conn).await {
                        Ok(n) => n,
                        Err(e) => {
                            // Lost again at once: go round the loop.
                            tracing::warn!(error = %e, "connection lost while restoring state");
                            continue;
                        }
                    };
                    self.emit(ConnectionEvent::Resumed {
                        broker: conn.endpoint.to_string(),
                        after: lost_at.elapsed(),
                        attempts,
                        replayed,
                        resubscribed,
                    });
                }
                Err(e) => break self.finish(e),
            }
        }
    }

    /// A new connection is up: note what its broker said.
    fn connected(&mut self, conn: &Conn) {
        if let Ok(mut info) = self.state.info.lock() {
            *info = conn.info.clone();
        }
        let update = self
            .failover
            .as_ref()
            .is_some_and(|o| o.update_uris_supported);
        if !update {
            return;
        }
        // Brokers this one announced join the list, with the credentials
        // that worked here.
        for p in &conn.peers {
            // A TLS client never learns a plain-text address (that would
            // be a downgrade), nor a plain client a TLS one it has no
            // trust settings for.
            if p.is_tls() != conn.endpoint.is_tls() {
                tracing::debug!(broker = %p, "ignoring an announced broker over another transport");
                continue;
            }
            if !self.endpoints.iter().any(|e| e.same_broker(p)) {
                tracing::info!(broker = %p, "learned of a broker from CONNECTED");
                let mut p = p.clone();
                if p.login.is_none() {
                    p.login.clone_from(&conn.endpoint.login);
                    p.passcode.clone_from(&conn.endpoint.passcode);
                }
                // With the trust settings that worked here.
                p.tls.clone_from(&conn.endpoint.tls);
                self.endpoints.push(p);
            }
        }
    }

    /// A live standby connection, if the pool has one.
    async fn take_backup(&mut self) -> Option<Conn> {
        while let Some(b) = self.backups.pop() {
            if let Some(c) = b.take().await {
                return Some(c);
            }
        }
        None
    }

    /// Registers a request and returns the frame to write, or `None` if it
    /// was answered locally (a transaction rolled back by a failover).
    fn prepare(&mut self, cmd: Cmd) -> Option<Frame> {
        let Cmd {
            frame,
            receipt,
            subscribe,
            delivered_on,
        } = cmd;
        if delivered_on.is_some_and(|g| g != self.state.generation.load(Ordering::Relaxed)) {
            // An ACK or NACK for a message delivered on a connection that
            // has failed since: the broker there redelivers it, and this
            // connection's broker would not know the ack id.
            if let Some((_, w)) = receipt {
                let _ = w.send(Err(ClientError::AckNotConfirmed));
            }
            return None;
        }
        let tx = frame.headers.get("transaction").map(str::to_owned);
        if let Some(t) = &tx
            && self.rolled_back.contains(t)
        {
            let result = match frame.command {
                Command::Abort => {
                    self.rolled_back.remove(t);
                    Ok(())
                }
                Command::Commit => {
                    self.rolled_back.remove(t);
                    Err(ClientError::TransactionRolledBack(t.clone()))
                }
                _ => Err(ClientError::TransactionRolledBack(t.clone())),
            };
            if let Some((_, w)) = receipt {
                let _ = w.send(result);
            }
            return None;
        }
        let kind = match frame.command {
            Command::Send if self.failover.is_some() && tx.is_none() => {
                Kind::Send(Some(frame.clone()))
            }
            Command::Send => Kind::Send(None),
            Command::Subscribe => {
                let id = frame.headers.get("id").unwrap_or_default().to_owned();
                if let Some((_, sub_tx)) = subscribe {
                    let mut kept = frame.clone();
                    kept.headers.remove("receipt");
                    self.subs.insert(
                        id.clone(),
                        Sub {
                            frame: kept,
                            tx: sub_tx,
                        },
                    );
                }
                Kind::Subscribe(id)
            }
            Command::Unsubscribe => {
                if let Some(id) = frame.headers.get("id") {
                    self.subs.remove(id);
                }
                Kind::Other
            }
            Command::Ack | Command::Nack => Kind::Ack,
            Command::Begin => {
                if let Some(t) = &tx {
                    self.open_txs.insert(t.clone());
                }
                Kind::Begin(tx.clone().unwrap_or_default())
            }
            Command::Commit | Command::Abort => {
                if let Some(t) = &tx {
                    self.open_txs.remove(t);
                }
                match frame.command {
                    Command::Commit => Kind::Commit(tx.clone().unwrap_or_default()),
                    _ => Kind::Other,
                }
            }
            Command::Disconnect => {
                self.disconnecting = true;
                Kind::Other
            }
            _ => Kind::Other,
        };
        if let Some((id, waiter)) = receipt {
            let order = self.next_order;
            self.next_order += 1;
            self.by_receipt.insert(id, order);
            self.pending.insert(
                order,
                Pending {
                    kind,
                    waiter,
                    at: Instant::now(),
                },
            );
        }
        Some(frame)
    }

    /// Serves one connection until it fails or the client is done.
    async fn serve(&mut self, conn: &mut Conn) -> Stop {
        let mut probe = tokio::time::interval(PROBE_EVERY);
        probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut probing: Option<(Probe, JoinHandle<Option<Conn>>)> = None;
        // A priority broker to move to once nothing is in flight.
        let mut switch_to: Option<(Conn, Instant)> = None;
        loop {
            if switch_to.is_some() && self.quiescent() {
                if let Some((next, _)) = switch_to.take()
                    && let Err(e) = self.switch(conn, next).await
                {
                    return Stop::Lost(e);
                }
                continue;
            }
            tokio::select! {
                // While draining for a switch, new requests wait.
                cmd = self.cmds.recv(), if switch_to.is_none() => {
                    let Some(cmd) = cmd else { return Stop::Closed };
                    let mut frames = Vec::new();
                    frames.extend(self.prepare(cmd));
                    while frames.len() < 64 {
                        match self.cmds.try_recv() {
                            Ok(c) => frames.extend(self.prepare(c)),
                            Err(_) => break,
                        }
                    }
                    if let Err(e) = conn.write_all(frames).await {
                        return Stop::Lost(e);
                    }
                    if self.disconnecting && self.pending.is_empty() {
                        return Stop::Closed;
                    }
                }
                frame = conn.next() => {
                    let frame = match frame {
                        Ok(f) => f,
                        Err(e) if self.disconnecting => {
                            tracing::debug!(error = %e, "connection closed while disconnecting");
                            return Stop::Closed;
                        }
                        Err(e) => return Stop::Lost(e),
                    };
                    if let Some(stop) = self.on_frame(frame).await {
                        return stop;
                    }
                }
                _ = probe.tick(), if probing.is_none() && self.failover.is_some() => {
                    if switch_to.as_ref().is_some_and(|(_, at)| at.elapsed() > SWITCH_DRAIN) {
                        tracing::info!("requests kept the connection busy; moving to the priority broker later");
                        switch_to = None;
                    }
                    probing = self.start_probe(conn);
                }
                found = async {
                    match probing.as_mut() {
                        Some((_, h)) => h.await.ok().flatten(),
                        None => std::future::pending().await,
                    }
                }, if probing.is_some() => {
                    let purpose = probing.take().map(|(p, _)| p);
                    match (purpose, found) {
                        // A transaction cannot move; try again later.
                        (Some(Probe::Priority), Some(next)) if self.open_txs.is_empty() => {
                            switch_to = Some((next, Instant::now()));
                        }
                        (Some(Probe::Backup), Some(c)) => self.backups.push(Backup::keep(c)),
                        _ => {}
                    }
                }
            }
        }
    }

    /// Nothing awaits the broker's confirmation and no transaction is
    /// open: the connection can be swapped without losing anything.
    fn quiescent(&self) -> bool {
        self.pending.is_empty() && self.open_txs.is_empty()
    }

    /// Starts a background connection attempt, if one is wanted: to a
    /// priority broker we are not on, or to fill the standby pool.
    fn start_probe(&mut self, conn: &Conn) -> Option<(Probe, JoinHandle<Option<Conn>>)> {
        let options = self.failover.as_ref()?;
        let (purpose, candidates) = if options.priority_backup
            && !self
                .priority_endpoints()
                .iter()
                .any(|e| e.same_broker(&conn.endpoint))
        {
            (Probe::Priority, self.priority_endpoints())
        } else if options.backup {
            self.backups.retain(Backup::is_alive);
            if self.backups.len() >= options.backup_pool_size {
                return None;
            }
            let candidates: Vec<Endpoint> = self
                .endpoints
                .iter()
                .filter(|e| {
                    !e.same_broker(&conn.endpoint)
                        && !self.backups.iter().any(|b| b.endpoint.same_broker(e))
                })
                .cloned()
                .collect();
            (Probe::Backup, candidates)
        } else {
            return None;
        };
        if candidates.is_empty() {
            return None;
        }
        let params = self.params.clone();
        Some((
            purpose,
            tokio::spawn(async move {
                for e in candidates {
                    if let Ok(c) = Conn::open(&e, &params).await {
                        return Some(c);
                    }
                }
                None
            }),
        ))
    }

    /// Moves to `next` (a priority broker) from `conn`, which is quiescent.
    async fn switch(&mut self, conn: &mut Conn, next: Conn) -> Result<(), ClientError> {
        tracing::info!(from = %conn.endpoint, to = %next.endpoint,
            "priority broker available again; moving back to it");
        let from = conn.endpoint.to_string();
        self.emit(ConnectionEvent::Interrupted {
            broker: from,
            reason: "moving to a priority broker".into(),
        });
        self.interrupted();
        let mut old = std::mem::replace(conn, next);
        // Politely, so the old broker gives our unacknowledged messages to
        // someone else at once; nobody waits for its answer.
        if old.feed(Frame::new(Command::Disconnect)).await.is_ok() {
            let _ = old.flush().await;
        }
        drop(old);
        self.connected(conn);
        let (replayed, resubscribed) = self.restore(conn).await?;
        self.emit(ConnectionEvent::Resumed {
            broker: conn.endpoint.to_string(),
            after: Duration::ZERO,
            attempts: 1,
            replayed,
            resubscribed,
        });
        Ok(())
    }

    fn priority_endpoints(&self) -> Vec<Endpoint> {
        match &self.failover {
            Some(o) if !o.priority_uris.is_empty() => o.priority_uris.clone(),
            _ => self.endpoints.first().cloned().into_iter().collect(),
        }
    }
    /// Handles a frame from the broker; `Some` stops serving.
    async fn on_frame(&mut self, f: Frame) -> Option<Stop> {
        match f.command {
            Command::Message => {
                let sub = f.headers.get("subscription").unwrap_or_default().to_owned();
                if let Some(s) = self.subs.get(&sub) {
                    let message = Message {
                        headers: f.headers,
                        body: f.body,
                        generation: self.state.generation.load(Ordering::Relaxed),
                    };
                    // Waits if the application is not keeping up: that stops
                    // reading the socket, which is the backpressure.
                    if s.tx.send(message).await.is_err() {
                        self.subs.remove(&sub);
                    }
                }
                None
            }
            Command::Receipt => {
                let id = f.headers.get("receipt-id").unwrap_or_default();
                self.replay_confirmed(id, &f);
                if let Some(order) = self.by_receipt.remove(id)
                    && let Some(p) = self.pending.remove(&order)
                {
                    let _ = p.waiter.send(Ok(()));
                }
                if self.disconnecting && self.pending.is_empty() {
                    return Some(Stop::Closed);
                }
                None
            }
            Command::Error => {
                let e = broker_error(&f);
                // The frame the broker refused is answered (and never sent
                // again); the connection is gone either way.
                if let Some(order) = f
                    .headers
                    .get("receipt-id")
                    .and_then(|id| self.by_receipt.remove(id))
                    && let Some(p) = self.pending.remove(&order)
                {
                    let _ = p.waiter.send(Err(e.clone()));
                }
                Some(Stop::Lost(e))
            }
            other => Some(Stop::Lost(ClientError::Protocol(format!(
                "unexpected {other} frame from the broker"
            )))),
        }
    }

    /// A receipt came: if it confirms the last of a failover's replays,
    /// says how many the broker had stored already.
    fn replay_confirmed(&mut self, id: &str, receipt: &Frame) {
        let Some(r) = &mut self.replay else { return };
        if !r.awaiting.remove(id) {
            return;
        }
        if let Some(n) = receipt
            .headers
            .get("duplicates-dropped")
            .and_then(|n| n.parse::<u64>().ok())
        {
            r.duplicates = r.duplicates.max(n);
        }
        if r.awaiting.is_empty() {
            let (replayed, duplicates) = (r.replayed, r.duplicates);
            self.replay = None;
            self.emit(ConnectionEvent::ReplayConfirmed {
                replayed,
                duplicates,
            });
        }
    }

    /// The connection is gone: decide the fate of everything in flight.
    fn interrupted(&mut self) {
        // Replays not all confirmed: they are replayed again, and counted
        // for the next connection.
        self.replay = None;
        // Messages delivered on the old connection can no longer be
        // acknowledged; the broker redelivers them.
        self.state.generation.fetch_add(1, Ordering::Relaxed);
        let pending = std::mem::take(&mut self.pending);
        self.by_receipt.retain(|_, o| {
            pending
                .get(o)
                .is_some_and(|p| matches!(p.kind, Kind::Send(Some(_))))
        });
        for (order, p) in pending {
            let result = match p.kind {
                Kind::Send(Some(_)) => {
                    self.pending.insert(order, p);
                    continue;
                }
                Kind::Send(None) => Err(ClientError::Io(
                    "connection lost before the broker confirmed the message".into(),
                )),
                Kind::Subscribe(id) => {
                    self.sub_waiters.insert(id, p.waiter);
                    continue;
                }
                Kind::Ack => Err(ClientError::AckNotConfirmed),
                Kind::Begin(t) => {
                    // begin() fails, so the application never holds it.
                    self.open_txs.remove(&t);
                    Err(ClientError::TransactionRolledBack(t))
                }
                Kind::Commit(t) => Err(ClientError::CommitOutcomeUnknown(t)),
                Kind::Other => Ok(()),
            };
            let _ = p.waiter.send(result);
        }
        // A transaction dies with the connection that carried it.
        let open: Vec<String> = self.open_txs.drain().collect();
        self.rolled_back.extend(open);
    }

    /// The order in which to try the brokers: shuffled if `randomize`, the
    /// one that just failed last.
    fn order(&mut self, options: &FailoverOptions, failed: Option<&Endpoint>) -> Vec<Endpoint> {
        let mut list = self.endpoints.clone();
        if options.randomize {
            for i in (1..list.len()).rev() {
                let j = (self.random() % (i as u64 + 1)) as usize;
                list.swap(i, j);
            }
        }
        if options.priority_backup {
            let prio = self.priority_endpoints();
            list.sort_by_key(|e| !prio.iter().any(|p| p.same_broker(e)));
        }
        if let Some(failed) = failed
            && let Some(i) = list.iter().position(|e| e.same_broker(failed))
        {
            let f = list.remove(i);
            list.push(f);
        }
        list
    }

    /// Moves requests that arrive while disconnected into `waiting`, and
    /// fails what has waited longer than `timeout`. `false` once every
    /// handle is gone.
    fn absorb(&mut self, options: &FailoverOptions) -> bool {
        loop {
            match self.cmds.try_recv() {
                Ok(cmd) => {
                    if cmd.frame.command == Command::Disconnect {
                        self.disconnecting = true;
                        if let Some((_, w)) = cmd.receipt {
                            let _ = w.send(Ok(()));
                        }
                        continue;
                    }
                    self.waiting.push_back((cmd, Instant::now()));
                }
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => return false,
            }
        }
        if let Some(t) = options.timeout {
            let now = Instant::now();
            let expired = |at: Instant| now.saturating_duration_since(at) >= t;
            while self.waiting.front().is_some_and(|(_, at)| expired(*at)) {
                if let Some((cmd, _)) = self.waiting.pop_front()
                    && let Some((_, w)) = cmd.receipt
                {
                    let _ = w.send(Err(ClientError::Timeout(t)));
                }
            }
            let late: Vec<u64> = self
                .pending
                .iter()
                .filter(|(_, p)| expired(p.at))
                .map(|(o, _)| *o)
                .collect();
            for o in late {
                if let Some(p) = self.pending.remove(&o) {
                    let _ = p.waiter.send(Err(ClientError::Timeout(t)));
                }
            }
            self.by_receipt.retain(|_, o| self.pending.contains_key(o));
        }
        true
    }

    /// Tries the brokers, pass after pass, backing off in between (with
    /// ±10% jitter, so that many clients do not retry in lock-step), until
    /// one answers or `limit` passes (-1: no limit) have failed. Requests
    /// that arrive meanwhile wait, or fail after `timeout`.
    async fn connect_any(
        &mut self,
        options: &FailoverOptions,
        failed: Option<&Endpoint>,
        limit: i64,
    ) -> Result<(Conn, u64), ClientError> {
        let mut delay = options.initial_reconnect_delay;
        let mut attempts = 0u64;
        loop {
            let mut last = String::new();
            for endpoint in self.order(options, failed) {
                match self.open_absorbing(&endpoint, options).await? {
                    Ok(c) => return Ok((c, attempts + 1)),
                    Err(e) => {
                        tracing::debug!(broker = %endpoint, error = %e, "connection attempt failed");
                        last = e.to_string();
                    }
                }
            }
            attempts += 1;
            if limit >= 0 && attempts >= limit as u64 {
                return Err(ClientError::Unreachable { attempts, last });
            }
            if options.warn_after_reconnect_attempts > 0
                && attempts.is_multiple_of(u64::from(options.warn_after_reconnect_attempts))
            {
                tracing::warn!(attempts, last_error = %last, "still cannot reach any broker");
            }
            let jitter = 0.9 + (self.random() % 2001) as f64 / 10_000.0;
            let until = tokio::time::Instant::now() + delay.mul_f64(jitter);
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(until) => break,
                    cmd = self.cmds.recv() => match cmd {
                        None => return Err(ClientError::Closed),
                        Some(cmd) => {
                            self.waiting.push_back((cmd, Instant::now()));
                            if !self.absorb(options) || self.disconnecting {
                                return Err(ClientError::Closed);
                            }
                        }
                    },
                    _ = tokio::time::sleep(ABSORB_EVERY), if options.timeout.is_some() => {
                        if !self.absorb(options) {
                            return Err(ClientError::Closed);
                        }
                    }
                }
            }
            if options.use_exponential_back_off {
                delay = delay
                    .mul_f64(options.reconnect_delay_exponent)
                    .min(options.max_reconnect_delay);
            }
        }
    }

    /// One connection attempt, while keeping the requests that arrive
    /// meanwhile (and their `timeout`) in hand. The outer error means the
    /// client is closing.
    async fn open_absorbing(
        &mut self,
        endpoint: &Endpoint,
        options: &FailoverOptions,
    ) -> Result<Result<Conn, ClientError>, ClientError> {
        if !self.absorb(options) || self.disconnecting {
            return Err(ClientError::Closed);
        }
        let params = self.params.clone();
        let open = Conn::open(endpoint, &params);
        tokio::pin!(open);
        loop {
            tokio::select! {
                r = &mut open => return Ok(r),
                _ = tokio::time::sleep(ABSORB_EVERY) => {
                    if !self.absorb(options) || self.disconnecting {
                        return Err(ClientError::Closed);
                    }
                }
            }
        }
    }
    /// Brings a new connection up to the client's state: subscriptions,
    /// unconfirmed SENDs (in order), then what waited for the connection.
    /// Returns how many SENDs were replayed and subscriptions made again,
    /// for the `Resumed` event.
    async fn restore(&mut self, conn: &mut Conn) -> Result<(u64, u64), ClientError> {
        let mut frames = Vec::new();
        let ids: Vec<String> = self.subs.keys().cloned().collect();
        let resubscribed = ids.len() as u64;
        let mut replayed = 0u64;
        for id in ids {
            let mut f = self.subs[&id].frame.clone();
            if let Some(waiter) = self.sub_waiters.remove(&id) {
                let receipt = format!(
                    "r-resub-{}",
                    self.state.next_id.fetch_add(1, Ordering::Relaxed)
                );
                f.headers.push("receipt", receipt.clone());
                let order = self.next_order;
                self.next_order += 1;
                self.by_receipt.insert(receipt, order);
                self.pending.insert(
                    order,
                    Pending {
                        kind: Kind::Subscribe(id.clone()),
                        waiter,
                        at: Instant::now(),
                    },
                );
            }
            frames.push(f);
        }
        // Subscriptions that ended meanwhile.
        for (_, w) in self.sub_waiters.drain() {
            let _ = w.send(Ok(()));
        }
        let mut awaiting = HashSet::new();
        for p in self.pending.values() {
            if let Kind::Send(Some(f)) = &p.kind {
                if let Some(r) = f.headers.get("receipt") {
                    awaiting.insert(r.to_owned());
                }
                frames.push(f.clone());
                replayed += 1;
            }
        }
        self.replay = (!awaiting.is_empty()).then_some(Replay {
            replayed,
            awaiting,
            duplicates: 0,
        });
        let waiting: Vec<(Cmd, Instant)> = self.waiting.drain(..).collect();
        for (cmd, _) in waiting {
            frames.extend(self.prepare(cmd));
        }
        conn.write_all(frames).await?;
        Ok((replayed, resubscribed))
    }

    /// The client is done: everyone waiting learns why.
    fn finish(&mut self, error: ClientError) {
        if !matches!(error, ClientError::Closed) {
            // Debug, not warn: the same error reaches the application
            // through every request that fails with it, and a tool that
            // prints it would otherwise show it twice.
            tracing::debug!(error = %error, "client connection closed");
            self.emit(ConnectionEvent::Failed {
                reason: error.to_string(),
            });
        }
        let _ = self.state.closed.set(error.clone());
        for (_, p) in std::mem::take(&mut self.pending) {
            let _ = p.waiter.send(Err(error.clone()));
        }
        for (cmd, _) in self.waiting.drain(..) {
            if let Some((_, w)) = cmd.receipt {
                let _ = w.send(Err(error.clone()));
            }
        }
        for (_, w) in self.sub_waiters.drain() {
            let _ = w.send(Err(error.clone()));
        }
        self.subs.clear();
    }
}
