//! ccplant's GitHub client, on octocrab's HTTP stack, with no Kubernetes in it.
//!
//! - [`GitHubClient`]: one per credential ([`Credentials::Token`] or a GitHub App installation,
//!   whose installation token is cached and refreshed 5 minutes before expiry), against
//!   GitHub.com, GitHub Enterprise Server or the test fake ([`GitHubClientBuilder::api_url`]).
//! - The GitHubTask operations (issues, comments, pull requests, approvals, merges) return
//!   typed results; every body written carries the task's [`marker()`], and the `find_*_by_marker`
//!   lookups find the effect of an attempt whose response was lost.
//! - Failures are classified ([`classify`]) into user errors, rate limits (with the instant to
//!   retry at) and transient errors; octocrab's blind retries are off.
//! - Content-creating calls are paced per credential ([`pacing`]); every request is reported
//!   to an optional hook ([`RequestOutcome`]) for metrics.

mod app;
pub mod auth;
mod client;
pub mod error;
mod issues;
mod lookup;
pub mod marker;
pub mod metrics;
pub mod models;
pub mod pacing;
mod pulls;
mod repo;
mod repos;

pub use auth::{AppJwtClaims, CredentialId, Credentials, InstallationToken, app_jwt_claims};
pub use client::{
    API_VERSION, DEFAULT_API_URL, DEFAULT_LOOKUP_MAX_PAGES, DEFAULT_PAGE_SIZE, GitHubClient,
    GitHubClientBuilder, Identity, IdentityKind, TOKEN_REFRESH_MARGIN, Timeouts, WriteGate,
};
pub use error::{Error, ErrorKind, Result, classify, classify_at};
pub use issues::CLOCK_SKEW_ALLOWANCE;
pub use marker::{has_marker, marker, with_marker};
pub use metrics::{RequestHook, RequestOutcome};
pub use models::*;
pub use pacing::{Pacer, PacerRegistry};
pub use repo::RepoRef;
pub use secrecy::{ExposeSecret, SecretString};
