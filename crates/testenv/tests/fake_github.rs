//! The fake GitHub over real HTTP, with a plain HTTP/1.1 client (hyper's connection API, one
//! connection per request), asserting GitHub's shapes, headers, errors, auth and faults.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use anyhow::{Context, Result, bail};
use ccplant_testenv::fake_github::{FakeGitHub, Fault, FaultKind, test_keys};
use chrono::{TimeDelta, Utc};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;

const OWNER: &str = "acme";
const REPO: &str = "widgets";
const ALICE: &str = "ghp_alice0000000000000000000000000000000";
const BOB: &str = "ghp_bob000000000000000000000000000000000";
const APP_ID: u64 = 4242;
const INSTALLATION_ID: u64 = 777;

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: http::HeaderMap,
    body: Value,
}

impl Reply {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("no {name} header in {self:?}"))
    }

    fn header_number(&self, name: &str) -> i64 {
        self.header(name).parse().unwrap()
    }
}

/// A minimal GitHub client: one fresh HTTP/1.1 connection per request.
#[derive(Clone)]
struct Client {
    base: String,
    authorization: Option<String>,
    extra_headers: Vec<(&'static str, String)>,
}

impl Client {
    fn new(github: &FakeGitHub, authorization: Option<&str>) -> Self {
        Client {
            base: github.url(),
            authorization: authorization.map(str::to_string),
            extra_headers: Vec::new(),
        }
    }

    fn token(github: &FakeGitHub, token: &str) -> Self {
        Self::new(github, Some(&format!("token {token}")))
    }

    fn with_header(mut self, name: &'static str, value: &str) -> Self {
        self.extra_headers.push((name, value.to_string()));
        self
    }

    /// Sends a request; `Err` when the connection fails or closes without a response.
    async fn try_send(&self, method: &str, target: &str, body: Option<Value>) -> Result<Reply> {
        let target = target.strip_prefix(&self.base).unwrap_or(target);
        let authority = self.base.trim_start_matches("http://");
        let stream = tokio::net::TcpStream::connect(authority).await?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let mut request = http::Request::builder()
            .method(method)
            .uri(target)
            .header("host", authority)
            .header("accept", "application/vnd.github+json")
            .header("user-agent", "ccplant-fake-github-test");
        if let Some(authorization) = &self.authorization {
            request = request.header("authorization", authorization);
        }
        for (name, value) in &self.extra_headers {
            request = request.header(*name, value);
        }
        let payload = match body {
            Some(body) => {
                request = request.header("content-type", "application/json");
                Bytes::from(serde_json::to_vec(&body)?)
            }
            None => Bytes::new(),
        };
        let response = sender
            .send_request(request.body(Full::new(payload))?)
            .await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await?.to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).context("response body is not JSON")?
        };
        Ok(Reply {
            status,
            headers,
            body,
        })
    }

    async fn send(&self, method: &str, target: &str, body: Option<Value>) -> Reply {
        self.try_send(method, target, body)
            .await
            .unwrap_or_else(|e| panic!("{method} {target}: {e:#}"))
    }

    async fn get(&self, target: &str) -> Reply {
        self.send("GET", target, None).await
    }

    async fn post(&self, target: &str, body: Value) -> Reply {
        self.send("POST", target, Some(body)).await
    }

    async fn put(&self, target: &str, body: Value) -> Reply {
        self.send("PUT", target, Some(body)).await
    }
}

fn repo_path(rest: &str) -> String {
    format!("/repos/{OWNER}/{REPO}{rest}")
}

/// A fake with acme/widgets and two users, alice and bob.
async fn fake() -> FakeGitHub {
    let github = FakeGitHub::start().await.unwrap();
    github.add_repo(OWNER, REPO, "main");
    github.add_token(ALICE, "alice");
    github.add_token(BOB, "bob");
    github
}

fn app_jwt(private_key_pem: &str, iss: Value, iat_offset: i64, exp_offset: i64) -> String {
    let now = Utc::now().timestamp();
    let claims = json!({"iat": now + iat_offset, "exp": now + exp_offset, "iss": iss});
    let key = EncodingKey::from_rsa_pem(private_key_pem.as_bytes()).unwrap();
    jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &key).unwrap()
}

/// octocrab's claims: issued 60 s ago, expiring in 9 minutes.
fn valid_jwt() -> String {
    app_jwt(test_keys::TEST_APP_PRIVATE_KEY_PEM, json!(APP_ID), -60, 540)
}

fn validation_error(message: &str) -> Value {
    json!({
        "message": "Validation Failed",
        "errors": [{"resource": "PullRequest", "code": "custom", "message": message}],
        "documentation_url": "https://docs.github.com/rest/pulls/pulls#create-a-pull-request",
        "status": "422",
    })
}

