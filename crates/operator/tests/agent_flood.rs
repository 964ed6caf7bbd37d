//! Bounded agents (DESIGN §7.3, issue 15 item 5): 64 session agents flood the operator — a
//! `/messages` of 100 000 entries and about 50 MB, an event-stream line that never ends, a body
//! dripped one byte every 300 ms — while 50 other sessions are created, reconciled and given
//! their prompt. The others' reconciles stay fast (p99 < 1 s), the operator keeps its Lease
//! (renewed every 2 s, never lost), its peak RSS stays below the chart's memory limit, and every
//! flooding session keeps running and says why its agent is not heard.
//!
//! The operator runs as its own process (the figures are its own), leader-elected on a Lease in
//! the test namespace, against the real control plane; KWOK assigns loopback pod IPs and the
//! test env's fake agents serve agentapi at each. Its own test binary: no other test's load.
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "github_task/harness.rs"]
mod harness;

use ccplant_api::{AgentSession, AgentSessionPhase, AgentState};
use ccplant_testenv::fake_agent::{AgentHost, FakeAgent, Flood, Mode, Script};
use ccplant_testenv::{TestEnv, TestNamespace};
use futures::StreamExt;
use harness::*;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use kube::runtime::watcher;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const FLOODING: usize = 64;
const CALM: usize = 50;
const IMAGE: &str = "ghcr.io/ccplant/agent:1";
const LEASE: &str = "ccplant-operator";
/// The operator's renew deadline (DESIGN §3.3): a renewal gap longer than this loses the lease.
const RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// How long each phase of the test may take.
const PHASE: Duration = Duration::from_secs(90);
/// Sessions are created at 5 a second: a steady stream rather than one burst, whose queue at
/// this 2-core machine's apiserver would be measured instead of the operator.
const CREATE_EVERY: Duration = Duration::from_millis(200);

fn env() -> &'static TestEnv {
    TestEnv::global_with_loopback_pods()
}

/// The flood of agent `i`: each kind on a third of the agents.
fn flood_of(i: usize) -> Flood {
    match i % 3 {
        0 => Flood::HugeMessages {
            entries: 100_000,
            bytes: 500,
        },
        1 => Flood::EndlessLine,
        _ => Flood::SlowDrip {
            every: Duration::from_millis(300),
        },
    }
}

/// What `AgentReachable=False` says of a flooding agent at `addr`: (reason, message), one of.
/// An agent over a cap may meet the shared budget first: both are right.
fn expected_report(flood: Flood, addr: std::net::SocketAddr) -> Vec<(&'static str, String)> {
    let budget = |path: &str| {
        format!(
            "the operator's memory for agent answers (64 MiB, shared by all sessions) is in use; \
             {path} of the agent API at {addr} is read again at the next attempt"
        )
    };
    match flood {
        Flood::HugeMessages { .. } => vec![
            (
                "ResponseTooLarge",
                format!(
                    "the agent API at {addr} exceeded the operator's limit on /messages: a body over 8 MiB"
                ),
            ),
            ("BudgetExhausted", budget("/messages")),
        ],
        Flood::EndlessLine => vec![
            (
                "ResponseTooLarge",
                format!(
                    "the agent API at {addr} exceeded the operator's limit on /events: a line over 1 MiB"
                ),
            ),
            ("BudgetExhausted", budget("/events")),
        ],
        Flood::SlowDrip { .. } => vec![(
            "Timeout",
            format!("the agent API at {addr} did not finish its /messages answer within 10 s"),
        )],
    }
}

fn flooding(i: usize) -> String {
    format!("flood-{i}")
}

fn condition(s: &AgentSession, type_: &str) -> Option<(String, String, String)> {
    s.status.as_ref().and_then(|st| {
        st.conditions
            .iter()
            .find(|c| c.type_ == type_)
            .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
    })
}

fn agent_status(s: &AgentSession) -> ccplant_api::AgentStatus {
    s.status
        .as_ref()
        .and_then(|st| st.agent.clone())
        .unwrap_or_default()
}

