//! The HTTP side: hyper's HTTP/1.1 server on a loopback listener, and the per-request pipeline
//! record → fault → authenticate → rate limit → endpoint → `on_write` hooks → response.
//!
//! hyper is used directly (not through a framework) because a dropped response must be a
//! closed connection: a service that returns `Err` makes hyper close it without answering.

use super::RecordedRequest;
use super::auth::{self, Principal};
use super::endpoints::{self, Call};
use super::faults::FaultKind;
use super::ids;
use super::pagination::Query;
use super::payloads::{self, Reply};
use super::rate_limit::RateStatus;
use super::state::{self, World};
use bytes::Bytes;
use chrono::Utc;
use http::header::{AUTHORIZATION, IF_NONE_MATCH};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::Value;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub(crate) type WriteHook = Arc<dyn Fn(&RecordedRequest) + Send + Sync>;

/// State shared by the public handle and the connection tasks.
pub(crate) struct Shared {
    pub base_url: String,
    world: Mutex<World>,
    hooks: Mutex<Vec<WriteHook>>,
}

impl Shared {
    pub(crate) fn new(base_url: String) -> Self {
        Shared {
            base_url,
            world: Mutex::new(World::new()),
            hooks: Mutex::new(Vec::new()),
        }
    }

    /// The world, also after a panic elsewhere (a panicking test hook must not wedge the fake).
    pub(crate) fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn add_hook(&self, hook: WriteHook) {
        self.hooks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(hook);
    }

    fn hooks(&self) -> Vec<WriteHook> {
        self.hooks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The service's error: hyper closes the connection without sending a response.
#[derive(Debug)]
struct ConnectionDropped;

impl std::fmt::Display for ConnectionDropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped on purpose by the fake GitHub")
    }
}

impl std::error::Error for ConnectionDropped {}

/// Accepts connections until `shutdown` fires or its sender is dropped.
pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<()>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of file descriptors or similar: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| handle(shared.clone(), request));
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = shutdown.changed() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
}

fn header(headers: &HeaderMap, name: http::header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// An empty or whitespace body is no body; anything else must be JSON.
fn parse_body(bytes: &[u8]) -> Result<Option<Value>, ()> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(bytes).map(Some).map_err(|_| ())
}

async fn handle(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, ConnectionDropped> {
    let (parts, body) = request.into_parts();
    let bytes = body
        .collect()
        .await
        .map_err(|_| ConnectionDropped)?
        .to_bytes();
    let body = parse_body(&bytes);
    let authorization = header(&parts.headers, AUTHORIZATION);
    let if_none_match = header(&parts.headers, IF_NONE_MATCH);
    let request_id = ids::request_id();
    let mut record = RecordedRequest {
        method: parts.method.as_str().to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or_default().to_string(),
        body: body.clone().ok().flatten(),
        auth: auth::credential_kind(authorization.as_deref()),
        status: 0,
        at: SystemTime::now(),
    };

    let (seq, fault, authenticated) = {
        let mut world = shared.world();
        let seq = world.record(record.clone());
        let fault = world.faults.take(&record.method, &record.path);
        let authenticated = auth::authenticate(&world, authorization.as_deref(), Utc::now());
        (seq, fault, authenticated)
    };

    // Latency and dropped connections happen here; the other faults become the reply.
    let drop_after_apply = match &fault {
        Some(FaultKind::Latency(delay)) => {
            tokio::time::sleep(*delay).await;
            false
        }
        Some(FaultKind::DropBeforeApply) => return Err(ConnectionDropped),
        Some(FaultKind::DropAfterApply) => true,
        _ => false,
    };

    let (reply, rate) = {
        let mut world = shared.world();
        let facts = RequestFacts {
            record: &record,
            body_is_json: body.is_ok(),
            if_none_match: if_none_match.as_deref(),
            request_id: &request_id,
        };
        respond(&mut world, &shared.base_url, &facts, authenticated, fault)
    };

    record.status = reply.status;
    shared
        .world()
        .set_recorded_status(seq, if drop_after_apply { 0 } else { reply.status });
    if reply.applied_write {
        for hook in shared.hooks() {
            hook(&record);
        }
    }
    if drop_after_apply {
        return Err(ConnectionDropped);
    }
    Ok(build_response(reply, &rate, &request_id))
}

/// What `respond` needs to know about the request.
struct RequestFacts<'a> {
    record: &'a RecordedRequest,
    body_is_json: bool,
    if_none_match: Option<&'a str>,
    request_id: &'a str,
}

