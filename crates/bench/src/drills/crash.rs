//! Crash injection: `--kills` SIGKILLs of the operator while it works on GitHubTasks of every
//! action and on AgentSessions, against the fake GitHub.
//!
//! Each round feeds new work while the operator is down (a createIssue with a trigger comment,
//! a comment, a createPullRequest, an approveAndMerge, two sessions, and, one at a time, a
//! createPullRequest with an auto-selected branch and an approveAndMerge of the newest open
//! pull request), starts the operator, and kills it. Even rounds kill at a random time
//! (uniform in 0–1 s after /readyz); odd rounds arm the fake GitHub's `on_write` hook to
//! SIGKILL the operator as soon as GitHub applied a write of the round's kind (issue, trigger
//! comment, comment, pull request, review, merge, in turn), before the response leaves: the
//! write happened, the operator never learns of it. After the last kill the operator runs
//! until everything converged; then every issue, comment, pull request and review on the fake
//! is counted by the marker in its body, and every applied merge by pull request.

use super::effects::{Effect, EffectTally, Expected, marker_of, merge_key};
use super::{
    Failures, Rng, SessionTally, bare_session, log_tail, progress, summary3, tally_sessions,
};
use crate::env::{self, AuditReader, Cluster, Operator};
use crate::stats::{self, round3};
use anyhow::{Context, Result, bail};
use ccplant_api::{AgentSession, GitHubTask, GitHubTaskPhase};
use ccplant_github::{Credentials, GitHubClient, NewIssue, NewPull, PacerRegistry, RepoRef};
use ccplant_testenv::fake_github::{FakeGitHub, RecordedRequest};
use chrono::{DateTime, TimeDelta, Utc};
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, ListParams, PostParams};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

const NS: &str = "drill-crash";
const OWNER: &str = "octo";
const REPO: &str = "hello";
/// Opens the tracking issue and the pull requests merged by the tasks (no self-approvals).
const AUTHOR: (&str, &str) = ("ghp_drillAuthor0000000000000000000000000", "alice");
/// Random kills land uniformly within this long after the operator is ready (it works off the
/// round's backlog in well under a second: most land mid-work, some when it is idle).
const MAX_RANDOM_DELAY: Duration = Duration::from_secs(1);
/// How long a targeted kill waits for a write of its kind.
const TARGET_TIMEOUT: Duration = Duration::from_secs(30);
/// Time for everything to converge after the last kill.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(300);

/// A token of its own per action, so GitHub's pacing of one does not slow the others.
#[derive(Debug)]
struct Credential {
    secret: &'static str,
    token: &'static str,
    login: &'static str,
}

const ISSUES: Credential = Credential {
    secret: "gh-issues",
    token: "ghp_drillIssues0000000000000000000000000",
    login: "drill-issues",
};
const COMMENTS: Credential = Credential {
    secret: "gh-comments",
    token: "ghp_drillComments00000000000000000000000",
    login: "drill-comments",
};
const PULLS: Credential = Credential {
    secret: "gh-pulls",
    token: "ghp_drillPulls000000000000000000000000000",
    login: "drill-pulls",
};
const MERGES: Credential = Credential {
    secret: "gh-merges",
    token: "ghp_drillMerges00000000000000000000000000",
    login: "drill-merges",
};

/// The content-creating GitHub writes a targeted kill follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum WriteKind {
    Issue,
    TriggerComment,
    Comment,
    PullRequest,
    Review,
    Merge,
}

const TARGETS: [WriteKind; 6] = [
    WriteKind::Issue,
    WriteKind::TriggerComment,
    WriteKind::Comment,
    WriteKind::PullRequest,
    WriteKind::Review,
    WriteKind::Merge,
];

