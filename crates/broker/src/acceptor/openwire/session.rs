//! The session task: its state, its event loop, replies, timers and
//! teardown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use halyard_openwire::{self as ow, Codec, Command};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
// The runtime's clock, so tests can run timeouts in virtual time.
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::error::{JMS_EXCEPTION, exception_class};
use super::state::{Advisories, Consumers, Producers, Transactions};
use crate::acceptor::{Reader, Transport, Writer};
use crate::core::{Delivery, DeliveryTx, Kick};
use crate::metrics::{Metrics, Protocol};
use crate::service::{Connection, Pending, Pipeline, Service, ServiceError};

/// Deliveries written per wake-up before the session looks at other work.
const DELIVERY_BURST: usize = 128;
/// Bytes of output gathered before writing it out.
const OUT_HIGH_WATER: usize = 1024 * 1024;
/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 64 * 1024;
/// A buffer grown past this (a large message went through) is given back
/// once emptied.
const KEEP_CAPACITY: usize = 4 * 1024 * 1024;
/// Headroom above `limits.max-body-bytes` for a frame's other fields.
const FRAME_OVERHEAD: u64 = 64 * 1024;

pub(super) struct Session {
    pub(super) service: Arc<Service>,
    /// The broker's id for the connection, in logs.
    pub(super) conn_id: Arc<str>,
    pub(super) peer: SocketAddr,
    pub(super) tls_subject: Option<String>,
    pub(super) codec: Codec,
    /// What the broker offered in its WireFormatInfo.
    pub(super) offered: ow::WireFormatOptions,
    /// The client's WireFormatInfo came and the format is settled.
    pub(super) negotiated: bool,
    /// The broker service's side of the connection, once ConnectionInfo
    /// came.
    pub(super) conn: Option<Connection>,
    /// The client's own id for the connection (OpenWire's ConnectionId).
    pub(super) client_connection: Option<String>,
    reader: Reader,
    rbuf: BytesMut,
    writer: Writer,
    pub(super) out: BytesMut,
    pub(super) deliveries_tx: Option<DeliveryTx>,
    pub(super) kick: Arc<Kick>,
    deliveries: mpsc::UnboundedReceiver<Delivery>,
    /// Replies in request order, each sent once its request's work is done.
    pub(super) pipeline: Pipeline<Reply>,
    pub(super) consumers: Consumers,
    pub(super) producers: Producers,
    pub(super) txs: Transactions,
    /// The advisory consumer, once the client made one.
    pub(super) advisories: Option<Advisories>,
    /// The negotiated inactivity timeout: a KeepAliveInfo goes out when
    /// the broker has been quiet for a third of it, and a client silent for
    /// twice it is disconnected.
    pub(super) inactivity: Option<Duration>,
    /// When the inactivity check on reads starts (the negotiated initial
    /// delay).
    pub(super) inactivity_from: Instant,
    opened: Instant,
    last_read: Instant,
    last_write: Instant,
}

/// What a request wants once its work is done.
#[derive(Default)]
pub(super) struct Reply {
    /// The request's `command_id`, when it wants a Response.
    pub(super) correlation: Option<i32>,
    /// A producer's window to give back (async sends with a window).
    pub(super) producer_ack: Option<(ow::ProducerId, i32)>,
    /// The refusal to send instead of a Response, decided when the request
    /// came (it waits its turn behind earlier requests' replies).
    pub(super) refusal: Option<ow::Throwable>,
    /// The exception class a failure of the work is reported as, instead
    /// of the one its error maps to (a failed commit rolled back).
    pub(super) failure_class: Option<&'static str>,
    /// When a persistent message sent outside a transaction arrived: its
    /// Response's latency goes into `halyard_receipt_seconds`.
    pub(super) timed: Option<std::time::Instant>,
}

impl Reply {
    /// A Response to `command_id` if `required`.
    pub(super) fn to(command_id: i32, required: bool) -> Reply {
        Reply {
            correlation: required.then_some(command_id),
            ..Reply::default()
        }
    }
}

