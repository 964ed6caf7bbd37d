//! The operator's HTTP server against the real control plane and the fake GitHub: every
//! documented series on /metrics with exactly its documented labels and the values one Running
//! session and one succeeded createIssue task produce; /healthz, /readyz, and 404 elsewhere.
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "github_task/harness.rs"]
mod harness;

use ccplant_api::{AgentSession, AgentSessionPhase, GitHubTask, GitHubTaskPhase};
use ccplant_testenv::{TestEnv, wait_for};
use harness::*;
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(120);

/// The documented contract: family, type, label names of its samples (a histogram's `le` aside).
const SERIES: [(&str, &str, &[&str]); 10] = [
    ("ccplant_reconcile_total", "counter", &["controller"]),
    (
        "ccplant_reconcile_errors_total",
        "counter",
        &["controller", "error"],
    ),
    (
        "ccplant_reconcile_duration_seconds",
        "histogram",
        &["controller"],
    ),
    ("ccplant_sessions", "gauge", &["phase"]),
    ("ccplant_tasks", "gauge", &["phase"]),
    (
        "ccplant_github_requests_total",
        "counter",
        &["endpoint", "status"],
    ),
    (
        "ccplant_github_request_duration_seconds",
        "histogram",
        &["endpoint"],
    ),
    (
        "ccplant_github_rate_limit_remaining",
        "gauge",
        &["credential"],
    ),
    ("ccplant_leader", "gauge", &[]),
    ("ccplant_lease_renewals_total", "counter", &[]),
];

/// One response: status code, headers (lower-case names), body.
struct Response {
    status: u16,
    headers: BTreeMap<String, String>,
    body: String,
}

/// A plain HTTP/1.1 GET (the server closes the connection after the response).
async fn get(base: &str, path: &str) -> Response {
    let addr = base.strip_prefix("http://").unwrap().to_string();
    let path = path.to_string();
    let raw = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(&addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).unwrap();
        let mut raw = Vec::new();
        stream
            .read_to_end(&mut raw)
            .expect("a response within 10 s");
        raw
    })
    .await
    .unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a complete response");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    assert!(
        !headers
            .get("transfer-encoding")
            .is_some_and(|t| t.contains("chunked")),
        "expected a sized body: {headers:?}"
    );
    Response {
        status,
        headers,
        body: body.to_string(),
    }
}

/// One sample line: `name{label="value",...} value`.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the samples of a text-format exposition (label values unescaped).
fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| {
            let name_end = line.find(['{', ' ']).expect("a sample line");
            let name = line[..name_end].to_string();
            let mut labels = BTreeMap::new();
            let mut rest = &line[name_end..];
            if let Some(inner) = rest.strip_prefix('{') {
                let mut chars = inner.char_indices();
                let mut key = String::new();
                loop {
                    let (i, c) = chars.next().expect("unterminated labels");
                    match c {
                        '}' => {
                            rest = &inner[i + 1..];
                            break;
                        }
                        ',' => {}
                        '=' => {
                            assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "{line}");
                            let mut value = String::new();
                            loop {
                                match chars.next().expect("unterminated value").1 {
                                    '"' => break,
                                    '\\' => match chars.next().expect("dangling escape").1 {
                                        'n' => value.push('\n'),
                                        other => value.push(other),
                                    },
                                    c => value.push(c),
                                }
                            }
                            labels.insert(std::mem::take(&mut key), value);
                        }
                        c => key.push(c),
                    }
                }
            }
            let value = rest
                .trim()
                .parse()
                .unwrap_or_else(|e| panic!("{line}: {e}"));
            Sample {
                name,
                labels,
                value,
            }
        })
        .collect()
}

/// The samples of `family`: the family's own name, or a histogram's `_bucket`/`_sum`/`_count`.
fn of_family<'a>(all: &'a [Sample], family: &str, kind: &str) -> Vec<&'a Sample> {
    all.iter()
        .filter(|s| {
            s.name == family
                || (kind == "histogram"
                    && ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|suffix| s.name == format!("{family}{suffix}")))
        })
        .collect()
}

