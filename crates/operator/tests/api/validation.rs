//! Admission validation on the real apiserver, one table row per rule: the bad object is
//! refused with the field path and the intended message, the matching good object is accepted.

use crate::common::{install_crds, merge};
use ccplant_api::validation as v;
use ccplant_api::{AgentSession, GitHubCredential, GitHubTask};
use ccplant_testenv::{TestEnv, TestNamespace};
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use serde_json::{Value, json};

#[derive(Clone, Copy, Debug)]
enum Kind {
    Session,
    Task,
    Credential,
}

impl Kind {
    fn resource(self) -> ApiResource {
        match self {
            Kind::Session => ApiResource::erase::<AgentSession>(&()),
            Kind::Task => ApiResource::erase::<GitHubTask>(&()),
            Kind::Credential => ApiResource::erase::<GitHubCredential>(&()),
        }
    }

    /// A minimal valid object of this kind.
    fn base(self, name: &str) -> Value {
        match self {
            Kind::Session => json!({
                "apiVersion": "ccplant.io/v1alpha1", "kind": "AgentSession",
                "metadata": { "name": name },
                "spec": { "agent": { "image": "ghcr.io/ccplant/agent:1" }, "prompt": "hello" },
            }),
            Kind::Task => json!({
                "apiVersion": "ccplant.io/v1alpha1", "kind": "GitHubTask",
                "metadata": { "name": name },
                "spec": { "repository": "octo/hello", "createIssue": { "title": "Bug" } },
            }),
            Kind::Credential => json!({
                "apiVersion": "ccplant.io/v1alpha1", "kind": "GitHubCredential",
                "metadata": { "name": name },
                "spec": {
                    "secretRef": { "namespace": "ccplant-system", "name": "github-app" },
                    "namespaceSelector": {},
                    "repositories": ["octo/*"],
                },
            }),
        }
    }
}

/// One rule: `bad` and `good` are JSON merge patches on the base spec.
struct Case {
    rule: &'static str,
    kind: Kind,
    bad: Value,
    good: Value,
    /// Substrings the refusal must contain (the field path and the message).
    expect: &'static [&'static str],
}

fn api(ns: &TestNamespace, kind: Kind) -> Api<DynamicObject> {
    match kind {
        Kind::Credential => Api::all_with(ns.client.clone(), &kind.resource()),
        _ => Api::namespaced_with(ns.client.clone(), &ns.name, &kind.resource()),
    }
}

fn object(kind: Kind, name: &str, spec_patch: &Value) -> DynamicObject {
    let mut obj = kind.base(name);
    merge(&mut obj["spec"], spec_patch);
    serde_json::from_value(obj).expect("dynamic object")
}

/// Creates the object for real (`dry_run: false`) or as a server-side dry run.
async fn create(
    api: &Api<DynamicObject>,
    obj: &DynamicObject,
    dry_run: bool,
) -> Result<(), String> {
    let pp = PostParams {
        dry_run,
        ..Default::default()
    };
    api.create(&pp, obj).await.map(|_| ()).map_err(|e| match e {
        kube::Error::Api(s) => s.message,
        other => other.to_string(),
    })
}

fn long(n: usize) -> String {
    "x".repeat(n)
}

