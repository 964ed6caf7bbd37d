//! The GitHubTask controller against the real control plane and the fake GitHub, with the
//! operator running as its own process.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod exactly_once;
mod harness;
mod policy;

use ccplant_api::{GitHubTask, GitHubTaskPhase};
use ccplant_testenv::fake_github::{FakeGitHub, Fault, FaultKind};
use ccplant_testenv::{TestEnv, wait_for};
use chrono::{TimeZone, Utc};
use harness::*;
use k8s_openapi::api::core::v1::Secret;
use kube::api::PostParams;
use serde_json::json;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

/// The writes the operator made: (method, path), GETs left out.
fn writes(fake: &FakeGitHub) -> Vec<(String, String)> {
    fake.requests()
        .into_iter()
        .filter(|r| r.method != "GET")
        .map(|r| (r.method, r.path))
        .collect()
}

fn marker_of(t: &GitHubTask, ns: &str) -> String {
    format!(
        "<!-- ccplant:task {ns}/{} {} -->",
        t.metadata.name.as_deref().unwrap(),
        t.metadata.uid.as_deref().unwrap()
    )
}

#[tokio::test]
async fn create_issue_with_trigger_comment_makes_two_writes_and_records_the_result() {
    install_crds();
    TestEnv::global()
        .with_namespace("ght-issue", |ns| async move {
            let fake = fake_with_repo().await;
            token_secret(&ns).await;
            let mut op = Operator::new(&ns.name, &fake.url(), &[]);
            op.start();
            let created = create(
                &ns,
                &task(
                    "issue",
                    json!({
                        "repository": "octo/hello",
                        "github": { "secretRef": { "name": SECRET } },
                        "createIssue": {
                            "title": "Add a /healthz endpoint",
                            "body": "The load balancer needs it.",
                            "labels": ["enhancement"],
                            "triggerComment": "@claude implement this",
                        },
                    }),
                ),
            )
            .await;
            let done = wait_phase(&ns, "issue", GitHubTaskPhase::Succeeded, T).await;
            let status = done.status.clone().unwrap();
            let result = status.result.clone().unwrap();
            assert_eq!(status.attempts, 1);
            assert_eq!(result.issue_number, Some(1));
            assert_eq!(result.url.as_deref(), fake.issues("octo", "hello")[0]["html_url"].as_str());
            assert_eq!(result.issue_url, result.url);
            assert!(result.comment_id.is_some());
            assert_eq!(ready(&done).0, "True");

            assert_eq!(
                writes(&fake),
                [
                    ("POST".to_string(), "/repos/octo/hello/issues".to_string()),
                    ("POST".to_string(), "/repos/octo/hello/issues/1/comments".to_string()),
                ]
            );
            let marker = marker_of(&created, &ns.name);
            let issue = &fake.issues("octo", "hello")[0];
            assert_eq!(issue["title"], "Add a /healthz endpoint");
            assert_eq!(issue["labels"][0]["name"], "enhancement");
            assert_eq!(issue["body"], format!("The load balancer needs it.\n\n{marker}"));
            let comments = fake.comments("octo", "hello", 1);
            assert_eq!(comments.len(), 1);
            assert_eq!(comments[0]["body"], format!("@claude implement this\n\n{marker}"));
            assert_eq!(result.comment_id, comments[0]["id"].as_i64());

            wait_event(&ns, "GitHubTask", "issue", |(t, r, _)| t == "Normal" && r == "Succeeded").await;

            // A restarted operator never acts on a Succeeded task again: a second task is the
            // barrier proving the restarted operator has reconciled what exists.
            op.kill().await;
            let before = fake.requests().len();
            op.start();
            create(
                &ns,
                &task("barrier", json!({"repository": "octo/hello", "github": {"secretRef": {"name": SECRET}}, "comment": {"issue": 1, "body": "barrier"}})),
            )
            .await;
            wait_phase(&ns, "barrier", GitHubTaskPhase::Succeeded, T).await;
            let after: Vec<_> = fake.requests()[before..].iter().map(|r| format!("{} {}", r.method, r.path)).collect();
            assert_eq!(after, ["POST /repos/octo/hello/issues/1/comments"], "only the barrier's write");
            let again = ns.api::<GitHubTask>().get("issue").await.unwrap();
            assert_eq!(again.metadata.resource_version, done.metadata.resource_version, "no status write");
        })
        .await;
}

