//! `kubectl ccplant new`: create an AgentSession.

use ccplant_api::{
    AgentSession, AgentSessionSpec, AgentType, CompletionMode, DurationString, RepositorySpec,
    parse_duration,
};
use kube::api::PostParams;

use crate::args::NewArgs;
use crate::cluster::Ctx;
use crate::error::Error;

pub async fn run(ctx: &Ctx, args: NewArgs, out: &mut dyn std::io::Write) -> Result<(), Error> {
    let session = desired_session(&args)?;
    let params = PostParams {
        field_manager: Some(crate::FIELD_MANAGER.to_owned()),
        ..PostParams::default()
    };
    ctx.sessions()
        .create(&params, &session)
        .await
        .map_err(|e| ctx.subject(Some(&args.name)).error(e))?;
    writeln!(out, "agentsession.ccplant.io/{} created", args.name)?;
    Ok(())
}

/// The AgentSession the flags describe; everything not given is left to the schema defaults.
pub fn desired_session(args: &NewArgs) -> Result<AgentSession, Error> {
    let mut spec = AgentSessionSpec::default();
    spec.agent.type_ =
        serde_json::from_value::<AgentType>(serde_json::Value::from(args.agent.as_str()))
            .map_err(|_| Error::Usage(format!("unknown agent type {:?}", args.agent)))?;
    spec.agent.image = args.image.clone();
    spec.prompt = args.prompt.clone();
    spec.repository = args.repo.as_ref().map(|name| RepositorySpec {
        name: name.clone(),
        git_ref: None,
        work_branch: None,
        depth: None,
    });
    if args.when_idle {
        spec.completion.mode = CompletionMode::WhenIdle;
    }
    if let Some(idle_for) = &args.idle_for {
        parse_duration(idle_for).map_err(|e| Error::Usage(format!("--idle-for: {e}")))?;
        spec.completion.idle_for = DurationString::from(idle_for.as_str());
    }
    Ok(AgentSession::new(&args.name, spec))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> NewArgs {
        NewArgs {
            name: "s1".into(),
            image: Some("example.com/agent:1".into()),
            repo: Some("acme/app".into()),
            prompt: Some("fix it".into()),
            when_idle: true,
            idle_for: Some("90s".into()),
            agent: "codex".into(),
        }
    }

    #[test]
    fn the_flags_become_the_spec() -> Result<(), Error> {
        let s = desired_session(&args())?;
        assert_eq!(s.metadata.name.as_deref(), Some("s1"));
        assert_eq!(s.spec.agent.type_, AgentType::Codex);
        assert_eq!(s.spec.agent.image.as_deref(), Some("example.com/agent:1"));
        assert_eq!(s.spec.prompt.as_deref(), Some("fix it"));
        assert_eq!(
            s.spec.repository.map(|r| r.name).as_deref(),
            Some("acme/app")
        );
        assert_eq!(s.spec.completion.mode, CompletionMode::WhenIdle);
        assert_eq!(s.spec.completion.idle_for.as_str(), "90s");
        Ok(())
    }

    #[test]
    fn a_malformed_idle_for_is_refused_before_any_request() {
        let bad = NewArgs {
            idle_for: Some("soon".into()),
            ..args()
        };
        match desired_session(&bad) {
            Err(Error::Usage(m)) => assert!(m.starts_with("--idle-for: "), "{m}"),
            other => panic!("expected a usage error, got {other:?}"),
        }
    }
}