#[tokio::test]
async fn repository_branches_and_commits_have_githubs_shapes() {
    let github = fake().await;
    let date = Utc::now() - TimeDelta::hours(3);
    let main_head = github.branch_head(OWNER, REPO, "main").unwrap();
    let sha = github.push_commit(OWNER, REPO, "feature/x", "Add x\n\nBecause.", date);
    let alice = Client::token(&github, ALICE);

    let repo = alice.get(&repo_path("")).await;
    assert_eq!(repo.status, 200);
    assert_eq!(
        repo.header("content-type"),
        "application/json; charset=utf-8"
    );
    assert!(!repo.header("x-github-request-id").is_empty());
    for name in [
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
        "x-ratelimit-used",
    ] {
        repo.header_number(name);
    }
    assert_eq!(repo.header("x-ratelimit-resource"), "core");
    let body = &repo.body;
    assert_eq!(body["name"], REPO);
    assert_eq!(body["full_name"], "acme/widgets");
    assert_eq!(body["owner"]["login"], OWNER);
    assert_eq!(body["owner"]["type"], "Organization");
    assert_eq!(body["private"], true);
    assert_eq!(body["default_branch"], "main");
    assert_eq!(body["url"], format!("{}/repos/acme/widgets", github.url()));
    assert_eq!(body["html_url"], format!("{}/acme/widgets", github.url()));
    for field in ["id", "node_id", "created_at", "updated_at", "pushed_at"] {
        assert!(!body[field].is_null(), "{field} missing in {body}");
    }

    let branches = alice.get(&repo_path("/branches")).await;
    assert_eq!(branches.status, 200);
    assert!(branches.headers.get("link").is_none());
    assert_eq!(
        branches.body,
        json!([
            {"name": "feature/x", "commit": {"sha": sha, "url": format!("{}/repos/acme/widgets/commits/{sha}", github.url())}, "protected": false},
            {"name": "main", "commit": {"sha": main_head, "url": format!("{}/repos/acme/widgets/commits/{main_head}", github.url())}, "protected": false},
        ])
    );
    let branch = alice.get(&repo_path("/branches/feature/x")).await;
    assert_eq!(branch.body["commit"]["sha"], sha);

    let commit = alice.get(&repo_path(&format!("/commits/{sha}"))).await;
    assert_eq!(commit.status, 200);
    assert_eq!(sha.len(), 40);
    assert!(sha.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(commit.body["sha"], sha);
    assert_eq!(commit.body["commit"]["message"], "Add x\n\nBecause.");
    assert_eq!(
        commit.body["commit"]["author"]["date"],
        date.format("%Y-%m-%dT%H:%M:%SZ").to_string()
    );
    assert_eq!(
        commit.body["commit"]["committer"]["date"],
        commit.body["commit"]["author"]["date"]
    );
    assert_eq!(commit.body["parents"][0]["sha"], main_head);
    assert_eq!(commit.body["author"], Value::Null);
    // A branch name and a short SHA resolve too, like GitHub's {ref}.
    assert_eq!(
        alice.get(&repo_path("/commits/feature%2Fx")).await.body["sha"],
        sha
    );
    assert_eq!(
        alice
            .get(&repo_path(&format!("/commits/{}", &sha[..7])))
            .await
            .body["sha"],
        sha
    );
    let missing = alice
        .get(&repo_path(
            "/commits/0000000000000000000000000000000000000000",
        ))
        .await;
    assert_eq!(missing.status, 422);

    // Private repositories: unknown ones and anonymous callers get 404, bad tokens 401.
    let not_found = alice.get("/repos/acme/nope").await;
    assert_eq!(not_found.status, 404);
    assert_eq!(not_found.body["message"], "Not Found");
    assert_eq!(
        Client::new(&github, None).get(&repo_path("")).await.status,
        404
    );
    let bad = Client::token(&github, "ghp_wrong")
        .get(&repo_path(""))
        .await;
    assert_eq!(bad.status, 401);
    assert_eq!(bad.body["message"], "Bad credentials");
    assert_eq!(bad.body["status"], "401");
}

#[tokio::test]
async fn issues_and_comments_are_created_and_listed_in_githubs_order() {
    let github = fake().await;
    let alice = Client::token(&github, ALICE);
    let bob = Client::token(&github, BOB);

    let created = alice
        .post(
            &repo_path("/issues"),
            json!({"title": "First", "body": "one", "labels": ["bug"], "assignees": ["bob"], "milestone": 1}),
        )
        .await;
    assert_eq!(created.status, 201);
    let issue = &created.body;
    assert_eq!(issue["number"], 1);
    assert_eq!(issue["state"], "open");
    assert_eq!(issue["title"], "First");
    assert_eq!(issue["body"], "one");
    assert_eq!(issue["user"]["login"], "alice");
    assert_eq!(issue["user"]["type"], "User");
    assert_eq!(issue["labels"][0]["name"], "bug");
    assert_eq!(issue["assignees"][0]["login"], "bob");
    assert_eq!(issue["milestone"]["number"], 1);
    assert_eq!(issue["comments"], 0);
    assert_eq!(issue["closed_at"], Value::Null);
    assert_eq!(
        issue["html_url"],
        format!("{}/acme/widgets/issues/1", github.url())
    );
    assert_eq!(created.header("location"), issue["url"].as_str().unwrap());
    assert!(issue.get("pull_request").is_none());

    bob.post(&repo_path("/issues"), json!({"title": "Second"}))
        .await;
    alice
        .post(&repo_path("/issues"), json!({"title": "Third"}))
        .await;
    let missing_title = alice
        .post(&repo_path("/issues"), json!({"body": "no title"}))
        .await;
    assert_eq!(missing_title.status, 422);
    assert_eq!(
        missing_title.body["errors"],
        json!([{"resource": "Issue", "field": "title", "code": "missing_field"}])
    );

    let numbers = |reply: &Reply| -> Vec<u64> {
        reply
            .body
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["number"].as_u64().unwrap())
            .collect()
    };
    let listed = alice
        .get(&repo_path("/issues?state=all&sort=created&direction=desc"))
        .await;
    assert_eq!(numbers(&listed), [3, 2, 1]);
    let ascending = alice.get(&repo_path("/issues?direction=asc")).await;
    assert_eq!(numbers(&ascending), [1, 2, 3]);
    let by_alice = alice
        .get(&repo_path("/issues?state=all&creator=alice"))
        .await;
    assert_eq!(numbers(&by_alice), [3, 1]);
    let closed = alice.get(&repo_path("/issues?state=closed")).await;
    assert_eq!(numbers(&closed), Vec::<u64>::new());
    let future = (Utc::now() + TimeDelta::hours(1)).format("%Y-%m-%dT%H:%M:%SZ");
    assert_eq!(
        numbers(
            &alice
                .get(&repo_path(&format!("/issues?since={future}")))
                .await
        ),
        Vec::<u64>::new()
    );

    let first = alice
        .post(
            &repo_path("/issues/1/comments"),
            json!({"body": "@claude implement this"}),
        )
        .await;
    assert_eq!(first.status, 201);
    assert_eq!(first.body["body"], "@claude implement this");
    assert_eq!(first.body["user"]["login"], "alice");
    assert_eq!(
        first.body["issue_url"],
        format!("{}/repos/acme/widgets/issues/1", github.url())
    );
    let second = bob
        .post(&repo_path("/issues/1/comments"), json!({"body": "second"}))
        .await;
    assert!(second.body["id"].as_u64() > first.body["id"].as_u64());
    let comments = alice.get(&repo_path("/issues/1/comments")).await;
    let bodies: Vec<&str> = comments
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, ["@claude implement this", "second"]);
    assert_eq!(alice.get(&repo_path("/issues/1")).await.body["comments"], 2);
    assert_eq!(
        alice
            .post(&repo_path("/issues/99/comments"), json!({"body": "x"}))
            .await
            .status,
        404
    );
    assert_eq!(
        alice
            .post(&repo_path("/issues/1/comments"), json!({}))
            .await
            .status,
        422
    );
    assert_eq!(github.comments(OWNER, REPO, 1).len(), 2);

    // Pull requests share the issue counter and show up in the issue list with "pull_request".
    github.push_commit(OWNER, REPO, "feature", "Feature", Utc::now());
    let pull = alice
        .post(
            &repo_path("/pulls"),
            json!({"title": "PR", "head": "feature", "base": "main"}),
        )
        .await;
    assert_eq!(pull.body["number"], 4);
    let listed = alice.get(&repo_path("/issues")).await;
    assert_eq!(numbers(&listed), [4, 3, 2, 1]);
    assert!(
        listed.body[0]["pull_request"]["url"]
            .as_str()
            .unwrap()
            .ends_with("/pulls/4")
    );
    let fake_issues: Vec<u64> = github
        .issues(OWNER, REPO)
        .iter()
        .map(|i| i["number"].as_u64().unwrap())
        .collect();
    assert_eq!(fake_issues, [1, 2, 3]);
}

