//! Issues and issue comments.

use crate::client::{Call, GitHubClient};
use crate::error::Result;
use crate::marker::{has_marker, with_marker};
use crate::models::{Comment, Issue, NewIssue, WireComment, WireIssue, authored_by};
use crate::repo::RepoRef;
use crate::repos::repo_path;
use chrono::{DateTime, SecondsFormat, Utc};
use http::Method;

/// `since` bounds are widened by this much: GitHub's `created_at` comes from GitHub's clock,
/// the attempt time from the operator's.
pub const CLOCK_SKEW_ALLOWANCE: chrono::TimeDelta = chrono::TimeDelta::minutes(10);

impl GitHubClient {
    /// `POST /repos/{owner}/{repo}/issues` with the marker appended to the body. Paced.
    pub async fn create_issue(
        &self,
        repo: &RepoRef,
        issue: &NewIssue,
        marker: &str,
    ) -> Result<Issue> {
        let mut body = serde_json::json!({
            "title": issue.title,
            "body": with_marker(&issue.body, marker),
        });
        if !issue.labels.is_empty() {
            body["labels"] = serde_json::json!(issue.labels);
        }
        if !issue.assignees.is_empty() {
            body["assignees"] = serde_json::json!(issue.assignees);
        }
        if let Some(milestone) = issue.milestone {
            body["milestone"] = serde_json::json!(milestone);
        }
        let wire: WireIssue = self
            .fetch(Call::create(
                Method::POST,
                "POST /repos/{owner}/{repo}/issues",
                format!("{}/issues", repo_path(repo)),
                body,
            ))
            .await?;
        Ok(wire.into())
    }

    /// `POST /repos/{owner}/{repo}/issues/{number}/comments` (issues and pull requests alike)
    /// with the marker appended. Paced.
    pub async fn create_comment(
        &self,
        repo: &RepoRef,
        number: u64,
        body: &str,
        marker: &str,
    ) -> Result<Comment> {
        let wire: WireComment = self
            .fetch(Call::create(
                Method::POST,
                "POST /repos/{owner}/{repo}/issues/{number}/comments",
                format!("{}/issues/{number}/comments", repo_path(repo)),
                serde_json::json!({ "body": with_marker(body, marker) }),
            ))
            .await?;
        Ok(wire.into())
    }

    /// The newest issue (not pull request) authored by `author` whose body carries `marker`
    /// (another author's copy of the marker is never adopted), among issues created
    /// at or after `since` (the attempt's start by the operator's clock, widened by
    /// [`CLOCK_SKEW_ALLOWANCE`]; `None`: no bound). Lists
    /// `GET /repos/{owner}/{repo}/issues?state=all&sort=created&direction=desc`.
    pub async fn find_issue_by_marker(
        &self,
        repo: &RepoRef,
        marker: &str,
        author: &str,
        since: Option<DateTime<Utc>>,
    ) -> Result<Option<Issue>> {
        let since = since.map(|since| since - CLOCK_SKEW_ALLOWANCE);
        let path = format!("{}/issues", repo_path(repo));
        let call = || {
            let call = Call::get("GET /repos/{owner}/{repo}/issues", path.clone())
                .query("state", "all")
                .query("sort", "created")
                .query("direction", "desc");
            match since {
                // `since` filters on `updated_at`, which is never before `created_at`.
                Some(since) => {
                    call.query("since", since.to_rfc3339_opts(SecondsFormat::Secs, true))
                }
                None => call,
            }
        };
        let found = self
            .find_newest_first::<WireIssue>(
                call,
                |issue| since.is_some_and(|since| issue.created_at < since),
                |issue| {
                    issue.pull_request.is_none()
                        && authored_by(issue.user.as_ref(), author)
                        && issue.body.as_deref().is_some_and(|b| has_marker(b, marker))
                },
            )
            .await?;
        Ok(found.map(Issue::from))
    }

    /// The newest comment by `author` on issue or pull request `number` whose body carries
    /// `marker`
    /// (`GET /repos/{owner}/{repo}/issues/{number}/comments`, from the last page backwards).
    pub async fn find_comment_by_marker(
        &self,
        repo: &RepoRef,
        number: u64,
        marker: &str,
        author: &str,
    ) -> Result<Option<Comment>> {
        let path = format!("{}/issues/{number}/comments", repo_path(repo));
        let found = self
            .find_newest_in_oldest_first::<WireComment>(
                || {
                    Call::get(
                        "GET /repos/{owner}/{repo}/issues/{number}/comments",
                        path.clone(),
                    )
                },
                |comment| {
                    authored_by(comment.user.as_ref(), author)
                        && comment
                            .body
                            .as_deref()
                            .is_some_and(|b| has_marker(b, marker))
                },
            )
            .await?;
        Ok(found.map(Comment::from))
    }
}
