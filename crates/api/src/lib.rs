//! ccplant's Kubernetes API, group `ccplant.io`, version `v1alpha1`: the custom resources
//! [`AgentSession`] (short name `ags`) and [`GitHubTask`] (short name `ght`), both namespaced,
//! and the platform's cluster-scoped [`GitHubCredential`] (short name `ghc`), all in the
//! category `ccplant` (`kubectl get ccplant`), with a status subresource.
//!
//! This crate holds types, defaults, schema validation and pure helpers only; it does no I/O.
//! [`crds()`] returns both CustomResourceDefinitions (what `ccplant-operator crd` prints).
//!
//! - Defaults the apiserver fills in are in the schema (`agent.port` 3284, `agent.type` claude,
//!   `completion` Manual / 60s, `lifetime.maxDuration` 24h, `network.isolate` true, the
//!   `github.permissions` of a session, `retry` 5 attempts / 10s, …). Defaults of sections
//!   that are usually absent have accessors returning the effective value
//!   ([`AgentSessionSpec::effective_resources`], [`AgentSessionSpec::effective_metrics_port`],
//!   [`AgentSessionSpec::effective_run_as_user`], [`AgentSessionSpec::effective_permissions`],
//!   [`AgentSession::effective_work_branch`], …) and constants ([`DEFAULT_CPU_REQUEST`], …).
//! - Durations are [`DurationString`]s: kept as written, parsed with [`parse_duration`], which
//!   accepts exactly what the schema accepts.
//! - [`conditions`] has the condition types and reasons and [`conditions::set_condition`].
//! - [`AgentSessionSpec::validate`] and [`GitHubTaskSpec::validate`] re-check the rules below
//!   (all but the two transition rules) for objects that bypassed admission; they report the
//!   same messages.
//!
//! # Validation at admission
//!
//! The apiserver refuses an invalid object with one line per broken rule:
//! `* <field>: Invalid value: <value>: <message>` for CEL rules (`<value>` is `"object"` or
//! omitted for rules on objects), and the apiserver's standard wording for schema keywords.
//! Schema errors are reported first; CEL rules are evaluated once the schema is satisfied.
//! The CEL rules need Kubernetes 1.33 or later (the append-only rule uses two-variable
//! comprehensions).
//!
//! | Kind | Field | Check | Message |
//! |------|-------|-------|---------|
//! | AgentSession | `spec` | CEL, on update | `messages is append-only: existing entries cannot be changed or removed` |
//! | AgentSession | `spec` | CEL, on update | `prompt cannot be changed, added or removed after creation: send follow-ups with messages` |
//! | AgentSession | `spec` | CEL | `agent.port, editor.port and telemetry.metricsPort must be different from each other` |
//! | AgentSession | `spec` | CEL | `prompt and messages may hold at most 1 MiB together (UTF-8 bytes): the object must stay well below etcd's size limit; start a new session for a longer conversation` |
//! | AgentSession | `spec.className` | CEL | `className must be an AgentSessionClass name: lowercase letters, digits, '-' and '.'` |
//! | AgentSession | `spec.repository.name` | CEL | `repository must be "owner/repo"` |
//! | AgentSession | `spec.repository.ref` | CEL | `ref must be a branch, tag or commit SHA (letters, digits, '.', '_', '-', '+' and '/')` |
//! | AgentSession | `spec.repository.workBranch` | CEL | `workBranch must be a valid git branch name (letters, digits, '.', '_', '-', '+' and '/')` |
//! | AgentSession | `spec.github.secretRef.name` | CEL | `secretRef.name must be a Secret name: lowercase letters, digits, '-' and '.'` |
//! | AgentSession | `spec.github` | CEL | `credentialName and secretRef are mutually exclusive: name a GitHubCredential of the platform or a Secret of this namespace` |
//! | AgentSession | `spec.github.credentialName` | CEL | `credentialName must be a GitHubCredential name: lowercase letters, digits, '-' and '.'` |
//! | AgentSession | `spec.github.permissions` | CEL | `permissions must name at least one permission: an empty set would mint a token with every permission the GitHub App has` |
//! | AgentSession | `spec.completion.idleFor` | CEL | `must be a positive duration such as 90s, 30m or 24h` |
//! | AgentSession | `spec.lifetime.maxDuration` | CEL | `must be a positive duration such as 90s, 30m or 24h` |
//! | AgentSession | `spec.lifetime.idleTimeout` | CEL | `must be a positive duration such as 90s, 30m or 24h` |
//! | AgentSession | `spec.lifetime.ttlAfterFinished` | CEL | `must be a positive duration such as 90s, 30m or 24h` |
//! | AgentSession | `spec.workspace.size` | CEL | `size must be a positive quantity such as 10Gi or 500Mi` |
//! | AgentSession | `spec.telemetry.otlpEndpoint` | CEL | `otlpEndpoint must be an http or https URL such as http://otel-collector.observability:4317` |
//! | AgentSession | `spec.agent.type` | enum | `Unsupported value: "<v>": supported values: "claude", "codex", "gemini", "aider", "goose", "custom"` |
//! | AgentSession | `spec.agent.port` | 1..=65535 | `spec.agent.port in body should be greater than or equal to 1` / `... less than or equal to 65535` |
//! | AgentSession | `spec.editor.port` | 1..=65535 | `spec.editor.port in body should be greater than or equal to 1` / `... less than or equal to 65535` |
//! | AgentSession | `spec.telemetry.metricsPort` | 1..=65535 | `spec.telemetry.metricsPort in body should be greater than or equal to 1` / `... less than or equal to 65535` |
//! | AgentSession | `spec.completion.mode` | enum | `Unsupported value: "<v>": supported values: "Manual", "WhenIdle"` |
//! | AgentSession | `spec.github.permissions.<name>` | enum | `Unsupported value: "<v>": supported values: "read", "write"` |
//! | AgentSession | `spec.messages` | at most 256 | `Too many: <n>: must have at most 256 items` |
//! | AgentSession | `spec.messages[<i>]` | 1..=16384 chars | `spec.messages[<i>] in body should be at least 1 chars long` / `Too long: may not be more than 16384 bytes` |
//! | AgentSession | `spec.repository.name` | required | `Required value` |
//! | AgentSession | `spec.repository.depth` | >= 1 | `spec.repository.depth in body should be greater than or equal to 1` |
//! | AgentSession | `spec.pod.securityContext.runAsUser` | >= 1 | `spec.pod.securityContext.runAsUser in body should be greater than or equal to 1` |
//! | AgentSessionClass | `spec.lifetime.maxDuration` | CEL | `must be a positive duration such as 90s, 30m or 24h` |
//! | AgentSessionClass | `spec.lifetime.idleTimeout` | CEL | `must be a positive duration such as 90s, 30m or 24h` |
//! | GitHubTask | `spec` | CEL, on update | `spec is immutable: a GitHubTask is one-shot, create a new one instead` |
//! | GitHubTask | `spec` | CEL | `exactly one action must be set: createIssue, createPullRequest, approveAndMerge or comment` |
//! | GitHubTask | `spec.repository` | CEL | `repository must be "owner/repo" or "repo"` |
//! | GitHubTask | `spec.github.secretRef.name` | CEL | `secretRef.name must be a Secret name: lowercase letters, digits, '-' and '.'` |
//! | GitHubTask | `spec.github` | CEL | `credentialName and secretRef are mutually exclusive: name a GitHubCredential of the platform or a Secret of this namespace` |
//! | GitHubTask | `spec.github.credentialName` | CEL | `credentialName must be a GitHubCredential name: lowercase letters, digits, '-' and '.'` |
//! | GitHubTask | `spec.createIssue.title` | CEL | `title must not be blank` |
//! | GitHubTask | `spec.createIssue.triggerComment` | CEL | `triggerComment must not be empty when set` |
//! | GitHubTask | `spec.createPullRequest` | CEL | `head and fromSession are mutually exclusive: fromSession uses the session's work branch as head` |
//! | GitHubTask | `spec.createPullRequest.fromSession` | CEL | `fromSession must be an AgentSession name: lowercase letters, digits, '-' and '.'` |
//! | GitHubTask | `spec.approveAndMerge` | CEL | `pullRequest and fromTask are mutually exclusive: fromTask merges the pull request that task opened` |
//! | GitHubTask | `spec.approveAndMerge.fromTask` | CEL | `fromTask must be a GitHubTask name: lowercase letters, digits, '-' and '.'` |
//! | GitHubTask | `spec.approveAndMerge.expectedHeadSHA` | CEL | `expectedHeadSHA must be a full commit SHA: 40 lowercase hexadecimal characters` |
//! | GitHubTask | `spec.comment.body` | CEL | `comment body must not be empty` |
//! | GitHubTask | `spec.retry.backoff` | CEL | `must be a positive duration such as 90s, 30m or 24h` |
//! | GitHubTask | `spec.repository` | required | `Required value` |
//! | GitHubTask | `spec.createIssue.title` | 1..=256 chars | `spec.createIssue.title in body should be at least 1 chars long` / `Too long: may not be more than 256 bytes` |
//! | GitHubTask | `spec.createIssue.labels` | at most 100, each 1..=50 chars | `Too many: <n>: must have at most 100 items` |
//! | GitHubTask | `spec.createIssue.assignees` | at most 10, each 1..=39 chars | `Too many: <n>: must have at most 10 items` |
//! | GitHubTask | `spec.createIssue.milestone` | >= 1 | `spec.createIssue.milestone in body should be greater than or equal to 1` |
//! | GitHubTask | `spec.approveAndMerge.pullRequest` | >= 1 | `spec.approveAndMerge.pullRequest in body should be greater than or equal to 1` |
//! | GitHubTask | `spec.approveAndMerge.mergeMethod` | enum | `Unsupported value: "<v>": supported values: "merge", "squash", "rebase"` |
//! | GitHubTask | `spec.comment.issue` | required, >= 1 | `Required value` / `spec.comment.issue in body should be greater than or equal to 1` |
//! | GitHubTask | `spec.comment.body` | required, >= 1 char | `Required value` / `spec.comment.body in body should be at least 1 chars long` |
//! | GitHubTask | `spec.retry.maxAttempts` | 1..=100 | `spec.retry.maxAttempts in body should be greater than or equal to 1` / `... less than or equal to 100` |
//! | GitHubCredential | `spec.repositories` | CEL | `each repository must be "owner/repo" or "owner/*"` |
//! | GitHubCredential | `spec.actions` | CEL | `actions must not repeat an action` |
//! | GitHubCredential | `spec.secretRef.namespace` | CEL | `secretRef.namespace must be a namespace name: lowercase letters, digits and '-'` |
//! | GitHubCredential | `spec.secretRef.name` | CEL | `secretRef.name must be a Secret name: lowercase letters, digits, '-' and '.'` |
//! | GitHubCredential | `spec.repositories` | at most 256, at least 1 | `spec.repositories in body should have at least 1 items` / `Too many: <n>: must have at most 256 items` |
//! | GitHubCredential | `spec.namespaceSelector` | required | `Required value` |
//!
//! Every other string has a `maxLength` (`Too long: may not be more than <n> bytes`) and every
//! list a `maxItems`, which also bounds the cost of the CEL rules.

// The doc comments of API fields are also the CRD's descriptions, shown as plain text by
// `kubectl explain`; they stay free of Markdown link and HTML escapes.
#![allow(rustdoc::bare_urls, rustdoc::invalid_html_tags)]

mod agent_session;
mod agent_session_class;
mod common;
pub mod conditions;
mod duration;
mod github_credential;
mod github_task;
mod schema;
pub mod validation;

pub use agent_session::*;
pub use agent_session_class::*;
pub use common::*;
pub use duration::*;
pub use github_credential::*;
pub use github_task::*;
pub use validation::{InvalidSpec, Violation};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// Every CRD: AgentSession, GitHubTask, GitHubCredential.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        AgentSession::crd(),
        GitHubTask::crd(),
        GitHubCredential::crd(),
        AgentSessionClass::crd(),
    ]
}
