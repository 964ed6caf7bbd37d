//! Shared setup: a fresh fake per test, a repository, tokens, and request assertions.

use anyhow::Result;
use ccplant_github::{
    Credentials, GitHubClient, GitHubClientBuilder, PacerRegistry, RepoRef, SecretString,
};
use ccplant_testenv::fake_github::FakeGitHub;
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::time::Duration;

pub const OWNER: &str = "octo";
pub const REPO: &str = "hello";
/// The author's personal access token (user `octocat`).
pub const TOKEN: &str = "ghp_author_0123456789";
pub const LOGIN: &str = "octocat";
/// A second account, for approvals.
pub const REVIEWER_TOKEN: &str = "ghp_reviewer_0123456789";
pub const REVIEWER: &str = "reviewer";
pub const UID: &str = "6f1c2a7e-0b1d-4c55-9a43-1f0e2d3c4b5a";

pub struct Env {
    pub fake: FakeGitHub,
    pub repo: RepoRef,
}

impl Env {
    /// A fake with `octo/hello` (default branch `main`) and the two tokens.
    pub async fn start() -> Result<Env> {
        let fake = FakeGitHub::start().await?;
        fake.add_repo(OWNER, REPO, "main");
        fake.add_token(TOKEN, LOGIN);
        fake.add_token(REVIEWER_TOKEN, REVIEWER);
        Ok(Env {
            fake,
            repo: RepoRef::new(OWNER, REPO),
        })
    }

    /// A client for `credentials` against the fake, with its own pacer (tests run in
    /// parallel and must not share the 80/min budget).
    pub fn builder(&self, credentials: Credentials) -> GitHubClientBuilder {
        GitHubClient::builder(credentials)
            .api_url(self.fake.url())
            .pacing(PacerRegistry::new(80, Duration::from_secs(60)))
    }

    pub fn token_builder(&self, token: &str) -> GitHubClientBuilder {
        self.builder(Credentials::Token(SecretString::from(token)))
    }

    /// The author's client.
    pub fn client(&self) -> Result<GitHubClient> {
        Ok(self.token_builder(TOKEN).build()?)
    }

    pub fn reviewer(&self) -> Result<GitHubClient> {
        Ok(self.token_builder(REVIEWER_TOKEN).build()?)
    }

    /// Every request since the last `clear_requests`, as [`Req`]s.
    pub fn requests(&self) -> Vec<Req> {
        self.fake.requests().into_iter().map(Req::from).collect()
    }

    /// Pushes a commit dated `date` on `branch` and returns its SHA.
    pub fn push(&self, branch: &str, message: &str, date: DateTime<Utc>) -> String {
        self.fake.push_commit(OWNER, REPO, branch, message, date)
    }
}

/// A request as the tests compare it: method, path, decoded query pairs in order, JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct Req {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub body: Option<Value>,
}

impl From<ccplant_testenv::fake_github::RecordedRequest> for Req {
    fn from(r: ccplant_testenv::fake_github::RecordedRequest) -> Self {
        Req {
            method: r.method,
            path: r.path,
            query: url::form_urlencoded::parse(r.query.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
            body: r.body,
        }
    }
}

pub fn req(method: &str, path: &str, query: &[(&str, &str)], body: Option<Value>) -> Req {
    Req {
        method: method.to_string(),
        path: path.to_string(),
        query: query
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        body,
    }
}

pub fn get(path: &str, query: &[(&str, &str)]) -> Req {
    req("GET", path, query, None)
}

/// Now, truncated to whole seconds (GitHub's timestamps have no fractions).
pub fn now_secs() -> DateTime<Utc> {
    DateTime::from_timestamp(Utc::now().timestamp(), 0).unwrap_or_default()
}

pub fn task_marker(name: &str) -> String {
    ccplant_github::marker("team-a", name, UID)
}
