use bytes::Bytes;
use halyard_stomp::Headers;

/// The SEND header that carries a duplicate-detection id: a broker that
/// has stored a message with the same id on the same destination recently
/// confirms a resend without enqueuing it again. The name is ActiveMQ
/// Artemis's, so applications written for it work unchanged.
pub const DUPLICATE_ID_HEADER: &str = "_AMQ_DUPL_ID";

/// A message received from a subscription.
#[derive(Debug, Clone)]
pub struct Message {
    /// All headers of the MESSAGE frame.
    pub headers: Headers,
    /// The body.
    pub body: Bytes,
    /// Which connection (of a failover client) delivered it: an ACK only
    /// means something on the connection that delivered the message.
    pub(crate) generation: u64,
}

impl Message {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }

    /// The `destination` header.
    pub fn destination(&self) -> &str {
        self.header("destination").unwrap_or_default()
    }

    /// The `message-id` header.
    pub fn message_id(&self) -> &str {
        self.header("message-id").unwrap_or_default()
    }

    /// The `subscription` header.
    pub fn subscription(&self) -> &str {
        self.header("subscription").unwrap_or_default()
    }

    /// Whether the broker says this message may have been delivered before.
    pub fn redelivered(&self) -> bool {
        self.header("redelivered") == Some("true")
    }

    /// The body as UTF-8 text, if it is.
    pub fn text(&self) -> Option<&str> {
        std::str::from_utf8(&self.body).ok()
    }
}

/// A message to send.
#[derive(Debug, Clone)]
pub struct SendMessage {
    pub(crate) destination: String,
    pub(crate) body: Bytes,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) persistent: bool,
    pub(crate) receipt: Option<bool>,
    pub(crate) duplicate_detection: bool,
}

impl SendMessage {
    /// A non-persistent message to `destination` (e.g. `/queue/orders`).
    pub fn new(destination: impl Into<String>, body: impl Into<Bytes>) -> SendMessage {
        SendMessage {
            destination: destination.into(),
            body: body.into(),
            headers: Vec::new(),
            persistent: false,
            receipt: None,
            duplicate_detection: true,
        }
    }

    /// Makes the message persistent: the broker stores it before it
    /// confirms, and [`crate::Client::send`] waits for that confirmation.
    pub fn persistent(mut self, persistent: bool) -> SendMessage {
        self.persistent = persistent;
        self
    }

    /// Whether to ask for a receipt. By default persistent messages get
    /// one and others do not; `receipt(false)` sends a persistent message
    /// without waiting for the broker to confirm it.
    pub fn receipt(mut self, receipt: bool) -> SendMessage {
        self.receipt = Some(receipt);
        self
    }

    /// Gives the message this duplicate-detection id (see
    /// [`DUPLICATE_ID_HEADER`]) instead of a generated one: useful to make
    /// an application-level retry (for example of a transaction whose
    /// commit outcome is unknown) safe.
    pub fn duplicate_id(self, id: impl Into<String>) -> SendMessage {
        self.header(DUPLICATE_ID_HEADER, id)
    }

    /// Whether the client gives a persistent message a generated
    /// duplicate-detection id (default true). Turning it off saves a
    /// little work on the broker, at the price of a possible duplicate
    /// when a send is repeated after a failover.
    pub fn duplicate_detection(mut self, on: bool) -> SendMessage {
        self.duplicate_detection = on;
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> SendMessage {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Whether sending waits for a receipt.
    pub fn wants_receipt(&self) -> bool {
        self.receipt.unwrap_or(self.persistent)
    }
}
