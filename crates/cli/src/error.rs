//! What can go wrong, worded for the person at the terminal.

use std::time::Duration;

use crate::format::human_duration;

/// Every failure of a command; `Display` is the one line printed after `error: `.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("agentsession \"{name}\" not found in namespace \"{namespace}\"")]
    SessionNotFound { name: String, namespace: String },

    #[error(
        "agentsession \"{name}\" already exists in namespace \"{namespace}\" (pick another name, or delete it with: kubectl delete agentsession {name} -n {namespace})"
    )]
    AlreadyExists { name: String, namespace: String },

    #[error(
        "the AgentSession CRD is not installed in this cluster (install it with: kubectl apply -f crds/ or the Helm chart)"
    )]
    CrdNotInstalled,

    #[error("namespace \"{0}\" not found")]
    NamespaceNotFound(String),

    #[error(
        "cannot reach the Kubernetes API server at {url}: {cause} (is the cluster running, and do --kubeconfig, KUBECONFIG and --context point at it?)"
    )]
    Unreachable { url: String, cause: String },

    #[error("cannot load a kubeconfig: {0}")]
    Kubeconfig(String),

    /// The API server refused the request; its message says why (validation, RBAC, …).
    #[error("{0}")]
    Refused(String),

    #[error("{0}")]
    Usage(String),

    #[error(
        "timed out after {} waiting for agentsession \"{name}\" to be {target}; last seen: {last}",
        human_duration(*after)
    )]
    Timeout {
        name: String,
        target: String,
        after: Duration,
        last: String,
    },

    #[error(
        "agentsession \"{name}\" finished with phase {phase} while waiting for it to be {target}{}",
        detail(message)
    )]
    FinishedElsewhere {
        name: String,
        phase: String,
        target: String,
        message: Option<String>,
    },

    #[error("agentsession \"{name}\" was deleted while waiting for it to be {target}")]
    Deleted { name: String, target: String },

    #[error(
        "could not append the message to agentsession \"{name}\": other writers changed it {attempts} times in a row; try again"
    )]
    TooManyConflicts { name: String, attempts: u32 },

    #[error("writing the output: {0}")]
    Output(#[from] std::io::Error),
}

fn detail(message: &Option<String>) -> String {
    match message {
        Some(m) if !m.is_empty() => format!(": {m}"),
        _ => String::new(),
    }
}

/// What a request was about, to turn an API error into one of the errors above.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub namespace: &'a str,
    /// The session the request named; `None` for list and watch of the collection.
    pub name: Option<&'a str>,
    pub cluster_url: &'a str,
}

impl Subject<'_> {
    /// Classifies an error of a request about this subject.
    pub fn error(&self, err: kube::Error) -> Error {
        match err {
            kube::Error::Api(status) => self.api_error(&status),
            other => Error::Unreachable {
                url: self.cluster_url.to_owned(),
                cause: cause_chain(&other),
            },
        }
    }

    fn api_error(&self, status: &kube::core::Status) -> Error {
        if status.code == 404 {
            // A missing object comes back as a Status naming its kind; a resource type the
            // apiserver does not serve comes back as a bare "404 page not found".
            return match status
                .details
                .as_ref()
                .filter(|_| status.reason == "NotFound")
            {
                Some(d) if d.kind == "namespaces" => {
                    Error::NamespaceNotFound(self.namespace.to_owned())
                }
                Some(d) if d.kind == "agentsessions" => Error::SessionNotFound {
                    name: self.name.unwrap_or(&d.name).to_owned(),
                    namespace: self.namespace.to_owned(),
                },
                _ => Error::CrdNotInstalled,
            };
        }
        if status.is_already_exists() {
            return Error::AlreadyExists {
                name: self.name.unwrap_or_default().to_owned(),
                namespace: self.namespace.to_owned(),
            };
        }
        let message = if status.message.is_empty() {
            format!("the API server answered {} {}", status.code, status.reason)
        } else {
            status.message.clone()
        };
        Error::Refused(message)
    }
}

/// The error and its sources as one line, without repeating a cause its parent already quoted.
fn cause_chain(err: &dyn std::error::Error) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use kube::core::Status;

    use super::*;

    fn subject() -> Subject<'static> {
        Subject {
            namespace: "team-a",
            name: Some("s1"),
            cluster_url: "https://127.0.0.1:6443/",
        }
    }

    fn not_found(kind: &str, name: &str) -> kube::Error {
        // The shape the apiserver sends for a missing object.
        let status: Status = match serde_json::from_value(serde_json::json!({
            "status": "Failure", "message": "not found", "reason": "NotFound", "code": 404,
            "details": { "name": name, "kind": kind },
        })) {
            Ok(s) => s,
            Err(e) => panic!("status: {e}"),
        };
        kube::Error::Api(status.boxed())
    }

    #[test]
    fn a_missing_object_is_a_missing_session() {
        let err = subject().error(not_found("agentsessions", "s1"));
        assert_eq!(
            err.to_string(),
            r#"agentsession "s1" not found in namespace "team-a""#
        );
    }

    #[test]
    fn a_bare_404_means_the_crd_is_not_installed() {
        let status =
            Status::failure("404 page not found", "Failed to parse error data").with_code(404);
        let err = subject().error(kube::Error::Api(status.boxed()));
        assert!(matches!(err, Error::CrdNotInstalled), "{err}");
    }

    #[test]
    fn a_missing_namespace_is_named() {
        let err = subject().error(not_found("namespaces", "team-a"));
        assert_eq!(err.to_string(), r#"namespace "team-a" not found"#);
    }

    #[test]
    fn other_refusals_quote_the_api_server() {
        let status = Status::failure(
            "agentsessions.ccplant.io \"s1\" is forbidden: no",
            "Forbidden",
        )
        .with_code(403);
        let err = subject().error(kube::Error::Api(status.boxed()));
        assert_eq!(
            err.to_string(),
            "agentsessions.ccplant.io \"s1\" is forbidden: no"
        );
    }
}
