//! The rules of an AgentSession (DESIGN §3.1), as one pure function: [`decide`] takes the
//! session, what was observed of its world, the time and the operator's configuration, and
//! returns the [`Plan`]: the children to write or delete, the agent worker to run or stop, the
//! token to issue or revoke, the whole next status, the Event, and when to come back. No
//! client, no clock but `now`: every rule has a table test (`tests.rs`).
//!
//! The session is in one [`Stage`], first match wins: it finished earlier; its spec cannot be
//! acted on; it ran past `expiresAt`; it is suspended; else it is active. A step whose outcome
//! the rest depends on — issuing a token (a mint can fail), stopping the agent worker (its last
//! delivered count goes into the status and the next pod) — is planned alone as
//! [`Plan::first`]; the reconcile performs it and decides again with what it learned.

pub mod class;
pub mod conversation;
pub mod credentials;
pub mod queue;
pub mod status;
#[cfg(test)]
mod tests;

use super::build::{self, BuildConfig};
use super::children::{Control, PodSummary};
use super::conversation::DELIVERED_BEFORE_ANNOTATION;
use super::credentials::RevokeRequest;
use super::names::SessionNames;
use super::observe::Observed;
use super::pod_state::PodState;
use crate::events::Event;
use crate::time::{from_k8s, to_k8s};
use ccplant_api::conditions::{Progress, reasons, types};
use ccplant_api::{AgentSession, AgentSessionPhase, AgentSessionStatus};
use chrono::{DateTime, Utc};
use conversation::{AgentStep, End, Outcome};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::ResourceExt;
use status::{CredentialsShown, Next, Verdict};
use std::sync::Arc;
use std::time::Duration;

/// How long a session whose child the apiserver refused waits before trying again.
pub const REJECTED_RETRY: Duration = Duration::from_secs(300);
/// How soon a session whose child's name is taken looks again (the other object is not
/// watched: it carries none of the session's marks).
pub const NAME_CONFLICT_RETRY: Duration = Duration::from_secs(60);
/// How soon a session whose pod is still terminating looks again.
pub const TERMINATING_RETRY: Duration = Duration::from_secs(2);

/// The operator's settings the rules depend on.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    pub build: BuildConfig,
    /// `--max-session-duration`: the cap of every `lifetime.maxDuration`.
    pub max_session_duration: Duration,
}

/// The finalizer a session carries while it holds a live GitHub App installation token.
pub const REVOKE_FINALIZER: &str = "ccplant.io/revoke-token";

/// Where a session is in its life.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stage {
    /// It is being deleted (it carries the finalizer): its token is revoked, then it goes.
    Deleting,
    /// It finished earlier (stored phase Succeeded, Failed or Expired).
    Finished(AgentSessionPhase),
    /// Its spec breaks a rule the schema could not enforce: the message says which.
    Invalid(String),
    /// It ran past `expiresAt`.
    Expired,
    /// `spec.suspend`, or suspended after `lifetime.idleTimeout` and not asked back.
    Suspended,
    Active,
}

/// The stage of `session` (pure; `observe` uses it too, to know which reads are needed).
pub fn stage(session: &AgentSession, cfg: &SessionConfig, now: DateTime<Utc>) -> Stage {
    let stored = session.status.clone().unwrap_or_default();
    if session.metadata.deletion_timestamp.is_some() {
        return Stage::Deleting;
    }
    if let Some(phase) = stored.phase.filter(|p| p.is_finished()) {
        return Stage::Finished(phase);
    }
    if let Err(message) = check(session, cfg) {
        return Stage::Invalid(message);
    }
    if now >= lifetime(session, cfg, now).1 {
        return Stage::Expired;
    }
    if session.spec.suspend || conversation::idle_suspended(session, &stored) {
        return Stage::Suspended;
    }
    Stage::Active
}

