//! Exactly-once under faults, for each write type (issue, comment, pull request, review,
//! merge): (a) GitHub applies the write and the response is lost; (b) the operator process is
//! SIGKILLed right after GitHub applied the write, before its status write. Each case runs
//! `RUNS` tasks in one go; afterwards exactly one effect per task exists.

use crate::harness::*;
use ccplant_api::{GitHubTask, GitHubTaskPhase};
use ccplant_testenv::TestEnv;
use ccplant_testenv::fake_github::{FakeGitHub, Fault, FaultKind};
use chrono::{TimeZone, Utc};
use kube::api::ListParams;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const RUNS: usize = 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Write {
    Issue,
    Comment,
    PullRequest,
    Review,
    Merge,
}

impl Write {
    fn method(self) -> &'static str {
        match self {
            Write::Merge => "PUT",
            _ => "POST",
        }
    }

    fn path_suffix(self) -> &'static str {
        match self {
            Write::Issue => "/issues",
            Write::Comment => "/comments",
            Write::PullRequest => "/pulls",
            Write::Review => "/reviews",
            Write::Merge => "/merge",
        }
    }

    fn matches(self, method: &str, path: &str) -> bool {
        method == self.method() && path.ends_with(self.path_suffix())
    }
}

/// Prepares the repository and returns one task spec per run.
async fn scenario(write: Write, fake: &FakeGitHub) -> Vec<Value> {
    let gh = json!({"secretRef": {"name": SECRET}});
    let t0 = Utc.with_ymd_and_hms(2026, 11, 1, 10, 0, 0).unwrap();
    fake.add_token("ghp_alice", "alice");
    let mut specs = Vec::new();
    for i in 0..RUNS {
        let spec = match write {
            Write::Issue => {
                json!({"repository": "octo/hello", "github": gh, "createIssue": {"title": format!("issue {i}")}})
            }
            Write::Comment => {
                json!({"repository": "octo/hello", "github": gh, "comment": {"issue": 1, "body": format!("comment {i}")}})
            }
            Write::PullRequest => {
                fake.push_commit(
                    "octo",
                    "hello",
                    &format!("b{i}"),
                    &format!("Change {i}"),
                    t0,
                );
                json!({"repository": "octo/hello", "github": gh, "createPullRequest": {"head": format!("b{i}"), "title": format!("pr {i}")}})
            }
            Write::Review | Write::Merge => {
                fake.push_commit(
                    "octo",
                    "hello",
                    &format!("m{i}"),
                    &format!("Change {i}"),
                    t0,
                );
                let pull =
                    open_pull_as(fake, "ghp_alice", &format!("m{i}"), &format!("pr {i}")).await;
                json!({"repository": "octo/hello", "github": gh, "approveAndMerge": {"pullRequest": pull.number, "mergeMethod": "squash"}})
            }
        };
        specs.push(spec);
    }
    if write == Write::Comment {
        open_issue_as(fake, "ghp_alice").await;
    }
    fake.clear_requests();
    specs
}

/// Effects per task marker (or per pull request for merges): must all be exactly 1.
fn effects(write: Write, fake: &FakeGitHub, tasks: &[GitHubTask], ns: &str) -> Vec<usize> {
    let markers: Vec<String> = tasks
        .iter()
        .map(|t| {
            format!(
                "<!-- ccplant:task {ns}/{} {} -->",
                t.metadata.name.as_deref().unwrap(),
                t.metadata.uid.as_deref().unwrap()
            )
        })
        .collect();
    let count_bodies = |items: Vec<Value>, marker: &str| {
        items
            .iter()
            .filter(|v| v["body"].as_str().unwrap_or_default().contains(marker))
            .count()
    };
    tasks
        .iter()
        .zip(&markers)
        .map(|(t, marker)| match write {
            Write::Issue => count_bodies(fake.issues("octo", "hello"), marker),
            Write::Comment => count_bodies(fake.comments("octo", "hello", 1), marker),
            Write::PullRequest => count_bodies(fake.pulls("octo", "hello"), marker),
            Write::Review => {
                let n = t
                    .spec
                    .approve_and_merge
                    .as_ref()
                    .unwrap()
                    .pull_request
                    .unwrap();
                count_bodies(fake.reviews("octo", "hello", n as u64), marker)
            }
            Write::Merge => {
                let n = t
                    .spec
                    .approve_and_merge
                    .as_ref()
                    .unwrap()
                    .pull_request
                    .unwrap();
                let path = format!("/repos/octo/hello/pulls/{n}/merge");
                let pull = fake
                    .pulls("octo", "hello")
                    .into_iter()
                    .find(|p| p["number"] == n)
                    .unwrap();
                assert_eq!(pull["merged"], true, "pull request #{n} merged");
                // Merges GitHub applied: answered 200, or applied and then dropped (status 0;
                // the only drop these tests inject is DropAfterApply). A repeated merge is
                // refused with 405 and applies nothing.
                fake.requests()
                    .iter()
                    .filter(|r| {
                        r.method == "PUT" && r.path == path && (r.status == 200 || r.status == 0)
                    })
                    .count()
            }
        })
        .collect()
}

async fn create_all(
    ns: &ccplant_testenv::TestNamespace,
    specs: Vec<Value>,
    retry: Value,
) -> Vec<String> {
    let mut names = Vec::new();
    for (i, mut spec) in specs.into_iter().enumerate() {
        spec["retry"] = retry.clone();
        let name = format!("t{i}");
        create(ns, &task(&name, spec)).await;
        names.push(name);
    }
    names
}

