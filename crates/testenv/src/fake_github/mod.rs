//! An in-memory GitHub REST API for tests and the demo, served over real HTTP on loopback.
//!
//! It reproduces the subset of api.github.com that ccplant uses (repositories, branches, the
//! repository activity API, commits, issues, comments, pull requests, reviews, merges, `/user`,
//! `/app`, GitHub App installation tokens, `/rate_limit`) with GitHub's payload shapes, headers (`x-ratelimit-*`, `x-github-request-id`,
//! `link`, `etag`) and error bodies, and lets tests inject faults, inspect every request and run
//! code between a write being applied and its response being sent.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use ccplant_testenv::fake_github::{FakeGitHub, Fault, FaultKind};
//! let github = FakeGitHub::start().await?;
//! github.add_repo("acme", "widgets", "main");
//! github.add_token("ghp_test", "alice");
//! github.inject(Fault::new(FaultKind::DropAfterApply).method("POST").path_contains("/issues"));
//! // point the client at github.url() …
//! # Ok(()) }
//! ```
//!
//! Every repository is private: anonymous callers and tokens without access get 404, as on
//! GitHub. HTML URLs (`html_url`) live on the fake's own base URL too.

mod auth;
mod endpoints;
mod faults;
mod ids;
mod pagination;
mod payloads;
mod rate_limit;
mod server;
mod state;
pub mod test_keys;

pub use auth::InstallationTokenRecord;
pub use faults::{Fault, FaultKind};

use anyhow::Context;
use chrono::{DateTime, TimeDelta, Utc};
use jsonwebtoken::DecodingKey;
use payloads::Render;
use serde_json::Value;
use server::Shared;
use state::{AccountKind, App, World};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The App slug `add_app` uses: installation tokens act as `ccplant-app[bot]`.
pub const DEFAULT_APP_SLUG: &str = "ccplant-app";

/// One request as the fake received it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    pub method: String,
    /// The path without the query, e.g. `/repos/acme/widgets/issues`.
    pub path: String,
    /// The raw query string without `?` (empty when there is none).
    pub query: String,
    /// The JSON body, `None` when there was none (or it was not JSON).
    pub body: Option<Value>,
    /// The credential's kind, never the credential: `token` (personal access token),
    /// `installation-token`, `bearer-jwt`, `malformed`; `None` without `Authorization`.
    pub auth: Option<String>,
    /// The status sent; 0 when the connection was dropped without a response (a
    /// `DropBeforeApply`/`DropAfterApply` fault) or the request is still being handled.
    pub status: u16,
    pub at: SystemTime,
}

/// A running fake GitHub. Cheap to clone; the server stops when the last clone is dropped.
#[derive(Clone)]
pub struct FakeGitHub {
    inner: Arc<Handle>,
}

struct Handle {
    shared: Arc<Shared>,
    /// Dropping the sender stops the accept loop and the open connections.
    _shutdown: watch::Sender<()>,
}

impl fmt::Debug for FakeGitHub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeGitHub")
            .field("url", &self.inner.shared.base_url)
            .finish_non_exhaustive()
    }
}

