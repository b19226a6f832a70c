//! The OpenWire data structures: ids, destinations, transaction ids and the
//! commands a JMS client and a broker exchange. Field names follow the Java
//! classes (`org.apache.activemq.command.*`) in Rust spelling, and fields are
//! declared in wire order.

use bytes::Bytes;

use crate::Command;
use crate::error::Result;
pub use crate::throwable::{StackTraceElement, Throwable};
use crate::wire::{
    Array, Blob, Bool, Byte, Cached, Dec, Enc, Int, Kind, Long, Magic, Nested, Skip, Str,
    Structure, Thr,
};

structure! {
    /// Identifies a connection (a client-chosen string).
    plain ConnectionId = 120 {
        /// The id.
        value: Option<String> = Str;
    }
}

structure! {
    /// Identifies a session within a connection.
    plain SessionId = 121 {
        /// The connection's id.
        connection_id: Option<String> = Str;
        /// The session's number within the connection.
        value: i64 = Long;
    }
}

structure! {
    /// Identifies a consumer within a session.
    plain ConsumerId = 122 {
        /// The connection's id.
        connection_id: Option<String> = Str;
        /// The session's number.
        session_id: i64 = Long;
        /// The consumer's number within the session.
        value: i64 = Long;
    }
}

structure! {
    /// Identifies a producer within a session.
    plain ProducerId = 123 {
        /// The connection's id.
        connection_id: Option<String> = Str;
        /// The producer's number within the session.
        value: i64 = Long;
        /// The session's number.
        session_id: i64 = Long;
    }
}

structure! {
    /// Identifies a broker.
    plain BrokerId = 124 {
        /// The id.
        value: Option<String> = Str;
    }
}

structure! {
    /// Identifies a message: its producer and the producer's sequence number.
    plain MessageId = 110 {
        /// A client-supplied textual form (v10+), used instead of the
        /// structured id when set.
        text_view: Option<String> = Str, since 10;
        /// The producer that sent the message.
        producer_id: Option<ProducerId> = Cached<ProducerId>;
        /// The producer's sequence number for the message.
        producer_sequence_id: i64 = Long;
        /// A sequence number the broker assigns.
        broker_sequence_id: i64 = Long;
    }
}

structure! {
    /// A local (JMS session) transaction.
    custom LocalTransactionId = 111 {
        /// The transaction's number within the connection.
        value: i64 = Long;
        /// The connection that owns it.
        connection_id: Option<ConnectionId> = Cached<ConnectionId>;
    }
}

structure! {
    /// An XA transaction branch.
    custom XaTransactionId = 112 {
        /// The XA format id.
        format_id: i32 = Int;
        /// The global transaction id.
        global_transaction_id: Option<Bytes> = Blob;
        /// The branch qualifier.
        branch_qualifier: Option<Bytes> = Blob;
    }
}

/// A transaction id: local or XA.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TransactionId {
    /// A local transaction.
    Local(LocalTransactionId),
    /// An XA transaction branch.
    Xa(XaTransactionId),
}

impl Structure for TransactionId {
    const NAME: &'static str = "TransactionId";
    fn data_type(&self) -> u8 {
        match self {
            TransactionId::Local(_) => LocalTransactionId::DATA_STRUCTURE_TYPE,
            TransactionId::Xa(_) => XaTransactionId::DATA_STRUCTURE_TYPE,
        }
    }
    fn encode_body(&self, e: &mut Enc<'_>) -> Result<()> {
        match self {
            TransactionId::Local(t) => t.encode_fields(e),
            TransactionId::Xa(t) => t.encode_fields(e),
        }
    }
    fn from_command(c: Command) -> Option<Self> {
        match c {
            Command::TransactionId(t) => Some(t),
            _ => None,
        }
    }
}

impl From<TransactionId> for Command {
    fn from(t: TransactionId) -> Self {
        Command::TransactionId(t)
    }
}

/// The four kinds of destination (one type byte each on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DestinationKind {
    /// `ActiveMQQueue` (100).
    #[default]
    Queue,
    /// `ActiveMQTopic` (101).
    Topic,
    /// `ActiveMQTempQueue` (102).
    TempQueue,
    /// `ActiveMQTempTopic` (103).
    TempTopic,
}

impl DestinationKind {
    /// The type byte.
    pub fn data_type(self) -> u8 {
        match self {
            DestinationKind::Queue => 100,
            DestinationKind::Topic => 101,
            DestinationKind::TempQueue => 102,
            DestinationKind::TempTopic => 103,
        }
    }

