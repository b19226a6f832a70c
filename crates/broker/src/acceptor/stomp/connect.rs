//! CONNECT / STOMP: version and heart-beat negotiation.

use std::time::Duration;

use halyard_stomp::{Command, Frame, FrameWriter, HeartBeat, Version};

use super::error::Fatal;
use super::session::Session;

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
        let cfg = &self.shared.config.heartbeat;
        let ours = HeartBeat {
            can_send_ms: cfg.min_send_ms,
            want_receive_ms: cfg.min_receive_ms,
        };
        if let Some(id) = h.get("client-id") {
            if id.is_empty() {
                return Err(Fatal::protocol("client-id must not be empty"));
            }
            // As ActiveMQ: a client id already connected is refused, unless
            // the new connection may take it over (clients.link-stealing).
            if self.shared.claim_client_id(id, &self.kick).is_err() {
                let stealing = self.shared.config.clients.link_stealing;
                let within = Duration::from_millis(self.shared.config.timeouts.shutdown_ms + 1000);
                if !stealing || !self.shared.steal_client_id(id, &self.kick, within).await {
                    return Err(Fatal::protocol(format!(
                        "client-id '{id}' is already connected"
                    )));
                }
            }
            self.client_id = Some(id.to_owned());
        }
        self.heartbeat_send = HeartBeat::send_interval(ours, theirs);
        self.heartbeat_receive = HeartBeat::receive_interval(ours, theirs);
        self.version = version;
        self.reader.decoder_mut().set_version(version);
        self.connected = true;

        let mut w = FrameWriter::new(&mut self.out, Command::Connected, version);
        w.header("version", version.as_str());
        w.header("session", &self.conn);
        w.header("server", concat!("halyard/", env!("CARGO_PKG_VERSION")));
        if version >= Version::V1_1 {
            w.header("heart-beat", &ours.to_header());
        }
        // The other brokers of the group, for failover clients to add to
        // their lists (documented in docs/STOMP.md).
        let peers = &self.shared.config.ha.peers;
        if !peers.is_empty() {
            w.header("peers", &peers.join(","));
        }
        w.finish(b"");
        tracing::debug!(conn = %self.conn, peer = %self.peer, %version, client_id = ?self.client_id,
            heartbeat_send = ?self.heartbeat_send, heartbeat_receive = ?self.heartbeat_receive,
            "STOMP session established");
        Ok(())
    }
}
