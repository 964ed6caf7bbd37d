#![allow(clippy::expect_used, clippy::unwrap_used)]
//! The test environment itself: a real control plane whose pods are scheduled onto KWOK nodes,
//! reach Running, and are garbage-collected with their owner.

use ccplant_testenv::{TestEnv, wait_for, wait_for_deletion};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn kwok_nodes_are_ready() {
    let env = TestEnv::global();
    let nodes: Api<Node> = Api::all(env.client().await);
    // An attached cluster (CCPLANT_TEST_KUBECONFIG) has its own nodes; ours has two KWOK nodes.
    let selector = if env.external { "" } else { "type=kwok" };
    let list = nodes
        .list(&ListParams::default().labels(selector))
        .await
        .expect("list nodes");
    if !env.external {
        assert_eq!(list.items.len(), 2, "two KWOK nodes registered");
    }
    assert!(!list.items.is_empty(), "at least one node");
    for node in list.items {
        let ready = node
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .map(|c| c.status);
        assert_eq!(
            ready.as_deref(),
            Some("True"),
            "node {:?} Ready",
            node.metadata.name
        );
    }
}

#[tokio::test]
async fn pod_is_scheduled_runs_and_is_garbage_collected_with_its_owner() {
    let env = TestEnv::global();
    env.with_namespace("env", |ns| async move {
        let configmaps: Api<ConfigMap> = ns.api();
        let owner = configmaps
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({ "metadata": { "name": "owner" } }))
                    .expect("configmap"),
            )
            .await
            .expect("create owner");
        let uid = owner.metadata.uid.clone().expect("owner uid");

        let pods: Api<Pod> = ns.api();
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {
                "name": "worker",
                "ownerReferences": [{
                    "apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid,
                }],
            },
            "spec": {
                "containers": [{ "name": "main", "image": "registry.example/worker:1" }],
            },
        }))
        .expect("pod");
        pods.create(&PostParams::default(), &pod)
            .await
            .expect("create pod");

        let running = wait_for(
            &pods,
            "worker",
            Duration::from_secs(60),
            "pod Running and Ready",
            |p: &Pod| {
                let status = p.status.as_ref();
                status.and_then(|s| s.phase.as_deref()) == Some("Running")
                    && status
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            },
        )
        .await;
        let node = running
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .expect("scheduled");
        if !env.external {
            assert!(
                node.starts_with("kwok-node-"),
                "scheduled onto a KWOK node, got {node}"
            );
            let ip = running
                .status
                .as_ref()
                .and_then(|s| s.pod_ip.clone())
                .expect("pod IP");
            assert!(
                ip.starts_with("10.244."),
                "pod IP from KWOK's CIDR, got {ip}"
            );
        }

        configmaps
            .delete("owner", &DeleteParams::background())
            .await
            .expect("delete owner");
        wait_for_deletion(
            &pods,
            "worker",
            Duration::from_secs(60),
            "garbage collection of the owned pod",
        )
        .await;
    })
    .await;
}

#[tokio::test]
async fn a_pod_annotated_with_an_exit_code_finishes_succeeded_or_failed() {
    let env = TestEnv::global();
    if env.external {
        return; // The exit-code stage is ours; an attached cluster runs real containers.
    }
    env.with_namespace("env-exit", |ns| async move {
        let pods: Api<Pod> = ns.api();
        for (name, code, reason, phase) in
            [("ok", "0", "Completed", "Succeeded"), ("bad", "3", "Error", "Failed"), ("oom", "137", "OOMKilled", "Failed")]
        {
            let mut annotations = serde_json::Map::new();
            annotations.insert(ccplant_testenv::controlplane::TEST_EXIT_CODE_ANNOTATION.into(), json!(code));
            if name == "oom" {
                annotations.insert("ccplant.io/test-exit-reason".into(), json!("OOMKilled"));
            }
            let pod: Pod = serde_json::from_value(json!({
                "metadata": { "name": name, "annotations": annotations },
                "spec": { "restartPolicy": "Never", "containers": [{ "name": "main", "image": "registry.example/worker:1" }] },
            }))
            .expect("pod");
            pods.create(&PostParams::default(), &pod).await.expect("create pod");
            let done = wait_for(&pods, name, Duration::from_secs(60), &format!("phase {phase}"), |p: &Pod| {
                p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some(phase)
            })
            .await;
            let terminated = done.status.and_then(|s| s.container_statuses).expect("container statuses")[0]
                .state
                .clone()
                .and_then(|s| s.terminated)
                .expect("terminated");
            assert_eq!(terminated.exit_code.to_string(), code, "{name}");
            assert_eq!(terminated.reason.as_deref(), Some(reason), "{name}");
        }
    })
    .await;
}
