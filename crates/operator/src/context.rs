//! State shared by the reconcilers of one operator process.

use crate::credentials::GitHubClients;
use crate::events::Recorder;
use crate::guard::Guarded;
use crate::metrics::Metrics;
use ccplant_api::{AgentSession, AgentSessionPhase, GitHubTask, GitHubTaskPhase};
use futures::channel::mpsc::UnboundedSender;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// A GitHubTask controller's cache and the trigger of its dependents' reconciles.
type TaskScope = (
    Store<Guarded<GitHubTask>>,
    UnboundedSender<ObjectRef<Guarded<GitHubTask>>>,
);

/// Reconciles in flight at once, over every namespace scope of the process: what
/// `--session-concurrency` and `--task-concurrency` say.
#[derive(Debug)]
pub struct Limits {
    sessions: Arc<tokio::sync::Semaphore>,
    tasks: Arc<tokio::sync::Semaphore>,
    session_concurrency: u16,
    task_concurrency: u16,
}

impl Limits {
    pub fn new(session_concurrency: u16, task_concurrency: u16) -> Self {
        let permits = |n: u16| Arc::new(tokio::sync::Semaphore::new(usize::from(n.max(1))));
        Self {
            sessions: permits(session_concurrency),
            tasks: permits(task_concurrency),
            session_concurrency,
            task_concurrency,
        }
    }

    /// Each scope's controller may run this many (the permits keep the total).
    pub fn session_concurrency(&self) -> u16 {
        self.session_concurrency
    }

    pub fn task_concurrency(&self) -> u16 {
        self.task_concurrency
    }

    /// A permit to reconcile a session, held for the reconcile.
    pub async fn session_permit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.sessions.clone().acquire_owned().await.ok()
    }

    /// A permit to reconcile a task, held for the reconcile.
    pub async fn task_permit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.tasks.clone().acquire_owned().await.ok()
    }
}

pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub github: GitHubClients,
    /// Reconciles in flight, over all scopes.
    pub limits: Limits,
    /// Whether this replica may reconcile (leader election).
    pub leadership: crate::leader::Leadership,
    pub metrics: Arc<Metrics>,
    /// The GitHub access policy's caches (GitHubCredentials, Namespace labels).
    pub policy: crate::policy::PolicyCaches,
    /// What fills `policy`, until `run` starts it.
    policy_feeds: Mutex<Option<crate::policy::PolicyFeeds>>,
    /// Tokens the operator issued to sessions (never logged).
    pub session_tokens: crate::agent_session::credentials::SessionTokens,
    /// One task cache (and dependents trigger) per watched scope (`--namespaces`).
    tasks: Mutex<Vec<TaskScope>>,
    /// One AgentSession cache per watched scope (shared by both controllers).
    sessions: Mutex<Vec<Store<Guarded<AgentSession>>>>,
    /// Whether each registered cache has completed its initial list (for `/readyz`).
    caches: Mutex<Vec<CacheSync>>,
    /// Per object uid: resourceVersions our own later status writes superseded.
    superseded: Mutex<HashMap<String, Superseded>>,
}

/// One controller cache, as `/readyz` sees it: true once its initial list completed.
struct CacheSync {
    kind: &'static str,
    synced: watch::Receiver<bool>,
}

#[derive(Default)]
struct Superseded {
    versions: HashSet<String>,
    latest: String,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").finish_non_exhaustive()
    }
}

impl Context {
    pub fn new(
        client: Client,
        recorder: Recorder,
        github: GitHubClients,
        leadership: crate::leader::Leadership,
        metrics: Arc<Metrics>,
        config: &crate::config::RunArgs,
    ) -> Arc<Self> {
        let (policy, feeds) = crate::policy::PolicyCaches::new();
        Arc::new(Self {
            policy,
            policy_feeds: Mutex::new(Some(feeds)),
            client,
            recorder,
            github,
            limits: Limits::new(config.session_concurrency, config.task_concurrency),
            leadership,
            metrics,
            session_tokens: Default::default(),
            tasks: Mutex::new(Vec::new()),
            sessions: Mutex::new(Vec::new()),
            caches: Mutex::new(Vec::new()),
            superseded: Mutex::new(HashMap::new()),
        })
    }

    /// The feeds of [`Context::policy`] (once).
    pub fn take_policy_feeds(&self) -> Option<crate::policy::PolicyFeeds> {
        self.policy_feeds.lock().ok()?.take()
    }

