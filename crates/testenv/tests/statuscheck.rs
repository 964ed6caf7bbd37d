//! `ccplant-statuscheck` against hand-made statuses: the kstatus library and the Argo CD health
//! checks of `examples/argocd/argocd-cm-health.yaml` say what README "Status for tools" says,
//! including the cases no controller test reaches (no status yet, an unobserved generation).
#![allow(clippy::unwrap_used)]

use ccplant_testenv::Binaries;
use ccplant_testenv::statuscheck::verdicts;
use serde_json::{Value, json};

fn object(kind: &str, generation: i64, status: Value) -> Value {
    let mut v = json!({
        "apiVersion": "ccplant.io/v1alpha1", "kind": kind,
        "metadata": {"name": "x", "namespace": "team", "generation": generation},
        "spec": {},
    });
    if !status.is_null() {
        v["status"] = status;
    }
    v
}

fn cond(type_: &str, status: &str, reason: &str) -> Value {
    json!({"type": type_, "status": status, "reason": reason, "message": "m",
           "lastTransitionTime": "2026-12-01T00:00:00Z"})
}

#[test]
fn verdicts_of_each_kind_of_status() {
    let bins = Binaries::ensure().unwrap();
    let cases = [
        (
            "AgentSession",
            1,
            Value::Null,
            "Current/Progressing",
            "no status yet: kstatus's rule for custom resources",
        ),
        (
            "AgentSession",
            2,
            json!({"observedGeneration": 1, "phase": "Running",
            "conditions": [cond("Ready", "True", "Running")]}),
            "InProgress/Progressing",
            "the latest spec not observed yet",
        ),
        (
            "AgentSession",
            1,
            json!({"observedGeneration": 1, "phase": "Running",
            "conditions": [cond("Ready", "True", "Running")]}),
            "Current/Healthy",
            "running",
        ),
        (
            "AgentSession",
            1,
            json!({"observedGeneration": 1, "phase": "Suspended",
            "conditions": [cond("Ready", "True", "Suspended"), cond("Suspended", "True", "Suspended")]}),
            "Current/Suspended",
            "suspended",
        ),
        (
            "AgentSession",
            1,
            json!({"observedGeneration": 1, "phase": "Starting",
            "conditions": [cond("Ready", "False", "Waiting"), cond("Reconciling", "True", "Waiting")]}),
            "InProgress/Progressing",
            "starting",
        ),
        (
            "AgentSession",
            1,
            json!({"observedGeneration": 1, "phase": "Failed",
            "conditions": [cond("Ready", "False", "Failed"), cond("Stalled", "True", "Failed")]}),
            "Failed/Degraded",
            "failed",
        ),
        (
            "GitHubTask",
            1,
            json!({"observedGeneration": 1, "phase": "Running",
            "conditions": [cond("Ready", "False", "RateLimited"), cond("Reconciling", "True", "RateLimited")]}),
            "InProgress/Progressing",
            "rate limited",
        ),
        (
            "GitHubTask",
            1,
            json!({"observedGeneration": 1, "phase": "Succeeded",
            "conditions": [cond("Ready", "True", "Succeeded")]}),
            "Current/Healthy",
            "succeeded",
        ),
        (
            "GitHubTask",
            1,
            json!({"observedGeneration": 1, "phase": "Failed",
            "conditions": [cond("Ready", "False", "NotFound"), cond("Stalled", "True", "NotFound")]}),
            "Failed/Degraded",
            "refused by GitHub",
        ),
    ];
    for (kind, generation, status, want, what) in cases {
        let got = verdicts(&bins, &object(kind, generation, status)).unwrap();
        assert_eq!(got.short(), want, "{kind}: {what}: {got:?}");
    }
    // The Argo CD message says why.
    let failed = object(
        "GitHubTask",
        1,
        json!({"observedGeneration": 1, "phase": "Failed",
        "conditions": [cond("Stalled", "True", "NotFound")]}),
    );
    assert_eq!(
        verdicts(&bins, &failed).unwrap().argocd_message,
        "NotFound: m"
    );
}
