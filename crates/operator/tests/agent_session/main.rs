//! The AgentSession controller against the real control plane (KWOK nodes run the pods) and the
//! fake GitHub, with the operator as its own process.
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "../github_task/harness.rs"]
mod harness;

use ccplant_api::{AgentSession, AgentSessionPhase};
use ccplant_testenv::controlplane::TEST_EXIT_CODE_ANNOTATION;
use ccplant_testenv::{TestEnv, TestNamespace, wait_for, wait_for_deletion};
use harness::*;
use k8s_openapi::api::core::v1::{
    Namespace, PersistentVolume, PersistentVolumeClaim, Pod, Secret, Service,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const T: Duration = Duration::from_secs(60);
const IMAGE: &str = "ghcr.io/ccplant/agent:1";

async fn wait_session(
    ns: &TestNamespace,
    name: &str,
    phase: AgentSessionPhase,
    timeout: Duration,
) -> AgentSession {
    wait_for(
        &ns.api::<AgentSession>(),
        name,
        timeout,
        &format!("phase {phase}"),
        |s: &AgentSession| s.phase() == Some(phase),
    )
    .await
}

fn condition(s: &AgentSession, type_: &str) -> (String, String, String) {
    let c = s
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .cloned()
        .unwrap_or_else(|| panic!("no {type_} condition in {:?}", s.status));
    (c.status, c.reason, c.message)
}

/// Makes the session pod's containers exit with `code` (KWOK runs no process).
async fn exit_pod(ns: &TestNamespace, pod: &str, code: &str) {
    let patch = json!({"metadata": {"annotations": {TEST_EXIT_CODE_ANNOTATION: code}}});
    ns.api::<Pod>()
        .patch(pod, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

fn operator(ns: &TestNamespace, github_url: &str) -> Operator {
    let mut op = Operator::new(
        &ns.name,
        github_url,
        &["--operator-namespace", "ccplant-system"],
    );
    op.start();
    op
}

#[tokio::test]
async fn a_session_runs_then_succeeds_or_fails_with_its_pod() {
    install_crds();
    TestEnv::global()
        .with_namespace("ags-life", |ns| async move {
            let fake = fake_with_repo().await;
            let _op = operator(&ns, &fake.url());
            create_session(
                &ns,
                &session("ok", json!({"agent": {"image": IMAGE}, "prompt": "say hi"})),
            )
            .await;
            create_session(&ns, &session("bad", json!({"agent": {"image": IMAGE}}))).await;
            for name in ["ok", "bad"] {
                let running = wait_session(&ns, name, AgentSessionPhase::Running, T).await;
                let status = running.status.clone().unwrap();
                assert_eq!(
                    status.endpoint,
                    Some(format!("http://{name}.{}.svc:3284", ns.name))
                );
                assert_eq!(status.pod_name.as_deref(), Some(name));
                assert_eq!(condition(&running, "Ready").0, "True");
                assert!(status.expires_at.is_some() && status.start_time.is_some());
                assert_eq!(tools_say(&running), "Current/Healthy");
            }
            exit_pod(&ns, "ok", "0").await;
            exit_pod(&ns, "bad", "3").await;
            let ok = wait_session(&ns, "ok", AgentSessionPhase::Succeeded, T).await;
            assert!(ok.status.as_ref().unwrap().completion_time.is_some());
            assert_eq!(condition(&ok, "Finished").0, "True");
            assert_eq!(tools_say(&ok), "Current/Healthy");
            let bad = wait_session(&ns, "bad", AgentSessionPhase::Failed, T).await;
            assert_eq!(tools_say(&bad), "Failed/Degraded");
            assert_eq!(condition(&bad, "Stalled").1, "Failed");
            let message = bad.status.unwrap().message.unwrap();
            assert!(
                message.contains("Error") && message.contains('3'),
                "container reason in message: {message}"
            );
            wait_event(&ns, "AgentSession", "bad", |(t, r, _)| {
                t == "Warning" && r == "Failed"
            })
            .await;
            let events = ns
                .api::<k8s_openapi::api::core::v1::Event>()
                .list(&Default::default())
                .await
                .unwrap();
            let from: std::collections::BTreeSet<_> = events
                .items
                .iter()
                .filter(|e| e.involved_object.kind.as_deref() == Some("AgentSession"))
                .map(|e| e.reporting_component.clone().unwrap_or_default())
                .collect();
            assert_eq!(
                from,
                ["ccplant.io/operator".to_string()].into(),
                "the sessions' events come from the operator"
            );
        })
        .await;
}

#[tokio::test]
async fn session_pods_are_admitted_by_the_restricted_pod_security_standard_without_warnings() {
    install_crds();
    TestEnv::global()
        .with_namespace("ags-pss", |ns| async move {
            let namespaces: Api<Namespace> = Api::all(ns.client.clone());
            let labels = json!({"metadata": {"labels": {
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/warn": "restricted",
                "pod-security.kubernetes.io/audit": "restricted",
            }}});
            namespaces
                .patch(&ns.name, &PatchParams::default(), &Patch::Merge(&labels))
                .await
                .unwrap();
            let fake = fake_with_repo().await;
            token_secret(&ns).await;
            let _op = operator(&ns, &fake.url());
            let spec = json!({
                "agent": {"image": IMAGE}, "prompt": "work",
                "repository": {"name": "octo/hello"}, "github": {"secretRef": {"name": SECRET}},
                "editor": {"enabled": true}, "telemetry": {"otlpEndpoint": "http://otel:4317"},
            });
            create_session(&ns, &session("pss", spec)).await;
            let running = wait_session(&ns, "pss", AgentSessionPhase::Running, T).await;
            // The editor asks for a login: a random password in the session's own Secret.
            let login = ns.api::<Secret>().get("pss-editor").await.unwrap();
            let owner = &login.metadata.owner_references.as_ref().unwrap()[0];
            assert_eq!((owner.uid.as_str(), owner.controller), (running.metadata.uid.as_deref().unwrap(), Some(true)));
            let password = &login.data.as_ref().unwrap()["password"].0;
            assert!(password.len() == 32 && password.iter().all(u8::is_ascii_alphanumeric));
            let pod = ns.api::<Pod>().get("pss").await.unwrap();
            let editor = pod.spec.as_ref().unwrap().containers.iter().find(|c| c.name == "editor").unwrap();
            let args = editor.args.clone().unwrap();
            assert!(args.windows(2).any(|w| w == ["--auth", "password"]), "{args:?}");
            let env = serde_json::to_value(&editor.env).unwrap();
            assert!(env.as_array().unwrap().contains(&json!({"name": "PASSWORD",
                "valueFrom": {"secretKeyRef": {"name": "pss-editor", "key": "password", "optional": false}}})), "{env}");
            // The agent port admits the operator's pods only; no other port is open.
            let policy = ns.api::<NetworkPolicy>().get("pss").await.unwrap();
            assert_eq!(
                serde_json::to_value(policy.spec.unwrap().ingress).unwrap(),
                json!([{"from": [{
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ccplant-system"}},
                    "podSelector": {"matchLabels": {"app.kubernetes.io/component": "operator", "app.kubernetes.io/name": "ccplant"}}}],
                    "ports": [{"port": 3284, "protocol": "TCP"}]}])
            );
            // The same pod created again by kubectl (server-side dry run) shows the warnings a
            // restricted namespace would print.
            let mut pod = serde_json::to_value(ns.api::<Pod>().get("pss").await.unwrap()).unwrap();
            let meta = pod["metadata"].as_object_mut().unwrap();
            meta.retain(|k, _| ["labels", "annotations"].contains(&k.as_str()));
            meta.insert("name".into(), json!("pss-dry-run"));
            pod.as_object_mut().unwrap().remove("status");
            pod["spec"].as_object_mut().unwrap().remove("nodeName");
            let file = std::env::temp_dir().join(format!("{}-pod.json", ns.name));
            std::fs::write(&file, serde_json::to_vec(&pod).unwrap()).unwrap();
            let out = TestEnv::global()
                .kubectl()
                .args(["create", "--dry-run=server", "-n", &ns.name, "-f"])
                .arg(&file)
                .output()
                .unwrap();
            let _ = std::fs::remove_file(&file);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{stderr}");
            assert!(
                !stderr.contains("Warning"),
                "restricted PSS warnings: {stderr}"
            );
        })
        .await;
}

#[tokio::test]
async fn a_missing_secret_keeps_the_session_pending_until_it_exists() {
    install_crds();
    TestEnv::global()
        .with_namespace("ags-secret", |ns| async move {
            let fake = fake_with_repo().await;
            let _op = operator(&ns, &fake.url());
            let spec = json!({"agent": {"image": IMAGE}, "repository": {"name": "octo/hello"}, "github": {"secretRef": {"name": SECRET}}});
            create_session(&ns, &session("s", spec)).await;
            let pending = wait_session(&ns, "s", AgentSessionPhase::Pending, T).await;
            assert_eq!(
                condition(&pending, "CredentialsReady"),
                ("False".into(), "SecretNotFound".into(), format!("Secret {}/{SECRET} not found", ns.name))
            );
            assert!(ns.api::<Pod>().get_opt("s").await.unwrap().is_none(), "no pod without credentials");
            assert_eq!(tools_say(&pending), "InProgress/Progressing");
            assert_eq!(condition(&pending, "Reconciling").1, "SecretNotFound");
            let created = std::time::Instant::now();
            token_secret(&ns).await;
            wait_session(&ns, "s", AgentSessionPhase::Running, Duration::from_secs(40)).await;
            eprintln!("Secret created -> Running in {:.1}s", created.elapsed().as_secs_f64());
            let copy = ns.api::<Secret>().get("s-github").await.unwrap();
            let token = copy.data.unwrap().remove("token").unwrap();
            assert_eq!(token.0, TOKEN.as_bytes(), "the session's own copy of the token");
            assert_eq!(copy.metadata.owner_references.unwrap()[0].kind, "AgentSession");
        })
        .await;
}

#[tokio::test]
async fn a_session_expires_exactly_on_time_and_ttl_after_finished_deletes_it() {
    install_crds();
    TestEnv::global()
        .with_namespace("ags-expiry", |ns| async move {
            let fake = fake_with_repo().await;
            let _op = operator(&ns, &fake.url());
            let spec = json!({"agent": {"image": IMAGE}, "lifetime": {"maxDuration": "5s", "ttlAfterFinished": "3s"}});
            create_session(&ns, &session("short", spec)).await;
            let running = wait_session(&ns, "short", AgentSessionPhase::Running, T).await;
            let expires_at = ccplant_operator::time::from_k8s(running.status.as_ref().unwrap().expires_at.as_ref().unwrap());
            let expired = wait_session(&ns, "short", AgentSessionPhase::Expired, T).await;
            let observed = chrono::Utc::now();
            let late = (observed - expires_at).num_milliseconds();
            eprintln!("Expired observed {late} ms after expiresAt");
            assert!(late <= 1000, "Expired {late} ms after expiresAt");
            assert!(late >= 0, "not before expiresAt");
            assert_eq!(condition(&expired, "Ready").1, "Expired");
            assert_eq!(tools_say(&expired), "Current/Healthy");
            wait_for_deletion(&ns.api::<Pod>(), "short", Duration::from_secs(10), "pod deleted at expiry").await;
            wait_for_deletion(&ns.api::<AgentSession>(), "short", Duration::from_secs(15), "ttlAfterFinished").await;
        })
        .await;
}

#[tokio::test]
async fn suspend_keeps_the_workspace_and_resume_starts_a_new_pod_on_it() {
    install_crds();
    TestEnv::global()
        .with_namespace("ags-suspend", |ns| async move {
            let class = manual_volume(&ns).await;
            let fake = fake_with_repo().await;
            let _op = operator(&ns, &fake.url());
            let spec = json!({"agent": {"image": IMAGE}, "workspace": {"size": "1Gi", "storageClassName": class}});
            create_session(&ns, &session("w", spec)).await;
            // KWOK runs the pod without mounting the volume, so Running may be reported a moment
            // before the PVC's Bound reaches the operator's cache; its watch event then turns
            // WorkspaceReady True.
            wait_for(&ns.api::<AgentSession>(), "w", T, "Running with its workspace bound", |s: &AgentSession| {
                s.phase() == Some(AgentSessionPhase::Running)
                    && s.status.as_ref().is_some_and(|st| {
                        st.conditions.iter().any(|c| c.type_ == "WorkspaceReady" && c.status == "True")
                    })
            })
            .await;
            let first = ns.api::<Pod>().get("w").await.unwrap();
            let claim = |p: &Pod| {
                p.spec.as_ref().unwrap().volumes.as_ref().unwrap().iter().find_map(|v| v.persistent_volume_claim.as_ref().map(|c| c.claim_name.clone()))
            };
            assert_eq!(claim(&first).as_deref(), Some("w-workspace"));

            let suspend = |on: bool| json!({"spec": {"suspend": on}});
            ns.api::<AgentSession>().patch("w", &PatchParams::default(), &Patch::Merge(&suspend(true))).await.unwrap();
            let suspended = wait_session(&ns, "w", AgentSessionPhase::Suspended, T).await;
            let (status, reason, _) = condition(&suspended, "Finished");
            assert_eq!((status.as_str(), reason.as_str()), ("False", "Suspended"));
            assert_eq!(tools_say(&suspended), "Current/Suspended");
            assert_eq!(condition(&suspended, "Suspended").0, "True");
            wait_for_deletion(&ns.api::<Pod>(), "w", T, "pod deleted on suspend").await;
            assert!(ns.api::<PersistentVolumeClaim>().get_opt("w-workspace").await.unwrap().is_some(), "PVC kept");
            assert!(ns.api::<Service>().get_opt("w").await.unwrap().is_some(), "Service kept");

            ns.api::<AgentSession>().patch("w", &PatchParams::default(), &Patch::Merge(&suspend(false))).await.unwrap();
            wait_session(&ns, "w", AgentSessionPhase::Running, T).await;
            let second = ns.api::<Pod>().get("w").await.unwrap();
            assert_ne!(second.metadata.uid, first.metadata.uid, "a new pod");
            assert_eq!(claim(&second).as_deref(), Some("w-workspace"), "on the same PVC");
            ns.api::<AgentSession>().delete("w", &DeleteParams::background()).await.unwrap();
            wait_for_deletion(&ns.api::<PersistentVolumeClaim>(), "w-workspace", T, "PVC collected").await;
            let _ = Api::<PersistentVolume>::all(ns.client.clone()).delete(&format!("pv-{}", ns.name), &DeleteParams::default()).await;
        })
        .await;
}

#[tokio::test]
async fn a_deleted_pod_is_recreated_and_a_deleted_session_takes_its_children_along() {
    install_crds();
    TestEnv::global()
        .with_namespace("ags-gc", |ns| async move {
            let fake = fake_with_repo().await;
            token_secret(&ns).await;
            session_class(&ns.name, &ns.name, json!({"default": true, "agent": {"images": ["*"]},
                "network": {"allowIsolationOff": true}})).await;
            let _op = operator(&ns, &fake.url());
            let spec = json!({"agent": {"image": IMAGE}, "repository": {"name": "octo/hello"}, "github": {"secretRef": {"name": SECRET}}});
            create_session(&ns, &session("g", spec)).await;
            wait_session(&ns, "g", AgentSessionPhase::Running, T).await;
            let first = ns.api::<Pod>().get("g").await.unwrap().metadata.uid;
            ns.api::<Pod>().delete("g", &DeleteParams::default()).await.unwrap();
            wait_for(&ns.api::<Pod>(), "g", T, "a new pod", |p: &Pod| p.metadata.uid != first).await;
            wait_session(&ns, "g", AgentSessionPhase::Running, T).await;
            for (kind, present) in [
                ("Service", ns.api::<Service>().get_opt("g").await.unwrap().is_some()),
                ("NetworkPolicy", ns.api::<NetworkPolicy>().get_opt("g").await.unwrap().is_some()),
                ("Secret", ns.api::<Secret>().get_opt("g-github").await.unwrap().is_some()),
            ] {
                assert!(present, "{kind} exists");
            }
            // Turning isolation off removes the policy.
            let patch = json!({"spec": {"network": {"isolate": false}}});
            ns.api::<AgentSession>()
                .patch("g", &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .unwrap();
            wait_for_deletion(&ns.api::<NetworkPolicy>(), "g", T, "network policy removed").await;
            ns.api::<AgentSession>().delete("g", &DeleteParams::background()).await.unwrap();
            wait_for_deletion(&ns.api::<Pod>(), "g", T, "pod collected").await;
            wait_for_deletion(&ns.api::<Service>(), "g", T, "service collected").await;
            wait_for_deletion(&ns.api::<Secret>(), "g-github", T, "credentials collected").await;
        })
        .await;
}

#[tokio::test]
async fn an_app_token_is_restricted_refreshed_in_place_and_revoked_at_the_end() {
    install_crds();
    TestEnv::global()
        .with_namespace("ags-app", |ns| async move {
            let fake = fake_with_repo().await;
            app_secret(&ns, &fake).await;
            fake.set_installation_token_ttl(Duration::from_secs(8));
            let _op = operator(&ns, &fake.url());
            let spec = json!({
                "agent": {"image": IMAGE}, "repository": {"name": "octo/hello"},
                "github": {"secretRef": {"name": "app"}, "permissions": {"contents": "write", "pull_requests": "read"}},
            });
            create_session(&ns, &session("a", spec)).await;
            wait_session(&ns, "a", AgentSessionPhase::Running, T).await;
            let pod_uid = ns.api::<Pod>().get("a").await.unwrap().metadata.uid;
            let token_of = |s: Secret| String::from_utf8(s.data.unwrap().remove("token").unwrap().0).unwrap();
            let first = token_of(ns.api::<Secret>().get("a-github").await.unwrap());
            let minted: Vec<_> = fake.installation_tokens().into_iter().filter(|t| t.token == first).collect();
            assert_eq!(minted.len(), 1);
            assert_eq!(minted[0].repositories.as_deref(), Some(&["hello".to_string()][..]));
            assert_eq!(minted[0].permissions, json!({"contents": "write", "pull_requests": "read"}));

            // 8 s tokens are refreshed after 6 s; the pod keeps running.
            let refreshed = wait_for(&ns.api::<Secret>(), "a-github", Duration::from_secs(30), "a refreshed token", |s: &Secret| {
                s.data.as_ref().and_then(|d| d.get("token")).is_some_and(|t| t.0 != first.as_bytes())
            })
            .await;
            let second = token_of(refreshed);
            assert_eq!(ns.api::<Pod>().get("a").await.unwrap().metadata.uid, pod_uid, "no pod restart");
            // The token it replaced is revoked once the new one is in the Secret.
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while !fake.installation_tokens().into_iter().any(|t| t.token == first && t.revoked) {
                assert!(std::time::Instant::now() < deadline, "the refresh revoked the replaced token");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert!(!fake.installation_tokens().into_iter().find(|t| t.token == second).unwrap().revoked);

            exit_pod(&ns, "a", "0").await;
            let done = wait_session(&ns, "a", AgentSessionPhase::Succeeded, T).await;
            assert_eq!(condition(&done, "CredentialsReady").1, "Revoked");
            let record = fake.installation_tokens().into_iter().find(|t| t.token == second).unwrap();
            assert!(record.revoked, "the live token was revoked at the end");
            assert!(ns.api::<Secret>().get_opt("a-github").await.unwrap().is_none(), "the session Secret is gone");
        })
        .await;
}

#[tokio::test]
async fn a_spec_the_operator_cannot_act_on_is_reported_once_without_retrying() {
    install_crds();
    TestEnv::global()
        .with_namespace("ags-invalid", |ns| async move {
            let fake = fake_with_repo().await;
            let _op = operator(&ns, &fake.url());
            create_session(&ns, &session("noimage", json!({"prompt": "hi"}))).await;
            let pending = wait_session(&ns, "noimage", AgentSessionPhase::Pending, T).await;
            assert_eq!(
                condition(&pending, "Ready"),
                (
                    "False".into(),
                    "InvalidSpec".into(),
                    "spec.agent.image is empty and the operator has no --default-agent-image"
                        .into()
                )
            );
            assert_eq!(tools_say(&pending), "Failed/Degraded");
            // A second session as a barrier: once it runs, the first was reconciled long ago.
            create_session(&ns, &session("barrier", json!({"agent": {"image": IMAGE}}))).await;
            wait_session(&ns, "barrier", AgentSessionPhase::Running, T).await;
            let again = ns.api::<AgentSession>().get("noimage").await.unwrap();
            assert_eq!(
                again.metadata.resource_version, pending.metadata.resource_version,
                "no further status writes"
            );
            let events = wait_event(&ns, "AgentSession", "noimage", |(_, r, _)| {
                r == "InvalidSpec"
            })
            .await;
            assert_eq!(events.len(), 1, "one InvalidSpec event: {events:?}");
            assert!(ns.api::<Pod>().get_opt("noimage").await.unwrap().is_none());
        })
        .await;
}

#[tokio::test]
async fn a_pod_the_apiserver_refuses_is_reported_without_a_retry_loop() {
    install_crds();
    TestEnv::global()
        .with_namespace("ags-refused", |ns| async move {
            let fake = fake_with_repo().await;
            session_class(
                &ns.name,
                &ns.name,
                json!({"default": true, "agent": {"images": ["*"]},
                "pod": {"allowedOverrides": ["priorityClassName"]}}),
            )
            .await;
            let _op = operator(&ns, &fake.url());
            let spec =
                json!({"agent": {"image": IMAGE}, "pod": {"priorityClassName": "no-such-class"}});
            create_session(&ns, &session("p", spec)).await;
            let pending = wait_for(
                &ns.api::<AgentSession>(),
                "p",
                T,
                "Ready=False ChildRejected",
                |s: &AgentSession| {
                    s.status.as_ref().is_some_and(|st| {
                        st.conditions
                            .iter()
                            .any(|c| c.type_ == "Ready" && c.reason == "ChildRejected")
                    })
                },
            )
            .await;
            let (_, _, message) = condition(&pending, "Ready");
            assert!(
                message.starts_with(&format!("Pod {}/p was refused: ", ns.name)),
                "{message}"
            );
            assert_eq!(tools_say(&pending), "Failed/Degraded");
            assert!(message.contains("no-such-class"), "{message}");
            wait_event(&ns, "AgentSession", "p", |(t, r, _)| {
                t == "Warning" && r == "ChildRejected"
            })
            .await;
            // No loop: a barrier session runs, the refused one was not written again.
            create_session(&ns, &session("barrier", json!({"agent": {"image": IMAGE}}))).await;
            wait_session(&ns, "barrier", AgentSessionPhase::Running, T).await;
            let again = ns.api::<AgentSession>().get("p").await.unwrap();
            assert_eq!(
                again.metadata.resource_version,
                pending.metadata.resource_version
            );
        })
        .await;
}

#[tokio::test]
async fn a_platform_credentials_plain_token_is_never_copied_into_a_session_namespace() {
    install_crds();
    TestEnv::global()
        .with_namespace("ags-default", |ns| async move {
            // The platform's credential lives in another namespace (the operator's).
            let secrets: Api<Secret> = Api::namespaced(ns.client.clone(), "default");
            let name = format!("default-token-{}", ns.name);
            let secret: Secret =
                serde_json::from_value(json!({"metadata": {"name": name}, "stringData": {"token": TOKEN}})).unwrap();
            secrets.create(&PostParams::default(), &secret).await.unwrap();
            let credential = format!("{}-platform", ns.name);
            github_credential(&credential, "default", &name, &ns.name, json!({"default": true})).await;
            let fake = fake_with_repo().await;
            let mut op = Operator::new(&ns.name, &fake.url(), &[]);
            op.start();
            create_session(&ns, &session("d", json!({"agent": {"image": IMAGE}, "repository": {"name": "octo/hello"}}))).await;
            let pending = wait_session(&ns, "d", AgentSessionPhase::Pending, T).await;
            assert_eq!(
                condition(&pending, "CredentialsReady"),
                (
                    "False".into(),
                    "TokenNotShareable".into(),
                    format!("Secret default/{name} holds a plain token, which is never copied into another namespace: set spec.github.secretRef to a Secret in this namespace, or use a GitHubCredential that holds a GitHub App")
                )
            );
            assert!(ns.api::<Secret>().get_opt("d-github").await.unwrap().is_none(), "no copy");
            assert!(ns.api::<Pod>().get_opt("d").await.unwrap().is_none(), "no pod");
            secrets.delete(&name, &DeleteParams::default()).await.unwrap();
            delete_github_credential(&credential).await;
        })
        .await;
}

/// A GitHubCredential `name` (cluster-scoped: named after the test's namespace) whose Secret is
/// `secret_ns/secret`, selecting the namespace `selects`, allowing octo/hello.
async fn github_credential(
    name: &str,
    secret_ns: &str,
    secret: &str,
    selects: &str,
    extra: serde_json::Value,
) {
    let mut spec = json!({
        "secretRef": {"namespace": secret_ns, "name": secret},
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": selects}},
        "repositories": ["octo/hello"],
    });
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    let c: ccplant_api::GitHubCredential = serde_json::from_value(json!({
        "apiVersion": "ccplant.io/v1alpha1", "kind": "GitHubCredential",
        "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap();
    let api: Api<ccplant_api::GitHubCredential> = Api::all(TestEnv::global().client().await);
    api.create(&PostParams::default(), &c).await.unwrap();
}

/// An AgentSessionClass `name` selecting only namespace `selects`, with `spec` on top.
async fn session_class(name: &str, selects: &str, extra: serde_json::Value) {
    let mut spec = json!({
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": selects}},
    });
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    let c: ccplant_api::AgentSessionClass = serde_json::from_value(json!({
        "apiVersion": "ccplant.io/v1alpha1", "kind": "AgentSessionClass",
        "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap();
    let api: Api<ccplant_api::AgentSessionClass> = Api::all(TestEnv::global().client().await);
    let _ = api.delete(name, &DeleteParams::default()).await;
    api.create(&PostParams::default(), &c).await.unwrap();
}

async fn delete_github_credential(name: &str) {
    let api: Api<ccplant_api::GitHubCredential> = Api::all(TestEnv::global().client().await);
    let _ = api.delete(name, &DeleteParams::default()).await;
}

#[tokio::test]
async fn deleting_a_running_session_revokes_its_app_token_before_it_is_gone() {
    install_crds();
    TestEnv::global()
        .with_namespace("ags-revoke", |ns| async move {
            let fake = fake_with_repo().await;
            app_secret(&ns, &fake).await;
            let credential = format!("{}-app", ns.name);
            github_credential(&credential, &ns.name, "app", &ns.name, json!({})).await;
            let _op = operator(&ns, &fake.url());
            let spec = json!({
                "agent": {"image": IMAGE}, "repository": {"name": "octo/hello"},
                "github": {"credentialName": credential},
            });
            create_session(&ns, &session("r", spec)).await;
            let running = wait_session(&ns, "r", AgentSessionPhase::Running, T).await;
            assert_eq!(
                running.metadata.finalizers,
                Some(vec!["ccplant.io/revoke-token".to_string()]),
                "the finalizer while a live App token exists"
            );
            let token = String::from_utf8(
                ns.api::<Secret>()
                    .get("r-github")
                    .await
                    .unwrap()
                    .data
                    .unwrap()
                    .remove("token")
                    .unwrap()
                    .0,
            )
            .unwrap();
            // Watch the fake for the revocation and the apiserver for the session's end.
            let revoked_at = Arc::new(Mutex::new(None::<std::time::Instant>));
            {
                let revoked_at = revoked_at.clone();
                fake.on_write(move |r| {
                    if r.method == "DELETE" && r.path == "/installation/token" {
                        revoked_at
                            .lock()
                            .unwrap()
                            .get_or_insert_with(std::time::Instant::now);
                    }
                });
            }
            let deleted = std::time::Instant::now();
            ns.api::<AgentSession>()
                .delete("r", &DeleteParams::default())
                .await
                .unwrap();
            wait_for_deletion(&ns.api::<AgentSession>(), "r", T, "session gone").await;
            let gone = std::time::Instant::now();
            let revoked = revoked_at
                .lock()
                .unwrap()
                .expect("DELETE /installation/token was sent");
            assert!(revoked <= gone, "revoked before the session was gone");
            eprintln!(
                "session deletion -> token revoked in {:.3}s, session gone in {:.3}s",
                (revoked - deleted).as_secs_f64(),
                (gone - deleted).as_secs_f64()
            );
            let record = fake
                .installation_tokens()
                .into_iter()
                .find(|t| t.token == token)
                .unwrap();
            assert!(record.revoked, "that very token was revoked");
            delete_github_credential(&credential).await;
        })
        .await;
}

/// Creates an object the operator's types may not read (raw JSON), in `ns`.
async fn create_raw<K: kube::Resource<DynamicType = ()>>(
    ns: &TestNamespace,
    object: serde_json::Value,
) {
    let resource = kube::discovery::ApiResource::erase::<K>(&());
    let api: Api<kube::api::DynamicObject> =
        Api::namespaced_with(ns.client.clone(), &ns.name, &resource);
    let object: kube::api::DynamicObject = serde_json::from_value(object).unwrap();
    api.create(&PostParams::default(), &object).await.unwrap();
}

/// The status conditions of an object the typed API may not read.
async fn raw_conditions<K: kube::Resource<DynamicType = ()>>(
    ns: &TestNamespace,
    name: &str,
) -> (Vec<(String, String, String, String)>, Option<String>) {
    let resource = kube::discovery::ApiResource::erase::<K>(&());
    let api: Api<kube::api::DynamicObject> =
        Api::namespaced_with(ns.client.clone(), &ns.name, &resource);
    let object = api.get(name).await.unwrap();
    let conditions = object.data["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|c| {
            let f = |k: &str| c[k].as_str().unwrap_or_default().to_string();
            (f("type"), f("status"), f("reason"), f("message"))
        })
        .collect();
    (conditions, object.metadata.resource_version)
}

#[tokio::test]
async fn an_object_the_operator_cannot_read_is_reported_on_it_and_the_others_converge() {
    install_crds();
    // A newer CRD than the operator (an upgrade applied the CRDs first): one more enum value in
    // each kind.
    let schema = "/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties";
    for (crd, path) in [
        (
            "agentsessions.ccplant.io",
            format!("{schema}/agent/properties/type/enum/-"),
        ),
        (
            "githubtasks.ccplant.io",
            format!("{schema}/approveAndMerge/properties/mergeMethod/enum/-"),
        ),
    ] {
        let patch = json!([{"op": "add", "path": path, "value": "future"}]).to_string();
        let out = TestEnv::global()
            .kubectl()
            .args(["patch", "crd", crd, "--type", "json", "-p", &patch])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    TestEnv::global()
        .with_namespace("ags-unreadable", |ns| async move {
            let fake = fake_with_repo().await;
            token_secret(&ns).await;
            // Created before the operator starts: its first lists hold them.
            let create_bad = |name: &str, ok: bool| {
                json!({"apiVersion": "ccplant.io/v1alpha1", "kind": "AgentSession", "metadata": {"name": name},
                       "spec": {"agent": {"image": IMAGE, "type": if ok { "claude" } else { "future" }}}})
            };
            create_raw::<AgentSession>(&ns, create_bad("from-the-future", false)).await;
            create_raw::<ccplant_api::GitHubTask>(&ns, json!({
                "apiVersion": "ccplant.io/v1alpha1", "kind": "GitHubTask", "metadata": {"name": "merge-the-future"},
                "spec": {"repository": "octo/hello", "github": {"secretRef": {"name": SECRET}},
                         "approveAndMerge": {"pullRequest": 1, "mergeMethod": "future"}},
            }))
            .await;
            create_raw::<AgentSession>(&ns, create_bad("before", true)).await;
            let _op = operator(&ns, &fake.url());
            create_session(&ns, &session("after", json!({"agent": {"image": IMAGE}}))).await;
            create(&ns, &task("issue", json!({"repository": "octo/hello", "github": {"secretRef": {"name": SECRET}}, "createIssue": {"title": "x"}}))).await;
            wait_session(&ns, "before", AgentSessionPhase::Running, T).await;
            wait_session(&ns, "after", AgentSessionPhase::Running, T).await;
            wait_phase(&ns, "issue", ccplant_api::GitHubTaskPhase::Succeeded, T).await;

            let expect = |kind: &str| {
                format!("the operator cannot read this {kind}: unknown variant `future`, expected one of ")
            };
            let mut versions = Vec::new();
            for (kind, name) in [("AgentSession", "from-the-future"), ("GitHubTask", "merge-the-future")] {
                let deadline = std::time::Instant::now() + T;
                let (conditions, version) = loop {
                    let (conditions, version) = if kind == "AgentSession" {
                        raw_conditions::<AgentSession>(&ns, name).await
                    } else {
                        raw_conditions::<ccplant_api::GitHubTask>(&ns, name).await
                    };
                    if conditions.iter().any(|c| c.0 == "Stalled") {
                        break (conditions, version);
                    }
                    assert!(std::time::Instant::now() < deadline, "{kind} {name} not reported: {conditions:?}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                };
                let by_type = |t: &str| conditions.iter().find(|c| c.0 == t).cloned().unwrap();
                let (_, status, reason, message) = by_type("Stalled");
                assert_eq!((status.as_str(), reason.as_str()), ("True", "InvalidSpec"));
                assert!(message.starts_with(&expect(kind)), "{message}");
                let (_, status, reason, _) = by_type("Ready");
                assert_eq!((status.as_str(), reason.as_str()), ("False", "InvalidSpec"));
                wait_event(&ns, kind, name, |(t, r, m)| t == "Warning" && r == "InvalidSpec" && m.starts_with(&expect(kind))).await;
                versions.push(version);
            }
            assert!(ns.api::<Pod>().get_opt("from-the-future").await.unwrap().is_none(), "nothing runs for it");
            // A barrier: once another session runs, the reports were not written again.
            create_session(&ns, &session("barrier", json!({"agent": {"image": IMAGE}}))).await;
            wait_session(&ns, "barrier", AgentSessionPhase::Running, T).await;
            let again = vec![
                raw_conditions::<AgentSession>(&ns, "from-the-future").await.1,
                raw_conditions::<ccplant_api::GitHubTask>(&ns, "merge-the-future").await.1,
            ];
            assert_eq!(again, versions, "reported once, no retry loop");
        })
        .await;
}

/// Every object of `kind` named `name` in `ns`, as JSON (to compare byte for byte).
async fn raw_object<K: kube::Resource<DynamicType = ()>>(
    ns: &TestNamespace,
    name: &str,
) -> Option<serde_json::Value> {
    let resource = kube::discovery::ApiResource::erase::<K>(&());
    let api: Api<kube::api::DynamicObject> =
        Api::namespaced_with(ns.client.clone(), &ns.name, &resource);
    api.get_opt(name)
        .await
        .unwrap()
        .map(|o| serde_json::to_value(o).unwrap())
}

#[tokio::test]
async fn objects_with_a_sessions_child_names_it_does_not_control_are_never_touched() {
    install_crds();
    TestEnv::global()
        .with_namespace("ags-conflict", |ns| async move {
            let fake = fake_with_repo().await;
            token_secret(&ns).await;
            // The namespace's own objects, named like the children of the sessions "lockdown"
            // and "only-secret"; the pod even carries the labels a session pod has.
            let labels = json!({"app.kubernetes.io/managed-by": "ccplant", "ccplant.io/session": "lockdown"});
            create_raw::<NetworkPolicy>(&ns, json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": "lockdown"}, "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}})).await;
            create_raw::<Service>(&ns, json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "lockdown"}, "spec": {"selector": {"app": "db"}, "ports": [{"port": 5432}]}})).await;
            create_raw::<PersistentVolumeClaim>(&ns, json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": "lockdown-workspace"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})).await;
            for name in ["lockdown-github", "only-secret-github"] {
                create_raw::<Secret>(&ns, json!({"apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": name}, "stringData": {"token": "ghp_theirs0000000000000000"}})).await;
            }
            create_raw::<Pod>(&ns, json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "lockdown", "labels": labels},
                "spec": {"containers": [{"name": "db", "image": "postgres:17"}]}})).await;
            let planted: [(&str, &str); 6] = [
                ("NetworkPolicy", "lockdown"),
                ("Service", "lockdown"),
                ("PersistentVolumeClaim", "lockdown-workspace"),
                ("Secret", "lockdown-github"),
                ("Pod", "lockdown"),
                ("Secret", "only-secret-github"),
            ];
            async fn read(ns: &TestNamespace, kind: &str, name: &str) -> Option<serde_json::Value> {
                match kind {
                    "NetworkPolicy" => raw_object::<NetworkPolicy>(ns, name).await,
                    "Service" => raw_object::<Service>(ns, name).await,
                    "PersistentVolumeClaim" => raw_object::<PersistentVolumeClaim>(ns, name).await,
                    "Secret" => raw_object::<Secret>(ns, name).await,
                    "Pod" => raw_object::<Pod>(ns, name).await,
                    _ => unreachable!(),
                }
            }
            // KWOK runs the planted pod; wait for that, so "before" is its settled state.
            wait_for(&ns.api::<Pod>(), "lockdown", T, "the planted pod running", |p: &Pod| {
                p.status.as_ref().and_then(|s| s.pod_ip.as_ref()).is_some()
            })
            .await;
            let mut before = Vec::new();
            for (kind, name) in planted {
                before.push(read(&ns, kind, name).await.expect("planted"));
            }
            let _op = operator(&ns, &fake.url());
            let github = json!({"secretRef": {"name": SECRET}});
            create_session(&ns, &session("lockdown", json!({"agent": {"image": IMAGE},
                "repository": {"name": "octo/hello"}, "github": github, "workspace": {"size": "1Gi"}}))).await;
            create_session(&ns, &session("only-secret", json!({"agent": {"image": IMAGE},
                "repository": {"name": "octo/hello"}, "github": github}))).await;
            for (name, what) in [("lockdown", "Pod"), ("only-secret", "Secret")] {
                let child = if what == "Pod" { name.to_string() } else { format!("{name}-github") };
                let s = wait_for(&ns.api::<AgentSession>(), name, T, "NameConflict", |s: &AgentSession| {
                    s.status.as_ref().is_some_and(|st| {
                        st.conditions.iter().any(|c| c.type_ == "Ready" && c.reason == "NameConflict")
                    })
                })
                .await;
                let status = s.status.clone().unwrap();
                assert_eq!(status.phase, Some(AgentSessionPhase::Pending));
                assert_eq!(
                    status.message.as_deref(),
                    Some(format!("{what} {}/{child} exists and is not controlled by this AgentSession: nothing was changed; remove or rename that object, or give the session another name", ns.name).as_str())
                );
                assert_eq!(tools_say(&s), "Failed/Degraded");
                wait_event(&ns, "AgentSession", name, |e| e.0 == "Warning" && e.1 == "NameConflict").await;
            }
            // The other children of "only-secret" were not made either.
            assert!(ns.api::<Pod>().get_opt("only-secret").await.unwrap().is_none());
            assert!(ns.api::<Service>().get_opt("only-secret").await.unwrap().is_none());
            // Some reconciles later (the sessions look again every 60 s; a spec change wakes
            // them at once), everything is byte-identical.
            for name in ["lockdown", "only-secret"] {
                let patch = json!({"spec": {"messages": ["still there?"]}});
                ns.api::<AgentSession>().patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
            for ((kind, name), was) in planted.iter().zip(&before) {
                assert_eq!(read(&ns, kind, name).await.as_ref(), Some(was), "{kind} {name} untouched");
            }
            // Deleting the sessions leaves them.
            for name in ["lockdown", "only-secret"] {
                ns.api::<AgentSession>().delete(name, &DeleteParams::background()).await.unwrap();
                wait_for_deletion(&ns.api::<AgentSession>(), name, T, "session gone").await;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
            for ((kind, name), was) in planted.iter().zip(&before) {
                assert_eq!(read(&ns, kind, name).await.as_ref(), Some(was), "{kind} {name} left alone");
            }
            // Nothing the operator made is left over: the namespace's own Service only.
            let count = ns.api::<Service>().list(&Default::default()).await.unwrap().items.len();
            assert_eq!(count, 1, "only the namespace's own Service");
        })
        .await;
}

/// The first Ready condition's reason and message, if any.
fn ready_reason(s: &AgentSession) -> Option<(String, String)> {
    s.status.as_ref().and_then(|st| {
        st.conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .map(|c| (c.reason.clone(), c.message.clone()))
    })
}

#[tokio::test]
async fn a_class_fixes_the_pod_and_refuses_what_it_does_not_allow() {
    install_crds();
    TestEnv::global()
        .with_namespace("ags-class", |ns| async move {
            let fake = fake_with_repo().await;
            let class = format!("{}-small", ns.name);
            let elsewhere = format!("{}-elsewhere", ns.name);
            session_class(&class, &ns.name, json!({"default": true,
                "agent": {"images": ["ghcr.io/ccplant/*"], "defaultImage": IMAGE,
                          "maxResources": {"memory": "2Gi"},
                          "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}},
                "lifetime": {"maxDuration": "2h"},
                "pod": {"runtimeClassName": class, "priorityClassName": class,
                        "serviceAccountName": "agent", "nodeSelector": {"pool": "agents"},
                        "tolerations": [{"key": "agents", "operator": "Exists", "effect": "NoSchedule"}],
                        "imagePullSecrets": [{"name": "regcred"}]}}))
            .await;
            session_class(&elsewhere, "some-other-namespace", json!({})).await;
            // What the pod refers to exists (else the apiserver refuses it).
            let manifest = format!(
                "apiVersion: node.k8s.io/v1\nkind: RuntimeClass\nmetadata: {{name: {rc}}}\nhandler: runsc\n---\n\
                 apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata: {{name: {rc}}}\nvalue: 10\n---\n\
                 apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: agent, namespace: {ns}}}\n",
                rc = class, ns = ns.name
            );
            let file = std::env::temp_dir().join(format!("{}-class-refs.yaml", ns.name));
            std::fs::write(&file, manifest).unwrap();
            let out = TestEnv::global().kubectl().args(["apply", "-f"]).arg(&file).output().unwrap();
            let _ = std::fs::remove_file(&file);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let _op = operator(&ns, &fake.url());
            create_session(&ns, &session("fixed", json!({"prompt": "hi"}))).await;
            let refused: [(&str, serde_json::Value, &str, String); 5] = [
                ("evil-image", json!({"agent": {"image": "docker.io/evil/miner:1"}}), "NotAllowed",
                 format!("AgentSessionClass {class} does not allow the image docker.io/evil/miner:1: its images are ghcr.io/ccplant/*")),
                ("too-big", json!({"agent": {"resources": {"limits": {"memory": "8Gi"}}}}), "NotAllowed",
                 format!("AgentSessionClass {class} allows at most 2Gi of memory: spec.agent.resources.limits.memory is 8Gi")),
                ("placement", json!({"pod": {"nodeSelector": {"pool": "gpu"}}}), "NotAllowed",
                 format!("AgentSessionClass {class} does not allow spec.pod.nodeSelector: its allowedOverrides are labels, annotations")),
                ("other-class", json!({"className": elsewhere}), "NotAllowed",
                 format!("AgentSessionClass {elsewhere} does not allow namespace {}: its namespaceSelector does not select it", ns.name)),
                ("no-class", json!({"className": "no-such-class"}), "ClassNotFound",
                 "AgentSessionClass no-such-class does not exist".to_string()),
            ];
            for (name, spec, ..) in &refused {
                create_session(&ns, &session(name, spec.clone())).await;
            }
            for (name, _, reason, message) in &refused {
                let s = wait_for(&ns.api::<AgentSession>(), name, T, reason, |s: &AgentSession| {
                    ready_reason(s).is_some_and(|(r, _)| r == *reason)
                })
                .await;
                assert_eq!(ready_reason(&s).unwrap().1, *message, "{name}");
                assert_eq!(s.status.as_ref().unwrap().phase, Some(AgentSessionPhase::Pending));
                assert!(ns.api::<Pod>().get_opt(name).await.unwrap().is_none(), "{name}: no pod");
                if *reason == "NotAllowed" {
                    assert_eq!(tools_say(&s), "Failed/Degraded", "{name}");
                    wait_event(&ns, "AgentSession", name, |e| e.0 == "Warning" && e.1 == "NotAllowed").await;
                }
            }
            // What the class fixes is in the pod (the session set none of it).
            let pod = wait_for(&ns.api::<Pod>(), "fixed", T, "the pod", |_: &Pod| true).await;
            let spec = serde_json::to_value(pod.spec.unwrap()).unwrap();
            let agent = spec["containers"].as_array().unwrap().iter().find(|c| c["name"] == "agent").unwrap();
            assert_eq!(agent["image"], IMAGE);
            assert_eq!(agent["resources"], json!({"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}));
            for (field, want) in [
                ("runtimeClassName", json!(class)),
                ("priorityClassName", json!(class)),
                ("serviceAccountName", json!("agent")),
                ("nodeSelector", json!({"pool": "agents"})),
                ("imagePullSecrets", json!([{"name": "regcred"}])),
            ] {
                assert_eq!(spec[field], want, "{field}");
            }
            // The class's toleration first (admission appends its not-ready/unreachable ones).
            assert_eq!(spec["tolerations"][0], json!({"key": "agents", "operator": "Exists", "effect": "NoSchedule"}));
            // The lifetime cap: expiresAt is creation + 2h, not the default 24h.
            let s = ns.api::<AgentSession>().get("fixed").await.unwrap();
            let st = s.status.unwrap();
            let (start, expires) = (st.start_time.unwrap().0, st.expires_at.unwrap().0);
            assert_eq!(expires.as_second() - start.as_second(), 7200);
            let api: Api<ccplant_api::AgentSessionClass> = Api::all(ns.client.clone());
            for c in [&class, &elsewhere] {
                let _ = api.delete(c, &DeleteParams::default()).await;
            }
            let _ = TestEnv::global()
                .kubectl()
                .args(["delete", "--ignore-not-found", &format!("runtimeclass/{class}"), &format!("priorityclass/{class}")])
                .output();
        })
        .await;
}

#[tokio::test]
async fn a_class_runs_at_most_its_limit_and_the_others_wait_their_turn_in_order() {
    install_crds();
    TestEnv::global()
        .with_namespace("ags-queue", |ns| async move {
            let fake = fake_with_repo().await;
            let class = format!("{}-two", ns.name);
            session_class(&class, &ns.name, json!({"default": true, "agent": {"images": ["*"]},
                "limits": {"maxActiveSessionsPerNamespace": 2}})).await;
            let _op = operator(&ns, &fake.url());
            let names = ["q1", "q2", "q3", "q4", "q5"];
            for name in names {
                create_session(&ns, &session(name, json!({"agent": {"image": IMAGE}}))).await;
                // Distinct creation seconds: the line is by creation time, then name.
                tokio::time::sleep(Duration::from_millis(1100)).await;
            }
            for name in ["q1", "q2"] {
                wait_session(&ns, name, AgentSessionPhase::Running, T).await;
            }
            for (name, place) in [("q3", "1st"), ("q4", "2nd"), ("q5", "3rd")] {
                let s = wait_for(&ns.api::<AgentSession>(), name, T, "Queued", |s: &AgentSession| {
                    ready_reason(s).is_some_and(|(r, m)| r == "Queued" && m.starts_with(place))
                })
                .await;
                assert_eq!(
                    ready_reason(&s).unwrap().1,
                    format!("{place} in line: AgentSessionClass {class} runs at most 2 sessions at once in namespace {}, and 2 are running", ns.name)
                );
                assert_eq!(s.status.as_ref().unwrap().phase, Some(AgentSessionPhase::Pending));
                assert_eq!(tools_say(&s), "InProgress/Progressing", "{name}");
                assert!(ns.api::<Pod>().get_opt(name).await.unwrap().is_none(), "{name}: no pod yet");
            }
            // q1 ends: q3 (first in line) starts, q4 and q5 move up.
            let ended = std::time::Instant::now();
            exit_pod(&ns, "q1", "0").await;
            wait_for(&ns.api::<Pod>(), "q3", T, "q3's pod", |_: &Pod| true).await;
            let started_after = ended.elapsed();
            println!("queue: the next session's pod was created {started_after:?} after the pod of the one that ended exited");
            assert!(started_after < Duration::from_secs(3), "{started_after:?}");
            wait_session(&ns, "q1", AgentSessionPhase::Succeeded, T).await;
            for (name, place) in [("q4", "1st"), ("q5", "2nd")] {
                wait_for(&ns.api::<AgentSession>(), name, T, "moved up", |s: &AgentSession| {
                    ready_reason(s).is_some_and(|(r, m)| r == "Queued" && m.starts_with(place))
                })
                .await;
            }
            // Suspending a running one frees its place too.
            let patch = json!({"spec": {"suspend": true}});
            ns.api::<AgentSession>().patch("q2", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
            wait_for(&ns.api::<Pod>(), "q4", T, "q4's pod", |_: &Pod| true).await;
            assert!(ns.api::<Pod>().get_opt("q5").await.unwrap().is_none());
            let api: Api<ccplant_api::AgentSessionClass> = Api::all(ns.client.clone());
            let _ = api.delete(&class, &DeleteParams::default()).await;
        })
        .await;
}
