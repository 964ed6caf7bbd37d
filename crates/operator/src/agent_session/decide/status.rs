//! The next status of a session, condition by condition: each condition is a small pure
//! function of what was decided or observed, and [`Next`] puts them together.

use crate::events::{Event, EventType};
use crate::time::to_k8s;
use ccplant_api::conditions::{
    ConditionStatus, Progress, find_condition, new_condition, reasons, set_condition, set_progress,
    types,
};
use ccplant_api::{AgentSessionPhase, AgentSessionStatus};
use chrono::{DateTime, Utc};

/// Where the session stands after this reconcile: its phase, why, and what kstatus makes of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub phase: AgentSessionPhase,
    pub reason: &'static str,
    pub message: String,
    pub progress: Progress,
}

impl Verdict {
    /// The kstatus verdict every phase has unless a rule says otherwise: reached (Running, and
    /// the ends the spec asks for: Succeeded, Expired, Suspended), failed for good (Failed), or
    /// on its way (Pending, Starting).
    pub fn new(phase: AgentSessionPhase, reason: &'static str, message: impl Into<String>) -> Self {
        let progress = match phase {
            AgentSessionPhase::Running
            | AgentSessionPhase::Succeeded
            | AgentSessionPhase::Expired
            | AgentSessionPhase::Suspended => Progress::Current,
            AgentSessionPhase::Failed => Progress::Stalled,
            AgentSessionPhase::Pending | AgentSessionPhase::Starting => Progress::InProgress,
        };
        Self {
            phase,
            reason,
            message: message.into(),
            progress,
        }
    }

    /// The same, but it will not get further without a change (an invalid spec, a refused
    /// child, an unusable Secret).
    pub fn stalled(mut self) -> Self {
        self.progress = Progress::Stalled;
        self
    }
}

/// `Ready`: True once the session is where its spec asks (Current), False otherwise; the
/// reason is the verdict's.
pub fn ready_condition(v: &Verdict) -> (ConditionStatus, &'static str, &str) {
    (
        (v.progress == Progress::Current).into(),
        v.reason,
        &v.message,
    )
}

/// `Finished`: True with the verdict's reason once the phase is final; else False with the
/// phase as reason and no message.
pub fn finished_condition(v: &Verdict) -> (ConditionStatus, &'static str, &str) {
    if v.phase.is_finished() {
        (ConditionStatus::True, v.reason, &v.message)
    } else {
        (ConditionStatus::False, v.phase.as_str(), "")
    }
}

/// `Suspended`, once the session was suspended: True while it is (its lastTransitionTime is
/// when the suspension began), False after.
pub fn suspended_condition<'a>(
    v: &'a Verdict,
    status: &AgentSessionStatus,
) -> Option<(ConditionStatus, &'static str, &'a str)> {
    if v.phase == AgentSessionPhase::Suspended {
        Some((ConditionStatus::True, v.reason, &v.message))
    } else if find_condition(&status.conditions, types::SUSPENDED).is_some() {
        Some((ConditionStatus::False, reasons::RESUMED, ""))
    } else {
        None
    }
}

/// What the session's credentials are, as `CredentialsReady` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CredentialsShown {
    NotRequired,
    Available,
    /// A refresh failed while the current token is still valid.
    RefreshFailed(String),
    /// Pending on this problem.
    Problem {
        reason: &'static str,
        message: String,
    },
    Revoked,
}

/// `CredentialsReady`.
pub fn credentials_condition(c: &CredentialsShown) -> (ConditionStatus, &'static str, &str) {
    match c {
        CredentialsShown::NotRequired => (
            ConditionStatus::True,
            reasons::NOT_REQUIRED,
            "the session uses no GitHub credentials",
        ),
        CredentialsShown::Available => (
            ConditionStatus::True,
            reasons::AVAILABLE,
            "GitHub token in Secret",
        ),
        CredentialsShown::RefreshFailed(message) => (
            ConditionStatus::False,
            reasons::TOKEN_REFRESH_FAILED,
            message,
        ),
        CredentialsShown::Problem { reason, message } => (ConditionStatus::False, reason, message),
        CredentialsShown::Revoked => (
            ConditionStatus::False,
            reasons::REVOKED,
            "the session's token was revoked and its Secret deleted",
        ),
    }
}

/// `WorkspaceReady`, for a session with a workspace volume.
pub fn workspace_condition(
    pvc: &str,
    size: &str,
    bound: bool,
) -> (ConditionStatus, &'static str, String) {
    if bound {
        (
            ConditionStatus::True,
            reasons::AVAILABLE,
            format!("PVC {pvc} ({size}) bound"),
        )
    } else {
        (
            ConditionStatus::False,
            reasons::WAITING,
            format!("PVC {pvc} not bound yet"),
        )
    }
}

