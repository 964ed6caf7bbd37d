//! `AgentSession`: an AI coding agent running in a pod, optionally on a GitHub repository.

use std::{collections::BTreeMap, fmt, time::Duration};

use k8s_openapi::{
    api::core::v1::{
        Affinity, EnvFromSource, EnvVar, LocalObjectReference, ResourceRequirements, Toleration,
    },
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{Condition, Time},
    },
};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    common::{PermissionLevel, SecretReference, SessionGitHubSpec, default_github_permissions},
    duration::{DurationError, DurationString},
    validation::*,
};

/// Default HTTP port of the agent API (agentapi).
pub const DEFAULT_AGENT_PORT: i32 = 3284;
/// Default port of the code-server editor sidecar.
pub const DEFAULT_EDITOR_PORT: i32 = 8080;
/// Default port of the agent's Prometheus metrics.
pub const DEFAULT_METRICS_PORT: i32 = 9464;
/// Default UID of the session pod's containers.
pub const DEFAULT_RUN_AS_USER: i64 = 999;
/// Default `lifetime.maxDuration`.
pub const DEFAULT_MAX_DURATION: &str = "24h";
/// Default `completion.idleFor`.
pub const DEFAULT_IDLE_FOR: &str = "60s";
/// Default CPU request of the agent container.
pub const DEFAULT_CPU_REQUEST: &str = "500m";
/// Default memory request of the agent container.
pub const DEFAULT_MEMORY_REQUEST: &str = "512Mi";
/// Default CPU limit of the agent container.
pub const DEFAULT_CPU_LIMIT: &str = "2";
/// Default memory limit of the agent container.
pub const DEFAULT_MEMORY_LIMIT: &str = "4Gi";
/// Prefix of the default work branch: `ccplant/<session-name>`.
pub const WORK_BRANCH_PREFIX: &str = "ccplant/";
/// `status.agent.lastAgentMessage` keeps this many characters.
pub const LAST_AGENT_MESSAGE_CHARS: usize = 500;

/// Resources of the agent container when `agent.resources` is not set: requests cpu 500m and
/// memory 512Mi, limits cpu 2 and memory 4Gi.
pub fn default_agent_resources() -> ResourceRequirements {
    let quantities = |cpu: &str, memory: &str| {
        BTreeMap::from([
            ("cpu".to_owned(), Quantity(cpu.to_owned())),
            ("memory".to_owned(), Quantity(memory.to_owned())),
        ])
    };
    ResourceRequirements {
        requests: Some(quantities(DEFAULT_CPU_REQUEST, DEFAULT_MEMORY_REQUEST)),
        limits: Some(quantities(DEFAULT_CPU_LIMIT, DEFAULT_MEMORY_LIMIT)),
        ..Default::default()
    }
}

fn default_agent_port() -> i32 {
    DEFAULT_AGENT_PORT
}
fn default_editor_port() -> i32 {
    DEFAULT_EDITOR_PORT
}
fn default_metrics_port() -> i32 {
    DEFAULT_METRICS_PORT
}
fn default_run_as_user() -> i64 {
    DEFAULT_RUN_AS_USER
}
fn default_max_duration() -> DurationString {
    DurationString::from(DEFAULT_MAX_DURATION)
}
fn default_idle_for() -> DurationString {
    DurationString::from(DEFAULT_IDLE_FOR)
}
fn default_true() -> bool {
    true
}

/// An AI coding agent running in a pod, optionally working on a GitHub repository.
///
/// The agent gets the prompt and then each entry of messages, in order, once it finished the
/// previous one. The session runs until it is stopped, expires or (with completion.mode
/// WhenIdle) goes idle; suspend keeps its workspace volume. Watch status.phase and the Ready
/// condition.
// clippy reads the repeated `type_ = "string"` of the printer columns as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[schemars(transform = crate::schema::polish_descriptions)]
#[kube(
    group = "ccplant.io",
    version = "v1alpha1",
    kind = "AgentSession",
    plural = "agentsessions",
    namespaced,
    status = "AgentSessionStatus",
    derive = "PartialEq",
    shortname = "ags",
    category = "ccplant",
    doc = "AgentSession runs an AI coding agent (Claude Code, Codex, Gemini, Aider, Goose or a custom image) in a pod, optionally on a clone of a GitHub repository with short-lived, least-privilege credentials. The agent receives spec.prompt and then each entry of spec.messages in order; status reports the phase, the agent's state, its in-cluster endpoint and the editor URL.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase", description = "Lifecycle phase of the session"),
    printcolumn(name = "Agent", type_ = "string", json_path = ".spec.agent.type", description = "Agent type"),
    printcolumn(name = "Repository", type_ = "string", json_path = ".spec.repository.name", description = "GitHub repository the session works on"),
    printcolumn(name = "Agent State", type_ = "string", json_path = ".status.agent.state", description = "What the agent is doing"),
    printcolumn(name = "Endpoint", type_ = "string", json_path = ".status.endpoint", priority = 1, description = "In-cluster URL of the agent API"),
    // A "date" column renders future times as <invalid>, so the timestamp is shown as is.
    printcolumn(name = "Expires", type_ = "string", json_path = ".status.expiresAt", description = "When the session expires (RFC 3339)"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new(MESSAGES_APPEND_ONLY_RULE).message(MESSAGES_APPEND_ONLY_MESSAGE),
    validation = Rule::new(PROMPT_IMMUTABLE_RULE).message(PROMPT_IMMUTABLE_MESSAGE),
    validation = Rule::new(DISTINCT_PORTS_RULE).message(DISTINCT_PORTS_MESSAGE),
    validation = Rule::new(CONVERSATION_SIZE_RULE).message(CONVERSATION_SIZE_MESSAGE)
)]
pub struct AgentSessionSpec {
    /// The agent: which one, its image, command, port, environment and resources.
    #[serde(default)]
    pub agent: AgentSpec,