/// What the schema cannot refuse: the spec's own rules, and whether a pod can be built.
fn check(session: &AgentSession, cfg: &SessionConfig) -> Result<(), String> {
    session.spec.validate().map_err(|e| e.to_string())?;
    // Whether the pod mounts credentials changes nothing that could fail.
    build::desired_pod(session, &cfg.build, true)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Start and exact expiry, counted from creation (stable across operator restarts).
pub fn lifetime(
    session: &AgentSession,
    cfg: &SessionConfig,
    now: DateTime<Utc>,
) -> (DateTime<Utc>, DateTime<Utc>) {
    let start = session
        .metadata
        .creation_timestamp
        .as_ref()
        .map(from_k8s)
        .unwrap_or(now);
    let max = session
        .spec
        .max_duration()
        .unwrap_or(cfg.max_session_duration)
        .min(cfg.max_session_duration);
    (
        start,
        start + chrono::Duration::from_std(max).unwrap_or_default(),
    )
}

/// How long until `t`, zero if past.
pub fn until(t: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    (t - now).to_std().unwrap_or_default()
}

/// What every rule of one decision reads.
#[derive(Clone, Copy)]
struct Given<'a> {
    session: &'a AgentSession,
    observed: &'a Observed,
    cfg: &'a SessionConfig,
    now: DateTime<Utc>,
    expires_at: DateTime<Utc>,
}

/// A step the rest of the plan depends on: performed alone, then decided again.
#[derive(Clone, Debug)]
pub enum First {
    Token(credentials::Issue),
    /// Add the finalizer `ccplant.io/revoke-token` before a GitHub App token is minted, so a
    /// deletion revokes it first.
    AddFinalizer,
    /// Stop the agent worker (because the conversation ended the session, if `end` is set).
    StopAgent {
        end: Option<End>,
    },
}

/// How a child is written: created when absent (an object of that name that appeared
/// meanwhile is a [`reasons::NAME_CONFLICT`], never adopted), or applied over the session's own
/// object, whose uid (when known) is a precondition.
#[derive(Clone, Debug)]
pub enum Write<T> {
    Create(T),
    Apply { object: T, uid: Option<Arc<str>> },
}

impl<T> Write<T> {
    /// Created when nothing is there, else applied over `present` (the session's own: a
    /// conflict was ruled out before).
    fn over(object: T, present: Option<&Control>) -> Self {
        match present {
            None => Write::Create(object),
            Some(c) => Write::Apply {
                object,
                uid: c.uid.clone(),
            },
        }
    }

    pub fn object(&self) -> &T {
        match self {
            Write::Create(object) | Write::Apply { object, .. } => object,
        }
    }

    /// "create" or "apply".
    pub fn verb(&self) -> &'static str {
        match self {
            Write::Create(_) => "create",
            Write::Apply { .. } => "apply",
        }
    }
}

/// A deletion of one of the session's children, only if it is still the object observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delete {
    /// The child's uid (a precondition); `None` for a child created moments ago and not seen yet.
    pub uid: Option<Arc<str>>,
}

/// Children to write: the workspace claim first, then the rest at once.
#[derive(Clone, Debug, Default)]
pub struct ChildWrites {
    pub pvc: Option<Write<PersistentVolumeClaim>>,
    pub service: Option<Write<Service>>,
    pub network_policy: Option<Write<NetworkPolicy>>,
    /// Isolation was turned off: the NetworkPolicy goes.
    pub delete_network_policy: Option<Delete>,
    /// Created, never updated in place.
    pub pod: Option<Pod>,
    /// The editor's login Secret `<name>-editor` is made sure of (created with a fresh
    /// password when absent, never changed) before the pod that reads it.
    pub editor_secret: bool,
}

/// What one reconcile does.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// When set, the reconcile does only this and decides again with what it learned.
    pub first: Option<First>,
    pub children: ChildWrites,
    pub delete_pod: Option<Delete>,
    pub revoke: Option<RevokeRequest>,
    pub agent: AgentStep,
    pub status: AgentSessionStatus,
    pub event: Option<Event>,
    /// `ttlAfterFinished` passed: the session itself goes (after its status).
    pub delete_session: bool,
    /// Remove the finalizer `ccplant.io/revoke-token` (after `revoke`, when it succeeded):
    /// no live App token is left.
    pub remove_finalizer: bool,
    /// When to come back; `None`: only on a change.
    pub requeue: Option<Duration>,
}

