//! A client of agentapi (github.com/coder/agentapi), the HTTP API in front of the coding agent
//! in a session pod: `GET /status`, `GET /messages`, `POST /message` and `GET /events`
//! (server-sent events). Shapes follow agentapi's published OpenAPI description.
//!
//! Plain HTTP to the pod IP (the NetworkPolicy admits the operator's namespace); every request
//! has a deadline, the event stream has a connect deadline and then lives as long as the agent.
//! Message contents are user data: they never reach a log line from here.

use bytes::{Bytes, BytesMut};
use ccplant_api::conditions::reasons;
use chrono::{DateTime, Utc};
use futures::Stream;
use http_body_util::{BodyExt, BodyStream, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::Duration;

/// Deadline of one request (and of the event stream's response headers).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline of `POST /message`: agentapi answers once the agent started on the message.
pub const POST_TIMEOUT: Duration = Duration::from_secs(30);
/// TCP keepalive of the connections: a silently dropped peer (a vanished node) breaks the
/// otherwise quiet event stream within about a minute.
const KEEPALIVE: Duration = Duration::from_secs(30);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_RETRIES: u32 = 3;
/// Deadline of a TCP connect.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest response body read (messages of a long conversation).
const MAX_BODY: usize = 16 * 1024 * 1024;
/// Largest single server-sent event.
const MAX_EVENT: usize = 4 * 1024 * 1024;

/// Why a call to the agent failed; the variant is the `AgentReachable` reason.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot connect to the agent API at {addr}: {detail}")]
    Connect { addr: SocketAddr, detail: String },
    #[error("the agent API at {addr} did not answer within {secs} s")]
    Timeout { addr: SocketAddr, secs: u64 },
    #[error("the agent API at {addr} answered {path} with HTTP {status}: {detail}")]
    Status {
        addr: SocketAddr,
        path: &'static str,
        status: u16,
        detail: String,
    },
    #[error("the agent API at {addr} sent an unexpected {path} response: {detail}")]
    Protocol {
        addr: SocketAddr,
        path: &'static str,
        detail: String,
    },
}

impl AgentError {
    /// CamelCase reason for the `AgentReachable` condition.
    pub fn reason(&self) -> &'static str {
        match self {
            AgentError::Connect { .. } => reasons::CONNECTION_FAILED,
            AgentError::Timeout { .. } => reasons::TIMEOUT,
            AgentError::Status { .. } => reasons::HTTP_ERROR,
            AgentError::Protocol { .. } => reasons::PROTOCOL_ERROR,
        }
    }

    /// The agent refused the request (4xx: e.g. a request agentapi's validation rejects).
    /// agentapi answers a user message sent while the agent is not `stable` with a 500, which
    /// counts as [`AgentError::ambiguous`].
    pub fn is_refusal(&self) -> bool {
        matches!(self, AgentError::Status { status, .. } if (400..500).contains(status))
    }

    /// Whether the request may have reached the agent (a POST whose answer was lost).
    pub fn ambiguous(&self) -> bool {
        matches!(
            self,
            AgentError::Timeout { .. } | AgentError::Protocol { .. }
        ) || matches!(self, AgentError::Status { status, .. } if *status >= 500)
    }
}

/// `running` (processing a message) or `stable` (waiting for input).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Running,
    Stable,
}

/// `agent` or `user`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Agent,
    User,
}

#[derive(Debug, Deserialize)]
struct StatusBody {
    status: Status,
}

/// One message of the conversation (`GET /messages`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Message {
    pub id: i64,
    pub content: String,
    pub role: Role,
    /// When the message was written (agentapi's clock); absent or unreadable → `None`.
    #[serde(default, deserialize_with = "lenient_time")]
    pub time: Option<DateTime<Utc>>,
}

/// An RFC 3339 time, or `None` for anything else (the time only refines activity tracking).
fn lenient_time<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    let raw = Option::<String>::deserialize(d)?;
    Ok(raw
        .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
        .map(|t| t.with_timezone(&Utc)))
}

#[derive(Debug, Deserialize)]
struct MessagesBody {
    messages: Vec<Message>,
}

#[derive(Debug, Serialize)]
struct MessageRequest<'a> {
    content: &'a str,
    #[serde(rename = "type")]
    type_: &'static str,
}

