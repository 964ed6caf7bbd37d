//! `GitHubTask`: one GitHub side effect (create an issue, open a pull request, approve and
//! merge, comment), performed exactly once.

use std::{fmt, time::Duration};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    common::{SecretReference, TaskGitHubSpec},
    duration::{DurationError, DurationString},
    validation::*,
};

/// Default retry.maxAttempts.
pub const DEFAULT_MAX_ATTEMPTS: i32 = 5;
/// Default retry.backoff.
pub const DEFAULT_BACKOFF: &str = "10s";
/// The exponential backoff between attempts never exceeds this.
pub const MAX_BACKOFF: Duration = Duration::from_secs(600);
/// Default approveAndMerge.reviewComment.
pub const DEFAULT_REVIEW_COMMENT: &str = "LGTM";

fn default_max_attempts() -> i32 {
    DEFAULT_MAX_ATTEMPTS
}
fn default_backoff() -> DurationString {
    DurationString::from(DEFAULT_BACKOFF)
}
fn default_true() -> bool {
    true
}
fn default_review_comment() -> String {
    DEFAULT_REVIEW_COMMENT.to_owned()
}

/// One GitHub side effect, performed exactly once.
// clippy reads the repeated `type_ = "string"` of the printer columns as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[schemars(transform = crate::schema::polish_descriptions)]
#[kube(
    group = "ccplant.io",
    version = "v1alpha1",
    kind = "GitHubTask",
    plural = "githubtasks",
    namespaced,
    status = "GitHubTaskStatus",
    derive = "PartialEq",
    shortname = "ght",
    category = "ccplant",
    doc = "GitHubTask performs one GitHub action exactly once: create an issue (optionally followed by a trigger comment), open a pull request (from a branch or from an AgentSession's work branch), approve and merge a pull request, or comment on an issue or pull request. The spec is immutable; status.result holds the links and numbers GitHub returned.",
    printcolumn(
        name = "Action",
        type_ = "string",
        json_path = ".status.action",
        description = "The action the task performs"
    ),
    printcolumn(
        name = "Repository",
        type_ = "string",
        json_path = ".spec.repository",
        description = "GitHub repository"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Lifecycle phase of the task"
    ),
    printcolumn(
        name = "Result",
        type_ = "string",
        json_path = ".status.result.url",
        description = "Link to the issue, pull request or comment"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new(SPEC_IMMUTABLE_RULE).message(SPEC_IMMUTABLE_MESSAGE),
    validation = Rule::new(EXACTLY_ONE_ACTION_RULE).message(EXACTLY_ONE_ACTION_MESSAGE)
)]
pub struct GitHubTaskSpec {
    /// Repository as "owner/repo", or "repo" alone for a repository of the operator's
    /// --default-github-owner.
    #[schemars(length(max = MAX_REPOSITORY_LENGTH))]
    #[x_kube(validation = Rule::new(OWNER_REPO_OR_REPO_RULE).message(OWNER_REPO_OR_REPO_MESSAGE))]
    pub repository: String,

    /// GitHub credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github: Option<TaskGitHubSpec>,

    /// Create an issue. Exactly one of createIssue, createPullRequest, approveAndMerge and
    /// comment must be set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_issue: Option<CreateIssueAction>,

    /// Open a pull request. Exactly one of createIssue, createPullRequest, approveAndMerge and
    /// comment must be set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_pull_request: Option<CreatePullRequestAction>,

    /// Approve and merge a pull request. Exactly one of createIssue, createPullRequest,
    /// approveAndMerge and comment must be set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approve_and_merge: Option<ApproveAndMergeAction>,

    /// Comment on an existing issue or pull request. Exactly one of createIssue,
    /// createPullRequest, approveAndMerge and comment must be set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<CommentAction>,

    /// Retries after transient GitHub errors (5xx, timeouts, connection errors). Rate limits do
    /// not consume attempts; 4xx errors are not retried.
    #[serde(default)]
    pub retry: RetryPolicy,
}