#[tokio::test]
async fn pagination_follows_per_page_with_githubs_link_headers() {
    let github = fake().await;
    let alice = Client::token(&github, ALICE);
    for n in 1..=7 {
        alice
            .post(
                &repo_path("/issues"),
                json!({"title": format!("issue {n}")}),
            )
            .await;
    }
    let base = format!("{}{}", github.url(), repo_path("/issues"));
    let link =
        |page: u32, rel: &str| format!("<{base}?state=all&per_page=3&page={page}>; rel=\"{rel}\"");

    let first = alice.get(&repo_path("/issues?state=all&per_page=3")).await;
    assert_eq!(first.body.as_array().unwrap().len(), 3);
    assert_eq!(
        first.header("link"),
        [link(2, "next"), link(3, "last")].join(", ")
    );

    let second = alice
        .get(&repo_path("/issues?state=all&per_page=3&page=2"))
        .await;
    assert_eq!(
        second.header("link"),
        [
            link(1, "prev"),
            link(3, "next"),
            link(3, "last"),
            link(1, "first")
        ]
        .join(", ")
    );

    // Following rel="next" visits every issue exactly once, newest first.
    let mut seen = Vec::new();
    let mut next = Some(format!("{base}?state=all&per_page=3"));
    let mut pages = 0;
    while let Some(url) = next.take() {
        let page = alice.get(&url).await;
        pages += 1;
        seen.extend(
            page.body
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["number"].as_u64().unwrap()),
        );
        next = page.headers.get("link").and_then(|l| {
            l.to_str()
                .unwrap()
                .split(", ")
                .find(|part| part.ends_with("rel=\"next\""))
                .map(|part| {
                    part.trim_start_matches('<')
                        .split('>')
                        .next()
                        .unwrap()
                        .to_string()
                })
        });
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, [7, 6, 5, 4, 3, 2, 1]);
    let last = alice
        .get(&repo_path("/issues?state=all&per_page=3&page=3"))
        .await;
    assert_eq!(
        last.header("link"),
        [link(2, "prev"), link(1, "first")].join(", ")
    );

    // Default 30 per page, at most 100.
    for n in 8..=31 {
        alice
            .post(
                &repo_path("/issues"),
                json!({"title": format!("issue {n}")}),
            )
            .await;
    }
    let default_page = alice.get(&repo_path("/issues")).await;
    assert_eq!(default_page.body.as_array().unwrap().len(), 30);
    assert!(
        default_page
            .header("link")
            .contains(&format!("<{base}?page=2>; rel=\"next\""))
    );
    let capped = alice.get(&repo_path("/issues?per_page=500")).await;
    assert_eq!(capped.body.as_array().unwrap().len(), 31);
    assert!(capped.headers.get("link").is_none());
}

