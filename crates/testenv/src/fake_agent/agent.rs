//! One fake agent: its conversation, status and event subscribers, the task that plays the
//! script (boot, work, chatter), and the handle tests hold.

use super::http::{self, SseFrame};
use super::{Counts, Mode, Received, Script};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

/// Lines of progress an agent message keeps (like a terminal screen scrolling), so that a
/// chattering agent's events stay small however long it works.
const PROGRESS_LINES: usize = 20;
/// Events buffered per subscriber; a subscriber that falls this far behind is dropped, as
/// agentapi drops a subscriber whose channel (1024 events) is full.
const SUBSCRIBER_BUFFER: usize = 1024;

/// `running` or `stable`, as agentapi reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AgentStatus {
    Running,
    Stable,
}

impl AgentStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            AgentStatus::Running => "running",
            AgentStatus::Stable => "stable",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Agent,
    User,
}

impl Role {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::User => "user",
        }
    }
}

/// One message of the conversation; an agent message is its first line plus scrolling progress.
#[derive(Clone, Debug)]
pub(crate) struct Message {
    pub id: u64,
    pub role: Role,
    pub time: DateTime<Utc>,
    head: String,
    progress: VecDeque<String>,
}

impl Message {
    pub(crate) fn content(&self) -> String {
        let mut lines: Vec<&str> = Vec::with_capacity(self.progress.len() + 1);
        if !self.head.is_empty() {
            lines.push(&self.head);
        }
        lines.extend(self.progress.iter().map(String::as_str));
        lines.join("\n")
    }
}

/// What the agent is busy with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Boot,
    Work,
    Idle,
}

/// Why `POST /message` refused a user message; the texts are agentapi's.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PostRefusal {
    Empty,
    NotStable,
}

impl PostRefusal {
    pub(crate) fn message(&self) -> &'static str {
        match self {
            PostRefusal::Empty => "message must not be empty",
            PostRefusal::NotStable => {
                "message can only be sent when the agent is waiting for user input"
            }
        }
    }
}

pub(crate) struct State {
    pub script: Script,
    pub status: AgentStatus,
    pub messages: Vec<Message>,
    pub received: Vec<Received>,
    pub counts: Counts,
    phase: Phase,
    running_since: Instant,
    next_tick: Option<Instant>,
    ticks: u64,
    subscribers: Vec<mpsc::Sender<Bytes>>,
}

impl State {
    fn new(script: Script) -> Self {
        let now = Instant::now();
        let booting = !script.boot.is_zero();
        let greeting = Message {
            id: 0,
            role: Role::Agent,
            time: Utc::now(),
            head: script.greeting.clone(),
            progress: VecDeque::new(),
        };
        State {
            status: if booting {
                AgentStatus::Running
            } else {
                AgentStatus::Stable
            },
            phase: if booting { Phase::Boot } else { Phase::Idle },
            script,
            messages: vec![greeting],
            received: Vec::new(),
            counts: Counts::default(),
            running_since: now,
            next_tick: None,
            ticks: 0,
            subscribers: Vec::new(),
        }
    }

    fn emit(&mut self, frame: &SseFrame) {
        let bytes = frame.encode();
        // A full buffer or a closed stream ends the subscription, as in agentapi.
        self.subscribers
            .retain(|tx| tx.try_send(bytes.clone()).is_ok());
    }

    fn set_status(&mut self, status: AgentStatus) {
        if self.status == status {
            return;
        }
        self.status = status;
        let frame = SseFrame::status_change(status, &self.script.agent_type);
        self.emit(&frame);
    }

    /// The last message, an agent message (a new, empty one after a user message).
    fn last_agent_message(&mut self) -> &mut Message {
        let needs_reply = self.messages.last().is_none_or(|m| m.role == Role::User);
        if needs_reply {
            self.messages.push(Message {
                id: self.messages.len() as u64,
                role: Role::Agent,
                time: Utc::now(),
                head: String::new(),
                progress: VecDeque::new(),
            });
        }
        let last = self.messages.len() - 1;
        &mut self.messages[last]
    }

    fn update_agent_message(&mut self, line: String) {
        let message = self.last_agent_message();
        message.progress.push_back(line);
        while message.progress.len() > PROGRESS_LINES {
            message.progress.pop_front();
        }
        message.time = Utc::now();
        let frame = SseFrame::message_update(message);
        self.emit(&frame);
    }