#[tokio::test]
async fn create_pull_request_picks_the_newest_branch_and_titles_it_from_the_head_commit() {
    install_crds();
    TestEnv::global()
        .with_namespace("ght-pr", |ns| async move {
            let fake = fake_with_repo().await;
            let t0 = Utc.with_ymd_and_hms(2026, 11, 1, 10, 0, 0).unwrap();
            // 300 older branches: head selection costs the same few calls whatever their count.
            for i in 0..300 {
                fake.push_commit("octo", "hello", &format!("old-{i:03}"), "Older", t0 - chrono::Duration::minutes(300 - i));
            }
            fake.clear_requests();
            fake.push_commit("octo", "hello", "feature-old", "Old work", t0);
            fake.push_commit("octo", "hello", "feature-new", "Add healthz endpoint\n\nWith tests.", t0 + chrono::Duration::hours(2));
            fake.push_commit("octo", "hello", "feature-mid", "Middle", t0 + chrono::Duration::hours(1));
            token_secret(&ns).await;
            let mut op = Operator::new(&ns.name, &fake.url(), &[]);
            op.start();
            let created = create(
                &ns,
                &task("pr", json!({"repository": "octo/hello", "github": {"secretRef": {"name": SECRET}}, "createPullRequest": {"body": "Adds /healthz."}})),
            )
            .await;
            let done = wait_phase(&ns, "pr", GitHubTaskPhase::Succeeded, T).await;
            let result = done.status.clone().unwrap().result.unwrap();
            assert_eq!(result.head_branch.as_deref(), Some("feature-new"));
            assert_eq!(result.base_branch.as_deref(), Some("main"));
            assert_eq!(result.pull_request_number, Some(1));
            assert_eq!(result.url.as_deref(), fake.pulls("octo", "hello")[0]["html_url"].as_str());
            assert_eq!(writes(&fake), [("POST".to_string(), "/repos/octo/hello/pulls".to_string())]);
            // The default branch, one page of activity, the head commit (the title): 3 calls.
            let reads: Vec<String> = fake.requests().into_iter().filter(|r| r.method == "GET").map(|r| r.path).collect();
            eprintln!("head selection over 303 branches: {} GitHub calls ({reads:?})", reads.len());
            assert_eq!(
                reads,
                ["/repos/octo/hello", "/repos/octo/hello/activity", "/repos/octo/hello/commits/feature-new"]
            );
            let post = fake.requests().into_iter().find(|r| r.method == "POST").unwrap();
            assert_eq!(
                post.body.unwrap(),
                json!({
                    "head": "feature-new",
                    "base": "main",
                    "title": "Add healthz endpoint",
                    "body": format!("Adds /healthz.\n\n{}", marker_of(&created, &ns.name)),
                    "draft": false,
                })
            );
        })
        .await;
}

#[tokio::test]
async fn approve_and_merge_takes_the_newest_open_pull_request_by_an_allowed_author_and_merges_the_approved_head()
 {
    install_crds();
    TestEnv::global()
        .with_namespace("ght-merge", |ns| async move {
            let fake = fake_with_repo().await;
            let t0 = Utc.with_ymd_and_hms(2026, 11, 1, 10, 0, 0).unwrap();
            fake.push_commit("octo", "hello", "one", "One", t0);
            fake.push_commit("octo", "hello", "two", "Two", t0);
            fake.add_token("ghp_alice", "alice");
            open_pull_as(&fake, "ghp_alice", "one", "First").await;
            let head_sha = open_pull_as(&fake, "ghp_alice", "two", "Second").await.head.sha;
            fake.clear_requests();
            token_secret(&ns).await;
            let mut op = Operator::new(&ns.name, &fake.url(), &[]);
            op.start();
            create(
                &ns,
                &task("merge", json!({"repository": "octo/hello", "github": {"secretRef": {"name": SECRET}}, "approveAndMerge": {"mergeMethod": "squash", "authors": ["alice"]}})),
            )
            .await;
            let done = wait_phase(&ns, "merge", GitHubTaskPhase::Succeeded, T).await;
            let result = done.status.clone().unwrap().result.unwrap();
            assert_eq!(result.pull_request_number, Some(2));
            assert_eq!(result.merged, Some(true));
            assert_eq!(result.head_sha.as_deref(), Some(head_sha.as_str()));
            assert!(result.review_id.is_some() && result.merge_commit_sha.is_some());
            assert_eq!(
                writes(&fake),
                [
                    ("POST".to_string(), "/repos/octo/hello/pulls/2/reviews".to_string()),
                    ("PUT".to_string(), "/repos/octo/hello/pulls/2/merge".to_string()),
                ]
            );
            let reqs = fake.requests();
            let review = reqs.iter().find(|r| r.method == "POST").unwrap().body.clone().unwrap();
            assert_eq!(review["event"], "APPROVE");
            assert_eq!(review["commit_id"], head_sha.as_str());
            let merge = reqs.iter().find(|r| r.method == "PUT").unwrap().body.clone().unwrap();
            assert_eq!(merge["sha"], head_sha.as_str());
            assert_eq!(merge["merge_method"], "squash");
            assert_eq!(fake.pulls("octo", "hello")[0]["merged"], false, "the older PR stays open");
        })
        .await;
}

