//! The GitHubTask controller: one GitHub side effect per task, exactly once.
//!
//! Exactly-once without idempotency keys (DESIGN §3.2):
//! - before the first GitHub write of an attempt, status records the attempt;
//! - every body written carries the task's marker, so an earlier attempt's effect is found by
//!   listing, and a reconcile that finds an attempt recorded but no result looks before writing;
//! - each step's result goes to status as soon as GitHub returns it;
//! - a Succeeded or Failed task is never acted on again (no read, no write).

mod action;
pub mod status;

use crate::context::Context;
use crate::credentials::{CredentialsError, secret_location};
use crate::events::{Event, EventType};
use action::{StepError, run_action};
use ccplant_api::conditions::reasons;
use ccplant_api::{AgentSession, GitHubTask, GitHubTaskPhase, GitHubTaskStatus};
use chrono::Utc;
use futures::StreamExt;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use status::{Outcome, StatusBuilder};
use std::sync::Arc;
use std::time::Duration;
use tracing::{Instrument, info, info_span, warn};

pub use crate::apply::FIELD_MANAGER;

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

/// Runs the controller for `api` until shutdown.
pub async fn run(ctx: Arc<Context>, api: Api<GitHubTask>, sessions: Api<AgentSession>) {
    let (dependents_tx, dependents_rx) =
        futures::channel::mpsc::unbounded::<ObjectRef<GitHubTask>>();
    let synced = ctx.register_cache("GitHubTask");
    let primary_synced = synced.subscribe();
    let primary = crate::context::primary_watch(api, synced);
    let store = primary.store.clone();
    let controller = Controller::for_stream(primary.objects, primary.store);
    ctx.set_task_store(store.clone(), dependents_tx);
    let session_store = store.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = controller
        .watches(
            sessions,
            crate::context::watch_config(),
            move |session: AgentSession| {
                // Tasks waiting for this session (createPullRequest.fromSession).
                let ns = session.namespace();
                let name = session.name_any();
                session_store
                    .state()
                    .into_iter()
                    .filter(|t| {
                        t.namespace() == ns
                            && t.spec
                                .create_pull_request
                                .as_ref()
                                .and_then(|p| p.from_session.as_deref())
                                == Some(name.as_str())
                    })
                    .map(|t| ObjectRef::from_obj(&*t))
                    .collect::<Vec<_>>()
            },
        )
        .reconcile_on(dependents_rx)
        .reconcile_all_on(primary.relisted)
        .reconcile_all_on(ctx.leadership.acquisitions())
        .with_config(kube::runtime::controller::Config::default().concurrency(ctx.task_concurrency))
        .graceful_shutdown_on(async move {
            let _ = stopped.await;
        })
        .run(reconcile, error_policy, ctx)
        .for_each(crate::context::log_watch_error);
    crate::shutdown::drive("githubtask", run, stop, vec![primary_synced]).await;
}

