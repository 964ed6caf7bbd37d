//! Typed results of the operations, with the fields the controller needs, and the lenient wire
//! shapes they are decoded from (GitHub adds fields all the time; only what is used is read).

use chrono::{DateTime, Utc};
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repository {
    pub id: u64,
    /// `owner/name` as GitHub spells it.
    pub full_name: String,
    pub default_branch: String,
    pub html_url: String,
    pub private: bool,
}

/// Input of [`crate::GitHubClient::create_issue`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewIssue {
    pub title: String,
    pub body: String,
    pub labels: Vec<String>,
    pub assignees: Vec<String>,
    /// Milestone number.
    pub milestone: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub id: u64,
    pub number: u64,
    pub title: String,
    pub body: String,
    /// `open` or `closed`.
    pub state: String,
    pub html_url: String,
    pub user_login: Option<String>,
    pub labels: Vec<String>,
    pub created_at: DateTime<Utc>,
}

/// A comment on an issue or pull request (the conversation, not a review comment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comment {
    pub id: u64,
    pub body: String,
    pub html_url: String,
    pub user_login: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// The branch head auto-selection picked: the most recently pushed branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BranchHead {
    pub name: String,
    /// The branch's tip as the activity last saw it.
    pub sha: String,
    /// When the push happened (the activity's `timestamp`).
    pub pushed_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    pub sha: String,
    pub message: String,
    pub html_url: String,
    /// GitHub account of the author, if the author's email maps to one.
    pub author_login: Option<String>,
    pub authored_at: Option<DateTime<Utc>>,
    pub committed_at: Option<DateTime<Utc>>,
}

impl Commit {
    /// The first line of the message: the default pull request title.
    pub fn subject(&self) -> &str {
        self.message.lines().next().unwrap_or("").trim()
    }
}

/// Input of [`crate::GitHubClient::create_pull`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewPull {
    /// Branch name in the same repository (or `owner:branch` for a fork).
    pub head: String,
    pub base: String,
    pub title: String,
    pub body: String,
    pub draft: bool,
}

/// One side of a pull request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullBranch {
    /// The branch name (`ref`).
    pub ref_name: String,
    pub sha: String,
    /// `owner:branch`.
    pub label: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pull {
    pub id: u64,
    pub number: u64,
    /// `open` or `closed` (a merged pull request is `closed` with `merged`).
    pub state: String,
    pub title: String,
    pub body: String,
    pub html_url: String,
    pub user_login: Option<String>,
    pub draft: bool,
    /// From `merged`, or from `merged_at` where the list endpoints leave `merged` out.
    pub merged: bool,
    pub merge_commit_sha: Option<String>,
    pub created_at: DateTime<Utc>,
    pub head: PullBranch,
    pub base: PullBranch,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Review {
    pub id: u64,
    /// `APPROVED`, `COMMENTED`, `CHANGES_REQUESTED`, ...
    pub state: String,
    pub body: String,
    pub commit_id: Option<String>,
    pub html_url: String,
    pub user_login: Option<String>,
    pub submitted_at: Option<DateTime<Utc>>,
}

/// Input of [`crate::GitHubClient::merge`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeRequest {
    /// The head SHA the merge is for (the one the review approved); GitHub answers 409 when the
    /// head has moved.
    pub sha: Option<String>,
    /// GitHub's `merge_method`: `merge`, `squash` or `rebase` (the API's `MergeMethod` is the
    /// one definition of these; its `as_str` gives this).
    pub method: &'static str,
    pub commit_title: Option<String>,
    pub commit_message: Option<String>,
}