    /// Initial task for the agent. It is passed to the pod (environment variable AGENT_PROMPT
    /// and a file) and delivered as the first user message through the agent API once the
    /// agent is ready. Set at creation only: it cannot be changed, added or removed later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_PROMPT_LENGTH))]
    pub prompt: Option<String>,

    /// Follow-up user messages. Append-only: entries are never changed or removed. The
    /// operator delivers each one, in order, exactly once, after the agent finished the
    /// previous one; status.agent.deliveredMessages counts the prompt and the messages
    /// delivered so far.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_MESSAGES), inner(length(min = 1, max = MAX_MESSAGE_LENGTH)))]
    pub messages: Vec<String>,

    /// When the session counts as finished.
    #[serde(default)]
    pub completion: CompletionSpec,

    /// GitHub repository to clone into /workspace before the agent starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<RepositorySpec>,

    /// GitHub credentials for the clone, for pushing and for the agent's GitHub API calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github: Option<SessionGitHubSpec>,

    /// How long the session may run and how long the object is kept afterwards.
    #[serde(default)]
    pub lifetime: LifetimeSpec,

    /// True deletes the pod and keeps the workspace volume and the Service (phase Suspended);
    /// setting it back to false starts a new pod on the same workspace.
    #[serde(default)]
    pub suspend: bool,

    /// Persistent workspace volume. Without size the workspace lives in the pod and is lost
    /// when the pod goes away.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<WorkspaceSpec>,

    /// Browser-based editor (code-server) next to the agent, on the same workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub editor: Option<EditorSpec>,

    /// Metrics and traces of the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telemetry: Option<TelemetrySpec>,

    /// Curated overrides of the session pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    // Boxed: 352 bytes inline in every cached session, and most sessions set none.
    pub pod: Option<Box<PodOverrides>>,

    /// Network isolation of the session pod.
    #[serde(default)]
    pub network: NetworkSpec,

    /// The AgentSessionClass of the session: the platform's images, defaults, limits and pod
    /// placement. Unset: the default class that selects the namespace, else the operator's
    /// built-in rules (any image; spec.pod may set labels and annotations only; isolation on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_OBJECT_NAME_LENGTH))]
    #[x_kube(validation = Rule::new(OBJECT_NAME_RULE).message(CLASS_NAME_MESSAGE))]
    pub class_name: Option<String>,
}

/// Which agent runs and how.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(transform = crate::schema::polish_descriptions)]
#[serde(rename_all = "camelCase")]
pub struct AgentSpec {
    /// Agent implementation: claude, codex, gemini, aider, goose or custom.
    #[serde(rename = "type", default)]
    pub type_: AgentType,

    /// Container image of the agent. Default: the operator's --default-agent-image; the session
    /// is refused (Ready=False, reason InvalidSpec) when neither is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub image: Option<String>,

    /// Overrides the image's entrypoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 4096)))]
    pub command: Vec<String>,

    /// Overrides the image's arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(max = 4096)))]
    pub args: Vec<String>,

    /// HTTP port of the agent API (agentapi) in the container.
    #[serde(default = "default_agent_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,

    /// Environment variables of the agent container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub env: Vec<EnvVar>,

    /// Sources of environment variables of the agent container, e.g. the Secret holding the
    /// model provider's API key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub env_from: Vec<EnvFromSource>,

    /// Compute resources of the agent container. Default: requests cpu 500m and memory 512Mi,
    /// limits cpu 2 and memory 4Gi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

impl Default for AgentSpec {
    fn default() -> Self {
        Self {
            type_: AgentType::default(),
            image: None,
            command: Vec::new(),
            args: Vec::new(),
            port: DEFAULT_AGENT_PORT,
            env: Vec::new(),
            env_from: Vec::new(),
            resources: None,
        }
    }
}

/// Agent implementation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[schemars(transform = crate::schema::polish_descriptions)]
#[serde(rename_all = "lowercase")]
pub enum AgentType {
    /// Anthropic Claude Code.
    #[default]
    Claude,
    /// OpenAI Codex CLI.
    Codex,
    /// Google Gemini CLI.
    Gemini,
    /// Aider.
    Aider,
    /// Block Goose.
    Goose,
    /// Any other agent whose image serves the agent API.
    Custom,
}

impl AgentType {
    /// The value as written in the spec.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Claude => "claude",
            Self::Codex => "codex",
            Self::Gemini => "gemini",
            Self::Aider => "aider",
            Self::Goose => "goose",
            Self::Custom => "custom",
        }
    }
}

