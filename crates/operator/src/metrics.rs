//! The operator's Prometheus metrics (DESIGN §3.3), served as text format 0.0.4 on `/metrics`.
//!
//! Series and labels are a documented contract (dashboards and alerts depend on them):
//! - `ccplant_reconcile_total{controller}`, `ccplant_reconcile_errors_total{controller,error}`,
//!   `ccplant_reconcile_duration_seconds{controller}`;
//! - `ccplant_sessions{phase}`, `ccplant_tasks{phase}`: objects in the operator's caches by
//!   phase, every phase always present (a status without a phase counts as `Pending`);
//! - `ccplant_github_requests_total{endpoint,status}`,
//!   `ccplant_github_request_duration_seconds{endpoint}`,
//!   `ccplant_github_rate_limit_remaining{credential}`;
//! - `ccplant_leader`, `ccplant_lease_renewals_total`.

use ccplant_api::{AgentSessionPhase, GitHubTaskPhase};
use ccplant_github::{RequestHook, RequestOutcome};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// The `Content-Type` of what [`Metrics::render`] returns.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Reconciles take from a millisecond (nothing to do) to seconds (several API writes).
const RECONCILE_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// GitHub answers in tens of milliseconds to seconds; a timeout can take much longer.
const GITHUB_BUCKETS: [f64; 12] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// The controllers' names as they appear in the `controller` label.
pub const CONTROLLERS: [&str; 2] = ["agentsession", "githubtask"];

const SESSION_PHASES: [AgentSessionPhase; 7] = AgentSessionPhase::ALL;

/// Position in [`SESSION_PHASES`]; exhaustive, so a new phase cannot be forgotten here.
fn session_phase_index(phase: AgentSessionPhase) -> usize {
    match phase {
        AgentSessionPhase::Pending => 0,
        AgentSessionPhase::Starting => 1,
        AgentSessionPhase::Running => 2,
        AgentSessionPhase::Succeeded => 3,
        AgentSessionPhase::Failed => 4,
        AgentSessionPhase::Suspended => 5,
        AgentSessionPhase::Expired => 6,
    }
}

const TASK_PHASES: [GitHubTaskPhase; 4] = [
    GitHubTaskPhase::Pending,
    GitHubTaskPhase::Running,
    GitHubTaskPhase::Succeeded,
    GitHubTaskPhase::Failed,
];

