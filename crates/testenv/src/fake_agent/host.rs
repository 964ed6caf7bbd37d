//! The agent runtime of a namespace's session pods: a [`FakeAgent`] at each pod's IP and agent
//! port while the pod lives.

use super::{FakeAgent, Script};
use anyhow::{Context, bail};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Label of a session's pod; its value is the session's name.
pub const SESSION_LABEL: &str = "ccplant.io/session";
/// agentapi's port when the pod has no container port named `agent`.
pub const DEFAULT_AGENT_PORT: u16 = 3284;
const AGENT_PORT_NAME: &str = "agent";
/// How long binding a pod's address is retried while it is still in use (a recreated pod may
/// get the IP of the pod it replaces, whose agent is still stopping).
const BIND_RETRY: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Sessions {
    /// The agents serving now, by pod UID, with their session.
    serving: HashMap<String, (String, FakeAgent)>,
    /// Scripts set per session.
    scripts: HashMap<String, Script>,
    /// Every agent that served a session, oldest first.
    history: HashMap<String, Vec<FakeAgent>>,
    /// Why the last agent of a session could not start.
    errors: HashMap<String, String>,
}

struct HostShared {
    namespace: String,
    default: Script,
    sessions: Mutex<Sessions>,
    /// Bumped on every change of `sessions`, for waiters.
    changed: watch::Sender<u64>,
}

impl HostShared {
    fn sessions(&self) -> MutexGuard<'_, Sessions> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn notify(&self) {
        self.changed.send_modify(|generation| *generation += 1);
    }

    fn current(&self, session: &str) -> Option<FakeAgent> {
        let sessions = self.sessions();
        let serving: Vec<&FakeAgent> = sessions
            .serving
            .values()
            .filter(|(s, _)| s == session)
            .map(|(_, agent)| agent)
            .collect();
        sessions
            .history
            .get(session)?
            .iter()
            .rev()
            .find(|agent| serving.iter().any(|s| s.same(agent)))
            .cloned()
    }

    async fn apply(&self, pod: &Pod) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        let status = pod.status.as_ref();
        let finished = status
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|phase| phase == "Succeeded" || phase == "Failed");
        let ip = status.and_then(|s| s.pod_ip.as_deref());
        let (Some(session), Some(ip), false, false) = (
            session_of(pod),
            ip,
            pod.metadata.deletion_timestamp.is_some(),
            finished,
        ) else {
            self.remove(&uid).await;
            return;
        };
        if self.sessions().serving.contains_key(&uid) {
            return;
        }
        let script = self
            .sessions()
            .scripts
            .get(&session)
            .cloned()
            .unwrap_or_else(|| self.default.clone());
        let started = match ip.parse::<IpAddr>() {
            Ok(ip) => bind(SocketAddr::new(ip, agent_port(pod)))
                .await
                .map(|listener| FakeAgent::serve(listener, script)),
            Err(e) => Err(anyhow::anyhow!("pod IP {ip:?} does not parse: {e}")),
        };
        let mut sessions = self.sessions();
        match started {
            Ok(agent) => {
                sessions.errors.remove(&session);
                sessions
                    .history
                    .entry(session.clone())
                    .or_default()
                    .push(agent.clone());
                sessions.serving.insert(uid, (session, agent));
            }
            Err(e) => {
                let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
                let message = format!("no fake agent for pod {}/{pod_name}: {e:#}", self.namespace);
                eprintln!("ccplant-testenv: {message}");
                sessions.errors.insert(session, message);
            }
        }
        drop(sessions);
        self.notify();
    }

    async fn remove(&self, uid: &str) {
        let removed = self.sessions().serving.remove(uid);
        if let Some((_, agent)) = removed {
            agent.stop().await;
            self.notify();
        }
    }
}

fn session_of(pod: &Pod) -> Option<String> {
    pod.metadata.labels.as_ref()?.get(SESSION_LABEL).cloned()
}

/// The container port named `agent`, else agentapi's default.
fn agent_port(pod: &Pod) -> u16 {
    pod.spec
        .iter()
        .flat_map(|spec| &spec.containers)
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some(AGENT_PORT_NAME))
        .and_then(|p| u16::try_from(p.container_port).ok())
        .unwrap_or(DEFAULT_AGENT_PORT)
}

async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let deadline = Instant::now() + BIND_RETRY;
    loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => return Ok(listener),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => {
                bail!(
                    "cannot bind {addr}: not a local address (pod IPs are loopback addresses only \
                     with TestEnv::global_with_loopback_pods): {e}"
                )
            }
            Err(e) => return Err(e).with_context(|| format!("binding {addr}")),
        }
    }
}

