//! The management API: destinations (list, inspect, browse, purge, move,
//! copy, dead-letter retry, delete), connections (list, close) and durable
//! subscriptions (list, remove). docs/OPERATIONS.md is its reference and
//! `/api/openapi.json` its machine-readable description.
//!
//! Everything here acts on the master's service, so a slave answers 503
//! with who holds the lock (the master, if the group is healthy). The
//! [`guard`](super::guard) has already checked the caller's role (GET
//! needs `monitor`, anything else `admin`) and named them: every change is
//! logged with who made it.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json_, json};

use super::guard::Operator;
use crate::core::DestinationStats;
use crate::model::{Destination, DestinationKind, Message, Value};
use crate::node::{Master, Node};
use crate::service::operator::{Browsed, OperatorError, Selection, Target};

/// Destinations `GET /api/destinations` lists at most per page.
const MAX_PAGE: usize = 1000;
/// Messages a browse shows at most per page.
const MAX_BROWSE: usize = 500;
/// Body bytes a browse shows of each message unless asked for more.
const DEFAULT_BODY_BYTES: usize = 4096;

pub(super) fn routes() -> Router<Arc<Node>> {
    Router::new()
        .route("/api/broker", get(super::status))
        .route("/api/destinations", get(destinations))
        .route(
            "/api/destinations/{kind}/{name}",
            get(destination).delete(delete_destination),
        )
        .route("/api/destinations/{kind}/{name}/messages", get(browse))
        .route(
            "/api/destinations/{kind}/{name}/messages/{id}",
            get(message),
        )
        .route("/api/destinations/{kind}/{name}/purge", post(purge))
        .route("/api/destinations/{kind}/{name}/move", post(move_messages))
        .route("/api/destinations/{kind}/{name}/retry", post(retry))
        .route("/api/connections", get(connections))
        .route(
            "/api/connections/{id}",
            axum::routing::delete(close_connection),
        )
        .route("/api/subscriptions", get(subscriptions))
        .route(
            "/api/subscriptions/{client_id}/{name}",
            axum::routing::delete(remove_subscription),
        )
        .route("/api/openapi.json", get(openapi))
}

/// An error answer: `{"error": "..."}` with its status.
pub(super) fn error(status: StatusCode, text: impl Into<String>) -> Response {
    Refusal::new(status, text).into_response()
}

/// A refusal built before a handler answers (kept small: a `Response`
/// is large to return through every `Result`).
pub(super) struct Refusal(StatusCode, Json_);

impl Refusal {
    fn new(status: StatusCode, text: impl Into<String>) -> Refusal {
        Refusal(status, json!({ "error": text.into() }))
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.0, Json(self.1)).into_response()
    }
}

/// The master's side of the broker, or the 503 a slave answers.
pub(super) fn master(node: &Node) -> Result<Arc<Master>, Refusal> {
    node.master().ok_or_else(|| {
        let ha = node.status();
        Refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({
                "error": "not master: this broker does not serve clients now",
                "role": ha.role.as_str(),
                "master": ha.lock_owner.as_ref().map(|o| format!("{} on {}", o.name, o.host)),
            }),
        )
    })
}

fn operator_error(e: OperatorError) -> Response {
    let status = match &e {
        OperatorError::NotFound(_) => StatusCode::NOT_FOUND,
        OperatorError::Invalid(_) => StatusCode::BAD_REQUEST,
        OperatorError::Conflict(_) => StatusCode::CONFLICT,
        OperatorError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
        OperatorError::Send { .. } | OperatorError::Store { .. } => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    error(status, e.to_string())
}

/// The master and the destination a path's `{kind}/{name}` names: the
/// extractor of every destination endpoint (a slave's 503 and a bad name's
/// 400 come from here).
struct At {
    m: Arc<Master>,
    dest: Destination,
}

impl axum::extract::FromRequestParts<Arc<Node>> for At {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        node: &Arc<Node>,
    ) -> Result<At, Response> {
        let Path(params) =
            Path::<std::collections::HashMap<String, String>>::from_request_parts(parts, node)
                .await
                .map_err(IntoResponse::into_response)?;
        let param = |k: &str| params.get(k).map_or("", String::as_str);
        let m = master(node).map_err(IntoResponse::into_response)?;
        let dest = named(param("kind"), param("name")).map_err(IntoResponse::into_response)?;
        Ok(At { m, dest })
    }
}

