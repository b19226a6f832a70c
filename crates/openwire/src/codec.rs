//! The per-connection codec and the wire format negotiation.

use bytes::{Buf, BufMut, BytesMut};

use crate::cache::{DecodeCache, EncodeCache, effective_size};
use crate::error::{Error, Result};
use crate::properties::{Map, Value, decode_map, encode_map};
use crate::types::WireFormatInfo;
use crate::wire::{BoolReader, BoolWriter, Dec, Enc, Reader};
use crate::{Command, MAX_VERSION, MIN_VERSION};

/// `ActiveMQ` in ASCII: the first bytes of every WireFormatInfo.
pub const MAGIC: [u8; 8] = *b"ActiveMQ";

/// The frame size limit used when none is configured (the broker default
/// in ActiveMQ's shipped configuration).
pub const DEFAULT_MAX_FRAME_SIZE: u64 = 100 * 1024 * 1024;

/// The options one side offers in its WireFormatInfo.
#[derive(Debug, Clone, PartialEq)]
pub struct WireFormatOptions {
    /// The highest version the side speaks.
    pub version: i32,
    /// Exceptions carry stack traces and causes.
    pub stack_trace_enabled: bool,
    /// TCP_NODELAY wanted.
    pub tcp_no_delay_enabled: bool,
    /// The marshalling cache.
    pub cache_enabled: bool,
    /// Cache entries per direction.
    pub cache_size: i32,
    /// The tight (bit-packed) encoding instead of the loose one.
    pub tight_encoding_enabled: bool,
    /// Frames without the 4-byte size prefix.
    pub size_prefix_disabled: bool,
    /// Inactivity timeout in ms (0: none).
    pub max_inactivity_duration: i64,
    /// Delay before the inactivity monitor starts, in ms.
    pub max_inactivity_duration_initial_delay: i64,
    /// The largest frame the side accepts (<= 0: unlimited).
    pub max_frame_size: i64,
    /// Whether the side enforces `max_frame_size`.
    pub max_frame_size_enabled: bool,
    /// The host the client connected to.
    pub host: Option<String>,
    /// Provider name.
    pub provider_name: Option<String>,
    /// Provider version.
    pub provider_version: Option<String>,
    /// Platform details.
    pub platform_details: Option<String>,
}

impl Default for WireFormatOptions {
    /// Our preferred format: the newest version, tight, cached, with stack
    /// traces, the Java defaults for the rest.
    fn default() -> Self {
        WireFormatOptions {
            version: MAX_VERSION,
            stack_trace_enabled: true,
            tcp_no_delay_enabled: true,
            cache_enabled: true,
            cache_size: 1024,
            tight_encoding_enabled: true,
            size_prefix_disabled: false,
            max_inactivity_duration: 30_000,
            max_inactivity_duration_initial_delay: 10_000,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE as i64,
            max_frame_size_enabled: true,
            host: None,
            provider_name: Some("Halyard".to_owned()),
            provider_version: Some(env!("CARGO_PKG_VERSION").to_owned()),
            platform_details: None,
        }
    }
}

impl WireFormatOptions {
    /// The WireFormatInfo that offers these options.
    pub fn to_info(&self) -> Result<WireFormatInfo> {
        let mut m = Map::new();
        let s = |v: &Option<String>| v.clone().map_or(Value::Null, Value::String);
        // Java's insertion order does not matter: the peer reads a map.
        m.insert(
            "TightEncodingEnabled",
            Value::Bool(self.tight_encoding_enabled),
        );
        m.insert("CacheSize", Value::Int(self.cache_size));
        m.insert("MaxFrameSize", Value::Long(self.max_frame_size));
        m.insert(
            "MaxFrameSizeEnabled",
            Value::Bool(self.max_frame_size_enabled),
        );
        m.insert("SizePrefixDisabled", Value::Bool(self.size_prefix_disabled));
        m.insert(
            "MaxInactivityDurationInitalDelay",
            Value::Long(self.max_inactivity_duration_initial_delay),
        );
        m.insert("CacheEnabled", Value::Bool(self.cache_enabled));
        m.insert("TcpNoDelayEnabled", Value::Bool(self.tcp_no_delay_enabled));
        m.insert("StackTraceEnabled", Value::Bool(self.stack_trace_enabled));
        m.insert(
            "MaxInactivityDuration",
            Value::Long(self.max_inactivity_duration),
        );
        for (k, v) in [
            ("Host", &self.host),
            ("ProviderName", &self.provider_name),
            ("ProviderVersion", &self.provider_version),
            ("PlatformDetails", &self.platform_details),
        ] {
            if v.is_some() {
                m.insert(k, s(v));
            }
        }
        let mut props = BytesMut::new();
        encode_map(Some(&m), &mut props)?;
        Ok(WireFormatInfo {
            magic: MAGIC,
            version: self.version,
            marshalled_properties: Some(props.freeze()),
        })
    }

