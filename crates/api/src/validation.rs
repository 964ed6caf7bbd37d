//! The CEL rules of both CRDs, their messages, and Rust checks that mirror them.
//!
//! Admission refuses invalid objects with these messages. The operator calls the `validate`
//! methods of the specs as well, so an object that bypassed the schema (an older CRD, a manual
//! edit of etcd) ends as `Ready=False`, reason `InvalidSpec`, with the same message, instead of a
//! panic or a retry loop.

use std::fmt;

// ---- length limits (every CEL-validated string needs one, so rule costs are bounded) ----

/// Longest accepted duration string.
pub const MAX_DURATION_LENGTH: usize = 64;
/// `owner/repo`: a GitHub login is at most 39 characters, a repository name at most 100.
pub const MAX_REPOSITORY_LENGTH: usize = 140;
/// Longest git ref or branch name accepted.
pub const MAX_GIT_REF_LENGTH: usize = 255;
/// Longest Kubernetes object name (DNS subdomain).
pub const MAX_OBJECT_NAME_LENGTH: usize = 253;
/// Longest issue, pull request or review body GitHub accepts.
pub const MAX_BODY_LENGTH: usize = 65536;
/// Longest prompt.
pub const MAX_PROMPT_LENGTH: usize = 65536;
/// Longest follow-up message.
pub const MAX_MESSAGE_LENGTH: usize = 16384;
/// Most follow-up messages one session accepts.
pub const MAX_MESSAGES: usize = 256;
/// Longest URL.
pub const MAX_URL_LENGTH: usize = 2048;

// ---- rules and messages ----

/// Every duration field.
pub const DURATION_RULE: &str = "self.matches('^([0-9]+([.][0-9]+)?(ns|us|\u{b5}s|\u{3bc}s|ms|s|m|h))+$') && duration(self) > duration('0s')";
/// Message of [`DURATION_RULE`].
pub const DURATION_MESSAGE: &str = "must be a positive duration such as 90s, 30m or 24h";

/// `AgentSession.spec.repository.name`.
pub const OWNER_REPO_RULE: &str = "self.matches('^[A-Za-z0-9]([A-Za-z0-9-]{0,37}[A-Za-z0-9])?/[A-Za-z0-9._-]{1,100}$') && !self.endsWith('/.') && !self.endsWith('/..')";
/// Message of [`OWNER_REPO_RULE`].
pub const OWNER_REPO_MESSAGE: &str = "repository must be \"owner/repo\"";

/// `GitHubTask.spec.repository`.
pub const OWNER_REPO_OR_REPO_RULE: &str = "self.matches('^([A-Za-z0-9]([A-Za-z0-9-]{0,37}[A-Za-z0-9])?/)?[A-Za-z0-9._-]{1,100}$') && self != '.' && self != '..' && !self.endsWith('/.') && !self.endsWith('/..')";
/// Message of [`OWNER_REPO_OR_REPO_RULE`].
pub const OWNER_REPO_OR_REPO_MESSAGE: &str = "repository must be \"owner/repo\" or \"repo\"";

/// Git branch, tag or commit names the operator hands to git: no leading `-` (it would read as
/// an option), none of the sequences git refuses.
pub const GIT_REF_RULE: &str = "self.matches('^[A-Za-z0-9_][A-Za-z0-9._/+-]*$') && !self.contains('..') && !self.contains('//') && !self.contains('/.') && !self.endsWith('/') && !self.endsWith('.') && !self.endsWith('.lock')";
/// Message of [`GIT_REF_RULE`] on `repository.ref`.
pub const GIT_REF_MESSAGE: &str =
    "ref must be a branch, tag or commit SHA (letters, digits, '.', '_', '-', '+' and '/')";
/// Message of [`GIT_REF_RULE`] on `repository.workBranch`.
pub const WORK_BRANCH_MESSAGE: &str =
    "workBranch must be a valid git branch name (letters, digits, '.', '_', '-', '+' and '/')";

/// Names of Secrets and AgentSessions (DNS subdomain).
pub const OBJECT_NAME_RULE: &str =
    "self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')";
