//! Message body and property helpers: the text and map bodies as the Java
//! client stores them in `content`, and zlib (de)compression when
//! `compressed` is set.

use std::io::{Read, Write};

use bytes::{Bytes, BytesMut};

use crate::error::{Error, Result};
use crate::properties::{Map, decode_map, encode_map, put_utf8};
use crate::types::Message;
use crate::wire::{Reader, get_mutf8};

/// The largest body a compressed message may inflate to by default (the
/// Java client's default too).
pub const DEFAULT_MAX_INFLATED_SIZE: usize = 100 * 1024 * 1024;

/// Inflates zlib data, failing once the output passes `max` bytes.
pub fn inflate(data: &[u8], max: usize) -> Result<Bytes> {
    let mut out = Vec::new();
    let mut z = flate2::read::ZlibDecoder::new(data).take(max as u64 + 1);
    z.read_to_end(&mut out)
        .map_err(|e| Error::Inflate(e.to_string()))?;
    if out.len() > max {
        return Err(Error::InflatedTooLarge { max });
    }
    Ok(Bytes::from(out))
}

/// Deflates to zlib data (what `java.util.zip.DeflaterOutputStream` writes).
pub fn deflate(data: &[u8]) -> Bytes {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing to a Vec cannot fail.
    let _ = z.write_all(data);
    Bytes::from(z.finish().unwrap_or_default())
}

impl Message {
    /// The body bytes, inflated if `compressed` (at most
    /// [`DEFAULT_MAX_INFLATED_SIZE`]).
    pub fn body(&self) -> Result<Option<Bytes>> {
        self.body_with_limit(DEFAULT_MAX_INFLATED_SIZE)
    }

    /// The body bytes, inflated to at most `max` bytes if `compressed`.
    pub fn body_with_limit(&self, max: usize) -> Result<Option<Bytes>> {
        match &self.content {
            None => Ok(None),
            Some(c) if self.compressed => inflate(c, max).map(Some),
            Some(c) => Ok(Some(c.clone())),
        }
    }

    /// Sets the body bytes, uncompressed.
    pub fn set_body(&mut self, body: Option<Bytes>) {
        self.content = body;
        self.compressed = false;
    }

    /// Compresses the body in place (as a client with `useCompression`).
    pub fn compress(&mut self) {
        if !self.compressed
            && let Some(c) = &self.content
        {
            self.content = Some(deflate(c));
            self.compressed = true;
        }
    }

    /// A text message's text (a 4-byte length and modified UTF-8).
    pub fn text(&self) -> Result<Option<String>> {
        let Some(body) = self.body()? else {
            return Ok(None);
        };
        let mut r = Reader::new(&body);
        let n = r.i32().map_err(|e| e.within("Message", "text"))?;
        let Ok(n) = usize::try_from(n) else {
            return Ok(None);
        };
        let text = r
            .take(n)
            .and_then(get_mutf8)
            .map_err(|e| e.within("Message", "text"))?;
        Ok(Some(text))
    }

    /// Sets a text message's text (uncompressed).
    pub fn set_text(&mut self, text: Option<&str>) -> Result<()> {
        self.set_body(match text {
            None => None,
            Some(t) => {
                let mut b = BytesMut::new();
                put_utf8(t, &mut b)?;
                Some(b.freeze())
            }
        });
        Ok(())
    }

    /// A map message's body.
    pub fn map_body(&self) -> Result<Option<Map>> {
        match self.body()? {
            None => Ok(None),
            Some(b) => decode_map(&b).map_err(|e| e.within("Message", "map body")),
        }
    }

    /// Sets a map message's body (uncompressed).
    pub fn set_map_body(&mut self, map: Option<&Map>) -> Result<()> {
        self.set_body(match map {
            None => None,
            Some(m) => {
                let mut b = BytesMut::new();
                encode_map(Some(m), &mut b)?;
                Some(b.freeze())
            }
        });
        Ok(())
    }

    /// The message properties (empty when there are none).
    pub fn properties(&self) -> Result<Map> {
        match &self.marshalled_properties {
            None => Ok(Map::new()),
            Some(b) => Ok(decode_map(b)
                .map_err(|e| e.within("Message", "marshalled_properties"))?
                .unwrap_or_default()),
        }
    }

    /// Sets the message properties (none when `props` is empty).
    pub fn set_properties(&mut self, props: &Map) -> Result<()> {
        if props.is_empty() {
            self.marshalled_properties = None;
            return Ok(());
        }
        let mut b = BytesMut::new();
        encode_map(Some(props), &mut b)?;
        self.marshalled_properties = Some(b.freeze());
        Ok(())
    }
}

/// Writes `text` in the text-body form (for callers building `content`
/// themselves).
pub fn encode_text(text: &str, out: &mut BytesMut) -> Result<()> {
    put_utf8(text, out)
}