async fn all_tasks(ns: &ccplant_testenv::TestNamespace) -> Vec<GitHubTask> {
    let mut tasks = ns
        .api::<GitHubTask>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    tasks.sort_by_key(|t| t.metadata.name.clone());
    tasks
}

async fn dropped_responses(write: Write) {
    install_crds();
    TestEnv::global()
        .with_namespace(&format!("drop-{}", format!("{write:?}").to_lowercase()), |ns| async move {
            let fake = fake_with_repo().await;
            let specs = scenario(write, &fake).await;
            fake.inject(
                Fault::new(FaultKind::DropAfterApply)
                    .method(write.method())
                    .path_contains(write.path_suffix())
                    .times(RUNS as u32),
            );
            token_secret(&ns).await;
            let mut op = Operator::new(&ns.name, &fake.url(), &[]);
            op.start();
            let names = create_all(&ns, specs, json!({"backoff": "1s", "maxAttempts": 5})).await;
            for name in &names {
                wait_phase(&ns, name, GitHubTaskPhase::Succeeded, Duration::from_secs(120)).await;
            }
            let tasks = all_tasks(&ns).await;
            let dropped = fake.requests().iter().filter(|r| write.matches(&r.method, &r.path) && r.status == 0).count();
            let counts = effects(write, &fake, &tasks, &ns.name);
            eprintln!("{write:?}: {dropped} responses dropped after the write; effects per task {counts:?}");
            assert_eq!(dropped, RUNS, "every task's first {write:?} lost its response");
            assert_eq!(counts, vec![1; RUNS], "exactly one {write:?} per task");
        })
        .await;
}

async fn killed_after_write(write: Write) {
    install_crds();
    TestEnv::global()
        .with_namespace(&format!("kill-{}", format!("{write:?}").to_lowercase()), |ns| async move {
            let fake = fake_with_repo().await;
            let specs = scenario(write, &fake).await;
            token_secret(&ns).await;
            let pid: Arc<Mutex<Option<i32>>> = Arc::new(Mutex::new(None));
            let kills = Arc::new(AtomicU32::new(0));
            {
                let pid = pid.clone();
                let kills = kills.clone();
                fake.on_write(move |req| {
                    if write.matches(&req.method, &req.path)
                        && let Some(p) = pid.lock().unwrap().take()
                    {
                        sigkill(p);
                        kills.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
            // One reconcile at a time, so each kill interrupts exactly one write.
            let mut op = Operator::new(&ns.name, &fake.url(), &["--task-concurrency", "1"]);
            let names = create_all(&ns, specs, json!({"backoff": "1s", "maxAttempts": 10})).await;
            let deadline = Instant::now() + Duration::from_secs(240);
            loop {
                if op.exited() {
                    // Kill only while kills are still needed: one per task.
                    if (kills.load(Ordering::SeqCst) as usize) < RUNS {
                        op.start();
                        *pid.lock().unwrap() = op.pid();
                    } else {
                        op.start();
                    }
                }
                let tasks = all_tasks(&ns).await;
                if tasks.iter().all(|t| t.phase() == Some(GitHubTaskPhase::Succeeded)) && tasks.len() == names.len() {
                    break;
                }
                assert!(
                    tasks.iter().all(|t| t.phase() != Some(GitHubTaskPhase::Failed)),
                    "a task failed: {:#?}",
                    tasks.iter().map(|t| (&t.metadata.name, &t.status)).collect::<Vec<_>>()
                );
                assert!(Instant::now() < deadline, "tasks not done after 240s: {:#?}\n{}", tasks.iter().map(|t| (&t.metadata.name, &t.status)).collect::<Vec<_>>(), op.log_text());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let tasks = all_tasks(&ns).await;
            let counts = effects(write, &fake, &tasks, &ns.name);
            let killed = kills.load(Ordering::SeqCst);
            eprintln!("{write:?}: operator killed {killed} times right after the write ({} starts); effects per task {counts:?}", op.starts);
            assert_eq!(killed as usize, RUNS, "the operator was killed right after each task's write");
            assert_eq!(counts, vec![1; RUNS], "exactly one {write:?} per task after {killed} kills");
        })
        .await;
}

#[tokio::test]
async fn issue_is_created_once_when_the_response_is_lost() {
    dropped_responses(Write::Issue).await;
}
#[tokio::test]
async fn comment_is_created_once_when_the_response_is_lost() {
    dropped_responses(Write::Comment).await;
}
#[tokio::test]
async fn pull_request_is_opened_once_when_the_response_is_lost() {
    dropped_responses(Write::PullRequest).await;
}
#[tokio::test]
async fn review_is_submitted_once_when_the_response_is_lost() {
    dropped_responses(Write::Review).await;
}
#[tokio::test]
async fn merge_happens_once_when_the_response_is_lost() {
    dropped_responses(Write::Merge).await;
}
#[tokio::test]
async fn issue_is_created_once_when_the_operator_is_killed_after_the_write() {
    killed_after_write(Write::Issue).await;
}
#[tokio::test]
async fn comment_is_created_once_when_the_operator_is_killed_after_the_write() {
    killed_after_write(Write::Comment).await;
}
#[tokio::test]
async fn pull_request_is_opened_once_when_the_operator_is_killed_after_the_write() {
    killed_after_write(Write::PullRequest).await;
}
#[tokio::test]
async fn review_is_submitted_once_when_the_operator_is_killed_after_the_write() {
    killed_after_write(Write::Review).await;
}
#[tokio::test]
async fn merge_happens_once_when_the_operator_is_killed_after_the_write() {
    killed_after_write(Write::Merge).await;
}
