//! The fake's in-memory world: users, repositories (branches, commits, issues, pulls), apps,
//! installation tokens, rate-limit buckets, recorded requests and pending faults.
//!
//! Everything here is plain data behind one mutex; request handling never awaits while holding it.

use super::RecordedRequest;
use super::auth::InstallationTokenRecord;
use super::faults::FaultQueue;
use super::ids;
use super::rate_limit::RateLimits;
use chrono::{DateTime, SubsecRound, Utc};
use jsonwebtoken::DecodingKey;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::time::Duration;

/// GitHub stores timestamps with second precision; so does the fake.
pub(crate) fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(0)
}

/// Whose account a login is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AccountKind {
    User,
    Organization,
    Bot,
}

impl AccountKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            AccountKind::User => "User",
            AccountKind::Organization => "Organization",
            AccountKind::Bot => "Bot",
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Account {
    pub login: String,
    pub id: u64,
    pub kind: AccountKind,
}

/// A git author or committer.
#[derive(Debug, Clone)]
pub(crate) struct GitIdentity {
    pub name: String,
    pub email: String,
}

impl GitIdentity {
    pub(crate) fn for_login(login: &str) -> Self {
        GitIdentity {
            name: login.to_string(),
            email: format!("{login}@users.noreply.github.com"),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Commit {
    pub sha: String,
    pub tree: String,
    pub message: String,
    pub author: GitIdentity,
    pub date: DateTime<Utc>,
    pub parents: Vec<String>,
    /// The GitHub account the commit is attributed to (`author` in the REST payload).
    pub author_login: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct Label {
    pub id: u64,
    pub name: String,
    pub color: String,
}

#[derive(Debug, Clone)]
pub(crate) struct Comment {
    pub id: u64,
    pub body: String,
    pub user: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub(crate) struct Review {
    pub id: u64,
    pub user: String,
    pub body: String,
    /// APPROVED, CHANGES_REQUESTED, COMMENTED or PENDING.
    pub state: String,
    pub commit_id: String,
    pub submitted_at: Option<DateTime<Utc>>,
}

/// The pull-request side of an issue (on GitHub every PR is also an issue).
#[derive(Debug, Clone)]
pub(crate) struct Pull {
    pub id: u64,
    pub head_ref: String,
    /// The head branch's tip while the PR is open; frozen when it is merged or closed.
    pub head_sha: String,
    pub base_ref: String,
    pub draft: bool,
    pub merged_at: Option<DateTime<Utc>>,
    pub merge_commit_sha: Option<String>,
    pub merged_by: Option<String>,
    pub reviews: Vec<Review>,
}

impl Pull {
    /// A pull request just opened from `head_ref` at `head_sha` into `base_ref`.
    pub(crate) fn opened(
        id: u64,
        head_ref: String,
        head_sha: String,
        base_ref: String,
        draft: bool,
    ) -> Self {
        Pull {
            id,
            head_ref,
            head_sha,
            base_ref,
            draft,
            merged_at: None,
            merge_commit_sha: None,
            merged_by: None,
            reviews: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IssueState {
    Open,
    Closed,
}

impl IssueState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            IssueState::Open => "open",
            IssueState::Closed => "closed",
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Issue {
    pub id: u64,
    pub number: u64,
    pub title: String,
    pub body: Option<String>,
    pub user: String,
    pub state: IssueState,
    /// Label names (the labels themselves live in the repository).
    pub labels: Vec<String>,
    pub assignees: Vec<String>,
    pub milestone: Option<u64>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub closed_at: Option<DateTime<Utc>>,
    pub comments: Vec<Comment>,
    pub pull: Option<Pull>,
}

impl Issue {
    /// An open issue (or, with `pull`, a pull request) created at `at`, without labels,
    /// assignees, milestone or comments.
    pub(crate) fn opened(
        id: u64,
        number: u64,
        title: String,
        body: Option<String>,
        user: String,
        at: DateTime<Utc>,
        pull: Option<Pull>,
    ) -> Self {
        Issue {
            id,
            number,
            title,
            body,
            user,
            state: IssueState::Open,
            labels: Vec::new(),
            assignees: Vec::new(),
            milestone: None,
            created_at: at,
            updated_at: at,
            closed_at: None,
            comments: Vec::new(),
            pull,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Repo {
    pub id: u64,
    pub owner: String,
    pub name: String,
    pub default_branch: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub pushed_at: DateTime<Utc>,
    /// Branch name → head commit SHA.
    pub branches: BTreeMap<String, String>,
    pub commits: HashMap<String, Commit>,
    /// Issues and pull requests by number (one counter, like GitHub).
    pub issues: BTreeMap<u64, Issue>,
    /// Lower-cased label name → label.
    pub labels: BTreeMap<String, Label>,
    /// What `GET /repos/{owner}/{repo}/activity` lists, oldest first.
    pub activity: Vec<Activity>,
}

/// One entry of the repository activity API: a change of a ref.
#[derive(Debug, Clone)]
pub(crate) struct Activity {
    pub id: u64,
    pub before: String,
    pub after: String,
    /// `refs/heads/<branch>`.
    pub reference: String,
    pub timestamp: DateTime<Utc>,
    /// push, force_push, branch_creation, branch_deletion, pr_merge, merge_queue_merge.
    pub activity_type: &'static str,
    pub actor: String,
}

impl Repo {
    pub(crate) fn full_name(&self) -> String {
        format!("{}/{}", self.owner, self.name)
    }

    pub(crate) fn next_number(&self) -> u64 {
        self.issues.keys().next_back().map_or(1, |n| n + 1)
    }

    /// A commit by full SHA, unique SHA prefix (7+ digits) or branch name, like GitHub's `{ref}`.
    pub(crate) fn resolve(&self, reference: &str) -> Option<&Commit> {
        if let Some(sha) = self.branches.get(reference) {
            return self.commits.get(sha);
        }
        if let Some(commit) = self.commits.get(reference) {
            return Some(commit);
        }
        if reference.len() < 7 || !reference.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let reference = reference.to_ascii_lowercase();
        let mut candidates = self
            .commits
            .values()
            .filter(|c| c.sha.starts_with(&reference));
        match (candidates.next(), candidates.next()) {
            (Some(only), None) => Some(only),
            _ => None,
        }
    }

    /// Every commit reachable from `sha` (itself included).
    pub(crate) fn ancestry(&self, sha: &str) -> HashSet<String> {
        let mut seen = HashSet::new();
        let mut queue = VecDeque::from([sha.to_string()]);
        while let Some(next) = queue.pop_front() {
            if !seen.insert(next.clone()) {
                continue;
            }
            if let Some(commit) = self.commits.get(&next) {
                queue.extend(commit.parents.iter().cloned());
            }
        }
        seen
    }

    /// Commits on `head` that are not on `base` (what a PR from head into base would contain).
    pub(crate) fn commits_between(&self, base_sha: &str, head_sha: &str) -> usize {
        let base = self.ancestry(base_sha);
        self.ancestry(head_sha).difference(&base).count()
    }

    /// Moves `branch` to a new commit and keeps open PRs from that branch pointing at it.
    pub(crate) fn advance_branch(&mut self, branch: &str, commit: Commit) {
        self.advance_branch_as(branch, commit, "push", "ccplant-test");
    }

    /// [`Repo::advance_branch`], recorded in the activity as `activity_type` by `actor` (a new
    /// branch is a `branch_creation`), at the commit's date.
    pub(crate) fn advance_branch_as(
        &mut self,
        branch: &str,
        commit: Commit,
        activity_type: &'static str,
        actor: &str,
    ) {
        let sha = commit.sha.clone();
        let before = self.branches.get(branch).cloned();
        self.activity.push(Activity {
            id: self.activity.len() as u64 + 1_000_000_001,
            activity_type: if before.is_none() {
                "branch_creation"
            } else {
                activity_type
            },
            before: before.unwrap_or_else(|| "0".repeat(40)),
            after: sha.clone(),
            reference: format!("refs/heads/{branch}"),
            timestamp: commit.date,
            actor: actor.to_string(),
        });
        self.pushed_at = commit.date.max(self.pushed_at);
        self.commits.insert(sha.clone(), commit);
        self.branches.insert(branch.to_string(), sha.clone());
        for issue in self.issues.values_mut() {
            if issue.state != IssueState::Open {
                continue;
            }
            if let Some(pull) = issue.pull.as_mut().filter(|p| p.head_ref == branch) {
                pull.head_sha = sha.clone();
            }
        }
    }

    /// The label named `name` (any case), created with GitHub's default colour if missing.
    pub(crate) fn ensure_label(&mut self, name: &str, id: impl FnOnce() -> u64) -> String {
        self.labels
            .entry(name.to_lowercase())
            .or_insert_with(|| Label {
                id: id(),
                name: name.to_string(),
                color: "ededed".to_string(),
            })
            .name
            .clone()
    }
}

/// A registered GitHub App and its installations.
pub(crate) struct App {
    pub id: u64,
    pub slug: String,
    pub key: DecodingKey,
    /// Installation id → account (user or organization) it is installed on.
    pub installations: BTreeMap<u64, String>,
    pub created_at: DateTime<Utc>,
}

impl App {
    pub(crate) fn bot_login(&self) -> String {
        format!("{}[bot]", self.slug)
    }
}

impl fmt::Debug for App {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("App")
            .field("id", &self.id)
            .field("slug", &self.slug)
            .field("installations", &self.installations)
            .finish_non_exhaustive()
    }
}

pub(crate) type RepoKey = (String, String);

pub(crate) fn repo_key(owner: &str, name: &str) -> RepoKey {
    (owner.to_lowercase(), name.to_lowercase())
}

#[derive(Debug)]
pub(crate) struct World {
    next_id: u64,
    accounts: BTreeMap<String, Account>,
    pub repos: BTreeMap<RepoKey, Repo>,
    /// Personal access token → login.
    pub pats: HashMap<String, String>,
    pub apps: BTreeMap<u64, App>,
    pub installation_tokens: Vec<InstallationTokenRecord>,
    pub installation_token_ttl: Duration,
    pub rate_limits: RateLimits,
    /// Recorded requests with a sequence number that survives `clear_requests`.
    requests: Vec<(u64, RecordedRequest)>,
    next_request_seq: u64,
    pub faults: FaultQueue,
}

impl World {
    pub(crate) fn new() -> Self {
        World {
            next_id: 1_000_001,
            accounts: BTreeMap::new(),
            repos: BTreeMap::new(),
            pats: HashMap::new(),
            apps: BTreeMap::new(),
            installation_tokens: Vec::new(),
            installation_token_ttl: Duration::from_secs(3600),
            rate_limits: RateLimits::default(),
            requests: Vec::new(),
            next_request_seq: 0,
            faults: FaultQueue::default(),
        }
    }

    /// A fresh id; ids are unique across all kinds of objects.
    pub(crate) fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// The account for `login`, registered with `kind` if unknown. A known account is upgraded
    /// from Organization to User when a token is registered for it.
    pub(crate) fn ensure_account(&mut self, login: &str, kind: AccountKind) -> Account {
        let key = login.to_lowercase();
        if let Some(account) = self.accounts.get_mut(&key) {
            if kind == AccountKind::User && account.kind == AccountKind::Organization {
                account.kind = AccountKind::User;
            }
            return account.clone();
        }
        let account = Account {
            login: login.to_string(),
            id: self.next_id(),
            kind,
        };
        self.accounts.insert(key, account.clone());
        account
    }

    /// The account for `login`; unknown logins are rendered as users with a stable pseudo id.
    pub(crate) fn account(&self, login: &str) -> Account {
        self.accounts
            .get(&login.to_lowercase())
            .cloned()
            .unwrap_or_else(|| Account {
                login: login.to_string(),
                id: login
                    .bytes()
                    .fold(17u64, |h, b| h.wrapping_mul(31) ^ u64::from(b))
                    % 1_000_000,
                kind: if login.ends_with("[bot]") {
                    AccountKind::Bot
                } else {
                    AccountKind::User
                },
            })
    }

    pub(crate) fn repo(&self, owner: &str, name: &str) -> Option<&Repo> {
        self.repos.get(&repo_key(owner, name))
    }

    pub(crate) fn repo_mut(&mut self, owner: &str, name: &str) -> Option<&mut Repo> {
        self.repos.get_mut(&repo_key(owner, name))
    }

    /// Creates (or replaces) a repository with one initial commit on its default branch.
    pub(crate) fn add_repo(&mut self, owner: &str, name: &str, default_branch: &str) {
        self.ensure_account(owner, AccountKind::Organization);
        let now = now() - chrono::TimeDelta::days(1);
        let initial = Commit {
            sha: ids::random_sha(),
            tree: ids::random_sha(),
            message: "Initial commit".to_string(),
            author: GitIdentity::for_login(owner),
            date: now,
            parents: Vec::new(),
            author_login: None,
        };
        let repo = Repo {
            id: self.next_id(),
            owner: owner.to_string(),
            name: name.to_string(),
            default_branch: default_branch.to_string(),
            created_at: now,
            updated_at: now,
            pushed_at: now,
            branches: BTreeMap::from([(default_branch.to_string(), initial.sha.clone())]),
            commits: HashMap::from([(initial.sha.clone(), initial)]),
            issues: BTreeMap::new(),
            labels: BTreeMap::new(),
            activity: Vec::new(),
        };
        self.repos.insert(repo_key(owner, name), repo);
    }

    /// Adds a commit on `branch` (created from the default branch's head if missing) and
    /// returns its SHA; `None` when the repository does not exist.
    pub(crate) fn push_commit(
        &mut self,
        owner: &str,
        name: &str,
        branch: &str,
        message: &str,
        date: DateTime<Utc>,
    ) -> Option<String> {
        let repo = self.repo_mut(owner, name)?;
        let parent = repo
            .branches
            .get(branch)
            .or_else(|| repo.branches.get(&repo.default_branch))
            .cloned();
        let commit = Commit {
            sha: ids::random_sha(),
            tree: ids::random_sha(),
            message: message.to_string(),
            author: GitIdentity {
                name: "ccplant test".to_string(),
                email: "test@ccplant.invalid".to_string(),
            },
            date,
            parents: parent.into_iter().collect(),
            author_login: None,
        };
        let sha = commit.sha.clone();
        repo.advance_branch(branch, commit);
        Some(sha)
    }

    /// Deletes `branch` (a `branch_deletion` in the activity); false when absent.
    pub(crate) fn delete_branch(
        &mut self,
        owner: &str,
        name: &str,
        branch: &str,
        at: DateTime<Utc>,
    ) -> bool {
        let Some(repo) = self.repo_mut(owner, name) else {
            return false;
        };
        let Some(sha) = repo.branches.remove(branch) else {
            return false;
        };
        let id = repo.activity.len() as u64 + 1_000_000_001;
        repo.activity.push(Activity {
            id,
            before: sha,
            after: "0".repeat(40),
            reference: format!("refs/heads/{branch}"),
            timestamp: at,
            activity_type: "branch_deletion",
            actor: "ccplant-test".to_string(),
        });
        true
    }

    /// The account a test acts as: a bot for `…[bot]`, else a user.
    fn ensure_actor(&mut self, login: &str) {
        let kind = if login.ends_with("[bot]") {
            AccountKind::Bot
        } else {
            AccountKind::User
        };
        self.ensure_account(login, kind);
    }

    /// Opens a pull request from `head` into `base` authored by `login`, titled with the head
    /// commit's subject, as if `login` had called `POST /pulls`; returns its number.
    pub(crate) fn open_pull_as(
        &mut self,
        owner: &str,
        name: &str,
        head: &str,
        base: &str,
        login: &str,
        body: &str,
    ) -> Result<u64, String> {
        self.ensure_actor(login);
        let (issue_id, pull_id) = (self.next_id(), self.next_id());
        let repo = self
            .repo_mut(owner, name)
            .ok_or_else(|| format!("repository {owner}/{name} does not exist"))?;
        if !repo.branches.contains_key(base) {
            return Err(format!("{owner}/{name} has no branch {base}"));
        }
        let head_sha = repo
            .branches
            .get(head)
            .cloned()
            .ok_or_else(|| format!("{owner}/{name} has no branch {head}"))?;
        let title = repo
            .commits
            .get(&head_sha)
            .and_then(|c| c.message.lines().next())
            .unwrap_or(head)
            .to_string();
        let at = now();
        let number = repo.next_number();
        repo.issues.insert(
            number,
            Issue::opened(
                issue_id,
                number,
                title,
                Some(body.to_string()),
                login.to_string(),
                at,
                Some(Pull::opened(
                    pull_id,
                    head.to_string(),
                    head_sha,
                    base.to_string(),
                    false,
                )),
            ),
        );
        repo.updated_at = at;
        Ok(number)
    }

    /// Opens an issue authored by `login`; returns its number.
    pub(crate) fn open_issue_as(
        &mut self,
        owner: &str,
        name: &str,
        login: &str,
        title: &str,
        body: &str,
    ) -> Result<u64, String> {
        self.ensure_actor(login);
        let id = self.next_id();
        let repo = self
            .repo_mut(owner, name)
            .ok_or_else(|| format!("repository {owner}/{name} does not exist"))?;
        let at = now();
        let number = repo.next_number();
        repo.issues.insert(
            number,
            Issue::opened(
                id,
                number,
                title.to_string(),
                Some(body.to_string()),
                login.to_string(),
                at,
                None,
            ),
        );
        repo.updated_at = at;
        Ok(number)
    }

    /// Comments on issue or pull request `number` as `login`; returns the comment's id.
    pub(crate) fn comment_as(
        &mut self,
        owner: &str,
        name: &str,
        number: u64,
        login: &str,
        body: &str,
    ) -> Result<u64, String> {
        self.ensure_actor(login);
        let id = self.next_id();
        let issue = self
            .repo_mut(owner, name)
            .and_then(|repo| repo.issues.get_mut(&number))
            .ok_or_else(|| format!("{owner}/{name} has no issue or pull request #{number}"))?;
        let at = now();
        issue.comments.push(Comment {
            id,
            body: body.to_string(),
            user: login.to_string(),
            created_at: at,
            updated_at: at,
        });
        issue.updated_at = at;
        Ok(id)
    }

    /// Submits a review (`APPROVED`, `COMMENTED`, `CHANGES_REQUESTED`) of pull request `number`
    /// at its current head as `login`; returns the review's id. Unlike GitHub it does not
    /// refuse an author's approval of their own pull request.
    pub(crate) fn review_as(
        &mut self,
        owner: &str,
        name: &str,
        number: u64,
        login: &str,
        state: &str,
        body: &str,
    ) -> Result<u64, String> {
        self.ensure_actor(login);
        let id = self.next_id();
        let issue = self
            .repo_mut(owner, name)
            .and_then(|repo| repo.issues.get_mut(&number))
            .ok_or_else(|| format!("{owner}/{name} has no pull request #{number}"))?;
        let at = now();
        let pull = issue
            .pull
            .as_mut()
            .ok_or_else(|| format!("{owner}/{name} #{number} is not a pull request"))?;
        pull.reviews.push(Review {
            id,
            user: login.to_string(),
            body: body.to_string(),
            state: state.to_string(),
            commit_id: pull.head_sha.clone(),
            submitted_at: Some(at),
        });
        issue.updated_at = at;
        Ok(id)
    }

    /// Appends a request to the log and returns its sequence number.
    pub(crate) fn record(&mut self, request: RecordedRequest) -> u64 {
        self.next_request_seq += 1;
        self.requests.push((self.next_request_seq, request));
        self.next_request_seq
    }

    /// Sets the status of a recorded request (unless the log was cleared since) and returns it.
    pub(crate) fn set_recorded_status(&mut self, seq: u64, status: u16) -> Option<RecordedRequest> {
        let (_, request) = self.requests.iter_mut().rev().find(|(s, _)| *s == seq)?;
        request.status = status;
        Some(request.clone())
    }

    pub(crate) fn recorded_requests(&self) -> Vec<RecordedRequest> {
        self.requests.iter().map(|(_, r)| r.clone()).collect()
    }

    pub(crate) fn clear_requests(&mut self) {
        self.requests.clear();
    }
}
