//! The AgentSession controller: observe → decide → act → status (ENGINEERING.md, "The shape of
//! a reconcile").
//!
//! - [`observe`](super::observe) makes every read: the children's watch indexes, the agent
//!   worker's live state, the credentials a rule needs;
//! - [`decide`](super::decide) is pure and holds every rule; it returns the whole [`Plan`];
//! - [`act`](super::act) makes the writes. A step the rest depends on (a token, the agent's
//!   stop) is acted on alone and its outcome observed, then decided again;
//! - the status is written once, when it differs; then the Event.
//!
//! Children are applied when missing from the caches or when the session's generation changed,
//! so steady state writes nothing. Expiry is exact (requeued for `expiresAt`). No finalizer:
//! owner references let the garbage collector remove the children.

use super::act::{act, finish};
use super::cached::{CachedClaim, CachedPod, CachedPolicy, CachedService};
use super::children::{self, Index, PodSummary, Presence, ServiceSummary, watch_children};
use super::conversation::{AgentPool, Conversations};
use super::credentials::SessionCredentialsError;
use super::decide::{Plan, SessionConfig, decide};
use super::observe::observe;
use crate::context::{Context, PrimaryWatch};
use crate::guard::Guarded;
use ccplant_api::AgentSession;
use chrono::Utc;
use futures::StreamExt;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::{Resource, ResourceExt};
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;
use tracing::{Instrument, info_span, warn};

/// An AgentSession as the watch reads it (see [`crate::guard`]).
pub type SessionObject = Guarded<AgentSession>;

/// How many times one reconcile may act on a step and decide again: a token, the agent's
/// stop, a refused child and the finalizer are each learned at most once.
const MAX_ROUNDS: usize = 5;

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
    #[error("the plan did not settle after {MAX_ROUNDS} rounds")]
    Unsettled,
}

impl Error {
    /// The label of `ccplant_reconcile_errors_total`: which step failed.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::StatusWrite(_) => "status_write",
            Error::Apply { .. } => "apply",
            Error::Delete { .. } => "delete",
            Error::Credentials(_) => "credentials",
            Error::Unsettled => "unsettled",
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
    pub config: SessionConfig,
    pub children: ChildStores,
    /// The agents of Running sessions.
    pub conversations: Conversations,
    /// The sessions of the scope, as the primary watch shows them (a class's queue).
    pub sessions: kube::runtime::reflector::Store<SessionObject>,
    children_ready: tokio::sync::OnceCell<()>,
}

impl Debug for SessionContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionContext").finish_non_exhaustive()
    }
}

