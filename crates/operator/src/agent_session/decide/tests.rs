//! Table tests of `decide`: every transition of DESIGN §3.1, with the expected plan written out
//! as text — the steps, the writes, the requeue, the Event and the whole status (every
//! condition with its lastTransitionTime, in seconds from T0). No client, no clock.

use super::super::children::{Control, PodSummary, Presence, ServiceSummary};
use super::super::conversation::{Facts, Reachability, Snapshot, View, Worker};
use super::super::credentials::{Issued, SessionSecret, TokenKind};
use super::super::observe::{Learned, MintFailure, Observed, ObservedCredentials};
use super::super::pod_state::PodState;
use super::*;
use crate::credentials::SecretLocation;
use ccplant_api::AgentState;
use ccplant_github::{ExposeSecret, SecretString};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

const T0: i64 = 1_800_000_000;
const DAY: i64 = 86_400;

fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(T0 + secs, 0).unwrap()
}

fn t(secs: i64) -> String {
    at(secs).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn cfg() -> SessionConfig {
    SessionConfig {
        build: BuildConfig {
            default_agent_image: Some("agent:1".into()),
            ..BuildConfig::new("ccplant-system")
        },
        max_session_duration: Duration::from_secs(DAY as u64),
    }
}

/// A session `s` in namespace `team`, created at T0, generation 1.
fn session(spec: Value, status: Value) -> AgentSession {
    let mut v = json!({
        "apiVersion": "ccplant.io/v1alpha1", "kind": "AgentSession",
        "metadata": {"name": "s", "namespace": "team", "uid": "u1", "generation": 1,
                     "creationTimestamp": t(0)},
        "spec": spec,
    });
    if !status.is_null() {
        v["status"] = status;
    }
    serde_json::from_value(v).unwrap()
}

/// A condition as the apiserver stores it.
fn cond(type_: &str, status: &str, reason: &str, message: &str, since: i64) -> Value {
    json!({"type": type_, "status": status, "reason": reason, "message": message,
           "lastTransitionTime": t(since), "observedGeneration": 1})
}

/// A class that allows every override and isolation off.
fn open_class() -> Arc<ccplant_api::AgentSessionClass> {
    Arc::new(
        serde_json::from_value(json!({
            "apiVersion": "ccplant.io/v1alpha1", "kind": "AgentSessionClass",
            "metadata": {"name": "open"},
            "spec": {"namespaceSelector": {}, "agent": {"images": ["*"]},
                     "pod": {"allowedOverrides": ["labels", "annotations", "nodeSelector",
                         "tolerations", "affinity", "priorityClassName", "runtimeClassName",
                         "serviceAccountName", "imagePullSecrets", "securityContext"]},
                     "network": {"allowIsolationOff": true}},
        }))
        .unwrap(),
    )
}

/// Controlled by the session `s` (uid u1), as its watch shows it.
fn ours(uid: &str) -> Control {
    Control {
        uid: Some(uid.into()),
        ..Control::created_for("u1")
    }
}

fn pod(state: PodState) -> PodSummary {
    PodSummary {
        state,
        ip: Some("10.244.0.7".into()),
        uid: 7,
        delivered_before: 0,
        control: ours("pod-uid"),
    }
}

/// Every child in the caches, the pod in `state`.
fn with_children(state: Option<PodState>) -> Observed {
    Observed {
        children: super::super::observe::Children {
            pod: state.map(pod),
            service: Some(ServiceSummary {
                headless: true,
                control: ours("service-uid"),
            }),
            pvc: None,
            network_policy: Some(Presence {
                deleting: false,
                bound: false,
                control: ours("policy-uid"),
            }),
            foreign_secret: false,
        },
        ..Observed::default()
    }
}

/// A worker talking to the pod's agent.
fn worker(outbox: &[&str], facts: Facts, published: Snapshot) -> Worker {
    Worker {
        pod_uid: 7,
        addr: "10.244.0.7:3284".parse().unwrap(),
        alive: true,
        outbox: Arc::new(outbox.iter().map(|s| s.to_string()).collect()),
        view: View { published, facts },
    }
}

fn idle_snapshot(delivered: usize, since: i64) -> Snapshot {
    Snapshot {
        state: Some(AgentState::Idle),
        delivered,
        last_activity: Some(at(since)),
        last_agent_message: Some("done".into()),
        reachable: Reachability::Reachable,
    }
}

fn idle_facts(delivered: usize, since: i64) -> Facts {
    Facts {
        reachable: true,
        delivered,
        idle: true,
        pending: 0,
        settled_since: Some(at(since)),
        last_activity: at(since),
    }
}

fn app_secret() -> Arc<Secret> {
    Arc::new(Secret {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            resource_version: Some("1".into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([
            ("app-id".to_owned(), ByteString(b"42".to_vec())),
            (
                "private-key".to_owned(),
                ByteString(b"-----BEGIN RSA PRIVATE KEY-----".to_vec()),
            ),
            ("installation-id".to_owned(), ByteString(b"7".to_vec())),
        ])),
        ..Default::default()
    })
}

fn token_secret(token: &str) -> Arc<Secret> {
    Arc::new(Secret {
        data: Some(BTreeMap::from([(
            "token".to_owned(),
            ByteString(token.as_bytes().to_vec()),
        )])),
        ..Default::default()
    })
}

fn installation(issued: i64, expires: i64) -> Issued {
    Issued {
        token: SecretString::from("ghs_current"),
        kind: TokenKind::Installation,
        issued_at: Some(at(issued)),
        expires_at: Some(at(expires)),
        source: SecretLocation::new("team", "gh"),
    }
}

fn time(t: &Option<Time>) -> String {
    t.as_ref()
        .map(|t| format!("+{}", t.0.as_second() - T0))
        .unwrap_or_else(|| "-".into())
}

fn opt(s: &Option<String>) -> &str {
    s.as_deref().unwrap_or("-")
}

/// The plan as text: every step, then the whole status.
fn render(plan: &Plan) -> String {
    let mut out = String::new();
    let first = match &plan.first {
        None => "-".to_string(),
        Some(First::StopAgent { end: None }) => "stop agent".to_string(),
        Some(First::StopAgent { end: Some(e) }) => format!("stop agent ({} {})", e.phase, e.reason),
        Some(First::Token(credentials::Issue::Adopt(i))) => {
            format!("adopt {:?} token {}", i.kind, i.token.expose_secret())
        }
        Some(First::Token(credentials::Issue::Store(i))) => {
            format!("store {:?} token {}", i.kind, i.token.expose_secret())
        }
        Some(First::Token(credentials::Issue::Mint(m))) => {
            format!(
                "mint token for {} {:?}{}",
                m.repository,
                m.permissions,
                m.replaces
                    .as_ref()
                    .map(|t| format!(" replacing {}", t.expose_secret()))
                    .unwrap_or_default()
            )
        }
        Some(First::AddFinalizer) => "add finalizer ccplant.io/revoke-token".to_string(),
    };
    let _ = writeln!(out, "first: {first}");
    if plan.first.is_some() {
        // Done alone; the plan is decided again with its outcome: nothing else counts.
        return out;
    }
    let c = &plan.children;
    let mut writes = Vec::new();
    let at = |uid: &Option<Arc<str>>| {
        uid.as_deref()
            .map(|u| format!(" at {u}"))
            .unwrap_or_default()
    };
    fn how<T>(w: &Write<T>) -> (&'static str, Option<Arc<str>>) {
        match w {
            Write::Create(_) => ("create", None),
            Write::Apply { uid, .. } => ("apply", uid.clone()),
        }
    }
    if let Some(w) = &c.pvc {
        let (v, uid) = how(w);
        writes.push(format!("{v} PVC{}", at(&uid)));
    }
    if let Some(s) = &c.service {
        let ip = s.object().spec.as_ref().and_then(|s| s.cluster_ip.clone());
        let (v, uid) = how(s);
        writes.push(format!("{v} Service (clusterIP {}){}", opt(&ip), at(&uid)));
    }
    if let Some(w) = &c.network_policy {
        let (v, uid) = how(w);
        writes.push(format!("{v} NetworkPolicy{}", at(&uid)));
    }
    if let Some(d) = &c.delete_network_policy {
        writes.push(format!("delete NetworkPolicy{}", at(&d.uid)));
    }
    if c.editor_secret {
        writes.push("ensure editor Secret".into());
    }
    if let Some(p) = &c.pod {
        let before = p.metadata.annotations.as_ref().and_then(|a| {
            a.get(super::super::conversation::DELIVERED_BEFORE_ANNOTATION)
                .cloned()
        });
        writes.push(format!("create Pod (delivered-before {})", opt(&before)));
    }
    if let Some(d) = &plan.delete_pod {
        writes.push(format!("delete Pod{}", at(&d.uid)));
    }
    if let Some(r) = &plan.revoke {
        writes.push(format!(
            "revoke {:?} token {} with {}",
            r.kind,
            r.token.as_ref().map_or("-", |t| t.expose_secret()),
            r.app.as_ref().map_or("-".to_string(), ToString::to_string)
        ));
    }
    match &plan.agent {
        AgentStep::Keep => {}
        AgentStep::Run(target) => writes.push(format!(
            "run agent at {} (outbox {}, base {}, seed {:?})",
            target.addr,
            target.outbox.len(),
            target.base,
            target.seed.state
        )),
    }
    if plan.remove_finalizer {
        writes.push("remove finalizer ccplant.io/revoke-token".into());
    }
    if plan.delete_session {
        writes.push("delete AgentSession".into());
    }
    let _ = writeln!(
        out,
        "writes: {}",
        if writes.is_empty() {
            "-".into()
        } else {
            writes.join("; ")
        }
    );
    let requeue = plan
        .requeue
        .map_or("on change".to_string(), |d| format!("{}s", d.as_secs()));
    let _ = writeln!(out, "requeue: {requeue}");
    let event = plan.event.as_ref().map_or("-".to_string(), |e| {
        format!(
            "{:?} {} {:?}",
            e.type_,
            e.reason,
            e.note.clone().unwrap_or_default()
        )
    });
    let _ = writeln!(out, "event: {event}");
    let s = &plan.status;
    let _ = writeln!(
        out,
        "status: {} {:?} gen {:?}",
        s.phase.map_or("-", |p| p.as_str()),
        opt(&s.message),
        s.observed_generation
    );
    let _ = writeln!(
        out,
        "  pod {} service {} endpoint {} editor {} branch {}",
        opt(&s.pod_name),
        opt(&s.service_name),
        opt(&s.endpoint),
        opt(&s.editor_url),
        opt(&s.work_branch)
    );
    let _ = writeln!(
        out,
        "  start {} expires {} completed {}",
        time(&s.start_time),
        time(&s.expires_at),
        time(&s.completion_time)
    );
    if let Some(a) = &s.agent {
        let _ = writeln!(
            out,
            "  agent {} delivered {} active {} last {:?}",
            a.state.map_or("-", |s| s.as_str()),
            a.delivered_messages,
            time(&a.last_activity_time),
            a.last_agent_message.clone().unwrap_or_default()
        );
    }
    for c in &s.conditions {
        let _ = writeln!(
            out,
            "  {} {} {} {:?} {}",
            c.type_,
            c.status,
            c.reason,
            c.message,
            time(&Some(c.last_transition_time.clone()))
        );
    }
    out
}

/// Decides, acting out the steps planned first as the reconcile would (each learned outcome
/// given by `learn`), and renders every round.
fn rounds(
    session: &AgentSession,
    mut observed: Observed,
    now: i64,
    cfg: &SessionConfig,
    mut learn: impl FnMut(&First) -> Learned,
) -> String {
    let mut out = String::new();
    for _ in 0..MAX_TEST_ROUNDS {
        let plan = decide(session, &observed, at(now), cfg);
        out.push_str(&render(&plan));
        match &plan.first {
            Some(first) => {
                out.push_str("--\n");
                observed.learn(learn(first));
            }
            None => return out,
        }
    }
    panic!("no settled plan: {out}");
}

const MAX_TEST_ROUNDS: usize = 4;

fn no_steps(first: &First) -> Learned {
    panic!("unexpected first step {first:?}")
}

fn check(name: &str, got: String, want: &str) {
    let want = want
        .lines()
        .map(str::trim_start)
        .filter(|l| !l.is_empty())
        .map(|l| match l.strip_prefix("| ") {
            Some(rest) => format!("  {rest}"),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(got.trim_end(), want, "case: {name}\n--- got ---\n{got}");
}

const RUNNING_STATUS_CONDITIONS: &str = "Ready True Running";

fn running_status(extra: Value) -> Value {
    let mut v = json!({
        "phase": "Running", "message": "the agent is running", "observedGeneration": 1,
        "podName": "s", "serviceName": "s", "endpoint": "http://s.team.svc:3284",
        "startTime": t(0), "expiresAt": t(DAY),
        "agent": {"state": "Idle", "deliveredMessages": 1, "lastActivityTime": t(5),
                  "lastAgentMessage": "done"},
        "conditions": [
            cond("CredentialsReady", "True", "NotRequired", "the session uses no GitHub credentials", 1),
            cond("Ready", "True", "Running", "the agent is running", 2),
            cond("Finished", "False", "Running", "", 1),
            cond("AgentReachable", "True", "Reachable", "the agent API answers at 10.244.0.7:3284", 3),
        ],
    });
    if let (Some(v), Some(extra)) = (v.as_object_mut(), extra.as_object()) {
        v.extend(extra.clone());
    }
    v
}

#[test]
fn a_new_session_gets_its_children_and_starts() {
    let s = session(json!({"prompt": "hi"}), Value::Null);
    let got = rounds(&s, Observed::default(), 1, &cfg(), no_steps);
    check(
        "new",
        got,
        r#"
        first: -
        writes: create Service (clusterIP None); create NetworkPolicy; create Pod (delivered-before 0)
        requeue: 86399s
        event: Normal Starting "starting the session pod"
        status: Starting "starting the session pod" gen Some(1)
        | pod s service s endpoint - editor - branch -
        | start +0 expires +86400 completed -
        | CredentialsReady True NotRequired "the session uses no GitHub credentials" +1
        | Ready False Waiting "starting the session pod" +1
        | Finished False Starting "" +1
        | Reconciling True Waiting "starting the session pod" +1
    "#,
    );
    let _ = RUNNING_STATUS_CONDITIONS;
}

/// A session that started at T0 (+1 s) and whose children all exist.
fn starting_status() -> Value {
    json!({
        "phase": "Starting", "message": "starting the session pod", "observedGeneration": 1,
        "podName": "s", "serviceName": "s", "startTime": t(0), "expiresAt": t(DAY),
        "conditions": [
            cond("CredentialsReady", "True", "NotRequired", "the session uses no GitHub credentials", 1),
            cond("Ready", "False", "Waiting", "starting the session pod", 1),
            cond("Finished", "False", "Starting", "", 1),
            cond("Reconciling", "True", "Waiting", "starting the session pod", 1),
        ],
    })
}

#[test]
fn the_pod_decides_the_phase() {
    let cases: Vec<(&str, PodState, &str)> = vec![
        (
            "still starting: nothing to write",
            PodState::Starting,
            r#"
            first: -
            writes: -
            requeue: 86390s
            event: -
            status: Starting "starting the session pod" gen Some(1)
            | pod s service s endpoint - editor - branch -
            | start +0 expires +86400 completed -
            | CredentialsReady True NotRequired "the session uses no GitHub credentials" +1
            | Ready False Waiting "starting the session pod" +1
            | Finished False Starting "" +1
            | Reconciling True Waiting "starting the session pod" +1
            "#,
        ),
        (
            "stuck on its image: still Starting, the kubelet's word in the message",
            PodState::Pending {
                message: "container agent: ImagePullBackOff: Back-off pulling image".into(),
            },
            r#"
            first: -
            writes: -
            requeue: 86390s
            event: -
            status: Starting "container agent: ImagePullBackOff: Back-off pulling image" gen Some(1)
            | pod s service s endpoint - editor - branch -
            | start +0 expires +86400 completed -
            | CredentialsReady True NotRequired "the session uses no GitHub credentials" +1
            | Ready False Waiting "container agent: ImagePullBackOff: Back-off pulling image" +1
            | Finished False Starting "" +1
            | Reconciling True Waiting "container agent: ImagePullBackOff: Back-off pulling image" +1
            "#,
        ),
        (
            "ready: Running, the agent worker starts",
            PodState::Running,
            r#"
            first: -
            writes: run agent at 10.244.0.7:3284 (outbox 1, base 0, seed None)
            requeue: 86390s
            event: Normal Running "the agent is running"
            status: Running "the agent is running" gen Some(1)
            | pod s service s endpoint http://s.team.svc:3284 editor - branch -
            | start +0 expires +86400 completed -
            | agent Starting delivered 0 active +10 last ""
            | CredentialsReady True NotRequired "the session uses no GitHub credentials" +1
            | Ready True Running "the agent is running" +10
            | Finished False Running "" +1
            | AgentReachable Unknown Connecting "connecting to the agent API at 10.244.0.7:3284" +10
            "#,
        ),
        (
            "the agent exited 0",
            PodState::Succeeded,
            r#"
            first: -
            writes: -
            requeue: on change
            event: Normal Succeeded "the agent finished successfully"
            status: Succeeded "the agent finished successfully" gen Some(1)
            | pod s service s endpoint - editor - branch -
            | start +0 expires +86400 completed +10
            | CredentialsReady True NotRequired "the session uses no GitHub credentials" +1
            | Ready True Succeeded "the agent finished successfully" +10
            | Finished True Succeeded "the agent finished successfully" +10
            "#,
        ),
        (
            "the agent was OOMKilled: Failed, Stalled",
            PodState::Failed {
                reason: "OOMKilled".into(),
                message: "container agent exited with code 137 (OOMKilled)".into(),
            },
            r#"
            first: -
            writes: -
            requeue: on change
            event: Warning Failed "OOMKilled: container agent exited with code 137 (OOMKilled)"
            status: Failed "OOMKilled: container agent exited with code 137 (OOMKilled)" gen Some(1)
            | pod s service s endpoint - editor - branch -
            | start +0 expires +86400 completed +10
            | CredentialsReady True NotRequired "the session uses no GitHub credentials" +1
            | Ready False Failed "OOMKilled: container agent exited with code 137 (OOMKilled)" +1
            | Finished True Failed "OOMKilled: container agent exited with code 137 (OOMKilled)" +10
            | Stalled True Failed "OOMKilled: container agent exited with code 137 (OOMKilled)" +10
            "#,
        ),
        (
            "terminating: looked at again within 2 s",
            PodState::Terminating,
            r#"
            first: -
            writes: -
            requeue: 2s
            event: -
            status: Starting "starting the session pod" gen Some(1)
            | pod s service s endpoint - editor - branch -
            | start +0 expires +86400 completed -
            | CredentialsReady True NotRequired "the session uses no GitHub credentials" +1
            | Ready False Waiting "starting the session pod" +1
            | Finished False Starting "" +1
            | Reconciling True Waiting "starting the session pod" +1
            "#,
        ),
    ];
    for (name, state, want) in cases {
        let s = session(json!({"prompt": "hi"}), starting_status());
        check(
            name,
            rounds(&s, with_children(Some(state)), 10, &cfg(), no_steps),
            want,
        );
    }
}

#[test]
fn a_running_session_in_steady_state_writes_nothing() {
    let s = session(json!({"prompt": "hi"}), running_status(json!({})));
    let w = worker(&["hi"], idle_facts(1, 5), idle_snapshot(1, 5));
    let observed = Observed {
        worker: Some(w),
        ..with_children(Some(PodState::Running))
    };
    let plan = decide(&s, &observed, at(100), &cfg());
    assert!(plan.first.is_none());
    assert_eq!(plan.status, s.status.clone().unwrap(), "no status write");
    assert!(plan.event.is_none());
    assert!(matches!(plan.agent, AgentStep::Keep));
    assert_eq!(plan.requeue, Some(Duration::from_secs((DAY - 100) as u64)));
}

#[test]
fn the_conversation_ends_the_session() {
    let stop = |end: &str| {
        let end = end.to_string();
        move |first: &First| {
            let First::StopAgent { end: Some(e) } = first else {
                panic!("expected a stop with an end, got {first:?} ({end})");
            };
            Learned::AgentStopped {
                last: Some(idle_snapshot(2, 50)),
                end: Some(e.clone()),
            }
        }
    };
    // WhenIdle, idleFor 60 s: settled since +40 → ends at +100.
    let s = session(
        json!({"prompt": "hi", "messages": ["more"], "completion": {"mode": "WhenIdle", "idleFor": "60s"}}),
        running_status(json!({})),
    );
    let observed = Observed {
        worker: Some(worker(
            &["hi", "more"],
            idle_facts(2, 40),
            idle_snapshot(2, 40),
        )),
        ..with_children(Some(PodState::Running))
    };
    check(
        "not yet idle for idleFor: requeued for the moment it is",
        rounds(&s, observed.clone(), 70, &cfg(), no_steps),
        r#"
        first: -
        writes: -
        requeue: 30s
        event: -
        status: Running "the agent is running" gen Some(1)
        | pod s service s endpoint http://s.team.svc:3284 editor - branch -
        | start +0 expires +86400 completed -
        | agent Idle delivered 2 active +40 last "done"
        | CredentialsReady True NotRequired "the session uses no GitHub credentials" +1
        | Ready True Running "the agent is running" +2
        | Finished False Running "" +1
        | AgentReachable True Reachable "the agent API answers at 10.244.0.7:3284" +3
    "#,
    );
    check(
        "WhenIdle: Succeeded once idle for idleFor",
        rounds(&s, observed.clone(), 100, &cfg(), stop("Completed")),
        r#"
        first: stop agent (Succeeded Completed)
        --
        first: -
        writes: delete Pod at pod-uid
        requeue: on change
        event: Normal Succeeded "every message was delivered and the agent then stayed idle for 60s"
        status: Succeeded "every message was delivered and the agent then stayed idle for 60s" gen Some(1)
        | pod s service s endpoint - editor - branch -
        | start +0 expires +86400 completed +100
        | agent - delivered 2 active +50 last "done"
        | CredentialsReady True NotRequired "the session uses no GitHub credentials" +1
        | Ready True Completed "every message was delivered and the agent then stayed idle for 60s" +2
        | Finished True Completed "every message was delivered and the agent then stayed idle for 60s" +100
        | AgentReachable False NotRunning "the session's pod is not running" +100
    "#,
    );
    // A message appended since the worker last saw the outbox: not settled, the worker is told.
    let appended = session(
        json!({"prompt": "hi", "messages": ["more", "and more"], "completion": {"mode": "WhenIdle", "idleFor": "60s"}}),
        running_status(json!({})),
    );
    let plan = decide(&appended, &observed, at(100), &cfg());
    assert!(plan.first.is_none(), "not ended: a message is pending");
    assert_eq!(plan.status.phase, Some(AgentSessionPhase::Running));
    let AgentStep::Run(target) = &plan.agent else {
        panic!("the worker gets the new outbox: {:?}", plan.agent);
    };
    assert_eq!(target.outbox, ["hi", "more", "and more"]);

    // idleTimeout 30 s, quiet since +40: Suspended with a workspace, Expired without.
    let idle = |workspace: bool| {
        let mut spec = json!({"prompt": "hi", "lifetime": {"idleTimeout": "30s"}});
        if workspace {
            spec["workspace"] = json!({"size": "1Gi"});
        }
        session(spec, running_status(json!({})))
    };
    let observed = Observed {
        worker: Some(worker(&["hi"], idle_facts(1, 40), idle_snapshot(1, 40))),
        ..with_children(Some(PodState::Running))
    };
    let with_pvc = Observed {
        children: super::super::observe::Children {
            pvc: Some(Presence {
                deleting: false,
                bound: true,
                control: ours("pvc-uid"),
            }),
            ..observed.children.clone()
        },
        ..observed.clone()
    };
    check(
        "idleTimeout with a workspace: Suspended",
        rounds(&idle(true), with_pvc, 70, &cfg(), stop("IdleTimeout")),
        r#"
        first: stop agent (Suspended IdleTimeout)
        --
        first: -
        writes: delete Pod at pod-uid
        requeue: on change
        event: Normal Suspended "suspended after 30s without agent activity; a new message or `kubectl ccplant resume` resumes it"
        status: Suspended "suspended after 30s without agent activity; a new message or `kubectl ccplant resume` resumes it" gen Some(1)
        | pod s service s endpoint - editor - branch -
        | start +0 expires +86400 completed -
        | agent - delivered 2 active +50 last "done"
        | CredentialsReady True NotRequired "the session uses no GitHub credentials" +1
        | Ready True IdleTimeout "suspended after 30s without agent activity; a new message or `kubectl ccplant resume` resumes it" +2
        | Finished False Suspended "" +1
        | AgentReachable False NotRunning "the session's pod is not running" +70
        | WorkspaceReady True Available "PVC s-workspace (1Gi) bound" +70
        | Suspended True IdleTimeout "suspended after 30s without agent activity; a new message or `kubectl ccplant resume` resumes it" +70
    "#,
    );
    check(
        "idleTimeout without a workspace: Expired",
        rounds(&idle(false), observed, 70, &cfg(), stop("IdleTimeout")),
        r#"
        first: stop agent (Expired IdleTimeout)
        --
        first: -
        writes: delete Pod at pod-uid
        requeue: on change
        event: Warning IdleTimeout "expired after 30s without agent activity"
        status: Expired "expired after 30s without agent activity" gen Some(1)
        | pod s service s endpoint - editor - branch -
        | start +0 expires +86400 completed +70
        | agent - delivered 2 active +50 last "done"
        | CredentialsReady True NotRequired "the session uses no GitHub credentials" +1
        | Ready True IdleTimeout "expired after 30s without agent activity" +2
        | Finished True IdleTimeout "expired after 30s without agent activity" +70
        | AgentReachable False NotRunning "the session's pod is not running" +70
    "#,
    );
}

#[test]
fn an_unreachable_agent_shows_why_and_the_session_keeps_running() {
    let s = session(json!({"prompt": "hi"}), running_status(json!({})));
    let down = Snapshot {
        state: Some(AgentState::Unreachable),
        reachable: Reachability::Unreachable {
            reason: reasons::CONNECTION_FAILED.into(),
            message: "cannot connect to the agent API at 10.244.0.7:3284: refused".into(),
        },
        ..idle_snapshot(1, 5)
    };
    let facts = Facts {
        reachable: false,
        idle: false,
        settled_since: None,
        ..idle_facts(1, 5)
    };
    let observed = Observed {
        worker: Some(worker(&["hi"], facts, down)),
        ..with_children(Some(PodState::Running))
    };
    check(
        "unreachable",
        rounds(&s, observed, 60, &cfg(), no_steps),
        r#"
        first: -
        writes: -
        requeue: 86340s
        event: -
        status: Running "the agent is running" gen Some(1)
        | pod s service s endpoint http://s.team.svc:3284 editor - branch -
        | start +0 expires +86400 completed -
        | agent Unreachable delivered 1 active +5 last "done"
        | CredentialsReady True NotRequired "the session uses no GitHub credentials" +1
        | Ready True Running "the agent is running" +2
        | Finished False Running "" +1
        | AgentReachable False ConnectionFailed "cannot connect to the agent API at 10.244.0.7:3284: refused" +60
    "#,
    );
}

#[test]
fn a_pod_deleted_behind_our_back_is_created_again_for_what_its_agent_had_not() {
    let s = session(
        json!({"prompt": "hi", "messages": ["a", "b"]}),
        running_status(json!({})),
    );
    let observed = Observed {
        worker: Some(worker(
            &["hi", "a", "b"],
            idle_facts(2, 5),
            idle_snapshot(2, 5),
        )),
        ..with_children(None)
    };
    let stopped = |first: &First| {
        assert!(matches!(first, First::StopAgent { end: None }), "{first:?}");
        // A send was in flight: the stopped worker counts 2 delivered.
        Learned::AgentStopped {
            last: Some(idle_snapshot(2, 8)),
            end: None,
        }
    };
    check(
        "pod gone",
        rounds(&s, observed, 20, &cfg(), stopped),
        r#"
        first: stop agent
        --
        first: -
        writes: create Pod (delivered-before 2)
        requeue: 86380s
        event: Normal Starting "starting the session pod"
        status: Starting "starting the session pod" gen Some(1)
        | pod s service s endpoint http://s.team.svc:3284 editor - branch -
        | start +0 expires +86400 completed -
        | agent - delivered 2 active +8 last "done"
        | CredentialsReady True NotRequired "the session uses no GitHub credentials" +1
        | Ready False Waiting "starting the session pod" +20
        | Finished False Starting "" +1
        | AgentReachable False NotRunning "the session's pod is not running" +20
        | Reconciling True Waiting "starting the session pod" +20
    "#,
    );
}

#[test]
fn expiry_is_exact_and_ttl_after_finished_deletes_the_session() {
    let s = session(
        json!({"prompt": "hi", "lifetime": {"maxDuration": "1h", "ttlAfterFinished": "10s"}}),
        running_status(json!({"expiresAt": t(3600)})),
    );
    let running = with_children(Some(PodState::Running));
    let observed = Observed {
        worker: Some(worker(&["hi"], idle_facts(1, 5), idle_snapshot(1, 5))),
        ..running.clone()
    };
    let plan = decide(&s, &observed, at(3599), &cfg());
    assert_eq!(
        plan.requeue,
        Some(Duration::from_secs(1)),
        "requeued for expiresAt"
    );
    let stopped = |_: &First| Learned::AgentStopped {
        last: Some(idle_snapshot(1, 5)),
        end: None,
    };
    check(
        "at expiresAt",
        rounds(&s, observed, 3600, &cfg(), stopped),
        r#"
        first: stop agent
        --
        first: -
        writes: delete Pod at pod-uid
        requeue: 10s
        event: Warning Expired "expired at 2027-01-15T09:00:00+00:00"
        status: Expired "expired at 2027-01-15T09:00:00+00:00" gen Some(1)
        | pod s service s endpoint - editor - branch -
        | start +0 expires +3600 completed +3600
        | agent - delivered 1 active +5 last "done"
        | CredentialsReady True NotRequired "the session uses no GitHub credentials" +1
        | Ready True Expired "expired at 2027-01-15T09:00:00+00:00" +2
        | Finished True Expired "expired at 2027-01-15T09:00:00+00:00" +3600
        | AgentReachable False NotRunning "the session's pod is not running" +3600
    "#,
    );
    // Finished: the pod goes (if still there); 10 s after completion the session itself.
    let expired = session(
        json!({"prompt": "hi", "lifetime": {"maxDuration": "1h", "ttlAfterFinished": "10s"}}),
        json!({"phase": "Expired", "message": "expired at x", "observedGeneration": 1,
               "startTime": t(0), "expiresAt": t(3600), "completionTime": t(3600),
               "conditions": [
                   cond("Ready", "True", "Expired", "expired at x", 3600),
                   cond("Finished", "True", "Expired", "expired at x", 3600)]}),
    );
    let before = decide(&expired, &with_children(None), at(3605), &cfg());
    assert_eq!(
        before.status,
        expired.status.clone().unwrap(),
        "nothing to write"
    );
    assert_eq!(
        (before.delete_session, before.requeue),
        (false, Some(Duration::from_secs(5)))
    );
    let due = decide(
        &expired,
        &with_children(Some(PodState::Terminating)),
        at(3610),
        &cfg(),
    );
    assert!(
        due.delete_pod.is_none(),
        "a terminating pod is not deleted again"
    );
    assert!(due.delete_session);
    assert_eq!(due.requeue, None);
}

#[test]
fn a_status_written_before_kstatus_is_migrated_once() {
    // An older operator left Ready=False on a Succeeded session and no Stalled on a Failed one.
    let old = |phase: &str, reason: &str| {
        session(
            json!({"prompt": "hi"}),
            json!({"phase": phase, "message": "m", "observedGeneration": 1,
                   "startTime": t(0), "expiresAt": t(DAY), "completionTime": t(50),
                   "conditions": [
                       cond("Ready", "False", reason, "m", 50),
                       cond("Finished", "True", reason, "m", 50)]}),
        )
    };
    let got = render(&decide(
        &old("Succeeded", "Succeeded"),
        &with_children(None),
        at(900),
        &cfg(),
    ));
    check(
        "old Succeeded",
        got,
        r#"
        first: -
        writes: -
        requeue: on change
        event: -
        status: Succeeded "m" gen Some(1)
        | pod - service - endpoint - editor - branch -
        | start +0 expires +86400 completed +50
        | Ready True Succeeded "m" +900
        | Finished True Succeeded "m" +50
    "#,
    );
    let got = render(&decide(
        &old("Failed", "Failed"),
        &with_children(None),
        at(900),
        &cfg(),
    ));
    check(
        "old Failed",
        got,
        r#"
        first: -
        writes: -
        requeue: on change
        event: -
        status: Failed "m" gen Some(1)
        | pod - service - endpoint - editor - branch -
        | start +0 expires +86400 completed +50
        | Ready False Failed "m" +50
        | Finished True Failed "m" +50
        | Stalled True Failed "m" +900
    "#,
    );
    // A reason this operator never writes for a final phase: the phase's own reason.
    let odd = decide(
        &old("Succeeded", "SomethingElse"),
        &with_children(None),
        at(900),
        &cfg(),
    );
    assert_eq!(status::ready_reason(&odd.status), Some(reasons::SUCCEEDED));
    // Asserted again: no further write.
    let migrated = decide(
        &old("Failed", "Failed"),
        &with_children(None),
        at(900),
        &cfg(),
    )
    .status;
    let again = session(
        json!({"prompt": "hi"}),
        serde_json::to_value(&migrated).unwrap(),
    );
    assert_eq!(
        decide(&again, &with_children(None), at(1900), &cfg()).status,
        migrated
    );
}

#[test]
fn suspend_deletes_the_pod_keeps_the_rest_and_resume_starts_a_pod_for_the_rest() {
    let stored = running_status(json!({}));
    let suspended = session(
        json!({"prompt": "hi", "messages": ["a"], "suspend": true, "workspace": {"size": "1Gi"}}),
        stored,
    );
    let observed = Observed {
        worker: Some(worker(&["hi", "a"], idle_facts(1, 5), idle_snapshot(1, 5))),
        ..with_children(Some(PodState::Running))
    };
    let stopped = |_: &First| Learned::AgentStopped {
        last: Some(idle_snapshot(1, 5)),
        end: None,
    };
    let got = rounds(&suspended, observed, 30, &cfg(), stopped);
    let last = got.split("--\n").last().unwrap().to_string();
    check(
        "suspend",
        last,
        r#"
        first: -
        writes: create PVC; delete Pod at pod-uid
        requeue: 86370s
        event: Normal Suspended "suspended: the pod is deleted, the workspace kept"
        status: Suspended "suspended: the pod is deleted, the workspace kept" gen Some(1)
        | pod s service s endpoint - editor - branch -
        | start +0 expires +86400 completed -
        | agent - delivered 1 active +5 last "done"
        | CredentialsReady True NotRequired "the session uses no GitHub credentials" +1
        | Ready True Suspended "suspended: the pod is deleted, the workspace kept" +2
        | Finished False Suspended "" +1
        | AgentReachable False NotRunning "the session's pod is not running" +30
        | Suspended True Suspended "suspended: the pod is deleted, the workspace kept" +30
    "#,
    );
    // Resumed (generation 2: spec.suspend false): the children are applied again, a pod for
    // the one message the first agent had not, Suspended turns False.
    let mut resumed = session(
        json!({"prompt": "hi", "messages": ["a"], "workspace": {"size": "1Gi"}}),
        serde_json::to_value(decide(&suspended, &with_children(None), at(30), &cfg()).status)
            .unwrap(),
    );
    resumed.metadata.generation = Some(2);
    let got = render(&decide(&resumed, &with_children(None), at(40), &cfg()));
    check(
        "resume",
        got,
        r#"
        first: -
        writes: create PVC; apply Service (clusterIP None) at service-uid; apply NetworkPolicy at policy-uid; create Pod (delivered-before 1)
        requeue: 86360s
        event: Normal Starting "starting the session pod"
        status: Starting "starting the session pod" gen Some(2)
        | pod s service s endpoint - editor - branch -
        | start +0 expires +86400 completed -
        | agent - delivered 1 active +5 last "done"
        | CredentialsReady True NotRequired "the session uses no GitHub credentials" +1
        | Ready False Waiting "starting the session pod" +40
        | Finished False Starting "" +1
        | AgentReachable False NotRunning "the session's pod is not running" +30
        | Suspended False Resumed "" +40
        | WorkspaceReady False Waiting "PVC s-workspace not bound yet" +40
        | Reconciling True Waiting "starting the session pod" +40
    "#,
    );
}

#[test]
fn a_spec_the_operator_cannot_act_on_is_stalled_and_waits_for_a_change() {
    let no_image = SessionConfig {
        build: BuildConfig::new("ccplant-system"),
        ..cfg()
    };
    let s = session(json!({"prompt": "hi"}), Value::Null);
    check(
        "no image",
        rounds(&s, Observed::default(), 1, &no_image, no_steps),
        r#"
        first: -
        writes: -
        requeue: on change
        event: Warning InvalidSpec "spec.agent.image is empty and the operator has no --default-agent-image"
        status: Pending "spec.agent.image is empty and the operator has no --default-agent-image" gen Some(1)
        | pod - service - endpoint - editor - branch -
        | start +0 expires +86400 completed -
        | Ready False InvalidSpec "spec.agent.image is empty and the operator has no --default-agent-image" +1
        | Finished False Pending "" +1
        | Stalled True InvalidSpec "spec.agent.image is empty and the operator has no --default-agent-image" +1
    "#,
    );
}

#[test]
fn a_child_the_apiserver_refused_is_shown_and_looked_at_again_in_five_minutes() {
    let s = session(
        json!({"prompt": "hi", "pod": {"priorityClassName": "nope"}}),
        starting_status(),
    );
    let observed = Observed {
        refused: Some("Pod team/s was refused: no PriorityClass with name nope was found".into()),
        class: Some(open_class()),
        ..Observed::default()
    };
    check(
        "refused",
        rounds(&s, observed, 5, &cfg(), no_steps),
        r#"
        first: -
        writes: -
        requeue: 300s
        event: Warning ChildRejected "Pod team/s was refused: no PriorityClass with name nope was found"
        status: Pending "Pod team/s was refused: no PriorityClass with name nope was found" gen Some(1)
        | pod s service s endpoint - editor - branch -
        | start +0 expires +86400 completed -
        | CredentialsReady True NotRequired "the session uses no GitHub credentials" +1
        | Ready False ChildRejected "Pod team/s was refused: no PriorityClass with name nope was found" +1
        | Finished False Pending "" +1
        | Stalled True ChildRejected "Pod team/s was refused: no PriorityClass with name nope was found" +5
    "#,
    );
}

fn with_secret(spec: Value) -> AgentSession {
    let mut spec = spec;
    spec["github"] = json!({"secretRef": {"name": "gh"}});
    spec["repository"] = json!({"name": "octo/hello"});
    session(spec, Value::Null)
}

fn creds(source_secret: Option<Result<Arc<Secret>, String>>) -> Observed {
    Observed {
        credentials: ObservedCredentials {
            source: Some(SecretLocation::new("team", "gh")),
            own: Some(None),
            source_secret,
            ..ObservedCredentials::default()
        },
        ..Observed::default()
    }
}

#[test]
fn credentials_decide_whether_a_session_can_start() {
    let pending = |reason: &str, message: &str, kind: &str| {
        format!(
            r#"
            first: -
            writes: -
            requeue: 1s
            event: Warning {reason} "{message}"
            status: Pending "{message}" gen Some(1)
            | pod - service - endpoint - editor - branch ccplant/s
            | start +0 expires +86400 completed -
            | CredentialsReady False {reason} "{message}" +1
            | Ready False {reason} "{message}" +1
            | Finished False Pending "" +1
            | {kind} True {reason} "{message}" +1
            "#
        )
    };
    let s = with_secret(json!({"prompt": "hi"}));
    let missing = creds(Some(Err("Secret team/gh not found".into())));
    check(
        "missing Secret: InProgress, looked at again (1 s doubling to 30 s)",
        rounds(&s, missing, 1, &cfg(), no_steps),
        &pending("SecretNotFound", "Secret team/gh not found", "Reconciling"),
    );
    let empty = creds(Some(Ok(Arc::new(Secret::default()))));
    check(
        "unusable Secret: Stalled",
        rounds(&s, empty, 1, &cfg(), no_steps),
        &pending(
            "InvalidSecret",
            r#"Secret team/gh has neither the key \"token\" nor the keys \"app-id\", \"private-key\" and \"installation-id\""#,
            "Stalled",
        ),
    );
    let shared = cfg();
    let mut plain = session(
        json!({"prompt": "hi", "repository": {"name": "octo/hello"}}),
        Value::Null,
    );
    plain.metadata.generation = Some(1);
    let from_ops = Observed {
        credentials: ObservedCredentials {
            source: Some(SecretLocation::new("ops", "bot")),
            own: Some(None),
            source_secret: Some(Ok(token_secret("ghp_shared"))),
            ..ObservedCredentials::default()
        },
        ..Observed::default()
    };
    let got = rounds(&plain, from_ops, 1, &shared, no_steps);
    assert!(got.contains("Stalled True TokenNotShareable \"Secret ops/bot holds a plain token, which is never copied into another namespace"), "{got}");
}

#[test]
fn tokens_are_issued_first_then_decided_with() {
    let s = with_secret(json!({"prompt": "hi"}));
    // A plain token in the session's namespace: stored in the session's Secret, then used.
    let got = rounds(
        &s,
        creds(Some(Ok(token_secret("ghp_mine")))),
        1,
        &cfg(),
        |first| {
            let First::Token(credentials::Issue::Store(i)) = first else {
                panic!("{first:?}")
            };
            Learned::Token(i.clone())
        },
    );
    let (first, last) = got.split_once("--\n").unwrap();
    assert!(
        first.starts_with("first: store Copy token ghp_mine\n"),
        "{first}"
    );
    assert!(
        last.contains("CredentialsReady True Available \"GitHub token in Secret\" +1"),
        "{last}"
    );
    assert!(last.contains("writes: create Service (clusterIP None); create NetworkPolicy; create Pod (delivered-before 0)"), "{last}");

    // The same token already in the session's Secret (after a restart): adopted, not written.
    let mut restarted = creds(Some(Ok(token_secret("ghp_mine"))));
    restarted.credentials.own = Some(Some(SessionSecret {
        token: Some(SecretString::from("ghp_mine")),
        kind: Some(TokenKind::Copy),
        ..SessionSecret::default()
    }));
    let plan = decide(&s, &restarted, at(1), &cfg());
    assert!(
        matches!(plan.first, Some(First::Token(credentials::Issue::Adopt(_)))),
        "{plan:?}"
    );

    // A GitHub App: the finalizer first (a deletion must revoke what is minted), then an
    // installation token for the one repository.
    let mut app = creds(Some(Ok(app_secret())));
    let plan = decide(&s, &app, at(1), &cfg());
    check(
        "finalizer before the mint",
        render(&plan),
        "first: add finalizer ccplant.io/revoke-token\n",
    );
    app.learn(Learned::FinalizerAdded);
    let plan = decide(&s, &app, at(1), &cfg());
    check(
        "mint",
        render(&plan).lines().next().unwrap().to_string(),
        r#"first: mint token for hello {"contents": "write", "issues": "write", "pull_requests": "write"}"#,
    );
    // Minted: used until three quarters of its life; requeued for then.
    let mut minted = app.clone();
    minted.learn(Learned::Token(installation(1, 3601)));
    let plan = decide(&s, &minted, at(1), &cfg());
    assert!(plan.first.is_none());
    assert_eq!(plan.requeue, Some(Duration::from_secs(2700)));
    // GitHub refused the mint: Pending; Stalled unless GitHub may answer otherwise later.
    for (retryable, kind) in [(true, "Reconciling"), (false, "Stalled")] {
        let mut failed = app.clone();
        failed.learn(Learned::MintFailed(MintFailure {
            message: "minting an installation token for hello: GitHub refused the request (404): Not Found".into(),
            retryable,
        }));
        let got = render(&decide(&s, &failed, at(1), &cfg()));
        assert!(got.contains(&format!("{kind} True TokenUnavailable \"minting an installation token for hello: GitHub refused the request (404): Not Found\" +1")), "{got}");
    }
    // After a restart: an installation token in the session's Secret, before its refresh time,
    // is adopted without reading the App's Secret.
    let mut after_restart = creds(None);
    after_restart.credentials.own = Some(Some(SessionSecret {
        token: Some(SecretString::from("ghs_current")),
        kind: Some(TokenKind::Installation),
        issued_at: Some(at(0)),
        expires_at: Some(at(3600)),
        control: ours("secret-uid"),
    }));
    assert!(!credentials::reads_to_issue(&after_restart.credentials, at(100)).source_secret);
    let plan = decide(&s, &after_restart, at(100), &cfg());
    let Some(First::Token(credentials::Issue::Adopt(i))) = &plan.first else {
        panic!("{plan:?}")
    };
    assert_eq!((i.issued_at, i.expires_at), (Some(at(0)), Some(at(3600))));
    // Past its refresh time it is not adopted: the App's Secret is read and a new one minted.
    assert!(credentials::reads_to_issue(&after_restart.credentials, at(2701)).source_secret);
}

#[test]
fn a_refresh_that_fails_while_the_token_is_still_valid_keeps_the_session_running() {
    let mut spec = json!({"prompt": "hi"});
    spec["github"] = json!({"secretRef": {"name": "gh"}});
    spec["repository"] = json!({"name": "octo/hello"});
    let mut status = running_status(json!({}));
    status["conditions"][0] = cond(
        "CredentialsReady",
        "True",
        "Available",
        "GitHub token in Secret",
        1,
    );
    let s = session(spec, status);
    let mut observed = creds(Some(Err("Secret team/gh not found".into())));
    observed.credentials.issued = Some(installation(0, 3600));
    observed.worker = Some(worker(&["hi"], idle_facts(1, 5), idle_snapshot(1, 5)));
    observed.children = with_children(Some(PodState::Running)).children;
    let plan = decide(&s, &observed, at(2800), &cfg());
    let got = render(&plan);
    assert!(
        got.contains(
            "CredentialsReady False TokenRefreshFailed \"Secret team/gh not found\" +2800"
        ),
        "{got}"
    );
    assert_eq!(plan.status.phase, Some(AgentSessionPhase::Running));
    assert_eq!(plan.requeue, Some(Duration::from_secs(30)));
    // Once it is not valid for 30 s more, the session waits for credentials.
    let plan = decide(&s, &observed, at(3580), &cfg());
    assert_eq!(plan.status.phase, Some(AgentSessionPhase::Pending));
}

#[test]
fn a_finished_session_revokes_its_token_once() {
    let mut spec = json!({"prompt": "hi"});
    spec["github"] = json!({"secretRef": {"name": "gh"}});
    spec["repository"] = json!({"name": "octo/hello"});
    let mut status = running_status(json!({}));
    status["conditions"][0] = cond(
        "CredentialsReady",
        "True",
        "Available",
        "GitHub token in Secret",
        1,
    );
    let s = session(spec, status);
    let mut observed = creds(None);
    observed.credentials.issued = Some(installation(0, 3600));
    observed.children = with_children(Some(PodState::Succeeded)).children;
    let plan = decide(&s, &observed, at(100), &cfg());
    let got = render(&plan);
    assert!(
        got.contains("writes: revoke Some(Installation) token ghs_current with team/gh"),
        "{got}"
    );
    assert!(got.contains("CredentialsReady False Revoked \"the session's token was revoked and its Secret deleted\" +100"), "{got}");
    // Revoked: the finished session is left alone.
    let done = session(
        json!({"prompt": "hi", "github": {"secretRef": {"name": "gh"}}, "repository": {"name": "octo/hello"}}),
        serde_json::to_value(&plan.status).unwrap(),
    );
    let again = decide(&done, &creds(None), at(200), &cfg());
    assert!(again.revoke.is_none());
    assert_eq!(again.status, plan.status);
}

#[test]
fn isolation_turned_off_removes_the_network_policy_and_a_spec_change_reapplies_children() {
    let mut s = session(
        json!({"prompt": "hi", "network": {"isolate": false}}),
        starting_status(),
    );
    s.metadata.generation = Some(1);
    let open = |mut o: Observed| {
        o.class = Some(open_class());
        o
    };
    // The built-in rules keep isolation on.
    let plan = decide(&s, &with_children(Some(PodState::Starting)), at(10), &cfg());
    assert_eq!(plan.status.phase, Some(AgentSessionPhase::Pending));
    assert!(plan.children.delete_network_policy.is_none());
    let plan = decide(
        &s,
        &open(with_children(Some(PodState::Starting))),
        at(10),
        &cfg(),
    );
    assert!(plan.children.delete_network_policy.is_some());
    assert!(
        plan.children.service.is_none(),
        "unchanged, cached: not applied"
    );
    s.metadata.generation = Some(2);
    let plan = decide(
        &s,
        &open(with_children(Some(PodState::Starting))),
        at(10),
        &cfg(),
    );
    assert!(plan.children.service.is_some(), "the spec changed: applied");
    // A Service with a virtual IP (made by an earlier version) keeps it: clusterIP left out.
    let mut observed = open(with_children(Some(PodState::Starting)));
    observed.children.service = Some(ServiceSummary {
        headless: false,
        control: ours("service-uid"),
    });
    let plan = decide(&s, &observed, at(10), &cfg());
    let ip = plan
        .children
        .service
        .and_then(|s| s.object().spec.clone())
        .and_then(|s| s.cluster_ip);
    assert_eq!(ip, None);
}

#[test]
fn every_stage_is_decided_in_order() {
    let c = cfg();
    let s = |spec: Value, status: Value| session(spec, status);
    assert_eq!(
        stage(&s(json!({}), json!({"phase": "Failed"})), &c, at(DAY + 5)),
        Stage::Finished(AgentSessionPhase::Failed)
    );
    assert!(matches!(
        stage(
            &s(json!({"messages": [""]}), Value::Null),
            &SessionConfig {
                build: BuildConfig::new("x"),
                ..cfg()
            },
            at(1)
        ),
        Stage::Invalid(_)
    ));
    assert_eq!(
        stage(&s(json!({"suspend": true}), Value::Null), &c, at(DAY)),
        Stage::Expired
    );
    assert_eq!(
        stage(&s(json!({"suspend": true}), Value::Null), &c, at(DAY - 1)),
        Stage::Suspended
    );
    assert_eq!(stage(&s(json!({}), Value::Null), &c, at(1)), Stage::Active);
    // maxDuration above --max-session-duration is capped.
    let long = s(json!({"lifetime": {"maxDuration": "48h"}}), Value::Null);
    assert_eq!(lifetime(&long, &c, at(1)).1, at(DAY));
}

#[test]
fn the_policy_refuses_before_any_secret_is_read_or_token_minted() {
    let s = with_secret(json!({"prompt": "hi"}));
    for (refusal, want) in [
        (
            crate::policy::Refusal::NotAllowed("GitHubCredential p does not allow repository octo/hello: its repositories are acme/*".into()),
            "Stalled True NotAllowed \"GitHubCredential p does not allow repository octo/hello: its repositories are acme/*\"",
        ),
        (
            crate::policy::Refusal::NotFound("GitHubCredential p does not exist".into()),
            "Reconciling True CredentialNotFound \"GitHubCredential p does not exist\"",
        ),
    ] {
        let mut observed = creds(Some(Ok(app_secret())));
        observed.credentials.source = None;
        observed.credentials.refusal = Some(refusal);
        let plan = decide(&s, &observed, at(1), &cfg());
        let got = render(&plan);
        assert!(got.starts_with("first: -\n"), "nothing issued first: {got}");
        assert!(got.contains(want), "{got}");
        assert_eq!(plan.status.phase, Some(AgentSessionPhase::Pending));
        assert!(plan.children.pod.is_none(), "no pod for a refused session");
    }
}

#[test]
fn a_refresh_mints_a_token_replacing_the_one_in_hand() {
    let mut s = with_secret(json!({"prompt": "hi"}));
    s.metadata.finalizers = Some(vec![REVOKE_FINALIZER.to_string()]);
    let mut observed = creds(Some(Ok(app_secret())));
    observed.credentials.issued = Some(installation(0, 3600));
    // Past three quarters of its life: a new one, replacing the current one.
    let plan = decide(&s, &observed, at(2701), &cfg());
    assert_eq!(
        render(&plan),
        "first: mint token for hello {\"contents\": \"write\", \"issues\": \"write\", \"pull_requests\": \"write\"} replacing ghs_current\n"
    );
}

#[test]
fn a_deleted_session_revokes_its_token_then_drops_the_finalizer() {
    let mut s = with_secret(json!({"prompt": "hi"}));
    s.metadata.finalizers = Some(vec![REVOKE_FINALIZER.to_string()]);
    s.metadata.deletion_timestamp = Some(crate::time::to_k8s(at(50)));
    let mut observed = creds(None);
    observed.credentials.issued = Some(installation(0, 3600));
    let plan = decide(&s, &observed, at(60), &cfg());
    let got = render(&plan);
    assert!(
        got.contains("writes: revoke Some(Installation) token ghs_current with team/gh; remove finalizer ccplant.io/revoke-token"),
        "{got}"
    );
    assert_eq!(
        plan.status,
        s.status.clone().unwrap_or_default(),
        "status untouched"
    );
    assert!(plan.children.pod.is_none() && plan.delete_pod.is_none());
    // A stopped session (finished) drops the finalizer with its revocation too.
    let mut finished = with_secret(json!({"prompt": "hi"}));
    finished.metadata.finalizers = Some(vec![REVOKE_FINALIZER.to_string()]);
    finished.status = Some(serde_json::from_value(json!({"phase": "Succeeded"})).unwrap());
    let plan = decide(&finished, &observed, at(60), &cfg());
    assert!(plan.remove_finalizer, "{}", render(&plan));
    // Active: the finalizer stays.
    let mut active = with_secret(json!({"prompt": "hi"}));
    active.metadata.finalizers = Some(vec![REVOKE_FINALIZER.to_string()]);
    let plan = decide(&active, &observed, at(60), &cfg());
    assert!(!plan.remove_finalizer, "{}", render(&plan));
}

#[test]
fn a_child_name_taken_by_an_object_the_session_does_not_control_touches_nothing() {
    // Controlled by nobody (planted) or by another session (a uid not ours).
    let planted = Control {
        session: 0,
        uid: Some("planted".into()),
    };
    let other = Control {
        uid: Some("other-uid".into()),
        ..Control::created_for("u2")
    };
    let s = session(json!({"prompt": "hi"}), Value::Null);
    let with_workspace = session(
        json!({"prompt": "hi", "workspace": {"size": "1Gi"}}),
        Value::Null,
    );
    let not_isolated = session(
        json!({"prompt": "hi", "network": {"isolate": false}}),
        Value::Null,
    );
    let base = || with_children(None);
    let foreign_pod = {
        let mut o = base();
        o.children.pod = Some(PodSummary {
            control: planted.clone(),
            ..pod(PodState::Running)
        });
        o
    };
    let foreign_service = {
        let mut o = base();
        o.children.service = Some(ServiceSummary {
            headless: true,
            control: other.clone(),
        });
        o
    };
    let foreign_policy = {
        let mut o = base();
        o.children.network_policy = Some(Presence {
            deleting: false,
            bound: false,
            control: planted.clone(),
        });
        o
    };
    let foreign_pvc = {
        let mut o = base();
        o.children.pvc = Some(Presence {
            deleting: false,
            bound: true,
            control: other.clone(),
        });
        o
    };
    let foreign_secret = {
        let mut o = base();
        o.children.foreign_secret = true;
        o
    };
    let learned = {
        let mut o = base();
        o.learn(Learned::Conflict(conflict_message("Pod", "team", "s")));
        o
    };
    let cases: [(&str, &AgentSession, Observed, &str); 6] = [
        ("a planted Pod", &s, foreign_pod, "Pod team/s"),
        (
            "another session's Service",
            &s,
            foreign_service,
            "Service team/s",
        ),
        (
            "a NetworkPolicy nobody controls",
            &s,
            foreign_policy,
            "NetworkPolicy team/s",
        ),
        (
            "another session's workspace claim",
            &with_workspace,
            foreign_pvc,
            "PersistentVolumeClaim team/s-workspace",
        ),
        (
            "a Secret nobody controls",
            &s,
            foreign_secret,
            "Secret team/s-github",
        ),
        (
            "a create that found the name taken",
            &s,
            learned,
            "Pod team/s",
        ),
    ];
    for (name, session, observed, what) in cases {
        let message = format!(
            "{what} exists and is not controlled by this AgentSession: nothing was changed; \
             remove or rename that object, or give the session another name"
        );
        let got = rounds(session, observed, 1, &cfg(), no_steps);
        check(
            name,
            got,
            &format!(
                r#"
                first: -
                writes: -
                requeue: 60s
                event: Warning NameConflict "{message}"
                status: Pending "{message}" gen Some(1)
                | pod - service - endpoint - editor - branch -
                | start +0 expires +86400 completed -
                | Ready False NameConflict "{message}" +1
                | Finished False Pending "" +1
                | Stalled True NameConflict "{message}" +1
                "#
            ),
        );
    }
    // Not the session's to write or delete, and no conflict where the session would not
    // write it: with isolation off, another NetworkPolicy of that name stays.
    let mut observed = with_children(Some(PodState::Running));
    observed.children.network_policy = Some(Presence {
        deleting: false,
        bound: false,
        control: planted.clone(),
    });
    let plan = decide(&not_isolated, &observed, at(1), &cfg());
    assert!(plan.children.delete_network_policy.is_none());
    assert!(plan.children.network_policy.is_none());
    // An expired session does not delete a pod it does not control.
    let mut observed = with_children(None);
    observed.children.pod = Some(PodSummary {
        control: planted,
        ..pod(PodState::Running)
    });
    let plan = decide(&s, &observed, at(DAY + 1), &cfg());
    assert_eq!(plan.delete_pod, None);
    assert_eq!(plan.status.phase, Some(AgentSessionPhase::Expired));
}

#[test]
fn an_editor_gets_its_login_secret_before_each_pod() {
    let editor = session(
        json!({"prompt": "hi", "editor": {"enabled": true}}),
        Value::Null,
    );
    let plan = decide(&editor, &Observed::default(), at(1), &cfg());
    assert!(plan.children.editor_secret && plan.children.pod.is_some());
    // Without an editor, or with the pod in place: nothing to make sure of.
    let plain = session(json!({"prompt": "hi"}), Value::Null);
    assert!(
        !decide(&plain, &Observed::default(), at(1), &cfg())
            .children
            .editor_secret
    );
    let running = decide(
        &editor,
        &with_children(Some(PodState::Running)),
        at(1),
        &cfg(),
    );
    assert!(!running.children.editor_secret && running.children.pod.is_none());
}