impl Plan {
    /// Only `step`: the rest is decided again with its outcome (so nothing else of this plan,
    /// its status included, is ever used).
    fn first(step: First) -> Self {
        Plan {
            first: Some(step),
            ..Plan::default()
        }
    }
}

/// The plan for `session` (see the module documentation): for a session that is neither being
/// deleted nor finished, the plan for the session as its class allows it
/// ([`class::effective`]), or the class's refusal.
pub fn decide(
    session: &AgentSession,
    observed: &Observed,
    now: DateTime<Utc>,
    cfg: &SessionConfig,
) -> Plan {
    let finished = session
        .status
        .as_ref()
        .and_then(|s| s.phase)
        .is_some_and(|p| p.is_finished());
    if session.metadata.deletion_timestamp.is_some() || finished {
        return decide_effective(session, observed, now, cfg);
    }
    match class::effective(session, &observed.class_lookup()) {
        Ok(effective) => decide_effective(&effective, observed, now, cfg),
        Err(refusal) => class_refused(session, refusal, now, cfg),
    }
}

/// A session its class does not allow (or whose class is not there): Pending, nothing
/// touched; a rule is looked at again in [`NAME_CONFLICT_RETRY`] (a class change does not wake
/// sessions), a missing class with backoff.
fn class_refused(
    session: &AgentSession,
    refusal: crate::policy::Refusal,
    now: DateTime<Utc>,
    cfg: &SessionConfig,
) -> Plan {
    use crate::policy::Refusal;
    let (stored, mut next, _) = next_status(session, cfg, now);
    let (verdict, requeue) = match refusal {
        Refusal::NotAllowed(message) => (
            Verdict::new(AgentSessionPhase::Pending, reasons::NOT_ALLOWED, message).stalled(),
            NAME_CONFLICT_RETRY,
        ),
        Refusal::NotFound(message) | Refusal::NoCredential(message) => {
            let since = ccplant_api::conditions::find_condition(&stored.conditions, types::READY)
                .filter(|c| c.reason == reasons::CLASS_NOT_FOUND)
                .map(|c| from_k8s(&c.last_transition_time));
            (
                Verdict::new(
                    AgentSessionPhase::Pending,
                    reasons::CLASS_NOT_FOUND,
                    message,
                ),
                crate::time::pending_backoff(since, now),
            )
        }
    };
    next.verdict(&verdict);
    let event = status::announce(&stored, &next.status);
    Plan {
        status: next.status,
        event,
        requeue: Some(requeue),
        ..Plan::default()
    }
}

/// The stored status, the next one begun from it with the start and exact expiry, and the expiry.
fn next_status(
    session: &AgentSession,
    cfg: &SessionConfig,
    now: DateTime<Utc>,
) -> (AgentSessionStatus, Next, DateTime<Utc>) {
    let stored = session.status.clone().unwrap_or_default();
    let mut next = Next::new(&stored, session.metadata.generation, now);
    let (start, expires_at) = lifetime(session, cfg, now);
    next.status.start_time = Some(to_k8s(start));
    next.status.expires_at = Some(to_k8s(expires_at));
    (stored, next, expires_at)
}

