//! `ccplant-bench github`: M GitHubTasks of each action against the in-process fake GitHub:
//! GitHub calls per task, tasks per minute, and the content-creating calls per minute per
//! credential (GitHub's secondary limit: 80).

use crate::env::{self, Cluster, Operator};
use crate::report::{self, target};
use crate::sessions::burst;
use crate::stats::{self, round1, round3, summary};
use crate::track::Tracker;
use anyhow::{Context, Result};
use ccplant_api::{GitHubTask, GitHubTaskPhase};
use ccplant_github::{Credentials, GitHubClient, NewIssue, NewPull, RepoRef};
use ccplant_testenv::fake_github::{FakeGitHub, RecordedRequest};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, PostParams};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, UNIX_EPOCH};

const NS: &str = "bench-github";
const OWNER: &str = "octo";
const REPO: &str = "hello";
/// Opens the issue and the pull requests the tasks act on (so approvals are not self-approvals).
const AUTHOR: (&str, &str) = ("ghp_benchAuthor00000000000000000000000000", "alice");
/// GitHub's secondary limit on content-creating requests per minute per account.
const LIMIT_PER_MINUTE: usize = 80;

#[derive(Debug, Clone, clap::Args)]
pub struct GithubArgs {
    /// Tasks per action.
    #[arg(long, env = "BENCH_TASKS", default_value_t = 50)]
    pub tasks: usize,
    /// Create requests in flight when the tasks are created.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Where the JSON goes (the file found there becomes `previous`).
    #[arg(long, default_value = "target/bench/github.json")]
    pub out: PathBuf,
}

/// One action, run with a credential of its own.
struct Action {
    name: &'static str,
    prefix: &'static str,
    secret: &'static str,
    token: &'static str,
    login: &'static str,
    /// Content-creating calls one task needs at least (the physical floor).
    content_calls: usize,
}

const ACTIONS: [Action; 4] = [
    Action {
        name: "createIssue",
        prefix: "issue",
        secret: "gh-issues",
        token: "ghp_benchIssues0000000000000000000000000",
        login: "bench-issues",
        content_calls: 1,
    },
    Action {
        name: "comment",
        prefix: "comment",
        secret: "gh-comments",
        token: "ghp_benchComments00000000000000000000000",
        login: "bench-comments",
        content_calls: 1,
    },
    Action {
        name: "createPullRequest",
        prefix: "pr",
        secret: "gh-pulls",
        token: "ghp_benchPulls000000000000000000000000000",
        login: "bench-pulls",
        content_calls: 1,
    },
    Action {
        name: "approveAndMerge",
        prefix: "merge",
        secret: "gh-merges",
        token: "ghp_benchMerges00000000000000000000000000",
        login: "bench-merges",
        content_calls: 2,
    },
];

/// What the tasks act on.
struct Setup {
    issue: u64,
    pulls: Vec<u64>,
}

fn spec(action: &Action, i: usize, setup: &Setup) -> Value {
    let mut spec = json!({
        "repository": format!("{OWNER}/{REPO}"),
        "github": {"secretRef": {"name": action.secret}},
    });
    spec[action.name] = match action.name {
        "createIssue" => {
            json!({"title": format!("Bench issue {i}"), "body": "Opened by ccplant-bench."})
        }
        "comment" => json!({"issue": setup.issue, "body": format!("Bench comment {i}")}),
        "createPullRequest" => {
            json!({"head": format!("bench/pr-{i}"), "base": "main", "title": format!("Bench change {i}")})
        }
        _ => {
            json!({"pullRequest": setup.pulls.get(i).copied().unwrap_or(0), "mergeMethod": "squash"})
        }
    };
    spec
}

fn task_name(t: &GitHubTask) -> Option<String> {
    t.metadata.name.clone()
}

