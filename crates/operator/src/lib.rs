//! The ccplant operator library: configuration, controllers and their runtime.

pub mod agent_session;
pub mod apply;
pub mod config;
pub mod context;
pub mod crdgen;
pub mod credentials;
pub mod events;
pub mod github_credential;
pub mod github_task;
pub mod guard;
pub mod http;
pub mod invalid;
pub mod leader;
pub mod memory;
pub mod metrics;
pub mod policy;
pub mod redact;
pub mod run;
pub mod shutdown;
pub mod telemetry;
pub mod time;

pub use crdgen::crd_documents;