/// Message of [`OBJECT_NAME_RULE`] on `secretRef.name`.
pub const SECRET_NAME_MESSAGE: &str =
    "secretRef.name must be a Secret name: lowercase letters, digits, '-' and '.'";
/// Message of [`OBJECT_NAME_RULE`] on `createPullRequest.fromSession`.
pub const SESSION_NAME_MESSAGE: &str =
    "fromSession must be an AgentSession name: lowercase letters, digits, '-' and '.'";

/// `AgentSession.spec`: `messages` only grows.
pub const MESSAGES_APPEND_ONLY_RULE: &str = "!has(oldSelf.messages) || oldSelf.messages.size() == 0 || (has(self.messages) && self.messages.size() >= oldSelf.messages.size() && oldSelf.messages.all(i, m, self.messages[i] == m))";
/// The most the prompt and all messages may hold together, in bytes: well below etcd's object
/// limit (1.5 MiB by default) with room for the rest of the object.
pub const MAX_CONVERSATION_BYTES: usize = 1 << 20;
/// `AgentSession.spec`: prompt + messages within [`MAX_CONVERSATION_BYTES`] (UTF-8 bytes).
pub const CONVERSATION_SIZE_RULE: &str = "(has(self.prompt) ? size(bytes(self.prompt)) : 0) + (has(self.messages) ? self.messages.map(m, size(bytes(m))).sum() : 0) <= 1048576";
/// Message of [`CONVERSATION_SIZE_RULE`].
pub const CONVERSATION_SIZE_MESSAGE: &str = "prompt and messages may hold at most 1 MiB together (UTF-8 bytes): the object must stay well below etcd's size limit; start a new session for a longer conversation";
/// Message of [`MESSAGES_APPEND_ONLY_RULE`].
pub const MESSAGES_APPEND_ONLY_MESSAGE: &str =
    "messages is append-only: existing entries cannot be changed or removed";

/// `AgentSession.spec`: the prompt is the first message of the conversation; it is set at
/// creation or never.
pub const PROMPT_IMMUTABLE_RULE: &str = "has(self.prompt) == has(oldSelf.prompt) && (!has(self.prompt) || self.prompt == oldSelf.prompt)";
/// Message of [`PROMPT_IMMUTABLE_RULE`].
pub const PROMPT_IMMUTABLE_MESSAGE: &str =
    "prompt cannot be changed, added or removed after creation: send follow-ups with messages";

/// `AgentSession.spec`: the pod's ports must not collide.
pub const DISTINCT_PORTS_RULE: &str = "(!self.?editor.?enabled.orValue(false) || self.editor.?port.orValue(8080) != self.?agent.?port.orValue(3284)) && self.?telemetry.?metricsPort.orValue(9464) != self.?agent.?port.orValue(3284) && (!self.?editor.?enabled.orValue(false) || self.editor.?port.orValue(8080) != self.?telemetry.?metricsPort.orValue(9464))";
/// Message of [`DISTINCT_PORTS_RULE`].
pub const DISTINCT_PORTS_MESSAGE: &str =
    "agent.port, editor.port and telemetry.metricsPort must be different from each other";

/// `AgentSession.spec.workspace.size`.
pub const QUANTITY_RULE: &str = "isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))";
/// Message of [`QUANTITY_RULE`].
pub const QUANTITY_MESSAGE: &str = "size must be a positive quantity such as 10Gi or 500Mi";

/// `AgentSession.spec.telemetry.otlpEndpoint`.
pub const HTTP_URL_RULE: &str = "isURL(self) && url(self).getScheme() in ['http', 'https']";
/// Message of [`HTTP_URL_RULE`].
pub const OTLP_ENDPOINT_MESSAGE: &str =
    "otlpEndpoint must be an http or https URL such as http://otel-collector.observability:4317";

/// `GitHubTask.spec`: immutable.
pub const SPEC_IMMUTABLE_RULE: &str = "self == oldSelf";
/// Message of [`SPEC_IMMUTABLE_RULE`].
pub const SPEC_IMMUTABLE_MESSAGE: &str =
    "spec is immutable: a GitHubTask is one-shot, create a new one instead";