/// The reply and the rate-limit state to report with it (everything under the world's lock).
fn respond(
    world: &mut World,
    base_url: &str,
    facts: &RequestFacts,
    authenticated: Result<Principal, Reply>,
    fault: Option<FaultKind>,
) -> (Reply, RateStatus) {
    let now = state::now();
    // A failed authentication is charged to the anonymous bucket, as on GitHub.
    let principal = authenticated
        .as_ref()
        .cloned()
        .unwrap_or(Principal::Anonymous);
    let bucket = principal.rate_bucket();
    let limit = principal.rate_limit(world.rate_limits.authenticated_limit);
    let current = world.rate_limits.status(&bucket, limit, now);

    match fault {
        Some(FaultKind::Status(code)) => return (server_error(code), current),
        Some(FaultKind::PrimaryRateLimit { reset_in }) => {
            let exhausted = RateStatus {
                limit,
                used: limit,
                reset: Utc::now().timestamp()
                    + i64::try_from(ceil_secs(reset_in)).unwrap_or(i64::MAX / 2),
            };
            return (primary_rate_limited(world, &principal), exhausted);
        }
        Some(FaultKind::SecondaryRateLimit { retry_after }) => {
            return (
                secondary_rate_limited(retry_after, facts.request_id),
                current,
            );
        }
        _ => {}
    }
    let principal = match authenticated {
        Ok(principal) => principal,
        Err(reply) => {
            let rate = world
                .rate_limits
                .consume(&bucket, limit, now)
                .unwrap_or_else(|status| status);
            return (reply, rate);
        }
    };
    // `/rate_limit` is free on GitHub; everything else counts against the hourly quota.
    let rate = if facts.record.path == "/rate_limit" {
        current
    } else {
        match world.rate_limits.consume(&bucket, limit, now) {
            Ok(rate) => rate,
            Err(exhausted) => return (primary_rate_limited(world, &principal), exhausted),
        }
    };
    if !facts.body_is_json {
        return (
            payloads::error(400, "Problems parsing JSON", payloads::DOCS_URL),
            rate,
        );
    }

    let call = Call {
        base_url,
        method: &facts.record.method,
        path: &facts.record.path,
        query: Query::parse(&facts.record.query),
        body: facts.record.body.as_ref(),
        principal: &principal,
        now,
    };
    let mut reply = endpoints::dispatch(world, &call);

    // Conditional requests: a matching ETag is a 304, which GitHub does not charge for.
    if facts.record.method == "GET" && reply.status == 200 {
        let etag = etag(reply.body.as_ref());
        if facts
            .if_none_match
            .is_some_and(|tags| etag_matches(tags, &etag))
        {
            world.rate_limits.refund(&bucket, now);
            let rate = world.rate_limits.status(&bucket, limit, now);
            let not_modified = Reply {
                status: 304,
                body: None,
                headers: vec![("etag", etag)],
                applied_write: false,
            };
            return (not_modified, rate);
        }
        reply = reply.with_header("etag", etag);
    }
    (reply, rate)
}

/// Whole seconds, rounded up (a `retry-after` of 0.5 s must not read as 0).
fn ceil_secs(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

fn server_error(code: u16) -> Reply {
    let message = StatusCode::from_u16(code)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Server Error");
    payloads::error(code, message, payloads::DOCS_URL)
}

fn primary_rate_limited(world: &World, principal: &Principal) -> Reply {
    payloads::error(
        403,
        &principal.rate_limit_message(world),
        "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api",
    )
}

fn secondary_rate_limited(retry_after: Duration, request_id: &str) -> Reply {
    let message = format!(
        "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. If you reach out to GitHub Support for help, please include the request ID {request_id}."
    );
    payloads::error(
        403,
        &message,
        "https://docs.github.com/free-pro-team@latest/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits",
    )
    .with_header("retry-after", ceil_secs(retry_after).to_string())
}

fn etag(body: Option<&Value>) -> String {
    let mut hasher = DefaultHasher::new();
    body.map(Value::to_string)
        .unwrap_or_default()
        .hash(&mut hasher);
    format!("W/\"{:016x}\"", hasher.finish())
}

fn etag_matches(if_none_match: &str, etag: &str) -> bool {
    let strip = |tag: &str| tag.trim().trim_start_matches("W/").to_string();
    let ours = strip(etag);
    if_none_match
        .split(',')
        .any(|tag| tag.trim() == "*" || strip(tag) == ours)
}

fn build_response(reply: Reply, rate: &RateStatus, request_id: &str) -> Response<Full<Bytes>> {
    let body = reply
        .body
        .as_ref()
        .and_then(|v| serde_json::to_vec(v).ok())
        .unwrap_or_default();
    let mut builder = Response::builder()
        .status(reply.status)
        .header("content-type", "application/json; charset=utf-8")
        .header("x-github-request-id", request_id)
        .header("x-github-api-version-selected", "2022-11-28")
        .header("x-github-media-type", "github.v3; format=json");
    for (name, value) in auth::rate_limit_headers(rate) {
        builder = builder.header(name, value);
    }
    if reply.status == 201
        && let Some(url) = reply
            .body
            .as_ref()
            .and_then(|b| b.get("url"))
            .and_then(Value::as_str)
    {
        builder = builder.header("location", url);
    }
    for (name, value) in reply.headers {
        builder = builder.header(name, value);
    }
    builder
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| {
            let mut fallback = Response::new(Full::new(Bytes::from_static(
                b"{\"message\":\"Server Error\"}",
            )));
            *fallback.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            fallback
        })
}
