//! What the caches keep of each object: only the fields the reconciler reads.
//!
//! Every session and child lives in memory for the operator's lifetime, so a cached object is
//! cut down as its watch event arrives (before it reaches the store): a Pod keeps its identity,
//! owner references, deletion mark and the status fields [`super::observe`] reads; its spec and
//! annotations (which carry the prompt, up to 256 KiB) go. Services, NetworkPolicies and PVCs
//! are only checked for existence (and a Service for being headless, a PVC for `Bound`).
//! managedFields and `kubectl apply`'s last-applied annotation are dropped everywhere
//! (see [`crate::context::synced_reflector`]).

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStatus, PersistentVolumeClaim, PersistentVolumeClaimStatus, Pod,
    PodCondition, PodStatus, Service, ServiceSpec,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Identity, owner references and the deletion mark; labels and annotations go.
fn identity_only(meta: &mut ObjectMeta) {
    meta.annotations = None;
    meta.labels = None;
    meta.managed_fields = None;
    meta.finalizers = None;
}

pub fn pod(pod: &mut Pod) {
    identity_only(&mut pod.metadata);
    pod.spec = None;
    pod.status = pod.status.take().map(|s| PodStatus {
        phase: s.phase,
        reason: s.reason,
        message: s.message,
        pod_ip: s.pod_ip,
        conditions: s.conditions.map(|cs| {
            cs.into_iter()
                .map(|c| PodCondition {
                    type_: c.type_,
                    status: c.status,
                    reason: c.reason,
                    message: c.message,
                    ..Default::default()
                })
                .collect()
        }),
        init_container_statuses: s.init_container_statuses.map(containers),
        container_statuses: s.container_statuses.map(containers),
        ..Default::default()
    });
}

/// Name and state (waiting/terminated reason, message, exit code) of each container.
fn containers(statuses: Vec<ContainerStatus>) -> Vec<ContainerStatus> {
    statuses
        .into_iter()
        .map(|s| ContainerStatus {
            name: s.name,
            ready: s.ready,
            restart_count: s.restart_count,
            state: s.state.map(|st| ContainerState {
                waiting: st.waiting,
                terminated: st.terminated.map(|mut t| {
                    t.container_id = None;
                    t
                }),
                running: st.running,
            }),
            ..Default::default()
        })
        .collect()
}

/// Existence, and whether it is headless (its clusterIP cannot change once allocated).
pub fn service(svc: &mut Service) {
    identity_only(&mut svc.metadata);
    svc.status = None;
    svc.spec = svc.spec.take().map(|s| ServiceSpec {
        cluster_ip: s.cluster_ip,
        ..Default::default()
    });
}

pub fn network_policy(np: &mut NetworkPolicy) {
    identity_only(&mut np.metadata);
    np.spec = None;
}