fn decide_effective(
    session: &AgentSession,
    observed: &Observed,
    now: DateTime<Utc>,
    cfg: &SessionConfig,
) -> Plan {
    let (stored, mut next, expires_at) = next_status(session, cfg, now);
    let given = Given {
        session,
        observed,
        cfg,
        now,
        expires_at,
    };
    let has_finalizer =
        observed.finalizer_added || session.finalizers().iter().any(|f| f == REVOKE_FINALIZER);
    let stage = stage(session, cfg, now);
    let is_active = stage == Stage::Active;
    let mut plan = match stage {
        Stage::Deleting => {
            // Only the token matters now: revoked, then the finalizer goes (the garbage
            // collector removes the children). The status is left as it is.
            return Plan {
                revoke: credentials::revocation(&observed.credentials, true),
                remove_finalizer: has_finalizer,
                status: stored,
                ..Plan::default()
            };
        }
        Stage::Finished(phase) => finished(&given, next, phase),
        Stage::Invalid(message) => {
            next.verdict(
                &Verdict::new(AgentSessionPhase::Pending, reasons::INVALID_SPEC, message).stalled(),
            );
            Plan {
                status: next.status,
                ..Plan::default()
            }
        }
        Stage::Expired => {
            next.status.work_branch = session.effective_work_branch();
            let message = format!("expired at {}", expires_at.to_rfc3339());
            let verdict = Verdict::new(AgentSessionPhase::Expired, reasons::EXPIRED, message);
            stop(&given, next, verdict, None)
        }
        Stage::Suspended => suspended(&given, next),
        Stage::Active => active(&given, next),
    };
    if let Some(First::Token(credentials::Issue::Mint(_))) = &plan.first
        && !has_finalizer
    {
        plan = Plan::first(First::AddFinalizer);
    }
    // No live App token once the session stopped (its revocation, if any, is in this plan).
    plan.remove_finalizer = has_finalizer && plan.first.is_none() && !is_active;
    if plan.first.is_none() {
        plan.event = status::announce(&stored, &plan.status);
    }
    plan
}

/// A session that finished earlier: nothing may run or stay valid; then `ttlAfterFinished`.
/// The stored verdict is asserted again (a status written before the kstatus conditions gets
/// them).
fn finished(g: &Given<'_>, mut next: Next, phase: AgentSessionPhase) -> Plan {
    let Given {
        session,
        observed,
        now,
        ..
    } = *g;
    if observed.worker.is_some() {
        return Plan::first(First::StopAgent { end: None });
    }
    conversation::agent_not_running(&mut next, observed.stopped.as_ref());
    // Expired, or Succeeded by completion.mode WhenIdle: the pod is stopped. A pod whose agent
    // exited is kept (its logs).
    let running = observed
        .children
        .pod
        .as_ref()
        .is_some_and(|p| alive(&p.state));
    let delete_pod = if phase == AgentSessionPhase::Expired
        || (phase == AgentSessionPhase::Succeeded && running)
    {
        pod_deletion(session, observed)
    } else {
        None
    };
    let revoke = revoke(observed, &mut next);
    let verdict = status::stored_verdict(&next.status, phase);
    next.verdict(&verdict);
    let (delete_session, requeue) = ttl(session, &next.status, now);
    Plan {
        delete_pod,
        revoke,
        status: next.status,
        delete_session,
        requeue,
        ..Plan::default()
    }
}

/// The session stops (expiry, the conversation's end): the agent first, then its pod and token.
fn stop(g: &Given<'_>, mut next: Next, verdict: Verdict, end: Option<End>) -> Plan {
    let Given {
        session,
        observed,
        now,
        ..
    } = *g;
    if observed.worker.is_some() {
        return Plan::first(First::StopAgent { end });
    }
    conversation::agent_not_running(&mut next, observed.stopped.as_ref());
    let revoke = revoke(observed, &mut next);
    next.verdict(&verdict);
    next.unreachable_endpoints();
    let (delete_session, requeue) = if verdict.phase.is_finished() {
        ttl(session, &next.status, now)
    } else {
        (false, None)
    };
    Plan {
        delete_pod: pod_deletion(session, observed),
        revoke,
        status: next.status,
        delete_session,
        requeue,
        ..Plan::default()
    }
}

/// Suspended: the pod goes, the workspace, Service and NetworkPolicy stay.
fn suspended(g: &Given<'_>, mut next: Next) -> Plan {
    let Given {
        session,
        expires_at,
        now,
        ..
    } = *g;
    next.status.work_branch = session.effective_work_branch();
    let verdict = if session.spec.suspend {
        Verdict::new(
            AgentSessionPhase::Suspended,
            reasons::SUSPENDED,
            "suspended: the pod is deleted, the workspace kept",
        )
    } else {
        let stored = session.status.clone().unwrap_or_default();
        Verdict::new(
            AgentSessionPhase::Suspended,
            reasons::IDLE_TIMEOUT,
            stored.message.unwrap_or_default(),
        )
    };
    let (verdict, children, requeue) = match (name_conflict(g), writable(g)) {
        (Some(what), _) => (conflict(what), ChildWrites::default(), NAME_CONFLICT_RETRY),
        (None, Err(message)) => (rejected(&message), ChildWrites::default(), REJECTED_RETRY),
        (None, Ok(children)) => (verdict, children, until(expires_at, now)),
    };
    let mut plan = stop(g, next, verdict, None);
    if plan.first.is_none() {
        plan.children = children;
        plan.requeue = Some(requeue);
    }
    plan
}

