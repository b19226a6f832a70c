//! The one HTTP getter of the tests: a minimal HTTP/1.1 GET over a raw
//! socket (the admin API is tiny, and a test should not need an HTTP
//! client library to ask a broker how it is).

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `GET http://{addr}{path}`; returns (status, body), the body de-chunked.
///
/// # Panics
///
/// If nothing answers at `addr` or the connection fails mid-request.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    try_http_get(addr, path)
        .await
        .unwrap_or_else(|e| panic!("GET http://{addr}{path}: {e}"))
}

/// [`http_get`], or the error if nothing answers at `addr` (not yet, or no
/// more: a broker that exits mid-request resets the connection).
///
/// # Errors
///
/// If the connection cannot be made or breaks.
pub async fn try_http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr).await?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    // Undo chunked encoding if present.
    let body = if text
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(&body)
    } else {
        body
    };
    Ok((status, body))
}

/// An HTTP answer: its status, its head (status line and headers) and its
/// body, de-chunked.
#[derive(Debug, Clone)]
pub struct HttpReply {
    /// The status code (0 if the answer had no status line).
    pub status: u16,
    /// The status line and headers.
    pub head: String,
    /// The body.
    pub body: String,
}

impl HttpReply {
    /// A header's value (the name is matched case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// `METHOD http://{addr}{path}` with HTTP basic auth as `auth` (user,
/// password) if given, and no body.
///
/// # Panics
///
/// If nothing answers at `addr` or the connection fails mid-request.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    auth: Option<(&str, &str)>,
) -> HttpReply {
    try_http_request(addr, method, path, auth)
        .await
        .unwrap_or_else(|e| panic!("{method} http://{addr}{path}: {e}"))
}

/// [`http_request`], or the error if nothing answers at `addr`.
///
/// # Errors
///
/// If the connection cannot be made or breaks.
pub async fn try_http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    auth: Option<(&str, &str)>,
) -> std::io::Result<HttpReply> {
    try_http_send(addr, method, path, auth, None).await
}

/// `METHOD http://{addr}{path}` with a JSON body.
///
/// # Panics
///
/// If nothing answers at `addr` or the connection fails mid-request.
pub async fn http_json(
    addr: SocketAddr,
    method: &str,
    path: &str,
    auth: Option<(&str, &str)>,
    json: &str,
) -> HttpReply {
    try_http_send(addr, method, path, auth, Some(json))
        .await
        .unwrap_or_else(|e| panic!("{method} http://{addr}{path}: {e}"))
}

async fn try_http_send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    auth: Option<(&str, &str)>,
    json: Option<&str>,
) -> std::io::Result<HttpReply> {
    use base64::Engine;
    let authorization = auth.map_or_else(String::new, |(user, password)| {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        format!("Authorization: Basic {token}\r\n")
    });
    let mut s = TcpStream::connect(addr).await?;
    let (content_type, body) = match json {
        Some(j) => ("Content-Type: application/json\r\n", j),
        None => ("", ""),
    };
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{authorization}{content_type}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok(HttpReply {
        status,
        head: head.to_owned(),
        body,
    })
}

fn dechunk(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = &after[n..];
        rest = rest.strip_prefix("\r\n").unwrap_or(rest);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::dechunk;

    #[test]
    fn dechunk_joins_the_chunks() {
        assert_eq!(dechunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), "abcde");
        assert_eq!(dechunk("0\r\n\r\n"), "");
    }
}
