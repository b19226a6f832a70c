//! `tokio_util::codec` impls on [`Codec`], so a connection can be a
//! `Framed<TcpStream, Codec>`.

use bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};

use crate::{Codec, Command, Error};

/// Errors from the `Framed` adapter: a protocol error or an I/O failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The peer sent something that is not valid OpenWire, or a command
    /// could not be encoded.
    #[error(transparent)]
    Protocol(#[from] Error),
    /// Reading or writing the transport failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl Decoder for Codec {
    type Item = Command;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Command>, CodecError> {
        Ok(Codec::decode(self, src)?)
    }
}

impl Encoder<&Command> for Codec {
    type Error = CodecError;

    fn encode(&mut self, item: &Command, dst: &mut BytesMut) -> Result<(), CodecError> {
        Ok(Codec::encode(self, item, dst)?)
    }
}

impl Encoder<Command> for Codec {
    type Error = CodecError;

    fn encode(&mut self, item: Command, dst: &mut BytesMut) -> Result<(), CodecError> {
        Ok(Codec::encode(self, &item, dst)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KeepAliveInfo;

    #[test]
    fn the_tokio_adapter_speaks_the_same_frames() {
        let mut codec = Codec::new();
        let mut buf = BytesMut::new();
        let cmd = Command::KeepAliveInfo(KeepAliveInfo::default());
        Encoder::encode(&mut codec, &cmd, &mut buf).unwrap();
        assert_eq!(Decoder::decode(&mut codec, &mut buf).unwrap(), Some(cmd));
        buf.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(
            Decoder::decode(&mut codec, &mut buf),
            Err(CodecError::Protocol(Error::Malformed { .. }))
        ));
    }
}