/// What ends the connection: its message goes to the client in a
/// ConnectionError.
#[derive(Debug)]
pub(super) struct Fatal {
    pub(super) message: String,
    /// The client broke the protocol (counted as a protocol error).
    pub(super) client_fault: bool,
}

impl Fatal {
    pub(super) fn protocol(message: impl Into<String>) -> Fatal {
        Fatal {
            message: message.into(),
            client_fault: true,
        }
    }

    pub(super) fn broker(message: impl Into<String>) -> Fatal {
        Fatal {
            message: message.into(),
            client_fault: false,
        }
    }
}

/// How a session ended.
enum End {
    Eof,
    Io(std::io::Error),
    /// The client said goodbye (ShutdownInfo, or removed its connection).
    Shutdown,
    Error(Fatal),
}

/// What a handled command asks of the loop.
pub(super) enum Flow {
    Continue,
    Close,
}

/// Runs one OpenWire connection (over TCP or TLS) to completion.
pub(crate) async fn run(service: Arc<Service>, t: Transport, stop: CancellationToken) {
    let core = service.core.clone();
    let conn_id: Arc<str> = service.next_connection_id().into();
    core.metrics.opened(Protocol::OpenWire);
    let peer = t.peer;
    tracing::info!(conn = %conn_id, %peer, protocol = "openwire", tls_subject = ?t.tls_subject,
        "connection opened");
    let limits = &core.config.limits;
    let options = &core.config.openwire_options;
    let max_frame = match options.max_frame_size {
        0 => limits.max_body_bytes as u64 + FRAME_OVERHEAD,
        n => n,
    };
    let offered = ow::WireFormatOptions {
        tight_encoding_enabled: options.tight_encoding,
        cache_enabled: options.cache_enabled,
        cache_size: i32::from(options.cache_size),
        max_inactivity_duration: i64::try_from(options.max_inactivity_ms).unwrap_or(i64::MAX),
        max_frame_size: i64::try_from(max_frame).unwrap_or(i64::MAX),
        ..ow::WireFormatOptions::default()
    };
    let (deliveries_tx, deliveries) = mpsc::unbounded_channel();
    let now = Instant::now();
    let mut session = Session {
        codec: Codec::with_format(ow::Negotiated::initial(max_frame)),
        offered,
        negotiated: false,
        pipeline: Pipeline::new(
            limits.max_inflight_frames,
            limits.max_inflight_bytes,
            core.config.confirm_spin(),
            &core.tasks,
        ),
        service,
        conn_id: conn_id.clone(),
        peer,
        tls_subject: t.tls_subject,
        conn: None,
        client_connection: None,
        reader: t.read,
        rbuf: BytesMut::with_capacity(READ_CHUNK),
        writer: t.write,
        out: BytesMut::with_capacity(8 * 1024),
        deliveries_tx: Some(deliveries_tx),
        kick: Arc::default(),
        deliveries,
        consumers: Consumers::default(),
        producers: Producers::default(),
        txs: Transactions::default(),
        advisories: None,
        inactivity: None,
        inactivity_from: now,
        opened: now,
        last_read: now,
        last_write: now,
    };
    let end = match session.offer() {
        Ok(()) => session.serve(&stop).await,
        Err(e) => End::Error(e),
    };
    if matches!(end, End::Error(_)) && !stop.is_cancelled() {
        session.settle_pending().await;
    }
    let reason = match &end {
        End::Eof => "peer closed the connection".to_owned(),
        End::Io(e) => format!("I/O error: {e}"),
        End::Shutdown => "client shut down".to_owned(),
        End::Error(e) => format!("error: {}", e.message),
    };
    // Everything is released (subscriptions, transactions, the client id)
    // before the client hears the end, so that one reconnecting at once
    // finds its client id free.
    session.teardown().await;
    if let End::Error(e) = &end {
        if e.client_fault {
            Metrics::inc(&core.metrics.protocol_errors_total);
        }
        let error = ow::ConnectionError {
            exception: Some(ow::Throwable::new(JMS_EXCEPTION, e.message.clone())),
            ..ow::ConnectionError::default()
        };
        session.send(Command::ConnectionError(error));
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), session.write_out()).await;
    let _ = session.writer.shutdown().await;
    core.metrics.closed(Protocol::OpenWire);
    tracing::info!(conn = %conn_id, %peer, %reason,
        duration_ms = session.opened.elapsed().as_millis() as u64, "connection closed");
}