/// Position in [`TASK_PHASES`]; exhaustive, so a new phase cannot be forgotten here.
fn task_phase_index(phase: GitHubTaskPhase) -> usize {
    match phase {
        GitHubTaskPhase::Pending => 0,
        GitHubTaskPhase::Running => 1,
        GitHubTaskPhase::Succeeded => 2,
        GitHubTaskPhase::Failed => 3,
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabels {
    controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    controller: &'static str,
    error: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    endpoint: &'static str,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CredentialLabels {
    credential: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every metric of one operator process.
pub struct Metrics {
    registry: Registry,
    /// Serializes renders: each sets the phase gauges, then encodes them.
    render_lock: Mutex<()>,
    reconciles: Family<ControllerLabels, Counter>,
    reconcile_errors: Family<ErrorLabels, Counter>,
    reconcile_duration: HistogramFamily<ControllerLabels>,
    sessions: Family<PhaseLabels, Gauge>,
    tasks: Family<PhaseLabels, Gauge>,
    github_requests: Family<RequestLabels, Counter>,
    github_duration: HistogramFamily<EndpointLabels>,
    rate_limit_remaining: Family<CredentialLabels, Gauge>,
    leader: Gauge,
    lease_renewals: Counter,
    agent_deliveries: Counter,
    agent_connects: Family<OutcomeLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("leader", &self.leader.get())
            .field("lease_renewals", &self.lease_renewals.get())
            .finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::default();
        // Counters are registered without `_total`: the encoder appends it.
        let reconciles = Family::<ControllerLabels, Counter>::default();
        registry.register(
            "ccplant_reconcile",
            "Reconciles run, per controller",
            reconciles.clone(),
        );
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "ccplant_reconcile_errors",
            "Reconciles that returned an error, per controller and kind of error",
            reconcile_errors.clone(),
        );
        let reconcile_duration: HistogramFamily<ControllerLabels> =
            Family::new_with_constructor(|| Histogram::new(RECONCILE_BUCKETS));
        registry.register(
            "ccplant_reconcile_duration_seconds",
            "Time one reconcile took, per controller",
            reconcile_duration.clone(),
        );
        let sessions = Family::<PhaseLabels, Gauge>::default();
        registry.register(
            "ccplant_sessions",
            "AgentSessions in the operator's cache, per status.phase (none yet counts as Pending)",
            sessions.clone(),
        );
        let tasks = Family::<PhaseLabels, Gauge>::default();
        registry.register(
            "ccplant_tasks",
            "GitHubTasks in the operator's cache, per status.phase (none yet counts as Pending)",
            tasks.clone(),
        );
        let github_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "ccplant_github_requests",
            "HTTP requests to GitHub, per endpoint and response status (\"error\" when no response arrived)",
            github_requests.clone(),
        );
        let github_duration: HistogramFamily<EndpointLabels> =
            Family::new_with_constructor(|| Histogram::new(GITHUB_BUCKETS));
        registry.register(
            "ccplant_github_request_duration_seconds",
            "Time from sending a request to GitHub to the end of its response, per endpoint",
            github_duration.clone(),
        );
        let rate_limit_remaining = Family::<CredentialLabels, Gauge>::default();
        registry.register(
            "ccplant_github_rate_limit_remaining",
            "The last x-ratelimit-remaining GitHub returned, per credential",
            rate_limit_remaining.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "ccplant_leader",
            "1 while this replica is the leader and reconciles, else 0",
            leader.clone(),
        );
        let lease_renewals = Counter::default();
        registry.register(
            "ccplant_lease_renewals",
            "Successful renewals of the leader-election Lease",
            lease_renewals.clone(),
        );
        let agent_deliveries = Counter::default();
        registry.register(
            "ccplant_agent_messages_delivered",
            "User messages (prompt and spec.messages) delivered to agents",
            agent_deliveries.clone(),
        );
        let agent_connects = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "ccplant_agent_connects",
            "Attempts to open an agent's event stream, per outcome (ok or error)",
            agent_connects.clone(),
        );
        // Series whose label sets are known up front are present from the first scrape.
        for controller in CONTROLLERS {
            let _ = reconciles.get_or_create(&ControllerLabels { controller });
            let _ = reconcile_duration.get_or_create(&ControllerLabels { controller });
        }
        for phase in SESSION_PHASES {
            let _ = sessions.get_or_create(&PhaseLabels {
                phase: phase.as_str(),
            });
        }
        for phase in TASK_PHASES {
            let _ = tasks.get_or_create(&PhaseLabels {
                phase: phase.as_str(),
            });
        }
        Arc::new(Metrics {
            registry,
            render_lock: Mutex::new(()),
            reconciles,
            reconcile_errors,
            reconcile_duration,
            sessions,
            tasks,
            github_requests,
            github_duration,
            rate_limit_remaining,
            leader,
            lease_renewals,
            agent_deliveries,
            agent_connects,
        })
    }

    /// One message delivered to an agent.
    pub fn agent_delivered(&self) {
        self.agent_deliveries.inc();
    }

    /// One attempt to open an agent's event stream.
    pub fn agent_connect(&self, ok: bool) {
        let outcome = if ok { "ok" } else { "error" };
        self.agent_connects
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// Sets the `ccplant_leader` gauge.
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// Counts one successful Lease renewal.
    pub fn lease_renewed(&self) {
        self.lease_renewals.inc();
    }

    /// The hook to give every GitHub client: counts its requests and keeps its rate limit.
    pub fn github_hook(self: &Arc<Self>) -> RequestHook {
        let metrics = Arc::clone(self);
        Arc::new(move |outcome: &RequestOutcome| metrics.observe_github(outcome))
    }

    fn observe_github(&self, outcome: &RequestOutcome) {
        let status = match outcome.status {
            Some(code) => code.to_string(),
            None => "error".to_string(),
        };
        self.github_requests
            .get_or_create(&RequestLabels {
                endpoint: outcome.endpoint,
                status,
            })
            .inc();
        self.github_duration
            .get_or_create(&EndpointLabels {
                endpoint: outcome.endpoint,
            })
            .observe(outcome.elapsed.as_secs_f64());
        if let Some(remaining) = outcome.rate_limit_remaining {
            self.rate_limit_remaining
                .get_or_create(&CredentialLabels {
                    credential: outcome.credential.to_string(),
                })
                .set(i64::try_from(remaining).unwrap_or(i64::MAX));
        }
    }

    /// Records one reconcile of `controller` (one of [`CONTROLLERS`]) and its error's
    /// `metric_label()`, if it failed.
    pub fn observe_reconcile(
        &self,
        controller: &'static str,
        elapsed: Duration,
        error: Option<&'static str>,
    ) {
        let labels = ControllerLabels { controller };
        self.reconciles.get_or_create(&labels).inc();
        self.reconcile_duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        if let Some(error) = error {
            self.reconcile_errors
                .get_or_create(&ErrorLabels { controller, error })
                .inc();
        }
    }

    /// The exposition (text format 0.0.4), with the phase gauges counted from `sessions` and
    /// `tasks` (the phases of the objects in the caches, `None` for an object without one).
    pub fn render(
        &self,
        sessions: impl IntoIterator<Item = Option<AgentSessionPhase>>,
        tasks: impl IntoIterator<Item = Option<GitHubTaskPhase>>,
    ) -> String {
        let _serialized = self
            .render_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut session_counts = [0_i64; SESSION_PHASES.len()];
        for phase in sessions {
            session_counts[session_phase_index(phase.unwrap_or(AgentSessionPhase::Pending))] += 1;
        }
        for (phase, count) in SESSION_PHASES.iter().zip(session_counts) {
            self.sessions
                .get_or_create(&PhaseLabels {
                    phase: phase.as_str(),
                })
                .set(count);
        }
        let mut task_counts = [0_i64; TASK_PHASES.len()];
        for phase in tasks {
            task_counts[task_phase_index(phase.unwrap_or(GitHubTaskPhase::Pending))] += 1;
        }
        for (phase, count) in TASK_PHASES.iter().zip(task_counts) {
            self.tasks
                .get_or_create(&PhaseLabels {
                    phase: phase.as_str(),
                })
                .set(count);
        }
        let mut text = String::new();
        // Writing to a String cannot fail; the encoder's own errors would mean a bug in it,
        // and half an exposition is still better than none.
        if let Err(e) = prometheus_text::encode(&mut text, &self.registry) {
            tracing::error!(error = %e, "encoding metrics");
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ccplant_github::Credentials;

    fn outcome(
        endpoint: &'static str,
        status: Option<u16>,
        remaining: Option<u64>,
    ) -> RequestOutcome {
        RequestOutcome {
            endpoint,
            status,
            credential: Credentials::App {
                app_id: 1,
                private_key: "not a key".to_string().into(),
                installation_id: 2,
            }
            .id(),
            rate_limit_remaining: remaining,
            rate_limit_limit: Some(5000),
            elapsed: Duration::from_millis(30),
        }
    }

    /// The sample lines of `name`, sorted (a family's label sets come out in no fixed order).
    fn sample_lines<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
        let mut lines: Vec<&str> = text
            .lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
            })
            .collect();
        lines.sort_unstable();
        lines
    }

    #[test]
    fn a_fresh_process_exposes_every_series_whose_labels_are_known() {
        let m = Metrics::new();
        let text = m.render([], []);
        for (family, kind) in [
            ("ccplant_reconcile_total", "counter"),
            ("ccplant_reconcile_duration_seconds", "histogram"),
            ("ccplant_sessions", "gauge"),
            ("ccplant_tasks", "gauge"),
            ("ccplant_leader", "gauge"),
            ("ccplant_lease_renewals_total", "counter"),
        ] {
            assert!(
                text.contains(&format!("# TYPE {family} {kind}\n")),
                "no TYPE line for {family}:\n{text}"
            );
            assert!(text.contains(&format!("# HELP {family} ")), "{text}");
        }
        assert_eq!(sample_lines(&text, "ccplant_leader"), ["ccplant_leader 0"]);
        assert_eq!(
            sample_lines(&text, "ccplant_lease_renewals_total"),
            ["ccplant_lease_renewals_total 0"]
        );
        assert_eq!(
            sample_lines(&text, "ccplant_reconcile_total"),
            [
                "ccplant_reconcile_total{controller=\"agentsession\"} 0",
                "ccplant_reconcile_total{controller=\"githubtask\"} 0",
            ]
        );
        assert_eq!(
            sample_lines(&text, "ccplant_reconcile_duration_seconds_count"),
            [
                "ccplant_reconcile_duration_seconds_count{controller=\"agentsession\"} 0",
                "ccplant_reconcile_duration_seconds_count{controller=\"githubtask\"} 0",
            ]
        );
        // Keyed by what was observed (error kinds, endpoints, credentials): absent until then.
        for family in [
            "ccplant_reconcile_errors_total",
            "ccplant_github_requests_total",
            "ccplant_github_request_duration_seconds",
            "ccplant_github_rate_limit_remaining",
        ] {
            assert!(
                !text.contains(family),
                "{family} before any observation:\n{text}"
            );
        }
    }

    #[test]
    fn phase_gauges_count_the_caches_with_every_phase_present() {
        let m = Metrics::new();
        let text = m.render(
            [
                Some(AgentSessionPhase::Running),
                None,
                Some(AgentSessionPhase::Running),
                Some(AgentSessionPhase::Expired),
            ],
            [Some(GitHubTaskPhase::Succeeded)],
        );
        assert_eq!(
            sample_lines(&text, "ccplant_sessions"),
            [
                "ccplant_sessions{phase=\"Expired\"} 1",
                "ccplant_sessions{phase=\"Failed\"} 0",
                "ccplant_sessions{phase=\"Pending\"} 1",
                "ccplant_sessions{phase=\"Running\"} 2",
                "ccplant_sessions{phase=\"Starting\"} 0",
                "ccplant_sessions{phase=\"Succeeded\"} 0",
                "ccplant_sessions{phase=\"Suspended\"} 0",
            ]
        );
        assert_eq!(
            sample_lines(&text, "ccplant_tasks"),
            [
                "ccplant_tasks{phase=\"Failed\"} 0",
                "ccplant_tasks{phase=\"Pending\"} 0",
                "ccplant_tasks{phase=\"Running\"} 0",
                "ccplant_tasks{phase=\"Succeeded\"} 1",
            ]
        );
        // A later scrape reflects the caches as they are then (a gauge, not a counter).
        let text = m.render([], []);
        assert!(
            text.contains("ccplant_sessions{phase=\"Running\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("ccplant_tasks{phase=\"Succeeded\"} 0\n"),
            "{text}"
        );
    }

    #[test]
    fn phase_lists_match_their_indexes() {
        for (i, p) in SESSION_PHASES.iter().enumerate() {
            assert_eq!(session_phase_index(*p), i);
        }
        for (i, p) in TASK_PHASES.iter().enumerate() {
            assert_eq!(task_phase_index(*p), i);
        }
    }

    #[test]
    fn github_requests_are_counted_by_endpoint_and_status() {
        let m = Metrics::new();
        let hook = m.github_hook();
        hook(&outcome(
            "POST /repos/{owner}/{repo}/issues",
            Some(201),
            Some(4999),
        ));
        hook(&outcome(
            "POST /repos/{owner}/{repo}/issues",
            Some(201),
            Some(4998),
        ));
        hook(&outcome("GET /repos/{owner}/{repo}", None, None));
        let text = m.render([], []);
        assert_eq!(
            sample_lines(&text, "ccplant_github_requests_total").len(),
            2,
            "{text}"
        );
        assert!(
            text.contains(
                "ccplant_github_requests_total{endpoint=\"POST /repos/{owner}/{repo}/issues\",status=\"201\"} 2\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "ccplant_github_requests_total{endpoint=\"GET /repos/{owner}/{repo}\",status=\"error\"} 1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "ccplant_github_request_duration_seconds_count{endpoint=\"POST /repos/{owner}/{repo}/issues\"} 2\n"
            ),
            "{text}"
        );
        // The last value seen wins; a response without the header changes nothing.
        assert_eq!(
            sample_lines(&text, "ccplant_github_rate_limit_remaining"),
            ["ccplant_github_rate_limit_remaining{credential=\"app:1/installation:2\"} 4998"]
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::new();
        m.github_hook()(&outcome("GET /a\"b\\c\nd", Some(200), None));
        let text = m.render([], []);
        assert!(
            text.contains(
                "ccplant_github_requests_total{endpoint=\"GET /a\\\"b\\\\c\\nd\",status=\"200\"} 1\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn reconciles_errors_durations_leader_and_renewals() {
        let m = Metrics::new();
        m.observe_reconcile("githubtask", Duration::from_millis(3), None);
        m.observe_reconcile(
            "githubtask",
            Duration::from_millis(20),
            Some("status_write"),
        );
        m.set_leader(true);
        m.lease_renewed();
        m.lease_renewed();
        let text = m.render([], []);
        assert!(
            text.contains("ccplant_reconcile_total{controller=\"githubtask\"} 2\n"),
            "{text}"
        );
        assert_eq!(
            sample_lines(&text, "ccplant_reconcile_errors_total"),
            ["ccplant_reconcile_errors_total{controller=\"githubtask\",error=\"status_write\"} 1"]
        );
        assert!(
            text.contains(
                "ccplant_reconcile_duration_seconds_bucket{le=\"0.005\",controller=\"githubtask\"} 1\n"
            ) || text.contains(
                "ccplant_reconcile_duration_seconds_bucket{controller=\"githubtask\",le=\"0.005\"} 1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "ccplant_reconcile_duration_seconds_count{controller=\"githubtask\"} 2\n"
            ),
            "{text}"
        );
        assert_eq!(sample_lines(&text, "ccplant_leader"), ["ccplant_leader 1"]);
        assert_eq!(
            sample_lines(&text, "ccplant_lease_renewals_total"),
            ["ccplant_lease_renewals_total 2"]
        );
        m.set_leader(false);
        assert_eq!(
            sample_lines(&m.render([], []), "ccplant_leader"),
            ["ccplant_leader 0"]
        );
    }
}
