//! The agent conversation (DESIGN §3.1 step 7): one worker per Running session follows the
//! agent's event stream, delivers the prompt and then each entry of `spec.messages` in order,
//! exactly once, each only when the agent waits for input, and keeps what `status.agent` shows.
//!
//! Exactly once, without a record of our own that could disagree with the agent:
//! - the agent's conversation (`GET /messages`, and the user messages on `GET /events`) is the
//!   truth of what it received: before every send the worker reads `/messages` and counts the
//!   outbox entries it finds there, in order, so a send whose answer was lost, or an operator
//!   restart, never sends an entry twice;
//! - a pod starts with a fresh agent, so entries delivered to earlier pods of the session are
//!   not sent again: the pod carries their number in the annotation
//!   [`DELIVERED_BEFORE_ANNOTATION`], written when the operator creates it.
//!
//! Status without a write per event: the worker keeps the live state, and *publishes* a
//! snapshot for `status.agent` at most once per [`STATE_GAP`] when the state, the delivered
//! count or reachability changed, and at most once per [`ACTIVITY_GAP`] when only the activity
//! time or the agent's last message changed (a chatty agent). Each publish triggers one
//! reconcile; decisions (completion, idle timeout) read the live state, so they are exact.
//!
//! Concurrency is bounded: connects and requests take a permit of one semaphore until their
//! response headers arrived ([`AgentApi`]); bodies and established event streams hold none.
//! Unreachable agents are retried with an exponential backoff (1 s doubling to 60 s), one
//! attempt per step.
//!
//! One agent never slows another (DESIGN §7.3): what it answers is bounded and counted against
//! the process-wide budget ([`super::limits`]); an answer over a limit ends the connected
//! period with `AgentReachable=False` (reason `ResponseTooLarge`, `BudgetExhausted` or
//! `Timeout`) and the usual backoff; counting the outbox is linear in the conversation
//! ([`OutboxCount`]); the locks shared with the reconciler guard plain state, are never held
//! across an await, and hold no work proportional to an answer's size; every wait of a worker
//! but a send in flight ends when it is told to stop.

use super::agentapi::{
    AgentApi, AgentError, AgentEvent, Conversation, Message, Role, Status, message_hash,
};
use super::controller::SessionObject;
use super::limits::{AgentLimits, MemoryBudget};
use super::outbox_count::OutboxCount;
use ccplant_api::{AgentSession, AgentState, AgentStatus};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use kube::runtime::reflector::{ObjectRef, Store};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{Instrument, debug, info, info_span, warn};

/// Pod annotation: how many outbox entries (prompt + messages) earlier pods of the session
/// received, so this pod's agent gets only the rest.
pub const DELIVERED_BEFORE_ANNOTATION: &str = "ccplant.io/delivered-before";
/// Least time between two publishes of a state change (state, delivered count, reachability).
pub const STATE_GAP: Duration = Duration::from_secs(1);
/// Least time between two publishes that only move the activity time or the last message.
pub const ACTIVITY_GAP: Duration = Duration::from_secs(30);
/// First retry delay for an unreachable agent; doubles per failed attempt.
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Longest retry delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// How long a stopping worker may take beyond its send in flight's deadline (the pod is about
/// to go: its count must be right for the next pod).
const STOP_MARGIN: Duration = Duration::from_secs(2);
/// How long a worker may finish a send in flight at shutdown: the next leader re-reads the
/// same agent's conversation anyway, and the lease should pass quickly.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// Events taken at once before the worker acts (and yields to the runtime).
const EVENT_BATCH: usize = 256;

/// Whether the agent API answers, as `AgentReachable` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Reachability {
    /// Not tried yet.
    #[default]
    Unknown,
    Reachable,
    Unreachable {
        reason: String,
        message: String,
    },
}

/// What `status.agent` and `AgentReachable` show.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub state: Option<AgentState>,
    pub delivered: usize,
    pub last_activity: Option<DateTime<Utc>>,
    pub last_agent_message: Option<String>,
    pub reachable: Reachability,
}

impl Snapshot {
    /// `status.agent` for this snapshot.
    pub fn to_status(&self) -> AgentStatus {
        AgentStatus {
            state: self.state,
            delivered_messages: i32::try_from(self.delivered).unwrap_or(i32::MAX),
            // Whole seconds, as the apiserver stores a Time: a finer value would never
            // compare equal to the stored status and write again on every reconcile.
            last_activity_time: self
                .last_activity
                .map(|t| crate::time::to_k8s(chrono::SubsecRound::trunc_subsecs(t, 0))),
            last_agent_message: self.last_agent_message.clone(),
        }
    }

    fn urgent_change(&self, other: &Snapshot) -> bool {
        self.state != other.state
            || self.delivered != other.delivered
            || self.reachable != other.reachable
    }
}

/// The live facts decisions are made on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    pub reachable: bool,
    /// Outbox entries the agent received (earlier pods included).
    pub delivered: usize,
    /// The agent reported `stable` last.
    pub idle: bool,
    /// Entries of the outbox the agent has not received.
    pub pending: usize,
    /// Since when the agent is idle with nothing left to deliver (`None` while working,
    /// unreachable, or with entries pending).
    pub settled_since: Option<DateTime<Utc>>,
    /// Last activity of the agent (message, status change, delivery) or the worker's start.
    pub last_activity: DateTime<Utc>,
}

/// What the reconcile reads: the published snapshot and the live facts.
#[derive(Clone, Debug)]
pub struct View {
    pub published: Snapshot,
    pub facts: Facts,
}

