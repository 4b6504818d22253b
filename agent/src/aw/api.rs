//! ActivityWatch's REST API (the subset under `/api/0/` its watchers and
//! `aw-client` use), served by the agent on loopback, so watchers already
//! installed report to the agent unchanged. Status codes follow ActivityWatch's
//! server (aw-server-rust): malformed JSON 400, well-formed JSON of the wrong
//! shape (a missing field) 422, an unknown bucket or event 404, a bucket
//! created twice 304. It is served on a loopback address only. Requests
//! naming a host other than the loopback are refused (403), so a web page
//! cannot reach the API by DNS rebinding; so are requests from a web page
//! of another origin, and from a browser extension unless its origin was
//! allowed (`--activitywatch-origin moz-extension://<id>` for
//! aw-watcher-web); a POST must carry JSON (415 otherwise), which a page
//! cannot send across origins without the browser asking first.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::store::{AwError, AwEvent, AwStore, Created, MAX_DURATION_S, NewBucket};

type Shared = Arc<Mutex<AwStore>>;

/// An error answer: ActivityWatch's status and a JSON message.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(json!({ "message": self.1 }))).into_response()
    }
}

impl From<AwError> for ApiError {
    fn from(e: AwError) -> Self {
        match e {
            AwError::NoSuchBucket(_) => Self(StatusCode::NOT_FOUND, e.to_string()),
            other => {
                tracing::error!(error = %other, "activitywatch store failed");
                Self(StatusCode::INTERNAL_SERVER_ERROR, other.to_string())
            }
        }
    }
}

/// Parses a JSON body as ActivityWatch's server does: a syntax error is 400,
/// JSON of the wrong shape 422.
fn body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        let status = match e.classify() {
            serde_json::error::Category::Data => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError(status, format!("invalid request body: {e}"))
    })
}

fn time(value: Option<&str>, name: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
    value
        .map(|v| {
            DateTime::parse_from_rfc3339(v)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| {
                    ApiError(
                        StatusCode::BAD_REQUEST,
                        format!("{name}: needs an RFC 3339 time: {e}"),
                    )
                })
        })
        .transpose()
}

/// Runs `f` on the store off the async workers (SQLite syncs to disk).
async fn with_store<T: Send + 'static>(
    store: &Shared,
    f: impl FnOnce(&mut AwStore) -> Result<T, AwError> + Send + 'static,
) -> Result<T, ApiError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || f(&mut crate::lock(&store)))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(ApiError::from)
}

/// This machine's host name, as ActivityWatch's watchers name it in their
/// bucket ids.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}

async fn info() -> Response {
    axum::Json(json!({
        "hostname": hostname(),
        "version": concat!("trackhrs-agent v", env!("CARGO_PKG_VERSION")),
        "testing": false,
        "device_id": hostname(),
    }))
    .into_response()
}

async fn buckets(State(store): State<Shared>) -> Result<Response, ApiError> {
    let buckets = with_store(&store, |s| s.buckets()).await?;
    let map: serde_json::Map<String, serde_json::Value> = buckets
        .into_iter()
        .map(|b| (b.id.clone(), json!(b)))
        .collect();
    Ok(axum::Json(map).into_response())
}

async fn bucket_get(
    State(store): State<Shared>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let bucket = with_store(&store, move |s| s.bucket(&id)).await?;
    Ok(axum::Json(bucket).into_response())
}

async fn bucket_create(
    State(store): State<Shared>,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let new: NewBucket = body(&bytes)?;
    match with_store(&store, move |s| s.create_bucket(&id, &new)).await? {
        Created::Created => Ok(StatusCode::OK.into_response()),
        Created::Exists => Ok(StatusCode::NOT_MODIFIED.into_response()),
    }
}

async fn bucket_delete(
    State(store): State<Shared>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    with_store(&store, move |s| s.delete_bucket(&id)).await?;
    Ok(StatusCode::OK.into_response())
}

#[derive(Deserialize)]
struct Range {
    start: Option<String>,
    end: Option<String>,
    limit: Option<String>,
}

async fn events_get(
    State(store): State<Shared>,
    Path(id): Path<String>,
    Query(range): Query<Range>,
) -> Result<Response, ApiError> {
    let start = time(range.start.as_deref(), "start")?;
    let end = time(range.end.as_deref(), "end")?;
    // aw-client sends limit=-1 for "no limit".
    let limit = match range.limit.as_deref() {
        None => None,
        Some(l) => match l.parse::<i64>() {
            Ok(n) if n < 0 => None,
            Ok(n) => Some(n as u64),
            Err(_) => {
                return Err(ApiError(
                    StatusCode::BAD_REQUEST,
                    "limit: needs an integer".into(),
                ));
            }
        },
    };
    let events = with_store(&store, move |s| s.events(&id, start, end, limit)).await?;
    Ok(axum::Json(events).into_response())
}

async fn events_insert(
    State(store): State<Shared>,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    // Parsed as a value first, so a syntax error is told apart from a
    // wrong shape (untagged enums hide the cause).
    let value: serde_json::Value = body(&bytes)?;
    let events = match value {
        serde_json::Value::Array(items) => items
            .into_iter()
            .map(serde_json::from_value)
            .collect::<Result<Vec<AwEvent>, _>>(),
        one => serde_json::from_value::<AwEvent>(one).map(|e| vec![e]),
    }
    .map_err(|e| {
        ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("invalid event: {e}"),
        )
    })?;
    if let Some(bad) = events.iter().position(|e| !e.duration_ok()) {
        return Err(ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("event {bad}: duration must be a number of seconds from 0 to a century"),
        ));
    }
    let stored = with_store(&store, move |s| s.insert(&id, &events)).await?;
    Ok(axum::Json(stored).into_response())
}