/// The reason of the Ready condition, if set.
pub fn ready_reason(status: &AgentSessionStatus) -> Option<&str> {
    find_condition(&status.conditions, types::READY).map(|c| c.reason.as_str())
}

/// True when the stored status says a token was issued (and not revoked since).
pub fn token_issued(status: &AgentSessionStatus) -> bool {
    find_condition(&status.conditions, types::CREDENTIALS_READY)
        .is_some_and(|c| c.status == "True" && c.reason == reasons::AVAILABLE)
}

/// The next status, built from the stored one.
#[derive(Clone, Debug)]
pub struct Next {
    pub status: AgentSessionStatus,
    generation: Option<i64>,
    now: DateTime<Utc>,
}

impl Next {
    pub fn new(stored: &AgentSessionStatus, generation: Option<i64>, now: DateTime<Utc>) -> Self {
        let mut status = stored.clone();
        status.observed_generation = generation;
        Self {
            status,
            generation,
            now,
        }
    }

    pub fn condition(
        &mut self,
        type_: &str,
        (status, reason, message): (ConditionStatus, &str, &str),
    ) {
        // Messages carry text from GitHub and agents: token-shaped strings never get stored.
        let message = crate::redact::tokens(message);
        let c = new_condition(
            type_,
            status,
            reason,
            message,
            self.generation,
            to_k8s(self.now),
        );
        set_condition(&mut self.status.conditions, c);
    }

    pub fn credentials(&mut self, shown: &CredentialsShown) {
        self.condition(types::CREDENTIALS_READY, credentials_condition(shown));
    }

    /// Sets the phase and everything that follows from the verdict: Ready, Finished, Reconciling
    /// or Stalled, the message, and the completion time of a final phase.
    pub fn verdict(&mut self, v: &Verdict) {
        self.status.phase = Some(v.phase);
        self.condition(types::READY, ready_condition(v));
        self.condition(types::FINISHED, finished_condition(v));
        let message = crate::redact::owned(v.message.clone());
        set_progress(
            &mut self.status.conditions,
            v.progress,
            v.reason,
            &message,
            self.generation,
            to_k8s(self.now),
        );
        if let Some(suspended) = suspended_condition(v, &self.status) {
            self.condition(types::SUSPENDED, suspended);
        }
        self.status.message = Some(message);
        if v.phase.is_finished() && self.status.completion_time.is_none() {
            self.status.completion_time = Some(to_k8s(self.now));
        }
    }

    /// The session's pod is gone or going: no endpoint to show.
    pub fn unreachable_endpoints(&mut self) {
        self.status.endpoint = None;
        self.status.editor_url = None;
    }
}

/// The verdict a stored status shows (for a session that finished earlier, whose status is
/// re-asserted, e.g. written by an older version without the kstatus conditions).
pub fn stored_verdict(status: &AgentSessionStatus, phase: AgentSessionPhase) -> Verdict {
    let reason = find_condition(&status.conditions, types::READY)
        .and_then(|c| static_reason(&c.reason))
        .unwrap_or(phase_reason(phase));
    Verdict::new(phase, reason, status.message.clone().unwrap_or_default())
}

/// The reason of a final phase when the stored status has none.
fn phase_reason(phase: AgentSessionPhase) -> &'static str {
    match phase {
        AgentSessionPhase::Succeeded => reasons::SUCCEEDED,
        AgentSessionPhase::Expired => reasons::EXPIRED,
        _ => reasons::FAILED,
    }
}

/// The constant for a final reason the operator wrote earlier.
fn static_reason(reason: &str) -> Option<&'static str> {
    const FINAL: [&str; 5] = [
        reasons::SUCCEEDED,
        reasons::FAILED,
        reasons::EXPIRED,
        reasons::IDLE_TIMEOUT,
        reasons::COMPLETED,
    ];
    FINAL.into_iter().find(|r| *r == reason)
}

/// The Event announcing a change of phase or Ready reason (none when neither changed): a
/// Warning for what a user must look at (Failed, Expired, Pending for any reason but waiting).
pub fn announce(before: &AgentSessionStatus, after: &AgentSessionStatus) -> Option<Event> {
    let reason_of = |s: &AgentSessionStatus| {
        find_condition(&s.conditions, types::READY).map(|c| c.reason.clone())
    };
    if before.phase == after.phase && reason_of(before) == reason_of(after) {
        return None;
    }
    let phase = after.phase?;
    let reason = reason_of(after).unwrap_or_default();
    let type_ = match phase {
        AgentSessionPhase::Failed | AgentSessionPhase::Expired => EventType::Warning,
        AgentSessionPhase::Pending if reason != reasons::WAITING => EventType::Warning,
        _ => EventType::Normal,
    };
    Some(Event {
        type_,
        reason: if type_ == EventType::Warning {
            reason
        } else {
            phase.as_str().to_string()
        },
        note: after.message.clone(),
        action: phase.as_str().to_string(),
    })
}
