//! Types and names both kinds share.

use std::collections::BTreeMap;

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::validation::{
    CREDENTIAL_NAME_MESSAGE, CREDENTIAL_XOR_SECRET_MESSAGE, CREDENTIAL_XOR_SECRET_RULE,
    MAX_OBJECT_NAME_LENGTH, OBJECT_NAME_RULE, PERMISSIONS_NOT_EMPTY_MESSAGE,
    PERMISSIONS_NOT_EMPTY_RULE, SECRET_NAME_MESSAGE,
};

/// API group of both kinds.
pub const GROUP: &str = "ccplant.io";
/// API version of both kinds.
pub const VERSION: &str = "v1alpha1";
/// `kubectl get ccplant` lists both kinds.
pub const CATEGORY: &str = "ccplant";

/// Keys of the GitHub credentials Secret that `github.secretRef` names.
///
/// The Secret holds either a token, or a GitHub App's id, private key and installation id:
///
/// ```yaml
/// apiVersion: v1
/// kind: Secret
/// metadata: { name: github-app }
/// stringData:
///   app-id: "123456"
///   installation-id: "7890123"
///   private-key: |
///     -----BEGIN RSA PRIVATE KEY-----
///     ...
/// ```
pub mod secret_keys {
    /// A personal access token or another token used as is.
    pub const TOKEN: &str = "token";
    /// GitHub App id.
    pub const APP_ID: &str = "app-id";
    /// GitHub App private key (PEM).
    pub const PRIVATE_KEY: &str = "private-key";
    /// Installation id of the GitHub App on the repository's owner.
    pub const INSTALLATION_ID: &str = "installation-id";
}

/// Labels and values that are part of the user-visible contract.
pub mod labels {
    /// `app.kubernetes.io/managed-by` on every object the operator creates.
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
    /// Value of [`MANAGED_BY`].
    pub const MANAGED_BY_VALUE: &str = "ccplant";
    /// Name of the AgentSession an object belongs to.
    pub const SESSION: &str = "ccplant.io/session";
}

/// Annotations that are part of the user-visible contract.
pub mod annotations {
    /// On an AgentSession: an RFC 3339 time. A session the operator suspended after
    /// `lifetime.idleTimeout` resumes when this is later than its suspension (`kubectl ccplant
    /// resume` sets it; appending a message resumes it too).
    pub const RESUME_REQUESTED_AT: &str = "ccplant.io/resume-requested-at";
}

/// A reference to a Secret in the object's own namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[schemars(transform = crate::schema::polish_descriptions)]
pub struct SecretReference {
    /// Name of the Secret, in the same namespace as the object that refers to it.
    #[schemars(length(min = 1, max = MAX_OBJECT_NAME_LENGTH))]
    #[x_kube(validation = Rule::new(OBJECT_NAME_RULE).message(SECRET_NAME_MESSAGE))]
    pub name: String,
}

impl SecretReference {
    /// A reference to the named Secret.
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into() }
    }
}

/// Access level of one GitHub App permission.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[schemars(transform = crate::schema::polish_descriptions)]
#[serde(rename_all = "lowercase")]
pub enum PermissionLevel {
    /// Read-only access.
    Read,
    /// Read and write access.
    Write,
}

impl PermissionLevel {
    /// The string GitHub expects.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
        }
    }
}

/// Permissions of the installation token minted for a session when `github.permissions` is not
/// set: contents, pull_requests and issues, all write.
pub const DEFAULT_GITHUB_PERMISSIONS: [(&str, PermissionLevel); 3] = [
    ("contents", PermissionLevel::Write),
    ("issues", PermissionLevel::Write),
    ("pull_requests", PermissionLevel::Write),
];

/// [`DEFAULT_GITHUB_PERMISSIONS`] as a map.
pub fn default_github_permissions() -> BTreeMap<String, PermissionLevel> {
    DEFAULT_GITHUB_PERMISSIONS
        .iter()
        .map(|(name, level)| ((*name).to_owned(), *level))
        .collect()
}

