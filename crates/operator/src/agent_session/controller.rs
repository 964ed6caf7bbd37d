//! The AgentSession controller: dereference → validate → build → apply → update status.
//!
//! - Children (credentials Secret, PVC, Service, NetworkPolicy, Pod) are applied with
//!   server-side apply when missing from the caches or when the session's generation changed,
//!   so steady state writes nothing.
//! - Expiry is exact: the reconcile is requeued for `expiresAt` (and for token refreshes);
//!   there are no periodic sweeps.
//! - No finalizer: owner references let the garbage collector remove the children.

use super::build::{self, BuildConfig};
use super::cached::{CachedClaim, CachedPod, CachedPolicy, CachedService};
use super::children::{self, Index, PodSummary, Presence, ServiceSummary, watch_children};
use super::conversation::{self, Conversations, Reachability, Seed, Target};
use super::credentials::{self, Ensured, SessionCredentialsError, until};
use super::names::SessionNames;
use super::observe::PodState;
use crate::context::{Context, primary_watch};
use crate::credentials::CredentialsError;
use crate::events::{Event, EventType};
use crate::time::{from_k8s, to_k8s};
use ccplant_api::conditions::{ConditionStatus, new_condition, reasons, set_condition, types};
use ccplant_api::{
    AgentSession, AgentSessionPhase, AgentSessionStatus, AgentState, CompletionMode,
};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams};
use kube::runtime::controller::{Action, Controller};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;
use tracing::{Instrument, info_span, warn};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("writing status: {0}")]
    StatusWrite(#[source] kube::Error),
    #[error("applying {what}: {source}")]
    Apply {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("deleting {what}: {source}")]
    Delete {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    Credentials(SessionCredentialsError),
    #[error(transparent)]
    Build(#[from] build::BuildError),
}

impl Error {
    /// The label of `ccplant_reconcile_errors_total`: which step failed.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::StatusWrite(_) => "status_write",
            Error::Apply { .. } => "apply",
            Error::Delete { .. } => "delete",
            Error::Credentials(_) => "credentials",
            Error::Build(_) => "build",
        }
    }
}

/// What the controller knows of the children, kept by their watches.
#[derive(Clone, Debug)]
pub struct ChildStores {
    pub pods: Index<PodSummary>,
    pub services: Index<ServiceSummary>,
    pub pvcs: Index<Presence>,
    pub network_policies: Index<Presence>,
}

impl ChildStores {
    fn synced(&self) -> Vec<tokio::sync::watch::Receiver<bool>> {
        vec![
            self.pods.synced(),
            self.services.synced(),
            self.pvcs.synced(),
            self.network_policies.synced(),
        ]
    }
}

pub struct SessionContext {
    pub ctx: Arc<Context>,
    pub build: BuildConfig,
    pub max_session_duration: Duration,
    pub children: ChildStores,
    /// The agents of Running sessions.
    pub conversations: Conversations,
    children_ready: tokio::sync::OnceCell<()>,
}

impl Debug for SessionContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionContext").finish_non_exhaustive()
    }
}

fn managed_selector() -> String {
    format!(
        "{}={}",
        ccplant_api::labels::MANAGED_BY,
        ccplant_api::labels::MANAGED_BY_VALUE
    )
}

