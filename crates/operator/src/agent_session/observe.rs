//! Every read of one session's reconcile, made once, into one [`Observed`] snapshot: the
//! children's summaries from the watch indexes, the agent worker's live state, and the
//! credentials — what this process issued, and the session's own Secret and the source Secret,
//! each read only when a rule needs it ([`credentials::reads_to_issue`] and
//! [`credentials::reads_to_revoke`], pure). No decision is made here.
//!
//! While acting, a step whose outcome the rest depends on (a token issued, the agent stopped, a
//! child refused) becomes part of the snapshot ([`Observed::learn`]) and `decide` runs again.

use super::children::{PodSummary, Presence, ServiceSummary};
use super::controller::{Error, SessionContext};
use super::conversation::{Snapshot, Worker};
use super::credentials::{Issued, SessionSecret};
use super::decide::conversation::End;
use super::decide::{self, Stage, credentials};
use super::names::SessionNames;
use crate::credentials::{CredentialsError, SecretLocation, read_secret};
use crate::policy::{Grant, PolicyCaches, Purpose, Refusal};
use ccplant_api::{AgentSession, AgentSessionClass, GitHubSource};
use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use std::sync::Arc;

/// What one reconcile knows of a session's world.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    pub children: Children,
    pub credentials: ObservedCredentials,
    /// The session's agent worker, if one was started.
    pub worker: Option<Worker>,
    /// Learned: the worker was stopped in this reconcile; its last state.
    pub stopped: Option<Snapshot>,
    /// Learned: it was stopped because the conversation ended the session.
    pub ended: Option<End>,
    /// Learned: the apiserver refused a child; its answer.
    pub refused: Option<String>,
    /// Learned: creating a child found an object of that name the session does not control.
    pub conflict: Option<String>,
    /// Learned: the finalizer `ccplant.io/revoke-token` was added in this reconcile.
    pub finalizer_added: bool,
    /// The session's AgentSessionClass (`None`: no class, the built-in rules).
    pub class: Option<Arc<AgentSessionClass>>,
    /// Why the session cannot use the class it names (then `class` is `None`).
    pub class_refusal: Option<Refusal>,
    /// The class's line in the namespace, when it limits how many sessions run at once.
    pub queue: Option<Queue>,
}

/// The sessions of a class in one namespace that limits how many run at once.
#[derive(Clone, Debug, Default)]
pub struct Queue {
    pub class: String,
    pub max: usize,
    pub peers: Vec<decide::queue::Peer>,
}

/// The sessions of `namespace` waiting their turn (Ready reason Queued), to look again.
pub fn queued_in(
    store: &kube::runtime::reflector::Store<super::controller::SessionObject>,
    namespace: &str,
) -> Vec<kube::runtime::reflector::ObjectRef<super::controller::SessionObject>> {
    store
        .state()
        .iter()
        .filter_map(|o| match &**o {
            crate::guard::Guarded::Valid(s) => Some(s),
            _ => None,
        })
        .filter(|s| s.namespace().as_deref() == Some(namespace))
        .filter(|s| {
            s.status.as_ref().is_some_and(|st| {
                ccplant_api::conditions::find_condition(
                    &st.conditions,
                    ccplant_api::conditions::types::READY,
                )
                .is_some_and(|c| c.reason == ccplant_api::conditions::reasons::QUEUED)
            })
        })
        .map(super::children::session_ref)
        .collect()
}

