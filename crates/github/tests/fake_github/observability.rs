//! Metrics hook, rate-limit tracking, pacing of writes, and secrets kept out of output.

use crate::common::*;
use anyhow::Result;
use ccplant_github::{
    Credentials, NewIssue, PacerRegistry, RequestHook, RequestOutcome, SecretString,
};
use ccplant_testenv::fake_github::{Fault, FaultKind};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// (endpoint, status, x-ratelimit-remaining, x-ratelimit-limit)
type Seen = (&'static str, Option<u16>, Option<u64>, Option<u64>);

fn recording_hook() -> (RequestHook, Arc<Mutex<Vec<RequestOutcome>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let hook: RequestHook = Arc::new(move |outcome: &RequestOutcome| {
        sink.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(outcome.clone());
    });
    (hook, seen)
}

#[tokio::test]
async fn every_request_reaches_the_hook_with_endpoint_status_and_quota() -> Result<()> {
    let env = Env::start().await?;
    let (hook, seen) = recording_hook();
    let client = env.token_builder(TOKEN).on_request(hook).build()?;
    assert_eq!(client.rate_limit_remaining(), None);

    client.repository(&env.repo).await?;
    env.fake
        .inject(Fault::new(FaultKind::DropBeforeApply).method("POST"));
    let _ = client
        .create_issue(
            &env.repo,
            &NewIssue {
                title: "t".into(),
                ..NewIssue::default()
            },
            &task_marker("t"),
        )
        .await;

    let seen = seen.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let summary: Vec<Seen> = seen
        .iter()
        .map(|o| {
            (
                o.endpoint,
                o.status,
                o.rate_limit_remaining,
                o.rate_limit_limit,
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                "GET /repos/{owner}/{repo}",
                Some(200),
                Some(4999),
                Some(5000)
            ),
            ("POST /repos/{owner}/{repo}/issues", None, None, None),
        ]
    );
    assert!(seen.iter().all(|o| o.credential == *client.credential_id()));
    assert_eq!(client.rate_limit_remaining(), Some(4999));
    Ok(())
}

#[tokio::test]
async fn content_creating_calls_are_paced_per_credential() -> Result<()> {
    let env = Env::start().await?;
    let window = Duration::from_millis(600);
    let registry = PacerRegistry::new(2, window);
    let client = env.token_builder(TOKEN).pacing(registry.clone()).build()?;
    // A second client for the same token shares the pacer.
    let twin = env.token_builder(TOKEN).pacing(registry).build()?;
    let issue = NewIssue {
        title: "t".into(),
        ..NewIssue::default()
    };
    client
        .create_issue(&env.repo, &issue, &task_marker("a"))
        .await?;
    twin.create_issue(&env.repo, &issue, &task_marker("b"))
        .await?;
    // Reads are not paced.
    client.repository(&env.repo).await?;
    client
        .create_issue(&env.repo, &issue, &task_marker("c"))
        .await?;

    let requests = env.fake.requests();
    let at = |i: usize| requests[i].at;
    let read_delay = at(2).duration_since(at(0)).unwrap_or_default();
    let third_write_delay = at(3).duration_since(at(0)).unwrap_or_default();
    assert!(read_delay < window, "the read waited {read_delay:?}");
    assert!(
        third_write_delay >= window,
        "the third write came after {third_write_delay:?}, within the window"
    );
    Ok(())
}

#[tokio::test]
async fn debug_output_shows_no_secret() -> Result<()> {
    let env = Env::start().await?;
    let credentials = Credentials::Token(SecretString::from(TOKEN));
    let client = env.builder(credentials.clone()).build()?;
    let builder = env.builder(credentials.clone());
    let shown = format!("{client:?} {credentials:?} {builder:?}");
    assert!(!shown.contains(TOKEN), "{shown}");
    assert!(shown.contains(&env.fake.url()), "{shown}");
    Ok(())
}
