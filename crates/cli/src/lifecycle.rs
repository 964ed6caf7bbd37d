//! `kubectl ccplant suspend` and `resume`.

use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use crate::args::NameArg;
use crate::cluster::Ctx;
use crate::error::Error;

pub async fn suspend(ctx: &Ctx, args: NameArg, out: &mut dyn std::io::Write) -> Result<(), Error> {
    merge_patch(ctx, &args.name, json!({ "spec": { "suspend": true } })).await?;
    writeln!(out, "agentsession.ccplant.io/{} suspended", args.name)?;
    Ok(())
}

pub async fn resume(ctx: &Ctx, args: NameArg, out: &mut dyn std::io::Write) -> Result<(), Error> {
    merge_patch(ctx, &args.name, resume_patch(Timestamp::now())).await?;
    writeln!(out, "agentsession.ccplant.io/{} resumed", args.name)?;
    Ok(())
}

/// spec.suspend=false, and the resume annotation for a session the operator suspended itself
/// (after lifetime.idleTimeout), whose spec.suspend is already false.
pub fn resume_patch(now: Timestamp) -> serde_json::Value {
    json!({
        "metadata": { "annotations": { crate::RESUME_ANNOTATION: rfc3339(now) } },
        "spec": { "suspend": false },
    })
}

/// RFC 3339 in UTC to the second, as Kubernetes writes timestamps.
fn rfc3339(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

async fn merge_patch(ctx: &Ctx, name: &str, patch: serde_json::Value) -> Result<(), Error> {
    let params = PatchParams {
        field_manager: Some(crate::FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    ctx.sessions()
        .patch(name, &params, &Patch::Merge(patch))
        .await
        .map_err(|e| ctx.subject(Some(name)).error(e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_clears_suspend_and_stamps_the_annotation() -> Result<(), k8s_openapi::jiff::Error> {
        let now = Timestamp::from_second(1_700_000_000)?;
        assert_eq!(
            resume_patch(now),
            json!({
                "metadata": { "annotations": { "ccplant.io/resume-requested-at": "2023-11-14T22:13:20Z" } },
                "spec": { "suspend": false },
            })
        );
        Ok(())
    }
}
