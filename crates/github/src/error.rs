//! The crate's error type and the classification of GitHub's error responses.
//!
//! Every failed call ends up in one of three classes, because the controller reacts to each
//! differently: a user error fails the task with GitHub's message and waits for a change, a rate
//! limit requeues exactly at the reset instant without consuming an attempt, and a transient
//! error retries with backoff.

use chrono::{DateTime, TimeDelta, Utc};
use http::HeaderMap;
use serde::Deserialize;

/// How long to wait after a secondary rate limit that came without `retry-after` (GitHub's
/// documentation: "wait at least one minute").
pub const SECONDARY_LIMIT_FALLBACK_WAIT: TimeDelta = TimeDelta::seconds(60);

/// The class of a failed GitHub response, see [`classify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request itself is wrong or not allowed (401/403 without rate-limit signals, 404, 405,
    /// 409, 422, other 4xx): retrying the same request cannot succeed.
    User { status: u16, message: String },
    /// A primary (`x-ratelimit-remaining: 0`) or secondary (`retry-after`, or GitHub's
    /// "secondary rate limit" message) rate limit; the request may be repeated at `reset_at`.
    RateLimited {
        reset_at: DateTime<Utc>,
        secondary: bool,
    },
    /// 5xx, timeouts, connection errors, responses that are not GitHub's JSON.
    Transient { message: String },
}

/// Everything that can go wrong in this crate. Each variant says what the user can do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// GitHub refused the request; fix the task (or the repository, or the credentials).
    #[error("GitHub refused the request ({status}): {message}")]
    User { status: u16, message: String },

    /// `POST /pulls` answered 422 "A pull request already exists": adopt the existing pull
    /// request (see `GitHubClient::find_pull`).
    #[error("a pull request for this head and base already exists: {message}")]
    PullRequestAlreadyExists { message: String },

    /// GitHub does not let the author of a pull request approve it; use a credential of
    /// another account (or set `approve: false`).
    #[error("GitHub refused the approval: {message}")]
    SelfApproval { message: String },

    /// A primary or secondary rate limit: repeat the request at `reset_at`.
    #[error("GitHub {} rate limit exceeded; retry at {reset_at}", if *.secondary { "secondary" } else { "primary" })]
    RateLimited {
        reset_at: DateTime<Utc>,
        secondary: bool,
    },

    /// 5xx, timeout, connection error or an unparseable response: retry with backoff.
    #[error("GitHub request failed: {message}")]
    Transient { message: String },

    /// The repository reference is not `owner/repo` (or `repo` with a default owner).
    #[error("invalid repository {input:?}: {reason}")]
    InvalidRepository { input: String, reason: &'static str },

    /// The credentials cannot be used (for example a private key that is not an RSA PEM);
    /// fix the Secret.
    #[error("invalid GitHub credentials: {reason}")]
    InvalidCredentials { reason: String },

    /// The client was configured wrongly (API URL) or asked for something its credentials
    /// cannot do (installation tokens without a GitHub App).
    #[error("invalid GitHub client configuration: {reason}")]
    Config { reason: String },

    /// The write gate refused a write at the last moment (this replica no longer leads): the
    /// request was not sent.
    #[error("{endpoint} not sent: this replica is no longer the leader")]
    WriteRefused { endpoint: &'static str },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A short, stable label for metrics (`github_errors_total{kind=...}`).
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::User { .. } => "user",
            Error::PullRequestAlreadyExists { .. } => "pull_request_exists",
            Error::SelfApproval { .. } => "self_approval",
            Error::RateLimited {
                secondary: false, ..
            } => "rate_limited",
            Error::RateLimited {
                secondary: true, ..
            } => "secondary_rate_limited",
            Error::Transient { .. } => "transient",
            Error::InvalidRepository { .. } => "invalid_repository",
            Error::InvalidCredentials { .. } => "invalid_credentials",
            Error::Config { .. } => "config",
            Error::WriteRefused { .. } => "write_refused",
        }
    }

    /// Whether repeating the same request later can succeed (rate limits: at
    /// [`Error::retry_at`]; transient errors: after a backoff).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::RateLimited { .. } | Error::Transient { .. })
    }

    /// For rate limits, the instant at which the request may be repeated.
    pub fn retry_at(&self) -> Option<DateTime<Utc>> {
        match self {
            Error::RateLimited { reset_at, .. } => Some(*reset_at),
            _ => None,
        }
    }

    /// The HTTP status GitHub answered with, for errors that carry one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::User { status, .. } => Some(*status),
            Error::PullRequestAlreadyExists { .. } | Error::SelfApproval { .. } => Some(422),
            _ => None,
        }
    }

    pub(crate) fn transient(message: impl Into<String>) -> Self {
        Error::Transient {
            message: message.into(),
        }
    }
}