    pub fn set_task_store(
        &self,
        store: Store<Guarded<GitHubTask>>,
        dependents: UnboundedSender<ObjectRef<Guarded<GitHubTask>>>,
    ) {
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.push((store, dependents));
        }
    }

    /// Registers a scope's AgentSession cache (the `ccplant_sessions` gauge, the tasks'
    /// `fromSession`).
    pub fn set_session_store(&self, store: Store<Guarded<AgentSession>>) {
        if let Ok(mut sessions) = self.sessions.lock() {
            sessions.push(store);
        }
    }

    /// Registers a controller's main cache for `/readyz`; its watch ([`synced_reflector`])
    /// sends `true` once the initial list is complete.
    pub fn register_cache(&self, kind: &'static str) -> watch::Sender<bool> {
        let (synced, rx) = watch::channel(false);
        if let Ok(mut caches) = self.caches.lock() {
            caches.push(CacheSync { kind, synced: rx });
        }
        synced
    }

    /// `Ok` when the caches of both controllers are registered and complete; else what is not.
    pub fn readiness(&self) -> Result<(), String> {
        let caches = self
            .caches
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut missing = Vec::new();
        for kind in ["AgentSession", "GitHubTask"] {
            let of_kind: Vec<&CacheSync> = caches.iter().filter(|c| c.kind == kind).collect();
            let unsynced = of_kind.iter().filter(|c| !*c.synced.borrow()).count();
            if of_kind.is_empty() {
                missing.push(format!("{kind} controller not started"));
            } else if unsynced > 0 {
                missing.push(format!(
                    "{kind} cache not synced ({unsynced} of {} scopes)",
                    of_kind.len()
                ));
            }
        }
        if !self.policy.is_ready() {
            missing.push("GitHubCredential and Namespace caches not synced".to_string());
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(missing.join("; "))
        }
    }

    /// The phase of every AgentSession in the controllers' caches.
    pub fn session_phases(&self) -> Vec<Option<AgentSessionPhase>> {
        let Ok(sessions) = self.sessions.lock() else {
            return Vec::new();
        };
        sessions
            .iter()
            .flat_map(|store| store.state())
            .map(|s| s.status().and_then(|st| st.phase))
            .collect()
    }

    /// The phase of every GitHubTask in the controllers' caches.
    pub fn task_phases(&self) -> Vec<Option<GitHubTaskPhase>> {
        let Ok(tasks) = self.tasks.lock() else {
            return Vec::new();
        };
        tasks
            .iter()
            .flat_map(|(store, _)| store.state())
            .map(|t| t.status().and_then(|st| st.phase))
            .collect()
    }

    /// The `/metrics` exposition, phase gauges counted from the caches now.
    pub fn render_metrics(&self) -> String {
        self.metrics
            .render(self.session_phases(), self.task_phases())
    }

    /// A GitHubTask from the controllers' caches.
    pub fn find_task(&self, namespace: &str, name: &str) -> Option<Arc<Guarded<GitHubTask>>> {
        let tasks = self.tasks.lock().ok()?;
        let key = ObjectRef::new(name).within(namespace);
        tasks.iter().find_map(|(store, _)| store.get(&key))
    }

    /// An AgentSession from the scopes' caches.
    pub fn find_session(&self, namespace: &str, name: &str) -> Option<Arc<Guarded<AgentSession>>> {
        let sessions = self.sessions.lock().ok()?;
        let key = ObjectRef::new(name).within(namespace);
        sessions.iter().find_map(|store| store.get(&key))
    }

    /// Reconciles the tasks waiting for `task` (approveAndMerge.fromTask) now that it succeeded.
    pub fn notify_dependents(&self, task: &GitHubTask) {
        let Ok(tasks) = self.tasks.lock() else { return };
        let ns = task.namespace();
        let name = task.name_any();
        for (store, tx) in tasks.iter() {
            for t in store.state() {
                let from = t
                    .valid()
                    .and_then(|t| t.spec.approve_and_merge.as_ref())
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

/// Objects per page of a watch's initial list (and of a relist).
const LIST_PAGE: u32 = 100;

/// How every cache lists and watches: paged lists of [`LIST_PAGE`] objects. A list "from any
/// version" (`resourceVersion=0`) would be cheaper for the apiserver, but it ignores the page
/// size, so an operator starting over 10 000 sessions would hold one response of every pod at
/// once (16 KB each before trimming: about 160 MB) just to keep 1 KB of each.
pub fn watch_config() -> kube::runtime::watcher::Config {
    kube::runtime::watcher::Config::default().page_size(LIST_PAGE)
}

/// `kubectl apply`'s copy of the whole object, in an annotation.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// What every cache drops: managedFields and `kubectl apply`'s last-applied annotation are never
/// read and would double the cached size of each object.
pub fn trim_meta<K: kube::Resource>(obj: &mut K) {
    let meta = obj.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
}

/// A controller's primary watch: the cache, the objects as `Controller::for_stream` takes them,
/// and a signal after every complete (re)list.
pub struct PrimaryWatch<K: kube::Resource<DynamicType = ()> + 'static> {
    pub store: Store<K>,
    pub objects: futures::stream::BoxStream<'static, Result<K, kube::runtime::watcher::Error>>,
    /// Fires each time a (re)list completed; the controller re-queues every cached object on
    /// it (`reconcile_all_on`). During a relist the cache keeps serving the old objects and
    /// swaps in the new list only once it is complete, while kube's controller already pops the
    /// listed objects' requests: one absent from the old cache (created while the watch was
    /// down, e.g. across an apiserver restart) is looked up, not found, and its request
    /// dropped for good. Re-queueing after the swap reconciles it; the others find nothing to do.
    pub relisted: futures::channel::mpsc::UnboundedReceiver<()>,
}

impl<K: kube::Resource<DynamicType = ()> + 'static> std::fmt::Debug for PrimaryWatch<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrimaryWatch").finish_non_exhaustive()
    }
}

