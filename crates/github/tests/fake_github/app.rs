//! GitHub App credentials: JWT → installation token, caching, refresh, session tokens.

use crate::common::*;
use anyhow::{Result, anyhow};
use ccplant_github::{
    Credentials, Error, ExposeSecret, GitHubClient, Identity, IdentityKind, NewIssue, SecretString,
};
use ccplant_testenv::fake_github::test_keys::{
    OTHER_PRIVATE_KEY_PEM, TEST_APP_PRIVATE_KEY_PEM, TEST_APP_PUBLIC_KEY_PEM,
};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const APP_ID: u64 = 4242;
const INSTALLATION_ID: u64 = 777;
const TOKENS_PATH: &str = "/app/installations/777/access_tokens";

async fn app_env() -> Result<Env> {
    let env = Env::start().await?;
    env.fake
        .add_app(APP_ID, TEST_APP_PUBLIC_KEY_PEM, INSTALLATION_ID, OWNER);
    Ok(env)
}

fn app_credentials(private_key: &str) -> Credentials {
    Credentials::App {
        app_id: APP_ID,
        private_key: SecretString::from(private_key),
        installation_id: INSTALLATION_ID,
    }
}

fn app_client(env: &Env) -> Result<GitHubClient> {
    Ok(env
        .builder(app_credentials(TEST_APP_PRIVATE_KEY_PEM))
        .build()?)
}

/// (method, path, credential kind, status) of every request.
fn exchanges(env: &Env) -> Vec<(String, String, Option<String>, u16)> {
    env.fake
        .requests()
        .into_iter()
        .map(|r| (r.method, r.path, r.auth, r.status))
        .collect()
}

fn exchange(
    method: &str,
    path: &str,
    auth: &str,
    status: u16,
) -> (String, String, Option<String>, u16) {
    (method.into(), path.into(), Some(auth.into()), status)
}

#[tokio::test]
async fn app_flow_end_to_end_mints_once_and_acts_as_the_bot() -> Result<()> {
    let env = app_env().await?;
    let client = app_client(&env)?;
    let repository = client.repository(&env.repo).await?;
    assert_eq!(repository.default_branch, "main");
    let issue = client
        .create_issue(
            &env.repo,
            &NewIssue {
                title: "From the app".into(),
                ..NewIssue::default()
            },
            &task_marker("app"),
        )
        .await?;
    assert_eq!(issue.user_login.as_deref(), Some("ccplant-app[bot]"));
    client.repository(&env.repo).await?;

    assert_eq!(
        exchanges(&env),
        vec![
            exchange("POST", TOKENS_PATH, "bearer-jwt", 201),
            exchange("GET", "/repos/octo/hello", "installation-token", 200),
            exchange(
                "POST",
                "/repos/octo/hello/issues",
                "installation-token",
                201
            ),
            exchange("GET", "/repos/octo/hello", "installation-token", 200),
        ]
    );
    // The client's own token asks for no restriction.
    assert_eq!(env.fake.requests()[0].body, None);
    let tokens = env.fake.installation_tokens();
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0].installation_id, INSTALLATION_ID);
    assert_eq!(tokens[0].repositories, None);
    Ok(())
}

#[tokio::test]
async fn concurrent_callers_share_one_token_refresh() -> Result<()> {
    let env = app_env().await?;
    let client = app_client(&env)?;
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let (client, repo) = (client.clone(), env.repo.clone());
            tokio::spawn(async move { client.repository(&repo).await })
        })
        .collect();
    for call in calls {
        call.await??;
    }
    assert_eq!(env.fake.installation_tokens().len(), 1);
    let mints = env
        .fake
        .requests()
        .iter()
        .filter(|r| r.path == TOKENS_PATH)
        .count();
    assert_eq!(mints, 1);
    Ok(())
}

