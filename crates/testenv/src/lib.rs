//! Test support for ccplant.
//!
//! [`TestEnv::global`] gives every test in a test binary the same real control plane (etcd,
//! kube-apiserver, kube-controller-manager, kube-scheduler and KWOK fake nodes), started on
//! loopback on first use and stopped when the test binary exits. With `CCPLANT_TEST_KUBECONFIG`
//! set, tests attach to that cluster instead. Each test isolates itself in a fresh namespace
//! ([`TestEnv::with_namespace`]) and waits on watches with deadlines ([`wait_for`]).
//!
//! A test binary whose tests serve HTTP at pod IPs (the [`fake_agent`] stand-ins for agentapi)
//! uses [`TestEnv::global_with_loopback_pods`] instead: KWOK then assigns pod IPs on loopback.
// atexit(3) cleanup when the test binary exits; flock(2) reserving loopback pod ranges.
#![allow(unsafe_code)]

pub mod binaries;
pub mod certs;
pub mod controlplane;
pub mod fake_agent;
pub mod fake_github;
pub mod process;
pub mod statuscheck;

pub use binaries::Binaries;
pub use controlplane::{ControlPlane, DEFAULT_POD_CIDR, LOOPBACK_POD_CIDR, StartOptions};
pub use process::Lifetime;

use anyhow::{Context, Result};
use futures::FutureExt;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::wait::await_condition;
use kube::{Client, Resource};
use serde_json::json;
use std::fmt::Debug;
use std::hash::{BuildHasher, Hasher};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// Label put on every namespace a test creates.
pub const TEST_NAMESPACE_LABEL: &str = "ccplant.io/test";

/// Where the tests' Kubernetes API comes from.
#[derive(Debug)]
pub struct TestEnv {
    pub kubeconfig: PathBuf,
    pub bins: Binaries,
    /// True when attached to `CCPLANT_TEST_KUBECONFIG` rather than a control plane of our own.
    pub external: bool,
    /// The apiserver's audit log of write requests (JSON lines); only for our own control plane.
    pub audit_log: Option<PathBuf>,
    /// True when pod IPs are loopback addresses a test can bind
    /// ([`TestEnv::global_with_loopback_pods`]).
    pub loopback_pods: bool,
    /// The range KWOK assigns pod IPs from; only for our own control plane.
    pub pod_cidr: Option<String>,
}

static ENV: OnceLock<std::result::Result<TestEnv, String>> = OnceLock::new();
static OWNED: Mutex<Option<ControlPlane>> = Mutex::new(None);

extern "C" fn stop_owned_control_plane() {
    let owned = match OWNED.lock() {
        Ok(mut guard) => guard.take(),
        Err(poisoned) => poisoned.into_inner().take(),
    };
    if let Some(mut cp) = owned {
        cp.stop();
        let _ = std::fs::remove_dir_all(&cp.dir);
    }
}

/// Removes directories left by earlier test binaries that died without cleaning up (their
/// processes died with them through PR_SET_PDEATHSIG).
fn sweep_stale_dirs(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(rest) = name.strip_prefix("ccplant-testenv-") else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        if process::process_start_ticks(pid).is_none() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn random_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    format!("{:08x}", h.finish() as u32)
}

/// Reserves a /16 of 127.0.0.0/8 for the pods of this process's control plane, starting at
/// [`LOOPBACK_POD_CIDR`]: two test processes on one machine (two engineers, parallel test
/// binaries) would otherwise both hand out 127.77.0.1 and their fake agents would fight over
/// 127.77.0.1:3284. The reservation is an flock(2) on a file in the temp dir, released by the
/// kernel when the process exits.
fn reserve_loopback_pod_cidr() -> Result<String> {
    let (cidr, lock) = reserve_loopback_range()?;
    // Held until the process exits: that is the reservation.
    std::mem::forget(lock);
    Ok(cidr)
}