async fn watch_pods(api: Api<Pod>, shared: Arc<HostShared>) {
    let config = watcher::Config::default().labels(SESSION_LABEL);
    let mut events = watcher(api, config).default_backoff().boxed();
    let mut listed = HashSet::new();
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Init) => listed.clear(),
            Ok(watcher::Event::InitApply(pod)) => {
                listed.extend(pod.metadata.uid.clone());
                shared.apply(&pod).await;
            }
            Ok(watcher::Event::InitDone) => {
                // A relist: pods that vanished while the watch was down.
                let gone: Vec<String> = shared
                    .sessions()
                    .serving
                    .keys()
                    .filter(|uid| !listed.contains(*uid))
                    .cloned()
                    .collect();
                for uid in gone {
                    shared.remove(&uid).await;
                }
            }
            Ok(watcher::Event::Apply(pod)) => shared.apply(&pod).await,
            Ok(watcher::Event::Delete(pod)) => {
                if let Some(uid) = &pod.metadata.uid {
                    shared.remove(uid).await;
                }
            }
            Err(e) => eprintln!(
                "ccplant-testenv: fake agent host watch of pods in {} failed (retrying): {e}",
                shared.namespace
            ),
        }
    }
}

/// Runs a [`FakeAgent`] for every session pod of one namespace (label [`SESSION_LABEL`]) at the
/// pod's `status.podIP` and container port `agent`, from the moment the pod has an IP until it is
/// deleting, deleted or finished. Dropping it stops the watch and every agent.
pub struct AgentHost {
    shared: Arc<HostShared>,
    watch: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for AgentHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentHost")
            .field("namespace", &self.shared.namespace)
            .finish()
    }
}

impl AgentHost {
    /// Starts watching the session pods of `namespace`; agents run `default` unless
    /// [`AgentHost::set_script`] set a script for their session.
    pub async fn start(
        client: Client,
        namespace: &str,
        default: Script,
    ) -> anyhow::Result<AgentHost> {
        let api: Api<Pod> = Api::namespaced(client, namespace);
        // Fail now on an unusable client rather than retrying in the background.
        api.list_metadata(&kube::api::ListParams::default().limit(1))
            .await
            .with_context(|| format!("listing pods in {namespace}"))?;
        let (changed, _) = watch::channel(0);
        let shared = Arc::new(HostShared {
            namespace: namespace.to_string(),
            default,
            sessions: Mutex::new(Sessions::default()),
            changed,
        });
        let watch = tokio::spawn(watch_pods(api, shared.clone()));
        Ok(AgentHost {
            shared,
            watch: Some(watch),
        })
    }

    /// The script of `session`'s future agents, applied at once to its current agent.
    pub fn set_script(&self, session: &str, script: Script) {
        let current = {
            let mut sessions = self.shared.sessions();
            sessions.scripts.insert(session.to_string(), script.clone());
            sessions
                .serving
                .values()
                .filter(|(s, _)| s == session)
                .map(|(_, agent)| agent.clone())
                .collect::<Vec<_>>()
        };
        for agent in current {
            agent.set_script(script.clone());
        }
    }

    /// The agent serving `session`'s current pod, once it serves, at most `timeout`.
    pub async fn wait_agent(&self, session: &str, timeout: Duration) -> anyhow::Result<FakeAgent> {
        let mut changed = self.shared.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(agent) = self.shared.current(session) {
                return Ok(agent);
            }
            let woke = tokio::time::timeout_at(deadline, changed.changed()).await;
            if woke.is_err() {
                let sessions = self.shared.sessions();
                let served = sessions.history.get(session).map_or(0, Vec::len);
                let last_error = sessions
                    .errors
                    .get(session)
                    .map_or(String::new(), |e| format!("; last error: {e}"));
                bail!(
                    "no fake agent serves session {session} in {} after {timeout:?} (no running \
                     pod labelled {SESSION_LABEL}={session} with a pod IP; {served} agents served \
                     it before){last_error}",
                    self.shared.namespace
                );
            }
        }
    }

    /// Every agent that served `session`, oldest first (one per pod).
    pub fn history(&self, session: &str) -> Vec<FakeAgent> {
        self.shared
            .sessions()
            .history
            .get(session)
            .cloned()
            .unwrap_or_default()
    }

    /// Stops the watch and every agent; their addresses are free when this returns.
    pub async fn stop(mut self) {
        if let Some(watch) = self.watch.take() {
            watch.abort();
            let _ = watch.await;
        }
        let serving: Vec<FakeAgent> = self
            .shared
            .sessions()
            .serving
            .drain()
            .map(|(_, (_, agent))| agent)
            .collect();
        for agent in serving {
            agent.stop().await;
        }
    }
}

impl Drop for AgentHost {
    fn drop(&mut self) {
        if let Some(watch) = self.watch.take() {
            watch.abort();
        }
        for (_, (_, agent)) in self.shared.sessions().serving.drain() {
            agent.abort();
        }
    }
}
