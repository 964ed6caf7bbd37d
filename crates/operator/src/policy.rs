//! GitHub access policy (DESIGN §7.1): which credentials an object may use and for what. The
//! rules are pure ([`resolve`]); [`PolicyCaches`] holds the caches they read (GitHubCredentials
//! and the labels of Namespaces), so checking costs no API call and happens before any GitHub
//! call.

use crate::credentials::SecretLocation;
use ccplant_api::{AgentSessionClass, GitHubCredential, GitHubSource, PermissionLevel, TaskAction};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;
use kube::core::PartialObjectMeta;
use kube::core::SelectorExt;
use kube::runtime::reflector::{self, ObjectRef, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::watch;

/// What an object wants the credential for.
#[derive(Clone, Copy, Debug)]
pub enum Purpose<'a> {
    /// A GitHubTask's action.
    Task(TaskAction),
    /// A session's installation token with these permissions.
    Session(&'a BTreeMap<String, PermissionLevel>),
}

/// The credential an object may use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// Where its Secret is.
    pub secret: SecretLocation,
    /// The platform's GitHubCredential, by name (`None`: the object's own Secret).
    pub credential: Option<String>,
}

/// Why an object may not use GitHub (yet).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A rule refuses it: nothing changes that but the object or the platform's policy.
    NotAllowed(String),
    /// What it names does not exist (yet): retried with backoff.
    NotFound(String),
    /// It names no credential and no default GitHubCredential selects its namespace. A task is
    /// refused (NotAllowed); a session then runs without GitHub credentials.
    NoCredential(String),
}

/// What [`resolve`] reads about the object.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    pub source: GitHubSource<'a>,
    pub namespace: &'a str,
    /// The labels of the object's namespace; `None` when the namespace is not in the cache.
    pub namespace_labels: Option<&'a BTreeMap<String, String>>,
    /// The repository, owner and name.
    pub repository: (&'a str, &'a str),
    pub purpose: Purpose<'a>,
}

/// The credential `request` may use, or why not (pure). An object's own Secret (secretRef) is
/// the team's identity, used as is. A platform credential must select the namespace, match the
/// repository, and allow the action or hold the requested session permissions.
pub fn resolve(
    request: &Request<'_>,
    credentials: &[Arc<GitHubCredential>],
) -> Result<Grant, Refusal> {
    let ns = request.namespace;
    let credential = match request.source {
        GitHubSource::Secret(secret) => {
            return Ok(Grant {
                secret: SecretLocation::new(ns, &secret.name),
                credential: None,
            });
        }
        GitHubSource::Credential(name) => {
            let found = credentials.iter().find(|c| c.name_any() == name);
            let Some(found) = found else {
                return Err(Refusal::NotFound(format!(
                    "GitHubCredential {name} does not exist"
                )));
            };
            let labels = namespace_labels(request)?;
            if !selects(found, labels) {
                return Err(Refusal::NotAllowed(format!(
                    "GitHubCredential {name} does not allow namespace {ns}: its namespaceSelector does not select it"
                )));
            }
            found
        }
        GitHubSource::Default => {
            let labels = namespace_labels(request)?;
            let newest = newest(
                credentials
                    .iter()
                    .filter(|c| c.spec.default && selects(c, labels)),
            );
            let Some(found) = newest else {
                return Err(Refusal::NoCredential(format!(
                    "no default GitHubCredential selects namespace {ns}: set spec.github.credentialName or spec.github.secretRef"
                )));
            };
            found
        }
    };
    let name = credential.name_any();
    let spec = &credential.spec;
    let (owner, repo) = request.repository;
    if !spec.allows_repository(owner, repo) {
        return Err(Refusal::NotAllowed(format!(
            "GitHubCredential {name} does not allow repository {owner}/{repo}: its repositories are {}",
            spec.repositories.join(", ")
        )));
    }
    match request.purpose {
        Purpose::Task(action) if !spec.allows_action(action) => {
            let actions: Vec<&str> = spec.actions.iter().map(|a| a.as_str()).collect();
            return Err(Refusal::NotAllowed(format!(
                "GitHubCredential {name} does not allow {action}: its actions are {}",
                if actions.is_empty() {
                    "none".to_string()
                } else {
                    actions.join(", ")
                }
            )));
        }
        Purpose::Session(permissions) => {
            let above = spec.permissions_above_ceiling(permissions);
            if !above.is_empty() {
                let ceiling: Vec<String> = spec
                    .session_permissions
                    .iter()
                    .map(|(k, v)| format!("{k}:{}", v.as_str()))
                    .collect();
                return Err(Refusal::NotAllowed(format!(
                    "GitHubCredential {name} does not allow the session permission(s) {}: its sessionPermissions are {}",
                    above.join(", "),
                    ceiling.join(", ")
                )));
            }
        }
        Purpose::Task(_) => {}
    }
    Ok(Grant {
        secret: SecretLocation::new(&spec.secret_ref.namespace, &spec.secret_ref.name),
        credential: Some(name),
    })
}