/// Like the tests' reservation, for a control plane that outlives this process
/// (`ccplant-testenv up --loopback-pods`): the lock comes back as a file that child processes
/// inherit (no close-on-exec), so a child keeps the range reserved after this process exits.
pub fn reserve_loopback_pod_cidr_for_children() -> Result<(String, std::fs::File)> {
    let (cidr, lock) = reserve_loopback_range()?;
    let fd = lock.as_raw_fd();
    // SAFETY: fcntl on a descriptor this function owns, clearing FD_CLOEXEC only.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) } < 0 {
        anyhow::bail!(
            "fcntl on the loopback range lock: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok((cidr, lock))
}

fn reserve_loopback_range() -> Result<(String, std::fs::File)> {
    let first: u8 = LOOPBACK_POD_CIDR
        .split('.')
        .nth(1)
        .and_then(|octet| octet.parse().ok())
        .context("LOOPBACK_POD_CIDR is not 127.N.0.0/16")?;
    for second in first..=first.saturating_add(49) {
        let path = std::env::temp_dir().join(format!("ccplant-testenv-loopback-127.{second}.lock"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
        if locked {
            return Ok((format!("127.{second}.0.0/16"), file));
        }
    }
    anyhow::bail!(
        "every loopback pod range 127.{first}.0.0/16 … 127.{}.0.0/16 is held by another test process",
        first.saturating_add(49)
    )
}

fn start_owned(loopback_pods: bool) -> Result<TestEnv> {
    let bins = Binaries::ensure()?;
    let root = std::env::temp_dir();
    sweep_stale_dirs(&root);
    let dir = root.join(format!(
        "ccplant-testenv-{}-{}",
        std::process::id(),
        random_suffix()
    ));
    let mut opts = StartOptions::new(&dir, Lifetime::Attached);
    if loopback_pods {
        opts.pod_cidr = reserve_loopback_pod_cidr()?;
    }
    let pod_cidr = opts.pod_cidr.clone();
    // PR_SET_PDEATHSIG fires when the spawning *thread* exits, so spawn from a thread that lives
    // as long as the test binary.
    let (tx, rx) = std::sync::mpsc::channel();
    let spawner_bins = bins.clone();
    std::thread::Builder::new()
        .name("ccplant-testenv".into())
        .spawn(move || {
            let result = ControlPlane::start(&spawner_bins, &opts);
            let reply = match result {
                Ok(cp) => {
                    let kubeconfig = cp.kubeconfig.clone();
                    if let Ok(mut guard) = OWNED.lock() {
                        *guard = Some(cp);
                    }
                    Ok(kubeconfig)
                }
                Err(e) => Err(format!("{e:#}")),
            };
            let _ = tx.send(reply);
            loop {
                std::thread::park();
            }
        })?;
    let kubeconfig = rx
        .recv()
        .context("control plane thread died")?
        .map_err(|e| anyhow::anyhow!(e))?;
    unsafe {
        libc::atexit(stop_owned_control_plane);
    }
    Ok(TestEnv {
        kubeconfig,
        bins,
        external: false,
        audit_log: Some(dir.join(controlplane::AUDIT_LOG)),
        loopback_pods,
        pod_cidr: Some(pod_cidr),
    })
}

/// Env var saying that the cluster of `CCPLANT_TEST_KUBECONFIG` gives pods loopback IPs that
/// the test process can bind (e.g. a KWOK cluster started with `--cidr=127.77.0.0/16`).
pub const LOOPBACK_PODS_ENV: &str = "CCPLANT_TEST_LOOPBACK_PODS";

fn init_env(loopback_pods: bool) -> Result<TestEnv> {
    let Some(kubeconfig) = std::env::var_os("CCPLANT_TEST_KUBECONFIG") else {
        return start_owned(loopback_pods);
    };
    if loopback_pods && std::env::var(LOOPBACK_PODS_ENV).as_deref() != Ok("1") {
        anyhow::bail!(
            "this test binary serves HTTP at pod IPs and needs pods with loopback IPs; the cluster \
             of CCPLANT_TEST_KUBECONFIG is not known to assign them: unset CCPLANT_TEST_KUBECONFIG \
             to run it against the local control plane, or set {LOOPBACK_PODS_ENV}=1 if that cluster \
             assigns pod IPs from 127.0.0.0/8 (e.g. KWOK with --cidr={LOOPBACK_POD_CIDR})"
        );
    }
    let bins = Binaries::ensure()?;
    Ok(TestEnv {
        kubeconfig: PathBuf::from(kubeconfig),
        bins,
        external: true,
        audit_log: None,
        loopback_pods,
        pod_cidr: None,
    })
}

fn shared_env(loopback_pods: bool) -> &'static TestEnv {
    let env = ENV.get_or_init(|| init_env(loopback_pods).map_err(|e| format!("{e:#}")));
    let env = match env {
        Ok(env) => env,
        Err(e) => panic!("ccplant test environment unavailable: {e}"),
    };
    if env.loopback_pods != loopback_pods {
        let (first, now) = if env.loopback_pods {
            ("TestEnv::global_with_loopback_pods()", "TestEnv::global()")
        } else {
            ("TestEnv::global()", "TestEnv::global_with_loopback_pods()")
        };
        panic!(
            "this test binary's shared control plane was started by {first}, and {now} asks for \
             the other pod IP range: one test binary uses one of them in every test (pod IPs on \
             loopback only where tests serve HTTP at pod IPs)"
        );
    }
    env
}

impl TestEnv {
    /// The environment shared by all tests of this test binary, started on first use.
    ///
    /// Panics with the reason (and the components' log tails) when it cannot be started: a
    /// missing prerequisite fails the test run, it never skips tests.
    pub fn global() -> &'static TestEnv {
        shared_env(false)
    }

    /// Like [`TestEnv::global`], but KWOK assigns pod IPs from a /16 of 127.0.0.0/8
    /// ([`LOOPBACK_POD_CIDR`] or the next free one), so a test can serve HTTP at a pod's IP
    /// ([`fake_agent::AgentHost`]).
    ///
    /// The first of the two calls in a test binary starts the control plane; calling the other
    /// one afterwards panics (one binary, one pod IP range). With `CCPLANT_TEST_KUBECONFIG` it
    /// panics unless `CCPLANT_TEST_LOOPBACK_PODS=1` says that cluster assigns loopback pod IPs.
    pub fn global_with_loopback_pods() -> &'static TestEnv {
        shared_env(true)
    }

    /// A new client (clients are bound to the tokio runtime of the test that creates them).
    pub async fn client(&self) -> Client {
        match controlplane::client_for(&self.kubeconfig).await {
            Ok(c) => c,
            Err(e) => panic!(
                "cannot build a client from {}: {e:#}",
                self.kubeconfig.display()
            ),
        }
    }

    /// `kubectl` with KUBECONFIG pointing at this environment.
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new(&self.bins.kubectl);
        cmd.env("KUBECONFIG", &self.kubeconfig);
        cmd
    }

    /// `helm` with KUBECONFIG pointing at this environment.
    pub fn helm(&self) -> Command {
        let mut cmd = Command::new(&self.bins.helm);
        cmd.env("KUBECONFIG", &self.kubeconfig);
        cmd
    }

    /// Creates a fresh namespace `<prefix>-<random>`, runs `test` in it, deletes the namespace
    /// (also when the test panics, whose panic is then resumed).
    pub async fn with_namespace<F, Fut>(&self, prefix: &str, test: F)
    where
        F: FnOnce(TestNamespace) -> Fut,
        Fut: Future<Output = ()>,
    {
        let client = self.client().await;
        let ns = TestNamespace::create(client.clone(), prefix).await;
        let name = ns.name.clone();
        let outcome = std::panic::AssertUnwindSafe(test(ns)).catch_unwind().await;
        let namespaces: Api<Namespace> = Api::all(client);
        if let Err(e) = namespaces.delete(&name, &DeleteParams::background()).await {
            eprintln!("warning: could not delete test namespace {name}: {e}");
        }
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }
}