/// A child the apiserver refused (or that cannot be built): waits for a change, looks again in
/// [`REJECTED_RETRY`].
fn rejected(message: &str) -> Verdict {
    Verdict::new(
        AgentSessionPhase::Pending,
        reasons::CHILD_REJECTED,
        message.to_string(),
    )
    .stalled()
}

/// A child's name is taken by an object the session does not control: nothing is touched; looks
/// again in [`NAME_CONFLICT_RETRY`] or on a change.
fn conflict(what: String) -> Verdict {
    Verdict::new(AgentSessionPhase::Pending, reasons::NAME_CONFLICT, what).stalled()
}

/// The first of the session's child names taken by an object it does not control (learned
/// from a create, or seen by the watches, or its credentials Secret as read): what it is.
fn name_conflict(g: &Given<'_>) -> Option<String> {
    let Given {
        session, observed, ..
    } = *g;
    if let Some(what) = &observed.conflict {
        return Some(what.clone());
    }
    let uid = session.metadata.uid.as_deref().unwrap_or_default();
    let names = SessionNames::for_session(session);
    let c = &observed.children;
    let foreign = |control: Option<&Control>| control.is_some_and(|c| !c.is_of(uid));
    let has_workspace = session
        .spec
        .workspace
        .as_ref()
        .is_some_and(|w| w.size.is_some());
    let taken = [
        (
            foreign(c.pod.as_ref().map(|p| &p.control)),
            "Pod",
            &names.pod,
        ),
        (
            foreign(c.service.as_ref().map(|s| &s.control)),
            "Service",
            &names.service,
        ),
        (
            session.spec.network.isolate && foreign(c.network_policy.as_ref().map(|p| &p.control)),
            "NetworkPolicy",
            &names.network_policy,
        ),
        (
            has_workspace && foreign(c.pvc.as_ref().map(|p| &p.control)),
            "PersistentVolumeClaim",
            &names.workspace_pvc,
        ),
        (c.foreign_secret, "Secret", &names.credentials_secret),
    ];
    let ns = session.namespace().unwrap_or_default();
    taken
        .into_iter()
        .find(|(taken, ..)| *taken)
        .map(|(_, kind, name)| conflict_message(kind, &ns, name))
}

/// What a session whose child name `kind` `ns/name` is taken says.
pub fn conflict_message(kind: &str, ns: &str, name: &str) -> String {
    format!(
        "{kind} {ns}/{name} exists and is not controlled by this AgentSession: nothing was \
         changed; remove or rename that object, or give the session another name"
    )
}

/// An active session whose child was refused: nothing else is done until [`REJECTED_RETRY`]
/// or a change.
fn rejected_plan(mut next: Next, message: &str) -> Plan {
    next.verdict(&rejected(message));
    Plan {
        status: next.status,
        requeue: Some(REJECTED_RETRY),
        ..Plan::default()
    }
}

