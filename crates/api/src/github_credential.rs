//! `GitHubCredential` (cluster-scoped): a GitHub identity of the platform and who may use it —
//! which namespaces, which repositories, which GitHubTask actions, and the most a session's
//! installation token may hold (DESIGN §7.1). Like cert-manager's ClusterIssuer: the platform
//! team creates them, teams name one in `spec.github.credentialName` or get the default one.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{PermissionLevel, default_github_permissions};
use crate::github_task::TaskAction;
use crate::validation::*;

/// GitHubTask actions a credential allows when `actions` is not set: everything but
/// ApproveAndMerge, which a platform grants explicitly.
pub const DEFAULT_CREDENTIAL_ACTIONS: [TaskAction; 3] = [
    TaskAction::CreateIssue,
    TaskAction::CreatePullRequest,
    TaskAction::Comment,
];

fn default_actions() -> Vec<TaskAction> {
    DEFAULT_CREDENTIAL_ACTIONS.to_vec()
}

/// A GitHub identity of the platform (a token or a GitHub App installation) and the rules of
/// its use. Cluster-scoped: only the platform team creates them.
// clippy reads the repeated `type_ = "string"` of the printer columns as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[schemars(transform = crate::schema::polish_descriptions)]
#[kube(
    group = "ccplant.io",
    version = "v1alpha1",
    kind = "GitHubCredential",
    plural = "githubcredentials",
    status = "GitHubCredentialStatus",
    derive = "PartialEq",
    shortname = "ghc",
    category = "ccplant",
    doc = "GitHubCredential is a GitHub identity of the platform (a token or a GitHub App installation, in a Secret) and who may use it: the namespaces it serves, the repositories they may target, the GitHubTask actions allowed, and the most a session's installation token may hold. AgentSessions and GitHubTasks name one in spec.github.credentialName, or use the default one that selects their namespace. Every rule is checked before any GitHub call; a refusal is reason NotAllowed.",
    printcolumn(
        name = "Default",
        type_ = "boolean",
        json_path = ".spec.default",
        description = "Used by objects that name no credential"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "The Secret was found and GitHub accepted it"
    ),
    printcolumn(
        name = "Identity",
        type_ = "string",
        json_path = ".status.identity.login",
        description = "GitHub login the credential acts as"
    ),
    printcolumn(
        name = "Rate Limit",
        type_ = "integer",
        json_path = ".status.rateLimitRemaining",
        description = "GitHub requests left in the current window, as last seen"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct GitHubCredentialSpec {
    /// The Secret holding the credentials: either the key "token", or the keys "app-id",
    /// "private-key" and "installation-id" of a GitHub App. Sessions need a GitHub App: only
    /// an App can mint a token restricted to one repository and to sessionPermissions.
    pub secret_ref: NamespacedSecretReference,

    /// Namespaces whose objects may use this credential (labels of the Namespace, e.g.
    /// kubernetes.io/metadata.name). Required; {} selects every namespace.
    #[schemars(schema_with = "crate::schema::bounded_label_selector")]
    pub namespace_selector: LabelSelector,

    /// Used by AgentSessions and GitHubTasks in the selected namespaces that set neither
    /// github.credentialName nor github.secretRef. When several defaults select a namespace,
    /// the most recently created one is used (as with StorageClasses).
    #[serde(default)]
    pub default: bool,

    /// Repositories objects may target: "owner/repo" or "owner/*" (every repository of the
    /// owner). Matched case-insensitively, as GitHub does. Required.
    #[schemars(length(min = 1, max = 256), inner(length(min = 3, max = 141)))]
    #[x_kube(validation = Rule::new(REPOSITORY_PATTERNS_RULE).message(REPOSITORY_PATTERNS_MESSAGE))]
    pub repositories: Vec<String>,

    /// GitHubTask actions allowed. Default: CreateIssue, CreatePullRequest and Comment;
    /// ApproveAndMerge only when listed.
    #[serde(default = "default_actions")]
    #[schemars(length(max = 4))]
    #[x_kube(validation = Rule::new(DISTINCT_ACTIONS_RULE).message(DISTINCT_ACTIONS_MESSAGE))]
    pub actions: Vec<TaskAction>,

    /// The most a session's GitHub App installation token may hold, by permission name
    /// ("read" or "write"; write includes read). A session asks for a subset in
    /// github.permissions. Default: contents, issues and pull_requests write.
    #[serde(default = "default_github_permissions")]
    #[schemars(extend("maxProperties" = 64))]
    pub session_permissions: BTreeMap<String, PermissionLevel>,
}

/// A Secret in a named namespace (the platform's, not the user's).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[schemars(transform = crate::schema::polish_descriptions)]
pub struct NamespacedSecretReference {
    /// Namespace of the Secret, e.g. the operator's namespace.
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new(NAMESPACE_NAME_RULE).message(SECRET_NAMESPACE_MESSAGE))]
    pub namespace: String,
    /// Name of the Secret.
    #[schemars(length(min = 1, max = MAX_OBJECT_NAME_LENGTH))]
    #[x_kube(validation = Rule::new(OBJECT_NAME_RULE).message(SECRET_NAME_MESSAGE))]
    pub name: String,
}

