//! The writes of a session's [`Plan`], in a fixed order: the step planned first (a token, the
//! agent's stop) alone; else the workspace claim, then the Service, NetworkPolicy and Pod at
//! once (the pod is what the user waits for, none depends on another, and the NetworkPolicy is
//! in force long before the agent listens), then the pod's deletion, the token's revocation and
//! the agent worker. The status, the Event and the session's own deletion follow in
//! [`finish`].
//!
//! A refusal of the apiserver (admission, quota, RBAC, an invalid override) is learned, not an
//! error: the session shows it (`ChildRejected`) instead of retrying every 5 s.

use super::build::HEADLESS;
use super::children::{PodSummary, Presence, ServiceSummary};
use super::controller::{Error, SessionContext};
use super::conversation::DELIVERED_BEFORE_ANNOTATION;
use super::credentials::{self, Issued, SessionCredentialsError};
use super::decide::conversation::AgentStep;
use super::decide::credentials::Issue;
use super::decide::{ChildWrites, First, Plan};
use super::names::SessionNames;
use super::observe::{Learned, MintFailure};
use super::pod_state::PodState;
use ccplant_api::AgentSession;
use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use tracing::warn;

/// Performs `plan`'s writes; `Some` when a step's outcome means deciding again.
pub async fn act(
    sctx: &SessionContext,
    session: &AgentSession,
    plan: &Plan,
    now: DateTime<Utc>,
) -> Result<Option<Learned>, Error> {
    if let Some(first) = &plan.first {
        return first_step(sctx, session, first, now).await.map(Some);
    }
    if let Some(refused) = write_children(sctx, session, plan).await? {
        return Ok(Some(Learned::Refused(refused)));
    }
    let ctx = &sctx.ctx;
    let ns = session.namespace().unwrap_or_default();
    let names = SessionNames::for_session(session);
    if plan.delete_pod {
        crate::apply::delete::<Pod>(ctx, &ns, &names.pod)
            .await
            .map_err(|source| Error::Delete {
                what: format!("Pod {ns}/{}", names.pod),
                source,
            })?;
    }
    let mut token_gone = true;
    if let Some(request) = &plan.revoke {
        token_gone = credentials::revoke(ctx, session, request)
            .await
            .map_err(Error::Credentials)?;
    }
    if plan.remove_finalizer {
        if !token_gone {
            // The finalizer holds the session until GitHub confirms: retried with backoff.
            return Err(Error::Credentials(SessionCredentialsError::Revoke(
                "GitHub did not confirm the revocation; retrying before the finalizer is removed"
                    .into(),
            )));
        }
        credentials::set_finalizer(ctx, session, false)
            .await
            .map_err(Error::Credentials)?;
    }
    if let AgentStep::Run(target) = &plan.agent {
        sctx.conversations.ensure((**target).clone());
    }
    Ok(None)
}

/// The status (once, when it differs), the Event, then `ttlAfterFinished`'s deletion.
pub async fn finish(
    sctx: &SessionContext,
    session: &AgentSession,
    plan: Plan,
) -> Result<(), Error> {
    let ctx = &sctx.ctx;
    let stored = session.status.clone().unwrap_or_default();
    crate::apply::write_status(ctx, session, &stored, &plan.status)
        .await
        .map_err(Error::StatusWrite)?;
    if let Some(event) = &plan.event
        && let Err(e) = ctx.recorder.publish(event, &session.object_ref(&())).await
    {
        warn!(error = %e, "publishing event failed");
    }
    if plan.delete_session {
        let ns = session.namespace().unwrap_or_default();
        crate::apply::delete::<AgentSession>(ctx, &ns, &session.name_any())
            .await
            .map_err(|source| Error::Delete {
                what: format!("AgentSession {ns}/{}", session.name_any()),
                source,
            })?;
    }
    Ok(())
}

async fn first_step(
    sctx: &SessionContext,
    session: &AgentSession,
    first: &First,
    now: DateTime<Utc>,
) -> Result<Learned, Error> {
    let ctx = &sctx.ctx;
    match first {
        First::Token(Issue::Adopt(issued)) => {
            ctx.session_tokens
                .set(&session.uid().unwrap_or_default(), issued.clone());
            Ok(Learned::Token(issued.clone()))
        }
        First::Token(Issue::Store(issued)) => store(sctx, session, issued.clone()).await,
        First::Token(Issue::Mint(request)) => match credentials::mint(ctx, request, now).await {
            Ok(issued) => {
                let learned = store(sctx, session, issued).await?;
                // The new token is in the Secret: the one it replaced goes (once; a failure is
                // logged, that token expiring within the hour).
                if let Some(old) = &request.replaces
                    && let Err(error) = credentials::revoke_token(ctx, &request.source, old).await
                {
                    warn!(%error, "revoking the replaced installation token failed");
                }
                Ok(learned)
            }
            Err(e) => {
                let retryable = match &e {
                    SessionCredentialsError::Mint { source, .. } => source.is_retryable(),
                    _ => false,
                };
                Ok(Learned::MintFailed(MintFailure {
                    message: e.to_string(),
                    retryable,
                }))
            }
        },
        First::AddFinalizer => {
            credentials::set_finalizer(ctx, session, true)
                .await
                .map_err(Error::Credentials)?;
            Ok(Learned::FinalizerAdded)
        }
        First::StopAgent { end } => {
            let last = sctx
                .conversations
                .stop(&session.uid().unwrap_or_default())
                .await;
            Ok(Learned::AgentStopped {
                last,
                end: end.clone(),
            })
        }
    }
}