/// The line of `class` in the session's namespace (pure over the caches).
fn queue_of(
    session: &AgentSession,
    class: &AgentSessionClass,
    sctx: &SessionContext,
) -> Option<Queue> {
    let max = usize::try_from(class.spec.limits.max_active_sessions_per_namespace?).ok()?;
    let ns = session.namespace().unwrap_or_default();
    let name = class.name_any();
    let default = sctx.ctx.policy.resolve_class(None, &ns).ok().flatten();
    let is_default = default.is_some_and(|d| d.name_any() == name);
    let peers = sctx
        .sessions
        .state()
        .iter()
        .filter_map(|o| match &**o {
            crate::guard::Guarded::Valid(s) => Some(s.clone()),
            _ => None,
        })
        .filter(|s| s.namespace().as_deref() == Some(ns.as_str()))
        .filter(|s| match s.spec.class_name.as_deref() {
            Some(c) => c == name,
            None => is_default,
        })
        .map(|s| {
            let phase = s.status.as_ref().and_then(|st| st.phase);
            let uid = s.uid().unwrap_or_default();
            let pod = sctx
                .children
                .pods
                .get(&ns, &SessionNames::for_session(&s).pod)
                .filter(|p| p.control.is_of(&uid));
            let holds = pod.as_ref().is_some_and(|p| p.state.is_alive());
            // Its agent exited: the session is ending (its status may not say so yet), and
            // must not take the place it just freed.
            let ended = pod.as_ref().is_some_and(|p| p.state.is_finished());
            let wants = s.metadata.deletion_timestamp.is_none()
                && !ended
                && !s.spec.suspend
                && !phase.is_some_and(|p| {
                    p.is_finished() || p == ccplant_api::AgentSessionPhase::Suspended
                });
            decide::queue::Peer {
                created: s
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map(crate::time::from_k8s),
                name: s.name_any(),
                wants,
                holds,
            }
        })
        .collect();
    Some(Queue {
        class: name,
        max,
        peers,
    })
}

impl Observed {
    /// The class lookup as [`decide::class::effective`] reads it.
    pub fn class_lookup(&self) -> decide::class::ClassLookup {
        match &self.class_refusal {
            Some(refusal) => Err(refusal.clone()),
            None => Ok(self.class.clone()),
        }
    }
}

/// The session's children, as their watches last saw them.
#[derive(Clone, Debug, Default)]
pub struct Children {
    pub pod: Option<PodSummary>,
    pub service: Option<ServiceSummary>,
    pub pvc: Option<Presence>,
    pub network_policy: Option<Presence>,
    /// The session's credentials Secret was read and is not controlled by the session (its
    /// content is ignored).
    pub foreign_secret: bool,
}

/// The session's credentials as far as they were read.
#[derive(Clone, Debug, Default)]
pub struct ObservedCredentials {
    /// Where they come from (the session's secretRef or a GitHubCredential); `None`: the
    /// session uses none (or the policy refuses it).
    pub source: Option<SecretLocation>,
    /// Why the GitHub access policy refuses the session its credentials.
    pub refusal: Option<Refusal>,
    /// What this process issued to the session.
    pub issued: Option<Issued>,
    /// The session's own Secret (outer `None`: not read; inner: absent).
    pub own: Option<Option<SessionSecret>>,
    /// The source Secret (`None`: not read; `Err`: why it is not there).
    pub source_secret: Option<Result<Arc<Secret>, String>>,
    /// Learned: minting a token failed.
    pub mint_failed: Option<MintFailure>,
}

/// Why no installation token could be minted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MintFailure {
    pub message: String,
    /// GitHub may answer differently later (5xx, a rate limit).
    pub retryable: bool,
}

/// The outcome of a step `decide` asked for first.
#[derive(Debug)]
pub enum Learned {
    /// The finalizer `ccplant.io/revoke-token` is on the session now.
    FinalizerAdded,
    /// A token was issued (stored, adopted or minted) and is remembered.
    Token(Issued),
    MintFailed(MintFailure),
    /// The agent worker stopped (because the conversation ended the session, with `end`); its
    /// last state.
    AgentStopped {
        last: Option<Snapshot>,
        end: Option<End>,
    },
    /// The apiserver refused a child.
    Refused(String),
    /// A child's name is taken by an object the session does not control; what it is.
    Conflict(String),
}

impl Observed {
    /// Takes a step's outcome into the snapshot.
    pub fn learn(&mut self, learned: Learned) {
        match learned {
            Learned::Token(issued) => {
                self.credentials.issued = Some(issued);
                self.credentials.mint_failed = None;
            }
            Learned::MintFailed(failure) => self.credentials.mint_failed = Some(failure),
            Learned::AgentStopped { last, end } => {
                self.worker = None;
                self.stopped = last;
                self.ended = end;
            }
            Learned::Refused(message) => self.refused = Some(message),
            Learned::Conflict(what) => self.conflict = Some(what),
            Learned::FinalizerAdded => self.finalizer_added = true,
        }
    }
}

