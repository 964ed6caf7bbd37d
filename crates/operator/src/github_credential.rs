//! The GitHubCredential controller: status only (the rules are in [`crate::policy`]). For each
//! credential it reads the Secret, asks GitHub who it is (once per client: the identity is
//! cached with it) and records Ready, the identity and the rate limit remaining. The Secret is
//! not watched (the operator never watches Secrets): a missing one is looked for again with
//! backoff, a ready credential every [`REFRESH`] (which also refreshes the rate limit shown).

use crate::context::Context;
use crate::credentials::{CredentialsError, SecretLocation, read_secret};
use ccplant_api::conditions::{
    ConditionStatus, Progress, new_condition, reasons, set_condition, set_progress, types,
};
use ccplant_api::{CredentialIdentity, GitHubCredential, GitHubCredentialStatus};
use ccplant_github::IdentityKind;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use kube::runtime::controller::{Action, Controller};
use kube::{Api, ResourceExt};
use std::sync::Arc;
use std::time::Duration;
use tracing::{Instrument, info_span, warn};

/// How often a Ready credential's status is refreshed (the rate limit "as last seen").
pub const REFRESH: Duration = Duration::from_secs(300);
/// How soon a credential whose Secret is missing or refused is looked at again.
pub const RETRY: Duration = Duration::from_secs(30);

/// What a reconcile learned about a credential.
#[derive(Debug)]
pub enum Observed {
    Ready {
        identity: ccplant_github::Identity,
        rate_limit_remaining: Option<u64>,
    },
    /// The Secret is missing or unusable, or GitHub refused it.
    Problem {
        reason: &'static str,
        message: String,
    },
}

/// The status for what was observed (pure), and when to look again.
pub fn decide(
    credential: &GitHubCredential,
    observed: &Observed,
    now: DateTime<Utc>,
) -> (GitHubCredentialStatus, Duration) {
    let stored = credential.status.clone().unwrap_or_default();
    let generation = credential.metadata.generation;
    let mut next = GitHubCredentialStatus {
        observed_generation: generation,
        conditions: stored.conditions.clone(),
        ..stored.clone()
    };
    let time = crate::time::to_k8s(now);
    let (ready, reason, message, progress, requeue) = match observed {
        Observed::Ready {
            identity,
            rate_limit_remaining,
        } => {
            next.identity = Some(CredentialIdentity {
                login: identity.login.clone(),
                kind: match identity.kind {
                    IdentityKind::User => "User".into(),
                    IdentityKind::App { .. } => "App".into(),
                },
                app_slug: match &identity.kind {
                    IdentityKind::App { slug } => Some(slug.clone()),
                    IdentityKind::User => None,
                },
            });
            next.rate_limit_remaining = rate_limit_remaining
                .map(|r| i64::try_from(r).unwrap_or(i64::MAX))
                .or(stored.rate_limit_remaining);
            (
                true,
                reasons::CREDENTIAL_READY,
                format!("acts as {}", identity.login),
                Progress::Current,
                REFRESH,
            )
        }
        Observed::Problem { reason, message } => {
            (false, *reason, message.clone(), Progress::Stalled, RETRY)
        }
    };
    set_condition(
        &mut next.conditions,
        new_condition(
            types::READY,
            ConditionStatus::from(ready),
            reason,
            message.clone(),
            generation,
            time.clone(),
        ),
    );
    set_progress(
        &mut next.conditions,
        progress,
        reason,
        &message,
        generation,
        time,
    );
    (next, requeue)
}

async fn observe(ctx: &Context, credential: &GitHubCredential) -> Observed {
    let r = &credential.spec.secret_ref;
    let location = SecretLocation::new(&r.namespace, &r.name);
    let problem = |reason, message: String| Observed::Problem { reason, message };
    let secret = match read_secret(&ctx.client, &location).await {
        Ok(secret) => secret,
        Err(e @ CredentialsError::SecretNotFound { .. }) => {
            return problem(reasons::SECRET_NOT_FOUND, e.to_string());
        }
        Err(e) => return problem(reasons::GITHUB_ERROR, e.to_string()),
    };
    let github = match ctx.github.client_for(&location, &secret) {
        Ok(github) => github,
        Err(e) => return problem(reasons::INVALID_SECRET, e.to_string()),
    };
    match github.identity().await {
        Ok(identity) => Observed::Ready {
            identity,
            rate_limit_remaining: github.rate_limit_remaining(),
        },
        Err(e) => {
            let reason = match e.status() {
                Some(401 | 403) => reasons::UNAUTHORIZED,
                _ => reasons::GITHUB_ERROR,
            };
            problem(reason, format!("GitHub refused the credential: {e}"))
        }
    }
}

