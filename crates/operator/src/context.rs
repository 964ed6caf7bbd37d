//! State shared by the reconcilers of one operator process.

use crate::credentials::GitHubClients;
use ccplant_api::GitHubTask;
use futures::channel::mpsc::UnboundedSender;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// A GitHubTask controller's cache and the trigger of its dependents' reconciles.
type TaskScope = (Store<GitHubTask>, UnboundedSender<ObjectRef<GitHubTask>>);

pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub github: GitHubClients,
    pub default_github_owner: Option<String>,
    pub default_github_secret: Option<String>,
    pub operator_namespace: String,
    pub task_concurrency: u16,
    /// Whether this replica may reconcile (leader election).
    pub leadership: crate::leader::Leadership,
    /// Tokens the operator issued to sessions (never logged).
    pub session_tokens: crate::agent_session::credentials::SessionTokens,
    /// One task cache (and dependents trigger) per watched scope (`--namespaces`).
    tasks: Mutex<Vec<TaskScope>>,
    /// Per object uid: resourceVersions our own later status writes superseded.
    superseded: Mutex<HashMap<String, Superseded>>,
}

#[derive(Default)]
struct Superseded {
    versions: HashSet<String>,
    latest: String,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("operator_namespace", &self.operator_namespace)
            .finish_non_exhaustive()
    }
}

impl Context {
    pub fn new(
        client: Client,
        recorder: Recorder,
        github: GitHubClients,
        leadership: crate::leader::Leadership,
        config: &crate::config::RunArgs,
    ) -> Arc<Self> {
        Arc::new(Self {
            client,
            recorder,
            github,
            default_github_owner: config.default_github_owner.clone(),
            default_github_secret: config.default_github_secret.clone(),
            operator_namespace: config.operator_namespace.clone(),
            task_concurrency: config.task_concurrency,
            leadership,
            session_tokens: Default::default(),
            tasks: Mutex::new(Vec::new()),
            superseded: Mutex::new(HashMap::new()),
        })
    }

    pub fn set_task_store(
        &self,
        store: Store<GitHubTask>,
        dependents: UnboundedSender<ObjectRef<GitHubTask>>,
    ) {
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.push((store, dependents));
        }
    }

    /// A GitHubTask from the controllers' caches.
    pub fn find_task(&self, namespace: &str, name: &str) -> Option<Arc<GitHubTask>> {
        let tasks = self.tasks.lock().ok()?;
        let key = ObjectRef::new(name).within(namespace);
        tasks.iter().find_map(|(store, _)| store.get(&key))
    }

    /// Reconciles the tasks waiting for `task` (approveAndMerge.fromTask) now that it succeeded.
    pub fn notify_dependents(&self, task: &GitHubTask) {
        let Ok(tasks) = self.tasks.lock() else { return };
        let ns = task.namespace();
        let name = task.name_any();
        for (store, tx) in tasks.iter() {
            for t in store.state() {
                let from = t
                    .spec
                    .approve_and_merge
                    .as_ref()
                    .and_then(|a| a.from_task.as_deref());
                if t.namespace() == ns && from == Some(name.as_str()) {
                    let _ = tx.unbounded_send(ObjectRef::from_obj(&*t));
                }
            }
        }
    }

    /// Notes that our write turned `before` into `after`: until the cache shows `after` (or a
    /// later version), a reconcile of `before` would act on stale status.
    pub fn record_write<K: kube::Resource>(&self, before: &K, after: &K) {
        let (Some(uid), Some(old), Some(new)) = (
            before.uid(),
            before.resource_version(),
            after.resource_version(),
        ) else {
            return;
        };
        if old == new {
            // Nothing changed on the server: the cached version is current.
            return;
        }
        if let Ok(mut map) = self.superseded.lock() {
            let entry = map.entry(uid).or_default();
            entry.versions.insert(old);
            if !entry.latest.is_empty() {
                let previous = std::mem::take(&mut entry.latest);
                entry.versions.insert(previous);
            }
            entry.latest = new;
        }
    }

    /// True when the cached object predates our own latest status write.
    pub fn is_stale<K: kube::Resource>(&self, obj: &K) -> bool {
        let (Some(uid), Some(rv)) = (obj.uid(), obj.resource_version()) else {
            return false;
        };
        let Ok(mut map) = self.superseded.lock() else {
            return false;
        };
        let Some(entry) = map.get(&uid) else {
            return false;
        };
        if entry.versions.contains(&rv) {
            return true;
        }
        // The cache caught up (or someone else wrote since): forget.
        map.remove(&uid);
        false
    }
}
