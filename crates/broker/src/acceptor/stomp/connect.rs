//! CONNECT / STOMP: version and heart-beat negotiation.

use halyard_stomp::{Command, Frame, FrameWriter, HeartBeat, Version};

use super::error::Fatal;
use super::session::Session;
use crate::service::ConnectRequest;

impl Session {
    pub(super) async fn connect(&mut self, frame: Frame) -> Result<(), Fatal> {
        let h = &frame.headers;
        let version = Version::negotiate(h.get("accept-version"))
            .map_err(|e| Fatal::protocol(e.to_string()).header("version", Version::SUPPORTED))?;
        let theirs = match h.get("heart-beat") {
            Some(hb) if version >= Version::V1_1 => {
                HeartBeat::parse(hb).map_err(|e| Fatal::protocol(e.to_string()))?
            }
            _ => HeartBeat::default(),
        };
        let cfg = &self.service.core.config.heartbeat;
        let ours = HeartBeat {
            can_send_ms: cfg.min_send_ms,
            want_receive_ms: cfg.min_receive_ms,
        };
        let deliveries = self
            .deliveries_tx
            .take()
            .ok_or_else(|| Fatal::protocol("already connected"))?;
        let request = ConnectRequest {
            id: self.conn_id.clone(),
            peer: self.peer,
            client_id: h.get("client-id").map(str::to_owned),
            login: h.get("login").map(str::to_owned),
            passcode: h.get("passcode").map(str::to_owned),
            tls_subject: self.tls_subject.clone(),
            deliveries,
            kick: self.kick.clone(),
            temp_scope: None,
            wire: crate::service::directory::Wire::new("stomp", version.as_str()),
            inflight: self.pipeline.pending_gauge(),
        };
        // ActiveMQ echoes a CONNECT's `request-id` as `response-id`.
        let request_id = h.get("request-id").map(str::to_owned);
        let conn = self.service.connect(request).await?;
        let client_id = conn.client_id().map(str::to_owned);
        self.conn = Some(conn);
        self.heartbeat_send = HeartBeat::send_interval(ours, theirs);
        self.heartbeat_receive = HeartBeat::receive_interval(ours, theirs);
        self.version = version;
        self.reader.decoder_mut().set_version(version);

        let mut w = FrameWriter::new(&mut self.out.buf, Command::Connected, version);
        w.header("version", version.as_str());
        w.header("session", &self.conn_id);
        w.header("server", concat!("halyard/", env!("CARGO_PKG_VERSION")));
        if version >= Version::V1_1 {
            w.header("heart-beat", &ours.to_header());
        }
        if let Some(id) = &request_id {
            w.header("response-id", id);
        }
        // The other brokers of the group, for failover clients to add to
        // their lists (documented in docs/STOMP.md).
        let peers = &self.service.core.config.ha.peers;
        if !peers.is_empty() {
            w.header("peers", &peers.join(","));
        }
        w.finish(b"");
        if let Some(subject) = &self.tls_subject {
            tracing::info!(conn = %self.conn_id, peer = %self.peer, tls_subject = %subject,
                "STOMP connection with a client certificate");
        }
        tracing::debug!(conn = %self.conn_id, peer = %self.peer, %version, ?client_id,
            heartbeat_send = ?self.heartbeat_send, heartbeat_receive = ?self.heartbeat_receive,
            "STOMP session established");
        Ok(())
    }
}