    /// Reads a peer's WireFormatInfo. An absent option reads as Java reads
    /// it: false, 0, or none.
    pub fn from_info(info: &WireFormatInfo) -> Result<Self> {
        if info.magic != MAGIC {
            return Err(Error::BadMagic);
        }
        let m = match &info.marshalled_properties {
            Some(b) => decode_map(b)?.unwrap_or_default(),
            None => Map::new(),
        };
        let flag = |k| matches!(m.get(k), Some(Value::Bool(true)));
        let long = |k| match m.get(k) {
            Some(Value::Long(v)) => *v,
            Some(Value::Int(v)) => *v as i64,
            _ => 0,
        };
        let string = |k| match m.get(k) {
            Some(Value::String(v)) => Some(v.clone()),
            _ => None,
        };
        Ok(WireFormatOptions {
            version: info.version,
            stack_trace_enabled: flag("StackTraceEnabled"),
            tcp_no_delay_enabled: flag("TcpNoDelayEnabled"),
            cache_enabled: flag("CacheEnabled"),
            cache_size: i32::try_from(long("CacheSize")).unwrap_or(0),
            tight_encoding_enabled: flag("TightEncodingEnabled"),
            size_prefix_disabled: flag("SizePrefixDisabled"),
            max_inactivity_duration: long("MaxInactivityDuration"),
            max_inactivity_duration_initial_delay: long("MaxInactivityDurationInitalDelay"),
            max_frame_size: long("MaxFrameSize"),
            max_frame_size_enabled: flag("MaxFrameSizeEnabled"),
            host: string("Host"),
            provider_name: string("ProviderName"),
            provider_version: string("ProviderVersion"),
            platform_details: string("PlatformDetails"),
        })
    }
}

/// The format both sides use after the WireFormatInfo exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// The version spoken.
    pub version: i32,
    /// Exceptions carry stack traces and causes.
    pub stack_trace_enabled: bool,
    /// TCP_NODELAY.
    pub tcp_no_delay_enabled: bool,
    /// The marshalling cache is on.
    pub cache_enabled: bool,
    /// Cache entries per direction (0: Java's default of 16383).
    pub cache_size: i32,
    /// Tight encoding.
    pub tight_encoding_enabled: bool,
    /// No size prefix.
    pub size_prefix_disabled: bool,
    /// The frame size limit applied in both directions.
    pub max_frame_size: u64,
    /// Inactivity timeout, ms (<= 0: none).
    pub max_inactivity_duration: i64,
    /// Initial delay of the inactivity monitor, ms.
    pub max_inactivity_duration_initial_delay: i64,
}

impl Negotiated {
    /// The format before negotiation, in which the WireFormatInfo frames
    /// themselves travel: loose, size-prefixed, uncached, no stack traces.
    pub fn initial(max_frame_size: u64) -> Self {
        Negotiated {
            version: MAX_VERSION,
            stack_trace_enabled: false,
            tcp_no_delay_enabled: false,
            cache_enabled: false,
            cache_size: 0,
            tight_encoding_enabled: false,
            size_prefix_disabled: false,
            max_frame_size,
            max_inactivity_duration: 0,
            max_inactivity_duration_initial_delay: 0,
        }
    }
}

/// Java's min for negotiated numbers: a non-positive value means "no
/// preference", so the other side's wins.
fn pmin(a: i64, b: i64) -> i64 {
    if (a < b && a > 0) || b <= 0 { a } else { b }
}