    /// Accepts a user message (agentapi: trim, refuse empty, refuse unless stable).
    pub(crate) fn post_user(&mut self, content: &str) -> Result<(), PostRefusal> {
        let content = content.trim();
        if content.is_empty() {
            return Err(PostRefusal::Empty);
        }
        if self.status != AgentStatus::Stable {
            return Err(PostRefusal::NotStable);
        }
        self.set_status(AgentStatus::Running);
        let message = Message {
            id: self.messages.len() as u64,
            role: Role::User,
            time: Utc::now(),
            head: content.to_string(),
            progress: VecDeque::new(),
        };
        let frame = SseFrame::message_update(&message);
        self.messages.push(message);
        self.emit(&frame);
        self.received.push(Received {
            content: content.to_string(),
            at: SystemTime::now(),
        });
        self.phase = Phase::Work;
        self.running_since = Instant::now();
        self.next_tick = None;
        self.ticks = 0;
        Ok(())
    }

    /// A new subscriber: the events that reconstruct the current state, then live events.
    pub(crate) fn subscribe(&mut self) -> mpsc::Receiver<Bytes> {
        let replay: Vec<SseFrame> = self
            .messages
            .iter()
            .map(SseFrame::message_update)
            .chain([SseFrame::status_change(
                self.status,
                &self.script.agent_type,
            )])
            .collect();
        let (tx, rx) = mpsc::channel(SUBSCRIBER_BUFFER.max(replay.len() + 64));
        for frame in &replay {
            // Cannot fail: the buffer holds the whole replay and the receiver is here.
            let _ = tx.try_send(frame.encode());
        }
        self.subscribers.push(tx);
        rx
    }

    /// Plays the script up to `now`; returns when it next has something to do.
    fn advance(&mut self, now: Instant) -> Option<Instant> {
        let limit = match self.phase {
            Phase::Idle => return None,
            Phase::Boot => self.script.boot,
            Phase::Work => self.script.work,
        };
        let deadline = self.running_since.checked_add(limit);
        let period = (self.script.chatter_per_sec > 0)
            .then(|| Duration::from_secs(1) / self.script.chatter_per_sec);
        match period {
            Some(period) => {
                let mut next = self.next_tick.unwrap_or(self.running_since + period);
                if next <= now && deadline.is_none_or(|d| next < d) {
                    self.ticks += 1;
                    let verb = if self.phase == Phase::Boot {
                        "starting"
                    } else {
                        "working"
                    };
                    self.update_agent_message(format!("{verb} ({})", self.ticks));
                    // Catch up after a short stall, but not with a burst after a long one.
                    next += period;
                    if next + period < now {
                        next = now;
                    }
                }
                self.next_tick = Some(next);
            }
            None => self.next_tick = None,
        }
        if deadline.is_some_and(|d| d <= now) {
            if self.phase == Phase::Work {
                self.update_agent_message("Done.".to_string());
            }
            self.phase = Phase::Idle;
            self.next_tick = None;
            self.set_status(AgentStatus::Stable);
            return None;
        }
        match (self.next_tick, deadline) {
            (Some(tick), Some(d)) => Some(tick.min(d)),
            (tick, d) => tick.or(d),
        }
    }
}

/// State shared by the handle, the script task and the connections.
pub(crate) struct Shared {
    pub addr: SocketAddr,
    state: Mutex<State>,
    wake: Notify,
    pub events_sent: AtomicU64,
    /// Body bytes written by [`Mode::Flood`] answers.
    pub flood_bytes: AtomicU64,
}

impl Shared {
    /// The state, also after a panic elsewhere.
    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes the script task (the state changed outside of it).
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }
}

/// Plays the script: boot, work after each user message, chatter while running.
async fn play(shared: Arc<Shared>) {
    loop {
        let next = shared.state().advance(Instant::now());
        match next {
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at.into()) => {}
                    _ = shared.wake.notified() => {}
                }
            }
            None => shared.wake.notified().await,
        }
    }
}

struct Tasks {
    server: JoinHandle<()>,
    script: JoinHandle<()>,
}

struct Inner {
    shared: Arc<Shared>,
    tasks: Mutex<Option<Tasks>>,
}

impl Inner {
    fn take_tasks(&self) -> Option<Tasks> {
        self.tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(tasks) = self.take_tasks() {
            tasks.server.abort();
            tasks.script.abort();
        }
    }
}