/// A namespace owned by one test.
#[derive(Clone)]
pub struct TestNamespace {
    pub name: String,
    pub client: Client,
}

impl Debug for TestNamespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestNamespace")
            .field("name", &self.name)
            .finish()
    }
}

impl TestNamespace {
    async fn create(client: Client, prefix: &str) -> Self {
        let name = format!("{prefix}-{}", random_suffix());
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let ns: Namespace = match serde_json::from_value(json!({
            "metadata": { "name": name, "labels": { TEST_NAMESPACE_LABEL: "true" } }
        })) {
            Ok(ns) => ns,
            Err(e) => panic!("namespace object: {e}"),
        };
        if let Err(e) = namespaces.create(&PostParams::default(), &ns).await {
            panic!("creating test namespace {name}: {e}");
        }
        // Pods are refused until the ServiceAccount controller created `default`.
        let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &name);
        wait_for(
            &sas,
            "default",
            Duration::from_secs(30),
            "default ServiceAccount exists",
            |_| true,
        )
        .await;
        Self { name, client }
    }

    /// A typed API for namespaced resources of this namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }
}

/// Waits on a watch until the object `name` satisfies `cond`, at most `timeout`. On timeout it
/// panics with `what` and the last state of the object (or that it does not exist).
pub async fn wait_for<K, F>(api: &Api<K>, name: &str, timeout: Duration, what: &str, cond: F) -> K
where
    K: kube::Resource + Clone + Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    F: Fn(&K) -> bool,
{
    let matcher = |obj: Option<&K>| obj.is_some_and(&cond);
    match tokio::time::timeout(timeout, await_condition(api.clone(), name, matcher)).await {
        Ok(Ok(Some(obj))) => obj,
        Ok(Ok(None)) => panic!("waiting for {name}: {what}: object vanished"),
        Ok(Err(e)) => panic!("waiting for {name}: {what}: watch failed: {e}"),
        Err(_) => {
            let last = api.get_opt(name).await;
            panic!(
                "timed out after {timeout:?} waiting for {name}: {what}; last observed state: {last:#?}"
            )
        }
    }
}

/// Waits until the object `name` no longer exists, at most `timeout`.
pub async fn wait_for_deletion<K>(api: &Api<K>, name: &str, timeout: Duration, what: &str)
where
    K: kube::Resource + Clone + Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    let gone = |obj: Option<&K>| obj.is_none();
    match tokio::time::timeout(timeout, await_condition(api.clone(), name, gone)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => panic!("waiting for deletion of {name}: {what}: watch failed: {e}"),
        Err(_) => {
            let last = api.get_opt(name).await;
            panic!(
                "timed out after {timeout:?} waiting for {name} to be deleted ({what}); last observed state: {last:#?}"
            )
        }
    }
}
