//! A client of agentapi (github.com/coder/agentapi), the HTTP API in front of the coding agent
//! in a session pod: `GET /status`, `GET /messages`, `POST /message` and `GET /events`
//! (server-sent events). Shapes follow agentapi's published OpenAPI description.
//!
//! Plain HTTP to the pod IP (the NetworkPolicy admits the operator's pods). Connects and
//! requests take a permit of one semaphore (`--agent-concurrency`) until the response headers
//! arrived; bodies and established event streams hold none, so a slow agent cannot keep other
//! sessions' requests waiting. The agent is a program the session's user controls, so what it
//! answers is bounded ([`super::limits`]): every request has one deadline for connect,
//! headers and the whole body, counted from its permit; bodies, messages,
//! lines and events have caps; what is buffered is counted against the process-wide
//! [`MemoryBudget`]; the event stream is read at a bounded rate and an event must be complete
//! within the request deadline once begun. Message contents are user data: they never reach a
//! log line from here.

use super::limits::{AgentLimits, ByteRate, Held, MemoryBudget, OverBudget, human_bytes};
use bytes::Bytes;
use ccplant_api::conditions::reasons;
use chrono::{DateTime, Utc};
use futures::Stream;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use std::cell::Cell;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::Instant;

pub use super::limits::{POST_TIMEOUT, REQUEST_TIMEOUT};

/// `AgentReachable` reason: the agent answered more than the operator reads from one agent
/// (messages, body bytes, line or event length).
pub const RESPONSE_TOO_LARGE: &str = "ResponseTooLarge";
/// `AgentReachable` reason: the memory the operator sets aside for agent answers, shared by
/// every session, was in use; the agent is read again at its next attempt.
pub const BUDGET_EXHAUSTED: &str = "BudgetExhausted";

/// TCP keepalive of the connections: a silently dropped peer (a vanished node) breaks the
/// otherwise quiet event stream within about a minute.
const KEEPALIVE: Duration = Duration::from_secs(30);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_RETRIES: u32 = 3;
/// Deadline of a TCP connect (inside the request's deadline).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// A connection's read buffer, at most: what hyper holds per agent besides the budget (its
/// default is about 400 KB).
const READ_BUFFER: usize = 64 * 1024;
/// Largest answer of `/status`, `POST /message` and of an error (its problem detail).
const MAX_SMALL_BODY: usize = 64 * 1024;
/// Bodies larger than this are parsed off the runtime's worker threads.
const PARSE_INLINE: usize = 1024 * 1024;
/// A stream's line buffer keeps at most this much room beyond 4 times what it holds.
const KEEP_ROOM: usize = 4 * 1024;

/// Why a call to the agent failed; the variant is the `AgentReachable` reason.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot connect to the agent API at {addr}: {detail}")]
    Connect { addr: SocketAddr, detail: String },
    #[error("the agent API at {addr} did not answer within {secs} s")]
    Timeout { addr: SocketAddr, secs: u64 },
    /// The answer began, and did not end within the deadline (a slow drip).
    #[error("the agent API at {addr} did not finish its {path} answer within {secs} s")]
    Unfinished {
        addr: SocketAddr,
        path: &'static str,
        secs: u64,
    },
    /// An event of the stream began, and did not end within the deadline.
    #[error("the agent API at {addr} left an event of its {path} stream unfinished for {secs} s")]
    EventUnfinished {
        addr: SocketAddr,
        path: &'static str,
        secs: u64,
    },
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
    #[error("the agent API at {addr} exceeded the operator's limit on {path}: {what}")]
    TooLarge {
        addr: SocketAddr,
        path: &'static str,
        what: String,
    },
    #[error(
        "the operator's memory for agent answers ({budget}, shared by all sessions) is in use; \
         {path} of the agent API at {addr} is read again at the next attempt"
    )]
    OverBudget {
        addr: SocketAddr,
        path: &'static str,
        budget: String,
    },
}

impl AgentError {
    /// CamelCase reason for the `AgentReachable` condition.
    pub fn reason(&self) -> &'static str {
        match self {
            AgentError::Connect { .. } => reasons::CONNECTION_FAILED,
            AgentError::Timeout { .. }
            | AgentError::Unfinished { .. }
            | AgentError::EventUnfinished { .. } => reasons::TIMEOUT,
            AgentError::Status { .. } => reasons::HTTP_ERROR,
            AgentError::Protocol { .. } => reasons::PROTOCOL_ERROR,
            AgentError::TooLarge { .. } => RESPONSE_TOO_LARGE,
            AgentError::OverBudget { .. } => BUDGET_EXHAUSTED,
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
            AgentError::Timeout { .. }
                | AgentError::Unfinished { .. }
                | AgentError::Protocol { .. }
        ) || matches!(self, AgentError::Status { status, .. } if *status >= 500)
    }

    /// The answer was more than the operator reads (a cap, or the shared budget): reported at
    /// once, never retried on the same connection.
    pub fn is_over_limit(&self) -> bool {
        matches!(
            self,
            AgentError::TooLarge { .. } | AgentError::OverBudget { .. }
        )
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

/// agentapi keeps a user message as sent, modulo surrounding whitespace: messages compare by
/// a hash of their trimmed text.
pub fn message_hash(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.trim().hash(&mut h);
    h.finish()
}

/// What the operator keeps of `GET /messages`, read entry by entry: not the conversation, only
/// what counting and `status.agent` need.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Conversation {
    /// Every user message: its id and [`message_hash`], in the answer's order.
    pub user: Vec<(i64, u64)>,
    /// The agent message with the highest id (the last of equal ids).
    pub last_agent: Option<Message>,
    /// The newest message time.
    pub latest: Option<DateTime<Utc>>,
    /// Messages in the answer.
    pub entries: usize,
}