/// What the operator last learned about a credential.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[schemars(transform = crate::schema::polish_descriptions)]
#[serde(rename_all = "camelCase")]
pub struct GitHubCredentialStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Ready: the Secret was found, is complete, and GitHub answered with the identity.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// The GitHub identity the credential acts as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<CredentialIdentity>,

    /// GitHub requests left in the current rate-limit window, as last seen (refreshed at most
    /// every few minutes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_remaining: Option<i64>,
}

/// A GitHub identity.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(transform = crate::schema::polish_descriptions)]
#[serde(rename_all = "camelCase")]
pub struct CredentialIdentity {
    /// The login GitHub shows as the author of what the credential creates ("name[bot]" for a
    /// GitHub App).
    pub login: String,
    /// "User" for a token, "App" for a GitHub App installation.
    #[serde(rename = "type")]
    pub kind: String,
    /// The App's slug, for a GitHub App.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_slug: Option<String>,
}

impl fmt::Display for NamespacedSecretReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl GitHubCredentialSpec {
    /// Whether `owner/repo` matches one of `repositories` (case-insensitive; `owner/*` matches
    /// every repository of the owner).
    pub fn allows_repository(&self, owner: &str, repo: &str) -> bool {
        self.repositories.iter().any(|pattern| {
            let Some((p_owner, p_repo)) = pattern.split_once('/') else {
                return false;
            };
            p_owner.eq_ignore_ascii_case(owner)
                && (p_repo == "*" || p_repo.eq_ignore_ascii_case(repo))
        })
    }

    /// Whether GitHubTasks may perform `action`.
    pub fn allows_action(&self, action: TaskAction) -> bool {
        self.actions.contains(&action)
    }

    /// The requested permissions above the ceiling, as "name:level" (empty: all allowed).
    pub fn permissions_above_ceiling(
        &self,
        requested: &BTreeMap<String, PermissionLevel>,
    ) -> Vec<String> {
        requested
            .iter()
            .filter(|(name, level)| {
                self.session_permissions
                    .get(name.as_str())
                    .is_none_or(|ceiling| *level > ceiling)
            })
            .map(|(name, level)| format!("{name}:{}", level.as_str()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: serde_json::Value) -> GitHubCredentialSpec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn defaults_leave_approve_and_merge_out() {
        let s = spec(json!({
            "secretRef": {"namespace": "ccplant-system", "name": "app"},
            "namespaceSelector": {},
            "repositories": ["octo/*"],
        }));
        assert!(!s.default);
        assert!(s.allows_action(TaskAction::CreateIssue));
        assert!(s.allows_action(TaskAction::Comment));
        assert!(!s.allows_action(TaskAction::ApproveAndMerge));
        assert_eq!(s.session_permissions, default_github_permissions());
    }

    #[test]
    fn repository_patterns() {
        let s = spec(json!({
            "secretRef": {"namespace": "n", "name": "s"},
            "namespaceSelector": {},
            "repositories": ["octo/*", "Acme/API"],
        }));
        for (owner, repo, want) in [
            ("octo", "hello", true),
            ("OCTO", "x", true),
            ("acme", "api", true),
            ("acme", "api2", false),
            ("octopus", "hello", false),
            ("other", "api", false),
        ] {
            assert_eq!(s.allows_repository(owner, repo), want, "{owner}/{repo}");
        }
    }

    #[test]
    fn permissions_ceiling_write_includes_read() {
        let s = spec(json!({
            "secretRef": {"namespace": "n", "name": "s"},
            "namespaceSelector": {},
            "repositories": ["o/*"],
            "sessionPermissions": {"contents": "write", "issues": "read"},
        }));
        let ask =
            |v: serde_json::Value| s.permissions_above_ceiling(&serde_json::from_value(v).unwrap());
        assert!(ask(json!({"contents": "read", "issues": "read"})).is_empty());
        assert_eq!(ask(json!({"issues": "write"})), ["issues:write"]);
        assert_eq!(
            ask(json!({"workflows": "write", "contents": "write"})),
            ["workflows:write"]
        );
    }
}