impl WriteKind {
    fn name(self) -> &'static str {
        match self {
            WriteKind::Issue => "issue",
            WriteKind::TriggerComment => "trigger_comment",
            WriteKind::Comment => "comment",
            WriteKind::PullRequest => "pull_request",
            WriteKind::Review => "review",
            WriteKind::Merge => "merge",
        }
    }

    /// The kind of a write; comments on `tracking` (the issue the comment tasks use) are
    /// comments, any other issue's are trigger comments.
    fn of(method: &str, path: &str, tracking: u64) -> Option<WriteKind> {
        let template = stats::endpoint_template(path);
        let rest = template.strip_prefix("/repos/{owner}/{repo}")?;
        Some(match (method, rest) {
            ("POST", "/issues") => WriteKind::Issue,
            ("POST", "/issues/{n}/comments") => {
                let number = path.split('/').nth(5)?.parse::<u64>().ok()?;
                if number == tracking {
                    WriteKind::Comment
                } else {
                    WriteKind::TriggerComment
                }
            }
            ("POST", "/pulls") => WriteKind::PullRequest,
            ("POST", "/pulls/{n}/reviews") => WriteKind::Review,
            ("PUT", "/pulls/{n}/merge") => WriteKind::Merge,
            _ => return None,
        })
    }
}

/// The fake GitHub's `on_write` hook and the bench share this: armed with a pid and a kind,
/// the hook SIGKILLs that pid at the next applied write of that kind and notes which.
#[derive(Debug, Default)]
struct Trap {
    armed: Option<(i32, WriteKind)>,
    fired: Option<(WriteKind, String)>,
}

fn lock(trap: &Mutex<Trap>) -> MutexGuard<'_, Trap> {
    trap.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the tasks act on.
#[derive(Debug)]
struct Setup {
    fake: FakeGitHub,
    author: GitHubClient,
    /// The issue the comment tasks comment on.
    tracking: u64,
    /// A pull request by the author per round, for that round's approveAndMerge.
    merge_pulls: Vec<u64>,
    /// Commits are dated from here on (two days ago): a second apart, the auto-selected
    /// branches' a day later than the others'.
    past: DateTime<Utc>,
}

async fn setup(client: &Client, rounds: usize) -> Result<Setup> {
    let fake = tokio::task::spawn_blocking(FakeGitHub::start_detached).await??;
    fake.add_repo(OWNER, REPO, "main");
    fake.add_token(AUTHOR.0, AUTHOR.1);
    // The drill is about crashes, not GitHub's hourly quota (5000 per credential), which
    // lookups after every restart would exhaust; the calls are reported instead.
    fake.set_rate_limit(1_000_000);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    for c in [&ISSUES, &COMMENTS, &PULLS, &MERGES] {
        fake.add_token(c.token, c.login);
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": c.secret},
            "stringData": {"token": c.token},
        }))?;
        secrets.create(&PostParams::default(), &secret).await?;
    }
    // The author's setup is not the operator's traffic: no pacing for it.
    let author = GitHubClient::builder(Credentials::Token(AUTHOR.0.to_string().into()))
        .api_url(fake.url())
        .pacing(PacerRegistry::new(usize::MAX, Duration::from_secs(60)))
        .build()
        .context("a GitHub client for the fake")?;
    let repo = RepoRef::new(OWNER, REPO);
    let setup_marker = "<!-- ccplant-bench setup -->";
    let tracking = author
        .create_issue(
            &repo,
            &NewIssue {
                title: "Drill tracking issue".into(),
                ..Default::default()
            },
            setup_marker,
        )
        .await
        .context("opening the tracking issue")?
        .number;
    let past = Utc::now() - TimeDelta::days(2);
    let mut merge_pulls = Vec::with_capacity(rounds);
    for r in 0..rounds {
        let at = past + TimeDelta::seconds(r as i64);
        fake.push_commit(OWNER, REPO, &format!("pr-{r}"), "Drill change", at);
        let head = format!("merge-{r}");
        fake.push_commit(OWNER, REPO, &head, "Drill change to merge", at);
        let pull = NewPull {
            head,
            base: "main".into(),
            title: format!("Drill pull request {r}"),
            body: String::new(),
            draft: false,
        };
        let pull = author.create_pull(&repo, &pull, setup_marker).await?;
        merge_pulls.push(pull.number);
    }
    Ok(Setup {
        fake,
        author,
        tracking,
        merge_pulls,
        past,
    })
}

fn task(name: &str, credential: &Credential, action: &str, spec: Value) -> Result<GitHubTask> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "ccplant.io/v1alpha1", "kind": "GitHubTask",
        "metadata": {"name": name},
        "spec": {
            "repository": format!("{OWNER}/{REPO}"),
            "github": {"secretRef": {"name": credential.secret}},
            action: spec,
            // Kills interrupt attempts; retries must outlast them and come quickly.
            "retry": {"maxAttempts": 20, "backoff": "1s"},
        },
    }))?)
}

