//! The GitHubTask controller: one GitHub side effect per task, exactly once; observe → decide →
//! act → status like every controller here (`decide.rs` is pure).
//!
//! Exactly-once without idempotency keys (DESIGN §3.2):
//! - before the first GitHub write of an attempt, status records the attempt, fenced on the
//!   version the decision was made from;
//! - every body written carries the task's marker, so an earlier attempt's effect is found by
//!   listing, and a reconcile that finds an attempt recorded but no result looks before writing;
//! - each step's result goes to status as soon as GitHub returns it (`steps.rs`);
//! - a Succeeded or Failed task is never acted on again (no read, no write).

pub mod decide;
pub mod status;
mod steps;

use crate::context::Context;
use crate::credentials::CredentialsError;
use crate::events::{Event, EventType};
use crate::guard::Guarded;
use crate::policy::Purpose;
use ccplant_api::conditions::reasons;
use ccplant_api::{GitHubTask, GitHubTaskPhase, GitHubTaskStatus};
use chrono::{DateTime, Utc};
use decide::{Attempt, Observed, Plan, TaskConfig};
use futures::StreamExt;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use std::sync::Arc;
use std::time::Duration;
use steps::run_action;
use tracing::{Instrument, info, info_span, warn};

/// A GitHubTask as the watch reads it (see [`crate::guard`]).
pub type TaskObject = Guarded<GitHubTask>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("writing status: {0}")]
    StatusWrite(#[source] kube::Error),
    #[error("reading {what}: {source}")]
    KubeRead {
        what: String,
        #[source]
        source: kube::Error,
    },
}

impl Error {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::StatusWrite(_) => "status_write",
            Error::KubeRead { .. } => "kube_read",
        }
    }
}

/// What the task reconciles share.
struct TaskContext {
    ctx: Arc<Context>,
    config: TaskConfig,
    /// The scope's AgentSession cache completed its first list (`fromSession` reads it): a
    /// task reconciled before would take an existing session for a missing one.
    sessions_synced: tokio::sync::watch::Receiver<bool>,
    sessions_ready: tokio::sync::OnceCell<()>,
}

/// The tasks waiting for the session `(namespace, name)` (createPullRequest.fromSession).
fn waiting_for(
    store: &Store<TaskObject>,
    namespace: &str,
    name: &str,
) -> Vec<ObjectRef<TaskObject>> {
    store
        .state()
        .into_iter()
        .filter(|t| {
            t.namespace().as_deref() == Some(namespace)
                && t.valid()
                    .and_then(|t| t.spec.create_pull_request.as_ref())
                    .and_then(|p| p.from_session.as_deref())
                    == Some(name)
        })
        .map(|t| ObjectRef::from_obj(&*t))
        .collect()
}