/// Combines our options with the peer's the way ActiveMQ does: the lower
/// version and frame size, each feature only if both want it, the smaller
/// cache. Versions below [`MIN_VERSION`] are refused.
pub fn negotiate(ours: &WireFormatOptions, theirs: &WireFormatOptions) -> Result<Negotiated> {
    let version = pmin(ours.version as i64, theirs.version as i64) as i32;
    if !(MIN_VERSION..=MAX_VERSION).contains(&version) {
        return Err(Error::UnsupportedVersion(version));
    }
    let cache_enabled = ours.cache_enabled && theirs.cache_enabled;
    let max_frame = pmin(ours.max_frame_size, theirs.max_frame_size);
    Ok(Negotiated {
        version,
        stack_trace_enabled: ours.stack_trace_enabled && theirs.stack_trace_enabled,
        tcp_no_delay_enabled: ours.tcp_no_delay_enabled && theirs.tcp_no_delay_enabled,
        cache_enabled,
        cache_size: if cache_enabled {
            ours.cache_size.min(theirs.cache_size)
        } else {
            0
        },
        tight_encoding_enabled: ours.tight_encoding_enabled && theirs.tight_encoding_enabled,
        size_prefix_disabled: ours.size_prefix_disabled && theirs.size_prefix_disabled,
        max_frame_size: if max_frame > 0 {
            max_frame as u64
        } else {
            u64::MAX
        },
        max_inactivity_duration: ours
            .max_inactivity_duration
            .min(theirs.max_inactivity_duration),
        max_inactivity_duration_initial_delay: ours
            .max_inactivity_duration_initial_delay
            .min(theirs.max_inactivity_duration_initial_delay),
    })
}

/// One connection's OpenWire codec (sans I/O): feed it received bytes, ask
/// it for frames to send. It holds the marshalling caches, so each
/// connection needs its own, and frames must be encoded in the order they
/// are sent.
#[derive(Debug)]
pub struct Codec {
    format: Negotiated,
    encode_cache: Option<EncodeCache>,
    decode_cache: Option<DecodeCache>,
}

impl Default for Codec {
    fn default() -> Self {
        Codec::new()
    }
}

impl Codec {
    /// A codec in the pre-negotiation format with the default frame limit.
    pub fn new() -> Self {
        Codec::with_format(Negotiated::initial(DEFAULT_MAX_FRAME_SIZE))
    }

    /// A codec speaking `format` from the start.
    pub fn with_format(format: Negotiated) -> Self {
        let mut c = Codec {
            format: Negotiated::initial(DEFAULT_MAX_FRAME_SIZE),
            encode_cache: None,
            decode_cache: None,
        };
        c.renegotiate(format);
        c
    }

    /// The format in force.
    pub fn format(&self) -> &Negotiated {
        &self.format
    }

    /// Switches to the negotiated format (after the WireFormatInfo
    /// exchange); the caches start empty.
    pub fn renegotiate(&mut self, format: Negotiated) {
        if format.cache_enabled {
            let size = effective_size(format.cache_size);
            self.encode_cache = Some(EncodeCache::new(size));
            self.decode_cache = Some(DecodeCache::new(size));
        } else {
            self.encode_cache = None;
            self.decode_cache = None;
        }
        self.format = format;
    }