/// The destination a path's `{kind}/{name}` names.
fn named(kind: &str, name: &str) -> Result<Destination, Refusal> {
    let kind = match kind {
        "queue" => DestinationKind::Queue,
        "topic" => DestinationKind::Topic,
        "temp-queue" => DestinationKind::TempQueue,
        "temp-topic" => DestinationKind::TempTopic,
        other => {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                format!("unknown destination kind '{other}': queue or topic"),
            ));
        }
    };
    Destination::new(kind, name).map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, e.to_string()))
}

#[derive(Deserialize)]
struct ListQuery {
    kind: Option<String>,
    /// A substring of the name.
    q: Option<String>,
    #[serde(default)]
    offset: usize,
    limit: Option<usize>,
}

/// `GET /api/destinations`: a page of destinations (the total in
/// `x-total-count`).
async fn destinations(State(node): State<Arc<Node>>, Query(q): Query<ListQuery>) -> Response {
    let m = match master(&node) {
        Ok(m) => m,
        Err(r) => return r.into_response(),
    };
    let all = m.service.core.destination_stats().await;
    let picked: Vec<DestinationStats> = all
        .into_iter()
        .map(|mut d| {
            d.producers = m.service.directory.producers_of(&d.destination);
            d
        })
        .filter(|d| q.kind.as_deref().is_none_or(|k| d.kind == k))
        .filter(|d| q.q.as_deref().is_none_or(|s| d.name.contains(s)))
        .collect();
    let total = picked.len();
    let page: Vec<DestinationStats> = picked
        .into_iter()
        .skip(q.offset)
        .take(q.limit.unwrap_or(MAX_PAGE).min(MAX_PAGE))
        .collect();
    let mut headers = HeaderMap::new();
    headers.insert("x-total-count", HeaderValue::from(total));
    (headers, Json(page)).into_response()
}

/// `GET /api/destinations/{kind}/{name}`.
async fn destination(At { m, dest }: At) -> Response {
    let Some(h) = m.service.core.existing_destination(&dest) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no such destination: {dest}"),
        );
    };
    let (reply, rx) = tokio::sync::oneshot::channel();
    if h.control(crate::core::Control::Stats { reply })
        .await
        .is_err()
    {
        return error(
            StatusCode::NOT_FOUND,
            format!("no such destination: {dest}"),
        );
    }
    match tokio::time::timeout(std::time::Duration::from_secs(5), rx).await {
        Ok(Ok(mut s)) => {
            s.producers = m.service.directory.producers_of(&s.destination);
            Json(s).into_response()
        }
        _ => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{dest} did not answer"),
        ),
    }
}

#[derive(Deserialize)]
struct BrowseQuery {
    #[serde(default)]
    offset: usize,
    limit: Option<usize>,
    /// Body bytes shown per message, or `all`.
    body: Option<String>,
    selector: Option<String>,
}

/// A message as the API shows it.
#[derive(Serialize)]
struct MessageView {
    id: String,
    seq: u64,
    destination: String,
    headers: serde_json::Map<String, Json_>,
    body: String,
    /// `utf8` or `base64`.
    body_encoding: &'static str,
    body_bytes: usize,
    truncated: bool,
    deliveries: u32,
    redelivered: bool,
    persistent: bool,
    priority: u8,
    timestamp_ms: u64,
    expires_ms: Option<u64>,
}

fn json_value(v: &Value) -> Json_ {
    match v {
        Value::Null => Json_::Null,
        Value::Bool(b) => json!(b),
        Value::I8(n) => json!(n),
        Value::I16(n) => json!(n),
        Value::I32(n) => json!(n),
        Value::I64(n) => json!(n),
        Value::F32(n) => json!(n),
        Value::F64(n) => json!(n),
        Value::String(s) => json!(s),
        Value::Bytes(b) => json!(base64::engine::general_purpose::STANDARD.encode(b)),
    }
}

