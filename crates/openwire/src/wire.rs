//! Primitive encodings shared by every marshaller: big-endian integers,
//! the tight encoding's boolean bit stream, Java's modified UTF-8, and the
//! field "kinds" (string, long, cached object, ...) that the structure
//! macro composes into whole commands.
//!
//! One `Kind` implementation serves both encodings: tight and loose differ
//! in where a flag goes (a bit in the boolean stream versus a whole byte)
//! and in how longs are packed, and [`Enc::flag`] / [`Dec::flag`] hide the
//! first difference.

use bytes::{BufMut, Bytes, BytesMut};

use crate::Command;
use crate::cache::{DecodeCache, EncodeCache};
use crate::error::{Error, Result};
use crate::throwable::{StackTraceElement, Throwable};

/// How deep nested objects and exception causes may go in a peer's frame
/// (a hostile frame could otherwise recurse until the stack overflows).
pub(crate) const MAX_DEPTH: u32 = 16;

/// The version from which a field is on the wire (the first listed, or 0).
pub(crate) const fn since(v: &[i32]) -> i32 {
    if v.is_empty() { 0 } else { v[0] }
}

/// A cursor over one frame's bytes; every read checks what is left first,
/// so a peer's length field never sizes an allocation by itself.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() - self.pos < n {
            return Err(Error::truncated());
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    pub(crate) fn bool(&mut self) -> Result<bool> {
        Ok(self.u8()? != 0)
    }
    pub(crate) fn i16(&mut self) -> Result<i16> {
        Ok(i16::from_be_bytes(self.array()?))
    }
    pub(crate) fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    pub(crate) fn i32(&mut self) -> Result<i32> {
        Ok(i32::from_be_bytes(self.array()?))
    }
    pub(crate) fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_be_bytes(self.array()?))
    }
    pub(crate) fn f32(&mut self) -> Result<f32> {
        Ok(f32::from_be_bytes(self.array()?))
    }
    pub(crate) fn f64(&mut self) -> Result<f64> {
        Ok(f64::from_be_bytes(self.array()?))
    }

    /// A length-prefixed block whose length must be non-negative.
    pub(crate) fn len_i32(&mut self) -> Result<usize> {
        let n = self.i32()?;
        usize::try_from(n).map_err(|_| Error::malformed(format!("negative length {n}")))
    }
}

/// The tight encoding's boolean stream, as read.
#[derive(Debug, Clone, Default)]
pub(crate) struct BoolReader<'a> {
    data: &'a [u8],
    bit: usize,
}

impl<'a> BoolReader<'a> {
    pub(crate) fn read(r: &mut Reader<'a>) -> Result<Self> {
        let len = match r.u8()? {
            0xC0 => r.u8()? as usize,
            0x80 => {
                let n = r.i16()?;
                usize::try_from(n)
                    .map_err(|_| Error::malformed(format!("negative boolean stream length {n}")))?
            }
            n => n as usize,
        };
        Ok(BoolReader {
            data: r.take(len)?,
            bit: 0,
        })
    }

    pub(crate) fn next(&mut self) -> Result<bool> {
        let byte = *self
            .data
            .get(self.bit / 8)
            .ok_or_else(|| Error::malformed("boolean stream exhausted"))?;
        let v = (byte >> (self.bit % 8)) & 1 != 0;
        self.bit += 1;
        Ok(v)
    }
}

/// The tight encoding's boolean stream, as written.
#[derive(Debug, Default)]
pub(crate) struct BoolWriter {
    data: Vec<u8>,
    bits: usize,
}

impl BoolWriter {
    pub(crate) fn push(&mut self, v: bool) {
        if self.bits.is_multiple_of(8) {
            self.data.push(0);
        }
        if v && let Some(last) = self.data.last_mut() {
            *last |= 1 << (self.bits % 8);
        }
        self.bits += 1;
    }

