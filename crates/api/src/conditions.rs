//! Condition types, reasons, and helpers for `status.conditions`.
//!
//! Both kinds use the standard `metav1.Condition`. `Ready` is always present once the operator
//! has seen an object, so `kubectl wait --for=condition=Ready` works.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Condition types.
pub mod types {
    /// The object reached its goal: the session's agent is up (or the session succeeded), the
    /// task succeeded. Present on every object the operator has seen.
    pub const READY: &str = "Ready";
    /// AgentSession: the GitHub credentials the session needs exist and are current.
    pub const CREDENTIALS_READY: &str = "CredentialsReady";
    /// AgentSession: the workspace volume is bound (or no volume was asked for).
    pub const WORKSPACE_READY: &str = "WorkspaceReady";
    /// AgentSession: the session reached a final phase (Succeeded, Failed or Expired).
    pub const FINISHED: &str = "Finished";
    /// AgentSession: the operator can talk to the agent API in the pod.
    pub const AGENT_REACHABLE: &str = "AgentReachable";
    /// GitHubTask: GitHub's rate limit holds the task back until `status.nextAttemptTime`.
    pub const RATE_LIMITED: &str = "RateLimited";
}

/// Condition reasons (CamelCase, as Kubernetes requires).
pub mod reasons {
    /// The spec breaks a rule; the message says which. Nothing happens until the spec changes.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// A Secret the object refers to does not exist (yet).
    pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
    /// A Secret exists but lacks the keys it needs or holds unusable values.
    pub const INVALID_SECRET: &str = "InvalidSecret";
    /// The operator is creating or updating what the object needs.
    pub const RECONCILING: &str = "Reconciling";
    /// The object is waiting for something outside the operator (a pod to be scheduled, a
    /// session to finish, a rate limit to reset).
    pub const WAITING: &str = "Waiting";
    /// Everything the condition describes is in place.
    pub const AVAILABLE: &str = "Available";
    /// The session's agent is running.
    pub const RUNNING: &str = "Running";
    /// The session or task finished successfully.
    pub const SUCCEEDED: &str = "Succeeded";
    /// The session or task failed; the message says why.
    pub const FAILED: &str = "Failed";
    /// The session is suspended (`spec.suspend: true` or idle with a workspace volume).
    pub const SUSPENDED: &str = "Suspended";
    /// The session ran past `lifetime.maxDuration` or sat idle past `lifetime.idleTimeout`.
    pub const EXPIRED: &str = "Expired";
    /// The agent API did not answer.
    pub const AGENT_UNREACHABLE: &str = "AgentUnreachable";
    /// No agent activity and no new message for lifetime.idleTimeout.
    pub const IDLE_TIMEOUT: &str = "IdleTimeout";
    /// completion.mode WhenIdle: every message delivered and the agent idle for idleFor.
    pub const COMPLETED: &str = "Completed";
    /// GitHub's primary or secondary rate limit was hit.
    pub const RATE_LIMITED: &str = "RateLimited";
    /// No rate limit is in effect.
    pub const NOT_RATE_LIMITED: &str = "NotRateLimited";
    /// GitHub refused the request; the message carries GitHub's explanation.
    pub const GITHUB_ERROR: &str = "GitHubError";
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
            ready(false, reasons::RECONCILING, "creating pod", 1, 100)
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
        let mut conditions = vec![ready(false, reasons::RECONCILING, "creating pod", 1, 100)];
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
            ready(false, reasons::RECONCILING, "creating pod", 1, 100),
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
