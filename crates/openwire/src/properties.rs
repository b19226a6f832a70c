//! The primitive map encoding (Java's `MarshallingSupport`): message
//! properties, map message bodies and the WireFormatInfo options all use it.
//!
//! A map is a 4-byte count (-1 for null), then per entry a `writeUTF` name
//! and a typed value: a type byte and the value's big-endian bytes.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{Error, Result};
use crate::wire::{Reader, get_mutf8, get_utf, mutf8_len, put_mutf8, put_utf};

const NULL: u8 = 0;
const BOOLEAN: u8 = 1;
const BYTE: u8 = 2;
const CHAR: u8 = 3;
const SHORT: u8 = 4;
const INTEGER: u8 = 5;
const LONG: u8 = 6;
const DOUBLE: u8 = 7;
const FLOAT: u8 = 8;
const STRING: u8 = 9;
const BYTE_ARRAY: u8 = 10;
const MAP: u8 = 11;
const LIST: u8 = 12;
const BIG_STRING: u8 = 13;

/// How deep maps and lists may nest (Java's limit too).
pub const MAX_DEPTH: usize = 127;

/// A typed property or map-body value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Java null.
    Null,
    /// `boolean`.
    Bool(bool),
    /// `byte`.
    Byte(i8),
    /// `char` (a UTF-16 unit).
    Char(u16),
    /// `short`.
    Short(i16),
    /// `int`.
    Int(i32),
    /// `long`.
    Long(i64),
    /// `float`.
    Float(f32),
    /// `double`.
    Double(f64),
    /// A string; written in the short form below 8191 UTF-16 units, in
    /// the big form (4-byte length) from there.
    String(String),
    /// `byte[]`.
    Bytes(Bytes),
    /// A nested map.
    Map(Map),
    /// A list.
    List(Vec<Value>),
}

/// A primitive map, in wire order. Java's is a hash map; keeping the order
/// lets a decoded map re-encode to the same bytes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Map(pub Vec<(String, Value)>);

impl Map {
    /// An empty map.
    pub fn new() -> Self {
        Map(Vec::new())
    }

