//! `AgentSessionClass` (cluster-scoped): a kind of session the platform offers (DESIGN §7.2),
//! like a StorageClass or RuntimeClass — which namespaces may use it, the agent images allowed,
//! resource defaults and ceilings, the lifetime cap, the pod placement and identity it fixes and
//! what sessions may still override, and whether isolation may be turned off. Sessions name one
//! in `spec.className` or get the default class that selects their namespace.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{LocalObjectReference, ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::DurationString;

/// A kind of session the platform offers: defaults and limits in one place. Cluster-scoped:
/// only the platform team creates them.
// clippy reads the repeated `type_ = "string"` of the printer columns as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[schemars(transform = crate::schema::polish_descriptions)]
#[kube(
    group = "ccplant.io",
    version = "v1alpha1",
    kind = "AgentSessionClass",
    plural = "agentsessionclasses",
    derive = "PartialEq",
    shortname = "agsc",
    category = "ccplant",
    doc = "AgentSessionClass is a kind of session the platform offers: the namespaces that may use it, the agent images allowed, resource defaults and ceilings, the longest lifetime, the pod placement and identity it fixes (and which spec.pod fields sessions may still set), and whether sessions may turn network isolation off. AgentSessions name one in spec.className, or get the default class that selects their namespace. A session the class does not allow is Pending with reason NotAllowed, naming the class and the rule.",
    printcolumn(
        name = "Default",
        type_ = "boolean",
        json_path = ".spec.default",
        description = "Used by sessions that name no class"
    ),
    printcolumn(
        name = "Max Active",
        type_ = "integer",
        json_path = ".spec.limits.maxActiveSessionsPerNamespace",
        description = "Sessions of the class running at once per namespace"
    ),
    printcolumn(
        name = "Max Duration",
        type_ = "string",
        json_path = ".spec.lifetime.maxDuration",
        description = "Longest a session of the class may run"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct AgentSessionClassSpec {
    /// Namespaces whose sessions may use this class (labels of the Namespace, e.g.
    /// kubernetes.io/metadata.name). Required; {} selects every namespace.
    #[schemars(schema_with = "crate::schema::bounded_label_selector")]
    pub namespace_selector: LabelSelector,

    /// Used by sessions in the selected namespaces that set no spec.className. When several
    /// defaults select a namespace, the most recently created one is used (as with
    /// StorageClasses).
    #[serde(default)]
    pub default: bool,

    /// The agent: images allowed, the default image and resources, and the most it may ask.
    #[serde(default)]
    pub agent: ClassAgentSpec,

    /// The longest a session may run, and its idle timeout by default.
    #[serde(default)]
    pub lifetime: ClassLifetimeSpec,

    /// The pod placement and identity the class fixes, and which spec.pod fields sessions may
    /// still set.
    #[serde(default)]
    pub pod: ClassPodSpec,

    /// Network isolation: whether sessions may turn it off.
    #[serde(default)]
    pub network: ClassNetworkSpec,

    /// How many of the class's sessions may run at once.
    #[serde(default)]
    pub limits: ClassLimits,
}

/// How many sessions of a class run at once.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(transform = crate::schema::polish_descriptions)]
#[serde(rename_all = "camelCase")]
pub struct ClassLimits {
    /// Sessions of this class running at once in one namespace (a pod that is not finished);
    /// the others wait, oldest first, as Pending with reason Queued and their place in line in
    /// the message. A session that ends or suspends frees its place. Unset: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_active_sessions_per_namespace: Option<i32>,
}

/// What a session's agent may be.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[schemars(transform = crate::schema::polish_descriptions)]
#[serde(rename_all = "camelCase")]
pub struct ClassAgentSpec {
    /// Images a session may run (spec.agent.image and spec.editor.image): exact references,
    /// or a prefix ending in "*" (e.g. "ghcr.io/acme/*"; "*" allows any image). Empty: only
    /// defaultImage (and the operator's default editor image).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 1024)))]
    pub images: Vec<String>,

    /// The agent image of sessions that set no spec.agent.image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub default_image: Option<String>,

    /// Resources of the agent container of sessions that set no spec.agent.resources.
    /// Default: the operator's (requests cpu 500m and memory 512Mi, limits cpu 2 and
    /// memory 4Gi).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// The most the agent container may request or be limited to, by resource name (cpu,
    /// memory, ephemeral-storage, …). A resource named here that a session sets no limit for
    /// gets this as its limit.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 16))]
    pub max_resources: BTreeMap<String, Quantity>,
}

/// Lifetime rules of the class's sessions.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(transform = crate::schema::polish_descriptions)]
#[serde(rename_all = "camelCase")]
pub struct ClassLifetimeSpec {
    /// Cap of every session's lifetime.maxDuration, e.g. 8h. Unset: the operator's 24h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_duration: Option<DurationString>,

    /// lifetime.idleTimeout of sessions that set none. Unset: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<DurationString>,
}

/// The `spec.pod` fields a class may leave to its sessions.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum PodOverrideField {
    Labels,
    Annotations,
    NodeSelector,
    Tolerations,
    Affinity,
    PriorityClassName,
    RuntimeClassName,
    ServiceAccountName,
    ImagePullSecrets,
    SecurityContext,
}