async fn store(
    sctx: &SessionContext,
    session: &AgentSession,
    issued: Issued,
) -> Result<Learned, Error> {
    credentials::store(&sctx.ctx, session, issued.clone())
        .await
        .map_err(Error::Credentials)?;
    Ok(Learned::Token(issued))
}

/// The workspace claim first (the pod mounts it), then the rest at once; `Some` with the
/// apiserver's answer when it refused one.
async fn write_children(
    sctx: &SessionContext,
    session: &AgentSession,
    plan: &Plan,
) -> Result<Option<String>, Error> {
    let ctx = &sctx.ctx;
    let writes = &plan.children;
    let ns = session.namespace().unwrap_or_default();
    let names = SessionNames::for_session(session);
    if let Some(pvc) = &writes.pvc {
        let what = format!("PersistentVolumeClaim {ns}/{}", names.workspace_pvc);
        if let Some(refused) = refusal(apply(ctx, pvc, &what).await)? {
            return Ok(Some(refused));
        }
    }
    let service = async {
        match &writes.service {
            Some(s) => apply(ctx, s, &format!("Service {ns}/{}", names.service)).await,
            None => Ok(()),
        }
    };
    let policy = async {
        let what = format!("NetworkPolicy {ns}/{}", names.network_policy);
        if let Some(np) = &writes.network_policy {
            apply(ctx, np, &what).await
        } else if writes.delete_network_policy {
            crate::apply::delete::<NetworkPolicy>(ctx, &ns, &names.network_policy)
                .await
                .map_err(|source| Error::Delete { what, source })
        } else {
            Ok(())
        }
    };
    let pod = async {
        match &writes.pod {
            Some(p) => crate::apply::create_object(ctx, p)
                .await
                .map_err(|source| Error::Apply {
                    what: format!("Pod {ns}/{}", names.pod),
                    source,
                }),
            None => Ok(()),
        }
    };
    let (service, policy, pod) = futures::join!(service, policy, pod);
    let (service, policy, pod) = (refusal(service)?, refusal(policy)?, refusal(pod)?);
    expect_written(sctx, &ns, &names, writes, (&service, &policy, &pod));
    Ok(service.or(policy).or(pod))
}

/// Children just written count as present until their watches show them, so a reconcile in
/// between does not write them again.
fn expect_written(
    sctx: &SessionContext,
    ns: &str,
    names: &SessionNames,
    writes: &ChildWrites,
    (service, policy, pod): (&Option<String>, &Option<String>, &Option<String>),
) {
    let index = &sctx.children;
    let present = Presence {
        deleting: false,
        bound: false,
    };
    if writes.pvc.is_some() {
        index.pvcs.expect(ns, &names.workspace_pvc, present);
    }
    if let (Some(s), None) = (&writes.service, service) {
        let headless = s.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some(HEADLESS);
        index
            .services
            .expect(ns, &names.service, ServiceSummary { headless });
    }
    if let (Some(_), None) = (&writes.network_policy, policy) {
        index
            .network_policies
            .expect(ns, &names.network_policy, present);
    }
    if let (Some(p), None) = (&writes.pod, pod) {
        let delivered_before = p
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(DELIVERED_BEFORE_ANNOTATION))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let summary = PodSummary {
            state: PodState::Starting,
            ip: None,
            uid: 0,
            delivered_before,
        };
        index.pods.expect(ns, &names.pod, summary);
    }
}

/// An apiserver refusal of a child (400, 403, 404, 422) as the message the session shows;
/// other errors propagate (retried with backoff).
fn refusal(result: Result<(), Error>) -> Result<Option<String>, Error> {
    match result {
        Err(Error::Apply {
            what,
            source: kube::Error::Api(e),
        }) if matches!(e.code, 400 | 403 | 404 | 422) => {
            Ok(Some(format!("{what} was refused: {}", e.message)))
        }
        Err(e) => Err(e),
        Ok(()) => Ok(None),
    }
}

async fn apply<K>(ctx: &crate::context::Context, obj: &K, what: &str) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    K: Clone + Debug + Serialize + DeserializeOwned,
{
    crate::apply::apply_object(ctx, obj)
        .await
        .map(drop)
        .map_err(|source| Error::Apply {
            what: what.to_string(),
            source,
        })
}