fn value(all: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    all.iter()
        .find(|s| {
            s.name == name
                && s.labels.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

const REFUSED: &str = "status writes of this task are refused by the metrics test";

/// Makes the apiserver refuse every status write of the GitHubTask `doomed` in `ns` (and a
/// dry-run create of it, which tells when the policy is in force), so that its reconciles fail
/// with a real `status_write` error. Returns the name of the policy and of its binding.
async fn refuse_status_writes_of_doomed(client: &kube::Client, ns: &str) -> String {
    let name = format!("{ns}-refuse-status");
    let policy: ValidatingAdmissionPolicy = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": ["ccplant.io"], "apiVersions": ["*"],
                "operations": ["CREATE", "UPDATE"],
                "resources": ["githubtasks", "githubtasks/status"],
            }]},
            "matchConditions": [{"name": "doomed", "expression": "object.metadata.name == 'doomed'"}],
            "validations": [{
                "expression": "request.operation == 'CREATE' && !request.dryRun",
                "message": REFUSED,
            }],
        },
    }))
    .unwrap();
    let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "policyName": name,
            "validationActions": ["Deny"],
            "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}},
        },
    }))
    .unwrap();
    let pp = PostParams::default();
    Api::<ValidatingAdmissionPolicy>::all(client.clone())
        .create(&pp, &policy)
        .await
        .unwrap();
    Api::<ValidatingAdmissionPolicyBinding>::all(client.clone())
        .create(&pp, &binding)
        .await
        .unwrap();
    // Policies take effect a moment after they are created: probe with dry runs.
    let tasks: Api<GitHubTask> = Api::namespaced(client.clone(), ns);
    let doomed = doomed_task();
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match tasks.create(&dry, &doomed).await {
            Err(kube::Error::Api(e)) if e.message.contains(REFUSED) => return name,
            other => assert!(
                Instant::now() < deadline,
                "the admission policy is not in force after 30 s: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn doomed_task() -> GitHubTask {
    task(
        "doomed",
        json!({"repository": "octo/hello", "github": {"secretRef": {"name": SECRET}},
               "createIssue": {"title": "Never created"}}),
    )
}

#[tokio::test]
async fn metrics_health_and_readiness_of_a_working_operator() {
    install_crds();
    TestEnv::global()
        .with_namespace("metrics", |ns| async move {
            let fake = fake_with_repo().await;
            token_secret(&ns).await;
            let mut op = Operator::new(&ns.name, &fake.url(), &[]);
            op.start();
            let base = op.metrics_url().await;

            // Health does not wait for anything; readiness waits for the caches.
            let health = get(&base, "/healthz").await;
            assert_eq!((health.status, health.body.as_str()), (200, "ok"));
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let ready = get(&base, "/readyz").await;
                if ready.status == 200 {
                    assert_eq!(ready.body, "ok");
                    break;
                }
                assert_eq!(ready.status, 503, "{}", ready.body);
                assert!(ready.body.starts_with("not ready: "), "{}", ready.body);
                assert!(Instant::now() < deadline, "never ready: {}", ready.body);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let missing = get(&base, "/nope").await;
            assert_eq!(missing.status, 404, "{}", missing.body);

            let session: AgentSession = serde_json::from_value(json!({
                "apiVersion": "ccplant.io/v1alpha1", "kind": "AgentSession",
                "metadata": {"name": "s"},
                "spec": {"agent": {"image": "ghcr.io/ccplant/agent:1"},
                         "repository": {"name": "octo/hello"},
                         "github": {"secretRef": {"name": SECRET}}},
            }))
            .unwrap();
            ns.api::<AgentSession>()
                .create(&PostParams::default(), &session)
                .await
                .unwrap();
            create(
                &ns,
                &task(
                    "issue",
                    json!({"repository": "octo/hello", "github": {"secretRef": {"name": SECRET}},
                           "createIssue": {"title": "Count me"}}),
                ),
            )
            .await;
            wait_for(
                &ns.api::<AgentSession>(),
                "s",
                T,
                "phase Running",
                |s: &AgentSession| s.phase() == Some(AgentSessionPhase::Running),
            )
            .await;
            wait_phase(&ns, "issue", GitHubTaskPhase::Succeeded, T).await;
            // A task whose reconciles fail: its status can never be written, so it has no
            // phase (counted as Pending) and never reaches GitHub.
            let policy = refuse_status_writes_of_doomed(&ns.client, &ns.name).await;
            create(&ns, &doomed_task()).await;

            // The gauges come from the operator's caches, which may trail the apiserver a little.
            let deadline = Instant::now() + Duration::from_secs(30);
            let (response, all) = loop {
                let response = get(&base, "/metrics").await;
                assert_eq!(response.status, 200, "{}", response.body);
                let all = samples(&response.body);
                let running = value(&all, "ccplant_sessions", &[("phase", "Running")]);
                let succeeded = value(&all, "ccplant_tasks", &[("phase", "Succeeded")]);
                let pending = value(&all, "ccplant_tasks", &[("phase", "Pending")]);
                let errors = value(
                    &all,
                    "ccplant_reconcile_errors_total",
                    &[("controller", "githubtask"), ("error", "status_write")],
                );
                if running == Some(1.0)
                    && succeeded == Some(1.0)
                    && pending == Some(1.0)
                    && errors.is_some_and(|e| e >= 1.0)
                {
                    break (response, all);
                }
                assert!(
                    Instant::now() < deadline,
                    "sessions Running {running:?}, tasks Succeeded {succeeded:?} Pending {pending:?}, \
                     status_write errors {errors:?}:\n{}",
                    response.body
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            let text = &response.body;
            // Lines are searched with their leading newline; the first one has none.
            let lines = format!("\n{text}");
            assert_eq!(
                response.headers.get("content-type").map(String::as_str),
                Some("text/plain; version=0.0.4; charset=utf-8")
            );

            // Every series is declared, and its samples carry exactly the documented labels.
            for (family, kind, labels) in SERIES {
                assert!(
                    lines.contains(&format!("\n# TYPE {family} {kind}\n")),
                    "no `# TYPE {family} {kind}`:\n{text}"
                );
                assert!(
                    lines.contains(&format!("\n# HELP {family} ")),
                    "no HELP for {family}:\n{text}"
                );
                let want: BTreeSet<&str> = labels.iter().copied().collect();
                for s in of_family(&all, family, kind) {
                    let mut got: BTreeSet<&str> = s.labels.keys().map(String::as_str).collect();
                    if s.name.ends_with("_bucket") {
                        assert!(got.remove("le"), "{s:?}");
                    }
                    assert_eq!(got, want, "labels of {s:?}");
                }
            }
            // Every family has samples by now.
            for (family, kind, _) in SERIES {
                assert!(
                    !of_family(&all, family, kind).is_empty(),
                    "no samples of {family}:\n{text}"
                );
            }
            // The only failures are the doomed task's, and they are counted among reconciles.
            let errors: Vec<_> = of_family(&all, "ccplant_reconcile_errors_total", "counter")
                .into_iter()
                .map(|s| (s.labels["controller"].as_str(), s.labels["error"].as_str()))
                .collect();
            assert_eq!(errors, [("githubtask", "status_write")]);
            let failed = value(
                &all,
                "ccplant_reconcile_errors_total",
                &[("controller", "githubtask"), ("error", "status_write")],
            )
            .unwrap();
            let total = value(&all, "ccplant_reconcile_total", &[("controller", "githubtask")]).unwrap();
            assert!(failed < total, "errors {failed} are counted among reconciles {total}");

            // Every phase is present, zeros included.
            let session_phases: BTreeMap<&str, f64> = of_family(&all, "ccplant_sessions", "gauge")
                .into_iter()
                .map(|s| (s.labels["phase"].as_str(), s.value))
                .collect();
            assert_eq!(
                session_phases,
                BTreeMap::from([
                    ("Expired", 0.0),
                    ("Failed", 0.0),
                    ("Pending", 0.0),
                    ("Running", 1.0),
                    ("Starting", 0.0),
                    ("Succeeded", 0.0),
                    ("Suspended", 0.0),
                ])
            );
            let task_phases: BTreeMap<&str, f64> = of_family(&all, "ccplant_tasks", "gauge")
                .into_iter()
                .map(|s| (s.labels["phase"].as_str(), s.value))
                .collect();
            assert_eq!(
                task_phases,
                BTreeMap::from([
                    ("Failed", 0.0),
                    ("Pending", 1.0),
                    ("Running", 0.0),
                    ("Succeeded", 1.0)
                ])
            );

            // --leader-elect=false: this process always leads and never renews a Lease.
            assert_eq!(value(&all, "ccplant_leader", &[]), Some(1.0));
            assert_eq!(value(&all, "ccplant_lease_renewals_total", &[]), Some(0.0));

            for controller in ["agentsession", "githubtask"] {
                let total = value(
                    &all,
                    "ccplant_reconcile_total",
                    &[("controller", controller)],
                );
                assert!(total.is_some_and(|t| t >= 1.0), "{controller}: {total:?}");
                let count = value(
                    &all,
                    "ccplant_reconcile_duration_seconds_count",
                    &[("controller", controller)],
                );
                assert_eq!(count, total, "one duration per reconcile of {controller}");
            }

            // The one issue the fake GitHub created, by endpoint template and status.
            let create_issue = "POST /repos/{owner}/{repo}/issues";
            assert_eq!(
                value(
                    &all,
                    "ccplant_github_requests_total",
                    &[("endpoint", create_issue), ("status", "201")]
                ),
                Some(1.0),
                "{text}"
            );
            assert_eq!(
                value(
                    &all,
                    "ccplant_github_request_duration_seconds_count",
                    &[("endpoint", create_issue)]
                ),
                Some(1.0),
                "{text}"
            );
            let fake_writes = fake
                .requests()
                .iter()
                .filter(|r| r.method == "POST")
                .count();
            let counted_writes: f64 = of_family(&all, "ccplant_github_requests_total", "counter")
                .iter()
                .filter(|s| s.labels["endpoint"].starts_with("POST "))
                .map(|s| s.value)
                .sum();
            assert_eq!(
                counted_writes, fake_writes as f64,
                "every POST the fake saw is counted"
            );

            // The token's rate limit, keyed by its non-secret id.
            let limits = of_family(&all, "ccplant_github_rate_limit_remaining", "gauge");
            assert_eq!(limits.len(), 1, "{limits:?}");
            assert!(
                limits[0].labels["credential"].starts_with("token:"),
                "{limits:?}"
            );
            assert!(!text.contains(TOKEN), "the token never appears");
            assert!(limits[0].value > 0.0, "{limits:?}");

            assert!(!op.exited(), "the operator is still running");
            let dp = DeleteParams::default();
            Api::<ValidatingAdmissionPolicyBinding>::all(ns.client.clone())
                .delete(&policy, &dp)
                .await
                .unwrap();
            Api::<ValidatingAdmissionPolicy>::all(ns.client.clone())
                .delete(&policy, &dp)
                .await
                .unwrap();
        })
        .await;
}
