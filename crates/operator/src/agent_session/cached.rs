//! What the children's watches read of each object: only the fields the reconciler uses.
//!
//! The k8s-openapi types are large even when mostly empty (a `Pod` is 2.4 KB before any string,
//! its optional spec included; a real session pod 39 KB in memory). The children's watches
//! deserialize straight into these types, then keep a summary ([`super::children`]):
//! serde skips every other field as it reads, so a pod's spec, its annotations (which carry the
//! prompt, up to 256 KiB) and image details are never allocated. Each type has the JSON shape of
//! the object it stands for, so it is read from the same API paths.
//!
//! - [`CachedPod`]: identity, owner references, deletion mark, and the status fields
//!   [`super::observe`] reads (phase, conditions, container states) plus the pod IP.
//! - [`CachedService`]: existence and `spec.clusterIP` (headless or not).
//! - [`CachedPolicy`]: only its existence.
//! - [`CachedClaim`]: existence and `status.phase` (`Bound`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;
use std::borrow::Cow;

/// `kube::Resource` for a cached stand-in of the k8s-openapi type `$of`: same kind, group,
/// version and path.
macro_rules! stands_for {
    ($ty:ty, $of:ty) => {
        impl kube::Resource for $ty {
            type DynamicType = ();
            type Scope = k8s_openapi::NamespaceResourceScope;

            fn kind(_: &()) -> Cow<'_, str> {
                <$of as k8s_openapi::Resource>::KIND.into()
            }
            fn group(_: &()) -> Cow<'_, str> {
                <$of as k8s_openapi::Resource>::GROUP.into()
            }
            fn version(_: &()) -> Cow<'_, str> {
                <$of as k8s_openapi::Resource>::VERSION.into()
            }
            fn plural(_: &()) -> Cow<'_, str> {
                <$of as k8s_openapi::Resource>::URL_PATH_SEGMENT.into()
            }
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct CachedPod {
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub status: Option<CachedPodStatus>,
}
stands_for!(CachedPod, k8s_openapi::api::core::v1::Pod);

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CachedPodStatus {
    pub phase: Option<String>,
    pub reason: Option<String>,
    pub message: Option<String>,
    #[serde(rename = "podIP")]
    pub pod_ip: Option<String>,
    pub conditions: Option<Vec<CachedCondition>>,
    pub init_container_statuses: Option<Vec<CachedContainer>>,
    pub container_statuses: Option<Vec<CachedContainer>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct CachedCondition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    pub reason: Option<String>,
    pub message: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct CachedContainer {
    pub name: String,
    pub state: Option<CachedContainerState>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct CachedContainerState {
    pub waiting: Option<Waiting>,
    pub terminated: Option<Terminated>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct Waiting {
    pub reason: Option<String>,
    pub message: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Terminated {
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub reason: Option<String>,
    pub message: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct CachedService {
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: Option<ServiceIp>,
}
stands_for!(CachedService, k8s_openapi::api::core::v1::Service);

#[derive(Clone, Debug, Default, Deserialize)]
pub struct ServiceIp {
    #[serde(rename = "clusterIP")]
    pub cluster_ip: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct CachedPolicy {
    #[serde(default)]
    pub metadata: ObjectMeta,
}
stands_for!(
    CachedPolicy,
    k8s_openapi::api::networking::v1::NetworkPolicy
);

#[derive(Clone, Debug, Default, Deserialize)]
pub struct CachedClaim {
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub status: Option<ClaimPhase>,
}
stands_for!(
    CachedClaim,
    k8s_openapi::api::core::v1::PersistentVolumeClaim
);

#[derive(Clone, Debug, Default, Deserialize)]
pub struct ClaimPhase {
    pub phase: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::Resource;
    use serde_json::json;

    #[test]
    fn cached_children_read_the_api_objects_and_stand_for_their_kinds() {
        let pod: CachedPod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": "s", "namespace": "team", "uid": "u1", "resourceVersion": "7",
                "labels": {"ccplant.io/session": "s"},
                "annotations": {"ccplant.io/prompt": "x".repeat(10_000)},
                "ownerReferences": [{"apiVersion": "ccplant.io/v1alpha1", "kind": "AgentSession",
                    "name": "s", "uid": "su", "controller": true}],
            },
            "spec": {"containers": [{"name": "agent", "image": "ghcr.io/x/agent:1"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.7", "hostIP": "1.2.3.4",
                "conditions": [{"type": "Ready", "status": "True",
                    "lastTransitionTime": "2026-11-30T00:00:00Z"}],
                "containerStatuses": [{"name": "agent", "ready": true, "restartCount": 0,
                    "image": "ghcr.io/x/agent:1", "imageID": "sha256:abc",
                    "state": {"terminated": {"exitCode": 137, "signal": 9,
                        "reason": "OOMKilled", "containerID": "containerd://abc"}}}]},
        }))
        .unwrap();
        assert_eq!(
            pod.metadata.owner_references.as_ref().map(Vec::len),
            Some(1)
        );
        let status = pod.status.as_ref().unwrap();
        assert_eq!(status.pod_ip.as_deref(), Some("10.0.0.7"));
        assert_eq!(status.conditions.as_ref().unwrap()[0].type_, "Ready");
        let agent = &status.container_statuses.as_ref().unwrap()[0];
        let terminated = agent.state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!((terminated.exit_code, terminated.signal), (137, Some(9)));
        assert_eq!(terminated.reason.as_deref(), Some("OOMKilled"));

        let service: CachedService = serde_json::from_value(json!({
            "metadata": {"name": "s", "namespace": "team"},
            "spec": {"clusterIP": "None", "ports": [{"port": 3284}]},
        }))
        .unwrap();
        assert_eq!(
            service.spec.and_then(|s| s.cluster_ip).as_deref(),
            Some("None")
        );
        let claim: CachedClaim = serde_json::from_value(json!({
            "metadata": {"name": "s", "namespace": "team"},
            "spec": {"accessModes": ["ReadWriteOnce"]},
            "status": {"phase": "Bound", "capacity": {"storage": "1Gi"}},
        }))
        .unwrap();
        assert_eq!(claim.status.and_then(|s| s.phase).as_deref(), Some("Bound"));

        assert_eq!(
            CachedPod::url_path(&(), Some("team")),
            "/api/v1/namespaces/team/pods"
        );
        assert_eq!(
            CachedService::url_path(&(), Some("team")),
            "/api/v1/namespaces/team/services"
        );
        assert_eq!(
            CachedPolicy::url_path(&(), Some("team")),
            "/apis/networking.k8s.io/v1/namespaces/team/networkpolicies"
        );
        assert_eq!(
            CachedClaim::url_path(&(), Some("team")),
            "/api/v1/namespaces/team/persistentvolumeclaims"
        );
        assert_eq!(CachedPod::kind(&()), "Pod");
        assert_eq!(CachedPolicy::api_version(&()), "networking.k8s.io/v1");
    }

    #[test]
    fn cached_children_are_small() {
        use std::mem::size_of;
        // The k8s-openapi Pod is 2464 bytes before any of its strings.
        assert!(size_of::<CachedPod>() < 600, "{}", size_of::<CachedPod>());
        assert!(size_of::<CachedService>() < 450);
        assert!(size_of::<CachedPolicy>() < 400);
    }
}
