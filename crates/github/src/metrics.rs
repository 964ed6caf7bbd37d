//! A hook through which the operator counts GitHub requests (Prometheus lives there, not here).

use crate::auth::CredentialId;
use std::sync::Arc;
use std::time::Duration;

/// One HTTP exchange with GitHub (or its failure to happen).
#[derive(Debug, Clone)]
pub struct RequestOutcome {
    /// Method and path template, e.g. `POST /repos/{owner}/{repo}/issues`.
    pub endpoint: &'static str,
    /// The HTTP status, `None` when no response arrived (timeout, connection error).
    pub status: Option<u16>,
    /// Which credential made the call (never the secret itself).
    pub credential: CredentialId,
    /// `x-ratelimit-remaining` of the response, if it had one.
    pub rate_limit_remaining: Option<u64>,
    /// `x-ratelimit-limit` of the response, if it had one.
    pub rate_limit_limit: Option<u64>,
    /// Time from sending the request to the end of the response body.
    pub elapsed: Duration,
}

/// Called once per HTTP request, after the response body was read.
pub type RequestHook = Arc<dyn Fn(&RequestOutcome) + Send + Sync>;