/// Create an issue.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[schemars(transform = crate::schema::polish_descriptions)]
#[serde(rename_all = "camelCase")]
pub struct CreateIssueAction {
    /// Title of the issue (1 to 256 characters).
    #[schemars(length(min = 1, max = 256))]
    #[x_kube(validation = Rule::new(NOT_BLANK_RULE).message(ISSUE_TITLE_MESSAGE))]
    pub title: String,

    /// Body of the issue (Markdown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_BODY_LENGTH))]
    pub body: Option<String>,

    /// Names of labels to add; labels that do not exist are created by GitHub.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100), inner(length(min = 1, max = 50)))]
    pub labels: Vec<String>,

    /// Logins of users to assign (GitHub accepts at most 10).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10), inner(length(min = 1, max = 39)))]
    pub assignees: Vec<String>,

    /// Number of the milestone to associate the issue with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub milestone: Option<i64>,

    /// Comment posted on the issue right after it was created, e.g. "@claude implement this".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_BODY_LENGTH))]
    #[x_kube(validation = Rule::new(NOT_BLANK_RULE).message(TRIGGER_COMMENT_MESSAGE))]
    pub trigger_comment: Option<String>,
}

/// Open a pull request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[schemars(transform = crate::schema::polish_descriptions)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(HEAD_XOR_FROM_SESSION_RULE).message(HEAD_XOR_FROM_SESSION_MESSAGE))]
pub struct CreatePullRequestAction {
    /// Branch with the changes ("branch", or "owner:branch" for a fork). Empty: the branch
    /// whose latest commit is the newest, excluding the base branch; the choice is made once
    /// and recorded in status.result.headBranch. Mutually exclusive with fromSession.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub head: Option<String>,

    /// Branch to merge into. Default: the repository's default branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub base: Option<String>,

    /// Title of the pull request. Default: the subject of the head commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub title: Option<String>,

    /// Body of the pull request (Markdown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_BODY_LENGTH))]
    pub body: Option<String>,

    /// Open the pull request as a draft.
    #[serde(default)]
    pub draft: bool,

    /// Name of an AgentSession in the same namespace: the task waits until that session
    /// Succeeded, then opens the pull request from its work branch. Mutually exclusive with
    /// head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_OBJECT_NAME_LENGTH))]
    #[x_kube(validation = Rule::new(OBJECT_NAME_RULE).message(SESSION_NAME_MESSAGE))]
    pub from_session: Option<String>,
}

/// Approve and merge a pull request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[schemars(transform = crate::schema::polish_descriptions)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(PULL_REQUEST_XOR_FROM_TASK_RULE).message(PULL_REQUEST_XOR_FROM_TASK_MESSAGE))]
pub struct ApproveAndMergeAction {
    /// Number of the pull request. Empty (and no fromTask): the most recently created open
    /// pull request; the choice is made once and recorded in status.result.pullRequestNumber.
    /// Mutually exclusive with fromTask.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub pull_request: Option<i64>,

    /// Name of a GitHubTask in the same namespace whose createPullRequest opens the pull
    /// request to merge: this task waits until that one Succeeded, then approves and merges
    /// the pull request it opened (its status.result.pullRequestNumber). Mutually exclusive
    /// with pullRequest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_OBJECT_NAME_LENGTH))]
    #[x_kube(validation = Rule::new(OBJECT_NAME_RULE).message(TASK_NAME_MESSAGE))]
    pub from_task: Option<String>,

    /// Authors (GitHub logins) whose pull requests the auto-selection (neither pullRequest nor
    /// fromTask set) may pick: the newest open pull request by one of them. Default: the
    /// credential's own identity, i.e. the pull requests ccplant opened; ["*"] allows any
    /// author. A pull request named by number or by fromTask is not filtered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 64)))]
    pub authors: Vec<String>,

    /// Submit an approving review before merging. GitHub refuses approval of a pull request
    /// by its own author; set false when the credentials belong to the author.
    #[serde(default = "default_true")]
    pub approve: bool,

    /// Body of the approving review.
    #[serde(default = "default_review_comment")]
    #[schemars(length(max = MAX_BODY_LENGTH))]
    pub review_comment: String,

