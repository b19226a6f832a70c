//! The session task: its state, its event loop, timers and teardown.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use futures::StreamExt;
use halyard_stomp::{CodecError, Command, Frame, Version};
use tokio::io::AsyncWriteExt;
// The runtime's clock, so tests can run timeouts in virtual time.
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use super::activity::ActivityReader;
use super::codec::{Inbound, SessionCodec};
use super::destination::StompDestination;
use super::error::Fatal;
use super::out::Out;
use super::outbound::{self, MessageHeaders};
use crate::acceptor::Transport;
use crate::core::{Delivery, DeliveryTx, Kick, SubKey};
use crate::metrics::{Metrics, Protocol};
use crate::model::Destination;
use crate::service::{Connection, Pending, Pipeline, Service, ServiceError, Tracked};

/// Deliveries written per wake-up before the session looks at other work.
const DELIVERY_BURST: usize = 128;
/// Bytes of output the session gathers before writing it out: deliveries
/// beyond it wait in their channel (already counted in the memory budget)
/// rather than being encoded into the buffer.
const OUT_HIGH_WATER: usize = 1024 * 1024;
/// A buffer grown past this (a large message went through) is given back
/// once written, so one large message does not pin its size for the
/// connection's life.
const OUT_KEEP_CAPACITY: usize = 4 * 1024 * 1024;

pub(super) struct Session {
    pub(super) service: Arc<Service>,
    /// Connection id: the CONNECTED `session` header, and in logs.
    pub(super) conn_id: Arc<str>,
    pub(super) peer: SocketAddr,
    /// The client certificate's subject, over mutual TLS.
    pub(super) tls_subject: Option<String>,
    pub(super) version: Version,
    /// The broker service's side of the connection, once CONNECTed.
    pub(super) conn: Option<Connection>,
    pub(super) reader: FramedRead<ActivityReader<Reader>, SessionCodec>,
    writer: Writer,
    /// Frames encoded but not yet written to the socket (large bodies by
    /// reference to their message).
    pub(super) out: Out,
    /// Each subscription's (first) destination and its spelling in MESSAGE
    /// frames: a message sent elsewhere (through a wildcard or a list) is
    /// shown with its own destination.
    pub(super) dest_headers: HashMap<SubKey, (Destination, String)>,
    /// Given to the service at CONNECT: where deliveries come from, and
    /// what a destination raises to close this connection (a subscriber
    /// too slow for too long).
    pub(super) deliveries_tx: Option<DeliveryTx>,
    pub(super) kick: Arc<Kick>,
    deliveries: mpsc::UnboundedReceiver<Delivery>,
    /// Receipts in frame order, each sent once its frame's work is done.
    pub(super) pipeline: Pipeline<Reply>,
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

/// What a frame wants back once its pipeline job is done.
pub(super) struct Reply {
    /// The receipt to send, if any.
    receipt: Option<String>,
    /// Close the connection once the receipt is written (DISCONNECT).
    then_close: bool,
    /// When a persistent SEND outside a transaction arrived: its receipt's
    /// latency goes into `halyard_receipt_seconds`.
    pub(super) timed: Option<std::time::Instant>,
}

pub(super) use crate::acceptor::{Reader, Writer};

/// Runs one STOMP connection (over TCP or TLS) to completion.
pub(crate) async fn run(service: Arc<Service>, t: Transport, stop: CancellationToken) {
    serve_as(service, t.read, t.write, t.peer, t.tls_subject, stop).await;
}

/// Runs one STOMP connection to completion.
#[cfg(test)]
pub(super) async fn serve(
    service: Arc<Service>,
    read: Reader,
    write: Writer,
    peer: SocketAddr,
    stop: CancellationToken,
) {
    serve_as(service, read, write, peer, None, stop).await;
}

/// Runs one STOMP connection to completion; `tls_subject` is its client
/// certificate's subject, if any.
async fn serve_as(
    service: Arc<Service>,
    read: Reader,
    write: Writer,
    peer: SocketAddr,
    tls_subject: Option<String>,
    stop: CancellationToken,
) {
    let core = service.core.clone();
    let conn_id: Arc<str> = service.next_connection_id().into();
    core.metrics.opened(Protocol::Stomp);
    tracing::info!(conn = %conn_id, %peer, tls_subject = ?tls_subject, "connection opened");
    let limits = &core.config.limits;
    let (deliveries_tx, deliveries) = mpsc::unbounded_channel();
    let now = Instant::now();
    let mut session = Session {
        // Small until a frame arrives (see the codec): an idle
        // connection's buffers cost little.
        reader: FramedRead::with_capacity(
            ActivityReader::new(read),
            SessionCodec::new(core.config.frame_limits()),
            0,
        ),
        pipeline: Pipeline::new(
            limits.max_inflight_frames,
            limits.max_inflight_bytes,
            core.config.confirm_spin(),
            &core.tasks,
        ),
        service,
        conn_id: conn_id.clone(),
        peer,
        tls_subject,
        version: Version::V1_0,
        conn: None,
        writer: write,
        // Grown as frames are written (and kept while the connection
        // streams); an idle connection holds only what CONNECTED took.
        out: Out::with_capacity(0),
        dest_headers: HashMap::new(),
        deliveries_tx: Some(deliveries_tx),
        kick: Arc::default(),
        deliveries,
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
    // Once, at the end, and on the heap: inline, the futures of closing
    // would sit in every open connection's task (a future is as large as
    // its largest await), and 10,000 idle connections have 100 MiB.
    Box::pin(close(session, end, core, conn_id, peer, stop)).await;
}

/// Ends a session: settles, releases and says why.
async fn close(
    mut session: Session,
    end: End,
    shared: Arc<crate::core::BrokerCore>,
    conn: Arc<str>,
    peer: SocketAddr,
    stop: CancellationToken,
) {
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
        let dups = session.conn.as_ref().map_or(0, |c| c.duplicates_dropped());
        outbound::receipt(&mut session.out, session.version, &r, dups);
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), session.write_out()).await;
    let _ = session.writer.shutdown().await;
    if matches!(end, End::Error(_)) && !stop.is_cancelled() {
        session.drain().await;
    }
    shared.metrics.closed(Protocol::Stomp);
    tracing::info!(conn = %conn, %peer, %reason,
        duration_ms = session.opened.elapsed().as_millis() as u64, "connection closed");
}