/// Logs what a controller's run reports besides reconciles (those are logged by the error
/// policies): its primary watch failing (retried with backoff).
pub fn log_watch_error<K, E>(
    result: Result<
        (ObjectRef<K>, kube::runtime::controller::Action),
        kube::runtime::controller::Error<E, kube::runtime::watcher::Error>,
    >,
) -> futures::future::Ready<()>
where
    K: kube::Resource,
    E: std::error::Error + 'static,
{
    if let Err(kube::runtime::controller::Error::QueueError(e)) = result {
        tracing::warn!(error = %e, "watching failed; retrying");
    }
    futures::future::ready(())
}

/// The primary watch of a controller (objects cut down by [`trim_meta`]); `synced` turns `true`
/// once its initial list is complete — for `/readyz` and for [`crate::shutdown::drive`], which
/// must not rely on `Store::wait_until_ready`: its single wake-up belongs to kube's applier.
pub fn primary_watch<K>(api: kube::Api<K>, synced: watch::Sender<bool>) -> PrimaryWatch<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, reflector, watcher};
    let (store, writer) = reflector::store();
    let (relist, relisted) = futures::channel::mpsc::unbounded();
    let objects = watcher(api, watch_config())
        .default_backoff()
        .modify(trim_meta)
        .reflect(writer)
        // After `reflect`: the cache holds the whole list when these fire.
        .inspect(move |event| {
            if let Ok(watcher::Event::InitDone) = event {
                synced.send_replace(true);
                let _ = relist.unbounded_send(());
            }
        })
        .applied_objects()
        .boxed();
    PrimaryWatch {
        store,
        objects,
        relisted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use kube::runtime::{reflector, watcher};
    use std::time::Duration;

    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        run: crate::config::RunArgs,
    }

    fn context() -> Arc<Context> {
        // Never connects: these tests use no API call.
        let config = kube::Config::new("http://127.0.0.1:1".parse().unwrap());
        let client = Client::try_from(config).unwrap();
        let recorder = Recorder::new(client.clone(), "test", "test");
        Context::new(
            client,
            recorder,
            GitHubClients::new("http://127.0.0.1:1", Duration::from_secs(1), None),
            crate::leader::Leadership::always(),
            Metrics::new(),
            &Args::parse_from(["test"]).run,
        )
    }

    #[tokio::test]
    async fn ready_once_every_kind_has_registered_and_synced_caches() {
        let ctx = context();
        assert_eq!(
            ctx.readiness(),
            Err("AgentSession controller not started; GitHubTask controller not started; GitHubCredential and Namespace caches not synced".into())
        );
        ctx.take_policy_feeds().unwrap().mark_synced();
        let sessions = ctx.register_cache("AgentSession");
        let tasks_a = ctx.register_cache("GitHubTask");
        let tasks_b = ctx.register_cache("GitHubTask");
        assert_eq!(
            ctx.readiness(),
            Err(
                "AgentSession cache not synced (1 of 1 scopes); GitHubTask cache not synced (2 of 2 scopes)"
                    .into()
            )
        );
        sessions.send_replace(true);
        tasks_a.send_replace(true);
        assert_eq!(
            ctx.readiness(),
            Err("GitHubTask cache not synced (1 of 2 scopes)".into())
        );
        tasks_b.send_replace(true);
        assert_eq!(ctx.readiness(), Ok(()));
    }

    #[tokio::test]
    async fn phases_are_read_from_the_registered_caches() {
        let ctx = context();
        let (sessions, mut writer) = reflector::store::<Guarded<AgentSession>>();
        ctx.set_session_store(sessions);
        let session = |name: &str, phase: Option<AgentSessionPhase>| {
            let mut s: AgentSession = serde_json::from_value(serde_json::json!({
                "apiVersion": "ccplant.io/v1alpha1", "kind": "AgentSession",
                "metadata": {"name": name, "namespace": "team"},
                "spec": {"repository": {"name": "octo/hello"}},
            }))
            .unwrap();
            s.status = phase.map(|p| ccplant_api::AgentSessionStatus {
                phase: Some(p),
                ..Default::default()
            });
            Guarded::Valid(s)
        };
        writer.apply_watcher_event(&watcher::Event::Init);
        writer.apply_watcher_event(&watcher::Event::InitApply(session(
            "a",
            Some(AgentSessionPhase::Running),
        )));
        writer.apply_watcher_event(&watcher::Event::InitApply(session("b", None)));
        writer.apply_watcher_event(&watcher::Event::InitDone);
        let mut phases = ctx.session_phases();
        phases.sort_by_key(|p| p.map(AgentSessionPhase::as_str));
        assert_eq!(phases, [None, Some(AgentSessionPhase::Running)]);
        assert!(
            ctx.render_metrics()
                .contains("ccplant_sessions{phase=\"Pending\"} 1\n")
        );
        assert_eq!(ctx.task_phases(), []);
    }
}
