//! Pull requests, reviews and merges.

use crate::client::{Call, GitHubClient};
use crate::error::{Error, Result};
use crate::issues::CLOCK_SKEW_ALLOWANCE;
use crate::marker::{has_marker, with_marker};
use crate::models::{
    Authors, MergeRequest, MergeResult, NewPull, Pull, Review, WireMerge, WirePull, WireReview,
    authored_by,
};
use crate::repo::RepoRef;
use crate::repos::repo_path;
use chrono::{DateTime, Utc};
use http::Method;

/// GitHub's 422 text when a pull request for the same head and base is open.
const ALREADY_EXISTS: &str = "a pull request already exists";
/// GitHub's 422 text when the author tries to approve their own pull request.
const OWN_PULL_REQUEST: &str = "approve your own pull request";

impl GitHubClient {
    /// `POST /repos/{owner}/{repo}/pulls` with the marker appended to the body. Paced.
    /// GitHub's 422 "A pull request already exists" becomes
    /// [`Error::PullRequestAlreadyExists`]: adopt it with [`GitHubClient::find_pull`].
    pub async fn create_pull(&self, repo: &RepoRef, pull: &NewPull, marker: &str) -> Result<Pull> {
        let reply = self
            .execute(Call::create(
                Method::POST,
                "POST /repos/{owner}/{repo}/pulls",
                format!("{}/pulls", repo_path(repo)),
                serde_json::json!({
                    "title": pull.title,
                    "head": pull.head,
                    "base": pull.base,
                    "body": with_marker(&pull.body, marker),
                    "draft": pull.draft,
                }),
            ))
            .await?;
        if reply.status == 422
            && let Some(body) = reply.error_body()
            && body.mentions(ALREADY_EXISTS)
        {
            return Err(Error::PullRequestAlreadyExists {
                message: body.describe(422),
            });
        }
        let wire: WirePull = reply.ok()?.json()?;
        Ok(wire.into())
    }

    /// The pull request from `head` (a branch of this repository, or `owner:branch`) into
    /// `base`: the open one if there is one, else the newest closed one.
    /// `GET /repos/{owner}/{repo}/pulls?state=all&head=owner:branch&base=...`.
    pub async fn find_pull(&self, repo: &RepoRef, head: &str, base: &str) -> Result<Option<Pull>> {
        let head = if head.contains(':') {
            head.to_string()
        } else {
            format!("{}:{head}", repo.owner)
        };
        let call = Call::get(
            "GET /repos/{owner}/{repo}/pulls",
            format!("{}/pulls", repo_path(repo)),
        )
        .query("state", "all")
        .query("head", head)
        .query("base", base)
        .query("sort", "created")
        .query("direction", "desc");
        let listed = self.page::<WirePull>(call, self.inner.page_size, 1).await?;
        let mut pulls: Vec<Pull> = listed.items.into_iter().map(Pull::from).collect();
        let open = pulls.iter().position(|p| p.state == "open").unwrap_or(0);
        Ok((!pulls.is_empty()).then(|| pulls.swap_remove(open)))
    }

    /// The most recently created open pull request whose author `authors` allows, among the
    /// newest [`DEFAULT_LOOKUP_MAX_PAGES`](crate::DEFAULT_LOOKUP_MAX_PAGES) pages.
    /// `GET /repos/{owner}/{repo}/pulls?state=open&sort=created&direction=desc` (one item per
    /// page when any author will do).
    pub async fn newest_open_pull(
        &self,
        repo: &RepoRef,
        authors: &Authors,
    ) -> Result<Option<Pull>> {
        let path = format!("{}/pulls", repo_path(repo));
        let call = || {
            Call::get("GET /repos/{owner}/{repo}/pulls", path.clone())
                .query("state", "open")
                .query("sort", "created")
                .query("direction", "desc")
        };
        if *authors == Authors::Any {
            let listed = self.page::<WirePull>(call(), 1, 1).await?;
            return Ok(listed.items.into_iter().next().map(Pull::from));
        }
        let found = self
            .find_newest_first::<WirePull>(
                call,
                |_| false,
                |pull| authors.allow(pull.user.as_ref()),
            )
            .await?;
        Ok(found.map(Pull::from))
    }

    /// `GET /repos/{owner}/{repo}/pulls/{number}`.
    pub async fn pull(&self, repo: &RepoRef, number: u64) -> Result<Pull> {
        let wire: WirePull = self
            .fetch(Call::get(
                "GET /repos/{owner}/{repo}/pulls/{number}",
                format!("{}/pulls/{number}", repo_path(repo)),
            ))
            .await?;
        Ok(wire.into())
    }

