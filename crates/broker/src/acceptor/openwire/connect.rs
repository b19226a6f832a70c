//! The handshake and the connection's life: wire-format negotiation,
//! `ConnectionInfo` (who the client is), what the broker announces to a
//! `failover:` client, `RemoveInfo`, durable-subscription removal and
//! temporary destinations.

use std::time::Duration;

use halyard_openwire::{self as ow, Command};
use tokio::time::Instant;

use super::convert;
use super::error::{INVALID_DESTINATION, exception_class};
use super::session::{Fatal, Flow, Reply, Session, join};
use crate::service::{ConnectRequest, ServiceError, Unsubscribe};

impl Session {
    /// The client's WireFormatInfo: settle the format both sides speak
    /// from now on, then introduce the broker.
    pub(super) fn negotiate(&mut self, info: &ow::WireFormatInfo) -> Result<(), Fatal> {
        let theirs = ow::WireFormatOptions::from_info(info)
            .map_err(|e| Fatal::protocol(format!("unusable WireFormatInfo: {e}")))?;
        let format = ow::negotiate(&self.offered, &theirs)
            .map_err(|e| Fatal::protocol(format!("cannot agree on a wire format: {e}")))?;
        tracing::debug!(conn = %self.conn_id, version = format.version,
            tight = format.tight_encoding_enabled, cache = format.cache_enabled,
            inactivity_ms = format.max_inactivity_duration, "OpenWire format negotiated");
        self.inactivity = u64::try_from(format.max_inactivity_duration)
            .ok()
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis);
        self.inactivity_from = Instant::now()
            + Duration::from_millis(
                u64::try_from(format.max_inactivity_duration_initial_delay).unwrap_or(0),
            );
        self.codec.renegotiate(format);
        self.negotiated = true;
        let config = &self.service.core.config;
        let info = ow::BrokerInfo {
            broker_id: Some(ow::BrokerId {
                value: Some(format!("{}:{}", config.name, self.service.boot())),
            }),
            broker_name: Some(config.name.clone()),
            master_broker: true,
            fault_tolerant_configuration: !config.openwire_options.peers.is_empty(),
            ..ow::BrokerInfo::default()
        };
        self.send(Command::BrokerInfo(info));
        Ok(())
    }

    /// `ConnectionInfo`: the client says who it is (user, password, client
    /// id). A refusal ends the connection, as in ActiveMQ.
    pub(super) async fn connection_info(
        &mut self,
        info: ow::ConnectionInfo,
    ) -> Result<Flow, Fatal> {
        let connection = info
            .connection_id
            .as_ref()
            .and_then(|c| c.value.clone())
            .filter(|c| !c.is_empty())
            .ok_or_else(|| Fatal::protocol("ConnectionInfo without a connection id"))?;
        let Some(deliveries) = self.deliveries_tx.take() else {
            return Err(Fatal::protocol("a second ConnectionInfo on one connection"));
        };
        let request = ConnectRequest {
            id: self.conn_id.clone(),
            peer: self.peer,
            client_id: info.client_id.clone(),
            login: info.user_name.clone().filter(|u| !u.is_empty()),
            passcode: info.password.clone(),
            tls_subject: self.tls_subject.clone(),
            deliveries,
            kick: self.kick.clone(),
            // The client names its temporary destinations after its
            // connection id (`ID:host-…:1:N`), and they are found by that
            // name: it is their scope.
            temp_scope: Some(connection.clone()),
            wire: crate::service::directory::Wire::new(
                "openwire",
                self.codec.format().version.to_string(),
            ),
            inflight: self.pipeline.pending_gauge(),
        };
        let conn = match self.service.connect(request).await {
            Ok(c) => c,
            Err(e) => {
                // The client's connect() throws this; the connection ends.
                // Nothing is pending before a ConnectionInfo, so the answer
                // goes out at once, ahead of the close.
                tracing::info!(conn = %self.conn_id, peer = %self.peer, error = %e,
                    "OpenWire connection refused");
                let exception = ow::Throwable::new(exception_class(&e), e.to_string());
                self.send(Command::ExceptionResponse(ow::ExceptionResponse {
                    correlation_id: info.command_id,
                    exception: Some(exception),
                    ..ow::ExceptionResponse::default()
                }));
                return Ok(Flow::Close);
            }
        };
        tracing::debug!(conn = %self.conn_id, client_id = ?info.client_id, user = ?info.user_name,
            failover_reconnect = info.failover_reconnect, "OpenWire connection established");
        self.conn = Some(conn);
        self.client_connection = Some(connection);
        self.reply(Reply::to(info.command_id, info.response_required))?;
        if info.manageable {
            // What the failover transport needs to find the other brokers
            // (ActiveMQ's updateClusterClients) and whether to move
            // (rebalanceClusterClients; never right after a failover).
            let o = &self.service.core.config.openwire_options;
            let control = ow::ConnectionControl {
                connected_brokers: Some(o.peers.join(",")),
                rebalance_connection: o.rebalance_cluster_clients && !info.failover_reconnect,
                fault_tolerant: !o.peers.is_empty(),
                ..ow::ConnectionControl::default()
            };
            self.send(Command::ConnectionControl(control));
        }
        Ok(Flow::Continue)
    }

    /// `RemoveInfo`: close a consumer, producer, session or the whole
    /// connection.
    pub(super) async fn remove(&mut self, r: ow::RemoveInfo) -> Result<Flow, Fatal> {
        let reply = Reply::to(r.command_id, r.response_required);
        match r.object_id.as_deref() {
            Some(Command::ConsumerId(id)) => {
                let work = self.close_consumer(id).await?;
                self.after(0, reply, work)?;
            }
            Some(Command::ProducerId(id)) => {
                self.producers.remove(id);
                self.reply(reply)?;
            }
            Some(Command::SessionId(id)) => {
                let work = self.close_session(id.value).await?;
                self.after(0, reply, work)?;
            }
            Some(Command::ConnectionId(_)) => {
                // What the connection held is released at teardown; the
                // Response goes first, as the client waits for it before
                // it sends ShutdownInfo.
                self.reply(reply)?;
            }
            _ => {
                return Err(Fatal::protocol(
                    "RemoveInfo names nothing this broker knows",
                ));
            }
        }
        Ok(Flow::Continue)
    }

    /// Closes every consumer and producer of JMS session `session`.
    async fn close_session(&mut self, session: i64) -> Result<crate::service::Pending, Fatal> {
        self.producers.remove_session(session);
        let mut works = Vec::new();
        for id in self.consumers.of_session(session) {
            if let Some(w) = self.close_consumer(&id).await? {
                works.push(w);
            }
        }
        Ok(join(works))
    }

    /// `RemoveSubscriptionInfo`: JMS `unsubscribe(name)`, removing a durable
    /// subscription and what it kept.
    pub(super) async fn remove_subscription(
        &mut self,
        r: ow::RemoveSubscriptionInfo,
    ) -> Result<(), Fatal> {
        let name = r.subscription_name.clone().unwrap_or_default();
        let request = Unsubscribe {
            id: None,
            durable: Some(&name),
        };
        match self.conn()?.unsubscribe(request).await {
            Ok(work) => self.after(0, Reply::to(r.command_id, r.response_required), work),
            Err(e) => self.refuse_service(r.command_id, r.response_required, &e),
        }
    }

    /// `DestinationInfo`: create or delete a temporary destination.
    pub(super) fn destination_info(&mut self, d: ow::DestinationInfo) -> Result<(), Fatal> {
        let (id, required) = (d.command_id, d.response_required);
        let dest = match d.destination.as_ref().map(convert::destinations) {
            Some(Ok(mut ds)) if ds.len() == 1 => ds.pop(),
            Some(Err(e)) => return self.refuse(id, required, INVALID_DESTINATION, e.to_string()),
            _ => None,
        };
        let Some(dest) = dest else {
            return self.refuse(
                id,
                required,
                INVALID_DESTINATION,
                "DestinationInfo needs one destination".into(),
            );
        };
        if !dest.kind().is_temporary() {
            // Queues and topics come into being on first use; asking for
            // one ahead is answered, and does nothing.
            return self.reply(Reply::to(id, required));
        }
        let conn = self.conn()?;
        let result: Result<(), ServiceError> = match d.operation_type {
            0 => conn.create_temporary(&dest),
            1 => conn.delete_temporary(&dest),
            other => {
                return self.refuse(
                    id,
                    required,
                    super::error::JMS_EXCEPTION,
                    format!("unknown DestinationInfo operation {other}"),
                );
            }
        };
        match result {
            Ok(()) => self.reply(Reply::to(id, required)),
            Err(e) => self.refuse_service(id, required, &e),
        }
    }
}