/// A fake agentapi server on one address. Clones are handles to the same agent; it stops on
/// [`FakeAgent::stop`] or when the last handle is dropped.
#[derive(Clone)]
pub struct FakeAgent {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for FakeAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeAgent")
            .field("addr", &self.inner.shared.addr)
            .finish()
    }
}

impl FakeAgent {
    /// Binds exactly `addr` (port 0: any free port) and serves until stopped.
    pub async fn start(addr: SocketAddr, script: Script) -> anyhow::Result<FakeAgent> {
        let listener = TcpListener::bind(addr).await?;
        Ok(Self::serve(listener, script))
    }

    pub(crate) fn serve(listener: TcpListener, script: Script) -> FakeAgent {
        let addr = listener.local_addr().unwrap_or_else(|_| {
            // Only fails for a closed socket, which a fresh listener is not.
            SocketAddr::from(([0, 0, 0, 0], 0))
        });
        let shared = Arc::new(Shared {
            addr,
            state: Mutex::new(State::new(script)),
            wake: Notify::new(),
            events_sent: AtomicU64::new(0),
            flood_bytes: AtomicU64::new(0),
        });
        let tasks = Tasks {
            server: tokio::spawn(http::serve(listener, shared.clone())),
            script: tokio::spawn(play(shared.clone())),
        };
        FakeAgent {
            inner: Arc::new(Inner {
                shared,
                tasks: Mutex::new(Some(tasks)),
            }),
        }
    }

    /// The address it serves on.
    pub fn addr(&self) -> SocketAddr {
        self.inner.shared.addr
    }

    /// `http://<addr>`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// Changes the behaviour from now on: a shorter `work` ends the current work at once if it
    /// already lasted that long; [`Mode::Refuse`] and [`Mode::Drop`] end open event streams.
    pub fn set_script(&self, script: Script) {
        let mut state = self.inner.shared.state();
        if script.mode != Mode::Serve {
            state.subscribers.clear();
        }
        state.script = script;
        drop(state);
        self.inner.shared.wake();
    }

    /// The current script.
    pub fn script(&self) -> Script {
        self.inner.shared.state().script.clone()
    }

    /// `running` or `stable`, as `/status` reports it.
    pub fn status(&self) -> &'static str {
        self.inner.shared.state().status.as_str()
    }

    /// User messages accepted by `POST /message`, in order.
    pub fn received(&self) -> Vec<Received> {
        self.inner.shared.state().received.clone()
    }

    /// Requests received per endpoint, and connections accepted.
    pub fn requests(&self) -> Counts {
        self.inner.shared.state().counts
    }

    /// Server-sent events written to subscribers' streams (replays included).
    pub fn events_sent(&self) -> u64 {
        self.inner.shared.events_sent.load(Ordering::Relaxed)
    }

    /// Body bytes its [`Mode::Flood`] answers wrote so far (as the client read them).
    pub fn flood_bytes(&self) -> u64 {
        self.inner.shared.flood_bytes.load(Ordering::Relaxed)
    }

    /// Event streams currently subscribed (a disconnected one counts until the next event).
    pub fn subscribers(&self) -> usize {
        let mut state = self.inner.shared.state();
        state.subscribers.retain(|tx| !tx.is_closed());
        state.subscribers.len()
    }

    /// Whether it still serves (not stopped).
    pub fn is_serving(&self) -> bool {
        self.inner
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .is_some_and(|t| !t.server.is_finished())
    }

    /// Whether both are handles to the same agent.
    pub(crate) fn same(&self, other: &FakeAgent) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Stops serving without waiting (the address is free shortly after).
    pub(crate) fn abort(&self) {
        if let Some(tasks) = self.inner.take_tasks() {
            tasks.server.abort();
            tasks.script.abort();
        }
    }

    /// Stops serving and closes every connection; the address is free when this returns. Other
    /// handles stay usable for their observations.
    pub async fn stop(&self) {
        let Some(tasks) = self.inner.take_tasks() else {
            return;
        };
        tasks.server.abort();
        tasks.script.abort();
        // Awaiting the aborted tasks drops the listener and, with the server task, its
        // connections.
        let _ = tasks.server.await;
        let _ = tasks.script.await;
        self.inner.shared.state().subscribers.clear();
    }
}
