//! The rules of a GitHubTask (pure): whether there is anything to do, what it waits for, and the
//! status an attempt ends with. The attempt itself (GitHub's answers decide each next step) is
//! `steps.rs`; exactly-once lives there and in the fenced attempt record.

use super::status::{Outcome, StatusBuilder, pending_backoff};
use super::steps::{ResolvedInputs, StepError};
use crate::credentials::CredentialsError;
use crate::guard::Guarded;
use crate::policy::Refusal;
use ccplant_api::conditions::{Progress, reasons};
use ccplant_api::{AgentSession, AgentSessionPhase, GitHubTask, GitHubTaskPhase, GitHubTaskStatus};
use ccplant_github::{GitHubClient as GitHub, RepoRef};
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Duration;

/// The operator's settings the rules depend on.
#[derive(Clone, Debug, Default)]
pub struct TaskConfig {
    /// `--default-github-owner`: the owner of a bare `repo`.
    pub default_github_owner: Option<String>,
}

/// What a task reconcile read.
#[derive(Debug, Default)]
pub struct Observed {
    /// What the GitHub access policy says (`None`: not asked, nothing to do).
    pub policy: Option<Result<(), Refusal>>,
    /// The GitHub client of the task's credentials (`None`: not read).
    pub github: Option<Result<GitHub, CredentialsError>>,
    /// createPullRequest.fromSession: the session, as cached (outer `None`: not asked).
    pub from_session: Option<Option<Arc<Guarded<AgentSession>>>>,
    /// approveAndMerge.fromTask: the task, as cached (outer `None`: not asked).
    pub from_task: Option<Option<Arc<Guarded<GitHubTask>>>>,
}

/// What one reconcile of a task does.
#[derive(Debug)]
pub enum Plan {
    /// Nothing, until the object changes or `requeue` passes.
    Idle(Option<Duration>),
    /// Write this status (Pending or Failed) and come back after `requeue`.
    Record {
        status: Box<GitHubTaskStatus>,
        requeue: Option<Duration>,
    },
    /// Record a new attempt (fenced on the version decided from), then run the action.
    Attempt(Box<Attempt>),
}

/// An attempt to run the action.
#[derive(Debug)]
pub struct Attempt {
    /// The client of the task's credentials.
    pub github: GitHub,
    pub repo: RepoRef,
    pub inputs: ResolvedInputs,
    /// An attempt was recorded earlier without a result: it may have written, so its effect is
    /// looked for before writing again.
    pub uncertain: bool,
    /// The status recording this attempt.
    pub started: GitHubTaskStatus,
}

/// Whether the task can act at all: its repository, or the plan when it cannot (finished,
/// invalid, waiting out a backoff or a rate limit). `observe` asks it too: a task that cannot
/// act reads nothing.
pub fn gate(task: &GitHubTask, now: DateTime<Utc>, cfg: &TaskConfig) -> Result<RepoRef, Plan> {
    let stored = task.status.clone().unwrap_or_default();
    if stored.phase.is_some_and(GitHubTaskPhase::is_finished) {
        return Err(Plan::Idle(None));
    }
    let failed = |message: String| Plan::Record {
        status: Box::new(StatusBuilder::new(task, now).failed(reasons::INVALID_SPEC, message)),
        requeue: None,
    };
    // What the schema may not have caught (objects that bypassed admission).
    if let Err(invalid) = task.spec.validate() {
        return Err(failed(invalid.to_string()));
    }
    let Some((owner, repo)) = task
        .spec
        .owner_and_repo(cfg.default_github_owner.as_deref())
    else {
        return Err(failed(format!(
            "repository \"{}\" names no owner and the operator has no --default-github-owner",
            task.spec.repository
        )));
    };
    // Waiting out a backoff or a rate limit: nothing to write.
    if let Some(next) = stored.next_attempt_time.as_ref()
        && crate::time::from_k8s(next) > now
    {
        return Err(Plan::Idle(Some(
            (crate::time::from_k8s(next) - now)
                .to_std()
                .unwrap_or_default(),
        )));
    }
    Ok(RepoRef::new(owner, repo))
}