fn view(b: &Browsed, body_limit: usize) -> MessageView {
    let m: &Message = &b.message;
    let shown = &m.body[..m.body.len().min(body_limit)];
    let (body, body_encoding) = match std::str::from_utf8(shown) {
        Ok(s) => (s.to_owned(), "utf8"),
        // A cut in the middle of a character is still text.
        Err(e) if e.error_len().is_none() && shown.len() < m.body.len() => (
            String::from_utf8_lossy(&shown[..e.valid_up_to()]).into_owned(),
            "utf8",
        ),
        Err(_) => (
            base64::engine::general_purpose::STANDARD.encode(shown),
            "base64",
        ),
    };
    MessageView {
        id: m.id.to_string(),
        seq: m.seq,
        destination: m.destination.to_string(),
        headers: m
            .properties
            .iter()
            // The broker's own bookkeeping, which no protocol head shows.
            .filter(|(k, _)| *k != crate::model::BODY_KIND_PROPERTY)
            .map(|(k, v)| (k.to_owned(), json_value(v)))
            .collect(),
        body,
        body_encoding,
        body_bytes: m.body.len(),
        truncated: shown.len() < m.body.len(),
        deliveries: b.deliveries,
        redelivered: b.deliveries > 1,
        persistent: m.persistent,
        priority: m.priority,
        timestamp_ms: m.timestamp,
        expires_ms: (m.expires != 0).then_some(m.expires),
    }
}

/// `GET /api/destinations/queue/{name}/messages`: a page of a queue's
/// messages, taking none.
async fn browse(At { m, dest }: At, Query(q): Query<BrowseQuery>) -> Response {
    let body_limit = match q.body.as_deref() {
        None => DEFAULT_BODY_BYTES,
        Some("all") => usize::MAX,
        Some(n) => match n.parse::<usize>() {
            Ok(n) => n,
            Err(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("body must be a number of bytes or 'all', not '{n}'"),
                );
            }
        },
    };
    let limit = q.limit.unwrap_or(50).min(MAX_BROWSE);
    match m
        .service
        .browse_queue(&dest, q.selector.as_deref(), q.offset, limit)
        .await
    {
        Ok(list) => Json(json!({
            "destination": dest.to_string(),
            "offset": q.offset,
            "messages": list.iter().map(|b| view(b, body_limit)).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(e) => operator_error(e),
    }
}

/// `GET /api/destinations/queue/{name}/messages/{id}`: one message, whole.
async fn message(At { m, dest }: At, Path((_, _, id)): Path<(String, String, String)>) -> Response {
    let mut found = None;
    let r = m
        .service
        .browse_each(&dest, None, |b| {
            let hit = b.message.id.to_string() == id
                || b.message
                    .string_property(crate::store::DUPLICATE_ID_HEADER)
                    .is_some_and(|d| d == id);
            if hit {
                found = Some(b);
            }
            !hit
        })
        .await;
    match (r, found) {
        (Err(e), _) => operator_error(e),
        (Ok(()), Some(b)) => Json(view(&b, usize::MAX)).into_response(),
        (Ok(()), None) => error(
            StatusCode::NOT_FOUND,
            format!("no message '{id}' in {dest} (it may be in flight to a consumer or gone)"),
        ),
    }
}

/// `POST /api/destinations/queue/{name}/purge`.
async fn purge(Extension(Operator(who)): Extension<Operator>, At { m, dest }: At) -> Response {
    match m.service.purge_queue(&dest).await {
        Ok(n) => {
            tracing::info!(operator = %who, destination = %dest, purged = n, "queue purged");
            Json(json!({ "purged": n })).into_response()
        }
        Err(e) => {
            tracing::warn!(operator = %who, destination = %dest, error = %e, "purge failed");
            operator_error(e)
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct MoveBody {
    /// Where to: `/queue/x` or `/topic/x` (ActiveMQ's `queue://x` too).
    to: Option<String>,
    #[serde(default)]
    ids: Vec<String>,
    selector: Option<String>,
    #[serde(default)]
    copy: bool,
    limit: Option<usize>,
}

/// A move's or retry's JSON body; none means the defaults.
fn move_body(bytes: &[u8]) -> Result<MoveBody, Refusal> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(MoveBody::default());
    }
    serde_json::from_slice(bytes)
        .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))
}

/// A destination as an operator spells it: `/queue/x`, `/topic/x`, or
/// ActiveMQ's `queue://x` and `topic://x`.
fn spelled(s: &str) -> Result<Destination, Refusal> {
    let canonical = if let Some(n) = s.strip_prefix("queue://") {
        format!("/queue/{n}")
    } else if let Some(n) = s.strip_prefix("topic://") {
        format!("/topic/{n}")
    } else {
        s.to_owned()
    };
    canonical.parse::<Destination>().map_err(|_| {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            format!("'{s}' is not a destination: write /queue/NAME or /topic/NAME"),
        )
    })
}