/// The AgentSessions of the namespace as a watch shows them, until `done` holds for all of
/// them (`done` returns what is still missing, or `None`); panics after `timeout` with the last
/// word of `done`.
async fn wait_sessions(
    ns: &TestNamespace,
    what: &str,
    timeout: Duration,
    done: impl Fn(&BTreeMap<String, AgentSession>) -> Option<String>,
) -> BTreeMap<String, AgentSession> {
    let mut sessions = BTreeMap::new();
    let mut stream = watcher(ns.api::<AgentSession>(), watcher::Config::default()).boxed();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut missing = "no list yet".to_string();
    let mut listed = false;
    loop {
        let event = match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(event))) => event,
            Ok(Some(Err(e))) => panic!("watching sessions: {e}"),
            Ok(None) => panic!("the session watch ended"),
            Err(_) => panic!("{what}: not within {timeout:?}: {missing}"),
        };
        match event {
            watcher::Event::Init => sessions.clear(),
            watcher::Event::InitApply(s) | watcher::Event::Apply(s) => {
                sessions.insert(s.metadata.name.clone().unwrap_or_default(), s);
            }
            watcher::Event::Delete(s) => {
                sessions.remove(&s.metadata.name.clone().unwrap_or_default());
            }
            watcher::Event::InitDone => listed = true,
        }
        if listed {
            match done(&sessions) {
                None => return sessions,
                Some(m) => missing = m,
            }
        }
    }
}

