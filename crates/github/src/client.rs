//! The client: configuration, authentication headers, one HTTP exchange, pagination.
//!
//! octocrab provides the HTTP stack (hyper, rustls with ring, connect/read timeouts, base URL
//! joining). Every request is built here with its own `Authorization` header on a path-only
//! URI, because octocrab attaches App/installation credentials only for `api.github.com`, and
//! pagination uses explicit `page` numbers instead of following absolute `Link` URLs.
//! octocrab's retries are off: a retried POST after a lost response duplicates the write.

use crate::auth::{AppSigner, CredentialId, Credentials};
use crate::error::{Error, GitHubErrorBody, Result, classify, header_str};
use crate::metrics::{RequestHook, RequestOutcome};
use crate::pacing::{Pacer, PacerRegistry};
use bytes::Bytes;
use chrono::{DateTime, TimeDelta, Utc};
use http::header::{ACCEPT, AUTHORIZATION};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use http_body_util::BodyExt;
use octocrab::Octocrab;
use octocrab::service::middleware::retry::RetryConfig;
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// GitHub.com's REST API.
pub const DEFAULT_API_URL: &str = "https://api.github.com";
/// The REST API version every request asks for.
pub const API_VERSION: &str = "2022-11-28";
/// The client's own installation token is replaced this long before it expires.
pub const TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);
/// Items per page for list endpoints (GitHub's maximum).
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// Pages a marker lookup reads at most (with 100 per page: the 500 newest items).
pub const DEFAULT_LOOKUP_MAX_PAGES: u32 = 5;

const NO_RATE_LIMIT_SEEN: u64 = u64::MAX;

/// Timeouts applied to every call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Establishing the TCP (and TLS) connection.
    pub connect: Duration,
    /// Waiting for any single read from the socket.
    pub read: Duration,
    /// The whole exchange, from sending the request to the end of the response body.
    pub request: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            read: Duration::from_secs(30),
            request: Duration::from_secs(60),
        }
    }
}

/// Asked right before every write to a repository is put on the wire (after pacing waits and
/// token refreshes): `false` and the request is not sent ([`Error::WriteRefused`]). The
/// operator asks whether it still holds its lease.
pub type WriteGate = Arc<dyn Fn() -> bool + Send + Sync>;

/// Who GitHub says the client's credential is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The login GitHub shows as the author of what this credential creates (`slug[bot]` for a
    /// GitHub App installation).
    pub login: String,
    pub kind: IdentityKind,
}

/// A user's token or a GitHub App.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdentityKind {
    User,
    App { slug: String },
}

/// Builds a [`GitHubClient`]; see [`GitHubClient::builder`].
pub struct GitHubClientBuilder {
    write_gate: Option<WriteGate>,
    credentials: Credentials,
    api_url: String,
    timeouts: Timeouts,
    pacing: Option<PacerRegistry>,
    hook: Option<RequestHook>,
    page_size: u32,
    lookup_max_pages: u32,
    token_refresh_margin: Duration,
}

impl fmt::Debug for GitHubClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitHubClientBuilder")
            .field("credential", &self.credentials.id())
            .field("api_url", &self.api_url)
            .field("timeouts", &self.timeouts)
            .field("page_size", &self.page_size)
            .finish_non_exhaustive()
    }
}

impl GitHubClientBuilder {
    /// The REST API root: `https://api.github.com` (default), `https://HOST/api/v3` for GitHub
    /// Enterprise Server, or `http://127.0.0.1:PORT` for the test fake.
    pub fn api_url(mut self, url: impl Into<String>) -> Self {
        self.api_url = url.into();
        self
    }

    pub fn timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// Where content-creating calls are paced; default [`PacerRegistry::global`].
    pub fn pacing(mut self, registry: PacerRegistry) -> Self {
        self.pacing = Some(registry);
        self
    }

    /// Asked right before every repository write is sent (see [`WriteGate`]).
    pub fn write_gate(mut self, gate: WriteGate) -> Self {
        self.write_gate = Some(gate);
        self
    }

    /// Called after every HTTP request (metrics).
    pub fn on_request(mut self, hook: RequestHook) -> Self {
        self.hook = Some(hook);
        self
    }

    /// Items per page for list endpoints, 1..=100 (default 100).
    pub fn page_size(mut self, page_size: u32) -> Self {
        self.page_size = page_size.clamp(1, 100);
        self
    }

