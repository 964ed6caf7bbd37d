//! Reports an object the operator cannot read ([`crate::guard::Invalid`]) on that object:
//! `Ready=False` and `Stalled=True` with reason `InvalidSpec` and the reason it does not read,
//! a Warning Event once, and nothing else — the rest of the status (phase, results, pod) stays
//! as it was, since the operator cannot tell what the object asks for. It waits for a change
//! (of the object, or of the operator: an upgrade reconciles every object again).

use crate::context::Context;
use crate::events::{Event, EventType};
use crate::guard::{Guarded, Invalid};
use crate::time::to_k8s;
use ccplant_api::conditions::{
    ConditionStatus, Progress, find_condition, new_condition, reasons, set_condition, set_progress,
    types,
};
use ccplant_api::{AgentSessionStatus, GitHubTaskStatus};
use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::core::object::HasStatus;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;

/// The status fields an unreadable object's report touches.
pub trait ReportableStatus: Clone + Default + PartialEq + Serialize {
    fn conditions(&self) -> &[Condition];
    fn conditions_mut(&mut self) -> &mut Vec<Condition>;
    fn set_observed_generation(&mut self, generation: Option<i64>);
    fn set_message(&mut self, message: String);
}

/// Both kinds' statuses have the same three fields.
macro_rules! reportable {
    ($status:ty) => {
        impl ReportableStatus for $status {
            fn conditions(&self) -> &[Condition] {
                &self.conditions
            }
            fn conditions_mut(&mut self) -> &mut Vec<Condition> {
                &mut self.conditions
            }
            fn set_observed_generation(&mut self, generation: Option<i64>) {
                self.observed_generation = generation;
            }
            fn set_message(&mut self, message: String) {
                self.message = Some(message);
            }
        }
    };
}

reportable!(AgentSessionStatus);
reportable!(GitHubTaskStatus);

/// What the user reads: why the object does not read, and the likely cause.
pub fn message(kind: &str, error: &str) -> String {
    format!(
        "the operator cannot read this {kind}: {error}; its CustomResourceDefinition is probably newer than the operator: upgrade the operator, or change the object"
    )
}

/// The status reporting `invalid` (pure): the stored status, if it reads, with the report.
pub fn report<S: ReportableStatus>(kind: &str, invalid: &Invalid<S>, now: DateTime<Utc>) -> S {
    let mut status = invalid.status.clone().unwrap_or_default();
    let generation = invalid.metadata.generation;
    let text = message(kind, &invalid.error);
    let conditions = status.conditions_mut();
    set_condition(
        conditions,
        new_condition(
            types::READY,
            ConditionStatus::False,
            reasons::INVALID_SPEC,
            text.clone(),
            generation,
            to_k8s(now),
        ),
    );
    set_progress(
        conditions,
        Progress::Stalled,
        reasons::INVALID_SPEC,
        &text,
        generation,
        to_k8s(now),
    );
    status.set_observed_generation(generation);
    status.set_message(text);
    status
}

/// Writes the report of an unreadable object (when it differs) and announces it once.
pub async fn reconcile<K>(
    ctx: &Context,
    object: &Guarded<K>,
    invalid: &Invalid<K::Status>,
) -> Result<(), kube::Error>
where
    K: HasStatus + Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    K::Status: ReportableStatus + DeserializeOwned + Debug,
    Guarded<K>: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Debug
        + DeserializeOwned,
{
    let kind = K::kind(&());
    let stored = invalid.status.clone().unwrap_or_default();
    let next = report(&kind, invalid, Utc::now());
    let ready = |s: &K::Status| {
        find_condition(s.conditions(), types::READY).map(|c| (c.reason.clone(), c.message.clone()))
    };
    let announced = ready(&stored) == ready(&next);
    tracing::warn!(error = %invalid.error, "cannot read the object");
    crate::apply::write_status(ctx, object, &stored, &next).await?;
    if !announced {
        let event = Event {
            type_: EventType::Warning,
            reason: reasons::INVALID_SPEC.to_string(),
            note: Some(message(&kind, &invalid.error)),
            action: "Read".to_string(),
        };
        if let Err(e) = ctx.recorder.publish(&event, &object.object_ref(&())).await {
            tracing::warn!(error = %e, name = %object.name_any(), "publishing event failed");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    #[test]
    fn the_report_keeps_the_stored_status_and_says_why() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let invalid = Invalid {
            metadata: ObjectMeta {
                generation: Some(4),
                ..Default::default()
            },
            status: Some(AgentSessionStatus {
                phase: Some(ccplant_api::AgentSessionPhase::Running),
                pod_name: Some("s".into()),
                ..Default::default()
            }),
            error: "unknown variant `future`".into(),
        };
        let s = report("AgentSession", &invalid, now);
        assert_eq!(s.phase, Some(ccplant_api::AgentSessionPhase::Running));
        assert_eq!(s.pod_name.as_deref(), Some("s"));
        assert_eq!(s.observed_generation, Some(4));
        let text = "the operator cannot read this AgentSession: unknown variant `future`; its CustomResourceDefinition is probably newer than the operator: upgrade the operator, or change the object";
        assert_eq!(s.message.as_deref(), Some(text));
        let summary: Vec<(&str, &str, &str)> = s
            .conditions
            .iter()
            .map(|c| (c.type_.as_str(), c.status.as_str(), c.reason.as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                ("Ready", "False", "InvalidSpec"),
                ("Stalled", "True", "InvalidSpec")
            ]
        );
        // Asserting it again changes nothing: no write in steady state.
        let again = report(
            "AgentSession",
            &Invalid {
                status: Some(s.clone()),
                ..invalid
            },
            now + chrono::Duration::seconds(5),
        );
        assert_eq!(again, s);
    }
}