async fn events_count(
    State(store): State<Shared>,
    Path(id): Path<String>,
    Query(range): Query<Range>,
) -> Result<Response, ApiError> {
    let start = time(range.start.as_deref(), "start")?;
    let end = time(range.end.as_deref(), "end")?;
    let n = with_store(&store, move |s| s.count(&id, start, end)).await?;
    Ok(axum::Json(n).into_response())
}

async fn event_get(
    State(store): State<Shared>,
    Path((id, event)): Path<(String, i64)>,
) -> Result<Response, ApiError> {
    match with_store(&store, move |s| s.event(&id, event)).await? {
        Some(e) => Ok(axum::Json(e).into_response()),
        None => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("there's no event with id {event}"),
        )),
    }
}

async fn event_delete(
    State(store): State<Shared>,
    Path((id, event)): Path<(String, i64)>,
) -> Result<Response, ApiError> {
    with_store(&store, move |s| s.delete_event(&id, event)).await?;
    Ok(StatusCode::OK.into_response())
}

#[derive(Deserialize)]
struct Pulse {
    pulsetime: Option<String>,
}

async fn heartbeat(
    State(store): State<Shared>,
    Path(id): Path<String>,
    Query(pulse): Query<Pulse>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let pulsetime = pulse
        .pulsetime
        .as_deref()
        .and_then(|p| p.parse::<f64>().ok())
        .filter(|p| p.is_finite() && (0.0..MAX_DURATION_S).contains(p))
        .ok_or_else(|| {
            ApiError(
                StatusCode::BAD_REQUEST,
                "pulsetime: needs a number of seconds".into(),
            )
        })?;
    let event: AwEvent = body(&bytes)?;
    if !event.duration_ok() {
        return Err(ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            "duration must be a number of seconds from 0 to a century".into(),
        ));
    }
    let stored = with_store(&store, move |s| s.heartbeat(&id, &event, pulsetime)).await?;
    Ok(axum::Json(stored).into_response())
}

/// Whether `host` (`name[:port]`, `[v6]:port`) names the loopback.
fn loopback(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.split(':').next().unwrap_or_default(),
    };
    matches!(name, "localhost" | "127.0.0.1" | "::1")
}

/// The origins besides the loopback's own pages that may call the API:
/// browser extensions (`moz-extension://<id>`, `chrome-extension://<id>`),
/// compared exactly.
#[derive(Debug, Clone, Default)]
pub struct Origins(Arc<Vec<String>>);

impl Origins {
    /// These origins (a trailing `/` is ignored).
    pub fn new(origins: Vec<String>) -> Self {
        Self(Arc::new(
            origins
                .into_iter()
                .map(|o| o.trim_end_matches('/').to_owned())
                .collect(),
        ))
    }

    fn allow(&self, origin: &str) -> bool {
        let origin = origin.trim_end_matches('/');
        match origin.split_once("://") {
            Some(("http" | "https", rest)) if loopback(rest) => true,
            _ => self.0.iter().any(|o| o == origin),
        }
    }
}

/// Refuses a request whose `Host` is not the loopback, one from a web page
/// or extension whose origin is not allowed, and a POST that does not carry
/// JSON.
async fn guard(State(origins): State<Origins>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let text = |name| {
        headers
            .get(name)
            .and_then(|h: &header::HeaderValue| h.to_str().ok())
    };
    let host = text(header::HOST).unwrap_or("localhost");
    if !loopback(host) {
        return ApiError(
            StatusCode::FORBIDDEN,
            format!("host {host} is not allowed; use localhost"),
        )
        .into_response();
    }
    if let Some(origin) = text(header::ORIGIN)
        && !origins.allow(origin)
    {
        return ApiError(
            StatusCode::FORBIDDEN,
            format!("requests from {origin} are not allowed"),
        )
        .into_response();
    }
    let json =
        text(header::CONTENT_TYPE).is_some_and(|t| t.trim_start().starts_with("application/json"));
    if request.method() == axum::http::Method::POST && !json {
        return ApiError(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the body must be JSON (Content-Type: application/json)".into(),
        )
        .into_response();
    }
    next.run(request).await
}

/// The API over `store`.
pub fn router(store: Arc<Mutex<AwStore>>, origins: Origins) -> Router {
    Router::new()
        .route("/api/0/info", get(info))
        .route("/api/0/buckets", get(buckets))
        .route("/api/0/buckets/", get(buckets))
        .route(
            "/api/0/buckets/{id}",
            get(bucket_get).post(bucket_create).delete(bucket_delete),
        )
        .route(
            "/api/0/buckets/{id}/events",
            get(events_get).post(events_insert),
        )
        .route("/api/0/buckets/{id}/events/count", get(events_count))
        .route(
            "/api/0/buckets/{id}/events/{event}",
            get(event_get).delete(event_delete),
        )
        .route(
            "/api/0/buckets/{id}/heartbeat",
            axum::routing::post(heartbeat),
        )
        .layer(middleware::from_fn_with_state(origins, guard))
        .with_state(store)
}

/// Serves the API on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    store: Arc<Mutex<AwStore>>,
    origins: Origins,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(store, origins))
        .with_graceful_shutdown(shutdown)
        .await
}
