//! GitHub's JSON: the REST payload shapes (as on api.github.com, complete enough for octocrab's
//! models to deserialize) and GitHub's error bodies.

use super::state::{
    Account, AccountKind, Activity, Comment, Commit, Issue, IssueState, Repo, Review, World,
};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

pub(crate) const DOCS_URL: &str = "https://docs.github.com/rest";

/// What an endpoint answers (or fails with: both arms of [`Outcome`] are replies).
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub status: u16,
    pub body: Option<Value>,
    pub headers: Vec<(&'static str, String)>,
    /// The request changed the fake's state: the `on_write` hooks run before it is sent.
    pub applied_write: bool,
}

/// `Err` is a GitHub error reply; it exists so handlers can use `?`.
pub(crate) type Outcome = Result<Reply, Reply>;

impl Reply {
    pub(crate) fn json(status: u16, body: Value) -> Self {
        Reply {
            status,
            body: Some(body),
            headers: Vec::new(),
            applied_write: false,
        }
    }

    pub(crate) fn ok(body: Value) -> Self {
        Reply::json(200, body)
    }

    /// A write that succeeded with `status` (201 for created objects).
    pub(crate) fn written(status: u16, body: Option<Value>) -> Self {
        Reply {
            status,
            body,
            headers: Vec::new(),
            applied_write: true,
        }
    }

    pub(crate) fn no_content() -> Self {
        Reply {
            status: 204,
            body: None,
            headers: Vec::new(),
            applied_write: false,
        }
    }

    pub(crate) fn with_header(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }
}

/// GitHub's error body: `{"message", "documentation_url", "status"}`.
pub(crate) fn error(status: u16, message: &str, documentation_url: &str) -> Reply {
    Reply::json(
        status,
        json!({
            "message": message,
            "documentation_url": documentation_url,
            "status": status.to_string(),
        }),
    )
}

pub(crate) fn not_found() -> Reply {
    error(404, "Not Found", DOCS_URL)
}

pub(crate) fn bad_credentials() -> Reply {
    error(401, "Bad credentials", DOCS_URL)
}

pub(crate) fn requires_authentication() -> Reply {
    error(401, "Requires authentication", DOCS_URL)
}

pub(crate) fn not_accessible_by_integration() -> Reply {
    error(403, "Resource not accessible by integration", DOCS_URL)
}

pub(crate) fn jwt_required() -> Reply {
    error(
        401,
        "A JSON web token could not be decoded",
        "https://docs.github.com/rest/apps/apps",
    )
}

/// 422 "Validation Failed" with structured errors (`resource`, `field`, `code`, `message`).
pub(crate) fn validation_failed(documentation_url: &str, errors: Vec<Value>) -> Reply {
    Reply::json(
        422,
        json!({
            "message": "Validation Failed",
            "errors": errors,
            "documentation_url": documentation_url,
            "status": "422",
        }),
    )
}

/// A missing or invalid field, e.g. `{"resource":"Issue","field":"title","code":"missing_field"}`.
pub(crate) fn field_error(resource: &str, field: &str, code: &str) -> Value {
    json!({"resource": resource, "field": field, "code": code})
}

pub(crate) fn custom_error(resource: &str, message: &str) -> Value {
    json!({"resource": resource, "code": "custom", "message": message})
}

/// 422 "Unprocessable Entity" with plain-string errors (GitHub's review endpoints answer so).
pub(crate) fn unprocessable(documentation_url: &str, errors: &[&str]) -> Reply {
    Reply::json(
        422,
        json!({
            "message": "Unprocessable Entity",
            "errors": errors,
            "documentation_url": documentation_url,
            "status": "422",
        }),
    )
}

pub(crate) fn timestamp(at: DateTime<Utc>) -> Value {
    Value::String(at.format("%Y-%m-%dT%H:%M:%SZ").to_string())
}

fn optional_timestamp(at: Option<DateTime<Utc>>) -> Value {
    at.map_or(Value::Null, timestamp)
}

/// `[` and `]` of bot logins escaped for use in a URL path.
fn escape_login(login: &str) -> String {
    login.replace('[', "%5B").replace(']', "%5D")
}

/// Renders the world's objects with URLs on the fake's own base URL.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Render<'a> {
    pub base: &'a str,
    pub world: &'a World,
}