    /// The value of `name` (the last one if a peer sent it twice, as a Java
    /// hash map would keep).
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    /// Sets `name`, replacing an earlier value.
    pub fn insert(&mut self, name: impl Into<String>, value: Value) {
        let name = name.into();
        match self.0.iter_mut().find(|(k, _)| *k == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name, value)),
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it has no entries.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Decodes a marshalled map; `None` for the null map (count -1).
pub fn decode_map(bytes: &[u8]) -> Result<Option<Map>> {
    let mut r = Reader::new(bytes);
    let m = read_map(&mut r, 0)?;
    if r.position() != bytes.len() {
        return Err(Error::malformed("trailing bytes after the map"));
    }
    Ok(m)
}

/// Encodes a map (`None`: the null map).
pub fn encode_map(map: Option<&Map>, out: &mut BytesMut) -> Result<()> {
    match map {
        None => {
            out.put_i32(-1);
            Ok(())
        }
        Some(m) => write_map(m, out),
    }
}

pub(crate) fn read_map(r: &mut Reader<'_>, depth: usize) -> Result<Option<Map>> {
    if depth > MAX_DEPTH {
        return Err(Error::malformed("maps nested too deep"));
    }
    let n = r.i32()?;
    let Ok(n) = usize::try_from(n) else {
        return Ok(None);
    };
    let mut m = Vec::with_capacity(n.min(128));
    for _ in 0..n {
        let name = get_utf(r)?;
        let v = read_value(r, depth + 1).map_err(|e| e.within("property", &name))?;
        m.push((name, v));
    }
    Ok(Some(Map(m)))
}

fn read_value(r: &mut Reader<'_>, depth: usize) -> Result<Value> {
    Ok(match r.u8()? {
        NULL => Value::Null,
        BOOLEAN => Value::Bool(r.bool()?),
        BYTE => Value::Byte(r.u8()? as i8),
        CHAR => Value::Char(r.u16()?),
        SHORT => Value::Short(r.i16()?),
        INTEGER => Value::Int(r.i32()?),
        LONG => Value::Long(r.i64()?),
        FLOAT => Value::Float(r.f32()?),
        DOUBLE => Value::Double(r.f64()?),
        STRING => Value::String(get_utf(r)?),
        BIG_STRING => {
            let n = r.len_i32()?;
            Value::String(get_mutf8(r.take(n)?)?)
        }
        BYTE_ARRAY => {
            let n = r.len_i32()?;
            Value::Bytes(Bytes::copy_from_slice(r.take(n)?))
        }
        MAP => Value::Map(read_map(r, depth)?.unwrap_or_default()),
        LIST => {
            if depth > MAX_DEPTH {
                return Err(Error::malformed("lists nested too deep"));
            }
            let n = r.len_i32()?;
            let mut l = Vec::with_capacity(n.min(128));
            for _ in 0..n {
                l.push(read_value(r, depth + 1)?);
            }
            Value::List(l)
        }
        other => return Err(Error::malformed(format!("unknown primitive type {other}"))),
    })
}

fn write_map(m: &Map, out: &mut BytesMut) -> Result<()> {
    let n = i32::try_from(m.0.len()).map_err(|_| Error::unencodable("map too large"))?;
    out.put_i32(n);
    for (k, v) in &m.0 {
        put_utf(k, out)?;
        write_value(v, out).map_err(|e| e.within("property", k))?;
    }
    Ok(())
}

fn write_value(v: &Value, out: &mut BytesMut) -> Result<()> {
    match v {
        Value::Null => out.put_u8(NULL),
        Value::Bool(b) => {
            out.put_u8(BOOLEAN);
            out.put_u8(*b as u8);
        }
        Value::Byte(b) => {
            out.put_u8(BYTE);
            out.put_i8(*b);
        }
        Value::Char(c) => {
            out.put_u8(CHAR);
            out.put_u16(*c);
        }
        Value::Short(s) => {
            out.put_u8(SHORT);
            out.put_i16(*s);
        }
        Value::Int(i) => {
            out.put_u8(INTEGER);
            out.put_i32(*i);
        }
        Value::Long(l) => {
            out.put_u8(LONG);
            out.put_i64(*l);
        }
        Value::Float(f) => {
            out.put_u8(FLOAT);
            out.put_f32(*f);
        }
        Value::Double(d) => {
            out.put_u8(DOUBLE);
            out.put_f64(*d);
        }
        Value::String(s) => {
            if s.encode_utf16().count() < (i16::MAX / 4) as usize {
                out.put_u8(STRING);
                put_utf(s, out)?;
            } else {
                out.put_u8(BIG_STRING);
                put_utf8(s, out)?;
            }
        }
        Value::Bytes(b) => {
            out.put_u8(BYTE_ARRAY);
            let n =
                i32::try_from(b.len()).map_err(|_| Error::unencodable("byte array too large"))?;
            out.put_i32(n);
            out.put_slice(b);
        }
        Value::Map(m) => {
            out.put_u8(MAP);
            write_map(m, out)?;
        }
        Value::List(l) => {
            out.put_u8(LIST);
            let n = i32::try_from(l.len()).map_err(|_| Error::unencodable("list too large"))?;
            out.put_i32(n);
            for v in l {
                write_value(v, out)?;
            }
        }
    }
    Ok(())
}

/// `MarshallingSupport.writeUTF8`: a 4-byte length, then modified UTF-8
/// (the text message body and big strings).
pub(crate) fn put_utf8(s: &str, out: &mut BytesMut) -> Result<()> {
    let n = i32::try_from(mutf8_len(s)).map_err(|_| Error::unencodable("string too large"))?;
    out.put_i32(n);
    put_mutf8(s, out);
    Ok(())
}