/// An active session: credentials first (the clone needs them), then its children, then what
/// its pod says.
fn active(g: &Given<'_>, mut next: Next) -> Plan {
    let Given {
        session,
        observed,
        expires_at,
        now,
        ..
    } = *g;
    next.status.work_branch = session.effective_work_branch();
    if let Some(what) = name_conflict(g) {
        next.verdict(&conflict(what));
        return Plan {
            status: next.status,
            requeue: Some(NAME_CONFLICT_RETRY),
            ..Plan::default()
        };
    }
    if let Some(q) = &observed.queue
        && let queue::Turn::Wait { place, active, max } =
            queue::turn(&session.name_any(), &q.peers, q.max)
    {
        // Nothing is made until its turn: a child's change in the namespace wakes it.
        let message = format!(
            "{} in line: AgentSessionClass {} runs at most {max} sessions at once in namespace {}, and {active} are running",
            queue::ordinal(place),
            q.class,
            session.namespace().unwrap_or_default()
        );
        next.verdict(&Verdict::new(
            AgentSessionPhase::Pending,
            reasons::QUEUED,
            message,
        ));
        return Plan {
            status: next.status,
            ..Plan::default()
        };
    }
    let mut requeue = until(expires_at, now);
    match credentials::decide(session, &observed.credentials, now) {
        credentials::Decision::Issue(issue) => return Plan::first(First::Token(issue)),
        credentials::Decision::Problem {
            reason,
            message,
            progress,
        } => return pending(next, reason, message, progress, now),
        credentials::Decision::Ready { shown, refresh_at } => {
            next.credentials(&shown);
            if let Some(r) = refresh_at {
                requeue = requeue.min(until(r, now).max(Duration::from_secs(1)));
            }
        }
    }
    let children = match writable(g) {
        Err(message) => return rejected_plan(next, &message),
        Ok(children) => children,
    };
    with_pod(g, next, children, requeue)
}

/// Waiting for credentials: `CredentialsReady` and the phase say why; looked at again after as
/// long as it already waited (1 s doubling to 30 s: Secrets are not watched).
fn pending(
    mut next: Next,
    reason: &'static str,
    message: String,
    progress: Progress,
    now: DateTime<Utc>,
) -> Plan {
    next.credentials(&CredentialsShown::Problem {
        reason,
        message: message.clone(),
    });
    let mut verdict = Verdict::new(AgentSessionPhase::Pending, reason, message);
    verdict.progress = progress;
    next.verdict(&verdict);
    let since =
        ccplant_api::conditions::find_condition(&next.status.conditions, types::CREDENTIALS_READY)
            .map(|c| from_k8s(&c.last_transition_time));
    Plan {
        requeue: Some(crate::time::pending_backoff(since, now)),
        status: next.status,
        ..Plan::default()
    }
}

/// The session's pod and what it says.
fn with_pod(
    g: &Given<'_>,
    mut next: Next,
    mut children: ChildWrites,
    mut requeue: Duration,
) -> Plan {
    let Given {
        session,
        observed,
        cfg,
        now,
        ..
    } = *g;
    let pod = observed.children.pod.as_ref();
    if pod.is_none_or(|p| !alive(&p.state)) {
        // The agent is gone with its pod; a new pod gets what the old agent had not.
        if observed.worker.is_some() {
            return Plan::first(First::StopAgent { end: None });
        }
        conversation::agent_not_running(&mut next, observed.stopped.as_ref());
    }
    if pod.is_none() {
        // Missing (first start, resume, or deleted behind our back): created again. A pod
        // still terminating is left alone; its deletion (or the short requeue) re-creates it.
        let has_credentials = observed.credentials.source.is_some();
        match desired_pod(session, cfg, &next.status, has_credentials) {
            Ok(p) => {
                children.pod = Some(p);
                children.editor_secret = session.spec.editor.as_ref().is_some_and(|e| e.enabled);
            }
            Err(message) => return rejected_plan(next, &message),
        }
    }
    if pod.is_some_and(PodSummary::terminating) {
        requeue = requeue.min(TERMINATING_RETRY);
    }
    show_children(g, &mut next);
    let said = pod_says(g, &mut next);
    if let Some(due) = said.due {
        requeue = requeue.min(due);
    }
    if let Some(end) = said.end {
        // The conversation ended the session: its agent, pod and token go.
        let mut plan = stop(g, next, said.verdict, Some(end));
        if plan.first.is_none() {
            plan.children = children;
        }
        return plan;
    }
    if !said.verdict.phase.is_finished() {
        next.verdict(&said.verdict);
        return Plan {
            children,
            agent: said.agent,
            status: next.status,
            requeue: Some(requeue),
            ..Plan::default()
        };
    }
    // The agent exited: its token goes; the pod stays (its logs).
    let revoke = revoke(observed, &mut next);
    next.verdict(&said.verdict);
    next.unreachable_endpoints();
    let (delete_session, requeue) = ttl(session, &next.status, now);
    Plan {
        children,
        revoke,
        status: next.status,
        delete_session,
        requeue,
        ..Plan::default()
    }
}

