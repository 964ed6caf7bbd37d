//! Starting and stopping a loopback control plane: etcd, kube-apiserver, kube-controller-manager,
//! kube-scheduler and KWOK with fake nodes.

use crate::binaries::Binaries;
use crate::certs::{CertFiles, write_certs};
use crate::process::{Lifetime, ManagedProcess, free_port};
use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The annotation KWOK uses to pick the nodes it manages.
pub const KWOK_NODE_ANNOTATION: &str = "kwok.x-k8s.io/node";

/// The apiserver's audit log (JSON lines, one per write request), relative to the directory.
pub const AUDIT_LOG: &str = "logs/audit.log";

/// Audit every write (who, which user agent, which object, when) at Metadata level; reads are
/// not logged. Tests use it to prove which process wrote what, e.g. during leader hand-overs.
const AUDIT_POLICY: &str = r#"apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: Metadata
    verbs: ["create", "update", "patch", "delete", "deletecollection"]
  - level: None
"#;

/// Pod IP range KWOK assigns from by default (`--cidr`; the nodes carry no `spec.podCIDR`, so
/// KWOK allocates every pod from this one range).
pub const DEFAULT_POD_CIDR: &str = "10.244.0.0/16";

/// First choice of a pod IP range on loopback, for tests that serve HTTP at pod IPs (the whole of
/// 127.0.0.0/8 reaches the loopback interface on Linux, so a test can bind any such pod IP).
/// Not for control planes with Services selecting their pods: the EndpointSlice and Endpoints
/// controllers refuse loopback addresses.
pub const LOOPBACK_POD_CIDR: &str = "127.77.0.0/16";

/// Options for [`ControlPlane::start`].
#[derive(Debug, Clone)]
pub struct StartOptions {
    /// Directory for certificates, data, logs and the kubeconfig; created if missing.
    pub dir: PathBuf,
    /// Number of KWOK nodes to register.
    pub nodes: usize,
    /// How the processes are tied to the caller (see [`Lifetime`]).
    pub lifetime: Lifetime,
    /// Pod IP range KWOK assigns from.
    pub pod_cidr: String,
}

impl StartOptions {
    pub fn new(dir: impl Into<PathBuf>, lifetime: Lifetime) -> Self {
        Self {
            dir: dir.into(),
            nodes: 2,
            lifetime,
            pod_cidr: DEFAULT_POD_CIDR.to_string(),
        }
    }
}

/// A running control plane. Dropping it does not stop the processes; call [`ControlPlane::stop`].
#[derive(Debug)]
pub struct ControlPlane {
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    pub apiserver_url: String,
    pub processes: Vec<ManagedProcess>,
}

impl ControlPlane {
    /// Starts every component, registers the KWOK nodes and waits until they are Ready.
    ///
    /// Must be called outside of any tokio runtime (it runs its own for the readiness checks).
    pub fn start(bins: &Binaries, opts: &StartOptions) -> Result<ControlPlane> {
        let started = Instant::now();
        let dir = &opts.dir;
        let logs = dir.join("logs");
        std::fs::create_dir_all(&logs)?;
        let certs = write_certs(&dir.join("pki"))?;
        let mut cp = ControlPlane {
            dir: dir.clone(),
            kubeconfig: dir.join("kubeconfig"),
            apiserver_url: String::new(),
            processes: Vec::new(),
        };
        let result = cp.start_components(bins, opts, &certs);
        if let Err(err) = result {
            let tails = cp.log_tails();
            cp.stop();
            return Err(err.context(tails));
        }
        eprintln!(
            "ccplant-testenv: control plane ready in {:.1}s at {} (kubeconfig {})",
            started.elapsed().as_secs_f64(),
            cp.apiserver_url,
            cp.kubeconfig.display()
        );
        Ok(cp)
    }