#[tokio::test]
async fn pull_requests_are_validated_like_github() {
    let github = fake().await;
    let alice = Client::token(&github, ALICE);
    let head_sha = github.push_commit(OWNER, REPO, "feature", "Feature", Utc::now());
    let main_sha = github.branch_head(OWNER, REPO, "main").unwrap();

    let created = alice
        .post(
            &repo_path("/pulls"),
            json!({"title": "Add feature", "head": "acme:feature", "base": "main", "body": "text", "draft": false}),
        )
        .await;
    assert_eq!(created.status, 201);
    let pull = &created.body;
    assert_eq!(pull["number"], 1);
    assert_eq!(pull["state"], "open");
    assert_eq!(pull["title"], "Add feature");
    assert_eq!(pull["body"], "text");
    assert_eq!(pull["user"]["login"], "alice");
    assert_eq!(pull["draft"], false);
    assert_eq!(pull["merged"], false);
    assert_eq!(pull["mergeable"], true);
    assert_eq!(pull["merged_at"], Value::Null);
    assert_eq!(pull["merge_commit_sha"], Value::Null);
    assert_eq!(pull["head"]["ref"], "feature");
    assert_eq!(pull["head"]["label"], "acme:feature");
    assert_eq!(pull["head"]["sha"], head_sha);
    assert_eq!(pull["head"]["repo"]["full_name"], "acme/widgets");
    assert_eq!(pull["base"]["ref"], "main");
    assert_eq!(pull["base"]["sha"], main_sha);
    assert_eq!(
        pull["html_url"],
        format!("{}/acme/widgets/pull/1", github.url())
    );

    let duplicate = alice
        .post(
            &repo_path("/pulls"),
            json!({"title": "Again", "head": "feature", "base": "main"}),
        )
        .await;
    assert_eq!(duplicate.status, 422);
    assert_eq!(
        duplicate.body,
        validation_error("A pull request already exists for acme:feature.")
    );

    let unknown_head = alice
        .post(
            &repo_path("/pulls"),
            json!({"title": "x", "head": "nope", "base": "main"}),
        )
        .await;
    assert_eq!(unknown_head.status, 422);
    assert_eq!(
        unknown_head.body["errors"],
        json!([{"resource": "PullRequest", "field": "head", "code": "invalid"}])
    );
    assert_eq!(unknown_head.body["message"], "Validation Failed");

    // "ahead" is main plus a commit: proposing main into it brings nothing.
    github.push_commit(OWNER, REPO, "ahead", "Ahead", Utc::now());
    let nothing = alice
        .post(
            &repo_path("/pulls"),
            json!({"title": "x", "head": "main", "base": "ahead"}),
        )
        .await;
    assert_eq!(nothing.status, 422);
    assert_eq!(
        nothing.body,
        validation_error("No commits between ahead and main")
    );

    // A new commit on the head branch moves the open PR's head.
    let moved = github.push_commit(OWNER, REPO, "feature", "More", Utc::now());
    assert_eq!(
        alice.get(&repo_path("/pulls/1")).await.body["head"]["sha"],
        moved
    );

    github.push_commit(OWNER, REPO, "other", "Other", Utc::now());
    alice
        .post(
            &repo_path("/pulls"),
            json!({"title": "Other", "head": "other", "base": "main"}),
        )
        .await;
    let numbers = |reply: &Reply| -> Vec<u64> {
        reply
            .body
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["number"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(
        numbers(&alice.get(&repo_path("/pulls?state=all")).await),
        [2, 1]
    );
    assert_eq!(
        numbers(&alice.get(&repo_path("/pulls?direction=asc")).await),
        [1, 2]
    );
    assert_eq!(
        numbers(&alice.get(&repo_path("/pulls?head=acme:feature")).await),
        [1]
    );
    assert_eq!(
        numbers(&alice.get(&repo_path("/pulls?head=acme:nope")).await),
        Vec::<u64>::new()
    );
    // Like GitHub, a head filter without the owner is ignored.
    assert_eq!(
        numbers(&alice.get(&repo_path("/pulls?head=feature")).await),
        [2, 1]
    );
    assert_eq!(
        numbers(&alice.get(&repo_path("/pulls?base=ahead")).await),
        Vec::<u64>::new()
    );
    assert_eq!(
        numbers(&alice.get(&repo_path("/pulls?state=closed")).await),
        Vec::<u64>::new()
    );
    // The list has GitHub's short shape: no "merged"/"mergeable" (use merged_at).
    let listed = alice.get(&repo_path("/pulls")).await;
    assert!(listed.body[0].get("merged").is_none());
    assert!(listed.body[0].get("merged_at").is_some());
    assert_eq!(github.pulls(OWNER, REPO).len(), 2);
    assert_eq!(alice.get(&repo_path("/pulls/99")).await.status, 404);
}

#[tokio::test]
async fn reviews_approve_and_self_approval_is_refused() {
    let github = fake().await;
    let alice = Client::token(&github, ALICE);
    let bob = Client::token(&github, BOB);
    let head = github.push_commit(OWNER, REPO, "feature", "Feature", Utc::now());
    alice
        .post(
            &repo_path("/pulls"),
            json!({"title": "PR", "head": "feature", "base": "main"}),
        )
        .await;

    let own = alice
        .post(
            &repo_path("/pulls/1/reviews"),
            json!({"event": "APPROVE", "body": "LGTM"}),
        )
        .await;
    assert_eq!(own.status, 422);
    assert_eq!(
        own.body,
        json!({
            "message": "Unprocessable Entity",
            "errors": ["Review Can not approve your own pull request"],
            "documentation_url": "https://docs.github.com/rest/pulls/reviews#create-a-review-for-a-pull-request",
            "status": "422",
        })
    );

    let approved = bob
        .post(
            &repo_path("/pulls/1/reviews"),
            json!({"event": "APPROVE", "body": "LGTM", "commit_id": head}),
        )
        .await;
    assert_eq!(approved.status, 200);
    assert_eq!(approved.body["state"], "APPROVED");
    assert_eq!(approved.body["user"]["login"], "bob");
    assert_eq!(approved.body["body"], "LGTM");
    assert_eq!(approved.body["commit_id"], head);
    assert_eq!(
        approved.body["pull_request_url"],
        format!("{}/repos/acme/widgets/pulls/1", github.url())
    );
    assert!(approved.body["submitted_at"].is_string());

    let commented = alice
        .post(
            &repo_path("/pulls/1/reviews"),
            json!({"event": "COMMENT", "body": "note"}),
        )
        .await;
    assert_eq!(commented.body["state"], "COMMENTED");
    let listed = alice.get(&repo_path("/pulls/1/reviews")).await;
    let states: Vec<&str> = listed
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["APPROVED", "COMMENTED"]);
    assert_eq!(github.reviews(OWNER, REPO, 1).len(), 2);
    assert_eq!(
        bob.post(&repo_path("/pulls/9/reviews"), json!({"event": "APPROVE"}))
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn merging_checks_the_head_sha_and_refuses_a_second_merge() {
    let github = fake().await;
    let alice = Client::token(&github, ALICE);
    let bob = Client::token(&github, BOB);
    let head = github.push_commit(OWNER, REPO, "feature", "Feature", Utc::now());
    let main_before = github.branch_head(OWNER, REPO, "main").unwrap();
    alice
        .post(
            &repo_path("/pulls"),
            json!({"title": "Add feature", "head": "feature", "base": "main"}),
        )
        .await;
    assert_eq!(bob.get(&repo_path("/pulls/1/merge")).await.status, 404);

    let stale = bob
        .put(
            &repo_path("/pulls/1/merge"),
            json!({"sha": main_before, "merge_method": "merge"}),
        )
        .await;
    assert_eq!(stale.status, 409);
    assert_eq!(
        stale.body["message"],
        "Head branch was modified. Review and try the merge again."
    );
    assert_eq!(
        github.branch_head(OWNER, REPO, "main").unwrap(),
        main_before
    );

    let merged = bob
        .put(
            &repo_path("/pulls/1/merge"),
            json!({"sha": head, "merge_method": "merge", "commit_title": "Merge it"}),
        )
        .await;
    assert_eq!(merged.status, 200);
    let merge_sha = merged.body["sha"].as_str().unwrap().to_string();
    assert_eq!(
        merged.body,
        json!({"sha": merge_sha, "merged": true, "message": "Pull Request successfully merged"})
    );
    assert_eq!(github.branch_head(OWNER, REPO, "main").unwrap(), merge_sha);
    let commit = bob.get(&repo_path(&format!("/commits/{merge_sha}"))).await;
    assert_eq!(
        commit.body["parents"],
        json!([
            {"sha": main_before, "url": format!("{}/repos/acme/widgets/commits/{main_before}", github.url()), "html_url": format!("{}/acme/widgets/commit/{main_before}", github.url())},
            {"sha": head, "url": format!("{}/repos/acme/widgets/commits/{head}", github.url()), "html_url": format!("{}/acme/widgets/commit/{head}", github.url())},
        ])
    );
    assert_eq!(commit.body["commit"]["message"], "Merge it\n\nAdd feature");
    assert_eq!(commit.body["author"]["login"], "bob");

    let pull = bob.get(&repo_path("/pulls/1")).await.body;
    assert_eq!(pull["state"], "closed");
    assert_eq!(pull["merged"], true);
    assert_eq!(pull["merge_commit_sha"], merge_sha);
    assert_eq!(pull["merged_by"]["login"], "bob");
    assert!(pull["merged_at"].is_string() && pull["closed_at"].is_string());
    assert_eq!(bob.get(&repo_path("/pulls/1/merge")).await.status, 204);

    let again = bob
        .put(&repo_path("/pulls/1/merge"), json!({"sha": head}))
        .await;
    assert_eq!(again.status, 405);
    assert_eq!(
        again.body,
        json!({
            "message": "Pull Request is not mergeable",
            "documentation_url": "https://docs.github.com/rest/pulls/pulls#merge-a-pull-request",
            "status": "405",
        })
    );
    // The merged branch has nothing left to propose.
    let nothing = alice
        .post(
            &repo_path("/pulls"),
            json!({"title": "x", "head": "feature", "base": "main"}),
        )
        .await;
    assert_eq!(
        nothing.body,
        validation_error("No commits between main and feature")
    );
}

async fn mint_token(client: &Client, body: Value) -> Reply {
    client
        .post(
            &format!("/app/installations/{INSTALLATION_ID}/access_tokens"),
            body,
        )
        .await
}

#[tokio::test]
async fn github_app_tokens_are_verified_restricted_and_revocable() {
    let github = fake().await;
    github.add_repo(OWNER, "other", "main");
    github.add_app(
        APP_ID,
        test_keys::TEST_APP_PUBLIC_KEY_PEM,
        INSTALLATION_ID,
        OWNER,
    );
    let app = Client::new(&github, Some(&format!("Bearer {}", valid_jwt())));

    let minted = mint_token(
        &app,
        json!({"repositories": [REPO], "permissions": {"issues": "write", "pull_requests": "write"}}),
    )
    .await;
    assert_eq!(minted.status, 201, "{:?}", minted.body);
    let token = minted.body["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("ghs_") && token.len() == 40);
    assert_eq!(minted.body["repository_selection"], "selected");
    assert_eq!(minted.body["repositories"][0]["full_name"], "acme/widgets");
    assert_eq!(
        minted.body["permissions"],
        json!({"issues": "write", "pull_requests": "write"})
    );
    let expires_at =
        chrono::DateTime::parse_from_rfc3339(minted.body["expires_at"].as_str().unwrap()).unwrap();
    assert!((expires_at.timestamp() - (Utc::now() + TimeDelta::hours(1)).timestamp()).abs() <= 5);
    let records = github.installation_tokens();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].installation_id, INSTALLATION_ID);
    assert_eq!(records[0].repositories, Some(vec![REPO.to_string()]));
    assert_eq!(
        records[0].permissions,
        json!({"issues": "write", "pull_requests": "write"})
    );
    assert!(!records[0].revoked);

    // The token sees its repository only, and acts as the App's bot.
    let installation = Client::new(&github, Some(&format!("Bearer {token}")));
    assert_eq!(installation.get(&repo_path("")).await.status, 200);
    assert_eq!(installation.get("/repos/acme/other").await.status, 404);
    assert_eq!(
        installation
            .post("/repos/acme/other/issues", json!({"title": "x"}))
            .await
            .status,
        404
    );
    let issue = installation
        .post(&repo_path("/issues"), json!({"title": "From the app"}))
        .await;
    assert_eq!(issue.status, 201);
    assert_eq!(issue.body["user"]["login"], "ccplant-app[bot]");
    assert_eq!(issue.body["user"]["type"], "Bot");
    assert_eq!(installation.get("/user").await.status, 403);

    // Without a repository list the token covers the whole account.
    let all = mint_token(&app, json!({})).await;
    assert_eq!(all.body["repository_selection"], "all");
    let all_token = Client::token(&github, all.body["token"].as_str().unwrap());
    assert_eq!(all_token.get("/repos/acme/other").await.status, 200);
    // Repositories outside the installation cannot be requested.
    let foreign = mint_token(&app, json!({"repositories": ["nope"]})).await;
    assert_eq!(foreign.status, 422);

    // JWTs: the wrong key, an expired or too long-lived JWT, an unknown App, or a token that is
    // not a JWT are all refused with 401; JWTs do not open repository routes.
    for (what, jwt) in [
        (
            "wrong key",
            app_jwt(test_keys::OTHER_PRIVATE_KEY_PEM, json!(APP_ID), -60, 540),
        ),
        (
            "expired",
            app_jwt(
                test_keys::TEST_APP_PRIVATE_KEY_PEM,
                json!(APP_ID),
                -700,
                -60,
            ),
        ),
        (
            "exp too far",
            app_jwt(test_keys::TEST_APP_PRIVATE_KEY_PEM, json!(APP_ID), 0, 3600),
        ),
        (
            "issued in the future",
            app_jwt(test_keys::TEST_APP_PRIVATE_KEY_PEM, json!(APP_ID), 300, 500),
        ),
        (
            "unknown app",
            app_jwt(test_keys::TEST_APP_PRIVATE_KEY_PEM, json!(1), -60, 540),
        ),
    ] {
        let refused = mint_token(
            &Client::new(&github, Some(&format!("Bearer {jwt}"))),
            json!({}),
        )
        .await;
        assert_eq!(refused.status, 401, "{what}: {:?}", refused.body);
    }
    let string_iss = app_jwt(
        test_keys::TEST_APP_PRIVATE_KEY_PEM,
        json!(APP_ID.to_string()),
        -60,
        540,
    );
    assert_eq!(
        mint_token(
            &Client::new(&github, Some(&format!("Bearer {string_iss}"))),
            json!({})
        )
        .await
        .status,
        201
    );
    let with_pat = mint_token(&Client::token(&github, ALICE), json!({})).await;
    assert_eq!(with_pat.status, 401);
    assert_eq!(
        with_pat.body["message"],
        "A JSON web token could not be decoded"
    );
    assert_eq!(app.get(&repo_path("")).await.status, 403);
    assert_eq!(
        app.post("/app/installations/1/access_tokens", json!({}))
            .await
            .status,
        404
    );
    let installation_info = app
        .get(&format!("/app/installations/{INSTALLATION_ID}"))
        .await;
    assert_eq!(installation_info.body["account"]["login"], OWNER);
    assert_eq!(
        app.get(&repo_path("/installation")).await.body["id"],
        INSTALLATION_ID
    );

    // Revocation: 204, then the token is dead everywhere.
    let revoked = installation
        .send("DELETE", "/installation/token", None)
        .await;
    assert_eq!(revoked.status, 204);
    let after = installation.get(&repo_path("")).await;
    assert_eq!(after.status, 401);
    assert_eq!(after.body["message"], "Bad credentials");
    assert!(github.installation_tokens()[0].revoked);
    assert_eq!(all_token.get(&repo_path("")).await.status, 200);
}

#[tokio::test]
async fn installation_tokens_expire_after_their_ttl() {
    let github = fake().await;
    github.add_app(
        APP_ID,
        test_keys::TEST_APP_PUBLIC_KEY_PEM,
        INSTALLATION_ID,
        OWNER,
    );
    github.set_installation_token_ttl(Duration::from_millis(1500));
    let app = Client::new(&github, Some(&format!("Bearer {}", valid_jwt())));
    let minted = mint_token(&app, json!({})).await;
    let token = Client::token(&github, minted.body["token"].as_str().unwrap());
    assert_eq!(token.get(&repo_path("")).await.status, 200);

    // Waits for the TTL (polling, with a deadline).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = 200;
    while Instant::now() < deadline {
        last = token.get(&repo_path("")).await.status;
        if last == 401 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last, 401, "the token still worked 10 s after a 1.5 s TTL");
    let expires_at = github.installation_tokens()[0].expires_at;
    assert!(expires_at <= Utc::now());
}

#[tokio::test]
async fn injected_faults_behave_like_githubs_failures() {
    let github = fake().await;
    let alice = Client::token(&github, ALICE);
    let issue = json!({"title": "Faulty"});

    // 5xx: nothing applied. A fault on another path does not fire.
    github.inject(Fault::new(FaultKind::Status(500)).path_contains("/pulls"));
    github.inject(
        Fault::new(FaultKind::Status(502))
            .method("POST")
            .path_contains("/issues"),
    );
    let failed = alice.post(&repo_path("/issues"), issue.clone()).await;
    assert_eq!(failed.status, 502);
    assert_eq!(failed.body["message"], "Bad Gateway");
    assert!(github.issues(OWNER, REPO).is_empty());
    assert_eq!(alice.get(&repo_path("/pulls")).await.status, 500);

    // Latency: the answer comes late but complete.
    github.inject(Fault::new(FaultKind::Latency(Duration::from_millis(300))));
    let started = Instant::now();
    assert_eq!(alice.get(&repo_path("")).await.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));

    // Primary rate limit: 403, remaining 0, reset in the future, GitHub's message.
    github.inject(Fault::new(FaultKind::PrimaryRateLimit {
        reset_in: Duration::from_secs(120),
    }));
    let limited = alice.post(&repo_path("/issues"), issue.clone()).await;
    assert_eq!(limited.status, 403);
    assert_eq!(limited.header("x-ratelimit-remaining"), "0");
    let reset = limited.header_number("x-ratelimit-reset");
    let now = Utc::now().timestamp();
    assert!(
        (now + 119..=now + 122).contains(&reset),
        "reset {reset}, now {now}"
    );
    assert!(
        limited.body["message"]
            .as_str()
            .unwrap()
            .starts_with("API rate limit exceeded for user ID")
    );
    assert!(github.issues(OWNER, REPO).is_empty());

    // Secondary rate limit: 403 with retry-after, remaining left.
    github.inject(Fault::new(FaultKind::SecondaryRateLimit {
        retry_after: Duration::from_secs(30),
    }));
    let secondary = alice.post(&repo_path("/issues"), issue.clone()).await;
    assert_eq!(secondary.status, 403);
    assert_eq!(secondary.header("retry-after"), "30");
    assert_ne!(secondary.header("x-ratelimit-remaining"), "0");
    assert!(
        secondary.body["message"]
            .as_str()
            .unwrap()
            .starts_with("You have exceeded a secondary rate limit")
    );
    assert!(github.issues(OWNER, REPO).is_empty());

    // Dropped before apply: a connection error and no issue.
    github.inject(Fault::new(FaultKind::DropBeforeApply).method("POST"));
    let error = alice
        .try_send("POST", &repo_path("/issues"), Some(issue.clone()))
        .await;
    assert!(error.is_err(), "expected a connection error, got {error:?}");
    assert!(github.issues(OWNER, REPO).is_empty());

    // Dropped after apply: a connection error, yet the issue exists.
    github.inject(
        Fault::new(FaultKind::DropAfterApply)
            .method("POST")
            .path_contains("/issues"),
    );
    let error = alice
        .try_send("POST", &repo_path("/issues"), Some(issue.clone()))
        .await;
    assert!(error.is_err(), "expected a connection error, got {error:?}");
    let issues = github.issues(OWNER, REPO);
    assert_eq!(issues.len(), 1);
    assert_eq!(issues[0]["title"], "Faulty");

    // Each fault fired once: the same request now succeeds, and the log shows what happened.
    assert_eq!(
        alice
            .post(&repo_path("/issues"), issue.clone())
            .await
            .status,
        201
    );
    let statuses: Vec<(String, u16)> = github
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .map(|r| (r.path, r.status))
        .collect();
    let issues_path = repo_path("/issues");
    assert_eq!(
        statuses,
        [502, 403, 403, 0, 0, 201]
            .map(|s| (issues_path.clone(), s))
            .to_vec()
    );
}

#[tokio::test]
async fn rate_limit_headers_count_down_to_githubs_403() {
    let github = fake().await;
    github.set_rate_limit(3);
    let alice = Client::token(&github, ALICE);
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let reply = alice.get(&repo_path("")).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("x-ratelimit-limit"), "3");
        remaining.push((
            reply.header_number("x-ratelimit-remaining"),
            reply.header_number("x-ratelimit-used"),
        ));
    }
    assert_eq!(remaining, [(2, 1), (1, 2), (0, 3)]);
    let exhausted = alice.get(&repo_path("")).await;
    assert_eq!(exhausted.status, 403);
    assert_eq!(exhausted.header("x-ratelimit-remaining"), "0");
    assert!(exhausted.header_number("x-ratelimit-reset") > Utc::now().timestamp());
    let quota = alice.get("/rate_limit").await;
    assert_eq!(quota.status, 200, "/rate_limit is free");
    assert_eq!(quota.body["resources"]["core"]["remaining"], 0);
    assert_eq!(quota.body["rate"]["limit"], 3);
    assert!(
        exhausted.body["message"]
            .as_str()
            .unwrap()
            .starts_with("API rate limit exceeded for user ID")
    );
    // Another user has a quota of their own.
    assert_eq!(
        Client::token(&github, BOB).get(&repo_path("")).await.status,
        200
    );
}

