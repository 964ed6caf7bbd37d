//! The chart's admission policies (charts/ccplant/templates/admission-*.yaml, DESIGN §7.3)
//! against the real control plane: rendered with the chart's defaults (`helm template
//! --show-only`), applied as they are, then exercised as restricted users (impersonation) whose
//! Role may create and update AgentSessions and GitHubTasks but may not get Secrets, or may get
//! exactly one named Secret.
//!
//! - A Secret reference (github.secretRef, agent env valueFrom.secretKeyRef, agent envFrom
//!   secretRef) is admitted exactly when the requesting user may `get` that Secret, and on
//!   UPDATE only the references the change adds are checked.
//! - `spec.className` and `spec.github.credentialName` are admitted exactly when the named
//!   AgentSessionClass / GitHubCredential's namespaceSelector selects the namespace. Every
//!   class (credential) is a param of its policy (`paramRef.selector: {}`): the apiserver
//!   evaluates the policy once per param object, so with many classes in the cluster each
//!   refusal names the one the session chose and a session naming a selecting class is admitted.
//!   A name that matches no object is admitted (the operator reports ClassNotFound /
//!   CredentialNotFound).
//!
//! Policies take effect asynchronously (the apiserver compiles them and watches their params):
//! every refusal is first awaited with dry-run requests, bounded, then asserted on a real one.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use ccplant_testenv::{TestEnv, TestNamespace};
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::{Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The release the policies are rendered for; their names start with it (a name of its own, so
/// a cluster given by CCPLANT_TEST_KUBECONFIG never sees a real release's policies replaced).
const RELEASE: &str = "ccplant-admission-test";
const SECRET_POLICY: &str = "ccplant-admission-test-secret-references";
const CLASS_POLICY: &str = "ccplant-admission-test-session-class";
const CREDENTIAL_POLICY: &str = "ccplant-admission-test-github-credential";
const T: Duration = Duration::from_secs(60);
const IMAGE: &str = "ghcr.io/ccplant/agent:1";
/// The Secret the reader may get, and one nobody but the admin may.
const READABLE: &str = "readable";
const UNREADABLE: &str = "unreadable";
/// Seven more Secrets the reader may get (they need not exist: access is by name).
const ALSO_READABLE: [&str; 7] = ["r1", "r2", "r3", "r4", "r5", "r6", "r7"];
/// How many Secrets per field the secret-references policy checks in one request.
const SLOTS: usize = 8;
/// Label on the cluster-scoped objects a test creates: the namespace of the test.
const OWNER_LABEL: &str = "ccplant.io/admission-test";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn describe(out: &Output) -> String {
    format!(
        "exit {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn run_ok(mut cmd: Command, stdin: Option<&str>) -> String {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let mut input = child.stdin.take().unwrap();
    input
        .write_all(stdin.unwrap_or_default().as_bytes())
        .unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{what}: {}", describe(&out));
    String::from_utf8(out.stdout).unwrap()
}

/// Every `templates/admission-*.yaml` of the chart, rendered with the chart's defaults.
fn rendered_admission_templates(env: &TestEnv) -> String {
    let chart = repo_root().join("charts/ccplant");
    let mut templates: Vec<String> = std::fs::read_dir(chart.join("templates"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("admission-") && n.ends_with(".yaml"))
        .collect();
    templates.sort();
    assert!(!templates.is_empty(), "no templates/admission-*.yaml");
    let mut helm = env.helm();
    helm.args(["template", RELEASE])
        .arg(&chart)
        .args(["--namespace", "ccplant-system"]);
    for t in &templates {
        helm.args(["--show-only", &format!("templates/{t}")]);
    }
    run_ok(helm, None)
}

/// The CRDs of crds/ and the chart's admission policies, once per test binary.
fn install() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let env = TestEnv::global();
        let mut apply = env.kubectl();
        apply.arg("apply").arg("-f").arg(repo_root().join("crds"));
        run_ok(apply, None);
        let mut wait = env.kubectl();
        wait.args(["wait", "--for=condition=Established", "--timeout=60s"]);
        for crd in [
            "agentsessions",
            "githubtasks",
            "githubcredentials",
            "agentsessionclasses",
        ] {
            wait.arg(format!("crd/{crd}.ccplant.io"));
        }
        run_ok(wait, None);
        let mut apply = env.kubectl();
        apply.args(["apply", "-f", "-"]);
        run_ok(apply, Some(&rendered_admission_templates(env)));
    });
}

fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: "ccplant.io".into(),
        version: "v1alpha1".into(),
        api_version: "ccplant.io/v1alpha1".into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

fn sessions(client: &Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        ns,
        &resource("AgentSession", "agentsessions"),
    )
}

