//! What the session's pod says about the session (DESIGN §3.1 step 4), as a pure function of
//! the cached Pod.
//!
//! Precedence, first match wins:
//! 1. no pod → [`PodState::Missing`];
//! 2. `deletionTimestamp` set → [`PodState::Terminating`]: its containers are being killed, so
//!    their exit codes say nothing about the agent, and a pod of the same name cannot be created
//!    until it is gone (the controller waits for the deletion event, then sees `Missing`);
//! 3. init container `clone` terminated non-zero → `Failed`, reason `CloneFailed`;
//! 4. pod `Failed` with a pod-level reason (`Evicted`, `DeadlineExceeded`, ...) → `Failed` with
//!    that reason: it explains the containers' exit codes;
//! 5. container `agent` terminated: exit code 0 → `Succeeded`, else `Failed` with the
//!    container's reason (`Error`, `OOMKilled`, `StartError`, ...);
//! 6. pod phase `Succeeded` / `Failed` → `Succeeded` / `Failed`;
//! 7. condition `Ready=True` → `Running`;
//! 8. something needs the user: a container waiting with a reason that does not resolve by
//!    itself (`ImagePullBackOff`, `CreateContainerConfigError`, ...), the pod unschedulable, or a
//!    sidecar (the editor) that terminated while the agent runs → `Pending` with a message;
//! 9. otherwise → `Starting`.

use super::build::{AGENT_CONTAINER, CLONE_CONTAINER};
use super::cached::{
    CachedContainer as ContainerStatus, CachedPod as Pod, CachedPodStatus as PodStatus,
};
use ccplant_api::conditions::reasons;

/// Waiting reasons that mean the pod will not start without a change (an image, a Secret, a
/// ConfigMap, the command); the kubelet keeps retrying, so the pod itself never fails.
const STUCK_WAITING_REASONS: [&str; 7] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

/// Termination messages can be up to 4 KiB; status keeps a readable tail.
const MAX_DETAIL_CHARS: usize = 1024;

/// The session's pod, summarized.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodState {
    /// There is no pod.
    Missing,
    /// The pod is being deleted.
    Terminating,
    /// The pod cannot make progress without the user: `message` names the container (or the
    /// scheduler) and the reason, e.g. `container agent: ImagePullBackOff: Back-off pulling
    /// image "ghcr.io/x/agent:1"`.
    Pending { message: String },
    /// The pod is being scheduled, pulling images, cloning, or waiting for the agent's
    /// readiness probe.
    Starting,
    /// The pod is Ready: the agent API answers its readiness probe.
    Running,
    /// The agent exited with code 0.
    Succeeded,
    /// The agent, the clone or the pod failed. `reason` is CamelCase (usable as a condition
    /// reason), `message` is for people.
    Failed { reason: String, message: String },
}

impl PodState {
    /// Whether the pod's containers ended (Succeeded or Failed).
    pub fn is_finished(&self) -> bool {
        matches!(self, PodState::Succeeded | PodState::Failed { .. })
    }

    /// Whether the pod may still run an agent (it holds its session's place).
    pub fn is_alive(&self) -> bool {
        matches!(
            self,
            PodState::Running | PodState::Starting | PodState::Pending { .. }
        )
    }
}