#[tokio::test]
async fn conditional_requests_answer_304_without_charging_the_quota() {
    let github = fake().await;
    let alice = Client::token(&github, ALICE);
    let first = alice.get(&repo_path("/issues")).await;
    let etag = first.header("etag").to_string();
    let remaining = first.header_number("x-ratelimit-remaining");
    let cached = alice
        .clone()
        .with_header("if-none-match", &etag)
        .get(&repo_path("/issues"))
        .await;
    assert_eq!(cached.status, 304);
    assert_eq!(cached.header_number("x-ratelimit-remaining"), remaining);
    alice
        .post(&repo_path("/issues"), json!({"title": "new"}))
        .await;
    let changed = alice
        .clone()
        .with_header("if-none-match", &etag)
        .get(&repo_path("/issues"))
        .await;
    assert_eq!(changed.status, 200);
}

#[tokio::test]
async fn requests_are_recorded_without_secrets_and_hooks_run_before_the_response() {
    let github = fake().await;
    github.add_app(
        APP_ID,
        test_keys::TEST_APP_PUBLIC_KEY_PEM,
        INSTALLATION_ID,
        OWNER,
    );
    let jwt = valid_jwt();
    let app = Client::new(&github, Some(&format!("Bearer {jwt}")));
    let token = mint_token(&app, json!({})).await.body["token"]
        .as_str()
        .unwrap()
        .to_string();

    let seen: Arc<Mutex<Vec<(String, u16, usize)>>> = Arc::default();
    let hook_view = github.clone();
    let hook_seen = seen.clone();
    github.on_write(move |request| {
        // The write is visible to the hook before the client has its answer.
        let issues = hook_view.issues(OWNER, REPO).len();
        hook_seen
            .lock()
            .unwrap()
            .push((request.path.clone(), request.status, issues));
    });

    github.clear_requests();
    let alice = Client::token(&github, ALICE);
    alice.get(&repo_path("/issues?state=all&per_page=5")).await;
    alice
        .post(
            &repo_path("/issues"),
            json!({"title": "Recorded", "body": "b"}),
        )
        .await;
    assert_eq!(
        alice.post(&repo_path("/issues"), json!({})).await.status,
        422
    );
    Client::new(&github, Some(&format!("token {token}")))
        .get(&repo_path(""))
        .await;
    Client::new(&github, Some("token ghp_not_registered_secret"))
        .get(&repo_path(""))
        .await;
    Client::new(&github, None).get("/rate_limit").await;

    let requests = github.requests();
    let summary: Vec<(&str, &str, &str, Option<&str>, u16)> = requests
        .iter()
        .map(|r| {
            (
                r.method.as_str(),
                r.path.as_str(),
                r.query.as_str(),
                r.auth.as_deref(),
                r.status,
            )
        })
        .collect();
    let issues = repo_path("/issues");
    let repo = repo_path("");
    assert_eq!(
        summary,
        [
            (
                "GET",
                issues.as_str(),
                "state=all&per_page=5",
                Some("token"),
                200
            ),
            ("POST", issues.as_str(), "", Some("token"), 201),
            ("POST", issues.as_str(), "", Some("token"), 422),
            ("GET", repo.as_str(), "", Some("installation-token"), 200),
            ("GET", repo.as_str(), "", Some("token"), 401),
            ("GET", "/rate_limit", "", None, 200),
        ]
    );
    assert_eq!(
        requests[1].body,
        Some(json!({"title": "Recorded", "body": "b"}))
    );
    assert_eq!(requests[0].body, None);
    let everything = format!("{requests:?}");
    for secret in [
        ALICE,
        token.as_str(),
        jwt.as_str(),
        "ghp_not_registered_secret",
    ] {
        assert!(
            !everything.contains(secret),
            "a secret leaked into the request log"
        );
    }
    // Minting before clear_requests was a JWT request.
    assert_eq!(seen.lock().unwrap().clone(), [(issues.clone(), 201, 1)]);
}

