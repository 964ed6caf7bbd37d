//! `kubectl ccplant get`: a table of sessions, or the objects as JSON/YAML.

use std::time::Duration;

use ccplant_api::{AgentSession, AgentSessionPhase};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use serde_json::json;

use crate::args::GetArgs;
use crate::cluster::Ctx;
use crate::error::Error;
use crate::format::{human_duration, remaining, table};

const HEADER: [&str; 7] = [
    "NAME",
    "PHASE",
    "AGENT",
    "DELIVERED",
    "ENDPOINT",
    "EXPIRES",
    "AGE",
];
const NONE: &str = "<none>";

pub async fn run(ctx: &Ctx, args: GetArgs, out: &mut dyn std::io::Write) -> Result<(), Error> {
    let sessions = match &args.name {
        Some(name) => vec![ctx.get_session(name).await?],
        None => {
            let mut list = ctx
                .sessions()
                .list(&ListParams::default())
                .await
                .map_err(|e| ctx.subject(None).error(e))?
                .items;
            list.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
            list
        }
    };
    let document = || match (&args.name, sessions.as_slice()) {
        (Some(_), [one]) => serde_json::to_value(one),
        _ => Ok(json!({ "apiVersion": "v1", "kind": "List", "items": sessions })),
    };
    let encoding = |e: &dyn std::fmt::Display| Error::Refused(format!("encoding the output: {e}"));
    match args.output.as_deref() {
        Some("json") => {
            let doc = document().map_err(|e| encoding(&e))?;
            let text = serde_json::to_string_pretty(&doc).map_err(|e| encoding(&e))?;
            writeln!(out, "{text}")?;
        }
        Some("yaml") => {
            let doc = document().map_err(|e| encoding(&e))?;
            let text = serde_yaml::to_string(&doc).map_err(|e| encoding(&e))?;
            write!(out, "{text}")?;
        }
        _ if sessions.is_empty() => {
            eprintln!("No resources found in {} namespace.", ctx.namespace);
        }
        _ => {
            let now = Timestamp::now();
            let rows: Vec<Vec<String>> = sessions.iter().map(|s| row(s, now)).collect();
            write!(out, "{}", table(&HEADER, &rows))?;
        }
    }
    Ok(())
}

/// One table row: NAME, PHASE, AGENT, DELIVERED, ENDPOINT, EXPIRES, AGE.
pub fn row(session: &AgentSession, now: Timestamp) -> Vec<String> {
    let status = session.status.as_ref();
    let agent = status.and_then(|s| s.agent.as_ref());
    let delivered = agent.map_or(0, |a| a.delivered_messages);
    vec![
        session.metadata.name.clone().unwrap_or_default(),
        session
            .phase()
            .map_or(NONE.to_owned(), |p| p.as_str().to_owned()),
        agent
            .and_then(|a| a.state)
            .map_or(NONE.to_owned(), |s| s.as_str().to_owned()),
        format!("{delivered}/{}", session.spec.total_messages()),
        status
            .and_then(|s| s.endpoint.clone())
            .unwrap_or_else(|| NONE.to_owned()),
        // A finished session does not expire any more (Expired ones show when they did).
        status
            .and_then(|s| s.expires_at.as_ref())
            .filter(|_| {
                session
                    .phase()
                    .is_none_or(|p| !p.is_finished() || p == AgentSessionPhase::Expired)
            })
            .map_or(NONE.to_owned(), |t| expires(t, now)),
        session
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(NONE.to_owned(), |t| human_duration(between(t.0, now))),
    ]
}

/// Time left (`23h59m`), or how long ago the session expired (`5m ago`).
fn expires(at: &Time, now: Timestamp) -> String {
    if at.0 > now {
        remaining(between(now, at.0))
    } else {
        format!("{} ago", human_duration(between(at.0, now)))
    }
}

/// `later - earlier`, zero when negative (clock skew between us and the apiserver).
fn between(earlier: Timestamp, later: Timestamp) -> Duration {
    let secs = later.as_second().saturating_sub(earlier.as_second());
    Duration::from_secs(u64::try_from(secs).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use ccplant_api::{
        AgentSessionPhase, AgentSessionSpec, AgentSessionStatus, AgentState, AgentStatus,
    };

    use super::*;

    fn at(secs: i64) -> Result<Timestamp, k8s_openapi::jiff::Error> {
        Timestamp::from_second(1_700_000_000 + secs)
    }

    #[test]
    fn a_new_session_shows_placeholders() -> Result<(), k8s_openapi::jiff::Error> {
        let mut s = AgentSession::new("s1", AgentSessionSpec::default());
        s.metadata.creation_timestamp = Some(Time(at(0)?));
        assert_eq!(
            row(&s, at(30)?),
            ["s1", NONE, NONE, "0/0", NONE, NONE, "30s"]
        );
        Ok(())
    }

    #[test]
    fn a_running_session_shows_its_status() -> Result<(), k8s_openapi::jiff::Error> {
        let mut s = AgentSession::new(
            "s1",
            AgentSessionSpec {
                prompt: Some("p".into()),
                messages: vec!["a".into(), "b".into()],
                ..AgentSessionSpec::default()
            },
        );
        s.metadata.creation_timestamp = Some(Time(at(0)?));
        s.status = Some(AgentSessionStatus {
            phase: Some(AgentSessionPhase::Running),
            endpoint: Some("http://s1.ns.svc:3284".into()),
            expires_at: Some(Time(at(24 * 3600)?)),
            agent: Some(AgentStatus {
                state: Some(AgentState::Working),
                delivered_messages: 2,
                ..AgentStatus::default()
            }),
            ..AgentSessionStatus::default()
        });
        assert_eq!(
            row(&s, at(60)?),
            [
                "s1",
                "Running",
                "Working",
                "2/3",
                "http://s1.ns.svc:3284",
                "23h59m",
                "60s"
            ]
        );
        assert_eq!(row(&s, at(24 * 3600 + 300)?)[5], "5m ago");
        // Finished: no expiry any more, except for an Expired session (when it expired).
        for (phase, expires) in [
            (AgentSessionPhase::Succeeded, "<none>"),
            (AgentSessionPhase::Failed, "<none>"),
            (AgentSessionPhase::Expired, "5m ago"),
            (AgentSessionPhase::Suspended, "5m ago"),
        ] {
            if let Some(st) = s.status.as_mut() {
                st.phase = Some(phase);
            }
            assert_eq!(row(&s, at(24 * 3600 + 300)?)[5], expires, "{phase}");
        }
        Ok(())
    }
}