/// The credentials the policy grants the session (pure over the caches): `None` when it uses
/// none — no repository, or no GitHub section and no default credential for the namespace (a
/// public clone). A credential that is named, or a default that does not allow the repository
/// or the permissions, is a refusal.
pub fn credential_grant(
    policy: &PolicyCaches,
    session: &AgentSession,
) -> Result<Option<Grant>, Refusal> {
    let ns = session.namespace().unwrap_or_default();
    let source = session.spec.github_source();
    let Some((owner, repo)) = session
        .spec
        .repository
        .as_ref()
        .and_then(|r| r.owner_and_name())
    else {
        return match source {
            GitHubSource::Credential(name) => Err(Refusal::NotAllowed(format!(
                "GitHubCredential {name} is used for spec.repository, which is not set"
            ))),
            GitHubSource::Secret(secret) => Ok(Some(Grant {
                secret: SecretLocation::new(&ns, &secret.name),
                credential: None,
            })),
            GitHubSource::Default => Ok(None),
        };
    };
    let permissions = session.spec.effective_permissions();
    match policy.resolve(source, &ns, (owner, repo), Purpose::Session(&permissions)) {
        Err(Refusal::NoCredential(_)) => Ok(None),
        other => other.map(Some),
    }
}

/// Reads what the reconcile of `session` needs.
pub async fn observe(
    session: &AgentSession,
    sctx: &SessionContext,
    now: DateTime<Utc>,
) -> Result<Observed, Error> {
    let ns = session.namespace().unwrap_or_default();
    let names = SessionNames::for_session(session);
    let uid = session.uid().unwrap_or_default();
    let index = &sctx.children;
    let children = Children {
        pod: index.pods.get(&ns, &names.pod),
        service: index.services.get(&ns, &names.service),
        pvc: index.pvcs.get(&ns, &names.workspace_pvc),
        network_policy: index.network_policies.get(&ns, &names.network_policy),
        foreign_secret: false,
    };
    let mut children = children;
    sctx.ctx.policy.ready().await;
    let (source, refusal) = match credential_grant(&sctx.ctx.policy, session) {
        Ok(grant) => (grant.map(|g| g.secret), None),
        Err(refusal) => (None, Some(refusal)),
    };
    let mut creds = ObservedCredentials {
        source,
        refusal,
        issued: sctx.ctx.session_tokens.get(&uid),
        ..Default::default()
    };
    let stored = session.status.clone().unwrap_or_default();
    let issued_per_status = decide::status::token_issued(&stored);
    let class = sctx
        .ctx
        .policy
        .resolve_class(session.spec.class_name.as_deref(), &ns);
    // The stage of the session as its class has it (a default image, a lifetime cap).
    let effective = decide::class::effective(session, &class).ok();
    let stage = decide::stage(effective.as_ref().unwrap_or(session), &sctx.config, now);
    let reads = |c: &ObservedCredentials| match &stage {
        Stage::Active => credentials::reads_to_issue(c, now),
        Stage::Invalid(_) => credentials::Reads::default(),
        Stage::Deleting => credentials::reads_to_revoke(c, true),
        _ => credentials::reads_to_revoke(c, issued_per_status),
    };
    if reads(&creds).own_secret {
        let own = super::credentials::read_session_secret(&sctx.ctx, session)
            .await
            .map_err(Error::Credentials)?;
        // A Secret of that name the session does not control is never read from.
        children.foreign_secret = own.as_ref().is_some_and(|s| !s.control.is_of(&uid));
        creds.own = Some(own.filter(|s| s.control.is_of(&uid)));
    }
    if reads(&creds).source_secret
        && let Some(source) = creds.source.clone()
    {
        creds.source_secret = Some(match read_secret(&sctx.ctx.client, &source).await {
            Ok(secret) => Ok(Arc::new(secret)),
            Err(e @ CredentialsError::Kube { .. }) => {
                return Err(Error::Credentials(e.into()));
            }
            Err(e) => Err(e.to_string()),
        });
    }
    Ok(Observed {
        children,
        credentials: creds,
        worker: sctx.conversations.observe(&uid),
        stopped: None,
        ended: None,
        refused: None,
        conflict: None,
        finalizer_added: false,
        queue: class
            .as_ref()
            .ok()
            .and_then(Option::as_ref)
            .and_then(|c| queue_of(session, c, sctx)),
        class_refusal: class.as_ref().err().cloned(),
        class: class.ok().flatten(),
    })
}