    /// Decodes the next frame from `buf`, consuming its bytes; `Ok(None)`
    /// when `buf` does not yet hold a whole frame. A size prefix above the
    /// frame limit fails before the body is buffered. Without size prefixes
    /// an incomplete frame is parsed again from its start when more bytes
    /// come (its cache stores undone in between), and fails once more than
    /// the frame limit is buffered.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Command>> {
        let max = self.format.max_frame_size;
        loop {
            if !self.format.size_prefix_disabled {
                let Some(prefix) = buf.get(..4) else {
                    return Ok(None);
                };
                let size = i32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
                let size = usize::try_from(size)
                    .map_err(|_| Error::malformed(format!("negative frame size {size}")))?;
                if size as u64 > max {
                    return Err(Error::FrameTooLarge {
                        size: size as u64,
                        max,
                    });
                }
                if buf.len() < 4 + size {
                    // Room for the rest, but not all of an announced size at
                    // once: a peer that claims 100 MiB and sends nothing
                    // should not cost 100 MiB.
                    buf.reserve((4 + size - buf.len()).min(64 << 10));
                    return Ok(None);
                }
                if let Some(c) = &mut self.decode_cache {
                    c.begin();
                }
                let (cmd, used) = self.parse(&buf[4..4 + size])?;
                if used != size {
                    return Err(Error::malformed(format!(
                        "frame size prefix says {size} bytes, the command used {used}"
                    )));
                }
                buf.advance(4 + size);
                match cmd {
                    Some(c) => return Ok(Some(c)),
                    None => continue,
                }
            }
            if buf.is_empty() {
                return Ok(None);
            }
            if let Some(c) = &mut self.decode_cache {
                c.begin();
            }
            match self.parse(buf) {
                Err(e) if e.is_truncated() => {
                    if let Some(c) = &mut self.decode_cache {
                        c.rollback();
                    }
                    if buf.len() as u64 > max {
                        return Err(Error::FrameTooLarge {
                            size: buf.len() as u64,
                            max,
                        });
                    }
                    return Ok(None);
                }
                Err(e) => return Err(e),
                Ok((cmd, used)) => {
                    if used as u64 > max {
                        return Err(Error::FrameTooLarge {
                            size: used as u64,
                            max,
                        });
                    }
                    buf.advance(used);
                    if let Some(c) = cmd {
                        return Ok(Some(c));
                    }
                }
            }
        }
    }

    /// One frame's command (none for the null type) and its length.
    fn parse(&mut self, bytes: &[u8]) -> Result<(Option<Command>, usize)> {
        let mut r = Reader::new(bytes);
        let ty = r.u8()?;
        if ty == 0 {
            return Ok((None, 1));
        }
        let tight = self.format.tight_encoding_enabled;
        let bs = if tight {
            BoolReader::read(&mut r)?
        } else {
            BoolReader::default()
        };
        let mut d = Dec {
            r,
            bs,
            tight,
            version: self.format.version,
            stack_trace: self.format.stack_trace_enabled,
            cache: self.decode_cache.as_mut(),
            depth: 0,
        };
        let cmd = Command::decode_body(ty, &mut d)?;
        Ok((Some(cmd), d.r.position()))
    }

    /// Appends `cmd`'s frame to `out`. On error nothing is appended and the
    /// cache is as before.
    pub fn encode(&mut self, cmd: &Command, out: &mut BytesMut) -> Result<()> {
        let ty = cmd.data_type();
        if ty == crate::BrokerSubscriptionInfo::DATA_STRUCTURE_TYPE && self.format.version < 12 {
            return Err(Error::UnknownCommand(ty));
        }
        if let Some(c) = &mut self.encode_cache {
            c.sweep();
        }
        let tight = self.format.tight_encoding_enabled;
        let mut e = Enc {
            out: BytesMut::new(),
            bs: BoolWriter::default(),
            tight,
            version: self.format.version,
            stack_trace: self.format.stack_trace_enabled,
            cache: self.encode_cache.as_mut(),
        };
        let res = cmd.encode_body(&mut e);
        let Enc { out: body, bs, .. } = e;
        let size = 1 + body.len() + if tight { bs.encoded_len() } else { 0 };
        let res = res.and_then(|()| {
            if size as u64 > self.format.max_frame_size {
                Err(Error::FrameTooLarge {
                    size: size as u64,
                    max: self.format.max_frame_size,
                })
            } else if i32::try_from(size).is_err() {
                Err(Error::unencodable("frame larger than 2^31-1 bytes"))
            } else {
                Ok(())
            }
        });
        let res = res.and_then(|()| {
            let mut frame = BytesMut::with_capacity(size + 4);
            if !self.format.size_prefix_disabled {
                frame.put_u32(size as u32);
            }
            frame.put_u8(ty);
            if tight {
                bs.write(&mut frame)?;
            }
            frame.put_slice(&body);
            Ok(frame)
        });
        match res {
            Ok(frame) => {
                out.put_slice(&frame);
                Ok(())
            }
            Err(err) => {
                if let Some(c) = &mut self.encode_cache {
                    c.rollback();
                }
                Err(err)
            }
        }
    }
}