    /// The kind for a type byte.
    pub fn from_data_type(ty: u8) -> Option<Self> {
        Some(match ty {
            100 => DestinationKind::Queue,
            101 => DestinationKind::Topic,
            102 => DestinationKind::TempQueue,
            103 => DestinationKind::TempTopic,
            _ => return None,
        })
    }
}

/// A queue or topic (`ActiveMQDestination`). A composite destination is a
/// comma-separated `physical_name`, as in Java.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Destination {
    /// Queue, topic, or temporary.
    pub kind: DestinationKind,
    /// The name (Java's null reads as empty).
    pub physical_name: String,
}

impl Destination {
    /// A queue.
    pub fn queue(name: impl Into<String>) -> Self {
        Destination {
            kind: DestinationKind::Queue,
            physical_name: name.into(),
        }
    }

    /// A topic.
    pub fn topic(name: impl Into<String>) -> Self {
        Destination {
            kind: DestinationKind::Topic,
            physical_name: name.into(),
        }
    }

    pub(crate) fn decode(kind: DestinationKind, d: &mut Dec<'_, '_>) -> Result<Self> {
        let name = Str::get(d).map_err(|e| e.within("Destination", "physical_name"))?;
        Ok(Destination {
            kind,
            physical_name: name.unwrap_or_default(),
        })
    }
}

impl Structure for Destination {
    const NAME: &'static str = "Destination";
    fn data_type(&self) -> u8 {
        self.kind.data_type()
    }
    fn encode_body(&self, e: &mut Enc<'_>) -> Result<()> {
        Str::put(Some(&self.physical_name), e).map_err(|e| e.within("Destination", "physical_name"))
    }
    fn from_command(c: Command) -> Option<Self> {
        match c {
            Command::Destination(d) => Some(d),
            _ => None,
        }
    }
}

impl From<Destination> for Command {
    fn from(d: Destination) -> Self {
        Command::Destination(d)
    }
}

structure! {
    /// The first frame each side sends: the magic, the highest version the
    /// sender speaks, and its options as a marshalled property map (see
    /// [`crate::WireFormatOptions`]).
    plain WireFormatInfo = 1 {
        /// `ActiveMQ` in ASCII.
        magic: [u8; 8] = Magic;
        /// The highest OpenWire version the sender speaks.
        version: i32 = Int;
        /// The options, as a primitive map (`properties::encode_map`).
        marshalled_properties: Option<Bytes> = Blob;
    }
}

structure! {
    /// A broker describing itself to a client or another broker.
    command BrokerInfo = 2 {
        /// The broker's id.
        broker_id: Option<BrokerId> = Cached<BrokerId>;
        /// The URL it is reachable at.
        broker_url: Option<String> = Str;
        /// Other brokers of its network.
        peer_broker_infos: Option<Vec<BrokerInfo>> = Array<BrokerInfo>;
        /// Its name.
        broker_name: Option<String> = Str;
        /// Whether it is a slave.
        slave_broker: bool = Bool;
        /// Whether it is a master.
        master_broker: bool = Bool;
        /// Whether it runs fault tolerant.
        fault_tolerant_configuration: bool = Bool;
        /// Whether the connection is a duplex network bridge.
        duplex_connection: bool = Bool;
        /// Whether the connection is a network bridge.
        network_connection: bool = Bool;
        /// A connection number.
        connection_id: i64 = Long;
        /// Where blob messages can be uploaded.
        broker_upload_url: Option<String> = Str;
        /// Network connector properties.
        network_properties: Option<String> = Str;
    }
}

structure! {
    /// Opens a JMS connection (credentials, client id).
    command ConnectionInfo = 3 {
        /// The connection's id.
        connection_id: Option<ConnectionId> = Cached<ConnectionId>;
        /// The JMS client id.
        client_id: Option<String> = Str;
        /// The password.
        password: Option<String> = Str;
        /// The user name.
        user_name: Option<String> = Str;
        /// Brokers this connection passed through (network bridges).
        broker_path: Option<Vec<BrokerId>> = Array<BrokerId>;
        /// Whether a master broker's connector opened it.
        broker_master_connector: bool = Bool;
        /// Whether it shows in JMX.
        manageable: bool = Bool;
        /// Whether the client is a master.
        client_master: bool = Bool;
        /// Whether the client runs failover.
        fault_tolerant: bool = Bool;
        /// Whether this is a failover reconnect.
        failover_reconnect: bool = Bool;
        /// The client's address (set by the broker).
        client_ip: Option<String> = Str;
    }
}

