//! The value of an application property.

use std::fmt;

use bytes::Bytes;

/// A typed property value: the types JMS (and so OpenWire) and AMQP 1.0
/// application properties carry. STOMP headers are all [`Value::String`].
///
/// Equality compares floats by their bits, so that every value equals
/// itself (a NaN included) and a message equals its stored copy.
#[derive(Debug, Clone)]
pub enum Value {
    /// No value (JMS's and AMQP's null).
    Null,
    /// A boolean.
    Bool(bool),
    /// A signed 8-bit integer (JMS `byte`).
    I8(i8),
    /// A signed 16-bit integer (JMS `short`).
    I16(i16),
    /// A signed 32-bit integer (JMS `int`).
    I32(i32),
    /// A signed 64-bit integer (JMS `long`).
    I64(i64),
    /// A 32-bit float.
    F32(f32),
    /// A 64-bit float.
    F64(f64),
    /// A string: every STOMP header.
    String(String),
    /// Bytes (AMQP `binary`; OpenWire carries byte arrays).
    Bytes(Bytes),
}

impl Value {
    /// The string, if this is a string value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// Approximate memory the value holds, for the memory budget: a
    /// string's or bytes' length, and 8 for the others.
    pub fn weight(&self) -> usize {
        match self {
            Value::String(s) => s.len(),
            Value::Bytes(b) => b.len(),
            _ => 8,
        }
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Null, Value::Null) => true,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::I8(a), Value::I8(b)) => a == b,
            (Value::I16(a), Value::I16(b)) => a == b,
            (Value::I32(a), Value::I32(b)) => a == b,
            (Value::I64(a), Value::I64(b)) => a == b,
            (Value::F32(a), Value::F32(b)) => a.to_bits() == b.to_bits(),
            (Value::F64(a), Value::F64(b)) => a.to_bits() == b.to_bits(),
            (Value::String(a), Value::String(b)) => a == b,
            (Value::Bytes(a), Value::Bytes(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for Value {}

/// The text form, for protocols whose headers are text (STOMP writes
/// non-string properties this way): strings as they are; null as the
/// empty string; booleans `true`/`false`; integers in decimal; floats in
/// the shortest form that reads back to the same value (`1.5`, `1e-7`,
/// `-0.0`), with `NaN`, `Infinity` and `-Infinity` spelled as Java spells
/// them; bytes in lowercase hex.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => Ok(()),
            Value::Bool(b) => write!(f, "{b}"),
            Value::I8(n) => write!(f, "{n}"),
            Value::I16(n) => write!(f, "{n}"),
            Value::I32(n) => write!(f, "{n}"),
            Value::I64(n) => write!(f, "{n}"),
            Value::F32(x) => write_float(f, f64::from(*x), format_args!("{x:?}")),
            Value::F64(x) => write_float(f, *x, format_args!("{x:?}")),
            Value::String(s) => f.write_str(s),
            Value::Bytes(b) => b.iter().try_for_each(|byte| write!(f, "{byte:02x}")),
        }
    }
}

/// Writes `shortest` (the float's `Debug` form, the shortest that reads
/// back), or Java's spelling of the values that have no digits.
fn write_float(f: &mut fmt::Formatter<'_>, x: f64, shortest: fmt::Arguments<'_>) -> fmt::Result {
    if x.is_nan() {
        f.write_str("NaN")
    } else if x.is_infinite() {
        f.write_str(if x > 0.0 { "Infinity" } else { "-Infinity" })
    } else {
        f.write_fmt(shortest)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::String(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::String(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_forms() {
        let cases: [(Value, &str); 16] = [
            (Value::Null, ""),
            (Value::Bool(true), "true"),
            (Value::I8(-128), "-128"),
            (Value::I16(32_767), "32767"),
            (Value::I32(-7), "-7"),
            (Value::I64(i64::MAX), "9223372036854775807"),
            (Value::F32(0.1), "0.1"),
            (Value::F64(1.0), "1.0"),
            (Value::F64(-0.0), "-0.0"),
            (Value::F64(1e-7), "1e-7"),
            (Value::F64(f64::NAN), "NaN"),
            (Value::F32(f32::INFINITY), "Infinity"),
            (Value::F64(f64::NEG_INFINITY), "-Infinity"),
            (Value::String("a:b\n".into()), "a:b\n"),
            (Value::Bytes(Bytes::from_static(&[0, 0xab, 0x10])), "00ab10"),
            (Value::Bytes(Bytes::new()), ""),
        ];
        for (v, text) in cases {
            assert_eq!(v.to_string(), text, "{v:?}");
        }
        // The shortest forms read back to the same value.
        for x in [0.1f64, 1e300, -2.5e-310, 123_456.789] {
            assert_eq!(Value::F64(x).to_string().parse::<f64>(), Ok(x));
        }
        assert_eq!(Value::F32(0.1).to_string().parse::<f32>(), Ok(0.1f32));
    }

    #[test]
    fn floats_are_equal_by_their_bits() {
        assert_eq!(Value::F64(f64::NAN), Value::F64(f64::NAN));
        assert_ne!(Value::F64(0.0), Value::F64(-0.0));
        assert_ne!(Value::F32(1.0), Value::F64(1.0));
        assert_ne!(Value::I32(1), Value::I64(1));
        assert_eq!(Value::from("x"), Value::String("x".into()));
        assert_eq!(Value::from("x").as_str(), Some("x"));
        assert_eq!(Value::I8(1).as_str(), None);
    }
}
