//! A session's GitHub credentials: a session-owned Secret `<name>-github` holding either a copy
//! of the user's token or a GitHub App installation token restricted to the session's repository
//! and permissions, refreshed before it expires and revoked when the session stops.
//!
//! The operator never lists or watches Secrets: what it wrote is remembered in memory
//! ([`SessionTokens`]); after a restart the session's own Secret is read once
//! ([`read_session_secret`]) and a token still good is adopted. What to do is decided by
//! `decide::credentials` (pure); this module does the reads and writes it asks for.

use super::names::SessionNames;
use crate::context::Context;
use crate::credentials::{CredentialsError, SecretLocation};
use ccplant_api::AgentSession;
use ccplant_github::{ExposeSecret, SecretString};
use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Annotation on the session Secret: "token" (a copy) or "installation" (minted, revocable).
pub const TOKEN_KIND_ANNOTATION: &str = "ccplant.io/token-kind";
/// Annotation on the session Secret: when its installation token was minted (RFC 3339).
pub const TOKEN_ISSUED_ANNOTATION: &str = "ccplant.io/token-issued-at";
/// Annotation on the session Secret: when its installation token expires (RFC 3339).
pub const TOKEN_EXPIRES_ANNOTATION: &str = "ccplant.io/token-expires-at";

/// What kind of token the session Secret holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    /// A copy of the plain token in the session's own Secret.
    Copy,
    /// A GitHub App installation token the operator minted (revocable, expires).
    Installation,
}

impl TokenKind {
    /// The value of [`TOKEN_KIND_ANNOTATION`].
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Copy => "token",
            TokenKind::Installation => "installation",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "token" => Some(TokenKind::Copy),
            "installation" => Some(TokenKind::Installation),
            _ => None,
        }
    }
}

/// The one refresh rule: an installation token is replaced after three quarters of its
/// lifetime (a 1 h GitHub token after 45 min).
pub fn refresh_time(issued_at: DateTime<Utc>, expires_at: DateTime<Utc>) -> DateTime<Utc> {
    issued_at + (expires_at - issued_at) * 3 / 4
}

/// What the operator issued to a session (by uid). Debug shows no token (SecretString).
#[derive(Clone, Debug)]
pub struct Issued {
    pub token: SecretString,
    pub kind: TokenKind,
    /// Installation tokens only: when it was minted and when it expires.
    pub issued_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    /// The Secret it came from (and, for an installation token, the App to revoke it with).
    pub source: SecretLocation,
}

impl Issued {
    /// When to issue the next one (installation tokens only).
    pub fn refresh_at(&self) -> Option<DateTime<Utc>> {
        Some(refresh_time(self.issued_at?, self.expires_at?))
    }

    /// The Secret's annotations that let a restarted operator adopt this token.
    pub fn annotations(&self) -> BTreeMap<String, String> {
        let mut a = BTreeMap::from([(
            TOKEN_KIND_ANNOTATION.to_owned(),
            self.kind.as_str().to_owned(),
        )]);
        if let Some(t) = self.issued_at {
            a.insert(TOKEN_ISSUED_ANNOTATION.to_owned(), t.to_rfc3339());
        }
        if let Some(t) = self.expires_at {
            a.insert(TOKEN_EXPIRES_ANNOTATION.to_owned(), t.to_rfc3339());
        }
        a
    }
}

/// Tokens issued by this process, by session uid.
#[derive(Default)]
pub struct SessionTokens {
    issued: Mutex<BTreeMap<String, Issued>>,
}

impl std::fmt::Debug for SessionTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionTokens").finish_non_exhaustive()
    }
}

impl SessionTokens {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Issued>> {
        self.issued
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn get(&self, uid: &str) -> Option<Issued> {
        self.lock().get(uid).cloned()
    }

    pub fn set(&self, uid: &str, issued: Issued) {
        self.lock().insert(uid.to_string(), issued);
    }