structure! {
    /// Opens a session.
    command SessionInfo = 4 {
        /// The session's id.
        session_id: Option<SessionId> = Cached<SessionId>;
    }
}

structure! {
    /// Opens a consumer (subscription).
    command ConsumerInfo = 5 {
        /// The consumer's id.
        consumer_id: Option<ConsumerId> = Cached<ConsumerId>;
        /// Whether it is a queue browser.
        browser: bool = Bool;
        /// What it consumes from.
        destination: Option<Destination> = Cached<Destination>;
        /// How many unacknowledged messages it may be sent.
        prefetch_size: i32 = Int;
        /// Pending limit for slow topic consumers.
        maximum_pending_message_limit: i32 = Int;
        /// Whether dispatch may be asynchronous.
        dispatch_async: bool = Bool;
        /// The JMS selector.
        selector: Option<String> = Str;
        /// The client id (v10+).
        client_id: Option<String> = Str, since 10;
        /// The durable subscription name.
        subscription_name: Option<String> = Str;
        /// Whether messages from the own connection are skipped.
        no_local: bool = Bool;
        /// Whether it wants to be the exclusive consumer.
        exclusive: bool = Bool;
        /// Whether it is a retroactive topic consumer.
        retroactive: bool = Bool;
        /// Its priority.
        priority: u8 = Byte;
        /// Brokers the subscription passed through.
        broker_path: Option<Vec<BrokerId>> = Array<BrokerId>;
        /// A broker-network filter (`NetworkBridgeFilter`; not supported by
        /// this codec, so a non-null one fails to decode).
        additional_predicate: Option<Box<Command>> = Nested<Box<Command>>;
        /// Whether it is a network bridge's subscription.
        network_subscription: bool = Bool;
        /// Whether it acknowledges in batches.
        optimized_acknowledge: bool = Bool;
        /// Whether it never sends range acks.
        no_range_acks: bool = Bool;
        /// Network consumers it stands for.
        network_consumer_path: Option<Vec<ConsumerId>> = Array<ConsumerId>;
    }
}

structure! {
    /// Opens a producer.
    command ProducerInfo = 6 {
        /// The producer's id.
        producer_id: Option<ProducerId> = Cached<ProducerId>;
        /// Its fixed destination, if any.
        destination: Option<Destination> = Cached<Destination>;
        /// Brokers it passed through.
        broker_path: Option<Vec<BrokerId>> = Array<BrokerId>;
        /// Whether dispatch may be asynchronous.
        dispatch_async: bool = Bool;
        /// Producer flow control window in bytes (0: none).
        window_size: i32 = Int;
    }
}

structure! {
    /// Begins, prepares, commits, rolls back... a transaction.
    command TransactionInfo = 7 {
        /// The connection.
        connection_id: Option<ConnectionId> = Cached<ConnectionId>;
        /// The transaction.
        transaction_id: Option<TransactionId> = Cached<TransactionId>;
        /// What to do: 0 begin, 1 prepare, 2 commit one phase, 3 commit two
        /// phase, 4 rollback, 5 recover, 6 forget, 7 end.
        transaction_type: u8 = Byte;
    }
}

structure! {
    /// Creates or removes a (temporary) destination.
    command DestinationInfo = 8 {
        /// The connection.
        connection_id: Option<ConnectionId> = Cached<ConnectionId>;
        /// The destination.
        destination: Option<Destination> = Cached<Destination>;
        /// 0 add, 1 remove.
        operation_type: u8 = Byte;
        /// Timeout in milliseconds.
        timeout: i64 = Long;
        /// Brokers it passed through.
        broker_path: Option<Vec<BrokerId>> = Array<BrokerId>;
    }
}

structure! {
    /// Deletes a durable subscription.
    command RemoveSubscriptionInfo = 9 {
        /// The connection.
        connection_id: Option<ConnectionId> = Cached<ConnectionId>;
        /// The subscription name.
        subscription_name: Option<String> = Str;
        /// The client id.
        client_id: Option<String> = Str;
    }
}

structure! {
    /// A heartbeat.
    command KeepAliveInfo = 10 {}
}

structure! {
    /// The peer is shutting down.
    command ShutdownInfo = 11 {}
}