/// `GitHubTask.spec`: one action.
pub const EXACTLY_ONE_ACTION_RULE: &str = "[has(self.createIssue), has(self.createPullRequest), has(self.approveAndMerge), has(self.comment)].filter(x, x).size() == 1";
/// Message of [`EXACTLY_ONE_ACTION_RULE`].
pub const EXACTLY_ONE_ACTION_MESSAGE: &str =
    "exactly one action must be set: createIssue, createPullRequest, approveAndMerge or comment";

/// `GitHubTask.spec.createPullRequest`.
pub const HEAD_XOR_FROM_SESSION_RULE: &str = "!(has(self.head) && has(self.fromSession))";
/// Message of [`HEAD_XOR_FROM_SESSION_RULE`].
pub const HEAD_XOR_FROM_SESSION_MESSAGE: &str = "head and fromSession are mutually exclusive: fromSession uses the session's work branch as head";

/// Message of [`OBJECT_NAME_RULE`] on `approveAndMerge.fromTask`.
pub const TASK_NAME_MESSAGE: &str =
    "fromTask must be a GitHubTask name: lowercase letters, digits, '-' and '.'";

/// `GitHubTask.spec.approveAndMerge`.
pub const PULL_REQUEST_XOR_FROM_TASK_RULE: &str = "!(has(self.pullRequest) && has(self.fromTask))";
/// `GitHubCredential.spec.repositories`: each "owner/repo" or "owner/*".
pub const REPOSITORY_PATTERNS_RULE: &str = "self.all(p, p.matches('^[A-Za-z0-9]([A-Za-z0-9-]{0,37}[A-Za-z0-9])?/([A-Za-z0-9._-]{1,100}|[*])$'))";
/// Message of [`REPOSITORY_PATTERNS_RULE`].
pub const REPOSITORY_PATTERNS_MESSAGE: &str =
    "each repository must be \"owner/repo\" or \"owner/*\"";
/// `GitHubCredential.spec.actions`: no action twice.
pub const DISTINCT_ACTIONS_RULE: &str = "self.all(a, self.exists_one(b, b == a))";
/// Message of [`DISTINCT_ACTIONS_RULE`].
pub const DISTINCT_ACTIONS_MESSAGE: &str = "actions must not repeat an action";
/// A namespace name (a DNS label).
pub const NAMESPACE_NAME_RULE: &str = "self.matches('^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$')";
/// Message of [`NAMESPACE_NAME_RULE`] on `secretRef.namespace`.
pub const SECRET_NAMESPACE_MESSAGE: &str =
    "secretRef.namespace must be a namespace name: lowercase letters, digits and '-'";
/// Message of [`OBJECT_NAME_RULE`] on `github.credentialName`.
pub const CREDENTIAL_NAME_MESSAGE: &str =
    "credentialName must be a GitHubCredential name: lowercase letters, digits, '-' and '.'";
/// Message of [`OBJECT_NAME_RULE`] on `className`.
pub const CLASS_NAME_MESSAGE: &str =
    "className must be an AgentSessionClass name: lowercase letters, digits, '-' and '.'";
/// `github`: a credential or a Secret, not both.
pub const CREDENTIAL_XOR_SECRET_RULE: &str = "!(has(self.credentialName) && has(self.secretRef))";
/// Message of [`CREDENTIAL_XOR_SECRET_RULE`].
pub const CREDENTIAL_XOR_SECRET_MESSAGE: &str = "credentialName and secretRef are mutually exclusive: name a GitHubCredential of the platform or a Secret of this namespace";
/// `github.permissions` of a session: never empty (GitHub would mint a token with every
/// permission the App has).
pub const PERMISSIONS_NOT_EMPTY_RULE: &str = "self.size() > 0";
/// Message of [`PERMISSIONS_NOT_EMPTY_RULE`].
pub const PERMISSIONS_NOT_EMPTY_MESSAGE: &str = "permissions must name at least one permission: an empty set would mint a token with every permission the GitHub App has";

/// Message of [`PULL_REQUEST_XOR_FROM_TASK_RULE`].
pub const PULL_REQUEST_XOR_FROM_TASK_MESSAGE: &str = "pullRequest and fromTask are mutually exclusive: fromTask merges the pull request that task opened";