    pub fn forget(&self, uid: &str) -> Option<Issued> {
        self.lock().remove(uid)
    }
}

/// The session's own credentials Secret, as read after a restart.
#[derive(Clone, Debug, Default)]
pub struct SessionSecret {
    /// Who controls the Secret: a Secret of that name the session does not control is
    /// someone else's.
    pub control: super::children::Control,
    pub token: Option<SecretString>,
    pub kind: Option<TokenKind>,
    pub issued_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// What a session Secret says (pure).
pub fn session_secret(secret: &Secret) -> SessionSecret {
    let time = |key: &str| {
        secret
            .annotations()
            .get(key)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
    };
    SessionSecret {
        control: super::children::Control::of(&secret.metadata),
        token: secret
            .data
            .as_ref()
            .and_then(|d| d.get(ccplant_api::secret_keys::TOKEN))
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
            .map(SecretString::from),
        kind: secret
            .annotations()
            .get(TOKEN_KIND_ANNOTATION)
            .and_then(|k| TokenKind::parse(k)),
        issued_at: time(TOKEN_ISSUED_ANNOTATION),
        expires_at: time(TOKEN_EXPIRES_ANNOTATION),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SessionCredentialsError {
    #[error(transparent)]
    Source(#[from] CredentialsError),
    #[error("minting an installation token for {repository}: {source}")]
    Mint {
        repository: String,
        #[source]
        source: ccplant_github::Error,
    },
    #[error("reading Secret {0}: {1}")]
    Read(String, #[source] kube::Error),
    #[error("writing Secret {0}: {1}")]
    Write(String, #[source] kube::Error),
    #[error("deleting Secret {0}: {1}")]
    Delete(String, #[source] kube::Error),
    #[error(transparent)]
    Build(#[from] super::build::BuildError),
    #[error("{0}")]
    NameConflict(String),
    #[error("revoking the session's installation token: {0}")]
    Revoke(String),
    #[error("updating the finalizer {finalizer}: {source}")]
    Finalizer {
        finalizer: &'static str,
        #[source]
        source: kube::Error,
    },
}

/// Reads the session's own credentials Secret (`None` when absent).
pub async fn read_session_secret(
    ctx: &Context,
    session: &AgentSession,
) -> Result<Option<SessionSecret>, SessionCredentialsError> {
    let ns = session.namespace().unwrap_or_default();
    let name = SessionNames::for_session(session).credentials_secret;
    Api::<Secret>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&name)
        .await
        .map(|s| s.as_ref().map(session_secret))
        .map_err(|e| SessionCredentialsError::Read(format!("{ns}/{name}"), e))
}

/// Writes `issued` into the session's Secret and remembers it: created when absent; applied
/// over the session's own Secret (its uid a precondition); a Secret of that name the session
/// does not control is left alone ([`SessionCredentialsError::NameConflict`]).
pub async fn store(
    ctx: &Context,
    session: &AgentSession,
    issued: Issued,
) -> Result<(), SessionCredentialsError> {
    let ns = session.namespace().unwrap_or_default();
    let name = SessionNames::for_session(session).credentials_secret;
    let what = format!("{ns}/{name}");
    let secret = super::build::desired_credentials_secret(
        session,
        issued.token.expose_secret(),
        issued.annotations(),
    )?;
    let write = |e| SessionCredentialsError::Write(what.clone(), e);
    if crate::apply::create_object(ctx, &secret)
        .await
        .map_err(write)?
        == crate::apply::Created::AlreadyExists
    {
        // A refresh (or a store after a restart): only over the session's own Secret.
        let existing = Api::<Secret>::namespaced(ctx.client.clone(), &ns)
            .get_metadata_opt(&name)
            .await
            .map_err(|e| SessionCredentialsError::Read(what.clone(), e))?;
        let uid = session.uid().unwrap_or_default();
        match existing {
            Some(m) if super::children::Control::of(&m.metadata).is_of(&uid) => {
                crate::apply::apply_object(ctx, &secret, m.metadata.uid.as_deref())
                    .await
                    .map_err(write)?;
            }
            // Gone in between: created on the next reconcile.
            None => {
                return Err(write(kube::Error::Api(
                    kube::core::Status::failure("deleted while being written", "NotFound").boxed(),
                )));
            }
            Some(_) => {
                return Err(SessionCredentialsError::NameConflict(
                    super::decide::conflict_message("Secret", &ns, &name),
                ));
            }
        }
    }
    ctx.session_tokens
        .set(&session.uid().unwrap_or_default(), issued);
    Ok(())
}

/// What [`mint`] needs: the App's Secret (already read) and the token's restriction.
#[derive(Clone, Debug)]
pub struct MintRequest {
    pub source: SecretLocation,
    /// The App Secret as observed (the client is built from it without reading it again).
    pub secret: std::sync::Arc<Secret>,
    pub repository: String,
    pub permissions: BTreeMap<String, String>,
    /// The installation token this one replaces (a refresh): revoked once the new one is in
    /// the session's Secret.
    pub replaces: Option<SecretString>,
}

/// Mints an installation token restricted to the request's repository and permissions.
pub async fn mint(
    ctx: &Context,
    request: &MintRequest,
    now: DateTime<Utc>,
) -> Result<Issued, SessionCredentialsError> {
    let client = ctx.github.client_for(&request.source, &request.secret)?;
    let minted = client
        .mint_installation_token(
            std::slice::from_ref(&request.repository),
            &request.permissions,
        )
        .await
        .map_err(|source| SessionCredentialsError::Mint {
            repository: request.repository.clone(),
            source,
        })?;
    Ok(Issued {
        token: minted.token,
        kind: TokenKind::Installation,
        issued_at: Some(now),
        expires_at: Some(minted.expires_at),
        source: request.source.clone(),
    })
}

/// What [`revoke`] needs: the token (when known), its kind, and where the Secret of the App
/// that minted it is.
#[derive(Clone, Debug)]
pub struct RevokeRequest {
    pub token: Option<SecretString>,
    pub kind: Option<TokenKind>,
    pub app: Option<SecretLocation>,
}

/// Revokes the session's installation token (if it has one) and deletes the session Secret.
/// Idempotent. The App's client comes from its Secret, read here when no client is cached: the
/// one read outside `observe`, made once when a session stops rather than on every reconcile.
/// Returns whether the token is gone for sure (revoked, already invalid, or none); a failure
/// (GitHub unreachable) is logged: the caller decides whether to retry (a deletion does, held by
/// the finalizer; a stop does not, the token expiring within the hour).
pub async fn revoke(
    ctx: &Context,
    session: &AgentSession,
    request: &RevokeRequest,
) -> Result<bool, SessionCredentialsError> {
    let ns = session.namespace().unwrap_or_default();
    let name = SessionNames::for_session(session).credentials_secret;
    ctx.session_tokens
        .forget(&session.uid().unwrap_or_default());
    let mut gone = true;
    if request.kind == Some(TokenKind::Installation)
        && let (Some(token), Some(app)) = (&request.token, &request.app)
        && let Err(error) = revoke_token(ctx, app, token).await
    {
        tracing::warn!(%error, "revoking the installation token failed");
        gone = false;
    }
    // Only the session's own Secret goes, and only that very object (uid precondition).
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let what = || format!("{ns}/{name}");
    let existing = api
        .get_metadata_opt(&name)
        .await
        .map_err(|e| SessionCredentialsError::Read(what(), e))?;
    let uid = session.uid().unwrap_or_default();
    if let Some(m) = existing.filter(|m| super::children::Control::of(&m.metadata).is_of(&uid)) {
        crate::apply::delete::<Secret>(ctx, &ns, &name, m.metadata.uid.as_deref())
            .await
            .map_err(|e| SessionCredentialsError::Delete(what(), e))?;
    }
    Ok(gone)
}

/// Revokes one installation token with the App whose Secret is at `app`; a token GitHub no
/// longer accepts (401) counts as revoked.
pub async fn revoke_token(
    ctx: &Context,
    app: &SecretLocation,
    token: &SecretString,
) -> Result<(), String> {
    let client = ctx
        .github
        .client(&ctx.client, app)
        .await
        .map_err(|e| e.to_string())?;
    match client.revoke_installation_token(token).await {
        Ok(()) => Ok(()),
        Err(e) if e.status() == Some(401) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

/// Adds (`add`) or removes the finalizer `ccplant.io/revoke-token`: a merge patch fenced on
/// the session's resourceVersion, so a concurrent change of the finalizers is never overwritten
/// (409: retried on the next reconcile).
pub async fn set_finalizer(
    ctx: &Context,
    session: &AgentSession,
    add: bool,
) -> Result<(), SessionCredentialsError> {
    use super::decide::REVOKE_FINALIZER;
    let ns = session.namespace().unwrap_or_default();
    let api: Api<AgentSession> = Api::namespaced(ctx.client.clone(), &ns);
    let current = session.finalizers().to_vec();
    let mut next: Vec<String> = current
        .iter()
        .filter(|f| *f != REVOKE_FINALIZER)
        .cloned()
        .collect();
    if add {
        next.push(REVOKE_FINALIZER.to_string());
    }
    if next == current {
        return Ok(());
    }
    let patch = serde_json::json!({
        "metadata": {"finalizers": next, "resourceVersion": session.resource_version()},
    });
    match api
        .patch(
            &session.name_any(),
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
    {
        Ok(updated) => {
            ctx.record_write(session, &updated);
            Ok(())
        }
        // Gone already: nothing holds it.
        Err(kube::Error::Api(e)) if e.code == 404 && !add => Ok(()),
        Err(source) => Err(SessionCredentialsError::Finalizer {
            finalizer: REVOKE_FINALIZER,
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    #[test]
    fn installation_tokens_are_refreshed_after_three_quarters_of_their_life() {
        let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        assert_eq!(
            refresh_time(t0, t0 + chrono::Duration::hours(1)),
            t0 + chrono::Duration::minutes(45)
        );
        assert_eq!(
            refresh_time(t0, t0 + chrono::Duration::seconds(20)),
            t0 + chrono::Duration::seconds(15)
        );
    }

    #[test]
    fn a_written_secret_reads_back_as_what_was_issued() {
        let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let issued = Issued {
            token: SecretString::from("ghs_x"),
            kind: TokenKind::Installation,
            issued_at: Some(t0),
            expires_at: Some(t0 + chrono::Duration::hours(1)),
            source: SecretLocation::new("ops", "app"),
        };
        let secret = Secret {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                annotations: Some(issued.annotations()),
                ..Default::default()
            },
            data: Some(BTreeMap::from([(
                "token".to_owned(),
                ByteString(b"ghs_x".to_vec()),
            )])),
            ..Default::default()
        };
        let read = session_secret(&secret);
        assert_eq!(read.kind, Some(TokenKind::Installation));
        assert_eq!(read.issued_at, issued.issued_at);
        assert_eq!(read.expires_at, issued.expires_at);
        assert_eq!(
            read.token.map(|t| t.expose_secret().to_owned()),
            Some("ghs_x".into())
        );
        assert_eq!(
            issued.refresh_at(),
            Some(t0 + chrono::Duration::minutes(45))
        );
    }
}
