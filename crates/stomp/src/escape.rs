//! Header escaping. The rules depend on the version: 1.0 has no escaping at
//! all, 1.1 defines `\\`, `\n` and `\c`, and 1.2 adds `\r`. An undefined
//! escape is a fatal protocol error in 1.1 and 1.2; we accept `\r` in 1.1
//! too because some 1.1 clients send it and it is unambiguous.

use std::borrow::Cow;

use bytes::{BufMut, BytesMut};

use crate::Version;

/// A header with an escape STOMP does not define (a fatal protocol error in
/// 1.1 and 1.2). The parser reports it with the header's line as
/// [`ParseError::InvalidEscape`](crate::ParseError::InvalidEscape).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("undefined escape sequence '{sequence}'")]
pub struct EscapeError {
    /// The offending two-character sequence, e.g. `\t`, or a lone
    /// trailing backslash.
    pub sequence: String,
}

/// Undoes header escaping for `version`. Fails with the offending
/// sequence on an undefined escape (or a lone trailing backslash).
pub fn unescape(raw: &str, version: Version) -> Result<Cow<'_, str>, EscapeError> {
    if !version.escapes() || !raw.contains('\\') {
        return Ok(Cow::Borrowed(raw));
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('c') => out.push(':'),
            Some('r') => out.push('\r'),
            Some(other) => {
                return Err(EscapeError {
                    sequence: format!("\\{other}"),
                });
            }
            None => {
                return Err(EscapeError {
                    sequence: "\\".to_owned(),
                });
            }
        }
    }
    Ok(Cow::Owned(out))
}

/// Appends `s` to `out`, escaped for `version`.
///
/// STOMP 1.0 cannot represent a line break or (in a name) a colon, yet a 1.0
/// subscriber may receive headers that a 1.2 client sent. Writing them raw
/// would break the framing for that subscriber, so for 1.0 CR and LF become
/// spaces, and colons in names become underscores; all other bytes pass
/// through untouched.
pub fn escape_into(out: &mut BytesMut, s: &str, version: Version, is_name: bool) {
    let needs = |b: u8| match b {
        b'\n' | b'\r' => true,
        b'\\' => version.escapes(),
        b':' => is_name || version.escapes(),
        _ => false,
    };
    if !s.bytes().any(needs) {
        out.put_slice(s.as_bytes());
        return;
    }
    out.reserve(s.len() + 8);
    for b in s.bytes() {
        if version.escapes() {
            match b {
                b'\\' => out.put_slice(b"\\\\"),
                b'\n' => out.put_slice(b"\\n"),
                b'\r' => out.put_slice(b"\\r"),
                b':' => out.put_slice(b"\\c"),
                _ => out.put_u8(b),
            }
        } else {
            match b {
                b'\n' | b'\r' => out.put_u8(b' '),
                b':' if is_name => out.put_u8(b'_'),
                _ => out.put_u8(b),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn esc(s: &str, v: Version, name: bool) -> String {
        let mut b = BytesMut::new();
        escape_into(&mut b, s, v, name);
        String::from_utf8(b.to_vec()).unwrap()
    }

    #[test]
    fn escapes_per_version() {
        let s = "a:b\\c\nd\re";
        assert_eq!(esc(s, Version::V1_2, false), "a\\cb\\\\c\\nd\\re");
        assert_eq!(esc(s, Version::V1_1, false), "a\\cb\\\\c\\nd\\re");
        assert_eq!(esc(s, Version::V1_0, false), "a:b\\c d e");
        assert_eq!(esc(s, Version::V1_0, true), "a_b\\c d e");
        assert_eq!(esc("plain", Version::V1_2, true), "plain");
    }

    #[test]
    fn unescape_round_trips_and_rejects_undefined() {
        for v in [Version::V1_1, Version::V1_2] {
            let s = "x:y\\z\nw\r";
            let e = esc(s, v, false);
            assert_eq!(unescape(&e, v).unwrap(), s);
        }
        assert_eq!(
            unescape("a\\tb", Version::V1_2).unwrap_err().sequence,
            "\\t"
        );
        assert_eq!(unescape("a\\", Version::V1_2).unwrap_err().sequence, "\\");
        assert_eq!(unescape("a\\tb", Version::V1_0).unwrap(), "a\\tb");
    }
}
