//! The rules of the agent conversation (pure): which worker a Running session needs, what
//! `status.agent` and `AgentReachable` show, and when `completion: WhenIdle` or
//! `lifetime.idleTimeout` ends the session. The worker (`conversation.rs`) does the talking;
//! decisions read its live facts, so they are exact.

use super::super::children::PodSummary;
use super::super::conversation::{self, Facts, Reachability, Seed, Snapshot, Target, View};
use super::super::observe::Observed;
use super::status::Next;
use super::until;
use ccplant_api::conditions::{ConditionStatus, find_condition, reasons, types};
use ccplant_api::{
    AgentSession, AgentSessionPhase, AgentSessionStatus, AgentState, CompletionMode,
};
use chrono::{DateTime, Utc};
use kube::ResourceExt;
use std::net::SocketAddr;
use std::time::Duration;

/// What the agent worker must do.
#[derive(Clone, Debug, Default)]
pub enum AgentStep {
    /// Nothing: it runs as it should, or none should run and none does.
    #[default]
    Keep,
    /// Start it, or hand it the new outbox, or replace one that talks to another pod.
    Run(Box<Target>),
}

/// Why the conversation ends the session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct End {
    pub phase: AgentSessionPhase,
    pub reason: &'static str,
    pub message: String,
}

/// What the conversation asks of the reconcile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Go on; reconcile again by then (a completion or idle deadline).
    Continue(Option<Duration>),
    /// Stop the agent and its pod: completion.mode WhenIdle (Succeeded) or
    /// lifetime.idleTimeout (Suspended with a workspace, else Expired) was reached.
    End(End),
}

/// The conversation of a Running session: the worker it needs, what status shows, and whether
/// it ends the session.
pub fn converse(
    session: &AgentSession,
    stored: &AgentSessionStatus,
    pod: &PodSummary,
    observed: &Observed,
    next: &mut Next,
    now: DateTime<Utc>,
) -> (AgentStep, Outcome) {
    let Some(addr) = agent_address(session, pod) else {
        return (AgentStep::Keep, Outcome::Continue(None));
    };
    let target = Target {
        session: super::super::children::session_ref(session),
        session_uid: session.uid().unwrap_or_default(),
        pod_uid: pod.uid,
        addr,
        outbox: conversation::outbox(session),
        base: pod.delivered_before as usize,
        seed: seed(stored),
        started: now,
    };
    let (step, view) = match &observed.worker {
        Some(w) if w.alive && w.pod_uid == pod.uid && w.addr == addr => {
            let step = if *w.outbox != target.outbox {
                AgentStep::Run(Box::new(target.clone()))
            } else {
                AgentStep::Keep
            };
            (step, w.view.clone())
        }
        _ => (
            AgentStep::Run(Box::new(target.clone())),
            conversation::initial_view(&target),
        ),
    };
    next.status.agent = Some(view.published.to_status());
    let (status, reason, message) = reachable_condition(&view.published.reachable, addr);
    next.condition(types::AGENT_REACHABLE, (status, reason, &message));
    let facts = with_outbox(&view, target.outbox.len());
    (step, outcome(session, &facts, now))
}

/// Where the agent API listens: the pod's IP and the agent port.
fn agent_address(session: &AgentSession, pod: &PodSummary) -> Option<SocketAddr> {
    let ip = pod.ip.as_deref()?.parse::<std::net::IpAddr>().ok()?;
    let port = u16::try_from(session.spec.effective_port()).ok()?;
    Some(SocketAddr::new(ip, port))
}

/// A worker taking over the same pod's agent (operator restart) starts from the stored status,
/// so the restart writes nothing; a new pod's agent starts fresh.
pub fn seed(stored: &AgentSessionStatus) -> Seed {
    let agent = stored.agent.clone().unwrap_or_default();
    if stored.phase != Some(AgentSessionPhase::Running) {
        return Seed {
            last_agent_message: agent.last_agent_message,
            ..Seed::default()
        };
    }
    let reachable = find_condition(&stored.conditions, types::AGENT_REACHABLE).map_or(
        Reachability::Unknown,
        |c| match c.status.as_str() {
            "True" => Reachability::Reachable,
            "False" => Reachability::Unreachable {
                reason: c.reason.clone(),
                message: c.message.clone(),
            },
            _ => Reachability::Unknown,
        },
    );
    let last_activity = agent.last_activity_time.as_ref().map(crate::time::from_k8s);
    Seed {
        state: agent.state,
        reachable,
        delivered: usize::try_from(agent.delivered_messages).unwrap_or(0),
        idle_since: last_activity.filter(|_| agent.state == Some(AgentState::Idle)),
        last_activity,
        last_agent_message: agent.last_agent_message,
    }
}

/// `AgentReachable` for what the worker published.
pub fn reachable_condition(r: &Reachability, addr: SocketAddr) -> (ConditionStatus, &str, String) {
    match r {
        Reachability::Unknown => (
            ConditionStatus::Unknown,
            reasons::CONNECTING,
            format!("connecting to the agent API at {addr}"),
        ),
        Reachability::Reachable => (
            ConditionStatus::True,
            reasons::REACHABLE,
            format!("the agent API answers at {addr}"),
        ),
        Reachability::Unreachable { reason, message } => {
            (ConditionStatus::False, reason.as_str(), message.clone())
        }
    }
}