    /// Pages a marker lookup reads at most (default 5).
    pub fn lookup_max_pages(mut self, pages: u32) -> Self {
        self.lookup_max_pages = pages.max(1);
        self
    }

    /// How long before expiry the client's own installation token is replaced (default 5 min).
    pub fn token_refresh_margin(mut self, margin: Duration) -> Self {
        self.token_refresh_margin = margin;
        self
    }

    /// Builds the client. Must run inside a tokio runtime (the HTTP stack spawns a worker).
    pub fn build(self) -> Result<GitHubClient> {
        let config_error = |reason: String| Error::Config { reason };
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(config_error(
                "the GitHub client must be built inside a tokio runtime".into(),
            ));
        }
        let api_url = normalize_api_url(&self.api_url)?;
        let base_uri: http::Uri = api_url
            .parse()
            .map_err(|e| config_error(format!("invalid GitHub API URL {api_url:?}: {e}")))?;
        let http = Octocrab::builder()
            .base_uri(base_uri)
            .map_err(|e| config_error(format!("invalid GitHub API URL {api_url:?}: {e}")))?
            .add_retry_config(RetryConfig::None)
            .set_connect_timeout(Some(self.timeouts.connect))
            .set_read_timeout(Some(self.timeouts.read))
            .set_write_timeout(Some(self.timeouts.read))
            .add_header(ACCEPT, "application/vnd.github+json".to_string())
            .add_header(
                HeaderName::from_static("x-github-api-version"),
                API_VERSION.to_string(),
            )
            .build()
            .map_err(|e| config_error(format!("cannot build the HTTP client: {e}")))?;
        let credential = self.credentials.id();
        let auth = match &self.credentials {
            Credentials::Token(token) => Auth::Token(token.clone()),
            Credentials::App {
                app_id,
                private_key,
                installation_id,
            } => Auth::App {
                signer: AppSigner::new(*app_id, private_key, *installation_id)?,
                token: tokio::sync::Mutex::new(None),
            },
        };
        let pacer = self
            .pacing
            .unwrap_or_else(PacerRegistry::global)
            .pacer(&credential);
        Ok(GitHubClient {
            inner: Arc::new(Inner {
                http,
                api_url,
                auth,
                credential,
                pacer,
                hook: self.hook,
                write_gate: self.write_gate,
                identity: tokio::sync::OnceCell::new(),
                timeouts: self.timeouts,
                page_size: self.page_size,
                lookup_max_pages: self.lookup_max_pages,
                token_refresh_margin: TimeDelta::from_std(self.token_refresh_margin)
                    .unwrap_or(TimeDelta::zero()),
                rate_limit_remaining: AtomicU64::new(NO_RATE_LIMIT_SEEN),
            }),
        })
    }
}