impl Conversation {
    fn add(&mut self, m: Message) {
        self.entries += 1;
        if let Some(t) = m.time {
            self.latest = Some(self.latest.map_or(t, |l| l.max(t)));
        }
        match m.role {
            Role::User => self.user.push((m.id, message_hash(&m.content))),
            Role::Agent => {
                if self.last_agent.as_ref().is_none_or(|a| m.id >= a.id) {
                    self.last_agent = Some(m);
                }
            }
        }
    }
}

/// Why a `/messages` body was not read.
#[derive(Debug, PartialEq, Eq)]
pub enum ConversationError {
    /// More entries than the cap.
    TooMany,
    /// Not agentapi's shape.
    Json(String),
}

/// Reads a `/messages` body (`{"messages": [...]}`, other fields ignored) entry by entry,
/// refusing more than `max_entries` entries: a message's text is held only while it is looked
/// at (the agent's newest message excepted).
pub fn parse_conversation(
    body: &[u8],
    max_entries: usize,
) -> Result<Conversation, ConversationError> {
    let too_many = Cell::new(false);
    let mut de = serde_json::Deserializer::from_slice(body);
    let read = de::Deserializer::deserialize_map(
        &mut de,
        BodyVisitor {
            max: max_entries,
            too_many: &too_many,
        },
    )
    .and_then(|c| de.end().map(|()| c));
    match read {
        Ok(c) => Ok(c),
        Err(_) if too_many.get() => Err(ConversationError::TooMany),
        Err(e) => Err(ConversationError::Json(e.to_string())),
    }
}

#[derive(Clone, Copy)]
struct BodyVisitor<'a> {
    max: usize,
    too_many: &'a Cell<bool>,
}

