//! The GitHub access policy (GitHubCredential) against the real control plane and the fake
//! GitHub: every refusal ends in its exact phase, reason and message with no GitHub request
//! made for the object; a credential serves only the namespaces it selects.

use crate::harness::*;
use ccplant_api::{AgentSession, AgentSessionPhase, GitHubCredential, GitHubTaskPhase};
use ccplant_testenv::fake_github::FakeGitHub;
use ccplant_testenv::{TestEnv, TestNamespace, wait_for};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Value, json};
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

/// A GitHubCredential named `name` (cluster-scoped: tests name theirs after their namespace)
/// whose token Secret is in `secret_ns`, selecting the namespaces named in `selects`.
pub async fn credential(
    name: &str,
    secret_ns: &str,
    selects: &[&str],
    extra: Value,
) -> GitHubCredential {
    let mut spec = json!({
        "secretRef": {"namespace": secret_ns, "name": SECRET},
        "namespaceSelector": {"matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "In", "values": selects}
        ]},
        "repositories": ["octo/hello"],
    });
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    let c: GitHubCredential = serde_json::from_value(json!({
        "apiVersion": "ccplant.io/v1alpha1", "kind": "GitHubCredential",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .unwrap();
    let api: Api<GitHubCredential> = Api::all(TestEnv::global().client().await);
    api.create(&PostParams::default(), &c).await.unwrap()
}

/// Deletes the credentials a test created.
pub async fn delete_credentials(names: &[&str]) {
    let api: Api<GitHubCredential> = Api::all(TestEnv::global().client().await);
    for n in names {
        let _ = api.delete(n, &DeleteParams::default()).await;
    }
}

fn session(name: &str, github: Value) -> AgentSession {
    serde_json::from_value(json!({
        "apiVersion": "ccplant.io/v1alpha1", "kind": "AgentSession",
        "metadata": {"name": name},
        "spec": {"agent": {"image": "ghcr.io/ccplant/agent:1"}, "repository": {"name": "octo/hello"}, "github": github},
    }))
    .unwrap()
}

/// (phase, Ready reason, Ready message) of a task.
async fn refused(ns: &TestNamespace, name: &str) -> (String, String, String) {
    let t = wait_phase(ns, name, GitHubTaskPhase::Failed, T).await;
    let (_, reason, message) = ready(&t);
    ("Failed".into(), reason, message)
}

/// Requests the fake saw other than the credentials' own identity look-ups (`GET /user`, the
/// GitHubCredential controller's).
fn object_requests(fake: &FakeGitHub) -> Vec<String> {
    fake.requests()
        .into_iter()
        .filter(|r| !(r.method == "GET" && r.path == "/user"))
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

#[tokio::test]
async fn every_policy_refusal_is_exact_and_sends_nothing_to_github() {
    install_crds();
    TestEnv::global()
        .with_namespace("ghc-rules", |ns| async move {
            let fake = fake_with_repo().await;
            token_secret(&ns).await;
            let main = format!("{}-main", ns.name);
            let other = format!("{}-other", ns.name);
            credential(&main, &ns.name, &[&ns.name], json!({})).await;
            credential(&other, &ns.name, &["somewhere-else"], json!({})).await;
            let mut op = Operator::new(&ns.name, &fake.url(), &[]);
            op.start();

            let by = |c: &str| json!({"credentialName": c});
            let cases: Vec<(&str, Value, String)> = vec![
                (
                    "ns-not-selected",
                    json!({"repository": "octo/hello", "github": by(&other), "createIssue": {"title": "x"}}),
                    format!("GitHubCredential {other} does not allow namespace {}: its namespaceSelector does not select it", ns.name),
                ),
                (
                    "repo-not-matched",
                    json!({"repository": "octo/private", "github": by(&main), "createIssue": {"title": "x"}}),
                    format!("GitHubCredential {main} does not allow repository octo/private: its repositories are octo/hello"),
                ),
                (
                    "action-not-listed",
                    json!({"repository": "octo/hello", "github": by(&main), "approveAndMerge": {"pullRequest": 1}}),
                    format!("GitHubCredential {main} does not allow ApproveAndMerge: its actions are CreateIssue, CreatePullRequest, Comment"),
                ),
                (
                    "no-credential",
                    json!({"repository": "octo/hello", "createIssue": {"title": "x"}}),
                    format!("no default GitHubCredential selects namespace {}: set spec.github.credentialName or spec.github.secretRef", ns.name),
                ),
            ];
            for (name, spec, _) in &cases {
                create(&ns, &task(name, spec.clone())).await;
            }
            // A session asking for more than the credential's ceiling.
            ns.api::<AgentSession>()
                .create(
                    &PostParams::default(),
                    &session("above-ceiling", json!({"credentialName": main, "permissions": {"workflows": "write"}})),
                )
                .await
                .unwrap();
            for (name, _, message) in &cases {
                assert_eq!(
                    refused(&ns, name).await,
                    ("Failed".into(), "NotAllowed".into(), message.clone()),
                    "{name}"
                );
                let t = ns.api::<ccplant_api::GitHubTask>().get(name).await.unwrap();
                assert_eq!(tools_say(&t), "Failed/Degraded", "{name}");
                wait_event(&ns, "GitHubTask", name, |(ty, reason, note)| {
                    ty == "Warning" && reason == "NotAllowed" && note == message
                })
                .await;
            }
            let s = wait_for(
                &ns.api::<AgentSession>(),
                "above-ceiling",
                T,
                "Pending NotAllowed",
                |s: &AgentSession| {
                    s.status.as_ref().is_some_and(|st| {
                        st.conditions.iter().any(|c| c.type_ == "CredentialsReady" && c.reason == "NotAllowed")
                    })
                },
            )
            .await;
            assert_eq!(s.phase(), Some(AgentSessionPhase::Pending));
            let creds = s.status.as_ref().unwrap().conditions.iter().find(|c| c.type_ == "CredentialsReady").unwrap().clone();
            assert_eq!(
                creds.message,
                format!("GitHubCredential {main} does not allow the session permission(s) workflows:write: its sessionPermissions are contents:write, issues:write, pull_requests:write")
            );
            wait_event(&ns, "AgentSession", "above-ceiling", |(ty, reason, note)| {
                ty == "Warning" && reason == "NotAllowed" && *note == creds.message
            })
            .await;
            assert!(
                ns.api::<Secret>().get_opt("above-ceiling-github").await.unwrap().is_none(),
                "no token Secret for a refused session"
            );
            // No retry loop: a while later the refusals are unchanged and still nothing was
            // sent for any of these objects.
            tokio::time::sleep(Duration::from_secs(3)).await;
            let requests = object_requests(&fake);
            eprintln!("GitHub requests for the refused objects: {} ({requests:?})", requests.len());
            assert_eq!(requests, Vec::<String>::new());
            for (name, _, _) in &cases {
                let t = ns.api::<ccplant_api::GitHubTask>().get(name).await.unwrap();
                assert_eq!(t.status.unwrap().attempts, 0, "{name}: no attempt recorded");
            }
            delete_credentials(&[&main, &other]).await;
        })
        .await;
}

#[tokio::test]
async fn a_credential_serves_only_the_namespaces_it_selects() {
    install_crds();
    let env = TestEnv::global();
    env.with_namespace("ghc-a", |a| async move {
        TestEnv::global()
            .with_namespace("ghc-b", |b| async move {
                let fake = fake_with_repo().await;
                token_secret(&a).await;
                let name = format!("{}-default", a.name);
                credential(&name, &a.name, &[&a.name], json!({"default": true})).await;
                let both = format!("{},{}", a.name, b.name);
                let mut op = Operator::new(&both, &fake.url(), &[]);
                op.start();
                let spec = json!({"repository": "octo/hello", "createIssue": {"title": "Policy"}});
                create(&a, &task("issue", spec.clone())).await;
                create(&b, &task("issue", spec)).await;
                let done = wait_phase(&a, "issue", GitHubTaskPhase::Succeeded, T).await;
                assert!(done.status.unwrap().result.unwrap().issue_number.is_some());
                assert_eq!(
                    refused(&b, "issue").await,
                    (
                        "Failed".into(),
                        "NotAllowed".into(),
                        format!("no default GitHubCredential selects namespace {}: set spec.github.credentialName or spec.github.secretRef", b.name)
                    )
                );
                assert_eq!(fake.issues("octo", "hello").len(), 1, "one issue: namespace a's");
                // The credential's status: Ready, with the identity GitHub answered.
                let api: Api<GitHubCredential> = Api::all(TestEnv::global().client().await);
                let c = wait_for(&api, &name, T, "Ready", |c: &GitHubCredential| {
                    c.status.as_ref().is_some_and(|s| {
                        s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                    })
                })
                .await;
                let status = c.status.unwrap();
                assert_eq!(status.identity.unwrap().login, BOT);
                assert_eq!(status.observed_generation, c.metadata.generation);
                assert!(status.rate_limit_remaining.is_some());
                delete_credentials(&[&name]).await;
            })
            .await;
    })
    .await;
}
