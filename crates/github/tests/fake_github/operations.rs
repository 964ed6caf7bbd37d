//! Each operation: the exact requests made and the parsed result.

use crate::common::*;
use anyhow::Result;
use ccplant_github::{Authors, BranchHead, Error, MergeRequest, NewIssue, NewPull};
use chrono::TimeDelta;
use serde_json::json;

#[tokio::test]
async fn repository_reads_the_default_branch() -> Result<()> {
    let env = Env::start().await?;
    let repository = env.client()?.repository(&env.repo).await?;
    assert_eq!(repository.full_name, "octo/hello");
    assert_eq!(repository.default_branch, "main");
    assert!(repository.private);
    assert_eq!(env.requests(), vec![get("/repos/octo/hello", &[])]);
    let recorded = env.fake.requests();
    assert_eq!(recorded[0].auth.as_deref(), Some("token"));
    Ok(())
}

#[tokio::test]
async fn create_issue_sends_the_fields_and_the_marker() -> Result<()> {
    let env = Env::start().await?;
    let marker = task_marker("bug-report");
    let issue = env
        .client()?
        .create_issue(
            &env.repo,
            &NewIssue {
                title: "Crash on start".into(),
                body: "Steps to reproduce".into(),
                labels: vec!["bug".into()],
                assignees: vec![LOGIN.into()],
                milestone: Some(3),
            },
            &marker,
        )
        .await?;
    let body = format!("Steps to reproduce\n\n<!-- ccplant:task team-a/bug-report {UID} -->");
    assert_eq!(
        env.requests(),
        vec![req(
            "POST",
            "/repos/octo/hello/issues",
            &[],
            Some(json!({
                "title": "Crash on start",
                "body": body,
                "labels": ["bug"],
                "assignees": [LOGIN],
                "milestone": 3,
            }))
        )]
    );
    assert_eq!(issue.number, 1);
    assert_eq!(issue.title, "Crash on start");
    assert_eq!(issue.body, body);
    assert_eq!(issue.state, "open");
    assert_eq!(issue.user_login.as_deref(), Some(LOGIN));
    assert_eq!(issue.labels, vec!["bug".to_string()]);
    assert!(
        issue.html_url.ends_with("/octo/hello/issues/1"),
        "{}",
        issue.html_url
    );
    let stored = env.fake.issues(OWNER, REPO);
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["body"], json!(body));
    Ok(())
}

#[tokio::test]
async fn create_issue_leaves_out_empty_optional_fields() -> Result<()> {
    let env = Env::start().await?;
    let marker = task_marker("plain");
    env.client()?
        .create_issue(
            &env.repo,
            &NewIssue {
                title: "Plain".into(),
                ..NewIssue::default()
            },
            &marker,
        )
        .await?;
    assert_eq!(
        env.requests(),
        vec![req(
            "POST",
            "/repos/octo/hello/issues",
            &[],
            Some(json!({"title": "Plain", "body": marker}))
        )]
    );
    Ok(())
}

#[tokio::test]
async fn create_comment_posts_to_the_issue() -> Result<()> {
    let env = Env::start().await?;
    let client = env.client()?;
    let issue = client
        .create_issue(
            &env.repo,
            &NewIssue {
                title: "Feature".into(),
                ..NewIssue::default()
            },
            &task_marker("issue"),
        )
        .await?;
    env.fake.clear_requests();
    let marker = task_marker("trigger");
    let comment = client
        .create_comment(&env.repo, issue.number, "@claude implement this", &marker)
        .await?;
    let body = format!("@claude implement this\n\n{marker}");
    assert_eq!(
        env.requests(),
        vec![req(
            "POST",
            "/repos/octo/hello/issues/1/comments",
            &[],
            Some(json!({ "body": body }))
        )]
    );
    assert_eq!(comment.body, body);
    assert_eq!(comment.user_login.as_deref(), Some(LOGIN));
    assert!(
        comment
            .html_url
            .ends_with(&format!("/octo/hello/issues/1#issuecomment-{}", comment.id)),
        "{}",
        comment.html_url
    );
    assert_eq!(env.fake.comments(OWNER, REPO, 1).len(), 1);
    Ok(())
}

