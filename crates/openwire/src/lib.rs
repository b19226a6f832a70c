//! OpenWire, ActiveMQ's native wire format: the command types a JMS client
//! and a broker exchange, and a sans-I/O [`Codec`] for them.
//!
//! A connection starts with both sides sending a [`WireFormatInfo`] in the
//! initial format (loose, size-prefixed, uncached); each side then calls
//! [`negotiate`] with its own [`WireFormatOptions`] and the peer's, and
//! [`Codec::renegotiate`] with the result. Versions [`MIN_VERSION`] to
//! [`MAX_VERSION`] are spoken, with the fields each version added.
//!
//! ```
//! use bytes::BytesMut;
//! use halyard_openwire::{Codec, Command, WireFormatOptions};
//!
//! let mut codec = Codec::new();
//! let info = WireFormatOptions::default().to_info().unwrap();
//! let mut buf = BytesMut::new();
//! codec.encode(&Command::WireFormatInfo(info.clone()), &mut buf).unwrap();
//! assert_eq!(codec.decode(&mut buf).unwrap(), Some(Command::WireFormatInfo(info)));
//! ```

#[macro_use]
mod macros;

mod cache;
mod codec;
mod command;
mod error;
#[cfg(feature = "codec")]
mod framed;
pub mod message;
pub mod properties;
mod throwable;
mod types;
mod wire;

pub use codec::{Codec, DEFAULT_MAX_FRAME_SIZE, MAGIC, Negotiated, WireFormatOptions, negotiate};
pub use command::Command;
pub use error::{Error, Result};
#[cfg(feature = "codec")]
pub use framed::CodecError;
pub use properties::{Map, Value};
pub use types::*;

/// The oldest OpenWire version this codec speaks (ActiveMQ 5.4's). Older
/// peers are refused by [`negotiate`]; the Java broker ships no marshallers
/// between 1 and 9 either.
pub const MIN_VERSION: i32 = 9;

/// The newest OpenWire version (ActiveMQ 5.13 onwards).
pub const MAX_VERSION: i32 = 12;