#[tokio::test]
async fn user_errors_end_in_the_phase_reason_and_message_a_user_sees() {
    install_crds();
    TestEnv::global()
        .with_namespace("ght-errors", |ns| async move {
            let fake = fake_with_repo().await;
            token_secret(&ns).await;
            let mut op = Operator::new(&ns.name, &fake.url(), &[]);
            op.start();
            let gh = json!({"secretRef": {"name": SECRET}});
            let cases = [
                (
                    "no-owner",
                    json!({"repository": "hello", "github": gh, "comment": {"issue": 1, "body": "x"}}),
                    "InvalidSpec",
                    "repository \"hello\" names no owner and the operator has no --default-github-owner".to_string(),
                ),
                (
                    "unknown-repo",
                    json!({"repository": "octo/nope", "github": gh, "createIssue": {"title": "x"}}),
                    "NotFound",
                    "GitHub refused the request (404): Not Found (POST /repos/octo/nope/issues)".to_string(),
                ),
                (
                    "bad-head",
                    json!({"repository": "octo/hello", "github": gh, "createPullRequest": {"head": "no-such-branch", "title": "x"}}),
                    "ValidationFailed",
                    "GitHub refused the request (422): Validation Failed: PullRequest.head: invalid (POST /repos/octo/hello/pulls)".to_string(),
                ),
            ];
            for (name, spec, _, _) in &cases {
                create(&ns, &task(name, spec.clone())).await;
            }
            for (name, _, reason, message) in &cases {
                let failed = wait_phase(&ns, name, GitHubTaskPhase::Failed, T).await;
                let (status, r, m) = ready(&failed);
                assert_eq!((status.as_str(), r.as_str()), ("False", *reason), "{name}: {m}");
                assert!(m.starts_with(message.as_str()), "{name}: message {m:?} should start with {message:?}");
                assert_eq!(failed.status.as_ref().unwrap().message.as_deref(), Some(m.as_str()));
                assert_eq!(tools_say(&failed), "Failed/Degraded", "{name}");
                wait_event(&ns, "GitHubTask", name, |(t, er, _)| t == "Warning" && er == reason).await;
            }
            let posts = writes(&fake);
            assert_eq!(posts.len(), 2, "one refused write each for unknown-repo and bad-head, none retried: {posts:?}");
        })
        .await;
}

#[tokio::test]
async fn a_missing_secret_keeps_the_task_pending_until_it_is_created() {
    install_crds();
    TestEnv::global()
        .with_namespace("ght-secret", |ns| async move {
            let fake = fake_with_repo().await;
            let mut op = Operator::new(&ns.name, &fake.url(), &[]);
            op.start();
            create(&ns, &task("t", json!({"repository": "octo/hello", "github": {"secretRef": {"name": SECRET}}, "createIssue": {"title": "x"}}))).await;
            let pending = wait_phase(&ns, "t", GitHubTaskPhase::Pending, T).await;
            assert_eq!(
                ready(&pending),
                ("False".into(), "SecretNotFound".into(), format!("Secret {}/{SECRET} not found", ns.name))
            );
            wait_event(&ns, "GitHubTask", "t", |(t, r, _)| t == "Warning" && r == "SecretNotFound").await;
            assert!(fake.requests().is_empty());
            assert_eq!(tools_say(&pending), "InProgress/Progressing");
            let created = std::time::Instant::now();
            token_secret(&ns).await;
            wait_phase(&ns, "t", GitHubTaskPhase::Succeeded, Duration::from_secs(40)).await;
            eprintln!("secret created -> Succeeded in {:.1}s", created.elapsed().as_secs_f64());
        })
        .await;
}