impl From<ErrorKind> for Error {
    fn from(kind: ErrorKind) -> Self {
        match kind {
            ErrorKind::User { status, message } => Error::User { status, message },
            ErrorKind::RateLimited {
                reset_at,
                secondary,
            } => Error::RateLimited {
                reset_at,
                secondary,
            },
            ErrorKind::Transient { message } => Error::Transient { message },
        }
    }
}

/// GitHub's error body: `{"message": ..., "errors": [...], "documentation_url": ...}`.
#[derive(Debug, Deserialize)]
pub(crate) struct GitHubErrorBody {
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub errors: Vec<serde_json::Value>,
}

impl GitHubErrorBody {
    pub(crate) fn parse(body: &[u8]) -> Option<Self> {
        serde_json::from_slice(body).ok()
    }

    /// Every `errors[]` entry as text: strings as they are, objects by their `message`, else
    /// by `resource.field: code` (what GitHub sends for e.g. an unknown head branch).
    pub(crate) fn error_messages(&self) -> impl Iterator<Item = String> + '_ {
        self.errors.iter().filter_map(|entry| match entry {
            serde_json::Value::String(text) => Some(text.clone()),
            serde_json::Value::Object(fields) => {
                if let Some(message) = fields.get("message").and_then(|m| m.as_str()) {
                    return Some(message.to_string());
                }
                let text = |key: &str| fields.get(key).and_then(|v| v.as_str());
                let code = text("code")?;
                Some(match (text("resource"), text("field")) {
                    (Some(resource), Some(field)) => format!("{resource}.{field}: {code}"),
                    (None, Some(field)) => format!("{field}: {code}"),
                    (Some(resource), None) => format!("{resource}: {code}"),
                    (None, None) => code.to_string(),
                })
            }
            _ => None,
        })
    }

    /// GitHub's message plus the first `errors[]` entry, e.g. "Validation Failed: A pull
    /// request already exists for octo:feature.".
    pub(crate) fn describe(&self, status: u16) -> String {
        let message = self
            .message
            .clone()
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| canonical_reason(status));
        match self.error_messages().next() {
            Some(detail) if !detail.is_empty() => format!("{message}: {detail}"),
            _ => message,
        }
    }

    pub(crate) fn mentions(&self, needle: &str) -> bool {
        let needle = needle.to_ascii_lowercase();
        self.message
            .iter()
            .cloned()
            .chain(self.error_messages())
            .any(|text| text.to_ascii_lowercase().contains(&needle))
    }
}

fn canonical_reason(status: u16) -> String {
    http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Unknown status")
        .to_string()
}

/// Classifies a non-success GitHub response. Pure apart from reading the clock for
/// `retry-after`; see [`classify_at`].
pub fn classify(status: u16, headers: &HeaderMap, body: &[u8]) -> ErrorKind {
    classify_at(status, headers, body, Utc::now())
}

/// [`classify`] with an explicit "now" (the instant the response arrived).
pub fn classify_at(status: u16, headers: &HeaderMap, body: &[u8], now: DateTime<Utc>) -> ErrorKind {
    let parsed = GitHubErrorBody::parse(body);
    if (status == 403 || status == 429)
        && let Some(limited) = rate_limit(status, headers, parsed.as_ref(), now)
    {
        return limited;
    }
    let is_user_status = (400..500).contains(&status) && status != 408;
    match (is_user_status, parsed) {
        (true, Some(parsed)) => ErrorKind::User {
            status,
            message: parsed.describe(status),
        },
        (true, None) => ErrorKind::Transient {
            message: format!(
                "GitHub answered {status} {} with a body that is not GitHub's JSON: {}",
                canonical_reason(status),
                snippet(body)
            ),
        },
        (false, Some(parsed)) => ErrorKind::Transient {
            message: format!("GitHub answered {status}: {}", parsed.describe(status)),
        },
        (false, None) => ErrorKind::Transient {
            message: format!("GitHub answered {status} {}", canonical_reason(status)),
        },
    }
}