fn scoped<K>(client: &kube::Client, ns: &Option<String>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// The children's watches of one scope (everything labelled as ccplant's), and their triggers.
fn child_watches(
    client: &kube::Client,
    namespace: &Option<String>,
) -> (
    ChildStores,
    impl futures::Stream<Item = kube::runtime::reflector::ObjectRef<SessionObject>> + Send + 'static,
) {
    let owned = crate::context::watch_config().labels(&format!(
        "{}={}",
        ccplant_api::labels::MANAGED_BY,
        ccplant_api::labels::MANAGED_BY_VALUE
    ));
    let (pods, pod_triggers) = watch_children(
        scoped::<CachedPod>(client, namespace),
        owned.clone(),
        children::summarize_pod,
    );
    let (services, svc_triggers) = watch_children(
        scoped::<CachedService>(client, namespace),
        owned.clone(),
        children::summarize_service,
    );
    let (pvcs, pvc_triggers) = watch_children(
        scoped::<CachedClaim>(client, namespace),
        owned.clone(),
        children::summarize_claim,
    );
    let (network_policies, np_triggers) = watch_children(
        scoped::<CachedPolicy>(client, namespace),
        owned,
        children::summarize_policy,
    );
    let stores = ChildStores {
        pods,
        services,
        pvcs,
        network_policies,
    };
    let triggers = futures::stream::select_all([
        pod_triggers.boxed(),
        svc_triggers.boxed(),
        pvc_triggers.boxed(),
        np_triggers.boxed(),
    ]);
    (stores, triggers)
}

/// Runs the controller over the sessions of one scope (`primary`, the scope's one AgentSession
/// watch); children are watched in the same scope. `pool` bounds the agent API calls of every
/// scope together.
pub async fn run(
    ctx: Arc<Context>,
    config: SessionConfig,
    pool: AgentPool,
    primary: PrimaryWatch<SessionObject>,
    primary_synced: tokio::sync::watch::Receiver<bool>,
    namespace: Option<String>,
) {
    let client = ctx.client.clone();
    let leadership = ctx.leadership.clone();
    let (children, child_triggers) = child_watches(&client, &namespace);
    let children_synced = children.synced();
    let (conversations, agent_triggers) = Conversations::new(&pool, ctx.metrics.clone());
    let agent_triggers = futures::stream::unfold(agent_triggers, |mut rx| async move {
        rx.recv().await.map(|r| (r, rx))
    });
    // A child's change may free a class's place (a pod ended or went): the sessions queued in
    // that namespace look at their turn again.
    let store = primary.store.clone();
    let child_triggers = child_triggers.flat_map(move |r| {
        let mut refs = vec![r.clone()];
        if let Some(ns) = &r.namespace {
            refs.extend(super::observe::queued_in(&store, ns));
        }
        futures::stream::iter(refs)
    });
    let triggers = futures::stream::select(child_triggers, agent_triggers.boxed());
    let sctx = Arc::new(SessionContext {
        ctx,
        config,
        children,
        conversations,
        sessions: primary.store.clone(),
        children_ready: tokio::sync::OnceCell::new(),
    });
    sctx.conversations.set_session_store(primary.store.clone());
    let concurrency = sctx.ctx.limits.session_concurrency();
    let controller = Controller::for_stream(primary.objects, primary.store)
        .reconcile_on(triggers)
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
    release_memory_once_synced(all_synced.clone());
    crate::shutdown::drive("agentsession", run, stop, all_synced).await;
    // No agent is talked to once the controller stopped (before the lease is released).
    sctx.conversations.shutdown().await;
}

/// Gives the memory of the initial lists back once every cache is complete.
fn release_memory_once_synced(synced: Vec<tokio::sync::watch::Receiver<bool>>) {
    tokio::spawn(async move {
        for mut s in synced {
            if s.wait_for(|done| *done).await.is_err() {
                return;
            }
        }
        crate::memory::release_free_memory();
    });
}

fn error_policy(session: Arc<SessionObject>, err: &Error, _ctx: Arc<SessionContext>) -> Action {
    warn!(session = %session.name_any(), namespace = session.namespace().unwrap_or_default(), error = %err, "reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

async fn reconcile(
    session: Arc<SessionObject>,
    sctx: Arc<SessionContext>,
) -> Result<Action, Error> {
    if !sctx.ctx.leadership.is_leader() {
        // A standby keeps its caches warm and acts on nothing; becoming the leader
        // re-queues every cached session.
        return Ok(Action::await_change());
    }
    let _permit = sctx.ctx.limits.session_permit().await;
    let span = info_span!(
        "reconcile",
        controller = "agentsession",
        namespace = %session.namespace().unwrap_or_default(),
        name = %session.name_any()
    );
    let started = std::time::Instant::now();
    let result = async {
        match &*session {
            Guarded::Valid(s) => reconcile_session(s, &sctx).await,
            Guarded::Invalid(invalid) => crate::invalid::reconcile(&sctx.ctx, &session, invalid)
                .await
                .map(|()| Action::await_change())
                .map_err(Error::StatusWrite),
        }
    }
    .instrument(span)
    .await;
    sctx.ctx.metrics.observe_reconcile(
        "agentsession",
        started.elapsed(),
        result.as_ref().err().map(Error::metric_label),
    );
    result
}

/// observe → decide → act (again while a step's outcome is learned) → status.
async fn reconcile_session(session: &AgentSession, sctx: &SessionContext) -> Result<Action, Error> {
    // The children's indexes must be complete, or existing children would look missing and be
    // applied again.
    sctx.children_ready
        .get_or_init(|| async {
            for mut synced in sctx.children.synced() {
                let _ = synced.wait_for(|done| *done).await;
            }
        })
        .await;
    if sctx.ctx.is_stale(session) {
        // Our last status write is not in the cache yet; its watch event triggers us again.
        return Ok(Action::await_change());
    }
    let now = Utc::now();
    let mut observed = observe(session, sctx, now).await?;
    let mut settled: Option<Plan> = None;
    for _ in 0..MAX_ROUNDS {
        let plan = decide(session, &observed, now, &sctx.config);
        match act(sctx, session, &plan, now).await? {
            Some(learned) => observed.learn(learned),
            None => {
                settled = Some(plan);
                break;
            }
        }
    }
    let plan = settled.ok_or(Error::Unsettled)?;
    let requeue = plan.requeue;
    finish(sctx, session, plan).await?;
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}
