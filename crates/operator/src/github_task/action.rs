//! The four actions, step by step. Each step first checks status (a result recorded by an
//! earlier attempt), then, when an earlier attempt may have written, looks for its effect by
//! the task's marker, and only then writes.

use super::status::result_mut;
use super::{Error, write_status};
use crate::context::Context;
use ccplant_api::conditions::reasons;
use ccplant_api::{
    Action as SpecAction, AgentSession, AgentSessionPhase, GitHubTask, GitHubTaskPhase,
    GitHubTaskStatus,
};
use ccplant_github::{self as gh, GitHubClient as GitHub, RepoRef};
use chrono::Utc;
use kube::api::Api;
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
                reason: "ValidationFailed".into(),
                message,
            },
            gh::Error::SelfApproval { .. } => StepError::User {
                reason: "SelfApproval".into(),
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
                reason: "InvalidConfiguration".into(),
                message,
            },
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
        401 | 403 => "Unauthorized",
        404 => "NotFound",
        405 => "NotMergeable",
        409 => "Conflict",
        422 => "ValidationFailed",
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
#[derive(Debug, Default, Clone)]
pub struct ResolvedInputs {
    /// createPullRequest.fromSession: the session's work branch.
    pub session_branch: Option<String>,
    /// approveAndMerge.fromTask: the pull request that task opened.
    pub task_pull_request: Option<i64>,
}

pub enum Inputs {
    Ready(ResolvedInputs),
    Waiting(String),
    Invalid(String),
}