/// Creates the work of each round, and keeps one auto-selecting task of each kind in flight.
#[derive(Debug, Default)]
struct Feeder {
    /// The pending createPullRequest without a head, and the branch it must pick.
    auto_pull: Option<String>,
    /// The pending approveAndMerge without a pull request.
    auto_merge: Option<String>,
    auto_seq: usize,
    /// createPullRequest tasks without a head → the branch they must have picked.
    expected_heads: BTreeMap<String, String>,
    tasks: usize,
    sessions: usize,
}

impl Feeder {
    async fn feed(&mut self, round: usize, client: &Client, setup: &Setup) -> Result<()> {
        let tasks: Api<GitHubTask> = Api::namespaced(client.clone(), NS);
        let sessions: Api<AgentSession> = Api::namespaced(client.clone(), NS);
        let r = round;
        let mut new = vec![
            task(
                &format!("issue-{r}"),
                &ISSUES,
                "createIssue",
                json!({"title": format!("Drill issue {r}"), "body": "Opened by the crash drill.", "triggerComment": "@agent implement this"}),
            )?,
            task(
                &format!("comment-{r}"),
                &COMMENTS,
                "comment",
                json!({"issue": setup.tracking, "body": format!("Drill comment {r}")}),
            )?,
            task(
                &format!("pr-{r}"),
                &PULLS,
                "createPullRequest",
                json!({"head": format!("pr-{r}"), "base": "main", "title": format!("Drill change {r}")}),
            )?,
            task(
                &format!("merge-{r}"),
                &MERGES,
                "approveAndMerge",
                json!({"pullRequest": setup.merge_pulls.get(r).copied().unwrap_or(0), "mergeMethod": "squash"}),
            )?,
        ];
        // Auto-selection is deterministic only while one such task is unresolved: the next
        // branch (newest commit) or pull request (newest open) appears once the last is done.
        if !is_pending(&tasks, self.auto_pull.as_deref()).await? {
            self.auto_seq += 1;
            let (name, branch) = (
                format!("autopr-{}", self.auto_seq),
                format!("auto-{}", self.auto_seq),
            );
            // Commit dates have whole seconds, as on GitHub: each auto branch is a day and
            // `auto_seq` seconds newer than the setup's, so it is the newest without a tie.
            let at = setup.past + TimeDelta::days(1) + TimeDelta::seconds(self.auto_seq as i64);
            setup
                .fake
                .push_commit(OWNER, REPO, &branch, "Auto-selected change", at);
            new.push(task(
                &name,
                &PULLS,
                "createPullRequest",
                json!({"base": "main"}),
            )?);
            self.expected_heads.insert(name.clone(), branch);
            self.auto_pull = Some(name);
        }
        if !is_pending(&tasks, self.auto_merge.as_deref()).await? {
            self.auto_seq += 1;
            let head = format!("am-{}", self.auto_seq);
            let at = setup.past + TimeDelta::hours(1);
            setup
                .fake
                .push_commit(OWNER, REPO, &head, "Change to merge", at);
            let pull = NewPull {
                head,
                base: "main".into(),
                title: format!("Drill pull request am-{}", self.auto_seq),
                body: String::new(),
                draft: false,
            };
            setup
                .author
                .create_pull(
                    &RepoRef::new(OWNER, REPO),
                    &pull,
                    "<!-- ccplant-bench setup -->",
                )
                .await?;
            let name = format!("automerge-{}", self.auto_seq);
            new.push(task(
                &name,
                &MERGES,
                "approveAndMerge",
                json!({"mergeMethod": "squash"}),
            )?);
            self.auto_merge = Some(name);
        }
        for t in new {
            tasks.create(&PostParams::default(), &t).await?;
            self.tasks += 1;
        }
        for suffix in ["a", "b"] {
            let s = bare_session(&format!("s-{r}{suffix}"))?;
            sessions.create(&PostParams::default(), &s).await?;
            self.sessions += 1;
        }
        Ok(())
    }
}

/// Whether task `name` exists and has not finished.
async fn is_pending(tasks: &Api<GitHubTask>, name: Option<&str>) -> Result<bool> {
    let Some(name) = name else { return Ok(false) };
    let phase = tasks.get(name).await?.phase();
    Ok(!phase.is_some_and(GitHubTaskPhase::is_finished))
}