/// The plan for `task`.
pub fn decide(
    task: &GitHubTask,
    observed: &Observed,
    now: DateTime<Utc>,
    cfg: &TaskConfig,
) -> Plan {
    let repo = match gate(task, now, cfg) {
        Ok(repo) => repo,
        Err(plan) => return plan,
    };
    let sb = StatusBuilder::new(task, now);
    let pending = |sb: StatusBuilder, reason: &str, message: String, progress: Progress| {
        let status = sb.pending(reason, message, progress);
        let requeue = Some(pending_backoff(&status, now));
        Plan::Record {
            status: Box::new(status),
            requeue,
        }
    };
    // The policy first: a refusal reads no Secret and makes no GitHub call.
    match &observed.policy {
        Some(Err(Refusal::NotAllowed(message) | Refusal::NoCredential(message))) => {
            return Plan::Record {
                status: Box::new(sb.failed(reasons::NOT_ALLOWED, message.clone())),
                requeue: None,
            };
        }
        Some(Err(Refusal::NotFound(message))) => {
            return pending(
                sb,
                reasons::CREDENTIAL_NOT_FOUND,
                message.clone(),
                Progress::InProgress,
            );
        }
        Some(Ok(())) | None => {}
    }
    // Credentials: a Secret the operator only `get`s (no watch: a missing one is retried with
    // backoff).
    let github = match &observed.github {
        Some(Ok(github)) => github.clone(),
        Some(Err(e @ CredentialsError::InvalidSecret { .. })) => {
            return pending(
                sb,
                reasons::INVALID_SECRET,
                e.to_string(),
                Progress::Stalled,
            );
        }
        Some(Err(e)) => {
            return pending(
                sb,
                reasons::SECRET_NOT_FOUND,
                e.to_string(),
                Progress::InProgress,
            );
        }
        None => {
            return pending(
                sb,
                reasons::SECRET_NOT_FOUND,
                "the credentials were not read".into(),
                Progress::InProgress,
            );
        }
    };
    let inputs = match inputs(task, observed, cfg) {
        Inputs::Ready(inputs) => inputs,
        Inputs::Waiting(message) => {
            return pending(sb, reasons::WAITING, message, Progress::InProgress);
        }
        Inputs::Invalid(message) => {
            return Plan::Record {
                status: Box::new(sb.failed(reasons::INVALID_SPEC, message)),
                requeue: None,
            };
        }
    };
    let stored = task.status.clone().unwrap_or_default();
    Plan::Attempt(Box::new(Attempt {
        github,
        repo,
        inputs,
        uncertain: stored.attempts > 0,
        started: sb.start_attempt(task.spec.retry.max_attempts),
    }))
}

/// What an attempt's inputs from other objects are.
#[derive(Debug, PartialEq, Eq)]
pub enum Inputs {
    Ready(ResolvedInputs),
    Waiting(String),
    Invalid(String),
}

/// Values that come from other objects (from the caches). Inputs already recorded by an
/// earlier attempt are not resolved again: the upstream object may be gone by now (e.g. a
/// session deleted by ttlAfterFinished).
pub fn inputs(task: &GitHubTask, observed: &Observed, cfg: &TaskConfig) -> Inputs {
    let mut inputs = ResolvedInputs::default();
    if let (Some(name), Some(found)) = (from_session(task), &observed.from_session) {
        let Some(session) = found.as_deref().and_then(Guarded::valid) else {
            return Inputs::Waiting(format!("waiting for AgentSession {name} to exist"));
        };
        match session.status.as_ref().and_then(|s| s.phase) {
            Some(AgentSessionPhase::Succeeded) => {
                inputs.session_branch = Some(
                    session
                        .status
                        .as_ref()
                        .and_then(|s| s.work_branch.clone())
                        .or_else(|| session.effective_work_branch())
                        .unwrap_or_default(),
                );
            }
            Some(phase @ (AgentSessionPhase::Failed | AgentSessionPhase::Expired)) => {
                return Inputs::Invalid(format!(
                    "AgentSession {name} ended {phase:?}; no pull request is opened from it"
                ));
            }
            _ => return Inputs::Waiting(format!("waiting for AgentSession {name} to succeed")),
        }
    }
    if let (Some(other), Some(found)) = (from_task(task), &observed.from_task) {
        let Some(other_task) = found.as_deref().and_then(Guarded::valid) else {
            return Inputs::Waiting(format!("waiting for GitHubTask {other} to exist"));
        };
        match other_task.phase() {
            Some(GitHubTaskPhase::Succeeded) => {
                let result = other_task
                    .status
                    .as_ref()
                    .and_then(|s| s.result.clone())
                    .unwrap_or_default();
                let Some(number) = result.pull_request_number else {
                    return Inputs::Invalid(format!("GitHubTask {other} opened no pull request"));
                };
                // Its number means something only in its own repository.
                let theirs = other_task
                    .spec
                    .owner_and_repo(cfg.default_github_owner.as_deref());
                let ours = task
                    .spec
                    .owner_and_repo(cfg.default_github_owner.as_deref());
                if theirs.map(|(o, r)| (o.to_lowercase(), r.to_lowercase()))
                    != ours.map(|(o, r)| (o.to_lowercase(), r.to_lowercase()))
                {
                    return Inputs::Invalid(format!(
                        "GitHubTask {other} opened its pull request in {}, not in {}",
                        other_task.spec.repository, task.spec.repository
                    ));
                }
                inputs.task_pull_request = Some(number);
                // The head it opened the pull request at: a push since then is not merged.
                inputs.task_head_sha = result.head_sha;
            }
            Some(GitHubTaskPhase::Failed) => {
                return Inputs::Invalid(format!("GitHubTask {other} Failed; nothing to merge"));
            }
            _ => return Inputs::Waiting(format!("waiting for GitHubTask {other} to succeed")),
        }
    }
    Inputs::Ready(inputs)
}

