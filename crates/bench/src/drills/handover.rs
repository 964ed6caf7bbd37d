//! Leader hand-over: two operator replicas elect a leader on a Lease; the leader gets SIGTERM
//! (it drains and releases the Lease) or SIGKILL (the standby waits for the Lease to expire).
//!
//! Measured per trial, with the apiserver's audit log as the referee (each replica's user agent
//! is `ccplant-operator/<version> (<identity>)`, and every start gets a fresh identity): the
//! seconds from the signal until the new leader's first write other than its Lease (right after
//! the signal the bench creates an AgentSession, so there is work waiting), the seconds until
//! it took the Lease, and whether any write of the old leader completed after the new leader's
//! first write was received (interleaving, must never happen). The signalled replica is then
//! started again and becomes the standby of the next trial.

use super::{Failures, bare_session, progress, summary3, wait_running};
use crate::env::{AuditReader, Cluster, Operator};
use crate::stats::round3;
use anyhow::{Context, Result, bail};
use ccplant_api::AgentSession;
use chrono::{DateTime, Utc};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

const NS: &str = "drill-handover";
const LEASE: &str = "ccplant-operator";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Graceful,
    Sigkill,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Graceful => "graceful",
            Kind::Sigkill => "sigkill",
        }
    }

    fn signal(self) -> i32 {
        match self {
            Kind::Graceful => libc::SIGTERM,
            Kind::Sigkill => libc::SIGKILL,
        }
    }
}

/// One successful write in the apiserver's audit log.
#[derive(Debug, Clone, PartialEq)]
struct Write {
    /// The operator replica that sent it (from the user agent), if an operator did.
    identity: Option<String>,
    verb: String,
    resource: String,
    name: String,
    received: DateTime<Utc>,
    completed: DateTime<Utc>,
}

/// `<identity>` of a user agent `ccplant-operator/<version> (<identity>)`.
fn operator_identity(agent: &str) -> Option<&str> {
    let rest = agent.strip_prefix("ccplant-operator/")?;
    let (_, id) = rest.split_once(" (")?;
    id.strip_suffix(')')
}

/// A 2xx write from one JSON line of the audit log (the policy logs writes only).
fn parse_write(line: &str) -> Option<Write> {
    let v: Value = serde_json::from_str(line).ok()?;
    if v["kind"] != "Event" || !(200..300).contains(&v["responseStatus"]["code"].as_u64()?) {
        return None;
    }
    let s = |x: &Value| x.as_str().unwrap_or_default().to_string();
    let time = |key: &str| v[key].as_str()?.parse::<DateTime<Utc>>().ok();
    Some(Write {
        identity: v["userAgent"]
            .as_str()
            .and_then(operator_identity)
            .map(str::to_string),
        verb: s(&v["verb"]),
        resource: s(&v["objectRef"]["resource"]),
        name: s(&v["objectRef"]["name"]),
        received: time("requestReceivedTimestamp")?,
        completed: time("stageTimestamp")?,
    })
}

/// What the audit log says about one hand-over from `old` to `new`, signalled at `t0`.
#[derive(Debug, PartialEq)]
struct Handover {
    /// Seconds from `t0` to the new leader's first write other than to its Lease.
    first_write_s: Option<f64>,
    /// Seconds from `t0` to the new leader's first Lease write (taking the Lease).
    lease_acquired_s: Option<f64>,
    /// Writes of the old leader that completed after the new leader's first write (of any
    /// kind) was received.
    interleaved: Vec<Write>,
}