fn error_policy(task: Arc<GitHubTask>, err: &Error, _ctx: Arc<Context>) -> Action {
    warn!(task = %task.name_any(), namespace = task.namespace().unwrap_or_default(), error = %err, "reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

async fn reconcile(task: Arc<GitHubTask>, ctx: Arc<Context>) -> Result<Action, Error> {
    if !ctx.leadership.is_leader() {
        // A standby keeps its caches warm and acts on nothing; becoming the leader
        // re-queues every cached task.
        return Ok(Action::await_change());
    }
    let ns = task.namespace().unwrap_or_default();
    let name = task.name_any();
    let span = info_span!("reconcile", controller = "githubtask", namespace = %ns, name = %name);
    let started = std::time::Instant::now();
    let result = reconcile_inner(task, ctx.clone()).instrument(span).await;
    ctx.metrics.observe_reconcile(
        "githubtask",
        started.elapsed(),
        result.as_ref().err().map(Error::metric_label),
    );
    result
}

async fn reconcile_inner(task: Arc<GitHubTask>, ctx: Arc<Context>) -> Result<Action, Error> {
    if ctx.is_stale(&*task) {
        // Our last status write is not in the cache yet; its watch event will trigger us again.
        return Ok(Action::await_change());
    }
    let stored = task.status.clone().unwrap_or_default();
    if stored.phase.is_some_and(GitHubTaskPhase::is_finished) {
        return Ok(Action::await_change());
    }
    let now = Utc::now();
    let sb = StatusBuilder::new(&task, now);
    let ns = task.namespace().unwrap_or_default();

    // Validate what the schema may not have caught (objects that bypassed admission).
    if let Err(invalid) = task.spec.validate() {
        return finish(
            &ctx,
            &task,
            sb.failed(reasons::INVALID_SPEC, invalid.to_string()),
        )
        .await;
    }
    let Some((owner, repo)) = task
        .spec
        .owner_and_repo(ctx.default_github_owner.as_deref())
    else {
        let msg = format!(
            "repository \"{}\" names no owner and the operator has no --default-github-owner",
            task.spec.repository
        );
        return finish(&ctx, &task, sb.failed(reasons::INVALID_SPEC, msg)).await;
    };
    let repo = ccplant_github::RepoRef::new(owner, repo);

    // Waiting out a backoff or a rate limit: nothing to write.
    if let Some(next) = stored.next_attempt_time.as_ref()
        && crate::time::from_k8s(next) > now
    {
        let wait = (crate::time::from_k8s(next) - now)
            .to_std()
            .unwrap_or_default();
        return Ok(Action::requeue(wait));
    }

    // Credentials (a Secret we only `get`: no watch, so a missing one is retried with backoff).
    let Some((secret_ns, secret_name)) = secret_location(
        task.spec.github_secret_ref(),
        &ns,
        ctx.default_github_secret.as_deref(),
        &ctx.operator_namespace,
    ) else {
        let err = CredentialsError::NoSecretConfigured;
        return pending(
            &ctx,
            &task,
            sb.pending(reasons::SECRET_NOT_FOUND, err.to_string()),
        )
        .await;
    };
    let github = match ctx
        .github
        .client(&ctx.client, &secret_ns, &secret_name)
        .await
    {
        Ok(gh) => gh,
        Err(e @ CredentialsError::SecretNotFound { .. }) => {
            return pending(
                &ctx,
                &task,
                sb.pending(reasons::SECRET_NOT_FOUND, e.to_string()),
            )
            .await;
        }
        Err(e @ CredentialsError::InvalidSecret { .. }) => {
            return pending(
                &ctx,
                &task,
                sb.pending(reasons::INVALID_SECRET, e.to_string()),
            )
            .await;
        }
        Err(e @ CredentialsError::NoSecretConfigured) => {
            return pending(
                &ctx,
                &task,
                sb.pending(reasons::SECRET_NOT_FOUND, e.to_string()),
            )
            .await;
        }
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
    };

    // Dependencies: another task's pull request, or a session's work branch.
    let inputs = match action::resolve_inputs(&ctx, &task).await? {
        action::Inputs::Ready(inputs) => inputs,
        action::Inputs::Waiting(message) => {
            return pending(&ctx, &task, sb.pending(reasons::WAITING, message)).await;
        }
        action::Inputs::Invalid(message) => {
            return finish(&ctx, &task, sb.failed(reasons::INVALID_SPEC, message)).await;
        }
    };

    // Record the attempt before any GitHub write. An attempt already recorded without a result
    // may have written: the action then looks for its effect first.
    let uncertain = stored.attempts > 0;
    // The attempt record is fenced on the version this decision was made from: if anyone else
    // (another operator process) wrote the task meanwhile, the apiserver answers 409 and this
    // reconcile steps back instead of writing to GitHub a second time.
    let started = sb.start_attempt(task.spec.retry.max_attempts);
    match crate::apply::apply_status_at_version(&ctx, &*task, &started).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => return Ok(Action::await_change()),
        Err(e) => return Err(Error::StatusWrite(e)),
    }
    if stored.phase != Some(GitHubTaskPhase::Running) {
        publish(
            &ctx,
            &task,
            EventType::Normal,
            "Started",
            "Running",
            format!("attempt {}", started.attempts),
        )
        .await;
    }

    let mut progress = action::Progress {
        ctx: &ctx,
        task: &task,
        status: started,
    };
    let outcome = run_action(&task, &github, &repo, &inputs, uncertain, &mut progress).await;
    let before = progress.status.clone();
    let sb = StatusBuilder::from_status(&task, progress.status, Utc::now());
    let (status, next) = match outcome {
        Ok(()) => (sb.succeeded(), Outcome::Done),
        Err(StepError::User { reason, message }) => (sb.failed(&reason, message), Outcome::Done),
        Err(StepError::RateLimited { reset_at, message }) => sb.rate_limited(reset_at, message),
        Err(StepError::Transient { message }) => sb.transient(&task.spec.retry, message),
        Err(StepError::Kube(e)) => return Err(e),
    };
    let written = write_status(&ctx, &task, &before, status).await?;
    announce(&ctx, &task, &before, &written).await;
    if written.phase == Some(GitHubTaskPhase::Succeeded) {
        ctx.notify_dependents(&task);
    }
    Ok(match next {
        Outcome::Done => Action::await_change(),
        Outcome::RequeueAfter(d) => Action::requeue(d),
    })
}

/// Writes a final status (Succeeded or Failed).
async fn finish(
    ctx: &Context,
    task: &GitHubTask,
    status: GitHubTaskStatus,
) -> Result<Action, Error> {
    record(ctx, task, status).await?;
    Ok(Action::await_change())
}

/// Writes a Pending status and requeues with backoff: 1 s, doubling with the time already spent
/// waiting for the same reason, capped at 30 s.
async fn pending(
    ctx: &Context,
    task: &GitHubTask,
    status: GitHubTaskStatus,
) -> Result<Action, Error> {
    let written = record(ctx, task, status).await?;
    Ok(Action::requeue(status::pending_backoff(
        &written,
        Utc::now(),
    )))
}

/// Writes `status` over the stored one (if different) and announces the transition.
async fn record(
    ctx: &Context,
    task: &GitHubTask,
    status: GitHubTaskStatus,
) -> Result<GitHubTaskStatus, Error> {
    let stored = task.status.clone().unwrap_or_default();
    let written = write_status(ctx, task, &stored, status).await?;
    announce(ctx, task, &stored, &written).await;
    Ok(written)
}

/// Server-side applies `next` unless it equals `stored` (steady state writes nothing).
async fn write_status(
    ctx: &Context,
    task: &GitHubTask,
    stored: &GitHubTaskStatus,
    next: GitHubTaskStatus,
) -> Result<GitHubTaskStatus, Error> {
    if *stored != next {
        crate::apply::apply_status(ctx, task, &next)
            .await
            .map_err(Error::StatusWrite)?;
    }
    Ok(next)
}

/// Events for phase transitions and for errors a user must act on.
async fn announce(
    ctx: &Context,
    task: &GitHubTask,
    before: &GitHubTaskStatus,
    after: &GitHubTaskStatus,
) {
    let ready_before = status::ready_reason(before);
    let ready_after = status::ready_reason(after);
    if before.phase == after.phase && ready_before == ready_after {
        return;
    }
    let message = after.message.clone().unwrap_or_default();
    let reason = ready_after.unwrap_or_default();
    match after.phase {
        Some(GitHubTaskPhase::Succeeded) => {
            let url = after
                .result
                .as_ref()
                .and_then(|r| r.url.clone())
                .unwrap_or_default();
            info!(%url, "task succeeded");
            publish(ctx, task, EventType::Normal, "Succeeded", "Succeeded", url).await;
        }
        Some(GitHubTaskPhase::Failed) => {
            warn!(%reason, %message, "task failed");
            publish(ctx, task, EventType::Warning, &reason, "Failed", message).await;
        }
        Some(GitHubTaskPhase::Pending) => {
            publish(ctx, task, EventType::Warning, &reason, "Pending", message).await;
        }
        Some(GitHubTaskPhase::Running)
            if reason == reasons::RATE_LIMITED || reason == reasons::GITHUB_ERROR =>
        {
            publish(ctx, task, EventType::Warning, &reason, "Retrying", message).await;
        }
        _ => {}
    }
}

async fn publish(
    ctx: &Context,
    task: &GitHubTask,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.to_string(),
        note: Some(note),
        action: action.to_string(),
    };
    if let Err(e) = ctx.recorder.publish(&event, &task.object_ref(&())).await {
        warn!(error = %e, "publishing event failed");
    }
}