fn cases() -> Vec<Case> {
    use Kind::*;
    vec![
        // Repository format.
        Case {
            rule: "session prompt + messages at most 1 MiB",
            kind: Kind::Session,
            // 60 messages of 16384 three-byte characters: 2.8 MiB, each entry within its own limit.
            bad: json!({"messages": vec!["€".repeat(16384); 60]}),
            good: json!({"messages": vec!["€".repeat(16384); 20]}),
            expect: &["prompt and messages may hold at most 1 MiB together"],
        },
        Case {
            rule: "session repository owner/repo",
            kind: Session,
            bad: json!({"repository": {"name": "hello-world"}}),
            good: json!({"repository": {"name": "octo/hello-world"}}),
            expect: &["spec.repository.name", v::OWNER_REPO_MESSAGE],
        },
        Case {
            rule: "session repository with extra path",
            kind: Session,
            bad: json!({"repository": {"name": "octo/hello/world"}}),
            good: json!({"repository": {"name": "octo-org/hello.world_2"}}),
            expect: &["spec.repository.name", v::OWNER_REPO_MESSAGE],
        },
        Case {
            rule: "task repository owner/repo or repo",
            kind: Task,
            bad: json!({"repository": "octo/hello/world"}),
            good: json!({"repository": "hello-world"}),
            expect: &["spec.repository", v::OWNER_REPO_OR_REPO_MESSAGE],
        },
        Case {
            rule: "task repository owner must not start with a dash",
            kind: Task,
            bad: json!({"repository": "-octo/hello"}),
            good: json!({"repository": "octo/hello"}),
            expect: &["spec.repository", v::OWNER_REPO_OR_REPO_MESSAGE],
        },
        // Exactly one GitHubTask action.
        Case {
            rule: "no action",
            kind: Task,
            bad: json!({"createIssue": null}),
            good: json!({"createIssue": null, "comment": {"issue": 7, "body": "ping"}}),
            expect: &[v::EXACTLY_ONE_ACTION_MESSAGE],
        },
        Case {
            rule: "two actions",
            kind: Task,
            bad: json!({"comment": {"issue": 7, "body": "ping"}}),
            good: json!({"createIssue": null, "approveAndMerge": {}}),
            expect: &[v::EXACTLY_ONE_ACTION_MESSAGE],
        },
        Case {
            rule: "createPullRequest head and fromSession",
            kind: Task,
            bad: json!({"createIssue": null, "createPullRequest": {"head": "feature", "fromSession": "s1"}}),
            good: json!({"createIssue": null, "createPullRequest": {"fromSession": "s1"}}),
            expect: &["spec.createPullRequest", v::HEAD_XOR_FROM_SESSION_MESSAGE],
        },
        // Issue title length.
        Case {
            rule: "issue title too long",
            kind: Task,
            bad: json!({"createIssue": {"title": long(257)}}),
            good: json!({"createIssue": {"title": long(256)}}),
            expect: &[
                "spec.createIssue.title",
                "Too long: may not be more than 256",
            ],
        },
        Case {
            rule: "issue title empty",
            kind: Task,
            bad: json!({"createIssue": {"title": ""}}),
            good: json!({"createIssue": {"title": "x"}}),
            expect: &["spec.createIssue.title", "should be at least 1 chars long"],
        },
        Case {
            rule: "issue title blank",
            kind: Task,
            bad: json!({"createIssue": {"title": "   "}}),
            good: json!({"createIssue": {"title": " a "}}),
            expect: &["spec.createIssue.title", v::ISSUE_TITLE_MESSAGE],
        },
        // Enums.
        Case {
            rule: "agent type enum",
            kind: Session,
            bad: json!({"agent": {"type": "chatgpt"}}),
            good: json!({"agent": {"type": "codex"}}),
            expect: &["spec.agent.type", "Unsupported value: \"chatgpt\""],
        },
        Case {
            rule: "completion mode enum",
            kind: Session,
            bad: json!({"completion": {"mode": "Sometimes"}}),
            good: json!({"completion": {"mode": "WhenIdle"}}),
            expect: &["spec.completion.mode", "Unsupported value: \"Sometimes\""],
        },
        Case {
            rule: "merge method enum",
            kind: Task,
            bad: json!({"createIssue": null, "approveAndMerge": {"mergeMethod": "fast-forward"}}),
            good: json!({"createIssue": null, "approveAndMerge": {"mergeMethod": "squash"}}),
            expect: &[
                "spec.approveAndMerge.mergeMethod",
                "Unsupported value: \"fast-forward\"",
            ],
        },
        // Durations.
        Case {
            rule: "maxDuration is a duration",
            kind: Session,
            bad: json!({"lifetime": {"maxDuration": "1 day"}}),
            good: json!({"lifetime": {"maxDuration": "36h"}}),
            expect: &["spec.lifetime.maxDuration", v::DURATION_MESSAGE],
        },
        Case {
            rule: "idleTimeout is positive",
            kind: Session,
            bad: json!({"lifetime": {"idleTimeout": "0s"}}),
            good: json!({"lifetime": {"idleTimeout": "1h30m"}}),
            expect: &["spec.lifetime.idleTimeout", v::DURATION_MESSAGE],
        },
        Case {
            rule: "ttlAfterFinished is a duration",
            kind: Session,
            bad: json!({"lifetime": {"ttlAfterFinished": "-5m"}}),
            good: json!({"lifetime": {"ttlAfterFinished": "90s"}}),
            expect: &["spec.lifetime.ttlAfterFinished", v::DURATION_MESSAGE],
        },
        Case {
            rule: "completion idleFor is a duration",
            kind: Session,
            bad: json!({"completion": {"idleFor": "soon"}}),
            good: json!({"completion": {"idleFor": "1.5m"}}),
            expect: &["spec.completion.idleFor", v::DURATION_MESSAGE],
        },
        Case {
            rule: "retry backoff is a duration",
            kind: Task,
            bad: json!({"retry": {"backoff": "10"}}),
            good: json!({"retry": {"backoff": "500ms"}}),
            expect: &["spec.retry.backoff", v::DURATION_MESSAGE],
        },
        // Port ranges.
        Case {
            rule: "agent port >= 1",
            kind: Session,
            bad: json!({"agent": {"port": 0}}),
            good: json!({"agent": {"port": 1}}),
            expect: &["spec.agent.port", "should be greater than or equal to 1"],
        },
        Case {
            rule: "agent port <= 65535",
            kind: Session,
            bad: json!({"agent": {"port": 65536}}),
            good: json!({"agent": {"port": 65535}}),
            expect: &["spec.agent.port", "should be less than or equal to 65535"],
        },
        Case {
            rule: "editor port range",
            kind: Session,
            bad: json!({"editor": {"enabled": true, "port": 70000}}),
            good: json!({"editor": {"enabled": true, "port": 8443}}),
            expect: &["spec.editor.port", "should be less than or equal to 65535"],
        },
        Case {
            rule: "metrics port range",
            kind: Session,
            bad: json!({"telemetry": {"metricsPort": -1}}),
            good: json!({"telemetry": {"metricsPort": 9090}}),
            expect: &[
                "spec.telemetry.metricsPort",
                "should be greater than or equal to 1",
            ],
        },
        Case {
            rule: "ports distinct",
            kind: Session,
            bad: json!({"editor": {"enabled": true, "port": 3284}}),
            good: json!({"editor": {"enabled": true, "port": 3285}}),
            expect: &[v::DISTINCT_PORTS_MESSAGE],
        },
        // Other rules.
        Case {
            rule: "workspace size is a quantity",
            kind: Session,
            bad: json!({"workspace": {"size": "lots"}}),
            good: json!({"workspace": {"size": "10Gi"}}),
            expect: &["spec.workspace.size", v::QUANTITY_MESSAGE],
        },
        Case {
            rule: "expectedHeadSHA is 40 hex",
            kind: Task,
            bad: json!({"createIssue": null, "approveAndMerge": {"pullRequest": 3, "expectedHeadSHA": "abc123"}}),
            good: json!({"createIssue": null, "approveAndMerge": {"pullRequest": 3, "expectedHeadSHA": "0123456789abcdef0123456789abcdef01234567"}}),
            expect: &[
                "spec.approveAndMerge.expectedHeadSHA",
                v::COMMIT_SHA_MESSAGE,
            ],
        },
        Case {
            rule: "comment issue >= 1",
            kind: Task,
            bad: json!({"createIssue": null, "comment": {"issue": 0, "body": "ping"}}),
            good: json!({"createIssue": null, "comment": {"issue": 1, "body": "ping"}}),
            expect: &["spec.comment.issue", "should be greater than or equal to 1"],
        },
        Case {
            rule: "comment body not blank",
            kind: Task,
            bad: json!({"createIssue": null, "comment": {"issue": 1, "body": " \n"}}),
            good: json!({"createIssue": null, "comment": {"issue": 1, "body": "ok"}}),
            expect: &["spec.comment.body", v::COMMENT_BODY_MESSAGE],
        },
        Case {
            rule: "retry maxAttempts >= 1",
            kind: Task,
            bad: json!({"retry": {"maxAttempts": 0}}),
            good: json!({"retry": {"maxAttempts": 1}}),
            expect: &[
                "spec.retry.maxAttempts",
                "should be greater than or equal to 1",
            ],
        },
        Case {
            rule: "repository ref is a git ref",
            kind: Session,
            bad: json!({"repository": {"name": "octo/hello", "ref": "main..dev"}}),
            good: json!({"repository": {"name": "octo/hello", "ref": "release/v1.2"}}),
            expect: &["spec.repository.ref", v::GIT_REF_MESSAGE],
        },
        Case {
            rule: "workBranch is a branch name",
            kind: Session,
            bad: json!({"repository": {"name": "octo/hello", "workBranch": "bad branch"}}),
            good: json!({"repository": {"name": "octo/hello", "workBranch": "ccplant/fix-1"}}),
            expect: &["spec.repository.workBranch", v::WORK_BRANCH_MESSAGE],
        },
        Case {
            rule: "otlpEndpoint is an http(s) URL",
            kind: Session,
            bad: json!({"telemetry": {"otlpEndpoint": "ftp://collector:4317"}}),
            good: json!({"telemetry": {"otlpEndpoint": "http://otel-collector.observability:4317"}}),
            expect: &["spec.telemetry.otlpEndpoint", v::OTLP_ENDPOINT_MESSAGE],
        },
        Case {
            rule: "github permission level enum",
            kind: Session,
            bad: json!({"github": {"permissions": {"contents": "admin"}}}),
            good: json!({"github": {"permissions": {"contents": "read"}}}),
            expect: &[
                "spec.github.permissions.contents",
                "Unsupported value: \"admin\"",
            ],
        },
        Case {
            rule: "session permissions never empty",
            kind: Session,
            bad: json!({"github": {"permissions": {}}}),
            good: json!({"github": {"permissions": {"contents": "read"}}}),
            expect: &["spec.github.permissions", v::PERMISSIONS_NOT_EMPTY_MESSAGE],
        },
        Case {
            rule: "session credentialName xor secretRef",
            kind: Session,
            bad: json!({"github": {"credentialName": "platform", "secretRef": {"name": "mine"}}}),
            good: json!({"github": {"credentialName": "platform"}}),
            expect: &["spec.github", v::CREDENTIAL_XOR_SECRET_MESSAGE],
        },
        Case {
            rule: "task credentialName is an object name",
            kind: Task,
            bad: json!({"github": {"credentialName": "Platform!"}}),
            good: json!({"github": {"credentialName": "platform"}}),
            expect: &["spec.github.credentialName", v::CREDENTIAL_NAME_MESSAGE],
        },
        Case {
            rule: "task credentialName xor secretRef",
            kind: Task,
            bad: json!({"github": {"credentialName": "platform", "secretRef": {"name": "mine"}}}),
            good: json!({"github": {"secretRef": {"name": "mine"}}}),
            expect: &["spec.github", v::CREDENTIAL_XOR_SECRET_MESSAGE],
        },
        Case {
            rule: "credential repositories are owner/repo or owner/*",
            kind: Credential,
            bad: json!({"repositories": ["octo"]}),
            good: json!({"repositories": ["octo/hello", "acme/*"]}),
            expect: &["spec.repositories", v::REPOSITORY_PATTERNS_MESSAGE],
        },
        Case {
            rule: "credential repositories required, at least one",
            kind: Credential,
            bad: json!({"repositories": []}),
            good: json!({"repositories": ["octo/*"]}),
            expect: &["spec.repositories", "at least 1 items"],
        },
        Case {
            rule: "credential actions do not repeat",
            kind: Credential,
            bad: json!({"actions": ["Comment", "Comment"]}),
            good: json!({"actions": ["Comment", "ApproveAndMerge"]}),
            expect: &["spec.actions", v::DISTINCT_ACTIONS_MESSAGE],
        },
        Case {
            rule: "credential namespaceSelector required",
            kind: Credential,
            bad: json!({"namespaceSelector": null}),
            good: json!({"namespaceSelector": {"matchLabels": {"team": "a"}}}),
            expect: &["spec.namespaceSelector", "Required value"],
        },
        Case {
            rule: "credential secret namespace",
            kind: Credential,
            bad: json!({"secretRef": {"namespace": "Ops", "name": "app"}}),
            good: json!({"secretRef": {"namespace": "ops", "name": "app"}}),
            expect: &["spec.secretRef.namespace", v::SECRET_NAMESPACE_MESSAGE],
        },
        Case {
            rule: "session secretRef name",
            kind: Session,
            bad: json!({"github": {"secretRef": {"name": "-bad"}}}),
            good: json!({"github": {"secretRef": {"name": "gh.app-1"}}}),
            expect: &["spec.github.secretRef.name", v::SECRET_NAME_MESSAGE],
        },
        Case {
            rule: "triggerComment not empty when set",
            kind: Task,
            bad: json!({"createIssue": {"title": "Bug", "triggerComment": " "}}),
            good: json!({"createIssue": {"title": "Bug", "triggerComment": "@claude implement this"}}),
            expect: &[
                "spec.createIssue.triggerComment",
                v::TRIGGER_COMMENT_MESSAGE,
            ],
        },
        Case {
            rule: "fromSession is an object name",
            kind: Task,
            bad: json!({"createIssue": null, "createPullRequest": {"fromSession": "Session_1"}}),
            good: json!({"createIssue": null, "createPullRequest": {"fromSession": "session-1"}}),
            expect: &[
                "spec.createPullRequest.fromSession",
                v::SESSION_NAME_MESSAGE,
            ],
        },
        Case {
            rule: "pullRequest and fromTask",
            kind: Task,
            bad: json!({"createIssue": null, "approveAndMerge": {"pullRequest": 4, "fromTask": "open-pr"}}),
            good: json!({"createIssue": null, "approveAndMerge": {"fromTask": "open-pr"}}),
            expect: &[
                "spec.approveAndMerge",
                v::PULL_REQUEST_XOR_FROM_TASK_MESSAGE,
            ],
        },
        Case {
            rule: "fromTask is an object name",
            kind: Task,
            bad: json!({"createIssue": null, "approveAndMerge": {"fromTask": "Open PR"}}),
            good: json!({"createIssue": null, "approveAndMerge": {"fromTask": "open-pr"}}),
            expect: &["spec.approveAndMerge.fromTask", v::TASK_NAME_MESSAGE],
        },
        Case {
            rule: "github secretRef name",
            kind: Task,
            bad: json!({"github": {"secretRef": {"name": "Not_A_Name"}}}),
            good: json!({"github": {"secretRef": {"name": "github-token"}}}),
            expect: &["spec.github.secretRef.name", v::SECRET_NAME_MESSAGE],
        },
    ]
}

