//! A session's GitHub credentials: a session-owned Secret `<name>-github` holding either a copy
//! of the user's token or a GitHub App installation token restricted to the session's repository
//! and permissions, refreshed before it expires and revoked when the session stops.
//!
//! The operator never lists or watches Secrets: what it wrote is remembered in memory; after a
//! restart the first reconcile reads the session's own Secret once.

use crate::context::Context;
use crate::credentials::{CredentialsError, credentials_from_secret, secret_location};
use crate::github_task::FIELD_MANAGER;
use ccplant_api::AgentSession;
use ccplant_github::{Credentials, ExposeSecret, SecretString};
use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// Annotation on the session Secret: when its installation token expires (RFC 3339).
pub const TOKEN_EXPIRES_ANNOTATION: &str = "ccplant.io/token-expires-at";
/// Annotation on the session Secret: "token" (a copy) or "installation" (minted, revocable).
pub const TOKEN_KIND_ANNOTATION: &str = "ccplant.io/token-kind";

/// What the operator last wrote for a session (by uid). Debug shows no token (SecretString).
#[derive(Clone, Debug)]
pub struct Issued {
    pub token: SecretString,
    /// Installation tokens only: when to mint the next one, and the source Secret to revoke with.
    pub refresh_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub source: (String, String),
}

#[derive(Default)]
pub struct SessionTokens {
    issued: Mutex<BTreeMap<String, Issued>>,
}

impl std::fmt::Debug for SessionTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionTokens").finish_non_exhaustive()
    }
}

/// Outcome of ensuring credentials.
#[derive(Debug)]
pub enum Ensured {
    /// The session uses no GitHub credentials.
    None,
    /// The session Secret holds a valid token; reconcile again at `refresh_at` if set.
    Ready { refresh_at: Option<DateTime<Utc>> },
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
    #[error("a GitHub App installation token needs spec.repository")]
    AppWithoutRepository,
    #[error(
        "Secret {0} holds a plain token, which is never copied into another namespace: set spec.github.secretRef to a Secret in this namespace, or make the operator's default credential a GitHub App"
    )]
    TokenNotShareable(String),
    #[error("writing Secret {0}: {1}")]
    Write(String, #[source] kube::Error),
}

/// The Secret the session's credentials come from: its secretRef, else the operator's default.
pub fn source_location(ctx: &Context, session: &AgentSession) -> Option<(String, String)> {
    secret_location(
        session
            .spec
            .github
            .as_ref()
            .and_then(|g| g.secret_ref.as_ref()),
        &session.namespace().unwrap_or_default(),
        ctx.default_github_secret.as_deref(),
        &ctx.operator_namespace,
    )
}

/// Refresh an installation token after three quarters of its lifetime.
pub fn refresh_time(issued_at: DateTime<Utc>, expires_at: DateTime<Utc>) -> DateTime<Utc> {
    issued_at + (expires_at - issued_at) * 3 / 4
}

impl SessionTokens {
    pub fn get(&self, uid: &str) -> Option<Issued> {
        self.issued.lock().ok()?.get(uid).cloned()
    }

    fn set(&self, uid: &str, issued: Issued) {
        if let Ok(mut m) = self.issued.lock() {
            m.insert(uid.to_string(), issued);
        }
    }

    fn forget(&self, uid: &str) -> Option<Issued> {
        self.issued.lock().ok()?.remove(uid)
    }
}

fn owner_reference(session: &AgentSession) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": AgentSession::api_version(&()),
        "kind": AgentSession::kind(&()),
        "name": session.name_any(),
        "uid": session.uid().unwrap_or_default(),
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

async fn write_secret(
    ctx: &Context,
    session: &AgentSession,
    name: &str,
    token: &SecretString,
    kind: &str,
    expires_at: Option<DateTime<Utc>>,
) -> Result<(), SessionCredentialsError> {
    let ns = session.namespace().unwrap_or_default();
    let mut annotations = serde_json::Map::new();
    annotations.insert(TOKEN_KIND_ANNOTATION.into(), kind.into());
    if let Some(exp) = expires_at {
        annotations.insert(TOKEN_EXPIRES_ANNOTATION.into(), exp.to_rfc3339().into());
    }
    let body = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": super::build::child_labels(&session.name_any()),
            "annotations": annotations,
            "ownerReferences": [owner_reference(session)],
        },
        "type": "Opaque",
        "stringData": { ccplant_api::secret_keys::TOKEN: token.expose_secret() },
    });
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(|e| SessionCredentialsError::Write(format!("{ns}/{name}"), e))?;
    Ok(())
}

