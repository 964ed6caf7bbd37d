//! The four actions, step by step. Each step first checks status (a result recorded by an
//! earlier attempt), then, when an earlier attempt may have written, looks for its effect by
//! the task's marker, and only then writes; each result goes to status as soon as GitHub
//! returns it (exactly-once, DESIGN §3.2).

use super::Error;
use super::status::result_mut;
use crate::context::Context;
use ccplant_api::conditions::reasons;
use ccplant_api::{Action as SpecAction, GitHubTask, GitHubTaskStatus};
use ccplant_api::{
    ApproveAndMergeAction, CommentAction, CreateIssueAction, CreatePullRequestAction,
};
use ccplant_github::{self as gh, GitHubClient as GitHub, RepoRef};
use chrono::{DateTime, Utc};
use kube::{Resource, ResourceExt};

/// Why an attempt ended without success.
#[derive(Debug)]
pub enum StepError {
    /// GitHub refused: not retried. `reason` is the Ready condition's reason.
    User {
        reason: String,
        message: String,
    },
    RateLimited {
        reset_at: chrono::DateTime<Utc>,
        message: String,
    },
    Transient {
        message: String,
    },
    /// A write was not sent: this replica no longer leads. Nothing is recorded.
    NotLeader(String),
    Kube(Error),
}

impl From<gh::Error> for StepError {
    fn from(e: gh::Error) -> Self {
        let message = e.to_string();
        match e {
            gh::Error::User { status, .. } => StepError::User {
                reason: user_reason(status).to_string(),
                message,
            },
            gh::Error::PullRequestAlreadyExists { .. } => StepError::User {
                reason: reasons::VALIDATION_FAILED.into(),
                message,
            },
            gh::Error::SelfApproval { .. } => StepError::User {
                reason: reasons::SELF_APPROVAL.into(),
                message,
            },
            gh::Error::RateLimited { reset_at, .. } => StepError::RateLimited { reset_at, message },
            gh::Error::Transient { .. } => StepError::Transient { message },
            gh::Error::InvalidRepository { .. } => StepError::User {
                reason: reasons::INVALID_SPEC.into(),
                message,
            },
            gh::Error::InvalidCredentials { .. } => StepError::User {
                reason: reasons::INVALID_SECRET.into(),
                message,
            },
            gh::Error::Config { .. } => StepError::User {
                reason: reasons::INVALID_CONFIGURATION.into(),
                message,
            },
            gh::Error::WriteRefused { .. } => StepError::NotLeader(message),
        }
    }
}

impl From<Error> for StepError {
    fn from(e: Error) -> Self {
        StepError::Kube(e)
    }
}

/// Ready reasons for GitHub's refusals.
fn user_reason(status: u16) -> &'static str {
    match status {
        401 | 403 => reasons::UNAUTHORIZED,
        404 => reasons::NOT_FOUND,
        405 => reasons::NOT_MERGEABLE,
        409 => reasons::CONFLICT,
        422 => reasons::VALIDATION_FAILED,
        _ => reasons::GITHUB_ERROR,
    }
}

/// The effect an earlier attempt left (looked up only when `look`), else a new one. Futures are
/// lazy: the write is sent only when the lookup found nothing.
async fn earlier_or_new<T>(
    look: bool,
    find: impl Future<Output = Result<Option<T>, gh::Error>>,
    create: impl Future<Output = Result<T, gh::Error>>,
) -> Result<T, gh::Error> {
    if look && let Some(found) = find.await? {
        return Ok(found);
    }
    create.await
}

/// Values that come from other objects.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ResolvedInputs {
    /// createPullRequest.fromSession: the session's work branch.
    pub session_branch: Option<String>,
    /// approveAndMerge.fromTask: the pull request that task opened.
    pub task_pull_request: Option<i64>,
    /// approveAndMerge.fromTask: the head commit that task opened it at.
    pub task_head_sha: Option<String>,
}

/// The status as last written during this attempt; `save` persists step results immediately.
pub struct Progress<'a> {
    pub ctx: &'a Context,
    pub task: &'a GitHubTask,
    pub status: GitHubTaskStatus,
}

impl Progress<'_> {
    async fn save(&mut self, update: impl FnOnce(&mut GitHubTaskStatus)) -> Result<(), Error> {
        let mut next = self.status.clone();
        update(&mut next);
        crate::apply::write_status(self.ctx, self.task, &self.status, &next)
            .await
            .map_err(Error::StatusWrite)?;
        self.status = next;
        Ok(())
    }

    /// Updates the result in memory only; written with the attempt's final status.
    fn note(&mut self, update: impl FnOnce(&mut GitHubTaskStatus)) {
        update(&mut self.status);
    }

    fn result(&self) -> ccplant_api::TaskResult {
        self.status.result.clone().unwrap_or_default()
    }
}