/// Summarizes the session's pod; see the module documentation for the rules.
pub fn observe_pod(pod: Option<&Pod>) -> PodState {
    let Some(pod) = pod else {
        return PodState::Missing;
    };
    if pod.metadata.deletion_timestamp.is_some() {
        return PodState::Terminating;
    }
    let default_status = PodStatus::default();
    let status = pod.status.as_ref().unwrap_or(&default_status);
    let init_statuses = status
        .init_container_statuses
        .as_deref()
        .unwrap_or_default();
    let statuses = status.container_statuses.as_deref().unwrap_or_default();
    let phase = status.phase.as_deref().unwrap_or_default();

    if let Some((code, detail)) = find(init_statuses, CLONE_CONTAINER).and_then(terminated)
        && code != 0
    {
        return PodState::Failed {
            reason: reasons::CLONE_FAILED.to_owned(),
            message: format!("clone failed: {detail}"),
        };
    }
    if phase == "Failed"
        && let Some(reason) = status.reason.as_deref().filter(|r| !r.is_empty())
    {
        return PodState::Failed {
            reason: reason.to_owned(),
            message: status
                .message
                .clone()
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| format!("the pod failed: {reason}")),
        };
    }
    if let Some(agent) = find(statuses, AGENT_CONTAINER)
        && let Some((code, detail)) = terminated(agent)
    {
        if code == 0 {
            return PodState::Succeeded;
        }
        let reason = agent
            .state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .and_then(|t| t.reason.clone())
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| "Error".to_owned());
        return PodState::Failed {
            reason,
            message: detail,
        };
    }
    match phase {
        "Succeeded" => return PodState::Succeeded,
        "Failed" => {
            return PodState::Failed {
                reason: reasons::POD_FAILED.to_owned(),
                message: status
                    .message
                    .clone()
                    .filter(|m| !m.is_empty())
                    .unwrap_or_else(|| "the pod failed".to_owned()),
            };
        }
        _ => {}
    }
    let ready = status
        .conditions
        .as_deref()
        .unwrap_or_default()
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    if ready {
        return PodState::Running;
    }
    if let Some(message) = needs_attention(status, init_statuses, statuses) {
        return PodState::Pending { message };
    }
    PodState::Starting
}

fn find<'a>(statuses: &'a [ContainerStatus], name: &str) -> Option<&'a ContainerStatus> {
    statuses.iter().find(|s| s.name == name)
}

/// Exit code and a description like `container agent exited with code 137 (OOMKilled)`, when
/// the container terminated.
fn terminated(status: &ContainerStatus) -> Option<(i32, String)> {
    let t = status.state.as_ref()?.terminated.as_ref()?;
    let mut detail = format!("container {} exited with code {}", status.name, t.exit_code);
    if let Some(signal) = t.signal.filter(|s| *s != 0) {
        detail.push_str(&format!(" (signal {signal})"));
    }
    if let Some(reason) = t.reason.as_deref().filter(|r| !r.is_empty()) {
        detail.push_str(&format!(" ({reason})"));
    }
    if let Some(message) = t
        .message
        .as_deref()
        .map(str::trim)
        .filter(|m| !m.is_empty())
    {
        detail.push_str(": ");
        detail.push_str(&tail(message, MAX_DETAIL_CHARS));
    }
    Some((t.exit_code, detail))
}

/// The last `max` characters of `text` (the end of a log says what went wrong).
fn tail(text: &str, max: usize) -> String {
    let count = text.chars().count();
    if count <= max {
        return text.to_owned();
    }
    let kept: String = text.chars().skip(count - max).collect();
    format!("…{kept}")
}

fn needs_attention(
    status: &PodStatus,
    init_statuses: &[ContainerStatus],
    statuses: &[ContainerStatus],
) -> Option<String> {
    for s in init_statuses.iter().chain(statuses) {
        let Some(waiting) = s.state.as_ref().and_then(|st| st.waiting.as_ref()) else {
            continue;
        };
        let Some(reason) = waiting.reason.as_deref() else {
            continue;
        };
        if STUCK_WAITING_REASONS.contains(&reason) {
            return Some(match waiting.message.as_deref().filter(|m| !m.is_empty()) {
                Some(message) => format!("container {}: {reason}: {message}", s.name),
                None => format!("container {}: {reason}", s.name),
            });
        }
    }
    let unschedulable = status
        .conditions
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False");
    if let Some(condition) = unschedulable {
        let message = condition.message.as_deref().unwrap_or_default();
        return Some(format!(
            "the pod cannot be scheduled ({}): {message}",
            condition.reason.as_deref().unwrap_or("Unschedulable")
        ));
    }
    // A sidecar that exited keeps the pod from being Ready (restartPolicy Never: it stays
    // down), although the agent may run.
    statuses
        .iter()
        .filter(|s| s.name != AGENT_CONTAINER)
        .find_map(terminated)
        .map(|(_, detail)| format!("{detail}; the pod cannot become Ready"))
}

#[cfg(test)]
mod tests {
    use std::error::Error;

    use serde_json::{Value, json};

    use super::*;