/// Makes sure the session Secret `secret_name` holds a usable token.
pub async fn ensure(
    ctx: &Context,
    session: &AgentSession,
    secret_name: &str,
    now: DateTime<Utc>,
) -> Result<Ensured, SessionCredentialsError> {
    let uid = session.uid().unwrap_or_default();
    let Some((src_ns, src_name)) = source_location(ctx, session) else {
        return Ok(Ensured::None);
    };
    if let Some(issued) = ctx.session_tokens.get(&uid)
        && issued.refresh_at.is_none_or(|r| now < r)
    {
        return Ok(Ensured::Ready {
            refresh_at: issued.refresh_at,
        });
    }
    // Nothing in memory (first reconcile, or after a restart): read the session's own Secret
    // once and adopt a token that is still good instead of minting or writing again.
    let own: Api<Secret> =
        Api::namespaced(ctx.client.clone(), &session.namespace().unwrap_or_default());
    let existing = if ctx.session_tokens.get(&uid).is_none() {
        own.get_opt(secret_name)
            .await
            .map_err(|e| SessionCredentialsError::Write(secret_name.to_string(), e))?
    } else {
        None
    };
    let existing_token = existing.as_ref().and_then(|s| {
        let data = s.data.as_ref()?.get(ccplant_api::secret_keys::TOKEN)?;
        String::from_utf8(data.0.clone()).ok()
    });
    if let (Some(secret), Some(token)) = (existing.as_ref(), existing_token.as_ref())
        && secret
            .annotations()
            .get(TOKEN_KIND_ANNOTATION)
            .map(String::as_str)
            == Some("installation")
        && let Some(expires_at) = secret
            .annotations()
            .get(TOKEN_EXPIRES_ANNOTATION)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
    {
        let refresh_at = expires_at - chrono::Duration::minutes(10);
        if now < refresh_at {
            ctx.session_tokens.set(
                &uid,
                Issued {
                    token: SecretString::from(token.clone()),
                    refresh_at: Some(refresh_at),
                    expires_at: Some(expires_at),
                    source: (src_ns, src_name),
                },
            );
            return Ok(Ensured::Ready {
                refresh_at: Some(refresh_at),
            });
        }
    }
    let source_secret: Api<Secret> = Api::namespaced(ctx.client.clone(), &src_ns);
    let source = match source_secret.get_opt(&src_name).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            return Err(CredentialsError::SecretNotFound {
                namespace: src_ns,
                name: src_name,
            }
            .into());
        }
        Err(source) => {
            return Err(CredentialsError::Kube {
                namespace: src_ns,
                name: src_name,
                source,
            }
            .into());
        }
    };
    let creds =
        credentials_from_secret(&source).map_err(|problem| CredentialsError::InvalidSecret {
            namespace: src_ns.clone(),
            name: src_name.clone(),
            problem,
        })?;
    match creds {
        Credentials::Token(_) if src_ns != session.namespace().unwrap_or_default() => {
            // A long-lived token from the operator's namespace would become readable to anyone
            // who can read Secrets or exec into pods in the session's namespace.
            Err(SessionCredentialsError::TokenNotShareable(format!(
                "{src_ns}/{src_name}"
            )))
        }
        Credentials::Token(token) => {
            if existing_token.as_deref() != Some(token.expose_secret()) {
                write_secret(ctx, session, secret_name, &token, "token", None).await?;
            }
            ctx.session_tokens.set(
                &uid,
                Issued {
                    token,
                    refresh_at: None,
                    expires_at: None,
                    source: (src_ns, src_name),
                },
            );
            Ok(Ensured::Ready { refresh_at: None })
        }
        Credentials::App { .. } => {
            let Some((_, repo)) = session
                .spec
                .repository
                .as_ref()
                .and_then(|r| r.owner_and_name())
            else {
                return Err(SessionCredentialsError::AppWithoutRepository);
            };
            let client = ctx.github.client(&ctx.client, &src_ns, &src_name).await?;
            let permissions: BTreeMap<String, String> = session
                .spec
                .effective_permissions()
                .into_iter()
                .map(|(k, v)| (k, v.as_str().to_string()))
                .collect();
            let minted = client
                .mint_installation_token(&[repo.to_string()], &permissions)
                .await
                .map_err(|source| SessionCredentialsError::Mint {
                    repository: repo.to_string(),
                    source,
                })?;
            write_secret(
                ctx,
                session,
                secret_name,
                &minted.token,
                "installation",
                Some(minted.expires_at),
            )
            .await?;
            let refresh_at = refresh_time(now, minted.expires_at);
            ctx.session_tokens.set(
                &uid,
                Issued {
                    token: minted.token,
                    refresh_at: Some(refresh_at),
                    expires_at: Some(minted.expires_at),
                    source: (src_ns, src_name),
                },
            );
            Ok(Ensured::Ready {
                refresh_at: Some(refresh_at),
            })
        }
    }
}

/// Revokes the session's installation token (if it has one) and deletes the session Secret.
/// Idempotent; after an operator restart it reads the session Secret once to find the token.
pub async fn revoke(
    ctx: &Context,
    session: &AgentSession,
    secret_name: &str,
) -> Result<bool, SessionCredentialsError> {
    let ns = session.namespace().unwrap_or_default();
    let uid = session.uid().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let issued = ctx.session_tokens.forget(&uid);
    let (token, source, kind) = match issued {
        Some(i) => {
            let kind = if i.expires_at.is_some() {
                "installation"
            } else {
                "token"
            };
            (Some(i.token), Some(i.source), kind.to_string())
        }
        None => {
            let Some(secret) = api
                .get_opt(secret_name)
                .await
                .map_err(|e| SessionCredentialsError::Write(format!("{ns}/{secret_name}"), e))?
            else {
                return Ok(false);
            };
            let kind = secret
                .annotations()
                .get(TOKEN_KIND_ANNOTATION)
                .cloned()
                .unwrap_or_default();
            let token = secret
                .data
                .as_ref()
                .and_then(|d| d.get(ccplant_api::secret_keys::TOKEN))
                .and_then(|b| String::from_utf8(b.0.clone()).ok())
                .map(SecretString::from);
            let source = source_location(ctx, session);
            (token, source, kind)
        }
    };
    if kind == "installation"
        && let (Some(token), Some((src_ns, src_name))) = (token, source)
        && let Ok(client) = ctx.github.client(&ctx.client, &src_ns, &src_name).await
        && let Err(e) = client.revoke_installation_token(&token).await
    {
        // The token expires within the hour anyway; the Secret is deleted regardless.
        tracing::warn!(error = %e, "revoking the installation token failed");
    }
    match api.delete(secret_name, &DeleteParams::background()).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
        Err(e) => Err(SessionCredentialsError::Write(
            format!("{ns}/{secret_name}"),
            e,
        )),
    }
}

/// How long until `t`, zero if past.
pub fn until(t: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    (t - now).to_std().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
