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

    /// Secret (in the operator's namespace, or "namespace/name") holding the GitHub credentials
    /// used when an object names none.
    #[arg(long, env = "CCPLANT_DEFAULT_GITHUB_SECRET")]
    pub default_github_secret: Option<String>,

    /// Owner used when a GitHubTask's repository is a bare "repo".
    #[arg(long, env = "CCPLANT_DEFAULT_GITHUB_OWNER")]
    pub default_github_owner: Option<String>,

    /// GitHubTasks reconciled concurrently.
    #[arg(long, env = "CCPLANT_TASK_CONCURRENCY", default_value_t = 8)]
    pub task_concurrency: u16,

    /// Timeout of each GitHub API call, e.g. 30s.
    #[arg(long, env = "CCPLANT_GITHUB_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub github_timeout: Duration,

    /// Namespace the operator runs in (default Secret lookups); from the downward API in-cluster.
    #[arg(long, env = "POD_NAMESPACE", default_value = "ccplant-system")]
    pub operator_namespace: String,

    /// Log format.
    #[arg(long, env = "CCPLANT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,

    /// Log filter (tracing EnvFilter syntax), e.g. info or ccplant_operator=debug.
    #[arg(long, env = "CCPLANT_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    ccplant_api::parse_duration(s).map_err(|e| e.to_string())
}
