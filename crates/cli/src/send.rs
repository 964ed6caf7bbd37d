//! `kubectl ccplant send`: append a message to spec.messages without losing a concurrent one.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use ccplant_api::AgentSession;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use crate::args::SendArgs;
use crate::cluster::Ctx;
use crate::error::Error;

/// Attempts before giving up when other writers keep changing the session between our read and
/// our patch. Every lost attempt means another write succeeded, so this is only reached under a
/// sustained storm of writes.
const MAX_ATTEMPTS: u32 = 100;

pub async fn run(ctx: &Ctx, args: SendArgs, out: &mut dyn std::io::Write) -> Result<(), Error> {
    let api = ctx.sessions();
    let params = PatchParams {
        field_manager: Some(crate::FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    // The version a patch was refused on: if a re-read finds it unchanged, the refusal was not
    // a lost race, and retrying would only repeat it.
    let mut refused_on: Option<(String, String)> = None;
    for attempt in 1..=MAX_ATTEMPTS {
        let session = ctx.get_session(&args.name).await?;
        if let Some((version, message)) = refused_on.take()
            && session.metadata.resource_version.as_ref() == Some(&version)
        {
            return Err(Error::Refused(message));
        }
        let (ops, number) = append_patch(&session, &args.message)?;
        let patch = Patch::Json::<()>(
            serde_json::from_value(ops)
                .map_err(|e| Error::Refused(format!("building the JSON patch: {e}")))?,
        );
        match api.patch(&args.name, &params, &patch).await {
            Ok(_) => {
                if let Some(phase) = session.phase().filter(|p| p.is_finished()) {
                    eprintln!(
                        "warning: agentsession \"{}\" is {phase}: the operator delivers no more messages to a finished session",
                        args.name
                    );
                }
                writeln!(out, "message {number} queued for {}", args.name)?;
                return Ok(());
            }
            Err(kube::Error::Api(status)) if lost_race(&status) => {
                refused_on = session
                    .metadata
                    .resource_version
                    .clone()
                    .map(|v| (v, status.message.clone()));
                tokio::time::sleep(backoff(attempt)).await;
            }
            Err(e) => return Err(ctx.subject(Some(&args.name)).error(e)),
        }
    }
    Err(Error::TooManyConflicts {
        name: args.name,
        attempts: MAX_ATTEMPTS,
    })
}

/// A JSON patch appending `message` that applies only to exactly the version read (so a
/// concurrent append is never overwritten nor reordered), and the number the message gets: the
/// prompt counts as message 1, as in `status.agent.deliveredMessages`.
pub fn append_patch(
    session: &AgentSession,
    message: &str,
) -> Result<(serde_json::Value, usize), Error> {
    let resource_version = session.metadata.resource_version.clone().ok_or_else(|| {
        Error::Refused("the API server returned the session without a resourceVersion".into())
    })?;
    // An absent (or empty) list is created whole; `add` of an existing member replaces it,
    // which is safe because the test pins the version in which it was empty.
    let add = if session.spec.messages.is_empty() {
        json!({ "op": "add", "path": "/spec/messages", "value": [message] })
    } else {
        json!({ "op": "add", "path": "/spec/messages/-", "value": message })
    };
    let ops = json!([
        { "op": "test", "path": "/metadata/resourceVersion", "value": resource_version },
        add,
    ]);
    Ok((ops, session.spec.total_messages() + 1))
}

/// The session may have changed between our read and our patch: a 409 Conflict, or the
/// apiserver re-applying our patch to the newer object and the `test` failing there. The latter
/// comes back as a 422 with only a generic message (the JSON patch library's "test failed" is
/// dropped), unlike validation errors, which name the object and the field.
fn lost_race(status: &kube::core::Status) -> bool {
    status.is_conflict()
        || (status.code == 422
            && status.message == PATCH_NOT_APPLICABLE
            && status.details.as_ref().is_none_or(|d| d.causes.is_empty()))
}

/// The apiserver's message for a JSON patch that does not apply to the stored object.
const PATCH_NOT_APPLICABLE: &str = "the server rejected our request due to an error in our request";

/// A short randomized pause, growing with the attempts, so racing senders spread out.
fn backoff(attempt: u32) -> Duration {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(attempt);
    let ceiling_ms = 10 * u64::from(attempt.min(20));
    Duration::from_millis(h.finish() % ceiling_ms.max(1))
}

#[cfg(test)]
mod tests {
    use ccplant_api::AgentSessionSpec;

    use super::*;

    fn session(prompt: Option<&str>, messages: &[&str]) -> AgentSession {
        let mut s = AgentSession::new(
            "s1",
            AgentSessionSpec {
                prompt: prompt.map(str::to_owned),
                messages: messages.iter().map(|m| (*m).to_owned()).collect(),
                ..AgentSessionSpec::default()
            },
        );
        s.metadata.resource_version = Some("42".into());
        s
    }

    #[test]
    fn the_first_message_creates_the_list() -> Result<(), Error> {
        let (ops, number) = append_patch(&session(Some("p"), &[]), "hi")?;
        assert_eq!(
            ops,
            json!([
                { "op": "test", "path": "/metadata/resourceVersion", "value": "42" },
                { "op": "add", "path": "/spec/messages", "value": ["hi"] },
            ])
        );
        assert_eq!(number, 2, "the prompt is message 1");
        Ok(())
    }

    #[test]
    fn later_messages_are_appended() -> Result<(), Error> {
        let (ops, number) = append_patch(&session(None, &["a", "b"]), "c")?;
        assert_eq!(
            ops,
            json!([
                { "op": "test", "path": "/metadata/resourceVersion", "value": "42" },
                { "op": "add", "path": "/spec/messages/-", "value": "c" },
            ])
        );
        assert_eq!(number, 3);
        Ok(())
    }

    #[test]
    fn a_failed_test_op_is_a_lost_race() -> Result<(), serde_json::Error> {
        // What the apiserver answers when the resourceVersion moved on.
        let status: kube::core::Status = serde_json::from_value(json!({
            "status": "Failure",
            "message": "the server rejected our request due to an error in our request",
            "reason": "Invalid",
            "code": 422,
            "details": {},
        }))?;
        assert!(lost_race(&status));
        let invalid: kube::core::Status = serde_json::from_value(json!({
            "status": "Failure",
            "message": "AgentSession.ccplant.io \"s1\" is invalid: spec.messages[0]: Invalid value",
            "reason": "Invalid",
            "code": 422,
            "details": { "causes": [{ "reason": "FieldValueInvalid", "field": "spec.messages[0]" }] },
        }))?;
        assert!(!lost_race(&invalid));
        Ok(())
    }

    #[test]
    fn backoff_stays_short() {
        for attempt in 1..=MAX_ATTEMPTS {
            assert!(backoff(attempt) < Duration::from_millis(200));
        }
    }
}
