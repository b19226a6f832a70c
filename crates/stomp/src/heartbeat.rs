use std::time::Duration;

/// The `heart-beat` header: `cx,cy` in milliseconds, where the first number
/// is how often the sender can send heart-beats and the second how often it
/// wants to receive them (0 = never).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HeartBeat {
    /// Smallest interval at which the sender can send, in ms (0: cannot).
    pub can_send_ms: u64,
    /// Interval at which the sender wants to receive, in ms (0: does not).
    pub want_receive_ms: u64,
}

/// A `heart-beat` header that is not two comma-separated integers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid heart-beat header '{0}': expected two comma-separated integers such as 10000,10000"
)]
pub struct HeartBeatError(pub String);

impl HeartBeat {
    /// Parses a `heart-beat` header value.
    pub fn parse(s: &str) -> Result<HeartBeat, HeartBeatError> {
        let err = || HeartBeatError(s.chars().take(64).collect());
        let (a, b) = s.split_once(',').ok_or_else(err)?;
        let can_send_ms = a.trim().parse().map_err(|_| err())?;
        let want_receive_ms = b.trim().parse().map_err(|_| err())?;
        Ok(HeartBeat {
            can_send_ms,
            want_receive_ms,
        })
    }

    /// The header value.
    pub fn to_header(self) -> String {
        format!("{},{}", self.can_send_ms, self.want_receive_ms)
    }

    /// The interval at which *we* must send, given our header and the
    /// peer's: the larger of what we can do and what the peer wants, or
    /// `None` if either side said 0.
    pub fn send_interval(ours: HeartBeat, theirs: HeartBeat) -> Option<Duration> {
        if ours.can_send_ms == 0 || theirs.want_receive_ms == 0 {
            return None;
        }
        Some(Duration::from_millis(
            ours.can_send_ms.max(theirs.want_receive_ms),
        ))
    }

    /// The interval at which we expect to hear from the peer, or `None`.
    pub fn receive_interval(ours: HeartBeat, theirs: HeartBeat) -> Option<Duration> {
        HeartBeat::send_interval(theirs, ours)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_negotiate() {
        let c = HeartBeat::parse("1000, 5000").unwrap();
        assert_eq!(c.can_send_ms, 1000);
        assert_eq!(c.want_receive_ms, 5000);
        assert!(HeartBeat::parse("1000").is_err());
        assert!(HeartBeat::parse("a,b").is_err());
        assert!(HeartBeat::parse("-1,0").is_err());
        let s = HeartBeat {
            can_send_ms: 2000,
            want_receive_ms: 3000,
        };
        assert_eq!(
            HeartBeat::send_interval(s, c),
            Some(Duration::from_millis(5000))
        );
        assert_eq!(
            HeartBeat::receive_interval(s, c),
            Some(Duration::from_millis(3000))
        );
        assert_eq!(HeartBeat::send_interval(s, HeartBeat::default()), None);
    }
}
