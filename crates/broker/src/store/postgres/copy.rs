//! PostgreSQL's binary COPY format, read back: recovery reads the whole
//! message index (a million rows is common) with `COPY (SELECT …) TO
//! STDOUT (FORMAT binary)`, which arrives as a few large chunks instead of
//! one protocol message, channel hop and row object per row.
//!
//! The format: an 11-byte signature, flags and a header extension; then
//! per tuple a field count (16 bits) and per field a length (32 bits, -1
//! for NULL) and that many bytes in the type's binary form (big-endian
//! integers, UTF-8 text); a field count of -1 ends the data.

/// The stream is not the binary COPY data asked for.
#[derive(Debug, thiserror::Error)]
#[error("binary COPY data: {0}")]
pub(super) struct CopyFormatError(String);

impl CopyFormatError {
    /// The data ended without its trailer.
    pub(super) fn truncated() -> CopyFormatError {
        CopyFormatError("the data ended before its trailer".into())
    }
}

const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

/// The header's length, once `buf` holds all of it.
pub(super) fn header(buf: &[u8]) -> Result<Option<usize>, CopyFormatError> {
    if buf.len() < SIGNATURE.len() + 8 {
        return Ok(None);
    }
    if &buf[..SIGNATURE.len()] != SIGNATURE {
        return Err(CopyFormatError("no PGCOPY signature".into()));
    }
    let ext = i32::from_be_bytes(read4(buf, SIGNATURE.len() + 4));
    let ext =
        usize::try_from(ext).map_err(|_| CopyFormatError("negative header extension".into()))?;
    let len = SIGNATURE.len() + 8 + ext;
    Ok((buf.len() >= len).then_some(len))
}

/// What starts a buffer that follows the header.
pub(super) enum Tuple<'a, const N: usize> {
    /// Not a whole tuple yet: wait for more data.
    More,
    /// The trailer: no more tuples.
    End,
    /// A tuple's fields (`None`: NULL) and its length in bytes.
    Row([Option<&'a [u8]>; N], usize),
}

/// Reads the tuple of `N` fields at the start of `buf`.
pub(super) fn tuple<const N: usize>(buf: &[u8]) -> Result<Tuple<'_, N>, CopyFormatError> {
    if buf.len() < 2 {
        return Ok(Tuple::More);
    }
    let count = i16::from_be_bytes([buf[0], buf[1]]);
    if count == -1 {
        return Ok(Tuple::End);
    }
    if usize::try_from(count).ok() != Some(N) {
        return Err(CopyFormatError(format!(
            "a tuple of {count} fields, expected {N}"
        )));
    }
    let mut fields = [None; N];
    let mut at = 2;
    for field in &mut fields {
        if buf.len() < at + 4 {
            return Ok(Tuple::More);
        }
        let len = i32::from_be_bytes(read4(buf, at));
        at += 4;
        if len < 0 {
            continue;
        }
        let len = len as usize;
        if buf.len() < at + len {
            return Ok(Tuple::More);
        }
        *field = Some(&buf[at..at + len]);
        at += len;
    }
    Ok(Tuple::Row(fields, at))
}

fn read4(buf: &[u8], at: usize) -> [u8; 4] {
    let mut b = [0; 4];
    b.copy_from_slice(&buf[at..at + 4]);
    b
}

/// An integer field of `W` bytes (int2, int4 or int8), NULL read as 0.
pub(super) fn int<const W: usize>(field: Option<&[u8]>) -> Result<i64, CopyFormatError> {
    let Some(f) = field else { return Ok(0) };
    let bytes: [u8; W] = f
        .try_into()
        .map_err(|_| CopyFormatError(format!("an integer of {} bytes, expected {W}", f.len())))?;
    Ok(match W {
        2 => i64::from(i16::from_be_bytes([bytes[0], bytes[1]])),
        4 => i64::from(i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])),
        _ => {
            let mut b = [0; 8];
            b.copy_from_slice(&bytes[..8.min(W)]);
            i64::from_be_bytes(b)
        }
    })
}

/// A text field, NULL read as empty.
pub(super) fn text(field: Option<&[u8]>) -> Result<&str, CopyFormatError> {
    std::str::from_utf8(field.unwrap_or_default())
        .map_err(|e| CopyFormatError(format!("text that is not UTF-8: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(out: &mut Vec<u8>, f: Option<&[u8]>) {
        match f {
            None => out.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(b) => {
                out.extend_from_slice(&(b.len() as i32).to_be_bytes());
                out.extend_from_slice(b);
            }
        }
    }

    /// Tuples split anywhere come out whole and in order; NULLs, integers
    /// of each width and text decode; the trailer ends them; a wrong field
    /// count or signature is an error, not a panic.
    #[test]
    fn tuples_are_read_across_chunk_boundaries() {
        let mut data = SIGNATURE.to_vec();
        data.extend_from_slice(&0i32.to_be_bytes());
        data.extend_from_slice(&3i32.to_be_bytes());
        data.extend_from_slice(b"ext");
        for i in 0..5i64 {
            data.extend_from_slice(&3i16.to_be_bytes());
            field(&mut data, Some(&(i * 1_000_000_007).to_be_bytes()));
            field(&mut data, Some(&(-(i as i16)).to_be_bytes()));
            field(
                &mut data,
                if i == 2 {
                    None
                } else {
                    Some("qué".as_bytes())
                },
            );
        }
        data.extend_from_slice(&(-1i16).to_be_bytes());
        for split in 1..data.len() {
            let mut buf = Vec::new();
            let mut got = Vec::new();
            let mut header_done = false;
            let mut ended = false;
            for chunk in [&data[..split], &data[split..]] {
                buf.extend_from_slice(chunk);
                let mut at = 0;
                if !header_done {
                    match header(&buf).unwrap() {
                        Some(n) => (at, header_done) = (n, true),
                        None => continue,
                    }
                }
                loop {
                    match tuple::<3>(&buf[at..]).unwrap() {
                        Tuple::More => break,
                        Tuple::End => {
                            ended = true;
                            at = buf.len();
                            break;
                        }
                        Tuple::Row(f, n) => {
                            got.push((
                                int::<8>(f[0]).unwrap(),
                                int::<2>(f[1]).unwrap(),
                                text(f[2]).unwrap().to_owned(),
                            ));
                            at += n;
                        }
                    }
                }
                buf.drain(..at);
            }
            assert!(ended, "split at {split}");
            let want: Vec<_> = (0..5i64)
                .map(|i| {
                    let t = if i == 2 { "" } else { "qué" };
                    (i * 1_000_000_007, -i, t.to_owned())
                })
                .collect();
            assert_eq!(got, want, "split at {split}");
        }
        assert!(header(b"PGCOPX\n\xff\r\n\0\0\0\0\0\0\0\0\0").is_err());
        let mut two = 2i16.to_be_bytes().to_vec();
        field(&mut two, None);
        field(&mut two, None);
        assert!(tuple::<3>(&two).is_err());
        assert!(int::<4>(Some(b"12")).is_err());
    }
}
