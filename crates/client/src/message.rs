use bytes::Bytes;
use halyard_stomp::Headers;

/// A message received from a subscription.
#[derive(Debug, Clone)]
pub struct Message {
    /// All headers of the MESSAGE frame.
    pub headers: Headers,
    /// The body.
    pub body: Bytes,
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