/// One kill, for the report.
#[derive(Debug)]
struct Kill {
    round: usize,
    /// `random`, `after_write` or `targeted_missed` (no write of the kind came: killed then).
    how: &'static str,
    kind: Option<WriteKind>,
    write: Option<String>,
    /// Seconds from ready to the kill.
    alive_s: f64,
    /// Writes GitHub applied while this start of the operator lived.
    github_writes: usize,
    /// Writes of this start of the operator in the apiserver's audit log.
    api_writes: usize,
}

pub async fn run(
    args: &super::DrillsArgs,
    cluster: &Cluster,
    bin: &Path,
    client: &Client,
    seed: u64,
    failures: &mut Failures,
) -> Result<Value> {
    let started = Instant::now();
    env::create_namespace(client, NS).await?;
    progress(format_args!(
        "crash injection: preparing the fake GitHub for {} kills",
        args.kills
    ));
    let setup = setup(client, args.kills).await?;
    let trap = Arc::new(Mutex::new(Trap::default()));
    let github_writes = Arc::new(AtomicUsize::new(0));
    {
        let (trap, writes, tracking) = (trap.clone(), github_writes.clone(), setup.tracking);
        setup.fake.on_write(move |request| {
            writes.fetch_add(1, Ordering::SeqCst);
            let Some(kind) = WriteKind::of(&request.method, &request.path, tracking) else {
                return;
            };
            let mut trap = lock(&trap);
            if let Some((pid, _)) = trap.armed.take_if(|(_, k)| *k == kind) {
                ccplant_testenv::process::send_signal(pid, libc::SIGKILL);
                trap.fired = Some((kind, format!("{} {}", request.method, request.path)));
            }
        });
    }
    let log = cluster.dir.join("logs/drill-crash-operator.log");
    let mut rng = Rng(seed);
    let mut feeder = Feeder::default();
    let mut kills = Vec::new();
    let mut starts = 0;
    for round in 0..args.kills {
        // Fed while the operator is down: it starts with a backlog.
        feeder.feed(round, client, &setup).await?;
        let target = (round % 2 == 1).then(|| TARGETS[(round / 2) % TARGETS.len()]);
        progress(format_args!(
            "crash injection: kill {}/{} ({})",
            round + 1,
            args.kills,
            target.map_or("at a random time", WriteKind::name)
        ));
        let mut audit = AuditReader::at_end(cluster.audit_log())?;
        let writes_before = github_writes.load(Ordering::SeqCst);
        let mut op = start(bin, cluster, &log, &setup.fake.url(), &mut starts)?;
        if let Some(kind) = target {
            lock(&trap).armed = Some((op.pid, kind));
        }
        let ready = match op.wait_ready(Duration::from_secs(60)).await {
            Ok(_) => Instant::now(),
            // The trap may spring as the caches sync, before /readyz was seen.
            Err(_) if lock(&trap).fired.is_some() => Instant::now(),
            Err(e) => return Err(e),
        };
        let how = match target {
            None => {
                let delay = MAX_RANDOM_DELAY.mul_f64(rng.unit());
                tokio::time::sleep_until((ready + delay).into()).await;
                if let Some(status) = op.exited()? {
                    bail!(
                        "the operator exited by itself ({status}) before kill {round}; log tail:\n{}",
                        log_tail(&log, 30)
                    );
                }
                op.signal(libc::SIGKILL)?;
                "random"
            }
            Some(_) => {
                let exited = op.wait_exit(TARGET_TIMEOUT).await?.is_some();
                let missed = lock(&trap).armed.take().is_some();
                if missed && exited {
                    bail!(
                        "the operator exited by itself before kill {round}; log tail:\n{}",
                        log_tail(&log, 30)
                    );
                }
                if missed {
                    op.signal(libc::SIGKILL)?;
                    "targeted_missed"
                } else {
                    "after_write"
                }
            }
        };
        let alive_s = ready.elapsed().as_secs_f64();
        if op.wait_exit(Duration::from_secs(10)).await?.is_none() {
            bail!("the operator outlived SIGKILL by 10 s");
        }
        let identity = format!("({})", operator_identity(starts));
        let api_writes = audit
            .read_new()?
            .iter()
            .filter(|e| e.user_agent.ends_with(&identity))
            .count();
        kills.push(Kill {
            round,
            how,
            kind: target,
            write: lock(&trap).fired.take().map(|(_, w)| w),
            alive_s,
            github_writes: github_writes.load(Ordering::SeqCst) - writes_before,
            api_writes,
        });
    }

    progress("crash injection: letting everything converge");
    let mut op = start(bin, cluster, &log, &setup.fake.url(), &mut starts)?;
    op.wait_ready(Duration::from_secs(60)).await?;
    let converge_started = Instant::now();
    let tasks_api: Api<GitHubTask> = Api::namespaced(client.clone(), NS);
    let (tasks, sessions) = loop {
        let tasks = tasks_api.list(&ListParams::default()).await?.items;
        let sessions = tally_sessions(client, NS).await?;
        let finished = tasks
            .iter()
            .all(|t| t.phase().is_some_and(GitHubTaskPhase::is_finished));
        if (finished && sessions.converged(feeder.sessions))
            || converge_started.elapsed() > CONVERGE_TIMEOUT
        {
            break (tasks, sessions);
        }
        op.ensure_running()?;
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let converge_s = converge_started.elapsed().as_secs_f64();
    // Settled: nothing more may be written. Count while the operator still runs, then stop it.
    let effects = count_effects(&setup, &tasks);
    let operator_exit = op.stop().await?;

    let mut out = report(&Outcome {
        kills: &kills,
        tasks: &tasks,
        sessions: &sessions,
        expected_sessions: feeder.sessions,
        effects: &effects,
        expected_heads: &feeder.expected_heads,
    });
    for problem in out["problems"].as_array().into_iter().flatten() {
        failures.push(format!(
            "crash injection: {}",
            problem.as_str().unwrap_or_default()
        ));
    }
    out["operator_starts"] = json!(starts);
    out["converge_after_last_kill_s"] = json!(round3(converge_s));
    out["wall_seconds"] = json!(round3(started.elapsed().as_secs_f64()));
    out["operator_exit"] = json!(operator_exit.to_string());
    out["github_calls"] = github_calls(&setup.fake.requests(), tasks.len());
    out["method"] = json!(
        "each round: create the round's tasks (createIssue with triggerComment, comment, createPullRequest, approveAndMerge; an auto-selecting createPullRequest and approveAndMerge when the previous one finished) and two sessions while the operator is down, start it, then SIGKILL it: even rounds uniformly within 1 s of /readyz, odd rounds from the fake GitHub's on_write hook right after it applied a write of the round's kind, before the response was sent (targeted_missed: none came within 30 s, killed then). writes_before_kill: GitHub writes applied plus apiserver writes (audit log, by the start's user agent) during that start. Afterwards one last start runs until every task finished and every session is Running with one pod; effects are counted on the fake by the marker in their body, merges by applied PUT .../merge per pull request"
    );
    Ok(out)
}

/// The identity of the operator's `start`-th start (its user agent ends with it in parentheses).
fn operator_identity(start: usize) -> String {
    format!("drill-crash-{start}")
}

/// Starts the operator (appending to `log`, a fresh identity per start).
fn start(
    bin: &Path,
    cluster: &Cluster,
    log: &PathBuf,
    github_url: &str,
    starts: &mut usize,
) -> Result<Operator> {
    *starts += 1;
    let identity = operator_identity(*starts);
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    writeln!(file, "=== ccplant-bench: start {starts} as {identity} ===")?;
    let args = [
        "--namespaces",
        NS,
        "--leader-elect=false",
        "--identity",
        &identity,
        "--github-api-url",
        github_url,
        "--log-format",
        "json",
        "--log-level",
        "info",
    ];
    Operator::start_with(bin, &cluster.kubeconfig, &args, log.clone(), true)
}

/// Every marked issue, comment, pull request and review on the fake, and every applied merge.
fn found_effects(fake: &FakeGitHub) -> Vec<(Effect, String)> {
    let issues = fake.issues(OWNER, REPO);
    let pulls = fake.pulls(OWNER, REPO);
    let number = |v: &Value| v["number"].as_u64();
    let mut found = Vec::new();
    let mut add = |effect, items: &[Value]| {
        for item in items {
            if let Some(key) = item["body"].as_str().and_then(marker_of) {
                found.push((effect, key.to_string()));
            }
        }
    };
    add(Effect::Issue, &issues);
    add(Effect::PullRequest, &pulls);
    for n in issues.iter().chain(&pulls).filter_map(number) {
        add(Effect::Comment, &fake.comments(OWNER, REPO, n));
    }
    for n in pulls.iter().filter_map(number) {
        add(Effect::Review, &fake.reviews(OWNER, REPO, n));
    }
    for r in fake.requests() {
        if WriteKind::of(&r.method, &r.path, 0) == Some(WriteKind::Merge)
            && (200..300).contains(&r.status)
            && let Some(n) = r.path.split('/').nth(5).and_then(|n| n.parse().ok())
        {
            found.push((Effect::Merge, merge_key(n)));
        }
    }
    found
}

/// The effects each Succeeded task must have produced exactly once.
fn expected_effects(tasks: &[GitHubTask]) -> Vec<Expected> {
    let mut expected = Vec::new();
    for t in tasks {
        if t.phase() != Some(GitHubTaskPhase::Succeeded) {
            continue;
        }
        let name = t.metadata.name.clone().unwrap_or_default();
        let key = format!(
            "{NS}/{name} {}",
            t.metadata.uid.as_deref().unwrap_or_default()
        );
        let mut add = |effect, key: &str| {
            expected.push(Expected {
                task: name.clone(),
                effect,
                key: key.to_string(),
            });
        };
        let spec = &t.spec;
        if let Some(issue) = &spec.create_issue {
            add(Effect::Issue, &key);
            if issue.trigger_comment.is_some() {
                add(Effect::Comment, &key);
            }
        } else if spec.comment.is_some() {
            add(Effect::Comment, &key);
        } else if spec.create_pull_request.is_some() {
            add(Effect::PullRequest, &key);
        } else if let Some(merge) = &spec.approve_and_merge {
            if merge.approve {
                add(Effect::Review, &key);
            }
            let pull = result(t).and_then(|r| r.pull_request_number).unwrap_or(0);
            add(Effect::Merge, &merge_key(pull as u64));
        }
    }
    expected
}

fn result(t: &GitHubTask) -> Option<&ccplant_api::TaskResult> {
    t.status.as_ref().and_then(|s| s.result.as_ref())
}

/// Counts the effects on the fake against the tasks' expectations.
fn count_effects(setup: &Setup, tasks: &[GitHubTask]) -> EffectTally {
    EffectTally::of(&expected_effects(tasks), &found_effects(&setup.fake))
}

/// GitHub calls by endpoint, in total and per task.
fn github_calls(requests: &[RecordedRequest], tasks: usize) -> Value {
    let mut by_endpoint: BTreeMap<String, usize> = BTreeMap::new();
    for r in requests {
        let mut template = stats::endpoint_template(&r.path);
        // A commit by SHA or branch name (auto-selection reads each branch's head commit).
        if let Some(i) = template.find("/commits/") {
            template.replace_range(i + "/commits/".len().., "{ref}");
        }
        let endpoint = format!("{} {template}", r.method);
        *by_endpoint.entry(endpoint).or_insert(0) += 1;
    }
    json!({
        "total": requests.len(),
        "per_task": round3(requests.len() as f64 / tasks.max(1) as f64),
        "by_endpoint": by_endpoint,
    })
}

/// What the crash drill saw, for its report.
struct Outcome<'a> {
    kills: &'a [Kill],
    tasks: &'a [GitHubTask],
    sessions: &'a SessionTally,
    expected_sessions: usize,
    effects: &'a EffectTally,
    expected_heads: &'a BTreeMap<String, String>,
}