pub async fn resolve_inputs(ctx: &Context, task: &GitHubTask) -> Result<Inputs, Error> {
    let ns = task.namespace().unwrap_or_default();
    let mut inputs = ResolvedInputs::default();
    // Inputs already recorded by an earlier attempt are not resolved again: the upstream object
    // may be gone by now (e.g. a session deleted by ttlAfterFinished).
    let recorded = task
        .status
        .as_ref()
        .and_then(|s| s.result.clone())
        .unwrap_or_default();
    if let Some(session) = task
        .spec
        .create_pull_request
        .as_ref()
        .and_then(|p| p.from_session.as_deref())
        .filter(|_| recorded.head_branch.is_none())
    {
        let api: Api<AgentSession> = Api::namespaced(ctx.client.clone(), &ns);
        let found = api
            .get_opt(session)
            .await
            .map_err(|source| Error::KubeRead {
                what: format!("AgentSession {ns}/{session}"),
                source,
            })?;
        let Some(found) = found else {
            return Ok(Inputs::Waiting(format!(
                "waiting for AgentSession {session} to exist"
            )));
        };
        match found.status.as_ref().and_then(|s| s.phase) {
            Some(AgentSessionPhase::Succeeded) => {
                inputs.session_branch = Some(
                    found
                        .status
                        .as_ref()
                        .and_then(|s| s.work_branch.clone())
                        .or_else(|| found.effective_work_branch())
                        .unwrap_or_default(),
                );
            }
            Some(phase @ (AgentSessionPhase::Failed | AgentSessionPhase::Expired)) => {
                return Ok(Inputs::Invalid(format!(
                    "AgentSession {session} ended {phase:?}; no pull request is opened from it"
                )));
            }
            _ => {
                return Ok(Inputs::Waiting(format!(
                    "waiting for AgentSession {session} to succeed"
                )));
            }
        }
    }
    if let Some(other) = task
        .spec
        .approve_and_merge
        .as_ref()
        .and_then(|a| a.from_task.as_deref())
        .filter(|_| recorded.pull_request_number.is_none())
    {
        let from_store = ctx.find_task(&ns, other);
        let Some(other_task) = from_store else {
            return Ok(Inputs::Waiting(format!(
                "waiting for GitHubTask {other} to exist"
            )));
        };
        match other_task.phase() {
            Some(GitHubTaskPhase::Succeeded) => {
                let Some(number) = other_task
                    .status
                    .as_ref()
                    .and_then(|s| s.result.as_ref())
                    .and_then(|r| r.pull_request_number)
                else {
                    return Ok(Inputs::Invalid(format!(
                        "GitHubTask {other} opened no pull request"
                    )));
                };
                inputs.task_pull_request = Some(number);
            }
            Some(GitHubTaskPhase::Failed) => {
                return Ok(Inputs::Invalid(format!(
                    "GitHubTask {other} Failed; nothing to merge"
                )));
            }
            _ => {
                return Ok(Inputs::Waiting(format!(
                    "waiting for GitHubTask {other} to succeed"
                )));
            }
        }
    }
    Ok(Inputs::Ready(inputs))
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
        self.status = write_status(self.ctx, self.task, &self.status, next).await?;
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

/// Runs the task's action; on return `progress.status` holds every result obtained.
pub async fn run_action(
    task: &GitHubTask,
    github: &GitHub,
    repo: &RepoRef,
    inputs: &ResolvedInputs,
    uncertain: bool,
    progress: &mut Progress<'_>,
) -> Result<(), StepError> {
    let marker = gh::marker(
        &task.namespace().unwrap_or_default(),
        &task.name_any(),
        task.uid().as_deref().unwrap_or_default(),
    );
    let since = task
        .meta()
        .creation_timestamp
        .as_ref()
        .map(crate::time::from_k8s);
    match task.spec.action() {
        Some(SpecAction::CreateIssue(spec)) => {
            let mut found_earlier = false;
            let mut number = progress.result().issue_number;
            if number.is_none() && uncertain {
                if let Some(issue) = github.find_issue_by_marker(repo, &marker, since).await? {
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
                    let issue = github.create_issue(repo, &new, &marker).await?;
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
                    github.find_comment_by_marker(repo, number as u64, &marker),
                    github.create_comment(repo, number as u64, comment, &marker),
                )
                .await?;
                progress.note(|s| result_mut(s).comment_id = Some(c.id as i64));
            }
            Ok(())
        }
        Some(SpecAction::Comment(spec)) => {
            // An earlier, interrupted attempt may already have written it.
            let c = earlier_or_new(
                uncertain,
                github.find_comment_by_marker(repo, spec.issue as u64, &marker),
                github.create_comment(repo, spec.issue as u64, &spec.body, &marker),
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
        Some(SpecAction::CreatePullRequest(spec)) => {
            let recorded = progress.result();
            let base = match recorded.base_branch.clone().or_else(|| spec.base.clone()) {
                Some(b) => b,
                None => github.repository(repo).await?.default_branch,
            };
            let head = match recorded
                .head_branch
                .clone()
                .or_else(|| spec.head.clone())
                .or_else(|| inputs.session_branch.clone())
            {
                Some(h) => h,
                None => {
                    let Some(branch) = github.resolve_head_branch(repo, &base).await? else {
                        return Err(StepError::User {
                            reason: "NoHeadBranch".into(),
                            message: format!(
                                "{repo} has no branch other than {base} to open a pull request from"
                            ),
                        });
                    };
                    branch.name
                }
            };
            if recorded.head_branch.as_deref() != Some(head.as_str())
                || recorded.base_branch.as_deref() != Some(base.as_str())
            {
                // Record the choice before the write: a retry never picks another branch.
                progress
                    .save(|s| {
                        let r = result_mut(s);
                        r.head_branch = Some(head.clone());
                        r.base_branch = Some(base.clone());
                    })
                    .await?;
            }
            // Only a pull request carrying this task's marker is an earlier attempt's: an
            // older PR from a reused branch must not be adopted.
            let mut pull = if uncertain {
                github.find_pull_by_marker(repo, &marker, since).await?
            } else {
                None
            };
            if pull.is_none() {
                let title = match spec.title.clone() {
                    Some(t) => t,
                    None => github.commit(repo, &head).await?.subject().to_string(),
                };
                let new = gh::NewPull {
                    head: head.clone(),
                    base: base.clone(),
                    title,
                    body: spec.body.clone().unwrap_or_default(),
                    draft: spec.draft,
                };
                pull = Some(match github.create_pull(repo, &new, &marker).await {
                    Ok(p) => p,
                    Err(e @ gh::Error::PullRequestAlreadyExists { .. }) => {
                        match github.find_pull(repo, &head, &base).await? {
                            Some(p) => p,
                            None => return Err(e.into()),
                        }
                    }
                    Err(e) => return Err(e.into()),
                });
            }
            if let Some(p) = pull {
                progress.note(|s| {
                    let r = result_mut(s);
                    r.pull_request_number = Some(p.number as i64);
                    r.pull_request_url = Some(p.html_url.clone());
                    r.url = Some(p.html_url.clone());
                });
            }
            Ok(())
        }
        Some(SpecAction::ApproveAndMerge(spec)) => {
            let recorded = progress.result();
            let number = match recorded
                .pull_request_number
                .or(spec.pull_request)
                .or(inputs.task_pull_request)
            {
                Some(n) => n,
                None => match github.newest_open_pull(repo).await? {
                    Some(p) => {
                        // Record the choice before anything else can fail: a retry never picks
                        // another pull request.
                        let n = p.number as i64;
                        progress
                            .save(|s| result_mut(s).pull_request_number = Some(n))
                            .await?;
                        n
                    }
                    None => {
                        return Err(StepError::User {
                            reason: "NoPullRequest".into(),
                            message: format!("{repo} has no open pull request"),
                        });
                    }
                },
            };
            let pull = github.pull(repo, number as u64).await?;
            let url = pull.html_url.clone();
            if let Some(expected) = spec.expected_head_sha.as_deref()
                && recorded.head_sha.is_none()
                && expected != pull.head.sha
            {
                return Err(StepError::User {
                    reason: "HeadMoved".into(),
                    message: format!(
                        "head of pull request #{number} is {} but expectedHeadSHA is {expected}",
                        pull.head.sha
                    ),
                });
            }
            if pull.merged {
                progress.note(|s| {
                    let r = result_mut(s);
                    r.pull_request_number = Some(number);
                    r.pull_request_url = Some(url.clone());
                    r.url = Some(url.clone());
                    r.merged = Some(true);
                    r.merge_commit_sha = pull.merge_commit_sha.clone();
                });
                return Ok(());
            }
            let head_sha = match recorded.head_sha.clone() {
                Some(sha) => sha,
                None => {
                    if let Some(expected) = spec.expected_head_sha.as_deref()
                        && expected != pull.head.sha
                    {
                        return Err(StepError::User {
                            reason: "HeadMoved".into(),
                            message: format!(
                                "head of pull request #{number} is {} but expectedHeadSHA is {expected}",
                                pull.head.sha
                            ),
                        });
                    }
                    pull.head.sha.clone()
                }
            };
            if recorded.pull_request_number != Some(number)
                || recorded.head_sha.as_deref() != Some(head_sha.as_str())
            {
                progress
                    .save(|s| {
                        let r = result_mut(s);
                        r.pull_request_number = Some(number);
                        r.pull_request_url = Some(url.clone());
                        r.url = Some(url.clone());
                        r.head_sha = Some(head_sha.clone());
                    })
                    .await?;
            }
            if spec.approve && progress.result().review_id.is_none() {
                // An earlier, interrupted attempt may already have written it.
                let review = earlier_or_new(
                    uncertain,
                    github.find_review_by_marker(repo, number as u64, &marker),
                    github.approve(
                        repo,
                        number as u64,
                        &spec.review_comment,
                        &head_sha,
                        &marker,
                    ),
                )
                .await?;
                progress.note(|s| result_mut(s).review_id = Some(review.id as i64));
            }
            let merge = gh::MergeRequest {
                sha: Some(head_sha.clone()),
                method: match spec.merge_method {
                    ccplant_api::MergeMethod::Merge => gh::MergeMethod::Merge,
                    ccplant_api::MergeMethod::Squash => gh::MergeMethod::Squash,
                    ccplant_api::MergeMethod::Rebase => gh::MergeMethod::Rebase,
                },
                commit_title: spec.commit_title.clone(),
                commit_message: spec.commit_message.clone(),
            };
            // "Already merged" (by an earlier, interrupted attempt) counts as merged.
            let merged = github.merge(repo, number as u64, &merge).await?;
            let merged_sha = merged.sha.unwrap_or_default();
            progress.note(|s| {
                let r = result_mut(s);
                r.merged = Some(true);
                r.merge_commit_sha = Some(merged_sha);
            });
            Ok(())
        }
        None => Err(StepError::User {
            reason: reasons::INVALID_SPEC.into(),
            message: ccplant_api::validation::EXACTLY_ONE_ACTION_MESSAGE.into(),
        }),
    }
}