async fn reconcile(
    credential: Arc<GitHubCredential>,
    ctx: Arc<Context>,
) -> Result<Action, kube::Error> {
    if !ctx.leadership.is_leader() {
        return Ok(Action::await_change());
    }
    let span =
        info_span!("reconcile", controller = "githubcredential", name = %credential.name_any());
    async {
        let observed = observe(&ctx, &credential).await;
        tracing::debug!(?observed, "observed the credential");
        let (next, requeue) = decide(&credential, &observed, Utc::now());
        let stored = credential.status.clone().unwrap_or_default();
        if stored != next {
            let api: Api<GitHubCredential> = Api::all(ctx.client.clone());
            let patch = serde_json::json!({
                "apiVersion": "ccplant.io/v1alpha1",
                "kind": "GitHubCredential",
                "status": next,
            });
            api.patch_status(
                &credential.name_any(),
                &kube::api::PatchParams::apply(crate::apply::FIELD_MANAGER).force(),
                &kube::api::Patch::Apply(&patch),
            )
            .await?;
        }
        Ok(Action::requeue(requeue))
    }
    .instrument(span)
    .await
}

fn error_policy(
    credential: Arc<GitHubCredential>,
    err: &kube::Error,
    _ctx: Arc<Context>,
) -> Action {
    warn!(credential = %credential.name_any(), error = %err, "reconcile failed");
    Action::requeue(RETRY)
}

/// Runs the controller until shutdown over `credentials`, the watch that fills the policy's
/// GitHubCredential cache.
pub async fn run(
    ctx: Arc<Context>,
    credentials: futures::stream::BoxStream<
        'static,
        Result<GitHubCredential, kube::runtime::watcher::Error>,
    >,
) {
    let store = ctx.policy.credentials.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = Controller::for_stream(credentials, store)
        .reconcile_all_on(ctx.leadership.acquisitions())
        .graceful_shutdown_on(async move {
            let _ = stopped.await;
        })
        .run(reconcile, error_policy, ctx.clone())
        .for_each(crate::context::log_watch_error);
    let synced = vec![ctx.policy.credentials_synced()];
    crate::shutdown::drive("githubcredential", run, stop, synced).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn credential(status: serde_json::Value) -> GitHubCredential {
        let mut v = json!({
            "apiVersion": "ccplant.io/v1alpha1", "kind": "GitHubCredential",
            "metadata": {"name": "platform", "generation": 2},
            "spec": {"secretRef": {"namespace": "ops", "name": "app"}, "namespaceSelector": {}, "repositories": ["o/*"]},
        });
        if !status.is_null() {
            v["status"] = status;
        }
        serde_json::from_value(v).unwrap()
    }

    fn line(s: &GitHubCredentialStatus) -> String {
        let c = |t: &str| {
            s.conditions
                .iter()
                .find(|c| c.type_ == t)
                .map(|c| format!("{t}={}/{}", c.status, c.reason))
                .unwrap_or_default()
        };
        format!(
            "{} {}{} {:?} {:?} gen={:?}",
            c("Ready"),
            c("Reconciling"),
            c("Stalled"),
            s.identity.as_ref().map(|i| (&i.login, &i.kind)),
            s.rate_limit_remaining,
            s.observed_generation
        )
    }

    #[test]
    fn status_of_a_credential() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let app = Observed::Ready {
            identity: ccplant_github::Identity {
                login: "ccplant[bot]".into(),
                kind: IdentityKind::App {
                    slug: "ccplant".into(),
                },
            },
            rate_limit_remaining: Some(4990),
        };
        let (ready, requeue) = decide(&credential(serde_json::Value::Null), &app, now);
        assert_eq!(
            line(&ready),
            "Ready=True/Ready  Some((\"ccplant[bot]\", \"App\")) Some(4990) gen=Some(2)"
        );
        assert_eq!(requeue, REFRESH);
        // Unchanged: the same status (no write).
        let again = credential(serde_json::to_value(&ready).unwrap());
        assert_eq!(
            decide(&again, &app, now + chrono::Duration::seconds(300)).0,
            ready
        );
        let missing = Observed::Problem {
            reason: reasons::SECRET_NOT_FOUND,
            message: "Secret ops/app not found".into(),
        };
        let (gone, requeue) = decide(&again, &missing, now);
        assert_eq!(
            line(&gone),
            "Ready=False/SecretNotFound Stalled=True/SecretNotFound Some((\"ccplant[bot]\", \"App\")) Some(4990) gen=Some(2)"
        );
        assert_eq!(requeue, RETRY);
    }
}
