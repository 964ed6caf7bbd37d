//! GitHub credentials from Secrets the operator is pointed at (it only `get`s them; it never lists
//! or watches Secrets), and one GitHub client per credential, reused across reconciles.

use ccplant_api::secret_keys;
use ccplant_github::{Credentials, GitHubClient as GitHub, RequestHook, Timeouts};
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use secrecy::SecretString;
use std::collections::HashMap;
use std::sync::Mutex;

/// Why credentials could not be loaded; each names what the user must fix.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("Secret {namespace}/{name} not found")]
    SecretNotFound { namespace: String, name: String },
    #[error("Secret {namespace}/{name} {problem}")]
    InvalidSecret {
        namespace: String,
        name: String,
        problem: String,
    },
    #[error("reading Secret {namespace}/{name}: {source}")]
    Kube {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// A Secret holding GitHub credentials.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SecretLocation {
    pub namespace: String,
    pub name: String,
}

impl SecretLocation {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl std::fmt::Display for SecretLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Reads the Secret at `location` (`SecretNotFound` when absent).
pub async fn read_secret(
    kube: &Client,
    location: &SecretLocation,
) -> Result<Secret, CredentialsError> {
    let secrets: Api<Secret> = Api::namespaced(kube.clone(), &location.namespace);
    match secrets.get_opt(&location.name).await {
        Ok(Some(s)) => Ok(s),
        Ok(None) => Err(CredentialsError::SecretNotFound {
            namespace: location.namespace.clone(),
            name: location.name.clone(),
        }),
        Err(source) => Err(CredentialsError::Kube {
            namespace: location.namespace.clone(),
            name: location.name.clone(),
            source,
        }),
    }
}

fn field(secret: &Secret, key: &str) -> Option<String> {
    let data = secret.data.as_ref()?.get(key)?;
    let text = String::from_utf8(data.0.clone()).ok()?;
    let trimmed = text.trim();
    (!trimmed.is_empty()).then(|| trimmed.to_string())
}

/// Reads `token`, or `app-id` + `private-key` + `installation-id`.
pub fn credentials_from_secret(secret: &Secret) -> Result<Credentials, String> {
    if let Some(token) = field(secret, secret_keys::TOKEN) {
        return Ok(Credentials::Token(SecretString::from(token)));
    }
    let app_id = field(secret, secret_keys::APP_ID);
    let key = field(secret, secret_keys::PRIVATE_KEY);
    let installation = field(secret, secret_keys::INSTALLATION_ID);
    match (app_id, key, installation) {
        (None, None, None) => Err(format!(
            "has neither the key \"{}\" nor the keys \"{}\", \"{}\" and \"{}\"",
            secret_keys::TOKEN,
            secret_keys::APP_ID,
            secret_keys::PRIVATE_KEY,
            secret_keys::INSTALLATION_ID
        )),
        (Some(app_id), Some(key), Some(installation)) => {
            let app_id = app_id
                .parse::<u64>()
                .map_err(|_| format!("key \"{}\" is not a number", secret_keys::APP_ID))?;
            let installation_id = installation
                .parse::<u64>()
                .map_err(|_| format!("key \"{}\" is not a number", secret_keys::INSTALLATION_ID))?;
            Ok(Credentials::App {
                app_id,
                private_key: SecretString::from(key),
                installation_id,
            })
        }
        (app, key, inst) => {
            let missing: Vec<&str> = [
                (app.is_none(), secret_keys::APP_ID),
                (key.is_none(), secret_keys::PRIVATE_KEY),
                (inst.is_none(), secret_keys::INSTALLATION_ID),
            ]
            .into_iter()
            .filter_map(|(m, k)| m.then_some(k))
            .collect();
            Err(format!(
                "lacks the GitHub App key(s) {}",
                missing.join(", ")
            ))
        }
    }
}

/// GitHub clients by Secret (namespace, name, resourceVersion): a changed Secret gets a new
/// client, an unchanged one keeps its cached installation token and pacing state.
pub struct GitHubClients {
    api_url: String,
    timeouts: Timeouts,
    /// Given every client built (request metrics).
    hook: Option<RequestHook>,
    /// Asked by every client right before each repository write (leadership).
    gate: Option<ccplant_github::WriteGate>,
    clients: Mutex<HashMap<SecretLocation, (String, GitHub)>>,
}

impl std::fmt::Debug for GitHubClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHubClients").finish_non_exhaustive()
    }
}

