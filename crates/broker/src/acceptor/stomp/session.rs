//! The session task: its state, its event loop, timers and teardown.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use futures::StreamExt;
use halyard_stomp::{CodecError, Command, Frame, Version};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use super::activity::ActivityReader;
use super::codec::{Inbound, SessionCodec};
use super::effects::{Done, Effects};
use super::error::Fatal;
use super::outbound::{self, MessageHeaders};
use super::subscriptions::{AckMode, Subscriptions};
use super::transaction::Transaction;
use crate::broker::Shared;
use crate::core::{Control, Delivery, DeliveryTx, Kick};
use crate::metrics::Metrics;
use crate::model::Destination;
use crate::store::Record;

/// Deliveries written per wake-up before the session looks at other work.
const DELIVERY_BURST: usize = 128;
/// Bytes of encoded frames the session buffers before writing them out:
/// deliveries beyond it wait in their channel (already counted in the
/// memory budget) rather than being copied into the buffer.
const OUT_HIGH_WATER: usize = 1024 * 1024;
/// A buffer grown past this (a large message went through) is given back
/// once written, so one large message does not pin its size for the
/// connection's life.
const OUT_KEEP_CAPACITY: usize = 4 * 1024 * 1024;

pub(super) struct Session {
    pub(super) shared: Arc<Shared>,
    /// Connection id: the CONNECTED `session` header, and in logs.
    pub(super) conn: Arc<str>,
    /// The scope of this connection's `/temp-queue/` names: 128 random
    /// bits, shown to nobody, so the broker-wide name of a temporary queue
    /// (`/remote-temp-queue/<scope>.<name>`) cannot be guessed — only
    /// those the owner hands it to (in a `reply-to`) can send to it.
    pub(super) temp_scope: Arc<str>,
    pub(super) peer: SocketAddr,
    pub(super) version: Version,
    pub(super) connected: bool,
    pub(super) client_id: Option<String>,
    pub(super) reader: FramedRead<ActivityReader<OwnedReadHalf>, SessionCodec>,
    writer: OwnedWriteHalf,
    /// Frames encoded but not yet written to the socket.
    pub(super) out: BytesMut,
    pub(super) subs: Subscriptions,
    pub(super) txs: HashMap<String, Transaction>,
    pub(super) temp_queues: Vec<Destination>,
    pub(super) deliveries_tx: DeliveryTx,
    /// Raised by a destination to close this connection (a subscriber
    /// too slow for too long).
    pub(super) kick: Arc<Kick>,
    deliveries: mpsc::UnboundedReceiver<Delivery>,
    pub(super) effects: Effects,
    /// Auto-acknowledged deliveries written to `out`, acknowledged to their
    /// destinations once the write to the socket has succeeded.
    auto_acks: Vec<(crate::core::SubKey, u64, bool)>,
    pub(super) heartbeat_send: Option<Duration>,
    pub(super) heartbeat_receive: Option<Duration>,
    opened: Instant,
    last_write: Instant,
    reading_since: Instant,
    partial_since: Option<Instant>,
    /// A DISCONNECT was received; frames after it are ignored.
    pub(super) disconnecting: bool,
    /// A pipeline job failed (its ERROR ends the connection).
    job_failed: bool,
    /// The DISCONNECT's receipt, sent once the connection's state is
    /// released.
    disconnect_receipt: Option<String>,
}

/// How a session ended.
enum End {
    Eof,
    Io(std::io::Error),
    Disconnect,
    Error(Fatal),
}

/// What a handled frame asks of the loop.
pub(super) enum Flow {
    Continue,
    Close,
}

