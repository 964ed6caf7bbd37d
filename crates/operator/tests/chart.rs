//! The Helm chart `charts/ccplant`: `helm lint --strict` is clean, `helm template` renders what a
//! platform team expects (least-privilege RBAC, restricted securityContext, PDB, leader election,
//! optional monitoring), the values schema refuses bad values with a readable message, and the
//! chart installs into the real control plane with RBAC that grants exactly what it says.
//!
//! That this RBAC is *sufficient* is proven by `crates/testenv/scripts/chart-e2e.sh`, which runs
//! the controller tests with the chart's ServiceAccount token.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use ccplant_testenv::{Binaries, TestEnv, TestNamespace, wait_for, wait_for_deletion};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::Api;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

const RELEASE: &str = "ccplant";
const NAMESPACE: &str = "ccplant-system";
const T: Duration = Duration::from_secs(120);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn chart_dir() -> PathBuf {
    repo_root().join("charts/ccplant")
}

/// The helm binary of the test environment, without starting a control plane (lint and
/// template need none).
fn helm_bin() -> &'static Path {
    static BINS: OnceLock<Binaries> = OnceLock::new();
    &BINS
        .get_or_init(|| match Binaries::ensure() {
            Ok(b) => b,
            Err(e) => panic!("helm is built by crates/testenv/scripts/build-binaries.sh: {e:#}"),
        })
        .helm
}

fn describe(out: &Output) -> String {
    format!(
        "exit {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `--set`-style arguments: `["replicaCount=1"]` → `--set replicaCount=1`.
fn set_args(sets: &[&str]) -> Vec<String> {
    sets.iter()
        .flat_map(|s| ["--set".to_string(), s.to_string()])
        .collect()
}

fn helm_template(sets: &[&str]) -> Output {
    Command::new(helm_bin())
        .args(["template", RELEASE])
        .arg(chart_dir())
        .args(["--namespace", NAMESPACE])
        .args(set_args(sets))
        .output()
        .unwrap()
}

/// Renders the chart and parses every document (as the apiserver would read it).
fn render(sets: &[&str]) -> Vec<Value> {
    let out = helm_template(sets);
    assert!(
        out.status.success(),
        "helm template {sets:?}: {}",
        describe(&out)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("YAML: {e}\n{text}")))
        .filter(|v| !v.is_null())
        .collect();
    for d in &docs {
        assert!(
            d["apiVersion"].is_string()
                && d["kind"].is_string()
                && d["metadata"]["name"].is_string(),
            "every document is a named object: {d:#}"
        );
    }
    docs
}

fn kinds(docs: &[Value]) -> BTreeSet<String> {
    docs.iter()
        .map(|d| d["kind"].as_str().unwrap().to_string())
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str, namespace: Option<&str>, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| {
            d["kind"] == kind
                && d["metadata"]["name"] == name
                && d["metadata"]["namespace"].as_str() == namespace
        })
        .unwrap_or_else(|| {
            panic!(
                "no {kind} {namespace:?}/{name} among {:?}",
                docs.iter()
                    .map(|d| format!(
                        "{} {}/{}",
                        d["kind"].as_str().unwrap_or_default(),
                        d["metadata"]["namespace"].as_str().unwrap_or_default(),
                        d["metadata"]["name"].as_str().unwrap_or_default()
                    ))
                    .collect::<Vec<_>>()
            )
        })
}

fn all_of<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

/// A rule set as `"group/resource[:name,…]" → verbs`, so a comparison shows exactly what differs.
fn rule_map(role: &Value) -> BTreeMap<String, BTreeSet<String>> {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    };
    let mut map: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for rule in role["rules"].as_array().unwrap() {
        let names = strings(&rule["resourceNames"]);
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                let mut key = format!("{group}/{resource}");
                if !names.is_empty() {
                    key = format!("{key}:{}", names.join(","));
                }
                map.entry(key).or_default().extend(strings(&rule["verbs"]));
            }
        }
    }
    map
}

fn expected(entries: &[(&str, &[&str])]) -> BTreeMap<String, BTreeSet<String>> {
    entries
        .iter()
        .map(|(k, verbs)| (k.to_string(), verbs.iter().map(|v| v.to_string()).collect()))
        .collect()
}