#[tokio::test]
async fn resolve_head_branch_reads_one_activity_page_whatever_the_branch_count() -> Result<()> {
    let env = Env::start().await?;
    let now = now_secs();
    let mins = |m: i64| now - TimeDelta::minutes(m);
    // 300 branches, pushed one minute apart (branch-000 the oldest)…
    for i in 0..300 {
        env.push(
            &format!("branch-{i:03}"),
            &format!("work {i}"),
            mins(400 - i),
        );
    }
    // …then: main moves on (the base, skipped), a newer branch is pushed and deleted again
    // (skipped), and the newest surviving push is to branch-042.
    env.push("main", "main moves on", mins(50));
    let newest = env.push("branch-042", "late fix", mins(40));
    env.push("gone", "short-lived", mins(30));
    assert!(env.fake.delete_branch(OWNER, REPO, "gone", mins(20)));
    let client = env.client()?;
    env.fake.clear_requests();

    let head = client.resolve_head_branch(&env.repo, "main").await?;

    assert_eq!(
        head,
        Some(BranchHead {
            name: "branch-042".into(),
            sha: newest,
            pushed_at: mins(40),
        })
    );
    let requests = env.requests();
    eprintln!(
        "head selection at 301 branches: {} request(s)",
        requests.len()
    );
    let activity = get(
        "/repos/octo/hello/activity",
        &[("direction", "desc"), ("per_page", "100"), ("page", "1")],
    );
    assert_eq!(requests, vec![activity.clone()]);

    // What createPullRequest does without base, head and title: the default branch, the head,
    // the head commit's subject for the title — three requests at 300 branches.
    env.fake.clear_requests();
    let base = client.repository(&env.repo).await?.default_branch;
    let head = client
        .resolve_head_branch(&env.repo, &base)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no head"))?;
    let title = client
        .commit(&env.repo, &head.name)
        .await?
        .subject()
        .to_string();
    assert_eq!(
        (head.name.as_str(), title.as_str()),
        ("branch-042", "late fix")
    );
    assert_eq!(
        env.requests(),
        vec![
            get("/repos/octo/hello", &[]),
            activity,
            get("/repos/octo/hello/commits/branch-042", &[]),
        ]
    );
    Ok(())
}

#[tokio::test]
async fn resolve_head_branch_without_other_branches_is_none() -> Result<()> {
    let env = Env::start().await?;
    assert_eq!(
        env.client()?.resolve_head_branch(&env.repo, "main").await?,
        None
    );
    Ok(())
}

#[tokio::test]
async fn commit_gives_the_subject_and_dates() -> Result<()> {
    let env = Env::start().await?;
    let date = now_secs() - TimeDelta::minutes(5);
    let sha = env.push("feature", "Add greeting\n\nSays hello to the world.", date);
    env.fake.clear_requests();
    let commit = env.client()?.commit(&env.repo, &sha).await?;
    assert_eq!(commit.sha, sha);
    assert_eq!(commit.subject(), "Add greeting");
    assert_eq!(commit.message, "Add greeting\n\nSays hello to the world.");
    assert_eq!(commit.committed_at, Some(date));
    assert_eq!(
        env.requests(),
        vec![get(&format!("/repos/octo/hello/commits/{sha}"), &[])]
    );
    Ok(())
}

fn feature_pull(head: &str) -> NewPull {
    NewPull {
        head: head.into(),
        base: "main".into(),
        title: "Add greeting".into(),
        body: "Implements #1".into(),
        draft: false,
    }
}