/// What every step of one attempt shares.
struct Attempt<'a> {
    github: &'a GitHub,
    repo: &'a RepoRef,
    /// The invisible marker every body carries.
    marker: String,
    /// Lookups of earlier effects start at the task's creation.
    since: Option<DateTime<Utc>>,
    /// An earlier attempt was recorded without a result: it may have written.
    uncertain: bool,
    /// The credential's login, asked of GitHub once (cached by the client) when a rule needs it.
    me: tokio::sync::OnceCell<String>,
}

impl Attempt<'_> {
    /// Who the credential is on GitHub: earlier effects are adopted only when authored by it.
    async fn me(&self) -> Result<&str, gh::Error> {
        self.me
            .get_or_try_init(|| async { Ok(self.github.identity().await?.login) })
            .await
            .map(String::as_str)
    }

    async fn find_comment(&self, number: u64) -> Result<Option<gh::Comment>, gh::Error> {
        let me = self.me().await?;
        self.github
            .find_comment_by_marker(self.repo, number, &self.marker, me)
            .await
    }
}

/// Runs the task's action; on return `progress.status` holds every result obtained.
pub async fn run_action(
    task: &GitHubTask,
    github: &GitHub,
    repo: &RepoRef,
    inputs: &ResolvedInputs,
    uncertain: bool,
    progress: &mut Progress<'_>,
) -> Result<(), StepError> {
    let at = Attempt {
        github,
        repo,
        marker: gh::marker(
            &task.namespace().unwrap_or_default(),
            &task.name_any(),
            task.uid().as_deref().unwrap_or_default(),
        ),
        since: task
            .meta()
            .creation_timestamp
            .as_ref()
            .map(crate::time::from_k8s),
        uncertain,
        me: tokio::sync::OnceCell::new(),
    };
    match task.spec.action() {
        Some(SpecAction::CreateIssue(spec)) => create_issue(&at, spec, progress).await,
        Some(SpecAction::Comment(spec)) => comment(&at, spec, progress).await,
        Some(SpecAction::CreatePullRequest(spec)) => {
            create_pull_request(&at, spec, inputs, progress).await
        }
        Some(SpecAction::ApproveAndMerge(spec)) => {
            approve_and_merge(&at, spec, inputs, progress).await
        }
        None => Err(StepError::User {
            reason: reasons::INVALID_SPEC.into(),
            message: ccplant_api::validation::EXACTLY_ONE_ACTION_MESSAGE.into(),
        }),
    }
}

/// createIssue: the issue, then the trigger comment (each found first if an earlier attempt
/// may have written it).
async fn create_issue(
    at: &Attempt<'_>,
    spec: &CreateIssueAction,
    progress: &mut Progress<'_>,
) -> Result<(), StepError> {
    let mut found_earlier = false;
    let mut number = progress.result().issue_number;
    if number.is_none() && at.uncertain {
        if let Some(issue) = at
            .github
            .find_issue_by_marker(at.repo, &at.marker, at.me().await?, at.since)
            .await?
        {
            found_earlier = true;
            number = Some(issue.number as i64);
            progress
                .save(|s| {
                    let r = result_mut(s);
                    r.issue_number = Some(issue.number as i64);
                    r.issue_url = Some(issue.html_url.clone());
                    r.url = Some(issue.html_url.clone());
                })
                .await?;
        }
    } else if number.is_some() {
        found_earlier = true;
    }
    let number = match number {
        Some(n) => n,
        None => {
            let new = gh::NewIssue {
                title: spec.title.clone(),
                body: spec.body.clone().unwrap_or_default(),
                labels: spec.labels.clone(),
                assignees: spec.assignees.clone(),
                milestone: spec.milestone.and_then(|m| u64::try_from(m).ok()),
            };
            let issue = at.github.create_issue(at.repo, &new, &at.marker).await?;
            let save = |s: &mut GitHubTaskStatus| {
                let r = result_mut(s);
                r.issue_number = Some(issue.number as i64);
                r.issue_url = Some(issue.html_url.clone());
                r.url = Some(issue.html_url.clone());
            };
            if spec.trigger_comment.is_some() {
                // Persist the issue before the second write.
                progress.save(save).await?;
            } else {
                progress.note(save);
            }
            issue.number as i64
        }
    };
    if let Some(comment) = spec.trigger_comment.as_deref()
        && progress.result().comment_id.is_none()
    {
        // An earlier, interrupted attempt may already have written it.
        let c = earlier_or_new(
            found_earlier,
            at.find_comment(number as u64),
            at.github
                .create_comment(at.repo, number as u64, comment, &at.marker),
        )
        .await?;
        progress.note(|s| result_mut(s).comment_id = Some(c.id as i64));
    }
    Ok(())
}

