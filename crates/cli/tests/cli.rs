//! `kubectl-ccplant` run as a process against the real control plane of `ccplant-testenv`.
//!
//! No operator runs here: the tests write `status` through the status subresource themselves to
//! play the operator's part for `get` and `wait`. Every cluster test goes through [`cluster`],
//! which first records what the plugin says while the CRDs are not installed, then installs them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use ccplant_api::{AgentSession, CompletionMode};
use ccplant_cli::RESUME_ANNOTATION;
use ccplant_testenv::{TestEnv, TestNamespace};
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use tokio::process::Command;
use tokio::sync::OnceCell;

const CRD_ERROR: &str = "error: the AgentSession CRD is not installed in this cluster (install it with: kubectl apply -f crds/ or the Helm chart)\n";

/// What a run of the plugin did.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl From<Output> for Run {
    fn from(out: Output) -> Self {
        Self {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Run {
    /// Asserts success and returns stdout.
    #[track_caller]
    fn ok(self) -> String {
        assert_eq!(self.code, Some(0), "expected success: {self:#?}");
        self.stdout
    }

    /// Asserts exit code 1, nothing on stdout, and returns stderr.
    #[track_caller]
    fn failed(self) -> String {
        assert_eq!(self.code, Some(1), "expected exit code 1: {self:#?}");
        assert_eq!(self.stdout, "", "nothing on stdout on error: {self:#?}");
        self.stderr
    }
}

fn plugin(kubeconfig: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kubectl-ccplant"));
    cmd.args(args)
        .env("KUBECONFIG", kubeconfig)
        .env_remove("CCPLANT_TEST_KUBECONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

async fn run_with(kubeconfig: &Path, args: &[&str]) -> Run {
    match plugin(kubeconfig, args).output().await {
        Ok(out) => out.into(),
        Err(e) => panic!("running kubectl-ccplant {args:?}: {e}"),
    }
}

/// `kubectl ccplant <args>` against the test cluster.
async fn ccplant(args: &[&str]) -> Run {
    run_with(&TestEnv::global().kubeconfig, args).await
}

/// `kubectl ccplant <args> -n <ns>`.
async fn in_ns(ns: &TestNamespace, args: &[&str]) -> Run {
    let mut all = args.to_vec();
    all.extend(["-n", &ns.name]);
    ccplant(&all).await
}

/// A path for a file of this test run, in Cargo's scratch directory for integration tests.
fn scratch_file(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        panic!("creating {}: {e}", dir.display());
    }
    dir.join(name)
}

/// What the plugin said before the CRDs were installed: (arguments, run).
#[derive(Debug)]
struct BeforeCrds(Vec<(Vec<&'static str>, Run)>);

/// The shared cluster, with the CRDs installed; the first caller records [`BeforeCrds`] first.
async fn cluster() -> &'static BeforeCrds {
    static SETUP: OnceCell<BeforeCrds> = OnceCell::const_new();
    SETUP
        .get_or_init(|| async {
            let env = match tokio::task::spawn_blocking(TestEnv::global).await {
                Ok(env) => env,
                Err(e) => panic!("starting the test control plane: {e}"),
            };
            let mut before = Vec::new();
            if env.external {
                eprintln!(
                    "note: CCPLANT_TEST_KUBECONFIG is set; the CRDs may already be installed there, so the missing-CRD errors are not checked"
                );
            } else {
                for args in [
                    vec!["get", "-n", "default"],
                    vec!["get", "nope", "-n", "default"],
                    vec!["new", "s1", "--image", "agent:1", "-n", "default"],
                    vec!["send", "nope", "hello", "-n", "default"],
                    vec!["wait", "nope", "--for", "idle", "-n", "default"],
                ] {
                    let run = ccplant(&args).await;
                    before.push((args, run));
                }
            }
            if let Err(e) = tokio::task::spawn_blocking(install_crds).await {
                panic!("installing the CRDs: {e}");
            }
            BeforeCrds(before)
        })
        .await
}

fn install_crds() {
    let crds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crds");
    for args in [
        vec!["apply".into(), "-f".into(), crds.display().to_string()],
        [
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/agentsessions.ccplant.io",
        ]
        .map(String::from)
        .to_vec(),
    ] {
        let out = match TestEnv::global().kubectl().args(&args).output() {
            Ok(out) => out,
            Err(e) => panic!("kubectl {args:?}: {e}"),
        };
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Runs `test` in a fresh namespace of the cluster with the CRDs installed.
async fn with_ns<F, Fut>(prefix: &str, test: F)
where
    F: FnOnce(TestNamespace) -> Fut,
    Fut: Future<Output = ()>,
{
    cluster().await;
    TestEnv::global().with_namespace(prefix, test).await;
}

async fn session(ns: &TestNamespace, name: &str) -> AgentSession {
    match ns.api::<AgentSession>().get(name).await {
        Ok(s) => s,
        Err(e) => panic!("reading agentsession {name}: {e}"),
    }
}

/// Plays the operator: merges `status` into the session's status subresource.
async fn set_status(ns: &TestNamespace, name: &str, status: Value) {
    let api: Api<AgentSession> = ns.api();
    let patch = Patch::Merge(json!({ "status": status }));
    if let Err(e) = api
        .patch_status(name, &PatchParams::default(), &patch)
        .await
    {
        panic!("writing the status of {name}: {e}");
    }
}

fn not_found(name: &str, ns: &TestNamespace) -> String {
    format!(
        "error: agentsession \"{name}\" not found in namespace \"{}\"\n",
        ns.name
    )
}

/// Tests that leave `wait` watching take turns, so each can tell when its own watch is open.
static WATCHING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Open watches of one named agentsession (`wait` watches with a metadata.name field selector,
/// which the apiserver counts under scope "resource"), from the apiserver's own gauge. The
/// garbage collector's watch of all sessions (scope "cluster") does not count.
async fn single_session_watches() -> u64 {
    let env = TestEnv::global();
    let out = match Command::new(&env.bins.kubectl)
        .env("KUBECONFIG", &env.kubeconfig)
        .args(["get", "--raw", "/metrics"])
        .output()
        .await
    {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
        other => panic!("kubectl get --raw /metrics: {other:?}"),
    };
    out.lines()
        .filter(|l| {
            l.starts_with("apiserver_longrunning_requests{")
                && l.contains(r#"resource="agentsessions""#)
                && l.contains(r#"scope="resource""#)
                && l.contains(r#"verb="WATCH""#)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// Waits until more single-session watches are open than `baseline`, i.e. the `wait` just
/// spawned read the session and is watching it.
async fn until_watching(baseline: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let open = single_session_watches().await;
        if open > baseline {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the wait process opened no watch within 30s ({open} open, {baseline} before)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn without_the_crd_every_verb_says_to_install_it() {
    let before = cluster().await;
    if TestEnv::global().external {
        return;
    }
    assert_eq!(before.0.len(), 5);
    for (args, run) in &before.0 {
        assert_eq!(run.code, Some(1), "{args:?}: {run:#?}");
        assert_eq!(run.stderr, CRD_ERROR, "{args:?}: {run:#?}");
        assert_eq!(run.stdout, "", "{args:?}");
    }
}

#[tokio::test]
async fn help_of_every_verb_exits_0_and_names_its_flags() {
    let cases: [(&str, &[&str]); 6] = [
        (
            "new",
            &[
                "--image",
                "--repo",
                "--prompt",
                "--when-idle",
                "--idle-for",
                "--agent",
            ],
        ),
        ("send", &["<NAME>", "<MESSAGE>"]),
        ("get", &["[NAME]", "--output"]),
        ("wait", &["--for", "--timeout", "phase=", "idle"]),
        ("suspend", &["<NAME>", "spec.suspend"]),
        ("resume", &["<NAME>", "ccplant.io/resume-requested-at"]),
    ];
    let nowhere = PathBuf::from("/nonexistent/kubeconfig");
    for (verb, flags) in cases {
        let help = run_with(&nowhere, &[verb, "--help"]).await.ok();
        assert!(
            help.contains(&format!("Usage: kubectl ccplant {verb} [OPTIONS]")),
            "{help}"
        );
        for flag in flags
            .iter()
            .chain(&["--namespace", "--kubeconfig", "--context"])
        {
            assert!(help.contains(flag), "`{verb} --help` lacks {flag}:\n{help}");
        }
    }
    let top = run_with(&nowhere, &["--help"]).await.ok();
    for verb in ["new", "send", "get", "wait", "suspend", "resume"] {
        assert!(top.contains(&format!("\n  {verb} ")), "{top}");
    }
}

#[tokio::test]
async fn usage_errors_exit_1() {
    let nowhere = PathBuf::from("/nonexistent/kubeconfig");
    let err = run_with(&nowhere, &["wait", "s1", "--for", "done"])
        .await
        .failed();
    assert!(
        err.contains("unknown phase \"done\": use phase=<Pending|Starting|Running|Succeeded|Failed|Suspended|Expired> or idle"),
        "{err}"
    );
    let err = run_with(&nowhere, &["new", "s1", "--idle-for", "30s"])
        .await
        .failed();
    assert!(err.contains("--when-idle"), "{err}");
}

#[tokio::test]
async fn an_unreachable_cluster_is_reported() {
    let kubeconfig = scratch_file("unreachable-kubeconfig");
    // Port 1 on loopback: nothing listens there, the connection is refused at once.
    let config = "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:1\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\ncurrent-context: x\nusers:\n- name: u\n  user:\n    token: t\n";
    if let Err(e) = std::fs::write(&kubeconfig, config) {
        panic!("writing {}: {e}", kubeconfig.display());
    }
    let err = run_with(&kubeconfig, &["get"]).await.failed();
    assert!(
        err.starts_with("error: cannot reach the Kubernetes API server at https://127.0.0.1:1/: "),
        "{err}"
    );
    assert!(err.contains("is the cluster running"), "{err}");
    assert_eq!(err.lines().count(), 1, "one line, no Debug dump: {err}");
}

#[tokio::test]
async fn new_creates_the_session_the_flags_describe() {
    with_ns("cli-new", |ns| async move {
        let out = in_ns(
            &ns,
            &[
                "new", "s1", "--image", "example.com/agent:1", "--repo", "acme/app",
                "--prompt", "Fix the flaky test", "--when-idle", "--idle-for", "90s",
                "--agent", "codex",
            ],
        )
        .await
        .ok();
        assert_eq!(out, "agentsession.ccplant.io/s1 created\n");
        let s = session(&ns, "s1").await;
        assert_eq!(s.spec.agent.type_.as_str(), "codex");
        assert_eq!(s.spec.agent.image.as_deref(), Some("example.com/agent:1"));
        assert_eq!(s.spec.prompt.as_deref(), Some("Fix the flaky test"));
        assert_eq!(
            s.spec.repository.as_ref().map(|r| r.name.as_str()),
            Some("acme/app")
        );
        assert_eq!(s.spec.completion.mode, CompletionMode::WhenIdle);
        assert_eq!(s.spec.completion.idle_for.as_str(), "90s");
        assert!(s.spec.messages.is_empty());
        assert!(!s.spec.suspend);

        // Defaults: Manual completion, claude.
        in_ns(&ns, &["new", "s2"]).await.ok();
        let s2 = session(&ns, "s2").await;
        assert_eq!(s2.spec.completion.mode, CompletionMode::Manual);
        assert_eq!(s2.spec.agent.type_.as_str(), "claude");
        assert_eq!(s2.spec.agent.image, None);

        let err = in_ns(&ns, &["new", "s1", "--image", "other:2"]).await.failed();
        assert_eq!(
            err,
            format!(
                "error: agentsession \"s1\" already exists in namespace \"{0}\" (pick another name, or delete it with: kubectl delete agentsession s1 -n {0})\n",
                ns.name
            )
        );
        let again = session(&ns, "s1").await;
        assert_eq!(again.spec.agent.image.as_deref(), Some("example.com/agent:1"));

        // The apiserver's validation message is passed on as it is.
        let err = in_ns(&ns, &["new", "s3", "--repo", "not-a-repo"]).await.failed();
        assert!(err.starts_with("error: AgentSession.ccplant.io \"s3\" is invalid: "), "{err}");
        assert!(err.contains("repository must be \\\"owner/repo\\\"") || err.contains("repository must be \"owner/repo\""), "{err}");
    })
    .await;
}

#[tokio::test]
async fn new_uses_the_namespace_of_the_kubeconfig_context() {
    with_ns("cli-ctxns", |ns| async move {
        let kubeconfig = scratch_file(&format!("kubeconfig-{}", ns.name));
        if let Err(e) = std::fs::copy(&TestEnv::global().kubeconfig, &kubeconfig) {
            panic!("copying the kubeconfig: {e}");
        }
        let out = TestEnv::global()
            .kubectl()
            .env("KUBECONFIG", &kubeconfig)
            .args([
                "config",
                "set-context",
                "--current",
                "--namespace",
                &ns.name,
            ])
            .output();
        assert!(out.is_ok_and(|o| o.status.success()));
        let out = run_with(&kubeconfig, &["new", "s1"]).await.ok();
        assert_eq!(out, "agentsession.ccplant.io/s1 created\n");
        assert_eq!(
            session(&ns, "s1").await.metadata.namespace.as_deref(),
            Some(ns.name.as_str())
        );
        // --kubeconfig instead of KUBECONFIG, and -n wins over the context's namespace.
        let path = kubeconfig.display().to_string();
        let err = run_with(
            Path::new("/nonexistent"),
            &["get", "s1", "--kubeconfig", &path, "-n", "elsewhere"],
        )
        .await
        .failed();
        assert_eq!(
            err,
            "error: agentsession \"s1\" not found in namespace \"elsewhere\"\n"
        );
    })
    .await;
}

#[tokio::test]
async fn send_appends_and_numbers_messages_after_the_prompt() {
    with_ns("cli-send", |ns| async move {
        in_ns(&ns, &["new", "with-prompt", "--prompt", "p"])
            .await
            .ok();
        let out = in_ns(&ns, &["send", "with-prompt", "first"]).await.ok();
        assert_eq!(out, "message 2 queued for with-prompt\n");
        let out = in_ns(&ns, &["send", "with-prompt", "second"]).await.ok();
        assert_eq!(out, "message 3 queued for with-prompt\n");
        assert_eq!(
            session(&ns, "with-prompt").await.spec.messages,
            ["first", "second"]
        );

        // spec.messages absent altogether (created by someone else without the field).
        let api: Api<AgentSession> = ns.api();
        let bare: AgentSession = match serde_json::from_value(json!({
            "apiVersion": "ccplant.io/v1alpha1", "kind": "AgentSession",
            "metadata": { "name": "bare" }, "spec": {}
        })) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        if let Err(e) = api.create(&Default::default(), &bare).await {
            panic!("creating bare: {e}");
        }
        let out = in_ns(&ns, &["send", "bare", "hello"]).await.ok();
        assert_eq!(out, "message 1 queued for bare\n");
        assert_eq!(session(&ns, "bare").await.spec.messages, ["hello"]);

        // The apiserver refuses an empty message; its message is passed on.
        let err = in_ns(&ns, &["send", "bare", ""]).await.failed();
        assert!(err.contains("spec.messages[1]"), "{err}");
        assert_eq!(session(&ns, "bare").await.spec.messages, ["hello"]);
    })
    .await;
}

#[tokio::test]
async fn twenty_concurrent_sends_each_land_exactly_once() {
    with_ns("cli-race", |ns| async move {
        in_ns(&ns, &["new", "s1"]).await.ok();
        let kubeconfig = TestEnv::global().kubeconfig.clone();
        let texts: Vec<String> = (0..20).map(|i| format!("message-{i:02}")).collect();
        let children: Vec<_> = texts
            .iter()
            .map(
                |text| match plugin(&kubeconfig, &["send", "s1", text, "-n", &ns.name]).spawn() {
                    Ok(child) => child,
                    Err(e) => panic!("spawning send: {e}"),
                },
            )
            .collect();
        let mut numbers = Vec::new();
        for (text, child) in texts.iter().zip(children) {
            let run: Run = match child.wait_with_output().await {
                Ok(out) => out.into(),
                Err(e) => panic!("waiting for send {text}: {e}"),
            };
            let out = run.ok();
            let number: usize = match out
                .strip_prefix("message ")
                .and_then(|r| r.strip_suffix(" queued for s1\n"))
                .map(str::parse)
            {
                Some(Ok(n)) => n,
                _ => panic!("unexpected output of send {text}: {out:?}"),
            };
            numbers.push((number, text.clone()));
        }
        let messages = session(&ns, "s1").await.spec.messages;
        assert_eq!(messages.len(), 20, "{messages:#?}");
        let distinct: BTreeSet<&String> = messages.iter().collect();
        assert_eq!(distinct.len(), 20, "a message landed twice: {messages:#?}");
        assert_eq!(distinct, texts.iter().collect(), "{messages:#?}");
        // Each sender was told the position its message really got.
        for (number, text) in numbers {
            assert_eq!(messages.get(number - 1), Some(&text), "{messages:#?}");
        }
    })
    .await;
}

#[tokio::test]
async fn get_prints_a_table_and_the_objects() {
    with_ns("cli-get", |ns| async move {
        let err = in_ns(&ns, &["get"]).await;
        assert_eq!(err.code, Some(0));
        assert_eq!(err.stdout, "");
        assert_eq!(err.stderr, format!("No resources found in {} namespace.\n", ns.name));

        in_ns(&ns, &["new", "busy-session", "--prompt", "p"]).await.ok();
        in_ns(&ns, &["send", "busy-session", "m1"]).await.ok();
        in_ns(&ns, &["send", "busy-session", "m2"]).await.ok();
        in_ns(&ns, &["new", "b"]).await.ok();
        let expires = k8s_openapi::jiff::Timestamp::now()
            + k8s_openapi::jiff::SignedDuration::from_secs(24 * 3600);
        set_status(
            &ns,
            "busy-session",
            json!({
                "phase": "Running",
                "endpoint": "http://busy-session.ns.svc:3284",
                "expiresAt": expires.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
                "agent": { "state": "Working", "deliveredMessages": 2 },
            }),
        )
        .await;

        let table = in_ns(&ns, &["get"]).await.ok();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        let header = "NAME           PHASE     AGENT     DELIVERED   ENDPOINT                          EXPIRES   AGE";
        assert_eq!(lines[0], header, "{table}");
        let cells = |line: &str| line.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
        // Sorted by name: b first.
        let b = cells(lines[1]);
        assert_eq!(b[..6], ["b", "<none>", "<none>", "0/0", "<none>", "<none>"], "{table}");
        let busy = cells(lines[2]);
        assert_eq!(
            busy[..5],
            ["busy-session", "Running", "Working", "2/3", "http://busy-session.ns.svc:3284"],
            "{table}"
        );
        assert!(["23h59m", "23h58m", "1d"].contains(&busy[5].as_str()), "{table}");
        assert!(busy[6].ends_with('s'), "a fresh session is seconds old: {table}");
        // Columns are aligned: every cell starts where its header does.
        for line in &lines[1..] {
            for title in ["PHASE", "AGENT", "DELIVERED", "ENDPOINT", "EXPIRES", "AGE"] {
                let col = header.find(title).unwrap_or_default();
                assert_ne!(line.as_bytes()[col], b' ', "{title} misaligned:\n{table}");
                assert_eq!(line.as_bytes()[col - 1], b' ', "{title} misaligned:\n{table}");
            }
        }

        let one = in_ns(&ns, &["get", "busy-session"]).await.ok();
        assert_eq!(one.lines().count(), 2, "{one}");
        assert!(one.lines().nth(1).is_some_and(|l| l.starts_with("busy-session ")), "{one}");

        let json: Value = match serde_json::from_str(&in_ns(&ns, &["get", "busy-session", "-o", "json"]).await.ok()) {
            Ok(v) => v,
            Err(e) => panic!("get -o json is not JSON: {e}"),
        };
        assert_eq!(json["kind"], "AgentSession");
        assert_eq!(json["spec"]["messages"], json!(["m1", "m2"]));
        assert_eq!(json["status"]["agent"]["deliveredMessages"], 2);
        let list: Value = match serde_json::from_str(&in_ns(&ns, &["get", "-o", "json"]).await.ok()) {
            Ok(v) => v,
            Err(e) => panic!("get -o json is not JSON: {e}"),
        };
        assert_eq!(list["kind"], "List");
        assert_eq!(list["items"][0]["metadata"]["name"], "b");
        assert_eq!(list["items"][1]["metadata"]["name"], "busy-session");
        let yaml = in_ns(&ns, &["get", "b", "-o", "yaml"]).await.ok();
        assert!(yaml.starts_with("apiVersion: ccplant.io/v1alpha1\nkind: AgentSession\n"), "{yaml}");
        assert!(yaml.contains("\n  name: b\n"), "{yaml}");
    })
    .await;
}

#[tokio::test]
async fn wait_times_out_with_the_last_state() {
    with_ns("cli-wait-to", |ns| async move {
        in_ns(&ns, &["new", "s1", "--prompt", "p"]).await.ok();
        set_status(&ns, "s1", json!({ "phase": "Starting", "agent": { "state": "Starting" } })).await;
        let _turn = WATCHING.lock().await;
        let started = Instant::now();
        let err = in_ns(&ns, &["wait", "s1", "--for", "phase=Running", "--timeout", "2s"])
            .await
            .failed();
        let took = started.elapsed();
        assert_eq!(
            err,
            "error: timed out after 2s waiting for agentsession \"s1\" to be phase=Running; last seen: phase Starting, agent Starting, 0/1 messages delivered\n"
        );
        assert!(took >= Duration::from_secs(2), "gave up early: {took:?}");
        assert!(took < Duration::from_secs(20), "overran: {took:?}");
    })
    .await;
}

#[tokio::test]
async fn wait_for_idle_returns_once_every_message_was_delivered() {
    with_ns("cli-wait-idle", |ns| async move {
        in_ns(&ns, &["new", "s1", "--prompt", "p"]).await.ok();
        in_ns(&ns, &["send", "s1", "m1"]).await.ok();
        set_status(
            &ns,
            "s1",
            json!({ "phase": "Running", "agent": { "state": "Working", "deliveredMessages": 1 } }),
        )
        .await;
        let _turn = WATCHING.lock().await;
        let baseline = single_session_watches().await;
        let kubeconfig = TestEnv::global().kubeconfig.clone();
        let mut child = match plugin(
            &kubeconfig,
            &[
                "wait",
                "s1",
                "--for",
                "idle",
                "--timeout",
                "2m",
                "-n",
                &ns.name,
            ],
        )
        .spawn()
        {
            Ok(c) => c,
            Err(e) => panic!("spawning wait: {e}"),
        };
        until_watching(baseline).await;
        // Idle but one message short: not yet.
        set_status(
            &ns,
            "s1",
            json!({ "agent": { "state": "Idle", "deliveredMessages": 1 } }),
        )
        .await;
        set_status(
            &ns,
            "s1",
            json!({ "agent": { "state": "Working", "deliveredMessages": 2 } }),
        )
        .await;
        assert!(
            matches!(child.try_wait(), Ok(None)),
            "wait returned before the agent was idle"
        );
        set_status(
            &ns,
            "s1",
            json!({ "agent": { "state": "Idle", "deliveredMessages": 2 } }),
        )
        .await;
        let run: Run = match tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
        {
            Ok(Ok(out)) => out.into(),
            Ok(Err(e)) => panic!("waiting for wait: {e}"),
            Err(_) => panic!("wait --for idle did not return within 60s of the agent going idle"),
        };
        assert_eq!(
            run.ok(),
            "agentsession.ccplant.io/s1 condition met (idle)\n"
        );

        // A condition that already holds returns at once; the bare phase is accepted too.
        let out = in_ns(&ns, &["wait", "s1", "--for", "Running"]).await.ok();
        assert_eq!(
            out,
            "agentsession.ccplant.io/s1 condition met (phase=Running)\n"
        );
    })
    .await;
}

#[tokio::test]
async fn wait_watches_until_the_phase_is_reached() {
    with_ns("cli-wait-phase", |ns| async move {
        in_ns(&ns, &["new", "s1"]).await.ok();
        let _turn = WATCHING.lock().await;
        let baseline = single_session_watches().await;
        let kubeconfig = TestEnv::global().kubeconfig.clone();
        let mut child = match plugin(
            &kubeconfig,
            &["wait", "s1", "--for", "phase=Running", "-n", &ns.name],
        )
        .spawn()
        {
            Ok(c) => c,
            Err(e) => panic!("spawning wait: {e}"),
        };
        until_watching(baseline).await;
        set_status(&ns, "s1", json!({ "phase": "Starting" })).await;
        assert!(
            matches!(child.try_wait(), Ok(None)),
            "wait returned before the phase was reached"
        );
        set_status(&ns, "s1", json!({ "phase": "Running" })).await;
        let run: Run =
            match tokio::time::timeout(Duration::from_secs(60), child.wait_with_output()).await {
                Ok(Ok(out)) => out.into(),
                Ok(Err(e)) => panic!("waiting for wait: {e}"),
                Err(_) => panic!("wait --for phase=Running did not return within 60s"),
            };
        assert_eq!(
            run.ok(),
            "agentsession.ccplant.io/s1 condition met (phase=Running)\n"
        );
    })
    .await;
}

#[tokio::test]
async fn wait_fails_fast_when_the_session_finished_otherwise() {
    with_ns("cli-wait-fail", |ns| async move {
        in_ns(&ns, &["new", "s1"]).await.ok();
        set_status(&ns, "s1", json!({ "phase": "Failed", "message": "the agent exited with code 3" })).await;
        let started = Instant::now();
        let err = in_ns(&ns, &["wait", "s1", "--for", "phase=Running", "--timeout", "5m"])
            .await
            .failed();
        assert_eq!(
            err,
            "error: agentsession \"s1\" finished with phase Failed while waiting for it to be phase=Running: the agent exited with code 3\n"
        );
        assert!(started.elapsed() < Duration::from_secs(30), "did not fail fast");
        let err = in_ns(&ns, &["wait", "s1", "--for", "idle"]).await.failed();
        assert!(err.starts_with("error: agentsession \"s1\" finished with phase Failed while waiting for it to be idle"), "{err}");
        // A message for a finished session is still recorded, with a warning.
        let run = in_ns(&ns, &["send", "s1", "too late"]).await;
        assert_eq!(
            run.stderr,
            "warning: agentsession \"s1\" is Failed: the operator delivers no more messages to a finished session\n"
        );
        assert_eq!(run.ok(), "message 1 queued for s1\n");
        // Waiting for the phase it finished in succeeds.
        in_ns(&ns, &["wait", "s1", "--for", "phase=Failed"]).await.ok();
    })
    .await;
}

#[tokio::test]
async fn suspend_and_resume_flip_spec_suspend_and_stamp_the_resume_annotation() {
    with_ns("cli-suspend", |ns| async move {
        in_ns(&ns, &["new", "s1"]).await.ok();
        let out = in_ns(&ns, &["suspend", "s1"]).await.ok();
        assert_eq!(out, "agentsession.ccplant.io/s1 suspended\n");
        let s = session(&ns, "s1").await;
        assert!(s.spec.suspend);
        assert!(
            s.metadata
                .annotations
                .as_ref()
                .is_none_or(|a| !a.contains_key(RESUME_ANNOTATION))
        );

        let before = k8s_openapi::jiff::Timestamp::now();
        let out = in_ns(&ns, &["resume", "s1"]).await.ok();
        assert_eq!(out, "agentsession.ccplant.io/s1 resumed\n");
        let s = session(&ns, "s1").await;
        assert!(!s.spec.suspend);
        let stamp = s
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(RESUME_ANNOTATION))
            .cloned()
            .unwrap_or_default();
        let at: k8s_openapi::jiff::Timestamp = match stamp.parse() {
            Ok(t) => t,
            Err(e) => panic!("annotation {stamp:?} is not RFC 3339: {e}"),
        };
        assert!(stamp.ends_with('Z') && stamp.len() == 20, "{stamp}");
        let drift = (at.as_second() - before.as_second()).abs();
        assert!(drift <= 60, "annotation {stamp} is not the current time");
    })
    .await;
}

#[tokio::test]
async fn every_verb_names_an_unknown_session() {
    with_ns("cli-unknown", |ns| async move {
        for args in [
            &["send", "nope", "hi"][..],
            &["get", "nope"],
            &["get", "nope", "-o", "json"],
            &["wait", "nope", "--for", "idle"],
            &["suspend", "nope"],
            &["resume", "nope"],
        ] {
            let err = in_ns(&ns, args).await.failed();
            assert_eq!(err, not_found("nope", &ns), "{args:?}");
        }
        let err = ccplant(&["new", "s1", "-n", "no-such-namespace"])
            .await
            .failed();
        assert_eq!(err, "error: namespace \"no-such-namespace\" not found\n");
    })
    .await;
}
