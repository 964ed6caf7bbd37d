//! What the controller remembers of the sessions' children: one small summary per child.
//!
//! The reconciler asks four questions of a child: does it exist, is it being deleted, is the
//! Service headless, is the PVC bound, and what does the pod say ([`PodState`] and its IP). A
//! cache of whole objects answers them at about 1.1 KB per Service or NetworkPolicy and 2.4 KB
//! per (already cut-down) Pod, most of it metadata and cache keys; 10 000 sessions made that
//! 47 MB. Each child watch here keeps only its answers, keyed by `namespace/name`, and turns
//! every event into a reconcile request for the owning session.
//!
//! A relist (the watch fell too far behind) builds a fresh index next to the current one and
//! swaps it in once complete, as kube's reflector does, then triggers the sessions it listed,
//! so every reconcile reads the complete index. Each index reports its first complete list on a watch channel; the
//! controller reconciles nothing before all four completed (else existing children would look
//! missing and be created again).

use super::cached::{CachedClaim, CachedPod, CachedPolicy, CachedService};
use super::controller::SessionObject;
use super::pod_state::{PodState, observe_pod};
use ccplant_api::AgentSession;
use futures::{Stream, StreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tracing::warn;

/// How long a child this process wrote counts as present before its watch showed it.
pub const EXPECTATION_TTL: Duration = Duration::from_secs(30);

/// Children written and not seen by the watch yet, with what they are assumed to be.
type Expected<S> = Arc<Mutex<HashMap<String, (S, Instant)>>>;

/// One kind of child: summaries by `namespace/name`.
#[derive(Debug)]
pub struct Index<S> {
    entries: Arc<RwLock<HashMap<String, S>>>,
    /// Written by this process, not in `entries` yet (the watch lags the write): a reconcile
    /// in between takes them as present instead of writing them again (kube-controller-manager's
    /// "expectations"). Cleared by the child's next watch event, a relist, or the TTL.
    expected: Expected<S>,
    synced: watch::Receiver<bool>,
}

impl<S> Clone for Index<S> {
    fn clone(&self) -> Self {
        Index {
            entries: self.entries.clone(),
            expected: self.expected.clone(),
            synced: self.synced.clone(),
        }
    }
}

impl<S: Clone> Index<S> {
    /// The child's summary: as last watched, else as expected after this process wrote it.
    pub fn get(&self, namespace: &str, name: &str) -> Option<S> {
        let key = key(namespace, name);
        let entries = self
            .entries
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(s) = entries.get(&key) {
            return Some(s.clone());
        }
        drop(entries);
        let mut expected = lock(&self.expected);
        match expected.get(&key) {
            Some((s, at)) if at.elapsed() < EXPECTATION_TTL => Some(s.clone()),
            Some(_) => {
                expected.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Notes that this process wrote `namespace/name`, assumed to be `summary` until its watch
    /// shows it.
    pub fn expect(&self, namespace: &str, name: &str, summary: S) {
        lock(&self.expected).insert(key(namespace, name), (summary, Instant::now()));
    }

    /// `true` once the first list completed (for the controller's start and shutdown).
    pub fn synced(&self) -> watch::Receiver<bool> {
        self.synced.clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// Whose child an object is, as its metadata says: the session its controller ownerReference
/// names (by uid), and its own uid for delete preconditions. An object with a child's name that
/// is not controlled by that session (planted, or another tool's) is never written, deleted or
/// dialled ([`Control::is_of`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Control {
    /// A hash of the uid of the AgentSession that controls the object; 0: none does.
    pub session: u64,
    /// The object's own uid; `None` for a child this process just created and has not seen yet.
    pub uid: Option<Arc<str>>,
}

impl Control {
    /// What `meta` says.
    pub fn of(meta: &ObjectMeta) -> Self {
        let session = meta
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true) && is_session_kind(o))
            .map_or(0, |o| uid_hash(&o.uid));
        Control {
            session,
            uid: meta.uid.as_deref().map(Arc::from),
        }
    }

    /// A child this process just created for the session with `session_uid`.
    pub fn created_for(session_uid: &str) -> Self {
        Control {
            session: uid_hash(session_uid),
            uid: None,
        }
    }

    /// Whether the object is controlled by the session with `session_uid`.
    pub fn is_of(&self, session_uid: &str) -> bool {
        self.session != 0 && self.session == uid_hash(session_uid)
    }
}

/// A hash of a uid (never 0 for a non-empty uid, so 0 can mean "none").
pub fn uid_hash(uid: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    if uid.is_empty() {
        return 0;
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    uid.hash(&mut h);
    h.finish().max(1)
}

fn is_session_kind(o: &OwnerReference) -> bool {
    o.kind == AgentSession::kind(&()) && o.api_version == AgentSession::api_version(&())
}

/// What the session's pod says, and where it listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodSummary {
    /// [`PodState::Terminating`] while it is being deleted.
    pub state: PodState,
    pub ip: Option<String>,
    /// A hash of the pod's uid: tells a recreated pod of the same name apart.
    pub uid: u64,
    /// Outbox entries earlier pods of the session received (the pod's
    /// [`super::conversation::DELIVERED_BEFORE_ANNOTATION`]).
    pub delivered_before: u32,
    pub control: Control,
}

impl PodSummary {
    pub fn terminating(&self) -> bool {
        self.state == PodState::Terminating
    }
}

pub fn summarize_pod(pod: &CachedPod) -> PodSummary {
    PodSummary {
        state: observe_pod(Some(pod)),
        ip: pod.status.as_ref().and_then(|s| s.pod_ip.clone()),
        uid: {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            pod.metadata.uid.hash(&mut h);
            h.finish()
        },
        delivered_before: pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(super::conversation::DELIVERED_BEFORE_ANNOTATION))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        control: Control::of(&pod.metadata),
    }
}

/// A Service: whether it is headless (a clusterIP, once allocated, cannot be taken back).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSummary {
    pub headless: bool,
    pub control: Control,
}

pub fn summarize_service(service: &CachedService) -> ServiceSummary {
    let ip = service.spec.as_ref().and_then(|s| s.cluster_ip.as_deref());
    ServiceSummary {
        headless: ip.is_none_or(|ip| ip == super::build::HEADLESS),
        control: Control::of(&service.metadata),
    }
}

/// A NetworkPolicy or PVC: whether it is being deleted, and (PVC) whether it is bound.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Presence {
    pub deleting: bool,
    pub bound: bool,
    pub control: Control,
}