impl FakeGitHub {
    /// Serves on 127.0.0.1 on a free port. Needs a tokio runtime, which must outlive the tests'
    /// use of the fake.
    pub async fn start() -> anyhow::Result<FakeGitHub> {
        Self::start_on(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0)).await
    }

    /// Serves on `addr` (port 0 picks a free port). An unspecified address (0.0.0.0) is
    /// advertised in [`url`](Self::url) as 127.0.0.1.
    pub async fn start_on(addr: SocketAddr) -> anyhow::Result<FakeGitHub> {
        Ok(Self::spawn(addr).await?.0)
    }

    /// Serves on 127.0.0.1 from a thread of its own (with its own runtime), so the fake can
    /// outlive the runtime of the test that started it, e.g. one fake shared by a whole test
    /// binary. It stops when the last clone is dropped. Blocks briefly while binding.
    pub fn start_detached() -> anyhow::Result<FakeGitHub> {
        let (started, receive) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("fake-github".to_string())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = started.send(Err(anyhow::Error::from(e)));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let localhost = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
                    match Self::spawn(localhost).await {
                        Ok((github, serving)) => {
                            let _ = started.send(Ok(github));
                            let _ = serving.await;
                        }
                        Err(e) => {
                            let _ = started.send(Err(e));
                        }
                    }
                });
            })
            .context("starting the fake GitHub's thread")?;
        receive
            .recv()
            .context("the fake GitHub's thread died while starting")?
    }

    /// Binds and spawns the accept loop; the handle completes when the server has stopped.
    async fn spawn(addr: SocketAddr) -> anyhow::Result<(FakeGitHub, JoinHandle<()>)> {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the fake GitHub to {addr}"))?;
        let mut local = listener.local_addr()?;
        if local.ip().is_unspecified() {
            local.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
        }
        let shared = Arc::new(Shared::new(format!("http://{local}")));
        let (shutdown, stopped) = watch::channel(());
        let serving = tokio::spawn(server::serve(listener, shared.clone(), stopped));
        let github = FakeGitHub {
            inner: Arc::new(Handle {
                shared,
                _shutdown: shutdown,
            }),
        };
        Ok((github, serving))
    }

    /// The API base URL, `http://127.0.0.1:PORT` (no trailing slash).
    pub fn url(&self) -> String {
        self.inner.shared.base_url.clone()
    }

    fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.inner.shared.world()
    }

    fn with_render<T>(&self, f: impl FnOnce(Render<'_>, &World) -> T) -> T {
        let world = self.world();
        let render = Render {
            base: &self.inner.shared.base_url,
            world: &world,
        };
        f(render, &world)
    }

    /// Creates (or replaces) a private repository with one initial commit on `default_branch`,
    /// dated one day ago so that commits pushed by a test are newer.
    pub fn add_repo(&self, owner: &str, name: &str, default_branch: &str) {
        self.world().add_repo(owner, name, default_branch);
    }

    /// Adds a commit dated `date` on `branch`, creating the branch from the default branch's
    /// head if missing, and returns its SHA. Open pull requests from `branch` follow it.
    ///
    /// # Panics
    /// If the repository does not exist (a mistake in the test's setup).
    pub fn push_commit(
        &self,
        owner: &str,
        name: &str,
        branch: &str,
        message: &str,
        date: DateTime<Utc>,
    ) -> String {
        match self.world().push_commit(owner, name, branch, message, date) {
            Some(sha) => sha,
            None => {
                panic!("push_commit: repository {owner}/{name} does not exist; call add_repo first")
            }
        }
    }

    /// Deletes `branch` at `at` (a `branch_deletion` in the activity); false when absent.
    pub fn delete_branch(&self, owner: &str, name: &str, branch: &str, at: DateTime<Utc>) -> bool {
        self.world().delete_branch(owner, name, branch, at)
    }

    /// The SHA `branch` points at (not part of the contract; handy for asserting merges).
    pub fn branch_head(&self, owner: &str, name: &str, branch: &str) -> Option<String> {
        self.world()
            .repo(owner, name)
            .and_then(|r| r.branches.get(branch).cloned())
    }

    /// Opens a pull request from `head` into `base` as `login` (any user, or `slug[bot]`), with
    /// `body` as it is (no marker added), titled with the head commit's subject: what another
    /// author's pull request looks like. Returns its number.
    ///
    /// # Panics
    /// If the repository or a branch does not exist (a mistake in the test's setup).
    pub fn open_pull_as(
        &self,
        owner: &str,
        name: &str,
        head: &str,
        base: &str,
        login: &str,
        body: &str,
    ) -> u64 {
        self.world()
            .open_pull_as(owner, name, head, base, login, body)
            .unwrap_or_else(|e| panic!("open_pull_as: {e}"))
    }

    /// Opens an issue as `login` with `body` as it is. Returns its number.
    ///
    /// # Panics
    /// If the repository does not exist.
    pub fn open_issue_as(
        &self,
        owner: &str,
        name: &str,
        login: &str,
        title: &str,
        body: &str,
    ) -> u64 {
        self.world()
            .open_issue_as(owner, name, login, title, body)
            .unwrap_or_else(|e| panic!("open_issue_as: {e}"))
    }

    /// Comments on issue or pull request `number` as `login`. Returns the comment's id.
    ///
    /// # Panics
    /// If the repository or the issue does not exist.
    pub fn comment_as(&self, owner: &str, name: &str, number: u64, login: &str, body: &str) -> u64 {
        self.world()
            .comment_as(owner, name, number, login, body)
            .unwrap_or_else(|e| panic!("comment_as: {e}"))
    }

    /// Reviews pull request `number` at its head as `login`, in `state` (`APPROVED`,
    /// `COMMENTED`, `CHANGES_REQUESTED`). Returns the review's id.
    ///
    /// # Panics
    /// If the repository or the pull request does not exist.
    pub fn review_as(
        &self,
        owner: &str,
        name: &str,
        number: u64,
        login: &str,
        state: &str,
        body: &str,
    ) -> u64 {
        self.world()
            .review_as(owner, name, number, login, state, body)
            .unwrap_or_else(|e| panic!("review_as: {e}"))
    }

    /// Registers a personal access token acting as `login`, with access to every repository.
    pub fn add_token(&self, token: &str, login: &str) {
        let mut world = self.world();
        world.ensure_account(login, AccountKind::User);
        world.pats.insert(token.to_string(), login.to_string());
    }

    /// Registers a GitHub App (slug [`DEFAULT_APP_SLUG`]) whose JWTs are verified with
    /// `public_key_pem` (RS256), installed on `account` as `installation_id`. Calling it again
    /// for the same App adds another installation.
    ///
    /// # Panics
    /// If `public_key_pem` is not an RSA public key in PEM form.
    pub fn add_app(&self, app_id: u64, public_key_pem: &str, installation_id: u64, account: &str) {
        self.add_app_with_slug(
            app_id,
            DEFAULT_APP_SLUG,
            public_key_pem,
            installation_id,
            account,
        );
    }

    /// [`add_app`](Self::add_app) with a chosen slug (its installation tokens act as
    /// `<slug>[bot]`).
    ///
    /// # Panics
    /// If `public_key_pem` is not an RSA public key in PEM form.
    pub fn add_app_with_slug(
        &self,
        app_id: u64,
        slug: &str,
        public_key_pem: &str,
        installation_id: u64,
        account: &str,
    ) {
        let key = match DecodingKey::from_rsa_pem(public_key_pem.as_bytes()) {
            Ok(key) => key,
            Err(e) => panic!("add_app: the public key of App {app_id} is not an RSA PEM key: {e}"),
        };
        let mut world = self.world();
        world.ensure_account(account, AccountKind::Organization);
        world.ensure_account(&format!("{slug}[bot]"), AccountKind::Bot);
        let mut installations = world
            .apps
            .remove(&app_id)
            .map(|app| app.installations)
            .unwrap_or_default();
        installations.insert(installation_id, account.to_string());
        world.apps.insert(
            app_id,
            App {
                id: app_id,
                slug: slug.to_string(),
                key,
                installations,
                created_at: state::now(),
            },
        );
    }

    /// Lifetime of installation tokens minted from now on (default one hour).
    pub fn set_installation_token_ttl(&self, ttl: Duration) {
        self.world().installation_token_ttl = ttl;
    }

    /// Queues a fault; faults are consumed in order of injection (see [`Fault`]).
    pub fn inject(&self, fault: Fault) {
        self.world().faults.push(fault);
    }

    /// Every request received, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.world().recorded_requests()
    }

    pub fn clear_requests(&self) {
        self.world().clear_requests();
    }

    /// Runs `hook` after every applied write (a 2xx POST/PUT/PATCH/DELETE, including one whose
    /// response a `DropAfterApply` fault then drops), before the response is sent. The hook
    /// sees the request with the status about to be sent. It runs on the server's task: keep
    /// it short, and do not block on the fake from inside it.
    pub fn on_write(&self, hook: impl Fn(&RecordedRequest) + Send + Sync + 'static) {
        self.inner.shared.add_hook(Arc::new(hook));
    }

    /// The repository's issues (pull requests excluded), by number, as GitHub renders them.
    pub fn issues(&self, owner: &str, name: &str) -> Vec<Value> {
        self.with_render(|render, world| {
            world
                .repo(owner, name)
                .map(|repo| {
                    repo.issues
                        .values()
                        .filter(|i| i.pull.is_none())
                        .map(|i| render.issue(repo, i))
                        .collect()
                })
                .unwrap_or_default()
        })
    }

    /// The comments of issue or pull request `number`, oldest first.
    pub fn comments(&self, owner: &str, name: &str, number: u64) -> Vec<Value> {
        self.with_render(|render, world| {
            world
                .repo(owner, name)
                .and_then(|repo| Some((repo, repo.issues.get(&number)?)))
                .map(|(repo, issue)| {
                    issue
                        .comments
                        .iter()
                        .map(|c| render.comment(repo, issue, c))
                        .collect()
                })
                .unwrap_or_default()
        })
    }

    /// The repository's pull requests, by number, in the detailed shape of `GET /pulls/{n}`.
    pub fn pulls(&self, owner: &str, name: &str) -> Vec<Value> {
        self.with_render(|render, world| {
            world
                .repo(owner, name)
                .map(|repo| {
                    repo.issues
                        .values()
                        .filter(|i| i.pull.is_some())
                        .map(|i| render.pull(repo, i, true))
                        .collect()
                })
                .unwrap_or_default()
        })
    }

    /// The reviews of pull request `number`, oldest first.
    pub fn reviews(&self, owner: &str, name: &str, number: u64) -> Vec<Value> {
        self.with_render(|render, world| {
            world
                .repo(owner, name)
                .and_then(|repo| Some((repo, repo.issues.get(&number)?)))
                .map(|(repo, issue)| {
                    issue
                        .pull
                        .iter()
                        .flat_map(|p| &p.reviews)
                        .map(|r| render.review(repo, issue, r))
                        .collect()
                })
                .unwrap_or_default()
        })
    }

    /// Every installation token minted so far, oldest first.
    pub fn installation_tokens(&self) -> Vec<InstallationTokenRecord> {
        self.world().installation_tokens.clone()
    }

    /// The hourly core quota of each authenticated credential (default 5000); exhausting it
    /// gives GitHub's 403 "API rate limit exceeded" with `x-ratelimit-remaining: 0`.
    pub fn set_rate_limit(&self, limit: u32) {
        self.world().rate_limits.authenticated_limit = limit;
    }

    /// Seeds the demo repository `ccplant-demo/hello-world`: branch `main`, the feature
    /// branches `feature/greeting` and `feature/farewell` (the latter has the newest of those),
    /// and `ccplant/healthz`, the work branch the demo's `healthz` session "pushed" (the demo
    /// runs no real agent), committed before the others so auto-selection still picks
    /// `feature/farewell`.
    pub fn seed_demo(&self) {
        let (owner, name) = ("ccplant-demo", "hello-world");
        self.add_repo(owner, name, "main");
        let now = Utc::now();
        let commits = [
            ("ccplant/healthz", "Add a /healthz endpoint", 3),
            ("feature/greeting", "Greet the user by name", 2),
            ("feature/farewell", "Say goodbye on exit", 1),
        ];
        for (branch, message, hours_ago) in commits {
            self.push_commit(
                owner,
                name,
                branch,
                message,
                now - TimeDelta::hours(hours_ago),
            );
        }
    }
}