/// Reads lines from the child's stdout until one starts with `prefix`.
async fn read_line_starting_with(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    prefix: &str,
) -> Result<String> {
    while let Some(line) = lines.next_line().await? {
        if let Some(rest) = line.strip_prefix(prefix) {
            return Ok(rest.to_string());
        }
    }
    bail!("the process exited without printing {prefix:?}")
}

#[tokio::test]
async fn the_binary_serves_the_demo_seed_and_exits_on_sigterm() {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ccplant-fake-github"))
        .args([
            "--addr",
            "127.0.0.1:0",
            "--seed",
            "demo",
            "--token",
            "demo-token:demo-user",
        ])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let url = tokio::time::timeout(
        Duration::from_secs(30),
        read_line_starting_with(&mut lines, "listening on "),
    )
    .await
    .expect("no `listening on` line within 30 s")
    .unwrap();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");

    let client = Client {
        base: url,
        authorization: Some("token demo-token".to_string()),
        extra_headers: Vec::new(),
    };
    let branches = client.get("/repos/ccplant-demo/hello-world/branches").await;
    assert_eq!(branches.status, 200);
    let names: Vec<&str> = branches
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "ccplant/healthz",
            "feature/farewell",
            "feature/greeting",
            "main"
        ]
    );
    let issue = client
        .post(
            "/repos/ccplant-demo/hello-world/issues",
            json!({"title": "hi"}),
        )
        .await;
    assert_eq!(issue.body["user"]["login"], "demo-user");

    let pid = child.id().unwrap().to_string();
    let killed = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("still running 10 s after SIGTERM")
        .unwrap();
    assert!(status.success(), "exit status {status}");
}