pub fn summarize_policy(policy: &CachedPolicy) -> Presence {
    Presence {
        deleting: policy.metadata.deletion_timestamp.is_some(),
        bound: false,
        control: Control::of(&policy.metadata),
    }
}

pub fn summarize_claim(claim: &CachedClaim) -> Presence {
    Presence {
        deleting: claim.metadata.deletion_timestamp.is_some(),
        bound: claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound"),
        control: Control::of(&claim.metadata),
    }
}

/// The reference a reconcile request for `session` carries.
pub fn session_ref(session: &AgentSession) -> ObjectRef<SessionObject> {
    let r = ObjectRef::new(&session.name_any());
    match session.namespace() {
        Some(ns) => r.within(&ns),
        None => r,
    }
}

/// The session controlling `obj` (its controller owner reference): an object that merely
/// lists a session among its owners, or carries a session's labels, triggers nothing.
fn owners<K: Resource>(obj: &K) -> Vec<ObjectRef<SessionObject>> {
    let namespace = obj.namespace();
    obj.owner_references()
        .iter()
        .filter(|o| o.controller == Some(true) && is_session_kind(o))
        .map(|o| {
            let r = ObjectRef::new(&o.name);
            match &namespace {
                Some(ns) => r.within(ns),
                None => r,
            }
        })
        .collect()
}

