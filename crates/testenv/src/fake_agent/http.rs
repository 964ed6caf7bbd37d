//! The HTTP side, answering like agentapi's server (chi router, huma v2.32 operations): JSON
//! bodies with huma's `$schema` link, `application/problem+json` errors, and server-sent events
//! framed like huma's `sse` package (`event: <name>\ndata: <json>\n\n`, no `id:` line).
//!
//! hyper is used directly because [`Mode::Drop`] must close connections without an answer.

use super::Mode;
use super::agent::{AgentStatus, Message, PostRefusal, Shared};
use super::flood::Flooded;
use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST};
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use serde_json::{Value, json};
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Largest `POST /message` body read.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// One server-sent event, as huma's `sse` package writes it for `send.Data(payload)`.
pub(crate) struct SseFrame {
    event: &'static str,
    data: String,
}

#[derive(Serialize)]
struct MessageUpdateBody<'a> {
    id: u64,
    role: &'a str,
    message: String,
    time: String,
}

#[derive(Serialize)]
struct StatusChangeBody<'a> {
    status: &'a str,
    agent_type: &'a str,
}

impl SseFrame {
    pub(crate) fn message_update(message: &Message) -> SseFrame {
        let body = MessageUpdateBody {
            id: message.id,
            role: message.role.as_str(),
            message: message.content(),
            time: rfc3339(message.time),
        };
        SseFrame {
            event: "message_update",
            data: to_json(&body),
        }
    }

    pub(crate) fn status_change(status: AgentStatus, agent_type: &str) -> SseFrame {
        let body = StatusChangeBody {
            status: status.as_str(),
            agent_type,
        };
        SseFrame {
            event: "status_change",
            data: to_json(&body),
        }
    }

    pub(crate) fn encode(&self) -> Bytes {
        Bytes::from(format!("event: {}\ndata: {}\n\n", self.event, self.data))
    }
}

fn to_json<T: Serialize>(value: &T) -> String {
    // Serializing these plain structs cannot fail.
    serde_json::to_string(value).unwrap_or_default()
}

/// Go's `time.Time` JSON form (RFC 3339 with fractional seconds).
fn rfc3339(time: chrono::DateTime<chrono::Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// The operations agentapi registers (and everything else).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endpoint {
    Status,
    Messages,
    MessagePost,
    Events,
    Other,
}

impl Endpoint {
    fn of(method: &Method, path: &str) -> Endpoint {
        match (method, path) {
            (&Method::GET, "/status") => Endpoint::Status,
            (&Method::GET, "/messages") => Endpoint::Messages,
            (&Method::POST, "/message") => Endpoint::MessagePost,
            (&Method::GET, "/events") => Endpoint::Events,
            _ => Endpoint::Other,
        }
    }
}

/// The service's error: hyper closes the connection without answering.
#[derive(Debug)]
struct ConnectionDropped;

impl std::fmt::Display for ConnectionDropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped on purpose by the fake agent")
    }
}

impl std::error::Error for ConnectionDropped {}