#[tokio::test]
async fn create_pull_then_already_exists_then_find_pull_adopts_it() -> Result<()> {
    let env = Env::start().await?;
    let sha = env.push("feature", "Add greeting", now_secs());
    let client = env.client()?;
    let marker = task_marker("open-pr");
    env.fake.clear_requests();

    let pull = client
        .create_pull(&env.repo, &feature_pull("feature"), &marker)
        .await?;
    let body = format!("Implements #1\n\n{marker}");
    assert_eq!(
        env.requests(),
        vec![req(
            "POST",
            "/repos/octo/hello/pulls",
            &[],
            Some(json!({
                "title": "Add greeting",
                "head": "feature",
                "base": "main",
                "body": body,
                "draft": false,
            }))
        )]
    );
    assert_eq!(pull.number, 1);
    assert_eq!(pull.state, "open");
    assert_eq!(pull.body, body);
    assert!(!pull.merged && !pull.draft);
    assert_eq!(pull.head.ref_name, "feature");
    assert_eq!(pull.head.sha, sha);
    assert_eq!(pull.head.label, "octo:feature");
    assert_eq!(pull.base.ref_name, "main");
    assert_eq!(pull.user_login.as_deref(), Some(LOGIN));
    assert!(
        pull.html_url.ends_with("/octo/hello/pull/1"),
        "{}",
        pull.html_url
    );

    let again = client
        .create_pull(&env.repo, &feature_pull("feature"), &marker)
        .await;
    match again {
        Err(Error::PullRequestAlreadyExists { message }) => assert_eq!(
            message,
            "Validation Failed: A pull request already exists for octo:feature."
        ),
        other => panic!("expected PullRequestAlreadyExists, got {other:?}"),
    }

    env.fake.clear_requests();
    let found = client.find_pull(&env.repo, "feature", "main").await?;
    assert_eq!(found.as_ref().map(|p| p.number), Some(1));
    assert_eq!(found.map(|p| p.head.sha), Some(sha));
    assert_eq!(
        env.requests(),
        vec![get(
            "/repos/octo/hello/pulls",
            &[
                ("state", "all"),
                ("head", "octo:feature"),
                ("base", "main"),
                ("sort", "created"),
                ("direction", "desc"),
                ("per_page", "100"),
                ("page", "1"),
            ]
        )]
    );
    assert_eq!(client.find_pull(&env.repo, "other", "main").await?, None);
    Ok(())
}

#[tokio::test]
async fn create_pull_with_an_unknown_head_is_a_user_error() -> Result<()> {
    let env = Env::start().await?;
    let result = env
        .client()?
        .create_pull(
            &env.repo,
            &feature_pull("no-such-branch"),
            &task_marker("x"),
        )
        .await;
    match result {
        Err(Error::User { status, message }) => {
            assert_eq!(
                (status, message.as_str()),
                (
                    422,
                    "Validation Failed: PullRequest.head: invalid (POST /repos/octo/hello/pulls)"
                )
            );
        }
        other => panic!("expected a 422 user error, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn newest_open_pull_asks_for_one_pull_sorted_by_creation() -> Result<()> {
    let env = Env::start().await?;
    let client = env.client()?;
    assert_eq!(
        client.newest_open_pull(&env.repo, &Authors::Any).await?,
        None
    );
    env.push("first", "one", now_secs());
    env.push("second", "two", now_secs());
    client
        .create_pull(&env.repo, &feature_pull("first"), &task_marker("a"))
        .await?;
    client
        .create_pull(&env.repo, &feature_pull("second"), &task_marker("b"))
        .await?;
    env.fake.clear_requests();

    let newest = client.newest_open_pull(&env.repo, &Authors::Any).await?;
    assert_eq!(
        newest.map(|p| (p.number, p.head.ref_name)),
        Some((2, "second".to_string()))
    );
    assert_eq!(
        env.requests(),
        vec![get(
            "/repos/octo/hello/pulls",
            &[
                ("state", "open"),
                ("sort", "created"),
                ("direction", "desc"),
                ("per_page", "1"),
                ("page", "1"),
            ]
        )]
    );
    Ok(())
}

#[tokio::test]
async fn approve_then_merge_with_the_approved_sha() -> Result<()> {
    let env = Env::start().await?;
    let sha = env.push("feature", "Add greeting", now_secs());
    let pull = env
        .client()?
        .create_pull(&env.repo, &feature_pull("feature"), &task_marker("open-pr"))
        .await?;
    let reviewer = env.reviewer()?;
    let marker = task_marker("ship-it");
    env.fake.clear_requests();

    let review = reviewer
        .approve(&env.repo, pull.number, "LGTM", &sha, &marker)
        .await?;
    assert_eq!(
        env.requests(),
        vec![req(
            "POST",
            "/repos/octo/hello/pulls/1/reviews",
            &[],
            Some(json!({
                "event": "APPROVE",
                "body": format!("LGTM\n\n{marker}"),
                "commit_id": sha,
            }))
        )]
    );
    assert_eq!(review.state, "APPROVED");
    assert_eq!(review.commit_id.as_deref(), Some(sha.as_str()));
    assert_eq!(review.user_login.as_deref(), Some(REVIEWER));
    assert_eq!(review.body, format!("LGTM\n\n{marker}"));
    assert!(review.submitted_at.is_some());

    env.fake.clear_requests();
    let merged = reviewer
        .merge(
            &env.repo,
            pull.number,
            &MergeRequest {
                sha: Some(sha.clone()),
                method: "squash",
                commit_title: Some("Add greeting (#1)".into()),
                commit_message: None,
            },
        )
        .await?;
    assert_eq!(
        env.requests(),
        vec![req(
            "PUT",
            "/repos/octo/hello/pulls/1/merge",
            &[],
            Some(json!({
                "merge_method": "squash",
                "sha": sha,
                "commit_title": "Add greeting (#1)",
            }))
        )]
    );
    assert!(merged.merged && !merged.already_merged);
    assert_eq!(merged.message, "Pull Request successfully merged");
    let merge_sha = merged.sha.clone();
    assert!(merge_sha.is_some());
    assert_eq!(env.fake.branch_head(OWNER, REPO, "main"), merge_sha);

    let after = reviewer.pull(&env.repo, pull.number).await?;
    assert!(after.merged);
    assert_eq!(after.state, "closed");
    assert_eq!(after.merge_commit_sha, merge_sha);
    Ok(())
}

#[tokio::test]
async fn merging_an_already_merged_pull_counts_as_merged() -> Result<()> {
    let env = Env::start().await?;
    let sha = env.push("feature", "Add greeting", now_secs());
    let client = env.client()?;
    let pull = client
        .create_pull(&env.repo, &feature_pull("feature"), &task_marker("open-pr"))
        .await?;
    let request = MergeRequest {
        sha: Some(sha),
        ..MergeRequest::default()
    };
    let first = client.merge(&env.repo, pull.number, &request).await?;
    env.fake.clear_requests();

    let second = client.merge(&env.repo, pull.number, &request).await?;
    assert!(second.merged && second.already_merged);
    assert_eq!(second.sha, first.sha);
    let requests = env.fake.requests();
    let summary: Vec<(String, String, u16)> = requests
        .iter()
        .map(|r| (r.method.clone(), r.path.clone(), r.status))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("PUT".into(), "/repos/octo/hello/pulls/1/merge".into(), 405),
            ("GET".into(), "/repos/octo/hello/pulls/1".into(), 200),
        ]
    );
    Ok(())
}