fn namespace_labels<'a>(request: &Request<'a>) -> Result<&'a BTreeMap<String, String>, Refusal> {
    request.namespace_labels.ok_or_else(|| {
        Refusal::NotFound(format!(
            "namespace {} is not in the operator's cache yet",
            request.namespace
        ))
    })
}

/// Whether the credential's namespaceSelector selects a namespace with `labels`. A selector
/// that cannot be evaluated selects nothing.
fn selects(credential: &GitHubCredential, labels: &BTreeMap<String, String>) -> bool {
    selector_selects(&credential.spec.namespace_selector, labels)
}

fn selector_selects(
    selector: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    labels: &BTreeMap<String, String>,
) -> bool {
    match kube::core::Selector::try_from(selector.clone()) {
        Ok(selector) => selector.matches(labels),
        Err(_) => false,
    }
}

/// The AgentSessionClass a session in `namespace` (with `labels`; `None`: not in the cache yet)
/// uses (pure): the one it names, which must select the namespace; else the newest default that
/// selects it; else none (`Ok(None)`: the operator's built-in rules).
pub fn resolve_class(
    named: Option<&str>,
    namespace: &str,
    labels: Option<&BTreeMap<String, String>>,
    classes: &[Arc<AgentSessionClass>],
) -> Result<Option<Arc<AgentSessionClass>>, Refusal> {
    let labels = || {
        labels.ok_or_else(|| {
            Refusal::NotFound(format!(
                "namespace {namespace} is not in the operator's cache yet"
            ))
        })
    };
    if let Some(name) = named {
        let Some(class) = classes.iter().find(|c| c.name_any() == name) else {
            return Err(Refusal::NotFound(format!(
                "AgentSessionClass {name} does not exist"
            )));
        };
        if !selector_selects(&class.spec.namespace_selector, labels()?) {
            return Err(Refusal::NotAllowed(format!(
                "AgentSessionClass {name} does not allow namespace {namespace}: its namespaceSelector does not select it"
            )));
        }
        return Ok(Some(class.clone()));
    }
    let labels = labels()?;
    Ok(newest(
        classes
            .iter()
            .filter(|c| c.spec.default && selector_selects(&c.spec.namespace_selector, labels)),
    )
    .cloned())
}

/// The most recently created of `defaults` (ties: the first name), as with StorageClasses.
fn newest<'a, K: kube::Resource + 'a>(
    defaults: impl Iterator<Item = &'a Arc<K>>,
) -> Option<&'a Arc<K>> {
    defaults.max_by(|a, b| {
        a.meta()
            .creation_timestamp
            .as_ref()
            .map(|t| t.0)
            .cmp(&b.meta().creation_timestamp.as_ref().map(|t| t.0))
            .then_with(|| b.name_any().cmp(&a.name_any()))
    })
}

/// The caches the rules read, shared by every controller of the process.
#[derive(Clone)]
pub struct PolicyCaches {
    pub credentials: Store<GitHubCredential>,
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
    pub classes: Store<AgentSessionClass>,
    synced: Vec<watch::Receiver<bool>>,
}

impl std::fmt::Debug for PolicyCaches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyCaches").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for PolicyFeeds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyFeeds").finish_non_exhaustive()
    }
}

/// What fills [`PolicyCaches`]: [`PolicyFeeds::run`] watches GitHubCredentials and Namespaces.
pub struct PolicyFeeds {
    credentials: Writer<GitHubCredential>,
    namespaces: Writer<PartialObjectMeta<Namespace>>,
    classes: Writer<AgentSessionClass>,
    synced: [watch::Sender<bool>; 3],
}

