//! Who may use the admin API: once the broker has users, every request
//! but `/healthz`, `/readyz` (load balancers probe those without
//! credentials, and they tell nothing but up/ready) and the web console's
//! page and assets (no data; its API calls carry credentials) needs HTTP basic auth
//! as a user with an admin role. Reading (GET, HEAD) needs `monitor`;
//! anything else — every state-changing endpoint, present or future —
//! needs `admin`. The check runs before routing, so an unknown path or
//! method tells an unauthenticated caller nothing either.
//!
//! A broker without users keeps the API open, as its client listeners
//! are; `check_exposure` refuses to start such a broker on a public
//! address.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;

use crate::metrics::Metrics;
use crate::node::Node;
use crate::service::AdminRole;

/// The address a request came from, attached per connection.
#[derive(Debug, Clone, Copy)]
pub(super) struct Peer(pub(super) SocketAddr);

/// Who made a request, for the log of what operators change: the user,
/// or `anonymous (PEER)` on a broker without users.
#[derive(Debug, Clone)]
pub(super) struct Operator(pub(super) String);

/// Paths anyone may ask.
const OPEN: [&str; 2] = ["/healthz", "/readyz"];

/// The middleware: lets the request through, or answers 401 / 403.
pub(super) async fn guard(
    State(node): State<Arc<Node>>,
    axum::Extension(Peer(peer)): axum::Extension<Peer>,
    req: Request,
    next: Next,
) -> Response {
    let security = &node.security;
    let path = req.uri().path();
    // The console's page and assets hold no data; the API calls it makes
    // carry credentials (super::console).
    if !security.has_users() || OPEN.contains(&path) || super::console::PATHS.contains(&path) {
        let mut req = req;
        req.extensions_mut()
            .insert(Operator(format!("anonymous ({peer})")));
        return next.run(req).await;
    }
    let Some((login, password)) = basic_credentials(&req) else {
        return unauthorized("credentials required (HTTP basic auth)");
    };
    let user = match security.authenticate_http(peer, &login, &password).await {
        Ok(user) => user,
        Err(e) => {
            Metrics::inc(&security.admin_login_failures_total);
            tracing::warn!(%peer, %login, method = %req.method(), path = req.uri().path(),
                error = %e, "admin API login refused");
            return unauthorized("unknown user or wrong password");
        }
    };
    let needed = if matches!(*req.method(), Method::GET | Method::HEAD) {
        AdminRole::Monitor
    } else {
        AdminRole::Admin
    };
    match security.admin_role(&user) {
        Some(role) if role >= needed => {
            let mut req = req;
            req.extensions_mut().insert(Operator(user.name.clone()));
            next.run(req).await
        }
        role => {
            Metrics::inc(&security.admin_forbidden_total);
            tracing::warn!(%peer, login = %user.name, method = %req.method(), path = req.uri().path(),
                role = role.map_or("none", AdminRole::as_str), needed = needed.as_str(),
                "admin API request forbidden");
            (
                StatusCode::FORBIDDEN,
                format!(
                    "forbidden: this needs the {} role (security.{}-groups)\n",
                    needed.as_str(),
                    needed.as_str()
                ),
            )
                .into_response()
        }
    }
}

/// A 401 that asks for basic auth.
fn unauthorized(why: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, r#"Basic realm="halyard""#)],
        format!("{why}\n"),
    )
        .into_response()
}

/// The login and password of an `Authorization: Basic` header, if it has
/// a well-formed one.
fn basic_credentials(req: &Request) -> Option<(String, String)> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (login, password) = text.split_once(':')?;
    Some((login.to_owned(), password.to_owned()))
}