    /// How to merge: merge, squash or rebase.
    #[serde(default)]
    pub merge_method: MergeMethod,

    /// Title of the merge commit. Default: GitHub's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub commit_title: Option<String>,

    /// Message of the merge commit. Default: GitHub's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_BODY_LENGTH))]
    pub commit_message: Option<String>,

    /// Merge only if the pull request's head is this commit (40 lowercase hex characters);
    /// guards against merging commits pushed after review.
    #[serde(
        rename = "expectedHeadSHA",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(length(max = 40))]
    #[x_kube(validation = Rule::new(COMMIT_SHA_RULE).message(COMMIT_SHA_MESSAGE))]
    pub expected_head_sha: Option<String>,
}

impl Default for ApproveAndMergeAction {
    fn default() -> Self {
        Self {
            pull_request: None,
            from_task: None,
            authors: Vec::new(),
            approve: true,
            review_comment: default_review_comment(),
            merge_method: MergeMethod::default(),
            commit_title: None,
            commit_message: None,
            expected_head_sha: None,
        }
    }
}

/// How a pull request is merged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[schemars(transform = crate::schema::polish_descriptions)]
#[serde(rename_all = "lowercase")]
pub enum MergeMethod {
    /// A merge commit.
    #[default]
    Merge,
    /// All commits squashed into one.
    Squash,
    /// The commits rebased onto the base branch.
    Rebase,
}

impl MergeMethod {
    /// The string GitHub expects.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Merge => "merge",
            Self::Squash => "squash",
            Self::Rebase => "rebase",
        }
    }
}

/// Comment on an existing issue or pull request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[schemars(transform = crate::schema::polish_descriptions)]
#[serde(rename_all = "camelCase")]
pub struct CommentAction {
    /// Number of the issue or pull request.
    #[schemars(range(min = 1))]
    pub issue: i64,

    /// Text of the comment (Markdown).
    #[schemars(length(min = 1, max = MAX_BODY_LENGTH))]
    #[x_kube(validation = Rule::new(NOT_BLANK_RULE).message(COMMENT_BODY_MESSAGE))]
    pub body: String,
}

/// Retries after transient errors.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(transform = crate::schema::polish_descriptions)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicy {
    /// Attempts in total, the first included (1 to 100).
    #[serde(default = "default_max_attempts")]
    #[schemars(range(min = 1, max = 100))]
    pub max_attempts: i32,

    /// Wait before the second attempt; it doubles with each further attempt, up to 10m.
    #[serde(default = "default_backoff")]
    pub backoff: DurationString,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            backoff: default_backoff(),
        }
    }
}

impl RetryPolicy {
    /// How long to wait after `failed_attempts` failed attempts (>= 1) before the next:
    /// backoff, 2×backoff, 4×backoff, … capped at [`MAX_BACKOFF`].
    pub fn delay_after(&self, failed_attempts: u32) -> Result<Duration, DurationError> {
        let base = self.backoff.parse()?;
        let factor = 1u32 << failed_attempts.saturating_sub(1).min(31);
        Ok(base
            .checked_mul(factor)
            .map_or(MAX_BACKOFF, |d| d.min(MAX_BACKOFF)))
    }
}