impl Default for MergeRequest {
    /// A merge commit of whatever the head is.
    fn default() -> Self {
        Self {
            sha: None,
            method: "merge",
            commit_title: None,
            commit_message: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeResult {
    /// The merge commit's SHA.
    pub sha: Option<String>,
    pub merged: bool,
    pub message: String,
    /// True when GitHub refused with 405 because the pull request had been merged already
    /// (by an earlier attempt or by someone else).
    pub already_merged: bool,
}

// ---- wire shapes -------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
pub(crate) struct WireUser {
    pub login: String,
}

/// One entry of `GET /repos/{owner}/{repo}/activity`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct WireActivity {
    #[serde(rename = "ref")]
    pub reference: String,
    pub after: String,
    pub timestamp: DateTime<Utc>,
    pub activity_type: String,
}

/// Whether `user` is `author` (GitHub logins are case-insensitive).
pub(crate) fn authored_by(user: Option<&WireUser>, author: &str) -> bool {
    user.is_some_and(|u| u.login.eq_ignore_ascii_case(author))
}

/// Whose pull requests an auto-selection may pick.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Authors {
    /// Anyone's.
    Any,
    /// Only these logins' (case-insensitive).
    Logins(Vec<String>),
}

impl Authors {
    pub(crate) fn allow(&self, user: Option<&WireUser>) -> bool {
        match self {
            Authors::Any => true,
            Authors::Logins(logins) => logins.iter().any(|l| authored_by(user, l)),
        }
    }
}

fn login(user: Option<WireUser>) -> Option<String> {
    user.map(|u| u.login)
}

#[derive(Debug, Deserialize)]
pub(crate) struct WireRepository {
    pub id: u64,
    pub full_name: String,
    pub default_branch: String,
    #[serde(default)]
    pub html_url: String,
    #[serde(default)]
    pub private: bool,
}

impl From<WireRepository> for Repository {
    fn from(w: WireRepository) -> Self {
        Repository {
            id: w.id,
            full_name: w.full_name,
            default_branch: w.default_branch,
            html_url: w.html_url,
            private: w.private,
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct WireLabel {
    pub name: String,
}

#[derive(Debug, Deserialize)]
pub(crate) struct WireIssue {
    pub id: u64,
    pub number: u64,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub html_url: String,
    #[serde(default)]
    pub user: Option<WireUser>,
    #[serde(default)]
    pub labels: Vec<WireLabel>,
    pub created_at: DateTime<Utc>,
    /// Present when the "issue" is a pull request.
    #[serde(default)]
    pub pull_request: Option<serde_json::Value>,
}

impl From<WireIssue> for Issue {
    fn from(w: WireIssue) -> Self {
        Issue {
            id: w.id,
            number: w.number,
            title: w.title,
            body: w.body.unwrap_or_default(),
            state: w.state,
            html_url: w.html_url,
            user_login: login(w.user),
            labels: w.labels.into_iter().map(|l| l.name).collect(),
            created_at: w.created_at,
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct WireComment {
    pub id: u64,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub html_url: String,
    #[serde(default)]
    pub user: Option<WireUser>,
    pub created_at: DateTime<Utc>,
}

impl From<WireComment> for Comment {
    fn from(w: WireComment) -> Self {
        Comment {
            id: w.id,
            body: w.body.unwrap_or_default(),
            html_url: w.html_url,
            user_login: login(w.user),
            created_at: w.created_at,
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct WireGitActor {
    #[serde(default)]
    pub date: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct WireGitCommit {
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub author: Option<WireGitActor>,
    #[serde(default)]
    pub committer: Option<WireGitActor>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct WireCommit {
    pub sha: String,
    #[serde(default)]
    pub html_url: String,
    pub commit: WireGitCommit,
    #[serde(default)]
    pub author: Option<WireUser>,
}

impl From<WireCommit> for Commit {
    fn from(w: WireCommit) -> Self {
        Commit {
            sha: w.sha,
            message: w.commit.message,
            html_url: w.html_url,
            author_login: login(w.author),
            authored_at: w.commit.author.and_then(|a| a.date),
            committed_at: w.commit.committer.and_then(|c| c.date),
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct WirePullBranch {
    #[serde(rename = "ref")]
    pub ref_name: String,
    pub sha: String,
    #[serde(default)]
    pub label: String,
}

impl From<WirePullBranch> for PullBranch {
    fn from(w: WirePullBranch) -> Self {
        PullBranch {
            ref_name: w.ref_name,
            sha: w.sha,
            label: w.label,
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct WirePull {
    pub id: u64,
    pub number: u64,
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub html_url: String,
    #[serde(default)]
    pub user: Option<WireUser>,
    #[serde(default)]
    pub draft: Option<bool>,
    #[serde(default)]
    pub merged: Option<bool>,
    #[serde(default)]
    pub merged_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub merge_commit_sha: Option<String>,
    pub created_at: DateTime<Utc>,
    pub head: WirePullBranch,
    pub base: WirePullBranch,
}

impl From<WirePull> for Pull {
    fn from(w: WirePull) -> Self {
        Pull {
            id: w.id,
            number: w.number,
            state: w.state,
            title: w.title,
            body: w.body.unwrap_or_default(),
            html_url: w.html_url,
            user_login: login(w.user),
            draft: w.draft.unwrap_or(false),
            merged: w.merged.unwrap_or(w.merged_at.is_some()),
            merge_commit_sha: w.merge_commit_sha,
            created_at: w.created_at,
            head: w.head.into(),
            base: w.base.into(),
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct WireReview {
    pub id: u64,
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub commit_id: Option<String>,
    #[serde(default)]
    pub html_url: String,
    #[serde(default)]
    pub user: Option<WireUser>,
    #[serde(default)]
    pub submitted_at: Option<DateTime<Utc>>,
}

impl From<WireReview> for Review {
    fn from(w: WireReview) -> Self {
        Review {
            id: w.id,
            state: w.state,
            body: w.body.unwrap_or_default(),
            commit_id: w.commit_id,
            html_url: w.html_url,
            user_login: login(w.user),
            submitted_at: w.submitted_at,
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct WireMerge {
    #[serde(default)]
    pub sha: Option<String>,
    #[serde(default)]
    pub merged: bool,
    #[serde(default)]
    pub message: String,
}

#[derive(Debug, Deserialize)]
pub(crate) struct WireRepoName {
    pub name: String,
}

#[derive(Debug, Deserialize)]
pub(crate) struct WireInstallationToken {
    pub token: String,
    pub expires_at: DateTime<Utc>,
    #[serde(default)]
    pub permissions: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub repository_selection: Option<String>,
    #[serde(default)]
    pub repositories: Vec<WireRepoName>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_is_the_first_line() {
        let commit = Commit {
            sha: "abc".into(),
            message: "Add greeting\n\nLonger explanation.".into(),
            html_url: String::new(),
            author_login: None,
            authored_at: None,
            committed_at: None,
        };
        assert_eq!(commit.subject(), "Add greeting");
    }

    #[test]
    fn merged_comes_from_merged_at_when_the_list_omits_it() {
        let pull: WirePull = serde_json::from_value(serde_json::json!({
            "id": 1, "number": 2, "state": "closed", "title": "t", "body": null,
            "html_url": "h", "user": {"login": "octo"}, "merged_at": "2024-01-01T00:00:00Z",
            "created_at": "2023-12-31T00:00:00Z",
            "head": {"ref": "feature", "sha": "aaa", "label": "octo:feature"},
            "base": {"ref": "main", "sha": "bbb", "label": "octo:main"}
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let pull = Pull::from(pull);
        assert!(pull.merged);
        assert_eq!(pull.body, "");
        assert_eq!(pull.head.ref_name, "feature");
        assert_eq!(pull.user_login.as_deref(), Some("octo"));
    }
}
