//! The rules of a session's GitHub credentials (pure): which reads a reconcile needs, whether the
//! token in hand will do, and what to issue or revoke.
//!
//! - A token this process issued is used until its refresh time (installation tokens) or for
//!   good (a copied token).
//! - After a restart, the session's own Secret is adopted when it holds an installation token
//!   before its refresh time; else the source Secret is read and a token issued: a plain token
//!   from the session's own namespace is copied; a GitHub App mints an installation token
//!   restricted to the session's repository and permissions.
//! - A problem while the current token is still valid (more than 30 s left) keeps the session
//!   running (`TokenRefreshFailed`, retried within 30 s); otherwise the session is Pending.

use super::super::credentials::{
    Issued, MintRequest, RevokeRequest, SessionSecret, TokenKind, refresh_time,
};
use super::super::observe::ObservedCredentials;
use super::status::CredentialsShown;
use crate::credentials::{SecretLocation, credentials_from_secret};
use crate::policy::Refusal;
use ccplant_api::AgentSession;
use ccplant_api::conditions::{Progress, reasons};
use ccplant_github::{Credentials, ExposeSecret, SecretString};
use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use std::sync::Arc;
use std::time::Duration;

/// A token this close to expiry is not relied on while a refresh fails.
const STILL_VALID_MARGIN: chrono::Duration = chrono::Duration::seconds(30);
/// Retry of a failed refresh while the current token is still valid.
pub const REFRESH_RETRY: Duration = Duration::from_secs(30);

/// What a reconcile must read about credentials (beyond what this process remembers).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reads {
    /// The session's own Secret (nothing is remembered after a restart).
    pub own_secret: bool,
    /// The Secret the credentials come from (a token must be issued or revoked).
    pub source_secret: bool,
}

/// The reads an active session needs: the own Secret when nothing is remembered; the source
/// Secret when no token in hand will do.
pub fn reads_to_issue(c: &ObservedCredentials, now: DateTime<Utc>) -> Reads {
    if c.source.is_none() || remembered_token_will_do(c, now) {
        return Reads::default();
    }
    Reads {
        own_secret: c.issued.is_none(),
        source_secret: c.issued.is_some()
            || c.own
                .as_ref()
                .is_some_and(|own| adoptable(own.as_ref(), now).is_none()),
    }
}

/// The reads a session that stops needs to revoke its token: the own Secret when nothing is
/// remembered but the status says a token was issued (the App's Secret is read by the
/// revocation itself, once).
pub fn reads_to_revoke(c: &ObservedCredentials, issued_per_status: bool) -> Reads {
    Reads {
        own_secret: c.issued.is_none() && issued_per_status,
        source_secret: false,
    }
}

fn remembered_token_will_do(c: &ObservedCredentials, now: DateTime<Utc>) -> bool {
    c.issued
        .as_ref()
        .is_some_and(|i| i.refresh_at().is_none_or(|r| now < r))
}

/// An installation token in the session's own Secret that is good until its refresh time.
fn adoptable(
    own: Option<&SessionSecret>,
    now: DateTime<Utc>,
) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let own = own?;
    if own.kind != Some(TokenKind::Installation) || own.token.is_none() {
        return None;
    }
    let (issued_at, expires_at) = (own.issued_at?, own.expires_at?);
    (now < refresh_time(issued_at, expires_at)).then_some((issued_at, expires_at))
}

/// What to do about an active session's credentials.
#[derive(Clone, Debug)]
pub enum Decision {
    /// Use what is in hand; come back at `refresh_at`.
    Ready {
        shown: CredentialsShown,
        refresh_at: Option<DateTime<Utc>>,
    },
    /// Issue a token first (then decide again with it).
    Issue(Issue),
    /// The session waits (Pending) on this problem.
    Problem {
        reason: &'static str,
        message: String,
        progress: Progress,
    },
}

/// A token to issue.
#[derive(Clone, Debug)]
pub enum Issue {
    /// Remember a token that is already in place (adopted from the own Secret).
    Adopt(Issued),
    /// Write this token into the session's Secret (a copy of the user's token).
    Store(Issued),
    /// Mint an installation token, write it, remember it.
    Mint(MintRequest),
}

/// The credentials rules for an active session (see the module documentation).
pub fn decide(session: &AgentSession, c: &ObservedCredentials, now: DateTime<Utc>) -> Decision {
    // The policy first: a refused session reads no Secret and mints nothing.
    match &c.refusal {
        Some(Refusal::NotAllowed(message) | Refusal::NoCredential(message)) => {
            return problem(reasons::NOT_ALLOWED, message.clone(), Progress::Stalled);
        }
        Some(Refusal::NotFound(message)) => {
            return problem(
                reasons::CREDENTIAL_NOT_FOUND,
                message.clone(),
                Progress::InProgress,
            );
        }
        None => {}
    }
    let Some(source) = &c.source else {
        return Decision::Ready {
            shown: CredentialsShown::NotRequired,
            refresh_at: None,
        };
    };
    if let Some(issued) = &c.issued
        && remembered_token_will_do(c, now)
    {
        return Decision::Ready {
            shown: CredentialsShown::Available,
            refresh_at: issued.refresh_at(),
        };
    }
    let own = c.own.as_ref().and_then(Option::as_ref);
    if c.issued.is_none()
        && let Some((issued_at, expires_at)) = adoptable(own, now)
        && let Some(token) = own.and_then(|o| o.token.clone())
    {
        return Decision::Issue(Issue::Adopt(Issued {
            token,
            kind: TokenKind::Installation,
            issued_at: Some(issued_at),
            expires_at: Some(expires_at),
            source: source.clone(),
        }));
    }
    let problem = match issue(session, c, source) {
        Ok(issue) => return Decision::Issue(issue),
        Err(problem) => problem,
    };
    let still_valid = c
        .issued
        .as_ref()
        .and_then(|i| i.expires_at)
        .is_some_and(|exp| exp > now + STILL_VALID_MARGIN);
    match problem {
        Decision::Problem { message, .. } if still_valid => Decision::Ready {
            shown: CredentialsShown::RefreshFailed(message),
            refresh_at: Some(now + chrono::Duration::from_std(REFRESH_RETRY).unwrap_or_default()),
        },
        other => other,
    }
}