/// The advisory consumer's next event; never, without one.
async fn next_advisory(
    a: &mut Option<Advisories>,
) -> Option<Result<crate::service::temporary::TempEvent, tokio::sync::broadcast::error::RecvError>>
{
    match a {
        Some(a) => Some(a.next().await),
        None => std::future::pending().await,
    }
}

impl Session {
    /// Sends the broker's WireFormatInfo: both sides speak first.
    fn offer(&mut self) -> Result<(), Fatal> {
        let info = self
            .offered
            .to_info()
            .map_err(|e| Fatal::broker(format!("cannot encode WireFormatInfo: {e}")))?;
        self.send(Command::WireFormatInfo(info));
        Ok(())
    }

    async fn serve(&mut self, stop: &CancellationToken) -> End {
        // The broker speaks first (its WireFormatInfo), without waiting for
        // the client to say something.
        if let Err(e) = self.write_out().await {
            return End::Io(e);
        }
        let stopped = stop.cancelled();
        let kick = self.kick.clone();
        let kicked = kick.kicked();
        tokio::pin!(stopped, kicked);
        loop {
            let reading = self.may_read();
            // A whole command already read is handled before anything else
            // is read.
            let step: Result<Flow, End> = match self.buffered_command(reading) {
                Err(e) => Err(End::Error(e)),
                Ok(Some(cmd)) => self.command(cmd).await.map_err(End::Error),
                Ok(None) => {
                    let deadline = self.next_deadline();
                    tokio::select! {
                        biased;
                        _ = &mut stopped => return self.shut_down().await,
                        why = &mut kicked => {
                            tracing::warn!(conn = %self.conn_id, peer = %self.peer, reason = %why,
                                "closing the connection");
                            Err(End::Error(Fatal::broker(why)))
                        }
                        Some((reply, result)) = self.pipeline.next() => {
                            self.finished(reply, result);
                            Ok(Flow::Continue)
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
                        Some(e) = next_advisory(&mut self.advisories) => {
                            self.temp_event(e);
                            Ok(Flow::Continue)
                        }
                        r = self.reader.read_buf(&mut self.rbuf), if reading => match r {
                            Ok(0) => Err(End::Eof),
                            Ok(_) => {
                                self.last_read = Instant::now();
                                Ok(Flow::Continue)
                            }
                            Err(e) => Err(End::Io(e)),
                        },
                        _ = tokio::time::sleep_until(deadline) => {
                            self.timer().map(|()| Flow::Continue).map_err(End::Error)
                        }
                    }
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
                return End::Shutdown;
            }
        }
    }

    /// The next whole command in the input buffer, if reading.
    ///
    /// Room to read into is made only when no whole command is left (so
    /// the buffer holds part of one command plus one read): what a
    /// connection reads ahead stays about `READ_CHUNK`. Making room while
    /// not reading (the pipeline full, the memory budget spent) grew a
    /// buffer full of unread commands by doubling at every such pause,
    /// which with 16 asynchronous producers was 109 MiB of read buffers
    /// (issue #19, scenario ow-d).
    fn buffered_command(&mut self, reading: bool) -> Result<Option<Command>, Fatal> {
        if !reading {
            return Ok(None);
        }
        let cmd = if self.rbuf.is_empty() {
            None
        } else {
            self.codec
                .decode(&mut self.rbuf)
                .map_err(|e| Fatal::protocol(format!("malformed OpenWire frame: {e}")))?
        };
        if self.rbuf.capacity() > KEEP_CAPACITY && self.rbuf.len() < READ_CHUNK {
            // Grown for a large message: given back once it has gone.
            let rest = std::mem::replace(&mut self.rbuf, BytesMut::with_capacity(READ_CHUNK));
            self.rbuf.extend_from_slice(&rest);
        }
        if cmd.is_none() && self.rbuf.capacity() - self.rbuf.len() < 1024 {
            self.rbuf.reserve(READ_CHUNK);
        }
        Ok(cmd)
    }

    /// Whether to read another command: the pipeline has room and, while
    /// the broker is over its memory budget, holds no message of this
    /// connection's (a producer waits; a consumer's acks still get in).
    fn may_read(&self) -> bool {
        self.pipeline.may_read(&self.service.core.memory)
    }

    /// Handles one command from the client.
    async fn command(&mut self, cmd: Command) -> Result<Flow, Fatal> {
        Metrics::inc(&self.service.core.metrics.frames_received_total);
        if !self.negotiated {
            return match cmd {
                Command::WireFormatInfo(info) => self.negotiate(&info).map(|()| Flow::Continue),
                other => Err(Fatal::protocol(format!(
                    "expected WireFormatInfo first, got data type {}",
                    other.data_type()
                ))),
            };
        }
        if self.conn.is_none() {
            return match cmd {
                Command::ConnectionInfo(info) => self.connection_info(info).await,
                Command::KeepAliveInfo(k) => self.keep_alive(&k).map(|()| Flow::Continue),
                Command::ShutdownInfo(_) => Ok(Flow::Close),
                Command::WireFormatInfo(_) => Ok(Flow::Continue),
                // The failover transport introduces itself this way first.
                Command::ConnectionControl(c) => self
                    .reply(Reply::to(c.command_id, c.response_required))
                    .map(|()| Flow::Continue),
                other => Err(Fatal::protocol(format!(
                    "expected ConnectionInfo, got data type {}",
                    other.data_type()
                ))),
            };
        }
        match cmd {
            Command::Message(m) => self.message(m).await?,
            Command::MessageAck(a) => self.ack(a).await?,
            Command::MessagePull(p) => self.pull(p).await?,
            Command::ConsumerInfo(c) => self.consumer_info(c).await?,
            Command::ProducerInfo(p) => self.producer_info(p)?,
            Command::SessionInfo(s) => self.reply(Reply::to(s.command_id, s.response_required))?,
            Command::RemoveInfo(r) => return self.remove(r).await,
            Command::RemoveSubscriptionInfo(r) => self.remove_subscription(r).await?,
            Command::TransactionInfo(t) => self.transaction(t).await?,
            Command::DestinationInfo(d) => self.destination_info(d)?,
            Command::KeepAliveInfo(k) => self.keep_alive(&k)?,
            Command::ShutdownInfo(_) => return Ok(Flow::Close),
            Command::ConnectionInfo(_) => {
                return Err(Fatal::protocol("a second ConnectionInfo on one connection"));
            }
            Command::BrokerInfo(_) => {
                return Err(Fatal::protocol(
                    "network connectors between brokers are not supported",
                ));
            }
            // What a client may send and means nothing to this broker.
            Command::FlushCommand(c) => self.reply(Reply::to(c.command_id, c.response_required))?,
            Command::ControlCommand(c) => {
                self.reply(Reply::to(c.command_id, c.response_required))?
            }
            Command::ConsumerControl(c) => self.consumer_control(c).await?,
            Command::ConnectionControl(c) => {
                self.reply(Reply::to(c.command_id, c.response_required))?
            }
            Command::ProducerAck(_)
            | Command::MessageDispatchNotification(_)
            | Command::WireFormatInfo(_) => {}
            other => {
                return Err(Fatal::protocol(format!(
                    "unexpected command (data type {}) from a client",
                    other.data_type()
                )));
            }
        }
        Ok(Flow::Continue)
    }

    /// Answers a KeepAliveInfo that asks for an answer.
    fn keep_alive(&mut self, k: &ow::KeepAliveInfo) -> Result<(), Fatal> {
        if k.response_required {
            self.send(Command::KeepAliveInfo(ow::KeepAliveInfo::default()));
        }
        Ok(())
    }

    /// Encodes `cmd` into the output. A command that cannot be encoded (a
    /// string longer than OpenWire allows) is logged and dropped: it is the
    /// broker's to send, and nothing the client did.
    pub(super) fn send(&mut self, cmd: Command) {
        if let Err(e) = self.codec.encode(&cmd, &mut self.out) {
            tracing::error!(conn = %self.conn_id, data_type = cmd.data_type(), error = %e,
                "cannot encode an OpenWire command; dropped");
        }
    }

    /// Queues `reply`, due once `work` (holding `bytes` of message bodies)
    /// and every earlier request's work is done. What needs neither waiting
    /// nor a reply is not queued.
    pub(super) fn after(&mut self, bytes: usize, reply: Reply, work: Pending) -> Result<(), Fatal> {
        if work.is_none()
            && reply.correlation.is_none()
            && reply.producer_ack.is_none()
            && reply.refusal.is_none()
        {
            return Ok(());
        }
        self.pipeline
            .push(bytes, work, reply)
            .map_err(|e| Fatal::broker(e.to_string()))
    }

    /// Queues `reply` behind earlier requests' replies.
    pub(super) fn reply(&mut self, reply: Reply) -> Result<(), Fatal> {
        self.after(0, reply, None)
    }

    /// Refuses a request: an ExceptionResponse if the client waits for an
    /// answer, else a (non-fatal) ConnectionError its exception listener
    /// gets. In order with earlier replies either way.
    pub(super) fn refuse(
        &mut self,
        command_id: i32,
        response_required: bool,
        class: &'static str,
        message: String,
    ) -> Result<(), Fatal> {
        tracing::debug!(conn = %self.conn_id, class, %message, "request refused");
        self.reply(Reply {
            correlation: Some(command_id).filter(|_| response_required),
            refusal: Some(ow::Throwable::new(class, message)),
            ..Reply::default()
        })
    }

    /// Refuses a request the service refused.
    pub(super) fn refuse_service(
        &mut self,
        command_id: i32,
        response_required: bool,
        e: &ServiceError,
    ) -> Result<(), Fatal> {
        self.refuse(
            command_id,
            response_required,
            exception_class(e),
            e.to_string(),
        )
    }

    /// A pipeline job finished: send its reply.
    fn finished(&mut self, reply: Reply, result: Result<(), ServiceError>) {
        if let Some((producer_id, size)) = reply.producer_ack {
            self.send(Command::ProducerAck(ow::ProducerAck {
                producer_id: Some(producer_id),
                size,
                ..ow::ProducerAck::default()
            }));
        }
        let exception = match (reply.refusal, result) {
            (Some(t), _) => Some(t),
            (None, Ok(())) => None,
            (None, Err(e)) => {
                let class = reply.failure_class.unwrap_or_else(|| exception_class(&e));
                Some(ow::Throwable::new(class, e.to_string()))
            }
        };
        match (reply.correlation, exception) {
            (Some(correlation_id), None) => {
                self.send(Command::Response(ow::Response {
                    correlation_id,
                    ..ow::Response::default()
                }));
                if let Some(arrived) = reply.timed {
                    self.service
                        .core
                        .metrics
                        .receipt_seconds
                        .observe_duration(arrived.elapsed());
                }
            }
            (Some(correlation_id), Some(exception)) => {
                self.send(Command::ExceptionResponse(ow::ExceptionResponse {
                    correlation_id,
                    exception: Some(exception),
                    ..ow::ExceptionResponse::default()
                }))
            }
            (None, Some(exception)) => {
                tracing::info!(conn = %self.conn_id, exception = ?exception.message,
                    "asynchronous request failed; the client's exception listener is told");
                self.send(Command::ConnectionError(ow::ConnectionError {
                    exception: Some(exception),
                    ..ow::ConnectionError::default()
                }));
            }
            (None, None) => {}
        }
    }

    /// The connection's service side; commands other than the handshake
    /// arrive only once it exists.
    pub(super) fn conn(&mut self) -> Result<&mut Connection, Fatal> {
        self.conn
            .as_mut()
            .ok_or_else(|| Fatal::protocol("not connected"))
    }

    /// Writes buffered output to the socket. A peer that reads nothing for
    /// `timeouts.frame-ms` is disconnected.
    async fn write_out(&mut self) -> std::io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let idle = Duration::from_millis(self.service.core.config.timeouts.frame_ms);
        match tokio::time::timeout(idle, self.writer.write_all(&self.out)).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("the client read nothing for {} ms", idle.as_millis()),
                ));
            }
        }
        self.out.clear();
        if self.out.capacity() > KEEP_CAPACITY {
            self.out = BytesMut::with_capacity(8 * 1024);
        }
        self.last_write = Instant::now();
        Ok(())
    }

    fn next_deadline(&self) -> Instant {
        let t = &self.service.core.config.timeouts;
        let mut deadline = Instant::now() + Duration::from_secs(3600);
        if self.conn.is_none() {
            deadline = deadline.min(self.opened + Duration::from_millis(t.connect_ms));
        }
        if let Some(i) = self.inactivity {
            deadline = deadline.min(self.last_write + i / 3);
            deadline = deadline.min(self.last_read.max(self.inactivity_from) + i * 2);
        }
        if let Some(p) = self.consumers.next_pull_deadline() {
            deadline = deadline.min(p);
        }
        deadline
    }

    fn timer(&mut self) -> Result<(), Fatal> {
        let now = Instant::now();
        let t = &self.service.core.config.timeouts;
        if self.conn.is_none() && now >= self.opened + Duration::from_millis(t.connect_ms) {
            return Err(Fatal::protocol(format!(
                "no ConnectionInfo received within {} ms",
                t.connect_ms
            )));
        }
        if let Some(i) = self.inactivity {
            let silent = now.saturating_duration_since(self.last_read.max(self.inactivity_from));
            if silent >= i * 2 {
                return Err(Fatal::protocol(format!(
                    "nothing received for {} ms (inactivity timeout {} ms)",
                    silent.as_millis(),
                    i.as_millis()
                )));
            }
            if now.saturating_duration_since(self.last_write) >= i / 3 && self.out.is_empty() {
                self.send(Command::KeepAliveInfo(ow::KeepAliveInfo::default()));
            }
        }
        self.pull_timeouts(now);
        Ok(())
    }

    /// Waits (up to `timeouts.shutdown-ms`) for pending work and sends its
    /// replies.
    async fn settle_pending(&mut self) {
        let limit = Duration::from_millis(self.service.core.config.timeouts.shutdown_ms);
        let _ = tokio::time::timeout(limit, async {
            while !self.pipeline.is_idle() {
                let Some((reply, result)) = self.pipeline.next().await else {
                    break;
                };
                self.finished(reply, result);
            }
        })
        .await;
    }

    /// The broker is stopping: in-flight work gets up to
    /// `timeouts.shutdown-ms` to finish, then the client is told.
    async fn shut_down(&mut self) -> End {
        self.settle_pending().await;
        End::Error(Fatal::broker("broker is shutting down"))
    }

    /// Returns everything the connection held.
    async fn teardown(&mut self) {
        self.pipeline.release(self.conn.as_mut()).await;
    }
}

/// One piece of work that completes when all of `works` have.
pub(super) fn join(works: Vec<crate::service::Work>) -> crate::service::Pending {
    if works.is_empty() {
        return None;
    }
    Some(Box::pin(async move {
        for w in works {
            w.await?;
        }
        Ok(())
    }))
}