fn rate_limit(
    status: u16,
    headers: &HeaderMap,
    parsed: Option<&GitHubErrorBody>,
    now: DateTime<Utc>,
) -> Option<ErrorKind> {
    let remaining =
        header_str(headers, "x-ratelimit-remaining").and_then(|v| v.parse::<u64>().ok());
    let says_secondary =
        parsed.is_some_and(|p| p.mentions("secondary rate limit") || p.mentions("abuse detection"));
    if let Some(reset_at) = retry_after(headers, now) {
        return Some(ErrorKind::RateLimited {
            reset_at,
            secondary: says_secondary || remaining != Some(0),
        });
    }
    if remaining == Some(0) {
        let reset_at = header_str(headers, "x-ratelimit-reset")
            .and_then(|v| v.parse::<i64>().ok())
            .and_then(|secs| DateTime::from_timestamp(secs, 0))
            .unwrap_or(now + SECONDARY_LIMIT_FALLBACK_WAIT);
        return Some(ErrorKind::RateLimited {
            reset_at,
            secondary: false,
        });
    }
    if says_secondary || status == 429 {
        return Some(ErrorKind::RateLimited {
            reset_at: now + SECONDARY_LIMIT_FALLBACK_WAIT,
            secondary: true,
        });
    }
    if parsed.is_some_and(|p| p.mentions("rate limit exceeded")) {
        return Some(ErrorKind::RateLimited {
            reset_at: now + SECONDARY_LIMIT_FALLBACK_WAIT,
            secondary: false,
        });
    }
    None
}

/// `retry-after` as delay-seconds or as an HTTP date.
fn retry_after(headers: &HeaderMap, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let value = header_str(headers, "retry-after")?.trim();
    if let Ok(seconds) = value.parse::<i64>() {
        return Some(now + TimeDelta::seconds(seconds.max(0)));
    }
    DateTime::parse_from_rfc2822(value)
        .ok()
        .map(|date| date.with_timezone(&Utc))
}