/// The children `status` names, and whether the workspace volume is bound.
fn show_children(g: &Given<'_>, next: &mut Next) {
    let Given {
        session, observed, ..
    } = *g;
    let names = SessionNames::for_session(session);
    next.status.pod_name = Some(names.pod.clone());
    next.status.service_name = Some(names.service.clone());
    if let Some(size) = session
        .spec
        .workspace
        .as_ref()
        .and_then(|w| w.size.as_ref())
    {
        let bound = observed.children.pvc.as_ref().is_some_and(|p| p.bound);
        let (s, r, m) = status::workspace_condition(&names.workspace_pvc, &size.to_string(), bound);
        next.condition(types::WORKSPACE_READY, (s, r, &m));
    }
}

/// What the pod says of the session.
struct PodSays {
    verdict: Verdict,
    /// The agent worker a Running pod needs.
    agent: AgentStep,
    /// The conversation ended the session.
    end: Option<End>,
    /// When the conversation's next deadline is.
    due: Option<Duration>,
}

fn pod_says(g: &Given<'_>, next: &mut Next) -> PodSays {
    let Given { observed, .. } = *g;
    let says = |verdict| PodSays {
        verdict,
        agent: AgentStep::Keep,
        end: None,
        due: None,
    };
    let pod = observed.children.pod.as_ref();
    match pod.map_or(PodState::Missing, |p| p.state.clone()) {
        PodState::Missing | PodState::Starting | PodState::Terminating => says(Verdict::new(
            AgentSessionPhase::Starting,
            reasons::WAITING,
            "starting the session pod",
        )),
        PodState::Pending { message } => says(Verdict::new(
            AgentSessionPhase::Starting,
            reasons::WAITING,
            message,
        )),
        PodState::Running => running(g, next),
        PodState::Succeeded => says(Verdict::new(
            AgentSessionPhase::Succeeded,
            reasons::SUCCEEDED,
            "the agent finished successfully",
        )),
        PodState::Failed { reason, message } => {
            let text = if reason.is_empty() {
                message
            } else {
                format!("{reason}: {message}")
            };
            says(Verdict::new(
                AgentSessionPhase::Failed,
                reasons::FAILED,
                text,
            ))
        }
    }
}

/// A Running pod: the endpoints, and what the conversation says.
fn running(g: &Given<'_>, next: &mut Next) -> PodSays {
    let Given {
        session,
        observed,
        now,
        ..
    } = *g;
    let names = SessionNames::for_session(session);
    next.status.endpoint = build::endpoint(session, &names);
    next.status.editor_url = build::editor_url(session, &names);
    let stored = session.status.clone().unwrap_or_default();
    let (agent, outcome) = match (&observed.ended, &observed.children.pod) {
        // The worker was stopped because the conversation ended the session.
        (Some(end), _) => (AgentStep::Keep, Outcome::End(end.clone())),
        (None, Some(pod)) => conversation::converse(session, &stored, pod, observed, next, now),
        (None, None) => (AgentStep::Keep, Outcome::Continue(None)),
    };
    match outcome {
        Outcome::Continue(due) => PodSays {
            verdict: Verdict::new(
                AgentSessionPhase::Running,
                reasons::RUNNING,
                "the agent is running",
            ),
            agent,
            end: None,
            due,
        },
        Outcome::End(end) => PodSays {
            verdict: Verdict::new(end.phase, end.reason, end.message.clone()),
            agent: AgentStep::Keep,
            end: Some(end),
            due: None,
        },
    }
}

/// The pod to create, carrying how many outbox entries earlier pods' agents received.
fn desired_pod(
    session: &AgentSession,
    cfg: &SessionConfig,
    next: &AgentSessionStatus,
    has_credentials: bool,
) -> Result<Pod, String> {
    let mut pod =
        build::desired_pod(session, &cfg.build, has_credentials).map_err(|e| e.to_string())?;
    let delivered = next
        .agent
        .as_ref()
        .map_or(0, |a| a.delivered_messages.max(0));
    pod.metadata.annotations.get_or_insert_default().insert(
        DELIVERED_BEFORE_ANNOTATION.to_string(),
        delivered.to_string(),
    );
    Ok(pod)
}

