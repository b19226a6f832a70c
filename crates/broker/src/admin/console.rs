//! The web console: one small page app (sources in `console/` at the
//! repository root, plain TypeScript) whose bundle is committed under
//! `admin/console/` and embedded here, so the binary serves it offline,
//! with no CDN, and `cargo build` needs nothing but the Rust toolchain
//! (docs/OPERATIONS.md, "Web console").
//!
//! The page and its assets are public (the guard lets them through): they
//! hold no data. Every API call the page makes carries the operator's
//! credentials and is checked by the guard as any other.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::node::Node;

/// One embedded file.
struct Asset {
    bytes: &'static [u8],
    content_type: &'static str,
    /// A strong validator computed at compile time, so a browser
    /// revalidates cheaply and never keeps an old broker's console.
    etag: &'static str,
}

/// FNV-1a over the bytes: a fingerprint for the ETag, not security.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    h
}

/// `"` + 16 hex digits + `"`, built at compile time.
const fn etag_of(bytes: &[u8]) -> [u8; 18] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let h = fnv1a(bytes);
    let mut out = [b'"'; 18];
    let mut i = 0;
    while i < 16 {
        out[1 + i] = HEX[((h >> (60 - 4 * i)) & 0xf) as usize];
        i += 1;
    }
    out
}

macro_rules! asset {
    ($file:literal, $type:literal) => {{
        const BYTES: &[u8] = include_bytes!(concat!("console/", $file));
        const TAG: [u8; 18] = etag_of(BYTES);
        Asset {
            bytes: BYTES,
            content_type: $type,
            etag: match std::str::from_utf8(&TAG) {
                Ok(s) => s,
                Err(_) => panic!("an ETag is ASCII"),
            },
        }
    }};
}

static INDEX: Asset = asset!("index.html", "text/html; charset=utf-8");
static APP_JS: Asset = asset!("app.js", "text/javascript; charset=utf-8");
static APP_CSS: Asset = asset!("app.css", "text/css; charset=utf-8");

/// The paths served here, which the guard leaves open.
pub(super) const PATHS: [&str; 3] = ["/", "/console/app.js", "/console/app.css"];

/// `GET /` and the console's assets.
pub(super) fn routes() -> Router<Arc<Node>> {
    Router::new()
        .route(
            "/",
            get(|s: State<Arc<Node>>, h: HeaderMap| serve(s, h, &INDEX)),
        )
        .route(
            "/console/app.js",
            get(|s: State<Arc<Node>>, h: HeaderMap| serve(s, h, &APP_JS)),
        )
        .route(
            "/console/app.css",
            get(|s: State<Arc<Node>>, h: HeaderMap| serve(s, h, &APP_CSS)),
        )
}

/// The Content-Security-Policy: everything from this broker only, except
/// that the page may call the admin APIs of the group's other brokers
/// (`http-peers`), to follow a takeover. No inline scripts or styles.
fn content_security_policy(node: &Node) -> String {
    let mut connect = String::from("'self'");
    for peer in &node.config.http_peers {
        // Validated at start; a bad one is left out rather than let in.
        if let Ok(origin) = crate::config::http_origin(peer) {
            connect.push(' ');
            connect.push_str(&origin);
        }
    }
    format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src {connect}; object-src 'none'; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'"
    )
}

async fn serve(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    asset: &'static Asset,
) -> Response {
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == asset.etag));
    let csp = HeaderValue::from_str(&content_security_policy(&node))
        .unwrap_or_else(|_| HeaderValue::from_static("default-src 'self'"));
    let common = [
        (header::ETAG, HeaderValue::from_static(asset.etag)),
        // Revalidate every time (a 304 when unchanged): the asset names
        // carry no hash, and an upgraded broker must not run an old page.
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (header::CONTENT_SECURITY_POLICY, csp),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
    ];
    if fresh {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (
        common,
        [(header::CONTENT_TYPE, asset.content_type)],
        asset.bytes,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_are_quoted_hex_and_differ_per_file() {
        for a in [&INDEX, &APP_JS, &APP_CSS] {
            assert_eq!(a.etag.len(), 18);
            assert!(a.etag.starts_with('"') && a.etag.ends_with('"'));
            assert!(!a.bytes.is_empty());
        }
        assert_ne!(INDEX.etag, APP_JS.etag);
    }
}