/// Accepts connections until the task is aborted; aborting it drops the listener and every
/// connection.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of file descriptors or similar: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let mode = {
            let mut state = shared.state();
            state.counts.connections += 1;
            state.script.mode
        };
        if mode == Mode::Drop {
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        connections.spawn(async move {
            let service = service_fn(move |request| handle(shared.clone(), request));
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<Body>, ConnectionDropped> {
    let endpoint = Endpoint::of(request.method(), request.uri().path());
    let host = request
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| shared.addr.to_string());
    let (mode, allowed, delay, in_flight, refusal) = {
        let mut state = shared.state();
        let counts = &mut state.counts;
        match endpoint {
            Endpoint::Status => counts.status += 1,
            Endpoint::Messages => counts.messages += 1,
            Endpoint::MessagePost => counts.message_post += 1,
            Endpoint::Events => counts.events += 1,
            Endpoint::Other => counts.other += 1,
        }
        let allowed = host_allowed(&state.script.allowed_hosts, &host);
        let script = &state.script;
        (
            script.mode,
            allowed,
            script.answer_delay,
            script.in_flight.clone(),
            // Only a refusal needs its text.
            match script.mode {
                Mode::Refuse(_) => script.refusal.clone(),
                _ => String::new(),
            },
        )
    };
    let _in_flight = in_flight.enter();
    match mode {
        Mode::Serve => {}
        Mode::Drop => return Err(ConnectionDropped),
        // Read and counted, never answered: the client's deadline decides.
        Mode::Hang => return std::future::pending().await,
        Mode::Refuse(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            return Ok(problem(status, &host, &refusal, Vec::new()));
        }
        Mode::Flood(flood) => {
            let flooded = match endpoint {
                Endpoint::Messages => Flooded::Messages,
                Endpoint::Events => Flooded::Events,
                _ => Flooded::Any,
            };
            if let Some(response) = super::flood::answer(&shared, flood, flooded) {
                return Ok(response);
            }
        }
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Err(allowed_hosts) = allowed {
        // agentapi's host check runs before routing, with net/http's http.Error.
        return Ok(text(
            StatusCode::BAD_REQUEST,
            format!("Invalid host header. Allowed hosts: {allowed_hosts}\n"),
        ));
    }
    Ok(match endpoint {
        Endpoint::Status => status(&shared, &host),
        Endpoint::Messages => messages(&shared, &host),
        Endpoint::MessagePost => post_message(&shared, request, &host).await,
        Endpoint::Events => events(&shared),
        Endpoint::Other => other(request.uri().path()),
    })
}

/// agentapi's `--allowed-hosts` check: the Host header's hostname (port ignored) must be listed,
/// unless `*` is. `Err` carries the list for the error text.
fn host_allowed(allowed: &[String], host: &str) -> Result<(), String> {
    if allowed.iter().any(|h| h == "*") {
        return Ok(());
    }
    let hostname = match url::Url::parse(&format!("http://{host}")) {
        Ok(url) => url.host_str().map(str::to_ascii_lowercase),
        Err(_) => None,
    };
    let listed = hostname.is_some_and(|name| allowed.iter().any(|h| h.eq_ignore_ascii_case(&name)));
    if listed {
        Ok(())
    } else {
        Err(allowed.join(", "))
    }
}

/// huma's `$schema` value: http for localhost and 127.0.0.1 hosts, https otherwise.
fn schema_url(host: &str, schema: &str) -> String {
    let scheme = if host.starts_with("localhost") || host.starts_with("127.0.0.1") {
        "http"
    } else {
        "https"
    };
    format!("{scheme}://{host}/schemas/{schema}.json")
}

/// A huma JSON response: `$schema` first, then the fields, with the `Link` header to the schema.
fn json_response(
    status: StatusCode,
    host: &str,
    schema: &str,
    mut fields: Value,
) -> Response<Body> {
    let mut body = serde_json::Map::new();
    body.insert("$schema".into(), Value::String(schema_url(host, schema)));
    if let Value::Object(fields) = fields.take() {
        body.extend(fields);
    }
    let content_type = if schema == "ErrorModel" {
        "application/problem+json"
    } else {
        "application/json"
    };
    let mut bytes = serde_json::to_vec(&Value::Object(body)).unwrap_or_default();
    bytes.push(b'\n');
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, content_type)
        .header(
            "link",
            format!("</schemas/{schema}.json>; rel=\"describedBy\""),
        )
        .body(full(bytes))
        .unwrap_or_else(|_| Response::new(full(Vec::new())))
}

/// huma's ErrorModel (RFC 9457 problem details) with its `errors` details.
fn problem(status: StatusCode, host: &str, detail: &str, errors: Vec<Value>) -> Response<Body> {
    let mut fields = json!({
        "title": status.canonical_reason().unwrap_or(""),
        "status": status.as_u16(),
        "detail": detail,
    });
    if !errors.is_empty() {
        fields["errors"] = Value::Array(errors);
    }
    json_response(status, host, "ErrorModel", fields)
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "text/plain; charset=utf-8")
        .header("x-content-type-options", "nosniff")
        .body(full(body.into_bytes()))
        .unwrap_or_else(|_| Response::new(full(Vec::new())))
}

fn full(bytes: Vec<u8>) -> Body {
    Full::new(Bytes::from(bytes)).boxed_unsync()
}

fn status(shared: &Shared, host: &str) -> Response<Body> {
    let state = shared.state();
    json_response(
        StatusCode::OK,
        host,
        "StatusResponseBody",
        json!({
            "status": state.status.as_str(),
            "agent_type": state.script.agent_type,
            "transport": "pty",
        }),
    )
}

fn messages(shared: &Shared, host: &str) -> Response<Body> {
    let messages: Vec<Value> = shared
        .state()
        .messages
        .iter()
        .map(|m| {
            json!({
                "id": m.id,
                "content": m.content(),
                "role": m.role.as_str(),
                "time": rfc3339(m.time),
            })
        })
        .collect();
    json_response(
        StatusCode::OK,
        host,
        "MessagesResponseBody",
        json!({ "messages": messages }),
    )
}

/// The request body, validated like huma validates `MessageRequestBody` against its schema.
fn parse_message_request(bytes: &[u8]) -> Result<(String, String), (StatusCode, Vec<Value>)> {
    let parsed: Value = serde_json::from_slice(bytes).map_err(|e| {
        let detail = json!({
            "message": e.to_string(),
            "location": "body",
            "value": String::from_utf8_lossy(bytes),
        });
        (StatusCode::BAD_REQUEST, vec![detail])
    })?;
    let unprocessable = |errors| (StatusCode::UNPROCESSABLE_ENTITY, errors);
    let Value::Object(fields) = &parsed else {
        return Err(unprocessable(vec![json!({
            "message": "expected object", "location": "body", "value": parsed,
        })]));
    };
    let mut errors = Vec::new();
    for name in ["content", "type"] {
        if !fields.contains_key(name) {
            errors.push(json!({
                "message": format!("expected required property {name} to be present"),
                "location": "body",
                "value": parsed,
            }));
        }
    }
    for (name, value) in fields {
        match (name.as_str(), value) {
            ("$schema" | "content", Value::String(_)) => {}
            ("type", Value::String(t)) if t == "user" || t == "raw" => {}
            ("type", Value::String(_)) => errors.push(json!({
                "message": "expected value to be one of \"raw, user\"",
                "location": "body.type",
                "value": value,
            })),
            ("$schema" | "content" | "type", _) => errors.push(json!({
                "message": "expected string",
                "location": format!("body.{name}"),
                "value": value,
            })),
            _ => errors.push(json!({
                "message": "unexpected property",
                "location": format!("body.{name}"),
                "value": value,
            })),
        }
    }
    if !errors.is_empty() {
        return Err(unprocessable(errors));
    }
    let field = |name: &str| fields.get(name).and_then(Value::as_str).unwrap_or_default();
    Ok((field("content").to_string(), field("type").to_string()))
}

async fn post_message(shared: &Shared, request: Request<Incoming>, host: &str) -> Response<Body> {
    let bytes = match http_body_util::Limited::new(request.into_body(), MAX_BODY)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            return problem(
                StatusCode::BAD_REQUEST,
                host,
                "validation failed",
                vec![json!({ "message": e.to_string(), "location": "body" })],
            );
        }
    };
    let (content, kind) = match parse_message_request(&bytes) {
        Ok(parsed) => parsed,
        Err((status, errors)) => return problem(status, host, "validation failed", errors),
    };
    if kind == "user" {
        let (accepted, delay) = {
            let mut state = shared.state();
            (state.post_user(&content), state.script.post_delay)
        };
        match accepted {
            Ok(()) => {
                shared.wake();
                tokio::time::sleep(delay).await;
            }
            Err(refusal) => return send_failed(host, &refusal),
        }
    }
    json_response(
        StatusCode::OK,
        host,
        "MessageResponseBody",
        json!({ "ok": true }),
    )
}

