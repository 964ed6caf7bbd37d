//! The bench's world: its own control plane, the operator binary as a child process, and the
//! probes that read the apiserver's audit log and metrics and the processes' /proc entries.

use crate::stats::{self, AuditEntry};
use anyhow::{Context, Result, anyhow, bail};
use ccplant_testenv::controlplane::{AUDIT_LOG, ControlPlane, StartOptions};
use ccplant_testenv::{Binaries, Lifetime};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Namespaces the bench creates carry this label.
pub const BENCH_LABEL: &str = "ccplant.io/bench";

/// The control plane of one bench run. Stopped by [`Cluster::stop`], or on drop (error, panic);
/// its processes die with the bench's main thread in any case (PR_SET_PDEATHSIG).
#[derive(Debug)]
pub struct Cluster {
    cp: Option<ControlPlane>,
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    /// (component, pid) of etcd, kube-apiserver, controller-manager, scheduler, kwok.
    pub components: Vec<(String, i32)>,
}

impl Cluster {
    /// Starts etcd, kube-apiserver, controller-manager, scheduler and KWOK with `nodes` fake
    /// nodes. Must run outside a tokio runtime, on the thread that lives as long as the bench.
    pub fn start(nodes: usize) -> Result<Cluster> {
        let bins = Binaries::ensure()?;
        // The prefix lets the test environment's sweep remove it if the bench is SIGKILLed.
        let dir =
            std::env::temp_dir().join(format!("ccplant-testenv-{}-bench", std::process::id()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        let mut opts = StartOptions::new(&dir, Lifetime::Attached);
        opts.nodes = nodes;
        let cp = ControlPlane::start(&bins, &opts)?;
        let components = cp
            .processes
            .iter()
            .map(|p| (p.name.clone(), p.pid))
            .collect();
        Ok(Cluster {
            kubeconfig: cp.kubeconfig.clone(),
            dir,
            components,
            cp: Some(cp),
        })
    }

    pub fn audit_log(&self) -> PathBuf {
        self.dir.join(AUDIT_LOG)
    }

    /// Stops every process; removes the directory after a successful run, keeps it (logs,
    /// audit log) otherwise.
    pub fn stop(&mut self, success: bool) {
        if let Some(mut cp) = self.cp.take() {
            cp.stop();
            if success {
                let _ = std::fs::remove_dir_all(&self.dir);
            } else {
                eprintln!(
                    "ccplant-bench: control plane logs kept in {}",
                    self.dir.join("logs").display()
                );
            }
        }
    }

    /// The pid of component `name` (e.g. `kube-apiserver`).
    pub fn pid(&self, name: &str) -> Result<i32> {
        Ok(self.component(name)?.pid)
    }

    /// Whether component `name` has exited.
    pub fn has_exited(&self, name: &str) -> Result<bool> {
        Ok(self.component(name)?.exited().is_some())
    }

    /// Starts component `name` again with the same command line (same port, etcd, certificates
    /// and audit log). From the main thread, like [`Cluster::start`].
    pub fn restart(&mut self, name: &str) -> Result<()> {
        let cp = self.cp.as_mut().context("the control plane is stopped")?;
        cp.restart(name)?;
        let pid = cp.process(name).map(|p| p.pid);
        for (component, old) in &mut self.components {
            if component == name
                && let Some(pid) = pid
            {
                *old = pid;
            }
        }
        Ok(())
    }

    fn component(&self, name: &str) -> Result<&ccplant_testenv::process::ManagedProcess> {
        self.cp
            .as_ref()
            .and_then(|cp| cp.process(name))
            .with_context(|| format!("no running control plane component {name}"))
    }

    /// CPU seconds so far of every component.
    pub fn cpu(&self) -> BTreeMap<String, f64> {
        self.components
            .iter()
            .filter_map(|(name, pid)| Some((name.clone(), cpu_seconds(*pid)?)))
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop(false);
    }
}

/// A kube client for the cluster (kube's default timeouts, no client-side rate limit).
pub async fn client(kubeconfig: &Path) -> Result<Client> {
    let kc = Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("reading kubeconfig {}", kubeconfig.display()))?;
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

/// Creates the ccplant CRDs and waits until their resources are served.
pub async fn install_crds(client: &Client) -> Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in ccplant_api::crds() {
        match crds.create(&PostParams::default(), &crd).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e).context("creating a CRD"),
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let sessions: Api<ccplant_api::AgentSession> = Api::all(client.clone());
        let tasks: Api<ccplant_api::GitHubTask> = Api::all(client.clone());
        let lp = ListParams::default().limit(1);
        if sessions.list_metadata(&lp).await.is_ok() && tasks.list_metadata(&lp).await.is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the ccplant CRDs are not served 60 s after their creation");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Creates namespace `name` and waits for its `default` ServiceAccount (pods are refused before).
pub async fn create_namespace(client: &Client, name: &str) -> Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({
        "metadata": { "name": name, "labels": { BENCH_LABEL: "true" } }
    }))?;
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .with_context(|| format!("creating namespace {name}"))?;
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), name);
    let deadline = Instant::now() + Duration::from_secs(60);
    while sas.get_opt("default").await?.is_none() {
        if Instant::now() > deadline {
            bail!("namespace {name}: no default ServiceAccount after 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Deletes namespace `name` and waits until it is gone; the seconds it took.
pub async fn delete_namespace(client: &Client, name: &str, timeout: Duration) -> Result<f64> {
    let started = Instant::now();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    match namespaces.delete(name, &DeleteParams::background()).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => return Ok(0.0),
        Err(e) => return Err(e).with_context(|| format!("deleting namespace {name}")),
    }
    while namespaces.get_opt(name).await?.is_some() {
        if started.elapsed() > timeout {
            bail!("namespace {name} still exists {timeout:?} after its deletion");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// `apiserver_request_total` per (verb, resource, subresource), from GET /metrics.
pub async fn request_totals(client: &Client) -> Result<BTreeMap<(String, String, String), f64>> {
    let text = client
        .request_text(http::Request::get("/metrics").body(Vec::new())?)
        .await
        .context("GET /metrics from kube-apiserver")?;
    Ok(stats::parse_request_totals(&text))
}

/// Reads the audit log incrementally.
#[derive(Debug)]
pub struct AuditReader {
    path: PathBuf,
    offset: u64,
}

impl AuditReader {
    /// Starts at the current end of the log: only later writes are read.
    pub fn at_end(path: PathBuf) -> Result<Self> {
        let offset = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        Ok(AuditReader { path, offset })
    }

    /// Entries appended since the last call.
    pub fn read_new(&mut self) -> Result<Vec<AuditEntry>> {
        let mut file = std::fs::File::open(&self.path)
            .with_context(|| format!("opening {}", self.path.display()))?;
        file.seek(SeekFrom::Start(self.offset))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let (entries, used) = stats::parse_audit_chunk(&bytes);
        self.offset += used as u64;
        Ok(entries)
    }

    /// The lines appended since the last call, parsed by `parse` (lines it rejects are
    /// skipped); a trailing partial line waits for the next call.
    pub fn read_new_with<T>(&mut self, parse: impl Fn(&str) -> Option<T>) -> Result<Vec<T>> {
        let mut file = std::fs::File::open(&self.path)
            .with_context(|| format!("opening {}", self.path.display()))?;
        file.seek(SeekFrom::Start(self.offset))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        self.offset += complete as u64;
        Ok(String::from_utf8_lossy(&bytes[..complete])
            .lines()
            .filter_map(parse)
            .collect())
    }
}

/// Clock ticks per second (`getconf CLK_TCK`, 100 when that fails).
pub fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// User + system CPU seconds of `pid` so far.
pub fn cpu_seconds(pid: i32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(stats::stat_cpu_ticks(&stat)? as f64 / clock_ticks())
}

/// CPU seconds of this process so far.
pub fn own_cpu_seconds() -> Option<f64> {
    cpu_seconds(i32::try_from(std::process::id()).ok()?)
}

/// A field such as VmHWM (peak RSS) or VmRSS of `pid`, in MiB.
pub fn memory_mib(pid: i32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    stats::status_field_mib(&status, field)
}

/// A free loopback port.
pub fn free_port() -> Result<u16> {
    ccplant_testenv::process::free_port()
}

/// `GET path` over plain HTTP/1.0; (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await?;
        let mut bytes = Vec::new();
        stream.read_to_end(&mut bytes).await?;
        anyhow::Ok(bytes)
    };
    let bytes = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| anyhow!("GET http://{addr}{path} timed out"))??;
    let text = String::from_utf8_lossy(&bytes);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("GET http://{addr}{path}: no HTTP status in {text:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Where the operator binary is: `--operator-bin`, else next to this executable. When run by
/// cargo (`CARGO` set), the operator is first built with the bench's own profile, so a stale
/// binary is never measured.
pub fn operator_binary(explicit: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(path) = explicit {
        ccplant_testenv::process::require_executable(&path)?;
        return Ok(path);
    }
    let exe = std::env::current_exe().context("locating the ccplant-bench executable")?;
    let dir = exe
        .parent()
        .context("the ccplant-bench executable has no directory")?;
    let path = dir.join("ccplant-operator");
    if let Some(cargo) = std::env::var_os("CARGO") {
        let profile = match dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => "dev".to_string(),
            Some(other) => other.to_string(),
        };
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
        eprintln!("ccplant-bench: building ccplant-operator (profile {profile})");
        let status = std::process::Command::new(cargo)
            .args(["build", "--quiet", "-p", "ccplant-operator", "--bin"])
            .arg("ccplant-operator")
            .arg("--profile")
            .arg(&profile)
            .arg("--manifest-path")
            .arg(&manifest)
            .status()
            .context("running cargo build -p ccplant-operator")?;
        if !status.success() {
            bail!("cargo build -p ccplant-operator failed ({status})");
        }
    }
    ccplant_testenv::process::require_executable(&path).with_context(|| {
        format!(
            "build the operator first: cargo build -p ccplant-operator{}",
            if dir.ends_with("release") {
                " --release"
            } else {
                ""
            }
        )
    })?;
    Ok(path)
}

/// The operator binary as a child process: SIGKILLed when the bench's main thread dies
/// (PR_SET_PDEATHSIG) and when this handle is dropped.
#[derive(Debug)]
pub struct Operator {
    child: tokio::process::Child,
    pub pid: i32,
    pub log: PathBuf,
    pub metrics_addr: SocketAddr,
}

impl Operator {
    /// Starts `ccplant-operator run` for `namespaces`, without leader election, logging JSON at
    /// warn level into `log`. Call from the runtime's `block_on` future (the main thread), so
    /// that the parent-death signal is tied to the main thread.
    pub fn start(
        bin: &Path,
        kubeconfig: &Path,
        namespaces: &[&str],
        github_api_url: &str,
        log: PathBuf,
    ) -> Result<Operator> {
        let args = [
            "--namespaces",
            &namespaces.join(","),
            "--leader-elect=false",
            "--log-format",
            "json",
            "--log-level",
            "warn",
            "--identity",
            "bench",
            "--github-api-url",
            github_api_url,
        ];
        Self::start_with(bin, kubeconfig, &args, log, false)
    }

    /// Starts `ccplant-operator run ARGS --metrics-addr 127.0.0.1:<free port>`, its output
    /// written to `log` (appended to it with `append`). From the main thread, like
    /// [`Operator::start`].
    pub fn start_with(
        bin: &Path,
        kubeconfig: &Path,
        args: &[&str],
        log: PathBuf,
        append: bool,
    ) -> Result<Operator> {
        let metrics_addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let out = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .append(append)
            .truncate(!append)
            .open(&log)
            .with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = tokio::process::Command::new(bin);
        cmd.arg("run")
            .args(args)
            .arg("--metrics-addr")
            .arg(metrics_addr.to_string())
            .env("KUBECONFIG", kubeconfig)
            .env_remove("RUST_LOG")
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true);
        ccplant_testenv::process::die_with_parent(cmd.as_std_mut());
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .context("the operator has no pid")?;
        Ok(Operator {
            child,
            pid,
            log,
            metrics_addr,
        })
    }

    /// The exit status once the operator has exited.
    pub fn exited(&mut self) -> Result<Option<std::process::ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    /// Sends `signal` (e.g. `libc::SIGKILL`) unless the operator has already exited.
    pub fn signal(&mut self, signal: i32) -> Result<()> {
        if self.exited()?.is_none() {
            ccplant_testenv::process::send_signal(self.pid, signal);
        }
        Ok(())
    }

    /// Waits up to `timeout` for the operator to exit; its exit status, `None` on timeout.
    pub async fn wait_exit(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<std::process::ExitStatus>> {
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => Ok(Some(status?)),
            Err(_) => Ok(None),
        }
    }

    fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            bail!(
                "the operator exited ({status}); last log lines:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        Ok(())
    }

    /// Waits until /readyz answers 200 (the caches hold the initial lists); the seconds it took.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<f64> {
        let started = Instant::now();
        loop {
            self.check_alive()?;
            if let Ok((200, _)) = http_get(self.metrics_addr, "/readyz").await {
                return Ok(started.elapsed().as_secs_f64());
            }
            if started.elapsed() > timeout {
                bail!("the operator is not ready after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Fails when the operator has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        self.check_alive()
    }

    /// The operator's own metrics (text exposition).
    pub async fn metrics(&self) -> Result<String> {
        let (status, body) = http_get(self.metrics_addr, "/metrics").await?;
        if status != 200 {
            bail!("operator /metrics answered {status}");
        }
        Ok(body)
    }

    pub fn cpu_seconds(&self) -> Option<f64> {
        cpu_seconds(self.pid)
    }

    /// Peak resident set size (VmHWM) in MiB.
    pub fn peak_rss_mib(&self) -> Option<f64> {
        memory_mib(self.pid, "VmHWM")
    }

    pub fn rss_mib(&self) -> Option<f64> {
        memory_mib(self.pid, "VmRSS")
    }

    /// SIGTERM, then SIGKILL after 15 s; waits for the exit.
    pub async fn stop(mut self) -> Result<std::process::ExitStatus> {
        if self.child.try_wait()?.is_none() {
            ccplant_testenv::process::send_signal(self.pid, libc::SIGTERM);
        }
        match tokio::time::timeout(Duration::from_secs(15), self.child.wait()).await {
            Ok(status) => Ok(status?),
            Err(_) => {
                self.child.kill().await?;
                Ok(self.child.wait().await?)
            }
        }
    }
}

/// Machine facts for the report.
pub fn machine() -> Value {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_default();
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| stats::status_field_mib(&t, "MemTotal"))
        .map(|mib| stats::round1(mib / 1024.0));
    json!({ "cores": cores, "kernel": kernel, "cpu": cpu, "memory_gib": mem_gib })
}