fn handover(writes: &[Write], old: &str, new: &str, t0: DateTime<Utc>) -> Handover {
    let since = |t: DateTime<Utc>| (t - t0).num_microseconds().map(|us| us as f64 / 1e6);
    let first = |leases: Option<bool>| {
        writes
            .iter()
            .filter(|w| w.identity.as_deref() == Some(new) && w.received >= t0)
            .filter(|w| leases.is_none_or(|l| (w.resource == "leases") == l))
            .map(|w| w.received)
            .min()
    };
    let first_any = first(None);
    Handover {
        first_write_s: first(Some(false)).and_then(since),
        lease_acquired_s: first(Some(true)).and_then(since),
        interleaved: first_any
            .map(|boundary| {
                writes
                    .iter()
                    .filter(|w| w.identity.as_deref() == Some(old) && w.completed > boundary)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// One operator process electing on the drill's Lease.
#[derive(Debug)]
struct Replica {
    identity: String,
    op: Operator,
}

impl Replica {
    fn start(bin: &Path, cluster: &Cluster, seq: usize) -> Result<Replica> {
        let identity = format!("drill-handover-{seq}");
        let log = cluster.dir.join(format!("logs/{identity}.log"));
        let args = [
            "--namespaces",
            NS,
            "--leader-elect=true",
            "--lease-namespace",
            NS,
            "--lease-name",
            LEASE,
            "--identity",
            &identity,
            // Bare sessions: GitHub is never called.
            "--github-api-url",
            "http://127.0.0.1:1",
            "--log-format",
            "json",
            "--log-level",
            "info",
        ];
        let op = Operator::start_with(bin, &cluster.kubeconfig, &args, log, false)?;
        Ok(Replica { identity, op })
    }
}

async fn wait_holder(leases: &Api<Lease>, who: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let holder = leases
            .get_opt(LEASE)
            .await?
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity);
        if holder.as_deref() == Some(who) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the Lease is held by {holder:?}, not {who}, after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn run(
    args: &super::DrillsArgs,
    cluster: &Cluster,
    bin: &Path,
    client: &Client,
    failures: &mut Failures,
) -> Result<Value> {
    crate::env::create_namespace(client, NS).await?;
    let leases: Api<Lease> = Api::namespaced(client.clone(), NS);
    let sessions: Api<AgentSession> = Api::namespaced(client.clone(), NS);
    let mut seq = 0;
    let mut leader = Replica::start(bin, cluster, seq)?;
    wait_holder(&leases, &leader.identity, Duration::from_secs(60)).await?;
    leader.op.wait_ready(Duration::from_secs(60)).await?;
    seq += 1;
    let mut standby = Replica::start(bin, cluster, seq)?;
    standby.op.wait_ready(Duration::from_secs(60)).await?;

    let mut trials = Vec::new();
    let mut samples: [(Vec<f64>, Vec<f64>); 2] = Default::default();
    'kinds: for (k, kind) in [Kind::Graceful, Kind::Sigkill].into_iter().enumerate() {
        for i in 0..args.handover_trials {
            progress(format_args!(
                "hand-over {} trial {}/{}: {} leads, {} stands by",
                kind.name(),
                i + 1,
                args.handover_trials,
                leader.identity,
                standby.identity
            ));
            let session = format!("{}-{i}", kind.name());
            let trial = trial(cluster, &sessions, &mut leader, &standby, kind, &session).await;
            let trial = match trial {
                Ok(t) => t,
                Err(e) => {
                    failures.push(format!("hand-over {} trial {i}: {e:#}", kind.name()));
                    break 'kinds;
                }
            };
            if let Some(s) = trial["first_write_s"].as_f64() {
                samples[k].0.push(s);
            }
            if let Some(s) = trial["lease_acquired_s"].as_f64() {
                samples[k].1.push(s);
            }
            if trial["interleaved_writes"]
                .as_array()
                .is_some_and(|w| !w.is_empty())
            {
                failures.push(format!(
                    "hand-over {} trial {i}: the old leader wrote after the new leader's first write: {}",
                    kind.name(),
                    trial["interleaved_writes"]
                ));
            }
            if let Some(problem) = trial["problem"].as_str() {
                failures.push(format!("hand-over {} trial {i}: {problem}", kind.name()));
            }
            trials.push(trial);
            // The signalled replica comes back as the standby of the next trial.
            seq += 1;
            let replacement = Replica::start(bin, cluster, seq)?;
            leader = std::mem::replace(&mut standby, replacement);
            standby.op.wait_ready(Duration::from_secs(60)).await?;
            wait_holder(&leases, &leader.identity, Duration::from_secs(30)).await?;
        }
    }
    for replica in [leader, standby] {
        replica.op.stop().await?;
    }
    let [graceful, sigkill] = &samples;
    Ok(json!({
        "trials_per_kind": args.handover_trials,
        "first_write_s": {"graceful": summary3(&graceful.0), "sigkill": summary3(&sigkill.0)},
        "lease_acquired_s": {"graceful": summary3(&graceful.1), "sigkill": summary3(&sigkill.1)},
        "interleaved_trials": trials.iter().filter(|t| t["interleaved_writes"].as_array().is_some_and(|w| !w.is_empty())).count(),
        "trials": trials,
        "method": "two replicas with --leader-elect on a Lease in the drill's namespace; per trial the leader gets the signal at t0, an AgentSession is created right after, and the apiserver's audit log (requestReceivedTimestamp) gives the new leader's first write other than its Lease (first_write_s) and its first Lease write (lease_acquired_s), both from t0; interleaved_writes lists the old leader's writes completed after the new leader's first write of any kind was received; the signalled replica restarts with a new identity as the next standby",
    }))
}

/// One hand-over: signals the leader, creates `session`, and reads the audit log until the
/// standby's first write; waits for the old leader's exit and the session to run.
async fn trial(
    cluster: &Cluster,
    sessions: &Api<AgentSession>,
    leader: &mut Replica,
    standby: &Replica,
    kind: Kind,
    session: &str,
) -> Result<Value> {
    let mut audit = AuditReader::at_end(cluster.audit_log())?;
    let mut writes = Vec::new();
    let t0 = Utc::now();
    let signalled = Instant::now();
    leader.op.signal(kind.signal())?;
    sessions
        .create(&PostParams::default(), &bare_session(session)?)
        .await
        .with_context(|| format!("creating session {session}"))?;
    let deadline = signalled + Duration::from_secs(60);
    let first_write_s = loop {
        writes.extend(audit.read_new_with(parse_write)?);
        if let Some(s) = handover(&writes, &leader.identity, &standby.identity, t0).first_write_s {
            break s;
        }
        if Instant::now() > deadline {
            bail!(
                "{} wrote nothing 60 s after {} got {}",
                standby.identity,
                leader.identity,
                kind.name()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let exit = leader.op.wait_exit(Duration::from_secs(20)).await?;
    let problem = match (kind, exit) {
        (_, None) => Some(format!("{} did not exit within 20 s", leader.identity)),
        (Kind::Graceful, Some(status)) if !status.success() => Some(format!(
            "{} exited with {status} on SIGTERM",
            leader.identity
        )),
        _ => None,
    };
    if exit.is_none() {
        leader.op.signal(libc::SIGKILL)?;
    }
    wait_running(sessions, session, Duration::from_secs(60)).await?;
    writes.extend(audit.read_new_with(parse_write)?);
    let h = handover(&writes, &leader.identity, &standby.identity, t0);
    Ok(json!({
        "kind": kind.name(),
        "old": leader.identity,
        "new": standby.identity,
        "first_write_s": round3(first_write_s),
        "lease_acquired_s": h.lease_acquired_s.map(round3),
        "interleaved_writes": h.interleaved.iter().map(|w| format!("{} {} {} completed {}", w.verb, w.resource, w.name, w.completed.to_rfc3339())).collect::<Vec<_>>(),
        "old_exit": exit.map(|s| s.to_string()),
        "problem": problem,
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn line(agent: &str, verb: &str, resource: &str, code: u16, at: &str, done: &str) -> String {
        json!({
            "kind": "Event", "level": "Metadata", "stage": "ResponseComplete",
            "verb": verb, "userAgent": agent,
            "objectRef": {"resource": resource, "namespace": "drill-handover", "name": "x"},
            "responseStatus": {"code": code},
            "requestReceivedTimestamp": at, "stageTimestamp": done,
        })
        .to_string()
    }

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn identities_come_from_the_operator_user_agent() {
        assert_eq!(
            operator_identity("ccplant-operator/0.1.0 (drill-handover-3)"),
            Some("drill-handover-3")
        );
        assert_eq!(operator_identity("kube-controller-manager/v1.35.4"), None);
        assert_eq!(operator_identity("ccplant-operator/0.1.0"), None);
    }

    #[test]
    fn audit_lines_become_successful_writes_with_times() {
        let ok = line(
            "ccplant-operator/0.1.0 (a)",
            "patch",
            "pods",
            200,
            "2026-01-01T00:00:01.250000Z",
            "2026-01-01T00:00:01.260000Z",
        );
        let w = parse_write(&ok).unwrap();
        assert_eq!(w.identity.as_deref(), Some("a"));
        assert_eq!((w.verb.as_str(), w.resource.as_str()), ("patch", "pods"));
        assert_eq!(w.received, t("2026-01-01T00:00:01.25Z"));
        assert_eq!(w.completed, t("2026-01-01T00:00:01.26Z"));
        let refused = line(
            "x",
            "update",
            "leases",
            409,
            "2026-01-01T00:00:01Z",
            "2026-01-01T00:00:01Z",
        );
        assert_eq!(parse_write(&refused), None);
        assert_eq!(parse_write("{\"kind\":\"Ev"), None);
        let kwok = parse_write(&line(
            "kwok/v0.8.0",
            "patch",
            "pods",
            200,
            "2026-01-01T00:00:01Z",
            "2026-01-01T00:00:01Z",
        ))
        .unwrap();
        assert_eq!(kwok.identity, None);
    }

    #[test]
    fn a_handover_is_timed_from_the_signal_and_interleaving_is_caught() {
        let w = |id: &str, resource: &str, at: &str, done: &str| Write {
            identity: Some(id.into()),
            verb: "patch".into(),
            resource: resource.into(),
            name: "x".into(),
            received: t(at),
            completed: t(done),
        };
        let t0 = t("2026-01-01T00:00:10Z");
        let clean = vec![
            w(
                "old",
                "pods",
                "2026-01-01T00:00:05Z",
                "2026-01-01T00:00:05.1Z",
            ),
            // The old leader releases its Lease after the signal.
            w(
                "old",
                "leases",
                "2026-01-01T00:00:10.2Z",
                "2026-01-01T00:00:10.3Z",
            ),
            w(
                "new",
                "leases",
                "2026-01-01T00:00:10.5Z",
                "2026-01-01T00:00:10.6Z",
            ),
            w(
                "new",
                "pods",
                "2026-01-01T00:00:11Z",
                "2026-01-01T00:00:11.1Z",
            ),
            w(
                "new",
                "services",
                "2026-01-01T00:00:11.2Z",
                "2026-01-01T00:00:11.3Z",
            ),
        ];
        let h = handover(&clean, "old", "new", t0);
        assert_eq!(h.first_write_s, Some(1.0));
        assert_eq!(h.lease_acquired_s, Some(0.5));
        assert!(h.interleaved.is_empty());

        let mut overlapping = clean.clone();
        overlapping.push(w(
            "old",
            "events",
            "2026-01-01T00:00:10.4Z",
            "2026-01-01T00:00:10.7Z",
        ));
        let h = handover(&overlapping, "old", "new", t0);
        assert_eq!(h.interleaved.len(), 1);
        assert_eq!(h.interleaved[0].resource, "events");

        // Writes of the new replica from before the signal do not count; no write yet: None.
        let early = vec![w(
            "new",
            "pods",
            "2026-01-01T00:00:09Z",
            "2026-01-01T00:00:09Z",
        )];
        assert_eq!(
            handover(&early, "old", "new", t0),
            Handover {
                first_write_s: None,
                lease_acquired_s: None,
                interleaved: vec![]
            }
        );
    }
}
