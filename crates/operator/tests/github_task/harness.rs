//! A test's world: a namespace on the real control plane, a fake GitHub, and the operator
//! binary running as a separate process (so tests can SIGKILL it) scoped to that namespace.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use ccplant_api::{AgentSession, GitHubTask, GitHubTaskPhase};
use ccplant_testenv::fake_github::FakeGitHub;
use ccplant_testenv::{TestEnv, TestNamespace, wait_for};
use k8s_openapi::api::core::v1::{Event, PersistentVolume, Secret};
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const TOKEN: &str = "ghp_ccplantTestToken0000000000000000000000";
pub const BOT: &str = "ccplant-bot";
pub const SECRET: &str = "github-token";

/// Installs the CRDs once per test binary (client-side apply of the committed files).
pub fn install_crds() {
    install_crds_into(TestEnv::global());
}

/// [`install_crds`] into `env` (a binary whose control plane is not [`TestEnv::global`]).
pub fn install_crds_into(env: &TestEnv) {
    static DONE: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let out = env
            .kubectl()
            .arg("apply")
            .arg("-f")
            .arg(root.join("crds"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = env
            .kubectl()
            .args(["wait", "--for=condition=Established", "--timeout=60s"])
            .args(["crd/agentsessions.ccplant.io", "crd/githubtasks.ccplant.io"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// The kubeconfig the operator runs with: the test control plane's admin kubeconfig, or, when
/// `CCPLANT_TEST_OPERATOR_KUBECONFIG` is set, that one (e.g. a token of the Helm chart's
/// ServiceAccount, to prove the chart's RBAC is sufficient).
pub fn operator_kubeconfig() -> PathBuf {
    match std::env::var_os("CCPLANT_TEST_OPERATOR_KUBECONFIG") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => TestEnv::global().kubeconfig.clone(),
    }
}

/// The operator binary as a child process.
pub struct Operator {
    child: Option<tokio::process::Child>,
    args: Vec<String>,
    log: PathBuf,
    kubeconfig: Option<PathBuf>,
    pub starts: u32,
}

/// Shared handle so a fake-GitHub hook can kill the operator from another thread.
pub type SharedPid = Arc<Mutex<Option<i32>>>;

impl Operator {
    pub fn new(ns: &str, github_url: &str, extra: &[&str]) -> Self {
        Self::named(ns, "", github_url, extra)
    }

    /// One of several operators in the same namespace: `label` tells their logs apart. Extra
    /// arguments naming `--leader-elect`, `--metrics-addr` or `--github-timeout` replace the
    /// defaults (`--leader-elect=false`, a free port, 5 s).
    pub fn named(ns: &str, label: &str, github_url: &str, extra: &[&str]) -> Self {
        let log = std::env::temp_dir().join(format!("ccplant-operator-{ns}{label}.log"));
        let mut args: Vec<String> = vec![
            "run".into(),
            "--namespaces".into(),
            ns.into(),
            "--github-api-url".into(),
            github_url.into(),
            "--log-format".into(),
            "text".into(),
            "--log-level".into(),
            "info,ccplant_operator=debug".into(),
        ];
        if !extra.iter().any(|a| a.starts_with("--github-timeout")) {
            args.extend(["--github-timeout".into(), "5s".into()]);
        }
        // Tests run many operators at once: each reconciles its own namespace alone and serves
        // metrics on a free port.
        if !extra.iter().any(|a| a.starts_with("--leader-elect")) {
            args.push("--leader-elect=false".into());
        }
        if !extra.iter().any(|a| a.starts_with("--metrics-addr")) {
            args.extend(["--metrics-addr".into(), "127.0.0.1:0".into()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        Self {
            child: None,
            args,
            log,
            kubeconfig: None,
            starts: 0,
        }
    }

    /// Runs the operator with this kubeconfig instead of [`operator_kubeconfig`].
    pub fn with_kubeconfig(mut self, kubeconfig: PathBuf) -> Self {
        self.kubeconfig = Some(kubeconfig);
        self
    }

    /// Sends SIGTERM (graceful shutdown).
    pub fn sigterm(&self) {
        if let Some(pid) = self.pid() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
    }

    /// Waits up to `timeout` for the process to exit; its exit status if it did.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        tokio::time::timeout(timeout, child.wait()).await.ok()?.ok()
    }

    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ccplant-operator"))
            .args(&self.args)
            .env(
                "KUBECONFIG",
                self.kubeconfig.clone().unwrap_or_else(operator_kubeconfig),
            )
            .env_remove("RUST_LOG")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start ccplant-operator");
        self.child = Some(child);
        self.starts += 1;
    }

    pub fn pid(&self) -> Option<i32> {
        self.child
            .as_ref()
            .and_then(|c| c.id())
            .and_then(|p| i32::try_from(p).ok())
    }

    /// True once the process exited (e.g. killed by a hook).
    pub fn exited(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().ok().flatten().is_some(),
            None => true,
        }
    }

    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `http://ADDR` of the operator's /metrics, /healthz and /readyz server, from the line it
    /// logs once bound (waits up to 30 s for it; the latest start's line wins).
    pub async fn metrics_url(&self) -> String {
        const LINE: &str = "serving /metrics, /healthz and /readyz";
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let log = strip_ansi(&self.log_text());
            let addr = log
                .lines()
                .rev()
                .filter(|l| l.contains(LINE))
                .filter_map(|l| l.split("addr=").nth(1))
                .filter_map(|rest| rest.split_whitespace().next())
                .map(|a| a.trim_matches('"').to_string())
                .next();
            if let Some(addr) = addr {
                return format!("http://{addr}");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the operator logged no \"{LINE}\" line within 30 s:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.start_kill();
        }
        if std::thread::panicking() {
            eprintln!("operator log kept at {}", self.log.display());
        } else {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// `text` without terminal colour codes (the text log format colours field names).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters, ending with a letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Sends `signal` (e.g. "STOP", "CONT") to `pid`.
pub fn signal(pid: i32, signal: &str) {
    let _ = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status();
}

/// SIGKILLs `pid` (used from fake-GitHub hooks, between a GitHub write and its status write).
pub fn sigkill(pid: i32) {
    let _ = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status();
}

pub async fn token_secret(ns: &TestNamespace) {
    let secrets: Api<Secret> = ns.api();
    let secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": SECRET },
        "stringData": { "token": TOKEN },
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
}

pub async fn fake_with_repo() -> FakeGitHub {
    let fake = FakeGitHub::start().await.expect("fake GitHub");
    fake.add_token(TOKEN, BOT);
    fake.add_repo("octo", "hello", "main");
    fake
}

pub fn task(name: &str, spec: serde_json::Value) -> GitHubTask {
    serde_json::from_value(json!({
        "apiVersion": "ccplant.io/v1alpha1",
        "kind": "GitHubTask",
        "metadata": { "name": name },
        "spec": spec,
    }))
    .unwrap()
}

pub async fn create(ns: &TestNamespace, t: &GitHubTask) -> GitHubTask {
    ns.api::<GitHubTask>()
        .create(&PostParams::default(), t)
        .await
        .unwrap()
}

pub async fn wait_phase(
    ns: &TestNamespace,
    name: &str,
    phase: GitHubTaskPhase,
    timeout: Duration,
) -> GitHubTask {
    wait_for(
        &ns.api::<GitHubTask>(),
        name,
        timeout,
        &format!("phase {phase}"),
        |t: &GitHubTask| t.phase() == Some(phase),
    )
    .await
}

/// What kstatus (Flux, kpt, `kubectl wait`) and Argo CD's health check (examples/argocd) say of
/// `object`, e.g. `"Current/Healthy"`, each computed by its own code.
pub fn tools_say<K: serde::Serialize>(object: &K) -> String {
    ccplant_testenv::statuscheck::verdicts(&TestEnv::global().bins, object)
        .unwrap()
        .short()
}

pub fn ready(t: &GitHubTask) -> (String, String, String) {
    let c = t
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .cloned()
        .expect("Ready condition");
    (c.status, c.reason, c.message)
}

pub async fn events_for(ns: &TestNamespace, name: &str) -> Vec<(String, String, String)> {
    let events: Api<Event> = ns.api();
    events
        .list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|e| {
            (
                e.type_.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.message.unwrap_or_default(),
            )
        })
        .collect()
}

/// Opens a pull request on octo/hello as another GitHub user (so the operator's approval is
/// not a self-approval).
pub async fn open_pull_as(
    fake: &FakeGitHub,
    token: &str,
    head: &str,
    title: &str,
) -> ccplant_github::Pull {
    let client = ccplant_github::GitHubClient::builder(ccplant_github::Credentials::Token(
        token.to_string().into(),
    ))
    .api_url(fake.url())
    .build()
    .unwrap();
    let repo = ccplant_github::RepoRef::new("octo", "hello");
    let new = ccplant_github::NewPull {
        head: head.into(),
        base: "main".into(),
        title: title.into(),
        body: String::new(),
        draft: false,
    };
    client
        .create_pull(&repo, &new, "<!-- someone else -->")
        .await
        .unwrap()
}

/// Opens issue #1 on octo/hello as another user.
pub async fn open_issue_as(fake: &FakeGitHub, token: &str) -> ccplant_github::Issue {
    let client = ccplant_github::GitHubClient::builder(ccplant_github::Credentials::Token(
        token.to_string().into(),
    ))
    .api_url(fake.url())
    .build()
    .unwrap();
    let repo = ccplant_github::RepoRef::new("octo", "hello");
    let new = ccplant_github::NewIssue {
        title: "Tracking".into(),
        ..Default::default()
    };
    client
        .create_issue(&repo, &new, "<!-- someone else -->")
        .await
        .unwrap()
}

/// Waits (up to 10 s) for an Event about the object `name` of `kind` matching `want`
/// (events are published right after the status write they describe).
pub async fn wait_event(
    ns: &TestNamespace,
    kind: &str,
    name: &str,
    want: impl Fn(&(String, String, String)) -> bool,
) -> Vec<(String, String, String)> {
    let events: Api<Event> = ns.api();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let list: Vec<(String, String, String)> = events
            .list(&ListParams::default().fields(&format!(
                "involvedObject.name={name},involvedObject.kind={kind}"
            )))
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|e| {
                (
                    e.type_.unwrap_or_default(),
                    e.reason.unwrap_or_default(),
                    e.message.unwrap_or_default(),
                )
            })
            .collect();
        if list.iter().any(&want) {
            return list;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no matching event for {kind} {name}: {list:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An AgentSession named `name` with `spec`.
pub fn session(name: &str, spec: serde_json::Value) -> AgentSession {
    serde_json::from_value(json!({
        "apiVersion": "ccplant.io/v1alpha1", "kind": "AgentSession",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .unwrap()
}

pub async fn create_session(ns: &TestNamespace, s: &AgentSession) -> AgentSession {
    ns.api::<AgentSession>()
        .create(&PostParams::default(), s)
        .await
        .unwrap()
}

/// A PersistentVolume of a storage class of the namespace's own, for a workspace claim to bind
/// to (the test cluster has no provisioner); returns the class.
pub async fn manual_volume(ns: &TestNamespace) -> String {
    let class = format!("manual-{}", ns.name);
    let pvs: Api<PersistentVolume> = Api::all(ns.client.clone());
    let pv: PersistentVolume = serde_json::from_value(json!({
        "metadata": {"name": format!("pv-{}", ns.name)},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": class,
                 "hostPath": {"path": format!("/tmp/{}", ns.name)}, "persistentVolumeReclaimPolicy": "Delete"},
    }))
    .unwrap();
    pvs.create(&PostParams::default(), &pv).await.unwrap();
    class
}

/// GitHub App 4242 (installation 77 on `octo`) on the fake, and its credentials in the Secret
/// `app`.
pub async fn app_secret(ns: &TestNamespace, fake: &FakeGitHub) {
    use ccplant_testenv::fake_github::test_keys::{
        TEST_APP_PRIVATE_KEY_PEM, TEST_APP_PUBLIC_KEY_PEM,
    };
    fake.add_app(4242, TEST_APP_PUBLIC_KEY_PEM, 77, "octo");
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "app"},
        "stringData": {"app-id": "4242", "installation-id": "77", "private-key": TEST_APP_PRIVATE_KEY_PEM},
    }))
    .unwrap();
    ns.api::<Secret>()
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
}