fn tasks(client: &Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &resource("GitHubTask", "githubtasks"))
}

fn classes(client: &Client) -> Api<DynamicObject> {
    Api::all_with(
        client.clone(),
        &resource("AgentSessionClass", "agentsessionclasses"),
    )
}

fn credentials(client: &Client) -> Api<DynamicObject> {
    Api::all_with(
        client.clone(),
        &resource("GitHubCredential", "githubcredentials"),
    )
}

fn object(kind: &str, name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "ccplant.io/v1alpha1", "kind": kind,
        "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap()
}

/// An AgentSession `name` whose spec is a minimal valid one merged with `extra`.
fn session(name: &str, extra: Value) -> DynamicObject {
    let mut spec = json!({"agent": {"image": IMAGE}, "repository": {"name": "octo/hello"}});
    for (k, v) in extra.as_object().unwrap() {
        match (spec.get_mut(k), v) {
            (Some(Value::Object(base)), Value::Object(more)) => {
                base.extend(more.clone());
            }
            _ => spec[k] = v.clone(),
        }
    }
    object("AgentSession", name, spec)
}

/// A GitHubTask `name` creating an issue, with `github`.
fn task(name: &str, github: Value) -> DynamicObject {
    object(
        "GitHubTask",
        name,
        json!({"repository": "octo/hello", "github": github, "createIssue": {"title": "x"}}),
    )
}

/// A client that impersonates `user` (no groups: only what RBAC grants `user` itself).
async fn client_as(env: &TestEnv, user: &str) -> Client {
    let kc = Kubeconfig::read_from(&env.kubeconfig).unwrap();
    let mut config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    config.auth_info.impersonate = Some(user.to_string());
    config.read_timeout = Some(Duration::from_secs(60));
    Client::try_from(config).unwrap()
}

/// A refusal by one of the chart's policies: the policy and the message it gives.
struct Refusal {
    policy: &'static str,
    message: String,
}

/// The message of the apiserver's 403 when `refusal` refuses a request for object `name`
/// through `api`.
fn denial(api: &Api<DynamicObject>, name: &str, refusal: &Refusal) -> String {
    let url = api.resource_url();
    let plural = url.rsplit('/').next().unwrap_or_default();
    let Refusal { policy, message } = refusal;
    format!(
        "{plural}.ccplant.io \"{name}\" is forbidden: ValidatingAdmissionPolicy '{policy}' with binding '{policy}' denied request: {message}"
    )
}

fn outcome(result: &Result<DynamicObject, kube::Error>) -> String {
    match result {
        Ok(o) => format!("admitted: {}", serde_json::to_string(&o.data).unwrap()),
        Err(kube::Error::Api(s)) => format!("{} {}: {}", s.code, s.reason, s.message),
        Err(e) => format!("error: {e}"),
    }
}

fn is_denial(result: &Result<DynamicObject, kube::Error>, want: &str) -> bool {
    matches!(result, Err(kube::Error::Api(s))
        if s.code == 403 && s.reason == "Forbidden" && s.message == want)
}

const DRY_RUN: PostParams = PostParams {
    dry_run: true,
    field_manager: None,
};

