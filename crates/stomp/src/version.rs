use std::fmt;

/// A STOMP protocol version. The order of the variants is the order of
/// preference: negotiation picks the highest version both sides accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    /// STOMP 1.0: no header escaping, no NACK, no heart-beats.
    V1_0,
    /// STOMP 1.1: escaping of `\\`, `\n`, `:`; NACK; heart-beats.
    V1_1,
    /// STOMP 1.2: also escapes `\r`; ACK/NACK by the `ack` header.
    V1_2,
}

/// No version offered by the client is supported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "none of the offered protocol versions ({offered}) is supported; supported: {}",
    Version::SUPPORTED
)]
pub struct VersionError {
    /// The `accept-version` header as the client sent it.
    pub offered: String,
}

impl Version {
    /// The value servers put in the `version` header of an ERROR frame when
    /// negotiation fails.
    pub const SUPPORTED: &'static str = "1.0,1.1,1.2";

    /// The version string as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V1_0 => "1.0",
            Version::V1_1 => "1.1",
            Version::V1_2 => "1.2",
        }
    }

    /// Parses one version token such as `1.2`.
    pub fn parse(s: &str) -> Option<Version> {
        match s.trim() {
            "1.0" => Some(Version::V1_0),
            "1.1" => Some(Version::V1_1),
            "1.2" => Some(Version::V1_2),
            _ => None,
        }
    }

    /// Picks the highest supported version from a CONNECT frame's
    /// `accept-version` header. A missing header means a 1.0 client.
    pub fn negotiate(accept_version: Option<&str>) -> Result<Version, VersionError> {
        let Some(offered) = accept_version else {
            return Ok(Version::V1_0);
        };
        offered
            .split(',')
            .filter_map(Version::parse)
            .max()
            .ok_or_else(|| VersionError {
                offered: offered.to_owned(),
            })
    }

    /// Whether header names and values are escaped in this version.
    pub fn escapes(self) -> bool {
        self >= Version::V1_1
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_picks_highest_common() {
        assert_eq!(Version::negotiate(None), Ok(Version::V1_0));
        assert_eq!(Version::negotiate(Some("1.1,1.0")), Ok(Version::V1_1));
        assert_eq!(Version::negotiate(Some("1.0, 1.2 ,1.1")), Ok(Version::V1_2));
        assert_eq!(Version::negotiate(Some("1.2,2.0")), Ok(Version::V1_2));
        let err = Version::negotiate(Some("2.0,3.1")).unwrap_err();
        assert_eq!(err.offered, "2.0,3.1");
        assert!(err.to_string().contains("1.0,1.1,1.2"));
        assert!(Version::negotiate(Some("")).is_err());
    }
}