/// Existence and phase (`Bound`).
pub fn pvc(pvc: &mut PersistentVolumeClaim) {
    identity_only(&mut pvc.metadata);
    pvc.spec = None;
    pvc.status = pvc.status.take().map(|s| PersistentVolumeClaimStatus {
        phase: s.phase,
        ..Default::default()
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent_session::observe::{PodState, observe_pod};
    use serde_json::json;

    fn pod_from(value: serde_json::Value) -> Pod {
        serde_json::from_value(value).unwrap()
    }

    /// A pod as the apiserver sends it: spec, prompt annotation, full container statuses.
    fn full_pod(status: serde_json::Value) -> Pod {
        pod_from(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": "s", "namespace": "team", "uid": "u1", "resourceVersion": "7",
                "labels": {"ccplant.io/session": "s"},
                "annotations": {"ccplant.io/prompt": "x".repeat(10_000)},
                "ownerReferences": [{"apiVersion": "ccplant.io/v1alpha1", "kind": "AgentSession",
                    "name": "s", "uid": "su", "controller": true}],
                "managedFields": [{"manager": "ccplant-operator", "operation": "Update"}],
            },
            "spec": {"containers": [{"name": "agent", "image": "ghcr.io/x/agent:1"}]},
            "status": status,
        }))
    }

    #[test]
    fn a_trimmed_pod_keeps_what_observe_reads_and_is_small() {
        let cases = [
            json!({"phase": "Running", "podIP": "10.0.0.7", "hostIP": "1.2.3.4",
                "conditions": [{"type": "Ready", "status": "True",
                    "lastTransitionTime": "2026-11-30T00:00:00Z"}],
                "containerStatuses": [{"name": "agent", "ready": true, "restartCount": 0,
                    "image": "ghcr.io/x/agent:1", "imageID": "sha256:abc",
                    "state": {"running": {"startedAt": "2026-11-30T00:00:00Z"}}}]}),
            json!({"phase": "Pending",
                "conditions": [{"type": "PodScheduled", "status": "False",
                    "reason": "Unschedulable", "message": "0/2 nodes are available"}]}),
            json!({"phase": "Pending",
                "containerStatuses": [{"name": "agent", "ready": false, "restartCount": 0,
                    "image": "i", "imageID": "",
                    "state": {"waiting": {"reason": "ImagePullBackOff", "message": "back-off"}}}]}),
            json!({"phase": "Failed",
                "initContainerStatuses": [{"name": "clone", "ready": false, "restartCount": 0,
                    "image": "i", "imageID": "", "state": {"terminated": {"exitCode": 128,
                    "reason": "Error", "message": "repository not found",
                    "containerID": "containerd://abc"}}}]}),
            json!({"phase": "Failed", "reason": "Evicted", "message": "low on memory"}),
            json!({"phase": "Running",
                "containerStatuses": [{"name": "agent", "ready": false, "restartCount": 0,
                    "image": "i", "imageID": "", "state": {"terminated": {"exitCode": 0}}}]}),
        ];
        for status in cases {
            let full = full_pod(status.clone());
            let mut trimmed = full.clone();
            pod(&mut trimmed);
            assert_eq!(
                observe_pod(Some(&trimmed)),
                observe_pod(Some(&full)),
                "{status}"
            );
            assert!(trimmed.spec.is_none() && trimmed.metadata.annotations.is_none());
            assert_eq!(
                trimmed.metadata.owner_references,
                full.metadata.owner_references
            );
            assert_eq!(
                trimmed.status.as_ref().and_then(|s| s.pod_ip.clone()),
                full.status.as_ref().and_then(|s| s.pod_ip.clone())
            );
            let size = serde_json::to_string(&trimmed).unwrap().len();
            assert!(size < 900, "{size} bytes: {trimmed:?}");
        }
        let mut deleting = full_pod(json!({"phase": "Running"}));
        deleting.metadata.deletion_timestamp = Some(crate::time::to_k8s(chrono::Utc::now()));
        pod(&mut deleting);
        assert_eq!(observe_pod(Some(&deleting)), PodState::Terminating);
    }

    #[test]
    fn services_keep_their_cluster_ip_and_pvcs_their_phase() {
        let mut svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "s", "namespace": "team", "labels": {"a": "b"}},
            "spec": {"clusterIP": "None", "ports": [{"port": 3284}], "selector": {"a": "b"}},
        }))
        .unwrap();
        service(&mut svc);
        assert_eq!(svc.spec.and_then(|s| s.cluster_ip).as_deref(), Some("None"));
        assert!(svc.metadata.labels.is_none());
        let mut claim: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": "s", "namespace": "team"},
            "spec": {"accessModes": ["ReadWriteOnce"]},
            "status": {"phase": "Bound", "capacity": {"storage": "1Gi"}},
        }))
        .unwrap();
        pvc(&mut claim);
        assert!(claim.spec.is_none());
        assert_eq!(claim.status.and_then(|s| s.phase).as_deref(), Some("Bound"));
    }
}