/// Asserts that creating `obj` is refused with exactly `want` (403 Forbidden): first waits with
/// dry runs until the policy (and the param it needs) is in force, then creates it for real.
async fn assert_refused(api: &Api<DynamicObject>, obj: &DynamicObject, refusal: &Refusal) {
    let name = obj.metadata.name.as_deref().unwrap_or_default();
    let want = &denial(api, name, refusal);
    let deadline = Instant::now() + T;
    loop {
        let result = api.create(&DRY_RUN, obj).await;
        if is_denial(&result, want) {
            break;
        }
        if Instant::now() > deadline {
            panic!(
                "{name} was not refused within {T:?} with {want:?}; last: {}",
                outcome(&result)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let result = api.create(&PostParams::default(), obj).await;
    assert!(
        is_denial(&result, want),
        "{name}: want {want:?}, got {}",
        outcome(&result)
    );
}

/// Asserts that creating `obj` is admitted and stored with the spec asked for (nothing the
/// policies look at was pruned on the way).
async fn assert_admitted(api: &Api<DynamicObject>, obj: &DynamicObject) {
    let result = api.create(&PostParams::default(), obj).await;
    let name = obj.metadata.name.as_deref().unwrap_or_default();
    let Ok(stored) = &result else {
        panic!("{name} was refused: {}", outcome(&result));
    };
    assert_spec_contains(name, &stored.data["spec"], &obj.data["spec"]);
}

fn assert_spec_contains(name: &str, stored: &Value, asked: &Value) {
    match (stored, asked) {
        (Value::Object(s), Value::Object(a)) => {
            for (k, v) in a {
                assert_spec_contains(&format!("{name}.{k}"), s.get(k).unwrap_or(&Value::Null), v);
            }
        }
        _ => assert_eq!(stored, asked, "{name} as stored"),
    }
}

/// Applies a JSON merge patch to `name` (an UPDATE of the main resource) and returns the
/// outcome.
async fn merge_patch(
    api: &Api<DynamicObject>,
    name: &str,
    patch: Value,
) -> Result<DynamicObject, kube::Error> {
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
}

/// Asserts that the merge patch is refused with exactly `want`, awaiting the policy with dry
/// runs first like [`assert_refused`].
async fn assert_patch_refused(
    api: &Api<DynamicObject>,
    name: &str,
    patch: Value,
    refusal: &Refusal,
) {
    let want = &denial(api, name, refusal);
    let deadline = Instant::now() + T;
    loop {
        let result = api
            .patch(
                name,
                &PatchParams::default().dry_run(),
                &Patch::Merge(&patch),
            )
            .await;
        if is_denial(&result, want) {
            break;
        }
        if Instant::now() > deadline {
            panic!(
                "patch {patch} of {name} was not refused within {T:?} with {want:?}; last: {}",
                outcome(&result)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let result = merge_patch(api, name, patch.clone()).await;
    assert!(
        is_denial(&result, want),
        "patch {patch} of {name}: want {want:?}, got {}",
        outcome(&result)
    );
}

async fn assert_patch_admitted(api: &Api<DynamicObject>, name: &str, patch: Value) {
    let result = merge_patch(api, name, patch.clone()).await;
    assert!(
        result.is_ok(),
        "patch {patch} of {name} was refused: {}",
        outcome(&result)
    );
}

/// The restricted users of a test namespace: `nobody` may create, update and patch
/// AgentSessions and GitHubTasks and nothing else; `reader` may also get the Secret
/// [`READABLE`] and [`ALSO_READABLE`] (and no other).
struct Users {
    nobody: String,
    reader: String,
}

async fn restricted_users(ns: &TestNamespace) -> Users {
    let users = Users {
        nobody: format!("nobody@{}", ns.name),
        reader: format!("reader@{}", ns.name),
    };
    let roles: Api<Role> = ns.api();
    let bindings: Api<RoleBinding> = ns.api();
    let pp = PostParams::default();
    let role = |name: &str, rules: Value| -> Role {
        serde_json::from_value(json!({"metadata": {"name": name}, "rules": rules})).unwrap()
    };
    let binding = |name: &str, users: &[&str]| -> RoleBinding {
        let subjects: Vec<Value> = users
            .iter()
            .map(|u| json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": u}))
            .collect();
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": subjects,
        }))
        .unwrap()
    };
    roles
        .create(
            &pp,
            &role(
                "author",
                json!([{"apiGroups": ["ccplant.io"], "resources": ["agentsessions", "githubtasks"],
                        "verbs": ["get", "create", "update", "patch"]}]),
            ),
        )
        .await
        .unwrap();
    bindings
        .create(&pp, &binding("author", &[&users.nobody, &users.reader]))
        .await
        .unwrap();
    roles
        .create(
            &pp,
            &role(
                "read-one-secret",
                json!([{"apiGroups": [""], "resources": ["secrets"],
                        "resourceNames": ([&[READABLE][..], &ALSO_READABLE[..]].concat()),
                        "verbs": ["get"]}]),
            ),
        )
        .await
        .unwrap();
    bindings
        .create(&pp, &binding("read-one-secret", &[&users.reader]))
        .await
        .unwrap();
    let secrets: Api<Secret> = ns.api();
    for name in [READABLE, UNREADABLE] {
        let secret: Secret = serde_json::from_value(
            json!({"metadata": {"name": name}, "stringData": {"token": "t", "other": "o"}}),
        )
        .unwrap();
        secrets.create(&pp, &secret).await.unwrap();
    }
    // RBAC reaches the authorizer through a watch: wait until it answers as the Roles say.
    for (user, verb, resource, name, allowed) in [
        (&users.nobody, "create", "agentsessions", "", true),
        (&users.nobody, "get", "secrets", READABLE, false),
        (&users.reader, "create", "githubtasks", "", true),
        (&users.reader, "get", "secrets", READABLE, true),
        (&users.reader, "get", "secrets", ALSO_READABLE[6], true),
        (&users.reader, "get", "secrets", UNREADABLE, false),
    ] {
        let group = if resource == "secrets" {
            ""
        } else {
            "ccplant.io"
        };
        wait_access(ns, user, verb, group, resource, name, allowed).await;
    }
    users
}

async fn wait_access(
    ns: &TestNamespace,
    user: &str,
    verb: &str,
    group: &str,
    resource: &str,
    name: &str,
    allowed: bool,
) {
    let reviews: Api<SubjectAccessReview> = Api::all(ns.client.clone());
    let review: SubjectAccessReview = serde_json::from_value(json!({"spec": {
        "user": user,
        "resourceAttributes": {"namespace": ns.name, "verb": verb, "group": group,
                               "resource": resource, "name": name},
    }}))
    .unwrap();
    let deadline = Instant::now() + T;
    loop {
        let answer = reviews
            .create(&PostParams::default(), &review)
            .await
            .unwrap();
        if answer.status.as_ref().map(|s| s.allowed) == Some(allowed) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{user} {verb} {resource}/{name}: want allowed={allowed}, got {:?}",
            answer.status
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The secret-references policy's refusal of `field` in a `kind`: `what` says which Secrets
/// `user` may not get, `pronoun` is "it" or "them".
fn secret_refusal(
    user: &str,
    ns: &str,
    field: &str,
    what: &str,
    kind: &str,
    pronoun: &str,
) -> Refusal {
    Refusal {
        policy: SECRET_POLICY,
        message: format!(
            "{field}: user {user} may not get {what} in namespace {ns}, so this {kind} may not reference {pronoun}"
        ),
    }
}

const ENV_FIELD: &str = "spec.agent.env[].valueFrom.secretKeyRef.name";
const ENV_FROM_FIELD: &str = "spec.agent.envFrom[].secretRef.name";

/// The refusal of env entries: `vars` (comma-separated) from Secret `secret`.
fn env_refusal(user: &str, ns: &str, secret: &str, vars: &str) -> Refusal {
    let what = format!("Secret {secret} (env {vars})");
    secret_refusal(user, ns, ENV_FIELD, &what, "AgentSession", "it")
}

fn env_from_refusal(user: &str, ns: &str, secret: &str) -> Refusal {
    let what = format!("Secret {secret}");
    secret_refusal(user, ns, ENV_FROM_FIELD, &what, "AgentSession", "it")
}

/// The refusal of a request adding more Secrets to `field` than the policy checks at once.
fn too_many_refusal(field: &str, count: usize) -> Refusal {
    Refusal {
        policy: SECRET_POLICY,
        message: format!(
            "{field}: this request adds references to {count} Secrets, more than the {SLOTS} whose access admission can check at once: add the others in a later update"
        ),
    }
}

fn github_secret_refusal(user: &str, ns: &str, secret: &str, kind: &str) -> Refusal {
    let what = format!("Secret {secret}");
    secret_refusal(user, ns, "spec.github.secretRef.name", &what, kind, "it")
}

fn env_from(secrets: &[&str]) -> Value {
    let entries: Vec<Value> = secrets
        .iter()
        .map(|s| json!({"secretRef": {"name": s}}))
        .collect();
    json!({"agent": {"envFrom": entries}})
}

fn env_secret(var: &str, secret: &str, key: &str) -> Value {
    json!({"name": var, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}})
}

fn github_secret(secret: &str) -> Value {
    json!({"secretRef": {"name": secret}})
}

#[tokio::test]
async fn a_secret_is_referenced_only_by_users_who_may_get_it() {
    install();
    let env = TestEnv::global();
    env.with_namespace("adm-secrets", |ns| async move {
        let users = restricted_users(&ns).await;
        let n = ns.name.as_str();
        let nobody = client_as(env, &users.nobody).await;
        let reader = client_as(env, &users.reader).await;
        let (nobody_sessions, nobody_tasks) = (sessions(&nobody, n), tasks(&nobody, n));
        let (reader_sessions, reader_tasks) = (sessions(&reader, n), tasks(&reader, n));

        // Someone who may get no Secret references none, through any of the three fields.
        assert_refused(
            &nobody_sessions,
            &session("envfrom", env_from(&[READABLE])),
            &env_from_refusal(&users.nobody, n, READABLE),
        )
        .await;
        assert_refused(
            &nobody_sessions,
            &session(
                "env",
                json!({"agent": {"env": [env_secret("TOKEN", READABLE, "token")]}}),
            ),
            &env_refusal(&users.nobody, n, READABLE, "TOKEN"),
        )
        .await;
        assert_refused(
            &nobody_sessions,
            &session("github", json!({"github": github_secret(READABLE)})),
            &github_secret_refusal(&users.nobody, n, READABLE, "AgentSession"),
        )
        .await;
        assert_refused(
            &nobody_tasks,
            &task("github", github_secret(READABLE)),
            &github_secret_refusal(&users.nobody, n, READABLE, "GitHubTask"),
        )
        .await;
        // Nothing else is theirs to lose: plain values and ConfigMaps are not Secrets.
        assert_admitted(
            &nobody_sessions,
            &session(
                "no-secrets",
                json!({"agent": {
                    "env": [{"name": "PLAIN", "value": "v"},
                            {"name": "CM", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}}],
                    "envFrom": [{"configMapRef": {"name": "cm"}}],
                }}),
            ),
        )
        .await;

        // The reader may reference the one Secret the Role names, through every field.
        let all_fields = json!({
            "agent": {"env": [env_secret("TOKEN", READABLE, "token")],
                      "envFrom": [{"secretRef": {"name": READABLE}, "prefix": "R_"}]},
            "github": github_secret(READABLE),
        });
        assert_admitted(&reader_sessions, &session("readable", all_fields)).await;
        assert_admitted(&reader_tasks, &task("readable", github_secret(READABLE))).await;
        // ... and no other: each refusal names exactly the references it may not make.
        assert_refused(
            &reader_sessions,
            &session(
                "envfrom-mixed",
                json!({"agent": {"envFrom": [{"secretRef": {"name": READABLE}},
                                             {"configMapRef": {"name": "cm"}},
                                             {"secretRef": {"name": UNREADABLE}}]}}),
            ),
            &env_from_refusal(&users.reader, n, UNREADABLE),
        )
        .await;
        assert_refused(
            &reader_sessions,
            &session(
                "env-mixed",
                json!({"agent": {"env": [
                    env_secret("A", READABLE, "token"),
                    env_secret("B", UNREADABLE, "token"),
                    {"name": "PLAIN", "value": "v"},
                    env_secret("C", UNREADABLE, "other"),
                ]}}),
            ),
            // Each Secret is named once, with every variable it would fill.
            &env_refusal(&users.reader, n, UNREADABLE, "B, C"),
        )
        .await;
        // Access is checked per Secret: many keys of one Secret are one check ...
        let keys: Vec<Value> = (0..2 * SLOTS)
            .map(|i| env_secret(&format!("K{i}"), READABLE, &format!("key{i}")))
            .collect();
        assert_admitted(
            &reader_sessions,
            &session("env-keys", json!({"agent": {"env": keys}})),
        )
        .await;
        // ... and up to eight Secrets per field are each checked and named.
        let mut eight = vec![READABLE];
        eight.extend(ALSO_READABLE);
        assert_admitted(&reader_sessions, &session("envfrom-eight", env_from(&eight))).await;
        let mut eighth_unreadable = eight.clone();
        eighth_unreadable[SLOTS - 1] = UNREADABLE;
        assert_refused(
            &reader_sessions,
            &session("envfrom-eighth", env_from(&eighth_unreadable)),
            &env_from_refusal(&users.reader, n, UNREADABLE),
        )
        .await;
        let env_vars = |secrets: &[&str]| -> Value {
            let env: Vec<Value> = secrets
                .iter()
                .enumerate()
                .map(|(i, s)| env_secret(&format!("V{i}"), s, "token"))
                .collect();
            json!({"agent": {"env": env}})
        };
        assert_refused(
            &reader_sessions,
            &session("env-eighth", env_vars(&eighth_unreadable)),
            &env_refusal(&users.reader, n, UNREADABLE, "V7"),
        )
        .await;
        // More than that in one request is refused, even when all are readable.
        let mut nine = eight.clone();
        nine.push(UNREADABLE);
        assert_refused(
            &reader_sessions,
            &session("envfrom-nine", env_from(&nine)),
            &too_many_refusal(ENV_FROM_FIELD, 9),
        )
        .await;
        assert_refused(
            &reader_sessions,
            &session("env-nine", env_vars(&nine)),
            &too_many_refusal(ENV_FIELD, 9),
        )
        .await;
        assert_refused(
            &reader_sessions,
            &session(
                "github-unreadable",
                json!({"github": github_secret(UNREADABLE)}),
            ),
            &github_secret_refusal(&users.reader, n, UNREADABLE, "AgentSession"),
        )
        .await;
        assert_refused(
            &reader_tasks,
            &task("github-unreadable", github_secret(UNREADABLE)),
            &github_secret_refusal(&users.reader, n, UNREADABLE, "GitHubTask"),
        )
        .await;
        // The same objects from someone who may get every Secret: the user's authority counts.
        let admin = ns.client.clone();
        assert_admitted(
            &sessions(&admin, n),
            &session("envfrom-mixed", env_from(&[READABLE, UNREADABLE])),
        )
        .await;
        assert_admitted(
            &tasks(&admin, n),
            &task("github-unreadable", github_secret(UNREADABLE)),
        )
        .await;
    })
    .await;
}

#[tokio::test]
async fn an_update_is_checked_only_for_the_secret_references_it_adds() {
    install();
    let env = TestEnv::global();
    env.with_namespace("adm-update", |ns| async move {
        let users = restricted_users(&ns).await;
        let n = ns.name.as_str();
        let nobody = sessions(&client_as(env, &users.nobody).await, n);
        let nobody_tasks = tasks(&client_as(env, &users.nobody).await, n);
        // The policy is in force for this user before anything below can pass for lack of it.
        assert_refused(
            &nobody,
            &session("probe", env_from(&[UNREADABLE])),
            &env_from_refusal(&users.nobody, n, UNREADABLE),
        )
        .await;
        // The admin references the Secret in every field; nobody may still change the rest.
        let admin = ns.client.clone();
        assert_admitted(
            &sessions(&admin, n),
            &session(
                "shared",
                json!({"agent": {"env": [env_secret("TOKEN", UNREADABLE, "token")],
                                 "envFrom": [{"secretRef": {"name": UNREADABLE}}]},
                       "github": github_secret(UNREADABLE)}),
            ),
        )
        .await;
        assert_admitted(
            &tasks(&admin, n),
            &task("shared", github_secret(UNREADABLE)),
        )
        .await;
        assert_patch_admitted(
            &nobody,
            "shared",
            json!({"metadata": {"labels": {"team": "a"}}}),
        )
        .await;
        assert_patch_admitted(
            &nobody,
            "shared",
            json!({"spec": {"agent": {"env": [
                env_secret("RENAMED", UNREADABLE, "token"),
                {"name": "PLAIN", "value": "v"},
            ]}}}),
        )
        .await;
        // A GitHubTask's spec is immutable (the CRD refuses a change before admission policies
        // run): only its metadata changes, and those pass.
        assert_patch_admitted(
            &nobody_tasks,
            "shared",
            json!({"metadata": {"labels": {"team": "a"}}}),
        )
        .await;
        // What the update adds is checked: another key of the Secret, another Secret, another
        // GitHub Secret.
        assert_patch_refused(
            &nobody,
            "shared",
            json!({"spec": {"agent": {"env": [env_secret("OTHER", UNREADABLE, "other")]}}}),
            &env_refusal(&users.nobody, n, UNREADABLE, "OTHER"),
        )
        .await;
        assert_patch_refused(
            &nobody,
            "shared",
            json!({"spec": {"agent": {"envFrom": [{"secretRef": {"name": UNREADABLE}},
                                                  {"secretRef": {"name": READABLE}}]}}}),
            &env_from_refusal(&users.nobody, n, READABLE),
        )
        .await;
        assert_patch_refused(
            &nobody,
            "shared",
            json!({"spec": {"github": github_secret(READABLE)}}),
            &github_secret_refusal(&users.nobody, n, READABLE, "AgentSession"),
        )
        .await;
        // Dropping a reference adds none.
        assert_patch_admitted(
            &nobody,
            "shared",
            json!({"spec": {"agent": {"envFrom": []}}}),
        )
        .await;
    })
    .await;
}

/// Deletes the cluster-scoped objects a test labelled with its namespace, also when it fails.
struct ClusterScoped {
    namespace: String,
}

impl Drop for ClusterScoped {
    fn drop(&mut self) {
        let selector = format!("{OWNER_LABEL}={}", self.namespace);
        let out = TestEnv::global()
            .kubectl()
            .args([
                "delete",
                "agentsessionclasses.ccplant.io,githubcredentials.ccplant.io",
                "-l",
                &selector,
                "--wait=false",
            ])
            .output();
        if let Ok(out) = out
            && !out.status.success()
        {
            eprintln!("warning: deleting {selector}: {}", describe(&out));
        }
    }
}

/// One namespaceSelector case: a suffix naming the object, the selector, whether it selects
/// the test's namespace.
type SelectorCase = (&'static str, Value, bool);

/// Selectors over the labels every test namespace has (`kubernetes.io/metadata.name` and
/// `ccplant.io/test: "true"`), each operator both ways. Those that select come first: see
/// [`create_params`].
fn selector_cases(ns: &str) -> Vec<SelectorCase> {
    let req = |key: &str, op: &str, values: &[&str]| {
        if values.is_empty() {
            json!({"key": key, "operator": op})
        } else {
            json!({"key": key, "operator": op, "values": values})
        }
    };
    let exprs = |e: Vec<Value>| json!({"matchExpressions": e});
    let name = "kubernetes.io/metadata.name";
    let test = ccplant_testenv::TEST_NAMESPACE_LABEL;
    vec![
        ("all", json!({}), true),
        (
            "labels",
            json!({"matchLabels": {name: ns, test: "true"}}),
            true,
        ),
        ("in", exprs(vec![req(name, "In", &["elsewhere", ns])]), true),
        (
            "notin",
            exprs(vec![req(name, "NotIn", &["elsewhere"])]),
            true,
        ),
        ("exists", exprs(vec![req(test, "Exists", &[])]), true),
        (
            "doesnotexist",
            exprs(vec![req("ccplant.io/absent", "DoesNotExist", &[])]),
            true,
        ),
        (
            "both",
            json!({"matchLabels": {test: "true"},
                        "matchExpressions": [req(name, "NotIn", &["elsewhere"])]}),
            true,
        ),
        (
            "labels-x",
            json!({"matchLabels": {name: "elsewhere"}}),
            false,
        ),
        ("value-x", json!({"matchLabels": {test: "false"}}), false),
        ("in-x", exprs(vec![req(name, "In", &["elsewhere"])]), false),
        ("notin-x", exprs(vec![req(name, "NotIn", &[ns])]), false),
        (
            "exists-x",
            exprs(vec![req("ccplant.io/absent", "Exists", &[])]),
            false,
        ),
        (
            "doesnotexist-x",
            exprs(vec![req(test, "DoesNotExist", &[])]),
            false,
        ),
        (
            "both-x",
            json!({"matchLabels": {test: "true"},
                        "matchExpressions": [req(name, "In", &["elsewhere"])]}),
            false,
        ),
    ]
}

/// Creates one param object per case, named `<namespace>-<suffix>`, in the order given. The
/// apiserver sees params through a watch, which delivers them in the order they were created:
/// once a refusal shows the last one is seen, all are, and an admission naming an earlier one
/// is not an admission for want of its param.
async fn create_params(
    api: &Api<DynamicObject>,
    kind: &str,
    ns: &str,
    cases: &[SelectorCase],
    spec: impl Fn(Value) -> Value,
) {
    for (suffix, selector, _) in cases {
        let mut obj = object(kind, &format!("{ns}-{suffix}"), spec(selector.clone()));
        obj.metadata.labels = Some([(OWNER_LABEL.to_string(), ns.to_string())].into());
        api.create(&PostParams::default(), &obj).await.unwrap();
    }
}

/// Changes the namespaceSelector of the class or credential `name` to select no test
/// namespace.
async fn stop_selecting(api: &Api<DynamicObject>, name: &str) {
    let patch = json!({"spec": {"namespaceSelector": {
        "matchLabels": {"kubernetes.io/metadata.name": "elsewhere"}}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

fn class_spec(selector: Value) -> Value {
    json!({"namespaceSelector": selector})
}

fn credential_spec(ns: &str) -> impl Fn(Value) -> Value {
    let ns = ns.to_string();
    move |selector| {
        json!({
            "secretRef": {"namespace": ns, "name": "github"},
            "namespaceSelector": selector,
            "repositories": ["octo/hello"],
        })
    }
}

fn class_refusal(class: &str, ns: &str) -> Refusal {
    Refusal {
        policy: CLASS_POLICY,
        message: format!(
            "spec.className: AgentSessionClass {class} does not allow namespace {ns}: its namespaceSelector does not select it"
        ),
    }
}

fn credential_refusal(credential: &str, ns: &str) -> Refusal {
    Refusal {
        policy: CREDENTIAL_POLICY,
        message: format!(
            "spec.github.credentialName: GitHubCredential {credential} does not allow namespace {ns}: its namespaceSelector does not select it"
        ),
    }
}

#[tokio::test]
async fn a_session_names_only_a_class_that_selects_its_namespace() {
    install();
    let env = TestEnv::global();
    env.with_namespace("adm-class", |ns| async move {
        let n = ns.name.as_str();
        let _cleanup = ClusterScoped {
            namespace: n.to_string(),
        };
        let users = restricted_users(&ns).await;
        let nobody = sessions(&client_as(env, &users.nobody).await, n);
        let cases = selector_cases(n);
        create_params(
            &classes(&ns.client),
            "AgentSessionClass",
            n,
            &cases,
            class_spec,
        )
        .await;

        // Every refusal names its own class among all of them: the policy ran once per class.
        for (suffix, _, selects) in cases.iter().rev() {
            if !selects {
                let class = format!("{n}-{suffix}");
                assert_refused(
                    &nobody,
                    &session(&format!("c-{suffix}"), json!({"className": class})),
                    &class_refusal(&class, n),
                )
                .await;
            }
        }
        for (suffix, _, selects) in &cases {
            if *selects {
                let class = format!("{n}-{suffix}");
                assert_admitted(
                    &nobody,
                    &session(&format!("c-{suffix}"), json!({"className": class})),
                )
                .await;
            }
        }
        // No class of that name: left to the operator (ClassNotFound).
        assert_admitted(
            &nobody,
            &session("c-missing", json!({"className": format!("{n}-missing")})),
        )
        .await;
        assert_admitted(&nobody, &session("c-none", json!({}))).await;
        // The rule is the class's, whoever asks.
        let excluded = format!("{n}-in-x");
        assert_refused(
            &sessions(&ns.client, n),
            &session("c-admin", json!({"className": excluded})),
            &class_refusal(&excluded, n),
        )
        .await;
        // On UPDATE a changed className is checked ...
        assert_patch_refused(
            &nobody,
            "c-all",
            json!({"spec": {"className": excluded}}),
            &class_refusal(&excluded, n),
        )
        .await;
        // ... an unchanged one is not: once its class no longer selects the namespace, the
        // session can still be changed (and its finalizer removed).
        let all = format!("{n}-all");
        stop_selecting(&classes(&ns.client), &all).await;
        assert_refused(
            &nobody,
            &session("c-all-again", json!({"className": all})),
            &class_refusal(&all, n),
        )
        .await;
        assert_patch_admitted(
            &nobody,
            "c-all",
            json!({"metadata": {"labels": {"team": "a"}}}),
        )
        .await;
    })
    .await;
}

#[tokio::test]
async fn a_session_or_task_names_only_a_credential_that_selects_its_namespace() {
    install();
    let env = TestEnv::global();
    env.with_namespace("adm-credential", |ns| async move {
        let n = ns.name.as_str();
        let _cleanup = ClusterScoped {
            namespace: n.to_string(),
        };
        let users = restricted_users(&ns).await;
        let nobody = client_as(env, &users.nobody).await;
        let (nobody_sessions, nobody_tasks) = (sessions(&nobody, n), tasks(&nobody, n));
        let cases = selector_cases(n);
        create_params(
            &credentials(&ns.client),
            "GitHubCredential",
            n,
            &cases,
            credential_spec(n),
        )
        .await;

        for (suffix, _, selects) in cases.iter().rev() {
            if !selects {
                let credential = format!("{n}-{suffix}");
                let github = json!({"credentialName": credential});
                let want = credential_refusal(&credential, n);
                assert_refused(
                    &nobody_sessions,
                    &session(&format!("g-{suffix}"), json!({"github": github})),
                    &want,
                )
                .await;
                assert_refused(&nobody_tasks, &task(&format!("g-{suffix}"), github), &want).await;
            }
        }
        for (suffix, _, selects) in &cases {
            if *selects {
                let github = json!({"credentialName": format!("{n}-{suffix}")});
                assert_admitted(
                    &nobody_sessions,
                    &session(&format!("g-{suffix}"), json!({"github": github})),
                )
                .await;
                assert_admitted(&nobody_tasks, &task(&format!("g-{suffix}"), github)).await;
            }
        }
        let missing = json!({"credentialName": format!("{n}-missing")});
        assert_admitted(
            &nobody_sessions,
            &session("g-missing", json!({"github": missing})),
        )
        .await;
        assert_admitted(&nobody_tasks, &task("g-missing", missing)).await;
        // On UPDATE a changed credentialName is checked, an unchanged one is not.
        let excluded = format!("{n}-labels-x");
        assert_patch_refused(
            &nobody_sessions,
            "g-all",
            json!({"spec": {"github": {"credentialName": excluded}}}),
            &credential_refusal(&excluded, n),
        )
        .await;
        let all = format!("{n}-all");
        stop_selecting(&credentials(&ns.client), &all).await;
        assert_refused(
            &nobody_tasks,
            &task("g-all-again", json!({"credentialName": all})),
            &credential_refusal(&all, n),
        )
        .await;
        for api in [&nobody_sessions, &nobody_tasks] {
            assert_patch_admitted(api, "g-all", json!({"metadata": {"labels": {"team": "a"}}}))
                .await;
        }
    })
    .await;
}
