//! One STOMP connection to one broker: the CONNECT handshake, framed I/O
//! and heart-beats. The failover engine in `task.rs` owns one at a time.

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use halyard_stomp::{
    CodecError, Command, Frame, HeartBeat, Item, Limits, Outbound, StompCodec, Version,
};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;
use tokio_util::either::Either;

use crate::{ClientError, Endpoint, ServerInfo};

/// What every connection of a client is opened with.
#[derive(Debug, Clone)]
pub(crate) struct ConnectParams {
    pub(crate) client_id: Option<String>,
    pub(crate) heartbeat: HeartBeat,
    pub(crate) connect_timeout: Duration,
    pub(crate) limits: Limits,
}

/// A connection's byte stream: plain TCP, or TLS over it.
type Stream = Either<TcpStream, Box<tokio_rustls::client::TlsStream<TcpStream>>>;

pub(crate) struct Conn {
    framed: Framed<Stream, StompCodec>,
    pub(crate) endpoint: Endpoint,
    pub(crate) info: ServerInfo,
    /// Brokers this one announced (CONNECTED `peers`).
    pub(crate) peers: Vec<Endpoint>,
    send_every: Option<Duration>,
    expect_every: Option<Duration>,
    last_write: Instant,
    last_read: Instant,
}

/// Requests written per flush.
const WRITE_BURST: usize = 64;

pub(crate) fn broker_error(f: &Frame) -> ClientError {
    ClientError::Broker {
        message: f
            .headers
            .get("message")
            .unwrap_or("(no message)")
            .to_owned(),
        detail: String::from_utf8_lossy(&f.body).into_owned(),
    }
}

/// A failed read: the connection broke, or the broker sent something that
/// is not STOMP.
fn read_error(e: CodecError) -> ClientError {
    match e {
        CodecError::Io(e) => ClientError::Io(e.to_string()),
        other => ClientError::Protocol(other.to_string()),
    }
}

impl Conn {
    /// Connects and negotiates. Endpoint settings override `params`.
    pub(crate) async fn open(
        endpoint: &Endpoint,
        params: &ConnectParams,
    ) -> Result<Conn, ClientError> {
        let address = endpoint.address();
        let timeout = endpoint.connect_timeout.unwrap_or(params.connect_timeout);
        let heartbeat = endpoint.heartbeat.unwrap_or(params.heartbeat);
        let handshake = async {
            let stream = TcpStream::connect(&address)
                .await
                .map_err(|e| ClientError::Connect {
                    address: address.clone(),
                    reason: e.to_string(),
                })?;
            let _ = stream.set_nodelay(true);
            let stream = match &endpoint.tls {
                None => Either::Left(stream),
                Some(tls) => Either::Right(Box::new(
                    crate::tls::connect(stream, &endpoint.host, tls)
                        .await
                        .map_err(|reason| ClientError::Tls {
                            address: address.clone(),
                            reason,
                        })?,
                )),
            };
            let mut framed = Framed::new(stream, StompCodec::new(params.limits));
            let mut frame = Frame::new(Command::Connect)
                .header("accept-version", "1.2")
                .header("host", endpoint.host.clone())
                .header("heart-beat", heartbeat.to_header());
            if let Some(l) = &endpoint.login {
                frame.headers.push("login", l.clone());
            }
            if let Some(p) = &endpoint.passcode {
                frame.headers.push("passcode", p.clone());
            }
            if let Some(c) = &params.client_id {
                frame.headers.push("client-id", c.clone());
            }
            framed
                .send(Outbound::Frame(frame))
                .await
                .map_err(|e| ClientError::Io(e.to_string()))?;
            loop {
                match framed.next().await {
                    None => {
                        return Err(ClientError::Connect {
                            address: address.clone(),
                            reason: "the broker closed the connection during CONNECT".into(),
                        });
                    }
                    Some(Err(CodecError::Io(e))) if endpoint.is_tls() => {
                        return Err(match crate::tls::explain_read(&e, &endpoint.host) {
                            Some(reason) => ClientError::Tls {
                                address: address.clone(),
                                reason,
                            },
                            None => ClientError::Connect {
                                address: address.clone(),
                                reason: e.to_string(),
                            },
                        });
                    }
                    Some(Err(e)) => return Err(ClientError::Protocol(e.to_string())),
                    Some(Ok(Item::Heartbeat)) => continue,
                    Some(Ok(Item::Frame(f))) => return Ok((framed, f)),
                }
            }
        };
        let (mut framed, reply) =
            tokio::time::timeout(timeout, handshake)
                .await
                .map_err(|_| ClientError::Connect {
                    address: address.clone(),
                    reason: format!("no CONNECTED within {timeout:?}"),
                })??;
        match reply.command {
            Command::Connected => {}
            Command::Error => return Err(broker_error(&reply)),
            other => {
                return Err(ClientError::Protocol(format!(
                    "expected CONNECTED, got {other}"
                )));
            }
        }
        let version = reply
            .headers
            .get("version")
            .and_then(Version::parse)
            .unwrap_or(Version::V1_0);
        framed.codec_mut().set_version(version);
        let theirs = match reply.headers.get("heart-beat") {
            Some(h) => HeartBeat::parse(h).map_err(|e| ClientError::Protocol(e.to_string()))?,
            None => HeartBeat::default(),
        };
        let peers = reply
            .headers
            .get("peers")
            .map(|p| {
                p.split(',')
                    .filter_map(|u| Endpoint::parse(u.trim()).ok())
                    .collect()
            })
            .unwrap_or_default();
        let now = Instant::now();
        Ok(Conn {
            framed,
            endpoint: endpoint.clone(),
            info: ServerInfo {
                version,
                session: reply.headers.get("session").map(str::to_owned),
                server: reply.headers.get("server").map(str::to_owned),
            },
            peers,
            send_every: HeartBeat::send_interval(heartbeat, theirs),
            expect_every: HeartBeat::receive_interval(heartbeat, theirs),
            last_write: now,
            last_read: now,
        })
    }