/// A relist in progress: the fresh summaries and the sessions to trigger once it is complete.
type Relist<S> = (HashMap<String, S>, Vec<ObjectRef<SessionObject>>);

/// A watch of one kind of child keeping `index` current; yields the owning session of every
/// changed child (the controller's trigger).
pub fn watch_children<K, S>(
    api: Api<K>,
    config: watcher::Config,
    summarize: fn(&K) -> S,
) -> (
    Index<S>,
    impl Stream<Item = ObjectRef<SessionObject>> + Send + 'static,
)
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
    S: Send + Sync + 'static,
{
    let (synced_tx, synced) = watch::channel(false);
    let index = Index {
        entries: Arc::new(RwLock::new(HashMap::new())),
        expected: Arc::new(Mutex::new(HashMap::new())),
        synced,
    };
    let entries = index.entries.clone();
    let expected = index.expected.clone();
    // A relist's summaries and the sessions they belong to, held until the list is complete.
    let mut relist: Option<Relist<S>> = None;
    let kind = K::kind(&()).into_owned();
    let triggers = watcher(api, config)
        .default_backoff()
        .map(move |event| {
            let write = || {
                entries
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
            };
            let key_of = |obj: &K| key(&obj.namespace().unwrap_or_default(), &obj.name_any());
            match event {
                Ok(watcher::Event::Init) => {
                    relist = Some(Default::default());
                    Vec::new()
                }
                Ok(watcher::Event::InitApply(obj)) => {
                    let (fresh, owners_of) = relist.get_or_insert_with(Default::default);
                    fresh.insert(key_of(&obj), summarize(&obj));
                    owners_of.extend(owners(&obj));
                    Vec::new()
                }
                // The sessions are triggered once the fresh index is in place: triggered
                // earlier, a reconcile would read the old one and nothing would wake it again.
                Ok(watcher::Event::InitDone) => {
                    let (fresh, owners_of) = relist.take().unwrap_or_default();
                    *write() = fresh;
                    lock(&expected).clear();
                    synced_tx.send_replace(true);
                    owners_of
                }
                Ok(watcher::Event::Apply(obj)) => {
                    let key = key_of(&obj);
                    lock(&expected).remove(&key);
                    write().insert(key, summarize(&obj));
                    owners(&obj)
                }
                Ok(watcher::Event::Delete(obj)) => {
                    let key = key_of(&obj);
                    lock(&expected).remove(&key);
                    write().remove(&key);
                    owners(&obj)
                }
                Err(e) => {
                    // Retried with backoff by the watcher; the index keeps its last state.
                    warn!(kind = %kind, error = %e, "watching children failed");
                    Vec::new()
                }
            }
        })
        .flat_map(futures::stream::iter);
    (index, triggers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn child(kind: &str, name: &str, owner: &str, extra: serde_json::Value) -> serde_json::Value {
        let mut v = json!({
            "metadata": {"name": name, "namespace": "team", "uid": "child-uid",
                "ownerReferences": [
                    {"apiVersion": "ccplant.io/v1alpha1", "kind": "AgentSession",
                        "name": owner, "uid": "u", "controller": true},
                    {"apiVersion": "ccplant.io/v1alpha1", "kind": "AgentSession",
                        "name": "not-the-controller", "uid": "n"},
                    {"apiVersion": "v1", "kind": "ConfigMap", "name": "other", "uid": "c"}]},
        });
        v["kind"] = json!(kind);
        if let (Some(v), Some(extra)) = (v.as_object_mut(), extra.as_object()) {
            v.extend(extra.clone());
        }
        v
    }

    #[test]
    fn summaries_answer_the_reconcilers_questions() {
        let mut planted: CachedPod =
            serde_json::from_value(child("Pod", "s", "s", json!({}))).unwrap();
        planted.metadata.owner_references = None;
        assert_eq!(Control::of(&planted.metadata).session, 0);
        assert!(!Control::of(&planted.metadata).is_of(""));
        assert!(owners(&planted).is_empty());
        let pod: CachedPod = serde_json::from_value(child(
            "Pod",
            "s",
            "s",
            json!({"status": {"phase": "Running", "podIP": "10.0.0.7",
                "conditions": [{"type": "Ready", "status": "True"}]}}),
        ))
        .unwrap();
        assert_eq!(
            summarize_pod(&pod),
            PodSummary {
                state: PodState::Running,
                ip: Some("10.0.0.7".into()),
                uid: summarize_pod(&pod).uid,
                delivered_before: 0,
                control: Control {
                    session: uid_hash("u"),
                    uid: Some("child-uid".into()),
                },
            }
        );
        assert!(summarize_pod(&pod).control.is_of("u"));
        assert!(!summarize_pod(&pod).control.is_of("n"));
        // Only the controller is triggered.
        assert_eq!(owners(&pod), vec![ObjectRef::new("s").within("team")]);

        let service = |spec: serde_json::Value| -> CachedService {
            serde_json::from_value(child("Service", "s", "s", json!({ "spec": spec }))).unwrap()
        };
        assert!(summarize_service(&service(json!({"clusterIP": "None"}))).headless);
        assert!(!summarize_service(&service(json!({"clusterIP": "10.96.0.7"}))).headless);

        let claim: CachedClaim = serde_json::from_value(child(
            "PersistentVolumeClaim",
            "s-workspace",
            "s",
            json!({"status": {"phase": "Bound"}}),
        ))
        .unwrap();
        assert_eq!(
            summarize_claim(&claim),
            Presence {
                deleting: false,
                bound: true,
                control: Control {
                    session: uid_hash("u"),
                    uid: Some("child-uid".into()),
                },
            }
        );
        let mut policy: CachedPolicy =
            serde_json::from_value(child("NetworkPolicy", "s", "s", json!({}))).unwrap();
        assert!(!summarize_policy(&policy).deleting);
        policy.metadata.deletion_timestamp = Some(crate::time::to_k8s(chrono::Utc::now()));
        assert!(summarize_policy(&policy).deleting);
    }

    #[test]
    fn a_child_written_counts_as_present_until_its_watch_shows_it() {
        let (_tx, synced) = watch::channel(true);
        let index = Index::<Presence> {
            entries: Arc::new(RwLock::new(HashMap::new())),
            expected: Arc::new(Mutex::new(HashMap::new())),
            synced,
        };
        assert_eq!(index.get("team", "s"), None);
        let assumed = Presence {
            deleting: false,
            bound: false,
            control: Control::created_for("u"),
        };
        index.expect("team", "s", assumed.clone());
        assert_eq!(index.get("team", "s"), Some(assumed.clone()));
        assert_eq!(index.get("team", "other"), None);
        // What the watch shows wins.
        let seen = Presence {
            deleting: false,
            bound: true,
            control: Control::created_for("u"),
        };
        index
            .entries
            .write()
            .unwrap()
            .insert(key("team", "s"), seen.clone());
        assert_eq!(index.get("team", "s"), Some(seen));
        // Expired: no longer assumed.
        index.entries.write().unwrap().clear();
        lock(&index.expected).insert(
            key("team", "s"),
            (
                assumed,
                Instant::now()
                    .checked_sub(EXPECTATION_TTL + Duration::from_secs(1))
                    .unwrap(),
            ),
        );
        assert_eq!(index.get("team", "s"), None);
    }

    #[test]
    fn summaries_are_small() {
        // 112 bytes: the state, the IP, the uid hash, the delivered-before count and who
        // controls it (a hash and the pod's own uid).
        assert!(
            std::mem::size_of::<PodSummary>() <= 112,
            "{}",
            std::mem::size_of::<PodSummary>()
        );
        assert!(
            std::mem::size_of::<Presence>() <= 32,
            "{}",
            std::mem::size_of::<Presence>()
        );
    }
}
