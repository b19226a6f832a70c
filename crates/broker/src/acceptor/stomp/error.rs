/// Something that ends the connection with an ERROR frame. STOMP requires
/// the server to close the connection after sending ERROR.
#[derive(Debug)]
pub(super) struct Fatal {
    /// Short description, for the `message` header.
    pub(super) message: String,
    /// Longer description, for the body.
    pub(super) detail: Option<String>,
    /// The `receipt` of the frame that caused it, echoed as `receipt-id`.
    pub(super) receipt: Option<String>,
    /// Extra headers (e.g. `version` when negotiation fails).
    pub(super) headers: Vec<(&'static str, String)>,
    /// Whether the client broke the protocol (counted as a protocol error)
    /// rather than the broker ending the connection.
    pub(super) client_fault: bool,
}

impl Fatal {
    /// The client broke the protocol or sent something invalid.
    pub(super) fn protocol(message: impl Into<String>) -> Fatal {
        Fatal {
            message: message.into(),
            detail: None,
            receipt: None,
            headers: Vec::new(),
            client_fault: true,
        }
    }

    /// The broker ends the connection (shutdown, store failure).
    pub(super) fn broker(message: impl Into<String>) -> Fatal {
        Fatal {
            client_fault: false,
            ..Fatal::protocol(message)
        }
    }

    pub(super) fn header(mut self, name: &'static str, value: impl Into<String>) -> Fatal {
        self.headers.push((name, value.into()));
        self
    }

    /// Attaches the receipt of the frame being handled, unless one is set.
    pub(super) fn or_receipt(mut self, receipt: Option<&str>) -> Fatal {
        if self.receipt.is_none() {
            self.receipt = receipt.map(str::to_owned);
        }
        self
    }
}

/// A required header is missing.
pub(super) fn missing(command: &str, header: &str) -> Fatal {
    Fatal::protocol(format!("{command} frame has no {header} header"))
}

impl From<crate::service::ServiceError> for Fatal {
    fn from(e: crate::service::ServiceError) -> Fatal {
        use crate::service::ServiceError;
        let message = match &e {
            ServiceError::DurableNeedsClientId => {
                "durable subscriptions need a client-id header on CONNECT".to_owned()
            }
            _ => e.to_string(),
        };
        if e.is_client_fault() {
            Fatal::protocol(message)
        } else {
            Fatal::broker(message)
        }
    }
}