/// `GitHubTask.spec.approveAndMerge.expectedHeadSHA`.
pub const COMMIT_SHA_RULE: &str = "self.matches('^[0-9a-f]{40}$')";
/// Message of [`COMMIT_SHA_RULE`].
pub const COMMIT_SHA_MESSAGE: &str =
    "expectedHeadSHA must be a full commit SHA: 40 lowercase hexadecimal characters";

/// `GitHubTask.spec.comment.body` and `createIssue.triggerComment`.
pub const NOT_BLANK_RULE: &str = "self.trim() != ''";
/// Message of [`NOT_BLANK_RULE`] on `comment.body`.
pub const COMMENT_BODY_MESSAGE: &str = "comment body must not be empty";
/// Message of [`NOT_BLANK_RULE`] on `createIssue.title`.
pub const ISSUE_TITLE_MESSAGE: &str = "title must not be blank";
/// Message of [`NOT_BLANK_RULE`] on `createIssue.triggerComment`.
pub const TRIGGER_COMMENT_MESSAGE: &str = "triggerComment must not be empty when set";

// ---- Rust mirrors of the rules ----

/// One rule an object breaks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Path of the offending field, e.g. `spec.lifetime.maxDuration`.
    pub field: String,
    /// What is wrong, in the words admission would use.
    pub message: String,
}

/// A spec that breaks rules the schema normally enforces.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct InvalidSpec {
    /// Every rule the spec breaks, in field order.
    pub violations: Vec<Violation>,
}

impl fmt::Display for InvalidSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, v) in self.violations.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", v.field, v.message)?;
        }
        Ok(())
    }
}

/// Collects violations while a spec is walked.
#[derive(Debug, Default)]
pub(crate) struct Violations(Vec<Violation>);

impl Violations {
    pub(crate) fn check(&mut self, ok: bool, field: &str, message: &str) {
        if !ok {
            self.0.push(Violation {
                field: field.to_owned(),
                message: message.to_owned(),
            });
        }
    }

    pub(crate) fn check_duration(&mut self, value: Option<&crate::DurationString>, field: &str) {
        if let Some(value) = value {
            self.check(value.parse().is_ok(), field, DURATION_MESSAGE);
        }
    }

    /// `spec.github`: credentialName xor secretRef, and credentialName an object name.
    pub(crate) fn check_github_source(
        &mut self,
        credential_name: Option<&str>,
        secret_ref: Option<&crate::SecretReference>,
    ) {
        self.check(
            !(credential_name.is_some() && secret_ref.is_some()),
            "spec.github",
            CREDENTIAL_XOR_SECRET_MESSAGE,
        );
        self.check(
            credential_name.is_none_or(is_valid_object_name),
            "spec.github.credentialName",
            CREDENTIAL_NAME_MESSAGE,
        );
    }

    pub(crate) fn into_result(self) -> Result<(), InvalidSpec> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(InvalidSpec { violations: self.0 })
        }
    }
}

/// A GitHub login: alphanumerics and `-`, not at either end, at most 39 characters.
pub fn is_valid_github_owner(owner: &str) -> bool {
    let bytes = owner.as_bytes();
    (1..=39).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        && bytes.first() != Some(&b'-')
        && bytes.last() != Some(&b'-')
}

/// A GitHub repository name: alphanumerics, `.`, `_` and `-`, at most 100 characters, not `.`
/// or `..`.
pub fn is_valid_github_repo_name(repo: &str) -> bool {
    (1..=100).contains(&repo.len())
        && repo
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && repo != "."
        && repo != ".."
}

/// `owner/repo`, as [`OWNER_REPO_RULE`] accepts it.
pub fn is_valid_owner_repo(value: &str) -> bool {
    value.split_once('/').is_some_and(|(owner, repo)| {
        is_valid_github_owner(owner) && is_valid_github_repo_name(repo)
    })
}

/// `owner/repo` or `repo`, as [`OWNER_REPO_OR_REPO_RULE`] accepts it.
pub fn is_valid_owner_repo_or_repo(value: &str) -> bool {
    match value.split_once('/') {
        Some(_) => is_valid_owner_repo(value),
        None => is_valid_github_repo_name(value),
    }
}