/// Where a session's agent is and what it must receive.
#[derive(Clone, Debug)]
pub struct Target {
    pub session: ObjectRef<SessionObject>,
    pub session_uid: String,
    pub pod_uid: u64,
    pub addr: SocketAddr,
    /// Prompt first, then `spec.messages`.
    pub outbox: Vec<String>,
    /// Entries delivered to earlier pods.
    pub base: usize,
    /// From the stored status, for a worker that takes over a running agent (operator restart):
    /// the idle start, last activity and last agent message it showed.
    pub seed: Seed,
    /// When the reconcile that starts the worker decided to (the worker's start time).
    pub started: DateTime<Utc>,
}

/// A running worker, as the reconcile observes it.
#[derive(Clone, Debug)]
pub struct Worker {
    pub pod_uid: u64,
    pub addr: SocketAddr,
    /// False once the worker's task ended (it is then started again).
    pub alive: bool,
    pub outbox: Arc<Vec<String>>,
    pub view: View,
}

/// What a worker started for `target` knows before it did anything: its seed (pure, so the
/// reconcile that starts it can show it).
pub fn initial_view(target: &Target) -> View {
    let live = Live::new(target, target.started);
    View {
        published: live.snapshot(),
        facts: live.facts(),
    }
}

/// The agent API client every session of the process shares: its permits (connects and
/// requests in flight at once), limits and memory budget.
#[derive(Clone, Debug)]
pub struct AgentPool {
    api: AgentApi,
}

impl AgentPool {
    /// `concurrency`: `--agent-concurrency`, shared by every namespace scope; the default
    /// limits and budget.
    pub fn new(concurrency: usize) -> Self {
        Self::with_limits(concurrency, AgentLimits::default(), MemoryBudget::default())
    }

    /// Like [`AgentPool::new`], with these per-agent limits and this process-wide budget.
    pub fn with_limits(concurrency: usize, limits: AgentLimits, budget: MemoryBudget) -> Self {
        Self {
            api: AgentApi::new(concurrency, limits, budget),
        }
    }
}

/// What the stored status said about the agent of the same pod: a worker taking over (after an
/// operator restart) starts from it, so the restart writes nothing, and decides nothing before
/// it reached the agent itself.
#[derive(Clone, Debug, Default)]
pub struct Seed {
    pub state: Option<AgentState>,
    pub reachable: Reachability,
    pub delivered: usize,
    pub idle_since: Option<DateTime<Utc>>,
    pub last_activity: Option<DateTime<Utc>>,
    pub last_agent_message: Option<String>,
}

/// The workers of all Running sessions.
pub struct Conversations {
    /// The agent API client and permits every scope shares.
    pool: AgentPool,
    workers: Arc<Mutex<HashMap<String, Handle>>>,
    generation: std::sync::atomic::AtomicU64,
    trigger: mpsc::UnboundedSender<ObjectRef<SessionObject>>,
    sessions: Mutex<Option<Store<SessionObject>>>,
    metrics: Arc<crate::metrics::Metrics>,
}

impl std::fmt::Debug for Conversations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conversations").finish_non_exhaustive()
    }
}