/// The [`infrastructure`] to write, or why none can be: the apiserver refused a child (learned
/// in this reconcile), or one cannot be built.
fn writable(g: &Given<'_>) -> Result<ChildWrites, String> {
    let Given { observed, .. } = *g;
    match &observed.refused {
        Some(message) => Err(message.clone()),
        None => infrastructure(g),
    }
}

/// The PVC, Service and NetworkPolicy a session keeps while it exists (suspended too): each
/// written when missing from the caches or when the spec changed since the status was last
/// written, so steady state writes nothing; `Err` when one cannot be built.
fn infrastructure(g: &Given<'_>) -> Result<ChildWrites, String> {
    let Given {
        session,
        observed,
        cfg,
        ..
    } = *g;
    let cached = &observed.children;
    let changed =
        session.status.as_ref().and_then(|s| s.observed_generation) != session.metadata.generation;
    let mut writes = ChildWrites::default();
    let pvc = build::desired_pvc(session).map_err(|e| e.to_string())?;
    if changed || cached.pvc.is_none() {
        writes.pvc = pvc.map(|p| Write::over(p, cached.pvc.as_ref().map(|c| &c.control)));
    }
    if changed || cached.service.is_none() {
        let mut service = build::desired_service(session).map_err(|e| e.to_string())?;
        // A Service made by an earlier version has a virtual IP, which cannot be taken back:
        // leave spec.clusterIP out of the apply and it stays as it is.
        if cached.service.as_ref().is_some_and(|s| !s.headless)
            && let Some(spec) = service.spec.as_mut()
        {
            spec.cluster_ip = None;
        }
        let present = cached.service.as_ref().map(|s| &s.control);
        writes.service = Some(Write::over(service, present));
    }
    let policy = cached.network_policy.as_ref();
    match build::desired_network_policy(session, &cfg.build).map_err(|e| e.to_string())? {
        Some(np) if changed || policy.is_none() => {
            writes.network_policy = Some(Write::over(np, policy.map(|p| &p.control)));
        }
        // Isolation turned off: the session's policy goes (another one of that name stays).
        None if policy.is_some_and(|p| {
            !p.deleting && p.control.is_of(&session.uid().unwrap_or_default())
        }) =>
        {
            writes.delete_network_policy = policy.map(|p| Delete {
                uid: p.control.uid.clone(),
            });
        }
        _ => {}
    }
    Ok(writes)
}

/// Whether the pod may still run an agent.
fn alive(state: &PodState) -> bool {
    state.is_alive()
}

/// The pod to delete: there is one, it is the session's own, and it is not going already.
fn pod_deletion(session: &AgentSession, observed: &Observed) -> Option<Delete> {
    let uid = session.metadata.uid.as_deref().unwrap_or_default();
    observed
        .children
        .pod
        .as_ref()
        .filter(|p| !p.terminating() && p.control.is_of(uid))
        .map(|p| Delete {
            uid: p.control.uid.clone(),
        })
}

/// The token goes when the session stops: once, tracked by `CredentialsReady` (True with
/// reason Available: a token was issued).
fn revoke(observed: &Observed, next: &mut Next) -> Option<RevokeRequest> {
    let request =
        credentials::revocation(&observed.credentials, status::token_issued(&next.status))?;
    next.credentials(&CredentialsShown::Revoked);
    Some(request)
}

/// After a finish: delete the session `ttlAfterFinished` after its completion.
fn ttl(
    session: &AgentSession,
    status: &AgentSessionStatus,
    now: DateTime<Utc>,
) -> (bool, Option<Duration>) {
    let Ok(Some(ttl)) = session.spec.ttl_after_finished() else {
        return (false, None);
    };
    let done = status.completion_time.as_ref().map(from_k8s).unwrap_or(now);
    let due = done + chrono::Duration::from_std(ttl).unwrap_or_default();
    if now < due {
        (false, Some(until(due, now)))
    } else {
        (true, None)
    }
}