fn task_state(t: &GitHubTask) -> (Option<String>, String) {
    let phase = t.phase();
    let label = phase.map_or_else(|| "None".to_string(), |p| format!("{p:?}"));
    let terminal = matches!(
        phase,
        Some(GitHubTaskPhase::Succeeded | GitHubTaskPhase::Failed)
    );
    (terminal.then(|| label.clone()), label)
}

fn seconds_since_epoch(r: &RecordedRequest) -> f64 {
    r.at.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The largest number of content-creating calls among `requests` in any 60 s window.
pub fn max_content_creating_per_minute(requests: &[RecordedRequest]) -> usize {
    let times: Vec<f64> = requests
        .iter()
        .filter(|r| stats::is_content_creating(&r.method, &r.path))
        .map(seconds_since_epoch)
        .collect();
    stats::max_in_window(&times, Duration::from_secs(60))
}

/// How the content-creating calls of one credential spread in time: the fullest 60 s window
/// (seconds after the first such call), and how long the first `LIMIT_PER_MINUTE` took to
/// arrive (the pacer lets them through at once; their arrival spread is what a later window
/// can overlap).
fn content_timing(requests: &[RecordedRequest]) -> Value {
    let times: Vec<f64> = requests
        .iter()
        .filter(|r| stats::is_content_creating(&r.method, &r.path))
        .map(seconds_since_epoch)
        .collect();
    let first = times.iter().copied().fold(f64::INFINITY, f64::min);
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let worst = stats::worst_window(&times, Duration::from_secs(60));
    json!({
        "fullest_window": worst.map(|(count, from, to)| json!({
            "calls": count,
            "first_call_s": round3(from - first),
            "last_call_s": round3(to - first),
        })),
        "first_80_arrived_within_s": sorted.get(LIMIT_PER_MINUTE - 1).map(|t| round3(t - first)),
        "call_81_arrived_at_s": sorted.get(LIMIT_PER_MINUTE).map(|t| round3(t - first)),
    })
}

/// Calls per task by "METHOD endpoint" and by method, and the failed calls.
fn calls_report(requests: &[RecordedRequest], m: usize) -> Value {
    let per = |c: usize| round3(c as f64 / m.max(1) as f64);
    let mut by_endpoint: BTreeMap<String, usize> = BTreeMap::new();
    let mut by_method: BTreeMap<String, usize> = BTreeMap::new();
    let mut failed: BTreeMap<String, usize> = BTreeMap::new();
    for r in requests {
        let endpoint = format!("{} {}", r.method, stats::endpoint_template(&r.path));
        *by_endpoint.entry(endpoint.clone()).or_insert(0) += 1;
        *by_method.entry(r.method.clone()).or_insert(0) += 1;
        if !(200..300).contains(&r.status) {
            *failed
                .entry(format!("{endpoint} {}", r.status))
                .or_insert(0) += 1;
        }
    }
    json!({
        "total": per(requests.len()),
        "by_method": by_method.into_iter().map(|(k, v)| (k, per(v))).collect::<BTreeMap<_, _>>(),
        "by_endpoint": by_endpoint.into_iter().map(|(k, v)| (k, per(v))).collect::<BTreeMap<_, _>>(),
        "non_2xx_total": failed,
    })
}

async fn prepare(fake: &FakeGitHub, m: usize) -> Result<Setup> {
    fake.add_repo(OWNER, REPO, "main");
    fake.add_token(AUTHOR.0, AUTHOR.1);
    for a in &ACTIONS {
        fake.add_token(a.token, a.login);
    }
    let author = GitHubClient::builder(Credentials::Token(AUTHOR.0.to_string().into()))
        .api_url(fake.url())
        .build()
        .context("a GitHub client for the fake")?;
    let repo = RepoRef::new(OWNER, REPO);
    let issue = author
        .create_issue(
            &repo,
            &NewIssue {
                title: "Bench tracking issue".into(),
                ..Default::default()
            },
            "<!-- ccplant-bench setup -->",
        )
        .await
        .context("opening the issue to comment on")?;
    let now = chrono::Utc::now();
    let mut pulls = Vec::with_capacity(m);
    for i in 0..m {
        fake.push_commit(OWNER, REPO, &format!("bench/pr-{i}"), "Bench change", now);
        let head = format!("bench/merge-{i}");
        fake.push_commit(OWNER, REPO, &head, "Bench change to merge", now);
        let pull = author
            .create_pull(
                &repo,
                &NewPull {
                    head,
                    base: "main".into(),
                    title: format!("Bench pull request {i}"),
                    body: String::new(),
                    draft: false,
                },
                "<!-- ccplant-bench setup -->",
            )
            .await
            .with_context(|| format!("opening pull request {i} to merge"))?;
        pulls.push(pull.number);
    }
    Ok(Setup {
        issue: issue.number,
        pulls,
    })
}

async fn run_action(
    client: &kube::Client,
    fake: &FakeGitHub,
    op: &mut Operator,
    action: &Action,
    setup: &Setup,
    args: &GithubArgs,
) -> Result<(Value, Vec<RecordedRequest>)> {
    let m = args.tasks;
    let tasks: Api<GitHubTask> = Api::namespaced(client.clone(), NS);
    let objects = (0..m)
        .map(|i| {
            serde_json::from_value(json!({
                "apiVersion": "ccplant.io/v1alpha1", "kind": "GitHubTask",
                "metadata": {"name": format!("{}-{i:04}", action.prefix)},
                "spec": spec(action, i, setup),
            }))
            .context("a GitHubTask object")
        })
        .collect::<Result<Vec<GitHubTask>>>()?;
    let content = m * action.content_calls;
    let timeout = Duration::from_secs(120 + 60 * content.div_ceil(LIMIT_PER_MINUTE) as u64);
    let mark = fake.requests().len();
    let tracker = Tracker::start(tasks.clone(), task_name, task_state).await?;
    let cpu0 = op.cpu_seconds();
    let sent = burst(&tasks, objects, args.concurrency).await?;
    let prefix = format!("{}-", action.prefix);
    let all_done = tracker
        .wait_until(
            timeout,
            |s| s.reached.keys().filter(|k| k.starts_with(&prefix)).count() >= m,
            || op.ensure_running(),
        )
        .await?;
    let seen = tracker.stop();
    let cpu1 = op.cpu_seconds();
    let requests: Vec<RecordedRequest> = fake.requests().into_iter().skip(mark).collect();

    let done: Vec<(&String, &(Instant, String))> = seen
        .reached
        .iter()
        .filter(|(k, _)| k.starts_with(&prefix))
        .collect();
    let succeeded = done.iter().filter(|(_, (_, p))| p == "Succeeded").count();
    let latencies: Vec<f64> = done
        .iter()
        .filter_map(|(name, (at, _))| {
            let sent = sent.sent.get(*name)?;
            Some(at.saturating_duration_since(*sent).as_secs_f64())
        })
        .collect();
    let last = done.iter().map(|(_, (at, _))| *at).max();
    let seconds = last
        .filter(|_| all_done)
        .map(|t| t.saturating_duration_since(sent.started).as_secs_f64());
    let mut failures = Vec::new();
    if succeeded < m {
        for t in tasks.list(&ListParams::default()).await?.items {
            let name = t.metadata.name.clone().unwrap_or_default();
            if name.starts_with(&prefix) && t.phase() != Some(GitHubTaskPhase::Succeeded) {
                let status = t.status.as_ref();
                failures.push(json!({
                    "task": name,
                    "phase": t.phase().map(|p| format!("{p:?}")),
                    "message": status.and_then(|s| s.message.clone()),
                }));
            }
        }
        failures.truncate(5);
    }
    let max_per_minute = max_content_creating_per_minute(&requests);
    let report = json!({
        "tasks": m,
        "succeeded": succeeded,
        "not_succeeded_examples": failures,
        "credential": action.login,
        "seconds_first_create_to_last_succeeded": seconds.map(round3),
        "tasks_per_minute": seconds.filter(|s| *s > 0.0).map(|s| round1(m as f64 * 60.0 / s)),
        "create_to_succeeded_s": summary(&latencies),
        "github_calls_per_task": calls_report(&requests, m),
        "github_calls_floor_per_task": action.content_calls,
        "content_creating_calls": requests.iter().filter(|r| stats::is_content_creating(&r.method, &r.path)).count(),
        "max_content_creating_per_minute": max_per_minute,
        "content_creating_timing": content_timing(&requests),
        "operator_cpu_seconds": cpu0.zip(cpu1).map(|(a, b)| round1(b - a)),
    });
    Ok((report, requests))
}

pub async fn run(args: &GithubArgs, cluster: &Cluster, operator_bin: &Path) -> Result<Value> {
    let wall = Instant::now();
    let started_at = chrono::Utc::now();
    let m = args.tasks;
    let client = env::client(&cluster.kubeconfig).await?;
    env::install_crds(&client).await?;
    env::create_namespace(&client, NS).await?;
    // On a thread and runtime of its own, so that the bench's watches do not delay the fake's
    // handling (and the arrival times it records).
    let fake = tokio::task::spawn_blocking(FakeGitHub::start_detached).await??;
    let setup_started = Instant::now();
    let setup = prepare(&fake, m).await?;
    let setup_s = setup_started.elapsed().as_secs_f64();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    for a in &ACTIONS {
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": a.secret},
            "stringData": {"token": a.token},
        }))?;
        secrets.create(&PostParams::default(), &secret).await?;
    }
    let mut op = Operator::start(
        operator_bin,
        &cluster.kubeconfig,
        &[NS],
        &fake.url(),
        cluster.dir.join("logs/ccplant-operator.log"),
    )?;
    op.wait_ready(Duration::from_secs(60)).await?;
    fake.clear_requests();

    let mut actions = serde_json::Map::new();
    let mut all_requests = Vec::new();
    let mut per_credential_max = 0;
    for action in &ACTIONS {
        eprintln!(
            "ccplant-bench: github: {m} {} tasks (credential {})",
            action.name, action.login
        );
        let (report, requests) = run_action(&client, &fake, &mut op, action, &setup, args).await?;
        per_credential_max = per_credential_max.max(max_content_creating_per_minute(&requests));
        all_requests.extend(requests);
        actions.insert(action.name.to_string(), report);
    }
    let peak_rss = op.peak_rss_mib();
    let operator_cpu = op.cpu_seconds();
    let exit = op.stop().await?;
    let all_max = max_content_creating_per_minute(&all_requests);
    let pacing_ok = per_credential_max <= LIMIT_PER_MINUTE;
    let tasks_per_minute: BTreeMap<String, Value> = actions
        .iter()
        .map(|(k, v)| (k.clone(), v["tasks_per_minute"].clone()))
        .collect();
    let calls_per_task: BTreeMap<String, Value> = actions
        .iter()
        .map(|(k, v)| (k.clone(), v["github_calls_per_task"]["by_method"].clone()))
        .collect();
    let report = json!({
        "benchmark": "github",
        "started_at": started_at.to_rfc3339(),
        "wall_seconds": round1(wall.elapsed().as_secs_f64()),
        "m": m,
        "tasks_per_minute": tasks_per_minute,
        "github_calls_per_task_by_method": calls_per_task,
        "max_content_creating_per_minute": per_credential_max,
        "max_content_creating_per_minute_all_credentials": all_max,
        "pacing_limit_per_minute": LIMIT_PER_MINUTE,
        "pacing_ok": pacing_ok,
        "actions": actions,
        "targets": {
            "content_creating_per_minute_per_credential": target(LIMIT_PER_MINUTE as f64, Some(per_credential_max as f64), true, "GitHub's secondary rate limit; each action runs alone with its own credential, so its window is that credential's"),
        },
        "profile": {
            "operator_peak_rss_mib": peak_rss.map(round1),
            "operator_cpu_seconds": operator_cpu.map(round1),
            "operator_exit": exit.to_string(),
            "setup_seconds": round1(setup_s),
        },
        "method": {
            "order": "the actions run one after another, each with M tasks created at once and its own token (credential); calls are the fake GitHub's record of the requests it received while that action ran",
            "tasks_per_minute": "M * 60 / (first create sent → last task seen Succeeded on a watch)",
            "content_creating": "POST issues, issue comments, pulls, reviews; PUT merge; counted in any sliding 60 s window of their arrival at the fake",
            "fake": "the testenv's fake GitHub in the bench process, on a thread and runtime of its own; a request's time is when the fake has read it",
            "setup": "an issue and M pull requests opened by another account (alice) before the operator starts; M branches for createPullRequest",
        },
        "machine": env::machine(),
        "operator_binary": operator_bin.display().to_string(),
    });
    report::write(&args.out, report)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::time::SystemTime;

    fn req(method: &str, path: &str, at: f64, status: u16) -> RecordedRequest {
        RecordedRequest {
            method: method.into(),
            path: path.into(),
            query: String::new(),
            body: None,
            auth: Some("token".into()),
            status,
            at: SystemTime::UNIX_EPOCH + Duration::from_secs_f64(at),
        }
    }

    #[test]
    fn calls_are_counted_per_task_by_endpoint() {
        let reqs = vec![
            req("GET", "/repos/octo/hello/pulls/2", 0.0, 200),
            req("POST", "/repos/octo/hello/pulls/2/reviews", 0.1, 200),
            req("PUT", "/repos/octo/hello/pulls/2/merge", 0.2, 200),
            req("GET", "/repos/octo/hello/pulls/3", 1.0, 200),
            req("POST", "/repos/octo/hello/pulls/3/reviews", 1.1, 200),
            req("PUT", "/repos/octo/hello/pulls/3/merge", 1.2, 405),
        ];
        let r = calls_report(&reqs, 2);
        assert_eq!(r["total"], 3.0);
        assert_eq!(r["by_method"]["GET"], 1.0);
        assert_eq!(
            r["by_endpoint"]["PUT /repos/{owner}/{repo}/pulls/{n}/merge"],
            1.0
        );
        assert_eq!(
            r["non_2xx_total"]["PUT /repos/{owner}/{repo}/pulls/{n}/merge 405"],
            1
        );
        assert_eq!(max_content_creating_per_minute(&reqs), 4);
    }

    #[test]
    fn the_window_slides_over_arrival_times() {
        let mut reqs: Vec<RecordedRequest> = (0..80)
            .map(|i| req("POST", "/repos/o/r/issues", f64::from(i) * 0.01, 201))
            .collect();
        reqs.push(req("GET", "/repos/o/r/issues/1", 1.0, 200));
        reqs.push(req("POST", "/repos/o/r/issues", 60.0, 201));
        assert_eq!(max_content_creating_per_minute(&reqs), 80);
        reqs.push(req("POST", "/repos/o/r/issues/1/comments", 59.0, 201));
        assert_eq!(max_content_creating_per_minute(&reqs), 81);
    }

    #[test]
    fn specs_name_their_action_and_credential() {
        let setup = Setup {
            issue: 1,
            pulls: vec![7, 8],
        };
        let merge = spec(&ACTIONS[3], 1, &setup);
        assert_eq!(merge["approveAndMerge"]["pullRequest"], 8);
        assert_eq!(merge["github"]["secretRef"]["name"], "gh-merges");
        assert_eq!(
            spec(&ACTIONS[2], 0, &setup)["createPullRequest"]["head"],
            "bench/pr-0"
        );
        assert_eq!(spec(&ACTIONS[1], 0, &setup)["comment"]["issue"], 1);
        assert!(spec(&ACTIONS[0], 0, &setup)["createIssue"]["title"].is_string());
    }
}