impl PolicyCaches {
    /// Empty caches and the feeds that fill them.
    pub fn new() -> (Self, PolicyFeeds) {
        let (credentials, credentials_writer) = reflector::store();
        let (namespaces, namespaces_writer) = reflector::store();
        let (classes, classes_writer) = reflector::store();
        let (c_tx, c_rx) = watch::channel(false);
        let (n_tx, n_rx) = watch::channel(false);
        let (k_tx, k_rx) = watch::channel(false);
        (
            Self {
                credentials,
                namespaces,
                classes,
                synced: vec![c_rx, n_rx, k_rx],
            },
            PolicyFeeds {
                credentials: credentials_writer,
                namespaces: namespaces_writer,
                classes: classes_writer,
                synced: [c_tx, n_tx, k_tx],
            },
        )
    }

    /// Signals of the GitHubCredential cache's first complete list (for a shutdown before it).
    pub fn credentials_synced(&self) -> watch::Receiver<bool> {
        self.synced[0].clone()
    }

    /// [`resolve_class`] over the caches.
    pub fn resolve_class(
        &self,
        named: Option<&str>,
        namespace: &str,
    ) -> Result<Option<Arc<AgentSessionClass>>, Refusal> {
        let ns = self.namespaces.get(&ObjectRef::new(namespace));
        let labels = ns.as_ref().map(|n| n.labels().clone());
        resolve_class(named, namespace, labels.as_ref(), &self.classes.state())
    }

    /// True once every cache completed its first list.
    pub fn is_ready(&self) -> bool {
        self.synced.iter().all(|s| *s.borrow())
    }

    /// Waits until both caches completed their first list: a rule read before would refuse
    /// what a credential allows.
    pub async fn ready(&self) {
        for s in &self.synced {
            let _ = s.clone().wait_for(|done| *done).await;
        }
    }

    /// [`resolve`] over the caches.
    pub fn resolve(
        &self,
        source: GitHubSource<'_>,
        namespace: &str,
        repository: (&str, &str),
        purpose: Purpose<'_>,
    ) -> Result<Grant, Refusal> {
        let ns = self.namespaces.get(&ObjectRef::new(namespace));
        let labels = ns.as_ref().map(|n| n.labels().clone());
        let credentials = match source {
            GitHubSource::Secret(_) => Vec::new(),
            _ => self.credentials.state(),
        };
        resolve(
            &Request {
                source,
                namespace,
                namespace_labels: labels.as_ref(),
                repository,
                purpose,
            },
            &credentials,
        )
    }
}

impl PolicyFeeds {
    /// Marks both caches complete (tests that run no watch).
    #[cfg(test)]
    pub(crate) fn mark_synced(&self) {
        for s in &self.synced {
            s.send_replace(true);
        }
    }

    /// The watches that fill the caches (standbys keep them warm too, so a new leader decides
    /// at once): the GitHubCredentials as the credential controller's primary stream, and a
    /// future that watches the metadata of every Namespace and the AgentSessionClasses until
    /// the process ends.
    pub fn start(
        self,
        client: kube::Client,
    ) -> (
        futures::stream::BoxStream<'static, Result<GitHubCredential, watcher::Error>>,
        impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let [c_synced, n_synced, k_synced] = self.synced;
        let classes = feed(
            kube::Api::<AgentSessionClass>::all(client.clone()),
            self.classes,
            k_synced,
            "AgentSessionClasses",
        );
        let credentials = watcher(
            kube::Api::<GitHubCredential>::all(client.clone()),
            crate::context::watch_config(),
        )
        .default_backoff()
        .modify(crate::context::trim_meta)
        .reflect(self.credentials)
        .inspect(move |event| {
            if let Ok(watcher::Event::InitDone) = event {
                c_synced.send_replace(true);
            }
        })
        .applied_objects()
        .boxed();
        let namespaces = feed(
            kube::Api::<PartialObjectMeta<Namespace>>::all(client),
            self.namespaces,
            n_synced,
            "Namespaces",
        );
        (credentials, async move {
            futures::join!(namespaces, classes);
        })
    }
}

