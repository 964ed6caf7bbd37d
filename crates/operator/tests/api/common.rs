//! Shared helpers of the operator's integration tests.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use ccplant_testenv::TestEnv;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::Api;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;
use std::time::Duration;

pub const CRD_NAMES: [&str; 3] = [
    "agentsessions.ccplant.io",
    "githubtasks.ccplant.io",
    "githubcredentials.ccplant.io",
];

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root")
}

pub fn describe(out: &Output) -> String {
    format!(
        "exit {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `kubectl apply -f crds/` (client-side, as a user would) once per test binary and waits
/// until both CRDs are Established. Returns kubectl's output of that one run.
pub async fn install_crds() -> &'static Output {
    static APPLIED: OnceLock<Output> = OnceLock::new();
    let env = TestEnv::global();
    let out = APPLIED.get_or_init(|| {
        env.kubectl()
            .arg("apply")
            .arg("-f")
            .arg(repo_root().join("crds"))
            .output()
            .expect("run kubectl")
    });
    assert!(
        out.status.success(),
        "kubectl apply -f crds/ failed: {}",
        describe(out)
    );
    let crds: Api<CustomResourceDefinition> = Api::all(env.client().await);
    for name in CRD_NAMES {
        ccplant_testenv::wait_for(
            &crds,
            name,
            Duration::from_secs(60),
            "CRD Established",
            |crd| {
                crd.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| {
                        c.iter()
                            .any(|c| c.type_ == "Established" && c.status == "True")
                    })
            },
        )
        .await;
    }
    out
}

/// RFC 7386 JSON merge patch: `null` removes a key, objects merge, anything else replaces.
pub fn merge(base: &mut serde_json::Value, patch: &serde_json::Value) {
    match (base, patch) {
        (serde_json::Value::Object(b), serde_json::Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    b.remove(k);
                } else {
                    merge(b.entry(k.clone()).or_insert(serde_json::Value::Null), v);
                }
            }
        }
        (b, p) => *b = p.clone(),
    }
}