    fn start_components(
        &mut self,
        bins: &Binaries,
        opts: &StartOptions,
        certs: &CertFiles,
    ) -> Result<()> {
        let dir = opts.dir.clone();
        let logs = dir.join("logs");
        let etcd_client = free_port()?;
        let etcd_peer = free_port()?;
        let etcd_metrics = free_port()?;
        let apiserver_port = free_port()?;
        let kwok_port = free_port()?;
        let etcd_url = format!("http://127.0.0.1:{etcd_client}");
        let audit_policy = dir.join("audit-policy.yaml");
        std::fs::write(&audit_policy, AUDIT_POLICY)?;
        let peer_url = format!("http://127.0.0.1:{etcd_peer}");

        self.processes.push(ManagedProcess::spawn(
            "etcd",
            &bins.etcd,
            &[
                "--name=testenv".into(),
                format!("--data-dir={}", dir.join("etcd").display()),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=testenv={peer_url}"),
                format!("--listen-metrics-urls=http://127.0.0.1:{etcd_metrics}"),
                "--unsafe-no-fsync=true".into(),
                "--log-level=warn".into(),
                "--quota-backend-bytes=8589934592".into(),
            ],
            &logs,
            opts.lifetime,
        )?);
        wait_for_tcp(etcd_client, Duration::from_secs(30), &self.processes)
            .context("etcd did not start listening")?;

        self.apiserver_url = format!("https://127.0.0.1:{apiserver_port}");
        let p = |path: &Path| path.display().to_string();
        self.processes.push(ManagedProcess::spawn(
            "kube-apiserver",
            &bins.kube_apiserver,
            &[
                format!("--etcd-servers={etcd_url}"),
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=127.0.0.1".into(),
                format!("--secure-port={apiserver_port}"),
                format!("--cert-dir={}", p(&dir.join("apiserver-certs"))),
                format!("--tls-cert-file={}", p(&certs.serving_cert)),
                format!("--tls-private-key-file={}", p(&certs.serving_key)),
                format!("--client-ca-file={}", p(&certs.ca_cert)),
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
                format!(
                    "--service-account-key-file={}",
                    p(&certs.service_account_pub)
                ),
                format!(
                    "--service-account-signing-key-file={}",
                    p(&certs.service_account_key)
                ),
                "--authorization-mode=RBAC".into(),
                format!("--audit-policy-file={}", p(&audit_policy)),
                format!("--audit-log-path={}", p(&dir.join(AUDIT_LOG))),
                "--audit-log-format=json".into(),
                // Never rotated (0 would mean lumberjack's default, 100 MB): readers keep an offset.
                "--audit-log-maxsize=1000000".into(),
                "--allow-privileged=true".into(),
                "--service-cluster-ip-range=10.96.0.0/16".into(),
                "--endpoint-reconciler-type=none".into(),
                "--storage-media-type=application/vnd.kubernetes.protobuf".into(),
                "--max-requests-inflight=2000".into(),
                "--max-mutating-requests-inflight=1000".into(),
                "--enable-priority-and-fairness=false".into(),
                "--v=0".into(),
            ],
            &logs,
            opts.lifetime,
        )?);

        let kubeconfig = kubeconfig_yaml(&self.apiserver_url, certs);
        std::fs::write(&self.kubeconfig, kubeconfig)?;

        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(wait_for_apiserver(&self.kubeconfig, &self.processes))?;

        let kubeconfig_arg = format!("--kubeconfig={}", p(&self.kubeconfig));
        self.processes.push(ManagedProcess::spawn(
            "kube-controller-manager",
            &bins.kube_controller_manager,
            &[
                kubeconfig_arg.clone(),
                "--leader-elect=false".into(),
                "--bind-address=127.0.0.1".into(),
                "--secure-port=0".into(),
                format!(
                    "--service-account-private-key-file={}",
                    p(&certs.service_account_key)
                ),
                format!("--root-ca-file={}", p(&certs.ca_cert)),
                format!("--cluster-signing-cert-file={}", p(&certs.ca_cert)),
                format!("--cluster-signing-key-file={}", p(&certs.ca_key)),
                "--use-service-account-credentials=false".into(),
                "--controllers=*".into(),
                "--kube-api-qps=5000".into(),
                "--kube-api-burst=10000".into(),
                "--concurrent-gc-syncs=50".into(),
                "--v=0".into(),
            ],
            &logs,
            opts.lifetime,
        )?);
        self.processes.push(ManagedProcess::spawn(
            "kube-scheduler",
            &bins.kube_scheduler,
            &[
                kubeconfig_arg.clone(),
                "--leader-elect=false".into(),
                "--bind-address=127.0.0.1".into(),
                "--secure-port=0".into(),
                "--kube-api-qps=5000".into(),
                "--kube-api-burst=10000".into(),
                "--v=0".into(),
            ],
            &logs,
            opts.lifetime,
        )?);

        let kwok_config = dir.join("kwok.yaml");
        std::fs::write(&kwok_config, kwok_config_yaml(&bins.kwok_stages)?)?;
        self.processes.push(ManagedProcess::spawn(
            "kwok",
            &bins.kwok,
            &[
                kubeconfig_arg,
                format!("--config={}", p(&kwok_config)),
                format!("--server-address=127.0.0.1:{kwok_port}"),
                "--manage-all-nodes=false".into(),
                format!("--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake"),
                format!("--cidr={}", opts.pod_cidr),
                "--node-ip=127.0.0.1".into(),
                "--node-lease-duration-seconds=40".into(),
                "-v=WARN".into(),
            ],
            &logs,
            opts.lifetime,
        )?);

        rt.block_on(register_nodes(
            &self.kubeconfig,
            opts.nodes,
            &self.processes,
        ))?;
        Ok(())
    }