/// comment: one comment on an existing issue or pull request.
async fn comment(
    at: &Attempt<'_>,
    spec: &CommentAction,
    progress: &mut Progress<'_>,
) -> Result<(), StepError> {
    // An earlier, interrupted attempt may already have written it.
    let c = earlier_or_new(
        at.uncertain,
        at.find_comment(spec.issue as u64),
        at.github
            .create_comment(at.repo, spec.issue as u64, &spec.body, &at.marker),
    )
    .await?;
    progress.note(|s| {
        let r = result_mut(s);
        r.issue_number = Some(spec.issue);
        r.comment_id = Some(c.id as i64);
        r.url = Some(c.html_url.clone());
    });
    Ok(())
}

/// createPullRequest: the head and base resolved once and recorded, then the pull request.
async fn create_pull_request(
    at: &Attempt<'_>,
    spec: &CreatePullRequestAction,
    inputs: &ResolvedInputs,
    progress: &mut Progress<'_>,
) -> Result<(), StepError> {
    let (head, base) = branches(at, spec, inputs, progress).await?;
    // Only a pull request carrying this task's marker is an earlier attempt's: an
    // older PR from a reused branch must not be adopted.
    let mut pull = if at.uncertain {
        at.github
            .find_pull_by_marker(at.repo, &at.marker, at.me().await?, at.since)
            .await?
    } else {
        None
    };
    if pull.is_none() {
        let title = match spec.title.clone() {
            Some(t) => t,
            None => at
                .github
                .commit(at.repo, &head)
                .await?
                .subject()
                .to_string(),
        };
        let new = gh::NewPull {
            head: head.clone(),
            base: base.clone(),
            title,
            body: spec.body.clone().unwrap_or_default(),
            draft: spec.draft,
        };
        pull = Some(
            match at.github.create_pull(at.repo, &new, &at.marker).await {
                Ok(p) => p,
                Err(e @ gh::Error::PullRequestAlreadyExists { .. }) => {
                    match at.github.find_pull(at.repo, &head, &base).await? {
                        Some(p) => p,
                        None => return Err(e.into()),
                    }
                }
                Err(e) => return Err(e.into()),
            },
        );
    }
    if let Some(p) = pull {
        // The head it was opened at: approveAndMerge.fromTask merges exactly that commit.
        progress.note(|s| {
            record_pull(s, p.number as i64, &p.html_url).head_sha = Some(p.head.sha.clone());
        });
    }
    Ok(())
}

/// Records the pull request the task acts on as its result (and its main link).
fn record_pull<'s>(
    s: &'s mut GitHubTaskStatus,
    number: i64,
    url: &str,
) -> &'s mut ccplant_api::TaskResult {
    let r = result_mut(s);
    r.pull_request_number = Some(number);
    r.pull_request_url = Some(url.to_string());
    r.url = Some(url.to_string());
    r
}

/// The head and base of createPullRequest: recorded by an earlier attempt, named, the session's
/// work branch, or the branch with the newest commit; recorded before the write, so a retry
/// never picks another branch.
async fn branches(
    at: &Attempt<'_>,
    spec: &CreatePullRequestAction,
    inputs: &ResolvedInputs,
    progress: &mut Progress<'_>,
) -> Result<(String, String), StepError> {
    let recorded = progress.result();
    let base = match recorded.base_branch.clone().or_else(|| spec.base.clone()) {
        Some(b) => b,
        None => at.github.repository(at.repo).await?.default_branch,
    };
    let head = match recorded
        .head_branch
        .clone()
        .or_else(|| spec.head.clone())
        .or_else(|| inputs.session_branch.clone())
    {
        Some(h) => h,
        None => {
            let Some(branch) = at.github.resolve_head_branch(at.repo, &base).await? else {
                return Err(StepError::User {
                    reason: reasons::NO_HEAD_BRANCH.into(),
                    message: format!(
                        "{} has no branch other than {base} to open a pull request from",
                        at.repo
                    ),
                });
            };
            branch.name
        }
    };
    if recorded.head_branch.as_deref() != Some(head.as_str())
        || recorded.base_branch.as_deref() != Some(base.as_str())
    {
        progress
            .save(|s| {
                let r = result_mut(s);
                r.head_branch = Some(head.clone());
                r.base_branch = Some(base.clone());
            })
            .await?;
    }
    Ok((head, base))
}