/// The action a task performs, borrowed from its spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action<'a> {
    /// spec.createIssue.
    CreateIssue(&'a CreateIssueAction),
    /// spec.createPullRequest.
    CreatePullRequest(&'a CreatePullRequestAction),
    /// spec.approveAndMerge.
    ApproveAndMerge(&'a ApproveAndMergeAction),
    /// spec.comment.
    Comment(&'a CommentAction),
}

impl Action<'_> {
    /// Which kind of action this is.
    pub fn kind(&self) -> TaskAction {
        match self {
            Self::CreateIssue(_) => TaskAction::CreateIssue,
            Self::CreatePullRequest(_) => TaskAction::CreatePullRequest,
            Self::ApproveAndMerge(_) => TaskAction::ApproveAndMerge,
            Self::Comment(_) => TaskAction::Comment,
        }
    }
}

impl GitHubTaskSpec {
    /// The one action the spec sets; `None` unless exactly one is set.
    pub fn action(&self) -> Option<Action<'_>> {
        let actions = [
            self.create_issue.as_ref().map(Action::CreateIssue),
            self.create_pull_request
                .as_ref()
                .map(Action::CreatePullRequest),
            self.approve_and_merge.as_ref().map(Action::ApproveAndMerge),
            self.comment.as_ref().map(Action::Comment),
        ];
        let mut set = actions.into_iter().flatten();
        match (set.next(), set.next()) {
            (Some(action), None) => Some(action),
            _ => None,
        }
    }

    /// Owner and name of the repository; "repo" alone takes `default_owner`. `None` when the
    /// repository names no owner and there is no default owner, or is malformed.
    pub fn owner_and_repo<'a>(
        &'a self,
        default_owner: Option<&'a str>,
    ) -> Option<(&'a str, &'a str)> {
        if !is_valid_owner_repo_or_repo(&self.repository) {
            return None;
        }
        match self.repository.split_once('/') {
            Some(pair) => Some(pair),
            None => default_owner.map(|owner| (owner, self.repository.as_str())),
        }
    }

    /// The credentials Secret the task names, if any (else the operator's default applies).
    pub fn github_secret_ref(&self) -> Option<&SecretReference> {
        self.github.as_ref().and_then(|g| g.secret_ref.as_ref())
    }

    /// Where the task's GitHub credentials come from.
    pub fn github_source(&self) -> crate::GitHubSource<'_> {
        crate::GitHubSource::of(
            self.github
                .as_ref()
                .and_then(|g| g.credential_name.as_deref()),
            self.github_secret_ref(),
        )
    }

    /// Checks the rules the schema enforces at admission, for objects that bypassed it. The
    /// transition rule (spec is immutable) needs the old object and is not checked.
    pub fn validate(&self) -> Result<(), InvalidSpec> {
        let mut v = Violations::default();
        v.check(
            is_valid_owner_repo_or_repo(&self.repository),
            "spec.repository",
            OWNER_REPO_OR_REPO_MESSAGE,
        );
        if let Some(github) = &self.github {
            v.check_github_source(
                github.credential_name.as_deref(),
                github.secret_ref.as_ref(),
            );
        }
        if let Some(secret) = self.github_secret_ref() {
            v.check(
                is_valid_object_name(&secret.name),
                "spec.github.secretRef.name",
                SECRET_NAME_MESSAGE,
            );
        }
        v.check(self.action().is_some(), "spec", EXACTLY_ONE_ACTION_MESSAGE);
        if let Some(issue) = &self.create_issue {
            let len = issue.title.chars().count();
            v.check(
                (1..=256).contains(&len) && !issue.title.trim().is_empty(),
                "spec.createIssue.title",
                ISSUE_TITLE_MESSAGE,
            );
            v.check(
                issue
                    .trigger_comment
                    .as_deref()
                    .is_none_or(|c| !c.trim().is_empty()),
                "spec.createIssue.triggerComment",
                TRIGGER_COMMENT_MESSAGE,
            );
        }
        if let Some(pr) = &self.create_pull_request {
            v.check(
                !(pr.head.is_some() && pr.from_session.is_some()),
                "spec.createPullRequest",
                HEAD_XOR_FROM_SESSION_MESSAGE,
            );
            v.check(
                pr.from_session.as_deref().is_none_or(is_valid_object_name),
                "spec.createPullRequest.fromSession",
                SESSION_NAME_MESSAGE,
            );
        }
        if let Some(merge) = &self.approve_and_merge {
            v.check(
                merge.pull_request.is_none_or(|n| n >= 1),
                "spec.approveAndMerge.pullRequest",
                "must be at least 1",
            );
            v.check(
                !(merge.pull_request.is_some() && merge.from_task.is_some()),
                "spec.approveAndMerge",
                PULL_REQUEST_XOR_FROM_TASK_MESSAGE,
            );
            v.check(
                merge.from_task.as_deref().is_none_or(is_valid_object_name),
                "spec.approveAndMerge.fromTask",
                TASK_NAME_MESSAGE,
            );
            v.check(
                merge
                    .expected_head_sha
                    .as_deref()
                    .is_none_or(is_valid_commit_sha),
                "spec.approveAndMerge.expectedHeadSHA",
                COMMIT_SHA_MESSAGE,
            );
        }
        if let Some(comment) = &self.comment {
            v.check(
                comment.issue >= 1,
                "spec.comment.issue",
                "must be at least 1",
            );
            v.check(
                !comment.body.trim().is_empty(),
                "spec.comment.body",
                COMMENT_BODY_MESSAGE,
            );
        }
        v.check(
            (1..=100).contains(&self.retry.max_attempts),
            "spec.retry.maxAttempts",
            "must be between 1 and 100",
        );
        v.check_duration(Some(&self.retry.backoff), "spec.retry.backoff");
        v.into_result()
    }
}

