//! The agent conversation (DESIGN §3.1 step 7) against the real control plane and a real HTTP
//! agent API at each session pod's IP: KWOK assigns pod IPs on loopback, and the test env's
//! [`AgentHost`] serves an agentapi stand-in (agentapi's OpenAPI description) at each one. The
//! operator runs as its own process, so tests can SIGKILL it.
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "github_task/harness.rs"]
mod harness;

use ccplant_api::{AgentSession, AgentSessionPhase, AgentState};
use ccplant_testenv::fake_agent::{AgentHost, FakeAgent, InFlight, Mode, Script};
use ccplant_testenv::{TestEnv, TestNamespace, wait_for, wait_for_deletion};
use harness::*;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Patch, PatchParams, WatchEvent, WatchParams};
use serde_json::{Value, json};
use std::time::{Duration, Instant, SystemTime};

const T: Duration = Duration::from_secs(60);
const IMAGE: &str = "ghcr.io/ccplant/agent:1";

fn env() -> &'static TestEnv {
    TestEnv::global_with_loopback_pods()
}

async fn wait_session(
    ns: &TestNamespace,
    name: &str,
    what: &str,
    timeout: Duration,
    f: impl Fn(&AgentSession) -> bool,
) -> AgentSession {
    wait_for(&ns.api::<AgentSession>(), name, timeout, what, f).await
}

fn phase_is(phase: AgentSessionPhase) -> impl Fn(&AgentSession) -> bool {
    move |s: &AgentSession| s.phase() == Some(phase)
}

fn agent_status(s: &AgentSession) -> ccplant_api::AgentStatus {
    s.status
        .as_ref()
        .and_then(|st| st.agent.clone())
        .unwrap_or_default()
}

fn condition(s: &AgentSession, type_: &str) -> Option<(String, String, String)> {
    s.status.as_ref().and_then(|st| {
        st.conditions
            .iter()
            .find(|c| c.type_ == type_)
            .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
    })
}

/// Appends `message` to `spec.messages`: a merge patch carrying the resourceVersion it read
/// (optimistic concurrency), retried on conflict.
async fn append(ns: &TestNamespace, name: &str, message: &str) {
    let api = ns.api::<AgentSession>();
    loop {
        let s = api.get(name).await.unwrap();
        let mut messages = s.spec.messages.clone();
        messages.push(message.to_string());
        let patch = json!({
            "metadata": {"resourceVersion": s.metadata.resource_version},
            "spec": {"messages": messages},
        });
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return,
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => panic!("appending to {name}: {e}"),
        }
    }
}

/// The operator (its own process) for the namespace, on the loopback-pod control plane.
fn start_operator(ns: &TestNamespace, github_url: &str) -> Operator {
    let mut op = Operator::new(
        &ns.name,
        github_url,
        &["--operator-namespace", "ccplant-system"],
    )
    .with_kubeconfig(env().kubeconfig.clone());
    op.start();
    op
}

async fn host(ns: &TestNamespace, default: Script) -> AgentHost {
    AgentHost::start(ns.client.clone(), &ns.name, default)
        .await
        .unwrap()
}