#[tokio::test]
async fn each_validation_rule_refuses_the_bad_object_and_accepts_the_good_one() {
    install_crds().await;
    let env = TestEnv::global();
    env.with_namespace("validation", |ns| async move {
        let mut failures = Vec::new();
        for (i, case) in cases().into_iter().enumerate() {
            let api = api(&ns, case.kind);
            let name = match case.kind {
                // Cluster-scoped: named after the test's namespace, so runs never collide.
                Kind::Credential => format!("{}-case-{i}", ns.name),
                _ => format!("case-{i}"),
            };
            match create(&api, &object(case.kind, &name, &case.bad), true).await {
                Ok(()) => failures.push(format!("{}: bad object was accepted", case.rule)),
                Err(msg) => {
                    for want in case.expect {
                        if !msg.contains(want) {
                            failures.push(format!("{}: refusal lacks {want:?}: {msg}", case.rule));
                        }
                    }
                }
            }
            if let Err(msg) = create(&api, &object(case.kind, &name, &case.good), true).await {
                failures.push(format!("{}: good object refused: {msg}", case.rule));
            }
        }
        assert!(
            failures.is_empty(),
            "{} failures:\n{}",
            failures.len(),
            failures.join("\n")
        );
    })
    .await;
}

#[tokio::test]
async fn githubtask_spec_is_immutable_but_metadata_is_not() {
    install_crds().await;
    let env = TestEnv::global();
    env.with_namespace("immutable", |ns| async move {
        let api = api(&ns, Kind::Task);
        create(&api, &object(Kind::Task, "task", &json!({})), false)
            .await
            .expect("create");

        let mut changed = api.get("task").await.unwrap();
        changed.data["spec"]["createIssue"]["title"] = json!("Another title");
        let err = api
            .replace("task", &PostParams::default(), &changed)
            .await
            .unwrap_err();
        let kube::Error::Api(status) = err else {
            panic!("unexpected error {err}")
        };
        assert_eq!(status.code, 422, "{status:?}");
        assert!(
            status.message.contains(v::SPEC_IMMUTABLE_MESSAGE),
            "{}",
            status.message
        );

        let mut labelled = api.get("task").await.unwrap();
        labelled
            .metadata
            .labels
            .get_or_insert_default()
            .insert("team".into(), "platform".into());
        api.replace("task", &PostParams::default(), &labelled)
            .await
            .expect("metadata stays mutable");
    })
    .await;
}