    /// The newest pull request (any state) by `author` whose body carries `marker`, among those
    /// created at
    /// or after `since` (widened by [`CLOCK_SKEW_ALLOWANCE`]).
    /// `GET /repos/{owner}/{repo}/pulls?state=all&sort=created&direction=desc`.
    pub async fn find_pull_by_marker(
        &self,
        repo: &RepoRef,
        marker: &str,
        author: &str,
        since: Option<DateTime<Utc>>,
    ) -> Result<Option<Pull>> {
        let since = since.map(|since| since - CLOCK_SKEW_ALLOWANCE);
        let path = format!("{}/pulls", repo_path(repo));
        let found = self
            .find_newest_first::<WirePull>(
                || {
                    Call::get("GET /repos/{owner}/{repo}/pulls", path.clone())
                        .query("state", "all")
                        .query("sort", "created")
                        .query("direction", "desc")
                },
                |pull| since.is_some_and(|since| pull.created_at < since),
                |pull| {
                    authored_by(pull.user.as_ref(), author)
                        && pull.body.as_deref().is_some_and(|b| has_marker(b, marker))
                },
            )
            .await?;
        Ok(found.map(Pull::from))
    }

    /// Approves pull request `number` at `commit_id` (the head SHA the approval is for), with
    /// the marker appended to the review body. Paced.
    /// `POST /repos/{owner}/{repo}/pulls/{number}/reviews {event: APPROVE, body, commit_id}`.
    /// GitHub's refusal to let authors approve their own pull requests becomes
    /// [`Error::SelfApproval`].
    pub async fn approve(
        &self,
        repo: &RepoRef,
        number: u64,
        body: &str,
        commit_id: &str,
        marker: &str,
    ) -> Result<Review> {
        let reply = self
            .execute(Call::create(
                Method::POST,
                "POST /repos/{owner}/{repo}/pulls/{number}/reviews",
                format!("{}/pulls/{number}/reviews", repo_path(repo)),
                serde_json::json!({
                    "event": "APPROVE",
                    "body": with_marker(body, marker),
                    "commit_id": commit_id,
                }),
            ))
            .await?;
        if reply.status == 422
            && let Some(error) = reply.error_body()
            && error.mentions(OWN_PULL_REQUEST)
        {
            return Err(Error::SelfApproval {
                message: error.describe(422),
            });
        }
        let wire: WireReview = reply.ok()?.json()?;
        Ok(wire.into())
    }

    /// The newest review by `author` on pull request `number` whose body carries `marker`
    /// (`GET /repos/{owner}/{repo}/pulls/{number}/reviews`, from the last page backwards).
    pub async fn find_review_by_marker(
        &self,
        repo: &RepoRef,
        number: u64,
        marker: &str,
        author: &str,
    ) -> Result<Option<Review>> {
        let path = format!("{}/pulls/{number}/reviews", repo_path(repo));
        let found = self
            .find_newest_in_oldest_first::<WireReview>(
                || {
                    Call::get(
                        "GET /repos/{owner}/{repo}/pulls/{number}/reviews",
                        path.clone(),
                    )
                },
                |review| {
                    authored_by(review.user.as_ref(), author)
                        && review
                            .body
                            .as_deref()
                            .is_some_and(|b| has_marker(b, marker))
                },
            )
            .await?;
        Ok(found.map(Review::from))
    }

    /// Merges pull request `number`. Paced.
    /// `PUT /repos/{owner}/{repo}/pulls/{number}/merge {sha, merge_method, commit_title,
    /// commit_message}`. 409 (head moved) and 405 (not mergeable) are user errors with GitHub's
    /// message, except that a 405 for a pull request that is already merged (GET
    /// `/pulls/{number}` says so) is a success with `already_merged`.
    pub async fn merge(
        &self,
        repo: &RepoRef,
        number: u64,
        request: &MergeRequest,
    ) -> Result<MergeResult> {
        let mut body = serde_json::json!({ "merge_method": request.method });
        if let Some(sha) = &request.sha {
            body["sha"] = serde_json::json!(sha);
        }
        if let Some(title) = &request.commit_title {
            body["commit_title"] = serde_json::json!(title);
        }
        if let Some(message) = &request.commit_message {
            body["commit_message"] = serde_json::json!(message);
        }
        let reply = self
            .execute(Call::create(
                Method::PUT,
                "PUT /repos/{owner}/{repo}/pulls/{number}/merge",
                format!("{}/pulls/{number}/merge", repo_path(repo)),
                body,
            ))
            .await?;
        if reply.status == 405 {
            let refusal = reply.into_error();
            let pull = self.pull(repo, number).await?;
            if pull.merged {
                return Ok(MergeResult {
                    sha: pull.merge_commit_sha,
                    merged: true,
                    message: "Pull Request was already merged".into(),
                    already_merged: true,
                });
            }
            return Err(refusal);
        }
        let wire: WireMerge = reply.ok()?.json()?;
        Ok(MergeResult {
            sha: wire.sha,
            merged: wire.merged,
            message: wire.message,
            already_merged: false,
        })
    }
}