    /// The stream's length prefix and bytes.
    pub(crate) fn write(&self, out: &mut BytesMut) -> Result<()> {
        let n = self.data.len();
        if n < 64 {
            out.put_u8(n as u8);
        } else if n < 256 {
            out.put_u8(0xC0);
            out.put_u8(n as u8);
        } else if n <= i16::MAX as usize {
            out.put_u8(0x80);
            out.put_i16(n as i16);
        } else {
            return Err(Error::unencodable("more booleans than a frame can carry"));
        }
        out.put_slice(&self.data);
        Ok(())
    }

    pub(crate) fn encoded_len(&self) -> usize {
        let n = self.data.len();
        n + if n < 64 {
            1
        } else if n < 256 {
            2
        } else {
            3
        }
    }
}

/// Java's modified UTF-8 (`DataOutput.writeUTF`): UTF-16 units, NUL as two
/// bytes, supplementary characters as two 3-byte surrogates.
pub(crate) fn mutf8_len(s: &str) -> usize {
    s.encode_utf16()
        .map(|u| match u {
            0x0001..=0x007F => 1,
            0x0000 | 0x0080..=0x07FF => 2,
            _ => 3,
        })
        .sum()
}

pub(crate) fn put_mutf8(s: &str, out: &mut BytesMut) {
    for u in s.encode_utf16() {
        match u {
            0x0001..=0x007F => out.put_u8(u as u8),
            0x0000 | 0x0080..=0x07FF => {
                out.put_u8(0xC0 | (u >> 6) as u8 & 0x1F);
                out.put_u8(0x80 | (u & 0x3F) as u8);
            }
            _ => {
                out.put_u8(0xE0 | (u >> 12) as u8 & 0x0F);
                out.put_u8(0x80 | (u >> 6) as u8 & 0x3F);
                out.put_u8(0x80 | (u & 0x3F) as u8);
            }
        }
    }
}

/// Decodes modified UTF-8, also accepting standard 4-byte sequences (some
/// non-Java clients write plain UTF-8); an unpaired surrogate becomes
/// U+FFFD since a Rust string cannot hold it.
pub(crate) fn get_mutf8(b: &[u8]) -> Result<String> {
    if b.is_ascii() && !b.contains(&0) {
        // Fast path; NUL is excluded only because Java would have written it
        // as two bytes (a raw NUL still decodes below).
        return Ok(b.iter().map(|&c| c as char).collect());
    }
    let bad = || Error::malformed("invalid modified UTF-8");
    let cont = |i: usize| -> Result<u32> {
        match b.get(i) {
            Some(&c) if c & 0xC0 == 0x80 => Ok((c & 0x3F) as u32),
            _ => Err(bad()),
        }
    };
    let mut units: Vec<u16> = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c < 0x80 {
            units.push(c as u16);
            i += 1;
        } else if c & 0xE0 == 0xC0 {
            units.push((((c & 0x1F) as u32) << 6 | cont(i + 1)?) as u16);
            i += 2;
        } else if c & 0xF0 == 0xE0 {
            units.push((((c & 0x0F) as u32) << 12 | cont(i + 1)? << 6 | cont(i + 2)?) as u16);
            i += 3;
        } else if c & 0xF8 == 0xF0 {
            let cp =
                ((c & 0x07) as u32) << 18 | cont(i + 1)? << 12 | cont(i + 2)? << 6 | cont(i + 3)?;
            let ch = char::from_u32(cp).ok_or_else(bad)?;
            let mut buf = [0u16; 2];
            units.extend_from_slice(ch.encode_utf16(&mut buf));
            i += 4;
        } else {
            return Err(bad());
        }
    }
    Ok(String::from_utf16_lossy(&units))
}

/// `DataOutput.writeUTF`: a u16 byte length, then modified UTF-8.
pub(crate) fn put_utf(s: &str, out: &mut BytesMut) -> Result<()> {
    let n = mutf8_len(s);
    if n > u16::MAX as usize {
        return Err(Error::unencodable(format!(
            "string of {n} encoded bytes exceeds 65535"
        )));
    }
    out.put_u16(n as u16);
    put_mutf8(s, out);
    Ok(())
}