impl fmt::Display for AgentType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// When the session counts as finished.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(transform = crate::schema::polish_descriptions)]
#[serde(rename_all = "camelCase")]
pub struct CompletionSpec {
    /// Manual: the session runs until it is stopped or expires. WhenIdle: the session
    /// Succeeds once the prompt and every message were delivered and the agent then stayed
    /// idle for idleFor, so a one-shot "run this prompt" needs no follow-up call.
    #[serde(default)]
    pub mode: CompletionMode,

    /// With mode WhenIdle, how long the agent must stay idle after the last message before the
    /// session Succeeds.
    #[serde(default = "default_idle_for")]
    pub idle_for: DurationString,
}

impl Default for CompletionSpec {
    fn default() -> Self {
        Self {
            mode: CompletionMode::default(),
            idle_for: default_idle_for(),
        }
    }
}

/// When the session counts as finished.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[schemars(transform = crate::schema::polish_descriptions)]
pub enum CompletionMode {
    /// The session runs until it is stopped or expires.
    #[default]
    Manual,
    /// The session Succeeds once every message was delivered and the agent stayed idle for
    /// completion.idleFor.
    WhenIdle,
}

/// A GitHub repository to work on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[schemars(transform = crate::schema::polish_descriptions)]
#[serde(rename_all = "camelCase")]
pub struct RepositorySpec {
    /// Repository as "owner/repo", e.g. "ccplant-demo/hello-world".
    #[schemars(length(max = MAX_REPOSITORY_LENGTH))]
    #[x_kube(validation = Rule::new(OWNER_REPO_RULE).message(OWNER_REPO_MESSAGE))]
    pub name: String,

    /// Branch, tag or commit to start from. Default: the repository's default branch.
    #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_GIT_REF_LENGTH))]
    #[x_kube(validation = Rule::new(GIT_REF_RULE).message(GIT_REF_MESSAGE))]
    pub git_ref: Option<String>,

    /// Branch the agent works on and pushes to. Default: ccplant/<session-name>.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_GIT_REF_LENGTH))]
    #[x_kube(validation = Rule::new(GIT_REF_RULE).message(WORK_BRANCH_MESSAGE))]
    pub work_branch: Option<String>,

    /// Number of commits to clone (a shallow clone). Default: the full history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub depth: Option<i32>,
}

impl RepositorySpec {
    /// The owner and the repository name (`("ccplant-demo", "hello-world")`), when the name has
    /// the `owner/repo` form.
    pub fn owner_and_name(&self) -> Option<(&str, &str)> {
        self.name
            .split_once('/')
            .filter(|_| is_valid_owner_repo(&self.name))
    }
}

/// How long the session may run and how long the object is kept.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(transform = crate::schema::polish_descriptions)]
#[serde(rename_all = "camelCase")]
pub struct LifetimeSpec {
    /// Longest the session may run, counted from its start; then its pod is deleted and the
    /// phase becomes Expired. The operator's --max-session-duration caps it.
    #[serde(default = "default_max_duration")]
    pub max_duration: DurationString,

    /// With no agent activity and no new message for this long, the session is Suspended
    /// when it has a workspace volume, else Expired. Unset: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<DurationString>,

    /// Delete the AgentSession this long after it finished (Succeeded, Failed or Expired).
    /// Unset: keep it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_after_finished: Option<DurationString>,
}

impl Default for LifetimeSpec {
    fn default() -> Self {
        Self {
            max_duration: default_max_duration(),
            idle_timeout: None,
            ttl_after_finished: None,
        }
    }
}

/// Persistent workspace volume.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[schemars(transform = crate::schema::polish_descriptions)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceSpec {
    /// Size of the workspace volume, e.g. 10Gi. When set, a PersistentVolumeClaim is created
    /// and mounted at /workspace; it survives suspend and is deleted with the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new(QUANTITY_RULE).message(QUANTITY_MESSAGE))]
    pub size: Option<String>,

    /// StorageClass of the workspace volume. Default: the cluster's default StorageClass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub storage_class_name: Option<String>,
}

impl WorkspaceSpec {
    /// The size as a Kubernetes quantity.
    pub fn size_quantity(&self) -> Option<Quantity> {
        self.size.clone().map(Quantity)
    }
}

/// Browser-based editor next to the agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(transform = crate::schema::polish_descriptions)]
#[serde(rename_all = "camelCase")]
pub struct EditorSpec {
    /// Run a code-server sidecar on the workspace; its URL appears in status.editorURL. It asks
    /// for a login: the password is in the Secret <name>-editor (key password), generated
    /// once per session.
    #[serde(default)]
    pub enabled: bool,