#[tokio::test]
async fn the_token_is_refreshed_five_minutes_before_it_expires() -> Result<()> {
    let env = app_env().await?;
    // Valid for 5 min 3 s: usable from the cache for about 3 s, then due for refresh.
    env.fake
        .set_installation_token_ttl(Duration::from_secs(5 * 60 + 3));
    let client = app_client(&env)?;
    client.repository(&env.repo).await?;
    client.repository(&env.repo).await?;
    assert_eq!(
        env.fake.installation_tokens().len(),
        1,
        "served from the cache"
    );

    let deadline = Instant::now() + Duration::from_secs(20);
    while env.fake.installation_tokens().len() < 2 {
        if Instant::now() > deadline {
            return Err(anyhow!(
                "no refresh within 20 s; tokens: {}",
                env.fake.installation_tokens().len()
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        client.repository(&env.repo).await?;
    }
    // The refreshed token was minted while the old one was still valid: no request failed.
    assert!(env.fake.requests().iter().all(|r| r.status < 400));
    Ok(())
}

#[tokio::test]
async fn a_revoked_client_token_is_replaced_and_the_request_repeated_once() -> Result<()> {
    let env = app_env().await?;
    let client = app_client(&env)?;
    client.repository(&env.repo).await?;
    let own = env
        .fake
        .installation_tokens()
        .pop()
        .ok_or_else(|| anyhow!("no token minted"))?;
    client
        .revoke_installation_token(&SecretString::from(own.token))
        .await?;
    env.fake.clear_requests();

    client.repository(&env.repo).await?;

    assert_eq!(
        exchanges(&env),
        vec![
            exchange("GET", "/repos/octo/hello", "installation-token", 401),
            exchange("POST", TOKENS_PATH, "bearer-jwt", 201),
            exchange("GET", "/repos/octo/hello", "installation-token", 200),
        ]
    );
    Ok(())
}

#[tokio::test]
async fn session_tokens_are_restricted_usable_and_revocable() -> Result<()> {
    let env = app_env().await?;
    env.fake.add_repo(OWNER, "elsewhere", "main");
    let client = app_client(&env)?;
    let permissions = BTreeMap::from([("contents".to_string(), "write".to_string())]);

    let minted = client
        .mint_installation_token(&["hello".to_string()], &permissions)
        .await?;

    let requests = env.fake.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].path, TOKENS_PATH);
    assert_eq!(requests[0].auth.as_deref(), Some("bearer-jwt"));
    assert_eq!(
        requests[0].body,
        Some(json!({"repositories": ["hello"], "permissions": {"contents": "write"}}))
    );
    assert_eq!(minted.permissions, permissions);
    assert_eq!(minted.repositories, vec!["hello".to_string()]);
    assert_eq!(minted.repository_selection.as_deref(), Some("selected"));
    assert!(minted.expires_at > chrono::Utc::now() + chrono::TimeDelta::minutes(55));
    let debug = format!("{minted:?}");
    assert!(!debug.contains(minted.token.expose_secret()), "{debug}");

    // The session's token works for its repository only.
    let session = env
        .builder(Credentials::Token(minted.token.clone()))
        .build()?;
    session.repository(&env.repo).await?;
    let other = ccplant_github::RepoRef::new(OWNER, "elsewhere");
    assert!(matches!(
        session.repository(&other).await,
        Err(Error::User { status: 404, .. })
    ));

    env.fake.clear_requests();
    client.revoke_installation_token(&minted.token).await?;
    assert_eq!(
        exchanges(&env),
        vec![exchange(
            "DELETE",
            "/installation/token",
            "installation-token",
            204
        )]
    );
    assert!(
        env.fake
            .installation_tokens()
            .iter()
            .any(|t| t.revoked && t.repositories == Some(vec!["hello".to_string()]))
    );
    assert!(matches!(
        session.repository(&env.repo).await,
        Err(Error::User { status: 401, .. })
    ));
    // Revoking again is fine: the token is already unusable.
    client.revoke_installation_token(&minted.token).await?;
    Ok(())
}

#[tokio::test]
async fn a_jwt_signed_with_the_wrong_key_is_a_401_user_error() -> Result<()> {
    let env = app_env().await?;
    let client = env
        .builder(app_credentials(OTHER_PRIVATE_KEY_PEM))
        .build()?;
    match client.repository(&env.repo).await {
        Err(Error::User { status, message }) => assert_eq!(
            (status, message.as_str()),
            (
                401,
                "A JSON web token could not be decoded (POST /app/installations/777/access_tokens)"
            )
        ),
        other => panic!("expected a 401 user error, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn token_credentials_cannot_mint_installation_tokens() -> Result<()> {
    let env = Env::start().await?;
    let result = env
        .client()?
        .mint_installation_token(&[], &BTreeMap::new())
        .await;
    assert!(matches!(result, Err(Error::Config { .. })), "{result:?}");
    assert!(env.fake.requests().is_empty());
    Ok(())
}

#[tokio::test]
async fn a_private_key_that_is_not_pem_is_rejected_when_building() -> Result<()> {
    let env = app_env().await?;
    let built = env.builder(app_credentials("not a key")).build();
    assert!(
        matches!(built, Err(Error::InvalidCredentials { .. })),
        "{built:?}"
    );
    Ok(())
}

#[tokio::test]
async fn an_apps_identity_is_its_bot_asked_once_with_the_jwt() -> Result<()> {
    let env = app_env().await?;
    let client = app_client(&env)?;
    for _ in 0..2 {
        assert_eq!(
            client.identity().await?,
            Identity {
                login: "ccplant-app[bot]".into(),
                kind: IdentityKind::App {
                    slug: "ccplant-app".into()
                },
            }
        );
    }
    assert_eq!(
        exchanges(&env),
        vec![exchange("GET", "/app", "bearer-jwt", 200)]
    );
    // It is the author GitHub shows on what the installation creates.
    let issue = client
        .create_issue(
            &env.repo,
            &NewIssue {
                title: "by the bot".into(),
                ..NewIssue::default()
            },
            &task_marker("bot"),
        )
        .await?;
    assert_eq!(issue.user_login, Some(client.identity().await?.login));
    Ok(())
}

#[tokio::test]
async fn a_closed_write_gate_is_asked_after_the_token_exchange_and_sends_no_write() -> Result<()> {
    let env = app_env().await?;
    let asked = Arc::new(AtomicUsize::new(0));
    let counter = asked.clone();
    let client = env
        .builder(app_credentials(TEST_APP_PRIVATE_KEY_PEM))
        .write_gate(Arc::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            false
        }))
        .build()?;

    let refused = client
        .create_issue(
            &env.repo,
            &NewIssue {
                title: "never sent".into(),
                ..NewIssue::default()
            },
            &task_marker("gate"),
        )
        .await;

    match &refused {
        Err(e @ Error::WriteRefused { endpoint }) => {
            assert_eq!(*endpoint, "POST /repos/{owner}/{repo}/issues");
            assert_eq!(
                e.to_string(),
                "POST /repos/{owner}/{repo}/issues not sent: this replica is no longer the leader"
            );
            assert!(!e.is_retryable());
        }
        other => panic!("expected WriteRefused, got {other:?}"),
    }
    assert_eq!(asked.load(Ordering::SeqCst), 1);
    // The token exchange went out (it changes no repository), the write did not.
    assert_eq!(
        exchanges(&env),
        vec![exchange("POST", TOKENS_PATH, "bearer-jwt", 201)]
    );
    assert!(env.fake.issues(OWNER, REPO).is_empty());

    // Reads, session tokens and their revocation are not gated either.
    client.repository(&env.repo).await?;
    let minted = client
        .mint_installation_token(&[], &BTreeMap::new())
        .await?;
    client.revoke_installation_token(&minted.token).await?;
    assert_eq!(asked.load(Ordering::SeqCst), 1);
    let posts: Vec<String> = env
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.method != "GET")
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(
        posts,
        vec![
            format!("POST {TOKENS_PATH}"),
            format!("POST {TOKENS_PATH}"),
            "DELETE /installation/token".to_string(),
        ]
    );
    Ok(())
}