/// Exactly the verbs the operator's code uses in a watched namespace (see the chart's
/// `ccplant.watchRules` for where each comes from).
fn watch_rules() -> BTreeMap<String, BTreeSet<String>> {
    expected(&[
        (
            "ccplant.io/agentsessions",
            &["list", "watch", "patch", "delete"],
        ),
        ("ccplant.io/githubtasks", &["list", "watch"]),
        ("ccplant.io/agentsessions/status", &["patch"]),
        ("ccplant.io/githubtasks/status", &["patch"]),
        ("ccplant.io/agentsessions/finalizers", &["update"]),
        ("/pods", &["list", "watch", "create", "patch", "delete"]),
        ("/services", &["list", "watch", "create", "patch"]),
        (
            "/persistentvolumeclaims",
            &["list", "watch", "create", "patch"],
        ),
        (
            "networking.k8s.io/networkpolicies",
            &["list", "watch", "create", "patch", "delete"],
        ),
        ("/secrets", &["get", "create", "patch", "delete"]),
        ("events.k8s.io/events", &["create", "patch"]),
    ])
}

/// The GitHub access policy's cluster-wide reads, whatever the watched namespaces.
fn policy_rules() -> BTreeMap<String, BTreeSet<String>> {
    expected(&[
        ("ccplant.io/githubcredentials", &["list", "watch"]),
        ("ccplant.io/agentsessionclasses", &["list", "watch"]),
        ("ccplant.io/githubcredentials/status", &["patch"]),
        ("/namespaces", &["list", "watch"]),
    ])
}

fn lease_rules(lease: &str) -> BTreeMap<String, BTreeSet<String>> {
    let named = format!("coordination.k8s.io/leases:{lease}");
    let mut m = expected(&[("coordination.k8s.io/leases", &["create"])]);
    m.insert(
        named,
        ["get", "list", "watch", "update"]
            .into_iter()
            .map(String::from)
            .collect(),
    );
    m
}

/// No wildcard anywhere in any rule, and Secrets are never listed or watched.
fn assert_least_privilege(docs: &[Value]) {
    for role in docs
        .iter()
        .filter(|d| d["kind"] == "Role" || d["kind"] == "ClusterRole")
    {
        let text = role["rules"].to_string();
        assert!(
            !text.contains('*'),
            "wildcard in {}: {text}",
            role["metadata"]["name"]
        );
        for (key, verbs) in rule_map(role) {
            if key == "/secrets" || key.starts_with("/secrets:") {
                assert!(
                    !verbs.contains("list") && !verbs.contains("watch"),
                    "{} may {verbs:?} {key}",
                    role["metadata"]["name"]
                );
            }
        }
    }
}

fn container(deployment: &Value) -> &Value {
    let containers = deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(containers.len(), 1, "one container: {containers:#?}");
    &containers[0]
}