structure! {
    /// Closes a connection, session, consumer or producer.
    command RemoveInfo = 12 {
        /// The id of what is closed (a ConnectionId, SessionId, ConsumerId
        /// or ProducerId).
        object_id: Option<Box<Command>> = Cached<Box<Command>>;
        /// For a consumer: the last message sequence it was delivered.
        last_delivered_sequence_id: i64 = Long;
    }
}

structure! {
    /// A textual control command (advisories, `shutdown`...).
    command ControlCommand = 14 {
        /// The command.
        command: Option<String> = Str;
    }
}

structure! {
    /// Asks for a flush.
    command FlushCommand = 15 {}
}

structure! {
    /// An asynchronous connection-level error.
    command ConnectionError = 16 {
        /// The exception.
        exception: Option<Throwable> = Thr;
        /// The connection.
        connection_id: Option<ConnectionId> = Nested<ConnectionId>;
    }
}

structure! {
    /// The broker adjusting or closing a consumer.
    command ConsumerControl = 17 {
        /// The destination.
        destination: Option<Destination> = Nested<Destination>;
        /// Close the consumer.
        close: bool = Bool;
        /// The consumer.
        consumer_id: Option<ConsumerId> = Nested<ConsumerId>;
        /// A new prefetch size.
        prefetch: i32 = Int;
        /// Flush.
        flush: bool = Bool;
        /// Start.
        start: bool = Bool;
        /// Stop.
        stop: bool = Bool;
    }
}

structure! {
    /// The broker steering a connection (rebalancing, suspend, resume...).
    command ConnectionControl = 18 {
        /// Close.
        close: bool = Bool;
        /// Exit.
        exit: bool = Bool;
        /// Fault tolerant.
        fault_tolerant: bool = Bool;
        /// Resume.
        resume: bool = Bool;
        /// Suspend.
        suspend: bool = Bool;
        /// Other brokers of the cluster, for failover clients.
        connected_brokers: Option<String> = Str;
        /// Where to reconnect.
        reconnect_to: Option<String> = Str;
        /// Whether to rebalance.
        rebalance_connection: bool = Bool;
        /// An opaque token.
        token: Option<Bytes> = Blob;
    }
}

structure! {
    /// Producer flow control: the broker releasing window space.
    command ProducerAck = 19 {
        /// The producer.
        producer_id: Option<ProducerId> = Nested<ProducerId>;
        /// Bytes released.
        size: i32 = Int;
    }
}

structure! {
    /// A zero-prefetch consumer asking for a message.
    command MessagePull = 20 {
        /// The consumer.
        consumer_id: Option<ConsumerId> = Cached<ConsumerId>;
        /// Its destination.
        destination: Option<Destination> = Cached<Destination>;
        /// How long to wait (ms; 0 forever, -1 no wait).
        timeout: i64 = Long;
        /// Correlation id.
        correlation_id: Option<String> = Str;
        /// A specific message.
        message_id: Option<MessageId> = Nested<MessageId>;
    }
}

structure! {
    /// A message delivered to a consumer (a null message means "no message"
    /// for a pull).
    command MessageDispatch = 21 {
        /// The consumer.
        consumer_id: Option<ConsumerId> = Cached<ConsumerId>;
        /// The destination.
        destination: Option<Destination> = Cached<Destination>;
        /// The message.
        message: Option<Message> = Nested<Message>;
        /// How often it was redelivered.
        redelivery_counter: i32 = Int;
    }
}

structure! {
    /// Acknowledges messages (a range from first to last).
    command MessageAck = 22 {
        /// The destination.
        destination: Option<Destination> = Cached<Destination>;
        /// The transaction, if transacted.
        transaction_id: Option<TransactionId> = Cached<TransactionId>;
        /// The consumer.
        consumer_id: Option<ConsumerId> = Cached<ConsumerId>;
        /// 0 delivered, 1 poison, 2 standard, 3 redelivered, 4 individual,
        /// 5 unmatched, 6 expired.
        ack_type: u8 = Byte;
        /// The first message of the range.
        first_message_id: Option<MessageId> = Nested<MessageId>;
        /// The last message of the range.
        last_message_id: Option<MessageId> = Nested<MessageId>;
        /// How many messages the range holds.
        message_count: i32 = Int;
        /// Why a poison ack's message is poison.
        poison_cause: Option<Throwable> = Thr;
    }
}