    /// Buffers a frame.
    pub(crate) async fn feed(&mut self, frame: Frame) -> Result<(), ClientError> {
        self.framed
            .feed(Outbound::Frame(frame))
            .await
            .map_err(|e| ClientError::Io(e.to_string()))
    }

    /// Writes what is buffered.
    pub(crate) async fn flush(&mut self) -> Result<(), ClientError> {
        SinkExt::<Outbound>::flush(&mut self.framed)
            .await
            .map_err(|e| ClientError::Io(e.to_string()))?;
        self.last_write = Instant::now();
        Ok(())
    }

    /// Writes frames with one flush per burst.
    pub(crate) async fn write_all(&mut self, frames: Vec<Frame>) -> Result<(), ClientError> {
        for (i, f) in frames.into_iter().enumerate() {
            self.feed(f).await?;
            if (i + 1) % WRITE_BURST == 0 {
                self.flush().await?;
            }
        }
        self.flush().await
    }

    fn deadline(&self) -> Instant {
        let mut d = Instant::now() + Duration::from_secs(3600);
        if let Some(s) = self.send_every {
            d = d.min(self.last_write + s);
        }
        if let Some(r) = self.expect_every {
            d = d.min(self.last_read + r * 2);
        }
        d
    }

    /// The next frame from the broker, sending heart-beats meanwhile and
    /// failing if the broker falls silent. Cancel-safe.
    pub(crate) async fn next(&mut self) -> Result<Frame, ClientError> {
        loop {
            let deadline = self.deadline();
            tokio::select! {
                item = self.framed.next() => {
                    self.last_read = Instant::now();
                    match item {
                        None => return Err(ClientError::Io("the broker closed the connection".into())),
                        Some(Err(e)) => return Err(read_error(e)),
                        Some(Ok(Item::Heartbeat)) => {}
                        Some(Ok(Item::Frame(f))) => return Ok(f),
                    }
                }
                _ = tokio::time::sleep_until(deadline.into()) => {
                    let now = Instant::now();
                    if let Some(r) = self.expect_every
                        && now.saturating_duration_since(self.last_read) >= r * 2
                    {
                        return Err(ClientError::Io(format!(
                            "no data or heart-beat from the broker for {:?}",
                            r * 2
                        )));
                    }
                    if let Some(s) = self.send_every
                        && now.saturating_duration_since(self.last_write) >= s
                    {
                        self.framed
                            .send(Outbound::Heartbeat)
                            .await
                            .map_err(|e| ClientError::Io(e.to_string()))?;
                        self.last_write = now;
                    }
                }
            }
        }
    }
}