/// Runs one STOMP connection to completion.
pub(crate) async fn run(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    stop: CancellationToken,
) {
    let conn: Arc<str> = shared.next_connection_id().into();
    Metrics::inc(&shared.metrics.connections_total);
    Metrics::inc(&shared.metrics.connections);
    tracing::info!(conn = %conn, %peer, "connection opened");
    let (read, write) = stream.into_split();
    let limits = &shared.config.limits;
    let (deliveries_tx, deliveries) = mpsc::unbounded_channel();
    let now = Instant::now();
    let mut session = Session {
        reader: FramedRead::new(
            ActivityReader::new(read),
            SessionCodec::new(shared.config.frame_limits()),
        ),
        effects: Effects::new(limits.max_inflight_frames, limits.max_inflight_bytes),
        shared: shared.clone(),
        conn: conn.clone(),
        temp_scope: temp_scope(&conn).into(),
        peer,
        version: Version::V1_0,
        connected: false,
        client_id: None,
        writer: write,
        out: BytesMut::with_capacity(8 * 1024),
        subs: Subscriptions::default(),
        txs: HashMap::new(),
        temp_queues: Vec::new(),
        deliveries_tx,
        kick: Arc::default(),
        deliveries,
        auto_acks: Vec::new(),
        heartbeat_send: None,
        heartbeat_receive: None,
        opened: now,
        last_write: now,
        reading_since: now,
        partial_since: None,
        disconnecting: false,
        job_failed: false,
        disconnect_receipt: None,
    };
    let end = session.serve(&stop).await;
    if matches!(end, End::Error(_)) && !session.job_failed && !stop.is_cancelled() {
        // A frame was refused (say the store is full): the frames before it
        // that were stored get their RECEIPTs before the ERROR.
        session.settle_pending().await;
    }
    let reason = match &end {
        End::Eof => "peer closed the connection".to_owned(),
        End::Io(e) => format!("I/O error: {e}"),
        End::Disconnect => "DISCONNECT".to_owned(),
        End::Error(e) => format!("ERROR sent: {}", e.message),
    };
    // Release everything (subscriptions, transactions, the client id)
    // before the client hears the end: a client that reconnects as soon as
    // it gets its RECEIPT or ERROR must find its client id free.
    session.teardown().await;
    if let End::Error(e) = &end {
        if e.client_fault {
            Metrics::inc(&shared.metrics.protocol_errors_total);
        }
        outbound::error(&mut session.out, session.version, e);
    }
    if let Some(r) = session.disconnect_receipt.take() {
        outbound::receipt(&mut session.out, session.version, &r);
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), session.write_out()).await;
    let _ = session.writer.shutdown().await;
    Metrics::dec(&shared.metrics.connections);
    tracing::info!(conn = %conn, %peer, %reason,
        duration_ms = session.opened.elapsed().as_millis() as u64, "connection closed");
}

