//! `ccplant-bench drills` (`make drills`): failure drills against the local control plane,
//! written to target/bench/drills.json beside the previous run's figures.
//!
//! - [`handover`]: two replicas with leader election; the leader is SIGTERMed or SIGKILLed and
//!   the seconds until the other's first write are read from the apiserver's audit log.
//! - [`restart`]: the kube-apiserver is stopped and started again in the middle of a burst of
//!   AgentSessions; every session must still end Running with exactly one pod.
//! - [`crash`]: the operator is SIGKILLed over and over (at random times, and right after
//!   GitHub applied a write, before the operator could record it) while it works on
//!   GitHubTasks of every action and AgentSessions; afterwards no GitHub effect may exist
//!   twice and every task and session must have converged.
//!
//! The run fails (non-zero exit) when a correctness check fails: a duplicate, anything that
//! did not converge, interleaved writes of two leaders. Timing targets are reported, not
//! enforced: absolute times on a shared 2-core machine are noisy.

mod crash;
mod effects;
mod handover;
mod restart;

use crate::env::{self, Cluster};
use crate::report::{self, target};
// Sessions with nothing but an image (a pod, a Service, a NetworkPolicy; no GitHub), shared with
// the sessions bench.
pub(crate) use crate::sessions::bare_session;
use crate::stats::{round1, round3};
use anyhow::{Context, Result, bail};
use ccplant_api::{AgentSession, AgentSessionPhase};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, clap::Args)]
pub struct DrillsArgs {
    /// Hand-over trials per kind (graceful SIGTERM, SIGKILL).
    #[arg(long, default_value_t = 10)]
    pub handover_trials: usize,
    /// AgentSessions in the burst during which the kube-apiserver restarts.
    #[arg(long, default_value_t = 300)]
    pub restart_sessions: usize,
    /// Seconds the kube-apiserver stays stopped (after it exited) before it starts again.
    #[arg(long, default_value_t = 5.0)]
    pub outage_seconds: f64,
    /// SIGKILLs of the operator in the crash drill (half at random times, half right after a
    /// GitHub write).
    #[arg(long, default_value_t = 100)]
    pub kills: usize,
    /// Seed of the random kill times (default: from the clock; the report names it).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Run only these drills (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Drill>,
    /// Where the JSON goes (the file found there becomes `previous`).
    #[arg(long, default_value = "target/bench/drills.json")]
    pub out: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Drill {
    Handover,
    Restart,
    Crash,
}

impl DrillsArgs {
    fn runs(&self, drill: Drill) -> bool {
        self.only.is_empty() || self.only.contains(&drill)
    }