pub(crate) fn get_utf(r: &mut Reader<'_>) -> Result<String> {
    let n = r.u16()? as usize;
    get_mutf8(r.take(n)?)
}

/// Encoding state for one frame.
#[derive(Debug)]
pub(crate) struct Enc<'c> {
    pub(crate) out: BytesMut,
    pub(crate) bs: BoolWriter,
    pub(crate) tight: bool,
    pub(crate) version: i32,
    pub(crate) stack_trace: bool,
    pub(crate) cache: Option<&'c mut EncodeCache>,
}

impl Enc<'_> {
    /// A boolean: a bit in the boolean stream (tight) or a byte (loose).
    pub(crate) fn flag(&mut self, v: bool) {
        if self.tight {
            self.bs.push(v);
        } else {
            self.out.put_u8(v as u8);
        }
    }
}

/// Decoding state for one frame.
#[derive(Debug)]
pub(crate) struct Dec<'a, 'c> {
    pub(crate) r: Reader<'a>,
    pub(crate) bs: BoolReader<'a>,
    pub(crate) tight: bool,
    pub(crate) version: i32,
    pub(crate) stack_trace: bool,
    pub(crate) cache: Option<&'c mut DecodeCache>,
    pub(crate) depth: u32,
}

impl Dec<'_, '_> {
    pub(crate) fn flag(&mut self) -> Result<bool> {
        if self.tight {
            self.bs.next()
        } else {
            self.r.bool()
        }
    }

    fn enter(&mut self) -> Result<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(Error::malformed(format!(
                "objects nested deeper than {MAX_DEPTH}"
            )));
        }
        Ok(())
    }
}

