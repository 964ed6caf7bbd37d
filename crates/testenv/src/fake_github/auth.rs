//! Authentication: personal access tokens, GitHub App JWTs (RS256, verified against the App's
//! public key) and installation tokens (`ghs_…`, expiring, optionally restricted to repositories).

use super::payloads::{self, Reply};
use super::rate_limit::{ANONYMOUS_LIMIT, RateStatus};
use super::state::World;
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;
use serde_json::Value;

/// GitHub refuses App JWTs that expire more than 10 minutes after they were issued.
const MAX_JWT_LIFETIME_SECS: i64 = 600;
/// Clock drift tolerated on `iat` (GitHub's docs suggest back-dating `iat` by 60 s).
const CLOCK_DRIFT_SECS: i64 = 60;

/// An installation access token minted by the fake (what `FakeGitHub::installation_tokens`
/// returns; tests may inspect the token itself, the fake never logs or records it elsewhere).
#[derive(Debug, Clone, PartialEq)]
pub struct InstallationTokenRecord {
    pub token: String,
    pub installation_id: u64,
    /// Repository names the token is restricted to; `None` means every repository of the
    /// installation's account.
    pub repositories: Option<Vec<String>>,
    /// The permissions as requested (or the installation's defaults when none were requested).
    pub permissions: Value,
    pub expires_at: DateTime<Utc>,
    pub revoked: bool,
}

/// Who a request is made by.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Principal {
    Anonymous,
    /// A personal access token's user.
    User {
        login: String,
    },
    /// A GitHub App authenticated with its JWT (only good for `/app/…` endpoints).
    App {
        app_id: u64,
    },
    /// An installation access token.
    Installation {
        token: String,
        app_id: u64,
        installation_id: u64,
        account: String,
        repositories: Option<Vec<String>>,
        bot_login: String,
    },
}

impl Principal {
    /// The login content created by this principal is attributed to.
    pub(crate) fn login(&self) -> Option<&str> {
        match self {
            Principal::User { login } => Some(login),
            Principal::Installation { bot_login, .. } => Some(bot_login),
            Principal::Anonymous | Principal::App { .. } => None,
        }
    }

    /// The rate-limit bucket: per user, per installation, per app, or shared anonymous.
    pub(crate) fn rate_bucket(&self) -> String {
        match self {
            Principal::Anonymous => "anonymous".to_string(),
            Principal::User { login } => format!("user:{}", login.to_lowercase()),
            Principal::App { app_id } => format!("app:{app_id}"),
            Principal::Installation {
                installation_id, ..
            } => format!("installation:{installation_id}"),
        }
    }

    pub(crate) fn rate_limit(&self, authenticated_limit: u32) -> u32 {
        match self {
            Principal::Anonymous => ANONYMOUS_LIMIT,
            _ => authenticated_limit,
        }
    }

    /// The message of GitHub's primary rate-limit 403 for this principal.
    pub(crate) fn rate_limit_message(&self, world: &World) -> String {
        match self {
            Principal::Anonymous => "API rate limit exceeded for 127.0.0.1. (But here's the good news: Authenticated requests get a higher rate limit. Check out the documentation for more details.)".to_string(),
            Principal::User { login } => {
                format!("API rate limit exceeded for user ID {}.", world.account(login).id)
            }
            Principal::App { app_id } => format!("API rate limit exceeded for app ID {app_id}."),
            Principal::Installation {
                installation_id, ..
            } => format!("API rate limit exceeded for installation ID {installation_id}."),
        }
    }

    /// Whether the principal may see the repository; GitHub answers 404 when not.
    pub(crate) fn can_access_repo(&self, owner: &str, name: &str) -> bool {
        match self {
            // Every repository of the fake is private.
            Principal::Anonymous | Principal::App { .. } => false,
            Principal::User { .. } => true,
            Principal::Installation {
                account,
                repositories,
                ..
            } => {
                account.eq_ignore_ascii_case(owner)
                    && repositories
                        .as_ref()
                        .is_none_or(|names| names.iter().any(|n| n.eq_ignore_ascii_case(name)))
            }
        }
    }
}

/// The credential's kind for the request log, never the credential itself: `token` (a personal
/// access token), `installation-token` (`ghs_…`), `bearer-jwt` (an App JWT), `malformed`.
pub(crate) fn credential_kind(authorization: Option<&str>) -> Option<String> {
    let header = authorization?;
    let kind = match split_authorization(header) {
        None => "malformed",
        Some((_, secret)) if secret.starts_with("ghs_") => "installation-token",
        Some((_, secret)) if looks_like_jwt(secret) => "bearer-jwt",
        Some(_) => "token",
    };
    Some(kind.to_string())
}

/// `token X` or `Bearer X` (scheme case-insensitive) → (scheme, X).
fn split_authorization(header: &str) -> Option<(&str, &str)> {
    let (scheme, secret) = header.trim().split_once(' ')?;
    let secret = secret.trim();
    let accepted = scheme.eq_ignore_ascii_case("token") || scheme.eq_ignore_ascii_case("bearer");
    (accepted && !secret.is_empty()).then_some((scheme, secret))
}

fn looks_like_jwt(secret: &str) -> bool {
    secret.starts_with("eyJ") && secret.matches('.').count() == 2
}

