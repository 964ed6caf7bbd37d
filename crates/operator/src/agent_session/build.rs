//! The desired children of an AgentSession: Pod, Service, PVC, NetworkPolicy and credentials
//! Secret. Pure functions of the session and the operator's configuration; nothing here talks
//! to the cluster, so every field is unit-tested (see the golden files in `testdata/`).
//!
//! Every object carries apiVersion and kind (k8s-openapi serializes them), the labels
//! `app.kubernetes.io/managed-by=ccplant`, `ccplant.io/session=<name>` and
//! `app.kubernetes.io/name=ccplant-session`, a controller owner reference to the session, and
//! no status: they are ready for server-side apply.
//!
//! The session pod (DESIGN §3.1 step 3):
//! - init container `clone` (with `spec.repository`) runs the constant [`CLONE_SCRIPT`]; all
//!   inputs arrive as environment variables, so no user input is ever interpolated into shell
//!   code. The GitHub token is only a file from the session's credentials Secret, read by a git
//!   credential helper when git asks for it: never in a URL, an argument, an environment
//!   variable or a log. The helper lives in `$HOME/.gitconfig` on the shared `home` volume, so
//!   the agent's own `git fetch`/`git push` use the same (refreshed) token.
//! - container `agent`, and with `spec.editor.enabled` a code-server sidecar `editor`.
//! - restricted Pod Security Standard on the pod and every container; writable emptyDirs for
//!   `/tmp` and `$HOME` (`/home/agent`), the workspace at `/workspace`.

use std::collections::{BTreeMap, BTreeSet};

use ccplant_api::{AgentSession, labels, secret_keys};
use k8s_openapi::{
    ByteString,
    api::{
        core::v1::{
            Capabilities, Container, ContainerPort, DownwardAPIVolumeFile, DownwardAPIVolumeSource,
            EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction, LocalObjectReference,
            ObjectFieldSelector, PersistentVolumeClaim, PersistentVolumeClaimSpec,
            PersistentVolumeClaimVolumeSource, Pod, PodSecurityContext, PodSpec, Probe,
            ResourceRequirements, SeccompProfile, Secret, SecretKeySelector, SecretVolumeSource,
            SecurityContext, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
            VolumeResourceRequirements,
        },
        networking::v1::{
            NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
            NetworkPolicySpec,
        },
    },
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference},
        util::intstr::IntOrString,
    },
};
use kube::Resource;

use super::names::{SessionNames, session_label_value};

/// Default image of the `clone` init container.
pub const DEFAULT_GIT_IMAGE: &str = "alpine/git:2.47.2";
/// Default image of the `editor` sidecar.
pub const DEFAULT_EDITOR_IMAGE: &str = "codercom/code-server:4.104.0";
/// Default host repositories are cloned from.
pub const DEFAULT_GITHUB_HOST: &str = "github.com";

/// `app.kubernetes.io/name` of every child.
pub const APP_NAME_LABEL: &str = "app.kubernetes.io/name";
/// Value of [`APP_NAME_LABEL`].
pub const APP_NAME_VALUE: &str = "ccplant-session";
/// Pod annotation holding the prompt; projected into the pod as [`PROMPT_FILE`] and
/// `AGENT_PROMPT`.
pub const PROMPT_ANNOTATION: &str = "ccplant.io/prompt";
/// Namespaces are selected by this label, which Kubernetes sets to the namespace's name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Name of the agent container.
pub const AGENT_CONTAINER: &str = "agent";
/// Name of the init container that clones the repository.
pub const CLONE_CONTAINER: &str = "clone";
/// Name of the code-server sidecar.
pub const EDITOR_CONTAINER: &str = "editor";
/// Port name of the agent API (container and Service).
pub const AGENT_PORT_NAME: &str = "agent";
/// Port name of the agent's Prometheus metrics.
pub const METRICS_PORT_NAME: &str = "metrics";
/// Port name of the editor (container and Service).
pub const EDITOR_PORT_NAME: &str = "editor";

/// Where the workspace is mounted; the containers' working directory.
pub const WORKSPACE_DIR: &str = "/workspace";
/// `$HOME` of every container (a writable emptyDir).
pub const HOME_DIR: &str = "/home/agent";
/// A writable emptyDir.
pub const TMP_DIR: &str = "/tmp";
/// Where the session's credentials Secret is mounted.
pub const GITHUB_DIR: &str = "/var/run/ccplant/github";
/// The GitHub token inside the pod.
pub const TOKEN_FILE: &str = "/var/run/ccplant/github/token";
/// Where the prompt is projected.
pub const PROMPT_DIR: &str = "/var/run/ccplant/prompt";
/// The prompt inside the pod.
pub const PROMPT_FILE: &str = "/var/run/ccplant/prompt/prompt";

const WORKSPACE_VOLUME: &str = "workspace";
const TMP_VOLUME: &str = "tmp";
const HOME_VOLUME: &str = "home";
const GITHUB_VOLUME: &str = "github";
const PROMPT_VOLUME: &str = "prompt";

/// Kubernetes refuses an object whose annotations (keys plus values) exceed 256 KiB.
const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;
/// Linux refuses to start a process with one environment string longer than this
/// (MAX_ARG_STRLEN, "NAME=value" plus the terminating NUL).
const MAX_ENV_STRING_BYTES: usize = 128 * 1024;