/// Input read and discarded after an ERROR, at most.
const DRAIN_BYTES: usize = 1024 * 1024;

impl Session {
    /// Reads and discards what the peer still sends (up to a second or
    /// [`DRAIN_BYTES`]) after an ERROR: closing a socket with unread input
    /// makes the kernel reset the connection, which can destroy the ERROR
    /// just written before the peer reads it.
    async fn drain(&mut self) {
        use tokio::io::AsyncReadExt;
        let reader = self.reader.get_mut();
        // On the heap: an array here would sit in every connection's task
        // (a future holds what any of its awaits needs), used or not.
        let mut scratch = vec![0u8; 8192];
        let mut total = 0;
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while total < DRAIN_BYTES {
                match reader.read(&mut scratch).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => total += n,
                }
            }
        })
        .await;
    }

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
                _ = &mut stopped => return Box::pin(self.shut_down()).await,
                why = &mut kicked => {
                    tracing::warn!(conn = %self.conn_id, peer = %self.peer, reason = %why,
                        "closing the connection");
                    Err(End::Error(Fatal::broker(why)))
                }
                Some((reply, result)) = self.pipeline.next() => {
                    self.finished(reply, result).map_err(End::Error)
                }
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
                        Box::pin(self.frame(frame)).await.map_err(End::Error)
                    }
                },
                _ = tokio::time::sleep_until(deadline) => {
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
            if let Some(conn) = &mut self.conn {
                conn.written().await;
            }
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
        self.pipeline.may_read(&self.service.core.memory)
    }

    /// Handles one frame from the client.
    async fn frame(&mut self, frame: Frame) -> Result<Flow, Fatal> {
        Metrics::inc(&self.service.core.metrics.frames_received_total);
        if self.disconnecting {
            return Ok(Flow::Continue);
        }
        let receipt = frame.headers.get("receipt").map(str::to_owned);
        let command = frame.command;
        let result = match (self.conn.is_some(), command) {
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
                    Some(r) => self.push(
                        0,
                        None,
                        Reply {
                            receipt: Some(r),
                            then_close: true,
                            timed: None,
                        },
                    ),
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
    fn finished(&mut self, reply: Reply, result: Result<(), ServiceError>) -> Result<Flow, Fatal> {
        if let Err(ServiceError::Denied(d)) = &result {
            // A refusal the connection survives (see `Session::refuse`):
            // an ERROR in the receipt's place, and the session goes on.
            // Named as the client names it (its own temporary queues
            // without the broker-wide scope).
            let shown = match &self.conn {
                Some(c) => d.dest.display_for(&c.temp_scope()),
                None => d.dest.to_string(),
            };
            let mut e = Fatal::protocol(format!(
                "not authorized: {} lacks the {} right on {shown}",
                d.who,
                d.right.as_str()
            ));
            e.receipt = reply.receipt;
            outbound::error(&mut self.out, self.version, &e);
            return Ok(Flow::Continue);
        }
        result.map_err(|e| {
            self.job_failed = true;
            Fatal::from(e)
        })?;
        if reply.then_close {
            // DISCONNECT: its receipt goes out after the teardown.
            self.disconnect_receipt = reply.receipt;
            return Ok(Flow::Close);
        }
        if let Some(r) = reply.receipt {
            let dups = self.conn.as_ref().map_or(0, |c| c.duplicates_dropped());
            outbound::receipt(&mut self.out, self.version, &r, dups);
            if let Some(arrived) = reply.timed {
                self.service
                    .core
                    .metrics
                    .receipt_seconds
                    .observe_duration(arrived.elapsed());
            }
        }
        Ok(Flow::Continue)
    }

    fn push(&mut self, bytes: usize, work: Pending, reply: Reply) -> Result<(), Fatal> {
        self.pipeline
            .push(bytes, work, reply)
            .map_err(|e| Fatal::broker(e.to_string()))
    }

    /// Queues `work` (holding `bytes` of message bodies); the frame's
    /// receipt, if any, is sent once it and every earlier frame's work is
    /// done. What needs no waiting and no receipt is not queued at all.
    pub(super) fn after(
        &mut self,
        bytes: usize,
        receipt: Option<String>,
        work: Pending,
    ) -> Result<(), Fatal> {
        self.after_timed(bytes, receipt, work, None)
    }

    /// [`Session::after`] for a SEND whose receipt is timed from `timed`.
    pub(super) fn after_timed(
        &mut self,
        bytes: usize,
        receipt: Option<String>,
        work: Pending,
        timed: Option<std::time::Instant>,
    ) -> Result<(), Fatal> {
        if work.is_none() && receipt.is_none() {
            return Ok(());
        }
        let reply = Reply {
            timed: timed.filter(|_| receipt.is_some()),
            receipt,
            then_close: false,
        };
        self.push(bytes, work, reply)
    }

    /// Answers a frame the service refused. A missing right ends nothing:
    /// as ActiveMQ does, the client gets an ERROR naming the destination
    /// and the right (in order with the receipts of earlier frames, with
    /// this frame's `receipt` as `receipt-id`) and keeps its connection,
    /// its subscriptions and its transactions. Anything else is fatal.
    pub(super) fn refuse(&mut self, e: ServiceError, receipt: Option<String>) -> Result<(), Fatal> {
        if matches!(e, ServiceError::Denied(_)) {
            let reply = Reply {
                receipt,
                then_close: false,
                timed: None,
            };
            return self.push(0, Some(Box::pin(std::future::ready(Err(e)))), reply);
        }
        Err(Fatal::from(e))
    }

    /// Queues a receipt that is due once every earlier frame's work is done.
    pub(super) fn receipt(&mut self, receipt: Option<String>) -> Result<(), Fatal> {
        self.after(0, receipt, None)
    }

    /// The connection's service side; frames other than CONNECT arrive only
    /// once it exists.
    pub(super) fn conn(&mut self) -> Result<&mut Connection, Fatal> {
        self.conn
            .as_mut()
            .ok_or_else(|| Fatal::protocol("not connected"))
    }

    /// Writes a MESSAGE frame for a delivery.
    fn deliver(&mut self, d: Delivery) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let Some(tracked) = conn.delivering(&d) else {
            // The subscription ended; its destination has taken the message
            // back already.
            return;
        };
        if tracked == Tracked::Duplicate {
            return;
        }
        let (Some(subscription), Some((subscribed, spelled))) =
            (conn.subscription_id(d.sub), self.dest_headers.get(&d.sub))
        else {
            return;
        };
        let own;
        let destination = if d.message.destination == *subscribed {
            spelled.as_str()
        } else {
            own = d.message.destination.display_for(&conn.temp_scope());
            own.as_str()
        };
        if tracked == Tracked::EndOfBrowse {
            outbound::browse_end(&mut self.out, self.version, subscription, destination);
            return;
        }
        let headers = MessageHeaders {
            subscription,
            destination,
            ack: match tracked {
                Tracked::Token(t) => Some(t.0),
                _ => None,
            },
        };
        outbound::message(&mut self.out, self.version, &headers, &d);
    }

    /// Writes buffered frames to the socket. A peer that reads nothing for
    /// `timeouts.frame-ms` is disconnected.
    async fn write_out(&mut self) -> std::io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let idle = Duration::from_millis(self.service.core.config.timeouts.frame_ms);
        self.out.write_to(&mut self.writer, idle).await?;
        if self.out.buf.capacity() > OUT_KEEP_CAPACITY {
            self.out.buf = BytesMut::with_capacity(8 * 1024);
        }
        self.last_write = Instant::now();
        Ok(())
    }

    fn grace(&self, interval: Duration) -> Duration {
        interval.mul_f64(self.service.core.config.heartbeat.grace_factor)
    }

    fn last_sign_of_life(&self) -> Instant {
        self.reader.get_ref().last_read().max(self.reading_since)
    }

    fn next_deadline(&self, reading: bool) -> Instant {
        let t = &self.service.core.config.timeouts;
        let frame = Duration::from_millis(t.frame_ms);
        let mut deadline = Instant::now() + Duration::from_secs(3600);
        if self.conn.is_none() {
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
        let t = &self.service.core.config.timeouts;
        if self.conn.is_none() && now >= self.opened + Duration::from_millis(t.connect_ms) {
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
            self.out.buf.put_u8(b'\n');
        }
        Ok(())
    }

    /// Waits (up to `timeouts.shutdown-ms`) for the pipeline's pending jobs
    /// and writes their receipts, stopping at one that fails.
    async fn settle_pending(&mut self) {
        let limit = Duration::from_millis(self.service.core.config.timeouts.shutdown_ms);
        let _ = tokio::time::timeout(limit, async {
            while !self.pipeline.is_idle() {
                let Some((reply, result)) = self.pipeline.next().await else {
                    break;
                };
                if self.finished(reply, result).is_err() {
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

    /// Returns everything the connection held.
    async fn teardown(&mut self) {
        self.pipeline.release(self.conn.as_mut()).await;
    }
}
