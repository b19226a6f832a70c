use std::fmt;
use std::str::FromStr;

/// A subscription's acknowledgement mode: the `ack` header of SUBSCRIBE.
///
/// Defined here, beside the frames, because both ends speak it: the client
/// writes it into SUBSCRIBE and the broker reads it back, and the two must
/// agree on the spelling and on what a missing header means (`auto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AckMode {
    /// The broker treats a message as acknowledged once it has sent it.
    /// What a SUBSCRIBE without an `ack` header asks for.
    #[default]
    Auto,
    /// An ACK acknowledges the message and every earlier one delivered to
    /// the same subscription (cumulative).
    Client,
    /// An ACK acknowledges just that message.
    ClientIndividual,
}

/// An `ack` header that names no acknowledgement mode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid ack mode '{value}': expected auto, client or client-individual")]
pub struct AckModeError {
    /// The value as given (its first 64 characters: it comes from a peer,
    /// and the error may be sent back in an ERROR frame).
    pub value: String,
}

impl AckMode {
    /// Every mode, in the order the error message lists them.
    pub const ALL: [AckMode; 3] = [AckMode::Auto, AckMode::Client, AckMode::ClientIndividual];

    /// The `ack` header value.
    pub fn as_str(self) -> &'static str {
        match self {
            AckMode::Auto => "auto",
            AckMode::Client => "client",
            AckMode::ClientIndividual => "client-individual",
        }
    }

    /// Parses an `ack` header value (exact spelling, as STOMP defines it).
    pub fn parse(value: &str) -> Option<AckMode> {
        AckMode::ALL.into_iter().find(|m| m.as_str() == value)
    }

    /// The mode a SUBSCRIBE frame asks for by its `ack` header, `auto` if it
    /// has none.
    pub fn from_header(value: Option<&str>) -> Result<AckMode, AckModeError> {
        value.map_or(Ok(AckMode::Auto), str::parse)
    }
}

impl FromStr for AckMode {
    type Err = AckModeError;

    fn from_str(s: &str) -> Result<AckMode, AckModeError> {
        AckMode::parse(s).ok_or_else(|| AckModeError {
            value: s.chars().take(64).collect(),
        })
    }
}

impl fmt::Display for AckMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mode_round_trips_through_its_header_value() {
        for m in AckMode::ALL {
            assert_eq!(m.as_str().parse::<AckMode>(), Ok(m));
            assert_eq!(m.to_string(), m.as_str());
        }
        assert_eq!(AckMode::from_header(None), Ok(AckMode::Auto));
        assert_eq!(
            AckMode::from_header(Some("client-individual")),
            Ok(AckMode::ClientIndividual)
        );
    }

    #[test]
    fn a_bad_value_is_named_with_the_choices() {
        for bad in ["", "Auto", "client_individual", " auto"] {
            assert_eq!(AckMode::parse(bad), None);
        }
        let e = "nope".parse::<AckMode>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid ack mode 'nope': expected auto, client or client-individual"
        );
        let long = "x".repeat(1000).parse::<AckMode>().unwrap_err();
        assert_eq!(long.value.len(), 64);
    }
}