#[tokio::test]
async fn a_rate_limit_waits_for_the_reset_without_consuming_an_attempt() {
    install_crds();
    TestEnv::global()
        .with_namespace("ght-ratelimit", |ns| async move {
            let fake = fake_with_repo().await;
            fake.inject(
                Fault::new(FaultKind::PrimaryRateLimit { reset_in: Duration::from_secs(3) })
                    .method("POST")
                    .path_contains("/issues"),
            );
            token_secret(&ns).await;
            let mut op = Operator::new(&ns.name, &fake.url(), &[]);
            op.start();
            create(&ns, &task("t", json!({"repository": "octo/hello", "github": {"secretRef": {"name": SECRET}}, "createIssue": {"title": "x"}}))).await;
            let limited = wait_for(&ns.api::<GitHubTask>(), "t", T, "RateLimited=True", |t: &GitHubTask| {
                t.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "RateLimited" && c.status == "True"))
            })
            .await;
            let status = limited.status.clone().unwrap();
            let reset = ccplant_operator::time::from_k8s(&status.next_attempt_time.clone().expect("nextAttemptTime = reset"));
            assert_eq!(status.attempts, 0, "a rate limit does not consume an attempt");
            assert_eq!(tools_say(&limited), "InProgress/Progressing");
            let reconciling = limited.status.as_ref().unwrap().conditions.iter().find(|c| c.type_ == "Reconciling").cloned().unwrap();
            assert_eq!((reconciling.status.as_str(), reconciling.reason.as_str()), ("True", "RateLimited"));
            let done = wait_phase(&ns, "t", GitHubTaskPhase::Succeeded, T).await;
            assert_eq!(tools_say(&done), "Current/Healthy");
            assert!(done.status.as_ref().unwrap().conditions.iter().all(|c| c.type_ != "Reconciling" && c.type_ != "Stalled"));
            assert_eq!(done.status.unwrap().attempts, 1);
            let posts: Vec<_> = fake.requests().into_iter().filter(|r| r.method == "POST").collect();
            assert_eq!(posts.len(), 2, "the limited POST and the one after the reset");
            let second: chrono::DateTime<Utc> = posts[1].at.into();
            assert!(second >= reset, "next request at {second} is not before the reset {reset}");
        })
        .await;
}

#[tokio::test]
async fn two_server_errors_then_success_takes_three_attempts() {
    install_crds();
    TestEnv::global()
        .with_namespace("ght-5xx", |ns| async move {
            let fake = fake_with_repo().await;
            fake.inject(Fault::new(FaultKind::Status(502)).method("POST").path_contains("/issues").times(2));
            token_secret(&ns).await;
            let mut op = Operator::new(&ns.name, &fake.url(), &[]);
            op.start();
            create(
                &ns,
                &task("t", json!({"repository": "octo/hello", "github": {"secretRef": {"name": SECRET}}, "createIssue": {"title": "x"}, "retry": {"backoff": "1s"}})),
            )
            .await;
            let done = wait_phase(&ns, "t", GitHubTaskPhase::Succeeded, T).await;
            assert_eq!(done.status.unwrap().attempts, 3);
            assert_eq!(fake.issues("octo", "hello").len(), 1);
        })
        .await;
}

#[tokio::test]
async fn secret_values_never_reach_status_events_or_logs() {
    install_crds();
    TestEnv::global()
        .with_namespace("ght-secrets", |ns| async move {
            let fake = fake_with_repo().await;
            token_secret(&ns).await;
            let mut op = Operator::new(&ns.name, &fake.url(), &[]);
            op.start();
            create(&ns, &task("t", json!({"repository": "octo/hello", "github": {"secretRef": {"name": SECRET}}, "createIssue": {"title": "x"}}))).await;
            let done = wait_phase(&ns, "t", GitHubTaskPhase::Succeeded, T).await;
            let events = wait_event(&ns, "GitHubTask", "t", |(_, r, _)| r == "Succeeded").await;
            let everything = format!("{:?}{events:?}{}", done.status, op.log_text());
            assert!(!everything.contains(TOKEN), "the token leaked");
            assert!(op.log_text().contains(&ns.name), "logs carry the namespace");
            let secret = ns.api::<Secret>().get(SECRET).await.unwrap();
            assert!(secret.metadata.owner_references.is_none(), "a user's Secret is left alone");
            drop(PostParams::default());
        })
        .await;
}

#[tokio::test]
async fn the_auto_selected_head_survives_a_retry_even_when_a_newer_branch_appears() {
    install_crds();
    TestEnv::global()
        .with_namespace("ght-stable", |ns| async move {
            let fake = fake_with_repo().await;
            let t0 = Utc.with_ymd_and_hms(2026, 11, 1, 10, 0, 0).unwrap();
            fake.push_commit("octo", "hello", "first-choice", "First choice", t0);
            fake.inject(Fault::new(FaultKind::Status(503)).method("POST").path_contains("/pulls"));
            token_secret(&ns).await;
            let mut op = Operator::new(&ns.name, &fake.url(), &[]);
            op.start();
            create(
                &ns,
                &task("pr", json!({"repository": "octo/hello", "github": {"secretRef": {"name": SECRET}}, "createPullRequest": {}, "retry": {"backoff": "3s"}})),
            )
            .await;
            let failed_once = wait_for(&ns.api::<GitHubTask>(), "pr", T, "first attempt failed", |t: &GitHubTask| {
                t.status.as_ref().is_some_and(|s| s.attempts == 1 && s.next_attempt_time.is_some())
            })
            .await;
            let recorded = failed_once.status.unwrap().result.unwrap();
            assert_eq!(recorded.head_branch.as_deref(), Some("first-choice"), "recorded before the write");
            // Between the failed attempt and its retry, a newer branch is pushed.
            fake.push_commit("octo", "hello", "newer", "Newer", Utc::now());
            let done = wait_phase(&ns, "pr", GitHubTaskPhase::Succeeded, T).await;
            let status = done.status.unwrap();
            assert_eq!(status.attempts, 2);
            assert_eq!(status.result.unwrap().head_branch.as_deref(), Some("first-choice"));
            let pulls = fake.pulls("octo", "hello");
            assert_eq!(pulls.len(), 1);
            assert_eq!(pulls[0]["head"]["ref"], "first-choice");
        })
        .await;
}

