//! AgentSession: a hardened session pod with its Service, workspace, credentials and exact
//! lifecycle. `controller` runs observe → decide → act → status: `observe` makes the reads,
//! `decide` (with `build`, `cached`, `names` and `pod_state`) is pure, `act`, `credentials` and
//! `conversation` do the writes and the talking.

pub mod act;
pub mod agentapi;
pub mod build;
pub mod cached;
pub mod children;
pub mod controller;
pub mod conversation;
pub mod credentials;
pub mod decide;
pub mod limits;
pub mod names;
pub mod observe;
pub mod outbox_count;
pub mod pod_state;