#[test]
fn a_detached_fake_outlives_the_runtimes_that_use_it() {
    let github = FakeGitHub::start_detached().unwrap();
    github.add_repo(OWNER, REPO, "main");
    github.add_token(ALICE, "alice");
    for round in 1..=2 {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let created = runtime.block_on(
            Client::token(&github, ALICE).post(&repo_path("/issues"), json!({"title": "x"})),
        );
        assert_eq!(created.body["number"], round);
    }
}

#[tokio::test]
async fn user_and_app_identities_have_githubs_shapes() {
    let github = fake().await;
    github.add_app(
        APP_ID,
        test_keys::TEST_APP_PUBLIC_KEY_PEM,
        INSTALLATION_ID,
        OWNER,
    );
    let user = Client::token(&github, ALICE).get("/user").await;
    assert_eq!(user.status, 200);
    assert_eq!(user.body["login"], "alice");
    assert_eq!(user.body["type"], "User");
    assert_eq!(
        Client::new(&github, None).get("/user").await.status,
        401,
        "anonymous"
    );

    let app_client = Client::new(&github, Some(&format!("Bearer {}", valid_jwt())));
    let app = app_client.get("/app").await;
    assert_eq!(app.status, 200, "{:?}", app.body);
    assert_eq!(app.body["id"], APP_ID);
    assert_eq!(app.body["slug"], "ccplant-app");
    assert_eq!(app.body["owner"]["login"], OWNER);
    assert!(app.body["node_id"].as_str().unwrap().starts_with("A_"));
    // /app needs the JWT; /user is no place for an App or its installation.
    assert_eq!(Client::token(&github, ALICE).get("/app").await.status, 401);
    assert_eq!(app_client.get("/user").await.status, 403);
    let minted = mint_token(&app_client, json!({})).await;
    let installation = Client::new(
        &github,
        Some(&format!("token {}", minted.body["token"].as_str().unwrap())),
    );
    let refused = installation.get("/user").await;
    assert_eq!(refused.status, 403);
    assert_eq!(
        refused.body["message"],
        "Resource not accessible by integration"
    );
    // What the installation creates is authored by `<slug>[bot]`.
    let issue = installation
        .post(&repo_path("/issues"), json!({"title": "by the bot"}))
        .await;
    assert_eq!(issue.body["user"]["login"], "ccplant-app[bot]");
}