/// Observed state of a GitHubTask.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[schemars(transform = crate::schema::polish_descriptions)]
#[serde(rename_all = "camelCase")]
pub struct GitHubTaskStatus {
    /// One-word summary: Pending, Running, Succeeded or Failed. Tools should read the
    /// conditions instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<GitHubTaskPhase>,

    /// The action the task performs: CreateIssue, CreatePullRequest, ApproveAndMerge or
    /// Comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<TaskAction>,

    /// Current state of the task: Ready (it succeeded), Reconciling or Stalled (kstatus: present
    /// only while an attempt, a wait or a retry is under way, or once it failed for good) and
    /// RateLimited.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// Attempts made so far. Recorded before each attempt's first GitHub write, so an attempt
    /// interrupted by a crash is never repeated blindly.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub attempts: i32,

    /// When the latest attempt started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt_time: Option<Time>,

    /// When the next attempt is due (after a transient error or a rate limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_time: Option<Time>,

    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Human-readable detail of the current phase, e.g. GitHub's error message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,

    /// What GitHub returned. Auto-selected head branches and pull requests are recorded here
    /// before they are used, so a retry never picks a different one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<TaskResult>,
}

/// Lifecycle phase of a GitHubTask.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[schemars(transform = crate::schema::polish_descriptions)]
pub enum GitHubTaskPhase {
    /// Accepted, waiting for dependencies (credentials, a session to succeed).
    Pending,
    /// Talking to GitHub, or waiting to retry.
    Running,
    /// Done; status.result holds what GitHub returned. Never acted on again.
    Succeeded,
    /// Given up; status.message says why.
    Failed,
}

impl GitHubTaskPhase {
    /// The phase as written in status.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Running => "Running",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
        }
    }

    /// Succeeded and Failed are final.
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }
}

impl fmt::Display for GitHubTaskPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The action a GitHubTask performs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[schemars(transform = crate::schema::polish_descriptions)]
pub enum TaskAction {
    /// spec.createIssue.
    CreateIssue,
    /// spec.createPullRequest.
    CreatePullRequest,
    /// spec.approveAndMerge.
    ApproveAndMerge,
    /// spec.comment.
    Comment,
}

impl TaskAction {
    /// The action as written in status.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CreateIssue => "CreateIssue",
            Self::CreatePullRequest => "CreatePullRequest",
            Self::ApproveAndMerge => "ApproveAndMerge",
            Self::Comment => "Comment",
        }
    }
}

impl fmt::Display for TaskAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What GitHub returned.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(transform = crate::schema::polish_descriptions)]
#[serde(rename_all = "camelCase")]
pub struct TaskResult {
    /// The main link: the issue, the pull request or the comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,

    /// Number of the issue created or commented on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issue_number: Option<i64>,

    /// Link to the issue created or commented on.
    #[serde(rename = "issueURL", default, skip_serializing_if = "Option::is_none")]
    pub issue_url: Option<String>,

    /// Id of the comment posted (the trigger comment, or the comment action's comment).
    #[serde(rename = "commentID", default, skip_serializing_if = "Option::is_none")]
    pub comment_id: Option<i64>,