struct Handle {
    /// Tells this worker's entry from a later one of the same session.
    generation: u64,
    pod_uid: u64,
    addr: SocketAddr,
    outbox: watch::Sender<Arc<Vec<String>>>,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// State shared by a worker and the reconciler.
struct Shared {
    live: Mutex<Live>,
    published: Mutex<Snapshot>,
}

impl Shared {
    fn view(&self) -> View {
        let facts = lock(&self.live).facts();
        View {
            published: lock(&self.published).clone(),
            facts,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[derive(Clone, Debug)]
struct Live {
    base: usize,
    outbox_len: usize,
    reachable: Reachability,
    /// Whether this agent was ever reached (seeded from the stored status).
    reached: bool,
    /// Whether this worker reached it: decisions wait for that.
    verified: bool,
    status: Option<Status>,
    /// Hashes of the outbox entries this pod's agent should have (`outbox[base..]`).
    expected: Vec<u64>,
    /// User messages of the agent's conversation, by id (a hash of the trimmed text: a long
    /// conversation costs 16 bytes a message), matched against `expected`.
    count: OutboxCount,
    /// Most user messages kept (the agent's conversation is over the limit beyond).
    max_messages: usize,
    /// Outbox entries found in the conversation (this pod only).
    delivered_here: usize,
    idle_since: Option<DateTime<Utc>>,
    last_delivery: Option<DateTime<Utc>>,
    last_activity: DateTime<Utc>,
    last_agent_message: Option<String>,
    last_agent_id: i64,
    /// When this worker started: an agent it has not reached counts as quiet since then at the
    /// earliest (after an operator restart the stored activity time may be long past).
    started: DateTime<Utc>,
}

impl Live {
    fn new(target: &Target, now: DateTime<Utc>) -> Self {
        Self::with_expected(target, now, expected_hashes(&target.outbox, target.base))
    }

    /// `expected`: [`expected_hashes`] of the target's outbox.
    fn with_expected(target: &Target, now: DateTime<Utc>, expected: Vec<u64>) -> Self {
        let seed = &target.seed;
        let status = match seed.state {
            Some(AgentState::Working) => Some(Status::Running),
            Some(AgentState::Idle) => Some(Status::Stable),
            _ => None,
        };
        let reached = matches!(
            seed.state,
            Some(AgentState::Working | AgentState::Idle | AgentState::Unreachable)
        );
        Self {
            base: target.base,
            outbox_len: target.outbox.len(),
            reachable: redacted_reachability(&seed.reachable),
            reached,
            verified: false,
            status,
            expected,
            count: OutboxCount::default(),
            max_messages: AgentLimits::default().max_messages,
            delivered_here: seed.delivered.saturating_sub(target.base),
            idle_since: None,
            last_delivery: None,
            last_activity: target.seed.last_activity.unwrap_or(now).min(now),
            // A status written before redaction existed is cleaned on takeover.
            last_agent_message: target
                .seed
                .last_agent_message
                .as_deref()
                .map(|m| crate::redact::tokens(m).into_owned()),
            last_agent_id: -1,
            started: now,
        }
    }

    fn delivered(&self) -> usize {
        (self.base + self.delivered_here).min(self.outbox_len.max(self.base))
    }

    fn facts(&self) -> Facts {
        let reachable = self.verified && self.reachable == Reachability::Reachable;
        let idle = self.status == Some(Status::Stable);
        let pending = self.outbox_len.saturating_sub(self.delivered());
        let settled_since = (reachable && idle && pending == 0).then(|| {
            let since = self
                .idle_since
                .unwrap_or(self.last_activity)
                .max(self.last_activity);
            self.last_delivery.map_or(since, |d| since.max(d))
        });
        let last_activity = if self.verified {
            self.last_activity
        } else {
            self.last_activity.max(self.started)
        };
        Facts {
            reachable,
            delivered: self.delivered(),
            idle,
            pending,
            settled_since,
            last_activity,
        }
    }

    fn snapshot(&self) -> Snapshot {
        let state = match (&self.reachable, self.status) {
            (Reachability::Reachable, Some(Status::Running)) => AgentState::Working,
            (Reachability::Reachable, Some(Status::Stable)) => AgentState::Idle,
            (Reachability::Unreachable { .. }, _) if self.reached => AgentState::Unreachable,
            _ => AgentState::Starting,
        };
        Snapshot {
            state: Some(state),
            delivered: self.delivered(),
            last_activity: Some(self.last_activity),
            last_agent_message: self.last_agent_message.clone(),
            reachable: self.reachable.clone(),
        }
    }

    /// The outbox changed (its length, and the hashes of `outbox[base..]`): entries are only
    /// ever appended, so counting goes on from where it was.
    fn set_outbox(&mut self, len: usize, expected: Vec<u64>) {
        self.outbox_len = len;
        self.expected = expected;
        self.count.outbox_changed(&self.expected);
        self.confirm();
    }

    /// Takes the count: never less than confirmed, the stream may show a delivered message
    /// late.
    fn confirm(&mut self) {
        self.delivered_here = self.delivered_here.max(self.count.matched());
    }

    fn activity(&mut self, at: DateTime<Utc>) {
        if at > self.last_activity {
            self.last_activity = at;
        }
    }

    /// A user message of the conversation; `Err(max)` when it would be one more than the
    /// conversation may have.
    fn saw_user(&mut self, id: i64, hash: u64) -> Result<(), usize> {
        if self.count.len() >= self.max_messages && !self.count.knows(id) {
            return Err(self.max_messages);
        }
        if self.count.saw(id, hash, &self.expected) {
            self.confirm();
        }
        Ok(())
    }

    /// The agent's message `id` (its [`summary`]); a change seen as it happens
    /// (`as_it_happens`) is activity now.
    fn saw_agent(&mut self, id: i64, summary: &str, as_it_happens: bool, now: DateTime<Utc>) {
        if id < self.last_agent_id {
            return;
        }
        self.last_agent_id = id;
        if self.last_agent_message.as_deref() != Some(summary) {
            self.last_agent_message = Some(summary.to_owned());
            if as_it_happens {
                self.activity(now);
            }
        }
    }

    /// A message of the event stream. Its own time is activity (it tells what happened while
    /// nobody watched).
    fn saw(&mut self, m: &Seen, as_it_happens: bool, now: DateTime<Utc>) -> Result<(), usize> {
        if let Some(t) = m.time {
            self.activity(t.min(now));
        }
        match &m.what {
            SeenWhat::User(hash) => self.saw_user(m.id, *hash),
            SeenWhat::Agent(summary) => {
                self.saw_agent(m.id, summary, as_it_happens, now);
                Ok(())
            }
        }
    }

    /// What `/messages` showed.
    fn saw_conversation(&mut self, c: &SeenConversation, now: DateTime<Utc>) -> Result<(), usize> {
        if let Some(t) = c.latest {
            self.activity(t.min(now));
        }
        for (id, hash) in &c.user {
            self.saw_user(*id, *hash)?;
        }
        if let Some((id, summary)) = &c.last_agent {
            self.saw_agent(*id, summary, false, now);
        }
        Ok(())
    }
}

/// A message as the live state takes it, made before its lock is taken (hashing and
/// redacting cost time in proportion to the text).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    id: i64,
    time: Option<DateTime<Utc>>,
    what: SeenWhat,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum SeenWhat {
    User(u64),
    Agent(String),
}

impl Seen {
    fn of(m: &Message) -> Seen {
        Seen {
            id: m.id,
            time: m.time,
            what: match m.role {
                Role::User => SeenWhat::User(message_hash(&m.content)),
                Role::Agent => SeenWhat::Agent(summary(&m.content)),
            },
        }
    }
}

/// `/messages` as the live state takes it (see [`Seen`]).
#[derive(Debug)]
struct SeenConversation {
    user: Vec<(i64, u64)>,
    last_agent: Option<(i64, String)>,
    latest: Option<DateTime<Utc>>,
}

impl SeenConversation {
    fn of(c: Conversation) -> Self {
        Self {
            last_agent: c.last_agent.map(|m| (m.id, summary(&m.content))),
            user: c.user,
            latest: c.latest,
        }
    }
}

/// What `status.agent.lastAgentMessage` shows of an agent message: redacted before the cut, so
/// a token at the 500-character boundary cannot leave a tail too short to be recognised.
fn summary(text: &str) -> String {
    AgentStatus::truncate_agent_message(&crate::redact::tokens(text))
}

/// Hashes of the outbox entries a pod whose agent got `base` of them before should receive.
fn expected_hashes(outbox: &[String], base: usize) -> Vec<u64> {
    outbox
        .get(base..)
        .unwrap_or_default()
        .iter()
        .map(|e| message_hash(e))
        .collect()
}

/// `r` with its message redacted (it may quote the agent's answer).
fn redacted_reachability(r: &Reachability) -> Reachability {
    match r {
        Reachability::Unreachable { reason, message } => Reachability::Unreachable {
            reason: reason.clone(),
            message: crate::redact::tokens(message).into_owned(),
        },
        other => other.clone(),
    }
}

impl Conversations {
    pub fn new(
        pool: &AgentPool,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> (Self, mpsc::UnboundedReceiver<ObjectRef<SessionObject>>) {
        let (trigger, triggers) = mpsc::unbounded_channel();
        (
            Self {
                pool: pool.clone(),
                workers: Arc::new(Mutex::new(HashMap::new())),
                generation: std::sync::atomic::AtomicU64::new(0),
                trigger,
                sessions: Mutex::new(None),
                metrics,
            },
            triggers,
        )
    }

    /// The session cache: a worker whose session is gone stops.
    pub fn set_session_store(&self, store: Store<SessionObject>) {
        *lock(&self.sessions) = Some(store);
    }

    /// The session's worker, if one was started.
    pub fn observe(&self, session_uid: &str) -> Option<Worker> {
        // The registry's lock is not held while one worker's state is read: every reconcile
        // takes it.
        let (pod_uid, addr, alive, outbox, shared) = {
            let workers = lock(&self.workers);
            let h = workers.get(session_uid)?;
            (
                h.pod_uid,
                h.addr,
                !h.task.is_finished(),
                h.outbox.borrow().clone(),
                h.shared.clone(),
            )
        };
        Some(Worker {
            pod_uid,
            addr,
            alive,
            outbox,
            view: shared.view(),
        })
    }

    /// Whether the session's worker runs for this pod with this outbox (nothing to do).
    fn is_current(&self, target: &Target) -> bool {
        let workers = lock(&self.workers);
        workers.get(&target.session_uid).is_some_and(|h| {
            h.pod_uid == target.pod_uid
                && h.addr == target.addr
                && !h.task.is_finished()
                && **h.outbox.borrow() == target.outbox
        })
    }

    /// Starts the worker of a Running session, hands a running one the new outbox, or replaces
    /// one that talks to another pod.
    pub fn ensure(&self, target: Target) {
        if self.is_current(&target) {
            return;
        }
        // Hashed before any lock is taken (in proportion to the outbox's text).
        let expected = expected_hashes(&target.outbox, target.base);
        let max_messages = self.pool.api.limits().max_messages;
        let mut workers = lock(&self.workers);
        if let Some(h) = workers.get(&target.session_uid) {
            if h.pod_uid == target.pod_uid && h.addr == target.addr && !h.task.is_finished() {
                if **h.outbox.borrow() != target.outbox {
                    // The live state counts the new entries before the worker wakes.
                    {
                        let mut live = lock(&h.shared.live);
                        live.set_outbox(target.outbox.len(), expected);
                        live.activity(Utc::now());
                    }
                    h.outbox.send_replace(Arc::new(target.outbox));
                }
                return;
            }
            if let Some(old) = workers.remove(&target.session_uid) {
                let _ = old.stop.send(true);
                old.task.abort();
            }
        }
        let mut live = Live::with_expected(&target, target.started, expected);
        live.max_messages = max_messages;
        let shared = Arc::new(Shared {
            published: Mutex::new(live.snapshot()),
            live: Mutex::new(live),
        });
        let (outbox_tx, outbox_rx) = watch::channel(Arc::new(target.outbox.clone()));
        let (stop_tx, stop_rx) = watch::channel(false);
        let generation = self
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let worker = WorkerTask {
            seed_idle: target.seed.idle_since,
            status_before_break: None,
            registry: Arc::downgrade(&self.workers),
            generation,
            api: self.pool.api.clone(),
            shared: shared.clone(),
            trigger: self.trigger.clone(),
            sessions: lock(&self.sessions).clone(),
            metrics: self.metrics.clone(),
            target: target.clone(),
            outbox: outbox_rx,
            stop: stop_rx,
            last_publish: None,
            publish_at: None,
        };
        let span = info_span!(
            "agent",
            namespace = %target.session.namespace.clone().unwrap_or_default(),
            name = %target.session.name,
        );
        let task = tokio::spawn(worker.run().instrument(span));
        workers.insert(
            target.session_uid.clone(),
            Handle {
                generation,
                pod_uid: target.pod_uid,
                addr: target.addr,
                outbox: outbox_tx,
                shared,
                stop: stop_tx,
                task,
            },
        );
    }

    /// Stops the session's worker, letting a request in flight finish, and returns its last
    /// state.
    pub async fn stop(&self, session_uid: &str) -> Option<Snapshot> {
        let grace = self.pool.api.limits().post_timeout + STOP_MARGIN;
        self.stop_within(session_uid, grace).await
    }

    async fn stop_within(&self, session_uid: &str, grace: Duration) -> Option<Snapshot> {
        let handle = lock(&self.workers).remove(session_uid)?;
        let _ = handle.stop.send(true);
        let mut task = handle.task;
        if tokio::time::timeout(grace, &mut task).await.is_err() {
            task.abort();
        }
        let snapshot = lock(&handle.shared.live).snapshot();
        Some(snapshot)
    }

    /// Stops every worker (shutdown, before the lease is released).
    pub async fn shutdown(&self) {
        let uids: Vec<String> = lock(&self.workers).keys().cloned().collect();
        futures::future::join_all(uids.iter().map(|u| self.stop_within(u, SHUTDOWN_GRACE))).await;
    }
}

struct WorkerTask {
    /// The stored status's idle start, for the first connection only.
    seed_idle: Option<DateTime<Utc>>,
    /// The agent's status when the last connection broke.
    status_before_break: Option<Status>,
    /// Where the worker's entry lives: a worker that ends by itself (its session is gone)
    /// removes it.
    registry: std::sync::Weak<Mutex<HashMap<String, Handle>>>,
    generation: u64,
    api: AgentApi,
    shared: Arc<Shared>,
    trigger: mpsc::UnboundedSender<ObjectRef<SessionObject>>,
    sessions: Option<Store<SessionObject>>,
    metrics: Arc<crate::metrics::Metrics>,
    target: Target,
    outbox: watch::Receiver<Arc<Vec<String>>>,
    stop: watch::Receiver<bool>,
    last_publish: Option<Instant>,
    publish_at: Option<Instant>,
}

/// What one delivery attempt did.
enum Delivery {
    /// Nothing to send, or not now (stopping).
    Nothing,
    Sent,
    /// The agent is not waiting for input after all.
    NotYet,
}

/// How a connected period ended.
enum Ended {
    Stopped,
    Broken(AgentError),
}

impl WorkerTask {
    async fn run(mut self) {
        let mut failures: u32 = 0;
        loop {
            if *self.stop.borrow() {
                return;
            }
            let started = Instant::now();
            match self.connected().await {
                Ended::Stopped => return,
                Ended::Broken(e) => {
                    // A stream that stayed up a while starts the backoff over.
                    if started.elapsed() > BACKOFF_MAX {
                        failures = 0;
                    }
                    self.unreachable(&e);
                    if !self.session_exists() {
                        debug!("session gone, agent worker stops");
                        self.deregister();
                        return;
                    }
                    let delay = backoff(failures);
                    failures = failures.saturating_add(1);
                    debug!(error = %e, retry_in = ?delay, "agent not reachable");
                    if self.sleep_or_stop(delay).await {
                        return;
                    }
                }
            }
        }
    }

    /// Removes this worker's entry (not a newer one of the same session).
    fn deregister(&self) {
        if let Some(registry) = self.registry.upgrade() {
            let mut workers = lock(&registry);
            if workers
                .get(&self.target.session_uid)
                .is_some_and(|h| h.generation == self.generation)
            {
                workers.remove(&self.target.session_uid);
            }
        }
    }

    fn session_exists(&self) -> bool {
        match &self.sessions {
            Some(store) => store.get(&self.target.session).is_some_and(|s| {
                kube::ResourceExt::uid(&*s).as_deref() == Some(&self.target.session_uid)
            }),
            None => true,
        }
    }

    /// Sleeps `delay` while still publishing on time; true when told to stop.
    async fn sleep_or_stop(&mut self, delay: Duration) -> bool {
        let until = Instant::now() + delay;
        loop {
            let publish = self.publish_at;
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return false,
                _ = self.stop.changed() => return true,
                _ = sleep_opt(publish) => { self.publish_at = None; self.maybe_publish(); }
            }
        }
    }

    fn unreachable(&mut self, e: &AgentError) {
        {
            let mut live = lock(&self.shared.live);
            // The error may quote the agent's answer (an HTTP error body).
            let now = Reachability::Unreachable {
                reason: e.reason().to_string(),
                message: crate::redact::owned(e.to_string()),
            };
            if e.is_over_limit() && live.reachable != now {
                // Once per change, not per attempt: the operator's side of a flood.
                warn!(reason = e.reason(), error = %e, "agent answer refused");
            }
            live.reachable = now;
            if live.status.is_some() {
                self.status_before_break = live.status;
            }
            live.status = None;
            live.verified = false;
        }
        self.maybe_publish();
    }

    /// One connected period: the event stream, deliveries, publishes.
    async fn connected(&mut self) -> Ended {
        let addr = self.target.addr;
        let mut stop = self.stop.clone();
        let events = tokio::select! {
            events = self.api.events(addr) => events,
            _ = stop.changed() => return Ended::Stopped,
        };
        self.metrics.agent_connect(events.is_ok());
        let events = match events {
            Ok(s) => s,
            Err(e) => return Ended::Broken(e),
        };
        let mut events = std::pin::pin!(events);
        // What the agent already has, before anything is sent (operator restart).
        tokio::select! {
            synced = self.sync_messages() => {
                if let Err(e) = synced {
                    return Ended::Broken(e);
                }
            }
            _ = stop.changed() => return Ended::Stopped,
        }
        // Reachable once the stream's replay ends with the agent's status (first event).
        let mut first_status = true;
        let mut retry_at: Option<Instant> = None;
        let mut refusals: u32 = 0;
        // The pending retry waits for the agent to become stable (not a refusal's backoff).
        let mut refusals_pending_status = false;
        loop {
            if retry_at.is_none_or(|t| t <= Instant::now()) {
                retry_at = None;
                match self.deliver().await {
                    Ok(Delivery::Nothing) => {}
                    Ok(Delivery::Sent) => refusals = 0,
                    Ok(Delivery::NotYet) => {
                        retry_at = Some(Instant::now() + backoff(refusals));
                        refusals = refusals.saturating_add(1);
                        refusals_pending_status = true;
                    }
                    // Over a limit: reported (the connection ends), whatever the request.
                    Err(e) if !e.is_over_limit() && (e.is_refusal() || e.ambiguous()) => {
                        // Refused (the agent was not waiting after all, or rejects the
                        // message) or the answer lost: retried with backoff, and the next
                        // attempt re-reads the conversation first.
                        let delay = backoff(refusals);
                        refusals = refusals.saturating_add(1);
                        refusals_pending_status = false;
                        warn!(error = %e, retry_in = ?delay, "message not delivered, retrying");
                        retry_at = Some(Instant::now() + delay);
                    }
                    Err(e) => return Ended::Broken(e),
                }
            }
            let publish = self.publish_at;
            tokio::select! {
                ev = events.next() => match ev {
                    None => {
                        return Ended::Broken(AgentError::Connect {
                            addr,
                            detail: "the event stream ended".into(),
                        })
                    }
                    Some(Err(e)) => return Ended::Broken(e),
                    Some(Ok(ev)) => {
                        let mut status = match self.on_event(ev, &mut first_status) {
                            Ok(status) => status,
                            Err(e) => return Ended::Broken(e),
                        };
                        // Take the events already buffered (a batch at most) before acting.
                        for _ in 0..EVENT_BATCH {
                            let Some(Some(more)) = futures::FutureExt::now_or_never(events.next()) else {
                                break;
                            };
                            match more.and_then(|ev| self.on_event(ev, &mut first_status)) {
                                Ok(s) => status |= s,
                                Err(e) => return Ended::Broken(e),
                            }
                        }
                        // A status event is the news a waiting delivery waits for.
                        if status && retry_at.is_some() && refusals_pending_status {
                            retry_at = None;
                        }
                    }
                },
                // New entries (ensure() counted them): a delivery may be due.
                changed = self.outbox.changed() => {
                    if changed.is_err() { return Ended::Stopped; }
                    self.outbox.borrow_and_update();
                }
                _ = self.stop.changed() => return Ended::Stopped,
                _ = sleep_opt(publish) => self.publish_at = None,
                _ = sleep_opt(retry_at) => retry_at = None,
            }
            self.maybe_publish();
        }
    }

    /// Applies one event; true for a status event. The first status event of a connection
    /// ends the stream's replay: the agent is reachable from then on.
    fn on_event(&mut self, ev: AgentEvent, first_status: &mut bool) -> Result<bool, AgentError> {
        let now = Utc::now();
        let is_status = matches!(ev, AgentEvent::Status(_));
        // Hashed or summarized before the lock is taken.
        let seen = match &ev {
            AgentEvent::Message(m) => Some(Seen::of(m)),
            _ => None,
        };
        let mut live = lock(&self.shared.live);
        match ev {
            AgentEvent::Status(s) => {
                if *first_status {
                    // The state the agent is in, not a change: an idle agent has been idle
                    // since the stored status said so, or at least since its last message.
                    *first_status = false;
                    if !live.reached {
                        info!("agent reachable");
                    }
                    live.reachable = Reachability::Reachable;
                    live.reached = true;
                    live.verified = true;
                    live.status = Some(s);
                    if s == Status::Stable {
                        // Idle since: the stored status's word on the first connection; after
                        // a broken stream, the earlier start if it was idle then too; else
                        // now. The agent's message times move it later if it worked since.
                        let seeded = self.seed_idle.take();
                        let kept = live
                            .idle_since
                            .filter(|_| self.status_before_break == Some(Status::Stable));
                        live.idle_since = Some(seeded.or(kept).unwrap_or(now).min(now));
                    } else {
                        self.seed_idle = None;
                        live.activity(now);
                    }
                } else if live.status != Some(s) {
                    live.status = Some(s);
                    live.activity(now);
                    if s == Status::Stable {
                        live.idle_since = Some(now);
                    }
                }
            }
            // Before the first status event the stream replays the conversation.
            AgentEvent::Message(_) => {
                if let Some(seen) = &seen
                    && let Err(max) = live.saw(seen, !*first_status, now)
                {
                    return Err(too_many(self.target.addr, "/events", max));
                }
            }
            AgentEvent::Other => {}
        }
        Ok(is_status)
    }

    /// `GET /messages` into the live state.
    async fn sync_messages(&self) -> Result<(), AgentError> {
        let addr = self.target.addr;
        let conversation = self.api.messages(addr).await?;
        let seen = SeenConversation::of(conversation);
        let now = Utc::now();
        lock(&self.shared.live)
            .saw_conversation(&seen, now)
            .map_err(|max| too_many(addr, "/messages", max))
    }

    /// Sends the next outbox entry when the agent waits for input: confirmed against
    /// `/messages` and `/status` right before the send. Stops waiting (for a permit or the
    /// reads) when the worker is told to stop; a send already under way is finished.
    async fn deliver(&mut self) -> Result<Delivery, AgentError> {
        let ready = {
            let live = lock(&self.shared.live);
            live.status == Some(Status::Stable) && live.delivered() < live.outbox_len
        };
        if !ready {
            return Ok(Delivery::Nothing);
        }
        let mut stop = self.stop.clone();
        if *stop.borrow() {
            return Ok(Delivery::Nothing);
        }
        tokio::select! {
            r = self.sync_messages() => r?,
            _ = stop.changed() => return Ok(Delivery::Nothing),
        }
        let outbox = self.outbox.borrow().clone();
        let next = {
            let live = lock(&self.shared.live);
            let i = live.delivered();
            if i >= outbox.len() {
                return Ok(Delivery::Nothing);
            }
            i
        };
        let addr = self.target.addr;
        let status = tokio::select! {
            r = self.api.status(addr) => r,
            _ = stop.changed() => return Ok(Delivery::Nothing),
        };
        if status? != Status::Stable {
            // The stream said stable, the agent says otherwise: its next status event, or a
            // retry with backoff, tells.
            return Ok(Delivery::NotYet);
        }
        self.api.send_user_message(addr, &outbox[next]).await?;
        self.metrics.agent_delivered();
        info!(
            message = next + 1,
            total = outbox.len(),
            "delivered a message to the agent"
        );
        let now = Utc::now();
        let mut live = lock(&self.shared.live);
        // agentapi answers once the agent started on it: the entry is delivered, whether or
        // not the stream showed the user message yet.
        live.delivered_here = live.delivered_here.max(next + 1 - live.base);
        live.status = Some(Status::Running);
        live.last_delivery = Some(now);
        live.activity(now);
        Ok(Delivery::Sent)
    }

    /// Publishes the live snapshot when it changed, no sooner than the gap allows; otherwise
    /// schedules the publish.
    fn maybe_publish(&mut self) {
        let snapshot = lock(&self.shared.live).snapshot();
        let published = lock(&self.shared.published).clone();
        if snapshot == published {
            self.publish_at = None;
            return;
        }
        let gap = if snapshot.urgent_change(&published) {
            STATE_GAP
        } else {
            ACTIVITY_GAP
        };
        let now = Instant::now();
        let due = self.last_publish.map_or(now, |t| t + gap);
        if due <= now {
            *lock(&self.shared.published) = snapshot;
            self.last_publish = Some(now);
            self.publish_at = None;
            if self.trigger.send(self.target.session.clone()).is_err() {
                warn!("reconciler gone; agent status not published");
            }
        } else {
            self.publish_at = Some(self.publish_at.map_or(due, |t| t.min(due)));
        }
    }
}

/// The conversation has more user messages than the operator keeps.
fn too_many(addr: SocketAddr, path: &'static str, max: usize) -> AgentError {
    AgentError::TooLarge {
        addr,
        path,
        what: format!("more than {max} messages"),
    }
}

async fn sleep_opt(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => futures::future::pending().await,
    }
}

/// Delay before retry number `failures` (0-based): 1 s doubling to 60 s.
pub fn backoff(failures: u32) -> Duration {
    BACKOFF_BASE
        .saturating_mul(2u32.saturating_pow(failures.min(16)))
        .min(BACKOFF_MAX)
}

/// The outbox of a session: the prompt (if any), then `spec.messages`.
pub fn outbox(session: &AgentSession) -> Vec<String> {
    session.spec.outbox().map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(outbox: &[&str], base: usize) -> Target {
        Target {
            session: ObjectRef::new("s").within("ns"),
            session_uid: "u".into(),
            pod_uid: 7,
            addr: "127.0.0.1:1".parse().unwrap(),
            outbox: outbox.iter().map(|s| s.to_string()).collect(),
            base,
            seed: Seed::default(),
            started: Utc::now(),
        }
    }

    #[test]
    fn backoff_doubles_to_a_minute() {
        let steps: Vec<u64> = (0..9).map(|f| backoff(f).as_secs()).collect();
        assert_eq!(steps, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
    }

    #[test]
    fn delivered_counts_outbox_entries_in_order_and_skips_foreign_messages() {
        let t = target(&["prompt", "two", "two", "four"], 0);
        let mut live = Live::new(&t, Utc::now());
        for (id, text) in [
            (1, "prompt"),
            (3, "typed by hand"),
            (5, " two\n"),
            (7, "four"),
        ] {
            live.saw_user(id, message_hash(text)).unwrap();
        }
        // "four" comes before the second "two" was seen: it does not count.
        assert_eq!(live.delivered(), 2);
        live.saw_user(9, message_hash("two")).unwrap();
        assert_eq!(live.delivered(), 3);
    }

    #[test]
    fn a_new_pod_counts_from_its_base() {
        let t = target(&["prompt", "a", "b"], 2);
        let mut live = Live::new(&t, Utc::now());
        assert_eq!(live.delivered(), 2);
        assert_eq!(live.facts().pending, 1);
        // The fresh agent's history does not contain "prompt" or "a": only "b" counts.
        live.saw_user(1, message_hash("b")).unwrap();
        assert_eq!(live.delivered(), 3);
        assert_eq!(live.facts().pending, 0);
    }

    #[test]
    fn settled_needs_reachable_idle_and_nothing_pending() {
        let t = target(&["prompt"], 0);
        let now = Utc::now();
        let mut live = Live::new(&t, now);
        live.reachable = Reachability::Reachable;
        live.status = Some(Status::Stable);
        live.idle_since = Some(now);
        assert_eq!(
            live.facts().settled_since,
            None,
            "not reached by this worker"
        );
        live.verified = true;
        assert_eq!(live.facts().settled_since, None, "prompt pending");
        live.saw_user(1, message_hash("prompt")).unwrap();
        let later = now + chrono::Duration::seconds(5);
        live.last_delivery = Some(later);
        assert_eq!(live.facts().settled_since, Some(later));
        live.status = Some(Status::Running);
        assert_eq!(live.facts().settled_since, None);
    }

    #[test]
    fn an_agent_not_reached_yet_is_quiet_since_the_worker_started_at_the_earliest() {
        let mut t = target(&[], 0);
        let long_ago = Utc::now() - chrono::Duration::hours(3);
        t.seed = Seed {
            state: Some(AgentState::Idle),
            reachable: Reachability::Reachable,
            idle_since: Some(long_ago),
            last_activity: Some(long_ago),
            ..Seed::default()
        };
        let now = Utc::now();
        let mut live = Live::new(&t, now);
        // Restarted operator: the stored status says idle for hours, but nothing is decided on
        // it before this worker reached the agent.
        assert_eq!(live.facts().last_activity, now);
        assert_eq!(live.facts().settled_since, None);
        assert_eq!(
            live.snapshot().state,
            Some(AgentState::Idle),
            "status unchanged"
        );
        live.verified = true;
        live.idle_since = Some(long_ago);
        assert_eq!(live.facts().last_activity, long_ago);
        assert_eq!(live.facts().settled_since, Some(long_ago));
    }

    #[test]
    fn activity_times_are_whole_seconds_like_the_stored_status() {
        let t = DateTime::from_timestamp(1_800_000_123, 456_789_000).unwrap();
        let s = Snapshot {
            last_activity: Some(t),
            ..Snapshot::default()
        };
        let written = s.to_status().last_activity_time.unwrap();
        assert_eq!(crate::time::from_k8s(&written).timestamp_subsec_nanos(), 0);
        assert_eq!(crate::time::from_k8s(&written).timestamp(), 1_800_000_123);
    }

    #[test]
    fn snapshot_states() {
        let t = target(&[], 0);
        let mut live = Live::new(&t, Utc::now());
        assert_eq!(live.snapshot().state, Some(AgentState::Starting));
        live.reachable = Reachability::Unreachable {
            reason: "ConnectionFailed".into(),
            message: "refused".into(),
        };
        assert_eq!(
            live.snapshot().state,
            Some(AgentState::Starting),
            "never reached: still starting"
        );
        live.reached = true;
        assert_eq!(live.snapshot().state, Some(AgentState::Unreachable));
        live.reachable = Reachability::Reachable;
        live.status = Some(Status::Running);
        assert_eq!(live.snapshot().state, Some(AgentState::Working));
        live.status = Some(Status::Stable);
        assert_eq!(live.snapshot().state, Some(AgentState::Idle));
    }

    #[test]
    fn only_state_changes_are_urgent() {
        let a = Snapshot::default();
        let b = Snapshot {
            last_activity: Some(Utc::now()),
            last_agent_message: Some("x".into()),
            ..a.clone()
        };
        assert!(!b.urgent_change(&a));
        let c = Snapshot {
            delivered: 1,
            ..a.clone()
        };
        assert!(c.urgent_change(&a));
    }

    #[test]
    fn the_last_agent_message_is_redacted_before_it_is_cut_to_500_characters() {
        let token = "ghp_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789";
        let t = target(&[], 0);
        let now = Utc::now();
        let mut live = Live::new(&t, now);
        // One token early, one across the cut: cut first, "ghp_AbCdEf" would stay, too short
        // to be recognised afterwards.
        let content = format!(
            "here: {token} {}{token} {}",
            "x".repeat(443),
            "y".repeat(99)
        );
        assert_eq!(content.rfind(token), Some(490));
        let m = Message {
            id: 3,
            content,
            role: Role::Agent,
            time: None,
        };
        live.saw(&Seen::of(&m), true, now).unwrap();
        let kept = live.snapshot().last_agent_message.unwrap();
        assert_eq!(
            kept,
            format!(
                "here: ghp_[REDACTED] {}ghp_[REDACTED] {}",
                "x".repeat(443),
                "y".repeat(21)
            )
        );
        assert_eq!(kept.chars().count(), 500);
        // A seed from a status written before redaction is cleaned too.
        let mut t = target(&[], 0);
        t.seed = Seed {
            last_agent_message: Some(format!("old {token}")),
            reachable: Reachability::Unreachable {
                reason: "HTTPError".into(),
                message: format!("HTTP 401: {token}"),
            },
            ..Seed::default()
        };
        let live = Live::new(&t, now);
        let s = live.snapshot();
        assert_eq!(s.last_agent_message.as_deref(), Some("old ghp_[REDACTED]"));
        assert_eq!(
            s.reachable,
            Reachability::Unreachable {
                reason: "HTTPError".into(),
                message: "HTTP 401: ghp_[REDACTED]".into(),
            }
        );
    }

    #[test]
    fn appended_entries_are_counted_from_where_the_count_was() {
        let t = target(&["prompt"], 0);
        let mut live = Live::new(&t, Utc::now());
        for (id, text) in [(1, "prompt"), (3, "typed by hand"), (5, "next")] {
            live.saw_user(id, message_hash(text)).unwrap();
        }
        assert_eq!(live.delivered(), 1);
        // "next" was seen before it was in the outbox: the append finds it.
        let grown: Vec<String> = ["prompt", "next", "last"].map(String::from).to_vec();
        live.set_outbox(grown.len(), expected_hashes(&grown, 0));
        assert_eq!((live.delivered(), live.facts().pending), (2, 1));
    }

    #[test]
    fn a_conversation_over_the_message_limit_is_refused_and_known_messages_are_not() {
        let t = target(&["a", "b"], 0);
        let mut live = Live::new(&t, Utc::now());
        live.max_messages = 2;
        live.saw_user(1, message_hash("a")).unwrap();
        live.saw_user(2, message_hash("x")).unwrap();
        assert_eq!(
            live.saw_user(3, message_hash("b")),
            Err(2),
            "a third message"
        );
        assert_eq!(
            live.saw_user(2, message_hash("b")),
            Ok(()),
            "a known id changes its text"
        );
        assert_eq!(live.delivered(), 2);
        let c = SeenConversation {
            user: vec![(1, message_hash("a")), (4, message_hash("y"))],
            last_agent: Some((5, "done".into())),
            latest: None,
        };
        assert_eq!(live.saw_conversation(&c, Utc::now()), Err(2));
    }

    #[test]
    fn a_read_conversation_counts_like_its_messages_one_by_one() {
        let now = Utc::now();
        let early = now - chrono::Duration::seconds(30);
        let t = target(&["fix it", "test it"], 0);
        let c = Conversation {
            user: vec![(1, message_hash("fix it")), (3, message_hash(" test it "))],
            last_agent: Some(Message {
                id: 4,
                content: "working".into(),
                role: Role::Agent,
                time: Some(early),
            }),
            latest: Some(early),
            entries: 4,
        };
        let mut live = Live::new(&t, early - chrono::Duration::seconds(60));
        live.saw_conversation(&SeenConversation::of(c), now)
            .unwrap();
        assert_eq!(live.delivered(), 2);
        assert_eq!(live.last_agent_message.as_deref(), Some("working"));
        assert_eq!(
            live.last_activity, early,
            "its time is activity; reading it is not"
        );
        // An older agent message does not replace the newer one.
        let older = Message {
            id: 2,
            content: "thinking".into(),
            role: Role::Agent,
            time: None,
        };
        live.saw(&Seen::of(&older), true, now).unwrap();
        assert_eq!(live.last_agent_message.as_deref(), Some("working"));
    }

    #[test]
    fn outbox_is_prompt_then_messages() {
        let s: AgentSession = serde_json::from_value(serde_json::json!({
            "apiVersion": "ccplant.io/v1alpha1", "kind": "AgentSession",
            "metadata": {"name": "s", "namespace": "ns"},
            "spec": {"prompt": "fix it", "messages": ["and test it"]},
        }))
        .unwrap();
        assert_eq!(outbox(&s), vec!["fix it", "and test it"]);
    }
}