/// The `clone` init container's script. A constant: its inputs are the environment variables
/// `CCPLANT_REPO_URL`, `CCPLANT_WORK_BRANCH`, `CCPLANT_REF` (optional, default: the
/// repository's default branch), `CCPLANT_DEPTH` (optional, shallow fetch) and
/// `CCPLANT_GITHUB_TOKEN_FILE` (optional, the mounted token).
///
/// - It installs a git credential helper for the repository's host that answers `get` with
///   `x-access-token` and the content of the token file, read each time git asks.
/// - Resuming on the same workspace volume keeps the existing clone (and the agent's work in
///   it): nothing is fetched when `/workspace` already holds a repository with a commit.
/// - When the work branch already exists on GitHub (e.g. a resumed session without a workspace
///   volume, whose agent pushed earlier), it continues that branch; otherwise it creates the
///   work branch from `CCPLANT_REF`. Fetching the ref (rather than `git clone --branch`) also
///   accepts commit SHAs, and works on a volume that is not empty (`lost+found`).
pub const CLONE_SCRIPT: &str = r#"set -eu
host=${CCPLANT_REPO_URL#*://}
host=${host%%/*}
git config --global "credential.https://$host.helper" '!f() { test "$1" = get || exit 0; test -r "${CCPLANT_GITHUB_TOKEN_FILE:-}" || exit 0; echo username=x-access-token; echo "password=$(cat "$CCPLANT_GITHUB_TOKEN_FILE")"; }; f'
git config --global --replace-all safe.directory /workspace
git config --global push.autoSetupRemote true
if [ -d .git ] && git rev-parse --verify --quiet HEAD >/dev/null; then
  echo "ccplant: /workspace already holds a clone on $(git rev-parse --abbrev-ref HEAD); keeping it"
  exit 0
fi
git init --quiet --initial-branch="$CCPLANT_WORK_BRANCH" .
git remote remove origin 2>/dev/null || true
git remote add origin "$CCPLANT_REPO_URL"
set --
if [ -n "${CCPLANT_DEPTH:-}" ]; then set -- --depth "$CCPLANT_DEPTH"; fi
found=0
git ls-remote --exit-code --heads origin "refs/heads/$CCPLANT_WORK_BRANCH" >/dev/null || found=$?
case $found in
0)
  echo "ccplant: continuing the existing branch $CCPLANT_WORK_BRANCH"
  git fetch "$@" origin "+refs/heads/$CCPLANT_WORK_BRANCH:refs/remotes/origin/$CCPLANT_WORK_BRANCH"
  git checkout --quiet -B "$CCPLANT_WORK_BRANCH" "refs/remotes/origin/$CCPLANT_WORK_BRANCH"
  ;;
2)
  echo "ccplant: starting $CCPLANT_WORK_BRANCH from ${CCPLANT_REF:-the default branch}"
  git fetch "$@" origin "${CCPLANT_REF:-HEAD}"
  git checkout --quiet -B "$CCPLANT_WORK_BRANCH" FETCH_HEAD
  ;;
*)
  exit "$found"
  ;;
esac
"#;

/// The operator's settings that shape a session's children.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildConfig {
    /// `--default-agent-image`: the agent image of sessions without `spec.agent.image`.
    pub default_agent_image: Option<String>,
    /// Namespace the operator runs in; isolated sessions admit its pods to the agent port.
    pub operator_namespace: String,
    /// Labels of the operator's pods (in `operator_namespace`): the only pods the agent port
    /// admits.
    pub operator_pod_labels: BTreeMap<String, String>,
    /// Image of the `clone` init container (needs `sh` and `git`).
    pub git_image: String,
    /// Image of the editor sidecar when `spec.editor.image` is not set.
    pub default_editor_image: String,
    /// Host repositories are cloned from: `github.com`, or the web host of GitHub Enterprise
    /// Server.
    pub github_host: String,
}

impl BuildConfig {
    /// Defaults for everything but the operator's namespace.
    pub fn new(operator_namespace: impl Into<String>) -> Self {
        Self {
            default_agent_image: None,
            operator_namespace: operator_namespace.into(),
            operator_pod_labels: BTreeMap::from([
                ("app.kubernetes.io/name".to_owned(), "ccplant".to_owned()),
                (
                    "app.kubernetes.io/component".to_owned(),
                    "operator".to_owned(),
                ),
            ]),
            git_image: DEFAULT_GIT_IMAGE.to_owned(),
            default_editor_image: DEFAULT_EDITOR_IMAGE.to_owned(),
            github_host: DEFAULT_GITHUB_HOST.to_owned(),
        }
    }
}

/// Why the children of a session cannot be built. Except [`BuildError::MissingMetadata`]
/// (an object not read from the apiserver), each is a spec the user must change: the message is
/// meant for `Ready=False` with reason `InvalidSpec`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error("spec.agent.image is empty and the operator has no --default-agent-image")]
    NoAgentImage,
    #[error("spec.repository.name \"{name}\" is not \"owner/repo\"")]
    InvalidRepository { name: String },
    #[error(
        "the pod's annotations (spec.pod.annotations and spec.prompt) take {bytes} bytes, more than the 262144 Kubernetes allows: shorten spec.prompt or spec.pod.annotations"
    )]
    AnnotationsTooLarge { bytes: usize },
    #[error("the AgentSession has no metadata.{0}")]
    MissingMetadata(&'static str),
}

impl BuildError {
    /// True when the user must change the spec (reason `InvalidSpec`).
    pub fn is_invalid_spec(&self) -> bool {
        !matches!(self, Self::MissingMetadata(_))
    }
}

fn session_name(session: &AgentSession) -> Result<&str, BuildError> {
    session
        .metadata
        .name
        .as_deref()
        .ok_or(BuildError::MissingMetadata("name"))
}

fn session_namespace(session: &AgentSession) -> Result<&str, BuildError> {
    session
        .metadata
        .namespace
        .as_deref()
        .ok_or(BuildError::MissingMetadata("namespace"))
}

/// The controller owner reference every child carries: the garbage collector deletes the
/// children with the session, and `blockOwnerDeletion` keeps foreground deletion ordered.
pub fn owner_reference(session: &AgentSession) -> Result<OwnerReference, BuildError> {
    Ok(OwnerReference {
        api_version: AgentSession::api_version(&()).into_owned(),
        kind: AgentSession::kind(&()).into_owned(),
        name: session_name(session)?.to_owned(),
        uid: session
            .metadata
            .uid
            .clone()
            .ok_or(BuildError::MissingMetadata("uid"))?,
        controller: Some(true),
        block_owner_deletion: Some(true),
    })
}

/// Labels selecting the session's pod (Service selector, NetworkPolicy podSelector):
/// `ccplant.io/session=<name>`, the name shortened as [`session_label_value`] says when it is
/// longer than a label value may be.
pub fn selector_labels(session_name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(
        labels::SESSION.to_owned(),
        session_label_value(session_name),
    )])
}

/// Labels of every child of the session.
pub fn child_labels(session_name: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(session_name);
    labels.insert(
        labels::MANAGED_BY.to_owned(),
        labels::MANAGED_BY_VALUE.to_owned(),
    );
    labels.insert(APP_NAME_LABEL.to_owned(), APP_NAME_VALUE.to_owned());
    labels
}

fn child_meta(session: &AgentSession, name: &str) -> Result<ObjectMeta, BuildError> {
    Ok(ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(session_namespace(session)?.to_owned()),
        labels: Some(child_labels(session_name(session)?)),
        owner_references: Some(vec![owner_reference(session)?]),
        ..Default::default()
    })
}

fn non_empty<T>(items: Vec<T>) -> Option<Vec<T>> {
    (!items.is_empty()).then_some(items)
}

fn non_empty_map(map: BTreeMap<String, String>) -> Option<BTreeMap<String, String>> {
    (!map.is_empty()).then_some(map)
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn mount(volume: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: volume.to_owned(),
        mount_path: path.to_owned(),
        read_only: read_only.then_some(true),
        ..Default::default()
    }
}

fn tcp_port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_owned()),
        container_port: port,
        protocol: Some("TCP".to_owned()),
        ..Default::default()
    }
}

fn http_get(path: &str, port: &str) -> HTTPGetAction {
    HTTPGetAction {
        path: Some(path.to_owned()),
        port: IntOrString::String(port.to_owned()),
        ..Default::default()
    }
}

fn resources(
    cpu_request: &str,
    memory_request: &str,
    cpu_limit: &str,
    memory_limit: &str,
) -> ResourceRequirements {
    let quantities = |cpu: &str, memory: &str| {
        BTreeMap::from([
            ("cpu".to_owned(), Quantity(cpu.to_owned())),
            ("memory".to_owned(), Quantity(memory.to_owned())),
        ])
    };
    ResourceRequirements {
        requests: Some(quantities(cpu_request, memory_request)),
        limits: Some(quantities(cpu_limit, memory_limit)),
        ..Default::default()
    }
}

/// The container half of the restricted Pod Security Standard, on every container.
pub fn restricted_container_security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            add: None,
        }),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        ..Default::default()
    }
}

fn pod_security_context(uid: i64) -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(uid),
        run_as_group: Some(uid),
        fs_group: Some(uid),
        // A resumed session's workspace is not re-chowned file by file when its root already
        // has the right group.
        fs_group_change_policy: Some("OnRootMismatch".to_owned()),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            localhost_profile: None,
        }),
        ..Default::default()
    }
}

/// The session's pod (DESIGN §3.1 step 3). `has_credentials`: the session has GitHub
/// credentials, so its credentials Secret (see [`desired_credentials_secret`]) is mounted.
pub fn desired_pod(
    session: &AgentSession,
    cfg: &BuildConfig,
    has_credentials: bool,
) -> Result<Pod, BuildError> {
    let name = session_name(session)?;
    let names = SessionNames::new(name);
    let spec = &session.spec;
    let overrides = spec.pod.clone().unwrap_or_default();

    let agent_image = spec
        .agent
        .image
        .as_deref()
        .or(cfg.default_agent_image.as_deref())
        .filter(|image| !image.trim().is_empty())
        .ok_or(BuildError::NoAgentImage)?;
    let clone_inputs = match &spec.repository {
        Some(repo) => {
            let (owner, repo_name) =
                repo.owner_and_name()
                    .ok_or_else(|| BuildError::InvalidRepository {
                        name: repo.name.clone(),
                    })?;
            Some(CloneInputs {
                url: format!("https://{}/{owner}/{repo_name}.git", cfg.github_host),
                repository: repo.name.clone(),
                git_ref: repo.git_ref.clone(),
                work_branch: session.effective_work_branch().unwrap_or_default(),
                depth: repo.depth,
            })
        }
        None => None,
    };
    let prompt = spec.prompt.as_deref();

    let mut meta = child_meta(session, &names.pod)?;
    let mut pod_labels = overrides.labels.clone();
    pod_labels.extend(child_labels(name));
    meta.labels = Some(pod_labels);
    meta.annotations = non_empty_map(pod_annotations(session, &overrides.annotations)?);

    let mut volumes = vec![
        Volume {
            name: WORKSPACE_VOLUME.to_owned(),
            ..workspace_volume_source(session, &names)
        },
        empty_dir(TMP_VOLUME),
        empty_dir(HOME_VOLUME),
    ];
    if has_credentials {
        volumes.push(Volume {
            name: GITHUB_VOLUME.to_owned(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(names.credentials_secret.clone()),
                // A refresh or revocation that removes the Secret must not wedge the pod.
                optional: Some(true),
                default_mode: Some(0o440),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    if prompt.is_some() {
        volumes.push(Volume {
            name: PROMPT_VOLUME.to_owned(),
            downward_api: Some(DownwardAPIVolumeSource {
                items: Some(vec![DownwardAPIVolumeFile {
                    path: "prompt".to_owned(),
                    field_ref: Some(prompt_field()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        });
    }

    let base_mounts = vec![
        mount(WORKSPACE_VOLUME, WORKSPACE_DIR, false),
        mount(TMP_VOLUME, TMP_DIR, false),
        mount(HOME_VOLUME, HOME_DIR, false),
    ];
    let mut git_mounts = base_mounts.clone();
    if has_credentials {
        git_mounts.push(mount(GITHUB_VOLUME, GITHUB_DIR, true));
    }

    let init_containers = clone_inputs.as_ref().map(|inputs| {
        vec![clone_container(
            inputs,
            cfg,
            has_credentials,
            spec.effective_resources(),
            git_mounts.clone(),
        )]
    });

    let mut agent_mounts = git_mounts;
    if prompt.is_some() {
        agent_mounts.push(mount(PROMPT_VOLUME, PROMPT_DIR, true));
    }
    let mut containers = vec![Container {
        name: AGENT_CONTAINER.to_owned(),
        image: Some(agent_image.to_owned()),
        command: non_empty(spec.agent.command.clone()),
        args: non_empty(spec.agent.args.clone()),
        working_dir: Some(WORKSPACE_DIR.to_owned()),
        ports: Some(vec![
            tcp_port(AGENT_PORT_NAME, spec.effective_port()),
            tcp_port(METRICS_PORT_NAME, spec.effective_metrics_port()),
        ]),
        env: non_empty(agent_env(session, clone_inputs.as_ref(), has_credentials)?),
        env_from: non_empty(spec.agent.env_from.clone()),
        resources: Some(spec.effective_resources()),
        readiness_probe: Some(Probe {
            http_get: Some(http_get("/status", AGENT_PORT_NAME)),
            period_seconds: Some(5),
            timeout_seconds: Some(3),
            ..Default::default()
        }),
        liveness_probe: Some(Probe {
            http_get: Some(http_get("/status", AGENT_PORT_NAME)),
            initial_delay_seconds: Some(30),
            period_seconds: Some(10),
            timeout_seconds: Some(5),
            failure_threshold: Some(3),
            ..Default::default()
        }),
        volume_mounts: Some(agent_mounts),
        security_context: Some(restricted_container_security_context()),
        ..Default::default()
    }];
    if let Some(editor) = spec.editor.as_ref().filter(|e| e.enabled) {
        let image = editor
            .image
            .clone()
            .unwrap_or_else(|| cfg.default_editor_image.clone());
        containers.push(Container {
            name: EDITOR_CONTAINER.to_owned(),
            image: Some(image),
            args: Some(vec![
                "--bind-addr".to_owned(),
                format!("0.0.0.0:{}", editor.port),
                // The password comes from the session's own Secret `<name>-editor`.
                "--auth".to_owned(),
                "password".to_owned(),
                "--disable-telemetry".to_owned(),
                WORKSPACE_DIR.to_owned(),
            ]),
            working_dir: Some(WORKSPACE_DIR.to_owned()),
            ports: Some(vec![tcp_port(EDITOR_PORT_NAME, editor.port)]),
            env: Some(vec![
                env("HOME", HOME_DIR),
                EnvVar {
                    name: "PASSWORD".to_owned(),
                    value_from: Some(EnvVarSource {
                        secret_key_ref: Some(SecretKeySelector {
                            name: names.editor_secret.clone(),
                            key: EDITOR_PASSWORD_KEY.to_owned(),
                            optional: Some(false),
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ]),
            resources: Some(resources("100m", "256Mi", "1", "1Gi")),
            readiness_probe: Some(Probe {
                http_get: Some(http_get("/healthz", EDITOR_PORT_NAME)),
                period_seconds: Some(10),
                timeout_seconds: Some(3),
                ..Default::default()
            }),
            volume_mounts: Some(base_mounts),
            security_context: Some(restricted_container_security_context()),
            ..Default::default()
        });
    }

    let mut pull_secret_names = BTreeSet::new();
    let image_pull_secrets: Vec<LocalObjectReference> = overrides
        .image_pull_secrets
        .iter()
        .filter(|s| pull_secret_names.insert(s.name.clone()))
        .cloned()
        .collect();

    Ok(Pod {
        metadata: meta,
        spec: Some(PodSpec {
            restart_policy: Some("Never".to_owned()),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            service_account_name: overrides.service_account_name,
            node_selector: non_empty_map(overrides.node_selector),
            tolerations: non_empty(overrides.tolerations),
            affinity: overrides.affinity,
            priority_class_name: overrides.priority_class_name,
            runtime_class_name: overrides.runtime_class_name,
            image_pull_secrets: non_empty(image_pull_secrets),
            security_context: Some(pod_security_context(spec.effective_run_as_user())),
            init_containers,
            containers,
            volumes: Some(volumes),
            ..Default::default()
        }),
        status: None,
    })
}

/// What the `clone` init container needs, all passed as environment variables.
struct CloneInputs {
    url: String,
    repository: String,
    git_ref: Option<String>,
    work_branch: String,
    depth: Option<i32>,
}

fn clone_container(
    inputs: &CloneInputs,
    cfg: &BuildConfig,
    has_credentials: bool,
    resources: ResourceRequirements,
    volume_mounts: Vec<VolumeMount>,
) -> Container {
    let mut env_vars = vec![
        env("HOME", HOME_DIR),
        // Fail instead of waiting for a password nobody will type.
        env("GIT_TERMINAL_PROMPT", "0"),
        env("CCPLANT_REPO_URL", inputs.url.clone()),
    ];
    if let Some(git_ref) = &inputs.git_ref {
        env_vars.push(env("CCPLANT_REF", git_ref.clone()));
    }
    env_vars.push(env("CCPLANT_WORK_BRANCH", inputs.work_branch.clone()));
    if let Some(depth) = inputs.depth {
        env_vars.push(env("CCPLANT_DEPTH", depth.to_string()));
    }
    if has_credentials {
        env_vars.push(env("CCPLANT_GITHUB_TOKEN_FILE", TOKEN_FILE));
    }
    Container {
        name: CLONE_CONTAINER.to_owned(),
        image: Some(cfg.git_image.clone()),
        command: Some(vec!["/bin/sh".to_owned(), "-c".to_owned()]),
        args: Some(vec![CLONE_SCRIPT.to_owned()]),
        working_dir: Some(WORKSPACE_DIR.to_owned()),
        env: Some(env_vars),
        // An init container's request never adds to the pod's: the pod reserves the larger of
        // the init containers' and the sum of the app containers'. Giving the clone the
        // agent's resources therefore costs nothing and scales with what the user asked for.
        resources: Some(resources),
        volume_mounts: Some(volume_mounts),
        security_context: Some(restricted_container_security_context()),
        // git's last lines ("repository not found", ...) become the container's termination
        // message, which observe_pod puts into the session's status. The token is never
        // printed, so the log is safe to surface.
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        ..Default::default()
    }
}

fn empty_dir(name: &str) -> Volume {
    Volume {
        name: name.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    }
}

/// The workspace: the session's PVC when `spec.workspace.size` is set, else an emptyDir that
/// lives as long as the pod.
fn workspace_volume_source(session: &AgentSession, names: &SessionNames) -> Volume {
    if has_workspace_volume(session) {
        Volume {
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: names.workspace_pvc.clone(),
                read_only: None,
            }),
            ..Default::default()
        }
    } else {
        Volume {
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        }
    }
}

/// True when the session asks for a workspace PVC (`spec.workspace.size`).
pub fn has_workspace_volume(session: &AgentSession) -> bool {
    session
        .spec
        .workspace
        .as_ref()
        .is_some_and(|w| w.size.is_some())
}

fn prompt_field() -> ObjectFieldSelector {
    ObjectFieldSelector {
        api_version: None,
        field_path: format!("metadata.annotations['{PROMPT_ANNOTATION}']"),
    }
}

/// spec.pod.annotations, then ours (they win): Prometheus scraping and the prompt.
fn pod_annotations(
    session: &AgentSession,
    user: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, BuildError> {
    let mut annotations = user.clone();
    annotations.remove(PROMPT_ANNOTATION);
    annotations.insert("prometheus.io/scrape".to_owned(), "true".to_owned());
    annotations.insert(
        "prometheus.io/port".to_owned(),
        session.spec.effective_metrics_port().to_string(),
    );
    annotations.insert("prometheus.io/path".to_owned(), "/metrics".to_owned());
    if let Some(prompt) = &session.spec.prompt {
        annotations.insert(PROMPT_ANNOTATION.to_owned(), prompt.clone());
    }
    let bytes = annotations.iter().map(|(k, v)| k.len() + v.len()).sum();
    if bytes > MAX_ANNOTATIONS_BYTES {
        return Err(BuildError::AnnotationsTooLarge { bytes });
    }
    Ok(annotations)
}

/// The agent's environment: spec.agent.env, then the operator's variables, which win: a user
/// entry with the same name is dropped (server-side apply refuses duplicate names, and the
/// later entry would win at run time anyway). Duplicates within spec.agent.env keep the last.
fn agent_env(
    session: &AgentSession,
    clone: Option<&CloneInputs>,
    has_credentials: bool,
) -> Result<Vec<EnvVar>, BuildError> {
    let spec = &session.spec;
    let mut ours = vec![
        env("CCPLANT_SESSION", session_name(session)?),
        env("CCPLANT_AGENT_TYPE", spec.agent.type_.as_str()),
        env("HOME", HOME_DIR),
        // agentapi's settings: listen on the agent port, and answer requests addressed to the
        // pod IP or the Service name (its default admits only localhost host headers); the
        // NetworkPolicy decides who reaches it.
        env("AGENTAPI_PORT", spec.effective_port().to_string()),
        env("AGENTAPI_ALLOWED_HOSTS", "*"),
    ];
    if let Some(prompt) = &spec.prompt {
        // A longer environment string would keep the container from starting; the prompt
        // file (and the agent API) still carry it.
        if "AGENT_PROMPT=".len() + prompt.len() < MAX_ENV_STRING_BYTES {
            ours.push(EnvVar {
                name: "AGENT_PROMPT".to_owned(),
                value: None,
                value_from: Some(EnvVarSource {
                    field_ref: Some(prompt_field()),
                    ..Default::default()
                }),
            });
        }
        ours.push(env("CCPLANT_PROMPT_FILE", PROMPT_FILE));
    }
    if let Some(clone) = clone {
        ours.push(env("CCPLANT_REPOSITORY", clone.repository.clone()));
        ours.push(env("CCPLANT_WORK_BRANCH", clone.work_branch.clone()));
    }
    if has_credentials {
        ours.push(env("CCPLANT_GITHUB_TOKEN_FILE", TOKEN_FILE));
    }
    if let Some(endpoint) = spec
        .telemetry
        .as_ref()
        .and_then(|t| t.otlp_endpoint.as_deref())
    {
        ours.push(env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint));
        ours.push(env(
            "OTEL_SERVICE_NAME",
            format!("ccplant-session-{}", session_name(session)?),
        ));
    }

    let taken: BTreeSet<&str> = ours.iter().map(|e| e.name.as_str()).collect();
    let user = &spec.agent.env;
    let mut merged: Vec<EnvVar> = user
        .iter()
        .enumerate()
        .filter(|(i, e)| {
            !taken.contains(e.name.as_str())
                && !user[i + 1..].iter().any(|later| later.name == e.name)
        })
        .map(|(_, e)| e.clone())
        .collect();
    merged.extend(ours);
    Ok(merged)
}

/// `spec.clusterIP` of a headless Service.
pub const HEADLESS: &str = "None";

/// The headless Service in front of the agent API (port `agent`) and the editor (port `editor`,
/// when enabled): its DNS name resolves to the pod's IP, and the ports are the container ports,
/// so nothing is lost against a ClusterIP Service, while no virtual IP is allocated and no
/// kube-proxy rule is programmed per session (thousands of sessions are thousands of Services).
pub fn desired_service(session: &AgentSession) -> Result<Service, BuildError> {
    let name = session_name(session)?;
    let names = SessionNames::new(name);
    let service_port = |port_name: &str, port: i32| ServicePort {
        name: Some(port_name.to_owned()),
        port,
        target_port: Some(IntOrString::String(port_name.to_owned())),
        protocol: Some("TCP".to_owned()),
        ..Default::default()
    };
    let mut ports = vec![service_port(AGENT_PORT_NAME, session.spec.effective_port())];
    if let Some(port) = session.spec.effective_editor_port() {
        ports.push(service_port(EDITOR_PORT_NAME, port));
    }
    Ok(Service {
        metadata: child_meta(session, &names.service)?,
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            cluster_ip: Some(HEADLESS.to_owned()),
            selector: Some(selector_labels(name)),
            ports: Some(ports),
            ..Default::default()
        }),
        status: None,
    })
}

/// The workspace volume claim, when `spec.workspace.size` is set: ReadWriteOnce, on
/// `spec.workspace.storageClassName` (else the cluster's default StorageClass).
pub fn desired_pvc(session: &AgentSession) -> Result<Option<PersistentVolumeClaim>, BuildError> {
    let Some(workspace) = &session.spec.workspace else {
        return Ok(None);
    };
    let Some(size) = workspace.size_quantity() else {
        return Ok(None);
    };
    let names = SessionNames::new(session_name(session)?);
    Ok(Some(PersistentVolumeClaim {
        metadata: child_meta(session, &names.workspace_pvc)?,
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
            storage_class_name: workspace.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".to_owned(), size)])),
                limits: None,
            }),
            ..Default::default()
        }),
        status: None,
    }))
}

/// With `spec.network.isolate` (the default), a NetworkPolicy admitting ingress to the session
/// pod only from the operator's namespace and from namespaces labelled
/// `ccplant.io/access=true`. Egress is not restricted (the agent needs its model API and
/// GitHub).
pub fn desired_network_policy(
    session: &AgentSession,
    cfg: &BuildConfig,
) -> Result<Option<NetworkPolicy>, BuildError> {
    if !session.spec.network.isolate {
        return Ok(None);
    }
    let name = session_name(session)?;
    let names = SessionNames::new(name);
    let match_labels = |labels: BTreeMap<String, String>| LabelSelector {
        match_labels: Some(labels),
        match_expressions: None,
    };
    // The operator's pods: in its namespace and with its labels (both selectors in one peer:
    // both must match).
    let operator = NetworkPolicyPeer {
        namespace_selector: Some(match_labels(BTreeMap::from([(
            NAMESPACE_NAME_LABEL.to_owned(),
            cfg.operator_namespace.clone(),
        )]))),
        pod_selector: Some(match_labels(cfg.operator_pod_labels.clone())),
        ..Default::default()
    };
    Ok(Some(NetworkPolicy {
        metadata: child_meta(session, &names.network_policy)?,
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(match_labels(selector_labels(name))),
            policy_types: Some(vec!["Ingress".to_owned()]),
            // Only the agent API, only for the operator. The editor and the agent's metrics
            // are reached through `kubectl port-forward` (the kubelet, not the pod network).
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![operator]),
                ports: Some(vec![NetworkPolicyPort {
                    port: Some(IntOrString::Int(session.spec.effective_port())),
                    protocol: Some("TCP".to_owned()),
                    end_port: None,
                }]),
            }]),
            egress: None,
        }),
    }))
}

/// Key of the editor's password in the Secret `<name>-editor`.
pub const EDITOR_PASSWORD_KEY: &str = "password";

/// The Secret `<name>-editor` holding the editor's login `password` (generated by the caller:
/// building stays deterministic). Created once, never changed.
pub fn desired_editor_secret(session: &AgentSession, password: &str) -> Result<Secret, BuildError> {
    let names = SessionNames::new(session_name(session)?);
    Ok(Secret {
        metadata: child_meta(session, &names.editor_secret)?,
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([(
            EDITOR_PASSWORD_KEY.to_owned(),
            ByteString(password.as_bytes().to_vec()),
        )])),
        ..Default::default()
    })
}

/// The session's credentials Secret (`<name>-github`, key `token`), mounted into the pod;
/// `annotations` say what kind of token it is (see `credentials::Issued::annotations`).
/// The returned object holds the token: never log it or put it in an event.
pub fn desired_credentials_secret(
    session: &AgentSession,
    token: &str,
    annotations: BTreeMap<String, String>,
) -> Result<Secret, BuildError> {
    let names = SessionNames::new(session_name(session)?);
    let mut metadata = child_meta(session, &names.credentials_secret)?;
    metadata.annotations = non_empty_map(annotations);
    Ok(Secret {
        metadata,
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([(
            secret_keys::TOKEN.to_owned(),
            ByteString(token.as_bytes().to_vec()),
        )])),
        ..Default::default()
    })
}

/// In-cluster URL of the agent API: `http://<service>.<namespace>.svc:<port>`. `None` for an
/// object without a namespace.
pub fn endpoint(session: &AgentSession, names: &SessionNames) -> Option<String> {
    let namespace = session.metadata.namespace.as_deref()?;
    Some(format!(
        "http://{}.{namespace}.svc:{}",
        names.service,
        session.spec.effective_port()
    ))
}

/// In-cluster URL of the editor, when `spec.editor.enabled`.
pub fn editor_url(session: &AgentSession, names: &SessionNames) -> Option<String> {
    let namespace = session.metadata.namespace.as_deref()?;
    let port = session.spec.effective_editor_port()?;
    Some(format!("http://{}.{namespace}.svc:{port}", names.service))
}

#[cfg(test)]
mod tests {
    use std::{
        error::Error,
        path::{Path, PathBuf},
        process::Command,
    };

    use ccplant_api::AgentSession;
    use serde_json::json;

    use super::*;

    type TestResult = Result<(), Box<dyn Error>>;

    const TOKEN: &str = "ghs_16C7e42F292c6912E7710c838347Ae178B4a";

    fn cfg() -> BuildConfig {
        BuildConfig {
            default_agent_image: Some("ghcr.io/ccplant/agent:default".to_owned()),
            ..BuildConfig::new("ccplant-system")
        }
    }

    fn session(spec: serde_json::Value) -> AgentSession {
        serde_json::from_value(json!({
            "apiVersion": "ccplant.io/v1alpha1",
            "kind": "AgentSession",
            "metadata": {
                "name": "fix-login",
                "namespace": "team-a",
                "uid": "4b4c7a39-6a61-4d0e-9a57-2f7d0a3b1c22",
                "generation": 1,
            },
            "spec": spec,
        }))
        .expect("a valid AgentSession")
    }

    fn bare_session() -> AgentSession {
        session(json!({}))
    }

    /// Every field that shapes the pod, set.
    fn full_session() -> AgentSession {
        session(json!({
            "agent": {
                "type": "codex",
                "image": "ghcr.io/ccplant/codex-agent:1.4.0",
                "command": ["agentapi"],
                "args": ["server", "--port", "4000", "--", "codex"],
                "port": 4000,
                "env": [
                    {"name": "LOG_LEVEL", "value": "info"},
                    {"name": "LOG_LEVEL", "value": "debug"},
                    {"name": "HOME", "value": "/root"},
                    {"name": "MODEL", "valueFrom": {"configMapKeyRef": {"name": "agent-config", "key": "model"}}},
                ],
                "envFrom": [{"secretRef": {"name": "openai"}}],
                "resources": {
                    "requests": {"cpu": "1", "memory": "1Gi"},
                    "limits": {"cpu": "4", "memory": "8Gi"},
                },
            },
            "prompt": "Fix the login bug from issue #42; run `make test` before pushing.",
            "messages": ["also add a regression test"],
            "completion": {"mode": "WhenIdle", "idleFor": "90s"},
            "repository": {
                "name": "ccplant-demo/hello-world",
                "ref": "v1.2.0",
                "workBranch": "fix/login",
                "depth": 1,
            },
            "github": {
                "secretRef": {"name": "github-app"},
                "permissions": {"contents": "write", "pull_requests": "write"},
            },
            "lifetime": {"maxDuration": "2h", "idleTimeout": "30m", "ttlAfterFinished": "1h"},
            "workspace": {"size": "10Gi", "storageClassName": "fast-ssd"},
            "editor": {"enabled": true, "image": "codercom/code-server:4.100.0", "port": 8443},
            "telemetry": {"metricsPort": 9100, "otlpEndpoint": "http://otel-collector.observability:4317"},
            "pod": {
                "labels": {"team": "a", "ccplant.io/session": "spoofed", "app.kubernetes.io/managed-by": "me"},
                "annotations": {"owner": "alice", "prometheus.io/scrape": "false", "ccplant.io/prompt": "spoofed"},
                "nodeSelector": {"pool": "agents"},
                "tolerations": [{"key": "agents", "operator": "Exists", "effect": "NoSchedule"}],
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": [
                        {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]}]}}},
                "priorityClassName": "agents",
                "runtimeClassName": "gvisor",
                "serviceAccountName": "agent",
                "imagePullSecrets": [{"name": "regcred"}, {"name": "regcred"}],
                "securityContext": {"runAsUser": 1000},
            },
            "network": {"isolate": true},
        }))
    }

    fn testdata(file: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/agent_session/testdata")
            .join(file)
    }

    /// Compares `actual` with the golden file; `UPDATE_GOLDEN=1` rewrites the file instead.
    fn assert_golden(file: &str, actual: &str) -> TestResult {
        let path = testdata(file);
        if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
            std::fs::create_dir_all(path.parent().ok_or("no parent")?)?;
            std::fs::write(&path, actual)?;
            return Ok(());
        }
        let expected = std::fs::read_to_string(&path).map_err(|e| {
            format!(
                "{}: {e}; run `UPDATE_GOLDEN=1 cargo test -p ccplant-operator --lib agent_session` to create it",
                path.display()
            )
        })?;
        if expected != actual {
            panic!(
                "{} differs from what the builder produces (- golden, + actual):\n{}\n\
                 If the change is intended, run `UPDATE_GOLDEN=1 cargo test -p ccplant-operator \
                 --lib agent_session` and review the diff of the golden file.",
                path.display(),
                line_diff(&expected, actual)
            );
        }
        Ok(())
    }

    /// A unified-style line diff (longest common subsequence), changed lines with 2 of context.
    fn line_diff(expected: &str, actual: &str) -> String {
        let a: Vec<&str> = expected.lines().collect();
        let b: Vec<&str> = actual.lines().collect();
        let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
        for i in (0..a.len()).rev() {
            for j in (0..b.len()).rev() {
                lcs[i][j] = if a[i] == b[j] {
                    lcs[i + 1][j + 1] + 1
                } else {
                    lcs[i + 1][j].max(lcs[i][j + 1])
                };
            }
        }
        let mut ops: Vec<(char, usize, &str)> = Vec::new();
        let (mut i, mut j) = (0, 0);
        while i < a.len() || j < b.len() {
            if i < a.len() && j < b.len() && a[i] == b[j] {
                ops.push((' ', i + 1, a[i]));
                i += 1;
                j += 1;
            } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
                ops.push(('-', i + 1, a[i]));
                i += 1;
            } else {
                ops.push(('+', j + 1, b[j]));
                j += 1;
            }
        }
        let near_change = |k: usize| {
            ops[k.saturating_sub(2)..(k + 3).min(ops.len())]
                .iter()
                .any(|(op, _, _)| *op != ' ')
        };
        let mut out = String::new();
        let mut skipped = false;
        for (k, (op, line, text)) in ops.iter().enumerate() {
            if near_change(k) {
                out.push_str(&format!("{op}{line:>5} {text}\n"));
                skipped = false;
            } else if !skipped {
                out.push_str("   ...\n");
                skipped = true;
            }
        }
        out
    }

    fn all_containers(pod: &Pod) -> Vec<&Container> {
        let spec = pod.spec.as_ref().expect("pod spec");
        spec.init_containers
            .iter()
            .flatten()
            .chain(spec.containers.iter())
            .collect()
    }

    fn container<'a>(pod: &'a Pod, name: &str) -> &'a Container {
        all_containers(pod)
            .into_iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no container {name}"))
    }

    fn env_value<'a>(c: &'a Container, name: &str) -> Option<&'a str> {
        c.env
            .iter()
            .flatten()
            .find(|e| e.name == name)
            .and_then(|e| e.value.as_deref())
    }

    fn env_names(c: &Container) -> Vec<&str> {
        c.env.iter().flatten().map(|e| e.name.as_str()).collect()
    }

    fn mounts(c: &Container) -> Vec<(&str, &str, bool)> {
        c.volume_mounts
            .iter()
            .flatten()
            .map(|m| {
                (
                    m.name.as_str(),
                    m.mount_path.as_str(),
                    m.read_only == Some(true),
                )
            })
            .collect()
    }

    #[test]
    fn golden_full_pod() -> TestResult {
        let pod = desired_pod(&full_session(), &cfg(), true)?;
        assert_golden("pod-full.golden.yaml", &serde_yaml::to_string(&pod)?)
    }

    #[test]
    fn golden_bare_pod() -> TestResult {
        let pod = desired_pod(&bare_session(), &cfg(), false)?;
        assert_golden("pod-bare.golden.yaml", &serde_yaml::to_string(&pod)?)
    }

    #[test]
    fn golden_full_children() -> TestResult {
        let s = full_session();
        let docs = [
            serde_yaml::to_string(&desired_service(&s)?)?,
            serde_yaml::to_string(&desired_pvc(&s)?.ok_or("pvc")?)?,
            serde_yaml::to_string(&desired_network_policy(&s, &cfg())?.ok_or("netpol")?)?,
        ];
        assert_golden("children-full.golden.yaml", &docs.join("---\n"))
    }

    #[test]
    fn golden_diff_names_the_changed_lines() {
        let diff = line_diff("a\nb\nc\nd\ne\nf\ng\n", "a\nb\nc\nX\ne\nf\ng\n");
        assert_eq!(
            diff,
            "   ...\n     2 b\n     3 c\n-    4 d\n+    4 X\n     5 e\n     6 f\n   ...\n"
        );
    }

    #[test]
    fn objects_carry_api_version_and_kind_and_no_status() -> TestResult {
        let s = full_session();
        let token_secret = desired_credentials_secret(&s, TOKEN, BTreeMap::new())?;
        let objects = [
            (
                serde_json::to_value(desired_pod(&s, &cfg(), true)?)?,
                "v1",
                "Pod",
            ),
            (serde_json::to_value(desired_service(&s)?)?, "v1", "Service"),
            (
                serde_json::to_value(desired_pvc(&s)?)?,
                "v1",
                "PersistentVolumeClaim",
            ),
            (
                serde_json::to_value(desired_network_policy(&s, &cfg())?)?,
                "networking.k8s.io/v1",
                "NetworkPolicy",
            ),
            (serde_json::to_value(token_secret)?, "v1", "Secret"),
        ];
        let owner = json!([{
            "apiVersion": "ccplant.io/v1alpha1",
            "kind": "AgentSession",
            "name": "fix-login",
            "uid": "4b4c7a39-6a61-4d0e-9a57-2f7d0a3b1c22",
            "controller": true,
            "blockOwnerDeletion": true,
        }]);
        for (object, api_version, kind) in objects {
            assert_eq!(object["apiVersion"], api_version, "{kind}");
            assert_eq!(object["kind"], kind);
            assert!(object.get("status").is_none(), "{kind} has a status");
            assert_eq!(object["metadata"]["namespace"], "team-a", "{kind}");
            assert_eq!(object["metadata"]["ownerReferences"], owner, "{kind}");
            let labels = &object["metadata"]["labels"];
            assert_eq!(labels["app.kubernetes.io/managed-by"], "ccplant", "{kind}");
            assert_eq!(labels["ccplant.io/session"], "fix-login", "{kind}");
            assert_eq!(
                labels["app.kubernetes.io/name"], "ccplant-session",
                "{kind}"
            );
        }
        Ok(())
    }

    #[test]
    fn pod_metadata_merges_user_labels_and_annotations_under_ours() -> TestResult {
        let pod = desired_pod(&full_session(), &cfg(), true)?;
        let labels = pod.metadata.labels.clone().ok_or("labels")?;
        assert_eq!(
            labels,
            BTreeMap::from([
                (
                    "app.kubernetes.io/managed-by".to_owned(),
                    "ccplant".to_owned()
                ),
                (
                    "app.kubernetes.io/name".to_owned(),
                    "ccplant-session".to_owned()
                ),
                ("ccplant.io/session".to_owned(), "fix-login".to_owned()),
                ("team".to_owned(), "a".to_owned()),
            ])
        );
        let annotations = pod.metadata.annotations.clone().ok_or("annotations")?;
        assert_eq!(annotations["owner"], "alice");
        assert_eq!(annotations["prometheus.io/scrape"], "true");
        assert_eq!(annotations["prometheus.io/port"], "9100");
        assert_eq!(annotations["prometheus.io/path"], "/metrics");
        assert_eq!(
            annotations[PROMPT_ANNOTATION],
            "Fix the login bug from issue #42; run `make test` before pushing."
        );
        assert_eq!(pod.metadata.name.as_deref(), Some("fix-login"));

        // Without a prompt a user-supplied prompt annotation is dropped, and there is no
        // prompt volume, mount or variable.
        let mut s = full_session();
        s.spec.prompt = None;
        let pod = desired_pod(&s, &cfg(), true)?;
        let annotations = pod.metadata.annotations.clone().ok_or("annotations")?;
        assert!(!annotations.contains_key(PROMPT_ANNOTATION));
        let agent = container(&pod, AGENT_CONTAINER);
        assert!(!env_names(agent).contains(&"AGENT_PROMPT"));
        assert!(!env_names(agent).contains(&"CCPLANT_PROMPT_FILE"));
        assert!(!mounts(agent).iter().any(|(n, _, _)| *n == PROMPT_VOLUME));
        let volumes = pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.clone())
            .ok_or("volumes")?;
        assert!(!volumes.iter().any(|v| v.name == PROMPT_VOLUME));
        Ok(())
    }

    #[test]
    fn pod_spec_settings_and_overrides() -> TestResult {
        let pod = desired_pod(&full_session(), &cfg(), true)?;
        let spec = pod.spec.as_ref().ok_or("spec")?;
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        assert_eq!(spec.automount_service_account_token, Some(false));
        assert_eq!(spec.enable_service_links, Some(false));
        assert_eq!(spec.service_account_name.as_deref(), Some("agent"));
        assert_eq!(spec.priority_class_name.as_deref(), Some("agents"));
        assert_eq!(spec.runtime_class_name.as_deref(), Some("gvisor"));
        assert_eq!(
            spec.node_selector,
            Some(BTreeMap::from([("pool".to_owned(), "agents".to_owned())]))
        );
        assert_eq!(spec.tolerations.as_ref().map(Vec::len), Some(1));
        assert!(
            spec.affinity
                .as_ref()
                .is_some_and(|a| a.node_affinity.is_some())
        );
        // Duplicates would make server-side apply fail (a list keyed by name).
        assert_eq!(
            spec.image_pull_secrets,
            Some(vec![LocalObjectReference {
                name: "regcred".to_owned()
            }])
        );
        let bare = desired_pod(&bare_session(), &cfg(), false)?;
        let bare_spec = bare.spec.as_ref().ok_or("spec")?;
        assert_eq!(bare_spec.service_account_name, None);
        assert_eq!(bare_spec.node_selector, None);
        assert_eq!(bare_spec.tolerations, None);
        assert_eq!(bare_spec.image_pull_secrets, None);
        assert_eq!(bare_spec.init_containers, None, "no repository, no clone");
        let names: Vec<&str> = bare_spec
            .containers
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(names, ["agent"], "no editor unless enabled");
        Ok(())
    }

    #[test]
    fn restricted_pod_security_standard_everywhere() -> TestResult {
        for (session, uid) in [(full_session(), 1000), (bare_session(), 999)] {
            let pod = desired_pod(&session, &cfg(), true)?;
            let psc = pod
                .spec
                .as_ref()
                .and_then(|s| s.security_context.clone())
                .ok_or("pod securityContext")?;
            assert_eq!(psc.run_as_non_root, Some(true));
            assert_eq!(psc.run_as_user, Some(uid));
            assert_eq!(psc.run_as_group, Some(uid));
            assert_eq!(psc.fs_group, Some(uid));
            assert_eq!(
                psc.seccomp_profile.map(|p| p.type_).as_deref(),
                Some("RuntimeDefault")
            );
            let containers = all_containers(&pod);
            assert!(!containers.is_empty());
            for c in containers {
                let sc = c
                    .security_context
                    .clone()
                    .ok_or("container securityContext")?;
                assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", c.name);
                assert_eq!(sc.read_only_root_filesystem, Some(true), "{}", c.name);
                assert_eq!(sc.run_as_non_root, Some(true), "{}", c.name);
                assert_eq!(sc.privileged, None, "{}", c.name);
                let caps = sc.capabilities.ok_or("capabilities")?;
                assert_eq!(caps.drop, Some(vec!["ALL".to_owned()]), "{}", c.name);
                assert_eq!(caps.add, None, "{}", c.name);
                // Writable places exist for what a read-only root filesystem forbids.
                let m = mounts(c);
                assert!(m.contains(&("tmp", "/tmp", false)), "{}", c.name);
                assert!(m.contains(&("home", "/home/agent", false)), "{}", c.name);
                assert!(
                    m.contains(&("workspace", "/workspace", false)),
                    "{}",
                    c.name
                );
                assert_eq!(c.working_dir.as_deref(), Some("/workspace"), "{}", c.name);
                assert!(c.resources.is_some(), "{} has resources", c.name);
            }
        }
        Ok(())
    }

    #[test]
    fn agent_container_defaults() -> TestResult {
        let pod = desired_pod(&bare_session(), &cfg(), false)?;
        let agent = container(&pod, AGENT_CONTAINER);
        assert_eq!(
            agent.image.as_deref(),
            Some("ghcr.io/ccplant/agent:default")
        );
        assert_eq!(agent.command, None);
        assert_eq!(agent.args, None);
        assert_eq!(
            agent.resources,
            Some(ccplant_api::default_agent_resources())
        );
        let ports: Vec<(Option<&str>, i32)> = agent
            .ports
            .iter()
            .flatten()
            .map(|p| (p.name.as_deref(), p.container_port))
            .collect();
        assert_eq!(ports, [(Some("agent"), 3284), (Some("metrics"), 9464)]);
        let readiness = agent.readiness_probe.clone().ok_or("readiness")?;
        assert_eq!(
            readiness.http_get,
            Some(HTTPGetAction {
                path: Some("/status".to_owned()),
                port: IntOrString::String("agent".to_owned()),
                ..Default::default()
            })
        );
        assert_eq!(readiness.period_seconds, Some(5));
        assert_eq!(readiness.timeout_seconds, Some(3));
        let liveness = agent.liveness_probe.clone().ok_or("liveness")?;
        assert_eq!(liveness.http_get, readiness.http_get);
        assert_eq!(liveness.initial_delay_seconds, Some(30));
        assert_eq!(liveness.period_seconds, Some(10));
        assert_eq!(liveness.timeout_seconds, Some(5));
        assert_eq!(liveness.failure_threshold, Some(3));
        assert_eq!(
            env_names(agent),
            [
                "CCPLANT_SESSION",
                "CCPLANT_AGENT_TYPE",
                "HOME",
                "AGENTAPI_PORT",
                "AGENTAPI_ALLOWED_HOSTS"
            ]
        );
        assert_eq!(env_value(agent, "CCPLANT_AGENT_TYPE"), Some("claude"));
        assert_eq!(env_value(agent, "AGENTAPI_PORT"), Some("3284"));
        assert_eq!(env_value(agent, "AGENTAPI_ALLOWED_HOSTS"), Some("*"));
        assert_eq!(env_value(agent, "HOME"), Some("/home/agent"));
        let volumes = pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.clone())
            .ok_or("volumes")?;
        let workspace = volumes
            .iter()
            .find(|v| v.name == "workspace")
            .ok_or("workspace")?;
        assert!(workspace.empty_dir.is_some() && workspace.persistent_volume_claim.is_none());
        let annotations = pod.metadata.annotations.clone().ok_or("annotations")?;
        assert_eq!(annotations["prometheus.io/port"], "9464");
        Ok(())
    }

    #[test]
    fn agent_env_user_first_then_ours_without_duplicates() -> TestResult {
        let pod = desired_pod(&full_session(), &cfg(), true)?;
        let agent = container(&pod, AGENT_CONTAINER);
        assert_eq!(
            env_names(agent),
            [
                "LOG_LEVEL",
                "MODEL",
                "CCPLANT_SESSION",
                "CCPLANT_AGENT_TYPE",
                "HOME",
                "AGENTAPI_PORT",
                "AGENTAPI_ALLOWED_HOSTS",
                "AGENT_PROMPT",
                "CCPLANT_PROMPT_FILE",
                "CCPLANT_REPOSITORY",
                "CCPLANT_WORK_BRANCH",
                "CCPLANT_GITHUB_TOKEN_FILE",
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "OTEL_SERVICE_NAME",
            ]
        );
        assert_eq!(
            env_value(agent, "LOG_LEVEL"),
            Some("debug"),
            "the last one wins"
        );
        assert_eq!(env_value(agent, "HOME"), Some("/home/agent"), "ours win");
        assert_eq!(env_value(agent, "CCPLANT_WORK_BRANCH"), Some("fix/login"));
        assert_eq!(
            env_value(agent, "CCPLANT_GITHUB_TOKEN_FILE"),
            Some("/var/run/ccplant/github/token")
        );
        assert_eq!(
            env_value(agent, "OTEL_SERVICE_NAME"),
            Some("ccplant-session-fix-login")
        );
        let prompt = agent
            .env
            .iter()
            .flatten()
            .find(|e| e.name == "AGENT_PROMPT")
            .and_then(|e| e.value_from.clone())
            .and_then(|v| v.field_ref)
            .ok_or("AGENT_PROMPT from the downward API")?;
        assert_eq!(
            prompt.field_path,
            "metadata.annotations['ccplant.io/prompt']"
        );
        assert_eq!(agent.env_from.as_ref().map(Vec::len), Some(1));
        Ok(())
    }

    #[test]
    fn a_huge_prompt_is_a_file_only_and_oversized_annotations_are_refused() -> TestResult {
        let mut s = bare_session();
        s.spec.prompt = Some("é".repeat(65_536)); // 128 KiB: too long for one env string
        let pod = desired_pod(&s, &cfg(), false)?;
        let agent = container(&pod, AGENT_CONTAINER);
        assert!(!env_names(agent).contains(&"AGENT_PROMPT"));
        assert_eq!(env_value(agent, "CCPLANT_PROMPT_FILE"), Some(PROMPT_FILE));

        s.spec.pod = Some(Box::new(ccplant_api::PodOverrides {
            annotations: BTreeMap::from([("big".to_owned(), "x".repeat(200_000))]),
            ..Default::default()
        }));
        let err = desired_pod(&s, &cfg(), false)
            .err()
            .ok_or("expected an error")?;
        assert!(
            matches!(err, BuildError::AnnotationsTooLarge { .. }),
            "{err}"
        );
        assert!(err.is_invalid_spec());
        assert!(
            err.to_string().starts_with("the pod's annotations"),
            "{err}"
        );
        Ok(())
    }

    #[test]
    fn volumes_and_mounts() -> TestResult {
        let pod = desired_pod(&full_session(), &cfg(), true)?;
        let volumes = pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.clone())
            .ok_or("volumes")?;
        let names: Vec<&str> = volumes.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["workspace", "tmp", "home", "github", "prompt"]);
        assert_eq!(
            volumes[0]
                .persistent_volume_claim
                .as_ref()
                .map(|p| p.claim_name.as_str()),
            Some("fix-login-workspace")
        );
        assert_eq!(
            volumes[3].secret,
            Some(SecretVolumeSource {
                secret_name: Some("fix-login-github".to_owned()),
                optional: Some(true),
                default_mode: Some(0o440),
                ..Default::default()
            })
        );
        let github = ("github", "/var/run/ccplant/github", true);
        let prompt = ("prompt", "/var/run/ccplant/prompt", true);
        assert!(mounts(container(&pod, AGENT_CONTAINER)).contains(&github));
        assert!(mounts(container(&pod, AGENT_CONTAINER)).contains(&prompt));
        assert!(mounts(container(&pod, CLONE_CONTAINER)).contains(&github));
        assert!(!mounts(container(&pod, CLONE_CONTAINER)).contains(&prompt));
        assert_eq!(
            mounts(container(&pod, EDITOR_CONTAINER)),
            [
                ("workspace", "/workspace", false),
                ("tmp", "/tmp", false),
                ("home", "/home/agent", false)
            ],
            "the editor never sees the token"
        );

        // Without credentials: no Secret volume, no token file anywhere.
        let pod = desired_pod(&full_session(), &cfg(), false)?;
        let volumes = pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.clone())
            .ok_or("volumes")?;
        assert!(!volumes.iter().any(|v| v.name == "github"));
        for c in all_containers(&pod) {
            assert!(
                !mounts(c).iter().any(|(n, _, _)| *n == "github"),
                "{}",
                c.name
            );
            assert!(
                !env_names(c).contains(&"CCPLANT_GITHUB_TOKEN_FILE"),
                "{}",
                c.name
            );
        }
        Ok(())
    }

    #[test]
    fn the_token_is_only_ever_a_file() -> TestResult {
        let s = full_session();
        let names = SessionNames::for_session(&s);
        let secret = desired_credentials_secret(&s, TOKEN, BTreeMap::new())?;
        assert_eq!(secret.metadata.name.as_deref(), Some("fix-login-github"));
        assert_eq!(secret.type_.as_deref(), Some("Opaque"));
        assert_eq!(
            secret.data,
            Some(BTreeMap::from([(
                "token".to_owned(),
                ByteString(TOKEN.as_bytes().to_vec())
            )]))
        );
        assert_eq!(secret.string_data, None);

        let pod = desired_pod(&s, &cfg(), true)?;
        let pod_yaml = serde_yaml::to_string(&pod)?;
        assert!(!pod_yaml.contains(TOKEN));
        for c in all_containers(&pod) {
            for e in c.env.iter().flatten() {
                let from = e.value_from.as_ref();
                let secret = from.and_then(|f| f.secret_key_ref.as_ref());
                // The one Secret an env var reads: the editor's own login password.
                let editor_password = c.name == EDITOR_CONTAINER
                    && e.name == "PASSWORD"
                    && secret.is_some_and(|k| k.name == "fix-login-editor" && k.key == "password");
                assert!(
                    secret.is_none() || editor_password,
                    "{}: env {} reads a Secret",
                    c.name,
                    e.name
                );
                let value = e.value.as_deref().unwrap_or_default();
                assert!(
                    !value.contains("x-access-token") && !value.contains('@'),
                    "{}",
                    e.name
                );
            }
            for from in c.env_from.iter().flatten() {
                let secret = from.secret_ref.as_ref().map(|r| r.name.as_str());
                assert_ne!(
                    secret,
                    Some(names.credentials_secret.as_str()),
                    "{}",
                    c.name
                );
            }
            for arg in c.command.iter().flatten().chain(c.args.iter().flatten()) {
                assert!(!arg.contains(TOKEN));
                // No credentials in a URL ("https://x-access-token:<token>@github.com/..."):
                // the only URL-like text is the script's host parsing and helper scope.
                assert!(!arg.contains("x-access-token:"), "{}", c.name);
                let rest = arg
                    .replace("${CCPLANT_REPO_URL#*://}", "")
                    .replace("credential.https://$host.helper", "");
                assert!(!rest.contains("://"), "{}: a URL in an argument", c.name);
            }
        }
        Ok(())
    }

    #[test]
    fn clone_container_takes_its_inputs_from_the_environment_only() -> TestResult {
        let other_cfg = BuildConfig {
            github_host: "github.example.com".to_owned(),
            git_image: "registry.local/git:2".to_owned(),
            ..cfg()
        };
        let full = desired_pod(&full_session(), &cfg(), true)?;
        let clone = container(&full, CLONE_CONTAINER);
        assert_eq!(clone.image.as_deref(), Some(DEFAULT_GIT_IMAGE));
        assert_eq!(
            clone.command,
            Some(vec!["/bin/sh".to_owned(), "-c".to_owned()])
        );
        assert_eq!(clone.args, Some(vec![CLONE_SCRIPT.to_owned()]));
        assert_eq!(
            env_value(clone, "CCPLANT_REPO_URL"),
            Some("https://github.com/ccplant-demo/hello-world.git")
        );
        assert_eq!(env_value(clone, "CCPLANT_REF"), Some("v1.2.0"));
        assert_eq!(env_value(clone, "CCPLANT_WORK_BRANCH"), Some("fix/login"));
        assert_eq!(env_value(clone, "CCPLANT_DEPTH"), Some("1"));
        assert_eq!(env_value(clone, "GIT_TERMINAL_PROMPT"), Some("0"));
        assert_eq!(env_value(clone, "HOME"), Some("/home/agent"));
        assert_eq!(
            env_value(clone, "CCPLANT_GITHUB_TOKEN_FILE"),
            Some(TOKEN_FILE)
        );
        assert_eq!(
            clone.resources,
            Some(full_session().spec.effective_resources())
        );
        assert_eq!(
            clone.termination_message_policy.as_deref(),
            Some("FallbackToLogsOnError")
        );

        // A different session and operator: same script, different environment.
        let mut s = bare_session();
        s.metadata.name = Some("other".to_owned());
        s.spec.repository = Some(ccplant_api::RepositorySpec {
            name: "acme/widgets".to_owned(),
            git_ref: None,
            work_branch: None,
            depth: None,
        });
        let pod = desired_pod(&s, &other_cfg, false)?;
        let clone = container(&pod, CLONE_CONTAINER);
        assert_eq!(clone.image.as_deref(), Some("registry.local/git:2"));
        assert_eq!(clone.args, Some(vec![CLONE_SCRIPT.to_owned()]));
        assert_eq!(
            env_value(clone, "CCPLANT_REPO_URL"),
            Some("https://github.example.com/acme/widgets.git")
        );
        assert_eq!(
            env_value(clone, "CCPLANT_WORK_BRANCH"),
            Some("ccplant/other")
        );
        assert_eq!(env_value(clone, "CCPLANT_REF"), None);
        assert_eq!(env_value(clone, "CCPLANT_DEPTH"), None);
        assert_eq!(env_value(clone, "CCPLANT_GITHUB_TOKEN_FILE"), None);

        // The script names no session, repository, host or branch.
        for needle in [
            "ccplant-demo",
            "hello-world",
            "fix/login",
            "github.com",
            "v1.2.0",
        ] {
            assert!(!CLONE_SCRIPT.contains(needle), "{needle}");
        }
        assert!(
            !CLONE_SCRIPT.contains("set -x"),
            "tracing would print the helper's output"
        );
        Ok(())
    }

    #[test]
    fn editor_sidecar() -> TestResult {
        let pod = desired_pod(&full_session(), &cfg(), true)?;
        let editor = container(&pod, EDITOR_CONTAINER);
        assert_eq!(
            editor.image.as_deref(),
            Some("codercom/code-server:4.100.0")
        );
        assert_eq!(
            editor.args,
            Some(
                [
                    "--bind-addr",
                    "0.0.0.0:8443",
                    "--auth",
                    "password",
                    "--disable-telemetry",
                    "/workspace"
                ]
                .map(String::from)
                .to_vec()
            )
        );
        assert_eq!(
            editor
                .ports
                .as_ref()
                .and_then(|p| p.first())
                .map(|p| (p.name.as_deref(), p.container_port)),
            Some((Some("editor"), 8443))
        );
        assert_eq!(
            editor
                .readiness_probe
                .as_ref()
                .and_then(|p| p.http_get.as_ref())
                .and_then(|h| h.path.as_deref()),
            Some("/healthz")
        );
        let mut s = full_session();
        s.spec.editor = Some(ccplant_api::EditorSpec {
            enabled: true,
            ..Default::default()
        });
        let pod = desired_pod(&s, &cfg(), true)?;
        assert_eq!(
            container(&pod, EDITOR_CONTAINER).image.as_deref(),
            Some(DEFAULT_EDITOR_IMAGE)
        );
        s.spec.editor = Some(ccplant_api::EditorSpec::default()); // enabled: false
        let pod = desired_pod(&s, &cfg(), true)?;
        assert_eq!(pod.spec.as_ref().map(|p| p.containers.len()), Some(1));
        Ok(())
    }

    #[test]
    fn build_errors() -> TestResult {
        let no_default = BuildConfig::new("ccplant-system");
        let err = desired_pod(&bare_session(), &no_default, false)
            .err()
            .ok_or("expected NoAgentImage")?;
        assert_eq!(err, BuildError::NoAgentImage);
        assert_eq!(
            err.to_string(),
            "spec.agent.image is empty and the operator has no --default-agent-image"
        );
        assert!(err.is_invalid_spec());
        // The session's own image needs no default.
        assert!(desired_pod(&full_session(), &no_default, true).is_ok());

        let mut s = bare_session();
        s.spec.repository = Some(ccplant_api::RepositorySpec {
            name: "no-owner".to_owned(),
            git_ref: None,
            work_branch: None,
            depth: None,
        });
        let err = desired_pod(&s, &cfg(), false)
            .err()
            .ok_or("expected InvalidRepository")?;
        assert_eq!(
            err.to_string(),
            "spec.repository.name \"no-owner\" is not \"owner/repo\""
        );

        let mut s = bare_session();
        s.metadata.uid = None;
        let err = desired_service(&s)
            .err()
            .ok_or("expected MissingMetadata")?;
        assert_eq!(err, BuildError::MissingMetadata("uid"));
        assert!(!err.is_invalid_spec());
        Ok(())
    }

    #[test]
    fn service_pvc_and_network_policy() -> TestResult {
        let bare = bare_session();
        let service = desired_service(&bare)?;
        let spec = service.spec.ok_or("service spec")?;
        assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        assert_eq!(
            spec.selector,
            Some(BTreeMap::from([(
                "ccplant.io/session".to_owned(),
                "fix-login".to_owned()
            )]))
        );
        let ports: Vec<(Option<&str>, i32)> = spec
            .ports
            .iter()
            .flatten()
            .map(|p| (p.name.as_deref(), p.port))
            .collect();
        assert_eq!(ports, [(Some("agent"), 3284)]);
        let full_ports: Vec<(Option<String>, i32)> = desired_service(&full_session())?
            .spec
            .and_then(|s| s.ports)
            .unwrap_or_default()
            .into_iter()
            .map(|p| (p.name, p.port))
            .collect();
        assert_eq!(
            full_ports,
            [
                (Some("agent".to_owned()), 4000),
                (Some("editor".to_owned()), 8443)
            ]
        );

        assert_eq!(desired_pvc(&bare)?, None);
        let mut no_size = bare_session();
        no_size.spec.workspace = Some(ccplant_api::WorkspaceSpec {
            size: None,
            storage_class_name: Some("fast".to_owned()),
        });
        assert_eq!(
            desired_pvc(&no_size)?,
            None,
            "a class without a size asks for no PVC"
        );
        let pvc = desired_pvc(&full_session())?.ok_or("pvc")?;
        assert_eq!(pvc.metadata.name.as_deref(), Some("fix-login-workspace"));
        let pvc_spec = pvc.spec.ok_or("pvc spec")?;
        assert_eq!(
            pvc_spec.access_modes,
            Some(vec!["ReadWriteOnce".to_owned()])
        );
        assert_eq!(pvc_spec.storage_class_name.as_deref(), Some("fast-ssd"));
        assert_eq!(
            pvc_spec.resources.and_then(|r| r.requests),
            Some(BTreeMap::from([(
                "storage".to_owned(),
                Quantity("10Gi".to_owned())
            )]))
        );

        let np = desired_network_policy(&bare, &cfg())?.ok_or("isolated by default")?;
        let np = serde_json::to_value(np)?;
        assert_eq!(
            np["spec"],
            json!({
                "podSelector": {"matchLabels": {"ccplant.io/session": "fix-login"}},
                "policyTypes": ["Ingress"],
                // Only the operator's pods, only to the agent port.
                "ingress": [{
                    "from": [{
                        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ccplant-system"}},
                        "podSelector": {"matchLabels": {
                            "app.kubernetes.io/component": "operator",
                            "app.kubernetes.io/name": "ccplant"}},
                    }],
                    "ports": [{"port": 3284, "protocol": "TCP"}],
                }],
            })
        );
        let mut open = bare_session();
        open.spec.network.isolate = false;
        assert_eq!(desired_network_policy(&open, &cfg())?, None);
        Ok(())
    }

    #[test]
    fn endpoint_and_editor_url() {
        let full = full_session();
        let names = SessionNames::for_session(&full);
        assert_eq!(
            endpoint(&full, &names).as_deref(),
            Some("http://fix-login.team-a.svc:4000")
        );
        assert_eq!(
            editor_url(&full, &names).as_deref(),
            Some("http://fix-login.team-a.svc:8443")
        );
        let bare = bare_session();
        assert_eq!(
            endpoint(&bare, &names).as_deref(),
            Some("http://fix-login.team-a.svc:3284")
        );
        assert_eq!(editor_url(&bare, &names), None);
    }

    #[test]
    fn long_session_names_give_valid_child_names() -> TestResult {
        let mut s = full_session();
        s.metadata.name = Some(format!("{}.team-a", "very-long-session".repeat(10)));
        let names = SessionNames::for_session(&s);
        let pod = desired_pod(&s, &cfg(), true)?;
        assert_eq!(pod.metadata.name.as_ref(), Some(&names.pod));
        let volumes = pod.spec.and_then(|s| s.volumes).ok_or("volumes")?;
        let claim = volumes[0]
            .persistent_volume_claim
            .as_ref()
            .ok_or("pvc volume")?;
        assert_eq!(claim.claim_name, names.workspace_pvc);
        assert_eq!(
            desired_credentials_secret(&s, TOKEN, BTreeMap::new())?
                .metadata
                .name,
            Some(names.credentials_secret.clone())
        );
        // Label values are at most 63 characters: the session label is shortened too, and
        // the Service still selects the pod.
        let labels = pod.metadata.labels.clone().ok_or("labels")?;
        assert_eq!(labels["ccplant.io/session"], names.session_label);
        assert!(names.session_label.len() <= 63);
        let selector = desired_service(&s)?
            .spec
            .and_then(|s| s.selector)
            .ok_or("selector")?;
        assert!(selector.iter().all(|(k, v)| labels.get(k) == Some(v)));
        let np = desired_network_policy(&s, &cfg())?.ok_or("netpol")?;
        assert_eq!(
            np.spec
                .and_then(|s| s.pod_selector)
                .and_then(|p| p.match_labels),
            Some(selector)
        );
        Ok(())
    }

    /// Runs [`CLONE_SCRIPT`] with a real `sh` and `git` against a local repository standing in
    /// for GitHub (git's `url.<base>.insteadOf` maps the https URL onto it).
    struct CloneLab {
        root: PathBuf,
        remote: PathBuf,
        home: PathBuf,
        token_file: PathBuf,
    }

    impl Drop for CloneLab {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }

    const LAB_URL: &str = "https://github.com/ccplant-demo/hello-world.git";

    fn git(dir: &Path, args: &[&str]) -> Result<String, Box<dyn Error>> {
        let out = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .current_dir(dir)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", dir)
            .output()
            .map_err(|e| format!("running git (install git to run these tests): {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "git {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        Ok(String::from_utf8(out.stdout)?.trim().to_owned())
    }

    impl CloneLab {
        fn new(tag: &str) -> Result<Self, Box<dyn Error>> {
            let root = std::env::temp_dir().join(format!(
                "ccplant-clone-{tag}-{}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)?
                    .as_nanos()
            ));
            let remote = root.join("remote");
            let home = root.join("home");
            std::fs::create_dir_all(&remote)?;
            std::fs::create_dir_all(&home)?;
            let token_file = root.join("token");
            std::fs::write(&token_file, format!("{TOKEN}\n"))?;
            let lab = Self {
                root,
                remote,
                home,
                token_file,
            };
            let r = &lab.remote;
            git(r, &["init", "--quiet", "--initial-branch=main"])?;
            git(
                r,
                &["config", "uploadpack.allowReachableSHA1InWant", "true"],
            )?;
            for (file, message) in [("a", "first"), ("b", "second")] {
                std::fs::write(r.join(file), message)?;
                git(r, &["add", file])?;
                git(r, &["commit", "--quiet", "-m", message])?;
            }
            git(r, &["tag", "-a", "v1", "-m", "v1", "HEAD~1"])?;
            git(r, &["checkout", "--quiet", "-b", "feature"])?;
            std::fs::write(r.join("f"), "feature")?;
            git(r, &["add", "f"])?;
            git(r, &["commit", "--quiet", "-m", "feature"])?;
            git(r, &["checkout", "--quiet", "main"])?;
            Ok(lab)
        }

        fn rev(&self, rev: &str) -> Result<String, Box<dyn Error>> {
            git(&self.remote, &["rev-parse", &format!("{rev}^{{commit}}")])
        }

        fn workspace(&self, name: &str) -> Result<PathBuf, Box<dyn Error>> {
            let dir = self.root.join(name);
            std::fs::create_dir_all(&dir)?;
            Ok(dir)
        }

        /// Runs the script in `workspace` with the clone container's variables.
        fn run(
            &self,
            workspace: &Path,
            vars: &[(&str, &str)],
        ) -> Result<(bool, String), Box<dyn Error>> {
            let remote_url = format!("file://{}", self.remote.display());
            let out = Command::new("sh")
                .args(["-c", CLONE_SCRIPT])
                .current_dir(workspace)
                .env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .env("HOME", &self.home)
                .env("GIT_TERMINAL_PROMPT", "0")
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .env("GIT_CONFIG_COUNT", "1")
                .env("GIT_CONFIG_KEY_0", format!("url.{remote_url}.insteadOf"))
                .env("GIT_CONFIG_VALUE_0", LAB_URL)
                .env("CCPLANT_REPO_URL", LAB_URL)
                .env("CCPLANT_GITHUB_TOKEN_FILE", &self.token_file)
                .envs(vars.iter().copied())
                .output()
                .map_err(|e| format!("running sh (needed by this test): {e}"))?;
            let log = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(!log.contains(TOKEN), "the token reached the log:\n{log}");
            Ok((out.status.success(), log))
        }

        fn head(&self, workspace: &Path) -> Result<(String, String), Box<dyn Error>> {
            Ok((
                git(workspace, &["rev-parse", "--abbrev-ref", "HEAD"])?,
                git(workspace, &["rev-parse", "HEAD"])?,
            ))
        }
    }

    #[test]
    fn clone_script_checks_out_the_work_branch_from_the_ref() -> TestResult {
        let lab = CloneLab::new("refs")?;
        let cases: [(&str, Option<String>, Option<&str>, String); 4] = [
            ("default-branch", None, None, lab.rev("main")?),
            (
                "branch-shallow",
                Some("feature".to_owned()),
                Some("1"),
                lab.rev("feature")?,
            ),
            ("tag", Some("v1".to_owned()), None, lab.rev("v1")?),
            (
                "sha",
                Some(lab.rev("main~1")?),
                Some("1"),
                lab.rev("main~1")?,
            ),
        ];
        for (what, git_ref, depth, expected) in cases {
            let ws = lab.workspace(what)?;
            std::fs::create_dir_all(ws.join("lost+found"))?; // a fresh volume is not empty
            let mut vars = vec![("CCPLANT_WORK_BRANCH", "ccplant/session")];
            if let Some(git_ref) = &git_ref {
                vars.push(("CCPLANT_REF", git_ref));
            }
            if let Some(depth) = depth {
                vars.push(("CCPLANT_DEPTH", depth));
            }
            let (ok, log) = lab.run(&ws, &vars)?;
            assert!(ok, "{what}:\n{log}");
            assert_eq!(
                lab.head(&ws)?,
                ("ccplant/session".to_owned(), expected),
                "{what}:\n{log}"
            );
            let shallow = git(&ws, &["rev-parse", "--is-shallow-repository"])?;
            assert_eq!(shallow == "true", depth.is_some(), "{what}");
        }
        Ok(())
    }

    #[test]
    fn clone_script_resumes_and_continues_existing_work() -> TestResult {
        let lab = CloneLab::new("resume")?;
        let vars = [
            ("CCPLANT_WORK_BRANCH", "ccplant/s"),
            ("CCPLANT_REF", "main"),
        ];
        // Same volume: the agent's unpushed commit survives a second run.
        let ws = lab.workspace("pvc")?;
        assert!(lab.run(&ws, &vars)?.0);
        std::fs::write(ws.join("work"), "agent")?;
        git(&ws, &["add", "work"])?;
        git(&ws, &["commit", "--quiet", "-m", "agent work"])?;
        let before = lab.head(&ws)?;
        let (ok, log) = lab.run(&ws, &vars)?;
        assert!(ok, "{log}");
        assert!(
            log.contains("already holds a clone on ccplant/s; keeping it"),
            "{log}"
        );
        assert_eq!(lab.head(&ws)?, before);

        // New volume, but the work branch was pushed earlier: continue it, not the ref.
        git(&lab.remote, &["branch", "ccplant/s", "feature"])?;
        let fresh = lab.workspace("fresh")?;
        let (ok, log) = lab.run(&fresh, &vars)?;
        assert!(ok, "{log}");
        assert!(
            log.contains("continuing the existing branch ccplant/s"),
            "{log}"
        );
        assert_eq!(
            lab.head(&fresh)?,
            ("ccplant/s".to_owned(), lab.rev("feature")?)
        );
        assert_eq!(
            git(
                &fresh,
                &["rev-parse", "--abbrev-ref", "ccplant/s@{upstream}"]
            )?,
            "origin/ccplant/s"
        );

        // A missing ref fails the container.
        let bad = lab.workspace("bad")?;
        let (ok, _) = lab.run(
            &bad,
            &[("CCPLANT_WORK_BRANCH", "x"), ("CCPLANT_REF", "nope")],
        )?;
        assert!(!ok);
        Ok(())
    }

    #[test]
    fn clone_script_credential_helper_reads_the_token_file_for_the_repository_host() -> TestResult {
        let lab = CloneLab::new("helper")?;
        let ws = lab.workspace("ws")?;
        assert!(lab.run(&ws, &[("CCPLANT_WORK_BRANCH", "w")])?.0);
        let fill =
            |host: &str, token_file: Option<&Path>| -> Result<(bool, String), Box<dyn Error>> {
                use std::io::Write;
                let mut cmd = Command::new("git");
                cmd.args(["credential", "fill"])
                    .env_clear()
                    .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                    .env("HOME", &lab.home)
                    .env("GIT_TERMINAL_PROMPT", "0")
                    .env("GIT_ASKPASS", "")
                    .env("GIT_CONFIG_NOSYSTEM", "1")
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped());
                if let Some(file) = token_file {
                    cmd.env("CCPLANT_GITHUB_TOKEN_FILE", file);
                }
                let mut child = cmd.spawn()?;
                child
                    .stdin
                    .take()
                    .ok_or("stdin")?
                    .write_all(format!("protocol=https\nhost={host}\n\n").as_bytes())?;
                let out = child.wait_with_output()?;
                Ok((out.status.success(), String::from_utf8(out.stdout)?))
            };
        let (ok, out) = fill("github.com", Some(&lab.token_file))?;
        assert!(ok);
        assert_eq!(
            out,
            format!("protocol=https\nhost=github.com\nusername=x-access-token\npassword={TOKEN}\n")
        );
        // Another host never gets the token; without a token file there is nothing to give.
        assert!(!fill("example.com", Some(&lab.token_file))?.0);
        assert!(!fill("github.com", None)?.0);
        let config = std::fs::read_to_string(lab.home.join(".gitconfig"))?;
        assert!(!config.contains(TOKEN));
        assert!(
            config.contains("[credential \"https://github.com\"]"),
            "{config}"
        );
        Ok(())
    }
}