impl<'de> Visitor<'de> for BodyVisitor<'_> {
    type Value = Conversation;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object with `messages`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Conversation, A::Error> {
        let mut found = None;
        while let Some(key) = map.next_key::<String>()? {
            if key == "messages" {
                found = Some(map.next_value_seed(self)?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        found.ok_or_else(|| de::Error::missing_field("messages"))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Conversation, A::Error> {
        let mut c = Conversation::default();
        while let Some(m) = seq.next_element::<Message>()? {
            if c.entries == self.max {
                self.too_many.set(true);
                return Err(de::Error::custom("too many messages"));
            }
            c.add(m);
        }
        Ok(c)
    }
}

/// The `messages` array.
impl<'de> DeserializeSeed<'de> for BodyVisitor<'_> {
    type Value = Conversation;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Conversation, D::Error> {
        d.deserialize_seq(self)
    }
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

/// Clone-cheap agentapi client (one connection pool, one set of permits, one budget, for all
/// sessions).
#[derive(Clone, Debug)]
pub struct AgentApi {
    client: Client<HttpConnector, Full<Bytes>>,
    permits: Arc<Semaphore>,
    limits: AgentLimits,
    budget: MemoryBudget,
}

/// A body read whole, and the budget it holds until dropped.
struct Body {
    bytes: Vec<u8>,
    _held: Held,
}

impl AgentApi {
    /// At most `concurrency` connects and requests waiting for their headers at once; these
    /// limits and this budget.
    pub fn new(concurrency: usize, limits: AgentLimits, budget: MemoryBudget) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        connector.set_keepalive(Some(KEEPALIVE));
        connector.set_keepalive_interval(Some(KEEPALIVE_INTERVAL));
        connector.set_keepalive_retries(Some(KEEPALIVE_RETRIES));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(2)
            .http1_max_buf_size(READ_BUFFER)
            .build(connector);
        Self {
            client,
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            limits,
            budget,
        }
    }

    pub fn limits(&self) -> &AgentLimits {
        &self.limits
    }

    pub fn budget(&self) -> &MemoryBudget {
        &self.budget
    }

    /// Takes a permit, then sends the request and waits for the response headers within
    /// `timeout`; returns the deadline (of the whole answer) with the response. An error status
    /// is read (its problem detail) by the same deadline.
    async fn response(
        &self,
        addr: SocketAddr,
        method: http::Method,
        path: &'static str,
        body: Option<Vec<u8>>,
        accept: &'static str,
        timeout: Duration,
    ) -> Result<(http::Response<hyper::body::Incoming>, Instant, u64), AgentError> {
        // Only the agent's own time counts against its deadline, not the wait for a permit.
        let permit = self.permits.acquire().await;
        let (deadline, secs) = deadline(timeout);
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
        let resp = tokio::time::timeout_at(deadline, self.client.request(req))
            .await
            .map_err(|_| AgentError::Timeout { addr, secs })?
            .map_err(|e| AgentError::Connect {
                addr,
                detail: connect_detail(&e),
            })?;
        drop(permit);
        if !resp.status().is_success() {
            let status = resp.status().as_u16();
            let body = self
                .read_body(addr, path, resp, MAX_SMALL_BODY, deadline, secs)
                .await
                .map(|b| b.bytes)
                .unwrap_or_default();
            return Err(AgentError::Status {
                addr,
                path,
                status,
                detail: problem_detail(&body),
            });
        }
        Ok((resp, deadline, secs))
    }

    /// Reads a whole body of at most `max` bytes by `deadline`, holding its bytes of the
    /// budget as they arrive (all of them at once when the length is announced).
    async fn read_body(
        &self,
        addr: SocketAddr,
        path: &'static str,
        resp: http::Response<hyper::body::Incoming>,
        max: usize,
        deadline: Instant,
        secs: u64,
    ) -> Result<Body, AgentError> {
        let too_large = || AgentError::TooLarge {
            addr,
            path,
            what: format!("a body over {}", human_bytes(max)),
        };
        let over = |e: OverBudget| AgentError::OverBudget {
            addr,
            path,
            budget: human_bytes(e.total),
        };
        let mut held = self.budget.hold();
        let mut bytes: Vec<u8> = Vec::new();
        if let Some(len) = content_length(resp.headers()) {
            if len > max {
                return Err(too_large());
            }
            held.resize(len).map_err(over)?;
            bytes.reserve_exact(len);
        }
        let mut body = resp.into_body();
        loop {
            let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
                Err(_) => return Err(AgentError::Unfinished { addr, path, secs }),
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    return Err(AgentError::Protocol {
                        addr,
                        path,
                        detail: format!("reading the body: {e}"),
                    });
                }
                Ok(Some(Ok(frame))) => frame,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let len = bytes.len() + data.len();
            if len > max {
                return Err(too_large());
            }
            if len > bytes.capacity() {
                let capacity = len.max(bytes.capacity().saturating_mul(2)).min(max);
                held.resize(capacity).map_err(over)?;
                bytes.reserve_exact(capacity - bytes.len());
            }
            bytes.extend_from_slice(&data);
        }
        Ok(Body { bytes, _held: held })
    }

    /// A small JSON answer of a GET.
    async fn get_small<T: for<'de> Deserialize<'de>>(
        &self,
        addr: SocketAddr,
        path: &'static str,
    ) -> Result<T, AgentError> {
        let (resp, deadline, secs) = self
            .response(
                addr,
                http::Method::GET,
                path,
                None,
                "application/json",
                self.limits.request_timeout,
            )
            .await?;
        let body = self
            .read_body(addr, path, resp, MAX_SMALL_BODY, deadline, secs)
            .await?;
        serde_json::from_slice(&body.bytes).map_err(|e| AgentError::Protocol {
            addr,
            path,
            detail: e.to_string(),
        })
    }

    /// `GET /status`.
    pub async fn status(&self, addr: SocketAddr) -> Result<Status, AgentError> {
        Ok(self.get_small::<StatusBody>(addr, "/status").await?.status)
    }

    /// `GET /messages`: what the operator keeps of the conversation so far.
    pub async fn messages(&self, addr: SocketAddr) -> Result<Conversation, AgentError> {
        let path = "/messages";
        let (resp, deadline, secs) = self
            .response(
                addr,
                http::Method::GET,
                path,
                None,
                "application/json",
                self.limits.request_timeout,
            )
            .await?;
        let body = self
            .read_body(addr, path, resp, self.limits.max_body, deadline, secs)
            .await?;
        let max = self.limits.max_messages;
        let parsed = if body.bytes.len() > PARSE_INLINE {
            tokio::task::spawn_blocking(move || parse_conversation(&body.bytes, max))
                .await
                .map_err(|e| AgentError::Protocol {
                    addr,
                    path,
                    detail: format!("reading the body: {e}"),
                })?
        } else {
            parse_conversation(&body.bytes, max)
        };
        parsed.map_err(|e| match e {
            ConversationError::TooMany => AgentError::TooLarge {
                addr,
                path,
                what: format!("more than {max} messages"),
            },
            ConversationError::Json(detail) => AgentError::Protocol { addr, path, detail },
        })
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
        let (resp, deadline, secs) = self
            .response(
                addr,
                http::Method::POST,
                path,
                Some(body),
                "application/json",
                self.limits.post_timeout,
            )
            .await?;
        let body = self
            .read_body(addr, path, resp, MAX_SMALL_BODY, deadline, secs)
            .await?;
        let parsed: MessageResponse =
            serde_json::from_slice(&body.bytes).map_err(|e| AgentError::Protocol {
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
    /// live ones. The stream ends when the connection does, or with the error of an event
    /// over the limits.
    pub async fn events(
        &self,
        addr: SocketAddr,
    ) -> Result<impl Stream<Item = Result<AgentEvent, AgentError>> + Send + use<>, AgentError> {
        let path = "/events";
        let (resp, _, _) = self
            .response(
                addr,
                http::Method::GET,
                path,
                None,
                "text/event-stream",
                self.limits.request_timeout,
            )
            .await?;
        let limits = self.limits;
        let started = Instant::now();
        let stream = EventStream {
            addr,
            body: resp.into_body(),
            parser: SseParser::new(limits.max_event),
            ready: VecDeque::new(),
            held: self.budget.hold(),
            rate: ByteRate::new(limits.stream_rate, limits.stream_burst, 0.0),
            started,
            pause_until: None,
            unfinished_since: None,
            limits,
        };
        Ok(futures::stream::unfold(Some(stream), |stream| async move {
            let mut stream = stream?;
            match stream.next().await? {
                Ok(ev) => Some((Ok(ev), Some(stream))),
                // An error ends the stream.
                Err(e) => Some((Err(e), None)),
            }
        }))
    }
}

/// The deadline of a request started now, and its length in seconds, rounded up (for messages).
fn deadline(timeout: Duration) -> (Instant, u64) {
    (Instant::now() + timeout, whole_secs(timeout))
}

fn whole_secs(d: Duration) -> u64 {
    u64::try_from(d.as_millis().div_ceil(1000)).unwrap_or(u64::MAX)
}

fn content_length(headers: &http::HeaderMap) -> Option<usize> {
    headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The state of one event stream (lives inside the stream, so the worker may stop polling it
/// at any point and go on later).
struct EventStream {
    addr: SocketAddr,
    body: hyper::body::Incoming,
    parser: SseParser,
    ready: VecDeque<AgentEvent>,
    /// What the parser buffers, of the budget.
    held: Held,
    rate: ByteRate,
    started: Instant,
    /// Read on only from then (over the rate).
    pause_until: Option<Instant>,
    /// Since when an event is unfinished (moved later by the rate's pauses).
    unfinished_since: Option<Instant>,
    limits: AgentLimits,
}

impl EventStream {
    const PATH: &'static str = "/events";

    async fn next(&mut self) -> Option<Result<AgentEvent, AgentError>> {
        let addr = self.addr;
        let path = Self::PATH;
        loop {
            if let Some(ev) = self.ready.pop_front() {
                return Some(Ok(ev));
            }
            if let Some(at) = self.pause_until.take() {
                tokio::time::sleep_until(at).await;
            }
            let frame = match self.unfinished_since {
                Some(since) => {
                    let due = since + self.limits.request_timeout;
                    match tokio::time::timeout_at(due, self.body.frame()).await {
                        Ok(frame) => frame,
                        Err(_) => {
                            return Some(Err(AgentError::EventUnfinished {
                                addr,
                                path,
                                secs: whole_secs(self.limits.request_timeout),
                            }));
                        }
                    }
                }
                None => self.body.frame().await,
            };
            let data = match frame? {
                Err(e) => {
                    return Some(Err(AgentError::Connect {
                        addr,
                        detail: format!("event stream broke: {e}"),
                    }));
                }
                Ok(frame) => match frame.into_data() {
                    Ok(data) => data,
                    Err(_) => continue,
                },
            };
            let events = match self.parser.push(&data) {
                Ok(events) => events,
                Err(what) => return Some(Err(AgentError::TooLarge { addr, path, what })),
            };
            if let Err(e) = self.held.resize(self.parser.held_bytes()) {
                return Some(Err(AgentError::OverBudget {
                    addr,
                    path,
                    budget: human_bytes(e.total),
                }));
            }
            self.ready.extend(events.into_iter().map(decode_event));
            let now = Instant::now();
            let pause = self
                .rate
                .take(data.len(), (now - self.started).as_secs_f64());
            self.unfinished_since = self
                .parser
                .pending()
                .then(|| self.unfinished_since.unwrap_or(now) + pause);
            if !pause.is_zero() {
                self.pause_until = Some(now + pause);
            }
        }
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

/// The capacity a buffer holding `len` bytes in `capacity` should shrink to, if any: nothing
/// when empty; else at most 4 times its content (a growing line, which doubles its capacity,
/// is never shrunk), with [`KEEP_ROOM`] of slack for small ones.
fn shrunk_capacity(len: usize, capacity: usize) -> Option<usize> {
    if len == 0 {
        return (capacity > 0).then_some(0);
    }
    (capacity > KEEP_ROOM && capacity > len.saturating_mul(4)).then(|| len.saturating_mul(2))
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
/// lines starting with `:` are comments; `\n`, `\r\n` and `\r` all end a line. No line and no
/// event may be longer than `max_event` bytes: what it buffers is bounded by that.
#[derive(Debug)]
pub struct SseParser {
    max_event: usize,
    /// The unfinished line (and, rarely, a '\r' that may start a "\r\n").
    buf: Vec<u8>,
    /// Bytes of `buf` already scanned for a line end.
    scanned: usize,
    current: SseEvent,
    has_data: bool,
}

impl SseParser {
    pub fn new(max_event: usize) -> Self {
        Self {
            max_event,
            buf: Vec::new(),
            scanned: 0,
            current: SseEvent::default(),
            has_data: false,
        }
    }

    /// Feeds bytes; returns the events they complete, or what was over the limit.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, String> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        let mut start = 0;
        let mut scan = self.scanned;
        loop {
            let Some(found) = self.buf[scan..]
                .iter()
                .position(|b| *b == b'\n' || *b == b'\r')
            else {
                scan = self.buf.len();
                break;
            };
            let end = scan + found;
            // A '\r' at the very end may be the first half of "\r\n": wait for more.
            if self.buf[end] == b'\r' && end + 1 == self.buf.len() {
                scan = end;
                break;
            }
            let skip = if self.buf[end] == b'\r' && self.buf.get(end + 1) == Some(&b'\n') {
                2
            } else {
                1
            };
            if end - start > self.max_event {
                return Err(self.line_too_long());
            }
            let line = String::from_utf8_lossy(&self.buf[start..end]).into_owned();
            self.line(&line, &mut out)?;
            start = end + skip;
            scan = start;
        }
        self.buf.drain(..start);
        self.scanned = scan - start;
        if self.buf.len() > self.max_event {
            return Err(self.line_too_long());
        }
        if self.buf.len() + self.current.data.len() > self.max_event {
            return Err(self.event_too_large());
        }
        // A line once seen does not keep its buffer (nor its share of the budget): an idle
        // stream holds nothing.
        if let Some(capacity) = shrunk_capacity(self.buf.len(), self.buf.capacity()) {
            self.buf.shrink_to(capacity);
        }
        Ok(out)
    }

    /// Whether an event is begun and not finished (a partial line, or lines without the blank
    /// line that ends them).
    pub fn pending(&self) -> bool {
        !self.buf.is_empty() || self.has_data || !self.current.event.is_empty()
    }

    /// Bytes the parser holds.
    pub fn held_bytes(&self) -> usize {
        self.buf.capacity() + self.current.data.capacity() + self.current.event.capacity()
    }

    fn line_too_long(&self) -> String {
        format!("a line over {}", human_bytes(self.max_event))
    }

    fn event_too_large(&self) -> String {
        format!("an event over {}", human_bytes(self.max_event))
    }

    fn line(&mut self, line: &str, out: &mut Vec<SseEvent>) -> Result<(), String> {
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
            return Ok(());
        }
        if line.starts_with(':') {
            return Ok(());
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.current.event = value.to_owned(),
            "data" => {
                if self.current.data.len() + value.len() + 1 > self.max_event {
                    return Err(self.event_too_large());
                }
                if self.has_data {
                    self.current.data.push('\n');
                }
                self.current.data.push_str(value);
                self.has_data = true;
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const KIB: usize = 1024;

    #[test]
    fn sse_events_split_across_chunks_and_line_endings() {
        let mut p = SseParser::new(KIB);
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
        assert!(!p.pending());
    }

    #[test]
    fn an_event_without_data_is_not_dispatched() {
        let mut p = SseParser::new(KIB);
        assert!(p.push(b"event: x\n\n").unwrap().is_empty());
    }

    #[test]
    fn lines_and_events_over_the_cap_are_refused() {
        let line = |n: usize| "x".repeat(n);
        // (chunks fed, cap, events dispatched or what was over the cap)
        let cases: Vec<(Vec<String>, usize, Result<usize, &str>)> = vec![
            // An endless line, in pieces.
            (vec![line(600), line(600)], KIB, Err("a line over 1 KiB")),
            // The same length, but a comment line that ends: nothing held.
            (vec![format!(":{}\n", line(1000))], KIB, Ok(0)),
            // A complete line over the cap in one chunk.
            (
                vec![format!(":{}\n\n", line(1100))],
                KIB,
                Err("a line over 1 KiB"),
            ),
            // Data lines without the blank line that ends the event.
            (
                vec![
                    format!("data: {}\n", line(600)),
                    format!("data: {}\n", line(600)),
                ],
                KIB,
                Err("an event over 1 KiB"),
            ),
            // Data so far plus the unfinished line.
            (
                vec![format!("data: {}\ndata: {}", line(600), line(500))],
                KIB,
                Err("an event over 1 KiB"),
            ),
            // Many small events, far more than the cap in all.
            (
                (0..100)
                    .map(|_| format!("data: {}\n\n", line(100)))
                    .collect(),
                KIB,
                Ok(100),
            ),
            // An event of exactly the cap.
            (vec![format!("data: {}\n\n", line(KIB - 6))], KIB, Ok(1)),
        ];
        for (i, (chunks, cap, expected)) in cases.into_iter().enumerate() {
            let mut p = SseParser::new(cap);
            let mut got = Ok(0);
            for chunk in &chunks {
                match p.push(chunk.as_bytes()) {
                    Ok(events) => got = got.map(|n| n + events.len()),
                    Err(what) => {
                        got = Err(what);
                        break;
                    }
                }
            }
            assert_eq!(
                got.as_ref().map_err(String::as_str),
                expected.as_ref().map_err(|e| *e),
                "case {i}"
            );
        }
    }

    #[test]
    fn an_event_is_pending_from_its_first_byte_to_its_blank_line() {
        for (input, pending) in [
            ("", false),
            ("da", true),
            ("data: x\n", true),
            ("event: a\n", true),
            ("data: x\n\n", false),
            (": keepalive\n", false),
            ("data: x\r", true),
            ("data: x\r\n\r\n", false),
        ] {
            let mut p = SseParser::new(KIB);
            p.push(input.as_bytes()).unwrap();
            assert_eq!(p.pending(), pending, "{input:?}");
        }
    }

    #[test]
    fn a_long_line_gives_its_buffer_back_once_finished() {
        let mut p = SseParser::new(4 * 1024 * KIB);
        for _ in 0..32 {
            p.push(&[b'x'; 64 * KIB]).unwrap();
        }
        assert!(p.held_bytes() >= 2 * 1024 * KIB, "{}", p.held_bytes());
        p.push(b"\n").unwrap();
        assert_eq!(p.held_bytes(), 0);
        p.push(b"data: x").unwrap();
        assert!(
            (7..=KEEP_ROOM).contains(&p.held_bytes()),
            "{}",
            p.held_bytes()
        );
    }

    #[test]
    fn buffers_shrink_when_empty_or_mostly_empty_and_never_while_a_line_grows() {
        // (len, capacity, shrink to)
        let cases = [
            (0, 0, None),
            (0, 100, Some(0)),
            (10, KEEP_ROOM, None),
            (10, KEEP_ROOM + 1, Some(20)),
            (1000, 4000, None),
            (2000, 4 * 2000 + KEEP_ROOM, Some(4000)),
            // A growing line: its capacity is at most twice its length.
            (1 << 20, 2 << 20, None),
        ];
        for (len, capacity, expected) in cases {
            assert_eq!(
                shrunk_capacity(len, capacity),
                expected,
                "{len} in {capacity}"
            );
        }
    }

    #[test]
    fn conversations_are_read_entry_by_entry_within_the_cap() {
        let entry = |id: i64, role: &str, text: &str, time: &str| {
            format!(r#"{{"id":{id},"content":"{text}","role":"{role}","time":"{time}"}}"#)
        };
        let t1 = "2025-01-01T00:00:00Z";
        let t2 = "2025-01-01T00:00:05Z";
        let body = |entries: &[String]| {
            format!(
                r#"{{"$schema":"http://x/schemas/MessagesResponseBody.json","messages":[{}]}}"#,
                entries.join(",")
            )
        };
        let three = [
            entry(0, "agent", "Welcome", t1),
            entry(1, "user", "  fix it\\n", t2),
            entry(2, "agent", "done", "not a time"),
        ];
        let got = parse_conversation(body(&three).as_bytes(), 3).unwrap();
        assert_eq!(
            got,
            Conversation {
                user: vec![(1, message_hash("fix it"))],
                last_agent: Some(Message {
                    id: 2,
                    content: "done".into(),
                    role: Role::Agent,
                    time: None
                }),
                latest: DateTime::from_timestamp(1_735_689_605, 0),
                entries: 3,
            }
        );
        // (body, cap, entries read or why not)
        let cases: [(String, usize, Result<usize, &str>); 6] = [
            (body(&three), 2, Err("too many")),
            (body(&[]), 0, Ok(0)),
            (body(&[entry(0, "user", "a", t1)]), 0, Err("too many")),
            (r#"{"messages":[{"id":1}]}"#.to_string(), 5, Err("json")),
            (r#"{"other":1}"#.to_string(), 5, Err("json")),
            (format!("{} trailing", body(&[])), 5, Err("json")),
        ];
        for (i, (body, cap, expected)) in cases.into_iter().enumerate() {
            let got = parse_conversation(body.as_bytes(), cap)
                .map(|c| c.entries)
                .map_err(|e| match e {
                    ConversationError::TooMany => "too many",
                    ConversationError::Json(_) => "json",
                });
            assert_eq!(got, expected, "case {i}: {body}");
        }
        // The agent's newest message is the one with the highest id, whatever the order.
        let got = parse_conversation(
            body(&[entry(5, "agent", "new", t1), entry(3, "agent", "old", t1)]).as_bytes(),
            9,
        )
        .unwrap();
        assert_eq!(got.last_agent.unwrap().content, "new");
    }

    #[test]
    fn over_limit_errors_are_reported_with_their_own_reason_and_never_look_delivered() {
        let addr: SocketAddr = "127.0.0.1:3284".parse().unwrap();
        let path = "/messages";
        // (error, reason, message, ambiguous, over the limit)
        let cases = [
            (
                AgentError::TooLarge {
                    addr,
                    path,
                    what: "more than 10000 messages".into(),
                },
                "ResponseTooLarge",
                "the agent API at 127.0.0.1:3284 exceeded the operator's limit on /messages: more than 10000 messages",
                false,
                true,
            ),
            (
                AgentError::OverBudget {
                    addr,
                    path,
                    budget: "64 MiB".into(),
                },
                "BudgetExhausted",
                "the operator's memory for agent answers (64 MiB, shared by all sessions) is in use; /messages of the agent API at 127.0.0.1:3284 is read again at the next attempt",
                false,
                true,
            ),
            (
                AgentError::Unfinished {
                    addr,
                    path,
                    secs: 10,
                },
                "Timeout",
                "the agent API at 127.0.0.1:3284 did not finish its /messages answer within 10 s",
                true,
                false,
            ),
            (
                AgentError::EventUnfinished {
                    addr,
                    path: "/events",
                    secs: 10,
                },
                "Timeout",
                "the agent API at 127.0.0.1:3284 left an event of its /events stream unfinished for 10 s",
                false,
                false,
            ),
            (
                AgentError::Timeout { addr, secs: 10 },
                "Timeout",
                "the agent API at 127.0.0.1:3284 did not answer within 10 s",
                true,
                false,
            ),
        ];
        for (e, reason, message, ambiguous, over) in cases {
            assert_eq!(e.reason(), reason, "{e:?}");
            assert_eq!(e.to_string(), message);
            assert_eq!(e.ambiguous(), ambiguous, "{e:?}");
            assert_eq!(e.is_over_limit(), over, "{e:?}");
        }
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

    /// What a one-connection test server does after it read the request.
    #[derive(Clone)]
    enum Answer {
        /// Writes these bytes, then closes.
        Bytes(Vec<u8>),
        /// Writes the head, then `chunk` every `every`, forever.
        Drip {
            head: Vec<u8>,
            chunk: Vec<u8>,
            every: Duration,
        },
    }

    /// A server on a free loopback port answering every connection with `answer`; the task ends
    /// with the test's runtime.
    async fn server(answer: Answer) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                let answer = answer.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = conn.read(&mut buf).await;
                    match answer {
                        Answer::Bytes(bytes) => {
                            let _ = conn.write_all(&bytes).await;
                        }
                        Answer::Drip { head, chunk, every } => {
                            if conn.write_all(&head).await.is_err() {
                                return;
                            }
                            loop {
                                tokio::time::sleep(every).await;
                                if conn.write_all(&chunk).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        addr
    }

    fn chunked_head(content_type: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ntransfer-encoding: chunked\r\n\r\n"
        )
        .into_bytes()
    }

    fn chunk(data: &[u8]) -> Vec<u8> {
        let mut out = format!("{:x}\r\n", data.len()).into_bytes();
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
        out
    }

    fn api(limits: AgentLimits, budget: usize) -> AgentApi {
        AgentApi::new(4, limits, MemoryBudget::new(budget))
    }

    fn small_limits() -> AgentLimits {
        AgentLimits {
            max_body: 64 * KIB,
            max_messages: 10,
            max_event: 4 * KIB,
            request_timeout: Duration::from_millis(500),
            post_timeout: Duration::from_millis(500),
            ..AgentLimits::default()
        }
    }

    #[tokio::test]
    async fn a_slow_drip_costs_at_most_the_request_deadline() {
        let addr = server(Answer::Drip {
            head: chunked_head("application/json"),
            chunk: chunk(b" "),
            every: Duration::from_millis(50),
        })
        .await;
        let api = api(small_limits(), 1024 * KIB);
        let started = std::time::Instant::now();
        let err = api.messages(addr).await.unwrap_err();
        let took = started.elapsed();
        assert_eq!(
            err.to_string(),
            format!("the agent API at {addr} did not finish its /messages answer within 1 s")
        );
        assert!(
            took >= Duration::from_millis(500) && took < Duration::from_secs(5),
            "{took:?}"
        );
        assert_eq!(api.budget().in_use(), 0, "nothing held after the request");
    }

    #[tokio::test]
    async fn bodies_over_the_cap_are_refused_announced_or_not() {
        let api = api(small_limits(), 1024 * KIB);
        // Announced: refused without reading it.
        let announced = server(Answer::Bytes(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 99999999\r\n\r\n"
                .to_vec(),
        ))
        .await;
        let err = api.messages(announced).await.unwrap_err();
        assert_eq!(err.reason(), RESPONSE_TOO_LARGE);
        assert_eq!(
            err.to_string(),
            format!(
                "the agent API at {announced} exceeded the operator's limit on /messages: a body over 64 KiB"
            )
        );
        // Chunked, never ending: refused at the cap.
        let endless = server(Answer::Drip {
            head: chunked_head("application/json"),
            chunk: chunk(&[b' '; 16 * KIB]),
            every: Duration::from_millis(1),
        })
        .await;
        let err = api.messages(endless).await.unwrap_err();
        assert_eq!(err.reason(), RESPONSE_TOO_LARGE, "{err}");
        // Too many entries.
        let entries: Vec<String> = (0..11)
            .map(|i| format!(r#"{{"id":{i},"content":"x","role":"agent"}}"#))
            .collect();
        let body = format!(r#"{{"messages":[{}]}}"#, entries.join(","));
        let many = server(Answer::Bytes(
            format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
        ))
        .await;
        let err = api.messages(many).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "the agent API at {many} exceeded the operator's limit on /messages: more than 10 messages"
            )
        );
        assert_eq!(api.budget().in_use(), 0);
    }

    #[tokio::test]
    async fn a_body_the_shared_budget_cannot_hold_is_refused() {
        let api = api(small_limits(), 128 * KIB);
        // Another answer holds most of the budget.
        let mut other = api.budget().hold();
        other.resize(100 * KIB).unwrap();
        let body = format!(
            r#"{{"messages":[{{"id":1,"content":"{}","role":"agent"}}]}}"#,
            "x".repeat(60 * KIB)
        );
        let big = server(Answer::Bytes(
            format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
        ))
        .await;
        let err = api.messages(big).await.unwrap_err();
        assert_eq!(err.reason(), BUDGET_EXHAUSTED, "{err}");
        drop(other);
        let got = api.messages(big).await.unwrap();
        assert_eq!(got.entries, 1);
        assert_eq!(api.budget().in_use(), 0);
    }

    #[tokio::test]
    async fn the_event_stream_refuses_an_endless_line_and_an_unfinished_event() {
        use futures::StreamExt;
        let api = api(small_limits(), 1024 * KIB);
        let endless = server(Answer::Drip {
            head: chunked_head("text/event-stream"),
            chunk: chunk(&[b'x'; KIB]),
            every: Duration::from_millis(1),
        })
        .await;
        let mut events = std::pin::pin!(api.events(endless).await.unwrap());
        let err = events.next().await.unwrap().unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "the agent API at {endless} exceeded the operator's limit on /events: a line over 4 KiB"
            )
        );
        assert!(events.next().await.is_none(), "the error ends the stream");

        let mut head = chunked_head("text/event-stream");
        head.extend(chunk(
            b"event: status_change\ndata: {\"status\":\"stable\"}\n\n: ping\n",
        ));
        let dripping = server(Answer::Drip {
            head,
            chunk: chunk(b"d"),
            every: Duration::from_millis(100),
        })
        .await;
        let started = std::time::Instant::now();
        let mut events = std::pin::pin!(api.events(dripping).await.unwrap());
        assert_eq!(
            events.next().await.unwrap().unwrap(),
            AgentEvent::Status(Status::Stable)
        );
        let err = events.next().await.unwrap().unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "the agent API at {dripping} left an event of its /events stream unfinished for 1 s"
            )
        );
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(500) && took < Duration::from_secs(5),
            "{took:?}"
        );
        assert_eq!(api.budget().in_use(), 0);
    }

    #[tokio::test]
    async fn the_event_stream_is_read_at_its_rate() {
        use futures::StreamExt;
        let limits = AgentLimits {
            stream_rate: 64 * KIB,
            stream_burst: 16 * KIB,
            ..small_limits()
        };
        let api = api(limits, 1024 * KIB);
        let event = format!("data: {}\n\n", "x".repeat(1000));
        let mut body = chunked_head("text/event-stream");
        for _ in 0..80 {
            body.extend(chunk(event.as_bytes()));
        }
        body.extend(b"0\r\n\r\n");
        let addr = server(Answer::Bytes(body)).await;
        let started = std::time::Instant::now();
        let events = api.events(addr).await.unwrap();
        let n = events.count().await;
        let took = started.elapsed();
        assert_eq!(n, 80);
        // 80 KB at 64 KiB/s after a 16 KiB burst: about a second.
        assert!(took >= Duration::from_millis(800), "read 80 KB in {took:?}");
    }
}