#[tokio::test]
async fn a_pull_request_from_a_session_waits_for_the_session_to_succeed() {
    install_crds();
    TestEnv::global()
        .with_namespace("ght-session", |ns| async move {
            let fake = fake_with_repo().await;
            fake.push_commit("octo", "hello", "ccplant/fix-it", "Fix the bug", Utc::now());
            token_secret(&ns).await;
            let sessions = ns.api::<ccplant_api::AgentSession>();
            let session: ccplant_api::AgentSession = serde_json::from_value(json!({
                "apiVersion": "ccplant.io/v1alpha1", "kind": "AgentSession",
                "metadata": {"name": "fix-it"},
                "spec": {"agent": {"image": "ghcr.io/ccplant/agent:1"}, "repository": {"name": "octo/hello"}},
            }))
            .unwrap();
            sessions.create(&PostParams::default(), &session).await.unwrap();
            let mut op = Operator::new(&ns.name, &fake.url(), &[]);
            op.start();
            create(&ns, &task("pr", json!({"repository": "octo/hello", "github": {"secretRef": {"name": SECRET}}, "createPullRequest": {"fromSession": "fix-it"}}))).await;
            let waiting = wait_phase(&ns, "pr", GitHubTaskPhase::Pending, T).await;
            assert_eq!(ready(&waiting).1, "Waiting");
            assert_eq!(ready(&waiting).2, "waiting for AgentSession fix-it to succeed");
            assert!(fake.requests().is_empty(), "nothing sent to GitHub while waiting");

            // The session's agent finishes (KWOK: the pod exits 0), the session Succeeds, and
            // the watch on sessions wakes the task.
            wait_for(&sessions, "fix-it", T, "session Running", |s: &ccplant_api::AgentSession| {
                s.phase() == Some(ccplant_api::AgentSessionPhase::Running)
            })
            .await;
            let exit = json!({"metadata": {"annotations": {ccplant_testenv::controlplane::TEST_EXIT_CODE_ANNOTATION: "0"}}});
            ns.api::<k8s_openapi::api::core::v1::Pod>()
                .patch("fix-it", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&exit))
                .await
                .unwrap();
            wait_for(&sessions, "fix-it", T, "session Succeeded", |s: &ccplant_api::AgentSession| {
                s.phase() == Some(ccplant_api::AgentSessionPhase::Succeeded)
            })
            .await;
            let woke = std::time::Instant::now();
            let done = wait_phase(&ns, "pr", GitHubTaskPhase::Succeeded, Duration::from_secs(10)).await;
            eprintln!("session Succeeded -> pull request opened in {:.2}s", woke.elapsed().as_secs_f64());
            let result = done.status.unwrap().result.unwrap();
            assert_eq!(result.head_branch.as_deref(), Some("ccplant/fix-it"));
            assert_eq!(fake.pulls("octo", "hello")[0]["title"], "Fix the bug");
        })
        .await;
}

#[tokio::test]
async fn a_merge_from_another_task_waits_for_its_pull_request() {
    install_crds();
    TestEnv::global()
        .with_namespace("ght-chain", |ns| async move {
            let fake = fake_with_repo().await;
            fake.push_commit("octo", "hello", "feature", "Feature", Utc::now());
            fake.add_token("ghp_reviewer", "reviewer");
            token_secret(&ns).await;
            let reviewer: Secret = serde_json::from_value(json!({"metadata": {"name": "reviewer"}, "stringData": {"token": "ghp_reviewer"}})).unwrap();
            ns.api::<Secret>().create(&PostParams::default(), &reviewer).await.unwrap();
            let mut op = Operator::new(&ns.name, &fake.url(), &[]);
            op.start();
            // The merge task exists first and waits.
            create(&ns, &task("merge", json!({"repository": "octo/hello", "github": {"secretRef": {"name": "reviewer"}}, "approveAndMerge": {"fromTask": "open"}}))).await;
            let waiting = wait_phase(&ns, "merge", GitHubTaskPhase::Pending, T).await;
            assert_eq!(ready(&waiting).2, "waiting for GitHubTask open to exist");
            create(&ns, &task("open", json!({"repository": "octo/hello", "github": {"secretRef": {"name": SECRET}}, "createPullRequest": {"head": "feature"}}))).await;
            let opened = wait_phase(&ns, "open", GitHubTaskPhase::Succeeded, T).await;
            let merged = wait_phase(&ns, "merge", GitHubTaskPhase::Succeeded, Duration::from_secs(10)).await;
            let number = opened.status.unwrap().result.unwrap().pull_request_number;
            let result = merged.status.unwrap().result.unwrap();
            assert_eq!(result.pull_request_number, number);
            assert_eq!(result.merged, Some(true));
            let review = &fake.reviews("octo", "hello", 1)[0];
            assert_eq!(review["user"]["login"], "reviewer");
        })
        .await;
}