/// Runs the controller for `api` until shutdown; `sessions` tells of every change of an
/// AgentSession in the scope (from the scope's one session watch), `sessions_synced` when that
/// watch's cache is complete.
pub async fn run(
    ctx: Arc<Context>,
    config: TaskConfig,
    api: Api<TaskObject>,
    sessions: impl futures::Stream<Item = (String, String)> + Send + 'static,
    sessions_synced: tokio::sync::watch::Receiver<bool>,
) {
    let (dependents_tx, dependents_rx) = futures::channel::mpsc::unbounded();
    let synced = ctx.register_cache("GitHubTask");
    let primary_synced = synced.subscribe();
    let primary = crate::context::primary_watch(api, synced);
    let store = primary.store.clone();
    ctx.set_task_store(store.clone(), dependents_tx);
    let session_triggers =
        sessions.flat_map(move |(ns, name)| futures::stream::iter(waiting_for(&store, &ns, &name)));
    let concurrency = ctx.limits.task_concurrency();
    let tctx = Arc::new(TaskContext {
        ctx,
        config,
        sessions_synced,
        sessions_ready: tokio::sync::OnceCell::new(),
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = Controller::for_stream(primary.objects, primary.store)
        .reconcile_on(session_triggers)
        .reconcile_on(dependents_rx)
        .reconcile_all_on(primary.relisted)
        .reconcile_all_on(tctx.ctx.leadership.acquisitions())
        .with_config(kube::runtime::controller::Config::default().concurrency(concurrency))
        .graceful_shutdown_on(async move {
            let _ = stopped.await;
        })
        .run(reconcile, error_policy, tctx)
        .for_each(crate::context::log_watch_error);
    crate::shutdown::drive("githubtask", run, stop, vec![primary_synced]).await;
}

fn error_policy(task: Arc<TaskObject>, err: &Error, _ctx: Arc<TaskContext>) -> Action {
    warn!(task = %task.name_any(), namespace = task.namespace().unwrap_or_default(), error = %err, "reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

async fn reconcile(task: Arc<TaskObject>, tctx: Arc<TaskContext>) -> Result<Action, Error> {
    let ctx = &tctx.ctx;
    if !ctx.leadership.is_leader() {
        // A standby keeps its caches warm and acts on nothing; becoming the leader
        // re-queues every cached task.
        return Ok(Action::await_change());
    }
    let _permit = ctx.limits.task_permit().await;
    let span = info_span!("reconcile", controller = "githubtask", namespace = %task.namespace().unwrap_or_default(), name = %task.name_any());
    let started = std::time::Instant::now();
    let result = async {
        match &*task {
            Guarded::Valid(t) => reconcile_task(t, &tctx).await,
            Guarded::Invalid(invalid) => crate::invalid::reconcile(ctx, &task, invalid)
                .await
                .map(|()| Action::await_change())
                .map_err(Error::StatusWrite),
        }
    }
    .instrument(span)
    .await;
    ctx.metrics.observe_reconcile(
        "githubtask",
        started.elapsed(),
        result.as_ref().err().map(Error::metric_label),
    );
    result
}

/// observe → decide → act → status.
async fn reconcile_task(task: &GitHubTask, tctx: &TaskContext) -> Result<Action, Error> {
    let ctx = &tctx.ctx;
    if ctx.is_stale(task) {
        // Our last status write is not in the cache yet; its watch event will trigger us again.
        return Ok(Action::await_change());
    }
    let now = Utc::now();
    let observed = observe(task, tctx, now).await?;
    match decide::decide(task, &observed, now, &tctx.config) {
        Plan::Idle(requeue) => Ok(action(requeue)),
        Plan::Record { status, requeue } => {
            record(ctx, task, *status).await?;
            Ok(action(requeue))
        }
        Plan::Attempt(attempt) => run_attempt(ctx, task, *attempt).await,
    }
}

fn action(requeue: Option<Duration>) -> Action {
    requeue.map_or_else(Action::await_change, Action::requeue)
}

/// The reads a task's reconcile needs: none when it cannot act; else its GitHub client (one
/// `get` of its Secret) and, from the caches, the session or task it builds on.
async fn observe(
    task: &GitHubTask,
    tctx: &TaskContext,
    now: DateTime<Utc>,
) -> Result<Observed, Error> {
    if decide::gate(task, now, &tctx.config).is_err() {
        return Ok(Observed::default());
    }
    let ctx = &tctx.ctx;
    let ns = task.namespace().unwrap_or_default();
    if decide::from_session(task).is_some() {
        tctx.sessions_ready
            .get_or_init(|| async {
                let _ = tctx.sessions_synced.clone().wait_for(|done| *done).await;
            })
            .await;
    }
    // The policy, from the caches (complete before the first decision).
    ctx.policy.ready().await;
    let repo = decide::gate(task, now, &tctx.config).ok();
    let grant = match (repo, task.spec.action()) {
        (Some(repo), Some(action)) => ctx.policy.resolve(
            task.spec.github_source(),
            &ns,
            (&repo.owner, &repo.name),
            Purpose::Task(action.kind()),
        ),
        // gate() refused it already, or no action: decide says so.
        _ => return Ok(Observed::default()),
    };
    let (policy, location) = match grant {
        Ok(grant) => (Ok(()), Some(grant.secret)),
        Err(refusal) => (Err(refusal), None),
    };
    let github = match location {
        None => None,
        Some(location) => match ctx.github.client(&ctx.client, &location).await {
            Err(CredentialsError::Kube {
                namespace,
                name,
                source,
            }) => {
                return Err(Error::KubeRead {
                    what: format!("Secret {namespace}/{name}"),
                    source,
                });
            }
            other => Some(other),
        },
    };
    Ok(Observed {
        policy: Some(policy),
        github,
        from_session: decide::from_session(task).map(|name| ctx.find_session(&ns, name)),
        from_task: decide::from_task(task).map(|name| ctx.find_task(&ns, name)),
    })
}

/// Records the attempt (fenced), runs the action, writes what it ended with.
async fn run_attempt(ctx: &Context, task: &GitHubTask, attempt: Attempt) -> Result<Action, Error> {
    let stored = task.status.clone().unwrap_or_default();
    // Fenced on the version this decision was made from: if anyone else (another operator
    // process) wrote the task meanwhile, the apiserver answers 409 and this reconcile steps
    // back instead of writing to GitHub a second time.
    match crate::apply::apply_status_at_version(ctx, task, &attempt.started).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => return Ok(Action::await_change()),
        Err(e) => return Err(Error::StatusWrite(e)),
    }
    if stored.phase != Some(GitHubTaskPhase::Running) {
        let note = format!("attempt {}", attempt.started.attempts);
        publish(
            ctx,
            task,
            &Event {
                type_: EventType::Normal,
                reason: reasons::STARTED.into(),
                note: Some(note),
                action: "Running".into(),
            },
        )
        .await;
    }
    let mut progress = steps::Progress {
        ctx,
        task,
        status: attempt.started,
    };
    let outcome = match run_action(
        task,
        &attempt.github,
        &attempt.repo,
        &attempt.inputs,
        attempt.uncertain,
        &mut progress,
    )
    .await
    {
        Err(steps::StepError::Kube(e)) => return Err(e),
        Err(steps::StepError::NotLeader(message)) => {
            // Nothing was sent and nothing is recorded: the new leader finishes the task.
            warn!(%message, "GitHub write refused");
            return Ok(Action::await_change());
        }
        other => other,
    };
    let before = progress.status.clone();
    let (status, requeue) = decide::conclude(task, progress.status, &outcome, Utc::now());
    crate::apply::write_status(ctx, task, &before, &status)
        .await
        .map_err(Error::StatusWrite)?;
    announce(ctx, task, &before, &status).await;
    if status.phase == Some(GitHubTaskPhase::Succeeded) {
        ctx.notify_dependents(task);
    }
    Ok(action(requeue))
}

/// Writes `status` over the stored one (if different) and announces the transition.
async fn record(ctx: &Context, task: &GitHubTask, status: GitHubTaskStatus) -> Result<(), Error> {
    let stored = task.status.clone().unwrap_or_default();
    crate::apply::write_status(ctx, task, &stored, &status)
        .await
        .map_err(Error::StatusWrite)?;
    announce(ctx, task, &stored, &status).await;
    Ok(())
}

/// The Event of a change of phase or Ready reason (pure): a Warning for a failure, a wait or a
/// retry, Normal for success.
pub fn announcement(before: &GitHubTaskStatus, after: &GitHubTaskStatus) -> Option<Event> {
    let ready_after = status::ready_reason(after);
    if before.phase == after.phase && status::ready_reason(before) == ready_after {
        return None;
    }
    let message = after.message.clone().unwrap_or_default();
    let reason = ready_after.unwrap_or_default();
    let event = |type_, reason: &str, action: &str, note: String| Event {
        type_,
        reason: reason.to_string(),
        note: Some(note),
        action: action.to_string(),
    };
    match after.phase? {
        GitHubTaskPhase::Succeeded => {
            let url = after
                .result
                .as_ref()
                .and_then(|r| r.url.clone())
                .unwrap_or_default();
            Some(event(
                EventType::Normal,
                reasons::SUCCEEDED,
                "Succeeded",
                url,
            ))
        }
        GitHubTaskPhase::Failed => Some(event(EventType::Warning, &reason, "Failed", message)),
        GitHubTaskPhase::Pending => Some(event(EventType::Warning, &reason, "Pending", message)),
        GitHubTaskPhase::Running
            if reason == reasons::RATE_LIMITED || reason == reasons::GITHUB_ERROR =>
        {
            Some(event(EventType::Warning, &reason, "Retrying", message))
        }
        GitHubTaskPhase::Running => None,
    }
}

async fn announce(
    ctx: &Context,
    task: &GitHubTask,
    before: &GitHubTaskStatus,
    after: &GitHubTaskStatus,
) {
    let Some(event) = announcement(before, after) else {
        return;
    };
    match after.phase {
        Some(GitHubTaskPhase::Succeeded) => {
            info!(url = %event.note.clone().unwrap_or_default(), "task succeeded")
        }
        Some(GitHubTaskPhase::Failed) => {
            warn!(reason = %event.reason, message = %event.note.clone().unwrap_or_default(), "task failed")
        }
        _ => {}
    }
    publish(ctx, task, &event).await;
}

async fn publish(ctx: &Context, task: &GitHubTask, event: &Event) {
    if let Err(e) = ctx.recorder.publish(event, &task.object_ref(&())).await {
        warn!(error = %e, "publishing event failed");
    }
}
