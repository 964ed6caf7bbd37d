//! Pure status transitions of a GitHubTask: what the next status is, given the stored one and
//! what happened. No I/O; unit-tested directly.
//!
//! Messages carry GitHub's error text: every message stored (`status.message` and each
//! condition's) passes the token redactor first (DESIGN §7.3).

use crate::time::to_k8s;
use ccplant_api::conditions::{
    ConditionStatus, Progress, find_condition, new_condition, reasons, set_condition, set_progress,
    types,
};
use ccplant_api::{GitHubTask, GitHubTaskPhase, GitHubTaskStatus, RetryPolicy, TaskResult};
use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::time::Duration;

/// What the controller does after writing a status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Done,
    RequeueAfter(Duration),
}

/// Builds the next status from the stored one.
#[derive(Debug, Clone)]
pub struct StatusBuilder {
    status: GitHubTaskStatus,
    generation: Option<i64>,
    now: DateTime<Utc>,
}

impl StatusBuilder {
    pub fn new(task: &GitHubTask, now: DateTime<Utc>) -> Self {
        Self::from_status(task, task.status.clone().unwrap_or_default(), now)
    }

    pub fn from_status(
        task: &GitHubTask,
        mut status: GitHubTaskStatus,
        now: DateTime<Utc>,
    ) -> Self {
        status.action = task.spec.action().map(|a| a.kind());
        status.observed_generation = task.metadata.generation;
        Self {
            status,
            generation: task.metadata.generation,
            now,
        }
    }

    /// The status as built so far.
    pub fn status(self) -> GitHubTaskStatus {
        self.status
    }

    fn time(&self) -> Time {
        to_k8s(self.now)
    }

    /// Ready (True only for a success), and the kstatus condition of `progress` with the same
    /// reason and message.
    fn ready(&mut self, progress: Progress, reason: &str, message: &str) {
        let status = ConditionStatus::from(progress == Progress::Current);
        self.condition(types::READY, status, reason, message);
        let now = self.time();
        set_progress(
            &mut self.status.conditions,
            progress,
            reason,
            &crate::redact::tokens(message),
            self.generation,
            now,
        );
    }

    /// `status.message`, redacted.
    fn message(&mut self, message: String) {
        self.status.message = Some(crate::redact::owned(message));
    }

    fn rate_limited_condition(&mut self, limited: bool, message: &str) {
        let (status, reason) = if limited {
            (ConditionStatus::True, reasons::RATE_LIMITED)
        } else {
            (ConditionStatus::False, reasons::NOT_RATE_LIMITED)
        };
        self.condition(types::RATE_LIMITED, status, reason, message);
    }

    fn condition(&mut self, type_: &str, status: ConditionStatus, reason: &str, message: &str) {
        let message = crate::redact::tokens(message);
        let c = new_condition(type_, status, reason, message, self.generation, self.time());
        set_condition(&mut self.status.conditions, c);
    }

    fn clear_rate_limit(&mut self) {
        self.rate_limited_condition(false, "");
    }

    /// Waiting for credentials or a dependency (`Stalled` when it will not come without a
    /// change, e.g. an unusable Secret).
    pub fn pending(
        mut self,
        reason: &str,
        message: String,
        progress: Progress,
    ) -> GitHubTaskStatus {
        self.status.phase = Some(GitHubTaskPhase::Pending);
        self.ready(progress, reason, &message);
        self.clear_rate_limit();
        self.message(message);
        self.status
    }

    /// Given up for good; never acted on again.
    pub fn failed(mut self, reason: &str, message: String) -> GitHubTaskStatus {
        self.status.phase = Some(GitHubTaskPhase::Failed);
        self.ready(Progress::Stalled, reason, &message);
        self.clear_rate_limit();
        self.status.next_attempt_time = None;
        self.message(message);
        self.status
    }

    /// Records a new attempt, before its first GitHub write.
    pub fn start_attempt(mut self, max_attempts: i32) -> GitHubTaskStatus {
        self.status.attempts += 1;
        self.status.last_attempt_time = Some(self.time());
        self.status.next_attempt_time = None;
        self.status.phase = Some(GitHubTaskPhase::Running);
        let message = format!("attempt {} of {max_attempts}", self.status.attempts);
        self.ready(Progress::InProgress, reasons::RUNNING, &message);
        self.clear_rate_limit();
        self.message(message);
        self.status
    }