/// approveAndMerge: the pull request resolved once and recorded with the head it is for, then
/// the approval, then the merge of exactly that head.
async fn approve_and_merge(
    at: &Attempt<'_>,
    spec: &ApproveAndMergeAction,
    inputs: &ResolvedInputs,
    progress: &mut Progress<'_>,
) -> Result<(), StepError> {
    let recorded = progress.result();
    let number = pull_to_merge(at, spec, inputs, progress).await?;
    let pull = at.github.pull(at.repo, number as u64).await?;
    let url = pull.html_url.clone();
    // The head is checked once, before it is recorded: after that the recorded head is the one
    // approved and merged (GitHub answers 409 if it moved).
    if let Some(expected) = spec.expected_head_sha.as_deref()
        && recorded.head_sha.is_none()
        && expected != pull.head.sha
    {
        return Err(StepError::User {
            reason: reasons::HEAD_MOVED.into(),
            message: format!(
                "head of pull request #{number} is {} but expectedHeadSHA is {expected}",
                pull.head.sha
            ),
        });
    }
    // fromTask: exactly the commit that task opened the pull request at.
    if let (Some(opened_at), Some(other)) =
        (inputs.task_head_sha.as_deref(), spec.from_task.as_deref())
        && recorded.head_sha.is_none()
        && !pull.merged
        && opened_at != pull.head.sha
    {
        return Err(StepError::User {
            reason: reasons::HEAD_MOVED.into(),
            message: format!(
                "head of pull request #{number} is {} but GitHubTask {other} opened it at {opened_at}: commits pushed since are not merged",
                pull.head.sha
            ),
        });
    }
    if pull.merged {
        progress.note(|s| {
            let r = record_pull(s, number, &url);
            r.merged = Some(true);
            r.merge_commit_sha = pull.merge_commit_sha.clone();
        });
        return Ok(());
    }
    let head_sha = recorded
        .head_sha
        .clone()
        .unwrap_or_else(|| pull.head.sha.clone());
    if recorded.pull_request_number != Some(number)
        || recorded.head_sha.as_deref() != Some(head_sha.as_str())
    {
        progress
            .save(|s| record_pull(s, number, &url).head_sha = Some(head_sha.clone()))
            .await?;
    }
    if spec.approve && progress.result().review_id.is_none() {
        // An earlier, interrupted attempt may already have written it.
        let review = earlier_or_new(
            at.uncertain,
            async {
                let me = at.me().await?;
                at.github
                    .find_review_by_marker(at.repo, number as u64, &at.marker, me)
                    .await
            },
            at.github.approve(
                at.repo,
                number as u64,
                &spec.review_comment,
                &head_sha,
                &at.marker,
            ),
        )
        .await?;
        progress.note(|s| result_mut(s).review_id = Some(review.id as i64));
    }
    merge(at, spec, number, head_sha, progress).await
}

/// The pull request approveAndMerge acts on: recorded by an earlier attempt, named, opened by
/// fromTask, or the newest open one (recorded before anything else can fail, so a retry never
/// picks another).
async fn pull_to_merge(
    at: &Attempt<'_>,
    spec: &ApproveAndMergeAction,
    inputs: &ResolvedInputs,
    progress: &mut Progress<'_>,
) -> Result<i64, StepError> {
    if let Some(n) = progress
        .result()
        .pull_request_number
        .or(spec.pull_request)
        .or(inputs.task_pull_request)
    {
        return Ok(n);
    }
    // Only among pull requests by allowed authors: by default the credential's own (those
    // ccplant opened), never an outsider's opened a minute ago.
    let (authors, described) = match spec.authors.as_slice() {
        [] => {
            let me = at.me().await?.to_string();
            (gh::Authors::Logins(vec![me.clone()]), me)
        }
        list if list.iter().any(|a| a == "*") => (gh::Authors::Any, "any author".to_string()),
        list => (gh::Authors::Logins(list.to_vec()), list.join(", ")),
    };
    let Some(p) = at.github.newest_open_pull(at.repo, &authors).await? else {
        return Err(StepError::User {
            reason: reasons::NO_PULL_REQUEST.into(),
            message: format!(
                "{} has no open pull request by {described} (spec.approveAndMerge.authors; [\"*\"] allows any author)",
                at.repo
            ),
        });
    };
    let n = p.number as i64;
    progress
        .save(|s| result_mut(s).pull_request_number = Some(n))
        .await?;
    Ok(n)
}

/// Merges exactly `head_sha`; "already merged" (by an earlier, interrupted attempt) counts as
/// merged.
async fn merge(
    at: &Attempt<'_>,
    spec: &ApproveAndMergeAction,
    number: i64,
    head_sha: String,
    progress: &mut Progress<'_>,
) -> Result<(), StepError> {
    let request = gh::MergeRequest {
        sha: Some(head_sha),
        method: spec.merge_method.as_str(),
        commit_title: spec.commit_title.clone(),
        commit_message: spec.commit_message.clone(),
    };
    let merged = at.github.merge(at.repo, number as u64, &request).await?;
    let merged_sha = merged.sha.unwrap_or_default();
    progress.note(|s| {
        let r = result_mut(s);
        r.merged = Some(true);
        r.merge_commit_sha = Some(merged_sha);
    });
    Ok(())
}