fn normalize_api_url(input: &str) -> Result<String> {
    let invalid = |reason: &str| Error::Config {
        reason: format!("invalid GitHub API URL {input:?}: {reason}"),
    };
    let url = url::Url::parse(input.trim()).map_err(|e| invalid(&e.to_string()))?;
    if !url.username().is_empty() || url.password().is_some() {
        // Not echoing the input: it holds a secret.
        return Err(Error::Config {
            reason: "invalid GitHub API URL: credentials in the URL are not allowed".into(),
        });
    }
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("the scheme must be http or https"));
    }
    if url.host_str().is_none() {
        return Err(invalid("there is no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("a query or fragment is not allowed"));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// A GitHub REST client for one credential (one token or one App installation). Cheap to
/// clone; clones share the HTTP connections, the cached installation token and the pacer.
#[derive(Clone)]
pub struct GitHubClient {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    http: Octocrab,
    api_url: String,
    auth: Auth,
    credential: CredentialId,
    pacer: Arc<Pacer>,
    hook: Option<RequestHook>,
    write_gate: Option<WriteGate>,
    /// Who the credential is, once asked (it never changes for a client).
    identity: tokio::sync::OnceCell<Identity>,
    timeouts: Timeouts,
    pub(crate) page_size: u32,
    pub(crate) lookup_max_pages: u32,
    token_refresh_margin: TimeDelta,
    rate_limit_remaining: AtomicU64,
}

enum Auth {
    Token(SecretString),
    App {
        signer: AppSigner,
        /// The client's own installation token; the lock is held while a new one is minted,
        /// so concurrent callers share one refresh.
        token: tokio::sync::Mutex<Option<CachedToken>>,
    },
}

struct CachedToken {
    token: SecretString,
    expires_at: DateTime<Utc>,
}

impl fmt::Debug for GitHubClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitHubClient")
            .field("api_url", &self.inner.api_url)
            .field("credential", &self.inner.credential)
            .finish_non_exhaustive()
    }
}

/// Which credential a request carries.
pub(crate) enum CallAuth {
    /// The client's token, or its App installation's (cached) token.
    Client,
    /// The App's JWT (App endpoints).
    AppJwt,
    /// A given token (revoking a session token).
    Token(SecretString),
}

/// One request to make.
pub(crate) struct Call {
    pub endpoint: &'static str,
    pub method: Method,
    pub path: String,
    pub query: Vec<(&'static str, String)>,
    pub body: Option<serde_json::Value>,
    pub auth: CallAuth,
    /// Content-creating: paced per credential.
    pub paced: bool,
}

impl Call {
    pub fn new(method: Method, endpoint: &'static str, path: String) -> Self {
        Call {
            endpoint,
            method,
            path,
            query: Vec::new(),
            body: None,
            auth: CallAuth::Client,
            paced: false,
        }
    }

    pub fn get(endpoint: &'static str, path: String) -> Self {
        Call::new(Method::GET, endpoint, path)
    }

    /// A content-creating POST/PUT: paced.
    pub fn create(
        method: Method,
        endpoint: &'static str,
        path: String,
        body: serde_json::Value,
    ) -> Self {
        Call {
            body: Some(body),
            paced: true,
            ..Call::new(method, endpoint, path)
        }
    }

    pub fn query(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.query.push((key, value.into()));
        self
    }

    fn uri(&self) -> String {
        if self.query.is_empty() {
            return self.path.clone();
        }
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        for (key, value) in &self.query {
            query.append_pair(key, value);
        }
        format!("{}?{}", self.path, query.finish())
    }
}

/// A response, whatever its status.
pub(crate) struct Reply {
    pub endpoint: &'static str,
    /// Method and concrete path (no query), e.g. `GET /repos/octo/hello/pulls/42`.
    pub request: String,
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.body).map_err(|e| {
            Error::transient(format!(
                "{} answered {} with a body that does not parse: {e}",
                self.endpoint, self.status
            ))
        })
    }

    /// GitHub's error body, if it is one.
    pub fn error_body(&self) -> Option<GitHubErrorBody> {
        GitHubErrorBody::parse(&self.body)
    }

    /// The classified error for a non-success reply; a refusal names the request, so that
    /// "Not Found" says what was not found.
    pub fn into_error(self) -> Error {
        match classify(self.status, &self.headers, &self.body).into() {
            Error::User { status, message } => Error::User {
                status,
                message: format!("{message} ({})", self.request),
            },
            other => other,
        }
    }

    /// Success, or the classified error.
    pub fn ok(self) -> Result<Reply> {
        if self.is_success() {
            Ok(self)
        } else {
            Err(self.into_error())
        }
    }

    pub fn link_pages(&self) -> LinkPages {
        header_str(&self.headers, "link")
            .map(parse_link_pages)
            .unwrap_or_default()
    }
}

/// One page of a list endpoint.
pub(crate) struct Page<T> {
    pub items: Vec<T>,
    pub links: LinkPages,
    pub per_page: u32,
}

impl<T> Page<T> {
    /// The next page number, from `rel="next"`; without a `link` header, a full page means
    /// there may be more.
    pub fn next(&self, page: u32) -> Option<u32> {
        if self.links.present {
            self.links.next
        } else if self.items.len() as u32 >= self.per_page && !self.items.is_empty() {
            Some(page + 1)
        } else {
            None
        }
    }
}

/// Page numbers found in a `Link` header (the URLs themselves are never requested).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LinkPages {
    pub present: bool,
    pub next: Option<u32>,
    pub last: Option<u32>,
}

