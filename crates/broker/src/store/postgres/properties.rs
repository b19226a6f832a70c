//! Application properties as the `headers` column (`jsonb`) holds them.
//!
//! `[[name, value], ...]`, in order. A string value is a JSON string, so the
//! rows of schema version 2, whose values were all strings (STOMP headers),
//! read as they are. Any other value is an object with one member that
//! names its type:
//!
//! ```text
//! {"null": null}  {"bool": true}  {"i8": -1}  {"i16": 300}  {"i32": 7}  {"i64": 9007199254740993}
//! {"f32": "0.1"}  {"f64": "-0.0"}  {"f64": "NaN"}  {"f64": "inf"}  {"bytes": "00ab10"}
//! ```
//!
//! Integers are JSON numbers (`jsonb` keeps them exactly). Floats are
//! strings, the shortest text that reads back to the same value: JSON has
//! no NaN or infinities, and `jsonb` would turn `-0.0` into `0.0`. Bytes are
//! lowercase hex.

use bytes::Bytes;
use serde::Serialize;
use serde::ser::{SerializeMap, SerializeTuple};

use crate::model::{Properties, Value};

/// A `headers` value this code cannot read.
#[derive(Debug, thiserror::Error)]
pub(super) enum PropertiesError {
    /// Not JSON, or not a list of pairs.
    #[error("not a list of [name, value] pairs: {0}")]
    Json(#[from] serde_json::Error),
    /// A value of an unknown type, or one that does not fit its type.
    #[error("property '{name}': {reason}")]
    Value {
        /// The property's name.
        name: String,
        /// What is wrong with its value.
        reason: &'static str,
    },
}

/// The JSON text of `properties`.
pub(super) fn encode(properties: &Properties) -> Result<String, serde_json::Error> {
    serde_json::to_string(&List(properties))
}

/// Reads what [`encode`] wrote, or what schema version 2 wrote.
pub(super) fn decode(text: &str) -> Result<Properties, PropertiesError> {
    let pairs: Vec<(String, serde_json::Value)> = serde_json::from_str(text)?;
    pairs
        .into_iter()
        .map(|(name, json)| match value(json) {
            Ok(v) => Ok((name, v)),
            Err(reason) => Err(PropertiesError::Value { name, reason }),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Properties::from)
}

fn value(json: serde_json::Value) -> Result<Value, &'static str> {
    use serde_json::Value as J;
    let object = match json {
        J::String(s) => return Ok(Value::String(s)),
        J::Object(o) if o.len() == 1 => o,
        _ => return Err("neither a string nor an object with one member naming its type"),
    };
    let Some((kind, v)) = object.into_iter().next() else {
        return Err("empty object");
    };
    fn int(v: &serde_json::Value) -> Result<i64, &'static str> {
        v.as_i64().ok_or("not an integer")
    }
    fn float(v: &serde_json::Value) -> Result<&str, &'static str> {
        v.as_str().ok_or("not a float's text")
    }
    Ok(match (kind.as_str(), &v) {
        ("null", J::Null) => Value::Null,
        ("bool", J::Bool(b)) => Value::Bool(*b),
        ("i8", v) => Value::I8(i8::try_from(int(v)?).map_err(|_| "out of range")?),
        ("i16", v) => Value::I16(i16::try_from(int(v)?).map_err(|_| "out of range")?),
        ("i32", v) => Value::I32(i32::try_from(int(v)?).map_err(|_| "out of range")?),
        ("i64", v) => Value::I64(int(v)?),
        ("f32", v) => Value::F32(float(v)?.parse().map_err(|_| "not a float")?),
        ("f64", v) => Value::F64(float(v)?.parse().map_err(|_| "not a float")?),
        ("bytes", J::String(hex)) => Value::Bytes(from_hex(hex).ok_or("not hex")?),
        _ => return Err("unknown type"),
    })
}