fn args(deployment: &Value) -> Vec<String> {
    container(deployment)["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

fn chart_app_version() -> String {
    let chart: Value =
        serde_yaml::from_str(&std::fs::read_to_string(chart_dir().join("Chart.yaml")).unwrap())
            .unwrap();
    chart["appVersion"].as_str().unwrap().to_string()
}

#[test]
fn helm_lint_strict_is_clean_with_defaults_and_with_every_option() {
    for sets in [
        &[][..],
        &[
            "serviceMonitor.enabled=true",
            "prometheusRule.enabled=true",
            "watchNamespaces={a,b}",
            "replicaCount=1",
            "githubCredentials[0].name=platform",
            "githubCredentials[0].secretRef.name=github-app",
            "githubCredentials[0].namespaceSelector.matchLabels.team=a",
            "githubCredentials[0].repositories[0]=acme/*",
            "admission.failurePolicy=Ignore",
            "admission.validationActions={Warn,Audit}",
        ][..],
    ] {
        let out = Command::new(helm_bin())
            .args(["lint", "--strict"])
            .arg(chart_dir())
            .args(set_args(sets))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        eprintln!("helm lint --strict {sets:?}:\n{stdout}");
        assert!(
            out.status.success(),
            "helm lint {sets:?}: {}",
            describe(&out)
        );
        assert!(
            stdout.contains("1 chart(s) linted, 0 chart(s) failed"),
            "{stdout}"
        );
        for level in ["[WARNING]", "[ERROR]"] {
            assert!(!stdout.contains(level), "helm lint {sets:?}: {stdout}");
        }
    }
}

#[test]
fn the_chart_version_follows_the_operator_version() {
    assert_eq!(chart_app_version(), env!("CARGO_PKG_VERSION"));
    let chart: Value =
        serde_yaml::from_str(&std::fs::read_to_string(chart_dir().join("Chart.yaml")).unwrap())
            .unwrap();
    assert_eq!(chart["apiVersion"], "v2");
    assert_eq!(chart["version"], env!("CARGO_PKG_VERSION"));
}

#[test]
fn default_render_is_a_two_replica_leader_elected_least_privilege_operator() {
    let docs = render(&[]);
    assert_eq!(
        kinds(&docs),
        [
            "AgentSessionClass",
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "PodDisruptionBudget",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding"
        ]
        .into_iter()
        .map(String::from)
        .collect(),
        "no monitoring.coreos.com objects by default"
    );
    assert_least_privilege(&docs);

    // ServiceAccount: exactly "ccplant" for release "ccplant" (chart-e2e.sh relies on it).
    let sa = find(&docs, "ServiceAccount", Some(NAMESPACE), "ccplant");
    assert_eq!(sa["automountServiceAccountToken"], false);

    // Cluster-wide RBAC, bound to that ServiceAccount.
    let cluster_role = find(&docs, "ClusterRole", None, "ccplant");
    assert_eq!(rule_map(cluster_role), watch_rules());
    let binding = find(&docs, "ClusterRoleBinding", None, "ccplant");
    assert_eq!(
        binding["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "ccplant"})
    );
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "ccplant", "namespace": NAMESPACE}])
    );
    let policy = find(&docs, "ClusterRole", None, "ccplant-policy");
    assert_eq!(rule_map(policy), policy_rules());
    find(&docs, "ClusterRoleBinding", None, "ccplant-policy");
    // Leases only in the release namespace, by name except for create.
    let leases = find(&docs, "Role", Some(NAMESPACE), "ccplant-leader-election");
    assert_eq!(rule_map(leases), lease_rules("ccplant-operator"));
    let lease_binding = find(
        &docs,
        "RoleBinding",
        Some(NAMESPACE),
        "ccplant-leader-election",
    );
    assert_eq!(lease_binding["roleRef"]["name"], "ccplant-leader-election");
    assert_eq!(lease_binding["subjects"][0]["name"], "ccplant");

    // The Deployment.
    let deployment = find(&docs, "Deployment", Some(NAMESPACE), "ccplant");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let selector = deployment["spec"]["selector"]["matchLabels"].clone();
    assert_eq!(
        selector,
        json!({
            "app.kubernetes.io/name": "ccplant",
            "app.kubernetes.io/instance": "ccplant",
            "app.kubernetes.io/component": "operator",
        })
    );
    let pod = &deployment["spec"]["template"]["spec"];
    for (k, v) in selector.as_object().unwrap() {
        assert_eq!(&deployment["spec"]["template"]["metadata"]["labels"][k], v);
    }
    assert_eq!(pod["serviceAccountName"], "ccplant");
    assert_eq!(pod["automountServiceAccountToken"], true);
    assert_eq!(pod["terminationGracePeriodSeconds"], 30);
    assert_eq!(
        pod["securityContext"],
        json!({
            "runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 65532,
            "seccompProfile": {"type": "RuntimeDefault"},
        })
    );
    assert_eq!(
        pod["topologySpreadConstraints"][0],
        json!({
            "maxSkew": 1,
            "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": selector},
            "matchLabelKeys": ["pod-template-hash"],
        })
    );
    for absent in [
        "priorityClassName",
        "nodeSelector",
        "tolerations",
        "affinity",
        "imagePullSecrets",
    ] {
        assert!(
            pod.get(absent).is_none(),
            "{absent} unset by default: {pod:#}"
        );
    }
    let c = container(deployment);
    assert_eq!(
        c["image"],
        format!("ghcr.io/ccplant/ccplant-operator:{}", chart_app_version())
    );
    assert_eq!(c["imagePullPolicy"], "IfNotPresent");
    assert_eq!(
        args(deployment),
        [
            "run",
            "--github-api-url=https://api.github.com",
            "--github-timeout=30s",
            "--max-session-duration=24h",
            "--operator-pod-labels=app.kubernetes.io/component=operator,app.kubernetes.io/instance=ccplant,app.kubernetes.io/name=ccplant",
            "--session-concurrency=16",
            "--task-concurrency=8",
            "--log-format=json",
            "--log-level=info",
            "--leader-elect=true",
            "--lease-name=ccplant-operator",
            "--lease-namespace=ccplant-system",
            "--metrics-addr=0.0.0.0:8080",
        ]
    );
    assert_eq!(
        c["env"],
        json!([
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        ])
    );
    assert_eq!(
        c["ports"],
        json!([{"name": "metrics", "containerPort": 8080, "protocol": "TCP"}])
    );
    assert_eq!(
        c["livenessProbe"]["httpGet"],
        json!({"path": "/healthz", "port": "metrics"})
    );
    assert_eq!(
        c["readinessProbe"]["httpGet"],
        json!({"path": "/readyz", "port": "metrics"})
    );
    assert_eq!(
        c["resources"],
        json!({"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}})
    );
    let sc = &c["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["runAsUser"], 65532);
    assert_eq!(sc["runAsGroup"], 65532);
    assert_eq!(sc["capabilities"], json!({"drop": ["ALL"]}));
    assert_eq!(sc["seccompProfile"], json!({"type": "RuntimeDefault"}));
    assert!(sc.get("privileged").is_none(), "{sc:#}");

    // Metrics Service selecting the operator pods.
    let svc = find(&docs, "Service", Some(NAMESPACE), "ccplant-metrics");
    assert_eq!(svc["spec"]["selector"], selector);
    assert_eq!(
        svc["spec"]["ports"],
        json!([{"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}])
    );

    // PDB: one replica always up with two running.
    let pdb = find(&docs, "PodDisruptionBudget", Some(NAMESPACE), "ccplant");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert_eq!(pdb["spec"]["selector"]["matchLabels"], selector);
}

#[test]
fn every_option_renders_namespaced_rbac_monitoring_and_no_pdb_for_one_replica() {
    let docs = render(&[
        "serviceMonitor.enabled=true",
        "serviceMonitor.labels.release=prom",
        "prometheusRule.enabled=true",
        "watchNamespaces={a,b}",
        "replicaCount=1",
        "githubCredentials[0].name=platform",
        "githubCredentials[0].secretRef.name=github-app",
        "githubCredentials[0].default=true",
        "githubCredentials[0].namespaceSelector.matchLabels.team=a",
        "githubCredentials[0].repositories[0]=acme/*",
        "githubCredentials[0].actions={CreateIssue,ApproveAndMerge}",
        "config.defaultAgentImage=ghcr.io/acme/agent:1",
        "image.tag=9.9.9",
        "imagePullSecrets[0].name=regcred",
        "priorityClassName=system-cluster-critical",
        "nodeSelector.pool=ops",
        "podAnnotations.team=platform",
        "admission.enabled=false",
    ]);
    let k = kinds(&docs);
    assert!(!k.contains("PodDisruptionBudget"), "{k:?}");
    assert!(!k.contains("ValidatingAdmissionPolicy"), "{k:?}");
    // Cluster-wide: only the policy's reads (GitHubCredentials, Namespaces).
    let cluster_roles: Vec<&str> = all_of(&docs, "ClusterRole")
        .iter()
        .map(|r| r["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(cluster_roles, ["ccplant-policy"]);
    assert_eq!(
        rule_map(find(&docs, "ClusterRole", None, "ccplant-policy")),
        policy_rules()
    );
    assert_least_privilege(&docs);
    // The GitHubCredential the values describe, its Secret in the release namespace.
    let credential = find(&docs, "GitHubCredential", None, "platform");
    assert_eq!(
        credential["spec"],
        json!({
            "secretRef": {"namespace": NAMESPACE, "name": "github-app"},
            "namespaceSelector": {"matchLabels": {"team": "a"}},
            "default": true,
            "repositories": ["acme/*"],
            "actions": ["CreateIssue", "ApproveAndMerge"],
        })
    );

    // A Role and RoleBinding in each watched namespace, nothing cluster-wide.
    for ns in ["a", "b"] {
        let role = find(&docs, "Role", Some(ns), "ccplant");
        assert_eq!(rule_map(role), watch_rules(), "Role in {ns}");
        let binding = find(&docs, "RoleBinding", Some(ns), "ccplant");
        assert_eq!(binding["roleRef"]["kind"], "Role");
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": "ccplant", "namespace": NAMESPACE}])
        );
    }
    // Credential Secrets live in the release namespace, which is not watched: `get` there.
    let secret_role = find(&docs, "Role", Some(NAMESPACE), "ccplant-credential-secrets");
    assert_eq!(rule_map(secret_role), expected(&[("/secrets", &["get"])]));
    find(
        &docs,
        "RoleBinding",
        Some(NAMESPACE),
        "ccplant-credential-secrets",
    );
    // Leader election stays on by default, also with one replica.
    let leases = find(&docs, "Role", Some(NAMESPACE), "ccplant-leader-election");
    assert_eq!(rule_map(leases), lease_rules("ccplant-operator"));
    let roles: Vec<_> = all_of(&docs, "Role")
        .iter()
        .map(|r| {
            format!(
                "{}/{}",
                r["metadata"]["namespace"].as_str().unwrap(),
                r["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(roles.len(), 4, "{roles:?}");

    let deployment = find(&docs, "Deployment", Some(NAMESPACE), "ccplant");
    assert_eq!(deployment["spec"]["replicas"], 1);
    let a = args(deployment);
    for wanted in [
        "--namespaces=a,b",
        "--default-agent-image=ghcr.io/acme/agent:1",
        "--leader-elect=true",
    ] {
        assert!(a.iter().any(|x| x == wanted), "{wanted} in {a:?}");
    }
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(
        container(deployment)["image"],
        "ghcr.io/ccplant/ccplant-operator:9.9.9"
    );
    assert_eq!(pod["imagePullSecrets"], json!([{"name": "regcred"}]));
    assert_eq!(pod["priorityClassName"], "system-cluster-critical");
    assert_eq!(pod["nodeSelector"], json!({"pool": "ops"}));
    assert_eq!(
        deployment["spec"]["template"]["metadata"]["annotations"],
        json!({"team": "platform"})
    );

    // ServiceMonitor scraping the metrics Service's named port.
    let sm = find(&docs, "ServiceMonitor", Some(NAMESPACE), "ccplant");
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(sm["metadata"]["labels"]["release"], "prom");
    let svc = find(&docs, "Service", Some(NAMESPACE), "ccplant-metrics");
    for (k, v) in sm["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(
            &svc["metadata"]["labels"][k], v,
            "ServiceMonitor selects the Service"
        );
    }
    assert_eq!(
        sm["spec"]["namespaceSelector"],
        json!({"matchNames": [NAMESPACE]})
    );
    assert_eq!(sm["spec"]["endpoints"][0]["port"], "metrics");
    assert_eq!(sm["spec"]["endpoints"][0]["path"], "/metrics");

    // PrometheusRule: the default alerts, each scoped to this release's series.
    let rule = find(&docs, "PrometheusRule", Some(NAMESPACE), "ccplant");
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    let rules = rule["spec"]["groups"][0]["rules"].as_array().unwrap();
    let alerts: Vec<&str> = rules.iter().map(|r| r["alert"].as_str().unwrap()).collect();
    assert_eq!(
        alerts,
        [
            "CcplantOperatorDown",
            "CcplantNoLeader",
            "CcplantMultipleLeaders",
            "CcplantReconcileErrors",
            "CcplantGitHubRateLimitLow",
            "CcplantSessionsStuckPending"
        ]
    );
    for r in rules {
        let expr = r["expr"].as_str().unwrap();
        assert!(
            expr.contains(r#"job="ccplant-metrics", namespace="ccplant-system""#),
            "{expr}"
        );
        assert!(r["labels"]["severity"].is_string(), "{r:#}");
        assert!(r["annotations"]["summary"].is_string(), "{r:#}");
    }
}

#[test]
fn leader_election_is_forced_on_with_several_replicas_and_can_be_off_with_one() {
    let off = render(&["replicaCount=1", "leaderElection.enabled=false"]);
    let deployment = find(&off, "Deployment", Some(NAMESPACE), "ccplant");
    let a = args(deployment);
    assert!(a.contains(&"--leader-elect=false".to_string()), "{a:?}");
    assert!(!a.iter().any(|x| x.starts_with("--lease-")), "{a:?}");
    assert!(
        all_of(&off, "Role").is_empty(),
        "no lease Role without leader election"
    );

    let forced = render(&["replicaCount=3", "leaderElection.enabled=false"]);
    let deployment = find(&forced, "Deployment", Some(NAMESPACE), "ccplant");
    assert!(args(deployment).contains(&"--leader-elect=true".to_string()));
    find(&forced, "Role", Some(NAMESPACE), "ccplant-leader-election");
    let pdb = find(&forced, "PodDisruptionBudget", Some(NAMESPACE), "ccplant");
    assert_eq!(pdb["spec"]["minAvailable"], 1);

    let named = render(&["leaderElection.leaseName=my-lease"]);
    let deployment = find(&named, "Deployment", Some(NAMESPACE), "ccplant");
    assert!(args(deployment).contains(&"--lease-name=my-lease".to_string()));
    let leases = find(&named, "Role", Some(NAMESPACE), "ccplant-leader-election");
    assert_eq!(rule_map(leases), lease_rules("my-lease"));
}

#[test]
fn the_values_schema_refuses_bad_values_with_a_readable_message() {
    for (set, must_say) in [
        (
            "replicaCount=two",
            "at '/replicaCount': got string, want integer",
        ),
        (
            "replicaCount=0",
            "at '/replicaCount': minimum: got 0, want 1",
        ),
        ("replicas=2", "additional properties 'replicas' not allowed"),
        (
            "logging.format=xml",
            "at '/logging/format': value must be one of 'auto', 'json', 'text'",
        ),
        (
            "config.maxSessionDuration=1d",
            "at '/config/maxSessionDuration'",
        ),
        ("image.pullPolicy=Sometimes", "at '/image/pullPolicy'"),
        ("watchNamespaces={Team_A}", "at '/watchNamespaces/0'"),
        (
            "admission.failurePolicy=Never",
            "at '/admission/failurePolicy'",
        ),
        // The apiserver refuses Deny together with Warn.
        (
            "admission.validationActions={Deny,Warn}",
            "at '/admission/validationActions': 'not' failed",
        ),
    ] {
        let out = helm_template(&[set]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{set} was accepted: {}",
            describe(&out)
        );
        assert!(
            stderr.contains("values don't meet the specifications of the schema")
                && stderr.contains(must_say),
            "{set}: expected {must_say:?} in: {stderr}"
        );
    }
}

/// `kubectl auth can-i` as the chart's ServiceAccount: true for "yes".
fn sa_can(env: &TestEnv, sa: &str, args: &[&str]) -> bool {
    let out = env
        .kubectl()
        .args(["auth", "can-i"])
        .args(args)
        .arg(format!("--as={sa}"))
        .output()
        .unwrap();
    match String::from_utf8_lossy(&out.stdout).trim() {
        "yes" => true,
        "no" => false,
        _ => panic!("kubectl auth can-i {args:?}: {}", describe(&out)),
    }
}

fn assert_sa_can(env: &TestEnv, sa: &str, checks: &[(&[&str], bool)]) {
    let mut wrong = Vec::new();
    for (args, allowed) in checks {
        if sa_can(env, sa, args) != *allowed {
            wrong.push(format!(
                "{args:?} should be {}",
                if *allowed { "yes" } else { "no" }
            ));
        }
    }
    assert!(wrong.is_empty(), "{sa}: {wrong:#?}");
}

fn helm_ok(env: &TestEnv, args: &[&str]) -> String {
    let out = env.helm().args(args).output().unwrap();
    assert!(out.status.success(), "helm {args:?}: {}", describe(&out));
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Installs with `--wait` (KWOK nodes mark the pods Running and Ready), runs `check`, then
/// uninstalls and waits until the release's objects are gone.
async fn with_release<F, Fut>(env: &TestEnv, ns: &TestNamespace, sets: &[&str], check: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()>,
{
    // The release is named after the namespace: cluster-scoped names stay unique.
    let release = ns.name.clone();
    let chart = chart_dir().display().to_string();
    let mut install = vec![
        "install",
        &release,
        &chart,
        "-n",
        &ns.name,
        "--wait",
        "--timeout",
        "3m",
    ];
    let set = set_args(sets);
    install.extend(set.iter().map(String::as_str));
    let notes = helm_ok(env, &install);
    assert!(notes.contains("STATUS: deployed"), "{notes}");
    assert!(
        notes.contains(&format!("rollout status deployment/{release}")),
        "NOTES: {notes}"
    );
    check(release.clone()).await;
    helm_ok(
        env,
        &[
            "uninstall",
            &release,
            "-n",
            &ns.name,
            "--wait",
            "--timeout",
            "2m",
        ],
    );
    wait_for_deletion(&ns.api::<Deployment>(), &release, T, "uninstalled").await;
}

#[tokio::test]
async fn installs_cluster_wide_into_the_control_plane_with_exactly_the_rbac_it_renders() {
    let env = TestEnv::global();
    env.with_namespace("ccplant-chart", |ns| async move {
        let ns_name = ns.name.clone();
        let scope = ns.clone();
        with_release(env, &ns, &[], |release| async move {
            let ns = scope;
            let deployment = wait_for(
                &ns.api::<Deployment>(),
                &release,
                T,
                "2 replicas available",
                |d: &Deployment| d.status.as_ref().and_then(|s| s.available_replicas) == Some(2),
            )
            .await;
            assert_eq!(deployment.spec.replicas, Some(2));
            ns.api::<ServiceAccount>().get(&release).await.unwrap();
            let cluster_roles: Api<ClusterRole> = Api::all(ns.client.clone());
            let cluster_role = cluster_roles.get(&release).await.unwrap();
            let stored = serde_json::to_value(&cluster_role).unwrap();
            assert_eq!(rule_map(&stored), watch_rules());
            Api::<ClusterRoleBinding>::all(ns.client.clone())
                .get(&release)
                .await
                .unwrap();
            let lease_role = ns
                .api::<Role>()
                .get(&format!("{release}-leader-election"))
                .await
                .unwrap();
            let lease = format!("{release}-operator");
            assert_eq!(
                rule_map(&serde_json::to_value(&lease_role).unwrap()),
                lease_rules(&lease)
            );
            ns.api::<RoleBinding>()
                .get(&format!("{release}-leader-election"))
                .await
                .unwrap();

            // What the apiserver's authorizer says about the ServiceAccount.
            let sa = format!("system:serviceaccount:{ns_name}:{release}");
            let lease_ref = format!("leases.coordination.k8s.io/{lease}");
            assert_sa_can(
                env,
                &sa,
                &[
                    (&["list", "agentsessions.ccplant.io", "-A"], true),
                    (&["watch", "githubtasks.ccplant.io", "-A"], true),
                    (
                        &[
                            "patch",
                            "agentsessions.ccplant.io",
                            "--subresource=status",
                            "-n",
                            "team-x",
                        ],
                        true,
                    ),
                    (
                        &[
                            "patch",
                            "githubtasks.ccplant.io",
                            "--subresource=status",
                            "-n",
                            "team-x",
                        ],
                        true,
                    ),
                    (&["update", "githubtasks.ccplant.io", "-n", "team-x"], false),
                    (&["create", "pods", "-n", "team-x"], true),
                    (&["delete", "pods", "-n", "team-x"], true),
                    (
                        &["create", "pods", "--subresource=exec", "-n", "team-x"],
                        false,
                    ),
                    (
                        &[
                            "create",
                            "networkpolicies.networking.k8s.io",
                            "-n",
                            "team-x",
                        ],
                        true,
                    ),
                    (&["get", "secrets", "-n", "team-x"], true),
                    (&["list", "secrets", "-n", "team-x"], false),
                    (&["watch", "secrets", "-A"], false),
                    (&["list", "secrets", "-A"], false),
                    (&["create", "events.events.k8s.io", "-n", "team-x"], true),
                    (
                        &["create", "leases.coordination.k8s.io", "-n", &ns_name],
                        true,
                    ),
                    (&["update", &lease_ref, "-n", &ns_name], true),
                    (
                        &[
                            "update",
                            "leases.coordination.k8s.io/someone-else",
                            "-n",
                            &ns_name,
                        ],
                        false,
                    ),
                    (
                        &["create", "leases.coordination.k8s.io", "-n", "team-x"],
                        false,
                    ),
                    (&["get", "nodes"], false),
                    (
                        &["create", "customresourcedefinitions.apiextensions.k8s.io"],
                        false,
                    ),
                ],
            );
            // The elector lists and watches its Lease with a metadata.name field selector:
            // resourceNames authorizes exactly that, not an unfiltered list.
            let as_sa = format!("--as={sa}");
            let selector = format!("--field-selector=metadata.name={lease}");
            let filtered = env
                .kubectl()
                .args([
                    "get",
                    "leases.coordination.k8s.io",
                    "-n",
                    &ns_name,
                    &selector,
                    &as_sa,
                ])
                .output()
                .unwrap();
            assert!(filtered.status.success(), "{}", describe(&filtered));
            let unfiltered = env
                .kubectl()
                .args(["get", "leases.coordination.k8s.io", "-n", &ns_name, &as_sa])
                .output()
                .unwrap();
            assert!(!unfiltered.status.success(), "{}", describe(&unfiltered));
            assert!(
                String::from_utf8_lossy(&unfiltered.stderr).contains("Forbidden"),
                "{}",
                describe(&unfiltered)
            );
        })
        .await;
        let cluster_roles: Api<ClusterRole> = Api::all(ns.client.clone());
        wait_for_deletion(
            &cluster_roles,
            &ns.name,
            T,
            "ClusterRole removed by uninstall",
        )
        .await;
    })
    .await;
}

#[tokio::test]
async fn installs_scoped_to_watched_namespaces_without_cluster_wide_rights() {
    let env = TestEnv::global();
    env.with_namespace("ccplant-chart-watched", |watched| async move {
        env.with_namespace("ccplant-chart-ns", |ns| async move {
            let set = format!("watchNamespaces={{{}}}", watched.name);
            let ns_name = ns.name.clone();
            let watched_name = watched.name.clone();
            let scope = ns.clone();
            // The cluster-wide install of this control plane already renders the class
            // "default" (cluster-scoped, like the CRDs): this release renders none.
            with_release(
                env,
                &ns,
                &["replicaCount=1", &set, "sessionClasses=null"],
                |release| async move {
                    let ns = scope;
                    wait_for(
                        &ns.api::<Deployment>(),
                        &release,
                        T,
                        "1 replica available",
                        |d: &Deployment| {
                            d.status.as_ref().and_then(|s| s.available_replicas) == Some(1)
                        },
                    )
                    .await;
                    let role = watched.api::<Role>().get(&release).await.unwrap();
                    assert_eq!(
                        rule_map(&serde_json::to_value(&role).unwrap()),
                        watch_rules()
                    );
                    watched.api::<RoleBinding>().get(&release).await.unwrap();
                    let cluster_roles: Api<ClusterRole> = Api::all(ns.client.clone());
                    assert!(cluster_roles.get_opt(&release).await.unwrap().is_none());

                    let sa = format!("system:serviceaccount:{ns_name}:{release}");
                    assert_sa_can(
                        env,
                        &sa,
                        &[
                            (
                                &["list", "agentsessions.ccplant.io", "-n", &watched_name],
                                true,
                            ),
                            (
                                &["watch", "githubtasks.ccplant.io", "-n", &watched_name],
                                true,
                            ),
                            (&["create", "pods", "-n", &watched_name], true),
                            (&["get", "secrets", "-n", &watched_name], true),
                            (&["list", "secrets", "-n", &watched_name], false),
                            (&["list", "agentsessions.ccplant.io", "-A"], false),
                            (&["list", "agentsessions.ccplant.io", "-n", &ns_name], false),
                            (&["create", "pods", "-n", "elsewhere"], false),
                            (&["get", "secrets", "-n", "elsewhere"], false),
                            (
                                &["create", "leases.coordination.k8s.io", "-n", &ns_name],
                                true,
                            ),
                        ],
                    );
                },
            )
            .await;
        })
        .await;
    })
    .await;
}