    /// KWOK nodes: each takes 2000 of these pods (1000 CPUs, 500m requested per pod).
    pub fn nodes(&self) -> usize {
        let pods = self.restart_sessions + 2 * self.kills + 2 * self.handover_trials + 10;
        pods.div_ceil(1500).max(1)
    }
}

/// A correctness check that failed; the run exits non-zero when there is any.
type Failures = Vec<String>;

pub async fn run(args: &DrillsArgs, cluster: &mut Cluster, operator_bin: &Path) -> Result<Value> {
    let wall = Instant::now();
    let started_at = chrono::Utc::now();
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let client = env::client(&cluster.kubeconfig).await?;
    env::install_crds(&client).await?;
    let mut failures = Failures::new();
    let mut report = json!({
        "benchmark": "drills",
        "started_at": started_at.to_rfc3339(),
        "seed": seed,
    });
    let mut targets = serde_json::Map::new();
    // A drill that aborts (e.g. the operator exited by itself) is a failure; the others run.
    if args.runs(Drill::Handover) {
        match handover::run(args, cluster, operator_bin, &client, &mut failures).await {
            Ok(r) => {
                for (key, kind, limit) in [
                    ("handover_graceful_p99_s", "graceful", 3.0),
                    ("handover_sigkill_p99_s", "sigkill", 18.0),
                ] {
                    let p99 = r["first_write_s"][kind]["p99"].as_f64();
                    let note = "signal to the new leader's first write (apiserver audit log)";
                    targets.insert(key.into(), target(limit, p99, true, note));
                }
                report["handover"] = r;
            }
            Err(e) => failures.push(format!("hand-over drill aborted: {e:#}")),
        }
    }
    if args.runs(Drill::Restart) {
        match restart::run(args, cluster, operator_bin, &client, &mut failures).await {
            Ok(r) => report["apiserver_restart"] = r,
            Err(e) => failures.push(format!("apiserver restart drill aborted: {e:#}")),
        }
    }
    if args.runs(Drill::Crash) {
        match crash::run(args, cluster, operator_bin, &client, seed, &mut failures).await {
            Ok(r) => {
                let duplicates = r["duplicates"]["total"].as_f64();
                targets.insert(
                    "duplicate_github_effects".into(),
                    target(0.0, duplicates, true, "crash injection"),
                );
                report["crash"] = r;
            }
            Err(e) => failures.push(format!("crash injection drill aborted: {e:#}")),
        }
    }
    let extra_pods: Vec<f64> = [
        &report["apiserver_restart"]["final"],
        &report["crash"]["sessions"],
    ]
    .iter()
    .filter_map(|t| t["with_extra_pods"].as_f64())
    .collect();
    if !extra_pods.is_empty() {
        targets.insert(
            "duplicate_pods".into(),
            target(
                0.0,
                Some(extra_pods.iter().sum()),
                true,
                "sessions with more than one pod after the apiserver restart and the crash injection",
            ),
        );
    }
    report["ok"] = json!(failures.is_empty());
    report["failures"] = json!(failures);
    report["targets"] = Value::Object(targets);
    report["wall_seconds"] = json!(round1(wall.elapsed().as_secs_f64()));
    report["machine"] = env::machine();
    report["operator_binary"] = json!(operator_bin.display().to_string());
    let report = report::write(&args.out, report)?;
    if !failures.is_empty() {
        bail!(
            "{} drill check(s) failed (details in {}):\n  {}",
            failures.len(),
            args.out.display(),
            failures.join("\n  ")
        );
    }
    Ok(report)
}

/// `{p50, p90, p99, max, mean, count}` to three decimals (null when empty).
fn summary3(samples: &[f64]) -> Value {
    let q = |q: f64| crate::stats::percentile(samples, q).map(round3);
    let mean =
        (!samples.is_empty()).then(|| round3(samples.iter().sum::<f64>() / samples.len() as f64));
    json!({
        "p50": q(0.50), "p90": q(0.90), "p99": q(0.99), "max": q(1.0),
        "mean": mean, "count": samples.len(),
    })
}

/// One progress line on stderr.
fn progress(line: impl std::fmt::Display) {
    eprintln!("ccplant-bench: drills: {line}");
}

/// How one create fared when retried through an outage.
#[derive(Debug, Default, Clone, Copy)]
struct Created {
    /// Attempts that failed before the one that counted.
    failed_attempts: usize,
    /// The create that counted answered 409: an earlier attempt had been applied although
    /// its response was lost.
    already_existed: bool,
}

/// Creates `obj`, retrying every failure (connection refused, timeouts, 5xx, 429) every
/// 200 ms until `deadline`; 409 AlreadyExists on a retry means an earlier attempt was applied.
async fn create_retrying<K>(api: &Api<K>, obj: &K, deadline: Instant) -> Result<Created>
where
    K: Resource + Clone + Serialize + DeserializeOwned + Debug,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    let mut created = Created::default();
    loop {
        let attempt = tokio::time::timeout(
            Duration::from_secs(10),
            api.create(&PostParams::default(), obj),
        )
        .await;
        let error = match attempt {
            Ok(Ok(_)) => return Ok(created),
            Ok(Err(kube::Error::Api(e))) if e.code == 409 => {
                if created.failed_attempts == 0 {
                    bail!("creating {name}: it exists already");
                }
                created.already_existed = true;
                return Ok(created);
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => "no answer within 10 s".to_string(),
        };
        created.failed_attempts += 1;
        if Instant::now() > deadline {
            bail!(
                "creating {name}: still failing after {} attempts: {error}",
                created.failed_attempts
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A session as the convergence check sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SessionFacts {
    name: String,
    uid: String,
    phase: String,
}

/// A pod as the convergence check sees it: its `ccplant.io/session` label and the uids of its
/// AgentSession owners.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PodFacts {
    name: String,
    session_label: Option<String>,
    owner_uids: Vec<String>,
}

/// Sessions against their pods: a session's pods are those labelled with its name or owned
/// by its uid.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct SessionTally {
    sessions: usize,
    running: usize,
    /// Sessions that are not Running, with their phase.
    not_running: BTreeMap<String, String>,
    /// Sessions without a pod.
    without_pod: Vec<String>,
    /// Sessions with more than one pod, with the pods' names.
    with_extra_pods: BTreeMap<String, Vec<String>>,
}

impl SessionTally {
    fn of(sessions: &[SessionFacts], pods: &[PodFacts]) -> SessionTally {
        let mut tally = SessionTally {
            sessions: sessions.len(),
            ..SessionTally::default()
        };
        for s in sessions {
            if s.phase == "Running" {
                tally.running += 1;
            } else {
                tally.not_running.insert(s.name.clone(), s.phase.clone());
            }
            let mine: Vec<String> = pods
                .iter()
                .filter(|p| {
                    p.session_label.as_deref() == Some(s.name.as_str())
                        || p.owner_uids.contains(&s.uid)
                })
                .map(|p| p.name.clone())
                .collect();
            match mine.len() {
                0 => tally.without_pod.push(s.name.clone()),
                1 => {}
                _ => {
                    tally.with_extra_pods.insert(s.name.clone(), mine);
                }
            }
        }
        tally
    }

    /// Every one of `expected` sessions Running with exactly one pod.
    fn converged(&self, expected: usize) -> bool {
        self.sessions == expected
            && self.running == expected
            && self.without_pod.is_empty()
            && self.with_extra_pods.is_empty()
    }

    fn report(&self) -> Value {
        let first = |names: Vec<&String>| names.into_iter().take(10).cloned().collect::<Vec<_>>();
        let mut phases: BTreeMap<&str, usize> = BTreeMap::new();
        for phase in self.not_running.values() {
            *phases.entry(phase).or_insert(0) += 1;
        }
        json!({
            "sessions": self.sessions,
            "running": self.running,
            "not_running_by_phase": phases,
            "not_running_examples": first(self.not_running.keys().collect()),
            "without_pod": self.without_pod.len(),
            "without_pod_examples": first(self.without_pod.iter().collect()),
            "with_extra_pods": self.with_extra_pods.len(),
            "with_extra_pods_examples": self.with_extra_pods.iter().take(10).collect::<BTreeMap<_, _>>(),
        })
    }
}

/// The sessions of namespace `ns` against its pods, as the apiserver has them now.
async fn tally_sessions(client: &Client, ns: &str) -> Result<SessionTally> {
    let sessions: Api<AgentSession> = Api::namespaced(client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let sessions: Vec<SessionFacts> = sessions
        .list(&ListParams::default())
        .await
        .context("listing sessions")?
        .items
        .into_iter()
        .map(|s| SessionFacts {
            phase: s
                .phase()
                .map_or_else(|| "None".to_string(), |p| format!("{p:?}")),
            name: s.metadata.name.unwrap_or_default(),
            uid: s.metadata.uid.unwrap_or_default(),
        })
        .collect();
    let pods: Vec<PodFacts> = pods
        .list_metadata(&ListParams::default())
        .await
        .context("listing pods")?
        .items
        .into_iter()
        .map(|p| PodFacts {
            session_label: p
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("ccplant.io/session").cloned()),
            owner_uids: p
                .metadata
                .owner_references
                .iter()
                .flatten()
                .filter(|o| o.kind == "AgentSession")
                .map(|o| o.uid.clone())
                .collect(),
            name: p.metadata.name.unwrap_or_default(),
        })
        .collect();
    Ok(SessionTally::of(&sessions, &pods))
}

/// When a wait for convergence first saw each milestone, and the last tally.
#[derive(Debug)]
struct Convergence {
    tally: SessionTally,
    /// Every session exists.
    all_sessions: Option<Instant>,
    /// Every session exists and has a pod.
    all_pods: Option<Instant>,
    /// Every session Running with exactly one pod.
    converged: Option<Instant>,
}

impl Convergence {
    /// The milestones in seconds after `from`.
    fn report(&self, from: Instant) -> Value {
        let after = |t: Option<Instant>| t.map(|t| round3(t.duration_since(from).as_secs_f64()));
        json!({
            "all_sessions_exist_s": after(self.all_sessions),
            "all_pods_exist_s": after(self.all_pods),
            "all_running_with_one_pod_s": after(self.converged),
        })
    }
}

/// Polls until every one of `expected` sessions in `ns` is Running with exactly one pod, or
/// `timeout` passes. `check` runs on every poll (e.g. that the operator is alive) and ends the
/// wait with its error.
async fn wait_converged(
    client: &Client,
    ns: &str,
    expected: usize,
    timeout: Duration,
    mut check: impl FnMut() -> Result<()>,
) -> Result<Convergence> {
    let deadline = Instant::now() + timeout;
    let mut c = Convergence {
        tally: SessionTally::default(),
        all_sessions: None,
        all_pods: None,
        converged: None,
    };
    loop {
        // Listing fails while the apiserver is away: that is only "not yet".
        if let Ok(t) = tally_sessions(client, ns).await {
            let now = Some(Instant::now());
            if t.sessions >= expected {
                c.all_sessions = c.all_sessions.or(now);
                if t.without_pod.is_empty() {
                    c.all_pods = c.all_pods.or(now);
                }
            }
            let done = t.converged(expected);
            c.tally = t;
            if done {
                c.converged = now;
                return Ok(c);
            }
        }
        check()?;
        if Instant::now() > deadline {
            return Ok(c);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until session `name` is Running.
async fn wait_running(api: &Api<AgentSession>, name: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let phase = api
            .get_opt(name)
            .await
            .ok()
            .flatten()
            .and_then(|s| s.phase());
        if phase == Some(AgentSessionPhase::Running) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("session {name} is not Running after {timeout:?} (phase {phase:?})");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// SplitMix64: a seeded, reproducible source of kill times (no dependency for ten lines).
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The last `n` lines of a log file, for failure messages.
fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn session(name: &str, phase: &str) -> SessionFacts {
        SessionFacts {
            name: name.into(),
            uid: format!("uid-{name}"),
            phase: phase.into(),
        }
    }

    fn pod(name: &str, label: Option<&str>, owner: Option<&str>) -> PodFacts {
        PodFacts {
            name: name.into(),
            session_label: label.map(Into::into),
            owner_uids: owner.map(|o| vec![format!("uid-{o}")]).unwrap_or_default(),
        }
    }

    #[test]
    fn sessions_are_tallied_against_their_pods_by_label_and_owner() {
        let sessions = [
            session("a", "Running"),
            session("b", "Running"),
            session("c", "Pending"),
            session("d", "Running"),
        ];
        let pods = [
            pod("a", Some("a"), Some("a")),
            pod("b", Some("b"), Some("b")),
            // Labelled for b but owned by nobody, and owned by b without the label: both b's.
            pod("b-2", Some("b"), None),
            pod("b-3", None, Some("b")),
            pod("d", Some("d"), Some("d")),
            pod("stray", Some("zzz"), None),
        ];
        let t = SessionTally::of(&sessions, &pods);
        assert_eq!(t.sessions, 4);
        assert_eq!(t.running, 3);
        assert_eq!(
            t.not_running,
            BTreeMap::from([("c".into(), "Pending".into())])
        );
        assert_eq!(t.without_pod, vec!["c".to_string()]);
        assert_eq!(
            t.with_extra_pods,
            BTreeMap::from([("b".into(), vec!["b".into(), "b-2".into(), "b-3".into()])])
        );
        assert!(!t.converged(4));
        let fine = SessionTally::of(&sessions[..1], &pods[..1]);
        assert!(fine.converged(1));
        assert!(!fine.converged(2), "a missing session is not converged");
        assert_eq!(t.report()["with_extra_pods"], 1);
        assert_eq!(t.report()["not_running_by_phase"]["Pending"], 1);
    }

    #[test]
    fn the_random_source_is_seeded_and_uniform_enough() {
        let (mut a, mut b) = (Rng(7), Rng(7));
        let xs: Vec<f64> = (0..1000).map(|_| a.unit()).collect();
        let ys: Vec<f64> = (0..1000).map(|_| b.unit()).collect();
        assert_eq!(xs, ys);
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        assert!((0.45..0.55).contains(&mean), "mean {mean}");
        assert_ne!(Rng(8).unit(), Rng(7).unit());
    }
}
