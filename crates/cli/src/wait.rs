//! `kubectl ccplant wait`: watch a session until it reaches a phase or goes idle.

use std::fmt;
use std::str::FromStr;

use ccplant_api::{AgentSession, AgentSessionPhase, AgentState, parse_duration};
use kube::runtime::wait::await_condition;
use kube::runtime::watcher;

use crate::args::WaitArgs;
use crate::cluster::Ctx;
use crate::error::Error;

const PHASES: [AgentSessionPhase; 7] = AgentSessionPhase::ALL;

/// What `--for` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitTarget {
    /// `status.phase` is this phase.
    Phase(AgentSessionPhase),
    /// `status.agent.state` is Idle and every message (prompt included) was delivered.
    Idle,
}

impl FromStr for WaitTarget {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("idle") {
            return Ok(Self::Idle);
        }
        let phase = match s.split_once('=') {
            Some((key, value)) if key.eq_ignore_ascii_case("phase") => value,
            Some(_) => return Err(format!("unknown condition {s:?}: {}", Self::USAGE)),
            None => s,
        };
        PHASES
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(phase))
            .map(Self::Phase)
            .ok_or_else(|| format!("unknown phase {phase:?}: {}", Self::USAGE))
    }
}

impl WaitTarget {
    const USAGE: &str =
        "use phase=<Pending|Starting|Running|Succeeded|Failed|Suspended|Expired> or idle";
}

impl fmt::Display for WaitTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Phase(p) => write!(f, "phase={p}"),
            Self::Idle => f.write_str("idle"),
        }
    }
}

/// Where a session stands with respect to a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    Met,
    Waiting,
    /// The session finished in a phase from which the target can no longer be reached.
    FinishedElsewhere(AgentSessionPhase),
}

pub fn progress(target: WaitTarget, session: &AgentSession) -> Progress {
    let met = match target {
        WaitTarget::Phase(p) => session.phase() == Some(p),
        WaitTarget::Idle => is_idle(session),
    };
    match session.phase() {
        _ if met => Progress::Met,
        Some(p) if p.is_finished() => Progress::FinishedElsewhere(p),
        _ => Progress::Waiting,
    }
}

/// The agent is Idle and has received the prompt and every message.
fn is_idle(session: &AgentSession) -> bool {
    session
        .status
        .as_ref()
        .and_then(|s| s.agent.as_ref())
        .is_some_and(|a| {
            a.state == Some(AgentState::Idle)
                && usize::try_from(a.delivered_messages)
                    .is_ok_and(|d| d >= session.spec.total_messages())
        })
}

/// One line describing the session's state, for the timeout message.
pub fn describe(session: &AgentSession) -> String {
    let status = session.status.as_ref();
    let agent = status.and_then(|s| s.agent.as_ref());
    format!(
        "phase {}, agent {}, {}/{} messages delivered",
        session.phase().map_or("<none>", |p| p.as_str()),
        agent.and_then(|a| a.state).map_or("<none>", |s| s.as_str()),
        agent.map_or(0, |a| a.delivered_messages),
        session.spec.total_messages(),
    )
}

pub async fn run(ctx: &Ctx, args: WaitArgs, out: &mut dyn std::io::Write) -> Result<(), Error> {
    let timeout =
        parse_duration(&args.timeout).map_err(|e| Error::Usage(format!("--timeout: {e}")))?;
    let target = args.condition;
    let name = args.name.as_str();
    let deadline = tokio::time::Instant::now() + timeout;
    // A first read turns "no such session" and "no CRD" into their own errors.
    let mut session = ctx.get_session(name).await?;
    if progress(target, &session) == Progress::Waiting {
        let settled = |obj: Option<&AgentSession>| {
            obj.is_none_or(|s| progress(target, s) != Progress::Waiting)
        };
        let watch = await_condition(ctx.sessions(), name, settled);
        session = match tokio::time::timeout_at(deadline, watch).await {
            Ok(Ok(Some(s))) => s,
            Ok(Ok(None)) => {
                return Err(Error::Deleted {
                    name: name.to_owned(),
                    target: target.to_string(),
                });
            }
            Ok(Err(kube::runtime::wait::Error::ProbeFailed(e))) => {
                return Err(watch_error(ctx, name, e));
            }
            Err(_) => {
                let last = match ctx.sessions().get_opt(name).await {
                    Ok(Some(s)) => describe(&s),
                    Ok(None) => "the session no longer exists".to_owned(),
                    Err(_) => describe(&session),
                };
                return Err(Error::Timeout {
                    name: name.to_owned(),
                    target: target.to_string(),
                    after: timeout,
                    last,
                });
            }
        };
    }
    match progress(target, &session) {
        Progress::Met => {
            writeln!(
                out,
                "agentsession.ccplant.io/{name} condition met ({target})"
            )?;
            Ok(())
        }
        Progress::FinishedElsewhere(phase) => Err(Error::FinishedElsewhere {
            name: name.to_owned(),
            phase: phase.to_string(),
            target: target.to_string(),
            message: session.status.and_then(|s| s.message),
        }),
        // The watch only returns a settled session.
        Progress::Waiting => Err(Error::Refused(format!(
            "agentsession \"{name}\" is not {target} yet: {}",
            describe(&session)
        ))),
    }
}