/// `POST /api/destinations/queue/{name}/move`.
async fn move_messages(
    Extension(Operator(who)): Extension<Operator>,
    at: At,
    body: axum::body::Bytes,
) -> Response {
    let body = match move_body(&body) {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    let Some(to) = body.to.as_deref() else {
        return error(StatusCode::BAD_REQUEST, "'to' names where to move them");
    };
    let target = match spelled(to) {
        Ok(d) => Target::To(d),
        Err(r) => return r.into_response(),
    };
    relocate(at, who, body, target).await
}

/// `POST /api/destinations/queue/{name}/retry`: dead letters back to
/// where they came from.
async fn retry(
    Extension(Operator(who)): Extension<Operator>,
    at: At,
    body: axum::body::Bytes,
) -> Response {
    let body = match move_body(&body) {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    if body.to.is_some() || body.copy {
        return error(
            StatusCode::BAD_REQUEST,
            "a retry sends each message back to its original destination: no 'to' or 'copy'",
        );
    }
    relocate(at, who, body, Target::Origin).await
}

async fn relocate(At { m, dest }: At, who: String, body: MoveBody, target: Target) -> Response {
    let selection = Selection {
        ids: body.ids,
        selector: body.selector.filter(|s| !s.trim().is_empty()),
        limit: body.limit,
    };
    let what = match (&target, body.copy) {
        (Target::Origin, _) => "retried",
        (_, true) => "copied",
        (_, false) => "moved",
    };
    match m
        .service
        .move_messages(&dest, selection, target.clone(), body.copy, &who)
        .await
    {
        Ok(r) => {
            tracing::info!(operator = %who, from = %dest, to = ?target, count = r.moved,
                skipped = r.skipped, "messages {what}");
            Json(json!({ what: r.moved, "skipped": r.skipped })).into_response()
        }
        Err(e) => {
            tracing::warn!(operator = %who, from = %dest, to = ?target, error = %e,
                "messages not {what}");
            operator_error(e)
        }
    }
}

/// `DELETE /api/destinations/{kind}/{name}`.
async fn delete_destination(
    Extension(Operator(who)): Extension<Operator>,
    At { m, dest }: At,
) -> Response {
    match m.service.delete_destination(&dest, &who).await {
        Ok(n) => {
            tracing::info!(operator = %who, destination = %dest, messages = n, "destination deleted by operator");
            Json(json!({ "deleted": true, "messages": n })).into_response()
        }
        Err(e) => operator_error(e),
    }
}

/// `GET /api/connections`.
async fn connections(State(node): State<Arc<Node>>) -> Response {
    match master(&node) {
        Ok(m) => Json(m.service.directory.views()).into_response(),
        Err(r) => r.into_response(),
    }
}

/// `DELETE /api/connections/{id}`.
async fn close_connection(
    State(node): State<Arc<Node>>,
    Extension(Operator(who)): Extension<Operator>,
    Path(id): Path<u64>,
) -> Response {
    let m = match master(&node) {
        Ok(m) => m,
        Err(r) => return r.into_response(),
    };
    if m.service
        .directory
        .close(id, format!("closed by an operator ({who})"))
    {
        tracing::info!(operator = %who, connection = id, "connection closed by operator");
        Json(json!({ "closed": true })).into_response()
    } else {
        error(StatusCode::NOT_FOUND, format!("no connection {id}"))
    }
}

/// `GET /api/subscriptions`: durable subscriptions.
async fn subscriptions(State(node): State<Arc<Node>>) -> Response {
    match master(&node) {
        Ok(m) => Json(m.service.durable_subscriptions().await).into_response(),
        Err(r) => r.into_response(),
    }
}

/// `DELETE /api/subscriptions/{client_id}/{name}`.
async fn remove_subscription(
    State(node): State<Arc<Node>>,
    Extension(Operator(who)): Extension<Operator>,
    Path((client_id, name)): Path<(String, String)>,
) -> Response {
    let m = match master(&node) {
        Ok(m) => m,
        Err(r) => return r.into_response(),
    };
    match m
        .service
        .remove_durable_subscription(&client_id, &name)
        .await
    {
        Ok(()) => {
            tracing::info!(operator = %who, %client_id, subscription = %name,
                "durable subscription removed by operator");
            Json(json!({ "removed": true })).into_response()
        }
        Err(e) => operator_error(e),
    }
}

/// The OpenAPI description, kept beside this module and checked against
/// the router by the tests.
pub(super) const OPENAPI: &str = include_str!("openapi.json");

/// `GET /api/openapi.json`.
async fn openapi() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        OPENAPI,
    )
        .into_response()
}