fn problem(reason: &'static str, message: String, progress: Progress) -> Decision {
    Decision::Problem {
        reason,
        message,
        progress,
    }
}

/// A new token from the source Secret, or why there is none.
fn issue(
    session: &AgentSession,
    c: &ObservedCredentials,
    source: &SecretLocation,
) -> Result<Issue, Decision> {
    if let Some(failure) = &c.mint_failed {
        let progress = if failure.retryable {
            Progress::InProgress
        } else {
            Progress::Stalled
        };
        return Err(problem(
            reasons::TOKEN_UNAVAILABLE,
            failure.message.clone(),
            progress,
        ));
    }
    let secret = match &c.source_secret {
        Some(Ok(secret)) => secret,
        Some(Err(missing)) => {
            return Err(problem(
                reasons::SECRET_NOT_FOUND,
                missing.clone(),
                Progress::InProgress,
            ));
        }
        None => {
            // observe reads it whenever this rule runs; a missing read waits for the next try.
            return Err(problem(
                reasons::SECRET_NOT_FOUND,
                format!("Secret {source} was not read"),
                Progress::InProgress,
            ));
        }
    };
    let creds = credentials_from_secret(secret).map_err(|p| {
        problem(
            reasons::INVALID_SECRET,
            format!("Secret {source} {p}"),
            Progress::Stalled,
        )
    })?;
    match creds {
        Credentials::Token(token) => copy(session, c, source, token),
        Credentials::App { .. } => mint(session, c, source, secret),
    }
}

/// A plain token: copied into the session's Secret, from the session's own namespace only.
fn copy(
    session: &AgentSession,
    c: &ObservedCredentials,
    source: &SecretLocation,
    token: SecretString,
) -> Result<Issue, Decision> {
    if source.namespace != session.namespace().unwrap_or_default() {
        // A long-lived token from the operator's namespace would become readable to anyone
        // who can read Secrets or exec into pods in the session's namespace.
        return Err(problem(
            reasons::TOKEN_NOT_SHAREABLE,
            format!(
                "Secret {source} holds a plain token, which is never copied into another namespace: set spec.github.secretRef to a Secret in this namespace, or use a GitHubCredential that holds a GitHub App"
            ),
            Progress::Stalled,
        ));
    }
    let unchanged = c
        .own
        .as_ref()
        .and_then(Option::as_ref)
        .and_then(|o| o.token.as_ref())
        .is_some_and(|t| t.expose_secret() == token.expose_secret());
    let issued = Issued {
        token,
        kind: TokenKind::Copy,
        issued_at: None,
        expires_at: None,
        source: source.clone(),
    };
    Ok(if unchanged {
        Issue::Adopt(issued)
    } else {
        Issue::Store(issued)
    })
}

/// A GitHub App: an installation token restricted to the session's repository and permissions.
fn mint(
    session: &AgentSession,
    c: &ObservedCredentials,
    source: &SecretLocation,
    secret: &Arc<Secret>,
) -> Result<Issue, Decision> {
    let Some(repository) = session
        .spec
        .repository
        .as_ref()
        .and_then(|r| r.owner_and_name())
        .map(|(_, repo)| repo.to_string())
    else {
        return Err(problem(
            reasons::TOKEN_UNAVAILABLE,
            "a GitHub App installation token needs spec.repository".into(),
            Progress::Stalled,
        ));
    };
    Ok(Issue::Mint(MintRequest {
        source: source.clone(),
        secret: secret.clone(),
        repository,
        permissions: session
            .spec
            .effective_permissions()
            .into_iter()
            .map(|(k, v)| (k, v.as_str().to_string()))
            .collect(),
        replaces: replaced_token(c),
    }))
}

/// The installation token a new one replaces: the one in hand, else the one in the session's
/// Secret.
fn replaced_token(c: &ObservedCredentials) -> Option<SecretString> {
    match &c.issued {
        Some(i) => (i.kind == TokenKind::Installation).then(|| i.token.clone()),
        None => c
            .own
            .as_ref()
            .and_then(Option::as_ref)
            .filter(|o| o.kind == Some(TokenKind::Installation))
            .and_then(|o| o.token.clone()),
    }
}

/// What revoking the session's token needs, when it has (or may have) one: the token, its kind
/// and the Secret of the App that minted it.
pub fn revocation(c: &ObservedCredentials, issued_per_status: bool) -> Option<RevokeRequest> {
    if c.issued.is_none() && !issued_per_status {
        return None;
    }
    let own = c.own.as_ref().and_then(Option::as_ref);
    Some(match &c.issued {
        Some(i) => RevokeRequest {
            token: Some(i.token.clone()),
            kind: Some(i.kind),
            app: Some(i.source.clone()),
        },
        None => RevokeRequest {
            token: own.and_then(|o| o.token.clone()),
            kind: own.and_then(|o| o.kind),
            app: c.source.clone(),
        },
    })
}