/// A failed watch, classified like the error of any other request about the session.
fn watch_error(ctx: &Ctx, name: &str, err: watcher::Error) -> Error {
    let subject = ctx.subject(Some(name));
    match err {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => subject.error(e),
        watcher::Error::WatchError(status) => subject.error(kube::Error::Api(status)),
        watcher::Error::NoResourceVersion => Error::Refused(format!(
            "watching agentsession \"{name}\": the API server sent no resourceVersion"
        )),
    }
}

#[cfg(test)]
mod tests {
    use ccplant_api::{AgentSessionSpec, AgentSessionStatus, AgentStatus};

    use super::*;

    fn session(phase: Option<AgentSessionPhase>, agent: Option<(AgentState, i32)>) -> AgentSession {
        let mut s = AgentSession::new(
            "s1",
            AgentSessionSpec {
                prompt: Some("p".into()),
                messages: vec!["a".into()],
                ..AgentSessionSpec::default()
            },
        );
        s.status = Some(AgentSessionStatus {
            phase,
            agent: agent.map(|(state, delivered)| AgentStatus {
                state: Some(state),
                delivered_messages: delivered,
                ..AgentStatus::default()
            }),
            ..AgentSessionStatus::default()
        });
        s
    }

    #[test]
    fn for_accepts_the_documented_spellings() {
        let running = Ok(WaitTarget::Phase(AgentSessionPhase::Running));
        assert_eq!("phase=Running".parse(), running);
        assert_eq!("Running".parse(), running);
        assert_eq!("running".parse(), running);
        assert_eq!("idle".parse(), Ok(WaitTarget::Idle));
        assert_eq!("Idle".parse(), Ok(WaitTarget::Idle));
        let bad: Result<WaitTarget, _> = "phase=Done".parse();
        assert_eq!(
            bad,
            Err(format!("unknown phase \"Done\": {}", WaitTarget::USAGE))
        );
        assert!("condition=Ready".parse::<WaitTarget>().is_err());
    }

    #[test]
    fn idle_needs_every_message_delivered() {
        use AgentSessionPhase::Running;
        let idle = WaitTarget::Idle;
        assert_eq!(
            progress(idle, &session(Some(Running), Some((AgentState::Idle, 1)))),
            Progress::Waiting
        );
        assert_eq!(
            progress(
                idle,
                &session(Some(Running), Some((AgentState::Working, 2)))
            ),
            Progress::Waiting
        );
        assert_eq!(
            progress(idle, &session(Some(Running), Some((AgentState::Idle, 2)))),
            Progress::Met
        );
        assert_eq!(progress(idle, &session(None, None)), Progress::Waiting);
    }

    #[test]
    fn a_finished_session_ends_the_wait() {
        use AgentSessionPhase::{Failed, Running, Succeeded, Suspended};
        let running = WaitTarget::Phase(Running);
        assert_eq!(
            progress(running, &session(Some(Failed), None)),
            Progress::FinishedElsewhere(Failed)
        );
        assert_eq!(
            progress(running, &session(Some(Suspended), None)),
            Progress::Waiting
        );
        assert_eq!(
            progress(WaitTarget::Phase(Failed), &session(Some(Failed), None)),
            Progress::Met
        );
        // A WhenIdle session that Succeeded while idle with everything delivered was idle.
        assert_eq!(
            progress(
                WaitTarget::Idle,
                &session(Some(Succeeded), Some((AgentState::Idle, 2)))
            ),
            Progress::Met
        );
        assert_eq!(
            progress(
                WaitTarget::Idle,
                &session(Some(Succeeded), Some((AgentState::Idle, 1)))
            ),
            Progress::FinishedElsewhere(Succeeded)
        );
    }
}