    /// The last lines of every component's log, for error messages.
    pub fn log_tails(&self) -> String {
        let mut out = String::new();
        for proc in &self.processes {
            let _ = write!(
                out,
                "\n--- last lines of {} ---\n{}",
                proc.log.display(),
                proc.log_tail(15)
            );
        }
        out
    }

    /// The process of component `name` (`etcd`, `kube-apiserver`, `kube-controller-manager`,
    /// `kube-scheduler`, `kwok`).
    pub fn process(&self, name: &str) -> Option<&ManagedProcess> {
        self.processes.iter().find(|p| p.name == name)
    }

    /// Starts component `name` again after it exited or was stopped (one still running is
    /// SIGKILLed first), with the same command line: same ports, etcd, certificates and audit
    /// log, so clients reconnect to the same URL. Returns once it is spawned; readiness is the
    /// caller's to wait for. Call it from the thread that started the control plane (the
    /// processes' parent-death signal is tied to that thread).
    pub fn restart(&mut self, name: &str) -> Result<()> {
        let proc = self
            .processes
            .iter_mut()
            .find(|p| p.name == name)
            .with_context(|| format!("no component {name}"))?;
        proc.respawn()
    }

    /// Stops every process (SIGTERM, then SIGKILL after a grace period), waits for them to exit.
    pub fn stop(&mut self) {
        stop_in_order(&mut self.processes);
        self.processes.clear();
    }
}

/// Stops `processes` (in start order) from the last to the first, each before the next: the
/// apiserver hangs on shutdown when etcd is gone first. Up to 5 s each, then SIGKILL.
pub fn stop_in_order(processes: &mut [ManagedProcess]) {
    // The clients first, all at once: they depend on nothing that stops before them.
    let (servers, clients) = processes.split_at_mut(processes.len().min(2));
    for proc in clients.iter() {
        proc.terminate();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    for proc in clients.iter_mut() {
        proc.wait_until(deadline);
    }
    for proc in servers.iter_mut().rev() {
        proc.terminate();
        proc.wait_until(Instant::now() + Duration::from_secs(5));
    }
}

fn kubeconfig_yaml(server: &str, certs: &CertFiles) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: ccplant-testenv
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: admin
  user:
    client-certificate: {cert}
    client-key: {key}
contexts:
- name: ccplant-testenv
  context:
    cluster: ccplant-testenv
    user: admin
    namespace: default
current-context: ccplant-testenv
",
        ca = certs.ca_cert.display(),
        cert = certs.admin_cert.display(),
        key = certs.admin_key.display(),
    )
}

/// Annotation tests put on a running pod to make its containers exit with that code (KWOK pods
/// run no process): "0" → phase Succeeded, reason Completed; anything else → Failed, reason
/// Error (or the value of `ccplant.io/test-exit-reason`, e.g. OOMKilled).
pub const TEST_EXIT_CODE_ANNOTATION: &str = "ccplant.io/test-exit-code";

const POD_EXIT_STAGE: &str = r#"---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: ccplant-pod-exit
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'DoesNotExist'
    - key: '.status.phase'
      operator: 'In'
      values:
      - 'Running'
    - key: '.metadata.annotations["ccplant.io/test-exit-code"]'
      operator: 'Exists'
  next:
    statusTemplate: |
      {{ $now := Now }}
      {{ $code := index .metadata.annotations "ccplant.io/test-exit-code" }}
      {{ $reason := "Completed" }}
      {{ if ne $code "0" }}{{ $reason = "Error" }}{{ end }}
      {{ with index .metadata.annotations "ccplant.io/test-exit-reason" }}{{ $reason = . }}{{ end }}
      containerStatuses:
      {{ range $index, $item := .spec.containers }}
      - image: {{ $item.image | Quote }}
        name: {{ $item.name | Quote }}
        ready: false
        restartCount: 0
        started: false
        state:
          terminated:
            exitCode: {{ $code }}
            finishedAt: {{ $now | Quote }}
            reason: {{ $reason | Quote }}
            startedAt: {{ $now | Quote }}
      {{ end }}
      conditions:
      - lastTransitionTime: {{ $now | Quote }}
        status: "False"
        type: Ready
      phase: {{ if eq $code "0" }}Succeeded{{ else }}Failed{{ end }}