impl PodOverrideField {
    /// The field's name in spec.pod.
    pub fn as_str(self) -> &'static str {
        match self {
            PodOverrideField::Labels => "labels",
            PodOverrideField::Annotations => "annotations",
            PodOverrideField::NodeSelector => "nodeSelector",
            PodOverrideField::Tolerations => "tolerations",
            PodOverrideField::Affinity => "affinity",
            PodOverrideField::PriorityClassName => "priorityClassName",
            PodOverrideField::RuntimeClassName => "runtimeClassName",
            PodOverrideField::ServiceAccountName => "serviceAccountName",
            PodOverrideField::ImagePullSecrets => "imagePullSecrets",
            PodOverrideField::SecurityContext => "securityContext",
        }
    }
}

/// spec.pod fields sessions may set when a class lists no allowedOverrides: labels and
/// annotations, none of the placement or identity fields.
pub const DEFAULT_ALLOWED_OVERRIDES: [PodOverrideField; 2] =
    [PodOverrideField::Labels, PodOverrideField::Annotations];

fn default_allowed_overrides() -> Vec<PodOverrideField> {
    DEFAULT_ALLOWED_OVERRIDES.to_vec()
}

/// What the class fixes of its sessions' pods.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(transform = crate::schema::polish_descriptions)]
#[serde(rename_all = "camelCase")]
pub struct ClassPodSpec {
    /// RuntimeClass of the pods, e.g. gvisor or kata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub runtime_class_name: Option<String>,

    /// Node labels the pods must be scheduled on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    pub node_selector: BTreeMap<String, String>,

    /// Tolerations of the pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub tolerations: Vec<Toleration>,

    /// PriorityClass of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub priority_class_name: Option<String>,

    /// ServiceAccount the pods run as (in the session's namespace; its token is not mounted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub service_account_name: Option<String>,

    /// Secrets used to pull the images (in the session's namespace).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub image_pull_secrets: Vec<LocalObjectReference>,

    /// The spec.pod fields sessions may still set; a field set by a session and not listed
    /// here is refused (NotAllowed). A listed field the class also fixes takes the session's
    /// value. Default: labels and annotations.
    #[serde(default = "default_allowed_overrides")]
    #[schemars(length(max = 10))]
    pub allowed_overrides: Vec<PodOverrideField>,
}

impl Default for ClassPodSpec {
    fn default() -> Self {
        Self {
            runtime_class_name: None,
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            priority_class_name: None,
            service_account_name: None,
            image_pull_secrets: Vec::new(),
            allowed_overrides: default_allowed_overrides(),
        }
    }
}

/// Network rules of the class's sessions.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(transform = crate::schema::polish_descriptions)]
#[serde(rename_all = "camelCase")]
pub struct ClassNetworkSpec {
    /// Whether sessions may set network.isolate: false (no NetworkPolicy). Default: false.
    #[serde(default)]
    pub allow_isolation_off: bool,
}

impl ClassAgentSpec {
    /// Whether `image` is allowed: an exact entry, or an entry ending in "*" that it starts
    /// with; the default image always is.
    pub fn allows_image(&self, image: &str) -> bool {
        self.default_image.as_deref() == Some(image)
            || self
                .images
                .iter()
                .any(|pattern| match pattern.strip_suffix('*') {
                    Some(prefix) => image.starts_with(prefix),
                    None => pattern == image,
                })
    }
}

/// A session of no class: the operator's own defaults and nothing the platform did not grant —
/// any image, labels and annotations only, isolation on.
pub fn builtin_class() -> AgentSessionClassSpec {
    AgentSessionClassSpec {
        namespace_selector: LabelSelector::default(),
        default: false,
        agent: ClassAgentSpec {
            images: vec!["*".to_owned()],
            ..ClassAgentSpec::default()
        },
        lifetime: ClassLifetimeSpec::default(),
        pod: ClassPodSpec::default(),
        network: ClassNetworkSpec::default(),
        limits: ClassLimits::default(),
    }
}