#[tokio::test]
async fn a_task_with_github_app_credentials_uses_an_installation_token() {
    install_crds();
    TestEnv::global()
        .with_namespace("ght-app", |ns| async move {
            let fake = fake_with_repo().await;
            app_secret(&ns, &fake).await;
            let mut op = Operator::new(&ns.name, &fake.url(), &[]);
            op.start();
            for i in 0..3 {
                create(&ns, &task(&format!("c{i}"), json!({"repository": "octo/hello", "github": {"secretRef": {"name": "app"}}, "createIssue": {"title": format!("issue {i}")}}))).await;
            }
            for i in 0..3 {
                wait_phase(&ns, &format!("c{i}"), GitHubTaskPhase::Succeeded, T).await;
            }
            let reqs = fake.requests();
            let mints: Vec<_> = reqs.iter().filter(|r| r.path == "/app/installations/77/access_tokens").collect();
            assert_eq!(mints.len(), 1, "one installation token, cached across tasks");
            assert_eq!(mints[0].auth.as_deref(), Some("bearer-jwt"));
            assert!(reqs.iter().filter(|r| r.method == "POST" && r.path.ends_with("/issues")).all(|r| r.auth.as_deref() == Some("installation-token")));
            assert_eq!(fake.issues("octo", "hello")[0]["user"]["login"], "ccplant-app[bot]");
        })
        .await;
}

/// The GitHub calls of each action's normal path, against the floor (writes only).
#[tokio::test]
async fn normal_paths_make_the_minimum_github_calls() {
    install_crds();
    TestEnv::global()
        .with_namespace("ght-calls", |ns| async move {
            let fake = fake_with_repo().await;
            let t0 = Utc.with_ymd_and_hms(2026, 11, 1, 10, 0, 0).unwrap();
            fake.push_commit("octo", "hello", "given", "Given", t0);
            fake.push_commit("octo", "hello", "to-merge", "To merge", t0);
            fake.add_token("ghp_alice", "alice");
            open_issue_as(&fake, "ghp_alice").await;
            let pr = open_pull_as(&fake, "ghp_alice", "to-merge", "To merge").await;
            token_secret(&ns).await;
            let mut op = Operator::new(&ns.name, &fake.url(), &[]);
            op.start();
            let gh = json!({"secretRef": {"name": SECRET}});
            let cases = [
                ("issue", json!({"repository": "octo/hello", "github": gh, "createIssue": {"title": "t", "triggerComment": "go"}}),
                    vec!["POST /repos/octo/hello/issues", "POST /repos/octo/hello/issues/3/comments"]),
                ("comment", json!({"repository": "octo/hello", "github": gh, "comment": {"issue": 1, "body": "hi"}}),
                    vec!["POST /repos/octo/hello/issues/1/comments"]),
                ("pr", json!({"repository": "octo/hello", "github": gh, "createPullRequest": {"head": "given", "base": "main", "title": "Given"}}),
                    vec!["POST /repos/octo/hello/pulls"]),
                ("merge", json!({"repository": "octo/hello", "github": gh, "approveAndMerge": {"pullRequest": pr.number}}),
                    vec!["GET /repos/octo/hello/pulls/2", "POST /repos/octo/hello/pulls/2/reviews", "PUT /repos/octo/hello/pulls/2/merge"]),
            ];
            for (name, spec, expected) in cases {
                fake.clear_requests();
                create(&ns, &task(name, spec)).await;
                wait_phase(&ns, name, GitHubTaskPhase::Succeeded, T).await;
                let calls: Vec<String> = fake.requests().iter().map(|r| format!("{} {}", r.method, r.path)).collect();
                let writes = calls.iter().filter(|c| !c.starts_with("GET")).count();
                eprintln!("{name}: {} GitHub calls ({writes} writes): {calls:?}", calls.len());
                assert_eq!(calls, expected, "{name}");
            }
        })
        .await;
}