#[derive(Debug, Deserialize)]
struct MessageResponse {
    ok: bool,
}

/// An event of `GET /events`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentEvent {
    /// `message_update`: a message was added or (the agent's last one) grew.
    Message(Message),
    /// `status_change`.
    Status(Status),
    /// `agent_error`, or an event this client does not know.
    Other,
}

#[derive(Debug, Deserialize)]
struct MessageUpdate {
    id: i64,
    message: String,
    role: Role,
    #[serde(default, deserialize_with = "lenient_time")]
    time: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize)]
struct StatusChange {
    status: Status,
}

/// Clone-cheap agentapi client (one connection pool for all sessions).
#[derive(Clone, Debug)]
pub struct AgentApi {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Default for AgentApi {
    fn default() -> Self {
        Self::new()
    }
}

impl AgentApi {
    pub fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        connector.set_keepalive(Some(KEEPALIVE));
        connector.set_keepalive_interval(Some(KEEPALIVE_INTERVAL));
        connector.set_keepalive_retries(Some(KEEPALIVE_RETRIES));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(2)
            .build(connector);
        Self { client }
    }

    async fn send(
        &self,
        addr: SocketAddr,
        method: http::Method,
        path: &'static str,
        body: Option<Vec<u8>>,
        accept: &'static str,
        timeout: Duration,
    ) -> Result<http::Response<hyper::body::Incoming>, AgentError> {
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("http://{addr}{path}"))
            .header(http::header::ACCEPT, accept);
        if body.is_some() {
            req = req.header(http::header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| AgentError::Protocol {
                addr,
                path,
                detail: e.to_string(),
            })?;
        let resp = tokio::time::timeout(timeout, self.client.request(req))
            .await
            .map_err(|_| AgentError::Timeout {
                addr,
                secs: timeout.as_secs(),
            })?
            .map_err(|e| AgentError::Connect {
                addr,
                detail: connect_detail(&e),
            })?;
        if !resp.status().is_success() {
            let status = resp.status().as_u16();
            let body = read_body(addr, path, resp).await.unwrap_or_default();
            return Err(AgentError::Status {
                addr,
                path,
                status,
                detail: problem_detail(&body),
            });
        }
        Ok(resp)
    }

    async fn get(
        &self,
        addr: SocketAddr,
        path: &'static str,
        accept: &'static str,
    ) -> Result<http::Response<hyper::body::Incoming>, AgentError> {
        self.send(addr, http::Method::GET, path, None, accept, REQUEST_TIMEOUT)
            .await
    }

    async fn get_json<T: for<'de> Deserialize<'de>>(
        &self,
        addr: SocketAddr,
        path: &'static str,
    ) -> Result<T, AgentError> {
        let resp = self.get(addr, path, "application/json").await?;
        let body = read_body(addr, path, resp).await?;
        serde_json::from_slice(&body).map_err(|e| AgentError::Protocol {
            addr,
            path,
            detail: e.to_string(),
        })
    }

    /// `GET /status`.
    pub async fn status(&self, addr: SocketAddr) -> Result<Status, AgentError> {
        Ok(self.get_json::<StatusBody>(addr, "/status").await?.status)
    }

    /// `GET /messages`: the conversation so far.
    pub async fn messages(&self, addr: SocketAddr) -> Result<Vec<Message>, AgentError> {
        Ok(self
            .get_json::<MessagesBody>(addr, "/messages")
            .await?
            .messages)
    }

    /// `POST /message` with a user message. agentapi answers once the agent started working on
    /// it, and refuses (4xx) while the agent is not waiting for input.
    pub async fn send_user_message(
        &self,
        addr: SocketAddr,
        content: &str,
    ) -> Result<(), AgentError> {
        let path = "/message";
        let body = serde_json::to_vec(&MessageRequest {
            content,
            type_: "user",
        })
        .map_err(|e| AgentError::Protocol {
            addr,
            path,
            detail: e.to_string(),
        })?;
        let resp = self
            .send(
                addr,
                http::Method::POST,
                path,
                Some(body),
                "application/json",
                POST_TIMEOUT,
            )
            .await?;
        let body = read_body(addr, path, resp).await?;
        let parsed: MessageResponse =
            serde_json::from_slice(&body).map_err(|e| AgentError::Protocol {
                addr,
                path,
                detail: e.to_string(),
            })?;
        if parsed.ok {
            Ok(())
        } else {
            Err(AgentError::Protocol {
                addr,
                path,
                detail: "ok: false".into(),
            })
        }
    }

