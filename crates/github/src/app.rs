//! GitHub App installation tokens: the client's own, and short-lived ones for sessions.

use crate::auth::InstallationToken;
use crate::client::{Call, CallAuth, GitHubClient, authorization};
use crate::error::Result;
use crate::models::WireInstallationToken;
use chrono::Utc;
use http::Method;
use secrecy::SecretString;
use std::collections::BTreeMap;

impl GitHubClient {
    /// Mints an installation token for a session, restricted to `repositories` (names without
    /// owner; empty = every repository of the installation) and `permissions` (e.g.
    /// `contents: write`; empty = the App's permissions). Requires App credentials.
    ///
    /// `POST /app/installations/{installation_id}/access_tokens` with the App's JWT.
    pub async fn mint_installation_token(
        &self,
        repositories: &[String],
        permissions: &BTreeMap<String, String>,
    ) -> Result<InstallationToken> {
        let mut body = serde_json::Map::new();
        if !repositories.is_empty() {
            body.insert("repositories".into(), serde_json::json!(repositories));
        }
        if !permissions.is_empty() {
            body.insert("permissions".into(), serde_json::json!(permissions));
        }
        self.request_installation_token(Some(body.into())).await
    }

    /// Revokes an installation token (`DELETE /installation/token`, authenticated with that
    /// token). A token GitHub already rejects (401: expired or revoked) counts as revoked.
    pub async fn revoke_installation_token(&self, token: &SecretString) -> Result<()> {
        let mut call = Call::new(
            Method::DELETE,
            "DELETE /installation/token",
            "/installation/token".into(),
        );
        call.auth = CallAuth::Token(token.clone());
        let reply = self.execute(call).await?;
        if reply.status == 401 {
            return Ok(());
        }
        reply.ok().map(|_| ())
    }

    /// Exchanges the App's JWT for an installation token. Sent with `send_once` (not
    /// `execute`): this is what `execute` calls to authenticate.
    pub(crate) async fn request_installation_token(
        &self,
        body: Option<serde_json::Value>,
    ) -> Result<InstallationToken> {
        let signer = self.app_signer()?;
        let jwt = signer.jwt(Utc::now())?;
        let mut call = Call::new(
            Method::POST,
            "POST /app/installations/{installation_id}/access_tokens",
            format!(
                "/app/installations/{}/access_tokens",
                signer.installation_id
            ),
        );
        call.body = body;
        call.auth = CallAuth::AppJwt;
        let reply = self
            .send_once(&call, authorization("Bearer", &jwt)?)
            .await?
            .ok()?;
        let wire: WireInstallationToken = reply.json()?;
        Ok(InstallationToken {
            token: SecretString::from(wire.token),
            expires_at: wire.expires_at,
            permissions: wire.permissions,
            repository_selection: wire.repository_selection,
            repositories: wire.repositories.into_iter().map(|r| r.name).collect(),
        })
    }
}