/// Runs the controller over `sessions`; children are watched in the same scope.
pub async fn run(
    ctx: Arc<Context>,
    build: BuildConfig,
    max_session_duration: Duration,
    concurrency: u16,
    agent_concurrency: u16,
    namespace: Option<String>,
) {
    let client = ctx.client.clone();
    let leadership = ctx.leadership.clone();
    fn scoped<K>(client: &kube::Client, ns: &Option<String>) -> Api<K>
    where
        K: Resource<DynamicType = ()>,
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    {
        match ns {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let owned = crate::context::watch_config().labels(&managed_selector());
    let (pods, pod_triggers) = watch_children(
        scoped::<CachedPod>(&client, &namespace),
        owned.clone(),
        children::summarize_pod,
    );
    let (services, svc_triggers) = watch_children(
        scoped::<CachedService>(&client, &namespace),
        owned.clone(),
        children::summarize_service,
    );
    let (pvcs, pvc_triggers) = watch_children(
        scoped::<CachedClaim>(&client, &namespace),
        owned.clone(),
        children::summarize_claim,
    );
    let (network_policies, np_triggers) = watch_children(
        scoped::<CachedPolicy>(&client, &namespace),
        owned.clone(),
        children::summarize_policy,
    );
    let children = ChildStores {
        pods,
        services,
        pvcs,
        network_policies,
    };
    let children_synced = children.synced();
    let child_triggers = futures::stream::select_all([
        pod_triggers.boxed(),
        svc_triggers.boxed(),
        pvc_triggers.boxed(),
        np_triggers.boxed(),
    ]);
    let (conversations, agent_triggers) =
        Conversations::new(usize::from(agent_concurrency), ctx.metrics.clone());
    let agent_triggers = futures::stream::unfold(agent_triggers, |mut rx| async move {
        rx.recv().await.map(|r| (r, rx))
    });
    let child_triggers = futures::stream::select(child_triggers, agent_triggers.boxed());
    let sctx = Arc::new(SessionContext {
        ctx,
        build,
        max_session_duration,
        children,
        conversations,
        children_ready: tokio::sync::OnceCell::new(),
    });

    let synced = sctx.ctx.register_cache("AgentSession");
    let primary_synced = synced.subscribe();
    let primary = primary_watch(scoped::<AgentSession>(&client, &namespace), synced);
    sctx.ctx.set_session_store(primary.store.clone());
    sctx.conversations.set_session_store(primary.store.clone());
    let controller = Controller::for_stream(primary.objects, primary.store)
        .reconcile_on(child_triggers)
        .reconcile_all_on(primary.relisted)
        .reconcile_all_on(leadership.acquisitions())
        .with_config(kube::runtime::controller::Config::default().concurrency(concurrency));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = controller
        .graceful_shutdown_on(async move {
            let _ = stopped.await;
        })
        .run(reconcile, error_policy, sctx.clone())
        .for_each(crate::context::log_watch_error);
    let mut all_synced = vec![primary_synced];
    all_synced.extend(children_synced);
    let first_sync = all_synced.clone();
    tokio::spawn(async move {
        for mut synced in first_sync {
            if synced.wait_for(|done| *done).await.is_err() {
                return;
            }
        }
        crate::memory::release_free_memory();
    });
    crate::shutdown::drive("agentsession", run, stop, all_synced).await;
    // No agent is talked to once the controller stopped (before the lease is released).
    sctx.conversations.shutdown().await;
}

fn error_policy(session: Arc<AgentSession>, err: &Error, _ctx: Arc<SessionContext>) -> Action {
    warn!(session = %session.name_any(), namespace = session.namespace().unwrap_or_default(), error = %err, "reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

async fn reconcile(session: Arc<AgentSession>, sctx: Arc<SessionContext>) -> Result<Action, Error> {
    if !sctx.ctx.leadership.is_leader() {
        // A standby keeps its caches warm and acts on nothing; becoming the leader
        // re-queues every cached session.
        return Ok(Action::await_change());
    }
    let span = info_span!(
        "reconcile",
        controller = "agentsession",
        namespace = %session.namespace().unwrap_or_default(),
        name = %session.name_any()
    );
    let metrics = sctx.ctx.metrics.clone();
    let started = std::time::Instant::now();
    let result = async move {
        tracing::debug!("reconciling");
        let result = reconcile_inner(session, sctx).await;
        tracing::debug!(ok = result.is_ok(), "reconciled");
        result
    }
    .instrument(span)
    .await;
    metrics.observe_reconcile(
        "agentsession",
        started.elapsed(),
        result.as_ref().err().map(Error::metric_label),
    );
    result
}

/// Builds the next status from the stored one.
struct Next {
    status: AgentSessionStatus,
    generation: Option<i64>,
    now: DateTime<Utc>,
}

impl Next {
    fn condition(&mut self, type_: &str, status: ConditionStatus, reason: &str, message: &str) {
        let c = new_condition(
            type_,
            status,
            reason,
            message,
            self.generation,
            to_k8s(self.now),
        );
        set_condition(&mut self.status.conditions, c);
    }

    fn phase(&mut self, phase: AgentSessionPhase, ready: bool, reason: &str, message: String) {
        self.status.phase = Some(phase);
        let s = if ready {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        };
        self.condition(types::READY, s, reason, &message);
        let finished = phase.is_finished();
        // Not finished yet: the reason says where it stands (Pending, Running, Suspended).
        let (fs, fr) = if finished {
            (ConditionStatus::True, reason)
        } else {
            (ConditionStatus::False, phase.as_str())
        };
        self.condition(
            types::FINISHED,
            fs,
            fr,
            if finished { &message } else { "" },
        );
        self.status.message = Some(message);
        if finished && self.status.completion_time.is_none() {
            self.status.completion_time = Some(to_k8s(self.now));
        }
    }
}

async fn reconcile_inner(
    session: Arc<AgentSession>,
    sctx: Arc<SessionContext>,
) -> Result<Action, Error> {
    let ctx = &sctx.ctx;
    // The children's indexes must be complete, or existing children would look missing and be
    // applied again.
    sctx.children_ready
        .get_or_init(|| async {
            for mut synced in sctx.children.synced() {
                let _ = synced.wait_for(|done| *done).await;
            }
        })
        .await;
    if ctx.is_stale(&*session) {
        return Ok(Action::await_change());
    }
    let now = Utc::now();
    let ns = session.namespace().unwrap_or_default();
    let names = SessionNames::for_session(&session);
    let stored = session.status.clone().unwrap_or_default();
    let mut next = Next {
        status: stored.clone(),
        generation: session.metadata.generation,
        now,
    };
    next.status.observed_generation = session.metadata.generation;

    // Start and exact expiry: counted from creation (stable across operator restarts).
    let start = session
        .metadata
        .creation_timestamp
        .as_ref()
        .map(from_k8s)
        .unwrap_or(now);
    next.status.start_time = Some(to_k8s(start));
    let max = session
        .spec
        .max_duration()
        .unwrap_or(sctx.max_session_duration)
        .min(sctx.max_session_duration);
    let expires_at = start + chrono::Duration::from_std(max).unwrap_or_default();
    next.status.expires_at = Some(to_k8s(expires_at));

    // Finished sessions: make sure nothing runs or stays valid, then only ttlAfterFinished.
    if let Some(phase) = stored.phase.filter(|p| p.is_finished()) {
        // Expired, or Succeeded by completion.mode WhenIdle: the pod is stopped. A pod whose
        // agent exited is kept (its logs).
        let running = sctx
            .children
            .pods
            .get(&ns, &names.pod)
            .is_some_and(|p| pod_alive(&p.state));
        stop_agent(&sctx, &session, &mut next).await;
        cleanup(
            &sctx,
            &session,
            &names,
            phase == AgentSessionPhase::Expired
                || (phase == AgentSessionPhase::Succeeded && running),
            &mut next,
        )
        .await?;
        let done = write_status(ctx, &session, &stored, next.status).await?;
        return ttl_action(ctx, &session, &done, now).await;
    }

    // What the schema cannot refuse.
    let invalid = session.spec.validate().err().map(|e| e.to_string());
    let pod = match invalid {
        Some(msg) => Err(msg),
        None => build::desired_pod(&session, &sctx.build, has_credentials(ctx, &session))
            .map_err(|e| e.to_string()),
    };
    let desired_pod = match pod {
        Ok(p) => p,
        Err(message) => {
            next.phase(
                AgentSessionPhase::Pending,
                false,
                reasons::INVALID_SPEC,
                message,
            );
            let written = write_status(ctx, &session, &stored, next.status).await?;
            announce(ctx, &session, &stored, &written).await;
            return Ok(Action::await_change());
        }
    };
    next.status.work_branch = session.effective_work_branch();

    if now >= expires_at {
        stop_agent(&sctx, &session, &mut next).await;
        cleanup(&sctx, &session, &names, true, &mut next).await?;
        next.phase(
            AgentSessionPhase::Expired,
            false,
            reasons::EXPIRED,
            format!("expired at {}", expires_at.to_rfc3339()),
        );
        next.status.endpoint = None;
        next.status.editor_url = None;
        let written = write_status(ctx, &session, &stored, next.status).await?;
        announce(ctx, &session, &stored, &written).await;
        return ttl_action(ctx, &session, &written, now).await;
    }
    let expiry_requeue = until(expires_at, now);

    let idle_suspended = idle_suspended(&session, &stored);
    if session.spec.suspend || idle_suspended {
        stop_agent(&sctx, &session, &mut next).await;
        cleanup(&sctx, &session, &names, true, &mut next).await?;
        apply_infrastructure(&sctx, &session).await?;
        if session.spec.suspend {
            next.phase(
                AgentSessionPhase::Suspended,
                false,
                reasons::SUSPENDED,
                "suspended: the pod is deleted, the workspace kept".into(),
            );
        }
        next.status.endpoint = None;
        next.status.editor_url = None;
        let written = write_status(ctx, &session, &stored, next.status).await?;
        announce(ctx, &session, &stored, &written).await;
        return Ok(Action::requeue(expiry_requeue));
    }

    // Credentials before the pod: its clone needs them.
    let mut requeue = expiry_requeue;
    let ensured = credentials::ensure(ctx, &session, &names.credentials_secret, now).await;
    // A failed refresh while the current token is still valid keeps the session running: it is
    // reported and retried, the pod and its lifecycle go on.
    let still_valid = ctx
        .session_tokens
        .get(&session.uid().unwrap_or_default())
        .and_then(|i| i.expires_at)
        .is_some_and(|exp| exp > now + chrono::Duration::seconds(30));
    let mut refresh_failed = false;
    let ensured = match ensured {
        Err(e) if still_valid && !matches!(e, SessionCredentialsError::Write(..)) => {
            next.condition(
                types::CREDENTIALS_READY,
                ConditionStatus::False,
                "TokenRefreshFailed",
                &e.to_string(),
            );
            requeue = requeue.min(Duration::from_secs(30));
            refresh_failed = true;
            Ok(Ensured::Ready { refresh_at: None })
        }
        other => other,
    };
    match ensured {
        Ok(Ensured::None) => {
            next.condition(
                types::CREDENTIALS_READY,
                ConditionStatus::True,
                "NotRequired",
                "the session uses no GitHub credentials",
            );
        }
        Ok(Ensured::Ready { refresh_at }) => {
            if !refresh_failed {
                next.condition(
                    types::CREDENTIALS_READY,
                    ConditionStatus::True,
                    reasons::AVAILABLE,
                    "GitHub token in Secret",
                );
            }
            if let Some(r) = refresh_at {
                requeue = requeue.min(until(r, now).max(Duration::from_secs(1)));
            }
        }
        Err(SessionCredentialsError::Source(
            e @ (CredentialsError::SecretNotFound { .. } | CredentialsError::NoSecretConfigured),
        )) => {
            return pending(
                ctx,
                &session,
                &stored,
                next,
                reasons::SECRET_NOT_FOUND,
                e.to_string(),
            )
            .await;
        }
        Err(SessionCredentialsError::Source(e @ CredentialsError::InvalidSecret { .. })) => {
            return pending(
                ctx,
                &session,
                &stored,
                next,
                reasons::INVALID_SECRET,
                e.to_string(),
            )
            .await;
        }
        Err(e @ SessionCredentialsError::TokenNotShareable(_)) => {
            return pending(
                ctx,
                &session,
                &stored,
                next,
                "TokenNotShareable",
                e.to_string(),
            )
            .await;
        }
        Err(
            e @ (SessionCredentialsError::Mint { .. }
            | SessionCredentialsError::AppWithoutRepository),
        ) => {
            return pending(
                ctx,
                &session,
                &stored,
                next,
                "TokenUnavailable",
                e.to_string(),
            )
            .await;
        }
        Err(e) => return Err(Error::Credentials(e)),
    }

    // The workspace claim first (the pod mounts it); then the pod, the Service and the
    // NetworkPolicy at once: the pod is what the user waits for, none depends on another, and
    // the NetworkPolicy is in force long before the agent listens (after the clone).
    if let Err(e) = apply_workspace(&sctx, &session).await {
        return rejected(ctx, &session, &stored, next, e).await;
    }
    let cached_pod = sctx.children.pods.get(&ns, &names.pod);
    let terminating = cached_pod.as_ref().is_some_and(PodSummary::terminating);
    if cached_pod.as_ref().is_none_or(|p| !pod_alive(&p.state)) {
        // The agent is gone with its pod; a new pod gets what the old agent had not.
        stop_agent(&sctx, &session, &mut next).await;
    }
    let mut desired_pod = desired_pod;
    let delivered = next
        .status
        .agent
        .as_ref()
        .map_or(0, |a| a.delivered_messages.max(0));
    desired_pod
        .metadata
        .annotations
        .get_or_insert_default()
        .insert(
            conversation::DELIVERED_BEFORE_ANNOTATION.to_string(),
            delivered.to_string(),
        );
    // Missing (first start, resume, or deleted behind our back): (re)create it. A pod still
    // terminating is left alone; its deletion event (or the short requeue) re-creates it.
    let create_pod = async {
        match cached_pod {
            None => create(ctx, &desired_pod, &format!("Pod {ns}/{}", names.pod)).await,
            Some(_) => Ok(()),
        }
    };
    let (network, pod) = futures::join!(apply_network(&sctx, &session), create_pod);
    if let Err(e) = network.and(pod) {
        return rejected(ctx, &session, &stored, next, e).await;
    }
    if terminating {
        requeue = requeue.min(Duration::from_secs(2));
    }
    next.status.pod_name = Some(names.pod.clone());
    next.status.service_name = Some(names.service.clone());
    if let Some(size) = session
        .spec
        .workspace
        .as_ref()
        .and_then(|w| w.size.as_ref())
    {
        let bound = sctx
            .children
            .pvcs
            .get(&ns, &names.workspace_pvc)
            .is_some_and(|p| p.bound);
        if bound {
            next.condition(
                types::WORKSPACE_READY,
                ConditionStatus::True,
                reasons::AVAILABLE,
                &format!("PVC {} ({size}) bound", names.workspace_pvc),
            );
        } else {
            next.condition(
                types::WORKSPACE_READY,
                ConditionStatus::False,
                reasons::WAITING,
                &format!("PVC {} not bound yet", names.workspace_pvc),
            );
        }
    }

    let observed = match &cached_pod {
        None => PodState::Missing,
        Some(pod) => pod.state.clone(),
    };
    match observed {
        PodState::Missing | PodState::Starting | PodState::Terminating => {
            next.phase(
                AgentSessionPhase::Starting,
                false,
                reasons::WAITING,
                "starting the session pod".into(),
            );
        }
        PodState::Pending { message } => {
            next.phase(
                AgentSessionPhase::Starting,
                false,
                reasons::WAITING,
                message,
            );
        }
        PodState::Running => {
            next.phase(
                AgentSessionPhase::Running,
                true,
                reasons::RUNNING,
                "the agent is running".into(),
            );
            next.status.endpoint = build::endpoint(&session, &names);
            next.status.editor_url = build::editor_url(&session, &names);
            let pod = cached_pod.as_ref();
            match converse(&sctx, &session, &stored, pod, &mut next, now) {
                Outcome::Continue(due) => {
                    if let Some(due) = due {
                        requeue = requeue.min(due);
                    }
                }
                Outcome::Stop {
                    phase,
                    reason,
                    message,
                } => {
                    stop_agent(&sctx, &session, &mut next).await;
                    cleanup(&sctx, &session, &names, true, &mut next).await?;
                    next.phase(phase, false, reason, message);
                    next.status.endpoint = None;
                    next.status.editor_url = None;
                }
            }
        }
        PodState::Succeeded => {
            cleanup(&sctx, &session, &names, false, &mut next).await?;
            next.phase(
                AgentSessionPhase::Succeeded,
                false,
                reasons::SUCCEEDED,
                "the agent finished successfully".into(),
            );
            next.status.endpoint = None;
            next.status.editor_url = None;
        }
        PodState::Failed { reason, message } => {
            cleanup(&sctx, &session, &names, false, &mut next).await?;
            let text = if reason.is_empty() {
                message
            } else {
                format!("{reason}: {message}")
            };
            next.phase(AgentSessionPhase::Failed, false, reasons::FAILED, text);
            next.status.endpoint = None;
            next.status.editor_url = None;
        }
    }
    let written = write_status(ctx, &session, &stored, next.status).await?;
    announce(ctx, &session, &stored, &written).await;
    if written.phase.is_some_and(|p| p.is_finished()) {
        return ttl_action(ctx, &session, &written, Utc::now()).await;
    }
    Ok(Action::requeue(requeue))
}

/// Whether the pod may still run an agent.
fn pod_alive(state: &PodState) -> bool {
    matches!(
        state,
        PodState::Running | PodState::Starting | PodState::Pending { .. }
    )
}

fn has_workspace(session: &AgentSession) -> bool {
    session
        .spec
        .workspace
        .as_ref()
        .is_some_and(|w| w.size.is_some())
}

/// The session was suspended by the operator after `lifetime.idleTimeout` and nothing asked
/// for it back: no new message and no `ccplant.io/resume-requested-at` after the suspension.
fn idle_suspended(session: &AgentSession, stored: &AgentSessionStatus) -> bool {
    if stored.phase != Some(AgentSessionPhase::Suspended) {
        return false;
    }
    let Some(ready) = stored.conditions.iter().find(|c| c.type_ == types::READY) else {
        return false;
    };
    if ready.reason != reasons::IDLE_TIMEOUT {
        return false;
    }
    let delivered = stored
        .agent
        .as_ref()
        .map_or(0, |a| usize::try_from(a.delivered_messages).unwrap_or(0));
    if session.spec.total_messages() > delivered {
        return false;
    }
    let suspended_at = from_k8s(&ready.last_transition_time);
    let resume_requested = session
        .annotations()
        .get(ccplant_api::annotations::RESUME_REQUESTED_AT)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .is_some_and(|t| t.with_timezone(&Utc) > suspended_at);
    !resume_requested
}

/// Stops the session's agent worker, if any, and keeps its last word in `status.agent`: the
/// delivered count, activity and last message stay, the state goes (no agent runs).
async fn stop_agent(sctx: &SessionContext, session: &AgentSession, next: &mut Next) {
    let uid = session.uid().unwrap_or_default();
    let last = sctx.conversations.stop(&uid).await;
    let Some(mut agent) = next
        .status
        .agent
        .clone()
        .or_else(|| last.as_ref().map(|_| Default::default()))
    else {
        return;
    };
    if let Some(last) = last {
        let s = last.to_status();
        agent.delivered_messages = agent.delivered_messages.max(s.delivered_messages);
        agent.last_activity_time = s.last_activity_time.or(agent.last_activity_time);
        agent.last_agent_message = s.last_agent_message.or(agent.last_agent_message);
    }
    agent.state = None;
    next.status.agent = Some(agent);
    if next
        .status
        .conditions
        .iter()
        .any(|c| c.type_ == types::AGENT_REACHABLE)
    {
        next.condition(
            types::AGENT_REACHABLE,
            ConditionStatus::False,
            "NotRunning",
            "the session's pod is not running",
        );
    }
}

/// What the conversation asks of the reconcile.
enum Outcome {
    /// Go on; reconcile again by then (a completion or idle deadline).
    Continue(Option<Duration>),
    /// Stop the agent and its pod: completion.mode WhenIdle (Succeeded) or
    /// lifetime.idleTimeout (Suspended with a workspace, else Expired) was reached.
    Stop {
        phase: AgentSessionPhase,
        reason: &'static str,
        message: String,
    },
}

/// Keeps the agent worker of a Running session going, shows its published state, and decides
/// completion and idle timeout on its live facts.
fn converse(
    sctx: &SessionContext,
    session: &AgentSession,
    stored: &AgentSessionStatus,
    pod: Option<&PodSummary>,
    next: &mut Next,
    now: DateTime<Utc>,
) -> Outcome {
    let addr = pod
        .and_then(|p| p.ip.as_deref())
        .and_then(|ip| ip.parse::<std::net::IpAddr>().ok())
        .and_then(|ip| {
            u16::try_from(session.spec.effective_port())
                .ok()
                .map(|port| std::net::SocketAddr::new(ip, port))
        });
    let (Some(pod), Some(addr)) = (pod, addr) else {
        return Outcome::Continue(None);
    };
    let stored_agent = stored.agent.clone().unwrap_or_default();
    // A worker taking over the same pod's agent (operator restart) starts from the stored
    // status; a new pod's agent starts fresh.
    let seed = if stored.phase == Some(AgentSessionPhase::Running) {
        let reachable = stored
            .conditions
            .iter()
            .find(|c| c.type_ == types::AGENT_REACHABLE)
            .map_or(Reachability::Unknown, |c| match c.status.as_str() {
                "True" => Reachability::Reachable,
                "False" => Reachability::Unreachable {
                    reason: c.reason.clone(),
                    message: c.message.clone(),
                },
                _ => Reachability::Unknown,
            });
        let last_activity = stored_agent.last_activity_time.as_ref().map(from_k8s);
        Seed {
            state: stored_agent.state,
            reachable,
            delivered: usize::try_from(stored_agent.delivered_messages).unwrap_or(0),
            idle_since: last_activity.filter(|_| stored_agent.state == Some(AgentState::Idle)),
            last_activity,
            last_agent_message: stored_agent.last_agent_message.clone(),
        }
    } else {
        Seed {
            last_agent_message: stored_agent.last_agent_message.clone(),
            ..Seed::default()
        }
    };
    let view = sctx.conversations.ensure(Target {
        session: kube::runtime::reflector::ObjectRef::from_obj(session),
        session_uid: session.uid().unwrap_or_default(),
        pod_uid: pod.uid,
        addr,
        outbox: conversation::outbox(session),
        base: pod.delivered_before as usize,
        seed,
    });
    next.status.agent = Some(view.published.to_status());
    match &view.published.reachable {
        Reachability::Unknown => next.condition(
            types::AGENT_REACHABLE,
            ConditionStatus::Unknown,
            "Connecting",
            &format!("connecting to the agent API at {addr}"),
        ),
        Reachability::Reachable => next.condition(
            types::AGENT_REACHABLE,
            ConditionStatus::True,
            "Reachable",
            &format!("the agent API answers at {addr}"),
        ),
        Reachability::Unreachable { reason, message } => next.condition(
            types::AGENT_REACHABLE,
            ConditionStatus::False,
            reason,
            message,
        ),
    }

    let facts = &view.facts;
    let mut due: Option<Duration> = None;
    if session.spec.completion.mode == CompletionMode::WhenIdle
        && let Some(since) = facts.settled_since
        && let Ok(idle_for) = session.spec.completion_idle_for()
    {
        let at = since + chrono::Duration::from_std(idle_for).unwrap_or_default();
        if now >= at {
            return Outcome::Stop {
                phase: AgentSessionPhase::Succeeded,
                reason: reasons::COMPLETED,
                message: format!(
                    "every message was delivered and the agent then stayed idle for {}",
                    session.spec.completion.idle_for
                ),
            };
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
        let text = session
            .spec
            .lifetime
            .idle_timeout
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        if now >= at {
            let (phase, message) = if has_workspace(session) {
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
            return Outcome::Stop {
                phase,
                reason: reasons::IDLE_TIMEOUT,
                message,
            };
        }
        let d = until(at, now);
        due = Some(due.map_or(d, |x| x.min(d)));
    }
    Outcome::Continue(due)
}

/// PVC, Service and NetworkPolicy (what a suspended session keeps).
async fn apply_infrastructure(sctx: &SessionContext, session: &AgentSession) -> Result<(), Error> {
    apply_workspace(sctx, session).await?;
    apply_network(sctx, session).await
}

/// Whether the session's spec changed since the status was last written: children are applied
/// when missing from the caches or then.
fn spec_changed(session: &AgentSession) -> bool {
    session.status.as_ref().and_then(|s| s.observed_generation) != session.metadata.generation
}

/// The workspace PVC, when `spec.workspace.size` is set.
async fn apply_workspace(sctx: &SessionContext, session: &AgentSession) -> Result<(), Error> {
    let ns = session.namespace().unwrap_or_default();
    let names = SessionNames::for_session(session);
    if let Some(pvc) = build::desired_pvc(session)?
        && (spec_changed(session) || sctx.children.pvcs.get(&ns, &names.workspace_pvc).is_none())
    {
        apply(
            &sctx.ctx,
            &pvc,
            &format!("PersistentVolumeClaim {ns}/{}", names.workspace_pvc),
        )
        .await?;
    }
    Ok(())
}

/// The Service, and the NetworkPolicy (or its removal when isolation was turned off).
async fn apply_network(sctx: &SessionContext, session: &AgentSession) -> Result<(), Error> {
    let ctx = &sctx.ctx;
    let ns = session.namespace().unwrap_or_default();
    let names = SessionNames::for_session(session);
    let changed = spec_changed(session);
    let cached_service = sctx.children.services.get(&ns, &names.service);
    if changed || cached_service.is_none() {
        let mut service = build::desired_service(session)?;
        // A Service made by an earlier version has a virtual IP, which cannot be taken back:
        // leave spec.clusterIP out of the apply and it stays as it is.
        let allocated = cached_service.is_some_and(|s| !s.headless);
        if allocated && let Some(spec) = service.spec.as_mut() {
            spec.cluster_ip = None;
        }
        apply(ctx, &service, &format!("Service {ns}/{}", names.service)).await?;
    }
    let cached_policy = sctx
        .children
        .network_policies
        .get(&ns, &names.network_policy);
    match build::desired_network_policy(session, &sctx.build)? {
        Some(np) if changed || cached_policy.is_none() => {
            apply(
                ctx,
                &np,
                &format!("NetworkPolicy {ns}/{}", names.network_policy),
            )
            .await?;
        }
        // Isolation turned off: the policy goes.
        None if cached_policy.is_some_and(|p| !p.deleting) => {
            delete::<NetworkPolicy>(ctx, &ns, &names.network_policy, "NetworkPolicy").await?;
        }
        _ => {}
    }
    Ok(())
}

/// Stops what runs (the pod, when `delete_pod`) and revokes the session's token: once, tracked
/// by the CredentialsReady condition (True with reason Available = a token was issued).
async fn cleanup(
    sctx: &SessionContext,
    session: &AgentSession,
    names: &SessionNames,
    delete_pod: bool,
    next: &mut Next,
) -> Result<(), Error> {
    let ctx = &sctx.ctx;
    let ns = session.namespace().unwrap_or_default();
    if delete_pod {
        let cached = sctx.children.pods.get(&ns, &names.pod);
        if cached.is_some_and(|p| !p.terminating()) {
            delete::<Pod>(ctx, &ns, &names.pod, "Pod").await?;
        }
    }
    let issued = next.status.conditions.iter().any(|c| {
        c.type_ == types::CREDENTIALS_READY && c.status == "True" && c.reason == reasons::AVAILABLE
    });
    let in_memory = ctx
        .session_tokens
        .get(&session.uid().unwrap_or_default())
        .is_some();
    if issued || in_memory {
        credentials::revoke(ctx, session, &names.credentials_secret)
            .await
            .map_err(Error::Credentials)?;
        next.condition(
            types::CREDENTIALS_READY,
            ConditionStatus::False,
            "Revoked",
            "the session's token was revoked and its Secret deleted",
        );
    }
    Ok(())
}

fn has_credentials(ctx: &Context, session: &AgentSession) -> bool {
    crate::credentials::secret_location(
        session
            .spec
            .github
            .as_ref()
            .and_then(|g| g.secret_ref.as_ref()),
        &session.namespace().unwrap_or_default(),
        ctx.default_github_secret.as_deref(),
        &ctx.operator_namespace,
    )
    .is_some()
}

/// The apiserver refused a child (admission, quota, RBAC, an invalid override): a condition, a
/// Warning event and a slow retry instead of a 5 s error loop; other errors propagate.
async fn rejected(
    ctx: &Context,
    session: &AgentSession,
    stored: &AgentSessionStatus,
    mut next: Next,
    err: Error,
) -> Result<Action, Error> {
    let refused = match &err {
        Error::Apply {
            what,
            source: kube::Error::Api(e),
        } if matches!(e.code, 400 | 403 | 404 | 422) => {
            Some(format!("{what} was refused: {}", e.message))
        }
        Error::Build(e) => Some(e.to_string()),
        _ => None,
    };
    let Some(message) = refused else {
        return Err(err);
    };
    next.phase(AgentSessionPhase::Pending, false, "ChildRejected", message);
    let written = write_status(ctx, session, stored, next.status).await?;
    announce(ctx, session, stored, &written).await;
    Ok(Action::requeue(Duration::from_secs(300)))
}

async fn pending(
    ctx: &Context,
    session: &AgentSession,
    stored: &AgentSessionStatus,
    mut next: Next,
    reason: &str,
    message: String,
) -> Result<Action, Error> {
    next.condition(
        types::CREDENTIALS_READY,
        ConditionStatus::False,
        reason,
        &message,
    );
    next.phase(AgentSessionPhase::Pending, false, reason, message);
    let written = write_status(ctx, session, stored, next.status).await?;
    announce(ctx, session, stored, &written).await;
    // 1 s, doubling with the time already waited, capped at 30 s (Secrets are not watched).
    let waited = written
        .conditions
        .iter()
        .find(|c| c.type_ == types::CREDENTIALS_READY)
        .and_then(|c| {
            (Utc::now() - from_k8s(&c.last_transition_time))
                .to_std()
                .ok()
        })
        .unwrap_or_default();
    Ok(Action::requeue(
        waited.clamp(Duration::from_secs(1), Duration::from_secs(30)),
    ))
}

/// After a finish: delete the session `ttlAfterFinished` after its completion.
async fn ttl_action(
    ctx: &Context,
    session: &AgentSession,
    status: &AgentSessionStatus,
    now: DateTime<Utc>,
) -> Result<Action, Error> {
    let Ok(Some(ttl)) = session.spec.ttl_after_finished() else {
        return Ok(Action::await_change());
    };
    let done = status.completion_time.as_ref().map(from_k8s).unwrap_or(now);
    let due = done + chrono::Duration::from_std(ttl).unwrap_or_default();
    if now < due {
        return Ok(Action::requeue(until(due, now)));
    }
    let ns = session.namespace().unwrap_or_default();
    delete::<AgentSession>(ctx, &ns, &session.name_any(), "AgentSession").await?;
    Ok(Action::await_change())
}

async fn apply<K>(ctx: &Context, obj: &K, what: &str) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    K: Clone + Debug + Serialize + DeserializeOwned,
{
    crate::apply::apply_object(ctx, obj)
        .await
        .map(|_| ())
        .map_err(|source| Error::Apply {
            what: what.to_string(),
            source,
        })
}

/// Creates `obj` (a child that is never updated in place, like the Pod): a plain create costs
/// the apiserver less than an apply, and AlreadyExists means it was created earlier (the cache
/// had not seen it yet), never a second copy: the name is deterministic.
async fn create<K>(ctx: &Context, obj: &K, what: &str) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    K: Clone + Debug + Serialize + DeserializeOwned,
{
    crate::apply::create_object(ctx, obj)
        .await
        .map_err(|source| Error::Apply {
            what: what.to_string(),
            source,
        })
}

async fn write_status(
    ctx: &Context,
    session: &AgentSession,
    stored: &AgentSessionStatus,
    next: AgentSessionStatus,
) -> Result<AgentSessionStatus, Error> {
    if *stored != next {
        crate::apply::apply_status(ctx, session, &next)
            .await
            .map_err(Error::StatusWrite)?;
    }
    Ok(next)
}

async fn announce(
    ctx: &Context,
    session: &AgentSession,
    before: &AgentSessionStatus,
    after: &AgentSessionStatus,
) {
    let reason_of = |s: &AgentSessionStatus| {
        s.conditions
            .iter()
            .find(|c| c.type_ == types::READY)
            .map(|c| c.reason.clone())
    };
    if before.phase == after.phase && reason_of(before) == reason_of(after) {
        return;
    }
    let Some(phase) = after.phase else { return };
    let reason = reason_of(after).unwrap_or_default();
    let type_ = match phase {
        AgentSessionPhase::Failed | AgentSessionPhase::Expired => EventType::Warning,
        AgentSessionPhase::Pending if reason != reasons::WAITING => EventType::Warning,
        _ => EventType::Normal,
    };
    let event = Event {
        type_,
        reason: if type_ == EventType::Warning {
            reason
        } else {
            phase.as_str().to_string()
        },
        note: after.message.clone(),
        action: phase.as_str().to_string(),
    };
    if let Err(e) = ctx.recorder.publish(&event, &session.object_ref(&())).await {
        warn!(error = %e, "publishing event failed");
    }
}

/// Deletes `kind` `ns/name` in the background; already gone is fine.
async fn delete<K>(ctx: &Context, ns: &str, name: &str, kind: &str) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(source) => Err(Error::Delete {
            what: format!("{kind} {ns}/{name}"),
            source,
        }),
    }
}