/// Polls the in-process fakes every 50 ms until `done` is `None`; panics after `timeout` with
/// its last word.
async fn wait_agents(what: &str, timeout: Duration, done: impl Fn() -> Option<String>) {
    let deadline = Instant::now() + timeout;
    loop {
        let Some(missing) = done() else { return };
        assert!(
            Instant::now() < deadline,
            "{what}: not within {timeout:?}: {missing}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `GET path` of the operator's HTTP server: status code and body.
async fn get(base: &str, path: &str) -> (u16, String) {
    let addr = base.strip_prefix("http://").unwrap().to_string();
    let raw = tokio::time::timeout(Duration::from_secs(10), async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.unwrap();
        raw
    })
    .await
    .unwrap_or_else(|_| panic!("{path} within 10 s"));
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a response");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

async fn metrics(base: &str) -> String {
    get(base, "/metrics").await.1
}

/// The cumulative buckets (upper bound, count) of the AgentSession reconcile histogram.
fn reconcile_buckets(text: &str) -> Vec<(f64, f64)> {
    let mut buckets: Vec<(f64, f64)> = text
        .lines()
        .filter(|l| {
            l.starts_with("ccplant_reconcile_duration_seconds_bucket{")
                && l.contains("controller=\"agentsession\"")
        })
        .map(|l| {
            let le = l.split("le=\"").nth(1).unwrap().split('"').next().unwrap();
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap()
            };
            let count: f64 = l.rsplit(' ').next().unwrap().parse().unwrap();
            (le, count)
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(
        buckets.last().is_some_and(|b| b.0.is_infinite()),
        "no agentsession reconcile histogram in\n{text}"
    );
    buckets
}

/// The AgentSession reconciles between two scrapes of the operator's histogram.
struct Reconciles {
    before: Vec<(f64, f64)>,
    after: Vec<(f64, f64)>,
}

impl Reconciles {
    /// Reconciles per bucket (cumulative) in the window.
    fn delta(&self) -> Vec<(f64, f64)> {
        self.after
            .iter()
            .map(|(le, n)| {
                let was = self
                    .before
                    .iter()
                    .find(|(l, _)| l == le)
                    .map_or(0.0, |(_, n)| *n);
                (*le, n - was)
            })
            .collect()
    }

    /// The `q` quantile, interpolated within its bucket as Prometheus' `histogram_quantile`
    /// does; and the number of reconciles.
    fn quantile(&self, q: f64) -> (f64, f64) {
        let delta = self.delta();
        let total = delta.last().unwrap().1;
        let rank = q * total;
        let mut lower = (0.0, 0.0);
        for (le, n) in &delta {
            if *n >= rank {
                if le.is_infinite() {
                    return (lower.0, total);
                }
                let within = (rank - lower.1) / (n - lower.1).max(f64::MIN_POSITIVE);
                return (lower.0 + (le - lower.0) * within, total);
            }
            lower = (*le, *n);
        }
        (f64::INFINITY, total)
    }

    /// Reconciles that took longer than `secs` (a bucket bound).
    fn over(&self, secs: f64) -> f64 {
        let delta = self.delta();
        let within = delta.iter().find(|(le, _)| *le == secs).unwrap().1;
        delta.last().unwrap().1 - within
    }
}

/// One phase of sessions created and settled.
struct Settled {
    reconciles: Reconciles,
    took: Duration,
    /// CPU seconds the operator used meanwhile.
    operator_cpu: f64,
}

/// Creates `count` sessions `<prefix>-<i>`, one every [`CREATE_EVERY`], and waits until each
/// is Running, its agent got the prompt (once) and is Idle.
async fn settle(
    ns: &TestNamespace,
    agents: &AgentHost,
    base: &str,
    pid: i32,
    prefix: &str,
    count: usize,
) -> Settled {
    let name = |i: usize| format!("{prefix}-{i}");
    let before = reconcile_buckets(&metrics(base).await);
    let cpu = cpu_secs(pid);
    let started = Instant::now();
    let mut pace = tokio::time::interval(CREATE_EVERY);
    for i in 0..count {
        pace.tick().await;
        create_session(
            ns,
            &session(
                &name(i),
                json!({"agent": {"image": IMAGE}, "prompt": "hello"}),
            ),
        )
        .await;
    }
    let what = format!("the {count} {prefix} sessions Running, prompt delivered, agent Idle");
    let settled = wait_sessions(ns, &what, PHASE, |all| {
        let waiting: Vec<String> = (0..count)
            .map(name)
            .filter(|n| {
                !all.get(n).is_some_and(|s| {
                    let a = agent_status(s);
                    s.phase() == Some(AgentSessionPhase::Running)
                        && a.delivered_messages == 1
                        && a.state == Some(AgentState::Idle)
                })
            })
            .collect();
        (!waiting.is_empty()).then(|| format!("{} waiting: {waiting:?}", waiting.len()))
    })
    .await;
    let took = started.elapsed();
    let after = reconcile_buckets(&metrics(base).await);
    let operator_cpu = cpu_secs(pid) - cpu;
    for i in 0..count {
        let agent = agents.wait_agent(&name(i), PHASE).await.unwrap();
        let got: Vec<String> = agent.received().into_iter().map(|r| r.content).collect();
        assert_eq!(got, ["hello"], "{}: its prompt, once", name(i));
        assert_eq!(
            condition(&settled[&name(i)], "AgentReachable").unwrap().1,
            "Reachable",
            "{}",
            name(i)
        );
    }
    Settled {
        reconciles: Reconciles { before, after },
        took,
        operator_cpu,
    }
}

/// A Kubernetes memory quantity ("256Mi", "1Gi", "512M") in bytes.
fn quantity_bytes(q: &str) -> u64 {
    let (digits, unit) = q.split_at(q.find(|c: char| !c.is_ascii_digit()).unwrap_or(q.len()));
    let n: u64 = digits.parse().unwrap();
    let factor: u64 = match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        other => panic!("unknown quantity unit {other:?} in {q:?}"),
    };
    n * factor
}

/// `resources.limits.memory` of the chart's values.
fn chart_memory_limit() -> (String, u64) {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../charts/ccplant/values.yaml");
    let values: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let limit = values["resources"]["limits"]["memory"]
        .as_str()
        .unwrap_or_else(|| panic!("no resources.limits.memory in {}", path.display()))
        .to_string();
    let bytes = quantity_bytes(&limit);
    (limit, bytes)
}

/// A field of /proc/PID/status in bytes (`VmHWM`: peak resident set; `VmRSS`: now).
fn proc_status_bytes(pid: i32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// CPU seconds (user + system) process `pid` used so far.
fn cpu_secs(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// What every renewal of the Lease looked like: (holder, renewTime in µs since the epoch).
type Renewals = Arc<Mutex<Vec<(Option<String>, Option<i64>)>>>;

/// Records every version of the Lease until the task is aborted.
fn watch_lease(ns: &TestNamespace) -> (Renewals, tokio::task::JoinHandle<()>) {
    let seen: Renewals = Arc::default();
    let api: Api<Lease> = ns.api();
    let sink = seen.clone();
    let task = tokio::spawn(async move {
        let config = watcher::Config::default().fields(&format!("metadata.name={LEASE}"));
        let mut stream = watcher(api, config).boxed();
        while let Some(event) = stream.next().await {
            if let Ok(watcher::Event::Apply(l) | watcher::Event::InitApply(l)) = event {
                let spec = l.spec.unwrap_or_default();
                let renewed = spec.renew_time.map(|t| t.0.as_microsecond());
                sink.lock().unwrap().push((spec.holder_identity, renewed));
            }
        }
    });
    (seen, task)
}

#[tokio::test]
async fn flooding_agents_slow_no_other_session_nor_the_lease_and_are_reported() {
    install_crds_into(env());
    env()
        .with_namespace("flood", |ns| async move {
            let (limit_text, limit) = chart_memory_limit();
            let agents = AgentHost::start(ns.client.clone(), &ns.name, Script::default())
                .await
                .unwrap();
            for i in 0..FLOODING {
                agents.set_script(
                    &flooding(i),
                    Script {
                        mode: Mode::Flood(flood_of(i)),
                        ..Script::default()
                    },
                );
            }
            let (renewals, lease_watch) = watch_lease(&ns);
            let identity = format!("{}-op", ns.name);
            let mut op = Operator::named(
                &ns.name,
                "",
                // Bare sessions: no GitHub is called.
                "http://127.0.0.1:1",
                &[
                    "--operator-namespace",
                    "ccplant-system",
                    "--leader-elect=true",
                    "--lease-namespace",
                    &ns.name,
                    "--lease-name",
                    LEASE,
                    "--identity",
                    &identity,
                ],
            )
            .with_kubeconfig(env().kubeconfig.clone());
            op.start();
            let pid = op.pid().unwrap();
            let base = op.metrics_url().await;

            // Warm: ready (caches synced, leader), one session through.
            let deadline = Instant::now() + PHASE;
            while get(&base, "/readyz").await.0 != 200 || !metrics(&base).await.contains("\nccplant_leader 1\n") {
                assert!(Instant::now() < deadline, "not ready and leading within {PHASE:?}:\n{}", op.log_text());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            settle(&ns, &agents, &base, pid, "warm", 1).await;

            // The floor: 50 sessions created and settled without a flood, same operator.
            let baseline = settle(&ns, &agents, &base, pid, "base", CALM).await;

            // The flood: 64 sessions, each agent flooding as soon as its pod runs.
            let flood_started = Instant::now();
            for i in 0..FLOODING {
                create_session(&ns, &session(&flooding(i), json!({"agent": {"image": IMAGE}, "prompt": "hello"}))).await;
            }
            let mut flooders: Vec<FakeAgent> = Vec::new();
            for i in 0..FLOODING {
                flooders.push(agents.wait_agent(&flooding(i), PHASE).await.unwrap());
            }
            wait_agents("every flooding agent dialled by the operator", PHASE, || {
                let idle: Vec<String> = flooders
                    .iter()
                    .enumerate()
                    .filter(|(_, a)| a.requests().connections == 0)
                    .map(|(i, _)| flooding(i))
                    .collect();
                (!idle.is_empty()).then(|| format!("not dialled yet: {idle:?}"))
            })
            .await;
            let flooded_in = flood_started.elapsed();

            // While they flood: 50 sessions created and reconciled, each agent given its prompt.
            let flood_bytes = || flooders.iter().map(FakeAgent::flood_bytes).sum::<u64>();
            let flood_before = flood_bytes();
            let flooded = settle(&ns, &agents, &base, pid, "calm", CALM).await;
            let flood_during = flood_bytes() - flood_before;

            // The flooding sessions keep running and say why their agent is not heard (after a
            // first ConnectionFailed, perhaps: the operator may dial before the fake listens).
            let expected: Vec<Vec<(&str, String)>> =
                flooders.iter().enumerate().map(|(i, a)| expected_report(flood_of(i), a.addr())).collect();
            let reported = wait_sessions(&ns, "every flooding session reports its agent's flood", PHASE, |all| {
                let silent: Vec<String> = (0..FLOODING)
                    .filter(|i| {
                        !all.get(&flooding(*i)).is_some_and(|s| {
                            condition(s, "AgentReachable")
                                .is_some_and(|(_, r, m)| expected[*i].iter().any(|(er, em)| *er == r && *em == m))
                        })
                    })
                    .map(flooding)
                    .collect();
                let first = silent.first().and_then(|n| all.get(n)).and_then(|s| condition(s, "AgentReachable"));
                (!silent.is_empty())
                    .then(|| format!("{} not reported yet: {silent:?}; the first shows {first:?}", silent.len()))
            })
            .await;
            let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
            for (i, agent) in flooders.iter().enumerate() {
                let s = &reported[&flooding(i)];
                let (_, reason, _) = condition(s, "AgentReachable").unwrap();
                *reasons.entry(reason).or_default() += 1;
                assert_eq!(s.phase(), Some(AgentSessionPhase::Running), "{}: keeps running", flooding(i));
                assert_eq!(agent_status(s).state, Some(AgentState::Starting), "{}: never heard", flooding(i));
                assert!(agent.received().is_empty(), "{}: nothing sent to it", flooding(i));
            }
            let flood_bytes = flood_bytes();

            // The figures.
            let (p99, reconciles) = flooded.reconciles.quantile(0.99);
            let (p50, _) = flooded.reconciles.quantile(0.5);
            let (base_p99, base_reconciles) = baseline.reconciles.quantile(0.99);
            let (base_p50, _) = baseline.reconciles.quantile(0.5);
            let slow = flooded.reconciles.over(1.0);
            let peak = proc_status_bytes(pid, "VmHWM");
            let now_rss = proc_status_bytes(pid, "VmRSS");
            lease_watch.abort();
            let renewals = renewals.lock().unwrap().clone();
            let holders: Vec<&Option<String>> = renewals.iter().map(|(h, _)| h).filter(|h| h.is_some()).collect();
            let times: Vec<i64> = renewals
                .iter()
                .filter(|(h, _)| h.as_deref() == Some(identity.as_str()))
                .filter_map(|(_, t)| *t)
                .collect();
            let max_gap = times.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
            let max_gap = Duration::from_micros(u64::try_from(max_gap).unwrap());
            let leader = metrics(&base)
                .await
                .lines()
                .find_map(|l| l.strip_prefix("ccplant_leader ").map(str::to_string))
                .unwrap();
            println!(
                "flood: {FLOODING} flooding agents (huge /messages, endless SSE line, 300 ms slow drip; all dialled {:.1} s after their sessions were created; {:.0} MiB of flood written to the operator's connections in all), reasons {reasons:?}",
                flooded_in.as_secs_f64(),
                mib(flood_bytes),
            );
            println!(
                "flood: {CALM} sessions created (5/s) and settled (Running, prompt delivered, agent Idle) without a flood in {:.1} s, operator CPU {:.1} s: {base_reconciles} agentsession reconciles, p50 {:.1} ms, p99 {:.1} ms",
                baseline.took.as_secs_f64(),
                baseline.operator_cpu,
                base_p50 * 1000.0,
                base_p99 * 1000.0,
            );
            println!(
                "flood: {CALM} sessions created (5/s) and settled during the flood ({:.0} MiB of it meanwhile) in {:.1} s, operator CPU {:.1} s: {reconciles} agentsession reconciles (the flooding sessions' included), p50 {:.1} ms, p99 {:.1} ms ({:.1}x the floor), {slow} over 1 s",
                mib(flood_during),
                flooded.took.as_secs_f64(),
                flooded.operator_cpu,
                p50 * 1000.0,
                p99 * 1000.0,
                p99 / base_p99.max(f64::MIN_POSITIVE),
            );
            println!(
                "flood: operator process (pid {pid}, debug build) peak RSS {:.1} MiB (VmHWM), {:.1} MiB now, chart limit {limit_text} ({:.0} MiB)",
                mib(peak),
                mib(now_rss),
                mib(limit),
            );
            println!(
                "flood: lease {LEASE} held by {identity} throughout: {} renewals seen, longest gap {:.1} s (renew deadline {} s), ccplant_leader {leader}",
                times.len(),
                max_gap.as_secs_f64(),
                RENEW_DEADLINE.as_secs(),
            );

            assert!(reconciles >= CALM as f64 * 3.0, "each session reconciled (create, pod, agent): {reconciles}");
            assert!(
                p99 < 1.0,
                "reconcile p99 {p99:.3} s under the flood (without it, in this run: {base_p99:.3} s)"
            );
            assert!(peak < limit, "peak RSS {:.1} MiB over the chart's limit {limit_text}", mib(peak));
            assert!(flood_bytes >= 256 << 20, "the flood was real: {flood_bytes} bytes");
            assert!(flood_during >= 64 << 20, "it went on while the sessions were created: {flood_during} bytes");
            assert!(!op.exited(), "the operator still runs:\n{}", op.log_text());
            assert_eq!(leader, "1", "still the leader");
            assert!(
                holders.iter().all(|h| h.as_deref() == Some(identity.as_str())),
                "the lease never changed hands: {holders:?}"
            );
            let elapsed = flood_started.elapsed();
            assert!(
                times.len() as f64 >= elapsed.as_secs_f64() / 4.0,
                "renewed about every 2 s: {} renewals in {elapsed:?}",
                times.len()
            );
            assert!(max_gap < RENEW_DEADLINE, "a renewal gap of {max_gap:?}");
            let log = strip_ansi(&op.log_text());
            assert!(!log.contains("leader election failed"), "{log}");
            agents.stop().await;
        })
        .await;
}
