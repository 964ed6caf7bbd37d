//! Credentials: a token, or a GitHub App installation (JWT → installation token).

use crate::error::{Error, Result};
use chrono::{DateTime, TimeDelta, Utc};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::{Arc, Mutex, PoisonError};

/// How the client authenticates. `Debug` never shows the secrets.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// A personal access token (classic or fine-grained) or any other token GitHub accepts as
    /// `Authorization: token ...`.
    Token(SecretString),
    /// A GitHub App installation: the client signs JWTs with the App's private key and
    /// exchanges them for installation tokens.
    App {
        app_id: u64,
        /// The App's RSA private key, PEM (PKCS#1 or PKCS#8).
        private_key: SecretString,
        installation_id: u64,
    },
}

impl Credentials {
    /// A non-secret identity of the credential, for pacing and metrics.
    pub fn id(&self) -> CredentialId {
        match self {
            Credentials::Token(token) => {
                // A keyed-at-zero SipHash: stable within the process, reveals nothing usable.
                let hash =
                    BuildHasherDefault::<DefaultHasher>::default().hash_one(token.expose_secret());
                CredentialId(format!("token:{hash:016x}").into())
            }
            Credentials::App {
                app_id,
                installation_id,
                ..
            } => CredentialId(format!("app:{app_id}/installation:{installation_id}").into()),
        }
    }
}

/// Identifies a credential without revealing it: `token:<hash>` or
/// `app:<app id>/installation:<installation id>`. Suitable as a metric label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CredentialId(Arc<str>);

impl CredentialId {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    #[cfg(test)]
    pub(crate) fn for_test(id: &str) -> Self {
        CredentialId(id.into())
    }
}

impl fmt::Display for CredentialId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An installation access token (`ghs_...`) and when it expires.
#[derive(Debug, Clone)]
pub struct InstallationToken {
    pub token: SecretString,
    pub expires_at: DateTime<Utc>,
    /// The permissions GitHub granted (may be narrower than the App's).
    pub permissions: BTreeMap<String, String>,
    /// `"all"` or `"selected"`.
    pub repository_selection: Option<String>,
    /// Names of the repositories the token is restricted to (empty when not restricted).
    pub repositories: Vec<String>,
}

/// The claims of the JWT a GitHub App signs to authenticate as itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppJwtClaims {
    /// Issued at: one minute in the past, to tolerate clock drift (GitHub's advice).
    pub iat: i64,
    /// Expiry: nine minutes ahead (GitHub allows at most ten).
    pub exp: i64,
    /// The App id.
    pub iss: String,
}

/// How far back `iat` is set.
pub const JWT_BACKDATE: TimeDelta = TimeDelta::seconds(60);
/// How far ahead `exp` is set.
pub const JWT_LIFETIME: TimeDelta = TimeDelta::seconds(9 * 60);
/// A cached JWT is replaced when less than this much of its lifetime is left.
const JWT_REUSE_MARGIN: TimeDelta = TimeDelta::seconds(60);

pub fn app_jwt_claims(app_id: u64, now: DateTime<Utc>) -> AppJwtClaims {
    AppJwtClaims {
        iat: (now - JWT_BACKDATE).timestamp(),
        exp: (now + JWT_LIFETIME).timestamp(),
        iss: app_id.to_string(),
    }
}

/// Signs App JWTs and caches the current one.
pub(crate) struct AppSigner {
    pub(crate) app_id: u64,
    pub(crate) installation_id: u64,
    key: EncodingKey,
    cached: Mutex<Option<(SecretString, DateTime<Utc>)>>,
}

impl fmt::Debug for AppSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppSigner")
            .field("app_id", &self.app_id)
            .field("installation_id", &self.installation_id)
            .finish_non_exhaustive()
    }
}

impl AppSigner {
    pub(crate) fn new(
        app_id: u64,
        private_key: &SecretString,
        installation_id: u64,
    ) -> Result<Self> {
        let key =
            EncodingKey::from_rsa_pem(private_key.expose_secret().as_bytes()).map_err(|e| {
                Error::InvalidCredentials {
                    reason: format!(
                        "the GitHub App private key is not an RSA key in PEM format ({e})"
                    ),
                }
            })?;
        Ok(AppSigner {
            app_id,
            installation_id,
            key,
            cached: Mutex::new(None),
        })
    }