    /// The action's effect exists; `status.result` holds it.
    pub fn succeeded(mut self) -> GitHubTaskStatus {
        self.status.phase = Some(GitHubTaskPhase::Succeeded);
        let url = self
            .status
            .result
            .as_ref()
            .and_then(|r| r.url.clone())
            .unwrap_or_default();
        let message = if url.is_empty() {
            "done".to_string()
        } else {
            format!("done: {url}")
        };
        self.ready(Progress::Current, reasons::SUCCEEDED, &message);
        self.clear_rate_limit();
        self.status.next_attempt_time = None;
        self.message(message);
        self.status
    }

    /// Rate limited: wait until `reset_at`; the attempt is not consumed.
    pub fn rate_limited(
        mut self,
        reset_at: DateTime<Utc>,
        message: String,
    ) -> (GitHubTaskStatus, Outcome) {
        // GitHub's clock (x-ratelimit-reset) may be behind ours: never retry before now + 1 s.
        let reset_at = reset_at.max(self.now) + chrono::Duration::seconds(1);
        self.status.attempts = (self.status.attempts - 1).max(0);
        self.status.phase = Some(GitHubTaskPhase::Running);
        let text = format!("{message}; next attempt at {}", reset_at.to_rfc3339());
        self.ready(Progress::InProgress, reasons::RATE_LIMITED, &text);
        self.rate_limited_condition(true, &text);
        self.status.next_attempt_time = Some(to_k8s(reset_at));
        self.message(text);
        let wait = (reset_at - self.now).to_std().unwrap_or_default();
        (self.status, Outcome::RequeueAfter(wait))
    }

    /// A transient failure: retry with exponential backoff until `maxAttempts`.
    pub fn transient(self, retry: &RetryPolicy, message: String) -> (GitHubTaskStatus, Outcome) {
        let attempts = self.status.attempts;
        if attempts >= retry.max_attempts {
            let text = format!("gave up after {attempts} attempts: {message}");
            return (self.failed(reasons::GITHUB_ERROR, text), Outcome::Done);
        }
        let delay = retry
            .delay_after(u32::try_from(attempts.max(1)).unwrap_or(1))
            .unwrap_or(Duration::from_secs(10));
        let mut this = self;
        let next = this.now + chrono::Duration::from_std(delay).unwrap_or_default();
        let text = format!(
            "attempt {attempts} of {} failed: {message}",
            retry.max_attempts
        );
        this.status.phase = Some(GitHubTaskPhase::Running);
        this.ready(Progress::InProgress, reasons::GITHUB_ERROR, &text);
        this.clear_rate_limit();
        this.status.next_attempt_time = Some(to_k8s(next));
        this.message(text);
        (this.status, Outcome::RequeueAfter(delay))
    }
}

/// The reason of the Ready condition, if set.
pub fn ready_reason(status: &GitHubTaskStatus) -> Option<String> {
    find_condition(&status.conditions, types::READY).map(|c| c.reason.clone())
}

/// Backoff while Pending: as long as the task already waited (Ready False since), so the wait
/// doubles, between 1 s and 30 s.
pub fn pending_backoff(status: &GitHubTaskStatus, now: DateTime<Utc>) -> Duration {
    let since = find_condition(&status.conditions, types::READY)
        .map(|c| crate::time::from_k8s(&c.last_transition_time));
    crate::time::pending_backoff(since, now)
}

