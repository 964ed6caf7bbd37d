//! Command-line configuration of `ccplant-operator run`, with environment fallbacks.

use clap::{Args, ValueEnum};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// JSON lines when stderr is not a terminal (in-cluster), human text on a terminal.
    Auto,
    Json,
    Text,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Namespaces to watch (comma-separated); empty watches all namespaces.
    #[arg(long, env = "CCPLANT_NAMESPACES", value_delimiter = ',')]
    pub namespaces: Vec<String>,

    /// GitHub API base URL: https://api.github.com, a GitHub Enterprise Server's
    /// https://HOST/api/v3, or a test server.
    #[arg(
        long,
        env = "CCPLANT_GITHUB_API_URL",
        default_value = "https://api.github.com"
    )]
    pub github_api_url: String,

    /// Owner used when a GitHubTask's repository is a bare "repo".
    #[arg(long, env = "CCPLANT_DEFAULT_GITHUB_OWNER")]
    pub default_github_owner: Option<String>,

    /// Agent image for sessions whose spec.agent.image is empty.
    #[arg(long, env = "CCPLANT_DEFAULT_AGENT_IMAGE")]
    pub default_agent_image: Option<String>,

    /// Upper bound of every session's lifetime.maxDuration, e.g. 24h.
    #[arg(long, env = "CCPLANT_MAX_SESSION_DURATION", default_value = "24h", value_parser = parse_duration)]
    pub max_session_duration: Duration,

    /// Image of the init container that clones the repository (needs git and sh).
    #[arg(long, env = "CCPLANT_GIT_IMAGE", default_value = crate::agent_session::build::DEFAULT_GIT_IMAGE)]
    pub git_image: String,

    /// Editor (code-server) image for sessions with spec.editor.enabled and no image.
    #[arg(
        long,
        env = "CCPLANT_EDITOR_IMAGE",
        default_value = crate::agent_session::build::DEFAULT_EDITOR_IMAGE
    )]
    pub editor_image: String,

    /// Host repositories are cloned from; default: github.com for api.github.com, else the
    /// API URL's host (GitHub Enterprise Server).
    #[arg(long, env = "CCPLANT_GITHUB_HOST")]
    pub github_host: Option<String>,

    /// AgentSessions reconciled concurrently, over all watched namespaces.
    #[arg(long, env = "CCPLANT_SESSION_CONCURRENCY", default_value_t = 16)]
    pub session_concurrency: u16,

    /// Agent API connects and requests in flight at once, over all sessions of all watched
    /// namespaces (established event streams do not count).
    #[arg(long, env = "CCPLANT_AGENT_CONCURRENCY", default_value_t = 32)]
    pub agent_concurrency: u16,

    /// GitHubTasks reconciled concurrently, over all watched namespaces.
    #[arg(long, env = "CCPLANT_TASK_CONCURRENCY", default_value_t = 8)]
    pub task_concurrency: u16,

    /// Timeout of each GitHub API call, e.g. 30s.
    #[arg(long, env = "CCPLANT_GITHUB_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub github_timeout: Duration,

    /// Namespace the operator runs in; from the downward API in-cluster.
    #[arg(long, env = "POD_NAMESPACE", default_value = "ccplant-system")]
    pub operator_namespace: String,

    /// Labels of the operator's own pods (key=value, comma-separated): a session's agent port
    /// admits only pods with these labels in the operator's namespace. The chart passes its
    /// selector labels.
    #[arg(
        long,
        env = "CCPLANT_OPERATOR_POD_LABELS",
        value_delimiter = ',',
        value_parser = parse_label,
        default_value = "app.kubernetes.io/name=ccplant,app.kubernetes.io/component=operator"
    )]
    pub operator_pod_labels: Vec<(String, String)>,

    /// Log format.
    #[arg(long, env = "CCPLANT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,

    /// Log filter (tracing EnvFilter syntax), e.g. info or ccplant_operator=debug.
    #[arg(long, env = "CCPLANT_LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Elect a leader on a Lease so that only one replica reconciles; `--leader-elect=false`
    /// for single-replica and local runs.
    #[arg(long, env = "CCPLANT_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub leader_elect: bool,

    /// Name of the leader-election Lease.
    #[arg(long, env = "CCPLANT_LEASE_NAME", default_value = "ccplant-operator")]
    pub lease_name: String,

    /// Namespace of the leader-election Lease (default: the operator's namespace).
    #[arg(long, env = "CCPLANT_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,

    /// This replica's identity in the Lease (default: the pod name from the downward API, else
    /// the hostname plus a random suffix).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,

    /// Address of the HTTP server for /metrics, /healthz and /readyz (port 0 picks a free one;
    /// the bound address is logged).
    #[arg(long, env = "CCPLANT_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: std::net::SocketAddr,
}

impl RunArgs {
    /// The host sessions clone from.
    pub fn clone_host(&self) -> String {
        if let Some(h) = &self.github_host {
            return h.clone();
        }
        let rest = self
            .github_api_url
            .split("://")
            .nth(1)
            .unwrap_or(&self.github_api_url);
        let host = rest.split('/').next().unwrap_or(rest);
        match host {
            "api.github.com" => "github.com".to_string(),
            other => other.to_string(),
        }
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    ccplant_api::parse_duration(s).map_err(|e| e.to_string())
}

/// `key=value` of a label.
fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.trim().to_owned())),
        _ => Err(format!("{s:?} is not a label key=value")),
    }
}