/// The worker's facts against the session's outbox as it is now: entries appended since the
/// worker last saw the outbox are pending, so the session is not settled.
fn with_outbox(view: &View, outbox_len: usize) -> Facts {
    let mut facts = view.facts.clone();
    facts.pending = outbox_len.saturating_sub(facts.delivered);
    if facts.pending > 0 {
        facts.settled_since = None;
    }
    facts
}

/// completion.mode WhenIdle and lifetime.idleTimeout, on the live facts.
pub fn outcome(session: &AgentSession, facts: &Facts, now: DateTime<Utc>) -> Outcome {
    let mut due: Option<Duration> = None;
    if session.spec.completion.mode == CompletionMode::WhenIdle
        && let Some(since) = facts.settled_since
        && let Ok(idle_for) = session.spec.completion_idle_for()
    {
        let at = since + chrono::Duration::from_std(idle_for).unwrap_or_default();
        if now >= at {
            return Outcome::End(End {
                phase: AgentSessionPhase::Succeeded,
                reason: reasons::COMPLETED,
                message: format!(
                    "every message was delivered and the agent then stayed idle for {}",
                    session.spec.completion.idle_for
                ),
            });
        }
        due = Some(until(at, now));
    }
    let working = facts.reachable && !facts.idle;
    if let Ok(Some(timeout)) = session.spec.idle_timeout()
        && !working
        && facts.pending == 0
    {
        let quiet_since = facts
            .settled_since
            .map_or(facts.last_activity, |s| s.max(facts.last_activity));
        let at = quiet_since + chrono::Duration::from_std(timeout).unwrap_or_default();
        if now >= at {
            return Outcome::End(idle_end(session));
        }
        let d = until(at, now);
        due = Some(due.map_or(d, |x| x.min(d)));
    }
    Outcome::Continue(due)
}

/// idleTimeout: Suspended when the session has a workspace to come back to, else Expired.
fn idle_end(session: &AgentSession) -> End {
    let text = session
        .spec
        .lifetime
        .idle_timeout
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default();
    let (phase, message) = if super::super::build::has_workspace_volume(session) {
        (
            AgentSessionPhase::Suspended,
            format!(
                "suspended after {text} without agent activity; a new message or `kubectl ccplant resume` resumes it"
            ),
        )
    } else {
        (
            AgentSessionPhase::Expired,
            format!("expired after {text} without agent activity"),
        )
    };
    End {
        phase,
        reason: reasons::IDLE_TIMEOUT,
        message,
    }
}

/// No agent runs (any more): `status.agent` keeps the last word — the delivered count,
/// activity and last message, merged with the stopped worker's last state — and drops the
/// state; `AgentReachable` (if shown) says why.
pub fn agent_not_running(next: &mut Next, stopped: Option<&Snapshot>) {
    let Some(mut agent) = next
        .status
        .agent
        .clone()
        .or_else(|| stopped.map(|_| Default::default()))
    else {
        return;
    };
    if let Some(last) = stopped {
        let s = last.to_status();
        agent.delivered_messages = agent.delivered_messages.max(s.delivered_messages);
        agent.last_activity_time = s.last_activity_time.or(agent.last_activity_time);
        agent.last_agent_message = s.last_agent_message.or(agent.last_agent_message);
    }
    agent.state = None;
    next.status.agent = Some(agent);
    if find_condition(&next.status.conditions, types::AGENT_REACHABLE).is_some() {
        next.condition(
            types::AGENT_REACHABLE,
            (
                ConditionStatus::False,
                reasons::NOT_RUNNING,
                "the session's pod is not running",
            ),
        );
    }
}

/// The session was suspended by the operator after `lifetime.idleTimeout` and nothing asked
/// for it back: no new message and no `ccplant.io/resume-requested-at` after the suspension.
pub fn idle_suspended(session: &AgentSession, stored: &AgentSessionStatus) -> bool {
    if stored.phase != Some(AgentSessionPhase::Suspended) {
        return false;
    }
    // When the suspension began: the Suspended condition's transition (Ready's for a status
    // written before that condition existed).
    let Some(suspension) = find_condition(&stored.conditions, types::SUSPENDED)
        .or_else(|| find_condition(&stored.conditions, types::READY))
    else {
        return false;
    };
    if suspension.reason != reasons::IDLE_TIMEOUT {
        return false;
    }
    let delivered = stored
        .agent
        .as_ref()
        .map_or(0, |a| usize::try_from(a.delivered_messages).unwrap_or(0));
    if session.spec.total_messages() > delivered {
        return false;
    }
    let suspended_at = crate::time::from_k8s(&suspension.last_transition_time);
    let resume_requested = session
        .annotations()
        .get(ccplant_api::annotations::RESUME_REQUESTED_AT)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .is_some_and(|t| t.with_timezone(&Utc) > suspended_at);
    !resume_requested
}