    fn pod(status: Value) -> Result<Pod, Box<dyn Error>> {
        Ok(serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "s", "namespace": "ns"},
            "status": status,
        }))?)
    }

    fn running(name: &str) -> Value {
        json!({"name": name, "ready": false, "restartCount": 0, "image": "i", "imageID": "",
               "state": {"running": {"startedAt": "2025-01-01T00:00:00Z"}}})
    }

    fn terminated_with(
        name: &str,
        code: i32,
        reason: Option<&str>,
        message: Option<&str>,
    ) -> Value {
        let mut t = json!({"exitCode": code, "startedAt": "2025-01-01T00:00:00Z",
                           "finishedAt": "2025-01-01T00:01:00Z"});
        if let Some(reason) = reason {
            t["reason"] = json!(reason);
        }
        if let Some(message) = message {
            t["message"] = json!(message);
        }
        json!({"name": name, "ready": false, "restartCount": 0, "image": "i", "imageID": "",
               "state": {"terminated": t}})
    }

    fn waiting(name: &str, reason: &str, message: &str) -> Value {
        json!({"name": name, "ready": false, "restartCount": 0, "image": "i", "imageID": "",
               "state": {"waiting": {"reason": reason, "message": message}}})
    }

    fn failed(reason: &str, message: &str) -> PodState {
        PodState::Failed {
            reason: reason.to_owned(),
            message: message.to_owned(),
        }
    }

    fn pending(message: &str) -> PodState {
        PodState::Pending {
            message: message.to_owned(),
        }
    }

    #[test]
    fn no_pod_is_missing() {
        assert_eq!(observe_pod(None), PodState::Missing);
    }

    #[test]
    fn pod_states_table() -> Result<(), Box<dyn Error>> {
        let ready = json!([{"type": "Ready", "status": "True"}]);
        let not_ready = json!([{"type": "PodScheduled", "status": "True"},
                               {"type": "Ready", "status": "False"}]);
        let cases: Vec<(&str, Value, PodState)> = vec![
            ("no status yet", json!({}), PodState::Starting),
            (
                "pending, scheduled",
                json!({"phase": "Pending", "conditions": not_ready}),
                PodState::Starting,
            ),
            (
                "unschedulable",
                json!({"phase": "Pending", "conditions": [{"type": "PodScheduled",
                       "status": "False", "reason": "Unschedulable",
                       "message": "0/3 nodes are available: 3 Insufficient cpu."}]}),
                pending(
                    "the pod cannot be scheduled (Unschedulable): 0/3 nodes are available: 3 Insufficient cpu.",
                ),
            ),
            (
                "cloning",
                json!({"phase": "Pending", "conditions": not_ready,
                       "initContainerStatuses": [running("clone")],
                       "containerStatuses": [waiting("agent", "PodInitializing", "")]}),
                PodState::Starting,
            ),
            (
                "clone failed, with git's last words",
                json!({"phase": "Failed", "conditions": not_ready,
                       "initContainerStatuses": [terminated_with("clone", 128, Some("Error"),
                            Some("fatal: repository 'https://github.com/o/r.git/' not found\n"))],
                       "containerStatuses": [waiting("agent", "PodInitializing", "")]}),
                failed(
                    "CloneFailed",
                    "clone failed: container clone exited with code 128 (Error): fatal: repository 'https://github.com/o/r.git/' not found",
                ),
            ),
            (
                "clone done, agent starting",
                json!({"phase": "Running", "conditions": not_ready,
                       "initContainerStatuses": [terminated_with("clone", 0, Some("Completed"), None)],
                       "containerStatuses": [running("agent")]}),
                PodState::Starting,
            ),
            (
                "ready",
                json!({"phase": "Running", "conditions": ready,
                       "containerStatuses": [running("agent"), running("editor")]}),
                PodState::Running,
            ),
            (
                "agent exited 0",
                json!({"phase": "Succeeded",
                       "containerStatuses": [terminated_with("agent", 0, Some("Completed"), None)]}),
                PodState::Succeeded,
            ),
            (
                "agent exited 0, editor still running",
                json!({"phase": "Running", "conditions": not_ready,
                       "containerStatuses": [terminated_with("agent", 0, Some("Completed"), None),
                                             running("editor")]}),
                PodState::Succeeded,
            ),
            (
                "agent OOMKilled",
                json!({"phase": "Failed",
                       "containerStatuses": [terminated_with("agent", 137, Some("OOMKilled"), None)]}),
                failed(
                    "OOMKilled",
                    "container agent exited with code 137 (OOMKilled)",
                ),
            ),
            (
                "agent error, editor still running",
                json!({"phase": "Running", "conditions": not_ready,
                       "containerStatuses": [terminated_with("agent", 1, Some("Error"), None),
                                             running("editor")]}),
                failed("Error", "container agent exited with code 1 (Error)"),
            ),
            (
                "agent exit without reason",
                json!({"phase": "Failed",
                       "containerStatuses": [terminated_with("agent", 2, None, None)]}),
                failed("Error", "container agent exited with code 2"),
            ),
            (
                "agent command not found",
                json!({"phase": "Failed",
                       "containerStatuses": [terminated_with("agent", 128, Some("StartError"),
                            Some("exec: \"agentapi\": executable file not found in $PATH"))]}),
                failed(
                    "StartError",
                    "container agent exited with code 128 (StartError): exec: \"agentapi\": executable file not found in $PATH",
                ),
            ),
            (
                "evicted",
                json!({"phase": "Failed", "reason": "Evicted",
                       "message": "The node was low on resource: ephemeral-storage.",
                       "containerStatuses": [terminated_with("agent", 137, Some("Error"), None)]}),
                failed(
                    "Evicted",
                    "The node was low on resource: ephemeral-storage.",
                ),
            ),
            (
                "pod failed, nothing else known",
                json!({"phase": "Failed"}),
                failed("PodFailed", "the pod failed"),
            ),
            (
                "pod succeeded, no statuses",
                json!({"phase": "Succeeded"}),
                PodState::Succeeded,
            ),
            (
                "image pull back-off",
                json!({"phase": "Pending", "conditions": not_ready,
                       "containerStatuses": [waiting("agent", "ImagePullBackOff",
                            "Back-off pulling image \"ghcr.io/x/agent:1\"")]}),
                pending(
                    "container agent: ImagePullBackOff: Back-off pulling image \"ghcr.io/x/agent:1\"",
                ),
            ),
            (
                "err image pull on the clone",
                json!({"phase": "Pending", "conditions": not_ready,
                       "initContainerStatuses": [waiting("clone", "ErrImagePull", "not found")],
                       "containerStatuses": [waiting("agent", "PodInitializing", "")]}),
                pending("container clone: ErrImagePull: not found"),
            ),
            (
                "missing env Secret",
                json!({"phase": "Pending", "conditions": not_ready,
                       "containerStatuses": [waiting("agent", "CreateContainerConfigError",
                            "secret \"anthropic\" not found")]}),
                pending(
                    "container agent: CreateContainerConfigError: secret \"anthropic\" not found",
                ),
            ),
            (
                "ContainerCreating is normal progress",
                json!({"phase": "Pending", "conditions": not_ready,
                       "containerStatuses": [waiting("agent", "ContainerCreating", "")]}),
                PodState::Starting,
            ),
            (
                "editor died, agent runs",
                json!({"phase": "Running", "conditions": not_ready,
                       "containerStatuses": [running("agent"),
                            terminated_with("editor", 1, Some("Error"), None)]}),
                pending("container editor exited with code 1 (Error); the pod cannot become Ready"),
            ),
        ];
        for (what, status, expected) in cases {
            assert_eq!(observe_pod(Some(&pod(status)?)), expected, "{what}");
        }
        Ok(())
    }

    #[test]
    fn terminating_wins_over_everything() -> Result<(), Box<dyn Error>> {
        let mut p = pod(json!({"phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [terminated_with("agent", 143, Some("Error"), None)]}))?;
        p.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        ));
        assert_eq!(observe_pod(Some(&p)), PodState::Terminating);
        Ok(())
    }

    #[test]
    fn long_termination_messages_keep_their_end() -> Result<(), Box<dyn Error>> {
        let log = format!("{}fatal: the real error", "progress line\n".repeat(200));
        let p = pod(json!({"phase": "Failed",
            "initContainerStatuses": [terminated_with("clone", 128, Some("Error"), Some(&log))]}))?;
        let PodState::Failed { reason, message } = observe_pod(Some(&p)) else {
            return Err("expected Failed".into());
        };
        assert_eq!(reason, "CloneFailed");
        assert!(message.ends_with("fatal: the real error"), "{message}");
        assert!(
            message.starts_with("clone failed: container clone exited with code 128 (Error): …")
        );
        assert!(message.chars().count() < MAX_DETAIL_CHARS + 100);
        Ok(())
    }
}
