//! Each error class as the fake produces it, and that nothing is retried behind the caller's
//! back.

use crate::common::*;
use anyhow::Result;
use ccplant_github::{Error, NewIssue, Timeouts};
use ccplant_testenv::fake_github::{Fault, FaultKind};
use chrono::{DateTime, TimeDelta, Utc};
use std::time::Duration;

fn new_issue() -> NewIssue {
    NewIssue {
        title: "Crash".into(),
        body: "details".into(),
        ..NewIssue::default()
    }
}

fn assert_near(actual: DateTime<Utc>, expected: DateTime<Utc>) {
    let off = (actual - expected).num_milliseconds().abs();
    assert!(off <= 2_000, "{actual} is not within 2s of {expected}");
}

#[tokio::test]
async fn unknown_repository_is_a_404_user_error() -> Result<()> {
    let env = Env::start().await?;
    let missing = ccplant_github::RepoRef::new(OWNER, "missing");
    match env.client()?.repository(&missing).await {
        Err(err @ Error::User { .. }) => {
            assert_eq!(
                err.to_string(),
                "GitHub refused the request (404): Not Found (GET /repos/octo/missing)"
            );
            assert!(!err.is_retryable());
        }
        other => panic!("expected a 404 user error, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn bad_credentials_are_a_401_user_error_without_the_token() -> Result<()> {
    let env = Env::start().await?;
    let client = env.token_builder("ghp_unknown_secret_value").build()?;
    let err = client.repository(&env.repo).await.err();
    match &err {
        Some(Error::User {
            status: 401,
            message,
        }) => assert_eq!(message, "Bad credentials (GET /repos/octo/hello)"),
        other => panic!("expected a 401 user error, got {other:?}"),
    }
    let shown = format!(
        "{err:?} {}",
        err.as_ref().map(|e| e.to_string()).unwrap_or_default()
    );
    assert!(!shown.contains("ghp_unknown_secret_value"), "{shown}");
    Ok(())
}

#[tokio::test]
async fn server_error_is_transient_and_the_post_is_not_retried() -> Result<()> {
    let env = Env::start().await?;
    env.fake.inject(
        Fault::new(FaultKind::Status(502))
            .method("POST")
            .path_contains("/issues"),
    );
    let result = env
        .client()?
        .create_issue(&env.repo, &new_issue(), &task_marker("t"))
        .await;
    match &result {
        Err(err @ Error::Transient { message }) => {
            assert!(message.starts_with("GitHub answered 502"), "{message}");
            assert!(err.is_retryable());
            assert_eq!(err.metric_label(), "transient");
        }
        other => panic!("expected a transient error, got {other:?}"),
    }
    assert_eq!(env.fake.requests().len(), 1, "octocrab must not retry");
    assert!(env.fake.issues(OWNER, REPO).is_empty());
    Ok(())
}

#[tokio::test]
async fn primary_rate_limit_resets_at_x_ratelimit_reset() -> Result<()> {
    let env = Env::start().await?;
    env.fake.inject(Fault::new(FaultKind::PrimaryRateLimit {
        reset_in: Duration::from_secs(120),
    }));
    let asked = Utc::now();
    match env.client()?.repository(&env.repo).await {
        Err(
            err @ Error::RateLimited {
                secondary: false, ..
            },
        ) => {
            assert!(err.is_retryable());
            assert_near(
                err.retry_at().unwrap_or_default(),
                asked + TimeDelta::seconds(120),
            );
        }
        other => panic!("expected a primary rate limit, got {other:?}"),
    }
    assert_eq!(env.fake.requests().len(), 1);
    Ok(())
}

#[tokio::test]
async fn exhausted_quota_is_a_primary_rate_limit_until_the_window_resets() -> Result<()> {
    let env = Env::start().await?;
    env.fake.set_rate_limit(2);
    let client = env.client()?;
    client.repository(&env.repo).await?;
    client.repository(&env.repo).await?;
    assert_eq!(client.rate_limit_remaining(), Some(0));
    let asked = Utc::now();
    match client.repository(&env.repo).await {
        Err(Error::RateLimited {
            reset_at,
            secondary: false,
        }) => {
            // The fake's window is an hour from the first request.
            assert_near(reset_at, asked + TimeDelta::hours(1));
        }
        other => panic!("expected a primary rate limit, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn secondary_rate_limit_resets_after_retry_after() -> Result<()> {
    let env = Env::start().await?;
    env.fake.inject(
        Fault::new(FaultKind::SecondaryRateLimit {
            retry_after: Duration::from_secs(30),
        })
        .method("POST"),
    );
    let asked = Utc::now();
    match env
        .client()?
        .create_issue(&env.repo, &new_issue(), &task_marker("t"))
        .await
    {
        Err(
            err @ Error::RateLimited {
                secondary: true, ..
            },
        ) => {
            assert_eq!(err.metric_label(), "secondary_rate_limited");
            assert_near(
                err.retry_at().unwrap_or_default(),
                asked + TimeDelta::seconds(30),
            );
        }
        other => panic!("expected a secondary rate limit, got {other:?}"),
    }
    assert!(env.fake.issues(OWNER, REPO).is_empty());
    Ok(())
}

#[tokio::test]
async fn a_slow_response_times_out_as_transient() -> Result<()> {
    let env = Env::start().await?;
    env.fake
        .inject(Fault::new(FaultKind::Latency(Duration::from_secs(3))));
    let client = env
        .token_builder(TOKEN)
        .timeouts(Timeouts {
            connect: Duration::from_secs(2),
            read: Duration::from_secs(10),
            request: Duration::from_millis(300),
        })
        .build()?;
    let started = std::time::Instant::now();
    match client.repository(&env.repo).await {
        Err(Error::Transient { message }) => {
            assert_eq!(message, "GET /repos/{owner}/{repo} timed out after 300ms");
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    Ok(())
}

#[tokio::test]
async fn a_read_timeout_is_transient() -> Result<()> {
    let env = Env::start().await?;
    env.fake
        .inject(Fault::new(FaultKind::Latency(Duration::from_secs(3))));
    let client = env
        .token_builder(TOKEN)
        .timeouts(Timeouts {
            connect: Duration::from_secs(2),
            read: Duration::from_millis(300),
            request: Duration::from_secs(10),
        })
        .build()?;
    let started = std::time::Instant::now();
    let result = client.repository(&env.repo).await;
    assert!(
        matches!(result, Err(Error::Transient { .. })),
        "expected a transient error, got {result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    Ok(())
}

#[tokio::test]
async fn connection_dropped_before_apply_is_transient_and_nothing_is_written() -> Result<()> {
    let env = Env::start().await?;
    env.fake
        .inject(Fault::new(FaultKind::DropBeforeApply).method("POST"));
    let result = env
        .client()?
        .create_issue(&env.repo, &new_issue(), &task_marker("t"))
        .await;
    assert!(
        matches!(result, Err(Error::Transient { .. })),
        "expected a transient error, got {result:?}"
    );
    assert!(env.fake.issues(OWNER, REPO).is_empty());
    assert_eq!(env.fake.requests().len(), 1);
    Ok(())
}

#[tokio::test]
async fn lost_response_after_create_issue_is_found_by_its_marker() -> Result<()> {
    let env = Env::start().await?;
    let client = env.client()?;
    env.fake.inject(
        Fault::new(FaultKind::DropAfterApply)
            .method("POST")
            .path_contains("/issues"),
    );
    let marker = task_marker("lost-response");
    let attempt = Utc::now();
    let result = client.create_issue(&env.repo, &new_issue(), &marker).await;
    assert!(
        matches!(result, Err(Error::Transient { .. })),
        "expected a transient error, got {result:?}"
    );
    let stored = env.fake.issues(OWNER, REPO);
    assert_eq!(
        stored.len(),
        1,
        "the write happened although the response was lost"
    );

    let found = client
        .find_issue_by_marker(&env.repo, &marker, LOGIN, Some(attempt))
        .await?;
    let found = found.ok_or_else(|| anyhow::anyhow!("the issue was not found by its marker"))?;
    assert_eq!(serde_json::json!(found.number), stored[0]["number"]);
    assert_eq!(found.body, format!("details\n\n{marker}"));
    let posts = env
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .count();
    assert_eq!(posts, 1, "no retry may duplicate the issue");
    Ok(())
}