/// 128 random bits in hex; if the system cannot give randomness (it always
/// can on Linux), a hash of the connection id with a per-process random key.
fn temp_scope(conn: &str) -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        use std::hash::{BuildHasher, RandomState};
        let h = RandomState::new().hash_one(conn);
        bytes[..8].copy_from_slice(&h.to_le_bytes());
        bytes[8..].copy_from_slice(&RandomState::new().hash_one(h).to_le_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Session {
    async fn serve(&mut self, stop: &CancellationToken) -> End {
        let mut was_reading = true;
        // Made once and polled on every turn: registering a new waiter on
        // each turn of this hot loop costs more than the work it guards.
        let stopped = stop.cancelled();
        let kick = self.kick.clone();
        let kicked = kick.kicked();
        tokio::pin!(stopped, kicked);
        loop {
            let reading = self.may_read();
            if reading && !was_reading {
                // Time spent not reading is ours, not the peer's.
                let now = Instant::now();
                self.reading_since = now;
                if self.partial_since.is_some() {
                    self.partial_since = Some(now);
                }
            }
            was_reading = reading;
            let deadline = self.next_deadline(reading);
            let step: Result<Flow, End> = tokio::select! {
                biased;
                _ = &mut stopped => return self.shut_down().await,
                why = &mut kicked => {
                    tracing::warn!(conn = %self.conn, peer = %self.peer, reason = %why,
                        "closing the connection");
                    Err(End::Error(Fatal::broker(why)))
                }
                Some(done) = self.effects.done.recv() => self.finished(done).map_err(End::Error),
                Some(d) = self.deliveries.recv() => {
                    self.deliver(d);
                    for _ in 1..DELIVERY_BURST {
                        if self.out.len() >= OUT_HIGH_WATER {
                            break;
                        }
                        match self.deliveries.try_recv() {
                            Ok(d) => self.deliver(d),
                            Err(_) => break,
                        }
                    }
                    Ok(Flow::Continue)
                }
                item = self.reader.next(), if reading => match item {
                    None => Err(End::Eof),
                    Some(Err(CodecError::Io(e))) => Err(End::Io(e)),
                    Some(Err(CodecError::Parse(e))) => Err(End::Error(Fatal::protocol(e.to_string()))),
                    Some(Err(e)) => Err(End::Error(Fatal::protocol(e.to_string()))),
                    Some(Ok(Inbound::Heartbeat)) => Ok(Flow::Continue),
                    Some(Ok(Inbound::PartialStarted)) => {
                        self.partial_since = Some(Instant::now());
                        Ok(Flow::Continue)
                    }
                    Some(Ok(Inbound::Frame(frame))) => {
                        self.partial_since = None;
                        self.frame(frame).await.map_err(End::Error)
                    }
                },
                _ = tokio::time::sleep_until(deadline.into()) => {
                    self.timer(reading).map(|()| Flow::Continue).map_err(End::Error)
                }
            };
            let flow = match step {
                Ok(flow) => flow,
                Err(end) => return end,
            };
            if let Err(e) = self.write_out().await {
                return End::Io(e);
            }
            self.flush_auto_acks().await;
            if let Flow::Close = flow {
                return End::Disconnect;
            }
        }
    }

    /// Whether to read another frame: the pipeline has room and, while the
    /// broker is over its memory budget, holds no message of this
    /// connection's (so a producer waits, reading nothing more, while a
    /// consumer's ACKs, which carry no message, still get through).
    fn may_read(&self) -> bool {
        self.effects.has_room() && (self.effects.pending_bytes() == 0 || !self.shared.memory.over())
    }

    /// Handles one frame from the client.
    async fn frame(&mut self, frame: Frame) -> Result<Flow, Fatal> {
        Metrics::inc(&self.shared.metrics.frames_received_total);
        if self.disconnecting {
            return Ok(Flow::Continue);
        }
        let receipt = frame.headers.get("receipt").map(str::to_owned);
        let command = frame.command;
        let result = match (self.connected, command) {
            (false, Command::Connect | Command::Stomp) => self.connect(frame).await,
            (false, _) => Err(Fatal::protocol(format!(
                "expected a CONNECT or STOMP frame, got {command}"
            ))),
            (true, Command::Connect | Command::Stomp) => Err(Fatal::protocol("already connected")),
            (true, Command::Send) => self.send(frame, receipt.clone()).await,
            (true, Command::Subscribe) => self.subscribe(frame, receipt.clone()).await,
            (true, Command::Unsubscribe) => self.unsubscribe(frame, receipt.clone()).await,
            (true, Command::Ack) => self.ack(frame, receipt.clone(), false).await,
            (true, Command::Nack) => self.ack(frame, receipt.clone(), true).await,
            (true, Command::Begin) => self.begin(frame, receipt.clone()),
            (true, Command::Commit) => self.commit(frame, receipt.clone()).await,
            (true, Command::Abort) => self.abort(frame, receipt.clone()).await,
            (true, Command::Disconnect) => {
                self.disconnecting = true;
                match receipt.clone() {
                    Some(r) => {
                        self.effects.disconnect(r);
                        Ok(())
                    }
                    None => return Ok(Flow::Close),
                }
            }
            (true, Command::Connected | Command::Message | Command::Receipt | Command::Error) => {
                Err(Fatal::protocol(format!(
                    "{command} frames are sent by servers, not clients"
                )))
            }
        };
        result
            .map(|()| Flow::Continue)
            .map_err(|e| e.or_receipt(receipt.as_deref()))
    }

    /// A pipeline job finished: send its receipt.
    fn finished(&mut self, done: Done) -> Result<Flow, Fatal> {
        self.effects.finished(&done);
        let receipt = done.result.inspect_err(|_| self.job_failed = true)?;
        if done.then_close {
            // DISCONNECT: its receipt goes out after the teardown.
            self.disconnect_receipt = receipt;
            return Ok(Flow::Close);
        }
        if let Some(r) = receipt {
            outbound::receipt(&mut self.out, self.version, &r);
        }
        Ok(Flow::Continue)
    }

    /// Writes a MESSAGE frame for a delivery.
    fn deliver(&mut self, d: Delivery) {
        let Some(sub) = self.subs.get(d.sub) else {
            // The subscription ended; its destination has taken the message
            // back already.
            return;
        };
        let ack_mode = sub.ack;
        let tag = match ack_mode {
            AckMode::Auto => None,
            _ => Some(
                self.subs
                    .track(d.sub, d.message.seq, d.message.id.clone(), d.stored),
            ),
        };
        let Some(sub) = self.subs.get(d.sub) else {
            return;
        };
        let headers = MessageHeaders {
            subscription: &sub.id,
            destination: &sub.destination_header,
            ack: tag,
        };
        outbound::message(&mut self.out, self.version, &headers, &d);
        let m = &self.shared.metrics;
        Metrics::inc(&m.messages_delivered_total);
        if d.deliveries > 1 {
            Metrics::inc(&m.messages_redelivered_total);
        }
        if ack_mode == AckMode::Auto {
            self.auto_acks.push((d.sub, d.message.seq, d.stored));
        }
    }

    /// Acknowledges auto-ack deliveries that have been written.
    async fn flush_auto_acks(&mut self) {
        if self.auto_acks.is_empty() {
            return;
        }
        let mut acks = std::mem::take(&mut self.auto_acks);
        acks.sort_by_key(|(sub, _, _)| *sub);
        let mut removes = Vec::new();
        for group in acks.chunk_by(|a, b| a.0 == b.0) {
            let Some(sub) = self.subs.get(group[0].0) else {
                continue;
            };
            let seqs: Vec<u64> = group.iter().map(|(_, seq, _)| *seq).collect();
            for (_, seq, stored) in group {
                if *stored {
                    removes.push(Record::Remove { seq: *seq });
                }
            }
            Metrics::add(&self.shared.metrics.messages_acked_total, seqs.len() as u64);
            let _ = sub
                .handle
                .control(Control::Ack {
                    consumer: sub.consumer,
                    seqs,
                })
                .await;
        }
        if !removes.is_empty() {
            // Nobody waits for these: after a crash before they are durable
            // the messages are redelivered, which auto mode allows.
            let _ = self.shared.store.record(removes).await;
        }
    }

    /// Writes buffered frames to the socket. A peer that does not read for
    /// `timeouts.frame-ms` is disconnected.
    async fn write_out(&mut self) -> std::io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let limit = Duration::from_millis(self.shared.config.timeouts.frame_ms);
        match tokio::time::timeout(limit, self.writer.write_all_buf(&mut self.out)).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "peer stopped reading",
                ));
            }
        }
        self.out.clear();
        if self.out.capacity() > OUT_KEEP_CAPACITY {
            self.out = BytesMut::with_capacity(8 * 1024);
        }
        self.last_write = Instant::now();
        Ok(())
    }

    fn grace(&self, interval: Duration) -> Duration {
        interval.mul_f64(self.shared.config.heartbeat.grace_factor)
    }

    fn last_sign_of_life(&self) -> Instant {
        self.reader.get_ref().last_read().max(self.reading_since)
    }

    fn next_deadline(&self, reading: bool) -> Instant {
        let t = &self.shared.config.timeouts;
        let frame = Duration::from_millis(t.frame_ms);
        let mut deadline = Instant::now() + Duration::from_secs(3600);
        if !self.connected {
            deadline = deadline.min(self.opened + Duration::from_millis(t.connect_ms));
        }
        if let Some(r) = self.heartbeat_receive
            && reading
        {
            deadline = deadline.min(self.last_sign_of_life() + self.grace(r));
        }
        if let Some(s) = self.heartbeat_send {
            deadline = deadline.min(self.last_write + s);
        }
        if let Some(p) = self.partial_since
            && reading
        {
            deadline = deadline.min(p + frame);
        }
        deadline
    }

    fn timer(&mut self, reading: bool) -> Result<(), Fatal> {
        let now = Instant::now();
        let t = &self.shared.config.timeouts;
        if !self.connected && now >= self.opened + Duration::from_millis(t.connect_ms) {
            return Err(Fatal::protocol(format!(
                "no CONNECT frame received within {} ms",
                t.connect_ms
            )));
        }
        if reading {
            if let Some(r) = self.heartbeat_receive {
                let silent = now.saturating_duration_since(self.last_sign_of_life());
                if silent >= self.grace(r) {
                    return Err(Fatal::protocol(format!(
                        "no frame or heart-beat received for {} ms (heart-beat interval {} ms)",
                        silent.as_millis(),
                        r.as_millis()
                    )));
                }
            }
            if let Some(since) = self.partial_since
                && now.saturating_duration_since(since) >= Duration::from_millis(t.frame_ms)
            {
                return Err(Fatal::protocol(format!(
                    "incomplete frame: a frame was started but not completed within {} ms",
                    t.frame_ms
                )));
            }
        }
        if let Some(s) = self.heartbeat_send
            && now.saturating_duration_since(self.last_write) >= s
            && self.out.is_empty()
        {
            self.out.put_u8(b'\n');
        }
        Ok(())
    }

    /// Waits (up to `timeouts.shutdown-ms`) for the pipeline's pending jobs
    /// and writes their receipts, stopping at one that fails.
    async fn settle_pending(&mut self) {
        let limit = Duration::from_millis(self.shared.config.timeouts.shutdown_ms);
        let _ = tokio::time::timeout(limit, async {
            while !self.effects.is_idle() {
                let Some(done) = self.effects.done.recv().await else {
                    break;
                };
                if self.finished(done).is_err() {
                    break;
                }
            }
        })
        .await;
    }

    /// The broker is stopping: stop reading, give in-flight work up to
    /// `timeouts.shutdown-ms` to finish (sending its receipts), then close.
    async fn shut_down(&mut self) -> End {
        self.settle_pending().await;
        End::Error(Fatal::broker("broker is shutting down"))
    }

    /// Returns everything the connection held: transactions roll back,
    /// subscriptions end (their unacknowledged messages are redelivered),
    /// temporary queues are deleted.
    async fn teardown(&mut self) {
        self.effects.close();
        for (_, tx) in self.txs.drain() {
            tx.roll_back().await;
        }
        for sub in self.subs.drain() {
            let _ = sub
                .handle
                .control(Control::Unsubscribe {
                    consumer: sub.consumer,
                    done: None,
                })
                .await;
        }
        for dest in self.temp_queues.drain(..) {
            self.shared.delete_destination(&dest);
        }
        if let Some(id) = self.client_id.take() {
            self.shared.release_client_id(&id);
        }
    }
}