/// GitHub credentials of an AgentSession.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[schemars(transform = crate::schema::polish_descriptions)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(CREDENTIAL_XOR_SECRET_RULE).message(CREDENTIAL_XOR_SECRET_MESSAGE))]
pub struct SessionGitHubSpec {
    /// A GitHubCredential of the platform (cluster-scoped) whose namespaceSelector selects this
    /// namespace and whose repositories match spec.repository. It must hold a GitHub App: the
    /// operator mints an installation token restricted to spec.repository and to the
    /// permissions below (at most the credential's sessionPermissions), stores it in a Secret
    /// owned by the session, refreshes it while the session runs and revokes it when the
    /// session finishes, expires, is suspended or is deleted. Neither credentialName nor
    /// secretRef set: the default GitHubCredential of the namespace. Mutually exclusive with
    /// secretRef.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_OBJECT_NAME_LENGTH))]
    #[x_kube(validation = Rule::new(OBJECT_NAME_RULE).message(CREDENTIAL_NAME_MESSAGE))]
    pub credential_name: Option<String>,

    /// A Secret of this namespace holding the team's own GitHub credentials, used as is: either
    /// the key "token", or the keys "app-id", "private-key" and "installation-id" of a GitHub
    /// App (then a restricted installation token is minted as with credentialName). Mutually
    /// exclusive with credentialName.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretReference>,

    /// GitHub App permissions of the session's installation token, by permission name
    /// (contents, issues, pull_requests, workflows, checks, ...), each "read" or "write"; must
    /// not be empty. Default: contents, issues and pull_requests write. Ignored for a plain
    /// token, which keeps the permissions it was created with.
    #[serde(default = "default_github_permissions")]
    #[schemars(extend("maxProperties" = 64))]
    #[x_kube(validation = Rule::new(PERMISSIONS_NOT_EMPTY_RULE).message(PERMISSIONS_NOT_EMPTY_MESSAGE))]
    pub permissions: BTreeMap<String, PermissionLevel>,
}

impl Default for SessionGitHubSpec {
    fn default() -> Self {
        Self {
            credential_name: None,
            secret_ref: None,
            permissions: default_github_permissions(),
        }
    }
}

/// GitHub credentials of a GitHubTask.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[schemars(transform = crate::schema::polish_descriptions)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(CREDENTIAL_XOR_SECRET_RULE).message(CREDENTIAL_XOR_SECRET_MESSAGE))]
pub struct TaskGitHubSpec {
    /// A GitHubCredential of the platform (cluster-scoped) whose namespaceSelector selects this
    /// namespace, whose repositories match spec.repository and whose actions allow this
    /// task's action. Neither credentialName nor secretRef set: the default GitHubCredential of
    /// the namespace. Mutually exclusive with secretRef.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_OBJECT_NAME_LENGTH))]
    #[x_kube(validation = Rule::new(OBJECT_NAME_RULE).message(CREDENTIAL_NAME_MESSAGE))]
    pub credential_name: Option<String>,

    /// A Secret of this namespace holding the team's own GitHub credentials, used as is: either
    /// the key "token", or the keys "app-id", "private-key" and "installation-id" of a GitHub
    /// App. Mutually exclusive with credentialName.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretReference>,
}

/// Where an object's GitHub credentials come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GitHubSource<'a> {
    /// A GitHubCredential of the platform, by name.
    Credential(&'a str),
    /// A Secret of the object's own namespace.
    Secret(&'a SecretReference),
    /// Neither named: the namespace's default GitHubCredential.
    Default,
}

impl<'a> GitHubSource<'a> {
    /// The source `credentialName` / `secretRef` name (credentialName wins when an object that
    /// bypassed admission sets both).
    pub fn of(credential_name: Option<&'a str>, secret_ref: Option<&'a SecretReference>) -> Self {
        match (credential_name, secret_ref) {
            (Some(name), _) => Self::Credential(name),
            (None, Some(secret)) => Self::Secret(secret),
            (None, None) => Self::Default,
        }
    }
}