pub(crate) fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "(empty)".to_string();
    }
    let mut cut: String = text.chars().take(120).collect();
    if cut.len() < text.len() {
        cut.push('…');
    }
    cut
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap_or_default()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            if let Ok(value) = HeaderValue::from_str(value) {
                map.insert(*name, value);
            }
        }
        map
    }

    fn user(status: u16, message: &str) -> ErrorKind {
        ErrorKind::User {
            status,
            message: message.to_string(),
        }
    }

    fn limited(reset_at: i64, secondary: bool) -> ErrorKind {
        ErrorKind::RateLimited {
            reset_at: at(reset_at),
            secondary,
        }
    }

    fn transient(message: &str) -> ErrorKind {
        ErrorKind::Transient {
            message: message.to_string(),
        }
    }

    const NOW: i64 = 1_700_000_000;

    /// (name, status, headers, body, expected class)
    type Case<'a> = (
        &'a str,
        u16,
        Vec<(&'static str, &'a str)>,
        &'a str,
        ErrorKind,
    );

    #[test]
    fn classification_table() {
        let quota = [
            ("x-ratelimit-limit", "5000"),
            ("x-ratelimit-remaining", "4999"),
            ("x-ratelimit-reset", "1700003600"),
        ];
        let exhausted = [
            ("x-ratelimit-limit", "5000"),
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", "1700000900"),
        ];
        let primary_body = r#"{"message":"API rate limit exceeded for installation ID 42.","documentation_url":"https://docs.github.com/rest/overview/resources-in-the-rest-api#rate-limiting"}"#;
        let secondary_body = r#"{"message":"You have exceeded a secondary rate limit. Please wait a few minutes before you try again. If you reach out to GitHub Support for help, please include the request ID ABC.","documentation_url":"https://docs.github.com/free-pro-team@latest/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits"}"#;
        let cases: Vec<Case> = vec![
            (
                "401 bad credentials",
                401,
                quota.to_vec(),
                r#"{"message":"Bad credentials","documentation_url":"https://docs.github.com/rest","status":"401"}"#,
                user(401, "Bad credentials"),
            ),
            (
                "403 without rate-limit signals",
                403,
                quota.to_vec(),
                r#"{"message":"Resource not accessible by integration","documentation_url":"x","status":"403"}"#,
                user(403, "Resource not accessible by integration"),
            ),
            (
                "404",
                404,
                quota.to_vec(),
                r#"{"message":"Not Found","documentation_url":"x","status":"404"}"#,
                user(404, "Not Found"),
            ),
            (
                "405 not mergeable",
                405,
                quota.to_vec(),
                r#"{"message":"Pull Request is not mergeable","documentation_url":"x","status":"405"}"#,
                user(405, "Pull Request is not mergeable"),
            ),
            (
                "409 head moved",
                409,
                quota.to_vec(),
                r#"{"message":"Head branch was modified. Review and try the merge again.","status":"409"}"#,
                user(
                    409,
                    "Head branch was modified. Review and try the merge again.",
                ),
            ),
            (
                "422 with an errors[].message",
                422,
                quota.to_vec(),
                r#"{"message":"Validation Failed","errors":[{"resource":"PullRequest","code":"custom","message":"A pull request already exists for octo:feature."}],"status":"422"}"#,
                user(
                    422,
                    "Validation Failed: A pull request already exists for octo:feature.",
                ),
            ),
            (
                "422 with an errors[] string",
                422,
                quota.to_vec(),
                r#"{"message":"Unprocessable Entity","errors":["Review Can not approve your own pull request"]}"#,
                user(
                    422,
                    "Unprocessable Entity: Review Can not approve your own pull request",
                ),
            ),
            (
                "422 with a field error",
                422,
                quota.to_vec(),
                r#"{"message":"Validation Failed","errors":[{"resource":"PullRequest","field":"head","code":"invalid"}]}"#,
                user(422, "Validation Failed: PullRequest.head: invalid"),
            ),
            (
                "422 without a message uses the reason phrase",
                422,
                vec![],
                r#"{}"#,
                user(422, "Unprocessable Entity"),
            ),
            (
                "primary limit: 403 + remaining 0 → x-ratelimit-reset",
                403,
                exhausted.to_vec(),
                primary_body,
                limited(1_700_000_900, false),
            ),
            (
                "primary limit as 429",
                429,
                exhausted.to_vec(),
                primary_body,
                limited(1_700_000_900, false),
            ),
            (
                "secondary limit: 403 + retry-after",
                403,
                vec![("retry-after", "30"), ("x-ratelimit-remaining", "4990")],
                secondary_body,
                limited(NOW + 30, true),
            ),
            (
                "secondary limit: 429 + retry-after without a body",
                429,
                vec![("retry-after", "120")],
                "",
                limited(NOW + 120, true),
            ),
            (
                "retry-after as an HTTP date",
                403,
                vec![("retry-after", "Tue, 14 Nov 2023 22:14:20 GMT")],
                secondary_body,
                limited(1_700_000_060, true),
            ),
            (
                "secondary limit message without headers → now + 60s",
                403,
                vec![],
                secondary_body,
                limited(NOW + 60, true),
            ),
            (
                "429 without any signal → now + 60s",
                429,
                vec![],
                r#"{"message":"Too Many Requests"}"#,
                limited(NOW + 60, true),
            ),
            (
                "primary limit message without headers → now + 60s",
                403,
                vec![],
                primary_body,
                limited(NOW + 60, false),
            ),
            (
                "remaining 0 without a reset header → now + 60s",
                403,
                vec![("x-ratelimit-remaining", "0")],
                primary_body,
                limited(NOW + 60, false),
            ),
            (
                "500",
                500,
                quota.to_vec(),
                r#"{"message":"Server Error"}"#,
                transient("GitHub answered 500: Server Error"),
            ),
            (
                "502 from a proxy with HTML",
                502,
                vec![],
                "<html>bad gateway</html>",
                transient("GitHub answered 502 Bad Gateway"),
            ),
            (
                "503 without a body",
                503,
                vec![],
                "",
                transient("GitHub answered 503 Service Unavailable"),
            ),
            (
                "404 whose body is not JSON",
                404,
                vec![],
                "<html>not here</html>",
                transient(
                    "GitHub answered 404 Not Found with a body that is not GitHub's JSON: <html>not here</html>",
                ),
            ),
            (
                "408 request timeout",
                408,
                vec![],
                r#"{"message":"timeout"}"#,
                transient("GitHub answered 408: timeout"),
            ),
        ];
        for (name, status, pairs, body, expected) in cases {
            let got = classify_at(status, &headers(&pairs), body.as_bytes(), at(NOW));
            assert_eq!(got, expected, "case: {name}");
        }
    }

    #[test]
    fn errors_know_their_class() {
        let limited = Error::RateLimited {
            reset_at: at(NOW),
            secondary: true,
        };
        assert!(limited.is_retryable());
        assert_eq!(limited.retry_at(), Some(at(NOW)));
        assert_eq!(limited.metric_label(), "secondary_rate_limited");
        assert!(Error::transient("x").is_retryable());
        let user = Error::User {
            status: 404,
            message: "Not Found".into(),
        };
        assert!(!user.is_retryable());
        assert_eq!(user.metric_label(), "user");
        assert_eq!(user.status(), Some(404));
        assert_eq!(
            user.to_string(),
            "GitHub refused the request (404): Not Found"
        );
        assert!(
            !Error::SelfApproval {
                message: String::new()
            }
            .is_retryable()
        );
        let refused = Error::WriteRefused {
            endpoint: "POST /repos/{owner}/{repo}/pulls",
        };
        assert!(!refused.is_retryable());
        assert_eq!(refused.metric_label(), "write_refused");
        assert_eq!(refused.status(), None);
        assert_eq!(
            refused.to_string(),
            "POST /repos/{owner}/{repo}/pulls not sent: this replica is no longer the leader"
        );
    }
}