    /// Container image of the editor. Default: the operator's default editor image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub image: Option<String>,

    /// HTTP port of the editor in the pod.
    #[serde(default = "default_editor_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
}

impl Default for EditorSpec {
    fn default() -> Self {
        Self {
            enabled: false,
            image: None,
            port: DEFAULT_EDITOR_PORT,
        }
    }
}

/// Metrics and traces of the agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[schemars(transform = crate::schema::polish_descriptions)]
#[serde(rename_all = "camelCase")]
pub struct TelemetrySpec {
    /// Port of the agent's Prometheus metrics; the pod carries the standard prometheus.io/scrape,
    /// prometheus.io/port and prometheus.io/path annotations.
    #[serde(default = "default_metrics_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub metrics_port: i32,

    /// OpenTelemetry (OTLP) collector endpoint the agent exports traces and metrics to, e.g.
    /// http://otel-collector.observability:4317. Unset: no export.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_URL_LENGTH))]
    #[x_kube(validation = Rule::new(HTTP_URL_RULE).message(OTLP_ENDPOINT_MESSAGE))]
    pub otlp_endpoint: Option<String>,
}

impl Default for TelemetrySpec {
    fn default() -> Self {
        Self {
            metrics_port: DEFAULT_METRICS_PORT,
            otlp_endpoint: None,
        }
    }
}

/// Curated overrides of the session pod.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(transform = crate::schema::polish_descriptions)]
#[serde(rename_all = "camelCase")]
pub struct PodOverrides {
    /// Extra labels of the pod. The operator's own labels (app.kubernetes.io/managed-by,
    /// ccplant.io/session) take precedence.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    pub labels: BTreeMap<String, String>,

    /// Extra annotations of the pod.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    pub annotations: BTreeMap<String, String>,

    /// Node labels the pod must be scheduled on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    pub node_selector: BTreeMap<String, String>,

    /// Tolerations of the pod.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub tolerations: Vec<Toleration>,

    /// Affinity rules of the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,

    /// PriorityClass of the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub priority_class_name: Option<String>,

    /// RuntimeClass of the pod, e.g. gvisor or kata for stronger isolation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub runtime_class_name: Option<String>,

    /// ServiceAccount the pod runs as. Its token is not mounted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub service_account_name: Option<String>,

    /// Secrets used to pull the agent and editor images.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub image_pull_secrets: Vec<LocalObjectReference>,

    /// Security settings of the pod. The rest of the restricted Pod Security Standard
    /// (runAsNonRoot, no privilege escalation, all capabilities dropped, RuntimeDefault seccomp,
    /// read-only root filesystem) always applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<PodSecurityOverrides>,
}

/// Security settings of the session pod that may be changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(transform = crate::schema::polish_descriptions)]
#[serde(rename_all = "camelCase")]
pub struct PodSecurityOverrides {
    /// UID the containers run as (and the pod's fsGroup). Must not be 0: the pod runs as
    /// non-root.
    #[serde(default = "default_run_as_user")]
    #[schemars(range(min = 1))]
    pub run_as_user: i64,
}

impl Default for PodSecurityOverrides {
    fn default() -> Self {
        Self {
            run_as_user: DEFAULT_RUN_AS_USER,
        }
    }
}

/// Network isolation of the session pod.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(transform = crate::schema::polish_descriptions)]
#[serde(rename_all = "camelCase")]
pub struct NetworkSpec {
    /// Create a NetworkPolicy admitting ingress to the session only from the operator's pods,
    /// and only to the agent API port. The editor (which asks for the password in the Secret
    /// <name>-editor) and the agent's metrics are reached with kubectl port-forward.
    #[serde(default = "default_true")]
    pub isolate: bool,
}

impl Default for NetworkSpec {
    fn default() -> Self {
        Self { isolate: true }
    }
}

/// Observed state of an AgentSession.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[schemars(transform = crate::schema::polish_descriptions)]
#[serde(rename_all = "camelCase")]
pub struct AgentSessionStatus {
    /// One-word summary: Pending, Starting, Running, Succeeded, Failed, Suspended or Expired.
    /// Tools should read the conditions instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<AgentSessionPhase>,

    /// Current state of the session: Ready (the session is where its spec asks: running, or
    /// succeeded, expired or suspended), Reconciling or Stalled (kstatus: present only while
    /// the operator is still getting it there, or it will not get there without a change),
    /// CredentialsReady, WorkspaceReady, Finished, AgentReachable and, once it was suspended,
    /// Suspended.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Name of the session's pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,

    /// Name of the Service in front of the agent API (and the editor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,

    /// In-cluster URL of the agent API, e.g. http://my-session.team-a.svc:3284.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,

