//! Condition types, reasons, and helpers for `status.conditions`.
//!
//! Both kinds use the standard `metav1.Condition`. `Ready` is always present once the operator
//! has seen an object, so `kubectl wait --for=condition=Ready` works.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Condition types.
pub mod types {
    /// The object reached what its spec asks for: the session's agent is up, or the session
    /// succeeded, expired or is suspended; the task succeeded. Present on every object the
    /// operator has seen, so `kubectl wait --for=condition=Ready` works.
    pub const READY: &str = "Ready";
    /// kstatus "abnormal-true": present (True) only while the operator is still getting the
    /// object where its spec asks (Pending, Starting, a retry, a rate limit); the reason says
    /// why. Absent otherwise.
    pub const RECONCILING: &str = "Reconciling";
    /// kstatus "abnormal-true": present (True) only when the object will not get where its spec
    /// asks without a change (an invalid spec, a refused child, a terminal GitHub refusal, a
    /// failed session or task). Absent otherwise.
    pub const STALLED: &str = "Stalled";
    /// AgentSession: the GitHub credentials the session needs exist and are current.
    pub const CREDENTIALS_READY: &str = "CredentialsReady";
    /// AgentSession: the workspace volume is bound (or no volume was asked for).
    pub const WORKSPACE_READY: &str = "WorkspaceReady";
    /// AgentSession: the session reached a final phase (Succeeded, Failed or Expired).
    pub const FINISHED: &str = "Finished";
    /// AgentSession: the operator can talk to the agent API in the pod.
    pub const AGENT_REACHABLE: &str = "AgentReachable";
    /// AgentSession, once it was suspended (as batch/v1 Job's): True while suspended (reason
    /// Suspended or IdleTimeout; lastTransitionTime is when), False (reason Resumed) after.
    pub const SUSPENDED: &str = "Suspended";
    /// GitHubTask: GitHub's rate limit holds the task back until `status.nextAttemptTime`.
    pub const RATE_LIMITED: &str = "RateLimited";
}

/// Condition reasons (CamelCase, as Kubernetes requires): every reason the operator writes.
pub mod reasons {
    // Both kinds.
    /// The spec breaks a rule, or the operator cannot read the object; the message says which.
    /// Nothing happens until the object changes.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// A Secret the object refers to does not exist (yet).
    pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
    /// A Secret exists but lacks the keys it needs or holds unusable values.
    pub const INVALID_SECRET: &str = "InvalidSecret";
    /// The object is waiting for something outside the operator (a pod to start, a volume to
    /// bind, a session or task to finish).
    pub const WAITING: &str = "Waiting";
    /// Everything the condition describes is in place.
    pub const AVAILABLE: &str = "Available";
    /// The session's agent is running; a task's attempt is under way.
    pub const RUNNING: &str = "Running";
    /// The session or task finished successfully.
    pub const SUCCEEDED: &str = "Succeeded";
    /// The session failed (its agent or pod); the message says why.
    pub const FAILED: &str = "Failed";