/// Identifies the caller. A present but unknown, expired or revoked credential is 401 "Bad
/// credentials" (an invalid JWT gets GitHub's JWT messages), wherever it is used.
pub(crate) fn authenticate(
    world: &World,
    authorization: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Principal, Reply> {
    let Some(header) = authorization else {
        return Ok(Principal::Anonymous);
    };
    let Some((_, secret)) = split_authorization(header) else {
        return Err(payloads::bad_credentials());
    };
    if let Some(login) = world.pats.get(secret) {
        return Ok(Principal::User {
            login: login.clone(),
        });
    }
    if secret.starts_with("ghs_") {
        return installation_principal(world, secret, now);
    }
    if looks_like_jwt(secret) {
        return verify_app_jwt(world, secret, now).map(|app_id| Principal::App { app_id });
    }
    Err(payloads::bad_credentials())
}

fn installation_principal(
    world: &World,
    token: &str,
    now: DateTime<Utc>,
) -> Result<Principal, Reply> {
    let record = world
        .installation_tokens
        .iter()
        .find(|t| t.token == token && !t.revoked && t.expires_at > now)
        .ok_or_else(payloads::bad_credentials)?;
    let (app_id, app, account) = world
        .apps
        .iter()
        .find_map(|(id, app)| {
            let account = app.installations.get(&record.installation_id)?;
            Some((*id, app, account))
        })
        .ok_or_else(payloads::bad_credentials)?;
    Ok(Principal::Installation {
        token: token.to_string(),
        app_id,
        installation_id: record.installation_id,
        account: account.clone(),
        repositories: record.repositories.clone(),
        bot_login: app.bot_login(),
    })
}

#[derive(Debug, Deserialize)]
struct Claims {
    /// GitHub accepts the App id as a number or a string.
    iss: Value,
    iat: i64,
    exp: i64,
}

fn jwt_error(message: &str) -> Reply {
    payloads::error(
        401,
        message,
        "https://docs.github.com/apps/creating-github-apps/authenticating-with-a-github-app/generating-a-json-web-token-jwt-for-a-github-app",
    )
}

/// Verifies an App JWT: RS256, signed by the key registered for the App named in `iss`, `iat`
/// not in the future, `exp` in the future and at most 10 minutes after `iat`.
fn verify_app_jwt(world: &World, token: &str, now: DateTime<Utc>) -> Result<u64, Reply> {
    let undecodable = || jwt_error("A JSON web token could not be decoded");
    let unverified =
        jsonwebtoken::dangerous::insecure_decode::<Claims>(token).map_err(|_| undecodable())?;
    if unverified.header.alg != Algorithm::RS256 {
        return Err(undecodable());
    }
    let app_id = match &unverified.claims.iss {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
    .ok_or_else(|| jwt_error("'Issuer' claim ('iss') must be an Integer"))?;
    let app = world.apps.get(&app_id).ok_or_else(undecodable)?;

    let mut validation = Validation::new(Algorithm::RS256);
    validation.leeway = 0;
    validation.validate_exp = false; // checked below with GitHub's messages
    validation.required_spec_claims.clear();
    let claims = jsonwebtoken::decode::<Claims>(token, &app.key, &validation)
        .map_err(|_| undecodable())?
        .claims;

    let now = now.timestamp();
    if claims.iat > now + CLOCK_DRIFT_SECS {
        return Err(jwt_error(
            "'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued",
        ));
    }
    if claims.exp <= now {
        return Err(jwt_error(
            "'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires",
        ));
    }
    if claims.exp - claims.iat > MAX_JWT_LIFETIME_SECS
        || claims.exp > now + MAX_JWT_LIFETIME_SECS + CLOCK_DRIFT_SECS
    {
        return Err(jwt_error(
            "'Expiration time' claim ('exp') is too far in the future",
        ));
    }
    Ok(app_id)
}

/// Rate-limit headers for a reply.
pub(crate) fn rate_limit_headers(status: &RateStatus) -> [(&'static str, String); 5] {
    [
        ("x-ratelimit-limit", status.limit.to_string()),
        ("x-ratelimit-remaining", status.remaining().to_string()),
        ("x-ratelimit-reset", status.reset.to_string()),
        ("x-ratelimit-used", status.used.to_string()),
        ("x-ratelimit-resource", "core".to_string()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_kinds_never_contain_the_secret() {
        assert_eq!(credential_kind(None), None);
        assert_eq!(
            credential_kind(Some("token ghp_secret")).as_deref(),
            Some("token")
        );
        assert_eq!(
            credential_kind(Some("Bearer ghs_secret")).as_deref(),
            Some("installation-token")
        );
        assert_eq!(
            credential_kind(Some("Bearer eyJhbGciOiJSUzI1NiJ9.eyJ9.sig")).as_deref(),
            Some("bearer-jwt")
        );
        assert_eq!(
            credential_kind(Some("Basic dXNlcjpwYXNz")).as_deref(),
            Some("malformed")
        );
    }

    #[test]
    fn installation_tokens_see_only_their_account_and_repositories() {
        let principal = Principal::Installation {
            token: "ghs_x".to_string(),
            app_id: 1,
            installation_id: 2,
            account: "Org".to_string(),
            repositories: Some(vec!["one".to_string()]),
            bot_login: "app[bot]".to_string(),
        };
        assert!(principal.can_access_repo("org", "One"));
        assert!(!principal.can_access_repo("org", "two"));
        assert!(!principal.can_access_repo("other", "one"));
    }
}
