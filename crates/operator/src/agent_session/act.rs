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
use super::children::{Control, PodSummary, Presence, ServiceSummary};
use super::controller::{Error, SessionContext};
use super::conversation::DELIVERED_BEFORE_ANNOTATION;
use super::credentials::{self, Issued, SessionCredentialsError};
use super::decide::conversation::AgentStep;
use super::decide::credentials::Issue;
use super::decide::{ChildWrites, First, Plan, Write};
use super::names::SessionNames;
use super::observe::{Learned, MintFailure};
use super::pod_state::PodState;
use crate::apply::Created;
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
    if let Some(stopped) = write_children(sctx, session, plan).await? {
        return Ok(Some(stopped));
    }
    let ctx = &sctx.ctx;
    let ns = session.namespace().unwrap_or_default();
    let names = SessionNames::for_session(session);
    if let Some(delete) = &plan.delete_pod {
        crate::apply::delete::<Pod>(ctx, &ns, &names.pod, delete.uid.as_deref())
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
        // This very session: one of that name created since is not deleted.
        crate::apply::delete::<AgentSession>(
            ctx,
            &ns,
            &session.name_any(),
            session.uid().as_deref(),
        )
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
                let token = issued.token.clone();
                let learned = store(sctx, session, issued).await?;
                if let Learned::Conflict(_) = learned {
                    // Nowhere to keep it: the fresh token goes at once.
                    if let Err(error) =
                        credentials::revoke_token(ctx, &request.source, &token).await
                    {
                        warn!(%error, "revoking an installation token that could not be stored failed");
                    }
                    return Ok(learned);
                }
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
    match credentials::store(&sctx.ctx, session, issued.clone()).await {
        Ok(()) => Ok(Learned::Token(issued)),
        Err(SessionCredentialsError::NameConflict(what)) => Ok(Learned::Conflict(what)),
        Err(e) => Err(Error::Credentials(e)),
    }
}

/// What writing the children ran into: the apiserver refused one (its answer), or one's name
/// is taken by an object the session does not control.
enum Stopped {
    Refused(String),
    Conflict(String),
}

/// The workspace claim first (the pod mounts it), then the rest at once; `Some` when the
/// apiserver refused one or a name was taken.
async fn write_children(
    sctx: &SessionContext,
    session: &AgentSession,
    plan: &Plan,
) -> Result<Option<Learned>, Error> {
    let ctx = &sctx.ctx;
    let writes = &plan.children;
    let ns = session.namespace().unwrap_or_default();
    let names = SessionNames::for_session(session);
    if let Some(pvc) = &writes.pvc {
        let what = (
            "PersistentVolumeClaim",
            ns.as_str(),
            names.workspace_pvc.as_str(),
        );
        if let Some(stopped) = outcome(write(ctx, pvc, what).await)? {
            return Ok(Some(stopped.into()));
        }
    }
    if writes.editor_secret
        && let Some(stopped) = ensure_editor_secret(ctx, session, &ns, &names).await?
    {
        return Ok(Some(stopped.into()));
    }
    let service = async {
        match &writes.service {
            Some(s) => write(ctx, s, ("Service", &ns, &names.service)).await,
            None => Ok(None),
        }
    };
    let policy = async {
        let what = ("NetworkPolicy", ns.as_str(), names.network_policy.as_str());
        if let Some(np) = &writes.network_policy {
            write(ctx, np, what).await
        } else if let Some(delete) = &writes.delete_network_policy {
            crate::apply::delete::<NetworkPolicy>(
                ctx,
                &ns,
                &names.network_policy,
                delete.uid.as_deref(),
            )
            .await
            .map(|()| None)
            .map_err(|source| Error::Delete {
                what: format!("NetworkPolicy {ns}/{}", names.network_policy),
                source,
            })
        } else {
            Ok(None)
        }
    };
    let pod = async {
        match &writes.pod {
            Some(p) => write(ctx, &Write::Create(p.clone()), ("Pod", &ns, &names.pod)).await,
            None => Ok(None),
        }
    };
    let (service, policy, pod) = futures::join!(service, policy, pod);
    let (service, policy, pod) = (outcome(service)?, outcome(policy)?, outcome(pod)?);
    let uid = session.uid().unwrap_or_default();
    expect_written(sctx, &ns, &names, writes, &uid, (&service, &policy, &pod));
    Ok(service.or(policy).or(pod).map(Into::into))
}