/// A watch that keeps `writer`'s cache current until the process ends, marking `synced` once
/// its first list is complete.
fn feed<K>(
    api: kube::Api<K>,
    writer: Writer<K>,
    synced: watch::Sender<bool>,
    what: &'static str,
) -> impl std::future::Future<Output = ()> + Send + 'static
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    watcher(api, crate::context::watch_config())
        .default_backoff()
        .modify(crate::context::trim_meta)
        .reflect(writer)
        .for_each(move |event| {
            match event {
                Ok(watcher::Event::InitDone) => {
                    synced.send_replace(true);
                }
                Err(e) => tracing::warn!(error = %e, "watching {what} failed; retrying"),
                Ok(_) => {}
            }
            futures::future::ready(())
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ccplant_api::SecretReference;
    use serde_json::json;

    fn credential(name: &str, created: &str, spec: serde_json::Value) -> Arc<GitHubCredential> {
        let mut full = json!({
            "secretRef": {"namespace": "ccplant-system", "name": format!("{name}-secret")},
            "namespaceSelector": {"matchLabels": {"team": "a"}},
            "repositories": ["octo/*"],
        });
        for (k, v) in spec.as_object().unwrap() {
            full[k] = v.clone();
        }
        Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "ccplant.io/v1alpha1", "kind": "GitHubCredential",
                "metadata": {"name": name, "creationTimestamp": created},
                "spec": full,
            }))
            .unwrap(),
        )
    }

    #[test]
    fn every_rule_of_the_github_policy() {
        let platform = credential("platform", "2026-01-01T00:00:00Z", json!({"default": true}));
        let merger = credential(
            "merger",
            "2026-01-02T00:00:00Z",
            json!({"actions": ["ApproveAndMerge"], "repositories": ["octo/hello"],
                   "sessionPermissions": {"contents": "read"}}),
        );
        let everyone = credential(
            "everyone",
            "2026-01-03T00:00:00Z",
            json!({"namespaceSelector": {}, "repositories": ["public/*"]}),
        );
        let newer_default = credential(
            "newer",
            "2026-02-01T00:00:00Z",
            json!({"default": true, "namespaceSelector": {"matchLabels": {"tier": "gold"}}}),
        );
        let all = vec![platform, merger, everyone, newer_default];
        let team_a: BTreeMap<String, String> = [("team".into(), "a".into())].into();
        let gold: BTreeMap<String, String> =
            [("team".into(), "a".into()), ("tier".into(), "gold".into())].into();
        let none = BTreeMap::new();
        let own = SecretReference::new("mine");
        let default_perms = ccplant_api::default_github_permissions();
        let write_workflows: BTreeMap<String, PermissionLevel> =
            [("workflows".into(), PermissionLevel::Write)].into();
        let read_contents: BTreeMap<String, PermissionLevel> =
            [("contents".into(), PermissionLevel::Read)].into();
        let cases: Vec<(&str, Request<'_>, &str)> = vec![
            (
                "own Secret: used as is, no policy",
                Request {
                    source: GitHubSource::Secret(&own),
                    namespace: "b",
                    namespace_labels: None,
                    repository: ("anyone", "anything"),
                    purpose: Purpose::Task(TaskAction::ApproveAndMerge),
                },
                "ok b/mine (own)",
            ),
            (
                "default of a selected namespace",
                Request {
                    source: GitHubSource::Default,
                    namespace: "a",
                    namespace_labels: Some(&team_a),
                    repository: ("octo", "hello"),
                    purpose: Purpose::Task(TaskAction::CreateIssue),
                },
                "ok ccplant-system/platform-secret (platform)",
            ),
            (
                "two defaults select it: the newest",
                Request {
                    source: GitHubSource::Default,
                    namespace: "a",
                    namespace_labels: Some(&gold),
                    repository: ("octo", "hello"),
                    purpose: Purpose::Task(TaskAction::CreateIssue),
                },
                "ok ccplant-system/newer-secret (newer)",
            ),
            (
                "no credential at all",
                Request {
                    source: GitHubSource::Default,
                    namespace: "b",
                    namespace_labels: Some(&none),
                    repository: ("octo", "hello"),
                    purpose: Purpose::Task(TaskAction::CreateIssue),
                },
                "NoCredential: no default GitHubCredential selects namespace b: set spec.github.credentialName or spec.github.secretRef",
            ),
            (
                "namespace not selected",
                Request {
                    source: GitHubSource::Credential("platform"),
                    namespace: "b",
                    namespace_labels: Some(&none),
                    repository: ("octo", "hello"),
                    purpose: Purpose::Task(TaskAction::CreateIssue),
                },
                "NotAllowed: GitHubCredential platform does not allow namespace b: its namespaceSelector does not select it",
            ),
            (
                "{} selects every namespace",
                Request {
                    source: GitHubSource::Credential("everyone"),
                    namespace: "b",
                    namespace_labels: Some(&none),
                    repository: ("public", "docs"),
                    purpose: Purpose::Task(TaskAction::Comment),
                },
                "ok ccplant-system/everyone-secret (everyone)",
            ),
            (
                "repository not matched",
                Request {
                    source: GitHubSource::Credential("merger"),
                    namespace: "a",
                    namespace_labels: Some(&team_a),
                    repository: ("octo", "other"),
                    purpose: Purpose::Task(TaskAction::ApproveAndMerge),
                },
                "NotAllowed: GitHubCredential merger does not allow repository octo/other: its repositories are octo/hello",
            ),
            (
                "action not listed (ApproveAndMerge is not a default)",
                Request {
                    source: GitHubSource::Credential("platform"),
                    namespace: "a",
                    namespace_labels: Some(&team_a),
                    repository: ("octo", "hello"),
                    purpose: Purpose::Task(TaskAction::ApproveAndMerge),
                },
                "NotAllowed: GitHubCredential platform does not allow ApproveAndMerge: its actions are CreateIssue, CreatePullRequest, Comment",
            ),
            (
                "action listed",
                Request {
                    source: GitHubSource::Credential("merger"),
                    namespace: "a",
                    namespace_labels: Some(&team_a),
                    repository: ("OCTO", "Hello"),
                    purpose: Purpose::Task(TaskAction::ApproveAndMerge),
                },
                "ok ccplant-system/merger-secret (merger)",
            ),
            (
                "permission above the ceiling",
                Request {
                    source: GitHubSource::Credential("platform"),
                    namespace: "a",
                    namespace_labels: Some(&team_a),
                    repository: ("octo", "hello"),
                    purpose: Purpose::Session(&write_workflows),
                },
                "NotAllowed: GitHubCredential platform does not allow the session permission(s) workflows:write: its sessionPermissions are contents:write, issues:write, pull_requests:write",
            ),
            (
                "write above a read ceiling",
                Request {
                    source: GitHubSource::Credential("merger"),
                    namespace: "a",
                    namespace_labels: Some(&team_a),
                    repository: ("octo", "hello"),
                    purpose: Purpose::Session(&default_perms),
                },
                "NotAllowed: GitHubCredential merger does not allow the session permission(s) contents:write, issues:write, pull_requests:write: its sessionPermissions are contents:read",
            ),
            (
                "a subset of the ceiling",
                Request {
                    source: GitHubSource::Credential("merger"),
                    namespace: "a",
                    namespace_labels: Some(&team_a),
                    repository: ("octo", "hello"),
                    purpose: Purpose::Session(&read_contents),
                },
                "ok ccplant-system/merger-secret (merger)",
            ),
            (
                "a named credential that does not exist: retried",
                Request {
                    source: GitHubSource::Credential("gone"),
                    namespace: "a",
                    namespace_labels: Some(&team_a),
                    repository: ("octo", "hello"),
                    purpose: Purpose::Task(TaskAction::CreateIssue),
                },
                "NotFound: GitHubCredential gone does not exist",
            ),
            (
                "namespace not cached yet: retried",
                Request {
                    source: GitHubSource::Default,
                    namespace: "new",
                    namespace_labels: None,
                    repository: ("octo", "hello"),
                    purpose: Purpose::Task(TaskAction::CreateIssue),
                },
                "NotFound: namespace new is not in the operator's cache yet",
            ),
        ];
        for (name, request, want) in cases {
            let got = match resolve(&request, &all) {
                Ok(g) => format!(
                    "ok {} ({})",
                    g.secret,
                    g.credential.as_deref().unwrap_or("own")
                ),
                Err(Refusal::NotAllowed(m)) => format!("NotAllowed: {m}"),
                Err(Refusal::NotFound(m)) => format!("NotFound: {m}"),
                Err(Refusal::NoCredential(m)) => format!("NoCredential: {m}"),
            };
            assert_eq!(got, want, "{name}");
        }
    }
}