    // AgentSession.
    /// The session is suspended (`spec.suspend: true`).
    pub const SUSPENDED: &str = "Suspended";
    /// The session runs again after a suspension.
    pub const RESUMED: &str = "Resumed";
    /// The session ran past `lifetime.maxDuration`.
    pub const EXPIRED: &str = "Expired";
    /// No agent activity and no new message for lifetime.idleTimeout.
    pub const IDLE_TIMEOUT: &str = "IdleTimeout";
    /// completion.mode WhenIdle: every message delivered and the agent idle for idleFor.
    pub const COMPLETED: &str = "Completed";
    /// The apiserver refused one of the session's children (admission, quota, an invalid
    /// override); the message carries its answer.
    pub const CHILD_REJECTED: &str = "ChildRejected";
    /// An object with one of the session's child names exists and is not controlled by the
    /// session (its controller ownerReference): nothing is written, deleted or dialled.
    pub const NAME_CONFLICT: &str = "NameConflict";
    /// The GitHub access policy refuses it: a GitHubCredential's rule (namespace, repository,
    /// action, session permissions) or no credential at all; the message names both.
    pub const NOT_ALLOWED: &str = "NotAllowed";
    /// The class's limits.maxActiveSessionsPerNamespace is reached: the session waits its turn
    /// (oldest first); the message gives its place in line.
    pub const QUEUED: &str = "Queued";
    /// spec.className names an AgentSessionClass that does not exist (yet).
    pub const CLASS_NOT_FOUND: &str = "ClassNotFound";
    /// spec.github.credentialName names a GitHubCredential that does not exist (yet).
    pub const CREDENTIAL_NOT_FOUND: &str = "CredentialNotFound";
    /// The GitHubCredential's Secret was found and GitHub answered with its identity.
    pub const CREDENTIAL_READY: &str = "Ready";
    /// A plain token from another namespace is never copied into the session's namespace.
    pub const TOKEN_NOT_SHAREABLE: &str = "TokenNotShareable";
    /// No installation token could be minted for the session.
    pub const TOKEN_UNAVAILABLE: &str = "TokenUnavailable";
    /// Refreshing the session's token failed while the current one is still valid.
    pub const TOKEN_REFRESH_FAILED: &str = "TokenRefreshFailed";
    /// The session uses no GitHub credentials.
    pub const NOT_REQUIRED: &str = "NotRequired";
    /// The session's token was revoked and its Secret deleted.
    pub const REVOKED: &str = "Revoked";
    /// The operator is connecting to the agent API for the first time.
    pub const CONNECTING: &str = "Connecting";
    /// The agent API answers.
    pub const REACHABLE: &str = "Reachable";
    /// No agent runs: the session's pod is not running.
    pub const NOT_RUNNING: &str = "NotRunning";
    /// The agent API refused or dropped the connection.
    pub const CONNECTION_FAILED: &str = "ConnectionFailed";
    /// The agent API did not answer in time.
    pub const TIMEOUT: &str = "Timeout";
    /// The agent API answered with an HTTP error.
    pub const HTTP_ERROR: &str = "HTTPError";
    /// The agent API answered something that is not agentapi's protocol.
    pub const PROTOCOL_ERROR: &str = "ProtocolError";
    /// The repository clone (init container `clone`) failed.
    pub const CLONE_FAILED: &str = "CloneFailed";
    /// The pod failed without a more specific reason.
    pub const POD_FAILED: &str = "PodFailed";

    // GitHubTask.
    /// A task's first attempt began (an Event's reason).
    pub const STARTED: &str = "Started";
    /// GitHub's primary or secondary rate limit was hit.
    pub const RATE_LIMITED: &str = "RateLimited";
    /// No rate limit is in effect.
    pub const NOT_RATE_LIMITED: &str = "NotRateLimited";
    /// GitHub failed (5xx, a timeout, a dropped connection): retried until retry.maxAttempts.
    pub const GITHUB_ERROR: &str = "GitHubError";
    /// GitHub answered 401 or 403 (without a rate limit): the credential may not do this.
    pub const UNAUTHORIZED: &str = "Unauthorized";
    /// GitHub answered 404: the repository, issue or pull request does not exist (or the
    /// credential cannot see it).
    pub const NOT_FOUND: &str = "NotFound";
    /// GitHub answered 405: the pull request is not mergeable.
    pub const NOT_MERGEABLE: &str = "NotMergeable";
    /// GitHub answered 409: the pull request's head moved since the review.
    pub const CONFLICT: &str = "Conflict";
    /// GitHub answered 422: it refused the request's content.
    pub const VALIDATION_FAILED: &str = "ValidationFailed";
    /// GitHub refuses an approval of a pull request by its own author.
    pub const SELF_APPROVAL: &str = "SelfApproval";
    /// The operator's GitHub configuration is unusable (e.g. --github-api-url).
    pub const INVALID_CONFIGURATION: &str = "InvalidConfiguration";
    /// createPullRequest: the repository has no branch to open a pull request from.
    pub const NO_HEAD_BRANCH: &str = "NoHeadBranch";
    /// approveAndMerge: the repository has no open pull request.
    pub const NO_PULL_REQUEST: &str = "NoPullRequest";
    /// approveAndMerge: the pull request's head is not approveAndMerge.expectedHeadSHA.
    pub const HEAD_MOVED: &str = "HeadMoved";
}