    /// `GET /events`: first the events that rebuild the conversation and the status, then
    /// live ones. The stream ends when the connection does.
    pub async fn events(
        &self,
        addr: SocketAddr,
    ) -> Result<impl Stream<Item = Result<AgentEvent, AgentError>> + Send + use<>, AgentError> {
        let path = "/events";
        let resp = self.get(addr, path, "text/event-stream").await?;
        let body = BodyStream::new(resp.into_body());
        let state = (
            body,
            SseParser::default(),
            std::collections::VecDeque::new(),
        );
        Ok(futures::stream::unfold(
            Some(state),
            move |state| async move {
                let (mut body, mut parser, mut ready) = state?;
                loop {
                    if let Some(ev) = ready.pop_front() {
                        return Some((Ok(ev), Some((body, parser, ready))));
                    }
                    use futures::StreamExt;
                    match body.next().await {
                        None => return None,
                        Some(Err(e)) => {
                            let err = AgentError::Connect {
                                addr,
                                detail: format!("event stream broke: {e}"),
                            };
                            return Some((Err(err), None));
                        }
                        Some(Ok(frame)) => {
                            let Ok(data) = frame.into_data() else {
                                continue;
                            };
                            match parser.push(&data) {
                                Ok(events) => ready.extend(events.into_iter().map(decode_event)),
                                Err(detail) => {
                                    let err = AgentError::Protocol { addr, path, detail };
                                    return Some((Err(err), None));
                                }
                            }
                        }
                    }
                }
            },
        ))
    }
}

async fn read_body(
    addr: SocketAddr,
    path: &'static str,
    resp: http::Response<hyper::body::Incoming>,
) -> Result<Bytes, AgentError> {
    let limited = http_body_util::Limited::new(resp.into_body(), MAX_BODY);
    match tokio::time::timeout(REQUEST_TIMEOUT, limited.collect()).await {
        Err(_) => Err(AgentError::Timeout {
            addr,
            secs: REQUEST_TIMEOUT.as_secs(),
        }),
        Ok(Err(e)) => Err(AgentError::Protocol {
            addr,
            path,
            detail: format!("reading the body: {e}"),
        }),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

/// The innermost cause of a failed request ("Connection refused (os error 111)").
fn connect_detail(e: &hyper_util::client::legacy::Error) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    let mut last = e.to_string();
    while let Some(s) = source {
        last = s.to_string();
        source = s.source();
    }
    last
}

/// `detail` (or `title`) of an RFC 9457 problem body, else the first 200 characters; tokens
/// redacted before the cut (the text goes into a condition and the logs).
fn problem_detail(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Problem {
        detail: Option<String>,
        title: Option<String>,
    }
    if let Ok(p) = serde_json::from_slice::<Problem>(body)
        && let Some(text) = p.detail.or(p.title)
    {
        return crate::redact::tokens(&text).chars().take(200).collect();
    }
    crate::redact::tokens(&String::from_utf8_lossy(body))
        .chars()
        .take(200)
        .collect()
}

/// One server-sent event: its name and data.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SseEvent {
    pub event: String,
    pub data: String,
}

fn decode_event(ev: SseEvent) -> AgentEvent {
    match ev.event.as_str() {
        "message_update" => match serde_json::from_str::<MessageUpdate>(&ev.data) {
            Ok(m) => AgentEvent::Message(Message {
                id: m.id,
                content: m.message,
                role: m.role,
                time: m.time,
            }),
            Err(_) => AgentEvent::Other,
        },
        "status_change" => match serde_json::from_str::<StatusChange>(&ev.data) {
            Ok(s) => AgentEvent::Status(s.status),
            Err(_) => AgentEvent::Other,
        },
        _ => AgentEvent::Other,
    }
}

/// Incremental parser of the `text/event-stream` format (WHATWG HTML §9.2): events end with a
/// blank line; `event:` names it (default `message`), `data:` lines are joined with `\n`,
/// lines starting with `:` are comments; `\n`, `\r\n` and `\r` all end a line.
#[derive(Debug, Default)]
pub struct SseParser {
    buf: BytesMut,
    /// Bytes of `buf` already scanned for a line end.
    scanned: usize,
    current: SseEvent,
    has_data: bool,
}

