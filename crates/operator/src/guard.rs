//! A malformed object never stalls a watch.
//!
//! The apiserver checks objects against the CRD it has, which can be newer than this operator
//! (an enum value added during an upgrade, before the operator is upgraded). Deserialized
//! straight into the operator's types, one such object makes the whole list fail, the watch
//! retries forever and every other object stops being reconciled. The controllers watch
//! [`Guarded`] objects instead: an object that does not fit the types is kept as
//! [`Invalid`] — its metadata, the status it holds (when that still reads) and the error — and
//! the controller reports it on that object (`InvalidSpec`, an Event) while every other object
//! goes on (the idea of kube's `DeserializeGuard`, which keeps no status).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::object::HasStatus;
use serde::Deserialize;
use serde::de::{DeserializeOwned, Deserializer, Error as _};
use std::borrow::Cow;

/// An object as the watch read it: `Valid`, or what could be kept of an object the operator's
/// types cannot read.
#[derive(Clone, Debug)]
pub enum Guarded<K: HasStatus> {
    Valid(K),
    /// Boxed: rare, and a large status would otherwise size every cached object.
    Invalid(Box<Invalid<K::Status>>),
}

/// What is kept of an object that does not fit the operator's types.
#[derive(Clone, Debug)]
pub struct Invalid<S> {
    pub metadata: ObjectMeta,
    /// The object's status, when it still reads (it was written by this operator).
    pub status: Option<S>,
    /// Why the object does not read, as serde says it.
    pub error: String,
}

impl<K: HasStatus> Guarded<K> {
    /// The object, when it reads.
    pub fn valid(&self) -> Option<&K> {
        match self {
            Guarded::Valid(k) => Some(k),
            Guarded::Invalid(_) => None,
        }
    }

    /// The object's status, whether or not the rest reads.
    pub fn status(&self) -> Option<&K::Status> {
        match self {
            Guarded::Valid(k) => k.status(),
            Guarded::Invalid(i) => i.status.as_ref(),
        }
    }
}

/// The status of an unreadable object, read leniently: `None` when it does not read either.
fn lenient_status<'de, D, S>(deserializer: D) -> Result<Option<S>, D::Error>
where
    D: Deserializer<'de>,
    S: DeserializeOwned,
{
    let value = serde_json::Value::deserialize(deserializer)?;
    Ok(S::deserialize(&value).ok())
}

impl<'de, K> Deserialize<'de> for Guarded<K>
where
    K: DeserializeOwned + HasStatus,
    K::Status: DeserializeOwned,
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(bound = "S: DeserializeOwned")]
        struct Parts<S> {
            #[serde(default)]
            metadata: ObjectMeta,
            #[serde(default, deserialize_with = "lenient_status")]
            status: Option<S>,
        }
        // Read once into a tree, then into the type: nothing is copied, and a failure still
        // has the tree to take the metadata from.
        let value = serde_json::Value::deserialize(deserializer)?;
        match K::deserialize(&value) {
            Ok(object) => Ok(Guarded::Valid(object)),
            Err(error) => {
                let parts = Parts::<K::Status>::deserialize(&value).map_err(D::Error::custom)?;
                Ok(Guarded::Invalid(Box::new(Invalid {
                    metadata: parts.metadata,
                    status: parts.status,
                    error: error.to_string(),
                })))
            }
        }
    }
}

impl<K> kube::Resource for Guarded<K>
where
    K: kube::Resource + HasStatus,
{
    type DynamicType = K::DynamicType;
    type Scope = K::Scope;

    fn kind(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::kind(dt)
    }
    fn group(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::group(dt)
    }
    fn version(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::version(dt)
    }
    fn plural(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        match self {
            Guarded::Valid(k) => k.meta(),
            Guarded::Invalid(i) => &i.metadata,
        }
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Guarded::Valid(k) => k.meta_mut(),
            Guarded::Invalid(i) => &mut i.metadata,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ccplant_api::{AgentSession, AgentSessionPhase};
    use kube::ResourceExt;
    use serde_json::json;

    fn session(agent_type: &str) -> serde_json::Value {
        json!({
            "apiVersion": "ccplant.io/v1alpha1", "kind": "AgentSession",
            "metadata": {"name": "s", "namespace": "team", "uid": "u1", "generation": 3},
            "spec": {"agent": {"type": agent_type}},
            "status": {"phase": "Running", "observedGeneration": 2},
        })
    }

    #[test]
    fn a_readable_object_is_valid() {
        let g: Guarded<AgentSession> = serde_json::from_value(session("codex")).unwrap();
        let s = g.valid().expect("valid");
        assert_eq!(s.name_any(), "s");
        assert_eq!(
            g.status().and_then(|s| s.phase),
            Some(AgentSessionPhase::Running)
        );
    }

    #[test]
    fn an_unreadable_object_keeps_its_metadata_status_and_error() {
        let g: Guarded<AgentSession> = serde_json::from_value(session("future-agent")).unwrap();
        let Guarded::Invalid(invalid) = &g else {
            panic!("expected Invalid: {g:?}");
        };
        assert_eq!(g.name_any(), "s");
        assert_eq!(g.uid().as_deref(), Some("u1"));
        assert_eq!(invalid.metadata.generation, Some(3));
        assert!(
            invalid.error.contains("unknown variant `future-agent`"),
            "{}",
            invalid.error
        );
        assert_eq!(
            g.status().and_then(|s| s.phase),
            Some(AgentSessionPhase::Running)
        );
    }

    #[test]
    fn a_list_with_one_unreadable_item_reads_the_others() {
        let list: Vec<Guarded<AgentSession>> = serde_json::from_value(json!([
            session("claude"),
            session("nope"),
            session("aider")
        ]))
        .unwrap();
        let valid: Vec<bool> = list.iter().map(|g| g.valid().is_some()).collect();
        assert_eq!(valid, [true, false, true]);
    }

    #[test]
    fn an_unreadable_status_is_dropped_not_fatal() {
        let mut v = session("nope");
        v["status"] = json!({"phase": "Sideways"});
        let g: Guarded<AgentSession> = serde_json::from_value(v).unwrap();
        assert!(g.valid().is_none());
        assert!(g.status().is_none());
    }
}