/// The status of a condition: `True`, `False` or `Unknown`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// The operator cannot tell (yet).
    Unknown,
}

impl ConditionStatus {
    /// The string Kubernetes stores.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
        }
    }
}

impl From<bool> for ConditionStatus {
    fn from(value: bool) -> Self {
        if value { Self::True } else { Self::False }
    }
}

/// Builds a condition. `now` becomes `lastTransitionTime` unless [`set_condition`] keeps the
/// earlier one.
pub fn new_condition(
    type_: &str,
    status: ConditionStatus,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
    now: Time,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: status.as_str().to_owned(),
        reason: reason.to_owned(),
        message: message.into(),
        observed_generation,
        last_transition_time: now,
    }
}

/// Sets `condition` in `conditions`, replacing the one of the same type in place or appending.
///
/// When the status did not change, the existing `lastTransitionTime` is kept, so re-asserting a
/// condition is a no-op and steady state writes nothing. Returns whether anything changed.
pub fn set_condition(conditions: &mut Vec<Condition>, mut condition: Condition) -> bool {
    match conditions.iter_mut().find(|c| c.type_ == condition.type_) {
        Some(existing) => {
            if existing.status == condition.status {
                condition.last_transition_time = existing.last_transition_time.clone();
            }
            if *existing == condition {
                false
            } else {
                *existing = condition;
                true
            }
        }
        None => {
            conditions.push(condition);
            true
        }
    }
}

/// Where an object stands, in the terms of kstatus (what Flux, kpt and `kubectl wait` read).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Progress {
    /// It reached what its spec asks for: neither Reconciling nor Stalled.
    Current,
    /// The operator is still getting it there: `Reconciling=True`.
    InProgress,
    /// It will not get there without a change: `Stalled=True`.
    Stalled,
}

/// Sets the kstatus conditions for `progress`: `Reconciling=True` or `Stalled=True` with
/// `reason` and `message`, and removes the other one (both are "abnormal-true": present only
/// while they hold). Returns whether anything changed.
pub fn set_progress(
    conditions: &mut Vec<Condition>,
    progress: Progress,
    reason: &str,
    message: &str,
    observed_generation: Option<i64>,
    now: Time,
) -> bool {
    let (holds, absent) = match progress {
        Progress::Current => (None, [types::RECONCILING, types::STALLED]),
        Progress::InProgress => (Some(types::RECONCILING), [types::STALLED, types::STALLED]),
        Progress::Stalled => (
            Some(types::STALLED),
            [types::RECONCILING, types::RECONCILING],
        ),
    };
    let mut changed = false;
    for type_ in absent {
        changed |= remove_condition(conditions, type_);
    }
    if let Some(type_) = holds {
        let condition = new_condition(
            type_,
            ConditionStatus::True,
            reason,
            message,
            observed_generation,
            now,
        );
        changed |= set_condition(conditions, condition);
    }
    changed
}

/// Removes the condition of the given type. Returns whether one was removed.
pub fn remove_condition(conditions: &mut Vec<Condition>, type_: &str) -> bool {
    let before = conditions.len();
    conditions.retain(|c| c.type_ != type_);
    conditions.len() != before
}