#[tokio::test]
async fn merge_after_the_head_moved_is_a_409_user_error() -> Result<()> {
    let env = Env::start().await?;
    let approved = env.push("feature", "Add greeting", now_secs());
    let client = env.client()?;
    let pull = client
        .create_pull(&env.repo, &feature_pull("feature"), &task_marker("open-pr"))
        .await?;
    env.push("feature", "Sneaky change", now_secs());
    let result = client
        .merge(
            &env.repo,
            pull.number,
            &MergeRequest {
                sha: Some(approved),
                ..MergeRequest::default()
            },
        )
        .await;
    match result {
        Err(Error::User { status, message }) => assert_eq!(
            (status, message.as_str()),
            (
                409,
                "Head branch was modified. Review and try the merge again. (PUT /repos/octo/hello/pulls/1/merge)"
            )
        ),
        other => panic!("expected a 409 user error, got {other:?}"),
    }
    assert!(!client.pull(&env.repo, pull.number).await?.merged);
    Ok(())
}

#[tokio::test]
async fn approving_ones_own_pull_request_is_a_distinct_error() -> Result<()> {
    let env = Env::start().await?;
    let sha = env.push("feature", "Add greeting", now_secs());
    let client = env.client()?;
    let pull = client
        .create_pull(&env.repo, &feature_pull("feature"), &task_marker("open-pr"))
        .await?;
    let result = client
        .approve(
            &env.repo,
            pull.number,
            "LGTM",
            &sha,
            &task_marker("ship-it"),
        )
        .await;
    match result {
        Err(err @ Error::SelfApproval { .. }) => {
            assert!(!err.is_retryable());
            assert_eq!(
                err.to_string(),
                "GitHub refused the approval: Unprocessable Entity: Review Can not approve your own pull request"
            );
        }
        other => panic!("expected SelfApproval, got {other:?}"),
    }
    assert!(env.fake.reviews(OWNER, REPO, pull.number).is_empty());
    Ok(())
}
