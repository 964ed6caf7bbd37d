//! Kubernetes Events (`events.k8s.io/v1`), one create per announcement.
//!
//! kube's `Recorder` keeps every event it published for six minutes (to count repeats as a
//! series) and scans that whole cache under one lock on each publish: a burst of 10 000 sessions
//! (two events each) held 20 000 events in memory and made every publish walk them. The
//! controllers here announce only changes of phase or reason, so an event repeats only when the
//! state really went back and forth, and each announcement is worth its own Event: no cache.
//!
//! Every Event the operator publishes is built here, and its note passes the token redactor
//! (DESIGN §7.3): notes carry agent and GitHub error text.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, PostParams};
use std::sync::atomic::{AtomicU64, Ordering};

/// `reportingController` of every Event the operator publishes (what `kubectl events` shows as
/// FROM): a qualified name, as Kubernetes' own controllers use (`kubernetes.io/kubelet`).
pub const REPORTING_CONTROLLER: &str = "ccplant.io/operator";

/// Kubernetes caps `note` at 1 KiB.
const MAX_NOTE_BYTES: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

/// What happened to an object: `reason` (CamelCase) and `action` are machine-readable, `note`
/// is for people.
#[derive(Clone, Debug)]
pub struct Event {
    pub type_: EventType,
    pub reason: String,
    pub note: Option<String>,
    pub action: String,
}

pub struct Recorder {
    client: Client,
    controller: String,
    instance: String,
    /// Makes names unique when two events for one object share a nanosecond.
    sequence: AtomicU64,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("controller", &self.controller)
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

impl Recorder {
    /// `controller` is the reporting controller ([`REPORTING_CONTROLLER`]), `instance` this
    /// replica.
    pub fn new(client: Client, controller: &str, instance: &str) -> Self {
        Recorder {
            client,
            controller: controller.to_owned(),
            instance: instance.to_owned(),
            sequence: AtomicU64::new(0),
        }
    }

    /// Creates the Event in the namespace of `regarding`.
    pub async fn publish(
        &self,
        event: &Event,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let namespace = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let k8s = self.build(event, regarding, k8s_openapi::jiff::Timestamp::now());
        Api::<K8sEvent>::namespaced(self.client.clone(), &namespace)
            .create(&PostParams::default(), &k8s)
            .await
            .map(|_| ())
    }

    fn build(
        &self,
        event: &Event,
        regarding: &ObjectReference,
        now: k8s_openapi::jiff::Timestamp,
    ) -> K8sEvent {
        let sequence = self.sequence.fetch_add(1, Ordering::Relaxed);
        let object = regarding.name.as_deref().unwrap_or("object");
        K8sEvent {
            metadata: ObjectMeta {
                name: Some(format!("{object}.{:x}{sequence:x}", now.as_nanosecond())),
                namespace: regarding.namespace.clone(),
                ..Default::default()
            },
            event_time: Some(MicroTime(now)),
            action: Some(event.action.clone()),
            reason: Some(event.reason.clone()),
            // Redacted before the cut, so a token at the 1 KiB boundary leaves no tail.
            note: event
                .note
                .as_deref()
                .map(|note| truncate_note(&crate::redact::tokens(note))),
            regarding: Some(regarding.clone()),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            type_: Some(
                match event.type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .to_owned(),
            ),
            ..Default::default()
        }
    }
}

/// The note's first 1 KiB, cut at a character boundary.
fn truncate_note(note: &str) -> String {
    if note.len() <= MAX_NOTE_BYTES {
        return note.to_owned();
    }
    let mut end = MAX_NOTE_BYTES;
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    note[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorder() -> Recorder {
        let config = kube::Config::new("http://127.0.0.1:1".parse().unwrap());
        Recorder::new(
            Client::try_from(config).unwrap(),
            REPORTING_CONTROLLER,
            "replica-a",
        )
    }

    #[tokio::test]
    async fn events_name_their_object_and_reporter_and_never_share_a_name() {
        let r = recorder();
        let regarding = ObjectReference {
            api_version: Some("ccplant.io/v1alpha1".into()),
            kind: Some("AgentSession".into()),
            name: Some("fix-login".into()),
            namespace: Some("team".into()),
            uid: Some("u1".into()),
            ..Default::default()
        };
        let event = Event {
            type_: EventType::Warning,
            reason: "SecretNotFound".into(),
            note: Some("é".repeat(600)),
            action: "Pending".into(),
        };
        let now = k8s_openapi::jiff::Timestamp::now();
        let a = r.build(&event, &regarding, now);
        let b = r.build(&event, &regarding, now);
        assert_ne!(a.metadata.name, b.metadata.name);
        assert!(
            a.metadata
                .name
                .as_deref()
                .unwrap()
                .starts_with("fix-login.")
        );
        assert_eq!(a.metadata.namespace.as_deref(), Some("team"));
        assert_eq!(a.type_.as_deref(), Some("Warning"));
        assert_eq!(a.reason.as_deref(), Some("SecretNotFound"));
        assert_eq!(a.action.as_deref(), Some("Pending"));
        assert_eq!(
            a.reporting_controller.as_deref(),
            Some("ccplant.io/operator")
        );
        assert_eq!(a.reporting_instance.as_deref(), Some("replica-a"));
        assert_eq!(a.regarding.as_ref(), Some(&regarding));
        let note = a.note.unwrap();
        assert!(note.len() <= 1024 && note.len() >= 1022, "{}", note.len());
        assert!(note.chars().all(|c| c == 'é'));
    }

    #[tokio::test]
    async fn notes_are_redacted_before_they_are_cut() {
        let r = recorder();
        let regarding = ObjectReference {
            name: Some("t".into()),
            namespace: Some("team".into()),
            ..Default::default()
        };
        let token = "ghp_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789";
        // The token straddles the 1 KiB cut: cut first, its first 30 characters would stay.
        let note = format!("{}{token} end", "x".repeat(MAX_NOTE_BYTES - 30));
        let event = Event {
            type_: EventType::Warning,
            reason: "GitHubError".into(),
            note: Some(note),
            action: "Failed".into(),
        };
        let built = r.build(&event, &regarding, k8s_openapi::jiff::Timestamp::now());
        let note = built.note.unwrap();
        assert_eq!(
            note,
            format!("{}ghp_[REDACTED] end", "x".repeat(MAX_NOTE_BYTES - 30))
        );
        assert!(!note.contains(&token[4..14]));
        let plain = Event {
            note: Some("the agent is busy".into()),
            ..event
        };
        let built = r.build(&plain, &regarding, k8s_openapi::jiff::Timestamp::now());
        assert_eq!(built.note.as_deref(), Some("the agent is busy"));
    }
}