    /// URL of the editor, when editor.enabled.
    #[serde(rename = "editorURL", default, skip_serializing_if = "Option::is_none")]
    pub editor_url: Option<String>,

    /// Branch the agent works on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub work_branch: Option<String>,

    /// When the session's pod was first started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,

    /// When the session finished (Succeeded, Failed or Expired).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,

    /// When the session expires: start time plus lifetime.maxDuration (capped by the
    /// operator's --max-session-duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,

    /// Human-readable detail of the current phase, e.g. why the session failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,

    /// What the agent is doing, as seen through its API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentStatus>,
}

/// Lifecycle phase of an AgentSession.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[schemars(transform = crate::schema::polish_descriptions)]
pub enum AgentSessionPhase {
    /// Accepted, waiting for dependencies such as the credentials Secret.
    Pending,
    /// The pod is being created or is starting.
    Starting,
    /// The agent is up.
    Running,
    /// The agent finished successfully (exit code 0, or idle with completion.mode WhenIdle).
    Succeeded,
    /// The agent or its pod failed; status.message says why.
    Failed,
    /// The pod was deleted on request or after idleTimeout; the workspace volume is kept.
    Suspended,
    /// The session ran past lifetime.maxDuration, or idled past idleTimeout without a
    /// workspace volume.
    Expired,
}

impl AgentSessionPhase {
    /// Every phase, in lifecycle order.
    pub const ALL: [AgentSessionPhase; 7] = [
        Self::Pending,
        Self::Starting,
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::Suspended,
        Self::Expired,
    ];

    /// The phase as written in status.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Starting => "Starting",
            Self::Running => "Running",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
            Self::Suspended => "Suspended",
            Self::Expired => "Expired",
        }
    }

    /// Succeeded, Failed and Expired are final: the session never runs again.
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Expired)
    }
}

impl fmt::Display for AgentSessionPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the agent is doing.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(transform = crate::schema::polish_descriptions)]
#[serde(rename_all = "camelCase")]
pub struct AgentStatus {
    /// Starting, Working (processing a message), Idle (waiting for the next message) or
    /// Unreachable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<AgentState>,

    /// Number of user messages delivered to the agent: the prompt (if any) plus the entries of
    /// spec.messages delivered so far.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub delivered_messages: i32,

    /// Last time the agent showed activity (a message or a status change).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_activity_time: Option<Time>,

    /// The first 500 characters of the agent's latest message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_agent_message: Option<String>,
}

impl AgentStatus {
    /// The first 500 characters of `message`, as stored in lastAgentMessage.
    pub fn truncate_agent_message(message: &str) -> String {
        message.chars().take(LAST_AGENT_MESSAGE_CHARS).collect()
    }
}

/// What the agent is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[schemars(transform = crate::schema::polish_descriptions)]
pub enum AgentState {
    /// The agent API is not answering yet.
    Starting,
    /// The agent is processing a message.
    Working,
    /// The agent is waiting for the next message.
    Idle,
    /// The agent API stopped answering.
    Unreachable,
}

impl AgentState {
    /// The state as written in status.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "Starting",
            Self::Working => "Working",
            Self::Idle => "Idle",
            Self::Unreachable => "Unreachable",
        }
    }
}

impl fmt::Display for AgentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PodOverrides {
    /// The fields set (non-empty).
    pub fn fields_set(&self) -> Vec<crate::PodOverrideField> {
        use crate::PodOverrideField as F;
        [
            (!self.labels.is_empty(), F::Labels),
            (!self.annotations.is_empty(), F::Annotations),
            (!self.node_selector.is_empty(), F::NodeSelector),
            (!self.tolerations.is_empty(), F::Tolerations),
            (self.affinity.is_some(), F::Affinity),
            (self.priority_class_name.is_some(), F::PriorityClassName),
            (self.runtime_class_name.is_some(), F::RuntimeClassName),
            (self.service_account_name.is_some(), F::ServiceAccountName),
            (!self.image_pull_secrets.is_empty(), F::ImagePullSecrets),
            (self.security_context.is_some(), F::SecurityContext),
        ]
        .into_iter()
        .filter_map(|(set, field)| set.then_some(field))
        .collect()
    }
}

impl AgentSessionSpec {
    /// HTTP port of the agent API.
    pub fn effective_port(&self) -> i32 {
        self.agent.port
    }

    /// Port of the code-server editor, when the editor is enabled.
    pub fn effective_editor_port(&self) -> Option<i32> {
        self.editor.as_ref().filter(|e| e.enabled).map(|e| e.port)
    }

    /// Port of the agent's Prometheus metrics.
    pub fn effective_metrics_port(&self) -> i32 {
        self.telemetry
            .as_ref()
            .map_or(DEFAULT_METRICS_PORT, |t| t.metrics_port)
    }

    /// UID of the pod's containers.
    pub fn effective_run_as_user(&self) -> i64 {
        self.pod
            .as_ref()
            .and_then(|p| p.security_context.as_ref())
            .map_or(DEFAULT_RUN_AS_USER, |s| s.run_as_user)
    }