impl SseParser {
    /// Feeds bytes; returns the events they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, String> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(found) = self.buf[self.scanned..]
            .iter()
            .position(|b| *b == b'\n' || *b == b'\r')
        {
            let end = self.scanned + found;
            // A '\r' at the very end may be the first half of "\r\n": wait for more.
            if self.buf[end] == b'\r' && end + 1 == self.buf.len() {
                break;
            }
            let skip = if self.buf[end] == b'\r' && self.buf.get(end + 1) == Some(&b'\n') {
                2
            } else {
                1
            };
            let line = self.buf.split_to(end + skip);
            self.scanned = 0;
            let line = String::from_utf8_lossy(&line[..end]).into_owned();
            self.line(&line, &mut out);
        }
        // What is left holds no line end, but a final '\r' may be the start of "\r\n".
        self.scanned = self.buf.len() - usize::from(self.buf.last() == Some(&b'\r'));
        if self.buf.len() + self.current.data.len() > MAX_EVENT {
            return Err(format!("an event is larger than {MAX_EVENT} bytes"));
        }
        Ok(out)
    }

    fn line(&mut self, line: &str, out: &mut Vec<SseEvent>) {
        if line.is_empty() {
            let ev = std::mem::take(&mut self.current);
            if self.has_data {
                out.push(SseEvent {
                    event: if ev.event.is_empty() {
                        "message".into()
                    } else {
                        ev.event
                    },
                    data: ev.data,
                });
            }
            self.has_data = false;
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.current.event = value.to_owned(),
            "data" => {
                if self.has_data {
                    self.current.data.push('\n');
                }
                self.current.data.push_str(value);
                self.has_data = true;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_split_across_chunks_and_line_endings() {
        let mut p = SseParser::default();
        let mut all = Vec::new();
        let input = "event: status_change\ndata: {\"status\":\"running\",\"agent_type\":\"claude\"}\n\n: comment\r\nid: 3\r\nevent: message_update\r\ndata: {\"id\":1,\r\ndata: \"message\":\"hi\",\"role\":\"agent\",\"time\":\"2025-01-01T00:00:00Z\"}\r\n\r\ndata: plain\r\r\n";
        for chunk in input.as_bytes().chunks(7) {
            all.extend(p.push(chunk).unwrap());
        }
        assert_eq!(all.len(), 3, "{all:?}");
        assert_eq!(all[0].event, "status_change");
        assert_eq!(
            decode_event(all[0].clone()),
            AgentEvent::Status(Status::Running)
        );
        assert_eq!(all[1].event, "message_update");
        assert_eq!(
            decode_event(all[1].clone()),
            AgentEvent::Message(Message {
                id: 1,
                content: "hi".into(),
                role: Role::Agent,
                time: DateTime::from_timestamp(1_735_689_600, 0),
            })
        );
        assert_eq!(
            all[2],
            SseEvent {
                event: "message".into(),
                data: "plain".into()
            }
        );
        assert_eq!(decode_event(all[2].clone()), AgentEvent::Other);
    }

    #[test]
    fn an_event_without_data_is_not_dispatched() {
        let mut p = SseParser::default();
        assert!(p.push(b"event: x\n\n").unwrap().is_empty());
    }

    #[test]
    fn oversized_events_are_refused() {
        let mut p = SseParser::default();
        let big = vec![b'a'; MAX_EVENT + 1];
        assert!(p.push(&big).is_err());
    }

    #[test]
    fn problem_details_are_read() {
        assert_eq!(
            problem_detail(br#"{"title":"Bad Request","detail":"agent is busy","status":400}"#),
            "agent is busy"
        );
        assert_eq!(problem_detail(b"oops"), "oops");
    }

    #[test]
    fn problem_details_are_redacted_before_the_cut() {
        let token = "ghp_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789";
        let body = format!(r#"{{"detail":"bad credentials {token}"}}"#);
        assert_eq!(
            problem_detail(body.as_bytes()),
            "bad credentials ghp_[REDACTED]"
        );
        // The token straddles the 200-character cut.
        let body = format!("{}{token}", "x".repeat(190));
        let detail = problem_detail(body.as_bytes());
        assert_eq!(detail, format!("{}ghp_[REDAC", "x".repeat(190)));
    }
}