/// Two writers (a second operator process, a deposed leader): the attempt record is fenced on
/// the resourceVersion the decision was made from, so the stale writer gets 409 and writes
/// nothing — neither to status nor, in the controller, to GitHub.
#[tokio::test]
async fn a_stale_attempt_record_is_refused_with_a_conflict() {
    use ccplant_operator::config::RunArgs;
    use clap::Parser;
    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        run: RunArgs,
    }
    install_crds();
    TestEnv::global()
        .with_namespace("ght-fence", |ns| async move {
            let api = ns.api::<GitHubTask>();
            create(
                &ns,
                &task(
                    "t",
                    json!({"repository": "octo/hello", "createIssue": {"title": "x"}}),
                ),
            )
            .await;
            let seen = api.get("t").await.unwrap();
            // Someone else writes in between.
            let label = json!({"metadata": {"labels": {"moved": "yes"}}});
            api.patch(
                "t",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&label),
            )
            .await
            .unwrap();

            let run = Args::parse_from(["test"]).run;
            let recorder =
                ccplant_operator::events::Recorder::new(ns.client.clone(), "test", "test");
            let github = ccplant_operator::credentials::GitHubClients::new(
                "http://127.0.0.1:1",
                Duration::from_secs(1),
                None,
            );
            let ctx = ccplant_operator::context::Context::new(
                ns.client.clone(),
                recorder,
                github,
                ccplant_operator::leader::Leadership::always(),
                ccplant_operator::metrics::Metrics::new(),
                &run,
            );
            let attempt = ccplant_api::GitHubTaskStatus {
                attempts: 1,
                ..Default::default()
            };

            let err = ccplant_operator::apply::apply_status_at_version(&ctx, &seen, &attempt)
                .await
                .unwrap_err();
            let kube::Error::Api(status) = err else {
                panic!("unexpected error {err}")
            };
            assert_eq!(status.code, 409, "{status:?}");
            assert!(
                api.get("t")
                    .await
                    .unwrap()
                    .status
                    .is_none_or(|s| s.attempts == 0),
                "nothing recorded"
            );

            let current = api.get("t").await.unwrap();
            ccplant_operator::apply::apply_status_at_version(&ctx, &current, &attempt)
                .await
                .expect("fresh version applies");
            assert_eq!(api.get("t").await.unwrap().status.unwrap().attempts, 1);
        })
        .await;
}

#[tokio::test]
async fn an_outsiders_newer_pull_request_is_never_auto_merged() {
    install_crds();
    TestEnv::global()
        .with_namespace("ght-outsider", |ns| async move {
            let fake = fake_with_repo().await;
            let t0 = Utc::now();
            fake.push_commit("octo", "hello", "ours", "Ours", t0);
            fake.push_commit("octo", "hello", "theirs", "Theirs", t0);
            fake.add_token("ghp_mallory", "mallory");
            // ccplant's own pull request (opened with the task credential), then a newer one
            // by an outsider a minute later.
            let ours = open_pull_as(&fake, TOKEN, "ours", "Ours").await;
            let theirs = open_pull_as(&fake, "ghp_mallory", "theirs", "Theirs").await;
            token_secret(&ns).await;
            let mut op = Operator::new(&ns.name, &fake.url(), &[]);
            op.start();
            let merge = |name: &str, extra: serde_json::Value| {
                let mut spec = json!({"repository": "octo/hello", "github": {"secretRef": {"name": SECRET}}, "approveAndMerge": {"approve": false}});
                for (k, v) in extra.as_object().unwrap() {
                    spec["approveAndMerge"][k] = v.clone();
                }
                task(name, spec)
            };
            // Default authors: the credential's own identity → ours, not the newer outsider's.
            create(&ns, &merge("default", json!({}))).await;
            let done = wait_phase(&ns, "default", GitHubTaskPhase::Succeeded, T).await;
            assert_eq!(done.status.unwrap().result.unwrap().pull_request_number, Some(ours.number as i64));
            // Only the outsider's is open now: not merged.
            create(&ns, &merge("no-outsiders", json!({}))).await;
            let refused = wait_phase(&ns, "no-outsiders", GitHubTaskPhase::Failed, T).await;
            assert_eq!(
                ready(&refused),
                ("False".into(), "NoPullRequest".into(), format!("octo/hello has no open pull request by {BOT} (spec.approveAndMerge.authors; [\"*\"] allows any author)"))
            );
            assert_eq!(fake.pulls("octo", "hello").iter().filter(|p| p["merged"] == true).count(), 1);
            // authors ["*"]: any author, the outsider's is merged.
            create(&ns, &merge("anyone", json!({"authors": ["*"]}))).await;
            let done = wait_phase(&ns, "anyone", GitHubTaskPhase::Succeeded, T).await;
            assert_eq!(done.status.unwrap().result.unwrap().pull_request_number, Some(theirs.number as i64));

        })
        .await;
}