/// Waits until `agent` has received `n` messages.
async fn wait_received(agent: &FakeAgent, n: usize, timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let got: Vec<String> = agent.received().into_iter().map(|r| r.content).collect();
        if got.len() >= n {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "the agent received {} of {n} messages within {timeout:?}: {got:?}",
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the agent reports `stable` (polls the in-process fake every 5 ms).
async fn wait_stable(agent: &FakeAgent, timeout: Duration) -> Instant {
    let deadline = Instant::now() + timeout;
    loop {
        if agent.status() == "stable" {
            return Instant::now();
        }
        assert!(Instant::now() < deadline, "the agent never went idle");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::test]
async fn the_prompt_and_messages_arrive_in_order_exactly_once_each_after_the_agent_went_idle() {
    install_crds_into(env());
    env()
        .with_namespace("conv-order", |ns| async move {
            let work = Duration::from_millis(300);
            let agents = host(&ns, Script { work, ..Script::default() }).await;
            let fake = fake_with_repo().await;
            let _op = start_operator(&ns, &fake.url());
            create_session(
                &ns,
                &session(
                    "c",
                    json!({"agent": {"image": IMAGE}, "prompt": "fix the bug", "messages": ["add a test", "open a PR"]}),
                ),
            )
            .await;
            let agent = agents.wait_agent("c", T).await.unwrap();
            let got = wait_received(&agent, 3, T).await;
            assert_eq!(got, ["fix the bug", "add a test", "open a PR"]);
            // Each one only after the agent finished the previous one (it works 300 ms; the
            // fake refuses a user message while it works).
            let at: Vec<SystemTime> = agent.received().iter().map(|r| r.at).collect();
            for pair in at.windows(2) {
                let gap = pair[1].duration_since(pair[0]).unwrap();
                assert!(gap >= work, "a message came {gap:?} after the previous one");
            }
            let s = wait_session(&ns, "c", "3 delivered, agent idle", T, |s| {
                let a = agent_status(s);
                a.delivered_messages == 3 && a.state == Some(AgentState::Idle)
            })
            .await;
            assert_eq!(condition(&s, "AgentReachable").unwrap().0, "True");
            assert!(agent_status(&s).last_agent_message.is_some());

            // Delivery latency: a message appended while the agent is idle, until the agent has it.
            let mut latencies = Vec::new();
            for i in 0..20 {
                wait_stable(&agent, T).await;
                let before = agent.received().len();
                let text = format!("step {i}");
                let appended = SystemTime::now();
                append(&ns, "c", &text).await;
                let got = wait_received(&agent, before + 1, T).await;
                assert_eq!(got[before], text);
                let at = agent.received()[before].at;
                latencies.push(millis(at.duration_since(appended).unwrap_or_default()));
            }
            latencies.sort_by(f64::total_cmp);
            println!(
                "delivery latency (appended -> agent received), 20 messages: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                percentile(&latencies, 0.5),
                percentile(&latencies, 0.99),
                latencies[latencies.len() - 1]
            );
            assert!(percentile(&latencies, 0.5) < 1000.0, "{latencies:?}");

            // 20 appended at once arrive in order, once each.
            wait_stable(&agent, T).await;
            let burst: Vec<String> = (0..20).map(|i| format!("burst {i}")).collect();
            for m in &burst {
                append(&ns, "c", m).await;
            }
            let got = wait_received(&agent, 43, Duration::from_secs(90)).await;
            let mut expected = vec!["fix the bug".to_string(), "add a test".into(), "open a PR".into()];
            expected.extend((0..20).map(|i| format!("step {i}")));
            expected.extend(burst);
            assert_eq!(got, expected);
            wait_session(&ns, "c", "43 delivered", T, |s| agent_status(s).delivered_messages == 43).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            assert_eq!(agent.received().len(), 43, "nothing more was sent");
            agents.stop().await;
        })
        .await;
}

#[tokio::test]
async fn an_operator_killed_during_deliveries_neither_repeats_nor_skips_a_message() {
    install_crds_into(env());
    env()
        .with_namespace("conv-kill", |ns| async move {
            let agents = host(
                &ns,
                Script {
                    work: Duration::from_millis(150),
                    post_delay: Duration::from_millis(40),
                    ..Script::default()
                },
            )
            .await;
            let fake = fake_with_repo().await;
            let mut op = start_operator(&ns, &fake.url());
            create_session(
                &ns,
                &session("k", json!({"agent": {"image": IMAGE}, "prompt": "p"})),
            )
            .await;
            let agent = agents.wait_agent("k", T).await.unwrap();
            wait_received(&agent, 1, T).await;
            let mut expected = vec!["p".to_string()];
            let trials = 24;
            let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
            let mut next = move || {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed
            };
            for trial in 0..trials {
                for j in 0..3 {
                    let m = format!("t{trial}-{j}");
                    append(&ns, "k", &m).await;
                    expected.push(m);
                }
                // Kill at a random point of the deliveries: 0 to 600 ms in.
                tokio::time::sleep(Duration::from_millis(next() % 600)).await;
                op.kill().await;
                op.start();
            }
            let got = wait_received(&agent, expected.len(), Duration::from_secs(120)).await;
            assert_eq!(
                got, expected,
                "every message once, in order, across {trials} kills"
            );
            wait_session(&ns, "k", "all delivered", T, |s| {
                agent_status(s).delivered_messages as usize == expected.len()
            })
            .await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            assert_eq!(agent.received().len(), expected.len(), "no late duplicate");
            assert_eq!(
                agents.history("k").len(),
                1,
                "one pod, one agent throughout"
            );
            println!(
                "kill trials: {trials}, operator starts {}, messages {}",
                op.starts,
                expected.len()
            );
            agents.stop().await;
        })
        .await;
}

#[tokio::test]
async fn when_idle_succeeds_idle_for_after_the_last_reply_stops_the_pod_and_revokes_the_token() {
    install_crds_into(env());
    env()
        .with_namespace("conv-idle", |ns| async move {
            let agents = host(
                &ns,
                Script {
                    work: Duration::from_millis(500),
                    ..Script::default()
                },
            )
            .await;
            let fake = fake_with_repo().await;
            app_secret(&ns, &fake).await;
            let _op = start_operator(&ns, &fake.url());
            create_session(
                &ns,
                &session(
                    "w",
                    json!({
                        "agent": {"image": IMAGE}, "repository": {"name": "octo/hello"},
                        "github": {"secretRef": {"name": "app"}},
                        "prompt": "do the thing", "messages": ["and then this"],
                        "completion": {"mode": "WhenIdle", "idleFor": "3s"},
                    }),
                ),
            )
            .await;
            let agent = agents.wait_agent("w", T).await.unwrap();
            wait_received(&agent, 2, T).await;
            let token = String::from_utf8(
                ns.api::<Secret>()
                    .get("w-github")
                    .await
                    .unwrap()
                    .data
                    .unwrap()
                    .remove("token")
                    .unwrap()
                    .0,
            )
            .unwrap();
            let idle = wait_stable(&agent, T).await;
            let done = wait_session(
                &ns,
                "w",
                "Succeeded",
                Duration::from_secs(30),
                phase_is(AgentSessionPhase::Succeeded),
            )
            .await;
            let after = idle.elapsed();
            println!(
                "WhenIdle: Succeeded {:.2} s after the agent went idle (idleFor 3 s)",
                after.as_secs_f64()
            );
            assert!(
                after >= Duration::from_millis(2900),
                "not before idleFor: {after:?}"
            );
            assert!(
                after <= Duration::from_secs(5),
                "within idleFor + 2 s: {after:?}"
            );
            let ready = condition(&done, "Ready").unwrap();
            assert_eq!(ready.1, "Completed", "{ready:?}");
            assert_eq!(agent_status(&done).delivered_messages, 2);
            assert_eq!(agent_status(&done).state, None, "no agent runs any more");
            wait_for_deletion(&ns.api::<Pod>(), "w", T, "the pod stopped").await;
            let record = fake
                .installation_tokens()
                .into_iter()
                .find(|t| t.token == token)
                .unwrap();
            assert!(record.revoked, "the session's token was revoked");
            assert_eq!(condition(&done, "CredentialsReady").unwrap().1, "Revoked");
            assert_eq!(agent.received().len(), 2);
            agents.stop().await;
        })
        .await;
}

#[tokio::test]
async fn idle_timeout_suspends_or_expires_on_time_and_a_new_message_resumes_a_suspended_session() {
    install_crds_into(env());
    env()
        .with_namespace("conv-timeout", |ns| async move {
            let class = manual_volume(&ns).await;
            let agents = host(&ns, Script { work: Duration::from_millis(200), ..Script::default() }).await;
            let fake = fake_with_repo().await;
            let _op = start_operator(&ns, &fake.url());
            create_session(
                &ns,
                &session("ws", json!({
                    "agent": {"image": IMAGE}, "prompt": "first",
                    "workspace": {"size": "1Gi", "storageClassName": class},
                    "lifetime": {"idleTimeout": "4s"},
                })),
            )
            .await;
            create_session(
                &ns,
                &session("bare", json!({"agent": {"image": IMAGE}, "prompt": "first", "lifetime": {"idleTimeout": "4s"}})),
            )
            .await;
            let check = |name: &'static str, phase: AgentSessionPhase| {
                let (ns, agents) = (&ns, &agents);
                async move {
                    let agent = agents.wait_agent(name, T).await.unwrap();
                    wait_received(&agent, 1, T).await;
                    let idle = wait_stable(&agent, T).await;
                    let s = wait_session(ns, name, &format!("{phase}"), Duration::from_secs(30), phase_is(phase)).await;
                    let after = idle.elapsed();
                    println!("idleTimeout 4 s: {name} {phase} {:.2} s after the agent went idle", after.as_secs_f64());
                    assert!(after >= Duration::from_millis(3900), "{name}: not before the deadline: {after:?}");
                    assert!(after <= Duration::from_secs(5), "{name}: within 1 s of the deadline: {after:?}");
                    assert_eq!(condition(&s, "Ready").unwrap().1, "IdleTimeout");
                    wait_for_deletion(&ns.api::<Pod>(), name, T, "the pod stopped").await;
                }
            };
            futures::join!(
                check("ws", AgentSessionPhase::Suspended),
                check("bare", AgentSessionPhase::Expired)
            );
            // Stays suspended: nothing asked for it back.
            tokio::time::sleep(Duration::from_secs(2)).await;
            let s = ns.api::<AgentSession>().get("ws").await.unwrap();
            assert_eq!(s.phase(), Some(AgentSessionPhase::Suspended));
            assert!(ns.api::<Pod>().get_opt("ws").await.unwrap().is_none());

            // A message resumes it: a new pod, whose fresh agent receives only the new message.
            append(&ns, "ws", "second").await;
            wait_session(&ns, "ws", "Running again", T, phase_is(AgentSessionPhase::Running)).await;
            let history = {
                let deadline = Instant::now() + T;
                loop {
                    let h = agents.history("ws");
                    if h.len() >= 2 {
                        break h;
                    }
                    assert!(Instant::now() < deadline, "no second agent for ws");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            };
            let second = &history[1];
            assert_eq!(wait_received(second, 1, T).await, ["second"]);
            wait_session(&ns, "ws", "2 delivered", T, |s| agent_status(s).delivered_messages == 2).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            assert_eq!(second.received().len(), 1, "the prompt was not sent again");
            assert_eq!(history[0].received().len(), 1);
            agents.stop().await;
        })
        .await;
}

#[tokio::test]
async fn an_unreachable_agent_is_reported_and_retried_once_per_backoff_step() {
    install_crds_into(env());
    env()
        .with_namespace("conv-unreach", |ns| async move {
            let agents = host(&ns, Script::default()).await;
            agents.set_script("drop", Script { mode: Mode::Drop, ..Script::default() });
            agents.set_script("err", Script { mode: Mode::Refuse(503), ..Script::default() });
            agents.set_script("hang", Script { mode: Mode::Hang, ..Script::default() });
            let fake = fake_with_repo().await;
            let _op = start_operator(&ns, &fake.url());
            for name in ["drop", "err", "hang"] {
                create_session(&ns, &session(name, json!({"agent": {"image": IMAGE}, "prompt": "hello"}))).await;
            }
            let drop_agent = agents.wait_agent("drop", T).await.unwrap();
            let err_agent = agents.wait_agent("err", T).await.unwrap();
            let s = wait_session(&ns, "drop", "AgentReachable False", T, |s| {
                condition(s, "AgentReachable").is_some_and(|c| c.0 == "False")
            })
            .await;
            let (_, reason, message) = condition(&s, "AgentReachable").unwrap();
            assert_eq!(reason, "ConnectionFailed", "{message}");
            assert!(message.contains(&drop_agent.addr().to_string()), "{message}");
            // (An attempt before the fake agent listens is a ConnectionFailed first.)
            let s = wait_session(&ns, "err", "AgentReachable False, HTTPError", T, |s| {
                condition(s, "AgentReachable").is_some_and(|c| c.0 == "False" && c.1 == "HTTPError")
            })
            .await;
            let (_, reason, message) = condition(&s, "AgentReachable").unwrap();
            assert_eq!(reason, "HTTPError");
            assert!(message.contains("503"), "{message}");
            assert_eq!(agent_status(&s).state, Some(AgentState::Starting), "never reached");

            // Backoff 1 s doubling: attempts at 0, 1, 3, 7, 15 s after the first one. Count
            // over 16 s from the first attempt.
            tokio::time::sleep(Duration::from_secs(16)).await;
            let drops = drop_agent.requests().connections;
            let errs = err_agent.requests().events;
            println!("unreachable agent: {drops} connections (dropped), {errs} /events requests (503) in ~16 s");
            for (what, n) in [("dropped connections", drops), ("503 answers", errs)] {
                // Up to 5 steps in 16 s; one more if the window caught the 31 s step's start
                // early is impossible, so at most 5; at least 4 shows it does retry.
                assert!((4..=5).contains(&n), "{what}: {n} attempts in 16 s");
            }
            // An agent that takes the request and never answers: the 10 s request deadline.
            let hang_agent = agents.wait_agent("hang", T).await.unwrap();
            let s = wait_session(&ns, "hang", "AgentReachable False, Timeout", T, |s| {
                condition(s, "AgentReachable").is_some_and(|c| c.0 == "False" && c.1 == "Timeout")
            })
            .await;
            let (_, reason, message) = condition(&s, "AgentReachable").unwrap();
            assert_eq!(reason, "Timeout");
            assert_eq!(
                message,
                format!("the agent API at {} did not answer within 10 s", hang_agent.addr())
            );
            assert!(hang_agent.requests().events >= 1);
            // Nothing delivered, no agent state invented.
            assert!(drop_agent.received().is_empty() && err_agent.received().is_empty());
            // Reachable again: reported, and the prompt goes out.
            agents.set_script("err", Script::default());
            let got = wait_received(&err_agent, 1, Duration::from_secs(40)).await;
            assert_eq!(got, ["hello"]);
            let s = wait_session(&ns, "err", "AgentReachable True, 1 delivered", T, |s| {
                condition(s, "AgentReachable").is_some_and(|c| c.0 == "True")
                    && agent_status(s).delivered_messages == 1
            })
            .await;
            assert_eq!(condition(&s, "AgentReachable").unwrap().1, "Reachable");
            agents.stop().await;
        })
        .await;
}

#[tokio::test]
async fn a_chatty_agent_costs_at_most_one_status_write_per_coalescing_window() {
    install_crds_into(env());
    env()
        .with_namespace("conv-chatty", |ns| async move {
            let agents = host(&ns, Script::default()).await;
            agents.set_script(
                "chatty",
                Script { work: Script::FOREVER, chatter_per_sec: 100, ..Script::default() },
            );
            let fake = fake_with_repo().await;
            let _op = start_operator(&ns, &fake.url());
            create_session(&ns, &session("chatty", json!({"agent": {"image": IMAGE}, "prompt": "talk"}))).await;
            let agent = agents.wait_agent("chatty", T).await.unwrap();
            wait_received(&agent, 1, T).await;
            let s = wait_session(&ns, "chatty", "Working", T, |s| agent_status(s).state == Some(AgentState::Working)).await;
            // Count status writes (resourceVersion changes) over 60 s while it chatters.
            let api = ns.api::<AgentSession>();
            let rv = s.metadata.resource_version.clone().unwrap();
            let events_before = agent.events_sent();
            let window = Duration::from_secs(60);
            let mut stream = api
                .watch(&WatchParams::default().fields("metadata.name=chatty").timeout(70), &rv)
                .await
                .unwrap()
                .boxed();
            let mut writes = 0;
            let deadline = tokio::time::Instant::now() + window;
            use futures::StreamExt;
            while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, stream.next()).await {
                if let WatchEvent::Modified(_) = ev.unwrap() {
                    writes += 1;
                }
            }
            let events = agent.events_sent() - events_before;
            let per_sec = events as f64 / window.as_secs_f64();
            println!("chatty agent: {events} events in 60 s ({per_sec:.0}/s), {writes} status writes (coalescing window 30 s for activity, 1 s for state changes)");
            assert!(per_sec >= 80.0, "the agent chattered {per_sec:.0} events/s");
            assert!(writes >= 1, "lastActivityTime and lastAgentMessage still move");
            assert!(writes <= 2, "{writes} status writes in 60 s with a 30 s window");
            agents.stop().await;
        })
        .await;
}

/// The real agentapi (github.com/coder/agentapi, built from its Go module by the test env) in
/// front of a scripted agent program, configured only by the environment the operator gave
/// the session's pod (AGENTAPI_PORT, AGENTAPI_ALLOWED_HOSTS). agentapi listens on every
/// address, so the operator reaches it at the pod's loopback IP; the session's agent port is a
/// free one, so it collides with no other test's agent.
#[tokio::test]
async fn the_real_agentapi_gets_the_prompt_and_each_message_once_and_the_session_completes() {
    install_crds_into(env());
    env()
        .with_namespace("conv-real", |ns| async move {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let fake = fake_with_repo().await;
            let _op = start_operator(&ns, &fake.url());
            create_session(
                &ns,
                &session(
                    "real",
                    json!({
                        "agent": {"image": IMAGE, "type": "custom", "port": port},
                        "prompt": "fix the bug", "messages": ["add a test"],
                        "completion": {"mode": "WhenIdle", "idleFor": "2s"},
                    }),
                ),
            )
            .await;
            let pod = wait_for(&ns.api::<Pod>(), "real", T, "the session pod", |_: &Pod| {
                true
            })
            .await;
            let agent_env: Vec<(String, String)> = pod
                .spec
                .unwrap()
                .containers
                .into_iter()
                .find(|c| c.name == "agent")
                .unwrap()
                .env
                .unwrap_or_default()
                .into_iter()
                .filter(|e| e.name.starts_with("AGENTAPI_"))
                .map(|e| (e.name, e.value.unwrap_or_default()))
                .collect();
            assert_eq!(agent_env.len(), 2, "{agent_env:?}");
            let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../testenv/scripts/scripted-agent.sh");
            let log = std::env::temp_dir().join(format!("agentapi-{}.log", ns.name));
            let log_file = std::fs::File::create(&log).unwrap();
            let mut server = tokio::process::Command::new(&env().bins.agentapi)
                .args(["server", "--type", "custom", "--"])
                .arg(&script)
                .envs(agent_env)
                .env("AGENT_WORK_SECONDS", "1")
                .stdout(log_file.try_clone().unwrap())
                .stderr(log_file)
                .kill_on_drop(true)
                .spawn()
                .expect("start agentapi");

            let done = wait_session(
                &ns,
                "real",
                "Succeeded",
                Duration::from_secs(90),
                phase_is(AgentSessionPhase::Succeeded),
            )
            .await;
            let a = agent_status(&done);
            assert_eq!(a.delivered_messages, 2);
            assert!(
                a.last_agent_message
                    .as_deref()
                    .is_some_and(|m| m.contains("done: add a test")),
                "{:?}",
                a.last_agent_message
            );
            assert_eq!(condition(&done, "Ready").unwrap().1, "Completed");

            // What agentapi recorded: each message once, in order.
            let body = reqwest_like_get(&format!("127.0.0.1:{port}"), "/messages").await;
            let messages: Value = serde_json::from_str(&body).unwrap();
            let users: Vec<&str> = messages["messages"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|m| m["role"] == "user")
                .map(|m| m["content"].as_str().unwrap())
                .collect();
            assert_eq!(
                users,
                ["fix the bug", "add a test"],
                "{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            let _ = server.kill().await;
        })
        .await;
}

/// A plain HTTP/1.1 GET over TCP (the tests need no HTTP client for one request).
async fn reqwest_like_get(addr: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        // One or more chunks: size line, data, CRLF.
        let mut rest = body;
        let mut data = String::new();
        while let Some((size, tail)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            data.push_str(&tail[..n]);
            rest = &tail[n + 2..];
        }
        return data;
    }
    body.to_string()
}

#[tokio::test]
async fn agent_concurrency_bounds_the_agent_calls_of_every_namespace_scope_together() {
    install_crds_into(env());
    env()
        .with_namespace("conv-scope-a", |a| async move {
            env()
                .with_namespace("conv-scope-b", |b| async move {
                    // Slow agents (every answer takes 400 ms) sharing one in-flight gauge, six
                    // sessions in each of the two namespaces the operator watches.
                    let in_flight = InFlight::default();
                    let script = Script {
                        answer_delay: Duration::from_millis(400),
                        in_flight: in_flight.clone(),
                        ..Script::default()
                    };
                    let hosts = [host(&a, script.clone()).await, host(&b, script).await];
                    let fake = fake_with_repo().await;
                    let mut op = Operator::new(
                        &format!("{},{}", a.name, b.name),
                        &fake.url(),
                        &["--operator-namespace", "ccplant-system", "--agent-concurrency", "4"],
                    )
                    .with_kubeconfig(env().kubeconfig.clone());
                    op.start();
                    let names: Vec<String> = (0..6).map(|i| format!("c{i}")).collect();
                    for ns in [&a, &b] {
                        for name in &names {
                            let spec = json!({"agent": {"image": IMAGE}, "prompt": "hi"});
                            create_session(ns, &session(name, spec)).await;
                        }
                    }
                    for agents in &hosts {
                        for name in &names {
                            let agent = agents.wait_agent(name, T).await.unwrap();
                            wait_received(&agent, 1, T).await;
                        }
                    }
                    println!(
                        "agent API requests: {} in all, at most {} in flight at once (--agent-concurrency 4, 2 scopes, 12 sessions)",
                        in_flight.total(),
                        in_flight.max()
                    );
                    assert!(in_flight.total() >= 48, "each session connects, reads, checks and sends");
                    assert_eq!(in_flight.max(), 4, "the limit holds over both scopes, and is reached");
                    for agents in hosts {
                        agents.stop().await;
                    }
                })
                .await;
        })
        .await;
}

/// Token-shaped strings (DESIGN §7.3): an agent answer quoting a token, and an agent error
/// body quoting one. 36 characters after the prefix, like GitHub's.
const AGENT_TOKEN: &str = "ghp_a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8";
/// Placed across the 500-character cut of `lastAgentMessage`.
const CUT_TOKEN: &str = "gho_Zq9Wx8Ve7Ut6Sr5Qp4On3Ml2Kj1Ih0Gf9Ed8";
const ERROR_TOKEN: &str = "ghs_Mm3Nn4Oo5Pp6Qq7Rr8Ss9Tt0Uu1Vv2Ww3Xx4";

/// The pieces of the tokens that must never be stored or logged: each body, and what a cut at
/// 500 characters before redaction would have left of [`CUT_TOKEN`] (its prefix and 6 more).
fn token_leaks(text: &str) -> Vec<&'static str> {
    [
        &AGENT_TOKEN[4..],
        &CUT_TOKEN[4..],
        &CUT_TOKEN[4..10],
        &ERROR_TOKEN[4..],
    ]
    .into_iter()
    .filter(|piece| text.contains(piece))
    .collect()
}

/// Every Event of the namespace, both APIs, as JSON.
async fn events_json(ns: &TestNamespace) -> (usize, String) {
    let lp = kube::api::ListParams::default();
    let core = ns
        .api::<k8s_openapi::api::core::v1::Event>()
        .list(&lp)
        .await
        .unwrap()
        .items;
    let new = ns
        .api::<k8s_openapi::api::events::v1::Event>()
        .list(&lp)
        .await
        .unwrap()
        .items;
    let json = format!(
        "{}\n{}",
        serde_json::to_string(&core).unwrap(),
        serde_json::to_string(&new).unwrap()
    );
    (core.len() + new.len(), json)
}

#[tokio::test]
async fn token_shaped_strings_from_the_agent_never_reach_status_events_or_logs() {
    install_crds_into(env());
    env()
        .with_namespace("conv-redact", |ns| async move {
            for t in [AGENT_TOKEN, CUT_TOKEN, ERROR_TOKEN] {
                assert_eq!(t.len(), 40, "{t}");
            }
            // The agent's last message (no prompt: its greeting stays the last one): a token
            // early, and one starting at character 490, across the 500-character cut.
            let head = format!("here: {AGENT_TOKEN} ");
            let greeting = format!(
                "{head}{}{CUT_TOKEN} and the rest",
                "x".repeat(490 - head.len())
            );
            assert_eq!(greeting.find(CUT_TOKEN), Some(490));
            let script = Script {
                greeting,
                boot: Duration::ZERO,
                chatter_per_sec: 0,
                refusal: format!("bad credentials: {ERROR_TOKEN}"),
                ..Script::default()
            };
            let agents = host(&ns, script.clone()).await;
            let fake = fake_with_repo().await;
            let op = start_operator(&ns, &fake.url());
            create_session(&ns, &session("r", json!({"agent": {"image": IMAGE}}))).await;
            let agent = agents.wait_agent("r", T).await.unwrap();
            let s = wait_session(&ns, "r", "the agent's message in status", T, |s| {
                let a = agent_status(s);
                a.state == Some(AgentState::Idle) && a.last_agent_message.is_some()
            })
            .await;
            let message = agent_status(&s).last_agent_message.unwrap();
            assert_eq!(
                message,
                format!(
                    "here: ghp_[REDACTED] {}gho_[REDACTED] and the rest",
                    "x".repeat(490 - head.len())
                ),
                "redacted, then cut (the redacted text is shorter than 500 characters)"
            );

            // The agent now refuses every request, quoting a token: the error lands in the
            // AgentReachable condition and in the operator's log.
            agent.set_script(Script {
                mode: Mode::Refuse(503),
                ..script
            });
            let s = wait_session(&ns, "r", "AgentReachable False quoting the agent", T, |s| {
                condition(s, "AgentReachable").is_some_and(|(status, _, message)| {
                    status == "False" && message.contains("ghs_[REDACTED]")
                })
            })
            .await;
            let (_, reason, message) = condition(&s, "AgentReachable").unwrap();
            assert_eq!(reason, "HTTPError", "{message}");
            assert!(
                message.ends_with("HTTP 503: bad credentials: ghs_[REDACTED]"),
                "{message}"
            );

            let status = serde_json::to_string(&s.status).unwrap();
            assert!(status.contains("ghp_[REDACTED]"), "{status}");
            assert_eq!(
                token_leaks(&status),
                Vec::<&str>::new(),
                "AgentSession status: {status}"
            );

            // The log line that quotes the agent's error (so the text did reach the log), then
            // the whole log.
            let deadline = Instant::now() + T;
            let (log, line) = loop {
                let log = strip_ansi(&op.log_text());
                let line = log
                    .lines()
                    .find(|l| l.contains("agent not reachable") && l.contains("bad credentials: "))
                    .map(str::to_owned);
                if let Some(line) = line {
                    break (log, line);
                }
                assert!(
                    Instant::now() < deadline,
                    "no \"agent not reachable\" line quoting the agent:\n{log}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            assert!(line.contains("bad credentials: ghs_[REDACTED]"), "{line}");
            assert_eq!(
                token_leaks(&log),
                Vec::<&str>::new(),
                "operator log:\n{log}"
            );

            // Events: the operator published some for the session (its phases); none carries a
            // token. (Their notes hold no agent text in this scenario: the redaction of notes
            // themselves is unit-tested in events.rs.)
            let (count, events) = events_json(&ns).await;
            assert!(
                events.contains("\"r\""),
                "no Event about the session: {events}"
            );
            assert!(count > 0);
            assert_eq!(token_leaks(&events), Vec::<&str>::new(), "Events: {events}");
            agents.stop().await;
        })
        .await;
}
