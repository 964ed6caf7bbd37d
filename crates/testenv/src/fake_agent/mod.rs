//! A stand-in for agentapi (github.com/coder/agentapi), the HTTP API in front of the coding agent
//! in every session pod, and a host that runs one per session pod at the pod's IP.
//!
//! [`FakeAgent`] serves agentapi's published OpenAPI description (v0.12.1): `GET /status`,
//! `GET /messages`, `POST /message` and `GET /events`, with the same bodies, status codes and
//! event framing as agentapi's huma server, including its error answers: a user message while
//! the agent is `running` is a 500 `application/problem+json` whose `errors[0].message` says
//! "failed to send message: message can only be sent when the agent is waiting for user input".
//! What the agent does is scripted ([`Script`]): how long it boots and works on a message, how
//! often its reply changes while it works, and whether it answers at all ([`Mode`]) — or
//! floods the operator with what no agentapi sends ([`Flood`]).
//!
//! [`AgentHost`] watches a namespace's session pods and runs a [`FakeAgent`] at each pod's
//! `status.podIP` and `agent` port, for the lifetime of the pod; with
//! [`crate::TestEnv::global_with_loopback_pods`] those IPs are loopback addresses the test binds.

mod agent;
mod flood;
mod host;
mod http;

pub use agent::FakeAgent;
pub use host::{AgentHost, DEFAULT_AGENT_PORT, SESSION_LABEL};

use std::time::{Duration, SystemTime};

/// How a [`FakeAgent`] behaves. Changed live with [`FakeAgent::set_script`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Script {
    /// `agent_type` in `/status` and `status_change` events.
    pub agent_type: String,
    /// The agent's first message (id 0): its start-up screen.
    pub greeting: String,
    /// How long the agent is `running` after start-up before it is first `stable`.
    pub boot: Duration,
    /// How long the agent stays `running` after each user message ([`Script::FOREVER`]: until
    /// the script changes).
    pub work: Duration,
    /// How many times per second the agent's last message changes while it is `running`, each
    /// change a `message_update` event (0: only at the end of the work).
    pub chatter_per_sec: u32,
    /// How long `POST /message` takes to answer a user message it accepted (agentapi answers
    /// once the agent started working on it).
    pub post_delay: Duration,
    /// Whether the agent answers at all.
    pub mode: Mode,
    /// The `detail` of a [`Mode::Refuse`] answer.
    pub refusal: String,
    /// agentapi's `--allowed-hosts` (`AGENTAPI_ALLOWED_HOSTS`): requests whose Host header names
    /// another host get 400 "Invalid host header. Allowed hosts: …". agentapi's default is
    /// [`AGENTAPI_DEFAULT_ALLOWED_HOSTS`], which refuses requests to a pod IP; the fake's default
    /// is `*` (what a session pod must configure).
    pub allowed_hosts: Vec<String>,
    /// How long every request waits before it is answered (a slow agent; for an event stream,
    /// before its response headers).
    pub answer_delay: Duration,
    /// Counts the requests being answered, over every agent sharing it.
    pub in_flight: InFlight,
}

/// Requests received and not answered yet, over every [`FakeAgent`] whose script shares this
/// gauge (clones share it): `now`, the most at once, and how many in all.
#[derive(Clone, Debug, Default)]
pub struct InFlight(std::sync::Arc<InFlightCounts>);

#[derive(Debug, Default)]
struct InFlightCounts {
    now: std::sync::atomic::AtomicUsize,
    max: std::sync::atomic::AtomicUsize,
    total: std::sync::atomic::AtomicU64,
}

impl InFlight {
    /// The most requests in flight at once so far.
    pub fn max(&self) -> usize {
        self.0.max.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Requests answered or being answered so far.
    pub fn total(&self) -> u64 {
        self.0.total.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Counts a request until the guard drops.
    pub(crate) fn enter(&self) -> InFlightGuard {
        use std::sync::atomic::Ordering::SeqCst;
        let now = self.0.now.fetch_add(1, SeqCst) + 1;
        self.0.max.fetch_max(now, SeqCst);
        self.0.total.fetch_add(1, SeqCst);
        InFlightGuard(self.clone())
    }
}

/// Scripts compare equal when they share the gauge.
impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for InFlight {}

/// One request in flight (see [`InFlight`]).
pub(crate) struct InFlightGuard(InFlight);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        (self.0)
            .0
            .now
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// agentapi's default `--allowed-hosts`.
pub const AGENTAPI_DEFAULT_ALLOWED_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "[::1]"];

impl Script {
    /// A `work` or `boot` that never ends by itself.
    pub const FOREVER: Duration = Duration::MAX;
}

impl Default for Script {
    fn default() -> Self {
        Script {
            agent_type: "claude".to_string(),
            greeting: "Welcome to Claude Code (ccplant fake agent)".to_string(),
            boot: Duration::from_millis(200),
            work: Duration::from_millis(300),
            chatter_per_sec: 10,
            post_delay: Duration::from_millis(20),
            mode: Mode::Serve,
            refusal: "refused by the fake agent's script".to_string(),
            allowed_hosts: vec!["*".to_string()],
            answer_delay: Duration::ZERO,
            in_flight: InFlight::default(),
        }
    }
}

/// Whether a [`FakeAgent`] answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Serve the API.
    #[default]
    Serve,
    /// Answer every request with this HTTP status and an `application/problem+json` body (and end
    /// open event streams).
    Refuse(u16),
    /// Accept TCP connections and close them without reading a request (and end open event
    /// streams and keep-alive connections).
    Drop,
    /// Accept connections and read requests, and never answer them.
    Hang,
    /// Answer what no agentapi sends (on the endpoints the flood names; the others as
    /// [`Mode::Serve`]).
    Flood(Flood),
}

/// What a flooding agent sends ([`Mode::Flood`]). Bodies are generated as the client reads
/// them: a flood costs the test process no memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flood {
    /// `GET /messages` answers `entries` messages of `bytes` characters each (agent and user
    /// alternately), and `GET /events` replays them as `message_update` events (and never
    /// sends the status that ends a replay).
    HugeMessages { entries: usize, bytes: usize },
    /// `GET /events` answers `data: ` and then one line that never ends, as fast as it is read.
    EndlessLine,
    /// Every request is answered with its headers at once, then one byte every `every`,
    /// never finishing.
    SlowDrip { every: Duration },
}

/// A user message that `POST /message` accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// The content as stored in the conversation (agentapi trims surrounding whitespace).
    pub content: String,
    pub at: SystemTime,
}

/// Requests a [`FakeAgent`] received, per endpoint, in every [`Mode`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// `GET /status`.
    pub status: u64,
    /// `GET /messages`.
    pub messages: u64,
    /// `POST /message` (user and raw).
    pub message_post: u64,
    /// `GET /events`.
    pub events: u64,
    /// Any other method or path.
    pub other: u64,
    /// TCP connections accepted (also those [`Mode::Drop`] closes at once).
    pub connections: u64,
}