#[tokio::test]
async fn agentsession_messages_are_append_only_and_the_prompt_is_fixed() {
    install_crds().await;
    let env = TestEnv::global();
    env.with_namespace("append-only", |ns| async move {
        let api = api(&ns, Kind::Session);
        create(
            &api,
            &object(Kind::Session, "s", &json!({"messages": ["first"]})),
            false,
        )
        .await
        .expect("create");
        create(
            &api,
            &object(Kind::Session, "p", &json!({"prompt": "the task"})),
            false,
        )
        .await
        .expect("create with a prompt");

        for (what, messages) in [
            ("editing an entry", json!(["changed"])),
            ("removing an entry", json!([])),
            ("inserting before an entry", json!(["zeroth", "first"])),
        ] {
            let mut obj = api.get("s").await.unwrap();
            obj.data["spec"]["messages"] = messages;
            let err = api
                .replace("s", &PostParams::default(), &obj)
                .await
                .expect_err(what);
            let kube::Error::Api(status) = err else {
                panic!("{what}: unexpected error {err}")
            };
            assert!(
                status.message.contains(v::MESSAGES_APPEND_ONLY_MESSAGE),
                "{what}: {}",
                status.message
            );
        }

        let mut obj = api.get("s").await.unwrap();
        obj.data["spec"]["messages"] = json!(["first", "second"]);
        api.replace("s", &PostParams::default(), &obj)
            .await
            .expect("appending is allowed");
        // The prompt is the conversation's first message: fixed at creation.
        for (what, prompt) in [
            ("adding a prompt", json!("a prompt after the fact")),
            ("removing the prompt", Value::Null),
        ] {
            let mut obj = api
                .get(if prompt.is_null() { "p" } else { "s" })
                .await
                .unwrap_or_else(|_| panic!("{what}: get"));
            let name = obj.metadata.name.clone().unwrap();
            match &prompt {
                Value::Null => {
                    obj.data["spec"].as_object_mut().unwrap().remove("prompt");
                }
                p => obj.data["spec"]["prompt"] = p.clone(),
            }
            let err = api
                .replace(&name, &PostParams::default(), &obj)
                .await
                .expect_err(what);
            let kube::Error::Api(status) = err else {
                panic!("{what}: unexpected error {err}")
            };
            assert!(
                status.message.contains(v::PROMPT_IMMUTABLE_MESSAGE),
                "{what}: {}",
                status.message
            );
        }
        let mut obj = api.get("p").await.unwrap();
        obj.data["spec"]["prompt"] = json!("another task");
        let err = api
            .replace("p", &PostParams::default(), &obj)
            .await
            .expect_err("changing the prompt");
        assert!(
            err.to_string().contains(v::PROMPT_IMMUTABLE_MESSAGE),
            "changing the prompt: {err}"
        );

        // Other spec fields of a session stay editable (e.g. suspend).
        let mut obj = api.get("s").await.unwrap();
        obj.data["spec"]["suspend"] = json!(true);
        api.replace("s", &PostParams::default(), &obj)
            .await
            .expect("suspend is editable");
    })
    .await;
}