/// The condition of the given type, if present.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition of the given type is present with status `True`.
pub fn is_condition_true(conditions: &[Condition], type_: &str) -> bool {
    find_condition(conditions, type_).is_some_and(|c| c.status == ConditionStatus::True.as_str())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;

    use super::*;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).unwrap_or(Timestamp::UNIX_EPOCH))
    }

    fn ready(status: bool, reason: &str, message: &str, generation: i64, now: i64) -> Condition {
        new_condition(
            types::READY,
            status.into(),
            reason,
            message,
            Some(generation),
            at(now),
        )
    }

    #[test]
    fn set_condition_appends_a_new_type() {
        let mut conditions = vec![];
        assert!(set_condition(
            &mut conditions,
            ready(false, reasons::WAITING, "creating pod", 1, 100)
        ));
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].status, "False");
        assert_eq!(conditions[0].last_transition_time, at(100));

        assert!(set_condition(
            &mut conditions,
            new_condition(
                types::FINISHED,
                ConditionStatus::Unknown,
                reasons::RUNNING,
                "",
                Some(1),
                at(100)
            )
        ));
        assert_eq!(
            conditions
                .iter()
                .map(|c| c.type_.as_str())
                .collect::<Vec<_>>(),
            ["Ready", "Finished"]
        );
    }

    #[test]
    fn set_condition_is_a_no_op_when_nothing_changed() {
        let mut conditions = vec![ready(true, reasons::RUNNING, "agent is up", 1, 100)];
        // Same content, later clock: nothing changes, the transition time stays.
        assert!(!set_condition(
            &mut conditions,
            ready(true, reasons::RUNNING, "agent is up", 1, 200)
        ));
        assert_eq!(conditions[0].last_transition_time, at(100));
    }

    #[test]
    fn set_condition_keeps_transition_time_when_status_is_unchanged() {
        let mut conditions = vec![ready(false, reasons::SECRET_NOT_FOUND, "no Secret", 1, 100)];
        assert!(set_condition(
            &mut conditions,
            ready(false, reasons::WAITING, "pod is pending", 2, 200)
        ));
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].reason, "Waiting");
        assert_eq!(conditions[0].message, "pod is pending");
        assert_eq!(conditions[0].observed_generation, Some(2));
        assert_eq!(conditions[0].last_transition_time, at(100));
    }

    #[test]
    fn set_condition_moves_transition_time_when_status_changes() {
        let mut conditions = vec![
            ready(false, reasons::WAITING, "creating pod", 1, 100),
            new_condition(
                types::AGENT_REACHABLE,
                ConditionStatus::Unknown,
                reasons::WAITING,
                "",
                Some(1),
                at(100),
            ),
        ];
        assert!(set_condition(
            &mut conditions,
            ready(true, reasons::RUNNING, "agent is up", 1, 300)
        ));
        assert_eq!(conditions[0].type_, "Ready", "replaced in place");
        assert_eq!(conditions[0].status, "True");
        assert_eq!(conditions[0].last_transition_time, at(300));
        assert_eq!(conditions[1].last_transition_time, at(100));
    }

    #[test]
    fn progress_keeps_exactly_one_abnormal_true_condition() {
        let mut conditions = vec![ready(false, reasons::WAITING, "", 1, 100)];
        assert!(set_progress(
            &mut conditions,
            Progress::InProgress,
            reasons::WAITING,
            "starting the session pod",
            Some(1),
            at(100)
        ));
        let types_of = |c: &[Condition]| c.iter().map(|c| c.type_.clone()).collect::<Vec<_>>();
        assert_eq!(types_of(&conditions), ["Ready", "Reconciling"]);
        assert!(!set_progress(
            &mut conditions,
            Progress::InProgress,
            reasons::WAITING,
            "starting the session pod",
            Some(1),
            at(200)
        ));
        assert!(set_progress(
            &mut conditions,
            Progress::Stalled,
            reasons::INVALID_SPEC,
            "no image",
            Some(2),
            at(300)
        ));
        assert_eq!(types_of(&conditions), ["Ready", "Stalled"]);
        let stalled = find_condition(&conditions, types::STALLED).unwrap();
        assert_eq!(
            (
                stalled.status.as_str(),
                stalled.reason.as_str(),
                stalled.message.as_str()
            ),
            ("True", "InvalidSpec", "no image")
        );
        assert_eq!(stalled.last_transition_time, at(300));
        assert!(set_progress(
            &mut conditions,
            Progress::Current,
            "",
            "",
            Some(2),
            at(400)
        ));
        assert_eq!(types_of(&conditions), ["Ready"]);
    }

    #[test]
    fn find_remove_and_query() {
        let mut conditions = vec![ready(true, reasons::RUNNING, "", 1, 100)];
        assert!(is_condition_true(&conditions, types::READY));
        assert!(!is_condition_true(&conditions, types::FINISHED));
        assert_eq!(
            find_condition(&conditions, types::READY).map(|c| c.reason.as_str()),
            Some("Running")
        );
        assert!(!remove_condition(&mut conditions, types::FINISHED));
        assert!(remove_condition(&mut conditions, types::READY));
        assert!(conditions.is_empty());
        assert!(!is_condition_true(&conditions, types::READY));
    }
}