    /// Number of the pull request opened, or approved and merged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_request_number: Option<i64>,

    /// Link to the pull request.
    #[serde(
        rename = "pullRequestURL",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub pull_request_url: Option<String>,

    /// Head branch of the pull request (the auto-selected one when spec.createPullRequest.head
    /// is empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_branch: Option<String>,

    /// Base branch of the pull request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_branch: Option<String>,

    /// Head commit of the pull request when the task chose it: the commit the review
    /// approved and the merge requires, so a retry never merges a head that moved since.
    #[serde(rename = "headSHA", default, skip_serializing_if = "Option::is_none")]
    pub head_sha: Option<String>,

    /// Id of the approving review.
    #[serde(rename = "reviewID", default, skip_serializing_if = "Option::is_none")]
    pub review_id: Option<i64>,

    /// Whether the pull request is merged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged: Option<bool>,

    /// SHA of the merge commit.
    #[serde(
        rename = "mergeCommitSHA",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub merge_commit_sha: Option<String>,
}

impl GitHubTask {
    /// The current phase, `None` before the operator saw the object.
    pub fn phase(&self) -> Option<GitHubTaskPhase> {
        self.status.as_ref().and_then(|s| s.phase)
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error;

    use serde_json::json;

    use super::*;

    type TestResult = Result<(), Box<dyn Error>>;

    fn spec(value: serde_json::Value) -> Result<GitHubTaskSpec, serde_json::Error> {
        serde_json::from_value(value)
    }

    #[test]
    fn exactly_one_action_is_the_action() -> TestResult {
        let none = spec(json!({"repository": "a/b"}))?;
        assert_eq!(none.action(), None);

        let one = spec(json!({"repository": "a/b", "comment": {"issue": 1, "body": "hi"}}))?;
        assert_eq!(one.action().map(|a| a.kind()), Some(TaskAction::Comment));

        let two = spec(
            json!({"repository": "a/b", "comment": {"issue": 1, "body": "hi"},
                              "createIssue": {"title": "t"}}),
        )?;
        assert_eq!(two.action(), None);
        assert_eq!(
            two.validate().err().map(|e| e.to_string()).as_deref(),
            Some(
                "spec: exactly one action must be set: createIssue, createPullRequest, approveAndMerge or comment"
            )
        );
        Ok(())
    }

    #[test]
    fn defaults_of_approve_and_merge_and_retry() -> TestResult {
        let task = spec(json!({"repository": "hello-world", "approveAndMerge": {}}))?;
        let Some(Action::ApproveAndMerge(merge)) = task.action() else {
            return Err("expected approveAndMerge".into());
        };
        assert!(merge.approve);
        assert_eq!(merge.review_comment, "LGTM");
        assert_eq!(merge.merge_method, MergeMethod::Merge);
        assert_eq!(task.retry, RetryPolicy::default());
        assert_eq!(task.retry.max_attempts, 5);
        assert_eq!(task.retry.backoff.as_str(), "10s");
        assert_eq!(task.validate(), Ok(()));
        Ok(())
    }

    #[test]
    fn repository_owner_comes_from_the_spec_or_the_default() -> TestResult {
        let full = spec(json!({"repository": "ccplant-demo/hello-world"}))?;
        assert_eq!(
            full.owner_and_repo(Some("other")),
            Some(("ccplant-demo", "hello-world"))
        );
        let short = spec(json!({"repository": "hello-world"}))?;
        assert_eq!(
            short.owner_and_repo(Some("ccplant-demo")),
            Some(("ccplant-demo", "hello-world"))
        );
        assert_eq!(short.owner_and_repo(None), None);
        let bad = spec(json!({"repository": "a/b/c"}))?;
        assert_eq!(bad.owner_and_repo(Some("x")), None);
        Ok(())
    }

    #[test]
    fn backoff_doubles_up_to_ten_minutes() -> TestResult {
        let retry = RetryPolicy::default();
        let delays: Vec<u64> = (1..=8)
            .map(|n| retry.delay_after(n).map(|d| d.as_secs()))
            .collect::<Result<_, _>>()?;
        assert_eq!(delays, [10, 20, 40, 80, 160, 320, 600, 600]);
        assert_eq!(retry.delay_after(0)?, Duration::from_secs(10));
        assert_eq!(retry.delay_after(u32::MAX)?, MAX_BACKOFF);
        let slow = RetryPolicy {
            max_attempts: 3,
            backoff: "1h".into(),
        };
        assert_eq!(slow.delay_after(1)?, MAX_BACKOFF);
        let broken = RetryPolicy {
            max_attempts: 3,
            backoff: "soon".into(),
        };
        assert!(broken.delay_after(1).is_err());
        Ok(())
    }

    #[test]
    fn validate_reports_what_admission_would() -> TestResult {
        let task = spec(json!({
            "repository": "owner/",
            "github": {"secretRef": {"name": "GitHub"}},
            "createPullRequest": {"head": "x", "fromSession": "s"},
            "retry": {"maxAttempts": 0, "backoff": "0s"},
        }))?;
        let err = task.validate().err().ok_or("expected violations")?;
        let fields: Vec<&str> = err.violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.repository",
                "spec.github.secretRef.name",
                "spec.createPullRequest",
                "spec.retry.maxAttempts",
                "spec.retry.backoff",
            ]
        );