fn recorded(task: &GitHubTask) -> ccplant_api::TaskResult {
    task.status
        .as_ref()
        .and_then(|s| s.result.clone())
        .unwrap_or_default()
}

/// createPullRequest.fromSession, unless its branch was recorded already.
pub fn from_session(task: &GitHubTask) -> Option<&str> {
    task.spec
        .create_pull_request
        .as_ref()
        .and_then(|p| p.from_session.as_deref())
        .filter(|_| recorded(task).head_branch.is_none())
}

/// approveAndMerge.fromTask, unless its pull request was recorded already.
pub fn from_task(task: &GitHubTask) -> Option<&str> {
    task.spec
        .approve_and_merge
        .as_ref()
        .and_then(|a| a.from_task.as_deref())
        .filter(|_| recorded(task).pull_request_number.is_none())
}

/// The status an attempt ends with, and when to come back (pure). `progress` is the status as
/// the attempt left it (every result it obtained).
pub fn conclude(
    task: &GitHubTask,
    progress: GitHubTaskStatus,
    outcome: &Result<(), StepError>,
    now: DateTime<Utc>,
) -> (GitHubTaskStatus, Option<Duration>) {
    let sb = StatusBuilder::from_status(task, progress, now);
    let (status, next) = match outcome {
        Ok(()) => (sb.succeeded(), Outcome::Done),
        Err(StepError::User { reason, message }) => {
            (sb.failed(reason, message.clone()), Outcome::Done)
        }
        Err(StepError::RateLimited { reset_at, message }) => {
            sb.rate_limited(*reset_at, message.clone())
        }
        Err(StepError::Transient { message }) => sb.transient(&task.spec.retry, message.clone()),
        // Not a GitHub outcome: the reconcile steps back instead.
        Err(StepError::Kube(_) | StepError::NotLeader(_)) => (sb.status(), Outcome::Done),
    };
    let requeue = match next {
        Outcome::Done => None,
        Outcome::RequeueAfter(d) => Some(d),
    };
    (status, requeue)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ccplant_api::conditions::find_condition;
    use ccplant_github::{Credentials, SecretString};
    use serde_json::{Value, json};

    const T0: i64 = 1_800_000_000;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(T0 + secs, 0).unwrap()
    }

    fn task(spec: Value, status: Value) -> GitHubTask {
        let mut v = json!({
            "apiVersion": "ccplant.io/v1alpha1", "kind": "GitHubTask",
            "metadata": {"name": "t", "namespace": "team", "uid": "u1", "generation": 1},
            "spec": spec,
        });
        if !status.is_null() {
            v["status"] = status;
        }
        serde_json::from_value(v).unwrap()
    }

    fn issue() -> Value {
        json!({"repository": "octo/hello", "github": {"secretRef": {"name": "gh"}}, "createIssue": {"title": "x"}})
    }

    fn github() -> Option<Result<GitHub, CredentialsError>> {
        Some(
            GitHub::builder(Credentials::Token(SecretString::from("ghp_x")))
                .build()
                .map_err(|e| CredentialsError::InvalidSecret {
                    namespace: "team".into(),
                    name: "gh".into(),
                    problem: e.to_string(),
                }),
        )
    }

    fn session(phase: &str) -> Option<Option<Arc<Guarded<AgentSession>>>> {
        let s: AgentSession = serde_json::from_value(json!({
            "apiVersion": "ccplant.io/v1alpha1", "kind": "AgentSession",
            "metadata": {"name": "s", "namespace": "team"},
            "spec": {"repository": {"name": "octo/hello"}},
            "status": {"phase": phase, "workBranch": "ccplant/s"},
        }))
        .unwrap();
        Some(Some(Arc::new(Guarded::Valid(s))))
    }

    /// A Succeeded createPullRequest task `pr` in `repository` that opened #7 at abc123.
    fn other_task(repository: &str) -> Option<Option<Arc<Guarded<GitHubTask>>>> {
        let t = task(
            json!({"repository": repository, "createPullRequest": {"head": "x"}}),
            json!({"phase": "Succeeded", "result": {"pullRequestNumber": 7, "headSHA": "abc123"}}),
        );
        Some(Some(Arc::new(Guarded::Valid(t))))
    }

    /// The plan as one line: what it does, then the phase, Ready and the kstatus condition.
    fn summary(plan: &Plan) -> String {
        let status_line = |s: &GitHubTaskStatus| {
            let c = |t| {
                find_condition(&s.conditions, t)
                    .map(|c| format!("{}={}/{}", t, c.status, c.reason))
                    .unwrap_or_default()
            };
            format!(
                "{} {} {}{}: {}",
                s.phase.map_or("-", |p| p.as_str()),
                c("Ready"),
                c("Reconciling"),
                c("Stalled"),
                s.message.clone().unwrap_or_default()
            )
        };
        match plan {
            Plan::Idle(r) => format!("idle {r:?}"),
            Plan::Record { status, requeue } => {
                format!("record {requeue:?} {}", status_line(status))
            }
            Plan::Attempt(a) => format!(
                "attempt {} uncertain={} {:?} {}",
                a.repo,
                a.uncertain,
                a.inputs,
                status_line(&a.started)
            ),
        }
    }

    #[tokio::test]
    async fn every_rule_of_a_task_reconcile() {
        let cfg = TaskConfig::default();
        let ready = || Observed {
            github: github(),
            ..Observed::default()
        };
        let waiting_on = |phase: &str| Observed {
            github: github(),
            from_session: session(phase),
            ..Observed::default()
        };
        let from_session = json!({"repository": "octo/hello", "github": {"secretRef": {"name": "gh"}}, "createPullRequest": {"fromSession": "s"}});
        let cases: Vec<(&str, GitHubTask, Observed, &str)> = vec![
            (
                "finished: never acted on again",
                task(issue(), json!({"phase": "Succeeded"})),
                ready(),
                "idle None",
            ),
            (
                "bare repo without a default owner: Failed, Stalled",
                task(
                    json!({"repository": "hello", "createIssue": {"title": "x"}}),
                    Value::Null,
                ),
                ready(),
                "record None Failed Ready=False/InvalidSpec Stalled=True/InvalidSpec: repository \"hello\" names no owner and the operator has no --default-github-owner",
            ),
            (
                "waiting out a backoff: nothing to write",
                task(
                    issue(),
                    json!({"phase": "Running", "attempts": 1, "nextAttemptTime": "2027-01-15T08:00:10Z"}),
                ),
                ready(),
                "idle Some(6s)",
            ),
            (
                "no credentials configured: Pending, InProgress",
                task(
                    json!({"repository": "octo/hello", "createIssue": {"title": "x"}}),
                    Value::Null,
                ),
                Observed::default(),
                "record Some(1s) Pending Ready=False/SecretNotFound Reconciling=True/SecretNotFound: the credentials were not read",
            ),
            (
                "the policy refuses: Failed, Stalled, nothing read",
                task(issue(), Value::Null),
                Observed {
                    policy: Some(Err(Refusal::NotAllowed("GitHubCredential p does not allow ApproveAndMerge: its actions are Comment".into()))),
                    ..Observed::default()
                },
                "record None Failed Ready=False/NotAllowed Stalled=True/NotAllowed: GitHubCredential p does not allow ApproveAndMerge: its actions are Comment",
            ),
            (
                "no credential for the namespace: Failed, NotAllowed",
                task(issue(), Value::Null),
                Observed {
                    policy: Some(Err(Refusal::NoCredential("no default GitHubCredential selects namespace team: set spec.github.credentialName or spec.github.secretRef".into()))),
                    ..Observed::default()
                },
                "record None Failed Ready=False/NotAllowed Stalled=True/NotAllowed: no default GitHubCredential selects namespace team: set spec.github.credentialName or spec.github.secretRef",
            ),
            (
                "a named credential not there yet: Pending, retried",
                task(issue(), Value::Null),
                Observed {
                    policy: Some(Err(Refusal::NotFound("GitHubCredential p does not exist".into()))),
                    ..Observed::default()
                },
                "record Some(1s) Pending Ready=False/CredentialNotFound Reconciling=True/CredentialNotFound: GitHubCredential p does not exist",
            ),
            (
                "an unusable Secret: Pending, Stalled",
                task(issue(), Value::Null),
                Observed {
                    github: Some(Err(CredentialsError::InvalidSecret {
                        namespace: "team".into(),
                        name: "gh".into(),
                        problem: "has neither …".into(),
                    })),
                    ..Observed::default()
                },
                "record Some(1s) Pending Ready=False/InvalidSecret Stalled=True/InvalidSecret: Secret team/gh has neither …",
            ),
            (
                "the session it builds on does not exist yet",
                task(from_session.clone(), Value::Null),
                Observed {
                    github: github(),
                    from_session: Some(None),
                    ..Observed::default()
                },
                "record Some(1s) Pending Ready=False/Waiting Reconciling=True/Waiting: waiting for AgentSession s to exist",
            ),
            (
                "the session runs: wait",
                task(from_session.clone(), Value::Null),
                waiting_on("Running"),
                "record Some(1s) Pending Ready=False/Waiting Reconciling=True/Waiting: waiting for AgentSession s to succeed",
            ),
            (
                "the session expired: Failed",
                task(from_session.clone(), Value::Null),
                waiting_on("Expired"),
                "record None Failed Ready=False/InvalidSpec Stalled=True/InvalidSpec: AgentSession s ended Expired; no pull request is opened from it",
            ),
            (
                "the session succeeded: attempt from its work branch",
                task(from_session, Value::Null),
                waiting_on("Succeeded"),
                "attempt octo/hello uncertain=false ResolvedInputs { session_branch: Some(\"ccplant/s\"), task_pull_request: None, task_head_sha: None } Running Ready=False/Running Reconciling=True/Running: attempt 1 of 5",
            ),
            (
                "fromTask in another repository: Failed",
                task(
                    json!({"repository": "octo/other", "github": {"secretRef": {"name": "gh"}}, "approveAndMerge": {"fromTask": "pr"}}),
                    Value::Null,
                ),
                Observed {
                    github: github(),
                    from_task: other_task("octo/hello"),
                    ..Observed::default()
                },
                "record None Failed Ready=False/InvalidSpec Stalled=True/InvalidSpec: GitHubTask pr opened its pull request in octo/hello, not in octo/other",
            ),
            (
                "fromTask: its pull request at the head it opened it at",
                task(
                    json!({"repository": "octo/hello", "github": {"secretRef": {"name": "gh"}}, "approveAndMerge": {"fromTask": "pr"}}),
                    Value::Null,
                ),
                Observed {
                    github: github(),
                    from_task: other_task("octo/hello"),
                    ..Observed::default()
                },
                "attempt octo/hello uncertain=false ResolvedInputs { session_branch: None, task_pull_request: Some(7), task_head_sha: Some(\"abc123\") } Running Ready=False/Running Reconciling=True/Running: attempt 1 of 5",
            ),
            (
                "an attempt recorded without a result: looked for before writing again",
                task(issue(), json!({"phase": "Running", "attempts": 2})),
                ready(),
                "attempt octo/hello uncertain=true ResolvedInputs { session_branch: None, task_pull_request: None, task_head_sha: None } Running Ready=False/Running Reconciling=True/Running: attempt 3 of 5",
            ),
        ];
        for (name, t, observed, want) in cases {
            assert_eq!(summary(&decide(&t, &observed, at(4), &cfg)), want, "{name}");
        }
    }

    #[test]
    fn an_attempt_ends_with_the_status_its_outcome_says() {
        let t = task(issue(), json!({"phase": "Running", "attempts": 1}));
        let started = t.status.clone().unwrap();
        let line = |outcome: Result<(), StepError>| {
            let (s, requeue) = conclude(&t, started.clone(), &outcome, at(0));
            let c = |ty| {
                find_condition(&s.conditions, ty)
                    .map(|c| format!("{ty}={}/{}", c.status, c.reason))
                    .unwrap_or_default()
            };
            format!(
                "{} {} {}{} {requeue:?}",
                s.phase.map_or("-", |p| p.as_str()),
                c("Ready"),
                c("Reconciling"),
                c("Stalled")
            )
        };
        assert_eq!(line(Ok(())), "Succeeded Ready=True/Succeeded  None");
        assert_eq!(
            line(Err(StepError::User {
                reason: reasons::NOT_FOUND.into(),
                message: "Not Found".into()
            })),
            "Failed Ready=False/NotFound Stalled=True/NotFound None"
        );
        assert_eq!(
            line(Err(StepError::RateLimited {
                reset_at: at(60),
                message: "limited".into()
            })),
            "Running Ready=False/RateLimited Reconciling=True/RateLimited Some(61s)"
        );
        assert_eq!(
            line(Err(StepError::Transient {
                message: "502".into()
            })),
            "Running Ready=False/GitHubError Reconciling=True/GitHubError Some(10s)"
        );
    }
}
