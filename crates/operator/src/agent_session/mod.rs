//! AgentSession: a hardened session pod with its Service, workspace, credentials and exact
//! lifecycle. `build`, `cached`, `names` and `observe` are pure; `controller` and `credentials` do
//! the I/O.

pub mod agentapi;
pub mod build;
pub mod cached;
pub mod children;
pub mod controller;
pub mod conversation;
pub mod credentials;
pub mod names;
pub mod observe;