    /// Resources of the agent container: agent.resources, or [`default_agent_resources`].
    pub fn effective_resources(&self) -> ResourceRequirements {
        self.agent
            .resources
            .clone()
            .unwrap_or_else(default_agent_resources)
    }

    /// Permissions of the session's GitHub App installation token.
    pub fn effective_permissions(&self) -> BTreeMap<String, PermissionLevel> {
        self.github
            .as_ref()
            .map_or_else(default_github_permissions, |g| g.permissions.clone())
    }

    /// The credentials Secret the session names, if any (else the operator's default applies).
    pub fn github_secret_ref(&self) -> Option<&SecretReference> {
        self.github.as_ref().and_then(|g| g.secret_ref.as_ref())
    }

    /// Where the session's GitHub credentials come from.
    pub fn github_source(&self) -> crate::GitHubSource<'_> {
        crate::GitHubSource::of(
            self.github
                .as_ref()
                .and_then(|g| g.credential_name.as_deref()),
            self.github_secret_ref(),
        )
    }

    /// lifetime.maxDuration, parsed.
    pub fn max_duration(&self) -> Result<Duration, DurationError> {
        self.lifetime.max_duration.parse()
    }

    /// lifetime.idleTimeout, parsed; `None` when unset.
    pub fn idle_timeout(&self) -> Result<Option<Duration>, DurationError> {
        self.lifetime
            .idle_timeout
            .as_ref()
            .map(DurationString::parse)
            .transpose()
    }

    /// lifetime.ttlAfterFinished, parsed; `None` when unset.
    pub fn ttl_after_finished(&self) -> Result<Option<Duration>, DurationError> {
        self.lifetime
            .ttl_after_finished
            .as_ref()
            .map(DurationString::parse)
            .transpose()
    }

    /// completion.idleFor, parsed.
    pub fn completion_idle_for(&self) -> Result<Duration, DurationError> {
        self.completion.idle_for.parse()
    }

    /// Number of user messages the agent is to receive: the prompt (if any) plus messages.
    pub fn total_messages(&self) -> usize {
        self.outbox().count()
    }

    /// What the agent is to receive, in order: the prompt, then `messages`; blank entries are
    /// skipped (agentapi refuses an empty message).
    pub fn outbox(&self) -> impl Iterator<Item = &str> {
        self.prompt
            .iter()
            .chain(self.messages.iter())
            .map(String::as_str)
            .filter(|m| !m.trim().is_empty())
    }

    /// Checks the rules the schema enforces at admission, for objects that bypassed it. The
    /// transition rule (messages is append-only) needs the old object and is not checked.
    pub fn validate(&self) -> Result<(), InvalidSpec> {
        let mut v = Violations::default();
        let port_ok = |p: i32| (1..=65535).contains(&p);
        v.check(
            port_ok(self.agent.port),
            "spec.agent.port",
            "must be between 1 and 65535",
        );
        v.check(
            self.messages.len() <= MAX_MESSAGES,
            "spec.messages",
            "must have at most 256 entries",
        );
        v.check(
            self.messages
                .iter()
                .all(|m| !m.is_empty() && m.chars().count() <= MAX_MESSAGE_LENGTH),
            "spec.messages",
            "entries must be 1 to 16384 characters long",
        );
        let conversation = self.prompt.as_ref().map_or(0, String::len)
            + self.messages.iter().map(String::len).sum::<usize>();
        v.check(
            conversation <= MAX_CONVERSATION_BYTES,
            "spec",
            CONVERSATION_SIZE_MESSAGE,
        );
        v.check_duration(Some(&self.completion.idle_for), "spec.completion.idleFor");
        if let Some(repo) = &self.repository {
            v.check(
                is_valid_owner_repo(&repo.name),
                "spec.repository.name",
                OWNER_REPO_MESSAGE,
            );
            v.check(
                repo.git_ref.as_deref().is_none_or(is_valid_git_ref),
                "spec.repository.ref",
                GIT_REF_MESSAGE,
            );
            v.check(
                repo.work_branch.as_deref().is_none_or(is_valid_git_ref),
                "spec.repository.workBranch",
                WORK_BRANCH_MESSAGE,
            );
            v.check(
                repo.depth.is_none_or(|d| d >= 1),
                "spec.repository.depth",
                "must be at least 1",
            );
        }
        if let Some(github) = &self.github {
            v.check_github_source(
                github.credential_name.as_deref(),
                github.secret_ref.as_ref(),
            );
        }
        if let Some(github) = &self.github {
            v.check(
                !github.permissions.is_empty(),
                "spec.github.permissions",
                PERMISSIONS_NOT_EMPTY_MESSAGE,
            );
        }
        if let Some(secret) = self.github_secret_ref() {
            v.check(
                is_valid_object_name(&secret.name),
                "spec.github.secretRef.name",
                SECRET_NAME_MESSAGE,
            );
        }
        v.check_duration(
            Some(&self.lifetime.max_duration),
            "spec.lifetime.maxDuration",
        );
        v.check_duration(
            self.lifetime.idle_timeout.as_ref(),
            "spec.lifetime.idleTimeout",
        );
        v.check_duration(
            self.lifetime.ttl_after_finished.as_ref(),
            "spec.lifetime.ttlAfterFinished",
        );
        if let Some(editor) = &self.editor {
            v.check(
                port_ok(editor.port),
                "spec.editor.port",
                "must be between 1 and 65535",
            );
        }
        if let Some(telemetry) = &self.telemetry {
            v.check(
                port_ok(telemetry.metrics_port),
                "spec.telemetry.metricsPort",
                "must be between 1 and 65535",
            );
        }
        let ports = [
            Some(self.agent.port),
            self.effective_editor_port(),
            Some(self.effective_metrics_port()),
        ];
        let distinct = ports.iter().enumerate().all(|(i, a)| {
            ports[i + 1..]
                .iter()
                .all(|b| a.is_none() || b.is_none() || a != b)
        });
        v.check(distinct, "spec", DISTINCT_PORTS_MESSAGE);
        v.check(
            self.effective_run_as_user() >= 1,
            "spec.pod.securityContext.runAsUser",
            "must be at least 1: the pod runs as non-root",
        );
        v.into_result()
    }
}