/// Which JMS message class a [`Message`] is (the type byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MessageKind {
    /// `ActiveMQMessage` (23): no body.
    #[default]
    Plain,
    /// `ActiveMQBytesMessage` (24).
    Bytes,
    /// `ActiveMQMapMessage` (25): the body is a primitive map.
    Map,
    /// `ActiveMQObjectMessage` (26): a serialized Java object.
    Object,
    /// `ActiveMQStreamMessage` (27).
    Stream,
    /// `ActiveMQTextMessage` (28): the body is a string.
    Text,
    /// `ActiveMQBlobMessage` (29): a URL to the body.
    Blob,
}

impl MessageKind {
    /// The type byte.
    pub fn data_type(self) -> u8 {
        23 + self as u8
    }

    /// The kind for a type byte.
    pub fn from_data_type(ty: u8) -> Option<Self> {
        Some(match ty {
            23 => MessageKind::Plain,
            24 => MessageKind::Bytes,
            25 => MessageKind::Map,
            26 => MessageKind::Object,
            27 => MessageKind::Stream,
            28 => MessageKind::Text,
            29 => MessageKind::Blob,
            _ => return None,
        })
    }
}

structure! {
    /// A JMS message of any kind. The body is `content` as the sender stored
    /// it (see the body helpers in [`crate::message`]); properties stay in
    /// their marshalled form until asked for.
    custom Message = 23 {
        /// Which message class; decides the type byte.
        kind: MessageKind = Skip<MessageKind>;
        /// Sequence number the sender gives the command.
        command_id: i32 = Int;
        /// Whether the sender expects a Response.
        response_required: bool = Bool;
        /// The producer.
        producer_id: Option<ProducerId> = Cached<ProducerId>;
        /// Where it is sent.
        destination: Option<Destination> = Cached<Destination>;
        /// The transaction it is sent in.
        transaction_id: Option<TransactionId> = Cached<TransactionId>;
        /// Where it was first sent (before a DLQ move, a composite...).
        original_destination: Option<Destination> = Cached<Destination>;
        /// Its id.
        message_id: Option<MessageId> = Nested<MessageId>;
        /// The original transaction.
        original_transaction_id: Option<TransactionId> = Cached<TransactionId>;
        /// JMSXGroupID.
        group_id: Option<String> = Str;
        /// JMSXGroupSeq.
        group_sequence: i32 = Int;
        /// JMSCorrelationID.
        correlation_id: Option<String> = Str;
        /// Persistent delivery.
        persistent: bool = Bool;
        /// JMSExpiration (ms since the epoch; 0 never).
        expiration: i64 = Long;
        /// JMSPriority.
        priority: u8 = Byte;
        /// JMSReplyTo.
        reply_to: Option<Destination> = Nested<Destination>;
        /// JMSTimestamp.
        timestamp: i64 = Long;
        /// JMSType.
        jms_type: Option<String> = Str;
        /// The body as stored (maybe zlib-compressed, see `compressed`).
        content: Option<Bytes> = Blob;
        /// The properties as a marshalled primitive map.
        marshalled_properties: Option<Bytes> = Blob;
        /// An embedded data structure (advisories).
        data_structure: Option<Box<Command>> = Nested<Box<Command>>;
        /// The consumer this message is for (queue browsing, network).
        target_consumer_id: Option<ConsumerId> = Cached<ConsumerId>;
        /// Whether `content` is zlib-compressed.
        compressed: bool = Bool;
        /// How often it was redelivered.
        redelivery_counter: i32 = Int;
        /// Brokers it passed through.
        broker_path: Option<Vec<BrokerId>> = Array<BrokerId>;
        /// When the broker received it.
        arrival: i64 = Long;
        /// JMSXUserID.
        user_id: Option<String> = Str;
        /// Set by the DF bridge (Java spells it "recieved").
        received_by_df_bridge: bool = Bool;
        /// Whether it may be dropped.
        droppable: bool = Bool;
        /// Brokers of the cluster it visited.
        cluster: Option<Vec<BrokerId>> = Array<BrokerId>;
        /// Broker in time.
        broker_in_time: i64 = Long;
        /// Broker out time.
        broker_out_time: i64 = Long;
        /// JMSXGroupFirstForConsumer (v10+).
        jmsx_group_first_for_consumer: bool = Bool, since 10;
        /// Blob messages: where the body is.
        remote_blob_url: Option<String> = Skip<Option<String>>;
        /// Blob messages: the body's MIME type.
        mime_type: Option<String> = Skip<Option<String>>;
        /// Blob messages: whether the broker deleted the body.
        deleted_by_broker: bool = Skip<bool>;
    }
}