        let merge = spec(json!({
            "repository": "a/b",
            "approveAndMerge": {"pullRequest": 1, "fromTask": "pr", "expectedHeadSHA": "ABC"},
        }))?;
        let messages: Vec<String> = merge
            .validate()
            .err()
            .map(|e| e.violations.into_iter().map(|v| v.message).collect())
            .unwrap_or_default();
        assert_eq!(
            messages,
            [PULL_REQUEST_XOR_FROM_TASK_MESSAGE, COMMIT_SHA_MESSAGE]
        );

        let blank = spec(json!({
            "repository": "a/b",
            "createIssue": {"title": "  ", "triggerComment": ""},
        }))?;
        let messages: Vec<String> = blank
            .validate()
            .err()
            .map(|e| e.violations.into_iter().map(|v| v.message).collect())
            .unwrap_or_default();
        assert_eq!(messages, [ISSUE_TITLE_MESSAGE, TRIGGER_COMMENT_MESSAGE]);
        Ok(())
    }

    #[test]
    fn status_wire_names_are_the_documented_ones() -> TestResult {
        let status = GitHubTaskStatus {
            phase: Some(GitHubTaskPhase::Succeeded),
            action: Some(TaskAction::ApproveAndMerge),
            attempts: 1,
            result: Some(TaskResult {
                url: Some("https://github.com/a/b/pull/7".to_owned()),
                issue_url: Some("https://github.com/a/b/issues/3".to_owned()),
                comment_id: Some(12_345_678_901),
                pull_request_number: Some(7),
                pull_request_url: Some("https://github.com/a/b/pull/7".to_owned()),
                review_id: Some(99),
                merged: Some(true),
                merge_commit_sha: Some("0123456789abcdef0123456789abcdef01234567".to_owned()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&status)?,
            json!({
                "phase": "Succeeded",
                "action": "ApproveAndMerge",
                "attempts": 1,
                "result": {
                    "url": "https://github.com/a/b/pull/7",
                    "issueURL": "https://github.com/a/b/issues/3",
                    "commentID": 12_345_678_901_i64,
                    "pullRequestNumber": 7,
                    "pullRequestURL": "https://github.com/a/b/pull/7",
                    "reviewID": 99,
                    "merged": true,
                    "mergeCommitSHA": "0123456789abcdef0123456789abcdef01234567",
                },
            })
        );
        let merge: ApproveAndMergeAction =
            serde_json::from_value(json!({"expectedHeadSHA": "abc", "mergeMethod": "squash"}))?;
        assert_eq!(merge.expected_head_sha.as_deref(), Some("abc"));
        assert_eq!(merge.merge_method.as_str(), "squash");
        assert!(GitHubTaskPhase::Failed.is_finished());
        assert!(!GitHubTaskPhase::Running.is_finished());
        Ok(())
    }
}