pub(crate) fn parse_link_pages(header: &str) -> LinkPages {
    let mut pages = LinkPages {
        present: true,
        ..LinkPages::default()
    };
    for link in header.split(',') {
        let mut parts = link.split(';');
        let Some(target) = parts.next() else { continue };
        let target = target.trim().trim_start_matches('<').trim_end_matches('>');
        let page = url::Url::parse(target)
            .or_else(|_| url::Url::parse("http://relative.invalid")?.join(target))
            .ok()
            .and_then(|url| {
                url.query_pairs()
                    .find(|(key, _)| key == "page")
                    .and_then(|(_, value)| value.parse::<u32>().ok())
            });
        for param in parts {
            let param = param.trim();
            let Some(rel) = param.strip_prefix("rel=") else {
                continue;
            };
            for rel in rel.trim_matches('"').split_whitespace() {
                match rel {
                    "next" => pages.next = page,
                    "last" => pages.last = page,
                    _ => {}
                }
            }
        }
    }
    pages
}

/// Percent-encodes one URL path segment (branch names may contain `/` and more).
pub(crate) fn path_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn describe_transport_error(error: &(dyn std::error::Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

pub(crate) fn authorization(scheme: &str, secret: &SecretString) -> Result<HeaderValue> {
    let mut value = HeaderValue::from_str(&format!("{scheme} {}", secret.expose_secret()))
        .map_err(|_| Error::InvalidCredentials {
            reason: "the token contains characters that are not allowed in an HTTP header".into(),
        })?;
    value.set_sensitive(true);
    Ok(value)
}

impl GitHubClient {
    /// A client for `credentials` against GitHub.com; see the builder's options.
    pub fn builder(credentials: Credentials) -> GitHubClientBuilder {
        GitHubClientBuilder {
            credentials,
            api_url: DEFAULT_API_URL.to_string(),
            timeouts: Timeouts::default(),
            pacing: None,
            hook: None,
            write_gate: None,
            page_size: DEFAULT_PAGE_SIZE,
            lookup_max_pages: DEFAULT_LOOKUP_MAX_PAGES,
            token_refresh_margin: TOKEN_REFRESH_MARGIN,
        }
    }

    /// The REST API root this client talks to (no trailing slash).
    pub fn api_url(&self) -> &str {
        &self.inner.api_url
    }

    /// The non-secret identity of the client's credential.
    pub fn credential_id(&self) -> &CredentialId {
        &self.inner.credential
    }

    /// The last `x-ratelimit-remaining` GitHub reported to this client.
    pub fn rate_limit_remaining(&self) -> Option<u64> {
        match self.inner.rate_limit_remaining.load(Ordering::Relaxed) {
            NO_RATE_LIMIT_SEEN => None,
            remaining => Some(remaining),
        }
    }

    /// Who GitHub says this credential is: `GET /user` for a token, `GET /app` (with the App's
    /// JWT) for a GitHub App, whose installation acts as `slug[bot]`. Asked once per client.
    pub async fn identity(&self) -> Result<Identity> {
        #[derive(serde::Deserialize)]
        struct User {
            login: String,
        }
        #[derive(serde::Deserialize)]
        struct App {
            slug: String,
        }
        self.inner
            .identity
            .get_or_try_init(|| async {
                match &self.inner.auth {
                    Auth::Token(_) => {
                        let user: User = self
                            .fetch(Call::get("users.get-authenticated", "/user".into()))
                            .await?;
                        Ok(Identity {
                            login: user.login,
                            kind: IdentityKind::User,
                        })
                    }
                    Auth::App { .. } => {
                        let mut call = Call::get("apps.get-authenticated", "/app".into());
                        call.auth = CallAuth::AppJwt;
                        let app: App = self.fetch(call).await?;
                        Ok(Identity {
                            login: format!("{}[bot]", app.slug),
                            kind: IdentityKind::App { slug: app.slug },
                        })
                    }
                }
            })
            .await
            .cloned()
    }

    pub(crate) fn app_signer(&self) -> Result<&AppSigner> {
        match &self.inner.auth {
            Auth::App { signer, .. } => Ok(signer),
            Auth::Token(_) => Err(Error::Config {
                reason: "installation tokens can only be minted with GitHub App credentials".into(),
            }),
        }
    }

    /// The client's own installation token, minted or refreshed when it is missing or within
    /// the refresh margin of its expiry.
    async fn installation_token(&self) -> Result<SecretString> {
        let Auth::App { token, .. } = &self.inner.auth else {
            return Err(Error::Config {
                reason: "not a GitHub App client".into(),
            });
        };
        let mut cached = token.lock().await;
        if let Some(current) = cached.as_ref()
            && current.expires_at - self.inner.token_refresh_margin > Utc::now()
        {
            return Ok(current.token.clone());
        }
        let minted = self.request_installation_token(None).await?;
        tracing::debug!(
            credential = %self.inner.credential,
            expires_at = %minted.expires_at,
            "minted the client's installation token"
        );
        *cached = Some(CachedToken {
            token: minted.token.clone(),
            expires_at: minted.expires_at,
        });
        Ok(minted.token)
    }

    /// Forgets the cached installation token if it is still `used` (GitHub rejected it).
    async fn forget_installation_token(&self, used: &SecretString) {
        if let Auth::App { token, .. } = &self.inner.auth {
            let mut cached = token.lock().await;
            if cached
                .as_ref()
                .is_some_and(|c| c.token.expose_secret() == used.expose_secret())
            {
                *cached = None;
            }
        }
    }

    /// Sends `call` and returns the response whatever its status; only transport failures
    /// (timeouts, connection errors) are errors here.
    pub(crate) async fn execute(&self, call: Call) -> Result<Reply> {
        let mut retried_with_fresh_token = false;
        loop {
            let (header, installation_token) = match &call.auth {
                CallAuth::Client => match &self.inner.auth {
                    Auth::Token(token) => (authorization("token", token)?, None),
                    Auth::App { .. } => {
                        let token = self.installation_token().await?;
                        (authorization("token", &token)?, Some(token))
                    }
                },
                CallAuth::AppJwt => {
                    let jwt = self.app_signer()?.jwt(Utc::now())?;
                    (authorization("Bearer", &jwt)?, None)
                }
                CallAuth::Token(token) => (authorization("token", token)?, None),
            };
            // Each content-creating request holds a pacing permit until its response (or
            // failure): the window counts from then, as GitHub counts on arrival.
            let permit = if call.paced {
                Some(self.inner.pacer.acquire().await)
            } else {
                None
            };
            // The last moment before a repository write goes out (after the pacing wait and
            // any token refresh): a replica that lost its lease meanwhile sends nothing.
            // Token exchanges and revocations (their own credentials) change no repository.
            if call.method != Method::GET
                && matches!(call.auth, CallAuth::Client)
                && let Some(gate) = &self.inner.write_gate
                && !gate()
            {
                return Err(Error::WriteRefused {
                    endpoint: call.endpoint,
                });
            }
            let reply = self.send_once(&call, header).await;
            drop(permit);
            let reply = reply?;
            // An installation token can be revoked or expire early (clock skew); GitHub then
            // answered 401 without applying anything, so one retry with a new token is safe.
            if reply.status == 401
                && !retried_with_fresh_token
                && let Some(used) = installation_token
            {
                self.forget_installation_token(&used).await;
                retried_with_fresh_token = true;
                continue;
            }
            return Ok(reply);
        }
    }

    pub(crate) async fn send_once(&self, call: &Call, authorization: HeaderValue) -> Result<Reply> {
        let uri = call.uri();
        let request = http::Request::builder()
            .method(call.method.clone())
            .uri(uri.as_str())
            .header(AUTHORIZATION, authorization);
        let request = self
            .inner
            .http
            .build_request(request, call.body.as_ref())
            .map_err(|e| Error::Config {
                reason: format!("cannot build the request for {}: {e}", call.endpoint),
            })?;
        let started = std::time::Instant::now();
        let exchange = async {
            let response = self.inner.http.execute(request).await?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok::<_, octocrab::Error>((parts, body))
        };
        let result = tokio::time::timeout(self.inner.timeouts.request, exchange).await;
        let elapsed = started.elapsed();
        let outcome = match result {
            Err(_) => Err(Error::transient(format!(
                "{} timed out after {:?}",
                call.endpoint, self.inner.timeouts.request
            ))),
            Ok(Err(e)) => Err(Error::transient(format!(
                "{} failed: {}",
                call.endpoint,
                describe_transport_error(&e)
            ))),
            Ok(Ok((parts, body))) => Ok(Reply {
                endpoint: call.endpoint,
                request: format!("{} {}", call.method, call.path),
                status: parts.status.as_u16(),
                headers: parts.headers,
                body,
            }),
        };
        self.observe(call, outcome.as_ref().ok(), elapsed);
        outcome
    }

    fn observe(&self, call: &Call, reply: Option<&Reply>, elapsed: Duration) {
        let header_u64 = |name: &str| {
            reply
                .and_then(|r| header_str(&r.headers, name))
                .and_then(|v| v.parse::<u64>().ok())
        };
        let remaining = header_u64("x-ratelimit-remaining");
        if let Some(remaining) = remaining {
            self.inner
                .rate_limit_remaining
                .store(remaining.min(NO_RATE_LIMIT_SEEN - 1), Ordering::Relaxed);
        }
        let status = reply.map(|r| r.status);
        tracing::debug!(
            github.endpoint = call.endpoint,
            github.credential = %self.inner.credential,
            http.status = status,
            github.ratelimit_remaining = remaining,
            elapsed_ms = elapsed.as_millis() as u64,
            "GitHub request"
        );
        if let Some(hook) = &self.inner.hook {
            hook(&RequestOutcome {
                endpoint: call.endpoint,
                status,
                credential: self.inner.credential.clone(),
                rate_limit_remaining: remaining,
                rate_limit_limit: header_u64("x-ratelimit-limit"),
                elapsed,
            });
        }
    }

    /// Sends `call`, fails on a non-success status, decodes the body.
    pub(crate) async fn fetch<T: DeserializeOwned>(&self, call: Call) -> Result<T> {
        self.execute(call).await?.ok()?.json()
    }

    /// One page of a list endpoint (`per_page` and `page` are added to the query).
    pub(crate) async fn page<T: DeserializeOwned>(
        &self,
        call: Call,
        per_page: u32,
        page: u32,
    ) -> Result<Page<T>> {
        let call = call
            .query("per_page", per_page.to_string())
            .query("page", page.to_string());
        let reply = self.execute(call).await?.ok()?;
        Ok(Page {
            items: reply.json()?,
            links: reply.link_pages(),
            per_page,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_header_yields_page_numbers_only() {
        let header = r#"<http://127.0.0.1:4000/repositories/1/branches?per_page=3&page=2>; rel="next", <http://127.0.0.1:4000/repositories/1/branches?per_page=3&page=3>; rel="last", <http://127.0.0.1:4000/repos/o/r/branches?page=1&per_page=3>; rel="first""#;
        assert_eq!(
            parse_link_pages(header),
            LinkPages {
                present: true,
                next: Some(2),
                last: Some(3)
            }
        );
        let last_page = r#"<https://api.github.com/repos/o/r/issues?page=2>; rel="prev", <https://api.github.com/repos/o/r/issues?page=1>; rel="first""#;
        assert_eq!(
            parse_link_pages(last_page),
            LinkPages {
                present: true,
                next: None,
                last: None
            }
        );
    }

    #[test]
    fn full_page_without_link_header_may_have_more() {
        let page = |n: usize, links: LinkPages| Page {
            items: vec![(); n],
            links,
            per_page: 3,
        };
        assert_eq!(page(3, LinkPages::default()).next(1), Some(2));
        assert_eq!(page(2, LinkPages::default()).next(1), None);
        let with_links = LinkPages {
            present: true,
            next: None,
            last: None,
        };
        assert_eq!(page(3, with_links).next(1), None);
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(path_segment("feature/login"), "feature%2Flogin");
        assert_eq!(path_segment("a b#?"), "a%20b%23%3F");
        assert_eq!(path_segment("v1.2_x-y~"), "v1.2_x-y~");
    }

    #[test]
    fn queries_are_url_encoded() {
        let call = Call::get("GET /x", "/repos/o/r/pulls".into())
            .query("head", "o:feature/x")
            .query("state", "all");
        assert_eq!(
            call.uri(),
            "/repos/o/r/pulls?head=o%3Afeature%2Fx&state=all"
        );
    }

    #[test]
    fn api_url_is_checked_and_normalized() {
        assert_eq!(
            normalize_api_url("https://ghe.example.com/api/v3/")
                .ok()
                .as_deref(),
            Some("https://ghe.example.com/api/v3")
        );
        assert_eq!(
            normalize_api_url("http://127.0.0.1:8080").ok().as_deref(),
            Some("http://127.0.0.1:8080")
        );
        for bad in ["ftp://x", "not a url", "https://u:p@h", "https://h/?q=1"] {
            assert!(
                matches!(normalize_api_url(bad), Err(Error::Config { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn building_outside_a_runtime_is_an_error_not_a_panic() {
        let built = GitHubClient::builder(Credentials::Token(SecretString::from("t"))).build();
        assert!(matches!(built, Err(Error::Config { .. })), "{built:?}");
    }
}