    /// A JWT valid for at least another minute.
    pub(crate) fn jwt(&self, now: DateTime<Utc>) -> Result<SecretString> {
        let mut cached = self.cached.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((jwt, exp)) = cached.as_ref()
            && *exp - JWT_REUSE_MARGIN > now
        {
            return Ok(jwt.clone());
        }
        let claims = app_jwt_claims(self.app_id, now);
        let jwt = jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &self.key)
            .map_err(|e| Error::InvalidCredentials {
                reason: format!("cannot sign the GitHub App JWT ({e})"),
            })?;
        let jwt = SecretString::from(jwt);
        let exp = DateTime::from_timestamp(claims.exp, 0).unwrap_or(now);
        *cached = Some((jwt.clone(), exp));
        Ok(jwt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwt_claims_follow_githubs_rules() {
        let now = DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default();
        let claims = app_jwt_claims(12345, now);
        assert_eq!(
            claims,
            AppJwtClaims {
                iat: 1_700_000_000 - 60,
                exp: 1_700_000_000 + 540,
                iss: "12345".into(),
            }
        );
        // GitHub rejects a JWT whose lifetime exceeds ten minutes.
        assert!(claims.exp - claims.iat <= 600);
    }

    #[test]
    fn credential_ids_reveal_no_secret_and_are_stable() {
        let a = Credentials::Token(SecretString::from("ghp_secret_value"));
        let id = a.id();
        assert!(id.as_str().starts_with("token:"));
        assert!(!id.as_str().contains("secret"));
        assert_eq!(
            id,
            Credentials::Token(SecretString::from("ghp_secret_value")).id()
        );
        assert_ne!(id, Credentials::Token(SecretString::from("ghp_other")).id());
        let app = Credentials::App {
            app_id: 7,
            private_key: SecretString::from("-----BEGIN RSA PRIVATE KEY-----"),
            installation_id: 9,
        };
        assert_eq!(app.id().to_string(), "app:7/installation:9");
        let debug = format!("{a:?} {app:?}");
        assert!(!debug.contains("ghp_secret_value"), "{debug}");
        assert!(!debug.contains("BEGIN"), "{debug}");
    }

    #[test]
    fn signed_jwt_verifies_with_the_public_key_and_is_reused_until_near_expiry() {
        use ccplant_testenv::fake_github::test_keys::{
            TEST_APP_PRIVATE_KEY_PEM, TEST_APP_PUBLIC_KEY_PEM,
        };
        use jsonwebtoken::{DecodingKey, Validation};
        let signer = AppSigner::new(42, &SecretString::from(TEST_APP_PRIVATE_KEY_PEM), 7)
            .unwrap_or_else(|e| panic!("{e}"));
        let now = Utc::now();
        let jwt = signer.jwt(now).unwrap_or_else(|e| panic!("{e}"));
        let key = DecodingKey::from_rsa_pem(TEST_APP_PUBLIC_KEY_PEM.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
        let decoded = jsonwebtoken::decode::<AppJwtClaims>(
            jwt.expose_secret(),
            &key,
            &Validation::new(Algorithm::RS256),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(decoded.header.alg, Algorithm::RS256);
        assert_eq!(decoded.claims, app_jwt_claims(42, now));

        let reused = signer
            .jwt(now + TimeDelta::minutes(7))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(reused.expose_secret(), jwt.expose_secret());
        let renewed = signer
            .jwt(now + TimeDelta::minutes(8) + TimeDelta::seconds(1))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(renewed.expose_secret(), jwt.expose_secret());
        assert!(!format!("{signer:?}").contains(jwt.expose_secret()));
    }

    #[test]
    fn a_key_that_is_not_pem_is_an_invalid_credential() {
        let err = AppSigner::new(1, &SecretString::from("not a key"), 2).err();
        assert!(
            matches!(err, Some(Error::InvalidCredentials { .. })),
            "{err:?}"
        );
    }
}