impl Message {
    pub(crate) fn decode(kind: MessageKind, d: &mut Dec<'_, '_>) -> Result<Self> {
        let mut m = Message::decode_fields(d)?;
        m.kind = kind;
        if kind == MessageKind::Blob {
            let ctx = |f| move |e: crate::Error| e.within("Message", f);
            m.remote_blob_url = Str::get(d).map_err(ctx("remote_blob_url"))?;
            m.mime_type = Str::get(d).map_err(ctx("mime_type"))?;
            m.deleted_by_broker = Bool::dec(d).map_err(ctx("deleted_by_broker"))?;
        }
        Ok(m)
    }
}

impl Structure for Message {
    const NAME: &'static str = "Message";
    fn data_type(&self) -> u8 {
        self.kind.data_type()
    }
    fn encode_body(&self, e: &mut Enc<'_>) -> Result<()> {
        self.encode_fields(e)?;
        if self.kind == MessageKind::Blob {
            let ctx = |f| move |e: crate::Error| e.within("Message", f);
            Str::put(self.remote_blob_url.as_deref(), e).map_err(ctx("remote_blob_url"))?;
            Str::put(self.mime_type.as_deref(), e).map_err(ctx("mime_type"))?;
            Bool::enc(&self.deleted_by_broker, e).map_err(ctx("deleted_by_broker"))?;
        }
        Ok(())
    }
    fn from_command(c: Command) -> Option<Self> {
        match c {
            Command::Message(m) => Some(m),
            _ => None,
        }
    }
}

impl From<Message> for Command {
    fn from(m: Message) -> Self {
        Command::Message(m)
    }
}

structure! {
    /// Acknowledges a command that had `response_required`.
    response Response = 30 {}
}

structure! {
    /// A failed command's answer.
    response ExceptionResponse = 31 {
        /// What went wrong.
        exception: Option<Throwable> = Thr;
    }
}

structure! {
    /// An answer carrying a data structure.
    response DataResponse = 32 {
        /// The data.
        data: Option<Box<Command>> = Nested<Box<Command>>;
    }
}

structure! {
    /// An answer carrying several data structures (XA recover).
    response DataArrayResponse = 33 {
        /// The data.
        data: Option<Vec<Command>> = Array<Command>;
    }
}

structure! {
    /// An answer carrying an int (XA prepare's vote).
    response IntegerResponse = 34 {
        /// The value.
        result: i32 = Int;
    }
}

structure! {
    /// A broker-discovery event.
    plain DiscoveryEvent = 40 {
        /// The service.
        service_name: Option<String> = Str;
        /// The broker.
        broker_name: Option<String> = Str;
    }
}

structure! {
    /// A durable subscription (network bridges, store).
    plain SubscriptionInfo = 55 {
        /// The client id.
        client_id: Option<String> = Str;
        /// The destination.
        destination: Option<Destination> = Cached<Destination>;
        /// The selector.
        selector: Option<String> = Str;
        /// The subscription name (Java spells it "subcription").
        subscription_name: Option<String> = Str;
        /// The subscribed destination.
        subscribed_destination: Option<Destination> = Nested<Destination>;
        /// Whether it is no-local (v11+).
        no_local: bool = Bool, since 11;
    }
}

structure! {
    /// Asks the peer to replay commands (UDP transports).
    command ReplayCommand = 65 {
        /// First missing command.
        first_nak_number: i32 = Int;
        /// Last missing command.
        last_nak_number: i32 = Int;
    }
}

structure! {
    /// Tells a client the broker's view of a message dispatch (network,
    /// failover).
    command MessageDispatchNotification = 90 {
        /// The consumer.
        consumer_id: Option<ConsumerId> = Cached<ConsumerId>;
        /// The destination.
        destination: Option<Destination> = Cached<Destination>;
        /// The delivery sequence.
        delivery_sequence_id: i64 = Long;
        /// The message.
        message_id: Option<MessageId> = Nested<MessageId>;
    }
}

structure! {
    /// A broker's durable subscriptions, for network bridges (v12+).
    command BrokerSubscriptionInfo = 92 {
        /// The broker.
        broker_id: Option<BrokerId> = Nested<BrokerId>;
        /// Its name.
        broker_name: Option<String> = Str;
        /// The subscriptions.
        subscription_infos: Option<Vec<SubscriptionInfo>> = Array<SubscriptionInfo>;
    }
}