impl AgentSession {
    /// The branch the agent works on: repository.workBranch, else `ccplant/<session-name>`.
    /// `None` without a repository.
    pub fn effective_work_branch(&self) -> Option<String> {
        let repo = self.spec.repository.as_ref()?;
        Some(match &repo.work_branch {
            Some(branch) => branch.clone(),
            None => format!(
                "{WORK_BRANCH_PREFIX}{}",
                self.metadata.name.as_deref().unwrap_or_default()
            ),
        })
    }

    /// The current phase, `None` before the operator saw the object.
    pub fn phase(&self) -> Option<AgentSessionPhase> {
        self.status.as_ref().and_then(|s| s.phase)
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error;

    use serde_json::json;

    use super::*;

    type TestResult = Result<(), Box<dyn Error>>;

    #[test]
    fn an_empty_spec_gets_the_documented_defaults() -> TestResult {
        let spec: AgentSessionSpec = serde_json::from_value(json!({}))?;
        assert_eq!(spec.agent.type_, AgentType::Claude);
        assert_eq!(spec.effective_port(), 3284);
        assert_eq!(spec.completion.mode, CompletionMode::Manual);
        assert_eq!(spec.completion_idle_for()?, Duration::from_secs(60));
        assert_eq!(spec.max_duration()?, Duration::from_secs(24 * 3600));
        assert_eq!(spec.idle_timeout()?, None);
        assert_eq!(spec.ttl_after_finished()?, None);
        assert!(spec.network.isolate);
        assert!(!spec.suspend);
        assert_eq!(spec.effective_metrics_port(), 9464);
        assert_eq!(spec.effective_editor_port(), None);
        assert_eq!(spec.effective_run_as_user(), 999);
        assert_eq!(spec.effective_resources(), default_agent_resources());
        assert_eq!(spec.effective_permissions(), default_github_permissions());
        assert_eq!(spec.github_secret_ref(), None);
        assert_eq!(spec, AgentSessionSpec::default());
        assert_eq!(spec.validate(), Ok(()));
        Ok(())
    }

    #[test]
    fn default_resources_are_500m_512mi_requests_and_2_4gi_limits() -> TestResult {
        let resources = serde_json::to_value(default_agent_resources())?;
        assert_eq!(
            resources,
            json!({
                "requests": {"cpu": "500m", "memory": "512Mi"},
                "limits": {"cpu": "2", "memory": "4Gi"},
            })
        );
        Ok(())
    }

    #[test]
    fn wire_names_are_the_documented_ones() -> TestResult {
        let spec: AgentSessionSpec = serde_json::from_value(json!({
            "agent": {"type": "codex", "image": "ghcr.io/ccplant/agent:latest", "port": 4000,
                      "envFrom": [{"secretRef": {"name": "openai"}}]},
            "repository": {"name": "ccplant-demo/hello-world", "ref": "v1.0.0",
                           "workBranch": "feature/x", "depth": 1},
            "github": {"secretRef": {"name": "github-app"}, "permissions": {"contents": "read"}},
            "lifetime": {"maxDuration": "2h", "idleTimeout": "30m", "ttlAfterFinished": "1h"},
            "completion": {"mode": "WhenIdle", "idleFor": "90s"},
            "workspace": {"size": "10Gi", "storageClassName": "fast"},
            "editor": {"enabled": true},
            "telemetry": {"metricsPort": 9000, "otlpEndpoint": "http://otel:4317"},
            "pod": {"runtimeClassName": "gvisor", "securityContext": {"runAsUser": 1000},
                    "imagePullSecrets": [{"name": "regcred"}]},
            "network": {"isolate": false},
            "suspend": true,
        }))?;
        assert_eq!(spec.agent.type_, AgentType::Codex);
        assert_eq!(spec.effective_port(), 4000);
        let repo = spec.repository.as_ref().ok_or("repository")?;
        assert_eq!(repo.git_ref.as_deref(), Some("v1.0.0"));
        assert_eq!(repo.owner_and_name(), Some(("ccplant-demo", "hello-world")));
        assert_eq!(
            spec.effective_permissions(),
            BTreeMap::from([("contents".to_owned(), PermissionLevel::Read)])
        );
        assert_eq!(
            spec.github_secret_ref().map(|s| s.name.as_str()),
            Some("github-app")
        );
        assert_eq!(spec.idle_timeout()?, Some(Duration::from_secs(1800)));
        assert_eq!(spec.effective_editor_port(), Some(8080));
        assert_eq!(spec.effective_metrics_port(), 9000);
        assert_eq!(spec.effective_run_as_user(), 1000);
        assert_eq!(
            spec.workspace
                .as_ref()
                .and_then(WorkspaceSpec::size_quantity),
            Some(Quantity("10Gi".to_owned()))
        );
        assert_eq!(spec.validate(), Ok(()));

        let status = AgentSessionStatus {
            phase: Some(AgentSessionPhase::Running),
            editor_url: Some("http://editor".to_owned()),
            agent: Some(AgentStatus {
                state: Some(AgentState::Idle),
                delivered_messages: 2,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&status)?,
            json!({"phase": "Running", "editorURL": "http://editor",
                   "agent": {"state": "Idle", "deliveredMessages": 2}})
        );
        Ok(())
    }

    #[test]
    fn work_branch_defaults_to_ccplant_slash_session_name() {
        let mut session = AgentSession::new("fix-login", AgentSessionSpec::default());
        assert_eq!(session.effective_work_branch(), None, "no repository");
        session.spec.repository = Some(RepositorySpec {
            name: "ccplant-demo/hello-world".to_owned(),
            git_ref: None,
            work_branch: None,
            depth: None,
        });
        assert_eq!(
            session.effective_work_branch().as_deref(),
            Some("ccplant/fix-login")
        );
        if let Some(repo) = session.spec.repository.as_mut() {
            repo.work_branch = Some("feature/login".to_owned());
        }
        assert_eq!(
            session.effective_work_branch().as_deref(),
            Some("feature/login")
        );
    }

    #[test]
    fn validate_reports_what_admission_would() -> TestResult {
        let spec: AgentSessionSpec = serde_json::from_value(json!({
            "repository": {"name": "hello-world", "workBranch": "-oops"},
            "lifetime": {"maxDuration": "1d", "idleTimeout": "0s"},
            "editor": {"enabled": true, "port": 3284},
            "messages": [""],
            "pod": {"securityContext": {"runAsUser": 0}},
        }))?;
        let err = spec.validate().err().ok_or("expected violations")?;
        let found: Vec<(&str, &str)> = err
            .violations
            .iter()
            .map(|v| (v.field.as_str(), v.message.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                (
                    "spec.messages",
                    "entries must be 1 to 16384 characters long"
                ),
                ("spec.repository.name", OWNER_REPO_MESSAGE),
                ("spec.repository.workBranch", WORK_BRANCH_MESSAGE),
                ("spec.lifetime.maxDuration", DURATION_MESSAGE),
                ("spec.lifetime.idleTimeout", DURATION_MESSAGE),
                ("spec", DISTINCT_PORTS_MESSAGE),
                (
                    "spec.pod.securityContext.runAsUser",
                    "must be at least 1: the pod runs as non-root"
                ),
            ]
        );
        // A disabled editor's port does not clash.
        let spec: AgentSessionSpec =
            serde_json::from_value(json!({"editor": {"enabled": false, "port": 3284}}))?;
        assert_eq!(spec.validate(), Ok(()));
        Ok(())
    }

    #[test]
    fn total_messages_counts_the_prompt() {
        let mut spec = AgentSessionSpec::default();
        assert_eq!(spec.total_messages(), 0);
        spec.prompt = Some("do it".to_owned());
        spec.messages = vec!["and this".to_owned()];
        assert_eq!(spec.total_messages(), 2);
    }

    #[test]
    fn last_agent_message_keeps_500_characters() {
        let long = "é".repeat(600);
        let kept = AgentStatus::truncate_agent_message(&long);
        assert_eq!(kept.chars().count(), 500);
        assert_eq!(AgentStatus::truncate_agent_message("short"), "short");
    }

    #[test]
    fn finished_phases() {
        use AgentSessionPhase::*;
        let finished: Vec<_> = [
            Pending, Starting, Running, Succeeded, Failed, Suspended, Expired,
        ]
        .into_iter()
        .filter(|p| p.is_finished())
        .collect();
        assert_eq!(finished, [Succeeded, Failed, Expired]);
        assert_eq!(Suspended.to_string(), "Suspended");
    }
}