/// agentapi wraps the conversation's error (`xerrors.Errorf("failed to send message: %w")`),
/// which is no huma StatusError, so huma answers 500 "unexpected error occurred" with the error
/// text as the only detail.
fn send_failed(host: &str, refusal: &PostRefusal) -> Response<Body> {
    problem(
        StatusCode::INTERNAL_SERVER_ERROR,
        host,
        "unexpected error occurred",
        vec![json!({ "message": format!("failed to send message: {}", refusal.message()) })],
    )
}

fn events(shared: &Arc<Shared>) -> Response<Body> {
    let receiver = shared.state().subscribe();
    let counter = shared.clone();
    let stream = futures::stream::unfold(receiver, move |mut receiver| {
        let counter = counter.clone();
        async move {
            let bytes = receiver.recv().await?;
            counter.events_sent.fetch_add(1, Ordering::Relaxed);
            Some((Ok::<_, Infallible>(Frame::data(bytes)), receiver))
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        // agentapi's sseMiddleware headers, then huma's content type.
        .header("cache-control", "no-cache, no-store, must-revalidate")
        .header("pragma", "no-cache")
        .header("expires", "0")
        .header("x-accel-buffering", "no")
        .header("x-proxy-buffering", "no")
        .header(CONTENT_TYPE, "text/event-stream")
        .body(StreamBody::new(stream).boxed_unsync())
        .unwrap_or_else(|_| Response::new(full(Vec::new())))
}

/// chi's answers outside the registered operations.
fn other(path: &str) -> Response<Body> {
    match path {
        "/status" | "/messages" | "/message" | "/events" => Response::builder()
            .status(StatusCode::METHOD_NOT_ALLOWED)
            .body(full(Vec::new()))
            .unwrap_or_else(|_| Response::new(full(Vec::new()))),
        _ => text(StatusCode::NOT_FOUND, "404 page not found\n".to_string()),
    }
}