#[tokio::test]
async fn a_copy_of_the_tasks_marker_by_another_author_is_never_adopted() {
    install_crds();
    TestEnv::global()
        .with_namespace("ght-copycat", |ns| async move {
            let fake = fake_with_repo().await;
            fake.add_token("ghp_mallory", "mallory");
            let issue = open_issue_as(&fake, "ghp_mallory").await;
            token_secret(&ns).await;
            // An attempt recorded without a result (as after a crash): the next one looks for
            // the earlier effect before writing.
            let t = create(&ns, &task("comment", json!({"repository": "octo/hello", "github": {"secretRef": {"name": SECRET}}, "comment": {"issue": issue.number, "body": "hello"}}))).await;
            let status = json!({"apiVersion": "ccplant.io/v1alpha1", "kind": "GitHubTask", "status": {"phase": "Running", "attempts": 1}});
            ns.api::<GitHubTask>()
                .patch_status("comment", &kube::api::PatchParams::apply("test").force(), &kube::api::Patch::Apply(&status))
                .await
                .unwrap();
            // Someone else posts a comment carrying the task's marker.
            let marker = marker_of(&t, &ns.name);
            let mallory = ccplant_github::GitHubClient::builder(ccplant_github::Credentials::Token("ghp_mallory".to_string().into()))
                .api_url(fake.url())
                .build()
                .unwrap();
            let repo = ccplant_github::RepoRef::new("octo", "hello");
            let copy = mallory.create_comment(&repo, issue.number, "hello", &marker).await.unwrap();
            let mut op = Operator::new(&ns.name, &fake.url(), &[]);
            op.start();
            let done = wait_phase(&ns, "comment", GitHubTaskPhase::Succeeded, T).await;
            let ours = done.status.unwrap().result.unwrap().comment_id.unwrap();
            assert_ne!(ours, copy.id as i64, "the copy was not adopted");
            let comments = fake.comments("octo", "hello", issue.number);
            let by = |login: &str| comments.iter().filter(|c| c["user"]["login"] == login).count();
            assert_eq!((by(BOT), by("mallory")), (1, 1));
        })
        .await;
}

#[tokio::test]
async fn a_merge_from_another_task_refuses_commits_pushed_after_it_opened_the_pull_request() {
    install_crds();
    TestEnv::global()
        .with_namespace("ght-moved", |ns| async move {
            let fake = fake_with_repo().await;
            let opened_at = fake.push_commit("octo", "hello", "feature", "Feature", Utc::now());
            fake.add_token("ghp_reviewer", "reviewer");
            token_secret(&ns).await;
            let reviewer: Secret = serde_json::from_value(json!({"metadata": {"name": "reviewer"}, "stringData": {"token": "ghp_reviewer"}})).unwrap();
            ns.api::<Secret>().create(&PostParams::default(), &reviewer).await.unwrap();
            let mut op = Operator::new(&ns.name, &fake.url(), &[]);
            op.start();
            create(&ns, &task("open", json!({"repository": "octo/hello", "github": {"secretRef": {"name": SECRET}}, "createPullRequest": {"head": "feature"}}))).await;
            let opened = wait_phase(&ns, "open", GitHubTaskPhase::Succeeded, T).await;
            assert_eq!(opened.status.unwrap().result.unwrap().head_sha.as_deref(), Some(opened_at.as_str()));
            // Someone pushes to the branch after the pull request was opened.
            let pushed = fake.push_commit("octo", "hello", "feature", "Sneaky", Utc::now());
            create(&ns, &task("merge", json!({"repository": "octo/hello", "github": {"secretRef": {"name": "reviewer"}}, "approveAndMerge": {"fromTask": "open"}}))).await;
            let failed = wait_phase(&ns, "merge", GitHubTaskPhase::Failed, T).await;
            assert_eq!(
                ready(&failed),
                (
                    "False".into(),
                    "HeadMoved".into(),
                    format!("head of pull request #1 is {pushed} but GitHubTask open opened it at {opened_at}: commits pushed since are not merged")
                )
            );
            assert!(fake.reviews("octo", "hello", 1).is_empty(), "nothing approved");
            assert_eq!(fake.pulls("octo", "hello")[0]["merged"], false);
            // In another repository, the other task's pull request number means nothing.
            fake.add_repo("octo", "other", "main");
            create(&ns, &task("elsewhere", json!({"repository": "octo/other", "github": {"secretRef": {"name": "reviewer"}}, "approveAndMerge": {"fromTask": "open"}}))).await;
            let refused = wait_phase(&ns, "elsewhere", GitHubTaskPhase::Failed, T).await;
            assert_eq!(ready(&refused).2, "GitHubTask open opened its pull request in octo/hello, not in octo/other");
        })
        .await;
}