#[tokio::test]
async fn repository_activity_lists_ref_changes_newest_first() {
    let github = fake().await;
    let now = Utc::now();
    let ago = |minutes: i64| now - TimeDelta::minutes(minutes);
    let first = github.push_commit(OWNER, REPO, "feature", "one", ago(30));
    let second = github.push_commit(OWNER, REPO, "feature", "two", ago(20));
    github.push_commit(OWNER, REPO, "main", "on main", ago(15));
    assert!(github.delete_branch(OWNER, REPO, "feature", ago(10)));
    assert!(!github.delete_branch(OWNER, REPO, "feature", ago(5)));
    let alice = Client::token(&github, ALICE);

    let listed = alice.get(&repo_path("/activity")).await;
    assert_eq!(listed.status, 200);
    let entries = listed.body.as_array().unwrap();
    let summary: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| {
            (
                e["ref"].as_str().unwrap(),
                e["activity_type"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("refs/heads/feature", "branch_deletion"),
            ("refs/heads/main", "push"),
            ("refs/heads/feature", "push"),
            ("refs/heads/feature", "branch_creation"),
        ]
    );
    let zeros = "0".repeat(40);
    assert_eq!(entries[0]["before"], second.as_str());
    assert_eq!(entries[0]["after"], zeros.as_str());
    assert_eq!(entries[2]["before"], first.as_str());
    assert_eq!(entries[2]["after"], second.as_str());
    assert_eq!(entries[3]["before"], zeros.as_str());
    assert_eq!(entries[3]["after"], first.as_str());
    for entry in entries {
        assert!(entry["id"].is_u64(), "{entry}");
        assert!(entry["node_id"].as_str().unwrap().starts_with("RA_"));
        assert!(entry["actor"]["login"].is_string(), "{entry}");
        assert!(chrono::DateTime::parse_from_rfc3339(entry["timestamp"].as_str().unwrap()).is_ok());
    }

    // Filters, ascending order and pages like GitHub's other lists.
    async fn count(client: &Client, query: &str) -> usize {
        let reply = client.get(&repo_path(&format!("/activity?{query}"))).await;
        assert_eq!(reply.status, 200, "{query}: {:?}", reply.body);
        reply.body.as_array().unwrap().len()
    }
    let only = |query| count(&alice, query);
    assert_eq!(only("ref=feature").await, 3);
    assert_eq!(only("ref=refs/heads/main").await, 1);
    assert_eq!(only("activity_type=push").await, 2);
    assert_eq!(only("actor=nobody").await, 0);
    assert_eq!(only("time_period=day").await, 4);
    let oldest = alice.get(&repo_path("/activity?direction=asc")).await;
    assert_eq!(oldest.body[0]["activity_type"], "branch_creation");
    let page = alice.get(&repo_path("/activity?per_page=3")).await;
    assert_eq!(page.body.as_array().unwrap().len(), 3);
    assert!(page.header("link").contains("rel=\"next\""));
    assert_eq!(
        alice
            .get(&repo_path("/activity?time_period=decade"))
            .await
            .status,
        422
    );
}

#[tokio::test]
async fn objects_can_be_authored_by_other_logins() {
    let github = fake().await;
    github.push_commit(OWNER, REPO, "theirs", "Their change", Utc::now());
    let pull = github.open_pull_as(OWNER, REPO, "theirs", "main", "mallory", "copied");
    let comment = github.comment_as(OWNER, REPO, pull, "other-app[bot]", "a bot's note");
    let review = github.review_as(OWNER, REPO, pull, "mallory", "COMMENTED", "hm");
    let issue = github.open_issue_as(OWNER, REPO, "mallory", "An issue", "text");
    let alice = Client::token(&github, ALICE);

    let listed = alice.get(&repo_path("/pulls")).await;
    assert_eq!(listed.body[0]["number"], pull);
    assert_eq!(listed.body[0]["user"]["login"], "mallory");
    assert_eq!(listed.body[0]["user"]["type"], "User");
    assert_eq!(listed.body[0]["title"], "Their change");
    assert_eq!(listed.body[0]["body"], "copied");
    let comments = alice
        .get(&repo_path(&format!("/issues/{pull}/comments")))
        .await;
    assert_eq!(comments.body[0]["id"], comment);
    assert_eq!(comments.body[0]["user"]["login"], "other-app[bot]");
    assert_eq!(comments.body[0]["user"]["type"], "Bot");
    let reviews = alice
        .get(&repo_path(&format!("/pulls/{pull}/reviews")))
        .await;
    assert_eq!(reviews.body[0]["id"], review);
    assert_eq!(reviews.body[0]["state"], "COMMENTED");
    assert_eq!(reviews.body[0]["user"]["login"], "mallory");
    let opened = alice.get(&repo_path(&format!("/issues/{issue}"))).await;
    assert_eq!(opened.body["user"]["login"], "mallory");
    assert!(opened.body.get("pull_request").is_none());
}
