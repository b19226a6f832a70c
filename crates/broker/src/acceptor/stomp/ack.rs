//! ACK and NACK: which delivery the frame names, in the frame's version's
//! terms; the broker service does the rest.

use halyard_stomp::{Frame, Version};

use super::error::{Fatal, missing};
use super::session::Session;
use crate::service::{AckRef, AckRequest, ServiceError};

impl Session {
    pub(super) async fn ack(
        &mut self,
        frame: Frame,
        receipt: Option<String>,
        nack: bool,
    ) -> Result<(), Fatal> {
        let command = if nack { "NACK" } else { "ACK" };
        let h = &frame.headers;
        // 1.2 names the message by our `ack` header (sent as `id`); earlier
        // versions by message-id (and, in 1.1, subscription). Accept the
        // older form from 1.2 clients too.
        let target = match (self.version, h.get("id"), h.get("message-id")) {
            (Version::V1_2, Some(id), _) => AckRef::Token(id),
            (_, _, Some(mid)) => AckRef::MessageId {
                id: mid,
                subscription: h.get("subscription"),
            },
            (Version::V1_2, None, None) => return Err(missing(command, "id")),
            (_, _, None) => return Err(missing(command, "message-id")),
        };
        let request = AckRequest {
            target,
            reject: nack,
            poison: false,
            tx: h.get("transaction"),
            confirm: receipt.is_some(),
        };
        let work = self.conn()?.ack(request).await.map_err(|e| match e {
            ServiceError::NotUnacknowledged(_) => Fatal::protocol(format!("{command} failed: {e}")),
            e => Fatal::from(e),
        })?;
        self.after(0, receipt, work)
    }
}