impl Render<'_> {
    fn repo_api(&self, repo: &Repo) -> String {
        format!("{}/repos/{}/{}", self.base, repo.owner, repo.name)
    }

    fn repo_html(&self, repo: &Repo) -> String {
        format!("{}/{}/{}", self.base, repo.owner, repo.name)
    }

    pub(crate) fn user(&self, login: &str) -> Value {
        let account = self.world.account(login);
        self.account(&account)
    }

    pub(crate) fn account(&self, account: &Account) -> Value {
        let base = self.base;
        let login = &account.login;
        let url = format!("{base}/users/{}", escape_login(login));
        let html_url = match account.kind {
            AccountKind::Bot => format!("{base}/apps/{}", login.trim_end_matches("[bot]")),
            _ => format!("{base}/{login}"),
        };
        json!({
            "login": login,
            "id": account.id,
            "node_id": super::ids::node_id(if account.kind == AccountKind::Organization { "O" } else { "U" }, account.id),
            "avatar_url": format!("https://avatars.githubusercontent.com/u/{}?v=4", account.id),
            "gravatar_id": "",
            "url": url,
            "html_url": html_url,
            "followers_url": format!("{url}/followers"),
            "following_url": format!("{url}/following{{/other_user}}"),
            "gists_url": format!("{url}/gists{{/gist_id}}"),
            "starred_url": format!("{url}/starred{{/owner}}{{/repo}}"),
            "subscriptions_url": format!("{url}/subscriptions"),
            "organizations_url": format!("{url}/orgs"),
            "repos_url": format!("{url}/repos"),
            "events_url": format!("{url}/events{{/privacy}}"),
            "received_events_url": format!("{url}/received_events"),
            "type": account.kind.as_str(),
            "user_view_type": "public",
            "site_admin": false,
        })
    }

    pub(crate) fn repo(&self, repo: &Repo) -> Value {
        let api = self.repo_api(repo);
        let html = self.repo_html(repo);
        let host = self.base.split("://").nth(1).unwrap_or(self.base);
        let open_issues = repo
            .issues
            .values()
            .filter(|i| i.state == IssueState::Open)
            .count();
        let mut value = json!({
            "id": repo.id,
            "node_id": super::ids::node_id("R", repo.id),
            "name": repo.name,
            "full_name": repo.full_name(),
            "private": true,
            "owner": self.user(&repo.owner),
            "html_url": html,
            "description": null,
            "fork": false,
            "url": api,
            "default_branch": repo.default_branch,
            "visibility": "private",
            "pushed_at": timestamp(repo.pushed_at),
            "created_at": timestamp(repo.created_at),
            "updated_at": timestamp(repo.updated_at),
        });
        let urls = json!({
            "archive_url": format!("{api}/{{archive_format}}{{/ref}}"),
            "assignees_url": format!("{api}/assignees{{/user}}"),
            "blobs_url": format!("{api}/git/blobs{{/sha}}"),
            "branches_url": format!("{api}/branches{{/branch}}"),
            "collaborators_url": format!("{api}/collaborators{{/collaborator}}"),
            "comments_url": format!("{api}/comments{{/number}}"),
            "commits_url": format!("{api}/commits{{/sha}}"),
            "compare_url": format!("{api}/compare/{{base}}...{{head}}"),
            "contents_url": format!("{api}/contents/{{+path}}"),
            "contributors_url": format!("{api}/contributors"),
            "deployments_url": format!("{api}/deployments"),
            "downloads_url": format!("{api}/downloads"),
            "events_url": format!("{api}/events"),
            "forks_url": format!("{api}/forks"),
            "git_commits_url": format!("{api}/git/commits{{/sha}}"),
            "git_refs_url": format!("{api}/git/refs{{/sha}}"),
            "git_tags_url": format!("{api}/git/tags{{/sha}}"),
            "git_url": format!("git://{host}/{}.git", repo.full_name()),
            "issue_comment_url": format!("{api}/issues/comments{{/number}}"),
            "issue_events_url": format!("{api}/issues/events{{/number}}"),
            "issues_url": format!("{api}/issues{{/number}}"),
            "keys_url": format!("{api}/keys{{/key_id}}"),
            "labels_url": format!("{api}/labels{{/name}}"),
            "languages_url": format!("{api}/languages"),
            "merges_url": format!("{api}/merges"),
            "milestones_url": format!("{api}/milestones{{/number}}"),
            "notifications_url": format!("{api}/notifications{{?since,all,participating}}"),
            "pulls_url": format!("{api}/pulls{{/number}}"),
            "releases_url": format!("{api}/releases{{/id}}"),
            "ssh_url": format!("git@{host}:{}.git", repo.full_name()),
            "stargazers_url": format!("{api}/stargazers"),
            "statuses_url": format!("{api}/statuses/{{sha}}"),
            "subscribers_url": format!("{api}/subscribers"),
            "subscription_url": format!("{api}/subscription"),
            "tags_url": format!("{api}/tags"),
            "teams_url": format!("{api}/teams"),
            "trees_url": format!("{api}/git/trees{{/sha}}"),
            "clone_url": format!("{html}.git"),
            "mirror_url": null,
            "hooks_url": format!("{api}/hooks"),
            "svn_url": html,
        });
        let counters = json!({
            "homepage": null,
            "language": null,
            "forks_count": 0,
            "stargazers_count": 0,
            "watchers_count": 0,
            "size": 0,
            "open_issues_count": open_issues,
            "is_template": false,
            "topics": [],
            "has_issues": true,
            "has_projects": true,
            "has_wiki": false,
            "has_pages": false,
            "has_downloads": true,
            "has_discussions": false,
            "archived": false,
            "disabled": false,
            "allow_forking": false,
            "web_commit_signoff_required": false,
            "forks": 0,
            "open_issues": open_issues,
            "watchers": 0,
        });
        if let Some(object) = value.as_object_mut() {
            for extra in [urls, counters] {
                if let Value::Object(extra) = extra {
                    object.extend(extra);
                }
            }
        }
        value
    }

    /// An entry of `GET /repos/{owner}/{repo}/activity`, as GitHub shapes it.
    pub(crate) fn activity(&self, a: &Activity) -> Value {
        json!({
            "id": a.id,
            "node_id": super::ids::node_id("RA", a.id),
            "before": a.before,
            "after": a.after,
            "ref": a.reference,
            "timestamp": timestamp(a.timestamp),
            "activity_type": a.activity_type,
            "actor": self.user(&a.actor),
        })
    }

    pub(crate) fn branch(&self, repo: &Repo, name: &str, sha: &str) -> Value {
        json!({
            "name": name,
            "commit": {"sha": sha, "url": format!("{}/commits/{sha}", self.repo_api(repo))},
            "protected": false,
        })
    }

    pub(crate) fn commit(&self, repo: &Repo, commit: &Commit) -> Value {
        let api = self.repo_api(repo);
        let html = self.repo_html(repo);
        let sha = &commit.sha;
        let identity = json!({
            "name": commit.author.name,
            "email": commit.author.email,
            "date": timestamp(commit.date),
        });
        let user = commit
            .author_login
            .as_deref()
            .map_or(Value::Null, |login| self.user(login));
        let parents: Vec<Value> = commit
            .parents
            .iter()
            .map(|p| {
                json!({"sha": p, "url": format!("{api}/commits/{p}"), "html_url": format!("{html}/commit/{p}")})
            })
            .collect();
        json!({
            "sha": sha,
            "node_id": format!("C_kwDO{}", sha.get(..20).unwrap_or(sha)),
            "commit": {
                "author": identity,
                "committer": identity,
                "message": commit.message,
                "tree": {"sha": commit.tree, "url": format!("{api}/git/trees/{}", commit.tree)},
                "url": format!("{api}/git/commits/{sha}"),
                "comment_count": 0,
                "verification": {"verified": false, "reason": "unsigned", "signature": null, "payload": null, "verified_at": null},
            },
            "url": format!("{api}/commits/{sha}"),
            "html_url": format!("{html}/commit/{sha}"),
            "comments_url": format!("{api}/commits/{sha}/comments"),
            "author": user,
            "committer": user,
            "parents": parents,
            "stats": {"total": 0, "additions": 0, "deletions": 0},
            "files": [],
        })
    }

    fn labels(&self, repo: &Repo, names: &[String]) -> Vec<Value> {
        let api = self.repo_api(repo);
        names
            .iter()
            .filter_map(|name| repo.labels.get(&name.to_lowercase()))
            .map(|label| {
                json!({
                    "id": label.id,
                    "node_id": super::ids::node_id("LA", label.id),
                    "url": format!("{api}/labels/{}", label.name),
                    "name": label.name,
                    "color": label.color,
                    "default": false,
                    "description": null,
                })
            })
            .collect()
    }

    /// Milestones are not modelled: a number given at issue creation renders as a milestone.
    fn milestone(&self, repo: &Repo, number: Option<u64>) -> Value {
        let Some(number) = number else {
            return Value::Null;
        };
        let id = repo.id.wrapping_mul(1000).wrapping_add(number);
        json!({
            "url": format!("{}/milestones/{number}", self.repo_api(repo)),
            "html_url": format!("{}/milestone/{number}", self.repo_html(repo)),
            "labels_url": format!("{}/milestones/{number}/labels", self.repo_api(repo)),
            "id": id,
            "node_id": super::ids::node_id("MI", id),
            "number": number,
            "state": "open",
            "title": format!("Milestone {number}"),
            "description": null,
            "creator": null,
            "open_issues": 0,
            "closed_issues": 0,
            "created_at": timestamp(repo.created_at),
            "updated_at": timestamp(repo.created_at),
            "closed_at": null,
            "due_on": null,
        })
    }

    fn users(&self, logins: &[String]) -> Vec<Value> {
        logins.iter().map(|login| self.user(login)).collect()
    }

    /// OWNER for the repository's owner, NONE for bots, COLLABORATOR for other users.
    fn author_association(&self, repo: &Repo, login: &str) -> &'static str {
        if login.eq_ignore_ascii_case(&repo.owner) {
            "OWNER"
        } else if login.ends_with("[bot]") {
            "NONE"
        } else {
            "COLLABORATOR"
        }
    }

    fn issue_html(&self, repo: &Repo, issue: &Issue) -> String {
        let kind = if issue.pull.is_some() {
            "pull"
        } else {
            "issues"
        };
        format!("{}/{kind}/{}", self.repo_html(repo), issue.number)
    }

    pub(crate) fn issue(&self, repo: &Repo, issue: &Issue) -> Value {
        let api = format!("{}/issues/{}", self.repo_api(repo), issue.number);
        let mut value = json!({
            "id": issue.id,
            "node_id": super::ids::node_id("I", issue.id),
            "url": api,
            "repository_url": self.repo_api(repo),
            "labels_url": format!("{api}/labels{{/name}}"),
            "comments_url": format!("{api}/comments"),
            "events_url": format!("{api}/events"),
            "html_url": self.issue_html(repo, issue),
            "number": issue.number,
            "state": issue.state.as_str(),
            "state_reason": if issue.state == IssueState::Closed { json!("completed") } else { Value::Null },
            "title": issue.title,
            "body": issue.body,
            "user": self.user(&issue.user),
            "labels": self.labels(repo, &issue.labels),
            "assignee": issue.assignees.first().map_or(Value::Null, |a| self.user(a)),
            "assignees": self.users(&issue.assignees),
            "milestone": self.milestone(repo, issue.milestone),
            "locked": false,
            "active_lock_reason": null,
            "comments": issue.comments.len(),
            "created_at": timestamp(issue.created_at),
            "updated_at": timestamp(issue.updated_at),
            "closed_at": optional_timestamp(issue.closed_at),
            "author_association": self.author_association(repo, &issue.user),
            "timeline_url": format!("{api}/timeline"),
            "performed_via_github_app": null,
        });
        if let (Some(pull), Some(object)) = (&issue.pull, value.as_object_mut()) {
            let html = self.issue_html(repo, issue);
            object.insert(
                "pull_request".to_string(),
                json!({
                    "url": format!("{}/pulls/{}", self.repo_api(repo), issue.number),
                    "html_url": html,
                    "diff_url": format!("{html}.diff"),
                    "patch_url": format!("{html}.patch"),
                    "merged_at": optional_timestamp(pull.merged_at),
                }),
            );
            object.insert("draft".to_string(), json!(pull.draft));
        }
        value
    }

    pub(crate) fn comment(&self, repo: &Repo, issue: &Issue, comment: &Comment) -> Value {
        json!({
            "id": comment.id,
            "node_id": super::ids::node_id("IC", comment.id),
            "url": format!("{}/issues/comments/{}", self.repo_api(repo), comment.id),
            "html_url": format!("{}#issuecomment-{}", self.issue_html(repo, issue), comment.id),
            "issue_url": format!("{}/issues/{}", self.repo_api(repo), issue.number),
            "body": comment.body,
            "user": self.user(&comment.user),
            "created_at": timestamp(comment.created_at),
            "updated_at": timestamp(comment.updated_at),
            "author_association": self.author_association(repo, &comment.user),
            "performed_via_github_app": null,
        })
    }

    pub(crate) fn review(&self, repo: &Repo, issue: &Issue, review: &Review) -> Value {
        let html = format!(
            "{}#pullrequestreview-{}",
            self.issue_html(repo, issue),
            review.id
        );
        let pull_url = format!("{}/pulls/{}", self.repo_api(repo), issue.number);
        let mut value = json!({
            "id": review.id,
            "node_id": super::ids::node_id("PRR", review.id),
            "user": self.user(&review.user),
            "body": review.body,
            "state": review.state,
            "html_url": html,
            "pull_request_url": pull_url,
            "author_association": self.author_association(repo, &review.user),
            "_links": {"html": {"href": html}, "pull_request": {"href": pull_url}},
            "commit_id": review.commit_id,
        });
        if let (Some(at), Some(object)) = (review.submitted_at, value.as_object_mut()) {
            object.insert("submitted_at".to_string(), timestamp(at));
        }
        value
    }

    /// A pull request. `detailed` adds what GitHub only returns from `GET /pulls/{number}` and
    /// create/update calls (`merged`, `mergeable`, `merged_by`, counts…), not from the list.
    pub(crate) fn pull(&self, repo: &Repo, issue: &Issue, detailed: bool) -> Value {
        let Some(pull) = &issue.pull else {
            return Value::Null;
        };
        let api = format!("{}/pulls/{}", self.repo_api(repo), issue.number);
        let issue_api = format!("{}/issues/{}", self.repo_api(repo), issue.number);
        let html = self.issue_html(repo, issue);
        let open = issue.state == IssueState::Open;
        let base_sha = repo
            .branches
            .get(&pull.base_ref)
            .cloned()
            .unwrap_or_default();
        let side = |reference: &str, sha: &str| {
            json!({
                "label": format!("{}:{reference}", repo.owner),
                "ref": reference,
                "sha": sha,
                "user": self.user(&repo.owner),
                "repo": self.repo(repo),
            })
        };
        let links = json!({
            "self": {"href": api},
            "html": {"href": html},
            "issue": {"href": issue_api},
            "comments": {"href": format!("{issue_api}/comments")},
            "review_comments": {"href": format!("{api}/comments")},
            "review_comment": {"href": format!("{}/pulls/comments{{/number}}", self.repo_api(repo))},
            "commits": {"href": format!("{api}/commits")},
            "statuses": {"href": format!("{}/statuses/{}", self.repo_api(repo), pull.head_sha)},
        });
        let mut value = json!({
            "url": api,
            "id": pull.id,
            "node_id": super::ids::node_id("PR", pull.id),
            "html_url": html,
            "diff_url": format!("{html}.diff"),
            "patch_url": format!("{html}.patch"),
            "issue_url": issue_api,
            "commits_url": format!("{api}/commits"),
            "review_comments_url": format!("{api}/comments"),
            "review_comment_url": format!("{}/pulls/comments{{/number}}", self.repo_api(repo)),
            "comments_url": format!("{issue_api}/comments"),
            "statuses_url": format!("{}/statuses/{}", self.repo_api(repo), pull.head_sha),
            "number": issue.number,
            "state": issue.state.as_str(),
            "locked": false,
            "title": issue.title,
            "user": self.user(&issue.user),
            "body": issue.body,
            "labels": self.labels(repo, &issue.labels),
            "milestone": self.milestone(repo, issue.milestone),
            "active_lock_reason": null,
            "created_at": timestamp(issue.created_at),
            "updated_at": timestamp(issue.updated_at),
            "closed_at": optional_timestamp(issue.closed_at),
            "merged_at": optional_timestamp(pull.merged_at),
            "merge_commit_sha": pull.merge_commit_sha,
            "assignee": issue.assignees.first().map_or(Value::Null, |a| self.user(a)),
            "assignees": self.users(&issue.assignees),
            "requested_reviewers": [],
            "requested_teams": [],
            "head": side(&pull.head_ref, &pull.head_sha),
            "base": side(&pull.base_ref, &base_sha),
            "_links": links,
            "author_association": self.author_association(repo, &issue.user),
            "auto_merge": null,
            "draft": pull.draft,
        });
        if detailed && let Some(object) = value.as_object_mut() {
            let mergeable_state = match (open, pull.draft) {
                (true, true) => "draft",
                (true, false) => "clean",
                (false, _) => "unknown",
            };
            let extra = json!({
                "merged": pull.merged_at.is_some(),
                "mergeable": if open { json!(true) } else { Value::Null },
                "rebaseable": if open { json!(true) } else { Value::Null },
                "mergeable_state": mergeable_state,
                "merged_by": pull.merged_by.as_deref().map_or(Value::Null, |login| self.user(login)),
                "comments": issue.comments.len(),
                "review_comments": 0,
                "maintainer_can_modify": false,
                "commits": repo.commits_between(&base_sha, &pull.head_sha),
                "additions": 0,
                "deletions": 0,
                "changed_files": 0,
            });
            if let Value::Object(extra) = extra {
                object.extend(extra);
            }
        }
        value
    }
}
