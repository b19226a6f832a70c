//! The `Command` enum over every data structure the codec knows, and the
//! type-byte dispatch.

use crate::error::{Error, Result};
use crate::types::*;
use crate::wire::{Dec, Enc, Structure};

macro_rules! command_enum {
    (
        simple { $( $(#[$m:meta])* $v:ident, )* }
        special { $( $(#[$sm:meta])* $s:ident, )* }
    ) => {
        /// Any OpenWire data structure: the commands, and the ids and
        /// destinations that normally travel nested inside them (a peer may
        /// send those at top level too, so they decode there as well).
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        #[allow(clippy::large_enum_variant)]
        pub enum Command {
            $( $(#[$m])* $v($v), )*
            $( $(#[$sm])* $s($s), )*
        }

        impl Command {
            /// The type byte that introduces it on the wire.
            pub fn data_type(&self) -> u8 {
                match self {
                    $( Command::$v(x) => x.data_type(), )*
                    $( Command::$s(x) => x.data_type(), )*
                }
            }

            pub(crate) fn encode_body(&self, e: &mut Enc<'_>) -> Result<()> {
                match self {
                    $( Command::$v(x) => x.encode_body(e), )*
                    $( Command::$s(x) => x.encode_body(e), )*
                }
            }

            pub(crate) fn decode_body(ty: u8, d: &mut Dec<'_, '_>) -> Result<Command> {
                if ty == BrokerSubscriptionInfo::DATA_STRUCTURE_TYPE && d.version < 12 {
                    return Err(Error::UnknownCommand(ty));
                }
                // Pick a function first and call it once: a match whose arms
                // each decode in place gives this (recursive) frame a stack
                // slot per arm in unoptimised builds, and nesting then
                // overflows the stack long before the depth limit.
                type DecodeFn = fn(u8, &mut Dec<'_, '_>) -> Result<Command>;
                let f: DecodeFn = match ty {
                    $( $v::DATA_STRUCTURE_TYPE => |_, d| Ok(Command::$v($v::decode_fields(d)?)), )*
                    _ => Self::decode_special,
                };
                f(ty, d)
            }
        }
    };
}

command_enum! {
    simple {
        /// Wire format negotiation (1).
        WireFormatInfo,
        /// A broker's description (2).
        BrokerInfo,
        /// Open a connection (3).
        ConnectionInfo,
        /// Open a session (4).
        SessionInfo,
        /// Open a consumer (5).
        ConsumerInfo,
        /// Open a producer (6).
        ProducerInfo,
        /// Transaction demarcation (7).
        TransactionInfo,
        /// Create or remove a destination (8).
        DestinationInfo,
        /// Delete a durable subscription (9).
        RemoveSubscriptionInfo,
        /// Heartbeat (10).
        KeepAliveInfo,
        /// Peer shutdown (11).
        ShutdownInfo,
        /// Close something (12).
        RemoveInfo,
        /// Textual control (14).
        ControlCommand,
        /// Flush (15).
        FlushCommand,
        /// Asynchronous error (16).
        ConnectionError,
        /// Consumer steering (17).
        ConsumerControl,
        /// Connection steering (18).
        ConnectionControl,
        /// Producer window release (19).
        ProducerAck,
        /// Pull a message (20).
        MessagePull,
        /// Deliver a message (21).
        MessageDispatch,
        /// Acknowledge (22).
        MessageAck,
        /// Success answer (30).
        Response,
        /// Failure answer (31).
        ExceptionResponse,
        /// Data answer (32).
        DataResponse,
        /// Data array answer (33).
        DataArrayResponse,
        /// Int answer (34).
        IntegerResponse,
        /// Discovery event (40).
        DiscoveryEvent,
        /// Durable subscription (55).
        SubscriptionInfo,
        /// Replay request (65).
        ReplayCommand,
        /// Dispatch notification (90).
        MessageDispatchNotification,
        /// Network durable subscriptions (92, v12+).
        BrokerSubscriptionInfo,
        /// Connection id (120).
        ConnectionId,
        /// Session id (121).
        SessionId,
        /// Consumer id (122).
        ConsumerId,
        /// Producer id (123).
        ProducerId,
        /// Broker id (124).
        BrokerId,
        /// Message id (110).
        MessageId,
    }
    special {
        /// A message of any kind (23-29).
        Message,
        /// A queue or topic (100-103).
        Destination,
        /// A transaction id (111, 112).
        TransactionId,
    }
}

impl Command {
    fn decode_special(ty: u8, d: &mut Dec<'_, '_>) -> Result<Command> {
        if let Some(kind) = MessageKind::from_data_type(ty) {
            return Message::decode(kind, d).map(Command::Message);
        }
        if let Some(kind) = DestinationKind::from_data_type(ty) {
            return Destination::decode(kind, d).map(Command::Destination);
        }
        match ty {
            LocalTransactionId::DATA_STRUCTURE_TYPE => LocalTransactionId::decode_fields(d)
                .map(|t| Command::TransactionId(TransactionId::Local(t))),
            XaTransactionId::DATA_STRUCTURE_TYPE => XaTransactionId::decode_fields(d)
                .map(|t| Command::TransactionId(TransactionId::Xa(t))),
            _ => Err(Error::UnknownCommand(ty)),
        }
    }

    /// Whether this is a command that can carry `response_required` (the
    /// BaseCommand subclasses), and its (command_id, response_required).
    pub fn base(&self) -> Option<(i32, bool)> {
        macro_rules! base {
            ($($v:ident),*) => {
                match self {
                    $( Command::$v(c) => Some((c.command_id, c.response_required)), )*
                    _ => None,
                }
            };
        }
        base!(
            BrokerInfo,
            ConnectionInfo,
            SessionInfo,
            ConsumerInfo,
            ProducerInfo,
            TransactionInfo,
            DestinationInfo,
            RemoveSubscriptionInfo,
            KeepAliveInfo,
            ShutdownInfo,
            RemoveInfo,
            ControlCommand,
            FlushCommand,
            ConnectionError,
            ConsumerControl,
            ConnectionControl,
            ProducerAck,
            MessagePull,
            MessageDispatch,
            MessageAck,
            Message,
            Response,
            ExceptionResponse,
            DataResponse,
            DataArrayResponse,
            IntegerResponse,
            ReplayCommand,
            MessageDispatchNotification,
            BrokerSubscriptionInfo
        )
    }

    /// Whether the sender waits for a Response to this command.
    pub fn response_required(&self) -> bool {
        self.base().is_some_and(|(_, r)| r)
    }

    /// The command id (0 for data structures that are not commands).
    pub fn command_id(&self) -> i32 {
        self.base().map_or(0, |(id, _)| id)
    }
}

impl Structure for Command {
    const NAME: &'static str = "data structure";
    fn data_type(&self) -> u8 {
        Command::data_type(self)
    }
    fn encode_body(&self, e: &mut Enc<'_>) -> Result<()> {
        Command::encode_body(self, e)
    }
    fn from_command(c: Command) -> Option<Self> {
        Some(c)
    }
}

impl Structure for Box<Command> {
    const NAME: &'static str = "data structure";
    fn data_type(&self) -> u8 {
        Command::data_type(self)
    }
    fn encode_body(&self, e: &mut Enc<'_>) -> Result<()> {
        Command::encode_body(self, e)
    }
    fn from_command(c: Command) -> Option<Self> {
        Some(Box::new(c))
    }
}

impl From<Box<Command>> for Command {
    fn from(c: Box<Command>) -> Self {
        *c
    }
}