/// The report, with `problems`: every failed check (duplicates, missing effects, tasks not
/// Succeeded, sessions not converged, auto-selections that changed).
fn report(o: &Outcome) -> Value {
    let mut problems = Vec::new();
    let mut kills: BTreeMap<String, usize> = BTreeMap::new();
    let mut alive: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut writes: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for k in o.kills {
        let key = match k.kind {
            Some(kind) => format!("{}:{}", k.how, kind.name()),
            None => k.how.to_string(),
        };
        *kills.entry(key).or_insert(0) += 1;
        alive.entry(k.how).or_default().push(k.alive_s);
        writes
            .entry(k.how)
            .or_default()
            .push((k.github_writes + k.api_writes) as f64);
    }
    let mut phases: BTreeMap<String, usize> = BTreeMap::new();
    let mut not_succeeded = Vec::new();
    for t in o.tasks {
        let phase = t.phase().map_or("None", GitHubTaskPhase::as_str);
        *phases.entry(phase.to_string()).or_insert(0) += 1;
        if t.phase() != Some(GitHubTaskPhase::Succeeded) {
            not_succeeded.push(json!({
                "task": t.metadata.name,
                "phase": phase,
                "message": t.status.as_ref().and_then(|s| s.message.clone()),
            }));
        }
    }
    if !not_succeeded.is_empty() {
        problems.push(format!(
            "{} of {} tasks not Succeeded, e.g. {}",
            not_succeeded.len(),
            o.tasks.len(),
            not_succeeded[0]
        ));
    }
    if !o.sessions.converged(o.expected_sessions) {
        problems.push(format!(
            "sessions not converged ({} expected): {}",
            o.expected_sessions,
            o.sessions.report()
        ));
    }
    let by_name: BTreeMap<&str, &GitHubTask> = o
        .tasks
        .iter()
        .filter_map(|t| Some((t.metadata.name.as_deref()?, t)))
        .collect();
    let head_mismatches: Vec<Value> = o
        .expected_heads
        .iter()
        .filter_map(|(task, branch)| {
            let picked = by_name
                .get(task.as_str())
                .and_then(|t| result(t))
                .and_then(|r| r.head_branch.clone());
            (picked.as_deref() != Some(branch.as_str()))
                .then(|| json!({"task": task, "expected": branch, "picked": picked}))
        })
        .collect();
    if !head_mismatches.is_empty() {
        problems.push(format!(
            "auto-selected head branches differ from the newest: {head_mismatches:?}"
        ));
    }
    let mut merged_by: BTreeMap<i64, Vec<&str>> = BTreeMap::new();
    for (name, t) in &by_name {
        if t.spec.approve_and_merge.is_some()
            && let Some(n) = result(t).and_then(|r| r.pull_request_number)
        {
            merged_by.entry(n).or_default().push(name);
        }
    }
    let shared: BTreeMap<i64, Vec<&str>> =
        merged_by.into_iter().filter(|(_, t)| t.len() > 1).collect();
    if !shared.is_empty() {
        problems.push(format!(
            "approveAndMerge tasks acting on the same pull request: {shared:?}"
        ));
    }
    let duplicates = o.effects.duplicate_count();
    if duplicates > 0 {
        problems.push(format!(
            "{duplicates} duplicate GitHub effects: {}",
            json!(o.effects.duplicates)
        ));
    }
    if !o.effects.missing.is_empty() {
        problems.push(format!(
            "Succeeded tasks whose effect GitHub does not hold: {:?}",
            o.effects.missing
        ));
    }
    json!({
        "kills": {
            "total": o.kills.len(),
            "by_kind": kills,
            "seconds_after_ready": alive.iter().map(|(k, v)| (*k, summary3(v))).collect::<BTreeMap<_, _>>(),
            "writes_before_kill": writes.iter().map(|(k, v)| (*k, summary3(v))).collect::<BTreeMap<_, _>>(),
            "sequence": o.kills.iter().map(|k| format!(
                "{} {}{} {:.2} s after ready, {} GitHub and {} apiserver writes{}",
                k.round,
                k.how,
                k.kind.map(|kind| format!(":{}", kind.name())).unwrap_or_default(),
                k.alive_s,
                k.github_writes,
                k.api_writes,
                k.write.as_deref().map(|w| format!(", killed after {w}")).unwrap_or_default(),
            )).collect::<Vec<_>>(),
        },
        "tasks": {
            "total": o.tasks.len(),
            "by_phase": phases,
            "auto_selected_pull_requests": o.expected_heads.len(),
            "auto_selected_head_mismatches": head_mismatches,
            "not_succeeded_examples": not_succeeded.into_iter().take(10).collect::<Vec<_>>(),
        },
        "sessions": o.sessions.report(),
        "github_effects_found": o.effects.found,
        "duplicates": {
            "total": duplicates,
            "examples": o.effects.duplicates.iter().take(20).collect::<Vec<_>>(),
        },
        "missing_effects": {
            "total": o.effects.missing.len(),
            "examples": o.effects.missing.iter().take(20).map(|(t, e)| json!({"task": t, "effect": e})).collect::<Vec<_>>(),
        },
        "problems": problems,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn writes_are_classified_by_endpoint_and_issue() {
        let of = |m: &str, p: &str| WriteKind::of(m, p, 1);
        assert_eq!(
            of("POST", "/repos/octo/hello/issues"),
            Some(WriteKind::Issue)
        );
        assert_eq!(
            of("POST", "/repos/octo/hello/issues/1/comments"),
            Some(WriteKind::Comment)
        );
        assert_eq!(
            of("POST", "/repos/octo/hello/issues/12/comments"),
            Some(WriteKind::TriggerComment)
        );
        assert_eq!(
            of("POST", "/repos/octo/hello/pulls"),
            Some(WriteKind::PullRequest)
        );
        assert_eq!(
            of("POST", "/repos/octo/hello/pulls/3/reviews"),
            Some(WriteKind::Review)
        );
        assert_eq!(
            of("PUT", "/repos/octo/hello/pulls/3/merge"),
            Some(WriteKind::Merge)
        );
        assert_eq!(of("GET", "/repos/octo/hello/pulls/3/merge"), None);
        assert_eq!(of("PATCH", "/repos/octo/hello/issues/3"), None);
        assert_eq!(of("POST", "/app/installations/7/access_tokens"), None);
    }

    #[test]
    fn github_calls_are_counted_by_endpoint_with_commits_by_ref() {
        let call = |method: &str, path: &str| RecordedRequest {
            method: method.into(),
            path: path.into(),
            query: String::new(),
            body: None,
            auth: Some("token".into()),
            status: 200,
            at: std::time::SystemTime::UNIX_EPOCH,
        };
        let calls = [
            call(
                "GET",
                "/repos/octo/hello/commits/0260dc46c01dd316f6896b9c3308399e7b055ef2",
            ),
            call("GET", "/repos/octo/hello/commits/auto-3"),
            call("GET", "/repos/octo/hello/branches"),
            call("POST", "/repos/octo/hello/pulls/12/reviews"),
        ];
        let report = github_calls(&calls, 2);
        assert_eq!(report["total"], 4);
        assert_eq!(report["per_task"], 2.0);
        assert_eq!(
            report["by_endpoint"],
            json!({
                "GET /repos/{owner}/{repo}/branches": 1,
                "GET /repos/{owner}/{repo}/commits/{ref}": 2,
                "POST /repos/{owner}/{repo}/pulls/{n}/reviews": 1,
            })
        );
    }

    fn task_with(name: &str, spec: Value, status: Value) -> GitHubTask {
        serde_json::from_value(json!({
            "apiVersion": "ccplant.io/v1alpha1", "kind": "GitHubTask",
            "metadata": {"name": name, "uid": format!("u-{name}")},
            "spec": spec,
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn succeeded_tasks_expect_their_effects() {
        let done = json!({"phase": "Succeeded", "result": {"pullRequestNumber": 7}});
        let tasks = vec![
            task_with(
                "issue-0",
                json!({"repository": "o/r", "createIssue": {"title": "t", "triggerComment": "go"}}),
                done.clone(),
            ),
            task_with(
                "merge-0",
                json!({"repository": "o/r", "approveAndMerge": {"pullRequest": 7}}),
                done.clone(),
            ),
            task_with(
                "comment-0",
                json!({"repository": "o/r", "comment": {"issue": 1, "body": "b"}}),
                json!({"phase": "Running"}),
            ),
        ];
        let expected: Vec<(String, Effect, String)> = expected_effects(&tasks)
            .into_iter()
            .map(|e| (e.task, e.effect, e.key))
            .collect();
        let key = |n: &str| format!("{NS}/{n} u-{n}");
        assert_eq!(
            expected,
            vec![
                ("issue-0".into(), Effect::Issue, key("issue-0")),
                ("issue-0".into(), Effect::Comment, key("issue-0")),
                ("merge-0".into(), Effect::Review, key("merge-0")),
                ("merge-0".into(), Effect::Merge, "#7".into()),
            ]
        );
    }
}