/// How one field travels. `V` is the field's Rust type.
pub(crate) trait Kind {
    type V;
    fn enc(v: &Self::V, e: &mut Enc<'_>) -> Result<()>;
    fn dec(d: &mut Dec<'_, '_>) -> Result<Self::V>;
}

/// A boolean field.
pub(crate) struct Bool;
impl Kind for Bool {
    type V = bool;
    fn enc(v: &bool, e: &mut Enc<'_>) -> Result<()> {
        e.flag(*v);
        Ok(())
    }
    fn dec(d: &mut Dec<'_, '_>) -> Result<bool> {
        d.flag()
    }
}

/// A byte field.
pub(crate) struct Byte;
impl Kind for Byte {
    type V = u8;
    fn enc(v: &u8, e: &mut Enc<'_>) -> Result<()> {
        e.out.put_u8(*v);
        Ok(())
    }
    fn dec(d: &mut Dec<'_, '_>) -> Result<u8> {
        d.r.u8()
    }
}

/// An int field.
pub(crate) struct Int;
impl Kind for Int {
    type V = i32;
    fn enc(v: &i32, e: &mut Enc<'_>) -> Result<()> {
        e.out.put_i32(*v);
        Ok(())
    }
    fn dec(d: &mut Dec<'_, '_>) -> Result<i32> {
        d.r.i32()
    }
}

/// A long field: 8 bytes loose; tight, two flags say whether it is 0 or
/// fits in 2, 4 or 8 bytes (the short forms are unsigned).
pub(crate) struct Long;
impl Kind for Long {
    type V = i64;
    fn enc(v: &i64, e: &mut Enc<'_>) -> Result<()> {
        let v = *v;
        if !e.tight {
            e.out.put_i64(v);
        } else if v == 0 {
            e.bs.push(false);
            e.bs.push(false);
        } else if v as u64 & 0xFFFF_FFFF_FFFF_0000 == 0 {
            e.bs.push(false);
            e.bs.push(true);
            e.out.put_u16(v as u16);
        } else if v as u64 & 0xFFFF_FFFF_0000_0000 == 0 {
            e.bs.push(true);
            e.bs.push(false);
            e.out.put_u32(v as u32);
        } else {
            e.bs.push(true);
            e.bs.push(true);
            e.out.put_i64(v);
        }
        Ok(())
    }
    fn dec(d: &mut Dec<'_, '_>) -> Result<i64> {
        if !d.tight {
            return d.r.i64();
        }
        Ok(match (d.bs.next()?, d.bs.next()?) {
            (true, true) => d.r.i64()?,
            (true, false) => d.r.i32()? as u32 as i64,
            (false, true) => d.r.u16()? as i64,
            (false, false) => 0,
        })
    }
}

/// A nullable string. Tight, an all-ASCII string goes as a 2-byte length and
/// its bytes (flagged), anything else as `writeUTF`.
pub(crate) struct Str;
impl Kind for Str {
    type V = Option<String>;
    fn enc(v: &Option<String>, e: &mut Enc<'_>) -> Result<()> {
        Str::put(v.as_deref(), e)
    }
    fn dec(d: &mut Dec<'_, '_>) -> Result<Option<String>> {
        Str::get(d)
    }
}

impl Str {
    pub(crate) fn put(v: Option<&str>, e: &mut Enc<'_>) -> Result<()> {
        e.flag(v.is_some());
        let Some(s) = v else { return Ok(()) };
        if !e.tight {
            return put_utf(s, &mut e.out);
        }
        let n = mutf8_len(s);
        if n >= i16::MAX as usize {
            return Err(Error::unencodable(format!(
                "string of {n} encoded bytes is too long for the tight encoding"
            )));
        }
        let ascii = s.bytes().all(|b| (1..=0x7F).contains(&b));
        e.bs.push(ascii);
        if ascii {
            e.out.put_u16(s.len() as u16);
            e.out.put_slice(s.as_bytes());
            Ok(())
        } else {
            put_utf(s, &mut e.out)
        }
    }
    pub(crate) fn get(d: &mut Dec<'_, '_>) -> Result<Option<String>> {
        if !d.flag()? {
            return Ok(None);
        }
        if d.tight && d.bs.next()? {
            let n = d.r.i16()?;
            let n = usize::try_from(n)
                .map_err(|_| Error::malformed(format!("negative string length {n}")))?;
            // Java reads these bytes as ISO-8859-1.
            return Ok(Some(d.r.take(n)?.iter().map(|&b| b as char).collect()));
        }
        get_utf(&mut d.r).map(Some)
    }
}

/// A nullable byte array or byte sequence: flag, 4-byte length, bytes.
pub(crate) struct Blob;
impl Kind for Blob {
    type V = Option<Bytes>;
    fn enc(v: &Option<Bytes>, e: &mut Enc<'_>) -> Result<()> {
        e.flag(v.is_some());
        if let Some(b) = v {
            let n = i32::try_from(b.len())
                .map_err(|_| Error::unencodable("byte array longer than 2^31-1"))?;
            e.out.put_i32(n);
            e.out.put_slice(b);
        }
        Ok(())
    }
    fn dec(d: &mut Dec<'_, '_>) -> Result<Option<Bytes>> {
        if !d.flag()? {
            return Ok(None);
        }
        let n = d.r.len_i32()?;
        Ok(Some(Bytes::copy_from_slice(d.r.take(n)?)))
    }
}

/// WireFormatInfo's fixed 8-byte magic.
pub(crate) struct Magic;
impl Kind for Magic {
    type V = [u8; 8];
    fn enc(v: &[u8; 8], e: &mut Enc<'_>) -> Result<()> {
        e.out.put_slice(v);
        Ok(())
    }
    fn dec(d: &mut Dec<'_, '_>) -> Result<[u8; 8]> {
        let mut m = [0u8; 8];
        m.copy_from_slice(d.r.take(8)?);
        Ok(m)
    }
}

/// A field that is not on the wire (set by the enclosing marshaller).
pub(crate) struct Skip<T>(std::marker::PhantomData<T>);
impl<T: Default> Kind for Skip<T> {
    type V = T;
    fn enc(_: &T, _: &mut Enc<'_>) -> Result<()> {
        Ok(())
    }
    fn dec(_: &mut Dec<'_, '_>) -> Result<T> {
        Ok(T::default())
    }
}

/// A data structure that can travel nested in another.
pub(crate) trait Structure: Clone + Into<Command> {
    /// Its type byte.
    fn data_type(&self) -> u8;
    /// Its fields.
    fn encode_body(&self, e: &mut Enc<'_>) -> Result<()>;
    /// The variant this field expects, from whatever the peer sent.
    fn from_command(c: Command) -> Option<Self>;
    /// A name for error messages.
    const NAME: &'static str;
}

/// Types whose nested tight form carries an extra "cached marshalled form"
/// flag (messages and WireFormatInfo).
pub(crate) fn marshal_aware(ty: u8) -> bool {
    ty == 1 || (23..=29).contains(&ty)
}

fn encode_nested<T: Structure>(v: Option<&T>, e: &mut Enc<'_>) -> Result<()> {
    e.flag(v.is_some());
    if let Some(v) = v {
        let ty = v.data_type();
        if e.tight && marshal_aware(ty) {
            e.bs.push(false);
        }
        e.out.put_u8(ty);
        v.encode_body(e)?;
    }
    Ok(())
}

fn decode_nested_any(d: &mut Dec<'_, '_>) -> Result<Option<Command>> {
    if !d.flag()? {
        return Ok(None);
    }
    d.enter()?;
    let ty = d.r.u8()?;
    let c = if d.tight && marshal_aware(ty) && d.bs.next()? {
        // A pre-marshalled form: size, type, and its own boolean stream.
        d.r.i32()?;
        d.r.u8()?;
        let inner = BoolReader::read(&mut d.r)?;
        let outer = std::mem::replace(&mut d.bs, inner);
        let c = Command::decode_body(ty, d);
        d.bs = outer;
        c?
    } else {
        Command::decode_body(ty, d)?
    };
    d.depth -= 1;
    Ok(Some(c))
}

fn narrow<T: Structure>(c: Option<Command>) -> Result<Option<T>> {
    match c {
        None => Ok(None),
        Some(c) => {
            let ty = c.data_type();
            T::from_command(c).map(Some).ok_or_else(|| {
                Error::malformed(format!(
                    "expected a {}, got data structure type {ty}",
                    T::NAME
                ))
            })
        }
    }
}

/// A nullable nested object of type `T`.
pub(crate) struct Nested<T>(std::marker::PhantomData<T>);
impl<T: Structure> Kind for Nested<T> {
    type V = Option<T>;
    fn enc(v: &Option<T>, e: &mut Enc<'_>) -> Result<()> {
        encode_nested(v.as_ref(), e)
    }
    fn dec(d: &mut Dec<'_, '_>) -> Result<Option<T>> {
        narrow(decode_nested_any(d)?)
    }
}

/// A nested object that goes through the marshalling cache when it is on.
pub(crate) struct Cached<T>(std::marker::PhantomData<T>);
impl<T: Structure> Kind for Cached<T> {
    type V = Option<T>;
    fn enc(v: &Option<T>, e: &mut Enc<'_>) -> Result<()> {
        let Some(cache) = e.cache.as_deref_mut() else {
            return encode_nested(v.as_ref(), e);
        };
        let key: Option<Command> = v.clone().map(Into::into);
        if let Some(i) = cache.lookup(&key) {
            e.flag(false);
            e.out.put_i16(i);
            return Ok(());
        }
        let i = cache.add(key);
        e.flag(true);
        e.out.put_i16(i);
        encode_nested(v.as_ref(), e)
    }
    fn dec(d: &mut Dec<'_, '_>) -> Result<Option<T>> {
        if d.cache.is_none() {
            return narrow(decode_nested_any(d)?);
        }
        let fresh = d.flag()?;
        let i = d.r.i16()?;
        let value = if fresh {
            let v = decode_nested_any(d)?;
            if let Some(cache) = d.cache.as_deref_mut() {
                cache.set(i, v.clone())?;
            }
            v
        } else {
            match d.cache.as_deref() {
                Some(cache) => cache.get(i)?,
                None => None,
            }
        };
        narrow(value)
    }
}

/// A nullable array of nested objects (a 2-byte count).
pub(crate) struct Array<T>(std::marker::PhantomData<T>);
impl<T: Structure> Kind for Array<T> {
    type V = Option<Vec<T>>;
    fn enc(v: &Option<Vec<T>>, e: &mut Enc<'_>) -> Result<()> {
        e.flag(v.is_some());
        if let Some(items) = v {
            let n = i16::try_from(items.len())
                .map_err(|_| Error::unencodable("array longer than 32767"))?;
            e.out.put_i16(n);
            for item in items {
                encode_nested(Some(item), e)?;
            }
        }
        Ok(())
    }
    fn dec(d: &mut Dec<'_, '_>) -> Result<Option<Vec<T>>> {
        if !d.flag()? {
            return Ok(None);
        }
        let n = d.r.i16()?;
        let n = usize::try_from(n)
            .map_err(|_| Error::malformed(format!("negative array length {n}")))?;
        let mut items = Vec::with_capacity(n.min(64));
        for _ in 0..n {
            // Java allows null elements; they carry nothing, so they are dropped.
            if let Some(item) = narrow(decode_nested_any(d)?)? {
                items.push(item);
            }
        }
        Ok(Some(items))
    }
}

/// An exception: class name, message, and (when stack traces are enabled)
/// the stack trace and the cause chain.
pub(crate) struct Thr;
impl Kind for Thr {
    type V = Option<Throwable>;
    fn enc(v: &Option<Throwable>, e: &mut Enc<'_>) -> Result<()> {
        Thr::put(v.as_ref(), e)
    }
    fn dec(d: &mut Dec<'_, '_>) -> Result<Option<Throwable>> {
        Thr::get(d)
    }
}

impl Thr {
    fn put(v: Option<&Throwable>, e: &mut Enc<'_>) -> Result<()> {
        e.flag(v.is_some());
        let Some(t) = v else { return Ok(()) };
        Str::enc(&t.class_name, e)?;
        Str::enc(&t.message, e)?;
        if e.stack_trace {
            let n = i16::try_from(t.stack_trace.len())
                .map_err(|_| Error::unencodable("stack trace longer than 32767"))?;
            e.out.put_i16(n);
            for el in &t.stack_trace {
                Str::enc(&el.class_name, e)?;
                Str::enc(&el.method_name, e)?;
                Str::enc(&el.file_name, e)?;
                e.out.put_i32(el.line_number);
            }
            Thr::put(t.cause.as_deref(), e)?;
        }
        Ok(())
    }
    fn get(d: &mut Dec<'_, '_>) -> Result<Option<Throwable>> {
        if !d.flag()? {
            return Ok(None);
        }
        d.enter()?;
        let mut t = Throwable {
            class_name: Str::dec(d)?,
            message: Str::dec(d)?,
            ..Throwable::default()
        };
        if d.stack_trace {
            let n = d.r.i16()?;
            let n = usize::try_from(n)
                .map_err(|_| Error::malformed(format!("negative stack trace length {n}")))?;
            t.stack_trace.reserve(n.min(64));
            for _ in 0..n {
                t.stack_trace.push(StackTraceElement {
                    class_name: Str::dec(d)?,
                    method_name: Str::dec(d)?,
                    file_name: Str::dec(d)?,
                    line_number: d.r.i32()?,
                });
            }
            t.cause = Thr::get(d)?.map(Box::new);
        }
        d.depth -= 1;
        Ok(Some(t))
    }
}
