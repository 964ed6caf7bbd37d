//! The ccplant API on a real kube-apiserver: the committed CRDs install with client-side
//! `kubectl apply`, every example passes server-side dry-run, and admission refuses bad specs
//! with the documented messages.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;
mod validation;

use ccplant_testenv::TestEnv;
use common::{CRD_NAMES, describe, install_crds, repo_root};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::Api;

/// What client-side apply stores in the last-applied annotation must fit its 256 KiB limit.
const LAST_APPLIED_LIMIT: usize = 262_144;

#[tokio::test]
async fn crds_apply_client_side_and_become_established() {
    let out = install_crds().await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    for name in CRD_NAMES {
        assert!(
            stdout.contains(&format!(
                "customresourcedefinition.apiextensions.k8s.io/{name}"
            )),
            "{stdout}"
        );
    }
    let crds: Api<CustomResourceDefinition> = Api::all(TestEnv::global().client().await);
    for name in CRD_NAMES {
        let crd = crds.get(name).await.expect("CRD exists");
        let conditions = crd.status.and_then(|s| s.conditions).unwrap_or_default();
        for wanted in ["Established", "NamesAccepted"] {
            assert!(
                conditions
                    .iter()
                    .any(|c| c.type_ == wanted && c.status == "True"),
                "{name}: {wanted} in {conditions:?}"
            );
        }
        let last_applied = crd
            .metadata
            .annotations
            .unwrap_or_default()
            .remove("kubectl.kubernetes.io/last-applied-configuration")
            .expect("client-side apply stored the last-applied annotation");
        eprintln!(
            "{name}: last-applied annotation {} bytes",
            last_applied.len()
        );
        assert!(
            last_applied.len() < LAST_APPLIED_LIMIT,
            "{name}: {} bytes",
            last_applied.len()
        );
    }
}

#[tokio::test]
async fn every_example_passes_server_side_dry_run() {
    install_crds().await;
    let env = TestEnv::global();
    env.with_namespace("examples", |ns| async move {
        let mut files: Vec<_> = std::fs::read_dir(repo_root().join("examples"))
            .expect("examples/")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .collect();
        files.sort();
        assert!(
            files.len() >= 8,
            "examples for every documented use, found {files:?}"
        );
        for file in files {
            let out = env
                .kubectl()
                .args([
                    "apply",
                    "--dry-run=server",
                    "--validate=strict",
                    "-n",
                    &ns.name,
                    "-f",
                ])
                .arg(&file)
                .output()
                .expect("run kubectl");
            assert!(
                out.status.success(),
                "{}: {}",
                file.display(),
                describe(&out)
            );
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                !stderr.contains("Warning"),
                "{}: warnings: {stderr}",
                file.display()
            );
        }
    })
    .await;
}

#[tokio::test]
async fn short_names_category_and_printer_columns_work_in_kubectl() {
    install_crds().await;
    let env = TestEnv::global();
    env.with_namespace("kubectl", |ns| async move {
        for file in ["agentsession-bare.yaml", "githubtask-create-issue.yaml"] {
            let out = env
                .kubectl()
                .args(["apply", "-n", &ns.name, "-f"])
                .arg(repo_root().join("examples").join(file))
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", describe(&out));
        }
        let get = |args: &[&str]| {
            let out = env
                .kubectl()
                .args(args)
                .args(["-n", &ns.name])
                .output()
                .unwrap();
            assert!(out.status.success(), "kubectl {args:?}: {}", describe(&out));
            String::from_utf8_lossy(&out.stdout).to_string()
        };
        let ags = get(&["get", "ags", "-o", "wide"]);
        let header: Vec<&str> = ags.lines().next().unwrap().split_whitespace().collect();
        assert_eq!(
            header,
            [
                "NAME",
                "PHASE",
                "AGENT",
                "REPOSITORY",
                "AGENT",
                "STATE",
                "ENDPOINT",
                "EXPIRES",
                "AGE"
            ],
            "{ags}"
        );
        assert!(ags.contains("claude"), "agent type column: {ags}");
        let ght = get(&["get", "ght"]);
        let header: Vec<&str> = ght.lines().next().unwrap().split_whitespace().collect();
        assert_eq!(
            header,
            ["NAME", "ACTION", "REPOSITORY", "PHASE", "RESULT", "AGE"],
            "{ght}"
        );
        let all = get(&["get", "ccplant", "-o", "name"]);
        let mut names: Vec<&str> = all.lines().collect();
        names.sort();
        assert_eq!(
            names.len(),
            2,
            "kubectl get ccplant lists both kinds: {all}"
        );
        assert!(names[0].starts_with("agentsession.ccplant.io/"), "{all}");
        assert!(names[1].starts_with("githubtask.ccplant.io/"), "{all}");
    })
    .await;
}

#[tokio::test]
async fn kubectl_explain_documents_the_fields() {
    install_crds().await;
    let env = TestEnv::global();
    for (path, must_mention) in [
        ("agentsession.spec.lifetime.maxDuration", "24h"),
        ("agentsession.status.agent.state", "Idle"),
        ("githubtask.spec.createPullRequest.head", "newest"),
        ("githubtask.spec.approveAndMerge.mergeMethod", "squash"),
    ] {
        // The apiserver publishes a new CRD's OpenAPI a moment after it is Established.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let out = loop {
            let out = env.kubectl().args(["explain", path]).output().unwrap();
            if out.status.success() || std::time::Instant::now() > deadline {
                break out;
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        };
        assert!(
            out.status.success(),
            "kubectl explain {path}: {}",
            describe(&out)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("DESCRIPTION"), "{text}");
        assert!(
            text.contains(must_mention),
            "kubectl explain {path} mentions {must_mention:?}: {text}"
        );
    }
}