"#;

/// KWOK configuration: upstream's fast node and pod stages, read from the kwok module, plus a
/// heartbeat so nodes stay Ready.
fn kwok_config_yaml(stages_dir: &Path) -> Result<String> {
    let mut out = String::from(
        "apiVersion: config.kwok.x-k8s.io/v1alpha1\nkind: KwokConfiguration\noptions:\n  enableCNI: false\n  nodeLeaseParallelism: 4\n  podPlayStageParallelism: 8\n  nodePlayStageParallelism: 4\n  podsOnNodeSyncParallelism: 2\n  enablePodsOnNodeSyncStreamWatch: true\n",
    );
    for stage in [
        "node/fast/node-initialize.yaml",
        "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
        "pod/fast/pod-ready.yaml",
        "pod/fast/pod-complete.yaml",
        "pod/fast/pod-delete.yaml",
    ] {
        let path = stages_dir.join(stage);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading KWOK stage {}", path.display()))?;
        out.push_str("---\n");
        out.push_str(&text);
        if !text.ends_with('\n') {
            out.push('\n');
        }
    }
    out.push_str(POD_EXIT_STAGE);
    Ok(out)
}

/// A client for the cluster of `kubeconfig`.
pub fn client_for(kubeconfig: &Path) -> impl Future<Output = Result<Client>> + use<> {
    let kubeconfig = kubeconfig.to_path_buf();
    async move {
        let kc = Kubeconfig::read_from(&kubeconfig)
            .with_context(|| format!("reading kubeconfig {}", kubeconfig.display()))?;
        let mut config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
        config.connect_timeout = Some(Duration::from_secs(5));
        config.read_timeout = Some(Duration::from_secs(60));
        Ok(Client::try_from(config)?)
    }
}

fn check_alive(processes: &[ManagedProcess]) -> Result<()> {
    for proc in processes {
        if let Some(status) = proc.exited() {
            bail!("{} exited early ({status})", proc.name);
        }
    }
    Ok(())
}

fn wait_for_tcp(port: u16, timeout: Duration, processes: &[ManagedProcess]) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        check_alive(processes)?;
        if Instant::now() > deadline {
            bail!("nothing listening on 127.0.0.1:{port} after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn wait_for_apiserver(kubeconfig: &Path, processes: &[ManagedProcess]) -> Result<()> {
    let client = client_for(kubeconfig).await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let req = http::Request::get("/readyz").body(Vec::new())?;
        let last = match client.request_text(req).await {
            Ok(body) if body.trim() == "ok" => return Ok(()),
            Ok(body) => body,
            Err(err) => err.to_string(),
        };
        check_alive(processes)?;
        if Instant::now() > deadline {
            bail!("kube-apiserver not ready after 120s: {last}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn register_nodes(
    kubeconfig: &Path,
    count: usize,
    processes: &[ManagedProcess],
) -> Result<()> {
    let client = client_for(kubeconfig).await?;
    let nodes: Api<Node> = Api::all(client);
    for i in 0..count {
        let name = format!("kwok-node-{i}");
        let node: Node = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "annotations": { KWOK_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0" },
                "labels": {
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "kubernetes.io/role": "agent",
                    "node-role.kubernetes.io/agent": "",
                    "type": "kwok"
                }
            },
            "spec": {},
            "status": {
                "allocatable": { "cpu": "1000", "memory": "4Ti", "pods": "20000" },
                "capacity": { "cpu": "1000", "memory": "4Ti", "pods": "20000" }
            }
        }))?;
        match nodes.create(&PostParams::default(), &node).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(anyhow!(e).context(format!("creating node {name}"))),
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list = nodes.list(&Default::default()).await?;
        let ready = list
            .items
            .iter()
            .filter(|n| {
                n.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .count();
        if ready >= count {
            return Ok(());
        }
        check_alive(processes)?;
        if Instant::now() > deadline {
            bail!("only {ready} of {count} KWOK nodes Ready after 60s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
