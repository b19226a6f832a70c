//! Just enough STOMP for `halyard bench` with producers only, shared by
//! the floor servers (`sync_floor`, `pg_floor`): what any server must do
//! for a receipted SEND besides storing it, done as cheaply as it can be
//! (a thread per connection, blocking reads, no routing).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

/// A STOMP frame: command, headers, body.
type Frame = (String, Vec<(String, String)>, Vec<u8>);

/// One STOMP frame: its command, headers and body (content-length or up to
/// the NUL).
fn read_frame(r: &mut BufReader<TcpStream>) -> std::io::Result<Option<Frame>> {
    let mut line = String::new();
    // Heart-beats and the newlines between frames.
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        if !line.trim_end().is_empty() {
            break;
        }
    }
    let command = line.trim_end().to_owned();
    let mut headers = Vec::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        let l = line.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.to_owned(), v.to_owned()));
        }
    }
    let length = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok());
    let mut body = Vec::new();
    match length {
        Some(n) => {
            body.resize(n, 0);
            r.read_exact(&mut body)?;
            let mut nul = [0u8; 1];
            r.read_exact(&mut nul)?;
        }
        None => {
            r.read_until(0, &mut body)?;
            body.pop();
        }
    }
    Ok(Some((command, headers, body)))
}

/// Serves one connection: answers CONNECT, hands each SEND's record
/// (headers as `key:value` lines, then the body) to `store`, which returns
/// once it is durable, and answers every receipt asked for.
pub(crate) fn serve(
    stream: TcpStream,
    mut store: impl FnMut(&str, Vec<u8>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut out = stream.try_clone()?;
    let mut r = BufReader::new(stream);
    while let Some((command, headers, body)) = read_frame(&mut r)? {
        let receipt = headers
            .iter()
            .find(|(k, _)| k == "receipt")
            .map(|(_, v)| v.clone());
        match command.as_str() {
            "CONNECT" | "STOMP" => {
                out.write_all(b"CONNECTED\nversion:1.2\nheart-beat:0,0\n\n\0")?;
                continue;
            }
            "SEND" => {
                let mut record = Vec::with_capacity(body.len() + 64);
                for (k, v) in &headers {
                    record.extend_from_slice(k.as_bytes());
                    record.push(b':');
                    record.extend_from_slice(v.as_bytes());
                    record.push(b'\n');
                }
                record.extend_from_slice(&body);
                let destination = headers
                    .iter()
                    .find(|(k, _)| k == "destination")
                    .map_or("", |(_, v)| v.as_str());
                store(destination, record)?;
            }
            "DISCONNECT" => {
                if let Some(id) = receipt {
                    out.write_all(format!("RECEIPT\nreceipt-id:{id}\n\n\0").as_bytes())?;
                }
                return Ok(());
            }
            _ => {}
        }
        if let Some(id) = receipt {
            out.write_all(format!("RECEIPT\nreceipt-id:{id}\n\n\0").as_bytes())?;
        }
    }
    Ok(())
}
