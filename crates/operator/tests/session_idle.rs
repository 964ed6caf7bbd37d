//! Steady state writes nothing: with 50 Running sessions, 30 s of idle cause zero write
//! requests to the resources the operator manages. Its own test binary (own control plane), so
//! no other test's writes are counted; writes are read from kube-apiserver's own
//! `apiserver_request_total` counter.
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "github_task/harness.rs"]
mod harness;

use ccplant_api::{AgentSession, AgentSessionPhase};
use ccplant_testenv::TestEnv;
use harness::*;
use kube::api::{ListParams, PostParams};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const SESSIONS: usize = 50;
const IDLE: Duration = Duration::from_secs(30);
const MANAGED: [&str; 6] = [
    "agentsessions",
    "pods",
    "services",
    "secrets",
    "persistentvolumeclaims",
    "networkpolicies",
];

/// Write requests per (resource, verb) so far, from the apiserver's metrics.
async fn write_counts(client: &kube::Client) -> BTreeMap<(String, String), f64> {
    let text = client
        .request_text(http::Request::get("/metrics").body(Vec::new()).unwrap())
        .await
        .unwrap();
    let mut counts = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
    {
        let label = |name: &str| {
            line.split(&format!("{name}=\""))
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or_default()
                .to_string()
        };
        let (verb, resource, sub) = (label("verb"), label("resource"), label("subresource"));
        let write = [
            "POST", "PUT", "PATCH", "DELETE", "APPLY", "CREATE", "UPDATE",
        ]
        .contains(&verb.as_str());
        // The scheduler binds pods and KWOK (the kubelet's stand-in) writes their status.
        let not_ours = resource == "pods" && (sub == "binding" || sub == "status");
        if !write || !MANAGED.contains(&resource.as_str()) || not_ours {
            continue;
        }
        let resource = if sub.is_empty() {
            resource
        } else {
            format!("{resource}/{sub}")
        };
        let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        *counts.entry((resource, verb)).or_insert(0.0) += value;
    }
    counts
}

#[tokio::test]
async fn fifty_running_sessions_cause_no_writes_while_idle() {
    install_crds();
    TestEnv::global()
        .with_namespace("idle", |ns| async move {
            let fake = fake_with_repo().await;
            token_secret(&ns).await;
            let mut op = Operator::new(&ns.name, &fake.url(), &[]);
            op.start();
            let sessions = ns.api::<AgentSession>();
            let at_start = write_counts(&ns.client).await;
            for i in 0..SESSIONS {
                let s: AgentSession = serde_json::from_value(json!({
                    "apiVersion": "ccplant.io/v1alpha1", "kind": "AgentSession",
                    "metadata": {"name": format!("s{i}")},
                    "spec": {"agent": {"image": "ghcr.io/ccplant/agent:1"}, "repository": {"name": "octo/hello"},
                             "github": {"secretRef": {"name": SECRET}}},
                }))
                .unwrap();
                sessions.create(&PostParams::default(), &s).await.unwrap();
            }
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                let list = sessions.list(&ListParams::default()).await.unwrap();
                let running = list.items.iter().filter(|s| s.phase() == Some(AgentSessionPhase::Running)).count();
                if running == SESSIONS {
                    break;
                }
                assert!(!op.exited(), "the operator exited: {}", op.log_text());
                assert!(Instant::now() < deadline, "only {running} of {SESSIONS} sessions Running");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            let before = write_counts(&ns.client).await;
            // Writes from creation to Running, per session (the test's own 50 creates excluded).
            let mut per_session: BTreeMap<String, f64> = BTreeMap::new();
            for (k, v) in &before {
                let d = v - at_start.get(k).copied().unwrap_or(0.0);
                if d > 0.0 {
                    *per_session.entry(format!("{} {}", k.1, k.0)).or_insert(0.0) += d / SESSIONS as f64;
                }
            }
            if let Some(creates) = per_session.get_mut("POST agentsessions") {
                // The test's own creates.
                *creates -= 1.0;
            }
            per_session.retain(|_, v| *v > 0.0);
            let total: f64 = per_session.values().sum();
            eprintln!("operator writes per session, creation -> Running: {total:.2} {per_session:?}");
            // The floor: one create per child (credentials Secret, Service, NetworkPolicy, Pod)
            // plus at most three status patches: Starting, Running, and the agent's
            // reachability once the operator tried its API (nothing serves it at this
            // control plane's pod IPs).
            assert!(total <= 7.0, "more writes than the floor: {total} {per_session:?}");
            let versions: Vec<_> =
                sessions.list(&ListParams::default()).await.unwrap().items.into_iter().map(|s| s.metadata.resource_version).collect();
            tokio::time::sleep(IDLE).await; // the measurement window itself
            let after = write_counts(&ns.client).await;
            let delta: BTreeMap<_, _> = after
                .iter()
                .filter_map(|(k, v)| {
                    let d = v - before.get(k).copied().unwrap_or(0.0);
                    (d > 0.0).then(|| (format!("{} {}", k.1, k.0), d))
                })
                .collect();
            eprintln!("writes to managed resources during {IDLE:?} of idle with {SESSIONS} Running sessions: {delta:?}");
            assert!(delta.is_empty(), "steady state wrote: {delta:?}");
            let versions_after: Vec<_> =
                sessions.list(&ListParams::default()).await.unwrap().items.into_iter().map(|s| s.metadata.resource_version).collect();
            assert_eq!(versions, versions_after, "no session changed");
            assert!(!op.exited(), "the operator is still running");
        })
        .await;
}
