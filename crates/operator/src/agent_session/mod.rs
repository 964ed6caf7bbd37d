//! AgentSession: a hardened session pod with its Service, workspace, credentials and exact
//! lifecycle. `build`, `names`, `observe` and `trim` are pure; `controller` and `credentials` do
//! the I/O.

pub mod build;
pub mod controller;
pub mod credentials;
pub mod names;
pub mod observe;
pub mod trim;