fn from_hex(hex: &str) -> Option<Bytes> {
    fn nibble(c: u8) -> Option<u8> {
        char::from(c).to_digit(16).map(|d| d as u8)
    }
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    hex.as_bytes()
        .chunks(2)
        .map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?))
        .collect::<Option<Vec<u8>>>()
        .map(Bytes::from)
}

/// The list, serialized without building a JSON tree first.
struct List<'a>(&'a Properties);

impl Serialize for List<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|(name, v)| Pair(name, v)))
    }
}

struct Pair<'a>(&'a str, &'a Value);

impl Serialize for Pair<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(2)?;
        t.serialize_element(self.0)?;
        t.serialize_element(&Typed(self.1))?;
        t.end()
    }
}

struct Typed<'a>(&'a Value);

impl Serialize for Typed<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        fn one<S: serde::Serializer, T: Serialize + ?Sized>(
            s: S,
            kind: &str,
            v: &T,
        ) -> Result<S::Ok, S::Error> {
            let mut m = s.serialize_map(Some(1))?;
            m.serialize_entry(kind, v)?;
            m.end()
        }
        match self.0 {
            Value::String(v) => s.serialize_str(v),
            Value::Null => one(s, "null", &()),
            Value::Bool(v) => one(s, "bool", v),
            Value::I8(v) => one(s, "i8", v),
            Value::I16(v) => one(s, "i16", v),
            Value::I32(v) => one(s, "i32", v),
            Value::I64(v) => one(s, "i64", v),
            Value::F32(v) => one(s, "f32", &format!("{v:?}")),
            Value::F64(v) => one(s, "f64", &format!("{v:?}")),
            Value::Bytes(v) => {
                let hex: String = v.iter().map(|b| format!("{b:02x}")).collect();
                one(s, "bytes", &hex)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_round_trips_and_version_2_rows_read() {
        let all: Properties = [
            ("s", Value::from("v:1\n\"é\"")),
            ("null", Value::Null),
            ("t", Value::Bool(true)),
            ("i8", Value::I8(i8::MIN)),
            ("i16", Value::I16(i16::MAX)),
            ("i32", Value::I32(-5)),
            ("i64", Value::I64(i64::MAX)),
            ("f32", Value::F32(0.1)),
            ("f64", Value::F64(-0.0)),
            ("nan", Value::F64(f64::NAN)),
            ("inf", Value::F32(f32::NEG_INFINITY)),
            ("b", Value::Bytes(Bytes::from_static(&[0, 0xab, 0xff]))),
            ("empty", Value::Bytes(Bytes::new())),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let text = encode(&all).unwrap();
        assert!(
            text.starts_with(r#"[["s","v:1\n\"é\""],["null",{"null":null}],"#),
            "{text}"
        );
        assert_eq!(decode(&text).unwrap(), all);
        let v2 = r#"[["persistent", "true"], ["k", "v"], ["empty", ""]]"#;
        let read = decode(v2).unwrap();
        let pairs: Vec<_> = read.iter().map(|(k, v)| (k, v.as_str())).collect();
        assert_eq!(
            pairs,
            vec![
                ("persistent", Some("true")),
                ("k", Some("v")),
                ("empty", Some(""))
            ]
        );
        assert_eq!(decode("[]").unwrap(), Properties::new());
    }

    #[test]
    fn what_cannot_be_read_is_named() {
        for (bad, why) in [
            (r#"{"k": "v"}"#, "not a list"),
            (r#"[["k", 1]]"#, "neither a string"),
            (r#"[["k", {"i8": 300}]]"#, "out of range"),
            (r#"[["k", {"f64": 1.5}]]"#, "not a float's text"),
            (r#"[["k", {"bytes": "abc"}]]"#, "not hex"),
            (r#"[["k", {"bytes": "+a"}]]"#, "not hex"),
            (r#"[["k", {"u64": 1}]]"#, "unknown type"),
            (r#"[["k", {"i32": 1, "i64": 1}]]"#, "neither a string"),
        ] {
            let e = decode(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