/// The editor's login Secret: created with a fresh random password when absent; one that
/// exists is kept as it is when the session controls it (the password a person already has),
/// else a conflict.
async fn ensure_editor_secret(
    ctx: &crate::context::Context,
    session: &AgentSession,
    ns: &str,
    names: &SessionNames,
) -> Result<Option<Stopped>, Error> {
    use rand::distr::{Alphanumeric, SampleString};
    let name = &names.editor_secret;
    let failed = |source| Error::Apply {
        what: format!("Secret {ns}/{name}"),
        source,
    };
    let password = Alphanumeric.sample_string(&mut rand::rng(), 32);
    let secret = super::build::desired_editor_secret(session, &password)
        .map_err(|e| Error::Credentials(e.into()))?;
    if crate::apply::create_object(ctx, &secret)
        .await
        .map_err(failed)?
        == Created::New
    {
        return Ok(None);
    }
    let existing =
        kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(ctx.client.clone(), ns)
            .get_metadata_opt(name)
            .await
            .map_err(failed)?;
    let uid = session.uid().unwrap_or_default();
    Ok(match existing {
        Some(m) if Control::of(&m.metadata).is_of(&uid) => None,
        // Deleted in between: retried (with backoff), when it is created.
        None => {
            let mut status = kube::core::Status::failure("deleted while being created", "Conflict");
            status.code = 409;
            return Err(failed(kube::Error::Api(status.boxed())));
        }
        Some(_) => Some(Stopped::Conflict(super::decide::conflict_message(
            "Secret", ns, name,
        ))),
    })
}

impl From<Stopped> for Learned {
    fn from(stopped: Stopped) -> Self {
        match stopped {
            Stopped::Refused(message) => Learned::Refused(message),
            Stopped::Conflict(what) => Learned::Conflict(what),
        }
    }
}

/// Children just written count as present until their watches show them, so a reconcile in
/// between does not write them again.
fn expect_written(
    sctx: &SessionContext,
    ns: &str,
    names: &SessionNames,
    writes: &ChildWrites,
    session_uid: &str,
    (service, policy, pod): (&Option<Stopped>, &Option<Stopped>, &Option<Stopped>),
) {
    let index = &sctx.children;
    let present = Presence {
        deleting: false,
        bound: false,
        control: Control::created_for(session_uid),
    };
    if writes.pvc.is_some() {
        index.pvcs.expect(ns, &names.workspace_pvc, present.clone());
    }
    if let (Some(s), None) = (&writes.service, service) {
        let spec = s.object().spec.as_ref();
        let headless = spec.and_then(|s| s.cluster_ip.as_deref()) == Some(HEADLESS);
        let control = Control::created_for(session_uid);
        index
            .services
            .expect(ns, &names.service, ServiceSummary { headless, control });
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
            control: Control::created_for(session_uid),
        };
        index.pods.expect(ns, &names.pod, summary);
    }
}

/// An apiserver refusal of a child (400, 403, 404, 422) as the message the session shows;
/// other errors propagate (retried with backoff).
fn outcome(result: Result<Option<Stopped>, Error>) -> Result<Option<Stopped>, Error> {
    match result {
        Err(Error::Apply {
            what,
            source: kube::Error::Api(e),
        }) if matches!(e.code, 400 | 403 | 404 | 422) => Ok(Some(Stopped::Refused(format!(
            "{what} was refused: {}",
            e.message
        )))),
        other => other,
    }
}

/// Creates or applies one child; a create that finds the name taken is a conflict (whoever made
/// that object, the session does not control it: its own would have been in the index).
async fn write<K>(
    ctx: &crate::context::Context,
    child: &Write<K>,
    (kind, ns, name): (&str, &str, &str),
) -> Result<Option<Stopped>, Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    K: Clone + Debug + Serialize + DeserializeOwned,
{
    let failed = |source| Error::Apply {
        what: format!("{kind} {ns}/{name}"),
        source,
    };
    match child {
        Write::Create(object) => match crate::apply::create_object(ctx, object).await {
            Ok(Created::New) => Ok(None),
            Ok(Created::AlreadyExists) => Ok(Some(Stopped::Conflict(
                super::decide::conflict_message(kind, ns, name),
            ))),
            Err(source) => Err(failed(source)),
        },
        Write::Apply { object, uid } => crate::apply::apply_object(ctx, object, uid.as_deref())
            .await
            .map(|_| None)
            .map_err(failed),
    }
}