impl GitHubClients {
    pub fn new(api_url: &str, timeout: std::time::Duration, hook: Option<RequestHook>) -> Self {
        Self::with_gate(api_url, timeout, hook, None)
    }

    /// [`GitHubClients::new`] whose clients ask `gate` right before every repository write.
    pub fn with_gate(
        api_url: &str,
        timeout: std::time::Duration,
        hook: Option<RequestHook>,
        gate: Option<ccplant_github::WriteGate>,
    ) -> Self {
        let timeouts = Timeouts {
            connect: timeout.min(std::time::Duration::from_secs(10)),
            read: timeout,
            request: timeout,
        };
        Self {
            api_url: api_url.to_string(),
            timeouts,
            hook,
            gate,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// The client for the Secret at `location` (one `get` of the Secret per call).
    pub async fn client(
        &self,
        kube: &Client,
        location: &SecretLocation,
    ) -> Result<GitHub, CredentialsError> {
        let secret = read_secret(kube, location).await?;
        self.client_for(location, &secret)
    }

    /// The client for `secret` (read from `location`): the cached one while the Secret's
    /// resourceVersion is unchanged, else a new one.
    pub fn client_for(
        &self,
        location: &SecretLocation,
        secret: &Secret,
    ) -> Result<GitHub, CredentialsError> {
        let invalid = |problem: String| CredentialsError::InvalidSecret {
            namespace: location.namespace.clone(),
            name: location.name.clone(),
            problem,
        };
        let version = secret.metadata.resource_version.clone().unwrap_or_default();
        // Check, build and insert under one lock (building is synchronous and cheap), so
        // concurrent reconciles share one client and its installation token.
        let mut clients = self
            .clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((v, client)) = clients.get(location)
            && *v == version
        {
            return Ok(client.clone());
        }
        let creds = credentials_from_secret(secret).map_err(invalid)?;
        let mut builder = GitHub::builder(creds)
            .api_url(self.api_url.clone())
            .timeouts(self.timeouts);
        if let Some(hook) = &self.hook {
            builder = builder.on_request(hook.clone());
        }
        if let Some(gate) = &self.gate {
            builder = builder.write_gate(gate.clone());
        }
        let client = builder
            .build()
            .map_err(|e| invalid(format!("cannot be used: {e}")))?;
        clients.insert(location.clone(), (version, client.clone()));
        Ok(client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use std::collections::BTreeMap;

    fn secret(pairs: &[(&str, &str)]) -> Secret {
        Secret {
            data: Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn reads_a_token_or_a_complete_app() {
        assert!(matches!(
            credentials_from_secret(&secret(&[("token", "ghp_x\n")])),
            Ok(Credentials::Token(_))
        ));
        let app = credentials_from_secret(&secret(&[
            ("app-id", "42"),
            ("private-key", "-----BEGIN RSA PRIVATE KEY-----"),
            ("installation-id", "7"),
        ]));
        assert!(matches!(
            app,
            Ok(Credentials::App {
                app_id: 42,
                installation_id: 7,
                ..
            })
        ));
    }

    #[test]
    fn explains_what_is_missing_or_malformed() {
        assert_eq!(
            credentials_from_secret(&secret(&[])).err().unwrap(),
            "has neither the key \"token\" nor the keys \"app-id\", \"private-key\" and \"installation-id\""
        );
        assert_eq!(
            credentials_from_secret(&secret(&[("app-id", "42")]))
                .err()
                .unwrap(),
            "lacks the GitHub App key(s) private-key, installation-id"
        );
        assert_eq!(
            credentials_from_secret(&secret(&[
                ("app-id", "x"),
                ("private-key", "k"),
                ("installation-id", "1")
            ]))
            .err()
            .unwrap(),
            "key \"app-id\" is not a number"
        );
    }
}