/// A git ref as [`GIT_REF_RULE`] accepts it.
pub fn is_valid_git_ref(value: &str) -> bool {
    let bytes = value.as_bytes();
    let first_ok = bytes
        .first()
        .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_');
    first_ok
        && value.len() <= MAX_GIT_REF_LENGTH
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'/' | b'+' | b'-'))
        && !value.contains("..")
        && !value.contains("//")
        && !value.contains("/.")
        && !value.ends_with('/')
        && !value.ends_with('.')
        && !value.ends_with(".lock")
}

/// A Kubernetes object name (RFC 1123 DNS subdomain), as [`OBJECT_NAME_RULE`] accepts it.
pub fn is_valid_object_name(value: &str) -> bool {
    value.len() <= MAX_OBJECT_NAME_LENGTH
        && !value.is_empty()
        && value.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                && b.first() != Some(&b'-')
                && b.last() != Some(&b'-')
        })
}

/// A full lowercase commit SHA, as [`COMMIT_SHA_RULE`] accepts it.
pub fn is_valid_commit_sha(value: &str) -> bool {
    value.len() == 40
        && value
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_repo() {
        for ok in [
            "ccplant-demo/hello-world",
            "a/b",
            "octo-org/repo.name_1",
            "A1/.github",
            "abcdefghijklmnopqrstuvwxyz0123456789abc/x",
        ] {
            assert!(is_valid_owner_repo(ok), "{ok}");
            assert!(is_valid_owner_repo_or_repo(ok), "{ok}");
        }
        for bad in [
            "",
            "hello-world",
            "/repo",
            "owner/",
            "-owner/repo",
            "owner-/repo",
            "ow_ner/repo",
            "owner/re po",
            "owner/repo/extra",
            "owner/.",
            "owner/..",
            "abcdefghijklmnopqrstuvwxyz0123456789abcd/x",
            "https://github.com/owner/repo",
        ] {
            assert!(!is_valid_owner_repo(bad), "{bad}");
        }
        assert!(is_valid_owner_repo_or_repo("hello-world"));
        for bad in ["", ".", "..", "re po", "owner/", "/repo"] {
            assert!(!is_valid_owner_repo_or_repo(bad), "{bad}");
        }
    }

    #[test]
    fn git_refs() {
        for ok in [
            "main",
            "ccplant/my-session",
            "v1.2.3",
            "feature/x+y",
            "release_1",
            "0123abc",
        ] {
            assert!(is_valid_git_ref(ok), "{ok}");
        }
        for bad in [
            "",
            "-x",
            "--upload-pack=evil",
            ".hidden",
            "a..b",
            "a//b",
            "a/.b",
            "a/",
            "a.",
            "a.lock",
            "a b",
            "a~1",
            "a^",
            "a:b",
            "a@{1}",
        ] {
            assert!(!is_valid_git_ref(bad), "{bad}");
        }
    }

    #[test]
    fn object_names() {
        for ok in ["github-token", "a", "a.b-c", "0abc"] {
            assert!(is_valid_object_name(ok), "{ok}");
        }
        for bad in ["", "Github", "-a", "a-", "a..b", "a_b", ".a"] {
            assert!(!is_valid_object_name(bad), "{bad}");
        }
    }

    #[test]
    fn commit_shas() {
        assert!(is_valid_commit_sha(
            "0123456789abcdef0123456789abcdef01234567"
        ));
        assert!(!is_valid_commit_sha(
            "0123456789ABCDEF0123456789abcdef01234567"
        ));
        assert!(!is_valid_commit_sha("0123456789abcdef"));
        assert!(!is_valid_commit_sha(
            "g123456789abcdef0123456789abcdef01234567"
        ));
    }

    #[test]
    fn invalid_spec_lists_every_violation() {
        let mut v = Violations::default();
        v.check(true, "spec.ok", "never shown");
        v.check(false, "spec.a", "first");
        v.check(false, "spec.b", "second");
        let err = v.into_result().err().map(|e| e.to_string());
        assert_eq!(err.as_deref(), Some("spec.a: first; spec.b: second"));
    }
}