/// Mutable access to the result, creating it when missing.
pub fn result_mut(status: &mut GitHubTaskStatus) -> &mut TaskResult {
    status.result.get_or_insert_with(TaskResult::default)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ccplant_api::{CreateIssueAction, GitHubTaskSpec};

    fn task(status: Option<GitHubTaskStatus>) -> GitHubTask {
        let mut t = GitHubTask::new(
            "t",
            GitHubTaskSpec {
                repository: "octo/hello".into(),
                create_issue: Some(CreateIssueAction {
                    title: "Bug".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        t.metadata.generation = Some(1);
        t.status = status;
        t
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    fn cond<'a>(
        s: &'a GitHubTaskStatus,
        t: &str,
    ) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
        find_condition(&s.conditions, t).unwrap()
    }

    #[test]
    fn an_attempt_is_recorded_with_ready_false_and_not_rate_limited() {
        let s = StatusBuilder::new(&task(None), at(0)).start_attempt(5);
        assert_eq!(s.attempts, 1);
        assert_eq!(s.phase, Some(GitHubTaskPhase::Running));
        assert_eq!(s.action, Some(ccplant_api::TaskAction::CreateIssue));
        assert_eq!(s.observed_generation, Some(1));
        assert_eq!(s.last_attempt_time, Some(to_k8s(at(0))));
        assert_eq!(cond(&s, types::READY).status, "False");
        assert_eq!(cond(&s, types::READY).message, "attempt 1 of 5");
        assert_eq!(cond(&s, types::RATE_LIMITED).status, "False");
    }

    #[test]
    fn a_rate_limit_gives_the_attempt_back_and_waits_until_the_reset() {
        let started = StatusBuilder::new(&task(None), at(0)).start_attempt(5);
        let (s, outcome) = StatusBuilder::from_status(&task(None), started, at(1))
            .rate_limited(at(61), "API rate limit exceeded".into());
        assert_eq!(s.attempts, 0);
        assert_eq!(outcome, Outcome::RequeueAfter(Duration::from_secs(61)));
        assert_eq!(s.next_attempt_time, Some(to_k8s(at(62))));
        assert_eq!(cond(&s, types::RATE_LIMITED).status, "True");
        assert_eq!(cond(&s, types::READY).reason, reasons::RATE_LIMITED);
    }

    #[test]
    fn transient_errors_back_off_exponentially_then_fail_at_max_attempts() {
        let retry = RetryPolicy {
            max_attempts: 3,
            backoff: "10s".into(),
        };
        let mut status = None;
        let mut delays = Vec::new();
        for i in 0..3 {
            let started = StatusBuilder::new(&task(status.clone()), at(i)).start_attempt(3);
            let (s, outcome) = StatusBuilder::from_status(&task(None), started, at(i))
                .transient(&retry, "502".into());
            delays.push(outcome);
            status = Some(s);
        }
        assert_eq!(
            delays,
            [
                Outcome::RequeueAfter(Duration::from_secs(10)),
                Outcome::RequeueAfter(Duration::from_secs(20)),
                Outcome::Done
            ]
        );
        let s = status.unwrap();
        assert_eq!(s.phase, Some(GitHubTaskPhase::Failed));
        assert_eq!(s.message.as_deref(), Some("gave up after 3 attempts: 502"));
        assert_eq!(s.next_attempt_time, None);
    }

    #[test]
    fn reasserting_the_same_pending_state_changes_nothing() {
        let first = StatusBuilder::new(&task(None), at(0)).pending(
            reasons::SECRET_NOT_FOUND,
            "Secret a/b not found".into(),
            Progress::InProgress,
        );
        let again = StatusBuilder::new(&task(Some(first.clone())), at(7)).pending(
            reasons::SECRET_NOT_FOUND,
            "Secret a/b not found".into(),
            Progress::InProgress,
        );
        assert_eq!(first, again, "no status write in steady state");
    }

    #[test]
    fn every_stored_message_is_redacted() {
        let token = "ghs_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789";
        let said = format!("Bad credentials for {token}");
        let retry = RetryPolicy {
            max_attempts: 2,
            backoff: "10s".into(),
        };
        let started = || StatusBuilder::new(&task(None), at(0)).start_attempt(2);
        let builders = || StatusBuilder::from_status(&task(None), started(), at(1));
        let statuses = [
            builders().pending(reasons::SECRET_NOT_FOUND, said.clone(), Progress::Stalled),
            builders().failed(reasons::GITHUB_ERROR, said.clone()),
            builders().rate_limited(at(60), said.clone()).0,
            builders().transient(&retry, said.clone()).0,
            {
                let second = builders().start_attempt(2);
                StatusBuilder::from_status(&task(None), second, at(2))
                    .transient(&retry, said.clone())
                    .0
            },
        ];
        for s in &statuses {
            let json = serde_json::to_string(s).unwrap();
            assert!(!json.contains(&token[4..]), "{json}");
            assert!(
                s.message
                    .as_deref()
                    .is_some_and(|m| m.contains("Bad credentials for ghs_[REDACTED]")),
                "{json}"
            );
            assert!(
                cond(s, types::READY)
                    .message
                    .contains("Bad credentials for ghs_[REDACTED]"),
                "{json}"
            );
        }
        assert_eq!(statuses[4].phase, Some(GitHubTaskPhase::Failed));
    }

    #[test]
    fn success_sets_ready_true_with_the_link() {
        let mut started = StatusBuilder::new(&task(None), at(0)).start_attempt(5);
        result_mut(&mut started).url = Some("https://github.com/octo/hello/issues/1".into());
        let s = StatusBuilder::from_status(&task(None), started, at(1)).succeeded();
        assert_eq!(s.phase, Some(GitHubTaskPhase::Succeeded));
        assert_eq!(cond(&s, types::READY).status, "True");
        assert_eq!(
            cond(&s, types::READY).message,
            "done: https://github.com/octo/hello/issues/1"
        );
    }
}
